/*
 * Timers: a 4-ary min-heap of handles keyed by (deadline, insertion
 * sequence), so equal deadlines fire in FIFO order. Entries carry the
 * deadline inline, so comparisons touch the heap array only; the handle is
 * dereferenced on ties and to record its position (for O(log n) removal).
 * A 4-ary heap is half as deep as a binary one and its children share cache
 * lines, which matters at a million timers.
 */
#include "loop.h"

static inline bool entry_less(const cio__theap_entry *a, const cio__theap_entry *b)
{
    return a->when < b->when || (a->when == b->when && a->h->seq_ < b->h->seq_);
}

static inline void place(cio__theap *hp, uint32_t i, cio__theap_entry e)
{
    hp->v[i] = e;
    e.h->heap_idx_ = i;
}

static void sift_up(cio__theap *hp, uint32_t i)
{
    cio__theap_entry e = hp->v[i];
    while (i > 0) {
        uint32_t parent = (i - 1) / 4;
        if (!entry_less(&e, &hp->v[parent]))
            break;
        place(hp, i, hp->v[parent]);
        i = parent;
    }
    place(hp, i, e);
}

static void sift_down(cio__theap *hp, uint32_t i)
{
    cio__theap_entry e = hp->v[i];
    for (;;) {
        uint32_t first = 4 * i + 1;
        if (first >= hp->n)
            break;
        uint32_t best = first, end = first + 4 < hp->n ? first + 4 : hp->n;
        for (uint32_t c = first + 1; c < end; c++)
            if (entry_less(&hp->v[c], &hp->v[best]))
                best = c;
        if (!entry_less(&hp->v[best], &e))
            break;
        place(hp, i, hp->v[best]);
        i = best;
    }
    place(hp, i, e);
}

int cio__timer_insert(cio__theap *hp, cio_handle_t *h)
{
    if (hp->n == hp->cap) {
        uint32_t cap = hp->cap ? hp->cap * 2 : 64;
        cio__theap_entry *v = cio__realloc(hp->v, (size_t)cap * sizeof(*v));
        if (!v)
            return -ENOMEM;
        hp->v = v;
        hp->cap = cap;
    }
    uint32_t i = hp->n++;
    hp->v[i].when = h->when_;
    hp->v[i].h = h;
    sift_up(hp, i);
    return 0;
}

void cio__timer_remove(cio__theap *hp, cio_handle_t *h)
{
    uint32_t i = h->heap_idx_;
    uint32_t last = --hp->n;
    if (i != last) {
        hp->v[i] = hp->v[last];
        if (i > 0 && entry_less(&hp->v[i], &hp->v[(i - 1) / 4]))
            sift_up(hp, i);
        else
            sift_down(hp, i);
    }
}

cio_handle_t *cio__timer_pop_expired(cio__theap *hp, int64_t now)
{
    if (!hp->n || hp->v[0].when > now)
        return NULL;
    cio_handle_t *h = hp->v[0].h;
    cio__timer_remove(hp, h);
    return h;
}

void cio__timer_free(cio__theap *hp)
{
    cio__free(hp->v);
    hp->v = NULL;
    hp->n = hp->cap = 0;
}
