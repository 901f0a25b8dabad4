/*
 * Generators: a body function on its own stack, resumed by its caller with
 * one context switch and suspended by cio_gen_yield with one switch back.
 *
 * The caller and the body hand values over through the generator object
 * (xfer for values, code for what the pending yield returns), so a send
 * round trip is two switches plus a few stores: no system call, no
 * allocation. The stack is taken at the first resume, from the running
 * loop's pool or from a pool private to the thread, and given back by the
 * caller once it has switched off a finished body (a stack is never
 * released by the code running on it).
 *
 * While the body runs, the code that is executing is the generator, whatever
 * task or plain thread resumed it, so the places that describe "what runs
 * on which stack" are switched to the generator and back at each yield:
 *  - overflow reports: the current task's cur_stack/cur_name, or outside
 *    tasks the thread-locals cio__thread_stack/cio__thread_stack_name;
 *  - sanitizers: ASan is told about every stack switch, TSan runs each
 *    generator on a fiber of its own, and a task driving a generator has its
 *    tsan_fiber swapped for the generator's, so that when the body awaits
 *    and the loop resumes the task, TSan resumes the right fiber.
 * This is also what makes async generators work: when the body awaits, the
 * task suspends with its stack pointer inside the generator's stack, and
 * the loop resumes it there.
 */
#include "internal.h"

#include <stdio.h>

struct cio_gen {
    /* Hot fields first: everything a send round trip touches. */
    void *sp;              /* the body's stack pointer while suspended */
    void *caller_sp;       /* the resumer's stack pointer while the body runs */
    void *xfer;            /* value handed over, in either direction */
    int code;              /* what the pending yield returns (0, thrown, close) */
    uint8_t state;         /* enum cio_gen_state */
    uint8_t closing;       /* closed: every yield returns -ECANCELED at once */
    uint8_t ignored;       /* the body yielded after it was closed */
    cio__stack *stack;
    cio__task *task;       /* the task that resumed the body, or NULL */
    cio__stack *prev_stack; /* the resumer's overflow-report state */
    const char *prev_name;
    cio_scope_t *caller_scope; /* the task's innermost scope at the resume */

    /* Cold fields. */
    cio__stack_pool *pool; /* where the stack goes back */
    cio_gen_fn fn;
    void *arg;
    void *result;          /* cio_gen_set_result */
    int status;            /* the body's return value once closed */
    size_t stack_size;
    const char *name;      /* stored after the struct */
#ifdef CIO__ASAN
    void *caller_fake, *gen_fake;
    const void *caller_lo;
    size_t caller_size;
#endif
#ifdef CIO__TSAN
    void *tsan_fiber, *tsan_caller, *prev_fiber;
#endif
};

/* ------------------------------------------------------------------------ */
/* The per-thread stack pool (generators resumed outside a running loop)    */
/* ------------------------------------------------------------------------ */

static _Thread_local cio__stack_pool thread_pool;
static _Thread_local int thread_pool_registered;
static pthread_key_t pool_key;
static pthread_once_t pool_key_once = PTHREAD_ONCE_INIT;
static atomic_ullong next_gen_id;

/*
 * At thread exit, unmaps the thread's pool unless a generator still holds
 * one of its stacks (freeing memory under it would turn a leak into a
 * crash).
 */
static void pool_at_exit(void *p)
{
    cio__stack_pool *pool = p;
    if (pool->live == 0)
        cio__stack_pool_close(pool);
}

static void pool_key_make(void)
{
    pthread_key_create(&pool_key, pool_at_exit);
}

static cio__stack_pool *pool_for_thread(void)
{
    if (!thread_pool_registered) {
        pthread_once(&pool_key_once, pool_key_make);
        pthread_setspecific(pool_key, &thread_pool);
        thread_pool_registered = 1;
    }
    return &thread_pool;
}

/* ------------------------------------------------------------------------ */
/* Switching                                                                 */
/* ------------------------------------------------------------------------ */

static void gen_entry(void *arg);

/*
 * Resumer side, before switching in: the generator becomes the code that
 * runs, for overflow reports (and for TSan, the task's fiber).
 */
