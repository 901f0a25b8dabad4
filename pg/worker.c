/*
 * The task queue's workers (queue.c has the table, enqueue and outcomes).
 * Uses conn.c, query.c, notify.c and pool.c through cio-pg.h.
 *
 * A worker is the caller's task plus:
 *
 *  - `concurrency` slot tasks. A slot claims a job (one UPDATE ... WHERE id
 *    = (SELECT ... FOR UPDATE SKIP LOCKED LIMIT 1) statement on a pooled
 *    connection), runs the handler in a task of its own while it renews
 *    the lease every third of it, then records the outcome, fenced by the
 *    claim's attempt number. A slot that finds nothing goes idle until the
 *    listener wakes it.
 *  - a listener task, with a connection of its own that LISTENs on
 *    'cio_jobs'. While some slot is idle it waits for a notification naming
 *    the queue, or for the queue's next due time (the earliest visible_at of
 *    a queued or running job: a delayed job, a retry's backoff, a lease that
 *    will expire), whichever comes first, and then wakes the idle slots. A
 *    notification is only a hint: slots claim until the queue has nothing
 *    due. Notifications that arrive while every slot is busy stay in the
 *    connection (libpq keeps them) and wake the slots as soon as one idles.
 *
 * Idle slots cannot miss a wake-up: a slot notes the wake generation before
 * it claims and claims again when it changed meanwhile (one loop, one
 * thread: nothing runs between that check and the wait).
 */
#include "pg.h"

#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* How long a step waits for a pooled connection before it counts an error
 * and backs off. */
#define ACQUIRE_TIMEOUT 10.0
/* Bounds of the listener's wait: a due time in the past is retried after
 * MIN_IDLE_WAIT (a job locked by another worker's claim in progress), and
 * no wait is longer than MAX_IDLE_WAIT (a hint lost with a connection). */
#define MIN_IDLE_WAIT 0.1
#define MAX_IDLE_WAIT 30.0
/* The shortest lease accepted, in seconds. */
#define MIN_LEASE 0.1
/* Backoff after database errors. */
#define ERROR_BACKOFF_MIN 0.1
#define ERROR_BACKOFF_MAX 5.0

/* Minimum and maximum of two times (plain comparisons: cio-pg needs no libm). */
static double dmin(double a, double b) { return a < b ? a : b; }
static double dmax(double a, double b) { return a > b ? a : b; }

struct cio_pgq_job {
    int64_t id;
    const char *queue;
    /* The claim's result row: the payload points into it, so that taking a
     * claimed job needs no allocation of its own (a failure there would
     * burn an attempt: the job would only come back after its lease). */
    cio_pg_result_t *row;
    const char *payload;
    size_t len;
    int attempt;
    int max_attempts;
    void *result;
    size_t result_len;
    char *error;
};

enum { SLOT_CLAIM, SLOT_IDLE, SLOT_RUN };

typedef struct worker worker_t;

typedef struct {
    worker_t *w;
    cio_task_t *task;
    int state; /* SLOT_* */
} slot_t;

struct worker {
    cio_pg_pool_t *pool;
    cio_pgq_worker_opts_t o;
    cio_pgq_handler_fn fn;
    void *arg;
    cio_pgq_stats_t *stats;
    cio_pgq_stats_t own_stats;
    char id[300];
    char lease[32];
    /* Wake-ups of idle slots (generation counted) and of the listener. */
    uint64_t gen;
    unsigned idle;
    cio_event_t wake;
    cio_event_t idle_ev;
    /* Shutdown: stop is completed when it starts; handlers still running
     * at grace_end are cancelled. */
    bool stopping;
    int64_t grace_end;
    cio_future_t *stop;
    int fatal;
    slot_t *slots;
    cio_task_t *listener;
    cio_future_t **fs; /* the tasks started, for the combinators */
    size_t nfs;
};

/* ------------------------------------------------------------------------ */
/* Jobs                                                                      */
/* ------------------------------------------------------------------------ */

