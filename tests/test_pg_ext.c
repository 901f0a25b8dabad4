/*
 * cio-pg's COPY, pipeline mode and LISTEN/NOTIFY (include/cio-pg.h), against
 * a real server (tests/cio_pg_test.h).
 *
 * Covered: COPY IN of 100,000 rows in odd-sized pieces; a malformed row, an
 * abort with a message, a producer cancelled mid-stream (in its own await,
 * and inside cio_pg_copy_put while the server stalls), a deadline while the
 * COPY waits for a lock, each keeping nothing and leaving the connection
 * usable; COPY OUT of 100,000 rows read back and
 * checked, and cancelled mid-way; calls in the wrong mode (-EBUSY) and
 * statements that are not the COPY asked for (-EPROTO). Pipelines of 1,000
 * and of 100,000 statements (more than the socket buffers hold) checked in
 * order, with and without a sync before reading; an
 * error mid-segment (-EREMOTEIO, then -ECONNABORTED for the rest of the
 * segment, the next segment fine and the failed one rolled back); -ENOENT,
 * -EBUSY on exit; a pipeline cancelled while a result is awaited. LISTEN and
 * NOTIFY between two connections; a notification sent while the listener
 * runs a long statement is kept; timeouts (-ETIMEDOUT, -EAGAIN for 0) and
 * cancellation of a wait; quoted and odd channel names and payloads; the
 * listener terminated by the server (-ECONNRESET); allocation failure of
 * the notification's copy and of LISTEN's statement. Also: the server
 * ending a COPY IN early (a malformed row) while pieces are still put; a
 * task already cancelled sends nothing through cio_pg_copy_put or the
 * pipeline calls (the COPY or pipeline aborted); the connection lost in the
 * middle of a COPY IN, a COPY OUT and a pipeline (-ECONNRESET, then
 * -ENOTCONN); 300 notifications of the largest payload queued unread.
 *
 * Tables are TEMP (one session's, gone with it) and channels carry the
 * test process's pid, since every test program runs twice against the same
 * server. The allocation checks wrap malloc with ld's --wrap
 * (tests/CMakeLists.txt: CIO_TEST_LINK_OPTIONS_test_pg_ext), which reaches
 * cio-pg's own allocations but not libpq's (a shared library).
 */
#define CIO_PG_TEST_WRAP_ALLOC /* cio_pg_test.h's malloc wrappers */
#include "cio_pg_test.h"
#include "cio_test.h"

#include <cio-pg.h>
#include <libpq-fe.h>

/* ------------------------------------------------------------------------ */
/* Helpers (and cio_pg_test.h's: connections, the malloc wrapper)            */
/* ------------------------------------------------------------------------ */

/* The connection is idle and runs statements. */
static void assert_usable(cio_pg_t *c)
{
    ck_assert_int_eq(cio_pg_status(c), CIO_PG_IDLE);
    ck_assert_int_eq(cio_pg_test_int(c, "SELECT 41 + 1", NULL), 42);
    ck_assert_int_eq(cio_pg_status(c), CIO_PG_IDLE);
}

/*
 * Waits until the server process `pid` sleeps in pg_sleep, as seen from
 * another connection. A cancel request that reaches a server process while
 * it reads its next command is ignored (PostgreSQL's rule), so a test that
 * cancels a statement waits until the statement surely runs.
 */
static void wait_sleeping(cio_pg_t *other, int pid)
{
    char v[16];
    snprintf(v, sizeof v, "%d", pid);
    const char *values[1] = {v};
    for (int i = 0; i < 500; i++) {
        int64_t n = cio_pg_query(other, NULL,
                                 "SELECT 1 FROM pg_stat_activity WHERE pid = $1::int "
                                 "AND wait_event = 'PgSleep'",
                                 1, values);
        ck_assert_int_ge(n, 0);
        if (n == 1)
            return;
        ck_assert_int_eq(cio_sleep(0.01), 0);
    }
    ck_abort_msg("server process %d never got to pg_sleep", pid);
}

static double secs_since(int64_t t0)
{
    return (double)(loop_ns() - t0) / 1e9;
}

#define ROWS 100000

/* "i\tv<i>\n" for i in 1..ROWS; *len gets the length. */
static char *make_rows(size_t *len)
{
    size_t cap = (size_t)ROWS * 24, used = 0;
    char *buf = malloc(cap);
    ck_assert_ptr_nonnull(buf);
    for (int i = 1; i <= ROWS; i++)
        used += (size_t)snprintf(buf + used, cap - used, "%d\tv%d\n", i, i);
    *len = used;
    return buf;
}

/* ------------------------------------------------------------------------ */
/* COPY IN                                                                   */
/* ------------------------------------------------------------------------ */

static int main_copy_in_big(void *arg, void **result)
{
    (void)arg, (void)result;
    cio_pg_t *c = cio_pg_test_connect();
    cio_pg_test_exec(c, "CREATE TEMP TABLE t (i int PRIMARY KEY, s text NOT NULL)");
    size_t len;
    char *rows = make_rows(&len);

    ck_assert_int_eq(cio_pg_copy_in(c, "COPY t (i, s) FROM STDIN"), 0);
    ck_assert_int_eq(cio_pg_status(c), CIO_PG_ACTIVE);
    /* Odd sizes, so that rows and even characters span pieces; 0 is a
     * no-op. */
    static const size_t sizes[] = {1, 0, 3, 17, 4093, 65537, 333, 2, 131101};
    size_t off = 0;
    for (unsigned k = 0; off < len; k++) {
        size_t n = sizes[k % (sizeof sizes / sizeof sizes[0])];
        if (n > len - off)
            n = len - off;
        ck_assert_int_eq(cio_pg_copy_put(c, rows + off, n), 0);
        off += n;
    }
    ck_assert_int_eq(cio_pg_copy_end(c, NULL), ROWS);
    ck_assert_int_eq(cio_pg_status(c), CIO_PG_IDLE);

    ck_assert_int_eq(cio_pg_test_int(c, "SELECT count(*) FROM t", NULL), ROWS);
    ck_assert_int_eq(cio_pg_test_int(c, "SELECT sum(i) FROM t", NULL),
                     (long long)ROWS * (ROWS + 1) / 2);
    ck_assert_int_eq(cio_pg_test_int(c, "SELECT count(*) FROM t WHERE s <> 'v' || i", NULL), 0);
    free(rows);
    ck_assert_int_eq(cio_pg_close(c), 0);
    return 0;
}

START_TEST(copy_in_big)
{
    RUN_MAIN(main_copy_in_big, NULL);
}
END_TEST

static int main_copy_in_bad(void *arg, void **result)
{
    (void)arg, (void)result;
    cio_pg_t *c = cio_pg_test_connect();
    cio_pg_test_exec(c, "CREATE TEMP TABLE t (i int, s text)");

    /* A malformed row: the error, and nothing of the COPY kept. */
    ck_assert_int_eq(cio_pg_copy_in(c, "COPY t FROM STDIN"), 0);
    const char *data = "1\ta\nzz\tb\n3\tc\n";
    ck_assert_int_eq(cio_pg_copy_put(c, data, strlen(data)), 0);
    ck_assert_int_eq(cio_pg_copy_end(c, NULL), -EREMOTEIO);
    ck_assert_str_eq(cio_pg_error_sqlstate(c), "22P02");
    ck_assert_ptr_nonnull(strstr(cio_pg_error_message(c), "zz"));
    ck_assert_int_eq(cio_pg_test_int(c, "SELECT count(*) FROM t", NULL), 0);
    assert_usable(c);

    /* Aborted with a message: 57014, the message in the server's text. */
    ck_assert_int_eq(cio_pg_copy_in(c, "COPY t FROM STDIN"), 0);
    data = "1\ta\n2\tb\n";
    ck_assert_int_eq(cio_pg_copy_put(c, data, strlen(data)), 0);
    ck_assert_int_eq(cio_pg_copy_end(c, "stopped by 'the' test"), -EREMOTEIO);
    ck_assert_str_eq(cio_pg_error_sqlstate(c), "57014");
    ck_assert_ptr_nonnull(strstr(cio_pg_error_message(c), "stopped by 'the' test"));
    ck_assert_int_eq(cio_pg_test_int(c, "SELECT count(*) FROM t", NULL), 0);
    assert_usable(c);

    /* A row cut short at the end: the server's error, nothing kept. */
    ck_assert_int_eq(cio_pg_copy_in(c, "COPY t FROM STDIN"), 0);
    data = "1\ta\n2";
    ck_assert_int_eq(cio_pg_copy_put(c, data, strlen(data)), 0);
    ck_assert_int_eq(cio_pg_copy_end(c, NULL), -EREMOTEIO);
    ck_assert_int_eq(cio_pg_test_int(c, "SELECT count(*) FROM t", NULL), 0);

    /* An empty COPY copies 0 rows. */
    ck_assert_int_eq(cio_pg_copy_in(c, "COPY t FROM STDIN"), 0);
    ck_assert_int_eq(cio_pg_copy_end(c, NULL), 0);
    assert_usable(c);
    ck_assert_int_eq(cio_pg_close(c), 0);
    return 0;
}

