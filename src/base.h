/*
 * Layer 0, base: what every other layer uses. Compiler helpers, the one
 * allocator that all of cio's memory goes through (replaceable by users with
 * cio_replace_allocator), the monotonic clock and the error table (error.c).
 *
 * The layers of cio, bottom up (docs/design.md has the full table, and the
 * test `layers` fails when a file calls into a layer above its own):
 *   0 base    base.h   alloc.c error.c
 *   1 ctx     ctx.h    ctx/switch_*.S ctx/ctx_ucontext.c
 *   2 stack   stack.h  stack.c
 *   3 loop    loop.h   loop.c timer.c fd.c backend_epoll.c backend_uring.c
 *   4 wait    wait.h   wait.c
 *   5 io      io.h     io.c
 *   6 future  future.h future.c
 *   7 task    task.h   task.c local.c
 *   8 compose          scope.c combinators.c group.c
 *   9 sync    waitq.h  sync.c queue.c gen.c
 *  10 pool             pool_thread.c
 *  11 runner           runner.c
 * A file includes only the header of its own layer (which includes those
 * below it). Layers 8 and up share no internal declarations, so they have
 * no header of their own.
 */
#ifndef CIO_BASE_H
#define CIO_BASE_H

#include "cio.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CIO__NO_DEADLINE INT64_MAX

/*
 * ABI: the sizes of the caller-storage types; changing one is an ABI break
 * (bump the soname). Users embed these structures and allocate them, so
 * their size is compiled into programs. The figures hold on the LP64
 * targets cio supports (x86-64, AArch64): add fields to an option struct
 * through its reserved_ room, not by growing it.
 */
#if UINTPTR_MAX == 0xffffffffffffffffu
#define CIO__ABI_SIZE(type, n) \
    _Static_assert(sizeof(type) == (n), "ABI: sizeof(" #type ") changed")
CIO__ABI_SIZE(cio_handle_t, 64);
CIO__ABI_SIZE(cio_loop_opts_t, 40);
CIO__ABI_SIZE(cio_spawn_opts_t, 32);
CIO__ABI_SIZE(cio_scope_t, 32);
CIO__ABI_SIZE(cio_as_completed_t, 8);
CIO__ABI_SIZE(cio_run_opts_t, 40);
CIO__ABI_SIZE(cio_waitq_t, 16);
CIO__ABI_SIZE(cio_lock_t, 32);
CIO__ABI_SIZE(cio_event_t, 24);
CIO__ABI_SIZE(cio_cond_t, 56);
CIO__ABI_SIZE(cio_sem_t, 24);
CIO__ABI_SIZE(cio_barrier_t, 48);
CIO__ABI_SIZE(cio_queue_t, 120);
CIO__ABI_SIZE(cio_gen_opts_t, 32);
#undef CIO__ABI_SIZE
#endif

#if defined(__GNUC__)
#define cio__likely(x) __builtin_expect(!!(x), 1)
#define cio__unlikely(x) __builtin_expect(!!(x), 0)
#else
#define cio__likely(x) (x)
#define cio__unlikely(x) (x)
#endif

/* The address of the struct that holds `ptr` as its member `member`. */
#define cio__container_of(ptr, type, member) \
    ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

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
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
#endif

/* ------------------------------------------------------------------------ */
/* The allocator (alloc.c)                                                   */
/* ------------------------------------------------------------------------ */

/*
 * Every heap allocation of cio goes through these four, which call the
 * functions installed with cio_replace_allocator (the C library's by
 * default). They behave as malloc/calloc/realloc/free.
 */
void *cio__malloc(size_t n);
void *cio__calloc(size_t count, size_t n);
void *cio__realloc(void *p, size_t n);
void cio__free(void *p);
/* A copy of the string s (NULL when out of memory). */
char *cio__strdup(const char *s);

/* ------------------------------------------------------------------------ */
/* Time                                                                       */
/* ------------------------------------------------------------------------ */

/* CLOCK_MONOTONIC in nanoseconds. */
static inline int64_t cio__clock_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/*
 * Converts a relative delay in seconds to an absolute deadline in *out:
 * now for delay <= 0, CIO__NO_DEADLINE for +inf or more than ~285 years.
 * Returns 0, or -EINVAL for NaN.
 */
int cio__deadline_after(double delay, int64_t *out);

#endif /* CIO_BASE_H */
