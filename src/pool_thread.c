/*
 * The thread pool executor (concurrent.futures.ThreadPoolExecutor,
 * loop.run_in_executor, asyncio.to_thread).
 *
 * Every unfinished job of an executor is on its list, under its mutex: the
 * running ones first, then the queued ones (FIFO) from `head` on. Worker
 * threads start on demand up to max_workers. A finished job leaves the list
 * and is handed back to its loop through a wake-up node embedded in the job
 * (cio__loop_post), both under the mutex, so the hand-off cannot fail for
 * memory and a job is always either on its executor's list or posted to its
 * loop. Its future is completed there: futures are only ever touched by
 * their loop's thread. A job's future can be cancelled only while the job
 * is queued; once a worker has taken it, it runs to the end.
 *
 * Lifetimes: a job holds a reference to its future, so the loop object is
 * not freed under it (cio_loop_free refuses). Closing the loop is another
 * matter: cio_loop_close refuses (the busy hook) while jobs of the loop are
 * queued or running on executors made with cio_executor_new, and the loop's
 * default executor is shut down, waited for, and its results delivered by
 * the close hook; results already posted are delivered by the close hook
 * too. So a job is never posted to a closed loop. The close hook waits for
 * the running jobs while it runs what other threads post (the loop does not
 * run then, see flush_until): a job that waits for something it submitted
 * to its own loop (cio_run_coroutine_threadsafe) gets its answer (refused)
 * instead of blocking the close forever. An executor's memory
 * lives until it is shut down, its threads have ended and every job of it
 * has been finished on its loop (`unfinished`): job_finish and the cancel
 * hook may always use j->ex.
 *
 * The default executor (loop->executor) is made on first use or handed
 * over with cio_loop_set_default_executor, and is the loop's: the close
 * hook (or cio_loop_shutdown) shuts it down and joins its threads.
 * Shutting it down without blocking the loop (cio_shutdown_default_executor,
 * and cio_loop_shutdown through cio__pool_drain_default) is asyncio's
 * executor.shutdown(wait=True): no more submissions, the queued jobs still
 * run, and the caller waits on a node (in its frame, on the executor's
 * `drain` list) that the last worker posts to the loop as it leaves, after
 * the results of the jobs it ran. After cio_shutdown_default_executor the
 * executor stays the loop's default, shut down, so later submissions get
 * -ESHUTDOWN, and the close joins the threads, which have ended. After
 * cio_loop_shutdown, or a shutdown with no pool made yet, loop->executor is
 * POOL_GONE, which refuses the same way and owns nothing.
 *
 * fork(): the child has none of the parent's threads. The pthread_atfork
 * handlers take every executor's mutex around the fork, so the child finds
 * each list whole; in the child, an executor notices the new fork
 * generation at its next use (submission, cancellation, shutdown, or
 * cio_loop_fork of any loop that used a pool), forgets the parent's threads
 * and finishes every job on its list with -ECANCELED: the queued ones and
 * those that were running in a parent thread (which completes normally in
 * the parent).
 */
#include "pool.h"

#include <poll.h>
#include <unistd.h>

enum { J_QUEUED, J_RUNNING, J_DONE };

typedef struct job {
    struct job *next, *prev; /* the executor's list (under ex->mu); then a jlist */
    cio_future_t *fut;  /* holds a reference while the job exists */
    cio_loop_t *loop;
    cio_executor_t *ex;
    cio_task_fn fn;
    void *arg;
    void *result;
    int status;
    uint8_t state;      /* J_*, under ex->mu */
    cio__tsnode post;   /* the hand-off to the loop */
} job;

/* A task in cio_shutdown_default_executor, waiting for the last worker to
 * leave; lives in that task's frame. */
typedef struct drain_wait {
    struct drain_wait *next; /* ex->drain (under ex->mu) */
    cio__tsnode node;        /* posted to `loop` by the last worker */
    cio_loop_t *loop;
    cio__waiter *w;          /* woken by the node (loop thread) */
    bool posted;             /* under ex->mu */
    bool ran;                /* the node has run (loop thread) */
} drain_wait;

