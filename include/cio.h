/*
 * cio: Python's asyncio for C.
 *
 * Stackful coroutines (tasks) scheduled by a single-threaded event loop per
 * thread, with futures, cancellation scopes, combinators and a thread pool.
 * A task is an ordinary C function running on its own stack; it suspends only
 * inside cio calls (the "await points": cio_sleep, cio_await, ...), so any C
 * function may await without being marked async.
 *
 * Conventions used by every call in this header (docs/design.md, "API
 * conventions", has them in full):
 *
 *  - One error channel, the return value. A call that can fail returns int
 *    (ssize_t or int64_t for counts): >= 0 is success, a negative errno code
 *    is the failure (-ECANCELED, -ETIMEDOUT, -ENOMEM, ...). No call reports
 *    through errno. Each call's comment lists every code it can return;
 *    cio_strerror() and cio_err_name() describe a code.
 *  - Constructors return int and hand the object through an out-parameter
 *    that comes first: cio_loop_new(&loop), cio_spawn(&task, fn, arg). On
 *    failure *out is set to NULL (when out is not NULL). Getters that cannot
 *    fail (cio_current_task, cio_get_running_loop, ...) return the pointer.
 *  - Caller-storage objects (locks, queues, handles, scopes, ...) are
 *    initialised by an *_init call that returns int (-EINVAL for NULL) or by
 *    their *_INIT macro. Their fields are private and their size is part of
 *    the ABI; option structs keep reserved_ fields that must be zero.
 *  - "Try" and nowait calls that would have to wait return -EAGAIN.
 *  - Destructor verbs: _free releases an object cio allocated (loop, group,
 *    generator, runner); _close stops an object and releases its OS
 *    resources, the object staying queryable until freed (loop, generator);
 *    _destroy releases what a caller-storage object holds (queue);
 *    _shutdown stops accepting work (loop, queue, executor);
 *    cio_future_release drops a reference. Destructors, and stop calls,
 *    accept NULL as a no-op.
 *  - A NULL loop means "the running loop of this thread" for calls that
 *    create something in a loop or look at its tasks (cio_spawn_ex,
 *    cio_future_new, cio_run_in_executor, cio_all_tasks, cio_dump_tasks):
 *    they return -EPERM when no loop runs. Calls that operate on a given
 *    loop (cio_call_soon, cio_add_reader, cio_loop_run_forever, ...) return
 *    -EINVAL for NULL.
 *  - Times are seconds as double, as in asyncio (cio_sleep(0.5)), measured on
 *    the monotonic clock. A negative delay counts as 0; NaN is -EINVAL;
 *    INFINITY means "no deadline". Internally every deadline is an absolute
 *    monotonic time in nanoseconds; the *_ns forms expose that.
 *  - Await points may only be called from inside a task. Called elsewhere they
 *    return -EPERM. Every await point that may wait with a deadline (its own
 *    or an enclosing scope's) also returns -ENOMEM when the timer for that
 *    deadline cannot be armed (the timer heap could not grow): it never
 *    sleeps on a deadline it could not arm.
 *  - Cancellation is level-triggered: once a task (or a scope around the
 *    current code) is cancelled, the current await point and every later one
 *    return -ECANCELED (-ETIMEDOUT for an expired deadline scope) until the
 *    task finishes or leaves the cancelled scope. Shielded scopes suspend that
 *    rule for cleanup code.
 *  - Whoever creates an object frees it. Futures and tasks are reference
 *    counted: each creating call hands one reference to the caller, which
 *    releases it with cio_future_release() (cio_spawn with out NULL releases
 *    it at once: fire and forget).
 *  - Only functions whose names end in _threadsafe, the cio_cfuture_*
 *    calls, and those whose contract says so may be called from a thread
 *    other than the loop's.
 */
#ifndef CIO_H
#define CIO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) && !defined(CIO_STATIC_BUILD)
#define CIO_EXTERN __attribute__((visibility("default")))
#else
#define CIO_EXTERN
#endif

#define CIO_VERSION_MAJOR 0
#define CIO_VERSION_MINOR 1
#define CIO_VERSION_PATCH 0

/* ------------------------------------------------------------------------ */
/* Errors                                                                    */
/* ------------------------------------------------------------------------ */

/*
 * Returns a static, human-readable description of an error code (negative
 * errno value as returned by cio calls). Never NULL; unknown codes give
 * "unknown error".
 */
CIO_EXTERN const char *cio_strerror(int err);

/*
 * Returns the symbolic name of an error code ("ECANCELED" for -ECANCELED).
 * Never NULL; unknown codes give "UNKNOWN".
 */
CIO_EXTERN const char *cio_err_name(int err);

/* ------------------------------------------------------------------------ */
/* Memory                                                                    */
/* ------------------------------------------------------------------------ */

typedef void *(*cio_malloc_fn)(size_t size);
typedef void *(*cio_realloc_fn)(void *ptr, size_t size);
typedef void *(*cio_calloc_fn)(size_t count, size_t size);
typedef void (*cio_free_fn)(void *ptr);

/*
 * Replaces the functions all of cio's heap memory comes from (libuv's
 * uv_replace_allocator): for accounting, arenas or fault injection. They must
 * behave as the C library's (thread-safe; NULL when out of memory). Call it
 * before any other cio call and never while a loop or pool exists: memory
 * taken from one allocator is given back to the same one only if it is not
 * replaced in between. Returns 0, or -EINVAL if any function is NULL.
 * Stacks are mapped with mmap, not taken from the allocator.
 */
CIO_EXTERN int cio_replace_allocator(cio_malloc_fn malloc_fn, cio_realloc_fn realloc_fn,
                                     cio_calloc_fn calloc_fn, cio_free_fn free_fn);

/* ------------------------------------------------------------------------ */
/* Types                                                                     */
/* ------------------------------------------------------------------------ */

typedef struct cio_loop cio_loop_t;

/* A future: a result slot completed once, with a value or an error code. */
typedef struct cio_future cio_future_t;

/*
 * A task is a future driven by a coroutine: every cio_future_* call accepts a
 * task, and tasks can be mixed with futures in cio_gather/cio_wait arrays.
 */
typedef struct cio_future cio_task_t;

/*
 * The body of a task (and of a thread-pool job). Returns 0 (or any
 * non-negative value) on success or a negative error code on failure; may
 * store the task's result in *result (preset to NULL).
 */
typedef int (*cio_task_fn)(void *arg, void **result);

/* A plain callback run by the loop. */
typedef void (*cio_callback_fn)(void *arg);

/* ------------------------------------------------------------------------ */
/* Callback handles (call_soon / call_later / call_at)                      */
/* ------------------------------------------------------------------------ */

/*
 * A handle is caller-owned storage for one scheduled callback, as libuv's
 * handles are: embed it anywhere, initialise it with CIO_HANDLE_INIT or
 * memset 0, and do not free or reuse it while cio_handle_active() is true.
 * The fields are private.
 */
typedef struct cio_handle {
    struct cio_handle *next_, *prev_; /* ready-queue links */
    cio_callback_fn cb_;
    void *arg_;
    cio_loop_t *loop_;
    int64_t when_;      /* absolute deadline in ns for timers */
    uint64_t seq_;      /* insertion order, breaks deadline ties (FIFO) */
    uint32_t heap_idx_; /* position in the timer heap */
    uint8_t state_;     /* idle, ready, timer */
    uint8_t flags_;     /* pooled (allocated by the loop) */
} cio_handle_t;

#define CIO_HANDLE_INIT {0}

/*
 * Schedules cb(arg) to run on the next loop iteration, after callbacks
 * already scheduled (FIFO). h may be NULL for a fire-and-forget callback
 * (the loop allocates the node), or caller storage to make it cancellable.
 * Returns 0, -EINVAL (loop or cb NULL), -EBUSY (h already active), -ENOMEM,
 * or -ESHUTDOWN (loop closed). Loop thread only.
 */
CIO_EXTERN int cio_call_soon(cio_loop_t *loop, cio_handle_t *h,
                             cio_callback_fn cb, void *arg);

/*
 * Schedules cb(arg) after delay seconds (never earlier; timers with equal
 * deadlines run in the order they were scheduled). Errors as cio_call_soon,
 * plus -EINVAL for a NaN delay.
 */
CIO_EXTERN int cio_call_later(cio_loop_t *loop, cio_handle_t *h, double delay,
                              cio_callback_fn cb, void *arg);

/* As cio_call_later, at the absolute loop time `when` (seconds). */
CIO_EXTERN int cio_call_at(cio_loop_t *loop, cio_handle_t *h, double when,
                           cio_callback_fn cb, void *arg);

/* As cio_call_at with an absolute monotonic time in nanoseconds. */
CIO_EXTERN int cio_call_at_ns(cio_loop_t *loop, cio_handle_t *h, int64_t when_ns,
                              cio_callback_fn cb, void *arg);

/*
 * Cancels a scheduled callback. Returns 1 if it was pending and will not run,
 * 0 if it was not pending (already ran, never scheduled, or cancelled; also
 * for NULL). After this call the storage may be freed or reused.
 */
CIO_EXTERN int cio_handle_cancel(cio_handle_t *h);

/* True while h is scheduled (queued or armed) and has not run. */
CIO_EXTERN bool cio_handle_active(const cio_handle_t *h);

/*
 * Schedules cb(arg) on `loop` from any thread and wakes the loop (eventfd).
 * Returns 0, -EINVAL, -ENOMEM, or -ESHUTDOWN if the loop is closed. The loop
 * object itself must outlive the call.
 */
CIO_EXTERN int cio_call_soon_threadsafe(cio_loop_t *loop, cio_callback_fn cb,
                                        void *arg);

/* ------------------------------------------------------------------------ */
/* Event loop                                                                */
/* ------------------------------------------------------------------------ */

/* The I/O backends a loop can run on. */
typedef enum cio_backend {
    CIO_BACKEND_DEFAULT = 0, /* CIO_BACKEND=epoll|uring from the environment, else epoll */
    CIO_BACKEND_EPOLL,       /* readiness: try, wait for readiness, retry */
    CIO_BACKEND_URING        /* io_uring: operations submitted and completed */
} cio_backend_t;

/* Options of cio_loop_new_ex. Zero-initialise and set what you need. */
typedef struct cio_loop_opts {
    cio_backend_t backend;
    void *reserved_[4];      /* must be zero (room for later options) */
} cio_loop_opts_t;

/*
 * Creates an event loop for the calling thread, which is the thread that
 * runs it (default options: see cio_loop_new_ex) and stores it in *out (NULL
 * on failure). Returns 0, -EINVAL (out is NULL), -ENOMEM, or an
 * errno of epoll_create1/eventfd (-EMFILE, -ENFILE, ...). The caller frees it
 * with cio_loop_free().
 */
CIO_EXTERN int cio_loop_new(cio_loop_t **out);

/*
 * Creates an event loop with options (NULL: the defaults) and stores it in
 * *out (NULL on failure). When io_uring is asked for but the kernel refuses
 * it (ENOSYS on an old kernel, EPERM under a seccomp filter or
 * kernel.io_uring_disabled, ENOMEM for locked memory), the loop falls back
 * to epoll and, in debug mode, says so on stderr; it never fails for that
 * reason. Returns 0, -EINVAL (out is NULL, an unknown backend, or reserved_
 * not zero), -ENOMEM, or an errno of epoll/eventfd. The caller frees it with
 * cio_loop_free().
 */
CIO_EXTERN int cio_loop_new_ex(cio_loop_t **out, const cio_loop_opts_t *opts);

/* The name of the loop's backend ("epoll" or "io_uring"); NULL for NULL. */
CIO_EXTERN const char *cio_loop_backend(const cio_loop_t *loop);

/*
 * Returns the loop running in the calling thread (asyncio
 * get_running_loop), or NULL when no loop is running.
 */
CIO_EXTERN cio_loop_t *cio_get_running_loop(void);

/*
 * Runs the loop until cio_loop_stop() is called. Returns 0, -EINVAL (loop
 * NULL), -EBUSY if the loop is already running (or another loop runs in this
 * thread), -ESHUTDOWN if it is closed.
 */
CIO_EXTERN int cio_loop_run_forever(cio_loop_t *loop);

/*
 * Runs the loop until fut is done, then returns fut's status (0, or its
 * error code) and stores its result in *result (if result is not NULL). A
 * future already done returns its status at once, without running the loop.
 * Errors of the call itself: -EINVAL (loop or fut NULL), -ESHUTDOWN (loop
 * closed), -ENOMEM (no node for the done callback that stops the loop),
 * -EBUSY (the loop is running, or another loop runs in this thread), -EINTR
 * (the loop was stopped before fut was done). Does not release fut.
 */
CIO_EXTERN int cio_loop_run_until_complete(cio_loop_t *loop, cio_future_t *fut,
                                           void **result);

/* Asks a running loop to return after the current iteration. NULL: no-op. */
CIO_EXTERN void cio_loop_stop(cio_loop_t *loop);

/* True while the loop runs (run_forever, run_until_complete, shutdown). */
CIO_EXTERN bool cio_loop_is_running(const cio_loop_t *loop);

/* True once cio_loop_close() has succeeded. False for NULL. */
CIO_EXTERN bool cio_loop_is_closed(const cio_loop_t *loop);

/*
 * The loop's clock in seconds (monotonic; asyncio loop.time()). While the
 * loop runs it is read once per iteration, so every callback of an iteration
 * sees the same value; outside a run it is read fresh. NULL reads the clock.
 */
CIO_EXTERN double cio_loop_time(const cio_loop_t *loop);

/* The same clock in nanoseconds (what the *_ns deadlines are measured on). */
CIO_EXTERN int64_t cio_loop_time_ns(const cio_loop_t *loop);

/*
 * Cancels every task of the loop, runs the loop until they have all finished
 * and shuts down the default thread pool (asyncio.run's cleanup). Returns 0
 * (also for NULL, a no-op), -EBUSY if called while the loop runs (or another
 * loop runs in this thread), -ESHUTDOWN if closed. Tasks that other threads
 * submit while it runs (cio_run_coroutine_threadsafe) are not started:
 * their cfutures end with -ESHUTDOWN. The default pool's queued jobs still
 * run, while the loop runs (a job may wait for this loop); afterwards the
 * default pool refuses work (-ESHUTDOWN).
 */
CIO_EXTERN int cio_loop_shutdown(cio_loop_t *loop);

/*
 * Closes the loop: frees everything it owns (stacks, pooled futures, tasks
 * and handles; pending callbacks and timers are discarded, as in asyncio, and
 * caller-owned handles become inactive). The default thread pool is shut
 * down: its queued jobs are cancelled, running ones waited for, and the
 * results of every pool job that has finished are delivered to their
 * futures first. Idempotent: returns 0, also for an already closed loop or
 * NULL; -EBUSY if it is running, still has unfinished tasks (call
 * cio_loop_shutdown() first), generators created on it are still alive
 * (cio_gen_free them first), or jobs of it are still queued or running on
 * an executor made with cio_executor_new (wait for their futures, or shut
 * the executor down); nothing is freed then. In debug mode the reason and
 * the objects still open are reported on stderr. The loop object itself
 * stays valid (cio_loop_is_closed) until cio_loop_free().
 */
CIO_EXTERN int cio_loop_close(cio_loop_t *loop);

/*
 * Closes the loop if needed and frees the object. Returns 0, or -EBUSY as
 * cio_loop_close (nothing done then), or -EBUSY while futures or tasks of
 * the loop are still referenced: the loop has been closed then, but the
 * object is kept (they point at it); release them and call again. Debug mode
 * says how many. NULL is a no-op (0).
 */
CIO_EXTERN int cio_loop_free(cio_loop_t *loop);

/*
 * Call in the child after fork() before using a loop created before the fork
 * (libuv's uv_loop_fork): the epoll instance or io_uring ring, the wake-up
 * eventfd and the registrations were shared with the parent; this gives the
 * child its own and registers every watcher again. The thread pools start
 * afresh (the parent's threads do not exist in the child): every job
 * queued or running at the fork ends cancelled in the child (its future
 * finishes with -ECANCELED and fn does not run there; a job that was
 * running completes normally in the parent). Tasks and timers carry on.
 * A child that does not call it may only exec or _exit. Returns 0,
 * -EINVAL, -ESHUTDOWN (closed), -EBUSY (running, or io_uring operations in
 * flight: they belong to the parent's ring), or the backend's error.
 */
CIO_EXTERN int cio_loop_fork(cio_loop_t *loop);

/*
 * Debug mode (also turned on by the environment variable CIO_DEBUG=1 when the
 * loop is created): errors of tasks never retrieved are reported when freed,
 * callbacks and task steps that hold the loop longer than the slow-callback
 * threshold are reported with the task's name, and closing reports what is
 * still open.
 */
CIO_EXTERN void cio_loop_set_debug(cio_loop_t *loop, bool enabled);
/* Whether debug mode is on; false for NULL (set_debug: NULL is a no-op). */
CIO_EXTERN bool cio_loop_get_debug(const cio_loop_t *loop);

/* Slow-callback threshold in seconds (default 0.1; INFINITY: never report).
 * NULL, NaN and negative values change nothing. */
CIO_EXTERN void cio_loop_set_slow_callback_duration(cio_loop_t *loop, double seconds);

/* ------------------------------------------------------------------------ */
/* File-descriptor watchers (asyncio add_reader / add_writer)               */
/* ------------------------------------------------------------------------ */

/*
 * Calls cb(arg) on every loop iteration while fd is readable (level
 * triggered), until cio_remove_reader(). Replaces an existing reader of fd.
 * Returns 0, -EINVAL (negative fd, NULL loop or cb), -EBADF (fd not open;
 * checked before the fd table grows, so a huge number costs nothing),
 * -EBUSY (a task waits on that fd and direction), -ESHUTDOWN (closed loop),
 * -ENOMEM, or the backend's error: on epoll, epoll_ctl's (-EPERM for a
 * regular file, which epoll does not support); io_uring reports regular
 * files always ready, as poll(2) does.
 */
CIO_EXTERN int cio_add_reader(cio_loop_t *loop, int fd, cio_callback_fn cb, void *arg);

/* As cio_add_reader for writability. */
CIO_EXTERN int cio_add_writer(cio_loop_t *loop, int fd, cio_callback_fn cb, void *arg);

/*
 * Stops watching fd. Returns 1 if a watcher was removed, 0 if none, -EINVAL
 * (loop NULL or fd negative).
 */
CIO_EXTERN int cio_remove_reader(cio_loop_t *loop, int fd);
CIO_EXTERN int cio_remove_writer(cio_loop_t *loop, int fd);

#define CIO_READABLE 1
#define CIO_WRITABLE 2

/*
 * Await point: suspends the current task until fd is readable or writable
 * (events: CIO_READABLE, CIO_WRITABLE or both; with both it returns as soon
 * as either fires). Returns the ready events (> 0: the bits of `events` that
 * fired, so the caller knows which direction to serve), -ECANCELED,
 * -ETIMEDOUT (scope deadline), -EBUSY if a task or watcher already waits on
 * the same fd and direction, -EINVAL, -EPERM outside a task, -ENOMEM, or the
 * backend's registration error (-EBADF, -EPERM for a regular file on epoll).
 * -EBADF also when another task or callback closes fd with cio_close while
 * this one waits (it is woken rather than left waiting forever).
 */
CIO_EXTERN int cio_wait_fd(int fd, int events);

/* ------------------------------------------------------------------------ */
/* I/O operations (asyncio loop.sock_*, and reads/writes on any fd)          */
/* ------------------------------------------------------------------------ */

