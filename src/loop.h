/*
 * Layer 3, the loop core: handles and the ready list, timers (timer.c), fd
 * watchers (fd.c), the backend interface and its two implementations
 * (backend_epoll.c, backend_uring.c, chosen at run time in loop.c), the
 * threadsafe queue, object pools, and the loop's life cycle (loop.c).
 *
 * The loop core calls nothing above it. The layers above reach it through
 * callbacks it is handed: ready handles, fd watcher functions, operation
 * completion functions, and close hooks for what must run at close.
 */
#ifndef CIO_LOOP_H
#define CIO_LOOP_H

#include "stack.h"

#include <pthread.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/uio.h>

/* ------------------------------------------------------------------------ */
/* Object pools: no malloc per task, future or callback                      */
/* ------------------------------------------------------------------------ */

typedef struct cio__freelist {
    void *head;
    size_t size;      /* object size, set by cio__pool_init */
    void *chunks;     /* chunk list for freeing at close */
    size_t live;
} cio__freelist;

void cio__pool_init(cio__freelist *fl, size_t size);
/* Adds a chunk of objects to the free list: 0 or -ENOMEM. */
int cio__pool_refill(cio__freelist *fl);
void cio__pool_destroy(cio__freelist *fl);

/* An object of fl->size bytes, or NULL when out of memory. Inline: spawn,
 * futures and callbacks take one each. */
static inline void *cio__pool_alloc(cio__freelist *fl)
{
    if (cio__unlikely(!fl->head) && cio__pool_refill(fl))
        return NULL;
    void *p = fl->head;
    fl->head = *(void **)p;
    fl->live++;
    return p;
}

static inline void cio__pool_free(cio__freelist *fl, void *p)
{
    *(void **)p = fl->head;
    fl->head = p;
    fl->live--;
}

/* ------------------------------------------------------------------------ */
/* Timers (timer.c): a 4-ary min-heap keyed by (deadline, sequence)          */
/* ------------------------------------------------------------------------ */

typedef struct cio__theap_entry {
    int64_t when;
    cio_handle_t *h;
} cio__theap_entry;

typedef struct cio__theap {
    cio__theap_entry *v;
    uint32_t n, cap;
} cio__theap;

/* Returns 0, or -ENOMEM when the heap cannot grow (nothing changed). */
int cio__timer_insert(cio__theap *hp, cio_handle_t *h);
void cio__timer_remove(cio__theap *hp, cio_handle_t *h);
/* The earliest deadline, or CIO__NO_DEADLINE. */
static inline int64_t cio__timer_next(const cio__theap *hp)
{
    return hp->n ? hp->v[0].when : CIO__NO_DEADLINE;
}
/* Removes and returns the earliest timer if its deadline <= now. */
cio_handle_t *cio__timer_pop_expired(cio__theap *hp, int64_t now);
void cio__timer_free(cio__theap *hp);

/* ------------------------------------------------------------------------ */
/* The backend interface                                                      */
/* ------------------------------------------------------------------------ */

/*
 * An I/O operation handed to a completion backend (io_uring). The operation
 * layer (io.c) fills it, the backend turns it into a submission, and when the
 * completion arrives the loop stores the result in `res` and calls
 * `complete`. The op must stay valid (and so must its buffers) until then:
 * the operation layer keeps the task parked until the completion arrives,
 * even when the operation is cancelled.
 */
enum cio__opcode {
    CIO__OP_READ = 1, /* buf, len, offset (-1: the file position) */
    CIO__OP_WRITE,    /* buf, len, offset */
    CIO__OP_READV,    /* iov, iovcnt, offset */
    CIO__OP_WRITEV,   /* iov, iovcnt, offset */
    CIO__OP_RECV,     /* buf, len, flags */
    CIO__OP_SEND,     /* buf, len, flags */
    CIO__OP_RECVMSG,  /* msg, flags */
    CIO__OP_SENDMSG,  /* msg, flags */
    CIO__OP_ACCEPT,   /* addr, addrlen (in/out), flags (accept4's) */
    CIO__OP_CONNECT,  /* addr, socklen */
    CIO__OP_FSYNC,    /* flags: 1 for fdatasync */
    /* Files (file.c). Paths resolve from the working directory (AT_FDCWD);
     * an operation on a path has fd -1 and is not tracked per descriptor. */
    CIO__OP_OPENAT,   /* buf: path, flags: open flags, len: mode; res: the fd */
    CIO__OP_STATX,    /* buf: path, flags: AT_* (AT_EMPTY_PATH: of fd), len:
                         mask, stx: the result */
    CIO__OP_CLOSE     /* fd */
};

