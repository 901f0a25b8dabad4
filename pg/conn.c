/*
 * Connections: the non-blocking connect, close, errors, and the I/O steps
 * the rest of cio-pg is written with (pg.h).
 *
 * libpq in non-blocking mode never waits on its socket: it says which
 * direction it needs (PQconnectPoll's PGRES_POLLING_READING/WRITING,
 * PQflush's "more to send", PQisBusy's "a result is not complete") and we
 * wait for that direction with cio_wait_fd, so a task that talks to the
 * server suspends instead of blocking the loop. Two things libpq would still
 * block on are moved off the loop: the host name lookup of a connect (done
 * here with cio_getaddrinfo and handed to libpq as hostaddr) and the cancel
 * request (PQcancel opens its own connection synchronously: it runs on the
 * default thread pool).
 */
#include "pg.h"

#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* Errors                                                                    */
/* ------------------------------------------------------------------------ */

static _Thread_local char connect_error[512];

const char *cio_pg_connect_error(void) { return connect_error; }

/* Copies msg into buf without its trailing newlines. */
static void copy_trimmed(char *buf, size_t cap, const char *msg)
{
    size_t n = msg ? strlen(msg) : 0;
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        n--;
    if (n >= cap)
        n = cap - 1;
    if (n)
        memcpy(buf, msg, n);
    buf[n] = '\0';
}

static void clear_error(cio_pg_t *c)
{
    c->sqlstate[0] = '\0';
    PQclear(c->err);
    c->err = NULL;
    free(c->errmsg);
    c->errmsg = NULL;
}

void pg__set_error(cio_pg_t *c, const char *msg)
{
    clear_error(c);
    size_t n = msg ? strlen(msg) : 0;
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        n--;
    c->errmsg = malloc(n + 1);
    if (c->errmsg) {
        memcpy(c->errmsg, msg, n);
        c->errmsg[n] = '\0';
    }
}

const char *cio_pg_error_message(const cio_pg_t *c)
{
    if (!c)
        return "";
    if (c->errmsg)
        return c->errmsg;
    if (c->err) {
        const char *m = PQresultErrorField(c->err, PG_DIAG_MESSAGE_PRIMARY);
        return m ? m : "";
    }
    return "";
}

const char *cio_pg_error_sqlstate(const cio_pg_t *c)
{
    if (c && c->sqlstate[0])
        return c->sqlstate;
    const char *s = c && c->err ? PQresultErrorField(c->err, PG_DIAG_SQLSTATE) : NULL;
    return s ? s : "";
}

const char *cio_pg_error_field(const cio_pg_t *c, int fieldcode)
{
    return c && c->err ? PQresultErrorField(c->err, fieldcode) : NULL;
}

int pg__lost(cio_pg_t *c)
{
    /* Keep a server's last error (an admin shutdown's FATAL) if that is what
     * broke the connection; otherwise libpq's description of the loss. */
    if (!c->err)
        pg__set_error(c, PQerrorMessage(c->pq));
    c->broken = true;
    c->mode = PG_MODE_NONE;
    return -ECONNRESET;
}

int pg__send_failed(cio_pg_t *c)
{
    if (PQstatus(c->pq) == CONNECTION_BAD)
        return pg__lost(c);
    pg__set_error(c, PQerrorMessage(c->pq));
    return -ENOMEM;
}

int pg__wait_failed(cio_pg_t *c, int rc)
{
    if (rc == -ECONNRESET || c->broken || !c->pq)
        return rc;
    return pg__abort(c, rc);
}

int pg__fail(cio_pg_t *c, PGresult *r)
{
    clear_error(c);
    c->err = r;
    if (PQstatus(c->pq) == CONNECTION_BAD) {
        c->broken = true;
        c->mode = PG_MODE_NONE;
        return -ECONNRESET;
    }
    return -EREMOTEIO;
}

char *pg__strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p)
        memcpy(p, s, n);
    return p;
}

