/*
 * The operation layer: read, write, readv/writev, recv/send, recvmsg/sendmsg
 * (and so recvfrom/sendto), accept, connect, pread/pwrite/fsync, each an
 * await point that takes part in cancellation and deadlines; and cio_close,
 * which closes at once (a descriptor must never leak to a cancellation)
 * after waking and cancelling what waits on the fd.
 *
 * On epoll (readiness): try the call; on EAGAIN wait for readiness and try
 * again. A cancelled wait means the call did not happen.
 *
 * On io_uring (completion): submit the operation and park until its
 * completion arrives. A cancelled or timed-out operation asks the kernel to
 * cancel it and stays parked, uninterruptibly, until the original completion
 * has arrived: the buffers on the task's stack stay valid throughout, and a
 * completion that raced the cancel is reported as done (bytes received are
 * returned, bytes sent are counted), never lost. The cancellation is
 * level-triggered, so the task's next await point reports it.
 */
#include "io.h"

#include <fcntl.h>
#include <limits.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* Waiting for readiness                                                     */
/* ------------------------------------------------------------------------ */

typedef struct fd_waiter {
    cio__waiter w;
    cio_loop_t *loop;
    int fd;
    unsigned events;
} fd_waiter;

static void fd_fired(void *arg, int fd, unsigned events)
{
    fd_waiter *fw = arg;
    (void)fd;
    cio__interrupt(&fw->w, (events & CIO__FD_CLOSING) ? -EBADF : (int)(events & fw->events));
}

static void fd_unlink(cio__waiter *w)
{
    fd_waiter *fw = (fd_waiter *)w;
    cio__fd_clear(fw->loop, fw->fd, fw->events);
}

int cio__fd_wait(cio__coro *c, int fd, unsigned events)
{
    int rc = cio__check_cancel(c);
    if (rc)
        return rc;
    fd_waiter fw = {.loop = c->loop, .fd = fd, .events = events};
    cio__waiter_init(&fw.w, c, "fd", (const void *)(intptr_t)fd, fd_unlink);
    rc = cio__fd_set(c->loop, fd, events, fd_fired, &fw);
    return rc ? rc : cio__wait(&fw.w, CIO__NO_DEADLINE);
}

int cio_wait_fd(int fd, int events)
{
    cio__coro *c = cio__current;
    if (!c)
        return -EPERM;
    if (fd < 0 || !(events & (CIO_READABLE | CIO_WRITABLE)) ||
        (events & ~(CIO_READABLE | CIO_WRITABLE)))
        return -EINVAL;
    return cio__fd_wait(c, fd, (unsigned)events);
}

/* ------------------------------------------------------------------------ */
/* Completion backends                                                        */
/* ------------------------------------------------------------------------ */

static void op_complete(cio__op *op)
{
    cio__waiter *w = op->data;
    if (w)
        cio__wake(w, 0);
}

/*
 * Asks the kernel to cancel op and parks c until op's completion has arrived,
 * whatever happens. Should the cancel itself not be queued (no submission
 * entry even after flushing), it is tried again every millisecond rather
 * than leaving the task parked on an operation that may never complete.
 */
static void cancel_and_wait(cio__coro *c, cio__op *op)
{
    bool asked = cio__loop_cancel(c->loop, op) == 0;
    while (!op->done) {
        cio__waiter w;
        cio__waiter_init(&w, c, "io", op, NULL);
        w.nointr = 1;
        op->data = &w;
        if (cio__wait(&w, asked ? CIO__NO_DEADLINE : cio__clock_ns() + 1000000) == -ENOMEM)
            cio__wait(&w, CIO__NO_DEADLINE); /* no timer either: wait for the op */
        if (!asked && !op->done)
            asked = cio__loop_cancel(c->loop, op) == 0;
    }
    op->data = NULL;
}

/* Submits op once and parks c until its completion: the result, or rc of
 * the interruption in *why (0 when the task was not interrupted). */
