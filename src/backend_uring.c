/*
 * The io_uring backend (through Debian's liburing). Two things in one ring:
 *
 *  - Completion operations: cio__loop_submit turns a cio__op into a
 *    submission queue entry whose user_data is the op's address; nothing is
 *    sent until the next poll, so everything one loop iteration queues goes
 *    to the kernel in one io_uring_enter. The completion carries the result.
 *  - Readiness, for cio_wait_fd and add_reader/add_writer: one-shot
 *    POLL_ADD per watched fd, re-armed after each event while the interest
 *    lasts. A re-armed poll on an fd that is still ready completes at once,
 *    so the interest is level-triggered, as with epoll. Each fd's poll
 *    carries a generation number in its user_data; changing or dropping the
 *    interest removes the armed poll and bumps the generation, so a late
 *    completion of an old poll is recognised and ignored.
 *
 * user_data encoding: 0 for entries whose completion is ignored (removes,
 * cancels); odd values for polls ((gen << 32) | (fd << 1) | 1); anything
 * else is the address of a cio__op (at least 8-byte aligned).
 */
#include "loop.h"

#ifdef CIO_HAVE_URING

#include <fcntl.h>
#include <liburing.h>
#include <poll.h>

#define RING_ENTRIES 256
/* read(2) transfers at most this much at once; larger lengths are clamped
 * (a short count, as read/write may return). */
#define MAX_IO 0x7ffff000u

typedef struct pollrec {
    unsigned want;   /* the loop's interest */
    unsigned armed;  /* the mask of the poll in the kernel, 0 for none */
    uint32_t gen;
    uint32_t tag;    /* the fd table's generation, echoed in events */
    uint8_t dirty;   /* on the dirty list */
} pollrec;

typedef struct uring_state {
    struct io_uring ring;
    pollrec *fds;
    int nfds;
    int *dirty;      /* fds whose poll must be (re)armed or removed (room
                        for nfds entries) */
    int ndirty;
} uring_state;

#ifdef CIO__TSAN
/*
 * liburing maps and unmaps its rings with raw system calls, which
 * ThreadSanitizer does not see: when a loop on one thread closes its ring
 * and a loop on another thread gets a ring at the same address, the old
 * ring's writes look like a race with the new one's. The kernel orders the
 * unmap before the map; this token tells ThreadSanitizer so.
 */
static char ring_token;
#define RING_CLOSED() __tsan_release(&ring_token)
#define RING_OPENED() __tsan_acquire(&ring_token)
#else
#define RING_CLOSED() ((void)0)
#define RING_OPENED() ((void)0)
#endif

static int ur_init(void **state)
{
    uring_state *st = cio__calloc(1, sizeof(*st));
    if (!st)
        return -ENOMEM; /* ours: a hard failure, not a refusal */
    /* COOP_TASKRUN: completions are gathered when the loop enters the
     * kernel anyway (every iteration with operations in flight does),
     * instead of the kernel interrupting the thread to run them; with
     * TASKRUN_FLAG liburing enters the kernel when work is pending, so
     * nothing is left waiting. Kernels before 5.19 refuse the flags: then
     * the ring is made without them. */
    int rc = io_uring_queue_init(RING_ENTRIES, &st->ring,
                                 IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG);
    if (rc == -EINVAL)
        rc = io_uring_queue_init(RING_ENTRIES, &st->ring, 0);
    if (rc == 0 && !(st->ring.features & IORING_FEAT_EXT_ARG)) {
        /* Waiting with a timeout needs Linux 5.11: treat older as absent. */
        io_uring_queue_exit(&st->ring);
        rc = -ENOSYS;
    }
    if (rc) {
        cio__free(st);
        return -rc; /* positive: the kernel refused, the loop falls back */
    }
    RING_OPENED();
    *state = st;
    return 0;
}

static void ur_close(void *state)
{
    uring_state *st = state;
    if (!st)
        return;
    RING_CLOSED();
    io_uring_queue_exit(&st->ring);
    cio__free(st->fds);
    cio__free(st->dirty);
    cio__free(st);
}

/* A free submission entry, flushing the queue to the kernel if it is full.
 * NULL only if the kernel takes nothing (then the caller reports -EBUSY). */
