/*
 * cio-pg's task queue: jobs per second through enqueue, claim and complete
 * with an empty handler (issue 9, "Benchmarks": queue). bench/pg.sh runs it
 * next to pgbench running pgq_pgbench.sql, the same statements on the same
 * table (the database's own ceiling).
 *
 *   bench_pgq [-n JOBS] [-w WORKERS] [-p PRODUCERS]
 *   bench_pgq -i      only cio_pgq_install (for pgbench's runs), no RESULT
 *
 * One process, one loop (CIO_BACKEND: epoll or uring), on the server of
 * CIO_PG_DSN. cio_pgq_install creates the schema (untimed). WORKERS tasks
 * (4) each run cio_pgq_work with concurrency 1 on one shared pool of
 * 2 x WORKERS connections (each worker takes one for a claim and one for an
 * outcome, briefly, and opens one more of its own to LISTEN), with a
 * handler that does nothing and returns 0. PRODUCERS tasks (4, one per
 * worker, as pgbench's 4 clients each enqueue their own job) enqueue JOBS
 * jobs in all, one cio_pgq_enqueue each (a 16-byte payload: a tag and the
 * job's number; default options), each on a connection of its own, while
 * the workers run them.
 *
 * A warm-up of WARMUP jobs runs first, untimed (connections opened). The
 * clock runs from the first timed enqueue until the workers' counters
 * (cio_pgq_stats_t.completed, read every millisecond) show every job
 * completed. Then, untimed: the check (every job of the run's queue done in
 * the table, each claimed once and completed once, none failed, refused as
 * stale or dead), the deletion of the run's jobs, and the workers' stop by
 * cancellation (their graceful shutdown), bounded by SHUTDOWN_WAIT seconds:
 * if they have not ended by then, that is reported on stderr and the
 * process exits without tearing the loop down (the figure stands). The
 * queue is named bench_pgq_<pid>, so that runs do not meet.
 *
 *   RESULT bench=pgq backend=B jobs=N workers=W producers=P jobs_per_s=R
 *          cpu_us_per_job=C shutdown_ms=S
 *
 * cpu_us_per_job: this process's CPU time (user + system) over the timed
 * part divided by N (producers and workers together); shutdown_ms: how long
 * the workers took to stop.
 */
#define BENCH_NAME "bench_pgq"
#include "bench_pg_common.h"

#include <inttypes.h>
#include <math.h>
#include <unistd.h>

#define WARMUP 100
#define MAX_TASKS 64
#define SHUTDOWN_WAIT 10 /* seconds the workers' shutdown may take */
#ifndef BENCH_PGQ_WAIT
#define BENCH_PGQ_WAIT 120 /* seconds: a run that takes longer has failed */
#endif

typedef struct bench {
    const char *dsn;
    char queue[64];
    long jobs;
    unsigned workers, producers;
    bool install_only;
    bool ok;            /* measured and checked */
    bool stuck;         /* workers did not stop in time */
    double shutdown_ms; /* their shutdown, untimed */
    cio_pg_pool_t *pool;
    cio_pgq_stats_t stats[MAX_TASKS];
    long next;    /* next job number to enqueue */
    long limit;   /* enqueue up to this job number */
    bench_pg_clock clock; /* the timed part */
} bench;

typedef struct producer {
    bench *b;
    cio_pg_t *c;
} producer;

/* Reports a failed call with the connection's message; returns rc. */
static int fail(cio_pg_t *c, const char *what, int rc)
{
    return bench_pg_fail(c, what, -1, rc);
}

/* The empty handler: the job succeeds with no result. */
static int handler(cio_pgq_job_t *j, void *arg)
{
    (void)j;
    (void)arg;
    return 0;
}

typedef struct worker_arg {
    bench *b;
    unsigned k;
} worker_arg;

static int run_worker(void *arg, void **result)
{
    (void)result;
    worker_arg *w = arg;
    cio_pgq_worker_opts_t o = {.queue = w->b->queue, .concurrency = 1, .shutdown_grace = 1,
                               .stats = &w->b->stats[w->k]};
    int rc = cio_pgq_work(w->b->pool, &o, handler, NULL);
    /* Cancellation is how a worker is stopped: its normal end. */
    return rc == -ECANCELED ? 0 : fail(NULL, "cio_pgq_work", rc);
}

/* Enqueues jobs until b->limit is reached, one statement each. */
static int run_producer(void *arg, void **result)
{
    (void)result;
    producer *p = arg;
    bench *b = p->b;
    while (b->next < b->limit) {
        long i = b->next++;
        char payload[16] = "bench_pgq";
        memcpy(payload + 8, &i, sizeof i);
        int rc = cio_pgq_enqueue(p->c, NULL, b->queue, payload, sizeof payload, NULL);
        if (rc < 0)
            return fail(p->c, "cio_pgq_enqueue", rc);
    }
    return 0;
}

