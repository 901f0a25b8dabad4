/*
 * The process pool (cio_process_pool_*): results, order, errors of fn, a
 * worker killed mid-job, 64 MiB both ways, many jobs on few workers,
 * shutdown with and without waiting and cancelling, cancellation of a
 * waiting task, use after shutdown, no zombie and no descriptor left,
 * allocation failures, a loop's close, and fork() of a process that has a
 * loop, a thread pool and a process pool.
 *
 * Workers close every descriptor but 0-2 and their channel, so the tests
 * talk to a running job through a MAP_SHARED anonymous page (inherited by
 * the fork): the job publishes its pid and that it started, and waits for
 * the test to let it go.
 */
#include "cio_test.h"

#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>

/* ThreadSanitizer cannot start threads in the child of a multi-threaded
 * fork (the fork test's child uses the thread pool): UNDER_TSAN
 * (cio_test.h) skips it. */
#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif

/* The shared page. */
typedef struct shared {
    int pid;        /* the pid of the last job that started blocking */
    int started;    /* blocking jobs that started */
    int go;         /* set by the test: blocking jobs return */
    int ran;        /* jobs of fn_count that ran */
} shared_t;

static shared_t *shm;

static void shm_setup(void)
{
    void *p = mmap(NULL, sizeof(shared_t), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                   -1, 0);
    ck_assert_ptr_ne(p, MAP_FAILED);
    shm = p;
    memset(shm, 0, sizeof *shm);
}

static int shm_get(int *v) { return __atomic_load_n(v, __ATOMIC_SEQ_CST); }
static void shm_set(int *v, int x) { __atomic_store_n(v, x, __ATOMIC_SEQ_CST); }

/* ------------------------------------------------------------------------ */
/* Functions the workers run                                                 */
/* ------------------------------------------------------------------------ */

/* Every byte plus one. */
static int fn_inc(const void *in, size_t len, void **out, size_t *outlen)
{
    unsigned char *o = malloc(len ? len : 1);
    if (!o)
        return -ENOMEM;
    const unsigned char *i = in;
    for (size_t k = 0; k < len; k++)
        o[k] = (unsigned char)(i[k] + 1);
    *out = o;
    *outlen = len;
    return 0;
}

/* The square of a uint64_t, and fn's status is the argument mod 7. */
static int fn_square(const void *in, size_t len, void **out, size_t *outlen)
{
    if (len != sizeof(uint64_t))
        return -EINVAL;
    uint64_t x;
    memcpy(&x, in, sizeof x);
    uint64_t *o = malloc(sizeof *o);
    if (!o)
        return -ENOMEM;
    *o = x * x;
    *out = o;
    *outlen = sizeof *o;
    return (int)(x % 7);
}

/* Returns the int it is given, with a result that must be discarded when
 * it is negative. */
static int fn_status(const void *in, size_t len, void **out, size_t *outlen)
{
    int st;
    if (len != sizeof st)
        return -EINVAL;
    memcpy(&st, in, sizeof st);
    *out = malloc(16);
    *outlen = 16;
    if (*out)
        memset(*out, 'x', 16);
    return st;
}

/* Says it started, then waits for the test. */
static int fn_block(const void *in, size_t len, void **out, size_t *outlen)
{
    (void)in;
    (void)len;
    (void)out;
    (void)outlen;
    shm_set(&shm->pid, getpid());
    __atomic_add_fetch(&shm->started, 1, __ATOMIC_SEQ_CST);
    while (!shm_get(&shm->go))
        usleep(1000);
    return 7;
}

static int fn_count(const void *in, size_t len, void **out, size_t *outlen)
{
    (void)in;
    (void)len;
    (void)out;
    (void)outlen;
    __atomic_add_fetch(&shm->ran, 1, __ATOMIC_SEQ_CST);
    return 0;
}

static int fn_pid(const void *in, size_t len, void **out, size_t *outlen)
{
    (void)in;
    (void)len;
    int *o = malloc(sizeof *o);
    if (!o)
        return -ENOMEM;
    *o = getpid();
    *out = o;
    *outlen = sizeof *o;
    return 0;
}

static int fn_exit(const void *in, size_t len, void **out, size_t *outlen)
{
    (void)in;
    (void)len;
    (void)out;
    (void)outlen;
    _exit(3);
}

/* 64 MiB pattern, whatever the argument. */
#define BIG ((size_t)64 << 20)
static unsigned char pattern(size_t k) { return (unsigned char)(k * 2654435761u >> 13); }

static int fn_big(const void *in, size_t len, void **out, size_t *outlen)
{
    (void)in;
    (void)len;
    unsigned char *o = malloc(BIG);
    if (!o)
        return -ENOMEM;
    for (size_t k = 0; k < BIG; k++)
        o[k] = pattern(k);
    *out = o;
    *outlen = BIG;
    return 0;
}

/* Uses 2 MiB of stack: more than a task's stack, less than a worker's. */
static int fn_deep(const void *in, size_t len, void **out, size_t *outlen)
{
    (void)in;
    (void)len;
    volatile unsigned char buf[2 << 20];
    for (size_t k = 0; k < sizeof buf; k += 4096)
        buf[k] = (unsigned char)k;
    unsigned char *o = malloc(1);
    if (!o)
        return -ENOMEM;
    o[0] = buf[4096];
    *out = o;
    *outlen = 1;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */
/* ------------------------------------------------------------------------ */

static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    ck_assert_ptr_nonnull(d);
    int n = 0;
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

/* No child process at all, zombie or running. */
static void assert_no_children(void)
{
    siginfo_t si;
    errno = 0;
    ck_assert_int_eq(waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT), -1);
    ck_assert_int_eq(errno, ECHILD);
}

static cio_process_pool_t *new_pool(unsigned workers)
{
    cio_process_pool_t *p = NOT_SET;
    cio_process_pool_opts_t o = {.workers = workers};
    ck_assert_int_eq(cio_process_pool_new(&p, NULL, &o), 0);
    ck_assert_ptr_nonnull(p);
    ck_assert_uint_eq(cio_process_pool_workers(p), workers);
    return p;
}

/* A pool that sends each worker one job at a time (no job sent ahead). */
static cio_process_pool_t *new_pool_1by1(unsigned workers)
{
    cio_process_pool_t *p = NOT_SET;
    cio_process_pool_opts_t o = {.workers = workers, .one_at_a_time = true};
    ck_assert_int_eq(cio_process_pool_new(&p, NULL, &o), 0);
    return p;
}

static void end_pool(cio_process_pool_t *p)
{
    ck_assert_int_eq(cio_process_pool_shutdown(p, true, false), 0);
    cio_process_pool_free(p);
}

/* Waits (bounded) until n blocking jobs have started. */
static void wait_started(int n)
{
    double end = mono_now() + HANG_BOUND_S;
    while (shm_get(&shm->started) < n) {
        ck_assert(mono_now() < end);
        ck_assert_int_eq(cio_sleep(0.001), 0);
    }
}

