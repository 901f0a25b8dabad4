/*
 * Layer 4, the wait primitive (wait.c): coroutines, the waiter every await
 * point parks on, wake and interrupt, deadlines and the cancel-scope walk,
 * and the switches between the loop and a coroutine.
 *
 * A coroutine (cio__coro) is the part of a task that this layer needs: its
 * stack, saved stack pointer, run handle, innermost scope, cancellation flag
 * and what it waits on. Tasks (task.c) embed one; nothing here knows tasks.
 */
#ifndef CIO_WAIT_H
#define CIO_WAIT_H

#include "loop.h"

/* The states of a coroutine. One function changes them: coro_set_state in
 * wait.c (and task.c for FINISHED), named so that debugging finds them. */
enum cio__cstate {
    CIO__T_CREATED = 0, /* spawned, not started: no stack yet */
    CIO__T_READY,       /* queued to run */
    CIO__T_RUNNING,
    CIO__T_WAITING,     /* suspended on a waiter */
    CIO__T_FINISHED
};

struct cio__waiter;

typedef struct cio__coro {
    void *sp;              /* saved stack pointer while suspended */
    cio__stack *stack;     /* its own stack, assigned when it first runs */
    /* The stack it executes on right now: its own, or that of a generator
     * it drives (gen.c points it at the generator's while the body runs). */
    cio__stack *cur_stack;
    cio_loop_t *loop;
    cio_scope_t *scope;    /* innermost scope */
    struct cio__waiter *waiter; /* what it is suspended on */
    cio_handle_t run;      /* queued on the ready list to (re)start it */
    uint8_t state;         /* enum cio__cstate */
    uint8_t cancel_requested;
#ifdef CIO__ASAN
    void *asan_fake;
#endif
#ifdef CIO__TSAN
    void *tsan_fiber;
#endif
} cio__coro;

/* The coroutine running on this thread (NULL in callbacks and outside loops). */
extern _Thread_local cio__coro *cio__current CIO__TLS_IE;

/*
 * A waiter is stack storage of a suspended coroutine, linked into the list
 * of the object it waits on (a future, an fd, a lock, a queue...). The
 * object wakes it with cio__wake() after unlinking it; cancellation and
 * deadlines interrupt it through cio__interrupt(), which calls `unlink` so
 * the object forgets it. Exactly one of the two happens.
 */
typedef struct cio__waiter {
    struct cio__waiter *next, *prev; /* links in the object's wait list */
    cio_waitq_t *list;                /* that list (set by cio__wlist_push) */
    cio__coro *task;
    void (*unlink)(struct cio__waiter *w); /* remove from the object's list */
    const char *what;                      /* for cio_dump_tasks */
    const void *obj;
    void *data;        /* hand-off slot for objects (queues pass items) */
    int result;        /* what cio__wait returns */
    uint8_t woken;
    uint8_t nointr;    /* cancellation and deadlines do not interrupt */
    cio_handle_t timer;
    int64_t own_deadline;
} cio__waiter;

/*
 * A FIFO list of waiters (intrusive, O(1) removal). It is the public
 * cio_waitq_t, so that objects in caller storage (locks, queues) embed the
 * same list the core uses.
 */
typedef cio_waitq_t cio__wlist;

static inline void cio__wlist_push(cio__wlist *l, cio__waiter *w)
{
    w->next = NULL;
    w->list = l;
    w->prev = l->tail_;
    if (l->tail_)
        l->tail_->next = w;
    else
        l->head_ = w;
    l->tail_ = w;
}

static inline void cio__wlist_remove(cio__wlist *l, cio__waiter *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        l->head_ = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        l->tail_ = w->prev;
    w->next = w->prev = NULL;
}

static inline cio__waiter *cio__wlist_pop(cio__wlist *l)
{
    cio__waiter *w = l->head_;
    if (w)
        cio__wlist_remove(l, w);
    return w;
}

/* The unlink function of every waiter that sits in a cio__wlist: removes
 * it from the list cio__wlist_push put it in. */
void cio__wlist_unlink(cio__waiter *w);

/* cio__wait returns this when the waiter's own deadline passed. */
#define CIO__OWN_DEADLINE 1

