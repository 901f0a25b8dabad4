/*
 * Synchronisation primitives (sync.c): Lock, Event, Condition, Semaphore,
 * BoundedSemaphore, Barrier. asyncio's documented semantics, strict FIFO
 * service, cancellation and scope deadlines at every wait, level-triggered
 * checks on waits that would not suspend, bad input, and the races that
 * bit asyncio: a lock waiter cancelled right after being handed the lock
 * (bpo-27585), a semaphore released and cancelled in the same iteration, a
 * condition waiter notified and then cancelled.
 */
#include "cio_test.h"

#include <limits.h>




/* ------------------------------------------------------------------------ */
/* Lock                                                                      */
/* ------------------------------------------------------------------------ */

static cio_lock_t g_lock;
static int g_order[64], g_norder;

static int main_lock_basic(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_lock_t l = CIO_LOCK_INIT;
    ck_assert(!cio_lock_locked(&l));
    ck_assert_int_eq(cio_lock_release(&l), -EPERM); /* not acquired */
    ck_assert_int_eq(cio_lock_acquire(&l), 0);
    ck_assert(cio_lock_locked(&l));
    ck_assert_int_eq(cio_lock_try_acquire(&l), -EAGAIN);
    ck_assert_int_eq(cio_lock_acquire(&l), -EDEADLK); /* not recursive */
    ck_assert_int_eq(cio_lock_release(&l), 0);
    ck_assert(!cio_lock_locked(&l));
    ck_assert_int_eq(cio_lock_try_acquire(&l), 0);
    ck_assert_int_eq(cio_lock_release(&l), 0);
    ck_assert_int_eq(cio_lock_release(&l), -EPERM);
    /* Bad input. */
    ck_assert_int_eq(cio_lock_acquire(NULL), -EINVAL);
    ck_assert_int_eq(cio_lock_try_acquire(NULL), -EINVAL);
    ck_assert_int_eq(cio_lock_release(NULL), -EINVAL);
    ck_assert(!cio_lock_locked(NULL));
    ck_assert_int_eq(cio_lock_init(NULL), -EINVAL);
    return 0;
}

START_TEST(lock_basic)
{
    /* Outside a task the await point refuses; the rest works anywhere. */
    cio_lock_t l;
    ck_assert_int_eq(cio_lock_init(&l), 0);
    ck_assert(!cio_lock_locked(&l));
    ck_assert_int_eq(cio_lock_acquire(&l), -EPERM);
    ck_assert_int_eq(cio_lock_try_acquire(&l), 0);
    ck_assert_int_eq(cio_lock_release(&l), 0);
    RUN_MAIN(main_lock_basic, NULL);
}
END_TEST

static int body_lock_order(void *arg, void **result)
{
    (void)result;
    int rc = cio_lock_acquire(&g_lock);
    if (rc)
        return rc;
    g_order[g_norder++] = (int)(intptr_t)arg;
    /* Hold it across a suspension: the others must queue. */
    ck_assert_int_eq(cio_sleep(0), 0);
    return cio_lock_release(&g_lock);
}

static int main_lock_fifo(void *arg, void **result)
{
    (void)arg;
    (void)result;
    enum { N = 20 };
    cio_lock_init(&g_lock);
    g_norder = 0;
    ck_assert_int_eq(cio_lock_acquire(&g_lock), 0);
    cio_task_t *t[N];
    for (int i = 0; i < N; i++)
        t[i] = spawn(body_lock_order, (void *)(intptr_t)i);
    settle(); /* all N are queued, in spawn order */
    ck_assert_int_eq(g_norder, 0);
    ck_assert_int_eq(cio_lock_release(&g_lock), 0);
    /* Hand-off: the lock went to the first waiter; no barging. */
    ck_assert(cio_lock_locked(&g_lock));
    ck_assert_int_eq(cio_lock_try_acquire(&g_lock), -EAGAIN);
    /* Re-acquiring queues us behind all N. */
    ck_assert_int_eq(cio_lock_acquire(&g_lock), 0);
    ck_assert_int_eq(g_norder, N);
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(g_order[i], i);
    ck_assert_int_eq(cio_lock_release(&g_lock), 0);
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(finish(t[i]), 0);
    ck_assert(!cio_lock_locked(&g_lock));
    return 0;
}

START_TEST(lock_fifo_handoff)
{
    RUN_MAIN(main_lock_fifo, NULL);
}
END_TEST

/* Mutual exclusion under contention: a read-yield-write counter. */
static long g_counter;

static int body_lock_counter(void *arg, void **result)
{
    (void)result;
    int k = (int)(intptr_t)arg;
    for (int i = 0; i < k; i++) {
        int rc = cio_lock_acquire(&g_lock);
        if (rc)
            return rc;
        long v = g_counter;
        ck_assert_int_eq(cio_yield(), 0);
        g_counter = v + 1;
        ck_assert_int_eq(cio_lock_release(&g_lock), 0);
    }
    return 0;
}

static int main_lock_counter(void *arg, void **result)
{
    (void)arg;
    (void)result;
    enum { T = 50, K = 40 };
    cio_lock_init(&g_lock);
    g_counter = 0;
    cio_task_t *t[T];
    for (int i = 0; i < T; i++)
        t[i] = spawn(body_lock_counter, (void *)(intptr_t)K);
    ck_assert_int_eq(cio_gather(t, T, NULL, NULL, 0), 0);
    for (int i = 0; i < T; i++)
        cio_future_release(t[i]);
    ck_assert_int_eq(g_counter, (long)T * K);
    ck_assert(!cio_lock_locked(&g_lock));
    return 0;
}

START_TEST(lock_mutual_exclusion)
{
    RUN_MAIN(main_lock_counter, NULL);
}
END_TEST

/* bpo-27585: cancelled right after being handed the lock. */
typedef struct lock_probe {
    int acquired;     /* what acquire returned */
    int after;        /* the next await point */
    int released;     /* what release returned */
} lock_probe;

