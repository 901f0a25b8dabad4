/*
 * The event loop: one per thread, single-threaded, like asyncio's.
 *
 * One iteration (loop_run_once) has four phases:
 *   1. poll:     wait for I/O with a timeout derived from the ready list and
 *                the earliest timer, dispatching fd callbacks and waking
 *                tasks waiting on fds. The poll is skipped while callbacks
 *                are ready and no fd is watched (a syscall per iteration
 *                would dominate task switches).
 *   2. wake-ups: callbacks sent by other threads (call_soon_threadsafe).
 *   3. timers:   expired timers move to the end of the ready list in
 *                (deadline, sequence) order.
 *   4. ready:    the callbacks that were ready when this phase started run
 *                in FIFO order; what they schedule runs next iteration.
 * Resuming a task is just a ready callback (task.c).
 */
#include "internal.h"

#include <math.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

_Thread_local cio_loop_t *cio__running;

enum { H_POOLED = 1 };

#define POOL_CHUNK (256u * 1024u)

int64_t cio__clock_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int cio__deadline_after(cio_loop_t *loop, double delay, int64_t *out)
{
    (void)loop;
    if (isnan(delay))
        return -EINVAL;
    if (delay <= 0) {
        *out = cio__clock_ns();
        return 0;
    }
    if (isinf(delay) || delay > 9.0e9) { /* ~285 years: no deadline */
        *out = CIO__NO_DEADLINE;
        return 0;
    }
    *out = cio__clock_ns() + (int64_t)(delay * 1e9);
    return 0;
}

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

