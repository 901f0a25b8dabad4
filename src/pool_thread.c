/*
 * The thread pool executor (concurrent.futures.ThreadPoolExecutor,
 * loop.run_in_executor, asyncio.to_thread).
 *
 * Jobs wait in a FIFO under one mutex; worker threads start on demand up to
 * max_workers. A finished job is handed back to its loop through a wake-up
 * node embedded in the job (cio__loop_post), so the hand-off cannot fail for
 * memory; its future is completed there: futures are only ever touched by
 * their loop's thread. A job's future can be cancelled only while the job
 * is queued; once a worker has taken it, it runs to the end.
 *
 * A job holds a reference to its future, and a loop refuses to close while
 * futures are referenced, so a worker never posts to a freed loop.
 *
 * fork(): the child has none of the parent's threads. Every executor notices
 * (a process-wide fork generation bumped by a pthread_atfork handler) at its
 * next submission and starts from nothing; cio_loop_fork does the same for
 * the loop's default executor at once.
 */
#include "task.h"

#include <unistd.h>

typedef struct job {
    struct job *next;
    cio_future_t *fut;  /* holds a reference while the job exists */
    cio_loop_t *loop;
    cio_executor_t *ex;
    cio_task_fn fn;
    void *arg;
    void *result;
    int status;
    bool started;       /* under ex->mu */
    cio__tsnode post;   /* the hand-off to the loop */
} job;

struct cio_executor {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    job *head, *tail;
    unsigned max, nthreads, idle, alive;
    bool shutdown, detached;
    unsigned fork_gen;  /* the fork generation the threads belong to */
    pthread_t *threads;
};

static atomic_uint fork_gen;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void in_child(void)
{
    atomic_fetch_add(&fork_gen, 1);
}

static void atfork_install(void)
{
    pthread_atfork(NULL, NULL, in_child);
}

int cio_executor_new(cio_executor_t **out, unsigned max_workers)
{
    if (!out)
        return -EINVAL;
    *out = NULL;
    pthread_once(&atfork_once, atfork_install);
    if (!max_workers) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        max_workers = (unsigned)(cpus > 0 ? cpus : 1) + 4;
        if (max_workers > 32)
            max_workers = 32;
    }
    cio_executor_t *ex = cio__calloc(1, sizeof(*ex));
    if (!ex)
        return -ENOMEM;
    ex->threads = cio__calloc(max_workers, sizeof(pthread_t));
    if (!ex->threads) {
        cio__free(ex);
        return -ENOMEM;
    }
    pthread_mutex_init(&ex->mu, NULL);
    pthread_cond_init(&ex->cv, NULL);
    ex->max = max_workers;
    ex->fork_gen = atomic_load(&fork_gen);
    *out = ex;
    return 0;
}

static void ex_free(cio_executor_t *ex)
{
    pthread_mutex_destroy(&ex->mu);
    pthread_cond_destroy(&ex->cv);
    cio__free(ex->threads);
    cio__free(ex);
}

/* Loop thread: completes the job's future and frees the job. */
static void job_finish(void *arg)
{
    job *j = arg;
    cio_future_t *f = j->fut;
    f->owner = NULL;
    cio__future_complete(f, j->status, j->result,
                         j->status == -ECANCELED ? CIO__CANCELLED : CIO__DONE);
    cio_future_release(f);
    cio__free(j);
}

/* Any thread: hands a finished (or cancelled) job back to its loop. */
static void job_post(job *j)
{
    if (pthread_equal(j->loop->owner, pthread_self()) && !j->loop->closed) {
        job_finish(j);
        return;
    }
    j->post = (cio__tsnode){.cb = job_finish, .arg = j, .owned = 1};
    /* The loop cannot be closed while the job's future is referenced, so
     * the post succeeds; a closed loop would mean the future is gone. */
    if (cio__loop_post(j->loop, &j->post))
        cio__free(j);
}

