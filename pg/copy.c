/*
 * COPY IN and COPY OUT: bulk data to and from the server as a stream of
 * rows. Calls conn.c only.
 *
 * A COPY is a mode of the connection rather than one operation: between
 * cio_pg_copy_in and cio_pg_copy_end (or cio_pg_copy_out and the
 * cio_pg_copy_get that returns 0) the connection belongs to the COPY, so
 * the calls of other kinds get -EBUSY from pg__begin, and each COPY call is
 * an operation of its own. The statement is sent with the extended protocol
 * (PQsendQueryParams without parameters), so that sql is exactly one
 * statement.
 */
#include "pg.h"

#include <errno.h>

/* The largest piece given to PQputCopyData at once (its length is an int;
 * bigger puts are split, which the COPY stream does not notice). */
#define PUT_CHUNK (1 << 20)

/* The first result of the statement sent is not the COPY asked for (r):
 * report why and read the statement's results to their end. A COPY of the
 * other direction is refused by pg__collect (libpq hands the same COPY
 * state again on the next PQgetResult). */
static int refuse(cio_pg_t *c, PGresult *r, const char *what)
{
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_FATAL_ERROR || st == PGRES_NONFATAL_ERROR || st == PGRES_BAD_RESPONSE) {
        int err = pg__fail(c, r);
        if (err == -ECONNRESET)
            return err;
        int64_t rest = pg__collect(c, NULL);
        return rest < 0 ? (int)rest : err;
    }
    PQclear(r);
    int64_t rest = pg__collect(c, NULL);
    if (rest < 0 && rest != -EREMOTEIO && rest != -EPROTO)
        return (int)rest;
    pg__set_error(c, what);
    return -EPROTO;
}

/* Sends sql and waits for its first result, which must be `want`. */
static int copy_start(cio_pg_t *c, const char *sql, ExecStatusType want, int mode,
                      const char *what)
{
    int rc = pg__begin(c, PG_MODE_NONE);
    if (rc < 0)
        return rc;
    if (!sql)
        return pg__end(c, -EINVAL);
    if (!PQsendQueryParams(c->pq, sql, 0, NULL, NULL, NULL, NULL, 0))
        return pg__end(c, pg__send_failed(c));
    rc = pg__flush(c);
    if (rc < 0)
        return pg__end(c, pg__wait_failed(c, rc));
    PGresult *r;
    rc = pg__next(c, &r);
    if (rc < 0)
        return pg__end(c, pg__wait_failed(c, rc));
    if (!r) {
        /* No result at all: libpq lost track of the statement. */
        pg__set_error(c, what);
        return pg__end(c, -EPROTO);
    }
    if (PQresultStatus(r) != want)
        return pg__end(c, refuse(c, r, what));
    PQclear(r);
    c->mode = mode;
    return pg__end(c, 0);
}

/* ------------------------------------------------------------------------ */
/* COPY IN                                                                   */
/* ------------------------------------------------------------------------ */

int cio_pg_copy_in(cio_pg_t *c, const char *sql)
{
    return copy_start(c, sql, PGRES_COPY_IN, PG_MODE_COPY_IN,
                      "not a COPY FROM STDIN statement");
}

/* Queues one piece (at most PUT_CHUNK bytes) and sends it. */
static int put_piece(cio_pg_t *c, const char *p, int n)
{
    int q = PQputCopyData(c->pq, p, n);
    if (q == 0) {
        /* libpq could not grow its buffer: send what it holds, then try
         * once more before calling it out of memory. */
        int rc = pg__flush(c);
        if (rc < 0)
            return rc;
        q = PQputCopyData(c->pq, p, n);
    }
    if (q < 0 && PQstatus(c->pq) == CONNECTION_BAD)
        return pg__lost(c);
    if (q <= 0) {
        pg__set_error(c, PQerrorMessage(c->pq));
        return -ENOMEM;
    }
    /* Sending every piece at once bounds libpq's buffer: when the socket is
     * full the task waits here (the backpressure), reading meanwhile what
     * the server sends (notices). */
    return pg__flush(c);
}

