/*
 * Event loop: lifecycle, call_soon / call_later / call_at, handles, fd
 * watchers, cio_wait_fd, close/shutdown and argument errors.
 */
#include "cio_test.h"

#include <math.h>

#include <fcntl.h>
#include <limits.h>
#include <sys/socket.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* Small callbacks                                                           */
/* ------------------------------------------------------------------------ */

static void cb_stop(void *arg)
{
    cio_loop_stop(arg);
}

static void cb_inc(void *arg)
{
    ++*(int *)arg;
}

static void cb_set_result(void *arg)
{
    static int marker;
    ck_assert_int_eq(cio_future_set_result(arg, &marker), 0);
}

static void cb_set_epipe(void *arg)
{
    ck_assert_int_eq(cio_future_set_error(arg, -EPIPE), 0);
}

static void close_loop(cio_loop_t *l)
{
    close_free(l);
}

/* Runs the loop until a callback scheduled `delay` seconds from now stops it. */
static void run_for(cio_loop_t *l, double delay)
{
    ck_assert_int_eq(cio_call_later(l, NULL, delay, cb_stop, l), 0);
    ck_assert_int_eq(cio_loop_run_forever(l), 0);
}

/* ------------------------------------------------------------------------ */
/* Lifecycle                                                                 */
/* ------------------------------------------------------------------------ */

START_TEST(loop_new_close)
{
    ck_assert_int_eq(cio_loop_new(NULL), -EINVAL);
    cio_loop_t *l = new_loop();
    ck_assert(!cio_loop_is_running(l));
    ck_assert(!cio_loop_is_closed(l));
    ck_assert_ptr_null(cio_get_running_loop());
    close_loop(l);
    ck_assert_int_eq(cio_loop_close(NULL), 0);
    ck_assert_int_eq(cio_loop_free(NULL), 0);
    /* Freeing an open, idle loop closes it first. */
    ck_assert_int_eq(cio_loop_new(&l), 0);
    ck_assert_int_eq(cio_loop_free(l), 0);
}
END_TEST

struct running_probe {
    cio_loop_t *loop;
    int calls;
    bool running;
    cio_loop_t *seen;
    int nested_rc;
    int other_rc;
    cio_loop_t *other;
};

static void cb_probe(void *arg)
{
    struct running_probe *p = arg;
    p->calls++;
    p->running = cio_loop_is_running(p->loop);
    p->seen = cio_get_running_loop();
    /* Re-entering the loop, or running a second loop in the same thread. */
    p->nested_rc = cio_loop_run_forever(p->loop);
    p->other_rc = cio_loop_run_forever(p->other);
    cio_loop_stop(p->loop);
}

START_TEST(loop_run_forever_stop)
{
    struct running_probe p = {0};
    p.loop = new_loop();
    p.other = new_loop();
    ck_assert_int_eq(cio_call_soon(p.loop, NULL, cb_probe, &p), 0);
    ck_assert_int_eq(cio_loop_run_forever(p.loop), 0);
    ck_assert_int_eq(p.calls, 1);
    ck_assert(p.running);
    ck_assert_ptr_eq(p.seen, p.loop);
    ck_assert_int_eq(p.nested_rc, -EBUSY);
    ck_assert_int_eq(p.other_rc, -EBUSY);
    ck_assert(!cio_loop_is_running(p.loop));
    ck_assert_ptr_null(cio_get_running_loop());
    /* The loop can run again after a stop. */
    int n = 0;
    ck_assert_int_eq(cio_call_soon(p.loop, NULL, cb_inc, &n), 0);
    run_for(p.loop, 0);
    ck_assert_int_eq(n, 1);
    close_loop(p.other);
    close_loop(p.loop);
}
END_TEST

START_TEST(loop_time_monotonic)
{
    cio_loop_t *l = new_loop();
    double t0 = cio_loop_time(l);
    int64_t n0 = cio_loop_time_ns(l);
    ck_assert_double_ge(t0, 0.0);
    /* Seconds and nanoseconds are the same clock. */
    ck_assert_double_le(fabs(t0 - (double)n0 / 1e9), 1.0);
    run_for(l, D_SHORT);
    double t1 = cio_loop_time(l);
    int64_t n1 = cio_loop_time_ns(l);
    ck_assert_double_ge(t1 - t0, D_SHORT);
    ck_assert_int_ge(n1 - n0, NS_SHORT);
    close_loop(l);
}
END_TEST

/* cio_loop_time_ns is documented as cached once per loop iteration: two
 * reads inside one callback agree, and the next iteration moves on. */
struct cached_probe {
    cio_loop_t *loop;
    int64_t t1, t2, t3;
};

static void cb_read_twice(void *arg)
{
    struct cached_probe *p = arg;
    p->t1 = cio_loop_time_ns(p->loop);
    double w0 = mono_now();
    while (mono_now() - w0 < 0.002)
        ;
    p->t2 = cio_loop_time_ns(p->loop);
}

static void cb_read_later(void *arg)
{
    struct cached_probe *p = arg;
    p->t3 = cio_loop_time_ns(p->loop);
    cio_loop_stop(p->loop);
}

START_TEST(loop_time_ns_cached_per_iteration)
{
    struct cached_probe p = {.loop = new_loop()};
    ck_assert_int_eq(cio_call_soon(p.loop, NULL, cb_read_twice, &p), 0);
    ck_assert_int_eq(cio_call_later(p.loop, NULL, 0.01, cb_read_later, &p), 0);
    ck_assert_int_eq(cio_loop_run_forever(p.loop), 0);
    ck_assert_int_eq(p.t2, p.t1);
    ck_assert_int_ge(p.t3 - p.t1, 2000000LL);
    close_loop(p.loop);
}
END_TEST

START_TEST(loop_run_until_complete_result)
{
    cio_loop_t *l = new_loop();
    cio_future_t *f;
    ck_assert_int_eq(cio_future_new(&f, l), 0);
    ck_assert_ptr_nonnull(f);
    /* Read the clock before arming: the deadline counts from the arming. */
    int64_t t0 = cio_loop_time_ns(l);
    ck_assert_int_eq(cio_call_later(l, NULL, D_SHORT, cb_set_result, f), 0);
    void *res = NULL;
    ck_assert_int_eq(cio_loop_run_until_complete(l, f, &res), 0);
    ck_assert_int_ge(cio_loop_time_ns(l) - t0, NS_SHORT);
    ck_assert_ptr_nonnull(res);
    ck_assert(cio_future_done(f));
    ck_assert(!cio_loop_is_running(l));
    /* Already done: returns at once with the same outcome. */
    void *res2 = NULL;
    ck_assert_int_eq(cio_loop_run_until_complete(l, f, &res2), 0);
    ck_assert_ptr_eq(res2, res);
    /* result may be NULL. */
    ck_assert_int_eq(cio_loop_run_until_complete(l, f, NULL), 0);
    cio_future_release(f);
    close_loop(l);
}
END_TEST

START_TEST(loop_run_until_complete_error)
{
    cio_loop_t *l = new_loop();
    cio_future_t *f;
    ck_assert_int_eq(cio_future_new(&f, l), 0);
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(cio_call_later(l, NULL, 0.001, cb_set_epipe, f), 0);
    ck_assert_int_eq(cio_loop_run_until_complete(l, f, NULL), -EPIPE);
    cio_future_release(f);
    close_loop(l);
}
END_TEST

START_TEST(loop_run_until_complete_stopped)
{
    cio_loop_t *l = new_loop();
    cio_future_t *f;
    ck_assert_int_eq(cio_future_new(&f, l), 0);
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(cio_call_later(l, NULL, 0.001, cb_stop, l), 0);
    ck_assert_int_eq(cio_loop_run_until_complete(l, f, NULL), -EINTR);
    ck_assert(!cio_future_done(f));
    ck_assert_int_eq(cio_future_cancel(f), 1);
    cio_future_release(f);
    close_loop(l);
}
END_TEST