static void run_main(cio_task_fn fn, void *arg)
{
    ck_assert_int_eq(cio_run(fn, arg), 0);
}

/* ------------------------------------------------------------------------ */
/* Results, order, errors                                                    */
/* ------------------------------------------------------------------------ */

static int t_results(void *arg, void **result)
{
    (void)arg;
    (void)result;
    int fds = count_fds();
    cio_process_pool_t *p = new_pool(2);
    /* submit and await */
    cio_future_t *f = NOT_SET;
    ck_assert_int_eq(cio_process_pool_submit(&f, p, fn_inc, "abc", 3), 0);
    void *r = NULL;
    ck_assert_int_eq(cio_await(f, &r), 0);
    cio_pool_bytes_t *b = r; /* owned by f */
    ck_assert_uint_eq(b->len, 3);
    ck_assert_int_eq(memcmp(b->data, "bcd", 3), 0);
    ck_assert_ptr_eq(cio_process_pool_take(f), b); /* now the caller's */
    ck_assert_ptr_null(cio_process_pool_take(f));
    cio_future_release(f);
    ck_assert_int_eq(((char *)b->data)[2], 'd'); /* valid after the release */
    cio_pool_bytes_free(b);
    ck_assert_ptr_null(cio_process_pool_take(NULL));
    /* run, with an empty argument and an empty result */
    cio_pool_bytes_t *o = NOT_SET;
    ck_assert_int_eq(cio_process_pool_run(p, fn_inc, NULL, 0, &o), 0);
    ck_assert_ptr_nonnull(o);
    ck_assert_ptr_nonnull(o->data);
    ck_assert_uint_eq(o->len, 0);
    cio_pool_bytes_free(o);
    /* a positive status comes back with the result */
    uint64_t x = 12;
    ck_assert_int_eq(cio_process_pool_run(p, fn_square, &x, sizeof x, &o), 12 % 7);
    ck_assert_uint_eq(*(uint64_t *)o->data, 144);
    cio_pool_bytes_free(o);
    /* a result not taken is freed with its future (ASan's leak check) */
    ck_assert_int_eq(cio_process_pool_submit(&f, p, fn_inc, "abc", 3), 0);
    ck_assert_int_eq(cio_process_pool_run(p, fn_inc, "x", 1, NULL), 0);
    while (!cio_future_done(f))
        ck_assert_int_eq(cio_sleep(0.001), 0);
    cio_future_release(f);
    /* fn may use more stack than a task has */
    ck_assert_int_eq(cio_process_pool_run(p, fn_deep, NULL, 0, &o), 0);
    cio_pool_bytes_free(o);
    end_pool(p);
    ck_assert_int_eq(count_fds(), fds);
    assert_no_children();
    return 0;
}

START_TEST(results) { run_main(t_results, NULL); }
END_TEST

#define NMAP 100

static int t_map(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_process_pool_t *p = new_pool(3);
    uint64_t xs[NMAP];
    struct iovec in[NMAP];
    cio_pool_bytes_t *out[NMAP];
    for (int i = 0; i < NMAP; i++) {
        xs[i] = (uint64_t)i * 1000003u;
        in[i] = (struct iovec){&xs[i], sizeof xs[i]};
    }
    ck_assert_int_eq(cio_process_pool_map(p, fn_square, in, NMAP, out), 0);
    for (int i = 0; i < NMAP; i++) {
        ck_assert_uint_eq(out[i]->len, sizeof(uint64_t));
        ck_assert_uint_eq(*(uint64_t *)out[i]->data, xs[i] * xs[i]);
        cio_pool_bytes_free(out[i]);
    }
    /* The first error in order wins; every output is NULL then. */
    int sts[6] = {1, 0, -EDOM, 2, -ERANGE, 0};
    struct iovec sin[6];
    for (int i = 0; i < 6; i++)
        sin[i] = (struct iovec){&sts[i], sizeof sts[i]};
    for (int i = 0; i < 6; i++)
        out[i] = NOT_SET;
    ck_assert_int_eq(cio_process_pool_map(p, fn_status, sin, 6, out), -EDOM);
    for (int i = 0; i < 6; i++)
        ck_assert_ptr_null(out[i]);
    ck_assert_int_eq(cio_process_pool_map(p, fn_status, sin, 0, out), 0);
    ck_assert_int_eq(cio_process_pool_map(p, fn_status, NULL, 1, out), -EINVAL);
    /* errors of fn, its result discarded */
    int st = -EBADMSG;
    cio_pool_bytes_t *o = NOT_SET;
    ck_assert_int_eq(cio_process_pool_run(p, fn_status, &st, sizeof st, &o), -EBADMSG);
    ck_assert_ptr_null(o);
    /* a worker that exits ends its job with -EPIPE and is replaced */
    ck_assert_int_eq(cio_process_pool_run(p, fn_exit, NULL, 0, &o), -EPIPE);
    ck_assert_ptr_null(o);
    ck_assert_int_eq(cio_process_pool_run(p, fn_square, &xs[1], sizeof xs[1], &o),
                     (int)(xs[1] % 7));
    cio_pool_bytes_free(o);
    end_pool(p);
    assert_no_children();
    return 0;
}

START_TEST(map_order_errors) { run_main(t_map, NULL); }
END_TEST

static int t_bad_args(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_process_pool_t *p = NOT_SET;
    ck_assert_int_eq(cio_process_pool_new(NULL, NULL, NULL), -EINVAL);
    cio_process_pool_opts_t o = {.workers = 1, .reserved_ = {(void *)1}};
    ck_assert_int_eq(cio_process_pool_new(&p, NULL, &o), -EINVAL);
    ck_assert_ptr_null(p);
    o = (cio_process_pool_opts_t){.workers = 5000};
    ck_assert_int_eq(cio_process_pool_new(&p, NULL, &o), -EINVAL);
    ck_assert_int_eq(cio_process_pool_new(&p, NULL, NULL), 0); /* one per core */
    ck_assert_uint_ge(cio_process_pool_workers(p), 1);
    cio_future_t *f = NOT_SET;
    ck_assert_int_eq(cio_process_pool_submit(NULL, p, fn_inc, NULL, 0), -EINVAL);
    ck_assert_int_eq(cio_process_pool_submit(&f, NULL, fn_inc, NULL, 0), -EINVAL);
    ck_assert_ptr_null(f);
    ck_assert_int_eq(cio_process_pool_submit(&f, p, NULL, NULL, 0), -EINVAL);
    ck_assert_int_eq(cio_process_pool_submit(&f, p, fn_inc, NULL, 1), -EINVAL);
    ck_assert_int_eq(cio_process_pool_shutdown(NULL, true, false), -EINVAL);
    ck_assert_uint_eq(cio_process_pool_workers(NULL), 0);
    cio_process_pool_free(NULL);
    /* used after shutdown */
    ck_assert_int_eq(cio_process_pool_shutdown(p, true, false), 0);
    ck_assert_int_eq(cio_process_pool_submit(&f, p, fn_inc, "a", 1), -ESHUTDOWN);
    ck_assert_ptr_null(f);
    cio_pool_bytes_t *b = NOT_SET;
    ck_assert_int_eq(cio_process_pool_run(p, fn_inc, "a", 1, &b), -ESHUTDOWN);
    ck_assert_ptr_null(b);
    struct iovec in = {"a", 1};
    ck_assert_int_eq(cio_process_pool_map(p, fn_inc, &in, 1, &b), -ESHUTDOWN);
    ck_assert_ptr_null(b);
    ck_assert_int_eq(cio_process_pool_shutdown(p, true, true), 0); /* again */
    cio_process_pool_free(p);
    assert_no_children();
    return 0;
}

