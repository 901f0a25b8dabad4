/*
 * The process pool (cio_process_pool_*), two workloads, one worker per core:
 *
 *  - small: N jobs (default 10,000) of a few microseconds of CPU each (a
 *    xorshift32 loop over an 8-byte argument, 8 bytes back), all handed to
 *    cio_process_pool_map at once: the round trip of a job through the pool
 *    (send over the channel, the worker's loop, the result back, the
 *    future). Prints jobs per second.
 *  - cpu_bound: seed 003's job, sum(i * i for i in range(n)) for the 20
 *    numbers 5,000,000 + x, first one after the other in this process, then
 *    on the pool; prints the speed-up. The 20 sums take some 35 ms on one
 *    core, so each way is timed over ROUNDS rounds (default 5) to be less
 *    at the mercy of the scheduler.
 *
 *  - big: a 64 MiB argument in, the same 64 MiB back (the worker's fn
 *    returns a copy): the round trip of large payloads through memfds.
 *
 * Worker start-up (fork) is not timed: workers are started once. The
 * backend is CIO_BACKEND's (epoll by default).
 *
 *   bench_process_pool [-n JOBS] [-w WORKERS] [-r ROUNDS] [small|cpu_bound|big ...]
 */
#include "bench_common.h"

#include <cio.h>

#include <errno.h>
#include <sys/uio.h>
#include <unistd.h>

__extension__ typedef unsigned __int128 u128;

enum { SPIN = 2000 };

static long n_jobs = 10000;
static unsigned workers;
static int rounds = 5;

/* A few microseconds of CPU: SPIN rounds of xorshift32. */
static int small_job(const void *in, size_t len, void **out, size_t *outlen)
{
    uint64_t x;
    if (len != sizeof x)
        return -EINVAL;
    memcpy(&x, in, sizeof x);
    uint32_t s = (uint32_t)x | 1;
    for (int i = 0; i < SPIN; i++)
        bench_xorshift32(&s);
    uint64_t *o = malloc(sizeof *o);
    if (!o)
        return -ENOMEM;
    *o = x ^ s;
    *out = o;
    *outlen = sizeof *o;
    return 0;
}

/* Not inlined: this process and the workers run the very same code. */
__attribute__((noinline)) static u128 cpu_bound(uint64_t number)
{
    u128 sum = 0;
    for (uint64_t i = 0; i < number; i++) {
        __asm__ volatile("" : "+r"(i)); /* no closed form: do the work */
        sum += (u128)(i * i);
    }
    return sum;
}

static int cpu_bound_job(const void *in, size_t len, void **out, size_t *outlen)
{
    uint64_t n;
    if (len != sizeof n)
        return -EINVAL;
    memcpy(&n, in, sizeof n);
    u128 *o = malloc(sizeof *o);
    if (!o)
        return -ENOMEM;
    *o = cpu_bound(n);
    *out = o;
    *outlen = sizeof *o;
    return 0;
}

/* The argument back, copied (as a real job would build its result). */
static int echo_job(const void *in, size_t len, void **out, size_t *outlen)
{
    void *o = malloc(len ? len : 1);
    if (!o)
        return -ENOMEM;
    memcpy(o, in, len);
    *out = o;
    *outlen = len;
    return 0;
}

static void die(const char *what, int rc)
{
    fprintf(stderr, "bench_process_pool: %s: %s\n", what, cio_strerror(rc));
    exit(1);
}

static void run_small(cio_process_pool_t *pool)
{
    uint64_t *xs = bench_alloc((size_t)n_jobs * sizeof *xs);
    struct iovec *in = bench_alloc((size_t)n_jobs * sizeof *in);
    cio_pool_bytes_t **out = bench_alloc((size_t)n_jobs * sizeof *out);
    uint32_t seed = BENCH_SEED;
    for (long i = 0; i < n_jobs; i++) {
        xs[i] = bench_xorshift32(&seed);
        in[i] = (struct iovec){&xs[i], sizeof xs[i]};
    }
    /* The CPU one job takes, measured here (the sink keeps the compiler
     * from dropping the work). */
    static volatile uint64_t sink;
    int64_t t0 = bench_now_ns();
    for (long i = 0; i < 1000; i++) {
        void *o = NULL;
        size_t ol = 0;
        if (small_job(&xs[i % n_jobs], sizeof xs[0], &o, &ol) == 0)
            sink += *(uint64_t *)o;
        free(o);
    }
    double job_us = (double)(bench_now_ns() - t0) / 1000 / 1000;
    if (sink == 42)
        fprintf(stderr, "(sink)\n");
    t0 = bench_now_ns();
    int rc = cio_process_pool_map(pool, small_job, in, (size_t)n_jobs, out);
    int64_t ns = bench_now_ns() - t0;
    if (rc)
        die("map", rc);
    for (long i = 0; i < n_jobs; i++)
        cio_pool_bytes_free(out[i]);
    printf("RESULT bench=process_pool_small jobs=%ld workers=%u job_cpu_us=%.2f "
           "jobs_per_s=%.0f us_per_job=%.2f total_ms=%.1f\n",
           n_jobs, cio_process_pool_workers(pool), job_us, (double)n_jobs / ((double)ns / 1e9),
           (double)ns / 1000 / (double)n_jobs, bench_ms(ns));
    free(xs);
    free(in);
    free(out);
}

