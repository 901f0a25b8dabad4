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
 * The helpers are static inline functions.
 */
#ifndef CIO_PG_TEST_H
#define CIO_PG_TEST_H

#include <errno.h>
#include <spawn.h>
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

#endif /* CIO_PG_TEST_H */
