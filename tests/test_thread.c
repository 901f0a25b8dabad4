/*
 * Thread-facing parts (run under ThreadSanitizer with `ctest -L thread`):
 * cio_call_soon_threadsafe from many threads, prompt wake-up, cio_to_thread,
 * the bounded executor, cancellation during to_thread, executor shutdown,
 * and several loops in several threads.
 */
#include "cio_test.h"

#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

static void nap(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static void cb_stop(void *arg)
{
    cio_loop_stop(arg);
}

/* ------------------------------------------------------------------------ */
/* call_soon_threadsafe hammered from 4 threads                               */
/* ------------------------------------------------------------------------ */

#define NTHR 4
#define NCALLS 10000
#define NTOTAL (NTHR * NCALLS)

struct hammer;

struct hitem {
    struct hammer *h;
    int idx;
};

struct hammer {
    cio_loop_t *loop;
    unsigned char hits[NTOTAL];
    int total;
    atomic_int errors;
    atomic_int go;
    pthread_t th[NTHR];
    int base[NTHR];
    struct hitem items[NTOTAL];
    cio_handle_t watchdog;
    int watchdog_fired;
};

static void cb_hit(void *arg)
{
    struct hitem *it = arg;
    struct hammer *h = it->h;
    ck_assert_ptr_eq(cio_get_running_loop(), h->loop);
    h->hits[it->idx]++;
    if (++h->total == NTOTAL)
        cio_loop_stop(h->loop);
}

static void cb_watchdog(void *arg)
{
    struct hammer *h = arg;
    h->watchdog_fired = 1;
    cio_loop_stop(h->loop);
}

struct thr_arg {
    struct hammer *h;
    int base;
};

static struct thr_arg thr_args[NTHR];

static void *hammer_thread(void *arg)
{
    struct thr_arg *a = arg;
    struct hammer *h = a->h;
    while (!atomic_load(&h->go))
        sched_yield();
    for (int i = 0; i < NCALLS; i++) {
        if (cio_call_soon_threadsafe(h->loop, cb_hit, &h->items[a->base + i]) != 0)
            atomic_fetch_add(&h->errors, 1);
        if ((i & 1023) == 0)
            nap(0.0005); /* let the loop go idle now and then */
    }
    return NULL;
}

static void cb_start_threads(void *arg)
{
    struct hammer *h = arg;
    atomic_store(&h->go, 1);
}

START_TEST(thread_call_soon_threadsafe_hammer)
{
    static struct hammer h;
    memset(&h, 0, sizeof h);
    ck_assert_int_eq(cio_loop_new(&h.loop), 0);
    for (int i = 0; i < NTOTAL; i++) {
        h.items[i].h = &h;
        h.items[i].idx = i;
    }
    for (int t = 0; t < NTHR; t++) {
        thr_args[t].h = &h;
        thr_args[t].base = t * NCALLS;
        ck_assert_int_eq(pthread_create(&h.th[t], NULL, hammer_thread, &thr_args[t]), 0);
    }
    cio_handle_t init = CIO_HANDLE_INIT;
    h.watchdog = init;
    ck_assert_int_eq(cio_call_later(h.loop, &h.watchdog, 30, cb_watchdog, &h), 0);
    ck_assert_int_eq(cio_call_soon(h.loop, NULL, cb_start_threads, &h), 0);
    ck_assert_int_eq(cio_loop_run_forever(h.loop), 0);
    for (int t = 0; t < NTHR; t++)
        ck_assert_int_eq(pthread_join(h.th[t], NULL), 0);
    ck_assert_int_eq(h.watchdog_fired, 0);
    ck_assert_int_eq(atomic_load(&h.errors), 0);
    ck_assert_int_eq(h.total, NTOTAL);
    for (int i = 0; i < NTOTAL; i++)
        ck_assert_msg(h.hits[i] == 1, "callback %d ran %d times", i, h.hits[i]);
    ck_assert_int_eq(cio_handle_cancel(&h.watchdog), 1);
    /* Nothing else is queued: one more iteration runs nothing. */
    ck_assert_int_eq(cio_call_later(h.loop, NULL, 0.01, cb_stop, h.loop), 0);
    ck_assert_int_eq(cio_loop_run_forever(h.loop), 0);
    ck_assert_int_eq(h.total, NTOTAL);
    close_free(h.loop);
}
END_TEST

/* An idle loop blocked in poll wakes promptly for a threadsafe callback. */
struct waker {
    cio_loop_t *loop;
    _Atomic double t_call;
    double t_cb;
    int fired;
};

static void cb_woken(void *arg)
{
    struct waker *w = arg;
    w->t_cb = mono_now();
    w->fired = 1;
    cio_loop_stop(w->loop);
}

static void *waker_thread(void *arg)
{
    struct waker *w = arg;
    nap(0.05);
    atomic_store(&w->t_call, mono_now());
    ck_assert_int_eq(cio_call_soon_threadsafe(w->loop, cb_woken, w), 0);
    return NULL;
}

START_TEST(thread_wakes_promptly)
{
    struct waker w;
    memset(&w, 0, sizeof w);
    ck_assert_int_eq(cio_loop_new(&w.loop), 0);
    for (int round = 0; round < 5; round++) {
        w.fired = 0;
        cio_handle_t wd = CIO_HANDLE_INIT;
        ck_assert_int_eq(cio_call_later(w.loop, &wd, 10, cb_stop, w.loop), 0);
        pthread_t th;
        ck_assert_int_eq(pthread_create(&th, NULL, waker_thread, &w), 0);
        ck_assert_int_eq(cio_loop_run_forever(w.loop), 0);
        ck_assert_int_eq(pthread_join(th, NULL), 0);
        ck_assert_int_eq(w.fired, 1);
        ck_assert_int_eq(cio_handle_cancel(&wd), 1);
        /* Generous bound: only a missed wake-up (waiting for the 10 s
         * watchdog) fails this. */
        ck_assert_double_lt(w.t_cb - atomic_load(&w.t_call), 2.0);
    }
    close_free(w.loop);
}
END_TEST

/* The bridge from a thread to a task: a thread completes a future through
 * call_soon_threadsafe, the task awaits it. */
struct bridge {
    cio_loop_t *loop;
    cio_future_t *fut;
    int value;
};

static void cb_bridge_set(void *arg)
{
    struct bridge *b = arg;
    ck_assert_int_eq(cio_future_set_result(b->fut, &b->value), 0);
}

static void *bridge_thread(void *arg)
{
    struct bridge *b = arg;
    nap(0.02);
    b->value = 42; /* published by the threadsafe queue */
    ck_assert_int_eq(cio_call_soon_threadsafe(b->loop, cb_bridge_set, b), 0);
    return NULL;
}

static int main_bridge(void *arg, void **result)
{
    (void)arg;
    (void)result;
    struct bridge b = {.loop = cio_get_running_loop()};
    ck_assert_int_eq(cio_future_new(&b.fut, NULL), 0);
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, bridge_thread, &b), 0);
    void *r = NULL;
    ck_assert_int_eq(cio_await(b.fut, &r), 0);
    ck_assert_ptr_eq(r, &b.value);
    ck_assert_int_eq(*(int *)r, 42);
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    cio_future_release(b.fut);
    return 0;
}

