/*
 * Queues (queue.c): FIFO, LIFO and priority order, maxsize, the nowait
 * forms (-EAGAIN for asyncio's QueueFull / QueueEmpty), suspension of put
 * and get, strict FIFO service of waiting tasks, task_done / join, Python
 * 3.13 shutdown (plain and immediate), timeouts through scopes,
 * level-triggered cancellation, bad input, and the race that lost items in
 * asyncio: a getter cancelled while an item is handed to it (bpo-23812).
 * Every item is counted: none may be lost or duplicated.
 */
#include "cio_test.h"

static cio_queue_t g_q;




#define ITEM(i) ((void *)(intptr_t)(i))
#define VAL(p) ((int)(intptr_t)(p))

static uint32_t xs_state = 2463534242u;

static uint32_t xorshift(void)
{
    uint32_t x = xs_state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return xs_state = x;
}

/* ------------------------------------------------------------------------ */
/* Order, sizes, nowait forms, bad input                                     */
/* ------------------------------------------------------------------------ */

START_TEST(fifo_nowait)
{
    cio_queue_t q;
    void *it = NULL;
    ck_assert_int_eq(cio_queue_init(&q, 3), 0);
    ck_assert_uint_eq(cio_queue_maxsize(&q), 3);
    ck_assert(cio_queue_empty(&q));
    ck_assert(!cio_queue_full(&q));
    ck_assert_int_eq(cio_queue_get_nowait(&q, &it), -EAGAIN); /* QueueEmpty */
    ck_assert_int_eq(cio_queue_put_nowait(&q, ITEM(1)), 0);
    ck_assert_int_eq(cio_queue_put_nowait(&q, NULL), 0);      /* NULL is an item */
    ck_assert_int_eq(cio_queue_put_nowait(&q, ITEM(3)), 0);
    ck_assert(cio_queue_full(&q));
    ck_assert_uint_eq(cio_queue_qsize(&q), 3);
    ck_assert_int_eq(cio_queue_put_nowait(&q, ITEM(4)), -EAGAIN); /* QueueFull */
    ck_assert_uint_eq(cio_queue_unfinished(&q), 3);
    ck_assert_int_eq(cio_queue_get_nowait(&q, &it), 0);
    ck_assert_int_eq(VAL(it), 1);
    it = ITEM(99);
    ck_assert_int_eq(cio_queue_get_nowait(&q, &it), 0);
    ck_assert_ptr_null(it);
    ck_assert_int_eq(cio_queue_get_nowait(&q, &it), 0);
    ck_assert_int_eq(VAL(it), 3);
    ck_assert(cio_queue_empty(&q));
    /* Wrap around the ring many times. */
    for (int i = 0; i < 100; i++) {
        ck_assert_int_eq(cio_queue_put_nowait(&q, ITEM(i)), 0);
        ck_assert_int_eq(cio_queue_put_nowait(&q, ITEM(i + 1000)), 0);
        ck_assert_int_eq(cio_queue_get_nowait(&q, &it), 0);
        ck_assert_int_eq(VAL(it), i);
        ck_assert_int_eq(cio_queue_get_nowait(&q, &it), 0);
        ck_assert_int_eq(VAL(it), i + 1000);
    }
    /* Await points refuse outside a task; the rest works anywhere. */
    ck_assert_int_eq(cio_queue_put(&q, ITEM(1)), -EPERM);
    ck_assert_int_eq(cio_queue_get(&q, &it), -EPERM);
    ck_assert_int_eq(cio_queue_join(&q), -EPERM);
    ck_assert_int_eq(cio_queue_destroy(&q), 0);
    ck_assert_int_eq(cio_queue_destroy(&q), 0); /* idempotent */
    ck_assert_int_eq(cio_queue_put_nowait(&q, ITEM(1)), -EINVAL);
    ck_assert_int_eq(cio_queue_get_nowait(&q, &it), -EINVAL);
}
END_TEST

static int cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

START_TEST(lifo_and_priority_order)
{
    cio_queue_t q;
    void *it;
    ck_assert_int_eq(cio_queue_init_lifo(&q, 0), 0);
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(cio_queue_put_nowait(&q, ITEM(i)), 0);
    for (int i = 4; i >= 0; i--) {
        ck_assert_int_eq(cio_queue_get_nowait(&q, &it), 0);
        ck_assert_int_eq(VAL(it), i);
    }
    ck_assert_int_eq(cio_queue_destroy(&q), 0);

    /* Priority: smallest first; equal keys in insertion order. */
    enum { N = 1000 };
    static int keys[N];
    ck_assert_int_eq(cio_queue_init_priority(&q, 0, cmp_int), 0);
    for (int i = 0; i < N; i++) {
        keys[i] = (int)(xorshift() % 50);
        ck_assert_int_eq(cio_queue_put_nowait(&q, &keys[i]), 0);
    }
    ck_assert_uint_eq(cio_queue_qsize(&q), N);
    const int *prev = NULL;
    for (int i = 0; i < N; i++) {
        ck_assert_int_eq(cio_queue_get_nowait(&q, &it), 0);
        const int *k = it;
        if (prev) {
            ck_assert_int_le(*prev, *k);
            if (*prev == *k)
                ck_assert((uintptr_t)prev < (uintptr_t)k); /* same key: put order */
        }
        prev = k;
    }
    ck_assert_int_eq(cio_queue_get_nowait(&q, &it), -EAGAIN);
    ck_assert_int_eq(cio_queue_destroy(&q), 0);
}
END_TEST

