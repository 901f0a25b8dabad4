/*
 * BENCH.md workload 2: spawn. N = 1,000,000 tasks whose body increments a
 * shared counter and returns; all are spawned first (alive at once, task
 * pointers kept), then the spawner gathers them all and checks the counter.
 * Timed from the first spawn until all completed; the tasks are released
 * after timing. Peak RSS is taken outside with /usr/bin/time -f %M.
 *
 * Usage: bench_spawn [N]
 */
#include "bench_common.h"

#include <cio.h>
#include <errno.h>

static long n_tasks = 1000000;
static long counter;

static int body(void *arg, void **result)
{
    (void)arg;
    (void)result;
    counter++;
    return 0;
}

static int spawn_main(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_task_t **tasks = bench_alloc((size_t)n_tasks * sizeof *tasks);

    int64_t t0 = bench_now_ns();
    for (long i = 0; i < n_tasks; i++) {
        int rc = cio_spawn(&tasks[i], body, NULL);
        if (rc < 0) {
            fprintf(stderr, "spawn: cio_spawn failed at %ld: %s\n", i, cio_strerror(rc));
            return rc;
        }
    }
    int64_t t_spawned = bench_now_ns();
    int rc = cio_gather(tasks, (size_t)n_tasks, NULL, NULL, 0);
    int64_t t1 = bench_now_ns();

    for (long i = 0; i < n_tasks; i++)
        cio_future_release(tasks[i]);
    free(tasks);

    if (rc < 0) {
        fprintf(stderr, "spawn: gather: %s\n", cio_strerror(rc));
        return rc;
    }
    if (counter != n_tasks) {
        fprintf(stderr, "spawn: counter %ld, expected %ld\n", counter, n_tasks);
        return -EPROTO;
    }
    fprintf(stderr, "spawn: %.1f ms spawning, %.1f ms gathering\n",
            bench_ms(t_spawned - t0), bench_ms(t1 - t_spawned));
    printf("RESULT bench=spawn tasks=%ld ns_per_task=%.1f total_ms=%.1f\n", n_tasks,
           (double)(t1 - t0) / (double)n_tasks, bench_ms(t1 - t0));
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 1)
        n_tasks = strtol(argv[1], NULL, 10);
    if (n_tasks < 1)
        n_tasks = 1;
    int rc = cio_run(spawn_main, NULL);
    if (rc < 0) {
        fprintf(stderr, "spawn: %s\n", cio_strerror(rc));
        return 1;
    }
    return 0;
}
