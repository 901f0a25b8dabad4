/*
 * Threads (run under ThreadSanitizer with `ctest -L thread`):
 * cio_run_coroutine_threadsafe and its cfuture waited for from plain threads
 * and from tasks of other loops, timeouts, cancellation from both sides,
 * failures, loops that shut down or close under a submission, many
 * submitting threads, -EDEADLK, the default executor's size and
 * cio_shutdown_default_executor, default-pool jobs that wait for their own
 * loop while it shuts down or closes, a flood of submissions during a
 * shutdown, shared references (cio_cfuture_ref), and allocation failures.
 */
#include "cio_test.h"

#include <pthread.h>
#include <stdatomic.h>

/* ------------------------------------------------------------------------ */
/* A loop running in a thread of its own                                     */
/* ------------------------------------------------------------------------ */

typedef struct lthread {
    pthread_t th;
    cio_loop_t *loop;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool ready;
    int new_rc;
    int close_rc;
} lthread;

static void stop_cb(void *arg)
{
    cio_loop_stop(arg);
}

static void *lthread_main(void *arg)
{
    lthread *lt = arg;
    cio_loop_t *loop;
    int rc = cio_loop_new(&loop);
    pthread_mutex_lock(&lt->mu);
    lt->loop = loop;
    lt->new_rc = rc;
    lt->ready = true;
    pthread_cond_broadcast(&lt->cv);
    pthread_mutex_unlock(&lt->mu);
    if (rc)
        return NULL;
    ck_assert_int_eq(cio_loop_run_forever(loop), 0);
    ck_assert_int_eq(cio_loop_shutdown(loop), 0);
    lt->close_rc = cio_loop_free(loop);
    return NULL;
}

/* Starts a thread running a loop of its own until lthread_stop; returns
 * what cio_loop_new returned there. */
static int lthread_try_start(lthread *lt)
{
    memset(lt, 0, sizeof(*lt));
    pthread_mutex_init(&lt->mu, NULL);
    pthread_cond_init(&lt->cv, NULL);
    ck_assert_int_eq(pthread_create(&lt->th, NULL, lthread_main, lt), 0);
    pthread_mutex_lock(&lt->mu);
    while (!lt->ready)
        pthread_cond_wait(&lt->cv, &lt->mu);
    pthread_mutex_unlock(&lt->mu);
    if (lt->new_rc) {
        pthread_join(lt->th, NULL);
        pthread_mutex_destroy(&lt->mu);
        pthread_cond_destroy(&lt->cv);
    }
    return lt->new_rc;
}

static void lthread_start(lthread *lt)
{
    ck_assert_int_eq(lthread_try_start(lt), 0);
}

/* Stops the loop (its shutdown cancels what is left), joins the thread. */
static void lthread_stop(lthread *lt)
{
    int rc;
    /* -ENOMEM only in the allocation-failure test, where one allocation
     * fails: the next attempt succeeds. */
    while ((rc = cio_call_soon_threadsafe(lt->loop, stop_cb, lt->loop)) == -ENOMEM)
        ;
    ck_assert_int_eq(rc, 0);
    pthread_join(lt->th, NULL);
    ck_assert_int_eq(lt->close_rc, 0);
    pthread_mutex_destroy(&lt->mu);
    pthread_cond_destroy(&lt->cv);
}

/* A one-shot flag threads can wait for. */
typedef struct flag {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool set;
} flag_t;

static void flag_init(flag_t *f)
{
    pthread_mutex_init(&f->mu, NULL);
    pthread_cond_init(&f->cv, NULL);
    f->set = false;
}

static void flag_set(flag_t *f)
{
    pthread_mutex_lock(&f->mu);
    f->set = true;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
}

static void flag_wait(flag_t *f)
{
    pthread_mutex_lock(&f->mu);
    while (!f->set)
        pthread_cond_wait(&f->cv, &f->mu);
    pthread_mutex_unlock(&f->mu);
}

static void flag_destroy(flag_t *f)
{
    pthread_mutex_destroy(&f->mu);
    pthread_cond_destroy(&f->cv);
}

/* ------------------------------------------------------------------------ */
/* Remote bodies                                                             */
/* ------------------------------------------------------------------------ */

/* What a remote task saw: written on its loop's thread, read after the
 * cfuture is done (the completion orders them). */
typedef struct remote {
    double delay;        /* sleeps this long (INFINITY: until cancelled) */
    int status;          /* returned when the sleep succeeds */
    void *result;
    cio_loop_t *ran_on;
    int observed;        /* what the sleep returned */
    atomic_int started;
    flag_t started_flag; /* set once the body runs (if inited) */
    bool use_flag;
} remote_t;

static int remote_body(void *arg, void **result)
{
    remote_t *r = arg;
    r->ran_on = cio_get_running_loop();
    atomic_store(&r->started, 1);
    if (r->use_flag)
        flag_set(&r->started_flag);
    r->observed = cio_sleep(r->delay);
    if (r->observed)
        return r->observed;
    *result = r->result;
    return r->status;
}

static remote_t remote_new(double delay, int status, void *result)
{
    remote_t r = {.delay = delay, .status = status, .result = result};
    return r;
}

/* ------------------------------------------------------------------------ */
/* A plain thread submits and blocks                                         */
/* ------------------------------------------------------------------------ */

START_TEST(thread_submit_and_block)
{
    lthread lt;
    lthread_start(&lt);
    remote_t r = remote_new(D_SHORT, 7, &r);
    cio_cfuture_t *cf = NOT_SET;
    ck_assert_int_eq(cio_run_coroutine_threadsafe(&cf, lt.loop, remote_body, &r), 0);
    ck_assert_ptr_nonnull(cf);
    void *res = NOT_SET;
    double t0 = mono_now();
    ck_assert_int_eq(cio_cfuture_wait(cf, INFINITY, &res), 7);
    double dt = mono_now() - t0;
    ck_assert_ptr_eq(res, &r);
    ck_assert(cio_cfuture_done(cf));
    ck_assert_ptr_eq(r.ran_on, lt.loop);
    ck_assert_int_eq(r.observed, 0);
    ck_assert(dt < HANG_BOUND_S);
    /* Done: any later wait returns the same outcome at once, with any
     * timeout, and cancelling is too late. */
    ck_assert_int_eq(cio_cfuture_wait(cf, 0, &res), 7);
    ck_assert_int_eq(cio_cfuture_wait(cf, -1, NULL), 7);
    ck_assert_int_eq(cio_cfuture_cancel(cf), 0);
    cio_cfuture_release(cf);
    lthread_stop(&lt);
}
END_TEST