struct cio_executor {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    job *first, *last;  /* unfinished jobs: running ones, then queued ones */
    job *head;          /* the first queued job, NULL when none is */
    size_t unfinished;  /* jobs not yet finished on their loop */
    unsigned max, nthreads, idle, alive;
    bool shutdown;      /* no more submissions */
    bool released;      /* the owner is done with it (cio_executor_shutdown) */
    drain_wait *drain;  /* tasks waiting for the last worker to leave */
    unsigned fork_gen;  /* the fork generation the threads belong to */
    pthread_t *threads;
    struct cio_executor *all_next, *all_prev; /* every executor, under all_mu */
};

/* A list of jobs that left their executor, linked through `next`. */
typedef struct jlist {
    job *head, *tail;
} jlist;

/* loop->executor once the default pool is shut down for good with nothing
 * left to join (cio_loop_shutdown, or a shutdown before any pool existed):
 * default-pool submissions get -ESHUTDOWN. Only compared, never used. */
static char pool_gone_mark;
#define POOL_GONE ((void *)&pool_gone_mark)

static atomic_uint fork_gen;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

/* Every executor of the process. Lock order: all_mu, then an executor's mu,
 * then a loop's post lock. */
static pthread_mutex_t all_mu = PTHREAD_MUTEX_INITIALIZER;
static cio_executor_t *all_head;

/* Around fork(): no executor's list is half changed in the child. */
static void before_fork(void)
{
    pthread_mutex_lock(&all_mu);
    for (cio_executor_t *ex = all_head; ex; ex = ex->all_next)
        pthread_mutex_lock(&ex->mu);
}

static void after_fork_parent(void)
{
    for (cio_executor_t *ex = all_head; ex; ex = ex->all_next)
        pthread_mutex_unlock(&ex->mu);
    pthread_mutex_unlock(&all_mu);
}

static void after_fork_child(void)
{
    atomic_fetch_add(&fork_gen, 1);
    after_fork_parent();
}

static void atfork_install(void)
{
    pthread_atfork(before_fork, after_fork_parent, after_fork_child);
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
    pthread_mutex_lock(&all_mu);
    ex->fork_gen = atomic_load(&fork_gen);
    ex->all_next = all_head;
    if (all_head)
        all_head->all_prev = ex;
    all_head = ex;
    pthread_mutex_unlock(&all_mu);
    *out = ex;
    return 0;
}

/* Under ex->mu: nothing needs ex any more. */
static bool ex_unused(const cio_executor_t *ex)
{
    return ex->released && !ex->alive && !ex->unfinished;
}

static void ex_free(cio_executor_t *ex)
{
    pthread_mutex_lock(&all_mu);
    if (ex->all_prev)
        ex->all_prev->all_next = ex->all_next;
    else
        all_head = ex->all_next;
    if (ex->all_next)
        ex->all_next->all_prev = ex->all_prev;
    pthread_mutex_unlock(&all_mu);
    pthread_mutex_destroy(&ex->mu);
    pthread_cond_destroy(&ex->cv);
    cio__free(ex->threads);
    cio__free(ex);
}

/* ------------------------------------------------------------------------ */
/* Handing jobs back                                                         */
/* ------------------------------------------------------------------------ */

static void jlist_add(jlist *l, job *j)
{
    j->next = NULL;
    if (l->tail)
        l->tail->next = j;
    else
        l->head = j;
    l->tail = j;
}

/* Under ex->mu: takes j off the executor's list. */
static void unlink_job(cio_executor_t *ex, job *j)
{
    if (ex->head == j)
        ex->head = j->next;
    if (j->prev)
        j->prev->next = j->next;
    else
        ex->first = j->next;
    if (j->next)
        j->next->prev = j->prev;
    else
        ex->last = j->prev;
    j->next = j->prev = NULL;
    j->state = J_DONE;
}

