/*
 * Signals: cio_signal_add / cio_signal_remove / cio_signal_wait (asyncio's
 * loop.add_signal_handler), and Ctrl-C in cio_run and the runner.
 *
 * Every test runs in a process of its own (check forks), so the signal
 * dispositions a test changes never leak into another. The cio_run + SIGINT
 * tests fork once more: the child runs cio_run, the parent sends SIGINT and
 * reads what the child's tasks report through a pipe, then checks how the
 * child ended (killed by SIGINT, or the exit status the test expects).
 */
#include "cio_test.h"
#include "cio_fail_alloc.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/resource.h>

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */
/* ------------------------------------------------------------------------ */

/* What the callbacks saw: deliveries per signal, the thread they ran on,
 * whether they ran in a task. */
static atomic_int g_count[65];
static pthread_t g_cb_thread;
static atomic_int g_cb_in_task;
static cio_event_t g_ev = CIO_EVENT_INIT;

static void count_cb(void *arg)
{
    int s = (int)(intptr_t)arg;
    atomic_fetch_add(&g_count[s], 1);
    g_cb_thread = pthread_self();
    if (cio_current_task())
        atomic_store(&g_cb_in_task, 1);
    cio_event_set(&g_ev);
}

/* Waits (from a task) until a callback has set g_ev, at most the hang bound. */
static void wait_cb(void)
{
    cio_scope_t sc;
    ck_assert_int_eq(cio_scope_enter(&sc, HANG_BOUND_S, 0), 0);
    ck_assert_int_eq(cio_event_wait(&g_ev), 0);
    ck_assert_int_eq(cio_scope_exit(&sc), 0);
    cio_event_clear(&g_ev);
}

/* True when s's disposition is the plain handler fn (SIG_DFL, SIG_IGN...). */
static bool disposition_is(int s, void (*fn)(int))
{
    struct sigaction cur;
    ck_assert_int_eq(sigaction(s, NULL, &cur), 0);
    return !(cur.sa_flags & SA_SIGINFO) && cur.sa_handler == fn;
}

/* Sends s to the whole process (any thread that does not block it). */
static void send_self(int s)
{
    ck_assert_int_eq(kill(getpid(), s), 0);
}

/* Spins for `seconds` without any await point: the loop is busy. */
static void compute(double seconds)
{
    double end = mono_now() + seconds;
    while (mono_now() < end)
        ;
}

/* ------------------------------------------------------------------------ */
/* Handlers                                                                  */
/* ------------------------------------------------------------------------ */

static int main_runs_on_loop(void *arg, void **result)
{
    (void)arg;
    (void)result;
    ck_assert_int_eq(cio_signal_add(NULL, SIGUSR1, count_cb, (void *)(intptr_t)SIGUSR1), 0);
    ck_assert(!disposition_is(SIGUSR1, SIG_DFL));
    send_self(SIGUSR1);
    /* The handler has run (kill delivers to this thread before it
     * returns), but the callback is the loop's: not yet. */
    ck_assert_int_eq(atomic_load(&g_count[SIGUSR1]), 0);
    wait_cb();
    settle();
    ck_assert_int_eq(atomic_load(&g_count[SIGUSR1]), 1);
    ck_assert(pthread_equal(g_cb_thread, pthread_self()));
    ck_assert_int_eq(atomic_load(&g_cb_in_task), 0);
    ck_assert_int_eq(cio_signal_remove(NULL, SIGUSR1), 1);
    ck_assert(disposition_is(SIGUSR1, SIG_DFL));
    return 0;
}

START_TEST(handler_runs_as_loop_callback)
{
    RUN_MAIN(main_runs_on_loop, NULL);
}
END_TEST

/* A loop that is not running: the callback runs once it runs. */
static int main_wait_cb(void *arg, void **result)
{
    (void)arg;
    (void)result;
    wait_cb();
    settle();
    return 0;
}

START_TEST(handler_on_idle_loop)
{
    cio_loop_t *l = new_loop();
    ck_assert_int_eq(cio_signal_add(l, SIGUSR2, count_cb, (void *)(intptr_t)SIGUSR2), 0);
    send_self(SIGUSR2);
    ck_assert_int_eq(atomic_load(&g_count[SIGUSR2]), 0);
    cio_task_t *t = NULL;
    ck_assert_int_eq(cio_spawn_ex(&t, l, main_wait_cb, NULL, NULL), 0);
    ck_assert_int_eq(cio_loop_run_until_complete(l, t, NULL), 0);
    cio_future_release(t);
    ck_assert_int_eq(atomic_load(&g_count[SIGUSR2]), 1);
    close_free(l);
    ck_assert(disposition_is(SIGUSR2, SIG_DFL));
}
END_TEST

/* Delivered while a task computes: the callback runs exactly once, after. */
static int main_busy(void *arg, void **result)
{
    (void)arg;
    (void)result;
    ck_assert_int_eq(cio_signal_add(NULL, SIGUSR1, count_cb, (void *)(intptr_t)SIGUSR1), 0);
    send_self(SIGUSR1);
    compute(0.1);
    ck_assert_int_eq(atomic_load(&g_count[SIGUSR1]), 0);
    wait_cb();
    /* Many more iterations, and a wait in the poll: no second run. */
    settle();
    ck_assert_int_eq(cio_sleep(D_SHORT), 0);
    settle();
    ck_assert_int_eq(atomic_load(&g_count[SIGUSR1]), 1);
    /* Twice while busy: twice. */
    send_self(SIGUSR1);
    compute(0.02);
    send_self(SIGUSR1);
    compute(0.02);
    wait_cb();
    while (atomic_load(&g_count[SIGUSR1]) < 3)
        ck_assert_int_eq(cio_yield(), 0);
    ck_assert_int_eq(cio_sleep(D_SHORT), 0);
    settle();
    ck_assert_int_eq(atomic_load(&g_count[SIGUSR1]), 3);
    return 0;
}

