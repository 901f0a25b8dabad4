/*
 * UDP endpoints (asyncio create_datagram_endpoint), in two forms:
 *
 *  - the task form: cio_udp_recvfrom / cio_udp_sendto are await points over
 *    the operation layer. Tasks receiving at once take turns (a lock per
 *    direction), so that both backends behave the same: epoll allows one
 *    waiter per direction of an fd, io_uring any number.
 *  - the protocol form: cio_udp_start keeps one callback operation (a
 *    recvmsg) running, with a buffer of max_datagram bytes, and calls the
 *    protocol for each datagram or receive error.
 *
 * Truncation: receives pass MSG_TRUNC, so the kernel returns the real
 * length of a datagram longer than the buffer (and sets MSG_TRUNC in
 * msg_flags); either sign makes it -EMSGSIZE (task form) or truncated
 * (protocol form).
 *
 * Lifetime: cio_udp_close closes the socket at once (tasks inside a call
 * wake with -EBADF) but frees the endpoint only when nothing uses its
 * memory any more: no task inside a call, no protocol callback running, and
 * no receive held by the kernel (a stopped io_uring operation still
 * completes later). Whoever comes last frees it (maybe_free). Every endpoint
 * is on its loop's list of network objects, so that debug mode reports
 * those left open and the loop's close releases them.
 */
#include "net.h"

#include <stdio.h>
#include <unistd.h>

#define UDP_MAX_DATAGRAM_DEFAULT 65536u

struct cio_udp {
    cio__netobj obj; /* on the loop's list while open */
    cio_loop_t *loop;
    cio__net *net;
    int fd;               /* -1 once closed */
    bool closed;
    bool in_callback;     /* a protocol callback runs: the free waits */
    unsigned users;       /* tasks inside a call (receiving or sending) */
    unsigned receivers;   /* of them, those in cio_udp_recvfrom */
    cio_lock_t rlock, wlock; /* one receiving / one sending task at a time */
    size_t max_datagram;
    /* The protocol form (proto set once started). */
    const cio_datagram_protocol_t *proto;
    void *ctx;
    cio__aop aop;
    struct msghdr msg;
    struct iovec iov;
    struct sockaddr_storage from;
    void *buf;
};

/* ------------------------------------------------------------------------ */
/* Closing and freeing                                                        */
/* ------------------------------------------------------------------------ */

/* Frees u once it is closed and nothing uses its memory any more. */
static void maybe_free(cio_udp_t *u)
{
    if (!u->closed || u->users || u->in_callback || cio__aop_busy(&u->aop))
        return;
    if (u->buf) {
        if (u->max_datagram == CIO__NET_BUF)
            cio__net_buf_put(u->net, u->buf);
        else
            cio__free(u->buf);
    }
    cio__free(u);
}

/*
 * Closes u's socket on u's own loop, also when called from outside its run
 * (from main after the run, or by the loop's own close): the tasks waiting
 * on the fd are woken with -EBADF, operations the kernel holds on it are
 * cancelled, and queued ones are sent before the number can be reused.
 */
static void close_fd(cio_udp_t *u)
{
    (void)cio__close_fd(u->loop, u->fd);
    u->fd = -1;
}

void cio_udp_close(cio_udp_t *u)
{
    if (!u || u->closed)
        return;
    u->closed = true;
    cio__net_remove(u->net, &u->obj);
    /* On io_uring the receive may stay with the kernel (stop returns
     * false): its completion calls udp_done, which frees u then. */
    (void)cio__aop_stop(&u->aop);
    close_fd(u);
    maybe_free(u);
}

/* Debug mode, at loop close: one line naming the endpoint. */
static void udp_describe(cio__netobj *o, FILE *out)
{
    cio_udp_t *u = (cio_udp_t *)o;
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    char host[NI_MAXHOST], serv[NI_MAXSERV];
    if (getsockname(u->fd, (struct sockaddr *)&ss, &len) ||
        getnameinfo((struct sockaddr *)&ss, len, host, sizeof host, serv, sizeof serv,
                    NI_NUMERICHOST | NI_NUMERICSERV))
        fprintf(out, "fd %d", u->fd);
    else if (ss.ss_family == AF_INET6)
        fprintf(out, "fd %d, local [%s]:%s", u->fd, host, serv);
    else
        fprintf(out, "fd %d, local %s:%s", u->fd, host, serv);
}

/* At loop close: the endpoint is released as cio_udp_close does. */
static void udp_abort(cio__netobj *o)
{
    cio_udp_close((cio_udp_t *)o);
}

