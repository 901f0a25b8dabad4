/*
 * Cancel scopes: deadlines (asyncio.timeout), nesting, reschedule, scope
 * cancellation, shielded scopes, cio_wait_for, and cancellation delivered at
 * every kind of await point (by task cancel, scope cancel and deadline).
 */
#include "cio_test.h"

#include <fcntl.h>
#include <stdatomic.h>
#include <unistd.h>

static int marker_a;

static void nap(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* ------------------------------------------------------------------------ */
/* Deadlines                                                                  */
/* ------------------------------------------------------------------------ */

static int main_timeout_basic(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_scope_t s;
    int64_t t0 = loop_ns();
    ck_assert_int_eq(cio_scope_enter(&s, D_MED, 0), 0);
    ck_assert_int_ge(cio_scope_deadline_ns(&s), t0 + NS_MED);
    ck_assert(!cio_scope_expired(&s));
    double w0 = mono_now();
    ck_assert_int_eq(cio_sleep(10), -ETIMEDOUT);
    ck_assert_double_lt(mono_now() - w0, HANG_BOUND_S);
    ck_assert_int_ge(loop_ns(), cio_scope_deadline_ns(&s));
    ck_assert_int_ge(loop_ns() - t0, NS_MED);
    ck_assert(cio_scope_expired(&s));
    /* Level-triggered inside the expired scope. */
    ck_assert_int_eq(cio_sleep(10), -ETIMEDOUT);
    ck_assert_int_eq(cio_yield(), -ETIMEDOUT);
    ck_assert_int_eq(cio_scope_exit(&s), -ETIMEDOUT);
    /* Outside it, everything works again; the task was never cancelled. */
    ck_assert(!cio_task_cancelling(cio_current_task()));
    ck_assert_int_eq(cio_sleep(0), 0);
    ck_assert_int_eq(cio_sleep(0.001), 0);

    /* A deadline that does not expire. */
    ck_assert_int_eq(cio_scope_enter(&s, 10, 0), 0);
    ck_assert_int_eq(cio_sleep(0.01), 0);
    ck_assert(!cio_scope_expired(&s));
    ck_assert_int_eq(cio_scope_exit(&s), 0);

    /* No deadline. */
    ck_assert_int_eq(cio_scope_enter(&s, INFINITY, 0), 0);
    ck_assert_int_eq(cio_scope_deadline_ns(&s), INT64_MAX);
    ck_assert_int_eq(cio_sleep(0.01), 0);
    ck_assert_int_eq(cio_scope_exit(&s), 0);

    /* A zero or negative timeout expires at the first await point. */
    ck_assert_int_eq(cio_scope_enter(&s, 0, 0), 0);
    ck_assert_int_eq(cio_sleep(10), -ETIMEDOUT);
    ck_assert_int_eq(cio_scope_exit(&s), -ETIMEDOUT);
    ck_assert_int_eq(cio_scope_enter(&s, -3, 0), 0);
    ck_assert_int_eq(cio_sleep(10), -ETIMEDOUT);
    ck_assert_int_eq(cio_scope_exit(&s), -ETIMEDOUT);

    ck_assert_int_eq(cio_scope_enter(&s, NAN, 0), -EINVAL);

    /* Huge timeouts are clamped, never overflowed into the past. */
    ck_assert_int_eq(cio_scope_enter(&s, 1e300, 0), 0);
    ck_assert_int_gt(cio_scope_deadline_ns(&s), loop_ns() + 1000000000LL * 1000000);
    ck_assert_int_eq(cio_sleep(0.001), 0);
    ck_assert_int_eq(cio_scope_exit(&s), 0);
    return 0;
}

/* cio_check_cancel: what an await point would return now, without
 * suspending; shields hide an outer cancellation as they do for waits. */
static int main_check_cancel(void *arg, void **result)
{
    (void)arg, (void)result;
    ck_assert_int_eq(cio_check_cancel(), 0);
    cio_scope_t outer, shield, expired;
    ck_assert_int_eq(cio_scope_enter(&outer, INFINITY, 0), 0);
    cio_scope_cancel(&outer);
    ck_assert_int_eq(cio_check_cancel(), -ECANCELED);
    ck_assert_int_eq(cio_scope_enter(&shield, INFINITY, CIO_SCOPE_SHIELD), 0);
    ck_assert_int_eq(cio_check_cancel(), 0);
    /* A deadline already passed, with no timer fired yet. */
    ck_assert_int_eq(cio_scope_enter(&expired, 0.0, 0), 0);
    ck_assert_int_eq(cio_check_cancel(), -ETIMEDOUT);
    ck_assert_int_eq(cio_scope_exit(&expired), -ETIMEDOUT);
    ck_assert_int_eq(cio_scope_exit(&shield), 0);
    /* Checking consumes nothing: the wait still fails, and so does the
     * next check. */
    ck_assert_int_eq(cio_check_cancel(), -ECANCELED);
    ck_assert_int_eq(cio_sleep(0), -ECANCELED);
    ck_assert_int_eq(cio_check_cancel(), -ECANCELED);
    ck_assert_int_eq(cio_scope_exit(&outer), -ECANCELED);
    ck_assert_int_eq(cio_check_cancel(), 0);
    cio_task_cancel(cio_current_task());
    ck_assert_int_eq(cio_check_cancel(), -ECANCELED);
    return 0;
}

START_TEST(scope_check_cancel)
{
    ck_assert_int_eq(cio_check_cancel(), -EPERM);
    /* The main task ignores its cancellation and returns 0: its status. */
    RUN_MAIN(main_check_cancel, NULL);
}
END_TEST

START_TEST(scope_timeout_basic)
{
    RUN_MAIN(main_timeout_basic, NULL);
}
END_TEST

static int main_timeout_at(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_scope_t s;
    int64_t dl = loop_ns() + NS_SHORT;
    ck_assert_int_eq(cio_scope_enter_at_ns(&s, dl, 0), 0);
    ck_assert_int_eq(cio_scope_deadline_ns(&s), dl);
    ck_assert_int_eq(cio_sleep(10), -ETIMEDOUT);
    ck_assert_int_ge(loop_ns(), dl);
    ck_assert_int_eq(cio_scope_exit(&s), -ETIMEDOUT);
    /* In the past. */
    ck_assert_int_eq(cio_scope_enter_at_ns(&s, loop_ns() - 1000000000LL, 0), 0);
    ck_assert_int_eq(cio_yield(), -ETIMEDOUT);
    ck_assert_int_eq(cio_scope_exit(&s), -ETIMEDOUT);
    /* INT64_MAX = none. */
    ck_assert_int_eq(cio_scope_enter_at_ns(&s, INT64_MAX, 0), 0);
    ck_assert_int_eq(cio_sleep(0.01), 0);
    ck_assert_int_eq(cio_scope_exit(&s), 0);
    return 0;
}

START_TEST(scope_timeout_at_ns)
{
    RUN_MAIN(main_timeout_at, NULL);
}
END_TEST

/* A sleep shorter than the scope is not cut, and sleep_until in a scope. */
static int main_timeout_sleep_until(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_scope_t s;
    ck_assert_int_eq(cio_scope_enter(&s, D_SHORT, 0), 0);
    ck_assert_int_eq(cio_sleep_until_ns(loop_ns() + 10LL * 1000000000LL), -ETIMEDOUT);
    ck_assert_int_eq(cio_scope_exit(&s), -ETIMEDOUT);
    return 0;
}

START_TEST(scope_timeout_sleep_until)
{
    RUN_MAIN(main_timeout_sleep_until, NULL);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Nesting                                                                    */
/* ------------------------------------------------------------------------ */

static int main_nested_outer_wins(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_scope_t outer, inner;
    int64_t t0 = loop_ns();
    ck_assert_int_eq(cio_scope_enter(&outer, D_MED, 0), 0);
    ck_assert_int_eq(cio_scope_enter(&inner, 10, 0), 0);
    double w0 = mono_now();
    ck_assert_int_eq(cio_sleep(10), -ETIMEDOUT);
    ck_assert_double_lt(mono_now() - w0, HANG_BOUND_S);
    ck_assert_int_ge(loop_ns() - t0, NS_MED);
    ck_assert(cio_scope_expired(&outer));
    ck_assert(!cio_scope_expired(&inner));
    /* The inner scope neither expired nor was cancelled itself. */
    ck_assert_int_eq(cio_scope_exit(&inner), 0);
    /* Still inside the expired outer scope. */
    ck_assert_int_eq(cio_sleep(0), -ETIMEDOUT);
    ck_assert_int_eq(cio_scope_exit(&outer), -ETIMEDOUT);
    ck_assert_int_eq(cio_sleep(0), 0);
    return 0;
}

START_TEST(scope_nested_outer_wins)
{
    RUN_MAIN(main_nested_outer_wins, NULL);
}
END_TEST

static int main_nested_inner_shorter(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_scope_t outer, inner;
    ck_assert_int_eq(cio_scope_enter(&outer, 10, 0), 0);
    int64_t t0 = loop_ns();
    ck_assert_int_eq(cio_scope_enter(&inner, D_SHORT, 0), 0);
    ck_assert_int_eq(cio_sleep(10), -ETIMEDOUT);
    ck_assert_int_ge(loop_ns() - t0, NS_SHORT);
    ck_assert(cio_scope_expired(&inner));
    ck_assert(!cio_scope_expired(&outer));
    ck_assert_int_eq(cio_scope_exit(&inner), -ETIMEDOUT);
    /* The outer scope is fine. */
    ck_assert_int_eq(cio_sleep(0.01), 0);
    ck_assert_int_eq(cio_scope_exit(&outer), 0);
    return 0;
}

START_TEST(scope_nested_inner_shorter)
{
    RUN_MAIN(main_nested_inner_shorter, NULL);
}
END_TEST

static int main_exit_order(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_scope_t a, b, c;
    ck_assert_int_eq(cio_scope_enter(&a, INFINITY, 0), 0);
    ck_assert_int_eq(cio_scope_enter(&b, D_SHORT, 0), 0);
    /* Not the innermost: refused, but a is removed with b inside it. */
    ck_assert_int_eq(cio_scope_exit(&a), -EINVAL);
    /* b's deadline no longer applies. */
    ck_assert_int_eq(cio_sleep(D_MED), 0);
    ck_assert_int_eq(cio_scope_enter(&c, INFINITY, 0), 0);
    ck_assert_int_eq(cio_scope_exit(&c), 0);
    return 0;
}

START_TEST(scope_exit_wrong_order)
{
    RUN_MAIN(main_exit_order, NULL);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Reschedule                                                                  */
/* ------------------------------------------------------------------------ */

struct resched {
    cio_scope_t s;
    double first, sleep;
    int entered;
    int rc, rc_exit;
    bool expired;
    int64_t t0, t1;
    int64_t deadline_after;
};

static int body_resched(void *arg, void **result)
{
    (void)result;
    struct resched *r = arg;
    ck_assert_int_eq(cio_scope_enter(&r->s, r->first, 0), 0);
    r->entered = 1;
    r->t0 = loop_ns();
    r->rc = cio_sleep(r->sleep);
    r->t1 = loop_ns();
    r->expired = cio_scope_expired(&r->s);
    r->deadline_after = cio_scope_deadline_ns(&r->s);
    r->rc_exit = cio_scope_exit(&r->s);
    return 0;
}

enum { R_EXTEND, R_SHORTEN, R_INFINITY };

static int main_resched(void *arg, void **result)
{
    (void)result;
    int mode = *(int *)arg;
    struct resched r;
    memset(&r, 0, sizeof r);
    r.first = mode == R_SHORTEN ? 10 : D_MED;
    r.sleep = mode == R_SHORTEN ? 10 : 0.25;
    cio_task_t *t;
    ck_assert_int_eq(cio_spawn(&t, body_resched, &r), 0);
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(cio_sleep(0.015625), 0);
    ck_assert(r.entered);
    int64_t tr = loop_ns();
    double w0 = mono_now();
    switch (mode) {
    case R_EXTEND:
        ck_assert_int_eq(cio_scope_reschedule(&r.s, 10), 0);
        ck_assert_int_ge(cio_scope_deadline_ns(&r.s), tr + 10LL * 1000000000LL);
        break;
    case R_SHORTEN:
        ck_assert_int_eq(cio_scope_reschedule(&r.s, D_SHORT), 0);
        ck_assert_int_ge(cio_scope_deadline_ns(&r.s), tr + NS_SHORT);
        break;
    default:
        ck_assert_int_eq(cio_scope_reschedule(&r.s, INFINITY), 0);
        ck_assert_int_eq(cio_scope_deadline_ns(&r.s), INT64_MAX);
        break;
    }
    ck_assert_int_eq(cio_await(t, NULL), 0);
    ck_assert_double_lt(mono_now() - w0, HANG_BOUND_S);
    if (mode == R_SHORTEN) {
        ck_assert_int_eq(r.rc, -ETIMEDOUT);
        ck_assert_int_ge(r.t1, tr + NS_SHORT);
        ck_assert(r.expired);
        ck_assert_int_eq(r.rc_exit, -ETIMEDOUT);
    } else {
        ck_assert_int_eq(r.rc, 0);
        ck_assert_int_ge(r.t1 - r.t0, 250000000LL);
        ck_assert(!r.expired);
        ck_assert_int_eq(r.rc_exit, 0);
        if (mode == R_INFINITY)
            ck_assert_int_eq(r.deadline_after, INT64_MAX);
    }
    cio_future_release(t);
    return 0;
}

START_TEST(scope_reschedule)
{
    int mode = _i;
    RUN_MAIN(main_resched, &mode);
}
END_TEST

static int main_resched_self(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_scope_t s;
    ck_assert_int_eq(cio_scope_enter(&s, INFINITY, 0), 0);
    int64_t dl = loop_ns() + NS_SHORT;
    ck_assert_int_eq(cio_scope_reschedule_at_ns(&s, dl), 0);
    ck_assert_int_eq(cio_scope_deadline_ns(&s), dl);
    ck_assert_int_eq(cio_scope_reschedule(&s, NAN), -EINVAL);
    ck_assert_int_eq(cio_scope_deadline_ns(&s), dl);
    ck_assert_int_eq(cio_sleep(10), -ETIMEDOUT);
    ck_assert_int_ge(loop_ns(), dl);
    ck_assert_int_eq(cio_scope_exit(&s), -ETIMEDOUT);
    return 0;
}

START_TEST(scope_reschedule_self)
{
    RUN_MAIN(main_resched_self, NULL);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* cio_scope_cancel                                                           */
/* ------------------------------------------------------------------------ */

struct scancel {
    cio_scope_t s;
    int entered;
    int rc, rc_again, rc_exit, rc_after;
};

static int body_scancel(void *arg, void **result)
{
    (void)result;
    struct scancel *c = arg;
    ck_assert_int_eq(cio_scope_enter(&c->s, INFINITY, 0), 0);
    c->entered = 1;
    c->rc = cio_sleep(10);
    c->rc_again = cio_sleep(10);
    c->rc_exit = cio_scope_exit(&c->s);
    c->rc_after = cio_sleep(0.001);
    return 0;
}

static int main_scope_cancel_other(void *arg, void **result)
{
    (void)arg;
    (void)result;
    struct scancel c;
    memset(&c, 0, sizeof c);
    cio_task_t *t;
    ck_assert_int_eq(cio_spawn(&t, body_scancel, &c), 0);
    ck_assert_int_eq(cio_sleep(0.01), 0);
    ck_assert(c.entered);
    double w0 = mono_now();
    cio_scope_cancel(&c.s);
    ck_assert_int_eq(cio_await(t, NULL), 0);
    ck_assert_double_lt(mono_now() - w0, HANG_BOUND_S);
    ck_assert_int_eq(c.rc, -ECANCELED);
    ck_assert_int_eq(c.rc_again, -ECANCELED);
    ck_assert_int_eq(c.rc_exit, -ECANCELED);
    ck_assert_int_eq(c.rc_after, 0);
    /* Only the scope was cancelled, not the task. */
    ck_assert(!cio_future_cancelled(t));
    ck_assert(!cio_task_cancelling(t));
    cio_future_release(t);
    return 0;
}

START_TEST(scope_cancel_from_other_task)
{
    RUN_MAIN(main_scope_cancel_other, NULL);
}
END_TEST

static int main_scope_cancel_self(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_scope_t s;
    ck_assert_int_eq(cio_scope_enter(&s, INFINITY, 0), 0);
    cio_scope_cancel(&s);
    ck_assert_int_eq(cio_sleep(0), -ECANCELED);
    ck_assert_int_eq(cio_sleep(10), -ECANCELED);
    ck_assert(!cio_scope_expired(&s));
    ck_assert_int_eq(cio_scope_exit(&s), -ECANCELED);
    ck_assert_int_eq(cio_sleep(0), 0);
    return 0;
}

START_TEST(scope_cancel_self)
{
    RUN_MAIN(main_scope_cancel_self, NULL);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Shielded scopes                                                            */
/* ------------------------------------------------------------------------ */

struct shield_rec {
    int rc_first, rc_in_shield, rc_yield_in_shield, rc_shield_exit, rc_after;
    int rc_deadline, rc_deadline_exit;
    int64_t in_shield_ns;
    int finished;
};

static int body_shield_cleanup(void *arg, void **result)
{
    (void)result;
    struct shield_rec *r = arg;
    r->rc_first = cio_sleep(10);
    cio_scope_t sh;
    ck_assert_int_eq(cio_scope_enter(&sh, INFINITY, CIO_SCOPE_SHIELD), 0);
    int64_t t0 = loop_ns();
    r->rc_in_shield = cio_sleep(D_SHORT);
    r->in_shield_ns = loop_ns() - t0;
    r->rc_yield_in_shield = cio_yield();
    r->rc_shield_exit = cio_scope_exit(&sh);
    /* A shielded scope with its own deadline still times out. */
    ck_assert_int_eq(cio_scope_enter(&sh, D_SHORT, CIO_SCOPE_SHIELD), 0);
    r->rc_deadline = cio_sleep(10);
    r->rc_deadline_exit = cio_scope_exit(&sh);
    r->rc_after = cio_sleep(10);
    r->finished = 1;
    return r->rc_after;
}

static int main_shield_cleanup(void *arg, void **result)
{
    (void)arg;
    (void)result;
    struct shield_rec r;
    memset(&r, 0, sizeof r);
    cio_task_t *t;
    ck_assert_int_eq(cio_spawn(&t, body_shield_cleanup, &r), 0);
    ck_assert_int_eq(cio_sleep(0.01), 0);
    ck_assert_int_eq(cio_task_cancel(t), 1);
    double w0 = mono_now();
    ck_assert_int_eq(cio_await(t, NULL), -ECANCELED);
    ck_assert_double_lt(mono_now() - w0, HANG_BOUND_S);
    ck_assert(r.finished);
    ck_assert_int_eq(r.rc_first, -ECANCELED);
    ck_assert_int_eq(r.rc_in_shield, 0);
    ck_assert_int_ge(r.in_shield_ns, NS_SHORT);
    ck_assert_int_eq(r.rc_yield_in_shield, 0);
    ck_assert_int_eq(r.rc_shield_exit, 0);
    ck_assert_int_eq(r.rc_deadline, -ETIMEDOUT);
    ck_assert_int_eq(r.rc_deadline_exit, -ETIMEDOUT);
    ck_assert_int_eq(r.rc_after, -ECANCELED);
    cio_future_release(t);
    return 0;
}

START_TEST(scope_shield_cleanup_after_cancel)
{
    RUN_MAIN(main_shield_cleanup, NULL);
}
END_TEST

/* Cancellation arriving while inside the shield is held back until it is
 * left. */
struct shield_late {
    int entered;
    int rc_in, rc_exit, rc_after;
    int64_t in_ns;
};

static int body_shield_late(void *arg, void **result)
{
    (void)result;
    struct shield_late *r = arg;
    cio_scope_t sh;
    ck_assert_int_eq(cio_scope_enter(&sh, INFINITY, CIO_SCOPE_SHIELD), 0);
    r->entered = 1;
    int64_t t0 = loop_ns();
    r->rc_in = cio_sleep(D_MED);
    r->in_ns = loop_ns() - t0;
    r->rc_exit = cio_scope_exit(&sh);
    r->rc_after = cio_sleep(10);
    return r->rc_after;
}

static int main_shield_late(void *arg, void **result)
{
    (void)arg;
    (void)result;
    struct shield_late r;
    memset(&r, 0, sizeof r);
    cio_task_t *t;
    ck_assert_int_eq(cio_spawn(&t, body_shield_late, &r), 0);
    ck_assert_int_eq(cio_sleep(0.01), 0);
    ck_assert(r.entered);
    ck_assert_int_eq(cio_task_cancel(t), 1);
    ck_assert_int_eq(cio_await(t, NULL), -ECANCELED);
    ck_assert_int_eq(r.rc_in, 0);
    ck_assert_int_ge(r.in_ns, NS_MED);
    ck_assert_int_eq(r.rc_exit, 0);
    ck_assert_int_eq(r.rc_after, -ECANCELED);
    cio_future_release(t);
    return 0;
}

START_TEST(scope_shield_cancel_inside)
{
    RUN_MAIN(main_shield_late, NULL);
}
END_TEST

/* A shield inside a deadline scope protects from that deadline too. */
static int main_shield_vs_outer_deadline(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_scope_t outer, sh;
    ck_assert_int_eq(cio_scope_enter(&outer, D_SHORT, 0), 0);
    ck_assert_int_eq(cio_scope_enter(&sh, INFINITY, CIO_SCOPE_SHIELD), 0);
    int64_t t0 = loop_ns();
    ck_assert_int_eq(cio_sleep(D_MED), 0);
    ck_assert_int_ge(loop_ns() - t0, NS_MED);
    ck_assert_int_eq(cio_scope_exit(&sh), 0);
    ck_assert_int_eq(cio_sleep(0), -ETIMEDOUT);
    ck_assert_int_eq(cio_scope_exit(&outer), -ETIMEDOUT);
    return 0;
}

START_TEST(scope_shield_vs_outer_deadline)
{
    RUN_MAIN(main_shield_vs_outer_deadline, NULL);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* cio_wait_for                                                               */
/* ------------------------------------------------------------------------ */

static int main_wait_for(void *arg, void **result)
{
    (void)arg;
    (void)result;
    /* Success. */
    child_t ok;
    child_init(&ok, 0.01, 0, &marker_a);
    cio_task_t *t;
    ck_assert_int_eq(cio_spawn(&t, child_body, &ok), 0);
    void *r = NULL;
    ck_assert_int_eq(cio_wait_for(t, 5, &r), 0);
    ck_assert_ptr_eq(r, &marker_a);
    cio_future_release(t);

    /* Error of the awaited task passes through. */
    child_t bad;
    child_init(&bad, 0.001, -EIO, NULL);
    ck_assert_int_eq(cio_spawn(&t, child_body, &bad), 0);
    ck_assert_int_eq(cio_wait_for(t, 5, NULL), -EIO);
    cio_future_release(t);

    /* Timeout: the task is cancelled and waited for. */
    child_t slow;
    child_init(&slow, 10, 0, NULL);
    ck_assert_int_eq(cio_spawn(&t, child_body, &slow), 0);
    int64_t t0 = loop_ns();
    double w0 = mono_now();
    ck_assert_int_eq(cio_wait_for(t, D_SHORT, NULL), -ETIMEDOUT);
    ck_assert_double_lt(mono_now() - w0, HANG_BOUND_S);
    ck_assert_int_ge(loop_ns() - t0, NS_SHORT);
    ck_assert(slow.finished);
    ck_assert_int_eq(slow.observed, -ECANCELED);
    ck_assert(cio_future_done(t));
    ck_assert(cio_future_cancelled(t));
    /* The caller itself is fine. */
    ck_assert_int_eq(cio_sleep(0), 0);
    cio_future_release(t);

    /* Plain future that times out is cancelled. */
    cio_future_t *f;
    ck_assert_int_eq(cio_future_new(&f, NULL), 0);
    ck_assert_int_eq(cio_wait_for(f, 0.01, NULL), -ETIMEDOUT);
    ck_assert(cio_future_cancelled(f));
    cio_future_release(f);

    ck_assert_int_eq(cio_future_new(&f, NULL), 0);
    ck_assert_int_eq(cio_wait_for(f, NAN, NULL), -EINVAL);
    ck_assert(!cio_future_done(f));
    ck_assert_int_eq(cio_future_cancel(f), 1);
    cio_future_release(f);
    return 0;
}

START_TEST(scope_wait_for)
{
    RUN_MAIN(main_wait_for, NULL);
}
END_TEST

/* Timeout 0 (asyncio.wait_for(fut, 0)): a future already done gives its
 * outcome, as there is nothing to wait for; a pending one times out and is
 * cancelled. */
static int main_wait_for_zero(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_future_t *f;
    ck_assert_int_eq(cio_future_new(&f, NULL), 0);
    ck_assert_int_eq(cio_wait_for(f, 0, NULL), -ETIMEDOUT);
    ck_assert(cio_future_cancelled(f));
    cio_future_release(f);

    ck_assert_int_eq(cio_future_new(&f, NULL), 0);
    ck_assert_int_eq(cio_future_set_result(f, &marker_a), 0);
    void *r = NULL;
    ck_assert_int_eq(cio_wait_for(f, 0, &r), 0);
    ck_assert_ptr_eq(r, &marker_a);
    cio_future_release(f);

    ck_assert_int_eq(cio_future_new(&f, NULL), 0);
    ck_assert_int_eq(cio_future_set_error(f, -EPIPE), 0);
    ck_assert_int_eq(cio_wait_for(f, 0, NULL), -EPIPE);
    cio_future_release(f);
    return 0;
}

START_TEST(scope_wait_for_zero_timeout)
{
    RUN_MAIN(main_wait_for_zero, NULL);
}
END_TEST

/* wait_for's timeout is its own: the caller's enclosing deadline still wins
 * with -ETIMEDOUT, and cancellation of the caller gives -ECANCELED. */
static int body_wait_for_cancelled(void *arg, void **result)
{
    (void)result;
    child_t *c = arg;
    cio_task_t *t;
    ck_assert_int_eq(cio_spawn(&t, child_body, c), 0);
    int rc = cio_wait_for(t, 10, NULL);
    ck_assert(cio_future_done(t));
    cio_future_release(t);
    return rc;
}

static int main_wait_for_cancelled(void *arg, void **result)
{
    (void)arg;
    (void)result;
    child_t c;
    child_init(&c, 10, 0, NULL);
    cio_task_t *t;
    ck_assert_int_eq(cio_spawn(&t, body_wait_for_cancelled, &c), 0);
    ck_assert_int_eq(cio_sleep(0.01), 0);
    ck_assert_int_eq(cio_task_cancel(t), 1);
    ck_assert_int_eq(cio_await(t, NULL), -ECANCELED);
    ck_assert_int_eq(c.observed, -ECANCELED);
    cio_future_release(t);
    return 0;
}

START_TEST(scope_wait_for_caller_cancelled)
{
    RUN_MAIN(main_wait_for_cancelled, NULL);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Cancellation at every kind of await point                                  */
/* ------------------------------------------------------------------------ */

enum kind {
    K_SLEEP,
    K_YIELD,
    K_AWAIT_FUTURE,
    K_AWAIT_TASK,
    K_WAIT_FD,
    K_TO_THREAD,
    K_GATHER,
    K_WAIT,
    K_AS_COMPLETED,
    K_GROUP_WAIT,
    K_SCOPE_NESTED,
    K_WAIT_FOR,
    K_SLEEP_UNTIL,
    NKINDS
};

static const char *const kind_names[NKINDS] = {
    "sleep", "yield", "await future", "await task", "wait_fd", "to_thread",
    "gather", "wait", "as_completed_next", "group_wait", "scope-nested",
    "wait_for", "sleep_until_ns"};

enum how { H_TASK_CANCEL, H_SCOPE_CANCEL, H_DEADLINE, NHOW };

static const char *const how_names[NHOW] = {"task cancel", "scope cancel", "deadline"};

struct victim {
    int kind, how;
    cio_scope_t scope;
    int ready;
    int rc, rc_again, rc_exit, rc_after;
    int64_t deadline, t_ret;
    /* Kind-specific state. */
    cio_future_t *fut;
    child_t kids[2];
    cio_task_t *kid_t[2];
    int fds[2];
    atomic_int job_done;
    bool post_ok;     /* kind-specific condition checked at return */
    const char *post_msg;
    int inner_exit[2];
    int finished;
};

static int job_slow(void *arg, void **result)
{
    (void)result;
    struct victim *v = arg;
    nap(0.15);
    atomic_store(&v->job_done, 1);
    return 0;
}

static void spawn_kids(struct victim *v, double delay)
{
    for (int i = 0; i < 2; i++) {
        child_init(&v->kids[i], delay, 0, NULL);
        ck_assert_int_eq(cio_spawn(&v->kid_t[i], child_body, &v->kids[i]), 0);
        ck_assert_ptr_nonnull(v->kid_t[i]);
    }
}

static bool kids_done_cancelled(struct victim *v)
{
    for (int i = 0; i < 2; i++)
        if (!cio_future_done(v->kid_t[i]) || v->kids[i].observed != -ECANCELED)
            return false;
    return true;
}

static bool kids_untouched(struct victim *v)
{
    for (int i = 0; i < 2; i++)
        if (cio_future_done(v->kid_t[i]) || cio_task_cancelling(v->kid_t[i]))
            return false;
    return true;
}

static int await_point(struct victim *v)
{
    int rc;
    switch (v->kind) {
    case K_SLEEP:
        v->ready = 1;
        return cio_sleep(10);
    case K_SLEEP_UNTIL:
        v->ready = 1;
        return cio_sleep_until_ns(loop_ns() + 10LL * 1000000000LL);
    case K_YIELD:
        v->ready = 1;
        while ((rc = cio_yield()) == 0)
            ;
        return rc;
    case K_AWAIT_FUTURE:
        ck_assert_int_eq(cio_future_new(&v->fut, NULL), 0);
        ck_assert_ptr_nonnull(v->fut);
        v->ready = 1;
        rc = cio_await(v->fut, NULL);
        v->post_ok = cio_future_cancelled(v->fut);
        v->post_msg = "the awaited future was not cancelled";
        return rc;
    case K_AWAIT_TASK:
        child_init(&v->kids[0], 10, 0, NULL);
        ck_assert_int_eq(cio_spawn(&v->kid_t[0], child_body, &v->kids[0]), 0);
        v->ready = 1;
        rc = cio_await(v->kid_t[0], NULL);
        v->post_ok = cio_future_done(v->kid_t[0]) && v->kids[0].observed == -ECANCELED;
        v->post_msg = "the awaited task was not cancelled and waited for";
        return rc;
    case K_WAIT_FOR:
        child_init(&v->kids[0], 10, 0, NULL);
        ck_assert_int_eq(cio_spawn(&v->kid_t[0], child_body, &v->kids[0]), 0);
        v->ready = 1;
        rc = cio_wait_for(v->kid_t[0], 20, NULL);
        v->post_ok = cio_future_done(v->kid_t[0]) && v->kids[0].observed == -ECANCELED;
        v->post_msg = "the awaited task was not cancelled and waited for";
        return rc;
    case K_WAIT_FD:
        ck_assert_int_eq(pipe2(v->fds, O_CLOEXEC), 0);
        v->ready = 1;
        return cio_wait_fd(v->fds[0], CIO_READABLE);
    case K_TO_THREAD:
        v->ready = 1;
        rc = cio_to_thread(job_slow, v, NULL);
        v->post_ok = atomic_load(&v->job_done) == 1;
        v->post_msg = "to_thread returned before the job finished";
        return rc;
    case K_GATHER:
        spawn_kids(v, 10);
        v->ready = 1;
        rc = cio_gather(v->kid_t, 2, NULL, NULL, 0);
        v->post_ok = kids_done_cancelled(v);
        v->post_msg = "gather did not cancel and wait for its children";
        return rc;
    case K_WAIT:
        spawn_kids(v, 10);
        v->ready = 1;
        rc = cio_wait(v->kid_t, 2, CIO_ALL_COMPLETED, INFINITY);
        v->post_ok = kids_untouched(v);
        v->post_msg = "cio_wait cancelled its futures";
        return rc;
    case K_AS_COMPLETED: {
        spawn_kids(v, 10);
        cio_as_completed_t it;
        ck_assert_int_eq(cio_as_completed_init(&it, v->kid_t, 2, INFINITY), 0);
        v->ready = 1;
        cio_future_t *out = NULL;
        rc = cio_as_completed_next(&it, &out);
        cio_as_completed_cleanup(&it);
        v->post_ok = true;
        return rc;
    }
    case K_GROUP_WAIT: {
        cio_group_t *g;
        ck_assert_int_eq(cio_group_new(&g), 0);
        ck_assert_ptr_nonnull(g);
        for (int i = 0; i < 2; i++) {
            child_init(&v->kids[i], 10, 0, NULL);
            ck_assert_int_eq(cio_group_spawn(NULL, g, "kid", child_body, &v->kids[i]), 0);
        }
        v->ready = 1;
        rc = cio_group_wait(g);
        v->post_ok = v->kids[0].finished && v->kids[1].finished &&
                     v->kids[0].observed == -ECANCELED && v->kids[1].observed == -ECANCELED;
        v->post_msg = "group_wait returned before its children finished cancelled";
        cio_group_free(g);
        return rc;
    }
    case K_SCOPE_NESTED: {
        cio_scope_t a, b;
        ck_assert_int_eq(cio_scope_enter(&a, INFINITY, 0), 0);
        ck_assert_int_eq(cio_scope_enter(&b, 20, 0), 0);
        v->ready = 1;
        rc = cio_sleep(10);
        v->inner_exit[1] = cio_scope_exit(&b);
        v->inner_exit[0] = cio_scope_exit(&a);
        v->post_ok = v->inner_exit[0] == 0 && v->inner_exit[1] == 0;
        v->post_msg = "inner scopes that were neither cancelled nor expired did not exit with 0";
        return rc;
    }
    default:
        ck_abort();
    }
    return 0;
}

static int victim_body(void *arg, void **result)
{
    (void)result;
    struct victim *v = arg;
    v->post_ok = true;
    v->post_msg = "";
    if (v->how != H_TASK_CANCEL) {
        double timeout = v->how == H_DEADLINE ? D_SHORT : INFINITY;
        ck_assert_int_eq(cio_scope_enter(&v->scope, timeout, 0), 0);
        v->deadline = cio_scope_deadline_ns(&v->scope);
    }
    v->rc = await_point(v);
    v->t_ret = loop_ns();
    v->rc_again = cio_sleep(0);
    if (v->how != H_TASK_CANCEL) {
        v->rc_exit = cio_scope_exit(&v->scope);
        v->rc_after = cio_sleep(0);
    }
    v->finished = 1;
    return v->rc;
}

static int checker_wait_fd(void *arg, void **result)
{
    (void)result;
    return cio_wait_fd(*(int *)arg, CIO_READABLE);
}

static int main_matrix(void *arg, void **result)
{
    (void)result;
    struct victim *v = arg;
    int expect = v->how == H_DEADLINE ? -ETIMEDOUT : -ECANCELED;
    cio_task_t *t;
    ck_assert_int_eq(cio_spawn(&t, victim_body, v), 0);
    ck_assert_ptr_nonnull(t);
    if (v->how != H_DEADLINE) {
        ck_assert_int_eq(cio_sleep(0.01), 0);
        ck_assert(v->ready);
        ck_assert(!v->finished);
        if (v->how == H_TASK_CANCEL)
            ck_assert_int_eq(cio_task_cancel(t), 1);
        else
            cio_scope_cancel(&v->scope);
    }
    double w0 = mono_now();
    int rc = cio_await(t, NULL);
    ck_assert_double_lt(mono_now() - w0, HANG_BOUND_S);
    ck_assert(v->finished);
    ck_assert_int_eq(rc, expect);
    ck_assert_int_eq(v->rc, expect);
    ck_assert_msg(v->post_ok, "%s", v->post_msg);
    /* Level-triggered. */
    ck_assert_int_eq(v->rc_again, expect);
    if (v->how != H_TASK_CANCEL) {
        ck_assert_int_eq(v->rc_exit, expect);
        ck_assert_int_eq(v->rc_after, 0);
    }
    if (v->how == H_DEADLINE)
        ck_assert_int_ge(v->t_ret, v->deadline);
    cio_future_release(t);

    /* Clean up whatever the kind left behind. */
    if (v->fut)
        cio_future_release(v->fut);
    for (int i = 0; i < 2; i++) {
        if (!v->kid_t[i])
            continue;
        cio_task_cancel(v->kid_t[i]);
        int krc = cio_await(v->kid_t[i], NULL);
        ck_assert(krc == 0 || krc == -ECANCELED);
        cio_future_release(v->kid_t[i]);
    }
    if (v->kind == K_WAIT_FD) {
        /* The cancelled wait left no registration behind. */
        ck_assert_int_eq(write(v->fds[1], "k", 1), 1);
        cio_task_t *c;
        ck_assert_int_eq(cio_spawn(&c, checker_wait_fd, &v->fds[0]), 0);
        ck_assert_int_eq(cio_wait_for(c, 5, NULL), CIO_READABLE);
        cio_future_release(c);
        close(v->fds[0]);
        close(v->fds[1]);
    }
    return 0;
}

START_TEST(scope_cancel_at_every_await_point)
{
    static struct victim v;
    memset(&v, 0, sizeof v);
    v.kind = _i / NHOW;
    v.how = _i % NHOW;
    fprintf(stderr, "await point: %s, delivered by: %s\n", kind_names[v.kind], how_names[v.how]);
    RUN_MAIN(main_matrix, &v);
}
END_TEST

static Suite *scope_suite(void)
{
    Suite *s = suite_create("scope");
    TCase *tc = add_tcase(s, "deadline", TEST_TIMEOUT);
    tcase_add_test(tc, scope_timeout_basic);
    tcase_add_test(tc, scope_check_cancel);
    tcase_add_test(tc, scope_timeout_at_ns);
    tcase_add_test(tc, scope_timeout_sleep_until);
    tcase_add_test(tc, scope_nested_outer_wins);
    tcase_add_test(tc, scope_nested_inner_shorter);
    tcase_add_test(tc, scope_exit_wrong_order);
    tcase_add_loop_test(tc, scope_reschedule, R_EXTEND, R_INFINITY + 1);
    tcase_add_test(tc, scope_reschedule_self);

    tc = add_tcase(s, "cancel", TEST_TIMEOUT);
    tcase_add_test(tc, scope_cancel_from_other_task);
    tcase_add_test(tc, scope_cancel_self);
    tcase_add_test(tc, scope_shield_cleanup_after_cancel);
    tcase_add_test(tc, scope_shield_cancel_inside);
    tcase_add_test(tc, scope_shield_vs_outer_deadline);

    tc = add_tcase(s, "wait_for", TEST_TIMEOUT);
    tcase_add_test(tc, scope_wait_for);
    tcase_add_test(tc, scope_wait_for_zero_timeout);
    tcase_add_test(tc, scope_wait_for_caller_cancelled);

    tc = add_tcase(s, "await points", TEST_TIMEOUT);
    tcase_add_loop_test(tc, scope_cancel_at_every_await_point, 0, NKINDS * NHOW);
    return s;
}

CIO_TEST_MAIN(scope_suite)
