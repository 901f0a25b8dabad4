/*
 * Seed 004 (realpython's chained.py): chaining coroutines. Each input goes
 * through part1 then part2 (part2 needs part1's result); the chains of all
 * inputs run concurrently, so the program takes as long as the slowest
 * chain, not the sum of all of them.
 *
 *     async def part1(n):
 *         i = random.randint(0, 10)
 *         print(f"part1({n}) sleeping for {i} seconds.")
 *         await asyncio.sleep(i)
 *         result = f"result{n}-1"
 *         print(f"Returning part1({n}) == {result}.")
 *         return result
 *
 *     async def part2(n, arg):
 *         i = random.randint(0, 10)
 *         print(f"part2{n, arg} sleeping for {i} seconds.")
 *         await asyncio.sleep(i)
 *         result = f"result{n}-2 derived from {arg}"
 *         print(f"Returning part2{n, arg} == {result}.")
 *         return result
 *
 *     async def chain(n):
 *         start = time.perf_counter()
 *         p1 = await part1(n)
 *         p2 = await part2(n, p1)
 *         end = time.perf_counter() - start
 *         print(f"-->Chained result{n} => {p2} (took {end:0.2f} seconds).")
 *
 *     async def main(*args):
 *         await asyncio.gather(*(chain(n) for n in args))
 *
 * part1 and part2 are plain C functions called from the chain's task (no
 * colouring); only chain needs the task signature.
 *
 * Usage: chained [--scale S] [--seed N] [N ...]   (default inputs: 1 2 3)
 * Sleeps are 0..10 story seconds; --scale is the length of one in real
 * seconds (default 0.01; 1 = as in Python). Times are printed in story
 * seconds.
 */
#include "example.h"

#include <stdint.h>
#include <string.h>

static double scale = 0.01;
static uint32_t rng = 444;

static int randint(int lo, int hi)
{
    rng ^= rng << 13;
    rng ^= rng >> 17;
    rng ^= rng << 5;
    return lo + (int)(rng % (uint32_t)(hi - lo + 1));
}

static double perf_counter(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int part1(int n, char *out, size_t cap)
{
    int i = randint(0, 10);
    printf("part1(%d) sleeping for %d seconds.\n", n, i);
    int rc = cio_sleep(i * scale);
    if (rc < 0)
        return rc;
    snprintf(out, cap, "result%d-1", n);
    printf("Returning part1(%d) == %s.\n", n, out);
    return 0;
}

static int part2(int n, const char *arg, char *out, size_t cap)
{
    int i = randint(0, 10);
    printf("part2(%d, '%s') sleeping for %d seconds.\n", n, arg, i);
    int rc = cio_sleep(i * scale);
    if (rc < 0)
        return rc;
    snprintf(out, cap, "result%d-2 derived from %s", n, arg);
    printf("Returning part2(%d, '%s') == %s.\n", n, arg, out);
    return 0;
}

static int chain(void *arg, void **result)
{
    (void)result;
    int n = (int)(intptr_t)arg;
    char p1[64], p2[128];
    double start = perf_counter();
    int rc = part1(n, p1, sizeof p1);
    if (rc == 0)
        rc = part2(n, p1, p2, sizeof p2);
    if (rc < 0)
        return rc;
    double end = perf_counter() - start;
    printf("-->Chained result%d => %s (took %0.2f seconds).\n", n, p2,
           scale > 0 ? end / scale : 0.0);
    return 0;
}

typedef struct inputs {
    int *n;
    size_t count;
} inputs_t;

static int main_task(void *arg, void **result)
{
    (void)result;
    const inputs_t *in = arg;
    cio_task_t **t = calloc(in->count, sizeof *t);
    EXPECT(t);
    for (size_t i = 0; i < in->count; i++)
        CHECK(cio_spawn(&t[i], chain, (void *)(intptr_t)in->n[i]));
    CHECK(cio_gather(t, in->count, NULL, NULL, 0));
    for (size_t i = 0; i < in->count; i++)
        cio_future_release(t[i]);
    free(t);
    return 0;
}

int main(int argc, char **argv)
{
    static int defaults[] = {1, 2, 3};
    int *n = calloc((size_t)argc + 1, sizeof *n);
    EXPECT(n);
    inputs_t in = {n, 0};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--scale") && i + 1 < argc)
            scale = atof(argv[++i]);
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc)
            rng = (uint32_t)strtoul(argv[++i], NULL, 10);
        else
            n[in.count++] = atoi(argv[i]);
    }
    if (in.count == 0) {
        in.n = defaults;
        in.count = sizeof defaults / sizeof defaults[0];
    }
    if (!(scale >= 0) || rng == 0) {
        fprintf(stderr, "usage: %s [--scale S >= 0] [--seed N > 0] [N ...]\n", argv[0]);
        return 2;
    }
    printf("(one story second lasts %g s; --scale 1 for real time)\n", scale);
    double start = perf_counter();
    CHECK(cio_run(main_task, &in));
    double end = perf_counter() - start;
    printf("Program finished in %0.2f seconds (%0.3f s real).\n",
           scale > 0 ? end / scale : 0.0, end);
    free(n);
    return 0;
}