START_TEST(busy_loop_delivered_once)
{
    RUN_MAIN(main_busy, NULL);
}
END_TEST

static int main_several(void *arg, void **result)
{
    (void)arg;
    (void)result;
    int rt = SIGRTMIN + 1;
    int sigs[] = {SIGUSR1, SIGUSR2, SIGHUP, SIGTERM, rt};
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(cio_signal_add(NULL, sigs[i], count_cb, (void *)(intptr_t)sigs[i]), 0);
    send_self(SIGUSR1);
    send_self(SIGUSR2);
    send_self(SIGUSR2);
    send_self(SIGHUP);
    /* A real-time signal, twice: two deliveries. (Not sent while blocked:
     * the kernel would queue both, but ThreadSanitizer's interception
     * merges pending signals.) */
    send_self(rt);
    send_self(rt);
    int64_t end = loop_ns() + (int64_t)(HANG_BOUND_S * 1e9);
    while ((atomic_load(&g_count[SIGUSR1]) < 1 || atomic_load(&g_count[SIGUSR2]) < 2 ||
            atomic_load(&g_count[SIGHUP]) < 1 || atomic_load(&g_count[rt]) < 2) &&
           loop_ns() < end)
        ck_assert_int_eq(cio_sleep(0.001), 0);
    settle();
    ck_assert_int_eq(atomic_load(&g_count[SIGUSR1]), 1);
    ck_assert_int_eq(atomic_load(&g_count[SIGUSR2]), 2);
    ck_assert_int_eq(atomic_load(&g_count[SIGHUP]), 1);
    ck_assert_int_eq(atomic_load(&g_count[SIGTERM]), 0);
    ck_assert_int_eq(atomic_load(&g_count[rt]), 2);
    for (int i = 0; i < 5; i++) {
        ck_assert_int_eq(cio_signal_remove(NULL, sigs[i]), 1);
        ck_assert(disposition_is(sigs[i], SIG_DFL));
    }
    return 0;
}

START_TEST(several_signals)
{
    RUN_MAIN(main_several, NULL);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Dispositions: add, replace, remove                                         */
/* ------------------------------------------------------------------------ */

static void info_handler(int s, siginfo_t *si, void *uc)
{
    (void)s;
    (void)si;
    (void)uc;
}

START_TEST(remove_restores_previous)
{
    /* A previous disposition with everything set: handler, mask, flags. */
    struct sigaction mine, cur;
    memset(&mine, 0, sizeof mine);
    mine.sa_sigaction = info_handler;
    sigemptyset(&mine.sa_mask);
    sigaddset(&mine.sa_mask, SIGUSR2);
    sigaddset(&mine.sa_mask, SIGHUP);
    mine.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK;
    ck_assert_int_eq(sigaction(SIGUSR1, &mine, NULL), 0);
    signal(SIGHUP, SIG_IGN);

    cio_loop_t *a = new_loop(), *b = new_loop();
    ck_assert_int_eq(cio_signal_add(a, SIGUSR1, count_cb, NULL), 0);
    ck_assert_int_eq(cio_signal_add(b, SIGUSR1, count_cb, NULL), 0);
    ck_assert_int_eq(cio_signal_add(a, SIGHUP, count_cb, NULL), 0);
    ck_assert_int_eq(sigaction(SIGUSR1, NULL, &cur), 0);
    ck_assert(!(cur.sa_flags & SA_SIGINFO));
    ck_assert(cur.sa_flags & SA_RESTART);
    /* One loop still handles it: still cio's. */
    ck_assert_int_eq(cio_signal_remove(a, SIGUSR1), 1);
    ck_assert_int_eq(cio_signal_remove(a, SIGUSR1), 0);
    ck_assert_int_eq(sigaction(SIGUSR1, NULL, &cur), 0);
    ck_assert(!(cur.sa_flags & SA_SIGINFO));
    /* The last one: exactly what was there. */
    ck_assert_int_eq(cio_signal_remove(b, SIGUSR1), 1);
    ck_assert_int_eq(sigaction(SIGUSR1, NULL, &cur), 0);
    ck_assert_ptr_eq((void *)(uintptr_t)cur.sa_sigaction, (void *)(uintptr_t)info_handler);
    ck_assert_int_eq(cur.sa_flags & (SA_SIGINFO | SA_NODEFER | SA_ONSTACK | SA_RESTART),
                     SA_SIGINFO | SA_NODEFER | SA_ONSTACK);
    ck_assert(sigismember(&cur.sa_mask, SIGUSR2));
    ck_assert(sigismember(&cur.sa_mask, SIGHUP));
    ck_assert(!sigismember(&cur.sa_mask, SIGTERM));
    ck_assert_int_eq(cio_signal_remove(a, SIGHUP), 1);
    ck_assert(disposition_is(SIGHUP, SIG_IGN));
    /* Nothing left: removing again is 0, for any loop. */
    ck_assert_int_eq(cio_signal_remove(b, SIGHUP), 0);
    close_free(a);
    close_free(b);
}
END_TEST

static atomic_int g_first, g_second;

static void first_cb(void *arg)
{
    (void)arg;
    atomic_fetch_add(&g_first, 1);
}

static void second_cb(void *arg)
{
    atomic_fetch_add(&g_second, (int)(intptr_t)arg);
    cio_event_set(&g_ev);
}

static int main_replace(void *arg, void **result)
{
    (void)arg;
    (void)result;
    ck_assert_int_eq(cio_signal_add(NULL, SIGUSR1, first_cb, NULL), 0);
    ck_assert_int_eq(cio_signal_add(NULL, SIGUSR1, second_cb, (void *)(intptr_t)1), 0);
    send_self(SIGUSR1);
    wait_cb();
    /* Replaced again while a delivery waits: it goes to the newest. */
    send_self(SIGUSR1);
    ck_assert_int_eq(cio_signal_add(NULL, SIGUSR1, second_cb, (void *)(intptr_t)10), 0);
    wait_cb();
    settle();
    ck_assert_int_eq(atomic_load(&g_first), 0);
    ck_assert_int_eq(atomic_load(&g_second), 11);
    ck_assert_int_eq(cio_signal_remove(NULL, SIGUSR1), 1);
    ck_assert(disposition_is(SIGUSR1, SIG_DFL));
    return 0;
}

START_TEST(add_replaces)
{
    RUN_MAIN(main_replace, NULL);
}
END_TEST

/* A callback that removes its own handler; deliveries still queued for it
 * are dropped. */
static atomic_int g_self_removed;

static void remove_self_cb(void *arg)
{
    (void)arg;
    atomic_fetch_add(&g_self_removed, 1);
    ck_assert_int_eq(cio_signal_remove(NULL, SIGUSR2), 1);
    cio_event_set(&g_ev);
}

static int main_remove_self(void *arg, void **result)
{
    (void)arg;
    (void)result;
    ck_assert_int_eq(cio_signal_add(NULL, SIGUSR2, remove_self_cb, NULL), 0);
    send_self(SIGUSR2);
    send_self(SIGUSR2);
    wait_cb();
    settle();
    ck_assert_int_eq(atomic_load(&g_self_removed), 1);
    ck_assert(disposition_is(SIGUSR2, SIG_DFL));
    return 0;
}

START_TEST(callback_removes_itself)
{
    RUN_MAIN(main_remove_self, NULL);
}
END_TEST

START_TEST(invalid_signals)
{
    cio_loop_t *l = new_loop();
    int bad[] = {0, -1, 65, 1000, SIGKILL, SIGSTOP, SIGSEGV, SIGBUS, SIGFPE, SIGILL, 32, 33};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_int_eq(cio_signal_add(l, bad[i], count_cb, NULL), -EINVAL);
        ck_assert_int_eq(cio_signal_remove(l, bad[i]), -EINVAL);
    }
    ck_assert_int_eq(cio_signal_add(l, SIGUSR1, NULL, NULL), -EINVAL);
    ck_assert(disposition_is(SIGUSR1, SIG_DFL));
    /* No running loop for NULL; outside a task for the await point. */
    ck_assert_int_eq(cio_signal_add(NULL, SIGUSR1, count_cb, NULL), -EPERM);
    ck_assert_int_eq(cio_signal_remove(NULL, SIGUSR1), -EPERM);
    ck_assert_int_eq(cio_signal_wait(SIGUSR1), -EPERM);
    ck_assert_int_eq(cio_signal_remove(l, SIGUSR1), 0);
    ck_assert_int_eq(cio_signal_add(l, SIGRTMAX, count_cb, NULL), 0);
    ck_assert_int_eq(cio_signal_remove(l, SIGRTMAX), 1);
    ck_assert_int_eq(cio_loop_close(l), 0);
    ck_assert_int_eq(cio_signal_add(l, SIGUSR1, count_cb, NULL), -ESHUTDOWN);
    ck_assert_int_eq(cio_signal_remove(l, SIGUSR1), 0);
    ck_assert(disposition_is(SIGUSR1, SIG_DFL));
    ck_assert_int_eq(cio_loop_free(l), 0);
}
END_TEST