int64_t cio_pgq_job_id(const cio_pgq_job_t *j) { return j ? j->id : 0; }
const char *cio_pgq_job_queue(const cio_pgq_job_t *j) { return j ? j->queue : NULL; }
const void *cio_pgq_job_payload(const cio_pgq_job_t *j) { return j ? j->payload : NULL; }
size_t cio_pgq_job_length(const cio_pgq_job_t *j) { return j ? j->len : 0; }
int cio_pgq_job_attempt(const cio_pgq_job_t *j) { return j ? j->attempt : 0; }
int cio_pgq_job_max_attempts(const cio_pgq_job_t *j) { return j ? j->max_attempts : 0; }

int cio_pgq_job_set_result(cio_pgq_job_t *j, const void *data, size_t len)
{
    if (!j || (!data && len) || len > CIO_PGQ_MAX_PAYLOAD)
        return -EINVAL;
    void *p = malloc(len ? len : 1);
    if (!p)
        return -ENOMEM;
    if (len)
        memcpy(p, data, len);
    free(j->result);
    j->result = p;
    j->result_len = len;
    return 0;
}

int cio_pgq_job_set_error(cio_pgq_job_t *j, const char *msg)
{
    if (!j || !msg)
        return -EINVAL;
    char *p = pg__strdup(msg);
    if (!p)
        return -ENOMEM;
    free(j->error);
    j->error = p;
    return 0;
}

/* Frees what a job holds (the job itself is the slot's). */
static void job_clear(cio_pgq_job_t *j)
{
    cio_pg_result_free(j->row);
    free(j->result);
    free(j->error);
    memset(j, 0, sizeof *j);
}

/* Big-endian integers of a binary result. */
static int64_t get_i64(const cio_pg_result_t *r, int col)
{
    uint64_t v;
    memcpy(&v, cio_pg_value(r, 0, col), 8);
    return (int64_t)be64toh(v);
}

static int32_t get_i32(const cio_pg_result_t *r, int col)
{
    uint32_t v;
    memcpy(&v, cio_pg_value(r, 0, col), 4);
    return (int32_t)be32toh(v);
}

static int16_t get_i16(const cio_pg_result_t *r, int col)
{
    uint16_t v;
    memcpy(&v, cio_pg_value(r, 0, col), 2);
    return (int16_t)be16toh(v);
}

/* ------------------------------------------------------------------------ */
/* Statements                                                                */
/* ------------------------------------------------------------------------ */

/* Claims the next due job. A running job whose lease expired is claimable
 * again; when that lease was its last attempt's, it becomes dead instead
 * (and its waiters are notified). */
static const char claim_sql[] =
    "WITH c AS (UPDATE cio_jobs j SET"
    " state = CASE WHEN j.attempts >= j.max_attempts THEN 3 ELSE 1 END,"
    " attempts = CASE WHEN j.attempts >= j.max_attempts THEN j.attempts ELSE j.attempts + 1 END,"
    " visible_at = now() + $2::float8 * interval '1 second',"
    " worker = $3,"
    " error = CASE WHEN j.attempts >= j.max_attempts"
    "   THEN 'the lease of its last attempt expired' ELSE j.error END,"
    " finished_at = CASE WHEN j.attempts >= j.max_attempts THEN now() END"
    " WHERE j.id = (SELECT id FROM cio_jobs WHERE queue = $1 AND state IN (0, 1)"
    "   AND visible_at <= now() ORDER BY priority DESC, visible_at, id"
    "   FOR UPDATE SKIP LOCKED LIMIT 1)"
    " RETURNING j.id, j.state, j.attempts, j.max_attempts, j.payload),"
    " n AS (SELECT pg_notify('cio_jobs_done', id::text) FROM c WHERE state = 3)"
    " SELECT c.id, c.state, c.attempts, c.max_attempts, c.payload, (SELECT count(*) FROM n) FROM c";

/* Records a completion, fenced by the attempt number. */
static const char complete_sql[] =
    "WITH u AS (UPDATE cio_jobs SET state = 2, result = $3, error = NULL,"
    " finished_at = now(), visible_at = now()"
    " WHERE id = $1 AND state = 1 AND attempts = $2 RETURNING id)"
    " SELECT pg_notify('cio_jobs_done', id::text) FROM u";

/* Records a failure: queued again after the backoff, or dead. A retry wakes
 * the queue's workers, so that their next due time includes it. */
