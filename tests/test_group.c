/*
 * Task groups (asyncio.TaskGroup): all succeed; the first failure cancels
 * the siblings and the parent's code inside the group; every failure is
 * reported; cancellation of the parent from outside cancels the children.
 */
#include "cio_test.h"

static int res[3];

static int main_all_succeed(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_group_t *g;
    ck_assert_int_eq(cio_group_new(&g), 0);
    ck_assert_ptr_nonnull(g);
    child_t c[3];
    cio_task_t *t[3];
    static const char *const names[3] = {"kid-0", "kid-1", "kid-2"};
    for (int i = 0; i < 3; i++) {
        child_init(&c[i], 0.01 * (i + 1), 0, &res[i]);
        ck_assert_int_eq(cio_group_spawn(&t[i], g, names[i], child_body, &c[i]), 0);
        ck_assert_ptr_nonnull(t[i]);
        ck_assert_str_eq(cio_task_get_name(t[i]), names[i]);
    }
    /* The parent's await points work normally inside a healthy group. */
    ck_assert_int_eq(cio_sleep(0.001), 0);
    ck_assert_int_eq(cio_group_wait(g), 0);
    for (int i = 0; i < 3; i++) {
        ck_assert(c[i].finished);
        ck_assert_int_eq(c[i].observed, 0);
        ck_assert(cio_future_done(t[i]));
        void *r = NULL;
        ck_assert_int_eq(cio_future_result(t[i], &r), 0);
        ck_assert_ptr_eq(r, &res[i]);
    }
    ck_assert_uint_eq(cio_group_errors(g, NULL, NULL, 0), 0);
    /* Spawning into a group already waited for is refused. */
    cio_task_t *late = NOT_SET;
    ck_assert_int_eq(cio_group_spawn(&late, g, NULL, child_body, &c[0]), -EINVAL);
    ck_assert_ptr_null(late); /* already waited */
    ck_assert_int_eq(cio_group_spawn(NULL, g, NULL, child_body, &c[0]), -EINVAL);
    cio_group_free(g);

    /* An empty group. */
    ck_assert_int_eq(cio_group_new(&g), 0);
    ck_assert_ptr_nonnull(g);
    ck_assert_int_eq(cio_group_wait(g), 0);
    cio_group_free(g);
    return 0;
}

START_TEST(group_all_succeed)
{
    RUN_MAIN(main_all_succeed, NULL);
}
END_TEST

struct failing {
    child_t bad, sibling, late;
    cio_task_t *bad_t, *late_t;
    int parent_rc, parent_again, wait_rc, after_rc;
    double elapsed;
};

static int body_record_first_await(void *arg, void **result)
{
    (void)result;
    child_t *c = arg;
    c->started = 1;
    c->observed = cio_sleep(0);
    c->finished = 1;
    return c->observed;
}

static int main_first_failure(void *arg, void **result)
{
    (void)result;
    struct failing *f = arg;
    cio_group_t *g;
    ck_assert_int_eq(cio_group_new(&g), 0);
    ck_assert_ptr_nonnull(g);
    child_init(&f->bad, D_SHORT, -EIO, NULL);
    child_init(&f->sibling, 10, 0, NULL);
    ck_assert_int_eq(cio_group_spawn(&f->bad_t, g, "bad", child_body, &f->bad), 0);
    ck_assert_int_eq(cio_group_spawn(NULL, g, "sibling", child_body, &f->sibling), 0);
    double w0 = mono_now();
    /* The parent's own await inside the group is cancelled by the failure. */
    f->parent_rc = cio_sleep(10);
    f->parent_again = cio_sleep(0);
    /* A child spawned into the failing group starts cancelled. */
    child_init(&f->late, 0, 0, NULL);
    ck_assert_int_eq(cio_group_spawn(&f->late_t, g, "late", body_record_first_await, &f->late), 0);
    ck_assert_ptr_nonnull(f->late_t);
    f->wait_rc = cio_group_wait(g);
    f->elapsed = mono_now() - w0;
    /* Leaving the group leaves its cancelled scope. */
    f->after_rc = cio_sleep(0);
    ck_assert(!cio_task_cancelling(cio_current_task()));

    int codes[4] = {0};
    cio_task_t *tasks[4] = {0};
    ck_assert_uint_eq(cio_group_errors(g, codes, tasks, 4), 1);
    ck_assert_int_eq(codes[0], -EIO);
    ck_assert_ptr_eq(tasks[0], f->bad_t);
    cio_group_free(g);
    return 0;
}