START_TEST(bad_args_after_shutdown)
{
    cio_process_pool_t *p = NOT_SET;
    ck_assert_int_eq(cio_process_pool_new(&p, NULL, NULL), -EPERM);
    ck_assert_ptr_null(p);
    ck_assert_int_eq(cio_process_pool_run(NULL, fn_inc, NULL, 0, NULL), -EPERM);
    run_main(t_bad_args, NULL);
    /* A pool made on a loop that is not running, shut down outside a task:
     * no waiting there (-EPERM), and the loop finishes it. */
    cio_loop_t *l = new_loop();
    ck_assert_int_eq(cio_process_pool_new(&p, l, NULL), 0);
    ck_assert_int_eq(cio_process_pool_shutdown(p, true, false), -EPERM);
    cio_process_pool_free(p);
    ck_assert_int_eq(cio_loop_shutdown(l), 0);
    close_free(l);
    assert_no_children();
}
END_TEST

/* ------------------------------------------------------------------------ */
/* A worker killed mid-job                                                   */
/* ------------------------------------------------------------------------ */

static int t_kill(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_loop_set_debug(cio_get_running_loop(), true);
    cio_process_pool_t *p = new_pool(1);
    cio_future_t *f;
    ck_assert_int_eq(cio_process_pool_submit(&f, p, fn_block, NULL, 0), 0);
    cio_future_t *next;
    ck_assert_int_eq(cio_process_pool_submit(&next, p, fn_pid, NULL, 0), 0);
    wait_started(1);
    int victim = shm_get(&shm->pid);
    ck_assert_int_gt(victim, 0);
    ck_assert_int_eq(kill(victim, SIGKILL), 0);
    double t0 = mono_now();
    ck_assert_int_eq(cio_await(f, NULL), -EPIPE);
    ck_assert(mono_now() - t0 < HANG_BOUND_S);
    cio_future_release(f);
    /* The queued job runs on the replacement. */
    void *r = NULL;
    ck_assert_int_eq(cio_await(next, &r), 0);
    cio_pool_bytes_t *b = r;
    int pid2 = *(int *)b->data;
    ck_assert_int_ne(pid2, victim);
    ck_assert_int_gt(pid2, 0);
    cio_future_release(next); /* frees b */
    /* An idle worker killed: once the pool has reaped it (the pid is gone),
     * the next job runs on its replacement. (A job sent to a worker that
     * dies before reading it goes to another worker: unread_jobs_resent.) */
    ck_assert_int_eq(kill(pid2, SIGKILL), 0);
    double end = mono_now() + HANG_BOUND_S;
    while (kill(pid2, 0) == 0) {
        ck_assert(mono_now() < end);
        ck_assert_int_eq(cio_sleep(0.001), 0);
    }
    cio_pool_bytes_t *o;
    ck_assert_int_eq(cio_process_pool_run(p, fn_pid, NULL, 0, &o), 0);
    ck_assert_int_ne(*(int *)o->data, pid2);
    cio_pool_bytes_free(o);
    end_pool(p);
    assert_no_children();
    return 0;
}

