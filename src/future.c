/*
 * Futures: a result slot completed once, a FIFO list of waiting tasks and a
 * list of done callbacks. Futures bridge callback code and tasks: a callback
 * completes a future, and a task awaiting it resumes.
 *
 * Done callbacks are scheduled on the ready list when the future completes
 * (as asyncio does), each holding a reference so the future outlives them.
 * Internal "sync" callbacks (combinators) run at completion instead.
 */
#include "future.h"

static void run_cbnode(void *arg);

/*
 * At close, the done callbacks still scheduled are dropped (asyncio discards
 * pending callbacks) and the references they held released, so that their
 * futures can be freed.
 */
static void drop_scheduled(cio_loop_t *loop)
{
    cio_handle_t *h = loop->ready.next_;
    while (h != &loop->ready) {
        cio_handle_t *next = h->next_;
        if (h->cb_ == run_cbnode) {
            cio__cbnode *n = h->arg_;
            cio_future_t *f = n->fut;
            cio_handle_cancel(h);
            cio__pool_free(&loop->pools[CIO__POOL_CB], n);
            cio_future_release(f);
        }
        h = next;
    }
}

/* A future still referenced points at the loop and lives in its pool. */
static int futures_busy_free(cio_loop_t *loop)
{
    size_t live = loop->pools[CIO__POOL_FUTURE].live;
    if (live && loop->debug)
        fprintf(stderr, "cio: loop not freed: %zu future(s) never released\n", live);
    return live ? -EBUSY : 0;
}

static const cio__loop_hooks future_hooks = {
    .layer = 6, .close = drop_scheduled, .busy_free = futures_busy_free};

static void layer_init(cio_loop_t *loop)
{
    cio__pool_init(&loop->pools[CIO__POOL_FUTURE], sizeof(struct cio_future));
    cio__pool_init(&loop->pools[CIO__POOL_CB], sizeof(cio__cbnode));
    cio__loop_hook(loop, &future_hooks);
}

static cio__freelist *fut_pool(cio_loop_t *loop)
{
    if (cio__unlikely(!loop->pools[CIO__POOL_FUTURE].size))
        layer_init(loop);
    return &loop->pools[CIO__POOL_FUTURE];
}

static cio__freelist *cb_pool(cio_loop_t *loop)
{
    if (cio__unlikely(!loop->pools[CIO__POOL_CB].size))
        layer_init(loop);
    return &loop->pools[CIO__POOL_CB];
}

cio_future_t *cio__future_alloc(cio_loop_t *loop, const cio__future_ops *ops)
{
    if (loop->closed)
        return NULL;
    cio_future_t *f = cio__pool_alloc(fut_pool(loop));
    if (!f)
        return NULL;
    memset(f, 0, sizeof(*f));
    f->loop = loop;
    f->ops = ops;
    f->refs = 1;
    return f;
}

void cio__future_pool_free(cio_future_t *f)
{
    cio__pool_free(&f->loop->pools[CIO__POOL_FUTURE], f);
}

int cio_future_new(cio_future_t **out, cio_loop_t *loop)
{
    if (!out)
        return -EINVAL;
    *out = NULL;
    if (!loop)
        loop = cio__running;
    if (!loop)
        return -EPERM;
    if (loop->closed)
        return -ESHUTDOWN;
    *out = cio__future_alloc(loop, NULL);
    return *out ? 0 : -ENOMEM;
}

cio_future_t *cio_future_ref(cio_future_t *f)
{
    if (f)
        f->refs++;
    return f;
}

void cio__report_unretrieved(cio_future_t *f)
{
    const char *name = f->ops && f->ops->name ? f->ops->name(f) : NULL;
    if (name)
        fprintf(stderr, "cio: %s '%s' failed with %s (%s) and nobody retrieved the error\n",
                f->ops->what, name, cio_err_name(f->status), cio_strerror(f->status));
    else
        fprintf(stderr, "cio: future %p failed with %s (%s) and nobody retrieved the error\n",
                (void *)f, cio_err_name(f->status), cio_strerror(f->status));
}

void cio__future_free(cio_future_t *f)
{
    if (f->loop->debug && f->status < 0 && f->status != -ECANCELED && !f->retrieved)
        cio__report_unretrieved(f);
    if (f->ops && f->ops->free)
        f->ops->free(f);
    else
        cio__future_pool_free(f);
}

/* Frees the done callbacks of a future that will never complete. */
static void drop_callbacks(cio_future_t *f)
{
    cio__cbnode *n = f->callbacks;
    f->callbacks = NULL;
    while (n) {
        cio__cbnode *next = n->next;
        cio__pool_free(&f->loop->pools[CIO__POOL_CB], n);
        n = next;
    }
}

