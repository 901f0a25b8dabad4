/*
 * Seed 003, the ThreadPoolExecutor version of the downloader, moved under
 * the event loop:
 *
 *     def download_site(url):               # blocking
 *         ...
 *         print(f"Read {len(response.content)} from {url}")
 *
 *     async def main():
 *         loop = asyncio.get_running_loop()
 *         with ThreadPoolExecutor(max_workers=5) as executor:
 *             futs = [loop.run_in_executor(executor, download_site, url)
 *                     for url in sites]
 *             await asyncio.gather(*futs)
 *         print(f"Downloaded {len(sites)} in {duration} seconds")
 *         await asyncio.to_thread(download_site, sites[0])
 *
 * The "download" is a 0.5 s usleep, so 10 sites on 5 workers take ~1 s
 * (sequentially: 5 s). Meanwhile the loop is free: a ticker task keeps
 * running every 0.1 s. The blocking function has the task signature; it
 * runs on a pool thread, so it must not call await points.
 */
#include "example.h"

#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

enum { NSITES = 10, MAX_WORKERS = 5 };

static atomic_int in_flight, max_in_flight;

static int download_site(void *arg, void **result)
{
    const char *url = arg;
    int now = atomic_fetch_add(&in_flight, 1) + 1;
    int seen = atomic_load(&max_in_flight);
    while (now > seen && !atomic_compare_exchange_weak(&max_in_flight, &seen, now))
        ;
    usleep(500 * 1000); /* the blocking "request" */
    size_t len = 1000 * strlen(url);
    printf("Read %zu from %s\n", len, url);
    atomic_fetch_sub(&in_flight, 1);
    *result = (void *)(uintptr_t)len;
    return 0;
}

static int ticker(void *arg, void **result)
{
    (void)result;
    int *ticks = arg;
    for (;;) {
        int rc = cio_sleep(0.1);
        if (rc < 0)
            return rc; /* -ECANCELED: main's way to stop us */
        ++*ticks;
    }
}

static int main_task(void *arg, void **result)
{
    (void)arg;
    (void)result;
    static const char *const names[] = {"https://www.jython.org",
                                        "http://olympus.realpython.org/dice"};
    char sites[NSITES][64];
    cio_future_t *futs[NSITES];
    void *lens[NSITES];
    cio_executor_t *ex;
    cio_task_t *tick;
    int ticks = 0;

    for (int i = 0; i < NSITES; i++)
        snprintf(sites[i], sizeof sites[i], "%s#%d", names[i % 2], i);

    CHECK(cio_spawn_named(&tick, "ticker", ticker, &ticks));
    CHECK(cio_executor_new(&ex, MAX_WORKERS));

    double t0 = loop_now();
    for (int i = 0; i < NSITES; i++)
        CHECK(cio_run_in_executor(&futs[i], cio_get_running_loop(), ex,
                                                download_site, sites[i]));
    CHECK(cio_gather(futs, NSITES, lens, NULL, 0));
    double duration = loop_now() - t0;
    size_t total = 0;
    for (int i = 0; i < NSITES; i++) {
        total += (uintptr_t)lens[i];
        cio_future_release(futs[i]);
    }
    cio_executor_shutdown(ex, true); /* the `with` block's exit; frees ex */
    printf("Downloaded %d (%zu bytes) in %.2f seconds, at most %d at once\n", NSITES,
           total, duration, atomic_load(&max_in_flight));
    EXPECT(atomic_load(&max_in_flight) <= MAX_WORKERS);

    /* asyncio.to_thread: one call on the loop's default pool, awaited. */
    void *len;
    t0 = loop_now();
    CHECK(cio_to_thread(download_site, sites[0], &len));
    printf("to_thread: %zu bytes in %.2f seconds\n", (size_t)(uintptr_t)len, loop_now() - t0);

    EXPECT_RC(cio_task_cancel(tick), 1);
    EXPECT_RC(cio_await(tick, NULL), -ECANCELED);
    cio_future_release(tick);
    printf("the loop stayed free: the ticker ran %d times meanwhile\n", ticks);
    return 0;
}

int main(void)
{
    CHECK(cio_run(main_task, NULL));
    return 0;
}