/* Loop thread: completes the job's future and frees the job. */
static void job_finish(void *arg)
{
    job *j = arg;
    cio_executor_t *ex = j->ex;
    cio_future_t *f = j->fut;
    f->owner = NULL;
    cio__future_complete(f, j->status, j->result,
                         j->status == -ECANCELED ? CIO__CANCELLED : CIO__DONE);
    cio_future_release(f);
    cio__free(j);
    pthread_mutex_lock(&ex->mu);
    bool done = --ex->unfinished == 0 && ex_unused(ex);
    pthread_mutex_unlock(&ex->mu);
    if (done)
        ex_free(ex);
}

static void finish_all(jlist *l)
{
    for (job *j = l->head, *next; j; j = next) {
        next = j->next;
        job_finish(j);
    }
}

/* Under ex->mu: posts j (off the list) to its loop, from any thread. */
static void send_locked(job *j)
{
    j->post = (cio__tsnode){.cb = job_finish, .arg = j, .owned = 1};
    /* Cannot fail: a loop does not close while jobs of it are on an
     * executor's list (the busy hook; the default executor is drained by
     * the close hook). Were it to, the job would be leaked rather than
     * freed under its future's owner pointer. */
    (void)cio__loop_post(j->loop, &j->post);
}

/* Under ex->mu: j, just taken off the list, ends cancelled. A job of a loop
 * this thread owns goes on *mine, to be finished once the mutex is released
 * (job_finish takes it); others are posted at once, so that a fork never
 * finds a job neither on a list nor posted. */
static void cancel_locked(job *j, jlist *mine)
{
    j->status = -ECANCELED;
    j->result = NULL;
    if (pthread_equal(j->loop->owner, pthread_self()) && !j->loop->closed)
        jlist_add(mine, j);
    else
        send_locked(j);
}

static void post_drained_locked(cio_executor_t *ex);

/*
 * Under ex->mu. In a child after fork, the parent's threads are not here:
 * their count is reset and the condition variable made anew (the mutex is
 * sane: the atfork handlers held it), and every job on the list ends
 * cancelled: the queued ones, and the running ones, whose threads exist
 * only in the parent (where they complete normally).
 */
static void refresh_locked(cio_executor_t *ex, jlist *mine)
{
    unsigned gen = atomic_load_explicit(&fork_gen, memory_order_relaxed);
    if (cio__likely(ex->fork_gen == gen))
        return;
    ex->fork_gen = gen;
    pthread_cond_init(&ex->cv, NULL);
    ex->nthreads = ex->idle = ex->alive = 0;
    while (ex->first) {
        job *j = ex->first;
        unlink_job(ex, j);
        cancel_locked(j, mine);
    }
    post_drained_locked(ex);
}

/* Under ex->mu, once no worker is left: wakes the tasks waiting in
 * cio_shutdown_default_executor. Their loops are open (the tasks are
 * unfinished), and the results of the jobs posted before reach them first. */
static void post_drained_locked(cio_executor_t *ex)
{
    for (drain_wait *d = ex->drain, *next; d; d = next) {
        next = d->next; /* d may be gone once its node is posted */
        d->posted = true;
        (void)cio__loop_post(d->loop, &d->node);
    }
    ex->drain = NULL;
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
        ex->head = j->next; /* j stays on the list, among the running */
        j->state = J_RUNNING;
        pthread_mutex_unlock(&ex->mu);
        j->result = NULL;
        j->status = j->fn(j->arg, &j->result);
        pthread_mutex_lock(&ex->mu);
        unlink_job(ex, j);
        send_locked(j);
    }
    if (!--ex->alive)
        post_drained_locked(ex);
    bool done = ex_unused(ex);
    pthread_mutex_unlock(&ex->mu);
    if (done)
        ex_free(ex);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Close and fork hooks                                                      */
/* ------------------------------------------------------------------------ */

/* Jobs of the loop on executors other than its default one keep it open:
 * their results could not be delivered after the close. */
static int pool_busy(cio_loop_t *loop)
{
    size_t n = 0;
    pthread_mutex_lock(&all_mu);
    for (cio_executor_t *ex = all_head; ex; ex = ex->all_next) {
        if (ex == loop->executor)
            continue; /* the close hook shuts it down and waits */
        pthread_mutex_lock(&ex->mu);
        for (job *j = ex->first; j; j = j->next)
            n += j->loop == loop;
        pthread_mutex_unlock(&ex->mu);
    }
    pthread_mutex_unlock(&all_mu);
    if (!n)
        return 0;
    if (loop->debug)
        fprintf(stderr,
                "cio: loop not closed: %zu job(s) of it still queued or running on "
                "executors (cio_executor_new)\n",
                n);
    return -EBUSY;
}

