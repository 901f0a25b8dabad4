/*
 * Faults of the networking layer, provoked for real: resets (SO_LINGER 0),
 * writes to a closed peer with SIGPIPE at its default action, a server out
 * of descriptors (RLIMIT_NOFILE lowered), a client trickling bytes, lines
 * over the limit, partial writes through tiny socket buffers, half-closed
 * connections, a server closed under open connections, and what debug mode
 * reports when a loop closes with network objects still open (and that
 * the close releases them, without leaks under ASan).
 */
#include "cio_net_test.h"

#include <sys/resource.h>
#include <sys/time.h>

#if defined(__SANITIZE_ADDRESS__)
#define NET_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define NET_ASAN 1
#endif
#endif
#ifdef NET_ASAN
#include <sanitizer/lsan_interface.h>
#endif

/* ------------------------------------------------------------------------ */
/* Resets                                                                    */
/* ------------------------------------------------------------------------ */

/* A reset after some bytes: they are read first, then -ECONNRESET, and
 * every later call returns it. */
static int main_reset_read(void *arg, void **result)
{
    (void)arg;
    (void)result;
    int peer;
    cio_stream_t *s = stream_pair(0, &peer, NULL);
    peer_send_str(peer, "abc");
    wait_buffered(s, 3);
    linger0(peer);
    ck_assert_int_eq(cio_close(peer), 0);
    char buf[16];
    ck_assert_int_eq(cio_stream_read(s, buf, sizeof buf), 3);
    ck_assert_mem_eq(buf, "abc", 3);
    ck_assert_int_eq(cio_stream_read(s, buf, sizeof buf), -ECONNRESET);
    ck_assert_int_eq(cio_stream_read(s, buf, sizeof buf), -ECONNRESET);
    ck_assert_int_eq(cio_stream_readline(s, buf, sizeof buf), -ECONNRESET);
    ck_assert_int_eq(cio_stream_readexactly(s, buf, 1, NULL), -ECONNRESET);
    char *all = NOT_SET;
    size_t len;
    ck_assert_int_eq(cio_stream_read_all(s, &all, &len, 0), -ECONNRESET);
    ck_assert_ptr_null(all);
    ck_assert_int_eq(cio_stream_write(s, "x", 1), -ECONNRESET);
    ck_assert_int_eq(cio_stream_write_eof(s), -ECONNRESET);
    ck_assert_int_eq(cio_stream_drain(s), -ECONNRESET);
    ck_assert_int_eq(cio_stream_close(s), -ECONNRESET);
    return 0;
}

START_TEST(fault_reset_read)
{
    run_net(main_reset_read, NULL);
}
END_TEST

/*
 * A reset while readexactly / readuntil wait with part of what they need:
 * cio.h says errors other than the early EOF consume nothing, so the bytes
 * must still be readable.
 */
static int main_reset_partial(void *arg, void **result)
{
    (void)result;
    int until = *(int *)arg;
    int peer;
    cio_stream_t *s = stream_pair(0, &peer, NULL);
    peer_send_str(peer, "abc");
    wait_buffered(s, 3);
    linger0(peer);
    ck_assert_int_eq(cio_close(peer), 0);
    char buf[16];
    size_t got = 777;
    ssize_t r = until ? cio_stream_readuntil(s, "\n", 1, buf, sizeof buf, &got)
                      : cio_stream_readexactly(s, buf, 10, &got);
    ck_assert_int_eq(r, -ECONNRESET);
    /* Nothing consumed (the first version copied them to buf, counted them
     * in *got and consumed them, as for -ENODATA). */
    ck_assert_msg(cio_stream_buffered(s) == 3,
                  "%s consumed %zu byte(s) on -ECONNRESET (buffered now %zu)",
                  until ? "readuntil" : "readexactly", got, cio_stream_buffered(s));
    ck_assert_int_eq(cio_stream_read(s, buf, sizeof buf), 3);
    ck_assert_mem_eq(buf, "abc", 3);
    ck_assert_int_eq(cio_stream_read(s, buf, sizeof buf), -ECONNRESET);
    ck_assert_int_eq(cio_stream_close(s), -ECONNRESET);
    return 0;
}

START_TEST(fault_reset_partial)
{
    int until = _i;
    run_net(main_reset_partial, &until);
}
END_TEST

/* A reset while output is queued: drain and write see -ECONNRESET. */
typedef struct drainer {
    cio_stream_t *s;
    int rc;
    int done;
} drainer;

static int drainer_body(void *arg, void **result)
{
    (void)result;
    drainer *d = arg;
    d->rc = cio_stream_drain(d->s);
    d->done = 1;
    return 0;
}

static int main_reset_drain(void *arg, void **result)
{
    (void)arg;
    (void)result;
    int peer;
    cio_stream_opts_t o = {.high_water = 16384};
    cio_stream_t *s = slow_stream(&peer, &o);
    unsigned char *data = pattern_buf(0, 4 * MIB);
    ck_assert_int_eq(cio_stream_write(s, data, 4 * MIB), 0);
    free(data);
    ck_assert_uint_gt(wbuf(s), o.high_water);
    drainer d = {.s = s, .rc = 12345};
    cio_task_t *t = spawn(drainer_body, &d);
    ck_assert_int_eq(cio_sleep(D_SHORT), 0);
    ck_assert(!d.done);
    linger0(peer);
    ck_assert_int_eq(cio_close(peer), 0);
    ck_assert_int_eq(finish(t), 0);
    ck_assert_int_eq(d.rc, -ECONNRESET);
    ck_assert_int_eq(cio_stream_write(s, "x", 1), -ECONNRESET);
    ck_assert_int_eq(cio_stream_drain(s), -ECONNRESET);
    char c;
    ck_assert_int_eq(cio_stream_read(s, &c, 1), -ECONNRESET);
    ck_assert_int_eq(cio_stream_close(s), -ECONNRESET);
    return 0;
}

