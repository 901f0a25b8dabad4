/*
 * asyncio.shield (seed 002 "shielding from cancellation"):
 *
 *     task = asyncio.create_task(something())
 *     try:
 *         res = await asyncio.wait_for(asyncio.shield(task), 0.5)
 *     except TimeoutError:
 *         print('gave up waiting; the task runs on')
 *     res = await task
 *
 * cio_shield(&sh, f) makes a *new* future that mirrors f: cancelling it (which
 * wait_for does on time-out, and which a cancelled awaiter does) leaves f
 * alone. Part 3 shows the other kind of shield, a shielded scope, used for
 * cleanup code that must await while its task is being cancelled.
 */
#include "example.h"

#include <stdint.h>

static int something(void *arg, void **result)
{
    (void)arg;
    CHECK(cio_sleep(1.0)); /* never cancelled: it is shielded */
    *result = (void *)(intptr_t)42;
    return 0;
}

/* Awaits a shielded task until it is itself cancelled. */
static int waiter(void *arg, void **result)
{
    (void)result;
    cio_future_t *sh;
    CHECK(cio_shield(&sh, arg));
    int rc = cio_await(sh, NULL);
    printf("  waiter: cio_await(shield(task)) returned %s\n", cio_err_name(rc));
    cio_future_release(sh);
    return rc;
}

/*
 * Level-triggered cancellation: once cancelled, every await point fails, so
 * cleanup that must await (say, a goodbye message to a peer) runs in a
 * shielded scope, where the cancellation is held back.
 */
static int worker(void *arg, void **result)
{
    (void)arg;
    (void)result;
    int rc = cio_sleep(3600);
    printf("  worker: cio_sleep returned %s\n", cio_err_name(rc));
    printf("  worker: another cio_sleep(0.1) returns %s at once\n",
           cio_err_name(cio_sleep(0.1)));

    cio_scope_t cleanup;
    CHECK(cio_scope_enter(&cleanup, 1.0, CIO_SCOPE_SHIELD)); /* bounded cleanup */
    int crc = cio_sleep(0.1);
    printf("  worker: in a shielded scope cio_sleep(0.1) returns %d\n", crc);
    CHECK(crc);
    CHECK(cio_scope_exit(&cleanup));
    return rc; /* still cancelled after the scope */
}

static int main_task(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_task_t *task, *w;
    cio_future_t *sh;
    void *value;
    double t0 = loop_now();

    /* 1. The outer await times out; the inner task does not notice. */
    puts("1. wait_for(shield(task), 0.5):");
    CHECK(cio_spawn_named(&task, "something", something, NULL));
    CHECK(cio_shield(&sh, task));
    EXPECT_RC(cio_wait_for(sh, 0.5, NULL), -ETIMEDOUT);
    printf("  timed out at %.2f s; shield cancelled=%d, task done=%d cancelled=%d\n",
           loop_now() - t0, cio_future_cancelled(sh), cio_future_done(task),
           cio_future_cancelled(task));
    EXPECT(!cio_future_done(task));
    cio_future_release(sh);
    CHECK(cio_await(task, &value));
    printf("  the task finished anyway at %.2f s: result %d\n", loop_now() - t0,
           (int)(intptr_t)value);
    cio_future_release(task);

    /* 2. The awaiting task is cancelled; the inner task does not notice. */
    puts("2. a task awaiting shield(task) is cancelled:");
    t0 = loop_now();
    CHECK(cio_spawn_named(&task, "something", something, NULL));
    CHECK(cio_spawn_named(&w, "waiter", waiter, task));
    CHECK(cio_sleep(0.3));
    EXPECT_RC(cio_task_cancel(w), 1);
    EXPECT_RC(cio_await(w, NULL), -ECANCELED);
    EXPECT(!cio_future_done(task));
    CHECK(cio_await(task, &value));
    printf("  the task finished anyway at %.2f s: result %d\n", loop_now() - t0,
           (int)(intptr_t)value);
    cio_future_release(w);
    cio_future_release(task);

    /* 3. A shielded scope lets cleanup await inside a cancelled task. */
    puts("3. cleanup in a CIO_SCOPE_SHIELD scope:");
    CHECK(cio_spawn_named(&w, "worker", worker, NULL));
    CHECK(cio_sleep(0.1));
    EXPECT_RC(cio_task_cancel(w), 1);
    EXPECT_RC(cio_await(w, NULL), -ECANCELED);
    cio_future_release(w);
    return 0;
}

int main(void)
{
    CHECK(cio_run(main_task, NULL));
    return 0;
}
