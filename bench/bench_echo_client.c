/*
 * The load client of workload 5 (shared BENCH.md, "echo"): closed loop over C
 * connections, single thread, epoll, non-blocking. No cio: it is the load,
 * not the program under test, and must be the same for every server.
 *
 *   bench_echo_client [-p PORT] [-c CONNS] [-w WARMUP_S] [-d DURATION_S]
 *                     [--cpu] [--server-pid PID]
 *   bench_echo_client [-p PORT] --idle N [-d HOLD_S] [--no-ping]
 *
 * Each connection (TCP_NODELAY) sends a 64-byte message, waits for the 64
 * bytes back, checks them, records the latency and sends the next at once.
 * Messages come from a pool of 256 prepared before timing from xorshift32
 * seeded 2463534242; connection i sends pool[(i + k) % 256] as its k-th
 * message, so that neighbouring connections carry different bytes and a
 * server mixing them up fails the check. Only the measured window (after
 * the warm-up) is counted. Prints one line on stdout:
 *
 *   RESULT bench=echo msgs_per_s=... p50_us=... p99_us=... errors=... conns=...
 *
 * with client_cpu_pct=... (getrusage over the window) under --cpu, and
 * server_cpu_s=... server_cpu_pct=... server_us_per_msg=... under
 * --server-pid PID (the server's utime + stime from /proc/PID/stat, read
 * at the window's own boundaries so that warm-up and set-up are not
 * charged). errors counts
 * connections that failed (refused, reset, closed early, wrong bytes): such
 * a connection is dropped and the others go on. Exit status 1 when no
 * connection is left or none could be opened.
 *
 * --idle N opens N connections and, unless --no-ping, makes one echo round
 * trip on each (so that the server has accepted every one and run its
 * handler once), prints "RESULT bench=echo_idle idle_conns=... errors=...",
 * then holds them idle for -d seconds (default 30) or until SIGTERM/SIGINT.
 */
#include "bench_common.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define MSG 64
#define POOL 256
#define MAX_EVENTS 256

typedef struct conn {
    int fd;
    unsigned idx;     /* index, for the message pool */
    uint64_t k;       /* messages sent so far */
    size_t sent, got; /* bytes of the current message sent / received back */
    int64_t t_send;   /* when the current message was sent */
    bool want_out;    /* EPOLLOUT armed (a send was short) */
    unsigned char in[MSG];
} conn_t;

typedef struct opts {
    int port, conns;
    double warmup, duration;
    bool cpu, ping;
    long idle; /* > 0: idle mode */
    int server_pid;
} opts_t;

typedef struct client {
    opts_t o;
    int ep;
    conn_t *c;
    int alive;       /* connections still open */
    long errors;
    bool counting;   /* inside the measured window */
    uint64_t msgs;   /* replies completed inside the window */
    uint32_t *lat;   /* their latencies, ns */
    size_t nlat, caplat;
    unsigned char pool[POOL][MSG];
} client_t;

/* ------------------------------------------------------------ setup --- */

static void make_pool(client_t *cl)
{
    uint32_t x = BENCH_SEED;
    for (int m = 0; m < POOL; m++)
        for (int i = 0; i < MSG; i += 4) {
            uint32_t v = bench_xorshift32(&x);
            memcpy(&cl->pool[m][i], &v, 4);
        }
}

/* A blocking connect, then non-blocking: with one connect at a time the
 * server's accept queue never overflows (an overflow drops the SYN and the
 * connect stalls a second for the retransmission). SO_SNDTIMEO bounds a
 * connect to a server that does not answer. */
static int connect_one(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

/* Opens n connections into cl->c; failures are counted and leave fd -1. */
static void open_all(client_t *cl, int n)
{
    int first_err = 0;
    for (int i = 0; i < n; i++) {
        conn_t *c = &cl->c[i];
        c->idx = (unsigned)i;
        c->fd = connect_one(cl->o.port);
        if (c->fd >= 0) {
            struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
            if (epoll_ctl(cl->ep, EPOLL_CTL_ADD, c->fd, &ev) == 0) {
                cl->alive++;
                continue;
            }
            close(c->fd);
            c->fd = -errno;
        }
        if (!first_err)
            first_err = c->fd;
        c->fd = -1;
        cl->errors++;
    }
    if (first_err)
        fprintf(stderr, "echo_client: %ld of %d connections failed (first: %s)\n",
                cl->errors, n, strerror(-first_err));
}

/* ---------------------------------------------------------- traffic --- */

static const unsigned char *cur_msg(const client_t *cl, const conn_t *c)
{
    return cl->pool[(c->idx + c->k) % POOL];
}

static void conn_fail(client_t *cl, conn_t *c, const char *why)
{
    if (cl->errors < 5)
        fprintf(stderr, "echo_client: connection %u: %s\n", c->idx, why);
    close(c->fd); /* also leaves the epoll set */
    c->fd = -1;
    cl->alive--;
    cl->errors++;
}

/* Arms or disarms EPOLLOUT for a short send (rare: 64 bytes into an empty
 * socket buffer). */
static bool conn_want_out(client_t *cl, conn_t *c, bool on)
{
    if (c->want_out == on)
        return true;
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0u), .data.ptr = c};
    c->want_out = on;
    return epoll_ctl(cl->ep, EPOLL_CTL_MOD, c->fd, &ev) == 0;
}

