/*
 * A counting allocator that fails on request, for allocation-failure tests.
 *
 * Install it once, at the start of a test and before any other cio call
 * (every check test is a fresh forked process, so that is the test's first
 * line):
 *
 *     ck_assert_int_eq(cio_fail_alloc_install(), 0);
 *
 * It then counts, across all threads:
 *   - the live blocks: those it handed out (malloc, calloc, or realloc of
 *     NULL) and that were not freed yet; cio_fail_alloc_live() reads it. A
 *     test compares it with a value taken before (or with 0 once every cio
 *     object is gone) to catch a leak on a failure path.
 *   - the allocations since arming, numbered from 1; cio_fail_alloc_count()
 *     reads it. Nothing is counted while disarmed (the initial state).
 *
 * cio_fail_alloc_arm(at, sticky) restarts the count and makes allocation
 * number `at` return NULL (0: none fail, only count), and with `sticky` every
 * later one as well (memory stays exhausted). cio_fail_alloc_disarm() stops
 * failing and counting; cio_fail_alloc_injected() then still tells whether
 * the armed failure was reached. The usual loop fails each allocation of a
 * call in turn until the call gets through all of them:
 *
 *     for (long n = 1;; n++) {
 *         cio_fail_alloc_arm(n, false);
 *         int rc = call();
 *         bool injected = cio_fail_alloc_injected();
 *         cio_fail_alloc_disarm();
 *         ... assert rc == -ENOMEM (or a recovered success) and no leak ...
 *         if (!injected)
 *             break;
 *     }
 */
#ifndef CIO_FAIL_ALLOC_H
#define CIO_FAIL_ALLOC_H

#include <cio.h>

#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>

static atomic_long cio_fa_live_, cio_fa_count_, cio_fa_at_;
static atomic_bool cio_fa_armed_, cio_fa_sticky_;

static inline void cio_fail_alloc_arm(long at, bool sticky)
{
    atomic_store(&cio_fa_armed_, false);
    atomic_store(&cio_fa_count_, 0);
    atomic_store(&cio_fa_at_, at);
    atomic_store(&cio_fa_sticky_, sticky);
    atomic_store(&cio_fa_armed_, true);
}

static inline void cio_fail_alloc_disarm(void)
{
    atomic_store(&cio_fa_armed_, false);
}

/* The allocations counted since the last arming. */
static inline long cio_fail_alloc_count(void)
{
    return atomic_load(&cio_fa_count_);
}

/* Whether the allocation to fail was reached since the last arming. */
static inline bool cio_fail_alloc_injected(void)
{
    long at = atomic_load(&cio_fa_at_);
    return at > 0 && atomic_load(&cio_fa_count_) >= at;
}

/* The blocks handed out and not freed yet. */
static inline long cio_fail_alloc_live(void)
{
    return atomic_load(&cio_fa_live_);
}

/* Counts one allocation and tells whether it is to fail. */
static inline bool cio_fa_fails_(void)
{
    if (!atomic_load(&cio_fa_armed_))
        return false;
    long n = atomic_fetch_add(&cio_fa_count_, 1) + 1;
    long at = atomic_load(&cio_fa_at_);
    return at > 0 && (n == at || (atomic_load(&cio_fa_sticky_) && n > at));
}

static inline void *cio_fa_malloc_(size_t n)
{
    if (cio_fa_fails_())
        return NULL;
    void *p = malloc(n);
    if (p)
        atomic_fetch_add(&cio_fa_live_, 1);
    return p;
}

static inline void *cio_fa_calloc_(size_t c, size_t n)
{
    if (cio_fa_fails_())
        return NULL;
    void *p = calloc(c, n);
    if (p)
        atomic_fetch_add(&cio_fa_live_, 1);
    return p;
}

/* A realloc of NULL is a new block; any other keeps the count. */
static inline void *cio_fa_realloc_(void *old, size_t n)
{
    if (cio_fa_fails_())
        return NULL;
    void *p = realloc(old, n);
    if (p && !old)
        atomic_fetch_add(&cio_fa_live_, 1);
    return p;
}

static inline void cio_fa_free_(void *p)
{
    if (p)
        atomic_fetch_sub(&cio_fa_live_, 1);
    free(p);
}

/* Makes cio allocate through this allocator; cio_replace_allocator's rules
 * apply (before any other cio call). Returns its result. */
static inline int cio_fail_alloc_install(void)
{
    return cio_replace_allocator(cio_fa_malloc_, cio_fa_realloc_, cio_fa_calloc_,
                                 cio_fa_free_);
}

#endif