/* ------------------------------------------------------------------------ */
/* Operations                                                                */
/* ------------------------------------------------------------------------ */

int pg__begin(cio_pg_t *c, int mode)
{
    if (!c)
        return -EINVAL;
    cio_task_t *t = cio_current_task();
    if (!t)
        return -EPERM;
    if (c->broken || !c->pq)
        return -ENOTCONN;
    if (c->owner || (mode >= 0 && c->mode != mode))
        return -EBUSY;
    /* A cancelled task starts no statement: once sent, a statement may run
     * to its end whatever we do, and the caller, told -ECANCELED, would not
     * know of it (a BEGIN, an INSERT). */
    if (mode == PG_MODE_NONE) {
        int rc = cio_check_cancel();
        if (rc < 0)
            return rc;
    }
    c->owner = t;
    clear_error(c);
    return 0;
}

int pg__end(cio_pg_t *c, int rc)
{
    c->owner = NULL;
    return rc;
}

int64_t pg__end64(cio_pg_t *c, int64_t rc)
{
    c->owner = NULL;
    return rc;
}

int pg__wait(cio_pg_t *c, int events)
{
    int fd = PQsocket(c->pq);
    if (fd < 0)
        return pg__lost(c);
    return cio_wait_fd(fd, events);
}

int pg__flush(cio_pg_t *c)
{
    for (;;) {
        int rc = PQflush(c->pq);
        if (rc == 0)
            return 0;
        if (rc < 0)
            return pg__lost(c);
        /* The kernel's buffer is full. The server may itself be blocked
         * writing to us (notices, a COPY OUT, pipelined results), so read
         * too, or both sides would wait for ever. */
        int ev = pg__wait(c, CIO_READABLE | CIO_WRITABLE);
        if (ev < 0)
            return ev;
        if ((ev & CIO_READABLE) && !PQconsumeInput(c->pq))
            return pg__lost(c);
    }
}

int pg__next(cio_pg_t *c, PGresult **out)
{
    *out = NULL;
    while (PQisBusy(c->pq)) {
        int ev = pg__wait(c, CIO_READABLE);
        if (ev < 0)
            return ev;
        if (!PQconsumeInput(c->pq))
            return pg__lost(c);
    }
    *out = PQgetResult(c->pq);
    if (!*out && PQstatus(c->pq) == CONNECTION_BAD)
        return pg__lost(c);
    return 0;
}

int64_t pg__rows(const PGresult *r)
{
    if (PQresultStatus(r) == PGRES_TUPLES_OK || PQresultStatus(r) == PGRES_SINGLE_TUPLE)
        return PQntuples(r);
    const char *n = PQcmdTuples((PGresult *)r);
    return n && *n ? strtoll(n, NULL, 10) : 0;
}