static const char fail_sql[] =
    "WITH u AS (UPDATE cio_jobs SET"
    " state = CASE WHEN attempts >= max_attempts THEN 3 ELSE 0 END,"
    " error = $3,"
    " visible_at = CASE WHEN attempts >= max_attempts THEN now() ELSE now() +"
    "   least(backoff_base * 2 ^ least(attempts - 1, 40), 3600) * interval '1 second' END,"
    " finished_at = CASE WHEN attempts >= max_attempts THEN now() END"
    " WHERE id = $1 AND state = 1 AND attempts = $2 RETURNING id, state, queue),"
    " n AS (SELECT CASE WHEN state = 3 THEN pg_notify('cio_jobs_done', id::text)"
    "   ELSE pg_notify('cio_jobs', queue) END FROM u)"
    " SELECT u.state, (SELECT count(*) FROM n) FROM u";

/* Extends a lease. */
static const char renew_sql[] =
    "UPDATE cio_jobs SET visible_at = now() + $3::float8 * interval '1 second'"
    " WHERE id = $1 AND state = 1 AND attempts = $2";

/* Gives a job back unrun. The attempt does not count against the job's
 * limit, yet the attempt number stays: it is the fencing token, and a token
 * given out again would let a late write of the releasing worker (a retry
 * after a lost reply) pass as the next claim's. So the limit goes up. */
static const char release_sql[] =
    "WITH u AS (UPDATE cio_jobs SET state = 0, max_attempts = max_attempts + 1, visible_at = now(),"
    " worker = NULL WHERE id = $1 AND state = 1 AND attempts = $2 RETURNING queue)"
    " SELECT pg_notify('cio_jobs', queue) FROM u";

/* The queue's next due time, in seconds from now (NULL: nothing pending). */
static const char due_sql[] =
    "SELECT extract(epoch FROM min(visible_at) - clock_timestamp())::float8"
    " FROM cio_jobs WHERE queue = $1 AND state IN (0, 1)";

/* The loop's clock. */
static int64_t now_ns(void)
{
    return cio_loop_time_ns(cio_get_running_loop());
}

/* Whether an error is the worker's end rather than a passing failure. */
static bool is_fatal(int rc)
{
    return rc == -ESHUTDOWN || rc == -EINVAL || rc == -EPERM;
}

/* Sleeps after an error (a cancelled sleep ends it early). */
static void error_pause(worker_t *w, double *backoff)
{
    w->stats->errors++;
    cio_sleep(*backoff);
    *backoff = dmin(*backoff * 2, ERROR_BACKOFF_MAX);
}

/* Runs one statement with text parameters on a pooled connection. Returns
 * the row count, or an error; *out as cio_pg_query_params. */
static int64_t pooled(worker_t *w, cio_pg_result_t **out, const char *sql, int n,
                      const unsigned *types, const char *const *vals, const int *lens,
                      const int *fmts, int result_format)
{
    if (out)
        *out = NULL;
    cio_pg_t *c;
    int rc = cio_pg_pool_acquire(w->pool, &c, ACQUIRE_TIMEOUT);
    if (rc < 0)
        return rc;
    int64_t rows = cio_pg_query_params(c, out, sql, n, types, vals, lens, fmts, result_format);
    cio_pg_pool_release(w->pool, c);
    return rows;
}

/* Claims a job into *j (zeroed): 0 with j->id set (0 when nothing is due),
 * 1 when the row claimed became dead instead (claim again), or an error. */
static int claim(worker_t *w, cio_pgq_job_t *j)
{
    memset(j, 0, sizeof *j);
    static const unsigned types[3] = {OID_TEXT, OID_FLOAT8, OID_TEXT};
    const char *vals[3] = {w->o.queue, w->lease, w->id};
    cio_pg_result_t *r;
    int64_t n = pooled(w, &r, claim_sql, 3, types, vals, NULL, NULL, 1);
    if (n <= 0) {
        cio_pg_result_free(r);
        return (int)n;
    }
    if (get_i16(r, 1) == CIO_PGQ_DEAD) {
        /* Not a job to run; others may be due. */
        w->stats->dead++;
        cio_pg_result_free(r);
        return 1;
    }
    j->row = r;
    j->id = get_i64(r, 0);
    j->attempt = get_i32(r, 2);
    j->max_attempts = get_i32(r, 3);
    j->payload = cio_pg_value(r, 0, 4); /* libpq ends every value with a NUL */
    j->len = (size_t)cio_pg_length(r, 0, 4);
    j->queue = w->o.queue;
    return 0;
}

