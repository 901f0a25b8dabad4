/*
 * Helpers of the synchronisation primitives and queues (sync.c, queue.c)
 * over the core's waiter lists (cio__wlist, which is the public
 * cio_waitq_t embedded in their caller-owned objects).
 */
#ifndef CIO_WAITQ_H
#define CIO_WAITQ_H

#include "task.h"

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
    while ((w = cio__wlist_pop(q))) {
        cio__wake(w, result);
        n++;
    }
    return n;
}

#endif /* CIO_WAITQ_H */
