/*
 * UDP endpoints (udp.c) on both backends, over real sockets on 127.0.0.1
 * and ::1 (when the machine has IPv6 loopback): the task form (echo,
 * connected and unconnected endpoints, truncation, ICMP port unreachable as
 * -ECONNREFUSED, cancellation and deadlines of a receive, close while tasks
 * are inside a call), the protocol form (many datagrams, truncation, receive
 * errors, closing from a callback, sendto_nowait), the loop's close
 * releasing endpoints left open (and debug mode naming them), and argument
 * errors.
 */
#include "cio_test.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */
/* ------------------------------------------------------------------------ */

typedef union addr {
    struct sockaddr sa;
    struct sockaddr_in in;
    struct sockaddr_in6 in6;
    struct sockaddr_storage ss;
} addr_t;

/* Runs fn(arg) as a task on a new loop until it finishes, asserts that it
 * returned 0, and closes the loop (refused while anything is left over). */
static void run_task(cio_task_fn fn, void *arg)
{
    cio_loop_t *l = new_loop();
    cio_task_t *t;
    ck_assert_int_eq(cio_spawn_ex(&t, l, fn, arg, NULL), 0);
    ck_assert_int_eq(cio_loop_run_until_complete(l, t, NULL), 0);
    cio_future_release(t);
    close_free(l);
}

/* The loopback address of the test's family: 0 IPv4, 1 IPv6. */
static const char *loopback(int v6)
{
    return v6 ? "::1" : "127.0.0.1";
}

/* True when a UDP socket can be bound to ::1 here. */
static bool have_ipv6(void)
{
    int fd = socket(AF_INET6, SOCK_DGRAM, 0);
    if (fd < 0)
        return false;
    struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    bool ok = bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

/* An endpoint bound to the loopback address on a port the kernel picks. */
static cio_udp_t *open_bound(int v6, const cio_udp_opts_t *opts)
{
    cio_udp_t *u = NOT_SET;
    ck_assert_int_eq(cio_udp_open(&u, loopback(v6), 0, NULL, 0, opts), 0);
    ck_assert_ptr_nonnull(u);
    return u;
}

/* u's local address; returns its length. */
static socklen_t local_addr(cio_udp_t *u, addr_t *a)
{
    socklen_t len = sizeof *a;
    ck_assert_int_eq(cio_udp_sockname(u, &a->sa, &len), 0);
    return len;
}

static int addr_port(const addr_t *a)
{
    return ntohs(a->sa.sa_family == AF_INET6 ? a->in6.sin6_port : a->in.sin_port);
}

/* A port on the loopback address with no UDP socket bound to it (now). */
static int closed_port(int v6)
{
    int fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_DGRAM, 0);
    ck_assert_int_ge(fd, 0);
    addr_t a;
    memset(&a, 0, sizeof a);
    socklen_t len;
    if (v6) {
        a.in6.sin6_family = AF_INET6;
        a.in6.sin6_addr = in6addr_loopback;
        len = sizeof a.in6;
    } else {
        a.in.sin_family = AF_INET;
        a.in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        len = sizeof a.in;
    }
    ck_assert_int_eq(bind(fd, &a.sa, len), 0);
    len = sizeof a;
    ck_assert_int_eq(getsockname(fd, &a.sa, &len), 0);
    close(fd);
    return addr_port(&a);
}

/* Skips the IPv6 variant of a loop test on machines without ::1. */
#define SKIP_IF_NO_V6(v6)                                               \
    do {                                                                \
        if ((v6) && !have_ipv6()) {                                     \
            fprintf(stderr, "skipped: no IPv6 loopback\n");             \
            return;                                                     \
        }                                                               \
    } while (0)

/* ------------------------------------------------------------------------ */
/* The task form                                                              */
/* ------------------------------------------------------------------------ */

/* Receives `count` datagrams and sends each back to its sender. */
typedef struct echo {
    cio_udp_t *u;
    int count;
    int rc;
} echo_t;

static int echo_body(void *arg, void **result)
{
    (void)result;
    echo_t *e = arg;
    for (int i = 0; i < e->count; i++) {
        char buf[256];
        addr_t from;
        socklen_t flen = sizeof from;
        ssize_t n = cio_udp_recvfrom(e->u, buf, sizeof buf, &from.sa, &flen);
        if (n < 0)
            return e->rc = (int)n;
        ssize_t s = cio_udp_sendto(e->u, buf, (size_t)n, &from.sa, flen);
        if (s != n)
            return e->rc = s < 0 ? (int)s : -EIO;
    }
    return 0;
}

