/*
 * Pipeline mode: many statements sent without waiting for their results,
 * read back in order. Calls conn.c only.
 *
 * libpq's pipeline mode queues each statement (Parse/Bind/Describe/Execute)
 * and, at a sync, a Sync message, which ends a segment: the server runs a
 * segment as one implicit transaction and, after a failed statement, skips
 * the rest of it (libpq reports each skipped one as PGRES_PIPELINE_ABORTED).
 * PQgetResult gives each statement's result followed by a NULL, and each
 * sync as a PGRES_PIPELINE_SYNC result with no NULL after it.
 *
 * The connection keeps three counters (struct cio_pg) that pg__abort reads
 * to clean up a cancelled pipeline: pipe_pending, the statements sent whose
 * result was not read yet; pipe_syncs, the syncs sent and not yet read back;
 * pipe_unflushed, whether a statement was sent since the last sync (an open
 * segment, which only a sync commits and which a flush request alone does
 * not end).
 *
 * The server sends a segment's results when it reaches its Sync, or when
 * its output buffer fills, or on a flush request. cio_pg_pipeline_result
 * therefore sends a flush request before it waits for a result of the open
 * segment (no sync pending); when results are already there it sends
 * nothing.
 */
#include "pg.h"

#include <errno.h>
#include <string.h>

/* Every FLUSH_EVERY statements queued, cio_pg_pipeline_send sends what
 * libpq holds and waits while the socket is full: the bound of libpq's
 * output buffer, and the server starts working early. */
#define FLUSH_EVERY 64

/* Sends what libpq holds, waiting while the socket is full. */
static int flush(cio_pg_t *c)
{
    int rc = pg__flush(c);
    return rc < 0 ? pg__wait_failed(c, rc) : 0;
}

int cio_pg_pipeline_enter(cio_pg_t *c)
{
    if (!c)
        return -EINVAL;
    if (c->broken || !c->pq)
        return -ENOTCONN;
    if (c->owner || c->mode != PG_MODE_NONE)
        return -EBUSY;
    if (!PQenterPipelineMode(c->pq))
        return -EBUSY;
    c->mode = PG_MODE_PIPELINE;
    c->pipe_pending = 0;
    c->pipe_syncs = 0;
    c->pipe_unflushed = false;
    return 0;
}

/* A cancelled task queues and sends nothing, even where nothing would wait
 * (the cancellation rule): the pipeline is given up as on a cancelled
 * cio_pg_pipeline_result. Returns 0 or the cancellation. */
static int not_cancelled(cio_pg_t *c)
{
    int rc = cio_check_cancel();
    return rc < 0 ? pg__wait_failed(c, rc) : 0;
}

/* Counts a statement libpq took (sent: its PQsend* result), and every
 * FLUSH_EVERY statements sends what is queued. */
static int queued(cio_pg_t *c, int sent)
{
    if (!sent)
        return pg__send_failed(c);
    c->pipe_pending++;
    c->pipe_unflushed = true;
    return c->pipe_pending % FLUSH_EVERY == 0 ? flush(c) : 0;
}

int cio_pg_pipeline_send(cio_pg_t *c, const char *sql, int nparams, const char *const *values)
{
    int rc = pg__begin(c, PG_MODE_PIPELINE);
    if (rc < 0)
        return rc;
    if (!sql || pg__check_params(nparams, values, NULL, NULL) < 0)
        return pg__end(c, -EINVAL);
    if ((rc = not_cancelled(c)) < 0)
        return pg__end(c, rc);
    return pg__end(c, queued(c, PQsendQueryParams(c->pq, sql, nparams, NULL, values, NULL,
                                                  NULL, 0)));
}

int cio_pg_pipeline_send_prepared(cio_pg_t *c, const char *name, int nparams,
                                  const char *const *values)
{
    int rc = pg__begin(c, PG_MODE_PIPELINE);
    if (rc < 0)
        return rc;
    if (!name || pg__check_params(nparams, values, NULL, NULL) < 0)
        return pg__end(c, -EINVAL);
    if ((rc = not_cancelled(c)) < 0)
        return pg__end(c, rc);
    return pg__end(c, queued(c, PQsendQueryPrepared(c->pq, name, nparams, values, NULL, NULL,
                                                    0)));
}

int cio_pg_pipeline_sync(cio_pg_t *c)
{
    int rc = pg__begin(c, PG_MODE_PIPELINE);
    if (rc < 0)
        return rc;
    if ((rc = not_cancelled(c)) < 0)
        return pg__end(c, rc);
    if (!PQpipelineSync(c->pq))
        return pg__end(c, pg__send_failed(c));
    c->pipe_syncs++;
    c->pipe_unflushed = false;
    return pg__end(c, flush(c));
}

/*
 * The next result of the pipeline (pg__next), making sure it will come:
 * before waiting, what libpq holds is sent, with a flush request when the
 * result belongs to the open segment (no sync pending ahead of it).
 */
static int pipe_next(cio_pg_t *c, PGresult **r)
{
    *r = NULL;
    if (PQisBusy(c->pq)) {
        if (!PQconsumeInput(c->pq))
            return pg__lost(c);
        if (PQisBusy(c->pq)) {
            if (c->pipe_syncs == 0 && !PQsendFlushRequest(c->pq))
                return pg__send_failed(c);
            int rc = pg__flush(c);
            if (rc < 0)
                return rc;
        }
    }
    return pg__next(c, r);
}

/* Reads the syncs due after the last statement: the server sends them
 * right after that statement's result, so this rarely waits. Returns 0 or
 * the failure of a wait (the syncs not read stay counted). */
