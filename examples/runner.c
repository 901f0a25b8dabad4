/*
 * Seed 003, asyncio.Runner: several top-level calls in one event loop.
 *
 *     async def main():
 *         await asyncio.sleep(1)
 *         print('hello')
 *
 *     with asyncio.Runner() as runner:
 *         runner.run(main())
 *         runner.run(main())
 *         print(runner.run(add(20, 22)))
 *
 * The `with` block becomes cio_runner_new ... cio_runner_close. Unlike
 * asyncio.run(), each cio_runner_run() reuses the runner's loop (and its
 * thread pool, stack pool, ...).
 */
#include "example.h"

#include <stdint.h>

static int hello(void *arg, void **result)
{
    (void)result;
    cio_loop_t *expected = arg;
    CHECK(cio_sleep(1));
    /* The runner's loop is the running loop; the task is named by opts. */
    EXPECT(cio_get_running_loop() == expected);
    printf("hello (task '%s')\n", cio_task_get_name(cio_current_task()));
    return 0;
}

struct add_args {
    int a, b;
};

static int add(void *arg, void **result)
{
    const struct add_args *x = arg;
    CHECK(cio_sleep(0.1));
    *result = (void *)(intptr_t)(x->a + x->b);
    return 0;
}

int main(void)
{
    cio_runner_t *runner;
    cio_run_opts_t opts = {.debug = false, .name = "main", .stack_size = 0};
    struct add_args args = {20, 22};
    void *sum;

    CHECK(cio_runner_new(&runner, &opts));
    cio_loop_t *loop = cio_runner_get_loop(runner);
    EXPECT(loop != NULL);

    double t0 = cio_loop_time(loop);
    CHECK(cio_runner_run(runner, hello, loop, NULL));
    CHECK(cio_runner_run(runner, hello, loop, NULL));
    CHECK(cio_runner_run(runner, add, &args, &sum));
    printf("%d\n", (int)(intptr_t)sum);
    printf("three runs on one loop in %.2f s\n", cio_loop_time(loop) - t0);

    CHECK(cio_runner_close(runner));
    return 0;
}
