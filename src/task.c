/*
 * Tasks: coroutines on their own stacks, resumed by the loop as ready
 * callbacks, and the wait primitive that every await point shares.
 *
 * A task's control block comes from the loop's pool and holds no stack until
 * the task first runs, so a task that completes without suspending borrows a
 * hot pooled stack for its whole life and gives it back at once. The loop
 * runs on the thread's own stack; running a task is one switch into it and
 * one switch back when it suspends or finishes. A finished task's stack is
 * released by the loop after switching back, never by the task itself.
 *
 * Waiting (cio__wait) is the only way a task suspends apart from yielding:
 * the caller links a waiter into the object it waits on, and cio__wait arms
 * one timer for the earliest of the waiter's own deadline and the deadlines
 * of the task's cancel scopes. Exactly one of wake (by the object),
 * interrupt (cancellation, deadline) happens; both disarm the timer and queue
 * the task's run handle.
 */
#include "internal.h"

_Thread_local cio__task *cio__current;

/* ------------------------------------------------------------------------ */
/* Switching                                                                 */
/* ------------------------------------------------------------------------ */

static void task_entry(void *arg);

/* Loop side: runs t until it suspends or finishes. */
static void switch_in(cio_loop_t *loop, cio__task *t)
{
#ifdef CIO__ASAN
    char *bottom = t->cur_stack->lo + t->cur_stack->guard;
    __sanitizer_start_switch_fiber(&loop->asan_fake, bottom,
                                   (size_t)((char *)cio__stack_top(t->cur_stack) - bottom));
#endif
#ifdef CIO__TSAN
    __tsan_switch_to_fiber(t->tsan_fiber, 0);
#endif
    cio__ctx_switch(&loop->sched_sp, t->sp);
#ifdef CIO__ASAN
    __sanitizer_finish_switch_fiber(loop->asan_fake, NULL, NULL);
#endif
}

/* Task side: back to the loop; returns when the task is resumed. */
static void switch_out(cio_loop_t *loop, cio__task *t, bool finished)
{
#ifdef CIO__ASAN
    __sanitizer_start_switch_fiber(finished ? NULL : &t->asan_fake,
                                   loop->main_stack_lo, loop->main_stack_size);
#else
    (void)finished;
#endif
#ifdef CIO__TSAN
    __tsan_switch_to_fiber(loop->tsan_main, 0);
#endif
    cio__ctx_switch(&t->sp, loop->sched_sp);
#ifdef CIO__ASAN
    __sanitizer_finish_switch_fiber(t->asan_fake, &loop->main_stack_lo,
                                    &loop->main_stack_size);
#endif
}

/* Suspends the running task t (already queued or parked on a waiter). */
static void task_suspend(cio_loop_t *loop, cio__task *t)
{
    /* Switching straight to the next ready task (skipping the loop's stack)
     * was tried and measured slower on our machine (56 vs 31 ns per yield):
     * every suspension goes back to the loop. */
    switch_out(loop, t, false);
}

static void task_cleanup(cio_loop_t *loop, cio__task *t)
{
    cio__stack_put(&loop->stacks, t->stack);
    t->stack = t->cur_stack = NULL;
#ifdef CIO__TSAN
    __tsan_destroy_fiber(t->tsan_fiber);
    t->tsan_fiber = NULL;
#endif
    if (t->all_prev)
        t->all_prev->all_next = t->all_next;
    else
        loop->all = t->all_next;
    if (t->all_next)
        t->all_next->all_prev = t->all_prev;
    loop->ntasks--;
    cio__locals_unref(t->locals);
    t->locals = NULL;
    int st = t->fut.status;
    cio__future_complete(&t->fut, st, t->fut.result,
                         st == -ECANCELED ? CIO__CANCELLED : CIO__DONE);
    cio_future_release(&t->fut); /* the reference the running task held */
}

static int task_start(cio_loop_t *loop, cio__task *t)
{
    t->stack = cio__stack_get(&loop->stacks, t->stack_size);
    if (!t->stack)
        return -ENOMEM;
    t->cur_stack = t->stack;
    t->sp = cio__ctx_make(cio__stack_top(t->stack), task_entry, t);
#ifdef CIO__TSAN
    t->tsan_fiber = __tsan_create_fiber(0);
#endif
    return 0;
}