static int read_trailing_syncs(cio_pg_t *c)
{
    while (c->pipe_pending == 0 && c->pipe_syncs > 0) {
        PGresult *r;
        int rc = pipe_next(c, &r);
        if (rc < 0)
            return rc;
        if (!r)
            return 0;
        if (PQresultStatus(r) == PGRES_PIPELINE_SYNC)
            c->pipe_syncs--;
        PQclear(r);
    }
    return 0;
}

/* Whether a failed result is the server's FATAL (or PANIC) error, after
 * which the server closes the connection (an admin shutdown,
 * pg_terminate_backend). Outside a pipeline libpq reads on to the end of
 * the stream before it ends the statement, so the loss shows; in a
 * pipeline a statement ends with its error, and the end of the stream may
 * not have been read yet. */
static bool fatal(const PGresult *r)
{
    const char *sev = PQresultErrorField(r, PG_DIAG_SEVERITY_NONLOCALIZED);
    return sev && (strcmp(sev, "FATAL") == 0 || strcmp(sev, "PANIC") == 0);
}

/* Turns one statement's result into the call's return value. */
static int64_t outcome(cio_pg_t *c, PGresult *r, PGresult **out)
{
    switch (PQresultStatus(r)) {
    case PGRES_COMMAND_OK:
    case PGRES_TUPLES_OK:
    case PGRES_EMPTY_QUERY: {
        int64_t rows = pg__rows(r);
        if (out)
            *out = r;
        else
            PQclear(r);
        return rows;
    }
    case PGRES_PIPELINE_ABORTED:
        PQclear(r);
        pg__set_error(c, "not run: an earlier statement of its pipeline segment failed");
        return -ECONNABORTED;
    default: {
        bool lost = fatal(r);
        int rc = pg__fail(c, r);
        if (lost && rc == -EREMOTEIO) {
            /* The server's error is kept (its SQLSTATE says why); the
             * connection is lost all the same. */
            c->broken = true;
            c->mode = PG_MODE_NONE;
            rc = -ECONNRESET;
        }
        return rc;
    }
    }
}

/* Whether a result opens a COPY, which has no place in a pipeline. */
static bool is_copy(const PGresult *r)
{
    ExecStatusType st = PQresultStatus(r);
    return st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH;
}

static int64_t result_steps(cio_pg_t *c, PGresult **out)
{
    PGresult *r = NULL;
    int nulls = 0;
    while (!r) {
        if (c->pipe_pending == 0) {
            /* Nothing to return; read the syncs still due so that the
             * pipeline can be left. */
            int rc = read_trailing_syncs(c);
            return rc < 0 ? pg__wait_failed(c, rc) : -ENOENT;
        }
        int rc = pipe_next(c, &r);
        if (rc < 0)
            return pg__wait_failed(c, rc);
        if (!r && ++nulls > 1) {
            /* libpq has nothing queued although a result is due: our
             * count and libpq's disagree. Give the pipeline up. */
            pg__abort(c, -EPROTO);
            pg__set_error(c, "pipeline results out of step");
            return -EPROTO;
        }
        if (r && PQresultStatus(r) == PGRES_PIPELINE_SYNC) {
            PQclear(r);
            c->pipe_syncs--;
            r = NULL;
        }
    }
    if (is_copy(r)) {
        /* Give the pipeline up as a cancelled one: pg__abort ends the
         * COPY and drains the rest. */
        PQclear(r);
        pg__abort(c, -EPROTO);
        pg__set_error(c, "COPY is not supported in pipeline mode");
        return -EPROTO;
    }
    /* The statement's results end with a NULL, there already (a statement
     * has a single result in the extended protocol; anything more is
     * dropped). */
    c->pipe_pending--;
    PGresult *more;
    for (;;) {
        int rc = pg__next(c, &more);
        if (rc < 0) {
            PQclear(r);
            return pg__wait_failed(c, rc);
        }
        if (!more)
            break;
        PQclear(more);
    }
    int64_t n = outcome(c, r, out);
    /* A failed wait here (a cancellation) is left for the next await
     * point to report: this call has its result to return. */
    if (c->mode == PG_MODE_PIPELINE)
        (void)read_trailing_syncs(c);
    return n;
}

int64_t cio_pg_pipeline_result(cio_pg_t *c, cio_pg_result_t **out)
{
    if (out)
        *out = NULL;
    int rc = pg__begin(c, PG_MODE_PIPELINE);
    if (rc < 0)
        return rc;
    return pg__end64(c, result_steps(c, out));
}

int cio_pg_pipeline_exit(cio_pg_t *c)
{
    if (!c)
        return -EINVAL;
    if (c->broken || !c->pq)
        return -ENOTCONN;
    if (c->mode != PG_MODE_PIPELINE)
        return 0;
    if (c->owner)
        return -EBUSY;
    /* Syncs whose results already arrived are read without waiting. */
    if (c->pipe_pending == 0 && c->pipe_syncs > 0) {
        if (!PQconsumeInput(c->pq)) {
            pg__lost(c);
            return -ENOTCONN;
        }
        while (c->pipe_syncs > 0 && !PQisBusy(c->pq)) {
            PGresult *r = PQgetResult(c->pq);
            if (!r)
                break;
            if (PQresultStatus(r) == PGRES_PIPELINE_SYNC)
                c->pipe_syncs--;
            PQclear(r);
        }
    }
    /* Results still to read, or a segment not ended by a sync (which the
     * server would otherwise keep open, uncommitted). */
    if (c->pipe_pending > 0 || c->pipe_syncs > 0 || c->pipe_unflushed)
        return -EBUSY;
    if (!PQexitPipelineMode(c->pq))
        return -EBUSY;
    c->mode = PG_MODE_NONE;
    return 0;
}
