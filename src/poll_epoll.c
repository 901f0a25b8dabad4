/*
 * The epoll backend behind the poll seam (cio__poll_*): create, change a
 * registration, wait and dispatch, close. An io_uring backend implements the
 * same four calls.
 */
#include "internal.h"

#include <limits.h>
#include <sys/epoll.h>
#include <unistd.h>

#define MAX_EVENTS 1024

int cio__poll_init(cio__poller *p)
{
    p->fd = epoll_create1(EPOLL_CLOEXEC);
    if (p->fd < 0)
        return -errno;
    p->nevents = 64;
    p->events = malloc(sizeof(struct epoll_event) * (size_t)p->nevents);
    if (!p->events) {
        close(p->fd);
        p->fd = -1;
        return -ENOMEM;
    }
    return 0;
}

void cio__poll_close(cio__poller *p)
{
    if (p->fd >= 0)
        close(p->fd);
    p->fd = -1;
    free(p->events);
    p->events = NULL;
}

int cio__poll_set(cio__poller *p, int fd, unsigned old_ev, unsigned new_ev)
{
    struct epoll_event ev = {0};
    ev.events = ((new_ev & CIO_READABLE) ? EPOLLIN : 0) |
                ((new_ev & CIO_WRITABLE) ? EPOLLOUT : 0);
    ev.data.fd = fd;
    int op = !old_ev ? EPOLL_CTL_ADD : !new_ev ? EPOLL_CTL_DEL : EPOLL_CTL_MOD;
    if (epoll_ctl(p->fd, op, fd, &ev) == 0)
        return 0;
    /* The kernel drops registrations of closed fds on its own, so our
     * record can be stale in both directions. */
    if (op == EPOLL_CTL_MOD && errno == ENOENT)
        return epoll_ctl(p->fd, EPOLL_CTL_ADD, fd, &ev) ? -errno : 0;
    if (op == EPOLL_CTL_ADD && errno == EEXIST)
        return epoll_ctl(p->fd, EPOLL_CTL_MOD, fd, &ev) ? -errno : 0;
    if (op == EPOLL_CTL_DEL && (errno == ENOENT || errno == EBADF))
        return 0;
    return -errno;
}

int cio__poll_wait(cio_loop_t *loop, cio__poller *p, int64_t timeout_ns)
{
    int ms;
    if (timeout_ns < 0)
        ms = -1;
    else if (timeout_ns > (int64_t)INT_MAX * 1000000)
        ms = INT_MAX;
    else
        ms = (int)((timeout_ns + 999999) / 1000000); /* never wake early */
    struct epoll_event *evs = p->events;
    int n = epoll_wait(p->fd, evs, p->nevents, ms);
    if (n < 0)
        return errno == EINTR ? 0 : -errno;
    for (int i = 0; i < n; i++) {
        uint32_t e = evs[i].events;
        unsigned ev = 0;
        if (e & (EPOLLIN | EPOLLHUP | EPOLLERR | EPOLLRDHUP))
            ev |= CIO_READABLE;
        if (e & (EPOLLOUT | EPOLLHUP | EPOLLERR))
            ev |= CIO_WRITABLE;
        cio__fd_ready(loop, evs[i].data.fd, ev);
    }
    /* A full buffer means more may be ready: grow for the next round. */
    if (n == p->nevents && p->nevents < MAX_EVENTS) {
        void *bigger = realloc(p->events, sizeof(struct epoll_event) * (size_t)p->nevents * 2);
        if (bigger) {
            p->events = bigger;
            p->nevents *= 2;
        }
    }
    return n;
}
