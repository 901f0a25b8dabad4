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

#endif /* CIO_CTX_H */
