/*
 * run_coroutine_threadsafe round trips (issue 8, threads): a loop runs in a
 * thread of its own ("the target"); an empty task is submitted to it with
 * cio_run_coroutine_threadsafe and its cfuture awaited, N times, from
 *
 *   - a plain thread, blocking in cio_cfuture_wait (asyncio's
 *     run_coroutine_threadsafe(coro, loop).result());
 *   - a task of another loop, for which the wait is an await point;
 *   - a plain thread that submits N tasks first and then waits for them all
 *     (pipelined: the cost of a submission itself).
 *
 * Each round trip is two cross-thread wake-ups (the target's eventfd, then
 * the waiter's condition variable or its loop's eventfd), so on a VM the
 * figure is mostly the cost of waking a sleeping vCPU.
 *
 *   bench_threadsafe [N]          (default 20000)
 *
 * Prints one RESULT line per mode (ns per round trip or per submission).
 */
#include "bench_common.h"

#include <cio.h>
#include <pthread.h>

static cio_loop_t *target;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static long n_trips = 20000;

static void stop_cb(void *loop)
{
    cio_loop_stop(loop);
}

/* The target loop's thread: publishes its loop and runs it until stopped. */
static void *target_main(void *arg)
{
    (void)arg;
    cio_loop_t *loop;
    if (cio_loop_new(&loop))
        abort();
    pthread_mutex_lock(&mu);
    target = loop;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    if (cio_loop_run_forever(loop) || cio_loop_shutdown(loop) || cio_loop_free(loop))
        abort();
    return NULL;
}

static int empty_task(void *arg, void **result)
{
    *result = arg;
    return 0;
}

/* One submission, awaited; aborts on any error (a benchmark, not a test). */
static void round_trip(void)
{
    cio_cfuture_t *cf;
    void *res = NULL;
    if (cio_run_coroutine_threadsafe(&cf, target, empty_task, &cf) ||
        cio_cfuture_wait(cf, 10.0, &res) || res != &cf)
        abort();
    cio_cfuture_release(cf);
}

static void report(const char *mode, int64_t ns)
{
    printf("RESULT bench=threadsafe mode=%s n=%ld ns_per_op=%.1f backend=%s\n", mode,
           n_trips, (double)ns / (double)n_trips, cio_loop_backend(target));
}

static int from_task(void *arg, void **result)
{
    (void)arg;
    (void)result;
    int64_t t0 = bench_now_ns();
    for (long i = 0; i < n_trips; i++)
        round_trip();
    report("task", bench_now_ns() - t0);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 1)
        n_trips = strtol(argv[1], NULL, 10);
    if (n_trips <= 0) {
        fprintf(stderr, "usage: bench_threadsafe [N]\n");
        return 2;
    }
    pthread_t th;
    if (pthread_create(&th, NULL, target_main, NULL))
        abort();
    pthread_mutex_lock(&mu);
    while (!target)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);

    int64_t t0 = bench_now_ns();
    for (long i = 0; i < n_trips; i++)
        round_trip();
    report("thread", bench_now_ns() - t0);

    if (cio_run(from_task, NULL))
        abort();

    cio_cfuture_t **cfs = malloc(sizeof(*cfs) * (size_t)n_trips);
    if (!cfs)
        abort();
    t0 = bench_now_ns();
    for (long i = 0; i < n_trips; i++)
        if (cio_run_coroutine_threadsafe(&cfs[i], target, empty_task, NULL))
            abort();
    for (long i = 0; i < n_trips; i++) {
        if (cio_cfuture_wait(cfs[i], 10.0, NULL))
            abort();
        cio_cfuture_release(cfs[i]);
    }
    report("pipelined", bench_now_ns() - t0);
    free(cfs);

    if (cio_call_soon_threadsafe(target, stop_cb, target))
        abort();
    pthread_join(th, NULL);
    return 0;
}
