/*
 * Seed 002/003: the two ways to run coroutines.
 *
 *     async def say_after(delay, what):
 *         await asyncio.sleep(delay)
 *         print(what)
 *
 *     async def main():                         # ./say_after        (3 s)
 *         print(f"started at {time.strftime('%X')}")
 *         await say_after(1, 'hello')
 *         await say_after(2, 'world')
 *         print(f"finished at {time.strftime('%X')}")
 *
 *     async def main():                         # ./say_after tasks  (2 s)
 *         task1 = asyncio.create_task(say_after(1, 'hello'))
 *         task2 = asyncio.create_task(say_after(2, 'world'))
 *         print(f"started at {time.strftime('%X')}")
 *         await task1
 *         await task2
 *         print(f"finished at {time.strftime('%X')}")
 */
#include "example.h"

#include <string.h>

/*
 * No colouring: say_after is a plain C function. Called directly it runs in
 * the caller's task and suspends that task inside cio_sleep(), which is what
 * `await say_after(...)` does in Python.
 */
static int say_after(double delay, const char *what)
{
    int rc = cio_sleep(delay);
    if (rc < 0)
        return rc;
    puts(what);
    return 0;
}

/* To run it as a task it needs the task signature: int fn(arg, &result). */
struct say {
    double delay;
    const char *what;
};

static int say_after_task(void *arg, void **result)
{
    (void)result;
    const struct say *s = arg;
    return say_after(s->delay, s->what);
}

static int sequential(void)
{
    CHECK(say_after(1, "hello"));
    CHECK(say_after(2, "world"));
    return 0;
}

static int concurrent(void)
{
    /* The argument must outlive the task: these live on main's stack,
     * which outlives both tasks because main awaits them. */
    struct say hello = {1, "hello"}, world = {2, "world"};
    cio_task_t *task1, *task2;
    CHECK(cio_spawn(&task1, say_after_task, &hello));
    CHECK(cio_spawn(&task2, say_after_task, &world));
    CHECK(cio_await(task1, NULL));
    CHECK(cio_await(task2, NULL));
    /* Each cio_spawn handed us a reference; Python's GC does this for you. */
    cio_future_release(task1);
    cio_future_release(task2);
    return 0;
}

static int main_task(void *arg, void **result)
{
    (void)result;
    bool tasks = *(const bool *)arg;
    char buf[32];
    double t0 = loop_now();

    printf("started at %s\n", time_of_day(buf));
    int rc = tasks ? concurrent() : sequential();
    printf("finished at %s\n", time_of_day(buf));
    printf("elapsed: %.2f s\n", loop_now() - t0);
    return rc;
}

int main(int argc, char **argv)
{
    bool tasks = argc > 1 && strcmp(argv[1], "tasks") == 0;
    if (argc > 1 && !tasks) {
        fprintf(stderr, "usage: %s [tasks]\n", argv[0]);
        return 2;
    }
    CHECK(cio_run(main_task, &tasks));
    return 0;
}