static uint64_t completed(const bench *b)
{
    uint64_t n = 0;
    for (unsigned k = 0; k < b->workers; k++)
        n += b->stats[k].completed;
    return n;
}

/* Enqueues up to job number limit with the producers and waits until the
 * workers have completed that many. */
static int round_trip(bench *b, producer *ps, long limit)
{
    cio_task_t *ts[MAX_TASKS] = {0};
    int st[MAX_TASKS];
    unsigned n = 0;
    int rc = 0;
    b->limit = limit;
    for (; n < b->producers; n++)
        if ((rc = cio_spawn(&ts[n], run_producer, &ps[n])) < 0)
            break;
    int grc = cio_gather(ts, n, NULL, st, CIO_GATHER_ALL);
    for (unsigned k = 0; k < n; k++) {
        if (rc == 0 && st[k] < 0)
            rc = st[k];
        cio_future_release(ts[k]);
    }
    if (rc == 0 && grc < 0)
        rc = grc;
    if (rc < 0)
        return fail(NULL, "producers", rc);
    /* The workers' counters are plain memory of this loop: read them often. */
    for (int64_t start = bench_now_ns(); completed(b) < (uint64_t)limit;) {
        if (bench_now_ns() - start > (int64_t)BENCH_PGQ_WAIT * 1000000000) {
            fprintf(stderr, "bench_pgq: %" PRIu64 "/%ld jobs completed after %d s\n",
                    completed(b), limit, BENCH_PGQ_WAIT);
            for (unsigned k = 0; k < b->workers; k++)
                fprintf(stderr, "bench_pgq: worker %u: claimed %" PRIu64 ", completed %" PRIu64
                                ", failed %" PRIu64 ", stale %" PRIu64 ", errors %" PRIu64 "\n",
                        k, b->stats[k].claimed, b->stats[k].completed, b->stats[k].failed,
                        b->stats[k].stale, b->stats[k].errors);
            return -ETIMEDOUT;
        }
        if ((rc = cio_sleep(0.001)) < 0)
            return rc;
    }
    return 0;
}

/* Every job done once, nothing failed or refused. */
static int verify(bench *b, cio_pg_t *c, long total)
{
    uint64_t claimed = 0, done = 0, bad = 0;
    for (unsigned k = 0; k < b->workers; k++) {
        claimed += b->stats[k].claimed;
        done += b->stats[k].completed;
        bad += b->stats[k].failed + b->stats[k].stale + b->stats[k].dead;
    }
    int64_t all = cio_pgq_count(c, b->queue, -1);
    int64_t ok = cio_pgq_count(c, b->queue, CIO_PGQ_DONE);
    if (all < 0 || ok < 0)
        return fail(c, "cio_pgq_count", (int)(all < 0 ? all : ok));
    if (claimed != (uint64_t)total || done != (uint64_t)total || bad || all != total ||
        ok != total) {
        fprintf(stderr,
                "bench_pgq: %ld jobs: claimed %" PRIu64 ", completed %" PRIu64
                ", failed/stale/dead %" PRIu64 "; in the table %" PRId64 ", done %" PRId64 "\n",
                total, claimed, done, bad, all, ok);
        return -EPROTO;
    }
    return 0;
}

/* Deletes the run's jobs (untimed); a missing table is no error. */
static int delete_jobs(bench *b, cio_pg_t *c)
{
    const char *v[1] = {b->queue};
    int64_t n = cio_pg_query(c, NULL, "DELETE FROM cio_jobs WHERE queue = $1", 1, v);
    if (n < 0 && strcmp(cio_pg_error_sqlstate(c), "42P01") != 0)
        return fail(c, "deleting the run's jobs", (int)n);
    return 0;
}

/*
 * Stops the workers the way a program does (cancellation: a graceful
 * shutdown), waiting at most SHUTDOWN_WAIT seconds. Returns the first
 * worker's error, or -ETIMEDOUT when some did not end in time: they are
 * left running (b->stuck) and the process ends without tearing down.
 */
static int stop_workers(bench *b, cio_task_t **wt, unsigned nw)
{
    int64_t t0 = bench_now_ns();
    for (unsigned k = 0; k < nw; k++)
        cio_task_cancel(wt[k]);
    int rc = 0;
    int n = nw ? cio_wait(wt, nw, CIO_ALL_COMPLETED, SHUTDOWN_WAIT) : 0;
    if (n < 0)
        rc = n;
    for (unsigned k = 0; k < nw; k++) {
        if (!cio_future_done(wt[k])) {
            b->stuck = true;
        } else {
            int st = cio_future_result(wt[k], NULL);
            if (rc == 0 && st < 0)
                rc = st;
        }
        cio_future_release(wt[k]); /* a task runs on without references */
    }
    b->shutdown_ms = bench_ms(bench_now_ns() - t0);
    if (b->stuck) {
        fprintf(stderr, "bench_pgq: the workers did not stop within %d s of their cancellation\n",
                SHUTDOWN_WAIT);
        return -ETIMEDOUT;
    }
    return rc;
}

