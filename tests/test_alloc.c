/*
 * Resource exhaustion: every allocation, every mmap and every thread
 * creation that cio makes fails, in turn, and cio must cope.
 *
 * A counting allocator is installed with cio_replace_allocator before
 * anything else runs, and mmap and pthread_create are intercepted with GNU
 * ld's --wrap (tests/CMakeLists.txt: CIO_TEST_LINK_OPTIONS_test_alloc), so
 * the calls the static library makes reach the counters below. Each
 * scenario is first run without a fault to count its allocations A, maps M
 * and thread creations P; then it runs again once per N = 1..A with exactly
 * the Nth allocation failing (all the others succeed), and likewise for
 * N = 1..M maps and N = 1..P thread creations; then once per N with the Nth
 * allocation (or map) and every later one failing, as when memory stays
 * exhausted. Every run is a process of its own (forked from a process where
 * cio never ran, so the counts repeat exactly) with an alarm, and it must:
 *   - end in success or in the error the fault stands for (-ENOMEM for
 *     memory and maps, -EAGAIN for threads), reported only after the fault
 *     happened, with every value checked on the way;
 *   - neither crash nor hang (a hang shows as SIGALRM, reported with its N);
 *   - leak nothing: once the loop is freed, the allocator's live count is 0
 *     and the process has no thread left but its own.
 * Failures are collected per scenario and reported with scenario, kind and
 * N; the assertions inside a run are plain checks that print and _exit,
 * since they run in a grandchild of check's runner. A loop that asked for
 * io_uring and got epoll is reported on stdout ("fell back"), not failed.
 *
 * cio's pools allocate in large chunks (one timer heap, one chunk of
 * thousands of callback nodes), so the scenarios steer the allocations to
 * the calls under test: the timer heap is filled to its capacity before a
 * deadline wait, so that the wait is the one that must grow it, and the
 * callback-node pool is drained before the calls that take a node.
 *
 * Scenarios: spawn + gather, cio_wait / cio_wait_for, as_completed, task
 * groups, queues, generators (in a task, and in a plain thread), futures
 * with shield, done callbacks, task names and task-locals, the thread pool,
 * timers (a timer heap that must grow), I/O operations over a socketpair,
 * the synchronisation primitives with deadlines, the callers of the
 * callback-node pool, many level-triggered readers firing at once, and a
 * stream server with a client over TCP (a fault on the server's side may
 * show to the client as a refused or cut connection, never as a hang).
 * CTest runs the program on both backends (CIO_BACKEND).
 *
 * To debug one run in the foreground (gdb): TEST_ALLOC_RUN=scenario:kind:N
 * (kind: none, alloc, mmap, pthread_create, alloc-from, mmap-from).
 */
#include "cio_test.h"

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/socket.h>

#define ITEM(i) ((void *)(intptr_t)(i))
#define VAL(p) ((int)(intptr_t)(p))

/* Seconds a single run may take before it counts as hung. */
#define HANG_S 5

/* ------------------------------------------------------------------------ */
/* Fault injection                                                           */
/* ------------------------------------------------------------------------ */

/*
 * The single-fault kinds fail the Nth call only; the "-from" kinds fail the
 * Nth call and every later one (memory that stays exhausted: cleanup and
 * shutdown must not need any).
 */
enum fault_kind { F_NONE = 0, F_ALLOC, F_MMAP, F_THREAD, F_ALLOC_FROM, F_MMAP_FROM, F_KINDS };

static const char *const kind_name[F_KINDS] = {"none",           "alloc",      "mmap",
                                               "pthread_create", "alloc-from", "mmap-from"};

static atomic_long n_alloc, n_mmap, n_thread; /* calls made so far */
static atomic_long live;                      /* allocations not yet freed */
static atomic_int fault_hit;                  /* the planned fault happened */
static int fault_kind;
static long fault_at;                         /* 1-based index of the failing call */

/* Set in each run for the messages of failed checks. */
static const char *cur_scenario = "?";

static bool fail_now(atomic_long *counter, int kind)
{
    long n = atomic_fetch_add(counter, 1) + 1;
    bool from = (kind == F_ALLOC && fault_kind == F_ALLOC_FROM) ||
                (kind == F_MMAP && fault_kind == F_MMAP_FROM);
    if ((fault_kind == kind && n == fault_at) || (from && n >= fault_at)) {
        atomic_store(&fault_hit, 1);
        return true;
    }
    return false;
}

static void *t_malloc(size_t n)
{
    if (fail_now(&n_alloc, F_ALLOC)) {
        errno = ENOMEM;
        return NULL;
    }
    void *p = malloc(n);
    if (p)
        atomic_fetch_add(&live, 1);
    return p;
}

static void *t_calloc(size_t c, size_t n)
{
    if (fail_now(&n_alloc, F_ALLOC)) {
        errno = ENOMEM;
        return NULL;
    }
    void *p = calloc(c, n);
    if (p)
        atomic_fetch_add(&live, 1);
    return p;
}

static void *t_realloc(void *old, size_t n)
{
    if (fail_now(&n_alloc, F_ALLOC)) {
        errno = ENOMEM;
        return NULL;
    }
    void *p = realloc(old, n);
    if (p && !old)
        atomic_fetch_add(&live, 1);
    return p;
}

static void t_free(void *p)
{
    if (p)
        atomic_fetch_sub(&live, 1);
    free(p);
}

void *__real_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off);
void *__wrap_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off);
int __real_pthread_create(pthread_t *th, const pthread_attr_t *attr, void *(*fn)(void *),
                          void *arg);
int __wrap_pthread_create(pthread_t *th, const pthread_attr_t *attr, void *(*fn)(void *),
                          void *arg);

void *__wrap_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    if (fail_now(&n_mmap, F_MMAP)) {
        errno = ENOMEM;
        return MAP_FAILED;
    }
    return __real_mmap(addr, len, prot, flags, fd, off);
}

int __wrap_pthread_create(pthread_t *th, const pthread_attr_t *attr, void *(*fn)(void *),
                          void *arg)
{
    if (fail_now(&n_thread, F_THREAD))
        return EAGAIN;
    return __real_pthread_create(th, attr, fn, arg);
}

/* ------------------------------------------------------------------------ */
/* Checks inside a run                                                       */
/* ------------------------------------------------------------------------ */

__attribute__((format(printf, 4, 5), noreturn))
static void run_failed(const char *file, int line, const char *expr, const char *fmt, ...)
{
    fprintf(stderr, "test_alloc: [%s, %s fault N=%ld] %s:%d: check failed: %s", cur_scenario,
            kind_name[fault_kind], fault_at, file, line, expr);
    if (fmt && *fmt) {
        va_list ap;
        va_start(ap, fmt);
        fputs(" -- ", stderr);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
    }
    fputc('\n', stderr);
    fflush(stderr);
    _exit(3);
}

