/*
 * Task-local values (contextvars): set/get, inheritance of a snapshot by
 * spawned children, and isolation of later changes in either direction.
 */
#include "cio_test.h"

static int key_a, key_b, key_c;
static int v1, v2, v3, v4, dflt;

START_TEST(local_outside_task)
{
    ck_assert_ptr_eq(cio_local_get(&key_a, &dflt), &dflt);
    ck_assert_ptr_null(cio_local_get(&key_a, NULL));
    ck_assert_int_eq(cio_local_set(&key_a, &v1), -EPERM);
    ck_assert_ptr_eq(cio_local_get(&key_a, &dflt), &dflt);
}
END_TEST

static int main_set_get(void *arg, void **result)
{
    (void)arg;
    (void)result;
    ck_assert_ptr_eq(cio_local_get(&key_a, &dflt), &dflt);
    ck_assert_int_eq(cio_local_set(&key_a, &v1), 0);
    ck_assert_ptr_eq(cio_local_get(&key_a, &dflt), &v1);
    ck_assert_ptr_eq(cio_local_get(&key_b, &dflt), &dflt);
    ck_assert_int_eq(cio_local_set(&key_b, &v2), 0);
    ck_assert_int_eq(cio_local_set(&key_a, &v3), 0); /* overwrite */
    ck_assert_ptr_eq(cio_local_get(&key_a, &dflt), &v3);
    ck_assert_ptr_eq(cio_local_get(&key_b, &dflt), &v2);
    /* Values survive await points. */
    ck_assert_int_eq(cio_sleep(0.001), 0);
    ck_assert_ptr_eq(cio_local_get(&key_a, &dflt), &v3);
    ck_assert_ptr_eq(cio_local_get(&key_b, &dflt), &v2);

    /* Many keys. */
    static char keys[200];
    for (int i = 0; i < 200; i++)
        ck_assert_int_eq(cio_local_set(&keys[i], &keys[(i + 1) % 200]), 0);
    for (int i = 0; i < 200; i++)
        ck_assert_ptr_eq(cio_local_get(&keys[i], NULL), &keys[(i + 1) % 200]);
    ck_assert_ptr_eq(cio_local_get(&key_a, &dflt), &v3);
    return 0;
}

START_TEST(local_set_get)
{
    RUN_MAIN(main_set_get, NULL);
}
END_TEST

struct seen {
    void *a_at_start, *b_at_start, *c_at_start;
    void *a_after_parent_change;
    void *a_after_own_set;
    void *grand_a, *grand_c;
};

static int body_grandchild(void *arg, void **result)
{
    (void)result;
    struct seen *s = arg;
    s->grand_a = cio_local_get(&key_a, &dflt);
    s->grand_c = cio_local_get(&key_c, &dflt);
    return 0;
}

static int body_child(void *arg, void **result)
{
    (void)result;
    struct seen *s = arg;
    s->a_at_start = cio_local_get(&key_a, &dflt);
    s->b_at_start = cio_local_get(&key_b, &dflt);
    s->c_at_start = cio_local_get(&key_c, &dflt);
    /* Let the parent change its value. */
    ck_assert_int_eq(cio_sleep(0.02), 0);
    s->a_after_parent_change = cio_local_get(&key_a, &dflt);
    /* Changes here are not seen by the parent. */
    ck_assert_int_eq(cio_local_set(&key_a, &v4), 0);
    ck_assert_int_eq(cio_local_set(&key_c, &v3), 0);
    s->a_after_own_set = cio_local_get(&key_a, &dflt);
    /* The grandchild inherits the child's values. */
    cio_task_t *g;
    ck_assert_int_eq(cio_spawn(&g, body_grandchild, s), 0);
    ck_assert_int_eq(cio_await(g, NULL), 0);
    cio_future_release(g);
    return 0;
}

static int main_inherit(void *arg, void **result)
{
    (void)result;
    struct seen *s = arg;
    ck_assert_int_eq(cio_local_set(&key_a, &v1), 0);
    cio_task_t *t;
    ck_assert_int_eq(cio_spawn(&t, body_child, s), 0);
    ck_assert_ptr_nonnull(t);
    /* Set after the spawn, before the child even starts: not inherited. */
    ck_assert_int_eq(cio_local_set(&key_b, &v2), 0);
    ck_assert_int_eq(cio_sleep(0.01), 0);
    ck_assert_int_eq(cio_local_set(&key_a, &v2), 0);
    ck_assert_int_eq(cio_await(t, NULL), 0);
    cio_future_release(t);
    /* The child's changes stayed in the child. */
    ck_assert_ptr_eq(cio_local_get(&key_a, &dflt), &v2);
    ck_assert_ptr_eq(cio_local_get(&key_c, &dflt), &dflt);
    return 0;
}

