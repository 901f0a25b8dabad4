/*
 * Generators: a body function on its own stack, entered by its caller with
 * one context switch and left by cio_gen_yield with one switch back. A send
 * round trip is those two switches plus a few stores: no system call, no
 * allocation.
 *
 * Hand-off protocol. Each side writes the other side's result before it
 * switches: the resumer stores the sent value through the pointer the
 * pending yield left in g->sent, and the yield stores the yielded value
 * through the pointer the resumer left in g->out. The only thing that
 * travels with the switch itself is an int: the code the pending yield
 * returns (0, a thrown error, -ECANCELED for close) one way, 1 ("yielded")
 * the other way.
 *
 * Two ways to switch, chosen per generator at its first resume:
 *  - jump (x86-64 assembly in src/ctx/, not in sanitizer builds): the switch is
 *    the tail call of cio_gen_send and of cio_gen_yield, and resumes the
 *    other side directly in the code that called them, with the int in the
 *    return register. Neither side executes a `ret` after a stack swap, so
 *    the return-stack predictor is never wrong: with a `ret` after each
 *    switch a round trip took about 30 ns on the bench machine instead of
 *    9, the two mispredicted returns costing far more than the switches.
 *  - call (portable): cio__ctx_switch, with the ASan/TSan fiber
 *    annotations around it, the int passed in g->rv.
 * Both leave the same frames, so a task that awaits inside a body (its
 * stack pointer then inside the generator's stack) is resumed by the loop
 * whatever the mode.
 *
 * While the body runs, the code that is executing is the generator, whatever
 * task or plain thread resumed it: the resumer points the places that
 * describe "what runs on which stack" at the generator before switching in,
 * and the body's side restores them before it switches out:
 *  - overflow reports: the current task's cur_stack, or outside tasks the
 *    thread-local cio__stack_thread (stack.h); the stack's owner record
 *    names the generator;
 *  - TSan: each generator runs on a fiber of its own, and a task driving a
 *    generator has its tsan_fiber swapped for the generator's, so that when
 *    the body awaits and the loop resumes the task, TSan resumes the right
 *    fiber. ASan is told the bounds of every stack switched to.
 * This is also what makes async generators work: when the body awaits, the
 * task suspends with its stack pointer inside the generator's stack, and
 * the loop resumes it there.
 *
 * The stack is taken at the first resume, from the running loop's pool or
 * from a pool private to the thread, and given back once the body has
 * finished, by code running on the caller's stack (never by the code running
 * on the stack being released).
 */
#include "task.h"

#include <stdio.h>

/*
 * While a closed generator's body runs to its end its state is CLOSING, which
 * cio_gen_get_state() reports as CIO_GEN_RUNNING: every yield then fails at
 * the state check of the hot path and returns -ECANCELED from the slow one.
 */
#define GEN_CLOSING 4

struct cio_gen {
    /* Hot fields first: everything a send round trip touches. */
    void *sp;              /* the body's stack pointer while suspended */
    void *caller_sp;       /* the resumer's stack pointer while the body runs */
    void **out;            /* where the resumer wants the yielded value */
    void **sent;           /* where the pending yield wants the sent value */
    uint8_t state;         /* enum cio_gen_state, or GEN_CLOSING */
    uint8_t fast;          /* jump mode and no canary: the inlined hot paths */
    uint8_t jump;          /* switch with cio__gen_jump (see above) */
    uint8_t canary;        /* the stack is canary-guarded: check at switches */
    uint8_t ignored;       /* the body yielded after it was closed */
    int rv;                /* the int passed with a switch, in call mode */
    const char *stack_lo;  /* bounds of the stack, for yield's check */
    const char *stack_hi;
    cio__stack *prev_stack; /* the stack that ran before the resume */
    cio__coro *task;       /* the task that resumed the body, or NULL */
    cio_scope_t *caller_scope; /* the task's innermost scope at the resume */
    cio__stack *stack;
    const char *name;      /* stored after the struct */

    /* Cold fields. */
    cio__stack_pool *pool; /* where the stack goes back */
    cio_gen_fn fn;
    void *arg;
    void *result;          /* cio_gen_set_result */
    int status;            /* the body's return value once closed */
    size_t stack_size;
#ifdef CIO__ASAN
    void *caller_fake, *gen_fake;
    const void *caller_lo;
    size_t caller_size;
#endif
#ifdef CIO__TSAN
    void *tsan_fiber, *tsan_caller, *prev_fiber;
#endif
};

