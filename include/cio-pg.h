/*
 * cio-pg: PostgreSQL from cio tasks, a connection pool, and a distributed
 * task queue on PostgreSQL.
 *
 * An optional part of cio, built when libpq (Debian's libpq-dev) is found:
 * its own library (libcio-pg) and pkg-config name (cio-pg), so that programs
 * that do not use PostgreSQL never link libpq. It is written on cio's public
 * API only (cio_wait_fd, scopes, locks) and drives libpq's whole protocol,
 * connect included, as non-blocking steps on one socket: no call here blocks
 * the loop, and every call that talks to the server is an await point.
 *
 * Conventions are cio's (the top of cio.h): negative errno codes, out
 * parameters set to NULL on failure, await points only inside a task
 * (-EPERM elsewhere), deadlines from enclosing scopes honoured (-ETIMEDOUT),
 * task cancellation honoured (-ECANCELED). The error codes shared by every
 * call that talks to the server:
 *
 *   -EREMOTEIO     the server reported an error for the statement; the
 *                  connection stays usable. cio_pg_error_sqlstate() gives the
 *                  SQLSTATE ("23505"), cio_pg_error_message() the message,
 *                  cio_pg_error_field() any other field (detail, hint, ...).
 *   -ECONNRESET    the connection was lost (the server closed it or the
 *                  network failed). The connection is broken for good: every
 *                  later call on it returns -ENOTCONN; only cio_pg_close
 *                  remains to be done (a pool replaces it by itself).
 *   -ENOTCONN      the connection was already broken.
 *   -EBUSY         another operation is in progress on this connection (one
 *                  operation at a time per connection, as with asyncpg), or
 *                  the connection is in a mode (COPY, pipeline) that the call
 *                  does not belong to.
 *   -ECANCELED     the task was cancelled. A statement the server was running
 *                  is cancelled on the server (a cancel request) and its
 *                  outcome drained, so the connection is usable afterwards
 *                  (see "Cancellation" below).
 *   -ETIMEDOUT     a deadline passed (an enclosing scope's, or the call's
 *                  own); handled as a cancellation.
 *   -EINVAL        a NULL connection or SQL text, a parameter count out of
 *                  0..65535, a text-format parameter whose given length holds
 *                  a NUL byte (PostgreSQL text cannot hold one), and the
 *                  call-specific cases named in each contract.
 *   -ENOMEM        memory ran out (libpq's or cio's); the connection is
 *                  closed when libpq may have lost track of the protocol.
 *   -EPERM         called outside a task.
 *
 * Cancellation. A call made by a task already cancelled (or past its
 * deadline) sends nothing and returns -ECANCELED / -ETIMEDOUT. When the task
 * is cancelled while the server runs its statement, the call sends
 * PostgreSQL's cancel request (libpq's PQcancel, which blocks, so it runs on
 * a thread of its own, and is sent again while the server has not stopped:
 * the server ignores one that arrives before the statement starts), then
 * drains the statement's outcome so that the connection is idle again. The
 * call tells the truth about what happened: -ECANCELED / -ETIMEDOUT when the
 * statement was stopped or failed, but its normal result (and a success)
 * when it had finished before the cancel reached the server, so a COMMIT
 * that committed is never reported as cancelled; the cancellation then stays
 * pending and the next await point returns it. The cleanup is shielded from
 * the cancellation itself and bounded by the connection's cancel timeout
 * (cio_pg_set_cancel_timeout, 2 s by default): if the server has not
 * answered by then (a vanished peer), the connection is closed and the next
 * call returns -ENOTCONN. So a cancelled call returns at most the cancel
 * timeout after its cancellation, never hangs, and never leaves a connection
 * in an unknown state. A transaction the statement was in is left aborted
 * (the server's rule): roll it back (cio_pg_rollback), or give the
 * connection back to a pool, which does it.
 *
 * A connection belongs to the loop that first uses it and to one task at a
 * time; use a pool (cio_pg_pool_*) to share connections between tasks.
 *
 * Results are libpq's own PGresult: cio_pg_result_t is the same type, so a
 * program that includes <libpq-fe.h> may use every PQ* accessor on it; the
 * cio_pg_* accessors below cover the common ones without that include.
 */
#ifndef CIO_PG_H
#define CIO_PG_H

#include <cio.h>