START_TEST(group_first_failure_cancels_siblings)
{
    struct failing f;
    memset(&f, 0, sizeof f);
    RUN_MAIN(main_first_failure, &f);
    ck_assert_int_eq(f.parent_rc, -ECANCELED);
    ck_assert_int_eq(f.parent_again, -ECANCELED);
    ck_assert_int_eq(f.wait_rc, -EIO);
    ck_assert_int_eq(f.after_rc, 0);
    ck_assert(f.sibling.finished);
    ck_assert_int_eq(f.sibling.observed, -ECANCELED);
    ck_assert_double_lt(f.elapsed, HANG_BOUND_S);
    ck_assert(f.late.finished);
    ck_assert_int_eq(f.late.observed, -ECANCELED);
}
END_TEST

/* Every failure is listed in order; cancellations caused by the group are
 * not failures. */
static int body_fail_on_cancel(void *arg, void **result)
{
    (void)result;
    child_t *c = arg;
    c->observed = cio_sleep(10);
    c->finished = 1;
    /* Cleanup failed with its own error. */
    return c->observed == -ECANCELED ? -EPIPE : 0;
}

static int main_errors_list(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_group_t *g;
    ck_assert_int_eq(cio_group_new(&g), 0);
    child_t a, b, c;
    child_init(&a, 0.01, -EIO, NULL);
    child_init(&b, 10, 0, NULL);
    child_init(&c, 10, 0, NULL);
    cio_task_t *ta;
    ck_assert_int_eq(cio_group_spawn(&ta, g, "a", child_body, &a), 0);
    cio_task_t *tb;
    ck_assert_int_eq(cio_group_spawn(&tb, g, "b", body_fail_on_cancel, &b), 0);
    cio_task_t *tc;
    ck_assert_int_eq(cio_group_spawn(&tc, g, "c", child_body, &c), 0);
    ck_assert_ptr_nonnull(ta);
    ck_assert_ptr_nonnull(tb);
    ck_assert_ptr_nonnull(tc);
    ck_assert_int_eq(cio_group_wait(g), -EIO);
    ck_assert_int_eq(b.observed, -ECANCELED);
    ck_assert_int_eq(c.observed, -ECANCELED);
    ck_assert_int_eq(cio_future_result(tc, NULL), -ECANCELED);
    ck_assert_int_eq(cio_future_result(tb, NULL), -EPIPE);
    int codes[4] = {0};
    cio_task_t *tasks[4] = {0};
    ck_assert_uint_eq(cio_group_errors(g, codes, tasks, 4), 2);
    ck_assert_int_eq(codes[0], -EIO);
    ck_assert_ptr_eq(tasks[0], ta);
    ck_assert_int_eq(codes[1], -EPIPE);
    ck_assert_ptr_eq(tasks[1], tb);
    /* cap smaller than the count. */
    int one[1] = {0};
    cio_task_t *onet[1] = {NULL};
    ck_assert_uint_eq(cio_group_errors(g, one, onet, 1), 2);
    ck_assert_int_eq(one[0], -EIO);
    ck_assert_ptr_eq(onet[0], ta);
    ck_assert_uint_eq(cio_group_errors(g, NULL, NULL, 0), 2);
    cio_group_free(g);
    return 0;
}

START_TEST(group_errors_lists_every_failure)
{
    RUN_MAIN(main_errors_list, NULL);
}
END_TEST

/* The parent is cancelled from outside while in cio_group_wait. */
struct outside {
    child_t kids[2];
    int wait_rc;
    size_t nerr;
    bool kids_finished_at_return;
    int entered;
};

static int body_parent_waiting(void *arg, void **result)
{
    (void)result;
    struct outside *o = arg;
    cio_group_t *g;
    ck_assert_int_eq(cio_group_new(&g), 0);
    ck_assert_ptr_nonnull(g);
    for (int i = 0; i < 2; i++) {
        child_init(&o->kids[i], 10, 0, NULL);
        ck_assert_int_eq(cio_group_spawn(NULL, g, "kid", child_body, &o->kids[i]), 0);
    }
    o->entered = 1;
    o->wait_rc = cio_group_wait(g);
    o->kids_finished_at_return = o->kids[0].finished && o->kids[1].finished;
    o->nerr = cio_group_errors(g, NULL, NULL, 0);
    cio_group_free(g);
    return o->wait_rc;
}

/* ... or while its own code inside the group awaits. */
static int body_parent_sleeping(void *arg, void **result)
{
    (void)result;
    struct outside *o = arg;
    cio_group_t *g;
    ck_assert_int_eq(cio_group_new(&g), 0);
    ck_assert_ptr_nonnull(g);
    for (int i = 0; i < 2; i++) {
        child_init(&o->kids[i], 10, 0, NULL);
        ck_assert_int_eq(cio_group_spawn(NULL, g, "kid", child_body, &o->kids[i]), 0);
    }
    o->entered = 1;
    int rc = cio_sleep(10);
    ck_assert_int_eq(rc, -ECANCELED);
    o->wait_rc = cio_group_wait(g);
    o->kids_finished_at_return = o->kids[0].finished && o->kids[1].finished;
    o->nerr = cio_group_errors(g, NULL, NULL, 0);
    cio_group_free(g);
    return o->wait_rc;
}