#define REQUIRE(c)                                                  \
    do {                                                            \
        if (!(c))                                                   \
            run_failed(__FILE__, __LINE__, #c, "%s", "");           \
    } while (0)
#define REQUIREF(c, ...)                                            \
    do {                                                            \
        if (!(c))                                                   \
            run_failed(__FILE__, __LINE__, #c, __VA_ARGS__);        \
    } while (0)

/* The error the planned fault stands for, once it has happened. */
static bool fault_err(int rc)
{
    if (!atomic_load(&fault_hit))
        return false;
    return fault_kind == F_THREAD ? rc == -EAGAIN : rc == -ENOMEM;
}

/* True when the current task has been cancelled (by a sibling's failure,
 * or by cio_loop_shutdown after the run could not start it normally). */
static bool cancelling(void)
{
    cio_task_t *t = cio_current_task();
    return t && cio_task_cancelling(t);
}

/* An await point's outcome: success, the fault's error, or a
 * cancellation of the current task. Keeps the first error in *err. */
#define ACC(err, rc)                                                           \
    do {                                                                       \
        int rc_ = (rc);                                                        \
        REQUIREF(rc_ == 0 || fault_err(rc_) || (rc_ == -ECANCELED && cancelling()), \
                 "rc %d (%s)", rc_, cio_err_name(rc_));                        \
        if (rc_ && !*(err))                                                    \
            *(err) = rc_;                                                      \
    } while (0)

/* A creating call that failed: its code must be the fault's, and it must
 * have set its out-parameter to NULL. Keeps the first error in *err. */
#define ACC_NEW(err, rc, out)                                                  \
    do {                                                                       \
        int rc_ = (rc);                                                        \
        REQUIREF(fault_err(rc_), "rc %d (%s)", rc_, cio_err_name(rc_));        \
        REQUIREF((out) == NULL, "rc %d left the out-parameter set", rc_);      \
        if (!*(err))                                                           \
            *(err) = rc_;                                                      \
    } while (0)

/*
 * Waits for every future of fs: a gather first; if it fails (a child
 * failed, or the gather itself could not be set up), the others are
 * cancelled and awaited one by one. Fills st[i] and res[i] (may be NULL)
 * from the finished futures and returns the gather's result.
 */
/*
 * Cancels f and lets the loop run until it is done, without allocating: an
 * await whose deadline timer could not be armed fails with -ENOMEM and
 * leaves what it awaited running (it is not cancelled on the awaiter's
 * behalf), so the scenario finishes it by hand.
 */
static void cancel_settle(cio_future_t *f)
{
    cio_future_cancel(f);
    while (!cio_future_done(f))
        if (cio_yield() < 0)
            break;
}

static int join(cio_future_t **fs, size_t n, int *st, void **res)
{
    int rc = n ? cio_gather(fs, n, NULL, NULL, 0) : 0;
    if (rc < 0)
        for (size_t i = 0; i < n; i++)
            cio_future_cancel(fs[i]);
    for (size_t i = 0; i < n; i++) {
        if (!cio_future_done(fs[i]) && cio_await(fs[i], NULL) == -ENOMEM)
            cancel_settle(fs[i]);
        REQUIRE(cio_future_done(fs[i]));
        void *r = NULL;
        st[i] = cio_future_result(fs[i], &r);
        if (res)
            res[i] = r;
    }
    return rc;
}

/*
 * Checks the statuses join() collected: each is 0, the fault's error, or
 * -ECANCELED when cancelling was legitimate (join cancelled after a
 * failure, the caller is cancelled, or cancel_ok). Returns the first fault
 * error, else the gather's own error, else 0.
 */
static int check_statuses(int rc, const int *st, size_t n, bool cancel_ok)
{
    int err = 0;
    for (size_t i = 0; i < n; i++) {
        if (st[i] == 0)
            continue;
        if (fault_err(st[i])) {
            if (!err)
                err = st[i];
            continue;
        }
        REQUIREF(st[i] == -ECANCELED && (rc < 0 || cancel_ok || cancelling()),
                 "child %zu: status %d (%s), gather %d", i, st[i], cio_err_name(st[i]), rc);
    }
    bool from_child = false;
    for (size_t i = 0; i < n; i++)
        from_child |= rc < 0 && st[i] == rc;
    if (rc < 0 && !from_child) { /* the gather's own failure */
        REQUIREF(fault_err(rc) || (rc == -ECANCELED && cancelling()), "gather %d (%s)", rc,
                 cio_err_name(rc));
        if (!err)
            err = rc;
    }
    return err;
}

static void release_all(cio_future_t **fs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        cio_future_release(fs[i]);
}

/* The backend the run's loop got: 1 io_uring, 0 epoll, -1 no loop ran
 * (compared with the run without a fault, which may itself have fallen
 * back on a kernel that refuses io_uring). */
static int backend_seen = -1;

static void note_backend(void)
{
    const char *got = cio_loop_backend(cio_get_running_loop());
    REQUIRE(got != NULL);
    backend_seen = !strcmp(got, "io_uring");
}

/*
 * Runs main_fn as the main task of a new loop, then shuts the loop down
 * and frees it (which must succeed: anything still referenced is a leak).
 * Returns the main task's status, or the error that kept it from running.
 */
static int run_main(cio_task_fn main_fn, void *arg)
{
    cio_loop_t *loop = NULL;
    int rc = cio_loop_new(&loop);
    if (rc) {
        REQUIREF(fault_err(rc), "cio_loop_new: %d (%s)", rc, cio_err_name(rc));
        REQUIRE(loop == NULL);
        return rc;
    }
    cio_task_t *t;
    rc = cio_spawn_ex(&t, loop, main_fn, arg, NULL);
    if (rc) {
        REQUIREF(fault_err(rc), "cio_spawn_ex: %d (%s)", rc, cio_err_name(rc));
        REQUIRE(t == NULL);
    } else {
        rc = cio_loop_run_until_complete(loop, t, NULL);
        REQUIREF(rc == 0 || fault_err(rc), "run_until_complete: %d (%s)", rc,
                 cio_err_name(rc));
        cio_future_release(t);
    }
    REQUIRE(cio_loop_shutdown(loop) == 0);
    int fr = cio_loop_free(loop);
    REQUIREF(fr == 0, "cio_loop_free: %d (%s): futures or tasks still referenced", fr,
             cio_err_name(fr));
    return rc;
}

/* Like run_main through cio_run (asyncio.run), which frees the loop itself:
 * the live count checked after the run tells whether it could. */
static int run_asyncio(cio_task_fn main_fn, void *arg)
{
    int rc = cio_run(main_fn, arg);
    REQUIREF(rc == 0 || fault_err(rc), "cio_run: %d (%s)", rc, cio_err_name(rc));
    return rc;
}


/* ------------------------------------------------------------------------ */
/* Steering the allocations to the calls under test                          */
/* ------------------------------------------------------------------------ */

/*
 * The loop's timer heap starts with 64 entries and doubles (timer.c), so
 * only a few timers of a run allocate. To make a given deadline wait the
 * one that grows the heap, the heap is first filled up to its capacity
 * with far-away timers on caller-owned handles ("fillers"); the scenario
 * tracks that capacity in heap_cap. In the run without a fault, grew()
 * checks that the call did allocate, so that a change of the heap's policy
 * shows up here instead of silently leaving the path untested.
 */
#define NFILL 2100
static cio_handle_t fillers[NFILL];
static int nfill, heap_cap;

static void filler_fired(void *arg)
{
    (void)arg;
    REQUIREF(0, "a filler timer fired");
}

/* Fills the heap, which holds `armed` timers besides the fillers. */
static int fill_heap(int armed)
{
    cio_loop_t *loop = cio_get_running_loop();
    for (int n = armed + nfill; n < heap_cap; n++) {
        REQUIRE(nfill < NFILL);
        int rc = cio_call_later(loop, &fillers[nfill], 1000.0, filler_fired, NULL);
        if (rc)
            return rc;
        nfill++;
    }
    return 0;
}

static void unfill(void)
{
    while (nfill)
        REQUIRE(cio_handle_cancel(&fillers[--nfill]) == 1);
}

/* After a call that armed a timer on a full heap (allocations counted
 * from `before`). */
static void grew(long before, const char *what)
{
    if (fault_kind == F_NONE)
        REQUIREF(atomic_load(&n_alloc) > before, "%s did not grow the timer heap (%d entries)",
                 what, heap_cap);
    heap_cap = heap_cap ? 2 * heap_cap : 64;
}

/*
 * Likewise, the done-callback nodes of futures (also the internal ones of
 * gather, wait, as_completed, groups and shield) come from a pool that
 * allocates a chunk for thousands of nodes at a time. drain_cb_pool()
 * registers callbacks on `sink` (a pending future) until no free node is
 * left but `spare`: the nodes per chunk are counted between two chunk
 * allocations, then the second chunk is used up. The (spare + 1)th node
 * taken afterwards allocates a new chunk. undrain() gives them back.
 */
static void nop_done(cio_future_t *f, void *arg)
{
    (void)f;
    (void)arg;
}

static int drain_cb_pool(cio_future_t *sink, long spare)
{
    long chunks = 0, since = 0, per = 0;
    while (chunks < 2) {
        REQUIRE(since < 1000000);
        long before = atomic_load(&n_alloc);
        int rc = cio_future_add_done_callback(sink, nop_done, NULL);
        if (rc)
            return rc;
        since++;
        if (atomic_load(&n_alloc) > before) {
            per = since;
            since = 0;
            chunks++;
        }
    }
    /* The second chunk has per - 1 free nodes left. */
    REQUIRE(per > spare + 1);
    for (long i = 0; i < per - 1; i++) {
        long before = atomic_load(&n_alloc);
        int rc = cio_future_add_done_callback(sink, nop_done, i < spare ? ITEM(1) : NULL);
        if (rc)
            return rc;
        if (fault_kind == F_NONE)
            REQUIREF(atomic_load(&n_alloc) == before, "node %ld of a chunk of %ld allocated", i,
                     per);
    }
    /* The spare nodes go back to the free list. */
    REQUIRE(cio_future_remove_done_callback(sink, nop_done, ITEM(1)) == spare);
    return 0;
}

static void undrain(cio_future_t *sink)
{
    cio_future_remove_done_callback(sink, nop_done, NULL);
    cio_future_remove_done_callback(sink, nop_done, ITEM(1));
}

/* A child task that sleeps `delay` seconds and returns `value`. */
typedef struct sleeper {
    double delay;
    int value;
    int fail;   /* returned instead of 0 when non-zero */
    int ran;
} sleeper_t;

static int sleeper_body(void *arg, void **result)
{
    sleeper_t *s = arg;
    s->ran = 1;
    int rc = cio_sleep(s->delay);
    if (rc) {
        REQUIREF(fault_err(rc) || (rc == -ECANCELED && cancelling()), "sleep: %d (%s)", rc,
                 cio_err_name(rc));
        return rc;
    }
    *result = ITEM(s->value);
    return s->fail;
}

/* Spawns n sleepers; stops at the first failure (*err set). Returns how
 * many were spawned. */
static size_t spawn_sleepers(cio_future_t **fs, sleeper_t *s, size_t n, int *err)
{
    for (size_t i = 0; i < n; i++) {
        int rc = cio_spawn(&fs[i], sleeper_body, &s[i]);
        if (rc) {
            ACC_NEW(err, rc, fs[i]);
            return i;
        }
    }
    return n;
}

/* ------------------------------------------------------------------------ */
/* Scenario: spawn + gather                                                  */
/* ------------------------------------------------------------------------ */

#define NGATHER 10

static int gather_main(void *arg, void **result)
{
    (void)arg;
    (void)result;
    note_backend();
    int err = 0;
    cio_future_t *fs[NGATHER];
    sleeper_t s[NGATHER];
    for (int i = 0; i < NGATHER; i++)
        s[i] = (sleeper_t){.delay = (i % 3) * 0.001, .value = i * i};
    size_t n = spawn_sleepers(fs, s, NGATHER, &err);
    int st[NGATHER];
    void *res[NGATHER];
    /* Inside a deadline scope, the gather's wait arms the run's first
     * timer (the children have not started): it allocates the heap. */
    cio_scope_t sc;
    REQUIRE(cio_scope_enter(&sc, 10.0, 0) == 0);
    int rc = join(fs, n, st, res);
    REQUIRE(cio_scope_exit(&sc) == 0);
    for (size_t i = 0; i < n; i++)
        if (st[i] == 0)
            REQUIREF(VAL(res[i]) == (int)(i * i), "child %zu gave %d", i, VAL(res[i]));
    int e = check_statuses(rc, st, n, false);
    if (!err)
        err = e;
    if (!err) {
        /* Everything went through: gather again over the finished tasks
         * with every status collected (nothing to wait for). */
        REQUIRE(n == NGATHER);
        int st2[NGATHER];
        void *res2[NGATHER];
        rc = cio_gather(fs, n, res2, st2, CIO_GATHER_ALL);
        ACC(&err, rc);
        for (size_t i = 0; !rc && i < n; i++)
            REQUIRE(st2[i] == 0 && VAL(res2[i]) == (int)(i * i));
    }
    release_all(fs, n);
    return err;
}

static int sc_gather(void)
{
    return run_main(gather_main, NULL);
}

/* ------------------------------------------------------------------------ */
/* Scenario: cio_wait (FIRST_COMPLETED, ALL_COMPLETED with timeout),         */
/* cio_wait_for                                                              */
/* ------------------------------------------------------------------------ */

static cio_event_t wait_ev;

/* A child that waits for wait_ev (no timer) and returns arg. */
static int event_child(void *arg, void **result)
{
    int rc = cio_event_wait(&wait_ev);
    if (rc) {
        REQUIREF(rc == -ECANCELED && cancelling(), "event wait: %d", rc);
        return rc;
    }
    *result = arg;
    return 0;
}

/* The sleepers among fs[0..n) still pending: each has a timer armed. */
static int pending_sleepers(cio_future_t **fs, const int *idx, int k)
{
    int armed = 0;
    for (int i = 0; i < k; i++)
        armed += !cio_future_done(fs[idx[i]]);
    return armed;
}

static int wait_main(void *arg, void **result)
{
    (void)arg;
    (void)result;
    note_backend();
    int err = 0;
    cio_event_init(&wait_ev);
    cio_future_t *fs[3];
    sleeper_t s[3] = {{.delay = 0.001, .value = 1}, {.delay = 0}, {.delay = 10.0, .value = 3}};
    const int sleepers[2] = {0, 2};
    size_t n = 0;
    for (; n < 3; n++) {
        int rc = n == 1 ? cio_spawn(&fs[n], event_child, ITEM(2))
                        : cio_spawn(&fs[n], sleeper_body, &s[n]);
        if (rc) {
            ACC_NEW(&err, rc, fs[n]);
            break;
        }
    }
    if (n == 3) {
        int rc = cio_wait(fs, 3, CIO_FIRST_COMPLETED, INFINITY);
        if (rc < 0) {
            ACC(&err, rc);
            goto out;
        }
        REQUIREF(rc >= 1 && rc <= 3, "FIRST_COMPLETED: %d done", rc);
        if (fault_kind == F_NONE)
            REQUIRE(rc == 1 && cio_future_done(fs[0]));
        heap_cap = 64; /* allocated by the sleepers' timers */

        /* Times out with b and c pending (not an error); its timer grows
         * the heap. */
        rc = fill_heap(pending_sleepers(fs, sleepers, 2));
        long before = atomic_load(&n_alloc);
        if (!rc)
            rc = cio_wait(fs, 3, CIO_ALL_COMPLETED, 0.003);
        grew(before, "cio_wait(ALL_COMPLETED, timeout)");
        unfill();
        if (rc < 0) {
            ACC(&err, rc);
            goto out;
        }
        REQUIREF(rc >= 1, "ALL_COMPLETED with timeout: %d done", rc);
        if (fault_kind == F_NONE)
            REQUIREF(rc == 1, "ALL_COMPLETED with timeout: %d done", rc);

        /* b finishes once the event is set. */
        cio_event_set(&wait_ev);
        rc = fill_heap(pending_sleepers(fs, sleepers, 2));
        before = atomic_load(&n_alloc);
        if (!rc)
            rc = cio_wait(fs, 2, CIO_ALL_COMPLETED, 5.0);
        grew(before, "cio_wait(ALL_COMPLETED, 5 s)");
        unfill();
        if (rc < 0) {
            ACC(&err, rc);
            goto out;
        }
        REQUIREF(rc == 2, "ALL_COMPLETED of the first two: %d done", rc);

        /* wait_for: times out, and the long task is cancelled and awaited. */
        bool was_done = cio_future_done(fs[2]);
        rc = fill_heap(pending_sleepers(fs, sleepers, 2));
        before = atomic_load(&n_alloc);
        if (!rc) {
            rc = cio_wait_for(fs[2], 0.002, NULL);
            if (rc == -ENOMEM) /* fs[2] runs on: the awaiter failed, not it */
                cancel_settle(fs[2]);
            REQUIRE(cio_future_done(fs[2]));
        }
        grew(before, "cio_wait_for");
        unfill();
        if (was_done) {
            REQUIRE(fault_err(rc));
            ACC(&err, rc);
        } else if (rc != -ETIMEDOUT) {
            ACC(&err, rc);
            REQUIRE(rc != 0);
        } else {
            REQUIRE(cio_future_cancelled(fs[2]));
        }
    }
out:
    /* Whatever happened, b may finish and c has served. */
    cio_event_set(&wait_ev);
    if (n == 3)
        cio_future_cancel(fs[2]);
    int st[3];
    void *res[3];
    int rc = join(fs, n, st, res);
    for (size_t i = 0; i < n && i < 2; i++)
        if (st[i] == 0)
            REQUIRE(VAL(res[i]) == (int)i + 1);
    if (n == 3)
        REQUIRE(st[2] != 0); /* the long one never finishes on its own */
    int e = check_statuses(rc, st, n, true);
    if (!err)
        err = e;
    release_all(fs, n);
    return err;
}

static int sc_wait(void)
{
    return run_main(wait_main, NULL);
}

/* ------------------------------------------------------------------------ */
/* Scenario: as_completed                                                    */
/* ------------------------------------------------------------------------ */

#define NAC 5

static int ac_main(void *arg, void **result)
{
    (void)arg;
    (void)result;
    note_backend();
    int err = 0;
    cio_future_t *fs[NAC + 1];
    sleeper_t s[NAC + 1];
    /* Spawned in reverse order of their deadlines, 5 ms apart (more than
     * starting them all can take): they complete 4..0. */
    for (int i = 0; i < NAC; i++)
        s[i] = (sleeper_t){.delay = (NAC - i) * 0.005, .value = i};
    s[NAC] = (sleeper_t){.delay = 10.0, .value = NAC};
    size_t n = spawn_sleepers(fs, s, NAC + 1, &err);
    if (n == NAC + 1) {
        cio_as_completed_t it;
        int rc = cio_as_completed_init(&it, fs, NAC, 5.0);
        if (rc) {
            ACC(&err, rc);
            REQUIRE(it.state_ == NULL); /* holds nothing after a failure */
            goto out;
        }
        int order[NAC], got = 0, seen[NAC] = {0};
        cio_future_t *f;
        while ((rc = cio_as_completed_next(&it, &f)) == 1) {
            REQUIRE(got < NAC);
            int idx = -1;
            for (int i = 0; i < NAC; i++)
                if (fs[i] == f)
                    idx = i;
            REQUIRE(idx >= 0 && !seen[idx]);
            REQUIRE(cio_future_done(f));
            seen[idx] = 1;
            order[got++] = idx;
        }
        if (rc < 0) {
            ACC(&err, rc);
            cio_as_completed_cleanup(&it);
            goto out;
        }
        REQUIRE(got == NAC);
        REQUIRE(it.state_ == NULL);
        if (fault_kind == F_NONE)
            for (int i = 0; i < NAC; i++)
                REQUIREF(order[i] == NAC - 1 - i, "position %d: task %d", i, order[i]);

        /* The overall timeout: the long task is still running. The first
         * next armed the run's first timer (the heap's allocation); this
         * one grows it. */
        heap_cap = 64;
        cio_as_completed_t it2;
        rc = cio_as_completed_init(&it2, &fs[NAC], 1, 0.003);
        if (rc) {
            ACC(&err, rc);
            REQUIRE(it2.state_ == NULL);
            goto out;
        }
        rc = fill_heap(!cio_future_done(fs[NAC]));
        long before = atomic_load(&n_alloc);
        if (!rc)
            rc = cio_as_completed_next(&it2, &f);
        grew(before, "cio_as_completed_next");
        unfill();
        if (rc == 1) { /* it could only have finished for the fault */
            REQUIRE(f == fs[NAC] && fault_err(cio_future_result(f, NULL)));
        } else if (rc != -ETIMEDOUT) {
            ACC(&err, rc);
            REQUIRE(rc != 0 && rc != 1);
        } else {
            REQUIRE(it2.state_ == NULL); /* released by the timeout */
        }
        cio_as_completed_cleanup(&it2);
        REQUIRE(it2.state_ == NULL);
    }
out:;
    int st[NAC + 1];
    void *res[NAC + 1];
    if (n == NAC + 1)
        cio_future_cancel(fs[NAC]); /* the long one has served */
    int rc = join(fs, n, st, res);
    for (size_t i = 0; i < n && i < NAC; i++)
        if (st[i] == 0)
            REQUIRE(VAL(res[i]) == (int)i);
    int e = check_statuses(rc, st, n, true);
    if (!err)
        err = e;
    release_all(fs, n);
    return err;
}

static int sc_as_completed(void)
{
    return run_main(ac_main, NULL);
}

/* ------------------------------------------------------------------------ */
/* Scenario: task groups                                                     */
/* ------------------------------------------------------------------------ */

#define NKIDS 10

static int group_main(void *arg, void **result)
{
    (void)arg;
    (void)result;
    note_backend();
    int err = 0;

    /* All children succeed (more than the first 8 slots: the arrays grow). */
    sleeper_t s[NKIDS];
    for (int i = 0; i < NKIDS; i++)
        s[i] = (sleeper_t){.delay = i * 0.0005, .value = i};
    /* In a deadline scope, the group's wait arms the run's first timer. */
    cio_scope_t sc;
    REQUIRE(cio_scope_enter(&sc, 10.0, 0) == 0);
    cio_group_t *g;
    int rc = cio_group_new(&g);
    if (rc) {
        ACC_NEW(&err, rc, g);
        REQUIRE(cio_scope_exit(&sc) == 0);
        return err;
    }
    int spawned = 0;
    for (int i = 0; i < NKIDS; i++) {
        /* Half of them with the task handed back, half without. */
        cio_task_t *kid = NOT_SET;
        rc = cio_group_spawn(i % 2 ? &kid : NULL, g, NULL, sleeper_body, &s[i]);
        if (rc) {
            ACC_NEW(&err, rc, i % 2 ? kid : NULL);
            break;
        }
        REQUIRE(i % 2 == 0 || kid != NULL);
        spawned++;
    }
    rc = cio_group_wait(g);
    int codes[NKIDS];
    size_t nf = cio_group_errors(g, codes, NULL, NKIDS);
    if (rc == 0) {
        REQUIRE(nf == 0);
        if (fault_kind == F_NONE || spawned == NKIDS)
            for (int i = 0; i < spawned; i++)
                REQUIRE(s[i].ran);
    } else {
        ACC(&err, rc);
        /* A child's error, else the wait itself was interrupted: cancelled
         * from outside, or its deadline could not be armed (-ENOMEM). */
        REQUIREF(nf == 0 || codes[0] == rc, "group wait %d, first failure %d", rc, codes[0]);
    }
    cio_group_free(g);
    REQUIRE(cio_scope_exit(&sc) == 0);
    if (err)
        return err;

    /* One child fails: the others are cancelled, the group reports it. */
    sleeper_t f[5];
    for (int i = 0; i < 5; i++)
        f[i] = (sleeper_t){.delay = i == 2 ? 0.001 : 10.0, .value = i,
                           .fail = i == 2 ? -EPIPE : 0};
    rc = cio_group_new(&g);
    if (rc) {
        ACC_NEW(&err, rc, g);
        return err;
    }
    cio_task_t *kids[5];
    for (int i = 0; i < 5; i++) {
        if ((rc = cio_group_spawn(&kids[i], g, "kid", sleeper_body, &f[i]))) {
            ACC_NEW(&err, rc, kids[i]);
            /* The group still has to be waited for (cio.h): stop the
             * children spawned so far rather than wait 10 s for them. */
            for (int j = 0; j < i; j++)
                cio_task_cancel(kids[j]);
            break;
        }
    }
    rc = cio_group_wait(g);
    cio_task_t *ft[5];
    nf = cio_group_errors(g, codes, ft, 5);
    if (rc == -EPIPE) {
        REQUIRE(nf >= 1 && codes[0] == -EPIPE);
        if (fault_kind == F_NONE)
            REQUIRE(nf == 1 && !strcmp(cio_task_get_name(ft[0]), "kid"));
    } else {
        REQUIREF(err || fault_err(rc) || (rc == -ECANCELED && cancelling()),
                 "group wait: %d (%s)", rc, cio_err_name(rc));
        if (!err)
            err = rc;
    }
    cio_group_free(g);
    return err;
}

static int sc_group(void)
{
    return run_main(group_main, NULL);
}

/* ------------------------------------------------------------------------ */
/* Scenario: queues                                                          */
/* ------------------------------------------------------------------------ */

#define NITEMS 100

static int producer(void *arg, void **result)
{
    (void)result;
    cio_queue_t *q = arg;
    for (int i = 0; i < NITEMS; i++) {
        int rc = cio_queue_put(q, ITEM(i));
        if (rc) { /* shut down when the consumer could not be spawned */
            REQUIREF(rc == -ESHUTDOWN || (rc == -ECANCELED && cancelling()), "put: %d", rc);
            return rc;
        }
    }
    int rc = cio_queue_join(q);
    REQUIREF(rc == 0 || (rc == -ECANCELED && cancelling()), "join: %d", rc);
    return rc;
}

static int consumer(void *arg, void **result)
{
    cio_queue_t *q = arg;
    intptr_t sum = 0;
    for (int i = 0; i < NITEMS; i++) {
        void *it = NULL;
        int rc = cio_queue_get(q, &it);
        if (rc) {
            REQUIREF(rc == -ECANCELED && cancelling(), "get: %d", rc);
            return rc;
        }
        REQUIREF(VAL(it) == i, "got %d, expected %d", VAL(it), i);
        sum += VAL(it);
        REQUIRE(cio_queue_task_done(q) == 0);
    }
    *result = ITEM(sum);
    return 0;
}

static int queue_main(void *arg, void **result)
{
    (void)arg;
    (void)result;
    note_backend();
    int err = 0;
    cio_queue_t q;
    int rc = cio_queue_init(&q, 4);
    if (rc) {
        ACC(&err, rc);
        return err;
    }
    cio_future_t *fs[2];
    size_t n = 0;
    if ((rc = cio_spawn(&fs[0], producer, &q)) == 0)
        n++;
    else
        ACC_NEW(&err, rc, fs[0]);
    if (n == 1) {
        if ((rc = cio_spawn(&fs[1], consumer, &q)) == 0)
            n++;
        else
            ACC_NEW(&err, rc, fs[1]);
    }
    if (n == 1) /* no consumer: the producer would wait for ever */
        cio_queue_shutdown(&q, true, NULL, NULL);
    int st[2];
    void *res[2];
    rc = join(fs, n, st, res);
    if (n == 1) {
        REQUIRE(st[0] == -ESHUTDOWN || st[0] == -ECANCELED || fault_err(st[0]));
    } else {
        if (st[1] == 0)
            REQUIRE(VAL(res[1]) == NITEMS * (NITEMS - 1) / 2);
        int e = check_statuses(rc, st, n, false);
        if (!err)
            err = e;
    }
    release_all(fs, n);
    REQUIRE(cio_queue_destroy(&q) == 0);
    if (err)
        return err;

    /* An unbounded queue grows (16 -> 32 -> 64 slots). */
    rc = cio_queue_init(&q, 0);
    if (rc) {
        ACC(&err, rc);
        return err;
    }
    int put = 0;
    for (; put < 40; put++) {
        rc = cio_queue_put_nowait(&q, ITEM(put));
        if (rc) {
            ACC(&err, rc);
            break;
        }
    }
    REQUIRE(cio_queue_qsize(&q) == (size_t)put);
    for (int i = 0; i < put; i++) {
        void *it;
        REQUIRE(cio_queue_get_nowait(&q, &it) == 0 && VAL(it) == i);
    }
    REQUIRE(cio_queue_destroy(&q) == 0);
    if (err)
        return err;

    /* Deadlines: get on an empty queue (the run's first timer: the heap
     * is allocated), put on a full one and join (each grows the heap).
     * Interrupted, each leaves no waiter behind (destroy would refuse). */
    rc = cio_queue_init(&q, 1);
    if (rc) {
        ACC(&err, rc);
        return err;
    }
    REQUIRE(cio_queue_put_nowait(&q, ITEM(1)) == 0);
    void *it;
    REQUIRE(cio_queue_get_nowait(&q, &it) == 0 && VAL(it) == 1); /* empty, 1 unfinished */
    for (int step = 0; step < 3 && !err; step++) {
        if (step == 1)
            REQUIRE(cio_queue_put_nowait(&q, ITEM(2)) == 0); /* full */
        rc = fill_heap(0);
        long before = atomic_load(&n_alloc);
        cio_scope_t sc;
        if (!rc) {
            REQUIRE(cio_scope_enter(&sc, 0.001, 0) == 0);
            rc = step == 0 ? cio_queue_get(&q, &it)
                 : step == 1 ? cio_queue_put(&q, ITEM(3))
                             : cio_queue_join(&q);
            int ex = cio_scope_exit(&sc);
            REQUIRE(ex == (rc == -ETIMEDOUT ? -ETIMEDOUT : 0));
        }
        grew(before, step == 0 ? "cio_queue_get" : step == 1 ? "cio_queue_put" : "cio_queue_join");
        unfill();
        if (rc != -ETIMEDOUT) {
            ACC(&err, rc);
            REQUIRE(rc != 0);
        }
    }
    if (!err)
        REQUIRE(cio_queue_qsize(&q) == 1);
    REQUIRE(cio_queue_destroy(&q) == 0);
    return err;
}

static int sc_queue(void)
{
    return run_asyncio(queue_main, NULL);
}

/* ------------------------------------------------------------------------ */
/* Scenario: generators driven by a task (an async generator)                */
/* ------------------------------------------------------------------------ */

static int cleanups;

/* Yields 1, receives x, awaits a sleep, yields 2x, then 7 until closed. */
static int gen_body(cio_gen_t *g, void *arg)
{
    (void)arg;
    void *sent = NULL;
    int rc = cio_gen_yield(g, ITEM(1), &sent);
    if (rc) {
        REQUIREF(rc == -ECANCELED, "first yield: %d", rc);
        cleanups++;
        return 0;
    }
    rc = cio_sleep(0.001);
    if (rc) {
        REQUIREF(fault_err(rc) || (rc == -ECANCELED && cancelling()), "sleep in body: %d", rc);
        cleanups++;
        return rc;
    }
    rc = cio_gen_yield(g, ITEM(VAL(sent) * 2), &sent);
    while (rc == 0)
        rc = cio_gen_yield(g, ITEM(7), NULL);
    REQUIREF(rc == -ECANCELED, "yield: %d", rc);
    cleanups++;
    return 0;
}

static int gen_main(void *arg, void **result)
{
    (void)arg;
    (void)result;
    note_backend();
    int err = 0;
    void *out = NULL;

    cio_gen_opts_t o1 = {.name = "g1", .stack_size = 0};
    cio_gen_t *g;
    int rc = cio_gen_new_ex(&g, gen_body, NULL, &o1);
    if (rc) {
        ACC_NEW(&err, rc, g);
        return err;
    }
    REQUIRE(!strcmp(cio_gen_get_name(g), "g1"));
    rc = cio_gen_next(g, &out);
    if (rc < 0) { /* no stack: the generator is left as it was */
        ACC(&err, rc);
        REQUIRE(cio_gen_get_state(g) == CIO_GEN_CREATED);
        REQUIRE(cio_gen_free(g) == 0);
        return err;
    }
    REQUIRE(rc == 1 && VAL(out) == 1);
    rc = cio_gen_send(g, ITEM(21), &out);
    if (rc < 0) { /* the body's await failed: it finished with that error */
        ACC(&err, rc);
        REQUIRE(cio_gen_get_state(g) == CIO_GEN_CLOSED);
        REQUIRE(cio_gen_result(g, NULL) == rc);
        REQUIRE(cleanups == 1);
        REQUIRE(cio_gen_free(g) == 0);
        return err;
    }
    REQUIREF(rc == 1 && VAL(out) == 42, "send: %d, %d", rc, VAL(out));
    REQUIRE(cio_gen_next(g, &out) == 1 && VAL(out) == 7);
    REQUIRE(cio_gen_close(g) == 0);
    REQUIRE(cio_gen_get_state(g) == CIO_GEN_CLOSED);
    REQUIRE(cleanups == 1);
    REQUIRE(cio_gen_next(g, &out) == 0 && out == NULL); /* stays exhausted */
    REQUIRE(cio_gen_free(g) == 0);

    /* A stack of its own size (mapped apart from the pool), freed while
     * suspended: cio_gen_free closes it. */
    cio_gen_opts_t o2 = {.name = NULL, .stack_size = 64 * 1024};
    if ((rc = cio_gen_new_ex(&g, gen_body, NULL, &o2))) {
        ACC_NEW(&err, rc, g);
        return err;
    }
    rc = cio_gen_next(g, &out);
    if (rc < 0) {
        ACC(&err, rc);
        REQUIRE(cio_gen_get_state(g) == CIO_GEN_CREATED);
    } else {
        REQUIRE(rc == 1 && VAL(out) == 1);
    }
    REQUIRE(cio_gen_free(g) == 0);
    REQUIRE(cleanups == (rc == 1 ? 2 : 1));

    /* Never started. */
    if ((rc = cio_gen_new(&g, gen_body, NULL))) {
        ACC_NEW(&err, rc, g);
        return err;
    }
    REQUIRE(cio_gen_free(g) == 0);
    return err;
}

static int sc_gen(void)
{
    return run_main(gen_main, NULL);
}

/* ------------------------------------------------------------------------ */
/* Scenario: a generator in plain C, in a thread of its own                  */
/* ------------------------------------------------------------------------ */

static int count_body(cio_gen_t *g, void *arg)
{
    (void)arg;
    for (int i = 0;; i++) {
        int rc = cio_gen_yield(g, ITEM(i), NULL);
        if (rc)
            return rc == -ECANCELED ? 0 : rc;
    }
}

static void *gen_thread(void *arg)
{
    int *out = arg;
    int err = 0;
    cio_gen_t *g;
    int grc = cio_gen_new(&g, count_body, NULL);
    if (grc) {
        ACC_NEW(&err, grc, g);
        *out = err;
        return NULL;
    }
    for (int i = 0; i < 10; i++) {
        void *v;
        int rc = cio_gen_next(g, &v);
        if (rc < 0) {
            REQUIRE(i == 0); /* only the first resume takes a stack */
            ACC(&err, rc);
            break;
        }
        REQUIRE(rc == 1 && VAL(v) == i);
    }
    REQUIRE(cio_gen_free(g) == 0);
    *out = err;
    return NULL; /* the thread's stack pool goes at its exit */
}

static int sc_gen_plain(void)
{
    /* The thread is the test's own, not one of cio's: not counted. */
    pthread_t th;
    int rc = 12345;
    REQUIRE(__real_pthread_create(&th, NULL, gen_thread, &rc) == 0);
    REQUIRE(pthread_join(th, NULL) == 0);
    REQUIRE(rc != 12345);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Scenario: futures, shield, done callbacks, names, task-locals            */
/* ------------------------------------------------------------------------ */

static int done_calls;
static int local_key;

static void on_done(cio_future_t *f, void *arg)
{
    (void)arg;
    REQUIRE(cio_future_done(f));
    done_calls++;
}

static void set_five(void *arg)
{
    REQUIRE(cio_future_set_result(arg, ITEM(5)) == 0);
}

static int local_child(void *arg, void **result)
{
    (void)result;
    int expect_set = *(int *)arg;
    REQUIRE(cio_local_get(&local_key, ITEM(-1)) == (expect_set ? ITEM(3) : ITEM(-1)));
    return 0;
}

static int futures_main(void *arg, void **result)
{
    (void)arg;
    (void)result;
    note_backend();
    int err = 0;
    cio_loop_t *loop = cio_get_running_loop();
    cio_future_t *f;
    int rc = cio_future_new(&f, NULL);
    if (rc) {
        ACC_NEW(&err, rc, f);
        return err;
    }
    /* shield first: its internal callback node is the first of the loop's
     * callback pool, so its allocation can fail. */
    cio_future_t *sh;
    if ((rc = cio_shield(&sh, f)))
        ACC_NEW(&err, rc, sh);
    rc = cio_future_add_done_callback(f, on_done, NULL);
    bool cb_added = rc == 0;
    if (rc)
        ACC(&err, rc);
    rc = cio_call_soon(loop, NULL, set_five, f);
    if (rc) {
        ACC(&err, rc);
        set_five(f);
    }
    void *v = NULL;
    rc = cio_await(sh ? sh : f, &v);
    if (rc == 0)
        REQUIRE(VAL(v) == 5);
    else
        ACC(&err, rc);
    for (int i = 0; i < 3 && cio_yield() == 0; i++)
        ; /* lets the done callback run */
    if (cb_added && !cancelling())
        REQUIRE(done_calls == 1);
    cio_future_release(sh);
    cio_future_release(f);

    rc = cio_task_set_name(cio_current_task(), "renamed");
    if (rc)
        ACC(&err, rc);
    else
        REQUIRE(!strcmp(cio_task_get_name(cio_current_task()), "renamed"));

    rc = cio_local_set(&local_key, ITEM(3));
    int is_set = rc == 0;
    if (rc)
        ACC(&err, rc);
    REQUIRE(cio_local_get(&local_key, ITEM(-1)) == (is_set ? ITEM(3) : ITEM(-1)));
    cio_task_t *t;
    if ((rc = cio_spawn_named(&t, "local-child", local_child, &is_set))) {
        ACC_NEW(&err, rc, t);
        return err;
    }
    cio_future_t *fs[1] = {t};
    int st[1];
    rc = join(fs, 1, st, NULL);
    int e = check_statuses(rc, st, 1, false);
    if (!err)
        err = e;
    cio_future_release(t);
    return err;
}

static int sc_futures(void)
{
    return run_asyncio(futures_main, NULL);
}

/* ------------------------------------------------------------------------ */
/* Scenario: the thread pool                                                 */
/* ------------------------------------------------------------------------ */

static atomic_int ts_ticks;

static int job_square(void *arg, void **result)
{
    intptr_t v = (intptr_t)arg;
    *result = ITEM(v * v);
    return 0;
}

static void ts_tick(void *arg)
{
    (void)arg;
    atomic_fetch_add(&ts_ticks, 1);
}

/* Runs on a worker: posts a callback to the loop (an allocation made by
 * another thread, while the loop waits for this job). */
static int job_post(void *arg, void **result)
{
    int rc = cio_call_soon_threadsafe(arg, ts_tick, NULL);
    *result = ITEM(rc);
    return 0;
}

static int pool_main(void *arg, void **result)
{
    (void)arg;
    (void)result;
    note_backend();
    int err = 0;
    cio_loop_t *loop = cio_get_running_loop();
    void *v = NULL;
    /* In a deadline scope, the wait for the job arms the run's first
     * timer (the heap's allocation). */
    cio_scope_t sc;
    REQUIRE(cio_scope_enter(&sc, 10.0, 0) == 0);
    int rc = cio_to_thread(job_square, ITEM(7), &v);
    REQUIRE(cio_scope_exit(&sc) == 0);
    if (fault_kind == F_THREAD && fault_at == 1) /* the pool could get no thread */
        REQUIREF(rc == -EAGAIN, "cio_to_thread: %d", rc);
    if (rc)
        ACC(&err, rc);
    else
        REQUIRE(VAL(v) == 49);

    cio_future_t *fs[3];
    size_t n = 0;
    for (; n < 3; n++) {
        if ((rc = cio_run_in_executor(&fs[n], NULL, NULL, job_square, ITEM(n + 2)))) {
            ACC_NEW(&err, rc, fs[n]);
            break;
        }
    }
    int st[3];
    void *res[3];
    rc = join(fs, n, st, res);
    for (size_t i = 0; i < n; i++)
        if (st[i] == 0)
            REQUIRE(VAL(res[i]) == (int)((i + 2) * (i + 2)));
    int e = check_statuses(rc, st, n, false);
    if (!err)
        err = e;
    release_all(fs, n);

    rc = cio_to_thread(job_post, loop, &v);
    if (rc) {
        ACC(&err, rc);
    } else {
        int posted = VAL(v);
        REQUIREF(posted == 0 || fault_err(posted), "call_soon_threadsafe: %d", posted);
        for (int i = 0; i < 3 && cio_yield() == 0; i++)
            ;
        if (!cancelling())
            REQUIRE(atomic_load(&ts_ticks) == (posted == 0));
        if (posted && !err)
            err = posted;
    }

    /* An executor of one thread. */
    cio_executor_t *ex;
    rc = cio_executor_new(&ex, 1);
    if (rc) {
        ACC(&err, rc);
        return err;
    }
    long before = atomic_load(&n_thread);
    cio_future_t *f;
    rc = cio_run_in_executor(&f, loop, ex, job_square, ITEM(9));
    if (fault_kind == F_THREAD && before == fault_at - 1 && atomic_load(&n_thread) == fault_at)
        REQUIREF(rc == -EAGAIN && !f, "the executor's only thread failed: %d, %p", rc,
                 (void *)f);
    if (rc) {
        ACC_NEW(&err, rc, f);
    } else {
        rc = cio_await(f, &v);
        if (rc)
            ACC(&err, rc);
        else
            REQUIRE(VAL(v) == 81);
        cio_future_release(f);
    }
    cio_executor_shutdown(ex, true);
    return err;
}

static int sc_pool(void)
{
    return run_main(pool_main, NULL);
}

/* ------------------------------------------------------------------------ */
/* Scenario: timers                                                          */
/* ------------------------------------------------------------------------ */

#define NSLEEPERS 150 /* the timer heap grows from 64 entries to 128, then 256 */

static int ticks, scheduled;
static cio_handle_t h_own = CIO_HANDLE_INIT, h_cancel = CIO_HANDLE_INIT;

static void tick(void *arg)
{
    (void)arg;
    ticks++;
}

static int timers_main(void *arg, void **result)
{
    (void)arg;
    (void)result;
    note_backend();
    int err = 0;
    cio_loop_t *loop = cio_get_running_loop();
    ACC(&err, cio_sleep(0.001));
    if (err)
        return err;

    int rc = cio_call_later(loop, NULL, 0.001, tick, NULL); /* pooled handle */
    if (rc)
        ACC(&err, rc);
    else
        scheduled++;
    rc = cio_call_later(loop, &h_own, 0.002, tick, NULL);
    if (rc) {
        ACC(&err, rc);
        REQUIRE(!cio_handle_active(&h_own));
    } else {
        scheduled++;
    }
    rc = cio_call_later(loop, &h_cancel, 10.0, tick, NULL);
    if (rc) {
        ACC(&err, rc);
        REQUIRE(!cio_handle_active(&h_cancel));
    } else {
        REQUIRE(cio_handle_cancel(&h_cancel) == 1);
    }

    static cio_future_t *fs[NSLEEPERS];
    static sleeper_t s[NSLEEPERS];
    for (int i = 0; i < NSLEEPERS; i++)
        s[i] = (sleeper_t){.delay = 0.002 + i * 1e-5, .value = i};
    size_t n = spawn_sleepers(fs, s, NSLEEPERS, &err);
    static int st[NSLEEPERS];
    static void *res[NSLEEPERS];
    rc = join(fs, n, st, res);
    for (size_t i = 0; i < n; i++)
        if (st[i] == 0)
            REQUIRE(VAL(res[i]) == (int)i);
    int e = check_statuses(rc, st, n, false);
    if (!err)
        err = e;
    release_all(fs, n);

    rc = cio_sleep(0.003);
    if (rc)
        ACC(&err, rc);
    else
        REQUIREF(ticks == scheduled, "%d of %d timers ran", ticks, scheduled);

    /* A deadline scope around a long sleep. */
    cio_scope_t sc;
    REQUIRE(cio_scope_enter(&sc, 0.001, 0) == 0);
    rc = cio_sleep(10.0);
    int ex = cio_scope_exit(&sc);
    if (rc == -ETIMEDOUT) {
        REQUIRE(ex == -ETIMEDOUT);
    } else {
        ACC(&err, rc);
        REQUIRE(rc != 0);
    }
    if (cio_handle_active(&h_own))
        cio_handle_cancel(&h_own);
    return err;
}

static int sc_timers(void)
{
    return run_asyncio(timers_main, NULL);
}

/* ------------------------------------------------------------------------ */
/* Scenario: I/O operations over a socketpair                                */
/* ------------------------------------------------------------------------ */

#define IO_BYTES (256 * 1024) /* more than the socket buffers: the sender waits */

static unsigned char io_out[IO_BYTES], io_in[IO_BYTES];
static int io_fds[2];

static int io_sender(void *arg, void **result)
{
    (void)arg;
    (void)result;
    uint32_t hdr = IO_BYTES;
    ssize_t r = cio_sock_send(io_fds[0], &hdr, sizeof hdr, 0);
    if (r < 0) {
        REQUIREF(r == -ECANCELED && cancelling(), "send: %zd", r);
        return (int)r;
    }
    REQUIRE(r == sizeof hdr);
    size_t sent = 0;
    int rc = cio_sock_sendall(io_fds[0], io_out, IO_BYTES, 0, &sent);
    if (rc) {
        REQUIREF(rc == -ECANCELED && cancelling(), "sendall: %d", rc);
        return rc;
    }
    REQUIRE(sent == IO_BYTES);
    return 0;
}

static int io_receiver(void *arg, void **result)
{
    (void)arg;
    (void)result;
    int err = 0;
    int rc = cio_wait_fd(io_fds[1], CIO_READABLE);
    if (rc < 0) {
        ACC(&err, rc);
        return err;
    }
    REQUIRE(rc == CIO_READABLE);
    uint32_t hdr = 0;
    size_t got = 0;
    while (got < sizeof hdr) {
        ssize_t r = cio_sock_recv(io_fds[1], (char *)&hdr + got, sizeof hdr - got, 0);
        if (r < 0) {
            ACC(&err, (int)r);
            return err;
        }
        REQUIRE(r > 0);
        got += (size_t)r;
    }
    REQUIRE(hdr == IO_BYTES);
    got = 0;
    while (got < IO_BYTES) {
        ssize_t r = cio_sock_recv(io_fds[1], io_in + got, IO_BYTES - got, 0);
        if (r < 0) {
            ACC(&err, (int)r);
            return err;
        }
        REQUIRE(r > 0);
        got += (size_t)r;
    }
    REQUIRE(memcmp(io_in, io_out, IO_BYTES) == 0);

    /* Nothing more comes: deadlines end the waits. cio_wait_fd arms the
     * run's first timer (the heap's allocation), the recv's grows it (on
     * io_uring the recv is submitted first, and must be cancelled and its
     * completion awaited when the timer cannot be armed). */
    for (int step = 0; step < 2 && !err; step++) {
        rc = fill_heap(0);
        long before = atomic_load(&n_alloc);
        if (!rc) {
            cio_scope_t sc;
            char c;
            REQUIRE(cio_scope_enter(&sc, 0.002, 0) == 0);
            rc = step == 0 ? cio_wait_fd(io_fds[1], CIO_READABLE)
                           : (int)cio_sock_recv(io_fds[1], &c, 1, 0);
            int ex = cio_scope_exit(&sc);
            REQUIRE(ex == (rc == -ETIMEDOUT ? -ETIMEDOUT : 0));
        }
        grew(before, step == 0 ? "cio_wait_fd" : "cio_sock_recv");
        unfill();
        if (rc != -ETIMEDOUT) {
            ACC(&err, rc);
            REQUIREF(rc < 0, "an idle socket gave %d", rc);
        }
    }
    return err;
}

static int io_main(void *arg, void **result)
{
    (void)arg;
    (void)result;
    note_backend();
    int err = 0;
    for (int i = 0; i < IO_BYTES; i++)
        io_out[i] = (unsigned char)(i * 7 + 3);
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, io_fds) == 0);
    /* The receiving end above the loop's first 64 fd slots: waiting on it
     * grows the loop's (and io_uring's) fd tables. */
    int high = fcntl(io_fds[1], F_DUPFD_CLOEXEC, 200);
    REQUIRE(high >= 200);
    REQUIRE(close(io_fds[1]) == 0);
    io_fds[1] = high;
    cio_future_t *fs[2];
    size_t n = 0;
    int src;
    if ((src = cio_spawn(&fs[0], io_receiver, NULL)) == 0)
        n++;
    else
        ACC_NEW(&err, src, fs[0]);
    if (n == 1) {
        if ((src = cio_spawn(&fs[1], io_sender, NULL)) == 0)
            n++;
        else
            ACC_NEW(&err, src, fs[1]);
    }
    if (n == 1) /* no sender: the receiver would wait for ever */
        cio_future_cancel(fs[0]);
    int st[2];
    int rc = join(fs, n, st, NULL);
    int e = check_statuses(rc, st, n, n == 1);
    if (!err)
        err = e;
    release_all(fs, n);
    REQUIRE(cio_close(io_fds[0]) == 0);
    REQUIRE(cio_close(io_fds[1]) == 0);
    return err;
}

static int sc_io(void)
{
    return run_main(io_main, NULL);
}


/* ------------------------------------------------------------------------ */
/* Scenario: a stream server and a client over TCP                          */
/* ------------------------------------------------------------------------ */

#define NET_BYTES (128 * 1024) /* more than one receive: the buffer grows */

static unsigned char net_out[NET_BYTES], net_in[NET_BYTES];

/* The server's handler: echoes until EOF. Its errors are the fault's, or
 * those of a connection the other side gave up on. */
static void net_echo(cio_stream_t *s, void *arg)
{
    (void)arg;
    char buf[4096];
    for (;;) {
        ssize_t n = cio_stream_read(s, buf, sizeof buf);
        if (n <= 0)
            return;
        if (cio_stream_write(s, buf, (size_t)n) || cio_stream_drain(s))
            return;
    }
}

/* What the client may see once a fault has hit the server side: the
 * connection refused or cut rather than served. */
static bool net_cut(int rc)
{
    if (rc == -ECANCELED && cancelling())
        return true; /* the run itself is being cancelled (see run_main) */
    return atomic_load(&fault_hit) &&
           (rc == -ENODATA || rc == -ECONNRESET || rc == -EPIPE || rc == -ECONNREFUSED ||
            rc == -ESHUTDOWN);
}

/* The client: connects, sends NET_BYTES, reads them back. */
static int net_client(int port)
{
    cio_stream_t *c;
    int rc = cio_open_connection(&c, "127.0.0.1", port, NULL);
    if (rc) {
        REQUIREF(fault_err(rc) || net_cut(rc), "open_connection: %d (%s)", rc, cio_err_name(rc));
        REQUIRE(c == NULL);
        return rc;
    }
    rc = cio_stream_write(c, net_out, NET_BYTES);
    if (!rc)
        rc = cio_stream_write_eof(c);
    if (!rc) {
        size_t got = 0;
        ssize_t r = cio_stream_readexactly(c, net_in, NET_BYTES, &got);
        rc = r == NET_BYTES ? 0 : (int)r;
        if (!rc)
            REQUIRE(memcmp(net_in, net_out, NET_BYTES) == 0);
    }
    int cr = cio_stream_close(c);
    if (rc)
        REQUIREF(fault_err(rc) || net_cut(rc), "client: %d (%s)", rc, cio_err_name(rc));
    REQUIREF(cr == 0 || fault_err(cr) || net_cut(cr) || rc, "close: %d", cr);
    return rc;
}

static int net_main(void *arg, void **result)
{
    (void)arg;
    (void)result;
    note_backend();
    for (int i = 0; i < NET_BYTES; i++)
        net_out[i] = (unsigned char)(i * 13 + 1);
    cio_server_t *srv;
    int rc = cio_start_server(&srv, "127.0.0.1", 0, net_echo, NULL, NULL);
    if (rc) {
        REQUIREF(fault_err(rc) || (rc == -ECANCELED && cancelling()), "start_server: %d (%s)",
                 rc, cio_err_name(rc));
        REQUIRE(srv == NULL);
        return rc;
    }
    int port = cio_server_port(srv);
    REQUIRE(port > 0);
    rc = net_client(port);
    REQUIRE(cio_server_close(srv) == 0);
    cio_server_abort_clients(srv);
    int wc = cio_server_wait_closed(srv, 4.0);
    REQUIREF(wc == 0 || fault_err(wc) || (wc == -ECANCELED && cancelling()),
             "wait_closed: %d (%s)", wc, cio_err_name(wc));
    if (wc == 0)
        REQUIRE(cio_server_free(srv) == 0);
    /* else the loop's close releases the server */
    if (rc == -ECANCELED && cancelling())
        return rc;
    return fault_err(rc) ? rc : (rc && atomic_load(&fault_hit) ? -ENOMEM : rc);
}

static int sc_net(void)
{
    return run_main(net_main, NULL);
}


/* ------------------------------------------------------------------------ */
/* Scenario: synchronisation primitives with deadlines                      */
/* ------------------------------------------------------------------------ */

static cio_lock_t s_lock;
static cio_event_t s_ev, s_release;
static cio_cond_t s_cond;
static cio_sem_t s_sem;
static cio_barrier_t s_bar;
static cio_scope_t *s_waiter_scope;

/* Holds s_lock until s_release is set. */
static int lock_holder(void *arg, void **result)
{
    (void)arg;
    (void)result;
    int rc = cio_lock_acquire(&s_lock);
    if (rc) {
        REQUIREF(rc == -ECANCELED && cancelling(), "holder acquire: %d", rc);
        return rc;
    }
    rc = cio_event_wait(&s_release);
    REQUIRE(cio_lock_release(&s_lock) == 0);
    if (rc)
        REQUIREF(rc == -ECANCELED && cancelling(), "holder wait: %d", rc);
    return rc;
}

/* Waits on s_ev in a scope without a deadline, which main then gives one
 * (cio_scope_reschedule arms a timer for a task already waiting). */
static int resched_waiter(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_scope_t sc;
    REQUIRE(cio_scope_enter(&sc, INFINITY, 0) == 0);
    s_waiter_scope = &sc;
    int rc = cio_event_wait(&s_ev);
    s_waiter_scope = NULL;
    int ex = cio_scope_exit(&sc);
    REQUIRE(ex == (rc == -ETIMEDOUT ? -ETIMEDOUT : 0));
    if (rc != -ETIMEDOUT)
        REQUIREF(fault_err(rc) || (rc == -ECANCELED && cancelling()), "waiter: %d", rc);
    return rc;
}

enum { S_EVENT, S_LOCK, S_COND, S_SEM, S_BARRIER, S_STEPS };
static const char *const s_step_name[S_STEPS] = {"cio_event_wait", "cio_lock_acquire",
                                                 "cio_cond_wait", "cio_sem_acquire",
                                                 "cio_barrier_wait"};

static int sync_step(int step)
{
    switch (step) {
    case S_EVENT: return cio_event_wait(&s_ev);
    case S_LOCK: return cio_lock_acquire(&s_lock);
    case S_COND: return cio_cond_wait(&s_cond);
    case S_SEM: return cio_sem_acquire(&s_sem);
    default: {
        int rc = cio_barrier_wait(&s_bar);
        return rc >= 0 ? 0 : rc;
    }
    }
}

static int sync_main(void *arg, void **result)
{
    (void)arg;
    (void)result;
    note_backend();
    int err = 0;
    cio_lock_init(&s_lock);
    cio_event_init(&s_ev);
    cio_event_init(&s_release);
    REQUIRE(cio_cond_init(&s_cond, NULL) == 0);
    REQUIRE(cio_sem_init(&s_sem, 0, false) == 0);
    REQUIRE(cio_barrier_init(&s_bar, 2) == 0);

    cio_task_t *holder;
    int hrc = cio_spawn(&holder, lock_holder, NULL);
    if (hrc) {
        ACC_NEW(&err, hrc, holder);
        return err;
    }
    for (int i = 0; i < 3 && cio_yield() == 0; i++)
        ; /* the holder takes the lock */
    bool held = cio_lock_locked(&s_lock);
    if (fault_kind == F_NONE)
        REQUIRE(held);

    /* Each wait times out (the first allocates the timer heap, each later
     * one grows it), or fails with the fault's error; either way the
     * primitive is left as it was. */
    for (int step = 0; step < S_STEPS && !err; step++) {
        if (step == S_LOCK && !held)
            continue; /* the holder could not run */
        if (step == S_COND)
            REQUIRE(cio_lock_acquire(cio_cond_lock(&s_cond)) == 0);
        int rc = fill_heap(0);
        long before = atomic_load(&n_alloc);
        if (!rc) {
            cio_scope_t sc;
            REQUIRE(cio_scope_enter(&sc, 0.001, 0) == 0);
            rc = sync_step(step);
            int ex = cio_scope_exit(&sc);
            REQUIRE(ex == (rc == -ETIMEDOUT ? -ETIMEDOUT : 0));
        }
        grew(before, s_step_name[step]);
        unfill();
        if (rc != -ETIMEDOUT) {
            ACC(&err, rc);
            REQUIREF(rc != 0, "%s did not wait", s_step_name[step]);
        }
        switch (step) {
        case S_LOCK: /* still the holder's, with nobody queued */
            REQUIRE(cio_lock_locked(&s_lock) && cio_lock_try_acquire(&s_lock) == -EAGAIN);
            break;
        case S_COND: /* the lock is ours again in every case */
            REQUIRE(cio_lock_locked(cio_cond_lock(&s_cond)));
            REQUIRE(cio_lock_release(cio_cond_lock(&s_cond)) == 0);
            REQUIRE(cio_cond_lock(&s_cond)->waiters_.head_ == NULL);
            break;
        case S_SEM:
            REQUIRE(cio_sem_value(&s_sem) == 0 && s_sem.waiters_.head_ == NULL);
            break;
        case S_BARRIER:
            REQUIRE(cio_barrier_n_waiting(&s_bar) == 0 && !cio_barrier_broken(&s_bar));
            break;
        default:
            REQUIRE(s_ev.waiters_.head_ == NULL);
        }
    }
    cio_event_set(&s_release);
    cio_future_t *fs[2] = {holder, NULL};
    size_t n = 1;

    /* A deadline given to a task that already waits. */
    if (!err) {
        int wrc = cio_spawn(&fs[1], resched_waiter, NULL);
        if (wrc == 0) {
            n = 2;
            for (int i = 0; i < 3 && cio_yield() == 0; i++)
                ; /* it waits */
            if (s_waiter_scope) {
                int rc = fill_heap(0);
                long before = atomic_load(&n_alloc);
                if (!rc)
                    REQUIRE(cio_scope_reschedule(s_waiter_scope, 0.001) == 0);
                grew(before, "cio_scope_reschedule");
                unfill();
                ACC(&err, rc);
            } else {
                REQUIRE(fault_kind != F_NONE);
            }
        } else {
            ACC_NEW(&err, wrc, fs[1]);
        }
    }
    int st[2];
    int rc = join(fs, n, st, NULL);
    if (n == 2 && st[1] == -ETIMEDOUT)
        st[1] = 0; /* what the waiter was meant to get */
    int e = check_statuses(rc == -ETIMEDOUT ? 0 : rc, st, n, false);
    if (!err)
        err = e;
    release_all(fs, n);
    REQUIRE(!cio_lock_locked(&s_lock));
    return err;
}

static int sc_sync(void)
{
    return run_main(sync_main, NULL);
}

/* ------------------------------------------------------------------------ */
/* Scenario: the internal callback nodes of futures cannot be had           */
/* ------------------------------------------------------------------------ */

static int victim_abandoned, victim_ran;

/* Spawned into a group by a cio_group_spawn that may fail. */
static int victim_body(void *arg, void **result)
{
    (void)arg;
    (void)result;
    REQUIREF(!victim_abandoned, "cio_group_spawn failed, yet the child's body runs");
    victim_ran = 1;
    return 0;
}

static void complete_soon(void *arg)
{
    cio_future_t *f = arg;
    if (!cio_future_done(f))
        REQUIRE(cio_future_set_result(f, ITEM(1)) == 0);
}

enum { V_SHIELD, V_GROUP, V_GATHER, V_WAIT, V_AS_COMPLETED, V_DONE_CB, V_STEPS };

/* Runs one call whose callback node needs a new chunk of the pool. */
static int victim(int step, cio_future_t **fs)
{
    int err = 0;
    switch (step) {
    case V_SHIELD: {
        cio_future_t *sh;
        int shrc = cio_shield(&sh, fs[0]);
        if (shrc) {
            ACC_NEW(&err, shrc, sh);
            break;
        }
        REQUIRE(cio_call_soon(cio_get_running_loop(), NULL, complete_soon, fs[0]) == 0 ||
                fault_err(-ENOMEM));
        void *v;
        int rc = cio_await(sh, &v);
        cio_future_release(sh);
        if (rc)
            ACC(&err, rc);
        break;
    }
    case V_GROUP: {
        cio_group_t *g;
        int rc = cio_group_new(&g);
        if (rc) {
            ACC_NEW(&err, rc, g);
            break;
        }
        if ((rc = cio_group_spawn(NULL, g, "victim", victim_body, NULL))) {
            ACC_NEW(&err, rc, NULL);
            victim_abandoned = 1;
        }
        rc = cio_group_wait(g);
        cio_group_free(g);
        ACC(&err, rc);
        for (int i = 0; i < 3 && cio_yield() == 0; i++)
            ; /* a child left over would run now */
        if (!victim_abandoned && !cancelling())
            REQUIRE(victim_ran);
        break;
    }
    case V_GATHER: {
        int st[3];
        int rc = cio_gather(fs, 3, NULL, st, CIO_GATHER_ALL);
        if (rc)
            ACC(&err, rc);
        break;
    }
    case V_WAIT: {
        int rc = cio_wait(fs, 3, CIO_ALL_COMPLETED, 5.0);
        if (rc < 0)
            ACC(&err, rc);
        else
            REQUIRE(rc == 3);
        break;
    }
    case V_AS_COMPLETED: {
        cio_as_completed_t it;
        int rc = cio_as_completed_init(&it, fs, 3, INFINITY);
        if (rc) {
            ACC(&err, rc);
            REQUIRE(it.state_ == NULL);
            break;
        }
        cio_future_t *f;
        int got = 0;
        while ((rc = cio_as_completed_next(&it, &f)) == 1)
            got++;
        if (rc)
            ACC(&err, rc);
        else
            REQUIRE(got == 3);
        cio_as_completed_cleanup(&it);
        break;
    }
    default: {
        int rc = cio_future_add_done_callback(fs[0], nop_done, NULL);
        if (rc)
            ACC(&err, rc);
        break;
    }
    }
    return err;
}

static int pools_main(void *arg, void **result)
{
    (void)arg;
    (void)result;
    note_backend();
    int err = 0;
    cio_future_t *sink;
    int srk = cio_future_new(&sink, NULL);
    if (srk) {
        ACC_NEW(&err, srk, sink);
        return err;
    }
    for (int step = 0; step < V_STEPS && !err; step++) {
        /* Three pending futures, completed on the next loop iteration. */
        cio_future_t *fs[3];
        size_t n = 0;
        for (; n < 3; n++) {
            int frc = cio_future_new(&fs[n], NULL);
            if (frc) {
                ACC_NEW(&err, frc, fs[n]);
                break;
            }
        }
        int rc = err ? 0 : drain_cb_pool(sink, step >= V_GATHER && step <= V_AS_COMPLETED);
        if (rc) {
            ACC(&err, rc);
        } else if (!err) {
            for (size_t i = 0; i < n; i++) {
                rc = cio_call_soon(cio_get_running_loop(), NULL, complete_soon, fs[i]);
                if (rc) {
                    ACC(&err, rc);
                    complete_soon(fs[i]);
                }
            }
            if (step == V_DONE_CB)
                for (size_t i = 0; i < n; i++)
                    complete_soon(fs[i]); /* done: the callback is scheduled at once */
            if (!err)
                err = victim(step, fs);
        }
        undrain(sink);
        for (size_t i = 0; i < n; i++) {
            complete_soon(fs[i]);
            cio_future_release(fs[i]);
        }
    }
    REQUIRE(cio_future_cancel(sink) == 1);
    cio_future_release(sink);
    return err;
}

static int sc_pools(void)
{
    return run_main(pools_main, NULL);
}


/* ------------------------------------------------------------------------ */
/* Scenario: many level-triggered readers firing at once                    */
/* ------------------------------------------------------------------------ */

#define NREADERS 120
#define RD_BATCH 40

static int rd_fds[NREADERS][2];
static int rd_count[NREADERS];
static int rd_total;

/* Reads one byte per call: with two bytes queued, the reader must fire
 * again (level-triggered) until it has both, then it removes itself. */
static void on_readable(void *arg)
{
    int i = VAL(arg);
    char c;
    ssize_t r = recv(rd_fds[i][0], &c, 1, 0);
    if (r != 1) {
        REQUIREF(r < 0 && errno == EAGAIN, "reader %d: recv %zd", i, r);
        return;
    }
    rd_total++;
    if (++rd_count[i] == 2)
        REQUIRE(cio_remove_reader(cio_get_running_loop(), rd_fds[i][0]) == 1);
}

static int readers_main(void *arg, void **result)
{
    (void)arg;
    (void)result;
    note_backend();
    int err = 0, expected = 0;
    cio_loop_t *loop = cio_get_running_loop();
    bool watched[NREADERS] = {false};
    for (int i = 0; i < NREADERS; i++)
        REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0,
                           rd_fds[i]) == 0);
    /* Registered in batches with loop turns between them, so that no
     * single turn has more than RD_BATCH registrations to pass on. */
    for (int i = 0; i < NREADERS; i++) {
        int rc = cio_add_reader(loop, rd_fds[i][0], on_readable, ITEM(i));
        if (rc) {
            REQUIREF(fault_err(rc), "add_reader %d: %d (%s)", i, rc, cio_err_name(rc));
            if (!err)
                err = rc;
        } else {
            watched[i] = true;
            expected += 2;
        }
        if (i % RD_BATCH == RD_BATCH - 1 && cio_yield() != 0)
            break;
    }
    /* Every reader becomes ready in the same turn. */
    for (int i = 0; i < NREADERS; i++)
        REQUIRE(send(rd_fds[i][1], "ab", 2, 0) == 2);
    int waited = 0; /* the wait itself failed: nothing to conclude */
    for (int k = 0; k < 2000 && rd_total < expected; k++) {
        if ((waited = cio_sleep(0.001))) {
            ACC(&err, waited);
            break;
        }
    }
    if (!waited) {
        int stuck = -1;
        for (int i = 0; i < NREADERS && stuck < 0; i++)
            if (watched[i] && rd_count[i] < 2)
                stuck = i;
        REQUIREF(rd_total == expected, "%d of %d bytes read: reader %d (fd %d) stopped firing with %d byte(s) "
                 "left", rd_total, expected, stuck, stuck >= 0 ? rd_fds[stuck][0] : -1,
                 stuck >= 0 ? 2 - rd_count[stuck] : 0);
    }
    for (int i = 0; i < NREADERS; i++) {
        if (watched[i] && rd_count[i] < 2)
            cio_remove_reader(loop, rd_fds[i][0]);
        REQUIRE(cio_close(rd_fds[i][0]) == 0);
        REQUIRE(close(rd_fds[i][1]) == 0);
    }
    return err;
}

