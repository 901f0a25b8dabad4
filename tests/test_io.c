/*
 * The operation layer (io.c) on both backends: socket, pipe and file I/O as
 * await points; cancellation and deadlines at each of them, with the cancel
 * safety documented in cio.h (what has, and has not, happened when a call
 * returns -ECANCELED or -ETIMEDOUT); cio_wait_fd; cio_close; SIGPIPE;
 * argument errors; and the choice of backend.
 *
 * The program runs twice under CTest (CIO_BACKEND=epoll and =uring); where
 * the documented behaviour differs by backend, a test branches on
 * cio_loop_backend(). All traffic stays on the machine: socketpairs, pipes,
 * 127.0.0.1 / ::1 and unlinked temporary files.
 *
 * Raw system calls (send, recv, write with MSG_DONTWAIT / non-blocking fds)
 * stand for "the peer" where a test must control exactly when bytes move;
 * they never block.
 */
#include "cio_test.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#if defined(__has_include)
#if __has_include(<linux/io_uring.h>)
#include <linux/io_uring.h>
#endif
#endif

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */
/* ------------------------------------------------------------------------ */

typedef union addr {
    struct sockaddr sa;
    struct sockaddr_in in;
    struct sockaddr_in6 in6;
    struct sockaddr_storage ss;
} addr_t;

static void close_loop(cio_loop_t *l)
{
    close_free(l);
}

/*
 * Runs fn(arg) as a task on a new loop (its backend from CIO_BACKEND) until
 * it finishes and asserts that it returned 0. The loop is then closed and
 * freed, which it refuses while a task is unfinished or a task or future is
 * still referenced: so nothing a test started is left over.
 */
static void run_task_on(cio_loop_t *l, cio_task_fn fn, void *arg)
{
    cio_task_t *t;
    ck_assert_int_eq(cio_spawn_ex(&t, l, fn, arg, NULL), 0);
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(cio_loop_run_until_complete(l, t, NULL), 0);
    cio_future_release(t);
}

static void run_task(cio_task_fn fn, void *arg)
{
    cio_loop_t *l = new_loop();
    run_task_on(l, fn, arg);
    close_loop(l);
}

/* True when the running loop completes operations (io_uring). */
static bool on_uring(void)
{
    cio_loop_t *l = cio_get_running_loop();
    ck_assert_ptr_nonnull(l);
    const char *name = cio_loop_backend(l);
    ck_assert_ptr_nonnull(name);
    return strcmp(name, "io_uring") == 0;
}

/* True if this kernel gives io_uring with the features cio needs. */
static bool kernel_has_uring(void)
{
#if !defined(IORING_FEAT_EXT_ARG) || !defined(__NR_io_uring_setup)
    return false; /* headers too old to ask: treat as absent */
#else
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    long fd = syscall(__NR_io_uring_setup, 4, &p);
    if (fd < 0)
        return false;
    close((int)fd);
    return (p.features & IORING_FEAT_EXT_ARG) != 0;
#endif
}

static void make_pair(int sv[2])
{
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
}

static void make_pipe(int p[2])
{
    ck_assert_int_eq(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
}

static void xclose(int fd)
{
    ck_assert_int_eq(cio_close(fd), 0);
}

/* A byte of a position-dependent pattern with no short period. */
static unsigned char pat(size_t i)
{
    uint32_t x = (uint32_t)i * 2654435761u;
    return (unsigned char)((x >> 24) ^ (x >> 11) ^ (uint32_t)(i >> 16));
}

static unsigned char *pattern_buf(size_t len)
{
    unsigned char *b = malloc(len);
    ck_assert_ptr_nonnull(b);
    for (size_t i = 0; i < len; i++)
        b[i] = pat(i);
    return b;
}

/* Index of the first byte of buf (at stream offset `at`) off the pattern, or -1. */
static long pattern_mismatch(const unsigned char *buf, size_t len, size_t at)
{
    for (size_t i = 0; i < len; i++)
        if (buf[i] != pat(at + i))
            return (long)i;
    return -1;
}

/* Fills fd's outgoing buffer (socket or pipe) with 'F' bytes until the
 * kernel takes no more; returns how many it took. */
static size_t fill_fd(int fd)
{
    static const size_t sizes[] = {65536, 4096, 256, 1};
    static char buf[65536];
    memset(buf, 'F', sizeof buf);
    size_t total = 0;
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        for (;;) {
            ssize_t n = write(fd, buf, sizes[k]);
            if (n < 0) {
                ck_assert_msg(errno == EAGAIN, "fill: %s", strerror(errno));
                break;
            }
            total += (size_t)n;
        }
    }
    ck_assert_uint_gt(total, 0);
    return total;
}

/* Reads fd (non-blocking) until it has nothing more; every byte must be
 * `expect` (when not 0). Returns the count. */
static size_t drain_fd(int fd, char expect)
{
    static char buf[65536];
    size_t total = 0;
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0) {
            ck_assert_msg(errno == EAGAIN, "drain: %s", strerror(errno));
            break;
        }
        if (n == 0)
            break;
        for (ssize_t i = 0; expect && i < n; i++)
            ck_assert_int_eq(buf[i], expect);
        total += (size_t)n;
    }
    return total;
}

/* cio_sock_recv until len bytes came; returns len, or what the failing
 * call returned (0 at end of stream). */
static ssize_t recv_exact(int fd, void *buf, size_t len)
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

static bool is_nonblock_cloexec(int fd)
{
    int fl = fcntl(fd, F_GETFL), fdf = fcntl(fd, F_GETFD);
    ck_assert_int_ge(fl, 0);
    ck_assert_int_ge(fdf, 0);
    return (fl & O_NONBLOCK) && (fdf & FD_CLOEXEC);
}

static bool fd_is_open(int fd)
{
    return fcntl(fd, F_GETFD) >= 0;
}

/* A socket of `family` bound to the loopback address on a free port, the
 * address stored in *a. listening (with `backlog`) if backlog >= 0. Returns
 * the fd or a negative errno (no IPv6 here, for instance). */
static int bound_socket(int family, int type, int backlog, addr_t *a, socklen_t *alen)
{
    int fd = cio_socket(family, type, 0);
    if (fd < 0)
        return fd;
    memset(a, 0, sizeof *a);
    if (family == AF_INET) {
        a->in.sin_family = AF_INET;
        a->in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        *alen = sizeof a->in;
    } else {
        a->in6.sin6_family = AF_INET6;
        a->in6.sin6_addr = in6addr_loopback;
        *alen = sizeof a->in6;
    }
    if (bind(fd, &a->sa, *alen)) {
        int e = -errno;
        close(fd);
        return e;
    }
    if (backlog >= 0)
        ck_assert_int_eq(listen(fd, backlog), 0);
    ck_assert_int_eq(getsockname(fd, &a->sa, alen), 0);
    return fd;
}

struct acceptor {
    int lfd;
    int fd;
    addr_t peer;
    socklen_t plen;
};

static int acceptor_body(void *arg, void **result)
{
    (void)result;
    struct acceptor *a = arg;
    a->plen = sizeof a->peer;
    a->fd = cio_sock_accept(a->lfd, &a->peer.sa, &a->plen);
    return a->fd < 0 ? a->fd : 0;
}

/* From a task: a connected TCP pair on loopback, made with cio_sock_accept
 * and cio_sock_connect. fds[0] connected, fds[1] accepted. */
static void tcp_pair(int family, int fds[2])
{
    addr_t la;
    socklen_t llen;
    int lfd = bound_socket(family, SOCK_STREAM, 8, &la, &llen);
    ck_assert_int_ge(lfd, 0);
    struct acceptor a = {.lfd = lfd, .fd = -1};
    cio_task_t *t = spawn(acceptor_body, &a);
    int c = cio_socket(family, SOCK_STREAM, 0);
    ck_assert_int_ge(c, 0);
    ck_assert_int_eq(cio_sock_connect(c, &la.sa, llen), 0);
    ck_assert_int_eq(finish(t), 0);
    ck_assert_int_ge(a.fd, 0);
    xclose(lfd);
    fds[0] = c;
    fds[1] = a.fd;
}

/* Elapsed loop time since t0 (ns). */
static int64_t since(int64_t t0)
{
    return loop_ns() - t0;
}

/* ------------------------------------------------------------------------ */
/* 1. Stream sockets: ping-pong, scatter, recvmsg/sendmsg                    */
/* ------------------------------------------------------------------------ */

#define PP_ROUNDS 200
#define PP_MSG 16

static void fmt_msg(char out[PP_MSG], const char *tag, int i)
{
    char tmp[PP_MSG + 1];
    snprintf(tmp, sizeof tmp, "%s %011d", tag, i);
    memcpy(out, tmp, PP_MSG);
}

struct pingpong {
    int fd;
    int rounds;
    ssize_t eof;
};

static int pp_server(void *arg, void **result)
{
    (void)result;
    struct pingpong *p = arg;
    for (int i = 0; i < PP_ROUNDS; i++) {
        char in[PP_MSG], want[PP_MSG], out[PP_MSG];
        ck_assert_int_eq(recv_exact(p->fd, in, PP_MSG), PP_MSG);
        fmt_msg(want, "ping", i);
        ck_assert_mem_eq(in, want, PP_MSG);
        fmt_msg(out, "pong", i);
        ck_assert_int_eq(cio_sock_send(p->fd, out, PP_MSG, 0), PP_MSG);
        p->rounds++;
    }
    char c;
    p->eof = cio_sock_recv(p->fd, &c, 1, 0); /* the client closes its end */
    return 0;
}

static int pp_client(void *arg, void **result)
{
    (void)result;
    struct pingpong *p = arg;
    for (int i = 0; i < PP_ROUNDS; i++) {
        char out[PP_MSG], in[PP_MSG], want[PP_MSG];
        fmt_msg(out, "ping", i);
        ck_assert_int_eq(cio_sock_send(p->fd, out, PP_MSG, 0), PP_MSG);
        ck_assert_int_eq(recv_exact(p->fd, in, PP_MSG), PP_MSG);
        fmt_msg(want, "pong", i);
        ck_assert_mem_eq(in, want, PP_MSG);
        p->rounds++;
    }
    xclose(p->fd);
    return 0;
}

static int main_pingpong(void *arg, void **result)
{
    (void)arg;
    (void)result;
    int sv[2];
    make_pair(sv);
    struct pingpong s = {.fd = sv[0], .eof = 12345}, c = {.fd = sv[1]};
    cio_task_t *ts = spawn(pp_server, &s);
    cio_task_t *tc = spawn(pp_client, &c);
    ck_assert_int_eq(finish(tc), 0);
    ck_assert_int_eq(finish(ts), 0);
    ck_assert_int_eq(s.rounds, PP_ROUNDS);
    ck_assert_int_eq(c.rounds, PP_ROUNDS);
    ck_assert_int_eq(s.eof, 0);
    xclose(sv[0]);
    return 0;
}

START_TEST(io_socketpair_pingpong)
{
    run_task(main_pingpong, NULL);
}
END_TEST

struct scatter {
    int fd;
    char a[3], b[4], c[8];
    ssize_t rc;
    int done;
};

static int scatter_body(void *arg, void **result)
{
    (void)result;
    struct scatter *s = arg;
    struct iovec iov[3] = {{s->a, sizeof s->a}, {s->b, sizeof s->b}, {s->c, sizeof s->c}};
    s->rc = cio_sock_recv_into(s->fd, iov, 3, 0);
    s->done = 1;
    return 0;
}

static int main_recv_into(void *arg, void **result)
{
    (void)arg;
    (void)result;
    int sv[2];
    make_pair(sv);
    /* Data already there: spread over the three buffers in order. */
    struct scatter s = {.fd = sv[0]};
    memset(s.c, 'x', sizeof s.c);
    ck_assert_int_eq(send(sv[1], "0123456789", 10, 0), 10);
    struct iovec iov[3] = {{s.a, 3}, {s.b, 4}, {s.c, 8}};
    ck_assert_int_eq(cio_sock_recv_into(sv[0], iov, 3, 0), 10);
    ck_assert_mem_eq(s.a, "012", 3);
    ck_assert_mem_eq(s.b, "3456", 4);
    ck_assert_mem_eq(s.c, "789xxxxx", 8);

    /* No data yet: the task waits until the peer writes. */
    memset(&s, 0, sizeof s);
    s.fd = sv[0];
    cio_task_t *t = spawn(scatter_body, &s);
    settle();
    ck_assert(!s.done);
    ck_assert_int_eq(cio_sock_send(sv[1], "abcdefghijklmnopq", 17, 0), 17);
    ck_assert_int_eq(finish(t), 0);
    ck_assert_int_eq(s.rc, 15); /* 3 + 4 + 8: the rest stays queued */
    ck_assert_mem_eq(s.a, "abc", 3);
    ck_assert_mem_eq(s.b, "defg", 4);
    ck_assert_mem_eq(s.c, "hijklmno", 8);
    char rest[8];
    ck_assert_int_eq(cio_sock_recv(sv[0], rest, sizeof rest, 0), 2);
    ck_assert_mem_eq(rest, "pq", 2);

    /* MSG_PEEK passes through: the bytes stay. */
    ck_assert_int_eq(cio_sock_send(sv[1], "PEEK", 4, 0), 4);
    struct iovec one = {rest, sizeof rest};
    ck_assert_int_eq(cio_sock_recv_into(sv[0], &one, 1, MSG_PEEK), 4);
    ck_assert_int_eq(cio_sock_recv(sv[0], rest, sizeof rest, 0), 4);
    ck_assert_mem_eq(rest, "PEEK", 4);
    xclose(sv[0]);
    xclose(sv[1]);
    return 0;
}

START_TEST(io_recv_into_scatter)
{
    run_task(main_recv_into, NULL);
}
END_TEST

/* recvmsg / sendmsg with several buffers and an SCM_RIGHTS control message. */
struct msg_recv {
    int fd;
    char data[8];
    struct iovec iov;
    struct { /* aligned for a cmsghdr (a struct with a flexible array
                member cannot sit in the middle of a struct: clang refuses) */
        _Alignas(struct cmsghdr) char buf[CMSG_SPACE(sizeof(int))];
    } ctl;
    struct msghdr m;
    ssize_t rc;
};

static int msg_recv_body(void *arg, void **result)
{
    (void)result;
    struct msg_recv *r = arg;
    r->iov = (struct iovec){r->data, sizeof r->data};
    memset(&r->m, 0, sizeof r->m);
    r->m.msg_iov = &r->iov;
    r->m.msg_iovlen = 1;
    r->m.msg_control = r->ctl.buf;
    r->m.msg_controllen = sizeof r->ctl.buf;
    r->rc = cio_sock_recvmsg(r->fd, &r->m, MSG_CMSG_CLOEXEC);
    return 0;
}