/* Sends what is left of the current message; false if the connection failed. */
static bool conn_send(client_t *cl, conn_t *c)
{
    const unsigned char *m = cur_msg(cl, c);
    while (c->sent < MSG) {
        ssize_t w = send(c->fd, m + c->sent, MSG - c->sent, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return conn_want_out(cl, c, true);
            conn_fail(cl, c, strerror(errno));
            return false;
        }
        c->sent += (size_t)w;
    }
    return conn_want_out(cl, c, false);
}

static bool conn_start_msg(client_t *cl, conn_t *c)
{
    c->sent = c->got = 0;
    c->t_send = bench_now_ns();
    return conn_send(cl, c);
}

static void record(client_t *cl, int64_t ns)
{
    cl->msgs++;
    if (cl->nlat == cl->caplat) {
        size_t cap = cl->caplat * 2;
        uint32_t *p = realloc(cl->lat, cap * sizeof *p);
        if (!p)
            return; /* counted, its latency not kept */
        cl->lat = p, cl->caplat = cap;
    }
    cl->lat[cl->nlat++] = ns > UINT32_MAX ? UINT32_MAX : (uint32_t)ns;
}

/* Reads the reply; a complete and correct one is recorded and the next
 * message sent (unless stop). */
static void conn_recv(client_t *cl, conn_t *c, bool next)
{
    ssize_t r = recv(c->fd, c->in + c->got, MSG - c->got, 0);
    if (r < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            conn_fail(cl, c, strerror(errno));
        return;
    }
    if (r == 0) {
        conn_fail(cl, c, "closed by the server");
        return;
    }
    c->got += (size_t)r;
    if (c->got < MSG)
        return;
    int64_t t = bench_now_ns();
    if (c->sent < MSG || memcmp(c->in, cur_msg(cl, c), MSG) != 0) {
        conn_fail(cl, c, "wrong bytes echoed");
        return;
    }
    if (cl->counting)
        record(cl, t - c->t_send);
    c->k++;
    if (next)
        conn_start_msg(cl, c);
    else
        c->sent = c->got = 0, c->t_send = 0; /* idle: nothing in flight */
}

static void conn_event(client_t *cl, conn_t *c, uint32_t ev, bool next)
{
    if ((ev & EPOLLOUT) && !conn_send(cl, c))
        return;
    if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP))
        conn_recv(cl, c, next);
}

/* Runs the event loop until `until` (ns); returns false once no
 * connection is left. next: send the next message after each reply. */
static bool pump(client_t *cl, int64_t until, bool next)
{
    struct epoll_event ev[MAX_EVENTS];
    for (;;) {
        int64_t left = until - bench_now_ns();
        if (left <= 0)
            return true;
        if (cl->alive == 0)
            return false;
        int n = epoll_wait(cl->ep, ev, MAX_EVENTS, (int)((left + 999999) / 1000000));
        if (n < 0 && errno != EINTR) {
            perror("echo_client: epoll_wait");
            return false;
        }
        for (int i = 0; i < n; i++)
            conn_event(cl, ev[i].data.ptr, ev[i].events, next);
    }
}

/* ------------------------------------------------------ measurement --- */

static double cpu_self_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* utime + stime of pid in seconds from /proc/PID/stat, -1 if unreadable.
 * Fields 14 and 15, counted after the ")" that ends the command name
 * (which may itself hold spaces and parentheses). */