START_TEST(bad_arguments)
{
    lthread lt;
    lthread_start(&lt);
    cio_cfuture_t *cf = NOT_SET;
    ck_assert_int_eq(cio_run_coroutine_threadsafe(NULL, lt.loop, remote_body, NULL), -EINVAL);
    ck_assert_int_eq(cio_run_coroutine_threadsafe(&cf, NULL, remote_body, NULL), -EINVAL);
    ck_assert_ptr_null(cf);
    cf = NOT_SET;
    ck_assert_int_eq(cio_run_coroutine_threadsafe(&cf, lt.loop, NULL, NULL), -EINVAL);
    ck_assert_ptr_null(cf);
    void *res = NOT_SET;
    ck_assert_int_eq(cio_cfuture_wait(NULL, 1, &res), -EINVAL);
    ck_assert_ptr_null(res);
    ck_assert_int_eq(cio_cfuture_cancel(NULL), -EINVAL);
    ck_assert(!cio_cfuture_done(NULL));
    cio_cfuture_release(NULL);
    remote_t r = remote_new(0, 0, NULL);
    ck_assert_int_eq(cio_run_coroutine_threadsafe(&cf, lt.loop, remote_body, &r), 0);
    ck_assert_int_eq(cio_cfuture_wait(cf, NAN, NULL), -EINVAL);
    ck_assert_int_eq(cio_cfuture_wait(cf, INFINITY, NULL), 0);
    cio_cfuture_release(cf);
    lthread_stop(&lt);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* A task of loop A awaits a task of loop B; A keeps running                 */
/* ------------------------------------------------------------------------ */

typedef struct crossing {
    atomic_int released; /* set by another task of A while main waits */
    int ticks;           /* that task's iterations */
} crossing_t;

/* On loop B: finishes only once a task of A has released it, which can
 * happen only while A runs during the wait. */
static int remote_needs_a(void *arg, void **result)
{
    crossing_t *x = arg;
    while (!atomic_load(&x->released)) {
        int rc = cio_sleep(0.001);
        if (rc)
            return rc;
    }
    *result = x;
    return 3;
}

static int a_releaser(void *arg, void **result)
{
    (void)result;
    crossing_t *x = arg;
    for (int i = 0; i < 5; i++) {
        ck_assert_int_eq(cio_sleep(0.002), 0);
        x->ticks++;
    }
    atomic_store(&x->released, 1);
    return 0;
}

static int a_main_cross(void *arg, void **result)
{
    (void)arg;
    (void)result;
    lthread lt;
    lthread_start(&lt);
    crossing_t x = {0};
    cio_cfuture_t *cf;
    ck_assert_int_eq(cio_run_coroutine_threadsafe(&cf, lt.loop, remote_needs_a, &x), 0);
    cio_task_t *rel;
    ck_assert_int_eq(cio_spawn(&rel, a_releaser, &x), 0);
    void *res = NULL;
    ck_assert_int_eq(cio_cfuture_wait(cf, HANG_BOUND_S, &res), 3);
    ck_assert_ptr_eq(res, &x);
    ck_assert_int_eq(x.ticks, 5);
    ck_assert_int_eq(cio_await(rel, NULL), 0);
    cio_future_release(rel);
    cio_cfuture_release(cf);
    lthread_stop(&lt);
    return 0;
}

START_TEST(task_awaits_other_loop)
{
    ck_assert_int_eq(cio_run(a_main_cross, NULL), 0);
}
END_TEST

/* Many tasks of A wait for one cfuture, and a plain thread too. */
typedef struct many {
    cio_cfuture_t *cf;
    int woke;
} many_t;

static int many_waiter(void *arg, void **result)
{
    many_t *m = arg;
    ck_assert_int_eq(cio_cfuture_wait(m->cf, INFINITY, result), 5);
    m->woke++;
    return 0;
}

static void *thread_waiter(void *arg)
{
    void *res = NULL;
    ck_assert_int_eq(cio_cfuture_wait(arg, INFINITY, &res), 5);
    return res;
}

static int a_main_many(void *arg, void **result)
{
    (void)arg;
    (void)result;
    lthread lt;
    lthread_start(&lt);
    remote_t r = remote_new(D_SHORT, 5, &r);
    many_t m = {0};
    ck_assert_int_eq(cio_run_coroutine_threadsafe(&m.cf, lt.loop, remote_body, &r), 0);
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, thread_waiter, m.cf), 0);
    cio_task_t *t[8];
    for (int i = 0; i < 8; i++)
        ck_assert_int_eq(cio_spawn(&t[i], many_waiter, &m), 0);
    void *res[8];
    ck_assert_int_eq(cio_gather(t, 8, res, NULL, 0), 0);
    ck_assert_int_eq(m.woke, 8);
    for (int i = 0; i < 8; i++) {
        ck_assert_ptr_eq(res[i], &r);
        cio_future_release(t[i]);
    }
    void *tres;
    pthread_join(th, &tres);
    ck_assert_ptr_eq(tres, &r);
    cio_cfuture_release(m.cf);
    lthread_stop(&lt);
    return 0;
}

START_TEST(many_waiters)
{
    ck_assert_int_eq(cio_run(a_main_many, NULL), 0);
}
END_TEST

/* A task of the target loop itself may wait (an await point there). */
static int same_loop_main(void *arg, void **result)
{
    (void)arg;
    (void)result;
    remote_t r = remote_new(D_SHORT, 9, &r);
    cio_cfuture_t *cf;
    ck_assert_int_eq(cio_run_coroutine_threadsafe(&cf, cio_get_running_loop(), remote_body, &r),
                     0);
    void *res = NULL;
    ck_assert_int_eq(cio_cfuture_wait(cf, HANG_BOUND_S, &res), 9);
    ck_assert_ptr_eq(res, &r);
    cio_cfuture_release(cf);
    return 0;
}