/*
 * Every call here is an await point of the current task: it takes part in
 * cancellation and in the deadlines of enclosing scopes (so cio_wait_for and
 * deadline scopes bound it). Outside a task they return -EPERM. Results are
 * a count (>= 0) or a negative errno; EINTR is retried inside, never
 * returned. Besides the codes each call lists and the system call's own,
 * every call here may return -EINVAL (a NULL buffer with a non-zero length,
 * a negative or too large iovec count, addr and addrlen not both given),
 * -EBADF (a negative fd, or the fd closed with cio_close while the call
 * waits), -ECANCELED, -ETIMEDOUT, -ENOMEM (the loop's fd table cannot grow,
 * or the timer of a deadline cannot be armed) and -EBUSY (epoll: another
 * task already waits on the same fd and direction; io_uring: the submission
 * queue is full and cannot be flushed). They work on both backends: on epoll a call is tried, and on
 * EAGAIN the task waits for readiness and tries again; on io_uring the
 * operation is submitted (all operations of one loop iteration in one system
 * call) and the task parks until its completion. The fd must be
 * non-blocking on epoll (sockets made by cio_socket and cio_sock_accept
 * are); a blocking fd blocks the loop there.
 *
 * Closing an fd that tasks are blocked on: use cio_close, which wakes every
 * task waiting on the fd (and, on io_uring, cancels the operations the
 * kernel holds on it) so that they return -EBADF; a plain close(2) leaves
 * them waiting. Only the operations on fd itself are cancelled, not those on
 * other descriptors of the same file (dup).
 *
 * Two tasks doing the same direction on one fd at once: on epoll the second
 * gets -EBUSY (one waiter per fd and direction, as with cio_wait_fd, and
 * none while cio_add_reader/writer holds that direction); on io_uring both
 * operations are submitted. Every call may also return -ENOMEM (the fd table
 * or, on io_uring, the submission could not be had) and, on io_uring, -EBUSY
 * when the kernel takes no more submissions.
 *
 * SIGPIPE never kills the process: socket sends use MSG_NOSIGNAL, and for
 * writes to pipes and ttys the first cio_loop_new sets SIGPIPE to SIG_IGN
 * if its disposition is still the default (as CPython does at start-up); a
 * handler the program installed is left alone. A write to a closed peer
 * returns -EPIPE.
 *
 * Cancel safety: what has happened when a call returns -ECANCELED or
 * -ETIMEDOUT.
 *
 *   call                    epoll                    io_uring
 *   ----------------------  -----------------------  ------------------------------
 *   recv, recv_into,        nothing was read          nothing was read: a read that
 *   recvfrom, read, readv                             completed while the cancel was
 *                                                     in flight is returned as a
 *                                                     success (its count), and the
 *                                                     next await returns -ECANCELED
 *   send, sendto, write,    nothing was written       nothing was written, or (raced)
 *   writev                                            the count is returned as success
 *   sendall                 *sent bytes were sent     *sent bytes were sent (counted,
 *                           (the rest was not)        raced completions included)
 *   accept                  no connection taken       no connection taken, or (raced)
 *                                                     the new fd is returned
 *   connect                 the attempt is abandoned; the socket's state is
 *                           unspecified: close it (as after asyncio's)
 *   pread, pwrite, fsync,   not interruptible on epoll (regular files never
 *   close                   block on readiness); on io_uring as read/write
 */

/*
 * Creates a socket that is non-blocking and close-on-exec (socket(2) with
 * SOCK_NONBLOCK | SOCK_CLOEXEC). Not an await point. Returns the fd or a
 * negative errno (-EAFNOSUPPORT, -EMFILE, ...). The caller closes it.
 */
CIO_EXTERN int cio_socket(int domain, int type, int protocol);

/*
 * Accepts a connection on the listening socket fd (asyncio sock_accept).
 * The new socket is non-blocking and close-on-exec; its address is stored
 * in addr/addrlen when they are not NULL (*addrlen in: the room, out: the
 * size). Returns the new fd, -ECANCELED, -ETIMEDOUT, -EPERM outside a task,
 * or accept4's errors (-EMFILE, -ENFILE, -EINVAL for a socket that does not
 * listen, ...). The caller closes the fd.
 */
CIO_EXTERN int cio_sock_accept(int fd, struct sockaddr *addr, socklen_t *addrlen);

/*
 * Connects the non-blocking socket fd to addr (asyncio sock_connect).
 * Returns 0, -ECONNREFUSED, -ETIMEDOUT (also a scope deadline),
 * -ECANCELED, -ENETUNREACH, -EAGAIN (nothing started: a Unix listener's
 * backlog is full, or no local port is free), -ENOENT (no such Unix path),
 * -EPERM outside a task, or connect's errors.
 */
CIO_EXTERN int cio_sock_connect(int fd, const struct sockaddr *addr, socklen_t addrlen);

/*
 * Receives up to len bytes (asyncio sock_recv into caller memory). Returns
 * the count (0: the peer closed its side), -ECONNRESET, -ECANCELED,
 * -ETIMEDOUT, -EPERM, or recv's errors. flags are recv(2)'s.
 */
CIO_EXTERN ssize_t cio_sock_recv(int fd, void *buf, size_t len, int flags);

/*
 * Receives into several buffers at once (asyncio sock_recv_into, scattered;
 * recvmsg underneath). Returns as cio_sock_recv.
 */
CIO_EXTERN ssize_t cio_sock_recv_into(int fd, const struct iovec *iov, int iovcnt, int flags);

/*
 * Sends up to len bytes once (one send(2), MSG_NOSIGNAL added): returns the
 * count sent, which may be less than len, -EPIPE or -ECONNRESET when the peer
 * is gone, -ECANCELED, -ETIMEDOUT, -EPERM, or send's errors.
 */
CIO_EXTERN ssize_t cio_sock_send(int fd, const void *buf, size_t len, int flags);

/*
 * Sends all len bytes (asyncio sock_sendall), waiting as often as needed.
 * Returns 0 when everything was sent, else the error (-EPIPE, -ECONNRESET,
 * -ECANCELED, -ETIMEDOUT, ...). *sent (when not NULL) receives the bytes
 * sent in every case, so a caller knows what reached the socket.
 */
CIO_EXTERN int cio_sock_sendall(int fd, const void *buf, size_t len, int flags, size_t *sent);

/*
 * Receives one datagram (asyncio sock_recvfrom): up to len bytes, the
 * sender's address in addr/addrlen when not NULL. A datagram longer than len
 * is truncated by the kernel as recvfrom(2) does; pass MSG_TRUNC in flags to
 * get its real length back. Returns the count, or errors as cio_sock_recv.
 */
CIO_EXTERN ssize_t cio_sock_recvfrom(int fd, void *buf, size_t len, int flags,
                                     struct sockaddr *addr, socklen_t *addrlen);

/*
 * Sends one datagram to addr (asyncio sock_sendto). Returns the count, or
 * errors as cio_sock_send (-EMSGSIZE for a datagram too large).
 */
CIO_EXTERN ssize_t cio_sock_sendto(int fd, const void *buf, size_t len, int flags,
                                   const struct sockaddr *addr, socklen_t addrlen);

/* recvmsg(2) / sendmsg(2) as await points (sendmsg adds MSG_NOSIGNAL). */
CIO_EXTERN ssize_t cio_sock_recvmsg(int fd, struct msghdr *msg, int flags);
CIO_EXTERN ssize_t cio_sock_sendmsg(int fd, const struct msghdr *msg, int flags);

/*
 * Reads up to len bytes from any fd (socket, pipe, tty, file). Returns the
 * count (0 at end of file), -ECANCELED, -ETIMEDOUT, -EPERM, or read's
 * errors. On epoll, a regular file is read at once (it never waits).
 */
CIO_EXTERN ssize_t cio_read(int fd, void *buf, size_t len);

/*
 * Writes up to len bytes once: returns the count (may be short), -EPIPE
 * when the reader is gone, -ECANCELED, -ETIMEDOUT, -EPERM, or write's
 * errors. Use cio_write_all to write everything.
 */
CIO_EXTERN ssize_t cio_write(int fd, const void *buf, size_t len);

/*
 * Writes all len bytes, retrying partial writes. Returns 0 or the error;
 * *written (when not NULL) receives the bytes written in every case.
 */
CIO_EXTERN int cio_write_all(int fd, const void *buf, size_t len, size_t *written);

/* readv(2) / writev(2) as await points; returns as cio_read / cio_write. */
CIO_EXTERN ssize_t cio_readv(int fd, const struct iovec *iov, int iovcnt);
CIO_EXTERN ssize_t cio_writev(int fd, const struct iovec *iov, int iovcnt);

/*
 * Positioned reads and writes and fsync for files (pread/pwrite/fsync;
 * datasync selects fdatasync). On io_uring they run asynchronously; on epoll
 * they run at once on the loop thread (regular files never report EAGAIN:
 * use the cio_file_* calls, which run them on the thread pool there, to keep
 * the loop free on both backends). Returns the
 * count (or 0 for fsync), -EINVAL for a negative offset, -EPERM outside a
 * task, or the system call's errors.
 */
CIO_EXTERN ssize_t cio_pread(int fd, void *buf, size_t len, int64_t offset);
CIO_EXTERN ssize_t cio_pwrite(int fd, const void *buf, size_t len, int64_t offset);
CIO_EXTERN int cio_fsync(int fd, bool datasync);

/*
 * Closes fd after dropping every watcher and waiter the running loop has on
 * it (so a reused fd number never sees stale interest). Returns 0 or
 * close's error (-EBADF, -EIO); the fd is closed in every case but -EBADF.
 * May be called from a task or from a callback of the running loop.
 */
CIO_EXTERN int cio_close(int fd);

/* ------------------------------------------------------------------------ */
/* Tasks                                                                     */
/* ------------------------------------------------------------------------ */

/* Default coroutine stack size: 256 KiB of address space, committed lazily. */
#define CIO_DEFAULT_STACK_SIZE (256u * 1024u)

/* Options of cio_spawn_ex. Zero-initialise and set what you need. */
typedef struct cio_spawn_opts {
    const char *name;   /* copied; NULL gives "Task-<id>" */
    size_t stack_size;  /* 0 = CIO_DEFAULT_STACK_SIZE; rounded up to pages */
    void *reserved_[2]; /* must be zero (room for later options) */
} cio_spawn_opts_t;

/*
 * Creates a task running fn(arg, &result) on the running loop and schedules
 * it (asyncio create_task). The task starts on a later loop iteration.
 * Stores a new reference in *out (NULL on failure); the caller releases it
 * with cio_future_release(), and the task runs on whether or not references
 * remain. out may be NULL: fire and forget (no reference is handed out; the
 * loop keeps the task until it finishes, and cio_loop_shutdown cancels it).
 * Returns 0, -EPERM (no running loop), -EINVAL (fn NULL), -ENOMEM (no
 * control block). A task that cannot get a stack when it first runs fails
 * with -ENOMEM as its status, without running.
 *
 * A task cancelled before it starts still runs its body, with every await
 * point returning -ECANCELED, so that the body can free what arg owns.
 */
CIO_EXTERN int cio_spawn(cio_task_t **out, cio_task_fn fn, void *arg);

/* As cio_spawn with a name (copied). Also -ENOMEM for the copy. */
CIO_EXTERN int cio_spawn_named(cio_task_t **out, const char *name, cio_task_fn fn,
                               void *arg);

/*
 * As cio_spawn on a given loop (NULL = the running loop; the loop need not
 * be running: the task starts when it runs), with options (NULL for
 * defaults). Loop thread only. Returns 0, -EPERM (loop NULL and no loop
 * runs), -EINVAL (fn NULL, or opts->reserved_ not zero), -ESHUTDOWN (loop
 * closed), -ENOMEM (control block or name copy).
 */
CIO_EXTERN int cio_spawn_ex(cio_task_t **out, cio_loop_t *loop, cio_task_fn fn, void *arg,
                            const cio_spawn_opts_t *opts);

/* The task currently running on this thread, or NULL (borrowed reference). */
CIO_EXTERN cio_task_t *cio_current_task(void);

/*
 * Fills out[0..cap) with borrowed pointers to the loop's unfinished tasks and
 * returns how many there are (which may exceed cap; out may be NULL to just
 * count). loop NULL = the running loop; -EPERM when none runs.
 */
CIO_EXTERN ssize_t cio_all_tasks(cio_loop_t *loop, cio_task_t **out, size_t cap);

/*
 * Requests cancellation (asyncio Task.cancel). The task's current await point
 * returns -ECANCELED (if it awaits another task or future, that one is
 * cancelled too and waited for, as asyncio does), and so does every later
 * one outside shielded scopes. Returns 1 if the request was made, 0 if the
 * task is already done, -EINVAL if t is not a task.
 */
CIO_EXTERN int cio_task_cancel(cio_task_t *t);

/* True if cancellation was requested for the task (asyncio cancelling()). */
CIO_EXTERN bool cio_task_cancelling(const cio_task_t *t);

/* The task's name (never NULL for a task; valid while the task lives). */
CIO_EXTERN const char *cio_task_get_name(cio_task_t *t);

/* Renames the task (copied). Returns 0, -EINVAL or -ENOMEM. */
CIO_EXTERN int cio_task_set_name(cio_task_t *t, const char *name);

/* True if f is a task rather than a plain future. */
CIO_EXTERN bool cio_future_is_task(const cio_future_t *f);

/*
 * Writes one line per unfinished task of the loop (NULL = running loop) to
 * `out` (NULL = stderr): its name, state (created, ready, running, waiting)
 * and what it waits on. Returns 0, or -EPERM (loop NULL and no loop runs;
 * nothing is written).
 */
CIO_EXTERN int cio_dump_tasks(cio_loop_t *loop, FILE *out);

/* ------------------------------------------------------------------------ */
/* Awaiting                                                                  */
/* ------------------------------------------------------------------------ */

/*
 * Await point: waits until f is done and returns its status (0 or its
 * error code), storing its result in *result if result is not NULL. If the
 * awaiting task is cancelled (or a deadline scope expires) meanwhile, f is
 * cancelled too and waited for (asyncio semantics; use cio_shield() to
 * protect f), then -ECANCELED (or -ETIMEDOUT) is returned. Returns -EPERM
 * outside a task, -EINVAL for NULL, -EDEADLK when a task awaits itself,
 * -ENOMEM when the timer of an enclosing deadline cannot be armed (f is then
 * cancelled and waited for as above). Does not release f.
 */
CIO_EXTERN int cio_await(cio_future_t *f, void **result);

/*
 * Await point: suspends the current task for `delay` seconds (asyncio
 * sleep). cio_sleep(0) yields to the other ready tasks and callbacks once.
 * Returns 0, -ECANCELED, -ETIMEDOUT (an enclosing deadline came first),
 * -EINVAL (NaN), -EPERM outside a task, -ENOMEM (the timer cannot be armed).
 */
CIO_EXTERN int cio_sleep(double delay);

/* As cio_sleep, until the absolute monotonic time when_ns (no -EINVAL). */
CIO_EXTERN int cio_sleep_until_ns(int64_t when_ns);

/*
 * cio_sleep(0): lets every other ready task run once. Returns 0, -ECANCELED,
 * -ETIMEDOUT, -EPERM outside a task.
 */
CIO_EXTERN int cio_yield(void);

/*
 * Not an await point (it never suspends): returns what an await point
 * called now would return before waiting, that is -ECANCELED when the task
 * or an enclosing scope is cancelled, -ETIMEDOUT when an enclosing deadline
 * has passed, else 0; -EPERM outside a task. For code about to start
 * something it could not take back once begun (a statement sent to a
 * server), so that a cancelled task does not start it at all.
 */
CIO_EXTERN int cio_check_cancel(void);

/* ------------------------------------------------------------------------ */
/* Futures                                                                   */
/* ------------------------------------------------------------------------ */

/*
 * Creates a pending future on `loop` (NULL = running loop; asyncio
 * loop.create_future) and stores a new reference in *out (NULL on failure);
 * the caller releases it with cio_future_release(). Returns 0, -EINVAL (out
 * NULL), -EPERM (loop NULL and no loop runs), -ESHUTDOWN (loop closed),
 * -ENOMEM.
 */
CIO_EXTERN int cio_future_new(cio_future_t **out, cio_loop_t *loop);

/* Adds a reference. Returns f. */
CIO_EXTERN cio_future_t *cio_future_ref(cio_future_t *f);

/*
 * Drops a reference. When the last one goes the future is freed: a done one
 * at once; a running task or pool job holds a reference of its own until it
 * finishes; a pending plain future is freed too, with its done callbacks,
 * which then never run (nobody can complete it: completing takes a
 * reference, and every waiter - cio_await, gather, wait, as_completed, shield
 * - holds one while it waits). A release more than there were references is
 * reported on stderr and otherwise ignored while the memory is not reused
 * (a caller's bug). NULL is a no-op.
 */
CIO_EXTERN void cio_future_release(cio_future_t *f);

/*
 * Completes a pending future with a value (status 0) or an error code
 * (negative; -ECANCELED is the same as cio_future_cancel). Waiters resume and
 * done callbacks are scheduled on the next iteration. Returns 0, -EINVAL (f
 * NULL, a code >= 0, or f is a task or a pool job's future), -EALREADY if f
 * is already done, -ESHUTDOWN if its loop is closed.
 */
CIO_EXTERN int cio_future_set_result(cio_future_t *f, void *value);
CIO_EXTERN int cio_future_set_error(cio_future_t *f, int err);

/*
 * Cancels a future (for a task: cio_task_cancel). Returns 1 if cancelled or
 * cancellation requested, 0 if already done or not cancellable (a thread-pool
 * job that already started, a future of a closed loop, NULL).
 */
CIO_EXTERN int cio_future_cancel(cio_future_t *f);

/* True once f has a value, an error, or was cancelled. False for NULL. */
CIO_EXTERN bool cio_future_done(const cio_future_t *f);

/* True if f ended cancelled (a task whose body returned -ECANCELED too). */
CIO_EXTERN bool cio_future_cancelled(const cio_future_t *f);

/*
 * The status of a done future: 0, a positive task return value, or its
 * error code; -EAGAIN if it is not done yet (asyncio InvalidStateError),
 * -EINVAL for NULL. Marks the error as retrieved. If result is not NULL,
 * stores the value.
 */
CIO_EXTERN int cio_future_result(cio_future_t *f, void **result);

/* A done callback: receives the future (borrowed) and its argument. */
typedef void (*cio_done_fn)(cio_future_t *f, void *arg);

/*
 * Schedules cb(f, arg) once f is done (on the next iteration if it already
 * is); callbacks run in registration order and f stays alive until they have
 * run. Returns 0, -EINVAL (NULL f or cb), -ESHUTDOWN (f's loop is closed),
 * -ENOMEM.
 */
CIO_EXTERN int cio_future_add_done_callback(cio_future_t *f, cio_done_fn cb, void *arg);

/* Removes every done callback equal to (cb, arg). Returns how many (0 for NULL). */
CIO_EXTERN int cio_future_remove_done_callback(cio_future_t *f, cio_done_fn cb, void *arg);

/*
 * asyncio.shield: stores in *out a new future (a new reference, NULL on
 * failure) that completes with f's outcome, but whose cancellation does not
 * cancel f. The caller releases both. Returns 0, -EINVAL (out or f NULL),
 * -ESHUTDOWN (f's loop is closed), -ENOMEM (the future or the done callback
 * on f).
 */
CIO_EXTERN int cio_shield(cio_future_t **out, cio_future_t *f);

/* ------------------------------------------------------------------------ */
/* Cancel scopes, timeouts, shields                                          */
/* ------------------------------------------------------------------------ */

/*
 * A scope is a region of a task's code with its own deadline, cancellation
 * and shielding; scopes nest and live on the task's stack. asyncio.timeout()
 * is a scope with a deadline; a shielded scope ignores cancellation from
 * outside it (for cleanup that must await). Fields are private.
 */
typedef struct cio_scope {
    struct cio_scope *parent_;
    void *task_;
    int64_t deadline_;  /* absolute ns; INT64_MAX = none */
    uint8_t flags_;
    uint8_t state_;     /* 0, cancelled, expired */
} cio_scope_t;

#define CIO_SCOPE_SHIELD 1u

/*
 * Enters a scope in the current task with a relative timeout in seconds
 * (INFINITY for none) and flags (0 or CIO_SCOPE_SHIELD). Returns 0, -EPERM
 * outside a task, -EINVAL (s NULL, unknown flags, NaN). Every
 * cio_scope_enter must be paired with cio_scope_exit in LIFO order.
 */
CIO_EXTERN int cio_scope_enter(cio_scope_t *s, double timeout, unsigned flags);

/* As cio_scope_enter with an absolute deadline in ns (INT64_MAX = none). */
CIO_EXTERN int cio_scope_enter_at_ns(cio_scope_t *s, int64_t deadline_ns, unsigned flags);

