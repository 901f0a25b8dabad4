/*
 * Streams: asyncio's StreamReader and StreamWriter as one object over a
 * transport in its buffered form. The transport receives straight into the
 * stream's buffer (no copy between them); reads take bytes out of it and
 * consume them only when a call succeeds, so a cancelled or timed-out read
 * loses nothing. Reading pauses while the buffer holds `limit` bytes (or
 * what the running call asked for, when more), so a peer that sends faster
 * than the task reads is held back by TCP, not by memory.
 *
 * The buffer is taken from the loop's cache when bytes arrive and given
 * back once they are all read (unless a receive is under way into it, on
 * io_uring): an idle stream holds no buffer.
 */
#include "net.h"


struct cio_stream {
    cio__netobj obj;
    cio_transport_t *t;       /* NULL once the connection is gone */
    cio_loop_t *loop;
    cio__net *net;
    char *buf;
    size_t start, end, cap;
    size_t limit, read_size;
    size_t want;              /* the running call's own limit (0: none) */
    double close_timeout;     /* how long close may flush, seconds */
    cio__waiter *reader;      /* the task waiting for bytes */
    cio_waitq_t drainers;     /* tasks in drain */
    cio_waitq_t flushers;     /* a task in close, waiting for the flush */
    int busy;                 /* tasks inside calls on the stream */
    int err;                  /* the connection's error, once lost */
    uint8_t eof, lost, closed, held, released, rpaused, reading;
};

static void stream_free(cio_stream_t *s);

/* ------------------------------------------------------------------------ */
/* The buffered protocol                                                      */
/* ------------------------------------------------------------------------ */

static size_t threshold(const cio_stream_t *s)
{
    return s->want > s->limit ? s->want : s->limit;
}

static void release_buf(cio_stream_t *s)
{
    if (s->cap == CIO__NET_BUF)
        cio__net_buf_put(s->net, s->buf);
    else
        cio__free(s->buf);
    s->buf = NULL;
    s->start = s->end = s->cap = 0;
}

/* Makes room for a receive at the end of the buffer: moves the unread bytes
 * to the front, or grows the buffer up to what the threshold needs. */
static void *get_buffer(void *ctx, size_t *len)
{
    cio_stream_t *s = ctx;
    if (!s->buf) {
        s->buf = cio__net_buf_get(s->net);
        if (!s->buf)
            return NULL;
        s->cap = CIO__NET_BUF;
    }
    size_t used = s->end - s->start;
    if (s->start && s->cap - s->end < s->read_size) {
        memmove(s->buf, s->buf + s->start, used);
        s->start = 0;
        s->end = used;
    }
    size_t need = threshold(s) + s->read_size;
    if (s->cap - s->end < s->read_size && s->cap < need) {
        size_t cap = s->cap;
        while (cap < need && cap - s->end < s->read_size)
            cap *= 2;
        char *nb = cio__malloc(cap);
        if (!nb && s->cap == s->end)
            return NULL;
        if (nb) {
            memcpy(nb, s->buf + s->start, used);
            release_buf(s);
            s->buf = nb;
            s->cap = cap;
            s->end = used;
        }
    }
    size_t room = s->cap - s->end;
    *len = room < s->read_size ? room : s->read_size;
    return s->buf + s->end;
}

static void wake_reader(cio_stream_t *s, int result)
{
    cio__waiter *w = s->reader;
    if (w) {
        s->reader = NULL;
        cio__wake(w, result);
    }
}

static void buffer_updated(void *ctx, size_t n)
{
    cio_stream_t *s = ctx;
    s->end += n;
    if (s->end - s->start >= threshold(s) && !s->rpaused) {
        s->rpaused = 1;
        cio_transport_pause_reading(s->t);
    }
    wake_reader(s, 0);
}

static bool eof_received(void *ctx)
{
    cio_stream_t *s = ctx;
    s->eof = 1;
    wake_reader(s, 0);
    return true; /* the writing side stays open: the task closes it */
}

static void lost(void *ctx, int err)
{
    cio_stream_t *s = ctx;
    s->t = NULL;
    s->lost = 1;
    s->err = err;
    wake_reader(s, 0);
    cio__waitq_wake_all(&s->drainers, 0);
    cio__waitq_wake_all(&s->flushers, 0);
}

