/*
 * asyncio.run and asyncio.Runner: create a loop, run a main task to
 * completion, then cancel what is left, wait for it, stop the thread pool
 * and close the loop.
 *
 * Ctrl-C is handled as asyncio.Runner.run handles it: when a run starts on
 * the main thread and SIGINT has its default disposition, a handler is
 * installed for the run (signal.c, cio__sigint_*). The first SIGINT cancels
 * the main task; the run then ends as it ends (the task may clean up), and
 * a main task that ended cancelled makes the run report the interrupt:
 * cio_runner_run returns -EINTR (Runner.run raises KeyboardInterrupt) and
 * cio_run, once everything is closed, re-raises SIGINT so that the process
 * ends as an uncaught KeyboardInterrupt ends Python. A second SIGINT ends
 * the process at once. The handler is removed when the run ends, before the
 * leftover tasks are cancelled, as in Python.
 */
#include "os.h"

/* Cancels every unfinished task of the loop that is not cancelled yet. */
static void cancel_all(cio_loop_t *loop)
{
    for (cio__task *t = loop->all; t; t = t->all_next)
        if (!t->co.cancel_requested)
            cio_task_cancel(&t->fut);
}

int cio_loop_shutdown(cio_loop_t *loop)
{
    if (!loop)
        return 0;
    int rc = cio__loop_enter(loop);
    if (rc)
        return rc;
    /* Tasks that other threads submit from now on
     * (cio_run_coroutine_threadsafe) are not started: their cfutures end
     * with -ESHUTDOWN. A flood of them cannot keep the loops below going. */
    cio__threadsafe_refuse(loop, true);
    /* Cancel and run until every task has finished, as asyncio.run does;
     * tasks spawned while shutting down are cancelled too. */
    while (loop->ntasks) {
        cancel_all(loop);
        cio__loop_run_once(loop);
    }
    /* asyncio.run's shutdown_default_executor, while the loop runs: the
     * default pool's jobs (queued ones too) finish and their results are
     * delivered; a job waiting for this loop gets its answer instead of
     * blocking a join forever. The pool stays shut down (-ESHUTDOWN). */
    cio__pool_drain_default(loop, cancel_all);
    /* Done callbacks already scheduled run once; tasks spawned meanwhile
     * are cancelled and run to their end like the others. */
    bool ready = loop->nready != 0;
    while (loop->ntasks || ready) {
        ready = false;
        cancel_all(loop);
        cio__loop_run_once(loop);
    }
    cio__threadsafe_refuse(loop, false);
    cio__loop_leave(loop);
    return 0;
}

struct cio_runner {
    cio_loop_t *loop;
    cio_run_opts_t opts;
    bool sigint; /* the running run has the SIGINT handler installed */
};

int cio_runner_new(cio_runner_t **out, const cio_run_opts_t *opts)
{
    if (!out)
        return -EINVAL;
    *out = NULL;
    if (opts && (opts->reserved_[0] || opts->reserved_[1] || opts->sigint > CIO_SIGINT_OFF))
        return -EINVAL;
    cio_runner_t *r = cio__calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    int rc = cio_loop_new(&r->loop);
    if (rc) {
        cio__free(r);
        return rc;
    }
    if (opts) {
        r->opts = *opts;
        if (opts->debug)
            cio_loop_set_debug(r->loop, true);
    }
    *out = r;
    return 0;
}

cio_loop_t *cio_runner_get_loop(cio_runner_t *r)
{
    return r ? r->loop : NULL;
}

/* The main task has finished: stop the loop. From now on a SIGINT ends the
 * process (Python's Runner raises KeyboardInterrupt once the main task is
 * done). */
static void main_done(cio_future_t *f, void *arg)
{
    (void)f;
    cio_runner_t *r = arg;
    if (r->sigint)
        cio__sigint_main_done();
    cio_loop_stop(r->loop);
}

/*
 * Runs the loop until the main task t has finished or a task stops the
 * loop, as cio_loop_run_forever does; with the SIGINT handler installed,
 * the first SIGINT cancels t (*interrupted is set). Returns 0 or the
 * errors of entering the loop.
 */
