/*
 * The PostgreSQL server of cio-pg's tests.
 *
 * The tests never mock the database: they run against a real server, the
 * throw-away cluster of tests/pg_server.sh. Under CTest the fixture
 * `pg_server_start` starts one in <build>/pgdata before the pg tests and
 * `pg_server_stop` removes it after them; each test is given
 * CIO_PG_ENV_FILE=<build>/pgdata/env, the file in which pg_server.sh wrote
 * the server's CIO_PG_DSN and CIO_PG_DATADIR.
 *
 * A test program run by hand finds the server the same way, or through the
 * environment:
 *
 *   eval "$(bash tests/pg_server.sh start /tmp/pg_me)"   # sets both
 *   ./tests/test_pg
 *
 * CIO_PG_DSN set in the environment always wins over the env file, so the
 * tests can be pointed at any server (export CIO_PG_DSN='host=... dbname=...'
 * and leave CIO_PG_DATADIR unset: the fixture then starts nothing, and the
 * tests that restart the server skip themselves, as
 * cio_pg_test_restart() returns -ENOTSUP).
 *
 * The helpers are static inline functions. A test program that checks
 * allocation failure in cio-pg also gets the malloc wrappers (below) by
 * defining CIO_PG_TEST_WRAP_ALLOC before including this header: the linker
 * needs them by name, so they are defined only where they are asked for.
 *
 * Include it before cio_test.h; it brings check.h, cio.h and cio-pg.h.
 */
#ifndef CIO_PG_TEST_H
#define CIO_PG_TEST_H

#include <check.h>
#include <cio-pg.h>
#include <cio.h>

#include <errno.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* The server script, from the source tree (set by tests/CMakeLists.txt). */
#ifndef CIO_PG_SERVER_SCRIPT
#define CIO_PG_SERVER_SCRIPT "tests/pg_server.sh"
#endif

extern char **environ;

/*
 * Finds `export NAME='VALUE'` in the env file named by CIO_PG_ENV_FILE and
 * copies VALUE into buf. Returns 0, or -ENOENT when there is no such file or
 * line (or the value does not fit).
 */
static inline int cio_pg_test_env_file(const char *name, char *buf, size_t size)
{
    const char *path = getenv("CIO_PG_ENV_FILE");
    if (!path || !*path)
        return -ENOENT;
    FILE *f = fopen(path, "r");
    if (!f)
        return -ENOENT;
    char line[2048], prefix[128];
    snprintf(prefix, sizeof prefix, "export %s='", name);
    int rc = -ENOENT;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, prefix, strlen(prefix)) != 0)
            continue;
        const char *v = line + strlen(prefix);
        const char *end = strrchr(v, '\'');
        if (end && (size_t)(end - v) < size) {
            memcpy(buf, v, (size_t)(end - v));
            buf[end - v] = '\0';
            rc = 0;
        }
        break;
    }
    fclose(f);
    return rc;
}

/*
 * The connection string of the test server: $CIO_PG_DSN, else the one in
 * the file named by $CIO_PG_ENV_FILE. Without either the test cannot run:
 * it says how to start a server and exits with status 2 (a failure).
 * Returns a static string.
 */
static inline const char *cio_pg_test_dsn(void)
{
    static char dsn[1024];
    const char *env = getenv("CIO_PG_DSN");
    if (env && *env)
        return env;
    if (dsn[0] || cio_pg_test_env_file("CIO_PG_DSN", dsn, sizeof dsn) == 0)
        return dsn;
    fprintf(stderr,
            "cio-pg tests: no PostgreSQL server. Run them with ctest (its fixture starts one), "
            "or start one with\n  eval \"$(bash %s start /tmp/pg_test)\"\n"
            "or export CIO_PG_DSN='host=... dbname=...' for a server of your own.\n",
            CIO_PG_SERVER_SCRIPT);
    exit(2);
}

/*
 * The directory of the test server's cluster (pg_server.sh's DIR):
 * $CIO_PG_DATADIR, else the env file's; NULL when the server is not one of
 * pg_server.sh (CIO_PG_DSN given alone). Returns a static string.
 */
static inline const char *cio_pg_test_datadir(void)
{
    static char dir[1024];
    const char *env = getenv("CIO_PG_DATADIR");
    if (env && *env)
        return env;
    /* A DSN given alone names a server of the user's: not ours to restart. */
    env = getenv("CIO_PG_DSN");
    if (env && *env)
        return NULL;
    if (dir[0] || cio_pg_test_env_file("CIO_PG_DATADIR", dir, sizeof dir) == 0)
        return dir;
    return NULL;
}