/* ------------------------------------------------------------------------ */
/* Opening                                                                    */
/* ------------------------------------------------------------------------ */

/* The options with defaults applied: 0 or -EINVAL. */
static int udp_opts(const cio_udp_opts_t *in, cio_udp_opts_t *out)
{
    *out = in ? *in : (cio_udp_opts_t){0};
    if (out->reserved_[0] || out->reserved_[1])
        return -EINVAL;
    if (out->family != AF_UNSPEC && out->family != AF_INET && out->family != AF_INET6)
        return -EINVAL;
    if (!out->max_datagram)
        out->max_datagram = UDP_MAX_DATAGRAM_DEFAULT;
    return 0;
}

/* Sets an int socket option to 1: 0 or -errno. */
static int sock_enable(int fd, int level, int name)
{
    int one = 1;
    return setsockopt(fd, level, name, &one, sizeof one) ? -errno : 0;
}

/*
 * A datagram socket of family with the options of o, bound to l and
 * connected to r when they are not NULL (a UDP connect only records the
 * peer: it never waits). Stores it in *out and returns 0, or -errno.
 */
static int udp_try(int family, const struct addrinfo *l, const struct addrinfo *r,
                   const cio_udp_opts_t *o, int *out)
{
    int fd = cio_socket(family, SOCK_DGRAM, 0);
    if (fd < 0)
        return fd;
    int rc = o->reuse_port ? sock_enable(fd, SOL_SOCKET, SO_REUSEPORT) : 0;
    if (!rc && o->broadcast)
        rc = sock_enable(fd, SOL_SOCKET, SO_BROADCAST);
    if (!rc && l && bind(fd, l->ai_addr, l->ai_addrlen))
        rc = -errno;
    if (!rc && r && connect(fd, r->ai_addr, r->ai_addrlen))
        rc = -errno;
    if (rc) {
        close(fd);
        return rc;
    }
    *out = fd;
    return 0;
}

/* Tries remote address r with each local address of its family (or with
 * none when local is NULL): 0, the last error, or -EINVAL when no local
 * address has r's family. */
static int udp_try_remote(const struct addrinfo *local, const struct addrinfo *r,
                          const cio_udp_opts_t *o, int *out)
{
    if (!local)
        return udp_try(r->ai_family, NULL, r, o, out);
    int rc = -EINVAL;
    for (const struct addrinfo *l = local; l; l = l->ai_next) {
        if (l->ai_family != r->ai_family)
            continue;
        if (!(rc = udp_try(r->ai_family, l, r, o, out)))
            return 0;
    }
    return rc;
}

/*
 * The socket of a new endpoint, trying the resolved addresses in order as
 * asyncio does: every remote address (with each local one of its family),
 * or every local one, until one works. With neither, an unbound socket of
 * the family asked for (IPv4 for AF_UNSPEC). Returns 0 with *out, or the
 * last attempt's error.
 */
static int udp_socket(const struct addrinfo *local, const struct addrinfo *remote,
                      const cio_udp_opts_t *o, int *out)
{
    if (!local && !remote)
        return udp_try(o->family ? o->family : AF_INET, NULL, NULL, o, out);
    int rc = -EINVAL;
    if (remote) {
        for (const struct addrinfo *r = remote; r; r = r->ai_next)
            if (!(rc = udp_try_remote(local, r, o, out)))
                return 0;
        return rc;
    }
    for (const struct addrinfo *l = local; l; l = l->ai_next)
        if (!(rc = udp_try(l->ai_family, l, NULL, o, out)))
            return 0;
    return rc;
}

/* Await point: resolves the addresses (off the loop when they are names)
 * and makes the socket: 0 with *fd, or the error. */
static int udp_open_fd(const char *local_host, int local_port, const char *remote_host,
                       int remote_port, const cio_udp_opts_t *o, int *fd)
{
    struct addrinfo *local = NULL, *remote = NULL;
    int rc = 0;
    if (local_host || local_port)
        rc = cio__resolve(local_host, local_port, o->family, SOCK_DGRAM, AI_PASSIVE, &local);
    if (!rc && remote_host)
        rc = cio__resolve(remote_host, remote_port, o->family, SOCK_DGRAM, 0, &remote);
    if (!rc)
        rc = udp_socket(local, remote, o, fd);
    cio_freeaddrinfo(local);
    cio_freeaddrinfo(remote);
    return rc;
}

