/*
 * Combinators: cio_gather (ordered results, first error while the others run
 * on, CIO_GATHER_ALL, cancellation), cio_wait (FIRST_COMPLETED,
 * FIRST_EXCEPTION, ALL_COMPLETED, timeout), cio_as_completed.
 */
#include "cio_test.h"

static int res[4];

static cio_task_t *spawn_child(child_t *c, double delay, int status, void *result)
{
    child_init(c, delay, status, result);
    cio_task_t *t;
    ck_assert_int_eq(cio_spawn(&t, child_body, c), 0);
    ck_assert_ptr_nonnull(t);
    return t;
}

static void release_all(cio_future_t **fs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        cio_future_release(fs[i]);
}

/* ------------------------------------------------------------------------ */
/* gather                                                                     */
/* ------------------------------------------------------------------------ */

static void cb_complete(void *arg)
{
    ck_assert_int_eq(cio_future_set_result(arg, &res[3]), 0);
}

static int main_gather_ordered(void *arg, void **result)
{
    (void)arg;
    (void)result;
    child_t c[3];
    cio_future_t *fs[4];
    fs[0] = spawn_child(&c[0], 0.05, 0, &res[0]);
    fs[1] = spawn_child(&c[1], 0.01, 0, &res[1]);
    fs[2] = spawn_child(&c[2], 0.03, 0, &res[2]);
    /* A plain future completed by a callback mixes in. */
    ck_assert_int_eq(cio_future_new(&fs[3], NULL), 0);
    ck_assert_int_eq(cio_call_later(cio_get_running_loop(), NULL, 0.02, cb_complete, fs[3]), 0);
    void *results[4] = {0};
    int statuses[4] = {1, 1, 1, 1};
    int64_t t0 = loop_ns();
    ck_assert_int_eq(cio_gather(fs, 4, results, statuses, 0), 0);
    ck_assert_int_ge(loop_ns() - t0, 50000000LL);
    for (int i = 0; i < 4; i++) {
        ck_assert(cio_future_done(fs[i]));
        ck_assert_ptr_eq(results[i], &res[i]);
        ck_assert_int_eq(statuses[i], 0);
    }
    /* results/statuses may be NULL. */
    ck_assert_int_eq(cio_gather(fs, 4, NULL, NULL, 0), 0);
    /* n == 0 completes at once. */
    ck_assert_int_eq(cio_gather(NULL, 0, NULL, NULL, 0), 0);
    release_all(fs, 4);
    return 0;
}

START_TEST(comb_gather_ordered)
{
    RUN_MAIN(main_gather_ordered, NULL);
}
END_TEST

static int main_gather_first_error(void *arg, void **result)
{
    (void)arg;
    (void)result;
    child_t a, b;
    cio_future_t *fs[2];
    fs[0] = spawn_child(&a, 0.3, 0, &res[0]);
    fs[1] = spawn_child(&b, 0.01, -EPIPE, NULL);
    int statuses[2] = {12345, 12345};
    void *results[2] = {NULL, NULL};
    ck_assert_int_eq(cio_gather(fs, 2, results, statuses, 0), -EPIPE);
    /* Returned as soon as b failed: a still runs, not cancelled. */
    ck_assert(!cio_future_done(fs[0]));
    ck_assert(!a.finished);
    ck_assert(!cio_task_cancelling(fs[0]));
    ck_assert_int_eq(statuses[1], -EPIPE);
    /* a finishes later, normally. */
    void *r = NULL;
    ck_assert_int_eq(cio_await(fs[0], &r), 0);
    ck_assert_int_eq(a.observed, 0);
    ck_assert_ptr_eq(r, &res[0]);
    release_all(fs, 2);
    return 0;
}

START_TEST(comb_gather_first_error)
{
    RUN_MAIN(main_gather_first_error, NULL);
}
END_TEST

