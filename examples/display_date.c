/*
 * Seed 002, "sleeping":
 *
 *     async def display_date():
 *         loop = asyncio.get_running_loop()
 *         end_time = loop.time() + 5.0
 *         while True:
 *             print(datetime.datetime.now())
 *             if (loop.time() + 1.0) >= end_time:
 *                 break
 *             await asyncio.sleep(1)
 *
 *     asyncio.run(display_date())
 */
#include "example.h"

/* print(datetime.datetime.now()): "2024-05-01 19:38:27.123456" */
static void print_now(void)
{
    struct timespec ts;
    struct tm tm;
    char buf[32];
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0 || localtime_r(&ts.tv_sec, &tm) == NULL ||
        strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm) == 0) {
        perror("clock");
        exit(1);
    }
    printf("%s.%06ld\n", buf, ts.tv_nsec / 1000);
}

static int display_date(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_loop_t *loop = cio_get_running_loop();
    EXPECT(loop != NULL); /* always true inside a task */
    double end_time = cio_loop_time(loop) + 5.0;
    for (;;) {
        print_now();
        if (cio_loop_time(loop) + 1.0 >= end_time)
            break;
        CHECK(cio_sleep(1));
    }
    return 0;
}

int main(void)
{
    CHECK(cio_run(display_date, NULL));
    return 0;
}
