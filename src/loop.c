/*
 * The event loop core: one per thread, single-threaded, like asyncio's.
 *
 * One iteration (cio__loop_run_once) has four phases:
 *   1. poll:     the backend waits for I/O with a timeout derived from the
 *                ready list and the earliest timer, submitting what the last
 *                iteration queued, and hands back readiness events (given to
 *                the fd watchers, fd.c) and operation completions (whose
 *                `complete` functions run). The poll is skipped while
 *                callbacks are ready and nothing is watched or in flight (a
 *                system call per iteration would dominate task switches).
 *   2. wake-ups: callbacks sent by other threads (call_soon_threadsafe).
 *   3. timers:   expired timers move to the end of the ready list in
 *                (deadline, sequence) order.
 *   4. ready:    the callbacks that were ready when this phase started run
 *                in FIFO order; what they schedule runs next iteration.
 * Resuming a coroutine is just a ready callback (wait.c).
 *
 * The loop calls nothing above its layer: what the task and thread pool
 * layers must do at close they register as hooks (cio__loop_hook).
 */
#include "loop.h"

#include <math.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <unistd.h>

_Thread_local cio_loop_t *cio__running CIO__TLS_IE;

enum { H_POOLED = 1 };

#define POOL_CHUNK (256u * 1024u)
#define MAX_EVENTS 256

/* ------------------------------------------------------------------------ */
/* Fixed-size object pools: no malloc per task, future or callback.          */
/* ------------------------------------------------------------------------ */

void cio__pool_init(cio__freelist *fl, size_t size)
{
    fl->head = NULL;
    fl->chunks = NULL;
    fl->live = 0;
    fl->size = (size + 15) & ~(size_t)15;
}

int cio__pool_refill(cio__freelist *fl)
{
    char *chunk = cio__malloc(POOL_CHUNK);
    if (!chunk)
        return -ENOMEM;
    *(void **)chunk = fl->chunks;
    fl->chunks = chunk;
    size_t n = (POOL_CHUNK - 16) / fl->size;
    for (size_t i = n; i-- > 0;) {
        void *obj = chunk + 16 + i * fl->size;
        *(void **)obj = fl->head;
        fl->head = obj;
    }
    return 0;
}

void cio__pool_destroy(cio__freelist *fl)
{
    void *c = fl->chunks;
    while (c) {
        void *next = *(void **)c;
        cio__free(c);
        c = next;
    }
    fl->chunks = fl->head = NULL;
    fl->live = 0;
}

/* ------------------------------------------------------------------------ */
/* Ready list and handles                                                    */
/* ------------------------------------------------------------------------ */

static int handle_prepare(cio_loop_t *loop, cio_handle_t **hp, cio_callback_fn cb, void *arg)
{
    if (!loop || !cb)
        return -EINVAL;
    if (loop->closed)
        return -ESHUTDOWN;
    cio_handle_t *h = *hp;
    if (!h) {
        h = cio__pool_alloc(&loop->pools[CIO__POOL_HANDLE]);
        if (!h)
            return -ENOMEM;
        memset(h, 0, sizeof(*h));
        h->flags_ = H_POOLED;
        *hp = h;
    } else if (h->state_ != CIO__H_IDLE) {
        return -EBUSY;
    } else {
        h->flags_ = 0;
    }
    h->cb_ = cb;
    h->arg_ = arg;
    h->loop_ = loop;
    return 0;
}

int cio_call_soon(cio_loop_t *loop, cio_handle_t *h, cio_callback_fn cb, void *arg)
{
    int rc = handle_prepare(loop, &h, cb, arg);
    if (rc)
        return rc;
    cio__ready_push(loop, h);
    return 0;
}

int cio_call_at_ns(cio_loop_t *loop, cio_handle_t *h, int64_t when_ns,
                   cio_callback_fn cb, void *arg)
{
    int rc = handle_prepare(loop, &h, cb, arg);
    if (rc)
        return rc;
    h->when_ = when_ns;
    h->seq_ = loop->seq++;
    rc = cio__timer_insert(&loop->timers, h);
    if (rc) {
        if (h->flags_ & H_POOLED)
            cio__pool_free(&loop->pools[CIO__POOL_HANDLE], h);
        return rc;
    }
    h->state_ = CIO__H_TIMER;
    return 0;
}

