/*
 * Servers: listening sockets whose accepts are callback operations kept
 * running by the loop (no task), handing each connection to a new task
 * (stream servers) or to a transport and protocol (protocol servers).
 *
 * Accepting pauses, and so lets the kernel's backlog hold new peers, in two
 * cases: at max_connections (resumed when a connection ends) and when the
 * process runs out of descriptors (EMFILE, ENFILE) or memory (resumed when a
 * connection ends, or by a timer 100 ms later). Neither spins the CPU, and
 * the server keeps serving once descriptors are free again.
 */
#include "net.h"

#include <netinet/tcp.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEF_BACKLOG 1024
#define RETRY_DELAY 0.1

typedef struct listener {
    cio__aop acc;
    struct cio_server *srv;
    int fd;
    int family;
} listener;

typedef struct conn {
    struct conn *next, *prev;
    struct cio_server *srv;
    cio_stream_t *s;          /* stream servers */
    cio_transport_t *t;       /* protocol servers */
} conn;

struct cio_server {
    cio__netobj obj;
    cio_loop_t *loop;
    cio__net *net;
    listener *ls;
    int nls;
    cio_stream_handler_fn fn;
    cio_protocol_factory_fn factory;
    void *arg;
    cio_stream_opts_t sopts;
    bool has_sopts;
    size_t max, nconn;
    conn conns;               /* sentinel */
    cio_waitq_t waiters;      /* serve_forever and wait_closed */
    cio_handle_t retry;
    char *path;               /* Unix servers: removed at close */
    uint8_t closed, paused_limit, paused_fd, freeing, accepting;
    listener *in_done;        /* the listener whose acc_done runs */
};

static void resume_accepting(cio_server_t *srv);
static bool listeners_busy(const cio_server_t *srv);

/* ------------------------------------------------------------------------ */
/* Connections                                                                */
/* ------------------------------------------------------------------------ */

static void conn_link(cio_server_t *srv, conn *c)
{
    c->srv = srv;
    c->next = &srv->conns;
    c->prev = srv->conns.prev;
    srv->conns.prev->next = c;
    srv->conns.prev = c;
    srv->nconn++;
}

static void server_free_now(cio_server_t *srv);

/* A connection ended: its slot frees up and waiters may be done. */
static void conn_end(void *arg)
{
    conn *c = arg;
    cio_server_t *srv = c->srv;
    c->prev->next = c->next;
    c->next->prev = c->prev;
    cio__free(c);
    srv->nconn--;
    if (srv->paused_limit && srv->nconn < srv->max)
        srv->paused_limit = 0;
    if (srv->paused_fd) {
        srv->paused_fd = 0; /* a descriptor was just freed */
        cio_handle_cancel(&srv->retry);
    }
    resume_accepting(srv);
    if (srv->closed && !srv->nconn)
        cio__waitq_wake_all(&srv->waiters, 0);
}

static int conn_main(void *arg, void **result)
{
    conn *c = arg;
    (void)result;
    c->srv->fn(c->s, c->srv->arg);
    cio__stream_release(c->s);
    c->s = NULL;
    conn_end(c);
    return 0;
}

static void start_stream_conn(cio_server_t *srv, int fd)
{
    conn *c = cio__calloc(1, sizeof(*c));
    if (!c) {
        cio__close_fd(srv->loop, fd);
        return;
    }
    if (cio__stream_new_held(&c->s, srv->loop, fd, srv->has_sopts ? &srv->sopts : NULL)) {
        cio__free(c);
        return;
    }
    conn_link(srv, c);
    if (cio_spawn_ex(NULL, srv->loop, conn_main, c, NULL)) {
        cio__stream_release(c->s); /* outside a task: aborts and frees */
        conn_end(c);
    }
}

static void start_protocol_conn(cio_server_t *srv, int fd)
{
    const cio_protocol_t *proto = NULL;
    void *ctx = NULL;
    conn *c = cio__calloc(1, sizeof(*c));
    if (!c || srv->factory(srv->arg, &proto, &ctx) < 0 || !proto) {
        cio__free(c);
        cio__close_fd(srv->loop, fd);
        return;
    }
    conn_link(srv, c);
    if (cio_transport_new(&c->t, fd, proto, ctx, srv->has_sopts ? &srv->sopts : NULL)) {
        conn_end(c);
        return;
    }
    cio__transport_on_gone(c->t, conn_end, c);
}