static struct io_uring_sqe *get_sqe(uring_state *st)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&st->ring);
    if (!sqe && io_uring_submit(&st->ring) >= 0)
        sqe = io_uring_get_sqe(&st->ring);
    return sqe;
}

static uint64_t poll_key(int fd, uint32_t gen)
{
    return ((uint64_t)gen << 32) | ((uint64_t)(uint32_t)fd << 1) | 1u;
}

/*
 * Makes room for fd in the table and in the dirty list, which grows with it:
 * each fd is on the list at most once, so marking an fd dirty never needs
 * memory (a failed allocation there would leave a poll never re-armed).
 */
static int table_room(uring_state *st, int fd)
{
    if (fd < st->nfds)
        return 0;
    size_t n = st->nfds ? (size_t)st->nfds : 64;
    while (n <= (size_t)fd)
        n *= 2;
    int *d = cio__realloc(st->dirty, sizeof(int) * n);
    if (!d)
        return -ENOMEM;
    st->dirty = d;
    pollrec *v = cio__realloc(st->fds, sizeof(*v) * n);
    if (!v)
        return -ENOMEM;
    memset(v + st->nfds, 0, sizeof(*v) * (n - (size_t)st->nfds));
    st->fds = v;
    st->nfds = (int)n;
    return 0;
}

static void mark_dirty(uring_state *st, int fd)
{
    if (st->fds[fd].dirty)
        return;
    st->dirty[st->ndirty++] = fd;
    st->fds[fd].dirty = 1;
}

/* Queues the removal of fd's armed poll and forgets it (a late completion
 * then carries an old generation). False when no entry could be had. */
static bool poll_remove(uring_state *st, int fd)
{
    pollrec *r = &st->fds[fd];
    struct io_uring_sqe *sqe = get_sqe(st);
    if (!sqe)
        return false;
    io_uring_prep_poll_remove(sqe, poll_key(fd, r->gen));
    io_uring_sqe_set_data64(sqe, 0);
    r->gen++;
    r->armed = 0;
    return true;
}

static int ur_watch(void *state, int fd, uint32_t tag, unsigned old_ev, unsigned new_ev)
{
    uring_state *st = state;
    /* The poll is armed later, so a bad fd would only show as an error
     * completion, read as "ready" at every iteration: check it now, as
     * epoll_ctl does, so that a new registration fails with -EBADF. */
    if (!old_ev && new_ev && fcntl(fd, F_GETFD) < 0)
        return -errno;
    int rc = table_room(st, fd);
    if (rc)
        return rc;
    pollrec *r = &st->fds[fd];
    if (!new_ev && r->armed) {
        /* Interest dropped: remove the armed poll now, not at the next
         * poll. cio_close drops the interest just before it closes the fd,
         * and if the number is reused and watched again in the same
         * iteration, the deferred sync would see the same mask and keep the
         * old poll, which watches (and keeps open) the old file while the
         * new one is never polled. Without a free entry, the removal stays
         * deferred (sync_poll). */
        poll_remove(st, fd);
    }
    r->want = new_ev;
    r->tag = tag;
    mark_dirty(st, fd);
    return 0;
}

static unsigned poll_mask(unsigned ev)
{
    return ((ev & CIO_READABLE) ? POLLIN | POLLRDHUP : 0) | ((ev & CIO_WRITABLE) ? POLLOUT : 0);
}

/* Brings the kernel's poll of fd in line with the interest. */
static void sync_poll(uring_state *st, int fd)
{
    pollrec *r = &st->fds[fd];
    r->dirty = 0;
    if (r->armed && r->armed != r->want && !poll_remove(st, fd)) {
        mark_dirty(st, fd); /* retried at the next poll */
        return;
    }
    if (!r->armed && r->want) {
        struct io_uring_sqe *sqe = get_sqe(st);
        if (!sqe) {
            mark_dirty(st, fd);
            return;
        }
        io_uring_prep_poll_add(sqe, fd, poll_mask(r->want));
        io_uring_sqe_set_data64(sqe, poll_key(fd, r->gen));
        r->armed = r->want;
    }
}

static void sync_polls(uring_state *st)
{
    int n = st->ndirty;
    st->ndirty = 0;
    for (int i = 0; i < n; i++)
        sync_poll(st, st->dirty[i]);
}

