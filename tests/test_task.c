/*
 * Tasks: spawn/await, status and value, names, current/all tasks, done
 * callbacks, cancellation (level-triggered, before start, propagation to an
 * awaited task, shield), -EDEADLK, cio_yield interleaving, cio_dump_tasks,
 * cio_run / cio_run_ex / cio_runner.
 */
#include "cio_test.h"

#include <ctype.h>
#include <unistd.h>

static int marker_a, marker_b;

/* ------------------------------------------------------------------------ */
/* Spawn and await                                                           */
/* ------------------------------------------------------------------------ */

static int body_value(void *arg, void **result)
{
    *result = arg;
    return 0;
}

static int body_positive(void *arg, void **result)
{
    (void)arg;
    *result = &marker_b;
    return 7;
}

static int body_fail(void *arg, void **result)
{
    (void)arg;
    ck_assert_ptr_null(*result); /* preset to NULL */
    return -EPIPE;
}

static int main_spawn_await(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_task_t *t;
    ck_assert_int_eq(cio_spawn(&t, body_value, &marker_a), 0);
    ck_assert_ptr_nonnull(t);
    ck_assert(cio_future_is_task(t));
    ck_assert(!cio_future_done(t));
    ck_assert_int_eq(cio_future_result(t, NULL), -EAGAIN);
    void *r = NULL;
    ck_assert_int_eq(cio_await(t, &r), 0);
    ck_assert_ptr_eq(r, &marker_a);
    ck_assert(cio_future_done(t));
    ck_assert(!cio_future_cancelled(t));
    r = NULL;
    ck_assert_int_eq(cio_future_result(t, &r), 0);
    ck_assert_ptr_eq(r, &marker_a);
    /* Awaiting a finished task again returns the same outcome at once. */
    r = NULL;
    ck_assert_int_eq(cio_await(t, &r), 0);
    ck_assert_ptr_eq(r, &marker_a);
    cio_future_release(t);

    ck_assert_int_eq(cio_spawn(&t, body_positive, NULL), 0);
    ck_assert_ptr_nonnull(t);
    r = NULL;
    ck_assert_int_eq(cio_await(t, &r), 7);
    ck_assert_ptr_eq(r, &marker_b);
    ck_assert_int_eq(cio_future_result(t, NULL), 7);
    cio_future_release(t);

    ck_assert_int_eq(cio_spawn(&t, body_fail, NULL), 0);
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(cio_await(t, NULL), -EPIPE);
    ck_assert(cio_future_done(t));
    ck_assert(!cio_future_cancelled(t));
    ck_assert_int_eq(cio_future_result(t, NULL), -EPIPE);
    cio_future_release(t);
    return 0;
}

START_TEST(task_spawn_await)
{
    RUN_MAIN(main_spawn_await, NULL);
}
END_TEST

static int body_flag(void *arg, void **result)
{
    (void)result;
    *(int *)arg = 1;
    return 0;
}

static int main_starts_later(void *arg, void **result)
{
    (void)arg;
    (void)result;
    int flag = 0;
    cio_task_t *t;
    ck_assert_int_eq(cio_spawn(&t, body_flag, &flag), 0);
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(flag, 0); /* not run synchronously */
    ck_assert_int_eq(cio_yield(), 0);
    ck_assert_int_eq(flag, 1);
    ck_assert_int_eq(cio_await(t, NULL), 0);
    cio_future_release(t);
    return 0;
}

START_TEST(task_starts_later)
{
    RUN_MAIN(main_starts_later, NULL);
}
END_TEST

/* Releasing the only reference does not stop the task. */
static int body_sleep_flag(void *arg, void **result)
{
    (void)result;
    ck_assert_int_eq(cio_sleep(0.01), 0);
    *(int *)arg = 1;
    return 0;
}

static int main_release_early(void *arg, void **result)
{
    (void)arg;
    (void)result;
    int flag = 0;
    cio_task_t *t;
    ck_assert_int_eq(cio_spawn(&t, body_sleep_flag, &flag), 0);
    ck_assert_ptr_nonnull(t);
    cio_future_release(t);
    ck_assert_int_eq(cio_sleep(0.05), 0);
    ck_assert_int_eq(flag, 1);
    return 0;
}

START_TEST(task_release_early)
{
    RUN_MAIN(main_release_early, NULL);
}
END_TEST

/*
 * Fire and forget: cio_spawn with out NULL hands no reference out. The task
 * still runs to completion (it suspends, so the loop must be keeping it),
 * and once it has finished nothing of it is left: the loop can be freed,
 * which it refuses while any task or future is still referenced (ASan
 * checks the memory too).
 */
/* Records what a long sleep returned (12345 until it returns). */
static int body_sleep_record(void *arg, void **result)
{
    (void)result;
    *(int *)arg = cio_sleep(10);
    return *(int *)arg;
}

static int main_fire_and_forget(void *arg, void **result)
{
    (void)result;
    int *flags = arg;
    ck_assert_int_eq(cio_spawn(NULL, body_sleep_flag, &flags[0]), 0);
    ck_assert_int_eq(cio_spawn_named(NULL, "forgotten", body_sleep_flag, &flags[1]), 0);
    ck_assert_int_eq(cio_spawn_ex(NULL, NULL, body_flag, &flags[2], NULL), 0);
    /* The loop keeps them: main and the three. */
    ck_assert_int_eq(cio_all_tasks(NULL, NULL, 0), 4);
    ck_assert_int_eq(flags[0] | flags[1] | flags[2], 0);
    ck_assert_int_eq(cio_sleep(0.05), 0);
    ck_assert_int_eq(flags[0] & flags[1] & flags[2], 1);
    ck_assert_int_eq(cio_all_tasks(NULL, NULL, 0), 1);
    /* Errors are still reported with out NULL. */
    ck_assert_int_eq(cio_spawn(NULL, NULL, NULL), -EINVAL);
    return 0;
}

START_TEST(task_spawn_fire_and_forget)
{
    cio_loop_t *l = NULL;
    ck_assert_int_eq(cio_loop_new(&l), 0);
    int flags[3] = {0, 0, 0};
    cio_task_t *m;
    ck_assert_int_eq(cio_spawn_ex(&m, l, main_fire_and_forget, flags, NULL), 0);
    ck_assert_int_eq(cio_loop_run_until_complete(l, m, NULL), 0);
    cio_future_release(m);
    /* A forgotten task still running when the loop shuts down is cancelled
     * and freed like any other. */
    int late = 12345;
    ck_assert_int_eq(cio_spawn_ex(NULL, l, body_sleep_record, &late, NULL), 0);
    ck_assert_int_eq(cio_loop_shutdown(l), 0);
    ck_assert_int_eq(late, -ECANCELED);
    ck_assert_int_eq(cio_all_tasks(l, NULL, 0), 0);
    ck_assert_int_eq(cio_loop_free(l), 0); /* -EBUSY if a reference leaked */
}
END_TEST