static int body_lock_probe(void *arg, void **result)
{
    (void)result;
    lock_probe *p = arg;
    p->acquired = cio_lock_acquire(&g_lock);
    p->after = cio_sleep(0);
    p->released = p->acquired == 0 ? cio_lock_release(&g_lock) : 12345;
    return 0;
}

static int main_lock_cancel_after_wake(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_lock_init(&g_lock);
    lock_probe p = {99, 99, 99}, q = {99, 99, 99};
    ck_assert_int_eq(cio_lock_acquire(&g_lock), 0);
    cio_task_t *b = spawn(body_lock_probe, &p);
    cio_task_t *c = spawn(body_lock_probe, &q);
    settle();
    /* Release hands the lock to b; b is cancelled before it runs. */
    ck_assert_int_eq(cio_lock_release(&g_lock), 0);
    ck_assert_int_eq(cio_task_cancel(b), 1);
    ck_assert_int_eq(finish(b), 0);
    ck_assert_int_eq(p.acquired, 0);          /* it kept the lock */
    ck_assert_int_eq(p.after, -ECANCELED);    /* level-triggered from then on */
    ck_assert_int_eq(p.released, 0);          /* it knew it held it */
    /* The lock was not lost: c got it next and released it. */
    ck_assert_int_eq(finish(c), 0);
    ck_assert_int_eq(q.acquired, 0);
    ck_assert_int_eq(q.released, 0);
    ck_assert(!cio_lock_locked(&g_lock));
    ck_assert_int_eq(cio_lock_try_acquire(&g_lock), 0);
    ck_assert_int_eq(cio_lock_release(&g_lock), 0);
    return 0;
}

START_TEST(lock_cancel_after_handoff)
{
    RUN_MAIN(main_lock_cancel_after_wake, NULL);
}
END_TEST

static int main_lock_cancel_waiting(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_lock_init(&g_lock);
    g_norder = 0;
    ck_assert_int_eq(cio_lock_acquire(&g_lock), 0);
    cio_task_t *t[3];
    for (int i = 0; i < 3; i++)
        t[i] = spawn(body_lock_order, (void *)(intptr_t)i);
    settle();
    /* Cancel the middle waiter while it waits: it leaves the queue. */
    ck_assert_int_eq(cio_task_cancel(t[1]), 1);
    settle();
    ck_assert(cio_future_done(t[1]));
    ck_assert_int_eq(finish(t[1]), -ECANCELED);
    ck_assert_int_eq(cio_lock_release(&g_lock), 0);
    ck_assert_int_eq(finish(t[0]), 0);
    ck_assert_int_eq(finish(t[2]), 0);
    ck_assert_int_eq(g_norder, 2);
    ck_assert_int_eq(g_order[0], 0);
    ck_assert_int_eq(g_order[1], 2);
    ck_assert(!cio_lock_locked(&g_lock));

    /* A lone waiter cancelled: the released lock becomes free. */
    ck_assert_int_eq(cio_lock_acquire(&g_lock), 0);
    cio_task_t *w = spawn(body_lock_order, (void *)(intptr_t)7);
    settle();
    ck_assert_int_eq(cio_task_cancel(w), 1);
    ck_assert_int_eq(finish(w), -ECANCELED);
    ck_assert_int_eq(cio_lock_release(&g_lock), 0);
    ck_assert(!cio_lock_locked(&g_lock));
    return 0;
}

START_TEST(lock_cancel_waiting)
{
    RUN_MAIN(main_lock_cancel_waiting, NULL);
}
END_TEST

/* A task that tries to take the lock within a deadline. */
typedef struct timed_acq {
    double timeout;
    int rc, exit_rc;
    int64_t elapsed;
} timed_acq;

static int body_timed_acquire(void *arg, void **result)
{
    (void)result;
    timed_acq *a = arg;
    cio_scope_t s;
    int64_t t0 = loop_ns();
    ck_assert_int_eq(cio_scope_enter(&s, a->timeout, 0), 0);
    a->rc = cio_lock_acquire(&g_lock);
    a->exit_rc = cio_scope_exit(&s);
    a->elapsed = loop_ns() - t0;
    if (a->rc == 0)
        ck_assert_int_eq(cio_lock_release(&g_lock), 0);
    return 0;
}

static int main_lock_deadline(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_lock_init(&g_lock);
    ck_assert_int_eq(cio_lock_acquire(&g_lock), 0);
    timed_acq a = {D_SHORT, 99, 99, 0}, b = {INFINITY, 99, 99, 0};
    cio_task_t *ta = spawn(body_timed_acquire, &a);
    cio_task_t *tb = spawn(body_timed_acquire, &b);
    ck_assert_int_eq(cio_sleep(D_MED), 0);
    ck_assert(cio_future_done(ta));
    ck_assert_int_eq(a.rc, -ETIMEDOUT);
    ck_assert_int_eq(a.exit_rc, -ETIMEDOUT);
    ck_assert_int_ge(a.elapsed, NS_SHORT);
    ck_assert(!cio_future_done(tb));
    ck_assert_int_eq(cio_lock_release(&g_lock), 0); /* to b, not to a */
    ck_assert_int_eq(finish(ta), 0);
    ck_assert_int_eq(finish(tb), 0);
    ck_assert_int_eq(b.rc, 0);
    ck_assert_int_eq(b.exit_rc, 0);
    ck_assert(!cio_lock_locked(&g_lock));

    /* Level-triggered: an expired scope fails even a free lock's acquire,
     * and the lock stays free. */
    cio_scope_t s;
    ck_assert_int_eq(cio_scope_enter(&s, 0, 0), 0);
    ck_assert_int_eq(cio_lock_acquire(&g_lock), -ETIMEDOUT);
    ck_assert_int_eq(cio_scope_exit(&s), -ETIMEDOUT);
    ck_assert(!cio_lock_locked(&g_lock));
    return 0;
}

