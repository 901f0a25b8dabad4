/*
 * Tasks: coroutines on their own stacks, resumed by the loop as ready
 * callbacks, each with a future that completes when the function returns.
 *
 * A task's control block comes from the loop's pool and holds no stack until
 * the task first runs, so a task that completes without suspending borrows a
 * hot pooled stack for its whole life and gives it back at once. Suspending,
 * waking and cancellation are the wait primitive's (wait.c); this file adds
 * the task's life cycle, names, awaiting and introspection.
 */
#include "task.h"

/* ------------------------------------------------------------------------ */
/* Life cycle                                                                */
/* ------------------------------------------------------------------------ */

static void task_entry(void *arg);

static void all_unlink(cio_loop_t *loop, cio__task *t)
{
    if (t->all_prev)
        t->all_prev->all_next = t->all_next;
    else
        loop->all = t->all_next;
    if (t->all_next)
        t->all_next->all_prev = t->all_prev;
    loop->ntasks--;
}

static void task_cleanup(cio_loop_t *loop, cio__task *t)
{
    if (t->co.stack)
        cio__coro_release(&t->co);
    all_unlink(loop, t);
    cio__locals_unref(t->locals);
    t->locals = NULL;
    int st = t->fut.status;
    cio__future_complete(&t->fut, st, t->fut.result,
                         st == -ECANCELED ? CIO__CANCELLED : CIO__DONE);
    cio_future_release(&t->fut); /* the reference the running task held */
}

static void report_slow(cio_loop_t *loop, cio__task *t, int64_t t0)
{
    int64_t dt = cio__clock_ns() - t0;
    loop->last_was_task = 1;
    if (dt > loop->slow_ns)
        fprintf(stderr, "cio: task '%s' held the loop for %.1f ms\n",
                cio_task_get_name(&t->fut), (double)dt / 1e6);
}

/* The ready callback of every task: (re)starts it. */
static void task_step(void *arg)
{
    cio__task *t = arg;
    cio_loop_t *loop = t->fut.loop;
    if (cio__unlikely(!t->co.stack)) {
        cio__stack_owner owner = {.kind = "task", .name = (const char *const *)&t->name,
                                  .id = &t->id};
        int rc = cio__coro_start(&t->co, t->stack_size, &owner, task_entry, t);
        if (rc) { /* no stack: the task fails with -ENOMEM without running */
            t->fut.status = rc;
            t->fut.result = NULL;
            t->co.state = CIO__T_FINISHED;
            task_cleanup(loop, t);
            return;
        }
    }
    int64_t t0 = loop->debug ? cio__clock_ns() : 0;
    cio__coro_resume(&t->co);
    if (cio__unlikely(loop->debug))
        report_slow(loop, t, t0);
    if (t->co.state == CIO__T_FINISHED)
        task_cleanup(loop, t);
}

static void task_entry(void *arg)
{
    cio__task *t = arg;
#ifdef CIO__ASAN
    cio_loop_t *loop = t->fut.loop;
    __sanitizer_finish_switch_fiber(NULL, &loop->main_stack_lo, &loop->main_stack_size);
#endif
    void *result = NULL;
    int st = t->fn(t->arg, &result);
    t->fut.status = st;
    t->fut.result = result;
    cio__coro_exit(&t->co);
}

/* ------------------------------------------------------------------------ */
/* The task kind of future, and the loop's close hooks                       */
/* ------------------------------------------------------------------------ */

static void task_free(cio_future_t *f)
{
    cio__task *t = (cio__task *)f;
    if (t->name) /* most tasks never ask for one */
        cio__free(t->name);
    cio__pool_free(&f->loop->pools[CIO__POOL_TASK], t);
}

const cio__future_ops cio__task_ops = {
    .cancel = cio_task_cancel, /* a task is a future: same signatures */
    .free = task_free,
    .name = cio_task_get_name,
    .what = "task",
};

static void dump_one(cio__task *t, FILE *out);

/* Unfinished tasks keep the loop open. */
static int tasks_busy(cio_loop_t *loop)
{
    if (!loop->ntasks)
        return 0;
    if (loop->debug) {
        fprintf(stderr, "cio: loop closed with %zu unfinished task(s):\n", loop->ntasks);
        for (cio__task *t = loop->all; t; t = t->all_next)
            dump_one(t, stderr);
    }
    return -EBUSY;
}