START_TEST(worker_killed)
{
    shm_setup();
    capture_t cap;
    capture_begin(&cap);
    run_main(t_kill, NULL);
    char *err = capture_end(&cap);
    ck_assert_msg(strstr(err, "was killed by signal 9"), "stderr: %s", err);
    free(err);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* 64 MiB                                                                    */
/* ------------------------------------------------------------------------ */

static int t_big(void *arg, void **result)
{
    (void)arg;
    (void)result;
    int fds = count_fds();
    cio_process_pool_t *p = new_pool(2);
    unsigned char *in = malloc(BIG);
    ck_assert_ptr_nonnull(in);
    for (size_t k = 0; k < BIG; k++)
        in[k] = pattern(k);
    cio_pool_bytes_t *o = NULL;
    ck_assert_int_eq(cio_process_pool_run(p, fn_inc, in, BIG, &o), 0);
    ck_assert_uint_eq(o->len, BIG);
    const unsigned char *d = o->data;
    for (size_t k = 0; k < BIG; k++)
        if (d[k] != (unsigned char)(pattern(k) + 1))
            ck_abort_msg("byte %zu differs", k);
    ((unsigned char *)o->data)[0] ^= 1; /* the result is writable */
    cio_pool_bytes_free(o);
    /* A big result from a small argument, and the argument just over the
     * inline limit and at it. */
    ck_assert_int_eq(cio_process_pool_run(p, fn_big, NULL, 0, &o), 0);
    ck_assert_uint_eq(o->len, BIG);
    d = o->data;
    for (size_t k = 0; k < BIG; k++)
        if (d[k] != pattern(k))
            ck_abort_msg("byte %zu differs", k);
    cio_pool_bytes_free(o);
    for (size_t len = 65535; len <= 65537; len++) {
        ck_assert_int_eq(cio_process_pool_run(p, fn_inc, in, len, &o), 0);
        ck_assert_uint_eq(o->len, len);
        ck_assert_int_eq(((unsigned char *)o->data)[len - 1],
                         (unsigned char)(pattern(len - 1) + 1));
        cio_pool_bytes_free(o);
    }
    free(in);
    end_pool(p);
    ck_assert_int_eq(count_fds(), fds);
    assert_no_children();
    return 0;
}

START_TEST(big_64mib) { run_main(t_big, NULL); }
END_TEST

/* ------------------------------------------------------------------------ */
/* Many jobs, few workers                                                    */
/* ------------------------------------------------------------------------ */

#define NTASKS 200

typedef struct many {
    cio_process_pool_t *p;
    int done;
} many_t;

static int many_task(void *arg, void **result)
{
    (void)result;
    many_t *m = arg;
    for (uint64_t i = 0; i < 5; i++) {
        cio_pool_bytes_t *o;
        uint64_t v = (uint64_t)m->done * 31 + i;
        int rc = cio_process_pool_run(m->p, fn_square, &v, sizeof v, &o);
        ck_assert_int_eq(rc, (int)(v % 7));
        ck_assert_uint_eq(*(uint64_t *)o->data, v * v);
        cio_pool_bytes_free(o);
    }
    m->done++;
    return 0;
}

static int t_many(void *arg, void **result)
{
    (void)arg;
    (void)result;
    for (unsigned workers = 2; workers <= 4; workers += 2) {
        many_t m = {.p = new_pool(workers)};
        cio_task_t *ts[NTASKS];
        for (int i = 0; i < NTASKS; i++)
            ts[i] = spawn(many_task, &m);
        ck_assert_int_eq(cio_gather(ts, NTASKS, NULL, NULL, 0), 0);
        for (int i = 0; i < NTASKS; i++)
            cio_future_release(ts[i]);
        ck_assert_int_eq(m.done, NTASKS);
        end_pool(m.p);
    }
    assert_no_children();
    return 0;
}

START_TEST(many_jobs) { run_main(t_many, NULL); }
END_TEST

/* ------------------------------------------------------------------------ */
/* Shutdown and cancellation                                                 */
/* ------------------------------------------------------------------------ */

#define NQ 4

/* arg: one_at_a_time. By default the worker was sent q[0] ahead of its
 * blocking job: q[0] counts as started and still runs. */
static int t_shutdown_cancel(void *arg, void **result)
{
    (void)result;
    bool one = arg != NULL;
    int fds = count_fds();
    cio_process_pool_t *p = one ? new_pool_1by1(1) : new_pool(1);
    cio_future_t *run, *q[NQ];
    ck_assert_int_eq(cio_process_pool_submit(&run, p, fn_block, NULL, 0), 0);
    for (int i = 0; i < NQ; i++)
        ck_assert_int_eq(cio_process_pool_submit(&q[i], p, fn_count, NULL, 0), 0);
    wait_started(1);
    /* Not waiting, cancelling what has not started. */
    ck_assert_int_eq(cio_process_pool_shutdown(p, false, true), 0);
    for (int i = one ? 0 : 1; i < NQ; i++) {
        ck_assert(cio_future_cancelled(q[i]));
        ck_assert_int_eq(cio_future_result(q[i], NULL), -ECANCELED);
    }
    ck_assert(!cio_future_done(run));
    ck_assert(one || !cio_future_done(q[0]));
    shm_set(&shm->go, 1);
    ck_assert_int_eq(cio_await(run, NULL), 7);
    cio_future_release(run);
    if (!one)
        ck_assert_int_eq(cio_await(q[0], NULL), 0);
    for (int i = 0; i < NQ; i++)
        cio_future_release(q[i]);
    /* Waiting now returns once the worker is reaped. */
    ck_assert_int_eq(cio_process_pool_shutdown(p, true, false), 0);
    cio_process_pool_free(p);
    ck_assert_int_eq(shm_get(&shm->ran), one ? 0 : 1);
    ck_assert_int_eq(count_fds(), fds);
    assert_no_children();
    return 0;
}

START_TEST(shutdown_cancel_futures)
{
    shm_setup();
    run_main(t_shutdown_cancel, NULL);
    shm_setup();
    run_main(t_shutdown_cancel, (void *)1);
}
END_TEST

static int t_shutdown_wait(void *arg, void **result)
{
    (void)arg;
    (void)result;
    int fds = count_fds();
    cio_process_pool_t *p = new_pool(1);
    cio_future_t *run, *q[NQ];
    ck_assert_int_eq(cio_process_pool_submit(&run, p, fn_block, NULL, 0), 0);
    for (int i = 0; i < NQ; i++)
        ck_assert_int_eq(cio_process_pool_submit(&q[i], p, fn_count, NULL, 0), 0);
    wait_started(1);
    shm_set(&shm->go, 1);
    /* Waiting without cancelling: every queued job runs first. */
    ck_assert_int_eq(cio_process_pool_shutdown(p, true, false), 0);
    ck_assert_int_eq(shm_get(&shm->ran), NQ);
    ck_assert_int_eq(cio_future_result(run, NULL), 7);
    cio_future_release(run);
    for (int i = 0; i < NQ; i++) {
        ck_assert_int_eq(cio_future_result(q[i], NULL), 0);
        cio_future_release(q[i]);
    }
    ck_assert_int_eq(count_fds(), fds); /* every worker reaped, fds closed */
    assert_no_children();
    cio_process_pool_free(p);
    /* free without shutdown: the loop ends the pool in the background. */
    p = new_pool(2);
    cio_future_t *f;
    ck_assert_int_eq(cio_process_pool_submit(&f, p, fn_inc, "z", 1), 0);
    cio_process_pool_free(p);
    void *r;
    ck_assert_int_eq(cio_await(f, &r), 0); /* submitted jobs still run */
    ck_assert_int_eq(*(char *)((cio_pool_bytes_t *)r)->data, 'z' + 1);
    cio_future_release(f);
    double end = mono_now() + HANG_BOUND_S;
    while (count_fds() != fds) {
        ck_assert(mono_now() < end);
        ck_assert_int_eq(cio_sleep(0.001), 0);
    }
    assert_no_children();
    return 0;
}

START_TEST(shutdown_wait)
{
    shm_setup();
    run_main(t_shutdown_wait, NULL);
}
END_TEST

typedef struct waiter_arg {
    cio_process_pool_t *p;
    int rc;
} waiter_arg_t;

static int waiting_task(void *arg, void **result)
{
    (void)result;
    waiter_arg_t *a = arg;
    cio_pool_bytes_t *o = NOT_SET;
    a->rc = cio_process_pool_run(a->p, fn_block, NULL, 0, &o);
    ck_assert_ptr_null(o);
    return a->rc;
}

static int t_cancel(void *arg, void **result)
{
    (void)arg;
    (void)result;
    /* One job at a time, so that the second job really waits in the queue
     * (by default it is sent ahead: then it counts as started). */
    cio_process_pool_t *p = new_pool_1by1(1);
    /* A queued job's future cancelled: dropped, fn never runs. */
    cio_future_t *blk, *q;
    ck_assert_int_eq(cio_process_pool_submit(&blk, p, fn_block, NULL, 0), 0);
    ck_assert_int_eq(cio_process_pool_submit(&q, p, fn_count, NULL, 0), 0);
    wait_started(1);
    ck_assert_int_eq(cio_future_cancel(q), 1);
    ck_assert(cio_future_cancelled(q));
    cio_future_release(q);
    /* A running job's future cancelled: it ends at once, the worker goes
     * on and its result is dropped. */
    ck_assert_int_eq(cio_future_cancel(blk), 1);
    ck_assert_int_eq(cio_future_result(blk, NULL), -ECANCELED);
    cio_future_release(blk);
    /* A task waiting in run, cancelled: -ECANCELED without waiting for the
     * job. */
    waiter_arg_t a = {.p = p, .rc = 12345};
    cio_task_t *t = spawn(waiting_task, &a);
    settle();
    /* The debug listing says what it waits on. */
    FILE *tmp = tmpfile();
    ck_assert_ptr_nonnull(tmp);
    ck_assert_int_eq(cio_dump_tasks(NULL, tmp), 0);
    char dump[4096] = {0};
    rewind(tmp);
    ck_assert_uint_gt(fread(dump, 1, sizeof dump - 1, tmp), 0);
    fclose(tmp);
    ck_assert_msg(strstr(dump, "process job"), "dump: %s", dump);
    ck_assert_int_eq(cio_task_cancel(t), 1);
    double t0 = mono_now();
    ck_assert_int_eq(finish(t), -ECANCELED);
    ck_assert_int_eq(a.rc, -ECANCELED);
    ck_assert(mono_now() - t0 < HANG_BOUND_S);
    /* The worker is still in the first job; let it go: the pool works. */
    shm_set(&shm->go, 1);
    cio_pool_bytes_t *o;
    ck_assert_int_eq(cio_process_pool_run(p, fn_inc, "a", 1, &o), 0);
    cio_pool_bytes_free(o);
    ck_assert_int_eq(shm_get(&shm->ran), 0);
    /* A deadline bounds run as any await point. */
    shm_set(&shm->go, 0);
    cio_scope_t sc;
    ck_assert_int_eq(cio_scope_enter(&sc, D_SHORT, 0), 0);
    ck_assert_int_eq(cio_process_pool_run(p, fn_block, NULL, 0, &o), -ETIMEDOUT);
    ck_assert_int_eq(cio_scope_exit(&sc), -ETIMEDOUT);
    shm_set(&shm->go, 1);
    end_pool(p);
    assert_no_children();
    return 0;
}

START_TEST(cancellation)
{
    shm_setup();
    run_main(t_cancel, NULL);
}
END_TEST

/* Closing the loop kills and reaps the workers of a pool never shut down;
 * its pending futures end cancelled. */
START_TEST(loop_close_kills)
{
    shm_setup();
    int fds = count_fds();
    cio_loop_t *l = new_loop();
    cio_process_pool_t *p;
    ck_assert_int_eq(cio_process_pool_new(&p, l, &(cio_process_pool_opts_t){.workers = 2}), 0);
    cio_future_t *f, *g;
    ck_assert_int_eq(cio_process_pool_submit(&f, p, fn_block, NULL, 0), 0);
    ck_assert_int_eq(cio_process_pool_submit(&g, p, fn_inc, "a", 1), 0);
    ck_assert_int_eq(cio_loop_run_until_complete(l, g, NULL), 0);
    ck_assert_int_eq(cio_loop_close(l), 0);
    ck_assert_int_eq(cio_future_result(f, NULL), -ECANCELED);
    cio_future_t *h = NOT_SET;
    ck_assert_int_eq(cio_process_pool_submit(&h, p, fn_inc, "a", 1), -ESHUTDOWN);
    ck_assert_ptr_null(h);
    ck_assert_int_eq(cio_process_pool_shutdown(p, true, false), 0);
    cio_process_pool_free(p);
    cio_future_release(f);
    void *r;
    ck_assert_int_eq(cio_future_result(g, &r), 0);
    ck_assert_int_eq(*(char *)((cio_pool_bytes_t *)r)->data, 'b');
    cio_future_release(g);
    ck_assert_int_eq(cio_loop_free(l), 0);
    assert_no_children();
    ck_assert_int_eq(count_fds(), fds);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Allocation failure                                                        */
/* ------------------------------------------------------------------------ */

static atomic_long fail_at = -1; /* the allocation that fails; -1: none */
static atomic_long nallocs;

static bool fail_now(void)
{
    long at = atomic_load(&fail_at);
    return at >= 0 && atomic_fetch_add(&nallocs, 1) == at;
}
static void *t_malloc(size_t n) { return fail_now() ? NULL : malloc(n); }
static void *t_calloc(size_t c, size_t n) { return fail_now() ? NULL : calloc(c, n); }
static void *t_realloc(void *p, size_t n) { return fail_now() ? NULL : realloc(p, n); }

static int t_alloc(void *arg, void **result)
{
    (void)result;
    long at = (long)(intptr_t)arg;
    int fds = count_fds();
    atomic_store(&nallocs, 0);
    atomic_store(&fail_at, at);
    cio_process_pool_t *p;
    int rc = cio_process_pool_new(&p, NULL, &(cio_process_pool_opts_t){.workers = 2});
    if (rc == 0) {
        static unsigned char big[70000];
        struct iovec in[3] = {{"ab", 2}, {big, sizeof big}, {NULL, 0}};
        cio_pool_bytes_t *out[3];
        rc = cio_process_pool_map(p, fn_inc, in, 3, out);
        if (rc == 0)
            for (int i = 0; i < 3; i++)
                cio_pool_bytes_free(out[i]);
        else
            for (int i = 0; i < 3; i++)
                ck_assert_ptr_null(out[i]);
        ck_assert_int_eq(cio_process_pool_shutdown(p, true, false), 0);
        cio_process_pool_free(p);
    }
    atomic_store(&fail_at, -1);
    ck_assert_msg(rc == 0 || rc == -ENOMEM, "rc %d", rc);
    ck_assert_int_eq(count_fds(), fds);
    assert_no_children();
    return atomic_load(&nallocs) > at ? 1 : 0; /* 1: the failure was hit */
}

START_TEST(alloc_failure)
{
    ck_assert_int_eq(cio_replace_allocator(t_malloc, t_realloc, t_calloc, free), 0);
    int hits = 0;
    for (long at = 0; at < 200; at++) {
        cio_loop_t *l = new_loop();
        cio_task_t *t;
        ck_assert_int_eq(cio_spawn_ex(&t, l, t_alloc, (void *)(intptr_t)at, NULL), 0);
        int rc = cio_loop_run_until_complete(l, t, NULL);
        ck_assert_int_ge(rc, 0);
        cio_future_release(t);
        close_free(l);
        if (rc == 0)
            break; /* every allocation of the run succeeded */
        hits++;
    }
    ck_assert_int_gt(hits, 3);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* fork() of a process with a loop, a thread pool and a process pool         */
/* ------------------------------------------------------------------------ */

static int thread_job(void *arg, void **result)
{
    (void)arg;
    *result = (void *)0x2a;
    return 0;
}

typedef struct fork_state {
    cio_process_pool_t *p;
    cio_future_t *run, *queued;
} fork_state_t;

static int child_main(void *arg, void **result)
{
    (void)result;
    fork_state_t *s = arg;
    void *r = NULL;
    if (cio_to_thread(thread_job, NULL, &r) || r != (void *)0x2a)
        return 30; /* the thread pool works in the child */
    cio_pool_bytes_t *o = NOT_SET;
    if (cio_process_pool_run(s->p, fn_inc, "a", 1, &o) != -ECHILD || o)
        return 31;
    cio_future_t *f = NOT_SET;
    if (cio_process_pool_submit(&f, s->p, fn_inc, "a", 1) != -ECHILD || f)
        return 32;
    if (cio_process_pool_shutdown(s->p, true, false) != 0)
        return 33;
    cio_process_pool_free(s->p);
    /* A pool of the child's own works. */
    cio_process_pool_t *mine;
    if (cio_process_pool_new(&mine, NULL, &(cio_process_pool_opts_t){.workers = 1}))
        return 34;
    if (cio_process_pool_run(mine, fn_inc, "a", 1, &o) || *(char *)o->data != 'b')
        return 35;
    cio_pool_bytes_free(o);
    if (cio_process_pool_shutdown(mine, true, false))
        return 36;
    cio_process_pool_free(mine);
    return 0;
}

static int fork_child(cio_loop_t *l, fork_state_t *s)
{
    if (cio_loop_fork(l))
        return 20;
    /* The parent's jobs end with -ECHILD in the child. */
    if (cio_future_result(s->run, NULL) != -ECHILD ||
        cio_future_result(s->queued, NULL) != -ECHILD)
        return 21;
    cio_future_release(s->run);
    cio_future_release(s->queued);
    cio_task_t *t;
    if (cio_spawn_ex(&t, l, child_main, s, NULL))
        return 22;
    int rc = cio_loop_run_until_complete(l, t, NULL);
    cio_future_release(t);
    if (rc)
        return rc;
    /* The parent's worker was not touched: it still runs its job. */
    if (kill(shm_get(&shm->pid), 0))
        return 23;
    if (cio_loop_shutdown(l) || cio_loop_free(l))
        return 24;
    siginfo_t si;
    if (waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) != -1 || errno != ECHILD)
        return 25; /* the child's own worker was reaped */
    return 0;
}

static int warm_thread_pool(void *arg, void **result)
{
    (void)arg;
    (void)result;
    void *r;
    return cio_to_thread(thread_job, NULL, &r);
}

START_TEST(fork_child_behaviour)
{
#ifdef UNDER_TSAN
    return;
#endif
    shm_setup();
    cio_loop_t *l = new_loop();
    fork_state_t s;
    ck_assert_int_eq(cio_process_pool_new(&s.p, l, &(cio_process_pool_opts_t){.workers = 1}), 0);
    cio_task_t *t;
    ck_assert_int_eq(cio_spawn_ex(&t, l, warm_thread_pool, NULL, NULL), 0);
    ck_assert_int_eq(cio_loop_run_until_complete(l, t, NULL), 0);
    cio_future_release(t);
    ck_assert_int_eq(cio_process_pool_submit(&s.run, s.p, fn_block, NULL, 0), 0);
    ck_assert_int_eq(cio_process_pool_submit(&s.queued, s.p, fn_count, NULL, 0), 0);
    double end = mono_now() + HANG_BOUND_S;
    while (shm_get(&shm->started) < 1) {
        ck_assert(mono_now() < end);
        usleep(1000);
    }
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        alarm(20);
        _exit(fork_child(l, &s));
    }
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %d", st);
    /* In the parent the jobs go on: both complete normally. */
    shm_set(&shm->go, 1);
    ck_assert_int_eq(cio_loop_run_until_complete(l, s.queued, NULL), 0);
    ck_assert_int_eq(cio_future_result(s.run, NULL), 7);
    ck_assert_int_eq(shm_get(&shm->ran), 1);
    cio_future_release(s.run);
    cio_future_release(s.queued);
    cio_process_pool_free(s.p);
    ck_assert_int_eq(cio_loop_shutdown(l), 0);
    close_free(l);
    assert_no_children();
}
END_TEST

/* Two loops on two threads, each with a pool of its own, made, used and
 * closed at the same time (the pools share a process-wide list). */
static int t_thread_loop(void *arg, void **result)
{
    (void)arg;
    (void)result;
    for (int round = 0; round < 5; round++) {
        cio_process_pool_t *p = new_pool(1);
        cio_pool_bytes_t *o;
        ck_assert_int_eq(cio_process_pool_run(p, fn_inc, "q", 1, &o), 0);
        ck_assert_int_eq(*(char *)o->data, 'r');
        cio_pool_bytes_free(o);
        if (round % 2)
            end_pool(p);
        else
            cio_process_pool_free(p); /* left for the loop's close */
    }
    return 0;
}

static void *thread_loop(void *arg)
{
    (void)arg;
    return (void *)(intptr_t)cio_run(t_thread_loop, NULL);
}

START_TEST(two_loops_two_threads)
{
#ifdef UNDER_ASAN
    /* GCC 12's libasan does not lock its allocator around fork(): a worker
     * forked by one loop's thread while the other thread allocates can block
     * for ever in its first malloc (seen here in fn_inc). glibc's malloc
     * is fork-safe; fn's own fork safety is the caller's (cio.h). */
    return;
#endif
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, thread_loop, NULL), 0);
    for (int i = 0; i < 2; i++) {
        void *r;
        ck_assert_int_eq(pthread_join(th[i], &r), 0);
        ck_assert_ptr_null(r);
    }
    assert_no_children();
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Review findings: resent jobs, send failures, descriptors                  */
/* ------------------------------------------------------------------------ */