static void resume_writing(void *ctx)
{
    cio_stream_t *s = ctx;
    cio__waitq_wake_all(&s->drainers, 0);
}

static void flushed(void *ctx)
{
    cio_stream_t *s = ctx;
    cio__waitq_wake_all(&s->flushers, 0);
}

static const cio__bufproto stream_proto = {
    .get_buffer = get_buffer,
    .buffer_updated = buffer_updated,
    .eof_received = eof_received,
    .lost = lost,
    .pause_writing = NULL, /* drain looks at the transport's state */
    .resume_writing = resume_writing,
    .flushed = flushed,
};

/* ------------------------------------------------------------------------ */
/* Entering and leaving calls                                                 */
/* ------------------------------------------------------------------------ */

/* The connection's error as calls report it once it is gone: the kernel's,
 * or -ESHUTDOWN after a close of ours. */
static int conn_error(const cio_stream_t *s)
{
    if (s->err)
        return s->err;
    return s->t ? cio__transport_error(s->t) : -ESHUTDOWN;
}

static int enter(cio_stream_t *s, cio__coro **c)
{
    if (!s)
        return -EINVAL;
    if (!(*c = cio__current))
        return -EPERM;
    if (s->closed)
        return -ESHUTDOWN;
    int rc = cio__check_cancel(*c);
    if (rc)
        return rc;
    s->busy++;
    return 0;
}

static void leave(cio_stream_t *s)
{
    if (--s->busy == 0 && s->released)
        stream_free(s);
}

static void reader_unlink(cio__waiter *w)
{
    cio_stream_t *s = (cio_stream_t *)w->obj;
    if (s->reader == w)
        s->reader = NULL;
}

/* Bytes taken out: the buffer goes back to the cache once empty (unless a
 * receive is writing into it), and reading resumes below the threshold. */
static void consumed(cio_stream_t *s, size_t n)
{
    s->start += n;
    /* A receive the kernel holds (io_uring) writes at the old end: the
     * offsets stay until it completed (get_buffer compacts then). */
    if (s->start == s->end && !(s->t && cio__transport_receiving(s->t))) {
        s->start = s->end = 0;
        if (s->buf)
            release_buf(s);
    }
}

static void resume_if_room(cio_stream_t *s)
{
    if (s->rpaused && s->end - s->start < threshold(s) && s->t) {
        s->rpaused = 0;
        cio_transport_resume_reading(s->t);
    }
}

/* Waits for more bytes (or EOF, loss, close): 0 or the interruption. */
static int wait_data(cio__coro *c, cio_stream_t *s)
{
    resume_if_room(s);
    cio__waiter w;
    cio__waiter_init(&w, c, "stream read", s, reader_unlink);
    s->reader = &w;
    int rc = cio__wait(&w, CIO__NO_DEADLINE);
    if (s->reader == &w)
        s->reader = NULL;
    return rc;
}

/* No more bytes will come: EOF, or the connection ended. */
static bool ended(const cio_stream_t *s)
{
    return s->eof || s->lost;
}

/* What a read at the end reports: EOF (0) or the connection's error. */
static int end_code(const cio_stream_t *s)
{
    return s->lost && s->err && s->err != -ESHUTDOWN ? s->err : 0;
}

static int begin_read(cio_stream_t *s, cio__coro **c)
{
    int rc = enter(s, c);
    if (rc)
        return rc;
    if (s->reading) {
        leave(s);
        return -EBUSY;
    }
    s->reading = 1;
    return 0;
}

static void end_read(cio_stream_t *s)
{
    s->reading = 0;
    s->want = 0;
    resume_if_room(s);
    leave(s);
}

/* ------------------------------------------------------------------------ */
/* Reading                                                                    */
/* ------------------------------------------------------------------------ */