/*
 * Restarts the test server (pg_server.sh restart: pg_ctl restart -m fast,
 * which cuts every connection off, then waits until the server accepts
 * connections again, on the same port). Blocks the calling thread for the
 * restart (about 0.3 s): call it through cio_to_thread when the loop must
 * keep running meanwhile. Returns 0 when the server was restarted,
 * -ENOTSUP when the server is not pg_server.sh's (the test should skip), or
 * -EIO when the restart failed (the script's message is on stderr).
 */
static inline int cio_pg_test_restart(void)
{
    const char *dir = cio_pg_test_datadir();
    if (!dir)
        return -ENOTSUP;
    char *argv[] = {"bash", CIO_PG_SERVER_SCRIPT, "restart", (char *)dir, NULL};
    posix_spawn_file_actions_t fa;
    if (posix_spawn_file_actions_init(&fa) != 0)
        return -EIO;
    /* The script's output is for the log, not for the test's stdout. */
    posix_spawn_file_actions_adddup2(&fa, STDERR_FILENO, STDOUT_FILENO);
    pid_t pid;
    int rc = posix_spawnp(&pid, "bash", &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0)
        return -EIO;
    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR)
            return -EIO;
    }
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -EIO;
}

/* ------------------------------------------------------------------------ */
/* Connections                                                               */
/* ------------------------------------------------------------------------ */

/* A timeout for connects that must succeed: generous, it only catches hangs. */
#define CIO_PG_TEST_CONNECT_S 10.0

/* A new connection to the test server; fails the test when it cannot
 * connect. Close it with cio_pg_close. */
static inline cio_pg_t *cio_pg_test_connect(void)
{
    cio_pg_t *c = NULL;
    int rc = cio_pg_connect(&c, cio_pg_test_dsn(), CIO_PG_TEST_CONNECT_S);
    ck_assert_msg(rc == 0, "connect: %s (%s)", cio_err_name(rc), cio_pg_connect_error());
    ck_assert_ptr_nonnull(c);
    return c;
}

/* Runs sql (no parameters) and fails the test unless it succeeds. */
static inline void cio_pg_test_exec(cio_pg_t *c, const char *sql)
{
    int rc = cio_pg_exec(c, sql);
    ck_assert_msg(rc == 0, "%s: %s (%s %s)", sql, cio_err_name(rc), cio_pg_error_sqlstate(c),
                  cio_pg_error_message(c));
}

/* The first value, as an integer, of a query that must return one row;
 * param: its one text parameter ($1), or NULL for none. */
static inline long long cio_pg_test_int(cio_pg_t *c, const char *sql, const char *param)
{
    cio_pg_result_t *r = NULL;
    const char *vals[1] = {param};
    int64_t n = cio_pg_query(c, &r, sql, param ? 1 : 0, param ? vals : NULL);
    ck_assert_msg(n == 1, "%s: %lld (%s %s)", sql, (long long)n, cio_pg_error_sqlstate(c),
                  cio_pg_error_message(c));
    ck_assert_ptr_nonnull(r);
    const char *v = cio_pg_value(r, 0, 0);
    ck_assert_ptr_nonnull(v);
    long long x = strtoll(v, NULL, 10);
    cio_pg_result_free(r);
    return x;
}

/* A task that runs one statement with cio_pg_exec: spawn
 * cio_pg_test_exec_task with a cio_pg_test_exec_t; rc gets the result. */
typedef struct cio_pg_test_exec {
    cio_pg_t *c;
    const char *sql;
    int rc;
} cio_pg_test_exec_t;

