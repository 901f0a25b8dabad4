/*
 * Portable fallback context switch on ucontext (selected at build time with
 * -DCIO_CTX=ucontext or on CPUs without an assembly switch). swapcontext
 * saves and restores the signal mask with a system call, so this is several
 * times slower than the assembly versions; it exists for portability only.
 */
#include "ctx.h"

#include <ucontext.h>

/*
 * The saved "stack pointer" is the address of a ucontext_t that lives in the
 * frame of the suspended cio__ctx_switch call, valid until it is resumed.
 */
void cio__ctx_switch(void **save, void *to)
{
    ucontext_t self;
    *save = &self;
    swapcontext(&self, (ucontext_t *)to);
}

static void trampoline(unsigned hi, unsigned lo, unsigned ehi, unsigned elo)
{
    void *arg = (void *)(((uintptr_t)hi << 32) | lo);
    void (*entry)(void *) = (void (*)(void *))(((uintptr_t)ehi << 32) | elo);
    entry(arg);
    abort(); /* entry functions never return */
}

void *cio__ctx_make(void *top, void (*entry)(void *), void *arg)
{
    uintptr_t t = ((uintptr_t)top - sizeof(ucontext_t)) & ~(uintptr_t)63;
    ucontext_t *uc = (ucontext_t *)t;
    uintptr_t a = (uintptr_t)arg, e = (uintptr_t)entry;

    getcontext(uc);
    /* makecontext only uses ss_sp + ss_size as the initial top; the real
     * stack continues below, down to the guard. */
    uc->uc_stack.ss_sp = (char *)uc - 4096;
    uc->uc_stack.ss_size = 4096 - 64;
    uc->uc_link = NULL;
    makecontext(uc, (void (*)(void))trampoline, 4, (unsigned)(a >> 32),
                (unsigned)a, (unsigned)(e >> 32), (unsigned)e);
    return uc;
}
