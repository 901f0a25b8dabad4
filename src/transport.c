/*
 * Transports: a connected stream socket driven by the loop with no task,
 * calling a protocol's callbacks (asyncio's selector/proactor transports).
 *
 * Reading is one callback operation (cio__aop RECV) kept running while the
 * protocol reads: on epoll its readiness registration stays in place between
 * receives, on io_uring a receive is always submitted. Writing tries the
 * socket at once when nothing is queued (most writes end there, with one
 * system call and no copy); what the socket does not take is copied into a
 * chain of chunks that a second callback operation (SEND) empties. Chunks
 * are never moved or grown once written to, so a send the kernel holds
 * (io_uring) keeps pointing at valid bytes while more is appended.
 *
 * Lifetime: the transport frees itself once it is closed, connection_lost
 * has been called, and neither operation is under way (on io_uring a
 * stopped operation still completes later). Callbacks run with a hold on
 * the transport, so a protocol may abort it from inside data_received.
 */
#include "net.h"

#include <fcntl.h>
#include <limits.h>
#include <netinet/tcp.h>
#include <unistd.h>

#define DEF_READ CIO__NET_BUF
#define DEF_HIGH (64u * 1024u)
#define DEF_LIMIT (16u * 1024u * 1024u)
#define DEF_STREAM_LIMIT (64u * 1024u)
#define DEF_CLOSE_TIMEOUT 30.0

typedef struct chunk {
    struct chunk *next;
    size_t start, end, cap;
    char data[];
} chunk;

struct cio_transport {
    cio__netobj obj;
    cio_loop_t *loop;
    cio__net *net;
    int fd;
    const cio_protocol_t *proto;   /* the plain form, or */
    const cio__bufproto *bp;       /* the buffered form (streams) */
    void *ctx;
    cio__aop rd, wr;
    char *rbuf;                    /* plain form: the receive buffer */
    size_t held;                   /* bytes in rbuf received while paused */
    uint8_t held_eof;              /* EOF received while paused */
    cio_handle_t resume_h;         /* delivers what was held, after resume */
    size_t read_size;
    chunk *whead, *wtail;
    size_t wsize;                  /* bytes queued, not yet sent */
    size_t high, low, limit;
    int err;                       /* what calls return once it ended */
    int lost_err;                  /* what connection_lost is told */
    int holds;                     /* callbacks running on the transport */
    uint8_t reading;               /* the protocol wants data */
    uint8_t wpaused;               /* pause_writing was called */
    uint8_t eof_asked, eof_sent, eof_rcvd;
    uint8_t closing;               /* close or abort asked: no more writes */
    uint8_t closed;                /* the fd is closed */
    uint8_t lost_called, lost_sched, detached;
    uint8_t in_rd, in_wr;          /* inside rd_done / wr_done */
    uint8_t pipe;                  /* CIO__PIPE_READ / _WRITE: one end of a pipe */
    cio_handle_t lost_h;           /* defers connection_lost to the loop */
    void (*gone_fn)(void *);
    void *gone_arg;
    void *orphan;                  /* a detached protocol's receive buffer */
    size_t orphan_cap;
};

static void maybe_free(cio_transport_t *t);
static void drop_rbuf(cio_transport_t *t);
static void finish(cio_transport_t *t, int err);

/* ------------------------------------------------------------------------ */
/* Options                                                                    */
/* ------------------------------------------------------------------------ */