int pg__check_params(int nparams, const char *const *values, const int *lengths,
                     const int *formats)
{
    if (nparams < 0 || nparams > 65535 || (nparams > 0 && !values))
        return -EINVAL;
    for (int i = 0; i < nparams; i++) {
        bool binary = formats && formats[i];
        if (binary) {
            if (values[i] && (!lengths || lengths[i] < 0))
                return -EINVAL;
        } else if (values[i] && lengths && lengths[i] >= 0 &&
                   memchr(values[i], '\0', (size_t)lengths[i])) {
            return -EINVAL;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Collecting a statement's results                                          */
/* ------------------------------------------------------------------------ */

/* A COPY a plain statement call opened: refuse it and end it. The result is
 * freed; the caller goes on collecting until the statement's end. */
static int refuse_copy(cio_pg_t *c, PGresult *r)
{
    ExecStatusType st = PQresultStatus(r);
    PQclear(r);
    if (st == PGRES_COPY_IN) {
        if (PQputCopyEnd(c->pq, "COPY FROM STDIN is not allowed here") < 0)
            return pg__lost(c);
        int rc = pg__flush(c);
        if (rc < 0)
            return rc;
    } else if (st == PGRES_COPY_OUT) {
        /* Read the data away: there is no way to stop a COPY OUT but a
         * cancel, and the rows are usually few. */
        char *buf;
        int n;
        for (;;) {
            n = PQgetCopyData(c->pq, &buf, 1);
            if (n > 0) {
                PQfreemem(buf);
                continue;
            }
            if (n < 0)
                break;
            int ev = pg__wait(c, CIO_READABLE);
            if (ev < 0)
                return ev;
            if (!PQconsumeInput(c->pq))
                return pg__lost(c);
        }
        if (n == -2)
            return pg__lost(c);
    } else {
        /* COPY BOTH (replication) cannot be left but by closing. */
        PQfinish(c->pq);
        c->pq = NULL;
        c->broken = true;
        pg__set_error(c, "COPY BOTH is not supported");
        return -ECONNRESET;
    }
    return -EPROTO;
}

int64_t pg__collect(cio_pg_t *c, PGresult **out)
{
    PGresult *keep = NULL;
    int64_t err = 0;
    for (;;) {
        PGresult *r;
        int rc = pg__next(c, &r);
        if (rc < 0) {
            if (rc == -ECONNRESET || !c->pq)
                return PQclear(keep), rc;
            rc = pg__abort(c, rc);
            /* The wait may have been for the end of results already read:
             * the last one is then the outcome, if the cleanup saw no
             * failure. An earlier failure is the outcome in any case. */
            if (!err && !c->drained && keep && !c->drain_failed && !c->broken && c->pq) {
                c->drained = keep;
                keep = NULL;
            }
            PQclear(keep);
            return err ? err : pg__settled(c, rc, out);
        }
        if (!r)
            break;
        switch (PQresultStatus(r)) {
        case PGRES_COMMAND_OK:
        case PGRES_TUPLES_OK:
        case PGRES_EMPTY_QUERY:
            PQclear(keep);
            keep = r;
            break;
        case PGRES_COPY_IN:
        case PGRES_COPY_OUT:
        case PGRES_COPY_BOTH:
            rc = refuse_copy(c, r);
            if (rc == -ECONNRESET)
                return PQclear(keep), rc;
            if (rc != -EPROTO) {
                PQclear(keep);
                return pg__abort(c, rc);
            }
            if (!err)
                err = rc;
            break;
        default:
            /* The first error is the one to report; the server skips the
             * rest of a multi-statement string after it. */
            if (!err)
                err = pg__fail(c, r);
            else
                PQclear(r);
            if (err == -ECONNRESET)
                return PQclear(keep), err;
            break;
        }
    }
    if (err) {
        PQclear(keep);
        return err;
    }
    int64_t rows = keep ? pg__rows(keep) : 0;
    if (out)
        *out = keep;
    else
        PQclear(keep);
    return rows;
}

/* ------------------------------------------------------------------------ */
/* Cancellation                                                              */
/* ------------------------------------------------------------------------ */

/* A cancel request on its way, owned by the thread that sends it. PQcancel
 * blocks (in connect() too: for a host that vanished, until the kernel gives
 * up, about two minutes), so it runs on a detached thread of its own, not on
 * the default pool, whose shutdown at the end of cio_run would wait for it.
 * The thread tells the task the outcome through a socket pair: the task
 * owns one end and may stop waiting at any time; the thread owns the rest. */
typedef struct {
    PGcancel *cancel;
    int fd;
} cancel_req_t;

static void *cancel_thread(void *arg)
{
    cancel_req_t *q = arg;
    char buf[256];
    char ok = PQcancel(q->cancel, buf, sizeof buf) ? 1 : 0;
    /* The task may be gone: MSG_NOSIGNAL, and the error is of no use. */
    ssize_t n = send(q->fd, &ok, 1, MSG_NOSIGNAL);
    (void)n;
    close(q->fd);
    PQfreeCancel(q->cancel);
    free(q);
    return NULL;
}

/* Starts the detached thread with every signal blocked (signals are the
 * loop thread's business). Returns 0 or a negative code. */
static int start_cancel_thread(cancel_req_t *q)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_attr_t attr;
    int rc = pthread_attr_init(&attr);
    if (rc != 0)
        return -rc;
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_t th;
    rc = pthread_create(&th, &attr, cancel_thread, q);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    return -rc;
}

/* Sends the cancel request and waits for it to be sent, within the current
 * (shielded) scope's deadline. Returns 0, -ECONNREFUSED (the request could
 * not be delivered), or a negative code. */
static int send_cancel(cio_pg_t *c)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) < 0)
        return -errno;
    cancel_req_t *q = malloc(sizeof *q);
    PGcancel *cancel = q ? PQgetCancel(c->pq) : NULL;
    int rc = cancel ? 0 : -ENOMEM;
    if (rc == 0) {
        q->cancel = cancel;
        q->fd = sv[1];
        rc = start_cancel_thread(q);
    }
    if (rc < 0) {
        PQfreeCancel(cancel);
        free(q);
        close(sv[1]);
        close(sv[0]);
        return rc;
    }
    char ok = 0;
    ssize_t n = cio_sock_recv(sv[0], &ok, 1, 0);
    cio_close(sv[0]);
    if (n < 0)
        return (int)n;
    return n == 1 && ok ? 0 : -ECONNREFUSED;
}