/* A finished task still referenced points at the loop and lives in its pool. */
static int tasks_busy_free(cio_loop_t *loop)
{
    size_t live = loop->pools[CIO__POOL_TASK].live;
    if (live && loop->debug)
        fprintf(stderr, "cio: loop not freed: %zu task(s) never released\n", live);
    return live ? -EBUSY : 0;
}

static const cio__loop_hooks task_hooks = {
    .layer = 7, .busy = tasks_busy, .busy_free = tasks_busy_free};

/* ------------------------------------------------------------------------ */
/* Spawning                                                                  */
/* ------------------------------------------------------------------------ */

/* The task pool is sized, and the close hooks registered, on first use. */
static cio__freelist *task_pool(cio_loop_t *loop)
{
    cio__freelist *fl = &loop->pools[CIO__POOL_TASK];
    if (cio__unlikely(!fl->size)) {
        cio__pool_init(fl, sizeof(cio__task));
        cio__loop_hook(loop, &task_hooks);
    }
    return fl;
}

int cio_spawn_ex(cio_task_t **out, cio_loop_t *loop, cio_task_fn fn, void *arg,
                 const cio_spawn_opts_t *opts)
{
    if (out)
        *out = NULL;
    if (!loop)
        loop = cio__running;
    if (!loop)
        return -EPERM;
    if (!fn || (opts && (opts->reserved_[0] || opts->reserved_[1])))
        return -EINVAL;
    if (loop->closed)
        return -ESHUTDOWN;
    cio__task *t = cio__pool_alloc(task_pool(loop));
    if (!t)
        return -ENOMEM;
    memset(t, 0, sizeof(*t));
    if (opts && opts->name && !(t->name = cio__strdup(opts->name))) {
        cio__pool_free(&loop->pools[CIO__POOL_TASK], t);
        return -ENOMEM;
    }
    t->fut.loop = loop;
    t->fut.ops = &cio__task_ops;
    /* The running task's reference, and the caller's unless it forgets the
     * task at once (out NULL: fire and forget). */
    t->fut.refs = out ? 2 : 1;
    t->fn = fn;
    t->arg = arg;
    t->id = ++loop->next_task_id;
    t->stack_size = opts ? opts->stack_size : 0;
    cio__coro *parent = cio__current;
    if (parent && parent->loop == loop)
        t->locals = cio__locals_ref(cio__task_of(parent)->locals);
    t->all_next = loop->all;
    if (loop->all)
        ((cio__task *)loop->all)->all_prev = t;
    loop->all = t;
    loop->ntasks++;
    cio__coro_init(&t->co, loop, task_step, t);
    cio__coro_schedule(&t->co);
    if (out)
        *out = &t->fut;
    return 0;
}

int cio_spawn(cio_task_t **out, cio_task_fn fn, void *arg)
{
    return cio_spawn_ex(out, NULL, fn, arg, NULL);
}

int cio_spawn_named(cio_task_t **out, const char *name, cio_task_fn fn, void *arg)
{
    cio_spawn_opts_t o = {.name = name};
    return cio_spawn_ex(out, NULL, fn, arg, &o);
}

cio_task_t *cio_current_task(void)
{
    return cio__current ? &cio__task_of(cio__current)->fut : NULL;
}

ssize_t cio_all_tasks(cio_loop_t *loop, cio_task_t **out, size_t cap)
{
    if (!loop)
        loop = cio__running;
    if (!loop)
        return -EPERM;
    size_t n = 0;
    for (cio__task *t = loop->all; t; t = t->all_next, n++)
        if (out && n < cap)
            out[n] = &t->fut;
    return (ssize_t)n;
}

const char *cio_task_get_name(cio_task_t *f)
{
    cio__task *t = cio__as_task(f);
    if (!t)
        return NULL;
    if (!t->name) {
        char buf[32];
        snprintf(buf, sizeof buf, "Task-%llu", (unsigned long long)t->id);
        t->name = cio__strdup(buf);
        if (!t->name)
            return "Task-?";
    }
    return t->name;
}

int cio_task_set_name(cio_task_t *f, const char *name)
{
    cio__task *t = cio__as_task(f);
    if (!t || !name)
        return -EINVAL;
    char *p = cio__strdup(name);
    if (!p)
        return -ENOMEM;
    cio__free(t->name);
    t->name = p;
    return 0;
}