int cio__transport_opts(const cio_transport_opts_t *in, cio_transport_opts_t *out)
{
    cio_transport_opts_t o = in ? *in : (cio_transport_opts_t){0};
    if (o.reserved_[0] || o.reserved_[1] || o.close_timeout < 0 || o.close_timeout != o.close_timeout)
        return -EINVAL;
    if (!o.read_size)
        o.read_size = DEF_READ;
    if (!o.high_water)
        o.high_water = DEF_HIGH;
    if (!o.low_water)
        o.low_water = o.high_water / 4;
    if (!o.write_limit)
        o.write_limit = DEF_LIMIT;
    if (!o.limit)
        o.limit = DEF_STREAM_LIMIT;
    if (o.close_timeout == 0)
        o.close_timeout = DEF_CLOSE_TIMEOUT;
    if (o.low_water > o.high_water || o.high_water > o.write_limit)
        return -EINVAL;
    *out = o;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Holds and the end of a transport                                           */
/* ------------------------------------------------------------------------ */

static void hold(cio_transport_t *t)
{
    t->holds++;
}

static void unhold(cio_transport_t *t)
{
    if (--t->holds == 0)
        maybe_free(t);
}

/* Chunks of the default size come from the loop's buffer cache. */
#define CHUNK_CAP (CIO__NET_BUF - sizeof(chunk))

static chunk *chunk_new(cio_transport_t *t, size_t n)
{
    chunk *c = n <= CHUNK_CAP ? cio__net_buf_get(t->net) : cio__malloc(sizeof(chunk) + n);
    if (c) {
        c->next = NULL;
        c->start = c->end = 0;
        c->cap = n <= CHUNK_CAP ? CHUNK_CAP : n;
    }
    return c;
}

static void chunk_free(cio_transport_t *t, chunk *c)
{
    if (c->cap == CHUNK_CAP)
        cio__net_buf_put(t->net, c);
    else
        cio__free(c);
}

static void free_chunks(cio_transport_t *t)
{
    chunk *c = t->whead;
    while (c) {
        chunk *next = c->next;
        chunk_free(t, c);
        c = next;
    }
    t->whead = t->wtail = NULL;
    t->wsize = 0;
}

/* Frees t once nothing refers to it any more. */
static void maybe_free(cio_transport_t *t)
{
    if (!t->closed || !t->lost_called || t->holds || cio__aop_busy(&t->rd) ||
        cio__aop_busy(&t->wr))
        return;
    cio__net_remove(t->net, &t->obj);
    free_chunks(t);
    drop_rbuf(t);
    if (t->orphan_cap == CIO__NET_BUF)
        cio__net_buf_put(t->net, t->orphan);
    else
        cio__free(t->orphan);
    void (*gone)(void *) = t->gone_fn;
    void *arg = t->gone_arg;
    cio__free(t);
    if (gone)
        gone(arg);
}

static void call_lost(void *arg)
{
    cio_transport_t *t = arg;
    hold(t);
    t->lost_called = 1;
    if (!t->detached) {
        if (t->bp)
            t->bp->lost(t->ctx, t->lost_err);
        else if (t->proto->connection_lost)
            t->proto->connection_lost(t, t->lost_err, t->ctx);
    }
    unhold(t);
}

/*
 * Queues connection_lost once the transport is closed and no operation is
 * under way: on io_uring a stopped receive may still write into the
 * protocol's buffer until its completion arrives, so the protocol must not
 * hear that the connection is gone (and free that buffer) before.
 */
static void maybe_lost(cio_transport_t *t)
{
    if (!t->closed || t->lost_sched || cio__aop_busy(&t->rd) || cio__aop_busy(&t->wr))
        return;
    t->lost_sched = 1;
    cio_call_soon(t->loop, &t->lost_h, call_lost, t);
}

/*
 * Ends the connection: both operations stopped, the fd closed (on io_uring
 * that cancels what the kernel holds), connection_lost queued for the loop
 * (never called from inside an API call). err 0 for a close of ours.
 */
static void finish(cio_transport_t *t, int err)
{
    if (t->closed)
        return;
    if (!t->err)
        t->err = err ? err : -ESHUTDOWN;
    t->closing = 1;
    t->closed = 1;
    t->reading = 0;
    cio_handle_cancel(&t->resume_h);
    cio__aop_stop(&t->rd);
    cio__aop_stop(&t->wr);
    int fd = t->fd;
    t->fd = -1;
    cio__close_fd(t->loop, fd);
    if (!cio__aop_busy(&t->wr))
        free_chunks(t);
    /* The error the protocol sees: 0 for an orderly end. */
    t->lost_err = err;
    maybe_lost(t);
}

/* The connection failed with err (a reset, a broken pipe...). */
static void fail(cio_transport_t *t, int err)
{
    if (t->closed)
        return;
    t->err = err;
    finish(t, err);
}

/* ------------------------------------------------------------------------ */
/* Reading                                                                    */
/* ------------------------------------------------------------------------ */

static void rd_prepare(cio__aop *a)
{
    cio_transport_t *t = (cio_transport_t *)((char *)a - offsetof(cio_transport_t, rd));
    if (t->bp) {
        size_t len = 0;
        a->op.buf = t->bp->get_buffer(t->ctx, &len);
        a->op.len = a->op.buf ? len : 0;
        return;
    }
    if (!t->rbuf)
        t->rbuf = t->read_size == CIO__NET_BUF ? cio__net_buf_get(t->net)
                                                : cio__malloc(t->read_size);
    a->op.buf = t->rbuf;
    a->op.len = t->rbuf ? t->read_size : 0;
}

/* Gives the plain form's receive buffer back while nothing is received, so
 * an idle connection holds none. */
static void drop_rbuf(cio_transport_t *t)
{
    if (!t->rbuf)
        return;
    if (t->read_size == CIO__NET_BUF)
        cio__net_buf_put(t->net, t->rbuf);
    else
        cio__free(t->rbuf);
    t->rbuf = NULL;
}

static void got_eof(cio_transport_t *t)
{
    t->eof_rcvd = 1;
    t->reading = 0;
    bool keep = false;
    if (!t->detached) {
        if (t->bp)
            keep = t->bp->eof_received(t->ctx);
        else if (t->proto->eof_received)
            keep = t->proto->eof_received(t, t->ctx);
    }
    if (!keep)
        cio_transport_close(t);
}

static void got_data(cio_transport_t *t, size_t n)
{
    if (t->detached)
        return;
    if (t->bp)
        t->bp->buffer_updated(t->ctx, n);
    else
        t->proto->data_received(t, t->rbuf, n, t->ctx);
}

static bool rd_done(cio__aop *a, ssize_t res)
{
    cio_transport_t *t = (cio_transport_t *)((char *)a - offsetof(cio_transport_t, rd));
    hold(t);
    t->in_rd = 1; /* a resume from a callback is answered by the return value */
    if (t->closing) {
        /* Nothing more is delivered once closing; a failure still ends the
         * flush (-ECANCELED is the stopped receive itself). */
        if (res < 0 && res != -ECANCELED && res != -EBADF)
            fail(t, (int)res);
    } else if (res >= 0 && !t->reading && !t->bp && a->op.len) {
        /* Paused while io_uring held the receive: keep it for resume. */
        t->held = (size_t)res;
        t->held_eof = res == 0;
    } else if (res > 0) {
        got_data(t, (size_t)res);
    } else if (res == 0 && a->op.len == 0) {
        fail(t, -ENOMEM); /* no buffer could be had */
    } else if (res == 0) {
        got_eof(t);
    } else {
        fail(t, (int)res);
    }
    if (!t->bp && !cio__loop_completes(t->loop) && !t->held)
        drop_rbuf(t);
    t->in_rd = 0;
    bool again = t->reading && !t->closed;
    maybe_lost(t);
    unhold(t);
    return again;
}

static void start_reading(cio_transport_t *t)
{
    /* Still under way (or its stopped io_uring receive is), or called from
     * inside rd_done, whose return value restarts it. */
    if (cio__aop_busy(&t->rd) || t->in_rd)
        return;
    ssize_t r = cio__aop_start(&t->rd, false);
    if (r != -EINPROGRESS)
        fail(t, r < 0 ? (int)r : -EIO);
}

int cio_transport_pause_reading(cio_transport_t *t)
{
    if (!t)
        return -EINVAL;
    if (t->closing)
        return -ESHUTDOWN;
    t->reading = 0;
    cio_handle_cancel(&t->resume_h); /* held bytes wait for the next resume */
    /* On io_uring the receive under way is left to complete (its bytes are
     * kept for the resume); only the next one is not started. */
    if (!cio__loop_completes(t->loop))
        cio__aop_stop(&t->rd);
    return 0;
}

/* From the loop after a resume: hands over what arrived while paused, then
 * reads on. */
static void deliver_held(void *arg)
{
    cio_transport_t *t = arg;
    if (t->closing || !t->reading)
        return; /* paused again: kept for the next resume */
    size_t n = t->held;
    bool eof = t->held_eof;
    t->held = 0;
    t->held_eof = 0;
    hold(t);
    if (eof)
        got_eof(t);
    else
        got_data(t, n);
    if (t->reading && !t->closing)
        start_reading(t);
    unhold(t);
}

int cio_transport_resume_reading(cio_transport_t *t)
{
    if (!t)
        return -EINVAL;
    if (t->closing)
        return -ESHUTDOWN;
    if (t->reading || t->eof_rcvd)
        return 0;
    t->reading = 1;
    if (t->held || t->held_eof)
        cio_call_soon(t->loop, &t->resume_h, deliver_held, t);
    else
        start_reading(t);
    return 0;
}

bool cio_transport_is_reading(const cio_transport_t *t)
{
    return t && t->reading;
}

/* ------------------------------------------------------------------------ */
/* Writing                                                                    */
/* ------------------------------------------------------------------------ */

/* Room for n more bytes at the tail of the chain: 0 or -ENOMEM. */
static int reserve(cio_transport_t *t, size_t n)
{
    chunk *tail = t->wtail;
    if (tail && tail->cap - tail->end >= n)
        return 0;
    chunk *c = chunk_new(t, n);
    if (!c)
        return -ENOMEM;
    if (tail)
        tail->next = c;
    else
        t->whead = c;
    t->wtail = c;
    return 0;
}

/* Copies n bytes to the tail reserved for them. */
static void append(cio_transport_t *t, const void *data, size_t n)
{
    chunk *c = t->wtail;
    memcpy(c->data + c->end, data, n);
    c->end += n;
    t->wsize += n;
}

/* Drops an empty tail chunk that a reserve made for a write the socket took
 * whole. */
static void unreserve(cio_transport_t *t)
{
    chunk *c = t->wtail;
    if (!c || c->end != c->start || cio__aop_busy(&t->wr))
        return;
    if (t->whead == c) {
        t->whead = t->wtail = NULL;
    } else {
        chunk *p = t->whead;
        while (p->next != c)
            p = p->next;
        p->next = NULL;
        t->wtail = p;
    }
    chunk_free(t, c);
}

static void wr_prepare(cio__aop *a)
{
    cio_transport_t *t = (cio_transport_t *)((char *)a - offsetof(cio_transport_t, wr));
    chunk *c = t->whead;
    a->op.buf = c->data + c->start;
    a->op.len = c->end - c->start;
}

static void check_resume(cio_transport_t *t)
{
    if (t->wpaused && t->wsize <= t->low) {
        t->wpaused = 0;
        if (t->detached)
            return;
        if (t->bp)
            t->bp->resume_writing(t->ctx);
        else if (t->proto->resume_writing)
            t->proto->resume_writing(t, t->ctx);
    }
}

static void check_pause(cio_transport_t *t)
{
    if (!t->wpaused && t->wsize > t->high) {
        t->wpaused = 1;
        if (t->detached)
            return;
        if (t->bp) {
            if (t->bp->pause_writing)
                t->bp->pause_writing(t->ctx);
        } else if (t->proto->pause_writing)
            t->proto->pause_writing(t, t->ctx);
    }
}

/* Everything queued was sent: a pending write_eof or close goes ahead. */
static void flushed(cio_transport_t *t)
{
    if (t->eof_asked && !t->eof_sent && !t->closed) {
        t->eof_sent = 1;
        /* A pipe has no half-close: its reader sees EOF once the write end
         * is closed, which ends the transport (a write end reads nothing). */
        if (t->pipe == CIO__PIPE_WRITE) {
            finish(t, 0);
            return;
        }
        if (shutdown(t->fd, SHUT_WR) && errno != ENOTCONN)
            fail(t, -errno);
    }
    if (t->closing && !t->closed)
        finish(t, 0);
    else if (!t->detached && t->bp && t->bp->flushed)
        t->bp->flushed(t->ctx);
}

/* Takes n sent bytes off the head of the chain; an emptied chain gives its
 * memory back, so an idle connection holds none. */
static void consume(cio_transport_t *t, size_t n)
{
    t->wsize -= n;
    while (n) {
        chunk *c = t->whead;
        size_t k = c->end - c->start < n ? c->end - c->start : n;
        c->start += k;
        n -= k;
        if (c->start == c->end && c->next) {
            t->whead = c->next;
            chunk_free(t, c);
        }
    }
    if (!t->wsize)
        free_chunks(t);
}

static bool wr_done(cio__aop *a, ssize_t res)
{
    cio_transport_t *t = (cio_transport_t *)((char *)a - offsetof(cio_transport_t, wr));
    hold(t);
    t->in_wr = 1; /* writes from resume_writing: answered by the return value */
    if (t->closed) {
        free_chunks(t);
    } else if (res < 0) {
        fail(t, (int)res);
    } else {
        consume(t, (size_t)res);
        check_resume(t);
        if (!t->wsize)
            flushed(t);
    }
    t->in_wr = 0;
    bool again = !t->closed && t->wsize > 0;
    maybe_lost(t);
    unhold(t);
    return again;
}

/* Starts the sending operation for what is queued. */
static void start_writing(cio_transport_t *t)
{
    if (cio__aop_busy(&t->wr) || t->in_wr || !t->wsize)
        return;
    ssize_t r = cio__aop_start(&t->wr, false);
    if (r != -EINPROGRESS)
        fail(t, r < 0 ? (int)r : -EIO);
}

static int write_check(cio_transport_t *t, size_t n)
{
    if (t->pipe == CIO__PIPE_READ)
        return -EBADF; /* the read end of a pipe: write(2)'s own error */
    if (t->closed && t->err != -ESHUTDOWN)
        return t->err;
    if (t->closing || t->eof_asked)
        return -ESHUTDOWN;
    if (n > t->limit - t->wsize)
        return -ENOBUFS;
    return 0;
}

/* Sends what the socket takes now: the count sent, or a negative errno
 * (the connection is failed then). Only with nothing queued, so bytes go out
 * in order. */
static ssize_t send_now(cio_transport_t *t, const struct iovec *iov, int iovcnt)
{
    if (t->wsize || cio__aop_busy(&t->wr))
        return 0;
    struct msghdr msg = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt};
    cio__op op = {.code = iovcnt == 1 ? CIO__OP_SEND : CIO__OP_SENDMSG, .fd = t->fd,
                  .buf = iov[0].iov_base, .len = iov[0].iov_len, .msg = &msg,
                  .iov = iov, .iovcnt = iovcnt, .offset = -1};
    if (t->pipe) /* send(2) is for sockets only: ENOTSOCK on a pipe */
        op.code = iovcnt == 1 ? CIO__OP_WRITE : CIO__OP_WRITEV;
    ssize_t r = cio__op_try(&op);
    if (r == -EAGAIN)
        return 0;
    if (r < 0)
        fail(t, (int)r);
    return r;
}