/* Dies at once: the job it runs fails with -EPIPE. */
static int fn_die(const void *in, size_t len, void **out, size_t *outlen)
{
    (void)in;
    (void)len;
    (void)out;
    (void)outlen;
    kill(getpid(), SIGKILL);
    _exit(9); /* not reached */
}

/* A job sent ahead to a worker that dies while running the job before it
 * goes to the replacement with its whole argument, also a large one (its
 * memfd is kept until the job ends; inline would read past a 0-byte copy,
 * and 64 MiB inline could never be sent). */
static int t_ahead_big_arg(void *arg, void **result)
{
    (void)arg;
    (void)result;
    int fds = count_fds();
    cio_process_pool_t *p = new_pool(1);
    size_t sizes[] = {65536, 65537, 100000, (size_t)8 << 20};
    unsigned char *in = malloc(sizes[3]);
    ck_assert_ptr_nonnull(in);
    for (size_t k = 0; k < sizes[3]; k++)
        in[k] = pattern(k);
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        cio_future_t *a, *b;
        ck_assert_int_eq(cio_process_pool_submit(&a, p, fn_die, NULL, 0), 0);
        ck_assert_int_eq(cio_process_pool_submit(&b, p, fn_inc, in, sizes[i]), 0); /* ahead */
        double t0 = mono_now();
        ck_assert_int_eq(cio_await(a, NULL), -EPIPE);
        void *r = NULL;
        ck_assert_int_eq(cio_await(b, &r), 0);
        ck_assert(mono_now() - t0 < HANG_BOUND_S);
        cio_pool_bytes_t *o = r;
        ck_assert_uint_eq(o->len, sizes[i]);
        const unsigned char *d = o->data;
        for (size_t k = 0; k < sizes[i]; k++)
            if (d[k] != (unsigned char)(pattern(k) + 1))
                ck_abort_msg("size %zu: byte %zu differs", sizes[i], k);
        cio_future_release(a);
        cio_future_release(b);
    }
    free(in);
    end_pool(p);
    ck_assert_int_eq(count_fds(), fds);
    assert_no_children();
    return 0;
}

