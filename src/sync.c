/*
 * Synchronisation primitives for the tasks of one loop: asyncio's Lock,
 * Event, Condition, Semaphore, BoundedSemaphore and Barrier.
 *
 * Every object keeps a FIFO wait queue of cio__waiter (cio__wlist) and every
 * blocking call suspends through cio__wait, so cancellation and scope
 * deadlines interrupt any of them. The rule that keeps them correct under
 * cancellation is direct hand-off: whoever releases a resource pops the
 * first waiter, gives it the resource (ownership, a permit, a notification)
 * and wakes it with cio__wake(). Once woken, a waiter can no longer be
 * interrupted (waiter->woken), so it returns success and keeps what it was
 * given; an interrupted waiter was unlinked before anyone could give it
 * anything, so nothing is lost either way. Hand-off also gives strict FIFO
 * service: a released resource never becomes free while someone waits, so
 * a newcomer cannot barge in ahead of the queue.
 *
 * Invariants (between await points):
 *   lock:      waiters non-empty  =>  locked
 *   semaphore: waiters non-empty  =>  value == 0
 */
#include "waitq.h"

#include <limits.h>

/* Suspends the current task t on queue q of object obj until woken. */
static int park(cio_waitq_t *q, cio__coro *t, const char *what, const void *obj, bool nointr)
{
    cio__waiter w;
    cio__waiter_init(&w, t, what, obj, cio__wlist_unlink);
    w.nointr = nointr;
    cio__wlist_push(q, &w);
    return cio__wait(&w, CIO__NO_DEADLINE);
}

/* ------------------------------------------------------------------------ */
/* Lock                                                                      */
/* ------------------------------------------------------------------------ */

int cio_lock_init(cio_lock_t *l)
{
    if (!l)
        return -EINVAL;
    l->waiters_.head_ = l->waiters_.tail_ = NULL;
    l->owner_ = NULL;
    l->locked_ = 0;
    return 0;
}

static void lock_take(cio_lock_t *l, cio__coro *t)
{
    l->locked_ = 1;
    l->owner_ = t;
}

/*
 * Queues t on l until a release hands it the lock. Uninterruptible when
 * nointr (a condition re-acquiring its lock), and then always returns 0.
 */
static int lock_wait(cio_lock_t *l, cio__coro *t, bool nointr)
{
    return park(&l->waiters_, t, "lock", l, nointr);
}

int cio_lock_acquire(cio_lock_t *l)
{
    cio__coro *t = cio__current;
    if (!t)
        return -EPERM;
    if (!l)
        return -EINVAL;
    int rc = cio__check_cancel(t);
    if (rc)
        return rc;
    if (!l->locked_) { /* free implies nobody waits (hand-off) */
        lock_take(l, t);
        return 0;
    }
    if (l->owner_ == t)
        return -EDEADLK;
    /* 0: release made us the owner; < 0: interrupted while queued. */
    return lock_wait(l, t, false);
}

int cio_lock_try_acquire(cio_lock_t *l)
{
    if (!l)
        return -EINVAL;
    if (l->locked_)
        return -EAGAIN;
    lock_take(l, cio__current);
    return 0;
}

int cio_lock_release(cio_lock_t *l)
{
    if (!l)
        return -EINVAL;
    if (!l->locked_)
        return -EPERM;
    cio__waiter *w = cio__wlist_pop(&l->waiters_);
    if (w) {
        /* Hand-off: the lock stays locked and changes owner. */
        l->owner_ = w->task;
        cio__wake(w, 0);
    } else {
        l->locked_ = 0;
        l->owner_ = NULL;
    }
    return 0;
}

bool cio_lock_locked(const cio_lock_t *l)
{
    return l && l->locked_;
}

/* ------------------------------------------------------------------------ */
/* Event                                                                     */
/* ------------------------------------------------------------------------ */

int cio_event_init(cio_event_t *e)
{
    if (!e)
        return -EINVAL;
    e->waiters_.head_ = e->waiters_.tail_ = NULL;
    e->set_ = 0;
    return 0;
}

void cio_event_set(cio_event_t *e)
{
    if (!e || e->set_)
        return;
    e->set_ = 1;
    cio__waitq_wake_all(&e->waiters_, 0);
}

void cio_event_clear(cio_event_t *e)
{
    if (e)
        e->set_ = 0;
}

bool cio_event_is_set(const cio_event_t *e)
{
    return e && e->set_;
}

