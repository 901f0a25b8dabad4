/*
 * The task queue, producer side: the schema (created and upgraded under an
 * advisory lock), enqueue (one job, or many in one statement), and a job's
 * outcome (read, or awaited through LISTEN/NOTIFY). The workers are in
 * worker.c. Uses conn.c, query.c, notify.c and pool.c through the public
 * API of cio-pg.h.
 *
 * The table, cio_jobs, one row per job:
 *
 *   state        0 queued, 1 running, 2 done, 3 dead (CIO_PGQ_*)
 *   visible_at   queued: when it may run; running: when its lease expires
 *   attempts     claims so far; the current claim's fencing token
 *
 * A job is claimable when its state is queued or running and visible_at has
 * passed: a running job whose lease expired is claimed again, which is how
 * a dead worker's job comes back. A partial index on (queue, priority desc,
 * visible_at, id) over the claimable states serves the claims and the
 * workers' next-due-time query; finished jobs leave it.
 *
 * Notifications: channel 'cio_jobs' with the queue name (a new job; in the
 * enqueue's own statement, so it is delivered when that transaction
 * commits), channel 'cio_jobs_done' with the job id (done or dead).
 */
#include "pg.h"

#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The advisory lock that serialises schema installs: "cio-queu". */
#define INSTALL_LOCK "7163384463101814133"

/* ------------------------------------------------------------------------ */
/* Schema                                                                    */
/* ------------------------------------------------------------------------ */

/* The schema's versions, in order: steps[i] upgrades version i to i + 1. A
 * later cio-pg appends steps; it never edits one. */
static const char *const schema_steps[] = {
    /* Version 1. */
    "CREATE TABLE cio_jobs ("
    " id bigserial PRIMARY KEY,"
    " queue text NOT NULL,"
    " payload bytea NOT NULL,"
    " priority integer NOT NULL DEFAULT 0,"
    " state smallint NOT NULL DEFAULT 0,"
    " attempts integer NOT NULL DEFAULT 0,"
    " max_attempts integer NOT NULL DEFAULT 5,"
    " visible_at timestamptz NOT NULL DEFAULT now(),"
    " backoff_base double precision NOT NULL DEFAULT 1,"
    " idem_key text,"
    " result bytea,"
    " error text,"
    " worker text,"
    " created_at timestamptz NOT NULL DEFAULT now(),"
    " finished_at timestamptz,"
    " UNIQUE (queue, idem_key));"
    "CREATE INDEX cio_jobs_claim ON cio_jobs (queue, priority DESC, visible_at, id)"
    " WHERE state IN (0, 1);",
};

#define SCHEMA_VERSION ((int)(sizeof schema_steps / sizeof schema_steps[0]))

/* The installed version (0 for none), inside the install transaction. */
static int schema_version(cio_pg_t *c, int *version)
{
    cio_pg_result_t *r;
    int64_t n = cio_pg_query(c, &r, "SELECT to_regclass('cio_jobs_schema') IS NOT NULL", 0, NULL);
    if (n < 0)
        return (int)n;
    bool exists = n == 1 && cio_pg_value(r, 0, 0)[0] == 't';
    cio_pg_result_free(r);
    if (!exists) {
        *version = 0;
        int rc = cio_pg_exec(c, "CREATE TABLE cio_jobs_schema (version integer NOT NULL)");
        return rc < 0 ? rc : 0;
    }
    n = cio_pg_query(c, &r, "SELECT coalesce(max(version), 0) FROM cio_jobs_schema", 0, NULL);
    if (n < 0)
        return (int)n;
    *version = atoi(cio_pg_value(r, 0, 0));
    cio_pg_result_free(r);
    return 0;
}

static int install_steps(cio_pg_t *c)
{
    int rc = cio_pg_exec(c, "SELECT pg_advisory_xact_lock(" INSTALL_LOCK ")");
    int version = 0;
    if (rc == 0)
        rc = schema_version(c, &version);
    if (rc < 0)
        return rc;
    if (version > SCHEMA_VERSION) {
        pg__set_error(c, "the database holds a newer cio_jobs schema than this cio-pg knows");
        return -EPROTO;
    }
    if (version == SCHEMA_VERSION)
        return 0;
    for (int v = version; v < SCHEMA_VERSION; v++) {
        if ((rc = cio_pg_exec(c, schema_steps[v])) < 0)
            return rc;
    }
    char sql[96];
    if (version)
        snprintf(sql, sizeof sql, "UPDATE cio_jobs_schema SET version = %d", SCHEMA_VERSION);
    else
        snprintf(sql, sizeof sql, "INSERT INTO cio_jobs_schema VALUES (%d)", SCHEMA_VERSION);
    int64_t n = cio_pg_query(c, NULL, sql, 0, NULL);
    return n < 0 ? (int)n : 0;
}