int cio_pg_copy_put(cio_pg_t *c, const void *data, size_t len)
{
    int rc = pg__begin(c, PG_MODE_COPY_IN);
    if (rc < 0)
        return rc;
    if (!data && len)
        return pg__end(c, -EINVAL);
    /* A cancelled task sends nothing, even when the socket has room and
     * nothing would wait: the COPY is aborted as on any cancellation, so
     * a producer past its deadline cannot go on feeding it. */
    rc = cio_check_cancel();
    if (rc < 0)
        return pg__end(c, pg__wait_failed(c, rc));
    const char *p = data;
    while (len > 0) {
        int n = len > PUT_CHUNK ? PUT_CHUNK : (int)len;
        rc = put_piece(c, p, n);
        if (rc < 0) {
            /* A piece may be half sent: the COPY cannot go on. Abort it
             * (nothing of it is kept) and leave the connection idle. */
            return pg__end(c, pg__wait_failed(c, rc));
        }
        p += n;
        len -= (size_t)n;
    }
    return pg__end(c, 0);
}

/* Ends the COPY IN (with an error when errmsg is not NULL) and collects the
 * statement's outcome. */
static int64_t end_steps(cio_pg_t *c, const char *errmsg)
{
    int q = PQputCopyEnd(c->pq, errmsg);
    if (q == 0) {
        int rc = pg__flush(c);
        if (rc < 0)
            return pg__wait_failed(c, rc);
        q = PQputCopyEnd(c->pq, errmsg);
    }
    if (q < 0 && PQstatus(c->pq) == CONNECTION_BAD)
        return pg__lost(c);
    if (q <= 0) {
        pg__set_error(c, PQerrorMessage(c->pq));
        return pg__abort(c, -ENOMEM);
    }
    /* libpq has left COPY IN: from here on the connection runs a plain
     * statement, and its cleanup (if this call is cancelled) is the one of
     * a statement. */
    c->mode = PG_MODE_NONE;
    int rc = pg__flush(c);
    if (rc < 0)
        return pg__wait_failed(c, rc);
    return pg__collect(c, NULL);
}

int64_t cio_pg_copy_end(cio_pg_t *c, const char *errmsg)
{
    int rc = pg__begin(c, PG_MODE_COPY_IN);
    if (rc < 0)
        return rc;
    if (!errmsg) {
        /* A cancelled task does not commit the COPY (it would send the end
         * of the data, as a COMMIT): the COPY is aborted, as cio_pg_commit
         * in a cancelled task sends nothing. */
        rc = cio_check_cancel();
        if (rc < 0)
            return pg__end(c, pg__wait_failed(c, rc));
        return pg__end64(c, end_steps(c, NULL));
    }
    /* Aborting a COPY is cleanup code (the usual reaction to a failure or
     * a cancellation of the producer): it runs even in a cancelled task,
     * bounded by the cancel timeout. */
    cio_scope_t s;
    rc = cio_scope_enter(&s, c->cancel_timeout, CIO_SCOPE_SHIELD);
    if (rc < 0)
        return pg__end(c, pg__abort(c, rc));
    int64_t n = end_steps(c, errmsg);
    cio_scope_exit(&s);
    return pg__end64(c, n);
}

/* ------------------------------------------------------------------------ */
/* COPY OUT                                                                  */
/* ------------------------------------------------------------------------ */

int cio_pg_copy_out(cio_pg_t *c, const char *sql)
{
    return copy_start(c, sql, PGRES_COPY_OUT, PG_MODE_COPY_OUT,
                      "not a COPY TO STDOUT statement");
}

/* The next row, waiting for it; 0 at the end of the data. */
static ssize_t get_steps(cio_pg_t *c, char **buf)
{
    for (;;) {
        char *p;
        int n = PQgetCopyData(c->pq, &p, 1);
        if (n > 0) {
            *buf = p;
            return n;
        }
        if (n == 0) {
            int ev = pg__wait(c, CIO_READABLE);
            if (ev < 0)
                return pg__wait_failed(c, ev);
            if (!PQconsumeInput(c->pq))
                return pg__lost(c);
            continue;
        }
        if (n == -2) {
            if (PQstatus(c->pq) == CONNECTION_BAD)
                return pg__lost(c);
            /* libpq could not allocate the row; it keeps the row, so the
             * next call gets it. */
            pg__set_error(c, PQerrorMessage(c->pq));
            return -ENOMEM;
        }
        /* The end of the data: the statement's outcome follows. */
        c->mode = PG_MODE_NONE;
        int64_t rc = pg__collect(c, NULL);
        return rc < 0 ? (ssize_t)rc : 0;
    }
}

ssize_t cio_pg_copy_get(cio_pg_t *c, char **buf)
{
    if (buf)
        *buf = NULL;
    int rc = pg__begin(c, PG_MODE_COPY_OUT);
    if (rc < 0)
        return rc;
    if (!buf)
        return pg__end(c, -EINVAL);
    return (ssize_t)pg__end64(c, get_steps(c, buf));
}

void cio_pg_freemem(void *p)
{
    if (p)
        PQfreemem(p);
}