static void *worker(void *arg)
{
    cio_executor_t *ex = arg;
    pthread_mutex_lock(&ex->mu);
    for (;;) {
        while (!ex->head && !ex->shutdown) {
            ex->idle++;
            pthread_cond_wait(&ex->cv, &ex->mu);
            ex->idle--;
        }
        job *j = ex->head;
        if (!j)
            break; /* shut down and drained */
        ex->head = j->next;
        if (!ex->head)
            ex->tail = NULL;
        j->started = true;
        pthread_mutex_unlock(&ex->mu);
        j->result = NULL;
        j->status = j->fn(j->arg, &j->result);
        job_post(j);
        pthread_mutex_lock(&ex->mu);
    }
    bool last = --ex->alive == 0 && ex->detached;
    pthread_mutex_unlock(&ex->mu);
    if (last)
        ex_free(ex);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* The loop's default executor                                               */
/* ------------------------------------------------------------------------ */

/* At close: queued jobs are cancelled, running ones waited for, and the
 * results delivered before the loop discards its callbacks. */
static void default_close(cio_loop_t *loop)
{
    cio_executor_t *ex = loop->executor;
    loop->executor = NULL;
    cio_executor_shutdown(ex, true);
    cio__loop_run_posts(loop);
}

static void forget_threads(cio_executor_t *ex);

static void default_fork(cio_loop_t *loop)
{
    if (loop->executor)
        forget_threads(loop->executor);
}

static const cio__loop_hooks pool_hooks = {.layer = 10, .close = default_close,
                                           .fork = default_fork};

static int ensure_default(cio_loop_t *loop)
{
    if (loop->executor)
        return 0;
    int rc = cio__loop_hook(loop, &pool_hooks);
    if (!rc)
        rc = cio_executor_new((cio_executor_t **)&loop->executor, 0);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Submitting                                                                */
/* ------------------------------------------------------------------------ */

static int job_cancel_hook(cio_future_t *f);

static const cio__future_ops job_ops = {
    .cancel = job_cancel_hook, .free = cio__future_pool_free, .name = NULL, .what = "job"};

/*
 * In a child after fork: the parent's threads are not here. Their count is
 * reset, the mutex and condition made anew (a thread may have held the
 * mutex at the fork), and queued jobs are dropped: their futures belong to
 * the parent's copy of the loop.
 */
static void forget_threads(cio_executor_t *ex)
{
    pthread_mutex_init(&ex->mu, NULL);
    pthread_cond_init(&ex->cv, NULL);
    ex->head = ex->tail = NULL;
    ex->nthreads = ex->idle = ex->alive = 0;
    ex->fork_gen = atomic_load(&fork_gen);
}

/* Starts a worker if none is idle. Under ex->mu. Returns 0, or -EAGAIN when
 * no thread can be created and the pool has none to run the job. */
static int ensure_worker(cio_executor_t *ex)
{
    if (ex->idle || ex->nthreads >= ex->max)
        return 0;
    if (pthread_create(&ex->threads[ex->nthreads], NULL, worker, ex) == 0) {
        ex->nthreads++;
        ex->alive++;
        return 0;
    }
    return ex->nthreads ? 0 : -EAGAIN; /* the threads there will get to it */
}

/* Queues j: 0, -ESHUTDOWN or -EAGAIN (nothing queued then). */
static int enqueue(cio_executor_t *ex, job *j)
{
    if (cio__unlikely(ex->fork_gen != atomic_load_explicit(&fork_gen, memory_order_relaxed)))
        forget_threads(ex);
    pthread_mutex_lock(&ex->mu);
    int rc = ex->shutdown ? -ESHUTDOWN : ensure_worker(ex);
    if (!rc) {
        if (ex->tail)
            ex->tail->next = j;
        else
            ex->head = j;
        ex->tail = j;
        pthread_cond_signal(&ex->cv);
    }
    pthread_mutex_unlock(&ex->mu);
    return rc;
}

int cio_run_in_executor(cio_future_t **out, cio_loop_t *loop, cio_executor_t *ex,
                        cio_task_fn fn, void *arg)
{
    if (!out)
        return -EINVAL;
    *out = NULL;
    if (!loop)
        loop = cio__running;
    int rc = !loop ? -EPERM : !fn ? -EINVAL : loop->closed ? -ESHUTDOWN : 0;
    if (!rc && !ex && !(rc = ensure_default(loop)))
        ex = loop->executor;
    if (rc)
        return rc;
    job *j = cio__calloc(1, sizeof(*j));
    cio_future_t *f = j ? cio__future_alloc(loop, &job_ops) : NULL;
    if (!f) {
        cio__free(j);
        return -ENOMEM;
    }
    *j = (job){.fut = f, .loop = loop, .ex = ex, .fn = fn, .arg = arg};
    rc = enqueue(ex, j);
    if (rc) {
        cio_future_release(f); /* pending and unreferenced: freed below */
        cio__future_pool_free(f);
        cio__free(j);
        return rc;
    }
    f->refs++; /* the job's reference */
    f->owner = j;
    *out = f;
    return 0;
}

/* Removes j from the queue if no worker took it yet. Under ex->mu. */
static bool unqueue(cio_executor_t *ex, job *j)
{
    if (j->started)
        return false;
    job **pp = &ex->head, *prev = NULL;
    while (*pp && *pp != j) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    if (!*pp)
        return false;
    *pp = j->next;
    if (ex->tail == j)
        ex->tail = prev;
    return true;
}

static int job_cancel_hook(cio_future_t *f)
{
    job *j = f->owner;
    if (!j)
        return 0;
    cio_executor_t *ex = j->ex;
    pthread_mutex_lock(&ex->mu);
    bool removed = unqueue(ex, j);
    pthread_mutex_unlock(&ex->mu);
    if (!removed)
        return 0;
    j->status = -ECANCELED;
    j->result = NULL;
    job_finish(j);
    return 1;
}

void cio_executor_shutdown(cio_executor_t *ex, bool wait)
{
    if (!ex)
        return;
    pthread_mutex_lock(&ex->mu);
    ex->shutdown = true;
    job *queued = ex->head;
    ex->head = ex->tail = NULL;
    pthread_cond_broadcast(&ex->cv);
    pthread_mutex_unlock(&ex->mu);
    /* Jobs that never started finish cancelled, on their loop's thread. */
    while (queued) {
        job *next = queued->next;
        queued->status = -ECANCELED;
        queued->result = NULL;
        job_post(queued);
        queued = next;
    }
    if (wait) {
        for (unsigned i = 0; i < ex->nthreads; i++)
            pthread_join(ex->threads[i], NULL);
        ex_free(ex);
        return;
    }
    pthread_mutex_lock(&ex->mu);
    for (unsigned i = 0; i < ex->nthreads; i++)
        pthread_detach(ex->threads[i]);
    ex->detached = true;
    bool none = ex->alive == 0;
    pthread_mutex_unlock(&ex->mu);
    if (none)
        ex_free(ex);
}

int cio_to_thread(cio_task_fn fn, void *arg, void **result)
{
    cio__coro *c = cio__current;
    if (!c)
        return -EPERM;
    int rc = cio__check_cancel(c);
    if (rc)
        return rc;
    cio_future_t *f;
    rc = cio_run_in_executor(&f, c->loop, NULL, fn, arg);
    if (rc)
        return rc;
    /* cio_await cancels the job on cancellation; a started job refuses, and
     * cio_await then waits for it to end before returning -ECANCELED. */
    rc = cio_await(f, result);
    cio_future_release(f);
    return rc;
}