START_TEST(fault_reset_drain)
{
    run_net(main_reset_drain, NULL);
}
END_TEST

/* A client resetting while its handler waits: the handler sees it, and the
 * server forgets the connection. */
typedef struct hctx {
    int rc;
    int finished;
    int64_t elapsed;
    size_t buffered;
    size_t nread;
    const char *reply;
} hctx;

static void readline_handler(cio_stream_t *s, void *arg)
{
    hctx *h = arg;
    char line[64];
    h->rc = (int)cio_stream_readline(s, line, sizeof line);
    h->finished++;
}

static bool h_finished(void *arg)
{
    return ((hctx *)arg)->finished > 0;
}

static bool nconn_zero(void *arg)
{
    return cio_server_connections(arg) == 0;
}

static void server_done(cio_server_t *sv)
{
    ck_assert_int_eq(cio_server_close(sv), 0);
    ck_assert_int_eq(cio_server_wait_closed(sv, HANG_BOUND_S), 0);
    ck_assert_int_eq(cio_server_free(sv), 0);
}

static int main_reset_in_handler(void *arg, void **result)
{
    (void)arg;
    (void)result;
    hctx h = {.rc = 12345};
    cio_server_t *sv;
    ck_assert_int_eq(cio_start_server(&sv, "127.0.0.1", 0, readline_handler, &h, NULL), 0);
    int fd = -1;
    ck_assert_int_eq(cio_connect_tcp(&fd, "127.0.0.1", cio_server_port(sv), NULL), 0);
    peer_send_str(fd, "no newline");
    ck_assert_int_eq(cio_sleep(D_SHORT), 0);
    ck_assert_int_eq(h.finished, 0);
    linger0(fd);
    ck_assert_int_eq(cio_close(fd), 0);
    wait_until(h_finished, &h, "the handler");
    ck_assert_int_eq(h.rc, -ECONNRESET);
    wait_until(nconn_zero, sv, "the connection to end");
    server_done(sv);
    return 0;
}

START_TEST(fault_reset_in_handler)
{
    run_net(main_reset_in_handler, NULL);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Writing to a closed peer: an error, never SIGPIPE                         */
/* ------------------------------------------------------------------------ */

static void sigpipe_default(void)
{
    /* The default action kills the process: a SIGPIPE would end the test
     * with a signal instead of passing. */
    signal(SIGPIPE, SIG_DFL);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    ck_assert_int_eq(sigprocmask(SIG_UNBLOCK, &set, NULL), 0);
}

static bool pipe_err(int rc)
{
    return rc == -EPIPE || rc == -ECONNRESET;
}

static void dummy_data(cio_transport_t *t, const void *data, size_t n, void *ctx)
{
    (void)t;
    (void)data;
    (void)n;
    (void)ctx;
}

static void note_lost(cio_transport_t *t, int err, void *ctx)
{
    (void)t;
    *(int *)ctx = err == 0 ? 1 : err;
}

static bool lost_pred(void *arg)
{
    return *(int *)arg != 0;
}

static int main_epipe(void *arg, void **result)
{
    (void)result;
    int how = *(int *)arg;
    sigpipe_default();
    int peer;
    if (how == 0 || how == 1) {
        /* A Unix socket whose peer is gone: -EPIPE from the first write. */
        cio_stream_t *s = stream_pair(1, &peer, NULL);
        ck_assert_int_eq(cio_close(peer), 0);
        struct iovec iov[2] = {{"ab", 2}, {"cd", 2}};
        int rc = how == 0 ? cio_stream_write(s, "x", 1) : cio_stream_writev(s, iov, 2);
        ck_assert_int_eq(rc, -EPIPE);
        ck_assert_int_eq(cio_stream_write(s, "x", 1), -EPIPE);
        ck_assert_int_eq(cio_stream_writev(s, iov, 2), -EPIPE);
        ck_assert_int_eq(cio_stream_drain(s), -EPIPE);
        ck_assert_int_eq(cio_stream_close(s), -EPIPE);
    } else if (how == 2) {
        /* TCP, the peer closed normally: the first bytes are taken by the
         * kernel, the peer answers with a reset, later writes fail; big
         * writes make the loop's own sends meet the error too. */
        cio_stream_t *s = stream_pair(0, &peer, NULL);
        ck_assert_int_eq(cio_close(peer), 0);
        unsigned char *data = pattern_buf(0, MIB);
        int rc = 0;
        for (int i = 0; i < 200 && !rc; i++) {
            rc = cio_stream_write(s, data, i % 2 ? MIB : 10);
            if (!rc)
                rc = cio_sleep(0.005) ? -EINTR : 0;
        }
        free(data);
        ck_assert_msg(pipe_err(rc), "write to a closed TCP peer: %s", cio_strerror(rc));
        ck_assert(pipe_err(cio_stream_write(s, "x", 1)));
        ck_assert(pipe_err(cio_stream_drain(s)));
        ck_assert(pipe_err(cio_stream_close(s)));
    } else {
        /* A transport over a Unix socket: the write fails, then
         * connection_lost reports the error. */
        int sv[2];
        unix_pair(sv);
        int lost = 0;
        static const cio_protocol_t p = {.data_received = dummy_data,
                                         .connection_lost = note_lost};
        cio_transport_t *t;
        ck_assert_int_eq(cio_transport_new(&t, sv[0], &p, &lost, NULL), 0);
        ck_assert_int_eq(cio_close(sv[1]), 0);
        /* Our receive sees the EOF first (and closes us), or the write
         * meets the broken pipe: either way no signal. */
        int rc = cio_transport_write(t, "x", 1);
        ck_assert_msg(rc == -EPIPE || rc == 0 || rc == -ESHUTDOWN, "write: %s",
                      cio_strerror(rc));
        wait_until(lost_pred, &lost, "connection_lost");
        ck_assert_msg(lost == 1 || lost == -EPIPE, "lost: %d", lost);
    }
    return 0;
}

START_TEST(fault_epipe)
{
    int how = _i;
    run_net(main_epipe, &how);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Out of descriptors while accepting                                        */
/* ------------------------------------------------------------------------ */

static void echo_line_handler(cio_stream_t *s, void *arg)
{
    hctx *h = arg;
    char line[64];
    ssize_t n = cio_stream_readline(s, line, sizeof line);
    if (n > 0) {
        cio_stream_write(s, line, (size_t)n);
        cio_stream_drain(s);
    }
    h->finished++;
}

static double cpu_seconds(void)
{
    struct rusage ru;
    ck_assert_int_eq(getrusage(RUSAGE_SELF, &ru), 0);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static int highest_fd(void)
{
    DIR *d = opendir("/proc/self/fd");
    ck_assert_ptr_nonnull(d);
    int hi = -1;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.' && atoi(e->d_name) > hi)
            hi = atoi(e->d_name);
    closedir(d);
    return hi;
}

/*
 * The process out of descriptors: RLIMIT_NOFILE just above the highest in
 * use and every free number below it taken, but `keep` left free for what
 * the test opens next. Lowered before the server starts, so that every
 * accept is made under the new limit (io_uring takes the limit when an
 * accept is submitted: one submitted earlier would still get a
 * descriptor).
 */
typedef struct fdjail {
    struct rlimit old;
    int fillers[4096];
    int n;
} fdjail;

static void fds_exhaust(fdjail *j, int keep)
{
    ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &j->old), 0);
    struct rlimit lim = j->old;
    lim.rlim_cur = (rlim_t)highest_fd() + 8 + (rlim_t)keep;
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &lim), 0);
    j->n = 0;
    for (;;) {
        int fd = dup(0);
        if (fd < 0) {
            ck_assert_int_eq(errno, EMFILE);
            break;
        }
        ck_assert_int_lt(j->n, 4096);
        j->fillers[j->n++] = fd;
    }
    ck_assert_int_ge(j->n, keep);
    for (int i = 0; i < keep; i++)
        close(j->fillers[--j->n]);
}