static void on_accept(cio_server_t *srv, listener *l, int fd)
{
    if (l->family == AF_INET || l->family == AF_INET6) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    if (srv->fn)
        start_stream_conn(srv, fd);
    else
        start_protocol_conn(srv, fd);
}

/* ------------------------------------------------------------------------ */
/* Accepting                                                                  */
/* ------------------------------------------------------------------------ */

static void stop_accepting(cio_server_t *srv)
{
    srv->accepting = 0;
    for (int i = 0; i < srv->nls; i++)
        cio__aop_stop(&srv->ls[i].acc);
}

static void retry_cb(void *arg)
{
    cio_server_t *srv = arg;
    srv->paused_fd = 0;
    resume_accepting(srv);
}

/* Errors of accept(2) that concern one connection, not the listener. */
static bool transient(int err)
{
    switch (err) {
    case ECONNABORTED: case EPERM: case EPROTO: case ENETDOWN: case ENOPROTOOPT:
    case EHOSTDOWN: case ENONET: case EHOSTUNREACH: case EOPNOTSUPP: case ENETUNREACH:
    case ETIMEDOUT: case EAGAIN: case EINTR:
        return true;
    default:
        return false;
    }
}

static bool acc_done(cio__aop *a, ssize_t res)
{
    listener *l = (listener *)a;
    cio_server_t *srv = l->srv;
    if (srv->closed) {
        if (res >= 0)
            cio__close_fd(srv->loop, (int)res);
        if (srv->freeing && !listeners_busy(srv))
            server_free_now(srv);
        return false;
    }
    if (res >= 0) {
        /* A connection ending inside on_accept (a failed start) resumes
         * accepting: l restarts through the return value, not from there. */
        srv->in_done = l;
        on_accept(srv, l, (int)res);
        srv->in_done = NULL;
        if (srv->max && srv->nconn >= srv->max && !srv->paused_limit) {
            srv->paused_limit = 1;
            stop_accepting(srv);
        }
        return srv->accepting;
    }
    if (transient((int)-res))
        return true;
    if (res == -ECANCELED)
        return srv->accepting; /* a stopped accept: resumed meanwhile? */
    if (res == -EMFILE || res == -ENFILE || res == -ENOBUFS || res == -ENOMEM) {
        /* Out of descriptors: wait for a connection to end or for the
         * timer, rather than spin on a listener that stays readable. */
        if (srv->paused_fd)
            return false;
        /* No timer (its heap could not grow): keep accepting rather than
         * risk never resuming. */
        if (cio_call_later(srv->loop, &srv->retry, RETRY_DELAY, retry_cb, srv))
            return true;
        srv->paused_fd = 1;
        stop_accepting(srv);
        return false;
    }
    return false; /* the listener itself failed (closed under us) */
}