START_TEST(lock_deadline)
{
    RUN_MAIN(main_lock_deadline, NULL);
}
END_TEST

static int body_cancelled_acquire(void *arg, void **result)
{
    (void)result;
    (void)arg;
    /* The task is cancelled before it starts: every await point fails,
     * including acquiring a free lock, which stays free. */
    int rc = cio_lock_acquire(&g_lock);
    ck_assert_int_eq(rc, -ECANCELED);
    ck_assert(!cio_lock_locked(&g_lock));
    /* Cleanup that needs the lock takes it in a shielded scope. */
    cio_scope_t s;
    ck_assert_int_eq(cio_scope_enter(&s, INFINITY, CIO_SCOPE_SHIELD), 0);
    ck_assert_int_eq(cio_lock_acquire(&g_lock), 0);
    ck_assert_int_eq(cio_sleep(0), 0);
    ck_assert_int_eq(cio_lock_release(&g_lock), 0);
    ck_assert_int_eq(cio_scope_exit(&s), 0);
    ck_assert_int_eq(cio_sleep(0), -ECANCELED);
    return rc;
}

static int main_lock_level(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_lock_init(&g_lock);
    cio_task_t *t = spawn(body_cancelled_acquire, NULL);
    ck_assert_int_eq(cio_task_cancel(t), 1);
    ck_assert_int_eq(finish(t), -ECANCELED);
    ck_assert(!cio_lock_locked(&g_lock));
    return 0;
}

