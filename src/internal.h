/*
 * Internal declarations shared by cio's subsystems. Nothing here is part of
 * the public API; names use the cio__ prefix.
 *
 * The layers, bottom up:
 *   ctx (switch.S)     save/restore callee-saved registers, swap stacks
 *   stack.c            pooled stacks with guard pages and overflow reports
 *   timer.c            4-ary min-heap of cio_handle_t keyed by (deadline, seq)
 *   poll_epoll.c       the poll backend behind cio__poll_* (six calls)
 *   loop.c             ready queue, timers and poll phases, threadsafe queue
 *   task.c             tasks, the wait primitive (cio__wait / cio__wake)
 *   scope.c            cancel scopes, deadlines, shields
 *   future.c           futures: result slot + waiter list + done callbacks
 *   combinators.c, group.c, pool_thread.c, runner.c, local.c, error.c
 */
#ifndef CIO_INTERNAL_H
#define CIO_INTERNAL_H

#include "cio.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define CIO__NO_DEADLINE INT64_MAX

#if defined(__GNUC__)
#define cio__likely(x) __builtin_expect(!!(x), 1)
#define cio__unlikely(x) __builtin_expect(!!(x), 0)
#else
#define cio__likely(x) (x)
#define cio__unlikely(x) (x)
#endif

/*
 * The thread-locals of the hot paths use the initial-exec TLS model: with
 * the default model of position-independent code every access is compiled as
 * a call to __tls_get_addr (relaxed by the linker, but the register spills
 * stay), about 2 ns per generator round trip. The library is meant to be
 * linked, not dlopen()ed late, so its small TLS block is always in the
 * static TLS area.
 */
#if defined(__GNUC__)
#define CIO__TLS_IE __attribute__((tls_model("initial-exec")))
#else
#define CIO__TLS_IE
#endif

/* Sanitizer detection for the fiber-switch annotations. */
#if defined(__SANITIZE_ADDRESS__)
#define CIO__ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CIO__ASAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define CIO__TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define CIO__TSAN 1
#endif
#endif

/* ------------------------------------------------------------------------ */
/* Context switch (src/ctx/)                                                 */
/* ------------------------------------------------------------------------ */

/*
 * Saves the callee-saved registers of the caller on its stack, stores the
 * stack pointer in *save, loads `to` and restores the registers saved there.
 * Returns when something switches back to *save.
 */
void cio__ctx_switch(void **save, void *to);

/*
 * Prepares a fresh stack whose top is `top` so that the first switch to the
 * returned stack pointer calls entry(arg). entry must never return.
 */
void *cio__ctx_make(void *top, void (*entry)(void *), void *arg);

/* ------------------------------------------------------------------------ */
/* Stacks (stack.c)                                                           */
/* ------------------------------------------------------------------------ */

enum cio__guard_kind {
    CIO__GUARD_MADVISE = 1, /* MADV_GUARD_INSTALL page: faults, no extra VMA */
    CIO__GUARD_MPROTECT,    /* PROT_NONE page: faults, one VMA split */
    CIO__GUARD_CANARY       /* checked canary words + sp bound at switches */
};

/* Lives at the top of its own stack memory. */
typedef struct cio__stack {
    struct cio__stack *next; /* free list */
    char *lo;                /* lowest address of the region (guard first) */
    size_t size;             /* whole region, guard included */
    size_t guard;            /* bytes of guard at lo */
    uint8_t kind;            /* enum cio__guard_kind */
    uint8_t pooled;          /* carved from a slab of default-size stacks */
} cio__stack;

typedef struct cio__stack_pool {
    cio__stack *free;        /* default-size stacks ready for reuse */
    size_t nfree;
    struct cio__slab *slabs; /* slabs of default-size stacks */
    size_t live;             /* stacks handed out */
} cio__stack_pool;

#define CIO__STACK_CANARY 0x6369f5ac6b2d0e11ull

cio__stack *cio__stack_get(cio__stack_pool *p, size_t size);
void cio__stack_put(cio__stack_pool *p, cio__stack *s);
void cio__stack_pool_close(cio__stack_pool *p);
/* The usable top of a stack (16-byte aligned, below the descriptor). */
void *cio__stack_top(cio__stack *s);
/*
 * Outside tasks (a generator driven from plain code), the stack that runs
 * and its name, for overflow reports; set by gen.c.
 */