/* The ready callback of every task: (re)starts it. */
static void task_step(void *arg)
{
    cio__task *t = arg;
    cio_loop_t *loop = t->fut.loop;
    if (cio__unlikely(!t->stack)) {
        int rc = task_start(loop, t);
        if (rc) { /* no stack: the task fails without running */
            t->fut.status = rc;
            t->fut.result = NULL;
            t->tstate = CIO__T_FINISHED;
            task_cleanup(loop, t);
            return;
        }
    }
    int64_t t0 = loop->debug ? cio__clock_ns() : 0;
    t->tstate = CIO__T_RUNNING;
    loop->current = t;
    cio__current = t;
    switch_in(loop, t);
    cio__current = NULL;
    loop->current = NULL;
    if (cio__unlikely(loop->debug)) {
        int64_t dt = cio__clock_ns() - t0;
        loop->last_was_task = 1;
        if (dt > loop->slow_ns)
            fprintf(stderr, "cio: task '%s' held the loop for %.1f ms\n",
                    cio_task_get_name(&t->fut), (double)dt / 1e6);
    }
    if (t->tstate == CIO__T_FINISHED)
        task_cleanup(loop, t);
    else if (cio__unlikely(t->cur_stack->kind == CIO__GUARD_CANARY))
        cio__stack_check(t->cur_stack, t->sp, t->cur_name ? t->cur_name : t->name);
}

static void task_entry(void *arg)
{
    cio__task *t = arg;
    cio_loop_t *loop = t->fut.loop;
#ifdef CIO__ASAN
    __sanitizer_finish_switch_fiber(NULL, &loop->main_stack_lo, &loop->main_stack_size);
#endif
    void *result = NULL;
    int st = t->fn(t->arg, &result);
    t->fut.status = st;
    t->fut.result = result;
    t->tstate = CIO__T_FINISHED;
    switch_out(loop, t, true);
    abort(); /* a finished task is never resumed */
}

/* ------------------------------------------------------------------------ */
/* Spawning                                                                  */
/* ------------------------------------------------------------------------ */

static char *dup_name(const char *name)
{
    size_t n = strlen(name) + 1;
    char *p = malloc(n);
    if (p)
        memcpy(p, name, n);
    return p;
}

cio_task_t *cio_spawn_ex(cio_loop_t *loop, cio_task_fn fn, void *arg,
                         const cio_spawn_opts_t *opts)
{
    if (!loop)
        loop = cio__running;
    if (!loop) {
        errno = EPERM;
        return NULL;
    }
    if (!fn || loop->closed) {
        errno = fn ? ESHUTDOWN : EINVAL;
        return NULL;
    }
    cio__task *t = cio__pool_alloc(&loop->task_pool);
    if (!t) {
        errno = ENOMEM;
        return NULL;
    }
    memset(t, 0, sizeof(*t));
    if (opts && opts->name && !(t->name = dup_name(opts->name))) {
        cio__pool_free(&loop->task_pool, t);
        errno = ENOMEM;
        return NULL;
    }
    t->fut.loop = loop;
    t->fut.kind = CIO__KIND_TASK;
    t->fut.refs = 2; /* the caller's and the running task's */
    t->fn = fn;
    t->arg = arg;
    t->id = ++loop->next_task_id;
    t->stack_size = opts ? opts->stack_size : 0;
    cio__task *parent = cio__current;
    if (parent && parent->fut.loop == loop)
        t->locals = cio__locals_ref(parent->locals);
    t->all_next = loop->all;
    if (loop->all)
        loop->all->all_prev = t;
    loop->all = t;
    loop->ntasks++;
    t->run.cb_ = task_step;
    t->run.arg_ = t;
    t->run.loop_ = loop;
    t->tstate = CIO__T_CREATED;
    cio__ready_push(loop, &t->run);
    return &t->fut;
}

cio_task_t *cio_spawn(cio_task_fn fn, void *arg)
{
    return cio_spawn_ex(NULL, fn, arg, NULL);
}

cio_task_t *cio_spawn_named(const char *name, cio_task_fn fn, void *arg)
{
    cio_spawn_opts_t o = {.name = name, .stack_size = 0};
    return cio_spawn_ex(NULL, fn, arg, &o);
}

