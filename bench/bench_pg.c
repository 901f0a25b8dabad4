/*
 * cio-pg query round trips (issue 9, "Benchmarks": queries), next to
 * bench_pg_asyncpg.py, which does the same with Python asyncpg. Every
 * workload runs `SELECT $1::int` with the integers 0..N-1 as its parameter
 * and checks that each reply is the value sent.
 *
 *   bench_pg [-n N] [-b BATCH] [-t TASKS] [-c CONNS] WORKLOAD
 *
 *   prepared    one connection, one query at a time: the statement is
 *               prepared once (cio_pg_prepare), then N cio_pg_query_prepared
 *               (Bind/Execute/Sync: one round trip each). This is what
 *               asyncpg does with its statement cache.
 *   unprepared  one connection, one query at a time, N cio_pg_query (the
 *               extended protocol with the unnamed statement: Parse, Bind,
 *               Describe, Execute and Sync in one round trip).
 *   pipeline    one connection in pipeline mode: N / BATCH batches of BATCH
 *               cio_pg_pipeline_send_prepared (the statement prepared once,
 *               as asyncpg's executemany does) and one cio_pg_pipeline_sync,
 *               then the BATCH results read with cio_pg_pipeline_result.
 *   pool        TASKS tasks (32) share a pool of CONNS connections (8); each
 *               task loops: acquire, query_prepared, release, until N
 *               queries are done in all. Each connection prepares the
 *               statement once, on first use (as asyncpg's per-connection
 *               statement cache does).
 *
 * The floor, with libpq alone (blocking calls, no loop, one connection):
 *
 *   libpq_prepared    PQexecPrepared, one at a time
 *   libpq_unprepared  PQexecParams, one at a time
 *   libpq_pipeline    pipeline mode, PQsendQueryParams (what cio-pg's
 *                     pipeline sends), BATCH per PQpipelineSync
 *   libpq_pipeline_prepared  the same with PQsendQueryPrepared (a prepared
 *                     statement: no Parse on the server per query)
 *
 * The blocking pipeline is safe at these sizes: a batch's queries and
 * results (tens of kilobytes) fit in the loopback socket's buffers.
 *
 * The server is CIO_PG_DSN (libpq's defaults when unset); the backend is
 * CIO_BACKEND (epoll or uring): a loop asked for io_uring that runs on epoll
 * is a failure, never an io_uring figure. Connecting, preparing and a
 * warm-up of WARMUP queries per connection are not timed. Prints
 *
 *   RESULT bench=pg_WORKLOAD backend=B queries=N qps=Q us_per_query=U cpu_us_per_query=C
 *
 * where C is this process's CPU time (user + system, getrusage) over the
 * timed part divided by N: the client's own cost per query, which a loaded
 * machine disturbs less than the wall-clock rate.
 */
#define BENCH_NAME "bench_pg"
#include "bench_pg_common.h"

#include <libpq-fe.h>

#include <limits.h>
#include <math.h>
#include <unistd.h>

#define STMT "bench_pg_select"
#define SQL "SELECT $1::int"
#define WARMUP 200
#define MAX_CONNS 256

typedef struct bench {
    const char *workload;
    const char *dsn;
    long n;        /* queries timed */
    long batch;    /* pipeline: queries per sync */
    unsigned tasks; /* pool: tasks */
    unsigned conns; /* pool: connections */
    /* pool workload */
    cio_pg_pool_t *pool;
    long next;                    /* next query index to hand out */
    long done;                    /* queries completed */
    cio_pg_t *prepared[MAX_CONNS]; /* connections that hold STMT */
    unsigned nprepared;
    bench_pg_clock clock; /* the timed part */
} bench;


/* Checks that r holds one row whose only value is the text in want. */
static int check(cio_pg_result_t *r, const char *want, long i)
{
    const char *v = cio_pg_value(r, 0, 0);
    if (cio_pg_ntuples(r) != 1 || !v || strcmp(v, want) != 0) {
        fprintf(stderr, "bench_pg: query %ld: got '%s', want '%s'\n", i, v ? v : "(null)",
                want);
        return -EPROTO;
    }
    return 0;
}