/*
 * Leaves the scope. Returns -ETIMEDOUT if its deadline expired, -ECANCELED if
 * it was cancelled with cio_scope_cancel(), else 0; -EINVAL if s is not the
 * innermost scope of the current task (it is removed all the same, with the
 * scopes inside it).
 */
CIO_EXTERN int cio_scope_exit(cio_scope_t *s);

/* Cancels everything inside the scope (from any task of its loop). NULL, or a
 * scope not entered or already cancelled or expired: no-op. */
CIO_EXTERN void cio_scope_cancel(cio_scope_t *s);

/*
 * Moves the deadline (asyncio Timeout.reschedule); INFINITY for none.
 * Returns 0, -EINVAL (s NULL or not entered, NaN). A task waiting in the
 * scope gets -ENOMEM from its await point if the new timer cannot be armed.
 */
CIO_EXTERN int cio_scope_reschedule(cio_scope_t *s, double timeout);
CIO_EXTERN int cio_scope_reschedule_at_ns(cio_scope_t *s, int64_t deadline_ns);

/* True once the deadline of s has expired (asyncio Timeout.expired()). */
CIO_EXTERN bool cio_scope_expired(const cio_scope_t *s);

/* The absolute deadline of s in ns, INT64_MAX for none. */
CIO_EXTERN int64_t cio_scope_deadline_ns(const cio_scope_t *s);

/*
 * asyncio.wait_for: awaits f for at most timeout seconds. On time-out f is
 * cancelled and waited for, and -ETIMEDOUT is returned. A future already
 * done gives its outcome whatever the timeout. Otherwise as cio_await, plus
 * -EINVAL for a NaN timeout. Does not release f.
 */
CIO_EXTERN int cio_wait_for(cio_future_t *f, double timeout, void **result);

/* ------------------------------------------------------------------------ */
/* Combinators                                                               */
/* ------------------------------------------------------------------------ */

/* cio_gather flag: collect every status, as gather(return_exceptions=True). */
#define CIO_GATHER_ALL 1u

/*
 * asyncio.gather over n futures/tasks. results[i] (if results is not NULL)
 * receives fs[i]'s value and statuses[i] (if not NULL) its status, in order.
 *
 * By default, returns 0 once all succeed, or the first error as soon as it
 * happens while the others run on (their slots are filled only if already
 * done; statuses[i] is -EAGAIN for the others). With CIO_GATHER_ALL, waits
 * for all and returns 0; the statuses tell who failed. If the calling task
 * is cancelled (or an enclosing deadline expires), every child is cancelled
 * and waited for, and -ECANCELED (-ETIMEDOUT) is returned; the same happens
 * with -ENOMEM when the timer of an enclosing deadline cannot be armed.
 * Other errors of the call itself, returned before anything waits or is
 * cancelled: -EPERM outside a task, -EINVAL for a NULL array with n > 0 or
 * a NULL entry, -ENOMEM when no node for an internal done callback can be
 * allocated. Does not release fs.
 */
CIO_EXTERN int cio_gather(cio_future_t *const *fs, size_t n, void **results,
                          int *statuses, unsigned flags);

enum cio_return_when {
    CIO_ALL_COMPLETED = 0,
    CIO_FIRST_COMPLETED = 1,
    CIO_FIRST_EXCEPTION = 2
};

/*
 * asyncio.wait: waits until the condition or the timeout (seconds, INFINITY
 * for none). Returns how many of fs are done (use cio_future_done() to tell
 * which); the timeout is not an error and cancels nothing. Errors (fs are
 * never cancelled): -ECANCELED if the caller is cancelled, -ETIMEDOUT if an
 * enclosing deadline expires, -EINVAL (NULL array with n > 0, a NULL entry,
 * an unknown return_when, a NaN timeout), -EPERM outside a task, -ENOMEM
 * (no node for an internal done callback, or the timer cannot be armed).
 * Does not release fs.
 */
CIO_EXTERN int cio_wait(cio_future_t *const *fs, size_t n, int return_when,
                        double timeout);

/*
 * asyncio.as_completed as an iterator: init with the futures and an overall
 * timeout, then call next until it returns 0. The iterator is caller storage
 * and holds no resources after next has returned 0 or an error, or after
 * cio_as_completed_cleanup().
 */
typedef struct cio_as_completed {
    void *state_; /* private */
} cio_as_completed_t;

/*
 * Returns 0, -EINVAL (it NULL, fs NULL with n > 0, a NULL entry, a NaN
 * timeout), -ENOMEM. fs must stay valid while the iterator is used.
 */
CIO_EXTERN int cio_as_completed_init(cio_as_completed_t *it, cio_future_t *const *fs,
                                     size_t n, double timeout);

/*
 * Await point: stores in *out the next future to complete (in completion
 * order; borrowed, as fs[i]) and returns 1; returns 0 when all have been
 * returned, -ETIMEDOUT when the overall timeout (or an enclosing deadline)
 * expires, -ECANCELED, -ENOMEM (the timer cannot be armed), -EINVAL (it or
 * out NULL), -EPERM outside a task. After 0 or the overall timeout the
 * iterator holds nothing; after another error call cio_as_completed_cleanup.
 */
CIO_EXTERN int cio_as_completed_next(cio_as_completed_t *it, cio_future_t **out);

/* Releases what the iterator holds (idempotent). NULL is a no-op. */
CIO_EXTERN void cio_as_completed_cleanup(cio_as_completed_t *it);

/* ------------------------------------------------------------------------ */
/* Task groups (asyncio.TaskGroup)                                            */
/* ------------------------------------------------------------------------ */

typedef struct cio_group cio_group_t;

/*
 * Opens a task group in the current task and stores it in *out (NULL on
 * failure); the caller frees it with cio_group_free(). The code between
 * cio_group_new and cio_group_wait runs inside the group's scope: when a
 * child fails, the siblings are cancelled and so is that scope (the
 * parent's await points there return -ECANCELED). Returns 0, -EINVAL (out
 * NULL), -EPERM (not in a task), -ENOMEM.
 */
CIO_EXTERN int cio_group_new(cio_group_t **out);

/*
 * Spawns a child in the group (name copied; NULL gives "Task-<id>"). Stores
 * in *out a borrowed task pointer, valid until cio_group_free (NULL on
 * failure); out may be NULL (the group keeps the child either way). Returns
 * 0, -EINVAL (g or fn NULL, or the group already waited), -ENOMEM (nothing
 * was spawned). A child spawned into a group that is already failing starts
 * cancelled.
 */
CIO_EXTERN int cio_group_spawn(cio_task_t **out, cio_group_t *g, const char *name,
                               cio_task_fn fn, void *arg);

/*
 * Await point: leaves the group's scope and waits for every child. Returns 0,
 * the error of the first child that failed (all errors: cio_group_errors),
 * -ECANCELED / -ETIMEDOUT if the parent was cancelled from outside or an
 * enclosing deadline expired, or -ENOMEM if that deadline's timer cannot be
 * armed (in those three cases the children are cancelled and waited for).
 * Children are always finished when it returns. -EINVAL (g NULL, or already
 * waited), -EPERM (not called from the task that opened the group).
 */
CIO_EXTERN int cio_group_wait(cio_group_t *g);

/*
 * After cio_group_wait: the number of children that failed (status < 0 other
 * than cancellations caused by the group), and for the first `cap` of them
 * their error codes and tasks (borrowed), in the order they failed.
 */
CIO_EXTERN size_t cio_group_errors(const cio_group_t *g, int *codes,
                                   cio_task_t **tasks, size_t cap);

/*
 * Frees the group and releases its children. Call after cio_group_wait;
 * children of a group freed without waiting are cancelled and run on
 * detached. NULL is a no-op.
 */
CIO_EXTERN void cio_group_free(cio_group_t *g);

/* ------------------------------------------------------------------------ */
/* Task-local values (contextvars)                                           */
/* ------------------------------------------------------------------------ */

/*
 * Sets a task-local value for `key` (any unique address, e.g. of a static
 * variable) in the current task. Tasks spawned afterwards inherit a snapshot
 * of the values; later changes in either task are not seen by the other.
 * Returns 0, -EPERM outside a task, -EINVAL (key NULL), -ENOMEM.
 */
CIO_EXTERN int cio_local_set(const void *key, void *value);

/* The current task's value for key, or `dflt` when unset / not in a task. */
CIO_EXTERN void *cio_local_get(const void *key, void *dflt);

/* ------------------------------------------------------------------------ */
/* Thread pool executor (run_in_executor, to_thread)                         */
/* ------------------------------------------------------------------------ */

typedef struct cio_executor cio_executor_t;

/*
 * Creates a pool of at most max_workers threads (0 = min(32, cores + 4), as
 * Python's) and stores it in *out (NULL on failure). Threads start on
 * demand. Returns 0, -EINVAL (out NULL), -ENOMEM. The caller ends it with
 * cio_executor_shutdown(), which frees it.
 */
CIO_EXTERN int cio_executor_new(cio_executor_t **out, unsigned max_workers);

/*
 * Stops the pool and frees it: jobs not yet started are cancelled (their
 * futures finish with -ECANCELED), running jobs complete. With wait, joins
 * the threads before returning; without, the threads are detached. The
 * pool's memory is released once its threads have ended and the results
 * of its jobs have been delivered to their loops. Either way ex must not be
 * used after the call. In a child after fork(), the parent's threads are
 * not waited for: the jobs they were running end cancelled in the child
 * (see cio_loop_fork). NULL is a no-op.
 */
CIO_EXTERN void cio_executor_shutdown(cio_executor_t *ex, bool wait);

/*
 * Runs fn(arg, &result) on a pool thread (ex NULL = the loop's default pool:
 * the one given to cio_loop_set_default_executor, else one created on first
 * use with at most min(32, cores + 4) threads; shut down by
 * cio_loop_shutdown, which runs its queued jobs too and waits for them
 * while the loop runs, or by cio_loop_close, which cancels the queued ones
 * and waits for the running ones) and stores a future of its outcome in
 * *out (a new reference, NULL on failure); the caller releases it. loop
 * NULL = the running loop. Returns 0, -EINVAL (out or fn NULL), -EPERM
 * (loop NULL and no loop runs), -ESHUTDOWN (loop closed, or ex shut down;
 * ex NULL: the default pool shut down, for good, by
 * cio_shutdown_default_executor or cio_loop_shutdown), -ENOMEM (the job,
 * its future, or the default pool), -EAGAIN (the pool has no thread and
 * none can be created). Nothing
 * was queued on failure. The future can be cancelled only before the job
 * starts; arg must stay valid until the future is done. While the job is
 * queued or running on an executor other than the default pool, the loop
 * refuses to close (cio_loop_close: -EBUSY). After fork(), the job ends
 * cancelled in the child (see cio_loop_fork).
 */
CIO_EXTERN int cio_run_in_executor(cio_future_t **out, cio_loop_t *loop, cio_executor_t *ex,
                                   cio_task_fn fn, void *arg);

/*
 * Await point (asyncio.to_thread): runs fn on the default pool and waits for
 * it. Returns fn's status with its result in *result (if result is not
 * NULL). If the caller is cancelled while fn runs, it still waits for fn to
 * finish (fn may use memory the caller owns), then returns -ECANCELED
 * (-ETIMEDOUT for an enclosing deadline; -ENOMEM when that deadline's timer
 * cannot be armed). Errors before fn runs (fn did not run): -ECANCELED /
 * -ETIMEDOUT (the caller is already cancelled), -EPERM outside a task,
 * -EINVAL (fn NULL), -ENOMEM, -ESHUTDOWN (the default pool was shut down:
 * cio_shutdown_default_executor, cio_loop_shutdown), -EAGAIN (no pool
 * thread exists and none can be created). Once fn is queued, only the
 * caller's own cancellation keeps it from running: shutting the default
 * pool down while the loop runs (cio_shutdown_default_executor,
 * cio_loop_shutdown) runs the queued jobs. In a child after fork()
 * (cio_loop_fork), a call that was waiting at the fork returns
 * -ECANCELED: fn does not run in the
 * child (in the parent, the call completes normally).
 */
CIO_EXTERN int cio_to_thread(cio_task_fn fn, void *arg, void **result);

/* ------------------------------------------------------------------------ */
/* Running (asyncio.run and Runner)                                          */
/* ------------------------------------------------------------------------ */

/* What Ctrl-C (SIGINT) does to a run: the sigint field of cio_run_opts_t. */
typedef enum cio_sigint_mode {
    CIO_SIGINT_RAISE = 0, /* cancel the main task; cio_run then re-raises
                             SIGINT (the default, as asyncio.run) */
    CIO_SIGINT_EINTR = 1, /* cancel the main task; cio_run returns -EINTR */
    CIO_SIGINT_OFF = 2    /* install no SIGINT handler at all */
} cio_sigint_mode_t;

/* Options of cio_run_ex and cio_runner_new. Zero-initialise. */
typedef struct cio_run_opts {
    bool debug;           /* debug mode (also CIO_DEBUG=1) */
    uint8_t sigint;       /* a cio_sigint_mode_t (see cio_run); above 2: -EINVAL */
    const char *name;     /* name of the main task (default "main") */
    size_t stack_size;    /* stack of the main task (0 = default) */
    void *reserved_[2];   /* must be zero (room for later options) */
} cio_run_opts_t;

/*
 * asyncio.run: creates a loop, runs fn(arg, &result) as the main task until
 * it finishes, cancels the tasks left over and waits for them, shuts the
 * thread pool down, and closes and frees the loop. Returns the main task's
 * status; stores its result in *result when result is not NULL. Errors of
 * the call itself: -EINVAL (fn NULL, opts->reserved_ not zero, opts->sigint
 * above 2), -EBUSY (a loop already runs in this thread), -ENOMEM, the
 * loop-creation errors of cio_loop_new, -EINTR (the main task stopped the
 * loop with cio_loop_stop; or Ctrl-C with CIO_SIGINT_EINTR, below).
 * A future or task of the loop still referenced when the run ends (a
 * missing cio_future_release) keeps the loop from being freed: it leaks
 * (debug mode reports it).
 *
 * Ctrl-C, as asyncio.run: when called on the process's main thread while
 * SIGINT has its default disposition (not ignored, no handler), cio_run
 * handles SIGINT while the main task runs (opts->sigint = CIO_SIGINT_OFF:
 * it does not). The first SIGINT cancels the main task, which sees
 * -ECANCELED at its await points and may clean up. If it then ends with
 * -ECANCELED, the run counts as interrupted: SIGINT's previous disposition
 * is already back, the tasks left over are cancelled and waited for, the
 * pool and the loop are closed as usual, and then cio_run re-raises SIGINT
 * with its default action, so the process ends killed by SIGINT (shell
 * status 130), as Python ends on an uncaught KeyboardInterrupt; with
 * CIO_SIGINT_EINTR it returns -EINTR instead. A main task that handles the
 * cancellation and returns another status ends the run normally. A second
 * SIGINT while the main task is still cleaning up, or one after it has
 * finished, ends the process at once (default action). The handler is
 * installed only while the main task runs; cio_signal_add(SIGINT) from a
 * task replaces it, as loop.add_signal_handler replaces asyncio's.
 */
CIO_EXTERN int cio_run(cio_task_fn fn, void *arg);
CIO_EXTERN int cio_run_ex(cio_task_fn fn, void *arg, void **result,
                          const cio_run_opts_t *opts);

/* asyncio.Runner: several top-level calls in one loop. */
typedef struct cio_runner cio_runner_t;

/*
 * Creates a runner and its loop and stores it in *out (NULL on failure); the
 * caller frees it with cio_runner_close(). Returns 0, -EINVAL (out NULL,
 * opts->reserved_ not zero, opts->sigint above 2), -ENOMEM, the errors of
 * cio_loop_new.
 */
CIO_EXTERN int cio_runner_new(cio_runner_t **out, const cio_run_opts_t *opts);

/*
 * Runs fn as a task of the runner's loop until it finishes; returns its
 * status and stores its result in *result (if not NULL). Errors of the call
 * itself: -EINVAL (r or fn NULL), -EBUSY (a loop already runs in this
 * thread), -ENOMEM (the task or its done callback), -ESHUTDOWN (the loop was
 * closed by a cio_runner_close that returned -EBUSY), -EINTR (a task
 * stopped the loop before fn finished; fn's task runs on at the next run;
 * or Ctrl-C: fn's task, cancelled by SIGINT, ended with -ECANCELED).
 *
 * Ctrl-C, as asyncio.Runner.run: each run installs the SIGINT handler
 * cio_run describes (main thread, SIGINT at its default, opts->sigint not
 * CIO_SIGINT_OFF) and restores the previous disposition when it ends. The
 * first SIGINT cancels fn's task; a second one ends the process. Where
 * Runner.run raises KeyboardInterrupt, cio_runner_run returns -EINTR, with
 * CIO_SIGINT_RAISE as with CIO_SIGINT_EINTR (the runner is the caller's to
 * close; to end as Python does, close it, then raise(SIGINT)).
 */
CIO_EXTERN int cio_runner_run(cio_runner_t *r, cio_task_fn fn, void *arg, void **result);

/* The runner's loop (borrowed). NULL for NULL. */
CIO_EXTERN cio_loop_t *cio_runner_get_loop(cio_runner_t *r);

/*
 * Shuts the loop down as cio_run does, then frees the loop and the runner.
 * Returns 0 (also for NULL, a no-op), or -EBUSY when the loop cannot be
 * freed: futures or tasks of the loop are still referenced, or generators
 * started on it are alive (the loop may be closed then, but nothing is
 * freed: release them and call again), or a loop runs in this thread
 * (called from a task).
 */
CIO_EXTERN int cio_runner_close(cio_runner_t *r);

/* ------------------------------------------------------------------------ */
/* Synchronisation primitives (sync.c)                                       */
/* ------------------------------------------------------------------------ */

/*
 * asyncio's Lock, Event, Condition, Semaphore, BoundedSemaphore and Barrier
 * for the tasks of one loop (not thread-safe, as in asyncio). The objects are
 * caller storage: embed them anywhere, initialise them with their *_init
 * call (or the *_INIT macro where there is one), and neither move, copy nor
 * free one while a task waits on it. Their fields are private. None of them
 * owns memory, so none needs a destroy call.
 *
 * Every blocking call below is an await point: it may only be called from a
 * task (-EPERM elsewhere), it first checks the caller's cancellation state
 * (so it returns -ECANCELED or -ETIMEDOUT at once in a cancelled task or an
 * expired cio_scope_enter() deadline, even when it would not suspend), and a
 * timeout around it is a scope. Waiters are served in strict FIFO order and
 * every wake-up is a direct hand-off: the lock, the permit or the
 * notification is given to the first waiter when it is released, so a task
 * that has been handed something keeps it and its call returns success even
 * if it is cancelled before it runs again (its next await point then reports
 * the cancellation). A waiter interrupted before that leaves nothing behind:
 * no lock held, no permit taken, no wake-up lost for the others.
 */

/* Private: the FIFO list of tasks suspended on one of the objects below. */
struct cio__waiter;
typedef struct cio_waitq {
    struct cio__waiter *head_, *tail_;
} cio_waitq_t;

/* --- Lock (asyncio.Lock) ------------------------------------------------ */

/*
 * A mutual-exclusion lock for tasks. Not recursive. A release hands the lock
 * straight to the longest waiting task (no barging: a task that releases and
 * acquires again queues behind the waiters). As in asyncio, the lock is not
 * tied to a task: any code may release it.
 */
typedef struct cio_lock {
    cio_waitq_t waiters_;
    void *owner_;     /* the task that acquired it, NULL when free or taken
                         outside a task */
    uint8_t locked_;
} cio_lock_t;

#define CIO_LOCK_INIT {{NULL, NULL}, NULL, 0}

/* Initialises an unlocked lock (same as CIO_LOCK_INIT). Returns 0, -EINVAL. */
CIO_EXTERN int cio_lock_init(cio_lock_t *l);

/*
 * Await point: acquires the lock, suspending while another holder has it.
 * Returns 0 (the caller holds the lock), -ECANCELED / -ETIMEDOUT (the lock
 * is not held: the caller was interrupted before being handed it), -EDEADLK
 * if the calling task already holds it (a non-recursive lock would wait
 * forever), -EINVAL for NULL, -EPERM outside a task.
 */