static void fds_release(fdjail *j)
{
    for (int i = 0; i < j->n; i++)
        close(j->fillers[i]);
    j->n = 0;
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &j->old), 0);
}

static int main_emfile(void *arg, void **result)
{
    (void)arg;
    (void)result;
    enum { NC = 3 };
    fdjail *j = malloc(sizeof *j);
    ck_assert_ptr_nonnull(j);
    /* Room for the listening socket and the clients' sockets only. */
    fds_exhaust(j, 1 + NC);
    hctx h = {.rc = 12345};
    cio_server_t *sv;
    ck_assert_int_eq(cio_start_server(&sv, "127.0.0.1", 0, echo_line_handler, &h, NULL), 0);
    int port = cio_server_port(sv);
    addr_t a;
    memset(&a, 0, sizeof a);
    a.in.sin_family = AF_INET;
    a.in.sin_port = htons((uint16_t)port);
    a.in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int cl[NC];
    for (int i = 0; i < NC; i++) {
        cl[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(cl[i], 0);
    }
    ck_assert_int_eq(dup(0), -1);
    ck_assert_int_eq(errno, EMFILE);
    /* The clients connect (the kernel queues them) and send a line. */
    for (int i = 0; i < NC; i++) {
        ck_assert_int_eq(connect(cl[i], &a.sa, sizeof a.in), 0);
        ck_assert_int_eq(send(cl[i], "hi\n", 3, 0), 3);
        set_nonblock(cl[i]);
    }
    /* Out of descriptors for 300 ms: the server does not spin. */
    double cpu0 = cpu_seconds();
    ck_assert_int_eq(cio_sleep(0.3), 0);
    double cpu = cpu_seconds() - cpu0;
    ck_assert_msg(cpu < 0.1, "%.3f s of CPU in 300 ms while out of descriptors", cpu);
    ck_assert_uint_eq(cio_server_connections(sv), 0);
    ck_assert_int_eq(h.finished, 0);
    char buf[8];
    for (int i = 0; i < NC; i++) {
        ck_assert_int_eq(recv(cl[i], buf, sizeof buf, MSG_DONTWAIT), -1);
        ck_assert_int_eq(errno, EAGAIN);
    }
    /* Descriptors free again: every queued client is served. */
    fds_release(j);
    for (int i = 0; i < NC; i++) {
        cio_scope_t sc;
        ck_assert_int_eq(cio_scope_enter(&sc, HANG_BOUND_S, 0), 0);
        ck_assert_int_eq(peer_recv_exact(cl[i], buf, 3), 3);
        ck_assert_int_eq(cio_scope_exit(&sc), 0);
        ck_assert_mem_eq(buf, "hi\n", 3);
    }
    /* And new ones too. */
    cio_stream_t *s;
    ck_assert_int_eq(cio_open_connection(&s, "127.0.0.1", port, NULL), 0);
    ck_assert_int_eq(cio_stream_write(s, "new\n", 4), 0);
    ck_assert_int_eq(cio_stream_readline(s, buf, sizeof buf), 4);
    ck_assert_mem_eq(buf, "new\n", 4);
    ck_assert_int_eq(cio_stream_close(s), 0);
    for (int i = 0; i < NC; i++)
        ck_assert_int_eq(cio_close(cl[i]), 0);
    wait_until(nconn_zero, sv, "the connections to end");
    ck_assert_int_eq(h.finished, NC + 1);
    server_done(sv);
    free(j);
    return 0;
}

START_TEST(fault_emfile)
{
    run_net(main_emfile, NULL);
}
END_TEST

/* Out of descriptors with a connection open: when it ends, the
 * descriptor it frees takes the next client. */
static void hold_handler(cio_stream_t *s, void *arg)
{
    hctx *h = arg;
    char line[64];
    ssize_t n;
    while ((n = cio_stream_readline(s, line, sizeof line)) > 0)
        if (cio_stream_write(s, line, (size_t)n))
            break;
    h->finished++;
}

static int main_emfile_conn_end(void *arg, void **result)
{
    (void)arg;
    (void)result;
    fdjail *j = malloc(sizeof *j);
    ck_assert_ptr_nonnull(j);
    /* The listener, the first client and its server end, the second
     * client's socket. */
    fds_exhaust(j, 4);
    hctx h = {.rc = 12345};
    cio_server_t *sv;
    ck_assert_int_eq(cio_start_server(&sv, "127.0.0.1", 0, hold_handler, &h, NULL), 0);
    int port = cio_server_port(sv);
    int first = -1;
    ck_assert_int_eq(cio_connect_tcp(&first, "127.0.0.1", port, NULL), 0);
    peer_send_str(first, "1\n");
    char buf[8];
    ck_assert_int_eq(peer_recv_exact(first, buf, 2), 2);
    int second = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(second, 0);
    ck_assert_int_eq(dup(0), -1);
    ck_assert_int_eq(errno, EMFILE);
    addr_t a;
    memset(&a, 0, sizeof a);
    a.in.sin_family = AF_INET;
    a.in.sin_port = htons((uint16_t)port);
    a.in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(connect(second, &a.sa, sizeof a.in), 0);
    set_nonblock(second);
    peer_send_str(second, "2\n");
    ck_assert_int_eq(cio_sleep(0.15), 0);
    ck_assert_uint_eq(cio_server_connections(sv), 1);
    ck_assert_int_eq(recv(second, buf, sizeof buf, MSG_DONTWAIT), -1);
    ck_assert_int_eq(errno, EAGAIN);
    /* The first client leaves: the second is served while the fillers
     * still hold every other descriptor. */
    ck_assert_int_eq(cio_close(first), 0);
    cio_scope_t sc;
    ck_assert_int_eq(cio_scope_enter(&sc, HANG_BOUND_S, 0), 0);
    ck_assert_int_eq(peer_recv_exact(second, buf, 2), 2);
    ck_assert_int_eq(cio_scope_exit(&sc), 0);
    ck_assert_mem_eq(buf, "2\n", 2);
    fds_release(j);
    ck_assert_int_eq(cio_close(second), 0);
    wait_until(nconn_zero, sv, "the connections to end");
    server_done(sv);
    free(j);
    return 0;
}

START_TEST(fault_emfile_conn_end)
{
    run_net(main_emfile_conn_end, NULL);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Slow and oversized input                                                  */
/* ------------------------------------------------------------------------ */

/* A deadline around the handler's read cuts a client that trickles one
 * byte every 50 ms; the bytes that came stay in the stream. */
static void deadline_handler(cio_stream_t *s, void *arg)
{
    hctx *h = arg;
    char line[256];
    int64_t t0 = loop_ns();
    cio_scope_t sc;
    ck_assert_int_eq(cio_scope_enter(&sc, 0.25, 0), 0);
    h->rc = (int)cio_stream_readline(s, line, sizeof line);
    ck_assert_int_eq(cio_scope_exit(&sc), h->rc == -ETIMEDOUT ? -ETIMEDOUT : 0);
    h->elapsed = loop_ns() - t0;
    h->buffered = cio_stream_buffered(s);
    cio_stream_write(s, "too slow\n", 9);
    h->finished++;
}

typedef struct trickler {
    int fd;
    int stop;
    int sent;
} trickler;

static int trickle_body(void *arg, void **result)
{
    (void)result;
    trickler *t = arg;
    while (!t->stop && t->sent < 100) {
        if (cio_sock_send(t->fd, "x", 1, 0) != 1)
            break;
        t->sent++;
        if (cio_sleep(0.05))
            break;
    }
    return 0;
}

static int main_trickle(void *arg, void **result)
{
    (void)arg;
    (void)result;
    hctx h = {.rc = 12345};
    cio_server_t *sv;
    ck_assert_int_eq(cio_start_server(&sv, "127.0.0.1", 0, deadline_handler, &h, NULL), 0);
    int fd = -1;
    ck_assert_int_eq(cio_connect_tcp(&fd, "127.0.0.1", cio_server_port(sv), NULL), 0);
    trickler tr = {.fd = fd};
    cio_task_t *t = spawn(trickle_body, &tr);
    char buf[16];
    cio_scope_t sc;
    ck_assert_int_eq(cio_scope_enter(&sc, HANG_BOUND_S, 0), 0);
    ck_assert_int_eq(peer_recv_exact(fd, buf, 9), 9);
    ck_assert_int_eq(cio_scope_exit(&sc), 0);
    ck_assert_mem_eq(buf, "too slow\n", 9);
    tr.stop = 1;
    ck_assert_int_eq(finish(t), 0);
    ck_assert_int_eq(h.rc, -ETIMEDOUT);
    ck_assert_int_ge(h.elapsed, 250000000);
    ck_assert_int_lt(h.elapsed, 2250000000LL);
    ck_assert_uint_ge(h.buffered, 3);
    ck_assert_uint_le(h.buffered, (size_t)tr.sent);
    /* The server then closed the connection. */
    ssize_t k = cio_sock_recv(fd, buf, sizeof buf, 0);
    ck_assert_msg(k == 0 || k == -ECONNRESET, "after the reply: %zd", k);
    ck_assert_int_eq(cio_close(fd), 0);
    wait_until(nconn_zero, sv, "the connection to end");
    server_done(sv);
    return 0;
}

START_TEST(fault_trickle)
{
    run_net(main_trickle, NULL);
}
END_TEST

/* A line longer than the stream limit: -EOVERFLOW, and the bytes are
 * still all there. */
static void long_line_handler(cio_stream_t *s, void *arg)
{
    hctx *h = arg;
    char line[1024];
    h->rc = (int)cio_stream_readline(s, line, sizeof line);
    h->buffered = cio_stream_buffered(s);
    if (h->rc == -EOVERFLOW) {
        ssize_t n = cio_stream_readexactly(s, line, 201, NULL);
        bool intact = n == 201 && line[200] == '\n';
        for (int i = 0; intact && i < 200; i++)
            intact = line[i] == 'a';
        n = cio_stream_readline(s, line, sizeof line);
        intact = intact && n == 6 && !memcmp(line, "short\n", 6);
        cio_stream_write(s, intact ? "ok\n" : "bad\n", intact ? 3 : 4);
    }
    h->finished++;
}

static int main_line_too_long(void *arg, void **result)
{
    (void)arg;
    (void)result;
    hctx h = {.rc = 12345};
    cio_stream_opts_t so = {.limit = 64};
    cio_server_opts_t o = {.stream = &so};
    cio_server_t *sv;
    ck_assert_int_eq(cio_start_server(&sv, "127.0.0.1", 0, long_line_handler, &h, &o), 0);
    int fd = -1;
    ck_assert_int_eq(cio_connect_tcp(&fd, "127.0.0.1", cio_server_port(sv), NULL), 0);
    char msg[208];
    memset(msg, 'a', 200);
    memcpy(msg + 200, "\nshort\n", 7);
    peer_send(fd, msg, 207);
    char buf[8];
    ck_assert_int_eq(peer_recv_exact(fd, buf, 3), 3);
    ck_assert_mem_eq(buf, "ok\n", 3);
    ck_assert_int_eq(h.rc, -EOVERFLOW);
    ck_assert_uint_ge(h.buffered, 64);
    ck_assert_int_eq(cio_sock_recv(fd, buf, sizeof buf, 0), 0);
    ck_assert_int_eq(cio_close(fd), 0);
    wait_until(nconn_zero, sv, "the connection to end");
    server_done(sv);
    return 0;
}

START_TEST(fault_line_too_long)
{
    run_net(main_line_too_long, NULL);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Partial writes                                                            */
/* ------------------------------------------------------------------------ */

/* A tiny SO_SNDBUF on the stream's own socket: every write is taken in
 * part by the kernel, the rest queued; the peer reads 1000 bytes at a
 * time. Nothing is lost, duplicated or reordered. */
static int main_partial_writes(void *arg, void **result)
{
    (void)result;
    int kind = *(int *)arg; /* 0 stream, 1 transport */
    int sv[2];
    tcp_pair(sv);
    size_t big = 2 * MIB, npieces = 64;
    size_t total = big;
    for (size_t i = 0; i < npieces; i++)
        total += 1000 + i;
    unsigned char *data = pattern_buf(0, total);
    struct iovec iov[64];
    size_t off = big;
    for (size_t i = 0; i < npieces; i++) {
        iov[i].iov_base = data + off;
        iov[i].iov_len = 1000 + i;
        off += 1000 + i;
    }
    peer_reader r;
    peer_reader_init(&r, sv[1], SIZE_MAX, 0, true);
    r.chunk = 1000;
    cio_stream_t *s = NULL;
    cio_transport_t *t = NULL;
    int lost = 0;
    static const cio_protocol_t p = {.data_received = dummy_data, .connection_lost = note_lost};
    if (kind == 0) {
        ck_assert_int_eq(cio_stream_new(&s, sv[0], NULL), 0);
        t = cio_stream_transport(s);
    } else {
        ck_assert_int_eq(cio_transport_new(&t, sv[0], &p, &lost, NULL), 0);
    }
    small_sndbuf(cio_transport_fd(t));
    ck_assert_int_eq(kind == 0 ? cio_stream_write(s, data, big) : cio_transport_write(t, data, big),
                     0);
    /* The kernel took part; the rest waits in the transport. */
    ck_assert_uint_gt(cio_transport_get_write_buffer_size(t), 0);
    ck_assert_uint_lt(cio_transport_get_write_buffer_size(t), big);
    ck_assert_int_eq(kind == 0 ? cio_stream_writev(s, iov, (int)npieces)
                               : cio_transport_writev(t, iov, (int)npieces),
                     0);
    cio_task_t *rt = spawn(peer_reader_body, &r);
    if (kind == 0) {
        ck_assert_int_eq(cio_stream_close(s), 0);
    } else {
        cio_transport_close(t);
        wait_until(lost_pred, &lost, "connection_lost");
        ck_assert_int_eq(lost, 1);
    }
    ck_assert_int_eq(finish(rt), 0);
    ck_assert_int_eq(r.end, 0);
    ck_assert_uint_eq(r.got, total);
    ck_assert_int_eq(r.bad, -1);
    ck_assert_int_eq(cio_close(sv[1]), 0);
    free(data);
    return 0;
}

START_TEST(fault_partial_writes)
{
    int kind = _i;
    run_net(main_partial_writes, &kind);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Half-closed connections                                                   */
/* ------------------------------------------------------------------------ */

/* The client sends its request and half-closes; the handler reads to EOF,
 * then answers at length on its still open side. */
static void request_handler(cio_stream_t *s, void *arg)
{
    hctx *h = arg;
    char *req = NULL;
    size_t len = 0;
    h->rc = cio_stream_read_all(s, &req, &len, 0);
    h->nread = len;
    h->buffered = cio_stream_at_eof(s);
    free(req);
    unsigned char *data = pattern_buf(0, MIB);
    if (!h->rc)
        h->rc = cio_stream_write(s, data, MIB);
    free(data);
    h->finished++;
}

static int main_half_closed(void *arg, void **result)
{
    (void)result;
    int unix_sock = *(int *)arg;
    hctx h = {.rc = 12345};
    cio_server_t *sv;
    cio_stream_t *s;
    char dir[] = "/tmp/cio-hc-XXXXXX", path[64];
    if (unix_sock) {
        ck_assert_ptr_nonnull(mkdtemp(dir));
        snprintf(path, sizeof path, "%s/s", dir);
        ck_assert_int_eq(cio_start_unix_server(&sv, path, request_handler, &h, NULL), 0);
        ck_assert_int_eq(cio_open_unix_connection(&s, path, NULL), 0);
    } else {
        ck_assert_int_eq(cio_start_server(&sv, "127.0.0.1", 0, request_handler, &h, NULL), 0);
        ck_assert_int_eq(cio_open_connection(&s, "127.0.0.1", cio_server_port(sv), NULL), 0);
    }
    ck_assert_int_eq(cio_stream_write(s, "request", 7), 0);
    ck_assert_int_eq(cio_stream_write_eof(s), 0);
    unsigned char *in = malloc(MIB);
    ck_assert_ptr_nonnull(in);
    ck_assert_int_eq(cio_stream_readexactly(s, in, MIB, NULL), (ssize_t)MIB);
    ck_assert_int_eq(pattern_mismatch(in, MIB, 0), -1);
    free(in);
    char c;
    ck_assert_int_eq(cio_stream_read(s, &c, 1), 0);
    ck_assert(cio_stream_at_eof(s));
    ck_assert_int_eq(h.rc, 0);
    ck_assert_uint_eq(h.nread, 7);
    ck_assert_uint_eq(h.buffered, 1); /* at_eof in the handler */
    ck_assert_int_eq(cio_stream_close(s), 0);
    server_done(sv);
    if (unix_sock)
        ck_assert_int_eq(rmdir(dir), 0);
    return 0;
}

START_TEST(fault_half_closed)
{
    int u = _i;
    run_net(main_half_closed, &u);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* A server closed under open connections loses nothing                      */
/* ------------------------------------------------------------------------ */

typedef struct bulk {
    int started, finished, rc[4];
    size_t queued[4];
    cio_event_t all_wrote;
    int wrote;
    int n;
} bulk;

static void bulk_handler(cio_stream_t *s, void *arg)
{
    bulk *b = arg;
    int me = b->started++;
    /* A small kernel buffer on the server's side: most of the output
     * stays queued in the stream when the server is closed. */
    small_sndbuf(cio_transport_fd(cio_stream_transport(s)));
    unsigned char *data = pattern_buf((size_t)me * 7, MIB);
    int rc = cio_stream_write(s, data, MIB);
    free(data);
    b->queued[me] = wbuf(s);
    if (++b->wrote == b->n)
        cio_event_set(&b->all_wrote);
    char c;
    b->rc[me] = rc ? rc : (int)cio_stream_read(s, &c, 1);
    b->finished++;
}

static int main_server_close_no_loss(void *arg, void **result)
{
    (void)arg;
    (void)result;
    bulk b;
    memset(&b, 0, sizeof b);
    b.n = 3;
    ck_assert_int_eq(cio_event_init(&b.all_wrote), 0);
    cio_server_t *sv;
    ck_assert_int_eq(cio_start_server(&sv, "127.0.0.1", 0, bulk_handler, &b, NULL), 0);
    int fds[3];
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(cio_connect_tcp(&fds[i], "127.0.0.1", cio_server_port(sv), NULL), 0);
    ck_assert_int_eq(cio_event_wait(&b.all_wrote), 0);
    for (int i = 0; i < 3; i++)
        ck_assert_uint_gt(b.queued[i], MIB / 2);
    ck_assert_int_eq(cio_server_close(sv), 0);
    cio_server_close_clients(sv);
    /* Still flushing to clients that have not read yet. */
    ck_assert_int_eq(cio_sleep(D_SHORT), 0);
    ck_assert_uint_eq(cio_server_connections(sv), 3);
    for (int i = 0; i < 3; i++) {
        /* Which handler served which client is the order of accepts: find
         * it from the first bytes. */
        peer_reader r;
        unsigned char first[8];
        ck_assert_int_eq(peer_recv_exact(fds[i], first, 8), 8);
        int who = -1;
        for (int k = 0; k < 3; k++)
            if (pattern_mismatch(first, 8, (size_t)k * 7) < 0)
                who = k;
        ck_assert_int_ge(who, 0);
        peer_reader_init(&r, fds[i], SIZE_MAX, (size_t)who * 7 + 8, true);
        ck_assert_int_eq(peer_reader_body(&r, NULL), 0);
        ck_assert_int_eq(r.end, 0);
        ck_assert_uint_eq(r.got + 8, MIB);
        ck_assert_int_eq(r.bad, -1);
        ck_assert_int_eq(cio_close(fds[i]), 0);
    }
    ck_assert_int_eq(cio_server_wait_closed(sv, HANG_BOUND_S), 0);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(b.rc[i], -ESHUTDOWN);
    ck_assert_int_eq(cio_server_free(sv), 0);
    return 0;
}

START_TEST(fault_server_close_no_loss)
{
    run_net(main_server_close_no_loss, NULL);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Debug mode: what is left open when the loop closes                        */
/* ------------------------------------------------------------------------ */

/* Checks inside the child of run_child_stderr: a failure is a message on
 * stderr and exit status 1 (check's assertions belong to the test process). */
#define CHILD_CHECK(cond)                                                        \
    do {                                                                         \
        if (!(cond)) {                                                           \
            fprintf(stderr, "CHILD FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond); \
            fflush(stderr);                                                      \
            _exit(1);                                                            \
        }                                                                        \
    } while (0)

typedef struct leftovers {
    int fds[8];
    int nfds;
    int port;
} leftovers;

static void idle_handler(cio_stream_t *s, void *arg)
{
    (void)arg;
    char c;
    cio_stream_read(s, &c, 1); /* until the loop's shutdown cancels it */
}

static int noop_factory(void *arg, const cio_protocol_t **proto, void **ctx)
{
    static const cio_protocol_t p = {.data_received = dummy_data};
    (void)arg;
    *proto = &p;
    *ctx = NULL;
    return 0;
}

/* Opens one of everything and returns without closing any of it. */
static int leave_open_body(void *arg, void **result)
{
    (void)result;
    leftovers *lo = arg;
    int sv[2];
    /* A stream with unread input and queued output. */
    CHILD_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    cio_stream_t *s;
    CHILD_CHECK(cio_stream_new(&s, sv[0], NULL) == 0);
    CHILD_CHECK(send(sv[1], "unread", 6, 0) == 6);
    lo->fds[lo->nfds++] = sv[0];
    lo->fds[lo->nfds++] = sv[1]; /* the test's own end: not cio's to close */
    /* A transport. */
    CHILD_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    static const cio_protocol_t p = {.data_received = dummy_data};
    cio_transport_t *t;
    CHILD_CHECK(cio_transport_new(&t, sv[0], &p, NULL, NULL) == 0);
    lo->fds[lo->nfds++] = sv[0];
    close(sv[1]);
    /* A stream server with a connection, and a protocol server with one. */
    cio_server_t *srv, *psrv;
    CHILD_CHECK(cio_start_server(&srv, "127.0.0.1", 0, idle_handler, NULL, NULL) == 0);
    lo->port = cio_server_port(srv);
    cio_stream_t *c1, *c2;
    CHILD_CHECK(cio_open_connection(&c1, "127.0.0.1", lo->port, NULL) == 0);
    CHILD_CHECK(cio_create_server(&psrv, "127.0.0.1", 0, noop_factory, NULL, NULL) == 0);
    CHILD_CHECK(cio_open_connection(&c2, "127.0.0.1", cio_server_port(psrv), NULL) == 0);
    lo->fds[lo->nfds++] = cio_transport_fd(cio_stream_transport(c1));
    lo->fds[lo->nfds++] = cio_transport_fd(cio_stream_transport(c2));
    for (int i = 0; i < 20 && (cio_server_connections(srv) < 1 ||
                               cio_server_connections(psrv) < 1); i++)
        CHILD_CHECK(cio_sleep(0.01) == 0);
    CHILD_CHECK(cio_server_connections(srv) == 1);
    CHILD_CHECK(cio_server_connections(psrv) == 1);
    CHILD_CHECK(cio_stream_write(s, "queued", 6) == 0);
    return 0;
}

static void debug_child(void *arg)
{
    (void)arg;
    leftovers lo;
    memset(&lo, 0, sizeof lo);
    cio_loop_t *l = NULL;
    CHILD_CHECK(cio_loop_new(&l) == 0);
    cio_loop_set_debug(l, true);
    cio_task_t *t;
    CHILD_CHECK(cio_spawn_ex(&t, l, leave_open_body, &lo, NULL) == 0);
    CHILD_CHECK(cio_loop_run_until_complete(l, t, NULL) == 0);
    cio_future_release(t);
    /* The handler task still runs: shutdown cancels it, close reports the
     * rest and releases it. */
    CHILD_CHECK(cio_loop_shutdown(l) == 0);
    CHILD_CHECK(cio_loop_close(l) == 0);
    CHILD_CHECK(cio_loop_free(l) == 0);
    /* Every descriptor cio owned is closed (nothing opened since, so their
     * numbers are not reused). */
    CHILD_CHECK(fcntl(lo.fds[0], F_GETFD) == -1);
    CHILD_CHECK(fcntl(lo.fds[1], F_GETFD) >= 0);
    for (int i = 2; i < lo.nfds; i++)
        CHILD_CHECK(fcntl(lo.fds[i], F_GETFD) == -1);
    close(lo.fds[1]);
    /* The listening socket too: nothing accepts on the port. */
    int c = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)lo.port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    CHILD_CHECK(connect(c, (struct sockaddr *)&a, sizeof a) == -1 && errno == ECONNREFUSED);
    close(c);
#ifdef NET_ASAN
    CHILD_CHECK(__lsan_do_recoverable_leak_check() == 0);
#endif
    fprintf(stderr, "CHILD OK\n");
}

/*
 * Regression (found by these tests under ASan on epoll): at loop close with
 * a stream left open, the stream's transport was on the loop's list before
 * its stream and was released first; the stream's release then read the
 * freed transport. A stream's transport is now listed only once it is on
 * its own (detached, still flushing).
 */
START_TEST(fault_debug_report)
{
    int st;
    const char *out = run_child_stderr(debug_child, NULL, &st);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fprintf(stderr, "child's stderr:\n%s\n", out); /* may be too long for check */
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %d", st);
    ck_assert_msg(strstr(out, "CHILD OK"), "stderr:\n%s", out);
    ck_assert_msg(strstr(out, "cio: loop closed with a stream still open"), "stderr:\n%s", out);
    ck_assert_msg(strstr(out, "cio: loop closed with a transport still open"), "stderr:\n%s",
                  out);
    ck_assert_msg(strstr(out, "cio: loop closed with a server still open"), "stderr:\n%s", out);
    /* The details: the stream's unread and queued bytes, both servers with
     * their connection. */
    ck_assert_msg(strstr(out, "6 byte(s) unread"), "stderr:\n%s", out);
    ck_assert_msg(strstr(out, "1 connection(s)"), "stderr:\n%s", out);
}
END_TEST

/* Without debug mode nothing is reported, and the close still releases. */
static void quiet_child(void *arg)
{
    (void)arg;
    leftovers lo;
    memset(&lo, 0, sizeof lo);
    cio_loop_t *l = NULL;
    CHILD_CHECK(cio_loop_new(&l) == 0);
    cio_loop_set_debug(l, false);
    cio_task_t *t;
    CHILD_CHECK(cio_spawn_ex(&t, l, leave_open_body, &lo, NULL) == 0);
    CHILD_CHECK(cio_loop_run_until_complete(l, t, NULL) == 0);
    cio_future_release(t);
    CHILD_CHECK(cio_loop_shutdown(l) == 0);
    CHILD_CHECK(cio_loop_close(l) == 0);
    CHILD_CHECK(cio_loop_free(l) == 0);
    for (int i = 2; i < lo.nfds; i++)
        CHILD_CHECK(fcntl(lo.fds[i], F_GETFD) == -1);
#ifdef NET_ASAN
    CHILD_CHECK(__lsan_do_recoverable_leak_check() == 0);
#endif
    fprintf(stderr, "CHILD OK\n");
}

START_TEST(fault_quiet_close)
{
    int st;
    const char *out = run_child_stderr(quiet_child, NULL, &st);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fprintf(stderr, "child's stderr:\n%s\n", out);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %d", st);
    ck_assert_msg(strstr(out, "CHILD OK"), "stderr:\n%s", out);
    ck_assert_msg(!strstr(out, "still open"), "stderr:\n%s", out);
}
END_TEST

/* ------------------------------------------------------------------------ */

static Suite *net_faults_suite(void)
{
    Suite *s = suite_create("net_faults");
    TCase *tc = add_tcase(s, "reset", TEST_TIMEOUT);
    tcase_add_test(tc, fault_reset_read);
    tcase_add_loop_test(tc, fault_reset_partial, 0, 2);
    tcase_add_test(tc, fault_reset_drain);
    tcase_add_test(tc, fault_reset_in_handler);
    tcase_add_loop_test(tc, fault_epipe, 0, 4);

    tc = add_tcase(s, "emfile", TEST_TIMEOUT);
    tcase_add_test(tc, fault_emfile);
    tcase_add_test(tc, fault_emfile_conn_end);

    tc = add_tcase(s, "input", TEST_TIMEOUT);
    tcase_add_test(tc, fault_trickle);
    tcase_add_test(tc, fault_line_too_long);

    tc = add_tcase(s, "output", TEST_TIMEOUT);
    tcase_add_loop_test(tc, fault_partial_writes, 0, 2);
    tcase_add_loop_test(tc, fault_half_closed, 0, 2);
    tcase_add_test(tc, fault_server_close_no_loss);

    tc = add_tcase(s, "debug", TEST_TIMEOUT);
    tcase_add_test(tc, fault_debug_report);
    tcase_add_test(tc, fault_quiet_close);
    return s;
}

CIO_TEST_MAIN(net_faults_suite)
