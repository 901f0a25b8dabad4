/*
 * The ceiling of workload 5 (shared BENCH.md, "echo"): a hand-written
 * single-threaded epoll echo server in plain C, no cio. It is what the cio
 * servers (bench_echo_server) are compared with on the same machine: the
 * system calls a competent C programmer cannot avoid, and nothing else.
 *
 *   bench_echo_epoll [-p PORT] [-t SECONDS]
 *
 * Listens on 127.0.0.1:PORT (default 8888), backlog 1024, SO_REUSEADDR;
 * accepted sockets are non-blocking with TCP_NODELAY. Level-triggered: one
 * read of up to 64 KiB per readiness event, written back at once; what the
 * socket does not take is buffered and the connection then waits for
 * EPOLLOUT only (it stops reading until its backlog is sent, the plain-C
 * form of write + drain). Runs until SIGTERM/SIGINT or -t SECONDS, then
 * prints what it did on stderr. It links nothing of cio (CMake links every
 * bench_*.c with cio_static, from which it pulls no object).
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#define READ_SIZE (64 * 1024)
#define BACKLOG 1024
#define MAX_EVENTS 256

/* One connection. out holds what the socket did not take (out_off..out_len
 * still to send); while it is not empty the fd waits for EPOLLOUT only. */
typedef struct conn {
    int fd;
    char *out;
    size_t out_off, out_len, out_cap;
} conn_t;

typedef struct stats {
    uint64_t accepted, closed, errors, reads, bytes, partial_writes;
} stats_t;

typedef struct server {
    int ep, lfd, sfd;
    int spare_fd; /* kept open so that EMFILE can be survived (see accept_all) */
    stats_t st;
    char buf[READ_SIZE];
} server_t;

/* epoll_event.data.ptr tells connections from the two special fds. */
static char tag_listen, tag_signal;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int listen_on(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        perror("echo_epoll: socket");
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, BACKLOG) < 0) {
        perror("echo_epoll: bind/listen");
        close(fd);
        return -1;
    }
    return fd;
}

/* SIGTERM and SIGINT are blocked and read from a signalfd in the epoll set,
 * so a stop request is an ordinary event and costs nothing per iteration. */
static int signal_fd(void)
{
    sigset_t m;
    sigemptyset(&m);
    sigaddset(&m, SIGTERM);
    sigaddset(&m, SIGINT);
    if (sigprocmask(SIG_BLOCK, &m, NULL) < 0)
        return -1;
    return signalfd(-1, &m, SFD_NONBLOCK | SFD_CLOEXEC);
}

static int watch(int ep, int op, int fd, uint32_t events, void *ptr)
{
    struct epoll_event ev = {.events = events, .data.ptr = ptr};
    return epoll_ctl(ep, op, fd, &ev);
}

static void conn_close(server_t *s, conn_t *c, bool error)
{
    /* close() removes the fd from the epoll set (no dup of it exists). */
    close(c->fd);
    free(c->out);
    free(c);
    s->st.closed++;
    if (error)
        s->st.errors++;
}

/* Keeps bytes [p, p + n) that the socket did not take; false if out of memory. */
static bool conn_buffer(conn_t *c, const char *p, size_t n)
{
    if (c->out_off == c->out_len)
        c->out_off = c->out_len = 0;
    if (c->out_len + n > c->out_cap) {
        size_t cap = c->out_cap ? c->out_cap : READ_SIZE;
        while (cap < c->out_len + n)
            cap *= 2;
        char *q = realloc(c->out, cap);
        if (!q)
            return false;
        c->out = q, c->out_cap = cap;
    }
    memcpy(c->out + c->out_len, p, n);
    c->out_len += n;
    return true;
}

/* Writes [p, p + n); buffers the rest and switches to EPOLLOUT. Returns
 * false when the connection must be closed as failed. */
static bool conn_send(server_t *s, conn_t *c, const char *p, size_t n)
{
    ssize_t w = write(c->fd, p, n);
    if (w < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return false;
        w = 0;
    }
    if ((size_t)w == n)
        return true;
    s->st.partial_writes++;
    if (!conn_buffer(c, p + w, n - (size_t)w))
        return false;
    return watch(s->ep, EPOLL_CTL_MOD, c->fd, EPOLLOUT, c) == 0;
}

/* EPOLLIN: one read per event (level-triggered: more data gives another
 * event, and a second read would only see EAGAIN at this message size). */
static void conn_readable(server_t *s, conn_t *c)
{
    ssize_t r = read(c->fd, s->buf, READ_SIZE);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (r <= 0) {
        conn_close(s, c, r < 0); /* EOF is a clean end, ECONNRESET an error */
        return;
    }
    s->st.reads++;
    s->st.bytes += (uint64_t)r;
    if (!conn_send(s, c, s->buf, (size_t)r))
        conn_close(s, c, true);
}