CIO_EXTERN int cio_lock_acquire(cio_lock_t *l);

/*
 * Acquires the lock only if that needs no wait: the lock is free and nobody
 * queues for it. Not an await point (callable from callbacks too). Returns
 * 0, -EAGAIN (held or contended: acquiring would wait), -EINVAL.
 */
CIO_EXTERN int cio_lock_try_acquire(cio_lock_t *l);

/*
 * Releases the lock, handing it to the first waiter if there is one (that
 * task resumes holding it). Not an await point; any code may call it.
 * Returns 0, -EPERM if the lock is not held (asyncio's RuntimeError), -EINVAL.
 */
CIO_EXTERN int cio_lock_release(cio_lock_t *l);

/* True while the lock is held (asyncio Lock.locked()). */
CIO_EXTERN bool cio_lock_locked(const cio_lock_t *l);

/* --- Event (asyncio.Event) ---------------------------------------------- */

/* A flag that tasks can wait for. Initially clear. */
typedef struct cio_event {
    cio_waitq_t waiters_;
    uint8_t set_;
} cio_event_t;

#define CIO_EVENT_INIT {{NULL, NULL}, 0}

/* Initialises a clear event (same as CIO_EVENT_INIT). Returns 0, -EINVAL. */
CIO_EXTERN int cio_event_init(cio_event_t *e);

/*
 * Sets the flag and wakes every waiting task; later waits return at once
 * until cio_event_clear(). Not an await point. NULL is a no-op.
 */
CIO_EXTERN void cio_event_set(cio_event_t *e);

/*
 * Clears the flag. Tasks already woken by a set still return 0 from their
 * wait. NULL is a no-op.
 */
CIO_EXTERN void cio_event_clear(cio_event_t *e);

/* True while the flag is set; false for NULL. */
CIO_EXTERN bool cio_event_is_set(const cio_event_t *e);

/*
 * Await point: waits until the flag is set (returns at once if it is).
 * Returns 0, -ECANCELED, -ETIMEDOUT, -EINVAL, -EPERM.
 */
CIO_EXTERN int cio_event_wait(cio_event_t *e);

/* --- Condition (asyncio.Condition) -------------------------------------- */

/*
 * A condition variable bound to a lock (its own, or one shared by several
 * conditions). Fields are private; the structure embeds its own lock, so it
 * must not be moved after cio_cond_init.
 */
typedef struct cio_cond {
    cio_waitq_t waiters_;
    cio_lock_t *lock_;
    cio_lock_t own_;
} cio_cond_t;

/*
 * Initialises a condition using `lock`, or a lock of its own when lock is
 * NULL (asyncio Condition(lock=None)). Returns 0 or -EINVAL (c NULL).
 */
CIO_EXTERN int cio_cond_init(cio_cond_t *c, cio_lock_t *lock);

/*
 * The condition's lock (borrowed): acquire and release it with cio_lock_*
 * (asyncio's `async with cond`). NULL for NULL.
 */
CIO_EXTERN cio_lock_t *cio_cond_lock(cio_cond_t *c);

/*
 * Await point: atomically releases the lock (which the caller must hold),
 * waits until notified, and re-acquires the lock before returning in every
 * case, also when interrupted (the re-acquisition itself cannot be
 * interrupted: asyncio re-acquires in a loop that swallows cancellation,
 * and code after a wait may rely on holding the lock). Returns 0
 * (notified), -ECANCELED / -ETIMEDOUT (interrupted before being notified;
 * a notified task returns 0 even if cancelled afterwards, and no
 * notification is lost), -EPERM if the lock is not held (nothing happens) or
 * outside a task, -EINVAL. On a cancelled entry it returns at once without
 * releasing the lock. The lock is held on return except for -EPERM/-EINVAL.
 */
CIO_EXTERN int cio_cond_wait(cio_cond_t *c);

/* A predicate for cio_cond_wait_for: true when the awaited state holds. */
typedef bool (*cio_pred_fn)(void *arg);

/*
 * Await point: waits until pred(arg) is true (asyncio Condition.wait_for):
 * evaluates it with the lock held, and calls cio_cond_wait while it is
 * false. Returns 0 (pred true, lock held), the error of cio_cond_wait (lock
 * held), -EINVAL (c or pred NULL), -EPERM (lock not held / outside a task).
 */
CIO_EXTERN int cio_cond_wait_for(cio_cond_t *c, cio_pred_fn pred, void *arg);

/*
 * Wakes up to n waiting tasks, first come first served; each returns from
 * cio_cond_wait holding the lock, once the notifier (and those queued on the
 * lock before it) released it. The lock must be held. Not an await point.
 * Returns how many were woken (capped at INT_MAX), -EPERM if the lock is
 * not held (asyncio's RuntimeError), -EINVAL.
 */
CIO_EXTERN int cio_cond_notify(cio_cond_t *c, size_t n);

/* cio_cond_notify for every waiting task. */
CIO_EXTERN int cio_cond_notify_all(cio_cond_t *c);

/* --- Semaphore and BoundedSemaphore ------------------------------------- */

/*
 * A counter of permits: acquire takes one (waiting while there is none),
 * release gives one back, handing it to the first waiter directly. A
 * bounded semaphore (asyncio BoundedSemaphore) refuses a release that would
 * raise the value above its initial value.
 */
typedef struct cio_sem {
    cio_waitq_t waiters_;
    int value_;
    int bound_;       /* the initial value if bounded, -1 otherwise */
} cio_sem_t;

/*
 * Initialises a semaphore with `value` permits (bounded: value is also the
 * maximum). Returns 0, -EINVAL (s NULL or value < 0, asyncio's ValueError).
 */
CIO_EXTERN int cio_sem_init(cio_sem_t *s, int value, bool bounded);

/*
 * Await point: takes a permit, waiting for one if the value is 0. Returns
 * 0 (a permit is held), -ECANCELED / -ETIMEDOUT (no permit taken), -EINVAL,
 * -EPERM.
 */
CIO_EXTERN int cio_sem_acquire(cio_sem_t *s);

/*
 * Takes a permit if one is free without waiting. Not an await point.
 * Returns 0, -EAGAIN (none free; as sem_trywait), -EINVAL.
 */
CIO_EXTERN int cio_sem_try_acquire(cio_sem_t *s);

/*
 * Gives a permit back: to the first waiting task if any (it resumes holding
 * it), else to the counter. Not an await point. Returns 0, -EOVERFLOW (a
 * bounded semaphore already at its initial value, asyncio's ValueError;
 * or an unbounded one at INT_MAX; the value is unchanged: never a silent
 * overflow), -EINVAL.
 */
CIO_EXTERN int cio_sem_release(cio_sem_t *s);

/* The number of free permits (0 while tasks wait). -EINVAL for NULL. */
CIO_EXTERN int cio_sem_value(const cio_sem_t *s);

/* True if an acquire would wait (asyncio Semaphore.locked()). */
CIO_EXTERN bool cio_sem_locked(const cio_sem_t *s);

/* --- Barrier (asyncio.Barrier) ------------------------------------------ */

/*
 * A barrier for a fixed number of parties: each cio_barrier_wait blocks
 * until `parties` tasks are waiting, then all of them pass. It is reusable:
 * tasks arriving while the previous round drains wait for the next round.
 */
typedef struct cio_barrier {
    cio_waitq_t waiters_;  /* arrived in this round, waiting for the last */
    cio_waitq_t blocked_;  /* arrived while the barrier drains or resets */
    unsigned parties_;
    unsigned count_;       /* tasks inside cio_barrier_wait */
    uint8_t state_;        /* filling, draining, resetting, broken */
} cio_barrier_t;

/*
 * Initialises a barrier for `parties` tasks. Returns 0, -EINVAL (b NULL,
 * parties 0 or above INT_MAX).
 */
CIO_EXTERN int cio_barrier_init(cio_barrier_t *b, unsigned parties);

/*
 * Await point: waits until `parties` tasks wait, then returns this task's
 * arrival index, 0 .. parties-1 (asyncio Barrier.wait). Returns -EPIPE when
 * the barrier is broken (cio_barrier_abort) or is reset while the task waits
 * (asyncio's BrokenBarrierError), -ECANCELED / -ETIMEDOUT (the task leaves
 * the barrier; the others keep waiting, as in asyncio), -EINVAL, -EPERM. A
 * task released by the last arrival returns its index even if it is
 * cancelled, reset or aborted before it runs again.
 */
CIO_EXTERN int cio_barrier_wait(cio_barrier_t *b);

/*
 * Returns the barrier to its initial state; tasks waiting in it get -EPIPE,
 * and new arrivals wait until they have all left. Repairs a broken barrier.
 * Not an await point (asyncio's reset is a coroutine only to take its
 * lock). NULL is a no-op.
 */
CIO_EXTERN void cio_barrier_reset(cio_barrier_t *b);

/*
 * Breaks the barrier: waiting tasks and every later cio_barrier_wait get
 * -EPIPE until cio_barrier_reset(). Not an await point. NULL is a no-op.
 */
CIO_EXTERN void cio_barrier_abort(cio_barrier_t *b);

/* True once aborted (until reset). */
CIO_EXTERN bool cio_barrier_broken(const cio_barrier_t *b);

/* Tasks waiting for the current round to fill (0 while draining). */
CIO_EXTERN unsigned cio_barrier_n_waiting(const cio_barrier_t *b);

/* The number of parties. */
CIO_EXTERN unsigned cio_barrier_parties(const cio_barrier_t *b);

/* ------------------------------------------------------------------------ */
/* Queues (queue.c)                                                          */
/* ------------------------------------------------------------------------ */

/*
 * asyncio's Queue, LifoQueue and PriorityQueue (with Python 3.13's
 * shutdown) for the tasks of one loop: queues of `void *` items (NULL is a
 * valid item), bounded by maxsize (0 = unbounded). The queue is caller
 * storage with private fields: initialise it with one of the *_init calls,
 * do not move or copy it afterwards, and free its buffer with
 * cio_queue_destroy(). The queue never owns the items: what they point to
 * stays the caller's.
 *
 * A bounded queue allocates its whole ring at init (up to 65,536 slots; a
 * larger maxsize grows on demand), so putting and getting never allocate.
 * An unbounded queue grows by doubling (put may then fail with -ENOMEM).
 *
 * put and get are await points with the rules of the sync section above:
 * a cancellation check first, strict FIFO service of the waiting tasks, and
 * direct hand-off: a put that finds a task waiting in get gives the item to
 * that task, which returns it even if cancelled before it runs again (no
 * item is ever lost); a get from a full queue moves the item of the first
 * waiting put into the queue and completes that put. Tasks are woken only
 * when they wait, so a producer and a consumer pass whole batches of items
 * per suspension.
 */

/* Orders a priority queue: negative if item a must come out before b. Ties
 * come out in insertion order. It receives the items themselves. */
typedef int (*cio_queue_cmp_fn)(const void *a, const void *b);

/* Receives each item dropped by cio_queue_shutdown(immediate = true). */
typedef void (*cio_queue_drop_fn)(void *item, void *arg);

typedef struct cio_queue {
    void *buf_;            /* ring of items, or heap of (item, seq) */
    size_t cap_;           /* slots allocated */
    size_t head_;          /* ring: index of the oldest item */
    size_t n_;             /* items stored */
    size_t maxsize_;       /* 0 = unbounded */
    size_t unfinished_;    /* puts not yet matched by task_done */
    uint64_t seq_;         /* priority: insertion counter */
    cio_queue_cmp_fn cmp_;
    cio_waitq_t getters_, putters_, joiners_;
    uint8_t kind_;         /* FIFO, LIFO, priority */
    uint8_t shutdown_;
} cio_queue_t;

/*
 * Initialises a FIFO queue (asyncio.Queue(maxsize)). Returns 0, -EINVAL
 * (q NULL), -ENOMEM (the ring could not be allocated).
 */
CIO_EXTERN int cio_queue_init(cio_queue_t *q, size_t maxsize);

/* As cio_queue_init for a LIFO queue (asyncio.LifoQueue): last in, first out. */
CIO_EXTERN int cio_queue_init_lifo(cio_queue_t *q, size_t maxsize);

/*
 * As cio_queue_init for a priority queue (asyncio.PriorityQueue, a binary
 * heap): get returns the smallest item according to cmp. -EINVAL also when
 * cmp is NULL.
 */
CIO_EXTERN int cio_queue_init_priority(cio_queue_t *q, size_t maxsize,
                                       cio_queue_cmp_fn cmp);

/*
 * Frees the queue's buffer. Items still in it are not touched (drain them
 * first with cio_queue_get_nowait, or use cio_queue_shutdown with a drop
 * callback). Returns 0 (also for NULL or a queue already destroyed), or
 * -EBUSY while a task waits on the queue (nothing is freed then: shut it
 * down and let the waiters leave first).
 */
CIO_EXTERN int cio_queue_destroy(cio_queue_t *q);

/*
 * Await point: puts an item, waiting while the queue is full. Returns 0 (the
 * item is in the queue or in a getter's hands), -ESHUTDOWN (the queue is
 * shut down, also while this put waited; the item was not put), -ECANCELED
 * / -ETIMEDOUT (not put), -ENOMEM (an unbounded queue could not grow),
 * -EINVAL, -EPERM.
 */
CIO_EXTERN int cio_queue_put(cio_queue_t *q, void *item);

/*
 * Puts an item without waiting. Not an await point (callable from
 * callbacks). Returns 0, -EAGAIN when the queue is full (asyncio QueueFull),
 * -ESHUTDOWN, -ENOMEM, -EINVAL.
 */
CIO_EXTERN int cio_queue_put_nowait(cio_queue_t *q, void *item);

/*
 * Await point: removes and stores in *item the next item, waiting while the
 * queue is empty. Returns 0, -ESHUTDOWN once the queue is shut down and
 * empty (the items left at a non-immediate shutdown are still returned
 * first), -ECANCELED / -ETIMEDOUT (nothing taken), -EINVAL (q or item NULL),
 * -EPERM.
 */
CIO_EXTERN int cio_queue_get(cio_queue_t *q, void **item);

/*
 * Removes the next item without waiting. Not an await point. Returns 0,
 * -EAGAIN when the queue is empty (asyncio QueueEmpty), -ESHUTDOWN when it
 * is empty and shut down, -EINVAL.
 */
CIO_EXTERN int cio_queue_get_nowait(cio_queue_t *q, void **item);

/* The number of items in the queue (0 for NULL). */
CIO_EXTERN size_t cio_queue_qsize(const cio_queue_t *q);

/* The maximum size given at init (0 = unbounded). */
CIO_EXTERN size_t cio_queue_maxsize(const cio_queue_t *q);

/* True when no item is queued (also for NULL). */
CIO_EXTERN bool cio_queue_empty(const cio_queue_t *q);

/* True if maxsize items are queued (never for an unbounded queue). */
CIO_EXTERN bool cio_queue_full(const cio_queue_t *q);

/*
 * Tells the queue that one item taken by a get has been processed
 * (asyncio task_done). When every item put has been processed, the tasks
 * in cio_queue_join resume. Not an await point. Returns 0, -EOVERFLOW if
 * called more times than items were put (asyncio's ValueError; nothing
 * changes), -EINVAL.
 */
CIO_EXTERN int cio_queue_task_done(cio_queue_t *q);

/* Items put and not yet matched by cio_queue_task_done. */
CIO_EXTERN size_t cio_queue_unfinished(const cio_queue_t *q);

/*
 * Await point: waits until every item put has been processed (the
 * unfinished count is 0; returns at once if it is). Returns 0, -ECANCELED,
 * -ETIMEDOUT, -EINVAL, -EPERM.
 */
CIO_EXTERN int cio_queue_join(cio_queue_t *q);

/*
 * Shuts the queue down (Python 3.13 Queue.shutdown): every later put fails
 * with -ESHUTDOWN, the tasks waiting in put and get resume with -ESHUTDOWN
 * (their items were not put), and get keeps returning the items left until
 * the queue is empty, then -ESHUTDOWN. With `immediate`, the items left are
 * dropped at once (passed to drop(item, arg) if drop is not NULL, so that
 * their memory can be freed), the unfinished count is lowered by their
 * number (so cio_queue_join returns once the items already taken are done),
 * and joiners are woken if it reaches 0. Not an await point; idempotent.
 * Returns the number of items dropped (0 unless immediate); NULL is a no-op
 * (0).
 */
CIO_EXTERN int64_t cio_queue_shutdown(cio_queue_t *q, bool immediate,
                                      cio_queue_drop_fn drop, void *arg);

/* True once cio_queue_shutdown has been called. */
CIO_EXTERN bool cio_queue_is_shutdown(const cio_queue_t *q);

/* ------------------------------------------------------------------------ */
/* Generators (gen.c)                                                        */
/* ------------------------------------------------------------------------ */

/*
 * Generators: Python's generators and async generators. A generator runs a
 * C function, its body, on a stack of its own; cio_gen_yield() inside the
 * body pauses it and hands a value to whoever resumed it with
 * cio_gen_next(), cio_gen_send() or cio_gen_throw(). Generators work in
 * plain C code outside any loop and inside tasks. Driven from a task, the
 * body may also await (cio_sleep, cio_await, ...): the task then waits while
 * running on the generator's stack, which makes it an async generator.
 *
 *   Python                          cio
 *   g = gen(arg)                    cio_gen_new(&g, body, arg)
 *   x = yield y                     cio_gen_yield(g, y, &x)
 *   return v                        cio_gen_set_result(g, v); return 0;
 *   next(g), g.send(x)              cio_gen_next(g, &y), cio_gen_send(g, x, &y)
 *   g.throw(E)                      cio_gen_throw(g, -E, &y)
 *   g.close(), await g.aclose()     cio_gen_close(g), cio_gen_aclose(g)
 *   inspect.getgeneratorstate(g)    cio_gen_get_state(g)
 *   for v in g / async for v in g   while ((rc = cio_gen_next(g, &v)) == 1) {...}
 *
 * Values are void * in both directions (integers travel as
 * (void *)(intptr_t)n); they are never copied or freed by cio.
 *
 * The resuming calls (cio_gen_next, cio_gen_send, cio_gen_throw) return:
 *    1   the body yielded; *out is the value it yielded.
 *    0   the body has finished (StopIteration): on the call that finished it
 *        *out is its result (cio_gen_set_result, NULL if never set). An
 *        exhausted generator stays exhausted: later next/send calls return 0
 *        again with *out NULL, as Python's iterator protocol requires.
 *   < 0  either the body failed (it returned that negative status; the
 *        generator is now CIO_GEN_CLOSED), or the call was refused and the
 *        generator is unchanged: -EINVAL (NULL generator, bad argument),
 *        -EBUSY (the generator is running: called from its own body, or from
 *        another task while the body awaits), -ENOMEM (no stack for the
 *        first resume). cio_gen_get_state() tells the two apart.
 * `out` may be NULL; it is set to NULL whenever no value is handed over.
 *
 * A body's status is its return value: >= 0 is success, < 0 an error code.
 *
 * Stacks: a generator takes a stack at its first resume (so a generator that
 * never runs costs only its small control block) and gives it back as soon
 * as the body finishes. The stack comes from the running loop's pool when a
 * loop runs on the calling thread (in a task or a callback), otherwise from
 * a pool private to the thread. Hence two rules: a generator is used from
 * one thread only, and a generator that started while a loop was running
 * must finish (or be closed or freed) before that loop is closed; those of
 * a thread's private pool must finish before the thread exits. A body that
 * overflows its stack is reported on stderr with the generator's name (as
 * for tasks) and the process dies of SIGSEGV.
 *
 * Cancel scopes entered in a body must be left before it yields (as with
 * `async with timeout()` around a yield in Python, they would otherwise
 * outlive the code that entered them): cio_gen_yield refuses with -EINVAL.
 */

typedef struct cio_gen cio_gen_t;

/*
 * The body of a generator: runs at the first resume with the generator and
 * the arg given at creation. Returns its status: >= 0 success, < 0 an error
 * code (what the resuming call then returns).
 */