#ifdef __cplusplus
extern "C" {
#endif

struct pg_conn;   /* libpq's PGconn */
struct pg_result; /* libpq's PGresult */

typedef struct cio_pg cio_pg_t;
typedef struct pg_result cio_pg_result_t;

/* ------------------------------------------------------------------------ */
/* Connections                                                               */
/* ------------------------------------------------------------------------ */

/*
 * Await point: connects to a server. conninfo is a libpq connection string
 * ("host=... dbname=...") or URI ("postgresql://..."); "" takes libpq's
 * defaults and the PG* environment variables. The whole connection (DNS,
 * TCP or unix socket, TLS when sslmode asks for it, authentication) runs as
 * non-blocking steps, bounded by timeout seconds (INFINITY: none; also the
 * enclosing scopes' deadlines). Returns 0 and the connection in *out (free it
 * with cio_pg_close), or -ECONNREFUSED (the server could not be reached or
 * refused the connection: authentication, unknown database, ...;
 * cio_pg_connect_error() gives libpq's message), -ETIMEDOUT, -ECANCELED,
 * -EINVAL (out or conninfo NULL, a malformed conninfo, NaN timeout),
 * -ENOMEM, -EPERM (outside a task).
 */
CIO_EXTERN int cio_pg_connect(cio_pg_t **out, const char *conninfo, double timeout);

/*
 * The message of this thread's last failed cio_pg_connect (libpq's text,
 * without the trailing newline); "" when there is none. Valid until the next
 * cio_pg_connect in the same thread.
 */
CIO_EXTERN const char *cio_pg_connect_error(void);

/*
 * Closes the connection (sending the protocol's Terminate when it is still
 * up) and frees it, with every result it holds for error reporting. Not an
 * await point. Returns 0, or -EBUSY (and does nothing) when a task is inside
 * an operation on c: cancel that task first. NULL is a no-op (0).
 */
CIO_EXTERN int cio_pg_close(cio_pg_t *c);

/* Connection state as cio_pg_status reports it. */
#define CIO_PG_IDLE 0        /* ready, no transaction open */
#define CIO_PG_INTRANS 1     /* ready, inside a transaction block */
#define CIO_PG_INERROR 2     /* ready, inside a failed transaction block */
#define CIO_PG_ACTIVE 3      /* an operation, COPY or pipeline is in progress */
#define CIO_PG_BROKEN 4      /* the connection is lost (or c is NULL) */

/* Returns the state of c (CIO_PG_*); CIO_PG_BROKEN for NULL. */
CIO_EXTERN int cio_pg_status(const cio_pg_t *c);

/*
 * Sets how long the cleanup of a cancelled call may take (the cancel request
 * and the drain of the statement's outcome) before the connection is closed
 * instead (2 s by default). Returns 0, or -EINVAL for NULL, NaN or a negative
 * value.
 */
CIO_EXTERN int cio_pg_set_cancel_timeout(cio_pg_t *c, double seconds);

/* The server process's pid (libpq's PQbackendPID), 0 for NULL or broken. */
CIO_EXTERN int cio_pg_backend_pid(const cio_pg_t *c);

/*
 * libpq's PGconn of c, for the calls that do no I/O (PQescapeLiteral,
 * PQparameterStatus, PQserverVersion, ...). Calls that talk to the server
 * must go through cio-pg, or they block the loop. NULL for NULL.
 */
CIO_EXTERN struct pg_conn *cio_pg_pq(cio_pg_t *c);

/* ------------------------------------------------------------------------ */
/* Errors                                                                    */
/* ------------------------------------------------------------------------ */

/*
 * The message of the last error on c: the server's primary message for
 * -EREMOTEIO, libpq's description for a lost connection; "" when the last
 * call succeeded or c is NULL. Valid until the next call on c.
 */
CIO_EXTERN const char *cio_pg_error_message(const cio_pg_t *c);

/*
 * The SQLSTATE of the last server error on c ("42P01"), or "" when the last
 * call did not fail with -EREMOTEIO. Valid until the next call on c.
 */
CIO_EXTERN const char *cio_pg_error_sqlstate(const cio_pg_t *c);

/*
 * Any field of the last server error on c, by libpq's PG_DIAG_* code ('D'
 * detail, 'H' hint, 'P' position, 'n' constraint name, ...); NULL when absent.
 * Valid until the next call on c.
 */
CIO_EXTERN const char *cio_pg_error_field(const cio_pg_t *c, int fieldcode);

/* ------------------------------------------------------------------------ */
/* Queries                                                                   */
/* ------------------------------------------------------------------------ */

/*
 * Await point: runs sql (one or several statements separated by ';', with
 * no parameters: the simple query protocol) and discards the rows. Returns 0,
 * or the codes at the top of this header; with several statements it stops
 * at the first error (the server's rule). A COPY statement gets -EPROTO after
 * the COPY is ended with an error (use cio_pg_copy_in / _out); the connection
 * stays usable.
 */
CIO_EXTERN int cio_pg_exec(cio_pg_t *c, const char *sql);

/*
 * Await point: runs one statement with text parameters $1..$nparams
 * (values[i] NULL is SQL NULL; the server infers the types), as
 * cio_pg_query_params with no types, lengths and formats, and text results.
 * Returns the row count (rows returned by a query, or affected by INSERT,
 * UPDATE, DELETE, ...; 0 for other statements) and, when out is not NULL,
 * the result in *out (free it with cio_pg_result_free). Errors: those at the
 * top of this header; *out is NULL on failure.
 */
CIO_EXTERN int64_t cio_pg_query(cio_pg_t *c, cio_pg_result_t **out, const char *sql,
                                int nparams, const char *const *values);

/*
 * Await point: the general form (libpq's PQexecParams). types[i] is the
 * parameter's type OID (0 or types NULL: inferred); lengths[i] is the
 * byte length of a binary parameter (formats[i] 1) and, for a text parameter,
 * an optional bound checked for NUL bytes (-EINVAL); formats NULL means all
 * text. result_format 0 asks for text results, 1 for binary. Returns as
 * cio_pg_query.
 */
CIO_EXTERN int64_t cio_pg_query_params(cio_pg_t *c, cio_pg_result_t **out, const char *sql,
                                       int nparams, const unsigned *types,
                                       const char *const *values, const int *lengths,
                                       const int *formats, int result_format);

/*
 * Await point: prepares sql as the named statement `name` ("" for the unnamed
 * one) on c, with nparams parameter types (types may be NULL). Returns 0 or
 * the codes at the top of this header (-EREMOTEIO for a syntax error or a
 * name already in use, SQLSTATE 42P05).
 */
CIO_EXTERN int cio_pg_prepare(cio_pg_t *c, const char *name, const char *sql, int nparams,
                              const unsigned *types);

/*
 * Await point: runs the prepared statement `name` with the given parameters
 * (as cio_pg_query_params). Returns as cio_pg_query; -EREMOTEIO (26000) for
 * an unknown name, (08P01) for a wrong parameter count.
 */
CIO_EXTERN int64_t cio_pg_query_prepared(cio_pg_t *c, cio_pg_result_t **out, const char *name,
                                         int nparams, const char *const *values,
                                         const int *lengths, const int *formats,
                                         int result_format);

/*
 * Transactions: BEGIN, COMMIT and ROLLBACK (await points, returning as
 * cio_pg_exec). cio_pg_rollback is cleanup code: it runs even when the task
 * is cancelled or past a deadline (shielded, bounded by the cancel timeout),
 * so it belongs on every error path of a transaction. A COMMIT of a failed
 * transaction returns -EREMOTEIO with SQLSTATE 25P02 (the server rolled
 * it back).
 */
CIO_EXTERN int cio_pg_begin(cio_pg_t *c);
CIO_EXTERN int cio_pg_commit(cio_pg_t *c);
CIO_EXTERN int cio_pg_rollback(cio_pg_t *c);

/* Result accessors (libpq's PQntuples, PQnfields, PQgetvalue, ...). None is
 * an await point or fails: the row and the column counts of r, 0 for NULL. */
CIO_EXTERN int cio_pg_ntuples(const cio_pg_result_t *r);
CIO_EXTERN int cio_pg_nfields(const cio_pg_result_t *r);
/* The field's value as text (binary for a binary result), NUL-terminated;
 * NULL for SQL NULL or a row/column out of range. Owned by r. */
CIO_EXTERN const char *cio_pg_value(const cio_pg_result_t *r, int row, int col);
/* The value's length in bytes; -1 for SQL NULL or out of range. */
CIO_EXTERN int cio_pg_length(const cio_pg_result_t *r, int row, int col);
/* The column's name, NULL when out of range. */
CIO_EXTERN const char *cio_pg_fname(const cio_pg_result_t *r, int col);
/* Frees a result (PQclear). NULL is a no-op. */
CIO_EXTERN void cio_pg_result_free(cio_pg_result_t *r);
/* Frees memory libpq returned (cio_pg_copy_get's rows). NULL is a no-op. */
CIO_EXTERN void cio_pg_freemem(void *p);

/* ------------------------------------------------------------------------ */
/* COPY                                                                      */
/* ------------------------------------------------------------------------ */

/*
 * Await point: starts `COPY ... FROM STDIN` (sql must be such a statement,
 * and one statement only: it is sent with the extended protocol, so that
 * "COPY ...; other" is the server's error 42601, -EREMOTEIO). The
 * connection is then in COPY IN mode until cio_pg_copy_end: other calls
 * get -EBUSY. Returns 0, the codes at the top of this header, or -EPROTO
 * when sql is not a COPY FROM STDIN (the statement is run to its end and
 * its result discarded; a COPY TO STDOUT is read away).
 */
CIO_EXTERN int cio_pg_copy_in(cio_pg_t *c, const char *sql);

/*
 * Await point: sends len bytes of COPY data (any split: rows may span calls;
 * len 0 does nothing). Each call hands its bytes to the socket before it
 * returns, waiting while the socket is full (backpressure), so libpq's
 * buffer stays bounded; a call costs a write, so give it rows in batches
 * (a few KiB or more), not one by one, when speed matters. Returns 0,
 * -EBUSY (not in COPY IN mode), -EINVAL (data NULL with len > 0), or the
 * codes at the top of this header. On cancellation, a deadline or -ENOMEM
 * the COPY is aborted on the server (a cancel request, so a server stalled
 * in a trigger or a lock stops too; nothing of the COPY is kept) and the
 * connection is idle again, out of COPY IN mode.
 */
CIO_EXTERN int cio_pg_copy_put(cio_pg_t *c, const void *data, size_t len);

/*
 * Await point: ends COPY IN. errmsg NULL finishes it and returns the number
 * of rows copied; otherwise the COPY is aborted with that message and
 * -EREMOTEIO returned (SQLSTATE 57014, the message in the server's text).
 * A malformed row gives -EREMOTEIO (22P02 and the like) and nothing is
 * kept. -EBUSY when not in COPY IN mode. Either way the connection leaves
 * COPY IN mode. The abort (errmsg not NULL) is cleanup code, like
 * cio_pg_rollback: it runs even when the task is cancelled or past a
 * deadline (shielded, bounded by the cancel timeout; past it the
 * connection is closed), so it belongs on a COPY producer's error path.
 */
CIO_EXTERN int64_t cio_pg_copy_end(cio_pg_t *c, const char *errmsg);

/*
 * Await point: starts `COPY ... TO STDOUT` (one statement, as
 * cio_pg_copy_in). The connection is in COPY OUT mode until cio_pg_copy_get
 * returns 0 (or an error). Returns 0, the codes at the top of this header,
 * or -EPROTO when sql is not a COPY TO STDOUT (the statement is run to its
 * end; a COPY FROM STDIN is ended with an error, nothing copied).
 */
CIO_EXTERN int cio_pg_copy_out(cio_pg_t *c, const char *sql);

/*
 * Await point: the next COPY OUT row. Returns its length (> 0) with the bytes
 * in *buf (free them with cio_pg_freemem), 0 at the end of the data (the
 * statement's outcome checked; the connection is idle again), -EBUSY when not
 * in COPY OUT mode, or the codes at the top of this header (on cancellation
 * the server's COPY is cancelled and the rest drained). *buf is NULL unless
 * a row is returned.
 */
CIO_EXTERN ssize_t cio_pg_copy_get(cio_pg_t *c, char **buf);

/* ------------------------------------------------------------------------ */
/* Pipeline mode (many small queries, one round trip)                        */
/* ------------------------------------------------------------------------ */

/*
 * Enters pipeline mode (libpq's PQenterPipelineMode): queries are then sent
 * with cio_pg_pipeline_send without waiting for their results, a
 * cio_pg_pipeline_sync ends a segment (a failed query makes the server skip
 * the rest of its segment), and results are read in order with
 * cio_pg_pipeline_result. Not an await point. Returns 0, -EBUSY (another
 * operation or mode in progress), -ENOTCONN, -EINVAL.
 */
CIO_EXTERN int cio_pg_pipeline_enter(cio_pg_t *c);

/*
 * Await point: queues one statement with text parameters (as cio_pg_query).
 * Every 64th statement queued, what libpq holds is sent, waiting while the
 * socket is full (backpressure, reading the server's results meanwhile);
 * the other calls do not wait. Returns 0, -EBUSY when not in pipeline mode,
 * -EINVAL (sql NULL, a bad parameter count), or the codes at the top of
 * this header (on cancellation, as cio_pg_pipeline_result).
 */
CIO_EXTERN int cio_pg_pipeline_send(cio_pg_t *c, const char *sql, int nparams,
                                    const char *const *values);

/*
 * As cio_pg_pipeline_send, for the statement prepared as `name` (with
 * cio_pg_prepare, before entering pipeline mode): the server then skips the
 * parse and plan of each one. -EINVAL for a NULL name; an unknown name is
 * that statement's -EREMOTEIO (26000) from cio_pg_pipeline_result.
 */
CIO_EXTERN int cio_pg_pipeline_send_prepared(cio_pg_t *c, const char *name, int nparams,
                                             const char *const *values);

/*
 * Await point (as cio_pg_pipeline_send): ends the current segment and sends
 * everything queued. Returns 0, -EBUSY when not in pipeline mode, or the
 * codes at the top of this header.
 */
CIO_EXTERN int cio_pg_pipeline_sync(cio_pg_t *c);

/*
 * Await point: the result of the next query sent, in order (sync points are
 * consumed silently). Returns its row count as cio_pg_query (*out as there),
 * -EREMOTEIO when that query failed, -ECONNABORTED when it was skipped
 * because an earlier query of its segment failed (the connection is fine),
 * -ENOENT when no query result is pending (sync points still due are read
 * first, so that cio_pg_pipeline_exit may follow), -EBUSY when not in
 * pipeline mode, -EPROTO for a COPY statement (not supported in a pipeline:
 * the pipeline is given up as on cancellation), or the codes at the top of
 * this header. Queries sent after the last sync are flushed first, with a
 * flush request so that the server sends their results without a sync.
 * The server sends a segment's results when it reaches the segment's end
 * (or its output buffer fills): a slow statement delays the results of the
 * statements before it in its segment, not those of earlier segments. On
 * cancellation the pipeline is cancelled on the server, every pending
 * result drained, and pipeline mode left.
 */
CIO_EXTERN int64_t cio_pg_pipeline_result(cio_pg_t *c, cio_pg_result_t **out);

/*
 * Leaves pipeline mode. Not an await point. Returns 0, -EBUSY when results
 * are still pending (read them first) or when statements were sent since
 * the last cio_pg_pipeline_sync (their segment is still open and would not
 * be committed: sync, read on until -ENOENT, then leave), -ENOTCONN when the
 * connection is lost (found lost now, or broken by an earlier call),
 * -EINVAL for NULL; 0 also when not in pipeline mode.
 */
CIO_EXTERN int cio_pg_pipeline_exit(cio_pg_t *c);

/* ------------------------------------------------------------------------ */
/* LISTEN / NOTIFY                                                           */
/* ------------------------------------------------------------------------ */

/* A notification, with its strings; freed with cio_pg_notify_free. */
typedef struct cio_pg_notify {
    const char *channel;
    const char *payload; /* "" when none was given */
    int pid;             /* the notifying server process */
} cio_pg_notify_t;

/*
 * Await points: LISTEN / UNLISTEN on a channel (quoted as an identifier, so
 * any name works, case included; channel NULL in cio_pg_unlisten means
 * every channel). Return 0 or the codes at the top of this header; -EINVAL
 * also for a channel of 0 or more than 63 bytes (PostgreSQL would cut a
 * longer name short) or with a multibyte character cut short (other bytes
 * not valid in the encoding: the server's -EREMOTEIO, 22021).
 */
CIO_EXTERN int cio_pg_listen(cio_pg_t *c, const char *channel);
CIO_EXTERN int cio_pg_unlisten(cio_pg_t *c, const char *channel);

/*
 * Await point: NOTIFY channel with payload (NULL: none), through
 * pg_notify(). Delivered when the surrounding transaction commits (at once
 * outside one; never for one rolled back). Returns 0 or the codes at the
 * top of this header: -EINVAL for a channel as in cio_pg_listen,
 * -EREMOTEIO (22023) for a payload of 8000 bytes or more.
 */
CIO_EXTERN int cio_pg_notify(cio_pg_t *c, const char *channel, const char *payload);

/*
 * Await point: the next notification for a channel c listens on, waiting at
 * most timeout seconds (INFINITY: no limit; 0: only what has arrived).
 * Notifications that arrived while c ran other statements are kept and
 * returned first, in order: none is lost while the listener is busy.
 * Returns 0 and *out (free with cio_pg_notify_free), -ETIMEDOUT when none
 * came in time, -EAGAIN for timeout 0 with none pending, -EINVAL (out NULL,
 * a negative or NaN timeout), -ENOMEM (the notification stays for the next
 * call), or the codes at the top of this header (-ECONNRESET when the
 * server goes away while waiting; -ETIMEDOUT also for an enclosing scope's
 * deadline). A cancelled or expired wait leaves the connection as it was:
 * no statement runs while it waits.
 */
CIO_EXTERN int cio_pg_wait_notify(cio_pg_t *c, cio_pg_notify_t **out, double timeout);

/* Frees a notification. NULL is a no-op. */
CIO_EXTERN void cio_pg_notify_free(cio_pg_notify_t *n);

/* ------------------------------------------------------------------------ */
/* Connection pool                                                           */
/* ------------------------------------------------------------------------ */

/*
 * A bounded pool of connections shared by the tasks of one loop (like every
 * cio object without _threadsafe in its name, it is not thread-safe). A task
 * takes a connection with cio_pg_pool_acquire, uses it alone, and gives it
 * back with cio_pg_pool_release; it must not cio_pg_close it. A connection
 * keeps its session state from one user to the next (prepared statements,
 * SET, LISTEN, temporary tables), except an open transaction, which is
 * rolled back. Taking an idle connection when no task waits, and giving it
 * back, do not allocate.
 *
 * An idle connection is checked when taken, without a round trip: if it has
 * been idle for 1 ms or more, poll() tells whether the server sent anything
 * meanwhile (a server that goes away first sends a FATAL error, then closes
 * the connection); if it did, libpq reads it, and an empty statement makes
 * sure the connection is still up. A connection lost unnoticed (a server
 * gone within the last millisecond, a network cut without a word) gives
 * the task that takes it -ECONNRESET from its first call, as a loss during a
 * call would; given back, it is closed and its slot opens a new one.
 */
typedef struct cio_pg_pool cio_pg_pool_t;

typedef struct cio_pg_pool_opts {
    unsigned max_size;      /* most connections open at once (0: 10) */
    double connect_timeout; /* each new connection's deadline (0: 10 s) */
    double cancel_timeout;  /* given to each connection (0: 2 s) */
    unsigned reserved_[6];  /* must be zero */
} cio_pg_pool_opts_t;

/*
 * Creates a bounded pool of connections to conninfo (as cio_pg_connect).
 * Connections are opened on demand, up to max_size. Not an await point;
 * opts NULL takes the defaults. Returns 0 and *out (free with
 * cio_pg_pool_free), -EINVAL (out or conninfo NULL, a malformed conninfo,
 * reserved_ not zero, a negative or NaN time, max_size above INT_MAX),
 * -ENOMEM.
 */
CIO_EXTERN int cio_pg_pool_new(cio_pg_pool_t **out, const char *conninfo,
                               const cio_pg_pool_opts_t *opts);

/*
 * Await point: takes a connection, waiting at most timeout seconds
 * (INFINITY: no limit) for one to be free, and opening one when the pool is
 * below max_size. A connection found broken while idle is replaced; one
 * given back inside a transaction is rolled back first (replaced if that
 * fails). Waiters are served in FIFO order; a waiter that gives up
 * (deadline, cancellation) takes nothing with it. The timeout bounds the
 * whole call, the opening of a new connection included (which is also
 * bounded by connect_timeout); timeout 0, like a deadline already passed,
 * gives -ETIMEDOUT at once. Returns 0 and *out (give it back with
 * cio_pg_pool_release), -ETIMEDOUT, -ECANCELED, -ECONNREFUSED (a new
 * connection failed, cio_pg_connect_error() says why; its slot is free again
 * and the next acquire tries again), -ESHUTDOWN (the pool is closed, or was
 * closed while the task waited), -EINVAL (p or out NULL, NaN timeout),
 * -ENOMEM, -EPERM (outside a task). *out is NULL on failure.
 */
CIO_EXTERN int cio_pg_pool_acquire(cio_pg_pool_t *p, cio_pg_t **out, double timeout);

/*
 * Gives a connection back. Not an await point. A broken connection, or one
 * left in COPY or pipeline mode, is closed (its slot freed for a new one); one
 * left inside a transaction is rolled back by the next acquire. Returns 0,
 * -EINVAL (NULL, or c not taken from p), -EBUSY (a task is inside an
 * operation on c).
 */
CIO_EXTERN int cio_pg_pool_release(cio_pg_pool_t *p, cio_pg_t *c);

/*
 * Closes the pool: later acquires and the tasks waiting in one get
 * -ESHUTDOWN, idle connections are closed now and taken ones when released.
 * Not an await point. Returns 0; NULL is a no-op.
 */
CIO_EXTERN int cio_pg_pool_close(cio_pg_pool_t *p);

/*
 * Closes (if not yet) and frees the pool. Not an await point. Returns 0, or
 * -EBUSY (and does nothing) while connections are taken or tasks are inside
 * cio_pg_pool_acquire (after a close, those return once they run again).
 * NULL is a no-op.
 */
CIO_EXTERN int cio_pg_pool_free(cio_pg_pool_t *p);

/* Connections open (idle + taken), and idle ones. 0 for NULL. */
CIO_EXTERN unsigned cio_pg_pool_size(const cio_pg_pool_t *p);
CIO_EXTERN unsigned cio_pg_pool_idle(const cio_pg_pool_t *p);

/* The conninfo the pool connects with (a copy it owns); NULL for NULL. */
CIO_EXTERN const char *cio_pg_pool_conninfo(const cio_pg_pool_t *p);

/* ------------------------------------------------------------------------ */
/* Distributed task queue                                                    */
/* ------------------------------------------------------------------------ */

/* Section owned by the queue (pg/queue.c, pg/worker.c). */

/*
 * A queue of jobs kept in one table of the database (cio_jobs, in the first
 * schema of the search_path), run by workers in any number of processes on
 * any number of machines. Producers enqueue jobs (bytes, a queue name, a
 * priority, a run-at time or delay, an optional idempotency key); a worker
 * claims one with SELECT ... FOR UPDATE SKIP LOCKED (so workers never wait
 * on each other and no job is claimed twice at once), holds it under a
 * lease, runs the handler, and records the outcome. Idle workers sleep on
 * LISTEN/NOTIFY and on the next due time: no busy polling.
 *
 * The guarantee. Every job enqueued by a committed transaction is run until
 * it is recorded done or dead, whatever happens to workers: a worker that
 * dies mid-job (SIGKILL, a lost machine, a lost connection) loses nothing,
 * because its lease expires and another worker claims the job again. So:
 *
 *  - the handler runs AT LEAST ONCE per job, and may run more than once: a
 *    second time after a lease was lost (the first worker died, or stalled
 *    past its lease) or after a failure (retries);
 *  - the completion is recorded EXACTLY ONCE: each claim increments the
 *    job's attempt number, which is its fencing token, and the completion
 *    is written only where the job is still running under the same token.
 *    A worker whose lease was lost has its completion refused (counted in
 *    cio_pgq_stats_t.stale) and the job's record is left to the worker that
 *    holds it now.
 *
 * What a handler must do for it: be idempotent (running it twice for the
 * same job must do no harm: key external effects on cio_pgq_job_id), or
 * write its effects on the database in the completion transaction, through
 * the worker's on_complete hook, which runs only for the completion that is
 * recorded (exactly-once effects). A handler must also return within its
 * lease or let the worker renew it (the default): renewal is fenced too.
 */

/* A job's state (cio_pgq_outcome_t.state, cio_pgq_count). */
#define CIO_PGQ_QUEUED 0  /* waiting to run (or to be retried) */
#define CIO_PGQ_RUNNING 1 /* claimed by a worker, under a lease */
#define CIO_PGQ_DONE 2    /* completed: the result is recorded */
#define CIO_PGQ_DEAD 3    /* failed on its last attempt: the error is recorded */

/* Limits checked by every call: a queue name is 1..200 bytes, an
 * idempotency key 1..1000 bytes, a payload or result at most 512 MiB. */
#define CIO_PGQ_MAX_NAME 200
#define CIO_PGQ_MAX_KEY 1000
#define CIO_PGQ_MAX_PAYLOAD ((size_t)512 << 20)

/*
 * Await point: creates the queue's schema in c's database, or upgrades it to
 * this version of cio-pg, under a transaction-scoped advisory lock (so that
 * any number of processes may call it at once, and one that finds it in
 * place only reads a version number). Idempotent: call it at every start.
 * c must not be inside a transaction. Returns 0, -EBUSY (c is inside a
 * transaction, or busy), -EPROTO (the database holds a newer schema than
 * this cio-pg knows), or the codes at the top of this header (-EREMOTEIO:
 * no privilege to create tables, ...); on failure nothing is changed.
 */
CIO_EXTERN int cio_pgq_install(cio_pg_t *c);

/* Options of cio_pgq_enqueue. Zero-initialise and set what you need. */
typedef struct cio_pgq_enqueue_opts {
    int priority;         /* higher runs first; equal priorities by due time */
    int max_attempts;     /* runs before the job is dead (0: 5; at most 1000000) */
    double delay;         /* seconds from now before it may run (0: at once) */
    double run_at;        /* or an absolute time, Unix seconds (0: use delay) */
    double backoff;       /* retry n waits backoff * 2^(n-1) s, at most 1 h
                             (0: 1 s; at most 3600) */
    const char *idem_key; /* idempotency key: one job per (queue, key); NULL: none */
    unsigned reserved_[4]; /* must be zero */
} cio_pgq_enqueue_opts_t;

/*
 * Await point: enqueues a job on `queue` with len bytes of payload (binary;
 * payload may be NULL when len is 0), and notifies idle workers (delivered
 * when the enclosing transaction commits). c may be inside the caller's own
 * transaction: the job then exists only if that transaction commits
 * (transactional enqueue). Returns 0 for a new job, 1 when opts->idem_key
 * names a job already enqueued on this queue (nothing is changed, whatever
 * its state); *id (when id is not NULL) receives the job's id, 0 on failure.
 * Errors: -EINVAL (c or queue NULL, a queue name or key empty or too long,
 * payload NULL with len > 0, len above CIO_PGQ_MAX_PAYLOAD, a negative, NaN
 * or infinite time, both delay and run_at given, max_attempts out of range,
 * backoff above 3600, reserved_ not zero), -EAGAIN (the job holding the key
 * was not visible to the transaction: retry it), -ENOMEM, and the codes at
 * the top of this header (-EREMOTEIO 42P01 when cio_pgq_install was never
 * run; an out-of-range error for a delay or run_at beyond the server's
 * dates).
 */
CIO_EXTERN int cio_pgq_enqueue(cio_pg_t *c, int64_t *id, const char *queue,
                               const void *payload, size_t len,
                               const cio_pgq_enqueue_opts_t *opts);

/*
 * Await point: enqueues n jobs in one statement (one round trip): job i has
 * lens[i] bytes from payloads[i], and everything else from opts, which must
 * not name an idempotency key (-EINVAL). The jobs are one transaction's:
 * all or none. ids (when not NULL) receives job i's id in ids[i]. Returns n
 * (0 for n 0, without talking to the server), or the errors of
 * cio_pgq_enqueue (-EINVAL also for payloads or lens NULL with n > 0, a
 * payload NULL with its length > 0, a total above CIO_PGQ_MAX_PAYLOAD, n
 * above 1000000); ids is left unspecified on failure.
 */
CIO_EXTERN int64_t cio_pgq_enqueue_batch(cio_pg_t *c, int64_t *ids, const char *queue,
                                         size_t n, const void *const *payloads,
                                         const size_t *lens,
                                         const cio_pgq_enqueue_opts_t *opts);

/* A job's recorded state (cio_pgq_status, cio_pgq_wait). */
typedef struct cio_pgq_outcome {
    int state;          /* CIO_PGQ_* */
    int attempts;       /* runs so far (claims) */
    void *result;       /* the result the handler set, NULL when none (malloc) */
    size_t result_len;  /* its length */
    char *error;        /* the last failure's message, NULL when none (malloc) */
    void *reserved_[2];
} cio_pgq_outcome_t;

/* Frees what an outcome holds and zeroes it. NULL is a no-op. */
CIO_EXTERN void cio_pgq_outcome_clear(cio_pgq_outcome_t *o);

/*
 * Await point: reads job id's state, attempts, result and error. Returns 0
 * and fills *out (its buffers are the caller's: cio_pgq_outcome_clear), or
 * -ENOENT (no such job), -EINVAL (c or out NULL), -ENOMEM, and the codes at
 * the top of this header. *out is zeroed on failure.
 */
CIO_EXTERN int cio_pgq_status(cio_pg_t *c, int64_t id, cio_pgq_outcome_t *out);

/*
 * Await point: waits at most timeout seconds (INFINITY: no limit) for job id
 * to be done or dead, and returns its outcome as cio_pgq_status (test
 * out->state). It takes one connection of the pool for the whole wait,
 * LISTENs on the completion channel, and checks the job after every
 * notification that names it: it does not poll. Returns 0, -ETIMEDOUT,
 * -ENOENT (no such job), -EINVAL (p or out NULL, NaN timeout), the errors of
 * cio_pg_pool_acquire, and the codes at the top of this header. *out is
 * zeroed on failure. The connection goes back to the pool unlistened, with
 * no notification kept; one that cannot be cleaned (memory ran out, the
 * server did not answer within 5 s) is closed by the pool instead, the
 * outcome still returned.
 */
CIO_EXTERN int cio_pgq_wait(cio_pg_pool_t *p, int64_t id, double timeout,
                            cio_pgq_outcome_t *out);

/*
 * Await point: the number of jobs of `queue` in `state` (CIO_PGQ_*, or -1 for
 * every state). Returns the count (>= 0), -EINVAL (c or queue NULL, state
 * out of range), or the codes at the top of this header.
 */
CIO_EXTERN int64_t cio_pgq_count(cio_pg_t *c, const char *queue, int state);

/* A claimed job, as a handler sees it. Valid during the handler's call and
 * the on_complete hook's; owned by the worker. */
typedef struct cio_pgq_job cio_pgq_job_t;

/* The job's fields, owned by the worker (valid as the job is). Not await
 * points; a NULL job gives 0, or NULL for the pointers. */
CIO_EXTERN int64_t cio_pgq_job_id(const cio_pgq_job_t *j);
CIO_EXTERN const char *cio_pgq_job_queue(const cio_pgq_job_t *j);
/* The payload's bytes (followed by a NUL byte not counted in the length). */
CIO_EXTERN const void *cio_pgq_job_payload(const cio_pgq_job_t *j);
CIO_EXTERN size_t cio_pgq_job_length(const cio_pgq_job_t *j);
/* This run's number, 1 for the first: the fencing token. */
CIO_EXTERN int cio_pgq_job_attempt(const cio_pgq_job_t *j);
CIO_EXTERN int cio_pgq_job_max_attempts(const cio_pgq_job_t *j);

/*
 * Sets the result stored with the completion (copied; replaces an earlier
 * one; the worker frees it). Not an await point. Returns 0, -EINVAL (j
 * NULL, data NULL with len > 0, len above CIO_PGQ_MAX_PAYLOAD), -ENOMEM.
 */
CIO_EXTERN int cio_pgq_job_set_result(cio_pgq_job_t *j, const void *data, size_t len);

/*
 * Sets the error message stored when the handler fails (copied; replaces
 * an earlier one; without it a failure stores "handler failed: " and
 * cio_err_name of the handler's return, e.g. "handler failed: EIO"). Not
 * an await point. Returns 0, -EINVAL (j or msg NULL), -ENOMEM.
 */
CIO_EXTERN int cio_pgq_job_set_error(cio_pgq_job_t *j, const char *msg);

/*
 * A handler runs one job in a task of its own: it returns >= 0 for success
 * (the job is completed with the result set, if any), or a negative code for
 * failure (the job is retried after its backoff, or is dead after its last
 * attempt). It may await anything; it must not keep j.
 */
typedef int (*cio_pgq_handler_fn)(cio_pgq_job_t *j, void *arg);

/*
 * Runs inside the completion's transaction, on conn, after the fenced update
 * recorded the completion: what it writes commits with it, or not at all.
 * Returns >= 0 to commit; a negative code rolls the transaction back, and
 * the job counts as failed (retried, or dead), with the message
 * "on_complete: <its code>".
 */
typedef int (*cio_pgq_complete_fn)(cio_pg_t *conn, cio_pgq_job_t *j, void *arg);

/* A worker's counters, updated as it runs (cio_pgq_worker_opts_t.stats). */
typedef struct cio_pgq_stats {
    uint64_t claimed;   /* jobs claimed and run */
    uint64_t completed; /* completions recorded */
    uint64_t failed;    /* failures recorded (retried later, or dead) */
    uint64_t dead;      /* jobs that became dead here */
    uint64_t stale;     /* outcomes refused: the lease had been lost */
    uint64_t renewed;   /* lease renewals */
    uint64_t released;  /* jobs given back unrun (shutdown; a handler
                           task that could not be started) */
    uint64_t errors;    /* database errors retried (connection lost, ...) */
    uint64_t reserved_[4];
} cio_pgq_stats_t;

/* cio_pgq_worker_opts_t.flags: do not renew leases (a handler that outlives
 * its lease loses the job; for tests and strict time limits). */
#define CIO_PGQ_NO_RENEW 1u

/* Options of cio_pgq_work. Zero-initialise and set the queue. */
typedef struct cio_pgq_worker_opts {
    const char *queue;            /* required */
    unsigned concurrency;         /* handlers run at once (0: 1; at most 1024) */
    unsigned flags;               /* CIO_PGQ_NO_RENEW */
    double lease;                 /* seconds a claim holds a job (0: 30; at least 0.1) */
    double shutdown_grace;        /* seconds handlers may finish at shutdown (0: 10) */
    const char *worker_id;        /* recorded with claims (NULL: "host:pid") */
    cio_pgq_complete_fn on_complete; /* NULL: none */
    cio_pgq_stats_t *stats;       /* NULL: none; else zeroed, then updated */
    void *reserved_[4];           /* must be zero */
} cio_pgq_worker_opts_t;

/*
 * Await point: runs a worker on p's database until the calling task is
 * cancelled (or the deadline of an enclosing scope passes). Up to
 * opts->concurrency handlers run at once, each in a task of its own, with
 * fn(job, arg). Connections come from p for each claim and outcome (briefly;
 * p's max_size should be at least concurrency + 1 for full speed), plus one
 * connection of its own (cio_pg_pool_conninfo) that LISTENs for new jobs.
 * Database errors (a server restart, a lost connection) are counted and
 * retried with a backoff: a worker outlives its database's outages.
 *
 * Shutdown, when the caller is cancelled: no new job is claimed; running
 * handlers may finish within opts->shutdown_grace seconds (their outcomes
 * are recorded); those still running then are cancelled and their jobs
 * released (queued again at once; the attempt does not count against
 * max_attempts, which goes up by one, but its number is never given out
 * again: it is the fencing token); then it
 * returns -ECANCELED (-ETIMEDOUT for a deadline). A job whose release could
 * not be written (the database was unreachable) comes back after its lease.
 *
 * Returns only on shutdown or on a fatal error: -EINVAL (p, opts, queue or
 * fn NULL, a name too long, a time negative, NaN or (lease) infinite, a
 * lease under 0.1 s, concurrency above 1024, unknown flags, reserved_ not zero), -ESHUTDOWN
 * (p was closed), -ENOMEM (at start), -EPERM (outside a task). In those
 * cases too, running handlers are shut down as above first.
 */
CIO_EXTERN int cio_pgq_work(cio_pg_pool_t *p, const cio_pgq_worker_opts_t *opts,
                            cio_pgq_handler_fn fn, void *arg);

#ifdef __cplusplus
}
#endif

#endif /* CIO_PG_H */
