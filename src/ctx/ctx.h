/*
 * Layer 1, context switch (src/ctx/): save the callee-saved registers, swap
 * stacks, restore. One implementation per architecture plus ucontext.
 */
#ifndef CIO_CTX_H
#define CIO_CTX_H

#include "../base.h"

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

#if defined(__x86_64__)
/*
 * Generator switches of x86-64 (switch_x86_64.S; gen.c's jump mode):
 * cio__gen_jump saves a switch frame, stores the stack pointer in *save and
 * resumes the frame at `to` with `value` as the return value of the call
 * that saved it; cio__gen_finish resumes the frame at `to` with the value of
 * fn(arg), called on that stack below the frame.
 */
int cio__gen_jump(void **save, void *to, int value);
_Noreturn void cio__gen_finish(void *to, int (*fn)(void *), void *arg);
#endif

#endif /* CIO_CTX_H */
