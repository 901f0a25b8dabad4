/*
 * cio-pg's task queue (include/cio-pg.h, "Distributed task queue") against a
 * real server (tests/cio_pg_test.h): the schema installed twice and at once,
 * round trips with results awaited by the producer, transactional enqueue,
 * priorities and delays, idempotency keys, batches, 8 worker processes
 * racing for 10,000 jobs, a worker SIGKILLed mid-job, retries into the dead
 * state, a lost lease refusing its completion, lease renewal, the graceful
 * shutdown, and malformed input.
 *
 * Each test works in a schema of its own (cioq_<pid>_<n>, reached through
 * the connection's search_path and dropped at the end), so that the two
 * backend runs and the tests never see each other's jobs and the install
 * test starts from an empty schema.
 *
 * The worker processes are this program run again with --worker (main at
 * the end): they run cio_pgq_work until SIGTERM.
 */
#define CIO_PG_TEST_WRAP_ALLOC /* the malloc wrappers: the "alloc" case */
#include "cio_pg_test.h"
#include "cio_test.h"

#include <cio-pg.h>

#include <inttypes.h>

#define QTIMEOUT 120

/* ------------------------------------------------------------------------ */
/* Environment: a schema, a connection, a pool                              */
/* ------------------------------------------------------------------------ */

typedef struct {
    char schema[64];
    char dsn[2048];
    char queue[64];
    cio_pg_t *c;
    cio_pg_pool_t *pool;
} env_t;

/* The test DSN with the schema as search_path, and as application_name (so
 * that the test's backends can be told apart in pg_stat_activity). */
static void dsn_with_schema(char *buf, size_t cap, const char *schema)
{
    const char *dsn = cio_pg_test_dsn();
    if (strstr(dsn, "://"))
        snprintf(buf, cap, "%s%soptions=-csearch_path%%3D%s%%20-cclient_min_messages%%3Dwarning&application_name=%s",
                 dsn, strchr(dsn, '?') ? "&" : "?", schema, schema);
    else
        snprintf(buf, cap, "%s options='-csearch_path=%s -cclient_min_messages=warning' application_name=%s", dsn,
                 schema, schema);
}

static void exec_ok(cio_pg_t *c, const char *sql)
{
    int rc = cio_pg_exec(c, sql);
    if (rc != 0)
        fprintf(stderr, "%s: %s\n", sql, cio_pg_error_message(c));
    ck_assert_int_eq(rc, 0);
}

/* A scalar query's integer value. */
static int64_t scalar(cio_pg_t *c, const char *sql)
{
    cio_pg_result_t *r;
    int64_t n = cio_pg_query(c, &r, sql, 0, NULL);
    if (n != 1)
        fprintf(stderr, "%s: %s\n", sql, cio_pg_error_message(c));
    ck_assert_int_eq(n, 1);
    const char *v = cio_pg_value(r, 0, 0);
    int64_t x = v ? strtoll(v, NULL, 10) : -1;
    cio_pg_result_free(r);
    return x;
}

/* Creates the schema (installed unless install is false). */
static void env_open(env_t *e, bool install)
{
    static int seq;
    memset(e, 0, sizeof *e);
    snprintf(e->schema, sizeof e->schema, "cioq_%ld_%d", (long)getpid(), ++seq);
    snprintf(e->queue, sizeof e->queue, "q%ld", (long)getpid());
    cio_pg_t *base;
    ck_assert_int_eq(cio_pg_connect(&base, cio_pg_test_dsn(), 10), 0);
    char sql[256];
    snprintf(sql, sizeof sql,
             "SET client_min_messages = warning; DROP SCHEMA IF EXISTS %s CASCADE; CREATE SCHEMA %s", e->schema,
             e->schema);
    exec_ok(base, sql);
    cio_pg_close(base);
    dsn_with_schema(e->dsn, sizeof e->dsn, e->schema);
    ck_assert_int_eq(cio_pg_connect(&e->c, e->dsn, 10), 0);
    if (install)
        ck_assert_int_eq(cio_pgq_install(e->c), 0);
    cio_pg_pool_opts_t po = {.max_size = 16};
    ck_assert_int_eq(cio_pg_pool_new(&e->pool, e->dsn, &po), 0);
}

static void env_close(env_t *e)
{
    ck_assert_int_eq(cio_pg_pool_free(e->pool), 0);
    cio_pg_close(e->c);
    cio_pg_t *base;
    ck_assert_int_eq(cio_pg_connect(&base, cio_pg_test_dsn(), 10), 0);
    char sql[192];
    snprintf(sql, sizeof sql, "SET client_min_messages = warning; DROP SCHEMA %s CASCADE", e->schema);
    exec_ok(base, sql);
    cio_pg_close(base);
}

/* A test's main task: its body runs with e in a schema of its own
 * (installed unless `install` is false), dropped after it. */
#define QUEUE_MAIN(name, install)                                                               \
    static void name##_body(env_t *e);                                                          \
    static int name##_main(void *arg, void **result)                                            \
    {                                                                                           \
        (void)arg;                                                                              \
        (void)result;                                                                           \
        env_t e;                                                                                \
        env_open(&e, install);                                                                  \
        name##_body(&e);                                                                        \
        env_close(&e);                                                                          \
        return 0;                                                                               \
    }                                                                                           \
    static void name##_body(env_t *e)

