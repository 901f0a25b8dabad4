/*
 * Wait queues of the synchronisation primitives and queues (sync.c,
 * queue.c): intrusive FIFO lists of cio__waiter kept in the caller-owned
 * objects of cio.h (cio_waitq_t), and the checks every await point there
 * starts with.
 *
 * The objects live in caller storage with only public types in their
 * definition, so their lists are cio_waitq_t rather than cio__wlist; the
 * helpers below are the same three list operations over that type.
 */
#ifndef CIO_WAITQ_H
#define CIO_WAITQ_H

#include "internal.h"

static inline void cio__waitq_push(cio_waitq_t *q, cio__waiter *w)
{
    w->next = NULL;
    w->prev = q->tail_;
    if (q->tail_)
        q->tail_->next = w;
    else
        q->head_ = w;
    q->tail_ = w;
}

static inline void cio__waitq_remove(cio_waitq_t *q, cio__waiter *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        q->head_ = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        q->tail_ = w->prev;
    w->next = w->prev = NULL;
}

static inline cio__waiter *cio__waitq_pop(cio_waitq_t *q)
{
    cio__waiter *w = q->head_;
    if (w)
        cio__waitq_remove(q, w);
    return w;
}

static inline bool cio__waitq_empty(const cio_waitq_t *q)
{
    return q->head_ == NULL;
}

/*
 * For the slow path of an await point: the waiter it keeps on the stack
 * would otherwise enlarge the frame and prologue of the fast path.
 */
#if defined(__GNUC__)
#define CIO__NOINLINE __attribute__((noinline))
#else
#define CIO__NOINLINE
#endif

/* Pops every waiter and wakes it with `result`; returns how many. */
static inline size_t cio__waitq_wake_all(cio_waitq_t *q, int result)
{
    size_t n = 0;
    cio__waiter *w;
    while ((w = cio__waitq_pop(q))) {
        cio__wake(w, result);
        n++;
    }
    return n;
}

/*
 * The level-triggered check every await point makes first, even one that
 * will not suspend: 0, or -ECANCELED / -ETIMEDOUT. A task neither cancelled
 * nor inside a scope (the common case) costs two loads.
 */
static inline int cio__check_cancel(cio__task *t)
{
    if (cio__likely(!t->cancel_requested && !t->scope))
        return 0;
    return cio__cancel_state(t, NULL);
}

#endif /* CIO_WAITQ_H */