void cio_future_release(cio_future_t *f)
{
    if (!f)
        return;
    if (cio__unlikely(f->refs <= 0)) {
        /* Released once too often: the memory may already be reused, so
         * nothing else is touched. Always reported: it is a bug. */
        fprintf(stderr, "cio: future %p released more often than referenced\n", (void *)f);
        return;
    }
    if (--f->refs > 0)
        return;
    /* Tasks and jobs hold a reference of their own until they finish, so
     * only a plain future can get here pending: nobody can complete it any
     * more (that takes a reference, and awaiting holds one), so it is freed
     * with the done callbacks that would never run. */
    if (f->state == CIO__PENDING) {
        if (f->ops)
            return;
        drop_callbacks(f);
    }
    cio__future_free(f);
}

static void run_cbnode(void *arg)
{
    cio__cbnode *n = arg;
    cio_future_t *f = n->fut;
    cio_loop_t *loop = f->loop;
    n->cb(f, n->arg);
    cio__pool_free(&loop->pools[CIO__POOL_CB], n);
    cio_future_release(f);
}

int cio__future_complete(cio_future_t *f, int status, void *result, uint8_t state)
{
    if (f->state != CIO__PENDING)
        return -EALREADY;
    f->state = state;
    f->status = status;
    f->result = result;
    cio__waiter *w;
    while ((w = cio__wlist_pop(&f->waiters)))
        cio__wake(w, 0);
    /* Callbacks run in registration order: reverse the LIFO list first. */
    cio__cbnode *n = f->callbacks, *rev = NULL;
    f->callbacks = NULL;
    while (n) {
        cio__cbnode *next = n->next;
        n->next = rev;
        rev = n;
        n = next;
    }
    f->refs++; /* keep f alive while sync callbacks run */
    for (n = rev; n;) {
        cio__cbnode *next = n->next;
        if (n->sync) {
            n->cb(f, n->arg);
            cio__pool_free(&f->loop->pools[CIO__POOL_CB], n);
        } else {
            f->refs++;
            n->h.cb_ = run_cbnode;
            n->h.arg_ = n;
            n->h.loop_ = f->loop;
            n->h.flags_ = 0;
            cio__ready_push(f->loop, &n->h);
        }
        n = next;
    }
    cio_future_release(f);
    return 0;
}

static int check_code(cio_future_t *f)
{
    if (!f || f->ops)
        return -EINVAL;
    if (f->state != CIO__PENDING)
        return -EALREADY;
    return f->loop->closed ? -ESHUTDOWN : 0; /* no callback could run */
}

int cio_future_set_result(cio_future_t *f, void *value)
{
    int rc = check_code(f);
    return rc ? rc : cio__future_complete(f, 0, value, CIO__DONE);
}

int cio_future_set_error(cio_future_t *f, int err)
{
    int rc = check_code(f);
    if (rc)
        return rc;
    if (err >= 0)
        return -EINVAL;
    return cio__future_complete(f, err, NULL, err == -ECANCELED ? CIO__CANCELLED : CIO__DONE);
}

int cio_future_cancel(cio_future_t *f)
{
    if (!f || f->state != CIO__PENDING || f->loop->closed)
        return 0;
    if (f->ops && f->ops->cancel)
        return f->ops->cancel(f);
    cio__future_complete(f, -ECANCELED, NULL, CIO__CANCELLED);
    return 1;
}

bool cio_future_done(const cio_future_t *f)
{
    return f && f->state != CIO__PENDING;
}

bool cio_future_cancelled(const cio_future_t *f)
{
    return f && f->state == CIO__CANCELLED;
}

int cio_future_result(cio_future_t *f, void **result)
{
    if (!f)
        return -EINVAL;
    if (f->state == CIO__PENDING)
        return -EAGAIN;
    f->retrieved = 1;
    if (result)
        *result = f->result;
    return f->status;
}

/* Links node n, holding cb(arg), into f's callbacks. */
static inline void link_node(cio_future_t *f, cio__cbnode *n, cio_done_fn cb, void *arg)
{
    memset(&n->h, 0, sizeof(n->h));
    n->fut = f;
    n->cb = cb;
    n->arg = arg;
    n->sync = false;
    n->next = f->callbacks;
    f->callbacks = n;
}

static cio__cbnode *add_node(cio_future_t *f, cio_done_fn cb, void *arg)
{
    cio__cbnode *n = cio__pool_alloc(cb_pool(f->loop));
    if (n)
        link_node(f, n, cb, arg);
    return n;
}