/* The job's id and attempt as text parameters. */
typedef struct {
    char id[24], attempt[16];
} fence_t;

static void fence_text(const cio_pgq_job_t *j, fence_t *f)
{
    snprintf(f->id, sizeof f->id, "%" PRId64, j->id);
    snprintf(f->attempt, sizeof f->attempt, "%d", j->attempt);
}

/* What complete_on returns when the hook refused. */
#define HOOK_REFUSED 2

/* The completion on c; with the hook, in a transaction with it. Returns 1
 * when it was recorded, 0 when the lease was lost, HOOK_REFUSED (its code
 * in *hook_rc; the transaction rolled back), or an error. */
static int complete_on(worker_t *w, cio_pg_t *c, cio_pgq_job_t *j, int *hook_rc)
{
    fence_t f;
    fence_text(j, &f);
    static const unsigned types[3] = {OID_INT8, OID_INT4, OID_BYTEA};
    const char *vals[3] = {f.id, f.attempt, j->result};
    const int lens[3] = {0, 0, (int)j->result_len};
    const int fmts[3] = {0, 0, 1};
    if (!w->o.on_complete) {
        int64_t n = cio_pg_query_params(c, NULL, complete_sql, 3, types, vals, lens, fmts, 0);
        return n < 0 ? (int)n : n > 0;
    }
    int rc = cio_pg_begin(c);
    if (rc < 0)
        return rc;
    int64_t n = cio_pg_query_params(c, NULL, complete_sql, 3, types, vals, lens, fmts, 0);
    if (n == 1) {
        *hook_rc = w->o.on_complete(c, j, w->arg);
        if (*hook_rc < 0)
            n = HOOK_REFUSED;
    }
    if (n == 1) {
        rc = cio_pg_commit(c);
        return rc < 0 ? rc : 1;
    }
    cio_pg_rollback(c);
    return (int)n;
}

/* Records a failure. Returns 1 when recorded, 0 when the lease was lost, or
 * an error. */
static int fail_on(worker_t *w, cio_pg_t *c, cio_pgq_job_t *j, const char *msg)
{
    fence_t f;
    fence_text(j, &f);
    static const unsigned types[3] = {OID_INT8, OID_INT4, OID_TEXT};
    const char *vals[3] = {f.id, f.attempt, msg};
    cio_pg_result_t *r;
    int64_t n = cio_pg_query_params(c, &r, fail_sql, 3, types, vals, NULL, NULL, 0);
    if (n < 0)
        return (int)n;
    if (n == 1 && atoi(cio_pg_value(r, 0, 0)) == CIO_PGQ_DEAD)
        w->stats->dead++;
    cio_pg_result_free(r);
    return n > 0;
}

/* What an outcome is. */
enum { OUT_DONE, OUT_FAILED, OUT_RELEASE };

/* Gives a job back unrun. Returns 1 when recorded, 0 when the lease was
 * lost, or an error. */
static int release_on(cio_pg_t *c, cio_pgq_job_t *j)
{
    fence_t f;
    fence_text(j, &f);
    const char *vals[2] = {f.id, f.attempt};
    static const unsigned types[2] = {OID_INT8, OID_INT4};
    int64_t n = cio_pg_query_params(c, NULL, release_sql, 2, types, vals, NULL, NULL, 0);
    return n < 0 ? (int)n : n > 0;
}

/* Writes an outcome once, on a pooled connection. Returns as complete_on. */
static int record_once(worker_t *w, cio_pgq_job_t *j, int kind, const char *err, int *hook_rc)
{
    cio_pg_t *c;
    int rc = cio_pg_pool_acquire(w->pool, &c, ACQUIRE_TIMEOUT);
    if (rc < 0)
        return rc;
    if (kind == OUT_DONE)
        rc = complete_on(w, c, j, hook_rc);
    else if (kind == OUT_FAILED)
        rc = fail_on(w, c, j, err);
    else
        rc = release_on(c, j);
    cio_pg_pool_release(w->pool, c);
    return rc;
}

