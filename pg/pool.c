/*
 * The connection pool (cio-pg.h, "Connection pool"). Calls conn.c
 * (cio_pg_connect, cio_pg_close) and query.c (cio_pg_rollback).
 *
 * Slots. A pool of max_size has max_size slots, counted by a semaphore: a
 * task takes a slot first (cio_sem_acquire, which queues the waiters in
 * FIFO order, honours deadlines and cancellation, and hands a released slot
 * straight to the first waiter, so nobody barges in), and then, holding the
 * slot, takes an idle connection or opens a new one. Each slot holds at most
 * one connection, and an idle connection belongs to no slot, so
 *
 *     idle + (slots holding a connection) <= max_size
 *
 * always holds: a task holding a slot that finds no idle connection may open
 * one without passing max_size. Releasing a connection puts it on the idle
 * list and gives its slot back. Every way out of acquire without a
 * connection (a failed connect, a timeout, a cancellation) gives the slot
 * back too, which wakes the next waiter: nobody is left waiting behind a
 * slot that no task will release.
 *
 * The idle list is LIFO: the connection given back last is taken first,
 * while its server process and its socket buffers are warm. Taking an idle
 * connection checks it without a round trip: poll() on its socket with a
 * zero timeout, when it has been idle for a millisecond or more (the system
 * call costs about as much as the rest of acquire and release together, and
 * a connection given back a moment ago, the common case under load, is as
 * likely to be up as one in use). An idle connection's socket is readable
 * only when the server
 * sent something unasked, typically a FATAL error before it closes the
 * connection (an admin shutdown, pg_terminate_backend); libpq reads it, and
 * then an empty statement (one round trip) makes sure the connection is
 * still up, because the end of the stream may arrive a moment after the
 * error. A connection found lost is closed and the next one tried (or a new
 * one opened). A connection given back inside a transaction is rolled back by
 * the acquire that takes it (replaced when that fails), so a release never
 * waits.
 *
 * Closing. Every task inside acquire is linked in the pool's list of
 * acquirers with the cancel scope it runs in, and cio_pg_pool_close cancels
 * those scopes, so that tasks waiting for a slot, or opening a connection,
 * stop at once and return -ESHUTDOWN.
 *
 * Acquiring an idle connection when no task waits, and releasing it, do not
 * allocate.
 */
#include "pg.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The pool_idle_since of a connection that a task has taken. */
#define POOL_TAKEN INT64_MIN

/* Defaults of cio_pg_pool_opts_t's zero fields. */
#define DEFAULT_MAX_SIZE 10u
#define DEFAULT_CONNECT_TIMEOUT 10.0
#define DEFAULT_CANCEL_TIMEOUT 2.0

/* An idle connection is checked (a poll() system call) when it has been
 * idle this long; one given back a moment ago is taken as it is. */
#define LIVENESS_IDLE_NS 1000000

/* How many reads the liveness check makes on an idle socket that keeps
 * being readable (a FATAL message, then the end of the stream). */
#define LIVENESS_READS 4

/* A task inside cio_pg_pool_acquire (on its stack). */
typedef struct acquirer {
    cio_scope_t scope; /* the acquire runs in it; cio_pg_pool_close cancels it */
    struct acquirer *prev, *next;
} acquirer_t;

struct cio_pg_pool {
    cio_sem_t slots;       /* free slots; its queue is the FIFO of waiters */
    cio_pg_t *idle;        /* idle connections, LIFO through pool_next */
    acquirer_t *acquirers; /* tasks inside acquire */
    unsigned max_size;
    unsigned open;         /* connections open: idle, taken, or being checked */
    unsigned nidle;
    unsigned taken;
    double connect_timeout;
    double cancel_timeout;
    bool closed;
    char conninfo[];       /* the pool's copy */
};

/* ------------------------------------------------------------------------ */
/* Creation                                                                  */
/* ------------------------------------------------------------------------ */

static bool bad_time(double t)
{
    return isnan(t) || t < 0;
}

/* Checks the options and fills in the defaults. Returns 0 or -EINVAL. */
static int check_opts(cio_pg_pool_opts_t *o)
{
    for (size_t i = 0; i < sizeof o->reserved_ / sizeof o->reserved_[0]; i++) {
        if (o->reserved_[i])
            return -EINVAL;
    }
    if (bad_time(o->connect_timeout) || bad_time(o->cancel_timeout) || o->max_size > INT_MAX)
        return -EINVAL;
    if (!o->max_size)
        o->max_size = DEFAULT_MAX_SIZE;
    if (o->connect_timeout == 0)
        o->connect_timeout = DEFAULT_CONNECT_TIMEOUT;
    if (o->cancel_timeout == 0)
        o->cancel_timeout = DEFAULT_CANCEL_TIMEOUT;
    return 0;
}

/* Parses conninfo as libpq will, so that a malformed one is refused now
 * rather than by every acquire. Returns 0, -EINVAL or -ENOMEM. */