enum { NNUMBERS = 20 };

static void run_cpu_bound(cio_process_pool_t *pool)
{
    uint64_t numbers[NNUMBERS];
    struct iovec in[NNUMBERS];
    cio_pool_bytes_t *out[NNUMBERS];
    u128 one[NNUMBERS];
    for (int x = 0; x < NNUMBERS; x++) {
        numbers[x] = 5000000 + (uint64_t)x;
        in[x] = (struct iovec){&numbers[x], sizeof numbers[x]};
    }
    int64_t t0 = bench_now_ns();
    for (int r = 0; r < rounds; r++)
        for (int x = 0; x < NNUMBERS; x++)
            one[x] = cpu_bound(numbers[x]);
    int64_t ns_one = bench_now_ns() - t0;
    int64_t ns_pool = 0;
    for (int r = 0; r < rounds; r++) {
        t0 = bench_now_ns();
        int rc = cio_process_pool_map(pool, cpu_bound_job, in, NNUMBERS, out);
        ns_pool += bench_now_ns() - t0;
        if (rc)
            die("map", rc);
        for (int x = 0; x < NNUMBERS; x++) {
            u128 v;
            memcpy(&v, out[x]->data, sizeof v);
            cio_pool_bytes_free(out[x]);
            if (v != one[x]) {
                fprintf(stderr, "bench_process_pool: sum %d differs\n", x);
                exit(1);
            }
        }
    }
    printf("RESULT bench=process_pool_cpu_bound numbers=%d rounds=%d workers=%u "
           "one_process_ms=%.1f pool_ms=%.1f speedup=%.2f\n",
           NNUMBERS, rounds, cio_process_pool_workers(pool), bench_ms(ns_one / rounds),
           bench_ms(ns_pool / rounds), (double)ns_one / (double)ns_pool);
}

enum { BIG = 64 << 20, BIG_ROUNDS = 5 };

static void run_big(cio_process_pool_t *pool)
{
    unsigned char *in = bench_alloc(BIG);
    uint32_t seed = BENCH_SEED;
    for (size_t i = 0; i < BIG; i += 4)
        *(uint32_t *)(in + i) = bench_xorshift32(&seed);
    int64_t ns = 0;
    for (int r = 0; r < BIG_ROUNDS; r++) {
        cio_pool_bytes_t *o;
        int64_t t0 = bench_now_ns();
        int rc = cio_process_pool_run(pool, echo_job, in, BIG, &o);
        ns += bench_now_ns() - t0;
        if (rc)
            die("run", rc);
        if (o->len != BIG || memcmp(o->data, in, BIG)) {
            fprintf(stderr, "bench_process_pool: 64 MiB result differs\n");
            exit(1);
        }
        cio_pool_bytes_free(o);
    }
    double ms = bench_ms(ns / BIG_ROUNDS);
    printf("RESULT bench=process_pool_big mib=64 round_trip_ms=%.1f mib_per_s=%.0f\n", ms,
           2 * 64 / (ms / 1000));
    free(in);
}

typedef struct what {
    bool small, cpu, big;
} what_t;

static int main_task(void *arg, void **result)
{
    (void)result;
    what_t *w = arg;
    cio_process_pool_t *pool;
    int rc = cio_process_pool_new(&pool, NULL, &(cio_process_pool_opts_t){.workers = workers});
    if (rc)
        die("cio_process_pool_new", rc);
    if (w->small)
        run_small(pool);
    if (w->cpu)
        run_cpu_bound(pool);
    if (w->big)
        run_big(pool);
    if ((rc = cio_process_pool_shutdown(pool, true, false)))
        die("shutdown", rc);
    cio_process_pool_free(pool);
    return 0;
}

int main(int argc, char **argv)
{
    int opt;
    while ((opt = getopt(argc, argv, "n:w:r:")) != -1) {
        if (opt == 'n')
            n_jobs = atol(optarg);
        else if (opt == 'r')
            rounds = atoi(optarg) > 0 ? atoi(optarg) : 1;
        else if (opt == 'w')
            workers = (unsigned)atoi(optarg);
        else {
            fprintf(stderr, "usage: %s [-n JOBS] [-w WORKERS] [-r ROUNDS] [small|cpu_bound ...]\n",
                    argv[0]);
            return 2;
        }
    }
    if (n_jobs < 1000)
        n_jobs = 1000;
    what_t w = {optind >= argc, optind >= argc, optind >= argc};
    for (int i = optind; i < argc; i++) {
        if (!strcmp(argv[i], "small"))
            w.small = true;
        else if (!strcmp(argv[i], "cpu_bound"))
            w.cpu = true;
        else if (!strcmp(argv[i], "big"))
            w.big = true;
        else {
            fprintf(stderr, "bench_process_pool: unknown workload %s\n", argv[i]);
            return 2;
        }
    }
    int rc = cio_run(main_task, &w);
    if (rc)
        die("cio_run", rc);
    return 0;
}
