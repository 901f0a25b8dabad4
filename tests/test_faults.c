/*
 * Failure paths of the core, each of which crashed, hung or leaked before
 * the I/O layer issue: every one must end in a clean error code now.
 */
#include "cio_test.h"

#include <alloca.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/resource.h>
#include <sys/socket.h>

/* Sanitizer runtimes make some of these tests meaningless: ASan and TSan
 * reserve huge shadow mappings (an address-space limit kills them), TSan
 * keeps per-thread mappings of its own and cannot start threads in the child
 * of a multi-threaded fork. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define UNDER_SANITIZER 1
#endif
#if defined(__SANITIZE_THREAD__)
#define UNDER_TSAN 1
#endif

static int ret_zero(void *arg, void **result)
{
    (void)arg;
    (void)result;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Stacks that cannot be had                                                 */
/* ------------------------------------------------------------------------ */

/* A stack no machine can map: the task finishes with -ENOMEM, unrun. */
START_TEST(fault_huge_stack_size)
{
    cio_loop_t *l = new_loop();
    int ran = 0;
    cio_spawn_opts_t o = {.name = "huge", .stack_size = SIZE_MAX / 2};
    cio_task_t *t;
    ck_assert_int_eq(cio_spawn_ex(&t, l, ret_zero, &ran, &o), 0);
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(cio_loop_run_until_complete(l, t, NULL), -ENOMEM);
    cio_future_release(t);
    o.stack_size = (size_t)1 << 42; /* 4 TiB: above the limit cio maps */
    ck_assert_int_eq(cio_spawn_ex(&t, l, ret_zero, &ran, &o), 0);
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(cio_loop_run_until_complete(l, t, NULL), -ENOMEM);
    cio_future_release(t);
    close_free(l);
}
END_TEST

/* Under a small RLIMIT_AS the first stack cannot be mapped: -ENOMEM. */
#ifndef UNDER_SANITIZER
static void small_address_space(void *arg)
{
    (void)arg;
    cio_loop_t *l = new_loop();
    struct rlimit rl = {.rlim_cur = 64u << 20, .rlim_max = 64u << 20};
    if (setrlimit(RLIMIT_AS, &rl))
        _exit(3);
    cio_spawn_opts_t o = {.name = "big", .stack_size = 256u << 20};
    cio_task_t *t;
    if (cio_spawn_ex(&t, l, ret_zero, NULL, &o) < 0)
        _exit(4);
    int rc = cio_loop_run_until_complete(l, t, NULL);
    cio_future_release(t);
    _exit(rc == -ENOMEM && cio_loop_free(l) == 0 ? 0 : 5);
}
#endif

START_TEST(fault_rlimit_as)
{
#ifdef UNDER_SANITIZER
    return; /* the huge-stack test covers the same path */
#else
    int st;
    const char *out = run_child_stderr(small_address_space, NULL, &st);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %d, stderr:\n%s", st,
                  out);
#endif
}
END_TEST

/* ------------------------------------------------------------------------ */
/* A frame larger than the guard                                             */
/* ------------------------------------------------------------------------ */

#if !defined(__SANITIZE_ADDRESS__)
static int big_alloca(void *arg, void **result)
{
    (void)result;
    size_t n = *(size_t *)arg;
    /* Stack-clash protection (in cio's build and its cio.pc flags) probes
     * every page of the allocation, so it faults in the guard and is
     * reported instead of writing through a neighbouring stack. */
    volatile char *p = alloca(n);
    p[0] = 1;
    return p[0] == 1 ? 0 : -EIO;
}

static void run_big_alloca(void *arg)
{
    cio_loop_t *l = new_loop();
    cio_spawn_opts_t o = {.name = "alloca", .stack_size = 0};
    cio_task_t *t;
    ck_assert_int_eq(cio_spawn_ex(&t, l, big_alloca, arg, &o), 0);
    cio_loop_run_until_complete(l, t, NULL);
}
#endif

