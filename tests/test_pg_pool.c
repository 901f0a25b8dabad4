/*
 * cio-pg's connection pool (include/cio-pg.h, "Connection pool"), against a
 * real server (tests/cio_pg_test.h): bounds, FIFO service, deadlines and
 * cancellation, rollback of transactions given back, replacement of broken
 * connections, a server restart under a running pool, connect failures,
 * closing, and allocation failure; a connection given back by another
 * task, and one lost inside a transaction while a task waits for its slot.
 *
 * The allocation tests wrap malloc with ld's --wrap (tests/CMakeLists.txt:
 * CIO_TEST_LINK_OPTIONS_test_pg_pool), which reaches cio-pg's own
 * allocations (the static library is linked into this program) but not
 * libpq's (a shared library).
 */
#define CIO_PG_TEST_WRAP_ALLOC /* cio_pg_test.h's malloc wrappers */
#include "cio_pg_test.h"
#include "cio_test.h"

#include <cio-pg.h>

#include <arpa/inet.h>
#include <netinet/in.h>

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */
/* ------------------------------------------------------------------------ */

#define POOL_TIMEOUT 60

/* The test server's DSN with application_name set to a name unique to this
 * process and tag, so that pg_stat_activity tells the pool's connections. */
static const char *dsn_named(const char *tag, char *appname, size_t cap)
{
    static char buf[2048];
    const char *dsn = cio_pg_test_dsn();
    snprintf(appname, cap, "cio_pool_%ld_%s", (long)getpid(), tag);
    if (strstr(dsn, "://"))
        snprintf(buf, sizeof buf, "%s%sapplication_name=%s", dsn, strchr(dsn, '?') ? "&" : "?",
                 appname);
    else
        snprintf(buf, sizeof buf, "%s application_name=%s", dsn, appname);
    return buf;
}

static cio_pg_pool_t *pool_new(const char *conninfo, unsigned max_size)
{
    cio_pg_pool_opts_t o;
    memset(&o, 0, sizeof o);
    o.max_size = max_size;
    cio_pg_pool_t *p = NOT_SET;
    ck_assert_int_eq(cio_pg_pool_new(&p, conninfo, &o), 0);
    ck_assert_ptr_nonnull(p);
    return p;
}

/* Runs `SELECT $1::int` on c and checks the answer. Returns the query's
 * status. */