static int main_gather_all(void *arg, void **result)
{
    (void)arg;
    (void)result;
    child_t c[3];
    cio_future_t *fs[3];
    fs[0] = spawn_child(&c[0], 0.01, -EPIPE, NULL);
    fs[1] = spawn_child(&c[1], 0.03, 0, &res[1]);
    fs[2] = spawn_child(&c[2], 0.02, -EIO, NULL);
    int statuses[3] = {1, 1, 1};
    void *results[3] = {NULL, NULL, NULL};
    ck_assert_int_eq(cio_gather(fs, 3, results, statuses, CIO_GATHER_ALL), 0);
    ck_assert_int_eq(statuses[0], -EPIPE);
    ck_assert_int_eq(statuses[1], 0);
    ck_assert_int_eq(statuses[2], -EIO);
    ck_assert_ptr_eq(results[1], &res[1]);
    for (int i = 0; i < 3; i++) {
        ck_assert(cio_future_done(fs[i]));
        ck_assert(c[i].finished);
    }
    release_all(fs, 3);

    /* Cancelled children are collected as -ECANCELED. */
    child_t k;
    cio_future_t *g[2];
    g[0] = spawn_child(&k, 10, 0, NULL);
    ck_assert_int_eq(cio_future_new(&g[1], NULL), 0);
    ck_assert_int_eq(cio_future_cancel(g[1]), 1);
    ck_assert_int_eq(cio_task_cancel(g[0]), 1);
    int st[2] = {1, 1};
    ck_assert_int_eq(cio_gather(g, 2, NULL, st, CIO_GATHER_ALL), 0);
    ck_assert_int_eq(st[0], -ECANCELED);
    ck_assert_int_eq(st[1], -ECANCELED);
    release_all(g, 2);
    return 0;
}

START_TEST(comb_gather_all)
{
    RUN_MAIN(main_gather_all, NULL);
}
END_TEST

struct gather_victim {
    child_t kids[2];
    cio_future_t *fs[2];
    int rc;
    bool kids_done_at_return;
};

static int body_gather_victim(void *arg, void **result)
{
    (void)result;
    struct gather_victim *v = arg;
    v->fs[0] = spawn_child(&v->kids[0], 10, 0, NULL);
    v->fs[1] = spawn_child(&v->kids[1], 10, 0, NULL);
    v->rc = cio_gather(v->fs, 2, NULL, NULL, CIO_GATHER_ALL);
    v->kids_done_at_return = cio_future_done(v->fs[0]) && cio_future_done(v->fs[1]);
    return v->rc;
}

static int main_gather_cancelled(void *arg, void **result)
{
    (void)arg;
    (void)result;
    struct gather_victim v;
    memset(&v, 0, sizeof v);
    cio_task_t *t;
    ck_assert_int_eq(cio_spawn(&t, body_gather_victim, &v), 0);
    ck_assert_int_eq(cio_sleep(0.02), 0);
    double w0 = mono_now();
    ck_assert_int_eq(cio_task_cancel(t), 1);
    ck_assert_int_eq(cio_await(t, NULL), -ECANCELED);
    ck_assert_double_lt(mono_now() - w0, HANG_BOUND_S);
    ck_assert_int_eq(v.rc, -ECANCELED);
    ck_assert(v.kids_done_at_return);
    for (int i = 0; i < 2; i++) {
        ck_assert(cio_future_cancelled(v.fs[i]));
        ck_assert_int_eq(v.kids[i].observed, -ECANCELED);
    }
    release_all(v.fs, 2);
    cio_future_release(t);
    return 0;
}

START_TEST(comb_gather_cancel_cancels_children)
{
    RUN_MAIN(main_gather_cancelled, NULL);
}
END_TEST

/*
 * A gather holds a reference on what it waits for: the caller may release
 * its own, and the future stays valid (no other future reuses its memory)
 * until the gather is done with it.
 */
static int gather_one(void *arg, void **result)
{
    (void)result;
    cio_future_t **fs = arg;
    return cio_gather(fs, 1, NULL, NULL, 0);
}

