/*
 * Seed 004 (realpython's rand.py, "range.py" in the seed): three
 * concurrent calls of makerandom, each drawing random integers in [0, 10]
 * until one exceeds its threshold, sleeping between draws, none waiting for
 * the others to finish.
 *
 *     c = ("\033[0m", "\033[36m", "\033[91m", "\033[35m")
 *
 *     async def makerandom(idx, threshold=6):
 *         print(c[idx + 1] + f"Initiated makerandom({idx}).")
 *         i = random.randint(0, 10)
 *         while i <= threshold:
 *             print(c[idx + 1] + f"makerandom({idx}) == {i} too low; retrying.")
 *             await asyncio.sleep(idx + 1)
 *             i = random.randint(0, 10)
 *         print(c[idx + 1] + f"---> Finished: makerandom({idx}) == {i}" + c[0])
 *         return i
 *
 *     async def main():
 *         res = await asyncio.gather(*(makerandom(i, 10 - i - 1) for i in range(3)))
 *         return res
 *
 *     r1, r2, r3 = asyncio.run(main())
 *     print(f"r1: {r1}, r2: {r2}, r3: {r3}")
 *
 * The results travel as the tasks' values and come back, in order, from
 * cio_gather. Colours are used when stdout is a terminal (not with
 * NO_COLOR set or --no-color).
 *
 * Usage: rand [--scale S] [--seed N] [--no-color]
 * The sleeps are idx + 1 story seconds; --scale is the length of one in
 * real seconds (default 0.01; 1 = as in Python).
 */
#include "example.h"

#include <stdint.h>
#include <string.h>
#include <unistd.h>

static double scale = 0.01;
static uint32_t rng = 444;
static const char *c[4] = {"\033[0m", "\033[36m", "\033[91m", "\033[35m"};

static int randint(int lo, int hi)
{
    rng ^= rng << 13;
    rng ^= rng >> 17;
    rng ^= rng << 5;
    return lo + (int)(rng % (uint32_t)(hi - lo + 1));
}

typedef struct call {
    int idx;
    int threshold;
} call_t;

static int makerandom(void *arg, void **result)
{
    const call_t *a = arg;
    int idx = a->idx;
    printf("%sInitiated makerandom(%d).\n", c[idx + 1], idx);
    int i = randint(0, 10);
    while (i <= a->threshold) {
        printf("%smakerandom(%d) == %d too low; retrying.\n", c[idx + 1], idx, i);
        int rc = cio_sleep((idx + 1) * scale);
        if (rc < 0)
            return rc;
        i = randint(0, 10);
    }
    printf("%s---> Finished: makerandom(%d) == %d%s\n", c[idx + 1], idx, i, c[0]);
    *result = (void *)(intptr_t)i;
    return 0;
}

static int main_task(void *arg, void **result)
{
    (void)arg;
    (void)result;
    call_t calls[3];
    cio_task_t *t[3];
    for (int i = 0; i < 3; i++) {
        calls[i] = (call_t){i, 10 - i - 1};
        CHECK(cio_spawn(&t[i], makerandom, &calls[i]));
    }
    void *res[3];
    CHECK(cio_gather(t, 3, res, NULL, 0));
    for (int i = 0; i < 3; i++)
        cio_future_release(t[i]);
    printf("\nr1: %d, r2: %d, r3: %d\n", (int)(intptr_t)res[0], (int)(intptr_t)res[1],
           (int)(intptr_t)res[2]);
    return 0;
}

int main(int argc, char **argv)
{
    bool color = isatty(STDOUT_FILENO) && !getenv("NO_COLOR");
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--scale") && i + 1 < argc) {
            scale = atof(argv[++i]);
        } else if (!strcmp(argv[i], "--seed") && i + 1 < argc) {
            rng = (uint32_t)strtoul(argv[++i], NULL, 10);
        } else if (!strcmp(argv[i], "--no-color")) {
            color = false;
        } else {
            fprintf(stderr, "usage: %s [--scale S] [--seed N] [--no-color]\n", argv[0]);
            return 2;
        }
    }
    if (!(scale >= 0) || rng == 0) {
        fprintf(stderr, "%s: --scale must be >= 0 and --seed > 0\n", argv[0]);
        return 2;
    }
    if (!color)
        c[0] = c[1] = c[2] = c[3] = "";
    CHECK(cio_run(main_task, NULL));
    return 0;
}
