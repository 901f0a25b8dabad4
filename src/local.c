/*
 * Task-local values (contextvars): each task points to an immutable,
 * reference-counted array of (key, value) pairs. Spawning shares the
 * parent's array (one increment); setting a value copies it (copy on
 * write), so neither task ever sees the other's later changes.
 */
#include "task.h"

struct cio__locals {
    int refs;
    size_t n;
    struct {
        const void *key;
        void *value;
    } kv[];
};

cio__locals *cio__locals_ref(cio__locals *l)
{
    if (l)
        l->refs++;
    return l;
}

void cio__locals_unref(cio__locals *l)
{
    if (l && --l->refs == 0)
        cio__free(l);
}

int cio_local_set(const void *key, void *value)
{
    cio__task *t = cio__current ? cio__task_of(cio__current) : NULL;
    if (!t)
        return -EPERM;
    if (!key)
        return -EINVAL;
    cio__locals *old = t->locals;
    size_t n = old ? old->n : 0, at = n;
    for (size_t i = 0; i < n; i++)
        if (old->kv[i].key == key)
            at = i;
    size_t nn = at == n ? n + 1 : n;
    cio__locals *l = cio__malloc(sizeof(*l) + nn * sizeof(l->kv[0]));
    if (!l)
        return -ENOMEM;
    l->refs = 1;
    l->n = nn;
    if (n)
        memcpy(l->kv, old->kv, n * sizeof(l->kv[0]));
    l->kv[at].key = key;
    l->kv[at].value = value;
    cio__locals_unref(old);
    t->locals = l;
    return 0;
}

void *cio_local_get(const void *key, void *dflt)
{
    cio__task *t = cio__current ? cio__task_of(cio__current) : NULL;
    if (!t || !t->locals)
        return dflt;
    for (size_t i = 0; i < t->locals->n; i++)
        if (t->locals->kv[i].key == key)
            return t->locals->kv[i].value;
    return dflt;
}