int cio_transport_writev(cio_transport_t *t, const struct iovec *iov, int iovcnt)
{
    if (!t || (!iov && iovcnt) || iovcnt < 0 || iovcnt > IOV_MAX)
        return -EINVAL;
    size_t total = 0;
    for (int i = 0; i < iovcnt; i++) {
        if (!iov[i].iov_base && iov[i].iov_len)
            return -EINVAL;
        if (iov[i].iov_len > SIZE_MAX - total)
            return -ENOBUFS;
        total += iov[i].iov_len;
    }
    int rc = write_check(t, total);
    if (rc || !total)
        return rc;
    /* Reserve before sending: once part is sent, the rest must be queued,
     * so running out of memory can only happen before anything went out. */
    if ((rc = reserve(t, total)))
        return rc;
    ssize_t sent = send_now(t, iov, iovcnt);
    if (sent < 0) {
        unreserve(t);
        return (int)sent;
    }
    size_t skip = (size_t)sent;
    for (int i = 0; i < iovcnt; i++) {
        size_t len = iov[i].iov_len;
        if (skip >= len) {
            skip -= len;
            continue;
        }
        append(t, (const char *)iov[i].iov_base + skip, len - skip);
        skip = 0;
    }
    unreserve(t);
    if (t->wsize) {
        check_pause(t);
        start_writing(t);
    }
    return t->closed && t->err != -ESHUTDOWN ? t->err : 0;
}

