/*
 * Coroutine stacks: pooled per loop, committed lazily by the kernel, and
 * never overflowing silently.
 *
 * Strategy (see docs/design.md, "Stacks"):
 *  - Default-size stacks are carved from slabs of SLAB_STACKS stacks mapped
 *    with MAP_NORESERVE, so spawning maps nothing in the steady state and a
 *    stack costs only the pages it touches (one page for an idle task).
 *  - The lowest GUARD bytes of every stack are a guard. On Linux >= 6.13,
 *    MADV_GUARD_INSTALL makes them fault without splitting the mapping, so
 *    every stack is guarded whatever their number. Older kernels fall back to
 *    mprotect(PROT_NONE) guards, each of which splits a mapping: those are
 *    used for at most a quarter of vm.max_map_count stacks (16k by default)
 *    and later stacks get a canary checked at every switch away from them.
 *  - A fault in the guard of the running task is reported by a SIGSEGV
 *    handler on an alternate signal stack, with the task's name and stack
 *    size, and the process then dies of the signal.
 */
#include "stack.h"

#include <pthread.h>
#include <stdio.h>

/*
 * With CIO_VALGRIND, every stack is registered with valgrind while it
 * exists, so that memcheck knows a switch to it is a stack switch and does
 * not report thousands of false errors on coroutine and generator code.
 */
#ifdef CIO_VALGRIND
#include <valgrind/valgrind.h>
#define VG_REGISTER(s) ((s)->valgrind_id = VALGRIND_STACK_REGISTER((s)->lo + (s)->guard, (char *)(s)))
#define VG_DEREGISTER(s) VALGRIND_STACK_DEREGISTER((s)->valgrind_id)
#else
#define VG_REGISTER(s) ((s)->valgrind_id = 0)
#define VG_DEREGISTER(s) ((void)(s))
#endif

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif

#define SLAB_STACKS 64
#define GUARD_BYTES (16u * 1024u)
#define ALTSTACK_BYTES (64u * 1024u)
/* No stack larger than this is mapped (1 TiB): a bigger request is an error. */
#define CIO__STACK_MAX ((size_t)1 << 40)

struct cio__slab {
    struct cio__slab *next;
    char *base;
    size_t stack_size;
    unsigned carved;
};

/* Process-wide guard accounting: mprotect guards split mappings. */
static atomic_int madvise_guard_state; /* 0 unknown, 1 works, 2 unsupported */
static atomic_long mprotect_guards;

static size_t page_size(void)
{
    return (size_t)sysconf(_SC_PAGESIZE);
}

static long mprotect_guard_limit(void)
{
    long limit = 65530;
    FILE *f = fopen("/proc/sys/vm/max_map_count", "r");
    if (f) {
        if (fscanf(f, "%ld", &limit) != 1)
            limit = 65530;
        fclose(f);
    }
    return limit / 4;
}

/* Installs the guard at [lo, lo + len) and returns its kind. */
static uint8_t guard_install(char *lo, size_t len)
{
    /* Loops in several threads may get here at once: the limit is read
     * once and published atomically. */
    static atomic_long limit_cache;
    long limit = atomic_load_explicit(&limit_cache, memory_order_relaxed);
    if (atomic_load_explicit(&madvise_guard_state, memory_order_relaxed) != 2) {
        if (madvise(lo, len, MADV_GUARD_INSTALL) == 0) {
            atomic_store_explicit(&madvise_guard_state, 1, memory_order_relaxed);
            return CIO__GUARD_MADVISE;
        }
        atomic_store_explicit(&madvise_guard_state, 2, memory_order_relaxed);
    }
    if (!limit) {
        limit = mprotect_guard_limit();
        atomic_store_explicit(&limit_cache, limit, memory_order_relaxed);
    }
    if (atomic_fetch_add(&mprotect_guards, 1) < limit) {
        if (mprotect(lo, len, PROT_NONE) == 0)
            return CIO__GUARD_MPROTECT;
    }
    atomic_fetch_sub(&mprotect_guards, 1);
    /* Canary at the top of the guard area, just below the usable stack. */
    uint64_t *c = (uint64_t *)(lo + len) - 8;
    for (int i = 0; i < 8; i++)
        c[i] = CIO__STACK_CANARY;
    return CIO__GUARD_CANARY;
}

/* The descriptor takes the top 64 bytes of its stack. */
_Static_assert(sizeof(cio__stack) <= 64, "the stack descriptor must fit its 64 bytes");

