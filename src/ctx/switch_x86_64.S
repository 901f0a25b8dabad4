/*
 * Context switch for x86-64 System V.
 *
 * cio__ctx_switch(void **save, void *to): pushes the callee-saved registers
 * (rbp, rbx, r12-r15) on the current stack, stores the stack pointer in
 * *save, switches to `to` and pops the same set from there. Caller-saved
 * registers need no saving: the switch is an ordinary call as far as the
 * compiler knows. No system call is made.
 *
 * The floating-point control words (MXCSR, x87 CW) are saved and restored
 * only when built with CIO_CTX_SAVE_FPU (CMake option of the same name).
 * Reading them costs about 9 ns per switch on the machine we measure on
 * (2.5 ns for the whole switch without them, 11.3 ns with), so by default the
 * rounding mode and exception masks are per thread, shared by all tasks: a
 * task that changes them must restore them before its next await point.
 *
 * The switch returns with an indirect jump rather than `ret`: after a stack
 * swap the return-stack predictor is always wrong, while the indirect-branch
 * predictor learns the ping-pong pattern of two coroutines.
 *
 * Frame layout at a saved stack pointer (low to high addresses):
 *   [+0 mxcsr, x87 CW, padding: 8 bytes, only with CIO_CTX_SAVE_FPU]
 *   r15, r14, r13, r12, rbx, rbp, resume address
 */
#ifdef CIO_CTX_SAVE_FPU
#define FPU_BYTES 8
#else
#define FPU_BYTES 0
#endif

#ifdef CIO_CTX_SAVE_FPU
#define FPU_SAVE subq $8, %rsp; stmxcsr (%rsp); fnstcw 4(%rsp)
#define FPU_LOAD ldmxcsr (%rsp); fldcw 4(%rsp); addq $8, %rsp
#else
#define FPU_SAVE
#define FPU_LOAD
#endif

/* The frame of every switch (see the layout above): saved on the stack being
 * left, restored from the one resumed, which continues at its resume
 * address with an indirect jump. */
.macro SAVE_FRAME
    pushq   %rbp
    pushq   %rbx
    pushq   %r12
    pushq   %r13
    pushq   %r14
    pushq   %r15
.endm

.macro RESUME_FRAME
    popq    %r15
    popq    %r14
    popq    %r13
    popq    %r12
    popq    %rbx
    popq    %rbp
    popq    %rcx
    jmpq    *%rcx
.endm

    .text
    .globl  cio__ctx_switch
    .hidden cio__ctx_switch
    .type   cio__ctx_switch, @function
    .p2align 4
cio__ctx_switch:
    SAVE_FRAME
    FPU_SAVE
    movq    %rsp, (%rdi)
    movq    %rsi, %rsp
    FPU_LOAD
    RESUME_FRAME
    .size   cio__ctx_switch, .-cio__ctx_switch

/*
 * First code run on a new stack: the frame built by cio__ctx_make resumes
 * here with the entry function in r12 and its argument in r13. The stack is
 * 16-byte aligned at this point, so the call leaves the callee with the
 * alignment the ABI requires. The entry function never returns.
 */
    .type   cio__ctx_trampoline, @function
    .p2align 4
cio__ctx_trampoline:
    movq    %r13, %rdi
    callq   *%r12
    ud2
    .size   cio__ctx_trampoline, .-cio__ctx_trampoline

/*
 * void *cio__ctx_make(void *top, void (*entry)(void *), void *arg)
 * Builds a switch frame below `top` (rounded down to 16) whose resume
 * address is the trampoline, and returns its stack pointer.
 */
    .globl  cio__ctx_make
    .hidden cio__ctx_make
    .type   cio__ctx_make, @function
    .p2align 4
cio__ctx_make:
    movq    %rdi, %rax
    andq    $-16, %rax
    subq    $24, %rax                 /* resume slot, 8 mod 16 */
    leaq    cio__ctx_trampoline(%rip), %rcx
    movq    %rcx, (%rax)
    movq    $0, -8(%rax)              /* rbp: ends frame-pointer walks */
    movq    $0, -16(%rax)             /* rbx */
    movq    %rsi, -24(%rax)           /* r12 = entry */
    movq    %rdx, -32(%rax)           /* r13 = arg */
    movq    $0, -40(%rax)             /* r14 */
    movq    $0, -48(%rax)             /* r15 */
#ifdef CIO_CTX_SAVE_FPU
    movl    $0x1F80, -56(%rax)        /* default mxcsr */
    movl    $0x037F, -52(%rax)        /* default x87 control word */
#endif
    subq    $(48 + FPU_BYTES), %rax
    ret
    .size   cio__ctx_make, .-cio__ctx_make

/*
 * The generator switches (gen.c's jump mode), on the same frame layout:
 *
 * int cio__gen_jump(void **save, void *to, int value): saves the
 * callee-saved registers and the resume address on the current stack (the
 * frame cio__ctx_switch uses), stores the stack pointer in *save, switches
 * to `to` and resumes there with `value` as the return value of the call
 * that saved that frame. It resumes straight into the other side's caller
 * with an indirect jump: neither side executes a `ret` after a stack swap.
 *
 * void cio__gen_finish(void *to, int (*fn)(void *), void *arg): switches to
 * the saved frame `to`, calls fn(arg) on that stack (below the frame, which
 * is free), then resumes the frame with fn's return value. A finished body
 * uses it so that its stack is released from the caller's stack.
 */

    .globl  cio__gen_jump
    .hidden cio__gen_jump
    .type   cio__gen_jump, @function
    .p2align 4
cio__gen_jump:
    SAVE_FRAME
    FPU_SAVE
    movq    %rsp, (%rdi)
    movq    %rsi, %rsp
    FPU_LOAD
    movl    %edx, %eax
    RESUME_FRAME
    .size   cio__gen_jump, .-cio__gen_jump

    .globl  cio__gen_finish
    .hidden cio__gen_finish
    .type   cio__gen_finish, @function
    .p2align 4
cio__gen_finish:
    movq    %rdi, %rsp
    movq    %rdi, %rbx                /* rbx is reloaded from the frame afterwards */
    andq    $-16, %rsp
    movq    %rdx, %rdi
    callq   *%rsi
    movq    %rbx, %rsp
    FPU_LOAD
    RESUME_FRAME
    .size   cio__gen_finish, .-cio__gen_finish

    .section .note.GNU-stack,"",@progbits