START_TEST(thread_bridge_future)
{
    RUN_MAIN(main_bridge, NULL);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* cio_to_thread                                                              */
/* ------------------------------------------------------------------------ */

struct job_probe {
    pthread_t loop_thread;
    int on_other_thread;
    int saw_no_loop;
    int saw_no_task;
    long in;
    long out;
};

static int job_value(void *arg, void **result)
{
    struct job_probe *p = arg;
    p->on_other_thread = !pthread_equal(pthread_self(), p->loop_thread);
    p->saw_no_loop = cio_get_running_loop() == NULL;
    p->saw_no_task = cio_current_task() == NULL;
    p->out = p->in * 2;
    *result = &p->out;
    return 0;
}

static int job_status(void *arg, void **result)
{
    (void)result;
    return *(int *)arg;
}

static int main_to_thread(void *arg, void **result)
{
    (void)arg;
    (void)result;
    struct job_probe p = {.loop_thread = pthread_self(), .in = 21};
    void *r = NULL;
    ck_assert_int_eq(cio_to_thread(job_value, &p, &r), 0);
    ck_assert_ptr_eq(r, &p.out);
    ck_assert_int_eq(p.out, 42);
    ck_assert(p.on_other_thread);
    ck_assert(p.saw_no_loop);
    ck_assert(p.saw_no_task);
    int st = -EIO;
    ck_assert_int_eq(cio_to_thread(job_status, &st, NULL), -EIO);
    st = 5;
    ck_assert_int_eq(cio_to_thread(job_status, &st, NULL), 5);

    /* run_in_executor on the default pool gives a future. */
    p.in = 50;
    cio_future_t *f;
    ck_assert_int_eq(cio_run_in_executor(&f, cio_get_running_loop(), NULL, job_value, &p), 0);
    ck_assert_ptr_nonnull(f);
    ck_assert(!cio_future_is_task(f));
    r = NULL;
    ck_assert_int_eq(cio_await(f, &r), 0);
    ck_assert_int_eq(*(long *)r, 100);
    cio_future_release(f);
    return 0;
}

START_TEST(thread_to_thread_value)
{
    RUN_MAIN(main_to_thread, NULL);
}
END_TEST

/* Many to_thread calls from many tasks, each gets its own value. */
struct many_arg {
    long in, out;
    int rc;
};

static int job_square(void *arg, void **result)
{
    struct many_arg *a = arg;
    nap(0.002);
    a->out = a->in * a->in;
    *result = &a->out;
    return 0;
}

static int body_to_thread(void *arg, void **result)
{
    struct many_arg *a = arg;
    a->rc = cio_to_thread(job_square, a, result);
    return a->rc;
}

static int main_many_to_thread(void *arg, void **result)
{
    (void)arg;
    (void)result;
    enum { N = 64 };
    static struct many_arg a[N];
    cio_task_t *t[N];
    for (int i = 0; i < N; i++) {
        a[i].in = i;
        a[i].rc = 12345;
        ck_assert_int_eq(cio_spawn(&t[i], body_to_thread, &a[i]), 0);
        ck_assert_ptr_nonnull(t[i]);
    }
    void *results[N];
    int statuses[N];
    ck_assert_int_eq(cio_gather(t, N, results, statuses, 0), 0);
    for (int i = 0; i < N; i++) {
        ck_assert_int_eq(statuses[i], 0);
        ck_assert_ptr_eq(results[i], &a[i].out);
        ck_assert_int_eq(a[i].out, (long)i * i);
        cio_future_release(t[i]);
    }
    return 0;
}

START_TEST(thread_many_to_thread)
{
    RUN_MAIN(main_many_to_thread, NULL);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Pool bounds                                                                */
/* ------------------------------------------------------------------------ */

struct conc {
    atomic_int cur, max, ran;
};

static int job_count(void *arg, void **result)
{
    (void)result;
    struct conc *c = arg;
    int now = atomic_fetch_add(&c->cur, 1) + 1;
    int m = atomic_load(&c->max);
    while (now > m && !atomic_compare_exchange_weak(&c->max, &m, now))
        ;
    nap(0.02);
    atomic_fetch_sub(&c->cur, 1);
    atomic_fetch_add(&c->ran, 1);
    return 0;
}

static int main_bounded_executor(void *arg, void **result)
{
    (void)arg;
    (void)result;
    enum { N = 16 };
    static struct conc c;
    memset(&c, 0, sizeof c);
    cio_executor_t *ex = NULL;
    ck_assert_int_eq(cio_executor_new(&ex, 2), 0);
    ck_assert_ptr_nonnull(ex);
    cio_future_t *fs[N];
    for (int i = 0; i < N; i++) {
        ck_assert_int_eq(cio_run_in_executor(&fs[i], cio_get_running_loop(), ex, job_count, &c), 0);
        ck_assert_ptr_nonnull(fs[i]);
    }
    int st[N];
    ck_assert_int_eq(cio_gather(fs, N, NULL, st, CIO_GATHER_ALL), 0);
    for (int i = 0; i < N; i++) {
        ck_assert_int_eq(st[i], 0);
        cio_future_release(fs[i]);
    }
    ck_assert_int_eq(atomic_load(&c.ran), N);
    ck_assert_int_ge(atomic_load(&c.max), 1);
    ck_assert_int_le(atomic_load(&c.max), 2);
    cio_executor_shutdown(ex, true);
    return 0;
}

START_TEST(thread_executor_bounded)
{
    RUN_MAIN(main_bounded_executor, NULL);
}
END_TEST

static int body_to_thread_count(void *arg, void **result)
{
    return cio_to_thread(job_count, arg, result);
}

static int main_default_pool_bounded(void *arg, void **result)
{
    (void)arg;
    (void)result;
    enum { N = 48 };
    static struct conc c;
    memset(&c, 0, sizeof c);
    cio_task_t *t[N];
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(cio_spawn(&t[i], body_to_thread_count, &c), 0);
    ck_assert_int_eq(cio_gather(t, N, NULL, NULL, 0), 0);
    for (int i = 0; i < N; i++)
        cio_future_release(t[i]);
    long conf = sysconf(_SC_NPROCESSORS_CONF), onln = sysconf(_SC_NPROCESSORS_ONLN);
    long ncpu = conf > onln ? conf : onln;
    long bound = ncpu + 4 < 32 ? ncpu + 4 : 32;
    ck_assert_int_eq(atomic_load(&c.ran), N);
    ck_assert_int_ge(atomic_load(&c.max), 1);
    ck_assert_int_le(atomic_load(&c.max), bound);
    return 0;
}

START_TEST(thread_default_pool_bounded)
{
    RUN_MAIN(main_default_pool_bounded, NULL);
}
END_TEST

START_TEST(thread_executor_new_einval)
{
    ck_assert_int_eq(cio_executor_new(NULL, 2), -EINVAL);
    cio_executor_t *ex = NULL;
    ck_assert_int_eq(cio_executor_new(&ex, 0), 0);
    ck_assert_ptr_nonnull(ex);
    /* run_in_executor: no running loop, out NULL, fn NULL; *out cleared. */
    cio_future_t *f = NOT_SET;
    ck_assert_int_eq(cio_run_in_executor(&f, NULL, ex, job_count, NULL), -EPERM);
    ck_assert_ptr_null(f);
    cio_loop_t *l = NULL;
    ck_assert_int_eq(cio_loop_new(&l), 0);
    ck_assert_int_eq(cio_run_in_executor(NULL, l, ex, job_count, NULL), -EINVAL);
    f = NOT_SET;
    ck_assert_int_eq(cio_run_in_executor(&f, l, ex, NULL, NULL), -EINVAL);
    ck_assert_ptr_null(f);
    ck_assert_int_eq(cio_loop_free(l), 0);
    cio_executor_shutdown(ex, true);
    cio_executor_shutdown(NULL, true);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Cancellation and shutdown                                                  */
/* ------------------------------------------------------------------------ */

struct slow_job {
    atomic_int started, done;
    int rc;
    int done_at_return;
};

static int job_slow(void *arg, void **result)
{
    (void)result;
    struct slow_job *j = arg;
    atomic_store(&j->started, 1);
    nap(0.2);
    atomic_store(&j->done, 1);
    return 0;
}

static int body_victim(void *arg, void **result)
{
    (void)result;
    struct slow_job *j = arg;
    j->rc = cio_to_thread(job_slow, j, NULL);
    j->done_at_return = atomic_load(&j->done);
    return j->rc;
}

static int main_cancel_to_thread(void *arg, void **result)
{
    (void)arg;
    (void)result;
    static struct slow_job j;
    memset(&j, 0, sizeof j);
    cio_task_t *t;
    ck_assert_int_eq(cio_spawn(&t, body_victim, &j), 0);
    /* Wait until the job runs on its thread. */
    for (int i = 0; i < 500 && !atomic_load(&j.started); i++)
        ck_assert_int_eq(cio_sleep(0.005), 0);
    ck_assert(atomic_load(&j.started));
    ck_assert_int_eq(cio_task_cancel(t), 1);
    ck_assert_int_eq(cio_await(t, NULL), -ECANCELED);
    ck_assert_int_eq(j.rc, -ECANCELED);
    ck_assert_int_eq(j.done_at_return, 1);
    cio_future_release(t);
    return 0;
}

START_TEST(thread_cancel_in_to_thread)
{
    RUN_MAIN(main_cancel_to_thread, NULL);
}
END_TEST

struct queued {
    atomic_int ran;
};

static int job_mark(void *arg, void **result)
{
    (void)result;
    struct queued *q = arg;
    atomic_fetch_add(&q->ran, 1);
    return 0;
}

static int main_executor_shutdown(void *arg, void **result)
{
    (void)arg;
    (void)result;
    static struct slow_job blocker;
    static struct queued q;
    memset(&blocker, 0, sizeof blocker);
    memset(&q, 0, sizeof q);
    cio_loop_t *l = cio_get_running_loop();
    cio_executor_t *ex = NULL;
    ck_assert_int_eq(cio_executor_new(&ex, 1), 0);
    cio_future_t *f1;
    ck_assert_int_eq(cio_run_in_executor(&f1, l, ex, job_slow, &blocker), 0);
    ck_assert_ptr_nonnull(f1);
    for (int i = 0; i < 500 && !atomic_load(&blocker.started); i++)
        ck_assert_int_eq(cio_sleep(0.005), 0);
    ck_assert(atomic_load(&blocker.started));
    cio_future_t *qf[4];
    for (int i = 0; i < 4; i++) {
        ck_assert_int_eq(cio_run_in_executor(&qf[i], l, ex, job_mark, &q), 0);
        ck_assert_ptr_nonnull(qf[i]);
    }
    /* Queued jobs are cancelled; the running one completes; wait joins. */
    cio_executor_shutdown(ex, true);
    ck_assert_int_eq(atomic_load(&blocker.done), 1);
    ck_assert_int_eq(cio_wait_for(f1, 5, NULL), 0);
    for (int i = 0; i < 4; i++) {
        ck_assert_int_eq(cio_wait_for(qf[i], 5, NULL), -ECANCELED);
        ck_assert(cio_future_cancelled(qf[i]));
        cio_future_release(qf[i]);
    }
    ck_assert_int_eq(atomic_load(&q.ran), 0);
    cio_future_release(f1);
    return 0;
}

START_TEST(thread_executor_shutdown_cancels_queued)
{
    RUN_MAIN(main_executor_shutdown, NULL);
}
END_TEST

static int main_cancel_job_future(void *arg, void **result)
{
    (void)arg;
    (void)result;
    static struct slow_job blocker;
    static struct queued q;
    memset(&blocker, 0, sizeof blocker);
    memset(&q, 0, sizeof q);
    cio_loop_t *l = cio_get_running_loop();
    cio_executor_t *ex = NULL;
    ck_assert_int_eq(cio_executor_new(&ex, 1), 0);
    cio_future_t *f1;
    ck_assert_int_eq(cio_run_in_executor(&f1, l, ex, job_slow, &blocker), 0);
    for (int i = 0; i < 500 && !atomic_load(&blocker.started); i++)
        ck_assert_int_eq(cio_sleep(0.005), 0);
    ck_assert(atomic_load(&blocker.started));
    cio_future_t *f2;
    ck_assert_int_eq(cio_run_in_executor(&f2, l, ex, job_mark, &q), 0);
    ck_assert_ptr_nonnull(f2);
    /* Started: not cancellable. Queued: cancelled, never runs. */
    ck_assert_int_eq(cio_future_cancel(f1), 0);
    ck_assert_int_eq(cio_future_cancel(f2), 1);
    ck_assert(cio_future_cancelled(f2));
    ck_assert_int_eq(cio_await(f1, NULL), 0);
    ck_assert(!cio_future_cancelled(f1));
    /* Give the worker a chance to (wrongly) pick up the cancelled job. */
    ck_assert_int_eq(cio_sleep(0.05), 0);
    ck_assert_int_eq(atomic_load(&q.ran), 0);
    ck_assert_int_eq(cio_await(f2, NULL), -ECANCELED);
    cio_future_release(f1);
    cio_future_release(f2);
    cio_executor_shutdown(ex, true);
    return 0;
}

START_TEST(thread_cancel_job_future)
{
    RUN_MAIN(main_cancel_job_future, NULL);
}
END_TEST

/* A task awaiting a queued job future is cancelled: the job is cancelled
 * and never runs. Awaiting a started job: the job cannot be cancelled, so
 * the await waits for it, then returns -ECANCELED. */
struct job_awaiter {
    cio_future_t *f;
    int rc;
    int blocker_done_at_return;
    struct slow_job *blocker;
};

static int body_await_job(void *arg, void **result)
{
    (void)result;
    struct job_awaiter *a = arg;
    a->rc = cio_await(a->f, NULL);
    a->blocker_done_at_return = atomic_load(&a->blocker->done);
    return a->rc;
}

static int main_await_job_cancelled(void *arg, void **result)
{
    (void)arg;
    (void)result;
    static struct slow_job blocker;
    static struct queued q;
    memset(&blocker, 0, sizeof blocker);
    memset(&q, 0, sizeof q);
    cio_loop_t *l = cio_get_running_loop();
    cio_executor_t *ex = NULL;
    ck_assert_int_eq(cio_executor_new(&ex, 1), 0);
    struct job_awaiter started = {.blocker = &blocker}, queued = {.blocker = &blocker};
    ck_assert_int_eq(cio_run_in_executor(&started.f, l, ex, job_slow, &blocker), 0);
    for (int i = 0; i < 500 && !atomic_load(&blocker.started); i++)
        ck_assert_int_eq(cio_sleep(0.005), 0);
    ck_assert(atomic_load(&blocker.started));
    ck_assert_int_eq(cio_run_in_executor(&queued.f, l, ex, job_mark, &q), 0);
    cio_task_t *ts;
    ck_assert_int_eq(cio_spawn(&ts, body_await_job, &started), 0);
    cio_task_t *tq;
    ck_assert_int_eq(cio_spawn(&tq, body_await_job, &queued), 0);
    ck_assert_int_eq(cio_sleep(0.01), 0);
    ck_assert_int_eq(cio_task_cancel(tq), 1);
    ck_assert_int_eq(cio_task_cancel(ts), 1);
    ck_assert_int_eq(cio_await(tq, NULL), -ECANCELED);
    ck_assert(cio_future_cancelled(queued.f));
    ck_assert_int_eq(cio_await(ts, NULL), -ECANCELED);
    ck_assert_int_eq(started.blocker_done_at_return, 1);
    ck_assert(!cio_future_cancelled(started.f));
    ck_assert_int_eq(cio_future_result(started.f, NULL), 0);
    ck_assert_int_eq(cio_sleep(0.05), 0);
    ck_assert_int_eq(atomic_load(&q.ran), 0);
    cio_future_release(ts);
    cio_future_release(tq);
    cio_future_release(started.f);
    cio_future_release(queued.f);
    cio_executor_shutdown(ex, true);
    return 0;
}

START_TEST(thread_await_job_cancelled)
{
    RUN_MAIN(main_await_job_cancelled, NULL);
}
END_TEST

/* cio_loop_shutdown (through cio_run) waits for a job still running in the
 * default pool before closing. */
static struct slow_job leftover;

static int body_leftover(void *arg, void **result)
{
    (void)arg;
    (void)result;
    return cio_to_thread(job_slow, &leftover, NULL);
}

static int main_leftover_job(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_task_t *t;
    ck_assert_int_eq(cio_spawn(&t, body_leftover, NULL), 0);
    cio_future_release(t);
    for (int i = 0; i < 500 && !atomic_load(&leftover.started); i++)
        ck_assert_int_eq(cio_sleep(0.005), 0);
    return 0;
}

START_TEST(thread_run_waits_for_running_job)
{
    memset(&leftover, 0, sizeof leftover);
    RUN_MAIN(main_leftover_job, NULL);
    ck_assert_int_eq(atomic_load(&leftover.started), 1);
    ck_assert_int_eq(atomic_load(&leftover.done), 1);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Several loops in several threads                                           */
/* ------------------------------------------------------------------------ */

struct loop_thread {
    pthread_t th;
    int rc;
    cio_loop_t *loop;
    int count;
};

static int body_tick(void *arg, void **result)
{
    (void)result;
    int *count = arg;
    for (int i = 0; i < 5; i++) {
        ck_assert_int_eq(cio_sleep(0.002), 0);
        ++*count;
    }
    return 0;
}

static int job_noop(void *arg, void **result)
{
    (void)arg;
    (void)result;
    return 0;
}

static int main_per_thread(void *arg, void **result)
{
    (void)result;
    struct loop_thread *lt = arg;
    lt->loop = cio_get_running_loop();
    cio_task_t *t[8];
    for (int i = 0; i < 8; i++)
        ck_assert_int_eq(cio_spawn(&t[i], body_tick, &lt->count), 0);
    ck_assert_int_eq(cio_gather(t, 8, NULL, NULL, 0), 0);
    for (int i = 0; i < 8; i++)
        cio_future_release(t[i]);
    ck_assert_int_eq(cio_to_thread(job_noop, NULL, NULL), 0);
    ck_assert_ptr_eq(cio_get_running_loop(), lt->loop);
    return 0;
}

static void *loop_thread_fn(void *arg)
{
    struct loop_thread *lt = arg;
    lt->rc = cio_run(main_per_thread, lt);
    return NULL;
}

START_TEST(thread_loops_in_threads)
{
    struct loop_thread lt[4];
    memset(lt, 0, sizeof lt);
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(pthread_create(&lt[i].th, NULL, loop_thread_fn, &lt[i]), 0);
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(pthread_join(lt[i].th, NULL), 0);
    for (int i = 0; i < 4; i++) {
        ck_assert_int_eq(lt[i].rc, 0);
        ck_assert_int_eq(lt[i].count, 40);
        for (int j = 0; j < i; j++)
            ck_assert_ptr_ne(lt[i].loop, lt[j].loop);
    }
}
END_TEST

static Suite *thread_suite(void)
{
    Suite *s = suite_create("thread");
    TCase *tc = add_tcase(s, "threadsafe", 60);
    tcase_add_test(tc, thread_call_soon_threadsafe_hammer);
    tcase_add_test(tc, thread_wakes_promptly);
    tcase_add_test(tc, thread_bridge_future);

    tc = add_tcase(s, "pool", 30);
    tcase_add_test(tc, thread_to_thread_value);
    tcase_add_test(tc, thread_many_to_thread);
    tcase_add_test(tc, thread_executor_bounded);
    tcase_add_test(tc, thread_default_pool_bounded);
    tcase_add_test(tc, thread_executor_new_einval);
    tcase_add_test(tc, thread_cancel_in_to_thread);
    tcase_add_test(tc, thread_executor_shutdown_cancels_queued);
    tcase_add_test(tc, thread_cancel_job_future);
    tcase_add_test(tc, thread_await_job_cancelled);
    tcase_add_test(tc, thread_run_waits_for_running_job);
    tcase_add_test(tc, thread_loops_in_threads);
    return s;
}

CIO_TEST_MAIN(thread_suite)
