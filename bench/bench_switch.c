/*
 * BENCH.md workload 1: switch. Two coroutines hand control to each other
 * N = 10,000,000 times; ns_per_switch = wall / N.
 *
 *   raw    two contexts made with cio__ctx_make ping-ponging with
 *          cio__ctx_switch (no scheduler, no task objects)
 *   yield  two tasks each calling cio_yield() N/2 times through the loop
 *   event  two tasks waking each other through two cio_event_t
 *
 * Usage: bench_switch [raw|yield|event|all] [N]
 */
#include "bench_common.h"
#include "ctx/ctx.h" /* cio__ctx_make, cio__ctx_switch (raw variant) */

#include <cio.h>

#define DEFAULT_N 10000000L

static long n_switches = DEFAULT_N;

/* ---------------------------------------------------------------- raw --- */

static void *raw_sp_main, *raw_sp_a, *raw_sp_b;
static long raw_count;

static void raw_entry_a(void *arg)
{
    (void)arg;
    long rounds = n_switches / 2; /* each round: A->B and B->A */
    for (long i = 0; i < rounds; i++) {
        raw_count += 2;
        cio__ctx_switch(&raw_sp_a, raw_sp_b);
    }
    cio__ctx_switch(&raw_sp_a, raw_sp_main);
    abort(); /* never resumed */
}

static void raw_entry_b(void *arg)
{
    (void)arg;
    for (;;)
        cio__ctx_switch(&raw_sp_b, raw_sp_a);
}

static int bench_raw(void)
{
    const size_t sz = 64 * 1024;
    char *sa = bench_alloc(sz), *sb = bench_alloc(sz);
    raw_sp_a = cio__ctx_make(sa + sz, raw_entry_a, NULL);
    raw_sp_b = cio__ctx_make(sb + sz, raw_entry_b, NULL);

    int64_t t0 = bench_now_ns();
    cio__ctx_switch(&raw_sp_main, raw_sp_a);
    int64_t t1 = bench_now_ns();

    if (raw_count != (n_switches / 2) * 2) {
        fprintf(stderr, "raw: counted %ld switches, expected %ld\n", raw_count,
                (n_switches / 2) * 2);
        return 1;
    }
    printf("RESULT bench=switch variant=raw switches=%ld ns_per_switch=%.2f "
           "mechanism=cio__ctx_switch\n",
           raw_count, (double)(t1 - t0) / (double)raw_count);
    fflush(stdout);
    free(sa);
    free(sb);
    return 0;
}

/* -------------------------------------------------------------- yield --- */

static long yield_count;

static int yield_body(void *arg, void **result)
{
    (void)arg;
    (void)result;
    long n = n_switches / 2;
    for (long i = 0; i < n; i++) {
        int rc = cio_yield();
        if (rc < 0)
            return rc;
        yield_count++;
    }
    return 0;
}

static int yield_main(void *arg, void **result)
{
    (void)arg;
    (void)result;
    int64_t t0 = bench_now_ns();
    cio_task_t *t[2];
    cio_spawn(&t[0], yield_body, NULL);
    cio_spawn(&t[1], yield_body, NULL); /* *out is NULL on failure */
    if (!t[0] || !t[1]) {
        fprintf(stderr, "yield: spawn failed\n");
        return -ENOMEM;
    }
    int rc = cio_gather(t, 2, NULL, NULL, 0);
    int64_t t1 = bench_now_ns();
    cio_future_release(t[0]);
    cio_future_release(t[1]);
    if (rc < 0) {
        fprintf(stderr, "yield: gather: %s\n", cio_strerror(rc));
        return rc;
    }
    if (yield_count != (n_switches / 2) * 2) {
        fprintf(stderr, "yield: %ld yields, expected %ld\n", yield_count,
                (n_switches / 2) * 2);
        return -EPROTO;
    }
    printf("RESULT bench=switch variant=yield switches=%ld ns_per_switch=%.2f "
           "mechanism=cio_yield\n",
           yield_count, (double)(t1 - t0) / (double)yield_count);
    fflush(stdout);
    return 0;
}

/* -------------------------------------------------------------- event --- */

/*
 * Two tasks, two events: task i waits on ev[i], clears it, and wakes the
 * other by setting ev[1 - i]. Each hand-off is one event_set and one
 * event_wait that suspends.
 */
static cio_event_t ev[2];
static long ev_handoffs;
static int ev_error;

static int event_body(void *arg, void **result)
{
    (void)result;
    int self = (int)(intptr_t)arg, other = 1 - self;
    for (;;) {
        int rc = cio_event_wait(&ev[self]);
        if (rc < 0) {
            ev_error = rc;
            return rc;
        }
        cio_event_clear(&ev[self]);
        if (ev_handoffs >= n_switches) {
            cio_event_set(&ev[other]); /* let the other task see the end too */
            return 0;
        }
        ev_handoffs++;
        cio_event_set(&ev[other]);
    }
}

static int event_main(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_event_init(&ev[0]);
    cio_event_init(&ev[1]);
    cio_event_set(&ev[0]); /* task 0 has the first turn */

    int64_t t0 = bench_now_ns();
    cio_task_t *t[2];
    cio_spawn(&t[0], event_body, (void *)(intptr_t)0);
    cio_spawn(&t[1], event_body, (void *)(intptr_t)1); /* *out is NULL on failure */
    if (!t[0] || !t[1])
        return -ENOMEM;
    int rc = cio_gather(t, 2, NULL, NULL, CIO_GATHER_ALL);
    int64_t t1 = bench_now_ns();
    cio_future_release(t[0]);
    cio_future_release(t[1]);
    if (rc < 0 || ev_error < 0) {
        fprintf(stderr, "event: %s\n", cio_strerror(rc < 0 ? rc : ev_error));
        return rc < 0 ? rc : ev_error;
    }
    if (ev_handoffs != n_switches) {
        fprintf(stderr, "event: %ld hand-offs, expected %ld\n", ev_handoffs, n_switches);
        return -EPROTO;
    }
    printf("RESULT bench=switch variant=event switches=%ld ns_per_switch=%.2f "
           "mechanism=cio_event\n",
           ev_handoffs, (double)(t1 - t0) / (double)ev_handoffs);
    fflush(stdout);
    return 0;
}

/* --------------------------------------------------------------- main --- */

int main(int argc, char **argv)
{
    const char *which = argc > 1 ? argv[1] : "all";
    if (argc > 2)
        n_switches = strtol(argv[2], NULL, 10);
    if (n_switches < 2)
        n_switches = 2;
    int all = strcmp(which, "all") == 0, ran = 0, rc;

    if (all || strcmp(which, "raw") == 0) {
        ran = 1;
        if (bench_raw() != 0)
            return 1;
    }
    if (all || strcmp(which, "yield") == 0) {
        ran = 1;
        rc = cio_run(yield_main, NULL);
        if (rc < 0) {
            fprintf(stderr, "yield: %s\n", cio_strerror(rc));
            return 1;
        }
    }
    if (all || strcmp(which, "event") == 0) {
        ran = 1;
        rc = cio_run(event_main, NULL);
        if (rc < 0) {
            fprintf(stderr, "event: %s\n", cio_strerror(rc));
            return 1;
        }
    }
    if (!ran) {
        fprintf(stderr, "usage: %s [raw|yield|event|all] [N]\n", argv[0]);
        return 2;
    }
    return 0;
}