int cio_pgq_install(cio_pg_t *c)
{
    if (!c)
        return -EINVAL;
    int st = cio_pg_status(c);
    if (st == CIO_PG_BROKEN)
        return -ENOTCONN;
    if (st != CIO_PG_IDLE)
        return -EBUSY;
    int rc = cio_pg_begin(c);
    if (rc < 0)
        return rc;
    rc = install_steps(c);
    if (rc == 0)
        return cio_pg_commit(c);
    /* Keep the failure's error (message, SQLSTATE): the rollback clears
     * the last error. */
    PGresult *err = c->err;
    char *msg = c->errmsg;
    c->err = NULL;
    c->errmsg = NULL;
    cio_pg_rollback(c);
    if (!c->err && !c->errmsg) {
        c->err = err;
        c->errmsg = msg;
    } else {
        PQclear(err);
        free(msg);
    }
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Enqueue                                                                   */
/* ------------------------------------------------------------------------ */

/* A queue name or key: 1..max bytes. */
static bool valid_text(const char *s, size_t max)
{
    if (!s)
        return false;
    size_t n = strnlen(s, max + 1);
    return n >= 1 && n <= max;
}

static bool valid_time(double t)
{
    return isfinite(t) && t >= 0;
}

/* The options with their defaults, or -EINVAL. */
static int check_opts(const cio_pgq_enqueue_opts_t *in, cio_pgq_enqueue_opts_t *o)
{
    static const cio_pgq_enqueue_opts_t none;
    *o = in ? *in : none;
    for (size_t i = 0; i < sizeof o->reserved_ / sizeof o->reserved_[0]; i++) {
        if (o->reserved_[i])
            return -EINVAL;
    }
    if (!valid_time(o->delay) || !valid_time(o->run_at) || !valid_time(o->backoff))
        return -EINVAL;
    if (o->delay > 0 && o->run_at > 0)
        return -EINVAL;
    if (o->max_attempts < 0 || o->max_attempts > 1000000 || o->backoff > 3600)
        return -EINVAL;
    if (o->idem_key && !valid_text(o->idem_key, CIO_PGQ_MAX_KEY))
        return -EINVAL;
    if (!o->max_attempts)
        o->max_attempts = 5;
    if (o->backoff == 0)
        o->backoff = 1;
    return 0;
}

/* The text parameters every enqueue shares: priority, max_attempts, run_at,
 * delay, backoff. */
typedef struct {
    char priority[16], max_attempts[16], run_at[32], delay[32], backoff[32];
} opt_text_t;

static void opts_text(const cio_pgq_enqueue_opts_t *o, opt_text_t *t)
{
    snprintf(t->priority, sizeof t->priority, "%d", o->priority);
    snprintf(t->max_attempts, sizeof t->max_attempts, "%d", o->max_attempts);
    snprintf(t->run_at, sizeof t->run_at, "%.17g", o->run_at);
    snprintf(t->delay, sizeof t->delay, "%.17g", o->delay);
    snprintf(t->backoff, sizeof t->backoff, "%.17g", o->backoff);
}

/* When a new job may run: an absolute run_at, or now plus the delay. The
 * clock is the statement's, not the transaction's start, so that a delay
 * counts from the enqueue inside a long transaction. */
#define VISIBLE_AT(runat, delay) \
    "CASE WHEN " runat "::float8 > 0 THEN to_timestamp(" runat "::float8)" \
    " ELSE clock_timestamp() + " delay "::float8 * interval '1 second' END"

static const char enqueue_sql[] =
    "WITH ins AS (INSERT INTO cio_jobs"
    " (queue, payload, priority, max_attempts, visible_at, backoff_base, idem_key)"
    " VALUES ($1, $2, $3, $4, " VISIBLE_AT("$5", "$6") ", $7, $8)"
    " ON CONFLICT (queue, idem_key) DO NOTHING RETURNING id)"
    " SELECT id, pg_notify('cio_jobs', $1) FROM ins";

/* The job that holds the key, after a conflict. Returns 1, -EAGAIN or an
 * error. */
static int existing_job(cio_pg_t *c, const char *queue, const char *key, int64_t *id)
{
    const char *vals[2] = {queue, key};
    cio_pg_result_t *r;
    int64_t n = cio_pg_query(c, &r, "SELECT id FROM cio_jobs WHERE queue = $1 AND idem_key = $2",
                             2, vals);
    if (n < 0)
        return (int)n;
    if (n == 1)
        *id = strtoll(cio_pg_value(r, 0, 0), NULL, 10);
    cio_pg_result_free(r);
    /* The conflicting job was committed after this transaction's snapshot
     * (REPEATABLE READ); a retry sees it. */
    return n == 1 ? 1 : -EAGAIN;
}

int cio_pgq_enqueue(cio_pg_t *c, int64_t *id, const char *queue, const void *payload,
                    size_t len, const cio_pgq_enqueue_opts_t *opts)
{
    if (id)
        *id = 0;
    cio_pgq_enqueue_opts_t o;
    if (!c || !valid_text(queue, CIO_PGQ_MAX_NAME) || (!payload && len) ||
        len > CIO_PGQ_MAX_PAYLOAD || check_opts(opts, &o) < 0)
        return -EINVAL;
    opt_text_t t;
    opts_text(&o, &t);
    static const unsigned types[8] = {OID_TEXT, OID_BYTEA, OID_INT4, OID_INT4,
                                      OID_FLOAT8, OID_FLOAT8, OID_FLOAT8, OID_TEXT};
    const char *vals[8] = {queue, payload ? payload : "", t.priority, t.max_attempts,
                           t.run_at, t.delay, t.backoff, o.idem_key};
    const int lens[8] = {0, (int)len, 0, 0, 0, 0, 0, 0};
    const int fmts[8] = {0, 1, 0, 0, 0, 0, 0, 0};
    cio_pg_result_t *r;
    int64_t n = cio_pg_query_params(c, &r, enqueue_sql, 8, types, vals, lens, fmts, 0);
    if (n < 0)
        return (int)n;
    int64_t got = n == 1 ? strtoll(cio_pg_value(r, 0, 0), NULL, 10) : 0;
    cio_pg_result_free(r);
    int rc = 0;
    if (n == 0)
        rc = o.idem_key ? existing_job(c, queue, o.idem_key, &got) : -EPROTO;
    if (rc >= 0 && id)
        *id = got;
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Batch enqueue                                                             */
/* ------------------------------------------------------------------------ */

/* One statement inserts every job: the payloads travel as one bytea (binary,
 * so nothing is escaped) cut by arrays of offsets and lengths. The ids are
 * drawn from the sequence in the order of the rows, so sorted ids match the
 * payloads' order. */
static const char batch_sql[] =
    "WITH p AS (SELECT o, l, k FROM unnest($2::int8[], $3::int8[]) WITH ORDINALITY AS u(o, l, k)),"
    " ins AS (INSERT INTO cio_jobs"
    " (queue, payload, priority, max_attempts, visible_at, backoff_base)"
    " SELECT $1, substring($4::bytea FROM (o + 1)::int FOR l::int), $5, $6, "
    VISIBLE_AT("$7", "$8") ", $9 FROM p ORDER BY k RETURNING id)"
    " SELECT (SELECT array_agg(id ORDER BY id) FROM ins), pg_notify('cio_jobs', $1)";

/* Appends "{a,b,...}" of n int64 values to a new string. */
static char *int_array(const int64_t *v, size_t n)
{
    char *s = malloc(n * 21 + 3);
    if (!s)
        return NULL;
    char *p = s;
    *p++ = '{';
    for (size_t i = 0; i < n; i++)
        p += sprintf(p, i ? ",%" PRId64 : "%" PRId64, v[i]);
    *p++ = '}';
    *p = '\0';
    return s;
}

/* Parses the returned "{id,...}" into ids. */
static int parse_ids(const char *s, int64_t *ids, size_t n)
{
    if (!s || *s++ != '{')
        return -EPROTO;
    for (size_t i = 0; i < n; i++) {
        char *end;
        int64_t v = strtoll(s, &end, 10);
        if (end == s || (*end != ',' && *end != '}'))
            return -EPROTO;
        if (ids)
            ids[i] = v;
        s = end + 1;
    }
    return 0;
}

/* Packs the payloads into one buffer with their offsets and lengths. */
static int pack(size_t n, const void *const *payloads, const size_t *lens, char **blob,
                size_t *total, int64_t *offs, int64_t *ls)
{
    size_t sum = 0;
    for (size_t i = 0; i < n; i++) {
        if ((!payloads[i] && lens[i]) || lens[i] > CIO_PGQ_MAX_PAYLOAD - sum)
            return -EINVAL;
        offs[i] = (int64_t)sum;
        ls[i] = (int64_t)lens[i];
        sum += lens[i];
    }
    *blob = malloc(sum ? sum : 1);
    if (!*blob)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        if (lens[i])
            memcpy(*blob + offs[i], payloads[i], lens[i]);
    }
    *total = sum;
    return 0;
}

static int64_t batch_run(cio_pg_t *c, int64_t *ids, const char *queue, size_t n,
                         const char *blob, size_t total, const char *offs, const char *ls,
                         const cio_pgq_enqueue_opts_t *o)
{
    opt_text_t t;
    opts_text(o, &t);
    static const unsigned types[9] = {OID_TEXT, 0, 0, OID_BYTEA, OID_INT4, OID_INT4,
                                      OID_FLOAT8, OID_FLOAT8, OID_FLOAT8};
    const char *vals[9] = {queue, offs, ls, blob, t.priority, t.max_attempts,
                           t.run_at, t.delay, t.backoff};
    const int lens[9] = {0, 0, 0, (int)total, 0, 0, 0, 0, 0};
    const int fmts[9] = {0, 0, 0, 1, 0, 0, 0, 0, 0};
    cio_pg_result_t *r;
    int64_t rows = cio_pg_query_params(c, &r, batch_sql, 9, types, vals, lens, fmts, 0);
    if (rows < 0)
        return rows;
    int rc = rows == 1 ? parse_ids(cio_pg_value(r, 0, 0), ids, n) : -EPROTO;
    cio_pg_result_free(r);
    return rc < 0 ? rc : (int64_t)n;
}

int64_t cio_pgq_enqueue_batch(cio_pg_t *c, int64_t *ids, const char *queue, size_t n,
                              const void *const *payloads, const size_t *lens,
                              const cio_pgq_enqueue_opts_t *opts)
{
    cio_pgq_enqueue_opts_t o;
    if (!c || !valid_text(queue, CIO_PGQ_MAX_NAME) || n > 1000000 ||
        (n && (!payloads || !lens)) || check_opts(opts, &o) < 0 || o.idem_key)
        return -EINVAL;
    if (n == 0)
        return 0;
    int64_t *offs = malloc(n * sizeof *offs), *ls = malloc(n * sizeof *ls);
    char *blob = NULL, *offs_text = NULL, *ls_text = NULL;
    size_t total = 0;
    int64_t rc = offs && ls ? 0 : -ENOMEM;
    if (rc == 0)
        rc = pack(n, payloads, lens, &blob, &total, offs, ls);
    if (rc == 0) {
        offs_text = int_array(offs, n);
        ls_text = int_array(ls, n);
        rc = offs_text && ls_text ? 0 : -ENOMEM;
    }
    if (rc == 0)
        rc = batch_run(c, ids, queue, n, blob, total, offs_text, ls_text, &o);
    free(offs);
    free(ls);
    free(blob);
    free(offs_text);
    free(ls_text);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Outcomes                                                                  */
/* ------------------------------------------------------------------------ */

void cio_pgq_outcome_clear(cio_pgq_outcome_t *o)
{
    if (!o)
        return;
    free(o->result);
    free(o->error);
    memset(o, 0, sizeof *o);
}

/* Copies a binary field (NULL for SQL NULL); adds a NUL byte. */
static int copy_field(const cio_pg_result_t *r, int col, void **out, size_t *len)
{
    *out = NULL;
    int n = cio_pg_length(r, 0, col);
    if (n < 0)
        return 0;
    char *p = malloc((size_t)n + 1);
    if (!p)
        return -ENOMEM;
    memcpy(p, cio_pg_value(r, 0, col), (size_t)n);
    p[n] = '\0';
    *out = p;
    if (len)
        *len = (size_t)n;
    return 0;
}

/* Reads the outcome from a binary result row (state int2, attempts int4,
 * result bytea, error text). */
static int read_outcome(const cio_pg_result_t *r, cio_pgq_outcome_t *out)
{
    if (cio_pg_length(r, 0, 0) != 2 || cio_pg_length(r, 0, 1) != 4)
        return -EPROTO;
    uint16_t st;
    uint32_t at;
    memcpy(&st, cio_pg_value(r, 0, 0), 2);
    memcpy(&at, cio_pg_value(r, 0, 1), 4);
    out->state = (int16_t)be16toh(st);
    out->attempts = (int32_t)be32toh(at);
    int rc = copy_field(r, 2, &out->result, &out->result_len);
    void *err = NULL;
    if (rc == 0)
        rc = copy_field(r, 3, &err, NULL);
    out->error = err;
    if (rc < 0)
        cio_pgq_outcome_clear(out);
    return rc;
}

int cio_pgq_status(cio_pg_t *c, int64_t id, cio_pgq_outcome_t *out)
{
    if (out)
        memset(out, 0, sizeof *out);
    if (!c || !out)
        return -EINVAL;
    char idt[24];
    snprintf(idt, sizeof idt, "%" PRId64, id);
    const char *vals[1] = {idt};
    static const unsigned types[1] = {OID_INT8};
    cio_pg_result_t *r;
    int64_t n = cio_pg_query_params(c, &r,
                                    "SELECT state, attempts, result, error FROM cio_jobs WHERE id = $1",
                                    1, types, vals, NULL, NULL, 1);
    if (n < 0)
        return (int)n;
    int rc = n == 1 ? read_outcome(r, out) : -ENOENT;
    cio_pg_result_free(r);
    return rc;
}

int64_t cio_pgq_count(cio_pg_t *c, const char *queue, int state)
{
    if (!c || !valid_text(queue, CIO_PGQ_MAX_NAME) || state < -1 || state > CIO_PGQ_DEAD)
        return -EINVAL;
    char st[16];
    snprintf(st, sizeof st, "%d", state);
    const char *vals[2] = {queue, st};
    cio_pg_result_t *r;
    int64_t n = cio_pg_query(c, &r,
                             "SELECT count(*) FROM cio_jobs WHERE queue = $1"
                             " AND ($2::int < 0 OR state = $2::int)",
                             2, vals);
    if (n < 0)
        return n;
    int64_t count = n == 1 ? strtoll(cio_pg_value(r, 0, 0), NULL, 10) : -EPROTO;
    cio_pg_result_free(r);
    return count;
}

/* ------------------------------------------------------------------------ */
/* Waiting for an outcome                                                    */
/* ------------------------------------------------------------------------ */

static bool final_state(int state)
{
    return state == CIO_PGQ_DONE || state == CIO_PGQ_DEAD;
}

/* Check, wait for a notification naming the job, check again. The LISTEN
 * comes before the first check, so a completion between the two is seen. */
static int wait_steps(cio_pg_t *c, int64_t id, cio_pgq_outcome_t *out)
{
    int rc = cio_pg_listen(c, "cio_jobs_done");
    if (rc < 0)
        return rc;
    char idt[24];
    snprintf(idt, sizeof idt, "%" PRId64, id);
    for (;;) {
        if ((rc = cio_pgq_status(c, id, out)) < 0)
            return rc;
        if (final_state(out->state))
            return 0;
        cio_pgq_outcome_clear(out);
        for (;;) {
            cio_pg_notify_t *n;
            if ((rc = cio_pg_wait_notify(c, &n, INFINITY)) < 0)
                return rc;
            bool ours = strcmp(n->payload, idt) == 0;
            cio_pg_notify_free(n);
            if (ours)
                break;
        }
    }
}

/* Stops listening and drops the notifications kept. Returns whether c is
 * clean. */
static bool unlisten_all(cio_pg_t *c)
{
    if (cio_pg_unlisten(c, "cio_jobs_done") < 0)
        return false;
    cio_pg_notify_t *n;
    int rc;
    while ((rc = cio_pg_wait_notify(c, &n, 0)) == 0)
        cio_pg_notify_free(n);
    return rc == -EAGAIN;
}

/* Gives the connection back clean: no LISTEN left, no notification kept.
 * Runs shielded, as cleanup, bounded by a few seconds. A connection that
 * could not be cleaned (memory ran out, the server did not answer) is
 * marked broken, so that the pool closes it: left listening, it would
 * collect every completion's notification for its next users. */
static void wait_cleanup(cio_pg_pool_t *p, cio_pg_t *c)
{
    cio_scope_t s;
    bool clean = false;
    if (cio_scope_enter(&s, 5.0, CIO_SCOPE_SHIELD) == 0) {
        clean = unlisten_all(c);
        cio_scope_exit(&s);
    }
    if (!clean)
        c->broken = true;
    cio_pg_pool_release(p, c);
}

int cio_pgq_wait(cio_pg_pool_t *p, int64_t id, double timeout, cio_pgq_outcome_t *out)
{
    if (out)
        memset(out, 0, sizeof *out);
    if (!p || !out || isnan(timeout))
        return -EINVAL;
    if (!cio_current_task())
        return -EPERM;
    cio_scope_t s;
    int rc = cio_scope_enter(&s, timeout, 0);
    if (rc < 0)
        return rc;
    cio_pg_t *c;
    rc = cio_pg_pool_acquire(p, &c, INFINITY);
    if (rc == 0) {
        rc = wait_steps(c, id, out);
        wait_cleanup(p, c);
    }
    int rs = cio_scope_exit(&s);
    if (rc == 0 && rs < 0)
        rc = rs;
    if (rc < 0)
        cio_pgq_outcome_clear(out);
    return rc;
}