static int main_msg(void *arg, void **result)
{
    (void)arg;
    (void)result;
    int sv[2], p[2];
    make_pair(sv);
    make_pipe(p);
    struct msg_recv r = {.fd = sv[1], .rc = 12345};
    cio_task_t *t = spawn(msg_recv_body, &r);
    settle();
    ck_assert_int_eq(r.rc, 12345); /* waiting */

    char h1[] = "he", h2[] = "llo";
    struct iovec out[2] = {{h1, 2}, {h2, 3}};
    struct {
        _Alignas(struct cmsghdr) char buf[CMSG_SPACE(sizeof(int))];
    } ctl;
    memset(&ctl, 0, sizeof ctl);
    struct msghdr m = {.msg_iov = out, .msg_iovlen = 2, .msg_control = ctl.buf,
                       .msg_controllen = sizeof ctl.buf};
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &p[0], sizeof(int));
    ck_assert_int_eq(cio_sock_sendmsg(sv[0], &m, 0), 5);
    ck_assert_int_eq(finish(t), 0);

    ck_assert_int_eq(r.rc, 5);
    ck_assert_mem_eq(r.data, "hello", 5);
    ck_assert_int_eq(r.m.msg_flags & (MSG_CTRUNC | MSG_TRUNC), 0);
    struct cmsghdr *rc = CMSG_FIRSTHDR(&r.m);
    ck_assert_ptr_nonnull(rc);
    ck_assert_int_eq(rc->cmsg_level, SOL_SOCKET);
    ck_assert_int_eq(rc->cmsg_type, SCM_RIGHTS);
    ck_assert_uint_eq(rc->cmsg_len, CMSG_LEN(sizeof(int)));
    int got;
    memcpy(&got, CMSG_DATA(rc), sizeof got);
    ck_assert_int_ge(got, 0);
    ck_assert_int_ne(got, p[0]);
    ck_assert(fcntl(got, F_GETFD) & FD_CLOEXEC); /* MSG_CMSG_CLOEXEC honoured */
    /* The received fd is the pipe's read end. */
    ck_assert_int_eq(cio_write(p[1], "xyz", 3), 3);
    char buf[4];
    ck_assert_int_eq(cio_read(got, buf, sizeof buf), 3);
    ck_assert_mem_eq(buf, "xyz", 3);
    xclose(got);
    xclose(p[0]);
    xclose(p[1]);
    xclose(sv[0]);
    xclose(sv[1]);
    return 0;
}

START_TEST(io_sendmsg_recvmsg_rights)
{
    run_task(main_msg, NULL);
}
END_TEST

/* readv / writev on a pipe: gather, scatter and order. */
static int main_readv_writev(void *arg, void **result)
{
    (void)arg;
    (void)result;
    int p[2];
    make_pipe(p);
    char a[] = "one-", b[] = "two-", c[] = "three";
    struct iovec w[3] = {{a, 4}, {b, 4}, {c, 5}};
    ck_assert_int_eq(cio_writev(p[1], w, 3), 13);
    char x[6], y[10];
    memset(y, '.', sizeof y);
    struct iovec r[2] = {{x, sizeof x}, {y, sizeof y}};
    ck_assert_int_eq(cio_readv(p[0], r, 2), 13);
    ck_assert_mem_eq(x, "one-tw", 6);
    ck_assert_mem_eq(y, "o-three..", 9);
    ck_assert_int_eq(cio_writev(p[1], w, 0), 0);
    xclose(p[0]);
    xclose(p[1]);
    return 0;
}

