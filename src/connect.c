/*
 * Clients: open_connection over TCP and Unix sockets.
 *
 * A name with several addresses is connected to as RFC 8305 ("happy
 * eyeballs") describes: the addresses are ordered so that the families
 * alternate, starting with the first the resolver gave; each attempt runs
 * in a task of its own, the next one starting when the one before fails or
 * has not connected within the attempt delay (250 ms by default). The first
 * to connect wins; the others are cancelled and their sockets closed before
 * the call returns, so nothing is left running or open behind it.
 */
#include "net.h"

#include <math.h>
#include <netinet/tcp.h>

#define DEF_DELAY 0.25

static int check(const cio_connect_opts_t *o)
{
    if (o->reserved_[0] || o->reserved_[1] || isnan(o->timeout) || o->timeout < 0 ||
        isnan(o->happy_eyeballs_delay))
        return -EINVAL;
    if (o->family != AF_UNSPEC && o->family != AF_INET && o->family != AF_INET6)
        return -EINVAL;
    cio_transport_opts_t t;
    return cio__transport_opts(o->stream, &t);
}

/* One connect attempt in the calling task: the connected socket or the
 * error (the socket is closed then). */
static int connect_one(const struct addrinfo *ai)
{
    int fd = cio_socket(ai->ai_family, SOCK_STREAM, ai->ai_protocol);
    if (fd < 0)
        return fd;
    int rc = cio_sock_connect(fd, ai->ai_addr, ai->ai_addrlen);
    if (rc) {
        cio_close(fd);
        return rc;
    }
    return fd;
}

/* ------------------------------------------------------------------------ */
/* Happy eyeballs                                                             */
/* ------------------------------------------------------------------------ */

typedef struct race {
    cio_event_t changed;   /* set when an attempt ends */
    int winner;            /* the first connected socket, or -1 */
    int last_err;
    size_t ended;
} race;

typedef struct attempt {
    race *r;
    const struct addrinfo *ai;
    cio_task_t *task;
} attempt;

static int attempt_main(void *arg, void **result)
{
    attempt *a = arg;
    race *r = a->r;
    (void)result;
    int fd = connect_one(a->ai);
    if (fd >= 0 && r->winner < 0) {
        r->winner = fd;
    } else if (fd >= 0) {
        cio_close(fd); /* connected second: the race is already won */
    } else if (fd != -ECANCELED) {
        r->last_err = fd;
    }
    r->ended++;
    cio_event_set(&r->changed);
    return 0;
}

/* Orders the addresses so that the families alternate, the first family
 * first (RFC 8305, section 4). */
static size_t interleave(struct addrinfo *res, const struct addrinfo **out, size_t n)
{
    size_t k = 0;
    int first = res->ai_family;
    const struct addrinfo *a = res, *b = res;
    while (k < n) {
        while (a && a->ai_family != first)
            a = a->ai_next;
        while (b && b->ai_family == first)
            b = b->ai_next;
        if (a) {
            out[k++] = a;
            a = a->ai_next;
        }
        if (b && k < n) {
            out[k++] = b;
            b = b->ai_next;
        }
        if (!a && !b)
            break;
    }
    return k;
}

/* Waits until an attempt ends, for at most delay seconds (< 0: no bound).
 * Returns 0 (something ended, or the delay passed) or the caller's own
 * cancellation. */
static int wait_change(race *r, double delay)
{
    cio_scope_t sc;
    int rc = cio_scope_enter(&sc, delay < 0 ? INFINITY : delay, 0);
    if (rc)
        return rc;
    rc = cio_event_wait(&r->changed);
    bool mine = cio_scope_expired(&sc);
    cio_scope_exit(&sc);
    if (rc == -ETIMEDOUT && mine)
        rc = 0;
    cio_event_clear(&r->changed);
    return rc;
}

/* Cancels the attempts still running and waits for them, shielded from the
 * caller's own cancellation: they use this frame's memory. */
static void end_attempts(attempt *as, size_t n)
{
    cio_scope_t sc;
    cio_scope_enter(&sc, INFINITY, CIO_SCOPE_SHIELD);
    for (size_t i = 0; i < n; i++)
        if (as[i].task)
            cio_task_cancel(as[i].task);
    for (size_t i = 0; i < n; i++) {
        if (as[i].task) {
            cio_await(as[i].task, NULL);
            cio_future_release(as[i].task);
        }
    }
    cio_scope_exit(&sc);
}