/* One prepared round trip of value i on c, checked. */
static int one_prepared(cio_pg_t *c, long i)
{
    char buf[24];
    snprintf(buf, sizeof buf, "%ld", i);
    const char *v[1] = {buf};
    cio_pg_result_t *r;
    int64_t n = cio_pg_query_prepared(c, &r, STMT, 1, v, NULL, NULL, 0);
    if (n < 0)
        return bench_pg_fail(c, "cio_pg_query_prepared", i, (int)n);
    int rc = check(r, buf, i);
    cio_pg_result_free(r);
    return rc;
}

/* One unprepared round trip of value i on c, checked. */
static int one_unprepared(cio_pg_t *c, long i)
{
    char buf[24];
    snprintf(buf, sizeof buf, "%ld", i);
    const char *v[1] = {buf};
    cio_pg_result_t *r;
    int64_t n = cio_pg_query(c, &r, SQL, 1, v);
    if (n < 0)
        return bench_pg_fail(c, "cio_pg_query", i, (int)n);
    int rc = check(r, buf, i);
    cio_pg_result_free(r);
    return rc;
}

static int prepare(cio_pg_t *c)
{
    int rc = cio_pg_prepare(c, STMT, SQL, 1, NULL);
    return rc < 0 ? bench_pg_fail(c, "cio_pg_prepare", -1, rc) : 0;
}

/* ------------------------------------------------ one connection ---- */

static int run_sequential(bench *b, cio_pg_t *c, bool prepared)
{
    int rc = prepared ? prepare(c) : 0;
    for (long i = 0; rc == 0 && i < WARMUP; i++)
        rc = prepared ? one_prepared(c, i) : one_unprepared(c, i);
    if (rc < 0)
        return rc;
    bench_pg_clock_start(&b->clock);
    for (long i = 0; i < b->n; i++) {
        rc = prepared ? one_prepared(c, i) : one_unprepared(c, i);
        if (rc < 0)
            return rc;
    }
    bench_pg_clock_stop(&b->clock);
    return 0;
}

/* One pipelined batch of values [first, first + count): sends them all,
 * syncs, reads and checks every result. */
