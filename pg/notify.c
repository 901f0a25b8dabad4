/*
 * LISTEN / NOTIFY: notifications as an await. Calls conn.c and query.c.
 *
 * The server sends a notification to every connection listening on its
 * channel when the notifying transaction commits. libpq collects those that
 * arrive while the connection runs statements (PQnotifies hands them out
 * later, in order), so none is lost while the listener is busy; an idle
 * listener waits for its socket to become readable, reads what came
 * (PQconsumeInput) and takes the notifications from libpq. A connection
 * that is only waiting for notifications runs no statement, so a cancelled
 * or expired wait leaves it as it was: nothing needs cleaning up.
 */
#include "pg.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* PostgreSQL's identifiers (channel names) hold at most NAMEDATALEN - 1
 * bytes; LISTEN would silently truncate a longer one. */
#define CHANNEL_MAX 63

/* A notification handed to the caller: libpq's own (which holds the
 * strings) behind the public view. */
typedef struct notify_box {
    cio_pg_notify_t pub; /* first: cio_pg_notify_t * is the box */
    PGnotify *raw;
} notify_box_t;

static bool channel_ok(const char *channel)
{
    size_t len = strlen(channel);
    return len > 0 && len <= CHANNEL_MAX;
}

/* Whether no multibyte character of s (in libpq's client encoding) is cut
 * short: the one input PQescapeIdentifier refuses, so that its other
 * failure is a lack of memory. (The server checks the rest.) */
static bool mb_complete(const PGconn *pq, const char *s)
{
    int enc = PQclientEncoding(pq);
    while (*s) {
        int n = PQmblen(s, enc);
        for (int i = 1; i < n; i++) {
            if (!s[i])
                return false;
        }
        s += n > 0 ? n : 1;
    }
    return true;
}

/* Runs `verb "channel"` (the channel quoted as an identifier). */
static int on_channel(cio_pg_t *c, const char *verb, const char *channel)
{
    if (!c || !channel || !channel_ok(channel))
        return -EINVAL;
    if (c->broken || !c->pq)
        return -ENOTCONN;
    if (!mb_complete(c->pq, channel))
        return -EINVAL;
    char *id = PQescapeIdentifier(c->pq, channel, strlen(channel));
    if (!id)
        return -ENOMEM;
    size_t n = strlen(verb) + 1 + strlen(id) + 1;
    char *sql = malloc(n);
    if (sql)
        snprintf(sql, n, "%s %s", verb, id);
    PQfreemem(id);
    if (!sql)
        return -ENOMEM;
    int rc = cio_pg_exec(c, sql);
    free(sql);
    return rc;
}

int cio_pg_listen(cio_pg_t *c, const char *channel)
{
    return on_channel(c, "LISTEN", channel);
}

int cio_pg_unlisten(cio_pg_t *c, const char *channel)
{
    if (c && !channel)
        return cio_pg_exec(c, "UNLISTEN *");
    return on_channel(c, "UNLISTEN", channel);
}

int cio_pg_notify(cio_pg_t *c, const char *channel, const char *payload)
{
    if (!c || !channel || !channel_ok(channel))
        return -EINVAL;
    const char *values[2] = {channel, payload ? payload : ""};
    int64_t n = cio_pg_query(c, NULL, "SELECT pg_notify($1, $2)", 2, values);
    return n < 0 ? (int)n : 0;
}

/* Waits (within timeout seconds) until libpq holds a notification. */
static int wait_steps(cio_pg_t *c, double timeout, PGnotify **out)
{
    /* Those kept while c ran statements, or already in libpq's buffer. */
    if ((*out = PQnotifies(c->pq)))
        return 0;
    /* Those the kernel holds: a read that never waits. */
    if (!PQconsumeInput(c->pq))
        return pg__lost(c);
    if ((*out = PQnotifies(c->pq)))
        return 0;
    if (timeout == 0)
        return -EAGAIN;
    cio_scope_t s;
    int rc = cio_scope_enter(&s, timeout, 0);
    if (rc < 0)
        return rc;
    for (;;) {
        rc = pg__wait(c, CIO_READABLE);
        if (rc < 0)
            break;
        /* Also how a server that goes away shows: the read ends in EOF
         * (after its FATAL message, which libpq gives to the notice
         * processor since no statement runs). */
        if (!PQconsumeInput(c->pq)) {
            rc = pg__lost(c);
            break;
        }
        if ((*out = PQnotifies(c->pq))) {
            rc = 0;
            break;
        }
    }
    int rs = cio_scope_exit(&s);
    if (rc < 0 && rs == -ETIMEDOUT)
        rc = -ETIMEDOUT;
    return rc;
}

int cio_pg_wait_notify(cio_pg_t *c, cio_pg_notify_t **out, double timeout)
{
    if (out)
        *out = NULL;
    int rc = pg__begin(c, PG_MODE_NONE);
    if (rc < 0)
        return rc;
    if (!out || isnan(timeout) || timeout < 0)
        return pg__end(c, -EINVAL);
    /* Allocated before a notification is taken from libpq, so that running
     * out of memory loses none. */
    notify_box_t *box = malloc(sizeof *box);
    if (!box)
        return pg__end(c, -ENOMEM);
    PGnotify *n = NULL;
    rc = wait_steps(c, timeout, &n);
    if (rc < 0) {
        free(box);
        return pg__end(c, rc);
    }
    box->raw = n;
    box->pub.channel = n->relname;
    box->pub.payload = n->extra ? n->extra : "";
    box->pub.pid = n->be_pid;
    *out = &box->pub;
    return pg__end(c, 0);
}

void cio_pg_notify_free(cio_pg_notify_t *n)
{
    if (!n)
        return;
    notify_box_t *box = (notify_box_t *)n;
    PQfreemem(box->raw);
    free(box);
}