typedef int (*cio_gen_fn)(cio_gen_t *g, void *arg);

/* inspect.getgeneratorstate(): the four states of a generator. */
enum cio_gen_state {
    CIO_GEN_CREATED = 0, /* created, body not started (GEN_CREATED) */
    CIO_GEN_RUNNING,     /* body running, or awaiting inside a task */
    CIO_GEN_SUSPENDED,   /* paused at a cio_gen_yield() */
    CIO_GEN_CLOSED       /* finished, failed, or closed (GEN_CLOSED) */
};

/* Options of cio_gen_new_ex. Zero-initialise and set what you need. */
typedef struct cio_gen_opts {
    const char *name;   /* copied; NULL gives "Generator-<id>" */
    size_t stack_size;  /* 0 = CIO_DEFAULT_STACK_SIZE (pooled); rounded to pages */
    void *reserved_[2]; /* must be zero (room for later options) */
} cio_gen_opts_t;

/*
 * Creates a generator running fn(g, arg) at its first resume (a call to a
 * Python generator function) and stores it in *out (NULL on failure). Takes
 * no stack yet. The generator is the caller's: free it with cio_gen_free().
 * Returns 0, -EINVAL (out or fn NULL), -ENOMEM. arg must stay valid while
 * the body may run.
 */
CIO_EXTERN int cio_gen_new(cio_gen_t **out, cio_gen_fn fn, void *arg);

/*
 * As cio_gen_new with a name and a stack size (opts NULL for defaults).
 * Also -EINVAL when opts->reserved_ is not zero.
 */
CIO_EXTERN int cio_gen_new_ex(cio_gen_t **out, cio_gen_fn fn, void *arg,
                              const cio_gen_opts_t *opts);

/*
 * next(g): resumes the generator with nothing sent (the pending
 * cio_gen_yield receives NULL), or starts it. Returns 1 / 0 / < 0 as
 * described above, with the yielded value or result in *out.
 */
CIO_EXTERN int cio_gen_next(cio_gen_t *g, void **out);

/*
 * g.send(value): resumes the generator; its pending cio_gen_yield returns 0
 * with `value` as the sent value. A generator that has not started must be
 * primed with value NULL (that value goes nowhere, as send(None) in Python);
 * a non-NULL value then gives -EINVAL and the generator is left unchanged
 * (Python's TypeError). Returns 1 / 0 / < 0 as described above.
 */
CIO_EXTERN int cio_gen_send(cio_gen_t *g, void *value, void **out);

/*
 * g.throw(err): resumes the generator with its pending cio_gen_yield
 * returning `err` (a negative error code; >= 0 gives -EINVAL). The body may
 * handle it and yield again (returns 1), finish (0) or fail (< 0; a body
 * that passes err on makes this call return err). A generator that has not
 * started is closed without running its body, and a closed one stays
 * closed; both return err, as Python raises the exception in the caller.
 * -EBUSY while running, -EINVAL for NULL.
 */
CIO_EXTERN int cio_gen_throw(cio_gen_t *g, int err, void **out);

/*
 * g.close(): finishes a suspended generator. Its pending cio_gen_yield
 * returns -ECANCELED (Python's GeneratorExit) and the body is expected to
 * clean up and return; the cleanup may await when the caller is a task.
 * Closing is level-triggered, like cancellation: every later cio_gen_yield
 * of the body returns -ECANCELED at once without suspending, so the body
 * always runs to its end and the generator is CIO_GEN_CLOSED afterwards.
 * Returns:
 *   0          the body returned a status >= 0 or -ECANCELED; also for a
 *              generator that never started (it is just marked closed and
 *              its body never runs) or one already closed (idempotent);
 *   -EPROTO    the body yielded after it was closed (Python's RuntimeError
 *              "generator ignored GeneratorExit"); it has finished anyway;
 *   < 0        any other negative status the body returned (its cleanup
 *              failed);
 *   -EBUSY     the generator is running (nothing happens).
 * NULL is a no-op (0). The generator stays queryable (cio_gen_result,
 * cio_gen_get_state) until cio_gen_free().
 */
CIO_EXTERN int cio_gen_close(cio_gen_t *g);

/*
 * await agen.aclose(): the early exit from an `async for` loop over an async
 * generator. The same call as cio_gen_close (when called from a task, the
 * body's cleanup may await). Returns as cio_gen_close.
 */
CIO_EXTERN int cio_gen_aclose(cio_gen_t *g);

/*
 * `sent = yield value`, called by the body of g (on g's own stack): hands
 * `value` to the caller and suspends until the generator is resumed.
 * Returns 0 with the sent value in *sent (NULL for next), the error given to
 * cio_gen_throw() (with *sent NULL), or -ECANCELED when the generator is
 * being closed (then at once, every time). Returns -EPERM when not called
 * from g's body (for example from the code that resumes g, or from the body
 * of another generator it drives), -EINVAL for NULL or when a cancel scope
 * entered in the body is still open. sent may be NULL.
 */
CIO_EXTERN int cio_gen_yield(cio_gen_t *g, void *value, void **sent);

/*
 * `return value` in a generator: sets the result that the call seeing the
 * body finish receives in *out (StopIteration.value). Called by the body,
 * usually just before it returns; the last call wins. NULL g: no-op.
 */
CIO_EXTERN void cio_gen_set_result(cio_gen_t *g, void *value);

/*
 * The outcome of a closed generator: returns the body's status (>= 0, or
 * its error code; -ECANCELED if it was closed before it started; the error
 * thrown into it before it started) and stores its result (NULL if none) in
 * *value when value is not NULL. -EAGAIN if the generator has not finished,
 * -EINVAL for NULL.
 */
CIO_EXTERN int cio_gen_result(const cio_gen_t *g, void **value);

/* The generator's state (enum cio_gen_state); -EINVAL for NULL. */
CIO_EXTERN int cio_gen_get_state(const cio_gen_t *g);

/*
 * The name of a state as inspect.getgeneratorstate() prints it
 * ("GEN_CREATED", "GEN_RUNNING", "GEN_SUSPENDED", "GEN_CLOSED"); "?" for an
 * unknown value. Static string.
 */
CIO_EXTERN const char *cio_gen_state_name(int state);

/* The generator's name (valid while the generator lives); NULL for NULL. */
CIO_EXTERN const char *cio_gen_get_name(const cio_gen_t *g);

/*
 * Closes the generator if it is suspended (see cio_gen_close; its body's
 * cleanup runs) and frees it. Returns 0 or the error cio_gen_close reported
 * (the generator is freed all the same); -EBUSY if it is running (nothing is
 * freed: a body cannot free its own generator). NULL is a no-op (0).
 */
CIO_EXTERN int cio_gen_free(cio_gen_t *g);

/* ======================================================================== */
/* Networking: transports and protocols, streams, servers, UDP, DNS          */
/* ======================================================================== */

/*
 * Everything here runs on both backends (epoll and io_uring) through the
 * operation layer, and on the running loop of the calling thread. Objects
 * belong to the loop that created them and must be used from its thread.
 * Sockets are made non-blocking and close-on-exec; SIGPIPE never fires
 * (sends use MSG_NOSIGNAL).
 *
 * Error codes shared by this section:
 *   -ENODATA    the peer closed before the data asked for arrived (asyncio's
 *               IncompleteReadError): the partial bytes are handed back.
 *   -EOVERFLOW  no separator within the limit (asyncio's LimitOverrunError):
 *               nothing is consumed, the buffered bytes stay readable.
 *   -ENOBUFS    a write would pass the stream's hard cap on buffered output:
 *               nothing of it was queued.
 *   -ESHUTDOWN  the object was closed by this side, or written after
 *               write_eof.
 *   -ECONNRESET, -EPIPE, -ETIMEDOUT, ...   the connection was lost with that
 *               error (the kernel's); every later call returns it too.
 *   DNS failures are negative codes below CIO_EAI_BASE (see cio_getaddrinfo).
 */

/* ------------------------------------------------------------------------ */
/* Transports and protocols (asyncio's low-level API, no task per connection) */
/* ------------------------------------------------------------------------ */

typedef struct cio_transport cio_transport_t;

/*
 * The callbacks of a connection, called from the loop, never from inside a
 * call of the transport API (so a callback may call any transport function,
 * cio_transport_close and cio_transport_abort included), with two
 * exceptions kept from asyncio: connection_made runs inside
 * cio_transport_new, and pause_writing / resume_writing inside the
 * cio_transport_write (or cio_transport_set_write_buffer_limits) that moves
 * the buffer across a water mark (so the protocol stops before writing
 * more). ctx is the value given with the protocol. Only
 * data_received is required.
 */
typedef struct cio_protocol {
    /* The transport is ready (called once, first). */
    void (*connection_made)(cio_transport_t *t, void *ctx);
    /* n > 0 bytes arrived; data is valid only during the call. */
    void (*data_received)(cio_transport_t *t, const void *data, size_t n, void *ctx);
    /* The peer closed its writing side. Return true to keep the transport
     * open for writing (a half-closed connection), false (or leave it NULL)
     * to close it, as asyncio does. */
    bool (*eof_received)(cio_transport_t *t, void *ctx);
    /* The connection is gone: err 0 after a close or abort of ours or an
     * EOF, else the error (-ECONNRESET, -EPIPE, ...). Called once, last:
     * the transport is freed right after it returns. */
    void (*connection_lost)(cio_transport_t *t, int err, void *ctx);
    /* The write buffer rose above the high-water mark / fell to the low one. */
    void (*pause_writing)(cio_transport_t *t, void *ctx);
    void (*resume_writing)(cio_transport_t *t, void *ctx);
    void *reserved_[2]; /* must be zero */
} cio_protocol_t;

/* Limits of a transport or stream. Zero-initialise; 0 picks the default. */
typedef struct cio_transport_opts {
    size_t read_size;   /* bytes asked of each receive (64 KiB) */
    size_t high_water;  /* pause_writing / drain waits above this (64 KiB) */
    size_t low_water;   /* resume_writing / drain returns at this (high / 4) */
    size_t write_limit; /* hard cap on buffered output: -ENOBUFS (16 MiB) */
    size_t limit;       /* streams: read buffer limit (64 KiB) */
    double close_timeout; /* streams: how long close flushes (30 s) */
    void *reserved_[2]; /* must be zero */
} cio_transport_opts_t;
typedef cio_transport_opts_t cio_stream_opts_t;

/*
 * Wraps the connected stream socket fd (TCP or Unix) in a transport on the
 * running loop, which owns fd from then on (also on failure: fd is closed).
 * connection_made is called before this returns; reading starts at once.
 * proto must stay valid while the transport lives. Returns 0, -EINVAL
 * (out or proto or its data_received NULL, fd negative, proto->reserved_
 * or opts not valid), -EBADF (fd not open), -EPERM (no running loop),
 * -ENOMEM. Freed after connection_lost.
 */
CIO_EXTERN int cio_transport_new(cio_transport_t **out, int fd, const cio_protocol_t *proto,
                                 void *ctx, const cio_transport_opts_t *opts);

/*
 * Queues n bytes for sending (never short: what the socket does not take
 * now is buffered and sent by the loop). Returns 0, -ENOBUFS (past
 * write_limit: nothing queued), -ESHUTDOWN (closing, or after write_eof),
 * the connection's error once lost, -ENOMEM (nothing queued), -EINVAL.
 */
CIO_EXTERN int cio_transport_write(cio_transport_t *t, const void *data, size_t n);
/* As cio_transport_write for several buffers (asyncio writelines). */
CIO_EXTERN int cio_transport_writev(cio_transport_t *t, const struct iovec *iov, int iovcnt);
/*
 * Shuts down the writing side once the buffer is sent (half-close).
 * Returns 0, -ESHUTDOWN if already done or closing, the connection's error,
 * -EINVAL for NULL.
 */
CIO_EXTERN int cio_transport_write_eof(cio_transport_t *t);
/* Stops / restarts calling data_received and eof_received (flow control of
 * reading): bytes that arrive while paused (a receive io_uring already held)
 * are kept and delivered from the loop after resume_reading. Return 0,
 * -ESHUTDOWN when closing, -EINVAL for NULL. */
CIO_EXTERN int cio_transport_pause_reading(cio_transport_t *t);
CIO_EXTERN int cio_transport_resume_reading(cio_transport_t *t);
/* True while data_received is wanted (not paused, not at EOF, not
 * closing); false for NULL. */
CIO_EXTERN bool cio_transport_is_reading(const cio_transport_t *t);
/* Bytes queued and not yet taken by the socket (0 for NULL). */
CIO_EXTERN size_t cio_transport_get_write_buffer_size(const cio_transport_t *t);
/* Sets the water marks (high 0: the default). Returns 0, -EINVAL (NULL,
 * low > high, or high above write_limit). */
CIO_EXTERN int cio_transport_set_write_buffer_limits(cio_transport_t *t, size_t high, size_t low);
/*
 * Closes: reading stops, what is buffered is still sent, then the socket is
 * closed and connection_lost(0) called (from the loop). Idempotent.
 */
CIO_EXTERN void cio_transport_close(cio_transport_t *t);
/* Closes at once, dropping buffered output; connection_lost(0) follows. */
CIO_EXTERN void cio_transport_abort(cio_transport_t *t);
/* True once close or abort was called or the connection was lost (asyncio
 * is_closing); false for NULL. */
CIO_EXTERN bool cio_transport_is_closing(const cio_transport_t *t);
/* get_extra_info: the socket (still owned by t; negative once closed, or
 * -EINVAL for NULL), its peer and own address (0, -EINVAL for a NULL
 * argument, -EBADF once closed, or the getpeername/getsockname error). */
CIO_EXTERN int cio_transport_fd(const cio_transport_t *t);
CIO_EXTERN int cio_transport_peername(const cio_transport_t *t, struct sockaddr *addr,
                                      socklen_t *len);
CIO_EXTERN int cio_transport_sockname(const cio_transport_t *t, struct sockaddr *addr,
                                      socklen_t *len);

/* ------------------------------------------------------------------------ */
/* Streams (asyncio StreamReader + StreamWriter in one object)               */
/* ------------------------------------------------------------------------ */

typedef struct cio_stream cio_stream_t;

/*
 * Wraps the connected stream socket fd in a stream on the running loop; the
 * stream owns fd from then on (closed on failure too). Returns 0, -EINVAL,
 * -EPERM (no running loop), -ENOMEM. Release with cio_stream_close or
 * cio_stream_abort.
 */
CIO_EXTERN int cio_stream_new(cio_stream_t **out, int fd, const cio_stream_opts_t *opts);

/*
 * Await point: reads up to n bytes (at least 1 unless at EOF). Returns the
 * count, 0 at EOF (or for n == 0), the connection's error, -ECANCELED,
 * -ETIMEDOUT, -EBUSY (another task is reading this stream), -ESHUTDOWN,
 * -EPERM outside a task, -EINVAL (s NULL, buf NULL with n > 0). Bytes
 * buffered are never lost to a cancel or timeout: they stay readable.
 */
CIO_EXTERN ssize_t cio_stream_read(cio_stream_t *s, void *buf, size_t n);
/*
 * Await point: reads to EOF (asyncio read(-1)) into a new buffer *out
 * (NUL-terminated, from cio's allocator: the caller frees it with free(),
 * or with its own free function after cio_replace_allocator; NULL when
 * nothing was read), *len its length. max bounds it (0: no bound): past max
 * it returns -ENOBUFS with the first max bytes in *out and the rest still
 * buffered. -ENOMEM when *out cannot be had. Other errors as
 * cio_stream_read; on them *out is NULL and nothing is consumed.
 */
CIO_EXTERN int cio_stream_read_all(cio_stream_t *s, char **out, size_t *len, size_t max);
/*
 * Await point: reads exactly n bytes into buf. Returns n; -ENODATA at an
 * early EOF, with the partial bytes in buf and their count in *got (may be
 * NULL); other errors as cio_stream_read (nothing consumed then). n may
 * exceed the stream's limit (the buffer grows to n for this call).
 */
CIO_EXTERN ssize_t cio_stream_readexactly(cio_stream_t *s, void *buf, size_t n, size_t *got);
/*
 * Await point: reads up to and including the first occurrence of sep
 * (seplen >= 1) into buf (cap bytes). Returns the length; -EOVERFLOW when
 * no separator occurs within min(cap, the stream's limit) bytes (nothing
 * consumed); -ENODATA at EOF before a separator (the partial bytes are
 * copied into buf, their count in *got, and consumed; 0 of them at a clean
 * EOF); other errors as cio_stream_read.
 */
CIO_EXTERN ssize_t cio_stream_readuntil(cio_stream_t *s, const void *sep, size_t seplen,
                                        void *buf, size_t cap, size_t *got);
/*
 * Await point: asyncio readline(): a line ending in '\n' into buf. At EOF
 * the last partial line is returned as it is (0 at EOF with nothing left).
 * -EOVERFLOW as cio_stream_readuntil. Not NUL-terminated.
 */
CIO_EXTERN ssize_t cio_stream_readline(cio_stream_t *s, void *buf, size_t cap);

/*
 * The consume hook: a parser over the buffered bytes, with no copy. Called
 * with the bytes buffered so far (data, n) and eof set when no more will
 * come. It returns how many bytes it consumed (> 0: the call returns that
 * count), 0 to wait for more, or a negative code to fail the call with it
 * (nothing consumed).
 */
typedef ssize_t (*cio_stream_parse_fn)(void *arg, const char *data, size_t n, bool eof);
/*
 * Await point: runs fn on the buffered bytes each time more arrive, until it
 * consumes some or fails. limit bounds the bytes fn may need (0: the
 * stream's limit): past it -EOVERFLOW, nothing consumed. Returns what fn
 * returned; fn returning 0 at EOF gives -ENODATA (nothing consumed). Other
 * errors as cio_stream_read.
 */
CIO_EXTERN ssize_t cio_stream_parse(cio_stream_t *s, cio_stream_parse_fn fn, void *arg,
                                    size_t limit);

/* True when the peer closed its side and every buffered byte was read. */
CIO_EXTERN bool cio_stream_at_eof(const cio_stream_t *s);
/* Bytes received and not yet read. */
CIO_EXTERN size_t cio_stream_buffered(const cio_stream_t *s);

/*
 * Queues n bytes (asyncio write: not an await point, never short). Returns
 * 0, -ENOBUFS (past the hard cap, nothing queued), -ESHUTDOWN (after
 * write_eof or close), the connection's error, -ENOMEM, -EINVAL.
 */
CIO_EXTERN int cio_stream_write(cio_stream_t *s, const void *data, size_t n);
/* As cio_stream_write for several buffers (asyncio writelines). */
CIO_EXTERN int cio_stream_writev(cio_stream_t *s, const struct iovec *iov, int iovcnt);
/*
 * Await point: waits while the output buffered is above the high-water mark
 * until it falls to the low one (several tasks may drain at once). Returns
 * 0, the connection's error (-ECONNRESET, -EPIPE), -ESHUTDOWN (closed
 * before or during the drain), -ECANCELED, -ETIMEDOUT, -EPERM, -EINVAL for
 * NULL. A cancelled drain loses nothing: the bytes stay queued.
 */
CIO_EXTERN int cio_stream_drain(cio_stream_t *s);
/* Half-close: sends EOF once buffered output is sent. 0, -ESHUTDOWN, the
 * connection's error, -EINVAL for NULL. Reading goes on. */
CIO_EXTERN int cio_stream_write_eof(cio_stream_t *s);
/*
 * Await point: flushes buffered output (for at most the close timeout, and
 * within the deadlines of enclosing scopes), closes the socket, and frees s
 * once no other task is inside a call on it (those return -ESHUTDOWN).
 * Returns 0 when everything buffered was sent; -ETIMEDOUT or -ECANCELED when
 * the flush was cut short (the rest is dropped); the connection's error;
 * -ESHUTDOWN when s was already closed. s is released in every case.
 * Outside a task it aborts (see below) and returns 0; NULL: 0.
 */
CIO_EXTERN int cio_stream_close(cio_stream_t *s);
/* Closes at once, dropping buffered output, and releases s. NULL: no-op. */
CIO_EXTERN void cio_stream_abort(cio_stream_t *s);
/* get_extra_info: the transport under the stream (fd, peername, sockname),
 * borrowed: do not write to, close or abort it. NULL for NULL, and once
 * the connection is gone or the stream closed. */