bool cio_future_is_task(const cio_future_t *f)
{
    return f && f->ops == &cio__task_ops;
}

/* ------------------------------------------------------------------------ */
/* Cancellation and awaiting                                                 */
/* ------------------------------------------------------------------------ */

int cio_task_cancel(cio_task_t *f)
{
    cio__task *t = cio__as_task(f);
    if (!t)
        return -EINVAL;
    if (t->fut.state != CIO__PENDING)
        return 0;
    cio__coro_cancel(&t->co);
    return 1;
}

bool cio_task_cancelling(const cio_task_t *f)
{
    const cio__task *t = cio__as_task((cio_future_t *)f);
    return t && t->co.cancel_requested;
}

static const char *await_what(const cio_future_t *f)
{
    return f->ops ? f->ops->what : "future";
}

void cio__await_done(cio_future_t *f)
{
    cio__future_hold(f); /* a waiter keeps what it waits on alive */
    while (f->state == CIO__PENDING) {
        cio__waiter w;
        cio__waiter_init(&w, cio__current, await_what(f), f, cio__wlist_unlink);
        w.nointr = 1;
        cio__wlist_push(&f->waiters, &w);
        cio__wait(&w, CIO__NO_DEADLINE);
    }
    cio__future_unhold(f);
}

int cio_await(cio_future_t *f, void **result)
{
    cio__coro *c = cio__current;
    if (!c)
        return -EPERM;
    if (!f)
        return -EINVAL;
    if (f == &cio__task_of(c)->fut)
        return -EDEADLK;
    if (f->state != CIO__PENDING) {
        int rc = cio__cancel_state(c, NULL);
        return rc ? rc : cio_future_result(f, result);
    }
    /* The awaiter holds a reference while it waits: whoever else holds one
     * may release it meanwhile. */
    cio__future_hold(f);
    cio__waiter w;
    cio__waiter_init(&w, c, await_what(f), f, cio__wlist_unlink);
    cio__wlist_push(&f->waiters, &w);
    int rc = cio__wait(&w, CIO__NO_DEADLINE);
    if (rc == -ECANCELED || rc == -ETIMEDOUT) {
        /* Cancelled or timed out: cancel what we await and wait for it to
         * finish, as asyncio's Task.cancel does with _fut_waiter. */
        cio_future_cancel(f);
        cio__await_done(f);
    } else if (rc < 0) {
        /* -ENOMEM (a deadline timer could not be armed; the waiter is
         * unlinked): only this awaiter fails, what it awaits runs on. */
    } else {
        rc = cio_future_result(f, result);
    }
    cio__future_unhold(f);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Introspection                                                             */
/* ------------------------------------------------------------------------ */

static const char *state_name(const cio__task *t)
{
    switch (t->co.state) {
    case CIO__T_CREATED: return "created";
    case CIO__T_READY: return "ready";
    case CIO__T_RUNNING: return "running";
    case CIO__T_WAITING: return "waiting";
    default: return "finished";
    }
}

static void dump_one(cio__task *t, FILE *out)
{
    fprintf(out, "  task '%s' (id %llu): %s", cio_task_get_name(&t->fut),
            (unsigned long long)t->id, state_name(t));
    if (t->co.state == CIO__T_WAITING && t->co.waiter) {
        fprintf(out, " on %s", t->co.waiter->what ? t->co.waiter->what : "?");
        if (t->co.waiter->obj)
            fprintf(out, " %p", t->co.waiter->obj);
        if (t->co.waiter->obj && t->co.waiter->what && !strcmp(t->co.waiter->what, "task"))
            fprintf(out, " ('%s')", cio_task_get_name((cio_future_t *)t->co.waiter->obj));
    }
    if (t->co.cancel_requested)
        fprintf(out, ", cancelling");
    if (t->co.scope)
        fprintf(out, ", in a scope");
    fputc('\n', out);
}

int cio_dump_tasks(cio_loop_t *loop, FILE *out)
{
    if (!loop)
        loop = cio__running;
    if (!loop)
        return -EPERM;
    if (!out)
        out = stderr;
    for (cio__task *t = loop->all; t; t = t->all_next)
        dump_one(t, out);
    return 0;
}