struct statx;

typedef struct cio__op {
    uint8_t code;          /* enum cio__opcode */
    uint8_t done;          /* the completion arrived */
    int fd;
    int flags;
    int iovcnt;
    socklen_t socklen;
    int32_t res;           /* the result: >= 0, or a negative errno */
    void *buf;
    size_t len;
    const struct iovec *iov;
    union {
        struct msghdr *msg;
        struct statx *stx; /* CIO__OP_STATX */
    };
    struct sockaddr *addr;
    socklen_t *addrlen;
    int64_t offset;
    void (*complete)(struct cio__op *op); /* called by the loop, once */
    void *data;            /* the operation layer's */
    struct cio__op *fd_next, *fd_prev; /* in flight on fd (fd.c) */
} cio__op;

/* What a backend hands back to the loop from poll. */
enum { CIO__EV_READY = 1, CIO__EV_DONE };
typedef struct cio__event {
    uint8_t kind;   /* CIO__EV_READY: fd is ready for `res` (event bits);
                       CIO__EV_DONE: op finished with result `res` */
    int32_t res;
    int fd;
    uint32_t gen;   /* READY: the generation fd was registered with */
    cio__op *op;
} cio__event;

/*
 * A backend: a table of operations, its state private to it (behind the
 * `state` pointer). Readiness interest is persistent and level-triggered,
 * as with epoll: a ready fd is reported at every poll until the interest is
 * dropped. Backends without completion operations leave submit and cancel
 * NULL, and the operation layer then uses readiness and retries.
 */
typedef struct cio__backend {
    const char *name;
    /* Creates the state. Returns 0, a negative errno for a failure of cio's
     * own (-ENOMEM: the loop fails), or a positive errno when the kernel
     * refuses the backend (ENOSYS, EPERM, ENOMEM of locked memory...): the
     * loop then falls back to epoll. */
    int (*init)(void **state);
    void (*close)(void *state);
    /* Changes fd's interest from old_ev to new_ev (event bits, 0 = none).
     * gen is the fd table's generation of fd, echoed in its READY events, so
     * that an event polled before the fd was closed and its number reused
     * is recognised in the same batch. */
    int (*watch)(void *state, int fd, uint32_t gen, unsigned old_ev, unsigned new_ev);
    /* Waits up to timeout_ns (-1 forever, 0 not at all), submitting what is
     * queued first, and stores up to cap events in out. Returns the count,
     * or a negative errno (EINTR is 0 events). */
    int (*poll)(void *state, int64_t timeout_ns, cio__event *out, int cap);
    /* Queues op (no system call until the next poll). 0 or -errno. */
    int (*submit)(void *state, cio__op *op);
    /* Asks the kernel to cancel op; its completion still arrives. */
    int (*cancel)(void *state, cio__op *op);
    /* True while submissions are queued that only a poll sends. */
    int (*pending)(void *state);
    /* Sends queued submissions now (before an fd they name is closed and
     * its number reused): 0 or -errno. NULL for readiness backends. */
    int (*flush)(void *state);
} cio__backend;

extern const cio__backend cio__backend_epoll;
extern const cio__backend cio__backend_uring;

/* ------------------------------------------------------------------------ */
/* fd watchers (fd.c)                                                        */
/* ------------------------------------------------------------------------ */

/* Passed to internal watchers, with both event bits, when their fd is
 * being closed (cio__fd_forget): the number may name another file by the
 * time the woken task runs, so it must not try the fd again. */
#define CIO__FD_CLOSING 0x100u

/* An internal watcher: called with the events that fired. */
typedef void (*cio__fd_fn)(void *arg, int fd, unsigned events);

typedef struct cio__fdside {
    cio__fd_fn fn;           /* internal watcher, or */
    cio_callback_fn ucb;     /* a user's (cio_add_reader/writer) */
    void *arg;
} cio__fdside;

typedef struct cio__fdw {
    unsigned events;         /* registered with the backend */
    uint32_t gen;            /* bumped when the fd is forgotten (closed) */
    cio__fdside r, w;
    cio__op *ops;            /* submitted operations in flight on the fd */
} cio__fdw;

/*
 * Sets the internal watcher of fd for `events` (CIO_READABLE, CIO_WRITABLE
 * or both): fn(arg, fd, fired) runs when they fire, until cleared with
 * cio__fd_clear. Returns 0, -EBUSY if a direction is already watched,
 * -EINVAL, -ENOMEM, -ESHUTDOWN, or the backend's error.
 */