static int main_wait_invalid(void *arg, void **result)
{
    (void)arg;
    (void)result;
    ck_assert_int_eq(cio_signal_wait(SIGKILL), -EINVAL);
    ck_assert_int_eq(cio_signal_wait(0), -EINVAL);
    ck_assert_int_eq(cio_signal_wait(SIGSEGV), -EINVAL);
    return 0;
}

START_TEST(wait_invalid)
{
    RUN_MAIN(main_wait_invalid, NULL);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* cio_signal_wait                                                            */
/* ------------------------------------------------------------------------ */

static int waiter_body(void *arg, void **result)
{
    (void)result;
    return cio_signal_wait((int)(intptr_t)arg);
}

static int main_wait(void *arg, void **result)
{
    (void)arg;
    (void)result;
    /* Two waiters, and a callback on the same signal: one delivery wakes
     * both and runs the callback once. */
    cio_task_t *w1 = spawn(waiter_body, (void *)(intptr_t)SIGUSR1);
    cio_task_t *w2 = spawn(waiter_body, (void *)(intptr_t)SIGUSR1);
    settle();
    ck_assert(!disposition_is(SIGUSR1, SIG_DFL));
    ck_assert_int_eq(cio_signal_add(NULL, SIGUSR1, count_cb, (void *)(intptr_t)SIGUSR1), 0);
    send_self(SIGUSR1);
    ck_assert_int_eq(finish(w1), 0);
    ck_assert_int_eq(finish(w2), 0);
    wait_cb();
    settle();
    ck_assert_int_eq(atomic_load(&g_count[SIGUSR1]), 1);
    /* The handler keeps the signal caught after the waiters left. */
    ck_assert(!disposition_is(SIGUSR1, SIG_DFL));
    ck_assert_int_eq(cio_signal_remove(NULL, SIGUSR1), 1);
    ck_assert(disposition_is(SIGUSR1, SIG_DFL));

    /* Waiting alone catches it for the wait's duration only. */
    cio_task_t *w3 = spawn(waiter_body, (void *)(intptr_t)SIGUSR2);
    settle();
    ck_assert(!disposition_is(SIGUSR2, SIG_DFL));
    send_self(SIGUSR2);
    ck_assert_int_eq(finish(w3), 0);
    ck_assert(disposition_is(SIGUSR2, SIG_DFL));
    return 0;
}

START_TEST(wait_wakes_every_waiter)
{
    RUN_MAIN(main_wait, NULL);
}
END_TEST

static int main_wait_deadline(void *arg, void **result)
{
    (void)arg;
    (void)result;
    signal(SIGUSR1, SIG_IGN);
    cio_scope_t sc;
    int64_t t0 = loop_ns();
    ck_assert_int_eq(cio_scope_enter(&sc, D_SHORT, 0), 0);
    ck_assert_int_eq(cio_signal_wait(SIGUSR1), -ETIMEDOUT);
    ck_assert_int_eq(cio_scope_exit(&sc), -ETIMEDOUT);
    ck_assert_int_ge(loop_ns() - t0, NS_SHORT);
    ck_assert(disposition_is(SIGUSR1, SIG_IGN));

    /* Cancelled while waiting. */
    cio_task_t *w = spawn(waiter_body, (void *)(intptr_t)SIGUSR1);
    settle();
    ck_assert(!disposition_is(SIGUSR1, SIG_IGN));
    ck_assert_int_eq(cio_task_cancel(w), 1);
    ck_assert_int_eq(finish(w), -ECANCELED);
    ck_assert(disposition_is(SIGUSR1, SIG_IGN));

    /* Already cancelled: at once, nothing installed. */
    ck_assert_int_eq(cio_scope_enter(&sc, INFINITY, 0), 0);
    cio_scope_cancel(&sc);
    ck_assert_int_eq(cio_signal_wait(SIGUSR1), -ECANCELED);
    ck_assert_int_eq(cio_scope_exit(&sc), -ECANCELED);
    ck_assert(disposition_is(SIGUSR1, SIG_IGN));
    return 0;
}

START_TEST(wait_deadline_and_cancel)
{
    RUN_MAIN(main_wait_deadline, NULL);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Threads                                                                   */
/* ------------------------------------------------------------------------ */

typedef struct tloop {
    atomic_int *ready;
    atomic_int count;
    int rc;
    pthread_t self;
    bool same_thread;
    cio_event_t ev;
} tloop_t;

static void tloop_cb(void *arg)
{
    tloop_t *t = arg;
    atomic_fetch_add(&t->count, 1);
    t->same_thread = pthread_equal(pthread_self(), t->self);
    cio_event_set(&t->ev);
}

static int tloop_main(void *arg, void **result)
{
    (void)result;
    tloop_t *t = arg;
    int rc = cio_signal_add(NULL, SIGUSR1, tloop_cb, t);
    if (rc)
        return rc;
    atomic_fetch_add(t->ready, 1);
    cio_scope_t sc;
    cio_scope_enter(&sc, HANG_BOUND_S, 0);
    rc = cio_event_wait(&t->ev);
    cio_scope_exit(&sc);
    /* A few more iterations: no second run. */
    for (int i = 0; i < 8 && !rc; i++)
        rc = cio_yield();
    return rc;
}

static void *tloop_thread(void *arg)
{
    tloop_t *t = arg;
    t->self = pthread_self();
    t->rc = cio_run(tloop_main, t);
    return NULL;
}

START_TEST(two_loops_two_threads)
{
    atomic_int ready = 0;
    tloop_t t[2];
    pthread_t th[2];
    for (int i = 0; i < 2; i++) {
        memset(&t[i], 0, sizeof t[i]);
        t[i].ready = &ready;
        cio_event_init(&t[i].ev);
        ck_assert_int_eq(pthread_create(&th[i], NULL, tloop_thread, &t[i]), 0);
    }
    double end = mono_now() + HANG_BOUND_S;
    while (atomic_load(&ready) < 2 && mono_now() < end)
        sched_yield();
    ck_assert_int_eq(atomic_load(&ready), 2);
    send_self(SIGUSR1);
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(pthread_join(th[i], NULL), 0);
        ck_assert_int_eq(t[i].rc, 0);
        ck_assert_int_eq(atomic_load(&t[i].count), 1);
        ck_assert(t[i].same_thread);
    }
    ck_assert(disposition_is(SIGUSR1, SIG_DFL));
}
END_TEST

/* Sent from another thread while the loop's only task computes. */
typedef struct sender {
    atomic_int go, sent;
} sender_t;

static void *sender_thread(void *arg)
{
    sender_t *s = arg;
    while (!atomic_load(&s->go))
        sched_yield();
    kill(getpid(), SIGUSR1);
    atomic_store(&s->sent, 1);
    return NULL;
}

static int main_busy_thread(void *arg, void **result)
{
    (void)result;
    sender_t *s = arg;
    ck_assert_int_eq(cio_signal_add(NULL, SIGUSR1, count_cb, (void *)(intptr_t)SIGUSR1), 0);
    atomic_store(&s->go, 1);
    double end = mono_now() + HANG_BOUND_S;
    while (!atomic_load(&s->sent) && mono_now() < end)
        ; /* busy: no await point */
    compute(0.05);
    ck_assert_int_eq(atomic_load(&g_count[SIGUSR1]), 0);
    wait_cb();
    ck_assert_int_eq(cio_sleep(D_SHORT), 0);
    settle();
    ck_assert_int_eq(atomic_load(&g_count[SIGUSR1]), 1);
    ck_assert(pthread_equal(g_cb_thread, pthread_self()));
    return 0;
}

START_TEST(busy_loop_signal_from_thread)
{
    sender_t s = {0};
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, sender_thread, &s), 0);
    RUN_MAIN(main_busy_thread, &s);
    ck_assert_int_eq(pthread_join(th, NULL), 0);
}
END_TEST