START_TEST(growth)
{
    cio_queue_t q;
    void *it;
    /* Unbounded: grows, keeping FIFO order across a wrapped ring. */
    ck_assert_int_eq(cio_queue_init(&q, 0), 0);
    ck_assert(!cio_queue_full(&q));
    for (int i = 0; i < 10; i++)
        ck_assert_int_eq(cio_queue_put_nowait(&q, ITEM(i)), 0);
    for (int i = 0; i < 7; i++)
        ck_assert_int_eq(cio_queue_get_nowait(&q, &it), 0);
    for (int i = 10; i < 100000; i++)
        ck_assert_int_eq(cio_queue_put_nowait(&q, ITEM(i)), 0);
    ck_assert(!cio_queue_full(&q));
    for (int i = 7; i < 100000; i++) {
        ck_assert_int_eq(cio_queue_get_nowait(&q, &it), 0);
        ck_assert_int_eq(VAL(it), i);
    }
    ck_assert_int_eq(cio_queue_destroy(&q), 0);
    /* Bounded above the preallocation: grows up to maxsize, no further. */
    ck_assert_int_eq(cio_queue_init(&q, 100000), 0);
    for (int i = 0; i < 100000; i++)
        ck_assert_int_eq(cio_queue_put_nowait(&q, ITEM(i)), 0);
    ck_assert(cio_queue_full(&q));
    ck_assert_int_eq(cio_queue_put_nowait(&q, ITEM(0)), -EAGAIN);
    for (int i = 0; i < 100000; i++) {
        ck_assert_int_eq(cio_queue_get_nowait(&q, &it), 0);
        ck_assert_int_eq(VAL(it), i);
    }
    ck_assert_int_eq(cio_queue_destroy(&q), 0);
}
END_TEST

START_TEST(bad_input)
{
    cio_queue_t q;
    void *it;
    ck_assert_int_eq(cio_queue_init(NULL, 1), -EINVAL);
    ck_assert_int_eq(cio_queue_init_lifo(NULL, 1), -EINVAL);
    ck_assert_int_eq(cio_queue_init_priority(&q, 1, NULL), -EINVAL);
    ck_assert_int_eq(cio_queue_put_nowait(NULL, NULL), -EINVAL);
    ck_assert_int_eq(cio_queue_get_nowait(NULL, &it), -EINVAL);
    ck_assert_int_eq(cio_queue_task_done(NULL), -EINVAL);
    ck_assert_int_eq(cio_queue_shutdown(NULL, false, NULL, NULL), 0); /* NULL: no-op */
    ck_assert_int_eq(cio_queue_destroy(NULL), 0);
    ck_assert_uint_eq(cio_queue_qsize(NULL), 0);
    ck_assert(cio_queue_empty(NULL));
    ck_assert(!cio_queue_full(NULL));
    ck_assert(!cio_queue_is_shutdown(NULL));
    ck_assert_int_eq(cio_queue_init(&q, 1), 0);
    ck_assert_int_eq(cio_queue_get_nowait(&q, NULL), -EINVAL);
    /* task_done more often than items: -EOVERFLOW, nothing changes. */
    ck_assert_int_eq(cio_queue_task_done(&q), -EOVERFLOW);
    ck_assert_int_eq(cio_queue_put_nowait(&q, ITEM(1)), 0);
    ck_assert_int_eq(cio_queue_task_done(&q), 0);
    ck_assert_int_eq(cio_queue_task_done(&q), -EOVERFLOW);
    ck_assert_uint_eq(cio_queue_unfinished(&q), 0);
    ck_assert_int_eq(cio_queue_destroy(&q), 0);
}
END_TEST

static int main_bad_input_task(void *arg, void **result)
{
    (void)arg;
    (void)result;
    void *it;
    ck_assert_int_eq(cio_queue_put(NULL, NULL), -EINVAL);
    ck_assert_int_eq(cio_queue_get(NULL, &it), -EINVAL);
    ck_assert_int_eq(cio_queue_join(NULL), -EINVAL);
    cio_queue_t q;
    memset(&q, 0, sizeof q); /* never initialised */
    ck_assert_int_eq(cio_queue_put(&q, NULL), -EINVAL);
    ck_assert_int_eq(cio_queue_init(&q, 1), 0);
    ck_assert_int_eq(cio_queue_get(&q, NULL), -EINVAL);
    ck_assert_int_eq(cio_queue_destroy(&q), 0);
    return 0;
}