START_TEST(ahead_big_arg_resent) { run_main(t_ahead_big_arg, NULL); }
END_TEST

/* Returns 7 with "A", and dies of SIGALRM half a second later, while it
 * waits for its next job: after its result is in the channel (sent within
 * microseconds; the margin is for a loaded machine). */
static int fn_then_die(const void *in, size_t len, void **out, size_t *outlen)
{
    (void)in;
    (void)len;
    struct itimerval it = {.it_value = {.tv_usec = 500 * 1000}};
    if (setitimer(ITIMER_REAL, &it, NULL))
        return -errno;
    *out = strdup("A");
    *outlen = 2;
    return *out ? 7 : -ENOMEM;
}

/* A worker sends a result and dies; then a job is sent ahead to it (the
 * pool has not seen the death yet) and the send fails: the result already
 * sent still counts, and the job goes to the replacement. */
static int t_result_kept(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_process_pool_t *p = new_pool(1);
    cio_pool_bytes_t *o;
    ck_assert_int_eq(cio_process_pool_run(p, fn_pid, NULL, 0, &o), 0);
    pid_t pid = *(int *)o->data;
    cio_pool_bytes_free(o);
    cio_future_t *a, *b;
    ck_assert_int_eq(cio_process_pool_submit(&a, p, fn_then_die, NULL, 0), 0);
    /* The loop is held here (no await) until the worker is dead, so the pool
     * learns of it only when b's send fails. WNOWAIT: the pool reaps it. */
    siginfo_t si = {0};
    ck_assert_int_eq(waitid(P_PID, (id_t)pid, &si, WEXITED | WNOWAIT), 0);
    ck_assert_int_eq(si.si_status, SIGALRM);
    int v = 7;
    ck_assert_int_eq(cio_process_pool_submit(&b, p, fn_status, &v, sizeof v), 0);
    void *r = NULL;
    ck_assert_int_eq(cio_await(a, &r), 7);
    ck_assert_str_eq(((cio_pool_bytes_t *)r)->data, "A");
    ck_assert_int_eq(cio_await(b, NULL), 7);
    cio_future_release(a);
    cio_future_release(b);
    end_pool(p);
    assert_no_children();
    return 0;
}