START_TEST(fault_alloca_over_guard)
{
#if defined(__SANITIZE_ADDRESS__)
    return; /* ASan moves alloca()s to its own fake stacks */
#else
    size_t n = 1u << 20; /* 1 MiB: far beyond the 256 KiB stack */
    int st;
    const char *out = run_child_stderr(run_big_alloca, &n, &st);
    assert_overflow_death(st, out);
    ck_assert_msg(strstr(out, "task 'alloca'") != NULL, "report names the task:\n%s", out);
#endif
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Timers                                                                    */
/* ------------------------------------------------------------------------ */

static void cb_flag(void *arg)
{
    *(int *)arg = 1;
}

static void cb_stop(void *arg)
{
    cio_loop_stop(arg);
}

/* call_later(INFINITY) schedules a timer that never fires: the handle stays
 * active until cancelled (the rule written in cio.h). */
START_TEST(fault_call_later_infinity)
{
    cio_loop_t *l = new_loop();
    cio_handle_t h = CIO_HANDLE_INIT;
    int fired = 0;
    ck_assert_int_eq(cio_call_later(l, &h, INFINITY, cb_flag, &fired), 0);
    ck_assert(cio_handle_active(&h));
    ck_assert_int_eq(cio_call_later(l, NULL, D_SHORT, cb_stop, l), 0);
    ck_assert_int_eq(cio_loop_run_forever(l), 0);
    ck_assert_int_eq(fired, 0);
    ck_assert(cio_handle_active(&h));
    ck_assert_int_eq(cio_handle_cancel(&h), 1);
    ck_assert(!cio_handle_active(&h));
    ck_assert_int_eq(cio_call_at(l, &h, INFINITY, cb_flag, &fired), 0);
    ck_assert(cio_handle_active(&h));
    close_free(l); /* close resets caller-owned handles */
    ck_assert(!cio_handle_active(&h));
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Closed loops and futures                                                  */
/* ------------------------------------------------------------------------ */

static int job_fn(void *arg, void **result)
{
    (void)arg;
    *result = (void *)0x1;
    return 0;
}

START_TEST(fault_closed_loop_refuses)
{
    cio_loop_t *l = new_loop();
    cio_future_t *f;
    ck_assert_int_eq(cio_future_new(&f, l), 0);
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(cio_loop_close(l), 0);
    /* Nothing new is made on a closed loop. */
    cio_future_t *g = NOT_SET;
    ck_assert_int_eq(cio_future_new(&g, l), -ESHUTDOWN);
    ck_assert_ptr_null(g);
    g = NOT_SET;
    ck_assert_int_eq(cio_run_in_executor(&g, l, NULL, job_fn, NULL), -ESHUTDOWN);
    ck_assert_ptr_null(g);
    cio_task_t *t = NOT_SET;
    ck_assert_int_eq(cio_spawn_ex(&t, l, ret_zero, NULL, NULL), -ESHUTDOWN);
    ck_assert_ptr_null(t);
    ck_assert_int_eq(cio_spawn_ex(NULL, l, ret_zero, NULL, NULL), -ESHUTDOWN);
    g = NOT_SET;
    ck_assert_int_eq(cio_shield(&g, f), -ESHUTDOWN);
    ck_assert_ptr_null(g);
    /* A future that outlives the close is still valid memory, but nothing
     * can be scheduled for it any more. */
    ck_assert_int_eq(cio_future_set_result(f, NULL), -ESHUTDOWN);
    ck_assert_int_eq(cio_future_add_done_callback(f, NULL, NULL), -EINVAL);
    ck_assert(!cio_future_done(f));
    /* The loop object is not freed while the future is referenced. */
    ck_assert_int_eq(cio_loop_free(l), -EBUSY);
    cio_future_release(f);
    ck_assert_int_eq(cio_loop_free(l), 0);
}
END_TEST

static void release_twice(void *arg)
{
    (void)arg;
    cio_loop_t *l = new_loop();
    cio_future_t *f;
    ck_assert_int_eq(cio_future_new(&f, l), 0);
    cio_future_t *g;
    ck_assert_int_eq(cio_future_new(&g, l), 0); /* keeps f's slot from reuse */
    cio_future_release(f);
    cio_future_release(f);
    cio_future_release(g);
    _exit(cio_loop_free(l) == 0 ? 0 : 6);
}

/* A double release is reported (always, not only in debug mode) and does
 * not corrupt the pool. */
START_TEST(fault_double_release_reported)
{
    int st;
    const char *out = run_child_stderr(release_twice, NULL, &st);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %d:\n%s", st, out);
    ck_assert_msg(strstr(out, "released more often than referenced") != NULL, "%s", out);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Threads                                                                   */
/* ------------------------------------------------------------------------ */

static size_t count_mappings(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    ck_assert_ptr_nonnull(f);
    size_t n = 0;
    int c;
    while ((c = fgetc(f)) != EOF)
        n += c == '\n';
    fclose(f);
    return n;
}

static void *loop_thread(void *arg)
{
    (void)arg;
    cio_loop_t *l = NULL;
    if (cio_loop_new(&l) == 0)
        cio_loop_free(l);
    return NULL;
}

/* Each thread that ran a loop used to leak its 64 KiB signal stack. */
START_TEST(fault_thread_altstack_released)
{
#ifdef UNDER_TSAN
    return;
#endif
    for (int i = 0; i < 4; i++) { /* warm-up: libc's own thread caches */
        pthread_t th;
        ck_assert_int_eq(pthread_create(&th, NULL, loop_thread, NULL), 0);
        pthread_join(th, NULL);
    }
    size_t before = count_mappings();
    for (int i = 0; i < 200; i++) {
        pthread_t th;
        ck_assert_int_eq(pthread_create(&th, NULL, loop_thread, NULL), 0);
        pthread_join(th, NULL);
    }
    size_t after = count_mappings();
    ck_assert_msg(after < before + 20, "mappings grew from %zu to %zu over 200 threads", before,
                  after);
}
END_TEST

typedef struct racer {
    cio_loop_t *loop;
    atomic_int go;
    long sent, refused;
} racer_t;

static void cb_nothing(void *arg)
{
    (void)arg;
}

static void *post_until_refused(void *arg)
{
    racer_t *r = arg;
    while (!atomic_load(&r->go))
        ;
    for (;;) {
        int rc = cio_call_soon_threadsafe(r->loop, cb_nothing, NULL);
        if (rc == -ESHUTDOWN) {
            r->refused++;
            break;
        }
        if (rc == 0)
            r->sent++;
    }
    return NULL;
}

/* A sender racing cio_loop_close never writes into the closed wake-up fd
 * (ThreadSanitizer reported that race); it gets -ESHUTDOWN once closed. */
START_TEST(fault_threadsafe_vs_close)
{
    for (int round = 0; round < 20; round++) {
        racer_t r = {.loop = new_loop()};
        pthread_t th;
        ck_assert_int_eq(pthread_create(&th, NULL, post_until_refused, &r), 0);
        atomic_store(&r.go, 1);
        for (int i = 0; i < 50; i++) { /* let some posts through the loop */
            ck_assert_int_eq(cio_call_soon(r.loop, NULL, cb_stop, r.loop), 0);
            ck_assert_int_eq(cio_loop_run_forever(r.loop), 0);
        }
        ck_assert_int_eq(cio_loop_close(r.loop), 0);
        pthread_join(th, NULL);
        ck_assert_int_eq(r.refused, 1);
        ck_assert_int_eq(cio_loop_free(r.loop), 0);
    }
}
END_TEST

/* ------------------------------------------------------------------------ */
/* fork()                                                                    */
/* ------------------------------------------------------------------------ */

static int slow_job(void *arg, void **result)
{
    (void)arg;
    *result = (void *)0x2a;
    return 0;
}

/* Uses the pool, a timer and a socket operation from a task. */
static int busy_task(void *arg, void **result)
{
    (void)arg;
    (void)result;
    void *r = NULL;
    int rc = cio_to_thread(slow_job, NULL, &r);
    if (rc || r != (void *)0x2a)
        return rc ? rc : -EIO;
    if ((rc = cio_sleep(0.01)))
        return rc;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv))
        return -errno;
    char buf[4] = {0};
    ssize_t n = cio_sock_send(sv[0], "ping", 4, 0);
    if (n == 4)
        n = cio_sock_recv(sv[1], buf, 4, 0);
    cio_close(sv[0]);
    cio_close(sv[1]);
    return n == 4 && !memcmp(buf, "ping", 4) ? 0 : (n < 0 ? (int)n : -EIO);
}

static int run_busy(cio_loop_t *l)
{
    cio_task_t *t;
    int rc = cio_spawn_ex(&t, l, busy_task, NULL, NULL);
    if (rc)
        return rc;
    rc = cio_loop_run_until_complete(l, t, NULL);
    cio_future_release(t);
    return rc;
}

/* In the child of a process whose loop has an idle pool, cio_to_thread used
 * to hang forever. After cio_loop_fork the child has a loop of its own. */
START_TEST(fault_fork_child_uses_loop)
{
#ifdef UNDER_TSAN
    return;
#endif
    cio_loop_t *l = new_loop();
    ck_assert_int_eq(run_busy(l), 0); /* the pool now has an idle thread */
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        alarm(20);
        int rc = cio_loop_fork(l);
        if (!rc)
            rc = run_busy(l);
        if (!rc)
            rc = cio_loop_shutdown(l);
        _exit(rc == 0 && cio_loop_free(l) == 0 ? 0 : 10);
    }
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %d", st);
    /* The parent's loop is untouched by what the child did. */
    ck_assert_int_eq(run_busy(l), 0);
    ck_assert_int_eq(cio_loop_shutdown(l), 0);
    close_free(l);
}
END_TEST

