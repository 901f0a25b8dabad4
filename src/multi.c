/*
 * Several cores: n threads, each running a loop of its own with the same
 * main function (cio_run in every thread), for servers that share a port
 * with SO_REUSEPORT.
 *
 * Each thread publishes its loop and main task in its slot, under the
 * multi's mutex, while the main function runs; cio_multi_stop reads the
 * slots under the same mutex and posts a cancel request to each published
 * loop (through a node embedded in the slot, so that it cannot fail for
 * memory). A loop is only ever posted to while its main task runs, so never
 * after its close. A thread that has not published yet when stop comes sees
 * the stop flag when it does and cancels its own main task before running
 * the function (which then sees -ECANCELED at every await point, as any
 * task cancelled before it starts does); one that has finished is simply
 * joined.
 *
 * The threads wait at a gate until every one of them has been created, so
 * that a failed start (no thread for some index) runs no main function at
 * all.
 */
#include "task.h"

#include <pthread.h>

typedef struct slot {
    struct cio_multi *m;
    unsigned index;
    bool created;       /* its thread exists and must be joined */
    pthread_t thread;
    cio_loop_t *loop;   /* published while the main function runs (under mu) */
    cio_task_t *task;   /* the main task then; read on its loop's thread only */
    cio__tsnode post;   /* stop's cancel request to the loop */
} slot;

struct cio_multi {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool open;          /* the gate: every thread has been created */
    bool aborted;       /* the start failed: the threads run nothing */
    bool stopping;      /* cio_multi_stop was called */
    int err;            /* the first error of a main task (not -ECANCELED) */
    cio_task_fn fn;
    void *arg;
    unsigned n;
    slot slots[];
};

#define MULTI_MAX 1024u

/* The thread's index in its multi (-1 outside), and that multi. */
static _Thread_local int multi_index = -1;
static _Thread_local cio_multi_t *multi_self;

int cio_multi_index(void)
{
    return multi_index;
}

/* ------------------------------------------------------------------------ */
/* A loop's thread                                                            */
/* ------------------------------------------------------------------------ */

/* Loop thread, posted by cio_multi_stop: cancels the main task if it still
 * runs (it clears s->task, on this thread, when it returns). */
static void multi_cancel(void *arg)
{
    slot *s = arg;
    if (s->task)
        cio_task_cancel(s->task);
}

/* The main task of each loop: publishes the loop, runs the function and
 * unpublishes the loop before the task ends (so stop never posts to a
 * loop that may be closing). */
static int multi_main(void *arg, void **result)
{
    slot *s = arg;
    cio_multi_t *m = s->m;
    s->task = cio_current_task();
    pthread_mutex_lock(&m->mu);
    s->loop = cio_get_running_loop();
    bool stop = m->stopping;
    pthread_mutex_unlock(&m->mu);
    if (stop)
        cio_task_cancel(s->task); /* stop came before the loop was published */
    int rc = m->fn(m->arg, result);
    pthread_mutex_lock(&m->mu);
    s->loop = NULL;
    pthread_mutex_unlock(&m->mu);
    s->task = NULL;
    return rc;
}

/* Records rc as the multi's error if it is the first one. */
static void multi_record(cio_multi_t *m, int rc)
{
    if (rc >= 0 || rc == -ECANCELED)
        return;
    pthread_mutex_lock(&m->mu);
    if (!m->err)
        m->err = rc;
    pthread_mutex_unlock(&m->mu);
}

/* A loop's thread: waits at the gate, then runs the main function as
 * cio_run does (a loop of its own, closed and freed at the end) and
 * records its error. */
static void *multi_thread(void *arg)
{
    slot *s = arg;
    cio_multi_t *m = s->m;
    pthread_mutex_lock(&m->mu);
    while (!m->open)
        pthread_cond_wait(&m->cv, &m->mu);
    bool aborted = m->aborted;
    pthread_mutex_unlock(&m->mu);
    if (aborted)
        return NULL;
    multi_index = (int)s->index;
    multi_self = m;
    multi_record(m, cio_run_ex(multi_main, s, NULL, NULL));
    multi_index = -1;
    multi_self = NULL;
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Starting and stopping                                                      */
/* ------------------------------------------------------------------------ */

/* Joins every thread of m, frees m and returns its first error. */
static int multi_join(cio_multi_t *m)
{
    for (unsigned i = 0; i < m->n; i++)
        if (m->slots[i].created)
            pthread_join(m->slots[i].thread, NULL);
    int err = m->err;
    /* A cio_multi_cancel from another thread may still be between its
     * posts (which let the loops end) and its unlock: taking the lock
     * waits for it to leave before the mutex and m go. */
    pthread_mutex_lock(&m->mu);
    pthread_mutex_unlock(&m->mu);
    pthread_mutex_destroy(&m->mu);
    pthread_cond_destroy(&m->cv);
    cio__free(m);
    return err;
}

/* Opens the gate; with aborted set, the threads end without running. */
static void multi_open(cio_multi_t *m, bool aborted)
{
    pthread_mutex_lock(&m->mu);
    m->open = true;
    m->aborted = aborted;
    pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->mu);
}

int cio_multi_start(cio_multi_t **out, unsigned n, cio_task_fn fn, void *arg)
{
    if (!out)
        return -EINVAL;
    *out = NULL;
    if (!n || n > MULTI_MAX || !fn)
        return -EINVAL;
    cio_multi_t *m = cio__calloc(1, sizeof(*m) + n * sizeof(slot));
    if (!m)
        return -ENOMEM;
    pthread_mutex_init(&m->mu, NULL);
    pthread_cond_init(&m->cv, NULL);
    m->fn = fn;
    m->arg = arg;
    m->n = n;
    bool failed = false;
    for (unsigned i = 0; i < n && !failed; i++) {
        slot *s = &m->slots[i];
        s->m = m;
        s->index = i;
        s->created = pthread_create(&s->thread, NULL, multi_thread, s) == 0;
        failed = !s->created;
    }
    multi_open(m, failed);
    if (failed) {
        multi_join(m);
        return -EAGAIN;
    }
    *out = m;
    return 0;
}

/* Posts the cancel of every published main task, once: a second request
 * must not post the slots' nodes again while they may still be queued. */
static void request_stop(cio_multi_t *m)
{
    pthread_mutex_lock(&m->mu);
    if (!m->stopping) {
        m->stopping = true;
        for (unsigned i = 0; i < m->n; i++) {
            slot *s = &m->slots[i];
            if (!s->loop)
                continue;
            s->post = (cio__tsnode){.cb = multi_cancel, .arg = s, .owned = 1};
            /* Cannot fail: a published loop is running its main task, so
             * it is not closed. */
            (void)cio__loop_post(s->loop, &s->post);
        }
    }
    pthread_mutex_unlock(&m->mu);
}

int cio_multi_cancel(cio_multi_t *m)
{
    if (!m)
        return -EINVAL;
    request_stop(m);
    return 0;
}

int cio_multi_stop(cio_multi_t *m)
{
    if (!m)
        return 0;
    if (multi_self == m)
        return -EDEADLK; /* one of m's own loops: it would join itself */
    request_stop(m);
    return multi_join(m);
}

int cio_multi_wait(cio_multi_t *m)
{
    if (!m)
        return 0;
    if (multi_self == m)
        return -EDEADLK;
    return multi_join(m);
}