/*
 * Suspends the current coroutine on w (already linked into its object's
 * list and with w->unlink set). Returns w->result as set by the waker,
 * -ECANCELED or -ETIMEDOUT when interrupted by cancellation or a scope
 * deadline, CIO__OWN_DEADLINE when own_deadline (absolute ns,
 * CIO__NO_DEADLINE for none) passes, or -ENOMEM when the timer for a
 * deadline cannot be armed (the waiter is unlinked then). If the coroutine
 * is already cancelled the waiter is unlinked and the code returned at once.
 */
int cio__wait(cio__waiter *w, int64_t own_deadline);

/* Initialises w for coroutine c. */
void cio__waiter_init(cio__waiter *w, cio__coro *c, const char *what, const void *obj,
                      void (*unlink)(cio__waiter *));

/*
 * Wakes a waiter that the caller has already removed from its object's list.
 * Returns false (and does nothing) if it was already woken.
 */
bool cio__wake(cio__waiter *w, int result);

/* Interrupts a waiter: unlinks it from its object and wakes it with `code`. */
bool cio__interrupt(cio__waiter *w, int code);

/* The states of a cio_scope_t (its state_ field). */
enum { CIO__SCOPE_OPEN = 0, CIO__SCOPE_CANCELLED, CIO__SCOPE_EXPIRED };

/* The cancellation state of the current code of c: 0, -ECANCELED or
 * -ETIMEDOUT; *deadline receives the effective deadline (may be NULL). */
int cio__cancel_state(cio__coro *c, int64_t *deadline);

/*
 * The level-triggered check every await point makes first, even one that
 * will not suspend: 0, or -ECANCELED / -ETIMEDOUT. A coroutine neither
 * cancelled nor inside a scope (the common case) costs two loads.
 */
static inline int cio__check_cancel(cio__coro *c)
{
    if (cio__likely(!c->cancel_requested && !c->scope))
        return 0;
    return cio__cancel_state(c, NULL);
}

/* Re-evaluates a waiting coroutine after its cancellation state changed. */
void cio__coro_rearm(cio__coro *c);

/* Requests cancellation of c (level-triggered) and interrupts its wait. */
void cio__coro_cancel(cio__coro *c);

/*
 * Life of a coroutine, for the task layer:
 *  - cio__coro_init: a fresh record on `loop` whose run handle calls
 *    step(arg) (queued with cio__coro_schedule);
 *  - cio__coro_start: takes a stack of stack_size bytes and prepares it to
 *    call entry(arg); returns 0 or -ENOMEM;
 *  - cio__coro_resume: loop side, runs c until it suspends or finishes;
 *  - cio__coro_exit: coroutine side, the last switch out of a finished one;
 *  - cio__coro_release: gives the stack back (loop side, after it finished).
 */
void cio__coro_init(cio__coro *c, cio_loop_t *loop, cio_callback_fn step, void *arg);
int cio__coro_start(cio__coro *c, size_t stack_size, const cio__stack_owner *owner,
                    void (*entry)(void *), void *arg);
_Noreturn void cio__coro_exit(cio__coro *c);
void cio__coro_release(cio__coro *c);

/* Loop side: runs c until it suspends or finishes. Inline: it is half of
 * every task switch. */
static inline void cio__coro_resume(cio__coro *c)
{
    cio_loop_t *loop = c->loop;
    c->state = CIO__T_RUNNING;
    cio__current = c;
#ifdef CIO__ASAN
    cio__stack *s = c->cur_stack;
    char *bottom = s->lo + s->guard;
    __sanitizer_start_switch_fiber(&loop->asan_fake, bottom,
                                   (size_t)((char *)cio__stack_top(s) - bottom));
#endif
#ifdef CIO__TSAN
    __tsan_switch_to_fiber(c->tsan_fiber, 0);
#endif
    cio__ctx_switch(&loop->sched_sp, c->sp);
#ifdef CIO__ASAN
    __sanitizer_finish_switch_fiber(loop->asan_fake, NULL, NULL);
#endif
    cio__current = NULL;
    if (cio__unlikely(c->cur_stack->kind == CIO__GUARD_CANARY) && c->state != CIO__T_FINISHED)
        cio__stack_check(c->cur_stack, c->sp);
}

static inline void cio__coro_schedule(cio__coro *c)
{
    c->state = CIO__T_READY;
    cio__ready_push(c->loop, &c->run);
}

#endif /* CIO_WAIT_H */
