/*
 * fd watchers: the table of what the loop watches on each fd, kept in line
 * with the backend's interest, and the public add_reader/add_writer calls.
 * Each fd has one reader and one writer side; a side is held either by a
 * user's callback (cio_add_reader, replaced by a second call, as in asyncio)
 * or by an internal watcher of the layers above (a task waiting in
 * cio_wait_fd, an operation waiting for readiness), never both.
 */
#include "loop.h"

#include <fcntl.h>
#include <limits.h>

/* fd numbers are below RLIMIT_NOFILE, whose hard maximum on Linux is
 * nr_open (2^20 by default, at most INT_MAX & ~31); the table never grows
 * past this bound, so a bogus huge fd costs nothing. */
#define FD_TABLE_MAX (1 << 30)

/* Makes room for fd in the table. The fd must be open: checking that first
 * keeps a bad number from growing the table for nothing. */
static int fd_slot(cio_loop_t *loop, int fd)
{
    if (fd < 0 || fd >= FD_TABLE_MAX)
        return fd < 0 ? -EINVAL : -EBADF;
    if (fd < loop->nfds)
        return 0;
    if (fcntl(fd, F_GETFD) < 0)
        return -EBADF;
    size_t n = loop->nfds ? (size_t)loop->nfds : 64;
    while (n <= (size_t)fd)
        n *= 2;
    cio__fdw *v = cio__realloc(loop->fds, sizeof(*v) * n);
    if (!v)
        return -ENOMEM;
    memset(v + loop->nfds, 0, sizeof(*v) * (n - (size_t)loop->nfds));
    loop->fds = v;
    loop->nfds = (int)n;
    return 0;
}

static bool side_used(const cio__fdside *s)
{
    return s->fn || s->ucb;
}

/* Brings fd's registration with the backend in line with its sides. A
 * failure to drop interest (an fd the kernel already forgot) still counts
 * as dropped; a failure to add interest changes nothing and is returned. */
static int fd_update(cio_loop_t *loop, int fd)
{
    cio__fdw *w = &loop->fds[fd];
    unsigned want = (side_used(&w->r) ? CIO_READABLE : 0) | (side_used(&w->w) ? CIO_WRITABLE : 0);
    if (want == w->events)
        return 0;
    int rc = loop->be->watch(loop->be_state, fd, w->gen, w->events, want);
    if (rc && (want & ~w->events))
        return rc;
    loop->nwatch += (want != 0) - (w->events != 0);
    w->events = want;
    return 0;
}

int cio__fd_set(cio_loop_t *loop, int fd, unsigned events, cio__fd_fn fn, void *arg)
{
    if (loop->closed)
        return -ESHUTDOWN;
    int rc = fd_slot(loop, fd);
    if (rc)
        return rc;
    cio__fdw *w = &loop->fds[fd];
    if (((events & CIO_READABLE) && side_used(&w->r)) ||
        ((events & CIO_WRITABLE) && side_used(&w->w)))
        return -EBUSY;
    cio__fdside s = {.fn = fn, .ucb = NULL, .arg = arg};
    if (events & CIO_READABLE)
        w->r = s;
    if (events & CIO_WRITABLE)
        w->w = s;
    rc = fd_update(loop, fd);
    if (rc)
        cio__fd_clear(loop, fd, events);
    return rc;
}

void cio__fd_clear(cio_loop_t *loop, int fd, unsigned events)
{
    if (fd < 0 || fd >= loop->nfds)
        return;
    cio__fdw *w = &loop->fds[fd];
    if (events & CIO_READABLE)
        w->r = (cio__fdside){0};
    if (events & CIO_WRITABLE)
        w->w = (cio__fdside){0};
    fd_update(loop, fd); /* only drops interest: cannot fail */
}

static void side_fire(cio__fdside *s, int fd, unsigned events)
{
    if (s->fn)
        s->fn(s->arg, fd, events);
    else if (s->ucb)
        s->ucb(s->arg);
}

void cio__fd_dispatch(cio_loop_t *loop, int fd, unsigned events)
{
    if (fd < 0 || fd >= loop->nfds)
        return;
    /* Re-read the slot after each call: a watcher may grow the table or
     * clear the other side (a task waiting on both directions). The copy
     * lets a watcher replace itself while it runs. */
    events &= CIO_READABLE | CIO_WRITABLE;
    if (events & CIO_READABLE) {
        cio__fdside s = loop->fds[fd].r;
        side_fire(&s, fd, events);
    }
    if ((events & CIO_WRITABLE) && fd < loop->nfds) {
        cio__fdside s = loop->fds[fd].w;
        /* The same internal watcher on both sides was served above. */
        cio__fdside r = loop->fds[fd].r;
        if (!((events & CIO_READABLE) && s.fn && s.fn == r.fn && s.arg == r.arg))
            side_fire(&s, fd, events);
    }
}