static void count_outcome(worker_t *w, int kind, bool recorded)
{
    if (!recorded)
        w->stats->stale++;
    else if (kind == OUT_DONE)
        w->stats->completed++;
    else if (kind == OUT_FAILED)
        w->stats->failed++;
    else
        w->stats->released++;
}

/* Records an outcome, retrying passing errors while the job's lease lasts
 * (after that, another worker owns the job: nothing more to record). The
 * fenced update cannot be recorded twice, so a retry after a reply lost
 * with the connection is safe (it finds the job done and counts stale). */
static void record(worker_t *w, cio_pgq_job_t *j, int kind, int handler_rc)
{
    char msg[96];
    const char *err = j->error;
    if (!err) {
        snprintf(msg, sizeof msg, "handler failed: %s", cio_err_name(handler_rc));
        err = msg;
    }
    int64_t end = now_ns() + (int64_t)(w->o.lease * 1e9);
    double backoff = ERROR_BACKOFF_MIN;
    for (;;) {
        int hook_rc = 0;
        int rc = record_once(w, j, kind, err, &hook_rc);
        if (rc == HOOK_REFUSED) {
            /* The hook refused: the job fails instead. */
            snprintf(msg, sizeof msg, "on_complete: %s", cio_err_name(hook_rc));
            err = msg;
            kind = OUT_FAILED;
            continue;
        }
        if (rc >= 0) {
            count_outcome(w, kind, rc > 0);
            return;
        }
        if (is_fatal(rc) || now_ns() >= end)
            return;
        error_pause(w, &backoff);
    }
}

/* Renews j's lease. Returns 1 (renewed), 0 (lost) or an error. */
static int renew(worker_t *w, cio_pgq_job_t *j)
{
    fence_t f;
    fence_text(j, &f);
    static const unsigned types[3] = {OID_INT8, OID_INT4, OID_FLOAT8};
    const char *vals[3] = {f.id, f.attempt, w->lease};
    int64_t n = pooled(w, NULL, renew_sql, 3, types, vals, NULL, NULL, 0);
    if (n > 0)
        w->stats->renewed++;
    return n < 0 ? (int)n : n > 0;
}

/* ------------------------------------------------------------------------ */
/* Running a job                                                             */
/* ------------------------------------------------------------------------ */

typedef struct {
    worker_t *w;
    cio_pgq_job_t *j;
} handler_ctx_t;

static int handler_task(void *arg, void **result)
{
    (void)result;
    handler_ctx_t *h = arg;
    return h->w->fn(h->j, h->w->arg);
}

/* Waits for the handler task h, renewing the lease, until it finishes or
 * the shutdown's grace ends. Returns true when it finished. */
static bool supervise(worker_t *w, cio_task_t *h, cio_pgq_job_t *j)
{
    bool renewing = !(w->o.flags & CIO_PGQ_NO_RENEW);
    double every = w->o.lease / 3;
    int64_t next_renew = now_ns() + (int64_t)(every * 1e9);
    bool lost = false;
    while (!cio_future_done(h)) {
        double t = renewing && !lost ? (double)(next_renew - now_ns()) / 1e9 : INFINITY;
        int rc;
        if (!w->stopping) {
            cio_future_t *fs[2] = {h, w->stop};
            rc = cio_wait(fs, 2, CIO_FIRST_COMPLETED, dmax(t, 0));
        } else {
            double left = (double)(w->grace_end - now_ns()) / 1e9;
            if (left <= 0)
                return false;
            rc = cio_wait(&h, 1, CIO_FIRST_COMPLETED, dmax(dmin(t, left), 0));
        }
        if (rc < 0)
            return false; /* this slot itself is cancelled (forced stop) */
        if (renewing && !lost && !cio_future_done(h) && now_ns() >= next_renew) {
            rc = renew(w, j);
            /* A lost lease is final; a failed renewal is tried again soon. */
            lost = rc == 0;
            if (rc < 0)
                w->stats->errors++;
            next_renew = now_ns() + (int64_t)((rc < 0 ? dmin(every, 1.0) : every) * 1e9);
        }
    }
    return true;
}