static int sc_readers(void)
{
    return run_main(readers_main, NULL);
}

/* ------------------------------------------------------------------------ */
/* The driver                                                                */
/* ------------------------------------------------------------------------ */

typedef struct scenario {
    const char *name;
    int (*fn)(void);
} scenario;

static const scenario scenarios[] = {
    {"gather", sc_gather},     {"wait", sc_wait},         {"as_completed", sc_as_completed},
    {"group", sc_group},       {"queue", sc_queue},       {"gen", sc_gen},
    {"gen_plain", sc_gen_plain}, {"futures", sc_futures}, {"pool", sc_pool},
    {"timers", sc_timers},     {"io", sc_io},         {"sync", sc_sync},
    {"pools", sc_pools},       {"readers", sc_readers},   {"net", sc_net},
};
#define NSCENARIOS ((int)(sizeof scenarios / sizeof scenarios[0]))

/* What a run reports to the driver through a pipe. */
typedef struct report {
    int rc;
    long allocs, mmaps, threads;
    int hit;
    int backend;
} report;

static int threads_alive(void)
{
    DIR *d = opendir("/proc/self/task");
    REQUIRE(d != NULL);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

static bool foreground; /* TEST_ALLOC_RUN: no alarm */

/* The body of a run's process. */
static _Noreturn void run_child(const scenario *sc, int kind, long n, int wfd)
{
    signal(SIGALRM, SIG_DFL); /* check's runner handler kills the group */
    if (!foreground)
        alarm(HANG_S);
    cur_scenario = sc->name;
    fault_kind = kind;
    fault_at = n;
    int rc = sc->fn();
    long left = atomic_load(&live);
    REQUIREF(left == 0, "%ld allocation(s) still live after the loop was freed", left);
    int th = threads_alive();
    REQUIREF(th == 1, "%d threads still running", th);
    if (kind == F_NONE)
        REQUIREF(rc == 0, "the run without a fault failed: %d (%s)", rc, cio_err_name(rc));
    else
        REQUIREF(rc == 0 || fault_err(rc), "the run ended with %d (%s)", rc, cio_err_name(rc));
    if (kind != F_NONE && kind != F_THREAD) /* single-threaded: the Nth call repeats */
        REQUIREF(atomic_load(&fault_hit), "the planned fault never happened");
    report r = {.rc = rc, .allocs = atomic_load(&n_alloc), .mmaps = atomic_load(&n_mmap),
                .threads = atomic_load(&n_thread), .hit = atomic_load(&fault_hit),
                .backend = backend_seen};
    ssize_t w = write(wfd, &r, sizeof r);
    (void)w;
    _exit(0);
}

/* Runs one scenario with one planned fault in a process of its own.
 * Returns true if it passed; else describes the failure in why. */
static bool run_once(const scenario *sc, int kind, long n, report *out, char *why, size_t len)
{
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(p[0]);
        run_child(sc, kind, n, p[1]);
    }
    close(p[1]);
    report r;
    size_t got = 0;
    ssize_t k;
    while (got < sizeof r &&
           ((k = read(p[0], (char *)&r + got, sizeof r - got)) > 0 || (k < 0 && errno == EINTR)))
        if (k > 0)
            got += (size_t)k;
    close(p[0]);
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    if (WIFSIGNALED(status)) {
        int sig = WTERMSIG(status);
        if (sig == SIGALRM)
            snprintf(why, len, "hang (no end within %d s)", HANG_S);
        else
            snprintf(why, len, "crash: %s", strsignal(sig));
        return false;
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || got != sizeof r) {
        snprintf(why, len, "check failed (exit %d; message above)",
                 WIFEXITED(status) ? WEXITSTATUS(status) : -1);
        return false;
    }
    *out = r;
    return true;
}