START_TEST(fault_loop_fork_errors)
{
    ck_assert_int_eq(cio_loop_fork(NULL), -EINVAL);
    cio_loop_t *l = new_loop();
    ck_assert_int_eq(cio_loop_fork(l), 0); /* also fine without a fork */
    ck_assert_int_eq(run_busy(l), 0);
    ck_assert_int_eq(cio_loop_shutdown(l), 0);
    ck_assert_int_eq(cio_loop_close(l), 0);
    ck_assert_int_eq(cio_loop_fork(l), -ESHUTDOWN);
    ck_assert_int_eq(cio_loop_free(l), 0);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Thread pool jobs outliving a close, and fork()                            */
/* ------------------------------------------------------------------------ */

/* Jobs that block until the gate opens. */
typedef struct gate {
    atomic_int open, started, finished;
} gate_t;

static void nap_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int gated_job(void *arg, void **result)
{
    gate_t *g = arg;
    atomic_fetch_add(&g->started, 1);
    while (!atomic_load(&g->open))
        nap_ms(1);
    atomic_fetch_add(&g->finished, 1);
    *result = (void *)0x2a;
    return 0;
}

/* Waits (outside any loop) until n gated jobs have started. */
static void wait_started(gate_t *g, int n)
{
    double end = mono_now() + HANG_BOUND_S;
    while (atomic_load(&g->started) < n && mono_now() < end)
        nap_ms(1);
    ck_assert_int_ge(atomic_load(&g->started), n);
}

static void assert_job_result(cio_future_t *f, int status, void *value)
{
    ck_assert(cio_future_done(f));
    void *r = NOT_SET;
    ck_assert_int_eq(cio_future_result(f, &r), status);
    if (status == 0)
        ck_assert_ptr_eq(r, value);
    ck_assert(cio_future_cancelled(f) == (status == -ECANCELED));
}

/* A job on a user executor that outlived cio_loop_close lost its future
 * for good (the loop took the close, then refused its result), and the
 * loop could never be freed. The close now refuses while such jobs are
 * queued or running, and succeeds once they are done, delivering them. */
START_TEST(fault_executor_job_blocks_close)
{
    cio_loop_t *l = new_loop();
    cio_executor_t *ex = NULL;
    ck_assert_int_eq(cio_executor_new(&ex, 1), 0);
    gate_t g = {0};
    cio_future_t *run, *queued;
    ck_assert_int_eq(cio_run_in_executor(&run, l, ex, gated_job, &g), 0);
    wait_started(&g, 1);
    ck_assert_int_eq(cio_run_in_executor(&queued, l, ex, job_fn, NULL), 0);
    ck_assert_int_eq(cio_loop_close(l), -EBUSY);
    ck_assert(!cio_loop_is_closed(l));
    /* Debug mode says why. */
    cio_loop_set_debug(l, true);
    capture_t cap;
    capture_begin(&cap);
    int rc = cio_loop_close(l);
    char *out = capture_end(&cap);
    ck_assert_int_eq(rc, -EBUSY);
    ck_assert_msg(strstr(out, "2 job(s)") != NULL, "debug report: %s", out);
    free(out);
    cio_loop_set_debug(l, false);
    ck_assert_int_eq(cio_loop_free(l), -EBUSY);
    ck_assert(!cio_loop_is_closed(l));
    /* The jobs finish while the loop is not running: the close, once it is
     * allowed, delivers their results. */
    atomic_store(&g.open, 1);
    double end = mono_now() + HANG_BOUND_S;
    while ((rc = cio_loop_close(l)) == -EBUSY && mono_now() < end)
        nap_ms(1);
    ck_assert_int_eq(rc, 0);
    assert_job_result(run, 0, (void *)0x2a);
    assert_job_result(queued, 0, (void *)0x1);
    ck_assert_int_eq(cio_loop_free(l), -EBUSY); /* the caller's references */
    cio_future_release(run);
    cio_future_release(queued);
    ck_assert_int_eq(cio_loop_free(l), 0);
    cio_executor_shutdown(ex, true);
}
END_TEST

static void *open_gate_later(void *arg)
{
    nap_ms(50);
    atomic_store(&((gate_t *)arg)->open, 1);
    return NULL;
}

/* A result posted to the loop just before the close used to be discarded
 * by it: the close delivers it now. */
START_TEST(fault_executor_result_posted_before_close)
{
    cio_loop_t *l = new_loop();
    cio_executor_t *ex = NULL;
    ck_assert_int_eq(cio_executor_new(&ex, 1), 0);
    gate_t g = {0};
    cio_future_t *run, *queued;
    ck_assert_int_eq(cio_run_in_executor(&run, l, ex, gated_job, &g), 0);
    wait_started(&g, 1);
    ck_assert_int_eq(cio_run_in_executor(&queued, l, ex, job_fn, NULL), 0);
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, open_gate_later, &g), 0);
    /* Cancels the queued job (on this thread, at once), then joins the
     * worker: the running job's result is posted to the loop, which does
     * not run. */
    cio_executor_shutdown(ex, true);
    pthread_join(th, NULL);
    assert_job_result(queued, -ECANCELED, NULL);
    ck_assert(!cio_future_done(run));
    ck_assert_int_eq(cio_loop_close(l), 0);
    assert_job_result(run, 0, (void *)0x2a);
    cio_future_release(run);
    cio_future_release(queued);
    ck_assert_int_eq(cio_loop_free(l), 0);
}
END_TEST

