/*
 * Seed 002, "running tasks concurrently":
 *
 *     async def factorial(name, number):
 *         f = 1
 *         for i in range(2, number + 1):
 *             print(f"Task {name}: Compute factorial({i})...")
 *             await asyncio.sleep(1)
 *             f *= i
 *         print(f"Task {name}: factorial({number}) = {f}")
 *         return f
 *
 *     async def main():
 *         L = await asyncio.gather(factorial("A", 2),
 *                                  factorial("B", 3),
 *                                  factorial("C", 4))
 *         print(L)          # [2, 6, 24]
 *
 * asyncio.gather wraps coroutines in tasks itself; cio_gather takes futures,
 * so the tasks are spawned first (and released after: gather does not).
 */
#include "example.h"

#include <stdint.h>

struct job {
    const char *name;
    int number;
};

static int factorial(void *arg, void **result)
{
    const struct job *j = arg;
    long f = 1;
    for (int i = 2; i <= j->number; i++) {
        printf("Task %s: Compute factorial(%d)...\n", j->name, i);
        int rc = cio_sleep(1);
        if (rc < 0)
            return rc; /* cancelled: gather's caller was cancelled */
        f *= i;
    }
    printf("Task %s: factorial(%d) = %ld\n", j->name, j->number, f);
    *result = (void *)(intptr_t)f;
    return 0;
}

static int main_task(void *arg, void **result)
{
    (void)arg;
    (void)result;
    static const struct job jobs[] = {{"A", 2}, {"B", 3}, {"C", 4}};
    enum { N = sizeof jobs / sizeof jobs[0] };
    cio_task_t *tasks[N];
    void *values[N];

    for (size_t i = 0; i < N; i++)
        CHECK(cio_spawn_named(&tasks[i], jobs[i].name, factorial, (void *)&jobs[i]));
    CHECK(cio_gather(tasks, N, values, NULL, 0));
    for (size_t i = 0; i < N; i++)
        cio_future_release(tasks[i]);

    printf("[");
    for (size_t i = 0; i < N; i++)
        printf("%s%ld", i ? ", " : "", (long)(intptr_t)values[i]);
    printf("]\n");
    return 0;
}

int main(void)
{
    CHECK(cio_run(main_task, NULL));
    return 0;
}
