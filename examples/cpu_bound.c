/*
 * Seed 003, the multiprocessing version: CPU-bound work on every core.
 *
 *     def cpu_bound(number):
 *         return sum(i * i for i in range(number))
 *
 *     def find_sums(numbers):
 *         with multiprocessing.Pool() as pool:
 *             pool.map(cpu_bound, numbers)
 *
 *     numbers = [5_000_000 + x for x in range(20)]
 *     start_time = time.time()
 *     find_sums(numbers)
 *     duration = time.time() - start_time
 *     print(f"Duration {duration} seconds")
 *
 * Threads would not help Python here (the GIL) and tasks never help
 * CPU-bound work: what helps is more processes. The sums run first in this
 * process, one after the other, then on a process pool with one worker per
 * core (cio_process_pool_map, Pool.map), and both durations are printed:
 * the pool's is about the first divided by the number of cores.
 *
 * The sums reach 4.2e19, more than 64 bits hold, so they are computed in
 * unsigned __int128 (exact, as Python's integers) and travel as 16 bytes.
 * The job is a plain function of the program: the workers are forked from
 * it, so its address is valid there.
 *
 *     cpu_bound [WORKERS]      (default: one per core)
 */
#include "example.h"

#include <stdint.h>
#include <string.h>
#include <sys/uio.h>

__extension__ typedef unsigned __int128 u128;

enum { NNUMBERS = 20 };

/* Not inlined, so that both ways run the very same machine code. */
__attribute__((noinline)) static u128 cpu_bound(uint64_t number)
{
    u128 sum = 0;
    for (uint64_t i = 0; i < number; i++) {
        /* Keeps the compiler from replacing the loop by its closed form:
         * the point is the work, as in the seed. */
        __asm__ volatile("" : "+r"(i));
        sum += (u128)(i * i);
    }
    return sum;
}

/* The pool's job: a uint64_t number in, its 16-byte sum out (malloc'd,
 * the pool sends it back and frees it). */
static int cpu_bound_job(const void *in, size_t len, void **out, size_t *outlen)
{
    uint64_t number;
    if (len != sizeof number)
        return -EINVAL;
    memcpy(&number, in, sizeof number);
    u128 *sum = malloc(sizeof *sum);
    if (!sum)
        return -ENOMEM;
    *sum = cpu_bound(number);
    *out = sum;
    *outlen = sizeof *sum;
    return 0;
}

/* The decimal digits of v. */
static const char *u128_str(u128 v, char buf[48])
{
    char *p = buf + 47;
    *p = '\0';
    do {
        *--p = (char)('0' + (int)(v % 10));
        v /= 10;
    } while (v);
    return p;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int main_task(void *arg, void **result)
{
    (void)result;
    unsigned workers = *(unsigned *)arg;
    uint64_t numbers[NNUMBERS];
    for (int x = 0; x < NNUMBERS; x++)
        numbers[x] = 5000000 + (uint64_t)x;

    /* One process: the sums one after the other. */
    u128 one[NNUMBERS];
    double start = now_s();
    for (int x = 0; x < NNUMBERS; x++)
        one[x] = cpu_bound(numbers[x]);
    double d_one = now_s() - start;
    printf("Duration %.3f seconds (one process)\n", d_one);

    /* The pool: Pool.map over the same numbers. */
    cio_process_pool_t *pool;
    CHECK(cio_process_pool_new(&pool, NULL, &(cio_process_pool_opts_t){.workers = workers}));
    struct iovec in[NNUMBERS];
    cio_pool_bytes_t *out[NNUMBERS];
    for (int x = 0; x < NNUMBERS; x++)
        in[x] = (struct iovec){&numbers[x], sizeof numbers[x]};
    start = now_s();
    CHECK(cio_process_pool_map(pool, cpu_bound_job, in, NNUMBERS, out));
    double d_pool = now_s() - start;
    printf("Duration %.3f seconds (process pool, %u workers)\n", d_pool,
           cio_process_pool_workers(pool));
    CHECK(cio_process_pool_shutdown(pool, true, false));
    cio_process_pool_free(pool);

    printf("%-10s %-24s %s\n", "number", "sum (one process)", "sum (pool)");
    for (int x = 0; x < NNUMBERS; x++) {
        u128 pooled;
        EXPECT(out[x]->len == sizeof pooled);
        memcpy(&pooled, out[x]->data, sizeof pooled);
        cio_pool_bytes_free(out[x]);
        char a[48], b[48];
        printf("%-10llu %-24s %s\n", (unsigned long long)numbers[x], u128_str(one[x], a),
               u128_str(pooled, b));
        EXPECT(pooled == one[x]);
    }
    printf("The same %d sums both ways; speed-up %.2fx\n", NNUMBERS, d_one / d_pool);
    return 0;
}

int main(int argc, char **argv)
{
    unsigned workers = argc > 1 ? (unsigned)strtoul(argv[1], NULL, 10) : 0;
    CHECK(cio_run(main_task, &workers));
    return 0;
}
