/*
 * Queues for the tasks of one loop: asyncio's Queue, LifoQueue and
 * PriorityQueue with Python 3.13's shutdown, over `void *` items.
 *
 * Storage: FIFO and LIFO queues keep their items in a power-of-two ring
 * (LIFO pushes and pops at the same end); a priority queue keeps a binary
 * min-heap of (item, insertion number) so that equal items come out in the
 * order they were put. A bounded queue allocates its ring at init, so the
 * hot path never allocates.
 *
 * Hand-off, as in sync.c: a put that finds a task waiting in get stores the
 * item in that getter's waiter (waiter->data) and wakes it; a get from a
 * full queue moves the item of the first waiting putter into the queue and
 * wakes that putter. A woken task cannot be interrupted any more, so a
 * getter that was handed an item returns it even if it is cancelled before
 * it runs (CPython bpo-23812 lost items there), and an interrupted task was
 * unlinked before anyone could hand it anything. Wake-ups happen only when
 * someone waits, which gives these invariants between await points:
 *
 *   getters waiting  =>  the queue is empty
 *   putters waiting  =>  the queue is full (n == maxsize)
 *
 * so a producer and a consumer running ahead of each other move a whole
 * ring of items per suspension instead of switching for every item.
 */
#include "waitq.h"

enum { Q_FIFO = 0, Q_LIFO, Q_PRIO };

/* A bounded queue allocates up to this many slots at init. */
#define Q_PREALLOC_MAX ((size_t)1 << 16)
/* The first allocation of an unbounded queue. */
#define Q_INITIAL 16

typedef struct pq_ent {
    void *item;
    uint64_t seq;
} pq_ent;

/* ------------------------------------------------------------------------ */
/* Storage: ring and heap                                                    */
/* ------------------------------------------------------------------------ */

static size_t round_pow2(size_t n)
{
    size_t c = 1;
    while (c < n)
        c <<= 1;
    return c;
}

static size_t slot_size(const cio_queue_t *q)
{
    return q->kind_ == Q_PRIO ? sizeof(pq_ent) : sizeof(void *);
}

/* Doubles the storage, unwrapping the ring to start at slot 0. */
static int q_grow(cio_queue_t *q)
{
    size_t ncap = q->cap_ * 2;
    if (ncap < q->cap_ || ncap > SIZE_MAX / slot_size(q))
        return -ENOMEM;
    void *nb = cio__malloc(ncap * slot_size(q));
    if (!nb)
        return -ENOMEM;
    if (q->kind_ == Q_PRIO) {
        memcpy(nb, q->buf_, q->n_ * sizeof(pq_ent));
    } else {
        void **ring = q->buf_, **nr = nb;
        size_t mask = q->cap_ - 1;
        for (size_t i = 0; i < q->n_; i++)
            nr[i] = ring[(q->head_ + i) & mask];
        q->head_ = 0;
    }
    cio__free(q->buf_);
    q->buf_ = nb;
    q->cap_ = ncap;
    return 0;
}

/* Heap order: the smaller item first, ties by insertion order. */
static bool pq_less(const cio_queue_t *q, const pq_ent *a, const pq_ent *b)
{
    int c = q->cmp_(a->item, b->item);
    return c < 0 || (c == 0 && a->seq < b->seq);
}

static void pq_push(cio_queue_t *q, void *item)
{
    pq_ent *h = q->buf_;
    pq_ent e = {item, q->seq_++};
    size_t i = q->n_++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!pq_less(q, &e, &h[parent]))
            break;
        h[i] = h[parent];
        i = parent;
    }
    h[i] = e;
}

static void *pq_pop(cio_queue_t *q)
{
    pq_ent *h = q->buf_;
    void *top = h[0].item;
    pq_ent last = h[--q->n_];
    size_t i = 0, n = q->n_;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && pq_less(q, &h[c + 1], &h[c]))
            c++;
        if (!pq_less(q, &h[c], &last))
            break;
        h[i] = h[c];
        i = c;
    }
    if (n)
        h[i] = last;
    return top;
}

/* Stores an item; the caller made sure there is a free slot. */
static inline void q_push(cio_queue_t *q, void *item)
{
    if (cio__likely(q->kind_ != Q_PRIO)) {
        void **ring = q->buf_;
        ring[(q->head_ + q->n_) & (q->cap_ - 1)] = item;
        q->n_++;
    } else {
        pq_push(q, item);
    }
}