static int main_echo(void *arg, void **result)
{
    (void)result;
    int v6 = *(int *)arg;
    cio_udp_t *srv = open_bound(v6, NULL);
    addr_t sa;
    socklen_t salen = local_addr(srv, &sa);
    ck_assert_int_eq(sa.sa.sa_family, v6 ? AF_INET6 : AF_INET);
    ck_assert_int_gt(addr_port(&sa), 0);
    echo_t e = {.u = srv, .count = 20};
    cio_task_t *t = spawn(echo_body, &e);

    /* An unconnected client, bound at its first send. */
    cio_udp_opts_t o = {.family = v6 ? AF_INET6 : AF_INET};
    cio_udp_t *cli = NOT_SET;
    ck_assert_int_eq(cio_udp_open(&cli, NULL, 0, NULL, 0, &o), 0);
    addr_t ca;
    for (int i = 0; i < 10; i++) {
        char msg[32], buf[64];
        int len = snprintf(msg, sizeof msg, "ping %d", i);
        ck_assert_int_eq(cio_udp_sendto(cli, msg, (size_t)len, &sa.sa, salen), len);
        addr_t from;
        socklen_t flen = sizeof from;
        ck_assert_int_eq(cio_udp_recvfrom(cli, buf, sizeof buf, &from.sa, &flen), len);
        ck_assert_int_eq(memcmp(buf, msg, (size_t)len), 0);
        ck_assert_int_eq(flen, salen);
        ck_assert_int_eq(memcmp(&from, &sa, salen), 0);
    }
    local_addr(cli, &ca);
    ck_assert_int_gt(addr_port(&ca), 0);
    /* No address on an unconnected endpoint. */
    ck_assert_int_eq(cio_udp_sendto(cli, "x", 1, NULL, 0), -EDESTADDRREQ);
    cio_udp_close(cli);

    /* A connected client: sends with no address, hears only its peer. */
    ck_assert_int_eq(cio_udp_open(&cli, NULL, 0, loopback(v6), addr_port(&sa), NULL), 0);
    for (int i = 0; i < 10; i++) {
        char buf[64];
        ck_assert_int_eq(cio_udp_sendto(cli, "hello", 5, NULL, 0), 5);
        ck_assert_int_eq(cio_udp_recvfrom(cli, buf, sizeof buf, NULL, NULL), 5);
        ck_assert_int_eq(memcmp(buf, "hello", 5), 0);
    }
    cio_udp_close(cli);
    ck_assert_int_eq(finish(t), 0);
    cio_udp_close(srv);
    return 0;
}

START_TEST(udp_echo)
{
    int v6 = _i;
    SKIP_IF_NO_V6(v6);
    run_task(main_echo, &v6);
}
END_TEST

/* A datagram longer than the buffer: -EMSGSIZE, its head in the buffer,
 * its tail gone; the next datagram is whole. Zero-length datagrams too. */
static int main_truncation(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_udp_t *a = open_bound(0, NULL), *b = open_bound(0, NULL);
    addr_t ba;
    socklen_t balen = local_addr(b, &ba);
    char big[100];
    for (int i = 0; i < 100; i++)
        big[i] = (char)('a' + i % 26);
    ck_assert_int_eq(cio_udp_sendto(a, big, sizeof big, &ba.sa, balen), 100);
    ck_assert_int_eq(cio_udp_sendto(a, "tail", 4, &ba.sa, balen), 4);
    ck_assert_int_eq(cio_udp_sendto(a, "", 0, &ba.sa, balen), 0);
    char buf[10];
    addr_t from;
    socklen_t flen = sizeof from;
    ck_assert_int_eq(cio_udp_recvfrom(b, buf, sizeof buf, &from.sa, &flen), -EMSGSIZE);
    ck_assert_int_eq(memcmp(buf, big, sizeof buf), 0);
    ck_assert_int_eq(cio_udp_recvfrom(b, buf, sizeof buf, NULL, NULL), 4);
    ck_assert_int_eq(memcmp(buf, "tail", 4), 0);
    ck_assert_int_eq(cio_udp_recvfrom(b, buf, sizeof buf, NULL, NULL), 0);
    /* A zero-size buffer truncates any non-empty datagram. */
    ck_assert_int_eq(cio_udp_sendto(a, "z", 1, &ba.sa, balen), 1);
    ck_assert_int_eq(cio_udp_recvfrom(b, NULL, 0, NULL, NULL), -EMSGSIZE);
    /* Too long for UDP at all. */
    size_t huge = 70000;
    char *h = calloc(1, huge);
    ck_assert_ptr_nonnull(h);
    ck_assert_int_eq(cio_udp_sendto(a, h, huge, &ba.sa, balen), -EMSGSIZE);
    free(h);
    cio_udp_close(a);
    cio_udp_close(b);
    return 0;
}