/* Many signals from a thread while a loop adds and removes handlers: the
 * list the handler walks changes under it (TSan checks the accesses). */
typedef struct storm {
    atomic_int stop;
} storm_t;

static void *storm_thread(void *arg)
{
    storm_t *s = arg;
    while (!atomic_load(&s->stop)) {
        kill(getpid(), SIGUSR2);
        sched_yield();
    }
    return NULL;
}

static void noop_cb(void *arg)
{
    (void)arg;
}

static int main_storm(void *arg, void **result)
{
    (void)arg;
    (void)result;
    /* SIGUSR2 stays caught by this long-lived handler; the loops below
     * come and go. */
    ck_assert_int_eq(cio_signal_add(NULL, SIGUSR2, noop_cb, NULL), 0);
    storm_t s = {0};
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, storm_thread, &s), 0);
    for (int i = 0; i < 200; i++) {
        cio_loop_t *l = NULL;
        ck_assert_int_eq(cio_loop_new(&l), 0);
        ck_assert_int_eq(cio_signal_add(l, SIGUSR2, noop_cb, NULL), 0);
        ck_assert_int_eq(cio_signal_add(l, SIGHUP, noop_cb, NULL), 0);
        if (i % 2)
            ck_assert_int_eq(cio_signal_remove(l, SIGUSR2), 1);
        ck_assert_int_eq(cio_loop_free(l), 0);
        ck_assert_int_eq(cio_yield(), 0);
    }
    atomic_store(&s.stop, 1);
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    ck_assert_int_eq(cio_signal_remove(NULL, SIGUSR2), 1);
    ck_assert(disposition_is(SIGUSR2, SIG_DFL));
    ck_assert(disposition_is(SIGHUP, SIG_DFL));
    return 0;
}

