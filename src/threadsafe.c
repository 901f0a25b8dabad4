/*
 * run_coroutine_threadsafe and its thread-safe future (asyncio's
 * run_coroutine_threadsafe returning a concurrent.futures.Future).
 *
 * A submission is a cio_cfuture_t on the heap, reference counted with an
 * atomic count: the caller's reference (and those it hands on with
 * cio_cfuture_ref), the loop side's (from the submission until the task has
 * finished) and one for a queued cancellation. Whoever drops the last one
 * frees it, so the caller may release it at any time.
 *
 * The submitter posts the cfuture's embedded delivery node to the target
 * loop (cio__loop_post: no allocation, -ESHUTDOWN once the loop is closed).
 * On the loop's thread the delivery spawns the task and attaches a
 * synchronous done callback, taken before the spawn so that nothing can
 * fail after it; that callback completes the cfuture on the loop's thread.
 *
 * Completion, under the cfuture's mutex: the state becomes done, blocked
 * threads are woken through the condition variable, and every task that
 * waits for it (on any loop, the target's included) is woken by a node
 * posted to that task's loop. The node lives in the waiting task's frame, so
 * a waiting task never returns while its node is queued: interrupted after
 * the node was posted, it waits (uninterruptibly, for one loop iteration)
 * until the node has run. The waiting task's loop cannot close meanwhile
 * (the task is unfinished), so the post cannot fail.
 *
 * Cancellation from any thread: before the delivery it is a flag the
 * delivery obeys (the task is spawned and cancelled at once, so its body
 * runs with every await point failing, as for any task cancelled before it
 * starts, and can free what its argument owns); afterwards a second
 * embedded node carries cio_task_cancel to the loop's thread.
 *
 * Shutdown and close: a delivery does not spawn, and ends the cfuture with
 * -ESHUTDOWN (fn not run), once cio_loop_shutdown has begun on the loop
 * (it marks the loop with cio__threadsafe_refuse, so that a flood of
 * submissions cannot keep its "run until no task is left" going forever)
 * or while the loop is not running: at close, both nodes being
 * CIO__TS_NOTIFY, a close that finds them still queued runs them instead
 * of dropping them, and the pool's close hook flushes the posts while it
 * waits for the default pool. A cancellation node finds the task finished
 * (the close refuses while tasks are unfinished) and only drops its
 * reference.
 */
#include "pool.h"

#include <time.h>

enum { CF_QUEUED, CF_RUNNING, CF_DONE };

/* A task waiting for a cfuture: lives in the waiting task's frame. */
typedef struct twait {
    struct twait *next, *prev; /* cf->waiters (under cf->mu) */
    cio__tsnode node;          /* posted to `loop` at completion */
    cio__waiter *w;            /* woken by the node (the task's loop thread) */
    cio_loop_t *loop;
    bool linked;               /* on cf->waiters (under cf->mu) */
    bool ran;                  /* the node has run (the task's loop thread) */
} twait;

struct cio_cfuture {
    pthread_mutex_t mu;
    pthread_cond_t cv;       /* blocked threads */
    atomic_int refs;
    atomic_int state;        /* CF_*, changed under mu */
    cio_loop_t *loop;
    pthread_t owner;         /* the thread of the target loop */
    cio_task_fn fn;
    void *arg;
    cio_task_t *task;        /* the target loop's thread: set while it runs */
    int status;              /* under mu, once done */
    void *result;
    bool cancel;             /* cancellation requested (under mu) */
    twait *waiters;          /* under mu */
    cio__tsnode node;        /* the delivery */
    cio__tsnode cnode;       /* a cancellation */
};

static void cf_unref(cio_cfuture_t *cf)
{
    if (atomic_fetch_sub_explicit(&cf->refs, 1, memory_order_acq_rel) != 1)
        return;
    pthread_mutex_destroy(&cf->mu);
    pthread_cond_destroy(&cf->cv);
    cio__free(cf);
}

void cio_cfuture_release(cio_cfuture_t *cf)
{
    if (cf)
        cf_unref(cf);
}

cio_cfuture_t *cio_cfuture_ref(cio_cfuture_t *cf)
{
    /* The caller holds a reference, so the count cannot reach 0 meanwhile;
     * its release (acq_rel) orders what it did before the last drop. */
    if (cf)
        atomic_fetch_add_explicit(&cf->refs, 1, memory_order_relaxed);
    return cf;
}

/* ------------------------------------------------------------------------ */
/* The loop side                                                             */
/* ------------------------------------------------------------------------ */

/* The target loop's thread: records the outcome, wakes every waiter and
 * drops the loop side's reference. */
