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

/* The test DSN with the schema as search_path. */
static void dsn_with_schema(char *buf, size_t cap, const char *schema)
{
    const char *dsn = cio_pg_test_dsn();
    if (strstr(dsn, "://"))
        snprintf(buf, cap, "%s%soptions=-csearch_path%%3D%s%%20-cclient_min_messages%%3Dwarning", dsn, strchr(dsn, '?') ? "&" : "?",
                 schema);
    else
        snprintf(buf, cap, "%s options='-csearch_path=%s -cclient_min_messages=warning'", dsn, schema);
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

static int main_install(void *arg, void **result)
{
    (void)arg;
    (void)result;
    env_t e;
    env_open(&e, false);
    /* Eight connections install into the empty schema at once. */
    install_arg_t a[8];
    cio_task_t *t[8];
    for (int i = 0; i < 8; i++) {
        a[i] = (install_arg_t){e.dsn, 1};
        t[i] = spawn(install_task, &a[i]);
    }
    for (int i = 0; i < 8; i++) {
        ck_assert_int_eq(finish(t[i]), 0);
        ck_assert_int_eq(a[i].rc, 0);
    }
    /* Then twice more, in sequence: nothing changes. */
    ck_assert_int_eq(cio_pgq_install(e.c), 0);
    ck_assert_int_eq(cio_pgq_install(e.c), 0);
    ck_assert_int_eq(scalar(e.c, "SELECT count(*) FROM cio_jobs_schema"), 1);
    ck_assert_int_eq(scalar(e.c, "SELECT version FROM cio_jobs_schema"), 1);
    ck_assert_int_eq(scalar(e.c, "SELECT count(*) FROM cio_jobs"), 0);
    /* Inside a transaction it refuses (the install is a transaction). */
    exec_ok(e.c, "BEGIN");
    ck_assert_int_eq(cio_pgq_install(e.c), -EBUSY);
    exec_ok(e.c, "ROLLBACK");
    /* A schema newer than this library is refused, and nothing changes. */
    exec_ok(e.c, "UPDATE cio_jobs_schema SET version = 99");
    ck_assert_int_eq(cio_pgq_install(e.c), -EPROTO);
    ck_assert_int_eq(cio_pg_status(e.c), CIO_PG_IDLE);
    ck_assert_int_eq(scalar(e.c, "SELECT version FROM cio_jobs_schema"), 99);
    exec_ok(e.c, "UPDATE cio_jobs_schema SET version = 1");
    ck_assert_int_eq(cio_pgq_install(NULL), -EINVAL);
    env_close(&e);
    return 0;
}
START_TEST(install) { RUN_MAIN(main_install, NULL); }
END_TEST

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

static int main_roundtrip(void *arg, void **result)
{
    (void)arg;
    (void)result;
    env_t e;
    env_open(&e, true);
    /* Binary payload: NUL bytes travel. */
    static const char payload[] = {'a', 0, 'b', (char)0xff, 'c'};
    int64_t id;
    ck_assert_int_eq(cio_pgq_enqueue(e.c, &id, e.queue, payload, sizeof payload, NULL), 0);
    ck_assert_int_eq(cio_pgq_count(e.c, e.queue, CIO_PGQ_QUEUED), 1);
    cio_pgq_outcome_t o;
    ck_assert_int_eq(cio_pgq_status(e.c, id, &o), 0);
    ck_assert_int_eq(o.state, CIO_PGQ_QUEUED);
    ck_assert_int_eq(o.attempts, 0);
    ck_assert_ptr_null(o.result);
    cio_pgq_outcome_clear(&o);

    wk_t w;
    wk_init(&w, &e, reverse_handler, NULL);
    w.o.concurrency = 2;
    cio_task_t *t = spawn(wk_task, &w);
    ck_assert_int_eq(cio_pgq_wait(e.pool, id, 30, &o), 0);
    ck_assert_int_eq(o.state, CIO_PGQ_DONE);
    ck_assert_int_eq(o.attempts, 1);
    ck_assert_uint_eq(o.result_len, sizeof payload);
    static const char reversed[] = {'c', (char)0xff, 'b', 0, 'a'};
    ck_assert_mem_eq(o.result, reversed, sizeof reversed);
    ck_assert_ptr_null(o.error);
    cio_pgq_outcome_clear(&o);

    /* A job enqueued while the worker idles wakes it (NOTIFY), and the
     * producer's wait sees the completion. */
    double t0 = mono_now();
    int64_t id2 = enqueue(&e, "xyz", NULL);
    ck_assert_int_eq(cio_pgq_wait(e.pool, id2, 30, &o), 0);
    ck_assert_double_lt(mono_now() - t0, HANG_BOUND_S);
    ck_assert_int_eq(o.state, CIO_PGQ_DONE);
    ck_assert_mem_eq(o.result, "zyx", 3);
    cio_pgq_outcome_clear(&o);
    wk_stop(t);
    ck_assert_uint_eq(w.stats.claimed, 2);
    ck_assert_uint_eq(w.stats.completed, 2);
    ck_assert_uint_eq(w.stats.stale, 0);
    ck_assert_int_eq(cio_pgq_count(e.c, e.queue, CIO_PGQ_DONE), 2);
    ck_assert_int_eq(cio_pgq_count(e.c, e.queue, -1), 2);
    /* The pool got its connections back unlistened. */
    ck_assert_uint_eq(cio_pg_pool_idle(e.pool), cio_pg_pool_size(e.pool));
    env_close(&e);
    return 0;
}
START_TEST(roundtrip) { RUN_MAIN(main_roundtrip, NULL); }
END_TEST

/* A job enqueued in a transaction exists only if that commits. */
static int main_transactional(void *arg, void **result)
{
    (void)arg;
    (void)result;
    env_t e;
    env_open(&e, true);
    ck_assert_int_eq(cio_pg_begin(e.c), 0);
    int64_t id = enqueue(&e, "rolled back", NULL);
    ck_assert_int_eq(cio_pg_rollback(e.c), 0);
    cio_pgq_outcome_t o;
    ck_assert_int_eq(cio_pgq_status(e.c, id, &o), -ENOENT);
    ck_assert_int_eq(o.state, 0);
    ck_assert_ptr_null(o.result);

    ck_assert_int_eq(cio_pg_begin(e.c), 0);
    id = enqueue(&e, "committed", NULL);
    ck_assert_int_eq(cio_pg_commit(e.c), 0);
    ck_assert_int_eq(cio_pgq_status(e.c, id, &o), 0);
    ck_assert_int_eq(o.state, CIO_PGQ_QUEUED);
    cio_pgq_outcome_clear(&o);
    env_close(&e);
    return 0;
}
START_TEST(transactional) { RUN_MAIN(main_transactional, NULL); }
END_TEST

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

static int main_priorities(void *arg, void **result)
{
    (void)arg;
    (void)result;
    env_t e;
    env_open(&e, true);
    double t0 = mono_now();
    cio_pgq_enqueue_opts_t later = {.delay = 1.0, .priority = 100};
    int64_t last = enqueue(&e, "delayed", &later);
    enqueue(&e, "low1", NULL);
    cio_pgq_enqueue_opts_t high = {.priority = 10};
    enqueue(&e, "high", &high);
    enqueue(&e, "low2", NULL);
    cio_pgq_enqueue_opts_t neg = {.priority = -5};
    enqueue(&e, "negative", &neg);
    order_t ord = {0};
    wk_t w;
    wk_init(&w, &e, order_handler, &ord);
    w.o.concurrency = 1;
    cio_task_t *t = spawn(wk_task, &w);
    cio_pgq_outcome_t o;
    ck_assert_int_eq(cio_pgq_wait(e.pool, last, 30, &o), 0);
    ck_assert_int_eq(o.state, CIO_PGQ_DONE);
    cio_pgq_outcome_clear(&o);
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
    int64_t id = enqueue(&e, "past", &past);
    t = spawn(wk_task, &w);
    ck_assert_int_eq(cio_pgq_wait(e.pool, id, 30, &o), 0);
    ck_assert_int_eq(o.state, CIO_PGQ_DONE);
    cio_pgq_outcome_clear(&o);
    wk_stop(t);
    env_close(&e);
    return 0;
}
START_TEST(priorities) { RUN_MAIN(main_priorities, NULL); }
END_TEST

static int main_idempotent(void *arg, void **result)
{
    (void)arg;
    (void)result;
    env_t e;
    env_open(&e, true);
    cio_pgq_enqueue_opts_t k = {.idem_key = "order-42"};
    int64_t a = 0, b = 0, c = 0;
    ck_assert_int_eq(cio_pgq_enqueue(e.c, &a, e.queue, "one", 3, &k), 0);
    ck_assert_int_eq(cio_pgq_enqueue(e.c, &b, e.queue, "two", 3, &k), 1);
    ck_assert_int_eq(a, b);
    ck_assert_int_eq(cio_pgq_count(e.c, e.queue, -1), 1);
    /* The first payload stays. */
    ck_assert_int_eq(scalar(e.c, "SELECT count(*) FROM cio_jobs WHERE payload = 'one'"), 1);
    /* The same key on another queue is another job. */
    ck_assert_int_eq(cio_pgq_enqueue(e.c, &c, "other", "three", 5, &k), 0);
    ck_assert_int_ne(c, a);
    /* Also after the job has run. */
    wk_t w;
    wk_init(&w, &e, reverse_handler, NULL);
    cio_task_t *t = spawn(wk_task, &w);
    cio_pgq_outcome_t o;
    ck_assert_int_eq(cio_pgq_wait(e.pool, a, 30, &o), 0);
    cio_pgq_outcome_clear(&o);
    wk_stop(t);
    ck_assert_int_eq(cio_pgq_enqueue(e.c, &b, e.queue, "four", 4, &k), 1);
    ck_assert_int_eq(b, a);
    ck_assert_uint_eq(w.stats.claimed, 1);
    /* A batch takes no key. */
    const void *p[1] = {"x"};
    size_t l[1] = {1};
    ck_assert_int_eq(cio_pgq_enqueue_batch(e.c, NULL, e.queue, 1, p, l, &k), -EINVAL);
    env_close(&e);
    return 0;
}
START_TEST(idempotent) { RUN_MAIN(main_idempotent, NULL); }
END_TEST

static int main_batch(void *arg, void **result)
{
    (void)arg;
    (void)result;
    env_t e;
    env_open(&e, true);
    const void *p[4] = {"alpha", NULL, "\0\1\2", "delta"};
    size_t l[4] = {5, 0, 3, 5};
    int64_t ids[4];
    ck_assert_int_eq(cio_pgq_enqueue_batch(e.c, ids, e.queue, 4, p, l, NULL), 4);
    for (int i = 1; i < 4; i++)
        ck_assert_int_gt(ids[i], ids[i - 1]);
    for (int i = 0; i < 4; i++) {
        char sql[160];
        snprintf(sql, sizeof sql, "SELECT length(payload) FROM cio_jobs WHERE id = %" PRId64, ids[i]);
        ck_assert_int_eq(scalar(e.c, sql), (int64_t)l[i]);
    }
    ck_assert_int_eq(scalar(e.c, "SELECT count(*) FROM cio_jobs WHERE payload = '\\x000102'::bytea"), 1);
    wk_t w;
    wk_init(&w, &e, reverse_handler, NULL);
    w.o.concurrency = 4;
    cio_task_t *t = spawn(wk_task, &w);
    for (int i = 0; i < 4; i++) {
        cio_pgq_outcome_t o;
        ck_assert_int_eq(cio_pgq_wait(e.pool, ids[i], 30, &o), 0);
        ck_assert_int_eq(o.state, CIO_PGQ_DONE);
        ck_assert_uint_eq(o.result_len, l[i]);
        cio_pgq_outcome_clear(&o);
    }
    wk_stop(t);
    ck_assert_int_eq(cio_pgq_enqueue_batch(e.c, ids, e.queue, 0, NULL, NULL, NULL), 0);
    ck_assert_int_eq(cio_pgq_enqueue_batch(e.c, ids, e.queue, 1, NULL, l, NULL), -EINVAL);
    const void *bad[1] = {NULL};
    ck_assert_int_eq(cio_pgq_enqueue_batch(e.c, ids, e.queue, 1, bad, l, NULL), -EINVAL);
    env_close(&e);
    return 0;
}
START_TEST(batch) { RUN_MAIN(main_batch, NULL); }
END_TEST

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

static int main_dead(void *arg, void **result)
{
    (void)arg;
    (void)result;
    env_t e;
    env_open(&e, true);
    cio_pgq_enqueue_opts_t eo = {.max_attempts = 3, .backoff = 0.05};
    int64_t id = enqueue(&e, "doomed", &eo);
    wk_t w;
    wk_init(&w, &e, failing_handler, NULL);
    cio_task_t *t = spawn(wk_task, &w);
    cio_pgq_outcome_t o;
    ck_assert_int_eq(cio_pgq_wait(e.pool, id, 30, &o), 0);
    ck_assert_int_eq(o.state, CIO_PGQ_DEAD);
    ck_assert_int_eq(o.attempts, 3);
    ck_assert_str_eq(o.error, "boom 3/3");
    cio_pgq_outcome_clear(&o);
    wk_stop(t);
    ck_assert_uint_eq(w.stats.failed, 3);
    ck_assert_uint_eq(w.stats.dead, 1);
    ck_assert_uint_eq(w.stats.completed, 0);
    ck_assert_int_eq(cio_pgq_count(e.c, e.queue, CIO_PGQ_DEAD), 1);
    /* The backoff was respected: 0.05 + 0.1 s at least between the first
     * and the last attempt. */
    ck_assert_int_eq(scalar(e.c, "SELECT (finished_at - created_at >= interval '0.15 s')::int"
                                 " FROM cio_jobs WHERE payload = 'doomed'"), 1);
    env_close(&e);
    return 0;
}
START_TEST(dead) { RUN_MAIN(main_dead, NULL); }
END_TEST

static int code_handler(cio_pgq_job_t *j, void *arg)
{
    (void)j;
    (void)arg;
    return -EIO;
}

static int main_dead_code(void *arg, void **result)
{
    (void)arg;
    (void)result;
    env_t e;
    env_open(&e, true);
    int64_t id = enqueue(&e, "plain", &(cio_pgq_enqueue_opts_t){.max_attempts = 1});
    wk_t w;
    wk_init(&w, &e, code_handler, NULL);
    cio_task_t *t = spawn(wk_task, &w);
    cio_pgq_outcome_t o;
    ck_assert_int_eq(cio_pgq_wait(e.pool, id, 30, &o), 0);
    ck_assert_int_eq(o.state, CIO_PGQ_DEAD);
    ck_assert_int_eq(o.attempts, 1);
    ck_assert_ptr_nonnull(strstr(o.error, "EIO"));
    cio_pgq_outcome_clear(&o);
    wk_stop(t);
    env_close(&e);
    return 0;
}
START_TEST(dead_code) { RUN_MAIN(main_dead_code, NULL); }
END_TEST

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

static int main_lost_lease(void *arg, void **result)
{
    (void)arg;
    (void)result;
    env_t e;
    env_open(&e, true);
    int64_t id = enqueue(&e, "job", NULL);
    wk_t w;
    wk_init(&w, &e, slow_first_handler, NULL);
    w.o.concurrency = 2;
    w.o.lease = 0.5;
    w.o.flags = CIO_PGQ_NO_RENEW;
    cio_task_t *t = spawn(wk_task, &w);
    cio_pgq_outcome_t o;
    ck_assert_int_eq(cio_pgq_wait(e.pool, id, 30, &o), 0);
    ck_assert_int_eq(o.state, CIO_PGQ_DONE);
    ck_assert_int_eq(o.attempts, 2);
    ck_assert_uint_eq(o.result_len, 6);
    ck_assert_mem_eq(o.result, "second", 6);
    cio_pgq_outcome_clear(&o);
    /* The shutdown lets the first run finish: its completion is refused. */
    wk_stop(t);
    ck_assert_uint_eq(w.stats.claimed, 2);
    ck_assert_uint_eq(w.stats.completed, 1);
    ck_assert_uint_eq(w.stats.stale, 1);
    ck_assert_int_eq(cio_pgq_status(e.c, id, &o), 0);
    ck_assert_mem_eq(o.result, "second", 6);
    cio_pgq_outcome_clear(&o);
    env_close(&e);
    return 0;
}
START_TEST(lost_lease) { RUN_MAIN(main_lost_lease, NULL); }
END_TEST

/* Outlives its lease on "job", quick on anything else. */
static int slow_job_handler(cio_pgq_job_t *j, void *arg)
{
    if (strcmp(cio_pgq_job_payload(j), "job") == 0)
        return slow_first_handler(j, arg);
    return 0;
}

/* A job whose last attempt outlives its lease is dead when claimed next;
 * its waiter is told, and the late completion is refused. */
static int main_lease_dead(void *arg, void **result)
{
    (void)arg;
    (void)result;
    env_t e;
    env_open(&e, true);
    int64_t id = enqueue(&e, "job", &(cio_pgq_enqueue_opts_t){.max_attempts = 1});
    int64_t next = enqueue(&e, "next", &(cio_pgq_enqueue_opts_t){.delay = 1.0});
    wk_t w;
    wk_init(&w, &e, slow_job_handler, NULL);
    w.o.concurrency = 2;
    w.o.lease = 0.5;
    w.o.flags = CIO_PGQ_NO_RENEW;
    cio_task_t *t = spawn(wk_task, &w);
    cio_pgq_outcome_t o;
    ck_assert_int_eq(cio_pgq_wait(e.pool, id, 30, &o), 0);
    ck_assert_int_eq(o.state, CIO_PGQ_DEAD);
    ck_assert_int_eq(o.attempts, 1);
    ck_assert_str_eq(o.error, "the lease of its last attempt expired");
    cio_pgq_outcome_clear(&o);
    /* The slot that found it dead went on to the next job. */
    ck_assert_int_eq(cio_pgq_wait(e.pool, next, 30, &o), 0);
    ck_assert_int_eq(o.state, CIO_PGQ_DONE);
    cio_pgq_outcome_clear(&o);
    wk_stop(t);
    ck_assert_uint_eq(w.stats.dead, 1);
    ck_assert_uint_eq(w.stats.stale, 1);
    ck_assert_int_eq(cio_pgq_status(e.c, id, &o), 0);
    ck_assert_int_eq(o.state, CIO_PGQ_DEAD);
    ck_assert_ptr_null(o.result);
    cio_pgq_outcome_clear(&o);
    env_close(&e);
    return 0;
}
START_TEST(lease_dead) { RUN_MAIN(main_lease_dead, NULL); }
END_TEST

static int sleepy_handler(cio_pgq_job_t *j, void *arg)
{
    (void)j;
    double *secs = arg;
    return cio_sleep(*secs);
}

/* With renewal, a handler that outlives its lease keeps the job. */
static int main_renewal(void *arg, void **result)
{
    (void)arg;
    (void)result;
    env_t e;
    env_open(&e, true);
    int64_t id = enqueue(&e, "long", NULL);
    double secs = 2.0;
    wk_t w;
    wk_init(&w, &e, sleepy_handler, &secs);
    w.o.concurrency = 2;
    w.o.lease = 0.6;
    cio_task_t *t = spawn(wk_task, &w);
    cio_pgq_outcome_t o;
    ck_assert_int_eq(cio_pgq_wait(e.pool, id, 30, &o), 0);
    ck_assert_int_eq(o.state, CIO_PGQ_DONE);
    ck_assert_int_eq(o.attempts, 1);
    cio_pgq_outcome_clear(&o);
    wk_stop(t);
    ck_assert_uint_eq(w.stats.claimed, 1);
    ck_assert_uint_ge(w.stats.renewed, 3);
    ck_assert_uint_eq(w.stats.stale, 0);
    env_close(&e);
    return 0;
}
START_TEST(renewal) { RUN_MAIN(main_renewal, NULL); }
END_TEST

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

static int main_shutdown(void *arg, void **result)
{
    (void)arg;
    (void)result;
    env_t e;
    env_open(&e, true);
    int64_t quick = enqueue(&e, "quick", NULL);
    int64_t stuck = enqueue(&e, "stuck", NULL);
    int64_t unclaimed = enqueue(&e, "later", &(cio_pgq_enqueue_opts_t){.delay = 3600});
    shut_t s = {0};
    cio_event_init(&s.both);
    wk_t w;
    wk_init(&w, &e, shutdown_handler, &s);
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
    cio_pgq_outcome_t o;
    ck_assert_int_eq(cio_pgq_status(e.c, quick, &o), 0);
    ck_assert_int_eq(o.state, CIO_PGQ_DONE);
    cio_pgq_outcome_clear(&o);
    /* The stuck job is queued again at once, its attempt not counted. */
    ck_assert_int_eq(cio_pgq_status(e.c, stuck, &o), 0);
    ck_assert_int_eq(o.state, CIO_PGQ_QUEUED);
    ck_assert_int_eq(o.attempts, 0);
    cio_pgq_outcome_clear(&o);
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT (visible_at <= now())::int FROM cio_jobs WHERE id = %" PRId64, stuck);
    ck_assert_int_eq(scalar(e.c, sql), 1);
    ck_assert_int_eq(cio_pgq_status(e.c, unclaimed, &o), 0);
    ck_assert_int_eq(o.state, CIO_PGQ_QUEUED);
    cio_pgq_outcome_clear(&o);
    /* An idle worker stops at once, whatever its grace. */
    wk_t idle;
    wk_init(&idle, &e, reverse_handler, NULL);
    idle.o.queue = "nothing-here";
    idle.o.shutdown_grace = 30;
    t = spawn(wk_task, &idle);
    ck_assert_int_eq(cio_sleep(0.2), 0);
    t0 = mono_now();
    wk_stop(t);
    ck_assert_double_lt(mono_now() - t0, HANG_BOUND_S);
    env_close(&e);
    return 0;
}
START_TEST(graceful) { RUN_MAIN(main_shutdown, NULL); }
END_TEST

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

static int main_race(void *arg, void **result)
{
    (void)arg;
    (void)result;
    env_t e;
    env_open(&e, true);
    exec_ok(e.c, "CREATE TABLE done_log (job bigint NOT NULL, worker int NOT NULL)");
    /* The jobs first, so that the workers race for a full queue. */
    static char bufs[RACE_JOBS][12];
    static const void *p[RACE_JOBS];
    static size_t l[RACE_JOBS];
    for (int i = 0; i < RACE_JOBS; i++) {
        l[i] = (size_t)snprintf(bufs[i], sizeof bufs[i], "%d", i);
        p[i] = bufs[i];
    }
    ck_assert_int_eq(cio_pgq_enqueue_batch(e.c, NULL, e.queue, RACE_JOBS, p, l, NULL), RACE_JOBS);
    cio_process_t *w[RACE_WORKERS];
    for (int i = 0; i < RACE_WORKERS; i++)
        w[i] = start_worker(&e, "race", "30", false);
    await_finished(&e, RACE_JOBS, 100);
    for (int i = 0; i < RACE_WORKERS; i++)
        stop_worker(w[i]);
    /* Every job done, each claimed once, completed once. */
    ck_assert_int_eq(cio_pgq_count(e.c, e.queue, CIO_PGQ_DONE), RACE_JOBS);
    ck_assert_int_eq(scalar(e.c, "SELECT count(*) FROM cio_jobs WHERE attempts <> 1"), 0);
    ck_assert_int_eq(scalar(e.c, "SELECT count(*) FROM done_log"), RACE_JOBS);
    ck_assert_int_eq(scalar(e.c, "SELECT count(DISTINCT job) FROM done_log"), RACE_JOBS);
    int64_t workers = scalar(e.c, "SELECT count(DISTINCT worker) FROM done_log");
    fprintf(stderr, "race: %d jobs over %" PRId64 " worker processes\n", RACE_JOBS, workers);
    ck_assert_int_ge(workers, 2);
    env_close(&e);
    return 0;
}
START_TEST(race8) { RUN_MAIN(main_race, NULL); }
END_TEST

/* A worker process SIGKILLed while a job is in its handler: the job comes
 * back after the lease, another worker completes it, once. */
static int count_handler(cio_pgq_job_t *j, void *arg)
{
    (void)j;
    int *n = arg;
    ++*n;
    return cio_pgq_job_set_result(j, "ok", 2);
}

static int log_completion(cio_pg_t *c, cio_pgq_job_t *j, void *arg)
{
    (void)arg;
    char id[24];
    snprintf(id, sizeof id, "%" PRId64, cio_pgq_job_id(j));
    const char *v[1] = {id};
    int64_t n = cio_pg_query(c, NULL, "INSERT INTO done_log VALUES ($1, 0)", 1, v);
    return n < 0 ? (int)n : 0;
}

static int main_killed(void *arg, void **result)
{
    (void)arg;
    (void)result;
    env_t e;
    env_open(&e, true);
    exec_ok(e.c, "CREATE TABLE done_log (job bigint NOT NULL, worker int NOT NULL)");
    int64_t id = enqueue(&e, "victim", NULL);
    cio_process_t *p = start_worker(&e, "hang", "1", true);
    char line[128];
    ssize_t n = cio_stream_readline(cio_process_stdout(p), line, sizeof line);
    ck_assert_int_gt(n, 0);
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
    ck_assert_int_eq(cio_pgq_status(e.c, id, &o), 0);
    ck_assert_int_eq(o.state, CIO_PGQ_RUNNING);
    cio_pgq_outcome_clear(&o);

    int runs = 0;
    wk_t w;
    wk_init(&w, &e, count_handler, &runs);
    w.o.on_complete = log_completion;
    cio_task_t *t = spawn(wk_task, &w);
    ck_assert_int_eq(cio_pgq_wait(e.pool, id, 30, &o), 0);
    double back_after = mono_now() - killed_at;
    ck_assert_int_eq(o.state, CIO_PGQ_DONE);
    ck_assert_int_eq(o.attempts, 2);
    ck_assert_mem_eq(o.result, "ok", 2);
    cio_pgq_outcome_clear(&o);
    wk_stop(t);
    ck_assert_int_eq(runs, 1);
    ck_assert_double_lt(back_after, HANG_BOUND_S);
    ck_assert_int_eq(scalar(e.c, "SELECT count(*) FROM done_log"), 1);
    ck_assert_uint_eq(w.stats.completed, 1);
    env_close(&e);
    return 0;
}
START_TEST(killed) { RUN_MAIN(main_killed, NULL); }
END_TEST

/* A server restart under a running worker: it counts the errors, reconnects
 * (its listener too) and runs the jobs enqueued afterwards. */
static int restart_job(void *arg, void **result)
{
    (void)arg;
    (void)result;
    return cio_pg_test_restart();
}

static int main_restart(void *arg, void **result)
{
    (void)arg;
    (void)result;
    env_t e;
    env_open(&e, true);
    wk_t w;
    wk_init(&w, &e, reverse_handler, NULL);
    w.o.concurrency = 2;
    cio_task_t *t = spawn(wk_task, &w);
    int64_t id = enqueue(&e, "before", NULL);
    cio_pgq_outcome_t o;
    ck_assert_int_eq(cio_pgq_wait(e.pool, id, 30, &o), 0);
    cio_pgq_outcome_clear(&o);
    int rc = cio_to_thread(restart_job, NULL, NULL);
    if (rc == -ENOTSUP) {
        fprintf(stderr, "restart: not our server; skipped\n");
        wk_stop(t);
        env_close(&e);
        return 0;
    }
    ck_assert_int_eq(rc, 0);
    /* The test's own connection was cut off too. */
    cio_pg_close(e.c);
    ck_assert_int_eq(cio_pg_connect(&e.c, e.dsn, 10), 0);
    id = enqueue(&e, "after", NULL);
    ck_assert_int_eq(cio_pgq_wait(e.pool, id, 60, &o), 0);
    ck_assert_int_eq(o.state, CIO_PGQ_DONE);
    ck_assert_mem_eq(o.result, "retfa", 5);
    cio_pgq_outcome_clear(&o);
    wk_stop(t);
    ck_assert_uint_eq(w.stats.completed, 2);
    env_close(&e);
    return 0;
}
START_TEST(restart) { RUN_MAIN(main_restart, NULL); }
END_TEST

/* ------------------------------------------------------------------------ */
/* Malformed input                                                           */
/* ------------------------------------------------------------------------ */

static int main_malformed(void *arg, void **result)
{
    (void)arg;
    (void)result;
    env_t e;
    env_open(&e, true);
    int64_t id = 7;
    ck_assert_int_eq(cio_pgq_enqueue(e.c, &id, NULL, "x", 1, NULL), -EINVAL);
    ck_assert_int_eq(id, 0);
    ck_assert_int_eq(cio_pgq_enqueue(NULL, &id, "q", "x", 1, NULL), -EINVAL);
    ck_assert_int_eq(cio_pgq_enqueue(e.c, &id, "", "x", 1, NULL), -EINVAL);
    char longname[CIO_PGQ_MAX_NAME + 2];
    memset(longname, 'n', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    ck_assert_int_eq(cio_pgq_enqueue(e.c, &id, longname, "x", 1, NULL), -EINVAL);
    longname[CIO_PGQ_MAX_NAME] = '\0';
    ck_assert_int_eq(cio_pgq_enqueue(e.c, &id, longname, "x", 1, NULL), 0);
    ck_assert_int_eq(cio_pgq_enqueue(e.c, &id, e.queue, NULL, 1, NULL), -EINVAL);
    ck_assert_int_eq(cio_pgq_enqueue(e.c, &id, e.queue, "x", CIO_PGQ_MAX_PAYLOAD + 1, NULL), -EINVAL);
    cio_pgq_enqueue_opts_t bad = {.reserved_ = {1}};
    ck_assert_int_eq(cio_pgq_enqueue(e.c, &id, e.queue, "x", 1, &bad), -EINVAL);
    bad = (cio_pgq_enqueue_opts_t){.delay = NAN};
    ck_assert_int_eq(cio_pgq_enqueue(e.c, &id, e.queue, "x", 1, &bad), -EINVAL);
    bad = (cio_pgq_enqueue_opts_t){.delay = -1};
    ck_assert_int_eq(cio_pgq_enqueue(e.c, &id, e.queue, "x", 1, &bad), -EINVAL);
    bad = (cio_pgq_enqueue_opts_t){.delay = 1, .run_at = 1};
    ck_assert_int_eq(cio_pgq_enqueue(e.c, &id, e.queue, "x", 1, &bad), -EINVAL);
    bad = (cio_pgq_enqueue_opts_t){.max_attempts = -1};
    ck_assert_int_eq(cio_pgq_enqueue(e.c, &id, e.queue, "x", 1, &bad), -EINVAL);
    bad = (cio_pgq_enqueue_opts_t){.backoff = INFINITY};
    ck_assert_int_eq(cio_pgq_enqueue(e.c, &id, e.queue, "x", 1, &bad), -EINVAL);
    bad = (cio_pgq_enqueue_opts_t){.backoff = 3601};
    ck_assert_int_eq(cio_pgq_enqueue(e.c, &id, e.queue, "x", 1, &bad), -EINVAL);
    bad = (cio_pgq_enqueue_opts_t){.idem_key = ""};
    ck_assert_int_eq(cio_pgq_enqueue(e.c, &id, e.queue, "x", 1, &bad), -EINVAL);
    /* An absurd delay is the server's error, cleanly. */
    bad = (cio_pgq_enqueue_opts_t){.delay = 1e300};
    ck_assert_int_eq(cio_pgq_enqueue(e.c, &id, e.queue, "x", 1, &bad), -EREMOTEIO);
    ck_assert_int_eq(cio_pg_status(e.c), CIO_PG_IDLE);
    /* An empty payload is a payload. */
    ck_assert_int_eq(cio_pgq_enqueue(e.c, &id, e.queue, NULL, 0, NULL), 0);
    ck_assert_int_gt(id, 0);
    /* 100 MiB works. */
    size_t big = (size_t)100 << 20;
    char *buf = malloc(big);
    ck_assert_ptr_nonnull(buf);
    memset(buf, 'B', big);
    buf[big / 2] = '\0';
    int rc = cio_pgq_enqueue(e.c, &id, e.queue, buf, big, NULL);
    free(buf);
    ck_assert_int_eq(rc, 0);
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT length(payload) FROM cio_jobs WHERE id = %" PRId64, id);
    ck_assert_int_eq(scalar(e.c, sql), (int64_t)big);
    /* Outcomes and counts. */
    cio_pgq_outcome_t o;
    ck_assert_int_eq(cio_pgq_status(e.c, 0, &o), -ENOENT);
    ck_assert_int_eq(cio_pgq_status(e.c, 1, NULL), -EINVAL);
    ck_assert_int_eq(cio_pgq_status(NULL, 1, &o), -EINVAL);
    cio_pgq_outcome_clear(NULL);
    ck_assert_int_eq(cio_pgq_count(e.c, e.queue, 4), -EINVAL);
    ck_assert_int_eq(cio_pgq_count(e.c, NULL, 0), -EINVAL);
    ck_assert_int_eq(cio_pgq_wait(e.pool, id, 0.2, &o), -ETIMEDOUT);
    ck_assert_int_eq(o.state, 0);
    ck_assert_int_eq(cio_pgq_wait(e.pool, -5, 1, &o), -ENOENT);
    ck_assert_int_eq(cio_pgq_wait(e.pool, id, NAN, &o), -EINVAL);
    ck_assert_int_eq(cio_pgq_wait(NULL, id, 1, &o), -EINVAL);
    ck_assert_uint_eq(cio_pg_pool_idle(e.pool), cio_pg_pool_size(e.pool));
    /* Worker options. */
    wk_t w;
    wk_init(&w, &e, reverse_handler, NULL);
    cio_pgq_worker_opts_t wo = {.queue = e.queue};
    ck_assert_int_eq(cio_pgq_work(NULL, &wo, reverse_handler, NULL), -EINVAL);
    ck_assert_int_eq(cio_pgq_work(e.pool, NULL, reverse_handler, NULL), -EINVAL);
    ck_assert_int_eq(cio_pgq_work(e.pool, &wo, NULL, NULL), -EINVAL);
    wo.queue = NULL;
    ck_assert_int_eq(cio_pgq_work(e.pool, &wo, reverse_handler, NULL), -EINVAL);
    wo = (cio_pgq_worker_opts_t){.queue = e.queue, .lease = INFINITY};
    ck_assert_int_eq(cio_pgq_work(e.pool, &wo, reverse_handler, NULL), -EINVAL);
    wo = (cio_pgq_worker_opts_t){.queue = e.queue, .shutdown_grace = -1};
    ck_assert_int_eq(cio_pgq_work(e.pool, &wo, reverse_handler, NULL), -EINVAL);
    wo = (cio_pgq_worker_opts_t){.queue = e.queue, .concurrency = 5000};
    ck_assert_int_eq(cio_pgq_work(e.pool, &wo, reverse_handler, NULL), -EINVAL);
    wo = (cio_pgq_worker_opts_t){.queue = e.queue, .flags = 2};
    ck_assert_int_eq(cio_pgq_work(e.pool, &wo, reverse_handler, NULL), -EINVAL);
    wo = (cio_pgq_worker_opts_t){.queue = e.queue, .reserved_ = {&w}};
    ck_assert_int_eq(cio_pgq_work(e.pool, &wo, reverse_handler, NULL), -EINVAL);
    /* Job accessors on NULL. */
    ck_assert_int_eq(cio_pgq_job_id(NULL), 0);
    ck_assert_ptr_null(cio_pgq_job_payload(NULL));
    ck_assert_int_eq(cio_pgq_job_set_result(NULL, "x", 1), -EINVAL);
    ck_assert_int_eq(cio_pgq_job_set_error(NULL, "x"), -EINVAL);
    /* A closed pool ends a worker with -ESHUTDOWN. */
    cio_pg_pool_t *closed;
    ck_assert_int_eq(cio_pg_pool_new(&closed, e.dsn, NULL), 0);
    ck_assert_int_eq(cio_pg_pool_close(closed), 0);
    wo = (cio_pgq_worker_opts_t){.queue = e.queue};
    ck_assert_int_eq(cio_pgq_work(closed, &wo, reverse_handler, NULL), -ESHUTDOWN);
    ck_assert_int_eq(cio_pg_pool_free(closed), 0);
    env_close(&e);
    return 0;
}
START_TEST(malformed) { RUN_MAIN(main_malformed, NULL); }
END_TEST

/* Without the schema: the server's error, cleanly. */
static int main_no_schema(void *arg, void **result)
{
    (void)arg;
    (void)result;
    env_t e;
    env_open(&e, false);
    int64_t id;
    ck_assert_int_eq(cio_pgq_enqueue(e.c, &id, e.queue, "x", 1, NULL), -EREMOTEIO);
    ck_assert_str_eq(cio_pg_error_sqlstate(e.c), "42P01");
    ck_assert_int_eq(cio_pgq_count(e.c, e.queue, -1), -EREMOTEIO);
    env_close(&e);
    return 0;
}
START_TEST(no_schema) { RUN_MAIN(main_no_schema, NULL); }
END_TEST

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
    tc = add_tcase(s, "failures", QTIMEOUT);
    tcase_add_test(tc, dead);
    tcase_add_test(tc, dead_code);
    tcase_add_test(tc, lost_lease);
    tcase_add_test(tc, lease_dead);
    tcase_add_test(tc, renewal);
    tcase_add_test(tc, graceful);
    tc = add_tcase(s, "processes", QTIMEOUT);
    tcase_add_test(tc, race8);
    tcase_add_test(tc, killed);
    tcase_add_test(tc, restart);
    tc = add_tcase(s, "malformed", QTIMEOUT);
    tcase_add_test(tc, malformed);
    return s;
}

/* ------------------------------------------------------------------------ */
/* Worker process mode                                                       */
/* ------------------------------------------------------------------------ */

typedef struct {
    char **argv;
    cio_pg_pool_t *pool;
    int rc;
} child_t2;

static int race_complete(cio_pg_t *c, cio_pgq_job_t *j, void *arg)
{
    (void)arg;
    char id[24], pid[16];
    snprintf(id, sizeof id, "%" PRId64, cio_pgq_job_id(j));
    snprintf(pid, sizeof pid, "%ld", (long)getpid());
    const char *v[2] = {id, pid};
    int64_t n = cio_pg_query(c, NULL, "INSERT INTO done_log VALUES ($1, $2)", 2, v);
    return n < 0 ? (int)n : 0;
}

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
    child_t2 *c = arg;
    cio_pgq_worker_opts_t o = {.queue = c->argv[3], .lease = atof(c->argv[5])};
    bool race = strcmp(c->argv[4], "race") == 0;
    o.concurrency = race ? 4 : 1;
    o.on_complete = race ? race_complete : NULL;
    c->rc = cio_pgq_work(c->pool, &o, race ? noop_handler : hang_handler, NULL);
    return 0;
}

static int child_main(void *arg, void **result)
{
    (void)result;
    child_t2 c = {.argv = arg};
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