static double cpu_of_pid_s(int pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    unsigned long long ut, st;
    /* after ")": state(3) ppid pgrp session tty tpgid flags minflt cminflt
     * majflt cmajflt utime(14) stime(15) */
    if (!p || sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut,
                     &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* The q-quantile (nearest rank) of the sorted latencies, in us. */
static double quantile_us(const uint32_t *v, size_t n, double q)
{
    if (n == 0)
        return 0;
    double r = q * (double)n; /* rank ceil(q * n), 1-based */
    size_t i = (size_t)r;
    if ((double)i < r)
        i++;
    i = i ? i - 1 : 0;
    if (i >= n)
        i = n - 1;
    return (double)v[i] / 1000.0;
}

/* Whether any connection still waits for (part of) a reply. */
static bool in_flight(const client_t *cl)
{
    for (int i = 0; i < cl->o.conns; i++)
        if (cl->c[i].fd >= 0 && cl->c[i].t_send)
            return true;
    return false;
}

/* Ends the load cleanly: no new message, the replies in flight are read
 * (for at most 1 s), then every connection is closed. Closing a socket
 * with unread bytes sends a reset, which the server would count as an
 * error of its own. */
static void finish(client_t *cl)
{
    int64_t until = bench_now_ns() + 1000000000;
    while (in_flight(cl) && bench_now_ns() < until && pump(cl, bench_now_ns() + 10000000, false))
        ;
    for (int i = 0; i < cl->o.conns; i++)
        if (cl->c[i].fd >= 0)
            close(cl->c[i].fd);
}

static int run_load(client_t *cl)
{
    cl->caplat = 1u << 21; /* 2M samples (8 MiB), prefaulted: growth is rare */
    cl->lat = bench_alloc(cl->caplat * sizeof *cl->lat);
    open_all(cl, cl->o.conns);
    int opened = cl->alive;
    for (int i = 0; i < cl->o.conns; i++)
        if (cl->c[i].fd >= 0)
            conn_start_msg(cl, &cl->c[i]);
    /* With no connection open the window is empty, and the RESULT line
     * still says so (errors = conns asked for). */
    int64_t t0 = bench_now_ns();
    bool ok = opened > 0 && pump(cl, t0 + (int64_t)(cl->o.warmup * 1e9), true);

    /* The window: counted from here to its end, CPU read at both ends. */
    double cpu0 = cpu_self_s(), scpu0 = cl->o.server_pid ? cpu_of_pid_s(cl->o.server_pid) : 0;
    int64_t w0 = bench_now_ns();
    cl->counting = true;
    if (ok)
        ok = pump(cl, w0 + (int64_t)(cl->o.duration * 1e9), true);
    int64_t w1 = bench_now_ns();
    double cpu1 = cpu_self_s(), scpu1 = cl->o.server_pid ? cpu_of_pid_s(cl->o.server_pid) : 0;
    cl->counting = false;

    finish(cl);

    /* An empty window (nothing opened) reports zero rates, not noise. */
    double wall = w1 - w0 > 1000000 ? (double)(w1 - w0) / 1e9 : INFINITY;
    qsort(cl->lat, cl->nlat, sizeof *cl->lat, cmp_u32);
    printf("RESULT bench=echo msgs_per_s=%.0f p50_us=%.1f p99_us=%.1f errors=%ld conns=%d",
           (double)cl->msgs / wall, quantile_us(cl->lat, cl->nlat, 0.50),
           quantile_us(cl->lat, cl->nlat, 0.99), cl->errors, opened);
    if (cl->o.cpu)
        printf(" client_cpu_pct=%.1f", (cpu1 - cpu0) / wall * 100.0);
    if (cl->o.server_pid) {
        if (scpu0 < 0 || scpu1 < 0)
            printf(" server_cpu_s=n/a server_cpu_pct=n/a server_us_per_msg=n/a");
        else
            printf(" server_cpu_s=%.2f server_cpu_pct=%.1f server_us_per_msg=%.2f",
                   scpu1 - scpu0, (scpu1 - scpu0) / wall * 100.0,
                   cl->msgs ? (scpu1 - scpu0) * 1e6 / (double)cl->msgs : 0.0);
    }
    printf("\n");
    fflush(stdout);
    fprintf(stderr, "echo_client: %llu messages in %.3f s over %d connections, %d still open\n",
            (unsigned long long)cl->msgs, wall, opened, cl->alive);
    return ok && cl->alive > 0 ? 0 : 1;
}

/* ------------------------------------------------------------- idle --- */

/* Blocks SIGTERM/SIGINT into a signalfd in the epoll set, so that the hold
 * ends cleanly on them. Returns the fd or -1. */
static int add_signal_fd(int ep)
{
    sigset_t m;
    sigemptyset(&m);
    sigaddset(&m, SIGTERM);
    sigaddset(&m, SIGINT);
    if (sigprocmask(SIG_BLOCK, &m, NULL) < 0)
        return -1;
    int fd = signalfd(-1, &m, SFD_NONBLOCK | SFD_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    if (fd >= 0 && epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Holds the connections until the deadline or a signal; a connection the
 * server closes or resets meanwhile is counted in errors. */
static void hold(client_t *cl, int64_t until)
{
    struct epoll_event ev[MAX_EVENTS];
    for (;;) {
        int64_t left = until - bench_now_ns();
        if (left <= 0)
            return;
        int n = epoll_wait(cl->ep, ev, MAX_EVENTS, (int)((left + 999999) / 1000000));
        for (int i = 0; i < n; i++) {
            if (!ev[i].data.ptr)
                return; /* the signalfd */
            conn_event(cl, ev[i].data.ptr, ev[i].events, false);
        }
    }
}

/* One round trip on every connection at once; returns when all are back
 * (or failed), or after 30 s. */
static void ping_all(client_t *cl, int n)
{
    for (int i = 0; i < n; i++)
        if (cl->c[i].fd >= 0)
            conn_start_msg(cl, &cl->c[i]);
    int64_t until = bench_now_ns() + 30 * (int64_t)1000000000;
    struct epoll_event ev[MAX_EVENTS];
    uint64_t want = 0;
    for (int i = 0; i < n; i++)
        want += cl->c[i].fd >= 0;
    uint64_t done = 0;
    while (done < want && cl->alive > 0 && bench_now_ns() < until) {
        int k = epoll_wait(cl->ep, ev, MAX_EVENTS, 1000);
        for (int i = 0; i < k; i++) {
            conn_t *c = ev[i].data.ptr;
            if (!c)
                continue;
            uint64_t before = c->k;
            int alive = cl->alive;
            conn_event(cl, c, ev[i].events, false);
            done += (c->k != before) + (cl->alive != alive);
        }
    }
}

static int run_idle(client_t *cl)
{
    int n = (int)cl->o.idle;
    int64_t t0 = bench_now_ns();
    open_all(cl, n);
    if (cl->o.ping)
        ping_all(cl, n);
    int64_t t1 = bench_now_ns();
    printf("RESULT bench=echo_idle idle_conns=%d errors=%ld setup_ms=%.1f\n", cl->alive,
           cl->errors, bench_ms(t1 - t0));
    fflush(stdout);
    if (add_signal_fd(cl->ep) < 0)
        perror("echo_client: signalfd (the hold ends on its deadline only)");
    hold(cl, t1 + (int64_t)(cl->o.duration * 1e9));
    return cl->alive == n ? 0 : 1;
}

/* ------------------------------------------------------------- main --- */

static int usage(const char *argv0)
{
    fprintf(stderr,
            "usage: %s [-p PORT] [-c CONNS] [-w WARMUP_S] [-d DURATION_S] [--cpu]"
            " [--server-pid PID]\n"
            "       %s [-p PORT] --idle N [-d HOLD_S] [--no-ping]\n",
            argv0, argv0);
    return 2;
}

static bool parse_num(const char *s, double lo, double hi, double *out)
{
    char *end;
    double v = strtod(s, &end);
    if (*end || end == s || !(v >= lo && v <= hi))
        return false;
    *out = v;
    return true;
}

static bool parse_args(int argc, char **argv, opts_t *o)
{
    *o = (opts_t){.port = 8888, .conns = 100, .warmup = 1, .duration = -1, .ping = true};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        double v;
        bool has = i + 1 < argc;
        if (strcmp(a, "--cpu") == 0)
            o->cpu = true;
        else if (strcmp(a, "--no-ping") == 0)
            o->ping = false;
        else if (strcmp(a, "-p") == 0 && has && parse_num(argv[++i], 1, 65535, &v))
            o->port = (int)v;
        else if (strcmp(a, "-c") == 0 && has && parse_num(argv[++i], 1, 1e6, &v))
            o->conns = (int)v;
        else if (strcmp(a, "-w") == 0 && has && parse_num(argv[++i], 0, 3600, &v))
            o->warmup = v;
        else if (strcmp(a, "-d") == 0 && has && parse_num(argv[++i], 0.001, 86400, &v))
            o->duration = v;
        else if (strcmp(a, "--idle") == 0 && has && parse_num(argv[++i], 1, 1e7, &v))
            o->idle = (long)v;
        else if (strcmp(a, "--server-pid") == 0 && has && parse_num(argv[++i], 1, 1e9, &v))
            o->server_pid = (int)v;
        else
            return false;
    }
    if (o->duration < 0)
        o->duration = o->idle ? 30 : 5;
    return true;
}

int main(int argc, char **argv)
{
    static client_t cl; /* static: the message pool is not on the stack */
    if (!parse_args(argc, argv, &cl.o))
        return usage(argv[0]);
    int n = cl.o.idle ? (int)cl.o.idle : cl.o.conns;
    cl.c = calloc((size_t)n, sizeof *cl.c);
    cl.ep = epoll_create1(EPOLL_CLOEXEC);
    if (!cl.c || cl.ep < 0) {
        perror("echo_client: set-up");
        return 1;
    }
    make_pool(&cl);
    return cl.o.idle ? run_idle(&cl) : run_load(&cl);
}