static ssize_t submit_once(cio__coro *c, cio__op *op, int *why)
{
    op->complete = op_complete;
    op->data = NULL;
    int rc = cio__loop_submit(c->loop, op);
    if (rc)
        return rc;
    cio__waiter w;
    cio__waiter_init(&w, c, "io", op, NULL);
    op->data = &w;
    rc = cio__wait(&w, CIO__NO_DEADLINE);
    op->data = NULL;
    if (!op->done) {
        /* Interrupted (rc is -ECANCELED, -ETIMEDOUT or -ENOMEM): the kernel
         * still owns the buffers until the completion comes. */
        cancel_and_wait(c, op);
    }
    *why = rc;
    return op->res;
}

static ssize_t run_submitted(cio__coro *c, cio__op *op)
{
    for (;;) {
        int rc = cio__check_cancel(c), why = 0;
        if (rc)
            return rc;
        ssize_t r = submit_once(c, op, &why);
        if (r == -EINTR && op->code == CIO__OP_CLOSE)
            return 0; /* the fd is closed all the same: never closed twice */
        if (r == -EINTR && !why)
            continue; /* retried, as on epoll: EINTR is never returned */
        if (r == -ECANCELED || r == -EINTR) {
            /* Cancelled in the kernel: for the task's own interruption, or
             * else by cio_close of the fd, which reports -EBADF as the epoll
             * backend does. */
            return why ? why : -EBADF;
        }
        return r;
    }
}

/* ------------------------------------------------------------------------ */
/* Readiness backends: try, wait, retry                                      */
/* ------------------------------------------------------------------------ */

/* One attempt of op's system call: its result, or -errno. */
static ssize_t attempt(cio__op *op)
{
    ssize_t r;
    switch (op->code) {
    case CIO__OP_READ:
        r = op->offset < 0 ? read(op->fd, op->buf, op->len)
                           : pread(op->fd, op->buf, op->len, (off_t)op->offset);
        break;
    case CIO__OP_WRITE:
        r = op->offset < 0 ? write(op->fd, op->buf, op->len)
                           : pwrite(op->fd, op->buf, op->len, (off_t)op->offset);
        break;
    case CIO__OP_READV: r = readv(op->fd, op->iov, op->iovcnt); break;
    case CIO__OP_WRITEV: r = writev(op->fd, op->iov, op->iovcnt); break;
    case CIO__OP_RECV: r = recv(op->fd, op->buf, op->len, op->flags); break;
    case CIO__OP_SEND: r = send(op->fd, op->buf, op->len, op->flags | MSG_NOSIGNAL); break;
    case CIO__OP_RECVMSG: r = recvmsg(op->fd, op->msg, op->flags); break;
    case CIO__OP_SENDMSG: r = sendmsg(op->fd, op->msg, op->flags | MSG_NOSIGNAL); break;
    case CIO__OP_ACCEPT: r = accept4(op->fd, op->addr, op->addrlen, op->flags); break;
    case CIO__OP_FSYNC: r = op->flags ? fdatasync(op->fd) : fsync(op->fd); break;
    case CIO__OP_OPENAT: r = openat(AT_FDCWD, op->buf, op->flags, (mode_t)op->len); break;
    case CIO__OP_STATX:
        r = statx((op->flags & AT_EMPTY_PATH) ? op->fd : AT_FDCWD, op->buf, op->flags,
                  (unsigned)op->len, op->stx);
        break;
    case CIO__OP_CLOSE:
        /* Linux closes the fd even when close reports EINTR: never retried. */
        r = close(op->fd);
        if (r < 0 && errno == EINTR)
            r = 0;
        break;
    default: return -EINVAL;
    }
    return r < 0 ? -errno : r;
}

/* The direction an operation waits for when it would block. */
static unsigned op_direction(const cio__op *op)
{
    switch (op->code) {
    case CIO__OP_WRITE:
    case CIO__OP_WRITEV:
    case CIO__OP_SEND:
    case CIO__OP_SENDMSG:
    case CIO__OP_CONNECT: return CIO_WRITABLE;
    default: return CIO_READABLE;
    }
}