START_TEST(local_inheritance_snapshot)
{
    struct seen s;
    memset(&s, 0, sizeof s);
    RUN_MAIN(main_inherit, &s);
    ck_assert_ptr_eq(s.a_at_start, &v1);
    ck_assert_ptr_eq(s.b_at_start, &dflt);
    ck_assert_ptr_eq(s.c_at_start, &dflt);
    ck_assert_ptr_eq(s.a_after_parent_change, &v1);
    ck_assert_ptr_eq(s.a_after_own_set, &v4);
    ck_assert_ptr_eq(s.grand_a, &v4);
    ck_assert_ptr_eq(s.grand_c, &v3);
}
END_TEST

/* Siblings spawned from the same parent do not see each other's values. */
struct sib {
    int id;
    void *seen_after;
};

static int body_sibling(void *arg, void **result)
{
    (void)result;
    struct sib *s = arg;
    ck_assert_ptr_eq(cio_local_get(&key_a, &dflt), &v1);
    ck_assert_int_eq(cio_local_set(&key_a, s->id == 0 ? &v2 : &v3), 0);
    ck_assert_int_eq(cio_yield(), 0);
    ck_assert_int_eq(cio_yield(), 0);
    s->seen_after = cio_local_get(&key_a, &dflt);
    return 0;
}

static int main_siblings(void *arg, void **result)
{
    (void)arg;
    (void)result;
    ck_assert_int_eq(cio_local_set(&key_a, &v1), 0);
    struct sib s0 = {0, NULL}, s1 = {1, NULL};
    cio_task_t *t0;
    ck_assert_int_eq(cio_spawn(&t0, body_sibling, &s0), 0);
    cio_task_t *t1;
    ck_assert_int_eq(cio_spawn(&t1, body_sibling, &s1), 0);
    ck_assert_int_eq(cio_await(t0, NULL), 0);
    ck_assert_int_eq(cio_await(t1, NULL), 0);
    ck_assert_ptr_eq(s0.seen_after, &v2);
    ck_assert_ptr_eq(s1.seen_after, &v3);
    ck_assert_ptr_eq(cio_local_get(&key_a, &dflt), &v1);
    cio_future_release(t0);
    cio_future_release(t1);
    return 0;
}

START_TEST(local_siblings_isolated)
{
    RUN_MAIN(main_siblings, NULL);
}
END_TEST

/* Group children and a callback: callbacks are not in a task. */
static void cb_probe(void *arg)
{
    *(void **)arg = cio_local_get(&key_a, &dflt);
}

static int body_group_child(void *arg, void **result)
{
    (void)result;
    *(void **)arg = cio_local_get(&key_a, &dflt);
    return 0;
}

static int main_group_and_callback(void *arg, void **result)
{
    (void)arg;
    (void)result;
    ck_assert_int_eq(cio_local_set(&key_a, &v4), 0);
    void *in_group = NULL, *in_cb = NULL;
    cio_group_t *g;
    ck_assert_int_eq(cio_group_new(&g), 0);
    ck_assert_int_eq(cio_group_spawn(NULL, g, "k", body_group_child, &in_group), 0);
    ck_assert_int_eq(cio_group_wait(g), 0);
    cio_group_free(g);
    ck_assert_ptr_eq(in_group, &v4);
    ck_assert_int_eq(cio_call_soon(cio_get_running_loop(), NULL, cb_probe, &in_cb), 0);
    ck_assert_int_eq(cio_sleep(0.01), 0);
    ck_assert_ptr_eq(in_cb, &dflt);
    return 0;
}

START_TEST(local_group_children_and_callbacks)
{
    RUN_MAIN(main_group_and_callback, NULL);
}
END_TEST

static Suite *local_suite(void)
{
    Suite *s = suite_create("local");
    TCase *tc = add_tcase(s, "local", TEST_TIMEOUT);
    tcase_add_test(tc, local_outside_task);
    tcase_add_test(tc, local_set_get);
    tcase_add_test(tc, local_inheritance_snapshot);
    tcase_add_test(tc, local_siblings_isolated);
    tcase_add_test(tc, local_group_children_and_callbacks);
    return s;
}

CIO_TEST_MAIN(local_suite)