START_TEST(io_readv_writev_pipe)
{
    run_task(main_readv_writev, NULL);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* 2. sendall of 8 MiB to a slow reader                                      */
/* ------------------------------------------------------------------------ */

#define BIG ((size_t)8 << 20)

struct big {
    int wfd, rfd;
    unsigned char *buf;
    size_t sent;
    int send_rc;
    int writer_done;
    int writer_done_at_first_read;
    size_t received;
    long reads;
};

static int big_writer(void *arg, void **result)
{
    (void)result;
    struct big *b = arg;
    b->sent = 12345;
    b->send_rc = cio_sock_sendall(b->wfd, b->buf, BIG, 0, &b->sent);
    b->writer_done = 1;
    ck_assert_int_eq(shutdown(b->wfd, SHUT_WR), 0);
    return 0;
}

static int big_reader(void *arg, void **result)
{
    (void)result;
    struct big *b = arg;
    /* Start late, so that the writer fills the socket and has to wait. */
    ck_assert_int_eq(cio_sleep(D_SHORT), 0);
    b->writer_done_at_first_read = b->writer_done;
    size_t cap = 65536;
    unsigned char *chunk = malloc(cap);
    ck_assert_ptr_nonnull(chunk);
    for (;;) {
        ssize_t r = cio_sock_recv(b->rfd, chunk, cap, 0);
        ck_assert_int_ge(r, 0);
        if (r == 0)
            break;
        long bad = pattern_mismatch(chunk, (size_t)r, b->received);
        ck_assert_msg(bad < 0, "byte %zu out of order", b->received + (size_t)bad);
        b->received += (size_t)r;
        if (++b->reads % 16 == 0) /* slow: the writer keeps finding a full buffer */
            ck_assert_int_eq(cio_sleep(0.001), 0);
    }
    free(chunk);
    return 0;
}

static int main_sendall_big(void *arg, void **result)
{
    (void)result;
    int tcp = *(int *)arg;
    int fds[2];
    if (tcp)
        tcp_pair(AF_INET, fds);
    else
        make_pair(fds);
    struct big b = {.wfd = fds[0], .rfd = fds[1], .buf = pattern_buf(BIG)};
    cio_task_t *w = spawn(big_writer, &b);
    cio_task_t *r = spawn(big_reader, &b);
    ck_assert_int_eq(finish(w), 0);
    ck_assert_int_eq(finish(r), 0);
    ck_assert_int_eq(b.send_rc, 0);
    ck_assert_uint_eq(b.sent, BIG);
    ck_assert_uint_eq(b.received, BIG);
    ck_assert_int_eq(b.writer_done_at_first_read, 0);
    ck_assert_int_gt(b.reads, 1);
    free(b.buf);
    xclose(fds[0]);
    xclose(fds[1]);
    return 0;
}

START_TEST(io_sendall_big)
{
    int tcp = _i;
    run_task(main_sendall_big, &tcp);
}
END_TEST

static int main_sendall_zero(void *arg, void **result)
{
    (void)arg;
    (void)result;
    int sv[2];
    make_pair(sv);
    size_t sent = 12345;
    ck_assert_int_eq(cio_sock_sendall(sv[0], "", 0, 0, &sent), 0);
    ck_assert_uint_eq(sent, 0);
    size_t written = 12345;
    ck_assert_int_eq(cio_write_all(sv[0], "", 0, &written), 0);
    ck_assert_uint_eq(written, 0);
    ck_assert_int_eq(cio_sock_sendall(sv[0], "ab", 2, 0, NULL), 0);
    ck_assert_int_eq(cio_write_all(sv[0], "cd", 2, NULL), 0);
    char buf[8];
    ck_assert_int_eq(recv_exact(sv[1], buf, 4), 4);
    ck_assert_mem_eq(buf, "abcd", 4);
    xclose(sv[0]);
    xclose(sv[1]);
    return 0;
}

START_TEST(io_sendall_zero_and_null)
{
    run_task(main_sendall_zero, NULL);
}
END_TEST

/*
 * sendall cancelled midway (cio.h: "*sent bytes were sent", raced
 * completions included): whatever the backend, the peer receives exactly
 * *sent bytes, and they are the buffer's first *sent bytes.
 */
struct sa_cancel {
    int fd;
    unsigned char *buf;
    size_t len;
    double timeout; /* > 0: a deadline scope instead of a cancel */
    size_t sent;
    int rc;
    int scope_rc;
    int done;
};

static int sa_cancel_body(void *arg, void **result)
{
    (void)result;
    struct sa_cancel *s = arg;
    cio_scope_t sc;
    if (s->timeout > 0)
        ck_assert_int_eq(cio_scope_enter(&sc, s->timeout, 0), 0);
    s->sent = 12345678;
    s->rc = cio_sock_sendall(s->fd, s->buf, s->len, 0, &s->sent);
    if (s->timeout > 0)
        s->scope_rc = cio_scope_exit(&sc);
    s->done = 1;
    return s->rc;
}

static int main_sendall_cancel(void *arg, void **result)
{
    (void)result;
    bool deadline = *(int *)arg;
    int sv[2];
    make_pair(sv);
    struct sa_cancel s = {.fd = sv[0], .len = (size_t)4 << 20, .timeout = deadline ? D_SHORT : 0};
    s.buf = pattern_buf(s.len);
    cio_task_t *t = spawn(sa_cancel_body, &s);
    unsigned char *chunk = malloc(65536);
    ck_assert_ptr_nonnull(chunk);
    size_t got = 0;
    if (!deadline) {
        /* Read a little, so the writer makes progress (several sends, some
         * partial) and then waits on a full buffer. (With a deadline the
         * reader stays away: its reads could race the deadline.) */
        for (int i = 0; i < 4; i++) {
            settle();
            ssize_t n = recv(sv[1], chunk, 65536, MSG_DONTWAIT);
            ck_assert_int_gt(n, 0);
            ck_assert_int_lt(pattern_mismatch(chunk, (size_t)n, got), 0);
            got += (size_t)n;
        }
        ck_assert_int_eq(cio_task_cancel(t), 1);
    }
    ck_assert_int_eq(finish(t), deadline ? -ETIMEDOUT : -ECANCELED);
    ck_assert(s.done);
    ck_assert_int_eq(s.rc, deadline ? -ETIMEDOUT : -ECANCELED);
    if (deadline)
        ck_assert_int_eq(s.scope_rc, -ETIMEDOUT);
    ck_assert_uint_gt(s.sent, got);
    ck_assert_uint_lt(s.sent, s.len);
    /* Exactly *sent bytes reach the peer, in order. */
    for (;;) {
        ssize_t n = recv(sv[1], chunk, 65536, MSG_DONTWAIT);
        if (n < 0) {
            ck_assert_int_eq(errno, EAGAIN);
            break;
        }
        ck_assert_int_gt(n, 0);
        ck_assert_int_lt(pattern_mismatch(chunk, (size_t)n, got), 0);
        got += (size_t)n;
    }
    ck_assert_uint_eq(got, s.sent);
    free(chunk);
    free(s.buf);
    xclose(sv[0]);
    xclose(sv[1]);
    return 0;
}

START_TEST(io_sendall_cancel_counts)
{
    int deadline = _i;
    run_task(main_sendall_cancel, &deadline);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* 3. TCP: accept and connect                                                */
/* ------------------------------------------------------------------------ */

static int acceptor_noaddr_body(void *arg, void **result)
{
    (void)result;
    struct acceptor *a = arg;
    a->fd = cio_sock_accept(a->lfd, NULL, NULL);
    return a->fd < 0 ? a->fd : 0;
}

static int main_tcp(void *arg, void **result)
{
    (void)result;
    int family = *(int *)arg;
    addr_t la;
    socklen_t llen;
    int lfd = bound_socket(family, SOCK_STREAM, 8, &la, &llen);
    if (family == AF_INET6 && (lfd == -EAFNOSUPPORT || lfd == -EADDRNOTAVAIL))
        return 0; /* no IPv6 loopback on this machine: asserted by the caller */
    ck_assert_int_ge(lfd, 0);
    ck_assert(is_nonblock_cloexec(lfd)); /* cio_socket's flags */

    /* The acceptor waits until a client comes. */
    struct acceptor a = {.lfd = lfd, .fd = -1};
    cio_task_t *t = spawn(acceptor_body, &a);
    settle();
    ck_assert(!cio_future_done(t));
    int c = cio_socket(family, SOCK_STREAM, 0);
    ck_assert_int_ge(c, 0);
    ck_assert_int_eq(cio_sock_connect(c, &la.sa, llen), 0);
    ck_assert_int_eq(finish(t), 0);
    int s = a.fd;
    ck_assert_int_ge(s, 0);
    ck_assert(is_nonblock_cloexec(s));

    /* The accepted address is the client's own, and the client's peer is
     * the listener. */
    addr_t cl, cp;
    socklen_t cllen = sizeof cl, cplen = sizeof cp;
    ck_assert_int_eq(getsockname(c, &cl.sa, &cllen), 0);
    ck_assert_int_eq(getpeername(c, &cp.sa, &cplen), 0);
    ck_assert_uint_eq(a.plen, cllen);
    ck_assert_uint_eq(a.plen, family == AF_INET ? sizeof(struct sockaddr_in)
                                                : sizeof(struct sockaddr_in6));
    ck_assert_int_eq(a.peer.sa.sa_family, family);
    ck_assert_mem_eq(&a.peer, &cl, cllen);
    ck_assert_uint_eq(cplen, llen);
    ck_assert_mem_eq(&cp, &la, llen);

    /* Data both ways, then end of stream. */
    char buf[16];
    ck_assert_int_eq(cio_sock_sendall(c, "hello", 5, 0, NULL), 0);
    ck_assert_int_eq(recv_exact(s, buf, 5), 5);
    ck_assert_mem_eq(buf, "hello", 5);
    ck_assert_int_eq(cio_sock_send(s, "world!", 6, 0), 6);
    ck_assert_int_eq(recv_exact(c, buf, 6), 6);
    ck_assert_mem_eq(buf, "world!", 6);
    ck_assert_int_eq(shutdown(c, SHUT_WR), 0);
    ck_assert_int_eq(cio_sock_recv(s, buf, sizeof buf, 0), 0);

    /* A connection already queued is taken at once; no address asked. */
    int c2 = cio_socket(family, SOCK_STREAM, 0);
    ck_assert_int_ge(c2, 0);
    ck_assert_int_eq(cio_sock_connect(c2, &la.sa, llen), 0);
    struct acceptor a2 = {.lfd = lfd, .fd = -1};
    t = spawn(acceptor_noaddr_body, &a2);
    ck_assert_int_eq(finish(t), 0);
    ck_assert_int_ge(a2.fd, 0);
    ck_assert(is_nonblock_cloexec(a2.fd));
    ck_assert_int_eq(cio_sock_send(c2, "z", 1, 0), 1);
    ck_assert_int_eq(cio_sock_recv(a2.fd, buf, sizeof buf, 0), 1);
    ck_assert_int_eq(buf[0], 'z');

    xclose(a2.fd);
    xclose(c2);
    xclose(s);
    xclose(c);
    xclose(lfd);
    return 0;
}

START_TEST(io_tcp_accept_connect)
{
    int family = _i == 0 ? AF_INET : AF_INET6;
    if (family == AF_INET6) {
        /* Without an IPv6 loopback the test asserts why it had to stop. */
        addr_t a;
        socklen_t alen;
        int fd = bound_socket(AF_INET6, SOCK_STREAM, -1, &a, &alen);
        if (fd < 0) {
            ck_assert_msg(fd == -EAFNOSUPPORT || fd == -EADDRNOTAVAIL, "::1: %s",
                          strerror(-fd));
            return;
        }
        close(fd);
    }
    run_task(main_tcp, &family);
}
END_TEST

static int main_accept_errors(void *arg, void **result)
{
    (void)arg;
    (void)result;
    addr_t a;
    socklen_t alen = sizeof a;
    /* A socket that does not listen. */
    int fd = cio_socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(cio_sock_accept(fd, &a.sa, &alen), -EINVAL);
    /* Address without its length, or the reverse. */
    ck_assert_int_eq(cio_sock_accept(fd, &a.sa, NULL), -EINVAL);
    ck_assert_int_eq(cio_sock_accept(fd, NULL, &alen), -EINVAL);
    ck_assert_int_eq(cio_sock_accept(-1, NULL, NULL), -EBADF);
    /* Not a socket at all. */
    int p[2];
    make_pipe(p);
    ck_assert_int_eq(cio_sock_accept(p[0], NULL, NULL), -ENOTSOCK);
    xclose(p[0]);
    xclose(p[1]);
    xclose(fd);
    ck_assert_int_eq(cio_sock_connect(0, NULL, 0), -EINVAL);
    return 0;
}

START_TEST(io_accept_errors)
{
    run_task(main_accept_errors, NULL);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* 4. connect refused, connect deadline, recv deadline                        */
/* ------------------------------------------------------------------------ */

static int main_connect_refused(void *arg, void **result)
{
    (void)arg;
    (void)result;
    /* A port that is bound but does not listen answers SYN with RST. */
    addr_t a;
    socklen_t alen;
    int bound = bound_socket(AF_INET, SOCK_STREAM, -1, &a, &alen);
    ck_assert_int_ge(bound, 0);
    int c = cio_socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(c, 0);
    ck_assert_int_eq(cio_sock_connect(c, &a.sa, alen), -ECONNREFUSED);
    xclose(c);
    /* A Unix socket path nobody listens on. */
    c = cio_socket(AF_UNIX, SOCK_STREAM, 0);
    ck_assert_int_ge(c, 0);
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    snprintf(un.sun_path, sizeof un.sun_path, "/tmp/cio-test-io-none-%ld", (long)getpid());
    unlink(un.sun_path);
    ck_assert_int_eq(cio_sock_connect(c, (struct sockaddr *)&un, sizeof un), -ENOENT);
    xclose(c);
    xclose(bound);
    return 0;
}

START_TEST(io_connect_refused)
{
    run_task(main_connect_refused, NULL);
}
END_TEST

/*
 * A Unix socket whose listener's backlog is full: connect(2) on a
 * non-blocking socket fails with EAGAIN and starts nothing, so the call
 * returns -EAGAIN on both backends (it must not report a connection that
 * does not exist).
 */
static int main_unix_backlog(void *arg, void **result)
{
    (void)arg;
    (void)result;
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    snprintf(un.sun_path, sizeof un.sun_path, "/tmp/cio-test-io-full-%ld", (long)getpid());
    unlink(un.sun_path);
    int l = cio_socket(AF_UNIX, SOCK_STREAM, 0);
    ck_assert_int_ge(l, 0);
    ck_assert_int_eq(bind(l, (struct sockaddr *)&un, sizeof un), 0);
    ck_assert_int_eq(listen(l, 0), 0);
    /* Backlog 0 holds one connection. */
    int c1 = cio_socket(AF_UNIX, SOCK_STREAM, 0);
    ck_assert_int_ge(c1, 0);
    ck_assert_int_eq(cio_sock_connect(c1, (struct sockaddr *)&un, sizeof un), 0);
    int c2 = cio_socket(AF_UNIX, SOCK_STREAM, 0);
    ck_assert_int_ge(c2, 0);
    cio_scope_t s;
    ck_assert_int_eq(cio_scope_enter(&s, HANG_BOUND_S, 0), 0);
    ck_assert_int_eq(cio_sock_connect(c2, (struct sockaddr *)&un, sizeof un), -EAGAIN);
    ck_assert_int_eq(cio_scope_exit(&s), 0);
    struct sockaddr_un peer;
    socklen_t plen = sizeof peer;
    ck_assert_int_eq(getpeername(c2, (struct sockaddr *)&peer, &plen), -1);
    ck_assert_int_eq(errno, ENOTCONN);
    ck_assert_int_eq(cio_sock_send(c2, "x", 1, 0), -ENOTCONN);
    /* Once the queued connection is taken, a new attempt succeeds. */
    int a = cio_sock_accept(l, NULL, NULL);
    ck_assert_int_ge(a, 0);
    ck_assert_int_eq(cio_sock_connect(c2, (struct sockaddr *)&un, sizeof un), 0);
    ck_assert_int_eq(cio_sock_send(c2, "y", 1, 0), 1);
    int a2 = cio_sock_accept(l, NULL, NULL);
    ck_assert_int_ge(a2, 0);
    char ch;
    ck_assert_int_eq(cio_sock_recv(a2, &ch, 1, 0), 1);
    ck_assert_int_eq(ch, 'y');
    ck_assert_int_eq(unlink(un.sun_path), 0);
    xclose(a2);
    xclose(a);
    xclose(c2);
    xclose(c1);
    xclose(l);
    return 0;
}

START_TEST(io_connect_unix_backlog_full)
{
    run_task(main_unix_backlog, NULL);
}
END_TEST

/*
 * A listener whose accept queue is full: with backlog 1, Linux queues two
 * connections (it is full when more than `backlog` wait); the SYN of a third
 * is dropped, so that connect stays in progress (the next SYN goes out after
 * a 1 s retransmission timeout). Everything stays on loopback.
 */
struct full_listener {
    int lfd;
    addr_t a;
    socklen_t alen;
    int fillers[2];
};

static void full_listener_open(struct full_listener *f)
{
    f->lfd = bound_socket(AF_INET, SOCK_STREAM, 1, &f->a, &f->alen);
    ck_assert_int_ge(f->lfd, 0);
    for (int i = 0; i < 2; i++) {
        f->fillers[i] = cio_socket(AF_INET, SOCK_STREAM, 0);
        ck_assert_int_ge(f->fillers[i], 0);
        cio_scope_t s;
        ck_assert_int_eq(cio_scope_enter(&s, HANG_BOUND_S, 0), 0);
        ck_assert_int_eq(cio_sock_connect(f->fillers[i], &f->a.sa, f->alen), 0);
        ck_assert_int_eq(cio_scope_exit(&s), 0);
    }
}

static void full_listener_close(struct full_listener *f)
{
    for (int i = 0; i < 2; i++)
        xclose(f->fillers[i]);
    xclose(f->lfd);
}

static int main_connect_deadline(void *arg, void **result)
{
    (void)arg;
    (void)result;
    struct full_listener f;
    full_listener_open(&f);
    int c = cio_socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(c, 0);
    cio_scope_t s;
    int64_t t0 = loop_ns();
    ck_assert_int_eq(cio_scope_enter(&s, D_MED, 0), 0);
    ck_assert_int_eq(cio_sock_connect(c, &f.a.sa, f.alen), -ETIMEDOUT);
    ck_assert_int_eq(cio_scope_exit(&s), -ETIMEDOUT);
    int64_t dt = since(t0);
    ck_assert_int_ge(dt, NS_MED);
    ck_assert_int_lt(dt, (int64_t)(HANG_BOUND_S * 1e9));
    xclose(c);
    full_listener_close(&f);
    return 0;
}

START_TEST(io_connect_deadline)
{
    run_task(main_connect_deadline, NULL);
}
END_TEST

struct reader {
    int fd;
    char buf[64];
    ssize_t rc;
    int done;
};

static int pipe_reader_body(void *arg, void **result)
{
    (void)result;
    struct reader *r = arg;
    r->rc = cio_read(r->fd, r->buf, sizeof r->buf);
    r->done = 1;
    return r->rc < 0 ? (int)r->rc : 0;
}

static int main_recv_deadline(void *arg, void **result)
{
    (void)arg;
    (void)result;
    int sv[2];
    make_pair(sv);
    char buf[16];
    cio_scope_t s;
    int64_t t0 = loop_ns();
    ck_assert_int_eq(cio_scope_enter(&s, D_SHORT, 0), 0);
    ck_assert_int_eq(cio_sock_recv(sv[0], buf, sizeof buf, 0), -ETIMEDOUT);
    /* Every later await point in the expired scope reports it too. */
    ck_assert_int_eq(cio_sock_recv(sv[0], buf, sizeof buf, 0), -ETIMEDOUT);
    ck_assert_int_eq(cio_scope_exit(&s), -ETIMEDOUT);
    ck_assert_int_ge(since(t0), NS_SHORT);
    /* Nothing was consumed: what the peer sends now arrives whole. */
    ck_assert_int_eq(send(sv[1], "after", 5, 0), 5);
    ck_assert_int_eq(cio_sock_recv(sv[0], buf, sizeof buf, 0), 5);
    ck_assert_mem_eq(buf, "after", 5);

    /* cio_wait_for on a task blocked in cio_read: the task is cancelled,
     * its read returns -ECANCELED, the waiter gets -ETIMEDOUT. */
    int p[2];
    make_pipe(p);
    struct reader r = {.fd = p[0], .rc = 12345};
    cio_task_t *t = spawn(pipe_reader_body, &r);
    t0 = loop_ns();
    ck_assert_int_eq(cio_wait_for(t, D_SHORT, NULL), -ETIMEDOUT);
    ck_assert_int_ge(since(t0), NS_SHORT);
    ck_assert(cio_future_done(t));
    ck_assert(cio_future_cancelled(t));
    ck_assert(r.done);
    ck_assert_int_eq(r.rc, -ECANCELED);
    cio_future_release(t);
    ck_assert_int_eq(write(p[1], "pipe", 4), 4);
    ck_assert_int_eq(cio_read(p[0], buf, sizeof buf), 4);
    ck_assert_mem_eq(buf, "pipe", 4);
    xclose(p[0]);
    xclose(p[1]);
    xclose(sv[0]);
    xclose(sv[1]);
    return 0;
}

START_TEST(io_recv_deadline)
{
    run_task(main_recv_deadline, NULL);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* 5. UDP                                                                     */
/* ------------------------------------------------------------------------ */

struct dgram_recv {
    int fd;
    char buf[64];
    addr_t from;
    socklen_t flen;
    ssize_t rc;
};

static int dgram_recv_body(void *arg, void **result)
{
    (void)result;
    struct dgram_recv *d = arg;
    d->flen = sizeof d->from;
    d->rc = cio_sock_recvfrom(d->fd, d->buf, sizeof d->buf, 0, &d->from.sa, &d->flen);
    return 0;
}

static int main_udp(void *arg, void **result)
{
    (void)arg;
    (void)result;
    addr_t aa, ba;
    socklen_t alen, blen;
    int a = bound_socket(AF_INET, SOCK_DGRAM, -1, &aa, &alen);
    int b = bound_socket(AF_INET, SOCK_DGRAM, -1, &ba, &blen);
    ck_assert_int_ge(a, 0);
    ck_assert_int_ge(b, 0);
    ck_assert(is_nonblock_cloexec(a));

    /* The receiver waits; the datagram comes with its sender's address. */
    struct dgram_recv d = {.fd = b, .rc = 12345};
    cio_task_t *t = spawn(dgram_recv_body, &d);
    settle();
    ck_assert_int_eq(d.rc, 12345);
    ck_assert_int_eq(cio_sock_sendto(a, "datagram", 8, 0, &ba.sa, blen), 8);
    ck_assert_int_eq(finish(t), 0);
    ck_assert_int_eq(d.rc, 8);
    ck_assert_mem_eq(d.buf, "datagram", 8);
    ck_assert_uint_eq(d.flen, sizeof(struct sockaddr_in));
    ck_assert_mem_eq(&d.from, &aa, alen);

    /* Boundaries are kept. */
    ck_assert_int_eq(cio_sock_sendto(a, "abc", 3, 0, &ba.sa, blen), 3);
    ck_assert_int_eq(cio_sock_sendto(a, "defg", 4, 0, &ba.sa, blen), 4);
    char buf[128];
    ck_assert_int_eq(cio_sock_recvfrom(b, buf, sizeof buf, 0, NULL, NULL), 3);
    ck_assert_mem_eq(buf, "abc", 3);
    ck_assert_int_eq(cio_sock_recvfrom(b, buf, sizeof buf, 0, NULL, NULL), 4);
    ck_assert_mem_eq(buf, "defg", 4);

    /* Truncation: the kernel cuts the datagram, the rest is gone. */
    unsigned char *big = pattern_buf(100);
    ck_assert_int_eq(cio_sock_sendto(a, big, 100, 0, &ba.sa, blen), 100);
    ck_assert_int_eq(cio_sock_sendto(a, "next", 4, 0, &ba.sa, blen), 4);
    addr_t from;
    socklen_t flen = sizeof from;
    ck_assert_int_eq(cio_sock_recvfrom(b, buf, 10, 0, &from.sa, &flen), 10);
    ck_assert_mem_eq(buf, big, 10);
    ck_assert_mem_eq(&from, &aa, alen);
    ck_assert_int_eq(cio_sock_recvfrom(b, buf, sizeof buf, 0, NULL, NULL), 4);
    ck_assert_mem_eq(buf, "next", 4);
    /* MSG_TRUNC gives the real length back. */
    ck_assert_int_eq(cio_sock_sendto(a, big, 100, 0, &ba.sa, blen), 100);
    memset(buf, 0, sizeof buf);
    ck_assert_int_eq(cio_sock_recvfrom(b, buf, 10, MSG_TRUNC, NULL, NULL), 100);
    ck_assert_mem_eq(buf, big, 10);
    ck_assert_int_eq(buf[10], 0);
    /* recvmsg reports the truncation in msg_flags. */
    ck_assert_int_eq(cio_sock_sendto(a, big, 100, 0, &ba.sa, blen), 100);
    struct iovec iov = {buf, 10};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
    ck_assert_int_eq(cio_sock_recvmsg(b, &m, 0), 10);
    ck_assert(m.msg_flags & MSG_TRUNC);
    /* A too-small address room: the address is cut, *addrlen tells its size. */
    ck_assert_int_eq(cio_sock_sendto(a, "x", 1, 0, &ba.sa, blen), 1);
    memset(&from, 0xee, sizeof from);
    flen = 4;
    ck_assert_int_eq(cio_sock_recvfrom(b, buf, sizeof buf, 0, &from.sa, &flen), 1);
    ck_assert_uint_eq(flen, sizeof(struct sockaddr_in));
    ck_assert_mem_eq(&from, &aa, 4);                       /* family and port */
    ck_assert_int_eq(((unsigned char *)&from)[4], 0xee); /* not written past the room */

    /* A datagram larger than UDP allows. */
    size_t huge = 70000;
    unsigned char *hb = calloc(1, huge);
    ck_assert_ptr_nonnull(hb);
    ck_assert_int_eq(cio_sock_sendto(a, hb, huge, 0, &ba.sa, blen), -EMSGSIZE);
    free(hb);
    free(big);
    /* Address without its length. */
    ck_assert_int_eq(cio_sock_recvfrom(b, buf, sizeof buf, 0, &from.sa, NULL), -EINVAL);

    /* A connected UDP socket whose peer port is closed: the ICMP error
     * comes back as -ECONNREFUSED on the next receive. */
    addr_t ca;
    socklen_t clen;
    int gone = bound_socket(AF_INET, SOCK_DGRAM, -1, &ca, &clen);
    ck_assert_int_ge(gone, 0);
    xclose(gone);
    ck_assert_int_eq(cio_sock_connect(a, &ca.sa, clen), 0);
    ck_assert_int_eq(cio_sock_send(a, "ping", 4, 0), 4);
    ck_assert_int_eq(cio_sock_recv(a, buf, sizeof buf, 0), -ECONNREFUSED);

    xclose(a);
    xclose(b);
    return 0;
}

START_TEST(io_udp)
{
    run_task(main_udp, NULL);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* 6. Pipes, EOF, EPIPE and SIGPIPE                                           */
/* ------------------------------------------------------------------------ */

struct pipe_big {
    int fd;
    size_t len;
    size_t got;
    unsigned char *src;
    size_t written;
    int rc;
};

static int pipe_slow_reader(void *arg, void **result)
{
    (void)result;
    struct pipe_big *p = arg;
    unsigned char buf[4096];
    int n = 0;
    for (;;) {
        ssize_t r = cio_read(p->fd, buf, sizeof buf);
        ck_assert_int_ge(r, 0);
        if (r == 0)
            return 0;
        ck_assert_int_lt(pattern_mismatch(buf, (size_t)r, p->got), 0);
        p->got += (size_t)r;
        if (++n % 32 == 0)
            ck_assert_int_eq(cio_sleep(0.001), 0);
    }
}

static int pipe_writer_all(void *arg, void **result)
{
    (void)result;
    struct pipe_big *p = arg;
    p->written = 12345;
    p->rc = cio_write_all(p->fd, p->src, p->len, &p->written);
    xclose(p->fd);
    return 0;
}

static int main_pipe(void *arg, void **result)
{
    (void)arg;
    (void)result;
    int p[2];
    make_pipe(p);
    /* A reader waiting for a writer. */
    struct reader r = {.fd = p[0], .rc = 12345};
    cio_task_t *t = spawn(pipe_reader_body, &r);
    settle();
    ck_assert(!r.done);
    ck_assert_int_eq(cio_write(p[1], "abc", 3), 3);
    ck_assert_int_eq(finish(t), 0);
    ck_assert_int_eq(r.rc, 3);
    ck_assert_mem_eq(r.buf, "abc", 3);

    /* write_all of 1 MiB through a 64 KiB pipe to a slow reader; closing
     * the write end gives the reader end of file. */
    struct pipe_big w = {.fd = p[1], .len = (size_t)1 << 20};
    w.src = pattern_buf(w.len);
    struct pipe_big rd = {.fd = p[0]};
    cio_task_t *tw = spawn(pipe_writer_all, &w);
    cio_task_t *tr = spawn(pipe_slow_reader, &rd);
    ck_assert_int_eq(finish(tw), 0);
    ck_assert_int_eq(finish(tr), 0);
    ck_assert_int_eq(w.rc, 0);
    ck_assert_uint_eq(w.written, w.len);
    ck_assert_uint_eq(rd.got, w.len);
    free(w.src);
    char c;
    ck_assert_int_eq(cio_read(p[0], &c, 1), 0); /* still end of file */
    xclose(p[0]);
    return 0;
}

START_TEST(io_pipe_read_write)
{
    run_task(main_pipe, NULL);
}
END_TEST

/* Checks for the forked children below (no check assertions there: the
 * child reports on stderr and through its exit status). */
#define CHILD_CHECK(cond)                                                        \
    do {                                                                         \
        if (!(cond)) {                                                           \
            fprintf(stderr, "child check failed at line %d: %s\n", __LINE__, #cond); \
            fflush(stderr);                                                      \
            _exit(3);                                                            \
        }                                                                        \
    } while (0)

static volatile sig_atomic_t n_sigpipe;

static void on_sigpipe(int sig)
{
    (void)sig;
    n_sigpipe++;
}

/* EPIPE from a pipe and from a socket; arg: expect the handler to run. */
static int main_epipe(void *arg, void **result)
{
    (void)result;
    bool handler = *(bool *)arg;
    struct sigaction cur;
    CHILD_CHECK(sigaction(SIGPIPE, NULL, &cur) == 0);
    if (handler)
        CHILD_CHECK(cur.sa_handler == on_sigpipe); /* left alone */
    else
        CHILD_CHECK(cur.sa_handler == SIG_IGN); /* the default was replaced */

    int p[2];
    CHILD_CHECK(pipe2(p, O_NONBLOCK | O_CLOEXEC) == 0);
    CHILD_CHECK(cio_close(p[0]) == 0);
    CHILD_CHECK(cio_write(p[1], "x", 1) == -EPIPE);
    /* Pipes raise SIGPIPE: with a handler installed it ran (once). */
    CHILD_CHECK(n_sigpipe == (handler ? 1 : 0));
    size_t written = 12345;
    CHILD_CHECK(cio_write_all(p[1], "xy", 2, &written) == -EPIPE);
    CHILD_CHECK(written == 0);
    CHILD_CHECK(n_sigpipe == (handler ? 2 : 0));
    CHILD_CHECK(cio_close(p[1]) == 0);

    /* Sockets send with MSG_NOSIGNAL: -EPIPE, and no signal at all. */
    int sv[2];
    CHILD_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
    CHILD_CHECK(cio_close(sv[1]) == 0);
    sig_atomic_t before = n_sigpipe;
    CHILD_CHECK(cio_sock_send(sv[0], "x", 1, 0) == -EPIPE);
    size_t sent = 12345;
    CHILD_CHECK(cio_sock_sendall(sv[0], "xyz", 3, 0, &sent) == -EPIPE);
    CHILD_CHECK(sent == 0);
    struct iovec iov = {(void *)"m", 1};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
    CHILD_CHECK(cio_sock_sendmsg(sv[0], &m, 0) == -EPIPE);
    CHILD_CHECK(n_sigpipe == before);
    CHILD_CHECK(cio_close(sv[0]) == 0);
    return 0;
}

static void child_sigpipe(void *arg)
{
    bool handler = *(bool *)arg;
    if (handler) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_sigpipe;
        sigemptyset(&sa.sa_mask);
        CHILD_CHECK(sigaction(SIGPIPE, &sa, NULL) == 0);
    } else {
        CHILD_CHECK(signal(SIGPIPE, SIG_DFL) != SIG_ERR);
    }
    CHILD_CHECK(cio_run(main_epipe, &handler) == 0);
    struct sigaction cur;
    CHILD_CHECK(sigaction(SIGPIPE, NULL, &cur) == 0);
    CHILD_CHECK(cur.sa_handler == (handler ? on_sigpipe : SIG_IGN));
}

START_TEST(io_epipe_no_sigpipe)
{
    /* In a child of its own, so that its SIGPIPE disposition is exactly
     * what the test set before the process made its first loop. */
    bool handler = _i;
    int st;
    const char *out = run_child_stderr(child_sigpipe, &handler, &st);
    ck_assert_msg(!WIFSIGNALED(st), "child killed by signal %d (%s); stderr:\n%s",
                  WIFSIGNALED(st) ? WTERMSIG(st) : 0,
                  WIFSIGNALED(st) ? strsignal(WTERMSIG(st)) : "", out);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child failed; stderr:\n%s", out);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* 7. Peer reset                                                             */
/* ------------------------------------------------------------------------ */

struct sock_reader {
    int fd;
    char buf[64];
    ssize_t rc;
    int done;
};

static int sock_reader_body(void *arg, void **result)
{
    (void)result;
    struct sock_reader *r = arg;
    r->rc = cio_sock_recv(r->fd, r->buf, sizeof r->buf, 0);
    r->done = 1;
    return 0;
}

static void reset_close(int fd)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
    xclose(fd); /* sends RST */
}

static int main_reset(void *arg, void **result)
{
    (void)arg;
    (void)result;
    char buf[16];
    /* The reset arrives while the reader waits. */
    int fds[2];
    tcp_pair(AF_INET, fds);
    struct sock_reader r = {.fd = fds[1], .rc = 12345};
    cio_task_t *t = spawn(sock_reader_body, &r);
    settle();
    ck_assert(!r.done);
    reset_close(fds[0]);
    ck_assert_int_eq(finish(t), 0);
    ck_assert_int_eq(r.rc, -ECONNRESET);
    /* Linux reports the reset once; then the stream reads as ended and
     * sending fails with EPIPE. */
    ck_assert_int_eq(cio_sock_recv(fds[1], buf, sizeof buf, 0), 0);
    ck_assert_int_eq(cio_sock_send(fds[1], "x", 1, 0), -EPIPE);
    xclose(fds[1]);

    /* The reset is already there when the reader comes. */
    tcp_pair(AF_INET, fds);
    reset_close(fds[0]);
    settle();
    ck_assert_int_eq(cio_sock_recv(fds[1], buf, sizeof buf, 0), -ECONNRESET);
    ck_assert_int_eq(cio_sock_recv(fds[1], buf, sizeof buf, 0), 0);
    xclose(fds[1]);

    /* A sender learns of the reset too. */
    tcp_pair(AF_INET, fds);
    reset_close(fds[0]);
    settle();
    ck_assert_int_eq(cio_sock_send(fds[1], "x", 1, 0), -ECONNRESET);
    ck_assert_int_eq(cio_sock_send(fds[1], "x", 1, 0), -EPIPE);
    xclose(fds[1]);
    return 0;
}

START_TEST(io_peer_reset)
{
    run_task(main_reset, NULL);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* 8. Cancellation and deadlines at each await point                         */
/* ------------------------------------------------------------------------ */

enum blk_kind {
    K_RECV,
    K_RECV_INTO,
    K_RECVMSG,
    K_RECVFROM,
    K_READ,
    K_READV,
    K_SEND,
    K_SENDMSG,
    K_WRITE,
    K_WRITEV,
    K_ACCEPT,
    K_CONNECT,
    K_WAIT_FD,
    K_COUNT
};

static const char *const kind_names[K_COUNT] = {
    "recv", "recv_into", "recvmsg", "recvfrom", "read", "readv", "send",
    "sendmsg", "write", "writev", "accept", "connect", "wait_fd",
};

typedef struct blk {
    int kind;
    int fd;
    double timeout; /* > 0: in a deadline scope of that many seconds */
    const struct sockaddr *addr;
    socklen_t alen;
    char buf[256];
    ssize_t rc;
    int scope_rc;
    int started, returned;
    int next;        /* what the next await point returned */
    int64_t elapsed; /* in the scope */
} blk_t;

static ssize_t blk_op(blk_t *b)
{
    struct iovec iov[2] = {{b->buf, 100}, {b->buf + 100, 156}};
    struct msghdr m = {.msg_iov = iov, .msg_iovlen = 2};
    addr_t from;
    socklen_t flen = sizeof from;
    switch (b->kind) {
    case K_RECV: return cio_sock_recv(b->fd, b->buf, sizeof b->buf, 0);
    case K_RECV_INTO: return cio_sock_recv_into(b->fd, iov, 2, 0);
    case K_RECVMSG: return cio_sock_recvmsg(b->fd, &m, 0);
    case K_RECVFROM:
        return cio_sock_recvfrom(b->fd, b->buf, sizeof b->buf, 0, &from.sa, &flen);
    case K_READ: return cio_read(b->fd, b->buf, sizeof b->buf);
    case K_READV: return cio_readv(b->fd, iov, 2);
    case K_SEND: return cio_sock_send(b->fd, b->buf, sizeof b->buf, 0);
    case K_SENDMSG: return cio_sock_sendmsg(b->fd, &m, 0);
    case K_WRITE: return cio_write(b->fd, b->buf, sizeof b->buf);
    case K_WRITEV: return cio_writev(b->fd, iov, 2);
    case K_ACCEPT: return cio_sock_accept(b->fd, NULL, NULL);
    case K_CONNECT: return cio_sock_connect(b->fd, b->addr, b->alen);
    case K_WAIT_FD: return cio_wait_fd(b->fd, CIO_READABLE);
    default: ck_abort_msg("kind %d", b->kind);
    }
    return 0;
}

static int blk_body(void *arg, void **result)
{
    (void)result;
    blk_t *b = arg;
    b->started = 1;
    cio_scope_t s;
    int64_t t0 = 0;
    if (b->timeout > 0) {
        t0 = loop_ns(); /* before the deadline is computed: elapsed >= timeout */
        ck_assert_int_eq(cio_scope_enter(&s, b->timeout, 0), 0);
    }
    b->rc = blk_op(b);
    if (b->timeout > 0) {
        b->elapsed = since(t0);
        b->scope_rc = cio_scope_exit(&s);
    }
    b->returned = 1;
    b->next = cio_yield();
    return b->rc < 0 ? (int)b->rc : 0;
}

/* What a blocked-op case sets up around its operation. */
typedef struct fixture {
    int a, b;   /* the op's fd and its peer, or -1 */
    int lfd;    /* listener, or -1 */
    addr_t addr;
    socklen_t alen;
    size_t filled;
    struct full_listener full;
    bool has_full;
} fixture_t;

static void fixture_setup(int kind, fixture_t *f, blk_t *b)
{
    memset(f, 0, sizeof *f);
    f->a = f->b = f->lfd = -1;
    int two[2];
    memset(b->buf, 'S', sizeof b->buf);
    switch (kind) {
    case K_RECV:
    case K_RECV_INTO:
    case K_RECVMSG:
    case K_WAIT_FD:
        make_pair(two);
        f->a = two[0];
        f->b = two[1];
        break;
    case K_RECVFROM:
        f->a = bound_socket(AF_INET, SOCK_DGRAM, -1, &f->addr, &f->alen);
        ck_assert_int_ge(f->a, 0);
        f->b = cio_socket(AF_INET, SOCK_DGRAM, 0);
        ck_assert_int_ge(f->b, 0);
        break;
    case K_READ:
    case K_READV:
        make_pipe(two);
        f->a = two[0];
        f->b = two[1];
        break;
    case K_SEND:
    case K_SENDMSG:
        make_pair(two);
        f->a = two[0];
        f->b = two[1];
        f->filled = fill_fd(f->a);
        break;
    case K_WRITE:
    case K_WRITEV:
        make_pipe(two);
        f->a = two[1]; /* the op writes */
        f->b = two[0];
        f->filled = fill_fd(f->a);
        break;
    case K_ACCEPT:
        f->lfd = bound_socket(AF_INET, SOCK_STREAM, 8, &f->addr, &f->alen);
        ck_assert_int_ge(f->lfd, 0);
        f->a = f->lfd;
        break;
    case K_CONNECT:
        full_listener_open(&f->full);
        f->has_full = true;
        f->a = cio_socket(AF_INET, SOCK_STREAM, 0);
        ck_assert_int_ge(f->a, 0);
        b->addr = &f->full.a.sa;
        b->alen = f->full.alen;
        break;
    default: ck_abort();
    }
    b->fd = f->a;
}

/* After the op was cancelled or timed out: nothing happened to the fd. */
static void fixture_verify(int kind, fixture_t *f)
{
    char buf[64];
    switch (kind) {
    case K_RECV:
    case K_RECV_INTO:
    case K_RECVMSG:
        /* Nothing was consumed: data sent now is read whole by a new call. */
        ck_assert_int_eq(send(f->b, "late!", 5, 0), 5);
        ck_assert_int_eq(cio_sock_recv(f->a, buf, sizeof buf, 0), 5);
        ck_assert_mem_eq(buf, "late!", 5);
        break;
    case K_WAIT_FD:
        /* The interest was dropped: waiting again is allowed (no -EBUSY). */
        ck_assert_int_eq(send(f->b, "late!", 5, 0), 5);
        ck_assert_int_eq(cio_wait_fd(f->a, CIO_READABLE), CIO_READABLE);
        ck_assert_int_eq(cio_sock_recv(f->a, buf, sizeof buf, 0), 5);
        break;
    case K_RECVFROM:
        ck_assert_int_eq(cio_sock_sendto(f->b, "late!", 5, 0, &f->addr.sa, f->alen), 5);
        ck_assert_int_eq(cio_sock_recvfrom(f->a, buf, sizeof buf, 0, NULL, NULL), 5);
        ck_assert_mem_eq(buf, "late!", 5);
        break;
    case K_READ:
    case K_READV:
        ck_assert_int_eq(write(f->b, "late!", 5), 5);
        ck_assert_int_eq(cio_read(f->a, buf, sizeof buf), 5);
        ck_assert_mem_eq(buf, "late!", 5);
        break;
    case K_SEND:
    case K_SENDMSG:
    case K_WRITE:
    case K_WRITEV:
        /* Nothing was written: the peer finds only the filler bytes. */
        ck_assert_uint_eq(drain_fd(f->b, 'F'), f->filled);
        break;
    case K_ACCEPT: {
        /* No connection was taken: the next client is the next accepted. */
        int c = cio_socket(AF_INET, SOCK_STREAM, 0);
        ck_assert_int_ge(c, 0);
        ck_assert_int_eq(cio_sock_connect(c, &f->addr.sa, f->alen), 0);
        addr_t peer, mine;
        socklen_t plen = sizeof peer, mlen = sizeof mine;
        int s = cio_sock_accept(f->lfd, &peer.sa, &plen);
        ck_assert_int_ge(s, 0);
        ck_assert_int_eq(getsockname(c, &mine.sa, &mlen), 0);
        ck_assert_uint_eq(plen, mlen);
        ck_assert_mem_eq(&peer, &mine, mlen);
        xclose(s);
        xclose(c);
        break;
    }
    case K_CONNECT: {
        /* The attempt is abandoned: once the socket is closed, the
         * listener has exactly its two queued connections. */
        xclose(f->a);
        f->a = -1;
        for (int i = 0; i < 2; i++) {
            int s = cio_sock_accept(f->full.lfd, NULL, NULL);
            ck_assert_int_ge(s, 0);
            xclose(s);
        }
        cio_scope_t sc;
        ck_assert_int_eq(cio_scope_enter(&sc, D_SHORT, 0), 0);
        ck_assert_int_eq(cio_sock_accept(f->full.lfd, NULL, NULL), -ETIMEDOUT);
        ck_assert_int_eq(cio_scope_exit(&sc), -ETIMEDOUT);
        break;
    }
    default: ck_abort();
    }
}

static void fixture_teardown(fixture_t *f)
{
    if (f->has_full)
        full_listener_close(&f->full);
    if (f->a >= 0 && f->a != f->lfd)
        xclose(f->a);
    if (f->b >= 0)
        xclose(f->b);
    if (f->lfd >= 0)
        xclose(f->lfd);
}

/* Sets up the fixture of an op of kind and starts it in a task, which
 * must then be blocked in the op (the close cases below). */
static cio_task_t *start_blocked_op(int kind, blk_t *b, fixture_t *f)
{
    memset(b, 0, sizeof *b);
    b->kind = kind;
    b->rc = 12345;
    b->next = 12345;
    fixture_setup(kind, f, b);
    cio_task_t *t = spawn(blk_body, b);
    settle();
    ck_assert(!b->returned);
    return t;
}

/* Waits (1 s at most) for the task of start_blocked_op to end once its
 * fd was closed, and releases it; the op must have returned. */
static void end_closed_op(cio_task_t *t, blk_t *b)
{
    int st = cio_wait_for(t, 1.0, NULL);
    ck_assert_msg(st != -ETIMEDOUT, "%s still blocked 1 s after cio_close of its fd",
                  kind_names[b->kind]);
    cio_future_release(t);
    ck_assert(b->returned);
}

static int main_blocked(void *arg, void **result)
{
    (void)result;
    int i = *(int *)arg;
    int kind = i / 2;
    bool deadline = i % 2;
    blk_t b;
    memset(&b, 0, sizeof b);
    b.kind = kind;
    b.rc = 12345;
    b.next = 12345;
    b.timeout = deadline ? D_SHORT : 0;
    fixture_t f;
    fixture_setup(kind, &f, &b);

    cio_task_t *t = spawn(blk_body, &b);
    settle();
    ck_assert(b.started);
    /* With a deadline, b.elapsed below shows that the call waited (a
     * check here could race the deadline on a loaded machine). */
    if (!deadline) {
        ck_assert_msg(!b.returned, "%s did not wait (rc %zd)", kind_names[kind], b.rc);
        ck_assert_int_eq(cio_task_cancel(t), 1);
    }
    int st = cio_await(t, NULL);
    ck_assert(b.returned);
    if (deadline) {
        ck_assert_msg(b.rc == -ETIMEDOUT, "%s returned %zd", kind_names[kind], b.rc);
        ck_assert_int_eq(b.scope_rc, -ETIMEDOUT);
        ck_assert_int_ge(b.elapsed, NS_SHORT);
        ck_assert_int_eq(b.next, 0); /* a deadline does not cancel the task */
        ck_assert_int_eq(st, -ETIMEDOUT);
        ck_assert(!cio_future_cancelled(t));
    } else {
        ck_assert_msg(b.rc == -ECANCELED, "%s returned %zd", kind_names[kind], b.rc);
        ck_assert_int_eq(b.next, -ECANCELED); /* cancellation is level-triggered */
        ck_assert_int_eq(st, -ECANCELED);
        ck_assert(cio_future_cancelled(t));
    }
    cio_future_release(t);
    fixture_verify(kind, &f);
    fixture_teardown(&f);
    return 0;
}

START_TEST(io_blocked_cancel_or_deadline)
{
    int i = _i;
    run_task(main_blocked, &i);
}
END_TEST

/*
 * Cancellation racing a completion. On epoll the readiness has not been
 * seen yet when the cancel comes, so the call returns -ECANCELED and the
 * data stays in the socket. On io_uring, the data's arrival completes the
 * submitted recv inside the kernel during the sender's send(2) (its task
 * work runs before send returns to user space), so the completion is
 * already in the ring when the task is cancelled: cio.h says it is returned
 * as a success and the next await point returns -ECANCELED. Either way the
 * bytes are delivered exactly once.
 */
static int main_race_recv(void *arg, void **result)
{
    (void)arg;
    (void)result;
    int sv[2];
    make_pair(sv);
    bool uring = on_uring();
    for (int round = 0; round < 50; round++) {
        blk_t b;
        memset(&b, 0, sizeof b);
        b.kind = K_RECV;
        b.fd = sv[0];
        b.rc = 12345;
        cio_task_t *t = spawn(blk_body, &b);
        settle();
        ck_assert(!b.returned);
        ck_assert_int_eq(send(sv[1], "raced", 5, 0), 5);
        ck_assert_int_eq(cio_task_cancel(t), 1);
        int st = cio_await(t, NULL);
        ck_assert_int_eq(b.next, -ECANCELED);
        char buf[16];
        ssize_t left = recv(sv[0], buf, sizeof buf, MSG_DONTWAIT);
        if (uring) {
            ck_assert_msg(b.rc == 5, "round %d: recv returned %zd", round, b.rc);
            ck_assert_mem_eq(b.buf, "raced", 5);
            ck_assert_int_eq(st, 0);
            ck_assert(!cio_future_cancelled(t));
            ck_assert_int_eq(left, -1);
            ck_assert_int_eq(errno, EAGAIN);
        } else {
            ck_assert_msg(b.rc == -ECANCELED, "round %d: recv returned %zd", round, b.rc);
            ck_assert_int_eq(st, -ECANCELED);
            ck_assert_int_eq(left, 5);
            ck_assert_mem_eq(buf, "raced", 5);
        }
        cio_future_release(t);
    }
    xclose(sv[0]);
    xclose(sv[1]);
    return 0;
}

START_TEST(io_race_recv_cancel)
{
    run_task(main_race_recv, NULL);
}
END_TEST

/* The same race for a send blocked on a full buffer: the peer drains the
 * buffer (on io_uring the send completes in the kernel then), then the task
 * is cancelled. The peer gets the filler plus exactly what the call says it
 * sent. */
static int main_race_send(void *arg, void **result)
{
    (void)arg;
    (void)result;
    bool uring = on_uring();
    for (int round = 0; round < 10; round++) {
        int sv[2];
        make_pair(sv);
        size_t filled = fill_fd(sv[0]);
        blk_t b;
        memset(&b, 0, sizeof b);
        b.kind = K_SEND;
        b.fd = sv[0];
        b.rc = 12345;
        memset(b.buf, 'S', sizeof b.buf);
        cio_task_t *t = spawn(blk_body, &b);
        settle();
        ck_assert(!b.returned);
        size_t got = drain_fd(sv[1], 0);
        ck_assert_int_eq(cio_task_cancel(t), 1);
        int st = cio_await(t, NULL);
        cio_future_release(t);
        got += drain_fd(sv[1], 0);
        ck_assert_int_eq(b.next, -ECANCELED);
        if (uring) {
            ck_assert_msg(b.rc == (ssize_t)sizeof b.buf, "round %d: send returned %zd", round,
                          b.rc);
            ck_assert_int_eq(st, 0);
            ck_assert_uint_eq(got, filled + sizeof b.buf);
        } else {
            ck_assert_msg(b.rc == -ECANCELED, "round %d: send returned %zd", round, b.rc);
            ck_assert_int_eq(st, -ECANCELED);
            ck_assert_uint_eq(got, filled);
        }
        xclose(sv[0]);
        xclose(sv[1]);
    }
    return 0;
}

START_TEST(io_race_send_cancel)
{
    run_task(main_race_send, NULL);
}
END_TEST

/* accept racing its cancellation: a connection that arrived is either
 * returned (io_uring, raced) or left queued (epoll); it is never lost. */
static int main_race_accept(void *arg, void **result)
{
    (void)arg;
    (void)result;
    addr_t la;
    socklen_t llen;
    int lfd = bound_socket(AF_INET, SOCK_STREAM, 8, &la, &llen);
    ck_assert_int_ge(lfd, 0);
    bool uring = on_uring();
    for (int round = 0; round < 10; round++) {
        blk_t b;
        memset(&b, 0, sizeof b);
        b.kind = K_ACCEPT;
        b.fd = lfd;
        b.rc = 12345;
        cio_task_t *t = spawn(blk_body, &b);
        settle();
        ck_assert(!b.returned);
        /* A raw connect: on loopback the handshake is done on return. */
        int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(c, 0);
        ck_assert_int_eq(connect(c, &la.sa, llen), 0);
        ck_assert_int_eq(cio_task_cancel(t), 1);
        int st = cio_await(t, NULL);
        cio_future_release(t);
        ck_assert_int_eq(b.next, -ECANCELED);
        int s;
        if (uring) {
            ck_assert_msg(b.rc >= 0, "round %d: accept returned %zd", round, b.rc);
            ck_assert_int_eq(st, 0);
            s = (int)b.rc;
            ck_assert(is_nonblock_cloexec(s));
        } else {
            ck_assert_msg(b.rc == -ECANCELED, "round %d: accept returned %zd", round, b.rc);
            ck_assert_int_eq(st, -ECANCELED);
            s = cio_sock_accept(lfd, NULL, NULL);
            ck_assert_int_ge(s, 0);
        }
        /* s is c's peer. */
        ck_assert_int_eq(send(c, "k", 1, 0), 1);
        char k = 0;
        ck_assert_int_eq(cio_sock_recv(s, &k, 1, 0), 1);
        ck_assert_int_eq(k, 'k');
        xclose(s);
        xclose(c);
    }
    xclose(lfd);
    return 0;
}

START_TEST(io_race_accept_cancel)
{
    run_task(main_race_accept, NULL);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* 9. cio_wait_fd, -EBUSY, and cio_close under a waiter                      */
/* ------------------------------------------------------------------------ */

struct fd_waiter {
    int fd;
    int events;
    int rc;
    int done;
};

static int fd_waiter_body(void *arg, void **result)
{
    (void)result;
    struct fd_waiter *w = arg;
    w->rc = cio_wait_fd(w->fd, w->events);
    w->done = 1;
    return 0;
}

static int main_wait_fd_both(void *arg, void **result)
{
    (void)arg;
    (void)result;
    int sv[2];
    make_pair(sv);
    /* Neither readable nor writable: the wait for both blocks... */
    size_t filled = fill_fd(sv[0]);
    struct fd_waiter w = {.fd = sv[0], .events = CIO_READABLE | CIO_WRITABLE, .rc = 12345};
    cio_task_t *t = spawn(fd_waiter_body, &w);
    settle();
    ck_assert(!w.done);
    /* ...until data comes: only "readable" fired. */
    ck_assert_int_eq(send(sv[1], "r", 1, 0), 1);
    ck_assert_int_eq(finish(t), 0);
    ck_assert_int_eq(w.rc, CIO_READABLE);
    /* Buffer drained: both are true now and both are reported. */
    ck_assert_uint_eq(drain_fd(sv[1], 'F'), filled);
    ck_assert_int_eq(cio_wait_fd(sv[0], CIO_READABLE | CIO_WRITABLE),
                     CIO_READABLE | CIO_WRITABLE);
    /* Only the bits asked for are reported. */
    ck_assert_int_eq(cio_wait_fd(sv[0], CIO_WRITABLE), CIO_WRITABLE);
    ck_assert_int_eq(cio_wait_fd(sv[0], CIO_READABLE), CIO_READABLE);
    char c;
    ck_assert_int_eq(cio_sock_recv(sv[0], &c, 1, 0), 1);
    ck_assert_int_eq(cio_wait_fd(sv[0], CIO_READABLE | CIO_WRITABLE), CIO_WRITABLE);
    /* A pipe's read end at end of file reads as readable. */
    int p[2];
    make_pipe(p);
    xclose(p[1]);
    ck_assert_int_eq(cio_wait_fd(p[0], CIO_READABLE), CIO_READABLE);
    xclose(p[0]);
    /* Argument errors. */
    ck_assert_int_eq(cio_wait_fd(sv[0], 0), -EINVAL);
    ck_assert_int_eq(cio_wait_fd(sv[0], 4), -EINVAL);
    ck_assert_int_eq(cio_wait_fd(sv[0], CIO_READABLE | 8), -EINVAL);
    ck_assert_int_eq(cio_wait_fd(-1, CIO_READABLE), -EINVAL);
    xclose(sv[0]);
    xclose(sv[1]);
    return 0;
}

START_TEST(io_wait_fd_events)
{
    run_task(main_wait_fd_both, NULL);
}
END_TEST

static void cb_count(void *arg)
{
    ++*(int *)arg;
}

static int main_wait_fd_busy(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_loop_t *loop = cio_get_running_loop();
    int sv[2];
    make_pair(sv);
    struct fd_waiter w = {.fd = sv[0], .events = CIO_READABLE, .rc = 12345};
    cio_task_t *t = spawn(fd_waiter_body, &w);
    settle();
    ck_assert(!w.done);
    /* The reading direction is taken... */
    ck_assert_int_eq(cio_wait_fd(sv[0], CIO_READABLE), -EBUSY);
    ck_assert_int_eq(cio_wait_fd(sv[0], CIO_READABLE | CIO_WRITABLE), -EBUSY);
    int n = 0;
    ck_assert_int_eq(cio_add_reader(loop, sv[0], cb_count, &n), -EBUSY);
    /* ...the writing one is free. */
    ck_assert_int_eq(cio_wait_fd(sv[0], CIO_WRITABLE), CIO_WRITABLE);
    ck_assert(!w.done);
    ck_assert_int_eq(send(sv[1], "x", 1, 0), 1);
    ck_assert_int_eq(finish(t), 0);
    ck_assert_int_eq(w.rc, CIO_READABLE);
    /* Free again once the waiter is gone. */
    ck_assert_int_eq(cio_wait_fd(sv[0], CIO_READABLE), CIO_READABLE);
    /* A user's reader holds the direction the same way. */
    ck_assert_int_eq(cio_add_reader(loop, sv[0], cb_count, &n), 0);
    ck_assert_int_eq(cio_wait_fd(sv[0], CIO_READABLE), -EBUSY);
    ck_assert_int_eq(cio_remove_reader(loop, sv[0]), 1);
    ck_assert_int_eq(cio_wait_fd(sv[0], CIO_READABLE), CIO_READABLE);
    xclose(sv[0]);
    xclose(sv[1]);
    return 0;
}

START_TEST(io_wait_fd_ebusy)
{
    run_task(main_wait_fd_busy, NULL);
}
END_TEST

struct closer {
    int fd;
    int rc;
};

static int closer_body(void *arg, void **result)
{
    (void)result;
    struct closer *c = arg;
    c->rc = cio_close(c->fd);
    return 0;
}

/* cio_close from another task while a task waits in cio_wait_fd: the
 * waiter wakes (with events or an error), and the fd is really closed: the
 * peer sees end of stream. */
static int main_close_wakes_waiter(void *arg, void **result)
{
    (void)result;
    int events = *(int *)arg;
    int sv[2];
    make_pair(sv);
    if (events & CIO_WRITABLE)
        fill_fd(sv[0]);
    struct fd_waiter w = {.fd = sv[0], .events = events, .rc = 12345};
    cio_task_t *t = spawn(fd_waiter_body, &w);
    settle();
    ck_assert(!w.done);
    struct closer c = {.fd = sv[0], .rc = 12345};
    cio_task_t *tc = spawn(closer_body, &c);
    ck_assert_int_eq(finish(tc), 0);
    ck_assert_int_eq(c.rc, 0);
    ck_assert(!fd_is_open(sv[0]));
    ck_assert_int_eq(cio_wait_for(t, HANG_BOUND_S, NULL), 0);
    cio_future_release(t);
    ck_assert(w.done);
    /* -EBADF, not "ready": the number may name another file by the time
     * the waiter runs (see io_close_reuse_blocked_op). */
    ck_assert_int_eq(w.rc, -EBADF);
    /* The socket is closed for real. */
    char buf[4];
    cio_scope_t s;
    ck_assert_int_eq(cio_scope_enter(&s, HANG_BOUND_S, 0), 0);
    ssize_t r = cio_sock_recv(sv[1], buf, sizeof buf, 0);
    ck_assert_int_eq(cio_scope_exit(&s), 0);
    if (events & CIO_WRITABLE)
        ck_assert_int_gt(r, 0); /* the filler first */
    else
        ck_assert_int_eq(r, 0);
    xclose(sv[1]);
    return 0;
}

START_TEST(io_close_wakes_fd_waiter)
{
    static const int ev[] = {CIO_READABLE, CIO_WRITABLE, CIO_READABLE | CIO_WRITABLE};
    int e = ev[_i];
    run_task(main_close_wakes_waiter, &e);
}
END_TEST

/*
 * cio_close from another task while a task is blocked inside an operation
 * on the fd (recv, read, accept). cio.h: cio_close drops "every watcher and
 * waiter the running loop has on it". The blocked call must end with an
 * error rather than wait forever, and the fd must really be released (the
 * peer sees end of stream).
 */
static int main_close_wakes_op(void *arg, void **result)
{
    (void)result;
    int kind = *(int *)arg;
    blk_t b;
    fixture_t f;
    cio_task_t *t = start_blocked_op(kind, &b, &f);
    struct closer c = {.fd = f.a, .rc = 12345};
    cio_task_t *tc = spawn(closer_body, &c);
    ck_assert_int_eq(finish(tc), 0);
    ck_assert_int_eq(c.rc, 0);
    if (f.lfd == f.a)
        f.lfd = -1;
    f.a = -1;
    end_closed_op(t, &b);
    ck_assert_msg(b.rc == -EBADF, "%s returned %zd after cio_close", kind_names[kind], b.rc);
    ck_assert_int_eq(b.next, 0); /* the task was not cancelled */
    if (kind == K_RECV) {
        /* The peer sees the close: end of stream. */
        char buf[8];
        cio_scope_t s;
        ck_assert_int_eq(cio_scope_enter(&s, HANG_BOUND_S, 0), 0);
        ck_assert_int_eq(cio_sock_recv(f.b, buf, sizeof buf, 0), 0);
        ck_assert_int_eq(cio_scope_exit(&s), 0);
    } else if (kind == K_READ) {
        /* The pipe has no reader left. */
        ck_assert_int_eq(cio_write(f.b, "x", 1), -EPIPE);
    }
    fixture_teardown(&f);
    return 0;
}

START_TEST(io_close_wakes_blocked_op)
{
    static const int kinds[] = {K_RECV, K_READ, K_ACCEPT};
    int k = kinds[_i];
    run_task(main_close_wakes_op, &k);
}
END_TEST

/*
 * As above, but the closed number is given to a new file at once, in the
 * same loop iteration (before the blocked task runs again), and the new
 * file has data or a connection waiting. The blocked call must fail with
 * -EBADF and leave the new file alone: a retry of the call on the number
 * would take data that belongs to someone else.
 */
static int main_close_reuse_op(void *arg, void **result)
{
    (void)result;
    int kind = *(int *)arg;
    blk_t b;
    fixture_t f;
    cio_task_t *t = start_blocked_op(kind, &b, &f);
    int num = f.a;
    xclose(num);
    if (f.lfd == num)
        f.lfd = -1;
    f.a = -1;
    /* No await point from here until the new file holds the number. */
    int newfd, keep, two[2];
    addr_t na;
    socklen_t nlen;
    switch (kind) {
    case K_RECV:
        make_pair(two);
        newfd = two[0];
        keep = two[1];
        ck_assert_int_eq(send(keep, "secret", 6, 0), 6);
        break;
    case K_READ:
        make_pipe(two);
        newfd = two[0];
        keep = two[1];
        ck_assert_int_eq(write(keep, "secret", 6), 6);
        break;
    case K_ACCEPT:
        newfd = bound_socket(AF_INET, SOCK_STREAM, 8, &na, &nlen);
        ck_assert_int_ge(newfd, 0);
        keep = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(keep, 0);
        ck_assert_int_eq(connect(keep, &na.sa, nlen), 0); /* queued on loopback */
        break;
    default: ck_abort();
    }
    if (newfd != num) {
        ck_assert_int_eq(dup3(newfd, num, O_CLOEXEC), num);
        close(newfd);
    }
    end_closed_op(t, &b);
    ck_assert_msg(b.rc == -EBADF, "%s on a closed (and reused) fd number returned %zd",
                  kind_names[kind], b.rc);
    /* The new file was not touched. */
    char buf[8];
    if (kind == K_ACCEPT) {
        int s = accept4(num, NULL, NULL, SOCK_CLOEXEC);
        ck_assert_msg(s >= 0, "the queued connection is gone: %s", strerror(errno));
        close(s);
    } else {
        ck_assert_int_eq(read(num, buf, sizeof buf), 6);
        ck_assert_mem_eq(buf, "secret", 6);
    }
    xclose(num);
    xclose(keep);
    fixture_teardown(&f);
    return 0;
}

/*
 * cio_close(fd) wakes and cancels what waits on fd itself, and nothing on
 * another descriptor of the same file: a recv blocked on a dup of the
 * socket goes on and receives what the peer sends later (on io_uring the
 * kernel matches IORING_ASYNC_CANCEL_FD by file, so cio cancels by address).
 */
typedef struct dup_recv {
    int fd;
    ssize_t rc;
    char buf[8];
} dup_recv_t;

static int dup_recv_body(void *arg, void **result)
{
    (void)result;
    dup_recv_t *d = arg;
    d->rc = cio_sock_recv(d->fd, d->buf, sizeof d->buf, 0);
    return 0;
}

static int main_close_spares_dup(void *arg, void **result)
{
    (void)arg;
    (void)result;
    int sv[2];
    make_pair(sv);
    dup_recv_t d = {.fd = fcntl(sv[0], F_DUPFD_CLOEXEC, 0), .rc = 12345};
    ck_assert_int_ge(d.fd, 0);
    cio_task_t *t = spawn(dup_recv_body, &d);
    settle();
    ck_assert_int_eq(d.rc, 12345); /* blocked */
    ck_assert_int_eq(cio_close(sv[0]), 0);
    settle();
    ck_assert_int_eq(d.rc, 12345); /* still blocked: its fd is open */
    ck_assert_int_eq(send(sv[1], "hi", 2, 0), 2);
    ck_assert_int_eq(cio_wait_for(t, 2.0, NULL), 0);
    cio_future_release(t);
    ck_assert_int_eq(d.rc, 2);
    ck_assert_mem_eq(d.buf, "hi", 2);
    xclose(d.fd);
    xclose(sv[1]);
    return 0;
}

START_TEST(io_close_spares_dup)
{
    run_task(main_close_spares_dup, NULL);
}
END_TEST

/*
 * Two readers ready in the same poll batch; whichever runs first closes the
 * other's fd with cio_close and gives its number to a new, empty pipe with
 * a reader of its own. The other fd's event, already polled, belongs to the
 * closed file: it must not reach the new reader (the fd table's generation
 * tells them apart).
 */
typedef struct stale_ctx {
    cio_loop_t *loop;
    int fds[2][2];      /* the two pipes */
    int first;          /* which reader ran first, -1 before */
    int drop_first;     /* remove the other's reader before closing its fd */
    int newfd[2];       /* the new pipe that took the other's number */
    int new_fired;
} stale_ctx_t;

static stale_ctx_t stale;

static void stale_stop(void *arg)
{
    cio_loop_stop(arg);
}

static void stale_new_reader(void *arg)
{
    (void)arg;
    stale.new_fired++;
}

static void stale_reader(void *arg)
{
    int me = (int)(intptr_t)arg, other = !me;
    if (stale.first >= 0)
        return;
    stale.first = me;
    cio_remove_reader(stale.loop, stale.fds[me][0]);
    int num = stale.fds[other][0];
    if (stale.drop_first) /* the close then finds no watcher on the fd */
        ck_assert_int_eq(cio_remove_reader(stale.loop, num), 1);
    ck_assert_int_eq(cio_close(num), 0);
    int p[2];
    make_pipe(p);
    if (p[0] != num) {
        ck_assert_int_eq(dup3(p[0], num, O_CLOEXEC), num);
        close(p[0]);
    }
    stale.newfd[0] = num;
    stale.newfd[1] = p[1];
    ck_assert_int_eq(cio_add_reader(stale.loop, num, stale_new_reader, NULL), 0);
}

START_TEST(io_stale_event_in_batch)
{
    memset(&stale, 0, sizeof stale);
    stale.first = -1;
    stale.drop_first = _i;
    stale.loop = new_loop();
    for (int i = 0; i < 2; i++) {
        make_pipe(stale.fds[i]);
        ck_assert_int_eq(write(stale.fds[i][1], "x", 1), 1); /* both ready */
        ck_assert_int_eq(cio_add_reader(stale.loop, stale.fds[i][0], stale_reader,
                                        (void *)(intptr_t)i), 0);
    }
    /* A few iterations: the first poll returns both events at once. */
    for (int i = 0; i < 5; i++) {
        ck_assert_int_eq(cio_call_soon(stale.loop, NULL, stale_stop, stale.loop), 0);
        ck_assert_int_eq(cio_loop_run_forever(stale.loop), 0);
    }
    ck_assert_int_ge(stale.first, 0);
    ck_assert_msg(stale.new_fired == 0, "the new, empty pipe's reader fired %d time(s)",
                  stale.new_fired);
    cio_remove_reader(stale.loop, stale.newfd[0]);
    int me = stale.first;
    xclose(stale.fds[me][0]);
    xclose(stale.fds[me][1]);
    xclose(stale.fds[!me][1]);
    xclose(stale.newfd[0]);
    xclose(stale.newfd[1]);
    close_loop(stale.loop);
}
END_TEST

START_TEST(io_close_reuse_blocked_op)
{
    static const int kinds[] = {K_RECV, K_READ, K_ACCEPT};
    int k = kinds[_i];
    run_task(main_close_reuse_op, &k);
}
END_TEST

/*
 * cio_close, then a new fd gets the same number in the same loop iteration
 * and is waited on: the wait must see the new file, not the old one (cio.h:
 * "so a reused fd number never sees stale interest").
 */
static int main_close_reuse(void *arg, void **result)
{
    (void)arg;
    (void)result;
    int sv[2];
    make_pair(sv);
    struct fd_waiter w = {.fd = sv[0], .events = CIO_READABLE, .rc = 12345};
    cio_task_t *t = spawn(fd_waiter_body, &w);
    settle(); /* the wait is registered with the backend */
    ck_assert(!w.done);
    int num = sv[0];
    xclose(num);
    /* No await point from here to the new wait: same loop iteration. */
    int nv[2];
    make_pair(nv);
    if (nv[0] != num) {
        ck_assert_int_eq(dup3(nv[0], num, O_CLOEXEC), num);
        close(nv[0]);
        nv[0] = num;
    }
    ck_assert_int_eq(send(nv[1], "new", 3, 0), 3);
    cio_scope_t s;
    ck_assert_int_eq(cio_scope_enter(&s, 1.0, 0), 0);
    int rc = cio_wait_fd(num, CIO_READABLE);
    ck_assert_int_eq(cio_scope_exit(&s), rc == -ETIMEDOUT ? -ETIMEDOUT : 0);
    ck_assert_msg(rc == CIO_READABLE, "wait on the reused fd number returned %d", rc);
    ck_assert_int_eq(cio_wait_for(t, HANG_BOUND_S, NULL), 0);
    cio_future_release(t);
    ck_assert(w.done);
    /* The old socket is really closed: its peer sees end of stream. */
    char buf[4];
    ck_assert_int_eq(cio_scope_enter(&s, HANG_BOUND_S, 0), 0);
    ck_assert_int_eq(cio_sock_recv(sv[1], buf, sizeof buf, 0), 0);
    ck_assert_int_eq(cio_scope_exit(&s), 0);
    ck_assert_int_eq(cio_sock_recv(nv[0], buf, sizeof buf, 0), 3);
    xclose(sv[1]);
    xclose(nv[0]);
    xclose(nv[1]);
    return 0;
}

START_TEST(io_close_then_reuse_number)
{
    run_task(main_close_reuse, NULL);
}
END_TEST

/* cio_close's own contract. */
static void cb_close_reader(void *arg)
{
    int *fdn = arg;
    char c;
    ck_assert_int_eq(recv(fdn[0], &c, 1, MSG_DONTWAIT), 1); /* unread data would reset */
    ck_assert_int_eq(cio_close(fdn[0]), 0);
    fdn[1]++;
}

static void cb_stop(void *arg)
{
    cio_loop_stop(arg);
}

START_TEST(io_close_contract)
{
    ck_assert_int_eq(cio_close(-1), -EBADF);
    /* Outside any loop: a plain close. */
    int sv[2];
    make_pair(sv);
    ck_assert_int_eq(cio_close(sv[0]), 0);
    ck_assert(!fd_is_open(sv[0]));
    ck_assert_int_eq(cio_close(sv[0]), -EBADF);
    ck_assert_int_eq(close(sv[1]), 0);

    /* From a reader callback of the running loop: its watcher is dropped
     * with the fd (no further calls, nothing left registered). */
    cio_loop_t *l = new_loop();
    make_pair(sv);
    int arg[2] = {sv[0], 0};
    ck_assert_int_eq(cio_add_reader(l, sv[0], cb_close_reader, arg), 0);
    ck_assert_int_eq(send(sv[1], "x", 1, 0), 1);
    ck_assert_int_eq(cio_call_later(l, NULL, D_SHORT, cb_stop, l), 0);
    ck_assert_int_eq(cio_loop_run_forever(l), 0);
    ck_assert_int_eq(arg[1], 1);
    ck_assert(!fd_is_open(sv[0]));
    ck_assert_int_eq(cio_remove_reader(l, sv[0]), 0);
    char c;
    ck_assert_int_eq(recv(sv[1], &c, 1, MSG_DONTWAIT), 0); /* the peer sees the close */
    ck_assert_int_eq(close(sv[1]), 0);
    close_loop(l);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* 10. Files: pread, pwrite, fsync; argument errors; -EPERM outside a task   */
/* ------------------------------------------------------------------------ */

static int temp_file(void)
{
    char path[] = "/tmp/cio-test-io-XXXXXX";
    int fd = mkostemp(path, O_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(unlink(path), 0);
    return fd;
}

static int main_file(void *arg, void **result)
{
    (void)arg;
    (void)result;
    int fd = temp_file();
    char buf[32];
    ck_assert_int_eq(cio_pwrite(fd, "world", 5, 10), 5);
    ck_assert_int_eq(cio_pwrite(fd, "hello", 5, 0), 5);
    struct stat st;
    ck_assert_int_eq(fstat(fd, &st), 0);
    ck_assert_int_eq(st.st_size, 15);
    ck_assert_int_eq(lseek(fd, 0, SEEK_CUR), 0); /* the position is not used */
    ck_assert_int_eq(cio_pread(fd, buf, 5, 10), 5);
    ck_assert_mem_eq(buf, "world", 5);
    memset(buf, 'x', sizeof buf);
    ck_assert_int_eq(cio_pread(fd, buf, sizeof buf, 0), 15);
    ck_assert_mem_eq(buf, "hello\0\0\0\0\0world", 15); /* the hole reads as zeros */
    ck_assert_int_eq(cio_pread(fd, buf, 4, 3), 4);
    ck_assert_mem_eq(buf, "lo\0\0", 4);
    ck_assert_int_eq(cio_pread(fd, buf, sizeof buf, 15), 0); /* end of file */
    ck_assert_int_eq(cio_pread(fd, buf, sizeof buf, 1 << 20), 0);
    ck_assert_int_eq(cio_fsync(fd, false), 0);
    ck_assert_int_eq(cio_fsync(fd, true), 0);
    ck_assert_int_eq(lseek(fd, 0, SEEK_CUR), 0);
    /* Large offsets (past 4 GiB) are passed through whole. */
    int64_t far = ((int64_t)5 << 30) + 3;
    ck_assert_int_eq(cio_pwrite(fd, "far", 3, far), 3);
    ck_assert_int_eq(cio_pread(fd, buf, 8, far), 3);
    ck_assert_mem_eq(buf, "far", 3);
    ck_assert_int_eq(ftruncate(fd, 15), 0);

    /* read / write / readv / writev use and move the file position. */
    ck_assert_int_eq(cio_write(fd, "HE", 2), 2);
    ck_assert_int_eq(lseek(fd, 0, SEEK_CUR), 2);
    ck_assert_int_eq(cio_read(fd, buf, 3), 3);
    ck_assert_mem_eq(buf, "llo", 3);
    ck_assert_int_eq(lseek(fd, 0, SEEK_CUR), 5);
    char a[2], b[3];
    struct iovec iov[2] = {{a, 2}, {b, 3}};
    ck_assert_int_eq(lseek(fd, 10, SEEK_SET), 10);
    ck_assert_int_eq(cio_readv(fd, iov, 2), 5);
    ck_assert_mem_eq(a, "wo", 2);
    ck_assert_mem_eq(b, "rld", 3);
    ck_assert_int_eq(cio_read(fd, buf, sizeof buf), 0);
    ck_assert_int_eq(cio_write_all(fd, "!!", 2, NULL), 0);
    ck_assert_int_eq(cio_pread(fd, buf, sizeof buf, 0), 17);
    ck_assert_mem_eq(buf, "HEllo\0\0\0\0\0world!!", 17);

    /* Negative offsets. */
    ck_assert_int_eq(cio_pread(fd, buf, 1, -1), -EINVAL);
    ck_assert_int_eq(cio_pwrite(fd, buf, 1, -5), -EINVAL);
    ck_assert_int_eq(cio_pread(fd, buf, 1, INT64_MIN), -EINVAL);
    /* NULL buffers with a length. */
    ck_assert_int_eq(cio_pread(fd, NULL, 1, 0), -EINVAL);
    ck_assert_int_eq(cio_pwrite(fd, NULL, 1, 0), -EINVAL);
    ck_assert_int_eq(cio_pwrite(fd, NULL, 0, 0), 0);

    /* Access mode: reading a write-only fd, writing a read-only one. */
    int wo = open("/dev/null", O_WRONLY | O_CLOEXEC);
    int ro = open("/dev/null", O_RDONLY | O_CLOEXEC);
    ck_assert_int_ge(wo, 0);
    ck_assert_int_ge(ro, 0);
    ck_assert_int_eq(cio_pread(wo, buf, 1, 0), -EBADF);
    ck_assert_int_eq(cio_read(wo, buf, 1), -EBADF);
    ck_assert_int_eq(cio_pwrite(ro, "x", 1, 0), -EBADF);
    ck_assert_int_eq(cio_write(ro, "x", 1), -EBADF);
    xclose(wo);
    xclose(ro);
    /* fsync of a pipe. */
    int p[2];
    make_pipe(p);
    ck_assert_int_eq(cio_fsync(p[1], false), -EINVAL);
    xclose(p[0]);
    xclose(p[1]);

    /* cio_wait_fd on a regular file: epoll refuses it (-EPERM); io_uring
     * reports it always ready, as poll(2) does. */
    int rc = cio_wait_fd(fd, CIO_READABLE);
    if (on_uring())
        ck_assert_int_eq(rc, CIO_READABLE);
    else
        ck_assert_int_eq(rc, -EPERM);
    xclose(fd);
    return 0;
}

START_TEST(io_file_pread_pwrite_fsync)
{
    run_task(main_file, NULL);
}
END_TEST

/* -EBADF for fd -1 and for a number that is not open, on every call. */
static int main_ebadf(void *arg, void **result)
{
    (void)arg;
    (void)result;
    int closed = temp_file();
    xclose(closed);
    int fds[] = {-1, closed};
    char buf[8] = "x";
    struct iovec iov = {buf, 1};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
    addr_t a;
    memset(&a, 0, sizeof a);
    a.in.sin_family = AF_INET;
    for (int k = 0; k < 2; k++) {
        int fd = fds[k];
        ck_assert_int_eq(cio_pread(fd, buf, 1, 0), -EBADF);
        ck_assert_int_eq(cio_pwrite(fd, buf, 1, 0), -EBADF);
        ck_assert_int_eq(cio_fsync(fd, false), -EBADF);
        ck_assert_int_eq(cio_fsync(fd, true), -EBADF);
        ck_assert_int_eq(cio_read(fd, buf, 1), -EBADF);
        ck_assert_int_eq(cio_write(fd, buf, 1), -EBADF);
        ck_assert_int_eq(cio_readv(fd, &iov, 1), -EBADF);
        ck_assert_int_eq(cio_writev(fd, &iov, 1), -EBADF);
        ck_assert_int_eq(cio_sock_recv(fd, buf, 1, 0), -EBADF);
        ck_assert_int_eq(cio_sock_send(fd, buf, 1, 0), -EBADF);
        ck_assert_int_eq(cio_sock_recv_into(fd, &iov, 1, 0), -EBADF);
        ck_assert_int_eq(cio_sock_recvmsg(fd, &m, 0), -EBADF);
        ck_assert_int_eq(cio_sock_sendmsg(fd, &m, 0), -EBADF);
        ck_assert_int_eq(cio_sock_recvfrom(fd, buf, 1, 0, NULL, NULL), -EBADF);
        ck_assert_int_eq(cio_sock_sendto(fd, buf, 1, 0, &a.sa, sizeof a.in), -EBADF);
        ck_assert_int_eq(cio_sock_accept(fd, NULL, NULL), -EBADF);
        ck_assert_int_eq(cio_sock_connect(fd, &a.sa, sizeof a.in), -EBADF);
        size_t n = 99;
        ck_assert_int_eq(cio_sock_sendall(fd, buf, 1, 0, &n), -EBADF);
        ck_assert_uint_eq(n, 0);
        n = 99;
        ck_assert_int_eq(cio_write_all(fd, buf, 1, &n), -EBADF);
        ck_assert_uint_eq(n, 0);
        ck_assert_int_eq(cio_close(fd), -EBADF);
    }
    ck_assert_int_eq(cio_wait_fd(closed, CIO_READABLE), -EBADF);
    return 0;
}

START_TEST(io_ebadf)
{
    run_task(main_ebadf, NULL);
}
END_TEST

static int main_einval(void *arg, void **result)
{
    (void)arg;
    (void)result;
    int sv[2];
    make_pair(sv);
    char buf[4];
    struct iovec iov = {buf, sizeof buf};
    ck_assert_int_eq(cio_sock_recv(sv[0], NULL, 1, 0), -EINVAL);
    ck_assert_int_eq(cio_sock_send(sv[0], NULL, 1, 0), -EINVAL);
    ck_assert_int_eq(cio_read(sv[0], NULL, 1), -EINVAL);
    ck_assert_int_eq(cio_write(sv[0], NULL, 1), -EINVAL);
    ck_assert_int_eq(cio_sock_recv_into(sv[0], NULL, 1, 0), -EINVAL);
    ck_assert_int_eq(cio_sock_recv_into(sv[0], &iov, -1, 0), -EINVAL);
    ck_assert_int_eq(cio_sock_recv_into(sv[0], &iov, IOV_MAX + 1, 0), -EINVAL);
    ck_assert_int_eq(cio_readv(sv[0], NULL, 1), -EINVAL);
    ck_assert_int_eq(cio_readv(sv[0], &iov, -1), -EINVAL);
    ck_assert_int_eq(cio_writev(sv[0], &iov, IOV_MAX + 1), -EINVAL);
    ck_assert_int_eq(cio_sock_recvmsg(sv[0], NULL, 0), -EINVAL);
    ck_assert_int_eq(cio_sock_sendmsg(sv[0], NULL, 0), -EINVAL);
    ck_assert_int_eq(cio_sock_recvfrom(sv[0], NULL, 1, 0, NULL, NULL), -EINVAL);
    ck_assert_int_eq(cio_sock_sendto(sv[0], NULL, 1, 0, NULL, 0), -EINVAL);
    /* Nothing was consumed or sent by the refused calls. */
    ck_assert_int_eq(send(sv[1], "ok", 2, 0), 2);
    ck_assert_int_eq(cio_sock_recv(sv[0], buf, sizeof buf, 0), 2);
    ck_assert_int_eq(recv(sv[1], buf, sizeof buf, MSG_DONTWAIT), -1);
    ck_assert_int_eq(errno, EAGAIN);
    /* Unknown families and types come back from socket(2). */
    ck_assert_int_eq(cio_socket(-1, SOCK_STREAM, 0), -EAFNOSUPPORT);
    ck_assert_int_eq(cio_socket(AF_INET, 12345, 0), -EINVAL);
    xclose(sv[0]);
    xclose(sv[1]);
    return 0;
}

START_TEST(io_einval)
{
    run_task(main_einval, NULL);
}
END_TEST

/* Every operation outside a task: -EPERM, with no loop and from a callback
 * of a running loop. Nothing is read or written. */
struct eperm_probe {
    int fd, file, lfd;
    int calls;
};

static void check_eperm(struct eperm_probe *p)
{
    char buf[4] = "abc";
    struct iovec iov = {buf, 3};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
    addr_t a;
    memset(&a, 0, sizeof a);
    a.in.sin_family = AF_INET;
    socklen_t alen = sizeof a;
    size_t n = 99;
    ck_assert_int_eq(cio_sock_recv(p->fd, buf, 3, 0), -EPERM);
    ck_assert_int_eq(cio_sock_send(p->fd, buf, 3, 0), -EPERM);
    ck_assert_int_eq(cio_sock_recv_into(p->fd, &iov, 1, 0), -EPERM);
    ck_assert_int_eq(cio_sock_recvmsg(p->fd, &m, 0), -EPERM);
    ck_assert_int_eq(cio_sock_sendmsg(p->fd, &m, 0), -EPERM);
    ck_assert_int_eq(cio_sock_recvfrom(p->fd, buf, 3, 0, NULL, NULL), -EPERM);
    ck_assert_int_eq(cio_sock_sendto(p->fd, buf, 3, 0, NULL, 0), -EPERM);
    ck_assert_int_eq(cio_sock_sendall(p->fd, buf, 3, 0, &n), -EPERM);
    ck_assert_uint_eq(n, 0);
    ck_assert_int_eq(cio_sock_accept(p->lfd, &a.sa, &alen), -EPERM);
    ck_assert_int_eq(cio_sock_connect(p->fd, &a.sa, sizeof a.in), -EPERM);
    ck_assert_int_eq(cio_read(p->fd, buf, 3), -EPERM);
    ck_assert_int_eq(cio_write(p->fd, buf, 3), -EPERM);
    n = 99;
    ck_assert_int_eq(cio_write_all(p->fd, buf, 3, &n), -EPERM);
    ck_assert_uint_eq(n, 0);
    ck_assert_int_eq(cio_readv(p->fd, &iov, 1), -EPERM);
    ck_assert_int_eq(cio_writev(p->fd, &iov, 1), -EPERM);
    ck_assert_int_eq(cio_pread(p->file, buf, 3, 0), -EPERM);
    ck_assert_int_eq(cio_pwrite(p->file, buf, 3, 0), -EPERM);
    ck_assert_int_eq(cio_fsync(p->file, false), -EPERM);
    ck_assert_int_eq(cio_wait_fd(p->fd, CIO_READABLE), -EPERM);
    p->calls++;
}

static void cb_eperm(void *arg)
{
    check_eperm(arg);
}

START_TEST(io_eperm_outside_task)
{
    int sv[2];
    make_pair(sv);
    addr_t la;
    socklen_t llen;
    struct eperm_probe p = {.fd = sv[0], .file = temp_file()};
    p.lfd = bound_socket(AF_INET, SOCK_STREAM, 4, &la, &llen);
    ck_assert_int_ge(p.lfd, 0);
    ck_assert_int_eq(send(sv[1], "data", 4, 0), 4);
    check_eperm(&p);
    cio_loop_t *l = new_loop();
    ck_assert_int_eq(cio_call_soon(l, NULL, cb_eperm, &p), 0);
    ck_assert_int_eq(cio_call_soon(l, NULL, cb_stop, l), 0);
    ck_assert_int_eq(cio_loop_run_forever(l), 0);
    ck_assert_int_eq(p.calls, 2);
    close_loop(l);
    /* Nothing moved: the data is still there, the peer got nothing. */
    char buf[8];
    ck_assert_int_eq(recv(sv[0], buf, sizeof buf, MSG_DONTWAIT), 4);
    ck_assert_int_eq(recv(sv[1], buf, sizeof buf, MSG_DONTWAIT), -1);
    struct stat st;
    ck_assert_int_eq(fstat(p.file, &st), 0);
    ck_assert_int_eq(st.st_size, 0);
    close(p.file);
    close(p.lfd);
    close(sv[0]);
    close(sv[1]);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* 11. Backend selection                                                     */
/* ------------------------------------------------------------------------ */

/* A round trip through a socketpair on loop l: the backend works. */
static int main_roundtrip(void *arg, void **result)
{
    (void)arg;
    (void)result;
    int sv[2];
    make_pair(sv);
    struct sock_reader r = {.fd = sv[0], .rc = 12345};
    cio_task_t *t = spawn(sock_reader_body, &r);
    settle();
    ck_assert(!r.done);
    ck_assert_int_eq(cio_sock_send(sv[1], "rt", 2, 0), 2);
    ck_assert_int_eq(finish(t), 0);
    ck_assert_int_eq(r.rc, 2);
    ck_assert_mem_eq(r.buf, "rt", 2);
    xclose(sv[0]);
    xclose(sv[1]);
    return 0;
}

/* Makes a loop asking for `which` in debug mode (so that a fallback is
 * reported), returns it with what it wrote on stderr. */
static cio_loop_t *loop_with(cio_backend_t which, char **err)
{
    cio_loop_opts_t o;
    memset(&o, 0, sizeof o);
    o.backend = which;
    const char *old = getenv("CIO_DEBUG");
    char *saved = old ? strdup(old) : NULL;
    ck_assert_int_eq(setenv("CIO_DEBUG", "1", 1), 0);
    capture_t cap;
    capture_begin(&cap);
    cio_loop_t *l = NULL;
    int rc = cio_loop_new_ex(&l, &o);
    *err = capture_end(&cap);
    if (saved) {
        setenv("CIO_DEBUG", saved, 1);
        free(saved);
    } else {
        unsetenv("CIO_DEBUG");
    }
    ck_assert_int_eq(rc, 0);
    ck_assert_ptr_nonnull(l);
    cio_loop_set_debug(l, false);
    return l;
}

START_TEST(io_backend_explicit)
{
    char *err;
    cio_loop_t *l = loop_with(CIO_BACKEND_EPOLL, &err);
    ck_assert_str_eq(cio_loop_backend(l), "epoll");
    ck_assert_str_eq(err, "");
    free(err);
    run_task_on(l, main_roundtrip, NULL);
    close_loop(l);

    l = loop_with(CIO_BACKEND_URING, &err);
    const char *name = cio_loop_backend(l);
    if (strcmp(name, "io_uring") == 0) {
        ck_assert_str_eq(err, "");
    } else {
        /* A fallback to epoll is allowed only where io_uring is missing
         * (the kernel refuses it, or the library was built without
         * liburing: then it reports ENOSYS), and debug mode says so. */
        ck_assert_str_eq(name, "epoll");
        ck_assert_msg(strstr(err, "io_uring unavailable") != NULL, "stderr: %s", err);
        if (kernel_has_uring())
            ck_assert_msg(strstr(err, cio_strerror(-ENOSYS)) != NULL, "stderr: %s", err);
    }
    free(err);
    run_task_on(l, main_roundtrip, NULL);
    close_loop(l);

    /* Loops of both backends at once in one thread, run one after the
     * other. */
    cio_loop_t *e = loop_with(CIO_BACKEND_EPOLL, &err);
    free(err);
    cio_loop_t *u = loop_with(CIO_BACKEND_URING, &err);
    free(err);
    run_task_on(u, main_roundtrip, NULL);
    run_task_on(e, main_roundtrip, NULL);
    run_task_on(u, main_roundtrip, NULL);
    close_loop(e);
    close_loop(u);
    ck_assert_ptr_null(cio_loop_backend(NULL));
}
END_TEST

START_TEST(io_backend_invalid_opts)
{
    cio_loop_opts_t o;
    cio_loop_t *l = NULL;
    memset(&o, 0, sizeof o);
    o.backend = (cio_backend_t)3;
    l = NOT_SET;
    ck_assert_int_eq(cio_loop_new_ex(&l, &o), -EINVAL);
    ck_assert_ptr_null(l);
    o.backend = (cio_backend_t)-1;
    l = NOT_SET;
    ck_assert_int_eq(cio_loop_new_ex(&l, &o), -EINVAL);
    ck_assert_ptr_null(l);
    o.backend = (cio_backend_t)1000;
    l = NOT_SET;
    ck_assert_int_eq(cio_loop_new_ex(&l, &o), -EINVAL);
    ck_assert_ptr_null(l);
    for (int k = 0; k < 4; k++) {
        memset(&o, 0, sizeof o);
        o.backend = CIO_BACKEND_EPOLL;
        o.reserved_[k] = &o;
        l = NOT_SET;
        ck_assert_int_eq(cio_loop_new_ex(&l, &o), -EINVAL);
        ck_assert_ptr_null(l);
    }
    memset(&o, 0, sizeof o);
    ck_assert_int_eq(cio_loop_new_ex(NULL, &o), -EINVAL);
    ck_assert_int_eq(cio_loop_new_ex(NULL, NULL), -EINVAL);
    /* Zeroed options and NULL are the defaults. */
    ck_assert_int_eq(cio_loop_new_ex(&l, &o), 0);
    cio_loop_t *d = NULL;
    ck_assert_int_eq(cio_loop_new_ex(&d, NULL), 0);
    ck_assert_str_eq(cio_loop_backend(l), cio_loop_backend(d));
    close_loop(l);
    close_loop(d);
}
END_TEST

/* CIO_BACKEND picks the default backend, so that NAME_uring really runs on
 * io_uring (where the machine has it). */
START_TEST(io_backend_env)
{
    const char *env = getenv("CIO_BACKEND");
    char *err;
    cio_loop_t *u = loop_with(CIO_BACKEND_URING, &err);
    free(err);
    const char *uname = cio_loop_backend(u);
    cio_loop_t *d = new_loop();
    if (env && (strcmp(env, "uring") == 0 || strcmp(env, "io_uring") == 0))
        ck_assert_str_eq(cio_loop_backend(d), uname);
    else
        ck_assert_str_eq(cio_loop_backend(d), "epoll");
    close_loop(d);
    static const struct {
        const char *env;
        bool uring;
    } cases[] = {{"epoll", false}, {"uring", true}, {"io_uring", true}, {"bogus", false}};
    char *saved = env ? strdup(env) : NULL;
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        ck_assert_int_eq(setenv("CIO_BACKEND", cases[k].env, 1), 0);
        d = new_loop();
        ck_assert_str_eq(cio_loop_backend(d), cases[k].uring ? uname : "epoll");
        close_loop(d);
    }
    ck_assert_int_eq(unsetenv("CIO_BACKEND"), 0);
    d = new_loop();
    ck_assert_str_eq(cio_loop_backend(d), "epoll");
    close_loop(d);
    if (saved) {
        setenv("CIO_BACKEND", saved, 1);
        free(saved);
    }
    close_loop(u);
}
END_TEST

/*
 * Full duplex on one socket: a task blocked in a send (full buffer) and
 * another blocked in a recv on the same fd at the same time; both
 * directions become ready in the same loop iteration and both calls finish.
 */
struct duplex_writer {
    int fd;
    unsigned char *buf;
    size_t len;
    size_t sent;
    int rc;
};

static int duplex_writer_body(void *arg, void **result)
{
    (void)result;
    struct duplex_writer *w = arg;
    w->rc = cio_sock_sendall(w->fd, w->buf, w->len, 0, &w->sent);
    return 0;
}

static int main_duplex(void *arg, void **result)
{
    (void)arg;
    (void)result;
    int sv[2];
    make_pair(sv);
    size_t filled = fill_fd(sv[0]);
    struct duplex_writer w = {.fd = sv[0], .len = 50000, .rc = 12345};
    w.buf = pattern_buf(w.len);
    struct sock_reader r = {.fd = sv[0], .rc = 12345};
    cio_task_t *tw = spawn(duplex_writer_body, &w);
    cio_task_t *tr = spawn(sock_reader_body, &r);
    settle();
    ck_assert_int_eq(w.rc, 12345);
    ck_assert(!r.done);
    /* Both directions at once, with no await point in between. (On
     * io_uring the send may complete inside the kernel while the filler
     * is being read, so exactly the filler is read here.) */
    ck_assert_int_eq(send(sv[1], "both", 4, 0), 4);
    static char fb[65536];
    for (size_t left = filled; left;) {
        ssize_t n = recv(sv[1], fb, left < sizeof fb ? left : sizeof fb, MSG_DONTWAIT);
        ck_assert_int_gt(n, 0);
        for (ssize_t i = 0; i < n; i++)
            ck_assert_int_eq(fb[i], 'F');
        left -= (size_t)n;
    }
    ck_assert_int_eq(finish(tr), 0);
    ck_assert_int_eq(r.rc, 4);
    ck_assert_mem_eq(r.buf, "both", 4);
    /* The writer's bytes follow the filler. */
    unsigned char *got = malloc(w.len);
    ck_assert_ptr_nonnull(got);
    ck_assert_int_eq(recv_exact(sv[1], got, w.len), (ssize_t)w.len);
    ck_assert_int_eq(finish(tw), 0);
    ck_assert_int_eq(w.rc, 0);
    ck_assert_uint_eq(w.sent, w.len);
    ck_assert_int_lt(pattern_mismatch(got, w.len, 0), 0);
    free(got);
    free(w.buf);
    xclose(sv[0]);
    xclose(sv[1]);
    return 0;
}

START_TEST(io_duplex_same_fd)
{
    run_task(main_duplex, NULL);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Many operations at once                                                    */
/* ------------------------------------------------------------------------ */

#define MANY 400 /* more than io_uring's submission queue (256) */

struct many {
    int fds[MANY][2];
    struct sock_reader r[MANY];
};

static int main_many(void *arg, void **result)
{
    (void)arg;
    (void)result;
    struct many *m = calloc(1, sizeof *m);
    ck_assert_ptr_nonnull(m);
    cio_task_t **t = calloc(MANY, sizeof *t);
    ck_assert_ptr_nonnull(t);
    /* All start (and submit) in the same loop iteration. */
    for (int i = 0; i < MANY; i++) {
        make_pair(m->fds[i]);
        m->r[i].fd = m->fds[i][0];
        m->r[i].rc = 12345;
        t[i] = spawn(sock_reader_body, &m->r[i]);
    }
    settle();
    for (int i = 0; i < MANY; i++)
        ck_assert(!m->r[i].done);
    for (int i = 0; i < MANY; i++) {
        char msg[16];
        int len = snprintf(msg, sizeof msg, "m%d", i);
        ck_assert_int_eq(send(m->fds[i][1], msg, (size_t)len, 0), len);
    }
    for (int i = 0; i < MANY; i++) {
        ck_assert_int_eq(finish(t[i]), 0);
        char msg[16];
        int len = snprintf(msg, sizeof msg, "m%d", i);
        ck_assert_int_eq(m->r[i].rc, len);
        ck_assert_mem_eq(m->r[i].buf, msg, (size_t)len);
    }
    /* Again, all cancelled at once. */
    for (int i = 0; i < MANY; i++) {
        m->r[i].rc = 12345;
        m->r[i].done = 0;
        t[i] = spawn(sock_reader_body, &m->r[i]);
    }
    settle();
    for (int i = 0; i < MANY; i++)
        ck_assert_int_eq(cio_task_cancel(t[i]), 1);
    for (int i = 0; i < MANY; i++) {
        ck_assert_int_eq(finish(t[i]), 0);
        ck_assert_int_eq(m->r[i].rc, -ECANCELED);
        xclose(m->fds[i][0]);
        xclose(m->fds[i][1]);
    }
    free(t);
    free(m);
    return 0;
}

START_TEST(io_many_concurrent_ops)
{
    run_task(main_many, NULL);
}
END_TEST

/* ------------------------------------------------------------------------ */

static Suite *io_suite(void)
{
    Suite *s = suite_create("io");
    TCase *tc = add_tcase(s, "stream", TEST_TIMEOUT);
    tcase_add_test(tc, io_socketpair_pingpong);
    tcase_add_test(tc, io_recv_into_scatter);
    tcase_add_test(tc, io_sendmsg_recvmsg_rights);
    tcase_add_test(tc, io_readv_writev_pipe);
    tcase_add_loop_test(tc, io_sendall_big, 0, 2);
    tcase_add_test(tc, io_sendall_zero_and_null);
    tcase_add_loop_test(tc, io_sendall_cancel_counts, 0, 2);
    tcase_add_test(tc, io_many_concurrent_ops);
    tcase_add_test(tc, io_duplex_same_fd);

    tc = add_tcase(s, "tcp", TEST_TIMEOUT);
    tcase_add_loop_test(tc, io_tcp_accept_connect, 0, 2);
    tcase_add_test(tc, io_accept_errors);
    tcase_add_test(tc, io_connect_refused);
    tcase_add_test(tc, io_connect_unix_backlog_full);
    tcase_add_test(tc, io_connect_deadline);
    tcase_add_test(tc, io_recv_deadline);
    tcase_add_test(tc, io_peer_reset);

    tc = add_tcase(s, "udp", TEST_TIMEOUT);
    tcase_add_test(tc, io_udp);

    tc = add_tcase(s, "pipe", TEST_TIMEOUT);
    tcase_add_test(tc, io_pipe_read_write);
    tcase_add_loop_test(tc, io_epipe_no_sigpipe, 0, 2);

    tc = add_tcase(s, "cancel", TEST_TIMEOUT);
    tcase_add_loop_test(tc, io_blocked_cancel_or_deadline, 0, 2 * K_COUNT);
    tcase_add_test(tc, io_race_recv_cancel);
    tcase_add_test(tc, io_race_send_cancel);
    tcase_add_test(tc, io_race_accept_cancel);

    tc = add_tcase(s, "wait_fd", TEST_TIMEOUT);
    tcase_add_test(tc, io_wait_fd_events);
    tcase_add_test(tc, io_wait_fd_ebusy);
    tcase_add_loop_test(tc, io_close_wakes_fd_waiter, 0, 3);
    tcase_add_loop_test(tc, io_close_wakes_blocked_op, 0, 3);
    tcase_add_loop_test(tc, io_close_reuse_blocked_op, 0, 3);
    tcase_add_test(tc, io_close_then_reuse_number);
    tcase_add_test(tc, io_close_spares_dup);
    tcase_add_loop_test(tc, io_stale_event_in_batch, 0, 2);
    tcase_add_test(tc, io_close_contract);

    tc = add_tcase(s, "file", TEST_TIMEOUT);
    tcase_add_test(tc, io_file_pread_pwrite_fsync);
    tcase_add_test(tc, io_ebadf);
    tcase_add_test(tc, io_einval);
    tcase_add_test(tc, io_eperm_outside_task);

    tc = add_tcase(s, "backend", TEST_TIMEOUT);
    tcase_add_test(tc, io_backend_explicit);
    tcase_add_test(tc, io_backend_invalid_opts);
    tcase_add_test(tc, io_backend_env);
    return s;
}

CIO_TEST_MAIN(io_suite)