static int drive(cio_runner_t *r, cio_task_t *t, bool *interrupted)
{
    cio_loop_t *loop = r->loop;
    int rc = cio__loop_enter(loop);
    if (rc)
        return rc;
    bool cancelled = !r->sigint; /* nothing to watch for without the handler */
    while (!loop->stopping) {
        cio__loop_run_once(loop);
        /* One relaxed load per iteration while the handler is installed
         * (3 instructions per switch of bench_switch yield, callgrind):
         * the handler only counts and wakes the loop, the cancel is made
         * here, on the loop's thread. */
        if (cio__unlikely(!cancelled &&
                          atomic_load_explicit(&cio__sigint_hits, memory_order_relaxed))) {
            cancelled = true;
            cio_task_cancel(t);
        }
    }
    cio__loop_leave(loop);
    *interrupted = cancelled && r->sigint;
    return 0;
}

/*
 * cio_runner_run's body. *interrupted tells whether the run ended because
 * of SIGINT (the main task, cancelled by it, ended with -ECANCELED): it
 * returns -EINTR then.
 */
static int runner_run(cio_runner_t *r, cio_task_fn fn, void *arg, void **result,
                      bool *interrupted)
{
    *interrupted = false;
    if (!r || !fn)
        return -EINVAL;
    if (cio__running)
        return -EBUSY;
    cio_spawn_opts_t o = {.name = r->opts.name ? r->opts.name : "main",
                          .stack_size = r->opts.stack_size};
    cio_task_t *t;
    int rc = cio_spawn_ex(&t, r->loop, fn, arg, &o);
    if (rc)
        return rc;
    if ((rc = cio_future_add_done_callback(t, main_done, r))) {
        cio_future_release(t); /* the task stays: the next run or the close ends it */
        return rc;
    }
    r->sigint = r->opts.sigint != CIO_SIGINT_OFF && cio__sigint_install(r->loop);
    rc = drive(r, t, interrupted);
    if (r->sigint)
        cio__sigint_uninstall();
    r->sigint = false;
    cio_future_remove_done_callback(t, main_done, r);
    if (!rc)
        rc = cio_future_done(t) ? cio_future_result(t, result) : -EINTR;
    cio_future_release(t);
    /* Python raises KeyboardInterrupt only when the main task ended with
     * the CancelledError the interrupt caused: a task that caught it and
     * returned normally ends the run normally. */
    if (*interrupted && rc != -ECANCELED)
        *interrupted = false;
    return *interrupted ? -EINTR : rc;
}

int cio_runner_run(cio_runner_t *r, cio_task_fn fn, void *arg, void **result)
{
    bool interrupted;
    return runner_run(r, fn, arg, result, &interrupted);
}

int cio_runner_close(cio_runner_t *r)
{
    if (!r)
        return 0;
    /* -ESHUTDOWN: an earlier call closed the loop but could not free it. */
    int rc = cio_loop_shutdown(r->loop);
    if (rc && rc != -ESHUTDOWN)
        return rc;
    if ((rc = cio_loop_free(r->loop)))
        return rc;
    cio__free(r);
    return 0;
}

int cio_run_ex(cio_task_fn fn, void *arg, void **result, const cio_run_opts_t *opts)
{
    if (!fn)
        return -EINVAL;
    if (cio__running)
        return -EBUSY;
    cio_runner_t *r;
    int rc = cio_runner_new(&r, opts);
    if (rc)
        return rc;
    bool interrupted;
    rc = runner_run(r, fn, arg, result, &interrupted);
    /* -EBUSY here means a future or task of the loop is still referenced
     * (the caller's leak): the loop cannot be freed and is left as it is;
     * debug mode has reported it. The main task's status matters more. */
    (void)cio_runner_close(r);
    /* An interrupted run ends the process as Python's does, once the
     * leftover tasks, the thread pool and the loop are closed. */
    if (interrupted && !(opts && opts->sigint == CIO_SIGINT_EINTR))
        cio__sigint_reraise();
    return rc;
}

int cio_run(cio_task_fn fn, void *arg)
{
    return cio_run_ex(fn, arg, NULL, NULL);
}