ssize_t cio_stream_read(cio_stream_t *s, void *buf, size_t n)
{
    if (!buf && n)
        return -EINVAL;
    cio__coro *c;
    int rc = begin_read(s, &c);
    if (rc)
        return rc;
    ssize_t r;
    for (;;) {
        size_t avail = s->end - s->start;
        if (avail || !n) {
            size_t k = avail < n ? avail : n;
            if (k)
                memcpy(buf, s->buf + s->start, k);
            consumed(s, k);
            r = (ssize_t)k;
            break;
        }
        if (ended(s)) {
            r = end_code(s);
            break;
        }
        if ((rc = wait_data(c, s))) {
            r = rc;
            break;
        }
        if (s->closed) {
            r = -ESHUTDOWN;
            break;
        }
    }
    end_read(s);
    return r;
}

ssize_t cio_stream_readexactly(cio_stream_t *s, void *buf, size_t n, size_t *got)
{
    if (got)
        *got = 0;
    if (!buf && n)
        return -EINVAL;
    cio__coro *c;
    int rc = begin_read(s, &c);
    if (rc)
        return rc;
    s->want = n;
    ssize_t r;
    for (;;) {
        size_t avail = s->end - s->start;
        if (avail < n && ended(s) && end_code(s)) {
            r = end_code(s); /* a lost connection: nothing consumed */
            break;
        }
        if (avail >= n || ended(s)) {
            size_t k = avail < n ? avail : n;
            if (k)
                memcpy(buf, s->buf + s->start, k);
            consumed(s, k);
            if (got)
                *got = k;
            r = k == n ? (ssize_t)n : -ENODATA;
            break;
        }
        if ((rc = wait_data(c, s)) || s->closed) {
            r = rc ? rc : -ESHUTDOWN;
            break;
        }
    }
    end_read(s);
    return r;
}

/* The offset of sep in data[from..n), or -1. */
static ssize_t find(const char *data, size_t n, size_t from, const void *sep, size_t seplen)
{
    if (n < seplen)
        return -1;
    const char *first = sep;
    for (size_t i = from; i + seplen <= n; i++) {
        const char *p = memchr(data + i, *first, n - seplen + 1 - i);
        if (!p)
            return -1;
        i = (size_t)(p - data);
        if (!memcmp(p, sep, seplen))
            return (ssize_t)i;
    }
    return -1;
}

ssize_t cio_stream_readuntil(cio_stream_t *s, const void *sep, size_t seplen, void *buf,
                             size_t cap, size_t *got)
{
    if (got)
        *got = 0;
    if (!sep || !seplen || (!buf && cap))
        return -EINVAL;
    cio__coro *c;
    int rc = begin_read(s, &c);
    if (rc)
        return rc;
    size_t lim = cap < s->limit ? cap : s->limit;
    size_t from = 0;
    ssize_t r;
    for (;;) {
        size_t avail = s->end - s->start;
        ssize_t at = find(s->buf + s->start, avail < lim ? avail : lim, from, sep, seplen);
        if (at >= 0) {
            size_t k = (size_t)at + seplen;
            memcpy(buf, s->buf + s->start, k);
            consumed(s, k);
            r = (ssize_t)k;
            break;
        }
        if (avail >= lim) {
            r = -EOVERFLOW; /* nothing consumed: the bytes stay readable */
            break;
        }
        if (ended(s) && end_code(s)) {
            r = end_code(s); /* a lost connection: nothing consumed */
            break;
        }
        if (ended(s)) {
            if (avail)
                memcpy(buf, s->buf + s->start, avail);
            consumed(s, avail);
            if (got)
                *got = avail;
            r = -ENODATA;
            break;
        }
        from = avail >= seplen ? avail - seplen + 1 : 0;
        if ((rc = wait_data(c, s)) || s->closed) {
            r = rc ? rc : -ESHUTDOWN;
            break;
        }
    }
    end_read(s);
    return r;
}

ssize_t cio_stream_readline(cio_stream_t *s, void *buf, size_t cap)
{
    size_t got = 0;
    ssize_t r = cio_stream_readuntil(s, "\n", 1, buf, cap, &got);
    return r == -ENODATA ? (ssize_t)got : r;
}

