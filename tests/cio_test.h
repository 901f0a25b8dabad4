/*
 * Shared helpers for cio's test suite (Debian's `check`).
 *
 * Every test runs in its own forked process (CK_FORK), so an assertion that
 * fails inside a task (on a coroutine stack) simply ends that process and the
 * runner reports it. Each test file builds one Suite and hands it to
 * CIO_TEST_MAIN.
 *
 * Timing rules used throughout: timers never fire early, so "elapsed >=
 * delay" is asserted exactly (on the loop's own nanosecond clock); upper
 * bounds only catch hangs and are always generous (seconds, never
 * milliseconds).
 */
#ifndef CIO_TEST_H
#define CIO_TEST_H

#include <check.h>
#include <cio.h>

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

/* UNDER_TSAN is defined in a ThreadSanitizer build (gcc's macro, clang's
 * feature test): the few checks TSan cannot model (fork of a threaded
 * process, a handler re-raising its own signal) skip themselves there. */
#if defined(__SANITIZE_THREAD__)
#define UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define UNDER_TSAN 1
#endif
#endif

/* Delays that are exact in binary, so that seconds -> ns is exact too. */
#define D_SHORT 0.03125 /* 31.25 ms */
#define D_MED 0.0625    /* 62.5 ms */
#define NS_SHORT 31250000LL
#define NS_MED 62500000LL

/*
 * A non-NULL value to preset an out-parameter with, so that a test sees a
 * failing constructor set it to NULL (never dereferenced).
 */
#define NOT_SET ((void *)(uintptr_t)0x10)

/* Generous bound for "this did not hang / did not wait for the long sleep". */
#define HANG_BOUND_S 5.0

/* Default per-test timeout (seconds) for the check runner. */
#define TEST_TIMEOUT 20

static inline double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The running loop's clock in ns (the clock deadlines are measured on). */
static inline int64_t loop_ns(void)
{
    cio_loop_t *l = cio_get_running_loop();
    ck_assert_ptr_nonnull(l);
    return cio_loop_time_ns(l);
}

/*
 * A general-purpose child task: sleeps `delay` seconds, records what the
 * sleep returned and that it finished, then returns `status` (or the sleep's
 * error) with `result` as its value.
 */
typedef struct child {
    double delay;
    int status;
    void *result;
    int observed;    /* what cio_sleep returned */
    int finished;    /* the body reached its end */
    int started;
    int64_t end_ns;  /* loop time when the body ended */
} child_t;

static inline int child_body(void *arg, void **result)
{
    child_t *c = arg;
    c->started = 1;
    c->observed = cio_sleep(c->delay);
    c->finished = 1;
    c->end_ns = cio_loop_time_ns(cio_get_running_loop());
    if (c->observed < 0)
        return c->observed;
    *result = c->result;
    return c->status;
}

static inline void child_init(child_t *c, double delay, int status, void *result)
{
    memset(c, 0, sizeof *c);
    c->delay = delay;
    c->status = status;
    c->result = result;
    c->observed = 12345; /* "never set" */
}

/* A new loop (on the backend CIO_BACKEND selects); the test fails if none. */
static inline cio_loop_t *new_loop(void)
{
    cio_loop_t *l = NULL;
    ck_assert_int_eq(cio_loop_new(&l), 0);
    ck_assert_ptr_nonnull(l);
    return l;
}

/*
 * Closes a loop (idempotently: a second close also returns 0), checks that
 * it reports itself closed, then frees the object.
 */
static inline void close_free(cio_loop_t *l)
{
    ck_assert_int_eq(cio_loop_close(l), 0);
    ck_assert(cio_loop_is_closed(l));
    ck_assert(!cio_loop_is_running(l));
    ck_assert_int_eq(cio_loop_close(l), 0);
    ck_assert_int_eq(cio_loop_free(l), 0);
}

/*
 * Captures what is written to stderr (fd 2) between capture_begin and
 * capture_end; capture_end returns it as a malloc'd string.
 */
typedef struct capture {
    int saved;
    FILE *tmp;
} capture_t;