CIO_EXTERN cio_transport_t *cio_stream_transport(cio_stream_t *s);

/* ------------------------------------------------------------------------ */
/* Name resolution (off the loop thread)                                      */
/* ------------------------------------------------------------------------ */

/* getaddrinfo's EAI_* codes (negative) are returned as CIO_EAI(code), below
 * CIO_EAI_BASE; cio_strerror describes them. EAI_SYSTEM gives the errno. */
#define CIO_EAI_BASE (-20000)
#define CIO_EAI(code) (CIO_EAI_BASE + (code))

struct addrinfo;
/*
 * Await point: getaddrinfo(3) run in the default executor (the thread
 * pool), so the loop never blocks on DNS. Returns 0 with *res (free with
 * cio_freeaddrinfo), CIO_EAI(EAI_NONAME) and the other CIO_EAI codes,
 * -ECANCELED / -ETIMEDOUT (returned at once; a lookup already running
 * finishes in its thread and its result is freed there: nothing leaks),
 * -EINVAL (res NULL, or host and service both NULL), -EPERM, -ENOMEM,
 * -ESHUTDOWN / -EAGAIN (the thread pool is shut down / has no thread), and
 * the pool's cancel of a job it never ran (-ECANCELED, at fork). A numeric
 * host (or none) with a numeric service is resolved inline, with no
 * thread. NULL hints mean getaddrinfo(3)'s defaults (AI_V4MAPPED |
 * AI_ADDRCONFIG); cio's own lookups for clients, servers and UDP never add
 * AI_ADDRCONFIG (it hides loopback-only hosts).
 */
CIO_EXTERN int cio_getaddrinfo(const char *host, const char *service,
                               const struct addrinfo *hints, struct addrinfo **res);
/* Frees a list cio_getaddrinfo returned. NULL: no-op. */
CIO_EXTERN void cio_freeaddrinfo(struct addrinfo *res);
/* Await point: getnameinfo(3) off the loop thread (inline when only numeric
 * forms are asked for); returns as above, -EINVAL for a NULL address, a
 * length too short for a family or above sizeof(struct sockaddr_storage),
 * or no output. Output lengths above NI_MAXHOST / NI_MAXSERV are clamped
 * (no answer is longer). */
CIO_EXTERN int cio_getnameinfo(const struct sockaddr *addr, socklen_t addrlen, char *host,
                               size_t hostlen, char *serv, size_t servlen, int flags);

/* ------------------------------------------------------------------------ */
/* Clients                                                                    */
/* ------------------------------------------------------------------------ */

typedef struct cio_connect_opts {
    double timeout;        /* whole connect deadline in seconds (0: none) */
    double happy_eyeballs_delay; /* RFC 8305 attempt delay (0: 0.25 s; <0: one at a time) */
    int family;            /* AF_UNSPEC (0), AF_INET or AF_INET6 */
    bool no_nodelay;       /* leave TCP_NODELAY off (it is on by default) */
    const cio_stream_opts_t *stream; /* limits of the new stream (NULL: defaults) */
    void *reserved_[2];    /* must be zero */
} cio_connect_opts_t;

/*
 * Await point: connects to host:port over TCP (asyncio open_connection).
 * The name is resolved off the loop; with several addresses the attempts
 * follow RFC 8305 (families interleaved, the next started when the one
 * before has not connected within the attempt delay; the first to connect
 * wins, the others are closed). Returns 0 with *out, the last attempt's
 * error (-ECONNREFUSED, -ENETUNREACH, ...), -ETIMEDOUT (opts->timeout or a
 * scope), -ECANCELED, CIO_EAI codes, -EINVAL, -EPERM, -ENOMEM, -EMFILE.
 */
CIO_EXTERN int cio_open_connection(cio_stream_t **out, const char *host, int port,
                                   const cio_connect_opts_t *opts);
/* As cio_open_connection for a Unix socket path (-ENOENT: no such path). */
CIO_EXTERN int cio_open_unix_connection(cio_stream_t **out, const char *path,
                                        const cio_connect_opts_t *opts);
/*
 * Await point: as cio_open_connection, but returns the connected socket
 * (non-blocking, close-on-exec, the caller owns it) in *fd, for
 * cio_transport_new (asyncio create_connection) or raw cio_sock_* use.
 */
CIO_EXTERN int cio_connect_tcp(int *fd, const char *host, int port,
                               const cio_connect_opts_t *opts);

/* ------------------------------------------------------------------------ */
/* Servers                                                                    */
/* ------------------------------------------------------------------------ */

typedef struct cio_server cio_server_t;

/* A stream server's handler: runs in a task of its own per connection. The
 * server closes s (flushing) when the handler returns without closing it. */
typedef void (*cio_stream_handler_fn)(cio_stream_t *s, void *arg);
/* A protocol server's factory: for each connection, sets *proto (valid while
 * the connection lives) and *ctx; returns 0, or a negative code to refuse
 * the connection (it is closed). */
typedef int (*cio_protocol_factory_fn)(void *arg, const cio_protocol_t **proto, void **ctx);

typedef struct cio_server_opts {
    int backlog;            /* listen(2) backlog (0: 1024) */
    size_t max_connections; /* accepting pauses at this many (0: no limit; on
                               io_uring an accept the kernel already held may
                               still bring one more per listening socket) */
    bool reuse_port;        /* SO_REUSEPORT: several loops/processes share the port */
    int family;             /* AF_UNSPEC (0): every address the host resolves to */
    const cio_stream_opts_t *stream; /* limits of each connection (NULL: defaults) */
    void *reserved_[2];     /* must be zero */
} cio_server_opts_t;

/*
 * Await point (it resolves host off the loop): starts a TCP stream server
 * on host:port (host NULL: every local address, IPv4 and IPv6; port 0: one
 * the kernel picks, see cio_server_port), SO_REUSEADDR set, TCP_NODELAY on
 * each connection, accepting at once (asyncio start_server). An address of
 * a family the machine lacks (-EADDRNOTAVAIL, -EAFNOSUPPORT: ::1 with IPv6
 * disabled) is skipped when another address of the name listens. Returns 0
 * with *out, -EADDRINUSE, -EADDRNOTAVAIL / -EAFNOSUPPORT (no address of
 * the name could listen), -EACCES, -EMFILE, CIO_EAI codes, -ECANCELED /
 * -ETIMEDOUT (while resolving), -EINVAL, -EPERM, -ENOMEM, or the error of
 * socket/setsockopt/bind/listen.
 */
CIO_EXTERN int cio_start_server(cio_server_t **out, const char *host, int port,
                                cio_stream_handler_fn fn, void *arg,
                                const cio_server_opts_t *opts);
/* As cio_start_server on a Unix socket path (a stale socket file there is
 * replaced; the file is removed when the server closes). Not an await
 * point: it needs a running loop, not a task. -EINVAL also for an empty
 * path or reuse_port, -ENAMETOOLONG, and bind's errors (-EADDRINUSE for a
 * file that is not a socket, -ENOENT, -EACCES). */
CIO_EXTERN int cio_start_unix_server(cio_server_t **out, const char *path,
                                     cio_stream_handler_fn fn, void *arg,
                                     const cio_server_opts_t *opts);
/* As cio_start_server, with transports and protocols: no task per
 * connection (asyncio create_server(protocol_factory)). */
CIO_EXTERN int cio_create_server(cio_server_t **out, const char *host, int port,
                                 cio_protocol_factory_fn factory, void *arg,
                                 const cio_server_opts_t *opts);
/* As cio_start_unix_server, with a protocol factory. */
CIO_EXTERN int cio_create_unix_server(cio_server_t **out, const char *path,
                                      cio_protocol_factory_fn factory, void *arg,
                                      const cio_server_opts_t *opts);

/* The port of the first listening socket; -EINVAL (NULL, Unix, or closed),
 * or getsockname's error. */
CIO_EXTERN int cio_server_port(const cio_server_t *srv);
/* Connections open now (0 for NULL). */
CIO_EXTERN size_t cio_server_connections(const cio_server_t *srv);
/*
 * Await point: serves until the server is closed (returns 0) or the task is
 * interrupted (returns -ECANCELED, or -ETIMEDOUT for a scope's deadline,
 * after closing the server, as asyncio does). -EINVAL for NULL, -EPERM
 * outside a task.
 */
CIO_EXTERN int cio_server_serve_forever(cio_server_t *srv);
/* Stops accepting and closes the listening sockets; open connections go on.
 * Idempotent; 0 or -EINVAL. */
CIO_EXTERN int cio_server_close(cio_server_t *srv);
/* Closes every open connection (flushing) / aborts them (dropping output).
 * Stream handlers see -ESHUTDOWN from their next call. NULL: no-op. */
CIO_EXTERN void cio_server_close_clients(cio_server_t *srv);
CIO_EXTERN void cio_server_abort_clients(cio_server_t *srv);
/*
 * Await point: waits until the server is closed and every connection has
 * ended (handler returned, transport lost), for at most timeout seconds
 * (INFINITY: no bound). Returns 0, -ETIMEDOUT (connections still open; it
 * does not close them: call close_clients / abort_clients), -ECANCELED,
 * -EINVAL (NULL, NaN timeout), -EPERM outside a task.
 */
CIO_EXTERN int cio_server_wait_closed(cio_server_t *srv, double timeout);
/* Frees a closed server with no connection left: 0, -EBUSY (still
 * connections: nothing freed), -EINVAL (not closed). NULL: 0. */
CIO_EXTERN int cio_server_free(cio_server_t *srv);

/* ------------------------------------------------------------------------ */
/* UDP endpoints (asyncio create_datagram_endpoint)                          */
/* ------------------------------------------------------------------------ */

typedef struct cio_udp cio_udp_t;

typedef struct cio_udp_opts {
    int family;          /* AF_UNSPEC (0), AF_INET or AF_INET6 */
    bool reuse_port;     /* SO_REUSEPORT */
    bool broadcast;      /* SO_BROADCAST */
    size_t max_datagram; /* protocol form: receive size (0: 65,536) */
    void *reserved_[2];  /* must be zero */
} cio_udp_opts_t;

/*
 * Await point (resolves off the loop): a UDP socket bound to local_host:
 * local_port (local_host NULL with port 0: not bound until first send) and,
 * when remote_host is not NULL, connected to remote_host:remote_port.
 * With no address and family 0 the socket is IPv4. Returns 0 with *out,
 * -EADDRINUSE, CIO_EAI codes, -EINVAL (also local and remote of different
 * families, or a remote port with no host), -ECANCELED / -ETIMEDOUT (while
 * resolving), -EPERM, -ENOMEM, or the socket/bind/connect error of the last
 * address tried.
 */
CIO_EXTERN int cio_udp_open(cio_udp_t **out, const char *local_host, int local_port,
                            const char *remote_host, int remote_port,
                            const cio_udp_opts_t *opts);
/*
 * Await point: receives one datagram into buf (len bytes), the sender in
 * addr/addrlen when not NULL. Returns its length; -EMSGSIZE when it was
 * longer than len (the first len bytes are in buf; the rest of that
 * datagram is gone, as the kernel drops it); -ECONNREFUSED on a connected
 * endpoint whose peer has no listener; -ECANCELED, -ETIMEDOUT, -EPERM,
 * -EBUSY (the protocol form is receiving), -EBADF (closed meanwhile),
 * -EINVAL (u NULL, buf NULL with len > 0, addr and addrlen not both given).
 * Several tasks receiving on one endpoint take turns.
 */
CIO_EXTERN ssize_t cio_udp_recvfrom(cio_udp_t *u, void *buf, size_t len,
                                    struct sockaddr *addr, socklen_t *addrlen);
/*
 * Await point: sends one datagram to addr (NULL on a connected endpoint).
 * Returns len, -EMSGSIZE, -EDESTADDRREQ (no address, not connected),
 * -ECONNREFUSED, -ECANCELED, -ETIMEDOUT, -EPERM, -EINVAL, -EBADF (closed
 * before or during the call), or sendmsg's own errors (-EACCES for a
 * broadcast without the broadcast option, -ENETUNREACH, ...).
 */
CIO_EXTERN ssize_t cio_udp_sendto(cio_udp_t *u, const void *buf, size_t len,
                                  const struct sockaddr *addr, socklen_t addrlen);

/* The protocol form: callbacks called from the loop for each datagram. */
typedef struct cio_datagram_protocol {
    /* A datagram of n bytes from addr; truncated is true when it was longer
     * than max_datagram (only the first n bytes were kept). */
    void (*datagram_received)(cio_udp_t *u, const void *data, size_t n,
                              const struct sockaddr *addr, socklen_t addrlen,
                              bool truncated, void *ctx);
    /* A receive error (ICMP port unreachable as -ECONNREFUSED, ...). */
    void (*error_received)(cio_udp_t *u, int err, void *ctx);
    void *reserved_[2];  /* must be zero */
} cio_datagram_protocol_t;
/*
 * Starts calling proto's callbacks for every datagram received (not an
 * await point). Returns 0, -EBUSY (already started, or a task is
 * receiving), -EINVAL, -ENOMEM. Stop with cio_udp_close.
 */
CIO_EXTERN int cio_udp_start(cio_udp_t *u, const cio_datagram_protocol_t *proto, void *ctx);
/* Sends one datagram without waiting (the protocol form's sendto): the
 * length, -EAGAIN when the socket buffer is full (the datagram is not
 * sent), or the errors of cio_udp_sendto. */
CIO_EXTERN ssize_t cio_udp_sendto_nowait(cio_udp_t *u, const void *buf, size_t len,
                                         const struct sockaddr *addr, socklen_t addrlen);
/* The endpoint's socket (still owned by u: do not close it); -EINVAL for
 * NULL. Its local address: 0, -EINVAL (a NULL argument), or getsockname's
 * error. */
CIO_EXTERN int cio_udp_fd(const cio_udp_t *u);
CIO_EXTERN int cio_udp_sockname(const cio_udp_t *u, struct sockaddr *addr, socklen_t *len);
/* Closes the socket and frees u (tasks receiving on it get -EBADF). NULL: no-op. */
CIO_EXTERN void cio_udp_close(cio_udp_t *u);

/* ------------------------------------------------------------------------ */
/* Several cores: one loop per thread                                        */
/* ------------------------------------------------------------------------ */

typedef struct cio_multi cio_multi_t;

/*
 * Starts n threads, each running a loop of its own with fn(arg) as its main
 * task (as cio_run does), for servers that use every core: each opens its
 * own server on the same port with reuse_port set. cio_multi_index() tells
 * the main task which loop it is (0..n-1). Returns 0 with *out, -EINVAL
 * (n 0 or above 1024, fn NULL), -ENOMEM, -EAGAIN (a thread could not be
 * created: the ones started run nothing and are joined).
 */
CIO_EXTERN int cio_multi_start(cio_multi_t **out, unsigned n, cio_task_fn fn, void *arg);
/* The index of the calling loop's thread in its cio_multi_t, -1 outside. */
CIO_EXTERN int cio_multi_index(void);
/*
 * Cancels every loop's main task, waits for the threads to end and frees m.
 * Returns 0, or the first error (in time) a main task returned (other than
 * -ECANCELED); -EDEADLK when called from one of m's own loops (it would
 * wait for itself; nothing is done). NULL: 0.
 */
CIO_EXTERN int cio_multi_stop(cio_multi_t *m);
/* Waits for every main task to return by itself, then frees m; returns as
 * cio_multi_stop (-EDEADLK from one of m's loops). Exactly one call of
 * cio_multi_stop or cio_multi_wait ends a cio_multi_t (both free it); to
 * stop one that another thread waits on, use cio_multi_cancel. Neither may
 * be called from a thread-pool job of m's loops (that job's loop would wait
 * for it while it waits for the loop: a deadlock cio cannot detect). */
CIO_EXTERN int cio_multi_wait(cio_multi_t *m);
/* Cancels every loop's main task and returns at once, without waiting or
 * freeing (for a signal thread while main is in cio_multi_wait, which then
 * returns). Any thread, any number of times, as long as m is alive:
 * cio_multi_wait frees m once the main tasks end, so a call must not start
 * after that (a call already under way is waited for). Returns 0, -EINVAL
 * for NULL. */
CIO_EXTERN int cio_multi_cancel(cio_multi_t *m);

/* ------------------------------------------------------------------------ */
/* Threads: run_coroutine_threadsafe and the default executor               */
/* ------------------------------------------------------------------------ */

/*
 * A thread-safe future (concurrent.futures.Future): the outcome of a task
 * submitted to a loop from another thread. Every cio_cfuture_* call may be
 * made from any thread that holds a reference to the cfuture. Reference
 * counted between its holders and the loop: the submitter gets one, may
 * hand more to other threads or tasks with cio_cfuture_ref(), and each
 * holder releases its own with cio_cfuture_release() whenever it likes
 * (before completion too); the memory goes with the last reference. A
 * cfuture must not be used after its holder released it, even by another
 * thread still waiting: give that thread a reference of its own.
 * A loop runs on the thread that created it: "the loop's thread" below.
 */
typedef struct cio_cfuture cio_cfuture_t;

/*
 * asyncio.run_coroutine_threadsafe, from any thread (the loop's own
 * included): spawns fn(arg, &result) as a task of loop at its next
 * iteration and stores in *out a cfuture of its outcome (a reference the
 * caller releases; NULL on failure). Returns 0, -EINVAL (out, loop or fn
 * NULL), -ENOMEM, -ESHUTDOWN (loop closed; nothing was submitted). arg must
 * stay valid until the cfuture is done. The task is an ordinary task of
 * loop: cio_loop_shutdown cancels it. The cfuture ends without fn having
 * run (arg is still the caller's) with -ENOMEM when the task cannot be
 * spawned (out of memory in the loop), and with -ESHUTDOWN when the
 * submission reaches the loop once cio_loop_shutdown has begun on it (so
 * that submissions cannot keep the shutdown going) or once the loop no
 * longer runs before its close (a submission still queued at the close,
 * even on a loop that never ran, or made by a default-pool job the close
 * waits for). The loop must stay allocated (not cio_loop_free'd) until
 * the cfuture is done or the call has failed.
 */
CIO_EXTERN int cio_run_coroutine_threadsafe(cio_cfuture_t **out, cio_loop_t *loop,
                                            cio_task_fn fn, void *arg);

/*
 * Waits until cf is done, at most timeout seconds (INFINITY: no limit; 0
 * or less: only looks), and returns the task's status (0 or the negative
 * code its body returned; -ECANCELED if it was cancelled), storing its
 * result in *result when result is not NULL (NULL otherwise).
 *  - In a task (of any loop, the target's too) it is an await point that
 *    parks only that task: the loop runs on meanwhile. The waiting task's
 *    cancellation or an enclosing deadline returns -ECANCELED / -ETIMEDOUT
 *    (-ENOMEM when that deadline's timer cannot be armed) and does NOT
 *    cancel the remote task (unlike asyncio's wrap_future: a cfuture may
 *    have other waiters); call cio_cfuture_cancel for that. As at every
 *    await point, a task already cancelled gets -ECANCELED at once, even
 *    when cf is done.
 *  - Anywhere else (a plain thread, a thread-pool job, a callback of
 *    another loop, which is then blocked) it blocks the calling thread.
 * Errors of the call itself: -EINVAL (cf NULL, timeout NaN), -ETIMEDOUT
 * (the timeout passed first; cf is not done), -EDEADLK (called on the
 * target loop's thread other than from a task of that loop, where waiting
 * would keep the loop from ever running the task; returned only while cf
 * is not done and timeout > 0), and in a task the codes above.
 * cio_cfuture_done tells a -ETIMEDOUT or -ECANCELED of the call from the
 * task's own. Any number of threads and tasks may wait for one cfuture,
 * each holding a reference (cio_cfuture_ref) until its wait has returned.
 */
CIO_EXTERN int cio_cfuture_wait(cio_cfuture_t *cf, double timeout, void **result);

