/*
 * BENCH.md workload 9: generator. A generator primed with one send, then
 * N = 10,000,000 round trips where each send passes a value in and the
 * generator yields a value back (`x = yield x + 1`); the final value is
 * checked. A round trip is two context switches (into the body and back).
 *
 *   plain  the generator is driven from plain code, outside any loop
 *          (the workload as specified; the default)
 *   task   the same, driven from a task (the overflow-report bookkeeping
 *          then goes through the task rather than thread-locals)
 *
 * Usage: bench_gen [plain|task] [N]
 */
#include "bench_common.h"

#include <cio.h>

#include <errno.h>

#define DEFAULT_N 10000000L

static long n_trips = DEFAULT_N;

/* def gen(): x = 0; while True: x = yield x + 1 */
static int body_plus_one(cio_gen_t *g, void *arg)
{
    (void)arg;
    void *x = NULL;
    for (;;) {
        int rc = cio_gen_yield(g, (void *)((intptr_t)x + 1), &x);
        if (rc < 0)
            return rc;
    }
}

/* Runs the workload; returns 0 or 1 (failure, reported on stderr). */
static int run(const char *variant)
{
    cio_gen_t *g;
    int grc = cio_gen_new(&g, body_plus_one, NULL);
    if (grc < 0) {
        fprintf(stderr, "generator: cio_gen_new failed: %s\n", cio_strerror(grc));
        return 1;
    }
    void *v = NULL;
    if (cio_gen_send(g, NULL, &v) != 1) { /* prime: runs to the first yield */
        fprintf(stderr, "generator: priming failed\n");
        return 1;
    }
    int64_t t0 = bench_now_ns();
    for (long i = 0; i < n_trips; i++)
        cio_gen_send(g, v, &v);
    int64_t t1 = bench_now_ns();

    intptr_t want = (intptr_t)n_trips + 1;
    if ((intptr_t)v != want) {
        fprintf(stderr, "generator: final value %ld, expected %ld\n",
                (long)(intptr_t)v, (long)want);
        return 1;
    }
    if (cio_gen_free(g) != 0) {
        fprintf(stderr, "generator: close failed\n");
        return 1;
    }
    printf("RESULT bench=generator variant=%s round_trips=%ld ns_per_round_trip=%.2f "
           "final=%ld\n",
           variant, n_trips, (double)(t1 - t0) / (double)n_trips, (long)want);
    fflush(stdout);
    return 0;
}

static int task_main(void *arg, void **result)
{
    (void)arg;
    (void)result;
    return run("task") ? -EIO : 0;
}

int main(int argc, char **argv)
{
    const char *variant = argc > 1 ? argv[1] : "plain";
    if (argc > 2)
        n_trips = strtol(argv[2], NULL, 10);
    if (n_trips <= 0) {
        fprintf(stderr, "usage: bench_gen [plain|task] [N > 0]\n");
        return 2;
    }
    if (!strcmp(variant, "plain"))
        return run("plain");
    if (!strcmp(variant, "task"))
        return cio_run(task_main, NULL) ? 1 : 0;
    fprintf(stderr, "usage: bench_gen [plain|task] [N]\n");
    return 2;
}