START_TEST(copy_in_errors)
{
    RUN_MAIN(main_copy_in_bad, NULL);
}
END_TEST

/*
 * The server ends a COPY IN with an error while the producer still puts
 * (a malformed row; the server then discards what follows): libpq leaves
 * COPY IN when it reads the error, and refuses the next piece. That is the
 * server's -EREMOTEIO (22P02), the connection idle and usable (not
 * -ENOMEM, not a connection given up), whichever call sees it first.
 */
static int main_copy_in_early_error(void *arg, void **result)
{
    (void)arg, (void)result;
    cio_pg_t *c = cio_pg_test_connect();
    cio_pg_test_exec(c, "CREATE TEMP TABLE t (i int)");
    size_t len = (size_t)4 << 20;
    char *big = malloc(len);
    ck_assert_ptr_nonnull(big);
    for (size_t i = 0; i < len; i += 2)
        memcpy(big + i, "1\n", 2);

    ck_assert_int_eq(cio_pg_copy_in(c, "COPY t FROM STDIN"), 0);
    ck_assert_int_eq(cio_pg_copy_put(c, "x\n", 2), 0);
    /* The server's error has arrived. */
    ck_assert_int_eq(cio_wait_fd(PQsocket(cio_pg_pq(c)), CIO_READABLE), CIO_READABLE);
    int rc = 0;
    for (int i = 0; i < 8 && rc == 0; i++)
        rc = cio_pg_copy_put(c, big, len);
    if (rc == 0) {
        ck_assert_int_eq(cio_pg_copy_end(c, NULL), -EREMOTEIO);
    } else {
        ck_assert_int_eq(rc, -EREMOTEIO);
        ck_assert_int_eq(cio_pg_copy_end(c, NULL), -EBUSY);
    }
    ck_assert_str_eq(cio_pg_error_sqlstate(c), "22P02");
    assert_usable(c);
    ck_assert_int_eq(cio_pg_test_int(c, "SELECT count(*) FROM t", NULL), 0);
    free(big);
    ck_assert_int_eq(cio_pg_close(c), 0);
    return 0;
}

START_TEST(copy_in_early_error)
{
    RUN_MAIN(main_copy_in_early_error, NULL);
}
END_TEST

/* A producer that copies rows piece by piece, awaiting between pieces (as
 * one reading its rows from elsewhere would). */
typedef struct producer {
    cio_pg_t *c;
    cio_event_t started;
    int put_rc, wait_rc;
    int64_t end_rc;
    bool in_put;
} producer_t;

static int producer_body(void *arg, void **result)
{
    (void)result;
    producer_t *p = arg;
    ck_assert_int_eq(cio_pg_copy_in(p->c, "COPY t FROM STDIN"), 0);
    char line[32];
    for (int i = 1;; i++) {
        int n = snprintf(line, sizeof line, "%d\tx\n", i);
        p->put_rc = cio_pg_copy_put(p->c, line, (size_t)n);
        if (p->put_rc < 0)
            return 0;
        if (i == 100)
            cio_event_set(&p->started);
        p->wait_rc = cio_sleep(0.001);
        if (p->wait_rc < 0)
            break;
    }
    /* Cancelled in its own await: aborting the COPY is cleanup, which runs
     * in the cancelled task. */
    p->end_rc = cio_pg_copy_end(p->c, "producer cancelled");
    return 0;
}

static int main_copy_in_cancel(void *arg, void **result)
{
    (void)arg, (void)result;
    cio_pg_t *c = cio_pg_test_connect();
    cio_pg_test_exec(c, "CREATE TEMP TABLE t (i int, s text)");
    producer_t p = {.c = c};
    cio_event_init(&p.started);
    cio_task_t *t = spawn(producer_body, &p);
    ck_assert_int_eq(cio_event_wait(&p.started), 0);
    ck_assert_int_eq(cio_task_cancel(t), 1);
    ck_assert_int_eq(finish(t), 0);
    ck_assert_int_eq(p.put_rc, 0);
    ck_assert_int_eq(p.wait_rc, -ECANCELED);
    ck_assert_int_eq(p.end_rc, -EREMOTEIO);
    ck_assert_str_eq(cio_pg_error_sqlstate(c), "57014");
    ck_assert_int_eq(cio_pg_test_int(c, "SELECT count(*) FROM t", NULL), 0);
    assert_usable(c);
    ck_assert_int_eq(cio_pg_close(c), 0);
    return 0;
}

START_TEST(copy_in_cancel)
{
    RUN_MAIN(main_copy_in_cancel, NULL);
}
END_TEST

/* A producer whose cio_pg_copy_put waits: the server stalls on row 10 (a
 * trigger sleeps), so the socket fills up. */
static int stalled_producer(void *arg, void **result)
{
    (void)result;
    producer_t *p = arg;
    ck_assert_int_eq(cio_pg_copy_in(p->c, "COPY t FROM STDIN"), 0);
    size_t cap = 1 << 20;
    char *chunk = malloc(cap);
    ck_assert_ptr_nonnull(chunk);
    size_t used = 0;
    for (int i = 1; used + 32 < cap; i++)
        used += (size_t)snprintf(chunk + used, cap - used, "%d\tx\n", i);
    cio_event_set(&p->started);
    /* 256 MiB at most: far more than the socket buffers hold. */
    for (int k = 0; k < 256; k++) {
        p->in_put = true;
        p->put_rc = cio_pg_copy_put(p->c, chunk, used);
        p->in_put = false;
        if (p->put_rc < 0)
            break;
    }
    free(chunk);
    return 0;
}

static int main_copy_in_cancel_put(void *arg, void **result)
{
    (void)arg, (void)result;
    cio_pg_t *c = cio_pg_test_connect();
    cio_pg_test_exec(c, "CREATE TEMP TABLE t (i int, s text)");
    cio_pg_test_exec(c, "CREATE FUNCTION pg_temp.stall() RETURNS trigger LANGUAGE plpgsql AS "
               "$$BEGIN IF NEW.i = 10 THEN PERFORM pg_sleep(60); END IF; RETURN NEW; END$$");
    cio_pg_test_exec(c, "CREATE TRIGGER stall BEFORE INSERT ON t FOR EACH ROW "
               "EXECUTE FUNCTION pg_temp.stall()");
    producer_t p = {.c = c};
    cio_event_init(&p.started);
    cio_task_t *t = spawn(stalled_producer, &p);
    /* This task runs again only once the producer is suspended: inside
     * cio_pg_copy_put, the socket full. */
    ck_assert_int_eq(cio_event_wait(&p.started), 0);
    ck_assert(p.in_put);
    int64_t t0 = loop_ns();
    ck_assert_int_eq(cio_task_cancel(t), 1);
    ck_assert_int_eq(finish(t), 0);
    ck_assert_int_eq(p.put_rc, -ECANCELED);
    /* Well within the cancel timeout: the server was told to stop. */
    ck_assert_double_lt(secs_since(t0), 1.5);
    ck_assert_int_eq(cio_pg_test_int(c, "SELECT count(*) FROM t", NULL), 0);
    assert_usable(c);
    ck_assert_int_eq(cio_pg_close(c), 0);
    return 0;
}

START_TEST(copy_in_cancel_put)
{
    RUN_MAIN(main_copy_in_cancel_put, NULL);
}
END_TEST

static int main_copy_in_locked(void *arg, void **result)
{
    (void)arg, (void)result;
    cio_pg_t *c = cio_pg_test_connect(), *other = cio_pg_test_connect();
    /* A table another connection holds locked: the COPY waits for the
     * lock before the server even answers cio_pg_copy_in. */
    char sql[160], name[48];
    snprintf(name, sizeof name, "ext_locked_%d", (int)getpid());
    snprintf(sql, sizeof sql, "CREATE TABLE %s (i int)", name);
    cio_pg_test_exec(other, sql);
    ck_assert_int_eq(cio_pg_begin(other), 0);
    snprintf(sql, sizeof sql, "LOCK TABLE %s IN ACCESS EXCLUSIVE MODE", name);
    cio_pg_test_exec(other, sql);
    snprintf(sql, sizeof sql, "COPY %s FROM STDIN", name);
    cio_scope_t s;
    ck_assert_int_eq(cio_scope_enter(&s, D_MED, 0), 0);
    int64_t t0 = loop_ns();
    ck_assert_int_eq(cio_pg_copy_in(c, sql), -ETIMEDOUT);
    ck_assert_int_eq(cio_scope_exit(&s), -ETIMEDOUT);
    ck_assert_int_ge(loop_ns() - t0, NS_MED);
    ck_assert_double_lt(secs_since(t0), 1.5);
    /* The server gave up waiting for the lock; the connection is idle. */
    assert_usable(c);
    ck_assert_int_eq(cio_pg_rollback(other), 0);
    ck_assert_int_eq(cio_pg_copy_in(c, sql), 0);
    ck_assert_int_eq(cio_pg_copy_put(c, "1\n2\n", 4), 0);
    ck_assert_int_eq(cio_pg_copy_end(c, NULL), 2);
    snprintf(sql, sizeof sql, "DROP TABLE %s", name);
    cio_pg_test_exec(other, sql);
    ck_assert_int_eq(cio_pg_close(other), 0);
    ck_assert_int_eq(cio_pg_close(c), 0);
    return 0;
}