/* Removes the next item; the caller made sure there is one. */
static inline void *q_pop(cio_queue_t *q)
{
    void **ring = q->buf_;
    switch (q->kind_) {
    case Q_FIFO: {
        void *item = ring[q->head_];
        q->head_ = (q->head_ + 1) & (q->cap_ - 1);
        q->n_--;
        return item;
    }
    case Q_LIFO:
        q->n_--;
        return ring[(q->head_ + q->n_) & (q->cap_ - 1)];
    default:
        return pq_pop(q);
    }
}

static inline bool q_full(const cio_queue_t *q)
{
    return q->maxsize_ && q->n_ >= q->maxsize_;
}

/* ------------------------------------------------------------------------ */
/* Init and destroy                                                          */
/* ------------------------------------------------------------------------ */

static int q_init(cio_queue_t *q, size_t maxsize, uint8_t kind, cio_queue_cmp_fn cmp)
{
    if (!q || (kind == Q_PRIO && !cmp))
        return -EINVAL;
    memset(q, 0, sizeof(*q));
    q->kind_ = kind;
    q->cmp_ = cmp;
    q->maxsize_ = maxsize;
    size_t want = maxsize ? maxsize : Q_INITIAL;
    q->cap_ = round_pow2(want < Q_PREALLOC_MAX ? want : Q_PREALLOC_MAX);
    q->buf_ = cio__malloc(q->cap_ * slot_size(q));
    if (!q->buf_) {
        q->cap_ = 0;
        return -ENOMEM;
    }
    return 0;
}

int cio_queue_init(cio_queue_t *q, size_t maxsize)
{
    return q_init(q, maxsize, Q_FIFO, NULL);
}

int cio_queue_init_lifo(cio_queue_t *q, size_t maxsize)
{
    return q_init(q, maxsize, Q_LIFO, NULL);
}

int cio_queue_init_priority(cio_queue_t *q, size_t maxsize, cio_queue_cmp_fn cmp)
{
    return q_init(q, maxsize, Q_PRIO, cmp);
}

