/*
 * The one allocator behind all of cio's heap memory. Users may install their
 * own functions (as libuv's uv_replace_allocator allows), for accounting or
 * to inject failures in tests; cio never calls malloc & co. directly.
 */
#include "base.h"

#include <math.h>

typedef struct allocator {
    cio_malloc_fn malloc_fn;
    cio_realloc_fn realloc_fn;
    cio_calloc_fn calloc_fn;
    cio_free_fn free_fn;
} allocator;

/* Read on every allocation from any thread; written only by
 * cio_replace_allocator, which must run before cio is used. */
static allocator cur = {malloc, realloc, calloc, free};

int cio_replace_allocator(cio_malloc_fn m, cio_realloc_fn r, cio_calloc_fn c, cio_free_fn f)
{
    if (!m || !r || !c || !f)
        return -EINVAL;
    cur = (allocator){m, r, c, f};
    return 0;
}

void *cio__malloc(size_t n)
{
    return cur.malloc_fn(n ? n : 1);
}

void *cio__calloc(size_t count, size_t n)
{
    return cur.calloc_fn(count ? count : 1, n ? n : 1);
}

void *cio__realloc(void *p, size_t n)
{
    return cur.realloc_fn(p, n ? n : 1);
}

void cio__free(void *p)
{
    if (p)
        cur.free_fn(p);
}

char *cio__strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = cio__malloc(n);
    if (p)
        memcpy(p, s, n);
    return p;
}

int cio__deadline_after(double delay, int64_t *out)
{
    if (isnan(delay))
        return -EINVAL;
    if (delay <= 0) {
        *out = cio__clock_ns();
        return 0;
    }
    if (isinf(delay) || delay > 9.0e9) { /* ~285 years: no deadline */
        *out = CIO__NO_DEADLINE;
        return 0;
    }
    *out = cio__clock_ns() + (int64_t)(delay * 1e9);
    return 0;
}