START_TEST(copy_in_locked)
{
    RUN_MAIN(main_copy_in_locked, NULL);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* COPY OUT                                                                  */
/* ------------------------------------------------------------------------ */

static int main_copy_out_big(void *arg, void **result)
{
    (void)arg, (void)result;
    cio_pg_t *c = cio_pg_test_connect();
    ck_assert_int_eq(cio_pg_copy_out(c, "COPY (SELECT i, 'r' || i FROM generate_series(1, 100000) i "
                                        "ORDER BY i) TO STDOUT"),
                     0);
    ck_assert_int_eq(cio_pg_status(c), CIO_PG_ACTIVE);
    char want[64];
    int i = 0;
    for (;;) {
        char *row = NOT_SET;
        ssize_t n = cio_pg_copy_get(c, &row);
        if (n == 0) {
            ck_assert_ptr_null(row);
            break;
        }
        ck_assert_int_gt(n, 0);
        i++;
        int w = snprintf(want, sizeof want, "%d\tr%d\n", i, i);
        ck_assert_int_eq(n, w);
        ck_assert_mem_eq(row, want, (size_t)w);
        cio_pg_freemem(row);
    }
    ck_assert_int_eq(i, ROWS);
    /* The end is reported once; the mode is left. */
    char *row = NOT_SET;
    ck_assert_int_eq(cio_pg_copy_get(c, &row), -EBUSY);
    ck_assert_ptr_null(row);
    assert_usable(c);

    /* A COPY OUT that fails on the server mid-way: its error. */
    ck_assert_int_eq(cio_pg_copy_out(c, "COPY (SELECT 10 / (5 - i) FROM generate_series(1, 10) i) "
                                        "TO STDOUT"),
                     0);
    ssize_t n;
    int got = 0;
    while ((n = cio_pg_copy_get(c, &row)) > 0) {
        got++;
        cio_pg_freemem(row);
    }
    ck_assert_int_eq(n, -EREMOTEIO);
    ck_assert_str_eq(cio_pg_error_sqlstate(c), "22012");
    ck_assert_int_le(got, 4);
    assert_usable(c);
    cio_pg_freemem(NULL);
    ck_assert_int_eq(cio_pg_close(c), 0);
    return 0;
}

START_TEST(copy_out_big)
{
    RUN_MAIN(main_copy_out_big, NULL);
}
END_TEST

typedef struct reader {
    cio_pg_t *c;
    cio_event_t started;
    ssize_t rc;
    long rows;
} reader_t;

static int reader_body(void *arg, void **result)
{
    (void)result;
    reader_t *r = arg;
    for (;;) {
        char *row;
        r->rc = cio_pg_copy_get(r->c, &row);
        if (r->rc <= 0)
            return 0;
        cio_pg_freemem(row);
        if (++r->rows == 1)
            cio_event_set(&r->started);
    }
}

static int main_copy_out_cancel(void *arg, void **result)
{
    (void)arg, (void)result;
    cio_pg_t *c = cio_pg_test_connect();
    /* Rows come slowly (half a millisecond each, for ~10 minutes), so the
     * reader waits in cio_pg_copy_get between the server's batches. */
    ck_assert_int_eq(cio_pg_copy_out(c, "COPY (SELECT i, pg_sleep(0.0005) FROM "
                                        "generate_series(1, 1000000) i) TO STDOUT"),
                     0);
    reader_t r = {.c = c};
    cio_event_init(&r.started);
    cio_task_t *t = spawn(reader_body, &r);
    ck_assert_int_eq(cio_event_wait(&r.started), 0);
    int64_t t0 = loop_ns();
    ck_assert_int_eq(cio_task_cancel(t), 1);
    ck_assert_int_eq(finish(t), 0);
    ck_assert_int_eq(r.rc, -ECANCELED);
    ck_assert_int_gt(r.rows, 0);
    ck_assert_double_lt(secs_since(t0), 1.5);
    assert_usable(c);

    /* A deadline is a cancellation too: -ETIMEDOUT, the connection idle.
     * The server may hold its COPY OUT response back until the first row
     * is ready, so the deadline meets cio_pg_copy_out or cio_pg_copy_get. */
    cio_scope_t s;
    ck_assert_int_eq(cio_scope_enter(&s, 0.1, 0), 0);
    int rc = cio_pg_copy_out(c, "COPY (SELECT 'y' FROM pg_sleep(60)) TO STDOUT");
    char *row = NULL;
    if (rc == 0)
        rc = (int)cio_pg_copy_get(c, &row);
    ck_assert_int_eq(rc, -ETIMEDOUT);
    ck_assert_ptr_null(row);
    ck_assert_int_eq(cio_scope_exit(&s), -ETIMEDOUT);
    assert_usable(c);
    ck_assert_int_eq(cio_pg_close(c), 0);
    return 0;
}

START_TEST(copy_out_cancel)
{
    RUN_MAIN(main_copy_out_cancel, NULL);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Wrong modes and wrong statements                                          */
/* ------------------------------------------------------------------------ */

static int main_copy_modes(void *arg, void **result)
{
    (void)arg, (void)result;
    cio_pg_t *c = cio_pg_test_connect();
    cio_pg_test_exec(c, "CREATE TEMP TABLE t (i int)");
    char *row = NOT_SET;

    /* No COPY in progress. */
    ck_assert_int_eq(cio_pg_copy_put(c, "1\n", 2), -EBUSY);
    ck_assert_int_eq(cio_pg_copy_end(c, NULL), -EBUSY);
    ck_assert_int_eq(cio_pg_copy_get(c, &row), -EBUSY);
    ck_assert_ptr_null(row);

    /* Statements that are not the COPY asked for: -EPROTO, the statement
     * ended, the connection idle. */
    ck_assert_int_eq(cio_pg_copy_in(c, "SELECT 1"), -EPROTO);
    assert_usable(c);
    ck_assert_int_eq(cio_pg_copy_in(c, "COPY t TO STDOUT"), -EPROTO);
    assert_usable(c);
    ck_assert_int_eq(cio_pg_copy_out(c, "COPY t FROM STDIN"), -EPROTO);
    assert_usable(c);
    ck_assert_int_eq(cio_pg_copy_out(c, "INSERT INTO t VALUES (1)"), -EPROTO);
    ck_assert_int_eq(cio_pg_test_int(c, "SELECT count(*) FROM t", NULL), 1);
    ck_assert_int_eq(cio_pg_copy_in(c, ""), -EPROTO);
    /* The server's own errors. */
    ck_assert_int_eq(cio_pg_copy_in(c, "COPY no_such_table FROM STDIN"), -EREMOTEIO);
    ck_assert_str_eq(cio_pg_error_sqlstate(c), "42P01");
    ck_assert_int_eq(cio_pg_copy_in(c, "COPY t FROM STDIN; SELECT 1"), -EREMOTEIO);
    assert_usable(c);
    /* Arguments. */
    ck_assert_int_eq(cio_pg_copy_in(NULL, "COPY t FROM STDIN"), -EINVAL);
    ck_assert_int_eq(cio_pg_copy_in(c, NULL), -EINVAL);
    ck_assert_int_eq(cio_pg_copy_out(c, NULL), -EINVAL);
    ck_assert_int_eq(cio_pg_copy_put(NULL, "1\n", 2), -EINVAL);
    ck_assert_int_eq(cio_pg_copy_end(NULL, NULL), -EINVAL);
    ck_assert_int_eq(cio_pg_copy_get(NULL, &row), -EINVAL);

    /* In COPY IN: everything else is refused. */
    ck_assert_int_eq(cio_pg_copy_in(c, "COPY t FROM STDIN"), 0);
    ck_assert_int_eq(cio_pg_exec(c, "SELECT 1"), -EBUSY);
    ck_assert_int_eq(cio_pg_copy_in(c, "COPY t FROM STDIN"), -EBUSY);
    ck_assert_int_eq(cio_pg_copy_out(c, "COPY t TO STDOUT"), -EBUSY);
    ck_assert_int_eq(cio_pg_copy_get(c, &row), -EBUSY);
    ck_assert_int_eq(cio_pg_pipeline_enter(c), -EBUSY);
    ck_assert_int_eq(cio_pg_listen(c, "x"), -EBUSY);
    cio_pg_notify_t *nt = NOT_SET;
    ck_assert_int_eq(cio_pg_wait_notify(c, &nt, 0), -EBUSY);
    ck_assert_ptr_null(nt);
    ck_assert_int_eq(cio_pg_copy_put(c, NULL, 1), -EINVAL);
    ck_assert_int_eq(cio_pg_copy_put(c, NULL, 0), 0);
    ck_assert_int_eq(cio_pg_copy_put(c, "7\n", 2), 0);
    ck_assert_int_eq(cio_pg_copy_end(c, NULL), 1);
    ck_assert_int_eq(cio_pg_test_int(c, "SELECT count(*) FROM t", NULL), 2);

    /* In COPY OUT: likewise. */
    ck_assert_int_eq(cio_pg_copy_out(c, "COPY t TO STDOUT"), 0);
    ck_assert_int_eq(cio_pg_exec(c, "SELECT 1"), -EBUSY);
    ck_assert_int_eq(cio_pg_copy_put(c, "1\n", 2), -EBUSY);
    ck_assert_int_eq(cio_pg_copy_end(c, NULL), -EBUSY);
    ck_assert_int_eq(cio_pg_pipeline_enter(c), -EBUSY);
    ck_assert_int_eq(cio_pg_copy_get(c, NULL), -EINVAL);
    int n = 0;
    ssize_t k;
    while ((k = cio_pg_copy_get(c, &row)) > 0) {
        n++;
        cio_pg_freemem(row);
    }
    ck_assert_int_eq(k, 0);
    ck_assert_int_eq(n, 2);
    assert_usable(c);
    ck_assert_int_eq(cio_pg_close(c), 0);
    return 0;
}

START_TEST(copy_modes)
{
    RUN_MAIN(main_copy_modes, NULL);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Pipeline mode                                                             */
/* ------------------------------------------------------------------------ */

/* Reads one `SELECT $1::int` result and checks its value. */
static void assert_int_result(cio_pg_t *c, int want)
{
    cio_pg_result_t *r = NOT_SET;
    int64_t n = cio_pg_pipeline_result(c, &r);
    ck_assert_msg(n == 1, "result %d: %lld (%s)", want, (long long)n, cio_pg_error_message(c));
    ck_assert_int_eq(atoi(cio_pg_value(r, 0, 0)), want);
    cio_pg_result_free(r);
}

static void send_int(cio_pg_t *c, int i)
{
    char v[16];
    snprintf(v, sizeof v, "%d", i);
    const char *values[1] = {v};
    ck_assert_int_eq(cio_pg_pipeline_send(c, "SELECT $1::int", 1, values), 0);
}

static int main_pipeline_many(void *arg, void **result)
{
    (void)arg, (void)result;
    cio_pg_t *c = cio_pg_test_connect();
    ck_assert_int_eq(cio_pg_pipeline_enter(c), 0);
    ck_assert_int_eq(cio_pg_status(c), CIO_PG_ACTIVE);
    for (int i = 0; i < 1000; i++)
        send_int(c, i);
    ck_assert_int_eq(cio_pg_pipeline_sync(c), 0);
    for (int i = 0; i < 1000; i++)
        assert_int_result(c, i);
    cio_pg_result_t *r = NOT_SET;
    ck_assert_int_eq(cio_pg_pipeline_result(c, &r), -ENOENT);
    ck_assert_ptr_null(r);
    ck_assert_int_eq(cio_pg_pipeline_exit(c), 0);
    assert_usable(c);

    /* A pipeline far bigger than the socket buffers both ways: 100,000
     * statements queued before any result is read. The sends read the
     * server's results meanwhile, so neither side blocks the other. */
    ck_assert_int_eq(cio_pg_pipeline_enter(c), 0);
    for (int i = 0; i < 100000; i++)
        send_int(c, i);
    ck_assert_int_eq(cio_pg_pipeline_sync(c), 0);
    for (int i = 0; i < 100000; i++)
        assert_int_result(c, i);
    ck_assert_int_eq(cio_pg_pipeline_result(c, NULL), -ENOENT);
    ck_assert_int_eq(cio_pg_pipeline_exit(c), 0);

    /* Results read before any sync (a flush request brings them), in
     * several segments, the last one ended before exit. */
    ck_assert_int_eq(cio_pg_pipeline_enter(c), 0);
    for (int i = 0; i < 300; i++)
        send_int(c, i);
    for (int i = 0; i < 150; i++)
        assert_int_result(c, i);
    ck_assert_int_eq(cio_pg_pipeline_sync(c), 0);
    for (int i = 300; i < 400; i++)
        send_int(c, i);
    for (int i = 150; i < 400; i++)
        assert_int_result(c, i);
    ck_assert_int_eq(cio_pg_pipeline_result(c, NULL), -ENOENT);
    /* The last segment is open: leaving now would leave it uncommitted. */
    ck_assert_int_eq(cio_pg_pipeline_exit(c), -EBUSY);
    ck_assert_int_eq(cio_pg_pipeline_sync(c), 0);
    ck_assert_int_eq(cio_pg_pipeline_result(c, NULL), -ENOENT);
    ck_assert_int_eq(cio_pg_pipeline_exit(c), 0);
    assert_usable(c);

    /* A prepared statement in a pipeline; an unknown name fails only its
     * own statement and skips the rest of its segment. */
    ck_assert_int_eq(cio_pg_prepare(c, "pipe_sel", "SELECT $1::int", 1, NULL), 0);
    ck_assert_int_eq(cio_pg_pipeline_enter(c), 0);
    ck_assert_int_eq(cio_pg_pipeline_send_prepared(c, NULL, 0, NULL), -EINVAL);
    for (int i = 0; i < 500; i++) {
        char v[16];
        snprintf(v, sizeof v, "%d", i);
        const char *values[1] = {v};
        ck_assert_int_eq(cio_pg_pipeline_send_prepared(c, "pipe_sel", 1, values), 0);
    }
    ck_assert_int_eq(cio_pg_pipeline_send_prepared(c, "pipe_nope", 0, NULL), 0);
    ck_assert_int_eq(cio_pg_pipeline_send_prepared(c, "pipe_sel", 1, (const char *[]){"1"}), 0);
    ck_assert_int_eq(cio_pg_pipeline_sync(c), 0);
    for (int i = 0; i < 500; i++)
        assert_int_result(c, i);
    ck_assert_int_eq(cio_pg_pipeline_result(c, NULL), -EREMOTEIO);
    ck_assert_str_eq(cio_pg_error_sqlstate(c), "26000");
    ck_assert_int_eq(cio_pg_pipeline_result(c, NULL), -ECONNABORTED);
    ck_assert_int_eq(cio_pg_pipeline_result(c, NULL), -ENOENT);
    ck_assert_int_eq(cio_pg_pipeline_exit(c), 0);
    assert_usable(c);
    ck_assert_int_eq(cio_pg_close(c), 0);
    return 0;
}

START_TEST(pipeline_many)
{
    RUN_MAIN(main_pipeline_many, NULL);
}
END_TEST

static int main_pipeline_error(void *arg, void **result)
{
    (void)arg, (void)result;
    cio_pg_t *c = cio_pg_test_connect();
    cio_pg_test_exec(c, "CREATE TEMP TABLE t (i int)");
    ck_assert_int_eq(cio_pg_pipeline_enter(c), 0);
    /* Segment 1: an insert, a failure, then statements the server skips. */
    ck_assert_int_eq(cio_pg_pipeline_send(c, "INSERT INTO t VALUES (1)", 0, NULL), 0);
    const char *zero[1] = {"0"};
    ck_assert_int_eq(cio_pg_pipeline_send(c, "SELECT 1 / $1::int", 1, zero), 0);
    send_int(c, 2);
    ck_assert_int_eq(cio_pg_pipeline_send(c, "INSERT INTO t VALUES (3)", 0, NULL), 0);
    ck_assert_int_eq(cio_pg_pipeline_sync(c), 0);
    /* Segment 2: fine. */
    send_int(c, 4);
    ck_assert_int_eq(cio_pg_pipeline_send(c, "INSERT INTO t VALUES (5)", 0, NULL), 0);
    ck_assert_int_eq(cio_pg_pipeline_sync(c), 0);

    ck_assert_int_eq(cio_pg_pipeline_result(c, NULL), 1);
    cio_pg_result_t *r = NOT_SET;
    ck_assert_int_eq(cio_pg_pipeline_result(c, &r), -EREMOTEIO);
    ck_assert_ptr_null(r);
    ck_assert_str_eq(cio_pg_error_sqlstate(c), "22012");
    ck_assert_int_eq(cio_pg_pipeline_result(c, &r), -ECONNABORTED);
    ck_assert_ptr_null(r);
    ck_assert_int_eq(cio_pg_pipeline_result(c, NULL), -ECONNABORTED);
    assert_int_result(c, 4);
    ck_assert_int_eq(cio_pg_pipeline_result(c, NULL), 1);
    ck_assert_int_eq(cio_pg_pipeline_result(c, NULL), -ENOENT);
    ck_assert_int_eq(cio_pg_pipeline_exit(c), 0);
    /* Segment 1 was one transaction: its insert was rolled back. */
    ck_assert_int_eq(cio_pg_test_int(c, "SELECT count(*) FROM t", NULL), 1);
    ck_assert_int_eq(cio_pg_test_int(c, "SELECT min(i) FROM t", NULL), 5);

    /* A failure in the open segment: its skipped statements are reported
     * without a sync; the pipeline is left only after one. */
    ck_assert_int_eq(cio_pg_pipeline_enter(c), 0);
    ck_assert_int_eq(cio_pg_pipeline_send(c, "SELECT nope", 0, NULL), 0);
    send_int(c, 1);
    ck_assert_int_eq(cio_pg_pipeline_result(c, NULL), -EREMOTEIO);
    ck_assert_str_eq(cio_pg_error_sqlstate(c), "42703");
    ck_assert_int_eq(cio_pg_pipeline_result(c, NULL), -ECONNABORTED);
    ck_assert_int_eq(cio_pg_pipeline_exit(c), -EBUSY);
    ck_assert_int_eq(cio_pg_pipeline_sync(c), 0);
    send_int(c, 7);
    ck_assert_int_eq(cio_pg_pipeline_sync(c), 0);
    assert_int_result(c, 7);
    ck_assert_int_eq(cio_pg_pipeline_exit(c), 0);
    assert_usable(c);
    ck_assert_int_eq(cio_pg_close(c), 0);
    return 0;
}

START_TEST(pipeline_error)
{
    RUN_MAIN(main_pipeline_error, NULL);
}
END_TEST

static int main_pipeline_modes(void *arg, void **result)
{
    (void)arg, (void)result;
    cio_pg_t *c = cio_pg_test_connect();
    /* Outside pipeline mode. */
    ck_assert_int_eq(cio_pg_pipeline_send(c, "SELECT 1", 0, NULL), -EBUSY);
    ck_assert_int_eq(cio_pg_pipeline_sync(c), -EBUSY);
    ck_assert_int_eq(cio_pg_pipeline_result(c, NULL), -EBUSY);
    ck_assert_int_eq(cio_pg_pipeline_exit(c), 0);
    ck_assert_int_eq(cio_pg_pipeline_enter(NULL), -EINVAL);
    ck_assert_int_eq(cio_pg_pipeline_exit(NULL), -EINVAL);

    ck_assert_int_eq(cio_pg_pipeline_enter(c), 0);
    ck_assert_int_eq(cio_pg_pipeline_enter(c), -EBUSY);
    ck_assert_int_eq(cio_pg_exec(c, "SELECT 1"), -EBUSY);
    ck_assert_int_eq(cio_pg_copy_in(c, "COPY x FROM STDIN"), -EBUSY);
    /* Nothing pending. */
    cio_pg_result_t *r = NOT_SET;
    ck_assert_int_eq(cio_pg_pipeline_result(c, &r), -ENOENT);
    ck_assert_ptr_null(r);
    ck_assert_int_eq(cio_pg_pipeline_sync(c), 0);
    ck_assert_int_eq(cio_pg_pipeline_result(c, NULL), -ENOENT);
    /* Arguments. */
    ck_assert_int_eq(cio_pg_pipeline_send(c, NULL, 0, NULL), -EINVAL);
    ck_assert_int_eq(cio_pg_pipeline_send(c, "SELECT $1", 1, NULL), -EINVAL);
    ck_assert_int_eq(cio_pg_pipeline_send(c, "SELECT 1", -1, NULL), -EINVAL);
    /* Results pending: exit refuses. */
    send_int(c, 5);
    ck_assert_int_eq(cio_pg_pipeline_sync(c), 0);
    ck_assert_int_eq(cio_pg_pipeline_exit(c), -EBUSY);
    ck_assert_int_eq(cio_pg_status(c), CIO_PG_ACTIVE);
    assert_int_result(c, 5);
    ck_assert_int_eq(cio_pg_pipeline_exit(c), 0);
    ck_assert_int_eq(cio_pg_pipeline_exit(c), 0);
    assert_usable(c);
    ck_assert_int_eq(cio_pg_close(c), 0);
    return 0;
}

START_TEST(pipeline_modes)
{
    RUN_MAIN(main_pipeline_modes, NULL);
}
END_TEST

typedef struct piper {
    cio_pg_t *c;
    cio_event_t started;
    int64_t rc;
    int first;
} piper_t;

static int piper_body(void *arg, void **result)
{
    (void)result;
    piper_t *p = arg;
    cio_pg_result_t *r = NULL;
    p->rc = cio_pg_pipeline_result(p->c, &r);
    if (p->rc == 1)
        p->first = atoi(cio_pg_value(r, 0, 0));
    cio_pg_result_free(r);
    cio_event_set(&p->started);
    if (p->rc >= 0)
        p->rc = cio_pg_pipeline_result(p->c, NULL);
    return 0;
}

static int main_pipeline_cancel(void *arg, void **result)
{
    (void)arg, (void)result;
    cio_pg_t *c = cio_pg_test_connect();
    ck_assert_int_eq(cio_pg_pipeline_enter(c), 0);
    /* The server sends a segment's results when it reaches the segment's
     * sync: 1 is alone in its segment, so that it comes at once. */
    send_int(c, 1);
    ck_assert_int_eq(cio_pg_pipeline_sync(c), 0);
    ck_assert_int_eq(cio_pg_pipeline_send(c, "SELECT pg_sleep(60)", 0, NULL), 0);
    send_int(c, 2);
    ck_assert_int_eq(cio_pg_pipeline_sync(c), 0);
    send_int(c, 3); /* an open segment too */
    piper_t p = {.c = c};
    cio_event_init(&p.started);
    cio_task_t *t = spawn(piper_body, &p);
    /* This task runs again once the piper waits for the sleep's result. */
    ck_assert_int_eq(cio_event_wait(&p.started), 0);
    cio_pg_t *other = cio_pg_test_connect();
    wait_sleeping(other, cio_pg_backend_pid(c));
    int64_t t0 = loop_ns();
    ck_assert_int_eq(cio_task_cancel(t), 1);
    ck_assert_int_eq(finish(t), 0);
    ck_assert_int_eq(p.first, 1);
    ck_assert_int_eq(p.rc, -ECANCELED);
    ck_assert_double_lt(secs_since(t0), 1.5);
    /* Pipeline mode was left; the connection is idle. */
    ck_assert_int_eq(cio_pg_pipeline_result(c, NULL), -EBUSY);
    ck_assert_int_eq(cio_pg_pipeline_exit(c), 0);
    assert_usable(c);

    /* A deadline while a result is awaited: -ETIMEDOUT, likewise. */
    ck_assert_int_eq(cio_pg_pipeline_enter(c), 0);
    ck_assert_int_eq(cio_pg_pipeline_send(c, "SELECT pg_sleep(60)", 0, NULL), 0);
    ck_assert_int_eq(cio_pg_pipeline_sync(c), 0);
    wait_sleeping(other, cio_pg_backend_pid(c));
    cio_scope_t s;
    ck_assert_int_eq(cio_scope_enter(&s, 0.1, 0), 0);
    ck_assert_int_eq(cio_pg_pipeline_result(c, NULL), -ETIMEDOUT);
    ck_assert_int_eq(cio_scope_exit(&s), -ETIMEDOUT);
    assert_usable(c);
    ck_assert_int_eq(cio_pg_close(other), 0);
    ck_assert_int_eq(cio_pg_close(c), 0);
    return 0;
}

START_TEST(pipeline_cancel)
{
    RUN_MAIN(main_pipeline_cancel, NULL);
}
END_TEST

/*
 * A task already cancelled sends nothing (the cancellation rule at the top
 * of cio-pg.h), also the calls that need not wait: cio_pg_copy_put and
 * cio_pg_pipeline_send/sync while the socket has room. Each returns
 * -ECANCELED, aborts its COPY or pipeline, and keeps nothing.
 */
static int main_cancelled_sends(void *arg, void **result)
{
    (void)arg, (void)result;
    cio_pg_t *c = cio_pg_test_connect();
    cio_pg_test_exec(c, "CREATE TEMP TABLE t (i int)");
    cio_scope_t s;

    /* COPY IN: a put in a cancelled scope aborts the COPY. */
    ck_assert_int_eq(cio_pg_copy_in(c, "COPY t FROM STDIN"), 0);
    ck_assert_int_eq(cio_pg_copy_put(c, "1\n", 2), 0);
    ck_assert_int_eq(cio_scope_enter(&s, INFINITY, 0), 0);
    cio_scope_cancel(&s);
    ck_assert_int_eq(cio_pg_copy_put(c, "2\n", 2), -ECANCELED);
    ck_assert_int_eq(cio_scope_exit(&s), -ECANCELED);
    ck_assert_int_eq(cio_pg_copy_end(c, NULL), -EBUSY);
    assert_usable(c);
    ck_assert_int_eq(cio_pg_test_int(c, "SELECT count(*) FROM t", NULL), 0);

    /* Ending it (errmsg NULL, which would commit it) in a cancelled scope:
     * the COPY is aborted instead. */
    ck_assert_int_eq(cio_pg_copy_in(c, "COPY t FROM STDIN"), 0);
    ck_assert_int_eq(cio_pg_copy_put(c, "1\n", 2), 0);
    ck_assert_int_eq(cio_scope_enter(&s, INFINITY, 0), 0);
    cio_scope_cancel(&s);
    ck_assert_int_eq(cio_pg_copy_end(c, NULL), -ECANCELED);
    ck_assert_int_eq(cio_scope_exit(&s), -ECANCELED);
    assert_usable(c);
    ck_assert_int_eq(cio_pg_test_int(c, "SELECT count(*) FROM t", NULL), 0);

    /* Pipeline: a send in a cancelled scope queues nothing and leaves
     * pipeline mode; a sync afterwards is -EBUSY (not in pipeline mode). */
    ck_assert_int_eq(cio_pg_pipeline_enter(c), 0);
    ck_assert_int_eq(cio_scope_enter(&s, INFINITY, 0), 0);
    cio_scope_cancel(&s);
    ck_assert_int_eq(cio_pg_pipeline_send(c, "INSERT INTO t VALUES (1)", 0, NULL), -ECANCELED);
    ck_assert_int_eq(cio_pg_pipeline_send_prepared(c, "nope", 0, NULL), -EBUSY);
    ck_assert_int_eq(cio_pg_pipeline_sync(c), -EBUSY);
    ck_assert_int_eq(cio_scope_exit(&s), -ECANCELED);
    assert_usable(c);
    ck_assert_int_eq(cio_pg_test_int(c, "SELECT count(*) FROM t", NULL), 0);

    /* A sync in a cancelled scope: -ECANCELED, the pipeline given up. */
    ck_assert_int_eq(cio_pg_pipeline_enter(c), 0);
    ck_assert_int_eq(cio_scope_enter(&s, INFINITY, 0), 0);
    cio_scope_cancel(&s);
    ck_assert_int_eq(cio_pg_pipeline_sync(c), -ECANCELED);
    ck_assert_int_eq(cio_scope_exit(&s), -ECANCELED);
    assert_usable(c);
    ck_assert_int_eq(cio_pg_close(c), 0);
    return 0;
}

START_TEST(cancelled_sends)
{
    RUN_MAIN(main_cancelled_sends, NULL);
}
END_TEST

/* Terminates server process pid from `other` and waits (bounded) until it
 * is gone. */
static void kill_backend(cio_pg_t *other, int pid)
{
    char text[16];
    snprintf(text, sizeof text, "%d", pid);
    ck_assert_int_eq(cio_pg_test_int(other, "SELECT pg_terminate_backend($1::int)::int", text), 1);
    for (int i = 0; i < 500; i++) {
        if (cio_pg_test_int(other, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1::int",
                            text) == 0)
            return;
        ck_assert_int_eq(cio_sleep(0.01), 0);
    }
    ck_abort_msg("server process %d did not exit", pid);
}

/*
 * The connection lost in the middle of a COPY IN, a COPY OUT and a
 * pipeline: the call that finds it gets -ECONNRESET (after the rows that
 * had arrived, for COPY OUT), within seconds, and every later call on the
 * connection -ENOTCONN, pipeline_exit included.
 */
static int main_lost_midway(void *arg, void **result)
{
    (void)arg, (void)result;
    cio_pg_t *other = cio_pg_test_connect();
    static char block[1 << 16];
    for (size_t i = 0; i < sizeof block; i += 2)
        memcpy(block + i, "1\n", 2);

    /* COPY IN. */
    cio_pg_t *c = cio_pg_test_connect();
    cio_pg_test_exec(c, "CREATE TEMP TABLE t (i int)");
    ck_assert_int_eq(cio_pg_copy_in(c, "COPY t FROM STDIN"), 0);
    ck_assert_int_eq(cio_pg_copy_put(c, "1\n", 2), 0);
    kill_backend(other, cio_pg_backend_pid(c));
    int64_t t0 = loop_ns();
    int rc = 0;
    for (int i = 0; i < 1000 && rc == 0; i++)
        rc = cio_pg_copy_put(c, block, sizeof block);
    ck_assert_int_eq(rc, -ECONNRESET);
    ck_assert_double_lt(secs_since(t0), HANG_BOUND_S);
    ck_assert_int_eq(cio_pg_status(c), CIO_PG_BROKEN);
    ck_assert_int_eq(cio_pg_copy_put(c, "2\n", 2), -ENOTCONN);
    ck_assert_int_eq(cio_pg_copy_end(c, NULL), -ENOTCONN);
    ck_assert_int_eq(cio_pg_close(c), 0);

    /* COPY OUT of more rows than the sockets hold. */
    c = cio_pg_test_connect();
    ck_assert_int_eq(
        cio_pg_copy_out(c, "COPY (SELECT generate_series(1, 100000000)) TO STDOUT"), 0);
    char *row = NOT_SET;
    ck_assert_int_gt(cio_pg_copy_get(c, &row), 0);
    cio_pg_freemem(row);
    kill_backend(other, cio_pg_backend_pid(c));
    t0 = loop_ns();
    ssize_t n;
    long rows = 0;
    while ((n = cio_pg_copy_get(c, &row)) > 0) {
        cio_pg_freemem(row);
        rows++;
    }
    ck_assert_int_eq(n, -ECONNRESET);
    ck_assert_ptr_null(row);
    ck_assert_int_lt(rows, 100000000 - 1);
    ck_assert_double_lt(secs_since(t0), HANG_BOUND_S);
    ck_assert_int_eq(cio_pg_status(c), CIO_PG_BROKEN);
    ck_assert_int_eq(cio_pg_copy_get(c, &row), -ENOTCONN);
    ck_assert_int_eq(cio_pg_close(c), 0);

    /* A pipeline waiting for a result. */
    c = cio_pg_test_connect();
    ck_assert_int_eq(cio_pg_pipeline_enter(c), 0);
    cio_pg_notify_t *nt = NOT_SET;
    ck_assert_int_eq(cio_pg_wait_notify(c, &nt, 0), -EBUSY); /* not in pipeline mode */
    ck_assert_ptr_null(nt);
    ck_assert_int_eq(cio_pg_pipeline_send(c, "SELECT pg_sleep(60)", 0, NULL), 0);
    ck_assert_int_eq(cio_pg_pipeline_send(c, "SELECT 1", 0, NULL), 0);
    ck_assert_int_eq(cio_pg_pipeline_sync(c), 0);
    wait_sleeping(other, cio_pg_backend_pid(c));
    kill_backend(other, cio_pg_backend_pid(c));
    t0 = loop_ns();
    cio_pg_result_t *r = NOT_SET;
    ck_assert_int_eq(cio_pg_pipeline_result(c, &r), -ECONNRESET);
    ck_assert_ptr_null(r);
    ck_assert_double_lt(secs_since(t0), HANG_BOUND_S);
    ck_assert_int_eq(cio_pg_status(c), CIO_PG_BROKEN);
    ck_assert_int_eq(cio_pg_pipeline_result(c, NULL), -ENOTCONN);
    ck_assert_int_eq(cio_pg_pipeline_send(c, "SELECT 2", 0, NULL), -ENOTCONN);
    ck_assert_int_eq(cio_pg_pipeline_sync(c), -ENOTCONN);
    ck_assert_int_eq(cio_pg_pipeline_exit(c), -ENOTCONN);
    ck_assert_int_eq(cio_pg_close(c), 0);
    ck_assert_int_eq(cio_pg_close(other), 0);
    return 0;
}

START_TEST(lost_midway)
{
    RUN_MAIN(main_lost_midway, NULL);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* LISTEN / NOTIFY                                                           */
/* ------------------------------------------------------------------------ */

/* A channel name unique to this process. */
static const char *chan(const char *base, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s_%d", base, (int)getpid());
    return buf;
}

static void expect_notify(cio_pg_t *c, double timeout, const char *channel, const char *payload,
                          int pid)
{
    cio_pg_notify_t *n = NOT_SET;
    int rc = cio_pg_wait_notify(c, &n, timeout);
    ck_assert_msg(rc == 0, "wait_notify: %s", cio_strerror(rc));
    ck_assert_str_eq(n->channel, channel);
    ck_assert_str_eq(n->payload, payload);
    if (pid)
        ck_assert_int_eq(n->pid, pid);
    cio_pg_notify_free(n);
}

static void expect_none(cio_pg_t *c)
{
    cio_pg_notify_t *n = NOT_SET;
    ck_assert_int_eq(cio_pg_wait_notify(c, &n, 0), -EAGAIN);
    ck_assert_ptr_null(n);
}

static int main_notify_basic(void *arg, void **result)
{
    (void)arg, (void)result;
    cio_pg_t *l = cio_pg_test_connect(), *s = cio_pg_test_connect();
    char ch[64];
    chan("ext_basic", ch, sizeof ch);
    ck_assert_int_eq(cio_pg_listen(l, ch), 0);
    ck_assert_int_eq(cio_pg_notify(s, ch, "hello"), 0);
    expect_notify(l, 5, ch, "hello", cio_pg_backend_pid(s));
    ck_assert_int_eq(cio_pg_notify(s, ch, NULL), 0);
    expect_notify(l, 5, ch, "", cio_pg_backend_pid(s));
    /* In order. */
    for (int i = 0; i < 20; i++) {
        char p[16];
        snprintf(p, sizeof p, "n%d", i);
        ck_assert_int_eq(cio_pg_notify(s, ch, p), 0);
    }
    for (int i = 0; i < 20; i++) {
        char p[16];
        snprintf(p, sizeof p, "n%d", i);
        expect_notify(l, 5, ch, p, 0);
    }
    /* Inside a transaction: delivered at its commit, not before; none for
     * a transaction rolled back. */
    ck_assert_int_eq(cio_pg_begin(s), 0);
    ck_assert_int_eq(cio_pg_notify(s, ch, "later"), 0);
    ck_assert_int_eq(cio_pg_wait_notify(l, &(cio_pg_notify_t *){NULL}, 0.1), -ETIMEDOUT);
    ck_assert_int_eq(cio_pg_commit(s), 0);
    expect_notify(l, 5, ch, "later", 0);
    ck_assert_int_eq(cio_pg_begin(s), 0);
    ck_assert_int_eq(cio_pg_notify(s, ch, "never"), 0);
    ck_assert_int_eq(cio_pg_rollback(s), 0);
    /* Its own notifications reach a connection too. */
    ck_assert_int_eq(cio_pg_notify(l, ch, "self"), 0);
    expect_notify(l, 5, ch, "self", cio_pg_backend_pid(l));
    expect_none(l);
    /* Unlisten: a channel, then all of them. */
    char ch2[64];
    chan("ext_basic2", ch2, sizeof ch2);
    ck_assert_int_eq(cio_pg_listen(l, ch2), 0);
    ck_assert_int_eq(cio_pg_unlisten(l, ch), 0);
    ck_assert_int_eq(cio_pg_notify(s, ch, "gone"), 0);
    ck_assert_int_eq(cio_pg_notify(s, ch2, "still"), 0);
    expect_notify(l, 5, ch2, "still", 0);
    ck_assert_int_eq(cio_pg_unlisten(l, NULL), 0);
    ck_assert_int_eq(cio_pg_notify(s, ch2, "gone too"), 0);
    ck_assert_int_eq(cio_pg_wait_notify(l, &(cio_pg_notify_t *){NULL}, 0.1), -ETIMEDOUT);
    ck_assert_int_eq(cio_pg_close(l), 0);
    ck_assert_int_eq(cio_pg_close(s), 0);
    return 0;
}

START_TEST(notify_basic)
{
    RUN_MAIN(main_notify_basic, NULL);
}
END_TEST

static int main_notify_busy(void *arg, void **result)
{
    (void)arg, (void)result;
    cio_pg_t *l = cio_pg_test_connect(), *s = cio_pg_test_connect();
    char ch[64];
    chan("ext_busy", ch, sizeof ch);
    ck_assert_int_eq(cio_pg_listen(l, ch), 0);
    /* The listener runs a long statement; the notification is sent
     * meanwhile and arrives while the statement runs. */
    cio_pg_test_exec_t b = {.c = l, .sql = "SELECT pg_sleep(0.5)"};
    cio_task_t *t = spawn(cio_pg_test_exec_task, &b);
    settle();
    ck_assert_int_eq(cio_pg_status(l), CIO_PG_ACTIVE);
    ck_assert_int_eq(cio_pg_notify(s, ch, "while busy"), 0);
    ck_assert_int_eq(cio_pg_notify(s, ch, "and another"), 0);
    ck_assert(!cio_future_done(t));
    ck_assert_int_eq(finish(t), 0);
    ck_assert_int_eq(b.rc, 0);
    /* Kept: there at once (timeout 0), in order. */
    expect_notify(l, 0, ch, "while busy", cio_pg_backend_pid(s));
    expect_notify(l, 0, ch, "and another", cio_pg_backend_pid(s));
    expect_none(l);
    ck_assert_int_eq(cio_pg_close(l), 0);
    ck_assert_int_eq(cio_pg_close(s), 0);
    return 0;
}

START_TEST(notify_busy)
{
    RUN_MAIN(main_notify_busy, NULL);
}
END_TEST

typedef struct waiter {
    cio_pg_t *c;
    double timeout;
    int rc;
    cio_pg_notify_t *n;
} waiter_t;

static int waiter_body(void *arg, void **result)
{
    (void)result;
    waiter_t *w = arg;
    w->rc = cio_pg_wait_notify(w->c, &w->n, w->timeout);
    return 0;
}

static int main_notify_timeout(void *arg, void **result)
{
    (void)arg, (void)result;
    cio_pg_t *l = cio_pg_test_connect(), *s = cio_pg_test_connect();
    char ch[64];
    chan("ext_timeout", ch, sizeof ch);
    ck_assert_int_eq(cio_pg_listen(l, ch), 0);
    cio_pg_notify_t *n = NOT_SET;

    /* Nothing comes: the timeout, measured. */
    int64_t t0 = loop_ns();
    ck_assert_int_eq(cio_pg_wait_notify(l, &n, D_MED), -ETIMEDOUT);
    ck_assert_ptr_null(n);
    ck_assert_int_ge(loop_ns() - t0, NS_MED);
    ck_assert_double_lt(secs_since(t0), HANG_BOUND_S);
    /* Timeout 0: only what has arrived. */
    n = NOT_SET;
    ck_assert_int_eq(cio_pg_wait_notify(l, &n, 0), -EAGAIN);
    ck_assert_ptr_null(n);
    /* An enclosing deadline bounds an unlimited wait. */
    cio_scope_t sc;
    ck_assert_int_eq(cio_scope_enter(&sc, D_SHORT, 0), 0);
    ck_assert_int_eq(cio_pg_wait_notify(l, &n, INFINITY), -ETIMEDOUT);
    ck_assert_int_eq(cio_scope_exit(&sc), -ETIMEDOUT);
    /* A wait that is given what it waits for, from another task. */
    waiter_t w = {.c = l, .timeout = INFINITY};
    cio_task_t *t = spawn(waiter_body, &w);
    settle();
    ck_assert_int_eq(cio_pg_status(l), CIO_PG_ACTIVE);
    ck_assert_int_eq(cio_pg_exec(l, "SELECT 1"), -EBUSY);
    ck_assert_int_eq(cio_pg_notify(s, ch, "wake"), 0);
    ck_assert_int_eq(finish(t), 0);
    ck_assert_int_eq(w.rc, 0);
    ck_assert_str_eq(w.n->payload, "wake");
    cio_pg_notify_free(w.n);
    /* A cancelled wait: -ECANCELED, the connection as it was. */
    w = (waiter_t){.c = l, .timeout = INFINITY};
    t = spawn(waiter_body, &w);
    settle();
    ck_assert_int_eq(cio_task_cancel(t), 1);
    ck_assert_int_eq(finish(t), 0);
    ck_assert_int_eq(w.rc, -ECANCELED);
    ck_assert_ptr_null(w.n);
    assert_usable(l);
    ck_assert_int_eq(cio_pg_notify(s, ch, "after"), 0);
    expect_notify(l, 5, ch, "after", 0);
    /* Arguments. */
    ck_assert_int_eq(cio_pg_wait_notify(l, NULL, 1), -EINVAL);
    ck_assert_int_eq(cio_pg_wait_notify(l, &n, NAN), -EINVAL);
    ck_assert_int_eq(cio_pg_wait_notify(l, &n, -1), -EINVAL);
    ck_assert_int_eq(cio_pg_wait_notify(NULL, &n, 1), -EINVAL);
    ck_assert_ptr_null(n);
    cio_pg_notify_free(NULL);
    ck_assert_int_eq(cio_pg_close(l), 0);
    ck_assert_int_eq(cio_pg_close(s), 0);
    return 0;
}

START_TEST(notify_timeout)
{
    RUN_MAIN(main_notify_timeout, NULL);
}
END_TEST

static int main_notify_odd(void *arg, void **result)
{
    (void)arg, (void)result;
    cio_pg_t *l = cio_pg_test_connect(), *s = cio_pg_test_connect();
    char pid[16];
    snprintf(pid, sizeof pid, "%d", (int)getpid());
    /* Quotes, spaces, a statement, case and non-ASCII: all one identifier. */
    const char *bases[] = {"Odd \"Chan\"; DROP TABLE x; --", "it's", "MixedCase", "通知 канал",
                           "a\\b"};
    char names[5][64];
    for (int i = 0; i < 5; i++) {
        snprintf(names[i], sizeof names[i], "%s %s", bases[i], pid);
        ck_assert_int_eq(cio_pg_listen(l, names[i]), 0);
    }
    const char *payloads[] = {"it's \"quoted\"", "back\\slash", "", "$$; NOTIFY x; $$", "多字节"};
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(cio_pg_notify(s, names[i], payloads[i]), 0);
    for (int i = 0; i < 5; i++)
        expect_notify(l, 5, names[i], payloads[i], 0);
    /* Case matters (the name is quoted): "mixedcase" is another channel. */
    char lower[64];
    snprintf(lower, sizeof lower, "mixedcase %s", pid);
    ck_assert_int_eq(cio_pg_notify(s, lower, "no"), 0);
    ck_assert_int_eq(cio_pg_notify(s, names[2], "yes"), 0);
    expect_notify(l, 5, names[2], "yes", 0);
    /* The longest name PostgreSQL keeps whole (63 bytes); a longer one
     * would be cut short, so it is refused, as is an empty one. */
    char longest[80];
    memset(longest, 'c', 63);
    memcpy(longest, pid, strlen(pid));
    longest[63] = '\0';
    ck_assert_int_eq(cio_pg_listen(l, longest), 0);
    ck_assert_int_eq(cio_pg_notify(s, longest, "long"), 0);
    expect_notify(l, 5, longest, "long", 0);
    longest[63] = 'c';
    longest[64] = '\0';
    ck_assert_int_eq(cio_pg_listen(l, longest), -EINVAL);
    ck_assert_int_eq(cio_pg_unlisten(l, longest), -EINVAL);
    ck_assert_int_eq(cio_pg_notify(s, longest, "x"), -EINVAL);
    ck_assert_int_eq(cio_pg_listen(l, ""), -EINVAL);
    /* A UTF-8 character cut short (the database's encoding is UTF-8 in the
     * test cluster; SQL_ASCII would take any byte). */
    if (!strcmp(PQparameterStatus(cio_pg_pq(l), "client_encoding"), "UTF8"))
        ck_assert_int_eq(cio_pg_listen(l, "ab\xe4\xb8"), -EINVAL);
    ck_assert_int_eq(cio_pg_notify(s, "", "x"), -EINVAL);
    ck_assert_int_eq(cio_pg_listen(l, NULL), -EINVAL);
    ck_assert_int_eq(cio_pg_notify(s, NULL, "x"), -EINVAL);
    ck_assert_int_eq(cio_pg_listen(NULL, "x"), -EINVAL);
    ck_assert_int_eq(cio_pg_unlisten(NULL, NULL), -EINVAL);
    /* A payload over the server's limit (8000 bytes): its error. */
    char *big = malloc(9000);
    ck_assert_ptr_nonnull(big);
    memset(big, 'p', 8999);
    big[8999] = '\0';
    ck_assert_int_eq(cio_pg_notify(s, names[0], big), -EREMOTEIO);
    ck_assert_str_eq(cio_pg_error_sqlstate(s), "22023");
    expect_none(l);
    /* The largest payload (7999 bytes), 300 of them (more than the socket
     * buffers hold) sent while the listener does not read: all arrive,
     * whole and in order. */
    memset(big, 'q', 7999);
    big[7999] = '\0';
    for (int i = 0; i < 300; i++) {
        big[0] = (char)('a' + i % 26);
        big[7998] = (char)('A' + i % 26);
        ck_assert_int_eq(cio_pg_notify(s, names[0], big), 0);
    }
    for (int i = 0; i < 300; i++) {
        big[0] = (char)('a' + i % 26);
        big[7998] = (char)('A' + i % 26);
        expect_notify(l, 5, names[0], big, cio_pg_backend_pid(s));
    }
    free(big);
    expect_none(l);
    ck_assert_int_eq(cio_pg_unlisten(l, NULL), 0);
    ck_assert_int_eq(cio_pg_close(l), 0);
    ck_assert_int_eq(cio_pg_close(s), 0);
    return 0;
}

START_TEST(notify_odd)
{
    RUN_MAIN(main_notify_odd, NULL);
}
END_TEST

static int main_notify_terminate(void *arg, void **result)
{
    (void)arg, (void)result;
    cio_pg_t *l = cio_pg_test_connect(), *s = cio_pg_test_connect();
    char ch[64];
    chan("ext_term", ch, sizeof ch);
    ck_assert_int_eq(cio_pg_listen(l, ch), 0);
    waiter_t w = {.c = l, .timeout = 30};
    cio_task_t *t = spawn(waiter_body, &w);
    settle();
    char pid[16];
    snprintf(pid, sizeof pid, "%d", cio_pg_backend_pid(l));
    const char *values[1] = {pid};
    cio_pg_result_t *r = NULL;
    ck_assert_int_eq(cio_pg_query(s, &r, "SELECT pg_terminate_backend($1::int)", 1, values), 1);
    ck_assert_str_eq(cio_pg_value(r, 0, 0), "t");
    cio_pg_result_free(r);
    int64_t t0 = loop_ns();
    ck_assert_int_eq(finish(t), 0);
    ck_assert_int_eq(w.rc, -ECONNRESET);
    ck_assert_ptr_null(w.n);
    ck_assert_double_lt(secs_since(t0), HANG_BOUND_S);
    ck_assert_int_eq(cio_pg_status(l), CIO_PG_BROKEN);
    cio_pg_notify_t *n = NOT_SET;
    ck_assert_int_eq(cio_pg_wait_notify(l, &n, 0), -ENOTCONN);
    ck_assert_int_eq(cio_pg_listen(l, ch), -ENOTCONN);
    ck_assert_int_eq(cio_pg_pipeline_enter(l), -ENOTCONN);
    ck_assert_int_eq(cio_pg_copy_in(l, "COPY t FROM STDIN"), -ENOTCONN);
    ck_assert_int_eq(cio_pg_close(l), 0);
    ck_assert_int_eq(cio_pg_close(s), 0);
    return 0;
}

START_TEST(notify_terminate)
{
    RUN_MAIN(main_notify_terminate, NULL);
}
END_TEST

static int main_notify_enomem(void *arg, void **result)
{
    (void)arg, (void)result;
    cio_pg_t *l = cio_pg_test_connect(), *s = cio_pg_test_connect();
    char ch[64];
    chan("ext_nomem", ch, sizeof ch);
    /* LISTEN's statement text. */
    for (long k = 1;; k++) {
        cio_pg_test_alloc_arm(k);
        int rc = cio_pg_listen(l, ch);
        bool injected = cio_pg_test_alloc_disarm();
        if (!injected) {
            ck_assert_int_eq(rc, 0);
            break;
        }
        ck_assert_int_eq(rc, -ENOMEM);
        ck_assert_int_eq(cio_pg_status(l), CIO_PG_IDLE);
    }
    ck_assert_int_eq(cio_pg_notify(s, ch, "kept"), 0);
    /* Each allocation of the wait fails in turn: -ENOMEM, and the
     * notification stays for the next call. */
    int failures = 0;
    for (long k = 1;; k++) {
        cio_pg_notify_t *n = NOT_SET;
        cio_pg_test_alloc_arm(k);
        int rc = cio_pg_wait_notify(l, &n, 5);
        bool injected = cio_pg_test_alloc_disarm();
        if (!injected) {
            ck_assert_int_eq(rc, 0);
            ck_assert_str_eq(n->payload, "kept");
            cio_pg_notify_free(n);
            break;
        }
        ck_assert_int_eq(rc, -ENOMEM);
        ck_assert_ptr_null(n);
        failures++;
    }
    ck_assert_int_ge(failures, 1);
    /* Exactly one was delivered. */
    expect_none(l);
    assert_usable(l);
    ck_assert_int_eq(cio_pg_close(l), 0);
    ck_assert_int_eq(cio_pg_close(s), 0);
    return 0;
}

START_TEST(notify_enomem)
{
    if (!cio_pg_test_malloc_wrapped("test_pg_ext: allocation checks"))
        return;
    RUN_MAIN(main_notify_enomem, NULL);
}
END_TEST

/* ------------------------------------------------------------------------ */

static Suite *make_suite(void)
{
    Suite *s = suite_create("pg_ext");
    TCase *tc = add_tcase(s, "copy", 60);
    tcase_add_test(tc, copy_in_big);
    tcase_add_test(tc, copy_in_errors);
    tcase_add_test(tc, copy_in_early_error);
    tcase_add_test(tc, copy_in_cancel);
    tcase_add_test(tc, copy_in_cancel_put);
    tcase_add_test(tc, copy_in_locked);
    tcase_add_test(tc, copy_out_big);
    tcase_add_test(tc, copy_out_cancel);
    tcase_add_test(tc, copy_modes);
    tc = add_tcase(s, "pipeline", 60);
    tcase_add_test(tc, pipeline_many);
    tcase_add_test(tc, pipeline_error);
    tcase_add_test(tc, pipeline_modes);
    tcase_add_test(tc, pipeline_cancel);
    tcase_add_test(tc, cancelled_sends);
    tcase_add_test(tc, lost_midway);
    tc = add_tcase(s, "notify", 60);
    tcase_add_test(tc, notify_basic);
    tcase_add_test(tc, notify_busy);
    tcase_add_test(tc, notify_timeout);
    tcase_add_test(tc, notify_odd);
    tcase_add_test(tc, notify_terminate);
    tcase_add_test(tc, notify_enomem);
    return s;
}

CIO_TEST_MAIN(make_suite)