/* Bad arguments: *out is NULL after every failure, and nothing is spawned. */
START_TEST(task_spawn_bad_arguments)
{
    cio_loop_t *l = NULL;
    ck_assert_int_eq(cio_loop_new(&l), 0);
    cio_task_t *t = NOT_SET;
    ck_assert_int_eq(cio_spawn_ex(&t, l, NULL, NULL, NULL), -EINVAL);
    ck_assert_ptr_null(t);
    cio_spawn_opts_t o = {.name = "x", .reserved_ = {NULL, &o}};
    t = NOT_SET;
    ck_assert_int_eq(cio_spawn_ex(&t, l, body_value, NULL, &o), -EINVAL);
    ck_assert_ptr_null(t);
    ck_assert_int_eq(cio_all_tasks(l, NULL, 0), 0);
    close_free(l);
}
END_TEST

/* A plain callback of a running loop may spawn tasks (create_task from a
 * callback); the past is not an error for sleep_until. */
struct from_cb {
    cio_task_t *t;
    int flag;
};

static void cb_spawn(void *arg)
{
    struct from_cb *f = arg;
    ck_assert_ptr_null(cio_current_task());
    ck_assert_int_eq(cio_spawn(&f->t, body_flag, &f->flag), 0);
    ck_assert_ptr_nonnull(f->t);
}

static int main_spawn_from_callback(void *arg, void **result)
{
    (void)arg;
    (void)result;
    struct from_cb f = {NULL, 0};
    ck_assert_int_eq(cio_call_soon(cio_get_running_loop(), NULL, cb_spawn, &f), 0);
    ck_assert_int_eq(cio_sleep(0.01), 0);
    ck_assert_ptr_nonnull(f.t);
    ck_assert_int_eq(cio_await(f.t, NULL), 0);
    ck_assert_int_eq(f.flag, 1);
    cio_future_release(f.t);
    ck_assert_int_eq(cio_sleep_until_ns(loop_ns() - 1000000000LL), 0);
    ck_assert_int_eq(cio_sleep_until_ns(0), 0);
    return 0;
}

START_TEST(task_spawn_from_callback)
{
    RUN_MAIN(main_spawn_from_callback, NULL);
}
END_TEST

START_TEST(task_spawn_outside_loop)
{
    cio_task_t *t = NOT_SET;
    ck_assert_int_eq(cio_spawn(&t, body_value, NULL), -EPERM);
    ck_assert_ptr_null(t);
    t = NOT_SET;
    ck_assert_int_eq(cio_spawn_named(&t, "x", body_value, NULL), -EPERM);
    ck_assert_ptr_null(t);
    t = NOT_SET;
    ck_assert_int_eq(cio_spawn_ex(&t, NULL, body_value, NULL, NULL), -EPERM);
    ck_assert_ptr_null(t);
    ck_assert_ptr_null(cio_current_task());
}
END_TEST

/* cio_sleep never returns early, on the loop clock and on CLOCK_MONOTONIC,
 * even after a step that held the loop (a stale cached time). */
static int main_sleep_not_early(void *arg, void **result)
{
    (void)arg;
    (void)result;
    static const double delays[] = {0.001, 0.015625, D_SHORT, D_MED};
    for (size_t i = 0; i < sizeof delays / sizeof delays[0]; i++) {
        int64_t t0 = loop_ns();
        double w0 = mono_now();
        ck_assert_int_eq(cio_sleep(delays[i]), 0);
        ck_assert_int_ge(loop_ns() - t0, (int64_t)(delays[i] * 1e9));
        ck_assert_double_ge(mono_now() - w0, delays[i]);
    }
    /* Hold the loop for 50 ms, then sleep: measured from the call. */
    double busy = mono_now();
    while (mono_now() - busy < 0.05)
        ;
    double w0 = mono_now();
    ck_assert_int_eq(cio_sleep(D_SHORT), 0);
    ck_assert_double_ge(mono_now() - w0, D_SHORT);
    /* Absolute form. */
    int64_t when = loop_ns() + NS_SHORT;
    ck_assert_int_eq(cio_sleep_until_ns(when), 0);
    ck_assert_int_ge(loop_ns(), when);
    /* Negative counts as 0; NaN is refused. */
    ck_assert_int_eq(cio_sleep(-1), 0);
    ck_assert_int_eq(cio_sleep(NAN), -EINVAL);
    return 0;
}