static int pipeline_batch(cio_pg_t *c, long first, long count, char (*bufs)[24])
{
    int rc;
    for (long k = 0; k < count; k++) {
        snprintf(bufs[k], sizeof bufs[k], "%ld", first + k);
        const char *v[1] = {bufs[k]};
        if ((rc = cio_pg_pipeline_send_prepared(c, STMT, 1, v)) < 0)
            return bench_pg_fail(c, "cio_pg_pipeline_send_prepared", first + k, rc);
    }
    if ((rc = cio_pg_pipeline_sync(c)) < 0)
        return bench_pg_fail(c, "cio_pg_pipeline_sync", first, rc);
    for (long k = 0; k < count; k++) {
        cio_pg_result_t *r;
        int64_t n = cio_pg_pipeline_result(c, &r);
        if (n < 0)
            return bench_pg_fail(c, "cio_pg_pipeline_result", first + k, (int)n);
        rc = check(r, bufs[k], first + k);
        cio_pg_result_free(r);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int run_pipeline(bench *b, cio_pg_t *c)
{
    char(*bufs)[24] = bench_alloc((size_t)b->batch * 24);
    /* The statement prepared once, as asyncpg's executemany does. */
    int rc = prepare(c);
    if (rc < 0) {
        free(bufs);
        return rc;
    }
    rc = cio_pg_pipeline_enter(c);
    if (rc < 0) {
        free(bufs);
        return bench_pg_fail(c, "cio_pg_pipeline_enter", -1, rc);
    }
    rc = pipeline_batch(c, 0, b->batch < WARMUP ? b->batch : WARMUP, bufs);
    if (rc == 0) {
        bench_pg_clock_start(&b->clock);
        for (long i = 0; rc == 0 && i < b->n; i += b->batch)
            rc = pipeline_batch(c, i, b->n - i < b->batch ? b->n - i : b->batch, bufs);
        bench_pg_clock_stop(&b->clock);
    }
    free(bufs);
    int xrc = cio_pg_pipeline_exit(c);
    if (rc == 0 && xrc < 0)
        rc = bench_pg_fail(c, "cio_pg_pipeline_exit", -1, xrc);
    return rc;
}

static int run_one_connection(bench *b)
{
    cio_pg_t *c;
    int rc = bench_pg_connect(&c, b->dsn);
    if (rc < 0)
        return rc;
    if (strcmp(b->workload, "pipeline") == 0)
        rc = run_pipeline(b, c);
    else
        rc = run_sequential(b, c, strcmp(b->workload, "prepared") == 0);
    cio_pg_close(c);
    return rc;
}

/* ------------------------------------------------------------ pool ---- */

/* Prepares STMT on c unless it already holds it. */
static int ensure_prepared(bench *b, cio_pg_t *c)
{
    for (unsigned k = 0; k < b->nprepared; k++)
        if (b->prepared[k] == c)
            return 0;
    if (b->nprepared == MAX_CONNS) {
        fprintf(stderr, "bench_pg: more than %d connections seen\n", MAX_CONNS);
        return -ENOSPC;
    }
    int rc = prepare(c);
    if (rc == 0)
        b->prepared[b->nprepared++] = c;
    return rc;
}

static int pool_worker(void *arg, void **result)
{
    (void)result;
    bench *b = arg;
    while (b->next < b->n) {
        long i = b->next++;
        cio_pg_t *c;
        int rc = cio_pg_pool_acquire(b->pool, &c, INFINITY);
        if (rc < 0)
            return bench_pg_fail(NULL, "cio_pg_pool_acquire", i, rc);
        rc = ensure_prepared(b, c);
        if (rc == 0)
            rc = one_prepared(c, i);
        int rrc = cio_pg_pool_release(b->pool, c);
        if (rc == 0 && rrc < 0)
            rc = bench_pg_fail(NULL, "cio_pg_pool_release", i, rrc);
        if (rc < 0)
            return rc;
        b->done++;
    }
    return 0;
}

/* Opens every connection of the pool and prepares it, untimed: acquires
 * CONNS connections at once (so the pool opens them all), warms each up,
 * gives them back. */
static int pool_warm(bench *b)
{
    cio_pg_t **cs = bench_alloc(b->conns * sizeof *cs);
    unsigned got = 0;
    int rc = 0;
    while (got < b->conns && rc == 0) {
        rc = cio_pg_pool_acquire(b->pool, &cs[got], 30);
        if (rc < 0)
            rc = bench_pg_fail(NULL, "cio_pg_pool_acquire (warm-up)", -1, rc);
        else
            got++;
    }
    for (unsigned k = 0; k < got && rc == 0; k++) {
        rc = ensure_prepared(b, cs[k]);
        for (long i = 0; rc == 0 && i < WARMUP / 8; i++)
            rc = one_prepared(cs[k], i);
    }
    for (unsigned k = 0; k < got; k++)
        cio_pg_pool_release(b->pool, cs[k]);
    free(cs);
    return rc;
}

static int run_pool(bench *b)
{
    cio_pg_pool_opts_t o = {.max_size = b->conns, .connect_timeout = 30};
    int rc = cio_pg_pool_new(&b->pool, b->dsn, &o);
    if (rc < 0)
        return bench_pg_fail(NULL, "cio_pg_pool_new", -1, rc);
    rc = pool_warm(b);
    cio_task_t **ts = bench_alloc(b->tasks * sizeof *ts);
    int *st = bench_alloc(b->tasks * sizeof *st);
    unsigned spawned = 0;
    if (rc == 0) {
        bench_pg_clock_start(&b->clock);
        for (; spawned < b->tasks; spawned++) {
            rc = cio_spawn(&ts[spawned], pool_worker, b);
            if (rc < 0) {
                bench_pg_fail(NULL, "cio_spawn", -1, rc);
                b->next = b->n; /* the others stop after their query */
                break;
            }
        }
        int grc = cio_gather((cio_future_t *const *)ts, spawned, NULL, st, CIO_GATHER_ALL);
        bench_pg_clock_stop(&b->clock);
        if (rc == 0 && grc < 0)
            rc = bench_pg_fail(NULL, "cio_gather", -1, grc);
        for (unsigned k = 0; k < spawned; k++) {
            if (rc == 0 && st[k] < 0)
                rc = st[k];
            cio_future_release(ts[k]);
        }
    }
    free(ts);
    free(st);
    int frc = cio_pg_pool_free(b->pool);
    if (rc == 0 && frc < 0)
        rc = bench_pg_fail(NULL, "cio_pg_pool_free", -1, frc);
    if (rc == 0 && b->done != b->n) {
        fprintf(stderr, "bench_pg: pool: %ld queries done, expected %ld\n", b->done, b->n);
        rc = -EPROTO;
    }
    return rc;
}

/* ----------------------------------------------------------- libpq ---- */

/* Checks a libpq result of value want (consumes r). */
static int pq_check(PGresult *r, const char *want, long i)
{
    int rc = 0;
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        fprintf(stderr, "bench_pg: libpq query %ld: %s", i, PQresultErrorMessage(r));
        rc = -EREMOTEIO;
    } else {
        rc = check(r, want, i);
    }
    PQclear(r);
    return rc;
}

/* One blocking round trip of value i. */
static int pq_one(PGconn *c, long i, bool prepared)
{
    char buf[24];
    snprintf(buf, sizeof buf, "%ld", i);
    const char *v[1] = {buf};
    PGresult *r = prepared ? PQexecPrepared(c, STMT, 1, v, NULL, NULL, 0)
                           : PQexecParams(c, SQL, 1, NULL, v, NULL, NULL, 0);
    return pq_check(r, buf, i);
}

/* One blocking pipelined batch of values [first, first + count). */
static int pq_batch(PGconn *c, long first, long count, bool prepared, char (*bufs)[24])
{
    for (long k = 0; k < count; k++) {
        snprintf(bufs[k], sizeof bufs[k], "%ld", first + k);
        const char *v[1] = {bufs[k]};
        int ok = prepared ? PQsendQueryPrepared(c, STMT, 1, v, NULL, NULL, 0)
                          : PQsendQueryParams(c, SQL, 1, NULL, v, NULL, NULL, 0);
        if (!ok) {
            fprintf(stderr, "bench_pg: libpq send: %s", PQerrorMessage(c));
            return -EIO;
        }
    }
    if (!PQpipelineSync(c)) {
        fprintf(stderr, "bench_pg: PQpipelineSync: %s", PQerrorMessage(c));
        return -EIO;
    }
    for (long k = 0; k < count; k++) {
        int rc = pq_check(PQgetResult(c), bufs[k], first + k);
        PGresult *end = PQgetResult(c); /* NULL: the end of this query */
        if (rc < 0 || end) {
            PQclear(end);
            return rc < 0 ? rc : -EPROTO;
        }
    }
    PGresult *sync = PQgetResult(c);
    int rc = PQresultStatus(sync) == PGRES_PIPELINE_SYNC ? 0 : -EPROTO;
    PQclear(sync);
    return rc;
}

static int run_libpq_on(bench *b, PGconn *c, bool prepared, bool pipelined)
{
    if (prepared) {
        PGresult *r = PQprepare(c, STMT, SQL, 1, NULL);
        bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        if (!ok)
            fprintf(stderr, "bench_pg: PQprepare: %s", PQresultErrorMessage(r));
        PQclear(r);
        if (!ok)
            return -EREMOTEIO;
    }
    int rc = 0;
    if (!pipelined) {
        for (long i = 0; rc == 0 && i < WARMUP; i++)
            rc = pq_one(c, i, prepared);
        if (rc == 0) {
            bench_pg_clock_start(&b->clock);
            for (long i = 0; rc == 0 && i < b->n; i++)
                rc = pq_one(c, i, prepared);
            bench_pg_clock_stop(&b->clock);
        }
        return rc;
    }
    if (!PQenterPipelineMode(c)) {
        fprintf(stderr, "bench_pg: PQenterPipelineMode: %s", PQerrorMessage(c));
        return -EIO;
    }
    char(*bufs)[24] = bench_alloc((size_t)b->batch * 24);
    rc = pq_batch(c, 0, b->batch < WARMUP ? b->batch : WARMUP, prepared, bufs);
    if (rc == 0) {
        bench_pg_clock_start(&b->clock);
        for (long i = 0; rc == 0 && i < b->n; i += b->batch)
            rc = pq_batch(c, i, b->n - i < b->batch ? b->n - i : b->batch, prepared, bufs);
        bench_pg_clock_stop(&b->clock);
    }
    free(bufs);
    return rc;
}

/* The libpq_* workloads: no loop at all. */
static int run_libpq(bench *b)
{
    PGconn *c = PQconnectdb(b->dsn);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "bench_pg: libpq connect: %s", PQerrorMessage(c));
        PQfinish(c);
        return -ECONNREFUSED;
    }
    const char *w = b->workload + strlen("libpq_");
    int rc = run_libpq_on(b, c, strstr(w, "unprepared") == NULL && strcmp(w, "pipeline") != 0,
                          strncmp(w, "pipeline", 8) == 0);
    PQfinish(c);
    return rc;
}

