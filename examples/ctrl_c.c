/*
 * Seed 002 counts handling OS signals (处理OS信号) among the jobs of
 * asyncio's low-level API. A program that shuts down cleanly on Ctrl-C or
 * SIGTERM, in asyncio:
 *
 *     async def worker(name, period):
 *         jobs = 0
 *         try:
 *             while True:
 *                 await asyncio.sleep(period)       # one job
 *                 jobs += 1
 *                 print(f"{name}: job {jobs} done")
 *         except asyncio.CancelledError:
 *             await asyncio.sleep(0.05)             # cleanup: flush, close
 *             print(f"{name}: stopped after {jobs} jobs, cleaned up")
 *             raise
 *
 *     async def main():
 *         loop = asyncio.get_running_loop()
 *         loop.add_signal_handler(signal.SIGTERM, asyncio.current_task().cancel)
 *         workers = [asyncio.create_task(worker(f"worker {i}", 0.1 * i))
 *                    for i in (1, 2, 3)]
 *         try:
 *             await asyncio.gather(*workers)
 *         except asyncio.CancelledError:
 *             print("main: cancelled; every worker has stopped")
 *             raise
 *
 *     asyncio.run(main())    # Ctrl-C cancels main(): KeyboardInterrupt
 *
 * cio_run handles Ctrl-C as asyncio.run does: the first SIGINT cancels the
 * main task, whose gather cancels the workers and waits for their cleanup;
 * then cio_run re-raises SIGINT, so the shell sees the usual status (130).
 * A second Ctrl-C during the cleanup ends the program at once. SIGTERM goes
 * through cio_signal_add (loop.add_signal_handler): its callback runs on the
 * loop, as an ordinary callback, and cancels the main task the same way.
 *
 *   ./ctrl_c              run until Ctrl-C (or kill -TERM <pid>)
 *   ./ctrl_c --selftest   send itself SIGINT after 0.35 s; cio_run then
 *                         returns -EINTR (CIO_SIGINT_EINTR) and it exits 0
 */
#include "example.h"

#include <math.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

typedef struct worker {
    char name[16];
    double period;
    int jobs;
} worker_t;

static int worker(void *arg, void **result)
{
    (void)result;
    worker_t *w = arg;
    int rc;
    while ((rc = cio_sleep(w->period)) == 0) { /* one job */
        w->jobs++;
        printf("%s: job %d done\n", w->name, w->jobs);
    }
    /* Cancelled: the cleanup may still await, inside a shielded scope. */
    cio_scope_t shield;
    CHECK(cio_scope_enter(&shield, INFINITY, CIO_SCOPE_SHIELD));
    CHECK(cio_sleep(0.05)); /* flush, close */
    CHECK(cio_scope_exit(&shield));
    printf("%s: stopped after %d job%s, cleaned up\n", w->name, w->jobs,
           w->jobs == 1 ? "" : "s");
    return rc; /* -ECANCELED: the cancellation goes on up */
}

/* SIGTERM's callback: an ordinary loop callback, not a signal handler. */
static void on_sigterm(void *arg)
{
    puts("main: SIGTERM");
    cio_task_cancel(arg);
}

/* --selftest: Ctrl-C, as if typed, from a timer callback. */
static void press_ctrl_c(void *arg)
{
    (void)arg;
    puts("selftest: sending SIGINT");
    fflush(stdout);
    kill(getpid(), SIGINT);
}

static int main_task(void *arg, void **result)
{
    (void)result;
    bool selftest = *(bool *)arg;
    CHECK(cio_signal_add(NULL, SIGTERM, on_sigterm, cio_current_task()));
    if (selftest)
        CHECK(cio_call_later(cio_get_running_loop(), NULL, 0.35, press_ctrl_c, NULL));
    else
        printf("pid %d: press Ctrl-C (or kill -TERM %d) to stop\n", (int)getpid(),
               (int)getpid());

    worker_t w[3];
    cio_task_t *t[3];
    for (int i = 0; i < 3; i++) {
        snprintf(w[i].name, sizeof w[i].name, "worker %d", i + 1);
        w[i].period = 0.1 * (i + 1);
        w[i].jobs = 0;
        CHECK(cio_spawn(&t[i], worker, &w[i]));
    }
    int rc = cio_gather(t, 3, NULL, NULL, 0); /* cancelled: cancels them, waits */
    for (int i = 0; i < 3; i++)
        cio_future_release(t[i]);
    if (rc == -ECANCELED)
        puts("main: cancelled; every worker has stopped");
    CHECK(cio_signal_remove(NULL, SIGTERM));
    return rc;
}

int main(int argc, char **argv)
{
    bool selftest = argc > 1 && strcmp(argv[1], "--selftest") == 0;
    setvbuf(stdout, NULL, _IOLBF, 0);
    /* cio_run leaves an ignored SIGINT alone (as Python does), and a
     * background job of a non-interactive shell starts with SIGINT ignored:
     * the self-test wants the handler whatever started it. */
    if (selftest)
        signal(SIGINT, SIG_DFL);
    cio_run_opts_t opts = {.sigint = selftest ? CIO_SIGINT_EINTR : CIO_SIGINT_RAISE};
    int rc = cio_run_ex(main_task, &selftest, NULL, &opts);
    /* Ctrl-C without --selftest never gets here: cio_run re-raised it. */
    if (rc == -EINTR) {
        puts("interrupted by Ctrl-C: cleanup done, exiting 0");
        return 0;
    }
    if (rc == -ECANCELED) {
        puts("stopped by SIGTERM: cleanup done");
        return 0;
    }
    CHECK(rc);
    return 0;
}