int cio_call_later(cio_loop_t *loop, cio_handle_t *h, double delay,
                   cio_callback_fn cb, void *arg)
{
    int64_t when;
    int rc = cio__deadline_after(delay, &when);
    return rc ? rc : cio_call_at_ns(loop, h, when, cb, arg);
}

int cio_call_at(cio_loop_t *loop, cio_handle_t *h, double when,
                cio_callback_fn cb, void *arg)
{
    if (isnan(when))
        return -EINVAL;
    int64_t ns = when > 9.0e9 ? CIO__NO_DEADLINE /* includes +INFINITY */
                 : when < 0                  ? 0
                                             : (int64_t)(when * 1e9);
    return cio_call_at_ns(loop, h, ns, cb, arg);
}

int cio_handle_cancel(cio_handle_t *h)
{
    if (!h || h->state_ == CIO__H_IDLE)
        return 0;
    cio_loop_t *loop = h->loop_;
    if (h->state_ == CIO__H_READY)
        cio__ready_unlink(loop, h);
    else
        cio__timer_remove(&loop->timers, h);
    h->state_ = CIO__H_IDLE;
    if (h->flags_ & H_POOLED)
        cio__pool_free(&loop->pools[CIO__POOL_HANDLE], h);
    return 1;
}

bool cio_handle_active(const cio_handle_t *h)
{
    return h && h->state_ != CIO__H_IDLE;
}

/* ------------------------------------------------------------------------ */
/* Threadsafe wake-ups                                                       */
/* ------------------------------------------------------------------------ */

int cio__loop_post(cio_loop_t *loop, cio__tsnode *n)
{
    n->next = NULL;
    pthread_mutex_lock(&loop->ts_lock);
    if (atomic_load(&loop->ts_closed)) {
        pthread_mutex_unlock(&loop->ts_lock);
        return -ESHUTDOWN;
    }
    if (loop->ts_tail)
        loop->ts_tail->next = n;
    else
        loop->ts_head = n;
    loop->ts_tail = n;
    /* Write the eventfd only on the first wake-up since the loop drained:
     * later senders see ts_pending set and skip the syscall. The write is
     * made under the lock, because cio_loop_close closes the eventfd after
     * taking it: a sender never writes into a closed (or reused) fd. */
    if (!atomic_exchange(&loop->ts_pending, 1)) {
        uint64_t one = 1;
        ssize_t r = write(loop->wakefd, &one, sizeof one);
        (void)r; /* EAGAIN means the counter is already non-zero */
    }
    pthread_mutex_unlock(&loop->ts_lock);
    return 0;
}

int cio_call_soon_threadsafe(cio_loop_t *loop, cio_callback_fn cb, void *arg)
{
    if (!loop || !cb)
        return -EINVAL;
    cio__tsnode *n = cio__malloc(sizeof(*n));
    if (!n)
        return -ENOMEM;
    *n = (cio__tsnode){.next = NULL, .cb = cb, .arg = arg, .owned = 0};
    int rc = cio__loop_post(loop, n);
    if (rc)
        cio__free(n);
    return rc;
}

void cio__loop_run_posts(cio_loop_t *loop)
{
    pthread_mutex_lock(&loop->ts_lock);
    cio__tsnode *n = loop->ts_head;
    loop->ts_head = loop->ts_tail = NULL;
    atomic_store(&loop->ts_pending, 0);
    pthread_mutex_unlock(&loop->ts_lock);
    while (n) {
        cio__tsnode *next = n->next;
        bool owned = n->owned;
        cio_callback_fn cb = n->cb;
        void *arg = n->arg;
        if (!owned)
            cio__free(n);
        cb(arg); /* may free an owned node */
        n = next;
    }
}

/* The eventfd's watcher: empties the counter (the queue is drained, and
 * the signals caught are taken, in phase 2 whatever woke the poll). */