/* The caller's frame address: where the calling code's stack is. */
#if defined(__GNUC__)
#define FRAME_ADDRESS() ((const char *)__builtin_frame_address(0))
#define GEN_NOINLINE __attribute__((noinline))
#else
#define FRAME_ADDRESS() ((const char *)&(char){0})
#define GEN_NOINLINE
#endif

/* ------------------------------------------------------------------------ */
/* The jump switch (x86-64)                                                  */
/* ------------------------------------------------------------------------ */

/*
 * Sanitizers must see every stack switch from C code on both sides, which a
 * resume straight into the other side's caller does not allow: sanitizer
 * builds use the call mode only.
 */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(CIO__ASAN) && !defined(CIO__TSAN)
#define GEN_JUMP 1
#endif

#ifdef GEN_JUMP

/* The jump switch lives with the other switches (src/ctx/switch_x86_64.S;
 * declared in ctx.h). */
#ifdef CIO_CTX_SAVE_FPU
#define GEN_FPU_BYTES 8
#else
#define GEN_FPU_BYTES 0
#endif

/*
 * The jump mode relies on cio__ctx_make building the frame described above
 * (it does not with the ucontext fallback). Checked once per process on a
 * scratch frame: r13 holds the argument and r12 the entry function.
 */
static void probe_entry(void *arg)
{
    (void)arg;
}

static bool probe_jump_frames(void)
{
    _Alignas(64) char scratch[4096]; /* room for a ucontext_t as well */
    static char marker;
    char *top = scratch + sizeof scratch;
    void **sp = cio__ctx_make(top, probe_entry, &marker);
    void **want = (void **)((uintptr_t)top & ~(uintptr_t)15) - 3 - 6 -
                  GEN_FPU_BYTES / 8;
    size_t fpu = GEN_FPU_BYTES / sizeof(void *);
    return sp == want && sp[fpu + 2] == (void *)&marker &&
           sp[fpu + 3] == (void *)(uintptr_t)probe_entry;
}

static bool jump_supported(void)
{
    static atomic_int state; /* 0 unknown, 1 yes, 2 no */
    int s = atomic_load_explicit(&state, memory_order_relaxed);
    if (!s) {
        s = probe_jump_frames() ? 1 : 2;
        atomic_store_explicit(&state, s, memory_order_relaxed);
    }
    return s == 1;
}

#else

static bool jump_supported(void)
{
    return false;
}

#endif /* GEN_JUMP */

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
/* Stacks and bookkeeping                                                    */
/* ------------------------------------------------------------------------ */

static void gen_entry(void *arg);

/* Takes a stack for the first resume and prepares the entry frame. */
static int take_stack(cio_gen_t *g)
{
    cio__stack_pool *p = cio__running ? &cio__running->stacks : pool_for_thread();
    cio__stack *s = cio__stack_get(p, g->stack_size);
    if (!s)
        return -ENOMEM;
    /* Outside loops nothing has installed the overflow reporter yet. */
    cio__stack_install_handler();
    s->owner = (cio__stack_owner){.kind = "generator", .name = &g->name, .id = NULL};
    g->stack = s;
    g->pool = p;
    g->stack_lo = s->lo;
    g->stack_hi = cio__stack_top(s);
    g->canary = s->kind == CIO__GUARD_CANARY;
    g->jump = jump_supported();
    g->fast = g->jump && !g->canary;
    g->sp = cio__ctx_make(cio__stack_top(s), gen_entry, g);
#ifdef CIO__TSAN
    g->tsan_fiber = __tsan_create_fiber(0);
#endif
    return 0;
}

/*
 * Runs on the caller's stack once the body has finished: gives the stack
 * back and returns what the resuming call returns (see cio.h).
 */
static int finish_on_caller(void *arg)
{
    cio_gen_t *g = arg;
    cio__stack_put(g->pool, g->stack);
    g->stack = NULL;
    g->pool = NULL;
    g->stack_lo = g->stack_hi = NULL;
#ifdef CIO__TSAN
    __tsan_destroy_fiber(g->tsan_fiber);
    g->tsan_fiber = NULL;
#endif
    if (g->out)
        *g->out = g->status >= 0 ? g->result : NULL;
    return g->status >= 0 ? 0 : g->status;
}

/*
 * Resumer side, before switching in: the generator becomes the code that
 * runs, for overflow reports (and for TSan, the task's fiber).
 */
static inline void point_at_body(cio_gen_t *g)
{
    cio__coro *t = cio__current;
    g->task = t;
    if (t) {
        g->prev_stack = t->cur_stack;
        g->caller_scope = t->scope;
        t->cur_stack = g->stack;
#ifdef CIO__TSAN
        g->prev_fiber = t->tsan_fiber;
        t->tsan_fiber = g->tsan_fiber;
#endif
    } else {
        g->prev_stack = cio__stack_thread;
        cio__stack_thread = g->stack;
    }
}