START_TEST(handlers_change_under_signals)
{
    RUN_MAIN(main_storm, NULL);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Loop close, fork                                                          */
/* ------------------------------------------------------------------------ */

START_TEST(loop_close_removes_handlers)
{
    signal(SIGUSR2, SIG_IGN);
    cio_loop_t *l = new_loop();
    ck_assert_int_eq(cio_signal_add(l, SIGUSR1, count_cb, NULL), 0);
    ck_assert_int_eq(cio_signal_add(l, SIGUSR2, count_cb, NULL), 0);
    /* A delivery counted but never run: dropped with the loop. */
    send_self(SIGUSR1);
    close_free(l);
    ck_assert(disposition_is(SIGUSR1, SIG_DFL));
    ck_assert(disposition_is(SIGUSR2, SIG_IGN));
    ck_assert_int_eq(atomic_load(&g_count[0]), 0);
}
END_TEST

/* The child of a fork keeps its copy of the loop's handlers, without the
 * deliveries the parent had not seen; the two never see each other's. */
static int main_fork_child(void *arg, void **result)
{
    (void)result;
    int report_fd = *(int *)arg;
    wait_cb(); /* the delivery before cio_loop_fork */
    settle();
    ck_assert_int_eq(atomic_load(&g_count[SIGUSR1]), 1);
    ck_assert_int_eq(write(report_fd, "r", 1), 1);
    wait_cb(); /* the parent's kill */
    settle();
    return 0;
}

START_TEST(fork_child_keeps_handlers)
{
    cio_loop_t *l = new_loop();
    ck_assert_int_eq(cio_signal_add(l, SIGUSR1, count_cb, (void *)(intptr_t)SIGUSR1), 0);
    send_self(SIGUSR1); /* pending in the parent's loop at the fork */
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        alarm(30);
        close(p[0]);
        /* Delivered to the child before it forks the loop: counted on its
         * copy, run once the loop runs. */
        raise(SIGUSR1);
        int ok = cio_loop_fork(l) == 0;
        cio_task_t *t = NULL;
        ok = ok && cio_spawn_ex(&t, l, main_fork_child, &p[1], NULL) == 0 &&
             cio_loop_run_until_complete(l, t, NULL) == 0;
        cio_future_release(t);
        /* Two: its own and the parent's kill, not the parent's pending one. */
        ok = ok && atomic_load(&g_count[SIGUSR1]) == 2;
        ok = ok && cio_loop_free(l) == 0 && disposition_is(SIGUSR1, SIG_DFL);
        _exit(ok ? 0 : 3);
    }
    close(p[1]);
    char c;
    ck_assert_int_eq(read(p[0], &c, 1), 1);
    close(p[0]);
    ck_assert_int_eq(kill(pid, SIGUSR1), 0);
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %#x", st);
    /* The parent's loop gets its own delivery, once. */
    cio_task_t *t = NULL;
    ck_assert_int_eq(cio_spawn_ex(&t, l, main_wait_cb, NULL, NULL), 0);
    ck_assert_int_eq(cio_loop_run_until_complete(l, t, NULL), 0);
    cio_future_release(t);
    ck_assert_int_eq(atomic_load(&g_count[SIGUSR1]), 1);
    close_free(l);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Ctrl-C in cio_run and the runner                                           */
/* ------------------------------------------------------------------------ */

/* The child's end of the report pipe. */
static int g_report = -1;

static void report(const char *what)
{
    size_t n = strlen(what);
    ck_assert_int_eq(write(g_report, what, n), (ssize_t)n);
}

/* What the cio_run child does, and how it reports. */
/* RETURN: cleans up and returns -ECANCELED; HANG: the cleanup awaits
 * forever (shielded); BLOCK: the cleanup blocks the loop in a system call
 * forever; SWALLOW: cleans up and returns 7. */
enum cleanup_kind { CLEANUP_RETURN, CLEANUP_HANG, CLEANUP_BLOCK, CLEANUP_SWALLOW };

typedef struct intr {
    enum cleanup_kind kind;
    uint8_t mode;   /* cio_run_opts_t.sigint */
} intr_t;

static int leftover_body(void *arg, void **result)
{
    (void)arg;
    (void)result;
    int rc = cio_sleep(INFINITY);
    report(rc == -ECANCELED ? "leftover;" : "leftover?;");
    return rc;
}

static int main_intr(void *arg, void **result)
{
    (void)result;
    const intr_t *in = arg;
    ck_assert_int_eq(cio_spawn(NULL, leftover_body, NULL), 0);
    settle();
    report(disposition_is(SIGINT, SIG_DFL) ? "dfl;ready;" : "caught;ready;");
    int rc = cio_sleep(INFINITY);
    report(rc == -ECANCELED ? "cancelled;" : "woke?;");
    if (in->kind == CLEANUP_HANG) {
        /* A cleanup that never ends: only a second Ctrl-C stops it. */
        cio_scope_t sh;
        ck_assert_int_eq(cio_scope_enter(&sh, INFINITY, CIO_SCOPE_SHIELD), 0);
        report("hanging;");
        cio_sleep(INFINITY);
        report("unreachable;");
    }
    if (in->kind == CLEANUP_BLOCK) {
        /* Stuck in a system call: the loop itself never gets control. */
        int never[2];
        ck_assert_int_eq(pipe(never), 0);
        report("hanging;");
        char c;
        ssize_t n = read(never[0], &c, 1);
        report(n < 0 ? "read failed;" : "unreachable;");
    }
    /* The cleanup can still await inside a shielded scope. */
    cio_scope_t sh;
    ck_assert_int_eq(cio_scope_enter(&sh, INFINITY, CIO_SCOPE_SHIELD), 0);
    ck_assert_int_eq(cio_sleep(0.001), 0);
    cio_scope_exit(&sh);
    report("cleanup;");
    return in->kind == CLEANUP_SWALLOW ? 7 : rc;
}

/* Forks a child that runs main_intr under cio_run_ex; once it reports
 * "ready;", sends SIGINT (`sigints` times, the second after "hanging;").
 * Returns the child's reports; *status gets its wait status. */
static const char *run_intr_child(const intr_t *in, int sigints, int *status)
{
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        alarm(30);
        close(p[0]);
        g_report = p[1];
        cio_run_opts_t o = {.sigint = in->mode};
        int rc = cio_run_ex(main_intr, (void *)in, NULL, &o);
        char buf[64];
        snprintf(buf, sizeof buf, "returned %d%s;", rc,
                 disposition_is(SIGINT, SIG_DFL) ? "" : " handler left");
        report(buf);
        _exit(0);
    }
    close(p[1]);
    static char out[512];
    size_t len = 0;
    int sent = 0;
    for (;;) {
        ssize_t n = read(p[0], out + len, sizeof out - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
        out[len] = 0;
        if (sent == 0 && strstr(out, "ready;")) {
            ck_assert_int_eq(kill(pid, SIGINT), 0);
            sent = 1;
        }
        if (sent == 1 && sigints == 2 && strstr(out, "hanging;")) {
            ck_assert_int_eq(kill(pid, SIGINT), 0);
            sent = 2;
        }
    }
    out[len] = 0;
    close(p[0]);
    ck_assert_int_eq(waitpid(pid, status, 0), pid);
    return out;
}

START_TEST(sigint_cancels_main_and_reraises)
{
    intr_t in = {CLEANUP_RETURN, CIO_SIGINT_RAISE};
    int st;
    const char *out = run_intr_child(&in, 1, &st);
    ck_assert_str_eq(out, "caught;ready;cancelled;cleanup;leftover;");
    ck_assert_msg(WIFSIGNALED(st) && WTERMSIG(st) == SIGINT, "status %#x, reports %s", st, out);
}
END_TEST

START_TEST(sigint_eintr_option)
{
    intr_t in = {CLEANUP_RETURN, CIO_SIGINT_EINTR};
    int st;
    const char *out = run_intr_child(&in, 1, &st);
    char want[128];
    snprintf(want, sizeof want, "caught;ready;cancelled;cleanup;leftover;returned %d;", -EINTR);
    ck_assert_str_eq(out, want);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %#x", st);
}
END_TEST

/*
 * The second SIGINT ends the child at once, whether its cleanup hangs in an
 * await point or blocks the loop in a system call. Not under
 * ThreadSanitizer: a handler that sets SIG_DFL and raises its signal does
 * not end a TSan process (TSan swallows the re-raised signal: a ten-line
 * program doing only that survives under -fsanitize=thread and dies
 * without it), so there the check would only measure TSan.
 */
static void second_sigint_ends(enum cleanup_kind kind)
{
#ifdef UNDER_TSAN
    (void)kind;
#else
    intr_t in = {kind, CIO_SIGINT_RAISE};
    int st;
    double t0 = mono_now();
    const char *out = run_intr_child(&in, 2, &st);
    ck_assert_str_eq(out, "caught;ready;cancelled;hanging;");
    ck_assert_msg(WIFSIGNALED(st) && WTERMSIG(st) == SIGINT, "status %#x, reports %s", st, out);
    ck_assert(mono_now() - t0 < HANG_BOUND_S);
#endif
}

START_TEST(sigint_second_ends_hanging_cleanup)
{
    second_sigint_ends(CLEANUP_HANG);
}
END_TEST

START_TEST(sigint_second_ends_blocked_cleanup)
{
    second_sigint_ends(CLEANUP_BLOCK);
}
END_TEST

/* A main task that handles the cancellation and returns another status
 * ends the run normally (Python raises KeyboardInterrupt only for a
 * CancelledError that propagates). */
START_TEST(sigint_swallowed_by_main)
{
    intr_t in = {CLEANUP_SWALLOW, CIO_SIGINT_RAISE};
    int st;
    const char *out = run_intr_child(&in, 1, &st);
    ck_assert_str_eq(out, "caught;ready;cancelled;cleanup;leftover;returned 7;");
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %#x", st);
}
END_TEST

/* CIO_SIGINT_OFF: no handler; the main task sees SIGINT's default. */
START_TEST(sigint_off_installs_nothing)
{
    intr_t in = {CLEANUP_RETURN, CIO_SIGINT_OFF};
    int st;
    const char *out = run_intr_child(&in, 1, &st);
    ck_assert_str_eq(out, "dfl;ready;");
    ck_assert_msg(WIFSIGNALED(st) && WTERMSIG(st) == SIGINT, "status %#x", st);
}
END_TEST

static int main_report_sigint(void *arg, void **result)
{
    (void)result;
    bool *installed = arg;
    *installed = !disposition_is(SIGINT, SIG_DFL) && !disposition_is(SIGINT, SIG_IGN);
    return 0;
}

static void *run_report_thread(void *arg)
{
    cio_run(main_report_sigint, arg);
    return NULL;
}

START_TEST(sigint_only_main_thread_and_default)
{
    bool installed = false;
    /* The main thread with SIGINT at its default: installed, then gone. */
    RUN_MAIN(main_report_sigint, &installed);
    ck_assert(installed);
    ck_assert(disposition_is(SIGINT, SIG_DFL));
    /* Another thread: not installed. */
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, run_report_thread, &installed), 0);
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    ck_assert(!installed);
    /* SIGINT ignored (a background job): left alone. */
    signal(SIGINT, SIG_IGN);
    RUN_MAIN(main_report_sigint, &installed);
    ck_assert(!installed);
    ck_assert(disposition_is(SIGINT, SIG_IGN));
    signal(SIGINT, SIG_DFL);
    /* Bad option values. */
    cio_run_opts_t o = {.sigint = 3};
    ck_assert_int_eq(cio_run_ex(main_report_sigint, &installed, NULL, &o), -EINVAL);
    cio_runner_t *r = NOT_SET;
    ck_assert_int_eq(cio_runner_new(&r, &o), -EINVAL);
    ck_assert_ptr_null(r);
}
END_TEST