static void resume_accepting(cio_server_t *srv)
{
    if (srv->closed || srv->accepting || srv->paused_limit || srv->paused_fd)
        return;
    srv->accepting = 1;
    for (int i = 0; i < srv->nls; i++) {
        listener *l = &srv->ls[i];
        /* A stopped accept still with the kernel resumes when it completes
         * (acc_done returns true), as does the one whose acc_done runs. */
        if (cio__aop_busy(&l->acc) || l == srv->in_done)
            continue;
        ssize_t r = cio__aop_start(&l->acc, false);
        if (r != -EINPROGRESS && r < 0 && !srv->paused_fd &&
            !cio_call_later(srv->loop, &srv->retry, RETRY_DELAY, retry_cb, srv)) {
            /* Could not start (no submission entry, no memory): try again
             * shortly rather than leave the listener deaf. */
            srv->paused_fd = 1;
            srv->accepting = 0;
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Listening sockets                                                          */
/* ------------------------------------------------------------------------ */

static int listen_on(cio_server_t *srv, const struct sockaddr *sa, socklen_t len, int family,
                     const cio_server_opts_t *o)
{
    int fd = cio_socket(family, SOCK_STREAM, 0);
    if (fd < 0)
        return fd;
    int one = 1, rc = 0;
    if (family != AF_UNIX)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (o->reuse_port && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one))
        rc = -errno;
    /* A wildcard IPv6 socket would also take IPv4 and collide with the
     * IPv4 listener the same name resolves to. */
    if (!rc && family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (!rc && bind(fd, sa, len))
        rc = -errno;
    if (!rc && listen(fd, o->backlog ? o->backlog : DEF_BACKLOG))
        rc = -errno;
    if (rc) {
        close(fd);
        return rc;
    }
    listener *l = &srv->ls[srv->nls++];
    l->srv = srv;
    l->fd = fd;
    l->family = family;
    cio__aop_init(&l->acc, srv->loop, CIO__OP_ACCEPT, fd, NULL, acc_done);
    l->acc.op.flags = SOCK_NONBLOCK | SOCK_CLOEXEC;
    return 0;
}

static void close_listeners(cio_server_t *srv)
{
    stop_accepting(srv);
    for (int i = 0; i < srv->nls; i++) {
        /* shutdown takes a listening socket out of LISTEN at once; close
         * alone would leave it accepting into its backlog while io_uring
         * still holds the file for a cancelled accept. */
        if (srv->ls[i].fd >= 0) {
            shutdown(srv->ls[i].fd, SHUT_RDWR);
            cio__close_fd(srv->loop, srv->ls[i].fd);
        }
        srv->ls[i].fd = -1;
    }
    if (srv->path) {
        unlink(srv->path);
        cio__free(srv->path);
        srv->path = NULL;
    }
}

static bool listeners_busy(const cio_server_t *srv)
{
    for (int i = 0; i < srv->nls; i++)
        if (cio__aop_busy(&srv->ls[i].acc))
            return true;
    return false;
}

/* ------------------------------------------------------------------------ */
/* Creation                                                                   */
/* ------------------------------------------------------------------------ */

static void obj_describe(cio__netobj *o, FILE *out)
{
    cio_server_t *srv = (cio_server_t *)o;
    fprintf(out, "%d listening socket(s)%s, %zu connection(s)", srv->nls,
            srv->closed ? " (closed)" : "", srv->nconn);
}

static void server_free_now(cio_server_t *srv)
{
    cio__net_remove(srv->net, &srv->obj);
    cio__free(srv->ls);
    cio__free(srv->path);
    cio__free(srv);
}

/* Frees srv now, or once its stopped accepts have completed (io_uring). */
static void server_release(cio_server_t *srv)
{
    cio__net_remove(srv->net, &srv->obj);
    if (listeners_busy(srv))
        srv->freeing = 1;
    else
        server_free_now(srv);
}

/* At loop close: no task runs any more, so only protocol connections can
 * be left; they go without callbacks. */
static void obj_abort(cio__netobj *o)
{
    cio_server_t *srv = (cio_server_t *)o;
    cio_server_close(srv);
    while (srv->conns.next != &srv->conns) {
        conn *c = srv->conns.next;
        if (c->t) {
            cio__transport_on_gone(c->t, NULL, NULL);
            cio__transport_detach(c->t, NULL, 0);
            cio_transport_abort(c->t);
        }
        c->prev->next = c->next;
        c->next->prev = c->prev;
        cio__free(c);
        srv->nconn--;
    }
    server_release(srv);
}

static int check_opts(const cio_server_opts_t *o)
{
    if (o->reserved_[0] || o->reserved_[1] || o->backlog < 0)
        return -EINVAL;
    if (o->family != AF_UNSPEC && o->family != AF_INET && o->family != AF_INET6)
        return -EINVAL;
    return 0;
}

static int server_new(cio_server_t **out, cio_loop_t *loop, const cio_server_opts_t *o,
                      int nls)
{
    cio__net *net = cio__net_get(loop);
    cio_server_t *srv = net ? cio__calloc(1, sizeof(*srv)) : NULL;
    listener *ls = srv ? cio__calloc((size_t)nls, sizeof(*ls)) : NULL;
    if (!ls) {
        cio__free(srv);
        return -ENOMEM;
    }
    srv->loop = loop;
    srv->net = net;
    srv->ls = ls;
    srv->max = o->max_connections;
    srv->conns.next = srv->conns.prev = &srv->conns;
    if (o->stream) {
        srv->sopts = *o->stream;
        srv->has_sopts = true;
    }
    srv->obj.kind = "server";
    srv->obj.describe = obj_describe;
    srv->obj.abort = obj_abort;
    *out = srv;
    return 0;
}

/* Opens the listeners of srv for host:port. */
/* Sets the port of an IPv4 or IPv6 address. */
static void set_port(struct sockaddr *sa, int port)
{
    if (sa->sa_family == AF_INET)
        ((struct sockaddr_in *)sa)->sin_port = htons((uint16_t)port);
    else if (sa->sa_family == AF_INET6)
        ((struct sockaddr_in6 *)sa)->sin6_port = htons((uint16_t)port);
}

/* Opens the listeners of srv, one per address. With port 0 the kernel picks
 * the first one's port and the others take the same, so that one port
 * serves IPv4 and IPv6 alike. */
static int listen_tcp(cio_server_t *srv, int port, const cio_server_opts_t *o,
                      struct addrinfo *res)
{
    int skipped = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        if (port == 0 && srv->nls)
            set_port(ai->ai_addr, cio_server_port(srv));
        int rc = listen_on(srv, ai->ai_addr, ai->ai_addrlen, ai->ai_family, o);
        /* A family the machine does not have (IPv6 disabled while the name
         * still lists ::1) is skipped when another address serves. */
        if (rc == -EADDRNOTAVAIL || rc == -EAFNOSUPPORT) {
            skipped = rc;
            continue;
        }
        if (rc)
            return rc;
    }
    return srv->nls ? 0 : skipped;
}

static int count(const struct addrinfo *res)
{
    int n = 0;
    for (; res; res = res->ai_next)
        n++;
    return n;
}

/* The listeners of srv are open: hands it its connection code, lists it on
 * the loop and starts accepting. Returns 0 with *out. */
static int serve(cio_server_t *srv, cio_stream_handler_fn fn, cio_protocol_factory_fn factory,
                 void *arg, cio_server_t **out)
{
    srv->fn = fn;
    srv->factory = factory;
    srv->arg = arg;
    cio__net_add(srv->net, &srv->obj);
    resume_accepting(srv);
    *out = srv;
    return 0;
}

static int start_tcp(cio_server_t **out, const char *host, int port, cio_stream_handler_fn fn,
                     cio_protocol_factory_fn factory, void *arg, const cio_server_opts_t *opts)
{
    if (out)
        *out = NULL;
    cio_server_opts_t o = opts ? *opts : (cio_server_opts_t){0};
    if (!out || (!fn && !factory) || port < 0 || port > 65535 || check_opts(&o))
        return -EINVAL;
    cio__coro *c = cio__current;
    if (!c)
        return -EPERM;
    cio_transport_opts_t chk;
    int rc = cio__transport_opts(o.stream, &chk);
    if (rc)
        return rc;
    struct addrinfo *res = NULL;
    rc = cio__resolve(host, port, o.family, SOCK_STREAM, AI_PASSIVE, &res);
    if (rc)
        return rc;
    cio_server_t *srv;
    rc = server_new(&srv, c->loop, &o, count(res));
    if (!rc && (rc = listen_tcp(srv, port, &o, res))) {
        close_listeners(srv);
        server_free_now(srv);
    }
    cio_freeaddrinfo(res);
    if (rc)
        return rc;
    return serve(srv, fn, factory, arg, out);
}

static int start_unix(cio_server_t **out, const char *path, cio_stream_handler_fn fn,
                      cio_protocol_factory_fn factory, void *arg, const cio_server_opts_t *opts)
{
    if (out)
        *out = NULL;
    cio_server_opts_t o = opts ? *opts : (cio_server_opts_t){0};
    if (!out || !path || (!fn && !factory) || check_opts(&o) || o.reuse_port)
        return -EINVAL;
    cio_loop_t *loop = cio__net_loop();
    if (!loop)
        return -EPERM;
    struct sockaddr_un sa;
    socklen_t len;
    cio_transport_opts_t chk;
    int rc = cio__unix_addr(path, &sa, &len);
    if (rc || (rc = cio__transport_opts(o.stream, &chk)))
        return rc;
    /* A socket file left by an earlier run would make bind fail. */
    struct stat st;
    if (path[0] && stat(path, &st) == 0 && S_ISSOCK(st.st_mode))
        unlink(path);
    cio_server_t *srv;
    if ((rc = server_new(&srv, loop, &o, 1)))
        return rc;
    if ((rc = listen_on(srv, (struct sockaddr *)&sa, len, AF_UNIX, &o)) ||
        (path[0] && !(srv->path = cio__strdup(path)))) {
        rc = rc ? rc : -ENOMEM;
        close_listeners(srv);
        server_free_now(srv);
        return rc;
    }
    return serve(srv, fn, factory, arg, out);
}

int cio_start_server(cio_server_t **out, const char *host, int port, cio_stream_handler_fn fn,
                     void *arg, const cio_server_opts_t *opts)
{
    return start_tcp(out, host, port, fn, NULL, arg, opts);
}

int cio_start_unix_server(cio_server_t **out, const char *path, cio_stream_handler_fn fn,
                          void *arg, const cio_server_opts_t *opts)
{
    return start_unix(out, path, fn, NULL, arg, opts);
}

int cio_create_server(cio_server_t **out, const char *host, int port,
                      cio_protocol_factory_fn factory, void *arg, const cio_server_opts_t *opts)
{
    return start_tcp(out, host, port, NULL, factory, arg, opts);
}

int cio_create_unix_server(cio_server_t **out, const char *path,
                           cio_protocol_factory_fn factory, void *arg,
                           const cio_server_opts_t *opts)
{
    return start_unix(out, path, NULL, factory, arg, opts);
}

/* ------------------------------------------------------------------------ */
/* Life of a server                                                           */
/* ------------------------------------------------------------------------ */

int cio_server_port(const cio_server_t *srv)
{
    if (!srv || !srv->nls || srv->ls[0].fd < 0 || srv->ls[0].family == AF_UNIX)
        return -EINVAL;
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(srv->ls[0].fd, (struct sockaddr *)&ss, &len))
        return -errno;
    return ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                         : ((struct sockaddr_in6 *)&ss)->sin6_port);
}