enum { FORK_TASKS = 40 }; /* more than the default pool's threads (<= 32) */

typedef struct to_thread_arg {
    gate_t *g;
    int rc;
    void *r;
} to_thread_arg_t;

static int to_thread_task(void *arg, void **result)
{
    (void)result;
    to_thread_arg_t *a = arg;
    a->rc = cio_to_thread(gated_job, a->g, &a->r);
    return 0;
}

/* Runs every task to its end; 0, or the first failure. */
static int run_all(cio_loop_t *l, cio_task_t **ts, int n)
{
    for (int i = 0; i < n; i++) {
        int rc = cio_loop_run_until_complete(l, ts[i], NULL);
        if (rc)
            return rc;
    }
    return 0;
}

/* Tasks blocked in cio_to_thread at a fork, some of them with their job
 * running on a default pool thread, the others queued: in the child they
 * used to hang forever (the jobs were dropped, their futures never
 * completed, and cio_loop_shutdown spun). After cio_loop_fork, every one
 * returns -ECANCELED in the child, while the parent's complete normally. */
START_TEST(fault_fork_cancels_default_pool_jobs)
{
#ifdef UNDER_TSAN
    return;
#endif
    cio_loop_t *l = new_loop();
    gate_t g = {0};
    to_thread_arg_t args[FORK_TASKS];
    cio_task_t *ts[FORK_TASKS];
    for (int i = 0; i < FORK_TASKS; i++) {
        args[i] = (to_thread_arg_t){.g = &g, .rc = 12345};
        ck_assert_int_eq(cio_spawn_ex(&ts[i], l, to_thread_task, &args[i], NULL), 0);
    }
    /* Each task submits its job and waits. */
    ck_assert_int_eq(cio_call_later(l, NULL, D_SHORT, cb_stop, l), 0);
    ck_assert_int_eq(cio_loop_run_forever(l), 0);
    wait_started(&g, 1);
    nap_ms(20); /* let the pool take what its threads can */
    int running = atomic_load(&g.started);
    ck_assert_int_lt(running, FORK_TASKS); /* some jobs are still queued */
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        alarm(20);
        int started = atomic_load(&g.started);
        if (cio_loop_fork(l))
            _exit(10);
        if (run_all(l, ts, FORK_TASKS))
            _exit(11);
        for (int i = 0; i < FORK_TASKS; i++)
            if (args[i].rc != -ECANCELED)
                _exit(12);
        if (atomic_load(&g.started) != started || atomic_load(&g.finished))
            _exit(13); /* no job ran in the child */
        for (int i = 0; i < FORK_TASKS; i++)
            cio_future_release(ts[i]);
        if (cio_loop_shutdown(l) || cio_loop_free(l))
            _exit(14);
        _exit(0);
    }
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %d", st);
    /* In the parent the jobs carry on: the running ones complete normally. */
    atomic_store(&g.open, 1);
    ck_assert_int_eq(run_all(l, ts, FORK_TASKS), 0);
    for (int i = 0; i < FORK_TASKS; i++) {
        ck_assert_int_eq(args[i].rc, 0);
        ck_assert_ptr_eq(args[i].r, (void *)0x2a);
        cio_future_release(ts[i]);
    }
    ck_assert_int_eq(atomic_load(&g.finished), FORK_TASKS);
    ck_assert_int_eq(cio_loop_shutdown(l), 0);
    close_free(l);
}
END_TEST

