/*
 * Several cores (multi.c): cio_multi_start runs the main function in n
 * threads, each on a loop of its own, with cio_multi_index telling them
 * apart; cio_multi_stop cancels every main task from outside (also those
 * whose thread has not started its loop yet) and joins; cio_multi_wait
 * waits for the main tasks to end by themselves; both report the first
 * error of a main task. Real loops in real threads, on the backend
 * CIO_BACKEND selects; one test has every loop bind the same UDP port with
 * reuse_port, as servers sharing a port across cores do.
 */
#include "cio_test.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>

#define MAXN 8

/* What the main tasks record, shared by the threads. */
typedef struct shared {
    atomic_int started;          /* main tasks that began */
    atomic_int seen[MAXN];       /* per index: how many tasks had it */
    atomic_int cancelled;        /* main tasks that saw -ECANCELED */
    atomic_int bad_index;        /* an index out of range was seen */
    cio_loop_t *_Atomic loops[MAXN];
    int fail_index;              /* this index returns fail_code */
    int fail_code;
    bool sleep_forever;          /* wait to be cancelled */
    atomic_int hold;             /* once cancelled, block until release */
    atomic_int release;
    int port;                    /* bind a UDP endpoint here (reuse_port) */
    atomic_int bound;
} shared_t;

static void shared_init(shared_t *s)
{
    memset(s, 0, sizeof *s);
    s->fail_index = -1;
}

/* Waits (from the test's thread) until `n` main tasks have started. */
static void wait_started(shared_t *s, int n)
{
    double t0 = mono_now();
    while (atomic_load(&s->started) < n) {
        ck_assert_msg(mono_now() - t0 < HANG_BOUND_S, "only %d of %d loops started",
                      atomic_load(&s->started), n);
        usleep(1000);
    }
}

/* The main function every loop runs. */
static int main_fn(void *arg, void **result)
{
    (void)result;
    shared_t *s = arg;
    int i = cio_multi_index();
    if (i < 0 || i >= MAXN) {
        atomic_store(&s->bad_index, 1);
        return -EINVAL;
    }
    atomic_fetch_add(&s->seen[i], 1);
    atomic_store(&s->loops[i], cio_get_running_loop());
    cio_udp_t *u = NULL;
    if (s->port) {
        cio_udp_opts_t o = {.reuse_port = true};
        int rc = cio_udp_open(&u, "127.0.0.1", s->port, NULL, 0, &o);
        if (rc)
            return rc;
        atomic_fetch_add(&s->bound, 1);
    }
    atomic_fetch_add(&s->started, 1);
    int rc = 0;
    if (s->sleep_forever) {
        rc = cio_sleep(INFINITY);
        if (rc == -ECANCELED)
            atomic_fetch_add(&s->cancelled, 1);
        /* Blocks the loop thread on purpose: m must outlive every
         * cio_multi_cancel call, so the test ends the loops only after
         * its canceller is done with m. */
        while (atomic_load(&s->hold) && !atomic_load(&s->release))
            usleep(1000);
    }
    cio_udp_close(u);
    if (i == s->fail_index)
        return s->fail_code;
    return rc;
}

/* Every index 0..n-1 was run exactly once; with `alive` (every main task
 * was running at once), each on a loop of its own (otherwise a freed loop's
 * memory may have been reused by a later one). */
static void assert_indexes(shared_t *s, int n, bool alive)
{
    ck_assert_int_eq(atomic_load(&s->bad_index), 0);
    for (int i = 0; i < n; i++) {
        ck_assert_int_eq(atomic_load(&s->seen[i]), 1);
        ck_assert_ptr_nonnull(atomic_load(&s->loops[i]));
        for (int j = 0; j < i && alive; j++)
            ck_assert_ptr_ne(atomic_load(&s->loops[i]), atomic_load(&s->loops[j]));
    }
    for (int i = n; i < MAXN; i++)
        ck_assert_int_eq(atomic_load(&s->seen[i]), 0);
}

/* ------------------------------------------------------------------------ */
/* Tests                                                                      */
/* ------------------------------------------------------------------------ */