START_TEST(bad_input_in_task)
{
    RUN_MAIN(main_bad_input_task, NULL);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Suspending put and get, FIFO service                                      */
/* ------------------------------------------------------------------------ */

typedef struct getter {
    int id;
    int rc;
    void *item;
    int after;  /* the await point after get */
} getter;

static int g_order[64], g_norder;

static int body_getter(void *arg, void **result)
{
    (void)result;
    getter *g = arg;
    g->rc = cio_queue_get(&g_q, &g->item);
    if (g->rc == 0)
        g_order[g_norder++] = g->id;
    g->after = cio_sleep(0);
    return g->rc;
}

typedef struct putter {
    int id;
    void *item;
    int rc;
} putter;

static int body_putter(void *arg, void **result)
{
    (void)result;
    putter *p = arg;
    p->rc = cio_queue_put(&g_q, p->item);
    if (p->rc == 0)
        g_order[g_norder++] = p->id;
    return p->rc;
}

static int main_getters_fifo(void *arg, void **result)
{
    (void)arg;
    (void)result;
    ck_assert_int_eq(cio_queue_init(&g_q, 2), 0);
    g_norder = 0;
    enum { N = 6 };
    getter g[N];
    cio_task_t *t[N];
    for (int i = 0; i < N; i++) {
        g[i] = (getter){i, 99, NULL, 99};
        t[i] = spawn(body_getter, &g[i]);
    }
    settle();
    for (int i = 0; i < N; i++) {
        /* A put with a getter waiting hands the item over directly. */
        ck_assert_int_eq(cio_queue_put(&g_q, ITEM(100 + i)), 0);
        ck_assert_uint_eq(cio_queue_qsize(&g_q), 0);
    }
    for (int i = 0; i < N; i++) {
        ck_assert_int_eq(finish(t[i]), 0);
        ck_assert_int_eq(VAL(g[i].item), 100 + i); /* first come, first served */
        ck_assert_int_eq(g_order[i], i);
    }
    ck_assert_uint_eq(cio_queue_unfinished(&g_q), N);
    ck_assert_int_eq(cio_queue_destroy(&g_q), 0);
    return 0;
}

START_TEST(getters_fifo)
{
    RUN_MAIN(main_getters_fifo, NULL);
}
END_TEST

static int main_putters_fifo(void *arg, void **result)
{
    (void)arg;
    (void)result;
    ck_assert_int_eq(cio_queue_init(&g_q, 2), 0);
    g_norder = 0;
    ck_assert_int_eq(cio_queue_put(&g_q, ITEM(0)), 0);
    ck_assert_int_eq(cio_queue_put(&g_q, ITEM(1)), 0);
    enum { N = 5 };
    putter p[N];
    cio_task_t *t[N];
    for (int i = 0; i < N; i++) {
        p[i] = (putter){i, ITEM(2 + i), 99};
        t[i] = spawn(body_putter, &p[i]);
    }
    settle();
    ck_assert_int_eq(g_norder, 0);
    /* Each get admits the first waiting putter's item; a newcomer cannot
     * barge in (the queue stays full). */
    void *it;
    for (int i = 0; i < N + 2; i++) {
        ck_assert_int_eq(cio_queue_get(&g_q, &it), 0);
        ck_assert_int_eq(VAL(it), i);
        if (i < N)
            ck_assert_int_eq(cio_queue_put_nowait(&g_q, ITEM(-1)), -EAGAIN);
    }
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(finish(t[i]), 0);
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(g_order[i], i);
    ck_assert_int_eq(cio_queue_destroy(&g_q), 0);
    return 0;
}

START_TEST(putters_fifo)
{
    RUN_MAIN(main_putters_fifo, NULL);
}
END_TEST

/* Several producers and consumers through a small queue: every item
 * arrives exactly once. (Each producer's items are taken in its order, but
 * consumers resume in their own order, so arrival order is not checked.) */
enum { PC_PRODUCERS = 4, PC_CONSUMERS = 3, PC_ITEMS = 5000 };
static long g_sum;
static unsigned char g_pc_seen[PC_PRODUCERS][PC_ITEMS + 1];
static int g_received;

static int body_producer(void *arg, void **result)
{
    (void)result;
    int p = (int)(intptr_t)arg;
    for (int i = 1; i <= PC_ITEMS; i++) {
        int rc = cio_queue_put(&g_q, ITEM(p * 1000000 + i));
        if (rc)
            return rc;
        if (xorshift() % 8 == 0)
            ck_assert_int_eq(cio_yield(), 0);
    }
    return 0;
}

static int body_consumer(void *arg, void **result)
{
    (void)arg;
    (void)result;
    for (;;) {
        void *it;
        int rc = cio_queue_get(&g_q, &it);
        if (rc)
            return rc == -ESHUTDOWN ? 0 : rc;
        int v = VAL(it), p = v / 1000000, i = v % 1000000;
        ck_assert_int_eq(g_pc_seen[p][i], 0);
        g_pc_seen[p][i] = 1;
        g_sum += i;
        g_received++;
        ck_assert_int_eq(cio_queue_task_done(&g_q), 0);
        if (xorshift() % 4 == 0)
            ck_assert_int_eq(cio_yield(), 0);
    }
}

static int main_producers_consumers(void *arg, void **result)
{
    (void)arg;
    (void)result;
    ck_assert_int_eq(cio_queue_init(&g_q, 7), 0);
    g_sum = 0;
    g_received = 0;
    memset(g_pc_seen, 0, sizeof g_pc_seen);
    cio_task_t *prod[PC_PRODUCERS], *cons[PC_CONSUMERS];
    for (int i = 0; i < PC_CONSUMERS; i++)
        cons[i] = spawn(body_consumer, NULL);
    for (int i = 0; i < PC_PRODUCERS; i++)
        prod[i] = spawn(body_producer, ITEM(i));
    ck_assert_int_eq(cio_gather(prod, PC_PRODUCERS, NULL, NULL, 0), 0);
    ck_assert_int_eq(cio_queue_join(&g_q), 0);
    ck_assert_int_eq(g_received, PC_PRODUCERS * PC_ITEMS);
    ck_assert_int_eq(g_sum, (long)PC_PRODUCERS * PC_ITEMS * (PC_ITEMS + 1) / 2);
    ck_assert_int_eq(cio_queue_shutdown(&g_q, false, NULL, NULL), 0);
    for (int i = 0; i < PC_CONSUMERS; i++)
        ck_assert_int_eq(finish(cons[i]), 0);
    for (int i = 0; i < PC_PRODUCERS; i++)
        cio_future_release(prod[i]);
    ck_assert_int_eq(cio_queue_destroy(&g_q), 0);
    return 0;
}

START_TEST(producers_consumers)
{
    RUN_MAIN(main_producers_consumers, NULL);
}
END_TEST

static int main_priority_blocking(void *arg, void **result)
{
    (void)arg;
    (void)result;
    static int k[4] = {5, 1, 3, 0};
    ck_assert_int_eq(cio_queue_init_priority(&g_q, 2, cmp_int), 0);
    ck_assert_int_eq(cio_queue_put(&g_q, &k[0]), 0);
    ck_assert_int_eq(cio_queue_put(&g_q, &k[1]), 0);
    putter p = {0, &k[3], 99};
    g_norder = 0;
    cio_task_t *t = spawn(body_putter, &p);
    settle();
    void *it;
    ck_assert_int_eq(cio_queue_get(&g_q, &it), 0);
    ck_assert_ptr_eq(it, &k[1]);
    /* The waiting putter's 0 entered the heap and comes out next. */
    ck_assert_int_eq(cio_queue_get(&g_q, &it), 0);
    ck_assert_ptr_eq(it, &k[3]);
    ck_assert_int_eq(cio_queue_get(&g_q, &it), 0);
    ck_assert_ptr_eq(it, &k[0]);
    ck_assert_int_eq(finish(t), 0);
    ck_assert_int_eq(cio_queue_destroy(&g_q), 0);
    return 0;
}

START_TEST(priority_blocking)
{
    RUN_MAIN(main_priority_blocking, NULL);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Cancellation: no item lost                                                */
/* ------------------------------------------------------------------------ */

static int main_getter_cancel_handoff(void *arg, void **result)
{
    (void)arg;
    (void)result;
    ck_assert_int_eq(cio_queue_init(&g_q, 0), 0);
    g_norder = 0;
    getter a = {0, 99, NULL, 99}, b = {1, 99, NULL, 99};
    cio_task_t *ta = spawn(body_getter, &a), *tb = spawn(body_getter, &b);
    settle();
    /* bpo-23812: the item is handed to a, then a is cancelled before it
     * runs. a still returns the item; nothing is lost. */
    ck_assert_int_eq(cio_queue_put(&g_q, ITEM(42)), 0);
    ck_assert_int_eq(cio_task_cancel(ta), 1);
    ck_assert_int_eq(finish(ta), 0);
    ck_assert_int_eq(a.rc, 0);
    ck_assert_int_eq(VAL(a.item), 42);
    ck_assert_int_eq(a.after, -ECANCELED); /* level-triggered afterwards */
    ck_assert(cio_queue_empty(&g_q));
    /* A getter cancelled while waiting takes nothing: the next item goes
     * to b... */
    getter c = {2, 99, NULL, 99};
    cio_task_t *tc = spawn(body_getter, &c);
    settle();
    ck_assert_int_eq(cio_task_cancel(tb), 1);
    ck_assert_int_eq(cio_queue_put(&g_q, ITEM(43)), 0); /* to c */
    ck_assert_int_eq(finish(tb), -ECANCELED);
    ck_assert_int_eq(finish(tc), 0);
    ck_assert_int_eq(VAL(c.item), 43);
    /* ... and with no getter left, to the queue. */
    ck_assert_int_eq(cio_queue_put(&g_q, ITEM(44)), 0);
    ck_assert_uint_eq(cio_queue_qsize(&g_q), 1);
    ck_assert_int_eq(cio_queue_destroy(&g_q), 0);
    return 0;
}

START_TEST(getter_cancelled_during_handoff)
{
    RUN_MAIN(main_getter_cancel_handoff, NULL);
}
END_TEST

static int main_putter_cancel(void *arg, void **result)
{
    (void)arg;
    (void)result;
    ck_assert_int_eq(cio_queue_init(&g_q, 1), 0);
    g_norder = 0;
    ck_assert_int_eq(cio_queue_put(&g_q, ITEM(1)), 0);
    putter a = {0, ITEM(2), 99}, b = {1, ITEM(3), 99};
    cio_task_t *ta = spawn(body_putter, &a), *tb = spawn(body_putter, &b);
    settle();
    /* Cancelled while waiting: its item was not put. */
    ck_assert_int_eq(cio_task_cancel(ta), 1);
    ck_assert_int_eq(finish(ta), -ECANCELED);
    /* Admitted by a get, then cancelled: its put succeeded. */
    void *it;
    ck_assert_int_eq(cio_queue_get_nowait(&g_q, &it), 0);
    ck_assert_int_eq(VAL(it), 1);
    ck_assert_int_eq(cio_task_cancel(tb), 1);
    ck_assert_int_eq(finish(tb), 0);
    ck_assert_int_eq(b.rc, 0);
    ck_assert_int_eq(cio_queue_get_nowait(&g_q, &it), 0);
    ck_assert_int_eq(VAL(it), 3);
    ck_assert_int_eq(cio_queue_get_nowait(&g_q, &it), -EAGAIN);
    ck_assert_uint_eq(cio_queue_unfinished(&g_q), 2); /* 1 and 3 */
    ck_assert_int_eq(cio_queue_destroy(&g_q), 0);
    return 0;
}

START_TEST(putter_cancel)
{
    RUN_MAIN(main_putter_cancel, NULL);
}
END_TEST

/*
 * Chaos: producers and consumers through a small queue while a killer task
 * cancels random consumers (replacing them). Every item must be received
 * exactly once: by a consumer (also one cancelled right after a hand-off),
 * or still be in the queue at the end.
 */
enum { CH_CONS = 6, CH_ITEMS = 20000 };
static unsigned char g_seen[CH_ITEMS + 1];
static int g_chaos_got;
static int g_kept_after_cancel; /* items handed over, then cancelled */
static cio_task_t *g_cons[CH_CONS];

static int body_chaos_consumer(void *arg, void **result)
{
    (void)arg;
    (void)result;
    for (;;) {
        void *it;
        int rc = cio_queue_get(&g_q, &it);
        if (rc)
            return rc;
        int v = VAL(it);
        ck_assert_int_eq(g_seen[v], 0);
        g_seen[v] = 1;
        g_chaos_got++;
        if (cio_task_cancelling(cio_current_task()))
            g_kept_after_cancel++;
    }
}

static int body_chaos_producer(void *arg, void **result)
{
    (void)arg;
    (void)result;
    for (int i = 1; i <= CH_ITEMS; i++) {
        int rc = cio_queue_put(&g_q, ITEM(i));
        if (rc)
            return rc;
        if (xorshift() % 3 == 0)
            ck_assert_int_eq(cio_yield(), 0);
    }
    return 0;
}

static int main_chaos(void *arg, void **result)
{
    (void)arg;
    (void)result;
    ck_assert_int_eq(cio_queue_init(&g_q, 4), 0);
    memset(g_seen, 0, sizeof g_seen);
    g_chaos_got = 0;
    g_kept_after_cancel = 0;
    for (int i = 0; i < CH_CONS; i++)
        g_cons[i] = spawn(body_chaos_consumer, NULL);
    cio_task_t *prod = spawn(body_chaos_producer, NULL);
    int cancels = 0;
    while (!cio_future_done(prod)) {
        /* Cancel a random consumer at a random moment: often right after
         * a put handed it an item in this very iteration. */
        int k = (int)(xorshift() % CH_CONS);
        cio_task_cancel(g_cons[k]);
        cancels++;
        int rc = cio_await(g_cons[k], NULL);
        ck_assert(rc == -ECANCELED);
        cio_future_release(g_cons[k]);
        g_cons[k] = spawn(body_chaos_consumer, NULL);
        int spins = (int)(xorshift() % 4);
        for (int s = 0; s < spins; s++)
            ck_assert_int_eq(cio_yield(), 0);
    }
    ck_assert_int_eq(finish(prod), 0);
    ck_assert_int_gt(cancels, 100);
    ck_assert_int_gt(g_kept_after_cancel, 0); /* the race did happen */
    settle();
    cio_queue_shutdown(&g_q, false, NULL, NULL);
    for (int i = 0; i < CH_CONS; i++) {
        int rc = finish(g_cons[i]);
        ck_assert(rc == -ESHUTDOWN);
    }
    void *it;
    while (cio_queue_get_nowait(&g_q, &it) == 0) {
        ck_assert_int_eq(g_seen[VAL(it)], 0);
        g_seen[VAL(it)] = 1;
        g_chaos_got++;
    }
    ck_assert_int_eq(g_chaos_got, CH_ITEMS);
    for (int i = 1; i <= CH_ITEMS; i++)
        ck_assert_int_eq(g_seen[i], 1);
    ck_assert_int_eq(cio_queue_destroy(&g_q), 0);
    return 0;
}

START_TEST(no_item_lost_under_cancellation)
{
    RUN_MAIN(main_chaos, NULL);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Timeouts and level-triggered checks                                       */
/* ------------------------------------------------------------------------ */

static int main_timeouts(void *arg, void **result)
{
    (void)arg;
    (void)result;
    ck_assert_int_eq(cio_queue_init(&g_q, 1), 0);
    cio_scope_t s;
    void *it = ITEM(7);
    int64_t t0 = loop_ns();
    ck_assert_int_eq(cio_scope_enter(&s, D_SHORT, 0), 0);
    ck_assert_int_eq(cio_queue_get(&g_q, &it), -ETIMEDOUT);
    ck_assert_int_eq(cio_scope_exit(&s), -ETIMEDOUT);
    ck_assert_int_ge(loop_ns() - t0, NS_SHORT);
    ck_assert_int_eq(VAL(it), 7); /* untouched */
    ck_assert_int_eq(cio_queue_put(&g_q, ITEM(1)), 0);
    t0 = loop_ns();
    ck_assert_int_eq(cio_scope_enter(&s, D_SHORT, 0), 0);
    ck_assert_int_eq(cio_queue_put(&g_q, ITEM(2)), -ETIMEDOUT);
    ck_assert_int_eq(cio_scope_exit(&s), -ETIMEDOUT);
    ck_assert_int_ge(loop_ns() - t0, NS_SHORT);
    ck_assert_uint_eq(cio_queue_qsize(&g_q), 1); /* 2 was not put */
    /* join with a timeout: one item unfinished. */
    ck_assert_int_eq(cio_scope_enter(&s, D_SHORT, 0), 0);
    ck_assert_int_eq(cio_queue_join(&g_q), -ETIMEDOUT);
    ck_assert_int_eq(cio_scope_exit(&s), -ETIMEDOUT);
    /* Level-triggered: an expired scope fails get on a non-empty queue and
     * put on a non-full one, taking and putting nothing. */
    ck_assert_int_eq(cio_scope_enter(&s, 0, 0), 0);
    ck_assert_int_eq(cio_queue_get(&g_q, &it), -ETIMEDOUT);
    ck_assert_uint_eq(cio_queue_qsize(&g_q), 1);
    ck_assert_int_eq(cio_queue_get_nowait(&g_q, &it), 0); /* not an await point */
    ck_assert_int_eq(cio_queue_put(&g_q, ITEM(3)), -ETIMEDOUT);
    ck_assert_uint_eq(cio_queue_qsize(&g_q), 0);
    ck_assert_int_eq(cio_queue_task_done(&g_q), 0);
    ck_assert_int_eq(cio_queue_join(&g_q), -ETIMEDOUT);
    ck_assert_int_eq(cio_scope_exit(&s), -ETIMEDOUT);
    ck_assert_int_eq(cio_queue_join(&g_q), 0); /* nothing unfinished */
    ck_assert_int_eq(cio_queue_destroy(&g_q), 0);
    return 0;
}

START_TEST(timeouts_and_level_triggered)
{
    RUN_MAIN(main_timeouts, NULL);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* join / task_done                                                          */
/* ------------------------------------------------------------------------ */

static int g_joined;

static int body_joiner(void *arg, void **result)
{
    (void)arg;
    (void)result;
    int rc = cio_queue_join(&g_q);
    if (rc == 0)
        g_joined++;
    return rc;
}

static int main_join(void *arg, void **result)
{
    (void)arg;
    (void)result;
    ck_assert_int_eq(cio_queue_init(&g_q, 0), 0);
    g_joined = 0;
    ck_assert_int_eq(cio_queue_join(&g_q), 0); /* nothing put yet */
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(cio_queue_put(&g_q, ITEM(i)), 0);
    cio_task_t *j[2] = {spawn(body_joiner, NULL), spawn(body_joiner, NULL)};
    void *it;
    for (int i = 0; i < 3; i++) {
        settle();
        ck_assert_int_eq(g_joined, 0);
        ck_assert_int_eq(cio_queue_get(&g_q, &it), 0);
        settle();
        ck_assert_int_eq(g_joined, 0); /* taken is not done */
        ck_assert_int_eq(cio_queue_task_done(&g_q), 0);
    }
    ck_assert_int_eq(finish(j[0]), 0);
    ck_assert_int_eq(finish(j[1]), 0);
    ck_assert_int_eq(g_joined, 2);
    ck_assert_int_eq(cio_queue_task_done(&g_q), -EOVERFLOW);
    /* A cancelled joiner leaves; the others still wait. */
    ck_assert_int_eq(cio_queue_put(&g_q, ITEM(9)), 0);
    j[0] = spawn(body_joiner, NULL);
    j[1] = spawn(body_joiner, NULL);
    settle();
    ck_assert_int_eq(cio_task_cancel(j[0]), 1);
    ck_assert_int_eq(finish(j[0]), -ECANCELED);
    ck_assert_int_eq(cio_queue_get(&g_q, &it), 0);
    ck_assert_int_eq(cio_queue_task_done(&g_q), 0);
    ck_assert_int_eq(finish(j[1]), 0);
    ck_assert_int_eq(g_joined, 3);
    ck_assert_int_eq(cio_queue_destroy(&g_q), 0);
    return 0;
}

START_TEST(join_and_task_done)
{
    RUN_MAIN(main_join, NULL);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* shutdown (Python 3.13)                                                    */
/* ------------------------------------------------------------------------ */

static int main_shutdown(void *arg, void **result)
{
    (void)arg;
    (void)result;
    void *it;
    /* Blocked getters on an empty queue get -ESHUTDOWN. */
    ck_assert_int_eq(cio_queue_init(&g_q, 2), 0);
    g_norder = 0;
    getter g1 = {0, 99, NULL, 99}, g2 = {1, 99, NULL, 99};
    cio_task_t *tg1 = spawn(body_getter, &g1), *tg2 = spawn(body_getter, &g2);
    settle();
    ck_assert(!cio_queue_is_shutdown(&g_q));
    ck_assert_int_eq(cio_queue_shutdown(&g_q, false, NULL, NULL), 0);
    ck_assert(cio_queue_is_shutdown(&g_q));
    ck_assert_int_eq(finish(tg1), -ESHUTDOWN);
    ck_assert_int_eq(finish(tg2), -ESHUTDOWN);
    ck_assert_int_eq(cio_queue_put(&g_q, ITEM(1)), -ESHUTDOWN);
    ck_assert_int_eq(cio_queue_put_nowait(&g_q, ITEM(1)), -ESHUTDOWN);
    ck_assert_int_eq(cio_queue_get(&g_q, &it), -ESHUTDOWN);
    ck_assert_int_eq(cio_queue_get_nowait(&g_q, &it), -ESHUTDOWN);
    ck_assert_int_eq(cio_queue_shutdown(&g_q, false, NULL, NULL), 0); /* again */
    ck_assert_int_eq(cio_queue_destroy(&g_q), 0);

    /* Blocked putters on a full queue get -ESHUTDOWN (item not put); the
     * items in the queue are still returned, then -ESHUTDOWN. */
    ck_assert_int_eq(cio_queue_init(&g_q, 2), 0);
    ck_assert_int_eq(cio_queue_put(&g_q, ITEM(1)), 0);
    ck_assert_int_eq(cio_queue_put(&g_q, ITEM(2)), 0);
    putter p = {0, ITEM(3), 99};
    cio_task_t *tp = spawn(body_putter, &p);
    settle();
    ck_assert_int_eq(cio_queue_shutdown(&g_q, false, NULL, NULL), 0);
    ck_assert_int_eq(finish(tp), -ESHUTDOWN);
    ck_assert_uint_eq(cio_queue_qsize(&g_q), 2);
    ck_assert_int_eq(cio_queue_get(&g_q, &it), 0);
    ck_assert_int_eq(VAL(it), 1);
    ck_assert_int_eq(cio_queue_get_nowait(&g_q, &it), 0);
    ck_assert_int_eq(VAL(it), 2);
    ck_assert_int_eq(cio_queue_get(&g_q, &it), -ESHUTDOWN);
    /* join still counts the items taken but not done. */
    ck_assert_uint_eq(cio_queue_unfinished(&g_q), 2);
    cio_task_t *j = spawn(body_joiner, NULL);
    g_joined = 0;
    settle();
    ck_assert(!cio_future_done(j));
    ck_assert_int_eq(cio_queue_task_done(&g_q), 0);
    ck_assert_int_eq(cio_queue_task_done(&g_q), 0);
    ck_assert_int_eq(finish(j), 0);
    ck_assert_int_eq(cio_queue_destroy(&g_q), 0);
    return 0;
}

START_TEST(shutdown_plain)
{
    RUN_MAIN(main_shutdown, NULL);
}
END_TEST

static int g_dropped[16], g_ndropped;

static void drop_cb(void *item, void *arg)
{
    ck_assert_ptr_eq(arg, &g_ndropped);
    g_dropped[g_ndropped++] = VAL(item);
}

static int main_shutdown_immediate(void *arg, void **result)
{
    (void)arg;
    (void)result;
    void *it;
    ck_assert_int_eq(cio_queue_init(&g_q, 4), 0);
    for (int i = 1; i <= 4; i++)
        ck_assert_int_eq(cio_queue_put(&g_q, ITEM(i)), 0);
    putter p = {0, ITEM(5), 99};
    g_norder = 0;
    cio_task_t *tp = spawn(body_putter, &p);
    /* One item taken and not yet done; three dropped by the shutdown. */
    ck_assert_int_eq(cio_queue_get(&g_q, &it), 0); /* admits p's 5 */
    ck_assert_int_eq(finish(tp), 0);
    cio_task_t *j = spawn(body_joiner, NULL);
    g_joined = 0;
    settle();
    ck_assert_uint_eq(cio_queue_unfinished(&g_q), 5);
    g_ndropped = 0;
    ck_assert_int_eq(cio_queue_shutdown(&g_q, true, drop_cb, &g_ndropped), 4);
    ck_assert_int_eq(g_ndropped, 4);
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(g_dropped[i], i + 2); /* 2, 3, 4, 5 in order */
    ck_assert(cio_queue_empty(&g_q));
    ck_assert_uint_eq(cio_queue_unfinished(&g_q), 1);
    settle();
    ck_assert(!cio_future_done(j)); /* item 1 is still being processed */
    ck_assert_int_eq(cio_queue_task_done(&g_q), 0);
    ck_assert_int_eq(finish(j), 0);
    ck_assert_int_eq(cio_queue_get(&g_q, &it), -ESHUTDOWN);
    ck_assert_int_eq(cio_queue_shutdown(&g_q, true, drop_cb, &g_ndropped), 0);
    ck_assert_int_eq(cio_queue_destroy(&g_q), 0);

    /* Immediate with nothing taken: join returns at once. */
    ck_assert_int_eq(cio_queue_init_lifo(&g_q, 0), 0);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(cio_queue_put(&g_q, ITEM(i)), 0);
    j = spawn(body_joiner, NULL);
    settle();
    ck_assert_int_eq(cio_queue_shutdown(&g_q, true, NULL, NULL), 3);
    ck_assert_int_eq(finish(j), 0);
    ck_assert_int_eq(cio_queue_join(&g_q), 0);
    ck_assert_int_eq(cio_queue_task_done(&g_q), -EOVERFLOW);
    ck_assert_int_eq(cio_queue_destroy(&g_q), 0);
    return 0;
}

START_TEST(shutdown_immediate)
{
    RUN_MAIN(main_shutdown_immediate, NULL);
}
END_TEST

static int main_destroy_busy(void *arg, void **result)
{
    (void)arg;
    (void)result;
    ck_assert_int_eq(cio_queue_init(&g_q, 1), 0);
    getter g = {0, 99, NULL, 99};
    g_norder = 0;
    cio_task_t *t = spawn(body_getter, &g);
    settle();
    ck_assert_int_eq(cio_queue_destroy(&g_q), -EBUSY); /* nothing freed */
    ck_assert_int_eq(cio_queue_put(&g_q, ITEM(5)), 0);
    ck_assert_int_eq(finish(t), 0);
    ck_assert_int_eq(VAL(g.item), 5);
    ck_assert_int_eq(cio_queue_destroy(&g_q), 0);
    return 0;
}

START_TEST(destroy_busy)
{
    RUN_MAIN(main_destroy_busy, NULL);
}
END_TEST

/* ------------------------------------------------------------------------ */

static Suite *queue_suite(void)
{
    Suite *s = suite_create("queue");
    TCase *tc = add_tcase(s, "basics", TEST_TIMEOUT);
    tcase_add_test(tc, fifo_nowait);
    tcase_add_test(tc, lifo_and_priority_order);
    tcase_add_test(tc, growth);
    tcase_add_test(tc, bad_input);
    tcase_add_test(tc, bad_input_in_task);
    tc = add_tcase(s, "waiting", TEST_TIMEOUT);
    tcase_add_test(tc, getters_fifo);
    tcase_add_test(tc, putters_fifo);
    tcase_add_test(tc, producers_consumers);
    tcase_add_test(tc, priority_blocking);
    tc = add_tcase(s, "cancellation", TEST_TIMEOUT);
    tcase_add_test(tc, getter_cancelled_during_handoff);
    tcase_add_test(tc, putter_cancel);
    tcase_add_test(tc, no_item_lost_under_cancellation);
    tcase_add_test(tc, timeouts_and_level_triggered);
    tc = add_tcase(s, "join_shutdown", TEST_TIMEOUT);
    tcase_add_test(tc, join_and_task_done);
    tcase_add_test(tc, shutdown_plain);
    tcase_add_test(tc, shutdown_immediate);
    tcase_add_test(tc, destroy_busy);
    return s;
}

CIO_TEST_MAIN(queue_suite)
