/*
 * cio-pg's connections and statements (pg/conn.c, pg/query.c), checked
 * against the contracts of include/cio-pg.h on a real PostgreSQL server
 * (tests/cio_pg_test.h finds it).
 *
 * Covered: connect (success, a refused port, a listener that never answers
 * bounded by the call's timeout and by an enclosing deadline, malformed
 * conninfo, a host name resolved off the loop thread, -EPERM outside a
 * task); statements with text, NULL and binary parameters and binary
 * results, row counts of every kind of statement, the result accessors;
 * prepared statements and their errors; server errors with their SQLSTATE
 * and fields; transactions (commit, rollback, a failed transaction, a
 * rollback from a cancelled task, BEGIN and COMMIT in a cancelled task
 * telling the truth); a running statement cancelled by a task cancel, by
 * cio_wait_for and by a scope deadline, really stopped on the server, the
 * connection usable afterwards; a backend that stops answering (SIGSTOP),
 * a host that vanishes from the network, a backend that is terminated;
 * a host list with a name that does not resolve; malformed input; COPY
 * through the wrong call; two tasks on one connection; close while busy;
 * many connections at once; a large result; notices; and allocation failure
 * in cio-pg's own allocations (the test program is linked with
 * -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc; without those options
 * that one test skips itself).
 *
 * Every table a test creates is a temporary table (private to its
 * connection) or carries the process id in its name, because the program
 * runs twice (epoll, io_uring) against the same server.
 */
#define CIO_PG_TEST_WRAP_ALLOC /* cio_pg_test.h's malloc wrappers */
#include "cio_pg_test.h"
#include "cio_test.h"

#include <cio-pg.h>
#include <libpq-fe.h>

#include <arpa/inet.h>
#include <dlfcn.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>

/* A timeout for connects that must succeed: generous, it only catches hangs. */
#define CONNECT_S CIO_PG_TEST_CONNECT_S

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */
/* ------------------------------------------------------------------------ */

/* A new connection to the test server (cio_pg_test.h), idle. */
static cio_pg_t *pg_open(void)
{
    cio_pg_t *c = cio_pg_test_connect();
    ck_assert_int_eq(cio_pg_status(c), CIO_PG_IDLE);
    return c;
}

static void pg_done(cio_pg_t *c) { ck_assert_int_eq(cio_pg_close(c), 0); }

/* Runs sql (no parameters), asserts that it succeeds and that it left no
 * error behind. */
static void exec_ok(cio_pg_t *c, const char *sql)
{
    cio_pg_test_exec(c, sql);
    ck_assert_str_eq(cio_pg_error_message(c), "");
    ck_assert_str_eq(cio_pg_error_sqlstate(c), "");
}

/* Asserts that c is usable: a statement runs and the status is `status`. */
static void assert_usable(cio_pg_t *c, int status)
{
    ck_assert_int_eq(cio_pg_test_int(c, "select 7", NULL), 7);
    ck_assert_int_eq(cio_pg_status(c), status);
}

/* Asserts a server error on c. */
static void assert_server_error(cio_pg_t *c, int64_t rc, const char *sqlstate)
{
    ck_assert_msg(rc == -EREMOTEIO, "rc %lld (%s), expected -EREMOTEIO", (long long)rc,
                  cio_err_name((int)rc));
    ck_assert_str_eq(cio_pg_error_sqlstate(c), sqlstate);
    ck_assert_str_ne(cio_pg_error_message(c), "");
}

static double elapsed_since(int64_t t0) { return (double)(loop_ns() - t0) / 1e9; }

/* The DSN with its key=... replaced by key=value (the DSN is the one of
 * pg_server.sh: key=value pairs, the key present). */
static void dsn_with(char *buf, size_t cap, const char *key, const char *value)
{
    const char *dsn = cio_pg_test_dsn();
    char k[32];
    snprintf(k, sizeof k, "%s=", key);
    const char *h = strstr(dsn, k);
    ck_assert_ptr_nonnull(h);
    size_t skip = strcspn(h, " ");
    snprintf(buf, cap, "%.*s%s%s%s", (int)(h - dsn), dsn, k, value, h + skip);
}

static void dsn_with_host(char *buf, size_t cap, const char *name)
{
    dsn_with(buf, cap, "host", name);
}

/* A TCP socket bound to a free port of 127.0.0.1; listening when asked. */
static int bound_socket(int *port, bool listening)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t len = sizeof a;
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    *port = ntohs(a.sin_port);
    if (listening)
        ck_assert_int_eq(listen(fd, 16), 0);
    return fd;
}

/* Whether the backend `pid` runs a statement, seen from another connection. */
static long long backend_active(cio_pg_t *other, int pid)
{
    char p[16];
    snprintf(p, sizeof p, "%d", pid);
    return cio_pg_test_int(
        other, "select count(*) from pg_stat_activity where pid = $1::int and state = 'active'", p);
}

/* Whether the backend `pid` exists at all. */
static long long backend_exists(cio_pg_t *other, int pid)
{
    char p[16];
    snprintf(p, sizeof p, "%d", pid);
    return cio_pg_test_int(other, "select count(*) from pg_stat_activity where pid = $1::int", p);
}

/*
 * Whether this test may stop the backend `pid` with signals: only on the
 * local server of pg_server.sh (a server given by CIO_PG_DSN alone may be
 * remote, and the pid then names an unrelated local process), and only a
 * process named postgres that we may signal.
 */