/* Reads and discards results until the connection is idle: in pipeline mode
 * until every sync is consumed, else until the statement's end. */
static int drain(cio_pg_t *c)
{
    for (;;) {
        PGresult *r;
        int rc = pg__next(c, &r);
        if (rc < 0)
            return rc;
        if (!r) {
            if (c->mode == PG_MODE_PIPELINE && c->pipe_syncs > 0)
                continue; /* the end of one query's results */
            return 0;
        }
        ExecStatusType st = PQresultStatus(r);
        if (c->mode == PG_MODE_NONE &&
            (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_EMPTY_QUERY)) {
            /* A plain statement that finished before the cancel took effect:
             * keep its outcome, which the interrupted call reports. */
            PQclear(c->drained);
            c->drained = r;
            continue;
        }
        if (st != PGRES_PIPELINE_SYNC && st != PGRES_COPY_OUT && st != PGRES_COPY_IN)
            c->drain_failed = true;
        PQclear(r);
        if (st == PGRES_PIPELINE_SYNC) {
            if (--c->pipe_syncs == 0) {
                c->pipe_pending = 0;
                return 0;
            }
        } else if (st == PGRES_COPY_OUT) {
            char *buf;
            int n;
            while ((n = PQgetCopyData(c->pq, &buf, 1)) != -1) {
                if (n > 0) {
                    PQfreemem(buf);
                } else if (n == 0) {
                    int ev = pg__wait(c, CIO_READABLE);
                    if (ev < 0)
                        return ev;
                    if (!PQconsumeInput(c->pq))
                        return pg__lost(c);
                } else {
                    return pg__lost(c);
                }
            }
        } else if (st == PGRES_COPY_IN) {
            if (PQputCopyEnd(c->pq, "canceled") < 0)
                return pg__lost(c);
            if ((rc = pg__flush(c)) < 0)
                return rc;
        } else if (st == PGRES_COPY_BOTH) {
            return -EPROTO;
        }
    }
}

/* Whether the server may still be working on something we sent: a result
 * not read in full, a mode in progress, or a statement running. */
static bool server_busy(cio_pg_t *c)
{
    return PQisBusy(c->pq) || c->mode != PG_MODE_NONE ||
           PQtransactionStatus(c->pq) == PQTRANS_ACTIVE;
}