static int check_conninfo(const char *conninfo)
{
    char *errmsg = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &errmsg);
    if (!opts) {
        int rc = errmsg ? -EINVAL : -ENOMEM;
        PQfreemem(errmsg);
        return rc;
    }
    PQconninfoFree(opts);
    return 0;
}

int cio_pg_pool_new(cio_pg_pool_t **out, const char *conninfo, const cio_pg_pool_opts_t *opts)
{
    if (out)
        *out = NULL;
    if (!out || !conninfo)
        return -EINVAL;
    cio_pg_pool_opts_t o;
    memset(&o, 0, sizeof o);
    if (opts)
        o = *opts;
    int rc = check_opts(&o);
    if (rc == 0)
        rc = check_conninfo(conninfo);
    if (rc < 0)
        return rc;
    size_t len = strlen(conninfo) + 1;
    cio_pg_pool_t *p = malloc(sizeof *p + len);
    if (!p)
        return -ENOMEM;
    memset(p, 0, sizeof *p);
    cio_sem_init(&p->slots, (int)o.max_size, false);
    p->max_size = o.max_size;
    p->connect_timeout = o.connect_timeout;
    p->cancel_timeout = o.cancel_timeout;
    memcpy(p->conninfo, conninfo, len);
    *out = p;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Connections                                                               */
/* ------------------------------------------------------------------------ */

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void push_idle(cio_pg_pool_t *p, cio_pg_t *c)
{
    c->pool_next = p->idle;
    c->pool_idle_since = now_ns();
    p->idle = c;
    p->nidle++;
}

/* Takes the idle connection given back last; *idle_ns is how long it was
 * idle. */
static cio_pg_t *pop_idle(cio_pg_pool_t *p, int64_t *idle_ns)
{
    cio_pg_t *c = p->idle;
    if (c) {
        p->idle = c->pool_next;
        c->pool_next = NULL;
        *idle_ns = now_ns() - c->pool_idle_since;
        c->pool_idle_since = POOL_TAKEN;
        p->nidle--;
    }
    return c;
}

/* Closes a connection of the pool that no task uses. */
static void discard(cio_pg_pool_t *p, cio_pg_t *c)
{
    c->pool = NULL;
    cio_pg_close(c);
    p->open--;
}

/* Gives a slot back: to the first waiter, else to the free count. It cannot
 * overflow: the semaphore never holds more than max_size <= INT_MAX. */
static void give_slot(cio_pg_pool_t *p)
{
    cio_sem_release(&p->slots);
}

/* What the liveness check of an idle connection found. */
enum { LIVE_LOST, LIVE_QUIET, LIVE_SPOKE };

/*
 * The liveness check of an idle connection, without a round trip: its
 * socket is readable only if the server sent something unasked: a FATAL
 * error before closing (an admin shutdown, pg_terminate_backend), a
 * notification, a parameter change. libpq reads and parses it (PQisBusy
 * parses what arrived while idle: an error goes to the notice processor, a
 * notification to PQnotifies). Returns LIVE_LOST when that found the end of
 * the stream, LIVE_QUIET when nothing came, LIVE_SPOKE when the server
 * spoke but the connection still looks up (its close may still be on the
 * way: the caller makes sure with a round trip).
 */
static int liveness(cio_pg_t *c)
{
    if (c->broken || !c->pq || PQstatus(c->pq) != CONNECTION_OK)
        return LIVE_LOST;
    int found = LIVE_QUIET;
    for (int i = 0; i < LIVENESS_READS; i++) {
        struct pollfd pfd = {.fd = PQsocket(c->pq), .events = POLLIN};
        if (pfd.fd < 0)
            return LIVE_LOST;
        if (poll(&pfd, 1, 0) <= 0)
            return found;
        if (!PQconsumeInput(c->pq) || PQstatus(c->pq) == CONNECTION_BAD)
            return LIVE_LOST;
        (void)PQisBusy(c->pq);
        found = LIVE_SPOKE;
    }
    return found;
}

/*
 * Makes an idle connection ready for a new user: checks it and rolls back
 * the transaction it was given back in; when the server sent something
 * while the connection was idle, an empty statement makes sure it is still
 * there. Await point (a round trip only in those two cases; the rollback is
 * shielded). Returns whether c is ready.
 */
static bool make_ready(cio_pg_t *c, int64_t idle_ns)
{
    int live = idle_ns >= LIVENESS_IDLE_NS ? liveness(c)
               : c->broken || !c->pq || PQstatus(c->pq) != CONNECTION_OK ? LIVE_LOST
                                                                          : LIVE_QUIET;
    if (live == LIVE_LOST)
        return false;
    switch (PQtransactionStatus(c->pq)) {
    case PQTRANS_IDLE:
        return live == LIVE_QUIET || cio_pg_exec(c, "") == 0;
    case PQTRANS_INTRANS:
    case PQTRANS_INERROR:
        return cio_pg_rollback(c) == 0 && PQtransactionStatus(c->pq) == PQTRANS_IDLE;
    default:
        return false;
    }
}

/* Opens a new connection for the pool. Await point. Returns 0 or
 * cio_pg_connect's error. */
static int open_one(cio_pg_pool_t *p, cio_pg_t **out)
{
    cio_pg_t *c;
    int rc = cio_pg_connect(&c, p->conninfo, p->connect_timeout);
    if (rc < 0)
        return rc;
    c->cancel_timeout = p->cancel_timeout;
    c->pool = p;
    c->pool_next = NULL;
    c->pool_idle_since = POOL_TAKEN;
    p->open++;
    *out = c;
    return 0;
}

/*
 * With a slot held: takes the first idle connection that is ready, closing
 * those that are not, or opens a new one. Returns 0 and the connection in
 * *out, or an error after giving the slot back.
 */
static int take(cio_pg_pool_t *p, cio_pg_t **out)
{
    cio_pg_t *c;
    int64_t idle_ns;
    while (!p->closed && (c = pop_idle(p, &idle_ns))) {
        if (make_ready(c, idle_ns)) {
            *out = c;
            return 0;
        }
        discard(p, c);
    }
    int rc = p->closed ? -ESHUTDOWN : open_one(p, out);
    if (rc < 0)
        give_slot(p);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Acquire and release                                                       */
/* ------------------------------------------------------------------------ */

static void link_acquirer(cio_pg_pool_t *p, acquirer_t *a)
{
    a->prev = NULL;
    a->next = p->acquirers;
    if (a->next)
        a->next->prev = a;
    p->acquirers = a;
}

static void unlink_acquirer(cio_pg_pool_t *p, acquirer_t *a)
{
    if (a->prev)
        a->prev->next = a->next;
    else
        p->acquirers = a->next;
    if (a->next)
        a->next->prev = a->prev;
}

int cio_pg_pool_acquire(cio_pg_pool_t *p, cio_pg_t **out, double timeout)
{
    if (out)
        *out = NULL;
    if (!p || !out || isnan(timeout))
        return -EINVAL;
    if (!cio_current_task())
        return -EPERM;
    if (p->closed)
        return -ESHUTDOWN;
    acquirer_t a;
    int rc = cio_scope_enter(&a.scope, timeout, 0);
    if (rc < 0)
        return rc;
    link_acquirer(p, &a);
    cio_pg_t *c = NULL;
    rc = cio_sem_acquire(&p->slots);
    if (rc == 0)
        rc = take(p, &c);
    (void)cio_scope_exit(&a.scope); /* its expiry already showed in rc */
    unlink_acquirer(p, &a);
    if (p->closed) {
        /* Closed while this task was inside: whatever it got goes back. */
        if (rc == 0) {
            discard(p, c);
            give_slot(p);
        }
        return -ESHUTDOWN;
    }
    if (rc < 0)
        return rc;
    p->taken++;
    *out = c;
    return 0;
}

/* Whether a connection given back can serve another task: up, no COPY or
 * pipeline left open, and idle or inside a transaction (rolled back when
 * taken next). */
static bool reusable(cio_pg_t *c)
{
    if (c->broken || !c->pq || c->mode != PG_MODE_NONE || PQstatus(c->pq) != CONNECTION_OK)
        return false;
    PGTransactionStatusType ts = PQtransactionStatus(c->pq);
    return ts == PQTRANS_IDLE || ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR;
}

int cio_pg_pool_release(cio_pg_pool_t *p, cio_pg_t *c)
{
    if (!p || !c || c->pool != p || c->pool_idle_since != POOL_TAKEN)
        return -EINVAL;
    if (c->owner)
        return -EBUSY;
    p->taken--;
    if (p->closed || !reusable(c))
        discard(p, c);
    else
        push_idle(p, c);
    give_slot(p);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Closing                                                                   */
/* ------------------------------------------------------------------------ */

int cio_pg_pool_close(cio_pg_pool_t *p)
{
    if (!p || p->closed)
        return 0;
    p->closed = true;
    cio_pg_t *c;
    int64_t idle_ns;
    while ((c = pop_idle(p, &idle_ns)))
        discard(p, c);
    for (acquirer_t *a = p->acquirers; a; a = a->next)
        cio_scope_cancel(&a->scope);
    return 0;
}

int cio_pg_pool_free(cio_pg_pool_t *p)
{
    if (!p)
        return 0;
    if (p->taken || p->acquirers)
        return -EBUSY;
    cio_pg_pool_close(p);
    free(p);
    return 0;
}

unsigned cio_pg_pool_size(const cio_pg_pool_t *p)
{
    return p ? p->open : 0;
}

unsigned cio_pg_pool_idle(const cio_pg_pool_t *p)
{
    return p ? p->nidle : 0;
}

const char *cio_pg_pool_conninfo(const cio_pg_pool_t *p)
{
    return p ? p->conninfo : NULL;
}