START_TEST(lock_level_triggered)
{
    RUN_MAIN(main_lock_level, NULL);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Event                                                                     */
/* ------------------------------------------------------------------------ */

static cio_event_t g_event;
static int g_woken;

static int body_event_wait(void *arg, void **result)
{
    (void)arg;
    (void)result;
    int rc = cio_event_wait(&g_event);
    if (rc == 0)
        g_woken++;
    return rc;
}

static int main_event(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_event_init(&g_event);
    g_woken = 0;
    ck_assert(!cio_event_is_set(&g_event));
    cio_task_t *t[5];
    for (int i = 0; i < 5; i++)
        t[i] = spawn(body_event_wait, NULL);
    settle();
    ck_assert_int_eq(g_woken, 0);
    /* Set then clear before the waiters run: they still return 0. */
    cio_event_set(&g_event);
    ck_assert(cio_event_is_set(&g_event));
    cio_event_clear(&g_event);
    ck_assert(!cio_event_is_set(&g_event));
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(finish(t[i]), 0);
    ck_assert_int_eq(g_woken, 5);
    /* Set: waits return at once. */
    cio_event_set(&g_event);
    cio_event_set(&g_event); /* idempotent */
    ck_assert_int_eq(cio_event_wait(&g_event), 0);
    cio_event_clear(&g_event);
    /* Timeout through a scope. */
    cio_scope_t s;
    int64_t t0 = loop_ns();
    ck_assert_int_eq(cio_scope_enter(&s, D_SHORT, 0), 0);
    ck_assert_int_eq(cio_event_wait(&g_event), -ETIMEDOUT);
    ck_assert_int_eq(cio_scope_exit(&s), -ETIMEDOUT);
    ck_assert_int_ge(loop_ns() - t0, NS_SHORT);
    /* Level-triggered even when set. */
    cio_event_set(&g_event);
    ck_assert_int_eq(cio_scope_enter(&s, 0, 0), 0);
    ck_assert_int_eq(cio_event_wait(&g_event), -ETIMEDOUT);
    ck_assert_int_eq(cio_scope_exit(&s), -ETIMEDOUT);
    /* Cancellation of one waiter does not disturb the others. */
    cio_event_clear(&g_event);
    g_woken = 0;
    cio_task_t *a = spawn(body_event_wait, NULL), *b = spawn(body_event_wait, NULL);
    settle();
    ck_assert_int_eq(cio_task_cancel(a), 1);
    ck_assert_int_eq(finish(a), -ECANCELED);
    cio_event_set(&g_event);
    ck_assert_int_eq(finish(b), 0);
    ck_assert_int_eq(g_woken, 1);
    /* Bad input. */
    ck_assert_int_eq(cio_event_wait(NULL), -EINVAL);
    ck_assert(!cio_event_is_set(NULL));
    cio_event_set(NULL);
    cio_event_clear(NULL);
    ck_assert_int_eq(cio_event_init(NULL), -EINVAL);
    return 0;
}

START_TEST(event_semantics)
{
    cio_event_t e = CIO_EVENT_INIT;
    ck_assert_int_eq(cio_event_wait(&e), -EPERM);
    cio_event_t e2;
    memset(&e2, 0xff, sizeof e2);
    ck_assert_int_eq(cio_event_init(&e2), 0);
    ck_assert(!cio_event_is_set(&e2));
    ck_assert_int_eq(cio_event_init(NULL), -EINVAL);
    RUN_MAIN(main_event, NULL);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Condition                                                                 */
/* ------------------------------------------------------------------------ */

static cio_cond_t g_cond;
static int g_items;  /* protected by the condition's lock */
static int g_cond_rc[16];

static bool have_items(void *arg)
{
    (void)arg;
    return g_items > 0;
}

static int body_cond_consumer(void *arg, void **result)
{
    (void)result;
    int id = (int)(intptr_t)arg;
    cio_lock_t *l = cio_cond_lock(&g_cond);
    int rc = cio_lock_acquire(l);
    if (rc)
        return rc;
    rc = cio_cond_wait_for(&g_cond, have_items, NULL);
    g_cond_rc[id] = rc;
    ck_assert(cio_lock_locked(l)); /* held in every case */
    if (rc == 0) {
        g_items--;
        g_order[g_norder++] = id;
    }
    ck_assert_int_eq(cio_lock_release(l), 0);
    return rc;
}

static int main_cond_basic(void *arg, void **result)
{
    (void)arg;
    (void)result;
    ck_assert_int_eq(cio_cond_init(&g_cond, NULL), 0);
    cio_lock_t *l = cio_cond_lock(&g_cond);
    ck_assert_ptr_nonnull(l);
    g_items = 0;
    g_norder = 0;
    /* Without the lock: -EPERM, nothing happens. */
    ck_assert_int_eq(cio_cond_wait(&g_cond), -EPERM);
    ck_assert_int_eq(cio_cond_notify(&g_cond, 1), -EPERM);
    ck_assert_int_eq(cio_cond_notify_all(&g_cond), -EPERM);
    ck_assert_int_eq(cio_cond_wait_for(&g_cond, have_items, NULL), -EPERM);

    enum { N = 5 };
    cio_task_t *t[N];
    for (int i = 0; i < N; i++)
        t[i] = spawn(body_cond_consumer, (void *)(intptr_t)i);
    settle();
    ck_assert_int_eq(cio_lock_acquire(l), 0);
    ck_assert_int_eq(cio_cond_notify(&g_cond, 0), 0);
    /* notify(2) wakes the first two, FIFO. */
    g_items = 2;
    ck_assert_int_eq(cio_cond_notify(&g_cond, 2), 2);
    ck_assert_int_eq(g_norder, 0); /* they need the lock first */
    ck_assert_int_eq(cio_lock_release(l), 0);
    settle();
    ck_assert_int_eq(g_norder, 2);
    ck_assert_int_eq(g_order[0], 0);
    ck_assert_int_eq(g_order[1], 1);
    /* A spurious notify: predicate false, they wait again. */
    ck_assert_int_eq(cio_lock_acquire(l), 0);
    ck_assert_int_eq(cio_cond_notify_all(&g_cond), 3);
    ck_assert_int_eq(cio_lock_release(l), 0);
    settle();
    ck_assert_int_eq(g_norder, 2);
    /* notify_all with three items: all go, in their queue order. */
    ck_assert_int_eq(cio_lock_acquire(l), 0);
    g_items = 3;
    ck_assert_int_eq(cio_cond_notify_all(&g_cond), 3);
    ck_assert_int_eq(cio_lock_release(l), 0);
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(finish(t[i]), 0);
    ck_assert_int_eq(g_norder, 5);
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(g_order[i], i);
    ck_assert(!cio_lock_locked(l));
    /* Predicate already true: returns at once, lock still held. */
    ck_assert_int_eq(cio_lock_acquire(l), 0);
    g_items = 1;
    ck_assert_int_eq(cio_cond_wait_for(&g_cond, have_items, NULL), 0);
    ck_assert(cio_lock_locked(l));
    ck_assert_int_eq(cio_cond_wait_for(&g_cond, NULL, NULL), -EINVAL);
    ck_assert_int_eq(cio_lock_release(l), 0);
    /* Bad input. */
    ck_assert_int_eq(cio_cond_init(NULL, NULL), -EINVAL);
    ck_assert_int_eq(cio_cond_wait(NULL), -EINVAL);
    ck_assert_int_eq(cio_cond_notify(NULL, 1), -EINVAL);
    ck_assert_ptr_null(cio_cond_lock(NULL));
    return 0;
}

START_TEST(cond_basic)
{
    ck_assert_int_eq(cio_cond_init(&g_cond, NULL), 0);
    ck_assert_int_eq(cio_cond_wait(&g_cond), -EPERM); /* outside a task */
    RUN_MAIN(main_cond_basic, NULL);
}
END_TEST

static int body_cond_wait_once(void *arg, void **result)
{
    (void)result;
    int id = (int)(intptr_t)arg;
    cio_lock_t *l = cio_cond_lock(&g_cond);
    ck_assert_int_eq(cio_lock_acquire(l), 0);
    int rc = cio_cond_wait(&g_cond);
    g_cond_rc[id] = rc;
    ck_assert(cio_lock_locked(l));
    g_order[g_norder++] = id;
    int after = cio_sleep(0); /* level-triggered if cancelled */
    ck_assert_int_eq(cio_lock_release(l), 0);
    return rc ? rc : after;
}

static int main_cond_cancel(void *arg, void **result)
{
    (void)arg;
    (void)result;
    ck_assert_int_eq(cio_cond_init(&g_cond, NULL), 0);
    cio_lock_t *l = cio_cond_lock(&g_cond);
    g_norder = 0;
    for (int i = 0; i < 4; i++)
        g_cond_rc[i] = 99;
    cio_task_t *t[4];
    for (int i = 0; i < 4; i++)
        t[i] = spawn(body_cond_wait_once, (void *)(intptr_t)i);
    settle();
    /* t0: cancelled while waiting (before any notify): -ECANCELED, and it
     * still comes back holding the lock. It must wait for the lock, which
     * we hold now. */
    ck_assert_int_eq(cio_lock_acquire(l), 0);
    ck_assert_int_eq(cio_task_cancel(t[0]), 1);
    settle();
    ck_assert(!cio_future_done(t[0])); /* re-acquiring behind us */
    /* t1: notified, then cancelled before it runs: keeps the notification
     * (returns 0), and notify(1) did not go to waste. */
    ck_assert_int_eq(cio_cond_notify(&g_cond, 1), 1);
    ck_assert_int_eq(cio_task_cancel(t[1]), 1);
    ck_assert_int_eq(cio_lock_release(l), 0);
    ck_assert_int_eq(finish(t[0]), -ECANCELED);
    ck_assert_int_eq(g_cond_rc[0], -ECANCELED);
    ck_assert_int_eq(finish(t[1]), -ECANCELED); /* its sleep(0) after */
    ck_assert_int_eq(g_cond_rc[1], 0);
    /* t2, t3 still wait: exactly one more notify wakes t2 only. */
    ck_assert_int_eq(cio_lock_acquire(l), 0);
    ck_assert_int_eq(cio_cond_notify(&g_cond, 1), 1);
    ck_assert_int_eq(cio_lock_release(l), 0);
    ck_assert_int_eq(finish(t[2]), 0);
    ck_assert(!cio_future_done(t[3]));
    ck_assert_int_eq(cio_lock_acquire(l), 0);
    ck_assert_int_eq(cio_cond_notify_all(&g_cond), 1);
    ck_assert_int_eq(cio_lock_release(l), 0);
    ck_assert_int_eq(finish(t[3]), 0);
    ck_assert_int_eq(g_norder, 4);
    ck_assert(!cio_lock_locked(l));
    return 0;
}

START_TEST(cond_cancel)
{
    RUN_MAIN(main_cond_cancel, NULL);
}
END_TEST

typedef struct cond_timed {
    int rc;
    int held;
    int64_t elapsed;
} cond_timed;

static int body_cond_timed(void *arg, void **result)
{
    (void)result;
    cond_timed *c = arg;
    cio_lock_t *l = cio_cond_lock(&g_cond);
    ck_assert_int_eq(cio_lock_acquire(l), 0);
    cio_scope_t s;
    int64_t t0 = loop_ns();
    ck_assert_int_eq(cio_scope_enter(&s, D_SHORT, 0), 0);
    c->rc = cio_cond_wait(&g_cond);
    c->held = cio_lock_locked(l);
    c->elapsed = loop_ns() - t0;
    ck_assert_int_eq(cio_scope_exit(&s), -ETIMEDOUT);
    ck_assert_int_eq(cio_lock_release(l), 0);
    return 0;
}

static int main_cond_timeout(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_lock_t shared = CIO_LOCK_INIT;
    ck_assert_int_eq(cio_cond_init(&g_cond, &shared), 0);
    ck_assert_ptr_eq(cio_cond_lock(&g_cond), &shared);
    cond_timed c = {99, 0, 0};
    cio_task_t *t = spawn(body_cond_timed, &c);
    settle(); /* it waits, the lock is free */
    /* Hold the lock past its deadline: the timed-out wait re-acquires it
     * (uninterruptibly) only when we release it. */
    ck_assert_int_eq(cio_lock_acquire(&shared), 0);
    ck_assert_int_eq(cio_sleep(D_MED), 0);
    ck_assert(!cio_future_done(t));
    ck_assert_int_eq(cio_lock_release(&shared), 0);
    ck_assert_int_eq(finish(t), 0);
    ck_assert_int_eq(c.rc, -ETIMEDOUT);
    ck_assert(c.held);
    ck_assert_int_ge(c.elapsed, NS_MED);
    ck_assert(!cio_lock_locked(&shared));
    /* Cancelled entry: returns at once without releasing the lock. */
    ck_assert_int_eq(cio_lock_acquire(&shared), 0);
    cio_scope_t s;
    ck_assert_int_eq(cio_scope_enter(&s, 0, 0), 0);
    ck_assert_int_eq(cio_cond_wait(&g_cond), -ETIMEDOUT);
    ck_assert(cio_lock_locked(&shared));
    ck_assert_int_eq(cio_scope_exit(&s), -ETIMEDOUT);
    ck_assert_int_eq(cio_lock_release(&shared), 0);
    return 0;
}

START_TEST(cond_timeout_reacquires)
{
    RUN_MAIN(main_cond_timeout, NULL);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Semaphore                                                                 */
/* ------------------------------------------------------------------------ */

static cio_sem_t g_sem;
static int g_inside, g_max_inside;

static int body_sem_worker(void *arg, void **result)
{
    (void)arg;
    (void)result;
    int rc = cio_sem_acquire(&g_sem);
    if (rc)
        return rc;
    if (++g_inside > g_max_inside)
        g_max_inside = g_inside;
    ck_assert_int_eq(cio_sleep(0.001), 0);
    g_inside--;
    return cio_sem_release(&g_sem);
}

static int main_sem_basic(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_sem_t s;
    ck_assert_int_eq(cio_sem_init(&s, -1, false), -EINVAL);
    ck_assert_int_eq(cio_sem_init(NULL, 1, false), -EINVAL);
    ck_assert_int_eq(cio_sem_init(&s, 2, false), 0);
    ck_assert_int_eq(cio_sem_value(&s), 2);
    ck_assert(!cio_sem_locked(&s));
    ck_assert_int_eq(cio_sem_acquire(&s), 0);
    ck_assert_int_eq(cio_sem_try_acquire(&s), 0);
    ck_assert_int_eq(cio_sem_value(&s), 0);
    ck_assert(cio_sem_locked(&s));
    ck_assert_int_eq(cio_sem_try_acquire(&s), -EAGAIN);
    ck_assert_int_eq(cio_sem_release(&s), 0);
    ck_assert_int_eq(cio_sem_release(&s), 0);
    /* Unbounded: may go above the initial value (asyncio Semaphore). */
    ck_assert_int_eq(cio_sem_release(&s), 0);
    ck_assert_int_eq(cio_sem_value(&s), 3);
    /* ... but never wraps. */
    ck_assert_int_eq(cio_sem_init(&s, INT_MAX, false), 0);
    ck_assert_int_eq(cio_sem_release(&s), -EOVERFLOW);
    ck_assert_int_eq(cio_sem_value(&s), INT_MAX);
    /* Bounded: releasing too often is -EOVERFLOW, value unchanged. */
    ck_assert_int_eq(cio_sem_init(&s, 2, true), 0);
    ck_assert_int_eq(cio_sem_release(&s), -EOVERFLOW);
    ck_assert_int_eq(cio_sem_value(&s), 2);
    ck_assert_int_eq(cio_sem_acquire(&s), 0);
    ck_assert_int_eq(cio_sem_release(&s), 0);
    ck_assert_int_eq(cio_sem_release(&s), -EOVERFLOW);
    ck_assert_int_eq(cio_sem_value(&s), 2);
    ck_assert_int_eq(cio_sem_init(&s, 0, true), 0);
    ck_assert_int_eq(cio_sem_release(&s), -EOVERFLOW);
    /* Bad input. */
    ck_assert_int_eq(cio_sem_acquire(NULL), -EINVAL);
    ck_assert_int_eq(cio_sem_try_acquire(NULL), -EINVAL);
    ck_assert_int_eq(cio_sem_release(NULL), -EINVAL);
    ck_assert_int_eq(cio_sem_value(NULL), -EINVAL);
    /* Level-triggered with a free permit: nothing is taken. */
    ck_assert_int_eq(cio_sem_init(&s, 1, true), 0);
    cio_scope_t sc;
    ck_assert_int_eq(cio_scope_enter(&sc, 0, 0), 0);
    ck_assert_int_eq(cio_sem_acquire(&s), -ETIMEDOUT);
    ck_assert_int_eq(cio_scope_exit(&sc), -ETIMEDOUT);
    ck_assert_int_eq(cio_sem_value(&s), 1);
    /* Limits concurrency. */
    ck_assert_int_eq(cio_sem_init(&g_sem, 3, true), 0);
    g_inside = g_max_inside = 0;
    enum { N = 12 };
    cio_task_t *t[N];
    for (int i = 0; i < N; i++)
        t[i] = spawn(body_sem_worker, NULL);
    ck_assert_int_eq(cio_gather(t, N, NULL, NULL, 0), 0);
    for (int i = 0; i < N; i++)
        cio_future_release(t[i]);
    ck_assert_int_eq(g_max_inside, 3);
    ck_assert_int_eq(cio_sem_value(&g_sem), 3);
    return 0;
}

START_TEST(sem_basic)
{
    cio_sem_t s;
    ck_assert_int_eq(cio_sem_init(&s, 1, false), 0);
    ck_assert_int_eq(cio_sem_acquire(&s), -EPERM);
    RUN_MAIN(main_sem_basic, NULL);
}
END_TEST

static int body_sem_order(void *arg, void **result)
{
    (void)result;
    int rc = cio_sem_acquire(&g_sem);
    if (rc == 0)
        g_order[g_norder++] = (int)(intptr_t)arg;
    return rc;
}

static int main_sem_fifo(void *arg, void **result)
{
    (void)arg;
    (void)result;
    ck_assert_int_eq(cio_sem_init(&g_sem, 0, false), 0);
    g_norder = 0;
    enum { N = 10 };
    cio_task_t *t[N];
    for (int i = 0; i < N; i++)
        t[i] = spawn(body_sem_order, (void *)(intptr_t)i);
    settle();
    for (int i = 0; i < N; i++) {
        ck_assert_int_eq(cio_sem_release(&g_sem), 0);
        /* Hand-off: the permit went to a waiter, not to the counter, and
         * a newcomer cannot take it. */
        ck_assert_int_eq(cio_sem_value(&g_sem), 0);
        ck_assert_int_eq(cio_sem_try_acquire(&g_sem), -EAGAIN);
    }
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(finish(t[i]), 0);
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(g_order[i], i);
    return 0;
}

START_TEST(sem_fifo)
{
    RUN_MAIN(main_sem_fifo, NULL);
}
END_TEST

static int main_sem_release_cancel(void *arg, void **result)
{
    (void)arg;
    (void)result;
    g_norder = 0;
    /* Released, then cancelled in the same iteration: the waiter keeps the
     * permit; the count is right afterwards. */
    ck_assert_int_eq(cio_sem_init(&g_sem, 1, true), 0);
    ck_assert_int_eq(cio_sem_acquire(&g_sem), 0);
    cio_task_t *w = spawn(body_sem_order, (void *)(intptr_t)1);
    settle();
    ck_assert_int_eq(cio_sem_release(&g_sem), 0);
    ck_assert_int_eq(cio_task_cancel(w), 1);
    ck_assert_int_eq(finish(w), 0); /* it holds the permit */
    ck_assert_int_eq(cio_sem_value(&g_sem), 0);
    ck_assert_int_eq(cio_sem_release(&g_sem), 0); /* on its behalf */
    ck_assert_int_eq(cio_sem_value(&g_sem), 1);
    ck_assert_int_eq(cio_sem_release(&g_sem), -EOVERFLOW);

    /* Cancelled, then released in the same iteration: no permit taken, the
     * release goes to the counter (or to the next waiter). */
    ck_assert_int_eq(cio_sem_acquire(&g_sem), 0);
    cio_task_t *a = spawn(body_sem_order, (void *)(intptr_t)2);
    cio_task_t *b = spawn(body_sem_order, (void *)(intptr_t)3);
    settle();
    ck_assert_int_eq(cio_task_cancel(a), 1);
    ck_assert_int_eq(cio_sem_release(&g_sem), 0); /* to b, a has left */
    ck_assert_int_eq(finish(a), -ECANCELED);
    ck_assert_int_eq(finish(b), 0);
    ck_assert_int_eq(cio_sem_value(&g_sem), 0);
    ck_assert_int_eq(cio_sem_release(&g_sem), 0);
    ck_assert_int_eq(cio_sem_value(&g_sem), 1);
    ck_assert_int_eq(g_norder, 2);
    ck_assert_int_eq(g_order[0], 1);
    ck_assert_int_eq(g_order[1], 3);
    return 0;
}

START_TEST(sem_release_and_cancel)
{
    RUN_MAIN(main_sem_release_cancel, NULL);
}
END_TEST

typedef struct sem_timed {
    int rc;
} sem_timed;

static int body_sem_timed(void *arg, void **result)
{
    (void)result;
    sem_timed *st = arg;
    cio_scope_t s;
    ck_assert_int_eq(cio_scope_enter(&s, D_SHORT, 0), 0);
    st->rc = cio_sem_acquire(&g_sem);
    ck_assert_int_eq(cio_scope_exit(&s), st->rc == -ETIMEDOUT ? -ETIMEDOUT : 0);
    return 0;
}

static int main_sem_timeout(void *arg, void **result)
{
    (void)arg;
    (void)result;
    ck_assert_int_eq(cio_sem_init(&g_sem, 0, false), 0);
    sem_timed st = {99};
    cio_task_t *t = spawn(body_sem_timed, &st);
    ck_assert_int_eq(finish(t), 0);
    ck_assert_int_eq(st.rc, -ETIMEDOUT);
    ck_assert_int_eq(cio_sem_release(&g_sem), 0);
    ck_assert_int_eq(cio_sem_value(&g_sem), 1); /* nobody waits any more */
    return 0;
}

START_TEST(sem_timeout)
{
    RUN_MAIN(main_sem_timeout, NULL);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Barrier                                                                   */
/* ------------------------------------------------------------------------ */

static cio_barrier_t g_bar;
static int g_bar_rc[16];
static int g_passed;

static int body_barrier(void *arg, void **result)
{
    (void)result;
    int id = (int)(intptr_t)arg;
    int rc = cio_barrier_wait(&g_bar);
    g_bar_rc[id] = rc;
    if (rc >= 0)
        g_passed++;
    return rc < 0 ? rc : 0;
}

static int main_barrier_basic(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_barrier_t b;
    ck_assert_int_eq(cio_barrier_init(&b, 0), -EINVAL);
    ck_assert_int_eq(cio_barrier_init(NULL, 2), -EINVAL);
    ck_assert_int_eq(cio_barrier_init(&b, (unsigned)INT_MAX + 1u), -EINVAL);
    ck_assert_int_eq(cio_barrier_wait(NULL), -EINVAL);
    /* One party: passes at once with index 0. */
    ck_assert_int_eq(cio_barrier_init(&b, 1), 0);
    ck_assert_int_eq(cio_barrier_wait(&b), 0);
    ck_assert_int_eq(cio_barrier_wait(&b), 0);

    ck_assert_int_eq(cio_barrier_init(&g_bar, 3), 0);
    ck_assert_int_eq(cio_barrier_parties(&g_bar), 3);
    for (int round = 0; round < 3; round++) {
        g_passed = 0;
        cio_task_t *t[2];
        for (int i = 0; i < 2; i++)
            t[i] = spawn(body_barrier, (void *)(intptr_t)i);
        settle();
        ck_assert_int_eq(cio_barrier_n_waiting(&g_bar), 2);
        ck_assert_int_eq(g_passed, 0);
        /* The third arrival releases the round and gets index 2. */
        ck_assert_int_eq(cio_barrier_wait(&g_bar), 2);
        ck_assert_int_eq(cio_barrier_n_waiting(&g_bar), 0); /* draining */
        for (int i = 0; i < 2; i++)
            ck_assert_int_eq(finish(t[i]), 0);
        ck_assert_int_eq(g_passed, 2);
        /* Indices by arrival order. */
        ck_assert_int_eq(g_bar_rc[0], 0);
        ck_assert_int_eq(g_bar_rc[1], 1);
        ck_assert(!cio_barrier_broken(&g_bar));
    }
    return 0;
}

START_TEST(barrier_basic)
{
    cio_barrier_t b;
    ck_assert_int_eq(cio_barrier_init(&b, 2), 0);
    ck_assert_int_eq(cio_barrier_wait(&b), -EPERM);
    RUN_MAIN(main_barrier_basic, NULL);
}
END_TEST

static int main_barrier_draining(void *arg, void **result)
{
    (void)arg;
    (void)result;
    /* A task arriving while the previous round drains waits for the next
     * round and gets an index from 0 again. */
    ck_assert_int_eq(cio_barrier_init(&g_bar, 2), 0);
    g_passed = 0;
    cio_task_t *a = spawn(body_barrier, (void *)(intptr_t)0);
    settle();
    /* c is queued to run before a resumes, so it arrives while a is still
     * inside the barrier (draining); without the drain rule it would take
     * index 1 and pass alone. */
    cio_task_t *c = spawn(body_barrier, (void *)(intptr_t)2);
    ck_assert_int_eq(cio_barrier_wait(&g_bar), 1); /* releases a */
    ck_assert_int_eq(finish(a), 0);
    ck_assert_int_eq(g_bar_rc[0], 0);
    settle();
    ck_assert(!cio_future_done(c));
    ck_assert_int_eq(cio_barrier_n_waiting(&g_bar), 1);
    cio_task_t *d = spawn(body_barrier, (void *)(intptr_t)3);
    ck_assert_int_eq(finish(c), 0);
    ck_assert_int_eq(finish(d), 0);
    ck_assert_int_eq(g_bar_rc[2], 0);
    ck_assert_int_eq(g_bar_rc[3], 1);
    ck_assert_int_eq(g_passed, 3);
    return 0;
}

START_TEST(barrier_draining)
{
    RUN_MAIN(main_barrier_draining, NULL);
}
END_TEST

static int main_barrier_abort_reset(void *arg, void **result)
{
    (void)arg;
    (void)result;
    ck_assert_int_eq(cio_barrier_init(&g_bar, 3), 0);
    g_passed = 0;
    cio_task_t *t[2];
    for (int i = 0; i < 2; i++)
        t[i] = spawn(body_barrier, (void *)(intptr_t)i);
    settle();
    cio_barrier_abort(&g_bar);
    ck_assert(cio_barrier_broken(&g_bar));
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(finish(t[i]), -EPIPE);
    ck_assert_int_eq(cio_barrier_wait(&g_bar), -EPIPE);
    ck_assert_int_eq(cio_barrier_n_waiting(&g_bar), 0);
    /* Reset repairs it. */
    cio_barrier_reset(&g_bar);
    ck_assert(!cio_barrier_broken(&g_bar));
    for (int i = 0; i < 2; i++)
        t[i] = spawn(body_barrier, (void *)(intptr_t)i);
    settle();
    ck_assert_int_eq(cio_barrier_n_waiting(&g_bar), 2);
    /* Reset while tasks wait: they get -EPIPE; the barrier stays usable. */
    cio_barrier_reset(&g_bar);
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(finish(t[i]), -EPIPE);
    ck_assert(!cio_barrier_broken(&g_bar));
    for (int i = 0; i < 2; i++)
        t[i] = spawn(body_barrier, (void *)(intptr_t)i);
    settle();
    ck_assert_int_eq(cio_barrier_wait(&g_bar), 2);
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(finish(t[i]), 0);
    ck_assert_int_eq(g_passed, 2);
    cio_barrier_abort(NULL);
    cio_barrier_reset(NULL);
    ck_assert(!cio_barrier_broken(NULL));
    return 0;
}

START_TEST(barrier_abort_reset)
{
    RUN_MAIN(main_barrier_abort_reset, NULL);
}
END_TEST

static int main_barrier_cancel(void *arg, void **result)
{
    (void)arg;
    (void)result;
    ck_assert_int_eq(cio_barrier_init(&g_bar, 3), 0);
    g_passed = 0;
    cio_task_t *t[2];
    for (int i = 0; i < 2; i++)
        t[i] = spawn(body_barrier, (void *)(intptr_t)i);
    settle();
    /* A waiter cancelled before the round fills leaves the barrier. */
    ck_assert_int_eq(cio_task_cancel(t[0]), 1);
    ck_assert_int_eq(finish(t[0]), -ECANCELED);
    ck_assert_int_eq(cio_barrier_n_waiting(&g_bar), 1);
    t[0] = spawn(body_barrier, (void *)(intptr_t)0);
    settle();
    ck_assert_int_eq(cio_barrier_n_waiting(&g_bar), 2);
    /* We are the third party: the round is released. (As in asyncio,
     * indices come from the count of tasks inside, so the task that
     * replaced the cancelled one may share an index with another.) */
    int idx = cio_barrier_wait(&g_bar);
    ck_assert_int_eq(idx, 2);
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(finish(t[i]), 0);
    ck_assert_int_eq(g_passed, 2);
    for (int i = 0; i < 2; i++) {
        ck_assert_int_ge(g_bar_rc[i], 0);
        ck_assert_int_lt(g_bar_rc[i], 2);
    }

    /* Timeout through a scope. */
    cio_scope_t s;
    ck_assert_int_eq(cio_scope_enter(&s, D_SHORT, 0), 0);
    ck_assert_int_eq(cio_barrier_wait(&g_bar), -ETIMEDOUT);
    ck_assert_int_eq(cio_scope_exit(&s), -ETIMEDOUT);
    ck_assert_int_eq(cio_barrier_n_waiting(&g_bar), 0);
    return 0;
}

START_TEST(barrier_cancel)
{
    RUN_MAIN(main_barrier_cancel, NULL);
}
END_TEST

static int main_barrier_released_cancelled(void *arg, void **result)
{
    (void)arg;
    (void)result;
    /* Released by the last arrival, cancelled before running: the waiter
     * keeps its passage (index), deterministically. */
    ck_assert_int_eq(cio_barrier_init(&g_bar, 2), 0);
    g_passed = 0;
    cio_task_t *a = spawn(body_barrier, (void *)(intptr_t)0);
    settle();
    ck_assert_int_eq(cio_barrier_wait(&g_bar), 1);
    ck_assert_int_eq(cio_task_cancel(a), 1);
    cio_barrier_abort(&g_bar); /* even an abort now does not undo it */
    ck_assert_int_eq(finish(a), 0);
    ck_assert_int_eq(g_bar_rc[0], 0);
    return 0;
}

START_TEST(barrier_released_then_cancelled)
{
    RUN_MAIN(main_barrier_released_cancelled, NULL);
}
END_TEST

/* ------------------------------------------------------------------------ */

static Suite *sync_suite(void)
{
    Suite *s = suite_create("sync");
    TCase *tc = add_tcase(s, "lock", TEST_TIMEOUT);
    tcase_add_test(tc, lock_basic);
    tcase_add_test(tc, lock_fifo_handoff);
    tcase_add_test(tc, lock_mutual_exclusion);
    tcase_add_test(tc, lock_cancel_after_handoff);
    tcase_add_test(tc, lock_cancel_waiting);
    tcase_add_test(tc, lock_deadline);
    tcase_add_test(tc, lock_level_triggered);
    tc = add_tcase(s, "event", TEST_TIMEOUT);
    tcase_add_test(tc, event_semantics);
    tc = add_tcase(s, "condition", TEST_TIMEOUT);
    tcase_add_test(tc, cond_basic);
    tcase_add_test(tc, cond_cancel);
    tcase_add_test(tc, cond_timeout_reacquires);
    tc = add_tcase(s, "semaphore", TEST_TIMEOUT);
    tcase_add_test(tc, sem_basic);
    tcase_add_test(tc, sem_fifo);
    tcase_add_test(tc, sem_release_and_cancel);
    tcase_add_test(tc, sem_timeout);
    tc = add_tcase(s, "barrier", TEST_TIMEOUT);
    tcase_add_test(tc, barrier_basic);
    tcase_add_test(tc, barrier_draining);
    tcase_add_test(tc, barrier_abort_reset);
    tcase_add_test(tc, barrier_cancel);
    tcase_add_test(tc, barrier_released_then_cancelled);
    return s;
}

CIO_TEST_MAIN(sync_suite)