/* The runner: a run interrupted by SIGINT returns -EINTR (Runner.run raises
 * KeyboardInterrupt); the runner stays usable and its next run installs the
 * handler afresh. */
static int main_runner_wait(void *arg, void **result)
{
    (void)arg;
    (void)result;
    ck_assert(!disposition_is(SIGINT, SIG_DFL));
    raise(SIGINT); /* Ctrl-C, delivered to this thread before raise returns */
    int rc = cio_sleep(INFINITY);
    ck_assert_int_eq(rc, -ECANCELED);
    return rc;
}

static int main_runner_ok(void *arg, void **result)
{
    (void)arg;
    *result = (void *)(intptr_t)42;
    return disposition_is(SIGINT, SIG_DFL) ? -EIO : 0;
}

START_TEST(runner_run_interrupted)
{
    cio_runner_t *r = NULL;
    ck_assert_int_eq(cio_runner_new(&r, NULL), 0);
    ck_assert_int_eq(cio_runner_run(r, main_runner_wait, NULL, NULL), -EINTR);
    ck_assert(disposition_is(SIGINT, SIG_DFL));
    void *res = NULL;
    ck_assert_int_eq(cio_runner_run(r, main_runner_ok, NULL, &res), 0);
    ck_assert_ptr_eq(res, (void *)(intptr_t)42);
    ck_assert(disposition_is(SIGINT, SIG_DFL));
    ck_assert_int_eq(cio_runner_close(r), 0);
}
END_TEST