static bool backend_signalable(int pid)
{
    if (!cio_pg_test_datadir())
        return false;
    char path[64], comm[32] = "";
    snprintf(path, sizeof path, "/proc/%d/comm", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    bool named = fgets(comm, sizeof comm, f) && strncmp(comm, "postgres", 8) == 0;
    fclose(f);
    return named && kill(pid, 0) == 0;
}

/* Waits (polling the server, at most 10 s) until backend `pid` is gone. */
static void wait_backend_gone(cio_pg_t *other, int pid)
{
    for (int i = 0; i < 200 && backend_exists(other, pid); i++)
        ck_assert_int_eq(cio_sleep(0.05), 0);
    ck_assert_int_eq(backend_exists(other, pid), 0);
}

/* A task running one statement on a connection. */
typedef struct {
    cio_pg_t *c;
    const char *sql;
    double scope; /* > 0: run inside a scope with this deadline */
    int64_t rc;
    int64_t end_ns;
} stmt_t;

static int stmt_body(void *arg, void **result)
{
    (void)result;
    stmt_t *s = arg;
    cio_scope_t sc;
    if (s->scope > 0)
        ck_assert_int_eq(cio_scope_enter(&sc, s->scope, 0), 0);
    s->rc = cio_pg_query(s->c, NULL, s->sql, 0, NULL);
    if (s->scope > 0)
        cio_scope_exit(&sc);
    s->end_ns = loop_ns();
    return s->rc < 0 ? (int)s->rc : 0;
}

/* ------------------------------------------------------------------------ */
/* Connect                                                                   */
/* ------------------------------------------------------------------------ */

static int main_connect_ok(void *arg, void **result)
{
    (void)arg, (void)result;
    cio_pg_t *c = pg_open();
    ck_assert_str_eq(cio_pg_connect_error(), "");
    ck_assert_int_gt(cio_pg_backend_pid(c), 0);
    ck_assert_ptr_nonnull(cio_pg_pq(c));
    ck_assert_int_ge(PQserverVersion(cio_pg_pq(c)), 150000);
    ck_assert_str_eq(cio_pg_error_message(c), "");
    ck_assert_str_eq(cio_pg_error_sqlstate(c), "");
    ck_assert_ptr_null(cio_pg_error_field(c, 'C'));
    assert_usable(c, CIO_PG_IDLE);
    ck_assert_int_eq(cio_pg_set_cancel_timeout(c, 0.5), 0);
    ck_assert_int_eq(cio_pg_set_cancel_timeout(c, -1), -EINVAL);
    ck_assert_int_eq(cio_pg_set_cancel_timeout(c, NAN), -EINVAL);
    ck_assert_int_eq(cio_pg_set_cancel_timeout(NULL, 1), -EINVAL);
    pg_done(c);

    /* NULL everywhere. */
    ck_assert_int_eq(cio_pg_close(NULL), 0);
    ck_assert_int_eq(cio_pg_status(NULL), CIO_PG_BROKEN);
    ck_assert_int_eq(cio_pg_backend_pid(NULL), 0);
    ck_assert_ptr_null(cio_pg_pq(NULL));
    ck_assert_str_eq(cio_pg_error_message(NULL), "");
    ck_assert_str_eq(cio_pg_error_sqlstate(NULL), "");
    ck_assert_ptr_null(cio_pg_error_field(NULL, 'C'));
    ck_assert_int_eq(cio_pg_exec(NULL, "select 1"), -EINVAL);
    cio_pg_result_t *r = NOT_SET;
    ck_assert_int_eq(cio_pg_query(NULL, &r, "select 1", 0, NULL), -EINVAL);
    ck_assert_ptr_null(r);
    ck_assert_int_eq(cio_pg_prepare(NULL, "x", "select 1", 0, NULL), -EINVAL);
    ck_assert_int_eq(cio_pg_begin(NULL), -EINVAL);
    ck_assert_int_eq(cio_pg_commit(NULL), -EINVAL);
    ck_assert_int_eq(cio_pg_rollback(NULL), -EINVAL);
    ck_assert_int_eq(cio_pg_ntuples(NULL), 0);
    ck_assert_int_eq(cio_pg_nfields(NULL), 0);
    ck_assert_ptr_null(cio_pg_value(NULL, 0, 0));
    ck_assert_int_eq(cio_pg_length(NULL, 0, 0), -1);
    ck_assert_ptr_null(cio_pg_fname(NULL, 0));
    cio_pg_result_free(NULL);
    return 0;
}

START_TEST(connect_ok) { RUN_MAIN(main_connect_ok, NULL); }
END_TEST

static int main_connect_refused(void *arg, void **result)
{
    (void)arg, (void)result;
    int port;
    int fd = bound_socket(&port, false); /* bound, not listening: refused */
    char dsn[256];
    snprintf(dsn, sizeof dsn, "host=127.0.0.1 port=%d dbname=x connect_timeout=30", port);
    cio_pg_t *c = NOT_SET;
    int64_t t0 = loop_ns();
    ck_assert_int_eq(cio_pg_connect(&c, dsn, CONNECT_S), -ECONNREFUSED);
    ck_assert_double_lt(elapsed_since(t0), HANG_BOUND_S);
    ck_assert_ptr_null(c);
    ck_assert_msg(strstr(cio_pg_connect_error(), "refused") != NULL, "message: %s",
                  cio_pg_connect_error());
    /* Without the trailing newline libpq puts there. */
    size_t n = strlen(cio_pg_connect_error());
    ck_assert(n > 0 && cio_pg_connect_error()[n - 1] != '\n');

    /* An unknown database: the server refuses it. */
    char bad[1200];
    snprintf(bad, sizeof bad, "%s dbname=no_such_db_%d", cio_pg_test_dsn(), (int)getpid());
    ck_assert_int_eq(cio_pg_connect(&c, bad, CONNECT_S), -ECONNREFUSED);
    ck_assert_ptr_null(c);
    ck_assert_msg(strstr(cio_pg_connect_error(), "does not exist") != NULL, "message: %s",
                  cio_pg_connect_error());
    close(fd);

    /* A later success clears the message. */
    c = pg_open();
    ck_assert_str_eq(cio_pg_connect_error(), "");
    pg_done(c);
    return 0;
}

START_TEST(connect_refused) { RUN_MAIN(main_connect_refused, NULL); }
END_TEST

static int main_connect_timeout(void *arg, void **result)
{
    (void)arg, (void)result;
    int port;
    int fd = bound_socket(&port, true); /* accepts in the kernel, never answers */
    char dsn[256];
    snprintf(dsn, sizeof dsn, "host=127.0.0.1 port=%d dbname=x", port);

    /* The call's own timeout. */
    cio_pg_t *c = NOT_SET;
    int64_t t0 = loop_ns();
    ck_assert_int_eq(cio_pg_connect(&c, dsn, 0.3), -ETIMEDOUT);
    double el = elapsed_since(t0);
    ck_assert_double_ge(el, 0.3);
    ck_assert_double_lt(el, HANG_BOUND_S);
    ck_assert_ptr_null(c);
    ck_assert_str_ne(cio_pg_connect_error(), "");

    /* An enclosing scope's deadline, the call's own being infinite. */
    cio_scope_t s;
    c = NOT_SET;
    t0 = loop_ns();
    ck_assert_int_eq(cio_scope_enter(&s, 0.3, 0), 0);
    ck_assert_int_eq(cio_pg_connect(&c, dsn, INFINITY), -ETIMEDOUT);
    ck_assert_int_eq(cio_scope_exit(&s), -ETIMEDOUT);
    el = elapsed_since(t0);
    ck_assert_double_ge(el, 0.3);
    ck_assert_double_lt(el, HANG_BOUND_S);
    ck_assert_ptr_null(c);

    /* libpq's connect_timeout in the conninfo (whole seconds, at least 2),
     * the call's own timeout being infinite. */
    char dsn_ct[300];
    snprintf(dsn_ct, sizeof dsn_ct, "%s connect_timeout=2", dsn);
    c = NOT_SET;
    t0 = loop_ns();
    ck_assert_int_eq(cio_pg_connect(&c, dsn_ct, INFINITY), -ETIMEDOUT);
    el = elapsed_since(t0);
    ck_assert_double_ge(el, 2.0);
    ck_assert_double_lt(el, 2.0 + HANG_BOUND_S);
    ck_assert_ptr_null(c);

    /* A task cancelled while it connects. */
    close(fd);
    fd = bound_socket(&port, true);
    snprintf(dsn, sizeof dsn, "host=127.0.0.1 port=%d dbname=x", port);
    ck_assert_int_eq(cio_scope_enter(&s, INFINITY, 0), 0);
    cio_scope_cancel(&s);
    c = NOT_SET;
    ck_assert_int_eq(cio_pg_connect(&c, dsn, INFINITY), -ECANCELED);
    ck_assert_int_eq(cio_scope_exit(&s), -ECANCELED);
    ck_assert_ptr_null(c);
    close(fd);
    return 0;
}

START_TEST(connect_timeout) { RUN_MAIN(main_connect_timeout, NULL); }
END_TEST

static int main_connect_invalid(void *arg, void **result)
{
    (void)arg, (void)result;
    cio_pg_t *c = NOT_SET;
    ck_assert_int_eq(cio_pg_connect(&c, "host=127.0.0.1 port", CONNECT_S), -EINVAL);
    ck_assert_ptr_null(c);
    ck_assert_str_ne(cio_pg_connect_error(), "");
    c = NOT_SET;
    ck_assert_int_eq(cio_pg_connect(&c, "no_such_keyword=1", CONNECT_S), -EINVAL);
    ck_assert_ptr_null(c);
    ck_assert_msg(strstr(cio_pg_connect_error(), "no_such_keyword") != NULL, "message: %s",
                  cio_pg_connect_error());
    c = NOT_SET;
    ck_assert_int_eq(cio_pg_connect(&c, "postgresql://[::1", CONNECT_S), -EINVAL);
    ck_assert_ptr_null(c);
    c = NOT_SET;
    ck_assert_int_eq(cio_pg_connect(&c, "host='unterminated", CONNECT_S), -EINVAL);
    ck_assert_ptr_null(c);
    c = NOT_SET;
    ck_assert_int_eq(cio_pg_connect(&c, NULL, CONNECT_S), -EINVAL);
    ck_assert_ptr_null(c);
    c = NOT_SET;
    ck_assert_int_eq(cio_pg_connect(&c, cio_pg_test_dsn(), NAN), -EINVAL);
    ck_assert_ptr_null(c);
    ck_assert_int_eq(cio_pg_connect(NULL, cio_pg_test_dsn(), CONNECT_S), -EINVAL);
    return 0;
}

START_TEST(connect_invalid) { RUN_MAIN(main_connect_invalid, NULL); }
END_TEST

/*
 * getaddrinfo interposed (the executable's definition wins over the C
 * library's for libpq too): it records a look-up of a name (not a numeric
 * address) made on the loop's thread, which would block the loop.
 */
static pthread_t loop_thread;
static atomic_bool watch_lookups;
static atomic_int lookups_on_loop, lookups_off_loop;

int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                struct addrinfo **res)
{
    static int (*real)(const char *, const char *, const struct addrinfo *,
                       struct addrinfo **);
    if (!real)
        *(void **)&real = dlsym(RTLD_NEXT, "getaddrinfo");
    if (atomic_load(&watch_lookups) && node && !strcmp(node, "localhost")) {
        if (pthread_equal(pthread_self(), loop_thread))
            atomic_fetch_add(&lookups_on_loop, 1);
        else
            atomic_fetch_add(&lookups_off_loop, 1);
    }
    return real(node, service, hints, res);
}

static int main_connect_localhost(void *arg, void **result)
{
    (void)arg, (void)result;
    char dsn[1200];
    dsn_with_host(dsn, sizeof dsn, "localhost");
    loop_thread = pthread_self();
    atomic_store(&watch_lookups, true);
    cio_pg_t *c = NOT_SET;
    int rc = cio_pg_connect(&c, dsn, CONNECT_S);
    atomic_store(&watch_lookups, false);
    ck_assert_msg(rc == 0, "connect %s: %s (%s)", dsn, cio_err_name(rc), cio_pg_connect_error());
    ck_assert_int_eq(atomic_load(&lookups_on_loop), 0);
    ck_assert_int_ge(atomic_load(&lookups_off_loop), 1);
    assert_usable(c, CIO_PG_IDLE);
    /* The server's view: a TCP client (the socket of the test server is
     * 127.0.0.1 only, so localhost's 127.0.0.1 entry was the one used). */
    ck_assert_int_eq(cio_pg_test_int(c,
                                     "select count(*) from pg_stat_activity "
                                     "where pid = pg_backend_pid() and client_addr is not null",
                                     NULL),
                     1);
    pg_done(c);

    /* A host list: one whose name does not resolve is skipped, as libpq
     * does, and the next one is used; the success leaves no message. */
    dsn_with_host(dsn, sizeof dsn, "no-such-host.invalid,127.0.0.1");
    c = NOT_SET;
    rc = cio_pg_connect(&c, dsn, CONNECT_S);
    ck_assert_msg(rc == 0, "connect %s: %s (%s)", dsn, cio_err_name(rc), cio_pg_connect_error());
    ck_assert_str_eq(cio_pg_connect_error(), "");
    assert_usable(c, CIO_PG_IDLE);
    pg_done(c);

    /* A name that does not resolve: refused, with the look-up's message. */
    dsn_with_host(dsn, sizeof dsn, "no-such-host.invalid");
    c = NOT_SET;
    ck_assert_int_eq(cio_pg_connect(&c, dsn, CONNECT_S), -ECONNREFUSED);
    ck_assert_ptr_null(c);
    ck_assert_msg(strstr(cio_pg_connect_error(), "no-such-host.invalid") != NULL, "message: %s",
                  cio_pg_connect_error());
    return 0;
}

