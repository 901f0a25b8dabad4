/*
 * Cancel scopes: regions of a task's code with their own deadline,
 * cancellation and shielding (asyncio.timeout / timeout_at, and the
 * shielding that asyncio.shield gives a whole block). Scopes live on the
 * task's stack and form a chain from the innermost outwards; the wait
 * primitive (task.c, cio__cancel_state) walks that chain at every await
 * point, so scopes cost nothing while no await happens.
 */
#include "task.h"

#include <math.h>

int cio_scope_enter_at_ns(cio_scope_t *s, int64_t deadline_ns, unsigned flags)
{
    cio__coro *t = cio__current;
    if (!t)
        return -EPERM;
    if (!s || (flags & ~CIO_SCOPE_SHIELD))
        return -EINVAL;
    s->parent_ = t->scope;
    s->task_ = t;
    s->deadline_ = deadline_ns;
    s->flags_ = (uint8_t)flags;
    s->state_ = CIO__SCOPE_OPEN;
    t->scope = s;
    return 0;
}

int cio_scope_enter(cio_scope_t *s, double timeout, unsigned flags)
{
    int64_t d;
    int rc = cio__deadline_after(timeout, &d);
    return rc ? rc : cio_scope_enter_at_ns(s, d, flags);
}

int cio_scope_exit(cio_scope_t *s)
{
    if (!s || !s->task_)
        return -EINVAL;
    cio__coro *t = s->task_;
    int rc = s->state_ == CIO__SCOPE_EXPIRED ? -ETIMEDOUT
             : s->state_ == CIO__SCOPE_CANCELLED ? -ECANCELED : 0;
    if (t->scope != s) {
        /* Not innermost: drop it and whatever is still open inside it. */
        cio_scope_t *p = t->scope;
        while (p && p != s)
            p = p->parent_;
        if (!p)
            return -EINVAL;
        rc = -EINVAL;
    }
    t->scope = s->parent_;
    s->task_ = NULL;
    return rc;
}

void cio_scope_cancel(cio_scope_t *s)
{
    if (!s || !s->task_ || s->state_ != CIO__SCOPE_OPEN)
        return;
    s->state_ = CIO__SCOPE_CANCELLED;
    cio__coro_rearm(s->task_);
}

int cio_scope_reschedule_at_ns(cio_scope_t *s, int64_t deadline_ns)
{
    if (!s || !s->task_)
        return -EINVAL;
    s->deadline_ = deadline_ns;
    cio__coro_rearm(s->task_);
    return 0;
}

int cio_scope_reschedule(cio_scope_t *s, double timeout)
{
    int64_t d;
    int rc = cio__deadline_after(timeout, &d);
    return rc ? rc : cio_scope_reschedule_at_ns(s, d);
}

bool cio_scope_expired(const cio_scope_t *s)
{
    return s && s->state_ == CIO__SCOPE_EXPIRED;
}

int64_t cio_scope_deadline_ns(const cio_scope_t *s)
{
    return s ? s->deadline_ : CIO__NO_DEADLINE;
}

int cio_wait_for(cio_future_t *f, double timeout, void **result)
{
    if (!cio__current)
        return -EPERM;
    if (!f)
        return -EINVAL;
    /* A future that is already done gives its outcome whatever the timeout,
     * as asyncio.wait_for does (even with timeout 0). */
    if (f->state != CIO__PENDING)
        return cio_await(f, result);
    cio_scope_t s;
    int rc = cio_scope_enter(&s, timeout, 0);
    if (rc)
        return rc;
    rc = cio_await(f, result);
    int ex = cio_scope_exit(&s);
    return ex == -ETIMEDOUT ? -ETIMEDOUT : rc;
}