static void wake_ready(void *arg, int fd, unsigned events)
{
    (void)arg;
    (void)events;
    uint64_t v;
    ssize_t r = read(fd, &v, sizeof v);
    (void)r;
}

static int wake_start(cio_loop_t *loop);

/* ------------------------------------------------------------------------ */
/* Close hooks                                                               */
/* ------------------------------------------------------------------------ */

int cio__loop_hook(cio_loop_t *loop, const cio__loop_hooks *h)
{
    for (int i = 0; i < CIO__LOOP_HOOKS; i++) {
        if (loop->hooks[i] == h)
            return 0;
        if (!loop->hooks[i]) {
            loop->hooks[i] = h;
            return 0;
        }
    }
    return -ENOSPC;
}

/* ------------------------------------------------------------------------ */
/* Backend selection and the poll phase                                      */
/* ------------------------------------------------------------------------ */

static const cio__backend *backend_for(cio_backend_t which)
{
    if (which == CIO_BACKEND_DEFAULT) {
        const char *env = getenv("CIO_BACKEND");
        which = env && (!strcmp(env, "uring") || !strcmp(env, "io_uring")) ? CIO_BACKEND_URING
                                                                           : CIO_BACKEND_EPOLL;
    }
    return which == CIO_BACKEND_URING ? &cio__backend_uring : &cio__backend_epoll;
}

/*
 * Creates the state of backend be in *state, falling back to epoll when the
 * kernel refuses be (old kernel, seccomp, sysctl, locked-memory limits), and
 * stores the backend used in *used. Returns 0 or a negative errno (nothing
 * stored then).
 */
static int backend_init(cio_loop_t *loop, const cio__backend *be, const cio__backend **used,
                        void **state)
{
    int rc = be->init(state);
    if (rc > 0 && be != &cio__backend_epoll) {
        if (loop->debug)
            fprintf(stderr, "cio: %s unavailable (%s), using epoll\n", be->name,
                    cio_strerror(-rc));
        be = &cio__backend_epoll;
        rc = be->init(state);
    }
    if (rc > 0)
        rc = -rc;
    if (!rc)
        *used = be;
    return rc;
}

int cio__loop_submit(cio_loop_t *loop, cio__op *op)
{
    if (!loop->be->submit)
        return -ENOTSUP;
    op->done = 0;
    int rc = cio__fd_track(loop, op);
    if (rc)
        return rc;
    rc = loop->be->submit(loop->be_state, op);
    if (rc)
        cio__fd_untrack(loop, op);
    else
        loop->inflight++;
    return rc;
}

int cio__loop_cancel(cio_loop_t *loop, cio__op *op)
{
    if (op->done || !loop->be->cancel)
        return 0;
    return loop->be->cancel(loop->be_state, op);
}

void cio__loop_flush(cio_loop_t *loop)
{
    if (loop->be->flush && !loop->closed)
        loop->be->flush(loop->be_state);
}

void cio__loop_cancel_fd(cio_loop_t *loop, int fd)
{
    if (!loop->inflight || fd < 0 || fd >= loop->nfds)
        return;
    /* By address, not IORING_ASYNC_CANCEL_FD: that would also cancel what
     * runs on other descriptors of the same file (a dup, stdin and stdout
     * of one socket). The kernel finds them without the fd, so the cancels
     * may go with the next poll, after the fd is closed. */
    for (cio__op *op = loop->fds[fd].ops; op; op = op->fd_next)
        cio__loop_cancel(loop, op);
}

static void dispatch(cio_loop_t *loop, const cio__event *ev)
{
    if (ev->kind == CIO__EV_READY) {
        cio__fd_ready(loop, ev->fd, ev->gen, (unsigned)ev->res);
        return;
    }
    cio__op *op = ev->op;
    loop->inflight--;
    cio__fd_untrack(loop, op);
    op->res = ev->res;
    op->done = 1;
    op->complete(op);
}

static void poll_phase(cio_loop_t *loop, int64_t timeout)
{
    int n = loop->be->poll(loop->be_state, timeout, loop->events, loop->nevents);
    for (int i = 0; i < n; i++)
        dispatch(loop, &loop->events[i]);
}

