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

#endif /* CIO_IO_H */
