/*
 * Seed 002, "awaitables": coroutines and tasks.
 *
 *     async def nested():
 *         return 42
 *
 *     async def main():
 *         nested()              # a coroutine object that never runs
 *         print(await nested()) # 42
 *
 *         task = asyncio.create_task(nested())
 *         await task            # the create_task variant
 *
 * C has no coroutine objects: calling a function runs it, at once, in the
 * current task (and it may await inside). So "called without being awaited"
 * has no C equivalent. What does carry over is the difference between
 * calling and scheduling: cio_spawn() (create_task) only schedules the task,
 * which then runs on a later loop iteration whether or not anyone awaits it.
 */
#include "example.h"

#include <stdint.h>

static int nested(void)
{
    return 42; /* it could also cio_sleep() here: it is called from a task */
}

/* nested() as a task body: the value travels in *result. */
static int nested_task(void *arg, void **result)
{
    const char *who = arg;
    printf("  nested() running as %s\n", who);
    *result = (void *)(intptr_t)nested();
    return 0;
}

static int main_task(void *arg, void **result)
{
    (void)arg;
    (void)result;
    void *value;
    cio_task_t *t;

    /* 1. nested() without await: in C the call just runs. */
    puts("1. plain call nested():");
    printf("  returned %d at once (there is no coroutine object to forget)\n",
           nested());

    /* 2. print(await nested()): awaiting a coroutine is calling it. */
    puts("2. print(await nested()):");
    printf("%d\n", nested());

    /* 3. Spawning only schedules: the task has not run yet ... */
    puts("3. cio_spawn(nested) and never await it:");
    CHECK(cio_spawn_named(&t, "fire-and-forget", nested_task, "fire-and-forget"));
    printf("  right after cio_spawn: done=%d\n", cio_future_done(t));
    EXPECT(!cio_future_done(t));
    /* ... until this task reaches an await point and lets it run. */
    CHECK(cio_yield());
    printf("  after one cio_yield(): done=%d\n", cio_future_done(t));
    EXPECT(cio_future_done(t));
    CHECK(cio_future_result(t, &value));
    printf("  its result: %d\n", (int)(intptr_t)value);
    cio_future_release(t); /* our reference from cio_spawn */

    /* 4. task = asyncio.create_task(nested()); await task */
    puts("4. task = cio_spawn(nested); cio_await(task):");
    CHECK(cio_spawn_named(&t, "nested", nested_task, "task 'nested'"));
    CHECK(cio_await(t, &value));
    printf("%d\n", (int)(intptr_t)value);
    cio_future_release(t);
    return 0;
}

int main(void)
{
    CHECK(cio_run(main_task, NULL));
    return 0;
}