void cio__loop_drain(cio_loop_t *loop)
{
    /* Bounded: a kernel that never completes a cancelled operation must
     * not hang the close (ten seconds is far beyond any cancel seen). */
    int64_t end = cio__clock_ns() + 10 * 1000000000LL;
    while (loop->inflight && cio__clock_ns() < end) {
        int n = loop->be->poll(loop->be_state, 10 * 1000000, loop->events, loop->nevents);
        for (int i = 0; i < n; i++)
            if (loop->events[i].kind == CIO__EV_DONE)
                dispatch(loop, &loop->events[i]);
    }
}

/* True when this iteration must ask the backend even with callbacks ready.
 * The wake-up eventfd is always watched (so nwatch >= 1) but needs no poll:
 * threadsafe wake-ups are seen through ts_pending. Counting it made every
 * yield pay an epoll_wait (28 -> 98 ns per yield, measured). */
static bool must_poll(cio_loop_t *loop)
{
    return loop->nwatch > 1 || loop->inflight ||
           (loop->be->pending && loop->be->pending(loop->be_state));
}

static void run_handle(cio_loop_t *loop, cio_handle_t *h)
{
    cio__ready_unlink(loop, h);
    cio_callback_fn cb = h->cb_;
    void *arg = h->arg_;
    if (h->flags_ & H_POOLED)
        cio__pool_free(&loop->pools[CIO__POOL_HANDLE], h);
    if (cio__unlikely(loop->debug)) {
        int64_t t0 = cio__clock_ns();
        cb(arg);
        int64_t dt = cio__clock_ns() - t0;
        /* Coroutine steps report themselves with their name (wait.c). */
        if (dt > loop->slow_ns && !loop->last_was_task)
            fprintf(stderr, "cio: callback %p held the loop for %.1f ms\n",
                    (void *)(uintptr_t)cb, (double)dt / 1e6);
        loop->last_was_task = 0;
        return;
    }
    cb(arg);
}

void cio__loop_run_once(cio_loop_t *loop)
{
    int64_t timeout = -1;
    if (loop->nready || loop->stopping) {
        timeout = 0;
    } else if (loop->timers.n) {
        int64_t now = cio__clock_ns();
        int64_t next = cio__timer_next(&loop->timers);
        timeout = next > now ? next - now : 0;
    }
    /* With callbacks ready, polling is only worth a syscall when fds are
     * watched or operations are in flight; threadsafe wake-ups are seen
     * through ts_pending anyway. */
    if (timeout != 0 || must_poll(loop))
        poll_phase(loop, timeout);
    if (atomic_load_explicit(&loop->ts_pending, memory_order_acquire))
        cio__loop_run_posts(loop);
    /* Signals caught for this loop (signal.c's handlers set the flag and
     * wake the eventfd): like ts_pending, no watcher and no poll. */
    if (cio__unlikely(atomic_load_explicit(&loop->sig_pending, memory_order_acquire)))
        loop->sig_run(loop);
    loop->now_valid = 0;
    if (loop->timers.n) {
        loop->now = cio__clock_ns();
        loop->now_valid = 1;
        cio_handle_t *h;
        while ((h = cio__timer_pop_expired(&loop->timers, loop->now)))
            cio__ready_push(loop, h);
    }
    /* A marker closes this iteration's batch: callbacks may cancel other
     * ready handles, so a count taken up front could run past the batch. */
    if (loop->nready) {
        cio__ready_push(loop, &loop->batch_end);
        cio_handle_t *h;
        while ((h = loop->ready.next_) != &loop->batch_end)
            run_handle(loop, h);
        cio__ready_unlink(loop, &loop->batch_end);
    }
}

/* ------------------------------------------------------------------------ */
/* Life cycle                                                                */
/* ------------------------------------------------------------------------ */

/* SIGPIPE is ignored once per process if nobody chose a disposition, so a
 * write to a pipe whose reader is gone returns -EPIPE (see cio.h). */
