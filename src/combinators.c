/*
 * Combinators over several futures: gather, wait, as_completed.
 *
 * Each registers an internal synchronous done callback on every pending
 * future (cio__future_on_done: no allocation beyond a pooled node, no extra
 * trip through the ready list) and sleeps on one waiter that the callbacks
 * wake when the combinator's condition holds.
 *
 * A combinator holds a reference on every future it watches for as long as
 * it watches (as cio_await does): a caller may release its own references
 * meanwhile, and a released pending future would otherwise be freed under
 * the combinator's callbacks.
 */
#include "task.h"


typedef struct gather_st {
    cio__waiter *w;
    size_t remaining;
    int first_err;
    bool all;
} gather_st;

static void gather_child_done(cio_future_t *f, void *arg)
{
    gather_st *st = arg;
    st->remaining--;
    if (!st->all && f->status < 0 && !st->first_err)
        st->first_err = f->status;
    if (st->w && (st->remaining == 0 || (!st->w->nointr && st->first_err)))
        cio__wake(st->w, 0);
}

/* Sleeps until the callbacks wake us; interruptible unless nointr. */
static int park(gather_st *st, bool nointr, int64_t deadline)
{
    cio__waiter w;
    cio__waiter_init(&w, cio__current, "gather", st, NULL);
    w.nointr = nointr;
    st->w = &w;
    int rc = cio__wait(&w, deadline);
    st->w = NULL;
    return rc;
}

static int check_array(cio_future_t *const *fs, size_t n)
{
    if (!cio__current)
        return -EPERM;
    if (n && !fs)
        return -EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!fs[i])
            return -EINVAL;
    return 0;
}

static void ref_all(cio_future_t *const *fs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        cio__future_hold(fs[i]);
}

static void release_all(cio_future_t *const *fs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        cio__future_unhold(fs[i]);
}

/* Removes gather's callbacks from the children still pending. */
static void unhook_pending(cio_future_t *const *fs, size_t n, void *st)
{
    for (size_t i = 0; i < n; i++)
        if (fs[i]->state == CIO__PENDING)
            cio__future_off_done_arg(fs[i], st);
}

/* Cancels every pending child and waits until none is pending. */
static void cancel_and_drain(cio_future_t *const *fs, size_t n, gather_st *st)
{
    for (size_t i = 0; i < n; i++)
        cio_future_cancel(fs[i]);
    while (st->remaining)
        park(st, true, CIO__NO_DEADLINE);
}

/* Registers gather's callback on every pending child; -ENOMEM (nothing
 * left registered) when a node cannot be had. */
static int gather_hook(cio_future_t *const *fs, size_t n, gather_st *st)
{
    for (size_t i = 0; i < n; i++) {
        if (fs[i]->state != CIO__PENDING) {
            if (!st->all && fs[i]->status < 0 && !st->first_err)
                st->first_err = fs[i]->status;
            continue;
        }
        if (!cio__future_on_done(fs[i], gather_child_done, st)) {
            for (size_t j = 0; j < i; j++)
                cio__future_off_done_arg(fs[j], st);
            return -ENOMEM;
        }
        st->remaining++;
    }
    return 0;
}

static void gather_collect(cio_future_t *const *fs, size_t n, void **results, int *statuses)
{
    for (size_t i = 0; i < n; i++) {
        bool done = fs[i]->state != CIO__PENDING;
        if (done)
            fs[i]->retrieved = 1;
        if (results)
            results[i] = done ? fs[i]->result : NULL;
        if (statuses)
            statuses[i] = done ? fs[i]->status : -EAGAIN;
    }
}

int cio_gather(cio_future_t *const *fs, size_t n, void **results, int *statuses,
               unsigned flags)
{
    int rc = check_array(fs, n);
    if (rc)
        return rc;
    gather_st st = {.w = NULL, .remaining = 0, .first_err = 0, .all = flags & CIO_GATHER_ALL};
    if ((rc = gather_hook(fs, n, &st)))
        return rc;
    ref_all(fs, n);
    rc = cio__cancel_state(cio__current, NULL);
    while (!rc && st.remaining && !st.first_err)
        rc = park(&st, false, CIO__NO_DEADLINE);
    if (rc == -ECANCELED || rc == -ETIMEDOUT) {
        /* Cancelling the gather cancels the children (asyncio). */
        cancel_and_drain(fs, n, &st);
    } else if (st.remaining) {
        /* Returning early (an error of a child, or -ENOMEM arming a
         * deadline): the children run on, unhooked. */
        unhook_pending(fs, n, &st);
    }
    if (rc >= 0)
        gather_collect(fs, n, results, statuses);
    release_all(fs, n);
    if (rc < 0)
        return rc;
    return st.all ? 0 : st.first_err;
}

/* ------------------------------------------------------------------------ */

typedef struct wait_st {
    cio__waiter *w;
    size_t done, n;
    int when;
    bool failed;
} wait_st;

static bool wait_satisfied(const wait_st *st)
{
    switch (st->when) {
    case CIO_FIRST_COMPLETED: return st->done > 0;
    case CIO_FIRST_EXCEPTION: return st->failed || st->done == st->n;
    default: return st->done == st->n;
    }
}