int cio__fd_set(cio_loop_t *loop, int fd, unsigned events, cio__fd_fn fn, void *arg);
/* Drops the internal watcher of fd for `events`. */
void cio__fd_clear(cio_loop_t *loop, int fd, unsigned events);
/* Dispatches a readiness event to fd's watchers. */
void cio__fd_dispatch(cio_loop_t *loop, int fd, unsigned events);
/* The same for an event of the backend: dropped when it was polled for an
 * earlier life of the fd number (closed and reused since). */
void cio__fd_ready(cio_loop_t *loop, int fd, uint32_t gen, unsigned events);
/* Forgets every watcher of fd (before it is closed). */
void cio__fd_forget(cio_loop_t *loop, int fd);
/* Frees the table at close. */
void cio__fd_close(cio_loop_t *loop);
/* Records a submitted op as in flight on its fd (0 or -ENOMEM/-EBADF), and
 * forgets it at its completion; an op with fd -1 (a path) is not recorded. */
int cio__fd_track(cio_loop_t *loop, cio__op *op);
void cio__fd_untrack(cio_loop_t *loop, cio__op *op);

/* ------------------------------------------------------------------------ */
/* Close hooks: what the layers above must do when the loop closes           */
/* ------------------------------------------------------------------------ */

typedef struct cio__loop_hooks {
    int layer;  /* close hooks run from the highest layer down */
    /* Returns -EBUSY to refuse the close (objects of the layer still live). */
    int (*busy)(cio_loop_t *loop);
    /* Returns -EBUSY to refuse freeing the loop object (objects of the
     * layer still point at it, e.g. referenced futures). */
    int (*busy_free)(cio_loop_t *loop);
    /* Debug mode: lists what the layer still has open. */
    void (*report)(cio_loop_t *loop, FILE *out);
    /* Releases the layer's state of this loop. */
    void (*close)(cio_loop_t *loop);
    /* In a child after fork (cio_loop_fork): drops what the parent owns. */
    void (*fork)(cio_loop_t *loop);
} cio__loop_hooks;

#define CIO__LOOP_HOOKS 16

/* Registers h with the loop (once: registering again does nothing).
 * Returns 0 or -ENOSPC. */
int cio__loop_hook(cio_loop_t *loop, const cio__loop_hooks *h);

/* ------------------------------------------------------------------------ */
/* The loop                                                                   */
/* ------------------------------------------------------------------------ */

enum { CIO__TS_OWNED = 1, CIO__TS_NOTIFY = 2 };

typedef struct cio__tsnode {
    struct cio__tsnode *next;
    cio_callback_fn cb;
    void *arg;
    /* 0: allocated by cio_call_soon_threadsafe, freed by the loop;
     * CIO__TS_OWNED: the poster's storage, not freed (dropped if still
     * queued at close); CIO__TS_NOTIFY: the poster's storage, and cb also
     * runs when the close finds it still queued (loop->running is 0 then,
     * and other threads already see the loop closed). */
    uint8_t owned;
} cio__tsnode;

/*
 * Posts n (owned by the caller, cb and arg set) to the loop from any thread,
 * like cio_call_soon_threadsafe but with no allocation, so it cannot fail
 * for memory. Returns 0, or -ESHUTDOWN once the loop is closed (n is not
 * queued then). n must stay valid until its callback has run.
 */
int cio__loop_post(cio_loop_t *loop, cio__tsnode *n);

/* The pools of the loop, one per fixed-size object type of the layers
 * above (they set the size with cio__pool_init on first use). */
enum { CIO__POOL_HANDLE, CIO__POOL_FUTURE, CIO__POOL_TASK, CIO__POOL_CB, CIO__POOLS };

struct cio_loop {
    cio_handle_t ready;  /* sentinel of the circular ready list */
    size_t nready;       /* handles on the ready list */
    cio_handle_t batch_end; /* marks the end of the batch being run */
    cio__theap timers;
    uint64_t seq;
    int64_t now;
    void *sched_sp;      /* the loop's stack pointer while a coroutine runs */
    uint8_t running, stopping, closed, debug;
    uint8_t last_was_task; /* debug: the last ready callback reported itself */
    uint8_t now_valid;     /* `now` was read during this iteration */
    pthread_t owner;       /* the thread that created the loop */
    int64_t slow_ns;