static bool drain_begin(cio_executor_t *ex, drain_wait *d, bool cancel_queued);
static void drained(void *arg);

/*
 * At close (the loop does not run, no task is left): runs what other
 * threads post until *done. Their jobs' results are delivered, and their
 * submissions (cio_run_coroutine_threadsafe) end at once, refused, since
 * the loop is not running: a job waiting for one returns instead of keeping
 * the close waiting forever. Blocks on the loop's wake-up eventfd, which a
 * post writes whenever it finds the queue drained (ts_pending clear), so no
 * post is missed between the check and the poll; the loop core reads the
 * same counter in its watcher, and nothing else does at close.
 */
static void flush_until(cio_loop_t *loop, const bool *done)
{
    while (!*done) {
        if (!atomic_load(&loop->ts_pending)) {
            struct pollfd p = {.fd = loop->wakefd, .events = POLLIN};
            if (poll(&p, 1, -1) > 0) {
                uint64_t n;
                ssize_t r = read(loop->wakefd, &n, sizeof n);
                (void)r; /* EAGAIN: another wake-up was already counted */
            }
        }
        cio__loop_run_posts(loop);
    }
}

/* At close: the default executor's queued jobs are cancelled, running ones
 * waited for while posts are delivered (flush_until), and every result
 * posted (by any executor) is delivered before the loop discards its
 * callbacks. */
static void pool_close(cio_loop_t *loop)
{
    cio_executor_t *ex = loop->executor;
    loop->executor = NULL;
    if (ex && ex != POOL_GONE) {
        drain_wait d = {.loop = loop};
        d.node = (cio__tsnode){.cb = drained, .arg = &d, .owned = CIO__TS_OWNED};
        if (drain_begin(ex, &d, true))
            flush_until(loop, &d.ran);
        cio_executor_shutdown(ex, true); /* its threads have ended */
    }
    cio__loop_run_posts(loop);
}

/* In a child after fork: every executor forgets the parent's threads and
 * cancels its jobs now (see refresh_locked), so that tasks waiting for
 * them carry on. */
static void pool_fork(cio_loop_t *loop)
{
    (void)loop;
    jlist mine = {0};
    pthread_mutex_lock(&all_mu);
    for (cio_executor_t *ex = all_head; ex; ex = ex->all_next) {
        pthread_mutex_lock(&ex->mu);
        refresh_locked(ex, &mine);
        pthread_mutex_unlock(&ex->mu);
    }
    pthread_mutex_unlock(&all_mu);
    finish_all(&mine);
}

static const cio__loop_hooks pool_hooks = {
    .layer = 10, .busy = pool_busy, .close = pool_close, .fork = pool_fork};

/* ------------------------------------------------------------------------ */
/* Submitting                                                                */
/* ------------------------------------------------------------------------ */

static int job_cancel_hook(cio_future_t *f);

static const cio__future_ops job_ops = {
    .cancel = job_cancel_hook, .free = cio__future_pool_free, .name = NULL, .what = "job"};

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
    jlist mine = {0};
    pthread_mutex_lock(&ex->mu);
    refresh_locked(ex, &mine);
    int rc = ex->shutdown ? -ESHUTDOWN : ensure_worker(ex);
    if (!rc) {
        j->state = J_QUEUED;
        j->next = NULL;
        j->prev = ex->last;
        if (ex->last)
            ex->last->next = j;
        else
            ex->first = j;
        ex->last = j;
        if (!ex->head)
            ex->head = j;
        ex->unfinished++;
        pthread_cond_signal(&ex->cv);
    }
    pthread_mutex_unlock(&ex->mu);
    finish_all(&mine);
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
    if (!rc)
        rc = cio__loop_hook(loop, &pool_hooks);
    if (!rc && !ex) {
        if (!loop->executor) {
            cio_executor_t *def;
            if (!(rc = cio_executor_new(&def, 0)))
                loop->executor = def;
        }
        ex = loop->executor;
        if (ex == POOL_GONE)
            rc = -ESHUTDOWN;
    }
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
    /* No worker can finish j before this: it is finished on this thread. */
    f->refs++; /* the job's reference */
    f->owner = j;
    *out = f;
    return 0;
}