/* What the child does first with a user executor that has a running and a
 * queued job at the fork. */
enum { CHILD_SHUTDOWN, CHILD_CANCEL, CHILD_LOOP_FORK };

static int user_pool_child(int how, cio_loop_t *l, cio_executor_t *ex, cio_future_t *run,
                           cio_future_t *queued)
{
    switch (how) {
    case CHILD_SHUTDOWN:
        /* Used to join the parent's thread, which is not in the child. */
        cio_executor_shutdown(ex, true);
        ex = NULL;
        break;
    case CHILD_CANCEL:
        /* A job running at the fork never runs in the child: it can be
         * cancelled there. */
        if (cio_future_cancel(run) != 1)
            return 20;
        break;
    default:
        if (cio_loop_fork(l))
            return 21;
        break;
    }
    if (!cio_future_cancelled(run) || !cio_future_cancelled(queued))
        return 22;
    if (how != CHILD_LOOP_FORK && cio_loop_fork(l))
        return 23;
    /* The executor works in the child. */
    gate_t g = {.open = 1};
    cio_future_t *f;
    if (ex) {
        if (cio_run_in_executor(&f, l, ex, gated_job, &g))
            return 24;
        void *r = NULL;
        if (cio_loop_run_until_complete(l, f, &r) || r != (void *)0x2a)
            return 25;
        cio_future_release(f);
        cio_executor_shutdown(ex, true);
    }
    cio_future_release(run);
    cio_future_release(queued);
    return cio_loop_free(l) ? 26 : 0;
}

