/*
 * A distributed task queue on PostgreSQL that loses nothing (seed 002,
 * "通过队列实现分布式任务"; issue 9, item 4).
 *
 *   pg_queue [CONNINFO]      (else $CIO_PG_DSN, else libpq's defaults)
 *
 * The producer installs the queue's schema, enqueues 10,000 jobs in one
 * statement, and starts four worker processes (this program again, with
 * --worker). When about half the jobs are done it kills one worker with
 * SIGKILL, in the middle of its jobs. The jobs that worker held come back
 * when their leases (2 s) expire, and the other workers run them. When
 * every job is done, the program proves it from the database:
 *
 *  - every execution of a handler is logged in pg_queue_demo_exec (a plain
 *    INSERT, outside any transaction of the queue): the killed worker's
 *    in-flight jobs show there twice (at-least-once execution);
 *  - every completion is logged in pg_queue_demo_done by the worker's
 *    on_complete hook, inside the completion's transaction, in a table
 *    WITHOUT a unique constraint: a job completed twice would show twice
 *    (exactly-once completion record).
 *
 * It prints the counts and exits 1 if a job is missing, never ran, or was
 * recorded twice, or if a surviving worker did not stop cleanly. The demo
 * tables keep their rows (one queue name per run).
 */
#include "example.h"

#include <cio-pg.h>

#include <inttypes.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#define JOBS 10000
#define WORKERS 4
#define CONCURRENCY 4
#define LEASE 2.0
#define JOB_SECONDS 0.005 /* each handler's work */

static const char *dsn;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A scalar query's integer (exits on failure). */
static int64_t scalar(cio_pg_t *c, const char *sql, const char *queue)
{
    const char *v[1] = {queue};
    cio_pg_result_t *r;
    int64_t n = cio_pg_query(c, &r, sql, queue ? 1 : 0, v);
    if (n != 1) {
        fprintf(stderr, "%s: %s\n", sql, cio_pg_error_message(c));
        exit(1);
    }
    int64_t x = strtoll(cio_pg_value(r, 0, 0), NULL, 10);
    cio_pg_result_free(r);
    return x;
}

/* ------------------------------------------------------------------------ */
/* Worker process                                                            */
/* ------------------------------------------------------------------------ */

/* The job: log this execution, then work a little. */
static int handler(cio_pgq_job_t *j, void *arg)
{
    cio_pg_pool_t *pool = arg;
    char id[24], pid[16];
    snprintf(id, sizeof id, "%" PRId64, cio_pgq_job_id(j));
    snprintf(pid, sizeof pid, "%ld", (long)getpid());
    const char *v[2] = {id, pid};
    cio_pg_t *c;
    int rc = cio_pg_pool_acquire(pool, &c, 10);
    if (rc < 0)
        return rc;
    int64_t n = cio_pg_query(c, NULL, "INSERT INTO pg_queue_demo_exec VALUES ($1, $2)", 2, v);
    cio_pg_pool_release(pool, c);
    if (n < 0)
        return (int)n;
    return cio_sleep(JOB_SECONDS);
}

/* Inside the completion's transaction: commits with it, or not at all. */
static int on_complete(cio_pg_t *c, cio_pgq_job_t *j, void *arg)
{
    (void)arg;
    char id[24], pid[16];
    snprintf(id, sizeof id, "%" PRId64, cio_pgq_job_id(j));
    snprintf(pid, sizeof pid, "%ld", (long)getpid());
    const char *v[2] = {id, pid};
    int64_t n = cio_pg_query(c, NULL, "INSERT INTO pg_queue_demo_done VALUES ($1, $2)", 2, v);
    return n < 0 ? (int)n : 0;
}

typedef struct {
    const char *queue;
    cio_pg_pool_t *pool;
    int rc;
} worker_t;

static int work_task(void *arg, void **result)
{
    (void)result;
    worker_t *w = arg;
    cio_pgq_worker_opts_t o = {
        .queue = w->queue,
        .concurrency = CONCURRENCY,
        .lease = LEASE,
        .on_complete = on_complete,
    };
    w->rc = cio_pgq_work(w->pool, &o, handler, w->pool);
    return 0;
}