size_t cio_server_connections(const cio_server_t *srv)
{
    return srv ? srv->nconn : 0;
}

int cio_server_close(cio_server_t *srv)
{
    if (!srv)
        return -EINVAL;
    if (srv->closed)
        return 0;
    srv->closed = 1;
    cio_handle_cancel(&srv->retry);
    close_listeners(srv);
    cio__waitq_wake_all(&srv->waiters, 0);
    return 0;
}

static void shutdown_clients(cio_server_t *srv, bool flush)
{
    for (conn *c = srv->conns.next; c != &srv->conns;) {
        conn *next = c->next; /* an abort may end c at once */
        if (c->s)
            cio__stream_shutdown(c->s, flush);
        else if (c->t && flush)
            cio_transport_close(c->t);
        else if (c->t)
            cio_transport_abort(c->t);
        c = next;
    }
}

void cio_server_close_clients(cio_server_t *srv)
{
    if (srv)
        shutdown_clients(srv, true);
}

void cio_server_abort_clients(cio_server_t *srv)
{
    if (srv)
        shutdown_clients(srv, false);
}

/* Waits on srv's list until woken or the deadline: 0, CIO__OWN_DEADLINE,
 * or the interruption. */
static int wait_on(cio__coro *c, cio_server_t *srv, int64_t deadline)
{
    cio__waiter w;
    cio__waiter_init(&w, c, "server", srv, cio__wlist_unlink);
    cio__wlist_push(&srv->waiters, &w);
    return cio__wait(&w, deadline);
}

int cio_server_serve_forever(cio_server_t *srv)
{
    if (!srv)
        return -EINVAL;
    cio__coro *c = cio__current;
    if (!c)
        return -EPERM;
    while (!srv->closed) {
        int rc = wait_on(c, srv, CIO__NO_DEADLINE);
        if (rc < 0) {
            cio_server_close(srv);
            return rc;
        }
    }
    return 0;
}

int cio_server_wait_closed(cio_server_t *srv, double timeout)
{
    if (!srv)
        return -EINVAL;
    cio__coro *c = cio__current;
    if (!c)
        return -EPERM;
    int64_t deadline;
    int rc = cio__deadline_after(timeout, &deadline);
    if (rc)
        return rc;
    while (!srv->closed || srv->nconn) {
        rc = wait_on(c, srv, deadline);
        if (rc == CIO__OWN_DEADLINE)
            return -ETIMEDOUT;
        if (rc < 0)
            return rc;
    }
    return 0;
}

int cio_server_free(cio_server_t *srv)
{
    if (!srv)
        return 0;
    if (!srv->closed)
        return -EINVAL;
    if (srv->nconn)
        return -EBUSY;
    server_release(srv);
    return 0;
}