static void complete(cio_cfuture_t *cf, int status, void *result)
{
    cf->task = NULL;
    pthread_mutex_lock(&cf->mu);
    cf->status = status;
    cf->result = result;
    atomic_store_explicit(&cf->state, CF_DONE, memory_order_release);
    for (twait *tw = cf->waiters, *next; tw; tw = next) {
        next = tw->next; /* tw may be gone once its node is posted */
        tw->linked = false;
        /* Cannot fail: the waiting task keeps its loop open. */
        (void)cio__loop_post(tw->loop, &tw->node);
    }
    cf->waiters = NULL;
    pthread_cond_broadcast(&cf->cv);
    pthread_mutex_unlock(&cf->mu);
    cf_unref(cf);
}

static void task_done(cio_future_t *f, void *arg)
{
    f->retrieved = 1; /* handed on to the cfuture's waiters */
    complete(arg, f->status, f->result);
}

/* The loop cio_loop_shutdown is shutting down on this thread, if any. */
static _Thread_local const cio_loop_t *refusing;

/*
 * cio_loop_shutdown (runner.c) marks its loop while it runs: submissions delivered
 * meanwhile are refused (see deliver). Called on the loop's thread.
 */
void cio__threadsafe_refuse(cio_loop_t *loop, bool refuse)
{
    refusing = refuse ? loop : NULL;
}

/* The target loop's thread: starts the task, or ends the cfuture with the
 * reason it cannot (fn does not run then). */
static void deliver(void *arg)
{
    cio_cfuture_t *cf = arg;
    cio_loop_t *loop = cf->loop;
    cio_task_t *t = NULL;
    void *node = NULL;
    /* Not running: the loop is closing (and runs or flushes its posts);
     * refusing: cio_loop_shutdown has begun. */
    int rc = !loop->running || loop == refusing ? -ESHUTDOWN : 0;
    if (!rc && !(node = cio__cbnode_take(loop)))
        rc = -ENOMEM;
    if (!rc)
        rc = cio_spawn_ex(&t, loop, cf->fn, cf->arg, NULL);
    if (rc) {
        if (node)
            cio__cbnode_give(loop, node);
        complete(cf, rc, NULL);
        return;
    }
    cio__future_on_done_node(t, node, task_done, cf);
    cf->task = t;
    pthread_mutex_lock(&cf->mu);
    atomic_store_explicit(&cf->state, CF_RUNNING, memory_order_relaxed);
    bool cancel = cf->cancel;
    pthread_mutex_unlock(&cf->mu);
    if (cancel)
        cio_task_cancel(t);
    cio_future_release(t); /* the task holds its own reference until it ends */
}

/* The target loop's thread: a cancellation requested by another thread. */
static void deliver_cancel(void *arg)
{
    cio_cfuture_t *cf = arg;
    if (cf->task)
        cio_task_cancel(cf->task);
    cf_unref(cf);
}