void *cio__cbnode_take(cio_loop_t *loop)
{
    return cio__pool_alloc(cb_pool(loop));
}

void cio__cbnode_give(cio_loop_t *loop, void *node)
{
    cio__pool_free(&loop->pools[CIO__POOL_CB], node);
}

void cio__future_on_done_node(cio_future_t *f, void *node,
                              void (*fn)(cio_future_t *, void *), void *arg)
{
    cio__cbnode *n = node;
    link_node(f, n, fn, arg);
    n->sync = true;
}

int cio_future_add_done_callback(cio_future_t *f, cio_done_fn cb, void *arg)
{
    if (!f || !cb)
        return -EINVAL;
    if (f->loop->closed)
        return -ESHUTDOWN;
    if (f->state != CIO__PENDING) {
        /* Already done: schedule it for the next iteration. */
        cio__cbnode *n = cio__pool_alloc(cb_pool(f->loop));
        if (!n)
            return -ENOMEM;
        memset(&n->h, 0, sizeof(n->h));
        n->fut = f;
        n->cb = cb;
        n->arg = arg;
        n->sync = false;
        n->next = NULL;
        f->refs++;
        n->h.cb_ = run_cbnode;
        n->h.arg_ = n;
        n->h.loop_ = f->loop;
        cio__ready_push(f->loop, &n->h);
        return 0;
    }
    return add_node(f, cb, arg) ? 0 : -ENOMEM;
}

int cio_future_remove_done_callback(cio_future_t *f, cio_done_fn cb, void *arg)
{
    if (!f)
        return 0;
    int removed = 0;
    for (cio__cbnode **pp = &f->callbacks; *pp;) {
        cio__cbnode *n = *pp;
        if (!n->sync && n->cb == cb && n->arg == arg) {
            *pp = n->next;
            cio__pool_free(&f->loop->pools[CIO__POOL_CB], n);
            removed++;
        } else {
            pp = &n->next;
        }
    }
    return removed;
}

void *cio__future_on_done(cio_future_t *f, void (*fn)(cio_future_t *, void *), void *arg)
{
    cio__cbnode *n = add_node(f, fn, arg);
    if (n)
        n->sync = true;
    return n;
}

/* ------------------------------------------------------------------------ */
/* shield                                                                    */
/* ------------------------------------------------------------------------ */

static void shield_done(cio_future_t *inner, void *arg)
{
    cio_future_t *outer = arg;
    if (outer->state == CIO__PENDING) {
        inner->retrieved = 1;
        cio__future_complete(outer, inner->status, inner->result, inner->state);
    }
    cio_future_release(outer);
    cio_future_release(inner);
}

int cio_shield(cio_future_t **out, cio_future_t *f)
{
    if (!out)
        return -EINVAL;
    *out = NULL;
    if (!f)
        return -EINVAL;
    cio_future_t *outer;
    int rc = cio_future_new(&outer, f->loop);
    if (rc)
        return rc;
    if (f->state != CIO__PENDING) {
        f->retrieved = 1;
        cio__future_complete(outer, f->status, f->result, f->state);
        *out = outer;
        return 0;
    }
    outer->refs++; /* held by the callback */
    f->refs++;
    if (!cio__future_on_done(f, shield_done, outer)) {
        outer->refs -= 1;
        f->refs--;
        cio_future_release(outer);
        return -ENOMEM;
    }
    *out = outer;
    return 0;
}

int cio__future_off_done_arg(cio_future_t *f, void *arg)
{
    int n = 0;
    for (cio__cbnode **pp = &f->callbacks; *pp;) {
        cio__cbnode *node = *pp;
        if (node->sync && node->arg == arg) {
            *pp = node->next;
            cio__pool_free(&f->loop->pools[CIO__POOL_CB], node);
            n++;
        } else {
            pp = &node->next;
        }
    }
    return n;
}

/* ------------------------------------------------------------------------ */
/* Running a loop until a future is done                                     */
/* ------------------------------------------------------------------------ */

static void stop_cb(cio_future_t *f, void *arg)
{
    (void)f;
    cio_loop_stop(arg);
}

int cio_loop_run_until_complete(cio_loop_t *loop, cio_future_t *fut, void **result)
{
    if (!loop || !fut)
        return -EINVAL;
    if (fut->state == CIO__PENDING) {
        int rc = cio_future_add_done_callback(fut, stop_cb, loop);
        if (rc)
            return rc;
        rc = cio_loop_run_forever(loop);
        cio_future_remove_done_callback(fut, stop_cb, loop);
        if (rc)
            return rc;
        if (fut->state == CIO__PENDING)
            return -EINTR;
    }
    return cio_future_result(fut, result);
}