int cio_queue_destroy(cio_queue_t *q)
{
    if (!q)
        return 0;
    if (!cio__waitq_empty(&q->getters_) || !cio__waitq_empty(&q->putters_) ||
        !cio__waitq_empty(&q->joiners_))
        return -EBUSY;
    cio__free(q->buf_);
    q->buf_ = NULL;
    q->cap_ = q->n_ = q->head_ = 0;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Put and get                                                               */
/* ------------------------------------------------------------------------ */

/*
 * put_nowait's logic: 0 (stored, or handed to a waiting getter), -EAGAIN
 * (full), -ESHUTDOWN, -ENOMEM.
 */
static inline int q_offer(cio_queue_t *q, void *item)
{
    if (cio__unlikely(q->shutdown_))
        return -ESHUTDOWN;
    cio__waiter *w = q->getters_.head_;
    if (cio__unlikely(w != NULL)) { /* the queue is empty: hand it over */
        cio__wlist_remove(&q->getters_, w);
        w->data = item;
        q->unfinished_++;
        cio__wake(w, 0);
        return 0;
    }
    if (q_full(q))
        return -EAGAIN;
    if (cio__unlikely(q->n_ == q->cap_) && q_grow(q))
        return -ENOMEM;
    q_push(q, item);
    q->unfinished_++;
    return 0;
}

/* A slot just freed in a full queue goes to the first waiting putter. */
static void admit_putter(cio_queue_t *q)
{
    cio__waiter *w = cio__wlist_pop(&q->putters_);
    q_push(q, w->data);
    q->unfinished_++;
    cio__wake(w, 0);
}

/* get_nowait's logic: 0, -EAGAIN (empty), -ESHUTDOWN (empty and shut down). */
static inline int q_take(cio_queue_t *q, void **item)
{
    if (cio__unlikely(q->n_ == 0))
        return q->shutdown_ ? -ESHUTDOWN : -EAGAIN;
    *item = q_pop(q);
    if (cio__unlikely(q->putters_.head_ != NULL))
        admit_putter(q);
    return 0;
}

int cio_queue_put_nowait(cio_queue_t *q, void *item)
{
    if (!q || !q->buf_)
        return -EINVAL;
    return q_offer(q, item);
}

int cio_queue_get_nowait(cio_queue_t *q, void **item)
{
    if (!q || !q->buf_ || !item)
        return -EINVAL;
    return q_take(q, item);
}

/* put's slow path: the queue is full. */
static CIO__NOINLINE int q_wait_put(cio_queue_t *q, cio__coro *t, void *item)
{
    /* Woken with 0 once a get moved our item in, with -ESHUTDOWN by a
     * shutdown; interrupted, the item was not put. */
    cio__waiter w;
    cio__waiter_init(&w, t, "queue put", q, cio__wlist_unlink);
    w.data = item;
    cio__wlist_push(&q->putters_, &w);
    return cio__wait(&w, CIO__NO_DEADLINE);
}

/* get's slow path: the queue is empty. */
static CIO__NOINLINE int q_wait_get(cio_queue_t *q, cio__coro *t, void **item)
{
    /* Woken with 0 and an item handed over by a put, with -ESHUTDOWN by a
     * shutdown; interrupted, nothing was taken. */
    cio__waiter w;
    cio__waiter_init(&w, t, "queue get", q, cio__wlist_unlink);
    cio__wlist_push(&q->getters_, &w);
    int rc = cio__wait(&w, CIO__NO_DEADLINE);
    if (rc == 0)
        *item = w.data;
    return rc;
}

int cio_queue_put(cio_queue_t *q, void *item)
{
    cio__coro *t = cio__current;
    if (cio__unlikely(!t))
        return -EPERM;
    if (cio__unlikely(!q || !q->buf_))
        return -EINVAL;
    int rc = cio__check_cancel(t);
    if (rc || (rc = q_offer(q, item)) != -EAGAIN)
        return rc;
    return q_wait_put(q, t, item);
}

int cio_queue_get(cio_queue_t *q, void **item)
{
    cio__coro *t = cio__current;
    if (cio__unlikely(!t))
        return -EPERM;
    if (cio__unlikely(!q || !q->buf_ || !item))
        return -EINVAL;
    int rc = cio__check_cancel(t);
    if (rc || (rc = q_take(q, item)) != -EAGAIN)
        return rc;
    return q_wait_get(q, t, item);
}

/* ------------------------------------------------------------------------ */
/* Sizes                                                                     */
/* ------------------------------------------------------------------------ */

size_t cio_queue_qsize(const cio_queue_t *q)
{
    return q ? q->n_ : 0;
}

size_t cio_queue_maxsize(const cio_queue_t *q)
{
    return q ? q->maxsize_ : 0;
}

bool cio_queue_empty(const cio_queue_t *q)
{
    return !q || q->n_ == 0;
}

bool cio_queue_full(const cio_queue_t *q)
{
    return q && q_full(q);
}

/* ------------------------------------------------------------------------ */
/* task_done, join, shutdown                                                 */
/* ------------------------------------------------------------------------ */

int cio_queue_task_done(cio_queue_t *q)
{
    if (!q)
        return -EINVAL;
    if (q->unfinished_ == 0)
        return -EOVERFLOW;
    if (--q->unfinished_ == 0)
        cio__waitq_wake_all(&q->joiners_, 0);
    return 0;
}

size_t cio_queue_unfinished(const cio_queue_t *q)
{
    return q ? q->unfinished_ : 0;
}

int cio_queue_join(cio_queue_t *q)
{
    cio__coro *t = cio__current;
    if (!t)
        return -EPERM;
    if (!q)
        return -EINVAL;
    int rc = cio__check_cancel(t);
    if (rc || q->unfinished_ == 0)
        return rc;
    cio__waiter w;
    cio__waiter_init(&w, t, "queue join", q, cio__wlist_unlink);
    cio__wlist_push(&q->joiners_, &w);
    return cio__wait(&w, CIO__NO_DEADLINE);
}

/* Drops every queued item (immediate shutdown); returns how many. */
static int64_t q_drop_all(cio_queue_t *q, cio_queue_drop_fn drop, void *arg)
{
    int64_t dropped = 0;
    while (q->n_ > 0) {
        void *item = q_pop(q);
        dropped++;
        if (q->unfinished_ > 0)
            q->unfinished_--;
        if (drop)
            drop(item, arg);
    }
    if (q->unfinished_ == 0)
        cio__waitq_wake_all(&q->joiners_, 0);
    return dropped;
}

int64_t cio_queue_shutdown(cio_queue_t *q, bool immediate, cio_queue_drop_fn drop,
                           void *arg)
{
    if (!q)
        return 0;
    q->shutdown_ = 1;
    int64_t dropped = immediate && q->buf_ ? q_drop_all(q, drop, arg) : 0;
    /* Getters wait only on an empty queue and putters only on a full one;
     * either way their call now fails (a putter's item was not put). */
    cio__waitq_wake_all(&q->getters_, -ESHUTDOWN);
    cio__waitq_wake_all(&q->putters_, -ESHUTDOWN);
    return dropped;
}

bool cio_queue_is_shutdown(const cio_queue_t *q)
{
    return q && q->shutdown_;
}