static inline void enter_body(cio_gen_t *g)
{
    cio__task *t = cio__current;
    g->task = t;
    if (t) {
        g->prev_stack = t->cur_stack;
        g->prev_name = t->cur_name;
        g->caller_scope = t->scope;
        t->cur_stack = g->stack;
        t->cur_name = g->name;
#ifdef CIO__TSAN
        g->prev_fiber = t->tsan_fiber;
        t->tsan_fiber = g->tsan_fiber;
#endif
    } else {
        g->prev_stack = cio__thread_stack;
        g->prev_name = cio__thread_stack_name;
        cio__thread_stack = g->stack;
        cio__thread_stack_name = g->name;
    }
}

/* Body side, before switching out: gives the resumer its state back. */
static inline void leave_body(cio_gen_t *g)
{
    cio__task *t = g->task;
    if (t) {
        t->cur_stack = g->prev_stack;
        t->cur_name = g->prev_name;
#ifdef CIO__TSAN
        t->tsan_fiber = g->prev_fiber;
#endif
    } else {
        cio__thread_stack = g->prev_stack;
        cio__thread_stack_name = g->prev_name;
    }
}

/* Resumer side: runs the body until it yields or finishes. */
static inline void switch_in(cio_gen_t *g)
{
#ifdef CIO__ASAN
    char *bottom = g->stack->lo + g->stack->guard;
    __sanitizer_start_switch_fiber(&g->caller_fake, bottom,
                                   (size_t)((char *)cio__stack_top(g->stack) - bottom));
#endif
#ifdef CIO__TSAN
    g->tsan_caller = __tsan_get_current_fiber();
    __tsan_switch_to_fiber(g->tsan_fiber, 0);
#endif
    cio__ctx_switch(&g->caller_sp, g->sp);
#ifdef CIO__ASAN
    __sanitizer_finish_switch_fiber(g->caller_fake, NULL, NULL);
#endif
}

/* Body side: back to the resumer; returns when the body is resumed. */
static inline void switch_out(cio_gen_t *g, bool finished)
{
#ifdef CIO__ASAN
    __sanitizer_start_switch_fiber(finished ? NULL : &g->gen_fake, g->caller_lo,
                                   g->caller_size);
#else
    (void)finished;
#endif
#ifdef CIO__TSAN
    __tsan_switch_to_fiber(g->tsan_caller, 0);
#endif
    cio__ctx_switch(&g->sp, g->caller_sp);
#ifdef CIO__ASAN
    /* Records the stack of whoever resumed us, for the next switch out. */
    __sanitizer_finish_switch_fiber(g->gen_fake, &g->caller_lo, &g->caller_size);
#endif
}

static void gen_entry(void *arg)
{
    cio_gen_t *g = arg;
#ifdef CIO__ASAN
    __sanitizer_finish_switch_fiber(NULL, &g->caller_lo, &g->caller_size);
#endif
    g->status = g->fn(g, g->arg);
    g->state = CIO_GEN_CLOSED;
    leave_body(g);
    switch_out(g, true);
    abort(); /* a finished body is never resumed */
}

/* Takes a stack for the first resume and prepares the entry frame. */
static int take_stack(cio_gen_t *g)
{
    cio__stack_pool *p = cio__running ? &cio__running->stacks : pool_for_thread();
    cio__stack *s = cio__stack_get(p, g->stack_size);
    if (!s)
        return -ENOMEM;
    /* Outside loops nothing has installed the overflow reporter yet. */
    cio__stack_install_handler();
    g->stack = s;
    g->pool = p;
    g->sp = cio__ctx_make(cio__stack_top(s), gen_entry, g);
#ifdef CIO__TSAN
    g->tsan_fiber = __tsan_create_fiber(0);
#endif
    return 0;
}

/* Resumer side, after the body finished: the stack goes back to its pool. */
static void release_stack(cio_gen_t *g)
{
    cio__stack_put(g->pool, g->stack);
    g->stack = NULL;
    g->pool = NULL;
#ifdef CIO__TSAN
    __tsan_destroy_fiber(g->tsan_fiber);
    g->tsan_fiber = NULL;
#endif
}

