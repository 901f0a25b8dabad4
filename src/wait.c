/*
 * The wait primitive and the coroutine switches.
 *
 * The loop runs on the thread's own stack; running a coroutine is one switch
 * into it (cio__coro_resume) and one switch back when it suspends or
 * finishes. A finished coroutine's stack is released by the loop after
 * switching back, never by the coroutine itself.
 *
 * Waiting (cio__wait) is the only way a coroutine suspends apart from
 * yielding: the caller links a waiter into the object it waits on, and
 * cio__wait arms one timer for the earliest of the waiter's own deadline and
 * the deadlines of the coroutine's cancel scopes. Exactly one of wake (by the
 * object) and interrupt (cancellation, deadline) happens; both disarm the
 * timer and queue the coroutine's run handle.
 */
#include "wait.h"

_Thread_local cio__coro *cio__current CIO__TLS_IE;

/* ------------------------------------------------------------------------ */
/* Switching                                                                 */
/* ------------------------------------------------------------------------ */

void cio__coro_init(cio__coro *c, cio_loop_t *loop, cio_callback_fn step, void *arg)
{
    /* Field by field rather than a memset: this is on the spawn path, and
     * the run handle's links and timer fields are set when it is queued. */
    c->sp = NULL;
    c->stack = c->cur_stack = NULL;
    c->loop = loop;
    c->scope = NULL;
    c->waiter = NULL;
    c->run.cb_ = step;
    c->run.arg_ = arg;
    c->run.loop_ = loop;
    c->run.state_ = CIO__H_IDLE;
    c->run.flags_ = 0;
    c->state = CIO__T_CREATED;
    c->cancel_requested = 0;
#ifdef CIO__ASAN
    c->asan_fake = NULL;
#endif
#ifdef CIO__TSAN
    c->tsan_fiber = NULL;
#endif
}

/* The overflow reporter's locator: the running coroutine's stack. */
static cio__stack *locate_stack(void)
{
    cio__coro *c = cio__current;
    return c ? c->cur_stack : cio__stack_thread;
}

/* Set once the locator is installed: a relaxed load on the first run of
 * every task, instead of a pthread_once call or a shared store. */
static atomic_int locator_installed;

static void install_locator(void)
{
    if (cio__unlikely(!atomic_load_explicit(&locator_installed, memory_order_relaxed))) {
        cio__stack_set_locator(locate_stack);
        atomic_store_explicit(&locator_installed, 1, memory_order_relaxed);
    }
}

int cio__coro_start(cio__coro *c, size_t stack_size, const cio__stack_owner *owner,
                    void (*entry)(void *), void *arg)
{
    install_locator();
    c->stack = cio__stack_get(&c->loop->stacks, stack_size);
    if (!c->stack)
        return -ENOMEM;
    c->stack->owner = *owner;
    c->cur_stack = c->stack;
    c->sp = cio__ctx_make(cio__stack_top(c->stack), entry, arg);
#ifdef CIO__TSAN
    c->tsan_fiber = __tsan_create_fiber(0);
#endif
    return 0;
}

void cio__coro_release(cio__coro *c)
{
    cio__stack_put(&c->loop->stacks, c->stack);
    c->stack = c->cur_stack = NULL;
#ifdef CIO__TSAN
    __tsan_destroy_fiber(c->tsan_fiber);
    c->tsan_fiber = NULL;
#endif
}

/* Coroutine side: back to the loop; returns when resumed. */
static void switch_out(cio__coro *c, bool finished)
{
    cio_loop_t *loop = c->loop;
#ifdef CIO__ASAN
    __sanitizer_start_switch_fiber(finished ? NULL : &c->asan_fake, loop->main_stack_lo,
                                   loop->main_stack_size);
#else
    (void)finished;
#endif
#ifdef CIO__TSAN
    __tsan_switch_to_fiber(loop->tsan_main, 0);
#endif
    cio__ctx_switch(&c->sp, loop->sched_sp);
#ifdef CIO__ASAN
    __sanitizer_finish_switch_fiber(c->asan_fake, &loop->main_stack_lo, &loop->main_stack_size);
#endif
}

_Noreturn void cio__coro_exit(cio__coro *c)
{
    c->state = CIO__T_FINISHED;
    switch_out(c, true);
    abort(); /* a finished coroutine is never resumed */
}

/* ------------------------------------------------------------------------ */
/* The wait primitive                                                        */
/* ------------------------------------------------------------------------ */

void cio__wlist_unlink(cio__waiter *w)
{
    cio__wlist_remove(w->list, w);
}

