/*
 * The network layer's state per loop: the list of open network objects
 * (reported in debug mode and released when the loop closes) and the cache
 * of receive buffers.
 */
#include "net.h"

static void net_report(cio_loop_t *loop, FILE *out)
{
    cio__net *n = loop->net;
    if (!n)
        return;
    for (cio__netobj *o = n->objs.next; o != &n->objs; o = o->next) {
        if (!o->kind)
            continue;
        fprintf(out, "cio: loop closed with a %s still open: ", o->kind);
        o->describe(o, out);
        fputc('\n', out);
    }
}

static void net_close(cio_loop_t *loop)
{
    cio__net *n = loop->net;
    if (!n)
        return;
    /* Each abort removes its object from the list (and may remove others:
     * a server aborting its connections). */
    while (n->objs.next != &n->objs)
        n->objs.next->abort(n->objs.next);
    /* Operations the kernel still holds (io_uring) point into the objects
     * just released: wait for their completions before freeing anything
     * they write to. */
    cio__loop_drain(loop);
    while (n->nbufs)
        cio__free(n->bufs[--n->nbufs]);
    cio__free(n);
    loop->net = NULL;
}

static void net_fork(cio_loop_t *loop)
{
    (void)loop; /* the sockets are the child's copies: they stay usable */
}

static const cio__loop_hooks net_hooks = {
    .layer = 11,
    .report = net_report,
    .close = net_close,
    .fork = net_fork,
};

cio__net *cio__net_get(cio_loop_t *loop)
{
    if (loop->net)
        return loop->net;
    cio__net *n = cio__calloc(1, sizeof(*n));
    if (!n)
        return NULL;
    if (cio__loop_hook(loop, &net_hooks)) {
        cio__free(n);
        return NULL;
    }
    n->objs.next = n->objs.prev = &n->objs;
    loop->net = n;
    return n;
}

void cio__net_add(cio__net *n, cio__netobj *o)
{
    o->next = &n->objs;
    o->prev = n->objs.prev;
    n->objs.prev->next = o;
    n->objs.prev = o;
    n->nobjs++;
}

void cio__net_remove(cio__net *n, cio__netobj *o)
{
    if (!o->next)
        return;
    o->prev->next = o->next;
    o->next->prev = o->prev;
    o->next = o->prev = NULL;
    n->nobjs--;
}

void *cio__net_buf_get(cio__net *n)
{
    return n->nbufs ? n->bufs[--n->nbufs] : cio__malloc(CIO__NET_BUF);
}

void cio__net_buf_put(cio__net *n, void *buf)
{
    if (!buf)
        return;
    if (n->nbufs < CIO__NET_BUF_CACHE)
        n->bufs[n->nbufs++] = buf;
    else
        cio__free(buf);
}

cio_loop_t *cio__net_loop(void)
{
    cio__coro *c = cio__current;
    return c ? c->loop : cio__running;
}