START_TEST(connect_localhost) { RUN_MAIN(main_connect_localhost, NULL); }
END_TEST

static cio_pg_t *outside_conn;

static int main_open_for_outside(void *arg, void **result)
{
    (void)arg, (void)result;
    outside_conn = pg_open();
    return 0;
}

START_TEST(outside_task)
{
    cio_pg_t *c = NOT_SET;
    ck_assert_int_eq(cio_pg_connect(&c, cio_pg_test_dsn(), CONNECT_S), -EPERM);
    ck_assert_ptr_null(c);
    /* A connection made in a task, used after its loop ended. */
    RUN_MAIN(main_open_for_outside, NULL);
    ck_assert_int_eq(cio_pg_exec(outside_conn, "select 1"), -EPERM);
    cio_pg_result_t *r = NOT_SET;
    ck_assert_int_eq(cio_pg_query(outside_conn, &r, "select 1", 0, NULL), -EPERM);
    ck_assert_ptr_null(r);
    ck_assert_int_eq(cio_pg_prepare(outside_conn, "p", "select 1", 0, NULL), -EPERM);
    ck_assert_int_eq(cio_pg_query_prepared(outside_conn, NULL, "p", 0, NULL, NULL, NULL, 0),
                     -EPERM);
    ck_assert_int_eq(cio_pg_begin(outside_conn), -EPERM);
    ck_assert_int_eq(cio_pg_rollback(outside_conn), -EPERM);
    ck_assert_int_eq(cio_pg_status(outside_conn), CIO_PG_IDLE);
    ck_assert_int_eq(cio_pg_close(outside_conn), 0);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Statements                                                                */
/* ------------------------------------------------------------------------ */

static int main_params(void *arg, void **result)
{
    (void)arg, (void)result;
    cio_pg_t *c = pg_open();

    /* Text parameters, a NULL among them. */
    const char *vals[3] = {"h\xc3\xa9llo", "41", NULL};
    cio_pg_result_t *r = NOT_SET;
    ck_assert_int_eq(cio_pg_query(c, &r,
                                  "select $1::text as t, $2::int + 1 as n, $3::text is null "
                                  "as isnull, $3::text as nul",
                                  3, vals),
                     1);
    ck_assert_int_eq(cio_pg_ntuples(r), 1);
    ck_assert_int_eq(cio_pg_nfields(r), 4);
    ck_assert_str_eq(cio_pg_fname(r, 0), "t");
    ck_assert_str_eq(cio_pg_fname(r, 3), "nul");
    ck_assert_ptr_null(cio_pg_fname(r, 4));
    ck_assert_ptr_null(cio_pg_fname(r, -1));
    ck_assert_str_eq(cio_pg_value(r, 0, 0), "h\xc3\xa9llo");
    ck_assert_int_eq(cio_pg_length(r, 0, 0), 6);
    ck_assert_str_eq(cio_pg_value(r, 0, 1), "42");
    ck_assert_str_eq(cio_pg_value(r, 0, 2), "t");
    ck_assert_ptr_null(cio_pg_value(r, 0, 3));
    ck_assert_int_eq(cio_pg_length(r, 0, 3), -1);
    ck_assert_ptr_null(cio_pg_value(r, 1, 0));
    ck_assert_ptr_null(cio_pg_value(r, 0, 4));
    ck_assert_ptr_null(cio_pg_value(r, -1, 0));
    ck_assert_int_eq(cio_pg_length(r, 0, 9), -1);
    cio_pg_result_free(r);

    /* A binary int4 parameter, binary results; lengths bound a text one. */
    uint32_t be = htonl(41);
    const char *bvals[2] = {(const char *)&be, "abcdef"};
    const unsigned types[2] = {23, 25}; /* int4, text */
    const int lengths[2] = {4, 3};
    const int formats[2] = {1, 0};
    r = NOT_SET;
    ck_assert_int_eq(cio_pg_query_params(c, &r, "select $1 + 1, length($2), $1::int8", 2, types,
                                         bvals, lengths, formats, 1),
                     1);
    ck_assert_int_eq(cio_pg_length(r, 0, 0), 4);
    uint32_t got;
    memcpy(&got, cio_pg_value(r, 0, 0), 4);
    ck_assert_uint_eq(ntohl(got), 42);
    /* length($2): the text parameter is "abcdef" in full (lengths are
     * ignored by the server for text). */
    memcpy(&got, cio_pg_value(r, 0, 1), 4);
    ck_assert_uint_eq(ntohl(got), 6);
    ck_assert_int_eq(cio_pg_length(r, 0, 2), 8);
    cio_pg_result_free(r);

    /* Row counts. */
    ck_assert_int_eq(cio_pg_query(c, NULL, "create temp table rc (k int primary key, v text)", 0,
                                  NULL),
                     0);
    ck_assert_int_eq(
        cio_pg_query(c, NULL, "insert into rc select g, 'v' || g from generate_series(1, 5) g", 0,
                     NULL),
        5);
    ck_assert_int_eq(cio_pg_query(c, NULL, "update rc set v = 'u' where k <= 3", 0, NULL), 3);
    ck_assert_int_eq(cio_pg_query(c, NULL, "delete from rc where k = 5", 0, NULL), 1);
    ck_assert_int_eq(cio_pg_query(c, NULL, "delete from rc where k = 5", 0, NULL), 0);
    r = NOT_SET;
    ck_assert_int_eq(cio_pg_query(c, &r, "select k, v from rc order by k", 0, NULL), 4);
    ck_assert_int_eq(cio_pg_ntuples(r), 4);
    ck_assert_str_eq(cio_pg_value(r, 3, 1), "v4");
    cio_pg_result_free(r);
    r = NOT_SET;
    ck_assert_int_eq(cio_pg_query(c, &r, "select k from rc where k > 100", 0, NULL), 0);
    ck_assert_ptr_nonnull(r);
    ck_assert_int_eq(cio_pg_ntuples(r), 0);
    ck_assert_int_eq(cio_pg_nfields(r), 1);
    cio_pg_result_free(r);
    /* An empty statement: nothing, no error. */
    ck_assert_int_eq(cio_pg_query(c, NULL, "", 0, NULL), 0);
    ck_assert_int_eq(cio_pg_exec(c, ""), 0);
    /* Several statements through exec; the last ones see the first ones. */
    exec_ok(c, "insert into rc values (10, 'a'); update rc set v = 'b' where k = 10");
    ck_assert_int_eq(cio_pg_test_int(c, "select count(*) from rc where v = 'b'", NULL), 1);
    pg_done(c);
    return 0;
}

START_TEST(params) { RUN_MAIN(main_params, NULL); }
END_TEST

static int main_prepared(void *arg, void **result)
{
    (void)arg, (void)result;
    cio_pg_t *c = pg_open();
    const unsigned types[1] = {23};
    ck_assert_int_eq(cio_pg_prepare(c, "dbl", "select $1 * 2", 1, types), 0);
    for (int i = 0; i < 200; i++) {
        char v[16];
        snprintf(v, sizeof v, "%d", i);
        const char *vals[1] = {v};
        cio_pg_result_t *r = NOT_SET;
        ck_assert_int_eq(cio_pg_query_prepared(c, &r, "dbl", 1, vals, NULL, NULL, 0), 1);
        ck_assert_int_eq(strtol(cio_pg_value(r, 0, 0), NULL, 10), 2 * i);
        cio_pg_result_free(r);
    }
    /* Binary parameter and result through a prepared statement. */
    uint32_t be = htonl(21);
    const char *bv[1] = {(const char *)&be};
    const int len[1] = {4}, fmt[1] = {1};
    cio_pg_result_t *r = NOT_SET;
    ck_assert_int_eq(cio_pg_query_prepared(c, &r, "dbl", 1, bv, len, fmt, 1), 1);
    uint32_t got;
    memcpy(&got, cio_pg_value(r, 0, 0), 4);
    ck_assert_uint_eq(ntohl(got), 42);
    cio_pg_result_free(r);

    /* The unnamed statement, types inferred. */
    ck_assert_int_eq(cio_pg_prepare(c, "", "select $1::text || '!'", 0, NULL), 0);
    const char *hv[1] = {"hi"};
    r = NOT_SET;
    ck_assert_int_eq(cio_pg_query_prepared(c, &r, "", 1, hv, NULL, NULL, 0), 1);
    ck_assert_str_eq(cio_pg_value(r, 0, 0), "hi!");
    cio_pg_result_free(r);

    /* Errors; the connection is usable after each one. */
    r = NOT_SET;
    assert_server_error(c, cio_pg_query_prepared(c, &r, "no_such", 0, NULL, NULL, NULL, 0),
                        "26000");
    ck_assert_ptr_null(r);
    assert_usable(c, CIO_PG_IDLE);
    assert_server_error(c, cio_pg_prepare(c, "dbl", "select 1", 0, NULL), "42P05");
    assert_usable(c, CIO_PG_IDLE);
    const char *two[2] = {"1", "2"};
    assert_server_error(c, cio_pg_query_prepared(c, NULL, "dbl", 2, two, NULL, NULL, 0), "08P01");
    assert_usable(c, CIO_PG_IDLE);
    assert_server_error(c, cio_pg_query_prepared(c, NULL, "dbl", 0, NULL, NULL, NULL, 0), "08P01");
    assert_usable(c, CIO_PG_IDLE);
    assert_server_error(c, cio_pg_prepare(c, "bad", "selec 1", 0, NULL), "42601");
    assert_usable(c, CIO_PG_IDLE);
    const char *notint[1] = {"x"};
    assert_server_error(c, cio_pg_query_prepared(c, NULL, "dbl", 1, notint, NULL, NULL, 0),
                        "22P02");
    assert_usable(c, CIO_PG_IDLE);
    /* Still there after the errors. */
    const char *five[1] = {"5"};
    r = NOT_SET;
    ck_assert_int_eq(cio_pg_query_prepared(c, &r, "dbl", 1, five, NULL, NULL, 0), 1);
    ck_assert_str_eq(cio_pg_value(r, 0, 0), "10");
    cio_pg_result_free(r);

    /* Argument errors. */
    ck_assert_int_eq(cio_pg_prepare(c, NULL, "select 1", 0, NULL), -EINVAL);
    ck_assert_int_eq(cio_pg_prepare(c, "x", NULL, 0, NULL), -EINVAL);
    ck_assert_int_eq(cio_pg_prepare(c, "x", "select 1", -1, NULL), -EINVAL);
    ck_assert_int_eq(cio_pg_prepare(c, "x", "select 1", 70000, NULL), -EINVAL);
    r = NOT_SET;
    ck_assert_int_eq(cio_pg_query_prepared(c, &r, NULL, 0, NULL, NULL, NULL, 0), -EINVAL);
    ck_assert_ptr_null(r);
    ck_assert_int_eq(cio_pg_query_prepared(c, NULL, "dbl", -1, NULL, NULL, NULL, 0), -EINVAL);
    ck_assert_int_eq(cio_pg_query_prepared(c, NULL, "dbl", 1, five, NULL, NULL, 2), -EINVAL);
    assert_usable(c, CIO_PG_IDLE);
    pg_done(c);
    return 0;
}

START_TEST(prepared) { RUN_MAIN(main_prepared, NULL); }
END_TEST

static int main_server_errors(void *arg, void **result)
{
    (void)arg, (void)result;
    cio_pg_t *c = pg_open();

    /* A syntax error, with its position. */
    assert_server_error(c, cio_pg_exec(c, "select 1 from from"), "42601");
    ck_assert_msg(strstr(cio_pg_error_message(c), "syntax error") != NULL, "message: %s",
                  cio_pg_error_message(c));
    ck_assert_str_eq(cio_pg_error_field(c, 'P'), "15");
    ck_assert_str_eq(cio_pg_error_field(c, 'S'), "ERROR");
    ck_assert_ptr_null(cio_pg_error_field(c, 'n'));
    /* The same through the extended protocol. */
    cio_pg_result_t *r = NOT_SET;
    assert_server_error(c, cio_pg_query(c, &r, "selec 1", 0, NULL), "42601");
    ck_assert_ptr_null(r);
    ck_assert_str_eq(cio_pg_error_field(c, 'P'), "1");
    /* The next success clears the error. */
    assert_usable(c, CIO_PG_IDLE);
    ck_assert_str_eq(cio_pg_error_message(c), "");
    ck_assert_str_eq(cio_pg_error_sqlstate(c), "");
    ck_assert_ptr_null(cio_pg_error_field(c, 'P'));

    /* A unique violation: the constraint's name and the detail. */
    exec_ok(c, "create temp table uq (k int constraint uq_k_key unique)");
    ck_assert_int_eq(cio_pg_query(c, NULL, "insert into uq values (1)", 0, NULL), 1);
    const char *one[1] = {"1"};
    assert_server_error(c, cio_pg_query(c, NULL, "insert into uq values ($1::int)", 1, one),
                        "23505");
    ck_assert_str_eq(cio_pg_error_field(c, 'n'), "uq_k_key");
    ck_assert_str_eq(cio_pg_error_field(c, 't'), "uq");
    ck_assert_ptr_nonnull(cio_pg_error_field(c, 'D'));
    ck_assert_msg(strstr(cio_pg_error_field(c, 'D'), "(k)=(1)") != NULL, "detail: %s",
                  cio_pg_error_field(c, 'D'));
    assert_usable(c, CIO_PG_IDLE);

    /* Several statements: the first error stops the rest. */
    assert_server_error(c, cio_pg_exec(c, "insert into uq values (2); select 1/0; "
                                          "insert into uq values (3)"),
                        "22012");
    /* The simple protocol runs the string as one implicit transaction: the
     * first insert is rolled back with it. */
    ck_assert_int_eq(cio_pg_test_int(c, "select count(*) from uq", NULL), 1);
    /* An undefined table. */
    assert_server_error(c, cio_pg_exec(c, "select * from no_such_table_at_all"), "42P01");
    /* The server's own statement timeout: its error (57014), not a
     * cancellation of ours. */
    exec_ok(c, "set statement_timeout = 100");
    assert_server_error(c, cio_pg_query(c, NULL, "select pg_sleep(5)", 0, NULL), "57014");
    exec_ok(c, "reset statement_timeout");
    assert_usable(c, CIO_PG_IDLE);
    pg_done(c);
    return 0;
}

START_TEST(server_errors) { RUN_MAIN(main_server_errors, NULL); }
END_TEST

/* ------------------------------------------------------------------------ */
/* Transactions                                                              */
/* ------------------------------------------------------------------------ */

static int main_transactions(void *arg, void **result)
{
    (void)arg, (void)result;
    cio_pg_t *c = pg_open(), *other = pg_open();
    char table[64], sql[256];
    snprintf(table, sizeof table, "cio_test_pg_tx_%d", (int)getpid());
    snprintf(sql, sizeof sql, "drop table if exists %s; create table %s (k int)", table, table);
    exec_ok(c, sql);
    char count[128], insert[128];
    snprintf(count, sizeof count, "select count(*) from %s", table);
    snprintf(insert, sizeof insert, "insert into %s values ($1::int)", table);
    const char *v1[1] = {"1"};

    /* Commit: visible to the other connection afterwards, not before. */
    ck_assert_int_eq(cio_pg_begin(c), 0);
    ck_assert_int_eq(cio_pg_status(c), CIO_PG_INTRANS);
    ck_assert_int_eq(cio_pg_query(c, NULL, insert, 1, v1), 1);
    ck_assert_int_eq(cio_pg_test_int(other, count, NULL), 0);
    ck_assert_int_eq(cio_pg_commit(c), 0);
    ck_assert_int_eq(cio_pg_status(c), CIO_PG_IDLE);
    ck_assert_int_eq(cio_pg_test_int(other, count, NULL), 1);

    /* Rollback: never visible. */
    ck_assert_int_eq(cio_pg_begin(c), 0);
    ck_assert_int_eq(cio_pg_query(c, NULL, insert, 1, v1), 1);
    ck_assert_int_eq(cio_pg_test_int(c, count, NULL), 2);
    ck_assert_int_eq(cio_pg_rollback(c), 0);
    ck_assert_int_eq(cio_pg_status(c), CIO_PG_IDLE);
    ck_assert_int_eq(cio_pg_test_int(other, count, NULL), 1);
    ck_assert_int_eq(cio_pg_test_int(c, count, NULL), 1);

    /* A failed transaction: everything is refused until its end, and its
     * COMMIT fails with 25P02 (the server rolled it back). */
    ck_assert_int_eq(cio_pg_begin(c), 0);
    ck_assert_int_eq(cio_pg_query(c, NULL, insert, 1, v1), 1);
    assert_server_error(c, cio_pg_exec(c, "select 1/0"), "22012");
    ck_assert_int_eq(cio_pg_status(c), CIO_PG_INERROR);
    assert_server_error(c, cio_pg_query(c, NULL, "select 1", 0, NULL), "25P02");
    ck_assert_int_eq(cio_pg_status(c), CIO_PG_INERROR);
    assert_server_error(c, cio_pg_commit(c), "25P02");
    ck_assert_int_eq(cio_pg_status(c), CIO_PG_IDLE);
    ck_assert_int_eq(cio_pg_test_int(other, count, NULL), 1);

    /* The same failed transaction ended by a rollback. */
    ck_assert_int_eq(cio_pg_begin(c), 0);
    assert_server_error(c, cio_pg_exec(c, "select 1/0"), "22012");
    ck_assert_int_eq(cio_pg_status(c), CIO_PG_INERROR);
    ck_assert_int_eq(cio_pg_rollback(c), 0);
    ck_assert_int_eq(cio_pg_status(c), CIO_PG_IDLE);
    assert_usable(c, CIO_PG_IDLE);

    /* Rollback outside a transaction: the server warns, no error. */
    ck_assert_int_eq(cio_pg_rollback(c), 0);

    snprintf(sql, sizeof sql, "drop table %s", table);
    exec_ok(other, sql);
    pg_done(c);
    pg_done(other);
    return 0;
}

START_TEST(transactions) { RUN_MAIN(main_transactions, NULL); }
END_TEST

/* A task that opens a transaction, is cancelled, and cleans up with a
 * rollback. */
typedef struct {
    cio_pg_t *c;
    const char *insert;
    int rc_after_cancel, rc_rollback, status_after;
} txcancel_t;

static int txcancel_body(void *arg, void **result)
{
    (void)result;
    txcancel_t *t = arg;
    ck_assert_int_eq(cio_pg_begin(t->c), 0);
    ck_assert_int_eq(cio_pg_exec(t->c, t->insert), 0);
    /* Wait to be cancelled. */
    t->rc_after_cancel = cio_sleep(30);
    /* Every await point fails now, a statement included... */
    ck_assert_int_eq(cio_pg_exec(t->c, "select 1"), -ECANCELED);
    /* ...but the rollback is cleanup, and runs. */
    t->rc_rollback = cio_pg_rollback(t->c);
    t->status_after = cio_pg_status(t->c);
    return -ECANCELED;
}

static int main_rollback_cancelled(void *arg, void **result)
{
    (void)arg, (void)result;
    cio_pg_t *c = pg_open(), *other = pg_open();
    char table[64], sql[256], insert[128];
    snprintf(table, sizeof table, "cio_test_pg_rb_%d", (int)getpid());
    snprintf(sql, sizeof sql, "drop table if exists %s; create table %s (k int)", table, table);
    exec_ok(c, sql);
    snprintf(insert, sizeof insert, "insert into %s values (1)", table);
    txcancel_t tc = {.c = c, .insert = insert, .rc_after_cancel = 1};
    cio_task_t *t = spawn(txcancel_body, &tc);
    while (cio_pg_status(c) != CIO_PG_INTRANS || tc.rc_after_cancel != 1)
        ck_assert_int_eq(cio_sleep(0.01), 0);
    settle();
    ck_assert_int_eq(cio_task_cancel(t), 1);
    ck_assert_int_eq(finish(t), -ECANCELED);
    ck_assert_int_eq(tc.rc_after_cancel, -ECANCELED);
    ck_assert_int_eq(tc.rc_rollback, 0);
    ck_assert_int_eq(tc.status_after, CIO_PG_IDLE);
    snprintf(sql, sizeof sql, "select count(*) from %s", table);
    ck_assert_int_eq(cio_pg_test_int(other, sql, NULL), 0);
    assert_usable(c, CIO_PG_IDLE);
    snprintf(sql, sizeof sql, "drop table %s", table);
    exec_ok(other, sql);
    pg_done(c);
    pg_done(other);
    return 0;
}

START_TEST(rollback_cancelled) { RUN_MAIN(main_rollback_cancelled, NULL); }
END_TEST

/* BEGIN in a task already cancelled (or past its deadline): the server
 * may run it before the cancellation is seen, and the caller, who gets the
 * error, must not be left inside a transaction it does not know of. */
static int main_begin_cancelled(void *arg, void **result)
{
    (void)arg, (void)result;
    cio_pg_t *c = pg_open();
    for (int i = 0; i < 2; i++) {
        cio_scope_t s;
        ck_assert_int_eq(cio_scope_enter(&s, i == 0 ? INFINITY : 0.0, 0), 0);
        if (i == 0)
            cio_scope_cancel(&s);
        int rc = cio_pg_begin(c);
        cio_scope_exit(&s);
        ck_assert_int_eq(rc, i == 0 ? -ECANCELED : -ETIMEDOUT);
        ck_assert_int_eq(cio_pg_status(c), CIO_PG_IDLE);
        assert_usable(c, CIO_PG_IDLE);
    }
    /* A BEGIN inside a transaction only warns; a failure there does not
     * roll back the caller's transaction. */
    ck_assert_int_eq(cio_pg_begin(c), 0);
    ck_assert_int_eq(cio_pg_begin(c), 0);
    ck_assert_int_eq(cio_pg_status(c), CIO_PG_INTRANS);
    ck_assert_int_eq(cio_pg_rollback(c), 0);
    pg_done(c);
    return 0;
}

START_TEST(begin_cancelled) { RUN_MAIN(main_begin_cancelled, NULL); }
END_TEST

/* COMMIT in a task cancelled while it runs (after 0..9 loop turns, so that
 * the cancellation meets every stage: before the COMMIT is sent, while the
 * server runs it, after its result arrived). The server may have committed
 * before the cancel request arrived (a COMMIT it has begun is not
 * cancelled). Whatever happened, the call must tell the truth: 0 and the
 * work visible, or -ECANCELED and nothing visible; and the cancellation is
 * not lost (a later await point returns it). */
typedef struct {
    cio_pg_t *c;
    int rc, after;
} committer_t;

static int committer_body(void *arg, void **result)
{
    (void)result;
    committer_t *k = arg;
    k->rc = cio_pg_commit(k->c);
    /* The task cannot end before its cancellation, which some await point
     * must report: the COMMIT's, or this one. */
    k->after = cio_sleep(30);
    return 0;
}

static int main_commit_cancelled(void *arg, void **result)
{
    (void)arg, (void)result;
    cio_pg_t *c = pg_open(), *other = pg_open();
    char table[64], sql[256], count[128];
    snprintf(table, sizeof table, "cio_test_pg_cc_%d", (int)getpid());
    snprintf(sql, sizeof sql,
             "drop table if exists %s; create table %s "
             "(k int unique deferrable initially deferred)",
             table, table);
    exec_ok(c, sql);
    snprintf(count, sizeof count, "select count(*) from %s", table);
    snprintf(sql, sizeof sql, "insert into %s values (-1)", table);
    exec_ok(c, sql);
    int committed = 1, cancelled = 0;
    for (int i = 0; i < 20; i++) {
        ck_assert_int_eq(cio_pg_begin(c), 0);
        /* The last round inserts a duplicate, which the deferred constraint
         * catches at the COMMIT. */
        snprintf(sql, sizeof sql, "insert into %s values (%d)", table, i < 19 ? i : -1);
        exec_ok(c, sql);
        committer_t k = {.c = c, .rc = 1, .after = 1};
        cio_task_t *t = spawn(committer_body, &k);
        for (int y = 0; y < i % 10; y++)
            ck_assert_int_eq(cio_yield(), 0);
        ck_assert_int_eq(cio_task_cancel(t), 1);
        ck_assert_int_eq(finish(t), 0);
        ck_assert_int_eq(k.after, -ECANCELED);
        long long n = cio_pg_test_int(other, count, NULL);
        if (k.rc == 0) {
            ck_assert_int_lt(i, 19);
            ck_assert_int_eq(n, committed + 1);
            ck_assert_int_eq(cio_pg_status(c), CIO_PG_IDLE);
            committed++;
        } else if (k.rc == -EREMOTEIO) {
            ck_assert_int_eq(i, 19);
            ck_assert_str_eq(cio_pg_error_sqlstate(c), "23505");
            ck_assert_int_eq(n, committed);
        } else {
            ck_assert_int_eq(k.rc, -ECANCELED);
            ck_assert_int_eq(n, committed);
            ck_assert_int_eq(cio_pg_rollback(c), 0);
            cancelled++;
        }
        assert_usable(c, CIO_PG_IDLE);
    }
    fprintf(stderr, "commit_cancelled: %d committed, %d cancelled in time\n", committed - 1,
            cancelled);
    snprintf(sql, sizeof sql, "drop table %s", table);
    exec_ok(other, sql);
    pg_done(c);
    pg_done(other);
    return 0;
}

START_TEST(commit_cancelled) { RUN_MAIN(main_commit_cancelled, NULL); }
END_TEST

/* ------------------------------------------------------------------------ */
/* Cancellation of a running statement                                       */
/* ------------------------------------------------------------------------ */

/* How the statement is stopped: _i of the looped test. */
enum { BY_CANCEL, BY_WAIT_FOR, BY_SCOPE, BY_CANCEL_IN_TX, N_BY };

static int main_cancel_query(void *arg, void **result)
{
    (void)result;
    int how = *(int *)arg;
    cio_pg_t *c = pg_open(), *other = pg_open();
    int pid = cio_pg_backend_pid(c);
    if (how == BY_CANCEL_IN_TX)
        ck_assert_int_eq(cio_pg_begin(c), 0);
    stmt_t s = {.c = c, .sql = "select pg_sleep(30)", .scope = how == BY_SCOPE ? 0.2 : 0};
    int64_t t0 = loop_ns();
    cio_task_t *t = spawn(stmt_body, &s);
    int rc;
    if (how == BY_WAIT_FOR) {
        rc = cio_wait_for(t, 0.2, NULL);
        ck_assert_int_eq(rc, -ETIMEDOUT);
        ck_assert_int_eq(s.rc, -ECANCELED);
        cio_future_release(t);
    } else if (how == BY_SCOPE) {
        rc = finish(t);
        ck_assert_int_eq(rc, -ETIMEDOUT);
        ck_assert_int_eq(s.rc, -ETIMEDOUT);
    } else {
        ck_assert_int_eq(cio_sleep(0.2), 0);
        ck_assert_int_eq(backend_active(other, pid), 1);
        ck_assert_int_eq(cio_task_cancel(t), 1);
        ck_assert_int_eq(finish(t), -ECANCELED);
        ck_assert_int_eq(s.rc, -ECANCELED);
    }
    /* Quickly: the cancel request, not the 30 s sleep. */
    double el = (double)(s.end_ns - t0) / 1e9;
    ck_assert_double_ge(el, 0.2);
    ck_assert_double_lt(el, HANG_BOUND_S);
    /* The server really stopped: the backend is idle (or idle in a failed
     * transaction), and the same connection runs the next statement. */
    ck_assert_int_eq(backend_active(other, pid), 0);
    ck_assert_int_eq(cio_pg_backend_pid(c), pid);
    if (how == BY_CANCEL_IN_TX) {
        ck_assert_int_eq(cio_pg_status(c), CIO_PG_INERROR);
        assert_server_error(c, cio_pg_exec(c, "select 1"), "25P02");
        ck_assert_int_eq(cio_pg_rollback(c), 0);
    }
    assert_usable(c, CIO_PG_IDLE);
    pg_done(c);
    pg_done(other);
    return 0;
}

START_TEST(cancel_query)
{
    int how = _i;
    RUN_MAIN(main_cancel_query, &how);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* A peer that vanishes, a connection terminated                             */
/* ------------------------------------------------------------------------ */

static int main_peer_stopped(void *arg, void **result)
{
    (void)arg, (void)result;
    cio_pg_t *c = pg_open(), *other = pg_open();
    int pid = cio_pg_backend_pid(c);
    if (!backend_signalable(pid)) {
        fprintf(stderr, "peer_stopped: skipped (the server's backends cannot be signalled)\n");
        pg_done(c);
        pg_done(other);
        return 0;
    }
    ck_assert_int_eq(cio_pg_set_cancel_timeout(c, 0.5), 0);
    /* The backend freezes (root may stop the server's processes). */
    ck_assert_int_eq(kill(pid, SIGSTOP), 0);
    cio_scope_t s;
    int64_t t0 = loop_ns();
    ck_assert_int_eq(cio_scope_enter(&s, 0.5, 0), 0);
    int64_t rc = cio_pg_query(c, NULL, "select 1", 0, NULL);
    int rs = cio_scope_exit(&s);
    double el = elapsed_since(t0);
    int status = cio_pg_status(c);
    ck_assert_int_eq(kill(pid, SIGCONT), 0);
    ck_assert_int_eq(rc, -ETIMEDOUT);
    ck_assert_int_eq(rs, -ETIMEDOUT);
    /* The deadline, then at most the cancel timeout (and some slack). */
    ck_assert_double_ge(el, 0.5);
    ck_assert_double_lt(el, 0.5 + 0.5 + 1.0);
    ck_assert_int_eq(status, CIO_PG_BROKEN);
    ck_assert_int_eq(cio_pg_exec(c, "select 1"), -ENOTCONN);
    ck_assert_int_eq(cio_pg_query(c, NULL, "select 1", 0, NULL), -ENOTCONN);
    ck_assert_int_eq(cio_pg_backend_pid(c), 0);
    ck_assert_str_ne(cio_pg_error_message(c), "");
    ck_assert_int_eq(cio_pg_rollback(c), -ENOTCONN);
    pg_done(c);
    /* Resumed, the backend finds its client gone and ends. */
    wait_backend_gone(other, pid);
    pg_done(other);
    return 0;
}

START_TEST(peer_stopped) { RUN_MAIN(main_peer_stopped, NULL); }
END_TEST

/* cio_pg_rollback on a backend that stopped answering: bounded by the cancel
 * timeout (its contract), not by twice that. */
static int main_rollback_stopped(void *arg, void **result)
{
    (void)arg, (void)result;
    cio_pg_t *c = pg_open(), *other = pg_open();
    int pid = cio_pg_backend_pid(c);
    if (!backend_signalable(pid)) {
        fprintf(stderr, "rollback_stopped: skipped (the server's backends cannot be signalled)\n");
        pg_done(c);
        pg_done(other);
        return 0;
    }
    ck_assert_int_eq(cio_pg_set_cancel_timeout(c, 2.0), 0);
    ck_assert_int_eq(cio_pg_begin(c), 0);
    ck_assert_int_eq(kill(pid, SIGSTOP), 0);
    int64_t t0 = loop_ns();
    int rc = cio_pg_rollback(c);
    double el = elapsed_since(t0);
    ck_assert_int_eq(kill(pid, SIGCONT), 0);
    ck_assert_int_eq(rc, -ETIMEDOUT);
    ck_assert_double_ge(el, 2.0);
    ck_assert_double_lt(el, 2.0 + 1.0);
    ck_assert_int_eq(cio_pg_status(c), CIO_PG_BROKEN);
    ck_assert_int_eq(cio_pg_exec(c, "select 1"), -ENOTCONN);
    pg_done(c);
    wait_backend_gone(other, pid);
    pg_done(other);
    return 0;
}

START_TEST(rollback_stopped) { RUN_MAIN(main_rollback_stopped, NULL); }
END_TEST

/*
 * A server host that vanishes from the network. The connection goes through
 * a proxy (a thread of this test) that stops forwarding at `frozen`, and
 * whose listening socket has a full accept queue by then, so that the
 * kernel drops new SYNs, as for an unreachable host: the cancel request's
 * connect() then hangs (the kernel retries for about two minutes). The
 * call must return within its deadline and the cancel timeout, and nothing
 * may wait for the hanging cancel request afterwards, cio_run's end
 * included.
 */
typedef struct {
    int lfd, server_port;
    int fds[2]; /* client side, server side */
    atomic_bool frozen, stop;
    pthread_t th;
} proxy_t;

static void *proxy_main(void *arg)
{
    proxy_t *p = arg;
    p->fds[0] = accept(p->lfd, NULL, NULL);
    p->fds[1] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)p->server_port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (p->fds[0] < 0 || connect(p->fds[1], (struct sockaddr *)&a, sizeof a) < 0)
        return NULL;
    char buf[65536];
    while (!atomic_load(&p->stop)) {
        struct pollfd pf[2] = {{p->fds[0], POLLIN, 0}, {p->fds[1], POLLIN, 0}};
        if (poll(pf, 2, 20) < 0 || atomic_load(&p->frozen))
            continue; /* vanished: nothing moves any more */
        for (int i = 0; i < 2; i++) {
            if (!pf[i].revents)
                continue;
            ssize_t n = read(p->fds[i], buf, sizeof buf);
            if (n <= 0 || write(p->fds[1 - i], buf, (size_t)n) != n)
                return NULL;
        }
    }
    return NULL;
}

static int main_vanished_host(void *arg, void **result)
{
    (void)result;
    proxy_t *p = arg;
    char port[16], dsn[1200];
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    ck_assert_int_eq(getsockname(p->lfd, (struct sockaddr *)&a, &len), 0);
    snprintf(port, sizeof port, "%d", ntohs(a.sin_port));
    dsn_with(dsn, sizeof dsn, "port", port);
    cio_pg_t *c = NOT_SET;
    int rc = cio_pg_connect(&c, dsn, CONNECT_S);
    ck_assert_msg(rc == 0, "connect: %s (%s)", cio_err_name(rc), cio_pg_connect_error());
    assert_usable(c, CIO_PG_IDLE);
    ck_assert_int_eq(cio_pg_set_cancel_timeout(c, 0.5), 0);
    /* The host vanishes; the accept queue fills up (backlog 0: one). */
    atomic_store(&p->frozen, true);
    for (int i = 0; i < 2; i++) {
        int f = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        ck_assert_int_ge(f, 0);
        ck_assert(connect(f, (struct sockaddr *)&a, sizeof a) == 0 || errno == EINPROGRESS);
    }
    cio_scope_t s;
    int64_t t0 = loop_ns();
    ck_assert_int_eq(cio_scope_enter(&s, 0.5, 0), 0);
    ck_assert_int_eq(cio_pg_query(c, NULL, "select 1", 0, NULL), -ETIMEDOUT);
    ck_assert_int_eq(cio_scope_exit(&s), -ETIMEDOUT);
    double el = elapsed_since(t0);
    ck_assert_double_ge(el, 0.5);
    ck_assert_double_lt(el, 0.5 + 0.5 + 1.0);
    ck_assert_int_eq(cio_pg_status(c), CIO_PG_BROKEN);
    ck_assert_int_eq(cio_pg_exec(c, "select 1"), -ENOTCONN);
    pg_done(c);
    return 0;
}

START_TEST(vanished_host)
{
    /* The proxy reaches the server on 127.0.0.1: a local server only. */
    if (!strstr(cio_pg_test_dsn(), "host=127.0.0.1") &&
        !strstr(cio_pg_test_dsn(), "host=localhost")) {
        fprintf(stderr, "vanished_host: skipped (the server is not on 127.0.0.1)\n");
        return;
    }
    static proxy_t p;
    p.fds[0] = p.fds[1] = -1;
    int port;
    p.lfd = bound_socket(&port, false);
    ck_assert_int_eq(listen(p.lfd, 0), 0);
    const char *sp = strstr(cio_pg_test_dsn(), "port=");
    ck_assert_ptr_nonnull(sp);
    p.server_port = atoi(sp + 5);
    ck_assert_int_eq(pthread_create(&p.th, NULL, proxy_main, &p), 0);
    double t0 = mono_now();
    RUN_MAIN(main_vanished_host, &p);
    /* The run ended without waiting for the cancel request's connect. */
    ck_assert_double_lt(mono_now() - t0, HANG_BOUND_S);
    atomic_store(&p.stop, true);
    ck_assert_int_eq(pthread_join(p.th, NULL), 0);
}
END_TEST

static int main_terminated(void *arg, void **result)
{
    (void)arg, (void)result;
    cio_pg_t *other = pg_open();
    char pid[16];

    /* Terminated while idle: the next call finds out. */
    cio_pg_t *c = pg_open();
    snprintf(pid, sizeof pid, "%d", cio_pg_backend_pid(c));
    ck_assert_int_eq(
        cio_pg_test_int(other, "select pg_terminate_backend($1::int, 5000)::int", pid), 1);
    ck_assert_int_eq(cio_pg_query(c, NULL, "select 1", 0, NULL), -ECONNRESET);
    ck_assert_str_ne(cio_pg_error_message(c), "");
    ck_assert_int_eq(cio_pg_status(c), CIO_PG_BROKEN);
    ck_assert_int_eq(cio_pg_exec(c, "select 1"), -ENOTCONN);
    ck_assert_int_eq(cio_pg_begin(c), -ENOTCONN);
    pg_done(c);

    /* Terminated while running a statement. */
    c = pg_open();
    snprintf(pid, sizeof pid, "%d", cio_pg_backend_pid(c));
    stmt_t s = {.c = c, .sql = "select pg_sleep(30)"};
    cio_task_t *t = spawn(stmt_body, &s);
    while (backend_active(other, cio_pg_backend_pid(c)) == 0)
        ck_assert_int_eq(cio_sleep(0.01), 0);
    int64_t t0 = loop_ns();
    ck_assert_int_eq(cio_pg_test_int(other, "select pg_terminate_backend($1::int)::int", pid), 1);
    ck_assert_int_eq(finish(t), -ECONNRESET);
    ck_assert_double_lt(elapsed_since(t0), HANG_BOUND_S);
    /* The server said why (57P01, admin shutdown). */
    ck_assert_str_ne(cio_pg_error_message(c), "");
    ck_assert_int_eq(cio_pg_status(c), CIO_PG_BROKEN);
    ck_assert_int_eq(cio_pg_exec(c, "select 1"), -ENOTCONN);
    ck_assert_int_eq(cio_pg_rollback(c), -ENOTCONN);
    pg_done(c);
    pg_done(other);
    return 0;
}

START_TEST(terminated) { RUN_MAIN(main_terminated, NULL); }
END_TEST

/* ------------------------------------------------------------------------ */
/* Malformed input                                                           */
/* ------------------------------------------------------------------------ */

static int main_bad_input(void *arg, void **result)
{
    (void)arg, (void)result;
    cio_pg_t *c = pg_open();
    exec_ok(c, "create temp table bi (v text)");

    /* A NUL inside the given length of a text parameter: nothing sent. */
    const char *nul[1] = {"ab\0cd"};
    const int len5[1] = {5};
    cio_pg_result_t *r = NOT_SET;
    ck_assert_int_eq(
        cio_pg_query_params(c, &r, "insert into bi values ($1)", 1, NULL, nul, len5, NULL, 0),
        -EINVAL);
    ck_assert_ptr_null(r);
    const int fmt0[1] = {0};
    ck_assert_int_eq(
        cio_pg_query_params(c, NULL, "insert into bi values ($1)", 1, NULL, nul, len5, fmt0, 0),
        -EINVAL);
    ck_assert_int_eq(cio_pg_query_prepared(c, NULL, "", 1, nul, len5, NULL, 0), -EINVAL);
    ck_assert_int_eq(cio_pg_test_int(c, "select count(*) from bi", NULL), 0);
    assert_usable(c, CIO_PG_IDLE);
    /* The bound before the NUL: fine (the text is read up to its NUL). */
    const int len2[1] = {2};
    ck_assert_int_eq(
        cio_pg_query_params(c, NULL, "insert into bi values ($1)", 1, NULL, nul, len2, NULL, 0),
        1);
    ck_assert_int_eq(cio_pg_test_int(c, "select count(*) from bi where v = 'ab'", NULL), 1);

    /* Parameter counts out of range, values missing, bad formats. */
    const char *one[1] = {"1"};
    ck_assert_int_eq(cio_pg_query(c, NULL, "select 1", -1, one), -EINVAL);
    ck_assert_int_eq(cio_pg_query(c, NULL, "select 1", 70000, one), -EINVAL);
    ck_assert_int_eq(cio_pg_query(c, NULL, "select 1", 65536, one), -EINVAL);
    ck_assert_int_eq(cio_pg_query(c, NULL, "select $1", 1, NULL), -EINVAL);
    ck_assert_int_eq(cio_pg_query_params(c, NULL, "select 1", 0, NULL, NULL, NULL, NULL, 2),
                     -EINVAL);
    ck_assert_int_eq(cio_pg_query_params(c, NULL, "select 1", 0, NULL, NULL, NULL, NULL, -1),
                     -EINVAL);
    const int fmt1[1] = {1};
    ck_assert_int_eq(cio_pg_query_params(c, NULL, "select $1", 1, NULL, one, NULL, fmt1, 0),
                     -EINVAL);
    const int lenm1[1] = {-1};
    ck_assert_int_eq(cio_pg_query_params(c, NULL, "select $1", 1, NULL, one, lenm1, fmt1, 0),
                     -EINVAL);
    /* NULL SQL. */
    ck_assert_int_eq(cio_pg_exec(c, NULL), -EINVAL);
    r = NOT_SET;
    ck_assert_int_eq(cio_pg_query(c, &r, NULL, 0, NULL), -EINVAL);
    ck_assert_ptr_null(r);
    ck_assert_int_eq(cio_pg_query_params(c, NULL, NULL, 0, NULL, NULL, NULL, NULL, 0), -EINVAL);
    assert_usable(c, CIO_PG_IDLE);

    /* A wrong parameter count is the server's to refuse. */
    assert_server_error(c, cio_pg_query(c, NULL, "select $1::int", 0, NULL), "08P01");
    assert_server_error(c, cio_pg_query(c, NULL, "select 1", 1, one), "08P01");
    assert_usable(c, CIO_PG_IDLE);
    /* A binary parameter the type cannot read (the server calls a short
     * one a protocol violation). */
    const char bad4[3] = {1, 2, 3};
    const char *bv[1] = {bad4};
    const int len3[1] = {3};
    const unsigned int4[1] = {23};
    assert_server_error(
        c, cio_pg_query_params(c, NULL, "select $1", 1, int4, bv, len3, fmt1, 0), "08P01");
    assert_usable(c, CIO_PG_IDLE);

    /* A 100 MiB text parameter goes through whole. */
    size_t big = 100u << 20;
    char *text = malloc(big + 1);
    ck_assert_ptr_nonnull(text);
    memset(text, 'x', big);
    text[big] = '\0';
    const char *bigv[1] = {text};
    ck_assert_int_eq(cio_pg_test_int(c, "select length($1)", text), (long long)big);
    ck_assert_int_eq(cio_pg_test_int(c, "select octet_length($1::text)", bigv[0]), (long long)big);
    free(text);
    assert_usable(c, CIO_PG_IDLE);
    pg_done(c);
    return 0;
}

START_TEST(bad_input) { RUN_MAIN(main_bad_input, NULL); }
END_TEST

static int main_copy_refused(void *arg, void **result)
{
    (void)arg, (void)result;
    cio_pg_t *c = pg_open();
    exec_ok(c, "create temp table cp (k int)");
    ck_assert_int_eq(cio_pg_exec(c, "copy cp from stdin"), -EPROTO);
    assert_usable(c, CIO_PG_IDLE);
    ck_assert_int_eq(cio_pg_test_int(c, "select count(*) from cp", NULL), 0);
    ck_assert_int_eq(cio_pg_exec(c, "insert into cp values (1), (2)"), 0);
    ck_assert_int_eq(cio_pg_exec(c, "copy cp to stdout"), -EPROTO);
    assert_usable(c, CIO_PG_IDLE);
    cio_pg_result_t *r = NOT_SET;
    ck_assert_int_eq(cio_pg_query(c, &r, "copy (select generate_series(1, 10000)) to stdout", 0,
                                  NULL),
                     -EPROTO);
    ck_assert_ptr_null(r);
    assert_usable(c, CIO_PG_IDLE);
    ck_assert_int_eq(cio_pg_query(c, NULL, "copy cp from stdin", 0, NULL), -EPROTO);
    assert_usable(c, CIO_PG_IDLE);
    ck_assert_int_eq(cio_pg_test_int(c, "select count(*) from cp", NULL), 2);
    /* Inside a transaction the refused COPY fails it. */
    ck_assert_int_eq(cio_pg_begin(c), 0);
    ck_assert_int_eq(cio_pg_exec(c, "copy cp from stdin"), -EPROTO);
    ck_assert_int_eq(cio_pg_status(c), CIO_PG_INERROR);
    ck_assert_int_eq(cio_pg_rollback(c), 0);
    assert_usable(c, CIO_PG_IDLE);
    pg_done(c);
    return 0;
}

START_TEST(copy_refused) { RUN_MAIN(main_copy_refused, NULL); }
END_TEST

/* ------------------------------------------------------------------------ */
/* Concurrency                                                               */
/* ------------------------------------------------------------------------ */

static int main_busy(void *arg, void **result)
{
    (void)arg, (void)result;
    cio_pg_t *c = pg_open();
    stmt_t s = {.c = c, .sql = "select pg_sleep(0.3)"};
    cio_task_t *t = spawn(stmt_body, &s);
    settle();
    ck_assert_int_eq(cio_pg_status(c), CIO_PG_ACTIVE);
    /* A second task (this one) on the same connection. */
    ck_assert_int_eq(cio_pg_exec(c, "select 1"), -EBUSY);
    cio_pg_result_t *r = NOT_SET;
    ck_assert_int_eq(cio_pg_query(c, &r, "select 1", 0, NULL), -EBUSY);
    ck_assert_ptr_null(r);
    ck_assert_int_eq(cio_pg_prepare(c, "x", "select 1", 0, NULL), -EBUSY);
    ck_assert_int_eq(cio_pg_begin(c), -EBUSY);
    ck_assert_int_eq(cio_pg_rollback(c), -EBUSY);
    /* Close refuses while a task is inside. */
    ck_assert_int_eq(cio_pg_close(c), -EBUSY);
    ck_assert_int_eq(finish(t), 0);
    ck_assert_int_eq(s.rc, 1);
    assert_usable(c, CIO_PG_IDLE);
    pg_done(c);
    return 0;
}

START_TEST(busy) { RUN_MAIN(main_busy, NULL); }
END_TEST

/* Many connections at once, each used by its own task. Below the test
 * server's max_connections (200) with room for the other connections. */
#define N_CONNS 150
#define N_QUERIES 20

typedef struct {
    int id;
    int rc;
} many_t;

static int many_body(void *arg, void **result)
{
    (void)result;
    many_t *m = arg;
    cio_pg_t *c = NULL;
    int rc = cio_pg_connect(&c, cio_pg_test_dsn(), 30.0);
    if (rc < 0)
        return m->rc = rc;
    for (int i = 0; i < N_QUERIES && rc == 0; i++) {
        char a[16], b[16];
        snprintf(a, sizeof a, "%d", m->id);
        snprintf(b, sizeof b, "%d", i);
        const char *vals[2] = {a, b};
        cio_pg_result_t *r = NULL;
        int64_t n = cio_pg_query(c, &r, "select $1::int * 1000 + $2::int", 2, vals);
        if (n != 1 || strtol(cio_pg_value(r, 0, 0), NULL, 10) != m->id * 1000 + i)
            rc = n < 0 ? (int)n : -EPROTO;
        cio_pg_result_free(r);
    }
    cio_pg_close(c);
    return m->rc = rc;
}

static int main_many(void *arg, void **result)
{
    (void)arg, (void)result;
    static many_t m[N_CONNS];
    static cio_task_t *t[N_CONNS];
    for (int i = 0; i < N_CONNS; i++) {
        m[i].id = i;
        m[i].rc = 1;
        t[i] = spawn(many_body, &m[i]);
    }
    int statuses[N_CONNS];
    ck_assert_int_eq(cio_gather((cio_future_t *const *)t, N_CONNS, NULL, statuses,
                                CIO_GATHER_ALL),
                     0);
    for (int i = 0; i < N_CONNS; i++) {
        ck_assert_msg(statuses[i] == 0 && m[i].rc == 0, "task %d: %s", i,
                      cio_err_name(statuses[i]));
        cio_future_release(t[i]);
    }
    return 0;
}

START_TEST(many) { RUN_MAIN(main_many, NULL); }
END_TEST

static int main_large_result(void *arg, void **result)
{
    (void)arg, (void)result;
    cio_pg_t *c = pg_open();
    cio_pg_result_t *r = NULL;
    ck_assert_int_eq(cio_pg_query(c, &r,
                                  "select g, repeat(chr(97 + g % 26), g % 50) "
                                  "from generate_series(1, 100000) g",
                                  0, NULL),
                     100000);
    ck_assert_int_eq(cio_pg_ntuples(r), 100000);
    for (int i = 0; i < 100000; i++) {
        int g = i + 1;
        ck_assert_int_eq(strtol(cio_pg_value(r, i, 0), NULL, 10), g);
        const char *s = cio_pg_value(r, i, 1);
        ck_assert_int_eq(cio_pg_length(r, i, 1), g % 50);
        for (int k = 0; k < g % 50; k++)
            ck_assert_int_eq(s[k], 'a' + g % 26);
    }
    cio_pg_result_free(r);
    assert_usable(c, CIO_PG_IDLE);
    pg_done(c);
    return 0;
}

START_TEST(large_result) { RUN_MAIN(main_large_result, NULL); }
END_TEST

static int count_notices;

static void notice_counter(void *arg, const PGresult *r)
{
    (void)arg;
    if (PQresultErrorField(r, PG_DIAG_SQLSTATE))
        count_notices++;
}

static int main_notices(void *arg, void **result)
{
    (void)arg, (void)result;
    cio_pg_t *c = pg_open();
    PQsetNoticeReceiver(cio_pg_pq(c), notice_counter, NULL);
    exec_ok(c, "do $$ begin raise notice 'hello'; end $$");
    ck_assert_int_eq(count_notices, 1);
    exec_ok(c, "create function pg_temp.noisy(n int) returns setof int language plpgsql as $$ "
               "begin for i in 1..n loop raise notice 'row %', i; return next i; end loop; "
               "end $$");
    count_notices = 0;
    cio_pg_result_t *r = NULL;
    ck_assert_int_eq(cio_pg_query(c, &r, "select * from pg_temp.noisy(5000)", 0, NULL), 5000);
    ck_assert_int_eq(count_notices, 5000);
    for (int i = 0; i < 5000; i++)
        ck_assert_int_eq(strtol(cio_pg_value(r, i, 0), NULL, 10), i + 1);
    cio_pg_result_free(r);
    /* A warning is no error either. */
    ck_assert_int_eq(cio_pg_rollback(c), 0);
    ck_assert_str_eq(cio_pg_error_sqlstate(c), "");
    assert_usable(c, CIO_PG_IDLE);
    pg_done(c);
    return 0;
}

START_TEST(notices) { RUN_MAIN(main_notices, NULL); }
END_TEST

/* ------------------------------------------------------------------------ */
/* Allocation failure                                                        */
/* ------------------------------------------------------------------------ */

/*
 * The program is linked with -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc
 * (cio_pg_test.h's wrappers); cio's core is sent past them, so that only
 * cio-pg's own allocations fail. Without the options the test skips itself.
 */

/* One round: connect (to a name, so that the host lists are built), run
 * statements, an error, a lost connection. Returns 0 or the first error,
 * which must be -ENOMEM. No check assertion in here: check's own
 * bookkeeping allocates (and would be failed). */
static int alloc_round(const char *dsn)
{
    cio_pg_t *c = NOT_SET;
    int rc = cio_pg_connect(&c, dsn, CONNECT_S);
    if (rc < 0)
        return c == NULL ? rc : -EFAULT;
    int64_t n = cio_pg_query(c, NULL, "select 1", 0, NULL);
    if (n >= 0)
        n = cio_pg_exec(c, "selec 1") == -EREMOTEIO ? 0 : -EPROTO;
    if (n >= 0) {
        /* A lost connection records libpq's message (pg__set_error). */
        n = cio_pg_exec(c, "select pg_terminate_backend(pg_backend_pid())");
        n = n == -ECONNRESET ? 0 : n;
    }
    if (cio_pg_close(c) != 0)
        return -EFAULT;
    return (int)n;
}

static int main_alloc_fail(void *arg, void **result)
{
    (void)arg, (void)result;
    char dsn[1200];
    dsn_with_host(dsn, sizeof dsn, "localhost");
    long n;
    for (n = 1;; n++) {
        cio_pg_test_alloc_arm(n);
        int rc = alloc_round(dsn);
        bool injected = cio_pg_test_alloc_disarm();
        ck_assert_msg(rc == 0 || rc == -ENOMEM, "allocation %ld failed: %s (%s)", n,
                      cio_err_name(rc), cio_pg_connect_error());
        if (!injected) {
            ck_assert_int_eq(rc, 0);
            break;
        }
    }
    /* cio-pg allocates a little: the object, the host lists, messages. */
    ck_assert_int_gt(n, 1);
    fprintf(stderr, "alloc_fail: %ld allocations failed in turn\n", n - 1);
    return 0;
}

START_TEST(alloc_fail)
{
    if (!cio_pg_test_malloc_wrapped("alloc_fail"))
        return;
    ck_assert_int_eq(cio_pg_test_alloc_core_unwrapped(), 0);
    RUN_MAIN(main_alloc_fail, NULL);
}
END_TEST

/* ------------------------------------------------------------------------ */

static Suite *pg_suite(void)
{
    Suite *s = suite_create("pg");
    TCase *tc = add_tcase(s, "connect", 30);
    tcase_add_test(tc, connect_ok);
    tcase_add_test(tc, connect_refused);
    tcase_add_test(tc, connect_timeout);
    tcase_add_test(tc, connect_invalid);
    tcase_add_test(tc, connect_localhost);
    tcase_add_test(tc, outside_task);
    tc = add_tcase(s, "statements", 60);
    tcase_add_test(tc, params);
    tcase_add_test(tc, prepared);
    tcase_add_test(tc, server_errors);
    tcase_add_test(tc, bad_input);
    tcase_add_test(tc, copy_refused);
    tc = add_tcase(s, "transactions", 30);
    tcase_add_test(tc, transactions);
    tcase_add_test(tc, rollback_cancelled);
    tcase_add_test(tc, begin_cancelled);
    tcase_add_test(tc, commit_cancelled);
    tc = add_tcase(s, "cancel", 30);
    tcase_add_loop_test(tc, cancel_query, 0, N_BY);
    tcase_add_test(tc, peer_stopped);
    tcase_add_test(tc, rollback_stopped);
    tcase_add_test(tc, vanished_host);
    tcase_add_test(tc, terminated);
    tc = add_tcase(s, "load", 120);
    tcase_add_test(tc, busy);
    tcase_add_test(tc, many);
    tcase_add_test(tc, large_result);
    tcase_add_test(tc, notices);
    tc = add_tcase(s, "alloc", 120);
    tcase_add_test(tc, alloc_fail);
    return s;
}

CIO_TEST_MAIN(pg_suite)