/* connect on a readiness backend: start it, wait for writability, read the
 * outcome from SO_ERROR. */
static ssize_t connect_ready(cio__coro *c, cio__op *op)
{
    int rc;
    do
        rc = connect(op->fd, op->addr, op->socklen) ? -errno : 0;
    while (rc == -EINTR);
    /* EAGAIN is not "in progress": nothing was started (a Unix socket
     * whose listener's backlog is full, or no free local port), so it is
     * returned as io_uring returns it. Waiting for writability would not
     * help: an unconnected Unix socket is writable at once, and SO_ERROR
     * would then read 0 for a socket that is not connected. */
    if (rc != -EINPROGRESS && rc != -EALREADY)
        return rc;
    for (;;) {
        rc = cio__fd_wait(c, op->fd, CIO_WRITABLE);
        if (rc < 0)
            return rc;
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(op->fd, SOL_SOCKET, SO_ERROR, &err, &len))
            return -errno;
        if (err)
            return -err;
        /* Writable with no error normally means connected; a readiness
         * event can also be stale (left over in a poll batch for an fd that
         * was closed and reused meanwhile), so confirm with the peer's
         * address and wait again while the connect is still in progress. */
        struct sockaddr_storage peer;
        len = sizeof peer;
        if (getpeername(op->fd, (struct sockaddr *)&peer, &len) == 0)
            return 0;
        if (errno != ENOTCONN)
            return -errno;
    }
}

static ssize_t run_ready(cio__coro *c, cio__op *op)
{
    int rc = cio__check_cancel(c);
    if (rc)
        return rc;
    if (op->code == CIO__OP_CONNECT)
        return connect_ready(c, op);
    for (;;) {
        ssize_t r = attempt(op);
        if (r >= 0 || (r != -EAGAIN && r != -EWOULDBLOCK && r != -EINTR))
            return r;
        if (r == -EINTR)
            continue;
        rc = cio__fd_wait(c, op->fd, op_direction(op));
        if (rc < 0)
            return rc;
    }
}

ssize_t cio__op_run(cio__coro *c, cio__op *op)
{
    return cio__loop_completes(c->loop) ? run_submitted(c, op) : run_ready(c, op);
}

/* ------------------------------------------------------------------------ */
/* Public calls                                                               */
/* ------------------------------------------------------------------------ */

/* Runs op from the current task, or -EPERM outside one. */
static ssize_t run(cio__op *op)
{
    cio__coro *c = cio__current;
    if (!c)
        return -EPERM;
    if (op->fd < 0)
        return -EBADF;
    return cio__op_run(c, op);
}

#define OP(...) (cio__op){.offset = -1, __VA_ARGS__}

int cio_socket(int domain, int type, int protocol)
{
    int fd = socket(domain, type | SOCK_NONBLOCK | SOCK_CLOEXEC, protocol);
    return fd < 0 ? -errno : fd;
}

int cio_sock_accept(int fd, struct sockaddr *addr, socklen_t *addrlen)
{
    if ((addr == NULL) != (addrlen == NULL))
        return -EINVAL;
    cio__op op = OP(.code = CIO__OP_ACCEPT, .fd = fd, .addr = addr, .addrlen = addrlen,
                    .flags = SOCK_NONBLOCK | SOCK_CLOEXEC);
    return (int)run(&op);
}

int cio_sock_connect(int fd, const struct sockaddr *addr, socklen_t addrlen)
{
    if (!addr)
        return -EINVAL;
    cio__op op = OP(.code = CIO__OP_CONNECT, .fd = fd, .addr = (struct sockaddr *)addr,
                    .socklen = addrlen);
    return (int)run(&op);
}

ssize_t cio_sock_recv(int fd, void *buf, size_t len, int flags)
{
    if (!buf && len)
        return -EINVAL;
    cio__op op = OP(.code = CIO__OP_RECV, .fd = fd, .buf = buf, .len = len, .flags = flags);
    return run(&op);
}

