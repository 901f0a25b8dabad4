/*
 * BENCH.md workload 8: lock. T = 1,000 tasks each acquire and release one
 * shared lock K = 10,000 times; while holding it a task reads a shared
 * counter, yields to the loop once, writes counter + 1 and releases. The
 * counter must end at T x K. `handoffs` is the share of acquisitions made
 * by a different task than the previous holder (a FIFO lock gives 100%).
 * ns_per_acquire = wall / (T x K), timed from the first spawn until every
 * task finished.
 *
 * Usage: bench_lock [T] [K]
 */
#include "bench_common.h"

#include <cio.h>
#include <errno.h>
#include <stdint.h>

static long n_tasks = 1000, n_iter = 10000;

static cio_lock_t lock = CIO_LOCK_INIT;
static long counter;
static long handoffs;
static intptr_t last_holder = -1;

static int worker(void *arg, void **result)
{
    (void)result;
    intptr_t self = (intptr_t)arg;
    for (long i = 0; i < n_iter; i++) {
        int rc = cio_lock_acquire(&lock);
        if (rc < 0)
            return rc;
        handoffs += last_holder != self;
        last_holder = self;
        long v = counter;
        rc = cio_yield();
        counter = v + 1;
        cio_lock_release(&lock);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int bench_main(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_task_t **t = bench_alloc((size_t)n_tasks * sizeof(*t));
    int64_t t0 = bench_now_ns();
    for (long i = 0; i < n_tasks; i++) {
        int src = cio_spawn(&t[i], worker, (void *)(intptr_t)i);
        if (src < 0)
            return src;
    }
    int rc = cio_gather(t, (size_t)n_tasks, NULL, NULL, 0);
    int64_t t1 = bench_now_ns();
    for (long i = 0; i < n_tasks; i++)
        cio_future_release(t[i]);
    free(t);
    if (rc < 0) {
        fprintf(stderr, "lock: %s\n", cio_strerror(rc));
        return rc;
    }
    long total = n_tasks * n_iter;
    if (counter != total) {
        fprintf(stderr, "lock: counter %ld, expected %ld\n", counter, total);
        return -EPROTO;
    }
    /* The very first acquisition has no previous holder: not a hand-off. */
    long possible = total - 1;
    printf("RESULT bench=lock tasks=%ld acquisitions=%ld ns_per_acquire=%.2f "
           "handoffs=%.2f%% handoff_count=%ld\n",
           n_tasks, total, (double)(t1 - t0) / (double)total,
           possible ? 100.0 * (double)(handoffs - 1) / (double)possible : 100.0,
           handoffs - 1);
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 1)
        n_tasks = strtol(argv[1], NULL, 10);
    if (argc > 2)
        n_iter = strtol(argv[2], NULL, 10);
    if (n_tasks < 1 || n_iter < 1) {
        fprintf(stderr, "usage: %s [T >= 1] [K >= 1]\n", argv[0]);
        return 2;
    }
    int rc = cio_run(bench_main, NULL);
    if (rc < 0) {
        fprintf(stderr, "lock: %s\n", cio_strerror(rc));
        return 1;
    }
    return 0;
}