/* Cancels a handler and waits for it to end (shielded: this runs during a
 * shutdown, maybe in a cancelled slot). */
static void stop_handler(cio_task_t *h)
{
    cio_task_cancel(h);
    cio_scope_t s;
    if (cio_scope_enter(&s, INFINITY, CIO_SCOPE_SHIELD) == 0) {
        cio_await(h, NULL);
        cio_scope_exit(&s);
    }
}

/* Gives a job back unrun (claimed during the shutdown, or its handler's
 * task could not be started). */
static void release_unrun(worker_t *w, cio_pgq_job_t *j)
{
    cio_scope_t s;
    if (cio_scope_enter(&s, w->o.lease, CIO_SCOPE_SHIELD) == 0) {
        record(w, j, OUT_RELEASE, 0);
        cio_scope_exit(&s);
    }
}

/* Runs a claimed job to its recorded outcome. */
static void run_job(worker_t *w, cio_pgq_job_t *j)
{
    handler_ctx_t ctx = {w, j};
    cio_task_t *h;
    int rc = cio_spawn(&h, handler_task, &ctx);
    if (rc < 0) {
        /* Not the job's failure (memory ran out): give it back unrun, and
         * pause like after a database error before claiming again. */
        release_unrun(w, j);
        double backoff = ERROR_BACKOFF_MIN;
        error_pause(w, &backoff);
        return;
    }
    w->stats->claimed++;
    bool finished = supervise(w, h, j);
    if (!finished)
        stop_handler(h);
    int status = cio_future_result(h, NULL);
    cio_future_release(h);
    /* Recording is cleanup: it runs even in a slot cancelled by a forced
     * stop, bounded by the lease. */
    cio_scope_t s;
    if (cio_scope_enter(&s, w->o.lease, CIO_SCOPE_SHIELD) < 0)
        return;
    if (!finished)
        record(w, j, OUT_RELEASE, 0);
    else
        record(w, j, status >= 0 ? OUT_DONE : OUT_FAILED, status);
    cio_scope_exit(&s);
}

/* ------------------------------------------------------------------------ */
/* Slots and the listener                                                    */
/* ------------------------------------------------------------------------ */

static void wake_slots(worker_t *w)
{
    w->gen++;
    cio_event_set(&w->wake);
    cio_event_clear(&w->wake);
}

/* Ends the worker with a fatal error (the first one is kept). */
static void set_fatal(worker_t *w, int rc)
{
    if (!w->fatal)
        w->fatal = rc;
}

static int slot_main(void *arg, void **result)
{
    (void)result;
    slot_t *s = arg;
    worker_t *w = s->w;
    double backoff = ERROR_BACKOFF_MIN;
    while (!w->stopping) {
        uint64_t gen = w->gen;
        s->state = SLOT_CLAIM;
        cio_pgq_job_t j;
        int rc = claim(w, &j);
        if (rc < 0) {
            if (is_fatal(rc)) {
                set_fatal(w, rc);
                return rc;
            }
            s->state = SLOT_IDLE;
            error_pause(w, &backoff);
            continue;
        }
        backoff = ERROR_BACKOFF_MIN;
        if (rc > 0)
            continue;
        if (j.id) {
            if (w->stopping) {
                release_unrun(w, &j);
            } else {
                s->state = SLOT_RUN;
                run_job(w, &j);
            }
            job_clear(&j);
            continue;
        }
        if (w->gen != gen)
            continue; /* woken while claiming: the new job may be due */
        if (w->stopping)
            break;
        s->state = SLOT_IDLE;
        w->idle++;
        cio_event_set(&w->idle_ev);
        rc = cio_event_wait(&w->wake);
        w->idle--;
        if (rc < 0)
            break;
    }
    s->state = SLOT_IDLE;
    return 0;
}

/* Seconds until the queue's next due job, clamped to the idle bounds. */
static int next_wait(worker_t *w, cio_pg_t *c, double *wait)
{
    const char *vals[1] = {w->o.queue};
    cio_pg_result_t *r;
    int64_t n = cio_pg_query(c, &r, due_sql, 1, vals);
    if (n < 0)
        return (int)n;
    const char *v = n == 1 ? cio_pg_value(r, 0, 0) : NULL;
    double due = v ? strtod(v, NULL) : MAX_IDLE_WAIT;
    cio_pg_result_free(r);
    *wait = dmin(dmax(due, MIN_IDLE_WAIT), MAX_IDLE_WAIT);
    return 0;
}