ssize_t cio_sock_recvmsg(int fd, struct msghdr *msg, int flags)
{
    if (!msg)
        return -EINVAL;
    cio__op op = OP(.code = CIO__OP_RECVMSG, .fd = fd, .msg = msg, .flags = flags);
    return run(&op);
}

ssize_t cio_sock_sendmsg(int fd, const struct msghdr *msg, int flags)
{
    if (!msg)
        return -EINVAL;
    cio__op op = OP(.code = CIO__OP_SENDMSG, .fd = fd, .msg = (struct msghdr *)msg,
                    .flags = flags);
    return run(&op);
}

ssize_t cio_sock_recv_into(int fd, const struct iovec *iov, int iovcnt, int flags)
{
    if ((!iov && iovcnt) || iovcnt < 0 || iovcnt > IOV_MAX)
        return -EINVAL;
    struct msghdr msg = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt};
    return cio_sock_recvmsg(fd, &msg, flags);
}

ssize_t cio_sock_send(int fd, const void *buf, size_t len, int flags)
{
    if (!buf && len)
        return -EINVAL;
    cio__op op = OP(.code = CIO__OP_SEND, .fd = fd, .buf = (void *)buf, .len = len,
                    .flags = flags);
    return run(&op);
}

int cio_sock_sendall(int fd, const void *buf, size_t len, int flags, size_t *sent)
{
    size_t done = 0;
    ssize_t r = 0;
    while (done < len || (len == 0 && done == 0 && r == 0)) {
        r = cio_sock_send(fd, (const char *)buf + done, len - done, flags);
        if (r < 0)
            break;
        done += (size_t)r;
        if (len == 0)
            break;
    }
    if (sent)
        *sent = done;
    return r < 0 ? (int)r : 0;
}

ssize_t cio_sock_recvfrom(int fd, void *buf, size_t len, int flags, struct sockaddr *addr,
                          socklen_t *addrlen)
{
    if ((!buf && len) || (addr == NULL) != (addrlen == NULL))
        return -EINVAL;
    struct iovec iov = {.iov_base = buf, .iov_len = len};
    struct msghdr msg = {.msg_name = addr, .msg_namelen = addrlen ? *addrlen : 0,
                         .msg_iov = &iov, .msg_iovlen = 1};
    ssize_t r = cio_sock_recvmsg(fd, &msg, flags);
    if (r >= 0 && addrlen)
        *addrlen = msg.msg_namelen;
    return r;
}

ssize_t cio_sock_sendto(int fd, const void *buf, size_t len, int flags,
                        const struct sockaddr *addr, socklen_t addrlen)
{
    if (!buf && len)
        return -EINVAL;
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
    struct msghdr msg = {.msg_name = (void *)addr, .msg_namelen = addr ? addrlen : 0,
                         .msg_iov = &iov, .msg_iovlen = 1};
    return cio_sock_sendmsg(fd, &msg, flags);
}

ssize_t cio_read(int fd, void *buf, size_t len)
{
    if (!buf && len)
        return -EINVAL;
    cio__op op = OP(.code = CIO__OP_READ, .fd = fd, .buf = buf, .len = len);
    return run(&op);
}

ssize_t cio_write(int fd, const void *buf, size_t len)
{
    if (!buf && len)
        return -EINVAL;
    cio__op op = OP(.code = CIO__OP_WRITE, .fd = fd, .buf = (void *)buf, .len = len);
    return run(&op);
}

int cio_write_all(int fd, const void *buf, size_t len, size_t *written)
{
    size_t done = 0;
    ssize_t r = 0;
    while (done < len) {
        r = cio_write(fd, (const char *)buf + done, len - done);
        if (r < 0)
            break;
        done += (size_t)r;
    }
    if (written)
        *written = done;
    return r < 0 ? (int)r : 0;
}

