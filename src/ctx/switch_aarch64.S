/*
 * Context switch for AArch64 (AAPCS64).
 *
 * cio__ctx_switch(void **save, void *to) saves x19-x30 (x29 is the frame
 * pointer, x30 the return address), d8-d15 and fpcr in a 176-byte frame on
 * the current stack, stores sp in *save, loads `to` and restores the same
 * set. No system call is made. fpcr (rounding mode) is switched only with
 * CIO_CTX_SAVE_FPU, as on x86-64 (see switch_x86_64.S for why).
 *
 * Frame layout (offsets from the saved sp):
 *   0 x19 x20 | 16 x21 x22 | 32 x23 x24 | 48 x25 x26 | 64 x27 x28
 *   80 x29 x30 | 96 d8 d9 | 112 d10 d11 | 128 d12 d13 | 144 d14 d15
 *   160 fpcr | 168 padding
 *
 * Built with -mbranch-protection (BTI and/or PAC), the file marks itself
 * compatible with a GNU property note, as the compiler does for every C
 * object: one object without the note makes the linker drop the marking of
 * the whole library. The two global functions then start with `bti c`
 * (written as hint #34, a no-op on cores without BTI) so that they may also
 * be reached by an indirect call, e.g. through a linker veneer. The switch
 * itself needs nothing more: x30 is saved and restored as the caller left
 * it (signed or not, the caller authenticates it on its own stack), and the
 * trampoline is entered by `ret`, which BTI does not check.
 */
#if defined(__ARM_FEATURE_BTI_DEFAULT) && __ARM_FEATURE_BTI_DEFAULT
#define CIO_BTI_C hint #34
#define CIO_FEATURE_BTI 1
#else
#define CIO_BTI_C
#define CIO_FEATURE_BTI 0
#endif
#if defined(__ARM_FEATURE_PAC_DEFAULT) && __ARM_FEATURE_PAC_DEFAULT
#define CIO_FEATURE_PAC 2
#else
#define CIO_FEATURE_PAC 0
#endif
#define CIO_FEATURES (CIO_FEATURE_BTI | CIO_FEATURE_PAC)

    .text
    .globl  cio__ctx_switch
    .hidden cio__ctx_switch
    .type   cio__ctx_switch, %function
    .p2align 4
cio__ctx_switch:
    CIO_BTI_C
    sub     sp, sp, #176
    stp     x19, x20, [sp, #0]
    stp     x21, x22, [sp, #16]
    stp     x23, x24, [sp, #32]
    stp     x25, x26, [sp, #48]
    stp     x27, x28, [sp, #64]
    stp     x29, x30, [sp, #80]
    stp     d8,  d9,  [sp, #96]
    stp     d10, d11, [sp, #112]
    stp     d12, d13, [sp, #128]
    stp     d14, d15, [sp, #144]
#ifdef CIO_CTX_SAVE_FPU
    mrs     x9, fpcr
    str     x9, [sp, #160]
#endif
    mov     x9, sp
    str     x9, [x0]
    mov     sp, x1
    ldp     x19, x20, [sp, #0]
    ldp     x21, x22, [sp, #16]
    ldp     x23, x24, [sp, #32]
    ldp     x25, x26, [sp, #48]
    ldp     x27, x28, [sp, #64]
    ldp     x29, x30, [sp, #80]
    ldp     d8,  d9,  [sp, #96]
    ldp     d10, d11, [sp, #112]
    ldp     d12, d13, [sp, #128]
    ldp     d14, d15, [sp, #144]
#ifdef CIO_CTX_SAVE_FPU
    ldr     x9, [sp, #160]
    msr     fpcr, x9
#endif
    add     sp, sp, #176
    ret
    .size   cio__ctx_switch, .-cio__ctx_switch

/* First code on a new stack: entry in x19, argument in x20; never returns. */
    .type   cio__ctx_trampoline, %function
    .p2align 4
cio__ctx_trampoline:
    mov     x0, x20
    blr     x19
    brk     #0
    .size   cio__ctx_trampoline, .-cio__ctx_trampoline

/* void *cio__ctx_make(void *top, void (*entry)(void *), void *arg) */
    .globl  cio__ctx_make
    .hidden cio__ctx_make
    .type   cio__ctx_make, %function
    .p2align 4
cio__ctx_make:
    CIO_BTI_C
    and     x0, x0, #~15
    sub     x0, x0, #176
    stp     x1, x2, [x0, #0]          /* x19 = entry, x20 = arg */
    stp     xzr, xzr, [x0, #16]
    stp     xzr, xzr, [x0, #32]
    stp     xzr, xzr, [x0, #48]
    stp     xzr, xzr, [x0, #64]
    adr     x9, cio__ctx_trampoline
    stp     xzr, x9, [x0, #80]        /* x29 = 0 ends frame walks, x30 */
    stp     xzr, xzr, [x0, #96]
    stp     xzr, xzr, [x0, #112]
    stp     xzr, xzr, [x0, #128]
    stp     xzr, xzr, [x0, #144]
    stp     xzr, xzr, [x0, #160]      /* fpcr = 0: round to nearest */
    ret
    .size   cio__ctx_make, .-cio__ctx_make

    .section .note.GNU-stack,"",%progbits

/*
 * The GNU property note (NT_GNU_PROPERTY_TYPE_0) with
 * GNU_PROPERTY_AARCH64_FEATURE_1_AND set to the features built for; emitted
 * only when there is at least one.
 */
#if CIO_FEATURES
    .pushsection .note.gnu.property, "a"
    .p2align 3
    .long   4                         /* name size: "GNU" and its NUL */
    .long   16                        /* descriptor size */
    .long   5                         /* NT_GNU_PROPERTY_TYPE_0 */
    .asciz  "GNU"
    .long   0xc0000000                /* GNU_PROPERTY_AARCH64_FEATURE_1_AND */
    .long   4                         /* property data size */
    .long   CIO_FEATURES              /* bit 0 BTI, bit 1 PAC */
    .long   0                         /* padding to 8 bytes */
    .popsection
#endif