void cio__fd_forget(cio_loop_t *loop, int fd)
{
    if (fd < 0 || fd >= loop->nfds)
        return;
    /* Events already polled for this life of the number are stale now, also
     * when its watchers were dropped before the close. */
    loop->fds[fd].gen++;
    if (!loop->fds[fd].events)
        return;
    /* Internal watchers (waiting tasks) are told the fd is closing, so that
     * they wake with -EBADF rather than wait forever or try a number that
     * may name another file by then; users' callbacks are dropped, as
     * asyncio drops them when the fd is closed. A watcher holding both sides
     * is called once (it clears both). */
    unsigned all = CIO_READABLE | CIO_WRITABLE | CIO__FD_CLOSING;
    cio__fdside r = loop->fds[fd].r;
    if (r.fn)
        r.fn(r.arg, fd, all);
    cio__fdside w = loop->fds[fd].w;
    if (w.fn)
        w.fn(w.arg, fd, all);
    cio__fd_clear(loop, fd, CIO_READABLE | CIO_WRITABLE);
}

void cio__fd_ready(cio_loop_t *loop, int fd, uint32_t gen, unsigned events)
{
    if (fd >= 0 && fd < loop->nfds && loop->fds[fd].gen == gen)
        cio__fd_dispatch(loop, fd, events);
}

int cio__fd_track(cio_loop_t *loop, cio__op *op)
{
    /* An operation on a path (open, stat) has no descriptor to track: no
     * cio_close can concern it. */
    if (op->fd < 0)
        return 0;
    int rc = fd_slot(loop, op->fd);
    if (rc)
        return rc;
    cio__fdw *w = &loop->fds[op->fd];
    op->fd_prev = NULL;
    op->fd_next = w->ops;
    if (w->ops)
        w->ops->fd_prev = op;
    w->ops = op;
    return 0;
}

void cio__fd_untrack(cio_loop_t *loop, cio__op *op)
{
    if (op->fd < 0)
        return;
    if (op->fd_prev)
        op->fd_prev->fd_next = op->fd_next;
    else
        loop->fds[op->fd].ops = op->fd_next;
    if (op->fd_next)
        op->fd_next->fd_prev = op->fd_prev;
    op->fd_next = op->fd_prev = NULL;
}

void cio__fd_close(cio_loop_t *loop)
{
    cio__free(loop->fds);
    loop->fds = NULL;
    loop->nfds = 0;
    loop->nwatch = 0;
}

/* ------------------------------------------------------------------------ */
/* Public watchers                                                            */
/* ------------------------------------------------------------------------ */

static int watch(cio_loop_t *loop, int fd, unsigned dir, cio_callback_fn cb, void *arg)
{
    if (!loop || !cb)
        return -EINVAL;
    if (loop->closed)
        return -ESHUTDOWN;
    int rc = fd_slot(loop, fd);
    if (rc)
        return rc;
    cio__fdside *side = dir == CIO_READABLE ? &loop->fds[fd].r : &loop->fds[fd].w;
    if (side->fn)
        return -EBUSY; /* a task is waiting on this direction */
    cio__fdside old = *side;
    *side = (cio__fdside){.fn = NULL, .ucb = cb, .arg = arg};
    rc = fd_update(loop, fd);
    if (rc) {
        side = dir == CIO_READABLE ? &loop->fds[fd].r : &loop->fds[fd].w;
        *side = old;
    }
    return rc;
}

static int unwatch(cio_loop_t *loop, int fd, unsigned dir)
{
    if (!loop || fd < 0)
        return -EINVAL;
    if (fd >= loop->nfds)
        return 0;
    cio__fdside *side = dir == CIO_READABLE ? &loop->fds[fd].r : &loop->fds[fd].w;
    if (!side->ucb)
        return 0;
    cio__fd_clear(loop, fd, dir);
    return 1;
}

int cio_add_reader(cio_loop_t *loop, int fd, cio_callback_fn cb, void *arg)
{
    return watch(loop, fd, CIO_READABLE, cb, arg);
}

int cio_add_writer(cio_loop_t *loop, int fd, cio_callback_fn cb, void *arg)
{
    return watch(loop, fd, CIO_WRITABLE, cb, arg);
}

int cio_remove_reader(cio_loop_t *loop, int fd)
{
    return unwatch(loop, fd, CIO_READABLE);
}

int cio_remove_writer(cio_loop_t *loop, int fd)
{
    return unwatch(loop, fd, CIO_WRITABLE);
}