static void fork_user_pool(int how)
{
    cio_loop_t *l = new_loop();
    cio_executor_t *ex = NULL;
    ck_assert_int_eq(cio_executor_new(&ex, 1), 0);
    gate_t g = {0};
    cio_future_t *run, *queued;
    ck_assert_int_eq(cio_run_in_executor(&run, l, ex, gated_job, &g), 0);
    wait_started(&g, 1);
    ck_assert_int_eq(cio_run_in_executor(&queued, l, ex, gated_job, &g), 0);
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        alarm(20);
        _exit(user_pool_child(how, l, ex, run, queued));
    }
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %d", st);
    /* The parent's jobs are untouched: both complete normally. */
    atomic_store(&g.open, 1);
    void *r = NULL;
    ck_assert_int_eq(cio_loop_run_until_complete(l, run, &r), 0);
    ck_assert_ptr_eq(r, (void *)0x2a);
    ck_assert_int_eq(cio_loop_run_until_complete(l, queued, &r), 0);
    ck_assert_ptr_eq(r, (void *)0x2a);
    ck_assert_int_eq(atomic_load(&g.finished), 2);
    cio_future_release(run);
    cio_future_release(queued);
    cio_executor_shutdown(ex, true);
    close_free(l);
}

/* cio_executor_shutdown(ex, true) in a forked child used to hang joining
 * thread ids that do not exist there. */
