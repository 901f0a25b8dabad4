/*
 * Coroutine stacks: overflow is never silent (a child process that recurses
 * without bound dies non-zero with a report naming the task and its stack
 * size), deep but bounded recursion works, custom stack sizes work, stacks
 * stay intact across switches, and 1,000,000 concurrent tasks run on default
 * kernel settings (vm.max_map_count = 65530).
 */
#include "cio_test.h"

#include <regex.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#define FRAME 1024

/* One frame of about FRAME bytes per level; the addition after the call and
 * the escaping buffer keep the compiler from turning this into a loop. */
static __attribute__((noinline)) long recurse(volatile char *prev, long depth, long limit)
{
    volatile char buf[FRAME];
    buf[0] = (char)(depth & 1);
    buf[1] = prev ? prev[0] : 0;
    buf[FRAME - 1] = 1;
    if (depth >= limit)
        return buf[0];
    /* Levels 0..limit-1 add 1 each, the bottom adds limit & 1. */
    return recurse(buf, depth + 1, limit) + buf[FRAME - 1];
}

/* ------------------------------------------------------------------------ */
/* Overflow, in a child process                                               */
/* ------------------------------------------------------------------------ */

static int body_unbounded(void *arg, void **result)
{
    (void)arg;
    (void)result;
    long r = recurse(NULL, 0, 1L << 40);
    return (int)(r & 1);
}

enum { VIA_SPAWN_EX, VIA_SPAWN_NAMED, VIA_RUN_EX_MAIN };

struct overflow_case {
    const char *name;
    size_t stack_size;      /* 0 = default */
    const char *size_regex; /* how the report may spell the size */
    int via;
};

static const struct overflow_case overflow_cases[] = {
    {"deep-recursor", 128 * 1024, "(131072|128 ?[Kk])", VIA_SPAWN_EX},
    {"deep-default", 0, "(262144|256 ?[Kk])", VIA_SPAWN_NAMED},
    {"overflowing-main", 192 * 1024, "(196608|192 ?[Kk])", VIA_RUN_EX_MAIN},
};

static int main_overflow(void *arg, void **result)
{
    (void)result;
    const struct overflow_case *c = arg;
    cio_task_t *t;
    if (c->via == VIA_SPAWN_EX) {
        cio_spawn_opts_t o = {.name = c->name, .stack_size = c->stack_size};
        ck_assert_int_eq(cio_spawn_ex(&t, cio_get_running_loop(), body_unbounded, NULL, &o), 0);
    } else if (cio_spawn_named(&t, c->name, body_unbounded, NULL) < 0) {
        _exit(3);
    }
    cio_await(t, NULL);
    cio_future_release(t);
    return 0;
}

/* The child: overflows as the case says; returning means it survived. */
static void overflow_child(void *arg)
{
    const struct overflow_case *c = arg;
    int rc;
    if (c->via == VIA_RUN_EX_MAIN) {
        cio_run_opts_t o = {.name = c->name, .stack_size = c->stack_size};
        rc = cio_run_ex(body_unbounded, NULL, NULL, &o);
    } else {
        rc = cio_run(main_overflow, (void *)c);
    }
    fprintf(stderr, "cio_run returned %d\n", rc);
}