static void ignore_sigpipe(void)
{
    struct sigaction cur;
    if (sigaction(SIGPIPE, NULL, &cur) == 0 && !(cur.sa_flags & SA_SIGINFO) &&
        cur.sa_handler == SIG_DFL)
        signal(SIGPIPE, SIG_IGN);
}

static int wake_start(cio_loop_t *loop)
{
    loop->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (loop->wakefd < 0)
        return -errno;
    return cio__fd_set(loop, loop->wakefd, CIO_READABLE, wake_ready, NULL);
}

/* Undoes a partly made loop (cio_loop_new's failure path). */
static void loop_unmake(cio_loop_t *loop)
{
    cio__fd_close(loop);
    if (loop->wakefd >= 0)
        close(loop->wakefd);
    if (loop->be)
        loop->be->close(loop->be_state);
    cio__free(loop->events);
    pthread_mutex_destroy(&loop->ts_lock);
    cio__free(loop);
}

int cio_loop_new_ex(cio_loop_t **out, const cio_loop_opts_t *opts)
{
    if (!out)
        return -EINVAL;
    *out = NULL;
    if (opts && (opts->backend > CIO_BACKEND_URING || opts->reserved_[0] ||
                 opts->reserved_[1] || opts->reserved_[2] || opts->reserved_[3]))
        return -EINVAL;
    static pthread_once_t sigpipe_once = PTHREAD_ONCE_INIT;
    pthread_once(&sigpipe_once, ignore_sigpipe);
    cio_loop_t *loop = cio__calloc(1, sizeof(*loop));
    if (!loop)
        return -ENOMEM;
    loop->ready.next_ = loop->ready.prev_ = &loop->ready;
    loop->batch_end.loop_ = loop;
    loop->slow_ns = 100000000;
    loop->wakefd = -1;
    pthread_mutex_init(&loop->ts_lock, NULL);
    cio__pool_init(&loop->pools[CIO__POOL_HANDLE], sizeof(cio_handle_t));
    const char *dbg = getenv("CIO_DEBUG");
    loop->debug = dbg && *dbg && strcmp(dbg, "0") != 0;
    loop->nevents = MAX_EVENTS;
    loop->events = cio__malloc(sizeof(cio__event) * MAX_EVENTS);
    int rc = loop->events ? backend_init(loop, backend_for(opts ? opts->backend : 0), &loop->be,
                                         &loop->be_state)
                          : -ENOMEM;
    if (!rc)
        rc = wake_start(loop);
    if (rc) {
        loop_unmake(loop);
        return rc;
    }
    loop->now = cio__clock_ns();
    loop->owner = pthread_self();
    cio__stack_install_handler();
    *out = loop;
    return 0;
}

int cio_loop_new(cio_loop_t **out)
{
    return cio_loop_new_ex(out, NULL);
}

const char *cio_loop_backend(const cio_loop_t *loop)
{
    return loop && loop->be ? loop->be->name : NULL;
}

/* A new backend state for the child: the same kind, or epoll if the kernel
 * now refuses it. Returns 0 or a negative errno (the old state is kept). */
static int backend_renew(cio_loop_t *loop)
{
    const cio__backend *be;
    void *state;
    int rc = backend_init(loop, loop->be, &be, &state);
    if (rc)
        return rc;
    /* The old state's fds are this process's copies of the parent's: close
     * them (the parent keeps its own). */
    loop->be->close(loop->be_state);
    loop->be = be;
    loop->be_state = state;
    return 0;
}

int cio__loop_fork(cio_loop_t *loop)
{
    if (loop->inflight)
        return -EBUSY;
    /* A thread of the parent (a pool worker posting a result) may have held
     * the lock at the fork; the child's copy would stay locked forever. */
    pthread_mutex_init(&loop->ts_lock, NULL);
    int rc = backend_renew(loop);
    if (rc)
        return rc;
    /* The wake-up eventfd first, so threadsafe calls work whatever else
     * fails below. */
    memset(&loop->fds[loop->wakefd], 0, sizeof(loop->fds[0]));
    loop->nwatch--;
    close(loop->wakefd);
    loop->wakefd = -1;
    if ((rc = wake_start(loop)))
        return rc;
    /* Every watcher again. An fd that cannot be registered (the child
     * closed it) is forgotten: its waiters wake with -EBADF rather than
     * wait on an fd the new backend never reports. */
    for (int fd = 0; fd < loop->nfds; fd++) {
        unsigned ev = loop->fds[fd].events;
        if (ev && fd != loop->wakefd &&
            loop->be->watch(loop->be_state, fd, loop->fds[fd].gen, 0, ev))
            cio__fd_forget(loop, fd);
    }
    return 0;
}