extern _Thread_local cio__stack *cio__thread_stack CIO__TLS_IE;
extern _Thread_local const char *cio__thread_stack_name CIO__TLS_IE;
/* Installs the SIGSEGV reporter and this thread's alternate signal stack. */
void cio__stack_install_handler(void);
/* Called at each switch away from a canary-guarded stack. */
void cio__stack_check(const cio__stack *s, const void *sp, const char *name);

/* ------------------------------------------------------------------------ */
/* Waiters: the one primitive under every await point                        */
/* ------------------------------------------------------------------------ */

struct cio__task;

/*
 * A waiter is stack storage of a suspended task, linked into the list of
 * the object it waits on (a future, an fd, a lock, a queue...). The object
 * wakes it with cio__wake() after unlinking it; cancellation and deadlines
 * interrupt it through cio__interrupt(), which calls `unlink` so the object
 * forgets it. Exactly one of the two happens.
 */
typedef struct cio__waiter {
    struct cio__waiter *next, *prev; /* links in the object's wait list */
    struct cio__task *task;
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

/* cio__wait returns this when the waiter's own deadline passed. */
#define CIO__OWN_DEADLINE 1

/*
 * Suspends the current task on w (already linked into its object's list and
 * with w->unlink set). Returns w->result as set by the waker, -ECANCELED or
 * -ETIMEDOUT when interrupted by cancellation or a scope deadline, or
 * CIO__OWN_DEADLINE when own_deadline (absolute ns, CIO__NO_DEADLINE for
 * none) passes. If the task is already cancelled the waiter is unlinked and
 * the code returned at once. Must be called from a task.
 */
int cio__wait(cio__waiter *w, int64_t own_deadline);

/* Initialises w for the current task t. */
void cio__waiter_init(cio__waiter *w, struct cio__task *t, const char *what,
                      const void *obj, void (*unlink)(cio__waiter *));

/*
 * Wakes a waiter that the caller has already removed from its object's list.
 * Returns false (and does nothing) if it was already woken.
 */
bool cio__wake(cio__waiter *w, int result);

/* Interrupts a waiter: unlinks it from its object and wakes it with `code`. */
bool cio__interrupt(cio__waiter *w, int code);

/* The states of a cio_scope_t (its state_ field). */
enum { CIO__SCOPE_OPEN = 0, CIO__SCOPE_CANCELLED, CIO__SCOPE_EXPIRED };

/* The cancellation state of the current code of task t: 0, -ECANCELED or
 * -ETIMEDOUT; *deadline receives the effective deadline (may be NULL). */
int cio__cancel_state(struct cio__task *t, int64_t *deadline);

/*
 * The level-triggered check every await point makes first, even one that
 * will not suspend: 0, or -ECANCELED / -ETIMEDOUT. A task neither cancelled
 * nor inside a scope (the common case) costs two loads.
 */
static inline int cio__check_cancel(struct cio__task *t);

/* ------------------------------------------------------------------------ */
/* Futures and tasks                                                          */
/* ------------------------------------------------------------------------ */

enum cio__fstate {
    CIO__PENDING = 0,  /* not done */
    CIO__DONE,         /* done with a value or an error */
    CIO__CANCELLED     /* done, cancelled */
};

enum cio__fkind {
    CIO__KIND_FUTURE = 0,
    CIO__KIND_TASK,
    CIO__KIND_JOB      /* thread-pool job: cancellable only while queued */
};

typedef struct cio__cbnode {
    cio_handle_t h;             /* queued on the ready list once done */
    struct cio__cbnode *next;
    cio_future_t *fut;
    cio_done_fn cb;
    void *arg;
    bool sync;                  /* internal: runs at completion */
} cio__cbnode;

struct cio_future {
    cio_loop_t *loop;
    uint8_t kind;      /* enum cio__fkind */
    uint8_t state;     /* enum cio__fstate */
    uint8_t retrieved; /* someone looked at the outcome */
    uint8_t job_started;
    int32_t refs;
    int status;
    void *result;
    cio__wlist waiters;
    cio__cbnode *callbacks;
    /* For jobs: the executor that owns the job (cancel while queued). */
    void *job;
};

enum cio__tstate {
    CIO__T_CREATED = 0, /* spawned, not started: no stack yet */
    CIO__T_READY,       /* queued to run */
    CIO__T_RUNNING,
    CIO__T_WAITING,     /* suspended on a waiter */
    CIO__T_FINISHED
};

typedef struct cio__locals cio__locals;

typedef struct cio__task {
    struct cio_future fut; /* must be first: a task is a future */
    void *sp;              /* saved stack pointer while suspended */
    cio__stack *stack;     /* assigned when the task first runs */
    /* The stack the task executes on right now: its own, or that of a
     * generator it drives (gen.c swaps these), with that code's name for
     * overflow reports (NULL: the task's name). */
    cio__stack *cur_stack;
    const char *cur_name;
    cio_task_fn fn;
    void *arg;
    char *name;            /* NULL until asked for or set */
    uint64_t id;
    size_t stack_size;
    cio_scope_t *scope;    /* innermost scope */
    cio__waiter *waiter;   /* what it is suspended on */
    cio_handle_t run;      /* queued on the ready list to (re)start it */
    struct cio__task *all_next, *all_prev; /* loop's list of live tasks */
    cio__locals *locals;
    uint8_t tstate;        /* enum cio__tstate */
    uint8_t cancel_requested;
    uint8_t yielded;
#ifdef CIO__ASAN
    void *asan_fake;
#endif
#ifdef CIO__TSAN
    void *tsan_fiber;
#endif
} cio__task;

static inline cio__task *cio__as_task(cio_future_t *f)
{
    return (f && f->kind == CIO__KIND_TASK) ? (cio__task *)f : NULL;
}

static inline int cio__check_cancel(cio__task *t)
{
    if (cio__likely(!t->cancel_requested && !t->scope))
        return 0;
    return cio__cancel_state(t, NULL);
}

/* Current task on this thread (NULL in callbacks and outside loops). */
extern _Thread_local cio__task *cio__current CIO__TLS_IE;
extern _Thread_local cio_loop_t *cio__running CIO__TLS_IE;

/* Allocates a pending plain or job future (one reference) from the loop's pool. */
cio_future_t *cio__future_alloc(cio_loop_t *loop, uint8_t kind);
/* Completes f (internal: also for tasks and jobs). Returns -EALREADY if done. */
int cio__future_complete(cio_future_t *f, int status, void *result, uint8_t state);
/* Frees a done future whose references are gone. */
void cio__future_free(cio_future_t *f);

/* Re-evaluates a waiting task after its cancellation state changed. */
void cio__task_rearm(struct cio__task *t);

/* Internal done callbacks run synchronously at completion (combinators,
 * groups, shield). Return the node (NULL on ENOMEM). */
void *cio__future_on_done(cio_future_t *f, void (*fn)(cio_future_t *, void *), void *arg);
/* Removes the internal callbacks registered with `arg`; returns how many. */
int cio__future_off_done_arg(cio_future_t *f, void *arg);
/* Cancels a queued thread-pool job (pool_thread.c); 0 if it already started. */
int cio__job_cancel(cio_future_t *f);

/* Suspends the current task until t (any future) is done, uninterruptibly. */
void cio__await_done(cio_future_t *f);

/* Task-local storage helpers (local.c). */
cio__locals *cio__locals_ref(cio__locals *l);
void cio__locals_unref(cio__locals *l);

/* ------------------------------------------------------------------------ */
/* Timers (timer.c)                                                           */
/* ------------------------------------------------------------------------ */

typedef struct cio__theap_entry {
    int64_t when;
    cio_handle_t *h;
} cio__theap_entry;

typedef struct cio__theap {
    cio__theap_entry *v;
    uint32_t n, cap;
} cio__theap;

int cio__timer_insert(cio__theap *hp, cio_handle_t *h);
void cio__timer_remove(cio__theap *hp, cio_handle_t *h);
/* The earliest deadline, or CIO__NO_DEADLINE. */
static inline int64_t cio__timer_next(const cio__theap *hp)
{
    return hp->n ? hp->v[0].when : CIO__NO_DEADLINE;
}
/* Removes and returns the earliest timer if its deadline <= now. */
cio_handle_t *cio__timer_pop_expired(cio__theap *hp, int64_t now);
void cio__timer_free(cio__theap *hp);

/* ------------------------------------------------------------------------ */
/* Poll backend seam (poll_epoll.c; io_uring later)                           */
/* ------------------------------------------------------------------------ */

typedef struct cio__poller {
    int fd;
    int nevents;
    void *events;
} cio__poller;

int cio__poll_init(cio__poller *p);
void cio__poll_close(cio__poller *p);
/* Changes fd's registration from old to new events (0 = not registered). */
int cio__poll_set(cio__poller *p, int fd, unsigned old_ev, unsigned new_ev);
/*
 * Waits up to timeout_ns (-1 forever, 0 poll) and calls
 * cio__fd_ready(loop, fd, events) for each ready fd. Returns the count or a
 * negative errno (EINTR is reported as 0).
 */
int cio__poll_wait(cio_loop_t *loop, cio__poller *p, int64_t timeout_ns);
void cio__fd_ready(cio_loop_t *loop, int fd, unsigned events);

/* ------------------------------------------------------------------------ */
/* The loop (loop.c)                                                          */
/* ------------------------------------------------------------------------ */

typedef struct cio__fdw {
    unsigned events;         /* registered with the poller */
    cio_callback_fn rcb, wcb;
    void *rarg, *warg;
    cio__waiter *rwait, *wwait;
} cio__fdw;

typedef struct cio__tsnode {
    struct cio__tsnode *next;
    cio_callback_fn cb;
    void *arg;
} cio__tsnode;

typedef struct cio__freelist {
    void *head;
    size_t size;      /* object size */
    void *chunks;     /* chunk list for freeing at close */
    size_t live;
} cio__freelist;

struct cio_loop {
    cio_handle_t ready;  /* sentinel of the circular ready list */
    size_t nready;       /* handles on the ready list */
    cio_handle_t batch_end; /* marks the end of the batch being run */
    cio__theap timers;
    uint64_t seq;
    int64_t now;
    void *sched_sp;      /* the loop's stack pointer while a task runs */
    cio__task *current;
    uint8_t running, stopping, closed, debug;
    uint8_t last_was_task; /* debug: the last ready callback was a task step */
    uint8_t now_valid;     /* `now` was read during this iteration */
    pthread_t owner;       /* the thread that created the loop */
    int64_t slow_ns;

    cio__poller poller;
    cio__fdw *fds;
    int nfds;
    int nwatch;          /* fds with something registered */

    int wakefd;
    pthread_mutex_t ts_lock;
    cio__tsnode *ts_head, *ts_tail;
    atomic_int ts_pending;
    atomic_int ts_closed;

    cio__task *all;      /* unfinished tasks */
    size_t ntasks;
    uint64_t next_task_id;

    cio__stack_pool stacks;
    cio__freelist task_pool, future_pool, cb_pool, handle_pool;

    cio_executor_t *executor; /* default pool, created on first use */
    size_t live_futures;

#ifdef CIO__ASAN
    void *asan_fake;
    const void *main_stack_lo;
    size_t main_stack_size;
#endif
#ifdef CIO__TSAN
    void *tsan_main;
#endif
};

/* The states of a cio_handle_t (its state_ field). */
enum { CIO__H_IDLE = 0, CIO__H_READY, CIO__H_TIMER };

/* Appends h to the ready list (hot path: inline). */
static inline void cio__ready_push(cio_loop_t *loop, cio_handle_t *h)
{
    cio_handle_t *tail = loop->ready.prev_;
    h->next_ = &loop->ready;
    h->prev_ = tail;
    tail->next_ = h;
    loop->ready.prev_ = h;
    h->state_ = CIO__H_READY;
    loop->nready++;
}

/* Removes h from the ready list. */
static inline void cio__ready_unlink(cio_loop_t *loop, cio_handle_t *h)
{
    h->prev_->next_ = h->next_;
    h->next_->prev_ = h->prev_;
    h->next_ = h->prev_ = NULL;
    h->state_ = CIO__H_IDLE;
    loop->nready--;
}
void *cio__pool_alloc(cio__freelist *fl);
void cio__pool_free(cio__freelist *fl, void *p);
void cio__pool_init(cio__freelist *fl, size_t size);
void cio__pool_destroy(cio__freelist *fl);
int64_t cio__clock_ns(void);
/* Converts seconds to a deadline after now (clamps; NaN gives -EINVAL). */
int cio__deadline_after(cio_loop_t *loop, double delay, int64_t *out);

/* Lists the loop's unfinished tasks on `out` (debug reports at close). */
void cio__task_report_open(cio_loop_t *loop, FILE *out);

/* Thread pool internals. */
void cio__executor_shutdown_default(cio_loop_t *loop);

/* Reports an error of a future nobody retrieved (debug mode). */
void cio__report_unretrieved(cio_future_t *f);

#ifdef CIO__ASAN
void __sanitizer_start_switch_fiber(void **fake_stack_save, const void *bottom, size_t size);
void __sanitizer_finish_switch_fiber(void *fake_stack_save, const void **bottom_old,
                                     size_t *size_old);
#endif
#ifdef CIO__TSAN
void *__tsan_get_current_fiber(void);
void *__tsan_create_fiber(unsigned flags);
void __tsan_destroy_fiber(void *fiber);
void __tsan_switch_to_fiber(void *fiber, unsigned flags);
#endif

#endif /* CIO_INTERNAL_H */