/*
 * Drains with a cancel request, sent again while the drain does not end:
 * PostgreSQL ignores a cancel that reaches the backend while it still reads
 * the statement's messages (it only cancels what runs), so one request can
 * be lost. The waits between requests grow from 100 ms to 1.6 s; the
 * enclosing shielded scope (the cancel timeout) bounds the whole.
 */
static int drain_cancelling(cio_pg_t *c, cio_scope_t *outer)
{
    double pause = 0.1;
    for (;;) {
        int rc = send_cancel(c);
        if (rc < 0 && rc != -ECONNREFUSED)
            return rc;
        if ((rc = pg__flush(c)) < 0)
            return rc;
        cio_scope_t s;
        if ((rc = cio_scope_enter(&s, pause, 0)) < 0)
            return rc;
        rc = drain(c);
        int rs = cio_scope_exit(&s);
        if (rc == 0 || rs != -ETIMEDOUT || cio_scope_expired(outer))
            return rc;
        if (pause < 1.6)
            pause *= 2;
    }
}

/* The cleanup itself, inside the shielded scope `outer`. */
static int abort_steps(cio_pg_t *c, cio_scope_t *outer)
{
    int rc;
    if (c->mode == PG_MODE_COPY_IN) {
        /* Ending COPY IN with an error makes the server drop what it got.
         * A server stalled mid-COPY (a lock, a trigger) would read that
         * message only after what is buffered before it, so the cancel
         * request goes too. */
        if (PQputCopyEnd(c->pq, "canceled") < 0)
            return pg__lost(c);
    } else if (c->mode == PG_MODE_PIPELINE && (c->pipe_pending > 0 || c->pipe_unflushed)) {
        if (!PQpipelineSync(c->pq))
            return pg__lost(c);
        c->pipe_syncs++;
        c->pipe_unflushed = false;
    }
    if (server_busy(c))
        rc = drain_cancelling(c, outer);
    else if ((rc = pg__flush(c)) == 0)
        rc = drain(c);
    if (rc < 0)
        return rc;
    if (c->mode == PG_MODE_PIPELINE) {
        if (!PQexitPipelineMode(c->pq))
            return -EPROTO;
        c->pipe_pending = c->pipe_syncs = 0;
        c->pipe_unflushed = false;
    }
    c->mode = PG_MODE_NONE;
    return 0;
}

int64_t pg__settled(cio_pg_t *c, int err, PGresult **out)
{
    if (c->broken || !c->pq || c->drain_failed || !c->drained)
        return err;
    /* The statement ended before the cancellation reached the server: its
     * outcome is the truth (a COMMIT that happened is not reported as
     * cancelled). The cancellation stays pending: the caller's next await
     * point sees it. */
    int64_t rows = pg__rows(c->drained);
    if (out)
        *out = c->drained;
    else
        PQclear(c->drained);
    c->drained = NULL;
    return rows;
}

int pg__abort(cio_pg_t *c, int err)
{
    PQclear(c->drained);
    c->drained = NULL;
    c->drain_failed = false;
    if (c->broken || !c->pq)
        return err;
    /* The cleanup's deadline: the cancel timeout from now, or sooner when
     * the call is itself cleanup with a bound (cio_pg_rollback), so that the
     * two bounds do not add up. */
    int64_t by = INT64_MAX;
    if (!isinf(c->cancel_timeout))
        by = cio_loop_time_ns(cio_get_running_loop()) + (int64_t)(c->cancel_timeout * 1e9);
    if (c->abort_by_ns < by)
        by = c->abort_by_ns;
    cio_scope_t s;
    int rc = cio_scope_enter_at_ns(&s, by, CIO_SCOPE_SHIELD);
    if (rc == 0) {
        rc = abort_steps(c, &s);
        int rs = cio_scope_exit(&s);
        if (rc == 0 && rs < 0)
            rc = rs;
    }
    if (rc < 0) {
        /* Nothing drained counts when the cleanup did not finish. */
        PQclear(c->drained);
        c->drained = NULL;
        c->drain_failed = true;
    }
    if (rc < 0 && !c->broken) {
        /* The server did not come back in time (or memory ran out): the
         * protocol state is unknown, so the connection is given up. */
        pg__set_error(c, "connection closed: a cancelled call could not be cleaned up in time");
        PQfinish(c->pq);
        c->pq = NULL;
        c->broken = true;
        c->mode = PG_MODE_NONE;
    }
    return err;
}