/* 2 and 4 loops whose main tasks sleep until stop cancels them. */
START_TEST(multi_stop_cancels)
{
    int n = _i ? 4 : 2;
    shared_t s;
    shared_init(&s);
    s.sleep_forever = true;
    cio_multi_t *m = NOT_SET;
    ck_assert_int_eq(cio_multi_start(&m, (unsigned)n, main_fn, &s), 0);
    ck_assert_ptr_nonnull(m);
    wait_started(&s, n);
    ck_assert_int_eq(cio_multi_index(), -1); /* not one of the loops */
    ck_assert_int_eq(cio_multi_stop(m), 0);
    ck_assert_int_eq(atomic_load(&s.cancelled), n);
    assert_indexes(&s, n, true);
}
END_TEST

/* Main tasks that return by themselves: wait returns 0, or the error. */
START_TEST(multi_wait)
{
    shared_t s;
    shared_init(&s);
    cio_multi_t *m;
    ck_assert_int_eq(cio_multi_start(&m, 3, main_fn, &s), 0);
    ck_assert_int_eq(cio_multi_wait(m), 0);
    assert_indexes(&s, 3, false);

    shared_init(&s);
    s.fail_index = 1;
    s.fail_code = -EIO;
    ck_assert_int_eq(cio_multi_start(&m, 4, main_fn, &s), 0);
    ck_assert_int_eq(cio_multi_wait(m), -EIO);
    assert_indexes(&s, 4, false);

    /* A positive status is not an error. */
    shared_init(&s);
    s.fail_index = 0;
    s.fail_code = 7;
    ck_assert_int_eq(cio_multi_start(&m, 2, main_fn, &s), 0);
    ck_assert_int_eq(cio_multi_wait(m), 0);
}
END_TEST

/* A main task that fails when cancelled: stop returns its error. */
START_TEST(multi_stop_error)
{
    shared_t s;
    shared_init(&s);
    s.sleep_forever = true;
    s.fail_index = 2;
    s.fail_code = -ENOTCONN;
    cio_multi_t *m;
    ck_assert_int_eq(cio_multi_start(&m, 4, main_fn, &s), 0);
    wait_started(&s, 4);
    ck_assert_int_eq(cio_multi_stop(m), -ENOTCONN);
}
END_TEST

/* Stop right after start, before the threads have started their loops:
 * nothing hangs, every main task ran once and ended cancelled. */
START_TEST(multi_stop_at_once)
{
    for (int k = 0; k < 20; k++) {
        shared_t s;
        shared_init(&s);
        s.sleep_forever = true;
        cio_multi_t *m;
        ck_assert_int_eq(cio_multi_start(&m, 4, main_fn, &s), 0);
        if (k % 2)
            usleep(100 * (unsigned)k);
        ck_assert_int_eq(cio_multi_stop(m), 0);
        ck_assert_int_eq(atomic_load(&s.cancelled), 4);
        assert_indexes(&s, 4, false);
    }
}
END_TEST

/* Every loop binds the same UDP port with reuse_port. */
START_TEST(multi_reuse_port)
{
    /* A port with a socket of ours in its reuse group, so that nobody
     * else takes it before the loops bind. */
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    ck_assert_int_ge(fd, 0);
    int one = 1;
    ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one), 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t len = sizeof a;
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);

    shared_t s;
    shared_init(&s);
    s.sleep_forever = true;
    s.port = ntohs(a.sin_port);
    cio_multi_t *m;
    ck_assert_int_eq(cio_multi_start(&m, 4, main_fn, &s), 0);
    wait_started(&s, 4);
    ck_assert_int_eq(atomic_load(&s.bound), 4);
    ck_assert_int_eq(cio_multi_stop(m), 0);
    close(fd);
}
END_TEST

/* A main task calling stop on its own multi would join itself. */
static cio_multi_t *_Atomic self_m;
static atomic_int self_tried;

static int stop_self(void *arg, void **result)
{
    (void)arg;
    (void)result;
    if (cio_multi_index() != 0)
        return cio_sleep(INFINITY) == -ECANCELED ? 0 : -EIO;
    while (!atomic_load(&self_m))
        if (cio_sleep(0.001))
            return -EIO;
    int rc = cio_multi_stop(atomic_load(&self_m));
    atomic_store(&self_tried, 1);
    return rc;
}