START_TEST(task_awaits_own_loop)
{
    ck_assert_int_eq(cio_run(same_loop_main, NULL), 0);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Timeouts                                                                  */
/* ------------------------------------------------------------------------ */

START_TEST(thread_wait_timeout)
{
    lthread lt;
    lthread_start(&lt);
    remote_t r = remote_new(INFINITY, 0, NULL);
    cio_cfuture_t *cf;
    ck_assert_int_eq(cio_run_coroutine_threadsafe(&cf, lt.loop, remote_body, &r), 0);
    void *res = NOT_SET;
    double t0 = mono_now();
    ck_assert_int_eq(cio_cfuture_wait(cf, D_SHORT, &res), -ETIMEDOUT);
    double dt = mono_now() - t0;
    ck_assert(dt >= D_SHORT);
    ck_assert(dt < HANG_BOUND_S);
    ck_assert_ptr_null(res);
    ck_assert(!cio_cfuture_done(cf));
    ck_assert_int_eq(cio_cfuture_wait(cf, 0, NULL), -ETIMEDOUT);
    /* The remote task is untouched by the timeout; cancel it now. */
    ck_assert_int_eq(cio_cfuture_cancel(cf), 1);
    ck_assert_int_eq(cio_cfuture_cancel(cf), 1);
    ck_assert_int_eq(cio_cfuture_wait(cf, INFINITY, &res), -ECANCELED);
    ck_assert_int_eq(r.observed, -ECANCELED);
    cio_cfuture_release(cf);
    lthread_stop(&lt);
}
END_TEST

typedef struct tmo {
    lthread lt;
    remote_t r;
} tmo_t;

static int task_timeout_main(void *arg, void **result)
{
    (void)arg;
    (void)result;
    tmo_t t;
    lthread_start(&t.lt);
    t.r = remote_new(INFINITY, 0, NULL);
    cio_cfuture_t *cf;
    ck_assert_int_eq(cio_run_coroutine_threadsafe(&cf, t.lt.loop, remote_body, &t.r), 0);
    int64_t t0 = loop_ns();
    ck_assert_int_eq(cio_cfuture_wait(cf, D_SHORT, NULL), -ETIMEDOUT);
    ck_assert(loop_ns() - t0 >= NS_SHORT);
    ck_assert(!cio_cfuture_done(cf));
    /* An enclosing deadline gives -ETIMEDOUT too. */
    cio_scope_t sc;
    ck_assert_int_eq(cio_scope_enter(&sc, D_SHORT, 0), 0);
    ck_assert_int_eq(cio_cfuture_wait(cf, INFINITY, NULL), -ETIMEDOUT);
    ck_assert_int_eq(cio_scope_exit(&sc), -ETIMEDOUT);
    ck_assert(!cio_cfuture_done(cf));
    ck_assert_int_eq(cio_cfuture_cancel(cf), 1);
    ck_assert_int_eq(cio_cfuture_wait(cf, INFINITY, NULL), -ECANCELED);
    cio_cfuture_release(cf);
    lthread_stop(&t.lt);
    return 0;
}

START_TEST(task_wait_timeout)
{
    ck_assert_int_eq(cio_run(task_timeout_main, NULL), 0);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Cancellation                                                              */
/* ------------------------------------------------------------------------ */

typedef struct cwait {
    cio_cfuture_t *cf;
    int rc;
} cwait_t;

static int cancel_waiter(void *arg, void **result)
{
    (void)result;
    cwait_t *w = arg;
    w->rc = cio_cfuture_wait(w->cf, INFINITY, NULL);
    return w->rc;
}

static int cancel_waiting_main(void *arg, void **result)
{
    (void)arg;
    (void)result;
    lthread lt;
    lthread_start(&lt);
    remote_t r = remote_new(INFINITY, 0, NULL);
    r.use_flag = true;
    flag_init(&r.started_flag);
    cwait_t w = {0};
    ck_assert_int_eq(cio_run_coroutine_threadsafe(&w.cf, lt.loop, remote_body, &r), 0);
    cio_task_t *t;
    ck_assert_int_eq(cio_spawn(&t, cancel_waiter, &w), 0);
    ck_assert_int_eq(cio_sleep(D_SHORT), 0); /* t is waiting */
    ck_assert_int_eq(cio_task_cancel(t), 1);
    ck_assert_int_eq(cio_await(t, NULL), -ECANCELED);
    ck_assert_int_eq(w.rc, -ECANCELED);
    /* The waiter's cancellation did not reach the remote task. */
    flag_wait(&r.started_flag);
    ck_assert(!cio_cfuture_done(w.cf));
    ck_assert_int_eq(cio_cfuture_wait(w.cf, D_SHORT, NULL), -ETIMEDOUT);
    /* Cancelling the cfuture does. */
    ck_assert_int_eq(cio_cfuture_cancel(w.cf), 1);
    ck_assert_int_eq(cio_cfuture_wait(w.cf, INFINITY, NULL), -ECANCELED);
    ck_assert(cio_cfuture_done(w.cf));
    ck_assert_int_eq(r.observed, -ECANCELED);
    cio_future_release(t);
    cio_cfuture_release(w.cf);
    lthread_stop(&lt);
    flag_destroy(&r.started_flag);
    return 0;
}

START_TEST(cancel_waiting_task)
{
    ck_assert_int_eq(cio_run(cancel_waiting_main, NULL), 0);
}
END_TEST

/* Cancellation racing the completion: the waiter either gets the result or
 * -ECANCELED, never hangs, never leaves a node behind. */
typedef struct race {
    cio_cfuture_t *cf;
    int rc;
} race_t;

static int race_waiter(void *arg, void **result)
{
    (void)result;
    race_t *r = arg;
    r->rc = cio_cfuture_wait(r->cf, INFINITY, NULL);
    return 0;
}

static int quick_body(void *arg, void **result)
{
    (void)arg;
    (void)result;
    return 1;
}

static int race_main(void *arg, void **result)
{
    (void)arg;
    (void)result;
    lthread lt;
    lthread_start(&lt);
    for (int i = 0; i < 200; i++) {
        race_t r = {0};
        ck_assert_int_eq(cio_run_coroutine_threadsafe(&r.cf, lt.loop, quick_body, NULL), 0);
        cio_task_t *t;
        ck_assert_int_eq(cio_spawn(&t, race_waiter, &r), 0);
        ck_assert_int_eq(cio_yield(), 0);
        cio_task_cancel(t);
        ck_assert_int_eq(cio_await(t, NULL), 0);
        ck_assert(r.rc == 1 || r.rc == -ECANCELED);
        ck_assert_int_eq(cio_cfuture_wait(r.cf, INFINITY, NULL), 1);
        cio_future_release(t);
        cio_cfuture_release(r.cf);
    }
    lthread_stop(&lt);
    return 0;
}

START_TEST(cancel_races_completion)
{
    ck_assert_int_eq(cio_run(race_main, NULL), 0);
}
END_TEST

/* A loop thread blocked inside a task cannot deliver: a submission made
 * meanwhile is still queued when it is cancelled. */
typedef struct blocker {
    flag_t entered, go;
} blocker_t;

static int blocking_body(void *arg, void **result)
{
    (void)result;
    blocker_t *b = arg;
    flag_set(&b->entered);
    flag_wait(&b->go); /* blocks the loop's thread on purpose */
    return 0;
}

START_TEST(cancel_before_start)
{
    lthread lt;
    lthread_start(&lt);
    blocker_t b;
    flag_init(&b.entered);
    flag_init(&b.go);
    cio_cfuture_t *cb;
    ck_assert_int_eq(cio_run_coroutine_threadsafe(&cb, lt.loop, blocking_body, &b), 0);
    flag_wait(&b.entered);
    remote_t r = remote_new(INFINITY, 0, NULL);
    cio_cfuture_t *cf;
    ck_assert_int_eq(cio_run_coroutine_threadsafe(&cf, lt.loop, remote_body, &r), 0);
    ck_assert_int_eq(cio_cfuture_cancel(cf), 1);
    ck_assert(!cio_cfuture_done(cf));
    flag_set(&b.go);
    ck_assert_int_eq(cio_cfuture_wait(cb, INFINITY, NULL), 0);
    /* The body still ran, with every await point cancelled. */
    ck_assert_int_eq(cio_cfuture_wait(cf, INFINITY, NULL), -ECANCELED);
    ck_assert_int_eq(atomic_load(&r.started), 1);
    ck_assert_int_eq(r.observed, -ECANCELED);
    cio_cfuture_release(cf);
    cio_cfuture_release(cb);
    lthread_stop(&lt);
    flag_destroy(&b.entered);
    flag_destroy(&b.go);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Failures, shutdown, closed loops                                           */
/* ------------------------------------------------------------------------ */

START_TEST(remote_fails)
{
    lthread lt;
    lthread_start(&lt);
    remote_t r = remote_new(0, -EIO, NULL);
    cio_cfuture_t *cf;
    ck_assert_int_eq(cio_run_coroutine_threadsafe(&cf, lt.loop, remote_body, &r), 0);
    void *res = NOT_SET;
    ck_assert_int_eq(cio_cfuture_wait(cf, INFINITY, &res), -EIO);
    ck_assert_ptr_null(res);
    ck_assert(cio_cfuture_done(cf));
    cio_cfuture_release(cf);
    lthread_stop(&lt);
}
END_TEST

START_TEST(shutdown_cancels_pending)
{
    lthread lt;
    lthread_start(&lt);
    remote_t r = remote_new(INFINITY, 0, NULL);
    r.use_flag = true;
    flag_init(&r.started_flag);
    cio_cfuture_t *cf;
    ck_assert_int_eq(cio_run_coroutine_threadsafe(&cf, lt.loop, remote_body, &r), 0);
    flag_wait(&r.started_flag);
    /* The loop stops; its shutdown cancels the pending task. */
    lthread_stop(&lt);
    ck_assert_int_eq(cio_cfuture_wait(cf, INFINITY, NULL), -ECANCELED);
    ck_assert_int_eq(r.observed, -ECANCELED);
    cio_cfuture_release(cf);
    flag_destroy(&r.started_flag);
}
END_TEST

START_TEST(closed_loop)
{
    cio_loop_t *loop;
    ck_assert_int_eq(cio_loop_new(&loop), 0);
    ck_assert_int_eq(cio_loop_close(loop), 0);
    cio_cfuture_t *cf = NOT_SET;
    ck_assert_int_eq(cio_run_coroutine_threadsafe(&cf, loop, remote_body, NULL), -ESHUTDOWN);
    ck_assert_ptr_null(cf);
    ck_assert_int_eq(cio_loop_free(loop), 0);
}
END_TEST

/* A loop that stopped running closes with a submission still queued: the
 * close delivers it, and the cfuture ends -ESHUTDOWN without running fn. */
static void *closer_main(void *arg)
{
    lthread *lt = arg;
    cio_loop_t *loop;
    ck_assert_int_eq(cio_loop_new(&loop), 0);
    pthread_mutex_lock(&lt->mu);
    lt->loop = loop;
    lt->ready = true;
    pthread_cond_broadcast(&lt->cv);
    pthread_mutex_unlock(&lt->mu);
    ck_assert_int_eq(cio_loop_run_forever(loop), 0);
    /* Wait for the second submission (lt->ready cleared by the test). */
    pthread_mutex_lock(&lt->mu);
    while (lt->ready)
        pthread_cond_wait(&lt->cv, &lt->mu);
    pthread_mutex_unlock(&lt->mu);
    lt->close_rc = cio_loop_free(loop);
    return NULL;
}

static int stop_body(void *arg, void **result)
{
    (void)result;
    cio_loop_stop(arg);
    return 0;
}

START_TEST(close_with_queued_submission)
{
    lthread lt;
    memset(&lt, 0, sizeof(lt));
    pthread_mutex_init(&lt.mu, NULL);
    pthread_cond_init(&lt.cv, NULL);
    ck_assert_int_eq(pthread_create(&lt.th, NULL, closer_main, &lt), 0);
    pthread_mutex_lock(&lt.mu);
    while (!lt.ready)
        pthread_cond_wait(&lt.cv, &lt.mu);
    pthread_mutex_unlock(&lt.mu);
    cio_cfuture_t *first, *second;
    ck_assert_int_eq(cio_run_coroutine_threadsafe(&first, lt.loop, stop_body, lt.loop), 0);
    ck_assert_int_eq(cio_cfuture_wait(first, INFINITY, NULL), 0);
    remote_t r = remote_new(0, 0, NULL);
    /* The loop may still be finishing its last iteration: then the post
     * runs there; either way the second cfuture ends. */
    ck_assert_int_eq(cio_run_coroutine_threadsafe(&second, lt.loop, remote_body, &r), 0);
    pthread_mutex_lock(&lt.mu);
    lt.ready = false;
    pthread_cond_broadcast(&lt.cv);
    pthread_mutex_unlock(&lt.mu);
    int rc = cio_cfuture_wait(second, INFINITY, NULL);
    ck_assert(rc == -ESHUTDOWN || rc == 0);
    ck_assert_int_eq(rc == 0, atomic_load(&r.started));
    pthread_join(lt.th, NULL);
    ck_assert_int_eq(lt.close_rc, 0);
    cio_cfuture_release(first);
    cio_cfuture_release(second);
    pthread_mutex_destroy(&lt.mu);
    pthread_cond_destroy(&lt.cv);
}
END_TEST

/* A loop that never runs is closed with a submission queued. */
START_TEST(close_never_run)
{
    cio_loop_t *loop;
    ck_assert_int_eq(cio_loop_new(&loop), 0);
    remote_t r = remote_new(0, 0, NULL);
    cio_cfuture_t *cf;
    ck_assert_int_eq(cio_run_coroutine_threadsafe(&cf, loop, remote_body, &r), 0);
    cio_cfuture_t *cf2;
    ck_assert_int_eq(cio_run_coroutine_threadsafe(&cf2, loop, remote_body, &r), 0);
    cio_cfuture_release(cf2);
    ck_assert_int_eq(cio_loop_free(loop), 0);
    ck_assert_int_eq(cio_cfuture_wait(cf, 0, NULL), -ESHUTDOWN);
    ck_assert_int_eq(atomic_load(&r.started), 0);
    cio_cfuture_release(cf);
}
END_TEST

/* Submissions racing a cio_run that ends: each ends, never hangs. */
typedef struct racer {
    atomic_int submitted; /* the main task ends after 60 */
    cio_loop_t *loop;
} racer_t;

static int racer_main(void *arg, void **result)
{
    (void)result;
    racer_t *rc = arg;
    while (atomic_load(&rc->submitted) < 60)
        ck_assert_int_eq(cio_sleep(0.001), 0);
    return 0;
}

static void *racer_submit(void *arg)
{
    racer_t *rc = arg;
    for (;;) {
        remote_t r = remote_new(D_SHORT, 0, NULL);
        cio_cfuture_t *cf;
        int s = cio_run_coroutine_threadsafe(&cf, rc->loop, remote_body, &r);
        if (s == -ESHUTDOWN)
            break;
        ck_assert_int_eq(s, 0);
        atomic_fetch_add(&rc->submitted, 1);
        s = cio_cfuture_wait(cf, INFINITY, NULL);
        /* -ESHUTDOWN: delivered once the shutdown had begun, not run. */
        ck_assert(s == 0 || s == -ECANCELED || s == -ESHUTDOWN);
        cio_cfuture_release(cf);
    }
    return NULL;
}

START_TEST(submissions_race_the_end)
{
    /* The submitters stop at -ESHUTDOWN, after the close: the loop is
     * freed only once they have been joined. */
    cio_runner_t *run;
    ck_assert_int_eq(cio_runner_new(&run, NULL), 0);
    racer_t rc = {.loop = cio_runner_get_loop(run)};
    pthread_t th[3];
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, racer_submit, &rc), 0);
    ck_assert_int_eq(cio_runner_run(run, racer_main, &rc, NULL), 0);
    ck_assert_int_eq(cio_loop_shutdown(cio_runner_get_loop(run)), 0);
    ck_assert_int_eq(cio_loop_close(cio_runner_get_loop(run)), 0);
    for (int i = 0; i < 3; i++)
        pthread_join(th[i], NULL);
    ck_assert_int_eq(cio_runner_close(run), 0);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Many submitting threads                                                   */
/* ------------------------------------------------------------------------ */

#define SUBMITTERS 4
#define PER_THREAD 2000

typedef struct stress {
    lthread lt;
    long count;          /* the loop's thread only */
    atomic_int errors;
} stress_t;

typedef struct sitem {
    stress_t *s;
    long idx;
} sitem_t;

static int count_body(void *arg, void **result)
{
    sitem_t *it = arg;
    it->s->count++;
    if (it->idx % 3 == 0) {
        int rc = cio_yield();
        if (rc)
            return rc;
    }
    *result = (void *)(intptr_t)it->idx;
    return 0;
}

typedef struct sub {
    stress_t *s;
    int base;
    sitem_t items[PER_THREAD];
} sub_t;

static void *submitter(void *arg)
{
    sub_t *sb = arg;
    cio_cfuture_t *cfs[64];
    for (int i = 0; i < PER_THREAD; i += 64) {
        int n = PER_THREAD - i < 64 ? PER_THREAD - i : 64;
        for (int k = 0; k < n; k++) {
            sitem_t *it = &sb->items[i + k];
            it->s = sb->s;
            it->idx = sb->base + i + k;
            if (cio_run_coroutine_threadsafe(&cfs[k], sb->s->lt.loop, count_body, it))
                atomic_fetch_add(&sb->s->errors, 1);
        }
        /* Every other one is released before completion; the others are
         * waited for, in reverse order. */
        for (int k = n - 1; k >= 0; k--) {
            if (k % 2) {
                void *res = NULL;
                if (cio_cfuture_wait(cfs[k], INFINITY, &res) != 0 ||
                    (intptr_t)res != sb->items[i + k].idx)
                    atomic_fetch_add(&sb->s->errors, 1);
            }
            cio_cfuture_release(cfs[k]);
        }
    }
    return NULL;
}

static int read_count(void *arg, void **result)
{
    (void)result;
    return (int)((stress_t *)arg)->count;
}

START_TEST(stress_submitters)
{
    static stress_t s;
    static sub_t subs[SUBMITTERS];
    lthread_start(&s.lt);
    pthread_t th[SUBMITTERS];
    for (int i = 0; i < SUBMITTERS; i++) {
        subs[i].s = &s;
        subs[i].base = i * PER_THREAD;
        ck_assert_int_eq(pthread_create(&th[i], NULL, submitter, &subs[i]), 0);
    }
    for (int i = 0; i < SUBMITTERS; i++)
        pthread_join(th[i], NULL);
    ck_assert_int_eq(atomic_load(&s.errors), 0);
    /* The released ones may still be finishing: a last submission runs
     * after every earlier delivery; yields are FIFO, so count after one
     * more round. */
    cio_cfuture_t *cf;
    ck_assert_int_eq(cio_run_coroutine_threadsafe(&cf, s.lt.loop, read_count, &s), 0);
    int n = cio_cfuture_wait(cf, INFINITY, NULL);
    cio_cfuture_release(cf);
    ck_assert_int_eq(n, SUBMITTERS * PER_THREAD);
    lthread_stop(&s.lt);
}
END_TEST

/* Released before completion: nothing leaks (ASan), the task still runs. */
START_TEST(release_before_completion)
{
    lthread lt;
    lthread_start(&lt);
    remote_t r = remote_new(D_SHORT, 0, NULL);
    r.use_flag = true;
    flag_init(&r.started_flag);
    cio_cfuture_t *cf;
    ck_assert_int_eq(cio_run_coroutine_threadsafe(&cf, lt.loop, remote_body, &r), 0);
    cio_cfuture_release(cf);
    flag_wait(&r.started_flag);
    /* Another one released while still queued, and one never started
     * (the loop is stopped and shut down right away). */
    remote_t r2 = remote_new(INFINITY, 0, NULL);
    ck_assert_int_eq(cio_run_coroutine_threadsafe(&cf, lt.loop, remote_body, &r2), 0);
    cio_cfuture_release(cf);
    lthread_stop(&lt);
    flag_destroy(&r.started_flag);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* -EDEADLK                                                                  */
/* ------------------------------------------------------------------------ */

typedef struct dl {
    cio_cfuture_t *cf;
    int rc;
} dl_t;

static void deadlock_cb(void *arg)
{
    dl_t *d = arg;
    d->rc = cio_cfuture_wait(d->cf, INFINITY, NULL);
}

static int deadlock_main(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_loop_t *loop = cio_get_running_loop();
    remote_t r = remote_new(0, 4, NULL);
    dl_t d = {0};
    ck_assert_int_eq(cio_run_coroutine_threadsafe(&d.cf, loop, remote_body, &r), 0);
    /* A callback of the target loop would block it. */
    ck_assert_int_eq(cio_call_soon(loop, NULL, deadlock_cb, &d), 0);
    ck_assert_int_eq(cio_sleep(0), 0);
    ck_assert_int_eq(d.rc, -EDEADLK);
    /* A task of another loop of the same thread could not run it either:
     * a nested loop is not possible, so this is the task of the target
     * loop, which may wait. */
    ck_assert_int_eq(cio_cfuture_wait(d.cf, HANG_BOUND_S, NULL), 4);
    /* Done: no deadlock any more, from anywhere. */
    deadlock_cb(&d);
    ck_assert_int_eq(d.rc, 4);
    cio_cfuture_release(d.cf);
    return 0;
}

static int own_loop_waiter(void *arg, void **result)
{
    return cio_cfuture_wait(arg, HANG_BOUND_S, result);
}

START_TEST(deadlock_detected)
{
    /* The loop's own thread, outside the loop: nobody would run it. */
    cio_loop_t *loop;
    ck_assert_int_eq(cio_loop_new(&loop), 0);
    remote_t r = remote_new(0, 4, NULL);
    cio_cfuture_t *cf;
    ck_assert_int_eq(cio_run_coroutine_threadsafe(&cf, loop, remote_body, &r), 0);
    ck_assert_int_eq(cio_cfuture_wait(cf, INFINITY, NULL), -EDEADLK);
    ck_assert_int_eq(cio_cfuture_wait(cf, 0, NULL), -ETIMEDOUT); /* a look is harmless */
    ck_assert(!cio_cfuture_done(cf));
    /* Running the loop delivers it; a task of the loop may wait. */
    cio_task_t *t;
    ck_assert_int_eq(cio_spawn_ex(&t, loop, own_loop_waiter, cf, NULL), 0);
    ck_assert_int_eq(cio_loop_run_until_complete(loop, t, NULL), 4);
    cio_future_release(t);
    ck_assert(cio_cfuture_done(cf));
    ck_assert_int_eq(cio_cfuture_wait(cf, INFINITY, NULL), 4);
    ck_assert_int_eq(cio_loop_shutdown(loop), 0);
    ck_assert_int_eq(cio_loop_free(loop), 0);
    cio_cfuture_release(cf);
    ck_assert_int_eq(cio_run(deadlock_main, NULL), 0);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* The default executor                                                      */
/* ------------------------------------------------------------------------ */

typedef struct pool_count {
    atomic_int running, max, done;
    double hold;
} pool_count_t;

static int counted_job(void *arg, void **result)
{
    pool_count_t *p = arg;
    int now = atomic_fetch_add(&p->running, 1) + 1;
    int m = atomic_load(&p->max);
    while (now > m && !atomic_compare_exchange_weak(&p->max, &m, now))
        ;
    struct timespec ts = {0, (long)(p->hold * 1e9)};
    nanosleep(&ts, NULL);
    atomic_fetch_sub(&p->running, 1);
    atomic_fetch_add(&p->done, 1);
    *result = p;
    return 0;
}

static int to_thread_task(void *arg, void **result)
{
    return cio_to_thread(counted_job, arg, result);
}

static int size_main(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_loop_t *loop = cio_get_running_loop();
    cio_executor_t *ex;
    ck_assert_int_eq(cio_executor_new(&ex, 2), 0);
    ck_assert_int_eq(cio_loop_set_default_executor(NULL, ex), -EINVAL);
    ck_assert_int_eq(cio_loop_set_default_executor(loop, NULL), -EINVAL);
    ck_assert_int_eq(cio_loop_set_default_executor(loop, ex), 0);
    ck_assert_int_eq(cio_loop_set_default_executor(loop, ex), -EINVAL);
    pool_count_t p = {.hold = 0.02};
    cio_task_t *t[8];
    for (int i = 0; i < 8; i++)
        ck_assert_int_eq(cio_spawn(&t[i], to_thread_task, &p), 0);
    ck_assert_int_eq(cio_gather(t, 8, NULL, NULL, 0), 0);
    for (int i = 0; i < 8; i++)
        cio_future_release(t[i]);
    ck_assert_int_eq(atomic_load(&p.done), 8);
    ck_assert_int_eq(atomic_load(&p.max), 2);
    /* Replacing an idle default pool shuts the old one down. */
    cio_executor_t *ex3;
    ck_assert_int_eq(cio_executor_new(&ex3, 3), 0);
    ck_assert_int_eq(cio_loop_set_default_executor(loop, ex3), 0);
    atomic_store(&p.max, 0);
    atomic_store(&p.done, 0);
    for (int i = 0; i < 8; i++)
        ck_assert_int_eq(cio_spawn(&t[i], to_thread_task, &p), 0);
    ck_assert_int_eq(cio_gather(t, 8, NULL, NULL, 0), 0);
    for (int i = 0; i < 8; i++)
        cio_future_release(t[i]);
    ck_assert_int_eq(atomic_load(&p.max), 3);
    /* Not while the current one has work. */
    cio_future_t *f;
    ck_assert_int_eq(cio_run_in_executor(&f, NULL, NULL, counted_job, &p), 0);
    cio_executor_t *ex4;
    ck_assert_int_eq(cio_executor_new(&ex4, 1), 0);
    ck_assert_int_eq(cio_loop_set_default_executor(loop, ex4), -EBUSY);
    ck_assert_int_eq(cio_await(f, NULL), 0);
    cio_future_release(f);
    cio_executor_shutdown(ex4, true);
    return 0;
}

START_TEST(default_executor_size)
{
    ck_assert_int_eq(cio_run(size_main, NULL), 0);
}
END_TEST

typedef struct gate_job {
    flag_t started, go;
    atomic_int finished;
} gate_job_t;

static int gated_job(void *arg, void **result)
{
    (void)result;
    gate_job_t *g = arg;
    flag_set(&g->started);
    flag_wait(&g->go);
    atomic_fetch_add(&g->finished, 1);
    return 0;
}

static int gated_task(void *arg, void **result)
{
    return cio_to_thread(gated_job, arg, result);
}

static int ticker(void *arg, void **result)
{
    (void)result;
    int *ticks = arg;
    for (;;) {
        int rc = cio_sleep(0.002);
        if (rc)
            return rc;
        ++*ticks;
    }
}

typedef struct opener {
    gate_job_t *g;
    double delay;
} opener_t;

/* A plain thread that opens the gate after a delay. */
static void *open_later(void *arg)
{
    opener_t *o = arg;
    struct timespec ts = {0, (long)(o->delay * 1e9)};
    nanosleep(&ts, NULL);
    flag_set(&o->g->go);
    return NULL;
}

static int shutdown_main(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_loop_t *loop = cio_get_running_loop();
    cio_executor_t *ex;
    ck_assert_int_eq(cio_executor_new(&ex, 1), 0);
    ck_assert_int_eq(cio_loop_set_default_executor(loop, ex), 0);
    gate_job_t g = {0};
    flag_init(&g.started);
    flag_init(&g.go);
    cio_task_t *running, *queued, *tick;
    ck_assert_int_eq(cio_spawn(&running, gated_task, &g), 0);
    ck_assert_int_eq(cio_spawn(&queued, gated_task, &g), 0);
    int ticks = 0;
    ck_assert_int_eq(cio_spawn(&tick, ticker, &ticks), 0);
    ck_assert_int_eq(cio_sleep(0), 0); /* both submitted */
    flag_wait(&g.started);
    /* The job is running; the gate opens 100 ms from now, during the
     * shutdown, which must wait for it without blocking the loop. */
    pthread_t th;
    opener_t o = {&g, 0.1};
    ck_assert_int_eq(pthread_create(&th, NULL, open_later, &o), 0);
    ck_assert_int_eq(cio_shutdown_default_executor(INFINITY), 0);
    ck_assert_int_eq(atomic_load(&g.finished), 2);
    ck_assert_int_gt(ticks, 0);
    /* Both ran, the queued one too (executor.shutdown(wait=True)): its
     * cio_to_thread, which nobody cancelled, returns what fn returned. */
    ck_assert_int_eq(cio_await(running, NULL), 0);
    ck_assert_int_eq(cio_await(queued, NULL), 0);
    /* From now on the default pool refuses. */
    ck_assert_int_eq(cio_to_thread(gated_job, &g, NULL), -ESHUTDOWN);
    cio_future_t *f = NOT_SET;
    ck_assert_int_eq(cio_run_in_executor(&f, NULL, NULL, gated_job, &g), -ESHUTDOWN);
    ck_assert_ptr_null(f);
    cio_executor_t *ex2;
    ck_assert_int_eq(cio_executor_new(&ex2, 1), 0);
    ck_assert_int_eq(cio_loop_set_default_executor(loop, ex2), -ESHUTDOWN);
    cio_executor_shutdown(ex2, true);
    /* Again: nothing runs, 0 at once. */
    ck_assert_int_eq(cio_shutdown_default_executor(INFINITY), 0);
    cio_task_cancel(tick);
    ck_assert_int_eq(cio_await(tick, NULL), -ECANCELED);
    cio_future_release(running);
    cio_future_release(queued);
    cio_future_release(tick);
    pthread_join(th, NULL);
    flag_destroy(&g.started);
    flag_destroy(&g.go);
    return 0;
}

START_TEST(shutdown_default_executor_waits)
{
    ck_assert_int_eq(cio_run(shutdown_main, NULL), 0);
}
END_TEST

static int shutdown_timeout_main(void *arg, void **result)
{
    (void)arg;
    (void)result;
    gate_job_t *g = arg;
    cio_task_t *running;
    ck_assert_int_eq(cio_spawn(&running, gated_task, g), 0);
    ck_assert_int_eq(cio_sleep(0), 0);
    flag_wait(&g->started);
    int64_t t0 = loop_ns();
    ck_assert_int_eq(cio_shutdown_default_executor(D_SHORT), -ETIMEDOUT);
    ck_assert(loop_ns() - t0 >= NS_SHORT);
    ck_assert_int_eq(cio_to_thread(gated_job, g, NULL), -ESHUTDOWN);
    /* Cancellation: -ECANCELED, the pool stays shut down. */
    cio_scope_t sc;
    cio_scope_enter(&sc, INFINITY, 0);
    cio_scope_cancel(&sc);
    ck_assert_int_eq(cio_shutdown_default_executor(INFINITY), -ECANCELED);
    cio_scope_exit(&sc);
    ck_assert_int_eq(cio_shutdown_default_executor(NAN), -EINVAL);
    /* The job still runs; the loop's shutdown waits for it. */
    flag_set(&g->go);
    ck_assert_int_eq(cio_await(running, NULL), 0);
    cio_future_release(running);
    return 0;
}

START_TEST(shutdown_default_executor_timeout)
{
    gate_job_t g = {0};
    flag_init(&g.started);
    flag_init(&g.go);
    ck_assert_int_eq(cio_run(shutdown_timeout_main, &g), 0);
    ck_assert_int_eq(atomic_load(&g.finished), 1);
    ck_assert_int_eq(cio_shutdown_default_executor(0), -EPERM);
    flag_destroy(&g.started);
    flag_destroy(&g.go);
}
END_TEST

/* No default pool yet: the shutdown records itself. */
static int shutdown_unused_main(void *arg, void **result)
{
    (void)arg;
    (void)result;
    ck_assert_int_eq(cio_shutdown_default_executor(INFINITY), 0);
    ck_assert_int_eq(cio_to_thread(counted_job, NULL, NULL), -ESHUTDOWN);
    return 0;
}

START_TEST(shutdown_default_executor_unused)
{
    ck_assert_int_eq(cio_run(shutdown_unused_main, NULL), 0);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Shutdown and close with default-pool jobs that wait for their own loop   */
/* ------------------------------------------------------------------------ */

/* A fire-and-forget job of the default pool that submits a task to its own
 * loop and blocks until it has ended, and a job queued behind it on a
 * one-thread pool. */
typedef struct selfsub {
    cio_loop_t *loop;
    flag_t started, go;
    bool go_in_main;     /* the main task opens the gate as it returns */
    atomic_int submit_rc, wait_rc, remote_ran, queued_ran;
} selfsub_t;

static void selfsub_init(selfsub_t *s)
{
    memset(s, 0, sizeof(*s));
    flag_init(&s->started);
    flag_init(&s->go);
    atomic_init(&s->submit_rc, 1);
    atomic_init(&s->wait_rc, 1);
}

static void selfsub_destroy(selfsub_t *s)
{
    flag_destroy(&s->started);
    flag_destroy(&s->go);
}

static int mark_ran(void *arg, void **result)
{
    (void)result;
    atomic_store(&((selfsub_t *)arg)->remote_ran, 1);
    return 0;
}

static int selfsub_job(void *arg, void **result)
{
    (void)result;
    selfsub_t *s = arg;
    flag_set(&s->started);
    flag_wait(&s->go);
    cio_cfuture_t *cf;
    int rc = cio_run_coroutine_threadsafe(&cf, s->loop, mark_ran, s);
    atomic_store(&s->submit_rc, rc);
    if (!rc) {
        atomic_store(&s->wait_rc, cio_cfuture_wait(cf, INFINITY, NULL));
        cio_cfuture_release(cf);
    }
    return 0;
}

static int queued_job(void *arg, void **result)
{
    (void)result;
    atomic_fetch_add(&((selfsub_t *)arg)->queued_ran, 1);
    return 0;
}

/* Starts both jobs, fire and forget, and returns once the first runs. */
static int selfsub_main(void *arg, void **result)
{
    (void)result;
    selfsub_t *s = arg;
    s->loop = cio_get_running_loop(); /* the job reads it after the gate */
    cio_executor_t *ex;
    ck_assert_int_eq(cio_executor_new(&ex, 1), 0);
    ck_assert_int_eq(cio_loop_set_default_executor(cio_get_running_loop(), ex), 0);
    cio_future_t *f;
    ck_assert_int_eq(cio_run_in_executor(&f, NULL, NULL, selfsub_job, s), 0);
    cio_future_release(f);
    ck_assert_int_eq(cio_run_in_executor(&f, NULL, NULL, queued_job, s), 0);
    cio_future_release(f);
    flag_wait(&s->started); /* blocks this loop: nothing else runs on it */
    if (s->go_in_main)
        flag_set(&s->go);
    return 0;
}

/* What a task run after cio_loop_shutdown sees: the default pool is shut
 * down for good, nothing makes a new one. */
static int after_shutdown_main(void *arg, void **result)
{
    (void)arg;
    (void)result;
    ck_assert_int_eq(cio_to_thread(queued_job, NULL, NULL), -ESHUTDOWN);
    cio_future_t *f = NOT_SET;
    ck_assert_int_eq(cio_run_in_executor(&f, NULL, NULL, queued_job, NULL), -ESHUTDOWN);
    ck_assert_ptr_null(f);
    cio_executor_t *ex;
    ck_assert_int_eq(cio_executor_new(&ex, 1), 0);
    ck_assert_int_eq(cio_loop_set_default_executor(cio_get_running_loop(), ex), -ESHUTDOWN);
    cio_executor_shutdown(ex, true);
    ck_assert_int_eq(cio_shutdown_default_executor(INFINITY), 0);
    return 0;
}

static int run_task(cio_loop_t *loop, cio_task_fn fn, void *arg)
{
    cio_task_t *t;
    ck_assert_int_eq(cio_spawn_ex(&t, loop, fn, arg, NULL), 0);
    int rc = cio_loop_run_until_complete(loop, t, NULL);
    cio_future_release(t);
    return rc;
}

/* cio_loop_shutdown drains the default pool while the loop runs: the job's
 * submission is answered (refused: the shutdown has begun) instead of a
 * join waiting forever for a job that waits for the loop; the job queued
 * behind it still runs; afterwards the default pool stays shut down. */
START_TEST(shutdown_answers_pool_job)
{
    selfsub_t s;
    selfsub_init(&s);
    cio_runner_t *run;
    ck_assert_int_eq(cio_runner_new(&run, NULL), 0);
    ck_assert_int_eq(cio_runner_run(run, selfsub_main, &s, NULL), 0);
    /* The job submits now or during the shutdown; the loop does not run in
     * between, so the shutdown delivers it either way. */
    flag_set(&s.go);
    ck_assert_int_eq(cio_loop_shutdown(s.loop), 0);
    ck_assert_int_eq(atomic_load(&s.submit_rc), 0);
    ck_assert_int_eq(atomic_load(&s.wait_rc), -ESHUTDOWN);
    ck_assert_int_eq(atomic_load(&s.remote_ran), 0);
    ck_assert_int_eq(atomic_load(&s.queued_ran), 1);
    ck_assert_int_eq(run_task(s.loop, after_shutdown_main, NULL), 0);
    ck_assert_int_eq(cio_runner_close(run), 0);
    selfsub_destroy(&s);
}
END_TEST

/* The same through cio_run (asyncio.run), the gate opened by the main task
 * as it returns: whether the submission is still delivered by the run or
 * by the shutdown, it ends, and cio_run returns. */
START_TEST(run_answers_pool_job)
{
    selfsub_t s;
    selfsub_init(&s);
    s.go_in_main = true;
    ck_assert_int_eq(cio_run(selfsub_main, &s), 0);
    ck_assert_int_eq(atomic_load(&s.submit_rc), 0);
    int rc = atomic_load(&s.wait_rc);
    ck_assert(rc == 0 || rc == -ESHUTDOWN);
    ck_assert_int_eq(atomic_load(&s.remote_ran), rc == 0);
    ck_assert_int_eq(atomic_load(&s.queued_ran), 1);
    selfsub_destroy(&s);
}
END_TEST

/* cio_loop_close alone: the close waits for the running job while it
 * delivers posts, so the job's submission ends (-ESHUTDOWN: the loop does
 * not run) and the job returns; the queued job is cancelled, as the close
 * promises. */
START_TEST(close_answers_pool_job)
{
    selfsub_t s;
    selfsub_init(&s);
    cio_loop_t *loop = new_loop();
    ck_assert_int_eq(run_task(loop, selfsub_main, &s), 0);
    flag_set(&s.go);
    ck_assert_int_eq(cio_loop_close(loop), 0);
    ck_assert_int_eq(atomic_load(&s.submit_rc), 0);
    ck_assert_int_eq(atomic_load(&s.wait_rc), -ESHUTDOWN);
    ck_assert_int_eq(atomic_load(&s.remote_ran), 0);
    ck_assert_int_eq(atomic_load(&s.queued_ran), 0);
    ck_assert_int_eq(cio_loop_free(loop), 0);
    selfsub_destroy(&s);
}
END_TEST

/* With no default pool ever made, cio_loop_shutdown records the shutdown
 * too: a task run later gets -ESHUTDOWN, not a new pool. */
START_TEST(pool_stays_shut_down)
{
    cio_loop_t *loop = new_loop();
    ck_assert_int_eq(cio_loop_shutdown(loop), 0);
    ck_assert_int_eq(run_task(loop, after_shutdown_main, NULL), 0);
    ck_assert_int_eq(cio_loop_shutdown(loop), 0);
    close_free(loop);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* A flood of submissions during the shutdown                               */
/* ------------------------------------------------------------------------ */

typedef struct flood {
    cio_loop_t *loop;
    atomic_long submitted;
    atomic_int bad;
} flood_t;

static int sleep_forever(void *arg, void **result)
{
    (void)arg;
    (void)result;
    return cio_sleep(INFINITY);
}

/* Lives across one loop iteration, as any task that awaits something. */
static int yield_once(void *arg, void **result)
{
    (void)arg;
    (void)result;
    return cio_yield();
}

/* Ends a cfuture of the flood: a task that never returns by itself ends
 * cancelled (started before the shutdown) or refused (reached the loop once
 * the shutdown had begun); a short one may also end normally. */
static void flood_end(flood_t *f, cio_cfuture_t *cf, bool short_task)
{
    int rc = cio_cfuture_wait(cf, INFINITY, NULL);
    if (rc != -ECANCELED && rc != -ESHUTDOWN && !(short_task && rc == 0))
        atomic_fetch_add(&f->bad, 1);
    cio_cfuture_release(cf);
}

/* Submits as fast as it can, at most `ring` in flight, until the loop says
 * it is closed: the documented signal to stop. Long tasks wait until they
 * are cancelled; short ones yield once, so that while the flood goes on the
 * loop has some alive at the end of every iteration. */
static void flood(flood_t *f, bool short_task, int ring)
{
    cio_cfuture_t *cfs[256] = {0};
    cio_task_fn fn = short_task ? yield_once : sleep_forever;
    for (long i = 0;; i++) {
        cio_cfuture_t **slot = &cfs[i % ring];
        if (*slot)
            flood_end(f, *slot, short_task);
        int rc = cio_run_coroutine_threadsafe(slot, f->loop, fn, NULL);
        if (rc) {
            if (rc != -ESHUTDOWN)
                atomic_fetch_add(&f->bad, 1);
            break;
        }
        atomic_fetch_add(&f->submitted, 1);
    }
    for (int k = 0; k < ring; k++)
        if (cfs[k])
            flood_end(f, cfs[k], short_task);
}

static void *flood_long(void *arg)
{
    flood(arg, false, 64);
    return NULL;
}

static void *flood_short(void *arg)
{
    flood(arg, true, 256);
    return NULL;
}

static int until_flooded(void *arg, void **result)
{
    (void)result;
    flood_t *f = arg;
    while (atomic_load(&f->submitted) < 100)
        ck_assert_int_eq(cio_sleep(0.001), 0);
    return 0;
}

/* Submissions that keep coming while cio_loop_shutdown runs are refused, so
 * they cannot keep its "run until no task is left" going: the shutdown
 * returns, the close stops the submitters, and every cfuture ends with a
 * code its task may end with. (Bounded, so that the loop keeps up before
 * the shutdown; shutdown_refuses_submissions checks the refusal itself.) */
START_TEST(shutdown_refuses_flood)
{
    flood_t f = {0};
    f.loop = new_loop();
    pthread_t th[2];
    ck_assert_int_eq(pthread_create(&th[0], NULL, flood_long, &f), 0);
    ck_assert_int_eq(pthread_create(&th[1], NULL, flood_short, &f), 0);
    ck_assert_int_eq(run_task(f.loop, until_flooded, &f), 0);
    ck_assert_int_eq(cio_loop_shutdown(f.loop), 0);
    ck_assert_int_eq(cio_loop_close(f.loop), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    ck_assert_int_eq(atomic_load(&f.bad), 0);
    ck_assert_int_eq(cio_loop_free(f.loop), 0);
}
END_TEST

/* A submission that reaches the loop once cio_loop_shutdown has begun (here
 * made by a task as the shutdown cancels it) is refused: fn does not run,
 * the cfuture ends -ESHUTDOWN (at the latest when the loop closes). */
typedef struct late {
    cio_cfuture_t *cf;
    atomic_int ran;
} late_t;

static int mark_late(void *arg, void **result)
{
    (void)result;
    atomic_store(&((late_t *)arg)->ran, 1);
    return 0;
}

static int submits_when_cancelled(void *arg, void **result)
{
    (void)result;
    late_t *l = arg;
    int rc = cio_sleep(INFINITY);
    ck_assert_int_eq(rc, -ECANCELED);
    ck_assert_int_eq(cio_run_coroutine_threadsafe(&l->cf, cio_get_running_loop(), mark_late, l),
                     0);
    return rc;
}

START_TEST(shutdown_refuses_submissions)
{
    late_t l = {0};
    cio_loop_t *loop = new_loop();
    cio_task_t *t;
    ck_assert_int_eq(cio_spawn_ex(&t, loop, submits_when_cancelled, &l, NULL), 0);
    ck_assert_int_eq(cio_loop_shutdown(loop), 0);
    ck_assert_int_eq(cio_future_result(t, NULL), -ECANCELED);
    cio_future_release(t);
    ck_assert_int_eq(cio_loop_close(loop), 0);
    ck_assert_int_eq(cio_cfuture_wait(l.cf, 0, NULL), -ESHUTDOWN);
    ck_assert_int_eq(atomic_load(&l.ran), 0);
    cio_cfuture_release(l.cf);
    ck_assert_int_eq(cio_loop_free(loop), 0);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Sharing a cfuture between threads                                        */
/* ------------------------------------------------------------------------ */

typedef struct holder {
    pthread_t th;
    cio_cfuture_t *cf; /* a reference of its own */
    int rc;
    void *res;
} holder_t;

static void *hold_and_wait(void *arg)
{
    holder_t *h = arg;
    h->rc = cio_cfuture_wait(h->cf, INFINITY, &h->res);
    cio_cfuture_release(h->cf);
    return NULL;
}

/* Each waiting thread holds a reference of its own (cio_cfuture_ref), so
 * the submitter may let go first: nothing is freed under a waiter (ASan). */
START_TEST(cfuture_ref_shared)
{
    ck_assert_ptr_null(cio_cfuture_ref(NULL));
    lthread lt;
    lthread_start(&lt);
    remote_t r = remote_new(D_SHORT, 7, &lt);
    cio_cfuture_t *cf;
    ck_assert_int_eq(cio_run_coroutine_threadsafe(&cf, lt.loop, remote_body, &r), 0);
    holder_t h[3];
    for (int i = 0; i < 3; i++) {
        h[i].cf = cio_cfuture_ref(cf);
        ck_assert_ptr_eq(h[i].cf, cf);
        ck_assert_int_eq(pthread_create(&h[i].th, NULL, hold_and_wait, &h[i]), 0);
    }
    cio_cfuture_release(cf);
    for (int i = 0; i < 3; i++) {
        pthread_join(h[i].th, NULL);
        ck_assert_int_eq(h[i].rc, 7);
        ck_assert_ptr_eq(h[i].res, &lt);
    }
    lthread_stop(&lt);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Allocation failures                                                       */
/* ------------------------------------------------------------------------ */

static atomic_long n_alloc, fail_at, live;

static bool fail_now(void)
{
    long n = atomic_fetch_add(&n_alloc, 1) + 1;
    return n == atomic_load(&fail_at);
}

static void *t_malloc(size_t n)
{
    if (fail_now())
        return NULL;
    void *p = malloc(n);
    if (p)
        atomic_fetch_add(&live, 1);
    return p;
}

static void *t_calloc(size_t c, size_t n)
{
    if (fail_now())
        return NULL;
    void *p = calloc(c, n);
    if (p)
        atomic_fetch_add(&live, 1);
    return p;
}

static void *t_realloc(void *old, size_t n)
{
    if (fail_now())
        return NULL;
    void *p = realloc(old, n);
    if (p && !old)
        atomic_fetch_add(&live, 1);
    return p;
}

static void t_free(void *p)
{
    if (p)
        atomic_fetch_sub(&live, 1);
    free(p);
}

/* The whole round trip, with the N-th allocation failing: every outcome is
 * a clean code, and nothing is left allocated. */
static int alloc_scenario(void)
{
    lthread lt;
    int rc = lthread_try_start(&lt);
    if (rc) {
        ck_assert_int_eq(rc, -ENOMEM);
        return rc;
    }
    remote_t r = remote_new(0.001, 2, NULL);
    cio_cfuture_t *cf = NOT_SET;
    rc = cio_run_coroutine_threadsafe(&cf, lt.loop, remote_body, &r);
    if (rc) {
        ck_assert_int_eq(rc, -ENOMEM);
        ck_assert_ptr_null(cf);
    } else {
        rc = cio_cfuture_wait(cf, INFINITY, NULL);
        /* -ENOMEM: the task could not be spawned (fn did not run), or its
         * sleep could not arm its timer (fn returned that). */
        ck_assert(rc == 2 || (rc == -ENOMEM && (!atomic_load(&r.started) ||
                                                r.observed == -ENOMEM)));
        cio_cfuture_release(cf);
    }
    lthread_stop(&lt);
    return rc;
}

START_TEST(alloc_failures)
{
    ck_assert_int_eq(cio_replace_allocator(t_malloc, t_realloc, t_calloc, t_free), 0);
    bool succeeded = false;
    for (long n = 1; n < 200 && !succeeded; n++) {
        atomic_store(&n_alloc, 0);
        atomic_store(&fail_at, n);
        int rc = alloc_scenario();
        ck_assert_int_eq(atomic_load(&live), 0);
        succeeded = rc == 2 && atomic_load(&n_alloc) < n;
    }
    ck_assert(succeeded);
}
END_TEST

static int pool_alloc_main(void *arg, void **result)
{
    (void)result;
    int *rc = arg;
    rc[0] = cio_shutdown_default_executor(INFINITY);
    cio_executor_t *ex;
    rc[1] = cio_executor_new(&ex, 2);
    if (!rc[1]) {
        rc[2] = cio_loop_set_default_executor(cio_get_running_loop(), ex);
        if (rc[2])
            cio_executor_shutdown(ex, true);
    }
    return 0;
}

START_TEST(alloc_failures_pool)
{
    ck_assert_int_eq(cio_replace_allocator(t_malloc, t_realloc, t_calloc, t_free), 0);
    bool succeeded = false;
    for (long n = 1; n < 200 && !succeeded; n++) {
        atomic_store(&n_alloc, 0);
        atomic_store(&fail_at, n);
        int rc[3] = {1, 1, 1};
        int run = cio_run(pool_alloc_main, rc);
        ck_assert(run == 0 || run == -ENOMEM);
        ck_assert_int_eq(atomic_load(&live), 0);
        if (run)
            continue;
        ck_assert(rc[0] == 0 || rc[0] == -ENOMEM);
        ck_assert(rc[1] == 0 || rc[1] == -ENOMEM);
        if (!rc[0] && !rc[1])
            ck_assert_int_eq(rc[2], -ESHUTDOWN);
        succeeded = !rc[0] && !rc[1] && atomic_load(&n_alloc) < n;
    }
    ck_assert(succeeded);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("threadsafe");
    TCase *tc = tcase_create("threadsafe");
    tcase_set_timeout(tc, TEST_TIMEOUT);
    tcase_add_test(tc, thread_submit_and_block);
    tcase_add_test(tc, bad_arguments);
    tcase_add_test(tc, task_awaits_other_loop);
    tcase_add_test(tc, many_waiters);
    tcase_add_test(tc, task_awaits_own_loop);
    tcase_add_test(tc, thread_wait_timeout);
    tcase_add_test(tc, task_wait_timeout);
    tcase_add_test(tc, cancel_waiting_task);
    tcase_add_test(tc, cancel_races_completion);
    tcase_add_test(tc, cancel_before_start);
    tcase_add_test(tc, remote_fails);
    tcase_add_test(tc, shutdown_cancels_pending);
    tcase_add_test(tc, closed_loop);
    tcase_add_test(tc, close_with_queued_submission);
    tcase_add_test(tc, stress_submitters);
    tcase_add_test(tc, close_never_run);
    tcase_add_test(tc, submissions_race_the_end);
    tcase_add_test(tc, release_before_completion);
    tcase_add_test(tc, deadlock_detected);
    tcase_add_test(tc, default_executor_size);
    tcase_add_test(tc, shutdown_default_executor_waits);
    tcase_add_test(tc, shutdown_default_executor_timeout);
    tcase_add_test(tc, shutdown_default_executor_unused);
    tcase_add_test(tc, shutdown_answers_pool_job);
    tcase_add_test(tc, run_answers_pool_job);
    tcase_add_test(tc, close_answers_pool_job);
    tcase_add_test(tc, pool_stays_shut_down);
    tcase_add_test(tc, shutdown_refuses_flood);
    tcase_add_test(tc, shutdown_refuses_submissions);
    tcase_add_test(tc, cfuture_ref_shared);
    tcase_add_test(tc, alloc_failures);
    tcase_add_test(tc, alloc_failures_pool);
    suite_add_tcase(s, tc);
    return s;
}

CIO_TEST_MAIN(suite)