int cio_transport_write(cio_transport_t *t, const void *data, size_t n)
{
    if (!data && n)
        return -EINVAL;
    struct iovec iov = {.iov_base = (void *)data, .iov_len = n};
    return cio_transport_writev(t, &iov, 1);
}

int cio_transport_write_eof(cio_transport_t *t)
{
    if (!t)
        return -EINVAL;
    if (t->pipe == CIO__PIPE_READ)
        return -EBADF;
    if (t->closed && t->err != -ESHUTDOWN)
        return t->err;
    if (t->closing || t->eof_asked)
        return -ESHUTDOWN;
    t->eof_asked = 1;
    if (!t->wsize)
        flushed(t);
    return t->closed && t->err != -ESHUTDOWN ? t->err : 0;
}

size_t cio_transport_get_write_buffer_size(const cio_transport_t *t)
{
    return t ? t->wsize : 0;
}

int cio_transport_set_write_buffer_limits(cio_transport_t *t, size_t high, size_t low)
{
    if (!t)
        return -EINVAL;
    if (!high)
        high = DEF_HIGH;
    if (low > high || high > t->limit)
        return -EINVAL;
    t->high = high;
    t->low = low;
    check_pause(t);
    check_resume(t);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Closing                                                                    */
/* ------------------------------------------------------------------------ */

void cio_transport_close(cio_transport_t *t)
{
    if (!t || t->closing)
        return;
    t->closing = 1;
    t->reading = 0;
    cio__aop_stop(&t->rd);
    if (!t->wsize)
        finish(t, 0);
}

void cio_transport_abort(cio_transport_t *t)
{
    if (!t || t->closed)
        return;
    finish(t, 0);
}

bool cio_transport_is_closing(const cio_transport_t *t)
{
    return t && t->closing;
}

/* ------------------------------------------------------------------------ */
/* Creation and queries                                                       */
/* ------------------------------------------------------------------------ */

static void obj_describe(cio__netobj *o, FILE *out)
{
    cio_transport_t *t = (cio_transport_t *)o;
    fprintf(out, "fd %d, %zu byte(s) queued%s", t->fd, t->wsize,
            t->closing ? ", closing" : "");
}

/* At loop close: released with no more callbacks. */
static void obj_abort(cio__netobj *o)
{
    cio_transport_t *t = (cio_transport_t *)o;
    cio__net_remove(t->net, o);
    t->detached = 1;
    finish(t, 0);
    cio_handle_cancel(&t->lost_h);
    t->lost_sched = t->lost_called = 1;
    maybe_free(t);
}

static int create(cio_transport_t **out, cio_loop_t *loop, int fd, const cio_transport_opts_t *opts,
                  int pipe)
{
    cio_transport_opts_t o;
    int rc = cio__transport_opts(opts, &o);
    cio__net *net = rc ? NULL : cio__net_get(loop);
    cio_transport_t *t = net ? cio__calloc(1, sizeof(*t)) : NULL;
    int fl = t ? fcntl(fd, F_GETFL) : 0;
    if (!rc && t && (fl < 0 || (!(fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl | O_NONBLOCK))))
        rc = -errno;
    if (rc || !t) {
        cio__free(t);
        cio__close_fd(loop, fd);
        return rc ? rc : -ENOMEM;
    }
    t->loop = loop;
    t->net = net;
    t->fd = fd;
    t->read_size = o.read_size;
    t->high = o.high_water;
    t->low = o.low_water;
    t->limit = o.write_limit;
    t->reading = 1;
    t->obj.kind = "transport";
    t->obj.describe = obj_describe;
    t->obj.abort = obj_abort;
    /* Pipes are read and written with read(2)/write(2) (recv/send fail
     * with ENOTSOCK on them); sockets keep recv/send for MSG_NOSIGNAL. */
    t->pipe = (uint8_t)pipe;
    cio__aop_init(&t->rd, loop, pipe ? CIO__OP_READ : CIO__OP_RECV, fd, rd_prepare, rd_done);
    cio__aop_init(&t->wr, loop, pipe ? CIO__OP_WRITE : CIO__OP_SEND, fd, wr_prepare, wr_done);
    cio__net_add(net, &t->obj);
    *out = t;
    return 0;
}

int cio_transport_new(cio_transport_t **out, int fd, const cio_protocol_t *proto, void *ctx,
                      const cio_transport_opts_t *opts)
{
    if (out)
        *out = NULL;
    cio_loop_t *loop = cio__net_loop();
    if (!out || !proto || !proto->data_received || fd < 0 || proto->reserved_[0] ||
        proto->reserved_[1] || !loop) {
        if (fd >= 0)
            loop ? (void)cio__close_fd(loop, fd) : (void)close(fd);
        return loop ? -EINVAL : -EPERM;
    }
    cio_transport_t *t;
    int rc = create(&t, loop, fd, opts, CIO__PIPE_NONE);
    if (rc)
        return rc;
    t->proto = proto;
    t->ctx = ctx;
    *out = t;
    hold(t);
    if (proto->connection_made)
        proto->connection_made(t, ctx);
    if (t->reading && !t->closing)
        start_reading(t);
    unhold(t);
    return 0;
}

int cio__transport_new_buffered(cio_transport_t **out, cio_loop_t *loop, int fd,
                                const cio__bufproto *bp, void *ctx,
                                const cio_transport_opts_t *opts, int pipe)
{
    int rc = create(out, loop, fd, opts, pipe);
    if (rc)
        return rc;
    cio_transport_t *t = *out;
    t->bp = bp;
    t->ctx = ctx;
    /* Its stream is on the loop's list and releases it at the loop's
     * close: listed too, the transport could be released first. */
    cio__net_remove(t->net, &t->obj);
    if (pipe == CIO__PIPE_WRITE) {
        /* The write end of a pipe never reads: the protocol hears EOF at
         * once (reads return 0) and the transport stays open for writing.
         * A reader that goes away shows as EPIPE on the next write. */
        t->reading = 0;
        t->eof_rcvd = 1;
        bp->eof_received(ctx);
        return 0;
    }
    start_reading(t);
    return 0;
}

void cio__transport_detach(cio_transport_t *t, void *buf, size_t cap)
{
    t->detached = 1;
    t->orphan = buf;
    t->orphan_cap = cap;
    if (t->bp && !t->obj.next) {
        /* On its own from now on (it may still be flushing): on the loop's
         * list, so that the loop's close releases it. */
        t->obj.kind = "transport";
        cio__net_add(t->net, &t->obj);
    }
}

int cio__transport_error(const cio_transport_t *t)
{
    return t->closed ? t->err : 0;
}

bool cio__transport_write_paused(const cio_transport_t *t)
{
    return t->wpaused;
}

size_t cio__transport_write_room(const cio_transport_t *t)
{
    return t->limit > t->wsize ? t->limit - t->wsize : 0;
}

bool cio__transport_receiving(const cio_transport_t *t)
{
    return t->rd.state == CIO__AOP_SUBMITTED;
}

void cio__transport_on_gone(cio_transport_t *t, void (*fn)(void *), void *arg)
{
    t->gone_fn = fn;
    t->gone_arg = arg;
}

int cio_transport_fd(const cio_transport_t *t)
{
    return t ? t->fd : -EINVAL;
}

static int addr_of(const cio_transport_t *t, struct sockaddr *addr, socklen_t *len, bool peer)
{
    if (!t || !addr || !len)
        return -EINVAL;
    if (t->fd < 0)
        return -EBADF;
    int r = peer ? getpeername(t->fd, addr, len) : getsockname(t->fd, addr, len);
    return r ? -errno : 0;
}

int cio_transport_peername(const cio_transport_t *t, struct sockaddr *addr, socklen_t *len)
{
    return addr_of(t, addr, len, true);
}

int cio_transport_sockname(const cio_transport_t *t, struct sockaddr *addr, socklen_t *len)
{
    return addr_of(t, addr, len, false);
}