/* ------------------------------------------------------------ main ---- */

static int bench_main(void *arg, void **result)
{
    (void)result;
    bench *b = arg;
    if (strcmp(b->workload, "pool") == 0)
        return run_pool(b);
    return run_one_connection(b);
}

static const char *const workloads[] = {
    "prepared",         "unprepared",       "pipeline",       "pool",
    "libpq_prepared",   "libpq_unprepared", "libpq_pipeline", "libpq_pipeline_prepared",
};

static void report(const bench *b, const char *backend)
{
    double s = bench_pg_clock_s(&b->clock);
    printf("RESULT bench=pg_%s backend=%s queries=%ld qps=%.0f us_per_query=%.2f "
           "cpu_us_per_query=%.2f\n",
           b->workload, backend, b->n, (double)b->n / s, s * 1e6 / (double)b->n,
           bench_pg_clock_cpu_us_per(&b->clock, b->n));
}

static void usage(void)
{
    fprintf(stderr, "usage: bench_pg [-n N] [-b BATCH] [-t TASKS] [-c CONNS] WORKLOAD\n"
                    "WORKLOAD: prepared, unprepared, pipeline, pool, libpq_prepared,\n"
                    "          libpq_unprepared, libpq_pipeline, libpq_pipeline_prepared\n");
    exit(2);
}