START_TEST(udp_truncation)
{
    run_task(main_truncation, NULL);
}
END_TEST

/* A connected endpoint whose peer port has no socket: the ICMP port
 * unreachable comes back as -ECONNREFUSED from the next receive. */
static int main_refused(void *arg, void **result)
{
    (void)result;
    int v6 = *(int *)arg;
    cio_udp_t *u = NOT_SET;
    ck_assert_int_eq(cio_udp_open(&u, NULL, 0, loopback(v6), closed_port(v6), NULL), 0);
    ck_assert_int_eq(cio_udp_sendto(u, "x", 1, NULL, 0), 1);
    cio_scope_t s;
    ck_assert_int_eq(cio_scope_enter(&s, HANG_BOUND_S, 0), 0);
    char buf[8];
    ck_assert_int_eq(cio_udp_recvfrom(u, buf, sizeof buf, NULL, NULL), -ECONNREFUSED);
    ck_assert_int_eq(cio_scope_exit(&s), 0);
    cio_udp_close(u);
    return 0;
}

START_TEST(udp_connrefused)
{
    int v6 = _i;
    SKIP_IF_NO_V6(v6);
    run_task(main_refused, &v6);
}
END_TEST

typedef struct receiver {
    cio_udp_t *u;
    ssize_t rc;
    int done;
    char buf[64];
} receiver_t;

static int recv_body(void *arg, void **result)
{
    (void)result;
    receiver_t *r = arg;
    r->rc = cio_udp_recvfrom(r->u, r->buf, sizeof r->buf, NULL, NULL);
    r->done = 1;
    return 0;
}

/*
 * A receive cancelled, timed out by cio_wait_for, and timed out by a scope:
 * each returns at once with its code, and the endpoint works afterwards
 * (no datagram was consumed by the abandoned receives).
 */
static int main_recv_cancel(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_udp_t *a = open_bound(0, NULL), *b = open_bound(0, NULL);
    addr_t ba;
    socklen_t balen = local_addr(b, &ba);

    receiver_t r = {.u = b, .rc = 12345};
    cio_task_t *t = spawn(recv_body, &r);
    settle();
    ck_assert_int_eq(r.done, 0);
    cio_task_cancel(t);
    ck_assert_int_eq(finish(t), 0);
    ck_assert_int_eq(r.rc, -ECANCELED);

    r = (receiver_t){.u = b, .rc = 12345};
    t = spawn(recv_body, &r);
    int64_t t0 = loop_ns();
    ck_assert_int_eq(cio_wait_for(t, D_SHORT, NULL), -ETIMEDOUT);
    ck_assert_int_ge(loop_ns() - t0, NS_SHORT);
    cio_future_release(t);
    ck_assert_int_eq(r.rc, -ECANCELED); /* wait_for cancels the task */

    cio_scope_t s;
    ck_assert_int_eq(cio_scope_enter(&s, D_SHORT, 0), 0);
    char buf[16];
    t0 = loop_ns();
    ck_assert_int_eq(cio_udp_recvfrom(b, buf, sizeof buf, NULL, NULL), -ETIMEDOUT);
    ck_assert_int_ge(loop_ns() - t0, NS_SHORT);
    ck_assert_int_eq(cio_scope_exit(&s), -ETIMEDOUT);

    ck_assert_int_eq(cio_udp_sendto(a, "after", 5, &ba.sa, balen), 5);
    ck_assert_int_eq(cio_udp_recvfrom(b, buf, sizeof buf, NULL, NULL), 5);
    ck_assert_int_eq(memcmp(buf, "after", 5), 0);
    cio_udp_close(a);
    cio_udp_close(b);
    return 0;
}

START_TEST(udp_recv_cancel)
{
    run_task(main_recv_cancel, NULL);
}
END_TEST

