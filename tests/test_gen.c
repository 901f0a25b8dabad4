/*
 * Generators: next/send/throw/close and the return value, the four states
 * at every point, close in every state (created, suspended, exhausted,
 * closed twice, a body that ignores the close), refusals (running, wrong
 * stack, bad arguments), freeing without leaks, nesting, use outside any
 * loop, inside tasks and in other threads, async generators that await
 * (and are cancelled while they do), and the overflow report naming the
 * generator.
 */
#include "cio_test.h"

#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#define IV(n) ((void *)(intptr_t)(n))
#define VI(p) ((intptr_t)(p))

static int marker_result;

/* ------------------------------------------------------------------------ */
/* Bodies                                                                    */
/* ------------------------------------------------------------------------ */

/* What a counting body observed, for the assertions of the caller. */
typedef struct probe {
    int limit;          /* how many values to yield */
    int started;
    int cleaned;        /* the code after the loop ran */
    int last_rc;        /* the last cio_gen_yield return value */
    int state_inside;   /* cio_gen_get_state(g) seen from the body */
    intptr_t sent[16];  /* values received */
    int nsent;
} probe_t;

/* Yields 1..limit, records what is sent in, returns 0 with marker_result. */
static int body_count(cio_gen_t *g, void *arg)
{
    probe_t *p = arg;
    p->started = 1;
    p->state_inside = cio_gen_get_state(g);
    for (int i = 1; i <= p->limit; i++) {
        void *v = IV(-1);
        p->last_rc = cio_gen_yield(g, IV(i), &v);
        if (p->last_rc < 0)
            break;
        if (p->nsent < 16)
            p->sent[p->nsent++] = VI(v);
    }
    p->cleaned = 1;
    cio_gen_set_result(g, &marker_result);
    return p->last_rc == -ECANCELED ? -ECANCELED : 0;
}

/* BENCH.md workload 9 in miniature: x = yield x + 1. */
static int body_plus_one(cio_gen_t *g, void *arg)
{
    (void)arg;
    void *x = IV(0);
    for (;;) {
        int rc = cio_gen_yield(g, IV(VI(x) + 1), &x);
        if (rc < 0)
            return rc;
    }
}

static probe_t *new_probe(int limit)
{
    static probe_t p;
    memset(&p, 0, sizeof p);
    p.limit = limit;
    p.last_rc = 12345;
    return &p;
}

/* ------------------------------------------------------------------------ */
/* next, return value, states (outside any loop)                             */
/* ------------------------------------------------------------------------ */

START_TEST(gen_next_states_and_result)
{
    probe_t *p = new_probe(3);
    cio_gen_t *g;
    ck_assert_int_eq(cio_gen_new(&g, body_count, p), 0);
    ck_assert_ptr_nonnull(g);
    ck_assert_int_eq(cio_gen_get_state(g), CIO_GEN_CREATED);
    ck_assert_str_eq(cio_gen_state_name(cio_gen_get_state(g)), "GEN_CREATED");
    ck_assert_int_eq(cio_gen_result(g, NULL), -EAGAIN);
    ck_assert(!p->started); /* creating runs nothing */

    void *v = NULL;
    for (int i = 1; i <= 3; i++) {
        ck_assert_int_eq(cio_gen_next(g, &v), 1);
        ck_assert_int_eq(VI(v), i);
        ck_assert_int_eq(cio_gen_get_state(g), CIO_GEN_SUSPENDED);
        ck_assert_int_eq(cio_gen_result(g, NULL), -EAGAIN);
    }
    ck_assert_int_eq(p->state_inside, CIO_GEN_RUNNING);
    ck_assert(!p->cleaned);

    /* StopIteration: 0, with the return value in *out. */
    v = NULL;
    ck_assert_int_eq(cio_gen_next(g, &v), 0);
    ck_assert_ptr_eq(v, &marker_result);
    ck_assert(p->cleaned);
    ck_assert_int_eq(cio_gen_get_state(g), CIO_GEN_CLOSED);
    ck_assert_str_eq(cio_gen_state_name(CIO_GEN_CLOSED), "GEN_CLOSED");
    /* next sent NULL each time. */
    ck_assert_int_eq(p->nsent, 3);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(p->sent[i], 0);

    /* An exhausted generator stays exhausted, with no value. */
    v = &v;
    ck_assert_int_eq(cio_gen_next(g, &v), 0);
    ck_assert_ptr_null(v);
    ck_assert_int_eq(cio_gen_send(g, NULL, NULL), 0);
    ck_assert_int_eq(cio_gen_get_state(g), CIO_GEN_CLOSED);

    void *r = NULL;
    ck_assert_int_eq(cio_gen_result(g, &r), 0);
    ck_assert_ptr_eq(r, &marker_result);
    ck_assert_int_eq(cio_gen_free(g), 0);
}
END_TEST

static int body_empty(cio_gen_t *g, void *arg)
{
    (void)arg;
    cio_gen_set_result(g, &marker_result);
    return 7; /* a positive status is success too */
}

START_TEST(gen_empty_body)
{
    cio_gen_t *g;
    ck_assert_int_eq(cio_gen_new(&g, body_empty, NULL), 0);
    ck_assert_ptr_nonnull(g);
    void *v = NULL;
    ck_assert_int_eq(cio_gen_next(g, &v), 0);
    ck_assert_ptr_eq(v, &marker_result);
    ck_assert_int_eq(cio_gen_get_state(g), CIO_GEN_CLOSED);
    ck_assert_int_eq(cio_gen_result(g, NULL), 7);
    ck_assert_int_eq(cio_gen_free(g), 0);
}
END_TEST