int cio_loop_fork(cio_loop_t *loop)
{
    if (!loop)
        return -EINVAL;
    if (loop->closed)
        return -ESHUTDOWN;
    if (loop->running)
        return -EBUSY;
    int rc = cio__loop_fork(loop);
    for (int i = 0; !rc && i < CIO__LOOP_HOOKS && loop->hooks[i]; i++)
        if (loop->hooks[i]->fork)
            loop->hooks[i]->fork(loop);
    return rc;
}

cio_loop_t *cio_get_running_loop(void)
{
    return cio__running;
}

int cio__loop_enter(cio_loop_t *loop)
{
    if (!loop)
        return -EINVAL;
    if (loop->closed)
        return -ESHUTDOWN;
    if (loop->running || cio__running)
        return -EBUSY;
    loop->running = 1;
    loop->stopping = 0;
    cio__running = loop;
#ifdef CIO__TSAN
    loop->tsan_main = __tsan_get_current_fiber();
#endif
    return 0;
}

void cio__loop_leave(cio_loop_t *loop)
{
    loop->running = 0;
    loop->stopping = 0;
    cio__running = NULL;
}

int cio_loop_run_forever(cio_loop_t *loop)
{
    int rc = cio__loop_enter(loop);
    if (rc)
        return rc;
    while (!loop->stopping)
        cio__loop_run_once(loop);
    cio__loop_leave(loop);
    return 0;
}

void cio_loop_stop(cio_loop_t *loop)
{
    if (loop)
        loop->stopping = 1;
}

bool cio_loop_is_running(const cio_loop_t *loop)
{
    return loop && loop->running;
}

bool cio_loop_is_closed(const cio_loop_t *loop)
{
    return loop && loop->closed;
}

int64_t cio_loop_time_ns(const cio_loop_t *loop)
{
    /* While the loop runs, the clock is read at most once per iteration
     * (lazily: iterations that never ask pay nothing), so every callback of
     * one iteration sees the same "now". Outside a run it is read fresh. */
    cio_loop_t *l = (cio_loop_t *)loop;
    if (!l || !l->running)
        return cio__clock_ns();
    if (!l->now_valid) {
        l->now = cio__clock_ns();
        l->now_valid = 1;
    }
    return l->now;
}

double cio_loop_time(const cio_loop_t *loop)
{
    return (double)cio_loop_time_ns(loop) / 1e9;
}

void cio_loop_set_debug(cio_loop_t *loop, bool enabled)
{
    if (loop)
        loop->debug = enabled;
}

bool cio_loop_get_debug(const cio_loop_t *loop)
{
    return loop && loop->debug;
}

void cio_loop_set_slow_callback_duration(cio_loop_t *loop, double seconds)
{
    if (!loop || !(seconds >= 0)) /* NaN and negative values change nothing */
        return;
    /* INFINITY (never report) must not reach the conversion: out of range
     * for int64_t, it would be undefined. */
    loop->slow_ns = seconds < 9e9 ? (int64_t)(seconds * 1e9) : INT64_MAX;
}

static void report_open(cio_loop_t *loop)
{
    FILE *e = stderr;
    for (int i = 0; i < CIO__LOOP_HOOKS && loop->hooks[i]; i++)
        if (loop->hooks[i]->report)
            loop->hooks[i]->report(loop, e);
    if (loop->timers.n)
        fprintf(e, "cio: loop closed with %u timer(s) pending\n", loop->timers.n);
    if (loop->nready)
        fprintf(e, "cio: loop closed with %zu callback(s) pending\n", loop->nready);
    int fds = 0;
    for (int fd = 0; fd < loop->nfds; fd++)
        fds += loop->fds[fd].events != 0 && fd != loop->wakefd;
    if (fds)
        fprintf(e, "cio: loop closed with %d fd watcher(s) still registered\n", fds);
}