static int main_gather_holds_refs(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_future_t *f, *f2;
    ck_assert_int_eq(cio_future_new(&f, NULL), 0);
    cio_future_t *fs[1] = {f};
    cio_task_t *t;
    ck_assert_int_eq(cio_spawn(&t, gather_one, fs), 0);
    settle();
    cio_future_release(f); /* the gather's reference keeps it */
    ck_assert_int_eq(cio_future_new(&f2, NULL), 0);
    ck_assert_ptr_ne(f2, f);
    ck_assert_int_eq(cio_task_cancel(t), 1);
    ck_assert_int_eq(cio_await(t, NULL), -ECANCELED);
    ck_assert(!cio_future_done(f2)); /* the gather cancelled its own child only */
    cio_future_release(t);
    cio_future_release(f2);
    return 0;
}

START_TEST(comb_gather_holds_refs)
{
    RUN_MAIN(main_gather_holds_refs, NULL);
}
END_TEST

static int main_gather_einval(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_future_t *f;
    ck_assert_int_eq(cio_future_new(&f, NULL), 0);
    cio_future_t *fs[2] = {f, NULL};
    ck_assert_int_eq(cio_gather(NULL, 2, NULL, NULL, 0), -EINVAL);
    ck_assert_int_eq(cio_gather(fs, 2, NULL, NULL, 0), -EINVAL);
    ck_assert_int_eq(cio_wait(NULL, 2, CIO_ALL_COMPLETED, 1), -EINVAL);
    ck_assert_int_eq(cio_wait(fs, 2, CIO_ALL_COMPLETED, 1), -EINVAL);
    ck_assert_int_eq(cio_wait(fs, 1, CIO_ALL_COMPLETED, NAN), -EINVAL);
    cio_as_completed_t it;
    ck_assert_int_eq(cio_as_completed_init(&it, NULL, 2, 1), -EINVAL);
    ck_assert_int_eq(cio_as_completed_init(&it, fs, 2, 1), -EINVAL);
    ck_assert_int_eq(cio_as_completed_init(NULL, fs, 1, 1), -EINVAL);
    ck_assert(!cio_future_done(f));
    ck_assert_int_eq(cio_future_cancel(f), 1);
    cio_future_release(f);
    return 0;
}