static int race_all(const struct addrinfo **addrs, size_t n, double delay)
{
    attempt *as = cio__calloc(n, sizeof(*as));
    if (!as)
        return -ENOMEM;
    race r = {.winner = -1, .last_err = -ECONNREFUSED};
    cio_event_init(&r.changed);
    int rc = 0;
    size_t started = 0;
    while (r.winner < 0 && (started < n || r.ended < started)) {
        /* Each round starts the next attempt: the one before has either
         * failed or not connected within the delay. */
        if (started < n) {
            as[started] = (attempt){.r = &r, .ai = addrs[started]};
            if ((rc = cio_spawn(&as[started].task, attempt_main, &as[started])))
                break;
            started++;
        }
        if ((rc = wait_change(&r, started < n ? delay : -1)))
            break;
    }
    end_attempts(as, started);
    cio__free(as);
    if (r.winner >= 0) {
        if (rc) { /* cancelled after winning: the socket must not leak */
            cio_close(r.winner);
            return rc;
        }
        return r.winner;
    }
    return rc ? rc : r.last_err;
}

static int connect_addrs(struct addrinfo *res, double delay)
{
    size_t n = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next)
        n++;
    if (n == 1 || delay < 0) {
        int rc = -ECONNREFUSED;
        for (struct addrinfo *ai = res; ai; ai = ai->ai_next)
            if ((rc = connect_one(ai)) >= 0 || rc == -ECANCELED || rc == -ETIMEDOUT)
                break;
        return rc;
    }
    const struct addrinfo **addrs = cio__calloc(n, sizeof(*addrs));
    if (!addrs)
        return -ENOMEM;
    n = interleave(res, addrs, n);
    int rc = race_all(addrs, n, delay);
    cio__free(addrs);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Public calls                                                               */
/* ------------------------------------------------------------------------ */

/* Resolves and connects within the connect deadline: the socket or error. */
static int tcp_connect(const char *host, int port, const cio_connect_opts_t *o)
{
    cio_scope_t sc;
    int rc = cio_scope_enter(&sc, o->timeout > 0 ? o->timeout : INFINITY, 0);
    if (rc)
        return rc;
    struct addrinfo *res = NULL;
    rc = cio__resolve(host, port, o->family, SOCK_STREAM, 0, &res);
    if (!rc) {
        double delay = o->happy_eyeballs_delay == 0 ? DEF_DELAY : o->happy_eyeballs_delay;
        rc = connect_addrs(res, delay);
        cio_freeaddrinfo(res);
    }
    int sc_rc = cio_scope_exit(&sc);
    if (rc >= 0 && sc_rc) { /* the deadline passed just as it connected */
        cio_close(rc);
        rc = sc_rc;
    }
    if (rc >= 0 && !o->no_nodelay) {
        int one = 1;
        setsockopt(rc, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    return rc;
}

int cio_connect_tcp(int *fd, const char *host, int port, const cio_connect_opts_t *opts)
{
    if (fd)
        *fd = -1;
    cio_connect_opts_t o = opts ? *opts : (cio_connect_opts_t){0};
    if (!fd || !host || port < 0 || port > 65535 || check(&o))
        return -EINVAL;
    if (!cio__current)
        return -EPERM;
    int rc = tcp_connect(host, port, &o);
    if (rc < 0)
        return rc;
    *fd = rc;
    return 0;
}

int cio_open_connection(cio_stream_t **out, const char *host, int port,
                        const cio_connect_opts_t *opts)
{
    if (out)
        *out = NULL;
    if (!out)
        return -EINVAL;
    int fd;
    int rc = cio_connect_tcp(&fd, host, port, opts);
    if (rc)
        return rc;
    return cio_stream_new(out, fd, opts ? opts->stream : NULL);
}

int cio_open_unix_connection(cio_stream_t **out, const char *path,
                             const cio_connect_opts_t *opts)
{
    if (out)
        *out = NULL;
    cio_connect_opts_t o = opts ? *opts : (cio_connect_opts_t){0};
    struct sockaddr_un sa;
    socklen_t len;
    if (!out || !path || check(&o) || cio__unix_addr(path, &sa, &len))
        return -EINVAL;
    if (!cio__current)
        return -EPERM;
    cio_scope_t sc;
    int rc = cio_scope_enter(&sc, o.timeout > 0 ? o.timeout : INFINITY, 0);
    if (rc)
        return rc;
    int fd = cio_socket(AF_UNIX, SOCK_STREAM, 0);
    rc = fd < 0 ? fd : cio_sock_connect(fd, (struct sockaddr *)&sa, len);
    int sc_rc = cio_scope_exit(&sc);
    if (!rc && sc_rc)
        rc = sc_rc;
    if (rc) {
        if (fd >= 0)
            cio_close(fd);
        return rc;
    }
    return cio_stream_new(out, fd, o.stream);
}