static void wait_child_done(cio_future_t *f, void *arg)
{
    wait_st *st = arg;
    st->done++;
    st->failed |= f->status < 0;
    if (st->w && wait_satisfied(st))
        cio__wake(st->w, 0);
}

int cio_wait(cio_future_t *const *fs, size_t n, int return_when, double timeout)
{
    int rc = check_array(fs, n);
    if (rc)
        return rc;
    if (return_when < CIO_ALL_COMPLETED || return_when > CIO_FIRST_EXCEPTION)
        return -EINVAL;
    int64_t deadline;
    if ((rc = cio__deadline_after(timeout, &deadline)))
        return rc;
    if ((rc = cio__cancel_state(cio__current, NULL)))
        return rc;
    wait_st st = {.w = NULL, .done = 0, .n = n, .when = return_when, .failed = false};
    for (size_t i = 0; i < n; i++) {
        if (fs[i]->state != CIO__PENDING) {
            st.done++;
            st.failed |= fs[i]->status < 0;
        }
    }
    if (!wait_satisfied(&st)) {
        ref_all(fs, n);
        for (size_t i = 0; i < n; i++) {
            if (fs[i]->state == CIO__PENDING && !cio__future_on_done(fs[i], wait_child_done, &st)) {
                rc = -ENOMEM;
                break;
            }
        }
        if (!rc) {
            cio__waiter w;
            cio__waiter_init(&w, cio__current, "wait", &st, NULL);
            st.w = &w;
            rc = cio__wait(&w, deadline);
            st.w = NULL;
        }
        unhook_pending(fs, n, &st);
        release_all(fs, n);
        if (rc < 0)
            return rc;
    }
    return (int)st.done;
}

/* ------------------------------------------------------------------------ */

typedef struct ac_entry {
    struct ac_state *st;
    size_t idx;
    bool hooked;
} ac_entry;

typedef struct ac_state {
    cio_future_t *const *fs;
    size_t n, head, tail, yielded;
    int64_t deadline;
    cio__waiter *w;
    size_t *order;
    ac_entry *e;
    size_t refs;  /* fs[0..refs) hold a reference of the iterator */
} ac_state;

static void ac_child_done(cio_future_t *f, void *arg)
{
    (void)f;
    ac_entry *e = arg;
    ac_state *st = e->st;
    e->hooked = false;
    st->order[st->tail++] = e->idx;
    if (st->w)
        cio__wake(st->w, 0);
}

void cio_as_completed_cleanup(cio_as_completed_t *it)
{
    ac_state *st = it ? it->state_ : NULL;
    if (!st)
        return;
    /* cio_as_completed_init cleans up through here when its entry array
     * could not be allocated: with no entries, nothing was hooked. */
    for (size_t i = 0; st->e && i < st->n; i++)
        if (st->e[i].hooked)
            cio__future_off_done_arg(st->fs[i], &st->e[i]);
    release_all(st->fs, st->refs);
    cio__free(st->order);
    cio__free(st->e);
    cio__free(st);
    it->state_ = NULL;
}

int cio_as_completed_init(cio_as_completed_t *it, cio_future_t *const *fs, size_t n,
                          double timeout)
{
    if (!it || (n && !fs))
        return -EINVAL;
    it->state_ = NULL;
    for (size_t i = 0; i < n; i++)
        if (!fs[i])
            return -EINVAL;
    ac_state *st = cio__calloc(1, sizeof(*st));
    if (!st)
        return -ENOMEM;
    it->state_ = st;
    st->fs = fs;
    st->n = n;
    int rc = cio__deadline_after(timeout, &st->deadline);
    st->order = cio__malloc((n ? n : 1) * sizeof(size_t));
    st->e = cio__calloc(n ? n : 1, sizeof(ac_entry));
    if (rc || !st->order || !st->e) {
        cio_as_completed_cleanup(it);
        return rc ? rc : -ENOMEM;
    }
    ref_all(fs, n);
    st->refs = n;
    for (size_t i = 0; i < n; i++) {
        st->e[i].st = st;
        st->e[i].idx = i;
        if (fs[i]->state != CIO__PENDING) {
            st->order[st->tail++] = i;
        } else if (cio__future_on_done(fs[i], ac_child_done, &st->e[i])) {
            st->e[i].hooked = true;
        } else {
            cio_as_completed_cleanup(it);
            return -ENOMEM;
        }
    }
    return 0;
}

int cio_as_completed_next(cio_as_completed_t *it, cio_future_t **out)
{
    if (!cio__current)
        return -EPERM;
    if (!it || !out)
        return -EINVAL;
    ac_state *st = it->state_;
    if (!st)
        return 0;
    if (st->yielded == st->n) {
        cio_as_completed_cleanup(it);
        return 0;
    }
    int rc = cio__cancel_state(cio__current, NULL);
    if (rc)
        return rc;
    if (st->head == st->tail) {
        cio__waiter w;
        cio__waiter_init(&w, cio__current, "as_completed", st, NULL);
        st->w = &w;
        rc = cio__wait(&w, st->deadline);
        st->w = NULL;
        if (rc == CIO__OWN_DEADLINE) {
            cio_as_completed_cleanup(it);
            return -ETIMEDOUT;
        }
        if (rc < 0)
            return rc;
    }
    cio_future_t *f = st->fs[st->order[st->head++]];
    f->retrieved = 1;
    *out = f;
    st->yielded++;
    return 1;
}
