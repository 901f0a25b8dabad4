/*
 * asyncio.timeout (seed 003):
 *
 *     async with asyncio.timeout(1) as cm:
 *         await long_running_task()
 *     # TimeoutError; cm.expired() is True
 *
 *     async with asyncio.timeout(None) as cm:      # the rescheduled variant
 *         cm.reschedule(loop.time() + 0.5)
 *         await long_running_task()
 *
 * A timeout is a cancel scope with a deadline: cio_scope_enter(&s, 1.0, 0)
 * ... cio_scope_exit(&s). Inside, once the deadline passes, the current await
 * point and every later one return -ETIMEDOUT (cancellation is level-
 * triggered: code that ignores one return value cannot hang); leaving the
 * scope reports -ETIMEDOUT once and awaits work again after it.
 */
#include "example.h"

#include <math.h>

/* A plain C function with await points: five 0.4 s steps (t0: for printing). */
static int long_operation(double t0)
{
    for (int step = 1; step <= 5; step++) {
        int rc = cio_sleep(0.4);
        if (rc < 0) {
            printf("  step %d: %s\n", step, cio_err_name(rc));
            return rc;
        }
        printf("  step %d done at %.1f s\n", step, loop_now() - t0);
    }
    return 0;
}

static int main_task(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_scope_t s;
    double t0;

    puts("1. timeout(1.0) around a 2 s operation:");
    t0 = loop_now();
    CHECK(cio_scope_enter(&s, 1.0, 0));
    EXPECT_RC(long_operation(t0), -ETIMEDOUT);
    /* Level-triggered: a later await inside the expired scope fails too,
     * at once (asyncio would need the code to re-raise to get this). */
    EXPECT_RC(cio_sleep(10), -ETIMEDOUT);
    puts("  a further cio_sleep(10) in the scope: ETIMEDOUT at once");
    EXPECT(cio_scope_expired(&s));
    EXPECT_RC(cio_scope_exit(&s), -ETIMEDOUT);
    printf("  timed out: cio_scope_exit returned ETIMEDOUT after %.2f s, expired=%d\n",
           loop_now() - t0, cio_scope_expired(&s));
    CHECK(cio_sleep(0)); /* outside the scope awaits work again */

    puts("2. timeout(None), then reschedule(0.5):");
    t0 = loop_now();
    CHECK(cio_scope_enter(&s, INFINITY, 0));
    EXPECT(cio_scope_deadline_ns(&s) == INT64_MAX);
    CHECK(cio_scope_reschedule(&s, 0.5));
    printf("  deadline in %.2f s\n",
           (double)(cio_scope_deadline_ns(&s) - cio_loop_time_ns(cio_get_running_loop())) / 1e9);
    EXPECT_RC(long_operation(t0), -ETIMEDOUT);
    EXPECT_RC(cio_scope_exit(&s), -ETIMEDOUT);
    printf("  timed out after %.2f s\n", loop_now() - t0);

    puts("3. timeout(0.5), pushed back to 3 s before it expires:");
    t0 = loop_now();
    CHECK(cio_scope_enter(&s, 0.5, 0));
    CHECK(cio_sleep(0.3));
    CHECK(cio_scope_reschedule(&s, 3.0));
    CHECK(long_operation(t0));
    CHECK(cio_scope_exit(&s));
    printf("  completed in %.2f s, expired=%d\n", loop_now() - t0, cio_scope_expired(&s));
    EXPECT(!cio_scope_expired(&s));
    return 0;
}

int main(void)
{
    CHECK(cio_run(main_task, NULL));
    return 0;
}
