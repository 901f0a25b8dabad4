/*
 * Statements: the simple and the extended query protocol, prepared
 * statements, transactions, and the result accessors. Calls conn.c only.
 *
 * Every call sends with libpq's PQsend* functions (which only fill libpq's
 * output buffer in non-blocking mode), flushes with pg__flush, and collects
 * the statement's results with pg__collect, which waits on the socket and,
 * when the task is cancelled, cleans up with pg__abort.
 */
#include "pg.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>

/* Flushes what was just queued and collects the results. */
static int64_t finish(cio_pg_t *c, int sent, PGresult **out)
{
    if (!sent)
        return pg__send_failed(c);
    int rc = pg__flush(c);
    if (rc < 0) {
        if (rc == -ECONNRESET || !c->pq)
            return rc;
        return pg__settled(c, pg__abort(c, rc), out);
    }
    return pg__collect(c, out);
}

int cio_pg_exec(cio_pg_t *c, const char *sql)
{
    int rc = pg__begin(c, PG_MODE_NONE);
    if (rc < 0)
        return rc;
    if (!sql)
        return pg__end(c, -EINVAL);
    int64_t n = finish(c, PQsendQuery(c->pq, sql), NULL);
    return pg__end(c, n < 0 ? (int)n : 0);
}

int64_t cio_pg_query_params(cio_pg_t *c, cio_pg_result_t **out, const char *sql, int nparams,
                            const unsigned *types, const char *const *values, const int *lengths,
                            const int *formats, int result_format)
{
    if (out)
        *out = NULL;
    int rc = pg__begin(c, PG_MODE_NONE);
    if (rc < 0)
        return rc;
    if (!sql || (result_format != 0 && result_format != 1) ||
        pg__check_params(nparams, values, lengths, formats) < 0)
        return pg__end(c, -EINVAL);
    int sent = PQsendQueryParams(c->pq, sql, nparams, types, values, lengths, formats,
                                 result_format);
    return pg__end64(c, finish(c, sent, out));
}

int64_t cio_pg_query(cio_pg_t *c, cio_pg_result_t **out, const char *sql, int nparams,
                     const char *const *values)
{
    return cio_pg_query_params(c, out, sql, nparams, NULL, values, NULL, NULL, 0);
}

int cio_pg_prepare(cio_pg_t *c, const char *name, const char *sql, int nparams,
                   const unsigned *types)
{
    int rc = pg__begin(c, PG_MODE_NONE);
    if (rc < 0)
        return rc;
    if (!name || !sql || nparams < 0 || nparams > 65535)
        return pg__end(c, -EINVAL);
    int64_t n = finish(c, PQsendPrepare(c->pq, name, sql, nparams, types), NULL);
    return pg__end(c, n < 0 ? (int)n : 0);
}

int64_t cio_pg_query_prepared(cio_pg_t *c, cio_pg_result_t **out, const char *name, int nparams,
                              const char *const *values, const int *lengths, const int *formats,
                              int result_format)
{
    if (out)
        *out = NULL;
    int rc = pg__begin(c, PG_MODE_NONE);
    if (rc < 0)
        return rc;
    if (!name || (result_format != 0 && result_format != 1) ||
        pg__check_params(nparams, values, lengths, formats) < 0)
        return pg__end(c, -EINVAL);
    int sent = PQsendQueryPrepared(c->pq, name, nparams, values, lengths, formats, result_format);
    return pg__end64(c, finish(c, sent, out));
}

int cio_pg_begin(cio_pg_t *c) { return cio_pg_exec(c, "BEGIN"); }

int cio_pg_commit(cio_pg_t *c)
{
    int rc = pg__begin(c, PG_MODE_NONE);
    if (rc < 0)
        return rc;
    PGresult *r = NULL;
    int64_t n = finish(c, PQsendQuery(c->pq, "COMMIT"), &r);
    if (n >= 0 && r && strcmp(PQcmdStatus(r), "ROLLBACK") == 0) {
        /* The server answers the COMMIT of a failed transaction with a
         * rollback and no error; the caller must not believe that the work
         * was committed. */
        pg__set_error(c, "current transaction is aborted, commands ignored until end of "
                         "transaction block");
        memcpy(c->sqlstate, "25P02", sizeof c->sqlstate);
        n = -EREMOTEIO;
    }
    PQclear(r);
    return pg__end(c, n < 0 ? (int)n : 0);
}

int cio_pg_rollback(cio_pg_t *c)
{
    if (!c)
        return -EINVAL;
    if (!cio_current_task())
        return -EPERM;
    /* Cleanup code: shielded from the task's cancellation, bounded by the
     * cancel timeout like the cleanup of a cancelled call. */
    cio_scope_t s;
    int rc = cio_scope_enter(&s, c->cancel_timeout, CIO_SCOPE_SHIELD);
    if (rc < 0)
        return rc;
    /* A ROLLBACK that does not finish in time is not followed by a cleanup
     * of its own: its deadline is the cleanup's too. */
    int64_t saved = c->abort_by_ns;
    c->abort_by_ns = cio_scope_deadline_ns(&s);
    rc = cio_pg_exec(c, "ROLLBACK");
    c->abort_by_ns = saved;
    int rs = cio_scope_exit(&s);
    return rc < 0 ? rc : rs;
}

/* ------------------------------------------------------------------------ */
/* Results                                                                   */
/* ------------------------------------------------------------------------ */

int cio_pg_ntuples(const cio_pg_result_t *r) { return r ? PQntuples(r) : 0; }

int cio_pg_nfields(const cio_pg_result_t *r) { return r ? PQnfields(r) : 0; }

static bool in_range(const cio_pg_result_t *r, int row, int col)
{
    return r && row >= 0 && col >= 0 && row < PQntuples(r) && col < PQnfields(r);
}

const char *cio_pg_value(const cio_pg_result_t *r, int row, int col)
{
    if (!in_range(r, row, col) || PQgetisnull(r, row, col))
        return NULL;
    return PQgetvalue(r, row, col);
}

int cio_pg_length(const cio_pg_result_t *r, int row, int col)
{
    if (!in_range(r, row, col) || PQgetisnull(r, row, col))
        return -1;
    return PQgetlength(r, row, col);
}

const char *cio_pg_fname(const cio_pg_result_t *r, int col)
{
    return r && col >= 0 && col < PQnfields(r) ? PQfname(r, col) : NULL;
}

void cio_pg_result_free(cio_pg_result_t *r) { PQclear(r); }