/* One round of the listener: wait for an idle slot, then for a hint or the
 * due time, then wake the slots. */
static int listen_round(worker_t *w, cio_pg_t *c)
{
    while (w->idle == 0) {
        cio_event_clear(&w->idle_ev);
        int rc = cio_event_wait(&w->idle_ev);
        if (rc < 0)
            return rc;
    }
    double wait = MAX_IDLE_WAIT;
    int rc = next_wait(w, c, &wait);
    if (rc < 0)
        return rc;
    cio_pg_notify_t *n;
    rc = cio_pg_wait_notify(c, &n, wait);
    if (rc == -ETIMEDOUT) {
        wake_slots(w);
        return 0;
    }
    if (rc < 0)
        return rc;
    /* Take every hint that is already here at once. */
    bool ours = false;
    do {
        ours = ours || strcmp(n->payload, w->o.queue) == 0;
        cio_pg_notify_free(n);
    } while (cio_pg_wait_notify(c, &n, 0) == 0);
    if (ours)
        wake_slots(w);
    return 0;
}

static int listener_main(void *arg, void **result)
{
    (void)result;
    worker_t *w = arg;
    cio_pg_t *c = NULL;
    double backoff = ERROR_BACKOFF_MIN;
    int rc = 0;
    while (!w->stopping) {
        if (!c) {
            rc = cio_pg_connect(&c, cio_pg_pool_conninfo(w->pool), ACQUIRE_TIMEOUT);
            if (rc == 0)
                rc = cio_pg_listen(c, "cio_jobs");
            if (rc == 0) {
                /* Hints may have been missed while disconnected. */
                backoff = ERROR_BACKOFF_MIN;
                wake_slots(w);
            }
        } else {
            rc = listen_round(w, c);
        }
        if (rc == 0)
            continue;
        if (rc == -ECANCELED || cio_task_cancelling(cio_current_task()))
            break;
        if (rc == -EINVAL) {
            set_fatal(w, rc);
            break;
        }
        cio_pg_close(c);
        c = NULL;
        error_pause(w, &backoff);
    }
    cio_pg_close(c);
    return rc == -ECANCELED ? 0 : rc;
}

/* ------------------------------------------------------------------------ */
/* The worker                                                                */
/* ------------------------------------------------------------------------ */

static bool valid_seconds(double t, bool finite)
{
    return !isnan(t) && t >= 0 && (!finite || isfinite(t));
}

static int check_worker_opts(const cio_pgq_worker_opts_t *o)
{
    for (size_t i = 0; i < sizeof o->reserved_ / sizeof o->reserved_[0]; i++) {
        if (o->reserved_[i])
            return -EINVAL;
    }
    size_t qn = o->queue ? strnlen(o->queue, CIO_PGQ_MAX_NAME + 1) : 0;
    if (qn < 1 || qn > CIO_PGQ_MAX_NAME)
        return -EINVAL;
    if (o->worker_id && strnlen(o->worker_id, 256) > 255)
        return -EINVAL;
    if (o->concurrency > 1024 || (o->flags & ~CIO_PGQ_NO_RENEW))
        return -EINVAL;
    if (!valid_seconds(o->lease, true) || !valid_seconds(o->shutdown_grace, false))
        return -EINVAL;
    /* A shorter lease would be renewed in a busy loop of statements. */
    if (o->lease != 0 && o->lease < MIN_LEASE)
        return -EINVAL;
    return 0;
}

