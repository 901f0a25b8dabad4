/*
 * asyncio.run and asyncio.Runner: create a loop, run a main task to
 * completion, then cancel what is left, wait for it, stop the thread pool
 * and close the loop.
 */
#include "task.h"

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
    /* Cancel and run until every task has finished, as asyncio.run does;
     * tasks spawned while shutting down are cancelled too. */
    while (loop->ntasks) {
        cancel_all(loop);
        cio__loop_run_once(loop);
    }
    cio__loop_leave(loop);
    cio_executor_t *ex = loop->executor;
    loop->executor = NULL;
    cio_executor_shutdown(ex, true);
    /* Completions the pool posted back still have to run. */
    if (loop->nready || atomic_load(&loop->ts_pending)) {
        cio__loop_enter(loop);
        cio__loop_run_once(loop);
        cio__loop_leave(loop);
    }
    return 0;
}

struct cio_runner {
    cio_loop_t *loop;
    cio_run_opts_t opts;
};

int cio_runner_new(cio_runner_t **out, const cio_run_opts_t *opts)
{
    if (!out)
        return -EINVAL;
    *out = NULL;
    if (opts && (opts->reserved_[0] || opts->reserved_[1]))
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

int cio_runner_run(cio_runner_t *r, cio_task_fn fn, void *arg, void **result)
{
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
    rc = cio_loop_run_until_complete(r->loop, t, result);
    cio_future_release(t);
    return rc;
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
    rc = cio_runner_run(r, fn, arg, result);
    /* -EBUSY here means a future or task of the loop is still referenced
     * (the caller's leak): the loop cannot be freed and is left as it is;
     * debug mode has reported it. The main task's status matters more. */
    (void)cio_runner_close(r);
    return rc;
}

int cio_run(cio_task_fn fn, void *arg)
{
    return cio_run_ex(fn, arg, NULL, NULL);
}