START_TEST(gen_names_and_bad_args)
{
    cio_gen_t *g;
    ck_assert_int_eq(cio_gen_new(&g, body_empty, NULL), 0);
    ck_assert_ptr_nonnull(g);
    ck_assert_int_eq(strncmp(cio_gen_get_name(g), "Generator-", 10), 0);
    cio_gen_t *h;
    ck_assert_int_eq(cio_gen_new(&h, body_empty, NULL), 0);
    ck_assert_str_ne(cio_gen_get_name(g), cio_gen_get_name(h));
    char name[] = "my-gen";
    cio_gen_opts_t o = {.name = name, .stack_size = 0};
    cio_gen_t *k;
    ck_assert_int_eq(cio_gen_new_ex(&k, body_empty, NULL, &o), 0);
    name[0] = 'X'; /* the name was copied */
    ck_assert_str_eq(cio_gen_get_name(k), "my-gen");

    cio_gen_t *bad = NOT_SET;
    ck_assert_int_eq(cio_gen_new(&bad, NULL, NULL), -EINVAL);
    ck_assert_ptr_null(bad);
    ck_assert_int_eq(cio_gen_new(NULL, body_empty, NULL), -EINVAL);
    cio_gen_opts_t ro = {.reserved_ = {&ro, NULL}};
    bad = NOT_SET;
    ck_assert_int_eq(cio_gen_new_ex(&bad, body_empty, NULL, &ro), -EINVAL);
    ck_assert_ptr_null(bad);
    ck_assert_int_eq(cio_gen_next(NULL, NULL), -EINVAL);
    ck_assert_int_eq(cio_gen_send(NULL, NULL, NULL), -EINVAL);
    ck_assert_int_eq(cio_gen_throw(NULL, -EIO, NULL), -EINVAL);
    ck_assert_int_eq(cio_gen_throw(g, 0, NULL), -EINVAL);
    ck_assert_int_eq(cio_gen_throw(g, 5, NULL), -EINVAL);
    ck_assert_int_eq(cio_gen_close(NULL), 0);  /* destructors: NULL is a no-op */
    ck_assert_int_eq(cio_gen_aclose(NULL), 0);
    ck_assert_int_eq(cio_gen_yield(NULL, NULL, NULL), -EINVAL);
    ck_assert_int_eq(cio_gen_result(NULL, NULL), -EINVAL);
    ck_assert_int_eq(cio_gen_get_state(NULL), -EINVAL);
    ck_assert_ptr_null(cio_gen_get_name(NULL));
    ck_assert_str_eq(cio_gen_state_name(42), "?");
    ck_assert_str_eq(cio_gen_state_name(CIO_GEN_RUNNING), "GEN_RUNNING");
    ck_assert_str_eq(cio_gen_state_name(CIO_GEN_SUSPENDED), "GEN_SUSPENDED");
    cio_gen_set_result(NULL, NULL); /* no-op */
    ck_assert_int_eq(cio_gen_free(NULL), 0);
    /* Nothing above changed g. */
    ck_assert_int_eq(cio_gen_get_state(g), CIO_GEN_CREATED);
    ck_assert_int_eq(cio_gen_free(g), 0);
    ck_assert_int_eq(cio_gen_free(h), 0);
    ck_assert_int_eq(cio_gen_free(k), 0);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* send                                                                      */
/* ------------------------------------------------------------------------ */

START_TEST(gen_send_round_trips)
{
    cio_gen_t *g;
    ck_assert_int_eq(cio_gen_new(&g, body_plus_one, NULL), 0);
    ck_assert_ptr_nonnull(g);
    void *v = &v;
    /* Priming with a value is refused and changes nothing (TypeError). */
    ck_assert_int_eq(cio_gen_send(g, IV(5), &v), -EINVAL);
    ck_assert_ptr_null(v);
    ck_assert_int_eq(cio_gen_get_state(g), CIO_GEN_CREATED);
    /* send(None) primes: the body runs to its first yield. */
    ck_assert_int_eq(cio_gen_send(g, NULL, &v), 1);
    ck_assert_int_eq(VI(v), 1);
    intptr_t x = 0;
    for (int i = 0; i < 1000; i++) {
        ck_assert_int_eq(cio_gen_send(g, IV(x), &v), 1);
        x = VI(v);
    }
    ck_assert_int_eq(x, 1000);
    /* Non-NULL sends are fine once started; next sends NULL (0 here). */
    ck_assert_int_eq(cio_gen_next(g, &v), 1);
    ck_assert_int_eq(VI(v), 1);
    ck_assert_int_eq(cio_gen_get_state(g), CIO_GEN_SUSPENDED);
    /* The body passes the close code on: close reports success. */
    ck_assert_int_eq(cio_gen_close(g), 0);
    ck_assert_int_eq(cio_gen_result(g, NULL), -ECANCELED);
    ck_assert_int_eq(cio_gen_free(g), 0);
}
END_TEST

/* The sent values arrive in order, next sends NULL. */
START_TEST(gen_send_values_received)
{
    probe_t *p = new_probe(4);
    cio_gen_t *g;
    ck_assert_int_eq(cio_gen_new(&g, body_count, p), 0);
    void *v;
    ck_assert_int_eq(cio_gen_send(g, NULL, &v), 1);
    ck_assert_int_eq(cio_gen_send(g, IV(10), &v), 1);
    ck_assert_int_eq(VI(v), 2);
    ck_assert_int_eq(cio_gen_next(g, &v), 1);
    ck_assert_int_eq(cio_gen_send(g, IV(30), NULL), 1); /* out may be NULL */
    ck_assert_int_eq(cio_gen_send(g, IV(40), &v), 0);
    ck_assert_int_eq(p->nsent, 4);
    ck_assert_int_eq(p->sent[0], 10);
    ck_assert_int_eq(p->sent[1], 0);
    ck_assert_int_eq(p->sent[2], 30);
    ck_assert_int_eq(p->sent[3], 40);
    ck_assert_int_eq(cio_gen_free(g), 0);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* throw                                                                     */
/* ------------------------------------------------------------------------ */

typedef struct thrown {
    int seen[4];
    int n;
} thrown_t;

/* Handles -EIO (yields 100 + count), passes any other error on. */
static int body_catch_eio(cio_gen_t *g, void *arg)
{
    thrown_t *t = arg;
    int rc = cio_gen_yield(g, IV(1), NULL);
    for (;;) {
        if (rc == 0) {
            rc = cio_gen_yield(g, IV(2), NULL);
            continue;
        }
        t->seen[t->n++] = rc;
        if (rc != -EIO)
            return rc;
        rc = cio_gen_yield(g, IV(100 + t->n), NULL);
    }
}

START_TEST(gen_throw)
{
    thrown_t t = {{0}, 0};
    cio_gen_t *g;
    ck_assert_int_eq(cio_gen_new(&g, body_catch_eio, &t), 0);
    void *v;
    ck_assert_int_eq(cio_gen_next(g, &v), 1);
    ck_assert_int_eq(VI(v), 1);
    /* Handled: the body yields again and throw returns that value. */
    ck_assert_int_eq(cio_gen_throw(g, -EIO, &v), 1);
    ck_assert_int_eq(VI(v), 101);
    ck_assert_int_eq(cio_gen_get_state(g), CIO_GEN_SUSPENDED);
    ck_assert_int_eq(cio_gen_next(g, &v), 1);
    ck_assert_int_eq(VI(v), 2);
    /* Passed on: throw returns the error and the generator is closed. */
    v = &v;
    ck_assert_int_eq(cio_gen_throw(g, -EPIPE, &v), -EPIPE);
    ck_assert_ptr_null(v);
    ck_assert_int_eq(cio_gen_get_state(g), CIO_GEN_CLOSED);
    ck_assert_int_eq(t.n, 2);
    ck_assert_int_eq(t.seen[0], -EIO);
    ck_assert_int_eq(t.seen[1], -EPIPE);
    ck_assert_int_eq(cio_gen_result(g, NULL), -EPIPE);
    /* Throwing into a closed generator raises in the caller. */
    ck_assert_int_eq(cio_gen_throw(g, -EBADF, NULL), -EBADF);
    ck_assert_int_eq(t.n, 2);
    ck_assert_int_eq(cio_gen_free(g), 0);
}
END_TEST

START_TEST(gen_throw_into_created)
{
    probe_t *p = new_probe(3);
    cio_gen_t *g;
    ck_assert_int_eq(cio_gen_new(&g, body_count, p), 0);
    ck_assert_int_eq(cio_gen_throw(g, -ENOENT, NULL), -ENOENT);
    ck_assert(!p->started); /* raised before the first line */
    ck_assert_int_eq(cio_gen_get_state(g), CIO_GEN_CLOSED);
    ck_assert_int_eq(cio_gen_result(g, NULL), -ENOENT);
    ck_assert_int_eq(cio_gen_next(g, NULL), 0);
    ck_assert(!p->started);
    ck_assert_int_eq(cio_gen_free(g), 0);
}
END_TEST

static int body_fail_after_one(cio_gen_t *g, void *arg)
{
    (void)arg;
    cio_gen_yield(g, IV(1), NULL);
    return -EIO;
}

START_TEST(gen_body_failure)
{
    cio_gen_t *g;
    ck_assert_int_eq(cio_gen_new(&g, body_fail_after_one, NULL), 0);
    void *v;
    ck_assert_int_eq(cio_gen_next(g, &v), 1);
    v = &v;
    ck_assert_int_eq(cio_gen_next(g, &v), -EIO);
    ck_assert_ptr_null(v);
    ck_assert_int_eq(cio_gen_get_state(g), CIO_GEN_CLOSED);
    ck_assert_int_eq(cio_gen_result(g, NULL), -EIO);
    /* Afterwards: exhausted, like Python after an exception escaped. */
    ck_assert_int_eq(cio_gen_next(g, &v), 0);
    ck_assert_int_eq(cio_gen_close(g), 0);
    ck_assert_int_eq(cio_gen_free(g), 0);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* close in every state                                                      */
/* ------------------------------------------------------------------------ */

START_TEST(gen_close_created)
{
    probe_t *p = new_probe(3);
    cio_gen_t *g;
    ck_assert_int_eq(cio_gen_new(&g, body_count, p), 0);
    ck_assert_int_eq(cio_gen_close(g), 0);
    ck_assert(!p->started); /* just marked closed */
    ck_assert_int_eq(cio_gen_get_state(g), CIO_GEN_CLOSED);
    ck_assert_int_eq(cio_gen_result(g, NULL), -ECANCELED);
    ck_assert_int_eq(cio_gen_next(g, NULL), 0);
    ck_assert_int_eq(cio_gen_close(g), 0); /* twice */
    ck_assert(!p->started);
    ck_assert_int_eq(cio_gen_free(g), 0);
}
END_TEST

START_TEST(gen_close_suspended)
{
    probe_t *p = new_probe(10);
    cio_gen_t *g;
    ck_assert_int_eq(cio_gen_new(&g, body_count, p), 0);
    void *v;
    ck_assert_int_eq(cio_gen_next(g, &v), 1);
    ck_assert_int_eq(cio_gen_next(g, &v), 1);
    ck_assert(!p->cleaned);
    ck_assert_int_eq(cio_gen_close(g), 0);
    /* The pending yield returned -ECANCELED and the cleanup ran. */
    ck_assert_int_eq(p->last_rc, -ECANCELED);
    ck_assert(p->cleaned);
    ck_assert_int_eq(cio_gen_get_state(g), CIO_GEN_CLOSED);
    void *r = NULL;
    ck_assert_int_eq(cio_gen_result(g, &r), -ECANCELED);
    ck_assert_ptr_eq(r, &marker_result);
    ck_assert_int_eq(cio_gen_close(g), 0); /* closed twice */
    ck_assert_int_eq(cio_gen_next(g, &v), 0);
    ck_assert_int_eq(cio_gen_free(g), 0);
}
END_TEST

START_TEST(gen_close_exhausted)
{
    probe_t *p = new_probe(1);
    cio_gen_t *g;
    ck_assert_int_eq(cio_gen_new(&g, body_count, p), 0);
    ck_assert_int_eq(cio_gen_next(g, NULL), 1);
    ck_assert_int_eq(cio_gen_next(g, NULL), 0);
    ck_assert_int_eq(cio_gen_close(g), 0);
    ck_assert_int_eq(cio_gen_close(g), 0);
    ck_assert_int_eq(cio_gen_result(g, NULL), 0); /* the body's status stays */
    ck_assert_int_eq(p->last_rc, 0);
    ck_assert_int_eq(cio_gen_free(g), 0);
}
END_TEST

/* Catches the close and returns a value (Python 3.13: close() returns it). */
static int body_close_returns_value(cio_gen_t *g, void *arg)
{
    (void)arg;
    while (cio_gen_yield(g, NULL, NULL) == 0)
        ;
    cio_gen_set_result(g, &marker_result);
    return 0;
}

START_TEST(gen_close_body_returns_value)
{
    cio_gen_t *g;
    ck_assert_int_eq(cio_gen_new(&g, body_close_returns_value, NULL), 0);
    ck_assert_int_eq(cio_gen_next(g, NULL), 1);
    ck_assert_int_eq(cio_gen_close(g), 0);
    void *r = NULL;
    ck_assert_int_eq(cio_gen_result(g, &r), 0);
    ck_assert_ptr_eq(r, &marker_result);
    ck_assert_int_eq(cio_gen_free(g), 0);
}
END_TEST

typedef struct ignorer {
    int after_close[8];
    int n;
    int finished;
} ignorer_t;

/* Ignores the close: yields three more times, then ends. */
static int body_ignore_close(cio_gen_t *g, void *arg)
{
    ignorer_t *ig = arg;
    while (cio_gen_yield(g, IV(1), NULL) == 0)
        ;
    for (int i = 0; i < 3; i++)
        ig->after_close[ig->n++] = cio_gen_yield(g, IV(2), NULL);
    ig->finished = 1;
    return 0;
}

START_TEST(gen_close_ignored)
{
    ignorer_t ig;
    memset(&ig, 0, sizeof ig);
    cio_gen_t *g;
    ck_assert_int_eq(cio_gen_new(&g, body_ignore_close, &ig), 0);
    ck_assert_int_eq(cio_gen_next(g, NULL), 1);
    /* Python: RuntimeError("generator ignored GeneratorExit"). */
    ck_assert_int_eq(cio_gen_close(g), -EPROTO);
    /* Level-triggered: every later yield returned -ECANCELED at once, so
     * the body still ran to its end. */
    ck_assert_int_eq(ig.n, 3);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(ig.after_close[i], -ECANCELED);
    ck_assert(ig.finished);
    ck_assert_int_eq(cio_gen_get_state(g), CIO_GEN_CLOSED);
    ck_assert_int_eq(cio_gen_close(g), 0);
    ck_assert_int_eq(cio_gen_free(g), 0);
}
END_TEST

/* The cleanup after the close fails: close reports that error. */
static int body_cleanup_fails(cio_gen_t *g, void *arg)
{
    (void)arg;
    int rc = cio_gen_yield(g, NULL, NULL);
    return rc == -ECANCELED ? -EIO : 0;
}

START_TEST(gen_close_cleanup_fails)
{
    cio_gen_t *g;
    ck_assert_int_eq(cio_gen_new(&g, body_cleanup_fails, NULL), 0);
    ck_assert_int_eq(cio_gen_next(g, NULL), 1);
    ck_assert_int_eq(cio_gen_close(g), -EIO);
    ck_assert_int_eq(cio_gen_get_state(g), CIO_GEN_CLOSED);
    ck_assert_int_eq(cio_gen_result(g, NULL), -EIO);
    ck_assert_int_eq(cio_gen_free(g), 0);
}
END_TEST

START_TEST(gen_free_closes_suspended)
{
    probe_t *p = new_probe(5);
    cio_gen_t *g;
    ck_assert_int_eq(cio_gen_new(&g, body_count, p), 0);
    ck_assert_int_eq(cio_gen_next(g, NULL), 1);
    ck_assert_int_eq(cio_gen_free(g), 0);
    ck_assert(p->cleaned);
    ck_assert_int_eq(p->last_rc, -ECANCELED);
    /* free reports what close reported */
    cio_gen_t *h;
    ck_assert_int_eq(cio_gen_new(&h, body_cleanup_fails, NULL), 0);
    ck_assert_int_eq(cio_gen_next(h, NULL), 1);
    ck_assert_int_eq(cio_gen_free(h), -EIO);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Refusals while running or from the wrong stack                            */
/* ------------------------------------------------------------------------ */

typedef struct selfcall {
    int send_rc, next_rc, throw_rc, close_rc, free_rc, state;
} selfcall_t;

static int body_calls_itself(cio_gen_t *g, void *arg)
{
    selfcall_t *s = arg;
    s->send_rc = cio_gen_send(g, IV(1), NULL);
    s->next_rc = cio_gen_next(g, NULL);
    s->throw_rc = cio_gen_throw(g, -EIO, NULL);
    s->close_rc = cio_gen_close(g);
    s->free_rc = cio_gen_free(g);
    s->state = cio_gen_get_state(g);
    return 0;
}

START_TEST(gen_running_refusals)
{
    selfcall_t s;
    memset(&s, 0, sizeof s);
    cio_gen_t *g;
    ck_assert_int_eq(cio_gen_new(&g, body_calls_itself, &s), 0);
    ck_assert_int_eq(cio_gen_next(g, NULL), 0);
    ck_assert_int_eq(s.send_rc, -EBUSY);
    ck_assert_int_eq(s.next_rc, -EBUSY);
    ck_assert_int_eq(s.throw_rc, -EBUSY);
    ck_assert_int_eq(s.close_rc, -EBUSY);
    ck_assert_int_eq(s.free_rc, -EBUSY);
    ck_assert_int_eq(s.state, CIO_GEN_RUNNING);
    ck_assert_int_eq(cio_gen_free(g), 0);
}
END_TEST

START_TEST(gen_yield_from_wrong_place)
{
    probe_t *p = new_probe(3);
    cio_gen_t *g;
    ck_assert_int_eq(cio_gen_new(&g, body_count, p), 0);
    void *s = &s;
    /* Not started, suspended: the caller is not the body. */
    ck_assert_int_eq(cio_gen_yield(g, NULL, &s), -EPERM);
    ck_assert_ptr_null(s);
    ck_assert_int_eq(cio_gen_next(g, NULL), 1);
    ck_assert_int_eq(cio_gen_yield(g, NULL, NULL), -EPERM);
    ck_assert_int_eq(cio_gen_get_state(g), CIO_GEN_SUSPENDED);
    ck_assert_int_eq(cio_gen_next(g, &s), 1);
    ck_assert_int_eq(VI(s), 2);
    ck_assert_int_eq(cio_gen_free(g), 0);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Nesting: a generator driving another                                      */
/* ------------------------------------------------------------------------ */

typedef struct outer_arg {
    int limit;
    int wrong_yield_rc;   /* inner body yielding the outer generator */
    cio_gen_t *outer;
} outer_arg_t;

/* Yields 1..limit; once tries to yield the outer generator (refused). */
static int body_inner(cio_gen_t *g, void *arg)
{
    outer_arg_t *a = arg;
    a->wrong_yield_rc = cio_gen_yield(a->outer, IV(-1), NULL);
    for (int i = 1; i <= a->limit; i++) {
        int rc = cio_gen_yield(g, IV(i), NULL);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* yield from inner, doubled; the inner generator's sum is the result. */
static int body_outer(cio_gen_t *g, void *arg)
{
    outer_arg_t *a = arg;
    a->outer = g;
    cio_gen_t *inner;
    int rc = cio_gen_new(&inner, body_inner, a);
    if (rc < 0)
        return rc;
    void *v;
    intptr_t sum = 0;
    while ((rc = cio_gen_next(inner, &v)) == 1) {
        sum += VI(v);
        int yrc = cio_gen_yield(g, IV(2 * VI(v)), NULL);
        if (yrc < 0) {
            rc = yrc;
            break;
        }
    }
    int frc = cio_gen_free(inner); /* closes it on the early exit */
    cio_gen_set_result(g, IV(sum));
    return rc < 0 ? rc : frc;
}

static void check_nesting(void)
{
    outer_arg_t a = {.limit = 5, .wrong_yield_rc = 12345, .outer = NULL};
    cio_gen_t *g;
    ck_assert_int_eq(cio_gen_new(&g, body_outer, &a), 0);
    void *v;
    for (int i = 1; i <= 5; i++) {
        ck_assert_int_eq(cio_gen_next(g, &v), 1);
        ck_assert_int_eq(VI(v), 2 * i);
    }
    ck_assert_int_eq(cio_gen_next(g, &v), 0);
    ck_assert_int_eq(VI(v), 15);
    ck_assert_int_eq(a.wrong_yield_rc, -EPERM);
    ck_assert_int_eq(cio_gen_free(g), 0);

    /* Early exit: closing the outer one closes the inner one too. */
    ck_assert_int_eq(cio_gen_new(&g, body_outer, &a), 0);
    ck_assert_int_eq(cio_gen_next(g, &v), 1);
    ck_assert_int_eq(cio_gen_next(g, &v), 1);
    ck_assert_int_eq(cio_gen_close(g), 0);
    ck_assert_int_eq(cio_gen_result(g, &v), -ECANCELED);
    ck_assert_int_eq(VI(v), 3);
    ck_assert_int_eq(cio_gen_free(g), 0);
}

START_TEST(gen_nesting_outside_loop)
{
    check_nesting();
}
END_TEST

/* Many generators alive at once, each suspended, then freed. */
START_TEST(gen_many_alive_then_freed)
{
    enum { N = 200 };
    static cio_gen_t *gs[N];
    for (int i = 0; i < N; i++) {
        ck_assert_int_eq(cio_gen_new(&gs[i], body_plus_one, NULL), 0);
        ck_assert_ptr_nonnull(gs[i]);
        if (i % 3) /* a third stay created */
            ck_assert_int_eq(cio_gen_send(gs[i], NULL, NULL), 1);
    }
    for (int i = 0; i < N; i++) {
        void *v;
        if (i % 3) {
            ck_assert_int_eq(cio_gen_send(gs[i], IV(i), &v), 1);
            ck_assert_int_eq(VI(v), i + 1);
        }
    }
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(cio_gen_free(gs[i]), 0);
    /* Stacks are reused: many more short generators than slab stacks. */
    for (int i = 0; i < 5000; i++) {
        cio_gen_t *g;
        ck_assert_int_eq(cio_gen_new(&g, body_empty, NULL), 0);
        ck_assert_int_eq(cio_gen_next(g, NULL), 0);
        ck_assert_int_eq(cio_gen_free(g), 0);
    }
}
END_TEST

/* A custom (unpooled) stack size and a deep but bounded recursion. */
static __attribute__((noinline)) long deep(volatile char *prev, long depth, long limit)
{
    volatile char buf[512];
    buf[0] = (char)(depth & 1);
    buf[1] = prev ? prev[0] : 0;
    buf[511] = 1;
    if (depth >= limit)
        return buf[0];
    return deep(buf, depth + 1, limit) + buf[511];
}

static int body_deep(cio_gen_t *g, void *arg)
{
    long limit = *(long *)arg;
    long r = deep(NULL, 0, limit);
    cio_gen_yield(g, IV(r), NULL);
    return 0;
}

START_TEST(gen_custom_stack_size)
{
    long limit = 1000; /* about 600 KiB of frames */
    cio_gen_opts_t o = {.name = "big", .stack_size = 2u * 1024u * 1024u};
    cio_gen_t *g;
    ck_assert_int_eq(cio_gen_new_ex(&g, body_deep, &limit, &o), 0);
    void *v;
    ck_assert_int_eq(cio_gen_next(g, &v), 1);
    ck_assert_int_eq(VI(v), limit + (limit & 1));
    ck_assert_int_eq(cio_gen_next(g, &v), 0);
    ck_assert_int_eq(cio_gen_free(g), 0);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Inside tasks                                                              */
/* ------------------------------------------------------------------------ */

static int main_basic_in_task(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_gen_t *g;
    ck_assert_int_eq(cio_gen_new(&g, body_plus_one, NULL), 0);
    void *v;
    ck_assert_int_eq(cio_gen_send(g, NULL, &v), 1);
    intptr_t x = 0;
    for (int i = 0; i < 10000; i++) {
        ck_assert_int_eq(cio_gen_send(g, IV(x), &v), 1);
        x = VI(v);
    }
    ck_assert_int_eq(x, 10000);
    ck_assert_int_eq(cio_gen_free(g), 0);
    check_nesting();
    /* The task's own stack is in force again: awaiting still works. */
    ck_assert_int_eq(cio_sleep(0), 0);
    return 0;
}

START_TEST(gen_inside_task)
{
    RUN_MAIN(main_basic_in_task, NULL);
}
END_TEST

/* Two tasks, each driving its generator, interleaved through the loop. */
typedef struct driver {
    cio_gen_t *g;
    intptr_t got[8];
    int n;
} driver_t;

static int task_drive_yielding(void *arg, void **result)
{
    (void)result;
    driver_t *d = arg;
    void *v;
    while (cio_gen_next(d->g, &v) == 1) {
        d->got[d->n++] = VI(v);
        ck_assert_int_eq(cio_yield(), 0);
    }
    return 0;
}

static int main_two_tasks(void *arg, void **result)
{
    (void)arg;
    (void)result;
    probe_t pa, pb;
    memset(&pa, 0, sizeof pa);
    memset(&pb, 0, sizeof pb);
    pa.limit = 4;
    pb.limit = 4;
    driver_t a = {.g = NULL, .got = {0}, .n = 0};
    driver_t b = {.g = NULL, .got = {0}, .n = 0};
    ck_assert_int_eq(cio_gen_new(&a.g, body_count, &pa), 0);
    ck_assert_int_eq(cio_gen_new(&b.g, body_count, &pb), 0);
    cio_task_t *ta;
    ck_assert_int_eq(cio_spawn(&ta, task_drive_yielding, &a), 0);
    cio_task_t *tb;
    ck_assert_int_eq(cio_spawn(&tb, task_drive_yielding, &b), 0);
    ck_assert_int_eq(cio_await(ta, NULL), 0);
    ck_assert_int_eq(cio_await(tb, NULL), 0);
    ck_assert_int_eq(a.n, 4);
    ck_assert_int_eq(b.n, 4);
    for (int i = 0; i < 4; i++)
        ck_assert(a.got[i] == i + 1 && b.got[i] == i + 1);
    cio_future_release(ta);
    cio_future_release(tb);
    ck_assert_int_eq(cio_gen_free(a.g), 0);
    ck_assert_int_eq(cio_gen_free(b.g), 0);
    return 0;
}

START_TEST(gen_two_tasks_interleaved)
{
    RUN_MAIN(main_two_tasks, NULL);
}
END_TEST

/* One generator resumed by one task, then by another. */
static int task_next_once(void *arg, void **result)
{
    void *v = NULL;
    int rc = cio_gen_next(arg, &v);
    *result = v;
    return rc;
}

static int main_handed_over(void *arg, void **result)
{
    (void)arg;
    (void)result;
    probe_t *p = new_probe(3);
    cio_gen_t *g;
    ck_assert_int_eq(cio_gen_new(&g, body_count, p), 0);
    ck_assert_int_eq(cio_gen_next(g, NULL), 1); /* by main */
    for (int i = 2; i <= 3; i++) {
        cio_task_t *t;
        ck_assert_int_eq(cio_spawn(&t, task_next_once, g), 0);
        void *v = NULL;
        ck_assert_int_eq(cio_await(t, &v), 1);
        ck_assert_int_eq(VI(v), i);
        cio_future_release(t);
    }
    ck_assert_int_eq(cio_gen_next(g, NULL), 0);
    ck_assert_int_eq(cio_gen_free(g), 0);
    return 0;
}

START_TEST(gen_resumed_by_several_tasks)
{
    RUN_MAIN(main_handed_over, NULL);
}
END_TEST

/* A generator resumed from a plain loop callback (no task). */
typedef struct cb_state {
    cio_gen_t *g;
    int rc;
    intptr_t v;
} cb_state_t;

static void cb_next(void *arg)
{
    cb_state_t *s = arg;
    void *v = NULL;
    s->rc = cio_gen_next(s->g, &v);
    s->v = VI(v);
}

static int main_from_callback(void *arg, void **result)
{
    (void)arg;
    (void)result;
    probe_t *p = new_probe(2);
    cb_state_t s = {.g = NULL, .rc = 12345, .v = 0};
    ck_assert_int_eq(cio_gen_new(&s.g, body_count, p), 0);
    ck_assert_int_eq(cio_call_soon(cio_get_running_loop(), NULL, cb_next, &s), 0);
    ck_assert_int_eq(cio_sleep(0), 0);
    ck_assert_int_eq(s.rc, 1);
    ck_assert_int_eq(s.v, 1);
    ck_assert_int_eq(cio_gen_free(s.g), 0);
    return 0;
}

START_TEST(gen_from_loop_callback)
{
    RUN_MAIN(main_from_callback, NULL);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Async generators                                                          */
/* ------------------------------------------------------------------------ */

typedef struct ticker {
    int count;
    double delay;
    int sleep_rc[8];
    int nsleep;
    cio_task_t *task_seen;
    int cleanup_sleep_rc;
    int cleaned;
} ticker_t;

/* async def ticker(): for i in range(count): await sleep(delay); yield i */
static int body_ticker(cio_gen_t *g, void *arg)
{
    ticker_t *t = arg;
    t->task_seen = cio_current_task();
    int rc = 0;
    for (int i = 0; i < t->count && rc == 0; i++) {
        rc = cio_sleep(t->delay);
        t->sleep_rc[t->nsleep++] = rc;
        if (rc == 0)
            rc = cio_gen_yield(g, IV(i), NULL);
    }
    /* Cleanup that awaits (aclose from a task). */
    if (rc == -ECANCELED && cio_current_task() && !cio_task_cancelling(cio_current_task()))
        t->cleanup_sleep_rc = cio_sleep(D_SHORT);
    t->cleaned = 1;
    return rc;
}

typedef struct busy {
    cio_gen_t *g;
    int send_rc, state, ticks;
    volatile int stop;
} busy_t;

/* Runs while the generator's body sleeps: the loop is not blocked. */
static int task_busy(void *arg, void **result)
{
    (void)result;
    busy_t *b = arg;
    b->send_rc = cio_gen_send(b->g, NULL, NULL);
    b->state = cio_gen_get_state(b->g);
    while (!b->stop) {
        b->ticks++;
        if (cio_sleep(D_SHORT / 4) < 0)
            break;
    }
    return 0;
}

static int main_async_for(void *arg, void **result)
{
    (void)arg;
    (void)result;
    ticker_t t;
    memset(&t, 0, sizeof t);
    t.count = 3;
    t.delay = D_SHORT;
    cio_gen_t *g;
    ck_assert_int_eq(cio_gen_new(&g, body_ticker, &t), 0);
    busy_t b = {.g = g, .send_rc = 12345, .state = -1, .ticks = 0, .stop = 0};
    cio_task_t *bt;
    ck_assert_int_eq(cio_spawn(&bt, task_busy, &b), 0);
    int64_t t0 = loop_ns();
    void *v;
    int rc, n = 0;
    /* async for v in ticker(): */
    while ((rc = cio_gen_next(g, &v)) == 1) {
        ck_assert_int_eq(VI(v), n);
        n++;
    }
    int64_t dt = loop_ns() - t0;
    ck_assert_int_eq(rc, 0);
    ck_assert_int_eq(n, 3);
    ck_assert_int_ge(dt, 3 * NS_SHORT);
    ck_assert_ptr_eq(t.task_seen, cio_current_task());
    /* The other task ran while the body slept, and found it running. */
    ck_assert_int_eq(b.send_rc, -EBUSY);
    ck_assert_int_eq(b.state, CIO_GEN_RUNNING);
    ck_assert_int_gt(b.ticks, 2);
    b.stop = 1;
    ck_assert_int_eq(cio_await(bt, NULL), 0);
    cio_future_release(bt);
    ck_assert_int_eq(cio_gen_free(g), 0);
    return 0;
}

START_TEST(gen_async_for)
{
    RUN_MAIN(main_async_for, NULL);
}
END_TEST

/* Early exit from an async for: aclose runs a cleanup that awaits. */
static int main_aclose(void *arg, void **result)
{
    (void)arg;
    (void)result;
    ticker_t t;
    memset(&t, 0, sizeof t);
    t.count = 5;
    t.delay = 0;
    cio_gen_t *g;
    ck_assert_int_eq(cio_gen_new(&g, body_ticker, &t), 0);
    void *v;
    int rc;
    while ((rc = cio_gen_next(g, &v)) == 1)
        if (VI(v) == 1)
            break;
    ck_assert_int_eq(rc, 1);
    int64_t t0 = loop_ns();
    ck_assert_int_eq(cio_gen_aclose(g), 0);
    ck_assert_int_ge(loop_ns() - t0, NS_SHORT);
    ck_assert_int_eq(t.cleanup_sleep_rc, 0);
    ck_assert(t.cleaned);
    ck_assert_int_eq(cio_gen_get_state(g), CIO_GEN_CLOSED);
    ck_assert_int_eq(cio_gen_free(g), 0);
    return 0;
}

START_TEST(gen_async_aclose)
{
    RUN_MAIN(main_aclose, NULL);
}
END_TEST

typedef struct consumer {
    cio_gen_t *g;
    int next_rc;
    int reached_end;
} consumer_t;

static int task_consume(void *arg, void **result)
{
    (void)result;
    consumer_t *c = arg;
    void *v;
    while ((c->next_rc = cio_gen_next(c->g, &v)) == 1)
        ;
    c->reached_end = 1;
    return c->next_rc;
}

/* The task driving an async generator is cancelled while the body awaits. */
static int main_async_cancel(void *arg, void **result)
{
    (void)arg;
    (void)result;
    ticker_t t;
    memset(&t, 0, sizeof t);
    t.count = 3;
    t.delay = 30.0; /* would hang without the cancellation */
    cio_gen_t *g;
    ck_assert_int_eq(cio_gen_new(&g, body_ticker, &t), 0);
    consumer_t c = {.g = g, .next_rc = 12345, .reached_end = 0};
    cio_task_t *ct;
    ck_assert_int_eq(cio_spawn(&ct, task_consume, &c), 0);
    ck_assert_int_eq(cio_sleep(D_SHORT), 0);
    ck_assert_int_eq(cio_gen_get_state(g), CIO_GEN_RUNNING);
    double t0 = mono_now();
    ck_assert_int_eq(cio_task_cancel(ct), 1);
    ck_assert_int_eq(cio_await(ct, NULL), -ECANCELED);
    ck_assert(mono_now() - t0 < HANG_BOUND_S);
    ck_assert(cio_future_cancelled(ct));
    /* The await inside the body returned -ECANCELED, the body returned it,
     * and cio_gen_next returned it to the task. */
    ck_assert_int_eq(t.nsleep, 1);
    ck_assert_int_eq(t.sleep_rc[0], -ECANCELED);
    ck_assert(t.cleaned);
    ck_assert(c.reached_end);
    ck_assert_int_eq(c.next_rc, -ECANCELED);
    ck_assert_int_eq(cio_gen_get_state(g), CIO_GEN_CLOSED);
    ck_assert_int_eq(cio_gen_result(g, NULL), -ECANCELED);
    cio_future_release(ct);
    ck_assert_int_eq(cio_gen_free(g), 0);
    return 0;
}

START_TEST(gen_async_cancelled_while_awaiting)
{
    RUN_MAIN(main_async_cancel, NULL);
}
END_TEST

/* An async generator body awaiting outside any task gets -EPERM. */
START_TEST(gen_async_outside_task)
{
    ticker_t t;
    memset(&t, 0, sizeof t);
    t.count = 2;
    t.delay = D_SHORT;
    cio_gen_t *g;
    ck_assert_int_eq(cio_gen_new(&g, body_ticker, &t), 0);
    ck_assert_int_eq(cio_gen_next(g, NULL), -EPERM);
    ck_assert_int_eq(t.sleep_rc[0], -EPERM);
    ck_assert_ptr_null(t.task_seen);
    ck_assert_int_eq(cio_gen_free(g), 0);
}
END_TEST

/* A cancel scope left open across a yield is refused. */
typedef struct scoped {
    int open_rc, closed_rc, exit_rc;
} scoped_t;

static int body_scoped(cio_gen_t *g, void *arg)
{
    scoped_t *s = arg;
    cio_scope_t sc;
    if (cio_scope_enter(&sc, INFINITY, 0))
        return -EIO;
    s->open_rc = cio_gen_yield(g, IV(1), NULL);
    s->exit_rc = cio_scope_exit(&sc);
    s->closed_rc = cio_gen_yield(g, IV(2), NULL);
    return 0;
}

static int main_scope_across_yield(void *arg, void **result)
{
    (void)arg;
    (void)result;
    scoped_t s = {12345, 12345, 12345};
    cio_gen_t *g;
    ck_assert_int_eq(cio_gen_new(&g, body_scoped, &s), 0);
    void *v;
    ck_assert_int_eq(cio_gen_next(g, &v), 1);
    ck_assert_int_eq(VI(v), 2);
    ck_assert_int_eq(s.open_rc, -EINVAL);
    ck_assert_int_eq(s.exit_rc, 0);
    ck_assert_int_eq(s.closed_rc, 12345); /* pending */
    ck_assert_int_eq(cio_gen_next(g, &v), 0);
    ck_assert_int_eq(s.closed_rc, 0);
    ck_assert_int_eq(cio_gen_free(g), 0);
    return 0;
}

START_TEST(gen_scope_across_yield)
{
    RUN_MAIN(main_scope_across_yield, NULL);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Threads: each thread's own pool                                           */
/* ------------------------------------------------------------------------ */

static void *thread_gens(void *arg)
{
    (void)arg;
    for (int k = 0; k < 50; k++) {
        cio_gen_t *g;
        ck_assert_int_eq(cio_gen_new(&g, body_plus_one, NULL), 0);
        void *v;
        if (cio_gen_send(g, NULL, &v) != 1)
            return IV(1);
        intptr_t x = 0;
        for (int i = 0; i < 100; i++) {
            if (cio_gen_send(g, IV(x), &v) != 1)
                return IV(2);
            x = VI(v);
        }
        if (x != 100 || cio_gen_free(g) != 0)
            return IV(3);
    }
    return NULL;
}

START_TEST(gen_in_threads)
{
    pthread_t th[3];
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, thread_gens, NULL), 0);
    for (int i = 0; i < 3; i++) {
        void *r = IV(9);
        ck_assert_int_eq(pthread_join(th[i], &r), 0);
        ck_assert_ptr_null(r);
    }
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Overflow, in a child process                                              */
/* ------------------------------------------------------------------------ */

static int body_unbounded(cio_gen_t *g, void *arg)
{
    (void)g;
    (void)arg;
    return (int)(deep(NULL, 0, 1L << 40) & 1); /* no practical bound */
}

static void overflow_outside(void)
{
    cio_gen_opts_t o = {.name = "runaway-gen", .stack_size = 0};
    cio_gen_t *g;
    ck_assert_int_eq(cio_gen_new_ex(&g, body_unbounded, NULL, &o), 0);
    cio_gen_next(g, NULL);
}

static int main_overflow(void *arg, void **result)
{
    (void)arg;
    (void)result;
    overflow_outside();
    return 0;
}

static void overflow_in_task(void)
{
    cio_run(main_overflow, NULL);
}

struct fnbox {
    void (*fn)(void);
};

static void call_boxed(void *arg)
{
    ((struct fnbox *)arg)->fn();
    fprintf(stderr, "survived an unbounded recursion\n");
}

/* Runs fn in a child and checks it died reporting an overflow of `name`. */
static void expect_overflow_report(void (*fn)(void), const char *name)
{
    int st = 0;
    struct fnbox box = {fn};
    const char *out = run_child_stderr(call_boxed, &box, &st);
    assert_overflow_death(st, out);
    ck_assert_msg(strstr(out, name) != NULL,
                  "the report does not name generator \"%s\":\n%s", name, out);
}

START_TEST(gen_overflow_outside_loop)
{
    expect_overflow_report(overflow_outside, "runaway-gen");
}
END_TEST

START_TEST(gen_overflow_in_task)
{
    expect_overflow_report(overflow_in_task, "runaway-gen");
}
END_TEST

/* ------------------------------------------------------------------------ */

static Suite *gen_suite(void)
{
    Suite *s = suite_create("gen");
    TCase *tc = add_tcase(s, "protocol", TEST_TIMEOUT);
    tcase_add_test(tc, gen_next_states_and_result);
    tcase_add_test(tc, gen_empty_body);
    tcase_add_test(tc, gen_names_and_bad_args);
    tcase_add_test(tc, gen_send_round_trips);
    tcase_add_test(tc, gen_send_values_received);
    tcase_add_test(tc, gen_throw);
    tcase_add_test(tc, gen_throw_into_created);
    tcase_add_test(tc, gen_body_failure);

    tc = add_tcase(s, "close", TEST_TIMEOUT);
    tcase_add_test(tc, gen_close_created);
    tcase_add_test(tc, gen_close_suspended);
    tcase_add_test(tc, gen_close_exhausted);
    tcase_add_test(tc, gen_close_body_returns_value);
    tcase_add_test(tc, gen_close_ignored);
    tcase_add_test(tc, gen_close_cleanup_fails);
    tcase_add_test(tc, gen_free_closes_suspended);
    tcase_add_test(tc, gen_running_refusals);
    tcase_add_test(tc, gen_yield_from_wrong_place);

    tc = add_tcase(s, "stacks", TEST_TIMEOUT);
    tcase_add_test(tc, gen_nesting_outside_loop);
    tcase_add_test(tc, gen_many_alive_then_freed);
    tcase_add_test(tc, gen_custom_stack_size);
    tcase_add_test(tc, gen_in_threads);

    tc = add_tcase(s, "tasks", TEST_TIMEOUT);
    tcase_add_test(tc, gen_inside_task);
    tcase_add_test(tc, gen_two_tasks_interleaved);
    tcase_add_test(tc, gen_resumed_by_several_tasks);
    tcase_add_test(tc, gen_from_loop_callback);
    tcase_add_test(tc, gen_async_for);
    tcase_add_test(tc, gen_async_aclose);
    tcase_add_test(tc, gen_async_cancelled_while_awaiting);
    tcase_add_test(tc, gen_async_outside_task);
    tcase_add_test(tc, gen_scope_across_yield);

    tc = add_tcase(s, "overflow", 40);
    tcase_add_test(tc, gen_overflow_outside_loop);
    tcase_add_test(tc, gen_overflow_in_task);
    return s;
}

CIO_TEST_MAIN(gen_suite)