/*
 * Requests cancellation of the task (cio_task_cancel on the loop's thread,
 * from any thread). The cfuture is done when the task has ended (its body
 * may clean up first), usually with -ECANCELED; a cancel before the task
 * started still runs its body with every await point failing (as for any
 * task cancelled before it starts), so that it can free what arg owns.
 * Returns 1 if requested (or already requested), 0 if cf is already done,
 * -EINVAL for NULL.
 */
CIO_EXTERN int cio_cfuture_cancel(cio_cfuture_t *cf);

/* True once the task has ended (and its outcome is in cf). False for NULL. */
CIO_EXTERN bool cio_cfuture_done(const cio_cfuture_t *cf);

/* Drops one reference (see cio_cfuture_t). NULL is a no-op. */
CIO_EXTERN void cio_cfuture_release(cio_cfuture_t *cf);

/*
 * Adds a reference to cf, from any thread, and returns cf (NULL for NULL).
 * The caller must hold a reference itself for the duration of the call;
 * the new one is handed to another holder (a thread or task that will
 * wait for cf, cancel it or look at it), which drops it with
 * cio_cfuture_release() when done. Cannot fail.
 */
CIO_EXTERN cio_cfuture_t *cio_cfuture_ref(cio_cfuture_t *cf);

/*
 * asyncio's loop.set_default_executor: makes ex (from cio_executor_new,
 * sized as wanted) the pool that cio_to_thread and cio_run_in_executor with
 * a NULL executor use on loop. Loop thread only. Ownership of ex passes to
 * the loop, which shuts it down at cio_loop_shutdown / close (waiting for
 * its jobs); the caller must not shut it down or hand it to another loop.
 * A default pool already there (set before, or created by use) is shut
 * down, its idle threads joined. Returns 0; -EINVAL (loop or ex NULL, or ex
 * already the default), -ESHUTDOWN (loop closed, or its default pool shut
 * down by cio_shutdown_default_executor or cio_loop_shutdown), -EBUSY (the
 * current default pool has jobs queued or running), -ENOSPC (no room for
 * the pool's loop hooks); ex stays the caller's on failure.
 */
CIO_EXTERN int cio_loop_set_default_executor(cio_loop_t *loop, cio_executor_t *ex);

/*
 * Await point (asyncio's loop.shutdown_default_executor): shuts the running
 * loop's default pool down and waits, without blocking the loop, until the
 * jobs on it have finished (their results delivered) and its threads have
 * ended. As executor.shutdown(wait=True), jobs still queued are run, not
 * cancelled: a cio_to_thread waiting for one returns what fn returned. From
 * then on cio_to_thread and cio_run_in_executor with a NULL executor on
 * this loop return -ESHUTDOWN, for good (as asyncio's run_in_executor
 * raises once shutdown_default_executor was called). Returns 0; -ETIMEDOUT
 * when timeout seconds (INFINITY: no limit) pass first, -ECANCELED /
 * -ETIMEDOUT when the task or an enclosing scope is cancelled or expires:
 * the pool stays shut down and its jobs finish later (cio_loop_shutdown
 * waits for them, queued ones included; a close without it cancels the
 * queued ones and waits for the running ones). Also -EPERM outside a task,
 * -EINVAL (timeout NaN). A task already cancelled returns at once and
 * shuts nothing down. Calling it again waits again (0 at once when
 * nothing runs).
 */
CIO_EXTERN int cio_shutdown_default_executor(double timeout);

/* ------------------------------------------------------------------------ */
/* Signals (add_signal_handler)                                             */
/* ------------------------------------------------------------------------ */

/*
 * Unix signals as loop events, as asyncio's loop.add_signal_handler: the
 * callback is an ordinary callback run by the loop from its ready list,
 * never inside the signal handler, so it may call anything a callback may
 * (spawn, cancel, stop the loop).
 *
 * - Delivery: a signal may arrive on any thread (no thread needs to block
 *   it). Every loop that handles it, in any thread, gets it, and one
 *   delivery runs each such loop's callback exactly once, also when it
 *   arrives while the loop is busy (a task computing): the callback runs
 *   when the loop gets control back. The kernel merges deliveries of a
 *   standard signal that arrive while it is already pending; real-time
 *   signals (SIGRTMIN..SIGRTMAX) are queued and each one counts.
 * - Dispositions: while at least one loop handles a signal (or a task
 *   waits for it), its disposition is cio's handler (sigaction, SA_RESTART).
 *   When the last handler is removed, or its loop closed, the disposition
 *   that was in place when the first was added is restored exactly
 *   (handler, mask and flags). As in asyncio, the previous handler is not
 *   called meanwhile.
 * - Loop close removes the loop's handlers.
 * - fork(): the child inherits the handlers of every loop (dispositions
 *   belong to the process) with no delivery pending, and the parent and the
 *   child never see each other's signals. Deliveries to the child are
 *   counted on its copy of the loop (without waking anything) and their
 *   callbacks run once it calls cio_loop_fork(loop) and runs the loop. A
 *   child that will not use a loop that has handlers closes it or execs
 *   (exec resets caught signals to their default).
 * - Cost: none per loop iteration beyond one load of a flag, with or
 *   without handlers: handlers use no descriptor of their own (a delivery
 *   wakes the loop through its wake-up eventfd, the one
 *   cio_call_soon_threadsafe uses), so task switching is as fast with a
 *   handler as without (27.9 ns per switch in a two-task yield ping-pong
 *   on epoll, 28.8 on io_uring). cio_run's own SIGINT handling works the
 *   same way.
 * - Threads: these calls are for the loop's own thread (or, for a loop that
 *   is not running, the thread that owns it).
 */

/*
 * Runs cb(arg) on loop (NULL: the running loop) each time signo is
 * delivered to the process, until cio_signal_remove or the loop's close.
 * One handler per signal per loop: adding again replaces cb and arg
 * (deliveries not yet run go to the new one). Not an await point. Returns
 * 0, -EINVAL (cb NULL, or signo not a signal a loop can handle: not 1..64,
 * SIGKILL, SIGSTOP, the signals the C library reserves below SIGRTMIN, and
 * the synchronous faults SIGSEGV, SIGBUS, SIGFPE, SIGILL, which would
 * re-fault forever when deferred), -EPERM (loop NULL and no loop runs in
 * this thread), -ESHUTDOWN (loop closed), -ENOMEM, -ENOSPC (the loop's
 * table of layer hooks is full). No descriptor is needed. On failure
 * nothing is installed: the disposition and an earlier handler are
 * unchanged.
 */
CIO_EXTERN int cio_signal_add(cio_loop_t *loop, int signo, cio_callback_fn cb, void *arg);

/*
 * Removes loop's handler for signo (NULL: the running loop), as
 * loop.remove_signal_handler: returns 1 when one was removed, 0 when there
 * was none (also on a closed loop), -EINVAL (signo as for cio_signal_add),
 * -EPERM (loop NULL and no loop runs in this thread). Its deliveries not
 * yet run are dropped. When no loop handles signo any more and no task
 * waits for it, its previous disposition is restored. Not an await point.
 */
CIO_EXTERN int cio_signal_remove(cio_loop_t *loop, int signo);

/*
 * Await point: waits for the next delivery of signo to the process and
 * returns 0. Every task waiting for signo (on any loop) wakes, and each
 * loop's callback for it, if any, runs too. While a task waits, signo is
 * caught even when its loop has no handler for it; a delivery while no
 * task waits is not remembered for a later wait, and when the loop has no
 * handler either, such a delivery takes signo's previous disposition (the
 * default action of SIGTERM ends the process): add a handler to catch every
 * delivery. Cancellable, and subject to enclosing deadlines and scopes.
 * Returns 0, -ECANCELED, -ETIMEDOUT, -EPERM (not in a task), -EINVAL (signo
 * as for cio_signal_add), -ENOMEM, -ENOSPC (as for cio_signal_add).
 * Nothing stays installed after an error.
 */
CIO_EXTERN int cio_signal_wait(int signo);

/* ------------------------------------------------------------------------ */
/* Subprocesses (create_subprocess_exec / _shell)                           */
/* ------------------------------------------------------------------------ */

/*
 * A child process started by cio_process_exec or cio_process_shell on the
 * running loop. It is spawned with posix_spawn (vfork-style: no copy of the
 * parent's memory), every descriptor of cio close-on-exec, the signal mask
 * empty and every signal's disposition back to the default in the child.
 * The loop reaps it through a pidfd: no SIGCHLD handler is installed, and
 * no zombie is left, even when the object is freed before the child exits
 * (the loop then reaps it; at the loop's close a background thread does).
 */
typedef struct cio_process cio_process_t;

/* Where a child's standard stream goes (cio_process_opts_t). */
enum {
    CIO_PROC_INHERIT = 0, /* the parent's (the default) */
    CIO_PROC_PIPE,        /* a pipe whose other end is a cio_stream_t of the parent */
    CIO_PROC_DEVNULL,     /* /dev/null */
    CIO_PROC_STDOUT,      /* stderr only: wherever stdout goes (asyncio STDOUT) */
    CIO_PROC_FD           /* the caller's fd (stdin_fd ...), which the caller keeps */
};

/* A new session (setsid) or process group for the child; one or the other:
 * a session leader already leads a group of its own, so both together are
 * -EINVAL. */
#define CIO_PROC_NEW_SESSION 1u
#define CIO_PROC_NEW_PGROUP 2u

/* Options of a child. Zero-initialise: everything inherited. */
typedef struct cio_process_opts {
    int stdin_mode, stdout_mode, stderr_mode; /* CIO_PROC_* */
    int stdin_fd, stdout_fd, stderr_fd;       /* with CIO_PROC_FD */
    const char *cwd;          /* working directory (NULL: the parent's) */
    char *const *env;         /* "NAME=value" strings, NULL-terminated (NULL: environ) */
    unsigned flags;           /* CIO_PROC_NEW_SESSION, CIO_PROC_NEW_PGROUP */
    const cio_stream_opts_t *stream; /* limits of the pipe streams (NULL: defaults) */
    void *reserved_[2];       /* must be zero */
} cio_process_opts_t;

/*
 * Starts `file` with arguments argv (NULL-terminated, argv[0] included; NULL
 * gives {file, NULL}) on the running loop (asyncio create_subprocess_exec).
 * A file without '/' is searched in the PATH of this process's environment,
 * as execvp does. Not an await point: the child runs when this returns.
 * opts may be NULL. Returns 0 with the object in *out (the caller frees it
 * with cio_process_free), or -EINVAL (out or file NULL, a mode out of range,
 * CIO_PROC_STDOUT for stdin or stdout, a negative fd with CIO_PROC_FD,
 * unknown flags, both CIO_PROC_NEW_SESSION and CIO_PROC_NEW_PGROUP,
 * reserved_ not zero, stream options not valid), -EBADF (a CIO_PROC_FD
 * descriptor that is not open), -EPERM (no
 * running loop), -ENOMEM, -EMFILE / -ENFILE (no descriptor for a pipe or the
 * pidfd), or the exec's error: -ENOENT (no such program, or cwd missing),
 * -EACCES, -ENOEXEC, -E2BIG, -ENOTDIR..., -EAGAIN (no process could be
 * made), -ENOSPC (the loop's table of layer hooks is full). Nothing is left
 * behind on failure: no descriptor, and no child (one whose pidfd could not
 * be had is killed and reaped before returning). The descriptors of the
 * caller's CIO_PROC_FD are dup'ed, never closed.
 */
CIO_EXTERN int cio_process_exec(cio_process_t **out, const char *file, char *const argv[],
                                const cio_process_opts_t *opts);

/* As cio_process_exec for `/bin/sh -c cmd` (asyncio create_subprocess_shell):
 * the same returns; -EINVAL for cmd NULL. */
CIO_EXTERN int cio_process_shell(cio_process_t **out, const char *cmd,
                                 const cio_process_opts_t *opts);

/*
 * The parent's end of a child's stdin, stdout or stderr, for CIO_PROC_PIPE
 * (NULL otherwise, and for NULL). Borrowed: the process owns it and
 * cio_process_free releases it. The stdin stream only writes (its reads
 * return 0), the others only read (writes return -EBADF). To give the child
 * EOF on its stdin, call cio_stream_write_eof (the pipe is closed once what
 * is queued was written) or cio_stream_close; cio_stream_close and
 * cio_stream_abort close a pipe but never free it, so the pointer stays
 * valid until cio_process_free.
 */
CIO_EXTERN cio_stream_t *cio_process_stdin(cio_process_t *p);
CIO_EXTERN cio_stream_t *cio_process_stdout(cio_process_t *p);
CIO_EXTERN cio_stream_t *cio_process_stderr(cio_process_t *p);

/* The child's process id (it stays valid until cio_process_free, even once
 * reaped, but then names no process of ours); -EINVAL for NULL. */
CIO_EXTERN int cio_process_pid(const cio_process_t *p);

/*
 * Once the child has exited and been reaped: 0 with *code its return code
 * (the exit status 0..255, or minus the signal number that killed it, as in
 * Python). -EAGAIN while it runs (asyncio's None), -EINVAL (NULL argument),
 * -ECHILD (its status is not ours to know: after fork, when its loop closed
 * before it exited, or when something else reaped it: SIGCHLD set to
 * SIG_IGN, or a waitpid(-1) of the application).
 */
CIO_EXTERN int cio_process_returncode(const cio_process_t *p, int *code);

/*
 * Await point: waits for the child to exit (asyncio Process.wait). Returns
 * 0 with *code (may be NULL) as cio_process_returncode, or -ECANCELED /
 * -ETIMEDOUT (the child goes on running and stays tracked: a later wait
 * gets it), -ECHILD as above, -EPERM outside a task, -EINVAL for NULL,
 * -ESHUTDOWN when p is freed by another task while this one is inside
 * (also when the child's exit woke both and the other task, resuming first,
 * freed p). It does not read the pipes: a child that fills one blocks; use
 * cio_process_communicate.
 */
CIO_EXTERN int cio_process_wait(cio_process_t *p, int *code);

/*
 * Await point (asyncio Process.communicate): writes len bytes of input
 * (may be NULL with len 0) to the child's stdin and closes it, while
 * reading stdout and stderr to their end at the same time (so it never
 * deadlocks, however much the child writes on either), then waits for the
 * child to exit. *out / *err (may be NULL: the output is read and dropped)
 * receive what the child wrote on stdout / stderr in buffers from cio's
 * allocator (NUL-terminated; free() them, or with the function given to
 * cio_replace_allocator; NULL for a stream that is not a pipe or wrote
 * nothing), their lengths in *out_len / *err_len (may be NULL). A child
 * that exits without reading all its input is not an error (EPIPE is
 * ignored, as in asyncio). The input goes in slices that never exceed what
 * the stdin stream's write_limit admits, so small stream options work too.
 *
 * Before it writes or reads anything, it checks that it can run: -EBUSY
 * (another task is inside communicate on p, or is reading its stdout or
 * stderr), -ESHUTDOWN (the stdout or stderr pipe was closed, or stdin was
 * closed and input is given), -ECANCELED (entered cancelled); nothing is
 * written or consumed then. Once running it returns 0 (the return code from
 * cio_process_returncode), or -ECANCELED / -ETIMEDOUT (output read so far is
 * dropped; stdin keeps what was queued and stays open; the child runs on),
 * -ESHUTDOWN (p freed, or one of its pipes closed or aborted, by another
 * task meanwhile), -ENOMEM, or a pipe's error (-EIO ...); a failure of the
 * stdin writer other than EPIPE aborts stdin (the child sees EOF) and is
 * returned at once, without reading the outputs to their end. Also -EINVAL
 * (p NULL, input NULL with len, input given but stdin is not a pipe),
 * -EPERM outside a task, -ECHILD as above. On every failure *out and *err
 * are NULL.
 */
CIO_EXTERN int cio_process_communicate(cio_process_t *p, const void *input, size_t len,
                                       char **out, size_t *out_len, char **err,
                                       size_t *err_len);

/*
 * Sends signal sig to the child through its pidfd (no race with a reused
 * pid). Once the child was reaped it does nothing and returns 0 (asyncio
 * too ignores it then). After the loop's close, a child still running (its
 * return code -ECHILD) is still signalled through a pidfd the object keeps,
 * until the background thread reaps it; on kernels without pidfd_open it
 * is not (the pid may be reused once that thread reaped it): 0, nothing
 * sent. Returns 0, -EINVAL (NULL, sig out of range), or the kernel's error
 * (-EPERM). terminate sends SIGTERM, kill SIGKILL.
 */
CIO_EXTERN int cio_process_send_signal(cio_process_t *p, int sig);
CIO_EXTERN int cio_process_terminate(cio_process_t *p);
CIO_EXTERN int cio_process_kill(cio_process_t *p);

/*
 * Releases p and its pipe streams (aborted: what is queued for stdin is
 * dropped). It never kills the child: one still running is reaped by the
 * loop when it exits (or, after the loop's close, by a background thread),
 * so it never becomes a lasting zombie. Other tasks may be inside
 * cio_process_wait or cio_process_communicate on p, or in calls on its
 * streams: they return -ESHUTDOWN, and p and its streams are released when
 * the last of them leaves (the caller must not use p after this call).
 * NULL: no-op. Works after the loop's close too.
 */
CIO_EXTERN void cio_process_free(cio_process_t *p);

/* ------------------------------------------------------------------------ */
/* Process pool (ProcessPoolExecutor)                                       */
/* ------------------------------------------------------------------------ */

/*
 * A pool of worker processes for CPU-bound work (concurrent.futures.
 * ProcessPoolExecutor, multiprocessing.Pool with the fork start method).
 * The workers are fork()ed from the program when the pool is made (no exec),
 * so a job names a plain function of the program; it runs there on a bytes
 * argument and returns bytes.
 *
 * A worker runs nothing but a small blocking loop: read a job from its
 * channel, call fn, send the result back. It never touches a loop, a task or
 * a thread of the parent. Fork safety is as with multiprocessing's fork
 * start method: fn (and what it calls) must not rely on locks held or
 * threads running in the parent at the moment the worker was forked (a
 * thread-pool job's mutex, another thread's stdio lock); memory the program
 * had then is there as a copy. A worker keeps only stdin, stdout and stderr
 * and its channel: every other descriptor is closed right after the fork, so
 * a worker never holds the parent's sockets, pipes or the other workers'
 * channels open. (The pool's own descriptors are never 0-2, even when the
 * program closed those, and the channel keeps the number it had in the
 * program, which no other file had: a stdio stream of the program that fn
 * flushes, by calling exit for instance, writes into a closed descriptor,
 * never into the channel.) It starts with no signal blocked and every
 * handled signal back to its default action, runs fn on a stack of its own
 * of 8 MiB, and dies with its parent (PR_SET_PDEATHSIG and the end of its
 * channel). What fn prints to stdout or stderr through stdio is flushed when
 * the worker exits (only those two streams: the others are the program's).
 *
 * fn returns a negative errno code for an error (passed to the caller as
 * is), or >= 0 with its result in *out and *outlen: *out must come from the C
 * library's malloc (the worker frees it after sending), or be NULL with
 * *outlen 0. `in` is valid only during the call and read-only.
 *
 * Payloads up to 64 KiB travel inline over a SOCK_SEQPACKET socketpair
 * (whose buffers the pool sizes for two such messages, whatever the
 * system's defaults, within net.core.wmem_max); larger ones are put in a
 * memfd (one copy) that is passed along with SCM_RIGHTS and mapped on the
 * other side, so 64 MiB arguments and results move with one copy each way,
 * never through small pipe writes. A large argument's memfd is kept until
 * its job ends, so a job sent again (below) still has its argument.
 *
 * The pool belongs to one loop and is driven by it on both backends (fd
 * readiness of the channels and of each worker's pidfd); every call is made
 * from that loop's thread. No task is created: cio_loop_shutdown does not
 * touch the pool, and cio_dump_tasks shows a task waiting for a job as
 * waiting on a "process job".
 *
 * A worker that dies (a crash, SIGKILL, exit called by fn) fails the job it
 * was running with -EPIPE (debug mode says which signal or status) and is
 * reaped and replaced by a new one: the pool never hangs on a dead worker.
 * The results it sent before it died still count. The jobs sent to it that
 * it had not read yet never started (the pool knows: a worker counts the
 * jobs it reads in a page shared with the pool, before calling fn): they go
 * back to the front of the queue, in order, for another worker; a job that
 * has gone back three times fails with -EPIPE the fourth, so that workers
 * dying at their start cannot make the pool fork for ever. (When the pool
 * loses a worker that is not known to be dead, its channel closed under the
 * pool or broken, the worker is killed, the oldest job it held fails with
 * -EPIPE and the one sent ahead goes back to the queue.) A live worker
 * stuck in fn looks like a slow job: bound the wait with a deadline
 * (cio_wait_for, a scope), which cancels the job. Every worker is
 * reaped by the pool itself through its pidfd (no SIGCHLD handler, no
 * waitpid(-1)); a program that reaps every child itself (SIGCHLD set to
 * SIG_IGN, waitpid(-1)) does not disturb it.
 *
 * After fork() (cio_loop_fork): the workers belong to the parent. In the
 * child, cio_loop_fork makes the copy of every pool of that loop unusable:
 * its channels and pidfds are closed there (the workers are neither signalled
 * nor waited for), every job queued or running at the fork ends with -ECHILD
 * in the child (the parent's jobs go on normally), submit/run/map return
 * -ECHILD, shutdown returns 0 at once and free frees the copy. In a child
 * that has not called cio_loop_fork (which may only exec or _exit), submit,
 * run, map and shutdown return -ECHILD and free does nothing.
 */