static int worker_init(worker_t *w, cio_pg_pool_t *p, const cio_pgq_worker_opts_t *opts,
                       cio_pgq_handler_fn fn, void *arg)
{
    w->pool = p;
    w->o = *opts;
    w->fn = fn;
    w->arg = arg;
    if (!w->o.concurrency)
        w->o.concurrency = 1;
    if (w->o.lease == 0)
        w->o.lease = 30;
    if (w->o.shutdown_grace == 0)
        w->o.shutdown_grace = 10;
    w->stats = opts->stats ? opts->stats : &w->own_stats;
    memset(w->stats, 0, sizeof *w->stats);
    snprintf(w->lease, sizeof w->lease, "%.17g", w->o.lease);
    if (opts->worker_id) {
        snprintf(w->id, sizeof w->id, "%s", opts->worker_id);
    } else {
        char host[256] = "";
        gethostname(host, sizeof host - 1);
        snprintf(w->id, sizeof w->id, "%s:%ld", host, (long)getpid());
    }
    cio_event_init(&w->wake);
    cio_event_init(&w->idle_ev);
    int rc = cio_future_new(&w->stop, NULL);
    if (rc < 0)
        return rc;
    w->slots = calloc(w->o.concurrency, sizeof *w->slots);
    w->fs = calloc(w->o.concurrency + 1, sizeof *w->fs);
    if (!w->slots || !w->fs) {
        free(w->slots);
        free(w->fs);
        cio_future_release(w->stop);
        return -ENOMEM;
    }
    return 0;
}

/* Starts the listener and the slots; on failure, those started are left
 * for the shutdown to stop. Returns 0 or -ENOMEM. */
static int worker_start(worker_t *w)
{
    int rc = cio_spawn(&w->listener, listener_main, w);
    if (rc == 0)
        w->fs[w->nfs++] = w->listener;
    for (unsigned i = 0; rc == 0 && i < w->o.concurrency; i++) {
        w->slots[i].w = w;
        w->slots[i].state = SLOT_CLAIM;
        rc = cio_spawn(&w->slots[i].task, slot_main, &w->slots[i]);
        if (rc == 0)
            w->fs[w->nfs++] = w->slots[i].task;
    }
    return rc;
}

/* The shutdown, shielded: stop claiming, cancel what only waits, let the
 * handlers finish within the grace, then release what they hold. */
static void worker_stop(worker_t *w)
{
    cio_scope_t s;
    double bound = w->o.shutdown_grace + 2 * w->o.lease + 10;
    if (cio_scope_enter(&s, isfinite(bound) ? bound : INFINITY, CIO_SCOPE_SHIELD) < 0)
        return;
    w->stopping = true;
    w->grace_end = now_ns() + (isfinite(w->o.shutdown_grace)
                                   ? (int64_t)(w->o.shutdown_grace * 1e9)
                                   : INT64_MAX / 2);
    cio_future_set_result(w->stop, NULL);
    /* Left set: a slot that was claiming when the shutdown began does not
     * go idle after it. */
    cio_event_set(&w->wake);
    if (w->listener)
        cio_task_cancel(w->listener);
    for (unsigned i = 0; i < w->o.concurrency; i++) {
        if (w->slots[i].task && w->slots[i].state == SLOT_IDLE)
            cio_task_cancel(w->slots[i].task);
    }
    /* If the bound passes (a database that does not answer), gather
     * cancels the slots; their handlers are stopped and the jobs come back
     * after their leases. */
    cio_gather(w->fs, w->nfs, NULL, NULL, CIO_GATHER_ALL);
    cio_scope_exit(&s);
}

static void worker_free(worker_t *w)
{
    for (size_t i = 0; i < w->nfs; i++)
        cio_future_release(w->fs[i]);
    cio_future_release(w->stop);
    free(w->slots);
    free(w->fs);
}

int cio_pgq_work(cio_pg_pool_t *p, const cio_pgq_worker_opts_t *opts, cio_pgq_handler_fn fn,
                 void *arg)
{
    if (!p || !opts || !fn || check_worker_opts(opts) < 0)
        return -EINVAL;
    if (!cio_current_task())
        return -EPERM;
    worker_t w;
    memset(&w, 0, sizeof w);
    int rc = worker_init(&w, p, opts, fn, arg);
    if (rc < 0)
        return rc;
    rc = worker_start(&w);
    if (rc == 0) {
        /* Runs until the caller is cancelled, or a task ends (fatally:
         * every task runs until the shutdown otherwise). */
        rc = cio_wait(w.fs, w.nfs, CIO_FIRST_COMPLETED, INFINITY);
        if (rc >= 0)
            rc = w.fatal ? w.fatal : -ESHUTDOWN;
    }
    worker_stop(&w);
    worker_free(&w);
    return rc;
}