START_TEST(faults)
{
    const scenario *sc = &scenarios[_i];
    char why[256], first[512] = "";
    int failures = 0, runs = 0, mismatches = 0;
    report base, r;
    /* The counts without a fault. Thread creations depend on timing (a
     * worker is started whenever none is idle): the largest count of a few
     * runs is used, and the Nth creation may not happen in every run. */
    long P = 0;
    for (int i = 0; i < 3; i++) {
        ck_assert_msg(run_once(sc, F_NONE, 0, &base, why, sizeof why),
                      "%s: the run without a fault failed: %s", sc->name, why);
        if (base.threads > P)
            P = base.threads;
    }
    long A = base.allocs, M = base.mmaps;
    const long limit[F_KINDS] = {0, A, M, P, A, M};
    for (int kind = F_ALLOC; kind < F_KINDS; kind++) {
        for (long n = 1; n <= limit[kind]; n++) {
            runs++;
            if (!run_once(sc, kind, n, &r, why, sizeof why)) {
                fprintf(stderr, "test_alloc: %s: %s fault N=%ld: %s\n", sc->name,
                        kind_name[kind], n, why);
                if (!failures++)
                    snprintf(first, sizeof first, "%s fault N=%ld: %s", kind_name[kind], n, why);
                continue;
            }
            if (r.backend >= 0 && base.backend >= 0 && r.backend != base.backend) {
                mismatches++;
                printf("test_alloc: %s: %s fault N=%ld: the loop fell back to another "
                       "backend\n", sc->name, kind_name[kind], n);
            }
        }
    }
    printf("test_alloc: %-12s A=%ld M=%ld P=%ld: %d faulted runs, %d failed, %d on "
           "another backend\n", sc->name, A, M, P, runs, failures, mismatches);
    fflush(stdout);
    ck_assert_msg(failures == 0, "%s: %d of %d faulted runs failed; first: %s", sc->name,
                  failures, runs, first);
}
END_TEST