START_TEST(fault_fork_executor_shutdown)
{
#ifdef UNDER_TSAN
    return;
#endif
    fork_user_pool(CHILD_SHUTDOWN);
}
END_TEST

/* Cancelling, in the child, a job that was running at the fork. */
START_TEST(fault_fork_cancel_running_job)
{
#ifdef UNDER_TSAN
    return;
#endif
    fork_user_pool(CHILD_CANCEL);
}
END_TEST

/* cio_loop_fork finishes the jobs of user executors too. */
START_TEST(fault_fork_user_pool_jobs)
{
#ifdef UNDER_TSAN
    return;
#endif
    fork_user_pool(CHILD_LOOP_FORK);
}
END_TEST

/* A replacement allocator must be whole: nothing is replaced otherwise
 * (the loop made afterwards still works with the C library's). */
START_TEST(fault_replace_allocator_einval)
{
    ck_assert_int_eq(cio_replace_allocator(NULL, realloc, calloc, free), -EINVAL);
    ck_assert_int_eq(cio_replace_allocator(malloc, NULL, calloc, free), -EINVAL);
    ck_assert_int_eq(cio_replace_allocator(malloc, realloc, NULL, free), -EINVAL);
    ck_assert_int_eq(cio_replace_allocator(malloc, realloc, calloc, NULL), -EINVAL);
    cio_loop_t *l = new_loop();
    close_free(l);
}
END_TEST

static Suite *faults_suite(void)
{
    Suite *s = suite_create("faults");
    TCase *tc = add_tcase(s, "stacks", TEST_TIMEOUT);
    tcase_add_test(tc, fault_huge_stack_size);
    tcase_add_test(tc, fault_rlimit_as);
    tcase_add_test(tc, fault_alloca_over_guard);
    tc = add_tcase(s, "loop", TEST_TIMEOUT);
    tcase_add_test(tc, fault_call_later_infinity);
    tcase_add_test(tc, fault_closed_loop_refuses);
    tcase_add_test(tc, fault_double_release_reported);
    tcase_add_test(tc, fault_replace_allocator_einval);
    tc = add_tcase(s, "threads", 60);
    tcase_add_test(tc, fault_thread_altstack_released);
    tcase_add_test(tc, fault_threadsafe_vs_close);
    tcase_add_test(tc, fault_executor_job_blocks_close);
    tcase_add_test(tc, fault_executor_result_posted_before_close);
    tc = add_tcase(s, "fork", 60);
    tcase_add_test(tc, fault_fork_child_uses_loop);
    tcase_add_test(tc, fault_loop_fork_errors);
    tcase_add_test(tc, fault_fork_cancels_default_pool_jobs);
    tcase_add_test(tc, fault_fork_executor_shutdown);
    tcase_add_test(tc, fault_fork_cancel_running_job);
    tcase_add_test(tc, fault_fork_user_pool_jobs);
    return s;
}

CIO_TEST_MAIN(faults_suite)