/* A test whose body is the block that follows. */
#define QUEUE_TEST(name, install)                                                               \
    static void name##_body(env_t *e);                                                          \
    QUEUE_MAIN(name, install);                                                                  \
    START_TEST(name) { RUN_MAIN(name##_main, NULL); }                                           \
    END_TEST                                                                                    \
    static void name##_body(env_t *e)

/* An in-process worker, as a task. */
typedef struct {
    cio_pg_pool_t *pool;
    cio_pgq_worker_opts_t o;
    cio_pgq_stats_t stats;
    cio_pgq_handler_fn fn;
    void *arg;
} wk_t;

static int wk_task(void *arg, void **result)
{
    (void)result;
    wk_t *w = arg;
    w->o.stats = &w->stats;
    return cio_pgq_work(w->pool, &w->o, w->fn, w->arg);
}

static void wk_init(wk_t *w, env_t *e, cio_pgq_handler_fn fn, void *arg)
{
    memset(w, 0, sizeof *w);
    w->pool = e->pool;
    w->o.queue = e->queue;
    w->fn = fn;
    w->arg = arg;
}

/* Stops a worker task the way a program does: cancels it. */
static void wk_stop(cio_task_t *t)
{
    cio_task_cancel(t);
    ck_assert_int_eq(finish(t), -ECANCELED);
}

static int64_t enqueue(env_t *e, const char *payload, const cio_pgq_enqueue_opts_t *o)
{
    int64_t id = -1;
    int rc = cio_pgq_enqueue(e->c, &id, e->queue, payload, payload ? strlen(payload) : 0, o);
    if (rc < 0)
        fprintf(stderr, "enqueue: %s: %s\n", cio_err_name(rc), cio_pg_error_message(e->c));
    ck_assert_int_eq(rc, 0);
    ck_assert_int_gt(id, 0);
    return id;
}

/* Waits (on NOTIFY, no polling) until `n` jobs of the queue are done or
 * dead. */
static void await_finished(env_t *e, int64_t n, double timeout)
{
    cio_pg_t *l;
    ck_assert_int_eq(cio_pg_connect(&l, e->dsn, 10), 0);
    ck_assert_int_eq(cio_pg_listen(l, "cio_jobs_done"), 0);
    double end = mono_now() + timeout;
    for (;;) {
        int64_t done = cio_pgq_count(l, e->queue, CIO_PGQ_DONE) + cio_pgq_count(l, e->queue, CIO_PGQ_DEAD);
        if (done >= n)
            break;
        ck_assert_double_lt(mono_now(), end);
        cio_pg_notify_t *note;
        int rc = cio_pg_wait_notify(l, &note, 5);
        ck_assert(rc == 0 || rc == -ETIMEDOUT);
        if (rc == 0)
            cio_pg_notify_free(note);
        while (cio_pg_wait_notify(l, &note, 0) == 0)
            cio_pg_notify_free(note);
    }
    cio_pg_close(l);
}

/* Awaits job id's outcome and checks its state (and its attempts, unless
 * attempts is -1); the outcome is left in *o (NULL: cleared). */
static void expect_wait(env_t *e, int64_t id, int state, int attempts, cio_pgq_outcome_t *o)
{
    cio_pgq_outcome_t own;
    cio_pgq_outcome_t *out = o ? o : &own;
    ck_assert_int_eq(cio_pgq_wait(e->pool, id, 30, out), 0);
    ck_assert_int_eq(out->state, state);
    if (attempts >= 0)
        ck_assert_int_eq(out->attempts, attempts);
    if (!o)
        cio_pgq_outcome_clear(out);
}

/* Reads job id's outcome (without waiting) and checks it as expect_wait. */
static void expect_status(env_t *e, int64_t id, int state, int attempts, cio_pgq_outcome_t *o)
{
    cio_pgq_outcome_t own;
    cio_pgq_outcome_t *out = o ? o : &own;
    ck_assert_int_eq(cio_pgq_status(e->c, id, out), 0);
    ck_assert_int_eq(out->state, state);
    if (attempts >= 0)
        ck_assert_int_eq(out->attempts, attempts);
    if (!o)
        cio_pgq_outcome_clear(out);
}

/* Starts an in-process worker on e's queue with `concurrency` handlers. */
static cio_task_t *wk_start(wk_t *w, env_t *e, cio_pgq_handler_fn fn, void *arg,
                            unsigned concurrency)
{
    wk_init(w, e, fn, arg);
    w->o.concurrency = concurrency;
    return spawn(wk_task, w);
}

/* ------------------------------------------------------------------------ */
/* Schema                                                                    */
/* ------------------------------------------------------------------------ */

typedef struct {
    const char *dsn;
    int rc;
} install_arg_t;

static int install_task(void *arg, void **result)
{
    (void)result;
    install_arg_t *a = arg;
    cio_pg_t *c;
    a->rc = cio_pg_connect(&c, a->dsn, 10);
    if (a->rc == 0)
        a->rc = cio_pgq_install(c);
    cio_pg_close(c);
    return 0;
}

QUEUE_TEST(install, false)
{
    /* Eight connections install into the empty schema at once. */
    install_arg_t a[8];
    cio_task_t *t[8];
    for (int i = 0; i < 8; i++) {
        a[i] = (install_arg_t){e->dsn, 1};
        t[i] = spawn(install_task, &a[i]);
    }
    for (int i = 0; i < 8; i++) {
        ck_assert_int_eq(finish(t[i]), 0);
        ck_assert_int_eq(a[i].rc, 0);
    }
    /* Then twice more, in sequence: nothing changes. */
    ck_assert_int_eq(cio_pgq_install(e->c), 0);
    ck_assert_int_eq(cio_pgq_install(e->c), 0);
    ck_assert_int_eq(scalar(e->c, "SELECT count(*) FROM cio_jobs_schema"), 1);
    ck_assert_int_eq(scalar(e->c, "SELECT version FROM cio_jobs_schema"), 1);
    ck_assert_int_eq(scalar(e->c, "SELECT count(*) FROM cio_jobs"), 0);
    /* Inside a transaction it refuses (the install is a transaction). */
    exec_ok(e->c, "BEGIN");
    ck_assert_int_eq(cio_pgq_install(e->c), -EBUSY);
    exec_ok(e->c, "ROLLBACK");
    /* A schema newer than this library is refused, and nothing changes. */
    exec_ok(e->c, "UPDATE cio_jobs_schema SET version = 99");
    ck_assert_int_eq(cio_pgq_install(e->c), -EPROTO);
    ck_assert_int_eq(cio_pg_status(e->c), CIO_PG_IDLE);
    ck_assert_int_eq(scalar(e->c, "SELECT version FROM cio_jobs_schema"), 99);
    exec_ok(e->c, "UPDATE cio_jobs_schema SET version = 1");
    ck_assert_int_eq(cio_pgq_install(NULL), -EINVAL);
}

/* ------------------------------------------------------------------------ */
/* Round trip                                                                */
/* ------------------------------------------------------------------------ */

/* Stores the payload reversed as the result. */
static int reverse_handler(cio_pgq_job_t *j, void *arg)
{
    (void)arg;
    size_t n = cio_pgq_job_length(j);
    const char *p = cio_pgq_job_payload(j);
    ck_assert_int_eq(p[n], '\0');
    char *r = malloc(n + 1);
    for (size_t i = 0; i < n; i++)
        r[i] = p[n - 1 - i];
    int rc = cio_pgq_job_set_result(j, r, n);
    free(r);
    return rc;
}

QUEUE_TEST(roundtrip, true)
{
    /* Binary payload: NUL bytes travel. */
    static const char payload[] = {'a', 0, 'b', (char)0xff, 'c'};
    int64_t id;
    ck_assert_int_eq(cio_pgq_enqueue(e->c, &id, e->queue, payload, sizeof payload, NULL), 0);
    ck_assert_int_eq(cio_pgq_count(e->c, e->queue, CIO_PGQ_QUEUED), 1);
    cio_pgq_outcome_t o;
    expect_status(e, id, CIO_PGQ_QUEUED, 0, &o);
    ck_assert_ptr_null(o.result);
    cio_pgq_outcome_clear(&o);

    wk_t w;
    wk_init(&w, e, reverse_handler, NULL);
    w.o.concurrency = 2;
    cio_task_t *t = spawn(wk_task, &w);
    expect_wait(e, id, CIO_PGQ_DONE, 1, &o);
    ck_assert_uint_eq(o.result_len, sizeof payload);
    static const char reversed[] = {'c', (char)0xff, 'b', 0, 'a'};
    ck_assert_mem_eq(o.result, reversed, sizeof reversed);
    ck_assert_ptr_null(o.error);
    cio_pgq_outcome_clear(&o);

    /* A job enqueued while the worker idles wakes it (NOTIFY), and the
     * producer's wait sees the completion. */
    double t0 = mono_now();
    int64_t id2 = enqueue(e, "xyz", NULL);
    ck_assert_int_eq(cio_pgq_wait(e->pool, id2, 30, &o), 0);
    ck_assert_double_lt(mono_now() - t0, HANG_BOUND_S);
    ck_assert_int_eq(o.state, CIO_PGQ_DONE);
    ck_assert_mem_eq(o.result, "zyx", 3);
    cio_pgq_outcome_clear(&o);
    wk_stop(t);
    ck_assert_uint_eq(w.stats.claimed, 2);
    ck_assert_uint_eq(w.stats.completed, 2);
    ck_assert_uint_eq(w.stats.stale, 0);
    ck_assert_int_eq(cio_pgq_count(e->c, e->queue, CIO_PGQ_DONE), 2);
    ck_assert_int_eq(cio_pgq_count(e->c, e->queue, -1), 2);
    /* The pool got its connections back unlistened. */
    ck_assert_uint_eq(cio_pg_pool_idle(e->pool), cio_pg_pool_size(e->pool));
}

/* A job enqueued in a transaction exists only if that commits. */
QUEUE_TEST(transactional, true)
{
    ck_assert_int_eq(cio_pg_begin(e->c), 0);
    int64_t id = enqueue(e, "rolled back", NULL);
    ck_assert_int_eq(cio_pg_rollback(e->c), 0);
    cio_pgq_outcome_t o;
    ck_assert_int_eq(cio_pgq_status(e->c, id, &o), -ENOENT);
    ck_assert_int_eq(o.state, 0);
    ck_assert_ptr_null(o.result);

    ck_assert_int_eq(cio_pg_begin(e->c), 0);
    id = enqueue(e, "committed", NULL);
    ck_assert_int_eq(cio_pg_commit(e->c), 0);
    expect_status(e, id, CIO_PGQ_QUEUED, -1, NULL);
}

/* ------------------------------------------------------------------------ */
/* Priorities, delays, idempotency, batches                                  */
/* ------------------------------------------------------------------------ */

typedef struct {
    char order[16][16];
    double when[16];
    int n;
} order_t;

static int order_handler(cio_pgq_job_t *j, void *arg)
{
    order_t *o = arg;
    ck_assert_int_lt(o->n, 16);
    snprintf(o->order[o->n], sizeof o->order[0], "%s", (const char *)cio_pgq_job_payload(j));
    o->when[o->n++] = mono_now();
    return 0;
}

QUEUE_TEST(priorities, true)
{
    double t0 = mono_now();
    cio_pgq_enqueue_opts_t later = {.delay = 1.0, .priority = 100};
    int64_t last = enqueue(e, "delayed", &later);
    enqueue(e, "low1", NULL);
    cio_pgq_enqueue_opts_t high = {.priority = 10};
    enqueue(e, "high", &high);
    enqueue(e, "low2", NULL);
    cio_pgq_enqueue_opts_t neg = {.priority = -5};
    enqueue(e, "negative", &neg);
    order_t ord = {0};
    wk_t w;
    wk_init(&w, e, order_handler, &ord);
    w.o.concurrency = 1;
    cio_task_t *t = spawn(wk_task, &w);
    expect_wait(e, last, CIO_PGQ_DONE, -1, NULL);
    wk_stop(t);
    ck_assert_int_eq(ord.n, 5);
    ck_assert_str_eq(ord.order[0], "high");
    ck_assert_str_eq(ord.order[1], "low1");
    ck_assert_str_eq(ord.order[2], "low2");
    ck_assert_str_eq(ord.order[3], "negative");
    ck_assert_str_eq(ord.order[4], "delayed");
    /* The delayed job ran no earlier than its delay (the server's clock
     * and ours differ by a little: a 50 ms allowance). */
    ck_assert_double_ge(ord.when[4] - t0, 0.95);
    ck_assert_double_lt(ord.when[4] - t0, HANG_BOUND_S);
    /* The idle worker woke for the delay's due time, not a poll: */
    ck_assert_double_lt(ord.when[3] - t0, HANG_BOUND_S);

    /* An absolute run-at time in the past runs at once. */
    cio_pgq_enqueue_opts_t past = {.run_at = 1000.0};
    int64_t id = enqueue(e, "past", &past);
    t = spawn(wk_task, &w);
    expect_wait(e, id, CIO_PGQ_DONE, -1, NULL);
    wk_stop(t);
}

QUEUE_TEST(idempotent, true)
{
    cio_pgq_enqueue_opts_t k = {.idem_key = "order-42"};
    int64_t a = 0, b = 0, c = 0;
    ck_assert_int_eq(cio_pgq_enqueue(e->c, &a, e->queue, "one", 3, &k), 0);
    ck_assert_int_eq(cio_pgq_enqueue(e->c, &b, e->queue, "two", 3, &k), 1);
    ck_assert_int_eq(a, b);
    ck_assert_int_eq(cio_pgq_count(e->c, e->queue, -1), 1);
    /* The first payload stays. */
    ck_assert_int_eq(scalar(e->c, "SELECT count(*) FROM cio_jobs WHERE payload = 'one'"), 1);
    /* The same key on another queue is another job. */
    ck_assert_int_eq(cio_pgq_enqueue(e->c, &c, "other", "three", 5, &k), 0);
    ck_assert_int_ne(c, a);
    /* Also after the job has run. */
    wk_t w;
    wk_init(&w, e, reverse_handler, NULL);
    cio_task_t *t = spawn(wk_task, &w);
    cio_pgq_outcome_t o;
    ck_assert_int_eq(cio_pgq_wait(e->pool, a, 30, &o), 0);
    cio_pgq_outcome_clear(&o);
    wk_stop(t);
    ck_assert_int_eq(cio_pgq_enqueue(e->c, &b, e->queue, "four", 4, &k), 1);
    ck_assert_int_eq(b, a);
    ck_assert_uint_eq(w.stats.claimed, 1);
    /* A batch takes no key. */
    const void *p[1] = {"x"};
    size_t l[1] = {1};
    ck_assert_int_eq(cio_pgq_enqueue_batch(e->c, NULL, e->queue, 1, p, l, &k), -EINVAL);
}

QUEUE_TEST(batch, true)
{
    const void *p[4] = {"alpha", NULL, "\0\1\2", "delta"};
    size_t l[4] = {5, 0, 3, 5};
    int64_t ids[4];
    ck_assert_int_eq(cio_pgq_enqueue_batch(e->c, ids, e->queue, 4, p, l, NULL), 4);
    for (int i = 1; i < 4; i++)
        ck_assert_int_gt(ids[i], ids[i - 1]);
    for (int i = 0; i < 4; i++) {
        char sql[160];
        snprintf(sql, sizeof sql, "SELECT length(payload) FROM cio_jobs WHERE id = %" PRId64, ids[i]);
        ck_assert_int_eq(scalar(e->c, sql), (int64_t)l[i]);
    }
    ck_assert_int_eq(scalar(e->c, "SELECT count(*) FROM cio_jobs WHERE payload = '\\x000102'::bytea"), 1);
    wk_t w;
    wk_init(&w, e, reverse_handler, NULL);
    w.o.concurrency = 4;
    cio_task_t *t = spawn(wk_task, &w);
    for (int i = 0; i < 4; i++) {
        cio_pgq_outcome_t o;
        ck_assert_int_eq(cio_pgq_wait(e->pool, ids[i], 30, &o), 0);
        ck_assert_int_eq(o.state, CIO_PGQ_DONE);
        ck_assert_uint_eq(o.result_len, l[i]);
        cio_pgq_outcome_clear(&o);
    }
    wk_stop(t);
    ck_assert_int_eq(cio_pgq_enqueue_batch(e->c, ids, e->queue, 0, NULL, NULL, NULL), 0);
    ck_assert_int_eq(cio_pgq_enqueue_batch(e->c, ids, e->queue, 1, NULL, l, NULL), -EINVAL);
    const void *bad[1] = {NULL};
    ck_assert_int_eq(cio_pgq_enqueue_batch(e->c, ids, e->queue, 1, bad, l, NULL), -EINVAL);
}

/* ------------------------------------------------------------------------ */
/* Failures, leases, shutdown                                                */
/* ------------------------------------------------------------------------ */

static int failing_handler(cio_pgq_job_t *j, void *arg)
{
    (void)arg;
    char msg[64];
    snprintf(msg, sizeof msg, "boom %d/%d", cio_pgq_job_attempt(j), cio_pgq_job_max_attempts(j));
    ck_assert_int_eq(cio_pgq_job_set_error(j, msg), 0);
    return -EIO;
}

QUEUE_TEST(dead, true)
{
    cio_pgq_enqueue_opts_t eo = {.max_attempts = 3, .backoff = 0.05};
    int64_t id = enqueue(e, "doomed", &eo);
    wk_t w;
    wk_init(&w, e, failing_handler, NULL);
    cio_task_t *t = spawn(wk_task, &w);
    cio_pgq_outcome_t o;
    expect_wait(e, id, CIO_PGQ_DEAD, 3, &o);
    ck_assert_str_eq(o.error, "boom 3/3");
    cio_pgq_outcome_clear(&o);
    wk_stop(t);
    ck_assert_uint_eq(w.stats.failed, 3);
    ck_assert_uint_eq(w.stats.dead, 1);
    ck_assert_uint_eq(w.stats.completed, 0);
    ck_assert_int_eq(cio_pgq_count(e->c, e->queue, CIO_PGQ_DEAD), 1);
    /* The backoff was respected: 0.05 + 0.1 s at least between the first
     * and the last attempt. */
    ck_assert_int_eq(scalar(e->c, "SELECT (finished_at - created_at >= interval '0.15 s')::int"
                                 " FROM cio_jobs WHERE payload = 'doomed'"), 1);
}

static int code_handler(cio_pgq_job_t *j, void *arg)
{
    (void)j;
    (void)arg;
    return -EIO;
}

QUEUE_TEST(dead_code, true)
{
    int64_t id = enqueue(e, "plain", &(cio_pgq_enqueue_opts_t){.max_attempts = 1});
    wk_t w;
    wk_init(&w, e, code_handler, NULL);
    cio_task_t *t = spawn(wk_task, &w);
    cio_pgq_outcome_t o;
    expect_wait(e, id, CIO_PGQ_DEAD, 1, &o);
    ck_assert_ptr_nonnull(strstr(o.error, "EIO"));
    cio_pgq_outcome_clear(&o);
    wk_stop(t);
}

/* The on_complete hook: logs the completion (job, process) in done_log,
 * a table without a unique constraint, inside the completion's
 * transaction. */
static int log_completion(cio_pg_t *c, cio_pgq_job_t *j, void *arg)
{
    (void)arg;
    char id[24], pid[16];
    snprintf(id, sizeof id, "%" PRId64, cio_pgq_job_id(j));
    snprintf(pid, sizeof pid, "%ld", (long)getpid());
    const char *v[2] = {id, pid};
    int64_t n = cio_pg_query(c, NULL, "INSERT INTO done_log VALUES ($1, $2)", 2, v);
    return n < 0 ? (int)n : 0;
}

/* Logs the completion, then refuses it on the first attempt: what it
 * wrote is rolled back with the completion, and the job is retried. */
static int refusing_hook(cio_pg_t *c, cio_pgq_job_t *j, void *arg)
{
    int rc = log_completion(c, j, arg);
    if (rc < 0 || cio_pgq_job_attempt(j) > 1)
        return rc;
    return -EIO;
}

QUEUE_TEST(hook_refused, true)
{
    exec_ok(e->c, "CREATE TABLE done_log (job bigint NOT NULL, worker int NOT NULL)");
    int64_t id = enqueue(e, "hooked", &(cio_pgq_enqueue_opts_t){.backoff = 0.05});
    wk_t w;
    wk_init(&w, e, reverse_handler, NULL);
    w.o.on_complete = refusing_hook;
    cio_task_t *t = spawn(wk_task, &w);
    expect_wait(e, id, CIO_PGQ_DONE, 2, NULL);
    wk_stop(t);
    ck_assert_uint_eq(w.stats.failed, 1);
    ck_assert_uint_eq(w.stats.completed, 1);
    ck_assert_int_eq(scalar(e->c, "SELECT count(*) FROM done_log"), 1);
}

/* The first run outlives its lease (renewal off); the job is claimed again
 * and completed; the first run's completion is refused. */
static int slow_first_handler(cio_pgq_job_t *j, void *arg)
{
    (void)arg;
    if (cio_pgq_job_attempt(j) == 1) {
        cio_scope_t s;
        cio_scope_enter(&s, INFINITY, CIO_SCOPE_SHIELD);
        cio_sleep(1.5);
        cio_scope_exit(&s);
        return cio_pgq_job_set_result(j, "first", 5);
    }
    return cio_pgq_job_set_result(j, "second", 6);
}

QUEUE_TEST(lost_lease, true)
{
    int64_t id = enqueue(e, "job", NULL);
    wk_t w;
    wk_init(&w, e, slow_first_handler, NULL);
    w.o.concurrency = 2;
    w.o.lease = 0.5;
    w.o.flags = CIO_PGQ_NO_RENEW;
    cio_task_t *t = spawn(wk_task, &w);
    cio_pgq_outcome_t o;
    expect_wait(e, id, CIO_PGQ_DONE, 2, &o);
    ck_assert_uint_eq(o.result_len, 6);
    ck_assert_mem_eq(o.result, "second", 6);
    cio_pgq_outcome_clear(&o);
    /* The shutdown lets the first run finish: its completion is refused. */
    wk_stop(t);
    ck_assert_uint_eq(w.stats.claimed, 2);
    ck_assert_uint_eq(w.stats.completed, 1);
    ck_assert_uint_eq(w.stats.stale, 1);
    ck_assert_int_eq(cio_pgq_status(e->c, id, &o), 0);
    ck_assert_mem_eq(o.result, "second", 6);
    cio_pgq_outcome_clear(&o);
}

/* Outlives its lease on "job", quick on anything else. */
static int slow_job_handler(cio_pgq_job_t *j, void *arg)
{
    if (strcmp(cio_pgq_job_payload(j), "job") == 0)
        return slow_first_handler(j, arg);
    return 0;
}

/* A job whose last attempt outlives its lease is dead when claimed next;
 * its waiter is told, and the late completion is refused. */
QUEUE_TEST(lease_dead, true)
{
    int64_t id = enqueue(e, "job", &(cio_pgq_enqueue_opts_t){.max_attempts = 1});
    int64_t next = enqueue(e, "next", &(cio_pgq_enqueue_opts_t){.delay = 1.0});
    wk_t w;
    wk_init(&w, e, slow_job_handler, NULL);
    w.o.concurrency = 2;
    w.o.lease = 0.5;
    w.o.flags = CIO_PGQ_NO_RENEW;
    cio_task_t *t = spawn(wk_task, &w);
    cio_pgq_outcome_t o;
    expect_wait(e, id, CIO_PGQ_DEAD, 1, &o);
    ck_assert_str_eq(o.error, "the lease of its last attempt expired");
    cio_pgq_outcome_clear(&o);
    /* The slot that found it dead went on to the next job. */
    expect_wait(e, next, CIO_PGQ_DONE, -1, NULL);
    wk_stop(t);
    ck_assert_uint_eq(w.stats.dead, 1);
    ck_assert_uint_eq(w.stats.stale, 1);
    expect_status(e, id, CIO_PGQ_DEAD, -1, &o);
    ck_assert_ptr_null(o.result);
    cio_pgq_outcome_clear(&o);
}

static int sleepy_handler(cio_pgq_job_t *j, void *arg)
{
    (void)j;
    double *secs = arg;
    return cio_sleep(*secs);
}

/* With renewal, a handler that outlives its lease keeps the job. */
QUEUE_TEST(renewal, true)
{
    int64_t id = enqueue(e, "long", NULL);
    double secs = 2.0;
    wk_t w;
    wk_init(&w, e, sleepy_handler, &secs);
    w.o.concurrency = 2;
    w.o.lease = 0.6;
    cio_task_t *t = spawn(wk_task, &w);
    expect_wait(e, id, CIO_PGQ_DONE, 1, NULL);
    wk_stop(t);
    ck_assert_uint_eq(w.stats.claimed, 1);
    ck_assert_uint_ge(w.stats.renewed, 3);
    ck_assert_uint_eq(w.stats.stale, 0);
}

typedef struct {
    int started;
    cio_event_t both;
} shut_t;

/* "quick" sleeps 0.3 s; anything else sleeps until cancelled. */
static int shutdown_handler(cio_pgq_job_t *j, void *arg)
{
    shut_t *s = arg;
    if (++s->started == 2)
        cio_event_set(&s->both);
    bool quick = strcmp(cio_pgq_job_payload(j), "quick") == 0;
    int rc = cio_sleep(quick ? 0.3 : 3600);
    return rc;
}

QUEUE_TEST(graceful, true)
{
    int64_t quick = enqueue(e, "quick", NULL);
    int64_t stuck = enqueue(e, "stuck", NULL);
    int64_t unclaimed = enqueue(e, "later", &(cio_pgq_enqueue_opts_t){.delay = 3600});
    shut_t s = {0};
    cio_event_init(&s.both);
    wk_t w;
    wk_init(&w, e, shutdown_handler, &s);
    w.o.concurrency = 3;
    w.o.shutdown_grace = 1.0;
    cio_task_t *t = spawn(wk_task, &w);
    ck_assert_int_eq(cio_event_wait(&s.both), 0);
    double t0 = mono_now();
    wk_stop(t);
    double took = mono_now() - t0;
    /* The grace was given, and not much more. */
    ck_assert_double_ge(took, 0.9);
    ck_assert_double_lt(took, HANG_BOUND_S);
    ck_assert_uint_eq(w.stats.completed, 1);
    ck_assert_uint_eq(w.stats.released, 1);
    expect_status(e, quick, CIO_PGQ_DONE, -1, NULL);
    /* The stuck job is queued again at once, its attempt not counted
     * against its limit (raised by one: the attempt number is a fencing
     * token, never given out twice). */
    expect_status(e, stuck, CIO_PGQ_QUEUED, 1, NULL);
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT (visible_at <= now() AND max_attempts = 6)::int FROM cio_jobs WHERE id = %" PRId64,
             stuck);
    ck_assert_int_eq(scalar(e->c, sql), 1);
    expect_status(e, unclaimed, CIO_PGQ_QUEUED, -1, NULL);
    /* An idle worker stops at once, whatever its grace. */
    wk_t idle;
    wk_init(&idle, e, reverse_handler, NULL);
    idle.o.queue = "nothing-here";
    idle.o.shutdown_grace = 30;
    t = spawn(wk_task, &idle);
    ck_assert_int_eq(cio_sleep(0.2), 0);
    t0 = mono_now();
    wk_stop(t);
    ck_assert_double_lt(mono_now() - t0, HANG_BOUND_S);
}

/* Remembers each run's attempt number (the fencing token); the first run
 * hangs until cancelled, the later ones succeed. */
typedef struct {
    int tokens[8];
    int n;
    cio_event_t first;
} token_t;

static int token_handler(cio_pgq_job_t *j, void *arg)
{
    token_t *t = arg;
    ck_assert_int_lt(t->n, 8);
    t->tokens[t->n++] = cio_pgq_job_attempt(j);
    if (t->n > 1)
        return 0;
    cio_event_set(&t->first);
    return cio_sleep(3600);
}

/* A job released at shutdown is claimed again under a new token: a token
 * given out twice would let the releasing worker's late writes pass as the
 * new claim's. The released attempt still does not count against the
 * limit. */
QUEUE_TEST(release_token, true)
{
    int64_t id = enqueue(e, "released", &(cio_pgq_enqueue_opts_t){.max_attempts = 1});
    token_t tk = {0};
    cio_event_init(&tk.first);
    wk_t w;
    wk_init(&w, e, token_handler, &tk);
    w.o.shutdown_grace = 0.1;
    cio_task_t *t = spawn(wk_task, &w);
    ck_assert_int_eq(cio_event_wait(&tk.first), 0);
    wk_stop(t);
    ck_assert_uint_eq(w.stats.released, 1);
    expect_status(e, id, CIO_PGQ_QUEUED, -1, NULL);
    t = wk_start(&w, e, token_handler, &tk, 1);
    expect_wait(e, id, CIO_PGQ_DONE, 2, NULL);
    wk_stop(t);
    ck_assert_int_eq(tk.n, 2);
    ck_assert_int_eq(tk.tokens[0], 1);
    ck_assert_int_eq(tk.tokens[1], 2);
}

/* Two producers enqueue the same key at once, each in its own transaction:
 * one job, and both get its id. */
typedef struct {
    const char *dsn;
    const char *queue;
    cio_event_t *go;
    int64_t id;
    int rc;
} producer_t;

static int producer_task(void *arg, void **result)
{
    (void)result;
    producer_t *p = arg;
    cio_pg_t *c;
    ck_assert_int_eq(cio_pg_connect(&c, p->dsn, 10), 0);
    ck_assert_int_eq(cio_pg_begin(c), 0);
    ck_assert_int_eq(cio_event_wait(p->go), 0);
    cio_pgq_enqueue_opts_t k = {.idem_key = "same"};
    p->rc = cio_pgq_enqueue(c, &p->id, p->queue, "x", 1, &k);
    /* The first to insert holds the key until it commits; give the other
     * time to block on it. */
    if (p->rc == 0)
        ck_assert_int_eq(cio_sleep(0.2), 0);
    ck_assert_int_eq(cio_pg_commit(c), 0);
    cio_pg_close(c);
    return 0;
}

QUEUE_TEST(idem_race, true)
{
    cio_event_t go;
    cio_event_init(&go);
    producer_t p[2];
    cio_task_t *t[2];
    for (int i = 0; i < 2; i++) {
        p[i] = (producer_t){e->dsn, e->queue, &go, 0, -1};
        t[i] = spawn(producer_task, &p[i]);
    }
    ck_assert_int_eq(cio_sleep(0.2), 0); /* both in their transactions */
    cio_event_set(&go);
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(finish(t[i]), 0);
    ck_assert_int_eq(p[0].rc + p[1].rc, 1); /* one new (0), one existing (1) */
    ck_assert_int_gt(p[0].id, 0);
    ck_assert_int_eq(p[0].id, p[1].id);
    ck_assert_int_eq(cio_pgq_count(e->c, e->queue, -1), 1);
}

/* The last time any of the test's other backends (the worker's pool and
 * listener) ran a statement. */
static void last_activity(env_t *e, char *buf, size_t cap)
{
    const char *v[1] = {e->schema};
    cio_pg_result_t *r;
    int64_t n = cio_pg_query(e->c, &r,
                             "SELECT coalesce(max(state_change)::text, '') FROM pg_stat_activity"
                             " WHERE application_name = $1 AND pid <> pg_backend_pid()",
                             1, v);
    ck_assert_int_eq(n, 1);
    snprintf(buf, cap, "%s", cio_pg_value(r, 0, 0));
    cio_pg_result_free(r);
}

/* An idle worker (one job delayed by an hour) sends no statement at all
 * for 2 s: it waits on LISTEN and on the due time, it does not poll. A job
 * enqueued then is still run at once. */
QUEUE_TEST(idle_quiet, true)
{
    enqueue(e, "later", &(cio_pgq_enqueue_opts_t){.delay = 3600});
    wk_t w;
    cio_task_t *t = wk_start(&w, e, reverse_handler, NULL, 4);
    ck_assert_int_eq(cio_sleep(0.5), 0); /* the worker settles */
    char before[64], after[64];
    last_activity(e, before, sizeof before);
    ck_assert_str_ne(before, "");
    ck_assert_int_eq(cio_sleep(2.0), 0); /* the measured window */
    last_activity(e, after, sizeof after);
    ck_assert_str_eq(before, after);
    double t0 = mono_now();
    int64_t id = enqueue(e, "now", NULL);
    expect_wait(e, id, CIO_PGQ_DONE, 1, NULL);
    ck_assert_double_lt(mono_now() - t0, HANG_BOUND_S);
    wk_stop(t);
}

/* ------------------------------------------------------------------------ */
/* Worker processes                                                          */
/* ------------------------------------------------------------------------ */

/* Starts this program as a worker process: --worker DSN QUEUE MODE LEASE. */
static cio_process_t *start_worker(env_t *e, const char *mode, const char *lease, bool pipe_out)
{
    char *argv[] = {"test_pg_queue", "--worker", e->dsn, e->queue, (char *)mode, (char *)lease, NULL};
    cio_process_opts_t po = {0};
    if (pipe_out)
        po.stdout_mode = CIO_PROC_PIPE;
    cio_process_t *p;
    ck_assert_int_eq(cio_process_exec(&p, "/proc/self/exe", argv, &po), 0);
    return p;
}

static void stop_worker(cio_process_t *p)
{
    ck_assert_int_eq(cio_process_terminate(p), 0);
    int code = -1;
    ck_assert_int_eq(cio_process_wait(p, &code), 0);
    ck_assert_int_eq(code, 0);
    cio_process_free(p);
}

#define RACE_JOBS 10000
#define RACE_WORKERS 8

QUEUE_TEST(race8, true)
{
    exec_ok(e->c, "CREATE TABLE done_log (job bigint NOT NULL, worker int NOT NULL)");
    /* The jobs first, so that the workers race for a full queue. */
    static char bufs[RACE_JOBS][12];
    static const void *p[RACE_JOBS];
    static size_t l[RACE_JOBS];
    for (int i = 0; i < RACE_JOBS; i++) {
        l[i] = (size_t)snprintf(bufs[i], sizeof bufs[i], "%d", i);
        p[i] = bufs[i];
    }
    ck_assert_int_eq(cio_pgq_enqueue_batch(e->c, NULL, e->queue, RACE_JOBS, p, l, NULL), RACE_JOBS);
    cio_process_t *w[RACE_WORKERS];
    for (int i = 0; i < RACE_WORKERS; i++)
        w[i] = start_worker(e, "race", "30", false);
    await_finished(e, RACE_JOBS, 100);
    for (int i = 0; i < RACE_WORKERS; i++)
        stop_worker(w[i]);
    /* Every job done, each claimed once, completed once. */
    ck_assert_int_eq(cio_pgq_count(e->c, e->queue, CIO_PGQ_DONE), RACE_JOBS);
    ck_assert_int_eq(scalar(e->c, "SELECT count(*) FROM cio_jobs WHERE attempts <> 1"), 0);
    ck_assert_int_eq(scalar(e->c, "SELECT count(*) FROM done_log"), RACE_JOBS);
    ck_assert_int_eq(scalar(e->c, "SELECT count(DISTINCT job) FROM done_log"), RACE_JOBS);
    int64_t workers = scalar(e->c, "SELECT count(DISTINCT worker) FROM done_log");
    fprintf(stderr, "race: %d jobs over %" PRId64 " worker processes\n", RACE_JOBS, workers);
    ck_assert_int_ge(workers, 2);
}

/* A worker process SIGKILLed while a job is in its handler: the job comes
 * back after the lease, another worker completes it, once. */
static int count_handler(cio_pgq_job_t *j, void *arg)
{
    (void)j;
    int *n = arg;
    ++*n;
    return cio_pgq_job_set_result(j, "ok", 2);
}


QUEUE_TEST(killed, true)
{
    exec_ok(e->c, "CREATE TABLE done_log (job bigint NOT NULL, worker int NOT NULL)");
    int64_t id = enqueue(e, "victim", NULL);
    cio_process_t *p = start_worker(e, "hang", "1", true);
    char line[128];
    ssize_t n = cio_stream_readline(cio_process_stdout(p), line, sizeof line - 1);
    ck_assert_int_gt(n, 0);
    line[n] = '\0'; /* a line read is not NUL-terminated */
    char expect[64];
    snprintf(expect, sizeof expect, "running %" PRId64 " 1\n", id);
    ck_assert_str_eq(line, expect);
    double killed_at = mono_now();
    ck_assert_int_eq(cio_process_kill(p), 0);
    int code;
    ck_assert_int_eq(cio_process_wait(p, &code), 0);
    ck_assert_int_eq(code, -SIGKILL);
    cio_process_free(p);
    cio_pgq_outcome_t o;
    expect_status(e, id, CIO_PGQ_RUNNING, -1, NULL);

    int runs = 0;
    wk_t w;
    wk_init(&w, e, count_handler, &runs);
    w.o.on_complete = log_completion;
    cio_task_t *t = spawn(wk_task, &w);
    ck_assert_int_eq(cio_pgq_wait(e->pool, id, 30, &o), 0);
    double back_after = mono_now() - killed_at;
    ck_assert_int_eq(o.state, CIO_PGQ_DONE);
    ck_assert_int_eq(o.attempts, 2);
    ck_assert_mem_eq(o.result, "ok", 2);
    cio_pgq_outcome_clear(&o);
    wk_stop(t);
    ck_assert_int_eq(runs, 1);
    ck_assert_double_lt(back_after, HANG_BOUND_S);
    ck_assert_int_eq(scalar(e->c, "SELECT count(*) FROM done_log"), 1);
    ck_assert_uint_eq(w.stats.completed, 1);
}

/* A server restart under a running worker: it counts the errors, reconnects
 * (its listener too) and runs the jobs enqueued afterwards. */
static int restart_job(void *arg, void **result)
{
    (void)arg;
    (void)result;
    return cio_pg_test_restart();
}

QUEUE_TEST(restart, true)
{
    wk_t w;
    wk_init(&w, e, reverse_handler, NULL);
    w.o.concurrency = 2;
    cio_task_t *t = spawn(wk_task, &w);
    int64_t id = enqueue(e, "before", NULL);
    cio_pgq_outcome_t o;
    ck_assert_int_eq(cio_pgq_wait(e->pool, id, 30, &o), 0);
    cio_pgq_outcome_clear(&o);
    int rc = cio_to_thread(restart_job, NULL, NULL);
    if (rc == -ENOTSUP) {
        fprintf(stderr, "restart: not our server; skipped\n");
        wk_stop(t);
        return;
    }
    ck_assert_int_eq(rc, 0);
    /* The test's own connection was cut off too. */
    cio_pg_close(e->c);
    ck_assert_int_eq(cio_pg_connect(&e->c, e->dsn, 10), 0);
    id = enqueue(e, "after", NULL);
    ck_assert_int_eq(cio_pgq_wait(e->pool, id, 60, &o), 0);
    ck_assert_int_eq(o.state, CIO_PGQ_DONE);
    ck_assert_mem_eq(o.result, "retfa", 5);
    cio_pgq_outcome_clear(&o);
    wk_stop(t);
    ck_assert_uint_eq(w.stats.completed, 2);
}

/* ------------------------------------------------------------------------ */
/* Malformed input                                                           */
/* ------------------------------------------------------------------------ */

QUEUE_TEST(malformed, true)
{
    int64_t id = 7;
    ck_assert_int_eq(cio_pgq_enqueue(e->c, &id, NULL, "x", 1, NULL), -EINVAL);
    ck_assert_int_eq(id, 0);
    ck_assert_int_eq(cio_pgq_enqueue(NULL, &id, "q", "x", 1, NULL), -EINVAL);
    ck_assert_int_eq(cio_pgq_enqueue(e->c, &id, "", "x", 1, NULL), -EINVAL);
    char longname[CIO_PGQ_MAX_NAME + 2];
    memset(longname, 'n', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    ck_assert_int_eq(cio_pgq_enqueue(e->c, &id, longname, "x", 1, NULL), -EINVAL);
    longname[CIO_PGQ_MAX_NAME] = '\0';
    ck_assert_int_eq(cio_pgq_enqueue(e->c, &id, longname, "x", 1, NULL), 0);
    ck_assert_int_eq(cio_pgq_enqueue(e->c, &id, e->queue, NULL, 1, NULL), -EINVAL);
    ck_assert_int_eq(cio_pgq_enqueue(e->c, &id, e->queue, "x", CIO_PGQ_MAX_PAYLOAD + 1, NULL), -EINVAL);
    /* Options out of range, each alone. */
    static char longkey[CIO_PGQ_MAX_KEY + 2];
    memset(longkey, 'k', CIO_PGQ_MAX_KEY + 1);
    const cio_pgq_enqueue_opts_t bads[] = {
        {.reserved_ = {1}},  {.delay = NAN},      {.delay = -1},       {.delay = INFINITY},
        {.run_at = NAN},     {.run_at = -1},      {.delay = 1, .run_at = 1},
        {.max_attempts = -1}, {.max_attempts = 1000001}, {.backoff = INFINITY},
        {.backoff = 3601},   {.backoff = -1},     {.idem_key = ""},    {.idem_key = longkey},
    };
    for (size_t i = 0; i < sizeof bads / sizeof bads[0]; i++)
        ck_assert_int_eq(cio_pgq_enqueue(e->c, &id, e->queue, "x", 1, &bads[i]), -EINVAL);
    /* Names and keys are parameters, never SQL text. */
    static const char evil[] = "q'); DROP TABLE cio_jobs; --";
    cio_pgq_enqueue_opts_t k = {.idem_key = evil};
    ck_assert_int_eq(cio_pgq_enqueue(e->c, &id, evil, "x", 1, &k), 0);
    ck_assert_int_eq(cio_pgq_count(e->c, evil, CIO_PGQ_QUEUED), 1);
    /* A queue name that is not UTF-8 is the server's error, cleanly. */
    ck_assert_int_eq(cio_pgq_enqueue(e->c, &id, "q\xff", "x", 1, NULL), -EREMOTEIO);
    ck_assert_int_eq(cio_pg_status(e->c), CIO_PG_IDLE);
    cio_pgq_enqueue_opts_t bad;
    /* An absurd delay is the server's error, cleanly. */
    bad = (cio_pgq_enqueue_opts_t){.delay = 1e300};
    ck_assert_int_eq(cio_pgq_enqueue(e->c, &id, e->queue, "x", 1, &bad), -EREMOTEIO);
    ck_assert_int_eq(cio_pg_status(e->c), CIO_PG_IDLE);
    /* An empty payload is a payload. */
    ck_assert_int_eq(cio_pgq_enqueue(e->c, &id, e->queue, NULL, 0, NULL), 0);
    ck_assert_int_gt(id, 0);
    /* 100 MiB works. */
    size_t big = (size_t)100 << 20;
    char *buf = malloc(big);
    ck_assert_ptr_nonnull(buf);
    memset(buf, 'B', big);
    buf[big / 2] = '\0';
    int rc = cio_pgq_enqueue(e->c, &id, e->queue, buf, big, NULL);
    free(buf);
    ck_assert_int_eq(rc, 0);
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT length(payload) FROM cio_jobs WHERE id = %" PRId64, id);
    ck_assert_int_eq(scalar(e->c, sql), (int64_t)big);
    /* Outcomes and counts. */
    cio_pgq_outcome_t o;
    ck_assert_int_eq(cio_pgq_status(e->c, 0, &o), -ENOENT);
    ck_assert_int_eq(cio_pgq_status(e->c, 1, NULL), -EINVAL);
    ck_assert_int_eq(cio_pgq_status(NULL, 1, &o), -EINVAL);
    cio_pgq_outcome_clear(NULL);
    ck_assert_int_eq(cio_pgq_count(e->c, e->queue, 4), -EINVAL);
    ck_assert_int_eq(cio_pgq_count(e->c, NULL, 0), -EINVAL);
    ck_assert_int_eq(cio_pgq_wait(e->pool, id, 0.2, &o), -ETIMEDOUT);
    ck_assert_int_eq(o.state, 0);
    ck_assert_int_eq(cio_pgq_wait(e->pool, -5, 1, &o), -ENOENT);
    ck_assert_int_eq(cio_pgq_wait(e->pool, id, NAN, &o), -EINVAL);
    ck_assert_int_eq(cio_pgq_wait(NULL, id, 1, &o), -EINVAL);
    ck_assert_uint_eq(cio_pg_pool_idle(e->pool), cio_pg_pool_size(e->pool));
    /* Worker options. */
    cio_pgq_worker_opts_t wo = {.queue = e->queue};
    ck_assert_int_eq(cio_pgq_work(NULL, &wo, reverse_handler, NULL), -EINVAL);
    ck_assert_int_eq(cio_pgq_work(e->pool, NULL, reverse_handler, NULL), -EINVAL);
    ck_assert_int_eq(cio_pgq_work(e->pool, &wo, NULL, NULL), -EINVAL);
    const cio_pgq_worker_opts_t bad_wo[] = {
        {.queue = NULL},
        {.queue = ""},
        {.queue = e->queue, .lease = INFINITY},
        {.queue = e->queue, .lease = NAN},
        {.queue = e->queue, .lease = -1},
        {.queue = e->queue, .lease = 0.001},
        {.queue = e->queue, .shutdown_grace = -1},
        {.queue = e->queue, .concurrency = 5000},
        {.queue = e->queue, .flags = 2},
        {.queue = e->queue, .worker_id = longkey},
        {.queue = e->queue, .reserved_ = {e}},
    };
    for (size_t i = 0; i < sizeof bad_wo / sizeof bad_wo[0]; i++)
        ck_assert_int_eq(cio_pgq_work(e->pool, &bad_wo[i], reverse_handler, NULL), -EINVAL);
    /* Job accessors on NULL. */
    ck_assert_int_eq(cio_pgq_job_id(NULL), 0);
    ck_assert_ptr_null(cio_pgq_job_payload(NULL));
    ck_assert_int_eq(cio_pgq_job_set_result(NULL, "x", 1), -EINVAL);
    ck_assert_int_eq(cio_pgq_job_set_error(NULL, "x"), -EINVAL);
    /* A closed pool ends a worker with -ESHUTDOWN. */
    cio_pg_pool_t *closed;
    ck_assert_int_eq(cio_pg_pool_new(&closed, e->dsn, NULL), 0);
    ck_assert_int_eq(cio_pg_pool_close(closed), 0);
    wo = (cio_pgq_worker_opts_t){.queue = e->queue};
    ck_assert_int_eq(cio_pgq_work(closed, &wo, reverse_handler, NULL), -ESHUTDOWN);
    ck_assert_int_eq(cio_pg_pool_free(closed), 0);
}

/* ------------------------------------------------------------------------ */
/* Allocation failure                                                        */
/* ------------------------------------------------------------------------ */

/* The allocation rounds: failing each of cio-pg's mallocs on a path in
 * turn, until a round gets through all of them. No check assertion while
 * the failures are armed (check's bookkeeping allocates). */
#define ALLOC_ROUNDS 400

/* Enqueue (keyed, so that a failure after the server's commit is retried
 * into the same job) and batch enqueue: each round fails cleanly or
 * succeeds, and the connection stays usable. */
static void alloc_enqueue(env_t *e)
{
    cio_pgq_enqueue_opts_t k = {.idem_key = "alloc"};
    const void *p[3] = {"a", "bb", "ccc"};
    size_t l[3] = {1, 2, 3};
    bool one = true, many = true;
    for (long n = 1; one || many; n++) {
        ck_assert_int_lt(n, ALLOC_ROUNDS);
        if (one) {
            int64_t id = -1;
            cio_pg_test_alloc_arm(n);
            int rc = cio_pgq_enqueue(e->c, &id, e->queue, "x", 1, &k);
            one = cio_pg_test_alloc_disarm();
            ck_assert(one ? rc == -ENOMEM : rc == 0 || rc == 1);
            ck_assert(rc < 0 ? id == 0 : id > 0);
            ck_assert_int_eq(cio_pg_status(e->c), CIO_PG_IDLE);
        }
        if (many) {
            cio_pg_test_alloc_arm(n);
            int64_t rc = cio_pgq_enqueue_batch(e->c, NULL, "alloc-batch", 3, p, l, NULL);
            many = cio_pg_test_alloc_disarm();
            ck_assert(many ? rc == -ENOMEM : rc == 3);
            ck_assert_int_eq(cio_pg_status(e->c), CIO_PG_IDLE);
        }
    }
    ck_assert_int_eq(cio_pgq_count(e->c, e->queue, -1), 1);
}

/* No connection of the pool is left listening. */
static void pool_unlistened(cio_pg_pool_t *p)
{
    unsigned n = cio_pg_pool_idle(p);
    ck_assert_uint_eq(n, cio_pg_pool_size(p));
    cio_pg_t *c[16];
    ck_assert_uint_le(n, 16);
    for (unsigned i = 0; i < n; i++) {
        ck_assert_int_eq(cio_pg_pool_acquire(p, &c[i], 5), 0);
        ck_assert_int_eq(scalar(c[i], "SELECT count(*) FROM pg_listening_channels()"), 0);
    }
    for (unsigned i = 0; i < n; i++)
        ck_assert_int_eq(cio_pg_pool_release(p, c[i]), 0);
}

/* cio_pgq_wait: each round fails cleanly or returns the outcome (a failure
 * in its cleanup, after the outcome was read, costs the connection), and no
 * connection goes back to the pool listening. */
static void alloc_wait(env_t *e, int64_t id)
{
    for (long n = 1;; n++) {
        ck_assert_int_lt(n, ALLOC_ROUNDS);
        cio_pgq_outcome_t o;
        cio_pg_test_alloc_arm(n);
        int rc = cio_pgq_wait(e->pool, id, 10, &o);
        bool failed = cio_pg_test_alloc_disarm();
        ck_assert(rc == 0 || (failed && rc == -ENOMEM));
        ck_assert_int_eq(o.state, rc == 0 ? CIO_PGQ_DONE : 0);
        cio_pgq_outcome_clear(&o);
        pool_unlistened(e->pool);
        if (!failed)
            break;
    }
}

/* A worker round: cio-pg's malloc number n fails before the handler runs
 * (the worker's start, its listener, the claim), or after it (the
 * completion: the handler arms the failure). */
typedef struct {
    long n;
    bool after;
    bool armed;   /* after: the handler armed the failure */
    bool reached; /* before: the failure happened before the handler */
} round_t;

static int alloc_handler(cio_pgq_job_t *j, void *arg)
{
    round_t *r = arg;
    if (!r->after && !r->reached)
        r->reached = cio_pg_test_alloc_disarm();
    int rc = cio_pgq_job_set_result(j, "ok", 2);
    if (r->after && !r->armed) {
        r->armed = true; /* once: a second run (if any) is not armed */
        cio_pg_test_alloc_arm(r->n);
    }
    return rc;
}

/* Awaits the round's job (no assertion: the failure may be armed),
 * restarting the worker when it ended at its start (-ENOMEM) and retrying
 * the wait's own -ENOMEM. Returns 0 or the first unexpected code. */
static int alloc_await(env_t *e, int64_t id, wk_t *w, cio_task_t **t, cio_pgq_outcome_t *o)
{
    double end = mono_now() + 60;
    while (mono_now() < end) {
        int rc = cio_pgq_wait(e->pool, id, 1, o);
        if (rc == 0)
            return 0;
        if (rc != -ENOMEM && rc != -ETIMEDOUT)
            return rc;
        if (cio_future_done(*t)) {
            rc = cio_future_result(*t, NULL);
            cio_future_release(*t);
            *t = NULL;
            if (rc != -ENOMEM || (rc = cio_spawn(t, wk_task, w)) < 0)
                return rc;
        }
    }
    return -ETIMEDOUT;
}

/* One worker round. The job still ends done, with its result and no
 * failure recorded (a claim lost with its reply comes back after its
 * lease). Returns whether the failure was reached. */
static bool alloc_worker_round(env_t *e, long n, bool after)
{
    int64_t id = enqueue(e, "job", NULL);
    round_t r = {n, after, false, false};
    wk_t w;
    wk_init(&w, e, alloc_handler, &r);
    w.o.lease = 0.5;
    cio_task_t *t = spawn(wk_task, &w);
    if (!after)
        cio_pg_test_alloc_arm(n);
    cio_pgq_outcome_t o;
    int rc = alloc_await(e, id, &w, &t, &o);
    bool reached = cio_pg_test_alloc_disarm() || r.reached;
    ck_assert_int_eq(rc, 0);
    ck_assert_int_eq(o.state, CIO_PGQ_DONE);
    ck_assert_int_le(o.attempts, 2);
    ck_assert_ptr_null(o.error);
    ck_assert_mem_eq(o.result, "ok", 2);
    cio_pgq_outcome_clear(&o);
    wk_stop(t);
    ck_assert_uint_eq(w.stats.failed, 0);
    return reached;
}

/* Fails each malloc of a worker round in turn, before and after the
 * handler. */
static void alloc_worker(env_t *e)
{
    for (int after = 0; after < 2; after++) {
        long n = 1;
        while (alloc_worker_round(e, n, after))
            ck_assert_int_lt(++n, ALLOC_ROUNDS);
        fprintf(stderr, "alloc: %ld mallocs %s the handler\n", n - 1, after ? "after" : "before");
    }
}

/* Fails each of cio-pg's mallocs in turn on the queue's paths. */
QUEUE_MAIN(alloc, true)
{
    alloc_enqueue(e);
    int64_t id = enqueue(e, "waited", NULL);
    wk_t w;
    cio_task_t *t = wk_start(&w, e, reverse_handler, NULL, 1);
    expect_wait(e, id, CIO_PGQ_DONE, 1, NULL);
    wk_stop(t);
    alloc_wait(e, id);
    alloc_worker(e);
}

START_TEST(alloc_fail)
{
    if (!cio_pg_test_malloc_wrapped("test_pg_queue alloc"))
        return;
    /* Only cio-pg's own allocations are failed, not the core's. */
    ck_assert_int_eq(cio_pg_test_alloc_core_unwrapped(), 0);
    RUN_MAIN(alloc_main, NULL);
}
END_TEST

/* Without the schema: the server's error, cleanly. */
QUEUE_TEST(no_schema, false)
{
    int64_t id;
    ck_assert_int_eq(cio_pgq_enqueue(e->c, &id, e->queue, "x", 1, NULL), -EREMOTEIO);
    ck_assert_str_eq(cio_pg_error_sqlstate(e->c), "42P01");
    ck_assert_int_eq(cio_pgq_count(e->c, e->queue, -1), -EREMOTEIO);
}

static Suite *suite(void)
{
    Suite *s = suite_create("pg_queue");
    TCase *tc = add_tcase(s, "schema", QTIMEOUT);
    tcase_add_test(tc, install);
    tcase_add_test(tc, no_schema);
    tc = add_tcase(s, "jobs", QTIMEOUT);
    tcase_add_test(tc, roundtrip);
    tcase_add_test(tc, transactional);
    tcase_add_test(tc, priorities);
    tcase_add_test(tc, idempotent);
    tcase_add_test(tc, batch);
    tcase_add_test(tc, idem_race);
    tcase_add_test(tc, idle_quiet);
    tc = add_tcase(s, "failures", QTIMEOUT);
    tcase_add_test(tc, dead);
    tcase_add_test(tc, dead_code);
    tcase_add_test(tc, hook_refused);
    tcase_add_test(tc, lost_lease);
    tcase_add_test(tc, lease_dead);
    tcase_add_test(tc, renewal);
    tcase_add_test(tc, graceful);
    tcase_add_test(tc, release_token);
    tc = add_tcase(s, "processes", QTIMEOUT);
    tcase_add_test(tc, race8);
    tcase_add_test(tc, killed);
    tcase_add_test(tc, restart);
    tc = add_tcase(s, "malformed", QTIMEOUT);
    tcase_add_test(tc, malformed);
    tc = add_tcase(s, "alloc", QTIMEOUT);
    tcase_add_test(tc, alloc_fail);
    return s;
}

/* ------------------------------------------------------------------------ */
/* Worker process mode                                                       */
/* ------------------------------------------------------------------------ */

typedef struct {
    char **argv;
    cio_pg_pool_t *pool;
    int rc;
} worker_proc_t;

static int noop_handler(cio_pgq_job_t *j, void *arg)
{
    (void)j;
    (void)arg;
    return 0;
}

/* Tells the parent it runs the job, then hangs until killed. */
static int hang_handler(cio_pgq_job_t *j, void *arg)
{
    (void)arg;
    printf("running %" PRId64 " %d\n", cio_pgq_job_id(j), cio_pgq_job_attempt(j));
    fflush(stdout);
    return cio_sleep(3600);
}

static int child_worker(void *arg, void **result)
{
    (void)result;
    worker_proc_t *c = arg;
    cio_pgq_worker_opts_t o = {.queue = c->argv[3], .lease = atof(c->argv[5])};
    bool race = strcmp(c->argv[4], "race") == 0;
    o.concurrency = race ? 4 : 1;
    o.on_complete = race ? log_completion : NULL;
    c->rc = cio_pgq_work(c->pool, &o, race ? noop_handler : hang_handler, NULL);
    return 0;
}

static int child_main(void *arg, void **result)
{
    (void)result;
    worker_proc_t c = {.argv = arg};
    cio_pg_pool_opts_t po = {.max_size = 6};
    if (cio_pg_pool_new(&c.pool, c.argv[2], &po) < 0)
        return -EIO;
    cio_task_t *t;
    int rc = cio_spawn(&t, child_worker, &c);
    if (rc == 0) {
        rc = cio_signal_wait(SIGTERM);
        cio_task_cancel(t);
        cio_await(t, NULL);
        cio_future_release(t);
        if (rc == 0 && c.rc != -ECANCELED)
            rc = c.rc;
    }
    cio_pg_pool_free(c.pool);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc == 6 && strcmp(argv[1], "--worker") == 0) {
        int rc = cio_run(child_main, argv);
        if (rc < 0)
            fprintf(stderr, "worker %ld: %s\n", (long)getpid(), cio_err_name(rc));
        return rc < 0 ? 1 : 0;
    }
    SRunner *sr = srunner_create(suite());
    srunner_run_all(sr, CK_VERBOSE);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
