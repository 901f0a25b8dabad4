/*
 * Task groups (asyncio.TaskGroup): structured concurrency. The parent's
 * code between cio_group_new and cio_group_wait runs in the group's cancel
 * scope; the first child failure cancels the siblings and that scope, the
 * group waits for every child, and every failure is kept for the caller.
 */
#include "task.h"


struct cio_group {
    cio_scope_t scope;
    cio__coro *parent;
    cio_task_t **kids;
    size_t nkids, cap, pending;
    int *codes;            /* failures, in the order they happened */
    cio_task_t **failed;
    size_t nfailed;
    bool failing, waited, scope_open;
    cio__waiter *w;
};

int cio_group_new(cio_group_t **out)
{
    if (!out)
        return -EINVAL;
    *out = NULL;
    cio__coro *t = cio__current;
    if (!t)
        return -EPERM;
    cio_group_t *g = cio__calloc(1, sizeof(*g));
    if (!g)
        return -ENOMEM;
    g->parent = t;
    cio_scope_enter_at_ns(&g->scope, CIO__NO_DEADLINE, 0); /* in a task: 0 */
    g->scope_open = true;
    *out = g;
    return 0;
}

static void cancel_kids(cio_group_t *g)
{
    for (size_t i = 0; i < g->nkids; i++)
        cio_task_cancel(g->kids[i]);
}

static void kid_done(cio_future_t *f, void *arg)
{
    cio_group_t *g = arg;
    g->pending--;
    /* A cancelled child is not a failure (asyncio ignores CancelledError
     * of children); every other error is recorded. */
    if (f->status < 0 && f->status != -ECANCELED) {
        f->retrieved = 1;
        g->codes[g->nfailed] = f->status;
        g->failed[g->nfailed++] = f;
        if (!g->failing) {
            g->failing = true;
            cancel_kids(g);
            if (g->scope_open)
                cio_scope_cancel(&g->scope);
        }
    }
    if (g->w && g->pending == 0)
        cio__wake(g->w, 0);
}

static int grow(cio_group_t *g)
{
    size_t cap = g->cap ? g->cap * 2 : 8;
    cio_task_t **k = cio__realloc(g->kids, cap * sizeof(*k));
    if (!k)
        return -ENOMEM;
    g->kids = k;
    int *c = cio__realloc(g->codes, cap * sizeof(*c));
    if (!c)
        return -ENOMEM;
    g->codes = c;
    cio_task_t **fl = cio__realloc(g->failed, cap * sizeof(*fl));
    if (!fl)
        return -ENOMEM;
    g->failed = fl;
    g->cap = cap;
    return 0;
}

int cio_group_spawn(cio_task_t **out, cio_group_t *g, const char *name, cio_task_fn fn,
                    void *arg)
{
    if (out)
        *out = NULL;
    if (!g || g->waited || !fn)
        return -EINVAL;
    if (g->nkids == g->cap && grow(g))
        return -ENOMEM;
    /* A spawned child cannot be taken back (a task runs its body even when
     * cancelled before it starts), so a spawn that fails must fail before
     * the child exists: the node that ties the child to the group is taken
     * first. */
    void *node = cio__cbnode_take(g->parent->loop);
    if (!node)
        return -ENOMEM;
    cio_spawn_opts_t o = {.name = name};
    cio_task_t *t;
    int rc = cio_spawn_ex(&t, g->parent->loop, fn, arg, &o);
    if (rc) {
        cio__cbnode_give(g->parent->loop, node);
        return rc;
    }
    cio__future_on_done_node(t, node, kid_done, g);
    g->kids[g->nkids++] = t; /* the group holds the reference */
    g->pending++;
    if (g->failing)
        cio_task_cancel(t);
    if (out)
        *out = t;
    return 0;
}

int cio_group_wait(cio_group_t *g)
{
    cio__coro *t = cio__current;
    if (!g || g->waited)
        return -EINVAL;
    if (!t || t != g->parent)
        return -EPERM;
    if (g->scope_open) {
        cio_scope_exit(&g->scope);
        g->scope_open = false;
    }
    int outer = 0;
    while (g->pending) {
        cio__waiter w;
        cio__waiter_init(&w, t, "task group", g, NULL);
        w.nointr = outer != 0;
        g->w = &w;
        int rc = cio__wait(&w, CIO__NO_DEADLINE);
        g->w = NULL;
        if (rc < 0 && !outer) {
            /* The parent was cancelled from outside: so are the children,
             * and we still wait for them. */
            outer = rc;
            cancel_kids(g);
        }
    }
    g->waited = true;
    if (g->nfailed)
        return g->codes[0];
    return outer;
}

size_t cio_group_errors(const cio_group_t *g, int *codes, cio_task_t **tasks, size_t cap)
{
    if (!g)
        return 0;
    for (size_t i = 0; i < g->nfailed && i < cap; i++) {
        if (codes)
            codes[i] = g->codes[i];
        if (tasks)
            tasks[i] = g->failed[i];
    }
    return g->nfailed;
}

void cio_group_free(cio_group_t *g)
{
    if (!g)
        return;
    if (g->scope_open && g->parent->scope == &g->scope)
        cio_scope_exit(&g->scope);
    for (size_t i = 0; i < g->nkids; i++) {
        if (g->kids[i]->state == CIO__PENDING) {
            /* Freed without waiting: the children are cancelled and run
             * on detached; their callbacks must not reach the group. */
            cio__future_off_done_arg(g->kids[i], g);
            cio_task_cancel(g->kids[i]);
        }
        cio_future_release(g->kids[i]);
    }
    cio__free(g->kids);
    cio__free(g->codes);
    cio__free(g->failed);
    cio__free(g);
}