/* ------------------------------------------------------------------------ */
/* Connect                                                                   */
/* ------------------------------------------------------------------------ */

/* A growable string, for the host, hostaddr and port lists. */
typedef struct {
    char *s;
    size_t len, cap;
    bool failed;
} strbuf_t;

/* Appends n bytes of t, after a comma when the list is not empty. */
static void sb_item(strbuf_t *b, const char *t, size_t n, bool first)
{
    size_t need = b->len + n + 2;
    if (b->failed)
        return;
    if (need > b->cap) {
        size_t cap = need < 64 ? 64 : need * 2;
        char *q = realloc(b->s, cap);
        if (!q) {
            b->failed = true;
            return;
        }
        b->s = q;
        b->cap = cap;
    }
    if (!first)
        b->s[b->len++] = ',';
    memcpy(b->s + b->len, t, n);
    b->len += n;
    b->s[b->len] = '\0';
}

/* The keyword/value list for PQconnectStartParams, and the lists it points
 * to (owned). */
typedef struct {
    const char *keys[5];
    const char *vals[5];
    int n;
    strbuf_t host, addr, port;
} params_t;

static void params_free(params_t *p)
{
    free(p->host.s);
    free(p->addr.s);
    free(p->port.s);
}

/* Whether host is a unix-socket directory or abstract name (no lookup). */
static bool is_socket_path(const char *h)
{
    return h[0] == '/' || h[0] == '@';
}

/* Adds every address of one host name (in numeric form) as an entry of its
 * own, each with the host's name and port, as libpq would try them. */
static int add_resolved(params_t *p, const char *host, size_t len, const char *port,
                        size_t plen)
{
    char name[256];
    if (len >= sizeof name)
        return -EINVAL;
    memcpy(name, host, len);
    name[len] = '\0';
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    struct addrinfo *res;
    int rc = cio_getaddrinfo(name, NULL, &hints, &res);
    if (rc < 0) {
        snprintf(connect_error, sizeof connect_error,
                 "could not translate host name \"%s\" to address: %s", name, cio_strerror(rc));
        return rc == -ENOMEM || rc == -ECANCELED || rc == -ETIMEDOUT ? rc : -ECONNREFUSED;
    }
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        char addr[NI_MAXHOST];
        if (getnameinfo(ai->ai_addr, ai->ai_addrlen, addr, sizeof addr, NULL, 0, NI_NUMERICHOST))
            continue;
        bool first = !p->host.s;
        sb_item(&p->host, name, len, first);
        sb_item(&p->addr, addr, strlen(addr), first);
        sb_item(&p->port, port, plen, first);
    }
    cio_freeaddrinfo(res);
    return 0;
}

/* Rewrites the host list so that libpq makes no (blocking) lookup: each
 * named host becomes one entry per address with hostaddr set; socket paths
 * stay as they are (an empty hostaddr entry). ports is the port list ("" for
 * libpq's default), one port for all hosts or one per host. */
static int resolve_hosts(params_t *p, const char *hosts, const char *ports)
{
    size_t nports = 1;
    for (const char *q = ports; *q; q++)
        nports += *q == ',';
    const char *h = hosts, *pt = ports;
    for (;;) {
        size_t len = strcspn(h, ",");
        size_t plen = strcspn(pt, ",");
        int rc = 0;
        if (len && !is_socket_path(h)) {
            /* A name that does not resolve is skipped, as libpq skips a
             * host it cannot reach: the next one is tried. */
            rc = add_resolved(p, h, len, pt, plen);
            if (rc == -ECONNREFUSED)
                rc = 0;
        } else {
            bool first = !p->host.s;
            sb_item(&p->host, h, len, first);
            sb_item(&p->addr, "", 0, first);
            sb_item(&p->port, pt, plen, first);
        }
        if (rc < 0)
            return rc;
        if (p->host.failed || p->addr.failed || p->port.failed)
            return -ENOMEM;
        if (!h[len])
            break;
        h += len + 1;
        if (nports > 1 && pt[plen])
            pt += plen + 1;
    }
    if (!p->host.s)
        return -ECONNREFUSED;
    return 0;
}