int cio_event_wait(cio_event_t *e)
{
    cio__coro *t = cio__current;
    if (!t)
        return -EPERM;
    if (!e)
        return -EINVAL;
    int rc = cio__check_cancel(t);
    if (rc || e->set_)
        return rc;
    return park(&e->waiters_, t, "event", e, false);
}

/* ------------------------------------------------------------------------ */
/* Condition                                                                 */
/* ------------------------------------------------------------------------ */

int cio_cond_init(cio_cond_t *c, cio_lock_t *lock)
{
    if (!c)
        return -EINVAL;
    c->waiters_.head_ = c->waiters_.tail_ = NULL;
    cio_lock_init(&c->own_);
    c->lock_ = lock ? lock : &c->own_;
    return 0;
}

cio_lock_t *cio_cond_lock(cio_cond_t *c)
{
    return c ? c->lock_ : NULL;
}

/* Checks shared by wait and wait_for: 0 or the error to return. */
static int cond_check(cio_cond_t *c, cio__coro *t)
{
    if (!t)
        return -EPERM;
    if (!c || !c->lock_)
        return -EINVAL;
    if (!c->lock_->locked_)
        return -EPERM;
    return cio__check_cancel(t);
}

int cio_cond_wait(cio_cond_t *c)
{
    cio__coro *t = cio__current;
    int rc = cond_check(c, t);
    if (rc)
        return rc;
    cio_lock_t *l = c->lock_;
    cio_lock_release(l);
    rc = park(&c->waiters_, t, "condition", c, false);
    if (rc == 0)
        return 0; /* notified: notify moved us to the lock, which we now hold */
    /* Interrupted before any notification: take the lock back, shielded
     * from the cancellation that brought us here. */
    if (!l->locked_)
        lock_take(l, t);
    else
        lock_wait(l, t, true);
    return rc;
}

int cio_cond_wait_for(cio_cond_t *c, cio_pred_fn pred, void *arg)
{
    cio__coro *t = cio__current;
    int rc = cond_check(c, t);
    if (rc || !pred)
        return rc ? rc : -EINVAL;
    while (!pred(arg))
        if ((rc = cio_cond_wait(c)))
            return rc;
    return 0;
}

/*
 * Wait morphing: a notified task would only wake up to queue on the lock
 * the notifier holds, so its waiter moves straight to the lock's queue. It
 * becomes uninterruptible there, because a notified waiter must come back
 * holding the lock and report the notification (asyncio re-acquires after
 * a notification even when cancelled). The lock's release then hands it the
 * lock and wakes it with 0, which is what cio_cond_wait returns. Its unlink
 * function (cio__wlist_unlink) follows it: the push records the new list.
 */
static void cond_morph(cio_lock_t *l, cio__waiter *w)
{
    w->nointr = 1;
    w->obj = l;
    w->what = "lock";
    cio__wlist_push(&l->waiters_, w);
}

int cio_cond_notify(cio_cond_t *c, size_t n)
{
    if (!c || !c->lock_)
        return -EINVAL;
    cio_lock_t *l = c->lock_;
    if (!l->locked_)
        return -EPERM;
    size_t woken = 0;
    cio__waiter *w;
    while (woken < n && (w = cio__wlist_pop(&c->waiters_))) {
        cond_morph(l, w);
        woken++;
    }
    return woken > INT_MAX ? INT_MAX : (int)woken;
}

int cio_cond_notify_all(cio_cond_t *c)
{
    return cio_cond_notify(c, SIZE_MAX);
}

/* ------------------------------------------------------------------------ */
/* Semaphore, BoundedSemaphore                                               */
/* ------------------------------------------------------------------------ */

int cio_sem_init(cio_sem_t *s, int value, bool bounded)
{
    if (!s || value < 0)
        return -EINVAL;
    s->waiters_.head_ = s->waiters_.tail_ = NULL;
    s->value_ = value;
    s->bound_ = bounded ? value : -1;
    return 0;
}

int cio_sem_acquire(cio_sem_t *s)
{
    cio__coro *t = cio__current;
    if (!t)
        return -EPERM;
    if (!s)
        return -EINVAL;
    int rc = cio__check_cancel(t);
    if (rc)
        return rc;
    if (s->value_ > 0) { /* a free permit implies nobody waits */
        s->value_--;
        return 0;
    }
    /* 0: a release handed us its permit; < 0: interrupted, none taken. */
    return park(&s->waiters_, t, "semaphore", s, false);
}