/* Several tasks receive at once: they take turns, each gets one datagram. */
static int main_many_receivers(void *arg, void **result)
{
    (void)arg;
    (void)result;
    enum { N = 4 };
    cio_udp_t *a = open_bound(0, NULL), *b = open_bound(0, NULL);
    addr_t ba;
    socklen_t balen = local_addr(b, &ba);
    receiver_t r[N];
    cio_task_t *t[N];
    for (int i = 0; i < N; i++) {
        r[i] = (receiver_t){.u = b, .rc = 12345};
        t[i] = spawn(recv_body, &r[i]);
    }
    settle();
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(cio_udp_sendto(a, "abc", 3, &ba.sa, balen), 3);
    for (int i = 0; i < N; i++) {
        ck_assert_int_eq(finish(t[i]), 0);
        ck_assert_int_eq(r[i].rc, 3);
    }
    cio_udp_close(a);
    cio_udp_close(b);
    return 0;
}

START_TEST(udp_many_receivers)
{
    run_task(main_many_receivers, NULL);
}
END_TEST

/* Closing the endpoint while tasks are inside recvfrom (one receiving, the
 * others waiting for their turn): all get -EBADF and the endpoint is freed
 * once the last one has left (ASan would see a use after free). */
static int main_close_while_receiving(void *arg, void **result)
{
    (void)result;
    int n = 1 + *(int *)arg;
    cio_udp_t *b = open_bound(0, NULL);
    receiver_t r[3];
    cio_task_t *t[3];
    for (int i = 0; i < n; i++) {
        r[i] = (receiver_t){.u = b, .rc = 12345};
        t[i] = spawn(recv_body, &r[i]);
    }
    settle();
    for (int i = 0; i < n; i++)
        ck_assert_int_eq(r[i].done, 0);
    cio_udp_close(b);
    for (int i = 0; i < n; i++) {
        ck_assert_int_eq(finish(t[i]), 0);
        ck_assert_int_eq(r[i].rc, -EBADF);
    }
    return 0;
}

