/*
 * Seed 004 (realpython's asyncq.py) and seed 002's "distributing work
 * through queues": unrelated producers put items into one queue at random
 * times; a pool of consumers takes them greedily. main waits for the
 * producers, then for the queue to be fully processed (q.join()), then
 * cancels the consumers, which would otherwise wait for more items forever.
 *
 *     async def produce(name, q):
 *         n = random.randint(0, 10)
 *         for _ in it.repeat(None, n):
 *             await randsleep(caller=f"Producer {name}")
 *             i = await makeitem()
 *             t = time.perf_counter()
 *             await q.put((i, t))
 *             print(f"Producer {name} added <{i}> to queue.")
 *
 *     async def consume(name, q):
 *         while True:
 *             await randsleep(caller=f"Consumer {name}")
 *             i, t = await q.get()
 *             now = time.perf_counter()
 *             print(f"Consumer {name} got element <{i}> in {now-t:0.5f} seconds.")
 *             q.task_done()
 *
 *     async def main(nprod, ncon):
 *         q = asyncio.Queue()
 *         producers = [asyncio.create_task(produce(n, q)) for n in range(nprod)]
 *         consumers = [asyncio.create_task(consume(n, q)) for n in range(ncon)]
 *         await asyncio.gather(*producers)
 *         await q.join()  # Implicitly awaits consumers, too
 *         for c in consumers:
 *             c.cancel()
 *
 * Usage: asyncq [-p NPROD] [-c NCON] [--scale S] [--seed N]
 * The random sleeps are 0..10 "seconds" of the story; --scale gives the
 * length of one such second in real seconds (default 0.01, 1 = as in
 * Python), so that the program runs in about a second.
 */
#include "example.h"

#include <stdint.h>
#include <string.h>

static double scale = 0.01;

/* time.perf_counter(): monotonic seconds, usable outside the loop too. */
static double perf_counter(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}
static uint32_t rng = 444;

/* random.randint(lo, hi) on xorshift32 (one generator, like Python's). */
static int randint(int lo, int hi)
{
    rng ^= rng << 13;
    rng ^= rng >> 17;
    rng ^= rng << 5;
    return lo + (int)(rng % (uint32_t)(hi - lo + 1));
}

/* An item: os.urandom(5).hex() and the time it was put. */
typedef struct item {
    char hex[11];
    double t;
} item_t;

static item_t *makeitem(void)
{
    item_t *it = malloc(sizeof *it);
    if (!it)
        return NULL;
    for (int i = 0; i < 5; i++)
        snprintf(it->hex + 2 * i, 3, "%02x", (unsigned)randint(0, 255));
    return it;
}

static int randsleep(const char *caller, int name)
{
    int i = randint(0, 10);
    printf("%s %d sleeping for %d seconds.\n", caller, name, i);
    return cio_sleep(i * scale);
}

static cio_queue_t q;

static int produce(void *arg, void **result)
{
    (void)result;
    int name = (int)(intptr_t)arg;
    int n = randint(0, 10);
    for (int k = 0; k < n; k++) {
        int rc = randsleep("Producer", name);
        if (rc < 0)
            return rc;
        item_t *it = makeitem();
        if (!it)
            return -ENOMEM;
        it->t = loop_now();
        if ((rc = cio_queue_put(&q, it)) < 0) {
            free(it); /* not put: still ours */
            return rc;
        }
        printf("Producer %d added <%s> to queue.\n", name, it->hex);
    }
    return 0;
}

static int consume(void *arg, void **result)
{
    (void)result;
    int name = (int)(intptr_t)arg;
    for (;;) {
        void *p;
        int rc = randsleep("Consumer", name);
        if (rc == 0)
            rc = cio_queue_get(&q, &p);
        if (rc < 0)
            return rc; /* -ECANCELED once main is done with us */
        item_t *it = p;
        /* In story seconds, as the sleeps are printed. */
        printf("Consumer %d got element <%s> in %0.5f seconds.\n", name, it->hex,
               (loop_now() - it->t) / scale);
        free(it);
        CHECK(cio_queue_task_done(&q));
    }
}

typedef struct opts {
    int nprod, ncon;
} opts_t;

static int main_task(void *arg, void **result)
{
    (void)result;
    const opts_t *o = arg;
    CHECK(cio_queue_init(&q, 0));
    cio_task_t **producers = calloc((size_t)o->nprod + 1, sizeof *producers);
    cio_task_t **consumers = calloc((size_t)o->ncon + 1, sizeof *consumers);
    EXPECT(producers && consumers);
    for (int n = 0; n < o->nprod; n++)
        CHECK(cio_spawn(&producers[n], produce, (void *)(intptr_t)n));
    for (int n = 0; n < o->ncon; n++)
        CHECK(cio_spawn(&consumers[n], consume, (void *)(intptr_t)n));
    CHECK(cio_gather(producers, (size_t)o->nprod, NULL, NULL, 0));
    CHECK(cio_queue_join(&q)); /* every item taken and task_done */
    for (int n = 0; n < o->ncon; n++)
        cio_task_cancel(consumers[n]);
    /* asyncio.run would cancel and await them; we await them ourselves. */
    CHECK(cio_gather(consumers, (size_t)o->ncon, NULL, NULL, CIO_GATHER_ALL));
    for (int n = 0; n < o->nprod; n++)
        cio_future_release(producers[n]);
    for (int n = 0; n < o->ncon; n++) {
        EXPECT(cio_future_cancelled(consumers[n]));
        cio_future_release(consumers[n]);
    }
    free(producers);
    free(consumers);
    EXPECT(cio_queue_empty(&q));
    CHECK(cio_queue_destroy(&q));
    return 0;
}

static void usage(const char *argv0)
{
    fprintf(stderr, "usage: %s [-p NPROD] [-c NCON] [--scale S] [--seed N]\n", argv0);
    exit(2);
}

int main(int argc, char **argv)
{
    opts_t o = {5, 10};
    for (int i = 1; i < argc; i += 2) { /* option-value pairs */
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v)
            usage(argv[0]);
        if (!strcmp(a, "-p") || !strcmp(a, "--nprod"))
            o.nprod = atoi(v);
        else if (!strcmp(a, "-c") || !strcmp(a, "--ncon"))
            o.ncon = atoi(v);
        else if (!strcmp(a, "--scale"))
            scale = atof(v);
        else if (!strcmp(a, "--seed"))
            rng = (uint32_t)strtoul(v, NULL, 10);
        else
            usage(argv[0]);
    }
    if (o.nprod < 0 || o.ncon < 1 || !(scale >= 0) || rng == 0)
        usage(argv[0]);
    printf("(one story second lasts %g s; --scale 1 for real time)\n", scale);
    double start = perf_counter();
    CHECK(cio_run(main_task, &o));
    double elapsed = perf_counter() - start;
    printf("Program completed in %0.5f seconds (%0.2f story seconds).\n", elapsed,
           scale > 0 ? elapsed / scale : 0.0);
    return 0;
}