/* Runs until SIGTERM, then shuts the worker down gracefully. */
static int worker_main(void *arg, void **result)
{
    (void)result;
    worker_t w = {.queue = arg};
    cio_pg_pool_opts_t po = {.max_size = 2 * CONCURRENCY + 1};
    CHECK(cio_pg_pool_new(&w.pool, dsn, &po));
    cio_task_t *t;
    CHECK(cio_spawn(&t, work_task, &w));
    CHECK(cio_signal_wait(SIGTERM));
    cio_task_cancel(t);
    cio_await(t, NULL);
    cio_future_release(t);
    CHECK(cio_pg_pool_free(w.pool));
    return w.rc == -ECANCELED ? 0 : w.rc;
}

/* ------------------------------------------------------------------------ */
/* Producer                                                                  */
/* ------------------------------------------------------------------------ */

static cio_process_t *start_worker(const char *queue)
{
    char *argv[] = {"pg_queue", "--worker", (char *)dsn, (char *)queue, NULL};
    cio_process_t *p;
    CHECK(cio_process_exec(&p, "/proc/self/exe", argv, NULL));
    return p;
}

/* Waits for completions (NOTIFY on cio_jobs_done, no polling) until at
 * least `want` jobs of the queue are finished; returns how many are. */
static int64_t await_done(cio_pg_t *l, const char *queue, int64_t want)
{
    for (;;) {
        int64_t done = cio_pgq_count(l, queue, CIO_PGQ_DONE) + cio_pgq_count(l, queue, CIO_PGQ_DEAD);
        CHECK((int)(done < 0 ? done : 0));
        if (done >= want)
            return done;
        cio_pg_notify_t *n;
        int rc = cio_pg_wait_notify(l, &n, 10);
        if (rc == -ETIMEDOUT) {
            fprintf(stderr, "no progress in 10 s (%" PRId64 " done)\n", done);
            exit(1);
        }
        CHECK(rc);
        cio_pg_notify_free(n);
        while (cio_pg_wait_notify(l, &n, 0) == 0)
            cio_pg_notify_free(n);
    }
}

static int enqueue_all(cio_pg_t *c, const char *queue)
{
    static char bufs[JOBS][16];
    static const void *payloads[JOBS];
    static size_t lens[JOBS];
    for (int i = 0; i < JOBS; i++) {
        lens[i] = (size_t)snprintf(bufs[i], sizeof bufs[i], "job %d", i);
        payloads[i] = bufs[i];
    }
    int64_t n = cio_pgq_enqueue_batch(c, NULL, queue, JOBS, payloads, lens, NULL);
    return n < 0 ? (int)n : 0;
}

/* The proof, from the database. Returns the exit status. */
static int prove(cio_pg_t *c, const char *queue, long killed)
{
    char sql[512];
    int64_t jobs = scalar(c, "SELECT count(*) FROM cio_jobs WHERE queue = $1", queue);
    int64_t done = scalar(c, "SELECT count(*) FROM cio_jobs WHERE queue = $1 AND state = 2", queue);
    int64_t execs = scalar(c, "SELECT count(*) FROM pg_queue_demo_exec e JOIN cio_jobs j"
                              " ON j.id = e.job WHERE j.queue = $1", queue);
    int64_t executed = scalar(c, "SELECT count(DISTINCT e.job) FROM pg_queue_demo_exec e JOIN cio_jobs j"
                                 " ON j.id = e.job WHERE j.queue = $1", queue);
    int64_t again = scalar(c, "SELECT count(*) FROM (SELECT e.job FROM pg_queue_demo_exec e"
                              " JOIN cio_jobs j ON j.id = e.job WHERE j.queue = $1"
                              " GROUP BY e.job HAVING count(*) > 1) x", queue);
    snprintf(sql, sizeof sql,
             "SELECT count(DISTINCT e.job) FROM pg_queue_demo_exec e JOIN cio_jobs j"
             " ON j.id = e.job WHERE j.queue = $1 AND e.worker = %ld AND j.attempts > 1", killed);
    int64_t by_killed = scalar(c, sql, queue);
    int64_t records = scalar(c, "SELECT count(*) FROM pg_queue_demo_done d JOIN cio_jobs j"
                                " ON j.id = d.job WHERE j.queue = $1", queue);
    int64_t dups = scalar(c, "SELECT count(*) FROM (SELECT d.job FROM pg_queue_demo_done d"
                             " JOIN cio_jobs j ON j.id = d.job WHERE j.queue = $1"
                             " GROUP BY d.job HAVING count(*) > 1) x", queue);
    int64_t missing = scalar(c, "SELECT count(*) FROM cio_jobs j WHERE j.queue = $1 AND NOT EXISTS"
                                " (SELECT 1 FROM pg_queue_demo_done d WHERE d.job = j.id)", queue);
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM pg_queue_demo_done d JOIN cio_jobs j ON j.id = d.job"
             " WHERE j.queue = $1 AND d.worker = %ld", killed);
    int64_t killed_done = scalar(c, sql, queue);
    printf("jobs:               %" PRId64 "\n", jobs);
    printf("completed:          %" PRId64 "\n", done);
    printf("executions:         %" PRId64 " (%" PRId64 " jobs ran at least once)\n", execs, executed);
    printf("re-executed:        %" PRId64 " (%" PRId64 " of them were running in the killed worker"
           " %ld when it died: their leases expired and other workers ran them again)\n",
           again, by_killed, killed);
    printf("completion records: %" PRId64 " (%" PRId64 " by the killed worker before it died)\n",
           records, killed_done);
    printf("duplicates:         %" PRId64 "\n", dups);
    printf("missing:            %" PRId64 "\n", missing);
    bool ok = jobs == JOBS && done == JOBS && executed == JOBS && records == JOBS && dups == 0 &&
              missing == 0;
    printf("%s\n", ok ? "OK: every job completed, none recorded twice"
                      : "FAILED: a job is missing or was recorded twice");
    return ok ? 0 : 1;
}

