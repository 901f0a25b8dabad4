/*
 * Helpers shared by cio's benchmarks (see shared BENCH.md): wall clock,
 * xorshift32 inputs and page pre-faulting so that input preparation is not
 * timed. Every benchmark prints exactly one "RESULT key=value ..." line per
 * measurement on stdout; everything else goes to stderr.
 */
#ifndef CIO_BENCH_COMMON_H
#define CIO_BENCH_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BENCH_SEED 2463534242u

static inline int64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* xorshift32 as specified: x ^= x << 13; x ^= x >> 17; x ^= x << 5. */
static inline uint32_t bench_xorshift32(uint32_t *state)
{
    uint32_t x = *state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *state = x;
    return x;
}

/* Touches every page of [p, p + n) so that page faults are not timed. */
static inline void bench_prefault(void *p, size_t n)
{
    volatile char *c = (volatile char *)p;
    for (size_t i = 0; i < n; i += 4096)
        c[i] = 0;
    if (n)
        c[n - 1] = 0;
}

/* malloc + zero + prefault; exits on failure. */
static inline void *bench_alloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "bench: out of memory (%zu bytes)\n", n);
        exit(2);
    }
    memset(p, 0, n);
    bench_prefault(p, n);
    return p;
}

static inline double bench_ms(int64_t ns)
{
    return (double)ns / 1e6;
}

#endif /* CIO_BENCH_COMMON_H */