/* What a resuming call returns once the body has finished. */
static int finished(cio_gen_t *g, void **out)
{
    release_stack(g);
    if (out)
        *out = g->status >= 0 ? g->result : NULL;
    return g->status >= 0 ? 0 : g->status;
}

/*
 * Runs the body (g->code and g->xfer already set) until it yields (1, the
 * value in *out) or finishes (see finished()).
 */
static inline int resume(cio_gen_t *g, void **out)
{
    g->state = CIO_GEN_RUNNING;
    enter_body(g);
    switch_in(g);
    /* Canary-guarded stacks (no guard page left) are checked at every
     * switch away from them, as task stacks are. */
    if (cio__unlikely(g->stack->kind == CIO__GUARD_CANARY))
        cio__stack_check(g->stack, g->sp, g->name);
    if (cio__likely(g->state == CIO_GEN_SUSPENDED)) {
        if (out)
            *out = g->xfer;
        return 1;
    }
    return finished(g, out);
}

/* ------------------------------------------------------------------------ */
/* Creating and freeing                                                      */
/* ------------------------------------------------------------------------ */

cio_gen_t *cio_gen_new_ex(cio_gen_fn fn, void *arg, const cio_gen_opts_t *opts)
{
    if (!fn) {
        errno = EINVAL;
        return NULL;
    }
    char buf[40];
    const char *name = opts ? opts->name : NULL;
    if (!name) {
        unsigned long long id = atomic_fetch_add(&next_gen_id, 1) + 1;
        snprintf(buf, sizeof buf, "Generator-%llu", id);
        name = buf;
    }
    size_t len = strlen(name) + 1;
    cio_gen_t *g = malloc(sizeof(*g) + len);
    if (!g) {
        errno = ENOMEM;
        return NULL;
    }
    memset(g, 0, sizeof(*g));
    char *copy = (char *)(g + 1);
    memcpy(copy, name, len);
    g->name = copy;
    g->fn = fn;
    g->arg = arg;
    g->stack_size = opts ? opts->stack_size : 0;
    g->state = CIO_GEN_CREATED;
    return g;
}

cio_gen_t *cio_gen_new(cio_gen_fn fn, void *arg)
{
    return cio_gen_new_ex(fn, arg, NULL);
}