static inline int cio_pg_test_exec_task(void *arg, void **result)
{
    (void)result;
    cio_pg_test_exec_t *e = arg;
    e->rc = cio_pg_exec(e->c, e->sql);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Allocation failure in cio-pg's own allocations                            */
/* ------------------------------------------------------------------------ */

#ifdef CIO_PG_TEST_WRAP_ALLOC
/*
 * cio-pg allocates with plain malloc (and calloc, realloc). A test program
 * that defines CIO_PG_TEST_WRAP_ALLOC and is linked with -Wl,--wrap=malloc (tests/CMakeLists.txt:
 * CIO_TEST_LINK_OPTIONS_<test>) sends every malloc of its statically linked
 * code (cio-pg, and cio's core unless cio_pg_test_alloc_core_unwrapped()
 * sends that elsewhere) through __wrap_malloc below; libpq and the C
 * library, shared, are not affected. --wrap=calloc and --wrap=realloc do the
 * same for those, each optional: the wrappers are all defined here, and one
 * whose option is missing is simply never called. The __real_ symbols are
 * weak, so that a program linked without the options still links: then
 * cio_pg_test_malloc_wrapped() is false and the allocation checks skip.
 *
 * cio_pg_test_alloc_arm(at) restarts the count (every wrapped call, across
 * threads, numbered from 1) and makes call number `at` return NULL (0: none,
 * only count); cio_pg_test_alloc_disarm() stops failing and counting and
 * tells whether the armed failure was reached; cio_pg_test_alloc_count()
 * reads the count. The usual loop fails each allocation of a
 * call in turn until the call gets through all of them:
 *
 *     for (long n = 1;; n++) {
 *         cio_pg_test_alloc_arm(n);
 *         int rc = call();
 *         if (!cio_pg_test_alloc_disarm()) {
 *             ... assert success ...
 *             break;
 *         }
 *         ... assert rc == -ENOMEM and nothing lost ...
 *     }
 *
 * No check assertion between arm and disarm: check's own bookkeeping
 * allocates, and would be failed.
 */
extern void *__real_malloc(size_t n) __attribute__((weak));
extern void *__real_calloc(size_t n, size_t m) __attribute__((weak));
extern void *__real_realloc(void *p, size_t n) __attribute__((weak));
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t m);
void *__wrap_realloc(void *p, size_t n);

static atomic_long cio_pg_fa_count_, cio_pg_fa_at_;
static atomic_bool cio_pg_fa_armed_;

/* Counts one wrapped allocation and tells whether it is to fail. */
static inline bool cio_pg_fa_fails_(void)
{
    if (!atomic_load(&cio_pg_fa_armed_))
        return false;
    return atomic_fetch_add(&cio_pg_fa_count_, 1) + 1 == atomic_load(&cio_pg_fa_at_);
}

void *__wrap_malloc(size_t n) { return cio_pg_fa_fails_() ? NULL : __real_malloc(n); }

void *__wrap_calloc(size_t n, size_t m) { return cio_pg_fa_fails_() ? NULL : __real_calloc(n, m); }

void *__wrap_realloc(void *p, size_t n)
{
    return cio_pg_fa_fails_() ? NULL : __real_realloc(p, n);
}

/* Whether the program is linked with --wrap=malloc; when not, says on
 * stderr that the check `what` is skipped. */
static inline bool cio_pg_test_malloc_wrapped(const char *what)
{
    if (__real_malloc)
        return true;
    fprintf(stderr, "%s: skipped (linked without -Wl,--wrap=malloc)\n", what);
    return false;
}

/* Counts the wrapped allocations from now on, failing number `at`. */
static inline void cio_pg_test_alloc_arm(long at)
{
    atomic_store(&cio_pg_fa_armed_, false);
    atomic_store(&cio_pg_fa_count_, 0);
    atomic_store(&cio_pg_fa_at_, at);
    atomic_store(&cio_pg_fa_armed_, true);
}

/* Stops failing and counting; returns whether the armed failure was
 * reached. */
static inline bool cio_pg_test_alloc_disarm(void)
{
    atomic_store(&cio_pg_fa_armed_, false);
    long at = atomic_load(&cio_pg_fa_at_);
    return at > 0 && atomic_load(&cio_pg_fa_count_) >= at;
}

/* The wrapped allocations counted since the last arming (at 0 none fails:
 * a count only). */
static inline long cio_pg_test_alloc_count(void)
{
    return atomic_load(&cio_pg_fa_count_);
}

/* The real allocator, past the wrappers (each one that is not linked in
 * is the plain function). */
static inline void *cio_pg_fa_real_malloc_(size_t n)
{
    return __real_malloc ? __real_malloc(n) : malloc(n);
}

static inline void *cio_pg_fa_real_calloc_(size_t n, size_t m)
{
    return __real_calloc ? __real_calloc(n, m) : calloc(n, m);
}

static inline void *cio_pg_fa_real_realloc_(void *p, size_t n)
{
    return __real_realloc ? __real_realloc(p, n) : realloc(p, n);
}

/* Makes cio's core allocate past the wrappers, so that only cio-pg's own
 * allocations are counted and failed. cio_replace_allocator's rules apply
 * (before any other cio call); returns its result. */
static inline int cio_pg_test_alloc_core_unwrapped(void)
{
    return cio_replace_allocator(cio_pg_fa_real_malloc_, cio_pg_fa_real_realloc_,
                                 cio_pg_fa_real_calloc_, free);
}
#endif /* CIO_PG_TEST_WRAP_ALLOC */

#endif /* CIO_PG_TEST_H */