int cio_run_coroutine_threadsafe(cio_cfuture_t **out, cio_loop_t *loop, cio_task_fn fn,
                                 void *arg)
{
    if (!out)
        return -EINVAL;
    *out = NULL;
    if (!loop || !fn)
        return -EINVAL;
    cio_cfuture_t *cf = cio__calloc(1, sizeof(*cf));
    if (!cf)
        return -ENOMEM;
    pthread_condattr_t ca;
    int rc = pthread_condattr_init(&ca) ? -ENOMEM : 0;
    if (!rc) {
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        rc = pthread_cond_init(&cf->cv, &ca) ? -ENOMEM : 0;
        pthread_condattr_destroy(&ca);
    }
    if (rc) {
        cio__free(cf);
        return rc;
    }
    pthread_mutex_init(&cf->mu, NULL);
    atomic_init(&cf->refs, 2); /* the caller's and the loop side's */
    atomic_init(&cf->state, CF_QUEUED);
    cf->loop = loop;
    cf->owner = loop->owner;
    cf->fn = fn;
    cf->arg = arg;
    cf->node = (cio__tsnode){.cb = deliver, .arg = cf, .owned = CIO__TS_NOTIFY};
    cf->cnode = (cio__tsnode){.cb = deliver_cancel, .arg = cf, .owned = CIO__TS_NOTIFY};
    if ((rc = cio__loop_post(loop, &cf->node))) {
        pthread_mutex_destroy(&cf->mu);
        pthread_cond_destroy(&cf->cv);
        cio__free(cf);
        return rc;
    }
    *out = cf;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Any thread                                                                */
/* ------------------------------------------------------------------------ */

bool cio_cfuture_done(const cio_cfuture_t *cf)
{
    return cf && atomic_load_explicit(&cf->state, memory_order_acquire) == CF_DONE;
}

int cio_cfuture_cancel(cio_cfuture_t *cf)
{
    if (!cf)
        return -EINVAL;
    pthread_mutex_lock(&cf->mu);
    int state = atomic_load_explicit(&cf->state, memory_order_relaxed);
    int rc = state != CF_DONE;
    if (rc && !cf->cancel) {
        cf->cancel = true; /* a queued delivery cancels the task it spawns */
        if (state == CF_RUNNING) {
            atomic_fetch_add_explicit(&cf->refs, 1, memory_order_relaxed);
            /* Cannot fail: the running task keeps its loop open. */
            if (cio__loop_post(cf->loop, &cf->cnode))
                atomic_fetch_sub_explicit(&cf->refs, 1, memory_order_relaxed);
        }
    }
    pthread_mutex_unlock(&cf->mu);
    return rc;
}

/* The outcome of a done cfuture. */
static int outcome(cio_cfuture_t *cf, void **result)
{
    pthread_mutex_lock(&cf->mu);
    int status = cf->status;
    if (result)
        *result = cf->result;
    pthread_mutex_unlock(&cf->mu);
    return status;
}

/* A thread outside any task: blocks on the condition variable. */
static int wait_thread(cio_cfuture_t *cf, int64_t deadline, void **result)
{
    struct timespec ts = {.tv_sec = (time_t)(deadline / 1000000000),
                          .tv_nsec = (long)(deadline % 1000000000)};
    pthread_mutex_lock(&cf->mu);
    int rc = 0;
    while (!rc && atomic_load_explicit(&cf->state, memory_order_relaxed) != CF_DONE) {
        if (deadline == CIO__NO_DEADLINE)
            pthread_cond_wait(&cf->cv, &cf->mu);
        else if (pthread_cond_timedwait(&cf->cv, &cf->mu, &ts) == ETIMEDOUT)
            rc = -ETIMEDOUT;
    }
    bool done = atomic_load_explicit(&cf->state, memory_order_relaxed) == CF_DONE;
    pthread_mutex_unlock(&cf->mu);
    return done ? outcome(cf, result) : rc;
}

/* The waiting task's loop thread: the cfuture is done. */
static void twait_wake(void *arg)
{
    twait *tw = arg;
    tw->ran = true;
    cio__wake(tw->w, 0);
}

/* A task (of any loop): an await point that parks only this task. */
static int wait_task(cio_cfuture_t *cf, cio__coro *c, int64_t deadline, void **result)
{
    cio__waiter w;
    cio__waiter_init(&w, c, "cfuture", cf, NULL);
    twait tw = {.w = &w, .loop = c->loop, .linked = true};
    tw.node = (cio__tsnode){.cb = twait_wake, .arg = &tw, .owned = 1};
    pthread_mutex_lock(&cf->mu);
    bool done = atomic_load_explicit(&cf->state, memory_order_relaxed) == CF_DONE;
    if (!done) {
        tw.next = cf->waiters;
        if (cf->waiters)
            cf->waiters->prev = &tw;
        cf->waiters = &tw;
    }
    pthread_mutex_unlock(&cf->mu);
    if (done)
        return outcome(cf, result);
    int rc = cio__wait(&w, deadline);
    if (tw.ran)
        return outcome(cf, result);
    /* Interrupted (cancellation, a deadline, a timer that could not be
     * armed): leave the list, or wait for a node already on its way. */
    pthread_mutex_lock(&cf->mu);
    bool posted = !tw.linked;
    if (tw.linked) {
        if (tw.prev)
            tw.prev->next = tw.next;
        else
            cf->waiters = tw.next;
        if (tw.next)
            tw.next->prev = tw.prev;
    }
    pthread_mutex_unlock(&cf->mu);
    if (posted && !tw.ran) {
        cio__waiter w2;
        cio__waiter_init(&w2, c, "cfuture", cf, NULL);
        w2.nointr = 1;
        tw.w = &w2;
        (void)cio__wait(&w2, CIO__NO_DEADLINE);
    }
    if (rc == CIO__OWN_DEADLINE)
        return posted ? outcome(cf, result) : -ETIMEDOUT;
    return rc;
}

int cio_cfuture_wait(cio_cfuture_t *cf, double timeout, void **result)
{
    if (result)
        *result = NULL;
    int64_t deadline;
    if (!cf || cio__deadline_after(timeout, &deadline))
        return -EINVAL;
    cio__coro *c = cio__current;
    int rc = c ? cio__check_cancel(c) : 0;
    if (rc)
        return rc;
    if (cio_cfuture_done(cf))
        return outcome(cf, result);
    if (timeout <= 0)
        return -ETIMEDOUT; /* only a look */
    /* The target loop's thread can only wait from a task of that loop:
     * anything else there keeps the loop from running the task. */
    if (pthread_equal(cf->owner, pthread_self()) && !(c && c->loop == cf->loop))
        return -EDEADLK;
    return c ? wait_task(cf, c, deadline, result) : wait_thread(cf, deadline, result);
}
