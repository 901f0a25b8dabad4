/*
 * Shared helpers of the networking tests (test_stream.c, test_server.c,
 * test_net_faults.c): real sockets on 127.0.0.1, ::1 and Unix paths, no
 * mocks. "The peer" of a stream under test is a raw socket driven with the
 * operation layer (cio_sock_*), so that a test controls exactly when bytes
 * move and when the peer reads.
 *
 * Every test runs its main task on a loop in debug mode; when the task has
 * returned, the loop is closed with stderr captured, and the test fails if
 * the loop reports a network object (stream, transport, server) or an fd
 * watcher still open: every test must clean up what it opened. Under ASan
 * the forked test process also fails on a leak.
 */
#ifndef CIO_NET_TEST_H
#define CIO_NET_TEST_H

#include "cio_test.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>

typedef union addr {
    struct sockaddr sa;
    struct sockaddr_in in;
    struct sockaddr_in6 in6;
    struct sockaddr_un un;
    struct sockaddr_storage ss;
} addr_t;

/* 1 MiB, the unit of the bulk tests. */
#define MIB ((size_t)1 << 20)

/* The default read_size of transports and streams (cio.h: 64 KiB): what
 * one receive may add to a stream's buffer. */
#define CIO__TEST_READ_SIZE ((size_t)65536)

/* ------------------------------------------------------------------------ */
/* Running a test                                                            */
/* ------------------------------------------------------------------------ */

/*
 * Runs fn(arg) as a task on a new loop in debug mode until it finishes and
 * asserts that it returned 0. Then closes the loop with stderr captured: it
 * refuses (and the test fails) while a task is unfinished, and the test
 * fails if the loop reports anything still open.
 */
static inline void run_net(cio_task_fn fn, void *arg)
{
    cio_loop_t *l = new_loop();
    cio_loop_set_debug(l, true);
    /* Bulk pattern checks run inside task steps: no slow-step noise. */
    cio_loop_set_slow_callback_duration(l, 60.0);
    cio_task_t *t = NULL;
    ck_assert_int_eq(cio_spawn_ex(&t, l, fn, arg, NULL), 0);
    ck_assert_int_eq(cio_loop_run_until_complete(l, t, NULL), 0);
    cio_future_release(t);
    capture_t cap;
    capture_begin(&cap);
    int rc = cio_loop_close(l);
    char *out = capture_end(&cap);
    ck_assert_msg(rc == 0, "cio_loop_close: %d; stderr:\n%s", rc, out);
    ck_assert_msg(strstr(out, "still open") == NULL && strstr(out, "still registered") == NULL,
                  "the test left network objects open:\n%s", out);
    free(out);
    ck_assert_int_eq(cio_loop_free(l), 0);
}

/* Elapsed loop time since t0 (ns). */
static inline int64_t since(int64_t t0)
{
    return loop_ns() - t0;
}

/* Waits (polling the loop every millisecond, for at most HANG_BOUND_S) until
 * pred(arg) holds; the test fails if it never does. */
static inline void wait_until(bool (*pred)(void *), void *arg, const char *what)
{
    double end = mono_now() + HANG_BOUND_S;
    while (!pred(arg)) {
        ck_assert_msg(mono_now() < end, "timed out waiting for %s", what);
        ck_assert_int_eq(cio_sleep(0.001), 0);
    }
}

static inline bool buffered_at_least_pred(void *arg)
{
    void **a = arg;
    return cio_stream_buffered(a[0]) >= *(size_t *)a[1];
}

/* Waits until the stream has received at least n bytes not yet read. */
static inline void wait_buffered(cio_stream_t *s, size_t n)
{
    void *a[2] = {s, &n};
    wait_until(buffered_at_least_pred, a, "bytes to arrive in the stream");
}

/* ------------------------------------------------------------------------ */
/* Sockets                                                                   */
/* ------------------------------------------------------------------------ */

static inline void set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    ck_assert_int_ge(fl, 0);
    ck_assert_int_eq(fcntl(fd, F_SETFL, fl | O_NONBLOCK), 0);
}

static inline bool fd_is_open(int fd)
{
    return fcntl(fd, F_GETFD) >= 0;
}

static inline bool is_nonblock_cloexec(int fd)
{
    int fl = fcntl(fd, F_GETFL), fdf = fcntl(fd, F_GETFD);
    ck_assert_int_ge(fl, 0);
    ck_assert_int_ge(fdf, 0);
    return (fl & O_NONBLOCK) && (fdf & FD_CLOEXEC);
}

/* A TCP socket listening on the loopback address of family on a free
 * port (its address in *a), or a negative errno (no IPv6 here). */
