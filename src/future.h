/*
 * Layer 6, futures (future.c): a result slot completed once, a FIFO list of
 * waiting coroutines and a list of done callbacks. What a kind of future
 * does differently (a task is cancelled by cancelling its coroutine, a pool
 * job only while queued) its creator installs as hooks; this layer knows no
 * kinds.
 */
#ifndef CIO_FUTURE_H
#define CIO_FUTURE_H

#include "io.h"

enum cio__fstate {
    CIO__PENDING = 0,  /* not done */
    CIO__DONE,         /* done with a value or an error */
    CIO__CANCELLED     /* done, cancelled */
};

/* The hooks of a kind of future (NULL for plain futures). */
typedef struct cio__future_ops {
    /* Requests cancellation: returns 1 if requested, 0 if it cannot be
     * (plain futures are completed as cancelled instead). */
    int (*cancel)(cio_future_t *f);
    /* Frees the object once done and unreferenced (plain: back to the pool). */
    void (*free)(cio_future_t *f);
    /* A name for reports, or NULL. */
    const char *(*name)(cio_future_t *f);
    const char *what;  /* "task", "job": shown in cio_dump_tasks */
} cio__future_ops;

typedef struct cio__cbnode {
    cio_handle_t h;             /* queued on the ready list once done */
    struct cio__cbnode *next;
    cio_future_t *fut;
    cio_done_fn cb;
    void *arg;
    bool sync;                  /* internal: runs at completion */
} cio__cbnode;

struct cio_future {
    cio_loop_t *loop;
    const cio__future_ops *ops;
    uint8_t state;     /* enum cio__fstate */
    uint8_t retrieved; /* someone looked at the outcome */
    int32_t refs;
    int status;
    void *result;
    cio__wlist waiters;
    cio__cbnode *callbacks;
    void *owner;       /* the creator's (pool jobs: the job) */
};

/*
 * Allocates a pending future (one reference) from the loop's pool with the
 * given hooks. Returns NULL when out of memory or the loop is closed.
 */
cio_future_t *cio__future_alloc(cio_loop_t *loop, const cio__future_ops *ops);
/* Completes f (also tasks and jobs). Returns 0, or -EALREADY if done. */
int cio__future_complete(cio_future_t *f, int status, void *result, uint8_t state);
/* Frees a done future whose references are gone. */
void cio__future_free(cio_future_t *f);
/* Returns a plain future's memory to the pool (ops->free of kinds that
 * came from the future pool). */
void cio__future_pool_free(cio_future_t *f);

/* Internal done callbacks run synchronously at completion (combinators,
 * groups, shield). Return the node (NULL on ENOMEM). */
void *cio__future_on_done(cio_future_t *f, void (*fn)(cio_future_t *, void *), void *arg);
/*
 * The same in two steps, for callers that must not fail after a point of no
 * return (a spawned task cannot be taken back): take a node first (NULL when
 * out of memory), then attach it, which cannot fail; or give it back.
 */
void *cio__cbnode_take(cio_loop_t *loop);
void cio__cbnode_give(cio_loop_t *loop, void *node);
void cio__future_on_done_node(cio_future_t *f, void *node,
                              void (*fn)(cio_future_t *, void *), void *arg);
/* Removes the internal callbacks registered with `arg`; returns how many. */
int cio__future_off_done_arg(cio_future_t *f, void *arg);

/* Reference counting for the library's own short-lived references (a
 * waiter's, a combinator's): inline, the common case is one increment and
 * one decrement. */
static inline void cio__future_hold(cio_future_t *f)
{
    f->refs++;
}

static inline void cio__future_unhold(cio_future_t *f)
{
    if (cio__likely(f->refs > 1))
        f->refs--;
    else
        cio_future_release(f);
}

/* Reports an error of a future nobody retrieved (debug mode). */
void cio__report_unretrieved(cio_future_t *f);

#endif /* CIO_FUTURE_H */