ssize_t cio_stream_parse(cio_stream_t *s, cio_stream_parse_fn fn, void *arg, size_t limit)
{
    if (!fn)
        return -EINVAL;
    cio__coro *c;
    int rc = begin_read(s, &c);
    if (rc)
        return rc;
    if (!limit)
        limit = s->limit;
    s->want = limit;
    ssize_t r;
    for (;;) {
        size_t avail = s->end - s->start;
        bool eof = ended(s);
        if (avail || eof) {
            r = fn(arg, s->buf ? s->buf + s->start : "", avail, eof);
            if (r > 0) {
                consumed(s, (size_t)r > avail ? avail : (size_t)r);
                break;
            }
            if (r < 0)
                break;
            if (eof) {
                r = end_code(s) ? end_code(s) : -ENODATA;
                break;
            }
            if (avail >= limit) {
                r = -EOVERFLOW;
                break;
            }
        }
        if ((rc = wait_data(c, s)) || s->closed) {
            r = rc ? rc : -ESHUTDOWN;
            break;
        }
    }
    end_read(s);
    return r;
}

int cio_stream_read_all(cio_stream_t *s, char **out, size_t *len, size_t max)
{
    if (!out || !len)
        return -EINVAL;
    *out = NULL;
    *len = 0;
    cio__coro *c;
    int rc = begin_read(s, &c);
    if (rc)
        return rc;
    /* Nothing is consumed before EOF, so a cancel loses nothing: the bytes
     * wait in the stream's buffer, which may grow to max. */
    s->want = max ? max : SIZE_MAX / 4;
    for (;;) {
        size_t avail = s->end - s->start;
        if (ended(s) || (max && avail > max)) {
            rc = !ended(s) || !end_code(s) ? 0 : end_code(s);
            size_t k = max && avail > max ? max : avail;
            if (rc)
                break;
            char *p = cio__malloc(k + 1);
            if (!p) {
                rc = -ENOMEM;
                break;
            }
            memcpy(p, s->buf ? s->buf + s->start : "", k);
            p[k] = 0;
            consumed(s, k);
            if (k) {
                *out = p;
                *len = k;
            } else {
                cio__free(p); /* nothing was read: *out stays NULL */
            }
            rc = k < avail ? -ENOBUFS : 0;
            break;
        }
        if ((rc = wait_data(c, s)) || s->closed) {
            rc = rc ? rc : -ESHUTDOWN;
            break;
        }
    }
    end_read(s);
    return rc;
}

bool cio_stream_at_eof(const cio_stream_t *s)
{
    return s && ended(s) && s->start == s->end;
}

size_t cio_stream_buffered(const cio_stream_t *s)
{
    return s ? s->end - s->start : 0;
}

/* ------------------------------------------------------------------------ */
/* Writing                                                                    */
/* ------------------------------------------------------------------------ */

int cio_stream_writev(cio_stream_t *s, const struct iovec *iov, int iovcnt)
{
    if (!s)
        return -EINVAL;
    if (s->closed)
        return -ESHUTDOWN;
    if (!s->t)
        return conn_error(s);
    return cio_transport_writev(s->t, iov, iovcnt);
}

int cio_stream_write(cio_stream_t *s, const void *data, size_t n)
{
    if (!data && n)
        return -EINVAL;
    struct iovec iov = {.iov_base = (void *)data, .iov_len = n};
    return cio_stream_writev(s, &iov, 1);
}

int cio_stream_drain(cio_stream_t *s)
{
    cio__coro *c;
    int rc = enter(s, &c);
    if (rc)
        return rc;
    while (s->t && cio__transport_write_paused(s->t) && !s->closed) {
        cio__waiter w;
        cio__waiter_init(&w, c, "stream drain", s, cio__wlist_unlink);
        cio__wlist_push(&s->drainers, &w);
        if ((rc = cio__wait(&w, CIO__NO_DEADLINE)))
            break;
    }
    if (!rc && s->closed)
        rc = -ESHUTDOWN;
    else if (!rc && !s->t)
        rc = conn_error(s);
    else if (!rc && cio__transport_error(s->t))
        rc = cio__transport_error(s->t);
    leave(s);
    return rc;
}

int cio_stream_write_eof(cio_stream_t *s)
{
    if (!s)
        return -EINVAL;
    if (s->closed)
        return -ESHUTDOWN;
    return s->t ? cio_transport_write_eof(s->t) : conn_error(s);
}