/* Looks a keyword's value up in parsed options ("" when unset). */
static const char *opt_value(const PQconninfoOption *opts, const char *key)
{
    for (const PQconninfoOption *o = opts; o->keyword; o++)
        if (!strcmp(o->keyword, key))
            return o->val ? o->val : "";
    return "";
}

/* Builds the connect parameters: the conninfo as given (libpq expands it,
 * with its defaults and PG* variables), then host, hostaddr and port lists
 * that override it when a host is a name to resolve. */
static int build_params(params_t *p, const char *conninfo, double *connect_timeout)
{
    char *errmsg = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &errmsg);
    if (!opts) {
        if (!errmsg)
            return -ENOMEM;
        copy_trimmed(connect_error, sizeof connect_error, errmsg);
        PQfreemem(errmsg);
        return -EINVAL;
    }
    const char *host = opt_value(opts, "host");
    const char *port = opt_value(opts, "port");
    bool has_addr = *opt_value(opts, "hostaddr") || (!*host && getenv("PGHOSTADDR"));
    if (!*host && getenv("PGHOST"))
        host = getenv("PGHOST");
    if (!*port && getenv("PGPORT"))
        port = getenv("PGPORT");
    /* libpq enforces connect_timeout only in its blocking connect: do it
     * here (its rules: whole seconds, at least 2; 0 or none: no bound). */
    const char *ct = opt_value(opts, "connect_timeout");
    if (!*ct && getenv("PGCONNECT_TIMEOUT"))
        ct = getenv("PGCONNECT_TIMEOUT");
    long secs = strtol(ct, NULL, 10);
    *connect_timeout = secs > 0 ? (double)(secs < 2 ? 2 : secs) : INFINITY;
    int rc = 0;
    bool resolve = *host && !has_addr;
    bool has_port = *port;
    if (resolve)
        rc = resolve_hosts(p, host, port);
    /* host and port may point into opts: not used after this. */
    PQconninfoFree(opts);
    if (rc < 0)
        return rc;
    /* expand_dbname: the first "dbname" value is the whole conninfo; the
     * entries after it override what it says. */
    p->keys[p->n] = "dbname";
    p->vals[p->n++] = conninfo;
    if (resolve) {
        p->keys[p->n] = "host";
        p->vals[p->n++] = p->host.s;
        p->keys[p->n] = "hostaddr";
        p->vals[p->n++] = p->addr.s;
        if (has_port) {
            p->keys[p->n] = "port";
            p->vals[p->n++] = p->port.s;
        }
    }
    p->keys[p->n] = NULL;
    p->vals[p->n] = NULL;
    return 0;
}

/* Drives PQconnectPoll to its end. */
static int poll_connect(cio_pg_t *c)
{
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    for (;;) {
        if (st == PGRES_POLLING_OK)
            return 0;
        if (st == PGRES_POLLING_FAILED)
            return -ECONNREFUSED;
        int fd = PQsocket(c->pq);
        if (fd < 0)
            return -ECONNREFUSED;
        int rc = cio_wait_fd(fd, st == PGRES_POLLING_READING ? CIO_READABLE : CIO_WRITABLE);
        if (rc < 0)
            return rc;
        st = PQconnectPoll(c->pq);
    }
}

