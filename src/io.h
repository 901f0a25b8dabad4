/*
 * Layer 5, the operation layer (io.c): I/O system calls as await points on
 * both backends, and waiting for fd readiness. Every later I/O subsystem
 * (streams, processes, files, TLS, PostgreSQL) builds on these, never on raw
 * readiness.
 */
#ifndef CIO_IO_H
#define CIO_IO_H

#include "wait.h"

/*
 * Runs op from the current coroutine c: on a completion backend it is
 * submitted and c parks until the completion arrives (a cancel or deadline
 * submits an async cancel and still waits for the completion; a completion
 * that raced the cancel is returned as a success); on epoll the system call
 * is tried, and on EAGAIN c waits for readiness and tries again. Returns the
 * result (>= 0) or a negative errno, -ECANCELED / -ETIMEDOUT included.
 */
ssize_t cio__op_run(cio__coro *c, cio__op *op);

/*
 * Waits for fd to become ready for `events` (either fires), from c. Returns
 * the events that fired, or -ECANCELED, -ETIMEDOUT, -EBUSY, -ENOMEM, or the
 * backend's registration error.
 */
int cio__fd_wait(cio__coro *c, int fd, unsigned events);


/* ------------------------------------------------------------------------ */
/* Callback operations: I/O kept going by the loop with no task              */
/* ------------------------------------------------------------------------ */

/*
 * An operation driven by callbacks, for the layers that keep I/O going with
 * no task per connection (transports, servers, UDP protocols). It runs on
 * both backends: on epoll it waits for readiness and then makes the system
 * call from the loop; on io_uring it is submitted and its completion calls
 * back. The owner embeds it and fills op (code, fd, flags, addresses).
 *
 * prepare (optional) runs right before each system call or submission and
 * sets op.buf/op.len (or op.iov/op.msg): buffers are only needed while the
 * operation is really under way, so an idle connection on epoll holds none.
 *
 * done(a, res) runs from the loop with the result (>= 0) or a negative
 * errno (never -EAGAIN or -EINTR: those are retried): -ECANCELED after
 * cio__aop_stop on a completion backend, -EBADF when the fd was closed with
 * cio_close under it. It returns true to run the same operation again
 * (prepare is called again first; on epoll the readiness registration is
 * kept, so a connection that keeps reading costs no epoll_ctl), false to
 * let it end; done may free the owner when it returns false, but must not
 * when it returns true. done must not start a itself: an owner that wants
 * it running again (a resume from inside a callback) returns true.
 */
typedef struct cio__aop cio__aop;
struct cio__aop {
    cio__op op;
    cio_loop_t *loop;
    void (*prepare)(cio__aop *a);
    bool (*done)(cio__aop *a, ssize_t res);
    uint8_t state;    /* CIO__AOP_IDLE, _WAITING (readiness), _SUBMITTED */
    uint8_t stopping; /* stop asked on a completion backend */
};
enum { CIO__AOP_IDLE = 0, CIO__AOP_WAITING, CIO__AOP_SUBMITTED };

/* Sets up a on loop for op code on fd (prepare and done as described). */
void cio__aop_init(cio__aop *a, cio_loop_t *loop, int code, int fd,
                   void (*prepare)(cio__aop *), bool (*done)(cio__aop *, ssize_t));

/*
 * Starts a (which must be idle). When try_now is set the system call is
 * made at once on either backend (the fd must be non-blocking), and a
 * result other than EAGAIN is returned directly, done not called. Otherwise,
 * or when it would block, the operation is started and -EINPROGRESS
 * returned: done will be called from the loop. Other negative returns are
 * failures to start (-ENOMEM, -EBUSY, ...), done not called.
 */
ssize_t cio__aop_start(cio__aop *a, bool try_now);

/*
 * Stops a started operation. Returns true when it stopped at once (done will
 * not be called: always on epoll), false when the kernel holds it (io_uring):
 * done comes later with -ECANCELED or with a result that raced the cancel
 * (returning true then runs it again, for an owner that restarted it
 * meanwhile: cio__aop_start is refused while the kernel holds it). The
 * owner must stay valid until then. Idle operations return true.
 */
bool cio__aop_stop(cio__aop *a);

static inline bool cio__aop_busy(const cio__aop *a)
{
    return a->state != CIO__AOP_IDLE;
}

/* cio_close for loop (NULL: no loop; just close): wakes and cancels what
 * waits on fd, then closes it. */
int cio__close_fd(cio_loop_t *loop, int fd);

/* The system call of op, made once now: its result or -errno (connect is
 * not supported: -EINVAL). For non-blocking fds on either backend. */
ssize_t cio__op_try(cio__op *op);

#endif /* CIO_IO_H */