START_TEST(result_kept_when_send_fails) { run_main(t_result_kept, NULL); }
END_TEST

/* Jobs sent to a worker that dies before reading them (stopped, then
 * killed) never started: both, the one it would have run and the one sent
 * ahead, run on the replacement, in order; a job whose worker dies while
 * running it still fails with -EPIPE. */
static int t_unread(void *arg, void **result)
{
    (void)arg;
    (void)result;
    int fds = count_fds();
    cio_process_pool_t *p = new_pool(1);
    cio_pool_bytes_t *o;
    ck_assert_int_eq(cio_process_pool_run(p, fn_pid, NULL, 0, &o), 0);
    pid_t pid = *(int *)o->data;
    cio_pool_bytes_free(o);
    ck_assert_int_eq(kill(pid, SIGSTOP), 0);
    siginfo_t si = {0};
    ck_assert_int_eq(waitid(P_PID, (id_t)pid, &si, WSTOPPED | WNOWAIT), 0);
    cio_future_t *f[3];
    int v[2] = {5, 6};
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(cio_process_pool_submit(&f[i], p, fn_status, &v[i], sizeof v[i]), 0);
    ck_assert_int_eq(cio_process_pool_submit(&f[2], p, fn_pid, NULL, 0), 0); /* queued */
    ck_assert_int_eq(kill(pid, SIGKILL), 0);
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(cio_await(f[i], NULL), v[i]);
    void *r = NULL;
    ck_assert_int_eq(cio_await(f[2], &r), 0);
    ck_assert_int_ne(*(int *)((cio_pool_bytes_t *)r)->data, pid);
    for (int i = 0; i < 3; i++)
        cio_future_release(f[i]);
    /* Started, then killed: -EPIPE, and the job ahead of it runs. */
    cio_future_t *a, *b;
    ck_assert_int_eq(cio_process_pool_submit(&a, p, fn_die, NULL, 0), 0);
    ck_assert_int_eq(cio_process_pool_submit(&b, p, fn_status, &v[0], sizeof v[0]), 0);
    ck_assert_int_eq(cio_await(a, NULL), -EPIPE);
    ck_assert_int_eq(cio_await(b, NULL), v[0]);
    cio_future_release(a);
    cio_future_release(b);
    end_pool(p);
    ck_assert_int_eq(count_fds(), fds);
    assert_no_children();
    return 0;
}

START_TEST(unread_jobs_resent) { run_main(t_unread, NULL); }
END_TEST

/* Shrinks the send buffer of every SOCK_SEQPACKET socket of the program
 * (the pool's ends of its channels): returns how many. */
static int shrink_channels(void)
{
    DIR *d = opendir("/proc/self/fd");
    ck_assert_ptr_nonnull(d);
    int n = 0, small = 1;
    struct dirent *e;
    while ((e = readdir(d))) {
        int fd = atoi(e->d_name), type = 0;
        socklen_t l = sizeof type;
        if (e->d_name[0] == '.' || fd == dirfd(d) ||
            getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &l) || type != SOCK_SEQPACKET)
            continue;
        ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
        n++;
    }
    closedir(d);
    return n;
}

/* A send that fails for a reason other than the worker's death (here
 * EMSGSIZE: a 64 KiB message and a send buffer made tiny under the pool)
 * fails that job with the error, at once: no retry, no worker lost. */
static int t_send_error(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_process_pool_t *p = new_pool(1);
    cio_pool_bytes_t *o;
    ck_assert_int_eq(cio_process_pool_run(p, fn_pid, NULL, 0, &o), 0);
    int pid = *(int *)o->data;
    cio_pool_bytes_free(o);
    ck_assert_int_eq(shrink_channels(), 1);
    unsigned char *in = calloc(1, 65536);
    ck_assert_ptr_nonnull(in);
    double t0 = mono_now();
    ck_assert_int_eq(cio_process_pool_run(p, fn_inc, in, 65536, NULL), -EMSGSIZE);
    ck_assert(mono_now() - t0 < HANG_BOUND_S);
    free(in);
    ck_assert_int_eq(cio_process_pool_run(p, fn_pid, NULL, 0, &o), 0);
    ck_assert_int_eq(*(int *)o->data, pid); /* the same worker */
    cio_pool_bytes_free(o);
    end_pool(p);
    assert_no_children();
    return 0;
}

START_TEST(send_error_fails_job) { run_main(t_send_error, NULL); }
END_TEST

/* 200,000 zero bytes: a result passed in a memfd. */
static int fn_zeros(const void *in, size_t len, void **out, size_t *outlen)
{
    (void)in;
    (void)len;
    *out = calloc(1, 200000);
    *outlen = 200000;
    return *out ? 0 : -ENOMEM;
}

/* The program is out of descriptors when a large result's memfd arrives:
 * that job fails with -EMFILE and the worker, healthy, stays. */