static int main_outside_cancel(void *arg, void **result)
{
    (void)result;
    int variant = *(int *)arg;
    struct outside o;
    memset(&o, 0, sizeof o);
    cio_task_t *t;
    ck_assert_int_eq(cio_spawn(&t, variant ? body_parent_sleeping : body_parent_waiting, &o), 0);
    ck_assert_int_eq(cio_sleep(0.02), 0);
    ck_assert(o.entered);
    double w0 = mono_now();
    ck_assert_int_eq(cio_task_cancel(t), 1);
    ck_assert_int_eq(cio_await(t, NULL), -ECANCELED);
    ck_assert_double_lt(mono_now() - w0, HANG_BOUND_S);
    ck_assert_int_eq(o.wait_rc, -ECANCELED);
    ck_assert(o.kids_finished_at_return);
    ck_assert_int_eq(o.kids[0].observed, -ECANCELED);
    ck_assert_int_eq(o.kids[1].observed, -ECANCELED);
    ck_assert_uint_eq(o.nerr, 0);
    cio_future_release(t);
    return 0;
}

START_TEST(group_parent_cancelled_from_outside)
{
    int variant = _i;
    RUN_MAIN(main_outside_cancel, &variant);
}
END_TEST

/* A deadline around the group: -ETIMEDOUT, children finished. */
static int main_group_deadline(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_scope_t s;
    ck_assert_int_eq(cio_scope_enter(&s, D_SHORT, 0), 0);
    cio_group_t *g;
    ck_assert_int_eq(cio_group_new(&g), 0);
    child_t c[2];
    for (int i = 0; i < 2; i++) {
        child_init(&c[i], 10, 0, NULL);
        ck_assert_int_eq(cio_group_spawn(NULL, g, "kid", child_body, &c[i]), 0);
    }
    double w0 = mono_now();
    ck_assert_int_eq(cio_group_wait(g), -ETIMEDOUT);
    ck_assert_double_lt(mono_now() - w0, HANG_BOUND_S);
    ck_assert(c[0].finished);
    ck_assert(c[1].finished);
    ck_assert_uint_eq(cio_group_errors(g, NULL, NULL, 0), 0);
    cio_group_free(g);
    ck_assert_int_eq(cio_scope_exit(&s), -ETIMEDOUT);
    return 0;
}

START_TEST(group_under_deadline)
{
    RUN_MAIN(main_group_deadline, NULL);
}
END_TEST

/* Nested group: the inner group's failure propagates through the outer. */
static int body_inner_group(void *arg, void **result)
{
    (void)result;
    child_t *c = arg;
    cio_group_t *g;
    ck_assert_int_eq(cio_group_new(&g), 0);
    ck_assert_int_eq(cio_group_spawn(NULL, g, "inner-bad", child_body, c), 0);
    int rc = cio_group_wait(g);
    cio_group_free(g);
    return rc;
}

static int main_nested_groups(void *arg, void **result)
{
    (void)arg;
    (void)result;
    child_t bad, sib;
    child_init(&bad, 0.01, -ENOENT, NULL);
    child_init(&sib, 10, 0, NULL);
    cio_group_t *g;
    ck_assert_int_eq(cio_group_new(&g), 0);
    ck_assert_int_eq(cio_group_spawn(NULL, g, "inner", body_inner_group, &bad), 0);
    ck_assert_int_eq(cio_group_spawn(NULL, g, "sib", child_body, &sib), 0);
    ck_assert_int_eq(cio_group_wait(g), -ENOENT);
    ck_assert_int_eq(sib.observed, -ECANCELED);
    cio_group_free(g);
    return 0;
}

START_TEST(group_nested)
{
    RUN_MAIN(main_nested_groups, NULL);
}
END_TEST

START_TEST(group_new_outside_task)
{
    cio_group_t *g = NOT_SET;
    ck_assert_int_eq(cio_group_new(&g), -EPERM);
    ck_assert_ptr_null(g);
    ck_assert_int_eq(cio_group_new(NULL), -EINVAL);
}
END_TEST

static Suite *group_suite(void)
{
    Suite *s = suite_create("group");
    TCase *tc = add_tcase(s, "group", TEST_TIMEOUT);
    tcase_add_test(tc, group_all_succeed);
    tcase_add_test(tc, group_first_failure_cancels_siblings);
    tcase_add_test(tc, group_errors_lists_every_failure);
    tcase_add_loop_test(tc, group_parent_cancelled_from_outside, 0, 2);
    tcase_add_test(tc, group_under_deadline);
    tcase_add_test(tc, group_nested);
    tcase_add_test(tc, group_new_outside_task);
    return s;
}

CIO_TEST_MAIN(group_suite)