static inline int loopback_listener(int family, int backlog, addr_t *a, socklen_t *alen)
{
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    memset(a, 0, sizeof *a);
    if (family == AF_INET) {
        a->in.sin_family = AF_INET;
        a->in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        *alen = sizeof a->in;
    } else {
        int one = 1;
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
        a->in6.sin6_family = AF_INET6;
        a->in6.sin6_addr = in6addr_loopback;
        *alen = sizeof a->in6;
    }
    if (bind(fd, &a->sa, *alen) || listen(fd, backlog)) {
        int e = -errno;
        close(fd);
        return e;
    }
    ck_assert_int_eq(getsockname(fd, &a->sa, alen), 0);
    return fd;
}

static inline int addr_port(const addr_t *a)
{
    return ntohs(a->sa.sa_family == AF_INET ? a->in.sin_port : a->in6.sin6_port);
}

/*
 * A connected TCP pair on 127.0.0.1, both ends non-blocking and
 * close-on-exec: sv[0] the connecting end, sv[1] the accepted one. The
 * blocking connect and accept on loopback complete at once.
 */
static inline void tcp_pair(int sv[2])
{
    addr_t a;
    socklen_t alen;
    int l = loopback_listener(AF_INET, 1, &a, &alen);
    ck_assert_int_ge(l, 0);
    int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(c, 0);
    ck_assert_int_eq(connect(c, &a.sa, alen), 0);
    int s = accept4(l, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    ck_assert_int_ge(s, 0);
    close(l);
    set_nonblock(c);
    sv[0] = c;
    sv[1] = s;
}

static inline void unix_pair(int sv[2])
{
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
}

/* kind 0: TCP on loopback; 1: a Unix socketpair. */
static inline void sock_pair(int kind, int sv[2])
{
    if (kind == 0)
        tcp_pair(sv);
    else
        unix_pair(sv);
}

/*
 * A small kernel send buffer on the writing side, so that output queues up
 * in the transport after some 100-200 KiB (this one plus the peer's
 * receive buffer) rather than a few MiB. The receiving side keeps its
 * default: a receive buffer shrunk after the connection is set up makes
 * Linux stall on loopback (a window below one MSS: the sender falls back
 * to zero-window probes with backoff).
 */
static inline void small_sndbuf(int fd)
{
    int v = 16384;
    ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &v, sizeof v), 0);
}

/* Makes the next close of fd send a reset (RST) instead of a FIN. */
static inline void linger0(int fd)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
}

/* A stream over sv[0] of a new pair; *peer is the raw other end. */
static inline cio_stream_t *stream_pair(int kind, int *peer, const cio_stream_opts_t *o)
{
    int sv[2];
    sock_pair(kind, sv);
    cio_stream_t *s = NOT_SET;
    ck_assert_int_eq(cio_stream_new(&s, sv[0], o), 0);
    ck_assert_ptr_nonnull(s);
    ck_assert_ptr_ne(s, NOT_SET);
    *peer = sv[1];
    return s;
}

/* A stream over TCP whose output queues after some 100 KiB: a small
 * kernel send buffer, the peer not reading. *peer is the raw other end. */
static inline cio_stream_t *slow_stream(int *peer, const cio_stream_opts_t *o)
{
    int sv[2];
    tcp_pair(sv);
    small_sndbuf(sv[0]);
    cio_stream_t *s = NULL;
    ck_assert_int_eq(cio_stream_new(&s, sv[0], o), 0);
    *peer = sv[1];
    return s;
}

/* The number of open descriptors of this process. */
static inline int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    ck_assert_ptr_nonnull(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += e->d_name[0] != '.';
    closedir(d);
    return n - 1; /* the directory's own */
}

/* ------------------------------------------------------------------------ */
/* Data                                                                       */
/* ------------------------------------------------------------------------ */

/* A byte of a position-dependent pattern with no short period. */
static inline unsigned char pat(size_t i)
{
    uint32_t x = (uint32_t)i * 2654435761u;
    return (unsigned char)((x >> 24) ^ (x >> 11) ^ (uint32_t)(i >> 16));
}

static inline unsigned char *pattern_buf(size_t at, size_t len)
{
    unsigned char *b = malloc(len ? len : 1);
    ck_assert_ptr_nonnull(b);
    for (size_t i = 0; i < len; i++)
        b[i] = pat(at + i);
    return b;
}

/* Index of the first byte of buf (at stream offset `at`) off the pattern, or -1. */
static inline long pattern_mismatch(const void *buf, size_t len, size_t at)
{
    const unsigned char *b = buf;
    for (size_t i = 0; i < len; i++)
        if (b[i] != pat(at + i))
            return (long)i;
    return -1;
}

/* ------------------------------------------------------------------------ */
/* The peer                                                                   */
/* ------------------------------------------------------------------------ */