static int t_emfile(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_process_pool_t *p = new_pool(1);
    cio_pool_bytes_t *o;
    ck_assert_int_eq(cio_process_pool_run(p, fn_pid, NULL, 0, &o), 0);
    int pid = *(int *)o->data;
    cio_pool_bytes_free(o);
    cio_future_t *f;
    ck_assert_int_eq(cio_process_pool_submit(&f, p, fn_zeros, NULL, 0), 0);
    struct rlimit old, rl;
    ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
    rl = old;
    rl.rlim_cur = 256;
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
    int fill[256], nfill = 0, fd;
    while (nfill < 256 && (fd = open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0)
        fill[nfill++] = fd;
    ck_assert_int_eq(errno, EMFILE);
    ck_assert_int_eq(cio_await(f, NULL), -EMFILE);
    cio_future_release(f);
    while (nfill)
        close(fill[--nfill]);
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &old), 0);
    ck_assert_int_eq(cio_process_pool_run(p, fn_pid, NULL, 0, &o), 0);
    ck_assert_int_eq(*(int *)o->data, pid); /* the same worker */
    cio_pool_bytes_free(o);
    end_pool(p);
    assert_no_children();
    return 0;
}

START_TEST(emfile_on_big_result) { run_main(t_emfile, NULL); }
END_TEST

/* Ends the worker as exit() does: stdio flushes every stream, the parent's
 * copies too. (Not exit() itself: in a sanitizer build it would also run
 * the leak checker in the worker.) */
static int fn_exit_stdio(const void *in, size_t len, void **out, size_t *outlen)
{
    (void)in;
    (void)len;
    (void)out;
    (void)outlen;
    fflush(NULL);
    _exit(3);
}

/* A stdio stream of the program with unwritten data, on fd 3 (the first
 * free number of a program, and where a worker's channel used to be): a
 * worker whose fn calls exit() flushes its copy into nothing (the
 * descriptor is closed in the worker), never into its channel. What the
 * test harness has on fd 3 (check's message file) is moved away meanwhile,
 * so nothing in between calls check. */
static int t_stdio(void *arg, void **result)
{
    (void)arg;
    (void)result;
    char path[] = "/tmp/cio_pp_stdio_XXXXXX";
    int tmp = mkstemp(path);
    ck_assert_int_ge(tmp, 0);
    unlink(path);
    int saved3 = fcntl(3, F_DUPFD_CLOEXEC, 10); /* -1: fd 3 was free */
    int moved = 3;
    if (tmp != 3) {
        moved = dup2(tmp, 3);
        close(tmp);
    }
    const char *line = "a line the program has not flushed yet\n";
    int rc_new = -1, rc1 = 0, rc2 = 0, rc_end = -1, flushed = -1;
    ssize_t got = -1;
    char buf[256] = {0};
    FILE *log = fdopen(3, "w+");
    if (log) {
        fputs(line, log);
        cio_process_pool_t *p = NULL;
        rc_new = cio_process_pool_new(&p, NULL, &(cio_process_pool_opts_t){.workers = 1});
        if (!rc_new) {
            rc1 = cio_process_pool_run(p, fn_exit_stdio, NULL, 0, NULL);
            rc2 = cio_process_pool_run(p, fn_exit_stdio, NULL, 0, NULL);
            rc_end = cio_process_pool_shutdown(p, true, false);
            cio_process_pool_free(p);
        }
        flushed = fflush(log);
        got = pread(3, buf, sizeof buf - 1, 0);
        fclose(log); /* closes fd 3 */
    }
    if (saved3 >= 0) {
        dup2(saved3, 3);
        close(saved3);
    }
    ck_assert_int_eq(moved, 3);
    ck_assert_ptr_nonnull(log);
    ck_assert_int_eq(rc_new, 0);
    ck_assert_int_eq(rc1, -EPIPE);
    ck_assert_int_eq(rc2, -EPIPE);
    ck_assert_int_eq(rc_end, 0);
    ck_assert_int_eq(flushed, 0);
    /* The file has the line once: the program's own flush. */
    ck_assert_int_eq(got, (ssize_t)strlen(line));
    ck_assert_str_eq(buf, line);
    assert_no_children();
    return 0;
}

START_TEST(stale_stdio_stream) { run_main(t_stdio, NULL); }
END_TEST

/* 1 if fd 0 is open in the worker. */
static int fn_fd0_open(const void *in, size_t len, void **out, size_t *outlen)
{
    (void)in;
    (void)len;
    (void)out;
    (void)outlen;
    return fcntl(0, F_GETFD) >= 0;
}

/* With stdin closed in the program, a channel never takes its number: a
 * worker would keep it (it keeps 0-2), holding another channel open. */
static int t_stdin_closed(void *arg, void **result)
{
    (void)arg;
    (void)result;
    int saved = dup(0);
    ck_assert_int_ge(saved, 0);
    ck_assert_int_eq(close(0), 0);
    cio_process_pool_t *p = new_pool(2);
    ck_assert_int_eq(fcntl(0, F_GETFD), -1); /* still free in the program */
    cio_future_t *f[2];
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(cio_process_pool_submit(&f[i], p, fn_fd0_open, NULL, 0), 0);
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(cio_await(f[i], NULL), 0);
        cio_future_release(f[i]);
    }
    end_pool(p);
    ck_assert_int_eq(dup2(saved, 0), 0);
    close(saved);
    assert_no_children();
    return 0;
}

START_TEST(stdin_closed) { run_main(t_stdin_closed, NULL); }
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("pool_process");
    TCase *tc = add_tcase(s, "basic", 60);
    tcase_add_test(tc, results);
    tcase_add_test(tc, map_order_errors);
    tcase_add_test(tc, bad_args_after_shutdown);
    tcase_add_test(tc, many_jobs);
    tcase_add_test(tc, two_loops_two_threads);
    tc = add_tcase(s, "faults", 60);
    tcase_add_test(tc, worker_killed);
    tcase_add_test(tc, loop_close_kills);
    tcase_add_test(tc, alloc_failure);
    tc = add_tcase(s, "big", 120);
    tcase_add_test(tc, big_64mib);
    tc = add_tcase(s, "shutdown", 60);
    tcase_add_test(tc, shutdown_cancel_futures);
    tcase_add_test(tc, shutdown_wait);
    tcase_add_test(tc, cancellation);
    tc = add_tcase(s, "fork", 60);
    tcase_add_test(tc, fork_child_behaviour);
    tc = add_tcase(s, "review", 120);
    tcase_add_test(tc, ahead_big_arg_resent);
    tcase_add_test(tc, result_kept_when_send_fails);
    tcase_add_test(tc, unread_jobs_resent);
    tcase_add_test(tc, send_error_fails_job);
    tcase_add_test(tc, emfile_on_big_result);
    tcase_add_test(tc, stale_stdio_stream);
    tcase_add_test(tc, stdin_closed);
    return s;
}

CIO_TEST_MAIN(suite)
