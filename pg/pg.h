/*
 * cio-pg's internal header: the connection object and the I/O steps every
 * part of cio-pg builds on (pg/conn.c). cio-pg sits above the whole of cio
 * and uses only its public API (cio.h), so it has one layer of its own:
 *
 *   conn.c      connect, close, errors, and the I/O steps below
 *   query.c     statements, prepared statements, transactions, results
 *   copy.c      COPY IN / COPY OUT
 *   pipeline.c  pipeline mode
 *   notify.c    LISTEN / NOTIFY
 *   pool.c      the connection pool
 *   queue.c     the task queue: schema, enqueue, results
 *   worker.c    the task queue's workers
 *
 * Each file calls only conn.c and the files above it in this list that it
 * names in its header comment (pool.c: conn.c, query.c; queue.c and
 * worker.c: any of them).
 */
#ifndef CIO_PG_INTERNAL_H
#define CIO_PG_INTERNAL_H

#include <cio-pg.h>
#include <libpq-fe.h>

#include <stdbool.h>
#include <stdint.h>

/* Type OIDs of statement parameters (pg_type.h is a server header). */
#define OID_BYTEA 17u
#define OID_INT8 20u
#define OID_INT4 23u
#define OID_TEXT 25u
#define OID_FLOAT8 701u

/* What a connection is in the middle of, besides a plain statement. */
enum {
    PG_MODE_NONE = 0,
    PG_MODE_COPY_IN,
    PG_MODE_COPY_OUT,
    PG_MODE_PIPELINE,
};

struct cio_pg {
    PGconn *pq;
    PGresult *err;         /* the last server error (owned), for SQLSTATE/fields */
    char *errmsg;          /* the last error's text when it is not in err (owned) */
    char sqlstate[6];      /* the last error's SQLSTATE when it is not in err, or "" */
    int64_t abort_by_ns;   /* a cancelled call's cleanup ends by then (INT64_MAX: none) */
    cio_task_t *owner;     /* the task inside an operation on c, NULL when none */
    PGresult *drained;     /* a cancelled statement's own successful outcome (owned) */
    bool drain_failed;     /* the cleanup saw the statement fail (or did not finish) */
    int mode;              /* PG_MODE_* */
    bool broken;           /* the connection is lost: only close remains */
    double cancel_timeout; /* bound of a cancelled call's cleanup, seconds */
    /* Pipeline mode (pipeline.c): queries sent whose result is not yet read,
     * syncs sent and not yet consumed, and whether a statement was sent since
     * the last sync (an open segment: it needs a sync even after a flush
     * request, or its statements stay uncommitted). */
    int pipe_pending;
    int pipe_syncs;
    bool pipe_unflushed;
    /* Pool bookkeeping (pool.c). */
    cio_pg_pool_t *pool;
    cio_pg_t *pool_next;
    int64_t pool_idle_since;
};

/*
 * Starts an operation on c from the current task: checks c (-EINVAL for
 * NULL), the caller (-EPERM outside a task), the connection (-ENOTCONN when
 * broken), that no other operation runs (-EBUSY) and, when mode is not -1,
 * that c is in that mode (-EBUSY otherwise). Clears the last error. On 0 the
 * caller must end with pg__end.
 */
int pg__begin(cio_pg_t *c, int mode);

/* Ends the operation pg__begin started; returns rc unchanged. */
int pg__end(cio_pg_t *c, int rc);
int64_t pg__end64(cio_pg_t *c, int64_t rc);

/*
 * Waits until the socket is ready for `events` (CIO_READABLE, CIO_WRITABLE
 * or both). Returns the ready events (> 0), or cio_wait_fd's error.
 */
int pg__wait(cio_pg_t *c, int events);

/*
 * Sends what libpq has buffered. While the socket is full it waits for
 * either direction, and reads what arrives (the server may be waiting for us
 * to read before it reads more: libpq's flush that wants both directions).
 * Returns 0, -ECONNRESET (marks c broken), or pg__wait's error.
 */
int pg__flush(cio_pg_t *c);

/*
 * Waits until libpq holds a whole result (or the end of a statement's
 * results) and returns PQgetResult's value in *out (NULL: no more results).
 * Returns 0, -ECONNRESET, or pg__wait's error (then nothing was consumed).
 */
int pg__next(cio_pg_t *c, PGresult **out);

/*
 * Marks c broken after libpq reported a failure: keeps libpq's message as
 * the last error; the socket stays open until cio_pg_close. Returns
 * -ECONNRESET.
 */
int pg__lost(cio_pg_t *c);

/*
 * Records a failed result as the last error (takes ownership of r). Returns
 * -EREMOTEIO, or -ECONNRESET when the failure also lost the connection
 * (a FATAL error, an admin shutdown).
 */
int pg__fail(cio_pg_t *c, PGresult *r);

/*
 * libpq refused to queue a message (PQsend*, PQputCopyData, PQpipelineSync
 * returned failure): the connection failed (-ECONNRESET, c broken), or
 * memory ran out and nothing of the message was queued (-ENOMEM, libpq's
 * message kept as the last error).
 */
int pg__send_failed(cio_pg_t *c);

/*
 * A wait inside an operation failed with rc: a lost connection is final
 * (rc returned as it is); anything else (a cancellation, a deadline) leaves
 * the server mid-operation, so c is cleaned up with pg__abort. Returns rc.
 */
int pg__wait_failed(cio_pg_t *c, int rc);

/* Records a text as the last error (copied; an allocation failure leaves
 * the text empty). */
void pg__set_error(cio_pg_t *c, const char *msg);

/*
 * The cleanup of a cancelled or expired call (err: -ECANCELED or -ETIMEDOUT,
 * or any wait failure): shielded from the cancellation and bounded by the
 * cancel timeout, it sends the server a cancel request when a statement may
 * still run, ends COPY IN with an error, syncs a pipeline, then drains every
 * outstanding result until the connection is idle. If that cannot be done in
 * time, c is closed (broken). Returns err.
 */
int pg__abort(cio_pg_t *c, int err);

/*
 * After pg__abort(c, err) interrupted a plain statement: the outcome to
 * report. When the cleanup found that the statement had ended well before
 * the cancellation reached the server, its row count (and its result in
 * *out, when out is not NULL) is returned as a success, the cancellation
 * staying pending for the next await point; otherwise err.
 */
int64_t pg__settled(cio_pg_t *c, int err, PGresult **out);

/*
 * Collects the results of the one statement just sent (or several, for the
 * simple protocol) until libpq reports the end: the last successful result
 * goes to *out (when out is not NULL; freed otherwise), the first error is
 * recorded and returned. A statement that opened a COPY it should not have
 * is ended with an error and gives -EPROTO. Waits are aborted with pg__abort.
 * Returns the row count of the kept result (>= 0) or a negative code.
 */
int64_t pg__collect(cio_pg_t *c, PGresult **out);

/* The row count of a successful result: PQntuples for rows returned, else
 * PQcmdTuples' number (0 when the statement reports none). */
int64_t pg__rows(const PGresult *r);

/*
 * Checks a statement's parameters before anything is sent: nparams in
 * 0..65535 (values may be NULL only for 0), no NUL inside the given length
 * of a text parameter. Returns 0 or -EINVAL.
 */
int pg__check_params(int nparams, const char *const *values, const int *lengths,
                     const int *formats);

/* Allocation (plain malloc: libpq's own memory comes from there too). */
char *pg__strdup(const char *s);

#endif /* CIO_PG_INTERNAL_H */
