/*
 * The epoll backend: readiness only. Interest is level-triggered (epoll's
 * default), so a ready fd is reported at every poll until its interest is
 * dropped. It has no completion operations: the operation layer tries each
 * call and waits for readiness on EAGAIN.
 */
#include "loop.h"

#include <limits.h>
#include <sys/epoll.h>
#include <unistd.h>

typedef struct epoll_state {
    int fd;
    int cap;
    struct epoll_event *evs;
} epoll_state;

static int ep_init(void **state)
{
    epoll_state *st = cio__malloc(sizeof(*st));
    if (!st)
        return -ENOMEM;
    st->cap = 64;
    st->evs = cio__malloc(sizeof(struct epoll_event) * (size_t)st->cap);
    st->fd = st->evs ? epoll_create1(EPOLL_CLOEXEC) : -1;
    if (st->fd < 0) {
        int rc = st->evs ? -errno : -ENOMEM;
        cio__free(st->evs);
        cio__free(st);
        return rc;
    }
    *state = st;
    return 0;
}

static void ep_close(void *state)
{
    epoll_state *st = state;
    if (!st)
        return;
    close(st->fd);
    cio__free(st->evs);
    cio__free(st);
}

static int ep_watch(void *state, int fd, uint32_t gen, unsigned old_ev, unsigned new_ev)
{
    epoll_state *st = state;
    struct epoll_event ev = {0};
    ev.events = ((new_ev & CIO_READABLE) ? EPOLLIN : 0) | ((new_ev & CIO_WRITABLE) ? EPOLLOUT : 0);
    ev.data.u64 = (uint64_t)gen << 32 | (uint32_t)fd;
    int op = !old_ev ? EPOLL_CTL_ADD : !new_ev ? EPOLL_CTL_DEL : EPOLL_CTL_MOD;
    if (epoll_ctl(st->fd, op, fd, &ev) == 0)
        return 0;
    /* The kernel drops registrations of closed fds on its own, so our
     * record can be stale in both directions. */
    if (op == EPOLL_CTL_MOD && errno == ENOENT)
        return epoll_ctl(st->fd, EPOLL_CTL_ADD, fd, &ev) ? -errno : 0;
    if (op == EPOLL_CTL_ADD && errno == EEXIST)
        return epoll_ctl(st->fd, EPOLL_CTL_MOD, fd, &ev) ? -errno : 0;
    if (op == EPOLL_CTL_DEL && (errno == ENOENT || errno == EBADF))
        return 0;
    return -errno;
}

static int to_ms(int64_t timeout_ns)
{
    if (timeout_ns < 0)
        return -1;
    if (timeout_ns > (int64_t)INT_MAX * 1000000)
        return INT_MAX;
    return (int)((timeout_ns + 999999) / 1000000); /* never wake early */
}

static unsigned to_events(uint32_t e)
{
    unsigned ev = 0;
    if (e & (EPOLLIN | EPOLLHUP | EPOLLERR | EPOLLRDHUP))
        ev |= CIO_READABLE;
    if (e & (EPOLLOUT | EPOLLHUP | EPOLLERR))
        ev |= CIO_WRITABLE;
    return ev;
}

static int ep_poll(void *state, int64_t timeout_ns, cio__event *out, int cap)
{
    epoll_state *st = state;
    int max = cap < st->cap ? cap : st->cap;
    int n = epoll_wait(st->fd, st->evs, max, to_ms(timeout_ns));
    if (n < 0)
        return errno == EINTR ? 0 : -errno;
    for (int i = 0; i < n; i++) {
        uint64_t key = st->evs[i].data.u64;
        out[i] = (cio__event){.kind = CIO__EV_READY, .res = (int32_t)to_events(st->evs[i].events),
                              .fd = (int)(uint32_t)key, .gen = (uint32_t)(key >> 32),
                              .op = NULL};
    }
    /* A full buffer means more may be ready: grow for the next round. */
    if (n == st->cap && st->cap < cap) {
        void *bigger = cio__realloc(st->evs, sizeof(struct epoll_event) * (size_t)st->cap * 2);
        if (bigger) {
            st->evs = bigger;
            st->cap *= 2;
        }
    }
    return n;
}

const cio__backend cio__backend_epoll = {
    .name = "epoll",
    .init = ep_init,
    .close = ep_close,
    .watch = ep_watch,
    .poll = ep_poll,
    .submit = NULL,
    .cancel = NULL,
    .pending = NULL,
};
