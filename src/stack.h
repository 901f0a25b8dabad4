/*
 * Layer 2, stacks (stack.c): pooled, lazily committed, guarded stacks for
 * coroutines and generators, and the SIGSEGV reporter that names the owner
 * of a stack that overflowed. This layer knows nothing of tasks: a stack
 * carries an owner record (kind, name, id) that its user fills in, and the
 * switch code of the layers above tells it which stack runs (a locator).
 */
#ifndef CIO_STACK_H
#define CIO_STACK_H

#include "ctx/ctx.h"

enum cio__guard_kind {
    CIO__GUARD_MADVISE = 1, /* MADV_GUARD_INSTALL page: faults, no extra VMA */
    CIO__GUARD_MPROTECT,    /* PROT_NONE page: faults, one VMA split */
    CIO__GUARD_CANARY       /* checked canary words + sp bound at switches */
};

/*
 * Who runs on a stack, for overflow reports. Read from a signal handler, so
 * it holds pointers to the owner's own fields rather than copies: a task
 * renamed later is reported under its new name.
 */
typedef struct cio__stack_owner {
    const char *kind;              /* "task", "generator" */
    const char *const *name;       /* the owner's name field (may hold NULL) */
    const uint64_t *id;            /* printed as Task-ID when the name is NULL */
} cio__stack_owner;

/* Lives at the top of its own stack memory. */
typedef struct cio__stack {
    struct cio__stack *next; /* free list */
    char *lo;                /* lowest address of the region (guard first) */
    size_t size;             /* whole region, guard included */
    size_t guard;            /* bytes of guard at lo */
    cio__stack_owner owner;  /* set by whoever took the stack */
    uint8_t kind;            /* enum cio__guard_kind */
    uint8_t pooled;          /* carved from a slab of default-size stacks */
    unsigned valgrind_id;    /* with CIO_VALGRIND: the stack's registration */
} cio__stack;

typedef struct cio__stack_pool {
    cio__stack *free;        /* default-size stacks ready for reuse */
    size_t nfree;
    struct cio__slab *slabs; /* slabs of default-size stacks */
    size_t live;             /* stacks handed out */
} cio__stack_pool;

#define CIO__STACK_CANARY 0x6369f5ac6b2d0e11ull

/*
 * Takes a stack of `size` bytes (0: the default) from the pool. Returns NULL
 * when no memory can be mapped (or size is absurd); the caller reports
 * -ENOMEM.
 */
cio__stack *cio__stack_get(cio__stack_pool *p, size_t size);
/* Gives s back (pooled for reuse, or unmapped). */
void cio__stack_put(cio__stack_pool *p, cio__stack *s);
/* Unmaps every slab of the pool (no stack may be live). */
void cio__stack_pool_close(cio__stack_pool *p);
/* The usable top of a stack (16-byte aligned, below the descriptor). */
void *cio__stack_top(cio__stack *s);

/*
 * Which stack runs now, for the overflow reporter: the layer that switches
 * coroutines installs a locator (read only when a fault is reported, so the
 * switch path pays nothing); outside coroutines, cio__stack_thread is the
 * stack of a generator driven from plain code (gen.c), NULL for the
 * thread's own.
 */
extern _Thread_local cio__stack *cio__stack_thread CIO__TLS_IE;
typedef cio__stack *(*cio__stack_locator)(void);
void cio__stack_set_locator(cio__stack_locator fn);

/* Installs the SIGSEGV reporter and this thread's alternate signal stack
 * (released when the thread exits). */
void cio__stack_install_handler(void);
/* Called at each switch away from a canary-guarded stack: reports and aborts
 * when the canary is broken or sp is below the stack. */
void cio__stack_check(const cio__stack *s, const void *sp);

#endif /* CIO_STACK_H */