START_TEST(udp_close_while_receiving)
{
    int n = _i;
    run_task(main_close_while_receiving, &n);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* The protocol form                                                          */
/* ------------------------------------------------------------------------ */

typedef struct proto_state {
    int received;
    int truncated;
    size_t last_n;
    int errors;
    int last_err;
    int close_at;       /* close the endpoint from the callback at this count */
    bool echo;          /* send each datagram back with sendto_nowait */
    ssize_t echo_rc;
    cio_event_t ev;     /* set when `want` datagrams or an error arrived */
    int want;
} proto_state_t;

static void on_datagram(cio_udp_t *u, const void *data, size_t n, const struct sockaddr *addr,
                        socklen_t addrlen, bool truncated, void *ctx)
{
    proto_state_t *p = ctx;
    p->received++;
    p->last_n = n;
    p->truncated += truncated;
    if (p->echo) {
        ssize_t r = cio_udp_sendto_nowait(u, data, n, addr, addrlen);
        if (r != (ssize_t)n)
            p->echo_rc = r;
    }
    if (p->received == p->want)
        cio_event_set(&p->ev);
    if (p->received == p->close_at)
        cio_udp_close(u);
}

static void on_error(cio_udp_t *u, int err, void *ctx)
{
    (void)u;
    proto_state_t *p = ctx;
    p->errors++;
    p->last_err = err;
    cio_event_set(&p->ev);
}

static const cio_datagram_protocol_t proto = {
    .datagram_received = on_datagram,
    .error_received = on_error,
};

/* An echo server in the protocol form, a client in the task form sending
 * many datagrams and reading every echo back. */
static int main_protocol_many(void *arg, void **result)
{
    (void)result;
    int v6 = *(int *)arg;
    enum { N = 300 };
    proto_state_t p = {.echo = true, .want = N};
    ck_assert_int_eq(cio_event_init(&p.ev), 0);
    cio_udp_t *srv = open_bound(v6, NULL);
    ck_assert_int_eq(cio_udp_start(srv, &proto, &p), 0);
    addr_t sa;
    socklen_t salen = local_addr(srv, &sa);
    cio_udp_t *cli = open_bound(v6, NULL);
    int got = 0;
    /* In windows of 20, so that no socket buffer overflows. */
    for (int base = 0; base < N; base += 20) {
        for (int i = base; i < base + 20; i++) {
            uint32_t v = (uint32_t)i;
            ck_assert_int_eq(cio_udp_sendto(cli, &v, sizeof v, &sa.sa, salen), sizeof v);
        }
        for (int i = base; i < base + 20; i++) {
            uint32_t v;
            ck_assert_int_eq(cio_udp_recvfrom(cli, &v, sizeof v, NULL, NULL), sizeof v);
            ck_assert_uint_eq(v, (uint32_t)i); /* loopback keeps the order */
            got++;
        }
    }
    ck_assert_int_eq(got, N);
    ck_assert_int_eq(cio_event_wait(&p.ev), 0);
    ck_assert_int_eq(p.received, N);
    ck_assert_int_eq(p.truncated, 0);
    ck_assert_int_eq(p.errors, 0);
    ck_assert_int_eq(p.echo_rc, 0);
    /* A task cannot receive while the protocol does; nor start twice. */
    char buf[4];
    ck_assert_int_eq(cio_udp_recvfrom(srv, buf, sizeof buf, NULL, NULL), -EBUSY);
    ck_assert_int_eq(cio_udp_start(srv, &proto, &p), -EBUSY);
    cio_udp_close(cli);
    cio_udp_close(srv);
    return 0;
}

START_TEST(udp_protocol_many)
{
    int v6 = _i;
    SKIP_IF_NO_V6(v6);
    run_task(main_protocol_many, &v6);
}
END_TEST

/* max_datagram smaller than a datagram: its head, flagged truncated; the
 * endpoint is closed from inside the callback of the third datagram. */
static int main_protocol_truncated(void *arg, void **result)
{
    (void)arg;
    (void)result;
    proto_state_t p = {.want = 2, .close_at = 3};
    ck_assert_int_eq(cio_event_init(&p.ev), 0);
    cio_udp_opts_t o = {.max_datagram = 16};
    cio_udp_t *srv = open_bound(0, &o), *cli = open_bound(0, NULL);
    ck_assert_int_eq(cio_udp_start(srv, &proto, &p), 0);
    addr_t sa;
    socklen_t salen = local_addr(srv, &sa);
    char big[100] = {0};
    ck_assert_int_eq(cio_udp_sendto(cli, big, sizeof big, &sa.sa, salen), 100);
    ck_assert_int_eq(cio_udp_sendto(cli, big, 16, &sa.sa, salen), 16);
    ck_assert_int_eq(cio_event_wait(&p.ev), 0);
    ck_assert_int_eq(p.received, 2);
    ck_assert_int_eq(p.truncated, 1);
    ck_assert_int_eq(p.last_n, 16);
    /* The third closes (and so frees) the endpoint from its callback; the
     * fourth never arrives at the protocol. */
    ck_assert_int_eq(cio_udp_sendto(cli, big, 1, &sa.sa, salen), 1);
    ck_assert_int_eq(cio_udp_sendto(cli, big, 1, &sa.sa, salen), 1);
    for (int i = 0; i < 50 && p.received < 3; i++)
        ck_assert_int_eq(cio_sleep(0.001), 0);
    ck_assert_int_eq(p.received, 3);
    ck_assert_int_eq(cio_sleep(0.01), 0);
    ck_assert_int_eq(p.received, 3);
    cio_udp_close(cli);
    return 0;
}

START_TEST(udp_protocol_truncated)
{
    run_task(main_protocol_truncated, NULL);
}
END_TEST

/* Receive errors reach error_received and receiving goes on. */
static int main_protocol_error(void *arg, void **result)
{
    (void)arg;
    (void)result;
    proto_state_t p = {.want = 1};
    ck_assert_int_eq(cio_event_init(&p.ev), 0);
    cio_udp_t *u = NOT_SET;
    ck_assert_int_eq(cio_udp_open(&u, "127.0.0.1", 0, "127.0.0.1", closed_port(0), NULL), 0);
    ck_assert_int_eq(cio_udp_start(u, &proto, &p), 0);
    ck_assert_int_eq(cio_udp_sendto_nowait(u, "x", 1, NULL, 0), 1);
    cio_scope_t s;
    ck_assert_int_eq(cio_scope_enter(&s, HANG_BOUND_S, 0), 0);
    ck_assert_int_eq(cio_event_wait(&p.ev), 0);
    ck_assert_int_eq(cio_scope_exit(&s), 0);
    ck_assert_int_eq(p.errors, 1);
    ck_assert_int_eq(p.last_err, -ECONNREFUSED);
    ck_assert_int_eq(p.received, 0);
    /* Still receiving: a datagram from the peer address arrives. The peer
     * is bound to the port now, and sends to u. */
    addr_t ua;
    socklen_t ualen = local_addr(u, &ua);
    cio_event_clear(&p.ev);
    cio_udp_t *peer = NOT_SET;
    int port = 0;
    /* The port may have been taken meanwhile; try a few. */
    for (int i = 0; i < 5; i++) {
        addr_t pa;
        socklen_t plen = sizeof pa;
        ck_assert_int_eq(getpeername(cio_udp_fd(u), &pa.sa, &plen), 0);
        port = addr_port(&pa);
        if (cio_udp_open(&peer, "127.0.0.1", port, NULL, 0, NULL) == 0)
            break;
        peer = NULL;
    }
    if (peer) {
        ck_assert_int_eq(cio_udp_sendto(peer, "back", 4, &ua.sa, ualen), 4);
        ck_assert_int_eq(cio_event_wait(&p.ev), 0);
        ck_assert_int_eq(p.received, 1);
        ck_assert_int_eq(p.last_n, 4);
        cio_udp_close(peer);
    }
    cio_udp_close(u);
    return 0;
}

START_TEST(udp_protocol_error_received)
{
    run_task(main_protocol_error, NULL);
}
END_TEST

/* A plain callback (not a task) sending with sendto_nowait. */
typedef struct nowait {
    cio_udp_t *u;
    addr_t to;
    socklen_t tolen;
    ssize_t rc;
} nowait_t;

static void send_from_callback(void *arg)
{
    nowait_t *n = arg;
    n->rc = cio_udp_sendto_nowait(n->u, "cb", 2, &n->to.sa, n->tolen);
}

static int main_nowait(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_udp_t *a = open_bound(0, NULL), *b = open_bound(0, NULL);
    nowait_t n = {.u = a, .rc = 12345};
    n.tolen = local_addr(b, &n.to);
    ck_assert_int_eq(cio_call_soon(cio_get_running_loop(), NULL, send_from_callback, &n), 0);
    char buf[8];
    ck_assert_int_eq(cio_udp_recvfrom(b, buf, sizeof buf, NULL, NULL), 2);
    ck_assert_int_eq(n.rc, 2);
    ck_assert_int_eq(memcmp(buf, "cb", 2), 0);
    /* Errors of sendto: no address on an unconnected endpoint, too long. */
    ck_assert_int_eq(cio_udp_sendto_nowait(a, "x", 1, NULL, 0), -EDESTADDRREQ);
    static char huge[70000];
    ck_assert_int_eq(cio_udp_sendto_nowait(a, huge, sizeof huge, &n.to.sa, n.tolen),
                     -EMSGSIZE);
    /* Filling the socket buffer ends in -EAGAIN, nothing sent then. */
    int small = 4096;
    ck_assert_int_eq(setsockopt(cio_udp_fd(a), SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
    ck_assert_int_eq(setsockopt(cio_udp_fd(b), SOL_SOCKET, SO_RCVBUF, &small, sizeof small), 0);
    ssize_t r = 0;
    char chunk[1400] = {0};
    for (int i = 0; i < 10000 && r >= 0; i++)
        r = cio_udp_sendto_nowait(a, chunk, sizeof chunk, &n.to.sa, n.tolen);
    /* Loopback delivers at once, so the receiver's buffer fills and drops:
     * the sender may never see EAGAIN; either outcome is fine, but no other
     * error may appear. */
    ck_assert_msg(r >= 0 || r == -EAGAIN || r == -ENOBUFS, "r %zd", r);
    cio_udp_close(a);
    cio_udp_close(b);
    return 0;
}

START_TEST(udp_sendto_nowait)
{
    run_task(main_nowait, NULL);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Loop close, options, argument errors                                       */
/* ------------------------------------------------------------------------ */

/* Endpoints left open (one receiving in the protocol form) are released by
 * the loop's close; debug mode names them. */
static int main_left_open(void *arg, void **result)
{
    (void)result;
    proto_state_t *p = arg;
    cio_udp_t *a = open_bound(0, NULL), *b = open_bound(0, NULL);
    ck_assert_int_eq(cio_udp_start(a, &proto, p), 0);
    (void)b;
    return 0;
}

START_TEST(udp_loop_close_releases)
{
    proto_state_t p = {0};
    cio_loop_t *l = new_loop();
    cio_loop_set_debug(l, true);
    cio_task_t *t;
    ck_assert_int_eq(cio_spawn_ex(&t, l, main_left_open, &p, NULL), 0);
    ck_assert_int_eq(cio_loop_run_until_complete(l, t, NULL), 0);
    cio_future_release(t);
    capture_t c;
    capture_begin(&c);
    ck_assert_int_eq(cio_loop_close(l), 0);
    char *out = capture_end(&c);
    ck_assert_msg(strstr(out, "UDP endpoint still open: fd ") != NULL, "stderr: %s", out);
    ck_assert_msg(strstr(out, "local 127.0.0.1:") != NULL, "stderr: %s", out);
    free(out);
    ck_assert_int_eq(cio_loop_free(l), 0);
    ck_assert_int_eq(p.received, 0);
}
END_TEST

/* Options: the port shared with SO_REUSEPORT; without it, -EADDRINUSE. */
static int main_options(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_udp_opts_t o = {.reuse_port = true, .broadcast = true};
    cio_udp_t *a = open_bound(0, &o);
    addr_t aa;
    local_addr(a, &aa);
    int port = addr_port(&aa);
    cio_udp_t *b = NOT_SET;
    ck_assert_int_eq(cio_udp_open(&b, "127.0.0.1", port, NULL, 0, &o), 0);
    cio_udp_t *c = NOT_SET;
    ck_assert_int_eq(cio_udp_open(&c, "127.0.0.1", port, NULL, 0, NULL), -EADDRINUSE);
    ck_assert_ptr_null(c);
    int on = 0;
    socklen_t len = sizeof on;
    ck_assert_int_eq(getsockopt(cio_udp_fd(b), SOL_SOCKET, SO_BROADCAST, &on, &len), 0);
    ck_assert_int_eq(on, 1);
    cio_udp_close(a);
    cio_udp_close(b);
    /* A wildcard bind by port: both families or IPv4 as the system gives. */
    ck_assert_int_eq(cio_udp_open(&c, NULL, closed_port(0), NULL, 0, NULL), 0);
    cio_udp_close(c);
    /* A name, resolved in the pool. */
    ck_assert_int_eq(cio_udp_open(&c, "localhost", 0, "localhost", 9, NULL), 0);
    cio_udp_close(c);
    return 0;
}

START_TEST(udp_options)
{
    run_task(main_options, NULL);
}
END_TEST

static int main_bad_args(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_udp_t *u = NOT_SET;
    ck_assert_int_eq(cio_udp_open(NULL, "127.0.0.1", 0, NULL, 0, NULL), -EINVAL);
    cio_udp_opts_t o = {.reserved_ = {NOT_SET, NULL}};
    ck_assert_int_eq(cio_udp_open(&u, "127.0.0.1", 0, NULL, 0, &o), -EINVAL);
    ck_assert_ptr_null(u);
    o = (cio_udp_opts_t){.family = AF_UNIX};
    ck_assert_int_eq(cio_udp_open(&u, "127.0.0.1", 0, NULL, 0, &o), -EINVAL);
    ck_assert_int_eq(cio_udp_open(&u, "127.0.0.1", 70000, NULL, 0, NULL), -EINVAL);
    ck_assert_int_eq(cio_udp_open(&u, "127.0.0.1", -1, NULL, 0, NULL), -EINVAL);
    ck_assert_int_eq(cio_udp_open(&u, NULL, 0, "127.0.0.1", 65536, NULL), -EINVAL);
    ck_assert_int_eq(cio_udp_open(&u, NULL, 0, NULL, 53, NULL), -EINVAL);
    /* Families that do not match. */
    ck_assert_int_eq(cio_udp_open(&u, "127.0.0.1", 0, "::1", 9, NULL), -EINVAL);
    o = (cio_udp_opts_t){.family = AF_INET6};
    int rc = cio_udp_open(&u, "127.0.0.1", 0, NULL, 0, &o);
    ck_assert_msg(rc < CIO_EAI_BASE, "rc %d", rc);
    /* Names that do not resolve. */
    rc = cio_udp_open(&u, NULL, 0, "no-such-host.invalid", 9, NULL);
    ck_assert_msg(rc < CIO_EAI_BASE, "rc %d", rc);
    ck_assert_ptr_null(u);

    u = open_bound(0, NULL);
    char buf[4];
    addr_t a;
    socklen_t alen = sizeof a;
    ck_assert_int_eq(cio_udp_recvfrom(NULL, buf, sizeof buf, NULL, NULL), -EINVAL);
    ck_assert_int_eq(cio_udp_recvfrom(u, NULL, 4, NULL, NULL), -EINVAL);
    ck_assert_int_eq(cio_udp_recvfrom(u, buf, sizeof buf, &a.sa, NULL), -EINVAL);
    ck_assert_int_eq(cio_udp_recvfrom(u, buf, sizeof buf, NULL, &alen), -EINVAL);
    ck_assert_int_eq(cio_udp_sendto(NULL, buf, 1, NULL, 0), -EINVAL);
    ck_assert_int_eq(cio_udp_sendto(u, NULL, 1, NULL, 0), -EINVAL);
    ck_assert_int_eq(cio_udp_sendto_nowait(NULL, buf, 1, NULL, 0), -EINVAL);
    ck_assert_int_eq(cio_udp_sendto_nowait(u, NULL, 1, NULL, 0), -EINVAL);
    ck_assert_int_eq(cio_udp_start(NULL, &proto, NULL), -EINVAL);
    ck_assert_int_eq(cio_udp_start(u, NULL, NULL), -EINVAL);
    cio_datagram_protocol_t bad = {.error_received = on_error};
    ck_assert_int_eq(cio_udp_start(u, &bad, NULL), -EINVAL);
    bad = (cio_datagram_protocol_t){.datagram_received = on_datagram, .reserved_ = {NOT_SET}};
    ck_assert_int_eq(cio_udp_start(u, &bad, NULL), -EINVAL);
    ck_assert_int_eq(cio_udp_fd(NULL), -EINVAL);
    ck_assert_int_ge(cio_udp_fd(u), 0);
    ck_assert_int_eq(cio_udp_sockname(NULL, &a.sa, &alen), -EINVAL);
    ck_assert_int_eq(cio_udp_sockname(u, NULL, &alen), -EINVAL);
    ck_assert_int_eq(cio_udp_sockname(u, &a.sa, NULL), -EINVAL);

    /* Starting while a task receives. */
    receiver_t r = {.u = u, .rc = 12345};
    cio_task_t *t = spawn(recv_body, &r);
    settle();
    ck_assert_int_eq(cio_udp_start(u, &proto, NULL), -EBUSY);
    cio_task_cancel(t);
    ck_assert_int_eq(finish(t), 0);
    ck_assert_int_eq(r.rc, -ECANCELED);
    cio_udp_close(u);
    cio_udp_close(NULL); /* a no-op */
    return 0;
}

START_TEST(udp_bad_args)
{
    run_task(main_bad_args, NULL);
}
END_TEST

START_TEST(udp_eperm_outside_task)
{
    cio_udp_t *u = NOT_SET;
    ck_assert_int_eq(cio_udp_open(&u, "127.0.0.1", 0, NULL, 0, NULL), -EPERM);
    ck_assert_ptr_null(u);
}
END_TEST

/* Task-form calls outside a task, on an endpoint made inside one. */
static int make_endpoint(void *arg, void **result)
{
    (void)result;
    *(cio_udp_t **)arg = open_bound(0, NULL);
    return 0;
}

START_TEST(udp_eperm_calls)
{
    cio_loop_t *l = new_loop();
    cio_udp_t *u = NULL;
    cio_task_t *t;
    ck_assert_int_eq(cio_spawn_ex(&t, l, make_endpoint, &u, NULL), 0);
    ck_assert_int_eq(cio_loop_run_until_complete(l, t, NULL), 0);
    cio_future_release(t);
    char buf[4];
    ck_assert_int_eq(cio_udp_recvfrom(u, buf, sizeof buf, NULL, NULL), -EPERM);
    ck_assert_int_eq(cio_udp_sendto(u, buf, 1, NULL, 0), -EPERM);
    /* Closing from outside the loop's run is allowed. */
    cio_udp_close(u);
    close_free(l);
}
END_TEST

static Suite *udp_suite(void)
{
    Suite *s = suite_create("udp");
    TCase *tc = add_tcase(s, "task", TEST_TIMEOUT);
    tcase_add_loop_test(tc, udp_echo, 0, 2);
    tcase_add_test(tc, udp_truncation);
    tcase_add_loop_test(tc, udp_connrefused, 0, 2);
    tcase_add_test(tc, udp_recv_cancel);
    tcase_add_test(tc, udp_many_receivers);
    tcase_add_loop_test(tc, udp_close_while_receiving, 0, 3);

    tc = add_tcase(s, "protocol", TEST_TIMEOUT);
    tcase_add_loop_test(tc, udp_protocol_many, 0, 2);
    tcase_add_test(tc, udp_protocol_truncated);
    tcase_add_test(tc, udp_protocol_error_received);
    tcase_add_test(tc, udp_sendto_nowait);

    tc = add_tcase(s, "lifetime", TEST_TIMEOUT);
    tcase_add_test(tc, udp_loop_close_releases);
    tcase_add_test(tc, udp_options);
    tcase_add_test(tc, udp_bad_args);
    tcase_add_test(tc, udp_eperm_outside_task);
    tcase_add_test(tc, udp_eperm_calls);
    return s;
}

CIO_TEST_MAIN(udp_suite)