static int check_iov(const struct iovec *iov, int iovcnt)
{
    return (!iov && iovcnt) || iovcnt < 0 || iovcnt > IOV_MAX ? -EINVAL : 0;
}

ssize_t cio_readv(int fd, const struct iovec *iov, int iovcnt)
{
    if (check_iov(iov, iovcnt))
        return -EINVAL;
    cio__op op = OP(.code = CIO__OP_READV, .fd = fd, .iov = iov, .iovcnt = iovcnt);
    return run(&op);
}

ssize_t cio_writev(int fd, const struct iovec *iov, int iovcnt)
{
    if (check_iov(iov, iovcnt))
        return -EINVAL;
    cio__op op = OP(.code = CIO__OP_WRITEV, .fd = fd, .iov = iov, .iovcnt = iovcnt);
    return run(&op);
}

ssize_t cio_pread(int fd, void *buf, size_t len, int64_t offset)
{
    if ((!buf && len) || offset < 0)
        return -EINVAL;
    cio__op op = OP(.code = CIO__OP_READ, .fd = fd, .buf = buf, .len = len);
    op.offset = offset;
    return run(&op);
}

ssize_t cio_pwrite(int fd, const void *buf, size_t len, int64_t offset)
{
    if ((!buf && len) || offset < 0)
        return -EINVAL;
    cio__op op = OP(.code = CIO__OP_WRITE, .fd = fd, .buf = (void *)buf, .len = len);
    op.offset = offset;
    return run(&op);
}

int cio_fsync(int fd, bool datasync)
{
    cio__op op = OP(.code = CIO__OP_FSYNC, .fd = fd, .flags = datasync ? 1 : 0);
    return (int)run(&op);
}

int cio_close(int fd)
{
    cio__coro *c = cio__current;
    return cio__close_fd(c ? c->loop : cio__running, fd);
}

int cio__close_fd(cio_loop_t *loop, int fd)
{
    if (fd < 0)
        return -EBADF;
    if (loop) {
        bool ops = fd < loop->nfds && loop->fds[fd].ops;
        cio__fd_forget(loop, fd);
        /* The kernel holds the file while operations on it are in flight: a
         * recv on a closed socket would wait forever and the peer never see
         * the close. They end with -EBADF (see run_submitted). */
        cio__loop_cancel_fd(loop, fd);
        /* An operation still queued names the fd by number: sent after the
         * close, it would run on whatever file takes the number next (and
         * read another connection's bytes). Send it, and its cancel, now,
         * while the number still means this file. */
        if (ops)
            cio__loop_flush(loop);
    }
    /* Closing is not cancellable: the descriptor must not leak, so it is
     * closed at once (a close on io_uring would have to park the task). */
    return close(fd) ? (errno == EINTR ? 0 : -errno) : 0;
}

/* ------------------------------------------------------------------------ */
/* Callback operations                                                        */
/* ------------------------------------------------------------------------ */

ssize_t cio__op_try(cio__op *op)
{
    if (op->code == CIO__OP_CONNECT)
        return -EINVAL;
    ssize_t r;
    do
        r = attempt(op);
    while (r == -EINTR);
    return r == -EWOULDBLOCK ? -EAGAIN : r;
}

void cio__aop_init(cio__aop *a, cio_loop_t *loop, int code, int fd,
                   void (*prepare)(cio__aop *), bool (*done)(cio__aop *, ssize_t))
{
    *a = (cio__aop){.loop = loop, .prepare = prepare, .done = done};
    a->op.code = (uint8_t)code;
    a->op.fd = fd;
    a->op.offset = -1;
}

/* Drops a's readiness registration on fd unless the fd was closed (gen
 * moved on) or its side now belongs to another watcher. a itself may have
 * been freed: only its address is compared. */
static void aop_unwatch(cio_loop_t *loop, int fd, uint32_t gen, unsigned dir, const void *a);