/* Body side, before switching out: gives the resumer its state back. */
static inline void point_at_caller(cio_gen_t *g)
{
    cio__coro *t = g->task;
    if (t) {
        t->cur_stack = g->prev_stack;
#ifdef CIO__TSAN
        t->tsan_fiber = g->prev_fiber;
#endif
    } else {
        cio__stack_thread = g->prev_stack;
    }
}

/* ------------------------------------------------------------------------ */
/* Switching                                                                 */
/* ------------------------------------------------------------------------ */

/* Call mode, resumer side: runs the body until it yields or finishes. */
static int enter_by_call(cio_gen_t *g, int code)
{
    g->rv = code;
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
    if (g->state == CIO_GEN_CLOSED)
        return finish_on_caller(g);
    return g->rv;
}

/* Call mode, body side: back to the resumer; returns the code sent back. */
static int leave_by_call(cio_gen_t *g, int value, bool finished)
{
    g->rv = value;
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
    return g->rv;
}

/*
 * Runs the body in `run_state` (RUNNING, or GEN_CLOSING for close), its
 * pending yield returning `code`, until it yields (returns 1, the value
 * stored in *out) or finishes (see finish_on_caller()).
 */
static inline int resume(cio_gen_t *g, void **out, int code, uint8_t run_state)
{
    g->out = out;
    g->state = run_state;
    point_at_body(g);
#ifdef GEN_JUMP
    if (cio__likely(g->jump))
        return cio__gen_jump(&g->caller_sp, g->sp, code);
#endif
    return enter_by_call(g, code);
}

static void gen_entry(void *arg)
{
    cio_gen_t *g = arg;
#ifdef CIO__ASAN
    __sanitizer_finish_switch_fiber(NULL, &g->caller_lo, &g->caller_size);
#endif
    g->status = g->fn(g, g->arg);
    if (cio__unlikely(g->canary))
        cio__stack_check(g->stack, FRAME_ADDRESS());
    g->state = CIO_GEN_CLOSED;
    point_at_caller(g);
#ifdef GEN_JUMP
    if (g->jump)
        cio__gen_finish(g->caller_sp, finish_on_caller, g);
#endif
    leave_by_call(g, 0, true);
    abort(); /* a finished body is never resumed */
}

/* RUNNING and CLOSING: the body is on its way; callers get -EBUSY. */
static inline bool is_running(const cio_gen_t *g)
{
    return g->state == CIO_GEN_RUNNING || g->state == GEN_CLOSING;
}

/* Hands the sent value (or NULL with an error code) to the pending yield. */
static inline void deliver(cio_gen_t *g, void *value)
{
    if (g->sent)
        *g->sent = value;
}

/* ------------------------------------------------------------------------ */
/* Creating and freeing                                                      */
/* ------------------------------------------------------------------------ */

int cio_gen_new_ex(cio_gen_t **out, cio_gen_fn fn, void *arg, const cio_gen_opts_t *opts)
{
    if (!out)
        return -EINVAL;
    *out = NULL;
    if (!fn || (opts && (opts->reserved_[0] || opts->reserved_[1])))
        return -EINVAL;
    char buf[40];
    const char *name = opts ? opts->name : NULL;
    if (!name) {
        unsigned long long id = atomic_fetch_add(&next_gen_id, 1) + 1;
        snprintf(buf, sizeof buf, "Generator-%llu", id);
        name = buf;
    }
    size_t len = strlen(name) + 1;
    cio_gen_t *g = cio__malloc(sizeof(*g) + len);
    if (!g)
        return -ENOMEM;
    memset(g, 0, sizeof(*g));
    char *copy = (char *)(g + 1);
    memcpy(copy, name, len);
    g->name = copy;
    g->fn = fn;
    g->arg = arg;
    g->stack_size = opts ? opts->stack_size : 0;
    g->state = CIO_GEN_CREATED;
    *out = g;
    return 0;
}

int cio_gen_new(cio_gen_t **out, cio_gen_fn fn, void *arg)
{
    return cio_gen_new_ex(out, fn, arg, NULL);
}

