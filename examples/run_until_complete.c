/*
 * Seed 002, the low-level API: an explicit event loop.
 *
 *     async def hello():
 *         asyncio.sleep(1)          # (sic: the seed forgets the await, so
 *         print('HelloWorld!')      #  Python warns and does not sleep)
 *
 *     loop = asyncio.get_event_loop()
 *     loop.run_until_complete(hello())
 *
 * then the callback API on the same loop:
 *
 *     loop.call_soon(cb, 'call_soon')
 *     loop.call_later(0.2, cb, 'call_later(0.2)')
 *     h = loop.call_later(0.15, cb, 'cancelled'); h.cancel()
 *     loop.call_at(loop.time() + 0.3, loop.stop)
 *     loop.run_forever()
 *     loop.close()
 *
 * C has no coroutine object to hand to run_until_complete: the task is
 * created on the (not yet running) loop with cio_spawn_ex. Everything created
 * is freed explicitly: the task reference, then the loop.
 */
#include "example.h"

static int hello(void *arg, void **result)
{
    (void)arg;
    (void)result;
    CHECK(cio_sleep(1)); /* in C there is nothing to forget: this sleeps */
    puts("HelloWorld!");
    return 0;
}

struct demo {
    cio_loop_t *loop;
    double t0;
};

struct say {
    struct demo *demo;
    const char *text;
};

static void say(void *arg)
{
    const struct say *s = arg;
    printf("  t=%.2f %s\n", cio_loop_time(s->demo->loop) - s->demo->t0, s->text);
}

static void stop(void *arg)
{
    struct demo *d = arg;
    printf("  t=%.2f call_at: loop.stop()\n", cio_loop_time(d->loop) - d->t0);
    cio_loop_stop(d->loop);
}

int main(void)
{
    cio_loop_t *loop;
    cio_task_t *task;

    /* loop = asyncio.new_event_loop() */
    CHECK(cio_loop_new(&loop));
    /* loop.run_until_complete(hello()) */
    CHECK(cio_spawn_ex(&task, loop, hello, NULL, &(cio_spawn_opts_t){.name = "hello"}));
    CHECK(cio_loop_run_until_complete(loop, task, NULL));
    EXPECT(cio_future_done(task));
    cio_future_release(task);

    /* The low-level API: callbacks on the loop. A handle is caller storage
     * (like libuv's); NULL asks for a fire-and-forget callback instead. */
    puts("callbacks:");
    struct demo d = {loop, cio_loop_time(loop)};
    struct say soon = {&d, "call_soon"}, later1 = {&d, "call_later(0.1)"},
               later2 = {&d, "call_later(0.2)"}, never = {&d, "cancelled: must not run"};
    cio_handle_t h_later2 = CIO_HANDLE_INIT, h_never = CIO_HANDLE_INIT;

    CHECK(cio_call_later(loop, &h_later2, 0.2, say, &later2));
    CHECK(cio_call_later(loop, NULL, 0.1, say, &later1));
    CHECK(cio_call_later(loop, &h_never, 0.15, say, &never));
    CHECK(cio_call_soon(loop, NULL, say, &soon));
    CHECK(cio_call_at(loop, NULL, d.t0 + 0.3, stop, &d));
    EXPECT(cio_handle_active(&h_never));
    EXPECT_RC(cio_handle_cancel(&h_never), 1); /* h.cancel() */
    EXPECT(!cio_handle_active(&h_never));

    CHECK(cio_loop_run_forever(loop)); /* returns after cio_loop_stop */
    EXPECT(!cio_loop_is_running(loop) && !cio_loop_is_closed(loop));
    EXPECT(!cio_handle_active(&h_later2));

    /* asyncio.run's cleanup, then loop.close() */
    CHECK(cio_loop_shutdown(loop));
    CHECK(cio_loop_close(loop));
    return 0;
}