static int producer_main(void *arg, void **result)
{
    (void)arg;
    (void)result;
    double t0 = now();
    cio_pg_t *c;
    if (cio_pg_connect(&c, dsn, 10) < 0) {
        fprintf(stderr, "pg_queue: cannot connect: %s\n", cio_pg_connect_error());
        exit(1);
    }
    CHECK(cio_pgq_install(c));
    CHECK(cio_pg_exec(c, "SET client_min_messages = warning;"
                         "CREATE TABLE IF NOT EXISTS pg_queue_demo_exec (job bigint NOT NULL, worker int NOT NULL);"
                         "CREATE TABLE IF NOT EXISTS pg_queue_demo_done (job bigint NOT NULL, worker int NOT NULL)"));
    char queue[64];
    snprintf(queue, sizeof queue, "demo-%ld-%ld", (long)getpid(), (long)time(NULL));
    CHECK(cio_pg_listen(c, "cio_jobs_done"));
    CHECK(enqueue_all(c, queue));
    printf("enqueued %d jobs on queue %s in %.2f s\n", JOBS, queue, now() - t0);

    cio_process_t *w[WORKERS];
    for (int i = 0; i < WORKERS; i++)
        w[i] = start_worker(queue);
    printf("started %d worker processes (%d handlers each, lease %.0f s)\n", WORKERS, CONCURRENCY,
           LEASE);

    int64_t done = await_done(c, queue, JOBS / 2);
    long victim = cio_process_pid(w[0]);
    CHECK(cio_process_kill(w[0]));
    int code;
    CHECK(cio_process_wait(w[0], &code));
    int64_t held = scalar(c, "SELECT count(*) FROM cio_jobs WHERE queue = $1 AND state = 1", queue);
    printf("%" PRId64 " jobs done: killed worker %ld with SIGKILL (status %d) while jobs were"
           " running (%" PRId64 " jobs running in all at that moment)\n",
           done, victim, code, held);
    cio_process_free(w[0]);

    await_done(c, queue, JOBS);
    printf("all %d jobs finished in %.2f s\n", JOBS, now() - t0);
    /* The others stop gracefully on SIGTERM: any other end is a failure. */
    bool workers_ok = true;
    for (int i = 1; i < WORKERS; i++) {
        CHECK(cio_process_terminate(w[i]));
        CHECK(cio_process_wait(w[i], &code));
        if (code != 0) {
            fprintf(stderr, "worker %d ended with status %d\n", cio_process_pid(w[i]), code);
            workers_ok = false;
        }
        cio_process_free(w[i]);
    }
    int status = prove(c, queue, victim);
    if (!workers_ok)
        status = 1;
    cio_pg_close(c);
    return status;
}

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "--worker") == 0) {
        dsn = argv[2];
        int rc = cio_run(worker_main, argv[3]);
        return rc == 0 ? 0 : 1;
    }
    dsn = argc > 1 ? argv[1] : getenv("CIO_PG_DSN") ? getenv("CIO_PG_DSN") : "";
    int rc = cio_run(producer_main, NULL);
    if (rc < 0) {
        fprintf(stderr, "pg_queue: %s\n", cio_strerror(rc));
        return 1;
    }
    return rc;
}