/* cio_sock_recv until len bytes came: len, or what the failing call
 * returned (0 at end of stream, with the count so far in *got). */
static inline ssize_t peer_recv_exact(int fd, void *buf, size_t len)
{
    size_t got = 0;
    while (got < len) {
        ssize_t r = cio_sock_recv(fd, (char *)buf + got, len - got, 0);
        if (r <= 0)
            return r;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

static inline void peer_send(int fd, const void *buf, size_t len)
{
    size_t sent = 0;
    ck_assert_int_eq(cio_sock_sendall(fd, buf, len, 0, &sent), 0);
    ck_assert_uint_eq(sent, len);
}

static inline void peer_send_str(int fd, const char *s)
{
    peer_send(fd, s, strlen(s));
}

/*
 * A task that reads fd until `want` bytes came (SIZE_MAX: until the end of
 * the stream), after `delay` seconds, `chunk` bytes at a time (0: 64 KiB),
 * checking them against the pattern from offset `at` when `check` is set.
 */
typedef struct peer_reader {
    int fd;
    size_t want, at, chunk;
    double delay;
    bool check;
    /* results */
    size_t got;
    ssize_t end;    /* what the last receive returned: 0 EOF, < 0 error, > 0 stopped at want */
    long bad;       /* offset of the first byte off the pattern, or -1 */
    int done;
    int64_t end_ns; /* loop time when it stopped */
} peer_reader;

static inline void peer_reader_init(peer_reader *r, int fd, size_t want, size_t at, bool check)
{
    memset(r, 0, sizeof *r);
    r->fd = fd;
    r->want = want;
    r->at = at;
    r->check = check;
    r->bad = -1;
}

static inline int peer_reader_body(void *arg, void **result)
{
    (void)result;
    peer_reader *r = arg;
    if (r->delay > 0 && cio_sleep(r->delay)) {
        r->done = 1;
        return 0;
    }
    size_t chunk = r->chunk ? r->chunk : 65536;
    unsigned char *buf = malloc(chunk);
    ck_assert_ptr_nonnull(buf);
    for (;;) {
        size_t n = chunk;
        if (r->want != SIZE_MAX && r->want - r->got < n)
            n = r->want - r->got;
        if (n == 0) {
            r->end = 1;
            break;
        }
        ssize_t k = cio_sock_recv(r->fd, buf, n, 0);
        if (k <= 0) {
            r->end = k;
            break;
        }
        if (r->check && r->bad < 0) {
            long m = pattern_mismatch(buf, (size_t)k, r->at + r->got);
            if (m >= 0)
                r->bad = (long)r->got + m;
        }
        r->got += (size_t)k;
    }
    free(buf);
    r->end_ns = loop_ns();
    r->done = 1;
    return 0;
}

/* A task that sends len bytes of buf on fd after delay seconds, then
 * (shut_wr) shuts down its writing side. */
typedef struct peer_sender {
    int fd;
    const void *buf;
    size_t len;
    double delay;
    bool shut_wr;
    int rc;
    int done;
} peer_sender;

static inline int peer_sender_body(void *arg, void **result)
{
    (void)result;
    peer_sender *p = arg;
    p->rc = p->delay > 0 ? cio_sleep(p->delay) : 0;
    if (!p->rc)
        p->rc = cio_sock_sendall(p->fd, p->buf, p->len, 0, NULL);
    if (!p->rc && p->shut_wr)
        p->rc = shutdown(p->fd, SHUT_WR) ? -errno : 0;
    p->done = 1;
    return 0;
}

static inline cio_task_t *spawn_sender(peer_sender *p, int fd, const void *buf, size_t len,
                                       double delay, bool shut_wr)
{
    *p = (peer_sender){.fd = fd, .buf = buf, .len = len, .delay = delay, .shut_wr = shut_wr,
                       .rc = 12345};
    return spawn(peer_sender_body, p);
}

/* Fills fd's outgoing kernel buffer until it takes no more; returns how
 * much it took. */
static inline size_t fill_fd(int fd)
{
    static char buf[65536];
    memset(buf, 'F', sizeof buf);
    size_t total = 0;
    for (size_t sz = sizeof buf; sz; sz /= 16) {
        for (;;) {
            ssize_t n = send(fd, buf, sz, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (n < 0) {
                ck_assert_msg(errno == EAGAIN, "fill: %s", strerror(errno));
                break;
            }
            total += (size_t)n;
        }
    }
    return total;
}

/* The write buffer of a stream's transport. */
static inline size_t wbuf(cio_stream_t *s)
{
    cio_transport_t *t = cio_stream_transport(s);
    ck_assert_ptr_nonnull(t);
    return cio_transport_get_write_buffer_size(t);
}

#endif /* CIO_NET_TEST_H */