int cio_sem_try_acquire(cio_sem_t *s)
{
    if (!s)
        return -EINVAL;
    if (s->value_ <= 0)
        return -EAGAIN;
    s->value_--;
    return 0;
}

int cio_sem_release(cio_sem_t *s)
{
    if (!s)
        return -EINVAL;
    /* Checked before the hand-off too: a release above the bound is an
     * error even when a task waits (a BoundedSemaphore(0), say). */
    if (s->bound_ >= 0 ? s->value_ >= s->bound_ : s->value_ == INT_MAX)
        return -EOVERFLOW;
    cio__waiter *w = cio__wlist_pop(&s->waiters_);
    if (w)
        cio__wake(w, 0); /* the permit passes directly; value stays 0 */
    else
        s->value_++;
    return 0;
}

int cio_sem_value(const cio_sem_t *s)
{
    return s ? s->value_ : -EINVAL;
}

bool cio_sem_locked(const cio_sem_t *s)
{
    return s && s->value_ == 0;
}

/* ------------------------------------------------------------------------ */
/* Barrier                                                                   */
/* ------------------------------------------------------------------------ */

/* The states of asyncio's Barrier. */
enum { B_FILLING = 0, B_DRAINING, B_RESETTING, B_BROKEN };

int cio_barrier_init(cio_barrier_t *b, unsigned parties)
{
    if (!b || parties == 0 || parties > INT_MAX)
        return -EINVAL;
    b->waiters_.head_ = b->waiters_.tail_ = NULL;
    b->blocked_.head_ = b->blocked_.tail_ = NULL;
    b->parties_ = parties;
    b->count_ = 0;
    b->state_ = B_FILLING;
    return 0;
}

/*
 * Waits while the previous round drains or a reset completes (asyncio's
 * _block). The tasks parked here are woken all at once and re-check.
 */
static int barrier_block(cio_barrier_t *b, cio__coro *t)
{
    while (b->state_ == B_DRAINING || b->state_ == B_RESETTING) {
        int rc = park(&b->blocked_, t, "barrier", b, false);
        if (rc)
            return rc;
    }
    return b->state_ == B_BROKEN ? -EPIPE : 0;
}

/* A task leaves the barrier; the last one out opens the next round. */
static void barrier_exit(cio_barrier_t *b)
{
    if (--b->count_ > 0)
        return;
    if (b->state_ == B_DRAINING || b->state_ == B_RESETTING)
        b->state_ = B_FILLING;
    cio__waitq_wake_all(&b->blocked_, 0);
}

int cio_barrier_wait(cio_barrier_t *b)
{
    cio__coro *t = cio__current;
    if (!t)
        return -EPERM;
    if (!b || !b->parties_)
        return -EINVAL;
    int rc = cio__check_cancel(t);
    if (rc || (rc = barrier_block(b, t)))
        return rc;
    unsigned index = b->count_++;
    if (index + 1 == b->parties_) {
        /* The last arrival releases the round. */
        b->state_ = B_DRAINING;
        cio__waitq_wake_all(&b->waiters_, 0);
    } else {
        /* 0: released; -EPIPE: reset or aborted; < 0: interrupted. */
        rc = park(&b->waiters_, t, "barrier", b, false);
    }
    barrier_exit(b);
    return rc ? rc : (int)index;
}

void cio_barrier_reset(cio_barrier_t *b)
{
    if (!b)
        return;
    if (b->count_ > 0) {
        /* Those inside leave with -EPIPE; the last one out refills. */
        b->state_ = B_RESETTING;
        cio__waitq_wake_all(&b->waiters_, -EPIPE);
    } else {
        b->state_ = B_FILLING;
    }
    cio__waitq_wake_all(&b->blocked_, 0);
}

void cio_barrier_abort(cio_barrier_t *b)
{
    if (!b)
        return;
    b->state_ = B_BROKEN;
    cio__waitq_wake_all(&b->waiters_, -EPIPE);
    cio__waitq_wake_all(&b->blocked_, 0); /* they see the state: -EPIPE */
}

bool cio_barrier_broken(const cio_barrier_t *b)
{
    return b && b->state_ == B_BROKEN;
}

unsigned cio_barrier_n_waiting(const cio_barrier_t *b)
{
    return b && b->state_ == B_FILLING ? b->count_ : 0;
}

unsigned cio_barrier_parties(const cio_barrier_t *b)
{
    return b ? b->parties_ : 0;
}