static int pool_refill(cio__freelist *fl)
{
    char *chunk = malloc(POOL_CHUNK);
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

void *cio__pool_alloc(cio__freelist *fl)
{
    if (!fl->head && pool_refill(fl))
        return NULL;
    void *p = fl->head;
    fl->head = *(void **)p;
    fl->live++;
    return p;
}

void cio__pool_free(cio__freelist *fl, void *p)
{
    *(void **)p = fl->head;
    fl->head = p;
    fl->live--;
}

void cio__pool_destroy(cio__freelist *fl)
{
    void *c = fl->chunks;
    while (c) {
        void *next = *(void **)c;
        free(c);
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
        h = cio__pool_alloc(&loop->handle_pool);
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
            cio__pool_free(&loop->handle_pool, h);
        return rc;
    }
    h->state_ = CIO__H_TIMER;
    return 0;
}

int cio_call_later(cio_loop_t *loop, cio_handle_t *h, double delay,
                   cio_callback_fn cb, void *arg)
{
    int64_t when;
    int rc = cio__deadline_after(loop, delay, &when);
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
        cio__pool_free(&loop->handle_pool, h);
    return 1;
}

bool cio_handle_active(const cio_handle_t *h)
{
    return h && h->state_ != CIO__H_IDLE;
}

/* ------------------------------------------------------------------------ */
/* Threadsafe wake-ups                                                       */
/* ------------------------------------------------------------------------ */

int cio_call_soon_threadsafe(cio_loop_t *loop, cio_callback_fn cb, void *arg)
{
    if (!loop || !cb)
        return -EINVAL;
    cio__tsnode *n = malloc(sizeof(*n));
    if (!n)
        return -ENOMEM;
    n->next = NULL;
    n->cb = cb;
    n->arg = arg;
    pthread_mutex_lock(&loop->ts_lock);
    if (atomic_load(&loop->ts_closed)) {
        pthread_mutex_unlock(&loop->ts_lock);
        free(n);
        return -ESHUTDOWN;
    }
    if (loop->ts_tail)
        loop->ts_tail->next = n;
    else
        loop->ts_head = n;
    loop->ts_tail = n;
    /* Write the eventfd only on the first wake-up since the loop drained:
     * later senders see ts_pending set and skip the syscall. */
    int wake = !atomic_exchange(&loop->ts_pending, 1);
    pthread_mutex_unlock(&loop->ts_lock);
    if (wake) {
        uint64_t one = 1;
        ssize_t r = write(loop->wakefd, &one, sizeof one);
        (void)r; /* EAGAIN means the counter is already non-zero */
    }
    return 0;
}

static void ts_drain(cio_loop_t *loop)
{
    pthread_mutex_lock(&loop->ts_lock);
    cio__tsnode *n = loop->ts_head;
    loop->ts_head = loop->ts_tail = NULL;
    atomic_store(&loop->ts_pending, 0);
    pthread_mutex_unlock(&loop->ts_lock);
    while (n) {
        cio__tsnode *next = n->next;
        n->cb(n->arg);
        free(n);
        n = next;
    }
}

/* ------------------------------------------------------------------------ */
/* fd watchers                                                               */
/* ------------------------------------------------------------------------ */

static int fd_slot(cio_loop_t *loop, int fd)
{
    if (fd < 0)
        return -EINVAL;
    if (fd < loop->nfds)
        return 0;
    int n = loop->nfds ? loop->nfds : 64;
    while (n <= fd)
        n *= 2;
    cio__fdw *v = realloc(loop->fds, sizeof(*v) * (size_t)n);
    if (!v)
        return -ENOMEM;
    memset(v + loop->nfds, 0, sizeof(*v) * (size_t)(n - loop->nfds));
    loop->fds = v;
    loop->nfds = n;
    return 0;
}

/* Brings fd's registration in line with its callbacks and waiters. */
static int fd_update(cio_loop_t *loop, int fd)
{
    cio__fdw *w = &loop->fds[fd];
    unsigned want = ((w->rcb || w->rwait) ? CIO_READABLE : 0) |
                    ((w->wcb || w->wwait) ? CIO_WRITABLE : 0);
    if (want == w->events)
        return 0;
    int rc = cio__poll_set(&loop->poller, fd, w->events, want);
    if (rc)
        return rc;
    loop->nwatch += (want != 0) - (w->events != 0);
    w->events = want;
    return 0;
}

static int watch(cio_loop_t *loop, int fd, int dir, cio_callback_fn cb, void *arg)
{
    if (!loop || !cb)
        return -EINVAL;
    if (loop->closed)
        return -ESHUTDOWN;
    int rc = fd_slot(loop, fd);
    if (rc)
        return rc;
    cio__fdw *w = &loop->fds[fd];
    if ((dir == CIO_READABLE ? w->rwait : w->wwait) != NULL)
        return -EBUSY; /* a task is waiting on this direction */
    cio_callback_fn old_cb = dir == CIO_READABLE ? w->rcb : w->wcb;
    void *old_arg = dir == CIO_READABLE ? w->rarg : w->warg;
    if (dir == CIO_READABLE) {
        w->rcb = cb;
        w->rarg = arg;
    } else {
        w->wcb = cb;
        w->warg = arg;
    }
    rc = fd_update(loop, fd);
    if (rc) {
        w = &loop->fds[fd];
        if (dir == CIO_READABLE) {
            w->rcb = old_cb;
            w->rarg = old_arg;
        } else {
            w->wcb = old_cb;
            w->warg = old_arg;
        }
    }
    return rc;
}

static int unwatch(cio_loop_t *loop, int fd, int dir)
{
    if (!loop || fd < 0 || fd >= loop->nfds)
        return 0;
    cio__fdw *w = &loop->fds[fd];
    cio_callback_fn *cb = dir == CIO_READABLE ? &w->rcb : &w->wcb;
    if (!*cb)
        return 0;
    *cb = NULL;
    fd_update(loop, fd);
    return 1;
}

int cio_add_reader(cio_loop_t *loop, int fd, cio_callback_fn cb, void *arg)
{
    return watch(loop, fd, CIO_READABLE, cb, arg);
}

int cio_add_writer(cio_loop_t *loop, int fd, cio_callback_fn cb, void *arg)
{
    return watch(loop, fd, CIO_WRITABLE, cb, arg);
}

int cio_remove_reader(cio_loop_t *loop, int fd)
{
    return unwatch(loop, fd, CIO_READABLE);
}

int cio_remove_writer(cio_loop_t *loop, int fd)
{
    return unwatch(loop, fd, CIO_WRITABLE);
}

void cio__fd_ready(cio_loop_t *loop, int fd, unsigned events)
{
    if (fd == loop->wakefd) {
        uint64_t v;
        ssize_t r = read(fd, &v, sizeof v);
        (void)r;
        return;
    }
    if (fd >= loop->nfds)
        return;
    /* Re-read the slot after each call: a callback may grow the table. */
    if (events & CIO_READABLE) {
        cio__fdw *w = &loop->fds[fd];
        if (w->rwait)
            cio__interrupt(w->rwait, (int)(events & (CIO_READABLE | CIO_WRITABLE)));
        else if (w->rcb)
            w->rcb(w->rarg);
    }
    if (events & CIO_WRITABLE) {
        cio__fdw *w = &loop->fds[fd];
        if (w->wwait)
            cio__interrupt(w->wwait, (int)(events & (CIO_READABLE | CIO_WRITABLE)));
        else if (w->wcb)
            w->wcb(w->warg);
    }
}

typedef struct fd_wait {
    cio__waiter w;
    cio_loop_t *loop;
    int fd;
} fd_wait;

static void fd_wait_unlink(cio__waiter *w)
{
    fd_wait *fw = (fd_wait *)w;
    cio__fdw *slot = &fw->loop->fds[fw->fd];
    if (slot->rwait == w)
        slot->rwait = NULL;
    if (slot->wwait == w)
        slot->wwait = NULL;
    fd_update(fw->loop, fw->fd);
}

int cio_wait_fd(int fd, int events)
{
    cio__task *t = cio__current;
    if (!t)
        return -EPERM;
    if (fd < 0 || !(events & (CIO_READABLE | CIO_WRITABLE)) ||
        (events & ~(CIO_READABLE | CIO_WRITABLE)))
        return -EINVAL;
    cio_loop_t *loop = t->fut.loop;
    int rc = cio__cancel_state(t, NULL);
    if (rc)
        return rc;
    if ((rc = fd_slot(loop, fd)))
        return rc;
    cio__fdw *slot = &loop->fds[fd];
    if (((events & CIO_READABLE) && (slot->rwait || slot->rcb)) ||
        ((events & CIO_WRITABLE) && (slot->wwait || slot->wcb)))
        return -EBUSY;
    fd_wait fw = {.loop = loop, .fd = fd};
    cio__waiter_init(&fw.w, t, "fd", (const void *)(intptr_t)fd, fd_wait_unlink);
    if (events & CIO_READABLE)
        slot->rwait = &fw.w;
    if (events & CIO_WRITABLE)
        slot->wwait = &fw.w;
    if ((rc = fd_update(loop, fd))) {
        slot = &loop->fds[fd];
        slot->rwait = slot->rwait == &fw.w ? NULL : slot->rwait;
        slot->wwait = slot->wwait == &fw.w ? NULL : slot->wwait;
        return rc;
    }
    rc = cio__wait(&fw.w, CIO__NO_DEADLINE);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Life cycle                                                                */
/* ------------------------------------------------------------------------ */

int cio_loop_new(cio_loop_t **out)
{
    if (!out)
        return -EINVAL;
    cio_loop_t *loop = calloc(1, sizeof(*loop));
    if (!loop)
        return -ENOMEM;
    loop->ready.next_ = loop->ready.prev_ = &loop->ready;
    loop->batch_end.loop_ = loop;
    loop->slow_ns = 100000000;
    loop->wakefd = -1;
    int rc = cio__poll_init(&loop->poller);
    if (rc) {
        free(loop);
        return rc;
    }
    loop->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (loop->wakefd < 0 ||
        (rc = cio__poll_set(&loop->poller, loop->wakefd, 0, CIO_READABLE))) {
        rc = loop->wakefd < 0 ? -errno : rc;
        if (loop->wakefd >= 0)
            close(loop->wakefd);
        cio__poll_close(&loop->poller);
        free(loop);
        return rc;
    }
    pthread_mutex_init(&loop->ts_lock, NULL);
    cio__pool_init(&loop->task_pool, sizeof(cio__task));
    cio__pool_init(&loop->future_pool, sizeof(struct cio_future));
    cio__pool_init(&loop->cb_pool, sizeof(cio__cbnode));
    cio__pool_init(&loop->handle_pool, sizeof(cio_handle_t));
    loop->now = cio__clock_ns();
    loop->owner = pthread_self();
    const char *dbg = getenv("CIO_DEBUG");
    loop->debug = dbg && *dbg && strcmp(dbg, "0") != 0;
    cio__stack_install_handler();
    *out = loop;
    return 0;
}

cio_loop_t *cio_get_running_loop(void)
{
    return cio__running;
}

static void run_handle(cio_loop_t *loop, cio_handle_t *h)
{
    cio__ready_unlink(loop, h);
    cio_callback_fn cb = h->cb_;
    void *arg = h->arg_;
    if (h->flags_ & H_POOLED)
        cio__pool_free(&loop->handle_pool, h);
    if (cio__unlikely(loop->debug)) {
        int64_t t0 = cio__clock_ns();
        cb(arg);
        int64_t dt = cio__clock_ns() - t0;
        /* Task steps report themselves with the task's name (task.c). */
        if (dt > loop->slow_ns && !loop->last_was_task)
            fprintf(stderr, "cio: callback %p held the loop for %.1f ms\n",
                    (void *)(uintptr_t)cb, (double)dt / 1e6);
        loop->last_was_task = 0;
        return;
    }
    cb(arg);
}

static void loop_run_once(cio_loop_t *loop)
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
     * watched; threadsafe wake-ups are seen through ts_pending anyway. */
    if (timeout != 0 || loop->nwatch)
        cio__poll_wait(loop, &loop->poller, timeout);
    if (atomic_load_explicit(&loop->ts_pending, memory_order_acquire))
        ts_drain(loop);
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

static int enter(cio_loop_t *loop)
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

static void leave(cio_loop_t *loop)
{
    loop->running = 0;
    loop->stopping = 0;
    cio__running = NULL;
}

int cio_loop_run_forever(cio_loop_t *loop)
{
    int rc = enter(loop);
    if (rc)
        return rc;
    while (!loop->stopping)
        loop_run_once(loop);
    leave(loop);
    return 0;
}

static void stop_cb(cio_future_t *f, void *arg)
{
    (void)f;
    cio_loop_stop(arg);
}

int cio_loop_run_until_complete(cio_loop_t *loop, cio_future_t *fut, void **result)
{
    if (!loop || !fut)
        return -EINVAL;
    if (fut->state == CIO__PENDING) {
        int rc = cio_future_add_done_callback(fut, stop_cb, loop);
        if (rc)
            return rc;
        rc = cio_loop_run_forever(loop);
        cio_future_remove_done_callback(fut, stop_cb, loop);
        if (rc)
            return rc;
        if (fut->state == CIO__PENDING)
            return -EINTR;
    }
    return cio_future_result(fut, result);
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
    if (loop && seconds >= 0 && !isnan(seconds))
        loop->slow_ns = (int64_t)(seconds * 1e9);
}

int cio_loop_shutdown(cio_loop_t *loop)
{
    int rc = enter(loop);
    if (rc)
        return rc;
    /* Cancel and run until every task has finished, as asyncio.run does. */
    for (cio__task *t = loop->all; t; t = t->all_next)
        cio_task_cancel(&t->fut);
    while (loop->ntasks) {
        loop_run_once(loop);
        /* Tasks spawned while shutting down are cancelled too. */
        for (cio__task *t = loop->all; t; t = t->all_next)
            if (!t->cancel_requested)
                cio_task_cancel(&t->fut);
    }
    leave(loop);
    cio__executor_shutdown_default(loop);
    /* Completions the pool posted back still have to run. */
    if (loop->nready || atomic_load(&loop->ts_pending)) {
        enter(loop);
        loop_run_once(loop);
        leave(loop);
    }
    return 0;
}

static void report_open(cio_loop_t *loop)
{
    FILE *e = stderr;
    cio__task_report_open(loop, e);
    if (loop->timers.n)
        fprintf(e, "cio: loop closed with %u timer(s) pending\n", loop->timers.n);
    if (loop->nready)
        fprintf(e, "cio: loop closed with %zu callback(s) pending\n", loop->nready);
    int fds = 0;
    for (int fd = 0; fd < loop->nfds; fd++)
        fds += loop->fds[fd].events != 0;
    if (fds)
        fprintf(e, "cio: loop closed with %d fd watcher(s) still registered\n", fds);
    if (loop->future_pool.live)
        fprintf(e, "cio: loop closed with %zu future(s) never released\n",
                loop->future_pool.live);
}

int cio_loop_close(cio_loop_t *loop)
{
    if (!loop || loop->closed)
        return 0;
    if (loop->running)
        return -EBUSY;
    if (loop->ntasks) {
        if (loop->debug)
            cio__task_report_open(loop, stderr);
        return -EBUSY;
    }
    if (loop->stacks.live) {
        /* Suspended generators still run on stacks of this loop's pool. */
        if (loop->debug)
            fprintf(stderr, "cio: loop not closed: %zu generator stack(s) still in use\n",
                    loop->stacks.live);
        return -EBUSY;
    }
    cio__executor_shutdown_default(loop);
    if (loop->debug)
        report_open(loop);
    pthread_mutex_lock(&loop->ts_lock);
    atomic_store(&loop->ts_closed, 1);
    cio__tsnode *n = loop->ts_head;
    loop->ts_head = loop->ts_tail = NULL;
    pthread_mutex_unlock(&loop->ts_lock);
    while (n) { /* discarded, as asyncio discards pending callbacks */
        cio__tsnode *next = n->next;
        free(n);
        n = next;
    }
    /* Pending callbacks and timers are discarded; caller-owned handles are
     * reset so that their storage can be reused or freed. */
    while (loop->ready.next_ != &loop->ready)
        cio_handle_cancel(loop->ready.next_);
    while (loop->timers.n)
        cio_handle_cancel(loop->timers.v[0].h);
    cio__timer_free(&loop->timers);
    loop->closed = 1;
    cio__poll_close(&loop->poller);
    close(loop->wakefd);
    loop->wakefd = -1;
    free(loop->fds);
    loop->fds = NULL;
    loop->nfds = 0;
    cio__stack_pool_close(&loop->stacks);
    cio__pool_destroy(&loop->task_pool);
    cio__pool_destroy(&loop->future_pool);
    cio__pool_destroy(&loop->cb_pool);
    cio__pool_destroy(&loop->handle_pool);
    return 0;
}

int cio_loop_free(cio_loop_t *loop)
{
    if (!loop)
        return 0;
    int rc = cio_loop_close(loop);
    if (rc)
        return rc;
    pthread_mutex_destroy(&loop->ts_lock);
    free(loop);
    return 0;
}