cio_task_t *cio_current_task(void)
{
    return cio__current ? &cio__current->fut : NULL;
}

size_t cio_all_tasks(cio_loop_t *loop, cio_task_t **out, size_t cap)
{
    if (!loop)
        loop = cio__running;
    if (!loop)
        return 0;
    size_t n = 0;
    for (cio__task *t = loop->all; t; t = t->all_next, n++)
        if (out && n < cap)
            out[n] = &t->fut;
    return n;
}

const char *cio_task_get_name(cio_task_t *f)
{
    cio__task *t = cio__as_task(f);
    if (!t)
        return NULL;
    if (!t->name) {
        char buf[32];
        snprintf(buf, sizeof buf, "Task-%llu", (unsigned long long)t->id);
        t->name = dup_name(buf);
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
    char *p = dup_name(name);
    if (!p)
        return -ENOMEM;
    free(t->name);
    t->name = p;
    return 0;
}

bool cio_future_is_task(const cio_future_t *f)
{
    return f && f->kind == CIO__KIND_TASK;
}

/* ------------------------------------------------------------------------ */
/* The wait primitive                                                        */
/* ------------------------------------------------------------------------ */

void cio__waiter_init(cio__waiter *w, cio__task *t, const char *what,
                      const void *obj, void (*unlink)(cio__waiter *))
{
    w->next = w->prev = NULL;
    w->task = t;
    w->unlink = unlink;
    w->what = what;
    w->obj = obj;
    w->data = NULL;
    w->result = 0;
    w->woken = 0;
    w->nointr = 0;
    memset(&w->timer, 0, sizeof(w->timer));
    w->own_deadline = CIO__NO_DEADLINE;
}

int cio__cancel_state(cio__task *t, int64_t *deadline)
{
    int64_t d = CIO__NO_DEADLINE, now = 0;
    for (cio_scope_t *s = t->scope; s; s = s->parent_) {
        if (s->state_)
            return s->state_ == CIO__SCOPE_EXPIRED ? -ETIMEDOUT : -ECANCELED;
        if (s->deadline_ != CIO__NO_DEADLINE) {
            if (!now)
                now = cio__clock_ns();
            if (s->deadline_ <= now) {
                s->state_ = CIO__SCOPE_EXPIRED;
                return -ETIMEDOUT;
            }
            if (s->deadline_ < d)
                d = s->deadline_;
        }
        if (s->flags_ & CIO_SCOPE_SHIELD)
            goto out;
    }
    if (t->cancel_requested)
        return -ECANCELED;
out:
    if (deadline)
        *deadline = d;
    return 0;
}

static void wait_timer_cb(void *arg);

static void arm(cio__waiter *w, int64_t when)
{
    cio_loop_t *loop = w->task->fut.loop;
    if (cio_handle_active(&w->timer))
        cio_handle_cancel(&w->timer);
    if (when != CIO__NO_DEADLINE)
        cio_call_at_ns(loop, &w->timer, when, wait_timer_cb, w);
}

static void wait_timer_cb(void *arg)
{
    cio__waiter *w = arg;
    int64_t d = CIO__NO_DEADLINE;
    /* cio__cancel_state marks the scopes whose deadline passed. */
    int c = w->nointr ? 0 : cio__cancel_state(w->task, &d);
    if (c)
        cio__interrupt(w, c);
    else if (w->own_deadline <= cio__clock_ns())
        cio__interrupt(w, CIO__OWN_DEADLINE);
    else /* a deadline moved later meanwhile */
        arm(w, d < w->own_deadline ? d : w->own_deadline);
}

int cio__wait(cio__waiter *w, int64_t own_deadline)
{
    cio__task *t = w->task;
    int64_t d = CIO__NO_DEADLINE;
    if (!w->nointr) {
        int c = cio__cancel_state(t, &d);
        if (c) {
            if (w->unlink)
                w->unlink(w);
            return c;
        }
    }
    w->own_deadline = own_deadline;
    arm(w, own_deadline < d ? own_deadline : d);
    t->waiter = w;
    t->tstate = CIO__T_WAITING;
    task_suspend(t->fut.loop, t);
    return w->result;
}

bool cio__wake(cio__waiter *w, int result)
{
    if (w->woken)
        return false;
    cio__task *t = w->task;
    w->woken = 1;
    w->result = result;
    if (cio_handle_active(&w->timer))
        cio_handle_cancel(&w->timer);
    t->waiter = NULL;
    t->tstate = CIO__T_READY;
    cio__ready_push(t->fut.loop, &t->run);
    return true;
}

bool cio__interrupt(cio__waiter *w, int code)
{
    if (w->woken)
        return false;
    if (w->unlink)
        w->unlink(w);
    return cio__wake(w, code);
}

/* Re-evaluates a waiting task after its cancellation state changed. */
void cio__task_rearm(cio__task *t)
{
    cio__waiter *w = t->waiter;
    if (t->tstate != CIO__T_WAITING || !w || w->nointr)
        return;
    int64_t d;
    int c = cio__cancel_state(t, &d);
    if (c)
        cio__interrupt(w, c);
    else
        arm(w, d < w->own_deadline ? d : w->own_deadline);
}

/* ------------------------------------------------------------------------ */
/* Cancellation, sleeping, yielding                                          */
/* ------------------------------------------------------------------------ */

int cio_task_cancel(cio_task_t *f)
{
    cio__task *t = cio__as_task(f);
    if (!t)
        return -EINVAL;
    if (t->fut.state != CIO__PENDING)
        return 0;
    t->cancel_requested = 1;
    cio__task_rearm(t);
    return 1;
}

bool cio_task_cancelling(const cio_task_t *f)
{
    return f && f->kind == CIO__KIND_TASK && ((const cio__task *)f)->cancel_requested;
}

int cio_yield(void)
{
    cio__task *t = cio__current;
    if (!t)
        return -EPERM;
    int c = cio__check_cancel(t);
    if (c)
        return c;
    t->tstate = CIO__T_READY;
    cio__ready_push(t->fut.loop, &t->run);
    task_suspend(t->fut.loop, t);
    return 0;
}

int cio_sleep_until_ns(int64_t when_ns)
{
    cio__task *t = cio__current;
    if (!t)
        return -EPERM;
    cio__waiter w;
    cio__waiter_init(&w, t, "sleep", NULL, NULL);
    int rc = cio__wait(&w, when_ns);
    return rc == CIO__OWN_DEADLINE ? 0 : rc;
}

int cio_sleep(double delay)
{
    if (!cio__current)
        return -EPERM;
    int64_t when;
    int rc = cio__deadline_after(NULL, delay, &when);
    if (rc)
        return rc;
    if (delay <= 0)
        return cio_yield();
    return cio_sleep_until_ns(when);
}

/* ------------------------------------------------------------------------ */
/* Introspection                                                             */
/* ------------------------------------------------------------------------ */

static const char *state_name(const cio__task *t)
{
    switch (t->tstate) {
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
    if (t->tstate == CIO__T_WAITING && t->waiter) {
        fprintf(out, " on %s", t->waiter->what ? t->waiter->what : "?");
        if (t->waiter->obj)
            fprintf(out, " %p", t->waiter->obj);
        if (t->waiter->obj && t->waiter->what && !strcmp(t->waiter->what, "task"))
            fprintf(out, " ('%s')", cio_task_get_name((cio_future_t *)t->waiter->obj));
    }
    if (t->cancel_requested)
        fprintf(out, ", cancelling");
    if (t->scope)
        fprintf(out, ", in a scope");
    fputc('\n', out);
}

void cio_dump_tasks(cio_loop_t *loop, FILE *out)
{
    if (!loop)
        loop = cio__running;
    if (!out)
        out = stderr;
    if (!loop) {
        fprintf(out, "cio: no running loop\n");
        return;
    }
    for (cio__task *t = loop->all; t; t = t->all_next)
        dump_one(t, out);
}

void cio__task_report_open(cio_loop_t *loop, FILE *out)
{
    if (!loop->ntasks)
        return;
    fprintf(out, "cio: loop closed with %zu unfinished task(s):\n", loop->ntasks);
    for (cio__task *t = loop->all; t; t = t->all_next)
        dump_one(t, out);
}