START_TEST(multi_stop_from_inside)
{
    cio_multi_t *m;
    ck_assert_int_eq(cio_multi_start(&m, 2, stop_self, NULL), 0);
    atomic_store(&self_m, m);
    double t0 = mono_now();
    while (!atomic_load(&self_tried)) {
        ck_assert(mono_now() - t0 < HANG_BOUND_S);
        usleep(1000);
    }
    ck_assert_int_eq(cio_multi_stop(m), -EDEADLK);
}
END_TEST

/* The signal-thread pattern: main waits, another thread cancels. Also
 * twice, and the second cancel does not post the loops' nodes again. */
typedef struct canceller {
    cio_multi_t *m;
    shared_t *s;
} canceller_t;

static void *cancel_later(void *arg)
{
    canceller_t *c = arg;
    usleep(30000);
    ck_assert_int_eq(cio_multi_cancel(c->m), 0);
    ck_assert_int_eq(cio_multi_cancel(c->m), 0);
    /* m is freed by cio_multi_wait once the main tasks end: they end only
     * after this thread's last call on m. */
    atomic_store(&c->s->release, 1);
    return NULL;
}

START_TEST(multi_cancel_while_waiting)
{
    shared_t s;
    shared_init(&s);
    s.sleep_forever = true;
    atomic_store(&s.hold, 1);
    cio_multi_t *m;
    ck_assert_int_eq(cio_multi_start(&m, 3, main_fn, &s), 0);
    wait_started(&s, 3);
    pthread_t th;
    canceller_t c = {.m = m, .s = &s};
    ck_assert_int_eq(pthread_create(&th, NULL, cancel_later, &c), 0);
    ck_assert_int_eq(cio_multi_wait(m), 0); /* cancelled main tasks are no error */
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    ck_assert_int_eq(atomic_load(&s.cancelled), 3);
    assert_indexes(&s, 3, true);
    ck_assert_int_eq(cio_multi_cancel(NULL), -EINVAL);
}
END_TEST

START_TEST(multi_bad_args)
{
    shared_t s;
    shared_init(&s);
    cio_multi_t *m = NOT_SET;
    ck_assert_int_eq(cio_multi_start(&m, 0, main_fn, &s), -EINVAL);
    ck_assert_ptr_null(m);
    m = NOT_SET;
    ck_assert_int_eq(cio_multi_start(&m, 1025, main_fn, &s), -EINVAL);
    ck_assert_ptr_null(m);
    ck_assert_int_eq(cio_multi_start(&m, 2, NULL, &s), -EINVAL);
    ck_assert_int_eq(cio_multi_start(NULL, 2, main_fn, &s), -EINVAL);
    ck_assert_int_eq(cio_multi_stop(NULL), 0);
    ck_assert_int_eq(cio_multi_wait(NULL), 0);
    ck_assert_int_eq(cio_multi_index(), -1);
    ck_assert_int_eq(atomic_load(&s.started), 0);
}
END_TEST

/* One loop: the index is 0, also in tasks the main task spawns. */
static int child_index(void *arg, void **result)
{
    (void)arg;
    (void)result;
    return cio_multi_index();
}

static int main_one(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_task_t *t;
    if (cio_spawn(&t, child_index, NULL))
        return -ENOMEM;
    int rc = cio_await(t, NULL);
    cio_future_release(t);
    return rc == 0 && cio_multi_index() == 0 ? 0 : -EIO;
}

START_TEST(multi_one_loop)
{
    cio_multi_t *m;
    ck_assert_int_eq(cio_multi_start(&m, 1, main_one, NULL), 0);
    ck_assert_int_eq(cio_multi_wait(m), 0);
}
END_TEST

static Suite *multi_suite(void)
{
    Suite *s = suite_create("multi");
    TCase *tc = add_tcase(s, "multi", TEST_TIMEOUT);
    tcase_add_loop_test(tc, multi_stop_cancels, 0, 2);
    tcase_add_test(tc, multi_wait);
    tcase_add_test(tc, multi_stop_error);
    tcase_add_test(tc, multi_stop_at_once);
    tcase_add_test(tc, multi_reuse_port);
    tcase_add_test(tc, multi_stop_from_inside);
    tcase_add_test(tc, multi_bad_args);
    tcase_add_test(tc, multi_cancel_while_waiting);
    tcase_add_test(tc, multi_one_loop);
    return s;
}

CIO_TEST_MAIN(multi_suite)