START_TEST(task_sleep_not_early)
{
    RUN_MAIN(main_sleep_not_early, NULL);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Names, current task, all tasks                                            */
/* ------------------------------------------------------------------------ */

static int body_current(void *arg, void **result)
{
    (void)result;
    *(cio_task_t **)arg = cio_current_task();
    return 0;
}

static bool is_default_name(const char *n)
{
    if (strncmp(n, "Task-", 5) != 0 || !n[5])
        return false;
    for (const char *p = n + 5; *p; p++)
        if (!isdigit((unsigned char)*p))
            return false;
    return true;
}

static int main_names(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_task_t *me = cio_current_task();
    ck_assert_ptr_nonnull(me);
    ck_assert_str_eq(cio_task_get_name(me), "main");

    cio_task_t *seen1 = NULL, *seen2 = NULL;
    cio_task_t *t1;
    ck_assert_int_eq(cio_spawn(&t1, body_current, &seen1), 0);
    cio_task_t *t2;
    ck_assert_int_eq(cio_spawn(&t2, body_current, &seen2), 0);
    ck_assert_ptr_nonnull(t1);
    ck_assert_ptr_nonnull(t2);
    ck_assert_msg(is_default_name(cio_task_get_name(t1)), "name %s", cio_task_get_name(t1));
    ck_assert_msg(is_default_name(cio_task_get_name(t2)), "name %s", cio_task_get_name(t2));
    ck_assert_str_ne(cio_task_get_name(t1), cio_task_get_name(t2));

    char buf[32] = "worker";
    cio_task_t *t3;
    ck_assert_int_eq(cio_spawn_named(&t3, buf, body_value, NULL), 0);
    ck_assert_ptr_nonnull(t3);
    strcpy(buf, "changed"); /* the name was copied */
    ck_assert_str_eq(cio_task_get_name(t3), "worker");
    strcpy(buf, "renamed");
    ck_assert_int_eq(cio_task_set_name(t3, buf), 0);
    buf[0] = 'X';
    ck_assert_str_eq(cio_task_get_name(t3), "renamed");
    ck_assert_int_eq(cio_task_set_name(t3, NULL), -EINVAL);
    ck_assert_str_eq(cio_task_get_name(t3), "renamed");

    cio_spawn_opts_t opts = {.name = "opt-name", .stack_size = 0};
    cio_task_t *t4;
    ck_assert_int_eq(cio_spawn_ex(&t4, cio_get_running_loop(), body_value, NULL, &opts), 0);
    ck_assert_ptr_nonnull(t4);
    ck_assert_str_eq(cio_task_get_name(t4), "opt-name");
    cio_task_t *t5;
    ck_assert_int_eq(cio_spawn_ex(&t5, cio_get_running_loop(), body_value, NULL, NULL), 0);
    ck_assert_ptr_nonnull(t5);
    ck_assert(is_default_name(cio_task_get_name(t5)));

    ck_assert_int_eq(cio_await(t1, NULL), 0);
    ck_assert_int_eq(cio_await(t2, NULL), 0);
    ck_assert_ptr_eq(seen1, t1);
    ck_assert_ptr_eq(seen2, t2);
    ck_assert_ptr_eq(cio_current_task(), me);
    ck_assert_int_eq(cio_await(t3, NULL), 0);
    ck_assert_int_eq(cio_await(t4, NULL), 0);
    ck_assert_int_eq(cio_await(t5, NULL), 0);
    /* Names stay readable while the task lives (we hold references). */
    ck_assert_str_eq(cio_task_get_name(t3), "renamed");
    cio_future_release(t1);
    cio_future_release(t2);
    cio_future_release(t3);
    cio_future_release(t4);
    cio_future_release(t5);

    /* A plain future is not a task. */
    cio_future_t *f;
    ck_assert_int_eq(cio_future_new(&f, NULL), 0);
    ck_assert_ptr_nonnull(f);
    ck_assert(!cio_future_is_task(f));
    ck_assert_int_eq(cio_task_cancel(f), -EINVAL);
    ck_assert_int_eq(cio_future_cancel(f), 1);
    cio_future_release(f);
    return 0;
}

START_TEST(task_names_current)
{
    RUN_MAIN(main_names, NULL);
}
END_TEST

static int main_run_named(void *arg, void **result)
{
    (void)arg;
    (void)result;
    ck_assert_str_eq(cio_task_get_name(cio_current_task()), "boss");
    return 0;
}

START_TEST(task_run_named_main)
{
    cio_run_opts_t o = {.name = "boss"};
    ck_assert_int_eq(cio_run_ex(main_run_named, NULL, NULL, &o), 0);
}
END_TEST

static int body_sleep_arg(void *arg, void **result)
{
    (void)result;
    return cio_sleep(*(double *)arg);
}

static bool contains(cio_task_t **v, size_t n, cio_task_t *t)
{
    for (size_t i = 0; i < n; i++)
        if (v[i] == t)
            return true;
    return false;
}

static int main_all_tasks(void *arg, void **result)
{
    (void)arg;
    (void)result;
    double d = 0.05;
    cio_task_t *t[3];
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(cio_spawn(&t[i], body_sleep_arg, &d), 0);
        ck_assert_ptr_nonnull(t[i]);
    }
    cio_task_t *out[8];
    memset(out, 0, sizeof out);
    ck_assert_int_eq(cio_all_tasks(NULL, out, 8), 4);
    ck_assert(contains(out, 4, cio_current_task()));
    for (int i = 0; i < 3; i++)
        ck_assert(contains(out, 4, t[i]));
    /* With a loop argument, and a small buffer: the count may exceed cap. */
    memset(out, 0, sizeof out);
    ck_assert_int_eq(cio_all_tasks(cio_get_running_loop(), out, 2), 4);
    ck_assert_ptr_nonnull(out[0]);
    ck_assert_ptr_nonnull(out[1]);
    ck_assert_ptr_null(out[2]);
    ck_assert_int_eq(cio_all_tasks(NULL, NULL, 0), 4);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(cio_await(t[i], NULL), 0);
        cio_future_release(t[i]);
    }
    /* Finished tasks are gone from the list. */
    ck_assert_int_eq(cio_all_tasks(NULL, out, 8), 1);
    ck_assert_ptr_eq(out[0], cio_current_task());
    return 0;
}