/* EPOLLOUT: sends the backlog; once it is empty, reads again. */
static void conn_writable(server_t *s, conn_t *c)
{
    ssize_t w = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
    if (w < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            conn_close(s, c, true);
        return;
    }
    c->out_off += (size_t)w;
    if (c->out_off < c->out_len)
        return;
    c->out_off = c->out_len = 0;
    if (watch(s->ep, EPOLL_CTL_MOD, c->fd, EPOLLIN, c) < 0)
        conn_close(s, c, true);
}

static void conn_event(server_t *s, conn_t *c, uint32_t ev)
{
    if (ev & EPOLLOUT)
        conn_writable(s, c);
    else if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP))
        conn_readable(s, c); /* the read reports the error or EOF */
}

static void conn_new(server_t *s, int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    conn_t *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        s->st.errors++;
        return;
    }
    c->fd = fd;
    if (watch(s->ep, EPOLL_CTL_ADD, fd, EPOLLIN, c) < 0) {
        conn_close(s, c, true);
        return;
    }
    s->st.accepted++;
}

/* Accepts everything pending. Out of descriptors, a level-triggered
 * listener would fire forever: free the spare fd, accept and drop the
 * connection (the client sees it closed), and take the spare back. */
static void accept_all(server_t *s)
{
    for (;;) {
        int fd = accept4(s->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            conn_new(s, fd);
            continue;
        }
        if (errno == EINTR || errno == ECONNABORTED)
            continue;
        if ((errno == EMFILE || errno == ENFILE) && s->spare_fd >= 0) {
            close(s->spare_fd);
            fd = accept(s->lfd, NULL, NULL);
            if (fd >= 0)
                close(fd);
            s->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
            s->st.errors++;
            continue;
        }
        return; /* EAGAIN, or an error the next event retries */
    }
}

/* Runs until a signal or the deadline (0: none). */
static void serve(server_t *s, int64_t deadline)
{
    struct epoll_event ev[MAX_EVENTS];
    for (;;) {
        int timeout = -1;
        if (deadline) {
            int64_t left = deadline - now_ns();
            if (left <= 0)
                return;
            timeout = (int)((left + 999999) / 1000000);
        }
        int n = epoll_wait(s->ep, ev, MAX_EVENTS, timeout);
        if (n < 0 && errno != EINTR) {
            perror("echo_epoll: epoll_wait");
            return;
        }
        for (int i = 0; i < n; i++) {
            void *p = ev[i].data.ptr;
            if (p == &tag_signal)
                return;
            if (p == &tag_listen)
                accept_all(s);
            else
                conn_event(s, p, ev[i].events);
        }
    }
}

static int usage(const char *argv0)
{
    fprintf(stderr, "usage: %s [-p PORT] [-t SECONDS]\n", argv0);
    return 2;
}

int main(int argc, char **argv)
{
    int port = 8888;
    double seconds = 0;
    for (int i = 1; i < argc; i++) {
        char *end;
        if (strcmp(argv[i], "-p") == 0 && i + 1 < argc) {
            long v = strtol(argv[++i], &end, 10);
            if (*end || v < 0 || v > 65535)
                return usage(argv[0]);
            port = (int)v;
        } else if (strcmp(argv[i], "-t") == 0 && i + 1 < argc) {
            seconds = strtod(argv[++i], &end);
            if (*end || seconds < 0)
                return usage(argv[0]);
        } else {
            return usage(argv[0]);
        }
    }

    static server_t s; /* static: the 64 KiB read buffer is not on the stack */
    s.sfd = signal_fd();
    s.lfd = listen_on(port);
    s.ep = epoll_create1(EPOLL_CLOEXEC);
    s.spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (s.sfd < 0 || s.lfd < 0 || s.ep < 0 ||
        watch(s.ep, EPOLL_CTL_ADD, s.lfd, EPOLLIN, &tag_listen) < 0 ||
        watch(s.ep, EPOLL_CTL_ADD, s.sfd, EPOLLIN, &tag_signal) < 0) {
        fprintf(stderr, "echo_epoll: set-up failed: %s\n", strerror(errno));
        return 1;
    }
    fprintf(stderr, "echo_epoll: listening on 127.0.0.1:%d (pid %d)\n", port, (int)getpid());
    int64_t t0 = now_ns();
    serve(&s, seconds > 0 ? t0 + (int64_t)(seconds * 1e9) : 0);
    double wall = (double)(now_ns() - t0) / 1e9;
    /* Open connections are left to exit(): the kernel closes them. */
    fprintf(stderr,
            "echo_epoll: %.1f s: %llu connections accepted, %llu closed (%llu errors), "
            "%llu reads, %llu bytes echoed, %llu partial writes\n",
            wall, (unsigned long long)s.st.accepted, (unsigned long long)s.st.closed,
            (unsigned long long)s.st.errors, (unsigned long long)s.st.reads,
            (unsigned long long)s.st.bytes, (unsigned long long)s.st.partial_writes);
    return 0;
}