    const cio__backend *be;
    void *be_state;
    cio__event *events;  /* poll results */
    int nevents;
    size_t inflight;     /* submitted operations not yet completed */
    cio__fdw *fds;
    int nfds;
    int nwatch;          /* fds with something registered */

    int wakefd;
    pthread_mutex_t ts_lock;
    cio__tsnode *ts_head, *ts_tail;
    atomic_int ts_pending;
    atomic_int ts_closed;
    /* Signals (signal.c, layer 12): its handlers set sig_pending (and write
     * wakefd on the 0 -> 1 transition); each iteration that finds it set
     * calls sig_run, which signal.c installs before any handler can set it:
     * the loop core calls the layer above only through this pointer. */
    atomic_int sig_pending;
    void (*sig_run)(cio_loop_t *loop);

    size_t ntasks;       /* unfinished coroutines (maintained by the task layer) */
    void *all;           /* the task layer's list of live tasks */
    uint64_t next_task_id;

    cio__stack_pool stacks;
    cio__freelist pools[CIO__POOLS];

    const cio__loop_hooks *hooks[CIO__LOOP_HOOKS];
    void *executor;      /* the thread pool layer's default executor */
    void *net;           /* the network layer's state of this loop (net.h) */
    void *sig;           /* signal handling state of this loop (os.h, signal.c) */
    void *proc;          /* subprocess state of this loop (os.h, process.c) */

#ifdef CIO__ASAN
    void *asan_fake;
    const void *main_stack_lo;
    size_t main_stack_size;
#endif
#ifdef CIO__TSAN
    void *tsan_main;
#endif
};

/* The loop running on this thread, NULL outside a run. */
extern _Thread_local cio_loop_t *cio__running CIO__TLS_IE;

/* The states of a cio_handle_t (its state_ field). */
enum { CIO__H_IDLE = 0, CIO__H_READY, CIO__H_TIMER };

/* Appends h to the ready list (hot path: inline). */
static inline void cio__ready_push(cio_loop_t *loop, cio_handle_t *h)
{
    cio_handle_t *tail = loop->ready.prev_;
    h->next_ = &loop->ready;
    h->prev_ = tail;
    tail->next_ = h;
    loop->ready.prev_ = h;
    h->state_ = CIO__H_READY;
    loop->nready++;
}

/* Removes h from the ready list. */
static inline void cio__ready_unlink(cio_loop_t *loop, cio_handle_t *h)
{
    h->prev_->next_ = h->next_;
    h->next_->prev_ = h->prev_;
    h->next_ = h->prev_ = NULL;
    h->state_ = CIO__H_IDLE;
    loop->nready--;
}

/* One iteration: poll, threadsafe wake-ups, timers, ready callbacks. */
void cio__loop_run_once(cio_loop_t *loop);
/* Marks the loop running on this thread: 0, -EINVAL, -ESHUTDOWN, -EBUSY. */
int cio__loop_enter(cio_loop_t *loop);
void cio__loop_leave(cio_loop_t *loop);

/*
 * After fork(), in the child: gives the loop a backend, eventfd and
 * registrations of its own (they were shared with the parent). Returns 0,
 * -EBUSY if operations are in flight, or the backend's error.
 */
int cio__loop_fork(cio_loop_t *loop);

/* Runs the callbacks other threads have posted (the thread pool's close
 * hook delivers the results of the jobs it waited for). */
void cio__loop_run_posts(cio_loop_t *loop);

/* Submits op to the loop's completion backend: 0, or -ENOTSUP when the
 * backend has none, or the backend's error. */
int cio__loop_submit(cio_loop_t *loop, cio__op *op);
/* Asks the backend to cancel a submitted op (its completion still comes).
 * Returns 0, or the backend's error when the cancel could not be queued. */
int cio__loop_cancel(cio_loop_t *loop, cio__op *op);
/* Sends the backend's queued submissions now (io_uring; no-op on epoll). */
void cio__loop_flush(cio_loop_t *loop);
/* Cancels the operations in flight on fd (when it is closed). Exactly
 * those: not those on other descriptors of the same file (dup). */
void cio__loop_cancel_fd(cio_loop_t *loop, int fd);
/* At close: waits (polling the backend, delivering only completions) until
 * no submitted operation is in flight, for at most ten seconds. */
void cio__loop_drain(cio_loop_t *loop);
/* True when the loop's backend completes operations (io_uring). */
static inline bool cio__loop_completes(const cio_loop_t *loop)
{
    return loop->be->submit != NULL;
}

#endif /* CIO_LOOP_H */