START_TEST(task_all_tasks)
{
    RUN_MAIN(main_all_tasks, NULL);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Done callbacks                                                             */
/* ------------------------------------------------------------------------ */

struct done_rec {
    int calls;
    cio_future_t *f;
    void *arg;
    bool done_when_called;
    int status_when_called;
};

static struct done_rec rec1, rec2;

static void done_cb(cio_future_t *f, void *arg)
{
    struct done_rec *r = arg;
    r->calls++;
    r->f = f;
    r->arg = arg;
    r->done_when_called = cio_future_done(f);
    r->status_when_called = cio_future_result(f, NULL);
}

static int main_done_callbacks(void *arg, void **result)
{
    (void)arg;
    (void)result;
    memset(&rec1, 0, sizeof rec1);
    memset(&rec2, 0, sizeof rec2);
    double d = 0.01;
    cio_task_t *t;
    ck_assert_int_eq(cio_spawn(&t, body_sleep_arg, &d), 0);
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(cio_future_add_done_callback(t, done_cb, &rec1), 0);
    ck_assert_int_eq(rec1.calls, 0);
    ck_assert_int_eq(cio_await(t, NULL), 0);
    ck_assert_int_eq(cio_sleep(0.01), 0);
    ck_assert_int_eq(rec1.calls, 1);
    ck_assert_ptr_eq(rec1.f, t);
    ck_assert(rec1.done_when_called);
    ck_assert_int_eq(rec1.status_when_called, 0);

    /* Added to a task already done: scheduled, not called synchronously. */
    ck_assert_int_eq(cio_future_add_done_callback(t, done_cb, &rec2), 0);
    ck_assert_int_eq(rec2.calls, 0);
    ck_assert_int_eq(cio_sleep(0.01), 0);
    ck_assert_int_eq(rec2.calls, 1);
    ck_assert_ptr_eq(rec2.f, t);
    ck_assert_int_eq(rec1.calls, 1); /* the first one ran exactly once */
    cio_future_release(t);

    ck_assert_int_eq(cio_future_add_done_callback(NULL, done_cb, NULL), -EINVAL);
    return 0;
}

START_TEST(task_done_callbacks)
{
    RUN_MAIN(main_done_callbacks, NULL);
}
END_TEST

/* A done callback is not called synchronously from inside the task's end:
 * a task that finishes and a callback registered on it run in different
 * steps, the callback after the task body returned. */
static int body_mark_end(void *arg, void **result)
{
    (void)result;
    int *phase = arg;
    *phase = 1;
    return 0;
}

struct order_cb {
    int *phase;
    int seen_phase;
    int calls;
};

static void done_phase(cio_future_t *f, void *arg)
{
    (void)f;
    struct order_cb *o = arg;
    o->seen_phase = *o->phase;
    o->calls++;
}

static int main_done_after(void *arg, void **result)
{
    (void)arg;
    (void)result;
    int phase = 0;
    struct order_cb o = {.phase = &phase, .seen_phase = -1};
    cio_task_t *t;
    ck_assert_int_eq(cio_spawn(&t, body_mark_end, &phase), 0);
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(cio_future_add_done_callback(t, done_phase, &o), 0);
    ck_assert_int_eq(cio_sleep(0.01), 0);
    ck_assert_int_eq(o.calls, 1);
    ck_assert_int_eq(o.seen_phase, 1);
    cio_future_release(t);
    return 0;
}

START_TEST(task_done_callback_after_completion)
{
    RUN_MAIN(main_done_after, NULL);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Cancellation                                                               */
/* ------------------------------------------------------------------------ */

struct sleeper {
    int rc[5];
    int n;           /* how many sleeps to attempt */
    int finished;
    double delay;
};

static int body_sleeper(void *arg, void **result)
{
    (void)result;
    struct sleeper *s = arg;
    for (int i = 0; i < s->n; i++)
        s->rc[i] = cio_sleep(s->delay);
    s->finished = 1;
    return s->rc[0];
}

static int main_cancel_sleeping(void *arg, void **result)
{
    (void)arg;
    (void)result;
    struct sleeper s = {.n = 1, .delay = 10, .rc = {1}};
    cio_task_t *t;
    ck_assert_int_eq(cio_spawn(&t, body_sleeper, &s), 0);
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(cio_sleep(0.01), 0);
    ck_assert(!cio_task_cancelling(t));
    double w0 = mono_now();
    ck_assert_int_eq(cio_task_cancel(t), 1);
    ck_assert(cio_task_cancelling(t));
    ck_assert_int_eq(cio_await(t, NULL), -ECANCELED);
    ck_assert_double_lt(mono_now() - w0, HANG_BOUND_S);
    ck_assert_int_eq(s.rc[0], -ECANCELED);
    ck_assert(s.finished);
    ck_assert(cio_future_done(t));
    ck_assert(cio_future_cancelled(t));
    ck_assert_int_eq(cio_future_result(t, NULL), -ECANCELED);
    /* Cancelling a finished task does nothing. */
    ck_assert_int_eq(cio_task_cancel(t), 0);
    ck_assert_int_eq(cio_future_cancel(t), 0);
    cio_future_release(t);
    ck_assert_int_eq(cio_task_cancel(NULL), -EINVAL);
    return 0;
}

START_TEST(task_cancel_sleeping)
{
    RUN_MAIN(main_cancel_sleeping, NULL);
}
END_TEST

/* Level-triggered: ignoring -ECANCELED does not help; every later await
 * point returns it too, at once. */
struct stubborn {
    int rc[6];
    int finished;
    double elapsed;
};

static int body_stubborn(void *arg, void **result)
{
    (void)result;
    struct stubborn *s = arg;
    s->rc[0] = cio_sleep(10);
    double w0 = mono_now();
    s->rc[1] = cio_sleep(10);
    s->rc[2] = cio_yield();
    s->rc[3] = cio_sleep(0);
    cio_future_t *f;
    ck_assert_int_eq(cio_future_new(&f, NULL), 0);
    ck_assert_ptr_nonnull(f);
    s->rc[4] = cio_await(f, NULL);
    cio_future_release(f);
    s->rc[5] = cio_sleep(10);
    s->elapsed = mono_now() - w0;
    s->finished = 1;
    return 0; /* swallows the cancellation */
}

static int main_level_triggered(void *arg, void **result)
{
    (void)result;
    struct stubborn *s = arg;
    cio_task_t *t;
    ck_assert_int_eq(cio_spawn(&t, body_stubborn, s), 0);
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(cio_sleep(0.01), 0);
    ck_assert_int_eq(cio_task_cancel(t), 1);
    /* The body returned 0 after swallowing: its status is its own. */
    int rc = cio_await(t, NULL);
    ck_assert_int_eq(rc, 0);
    for (int i = 0; i < 6; i++)
        ck_assert_int_eq(s->rc[i], -ECANCELED);
    ck_assert_double_lt(s->elapsed, HANG_BOUND_S);
    cio_future_release(t);
    return 0;
}

START_TEST(task_cancel_level_triggered)
{
    struct stubborn s;
    memset(&s, 0, sizeof s);
    RUN_MAIN(main_level_triggered, &s);
    ck_assert(s.finished);
}
END_TEST

/* cio_run's clean-up cancels a leftover stubborn task and still finishes. */
static int main_leave_stubborn(void *arg, void **result)
{
    (void)result;
    cio_task_t *t;
    ck_assert_int_eq(cio_spawn(&t, body_stubborn, arg), 0);
    ck_assert_ptr_nonnull(t);
    cio_future_release(t);
    ck_assert_int_eq(cio_sleep(0.01), 0);
    return 0;
}

START_TEST(task_run_cancels_leftover_stubborn)
{
    struct stubborn s;
    memset(&s, 0, sizeof s);
    double w0 = mono_now();
    RUN_MAIN(main_leave_stubborn, &s);
    ck_assert_double_lt(mono_now() - w0, HANG_BOUND_S);
    ck_assert(s.finished);
    for (int i = 0; i < 6; i++)
        ck_assert_int_eq(s.rc[i], -ECANCELED);
}
END_TEST

/* The same with an explicit loop and cio_loop_shutdown. */
static void cb_stop(void *arg)
{
    cio_loop_stop(arg);
}

START_TEST(task_shutdown_stubborn)
{
    cio_loop_t *l = NULL;
    ck_assert_int_eq(cio_loop_new(&l), 0);
    struct stubborn s;
    memset(&s, 0, sizeof s);
    cio_task_t *t;
    ck_assert_int_eq(cio_spawn_ex(&t, l, body_stubborn, &s, NULL), 0);
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(cio_call_later(l, NULL, 0.01, cb_stop, l), 0);
    ck_assert_int_eq(cio_loop_run_forever(l), 0);
    ck_assert(!s.finished);
    double w0 = mono_now();
    ck_assert_int_eq(cio_loop_shutdown(l), 0);
    ck_assert_double_lt(mono_now() - w0, HANG_BOUND_S);
    ck_assert(s.finished);
    ck_assert(cio_future_done(t));
    for (int i = 0; i < 6; i++)
        ck_assert_int_eq(s.rc[i], -ECANCELED);
    cio_future_release(t);
    close_free(l);
}
END_TEST

/* Cancelled before it starts: the body still runs, every await fails. */
struct early {
    int ran;
    int rc_sleep, rc_yield, rc_sleep0;
};

static int body_early(void *arg, void **result)
{
    (void)result;
    struct early *e = arg;
    e->ran = 1;
    e->rc_sleep0 = cio_sleep(0);
    e->rc_yield = cio_yield();
    e->rc_sleep = cio_sleep(10);
    return e->rc_sleep;
}

static int main_cancel_before_start(void *arg, void **result)
{
    (void)arg;
    (void)result;
    struct early e = {0};
    cio_task_t *t;
    ck_assert_int_eq(cio_spawn(&t, body_early, &e), 0);
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(cio_task_cancel(t), 1);
    ck_assert(cio_task_cancelling(t));
    ck_assert_int_eq(e.ran, 0);
    ck_assert_int_eq(cio_await(t, NULL), -ECANCELED);
    ck_assert_int_eq(e.ran, 1);
    ck_assert_int_eq(e.rc_sleep0, -ECANCELED);
    ck_assert_int_eq(e.rc_yield, -ECANCELED);
    ck_assert_int_eq(e.rc_sleep, -ECANCELED);
    ck_assert(cio_future_cancelled(t));
    cio_future_release(t);
    return 0;
}

START_TEST(task_cancel_before_start)
{
    RUN_MAIN(main_cancel_before_start, NULL);
}
END_TEST

/* Cancelling a task that awaits another task cancels the awaited one too,
 * and waits for it. */
struct chain {
    struct sleeper inner;
    cio_task_t *inner_t;
    int outer_rc;
    bool inner_done_at_return;
    int inner_status_at_return;
};

static int body_outer(void *arg, void **result)
{
    (void)result;
    struct chain *c = arg;
    ck_assert_int_eq(cio_spawn(&c->inner_t, body_sleeper, &c->inner), 0);
    ck_assert_ptr_nonnull(c->inner_t);
    c->outer_rc = cio_await(c->inner_t, NULL);
    c->inner_done_at_return = cio_future_done(c->inner_t);
    c->inner_status_at_return = c->inner.rc[0];
    return c->outer_rc;
}

static int main_cancel_propagates(void *arg, void **result)
{
    (void)arg;
    (void)result;
    struct chain c;
    memset(&c, 0, sizeof c);
    c.inner.n = 1;
    c.inner.delay = 10;
    c.inner.rc[0] = 12345;
    cio_task_t *outer;
    ck_assert_int_eq(cio_spawn(&outer, body_outer, &c), 0);
    ck_assert_ptr_nonnull(outer);
    ck_assert_int_eq(cio_sleep(0.02), 0);
    ck_assert_ptr_nonnull(c.inner_t);
    ck_assert_int_eq(cio_task_cancel(outer), 1);
    ck_assert_int_eq(cio_await(outer, NULL), -ECANCELED);
    ck_assert_int_eq(c.outer_rc, -ECANCELED);
    ck_assert(c.inner_done_at_return);
    ck_assert_int_eq(c.inner_status_at_return, -ECANCELED);
    ck_assert(cio_future_cancelled(c.inner_t));
    cio_future_release(c.inner_t);
    cio_future_release(outer);
    return 0;
}

START_TEST(task_cancel_propagates_to_awaited)
{
    RUN_MAIN(main_cancel_propagates, NULL);
}
END_TEST

/* The awaited task delays its end after being cancelled (cleanup in a
 * shielded scope): the cancelled awaiter returns only once it finished. */
struct slow_cleanup {
    int rc_sleep;
    int cleanup_rc;
    int finished;
};

static int body_slow_cleanup(void *arg, void **result)
{
    (void)result;
    struct slow_cleanup *c = arg;
    c->rc_sleep = cio_sleep(10);
    cio_scope_t sh;
    ck_assert_int_eq(cio_scope_enter(&sh, INFINITY, CIO_SCOPE_SHIELD), 0);
    c->cleanup_rc = cio_sleep(0.05);
    cio_scope_exit(&sh);
    c->finished = 1;
    return c->rc_sleep;
}

struct awaiter {
    struct slow_cleanup inner;
    int rc;
    int inner_finished_at_return;
};

static int body_awaiter(void *arg, void **result)
{
    (void)result;
    struct awaiter *a = arg;
    cio_task_t *t;
    ck_assert_int_eq(cio_spawn(&t, body_slow_cleanup, &a->inner), 0);
    a->rc = cio_await(t, NULL);
    a->inner_finished_at_return = a->inner.finished;
    cio_future_release(t);
    return a->rc;
}

static int main_await_waits_for_cleanup(void *arg, void **result)
{
    (void)arg;
    (void)result;
    struct awaiter a;
    memset(&a, 0, sizeof a);
    cio_task_t *t;
    ck_assert_int_eq(cio_spawn(&t, body_awaiter, &a), 0);
    ck_assert_int_eq(cio_sleep(0.01), 0);
    ck_assert_int_eq(cio_task_cancel(t), 1);
    ck_assert_int_eq(cio_await(t, NULL), -ECANCELED);
    ck_assert_int_eq(a.rc, -ECANCELED);
    ck_assert_int_eq(a.inner.rc_sleep, -ECANCELED);
    ck_assert_int_eq(a.inner.cleanup_rc, 0);
    ck_assert_int_eq(a.inner_finished_at_return, 1);
    cio_future_release(t);
    return 0;
}

START_TEST(task_cancel_waits_for_awaited_cleanup)
{
    RUN_MAIN(main_await_waits_for_cleanup, NULL);
}
END_TEST

/* A cancel request is never lost, even when it races with the wake-up of
 * the await point (timer firing in the same iteration, future completed
 * just before): either that await point or the next one reports it. */
struct race {
    int r1, r2;
    cio_task_t *t;
    cio_future_t *f;
    int finished;
};

static int body_race_sleep(void *arg, void **result)
{
    (void)result;
    struct race *r = arg;
    r->r1 = cio_sleep(0.02);
    r->r2 = cio_sleep(10);
    r->finished = 1;
    return 0;
}

static int body_race_future(void *arg, void **result)
{
    (void)result;
    struct race *r = arg;
    r->r1 = cio_await(r->f, NULL);
    r->r2 = cio_sleep(10);
    r->finished = 1;
    return 0;
}

static void cb_race_cancel(void *arg)
{
    struct race *r = arg;
    cio_task_cancel(r->t);
}

static void cb_race_complete_then_cancel(void *arg)
{
    struct race *r = arg;
    ck_assert_int_eq(cio_future_set_result(r->f, NULL), 0);
    cio_task_cancel(r->t);
}

static int main_cancel_race(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_loop_t *l = cio_get_running_loop();
    for (int k = 0; k < 40; k++) {
        struct race r;
        memset(&r, 0, sizeof r);
        r.r1 = r.r2 = 12345;
        if (k % 2 == 0) {
            /* The cancelling timer is due around the sleep's own timer. */
            ck_assert_int_eq(cio_spawn(&r.t, body_race_sleep, &r), 0);
            ck_assert_int_eq(cio_call_later(l, NULL, 0.02 + (k / 2 - 10) * 0.0001, cb_race_cancel, &r), 0);
        } else {
            ck_assert_int_eq(cio_future_new(&r.f, NULL), 0);
            ck_assert_int_eq(cio_spawn(&r.t, body_race_future, &r), 0);
            ck_assert_int_eq(cio_call_later(l, NULL, 0.005, cb_race_complete_then_cancel, &r), 0);
        }
        double w0 = mono_now();
        cio_await(r.t, NULL);
        ck_assert_double_lt(mono_now() - w0, HANG_BOUND_S);
        ck_assert(r.finished);
        ck_assert_msg(r.r1 == -ECANCELED || (r.r1 == 0 && r.r2 == -ECANCELED),
                      "cancellation lost: r1=%d r2=%d (round %d)", r.r1, r.r2, k);
        cio_future_release(r.t);
        cio_future_release(r.f);
    }
    return 0;
}

START_TEST(task_cancel_never_lost)
{
    RUN_MAIN(main_cancel_race, NULL);
}
END_TEST

static int body_sleep_forever(void *arg, void **result)
{
    (void)result;
    int *rc = arg;
    rc[0] = cio_sleep(INFINITY);
    rc[1] = cio_sleep_until_ns(INT64_MAX);
    rc[2] = cio_sleep(1e300);
    return rc[0];
}

static int main_sleep_forever(void *arg, void **result)
{
    (void)arg;
    (void)result;
    int rc[3] = {1, 1, 1};
    cio_task_t *t;
    ck_assert_int_eq(cio_spawn(&t, body_sleep_forever, rc), 0);
    ck_assert_int_eq(cio_sleep(0.01), 0);
    ck_assert_int_eq(rc[0], 1);
    ck_assert_int_eq(cio_task_cancel(t), 1);
    ck_assert_int_eq(cio_await(t, NULL), -ECANCELED);
    ck_assert_int_eq(rc[0], -ECANCELED);
    ck_assert_int_eq(rc[1], -ECANCELED);
    ck_assert_int_eq(rc[2], -ECANCELED);
    cio_future_release(t);
    return 0;
}

START_TEST(task_sleep_forever_cancelled)
{
    RUN_MAIN(main_sleep_forever, NULL);
}
END_TEST

/* cio_future_cancel on a task is cio_task_cancel. */
static int main_future_cancel_task(void *arg, void **result)
{
    (void)arg;
    (void)result;
    struct sleeper s = {.n = 1, .delay = 10, .rc = {1}};
    cio_task_t *t;
    ck_assert_int_eq(cio_spawn(&t, body_sleeper, &s), 0);
    ck_assert_int_eq(cio_sleep(0.01), 0);
    ck_assert_int_eq(cio_future_cancel(t), 1);
    ck_assert(cio_task_cancelling(t));
    ck_assert_int_eq(cio_await(t, NULL), -ECANCELED);
    ck_assert_int_eq(s.rc[0], -ECANCELED);
    ck_assert(cio_future_cancelled(t));
    ck_assert_int_eq(cio_future_cancel(t), 0);
    cio_future_release(t);
    return 0;
}

START_TEST(task_future_cancel_on_task)
{
    RUN_MAIN(main_future_cancel_task, NULL);
}
END_TEST

/* Awaiting through cio_shield: the outer wait is cancelled, the inner task
 * is not. */
struct shielded {
    struct sleeper inner;
    cio_task_t *inner_t;
    cio_future_t *shield;
    int outer_rc;
    bool inner_done_at_return;
};

static int body_outer_shield(void *arg, void **result)
{
    (void)result;
    struct shielded *c = arg;
    ck_assert_int_eq(cio_spawn(&c->inner_t, body_sleeper, &c->inner), 0);
    ck_assert_ptr_nonnull(c->inner_t);
    ck_assert_int_eq(cio_shield(&c->shield, c->inner_t), 0);
    ck_assert_ptr_nonnull(c->shield);
    c->outer_rc = cio_await(c->shield, NULL);
    c->inner_done_at_return = cio_future_done(c->inner_t);
    return c->outer_rc;
}

static int main_shield(void *arg, void **result)
{
    (void)arg;
    (void)result;
    struct shielded c;
    memset(&c, 0, sizeof c);
    c.inner.n = 1;
    c.inner.delay = 0.2;
    c.inner.rc[0] = 12345;
    cio_task_t *outer;
    ck_assert_int_eq(cio_spawn(&outer, body_outer_shield, &c), 0);
    ck_assert_ptr_nonnull(outer);
    ck_assert_int_eq(cio_sleep(0.02), 0);
    ck_assert_int_eq(cio_task_cancel(outer), 1);
    ck_assert_int_eq(cio_await(outer, NULL), -ECANCELED);
    ck_assert_int_eq(c.outer_rc, -ECANCELED);
    ck_assert(!c.inner_done_at_return);
    ck_assert(cio_future_cancelled(c.shield));
    ck_assert(!cio_task_cancelling(c.inner_t));
    /* The inner task runs to its normal end. */
    ck_assert_int_eq(cio_await(c.inner_t, NULL), 0);
    ck_assert_int_eq(c.inner.rc[0], 0);
    ck_assert(!cio_future_cancelled(c.inner_t));
    cio_future_release(c.shield);
    cio_future_release(c.inner_t);
    cio_future_release(outer);

    /* Uncancelled: the shield completes with the inner outcome. */
    cio_task_t *t;
    ck_assert_int_eq(cio_spawn(&t, body_value, &marker_a), 0);
    cio_future_t *sh;
    ck_assert_int_eq(cio_shield(&sh, t), 0);
    ck_assert_ptr_nonnull(sh);
    void *r = NULL;
    ck_assert_int_eq(cio_await(sh, &r), 0);
    ck_assert_ptr_eq(r, &marker_a);
    cio_future_release(sh);
    cio_future_release(t);
    ck_assert_int_eq(cio_spawn(&t, body_fail, NULL), 0);
    ck_assert_int_eq(cio_shield(&sh, t), 0);
    ck_assert_ptr_nonnull(sh);
    ck_assert_int_eq(cio_await(sh, NULL), -EPIPE);
    cio_future_release(sh);
    cio_future_release(t);
    return 0;
}

START_TEST(task_await_shield)
{
    RUN_MAIN(main_shield, NULL);
}
END_TEST

static int main_await_self(void *arg, void **result)
{
    (void)arg;
    (void)result;
    ck_assert_int_eq(cio_await(cio_current_task(), NULL), -EDEADLK);
    ck_assert_int_eq(cio_await(NULL, NULL), -EINVAL);
    /* Still usable afterwards. */
    ck_assert_int_eq(cio_sleep(0), 0);
    return 0;
}

START_TEST(task_await_self)
{
    RUN_MAIN(main_await_self, NULL);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Yield interleaving                                                         */
/* ------------------------------------------------------------------------ */

struct interleave {
    char log[16];
    int n;
};

struct ilv_arg {
    struct interleave *il;
    char id;
};

static int body_interleave(void *arg, void **result)
{
    (void)result;
    struct ilv_arg *a = arg;
    for (int i = 0; i < 3; i++) {
        a->il->log[a->il->n++] = a->id;
        ck_assert_int_eq(cio_yield(), 0);
    }
    return 0;
}

static int main_interleave(void *arg, void **result)
{
    (void)arg;
    (void)result;
    struct interleave il;
    memset(&il, 0, sizeof il);
    struct ilv_arg a = {&il, 'A'}, b = {&il, 'B'};
    cio_task_t *ta;
    ck_assert_int_eq(cio_spawn(&ta, body_interleave, &a), 0);
    cio_task_t *tb;
    ck_assert_int_eq(cio_spawn(&tb, body_interleave, &b), 0);
    ck_assert_int_eq(cio_await(ta, NULL), 0);
    ck_assert_int_eq(cio_await(tb, NULL), 0);
    ck_assert_str_eq(il.log, "ABABAB");
    cio_future_release(ta);
    cio_future_release(tb);
    return 0;
}

START_TEST(task_yield_interleaves)
{
    RUN_MAIN(main_interleave, NULL);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* cio_dump_tasks                                                             */
/* ------------------------------------------------------------------------ */

static int body_wait_future(void *arg, void **result)
{
    (void)result;
    return cio_await(arg, NULL);
}

/* Returns how many lines of buf contain needle; *line gets the last one. */
static int lines_with(const char *buf, const char *needle, const char **line)
{
    int n = 0;
    const char *p = buf;
    while (*p) {
        const char *e = strchr(p, '\n');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        char tmp[1024];
        size_t l = len < sizeof tmp - 1 ? len : sizeof tmp - 1;
        memcpy(tmp, p, l);
        tmp[l] = 0;
        if (strstr(tmp, needle)) {
            n++;
            if (line)
                *line = p;
        }
        p += len + (e ? 1 : 0);
    }
    return n;
}

static bool line_has(const char *line, const char *word)
{
    const char *e = strchr(line, '\n');
    size_t len = e ? (size_t)(e - line) : strlen(line);
    char tmp[1024];
    size_t l = len < sizeof tmp - 1 ? len : sizeof tmp - 1;
    memcpy(tmp, line, l);
    tmp[l] = 0;
    return strstr(tmp, word) != NULL;
}

static int main_dump(void *arg, void **result)
{
    (void)arg;
    (void)result;
    double d = 10;
    cio_task_t *a;
    ck_assert_int_eq(cio_spawn_named(&a, "dump-alpha", body_sleep_arg, &d), 0);
    cio_future_t *f;
    ck_assert_int_eq(cio_future_new(&f, NULL), 0);
    cio_task_t *b;
    ck_assert_int_eq(cio_spawn_named(&b, "dump-beta", body_wait_future, f), 0);
    cio_task_t *gone;
    ck_assert_int_eq(cio_spawn_named(&gone, "dump-gone", body_value, NULL), 0);
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(b);
    ck_assert_ptr_nonnull(gone);
    ck_assert_int_eq(cio_sleep(0.02), 0);
    ck_assert(cio_future_done(gone));

    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    ck_assert_ptr_nonnull(out);
    ck_assert_int_eq(cio_dump_tasks(NULL, out), 0);
    ck_assert_int_eq(fclose(out), 0);
    ck_assert_ptr_nonnull(buf);
    const char *la = NULL, *lb = NULL, *lm = NULL;
    ck_assert_msg(lines_with(buf, "dump-alpha", &la) == 1, "dump:\n%s", buf);
    ck_assert_msg(lines_with(buf, "dump-beta", &lb) == 1, "dump:\n%s", buf);
    ck_assert_msg(lines_with(buf, "main", &lm) == 1, "dump:\n%s", buf);
    ck_assert_msg(lines_with(buf, "dump-gone", NULL) == 0, "dump:\n%s", buf);
    ck_assert_ptr_ne(la, lb);
    ck_assert_msg(line_has(la, "waiting"), "dump:\n%s", buf);
    ck_assert_msg(line_has(lb, "waiting"), "dump:\n%s", buf);
    ck_assert_msg(line_has(lm, "running"), "dump:\n%s", buf);
    /* One line per unfinished task: main, alpha, beta. */
    ck_assert_msg(lines_with(buf, "", NULL) == 3, "dump:\n%s", buf);
    free(buf);

    /* The explicit-loop form and fmemopen give the same names. */
    char fixed[4096];
    memset(fixed, 0, sizeof fixed);
    out = fmemopen(fixed, sizeof fixed - 1, "w");
    ck_assert_ptr_nonnull(out);
    ck_assert_int_eq(cio_dump_tasks(cio_get_running_loop(), out), 0);
    ck_assert_int_eq(fclose(out), 0);
    ck_assert_ptr_nonnull(strstr(fixed, "dump-alpha"));
    ck_assert_ptr_nonnull(strstr(fixed, "dump-beta"));

    ck_assert_int_eq(cio_task_cancel(a), 1);
    ck_assert_int_eq(cio_future_set_result(f, NULL), 0);
    ck_assert_int_eq(cio_await(a, NULL), -ECANCELED);
    ck_assert_int_eq(cio_await(b, NULL), 0);
    cio_future_release(a);
    cio_future_release(b);
    cio_future_release(gone);
    cio_future_release(f);
    return 0;
}

START_TEST(task_dump_created)
{
    cio_loop_t *l = NULL;
    ck_assert_int_eq(cio_loop_new(&l), 0);
    cio_spawn_opts_t o = {.name = "dump-created"};
    cio_task_t *t;
    ck_assert_int_eq(cio_spawn_ex(&t, l, body_value, NULL, &o), 0);
    ck_assert_ptr_nonnull(t);
    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    ck_assert_int_eq(cio_dump_tasks(l, out), 0);
    ck_assert_int_eq(fclose(out), 0);
    const char *line = NULL;
    ck_assert_msg(lines_with(buf, "dump-created", &line) == 1, "dump:\n%s", buf);
    ck_assert_msg(line_has(line, "created"), "dump:\n%s", buf);
    ck_assert_msg(lines_with(buf, "", NULL) == 1, "dump:\n%s", buf);
    free(buf);
    ck_assert_int_eq(cio_loop_run_until_complete(l, t, NULL), 0);
    cio_future_release(t);
    close_free(l);
}
END_TEST

START_TEST(task_dump_tasks)
{
    RUN_MAIN(main_dump, NULL);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* cio_run, cio_run_ex, cio_runner                                            */
/* ------------------------------------------------------------------------ */

static int main_status(void *arg, void **result)
{
    *result = &marker_a;
    return *(int *)arg;
}

static int main_nested_run(void *arg, void **result)
{
    (void)arg;
    (void)result;
    ck_assert_int_eq(cio_run(body_value, NULL), -EBUSY);
    return 0;
}

START_TEST(task_run_status)
{
    int st = -EPIPE;
    ck_assert_int_eq(cio_run(main_status, &st), -EPIPE);
    st = 3;
    ck_assert_int_eq(cio_run(main_status, &st), 3);
    st = 0;
    void *r = NULL;
    ck_assert_int_eq(cio_run_ex(main_status, &st, &r, NULL), 0);
    ck_assert_ptr_eq(r, &marker_a);
    r = NULL;
    st = -ENOENT;
    ck_assert_int_eq(cio_run_ex(main_status, &st, &r, NULL), -ENOENT);
    ck_assert_int_eq(cio_run(main_nested_run, NULL), 0);
    ck_assert_ptr_null(cio_get_running_loop());
}
END_TEST

struct runner_state {
    cio_runner_t *runner;
    int nested_rc;
    cio_loop_t *loop1, *loop2;
    struct sleeper bg;
};

static int runner_fn1(void *arg, void **result)
{
    struct runner_state *s = arg;
    s->loop1 = cio_get_running_loop();
    /* Leave a background task behind. */
    cio_task_t *t;
    ck_assert_int_eq(cio_spawn_named(&t, "background", body_sleeper, &s->bg), 0);
    ck_assert_ptr_nonnull(t);
    cio_future_release(t);
    *result = &marker_a;
    return 0;
}

static int runner_fn2(void *arg, void **result)
{
    struct runner_state *s = arg;
    s->loop2 = cio_get_running_loop();
    /* Re-entering the runner from inside it is refused. */
    s->nested_rc = cio_runner_run(s->runner, body_value, NULL, NULL);
    *result = &marker_b;
    return -EIO;
}

START_TEST(task_runner_two_calls)
{
    struct runner_state s;
    memset(&s, 0, sizeof s);
    s.bg.n = 1;
    s.bg.delay = 10;
    s.bg.rc[0] = 12345;
    cio_runner_t *r = NULL;
    ck_assert_int_eq(cio_runner_new(&r, NULL), 0);
    ck_assert_ptr_nonnull(r);
    s.runner = r;
    cio_loop_t *l = cio_runner_get_loop(r);
    ck_assert_ptr_nonnull(l);
    void *res = NULL;
    ck_assert_int_eq(cio_runner_run(r, runner_fn1, &s, &res), 0);
    ck_assert_ptr_eq(res, &marker_a);
    res = NULL;
    ck_assert_int_eq(cio_runner_run(r, runner_fn2, &s, &res), -EIO);
    ck_assert_ptr_eq(res, &marker_b);
    ck_assert_int_eq(s.nested_rc, -EBUSY);
    ck_assert_ptr_eq(s.loop1, l);
    ck_assert_ptr_eq(s.loop2, l);
    ck_assert_ptr_null(cio_get_running_loop());
    /* Closing cancels the leftover background task and waits for it. */
    double w0 = mono_now();
    ck_assert_int_eq(cio_runner_close(r), 0);
    ck_assert_double_lt(mono_now() - w0, HANG_BOUND_S);
    ck_assert(s.bg.finished);
    ck_assert_int_eq(s.bg.rc[0], -ECANCELED);
    ck_assert_int_eq(cio_runner_close(NULL), 0);
}
END_TEST

/* A main task that keeps a future of the loop referenced past its end. */
static int main_leak_future(void *arg, void **result)
{
    (void)result;
    ck_assert_int_eq(cio_future_new(arg, NULL), 0);
    return 0;
}

/*
 * cio_runner_close refuses (-EBUSY) while a future of its loop is still
 * referenced, and frees nothing: the loop stays the runner's (closed: new
 * runs are refused with -ESHUTDOWN). Once the future is released, closing
 * again frees everything.
 */
START_TEST(task_runner_close_busy)
{
    cio_runner_t *r = NOT_SET;
    cio_run_opts_t bad = {.reserved_ = {&bad, NULL}};
    ck_assert_int_eq(cio_runner_new(&r, &bad), -EINVAL);
    ck_assert_ptr_null(r);
    ck_assert_int_eq(cio_runner_new(NULL, NULL), -EINVAL);

    ck_assert_int_eq(cio_runner_new(&r, NULL), 0);
    cio_future_t *kept = NULL;
    ck_assert_int_eq(cio_runner_run(r, main_leak_future, &kept, NULL), 0);
    ck_assert_ptr_nonnull(kept);
    cio_loop_t *l = cio_runner_get_loop(r);
    ck_assert_int_eq(cio_runner_close(r), -EBUSY);
    ck_assert_ptr_eq(cio_runner_get_loop(r), l); /* nothing was freed */
    ck_assert(cio_loop_is_closed(l));
    ck_assert_int_eq(cio_runner_run(r, body_value, NULL, NULL), -ESHUTDOWN);
    ck_assert_int_eq(cio_runner_close(r), -EBUSY); /* still referenced */
    cio_future_release(kept);
    ck_assert_int_eq(cio_runner_close(r), 0);
}
END_TEST

static Suite *task_suite(void)
{
    Suite *s = suite_create("task");
    TCase *tc = add_tcase(s, "basics", TEST_TIMEOUT);
    tcase_add_test(tc, task_spawn_await);
    tcase_add_test(tc, task_starts_later);
    tcase_add_test(tc, task_release_early);
    tcase_add_test(tc, task_spawn_fire_and_forget);
    tcase_add_test(tc, task_spawn_bad_arguments);
    tcase_add_test(tc, task_spawn_outside_loop);
    tcase_add_test(tc, task_spawn_from_callback);
    tcase_add_test(tc, task_sleep_not_early);
    tcase_add_test(tc, task_names_current);
    tcase_add_test(tc, task_run_named_main);
    tcase_add_test(tc, task_all_tasks);
    tcase_add_test(tc, task_done_callbacks);
    tcase_add_test(tc, task_done_callback_after_completion);
    tcase_add_test(tc, task_await_self);
    tcase_add_test(tc, task_yield_interleaves);
    tcase_add_test(tc, task_dump_tasks);
    tcase_add_test(tc, task_dump_created);

    tc = add_tcase(s, "cancel", TEST_TIMEOUT);
    tcase_add_test(tc, task_cancel_sleeping);
    tcase_add_test(tc, task_cancel_level_triggered);
    tcase_add_test(tc, task_run_cancels_leftover_stubborn);
    tcase_add_test(tc, task_shutdown_stubborn);
    tcase_add_test(tc, task_cancel_before_start);
    tcase_add_test(tc, task_cancel_propagates_to_awaited);
    tcase_add_test(tc, task_await_shield);
    tcase_add_test(tc, task_cancel_waits_for_awaited_cleanup);
    tcase_add_test(tc, task_future_cancel_on_task);
    tcase_add_test(tc, task_cancel_never_lost);
    tcase_add_test(tc, task_sleep_forever_cancelled);

    tc = add_tcase(s, "run", TEST_TIMEOUT);
    tcase_add_test(tc, task_run_status);
    tcase_add_test(tc, task_runner_two_calls);
    tcase_add_test(tc, task_runner_close_busy);
    return s;
}

CIO_TEST_MAIN(task_suite)
