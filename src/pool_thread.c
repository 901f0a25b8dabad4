/*
 * The thread pool executor (concurrent.futures.ThreadPoolExecutor,
 * loop.run_in_executor, asyncio.to_thread).
 *
 * Jobs wait in a FIFO under one mutex; worker threads start on demand up to
 * max_workers. A finished job is handed back to its loop with
 * cio_call_soon_threadsafe, where its future is completed: futures are only
 * ever touched by their loop's thread. A job's future can be cancelled only
 * while the job is queued; once a worker has taken it, it runs to the end.
 */
#include "internal.h"

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
} job;

struct cio_executor {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    job *head, *tail;
    unsigned max, nthreads, idle, alive;
    bool shutdown, detached;
    pthread_t *threads;
};

int cio_executor_new(cio_executor_t **out, unsigned max_workers)
{
    if (!out)
        return -EINVAL;
    if (!max_workers) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        max_workers = (unsigned)(cpus > 0 ? cpus : 1) + 4;
        if (max_workers > 32)
            max_workers = 32;
    }
    cio_executor_t *ex = calloc(1, sizeof(*ex));
    if (!ex)
        return -ENOMEM;
    ex->threads = calloc(max_workers, sizeof(pthread_t));
    if (!ex->threads) {
        free(ex);
        return -ENOMEM;
    }
    pthread_mutex_init(&ex->mu, NULL);
    pthread_cond_init(&ex->cv, NULL);
    ex->max = max_workers;
    *out = ex;
    return 0;
}

static void ex_free(cio_executor_t *ex)
{
    pthread_mutex_destroy(&ex->mu);
    pthread_cond_destroy(&ex->cv);
    free(ex->threads);
    free(ex);
}

/* Loop thread: completes the job's future and frees the job. */
static void job_finish(void *arg)
{
    job *j = arg;
    cio_future_t *f = j->fut;
    f->job = NULL;
    cio__future_complete(f, j->status, j->result,
                         j->status == -ECANCELED ? CIO__CANCELLED : CIO__DONE);
    cio_future_release(f);
    free(j);
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
        /* If the loop is gone the result has nowhere to go; the loop's
         * close freed the future with its pool. */
        if (cio_call_soon_threadsafe(j->loop, job_finish, j))
            free(j);
        pthread_mutex_lock(&ex->mu);
    }
    bool last = --ex->alive == 0 && ex->detached;
    pthread_mutex_unlock(&ex->mu);
    if (last)
        ex_free(ex);
    return NULL;
}

static int ensure_default(cio_loop_t *loop)
{
    if (loop->executor)
        return 0;
    return cio_executor_new(&loop->executor, 0);
}

cio_future_t *cio_run_in_executor(cio_loop_t *loop, cio_executor_t *ex, cio_task_fn fn, void *arg)
{
    if (!loop)
        loop = cio__running;
    if (!loop) {
        errno = EPERM;
        return NULL;
    }
    if (!fn) {
        errno = EINVAL;
        return NULL;
    }
    if (!ex) {
        int rc = ensure_default(loop);
        if (rc) {
            errno = -rc;
            return NULL;
        }
        ex = loop->executor;
    }
    job *j = calloc(1, sizeof(*j));
    cio_future_t *f = j ? cio__future_alloc(loop, CIO__KIND_JOB) : NULL;
    if (!f) {
        free(j);
        errno = ENOMEM;
        return NULL;
    }
    f->refs++; /* the job's reference */
    f->job = j;
    j->fut = f;
    j->loop = loop;
    j->ex = ex;
    j->fn = fn;
    j->arg = arg;
    pthread_mutex_lock(&ex->mu);
    if (ex->shutdown) {
        pthread_mutex_unlock(&ex->mu);
        f->refs = 1;
        f->job = NULL;
        cio__future_complete(f, -ECANCELED, NULL, CIO__CANCELLED);
        cio_future_release(f);
        free(j);
        errno = ESHUTDOWN;
        return NULL;
    }
    if (ex->tail)
        ex->tail->next = j;
    else
        ex->head = j;
    ex->tail = j;
    if (!ex->idle && ex->nthreads < ex->max &&
        pthread_create(&ex->threads[ex->nthreads], NULL, worker, ex) == 0) {
        ex->nthreads++;
        ex->alive++;
    }
    pthread_cond_signal(&ex->cv);
    pthread_mutex_unlock(&ex->mu);
    return f;
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

int cio__job_cancel(cio_future_t *f)
{
    job *j = f->job;
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
        if (pthread_equal(queued->loop->owner, pthread_self()))
            job_finish(queued);
        else if (cio_call_soon_threadsafe(queued->loop, job_finish, queued))
            free(queued);
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

void cio__executor_shutdown_default(cio_loop_t *loop)
{
    cio_executor_t *ex = loop->executor;
    loop->executor = NULL;
    cio_executor_shutdown(ex, true);
}

int cio_to_thread(cio_task_fn fn, void *arg, void **result)
{
    cio__task *t = cio__current;
    if (!t)
        return -EPERM;
    int rc = cio__cancel_state(t, NULL);
    if (rc)
        return rc;
    cio_future_t *f = cio_run_in_executor(t->fut.loop, NULL, fn, arg);
    if (!f)
        return -errno;
    /* cio_await cancels the job on cancellation; a started job refuses, and
     * cio_await then waits for it to end before returning -ECANCELED. */
    rc = cio_await(f, result);
    cio_future_release(f);
    return rc;
}