/* Places the descriptor at the top of [lo, lo + size) and guards it. */
static cio__stack *stack_init(char *lo, size_t size, uint8_t pooled)
{
    cio__stack *s = (cio__stack *)(lo + size - 64);
    s->next = NULL;
    s->lo = lo;
    s->size = size;
    s->guard = GUARD_BYTES;
    s->pooled = pooled;
    s->owner = (cio__stack_owner){NULL, NULL, NULL};
    s->kind = guard_install(lo, GUARD_BYTES);
    VG_REGISTER(s);
    return s;
}

static size_t round_size(size_t size)
{
    size_t ps = page_size();
    if (size < GUARD_BYTES + 4 * ps)
        size = GUARD_BYTES + 4 * ps;
    return (size + ps - 1) & ~(ps - 1);
}

static cio__stack *slab_carve(cio__stack_pool *p)
{
    struct cio__slab *sl = p->slabs;
    if (!sl || sl->carved == SLAB_STACKS) {
        sl = cio__malloc(sizeof(*sl));
        if (!sl)
            return NULL;
        size_t len = (size_t)SLAB_STACKS * CIO_DEFAULT_STACK_SIZE;
        void *m = mmap(NULL, len, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (m == MAP_FAILED) {
            cio__free(sl);
            return NULL;
        }
        sl->base = m;
        sl->stack_size = CIO_DEFAULT_STACK_SIZE;
        sl->carved = 0;
        sl->next = p->slabs;
        p->slabs = sl;
    }
    char *lo = sl->base + (size_t)sl->carved++ * sl->stack_size;
    return stack_init(lo, sl->stack_size, 1);
}

cio__stack *cio__stack_get(cio__stack_pool *p, size_t size)
{
    cio__stack *s;
    if (size == 0 || size == CIO_DEFAULT_STACK_SIZE) {
        s = p->free;
        if (s) {
            p->free = s->next;
            p->nfree--;
        } else {
            s = slab_carve(p);
        }
    } else {
        if (size > CIO__STACK_MAX)
            return NULL; /* the caller reports -ENOMEM */
        size = round_size(size);
        void *m = mmap(NULL, size, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        s = m == MAP_FAILED ? NULL : stack_init(m, size, 0);
    }
    if (s)
        p->live++;
    return s;
}

static void stack_unmap(cio__stack *s)
{
    VG_DEREGISTER(s);
    if (s->kind == CIO__GUARD_MPROTECT)
        atomic_fetch_sub(&mprotect_guards, 1);
    munmap(s->lo, s->size);
}

void cio__stack_put(cio__stack_pool *p, cio__stack *s)
{
    p->live--;
    if (!s->pooled) {
        stack_unmap(s);
        return;
    }
    /* LIFO reuse keeps the hottest stack's pages in cache. */
    s->next = p->free;
    p->free = s;
    p->nfree++;
}

void cio__stack_pool_close(cio__stack_pool *p)
{
    struct cio__slab *sl = p->slabs;
    while (sl) {
        struct cio__slab *next = sl->next;
        for (unsigned i = 0; i < sl->carved; i++) {
            cio__stack *s = (cio__stack *)(sl->base + (size_t)(i + 1) * sl->stack_size - 64);
            if (s->kind == CIO__GUARD_MPROTECT)
                atomic_fetch_sub(&mprotect_guards, 1);
            VG_DEREGISTER(s);
        }
        munmap(sl->base, (size_t)SLAB_STACKS * sl->stack_size);
        cio__free(sl);
        sl = next;
    }
    p->slabs = NULL;
    p->free = NULL;
    p->nfree = 0;
}

void *cio__stack_top(cio__stack *s)
{
    return (void *)((uintptr_t)s & ~(uintptr_t)15);
}

/* ------------------------------------------------------------------------ */
/* Overflow reports                                                          */
/* ------------------------------------------------------------------------ */

_Thread_local cio__stack *cio__stack_thread CIO__TLS_IE;
static _Atomic(cio__stack_locator) locator;

void cio__stack_set_locator(cio__stack_locator fn)
{
    atomic_store_explicit(&locator, fn, memory_order_relaxed);
}

/* The stack running on this thread (called from the signal handler). */
static const cio__stack *running_stack(void)
{
    cio__stack_locator fn = atomic_load_explicit(&locator, memory_order_relaxed);
    return fn ? fn() : cio__stack_thread;
}

static struct sigaction prev_segv;
static pthread_once_t handler_once = PTHREAD_ONCE_INIT;
static _Thread_local int altstack_done;
static int altstack_key_ok;

/* Async-signal-safe formatting helpers. */
static size_t put_str(char *buf, size_t at, size_t cap, const char *s)
{
    while (*s && at + 1 < cap)
        buf[at++] = *s++;
    return at;
}

static size_t put_num(char *buf, size_t at, size_t cap, uint64_t v)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n && at + 1 < cap)
        buf[at++] = tmp[--n];
    return at;
}