static inline void capture_begin(capture_t *c)
{
    fflush(stderr);
    c->tmp = tmpfile();
    ck_assert_ptr_nonnull(c->tmp);
    c->saved = dup(STDERR_FILENO);
    ck_assert_int_ge(c->saved, 0);
    ck_assert_int_ge(dup2(fileno(c->tmp), STDERR_FILENO), 0);
}

static inline char *capture_end(capture_t *c)
{
    fflush(stderr);
    ck_assert_int_ge(dup2(c->saved, STDERR_FILENO), 0);
    close(c->saved);
    long n = lseek(fileno(c->tmp), 0, SEEK_END);
    ck_assert_int_ge(n, 0);
    char *buf = malloc((size_t)n + 1);
    ck_assert_ptr_nonnull(buf);
    ck_assert_int_eq(pread(fileno(c->tmp), buf, (size_t)n, 0), n);
    buf[n] = 0;
    fclose(c->tmp);
    return buf;
}

/* Adds a TCase with the default timeout to a suite. */
static inline TCase *add_tcase(Suite *s, const char *name, int timeout)
{
    TCase *tc = tcase_create(name);
    tcase_set_timeout(tc, timeout);
    suite_add_tcase(s, tc);
    return tc;
}

/* Spawns on the running loop; the test fails if that is impossible. */
static inline cio_task_t *spawn(cio_task_fn fn, void *arg)
{
    cio_task_t *t = NULL;
    ck_assert_int_eq(cio_spawn(&t, fn, arg), 0);
    ck_assert_ptr_nonnull(t);
    return t;
}

/* Awaits t, returns its status and releases it. */
static inline int finish(cio_task_t *t)
{
    int rc = cio_await(t, NULL);
    cio_future_release(t);
    return rc;
}

/* Lets every ready task run until all are suspended (a few loop turns). */
static inline void settle(void)
{
    for (int i = 0; i < 8; i++)
        ck_assert_int_eq(cio_yield(), 0);
}

/*
 * Runs fn(arg) in a forked child whose stderr goes to a pipe, with a 30 s
 * alarm so a hang shows as SIGALRM; if fn returns, the child exits 0. Stores
 * the child's wait status in *status and returns its stderr (a static buffer,
 * valid until the next call).
 */
static inline const char *run_child_stderr(void (*fn)(void *), void *arg, int *status)
{
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(p[0]);
        dup2(p[1], STDERR_FILENO);
        close(p[1]);
        alarm(30);
        fn(arg);
        fflush(stderr);
        _exit(0);
    }
    close(p[1]);
    static char out[65536];
    size_t len = 0;
    ssize_t n;
    while ((n = read(p[0], out + len, sizeof out - 1 - len)) > 0 ||
           (n < 0 && errno == EINTR))
        if (n > 0)
            len += (size_t)n;
    out[len] = 0;
    close(p[0]);
    ck_assert_int_eq(waitpid(pid, status, 0), pid);
    return out;
}

/* Checks that a child run by run_child_stderr died of an overflow report. */
static inline void assert_overflow_death(int st, const char *out)
{
    ck_assert_msg(!(WIFSIGNALED(st) && WTERMSIG(st) == SIGALRM),
                  "the overflowing process hung; stderr:\n%s", out);
    ck_assert_msg(!(WIFEXITED(st) && WEXITSTATUS(st) == 0),
                  "the process survived an unbounded recursion; stderr:\n%s", out);
    ck_assert_msg(strcasestr(out, "stack overflow") != NULL,
                  "no \"stack overflow\" report on stderr:\n%s", out);
}

/* Runs `fn` as cio_run's main task and asserts that it returned 0. */
#define RUN_MAIN(fn, arg) ck_assert_int_eq(cio_run((fn), (arg)), 0)

#define CIO_TEST_MAIN(make_suite)                                    \
    int main(void)                                                   \
    {                                                                \
        /* Fork mode is check's default (CK_FORK=no only to debug). */ \
        SRunner *sr = srunner_create(make_suite());                  \
        srunner_run_all(sr, CK_VERBOSE);                             \
        int failed = srunner_ntests_failed(sr);                      \
        srunner_free(sr);                                            \
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;            \
    }

#endif /* CIO_TEST_H */