static int select_int(cio_pg_t *c, int v)
{
    char text[16];
    snprintf(text, sizeof text, "%d", v);
    const char *values[] = {text};
    cio_pg_result_t *r = NULL;
    int64_t n = cio_pg_query(c, &r, "SELECT $1::int", 1, values);
    if (n < 0)
        return (int)n;
    ck_assert_int_eq(n, 1);
    ck_assert_str_eq(cio_pg_value(r, 0, 0), text);
    cio_pg_result_free(r);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Creation and argument checks                                              */
/* ------------------------------------------------------------------------ */

START_TEST(new_invalid)
{
    cio_pg_pool_opts_t o;
    memset(&o, 0, sizeof o);
    cio_pg_pool_t *p = NOT_SET;
    ck_assert_int_eq(cio_pg_pool_new(NULL, "", NULL), -EINVAL);
    ck_assert_int_eq(cio_pg_pool_new(&p, NULL, NULL), -EINVAL);
    ck_assert_ptr_null(p);
    p = NOT_SET;
    o.reserved_[5] = 1;
    ck_assert_int_eq(cio_pg_pool_new(&p, "", &o), -EINVAL);
    ck_assert_ptr_null(p);
    memset(&o, 0, sizeof o);
    o.connect_timeout = -1;
    ck_assert_int_eq(cio_pg_pool_new(&p, "", &o), -EINVAL);
    o.connect_timeout = NAN;
    ck_assert_int_eq(cio_pg_pool_new(&p, "", &o), -EINVAL);
    o.connect_timeout = 0;
    o.cancel_timeout = -0.5;
    ck_assert_int_eq(cio_pg_pool_new(&p, "", &o), -EINVAL);
    o.cancel_timeout = NAN;
    ck_assert_int_eq(cio_pg_pool_new(&p, "", &o), -EINVAL);
    o.cancel_timeout = 0;
    o.max_size = (unsigned)INT32_MAX + 1u;
    ck_assert_int_eq(cio_pg_pool_new(&p, "", &o), -EINVAL);
    o.max_size = 0;
    p = NOT_SET;
    ck_assert_int_eq(cio_pg_pool_new(&p, "host=localhost port", &o), -EINVAL);
    ck_assert_ptr_null(p);
    ck_assert_int_eq(cio_pg_pool_new(&p, "nosuchkeyword=1", &o), -EINVAL);

    /* The defaults, and NULL everywhere. */
    o.connect_timeout = INFINITY;
    ck_assert_int_eq(cio_pg_pool_new(&p, "host=/nonexistent dbname=x", &o), 0);
    ck_assert_str_eq(cio_pg_pool_conninfo(p), "host=/nonexistent dbname=x");
    ck_assert_uint_eq(cio_pg_pool_size(p), 0);
    ck_assert_uint_eq(cio_pg_pool_idle(p), 0);
    ck_assert_int_eq(cio_pg_pool_free(p), 0);
    ck_assert_int_eq(cio_pg_pool_new(&p, "", NULL), 0);
    ck_assert_int_eq(cio_pg_pool_close(p), 0);
    ck_assert_int_eq(cio_pg_pool_close(p), 0);
    ck_assert_int_eq(cio_pg_pool_free(p), 0);
    ck_assert_int_eq(cio_pg_pool_close(NULL), 0);
    ck_assert_int_eq(cio_pg_pool_free(NULL), 0);
    ck_assert_uint_eq(cio_pg_pool_size(NULL), 0);
    ck_assert_uint_eq(cio_pg_pool_idle(NULL), 0);
    ck_assert_ptr_null(cio_pg_pool_conninfo(NULL));
    ck_assert_int_eq(cio_pg_pool_release(NULL, NULL), -EINVAL);

    /* Outside a task. */
    ck_assert_int_eq(cio_pg_pool_new(&p, cio_pg_test_dsn(), NULL), 0);
    cio_pg_t *c = NOT_SET;
    ck_assert_int_eq(cio_pg_pool_acquire(p, &c, 1), -EPERM);
    ck_assert_ptr_null(c);
    ck_assert_int_eq(cio_pg_pool_free(p), 0);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Basic use                                                                 */
/* ------------------------------------------------------------------------ */

static int basic_body(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_pg_pool_t *p = pool_new(cio_pg_test_dsn(), 2);
    cio_pg_t *c = NOT_SET, *d = NOT_SET;
    ck_assert_int_eq(cio_pg_pool_acquire(NULL, &c, 1), -EINVAL);
    ck_assert_ptr_null(c);
    ck_assert_int_eq(cio_pg_pool_acquire(p, NULL, 1), -EINVAL);
    ck_assert_int_eq(cio_pg_pool_acquire(p, &c, NAN), -EINVAL);

    ck_assert_int_eq(cio_pg_pool_acquire(p, &c, INFINITY), 0);
    ck_assert_ptr_nonnull(c);
    ck_assert_uint_eq(cio_pg_pool_size(p), 1);
    ck_assert_uint_eq(cio_pg_pool_idle(p), 0);
    ck_assert_int_eq(select_int(c, 42), 0);
    ck_assert_int_eq(cio_pg_pool_release(p, c), 0);
    ck_assert_uint_eq(cio_pg_pool_size(p), 1);
    ck_assert_uint_eq(cio_pg_pool_idle(p), 1);
    /* Not taken any more: a second release is refused. */
    ck_assert_int_eq(cio_pg_pool_release(p, c), -EINVAL);

    /* The idle connection is reused (the same one: LIFO), and a second
     * one is opened only when the first is taken. */
    ck_assert_int_eq(cio_pg_pool_acquire(p, &d, 1), 0);
    ck_assert_ptr_eq(d, c);
    ck_assert_int_eq(cio_pg_pool_acquire(p, &c, 1), 0);
    ck_assert_ptr_ne(c, d);
    ck_assert_uint_eq(cio_pg_pool_size(p), 2);
    ck_assert_int_ne(cio_pg_backend_pid(c), cio_pg_backend_pid(d));

    /* A connection the pool did not give: refused, and not closed. */
    cio_pg_t *own = cio_pg_test_connect();
    ck_assert_int_eq(cio_pg_pool_release(p, own), -EINVAL);
    cio_pg_pool_t *other = pool_new(cio_pg_test_dsn(), 1);
    ck_assert_int_eq(cio_pg_pool_release(other, c), -EINVAL);
    ck_assert_int_eq(cio_pg_pool_release(p, NULL), -EINVAL);
    ck_assert_int_eq(select_int(own, 7), 0);
    ck_assert_int_eq(cio_pg_close(own), 0);
    ck_assert_int_eq(cio_pg_pool_free(other), 0);

    /* A connection with an operation in progress cannot be given back. */
    cio_pg_test_exec_t b = {.c = c, .sql = "SELECT pg_sleep(0.2)", .rc = 1};
    cio_task_t *t = spawn(cio_pg_test_exec_task, &b);
    ck_assert_int_eq(cio_sleep(0.05), 0);
    ck_assert_int_eq(cio_pg_pool_release(p, c), -EBUSY);
    ck_assert_int_eq(finish(t), 0);
    ck_assert_int_eq(b.rc, 0);

    /* Both taken: free refuses. */
    ck_assert_int_eq(cio_pg_pool_free(p), -EBUSY);
    ck_assert_int_eq(cio_pg_pool_release(p, c), 0);
    ck_assert_int_eq(cio_pg_pool_release(p, d), 0);
    ck_assert_uint_eq(cio_pg_pool_idle(p), 2);
    ck_assert_int_eq(cio_pg_pool_free(p), 0);
    return 0;
}

START_TEST(basic) { RUN_MAIN(basic_body, NULL); }
END_TEST

/* Taking an idle connection when nobody waits, and giving it back, do not
 * allocate (the benchmark's hot path). */
static int noalloc_body(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_pg_pool_t *p = pool_new(cio_pg_test_dsn(), 4);
    cio_pg_t *c;
    ck_assert_int_eq(cio_pg_pool_acquire(p, &c, INFINITY), 0);
    ck_assert_int_eq(cio_pg_pool_release(p, c), 0);
    /* No check assertion inside the counted region: check allocates. */
    int failed = 0;
    cio_pg_test_alloc_arm(0);
    for (int i = 0; i < 100; i++) {
        failed += cio_pg_pool_acquire(p, &c, i % 2 ? INFINITY : 5.0) != 0;
        failed += cio_pg_pool_release(p, c) != 0;
    }
    cio_pg_test_alloc_disarm();
    long n = cio_pg_test_alloc_count();
    ck_assert_int_eq(failed, 0);
    if (cio_pg_test_malloc_wrapped("test_pg_pool: the allocation count"))
        ck_assert_int_eq(n, 0);
    ck_assert_uint_eq(cio_pg_pool_size(p), 1);
    ck_assert_int_eq(cio_pg_pool_free(p), 0);
    return 0;
}

START_TEST(noalloc) { RUN_MAIN(noalloc_body, NULL); }
END_TEST

/* The default bound is 10. */
static int defaults_body(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_pg_pool_t *p = NOT_SET;
    ck_assert_int_eq(cio_pg_pool_new(&p, cio_pg_test_dsn(), NULL), 0);
    cio_pg_t *c[11];
    for (int i = 0; i < 10; i++)
        ck_assert_int_eq(cio_pg_pool_acquire(p, &c[i], 10), 0);
    ck_assert_int_eq(cio_pg_pool_acquire(p, &c[10], D_SHORT), -ETIMEDOUT);
    ck_assert_uint_eq(cio_pg_pool_size(p), 10);
    for (int i = 0; i < 10; i++)
        ck_assert_int_eq(cio_pg_pool_release(p, c[i]), 0);
    ck_assert_uint_eq(cio_pg_pool_idle(p), 10);
    ck_assert_int_eq(cio_pg_pool_free(p), 0);
    return 0;
}

START_TEST(defaults) { RUN_MAIN(defaults_body, NULL); }
END_TEST

/* A connection given back in COPY or pipeline mode is closed. */
static int modes_body(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_pg_pool_t *p = pool_new(cio_pg_test_dsn(), 1);
    cio_pg_t *c;
    ck_assert_int_eq(cio_pg_pool_acquire(p, &c, 10), 0);
    ck_assert_int_eq(cio_pg_pipeline_enter(c), 0);
    ck_assert_int_eq(cio_pg_pool_release(p, c), 0);
    ck_assert_uint_eq(cio_pg_pool_size(p), 0);

    ck_assert_int_eq(cio_pg_pool_acquire(p, &c, 10), 0);
    ck_assert_int_eq(cio_pg_exec(c, "CREATE TEMP TABLE cio_pool_copy (x int)"), 0);
    ck_assert_int_eq(cio_pg_copy_in(c, "COPY cio_pool_copy FROM STDIN"), 0);
    ck_assert_int_eq(cio_pg_copy_put(c, "1\n", 2), 0);
    ck_assert_int_eq(cio_pg_status(c), CIO_PG_ACTIVE);
    ck_assert_int_eq(cio_pg_pool_release(p, c), 0);
    ck_assert_uint_eq(cio_pg_pool_size(p), 0);

    /* The slot serves a new connection. */
    ck_assert_int_eq(cio_pg_pool_acquire(p, &c, 10), 0);
    ck_assert_int_eq(select_int(c, 4), 0);
    ck_assert_int_eq(cio_pg_pool_release(p, c), 0);
    ck_assert_int_eq(cio_pg_pool_free(p), 0);
    return 0;
}

START_TEST(modes) { RUN_MAIN(modes_body, NULL); }
END_TEST

/* ------------------------------------------------------------------------ */
/* The bound: 64 tasks over 8 connections                                    */
/* ------------------------------------------------------------------------ */

#define BOUND_TASKS 64
#define BOUND_MAX 8

typedef struct bound {
    cio_pg_pool_t *p;
    const char *appname;
    int inside, most, done;
    long long most_server; /* the most connections pg_stat_activity showed */
    cio_barrier_t full;    /* BOUND_MAX parties: passes when the pool is full */
} bound_t;

static int bound_worker(void *arg, void **result)
{
    (void)result;
    bound_t *b = arg;
    cio_pg_t *c;
    int rc = cio_pg_pool_acquire(b->p, &c, 30);
    ck_assert_int_eq(rc, 0);
    b->inside++;
    if (b->inside > b->most)
        b->most = b->inside;
    ck_assert_uint_le(cio_pg_pool_size(b->p), BOUND_MAX);
    long long n = cio_pg_test_int(c,
                           "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                           b->appname);
    if (n > b->most_server)
        b->most_server = n;
    /* Hold the connection until BOUND_MAX tasks hold one: the pool must
     * reach its bound (or this hangs and the tcase times out). */
    ck_assert_int_ge(cio_barrier_wait(&b->full), 0);
    ck_assert_int_eq(cio_pg_exec(c, "SELECT 1"), 0);
    b->inside--;
    ck_assert_int_eq(cio_pg_pool_release(b->p, c), 0);
    b->done++;
    return 0;
}

static int bound_body(void *arg, void **result)
{
    (void)arg;
    (void)result;
    char appname[64];
    const char *dsn = dsn_named("bound", appname, sizeof appname);
    bound_t b = {.p = pool_new(dsn, BOUND_MAX), .appname = appname};
    ck_assert_int_eq(cio_barrier_init(&b.full, BOUND_MAX), 0);
    cio_task_t *t[BOUND_TASKS];
    for (int i = 0; i < BOUND_TASKS; i++)
        t[i] = spawn(bound_worker, &b);
    for (int i = 0; i < BOUND_TASKS; i++)
        ck_assert_int_eq(finish(t[i]), 0);
    ck_assert_int_eq(b.done, BOUND_TASKS);
    /* The pool grew to its bound and no further. */
    ck_assert_int_eq(b.most, BOUND_MAX);
    ck_assert_int_ge(b.most_server, 1);
    ck_assert_int_le(b.most_server, BOUND_MAX);
    ck_assert_uint_eq(cio_pg_pool_size(b.p), BOUND_MAX);
    ck_assert_uint_eq(cio_pg_pool_idle(b.p), BOUND_MAX);
    ck_assert_int_eq(cio_pg_pool_free(b.p), 0);
    return 0;
}

START_TEST(bound) { RUN_MAIN(bound_body, NULL); }
END_TEST

/* ------------------------------------------------------------------------ */
/* Waiters: FIFO order, deadlines, cancellation                              */
/* ------------------------------------------------------------------------ */

typedef struct waiter {
    cio_pg_pool_t *p;
    int id;
    double timeout;
    int *order; /* where the ids are written in the order served */
    int *served;
    int rc;
    bool hold; /* keep the connection (the test releases it) */
    cio_pg_t *c;
    int64_t waited_ns;
} waiter_t;

static int waiter_body(void *arg, void **result)
{
    (void)result;
    waiter_t *w = arg;
    int64_t t0 = loop_ns();
    w->rc = cio_pg_pool_acquire(w->p, &w->c, w->timeout);
    w->waited_ns = loop_ns() - t0;
    if (w->rc < 0) {
        ck_assert_ptr_null(w->c);
        return 0;
    }
    if (w->order)
        w->order[(*w->served)++] = w->id;
    /* A task cancelled after it was handed a connection keeps it, and its
     * next call reports the cancellation. */
    int rc = select_int(w->c, w->id);
    if (cio_task_cancelling(cio_current_task()))
        ck_assert(rc == 0 || rc == -ECANCELED);
    else
        ck_assert_int_eq(rc, 0);
    if (!w->hold) {
        ck_assert_int_eq(cio_pg_pool_release(w->p, w->c), 0);
        w->c = NULL;
    }
    return 0;
}

static void waiter_init(waiter_t *w, cio_pg_pool_t *p, int id, double timeout)
{
    memset(w, 0, sizeof *w);
    w->p = p;
    w->id = id;
    w->timeout = timeout;
    w->rc = 1;
}

#define FIFO_N 6

static int fifo_body(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_pg_pool_t *p = pool_new(cio_pg_test_dsn(), 1);
    cio_pg_t *c;
    ck_assert_int_eq(cio_pg_pool_acquire(p, &c, 10), 0);
    int order[FIFO_N], served = 0;
    waiter_t w[FIFO_N];
    cio_task_t *t[FIFO_N];
    for (int i = 0; i < FIFO_N; i++) {
        waiter_init(&w[i], p, i, 30);
        w[i].order = order;
        w[i].served = &served;
        t[i] = spawn(waiter_body, &w[i]);
        /* Each queues before the next one is spawned. */
        settle();
    }
    ck_assert_int_eq(served, 0);
    ck_assert_int_eq(cio_pg_pool_release(p, c), 0);
    for (int i = 0; i < FIFO_N; i++)
        ck_assert_int_eq(finish(t[i]), 0);
    ck_assert_int_eq(served, FIFO_N);
    for (int i = 0; i < FIFO_N; i++) {
        ck_assert_int_eq(w[i].rc, 0);
        ck_assert_int_eq(order[i], i);
    }
    /* One connection served everyone. */
    ck_assert_uint_eq(cio_pg_pool_size(p), 1);
    ck_assert_int_eq(cio_pg_pool_free(p), 0);
    return 0;
}

START_TEST(fifo) { RUN_MAIN(fifo_body, NULL); }
END_TEST

static int deadline_body(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_pg_pool_t *p = pool_new(cio_pg_test_dsn(), 1);
    cio_pg_t *c, *d = NOT_SET;
    ck_assert_int_eq(cio_pg_pool_acquire(p, &c, 10), 0);

    /* The acquire's own deadline. */
    int64_t t0 = loop_ns();
    ck_assert_int_eq(cio_pg_pool_acquire(p, &d, D_SHORT), -ETIMEDOUT);
    ck_assert_int_ge(loop_ns() - t0, NS_SHORT);
    ck_assert_ptr_null(d);
    /* timeout 0 with nothing free: at once. */
    ck_assert_int_eq(cio_pg_pool_acquire(p, &d, 0), -ETIMEDOUT);

    /* An enclosing scope's deadline. */
    cio_scope_t s;
    ck_assert_int_eq(cio_scope_enter(&s, D_SHORT, 0), 0);
    ck_assert_int_eq(cio_pg_pool_acquire(p, &d, INFINITY), -ETIMEDOUT);
    ck_assert_int_eq(cio_scope_exit(&s), -ETIMEDOUT);

    /* Waiters that gave up left nothing behind: a waiter queued after them
     * gets the connection when it is released. */
    waiter_t w1, w2;
    waiter_init(&w1, p, 1, D_SHORT);
    waiter_init(&w2, p, 2, 30);
    cio_task_t *t1 = spawn(waiter_body, &w1);
    cio_task_t *t2 = spawn(waiter_body, &w2);
    ck_assert_int_eq(finish(t1), 0);
    ck_assert_int_eq(w1.rc, -ETIMEDOUT);
    ck_assert_int_ge(w1.waited_ns, NS_SHORT);
    ck_assert_int_eq(w2.rc, 1); /* still waiting */
    ck_assert_int_eq(cio_pg_pool_release(p, c), 0);
    ck_assert_int_eq(finish(t2), 0);
    ck_assert_int_eq(w2.rc, 0);
    ck_assert_uint_eq(cio_pg_pool_size(p), 1);
    ck_assert_uint_eq(cio_pg_pool_idle(p), 1);

    /* timeout 0 is a deadline already passed, as for every await point:
     * -ETIMEDOUT even with an idle connection, which stays idle. */
    ck_assert_int_eq(cio_pg_pool_acquire(p, &d, 0), -ETIMEDOUT);
    ck_assert_uint_eq(cio_pg_pool_idle(p), 1);
    ck_assert_int_eq(cio_pg_pool_free(p), 0);
    return 0;
}

START_TEST(deadline) { RUN_MAIN(deadline_body, NULL); }
END_TEST

static int cancel_body(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_pg_pool_t *p = pool_new(cio_pg_test_dsn(), 1);
    cio_pg_t *c;
    ck_assert_int_eq(cio_pg_pool_acquire(p, &c, 10), 0);
    waiter_t w1, w2, w3;
    waiter_init(&w1, p, 1, 30);
    waiter_init(&w2, p, 2, 30);
    waiter_init(&w3, p, 3, 30);
    cio_task_t *t1 = spawn(waiter_body, &w1);
    cio_task_t *t2 = spawn(waiter_body, &w2);
    cio_task_t *t3 = spawn(waiter_body, &w3);
    settle();

    /* The first waiter is cancelled while it waits: the next one is
     * served. */
    ck_assert_int_eq(cio_task_cancel(t1), 1);
    ck_assert_int_eq(finish(t1), 0);
    ck_assert_int_eq(w1.rc, -ECANCELED);
    ck_assert_int_eq(cio_pg_pool_release(p, c), 0);
    ck_assert_int_eq(finish(t2), 0);
    ck_assert_int_eq(w2.rc, 0);
    ck_assert_int_eq(finish(t3), 0);
    ck_assert_int_eq(w3.rc, 0);

    /* A waiter cancelled in the same turn as the release that hands it the
     * connection: either it keeps what it was given (and gives it back) or
     * the next waiter gets it; it is never lost. */
    ck_assert_int_eq(cio_pg_pool_acquire(p, &c, 10), 0);
    waiter_init(&w1, p, 1, 30);
    waiter_init(&w2, p, 2, 30);
    t1 = spawn(waiter_body, &w1);
    t2 = spawn(waiter_body, &w2);
    settle();
    ck_assert_int_eq(cio_pg_pool_release(p, c), 0);
    cio_task_cancel(t1);
    ck_assert_int_eq(finish(t1), 0);
    ck_assert_int_eq(finish(t2), 0);
    ck_assert(w1.rc == 0 || w1.rc == -ECANCELED);
    ck_assert_int_eq(w2.rc, 0);
    ck_assert_uint_eq(cio_pg_pool_size(p), 1);
    ck_assert_uint_eq(cio_pg_pool_idle(p), 1);

    /* A cancelled task does not even take an idle connection. */
    cio_task_cancel(cio_current_task());
    cio_pg_t *d = NOT_SET;
    ck_assert_int_eq(cio_pg_pool_acquire(p, &d, 10), -ECANCELED);
    ck_assert_ptr_null(d);
    ck_assert_uint_eq(cio_pg_pool_idle(p), 1);
    ck_assert_int_eq(cio_pg_pool_free(p), 0);
    return 0;
}

START_TEST(cancel)
{
    /* The main task cancels itself at the end, and returns 0 all the same. */
    RUN_MAIN(cancel_body, NULL);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Transactions given back, broken connections                               */
/* ------------------------------------------------------------------------ */

/* Terminates backend pid from another connection and waits until the
 * server has let it go. */
static void terminate(int pid)
{
    cio_pg_t *admin = cio_pg_test_connect();
    char text[16];
    snprintf(text, sizeof text, "%d", pid);
    ck_assert_int_eq(cio_pg_test_int(admin, "SELECT pg_terminate_backend($1)::int", text), 1);
    /* pg_terminate_backend only signals: wait (bounded) for the exit. */
    for (int i = 0; i < 500; i++) {
        if (cio_pg_test_int(admin, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", text) == 0)
            break;
        ck_assert_int_eq(cio_sleep(0.01), 0);
    }
    ck_assert_int_eq(cio_pg_test_int(admin, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", text),
                     0);
    ck_assert_int_eq(cio_pg_close(admin), 0);
}

static int tx_body(void *arg, void **result)
{
    (void)arg;
    (void)result;
    char table[64], sql[160];
    snprintf(table, sizeof table, "cio_pool_tx_%ld", (long)getpid());
    cio_pg_pool_t *p = pool_new(cio_pg_test_dsn(), 1);
    cio_pg_t *c, *d;

    /* Given back inside a transaction: rolled back before reuse. */
    ck_assert_int_eq(cio_pg_pool_acquire(p, &c, 10), 0);
    ck_assert_int_eq(cio_pg_begin(c), 0);
    snprintf(sql, sizeof sql, "CREATE TABLE %s (x int)", table);
    ck_assert_int_eq(cio_pg_exec(c, sql), 0);
    ck_assert_int_eq(cio_pg_status(c), CIO_PG_INTRANS);
    ck_assert_int_eq(cio_pg_pool_release(p, c), 0);
    ck_assert_uint_eq(cio_pg_pool_idle(p), 1);
    ck_assert_int_eq(cio_pg_pool_acquire(p, &d, 10), 0);
    ck_assert_ptr_eq(d, c); /* the same connection, rolled back */
    ck_assert_int_eq(cio_pg_status(d), CIO_PG_IDLE);
    ck_assert_int_eq(cio_pg_test_int(d, "SELECT count(*) FROM pg_class WHERE relname = $1", table), 0);

    /* Given back inside a failed transaction: the same. */
    ck_assert_int_eq(cio_pg_begin(d), 0);
    ck_assert_int_eq(cio_pg_exec(d, "SELECT 1/0"), -EREMOTEIO);
    ck_assert_str_eq(cio_pg_error_sqlstate(d), "22012");
    ck_assert_int_eq(cio_pg_status(d), CIO_PG_INERROR);
    ck_assert_int_eq(cio_pg_pool_release(p, d), 0);
    ck_assert_int_eq(cio_pg_pool_acquire(p, &c, 10), 0);
    ck_assert_ptr_eq(d, c);
    ck_assert_int_eq(cio_pg_status(c), CIO_PG_IDLE);
    ck_assert_int_eq(select_int(c, 5), 0);

    /* Given back inside a transaction, then lost: replaced. */
    ck_assert_int_eq(cio_pg_begin(c), 0);
    ck_assert_int_eq(cio_pg_pool_release(p, c), 0);
    int pid = cio_pg_backend_pid(c);
    terminate(pid);
    ck_assert_int_eq(cio_pg_pool_acquire(p, &c, 10), 0);
    ck_assert_int_ne(cio_pg_backend_pid(c), pid);
    ck_assert_int_eq(cio_pg_status(c), CIO_PG_IDLE);
    ck_assert_int_eq(select_int(c, 6), 0);
    ck_assert_int_eq(cio_pg_pool_release(p, c), 0);
    ck_assert_uint_eq(cio_pg_pool_size(p), 1);
    ck_assert_int_eq(cio_pg_pool_free(p), 0);
    return 0;
}

START_TEST(tx) { RUN_MAIN(tx_body, NULL); }
END_TEST

static int broken_body(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_pg_pool_t *p = pool_new(cio_pg_test_dsn(), 2);
    cio_pg_t *c, *d;

    /* Broken while idle: replaced by the acquire that finds it. */
    ck_assert_int_eq(cio_pg_pool_acquire(p, &c, 10), 0);
    int pid = cio_pg_backend_pid(c);
    ck_assert_int_gt(pid, 0);
    ck_assert_int_eq(cio_pg_pool_release(p, c), 0);
    terminate(pid);
    ck_assert_uint_eq(cio_pg_pool_idle(p), 1);
    ck_assert_int_eq(cio_pg_pool_acquire(p, &d, 10), 0);
    ck_assert_int_ne(cio_pg_backend_pid(d), pid);
    ck_assert_int_eq(select_int(d, 9), 0);
    ck_assert_uint_eq(cio_pg_pool_size(p), 1);

    /* Broken while taken: the call gets -ECONNRESET, the release closes
     * it, and the slot serves a new connection. */
    pid = cio_pg_backend_pid(d);
    terminate(pid);
    ck_assert_int_eq(select_int(d, 1), -ECONNRESET);
    ck_assert_int_eq(cio_pg_status(d), CIO_PG_BROKEN);
    ck_assert_int_eq(cio_pg_pool_release(p, d), 0);
    ck_assert_uint_eq(cio_pg_pool_size(p), 0);
    ck_assert_uint_eq(cio_pg_pool_idle(p), 0);
    ck_assert_int_eq(cio_pg_pool_acquire(p, &c, 10), 0);
    ck_assert_int_eq(select_int(c, 2), 0);
    ck_assert_int_eq(cio_pg_pool_release(p, c), 0);
    ck_assert_int_eq(cio_pg_pool_free(p), 0);
    return 0;
}

START_TEST(broken) { RUN_MAIN(broken_body, NULL); }
END_TEST

/* Gives a connection back from a task other than the one that took it. */
typedef struct giver {
    cio_pg_pool_t *p;
    cio_pg_t *c;
    int rc;
} giver_t;

static int giver_body(void *arg, void **result)
{
    (void)result;
    giver_t *g = arg;
    g->rc = cio_pg_pool_release(g->p, g->c);
    return 0;
}

/*
 * A connection given back by another task, inside a transaction: rolled
 * back and reused. A connection lost inside a transaction while a task
 * waits for the pool's only slot: its release wakes the waiter, which gets
 * a new connection (the slot is not stranded).
 */
static int handover_body(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_pg_pool_t *p = pool_new(cio_pg_test_dsn(), 1);
    cio_pg_t *c, *d;
    ck_assert_int_eq(cio_pg_pool_acquire(p, &c, 10), 0);
    ck_assert_int_eq(cio_pg_begin(c), 0);
    giver_t g = {.p = p, .c = c, .rc = 1};
    cio_task_t *t = spawn(giver_body, &g);
    ck_assert_int_eq(finish(t), 0);
    ck_assert_int_eq(g.rc, 0);
    ck_assert_uint_eq(cio_pg_pool_idle(p), 1);
    ck_assert_int_eq(cio_pg_pool_release(p, c), -EINVAL); /* not taken any more */
    ck_assert_int_eq(cio_pg_pool_acquire(p, &d, 10), 0);
    ck_assert_ptr_eq(d, c);
    ck_assert_int_eq(cio_pg_status(d), CIO_PG_IDLE);

    /* Lost inside a transaction, with a waiter queued. */
    ck_assert_int_eq(cio_pg_begin(d), 0);
    waiter_t w;
    waiter_init(&w, p, 7, 30);
    t = spawn(waiter_body, &w);
    settle();
    ck_assert_int_eq(w.rc, 1); /* it waits */
    int pid = cio_pg_backend_pid(d);
    terminate(pid);
    ck_assert_int_eq(select_int(d, 1), -ECONNRESET);
    ck_assert_int_eq(cio_pg_status(d), CIO_PG_BROKEN);
    ck_assert_int_eq(cio_pg_pool_release(p, d), 0);
    ck_assert_int_eq(finish(t), 0);
    ck_assert_int_eq(w.rc, 0);
    ck_assert_uint_eq(cio_pg_pool_size(p), 1);
    ck_assert_uint_eq(cio_pg_pool_idle(p), 1);
    ck_assert_int_eq(cio_pg_pool_acquire(p, &c, 10), 0);
    ck_assert_int_ne(cio_pg_backend_pid(c), pid);
    ck_assert_int_eq(select_int(c, 8), 0);
    ck_assert_int_eq(cio_pg_pool_release(p, c), 0);
    ck_assert_int_eq(cio_pg_pool_free(p), 0);
    return 0;
}

START_TEST(handover) { RUN_MAIN(handover_body, NULL); }
END_TEST

/* ------------------------------------------------------------------------ */
/* The server restarted under a running pool                                 */
/* ------------------------------------------------------------------------ */

#define RESTART_TASKS 8
#define RESTART_MAX 4

typedef struct restart {
    cio_pg_pool_t *p;
    bool restarted;    /* the restart finished */
    int errors;        /* calls that failed while the server was away */
    int ok_after[RESTART_TASKS];
} restart_t;

typedef struct restart_worker {
    restart_t *r;
    int id;
} restart_worker_t;

/* An error a caller may see while the server restarts. */
static bool restart_error(int rc)
{
    return rc == -ECONNRESET || rc == -ENOTCONN || rc == -ECONNREFUSED || rc == -EREMOTEIO;
}

/* Runs queries through the pool until 20 succeeded after the restart. */
static int restart_worker(void *arg, void **result)
{
    (void)result;
    restart_worker_t *rw = arg;
    restart_t *r = rw->r;
    while (r->ok_after[rw->id] < 20) {
        bool after = r->restarted;
        cio_pg_t *c;
        int rc = cio_pg_pool_acquire(r->p, &c, 10);
        if (rc == 0) {
            rc = select_int(c, rw->id);
            ck_assert_int_eq(cio_pg_pool_release(r->p, c), 0);
        }
        if (rc == 0) {
            if (after)
                r->ok_after[rw->id]++;
            continue;
        }
        ck_assert_msg(restart_error(rc), "unexpected %s", cio_strerror(rc));
        r->errors++;
        /* The server is away: retry a little later. */
        ck_assert_int_eq(cio_sleep(0.01), 0);
    }
    return 0;
}

static int restart_job(void *arg, void **result)
{
    (void)arg;
    (void)result;
    return cio_pg_test_restart();
}

static int restart_body(void *arg, void **result)
{
    (void)arg;
    (void)result;
    restart_t r = {.p = pool_new(cio_pg_test_dsn(), RESTART_MAX)};
    cio_pg_t *c;
    ck_assert_int_eq(cio_pg_pool_acquire(r.p, &c, 10), 0);
    int old_pid = cio_pg_backend_pid(c);
    ck_assert_int_eq(cio_pg_pool_release(r.p, c), 0);

    restart_worker_t rw[RESTART_TASKS];
    cio_task_t *t[RESTART_TASKS];
    for (int i = 0; i < RESTART_TASKS; i++) {
        rw[i] = (restart_worker_t){.r = &r, .id = i};
        t[i] = spawn(restart_worker, &rw[i]);
    }
    int rc = cio_to_thread(restart_job, NULL, NULL);
    r.restarted = true;
    if (rc == -ENOTSUP) {
        fprintf(stderr, "test_pg_pool: the server is not pg_server.sh's: restart skipped\n");
        r.restarted = true;
    } else {
        ck_assert_int_eq(rc, 0);
    }
    /* Every worker recovers (no hang: the tcase's timeout bounds it). */
    for (int i = 0; i < RESTART_TASKS; i++)
        ck_assert_int_eq(finish(t[i]), 0);
    ck_assert_uint_le(cio_pg_pool_size(r.p), RESTART_MAX);
    ck_assert_uint_eq(cio_pg_pool_idle(r.p), cio_pg_pool_size(r.p));
    if (rc == 0) {
        fprintf(stderr, "test_pg_pool: %d calls failed during the restart\n", r.errors);
        ck_assert_int_gt(r.errors, 0);
        ck_assert_int_eq(cio_pg_pool_acquire(r.p, &c, 10), 0);
        ck_assert_int_ne(cio_pg_backend_pid(c), old_pid);
        ck_assert_int_eq(cio_pg_pool_release(r.p, c), 0);
    }
    ck_assert_int_eq(cio_pg_pool_free(r.p), 0);
    return 0;
}

START_TEST(restart) { RUN_MAIN(restart_body, NULL); }
END_TEST

/* ------------------------------------------------------------------------ */
/* Connect failures                                                          */
/* ------------------------------------------------------------------------ */

/* A loopback port nothing listens on: one the kernel picked and that is
 * closed again (nobody else binds it in between in practice). */
static int dead_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t len = sizeof a;
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

#define REFUSED_N 4

static int refused_body(void *arg, void **result)
{
    (void)arg;
    (void)result;
    char dsn[128];
    snprintf(dsn, sizeof dsn, "host=127.0.0.1 port=%d dbname=cio", dead_port());
    cio_pg_pool_t *p = pool_new(dsn, 1);
    cio_pg_t *c = NOT_SET;
    /* Each failure frees its slot: the next acquire tries again (and would
     * wait for ever, here until -ETIMEDOUT, if the slot were lost). */
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(cio_pg_pool_acquire(p, &c, 10), -ECONNREFUSED);
        ck_assert_ptr_null(c);
        ck_assert_str_ne(cio_pg_connect_error(), "");
        ck_assert_uint_eq(cio_pg_pool_size(p), 0);
    }
    /* Waiters queued behind a failing connect are not stranded. */
    waiter_t w[REFUSED_N];
    cio_task_t *t[REFUSED_N];
    for (int i = 0; i < REFUSED_N; i++) {
        waiter_init(&w[i], p, i, 10);
        t[i] = spawn(waiter_body, &w[i]);
    }
    for (int i = 0; i < REFUSED_N; i++) {
        ck_assert_int_eq(finish(t[i]), 0);
        ck_assert_int_eq(w[i].rc, -ECONNREFUSED);
    }
    ck_assert_uint_eq(cio_pg_pool_size(p), 0);
    ck_assert_int_eq(cio_pg_pool_free(p), 0);

    /* A server that refuses the login (no such database). */
    char bad[2048];
    snprintf(bad, sizeof bad, "%s dbname=cio_pool_no_such_db", cio_pg_test_dsn());
    if (!strstr(cio_pg_test_dsn(), "://")) {
        p = pool_new(bad, 1);
        ck_assert_int_eq(cio_pg_pool_acquire(p, &c, 10), -ECONNREFUSED);
        ck_assert_ptr_nonnull(strstr(cio_pg_connect_error(), "cio_pool_no_such_db"));
        ck_assert_int_eq(cio_pg_pool_free(p), 0);
    }
    return 0;
}

START_TEST(refused) { RUN_MAIN(refused_body, NULL); }
END_TEST

/* ------------------------------------------------------------------------ */
/* Closing                                                                   */
/* ------------------------------------------------------------------------ */

static int close_body(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_pg_pool_t *p = pool_new(cio_pg_test_dsn(), 2);
    cio_pg_t *c, *d;
    ck_assert_int_eq(cio_pg_pool_acquire(p, &c, 10), 0);
    ck_assert_int_eq(cio_pg_pool_acquire(p, &d, 10), 0);
    waiter_t w1, w2;
    waiter_init(&w1, p, 1, 30);
    waiter_init(&w2, p, 2, INFINITY);
    cio_task_t *t1 = spawn(waiter_body, &w1);
    cio_task_t *t2 = spawn(waiter_body, &w2);
    settle();
    ck_assert_int_eq(w1.rc, 1); /* both wait */
    ck_assert_int_eq(w2.rc, 1);

    /* Close: the waiters get -ESHUTDOWN, taken connections stay usable
     * until given back, and free waits for all of that. */
    ck_assert_int_eq(cio_pg_pool_close(p), 0);
    ck_assert_int_eq(cio_pg_pool_free(p), -EBUSY);
    ck_assert_int_eq(finish(t1), 0);
    ck_assert_int_eq(finish(t2), 0);
    ck_assert_int_eq(w1.rc, -ESHUTDOWN);
    ck_assert_int_eq(w2.rc, -ESHUTDOWN);
    cio_pg_t *e = NOT_SET;
    ck_assert_int_eq(cio_pg_pool_acquire(p, &e, 10), -ESHUTDOWN);
    ck_assert_ptr_null(e);
    ck_assert_uint_eq(cio_pg_pool_size(p), 2);
    ck_assert_int_eq(cio_pg_pool_free(p), -EBUSY);
    ck_assert_int_eq(select_int(c, 3), 0);
    ck_assert_int_eq(cio_pg_pool_release(p, c), 0);
    ck_assert_uint_eq(cio_pg_pool_size(p), 1);
    ck_assert_uint_eq(cio_pg_pool_idle(p), 0);
    ck_assert_int_eq(cio_pg_pool_free(p), -EBUSY);
    ck_assert_int_eq(cio_pg_pool_release(p, d), 0);
    ck_assert_uint_eq(cio_pg_pool_size(p), 0);
    ck_assert_int_eq(cio_pg_pool_close(p), 0);
    ck_assert_int_eq(cio_pg_pool_free(p), 0);

    /* Idle connections are closed at once. */
    p = pool_new(cio_pg_test_dsn(), 3);
    ck_assert_int_eq(cio_pg_pool_acquire(p, &c, 10), 0);
    ck_assert_int_eq(cio_pg_pool_acquire(p, &d, 10), 0);
    ck_assert_int_eq(cio_pg_pool_release(p, c), 0);
    ck_assert_int_eq(cio_pg_pool_release(p, d), 0);
    ck_assert_uint_eq(cio_pg_pool_size(p), 2);
    ck_assert_int_eq(cio_pg_pool_close(p), 0);
    ck_assert_uint_eq(cio_pg_pool_size(p), 0);
    ck_assert_uint_eq(cio_pg_pool_idle(p), 0);
    ck_assert_int_eq(cio_pg_pool_free(p), 0);

    /* A task opening a connection when the pool closes stops at once. */
    p = pool_new(cio_pg_test_dsn(), 1);
    waiter_init(&w1, p, 1, 30);
    t1 = spawn(waiter_body, &w1);
    ck_assert_int_eq(cio_yield(), 0); /* it starts connecting */
    ck_assert_int_eq(cio_pg_pool_close(p), 0);
    ck_assert_int_eq(finish(t1), 0);
    ck_assert_int_eq(w1.rc, -ESHUTDOWN);
    ck_assert_uint_eq(cio_pg_pool_size(p), 0);
    ck_assert_int_eq(cio_pg_pool_free(p), 0);
    return 0;
}

START_TEST(close_pool) { RUN_MAIN(close_body, NULL); }
END_TEST

/* Freed with idle connections (it closes them), from outside the loop. */
static cio_pg_pool_t *outside_pool;

static int outside_body(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_pg_t *c;
    ck_assert_int_eq(cio_pg_pool_acquire(outside_pool, &c, 10), 0);
    ck_assert_int_eq(cio_pg_pool_release(outside_pool, c), 0);
    return 0;
}

START_TEST(free_idle)
{
    outside_pool = pool_new(cio_pg_test_dsn(), 2);
    RUN_MAIN(outside_body, NULL);
    ck_assert_uint_eq(cio_pg_pool_idle(outside_pool), 1);
    ck_assert_int_eq(cio_pg_pool_free(outside_pool), 0);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Allocation failure                                                        */
/* ------------------------------------------------------------------------ */

START_TEST(alloc_fail)
{
    if (!cio_pg_test_malloc_wrapped("test_pg_pool: allocation checks"))
        return;
    for (long n = 1;; n++) {
        cio_pg_pool_t *p = NOT_SET;
        cio_pg_test_alloc_arm(n);
        int rc = cio_pg_pool_new(&p, cio_pg_test_dsn(), NULL);
        if (!cio_pg_test_alloc_disarm()) {
            ck_assert_int_eq(rc, 0);
            ck_assert_int_eq(cio_pg_pool_free(p), 0);
            ck_assert_int_gt(n, 1); /* at least one allocation was failed */
            break;
        }
        ck_assert_int_eq(rc, -ENOMEM);
        ck_assert_ptr_null(p);
    }
}
END_TEST

static Suite *pool_suite(void)
{
    Suite *s = suite_create("pg_pool");
    tcase_add_test(add_tcase(s, "new", POOL_TIMEOUT), new_invalid);
    tcase_add_test(add_tcase(s, "basic", POOL_TIMEOUT), basic);
    tcase_add_test(add_tcase(s, "noalloc", POOL_TIMEOUT), noalloc);
    tcase_add_test(add_tcase(s, "defaults", POOL_TIMEOUT), defaults);
    tcase_add_test(add_tcase(s, "modes", POOL_TIMEOUT), modes);
    tcase_add_test(add_tcase(s, "bound", POOL_TIMEOUT), bound);
    tcase_add_test(add_tcase(s, "fifo", POOL_TIMEOUT), fifo);
    tcase_add_test(add_tcase(s, "deadline", POOL_TIMEOUT), deadline);
    tcase_add_test(add_tcase(s, "cancel", POOL_TIMEOUT), cancel);
    tcase_add_test(add_tcase(s, "tx", POOL_TIMEOUT), tx);
    tcase_add_test(add_tcase(s, "broken", POOL_TIMEOUT), broken);
    tcase_add_test(add_tcase(s, "handover", POOL_TIMEOUT), handover);
    tcase_add_test(add_tcase(s, "restart", 120), restart);
    tcase_add_test(add_tcase(s, "refused", POOL_TIMEOUT), refused);
    tcase_add_test(add_tcase(s, "close", POOL_TIMEOUT), close_pool);
    tcase_add_test(add_tcase(s, "free_idle", POOL_TIMEOUT), free_idle);
    tcase_add_test(add_tcase(s, "alloc", POOL_TIMEOUT), alloc_fail);
    return s;
}

CIO_TEST_MAIN(pool_suite)