static int job_cancel_hook(cio_future_t *f)
{
    job *j = f->owner;
    if (!j)
        return 0;
    cio_executor_t *ex = j->ex; /* lives until j is finished */
    jlist mine = {0};
    pthread_mutex_lock(&ex->mu);
    refresh_locked(ex, &mine); /* in a child after fork: j may end there */
    if (j->state == J_QUEUED) {
        unlink_job(ex, j);
        j->status = -ECANCELED;
        j->result = NULL;
        jlist_add(&mine, j); /* this is j's loop thread */
    }
    pthread_mutex_unlock(&ex->mu);
    finish_all(&mine);
    return cio_future_cancelled(f);
}

/* Under ex->mu: no more submissions; idle workers wake up to leave once
 * the queue is empty. With cancel_queued, jobs that never started finish
 * cancelled, on their loop's thread (those of this thread's loops go on
 * *mine); without, the workers still run them (executor.shutdown(wait=True)
 * of concurrent.futures). */
static void stop_locked(cio_executor_t *ex, jlist *mine, bool cancel_queued)
{
    /* In a child after fork, the parent's threads must not be waited for. */
    refresh_locked(ex, mine);
    ex->shutdown = true;
    while (cancel_queued && ex->head) {
        job *j = ex->head;
        unlink_job(ex, j);
        cancel_locked(j, mine);
    }
    pthread_cond_broadcast(&ex->cv);
}