/* A user's SIGINT handler replaces the run's; removing it gives the run's
 * back, and the run leaves SIGINT as it found it. */
static void intr_cb(void *arg)
{
    atomic_fetch_add((atomic_int *)arg, 1);
    cio_event_set(&g_ev);
}

static int main_user_sigint(void *arg, void **result)
{
    (void)result;
    struct sigaction run;
    ck_assert_int_eq(sigaction(SIGINT, NULL, &run), 0);
    ck_assert(run.sa_handler != SIG_DFL);
    ck_assert_int_eq(cio_signal_add(NULL, SIGINT, intr_cb, arg), 0);
    raise(SIGINT);
    wait_cb();
    ck_assert_int_eq(cio_signal_remove(NULL, SIGINT), 1);
    struct sigaction cur;
    ck_assert_int_eq(sigaction(SIGINT, NULL, &cur), 0);
    ck_assert(cur.sa_handler == run.sa_handler);
    return 0;
}

START_TEST(user_sigint_handler_inside_run)
{
    atomic_int n = 0;
    RUN_MAIN(main_user_sigint, &n);
    ck_assert_int_eq(atomic_load(&n), 1);
    ck_assert(disposition_is(SIGINT, SIG_DFL));
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Resource failures                                                         */
/* ------------------------------------------------------------------------ */

static int g_wait_rc;

static int main_alloc_wait(void *arg, void **result)
{
    (void)result;
    cio_fail_alloc_arm(*(long *)arg, false);
    cio_scope_t sc;
    cio_scope_enter(&sc, 0.001, 0);
    g_wait_rc = cio_signal_wait(SIGUSR1);
    cio_scope_exit(&sc);
    cio_fail_alloc_disarm();
    return 0;
}

START_TEST(allocation_failures)
{
    /* Each test is a fresh process where cio has not run yet. */
    ck_assert_int_eq(cio_fail_alloc_install(), 0);
    int failures = 0;
    for (long n = 1;; n++) {
        cio_loop_t *l = new_loop();
        cio_fail_alloc_arm(n, false);
        int rc = cio_signal_add(l, SIGUSR1, count_cb, NULL);
        bool injected = cio_fail_alloc_injected();
        cio_fail_alloc_disarm();
        if (injected) {
            ck_assert_int_eq(rc, -ENOMEM);
            ck_assert(disposition_is(SIGUSR1, SIG_DFL));
            failures++;
        } else {
            ck_assert_int_eq(rc, 0);
        }
        close_free(l);
        ck_assert(disposition_is(SIGUSR1, SIG_DFL));
        ck_assert_int_eq(cio_fail_alloc_live(), 0);
        if (rc == 0)
            break;
    }
    ck_assert_int_ge(failures, 1);

    /* The same for a second signal on a loop that has one already. */
    for (long n = 1;; n++) {
        cio_loop_t *l = new_loop();
        ck_assert_int_eq(cio_signal_add(l, SIGUSR1, count_cb, NULL), 0);
        cio_fail_alloc_arm(n, false);
        int rc = cio_signal_add(l, SIGUSR2, count_cb, NULL);
        bool injected = cio_fail_alloc_injected();
        cio_fail_alloc_disarm();
        ck_assert_int_eq(rc, injected ? -ENOMEM : 0);
        ck_assert(disposition_is(SIGUSR2, SIG_DFL) == (rc != 0));
        ck_assert(!disposition_is(SIGUSR1, SIG_DFL));
        close_free(l);
        ck_assert_int_eq(cio_fail_alloc_live(), 0);
        if (rc == 0)
            break;
    }

    /* cio_signal_wait: -ENOMEM, or the deadline once nothing fails. */
    for (long n = 1;; n++) {
        cio_loop_t *l = new_loop();
        cio_task_t *t = NULL;
        ck_assert_int_eq(cio_spawn_ex(&t, l, main_alloc_wait, &n, NULL), 0);
        ck_assert_int_eq(cio_loop_run_until_complete(l, t, NULL), 0);
        cio_future_release(t);
        ck_assert(disposition_is(SIGUSR1, SIG_DFL));
        close_free(l);
        ck_assert_int_eq(cio_fail_alloc_live(), 0);
        if (g_wait_rc == -ETIMEDOUT)
            break;
        ck_assert_int_eq(g_wait_rc, -ENOMEM);
    }
}
END_TEST

/* Handlers need no descriptor (the loop's own wake-up eventfd carries the
 * deliveries): with none free, one is added and its delivery runs. */
START_TEST(out_of_descriptors)
{
    cio_loop_t *l = new_loop();
    struct rlimit old, low;
    ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
    low = old;
    low.rlim_cur = 256;
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
    int fds[256], n = 0;
    while (n < 256 && (fds[n] = open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0)
        n++;
    ck_assert_int_eq(errno, EMFILE);
    ck_assert_int_eq(cio_signal_add(l, SIGUSR1, count_cb, (void *)(intptr_t)SIGUSR1), 0);
    ck_assert(!disposition_is(SIGUSR1, SIG_DFL));
    send_self(SIGUSR1);
    cio_task_t *t = NULL;
    ck_assert_int_eq(cio_spawn_ex(&t, l, main_wait_cb, NULL, NULL), 0);
    ck_assert_int_eq(cio_loop_run_until_complete(l, t, NULL), 0);
    cio_future_release(t);
    ck_assert_int_eq(atomic_load(&g_count[SIGUSR1]), 1);
    while (n > 0)
        close(fds[--n]);
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &old), 0);
    close_free(l);
    ck_assert(disposition_is(SIGUSR1, SIG_DFL));
}
END_TEST