START_TEST(loop_run_until_complete_einval)
{
    cio_loop_t *l = new_loop();
    cio_future_t *f;
    ck_assert_int_eq(cio_future_new(&f, l), 0);
    ck_assert_int_eq(cio_loop_run_until_complete(NULL, f, NULL), -EINVAL);
    ck_assert_int_eq(cio_loop_run_until_complete(l, NULL, NULL), -EINVAL);
    ck_assert_int_eq(cio_future_cancel(f), 1);
    cio_future_release(f);
    close_loop(l);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* call_soon                                                                 */
/* ------------------------------------------------------------------------ */

#define NORDER 100

struct order {
    cio_loop_t *loop;
    int log[3 * NORDER + 8];
    int n;
};

struct order_item {
    struct order *o;
    int id;
};

static void cb_log(void *arg)
{
    struct order_item *it = arg;
    it->o->log[it->o->n++] = it->id;
}

START_TEST(loop_call_soon_fifo)
{
    static struct order o;
    static struct order_item items[NORDER];
    memset(&o, 0, sizeof o);
    o.loop = new_loop();
    for (int i = 0; i < NORDER; i++) {
        items[i].o = &o;
        items[i].id = i;
        ck_assert_int_eq(cio_call_soon(o.loop, NULL, cb_log, &items[i]), 0);
    }
    ck_assert_int_eq(cio_call_soon(o.loop, NULL, cb_stop, o.loop), 0);
    ck_assert_int_eq(o.n, 0); /* nothing runs before the loop does */
    ck_assert_int_eq(cio_loop_run_forever(o.loop), 0);
    ck_assert_int_eq(o.n, NORDER);
    for (int i = 0; i < NORDER; i++)
        ck_assert_int_eq(o.log[i], i);
    close_loop(o.loop);
}
END_TEST

/* A callback scheduled from a callback runs after those already queued. */
static struct order_item late_item;

static void cb_log_and_schedule(void *arg)
{
    struct order_item *it = arg;
    cb_log(arg);
    late_item.o = it->o;
    late_item.id = 99;
    ck_assert_int_eq(cio_call_soon(it->o->loop, NULL, cb_log, &late_item), 0);
}

START_TEST(loop_call_soon_from_callback)
{
    static struct order o;
    memset(&o, 0, sizeof o);
    o.loop = new_loop();
    struct order_item a = {&o, 1}, b = {&o, 2};
    ck_assert_int_eq(cio_call_soon(o.loop, NULL, cb_log_and_schedule, &a), 0);
    ck_assert_int_eq(cio_call_soon(o.loop, NULL, cb_log, &b), 0);
    run_for(o.loop, 0.01);
    ck_assert_int_eq(o.n, 3);
    ck_assert_int_eq(o.log[0], 1);
    ck_assert_int_eq(o.log[1], 2);
    ck_assert_int_eq(o.log[2], 99);
    close_loop(o.loop);
}
END_TEST

/* stop() lets the current batch finish; callbacks scheduled by that batch
 * run on the next run (asyncio semantics: "after the current iteration"). */
struct stop_batch {
    cio_loop_t *loop;
    int ran_b, ran_c;
};

static void cb_sb_b(void *arg)
{
    ((struct stop_batch *)arg)->ran_b++;
}

static void cb_sb_c(void *arg)
{
    ((struct stop_batch *)arg)->ran_c++;
}

static void cb_sb_a(void *arg)
{
    struct stop_batch *sb = arg;
    cio_loop_stop(sb->loop);
    ck_assert_int_eq(cio_call_soon(sb->loop, NULL, cb_sb_b, sb), 0);
}

START_TEST(loop_stop_after_current_batch)
{
    struct stop_batch sb = {.loop = new_loop()};
    ck_assert_int_eq(cio_call_soon(sb.loop, NULL, cb_sb_a, &sb), 0);
    ck_assert_int_eq(cio_call_soon(sb.loop, NULL, cb_sb_c, &sb), 0);
    ck_assert_int_eq(cio_loop_run_forever(sb.loop), 0);
    ck_assert_int_eq(sb.ran_c, 1); /* same batch as the stop */
    ck_assert_int_eq(sb.ran_b, 0); /* scheduled during it: next run */
    run_for(sb.loop, 0.01);
    ck_assert_int_eq(sb.ran_b, 1);
    ck_assert_int_eq(sb.ran_c, 1);
    close_loop(sb.loop);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* call_later / call_at                                                      */
/* ------------------------------------------------------------------------ */

struct timed {
    cio_loop_t *loop;
    int64_t fired_ns;
    double fired_s;
    int count;
};

static void cb_timed(void *arg)
{
    struct timed *t = arg;
    t->fired_ns = cio_loop_time_ns(t->loop);
    t->fired_s = cio_loop_time(t->loop);
    t->count++;
}

START_TEST(loop_call_later_never_early)
{
    static const double delays[] = {0, 0.0009765625, 0.015625, D_SHORT, D_MED, 0.125};
    enum { N = sizeof delays / sizeof delays[0] };
    cio_loop_t *l = new_loop();
    struct timed t[N];
    int64_t start = cio_loop_time_ns(l);
    for (int i = 0; i < N; i++) {
        memset(&t[i], 0, sizeof t[i]);
        t[i].loop = l;
        ck_assert_int_eq(cio_call_later(l, NULL, delays[i], cb_timed, &t[i]), 0);
    }
    double wall0 = mono_now();
    run_for(l, 0.25);
    ck_assert_double_lt(mono_now() - wall0, HANG_BOUND_S);
    for (int i = 0; i < N; i++) {
        ck_assert_int_eq(t[i].count, 1);
        ck_assert_int_ge(t[i].fired_ns - start, (int64_t)(delays[i] * 1e9));
    }
    close_loop(l);
}
END_TEST

/* Huge delays are clamped (no overflow into the past), huge negative ones
 * run at once. */
START_TEST(loop_call_later_huge)
{
    cio_loop_t *l = new_loop();
    cio_handle_t h1 = CIO_HANDLE_INIT, h2 = CIO_HANDLE_INIT, h3 = CIO_HANDLE_INIT;
    int n = 0, m = 0;
    ck_assert_int_eq(cio_call_later(l, &h1, 1e300, cb_inc, &n), 0);
    ck_assert_int_eq(cio_call_later(l, &h2, INFINITY, cb_inc, &n), 0);
    ck_assert_int_eq(cio_call_at(l, &h3, 1e300, cb_inc, &n), 0);
    ck_assert_int_eq(cio_call_later(l, NULL, -1e300, cb_inc, &m), 0);
    ck_assert_int_eq(cio_call_at(l, NULL, -1e300, cb_inc, &m), 0);
    ck_assert_int_eq(cio_call_later(l, NULL, -INFINITY, cb_inc, &m), 0);
    run_for(l, 0.02);
    ck_assert_int_eq(n, 0);
    ck_assert_int_eq(m, 3);
    ck_assert(cio_handle_active(&h1));
    ck_assert_int_eq(cio_handle_cancel(&h1), 1);
    ck_assert_int_eq(cio_handle_cancel(&h2), 1);
    ck_assert_int_eq(cio_handle_cancel(&h3), 1);
    close_loop(l);
}
END_TEST

/* A time infinitely far in the past is in the past, not "no deadline". */
START_TEST(loop_call_at_minus_infinity)
{
    cio_loop_t *l = new_loop();
    cio_handle_t h = CIO_HANDLE_INIT;
    int n = 0;
    ck_assert_int_eq(cio_call_at(l, &h, -INFINITY, cb_inc, &n), 0);
    run_for(l, 0.02);
    ck_assert_int_eq(n, 1);
    ck_assert(!cio_handle_active(&h));
    cio_handle_cancel(&h);
    close_loop(l);
}
END_TEST

/* Negative delays count as 0. */
START_TEST(loop_call_later_negative)
{
    cio_loop_t *l = new_loop();
    int n = 0;
    ck_assert_int_eq(cio_call_later(l, NULL, -5.0, cb_inc, &n), 0);
    run_for(l, 0.01);
    ck_assert_int_eq(n, 1);
    close_loop(l);
}
END_TEST

/* Different deadlines fire in deadline order, whatever the insertion order. */
START_TEST(loop_call_later_sorted)
{
    static struct order o;
    static struct order_item items[10];
    memset(&o, 0, sizeof o);
    o.loop = new_loop();
    for (int i = 0; i < 10; i++) {
        items[i].o = &o;
        items[i].id = 9 - i;
        /* Scheduled latest-first: 9 fires at 90 ms ... 0 at 0 ms. */
        ck_assert_int_eq(cio_call_later(o.loop, NULL, 0.01 * (9 - i), cb_log, &items[i]), 0);
    }
    run_for(o.loop, 0.2);
    ck_assert_int_eq(o.n, 10);
    for (int i = 0; i < 10; i++)
        ck_assert_int_eq(o.log[i], i);
    close_loop(o.loop);
}
END_TEST

#define NEQ 1000

struct eq {
    cio_loop_t *loop;
    int log[2 * NEQ];
    int n;
};

struct eq_item {
    struct eq *e;
    int id;
};

static void cb_eq(void *arg)
{
    struct eq_item *it = arg;
    it->e->log[it->e->n++] = it->id;
}

START_TEST(loop_call_later_equal_fifo)
{
    static struct eq e;
    static struct eq_item items[NEQ];
    static cio_handle_t hs[NEQ];
    memset(&e, 0, sizeof e);
    e.loop = new_loop();
    for (int i = 0; i < NEQ; i++) {
        items[i].e = &e;
        items[i].id = i;
        cio_handle_t init = CIO_HANDLE_INIT;
        hs[i] = init;
        /* Half with caller handles, half loop-allocated. */
        ck_assert_int_eq(cio_call_later(e.loop, (i & 1) ? &hs[i] : NULL, 0.02, cb_eq, &items[i]), 0);
    }
    run_for(e.loop, 0.1);
    ck_assert_int_eq(e.n, NEQ);
    for (int i = 0; i < NEQ; i++)
        ck_assert_int_eq(e.log[i], i);
    for (int i = 0; i < NEQ; i++)
        ck_assert(!cio_handle_active(&hs[i]));
    close_loop(e.loop);
}
END_TEST

START_TEST(loop_call_at_equal_fifo)
{
    static struct eq e;
    static struct eq_item items[NEQ];
    memset(&e, 0, sizeof e);
    e.loop = new_loop();
    int64_t when = cio_loop_time_ns(e.loop) + 20000000;
    for (int i = 0; i < NEQ; i++) {
        items[i].e = &e;
        items[i].id = i;
        ck_assert_int_eq(cio_call_at_ns(e.loop, NULL, when, cb_eq, &items[i]), 0);
    }
    run_for(e.loop, 0.1);
    ck_assert_int_eq(e.n, NEQ);
    for (int i = 0; i < NEQ; i++)
        ck_assert_int_eq(e.log[i], i);
    close_loop(e.loop);
}
END_TEST

/* Timer heap under random deadlines and random cancellations: every timer
 * not cancelled fires exactly once, in (deadline, insertion) order; no
 * cancelled timer fires. */
#define NRAND 5000

struct rnd {
    int64_t when[NRAND];
    cio_handle_t h[NRAND];
    int fired[NRAND];
    bool cancelled[NRAND];
    int order[NRAND];
    int n;
};

struct rnd_item {
    struct rnd *r;
    int id;
};

static void cb_rnd(void *arg)
{
    struct rnd_item *it = arg;
    it->r->fired[it->id]++;
    it->r->order[it->r->n++] = it->id;
}

START_TEST(loop_timer_heap_random)
{
    static struct rnd r;
    static struct rnd_item items[NRAND];
    memset(&r, 0, sizeof r);
    cio_loop_t *l = new_loop();
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    int64_t base = cio_loop_time_ns(l) + 5000000;
    for (int i = 0; i < NRAND; i++) {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        /* 64 distinct deadlines within 40 ms: many ties. */
        r.when[i] = base + (int64_t)(seed % 64) * 625000;
        items[i].r = &r;
        items[i].id = i;
        ck_assert_int_eq(cio_call_at_ns(l, &r.h[i], r.when[i], cb_rnd, &items[i]), 0);
    }
    for (int i = 0; i < NRAND; i++) {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        if (seed % 3 == 0) {
            ck_assert_int_eq(cio_handle_cancel(&r.h[i]), 1);
            r.cancelled[i] = true;
        }
    }
    run_for(l, 0.1);
    int expected = 0;
    for (int i = 0; i < NRAND; i++) {
        ck_assert_int_eq(r.fired[i], r.cancelled[i] ? 0 : 1);
        expected += !r.cancelled[i];
        ck_assert(!cio_handle_active(&r.h[i]));
    }
    ck_assert_int_eq(r.n, expected);
    for (int k = 1; k < r.n; k++) {
        int a = r.order[k - 1], b = r.order[k];
        ck_assert_msg(r.when[a] < r.when[b] || (r.when[a] == r.when[b] && a < b),
                      "timer %d (when %lld) fired before timer %d (when %lld)", a,
                      (long long)r.when[a], b, (long long)r.when[b]);
    }
    close_loop(l);
}
END_TEST

START_TEST(loop_call_at)
{
    cio_loop_t *l = new_loop();
    struct timed t = {.loop = l}, past = {.loop = l}, ns = {.loop = l};
    double when = cio_loop_time(l) + D_MED;
    int64_t when_ns = cio_loop_time_ns(l) + NS_SHORT;
    ck_assert_int_eq(cio_call_at(l, NULL, when, cb_timed, &t), 0);
    ck_assert_int_eq(cio_call_at_ns(l, NULL, when_ns, cb_timed, &ns), 0);
    /* A time in the past runs on the next iteration. */
    ck_assert_int_eq(cio_call_at(l, NULL, cio_loop_time(l) - 10.0, cb_timed, &past), 0);
    run_for(l, 0.125);
    ck_assert_int_eq(t.count, 1);
    ck_assert_int_eq(ns.count, 1);
    ck_assert_int_eq(past.count, 1);
    ck_assert_double_ge(t.fired_s, when);
    ck_assert_int_ge(ns.fired_ns, when_ns);
    ck_assert_int_le(past.fired_ns, ns.fired_ns);
    close_loop(l);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Handles                                                                   */
/* ------------------------------------------------------------------------ */

START_TEST(loop_handle_cancel_before)
{
    cio_loop_t *l = new_loop();
    cio_handle_t ht = CIO_HANDLE_INIT, hs = CIO_HANDLE_INIT;
    int nt = 0, ns = 0;
    ck_assert(!cio_handle_active(&ht));
    ck_assert_int_eq(cio_call_later(l, &ht, D_SHORT, cb_inc, &nt), 0);
    ck_assert_int_eq(cio_call_soon(l, &hs, cb_inc, &ns), 0);
    ck_assert(cio_handle_active(&ht));
    ck_assert(cio_handle_active(&hs));
    ck_assert_int_eq(cio_handle_cancel(&ht), 1);
    ck_assert_int_eq(cio_handle_cancel(&hs), 1);
    ck_assert(!cio_handle_active(&ht));
    ck_assert(!cio_handle_active(&hs));
    ck_assert_int_eq(cio_handle_cancel(&ht), 0);
    ck_assert_int_eq(cio_handle_cancel(&hs), 0);
    run_for(l, D_MED);
    ck_assert_int_eq(nt, 0);
    ck_assert_int_eq(ns, 0);
    close_loop(l);
}
END_TEST

START_TEST(loop_handle_after_fire_and_reuse)
{
    cio_loop_t *l = new_loop();
    cio_handle_t h = CIO_HANDLE_INIT, never = CIO_HANDLE_INIT;
    int n = 0;
    ck_assert_int_eq(cio_handle_cancel(&never), 0);
    ck_assert_int_eq(cio_call_later(l, &h, 0.001, cb_inc, &n), 0);
    /* Still armed: scheduling it again is refused. */
    ck_assert_int_eq(cio_call_later(l, &h, 0.001, cb_inc, &n), -EBUSY);
    ck_assert_int_eq(cio_call_soon(l, &h, cb_inc, &n), -EBUSY);
    run_for(l, 0.02);
    ck_assert_int_eq(n, 1);
    ck_assert(!cio_handle_active(&h));
    ck_assert_int_eq(cio_handle_cancel(&h), 0);
    /* Reuse the same storage, as call_soon then as a timer. */
    ck_assert_int_eq(cio_call_soon(l, &h, cb_inc, &n), 0);
    run_for(l, 0.01);
    ck_assert_int_eq(n, 2);
    ck_assert_int_eq(cio_call_later(l, &h, 0.001, cb_inc, &n), 0);
    run_for(l, 0.02);
    ck_assert_int_eq(n, 3);
    /* Reuse after a cancel. */
    ck_assert_int_eq(cio_call_later(l, &h, 10, cb_inc, &n), 0);
    ck_assert_int_eq(cio_handle_cancel(&h), 1);
    ck_assert_int_eq(cio_call_soon(l, &h, cb_inc, &n), 0);
    run_for(l, 0.01);
    ck_assert_int_eq(n, 4);
    close_loop(l);
}
END_TEST

/* A periodic timer re-arms its own handle from inside its callback. */
struct periodic {
    cio_loop_t *loop;
    cio_handle_t h;
    int n;
    int rc;
};

static void cb_periodic(void *arg)
{
    struct periodic *p = arg;
    ck_assert(!cio_handle_active(&p->h));
    if (++p->n < 5) {
        p->rc = cio_call_later(p->loop, &p->h, 0.002, cb_periodic, p);
        ck_assert_int_eq(p->rc, 0);
    } else {
        cio_loop_stop(p->loop);
    }
}

START_TEST(loop_handle_rearm_in_callback)
{
    struct periodic p = {.loop = new_loop()};
    cio_handle_t init = CIO_HANDLE_INIT;
    p.h = init;
    ck_assert_int_eq(cio_call_later(p.loop, &p.h, 0.002, cb_periodic, &p), 0);
    ck_assert_int_eq(cio_loop_run_forever(p.loop), 0);
    ck_assert_int_eq(p.n, 5);
    close_loop(p.loop);
}
END_TEST

/* Cancelling one timer from another timer's callback at the same deadline. */
struct cancel_other {
    cio_handle_t a, b;
    int ran_b;
    int rc;
};

static void cb_cancel_b(void *arg)
{
    struct cancel_other *c = arg;
    c->rc = cio_handle_cancel(&c->b);
}

static void cb_b(void *arg)
{
    ((struct cancel_other *)arg)->ran_b = 1;
}

START_TEST(loop_handle_cancel_from_callback)
{
    cio_loop_t *l = new_loop();
    struct cancel_other c;
    memset(&c, 0, sizeof c);
    int64_t when = cio_loop_time_ns(l) + 10000000;
    ck_assert_int_eq(cio_call_at_ns(l, &c.a, when, cb_cancel_b, &c), 0);
    ck_assert_int_eq(cio_call_at_ns(l, &c.b, when, cb_b, &c), 0);
    run_for(l, 0.05);
    ck_assert_int_eq(c.rc, 1);
    ck_assert_int_eq(c.ran_b, 0);
    close_loop(l);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* fd watchers                                                                */
/* ------------------------------------------------------------------------ */

struct pipe_reader {
    cio_loop_t *loop;
    int fds[2];
    int calls;
    char got;
    int removed;
    int limit;       /* stop after this many calls without reading */
    int read_data;
};

static void cb_write_byte(void *arg)
{
    struct pipe_reader *p = arg;
    ck_assert_int_eq(write(p->fds[1], "x", 1), 1);
}

static void cb_reader(void *arg)
{
    struct pipe_reader *p = arg;
    p->calls++;
    if (p->read_data) {
        ck_assert_int_eq(read(p->fds[0], &p->got, 1), 1);
        p->removed = cio_remove_reader(p->loop, p->fds[0]);
        cio_loop_stop(p->loop);
    } else if (p->calls == p->limit) {
        p->removed = cio_remove_reader(p->loop, p->fds[0]);
        cio_loop_stop(p->loop);
    }
}

static void cb_wrong_reader(void *arg)
{
    (void)arg;
    ck_abort_msg("replaced reader must not run");
}

START_TEST(loop_add_remove_reader)
{
    struct pipe_reader p = {.loop = new_loop(), .read_data = 1};
    ck_assert_int_eq(pipe2(p.fds, O_CLOEXEC), 0);
    /* The second add replaces the first. */
    ck_assert_int_eq(cio_add_reader(p.loop, p.fds[0], cb_wrong_reader, &p), 0);
    ck_assert_int_eq(cio_add_reader(p.loop, p.fds[0], cb_reader, &p), 0);
    ck_assert_int_eq(cio_call_later(p.loop, NULL, 0.01, cb_write_byte, &p), 0);
    ck_assert_int_eq(cio_loop_run_forever(p.loop), 0);
    ck_assert_int_eq(p.calls, 1);
    ck_assert_int_eq(p.got, 'x');
    ck_assert_int_eq(p.removed, 1);
    ck_assert_int_eq(cio_remove_reader(p.loop, p.fds[0]), 0);
    /* Once removed, data arriving does not call it again. */
    ck_assert_int_eq(write(p.fds[1], "y", 1), 1);
    run_for(p.loop, 0.02);
    ck_assert_int_eq(p.calls, 1);
    close(p.fds[0]);
    close(p.fds[1]);
    close_loop(p.loop);
}
END_TEST

START_TEST(loop_reader_level_triggered)
{
    struct pipe_reader p = {.loop = new_loop(), .limit = 3};
    ck_assert_int_eq(pipe2(p.fds, O_CLOEXEC), 0);
    ck_assert_int_eq(write(p.fds[1], "z", 1), 1);
    ck_assert_int_eq(cio_add_reader(p.loop, p.fds[0], cb_reader, &p), 0);
    /* Watchdog so a missing level-triggered report cannot hang. */
    cio_handle_t wd = CIO_HANDLE_INIT;
    ck_assert_int_eq(cio_call_later(p.loop, &wd, 5, cb_stop, p.loop), 0);
    ck_assert_int_eq(cio_loop_run_forever(p.loop), 0);
    ck_assert_int_eq(p.calls, 3);
    ck_assert_int_eq(p.removed, 1);
    ck_assert_int_eq(cio_handle_cancel(&wd), 1);
    close(p.fds[0]);
    close(p.fds[1]);
    close_loop(p.loop);
}
END_TEST

struct writer_probe {
    cio_loop_t *loop;
    int fd;
    int calls;
    int removed;
};

static void cb_writer(void *arg)
{
    struct writer_probe *w = arg;
    w->calls++;
    w->removed = cio_remove_writer(w->loop, w->fd);
    cio_loop_stop(w->loop);
}

START_TEST(loop_add_writer)
{
    int fds[2];
    ck_assert_int_eq(pipe2(fds, O_CLOEXEC), 0);
    struct writer_probe w = {.loop = new_loop(), .fd = fds[1]};
    ck_assert_int_eq(cio_add_writer(w.loop, fds[1], cb_writer, &w), 0);
    cio_handle_t wd = CIO_HANDLE_INIT;
    ck_assert_int_eq(cio_call_later(w.loop, &wd, 5, cb_stop, w.loop), 0);
    ck_assert_int_eq(cio_loop_run_forever(w.loop), 0);
    ck_assert_int_eq(w.calls, 1);
    ck_assert_int_eq(w.removed, 1);
    ck_assert_int_eq(cio_remove_writer(w.loop, fds[1]), 0);
    ck_assert_int_eq(cio_handle_cancel(&wd), 1);
    close(fds[0]);
    close(fds[1]);
    close_loop(w.loop);
}
END_TEST

START_TEST(loop_fd_watcher_errors)
{
    cio_loop_t *l = new_loop();
    int fds[2];
    ck_assert_int_eq(pipe2(fds, O_CLOEXEC), 0);
    ck_assert_int_eq(cio_add_reader(l, -1, cb_inc, NULL), -EINVAL);
    ck_assert_int_eq(cio_add_reader(l, fds[0], NULL, NULL), -EINVAL);
    ck_assert_int_eq(cio_add_writer(l, -1, cb_inc, NULL), -EINVAL);
    ck_assert_int_eq(cio_add_writer(l, fds[1], NULL, NULL), -EINVAL);
    /* epoll refuses regular files; io_uring reports them always ready, as
     * poll(2) does. */
    char path[] = "/tmp/cio-test-XXXXXX";
    int reg = mkstemp(path);
    ck_assert_int_ge(reg, 0);
    unlink(path);
    if (strcmp(cio_loop_backend(l), "epoll") == 0) {
        ck_assert_int_eq(cio_add_reader(l, reg, cb_inc, NULL), -EPERM);
        ck_assert_int_eq(cio_remove_reader(l, reg), 0);
    } else {
        ck_assert_int_eq(cio_add_reader(l, reg, cb_inc, NULL), 0);
        ck_assert_int_eq(cio_remove_reader(l, reg), 1);
    }
    /* A number no fd has is refused at once, whatever its size. */
    ck_assert_int_eq(cio_add_reader(l, 1 << 29, cb_inc, NULL), -EBADF);
    ck_assert_int_eq(cio_add_reader(l, INT_MAX, cb_inc, NULL), -EBADF);
    ck_assert_int_eq(cio_remove_reader(l, fds[0]), 0);
    ck_assert_int_eq(cio_remove_writer(l, fds[1]), 0);
    close(reg);
    close(fds[0]);
    close(fds[1]);
    close_loop(l);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* cio_wait_fd                                                               */
/* ------------------------------------------------------------------------ */

struct waitfd {
    int fds[2];
    int rc_read, rc_write, rc_busy, rc_bad;
    char got;
};

static void cb_write_fd(void *arg)
{
    int *fd = arg;
    ck_assert_int_eq(write(*fd, "w", 1), 1);
}

static int waitfd_second(void *arg, void **result)
{
    (void)result;
    struct waitfd *w = arg;
    w->rc_busy = cio_wait_fd(w->fds[0], CIO_READABLE);
    return 0;
}

static int waitfd_main(void *arg, void **result)
{
    (void)result;
    struct waitfd *w = arg;
    ck_assert_int_eq(pipe2(w->fds, O_CLOEXEC), 0);
    /* Writable at once. */
    w->rc_write = cio_wait_fd(w->fds[1], CIO_WRITABLE);
    ck_assert_int_eq(w->rc_write, CIO_WRITABLE);
    /* A second waiter on the same fd and direction is refused. */
    cio_task_t *t;
    ck_assert_int_eq(cio_spawn(&t, waitfd_second, w), 0);
    ck_assert_ptr_nonnull(t);
    /* Read the clock before arming: the deadline counts from the arming. */
    int64_t t0 = loop_ns();
    ck_assert_int_eq(cio_call_later(cio_get_running_loop(), NULL, D_SHORT, cb_write_fd, &w->fds[1]), 0);
    w->rc_read = cio_wait_fd(w->fds[0], CIO_READABLE);
    ck_assert_int_eq(w->rc_read, CIO_READABLE);
    ck_assert_int_ge(loop_ns() - t0, NS_SHORT);
    ck_assert_int_eq(cio_await(t, NULL), 0);
    cio_future_release(t);
    ck_assert_int_eq(w->rc_busy, -EBUSY);
    ck_assert_int_eq(read(w->fds[0], &w->got, 1), 1);
    ck_assert_int_eq(w->got, 'w');
    w->rc_bad = cio_wait_fd(-1, CIO_READABLE);
    ck_assert_int_eq(w->rc_bad, -EINVAL);
    /* Once our wait is over, the fd can be waited on again. */
    ck_assert_int_eq(write(w->fds[1], "v", 1), 1);
    ck_assert_int_eq(cio_wait_fd(w->fds[0], CIO_READABLE), CIO_READABLE);
    close(w->fds[0]);
    close(w->fds[1]);
    return 0;
}

/* Both directions at once, and one task per direction on the same fd. */
struct fd_dirs {
    int sv[2];
    int rc_both;
    int rc_read, rc_write;
};

static int body_wait_read(void *arg, void **result)
{
    (void)result;
    struct fd_dirs *d = arg;
    d->rc_read = cio_wait_fd(d->sv[0], CIO_READABLE);
    return 0;
}

static int body_wait_write(void *arg, void **result)
{
    (void)result;
    struct fd_dirs *d = arg;
    d->rc_write = cio_wait_fd(d->sv[0], CIO_WRITABLE);
    return 0;
}

static void cb_write_sv(void *arg)
{
    struct fd_dirs *d = arg;
    ck_assert_int_eq(write(d->sv[1], "q", 1), 1);
}

static int main_fd_dirs(void *arg, void **result)
{
    (void)result;
    struct fd_dirs *d = arg;
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, d->sv), 0);
    /* Readable and writable at the same time: both reported. */
    ck_assert_int_eq(write(d->sv[1], "p", 1), 1);
    d->rc_both = cio_wait_fd(d->sv[0], CIO_READABLE | CIO_WRITABLE);
    ck_assert_int_eq(d->rc_both, CIO_READABLE | CIO_WRITABLE);
    char ch;
    ck_assert_int_eq(read(d->sv[0], &ch, 1), 1);
    /* A reader and a writer task on the same fd. */
    d->rc_read = d->rc_write = 12345;
    cio_task_t *r;
    ck_assert_int_eq(cio_spawn(&r, body_wait_read, d), 0);
    cio_task_t *w;
    ck_assert_int_eq(cio_spawn(&w, body_wait_write, d), 0);
    ck_assert_int_eq(cio_call_later(cio_get_running_loop(), NULL, 0.02, cb_write_sv, d), 0);
    ck_assert_int_eq(cio_await(w, NULL), 0);
    ck_assert_int_eq(d->rc_write, CIO_WRITABLE);
    ck_assert_int_eq(d->rc_read, 12345); /* still waiting for data */
    ck_assert_int_eq(cio_wait_for(r, 5, NULL), 0);
    ck_assert_int_eq(d->rc_read, CIO_READABLE);
    cio_future_release(r);
    cio_future_release(w);
    close(d->sv[0]);
    close(d->sv[1]);
    return 0;
}

START_TEST(loop_wait_fd_directions)
{
    struct fd_dirs d;
    memset(&d, 0, sizeof d);
    RUN_MAIN(main_fd_dirs, &d);
}
END_TEST

START_TEST(loop_wait_fd_in_task)
{
    struct waitfd w;
    memset(&w, 0, sizeof w);
    RUN_MAIN(waitfd_main, &w);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* close / shutdown                                                          */
/* ------------------------------------------------------------------------ */

static int sleeper_record(void *arg, void **result)
{
    (void)result;
    int *rc = arg;
    *rc = cio_sleep(10);
    return *rc;
}

START_TEST(loop_close_busy_then_shutdown)
{
    cio_loop_t *l = new_loop();
    int rc = 12345;
    cio_task_t *t;
    ck_assert_int_eq(cio_spawn_ex(&t, l, sleeper_record, &rc, NULL), 0);
    ck_assert_ptr_nonnull(t);
    /* Created, not started: still unfinished. */
    ck_assert_int_eq(cio_loop_close(l), -EBUSY);
    /* Let it start sleeping. */
    run_for(l, 0.01);
    ck_assert_int_eq(rc, 12345);
    ck_assert(!cio_future_done(t));
    ck_assert_int_eq(cio_loop_close(l), -EBUSY);
    ck_assert_int_eq(cio_loop_free(l), -EBUSY);
    ck_assert(!cio_loop_is_closed(l));
    double w0 = mono_now();
    ck_assert_int_eq(cio_loop_shutdown(l), 0);
    ck_assert_double_lt(mono_now() - w0, HANG_BOUND_S);
    ck_assert_int_eq(rc, -ECANCELED);
    ck_assert(cio_future_done(t));
    ck_assert_int_eq(cio_future_result(t, NULL), -ECANCELED);
    ck_assert_int_eq(cio_all_tasks(l, NULL, 0), 0);
    cio_future_release(t);
    close_loop(l);
}
END_TEST

/* A task that was never started is still run (cancelled) by shutdown. */
START_TEST(loop_shutdown_unstarted)
{
    cio_loop_t *l = new_loop();
    int rc = 12345;
    cio_task_t *t;
    ck_assert_int_eq(cio_spawn_ex(&t, l, sleeper_record, &rc, NULL), 0);
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(cio_loop_shutdown(l), 0);
    ck_assert_int_eq(rc, -ECANCELED);
    ck_assert(cio_future_done(t));
    cio_future_release(t);
    close_loop(l);
}
END_TEST

static void cb_shutdown_inside(void *arg)
{
    cio_loop_t *l = arg;
    ck_assert_int_eq(cio_loop_shutdown(l), -EBUSY);
    ck_assert_int_eq(cio_loop_close(l), -EBUSY);
    cio_loop_stop(l);
}

START_TEST(loop_shutdown_close_while_running)
{
    cio_loop_t *l = new_loop();
    ck_assert_int_eq(cio_call_soon(l, NULL, cb_shutdown_inside, l), 0);
    ck_assert_int_eq(cio_loop_run_forever(l), 0);
    ck_assert_int_eq(cio_loop_shutdown(l), 0);
    close_loop(l);
}
END_TEST

/* Pending callbacks are discarded by close (nothing runs, nothing leaks). */
START_TEST(loop_close_discards_pending)
{
    cio_loop_t *l = new_loop();
    int n = 0;
    ck_assert_int_eq(cio_call_soon(l, NULL, cb_inc, &n), 0);
    ck_assert_int_eq(cio_call_later(l, NULL, 10, cb_inc, &n), 0);
    ck_assert_int_eq(cio_call_soon_threadsafe(l, cb_inc, &n), 0);
    close_loop(l);
    ck_assert_int_eq(n, 0);
}
END_TEST

static void cb_never(void *arg)
{
    (void)arg;
    ck_abort_msg("a callback of a closed loop ran");
}

/* After close (before free) the loop refuses work with -ESHUTDOWN, and
 * caller-owned handles it held are inactive. */
START_TEST(loop_closed_eshutdown)
{
    cio_loop_t *l = new_loop();
    cio_handle_t ht = CIO_HANDLE_INIT, hs = CIO_HANDLE_INIT, h2 = CIO_HANDLE_INIT;
    ck_assert_int_eq(cio_call_later(l, &ht, 10, cb_never, NULL), 0);
    ck_assert_int_eq(cio_call_soon(l, &hs, cb_never, NULL), 0);
    ck_assert_int_eq(cio_loop_close(l), 0);
    ck_assert(cio_loop_is_closed(l));
    ck_assert(!cio_handle_active(&ht));
    ck_assert(!cio_handle_active(&hs));
    ck_assert_int_eq(cio_handle_cancel(&ht), 0);
    ck_assert_int_eq(cio_handle_cancel(&hs), 0);
    ck_assert_int_eq(cio_call_soon(l, &h2, cb_never, NULL), -ESHUTDOWN);
    ck_assert(!cio_handle_active(&h2));
    ck_assert_int_eq(cio_call_soon(l, NULL, cb_never, NULL), -ESHUTDOWN);
    ck_assert_int_eq(cio_call_later(l, NULL, 0, cb_never, NULL), -ESHUTDOWN);
    ck_assert_int_eq(cio_call_at_ns(l, NULL, 0, cb_never, NULL), -ESHUTDOWN);
    ck_assert_int_eq(cio_call_soon_threadsafe(l, cb_never, NULL), -ESHUTDOWN);
    ck_assert_int_eq(cio_loop_run_forever(l), -ESHUTDOWN);
    ck_assert_int_eq(cio_loop_shutdown(l), -ESHUTDOWN);
    ck_assert(!cio_loop_is_running(l));
    ck_assert_int_eq(cio_loop_close(l), 0);
    ck_assert_int_eq(cio_loop_free(l), 0);
}
END_TEST

/* A callback cancels another callback queued for the same iteration. */
struct cancel_ready {
    cio_handle_t a, b, c;
    int ran_b, ran_c;
    int rc;
};

static void cb_cancel_ready_b(void *arg)
{
    struct cancel_ready *c = arg;
    c->rc = cio_handle_cancel(&c->b);
}

static void cb_ready_b(void *arg)
{
    ((struct cancel_ready *)arg)->ran_b++;
}

static void cb_ready_c(void *arg)
{
    ((struct cancel_ready *)arg)->ran_c++;
}

START_TEST(loop_handle_cancel_ready_from_callback)
{
    cio_loop_t *l = new_loop();
    struct cancel_ready c;
    memset(&c, 0, sizeof c);
    ck_assert_int_eq(cio_call_soon(l, &c.a, cb_cancel_ready_b, &c), 0);
    ck_assert_int_eq(cio_call_soon(l, &c.b, cb_ready_b, &c), 0);
    ck_assert_int_eq(cio_call_soon(l, &c.c, cb_ready_c, &c), 0);
    run_for(l, 0.01);
    ck_assert_int_eq(c.rc, 1);
    ck_assert_int_eq(c.ran_b, 0);
    ck_assert_int_eq(c.ran_c, 1);
    close_loop(l);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Bad input                                                                  */
/* ------------------------------------------------------------------------ */

static void cb_noop(void *arg)
{
    (void)arg;
}

START_TEST(loop_einval)
{
    cio_loop_t *l = new_loop();
    cio_handle_t h = CIO_HANDLE_INIT;
    ck_assert_int_eq(cio_call_soon(NULL, NULL, cb_noop, NULL), -EINVAL);
    ck_assert_int_eq(cio_call_soon(l, NULL, NULL, NULL), -EINVAL);
    ck_assert_int_eq(cio_call_later(NULL, NULL, 1, cb_noop, NULL), -EINVAL);
    ck_assert_int_eq(cio_call_later(l, NULL, 1, NULL, NULL), -EINVAL);
    ck_assert_int_eq(cio_call_later(l, &h, NAN, cb_noop, NULL), -EINVAL);
    ck_assert(!cio_handle_active(&h));
    ck_assert_int_eq(cio_call_at(l, &h, NAN, cb_noop, NULL), -EINVAL);
    ck_assert_int_eq(cio_call_at(NULL, NULL, 1, cb_noop, NULL), -EINVAL);
    ck_assert_int_eq(cio_call_at_ns(NULL, NULL, 1, cb_noop, NULL), -EINVAL);
    ck_assert_int_eq(cio_call_at_ns(l, NULL, 1, NULL, NULL), -EINVAL);
    ck_assert_int_eq(cio_call_soon_threadsafe(NULL, cb_noop, NULL), -EINVAL);
    ck_assert_int_eq(cio_call_soon_threadsafe(l, NULL, NULL), -EINVAL);
    ck_assert(!cio_handle_active(&h));
    /* Calls that operate on a given loop: NULL is -EINVAL. */
    ck_assert_int_eq(cio_loop_run_forever(NULL), -EINVAL);
    ck_assert_int_eq(cio_loop_run_until_complete(NULL, NULL, NULL), -EINVAL);
    ck_assert_int_eq(cio_loop_fork(NULL), -EINVAL);
    ck_assert_int_eq(cio_add_reader(NULL, 0, cb_noop, NULL), -EINVAL);
    ck_assert_int_eq(cio_add_writer(NULL, 0, cb_noop, NULL), -EINVAL);
    ck_assert_int_eq(cio_remove_reader(NULL, 0), -EINVAL);
    ck_assert_int_eq(cio_remove_writer(NULL, 0), -EINVAL);
    ck_assert_int_eq(cio_remove_reader(l, -1), -EINVAL);
    ck_assert_int_eq(cio_remove_writer(l, -1), -EINVAL);
    ck_assert_int_eq(cio_remove_reader(l, 1000000), 0); /* never watched */
    /* Destructors and stop: NULL is a no-op. */
    cio_loop_stop(NULL);
    ck_assert_int_eq(cio_loop_shutdown(NULL), 0);
    ck_assert_int_eq(cio_loop_close(NULL), 0);
    ck_assert_int_eq(cio_loop_free(NULL), 0);
    /* Constructors: out NULL is -EINVAL. */
    ck_assert_int_eq(cio_loop_new(NULL), -EINVAL);
    ck_assert_int_eq(cio_future_new(NULL, l), -EINVAL);
    close_loop(l);
}
END_TEST

static int dummy_task(void *arg, void **result)
{
    (void)arg;
    (void)result;
    return 0;
}

/* Await points and task-only calls refuse to run outside a task. */
static void check_eperm_outside_task(cio_loop_t *l)
{
    cio_future_t *f;
    ck_assert_int_eq(cio_future_new(&f, l), 0);
    ck_assert_ptr_nonnull(f);
    cio_future_t *fs[1] = {f};
    ck_assert_int_eq(cio_sleep(0.01), -EPERM);
    ck_assert_int_eq(cio_sleep(0), -EPERM);
    ck_assert_int_eq(cio_yield(), -EPERM);
    ck_assert_int_eq(cio_sleep_until_ns(cio_loop_time_ns(l) + 1000), -EPERM);
    ck_assert_int_eq(cio_await(f, NULL), -EPERM);
    ck_assert_int_eq(cio_wait_fd(0, CIO_READABLE), -EPERM);
    ck_assert_int_eq(cio_wait_for(f, 1, NULL), -EPERM);
    ck_assert_int_eq(cio_gather(fs, 1, NULL, NULL, 0), -EPERM);
    ck_assert_int_eq(cio_wait(fs, 1, CIO_ALL_COMPLETED, 1), -EPERM);
    ck_assert_int_eq(cio_to_thread(dummy_task, NULL, NULL), -EPERM);
    cio_scope_t s;
    ck_assert_int_eq(cio_scope_enter(&s, 1, 0), -EPERM);
    ck_assert_int_eq(cio_scope_enter_at_ns(&s, INT64_MAX, 0), -EPERM);
    ck_assert_int_eq(cio_local_set(&s, &s), -EPERM);
    cio_group_t *g = NOT_SET;
    ck_assert_int_eq(cio_group_new(&g), -EPERM);
    ck_assert_ptr_null(g);
    ck_assert_ptr_null(cio_current_task());
    ck_assert(!cio_future_done(f));
    ck_assert_int_eq(cio_future_cancel(f), 1);
    cio_future_release(f);
}

static void cb_eperm(void *arg)
{
    check_eperm_outside_task(arg);
    cio_loop_stop(arg);
}

START_TEST(loop_eperm_outside_task)
{
    /* No loop at all. */
    cio_loop_t *l = new_loop();
    check_eperm_outside_task(l);
    cio_task_t *t = NOT_SET;
    ck_assert_int_eq(cio_spawn(&t, dummy_task, NULL), -EPERM);
    ck_assert_ptr_null(t);
    ck_assert_int_eq(cio_spawn(NULL, dummy_task, NULL), -EPERM);
    cio_future_t *f = NOT_SET;
    ck_assert_int_eq(cio_future_new(&f, NULL), -EPERM);
    ck_assert_ptr_null(f);
    ck_assert_int_eq(cio_all_tasks(NULL, NULL, 0), -EPERM);
    ck_assert_int_eq(cio_dump_tasks(NULL, NULL), -EPERM);
    /* In a plain callback of a running loop. */
    ck_assert_int_eq(cio_call_soon(l, NULL, cb_eperm, l), 0);
    ck_assert_int_eq(cio_loop_run_forever(l), 0);
    close_loop(l);
}
END_TEST

/* call_soon_threadsafe from the loop thread itself, before the loop runs. */
START_TEST(loop_threadsafe_before_run)
{
    cio_loop_t *l = new_loop();
    int n = 0;
    ck_assert_int_eq(cio_call_soon_threadsafe(l, cb_inc, &n), 0);
    ck_assert_int_eq(n, 0);
    run_for(l, 0.01);
    ck_assert_int_eq(n, 1);
    close_loop(l);
}
END_TEST

/* run_until_complete drives a task spawned on a loop that is not running. */
static int body_sleep_value(void *arg, void **result)
{
    int rc = cio_sleep(0.01);
    *result = arg;
    return rc ? rc : 4;
}

START_TEST(loop_run_until_complete_task)
{
    cio_loop_t *l = new_loop();
    static int marker;
    cio_task_t *t;
    ck_assert_int_eq(cio_spawn_ex(&t, l, body_sleep_value, &marker, NULL), 0);
    ck_assert_ptr_nonnull(t);
    cio_task_t *t2;
    ck_assert_int_eq(cio_spawn_ex(&t2, l, body_sleep_value, NULL, NULL), 0);
    ck_assert_ptr_nonnull(t2);
    cio_task_t *out[4] = {NULL};
    ck_assert_int_eq(cio_all_tasks(l, out, 4), 2);
    ck_assert_ptr_nonnull(out[0]);
    ck_assert_ptr_nonnull(out[1]);
    void *r = NULL;
    ck_assert_int_eq(cio_loop_run_until_complete(l, t, &r), 4);
    ck_assert_ptr_eq(r, &marker);
    ck_assert_int_eq(cio_loop_run_until_complete(l, t2, NULL), 4);
    ck_assert_int_eq(cio_all_tasks(l, out, 4), 0);
    cio_future_release(t);
    cio_future_release(t2);
    close_loop(l);
}
END_TEST

/* Debug mode: slow callbacks and slow task steps are reported (a task step
 * with the task's name); nothing is reported with debug mode off. */
static void cb_busy(void *arg)
{
    double d = *(double *)arg;
    double w0 = mono_now();
    while (mono_now() - w0 < d)
        ;
}

START_TEST(loop_debug_slow_callback)
{
    unsetenv("CIO_DEBUG");
    double d = 0.1;
    cio_loop_t *l = new_loop();
    ck_assert(!cio_loop_get_debug(l));
    capture_t c;
    capture_begin(&c);
    ck_assert_int_eq(cio_call_soon(l, NULL, cb_busy, &d), 0);
    run_for(l, 0.01);
    char *quiet = capture_end(&c);
    ck_assert_msg(quiet[0] == 0, "debug off, yet stderr got:\n%s", quiet);
    free(quiet);

    cio_loop_set_debug(l, true);
    cio_loop_set_slow_callback_duration(l, 0.02);
    capture_begin(&c);
    ck_assert_int_eq(cio_call_soon(l, NULL, cb_busy, &d), 0);
    run_for(l, 0.01);
    char *out = capture_end(&c);
    ck_assert_msg(out[0] != 0, "a callback held the loop for 100 ms with a 20 ms "
                               "threshold in debug mode, and nothing was reported");
    free(out);

    /* INFINITY: never report (and no out-of-range conversion); NaN and
     * negative values leave it so. */
    cio_loop_set_slow_callback_duration(l, INFINITY);
    cio_loop_set_slow_callback_duration(l, NAN);
    cio_loop_set_slow_callback_duration(l, -1.0);
    cio_loop_set_slow_callback_duration(NULL, 1.0);
    capture_begin(&c);
    ck_assert_int_eq(cio_call_soon(l, NULL, cb_busy, &d), 0);
    run_for(l, 0.01);
    char *never = capture_end(&c);
    ck_assert_msg(never[0] == 0, "threshold INFINITY, yet stderr got:\n%s", never);
    free(never);
    close_loop(l);
}
END_TEST

static int body_busy(void *arg, void **result)
{
    (void)result;
    cio_sleep(0);
    cb_busy(arg);
    return 0;
}

static int main_slow_step(void *arg, void **result)
{
    (void)result;
    cio_loop_set_slow_callback_duration(cio_get_running_loop(), 0.02);
    cio_task_t *t;
    ck_assert_int_eq(cio_spawn_named(&t, "slowpoke-task", body_busy, arg), 0);
    ck_assert_int_eq(cio_await(t, NULL), 0);
    cio_future_release(t);
    return 0;
}

START_TEST(loop_debug_slow_task_step)
{
    unsetenv("CIO_DEBUG");
    double d = 0.1;
    cio_run_opts_t o = {.debug = true};
    capture_t c;
    capture_begin(&c);
    int rc = cio_run_ex(main_slow_step, &d, NULL, &o);
    char *out = capture_end(&c);
    ck_assert_int_eq(rc, 0);
    ck_assert_msg(strstr(out, "slowpoke-task") != NULL,
                  "slow task step not reported with the task's name; stderr:\n%s", out);
    free(out);
}
END_TEST

/* Debug mode: an error nobody retrieved is reported when the task is freed;
 * a retrieved one is not. */
static int body_fail_eio(void *arg, void **result)
{
    (void)arg;
    (void)result;
    return -EIO;
}

static int main_unretrieved(void *arg, void **result)
{
    (void)result;
    bool retrieve = *(bool *)arg;
    cio_task_t *t;
    ck_assert_int_eq(cio_spawn_named(&t, "doomed-task", body_fail_eio, NULL), 0);
    if (retrieve)
        ck_assert_int_eq(cio_await(t, NULL), -EIO);
    cio_future_release(t);
    ck_assert_int_eq(cio_sleep(0.01), 0);
    return 0;
}

START_TEST(loop_debug_unretrieved_error)
{
    unsetenv("CIO_DEBUG");
    cio_run_opts_t o = {.debug = true};
    bool retrieve = false;
    capture_t c;
    capture_begin(&c);
    int rc = cio_run_ex(main_unretrieved, &retrieve, NULL, &o);
    char *out = capture_end(&c);
    ck_assert_int_eq(rc, 0);
    ck_assert_msg(strstr(out, "doomed-task") || strstr(out, "EIO"),
                  "unretrieved task error not reported; stderr:\n%s", out);
    free(out);

    retrieve = true;
    capture_begin(&c);
    rc = cio_run_ex(main_unretrieved, &retrieve, NULL, &o);
    out = capture_end(&c);
    ck_assert_int_eq(rc, 0);
    ck_assert_msg(!strstr(out, "doomed-task"), "a retrieved error was reported:\n%s", out);
    free(out);
}
END_TEST

START_TEST(loop_debug_flag)
{
    cio_loop_t *l = new_loop();
    cio_loop_set_debug(l, true);
    ck_assert(cio_loop_get_debug(l));
    cio_loop_set_debug(l, false);
    ck_assert(!cio_loop_get_debug(l));
    cio_loop_set_slow_callback_duration(l, 0.5);
    close_loop(l);
}
END_TEST

static Suite *loop_suite(void)
{
    Suite *s = suite_create("loop");
    TCase *tc = add_tcase(s, "lifecycle", TEST_TIMEOUT);
    tcase_add_test(tc, loop_new_close);
    tcase_add_test(tc, loop_run_forever_stop);
    tcase_add_test(tc, loop_time_monotonic);
    tcase_add_test(tc, loop_time_ns_cached_per_iteration);
    tcase_add_test(tc, loop_run_until_complete_result);
    tcase_add_test(tc, loop_run_until_complete_error);
    tcase_add_test(tc, loop_run_until_complete_stopped);
    tcase_add_test(tc, loop_run_until_complete_einval);
    tcase_add_test(tc, loop_debug_flag);
    tcase_add_test(tc, loop_run_until_complete_task);
    tcase_add_test(tc, loop_debug_slow_callback);
    tcase_add_test(tc, loop_debug_slow_task_step);
    tcase_add_test(tc, loop_debug_unretrieved_error);

    tc = add_tcase(s, "callbacks", TEST_TIMEOUT);
    tcase_add_test(tc, loop_call_soon_fifo);
    tcase_add_test(tc, loop_call_soon_from_callback);
    tcase_add_test(tc, loop_call_later_never_early);
    tcase_add_test(tc, loop_call_later_negative);
    tcase_add_test(tc, loop_call_later_huge);
    tcase_add_test(tc, loop_call_at_minus_infinity);
    tcase_add_test(tc, loop_call_later_sorted);
    tcase_add_test(tc, loop_call_later_equal_fifo);
    tcase_add_test(tc, loop_call_at_equal_fifo);
    tcase_add_test(tc, loop_call_at);
    tcase_add_test(tc, loop_timer_heap_random);
    tcase_add_test(tc, loop_stop_after_current_batch);
    tcase_add_test(tc, loop_threadsafe_before_run);

    tc = add_tcase(s, "handles", TEST_TIMEOUT);
    tcase_add_test(tc, loop_handle_cancel_before);
    tcase_add_test(tc, loop_handle_after_fire_and_reuse);
    tcase_add_test(tc, loop_handle_rearm_in_callback);
    tcase_add_test(tc, loop_handle_cancel_from_callback);
    tcase_add_test(tc, loop_handle_cancel_ready_from_callback);

    tc = add_tcase(s, "fd", TEST_TIMEOUT);
    tcase_add_test(tc, loop_add_remove_reader);
    tcase_add_test(tc, loop_reader_level_triggered);
    tcase_add_test(tc, loop_add_writer);
    tcase_add_test(tc, loop_fd_watcher_errors);
    tcase_add_test(tc, loop_wait_fd_in_task);
    tcase_add_test(tc, loop_wait_fd_directions);

    tc = add_tcase(s, "close", TEST_TIMEOUT);
    tcase_add_test(tc, loop_close_busy_then_shutdown);
    tcase_add_test(tc, loop_shutdown_unstarted);
    tcase_add_test(tc, loop_shutdown_close_while_running);
    tcase_add_test(tc, loop_close_discards_pending);
    tcase_add_test(tc, loop_closed_eshutdown);

    tc = add_tcase(s, "errors", TEST_TIMEOUT);
    tcase_add_test(tc, loop_einval);
    tcase_add_test(tc, loop_eperm_outside_task);
    return s;
}

CIO_TEST_MAIN(loop_suite)