void cio_executor_shutdown(cio_executor_t *ex, bool wait)
{
    if (!ex)
        return;
    jlist mine = {0};
    pthread_mutex_lock(&ex->mu);
    stop_locked(ex, &mine, true);
    unsigned nthreads = ex->nthreads;
    pthread_mutex_unlock(&ex->mu);
    finish_all(&mine); /* ex is not released yet: they cannot free it */
    if (wait)
        for (unsigned i = 0; i < nthreads; i++)
            pthread_join(ex->threads[i], NULL);
    pthread_mutex_lock(&ex->mu);
    if (!wait)
        for (unsigned i = 0; i < nthreads; i++)
            pthread_detach(ex->threads[i]);
    ex->released = true;
    bool done = ex_unused(ex);
    pthread_mutex_unlock(&ex->mu);
    if (done)
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

/* ------------------------------------------------------------------------ */
/* The default executor                                                      */
/* ------------------------------------------------------------------------ */

int cio_loop_set_default_executor(cio_loop_t *loop, cio_executor_t *ex)
{
    if (!loop || !ex || loop->executor == ex)
        return -EINVAL;
    if (loop->closed)
        return -ESHUTDOWN;
    cio_executor_t *old = loop->executor;
    if (old == POOL_GONE)
        return -ESHUTDOWN;
    int rc = 0;
    if (old) {
        jlist mine = {0};
        pthread_mutex_lock(&old->mu);
        refresh_locked(old, &mine);
        rc = old->shutdown ? -ESHUTDOWN : old->first ? -EBUSY : 0;
        pthread_mutex_unlock(&old->mu);
        finish_all(&mine);
    }
    if (!rc)
        rc = cio__loop_hook(loop, &pool_hooks);
    if (rc)
        return rc;
    loop->executor = ex;
    cio_executor_shutdown(old, true); /* idle threads only: they leave at once */
    return 0;
}

/* The loop thread: the last worker has left. d->w is NULL when no task
 * waits (cio_loop_shutdown and the close watch d->ran). */
static void drained(void *arg)
{
    drain_wait *d = arg;
    d->ran = true;
    if (d->w)
        cio__wake(d->w, 0);
}

/* Shuts ex down (see stop_locked) and, if a worker is still alive, puts d
 * on its drain list: true then (d's node will be posted), false when no
 * worker is left to wait for. */
static bool drain_begin(cio_executor_t *ex, drain_wait *d, bool cancel_queued)
{
    jlist mine = {0};
    pthread_mutex_lock(&ex->mu);
    stop_locked(ex, &mine, cancel_queued);
    bool alive = ex->alive != 0;
    if (alive) {
        d->next = ex->drain;
        ex->drain = d;
    }
    pthread_mutex_unlock(&ex->mu);
    finish_all(&mine); /* ex is not released: they cannot free it */
    return alive;
}

/* Under ex->mu: takes d off ex's list if it is still there. */
static void drain_unlink_locked(cio_executor_t *ex, drain_wait *d)
{
    for (drain_wait **p = &ex->drain; *p; p = &(*p)->next)
        if (*p == d) {
            *p = d->next;
            return;
        }
}

/* Parks the current task until the last worker of ex has left, or the
 * deadline or a cancellation: see cio_shutdown_default_executor. */
static int drain_wait_for(cio_executor_t *ex, cio__coro *c, int64_t deadline)
{
    cio__waiter w;
    cio__waiter_init(&w, c, "executor shutdown", ex, NULL);
    drain_wait d = {.loop = c->loop, .w = &w};
    d.node = (cio__tsnode){.cb = drained, .arg = &d, .owned = CIO__TS_OWNED};
    if (!drain_begin(ex, &d, false))
        return 0;
    int rc = cio__wait(&w, deadline);
    if (d.ran)
        return 0;
    /* Interrupted: leave the list, or wait for the node already posted
     * (it lives in this frame). */
    pthread_mutex_lock(&ex->mu);
    bool posted = d.posted;
    if (!posted)
        drain_unlink_locked(ex, &d);
    pthread_mutex_unlock(&ex->mu);
    if (posted && !d.ran) {
        cio__waiter w2;
        cio__waiter_init(&w2, c, "executor shutdown", ex, NULL);
        w2.nointr = 1;
        d.w = &w2;
        (void)cio__wait(&w2, CIO__NO_DEADLINE);
    }
    if (rc == CIO__OWN_DEADLINE)
        return posted ? 0 : -ETIMEDOUT;
    return rc;
}

int cio_shutdown_default_executor(double timeout)
{
    cio__coro *c = cio__current;
    if (!c)
        return -EPERM;
    int64_t deadline;
    if (cio__deadline_after(timeout, &deadline))
        return -EINVAL;
    int rc = cio__check_cancel(c);
    if (rc)
        return rc;
    cio_loop_t *loop = c->loop;
    if (!loop->executor)
        loop->executor = POOL_GONE; /* records the shutdown: nothing to wait for */
    if (loop->executor == POOL_GONE)
        return 0;
    return drain_wait_for(loop->executor, c, deadline);
}

/*
 * cio_loop_shutdown's part of this layer (runner.c, which declares it: the
 * layer has no internal header). On the loop's thread, the loop entered
 * and its tasks finished: shuts the default pool down as asyncio.run's
 * shutdown_default_executor does, while the loop runs (each iteration is
 * followed by each(loop), which cancels the tasks spawned meanwhile): no
 * more submissions, queued jobs still run, and a job that waits for this
 * loop gets its answer. Then joins the threads, which have ended. The
 * default pool stays shut down for good: loop->executor is POOL_GONE, so
 * tasks that still run (the shutdown's last iterations, or a later run of
 * the loop) get -ESHUTDOWN instead of a new pool that nobody would shut
 * down.
 */
void cio__pool_drain_default(cio_loop_t *loop, void (*each)(cio_loop_t *loop))
{
    cio_executor_t *ex = loop->executor;
    loop->executor = POOL_GONE;
    if (!ex || ex == POOL_GONE)
        return;
    drain_wait d = {.loop = loop};
    d.node = (cio__tsnode){.cb = drained, .arg = &d, .owned = CIO__TS_OWNED};
    /* The drain node wakes the iteration that waits for it. */
    if (drain_begin(ex, &d, false))
        while (!d.ran) {
            cio__loop_run_once(loop);
            each(loop);
        }
    cio_executor_shutdown(ex, true);
}