int cio_gen_free(cio_gen_t *g)
{
    if (!g)
        return 0;
    if (is_running(g))
        return -EBUSY;
    int rc = g->state == CIO_GEN_SUSPENDED ? cio_gen_close(g) : 0;
    cio__free(g);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* The caller's side: next, send, throw, close                               */
/* ------------------------------------------------------------------------ */

/*
 * send/next in every case but the hot one (see cio_gen_send). Kept out of
 * line so that the hot path needs no stack frame of its own.
 */
static GEN_NOINLINE int send_general(cio_gen_t *g, void *value, void **out)
{
    if (g && g->state == CIO_GEN_SUSPENDED) {
        deliver(g, value);
        return resume(g, out, 0, CIO_GEN_RUNNING);
    }
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
        return resume(g, out, 0, CIO_GEN_RUNNING);
    }
    case CIO_GEN_CLOSED: /* an exhausted iterator stays exhausted */
        return 0;
    default:
        return -EBUSY;
    }
}

int cio_gen_send(cio_gen_t *g, void *value, void **out)
{
#ifdef GEN_JUMP
    /* The hot path: resume() for a suspended generator in jump mode. */
    if (cio__likely(g && g->state == CIO_GEN_SUSPENDED && g->fast)) {
        deliver(g, value);
        g->out = out;
        g->state = CIO_GEN_RUNNING;
        point_at_body(g);
        return cio__gen_jump(&g->caller_sp, g->sp, 0);
    }
#endif
    return send_general(g, value, out);
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
        deliver(g, NULL);
        return resume(g, out, err, CIO_GEN_RUNNING);
    case CIO_GEN_CREATED: /* raised before the first line: the body never runs */
        g->state = CIO_GEN_CLOSED;
        g->status = err;
        return err;
    case CIO_GEN_CLOSED:
        return err;
    default:
        return -EBUSY;
    }
}

int cio_gen_close(cio_gen_t *g)
{
    if (!g)
        return 0;
    switch (g->state) {
    case CIO_GEN_CREATED:
        g->state = CIO_GEN_CLOSED;
        g->status = -ECANCELED;
        return 0;
    case CIO_GEN_CLOSED:
        return 0;
    case CIO_GEN_SUSPENDED:
        break;
    default:
        return -EBUSY;
    }
    /* The pending yield returns -ECANCELED, and so does every later one
     * (the state is GEN_CLOSING), so this resume runs the body to its
     * end. */
    deliver(g, NULL);
    (void)resume(g, NULL, -ECANCELED, GEN_CLOSING);
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

/* True when sp lies on g's stack (that is, g's body is the caller). */
static inline bool on_stack(const cio_gen_t *g, const char *sp)
{
    return sp > g->stack_lo && sp < g->stack_hi;
}

/* True when the body of g, running on its own stack at sp, may yield. */
static inline bool may_yield(const cio_gen_t *g, const char *sp)
{
    return g->state == CIO_GEN_RUNNING && on_stack(g, sp) &&
           (!g->task || g->task->scope == g->caller_scope);
}

/* The refusals and the closed case of cio_gen_yield. */
static int yield_refused(cio_gen_t *g, const char *sp, void **sent)
{
    if (sent)
        *sent = NULL;
    if (!g)
        return -EINVAL;
    if (!is_running(g) || !on_stack(g, sp))
        return -EPERM;
    if (g->state == GEN_CLOSING) { /* level-triggered: the close was ignored */
        g->ignored = 1;
        return -ECANCELED;
    }
    return -EINVAL; /* a cancel scope entered in the body is still open */
}

/* cio_gen_yield in every case but the hot one; sp is the body's frame. */
static GEN_NOINLINE int yield_general(cio_gen_t *g, void *value, void **sent,
                                      const char *sp)
{
    if (!g || !may_yield(g, sp))
        return yield_refused(g, sp, sent);
    /* Canary-guarded stacks (no guard page left) are checked at every
     * switch away from them, as task stacks are. */
    if (cio__unlikely(g->canary))
        cio__stack_check(g->stack, sp);
    if (g->out)
        *g->out = value;
    g->sent = sent;
    g->state = CIO_GEN_SUSPENDED;
    point_at_caller(g);
#ifdef GEN_JUMP
    if (g->jump)
        return cio__gen_jump(&g->sp, g->caller_sp, 1);
#endif
    return leave_by_call(g, 1, false);
}

int cio_gen_yield(cio_gen_t *g, void *value, void **sent)
{
    const char *sp = FRAME_ADDRESS();
#ifdef GEN_JUMP
    /* The hot path: yield_general() in jump mode without canary. */
    if (cio__likely(g && g->fast && may_yield(g, sp))) {
        if (g->out)
            *g->out = value;
        g->sent = sent;
        g->state = CIO_GEN_SUSPENDED;
        point_at_caller(g);
        return cio__gen_jump(&g->sp, g->caller_sp, 1);
    }
#endif
    return yield_general(g, value, sent, sp);
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
    if (!g)
        return -EINVAL;
    return g->state == GEN_CLOSING ? CIO_GEN_RUNNING : g->state;
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