static unsigned to_events(int res)
{
    if (res < 0) /* the fd went bad: let the watchers find out by trying */
        return CIO_READABLE | CIO_WRITABLE;
    unsigned ev = 0;
    if (res & (POLLIN | POLLHUP | POLLERR | POLLRDHUP))
        ev |= CIO_READABLE;
    if (res & (POLLOUT | POLLHUP | POLLERR))
        ev |= CIO_WRITABLE;
    return ev;
}

/*
 * A blocking operation that io-wq ran (an open of a FIFO) and that a cancel
 * interrupted completes with one of the kernel's internal restart codes
 * (ERESTARTSYS 512, ERESTARTNOINTR 513, ERESTARTNOHAND 514,
 * ERESTART_RESTARTBLOCK 516), which user space never otherwise sees: they
 * mean "interrupted", so they leave the backend as -EINTR, and every user of
 * completions (the operation layer, callback operations) already handles it.
 */
static int32_t restart_as_eintr(int32_t res)
{
    return res == -512 || res == -513 || res == -514 || res == -516 ? -EINTR : res;
}

/* Turns one completion into an event; false if it is to be ignored. */
static bool harvest(uring_state *st, const struct io_uring_cqe *cqe, cio__event *ev)
{
    uint64_t ud = cqe->user_data;
    if (ud == 0)
        return false;
    if (!(ud & 1)) {
        *ev = (cio__event){.kind = CIO__EV_DONE, .res = restart_as_eintr(cqe->res), .fd = -1,
                           .op = (cio__op *)(uintptr_t)ud};
        return true;
    }
    int fd = (int)((ud & 0xffffffffu) >> 1);
    pollrec *r = fd < st->nfds ? &st->fds[fd] : NULL;
    if (!r || r->gen != (uint32_t)(ud >> 32) || !r->armed)
        return false; /* a poll that was removed or replaced */
    r->armed = 0;
    if (r->want)
        mark_dirty(st, fd); /* re-armed at the next poll: level-triggered */
    unsigned e = to_events(cqe->res) & r->want;
    if (!e)
        return false;
    *ev = (cio__event){.kind = CIO__EV_READY, .res = (int32_t)e, .fd = fd, .gen = r->tag,
                       .op = NULL};
    return true;
}

static int ur_poll(void *state, int64_t timeout_ns, cio__event *out, int cap)
{
    uring_state *st = state;
    sync_polls(st);
    int rc;
    if (timeout_ns == 0) {
        rc = io_uring_sq_ready(&st->ring) ? io_uring_submit(&st->ring) : 0;
    } else {
        struct io_uring_cqe *cqe;
        struct __kernel_timespec ts = {.tv_sec = timeout_ns / 1000000000,
                                       .tv_nsec = timeout_ns % 1000000000};
        rc = io_uring_submit_and_wait_timeout(&st->ring, &cqe, 1, timeout_ns < 0 ? NULL : &ts,
                                              NULL);
    }
    if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EBUSY && rc != -EAGAIN)
        return rc;
    int n = 0;
    struct io_uring_cqe *cqes[64];
    while (n < cap) {
        unsigned want = (unsigned)(cap - n) < 64 ? (unsigned)(cap - n) : 64;
        unsigned got = io_uring_peek_batch_cqe(&st->ring, cqes, want);
        for (unsigned i = 0; i < got; i++)
            n += harvest(st, cqes[i], &out[n]);
        io_uring_cq_advance(&st->ring, got);
        if (got < want)
            break;
    }
    return n;
}