/*
 * Runs in each test's process before the test: check's runner handles
 * SIGINT and SIGTERM itself (it forwards them to the test's process group)
 * and its children inherit that, so each test starts from the defaults a
 * program normally starts with.
 */
static void default_dispositions(void)
{
    int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGUSR1, SIGUSR2};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
        signal(sigs[i], SIG_DFL);
}

/* A TCase whose tests start from the default dispositions. */
static TCase *signal_tcase(Suite *s, const char *name)
{
    TCase *tc = add_tcase(s, name, TEST_TIMEOUT);
    tcase_add_checked_fixture(tc, default_dispositions, NULL);
    return tc;
}

static Suite *suite(void)
{
    Suite *s = suite_create("signal");
    TCase *tc = signal_tcase(s, "handlers");
    tcase_add_test(tc, handler_runs_as_loop_callback);
    tcase_add_test(tc, handler_on_idle_loop);
    tcase_add_test(tc, busy_loop_delivered_once);
    tcase_add_test(tc, several_signals);
    tcase_add_test(tc, remove_restores_previous);
    tcase_add_test(tc, add_replaces);
    tcase_add_test(tc, callback_removes_itself);
    tcase_add_test(tc, invalid_signals);
    tcase_add_test(tc, wait_invalid);
    tc = signal_tcase(s, "wait");
    tcase_add_test(tc, wait_wakes_every_waiter);
    tcase_add_test(tc, wait_deadline_and_cancel);
    tc = signal_tcase(s, "threads");
    tcase_add_test(tc, two_loops_two_threads);
    tcase_add_test(tc, busy_loop_signal_from_thread);
    tcase_add_test(tc, handlers_change_under_signals);
    tc = signal_tcase(s, "lifetime");
    tcase_add_test(tc, loop_close_removes_handlers);
    tcase_add_test(tc, fork_child_keeps_handlers);
    tc = signal_tcase(s, "ctrl_c");
    tcase_add_test(tc, sigint_cancels_main_and_reraises);
    tcase_add_test(tc, sigint_eintr_option);
    tcase_add_test(tc, sigint_second_ends_hanging_cleanup);
    tcase_add_test(tc, sigint_second_ends_blocked_cleanup);
    tcase_add_test(tc, sigint_swallowed_by_main);
    tcase_add_test(tc, sigint_off_installs_nothing);
    tcase_add_test(tc, sigint_only_main_thread_and_default);
    tcase_add_test(tc, runner_run_interrupted);
    tcase_add_test(tc, user_sigint_handler_inside_run);
    tc = signal_tcase(s, "faults");
    tcase_add_test(tc, allocation_failures);
    tcase_add_test(tc, out_of_descriptors);
    return s;
}

CIO_TEST_MAIN(suite)