int cio_udp_open(cio_udp_t **out, const char *local_host, int local_port,
                 const char *remote_host, int remote_port, const cio_udp_opts_t *opts)
{
    if (out)
        *out = NULL;
    cio__coro *c = cio__current;
    if (!c)
        return -EPERM;
    cio_udp_opts_t o;
    if (!out || udp_opts(opts, &o) || local_port < 0 || local_port > 65535 ||
        remote_port < 0 || remote_port > 65535 || (!remote_host && remote_port))
        return -EINVAL;
    cio__net *net = cio__net_get(c->loop);
    if (!net)
        return -ENOMEM;
    int fd, rc = udp_open_fd(local_host, local_port, remote_host, remote_port, &o, &fd);
    if (rc)
        return rc;
    cio_udp_t *u = cio__calloc(1, sizeof(*u));
    if (!u) {
        close(fd);
        return -ENOMEM;
    }
    u->obj.kind = "UDP endpoint";
    u->obj.describe = udp_describe;
    u->obj.abort = udp_abort;
    u->loop = c->loop;
    u->net = net;
    u->fd = fd;
    u->max_datagram = o.max_datagram;
    cio_lock_init(&u->rlock);
    cio_lock_init(&u->wlock);
    cio__net_add(net, &u->obj);
    *out = u;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* The task form                                                              */
/* ------------------------------------------------------------------------ */

/* One receive into buf from task c: the length, -EMSGSIZE when the
 * datagram was longer than len, or the operation's error. */
static ssize_t recv_once(cio__coro *c, cio_udp_t *u, void *buf, size_t len,
                         struct sockaddr *addr, socklen_t *addrlen)
{
    struct iovec iov = {.iov_base = buf, .iov_len = len};
    struct msghdr msg = {.msg_name = addr, .msg_namelen = addrlen ? *addrlen : 0,
                         .msg_iov = &iov, .msg_iovlen = 1};
    cio__op op = {.code = CIO__OP_RECVMSG, .fd = u->fd, .msg = &msg, .flags = MSG_TRUNC,
                  .offset = -1};
    ssize_t r = cio__op_run(c, &op);
    if (r < 0)
        return r;
    if (addrlen)
        *addrlen = msg.msg_namelen;
    return (size_t)r > len || (msg.msg_flags & MSG_TRUNC) ? -EMSGSIZE : r;
}

ssize_t cio_udp_recvfrom(cio_udp_t *u, void *buf, size_t len, struct sockaddr *addr,
                         socklen_t *addrlen)
{
    cio__coro *c = cio__current;
    if (!c)
        return -EPERM;
    if (!u || (!buf && len) || (addr == NULL) != (addrlen == NULL))
        return -EINVAL;
    if (u->proto)
        return -EBUSY;
    if (u->closed)
        return -EBADF;
    u->users++;
    u->receivers++;
    ssize_t r = cio_lock_acquire(&u->rlock);
    if (!r) {
        /* Closed while this task waited for its turn: the fd is gone. */
        r = u->closed ? -EBADF : recv_once(c, u, buf, len, addr, addrlen);
        cio_lock_release(&u->rlock);
    }
    u->receivers--;
    u->users--;
    maybe_free(u);
    return r;
}

/* A sendmsg operation of buf to addr (NULL: the connected peer). */
static cio__op send_op(cio_udp_t *u, struct msghdr *msg, struct iovec *iov, const void *buf,
                       size_t len, const struct sockaddr *addr, socklen_t addrlen)
{
    *iov = (struct iovec){.iov_base = (void *)buf, .iov_len = len};
    *msg = (struct msghdr){.msg_name = (void *)addr, .msg_namelen = addr ? addrlen : 0,
                           .msg_iov = iov, .msg_iovlen = 1};
    return (cio__op){.code = CIO__OP_SENDMSG, .fd = u->fd, .msg = msg, .offset = -1};
}

ssize_t cio_udp_sendto(cio_udp_t *u, const void *buf, size_t len, const struct sockaddr *addr,
                       socklen_t addrlen)
{
    cio__coro *c = cio__current;
    if (!c)
        return -EPERM;
    if (!u || (!buf && len))
        return -EINVAL;
    if (u->closed)
        return -EBADF;
    u->users++;
    ssize_t r = cio_lock_acquire(&u->wlock);
    if (!r) {
        if (u->closed) {
            r = -EBADF;
        } else {
            struct msghdr msg;
            struct iovec iov;
            cio__op op = send_op(u, &msg, &iov, buf, len, addr, addrlen);
            r = cio__op_run(c, &op);
        }
        cio_lock_release(&u->wlock);
    }
    u->users--;
    maybe_free(u);
    return r;
}

ssize_t cio_udp_sendto_nowait(cio_udp_t *u, const void *buf, size_t len,
                              const struct sockaddr *addr, socklen_t addrlen)
{
    if (!u || (!buf && len))
        return -EINVAL;
    if (u->closed)
        return -EBADF;
    struct msghdr msg;
    struct iovec iov;
    cio__op op = send_op(u, &msg, &iov, buf, len, addr, addrlen);
    return cio__op_try(&op);
}

/* ------------------------------------------------------------------------ */
/* The protocol form                                                          */
/* ------------------------------------------------------------------------ */

/* Right before each receive: the message header over u's buffer. */
static void udp_prepare(cio__aop *a)
{
    cio_udp_t *u = cio__container_of(a, cio_udp_t, aop);
    u->iov = (struct iovec){.iov_base = u->buf, .iov_len = u->max_datagram};
    u->msg = (struct msghdr){.msg_name = &u->from, .msg_namelen = sizeof u->from,
                             .msg_iov = &u->iov, .msg_iovlen = 1};
    a->op.msg = &u->msg;
}

/* Errors after which receiving cannot go on: the socket is gone or the
 * operation itself is wrong. Others (ICMP reports such as -ECONNREFUSED,
 * -ENOBUFS, ...) are reported and receiving continues, as asyncio does. */
static bool fatal_error(ssize_t err)
{
    switch (-err) {
    case EBADF:
    case ENOTSOCK:
    case EINVAL:
    case EFAULT:
    case EOPNOTSUPP:
    case ECANCELED: return true;
    default: return false;
    }
}

/* Hands a received datagram of real length res to the protocol. */
static void deliver(cio_udp_t *u, ssize_t res)
{
    size_t n = (size_t)res > u->max_datagram ? u->max_datagram : (size_t)res;
    bool truncated = (size_t)res > u->max_datagram || (u->msg.msg_flags & MSG_TRUNC);
    u->proto->datagram_received(u, u->buf, n, (const struct sockaddr *)&u->from,
                                u->msg.msg_namelen, truncated, u->ctx);
}

/*
 * The receive finished (loop thread): calls the protocol and returns true
 * to receive again. Once u is closed (during a callback, or the completion
 * of a stopped receive), it frees u if nothing else holds it and ends.
 */
static bool udp_done(cio__aop *a, ssize_t res)
{
    cio_udp_t *u = cio__container_of(a, cio_udp_t, aop);
    if (u->closed) {
        maybe_free(u);
        return false;
    }
    bool fatal = res < 0 && fatal_error(res);
    u->in_callback = true;
    if (res >= 0)
        deliver(u, res);
    else if (u->proto->error_received)
        u->proto->error_received(u, (int)res, u->ctx);
    u->in_callback = false;
    if (u->closed) {
        maybe_free(u);
        return false;
    }
    return !fatal;
}

int cio_udp_start(cio_udp_t *u, const cio_datagram_protocol_t *proto, void *ctx)
{
    if (!u || !proto || !proto->datagram_received || proto->reserved_[0] ||
        proto->reserved_[1] || u->closed)
        return -EINVAL;
    if (u->proto || u->receivers)
        return -EBUSY;
    u->buf = u->max_datagram == CIO__NET_BUF ? cio__net_buf_get(u->net)
                                             : cio__malloc(u->max_datagram);
    if (!u->buf)
        return -ENOMEM;
    cio__aop_init(&u->aop, u->loop, CIO__OP_RECVMSG, u->fd, udp_prepare, udp_done);
    u->aop.op.flags = MSG_TRUNC;
    u->proto = proto;
    u->ctx = ctx;
    /* Not tried now: the protocol is never called from inside this call. */
    ssize_t rc = cio__aop_start(&u->aop, false);
    if (rc == -EINPROGRESS)
        return 0;
    u->proto = NULL;
    if (u->max_datagram == CIO__NET_BUF)
        cio__net_buf_put(u->net, u->buf);
    else
        cio__free(u->buf);
    u->buf = NULL;
    return (int)rc;
}

/* ------------------------------------------------------------------------ */
/* Getters                                                                    */
/* ------------------------------------------------------------------------ */

int cio_udp_fd(const cio_udp_t *u)
{
    return u ? u->fd : -EINVAL;
}

int cio_udp_sockname(const cio_udp_t *u, struct sockaddr *addr, socklen_t *len)
{
    if (!u || !addr || !len)
        return -EINVAL;
    return getsockname(u->fd, addr, len) ? -errno : 0;
}
