/*
 * BENCH.md workload 4: timers. N = 1,000,000 one-shot timers; timer i fires
 * after x_i % 1,000,000 microseconds (x_i the i-th xorshift32 output from
 * seed 2463534242, computed before timing). Each expiry increments a counter;
 * the run finishes when it reaches N.
 *
 *   callbacks  cio_call_later with a caller-owned cio_handle_t array;
 *              arm_ms = first arm to last arm returning
 *   sleep      N tasks each cio_sleep_until_ns(start + delay_i);
 *              arm_ms = time to spawn them all
 *
 * total_ms runs from the first arm (spawn) to the last expiry, so
 * total_ms >= 1000 and the overhead is total_ms - 1000.
 *
 * Usage: bench_timers [callbacks|sleep|all] [N]
 */
#include "bench_common.h"

#include <cio.h>
#include <errno.h>

static long n_timers = 1000000;
static uint32_t *delay_us;  /* x_i % 1,000,000 */
static double *delay_s;     /* the same in seconds, for cio_call_later */
static long fired;
static int64_t t_last;
static cio_future_t *all_fired;

static void prepare_inputs(void)
{
    delay_us = bench_alloc((size_t)n_timers * sizeof *delay_us);
    delay_s = bench_alloc((size_t)n_timers * sizeof *delay_s);
    uint32_t x = BENCH_SEED;
    for (long i = 0; i < n_timers; i++) {
        delay_us[i] = bench_xorshift32(&x) % 1000000u;
        delay_s[i] = (double)delay_us[i] / 1e6;
    }
}

static void on_expiry(void)
{
    if (++fired == n_timers) {
        t_last = bench_now_ns();
        cio_future_set_result(all_fired, NULL);
    }
}

/* ---------------------------------------------------------- callbacks --- */

static void timer_cb(void *arg)
{
    (void)arg;
    on_expiry();
}

static int callbacks_main(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_loop_t *loop = cio_get_running_loop();
    cio_handle_t *h = bench_alloc((size_t)n_timers * sizeof *h);
    fired = 0;
    int frc = cio_future_new(&all_fired, NULL);
    if (frc < 0)
        return frc;

    int64_t t0 = bench_now_ns();
    for (long i = 0; i < n_timers; i++) {
        int rc = cio_call_later(loop, &h[i], delay_s[i], timer_cb, NULL);
        if (rc < 0) {
            fprintf(stderr, "timers: cio_call_later %ld: %s\n", i, cio_strerror(rc));
            return rc;
        }
    }
    int64_t t_armed = bench_now_ns();
    int rc = cio_await(all_fired, NULL);
    cio_future_release(all_fired);
    if (rc < 0)
        return rc;
    if (fired != n_timers) {
        fprintf(stderr, "timers: fired %ld of %ld\n", fired, n_timers);
        return -EPROTO;
    }
    for (long i = 0; i < n_timers; i++)
        if (cio_handle_active(&h[i])) {
            fprintf(stderr, "timers: handle %ld still active\n", i);
            return -EPROTO;
        }
    free(h);
    printf("RESULT bench=timers variant=callbacks timers=%ld arm_ms=%.1f total_ms=%.1f "
           "ns_per_arm=%.1f\n",
           n_timers, bench_ms(t_armed - t0), bench_ms(t_last - t0),
           (double)(t_armed - t0) / (double)n_timers);
    fflush(stdout);
    return 0;
}

/* -------------------------------------------------------------- sleep --- */

static int64_t sleep_start;

static int sleeper(void *arg, void **result)
{
    (void)result;
    long i = (long)(intptr_t)arg;
    int rc = cio_sleep_until_ns(sleep_start + (int64_t)delay_us[i] * 1000);
    if (rc < 0)
        return rc;
    on_expiry();
    return 0;
}

static int sleep_main(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_task_t **tasks = bench_alloc((size_t)n_timers * sizeof *tasks);
    fired = 0;
    int frc = cio_future_new(&all_fired, NULL);
    if (frc < 0)
        return frc;

    int64_t t0 = bench_now_ns();
    sleep_start = t0;
    for (long i = 0; i < n_timers; i++) {
        int rc = cio_spawn(&tasks[i], sleeper, (void *)(intptr_t)i);
        if (rc < 0) {
            fprintf(stderr, "timers: cio_spawn %ld: %s\n", i, cio_strerror(rc));
            return rc;
        }
    }
    int64_t t_armed = bench_now_ns();
    int rc = cio_await(all_fired, NULL);
    cio_future_release(all_fired);
    if (rc < 0)
        return rc;
    /* Let the tasks return before checking them (they finish right after
     * their expiry), then release them: untimed. */
    rc = cio_gather(tasks, (size_t)n_timers, NULL, NULL, 0);
    for (long i = 0; i < n_timers; i++)
        cio_future_release(tasks[i]);
    free(tasks);
    if (rc < 0) {
        fprintf(stderr, "timers: sleeper failed: %s\n", cio_strerror(rc));
        return rc;
    }
    if (fired != n_timers) {
        fprintf(stderr, "timers: fired %ld of %ld\n", fired, n_timers);
        return -EPROTO;
    }
    printf("RESULT bench=timers variant=sleep timers=%ld arm_ms=%.1f total_ms=%.1f "
           "ns_per_arm=%.1f\n",
           n_timers, bench_ms(t_armed - t0), bench_ms(t_last - t0),
           (double)(t_armed - t0) / (double)n_timers);
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv)
{
    const char *which = argc > 1 ? argv[1] : "all";
    if (argc > 2)
        n_timers = strtol(argv[2], NULL, 10);
    if (n_timers < 1)
        n_timers = 1;
    int all = strcmp(which, "all") == 0, ran = 0, rc;
    prepare_inputs();
    if (all || strcmp(which, "callbacks") == 0) {
        ran = 1;
        rc = cio_run(callbacks_main, NULL);
        if (rc < 0) {
            fprintf(stderr, "timers callbacks: %s\n", cio_strerror(rc));
            return 1;
        }
    }
    if (all || strcmp(which, "sleep") == 0) {
        ran = 1;
        rc = cio_run(sleep_main, NULL);
        if (rc < 0) {
            fprintf(stderr, "timers sleep: %s\n", cio_strerror(rc));
            return 1;
        }
    }
    if (!ran) {
        fprintf(stderr, "usage: %s [callbacks|sleep|all] [N]\n", argv[0]);
        return 2;
    }
    return 0;
}