static Suite *alloc_suite(void)
{
    Suite *s = suite_create("alloc");
    TCase *tc = add_tcase(s, "faults", 100);
    tcase_add_loop_test(tc, faults, 0, NSCENARIOS);
    return s;
}

/*
 * TEST_ALLOC_RUN=scenario:kind:N (kind: one of kind_name)
 * runs that one run in the foreground, without fork or alarm, to debug it.
 */
static int run_alone(const char *spec)
{
    char name[64], kind[32];
    long n = 0;
    if (sscanf(spec, "%63[^:]:%31[^:]:%ld", name, kind, &n) != 3)
        return EXIT_FAILURE;
    for (int i = 0; i < NSCENARIOS; i++) {
        if (strcmp(scenarios[i].name, name) != 0)
            continue;
        for (int k = F_NONE; k < F_KINDS; k++)
            if (!strcmp(kind_name[k], kind)) {
                int wfd = open("/dev/null", O_WRONLY);
                foreground = true;
                run_child(&scenarios[i], k, n, wfd);
            }
    }
    return EXIT_FAILURE;
}

int main(void)
{
    /* Before any other cio call, so that every allocation is counted; the
     * runs are forked from here and inherit it. */
    if (cio_replace_allocator(t_malloc, t_realloc, t_calloc, t_free) != 0)
        return EXIT_FAILURE;
    const char *alone = getenv("TEST_ALLOC_RUN");
    if (alone)
        return run_alone(alone);
    SRunner *sr = srunner_create(alloc_suite());
    srunner_run_all(sr, CK_VERBOSE);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
