/*
 * Futures: completion (result, error, cancel) and -EALREADY, -EAGAIN while
 * pending, awaiting a future completed by a callback (the bridge between
 * callbacks and tasks), done callbacks, reference counting, shield.
 * Leaks show when the suite runs under AddressSanitizer.
 */
#include "cio_test.h"

static int marker_a, marker_b;

static void cb_stop(void *arg)
{
    cio_loop_stop(arg);
}

static void run_for(cio_loop_t *l, double d)
{
    ck_assert_int_eq(cio_call_later(l, NULL, d, cb_stop, l), 0);
    ck_assert_int_eq(cio_loop_run_forever(l), 0);
}

/* ------------------------------------------------------------------------ */
/* Completion                                                                 */
/* ------------------------------------------------------------------------ */

START_TEST(future_set_result)
{
    cio_loop_t *l = new_loop();
    cio_future_t *f;
    ck_assert_int_eq(cio_future_new(&f, l), 0);
    ck_assert_ptr_nonnull(f);
    ck_assert(!cio_future_is_task(f));
    ck_assert(!cio_future_done(f));
    ck_assert(!cio_future_cancelled(f));
    void *r = &marker_b;
    ck_assert_int_eq(cio_future_result(f, &r), -EAGAIN);
    ck_assert_int_eq(cio_future_result(f, NULL), -EAGAIN);

    ck_assert_int_eq(cio_future_set_result(f, &marker_a), 0);
    ck_assert(cio_future_done(f));
    ck_assert(!cio_future_cancelled(f));
    r = NULL;
    ck_assert_int_eq(cio_future_result(f, &r), 0);
    ck_assert_ptr_eq(r, &marker_a);
    ck_assert_int_eq(cio_future_result(f, NULL), 0);

    ck_assert_int_eq(cio_future_set_result(f, &marker_b), -EALREADY);
    ck_assert_int_eq(cio_future_set_error(f, -EIO), -EALREADY);
    ck_assert_int_eq(cio_future_cancel(f), 0);
    ck_assert(!cio_future_cancelled(f));
    r = NULL;
    ck_assert_int_eq(cio_future_result(f, &r), 0);
    ck_assert_ptr_eq(r, &marker_a); /* unchanged */
    cio_future_release(f);
    close_free(l);
}
END_TEST

START_TEST(future_set_error)
{
    cio_loop_t *l = new_loop();
    cio_future_t *f;
    ck_assert_int_eq(cio_future_new(&f, l), 0);
    ck_assert_ptr_nonnull(f);
    /* Bad codes are refused and leave the future pending. */
    ck_assert_int_eq(cio_future_set_error(f, 0), -EINVAL);
    ck_assert_int_eq(cio_future_set_error(f, 5), -EINVAL);
    ck_assert(!cio_future_done(f));
    ck_assert_int_eq(cio_future_set_error(f, -EPIPE), 0);
    ck_assert(cio_future_done(f));
    ck_assert(!cio_future_cancelled(f));
    ck_assert_int_eq(cio_future_result(f, NULL), -EPIPE);
    ck_assert_int_eq(cio_future_set_error(f, -EIO), -EALREADY);
    ck_assert_int_eq(cio_future_set_result(f, NULL), -EALREADY);
    ck_assert_int_eq(cio_future_result(f, NULL), -EPIPE);
    cio_future_release(f);

    /* -ECANCELED is the same as cancel. */
    ck_assert_int_eq(cio_future_new(&f, l), 0);
    ck_assert_int_eq(cio_future_set_error(f, -ECANCELED), 0);
    ck_assert(cio_future_done(f));
    ck_assert(cio_future_cancelled(f));
    ck_assert_int_eq(cio_future_result(f, NULL), -ECANCELED);
    cio_future_release(f);
    close_free(l);
}
END_TEST

START_TEST(future_cancel)
{
    cio_loop_t *l = new_loop();
    cio_future_t *f;
    ck_assert_int_eq(cio_future_new(&f, l), 0);
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(cio_future_cancel(f), 1);
    ck_assert(cio_future_done(f));
    ck_assert(cio_future_cancelled(f));
    ck_assert_int_eq(cio_future_result(f, NULL), -ECANCELED);
    ck_assert_int_eq(cio_future_cancel(f), 0);
    ck_assert_int_eq(cio_future_set_result(f, &marker_a), -EALREADY);
    ck_assert_int_eq(cio_future_set_error(f, -EIO), -EALREADY);
    ck_assert(cio_future_cancelled(f));
    cio_future_release(f);
    close_free(l);
}
END_TEST