START_TEST(stack_overflow_reported)
{
    const struct overflow_case *c = &overflow_cases[_i];
    int st = 0;
    const char *out = run_child_stderr(overflow_child, (void *)c, &st);
    ck_assert_msg(!(WIFEXITED(st) && WEXITSTATUS(st) == 3), "spawn failed");
    assert_overflow_death(st, out);
    ck_assert_msg(strstr(out, c->name) != NULL,
                  "the report does not name task \"%s\":\n%s", c->name, out);
    regex_t re;
    ck_assert_int_eq(regcomp(&re, c->size_regex, REG_EXTENDED | REG_NOSUB), 0);
    int m = regexec(&re, out, 0, NULL, 0);
    regfree(&re);
    ck_assert_msg(m == 0, "the report does not give the stack size (%s):\n%s",
                  c->size_regex, out);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Bounded recursion                                                          */
/* ------------------------------------------------------------------------ */

static int body_recurse(void *arg, void **result)
{
    (void)result;
    long depth = *(long *)arg;
    long r = recurse(NULL, 0, depth);
    return r == depth + (depth & 1) ? 0 : -EIO;
}

static int main_bounded(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_loop_t *l = cio_get_running_loop();
    /* Default stack (256 KiB): about 140 KiB of frames. */
    long d1 = 128;
    cio_task_t *t;
    ck_assert_int_eq(cio_spawn(&t, body_recurse, &d1), 0);
    ck_assert_int_eq(cio_await(t, NULL), 0);
    cio_future_release(t);

    /* 4 MiB stack: about 2.7 MiB of frames (would overflow the default). */
    long d2 = 2500;
    cio_spawn_opts_t o = {.name = "big", .stack_size = 4u << 20};
    ck_assert_int_eq(cio_spawn_ex(&t, l, body_recurse, &d2, &o), 0);
    ck_assert_ptr_nonnull(t);
    ck_assert_str_eq(cio_task_get_name(t), "big");
    ck_assert_int_eq(cio_await(t, NULL), 0);
    cio_future_release(t);

    /* A size that is not a multiple of the page size is rounded up. */
    long d3 = 48;
    cio_spawn_opts_t o2 = {.name = "odd", .stack_size = 100000};
    ck_assert_int_eq(cio_spawn_ex(&t, l, body_recurse, &d3, &o2), 0);
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(cio_await(t, NULL), 0);
    cio_future_release(t);

    /* Many big-stack tasks alive at once. */
    cio_task_t *ts[16];
    long d4 = 600; /* about 620 KiB (770 KiB under ASan) */
    cio_spawn_opts_t o3 = {.stack_size = 1u << 20};
    for (int i = 0; i < 16; i++) {
        ck_assert_int_eq(cio_spawn_ex(&ts[i], l, body_recurse, &d4, &o3), 0);
        ck_assert_ptr_nonnull(ts[i]);
    }
    ck_assert_int_eq(cio_gather(ts, 16, NULL, NULL, 0), 0);
    for (int i = 0; i < 16; i++)
        cio_future_release(ts[i]);
    return 0;
}

START_TEST(stack_bounded_recursion)
{
    RUN_MAIN(main_bounded, NULL);
}
END_TEST

static int main_big_main(void *arg, void **result)
{
    (void)arg;
    (void)result;
    long d = 1200; /* about 1.3 MiB */
    long r = recurse(NULL, 0, d);
    ck_assert_int_eq(r, d + (d & 1));
    return 0;
}

START_TEST(stack_run_ex_main_stack_size)
{
    cio_run_opts_t o = {.stack_size = 2u << 20};
    ck_assert_int_eq(cio_run_ex(main_big_main, NULL, NULL, &o), 0);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Stacks stay intact across switches                                         */
/* ------------------------------------------------------------------------ */

static __attribute__((noinline)) int fill_and_yield(int id, int depth)
{
    volatile unsigned char buf[256];
    for (int i = 0; i < 256; i++)
        buf[i] = (unsigned char)(id * 31 + depth + i);
    int rc = 0;
    if (depth > 0) {
        rc = fill_and_yield(id, depth - 1);
    } else {
        for (int k = 0; k < 3 && rc == 0; k++)
            rc = cio_yield();
    }
    for (int i = 0; i < 256; i++)
        if (buf[i] != (unsigned char)(id * 31 + depth + i))
            return -EIO;
    /* Yield on the way up too, with live locals in registers. */
    if (rc == 0 && (depth % 16) == 0)
        rc = cio_yield();
    return rc;
}

static int body_fill(void *arg, void **result)
{
    (void)result;
    return fill_and_yield((int)(intptr_t)arg, 64);
}

static int main_integrity(void *arg, void **result)
{
    (void)arg;
    (void)result;
    enum { N = 32 };
    cio_task_t *t[N];
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(cio_spawn(&t[i], body_fill, (void *)(intptr_t)(i + 1)), 0);
    int st[N];
    ck_assert_int_eq(cio_gather(t, N, NULL, st, CIO_GATHER_ALL), 0);
    for (int i = 0; i < N; i++) {
        ck_assert_int_eq(st[i], 0);
        cio_future_release(t[i]);
    }
    return 0;
}

START_TEST(stack_integrity_across_switches)
{
    RUN_MAIN(main_integrity, NULL);
}
END_TEST

/* Stacks are reused: many short-lived tasks in sequence. */
static int body_short(void *arg, void **result)
{
    (void)result;
    ++*(long *)arg;
    long d = 8;
    return recurse(NULL, 0, d) == d + (d & 1) ? 0 : -EIO;
}

static int main_reuse(void *arg, void **result)
{
    (void)arg;
    (void)result;
    long n = 0;
    for (int round = 0; round < 200; round++) {
        cio_task_t *t[500];
        for (int i = 0; i < 500; i++) {
            ck_assert_int_eq(cio_spawn(&t[i], body_short, &n), 0);
            ck_assert_ptr_nonnull(t[i]);
        }
        ck_assert_int_eq(cio_gather(t, 500, NULL, NULL, 0), 0);
        for (int i = 0; i < 500; i++)
            cio_future_release(t[i]);
    }
    ck_assert_int_eq(n, 200 * 500);
    return 0;
}

START_TEST(stack_reuse_many_short_tasks)
{
    RUN_MAIN(main_reuse, NULL);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* 1,000,000 concurrent tasks                                                 */
/* ------------------------------------------------------------------------ */

#define MILLION 1000000L

struct mill {
    long started, finished, ok;
    long live, maxlive;
    cio_future_t *gate;
    void *gate_value;
};

static int body_sleep_half(void *arg, void **result)
{
    (void)result;
    struct mill *m = arg;
    m->started++;
    if (++m->live > m->maxlive)
        m->maxlive = m->live;
    int rc = cio_sleep(0.5);
    if (rc == 0)
        m->ok++;
    m->live--;
    m->finished++;
    return rc;
}

static int main_million_sleep(void *arg, void **result)
{
    (void)result;
    struct mill *m = arg;
    for (long i = 0; i < MILLION; i++) {
        /* Fire and forget: the loop keeps each task until it finishes. */
        int rc = cio_spawn(NULL, body_sleep_half, m);
        ck_assert_msg(rc == 0, "spawn %ld failed: %s", i, cio_strerror(rc));
    }
    ck_assert_int_eq(cio_all_tasks(NULL, NULL, 0), MILLION + 1);
    double w0 = mono_now();
    while (m->finished < MILLION) {
        ck_assert_int_eq(cio_sleep(0.05), 0);
        ck_assert_msg(mono_now() - w0 < 240, "only %ld of %ld finished", m->finished, MILLION);
    }
    ck_assert_int_eq(m->started, MILLION);
    ck_assert_int_eq(m->ok, MILLION);
    ck_assert_int_eq(cio_all_tasks(NULL, NULL, 0), 1);
    return 0;
}

START_TEST(stack_million_sleeping_tasks)
{
    static struct mill m;
    memset(&m, 0, sizeof m);
    RUN_MAIN(main_million_sleep, &m);
    ck_assert_int_eq(m.finished, MILLION);
}
END_TEST

static int body_wait_gate(void *arg, void **result)
{
    (void)result;
    struct mill *m = arg;
    m->started++;
    void *v = NULL;
    int rc = cio_await(m->gate, &v);
    if (rc == 0 && v == m->gate_value)
        m->ok++;
    m->finished++;
    return rc;
}

static int main_million_gate(void *arg, void **result)
{
    (void)result;
    struct mill *m = arg;
    ck_assert_int_eq(cio_future_new(&m->gate, NULL), 0);
    m->gate_value = &m->gate;
    for (long i = 0; i < MILLION; i++) {
        cio_task_t *t;
        int rc = cio_spawn(&t, body_wait_gate, m);
        ck_assert_msg(rc == 0, "spawn %ld failed: %s", i, cio_strerror(rc));
        cio_future_release(t);
    }
    double w0 = mono_now();
    while (m->started < MILLION) {
        ck_assert_int_eq(cio_sleep(0.01), 0);
        ck_assert_msg(mono_now() - w0 < 120, "only %ld of %ld started", m->started, MILLION);
    }
    /* All of them are suspended at the same time. */
    ck_assert_int_eq(m->finished, 0);
    ck_assert_int_eq(cio_all_tasks(NULL, NULL, 0), MILLION + 1);
    ck_assert_int_eq(cio_future_set_result(m->gate, m->gate_value), 0);
    while (m->finished < MILLION) {
        ck_assert_int_eq(cio_sleep(0.01), 0);
        ck_assert_msg(mono_now() - w0 < 240, "only %ld of %ld finished", m->finished, MILLION);
    }
    ck_assert_int_eq(m->ok, MILLION);
    cio_future_release(m->gate);
    return 0;
}

START_TEST(stack_million_waiting_on_future)
{
    static struct mill m;
    memset(&m, 0, sizeof m);
    RUN_MAIN(main_million_gate, &m);
    ck_assert_int_eq(m.finished, MILLION);
}
END_TEST

static Suite *stack_suite(void)
{
    Suite *s = suite_create("stack");
    TCase *tc = add_tcase(s, "overflow", 40);
    tcase_add_loop_test(tc, stack_overflow_reported, 0,
                        (int)(sizeof overflow_cases / sizeof overflow_cases[0]));

    tc = add_tcase(s, "sizes", TEST_TIMEOUT);
    tcase_add_test(tc, stack_bounded_recursion);
    tcase_add_test(tc, stack_run_ex_main_stack_size);
    tcase_add_test(tc, stack_integrity_across_switches);
    tcase_add_test(tc, stack_reuse_many_short_tasks);

    tc = add_tcase(s, "million", 120);
    tcase_add_test(tc, stack_million_sleeping_tasks);
    tcase_add_test(tc, stack_million_waiting_on_future);
    return s;
}

CIO_TEST_MAIN(stack_suite)