cio_transport_t *cio_stream_transport(cio_stream_t *s)
{
    return s ? s->t : NULL;
}

/* ------------------------------------------------------------------------ */
/* Closing                                                                    */
/* ------------------------------------------------------------------------ */

static void stream_free(cio_stream_t *s)
{
    cio__net_remove(s->net, &s->obj);
    if (s->buf)
        release_buf(s);
    cio__free(s);
}

/* Marks s closed and wakes every task inside a call on it (-ESHUTDOWN). */
static void mark_closed(cio_stream_t *s)
{
    s->closed = 1;
    wake_reader(s, -ESHUTDOWN);
    cio__waitq_wake_all(&s->drainers, -ESHUTDOWN);
}

/* Lets the transport go: it finishes (or is aborted) on its own. A receive
 * the kernel still holds (io_uring) may write into the buffer, so the
 * transport takes the buffer along and frees it once that completed. */
static void drop_transport(cio_stream_t *s, bool flush_it)
{
    cio_transport_t *t = s->t;
    if (!t)
        return;
    s->t = NULL;
    if (cio__transport_receiving(t) && s->buf) {
        cio__transport_detach(t, s->buf, s->cap);
        s->buf = NULL;
        s->start = s->end = s->cap = 0;
    } else {
        cio__transport_detach(t, NULL, 0);
    }
    /* Detached, the transport never calls lost: a task inside close,
     * waiting for the flush, would otherwise wait out close_timeout. */
    cio__waitq_wake_all(&s->flushers, -ESHUTDOWN);
    if (flush_it)
        cio_transport_close(t);
    else
        cio_transport_abort(t);
}

/* Waits until everything queued was sent, the deadline passes, or the
 * connection is lost. Returns 0, -ETIMEDOUT, -ECANCELED, or the error. */
static int flush(cio__coro *c, cio_stream_t *s)
{
    int64_t deadline;
    if (cio__deadline_after(s->close_timeout, &deadline))
        deadline = CIO__NO_DEADLINE;
    while (s->t && cio_transport_get_write_buffer_size(s->t) && !cio__transport_error(s->t)) {
        cio__waiter w;
        cio__waiter_init(&w, c, "stream close", s, cio__wlist_unlink);
        cio__wlist_push(&s->flushers, &w);
        int rc = cio__wait(&w, deadline);
        if (rc)
            return rc == CIO__OWN_DEADLINE ? -ETIMEDOUT : rc;
    }
    return 0;
}

/* Releases s now or, while tasks are inside calls on it, when the last one
 * leaves. */
static void release(cio_stream_t *s)
{
    s->released = 1;
    if (!s->busy)
        stream_free(s);
}

/* Flushes and closes the connection of s from task c: the close result. */
static int close_conn(cio__coro *c, cio_stream_t *s)
{
    int rc = s->t ? flush(c, s) : 0;
    if (!rc && s->lost && s->err && s->err != -ESHUTDOWN)
        rc = s->err;
    if (!rc && s->t && cio__transport_error(s->t) && cio__transport_error(s->t) != -ESHUTDOWN)
        rc = cio__transport_error(s->t);
    drop_transport(s, rc == 0);
    return rc;
}

int cio_stream_close(cio_stream_t *s)
{
    if (!s)
        return 0;
    cio__coro *c = cio__current;
    if (!c) {
        cio_stream_abort(s);
        return 0;
    }
    if (s->closed && !s->t) {
        if (!s->held)
            release(s);
        return s->held ? 0 : -ESHUTDOWN;
    }
    mark_closed(s);
    s->busy++;
    int rc = close_conn(c, s);
    s->busy--;
    if (!s->held)
        release(s);
    return rc;
}

void cio_stream_abort(cio_stream_t *s)
{
    if (!s)
        return;
    mark_closed(s);
    drop_transport(s, false);
    if (!s->held)
        release(s);
}

/* ------------------------------------------------------------------------ */
/* Creation                                                                   */
/* ------------------------------------------------------------------------ */