START_TEST(comb_einval)
{
    RUN_MAIN(main_gather_einval, NULL);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* wait                                                                       */
/* ------------------------------------------------------------------------ */

static int main_wait_first_completed(void *arg, void **result)
{
    (void)arg;
    (void)result;
    child_t c[3];
    cio_future_t *fs[3];
    fs[0] = spawn_child(&c[0], 0.6, 0, NULL);
    fs[1] = spawn_child(&c[1], 0.01, 0, NULL);
    fs[2] = spawn_child(&c[2], 0.8, 0, NULL);
    ck_assert_int_eq(cio_wait(fs, 3, CIO_FIRST_COMPLETED, INFINITY), 1);
    ck_assert(!cio_future_done(fs[0]));
    ck_assert(cio_future_done(fs[1]));
    ck_assert(!cio_future_done(fs[2]));
    /* Nothing was cancelled: the others finish normally. */
    ck_assert_int_eq(cio_await(fs[0], NULL), 0);
    ck_assert_int_eq(cio_await(fs[2], NULL), 0);
    ck_assert_int_eq(c[0].observed, 0);
    ck_assert_int_eq(c[2].observed, 0);
    /* All already done: returns n at once. */
    ck_assert_int_eq(cio_wait(fs, 3, CIO_FIRST_COMPLETED, INFINITY), 3);
    release_all(fs, 3);
    return 0;
}

START_TEST(comb_wait_first_completed)
{
    RUN_MAIN(main_wait_first_completed, NULL);
}
END_TEST

static int main_wait_first_exception(void *arg, void **result)
{
    (void)arg;
    (void)result;
    child_t c[3];
    cio_future_t *fs[3];
    fs[0] = spawn_child(&c[0], 0.01, 0, NULL);
    fs[1] = spawn_child(&c[1], 0.05, -EIO, NULL);
    fs[2] = spawn_child(&c[2], 1.0, 0, NULL);
    ck_assert_int_eq(cio_wait(fs, 3, CIO_FIRST_EXCEPTION, INFINITY), 2);
    ck_assert(cio_future_done(fs[0]));
    ck_assert(cio_future_done(fs[1]));
    ck_assert(!cio_future_done(fs[2]));
    ck_assert(!cio_task_cancelling(fs[2]));
    ck_assert_int_eq(cio_future_result(fs[1], NULL), -EIO);
    ck_assert_int_eq(cio_task_cancel(fs[2]), 1);
    ck_assert_int_eq(cio_await(fs[2], NULL), -ECANCELED);
    release_all(fs, 3);

    /* Without any failure it waits for all. */
    fs[0] = spawn_child(&c[0], 0.01, 0, NULL);
    fs[1] = spawn_child(&c[1], 0.03, 0, NULL);
    fs[2] = spawn_child(&c[2], 0.02, 0, NULL);
    ck_assert_int_eq(cio_wait(fs, 3, CIO_FIRST_EXCEPTION, INFINITY), 3);
    for (int i = 0; i < 3; i++)
        ck_assert(cio_future_done(fs[i]));
    release_all(fs, 3);
    return 0;
}

START_TEST(comb_wait_first_exception)
{
    RUN_MAIN(main_wait_first_exception, NULL);
}
END_TEST

static int main_wait_all(void *arg, void **result)
{
    (void)arg;
    (void)result;
    child_t c[3];
    cio_future_t *fs[3];
    fs[0] = spawn_child(&c[0], 0.03, 0, NULL);
    fs[1] = spawn_child(&c[1], 0.01, -EIO, NULL);
    fs[2] = spawn_child(&c[2], 0.02, 0, NULL);
    int64_t t0 = loop_ns();
    ck_assert_int_eq(cio_wait(fs, 3, CIO_ALL_COMPLETED, INFINITY), 3);
    ck_assert_int_ge(loop_ns() - t0, 30000000LL);
    for (int i = 0; i < 3; i++)
        ck_assert(cio_future_done(fs[i]));
    release_all(fs, 3);
    return 0;
}

START_TEST(comb_wait_all_completed)
{
    RUN_MAIN(main_wait_all, NULL);
}
END_TEST

static int main_wait_timeout(void *arg, void **result)
{
    (void)arg;
    (void)result;
    child_t c[3];
    cio_future_t *fs[3];
    fs[0] = spawn_child(&c[0], 0.01, 0, NULL);
    fs[1] = spawn_child(&c[1], 0.5, 0, NULL);
    fs[2] = spawn_child(&c[2], 0.5, 0, NULL);
    int64_t t0 = loop_ns();
    ck_assert_int_eq(cio_wait(fs, 3, CIO_ALL_COMPLETED, D_MED), 1);
    ck_assert_int_ge(loop_ns() - t0, NS_MED);
    ck_assert(cio_future_done(fs[0]));
    /* The timeout cancels nothing. */
    for (int i = 1; i < 3; i++) {
        ck_assert(!cio_future_done(fs[i]));
        ck_assert(!cio_task_cancelling(fs[i]));
    }
    /* The caller is not cancelled either. */
    ck_assert_int_eq(cio_sleep(0), 0);
    for (int i = 1; i < 3; i++) {
        ck_assert_int_eq(cio_await(fs[i], NULL), 0);
        ck_assert_int_eq(c[i].observed, 0);
    }
    release_all(fs, 3);

    /* Timeout 0 polls: counts what is done, waits for nothing. */
    child_t z[2];
    cio_future_t *zs[2];
    zs[0] = spawn_child(&z[0], 10, 0, NULL);
    ck_assert_int_eq(cio_future_new(&zs[1], NULL), 0);
    ck_assert_int_eq(cio_future_set_result(zs[1], NULL), 0);
    ck_assert_int_eq(cio_wait(zs, 2, CIO_ALL_COMPLETED, 0), 1);
    ck_assert(!cio_future_done(zs[0]));
    ck_assert_int_eq(cio_task_cancel(zs[0]), 1);
    ck_assert_int_eq(cio_await(zs[0], NULL), -ECANCELED);
    release_all(zs, 2);

    /* FIRST_COMPLETED with a timeout and nothing done: 0. */
    cio_future_t *f;
    ck_assert_int_eq(cio_future_new(&f, NULL), 0);
    ck_assert_int_eq(cio_wait(&f, 1, CIO_FIRST_COMPLETED, 0.01), 0);
    ck_assert(!cio_future_done(f));
    ck_assert_int_eq(cio_future_cancel(f), 1);
    cio_future_release(f);
    return 0;
}

START_TEST(comb_wait_timeout)
{
    RUN_MAIN(main_wait_timeout, NULL);
}
END_TEST

struct wait_victim {
    child_t kids[2];
    cio_future_t *fs[2];
    int rc;
};

static int body_wait_victim(void *arg, void **result)
{
    (void)result;
    struct wait_victim *v = arg;
    v->fs[0] = spawn_child(&v->kids[0], 0.2, 0, NULL);
    v->fs[1] = spawn_child(&v->kids[1], 0.2, 0, NULL);
    v->rc = cio_wait(v->fs, 2, CIO_ALL_COMPLETED, INFINITY);
    return v->rc;
}

static int main_wait_cancelled(void *arg, void **result)
{
    (void)arg;
    (void)result;
    struct wait_victim v;
    memset(&v, 0, sizeof v);
    cio_task_t *t;
    ck_assert_int_eq(cio_spawn(&t, body_wait_victim, &v), 0);
    ck_assert_int_eq(cio_sleep(0.02), 0);
    ck_assert_int_eq(cio_task_cancel(t), 1);
    ck_assert_int_eq(cio_await(t, NULL), -ECANCELED);
    /* The waited-for futures were not cancelled. */
    for (int i = 0; i < 2; i++) {
        ck_assert(!cio_task_cancelling(v.fs[i]));
        ck_assert_int_eq(cio_await(v.fs[i], NULL), 0);
        ck_assert_int_eq(v.kids[i].observed, 0);
    }
    release_all(v.fs, 2);
    cio_future_release(t);
    return 0;
}

START_TEST(comb_wait_caller_cancelled)
{
    RUN_MAIN(main_wait_cancelled, NULL);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* as_completed                                                               */
/* ------------------------------------------------------------------------ */

static int main_as_completed(void *arg, void **result)
{
    (void)arg;
    (void)result;
    child_t c[3];
    cio_future_t *fs[3];
    fs[0] = spawn_child(&c[0], 0.06, 0, &res[0]);
    fs[1] = spawn_child(&c[1], 0.01, 0, &res[1]);
    fs[2] = spawn_child(&c[2], 0.03, -EIO, NULL);
    cio_as_completed_t it;
    ck_assert_int_eq(cio_as_completed_init(&it, fs, 3, INFINITY), 0);
    cio_future_t *out = NULL;
    ck_assert_int_eq(cio_as_completed_next(&it, &out), 1);
    ck_assert_ptr_eq(out, fs[1]);
    ck_assert(cio_future_done(out));
    ck_assert_int_eq(cio_as_completed_next(&it, &out), 1);
    ck_assert_ptr_eq(out, fs[2]);
    ck_assert_int_eq(cio_future_result(out, NULL), -EIO);
    ck_assert_int_eq(cio_as_completed_next(&it, &out), 1);
    ck_assert_ptr_eq(out, fs[0]);
    void *r = NULL;
    ck_assert_int_eq(cio_future_result(out, &r), 0);
    ck_assert_ptr_eq(r, &res[0]);
    ck_assert_int_eq(cio_as_completed_next(&it, &out), 0);
    release_all(fs, 3);
    return 0;
}

START_TEST(comb_as_completed_order)
{
    RUN_MAIN(main_as_completed, NULL);
}
END_TEST

static int main_as_completed_done_first(void *arg, void **result)
{
    (void)arg;
    (void)result;
    child_t c;
    cio_future_t *fs[2];
    fs[0] = spawn_child(&c, 0.01, 0, NULL);
    ck_assert_int_eq(cio_future_new(&fs[1], NULL), 0);
    ck_assert_int_eq(cio_future_set_result(fs[1], NULL), 0);
    cio_as_completed_t it;
    ck_assert_int_eq(cio_as_completed_init(&it, fs, 2, 5), 0);
    cio_future_t *out = NULL;
    ck_assert_int_eq(cio_as_completed_next(&it, &out), 1);
    ck_assert_ptr_eq(out, fs[1]);
    ck_assert_int_eq(cio_as_completed_next(&it, &out), 1);
    ck_assert_ptr_eq(out, fs[0]);
    ck_assert_int_eq(cio_as_completed_next(&it, &out), 0);
    /* No futures at all: done at once. */
    ck_assert_int_eq(cio_as_completed_init(&it, NULL, 0, 5), 0);
    ck_assert_int_eq(cio_as_completed_next(&it, &out), 0);
    /* Early stop with cleanup (ASan checks nothing is held). */
    ck_assert_int_eq(cio_as_completed_init(&it, fs, 2, 5), 0);
    ck_assert_int_eq(cio_as_completed_next(&it, &out), 1);
    cio_as_completed_cleanup(&it);
    release_all(fs, 2);
    return 0;
}

START_TEST(comb_as_completed_already_done)
{
    RUN_MAIN(main_as_completed_done_first, NULL);
}
END_TEST

static int main_as_completed_timeout(void *arg, void **result)
{
    (void)arg;
    (void)result;
    child_t c[2];
    cio_future_t *fs[2];
    fs[0] = spawn_child(&c[0], 0.01, 0, NULL);
    fs[1] = spawn_child(&c[1], 1.0, 0, NULL);
    int64_t t0 = loop_ns();
    cio_as_completed_t it;
    ck_assert_int_eq(cio_as_completed_init(&it, fs, 2, D_MED), 0);
    cio_future_t *out = NULL;
    ck_assert_int_eq(cio_as_completed_next(&it, &out), 1);
    ck_assert_ptr_eq(out, fs[0]);
    double w0 = mono_now();
    ck_assert_int_eq(cio_as_completed_next(&it, &out), -ETIMEDOUT);
    ck_assert_double_lt(mono_now() - w0, HANG_BOUND_S);
    ck_assert_int_ge(loop_ns() - t0, NS_MED);
    /* The caller is not left cancelled. */
    ck_assert_int_eq(cio_sleep(0), 0);
    ck_assert_int_eq(cio_task_cancel(fs[1]), 1);
    ck_assert_int_eq(cio_await(fs[1], NULL), -ECANCELED);
    release_all(fs, 2);
    return 0;
}

START_TEST(comb_as_completed_timeout)
{
    RUN_MAIN(main_as_completed_timeout, NULL);
}
END_TEST

static Suite *comb_suite(void)
{
    Suite *s = suite_create("combinators");
    TCase *tc = add_tcase(s, "gather", TEST_TIMEOUT);
    tcase_add_test(tc, comb_gather_ordered);
    tcase_add_test(tc, comb_gather_first_error);
    tcase_add_test(tc, comb_gather_all);
    tcase_add_test(tc, comb_gather_cancel_cancels_children);
    tcase_add_test(tc, comb_gather_holds_refs);
    tcase_add_test(tc, comb_einval);

    tc = add_tcase(s, "wait", TEST_TIMEOUT);
    tcase_add_test(tc, comb_wait_first_completed);
    tcase_add_test(tc, comb_wait_first_exception);
    tcase_add_test(tc, comb_wait_all_completed);
    tcase_add_test(tc, comb_wait_timeout);
    tcase_add_test(tc, comb_wait_caller_cancelled);

    tc = add_tcase(s, "as_completed", TEST_TIMEOUT);
    tcase_add_test(tc, comb_as_completed_order);
    tcase_add_test(tc, comb_as_completed_already_done);
    tcase_add_test(tc, comb_as_completed_timeout);
    return s;
}

CIO_TEST_MAIN(comb_suite)
