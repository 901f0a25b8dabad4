/*
 * What cio-pg's benchmarks (bench_pg.c, bench_pgq.c) share: the server and
 * the loop they run on, the clocks of the timed part, error reports and
 * option parsing. Define BENCH_NAME (the program's name, for messages)
 * before including it.
 *
 * The server is CIO_PG_DSN (libpq's defaults when unset). The loop's
 * backend is CIO_BACKEND (epoll, the default, or uring): a loop asked for
 * io_uring that runs on epoll is a failure, never an io_uring figure.
 */
#ifndef CIO_BENCH_PG_COMMON_H
#define CIO_BENCH_PG_COMMON_H

#include "bench_common.h"

#include <cio-pg.h>
#include <cio.h>

#include <errno.h>
#include <stdbool.h>
#include <sys/resource.h>

#ifndef BENCH_NAME
#error "define BENCH_NAME before including bench_pg_common.h"
#endif

/* The server's connection string: $CIO_PG_DSN, or "" (libpq's defaults). */
static inline const char *bench_pg_dsn(void)
{
    const char *dsn = getenv("CIO_PG_DSN");
    return dsn ? dsn : "";
}

/* This process's CPU time so far, user + system, in nanoseconds. */
static inline int64_t bench_pg_cpu_ns(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ((int64_t)ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000 +
           ((int64_t)ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000;
}

/* The timed part of a measurement: wall clock and this process's CPU time. */
typedef struct bench_pg_clock {
    int64_t t0, t1;     /* wall clock */
    int64_t cpu0, cpu1; /* CPU time (user + system) */
} bench_pg_clock;

static inline void bench_pg_clock_start(bench_pg_clock *k)
{
    k->cpu0 = bench_pg_cpu_ns();
    k->t0 = bench_now_ns();
}

static inline void bench_pg_clock_stop(bench_pg_clock *k)
{
    k->t1 = bench_now_ns();
    k->cpu1 = bench_pg_cpu_ns();
}

/* The wall-clock seconds of the timed part. */
static inline double bench_pg_clock_s(const bench_pg_clock *k)
{
    return (double)(k->t1 - k->t0) / 1e9;
}

/* The CPU time of the timed part in microseconds, divided by n. */
static inline double bench_pg_clock_cpu_us_per(const bench_pg_clock *k, long n)
{
    return (double)(k->cpu1 - k->cpu0) / 1e3 / (double)n;
}

/* Reports a failed call on stderr, with c's error message when c is given
 * and the query's number when query >= 0. Returns rc, or -EPROTO when rc is
 * not a negative errno. */
static inline int bench_pg_fail(cio_pg_t *c, const char *what, long query, int rc)
{
    const char *msg = c ? cio_pg_error_message(c) : "";
    char at[32] = "";
    if (query >= 0)
        snprintf(at, sizeof at, " (query %ld)", query);
    fprintf(stderr, BENCH_NAME ": %s%s: %s%s%s\n", what, at, cio_strerror(rc), *msg ? ": " : "",
            msg);
    return rc < 0 ? rc : -EPROTO;
}

/* Connects to the server (30 s at most); says why on stderr when it
 * cannot. Returns cio_pg_connect's result. */
static inline int bench_pg_connect(cio_pg_t **c, const char *dsn)
{
    int rc = cio_pg_connect(c, dsn, 30);
    if (rc < 0)
        fprintf(stderr, BENCH_NAME ": connect: %s: %s\n", cio_strerror(rc),
                cio_pg_connect_error());
    return rc;
}

/* The value of a numeric option in [min, max]; calls usage (which exits)
 * when s is not one. */
static inline long bench_pg_arg_long(const char *s, long min, long max, void (*usage)(void))
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < min || v > max)
        usage();
    return v;
}

/*
 * A loop on the backend CIO_BACKEND asks for; *backend gets its name as
 * cio_loop_backend says it ("epoll" or "io_uring"). Returns NULL, with the
 * reason on stderr, when the loop cannot be made or runs on another backend.
 */
static inline cio_loop_t *bench_pg_loop_new(const char **backend)
{
    const char *env = getenv("CIO_BACKEND");
    cio_backend_t which = env && strcmp(env, "uring") == 0 ? CIO_BACKEND_URING : CIO_BACKEND_EPOLL;
    const char *want = which == CIO_BACKEND_URING ? "io_uring" : "epoll";
    cio_loop_opts_t lo = {.backend = which};
    cio_loop_t *loop;
    int rc = cio_loop_new_ex(&loop, &lo);
    if (rc < 0) {
        fprintf(stderr, BENCH_NAME ": cio_loop_new_ex: %s\n", cio_strerror(rc));
        return NULL;
    }
    const char *got = cio_loop_backend(loop);
    if (!got || strcmp(got, want) != 0) {
        fprintf(stderr, BENCH_NAME ": the loop runs on %s, not %s\n", got ? got : "?", want);
        cio_loop_free(loop);
        return NULL;
    }
    *backend = want;
    return loop;
}

/* Runs fn(arg) as the main task of loop until it ends; returns its status
 * (or cio_spawn_ex's error). */
static inline int bench_pg_run(cio_loop_t *loop, cio_task_fn fn, void *arg)
{
    cio_task_t *m;
    int rc = cio_spawn_ex(&m, loop, fn, arg, NULL);
    if (rc == 0)
        rc = cio_loop_run_until_complete(loop, m, NULL);
    cio_future_release(m);
    return rc;
}

/* Tears a loop of bench_pg_loop_new down. */
static inline void bench_pg_loop_free(cio_loop_t *loop)
{
    cio_loop_shutdown(loop);
    cio_loop_free(loop);
}

#endif /* CIO_BENCH_PG_COMMON_H */