static void obj_describe(cio__netobj *o, FILE *out)
{
    cio_stream_t *s = (cio_stream_t *)o;
    fprintf(out, "fd %d, %zu byte(s) unread, %zu byte(s) queued", s->t ? cio_transport_fd(s->t) : -1,
            s->end - s->start, s->t ? cio_transport_get_write_buffer_size(s->t) : 0);
}

static void obj_abort(cio__netobj *o)
{
    cio_stream_t *s = (cio_stream_t *)o;
    cio__net_remove(s->net, o);
    mark_closed(s);
    drop_transport(s, false);
    stream_free(s);
}

static int create(cio_stream_t **out, cio_loop_t *loop, int fd, const cio_stream_opts_t *opts,
                  bool held, int pipe)
{
    cio_stream_opts_t o;
    int rc = cio__transport_opts(opts, &o);
    cio__net *net = rc ? NULL : cio__net_get(loop);
    cio_stream_t *s = net ? cio__calloc(1, sizeof(*s)) : NULL;
    if (!s) {
        cio__close_fd(loop, fd);
        return rc ? rc : -ENOMEM;
    }
    s->loop = loop;
    s->net = net;
    s->limit = o.limit;
    s->read_size = o.read_size < CIO__NET_BUF ? o.read_size : CIO__NET_BUF;
    s->close_timeout = o.close_timeout;
    s->held = held;
    s->obj.kind = "stream";
    s->obj.describe = obj_describe;
    s->obj.abort = obj_abort;
    rc = cio__transport_new_buffered(&s->t, loop, fd, &stream_proto, s, &o, pipe);
    if (rc) {
        cio__free(s);
        return rc;
    }
    cio__net_add(net, &s->obj);
    *out = s;
    return 0;
}

int cio_stream_new(cio_stream_t **out, int fd, const cio_stream_opts_t *opts)
{
    if (out)
        *out = NULL;
    cio_loop_t *loop = cio__net_loop();
    if (!out || fd < 0 || !loop) {
        if (fd >= 0)
            cio__close_fd(loop, fd);
        return loop ? -EINVAL : -EPERM;
    }
    return create(out, loop, fd, opts, false, CIO__PIPE_NONE);
}

int cio__stream_new_held(cio_stream_t **out, cio_loop_t *loop, int fd,
                         const cio_stream_opts_t *opts)
{
    return create(out, loop, fd, opts, true, CIO__PIPE_NONE);
}

int cio__stream_new_pipe(cio_stream_t **out, cio_loop_t *loop, int fd, int pipe,
                         const cio_stream_opts_t *opts)
{
    return create(out, loop, fd, opts, true, pipe);
}

void cio__stream_shutdown(cio_stream_t *s, bool flush_it)
{
    mark_closed(s);
    if (s->t) {
        if (flush_it)
            cio_transport_close(s->t);
        else
            drop_transport(s, false);
    }
}

void cio__stream_release(cio_stream_t *s)
{
    cio__coro *c = cio__current;
    s->held = 0;
    mark_closed(s);
    if (c && s->t) {
        s->busy++;
        close_conn(c, s);
        s->busy--;
    }
    drop_transport(s, false);
    release(s);
}

int cio__stream_can_read(const cio_stream_t *s)
{
    if (s->closed)
        return -ESHUTDOWN;
    return s->reading ? -EBUSY : 0;
}

size_t cio__stream_write_room(const cio_stream_t *s)
{
    return s->closed || !s->t ? 0 : cio__transport_write_room(s->t);
}

int cio__stream_wait_flushed(cio_stream_t *s)
{
    cio__coro *c;
    int rc = enter(s, &c);
    if (rc)
        return rc;
    while (!rc && s->t && cio_transport_get_write_buffer_size(s->t) && !s->closed &&
           !cio__transport_error(s->t)) {
        cio__waiter w;
        cio__waiter_init(&w, c, "stream flush", s, cio__wlist_unlink);
        cio__wlist_push(&s->flushers, &w);
        rc = cio__wait(&w, CIO__NO_DEADLINE);
    }
    if (!rc && s->closed)
        rc = -ESHUTDOWN;
    else if (!rc && !s->t)
        rc = conn_error(s);
    else if (!rc)
        rc = cio__transport_error(s->t);
    leave(s);
    return rc;
}