typedef struct cio_process_pool cio_process_pool_t;

/* The function a job runs in a worker (see above). */
typedef int (*cio_pool_fn)(const void *in, size_t len, void **out, size_t *outlen);

/*
 * The result of a job: len bytes at data (data is not NULL, also for 0
 * bytes; aligned for any type; writable). A job's future owns its result:
 * what cio_await or cio_future_result hand out stays valid until the last
 * reference to the future is released, which frees it. To keep it longer,
 * take it with cio_process_pool_take, and free it with cio_pool_bytes_free.
 * cio_process_pool_run and cio_process_pool_map hand over results taken.
 */
typedef struct cio_pool_bytes {
    void *data;
    size_t len;
} cio_pool_bytes_t;

/* Frees a job result (a large one is unmapped). NULL is a no-op. */
CIO_EXTERN void cio_pool_bytes_free(cio_pool_bytes_t *b);

/*
 * Takes the result out of a done job future: the caller owns it from now on
 * (cio_pool_bytes_free), and the future's result becomes NULL. Returns NULL
 * when there is nothing to take: f NULL, not a process pool job's future,
 * not done, failed, or taken already. Not an await point.
 */
CIO_EXTERN cio_pool_bytes_t *cio_process_pool_take(cio_future_t *f);

/* Options of cio_process_pool_new. Zero-initialise. */
typedef struct cio_process_pool_opts {
    unsigned workers;    /* worker processes; 0 = the online CPUs */
    /* false (default): a busy worker is sent its next job ahead (only when
     * no worker is idle), so it never waits for the round trip between two
     * jobs; a job may then wait behind a long one while another worker
     * frees up. true: one job per worker at a time (best for long jobs of
     * uneven length). */
    bool one_at_a_time;
    void *reserved_[4];  /* must be zero */
} cio_process_pool_opts_t;

/*
 * Creates a pool on `loop` (NULL = the running loop) and forks its workers
 * now (opts NULL = defaults). Stores it in *out (NULL on failure). Returns 0,
 * -EINVAL (out NULL, reserved fields not zero, more than 1024 workers),
 * -EPERM (loop NULL and no loop runs), -ESHUTDOWN (loop closed), -ENOMEM,
 * or the error of socketpair, fork or pidfd_open (-EAGAIN, -EMFILE,
 * -ENOSYS before Linux 5.3, ...): then no worker is left behind. Not an
 * await point. The caller ends it with cio_process_pool_shutdown and frees
 * it with cio_process_pool_free.
 */
CIO_EXTERN int cio_process_pool_new(cio_process_pool_t **out, cio_loop_t *loop,
                                    const cio_process_pool_opts_t *opts);

/*
 * Submits fn(in, len) (Executor.submit) and stores a future of its outcome
 * in *out (a new reference, NULL on failure; the caller releases it). The
 * argument is copied before the call returns (into a memfd above 64 KiB),
 * so `in` may be reused at once. The future's status is fn's return value
 * (>= 0, or its negative code), or: -EPIPE if the worker died running it
 * (or its workers died before reading it four times, see above); -EINVAL if
 * fn returned >= 0 with *out NULL and *outlen > 0; -EMFILE if its result
 * (over 64 KiB, passed as a descriptor) arrived when the program had no
 * descriptor free (the worker stays); -ENOMEM if its result could not be
 * received; the worker's error mapping a large argument or making a memfd
 * for a large result (-ENOMEM, -EMFILE, -ENOSPC, ...); the error of sending
 * it that no retry would cure (-EMSGSIZE, -ENOBUFS, -ENOMEM, ...);
 * -EPROTO for a malformed message from a broken worker; the error of
 * socketpair, fork or pidfd_open (-EAGAIN, -EMFILE, -ENOMEM, ...) when
 * every worker died and none could be started while it was queued;
 * -ECHILD in a child after fork (below); -ECANCELED if cancelled or cut
 * by the loop's close. Its result is a cio_pool_bytes_t * on success,
 * NULL otherwise. Cancelling the future (cio_future_cancel, or a cancelled
 * cio_await) ends it at once with -ECANCELED: a job not yet sent to a worker
 * is dropped, a job already sent runs to its end in the worker and its
 * result is discarded. Jobs are sent in submission order, to idle workers
 * first (and one ahead to busy ones, see one_at_a_time). A job sent to a
 * worker that dies before reading it never started: it goes to another
 * worker (see above). Not an await point. Returns 0, -EINVAL (out, pool or
 * fn NULL, in NULL with len > 0), -ESHUTDOWN (after
 * cio_process_pool_shutdown, or its loop closed), -ECHILD (in a child after
 * fork), -ENOMEM, the error of memfd_create/write for a large argument
 * (-EMFILE, -ENOSPC, ...), or, when no worker is alive (they died and could
 * not be replaced) and none can be started now, the error of socketpair,
 * fork or pidfd_open (-EAGAIN, -EMFILE, -ENOMEM, ...).
 */
CIO_EXTERN int cio_process_pool_submit(cio_future_t **out, cio_process_pool_t *pool,
                                       cio_pool_fn fn, const void *in, size_t len);

/*
 * Await point: submits fn(in, len) and waits for it. Returns fn's status
 * (>= 0) with the result in *out (the caller frees it with
 * cio_pool_bytes_free), or a negative code with *out NULL: the codes of
 * cio_process_pool_submit and of its future (above), -EPERM outside a task,
 * -ECANCELED / -ETIMEDOUT when the caller is cancelled or its deadline
 * passes (the job is cancelled as above: the caller does not wait for a
 * running job), -ENOMEM (a deadline timer). out may be NULL (the result is
 * discarded).
 */
CIO_EXTERN int cio_process_pool_run(cio_process_pool_t *pool, cio_pool_fn fn, const void *in,
                                    size_t len, cio_pool_bytes_t **out);

/*
 * Await point (Executor.map): runs fn on each of the n arguments in[i]
 * (iov_base, iov_len), all submitted at once, and stores the result of
 * in[i] in out[i], in order. Returns 0, or the error of the first failing
 * argument in order (as cio_process_pool_run), or -EINVAL (in or out NULL
 * with n > 0), -EPERM outside a task, -ENOMEM (the array of futures); on
 * any error every out[i] is NULL (results already received are freed) and
 * the jobs still pending are cancelled as above.
 */
CIO_EXTERN int cio_process_pool_map(cio_process_pool_t *pool, cio_pool_fn fn,
                                    const struct iovec *in, size_t n, cio_pool_bytes_t **out);

/*
 * Stops accepting jobs (Executor.shutdown): later submissions return
 * -ESHUTDOWN. With cancel_futures, jobs not yet sent to a worker end with
 * -ECANCELED; otherwise they still run. Each worker is told to exit (its
 * channel is shut) once nothing is left for it, and reaped: no zombie and
 * no descriptor remains once the pool has ended. With wait, an await point
 * that returns when every job has finished and every worker is reaped;
 * without, it returns at once and the loop finishes the rest. Returns 0,
 * -EINVAL (NULL), -ECHILD (in a child after fork, before cio_loop_fork),
 * and with wait: -EPERM outside a task, -ECANCELED / -ETIMEDOUT / -ENOMEM
 * (as every await point; the pool is shut down all the same and ends in the
 * background). Calling it again is allowed (and waits again). Closing the
 * loop ends a pool at once: workers are killed (SIGKILL) and reaped, and
 * pending jobs end with -ECANCELED.
 */
CIO_EXTERN int cio_process_pool_shutdown(cio_process_pool_t *pool, bool wait,
                                         bool cancel_futures);

/*
 * Frees the pool: shuts it down first if that was not done (without
 * waiting, jobs already submitted still run); its memory goes once every
 * worker is reaped, which the loop (or its close) finishes. The futures of
 * its jobs stay valid. pool must not be used afterwards. NULL is a no-op.
 */
CIO_EXTERN void cio_process_pool_free(cio_process_pool_t *pool);

/* The number of workers the pool keeps (0 for NULL). */
CIO_EXTERN unsigned cio_process_pool_workers(const cio_process_pool_t *pool);

/* ------------------------------------------------------------------------ */
/* Files                                                                    */
/* ------------------------------------------------------------------------ */

/*
 * Files without blocking the loop (Python's aiofiles, Go's os.File). Every
 * call that may touch the disk is an await point of the current task
 * (-EPERM outside one) and takes part in cancellation and deadlines. On
 * io_uring each is a native operation (openat, read, write, fsync, statx,
 * close); on epoll, where regular files never wait for readiness, each runs
 * on a thread of the loop's default pool (cio_to_thread), so the loop keeps
 * running while the disk works. A FIFO, character device (a terminal) or
 * socket may wait forever, which a pool thread could not be stopped from
 * doing: on epoll such a file is opened non-blocking and its reads and
 * writes wait for readiness on the loop, as a socket's do, so they never
 * hold a pool thread and are cancelled like any await point.
 *
 * Cancel safety, the same on both backends: a call that returns -ECANCELED
 * or -ETIMEDOUT did nothing. A system call already under way when the task
 * was cancelled is waited for (a pool thread cannot be interrupted; an
 * io_uring operation is asked to cancel), and if it completed its result is
 * returned as a success (bytes read handed over, bytes written counted in
 * *written, an opened file returned); the next await point then reports the
 * cancellation. So no byte is read or written without the caller knowing.
 *
 * Besides the codes each call lists, every await point here may return
 * -ENOMEM (the pool job, or the io_uring submission), -EAGAIN (epoll: no
 * pool thread exists and none can be created), -EBUSY (io_uring: the
 * kernel takes no more submissions), and the system call's own errors.
 */

struct stat;

/* An open file. Owned by the caller, ended with cio_file_close. */
typedef struct cio_file cio_file_t;

/* Bytes handed out by the reader generators; valid until the generator is
 * resumed again. Not NUL-terminated (lines may hold NUL bytes). */
typedef struct cio_file_chunk {
    const char *data;
    size_t len;
} cio_file_chunk_t;

/*
 * Opens path (relative paths from the working directory) with open(2)'s
 * flags and mode (for O_CREAT), O_CLOEXEC always added, and stores the file
 * in *out (NULL on failure). Await point. Returns 0, -EINVAL (out or path
 * NULL), -EPERM outside a task, -ENOMEM, -ECANCELED, -ETIMEDOUT, or open's
 * errors (-ENOENT, -EACCES, -EISDIR for writing a directory, -EMFILE,
 * -EEXIST with O_EXCL, ...). The caller ends the file with cio_file_close.
 * A FIFO opened for writing waits for a reader as open(2) does (on epoll by
 * retrying on a timer), cancellably; -ENXIO only with O_NONBLOCK. A FIFO
 * opened for reading waits for a writer on io_uring; on epoll the open
 * returns at once and the first read waits for a writer instead (data, or
 * a writer that came and went: then 0).
 */
CIO_EXTERN int cio_file_open(cio_file_t **out, const char *path, int flags, mode_t mode);

/*
 * Reads up to len bytes at the file position, advancing it (one read(2)).
 * Returns the count (0 at end of file; for a regular file short only at
 * the end, or when len is above 0x7ffff000, the most one read(2) moves on
 * Linux: read again for the rest), -EINVAL (f NULL, buf NULL with len),
 * -EBADF (f closed or being closed, also by a close that stopped this
 * read, or not open for reading), -EISDIR, -EPERM, -ECANCELED,
 * -ETIMEDOUT, or read's errors.
 */
CIO_EXTERN ssize_t cio_file_read(cio_file_t *f, void *buf, size_t len);

/* As cio_file_read at offset, leaving the position alone (pread). Also
 * -EINVAL for a negative offset. */
CIO_EXTERN ssize_t cio_file_pread(cio_file_t *f, void *buf, size_t len, int64_t offset);

/*
 * Writes all len bytes at the file position (at the end with O_APPEND),
 * as many write(2) calls as needed (one takes at most 0x7ffff000 bytes, a
 * pipe less): never a silent short write, whatever len. Returns 0 once
 * everything is written, else the error (-EBADF, also when a close of f
 * started meanwhile stops it; -ENOSPC, -EFBIG, -EINVAL, -EIO, -ECANCELED,
 * -ETIMEDOUT, -EPERM, ...); *written (when not NULL) receives the bytes
 * written in every case.
 */
CIO_EXTERN int cio_file_write(cio_file_t *f, const void *buf, size_t len, size_t *written);

/* As cio_file_write at offset (pwrite; the position is left alone). Also
 * -EINVAL for a negative offset. */
CIO_EXTERN int cio_file_pwrite(cio_file_t *f, const void *buf, size_t len, int64_t offset,
                               size_t *written);

/* fsync(2), or fdatasync(2) with datasync. Await point. Returns 0,
 * -EINVAL (NULL), -EBADF, -EIO, -ECANCELED, -ETIMEDOUT, -EPERM. */
CIO_EXTERN int cio_file_fsync(cio_file_t *f, bool datasync);

/* fstat: stores the file's status in *st. Await point. Returns 0, -EINVAL
 * (f or st NULL), -EBADF, -ECANCELED, -ETIMEDOUT, -EPERM. */
CIO_EXTERN int cio_file_stat(cio_file_t *f, struct stat *st);

/* stat(2) of a path (symbolic links followed; aiofiles.os.stat). Await
 * point. Returns 0, -EINVAL (NULL), -ENOENT, -ENOTDIR, -EACCES, -ELOOP,
 * -ECANCELED, -ETIMEDOUT, -EPERM. */
CIO_EXTERN int cio_stat(const char *path, struct stat *st);

/* lseek(2): moves the file position; returns the new one, -EINVAL (NULL, a
 * bad whence or a negative result), -EBADF, -ESPIPE. Not an await point. */
CIO_EXTERN int64_t cio_file_seek(cio_file_t *f, int64_t offset, int whence);

/* The descriptor (borrowed: cio_file_close closes it); -EINVAL for NULL,
 * -EBADF once closing. */
CIO_EXTERN int cio_file_fd(const cio_file_t *f);

/*
 * Closes the file and frees f: new calls on it are refused (-EBADF) at
 * once; the calls other tasks are making on it are stopped where they
 * wait, and waited for; then the descriptor is closed (natively on
 * io_uring, on the pool on epoll), never while a call may still use it.
 * Stopped means: on io_uring every call still in the kernel is cancelled
 * and returns -EBADF (one that completed first keeps its result); on epoll
 * the reads and writes of a FIFO, terminal or socket waiting for readiness
 * return -EBADF, and a call on a regular file (a pool thread) runs to its
 * end and keeps its result. The close is not cancellable: a cancelled task
 * still closes its file (the cancellation shows at its next await point).
 * Outside a task (a callback) with no call running the descriptor is
 * closed at once; with calls running it cannot be waited for, so the close
 * is deferred: they are stopped as above, cio_file_close returns 0, and
 * the last of them to return closes the descriptor and frees f (close's
 * error is then lost). Returns 0, close's error (-EIO: written data may be
 * lost; the descriptor is closed all the same), or -EBADF for a second
 * close while the first one waits. f must not be used after the call.
 * NULL is a no-op (0).
 */
CIO_EXTERN int cio_file_close(cio_file_t *f);

#define CIO_FILE_CHUNK_SIZE (64 * 1024) /* chunk size when 0 is given */
#define CIO_FILE_LINE_MAX (1024 * 1024) /* line limit when 0 is given */

/*
 * The reader generators (seed 000, section 4.2): async generators that open
 * path at their first resume and yield a cio_file_chunk_t * at each
 * cio_gen_next (1), finish with 0 at the end of the file, or fail with the
 * error of the open or a read (< 0; the file is closed either way). They
 * must be driven from a task (their reads await; elsewhere they fail with
 * -EPERM). Free them with cio_gen_free, also to stop early: the file is
 * closed then. The generator owns a copy of path. These generators (and
 * the follower) are started at creation, to a first yield that does
 * nothing, so that freeing one never iterated still frees what it owns;
 * so they take a stack of the running loop at once and, as every started
 * generator, must be freed before that loop is closed (free them in the
 * task that uses them). Creation returns 0,
 * -EINVAL (out or path NULL, chunk_size above INT32_MAX), -ENOMEM.
 *
 * cio_file_chunks: chunks of up to chunk_size bytes (0: 64 KiB).
 * cio_file_lines: each line with its '\n' (CRLF stays as bytes); the last
 * line without a newline is yielded too; an empty file yields nothing. A
 * line longer than max_line bytes, newline included (0: 1 MiB), ends the
 * generator with -EOVERFLOW: never a silent truncation.
 */
CIO_EXTERN int cio_file_chunks(cio_gen_t **out, const char *path, size_t chunk_size);
CIO_EXTERN int cio_file_lines(cio_gen_t **out, const char *path, size_t max_line);

#define CIO_FOLLOW_FROM_START 1u /* yield the lines already there too */
#define CIO_FOLLOW_POLL 2u       /* poll on a timer, no inotify */

/* Options of cio_file_follow. Zero-initialise and set what you need. */
typedef struct cio_follow_opts {
    unsigned flags;       /* CIO_FOLLOW_* */
    double poll_interval; /* seconds (0: 1 s): the poll period, or with
                             inotify the period of a safety-net recheck */
    size_t max_line;      /* 0: CIO_FILE_LINE_MAX */
    void *reserved_[2];   /* must be zero */
} cio_follow_opts_t;

/*
 * tail -F as an async generator: yields (cio_file_chunk_t *, as the line
 * reader) each complete line appended to path from now on (from its start
 * with CIO_FOLLOW_FROM_START), and never finishes by itself. It wakes up on
 * inotify events (the file modified, moved, deleted; a file of that name
 * created in its directory), read through the operation layer on both
 * backends, and rechecks every poll_interval; where inotify is not
 * available (or with CIO_FOLLOW_POLL) it polls. It survives:
 *  - truncation (the size falls below what was read): reading restarts at 0;
 *  - rotation (the name now points to another file, by rename or delete
 *    and create): the old file is read to its end, then the new one is
 *    followed from its start;
 *  - deletion: the old file stays open and the follower waits for the name
 *    to come back.
 * At a truncation or a rotation a pending partial line (no newline yet) is
 * yielded as it is, never dropped. Driven from a task: cancelling the task
 * makes cio_gen_next return -ECANCELED, and cio_gen_free then frees
 * everything (file, inotify descriptor, buffers). The first cio_gen_next
 * fails with the open's error (-ENOENT when path does not exist). A line
 * longer than max_line ends it with -EOVERFLOW. Creation returns 0, -EINVAL
 * (out or path NULL, bad flags, negative or NaN interval, an infinite one
 * with CIO_FOLLOW_POLL, reserved_ not zero), -ENOMEM. An infinite interval
 * with inotify means no timed recheck (should inotify be unavailable, the
 * follower then polls every second).
 */
CIO_EXTERN int cio_file_follow(cio_gen_t **out, const char *path, const cio_follow_opts_t *opts);

#ifdef __cplusplus
}
#endif

#endif /* CIO_H */
