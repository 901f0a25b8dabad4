/*
 * BENCH.md workload 7: queue. One producer task puts the integers 1..N
 * (N = 10,000,000) into one bounded FIFO queue of capacity 1024, suspending
 * while it is full; one consumer task takes N items, suspending while it is
 * empty, and sums them; sum must equal N(N+1)/2. Timed from spawning the
 * producer until both finished.
 *
 * Items per suspension: a second, untimed pass of the same workload counts
 * the calls that found the queue full (producer) or empty (consumer) just
 * before calling, which are exactly the calls that suspend (one task runs
 * at a time, so nothing changes the queue in between);
 * items_per_suspension = N / (those suspensions). The timed pass carries no
 * such instrumentation.
 *
 * Usage: bench_queue [N] [capacity]
 */
#include "bench_common.h"

#include <cio.h>
#include <errno.h>
#include <stdint.h>

static long n_items = 10000000L;
static size_t capacity = 1024;

static cio_queue_t q;
static uint64_t sum;
static long suspensions;
static int counting; /* the untimed pass that counts suspensions */

static int producer(void *arg, void **result)
{
    (void)arg;
    (void)result;
    for (long i = 1; i <= n_items; i++) {
        if (counting)
            suspensions += cio_queue_full(&q);
        int rc = cio_queue_put(&q, (void *)(intptr_t)i);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int consumer(void *arg, void **result)
{
    (void)arg;
    (void)result;
    uint64_t s = 0;
    for (long i = 0; i < n_items; i++) {
        void *item;
        if (counting)
            suspensions += cio_queue_empty(&q);
        int rc = cio_queue_get(&q, &item);
        if (rc < 0)
            return rc;
        s += (uint64_t)(intptr_t)item;
    }
    sum = s;
    return 0;
}

/* One pass: spawns both tasks and waits for them. Returns 0 or an error. */
static int run_pass(int64_t *elapsed)
{
    int rc = cio_queue_init(&q, capacity);
    if (rc < 0)
        return rc;
    sum = 0;
    int64_t t0 = bench_now_ns();
    cio_task_t *t[2];
    if ((rc = cio_spawn(&t[0], producer, NULL)) < 0)
        return rc;
    if ((rc = cio_spawn(&t[1], consumer, NULL)) < 0) {
        cio_task_cancel(t[0]);
        cio_future_release(t[0]);
        return rc;
    }
    rc = cio_gather(t, 2, NULL, NULL, CIO_GATHER_ALL);
    *elapsed = bench_now_ns() - t0;
    int st0 = cio_future_result(t[0], NULL), st1 = cio_future_result(t[1], NULL);
    cio_future_release(t[0]);
    cio_future_release(t[1]);
    cio_queue_destroy(&q);
    if (rc < 0 || st0 < 0 || st1 < 0)
        return rc < 0 ? rc : st0 < 0 ? st0 : st1;
    uint64_t want = (uint64_t)n_items * (uint64_t)(n_items + 1) / 2;
    if (sum != want) {
        fprintf(stderr, "queue: sum %llu, expected %llu\n", (unsigned long long)sum,
                (unsigned long long)want);
        return -EPROTO;
    }
    return 0;
}

static int bench_main(void *arg, void **result)
{
    (void)arg;
    (void)result;
    int64_t ns, ignored;
    int rc = run_pass(&ns);
    if (rc == 0) {
        counting = 1;
        rc = run_pass(&ignored);
    }
    if (rc < 0) {
        fprintf(stderr, "queue: %s\n", cio_strerror(rc));
        return rc;
    }
    printf("RESULT bench=queue items=%ld capacity=%zu ns_per_item=%.2f items_per_s=%.0f "
           "suspensions=%ld items_per_suspension=%.1f\n",
           n_items, capacity, (double)ns / (double)n_items,
           (double)n_items * 1e9 / (double)ns, suspensions,
           suspensions ? (double)n_items / (double)suspensions : 0.0);
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 1)
        n_items = strtol(argv[1], NULL, 10);
    if (argc > 2)
        capacity = (size_t)strtoul(argv[2], NULL, 10);
    if (n_items < 1 || capacity < 1) {
        fprintf(stderr, "usage: %s [N >= 1] [capacity >= 1]\n", argv[0]);
        return 2;
    }
    int rc = cio_run(bench_main, NULL);
    if (rc < 0) {
        fprintf(stderr, "queue: %s\n", cio_strerror(rc));
        return 1;
    }
    return 0;
}
