/*
 * asyncio.wait_for (seed 002 "timeouts"; the program is the asyncio docs'):
 *
 *     async def eternity():
 *         await asyncio.sleep(3600)
 *         print('yay!')
 *
 *     async def main():
 *         try:
 *             await asyncio.wait_for(eternity(), timeout=1.0)
 *         except TimeoutError:
 *             print('timeout!')
 *
 * TimeoutError is the return code -ETIMEDOUT. As in asyncio, the awaited
 * task is cancelled on time-out and waited for: when cio_wait_for returns,
 * eternity() has finished.
 */
#include "example.h"

#include <stdint.h>

static int eternity(void *arg, void **result)
{
    (void)arg;
    (void)result;
    int rc = cio_sleep(3600);
    if (rc < 0) {
        /* The cancellation arrives as a return code; the task returns it. */
        printf("eternity(): cio_sleep returned %s, giving up\n", cio_err_name(rc));
        return rc;
    }
    puts("yay!");
    return 0;
}

static int quick(void *arg, void **result)
{
    (void)arg;
    CHECK(cio_sleep(0.1));
    *result = (void *)(intptr_t)42;
    return 0;
}

static int main_task(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_task_t *t;
    void *value;

    double t0 = loop_now();
    CHECK(cio_spawn_named(&t, "eternity", eternity, NULL));
    int rc = cio_wait_for(t, 1.0, NULL);
    if (rc == -ETIMEDOUT)
        puts("timeout!");
    else
        EXPECT_RC(rc, -ETIMEDOUT);
    printf("after %.2f s; eternity is done=%d cancelled=%d\n", loop_now() - t0,
           cio_future_done(t), cio_future_cancelled(t));
    EXPECT(cio_future_done(t) && cio_future_cancelled(t));
    cio_future_release(t);

    /* When the awaitable finishes in time, wait_for is just an await. */
    CHECK(cio_spawn_named(&t, "quick", quick, NULL));
    CHECK(cio_wait_for(t, 1.0, &value));
    printf("quick() finished in time: %d\n", (int)(intptr_t)value);
    cio_future_release(t);
    return 0;
}

int main(void)
{
    CHECK(cio_run(main_task, NULL));
    return 0;
}