static void report_overflow(const char *kind, const char *name, uint64_t id, size_t size)
{
    char buf[256];
    size_t n = put_str(buf, 0, sizeof buf, "cio: stack overflow in ");
    n = put_str(buf, n, sizeof buf, kind);
    n = put_str(buf, n, sizeof buf, " '");
    if (name) {
        n = put_str(buf, n, sizeof buf, name);
    } else {
        n = put_str(buf, n, sizeof buf, "Task-");
        n = put_num(buf, n, sizeof buf, id);
    }
    n = put_str(buf, n, sizeof buf, "' (stack size ");
    n = put_num(buf, n, sizeof buf, size);
    n = put_str(buf, n, sizeof buf, " bytes)\n");
    ssize_t r = write(STDERR_FILENO, buf, n);
    (void)r;
}

/* Reports an overflow of s, naming its owner (Task-ID for an unnamed task). */
static void report_stack(const cio__stack *s)
{
    const cio__stack_owner *o = &s->owner;
    report_overflow(o->kind ? o->kind : "coroutine", o->name ? *o->name : NULL,
                    o->id ? *o->id : 0, s->size);
}

static void segv_handler(int sig, siginfo_t *si, void *uctx)
{
    const cio__stack *s = running_stack();
    if (s) {
        char *a = si->si_addr;
        if (a >= s->lo && a < s->lo + s->guard) {
            report_stack(s);
            /* Die of the signal: the faulting access runs again with the
             * default action restored. */
            signal(SIGSEGV, SIG_DFL);
            return;
        }
    }
    /* Not ours: hand it to whoever was installed before us. */
    if ((prev_segv.sa_flags & SA_SIGINFO) && prev_segv.sa_sigaction) {
        prev_segv.sa_sigaction(sig, si, uctx);
    } else if (prev_segv.sa_handler != SIG_DFL && prev_segv.sa_handler != SIG_IGN) {
        prev_segv.sa_handler(sig);
    } else {
        signal(SIGSEGV, SIG_DFL);
    }
}

/*
 * The alternate signal stack of a thread is unmapped when the thread exits
 * (through a key destructor), so threads that ran a loop leak nothing.
 */
static pthread_key_t altstack_key;

static void altstack_release(void *m)
{
    stack_t ss = {.ss_sp = NULL, .ss_size = 0, .ss_flags = SS_DISABLE};
    sigaltstack(&ss, NULL);
    munmap(m, ALTSTACK_BYTES);
}

static void install_once(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = segv_handler;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &prev_segv);
    altstack_key_ok = pthread_key_create(&altstack_key, altstack_release) == 0;
}

void cio__stack_install_handler(void)
{
    pthread_once(&handler_once, install_once);
    if (altstack_done)
        return;
    altstack_done = 1;
    stack_t cur;
    if (sigaltstack(NULL, &cur) == 0 && !(cur.ss_flags & SS_DISABLE))
        return; /* the thread already has one (e.g. a sanitizer's) */
    if (!altstack_key_ok)
        return; /* without a way to release it, do not map one per thread */
    void *m = mmap(NULL, ALTSTACK_BYTES, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return; /* overflows are then reported by the default action only */
    stack_t ss = {.ss_sp = m, .ss_size = ALTSTACK_BYTES, .ss_flags = 0};
    if (sigaltstack(&ss, NULL) != 0 || pthread_setspecific(altstack_key, m) != 0) {
        ss.ss_flags = SS_DISABLE;
        sigaltstack(&ss, NULL);
        munmap(m, ALTSTACK_BYTES);
    }
}

void cio__stack_check(const cio__stack *s, const void *sp)
{
    const uint64_t *c = (const uint64_t *)(s->lo + s->guard) - 8;
    int broken = (const char *)sp < s->lo + s->guard;
    for (int i = 0; i < 8 && !broken; i++)
        broken = c[i] != CIO__STACK_CANARY;
    if (broken) {
        report_stack(s);
        abort();
    }
}