/* The measurement proper, on connections and a pool already open. */
static int measure(bench *b, producer *ps, cio_pg_t *ctl)
{
    worker_arg wa[MAX_TASKS];
    cio_task_t *wt[MAX_TASKS];
    unsigned nw = 0;
    int rc = 0;
    for (; nw < b->workers; nw++) {
        wa[nw] = (worker_arg){.b = b, .k = nw};
        if ((rc = cio_spawn(&wt[nw], run_worker, &wa[nw])) < 0) {
            fail(NULL, "cio_spawn", rc);
            break;
        }
    }
    if (rc == 0)
        rc = round_trip(b, ps, WARMUP);
    if (rc == 0) {
        bench_pg_clock_start(&b->clock);
        rc = round_trip(b, ps, WARMUP + b->jobs);
        bench_pg_clock_stop(&b->clock);
    }
    /* Every completion is recorded once the counters show it: check now,
     * while the workers idle. */
    if (rc == 0)
        rc = verify(b, ctl, WARMUP + b->jobs);
    int drc = delete_jobs(b, ctl);
    b->ok = rc == 0 && drc == 0;
    int src = stop_workers(b, wt, nw);
    return rc < 0 ? rc : drc < 0 ? drc : src;
}

static int bench_main(void *arg, void **result)
{
    (void)result;
    bench *b = arg;
    producer ps[MAX_TASKS] = {{0}};
    unsigned np = 0;
    cio_pg_t *ctl = NULL;
    int rc = bench_pg_connect(&ctl, b->dsn);
    if (rc < 0)
        return rc;
    if ((rc = cio_pgq_install(ctl)) < 0)
        fail(ctl, "cio_pgq_install", rc);
    for (; rc == 0 && !b->install_only && np < b->producers; np++) {
        ps[np].b = b;
        rc = bench_pg_connect(&ps[np].c, b->dsn);
    }
    cio_pg_pool_opts_t po = {.max_size = 2 * b->workers, .connect_timeout = 30};
    if (rc == 0 && !b->install_only && (rc = cio_pg_pool_new(&b->pool, b->dsn, &po)) < 0)
        fail(NULL, "cio_pg_pool_new", rc);
    if (rc == 0 && !b->install_only)
        rc = measure(b, ps, ctl);
    if (b->stuck)
        return rc; /* the workers still hold the pool's connections */
    int frc = cio_pg_pool_free(b->pool);
    if (rc == 0 && frc < 0)
        rc = fail(NULL, "cio_pg_pool_free", frc);
    for (unsigned k = 0; k < np; k++)
        cio_pg_close(ps[k].c);
    cio_pg_close(ctl);
    return rc;
}

static void usage(void)
{
    fprintf(stderr, "usage: bench_pgq [-n JOBS] [-w WORKERS] [-p PRODUCERS] | -i\n");
    exit(2);
}

static long arg_long(const char *s, long min, long max)
{
    return bench_pg_arg_long(s, min, max, usage);
}

int main(int argc, char **argv)
{
    bench b = {.jobs = 20000, .workers = 4, .producers = 4};
    int opt;
    while ((opt = getopt(argc, argv, "n:w:p:i")) != -1) {
        switch (opt) {
        case 'i': b.install_only = true; break;
        case 'n': b.jobs = arg_long(optarg, 1, 100000000); break;
        case 'w': b.workers = (unsigned)arg_long(optarg, 1, MAX_TASKS); break;
        case 'p': b.producers = (unsigned)arg_long(optarg, 1, MAX_TASKS); break;
        default: usage();
        }
    }
    if (optind != argc)
        usage();
    b.dsn = bench_pg_dsn();
    snprintf(b.queue, sizeof b.queue, "bench_pgq_%ld", (long)getpid());

    const char *want;
    cio_loop_t *loop = bench_pg_loop_new(&want);
    if (!loop)
        return 1;
    int rc = bench_pg_run(loop, bench_main, &b);
    if (b.stuck) {
        /* Tearing the loop down would wait for the workers: leave instead,
         * the measurement (checked before the shutdown) is still valid. */
        fprintf(stderr, "bench_pgq (%s): exiting without teardown\n", want);
        rc = b.ok ? 0 : -EPROTO;
    } else {
        bench_pg_loop_free(loop);
    }
    if (rc < 0) {
        fprintf(stderr, "bench_pgq (%s): failed: %s\n", want, cio_strerror(rc));
        return 1;
    }
    if (b.install_only)
        return 0;
    printf("RESULT bench=pgq backend=%s jobs=%ld workers=%u producers=%u jobs_per_s=%.0f "
           "cpu_us_per_job=%.2f shutdown_ms=%.1f\n",
           want, b.jobs, b.workers, b.producers, (double)b.jobs / bench_pg_clock_s(&b.clock),
           bench_pg_clock_cpu_us_per(&b.clock, b.jobs), b.shutdown_ms);
    fflush(stdout);
    if (b.stuck)
        _exit(0);
    return 0;
}