static int body_noop(void *arg, void **result)
{
    (void)arg;
    (void)result;
    return 0;
}

static int main_set_on_task(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_task_t *t;
    ck_assert_int_eq(cio_spawn(&t, body_noop, NULL), 0);
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(cio_future_set_result(t, &marker_a), -EINVAL);
    ck_assert_int_eq(cio_future_set_error(t, -EIO), -EINVAL);
    ck_assert(!cio_future_done(t));
    ck_assert_int_eq(cio_await(t, NULL), 0);
    cio_future_release(t);
    return 0;
}

START_TEST(future_set_on_task_einval)
{
    RUN_MAIN(main_set_on_task, NULL);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* The bridge: a callback completes, a task awaits                           */
/* ------------------------------------------------------------------------ */

static void cb_complete(void *arg)
{
    ck_assert_int_eq(cio_future_set_result(arg, &marker_a), 0);
}

static void cb_fail(void *arg)
{
    ck_assert_int_eq(cio_future_set_error(arg, -ECONNRESET), 0);
}

static int main_await_callback(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_loop_t *l = cio_get_running_loop();
    cio_future_t *f;
    ck_assert_int_eq(cio_future_new(&f, NULL), 0);
    ck_assert_ptr_nonnull(f);
    /* Read the clock before arming: the deadline counts from the arming. */
    int64_t t0 = loop_ns();
    ck_assert_int_eq(cio_call_later(l, NULL, D_SHORT, cb_complete, f), 0);
    void *r = NULL;
    ck_assert_int_eq(cio_await(f, &r), 0);
    ck_assert_int_ge(loop_ns() - t0, NS_SHORT);
    ck_assert_ptr_eq(r, &marker_a);
    /* Awaiting a done future returns at once. */
    r = NULL;
    ck_assert_int_eq(cio_await(f, &r), 0);
    ck_assert_ptr_eq(r, &marker_a);
    cio_future_release(f);

    ck_assert_int_eq(cio_future_new(&f, l), 0);
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(cio_call_soon(l, NULL, cb_fail, f), 0);
    ck_assert_int_eq(cio_await(f, NULL), -ECONNRESET);
    cio_future_release(f);
    return 0;
}

START_TEST(future_await_from_callback)
{
    RUN_MAIN(main_await_callback, NULL);
}
END_TEST

/* Several tasks awaiting one future all wake with its outcome. */
struct multi {
    cio_future_t *f;
    int rc[4];
    void *r[4];
};

struct multi_arg {
    struct multi *m;
    int i;
};

static int body_await_shared(void *arg, void **result)
{
    (void)result;
    struct multi_arg *a = arg;
    a->m->rc[a->i] = cio_await(a->m->f, &a->m->r[a->i]);
    return 0;
}

static int main_many_waiters(void *arg, void **result)
{
    (void)arg;
    (void)result;
    struct multi m;
    memset(&m, 0, sizeof m);
    ck_assert_int_eq(cio_future_new(&m.f, NULL), 0);
    ck_assert_ptr_nonnull(m.f);
    struct multi_arg a[4];
    cio_task_t *t[4];
    for (int i = 0; i < 4; i++) {
        a[i].m = &m;
        a[i].i = i;
        m.rc[i] = 12345;
        ck_assert_int_eq(cio_spawn(&t[i], body_await_shared, &a[i]), 0);
        ck_assert_ptr_nonnull(t[i]);
    }
    ck_assert_int_eq(cio_sleep(0.01), 0);
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(m.rc[i], 12345); /* all still waiting */
    ck_assert_int_eq(cio_future_set_result(m.f, &marker_b), 0);
    for (int i = 0; i < 4; i++) {
        ck_assert_int_eq(cio_await(t[i], NULL), 0);
        ck_assert_int_eq(m.rc[i], 0);
        ck_assert_ptr_eq(m.r[i], &marker_b);
        cio_future_release(t[i]);
    }
    cio_future_release(m.f);
    return 0;
}

START_TEST(future_many_waiters)
{
    RUN_MAIN(main_many_waiters, NULL);
}
END_TEST

/* A future completed from run_until_complete's side: cancelled future. */
static int main_await_cancelled(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_future_t *f;
    ck_assert_int_eq(cio_future_new(&f, NULL), 0);
    ck_assert_int_eq(cio_future_cancel(f), 1);
    ck_assert_int_eq(cio_await(f, NULL), -ECANCELED);
    /* The awaiting task itself is not cancelled. */
    ck_assert_int_eq(cio_sleep(0), 0);
    ck_assert(!cio_task_cancelling(cio_current_task()));
    cio_future_release(f);
    return 0;
}

START_TEST(future_await_cancelled_future)
{
    RUN_MAIN(main_await_cancelled, NULL);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Done callbacks                                                             */
/* ------------------------------------------------------------------------ */

struct cbrec {
    int calls;
    cio_future_t *f;
    int status;
    void *value;
    int order;
};

static int order_counter;

static void done_rec(cio_future_t *f, void *arg)
{
    struct cbrec *r = arg;
    r->calls++;
    r->f = f;
    r->status = cio_future_result(f, &r->value);
    r->order = ++order_counter;
}

START_TEST(future_done_callbacks)
{
    cio_loop_t *l = new_loop();
    cio_future_t *f;
    ck_assert_int_eq(cio_future_new(&f, l), 0);
    ck_assert_ptr_nonnull(f);
    struct cbrec a = {0}, b = {0}, c = {0};
    order_counter = 0;
    ck_assert_int_eq(cio_future_add_done_callback(f, done_rec, &a), 0);
    ck_assert_int_eq(cio_future_add_done_callback(f, done_rec, &b), 0);
    ck_assert_int_eq(cio_future_add_done_callback(f, done_rec, &b), 0);
    ck_assert_int_eq(cio_future_add_done_callback(f, done_rec, &c), 0);
    /* Removes both (done_rec, &b), nothing else. */
    ck_assert_int_eq(cio_future_remove_done_callback(f, done_rec, &b), 2);
    ck_assert_int_eq(cio_future_remove_done_callback(f, done_rec, &b), 0);
    ck_assert_int_eq(cio_future_set_result(f, &marker_a), 0);
    /* Scheduled, not called synchronously. */
    ck_assert_int_eq(a.calls, 0);
    ck_assert_int_eq(c.calls, 0);
    run_for(l, 0.01);
    ck_assert_int_eq(a.calls, 1);
    ck_assert_int_eq(b.calls, 0);
    ck_assert_int_eq(c.calls, 1);
    ck_assert_ptr_eq(a.f, f);
    ck_assert_int_eq(a.status, 0);
    ck_assert_ptr_eq(a.value, &marker_a);

    /* Added after completion: runs on the next iteration. */
    struct cbrec d = {0};
    ck_assert_int_eq(cio_future_add_done_callback(f, done_rec, &d), 0);
    ck_assert_int_eq(d.calls, 0);
    run_for(l, 0.01);
    ck_assert_int_eq(d.calls, 1);
    ck_assert_int_eq(a.calls, 1);

    ck_assert_int_eq(cio_future_add_done_callback(NULL, done_rec, &d), -EINVAL);
    ck_assert_int_eq(cio_future_add_done_callback(f, NULL, &d), -EINVAL);
    cio_future_release(f);
    close_free(l);
}
END_TEST

START_TEST(future_done_callback_on_error_and_cancel)
{
    cio_loop_t *l = new_loop();
    cio_future_t *f1, *f2;
    ck_assert_int_eq(cio_future_new(&f1, l), 0);
    ck_assert_int_eq(cio_future_new(&f2, l), 0);
    struct cbrec a = {0}, b = {0};
    ck_assert_int_eq(cio_future_add_done_callback(f1, done_rec, &a), 0);
    ck_assert_int_eq(cio_future_add_done_callback(f2, done_rec, &b), 0);
    ck_assert_int_eq(cio_future_set_error(f1, -EIO), 0);
    ck_assert_int_eq(cio_future_cancel(f2), 1);
    run_for(l, 0.01);
    ck_assert_int_eq(a.calls, 1);
    ck_assert_int_eq(a.status, -EIO);
    ck_assert_int_eq(b.calls, 1);
    ck_assert_int_eq(b.status, -ECANCELED);
    cio_future_release(f1);
    cio_future_release(f2);
    close_free(l);
}
END_TEST

/* The callback receives a live future even if the last reference was
 * dropped right after completion (run under ASan to see a use after free). */
START_TEST(future_done_callback_outlives_release)
{
    cio_loop_t *l = new_loop();
    cio_future_t *f;
    ck_assert_int_eq(cio_future_new(&f, l), 0);
    struct cbrec a = {0};
    ck_assert_int_eq(cio_future_add_done_callback(f, done_rec, &a), 0);
    ck_assert_int_eq(cio_future_set_result(f, &marker_b), 0);
    cio_future_release(f);
    run_for(l, 0.01);
    ck_assert_int_eq(a.calls, 1);
    ck_assert_int_eq(a.status, 0);
    ck_assert_ptr_eq(a.value, &marker_b);
    close_free(l);
}
END_TEST

/* Pending callbacks of a future discarded by close do not leak or run. */
START_TEST(future_pending_callbacks_discarded_by_close)
{
    cio_loop_t *l = new_loop();
    cio_future_t *f;
    ck_assert_int_eq(cio_future_new(&f, l), 0);
    struct cbrec a = {0};
    ck_assert_int_eq(cio_future_add_done_callback(f, done_rec, &a), 0);
    ck_assert_int_eq(cio_future_set_result(f, NULL), 0);
    cio_future_release(f);
    close_free(l);
    ck_assert_int_eq(a.calls, 0);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Reference counting                                                         */
/* ------------------------------------------------------------------------ */

START_TEST(future_refcount)
{
    cio_loop_t *l = new_loop();
    cio_future_t *f;
    ck_assert_int_eq(cio_future_new(&f, l), 0);
    ck_assert_ptr_nonnull(f);
    ck_assert_ptr_eq(cio_future_ref(f), f);
    ck_assert_ptr_eq(cio_future_ref(f), f);
    cio_future_release(f);
    cio_future_release(f);
    /* One reference left: the future is still usable. */
    ck_assert(!cio_future_done(f));
    ck_assert_int_eq(cio_future_set_result(f, &marker_a), 0);
    void *r = NULL;
    ck_assert_int_eq(cio_future_result(f, &r), 0);
    ck_assert_ptr_eq(r, &marker_a);
    cio_future_release(f);
    cio_future_release(NULL);

    /* Many futures created and released: nothing leaks (ASan). */
    for (int i = 0; i < 10000; i++) {
        cio_future_t *g;
        ck_assert_int_eq(cio_future_new(&g, l), 0);
        ck_assert_ptr_nonnull(g);
        if (i % 3 == 0)
            ck_assert_int_eq(cio_future_set_result(g, NULL), 0);
        else if (i % 3 == 1)
            ck_assert_int_eq(cio_future_set_error(g, -EIO), 0);
        else
            ck_assert_int_eq(cio_future_cancel(g), 1);
        cio_future_release(g);
    }
    close_free(l);
}
END_TEST

/* A reference taken by a task while another releases keeps it alive. */
struct holder {
    cio_future_t *f;
    int rc;
    void *r;
};

static int body_hold(void *arg, void **result)
{
    (void)result;
    struct holder *h = arg;
    cio_future_t *mine = cio_future_ref(h->f);
    h->rc = cio_await(mine, &h->r);
    cio_future_release(mine);
    return 0;
}

static void cb_complete_release(void *arg)
{
    cio_future_t *f = arg;
    ck_assert_int_eq(cio_future_set_result(f, &marker_a), 0);
    cio_future_release(f);
}

static int main_ref_across(void *arg, void **result)
{
    (void)arg;
    (void)result;
    struct holder h = {.rc = 12345};
    ck_assert_int_eq(cio_future_new(&h.f, NULL), 0);
    cio_task_t *t;
    ck_assert_int_eq(cio_spawn(&t, body_hold, &h), 0);
    ck_assert_int_eq(cio_yield(), 0);
    /* The callback completes and drops the creator's reference. */
    ck_assert_int_eq(cio_call_later(cio_get_running_loop(), NULL, 0.01, cb_complete_release, h.f), 0);
    ck_assert_int_eq(cio_await(t, NULL), 0);
    ck_assert_int_eq(h.rc, 0);
    ck_assert_ptr_eq(h.r, &marker_a);
    cio_future_release(t);
    return 0;
}

START_TEST(future_ref_across_tasks)
{
    RUN_MAIN(main_ref_across, NULL);
}
END_TEST

START_TEST(future_new_outside_loop)
{
    cio_future_t *f = NOT_SET;
    ck_assert_int_eq(cio_future_new(&f, NULL), -EPERM);
    ck_assert_ptr_null(f);
    ck_assert_int_eq(cio_future_new(NULL, NULL), -EINVAL);
    /* Out-parameters are checked first, and cleared on every failure. */
    cio_loop_t *l = new_loop();
    ck_assert_int_eq(cio_future_new(NULL, l), -EINVAL);
    f = NOT_SET;
    ck_assert_int_eq(cio_shield(&f, NULL), -EINVAL);
    ck_assert_ptr_null(f);
    cio_future_t *g;
    ck_assert_int_eq(cio_future_new(&g, l), 0);
    ck_assert_int_eq(cio_shield(NULL, g), -EINVAL);
    cio_future_release(g);
    close_free(l);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Shield on plain futures                                                    */
/* ------------------------------------------------------------------------ */

START_TEST(future_shield_plain)
{
    cio_loop_t *l = new_loop();
    cio_future_t *f;
    ck_assert_int_eq(cio_future_new(&f, l), 0);
    cio_future_t *s;
    ck_assert_int_eq(cio_shield(&s, f), 0);
    ck_assert_ptr_nonnull(s);
    ck_assert_ptr_ne(s, f);
    ck_assert(!cio_future_done(s));
    /* Cancelling the shield leaves the inner future alone. */
    ck_assert_int_eq(cio_future_cancel(s), 1);
    ck_assert(cio_future_cancelled(s));
    ck_assert(!cio_future_done(f));
    ck_assert_int_eq(cio_future_set_result(f, &marker_a), 0);
    run_for(l, 0.01);
    ck_assert(cio_future_cancelled(s));
    cio_future_release(s);

    /* The shield follows the inner outcome. */
    cio_future_t *g;
    ck_assert_int_eq(cio_future_new(&g, l), 0);
    cio_future_t *sg;
    ck_assert_int_eq(cio_shield(&sg, g), 0);
    ck_assert_ptr_nonnull(sg);
    ck_assert_int_eq(cio_future_set_error(g, -EIO), 0);
    ck_assert_int_eq(cio_loop_run_until_complete(l, sg, NULL), -EIO);
    cio_future_release(sg);

    /* Shield of a done future is done with the same outcome. */
    cio_future_t *sf;
    ck_assert_int_eq(cio_shield(&sf, f), 0);
    ck_assert_ptr_nonnull(sf);
    void *r = NULL;
    ck_assert_int_eq(cio_loop_run_until_complete(l, sf, &r), 0);
    ck_assert_ptr_eq(r, &marker_a);
    cio_future_release(sf);
    cio_future_release(g);
    cio_future_release(f);
    close_free(l);
}
END_TEST

static Suite *future_suite(void)
{
    Suite *s = suite_create("future");
    TCase *tc = add_tcase(s, "complete", TEST_TIMEOUT);
    tcase_add_test(tc, future_set_result);
    tcase_add_test(tc, future_set_error);
    tcase_add_test(tc, future_cancel);
    tcase_add_test(tc, future_set_on_task_einval);
    tcase_add_test(tc, future_new_outside_loop);

    tc = add_tcase(s, "await", TEST_TIMEOUT);
    tcase_add_test(tc, future_await_from_callback);
    tcase_add_test(tc, future_many_waiters);
    tcase_add_test(tc, future_await_cancelled_future);

    tc = add_tcase(s, "callbacks", TEST_TIMEOUT);
    tcase_add_test(tc, future_done_callbacks);
    tcase_add_test(tc, future_done_callback_on_error_and_cancel);
    tcase_add_test(tc, future_done_callback_outlives_release);
    tcase_add_test(tc, future_pending_callbacks_discarded_by_close);

    tc = add_tcase(s, "refs", TEST_TIMEOUT);
    tcase_add_test(tc, future_refcount);
    tcase_add_test(tc, future_ref_across_tasks);
    tcase_add_test(tc, future_shield_plain);
    return s;
}

CIO_TEST_MAIN(future_suite)