/* -EBUSY while a layer above or a live stack (a suspended generator) still
 * needs the loop. */
static int close_refused(cio_loop_t *loop)
{
    for (int i = 0; i < CIO__LOOP_HOOKS && loop->hooks[i]; i++)
        if (loop->hooks[i]->busy && loop->hooks[i]->busy(loop))
            return -EBUSY;
    if (loop->stacks.live) {
        if (loop->debug)
            fprintf(stderr, "cio: loop not closed: %zu stack(s) still in use (generators)\n",
                    loop->stacks.live);
        return -EBUSY;
    }
    return 0;
}

/* Marks the loop closed for other threads and discards their callbacks. */
static void ts_close(cio_loop_t *loop)
{
    pthread_mutex_lock(&loop->ts_lock);
    atomic_store(&loop->ts_closed, 1);
    cio__tsnode *n = loop->ts_head;
    loop->ts_head = loop->ts_tail = NULL;
    close(loop->wakefd); /* under the lock: see cio_call_soon_threadsafe */
    loop->wakefd = -1;
    pthread_mutex_unlock(&loop->ts_lock);
    while (n) { /* discarded, as asyncio discards pending callbacks */
        cio__tsnode *next = n->next;
        if (n->owned == CIO__TS_NOTIFY)
            n->cb(n->arg); /* the poster learns that it was not run */
        else if (!n->owned)
            cio__free(n);
        n = next;
    }
}

/* Runs the close hooks of the layers above, from the highest layer down:
 * the thread pool delivers its last results before the futures layer drops
 * the done callbacks they scheduled. */
static void run_close_hooks(cio_loop_t *loop)
{
    for (int layer = 16; layer >= 0; layer--)
        for (int i = 0; i < CIO__LOOP_HOOKS && loop->hooks[i]; i++)
            if (loop->hooks[i]->layer == layer && loop->hooks[i]->close)
                loop->hooks[i]->close(loop);
}

int cio_loop_close(cio_loop_t *loop)
{
    if (!loop || loop->closed)
        return 0;
    if (loop->running)
        return -EBUSY;
    int rc = close_refused(loop);
    if (rc)
        return rc;
    if (loop->debug)
        report_open(loop);
    run_close_hooks(loop);
    ts_close(loop);
    /* Pending callbacks and timers are discarded; caller-owned handles are
     * reset so that their storage can be reused or freed. */
    while (loop->ready.next_ != &loop->ready)
        cio_handle_cancel(loop->ready.next_);
    while (loop->timers.n)
        cio_handle_cancel(loop->timers.v[0].h);
    cio__timer_free(&loop->timers);
    loop->closed = 1;
    cio__fd_close(loop);
    loop->be->close(loop->be_state);
    loop->be_state = NULL;
    cio__free(loop->events);
    loop->events = NULL;
    cio__stack_pool_close(&loop->stacks);
    return 0;
}

/* Objects of the layers above that still point at the loop (referenced
 * futures and tasks live in its pools) keep the loop object alive. */
static int free_refused(cio_loop_t *loop)
{
    for (int i = 0; i < CIO__LOOP_HOOKS && loop->hooks[i]; i++)
        if (loop->hooks[i]->busy_free && loop->hooks[i]->busy_free(loop))
            return -EBUSY;
    return 0;
}

int cio_loop_free(cio_loop_t *loop)
{
    if (!loop)
        return 0;
    int rc = cio_loop_close(loop);
    if (rc || (rc = free_refused(loop)))
        return rc;
    for (int i = 0; i < CIO__POOLS; i++)
        cio__pool_destroy(&loop->pools[i]);
    pthread_mutex_destroy(&loop->ts_lock);
    cio__free(loop);
    return 0;
}