/* Readiness backend: fd is ready for a's direction (or closing). */
static void aop_ready(void *arg, int fd, unsigned events)
{
    cio__aop *a = arg;
    cio_loop_t *loop = a->loop;
    unsigned dir = op_direction(&a->op);
    if (events & CIO__FD_CLOSING) {
        cio__fd_clear(loop, fd, dir);
        /* Closed from inside a's own done (the registration was kept for
         * it): a is not waiting, and its owner knows. */
        if (a->state != CIO__AOP_WAITING)
            return;
        a->state = CIO__AOP_IDLE;
        a->done(a, -EBADF);
        return;
    }
    if (a->prepare)
        a->prepare(a);
    ssize_t r = cio__op_try(&a->op);
    if (r == -EAGAIN)
        return; /* a stale or spurious wake-up: keep waiting */
    uint32_t gen = loop->fds[fd].gen;
    a->state = CIO__AOP_IDLE;
    if (a->done(a, r)) {
        /* Level-triggered interest stays registered: the next readiness
         * runs the operation again, with no epoll_ctl in between. */
        a->state = CIO__AOP_WAITING;
        return;
    }
    aop_unwatch(loop, fd, gen, dir, a);
}

static void aop_unwatch(cio_loop_t *loop, int fd, uint32_t gen, unsigned dir, const void *a)
{
    if (fd >= loop->nfds || loop->fds[fd].gen != gen)
        return;
    const cio__fdside *s = dir == CIO_READABLE ? &loop->fds[fd].r : &loop->fds[fd].w;
    if (s->fn == aop_ready && s->arg == a)
        cio__fd_clear(loop, fd, dir);
}

static int aop_submit(cio__aop *a)
{
    if (a->prepare)
        a->prepare(a);
    a->stopping = 0;
    int rc = cio__loop_submit(a->loop, &a->op);
    a->state = rc ? CIO__AOP_IDLE : CIO__AOP_SUBMITTED;
    return rc;
}

/* Completion backend: a's operation finished. */
static void aop_complete(cio__op *op)
{
    cio__aop *a = (cio__aop *)op; /* op is a's first member */
    ssize_t r = op->res;
    bool retry = r == -EINTR || r == -EAGAIN;
    a->state = CIO__AOP_IDLE;
    if (a->stopping) {
        /* Stopped: a retry result is the cancel it now is. The owner may
         * have restarted it meanwhile (a server that resumed accepting),
         * and then done returns true to run it again. */
        if (retry)
            r = -ECANCELED;
    } else if (r == -ECANCELED) {
        r = -EBADF; /* cancelled by cio_close of the fd, as on epoll */
    }
    /* Not stopped, a retry runs again without asking, as on epoll. */
    if (!(retry && !a->stopping) && !a->done(a, r))
        return;
    int rc = aop_submit(a);
    if (rc)
        a->done(a, rc);
}

ssize_t cio__aop_start(cio__aop *a, bool try_now)
{
    if (a->op.code == CIO__OP_CONNECT || a->state != CIO__AOP_IDLE)
        return -EINVAL;
    if (try_now) {
        if (a->prepare)
            a->prepare(a);
        ssize_t r = cio__op_try(&a->op);
        if (r != -EAGAIN)
            return r;
    }
    int rc;
    if (cio__loop_completes(a->loop)) {
        a->op.complete = aop_complete;
        rc = aop_submit(a);
    } else {
        rc = cio__fd_set(a->loop, a->op.fd, op_direction(&a->op), aop_ready, a);
        if (!rc)
            a->state = CIO__AOP_WAITING;
    }
    return rc ? rc : -EINPROGRESS;
}

bool cio__aop_stop(cio__aop *a)
{
    switch (a->state) {
    case CIO__AOP_WAITING:
        cio__fd_clear(a->loop, a->op.fd, op_direction(&a->op));
        a->state = CIO__AOP_IDLE;
        return true;
    case CIO__AOP_SUBMITTED:
        if (!a->stopping) {
            a->stopping = 1;
            cio__loop_cancel(a->loop, &a->op);
        }
        return false;
    default:
        return true;
    }
}
