/*
 * BENCH.md workload 3: sleepers. N tasks (argv[1]: 0, 100000, 1000000) each
 * record that they started and then await one shared future that is never
 * completed. The spawner yields until all N have started, prints, and exits
 * without teardown (_exit). Timed from the first spawn until all N are
 * suspended. Per-task memory comes from /usr/bin/time -f %M runs at N and at
 * N = 0 (the same program creating no task): (RSS(N) - RSS(0)) * 1024 / N.
 *
 * Usage: bench_sleepers N
 */
#include "bench_common.h"

#include <cio.h>
#include <errno.h>
#include <unistd.h>

static long n_tasks;
static long started;
static cio_future_t *never;

static int sleeper(void *arg, void **result)
{
    (void)arg;
    (void)result;
    started++;
    return cio_await(never, NULL);
}

static int sleepers_main(void *arg, void **result)
{
    (void)arg;
    (void)result;
    int frc = cio_future_new(&never, NULL);
    if (frc < 0)
        return frc;

    int64_t t0 = bench_now_ns();
    for (long i = 0; i < n_tasks; i++) {
        /* Fire and forget: no reference is kept (the process _exits). */
        int src = cio_spawn(NULL, sleeper, NULL);
        if (src < 0) {
            fprintf(stderr, "sleepers: cio_spawn failed at %ld: %s\n", i,
                    cio_strerror(src));
            _exit(1);
        }
    }
    int64_t t_spawned = bench_now_ns();
    long yields = 0;
    while (started < n_tasks) {
        int rc = cio_yield();
        if (rc < 0) {
            fprintf(stderr, "sleepers: yield: %s\n", cio_strerror(rc));
            _exit(1);
        }
        yields++;
    }
    int64_t t1 = bench_now_ns();

    fprintf(stderr, "sleepers: %.1f ms spawning, %.1f ms starting (%ld yields)\n",
            bench_ms(t_spawned - t0), bench_ms(t1 - t_spawned), yields);
    printf("RESULT bench=sleepers tasks=%ld create_ms=%.1f ns_per_task=%.1f "
           "stack_bytes=%u\n",
           n_tasks, bench_ms(t1 - t0),
           n_tasks ? (double)(t1 - t0) / (double)n_tasks : 0.0,
           (unsigned)CIO_DEFAULT_STACK_SIZE);
    fflush(stdout);
    fflush(stderr);
    _exit(0);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s N\n", argv[0]);
        return 2;
    }
    n_tasks = strtol(argv[1], NULL, 10);
    if (n_tasks < 0)
        n_tasks = 0;
    int rc = cio_run(sleepers_main, NULL);
    fprintf(stderr, "sleepers: cio_run returned %s\n", cio_strerror(rc));
    return 1;
}