static int prep(struct io_uring_sqe *sqe, cio__op *op)
{
    unsigned len = op->len > MAX_IO ? MAX_IO : (unsigned)op->len;
    uint64_t off = op->offset < 0 ? (uint64_t)-1 : (uint64_t)op->offset;
    switch (op->code) {
    case CIO__OP_READ: io_uring_prep_read(sqe, op->fd, op->buf, len, off); break;
    case CIO__OP_WRITE: io_uring_prep_write(sqe, op->fd, op->buf, len, off); break;
    case CIO__OP_READV:
        io_uring_prep_readv(sqe, op->fd, op->iov, (unsigned)op->iovcnt, off);
        break;
    case CIO__OP_WRITEV:
        io_uring_prep_writev(sqe, op->fd, op->iov, (unsigned)op->iovcnt, off);
        break;
    case CIO__OP_RECV: io_uring_prep_recv(sqe, op->fd, op->buf, len, op->flags); break;
    case CIO__OP_SEND:
        io_uring_prep_send(sqe, op->fd, op->buf, len, op->flags | MSG_NOSIGNAL);
        break;
    case CIO__OP_RECVMSG: io_uring_prep_recvmsg(sqe, op->fd, op->msg, (unsigned)op->flags); break;
    case CIO__OP_SENDMSG:
        io_uring_prep_sendmsg(sqe, op->fd, op->msg, (unsigned)op->flags | MSG_NOSIGNAL);
        break;
    case CIO__OP_ACCEPT: io_uring_prep_accept(sqe, op->fd, op->addr, op->addrlen, op->flags); break;
    case CIO__OP_CONNECT: io_uring_prep_connect(sqe, op->fd, op->addr, op->socklen); break;
    case CIO__OP_FSYNC:
        io_uring_prep_fsync(sqe, op->fd, op->flags ? IORING_FSYNC_DATASYNC : 0);
        break;
    case CIO__OP_OPENAT:
        io_uring_prep_openat(sqe, AT_FDCWD, op->buf, op->flags, (mode_t)op->len);
        /* io_uring first tries an open inline with O_NONBLOCK added, and an
         * open of a FIFO for writing with no reader then fails with ENXIO
         * instead of waiting as open(2) does: without O_NONBLOCK from the
         * caller, the open goes to an io-wq worker at once, where it may
         * block (and a cancel interrupts it). */
        if (!(op->flags & O_NONBLOCK))
            sqe->flags |= IOSQE_ASYNC;
        break;
    case CIO__OP_STATX:
        io_uring_prep_statx(sqe, (op->flags & AT_EMPTY_PATH) ? op->fd : AT_FDCWD, op->buf,
                            op->flags, (unsigned)op->len, op->stx);
        break;
    case CIO__OP_CLOSE: io_uring_prep_close(sqe, op->fd); break;
    default: return -EINVAL;
    }
    return 0;
}

static int ur_submit(void *state, cio__op *op)
{
    uring_state *st = state;
    struct io_uring_sqe *sqe = get_sqe(st);
    if (!sqe)
        return -EBUSY;
    int rc = prep(sqe, op);
    if (rc) {
        io_uring_prep_nop(sqe); /* the entry is taken: make it harmless */
        io_uring_sqe_set_data64(sqe, 0);
        return rc;
    }
    io_uring_sqe_set_data(sqe, op);
    return 0;
}

static int ur_cancel(void *state, cio__op *op)
{
    uring_state *st = state;
    struct io_uring_sqe *sqe = get_sqe(st);
    if (!sqe)
        return -EBUSY;
    io_uring_prep_cancel64(sqe, (uint64_t)(uintptr_t)op, 0);
    io_uring_sqe_set_data64(sqe, 0);
    return 0;
}

static int ur_flush(void *state)
{
    uring_state *st = state;
    int rc = io_uring_sq_ready(&st->ring) ? io_uring_submit(&st->ring) : 0;
    return rc < 0 ? rc : 0;
}

static int ur_pending(void *state)
{
    uring_state *st = state;
    return st->ndirty || io_uring_sq_ready(&st->ring) || io_uring_cq_ready(&st->ring);
}

const cio__backend cio__backend_uring = {
    .name = "io_uring",
    .init = ur_init,
    .close = ur_close,
    .watch = ur_watch,
    .poll = ur_poll,
    .submit = ur_submit,
    .cancel = ur_cancel,
    .pending = ur_pending,
    .flush = ur_flush,
};

#else /* !CIO_HAVE_URING */

/* Built without liburing: io_uring is absent, and a loop that asks for it
 * falls back to epoll as it does on a kernel without io_uring. */
static int ur_absent(void **state)
{
    (void)state;
    return ENOSYS; /* positive: refused, the loop falls back */
}

const cio__backend cio__backend_uring = {.name = "io_uring", .init = ur_absent};

#endif /* CIO_HAVE_URING */