void cio__waiter_init(cio__waiter *w, cio__coro *c, const char *what, const void *obj,
                      void (*unlink)(cio__waiter *))
{
    w->next = w->prev = NULL;
    w->list = NULL;
    w->task = c;
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

int cio__cancel_state(cio__coro *c, int64_t *deadline)
{
    int64_t d = CIO__NO_DEADLINE, now = 0;
    for (cio_scope_t *s = c->scope; s; s = s->parent_) {
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
    if (c->cancel_requested)
        return -ECANCELED;
out:
    if (deadline)
        *deadline = d;
    return 0;
}

static void wait_timer_cb(void *arg);

/* Arms (or re-arms) the waiter's timer: 0, or -ENOMEM when the timer heap
 * cannot grow. */
static int arm(cio__waiter *w, int64_t when)
{
    if (w->timer.state_ != CIO__H_IDLE) /* inline: on every wait */
        cio_handle_cancel(&w->timer);
    if (when == CIO__NO_DEADLINE)
        return 0;
    return cio_call_at_ns(w->task->loop, &w->timer, when, wait_timer_cb, w);
}

static void wait_timer_cb(void *arg)
{
    cio__waiter *w = arg;
    int64_t d = CIO__NO_DEADLINE;
    /* cio__cancel_state marks the scopes whose deadline passed. */
    int c = w->nointr ? 0 : cio__cancel_state(w->task, &d);
    if (c)
        cio__interrupt(w, c);
    else if (w->own_deadline <= cio_loop_time_ns(w->task->loop)) /* cached this iteration */
        cio__interrupt(w, CIO__OWN_DEADLINE);
    else if (arm(w, d < w->own_deadline ? d : w->own_deadline)) /* moved later */
        cio__interrupt(w, -ENOMEM); /* never sleep forever on a lost timer */
}

int cio__wait(cio__waiter *w, int64_t own_deadline)
{
    cio__coro *c = w->task;
    int64_t d = CIO__NO_DEADLINE;
    if (!w->nointr) {
        int rc = cio__cancel_state(c, &d);
        if (rc) {
            if (w->unlink)
                w->unlink(w);
            return rc;
        }
    }
    w->own_deadline = own_deadline;
    if (arm(w, own_deadline < d ? own_deadline : d)) {
        if (w->unlink)
            w->unlink(w);
        return -ENOMEM;
    }
    c->waiter = w;
    c->state = CIO__T_WAITING;
    switch_out(c, false);
    return w->result;
}

bool cio__wake(cio__waiter *w, int result)
{
    if (w->woken)
        return false;
    cio__coro *c = w->task;
    w->woken = 1;
    w->result = result;
    if (w->timer.state_ != CIO__H_IDLE) /* inline: on every wake */
        cio_handle_cancel(&w->timer);
    c->waiter = NULL;
    cio__coro_schedule(c);
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

void cio__coro_rearm(cio__coro *c)
{
    cio__waiter *w = c->waiter;
    if (c->state != CIO__T_WAITING || !w || w->nointr)
        return;
    int64_t d;
    int rc = cio__cancel_state(c, &d);
    if (rc)
        cio__interrupt(w, rc);
    else if (arm(w, d < w->own_deadline ? d : w->own_deadline))
        cio__interrupt(w, -ENOMEM);
}

void cio__coro_cancel(cio__coro *c)
{
    c->cancel_requested = 1;
    cio__coro_rearm(c);
}

/* ------------------------------------------------------------------------ */
/* Sleeping and yielding                                                     */
/* ------------------------------------------------------------------------ */

int cio_check_cancel(void)
{
    cio__coro *c = cio__current;
    return c ? cio__check_cancel(c) : -EPERM;
}

int cio_yield(void)
{
    cio__coro *c = cio__current;
    if (!c)
        return -EPERM;
    int rc = cio__check_cancel(c);
    if (rc)
        return rc;
    cio__coro_schedule(c);
    /* Switching straight to the next ready coroutine (skipping the loop's
     * stack) was tried and measured slower on our machine (56 vs 31 ns per
     * yield): every suspension goes back to the loop. */
    switch_out(c, false);
    return 0;
}

int cio_sleep_until_ns(int64_t when_ns)
{
    cio__coro *c = cio__current;
    if (!c)
        return -EPERM;
    cio__waiter w;
    cio__waiter_init(&w, c, "sleep", NULL, NULL);
    int rc = cio__wait(&w, when_ns);
    return rc == CIO__OWN_DEADLINE ? 0 : rc;
}

int cio_sleep(double delay)
{
    if (!cio__current)
        return -EPERM;
    int64_t when;
    int rc = cio__deadline_after(delay, &when);
    if (rc)
        return rc;
    if (delay <= 0)
        return cio_yield();
    return cio_sleep_until_ns(when);
}