static long arg_long(const char *s, long min)
{
    return bench_pg_arg_long(s, min, LONG_MAX, usage);
}

int main(int argc, char **argv)
{
    bench b = {.n = 20000, .batch = 1000, .tasks = 32, .conns = 8};
    int opt;
    while ((opt = getopt(argc, argv, "n:b:t:c:")) != -1) {
        switch (opt) {
        case 'n': b.n = arg_long(optarg, 1); break;
        case 'b': b.batch = arg_long(optarg, 1); break;
        case 't': b.tasks = (unsigned)arg_long(optarg, 1); break;
        case 'c': b.conns = (unsigned)arg_long(optarg, 1); break;
        default: usage();
        }
    }
    if (optind + 1 != argc)
        usage();
    b.workload = argv[optind];
    bool known = false;
    for (size_t k = 0; k < sizeof workloads / sizeof workloads[0]; k++)
        known = known || strcmp(b.workload, workloads[k]) == 0;
    if (!known || b.conns > MAX_CONNS)
        usage();
    b.dsn = bench_pg_dsn();
    if (strncmp(b.workload, "libpq_", 6) == 0) {
        if (run_libpq(&b) < 0) {
            fprintf(stderr, "bench_pg %s: failed\n", b.workload);
            return 1;
        }
        report(&b, "none");
        return 0;
    }

    const char *want;
    cio_loop_t *loop = bench_pg_loop_new(&want);
    if (!loop)
        return 1;
    int rc = bench_pg_run(loop, bench_main, &b);
    bench_pg_loop_free(loop);
    if (rc < 0) {
        fprintf(stderr, "bench_pg %s (%s): failed: %s\n", b.workload, want, cio_strerror(rc));
        return 1;
    }
    report(&b, want);
    return 0;
}