static int connect_steps(cio_pg_t *c, const char *conninfo)
{
    params_t p;
    memset(&p, 0, sizeof p);
    double connect_timeout = INFINITY;
    int rc = build_params(&p, conninfo, &connect_timeout);
    cio_scope_t s;
    bool bounded = false;
    if (rc == 0 && !isinf(connect_timeout)) {
        rc = cio_scope_enter(&s, connect_timeout, 0);
        bounded = rc == 0;
    }
    if (rc == 0) {
        c->pq = PQconnectStartParams(p.keys, p.vals, 1);
        if (!c->pq)
            rc = -ENOMEM;
        else if (PQstatus(c->pq) == CONNECTION_BAD)
            rc = -ECONNREFUSED;
        else
            rc = poll_connect(c);
        if (rc == -ECONNREFUSED)
            copy_trimmed(connect_error, sizeof connect_error, PQerrorMessage(c->pq));
    }
    if (bounded) {
        int rs = cio_scope_exit(&s);
        if (rc == 0 && rs < 0)
            rc = rs;
    }
    params_free(&p);
    if (rc == 0 && PQsetnonblocking(c->pq, 1) != 0) {
        copy_trimmed(connect_error, sizeof connect_error, PQerrorMessage(c->pq));
        rc = -ECONNREFUSED;
    }
    return rc;
}

int cio_pg_connect(cio_pg_t **out, const char *conninfo, double timeout)
{
    if (out)
        *out = NULL;
    connect_error[0] = '\0';
    if (!out || !conninfo || isnan(timeout))
        return -EINVAL;
    if (!cio_current_task())
        return -EPERM;
    cio_pg_t *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    c->cancel_timeout = 2.0;
    c->abort_by_ns = INT64_MAX;
    cio_scope_t s;
    int rc = cio_scope_enter(&s, timeout, 0);
    if (rc < 0) {
        free(c);
        return rc;
    }
    rc = connect_steps(c, conninfo);
    int rs = cio_scope_exit(&s);
    if (rc == 0 && rs < 0)
        rc = rs;
    if (rc < 0) {
        if (rc == -ETIMEDOUT && !connect_error[0])
            snprintf(connect_error, sizeof connect_error, "timeout expired while connecting");
        PQfinish(c->pq);
        free(c);
        return rc;
    }
    connect_error[0] = '\0'; /* a host skipped on the way is no failure */
    *out = c;
    return 0;
}

int cio_pg_close(cio_pg_t *c)
{
    if (!c)
        return 0;
    if (c->owner)
        return -EBUSY;
    /* PQfinish sends Terminate with a non-blocking write: it never waits. */
    PQfinish(c->pq);
    PQclear(c->drained);
    clear_error(c);
    free(c);
    return 0;
}

int cio_pg_status(const cio_pg_t *c)
{
    if (!c || c->broken || !c->pq || PQstatus(c->pq) == CONNECTION_BAD)
        return CIO_PG_BROKEN;
    if (c->owner || c->mode != PG_MODE_NONE)
        return CIO_PG_ACTIVE;
    switch (PQtransactionStatus(c->pq)) {
    case PQTRANS_IDLE:
        return CIO_PG_IDLE;
    case PQTRANS_INTRANS:
        return CIO_PG_INTRANS;
    case PQTRANS_INERROR:
        return CIO_PG_INERROR;
    case PQTRANS_ACTIVE:
        return CIO_PG_ACTIVE;
    default:
        return CIO_PG_BROKEN;
    }
}

int cio_pg_set_cancel_timeout(cio_pg_t *c, double seconds)
{
    if (!c || isnan(seconds) || seconds < 0)
        return -EINVAL;
    c->cancel_timeout = seconds;
    return 0;
}

int cio_pg_backend_pid(const cio_pg_t *c)
{
    return c && c->pq && !c->broken ? PQbackendPID(c->pq) : 0;
}

struct pg_conn *cio_pg_pq(cio_pg_t *c)
{
    return c ? c->pq : NULL;
}