int cio_gen_free(cio_gen_t *g)
{
    if (!g)
        return 0;
    if (g->state == CIO_GEN_RUNNING)
        return -EBUSY;
    int rc = g->state == CIO_GEN_SUSPENDED ? cio_gen_close(g) : 0;
    free(g);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* The caller's side: next, send, throw, close                               */
/* ------------------------------------------------------------------------ */

/* send/next in every state but SUSPENDED. */
static int send_slow(cio_gen_t *g, void *value, void **out)
{
    if (out)
        *out = NULL;
    if (!g)
        return -EINVAL;
    switch (g->state) {
    case CIO_GEN_CREATED: {
        if (value) /* Python: can't send non-None value to a just-started generator */
            return -EINVAL;
        int rc = take_stack(g);
        if (rc)
            return rc;
        g->code = 0;
        g->xfer = NULL;
        return resume(g, out);
    }
    case CIO_GEN_RUNNING:
        return -EBUSY;
    default: /* closed: an exhausted iterator stays exhausted */
        return 0;
    }
}

int cio_gen_send(cio_gen_t *g, void *value, void **out)
{
    if (cio__likely(g && g->state == CIO_GEN_SUSPENDED)) {
        g->xfer = value;
        g->code = 0;
        return resume(g, out);
    }
    return send_slow(g, value, out);
}

int cio_gen_next(cio_gen_t *g, void **out)
{
    return cio_gen_send(g, NULL, out);
}

int cio_gen_throw(cio_gen_t *g, int err, void **out)
{
    if (out)
        *out = NULL;
    if (!g || err >= 0)
        return -EINVAL;
    switch (g->state) {
    case CIO_GEN_SUSPENDED:
        g->xfer = NULL;
        g->code = err;
        return resume(g, out);
    case CIO_GEN_CREATED: /* raised before the first line: the body never runs */
        g->state = CIO_GEN_CLOSED;
        g->status = err;
        return err;
    case CIO_GEN_RUNNING:
        return -EBUSY;
    default:
        return err;
    }
}

int cio_gen_close(cio_gen_t *g)
{
    if (!g)
        return -EINVAL;
    switch (g->state) {
    case CIO_GEN_CREATED:
        g->state = CIO_GEN_CLOSED;
        g->status = -ECANCELED;
        return 0;
    case CIO_GEN_RUNNING:
        return -EBUSY;
    case CIO_GEN_CLOSED:
        return 0;
    default:
        break;
    }
    /* The pending yield returns -ECANCELED, and so does every later one
     * (cio_gen_yield checks `closing`), so this resume runs the body to
     * its end. */
    g->closing = 1;
    g->xfer = NULL;
    g->code = -ECANCELED;
    (void)resume(g, NULL);
    if (g->ignored)
        return -EPROTO;
    return (g->status >= 0 || g->status == -ECANCELED) ? 0 : g->status;
}

int cio_gen_aclose(cio_gen_t *g)
{
    return cio_gen_close(g);
}

/* ------------------------------------------------------------------------ */
/* The body's side: yield                                                    */
/* ------------------------------------------------------------------------ */

/* True when the calling code runs on g's stack (that is, in g's body). */
static inline bool on_own_stack(const cio_gen_t *g)
{
#if defined(__GNUC__)
    const char *sp = __builtin_frame_address(0);
#else
    char here;
    const char *sp = &here;
#endif
    return sp > g->stack->lo && sp < (const char *)cio__stack_top(g->stack);
}

/* The refusals and the closed case of cio_gen_yield, off the hot path. */
static int yield_slow(cio_gen_t *g, void **sent)
{
    if (sent)
        *sent = NULL;
    if (!g)
        return -EINVAL;
    if (g->state != CIO_GEN_RUNNING || !on_own_stack(g))
        return -EPERM;
    if (g->closing) { /* level-triggered: the body ignored the close */
        g->ignored = 1;
        return -ECANCELED;
    }
    return -EINVAL; /* a cancel scope entered in the body is still open */
}

int cio_gen_yield(cio_gen_t *g, void *value, void **sent)
{
    if (cio__unlikely(!g || g->state != CIO_GEN_RUNNING || g->closing ||
                      !on_own_stack(g) ||
                      (g->task && g->task->scope != g->caller_scope)))
        return yield_slow(g, sent);
    g->xfer = value;
    g->state = CIO_GEN_SUSPENDED;
    leave_body(g);
    switch_out(g, false);
    /* Resumed: the resumer has set code and xfer, and entered us. */
    if (sent)
        *sent = g->xfer;
    return g->code;
}

/* ------------------------------------------------------------------------ */
/* Results and introspection                                                 */
/* ------------------------------------------------------------------------ */

void cio_gen_set_result(cio_gen_t *g, void *value)
{
    if (g)
        g->result = value;
}

int cio_gen_result(const cio_gen_t *g, void **value)
{
    if (value)
        *value = NULL;
    if (!g)
        return -EINVAL;
    if (g->state != CIO_GEN_CLOSED)
        return -EAGAIN;
    if (value)
        *value = g->result;
    return g->status;
}

int cio_gen_get_state(const cio_gen_t *g)
{
    return g ? g->state : -EINVAL;
}

const char *cio_gen_state_name(int state)
{
    switch (state) {
    case CIO_GEN_CREATED: return "GEN_CREATED";
    case CIO_GEN_RUNNING: return "GEN_RUNNING";
    case CIO_GEN_SUSPENDED: return "GEN_SUSPENDED";
    case CIO_GEN_CLOSED: return "GEN_CLOSED";
    default: return "?";
    }
}

const char *cio_gen_get_name(const cio_gen_t *g)
{
    return g ? g->name : NULL;
}
