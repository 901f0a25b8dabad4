/*
 * The process pool (concurrent.futures.ProcessPoolExecutor).
 *
 * Workers are fork()ed from the program; each has a SOCK_SEQPACKET channel
 * to the pool (one message per job and per result, so one recvmsg always
 * reads a whole message) and a pidfd. A message is a wire header followed by
 * the payload inline (up to INLINE_MAX bytes) or, when larger, by nothing:
 * the payload is then in a memfd passed with SCM_RIGHTS and mapped by the
 * receiver, so a large argument or result is copied once (into the memfd).
 *
 * Parent side. The loop drives the pool through fd readiness on both
 * backends (cio__fd_set: epoll, or io_uring's POLL_ADD): the channel of each
 * live worker is watched for input (a result, or the end of the file when
 * the worker died) and its pidfd for the exit, which is when the worker is
 * reaped. Messages are sent and received with non-blocking system calls from
 * those callbacks. Readiness rather than a completion operation keeps no
 * io_uring operation in flight while a job runs, so cio_loop_fork works in a
 * child at any moment.
 *
 * A worker holds at most two jobs (w->jobs, oldest first): the one it runs
 * and, unless opts.one_at_a_time, the next one, sent ahead so that the worker
 * finds it waiting when it finishes rather than sleep through the round trip
 * (which on a VM includes waking an idle virtual CPU). The worker reads one
 * message at a time and counts the messages it read in a page it shares
 * with the pool (w->taken) before it calls fn. When it dies, the pool first
 * reads the results it sent (they count), then compares: of the jobs it
 * still holds, that many started and fail with -EPIPE, the others never
 * started and go back to the front of the queue (a bounded number of
 * times). Idle workers get jobs first; a second job goes to a busy worker
 * only when none is idle. The channel holds two messages at most and its
 * buffers are sized for that, so a send hardly ever waits (a full socket
 * buffer is still handled, by waiting for it to be writable).
 *
 * A send that fails because the worker is gone puts the job back in the
 * queue and marks the worker (w->gone: no more jobs); its death is handled
 * where every death is, when its channel ends or its pidfd fires, after its
 * results are read, never from inside dispatch. A send that fails for
 * another reason fails that job with the error. A large argument's memfd
 * stays with its job until the job ends, as it may be sent again.
 *
 * Jobs are either queued on the pool (FIFO) or sent to a worker. Each holds
 * a reference to its future until it ends. A future cancelled while its job
 * is queued drops the job; one cancelled after the send ends at once and
 * the job (j->fut NULL) stays with its worker until the result comes back,
 * which is then freed.
 *
 * Worker records live on the pool's list from the fork until the reap: live
 * (idle or busy), then exiting (channel closed, waiting for the pidfd). The
 * pool's memory goes when it is released (cio_process_pool_free) and has
 * ended (no record, no queued job) and no task waits in shutdown. Pools are
 * on a global list, under pools_mu, for the loop's close and fork hooks.
 */
#include "os.h"

#include <fcntl.h>
#include <signal.h>
#include <stdalign.h>
#include <stddef.h>
#include <stdio_ext.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

/* Payloads up to this size travel inline in the message. */
enum { INLINE_MAX = 64 * 1024 };
/* The stack a worker runs fn on. */
enum { WORKER_STACK = 8 * 1024 * 1024 };
enum { MAX_WORKERS = 1024 };
/* Times a job goes back to the queue because its worker died before reading
 * it; once more and it fails with -EPIPE (workers that keep dying at their
 * start must not make the pool fork for ever). */
enum { MAX_RESENDS = 3 };

/* The header of every message, both ways. */
typedef struct wire {
    uint64_t fn;     /* request: the function's address */
    uint64_t len;    /* payload bytes */
    int32_t status;  /* reply: fn's return value */
    uint32_t flags;  /* W_FD: the payload is in the memfd passed along */
} wire;
enum { W_FD = 1 };

enum { J_QUEUED, J_SENT };
enum { W_IDLE, W_BUSY, W_EXITING };

typedef struct job job;
typedef struct worker worker;

struct job {
    job *next, *prev;        /* the pool's queue while queued */
    cio_process_pool_t *pool;
    cio_future_t *fut;       /* NULL once it ended before its result came */
    cio_pool_fn fn;
    size_t len;
    int memfd;               /* the argument when large; -1 when inline */
    uint8_t state;           /* J_* */
    uint8_t resends;         /* times it went back to the queue */
    alignas(max_align_t) unsigned char data[]; /* an inline argument */
};

struct worker {
    worker *next, *prev;     /* the pool's records */
    cio_process_pool_t *pool;
    pid_t pid;
    int chan;                /* our end of the channel; -1 once closed */
    int pidfd;
    uint8_t state;           /* W_* */
    uint8_t lost;            /* died without being told to exit */
    uint8_t sending;         /* waits for the channel to take its last job */
    uint8_t gone;            /* a send found it gone: no more jobs, its death
                              * is handled when its channel ends or it exits */
    uint8_t njobs;
    job *jobs[2];            /* sent (or being sent), oldest first */
    /* Messages the worker has read, counted by the worker in a page shared
     * with it, against the results received: once it is dead, the jobs it
     * held past that difference never started. */
    unsigned *taken;
    unsigned nresults;
};

struct cio_process_pool {
    cio_process_pool_t *all_next, *all_prev; /* every pool, under pools_mu */
    cio_loop_t *loop;        /* NULL once the loop closed */
    unsigned target;         /* the workers it keeps */
    unsigned nlive;          /* idle or busy */
    unsigned nidle;
    unsigned fork_gen;       /* the fork generation it was made in */
    unsigned depth;          /* jobs a worker may hold: 1 or 2 */
    worker *workers;         /* every record, exiting ones too */
    job *qhead, *qtail;
    bool shut;               /* no more submissions */
    bool released;           /* cio_process_pool_free was called */
    bool forked;             /* the copy of a child after cio_loop_fork */
    cio__wlist closers;      /* tasks waiting in shutdown */
    unsigned nclosers;       /* those tasks, until they have resumed */
    unsigned char *rbuf;     /* receive buffer: a header and INLINE_MAX */
};

/* A result: the public part first, its storage after it. */
typedef struct bytes_obj {
    cio_pool_bytes_t pub;
    size_t maplen;           /* 0: the bytes follow in this allocation */
    alignas(max_align_t) unsigned char tail[];
} bytes_obj;

static pthread_mutex_t pools_mu = PTHREAD_MUTEX_INITIALIZER;
static cio_process_pool_t *pools;
static atomic_uint fork_gen;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void before_fork(void) { pthread_mutex_lock(&pools_mu); }
static void after_fork_parent(void) { pthread_mutex_unlock(&pools_mu); }
static void after_fork_child(void)
{
    atomic_fetch_add(&fork_gen, 1);
    pthread_mutex_unlock(&pools_mu);
}
static void atfork_install(void)
{
    pthread_atfork(before_fork, after_fork_parent, after_fork_child);
}

/* True in a child after fork(): the pool's workers are the parent's. */
static bool in_child(const cio_process_pool_t *p)
{
    return p->forked ||
           p->fork_gen != atomic_load_explicit(&fork_gen, memory_order_relaxed);
}

/* ------------------------------------------------------------------------ */
/* Payloads                                                                  */
/* ------------------------------------------------------------------------ */

/* Moves *fd to a number >= 3: with stdin, stdout or stderr closed in the
 * program, a new descriptor of the pool would take their number, and every
 * worker forked later would keep it open (a worker keeps 0-2). 0 or -errno
 * (*fd is left as it was then). */
static int above_stdio(int *fd)
{
    if (*fd > 2)
        return 0;
    int nfd = fcntl(*fd, F_DUPFD_CLOEXEC, 3);
    if (nfd < 0)
        return -errno;
    close(*fd);
    *fd = nfd;
    return 0;
}

/* A memfd holding len bytes of src: the fd (>= 3) or -errno. */
static int memfd_of(const void *src, size_t len)
{
    int fd = memfd_create("cio-pool", MFD_CLOEXEC);
    if (fd < 0)
        return -errno;
    int moved = above_stdio(&fd);
    if (moved) {
        close(fd);
        return moved;
    }
    const char *p = src;
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int e = n < 0 ? errno : EIO;
            close(fd);
            return -e;
        }
        p += n;
        len -= (size_t)n;
    }
    return fd;
}

/* The fd passed with a received message, or -1. */
static int fd_of(struct msghdr *m)
{
    for (struct cmsghdr *c = CMSG_FIRSTHDR(m); c; c = CMSG_NXTHDR(m, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            int fd;
            memcpy(&fd, CMSG_DATA(c), sizeof fd);
            return fd;
        }
    return -1;
}

/* Sends h and its payload (inline, or fd >= 0 passed along) on sock. */
static ssize_t send_msg(int sock, const wire *h, const void *data, size_t len, int fd,
                        int flags)
{
    struct iovec iov[2] = {{(void *)h, sizeof *h}, {(void *)data, len}};
    union {
        struct cmsghdr c;
        char buf[CMSG_SPACE(sizeof(int))];
    } u;
    struct msghdr m = {.msg_iov = iov, .msg_iovlen = len ? 2 : 1};
    if (fd >= 0) {
        memset(&u, 0, sizeof u);
        m.msg_control = u.buf;
        m.msg_controllen = sizeof u.buf;
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &fd, sizeof fd);
    }
    ssize_t n;
    do
        n = sendmsg(sock, &m, MSG_NOSIGNAL | flags);
    while (n < 0 && errno == EINTR);
    return n < 0 ? -errno : n;
}

/* *fd after recv_msg when a descriptor was passed but could not be installed
 * (the receiver had none free): the message itself is whole. */
enum { FD_DROPPED = -2 };

/* Receives one message into buf (cap bytes); *fd gets a passed fd, -1, or
 * FD_DROPPED. A message cut short is -EPROTO. */
static ssize_t recv_msg(int sock, void *buf, size_t cap, int *fd, int flags)
{
    struct iovec iov = {buf, cap};
    union {
        struct cmsghdr c;
        char buf[CMSG_SPACE(sizeof(int))];
    } u;
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
                       .msg_controllen = sizeof u.buf};
    ssize_t n;
    do
        n = recvmsg(sock, &m, MSG_CMSG_CLOEXEC | flags);
    while (n < 0 && errno == EINTR);
    if (n < 0) {
        *fd = -1;
        return -errno;
    }
    *fd = fd_of(&m);
    if (m.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
        if (*fd >= 0)
            close(*fd);
        /* MSG_CTRUNC alone: the kernel could not install the descriptor
         * (EMFILE); the message is whole, only its payload is lost. */
        *fd = m.msg_flags & MSG_TRUNC ? -1 : FD_DROPPED;
        if (m.msg_flags & MSG_TRUNC)
            return -EPROTO;
    }
    return n;
}

void cio_pool_bytes_free(cio_pool_bytes_t *b)
{
    if (!b)
        return;
    bytes_obj *o = (bytes_obj *)b;
    if (o->maplen)
        munmap(b->data, o->maplen);
    cio__free(o);
}

/* ------------------------------------------------------------------------ */
/* The worker (in the child)                                                 */
/* ------------------------------------------------------------------------ */

/* The worker's channel (in the child only): the number it had in the parent,
 * which no other file of the parent had at the fork, so a stdio stream of
 * the parent that the worker flushes (fn calling exit) finds its descriptor
 * closed rather than writes into the channel. */
static int worker_fd = -1;
/* The worker's count of the messages it read (worker->taken). */
static unsigned *worker_taken;

/* Runs one request; returns false when the channel is gone. */
static bool worker_step(unsigned char *buf)
{
    int fd;
    ssize_t n = recv_msg(worker_fd, buf, sizeof(wire) + INLINE_MAX, &fd, 0);
    if (n <= 0 || (size_t)n < sizeof(wire))
        return false; /* the end of the channel (or the pool's mistake) */
    /* Before fn starts: a job counted here may have run. */
    __atomic_add_fetch(worker_taken, 1, __ATOMIC_RELEASE);
    wire h;
    memcpy(&h, buf, sizeof h);
    const void *in = buf + sizeof h;
    void *map = NULL;
    int rc = 0;
    if (h.flags & W_FD) {
        if (fd == FD_DROPPED)
            rc = -EMFILE;
        else if (fd < 0 || h.len > SIZE_MAX)
            rc = -EPROTO;
        else if ((map = mmap(NULL, (size_t)h.len, PROT_READ, MAP_PRIVATE | MAP_POPULATE,
                             fd, 0)) == MAP_FAILED) {
            rc = -errno;
            map = NULL;
        } else {
            in = map;
        }
    } else if ((size_t)n - sizeof h != h.len) {
        rc = -EPROTO;
    }
    if (fd >= 0)
        close(fd);
    void *out = NULL;
    size_t outlen = 0;
    if (!rc) {
        cio_pool_fn fn;
        memcpy(&fn, &h.fn, sizeof fn);
        rc = fn(in, (size_t)h.len, &out, &outlen);
        if (rc >= 0 && !out && outlen)
            rc = -EINVAL;
    }
    if (map)
        munmap(map, (size_t)h.len);
    if (rc < 0) {
        free(out);
        out = NULL;
        outlen = 0;
    }
    wire r = {.status = rc, .len = outlen};
    int ofd = -1;
    if (outlen > INLINE_MAX) {
        ofd = memfd_of(out, outlen);
        if (ofd < 0)
            r = (wire){.status = ofd};
        else
            r.flags = W_FD;
    }
    n = send_msg(worker_fd, &r, r.flags || r.status < 0 ? NULL : out,
                 r.flags || r.status < 0 ? 0 : outlen, ofd, 0);
    if (ofd >= 0)
        close(ofd);
    free(out);
    return n >= 0;
}

static _Noreturn void worker_main(void *arg)
{
    (void)arg;
#ifdef CIO__ASAN
    __sanitizer_finish_switch_fiber(NULL, NULL, NULL);
#endif
    /* Mapped, not malloc'ed: the worker's own loop takes no lock a thread
     * of the parent may have held at the fork. */
    void *buf = mmap(NULL, sizeof(wire) + INLINE_MAX, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buf == MAP_FAILED)
        _exit(127);
    while (worker_step(buf))
        ;
    /* Only the worker's own output: other streams are the parent's. */
    fflush(stdout);
    fflush(stderr);
    _exit(0);
}

/* Closes the descriptors from lo to hi (both included). */
static void close_between(unsigned lo, unsigned hi)
{
    if (lo > hi)
        return;
#ifdef SYS_close_range
    if (syscall(SYS_close_range, lo, hi, 0) == 0)
        return;
#endif
    long max = sysconf(_SC_OPEN_MAX);
    if (max < 0 || max > 65536)
        max = 65536;
    for (unsigned long fd = lo; fd <= hi && fd < (unsigned long)max; fd++)
        close((int)fd);
}

/* In the child, right after the fork: the channel (>= 3) becomes worker_fd
 * and blocking, every other descriptor but 0-2 goes, signals get their
 * defaults, stdio forgets the parent's unwritten output, and the worker runs
 * on a stack of its own (the fork may have happened on a task's small
 * stack). Never returns. */
static _Noreturn void worker_start(int chan, unsigned *taken, pid_t parent)
{
    worker_fd = chan;
    worker_taken = taken;
    close_between(3, (unsigned)chan - 1);
    close_between((unsigned)chan + 1, ~0u);
    int fl = fcntl(worker_fd, F_GETFL);
    if (fl < 0 || fcntl(worker_fd, F_SETFL, fl & ~O_NONBLOCK) < 0 ||
        fcntl(worker_fd, F_SETFD, FD_CLOEXEC) < 0)
        _exit(127);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(0); /* the parent is already gone */
    for (int s = 1; s < NSIG; s++) {
        struct sigaction sa;
        if (s == SIGPIPE || sigaction(s, NULL, &sa) || sa.sa_handler == SIG_IGN ||
            sa.sa_handler == SIG_DFL)
            continue;
        sa.sa_handler = SIG_DFL;
        sa.sa_flags = 0;
        sigaction(s, &sa, NULL);
    }
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    __fpurge(stdout);
    __fpurge(stderr);
    char *stk = mmap(NULL, WORKER_STACK, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
    if (stk == MAP_FAILED)
        worker_main(NULL);
    long page = sysconf(_SC_PAGESIZE);
    mprotect(stk, (size_t)page, PROT_NONE); /* a guard page below */
    void *sp = cio__ctx_make(stk + WORKER_STACK, worker_main, NULL);
#ifdef CIO__ASAN
    __sanitizer_start_switch_fiber(NULL, stk + page, WORKER_STACK - (size_t)page);
#endif
#ifdef CIO__TSAN
    __tsan_switch_to_fiber(__tsan_create_fiber(0), 0);
#endif
    void *old;
    cio__ctx_switch(&old, sp);
    _exit(127); /* not reached: worker_main never returns */
}

/* ------------------------------------------------------------------------ */
/* Workers, parent side                                                      */
/* ------------------------------------------------------------------------ */

static void chan_ready(void *arg, int fd, unsigned events);
static void chan_writable(void *arg, int fd, unsigned events);
static void pid_ready(void *arg, int fd, unsigned events);
static void pool_check_end(cio_process_pool_t *p);
static void dispatch(cio_process_pool_t *p);
static void drop_fd(cio_process_pool_t *p, int fd);

/* A pidfd (>= 3, see above_stdio) of pid, or -errno. */
static int pidfd_open_(pid_t pid)
{
    long r = syscall(SYS_pidfd_open, pid, 0);
    if (r < 0)
        return -errno;
    int fd = (int)r, e = above_stdio(&fd);
    if (e) {
        close(fd);
        return e;
    }
    return fd;
}

/* Kills and reaps a worker at once (failures of a start, the loop's close). */
static void kill_reap(pid_t pid, int pidfd)
{
    if (pidfd >= 0)
        syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
    else
        kill(pid, SIGKILL);
    siginfo_t si;
    int rc = -1;
    if (pidfd >= 0)
        while ((rc = waitid((idtype_t)P_PIDFD, (id_t)pidfd, &si, WEXITED)) < 0 && errno == EINTR)
            ;
    if (rc < 0) /* no pidfd, or no P_PIDFD (Linux 5.3) */
        while (waitid(P_PID, (id_t)pid, &si, WEXITED) < 0 && errno == EINTR)
            ;
}

static void worker_unlink(cio_process_pool_t *p, worker *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        p->workers = w->next;
    if (w->next)
        w->next->prev = w->prev;
}

/* Raises a socket buffer (SO_SNDBUF or SO_RCVBUF) to at least want bytes,
 * never lowers it. */
static void raise_buf(int fd, int opt, int want)
{
    int cur = 0;
    socklen_t l = sizeof cur;
    if (getsockopt(fd, SOL_SOCKET, opt, &cur, &l) == 0 && cur >= want)
        return;
    setsockopt(fd, SOL_SOCKET, opt, &want, sizeof want); /* capped by wmem_max */
}

/* The channel of a new worker in sv: both ends above 0-2, and buffers that
 * take two inline messages of the largest size whatever the system's
 * defaults (a message larger than the send buffer fails with EMSGSIZE).
 * 0 or -errno (nothing left open then). */
static int make_channel(int sv[2])
{
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
        return -errno;
    int e = above_stdio(&sv[0]);
    if (!e)
        e = above_stdio(&sv[1]);
    if (e) {
        close(sv[0]);
        close(sv[1]);
        return e;
    }
    /* The kernel doubles the value set (for its bookkeeping). */
    int want = 2 * (int)(sizeof(wire) + INLINE_MAX) + 4096;
    for (int i = 0; i < 2; i++) {
        raise_buf(sv[i], SO_SNDBUF, want);
        raise_buf(sv[i], SO_RCVBUF, want);
    }
    return 0;
}

/* Frees a worker record. unmap: false in a child after fork, which does not
 * have the shared page (MADV_DONTFORK), so its address may be another
 * mapping's by now. */
static void worker_free(worker *w, bool unmap)
{
    if (unmap && w->taken)
        munmap(w->taken, sizeof *w->taken);
    cio__free(w);
}

/* Forks one worker: 0 or -errno (nothing left behind then). */
static int spawn_worker(cio_process_pool_t *p)
{
    worker *w = cio__calloc(1, sizeof *w);
    if (!w)
        return -ENOMEM;
    unsigned *taken = mmap(NULL, sizeof *taken, PROT_READ | PROT_WRITE,
                           MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (taken == MAP_FAILED) {
        cio__free(w);
        return -errno;
    }
    *taken = 0;
    w->taken = taken;
    int sv[2];
    int ce = make_channel(sv);
    if (ce) {
        worker_free(w, true);
        return ce;
    }
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        close(sv[0]);
        worker_start(sv[1], taken, parent);
    }
    /* Only this worker shares the page: not the ones forked later, nor the
     * program's children. */
    madvise(taken, sizeof *taken, MADV_DONTFORK);
    int e = pid < 0 ? -errno : 0;
    close(sv[1]);
    int pidfd = pid > 0 ? pidfd_open_(pid) : -1;
    if (!e && pidfd < 0)
        e = pidfd;
    *w = (worker){.pool = p, .pid = pid, .chan = sv[0], .pidfd = pidfd, .state = W_IDLE,
                  .taken = taken};
    if (!e && !(e = cio__fd_set(p->loop, w->chan, CIO_READABLE, chan_ready, w)) &&
        (e = cio__fd_set(p->loop, pidfd, CIO_READABLE, pid_ready, w)))
        cio__fd_clear(p->loop, w->chan, CIO_READABLE);
    if (e) {
        drop_fd(p, sv[0]);
        if (pid > 0)
            kill_reap(pid, pidfd);
        if (pidfd >= 0)
            drop_fd(p, pidfd);
        worker_free(w, true);
        return e;
    }
    w->next = p->workers;
    if (w->next)
        w->next->prev = w;
    p->workers = w;
    p->nlive++;
    p->nidle++;
    return 0;
}

/* Closes an fd the pool watches. Its watchers go first, then the loop
 * forgets the number, so that an event already polled for it is not
 * delivered to the next worker that gets the same number. */
static void drop_fd(cio_process_pool_t *p, int fd)
{
    if (p->loop) {
        cio__fd_clear(p->loop, fd, CIO_READABLE | CIO_WRITABLE);
        cio__fd_forget(p->loop, fd);
    }
    close(fd);
}

static void close_chan(cio_process_pool_t *p, worker *w)
{
    if (w->chan < 0)
        return;
    drop_fd(p, w->chan);
    w->chan = -1;
    w->sending = 0;
}

/* w leaves the live workers (told to exit, or lost): its channel is closed
 * and its pidfd says when it can be reaped. */
static void retire(cio_process_pool_t *p, worker *w)
{
    if (w->state == W_EXITING)
        return;
    if (w->state == W_IDLE)
        p->nidle--;
    p->nlive--;
    w->state = W_EXITING;
    close_chan(p, w);
}

/* Tells an idle worker to exit: the end of its channel. shutdown(2) rather
 * than close alone, so that a copy of the channel in a child of the
 * program does not keep the worker waiting. */
static void stop_worker(cio_process_pool_t *p, worker *w)
{
    if (w->chan >= 0)
        shutdown(w->chan, SHUT_WR);
    retire(p, w);
}

/* Frees a job and ends its future (if it still has one) with status and
 * result (freed when nobody takes it). */
static void finish_job(job *j, int status, bytes_obj *res)
{
    cio_future_t *f = j->fut;
    if (j->memfd >= 0)
        close(j->memfd);
    cio__free(j);
    if (!f) {
        cio_pool_bytes_free(res ? &res->pub : NULL);
        return;
    }
    f->owner = NULL;
    cio__future_complete(f, status, res ? &res->pub : NULL,
                         status == -ECANCELED ? CIO__CANCELLED : CIO__DONE);
    cio_future_release(f); /* the job's reference */
}

static void queue_remove(cio_process_pool_t *p, job *j)
{
    if (j->prev)
        j->prev->next = j->next;
    else
        p->qhead = j->next;
    if (j->next)
        j->next->prev = j->prev;
    else
        p->qtail = j->prev;
    j->next = j->prev = NULL;
}

static void queue_push_front(cio_process_pool_t *p, job *j)
{
    j->prev = NULL;
    j->next = p->qhead;
    if (p->qhead)
        p->qhead->prev = j;
    else
        p->qtail = j;
    p->qhead = j;
    j->state = J_QUEUED;
}

/* Ends every queued job with status. */
static void fail_queued(cio_process_pool_t *p, int status)
{
    while (p->qhead) {
        job *j = p->qhead;
        queue_remove(p, j);
        finish_job(j, status, NULL);
    }
}

/* Workers that died are replaced while the pool has work to do. A failure to
 * start one leaves fewer; with none left, the queued jobs fail with it
 * rather than wait for ever. */
static void replenish(cio_process_pool_t *p)
{
    if (!p->loop || p->forked || (p->shut && !p->qhead))
        return;
    int rc = 0;
    while (p->nlive < p->target && !(rc = spawn_worker(p)))
        ;
    if (rc && !p->nlive)
        fail_queued(p, rc);
}

/* Takes the jobs w holds: *run gets the one it ran (or NULL), *ahead the
 * one sent ahead (or NULL). */
static void take_jobs(worker *w, job **run, job **ahead)
{
    *run = w->njobs > 0 ? w->jobs[0] : NULL;
    *ahead = w->njobs > 1 ? w->jobs[1] : NULL;
    w->jobs[0] = w->jobs[1] = NULL;
    w->njobs = 0;
}

/* A job its worker never started goes back to the front of the queue
 * (a bounded number of times, MAX_RESENDS). */
static void resend(cio_process_pool_t *p, job *j)
{
    if (!j->fut)
        finish_job(j, -ECANCELED, NULL); /* cancelled: nobody waits */
    else if (++j->resends > MAX_RESENDS)
        finish_job(j, -EPIPE, NULL);
    else
        queue_push_front(p, j);
}

/* How many of the jobs w holds it has started: exact when it is dead (its
 * count of the messages it read is final), else the oldest only. */
static unsigned jobs_started(const worker *w, bool dead)
{
    if (!dead)
        return w->njobs ? 1 : 0;
    unsigned n = __atomic_load_n(w->taken, __ATOMIC_ACQUIRE) - w->nresults;
    return n < w->njobs ? n : w->njobs;
}

/* w died (dead: its channel's end or its exit says so; else its channel
 * broke and it is killed): the jobs it started fail with -EPIPE, the ones
 * it never read are queued again, first, in their order. */
static void lose_worker(cio_process_pool_t *p, worker *w, bool dead)
{
    if (w->state == W_EXITING)
        return;
    w->lost = 1;
    /* Make sure it is gone (a worker that closed its channel but lingers):
     * the pidfd names this process, never a reused pid. */
    syscall(SYS_pidfd_send_signal, w->pidfd, SIGKILL, NULL, 0);
    unsigned started = jobs_started(w, dead);
    job *run, *ahead;
    take_jobs(w, &run, &ahead);
    retire(p, w);
    if (ahead) {
        if (started > 1)
            finish_job(ahead, -EPIPE, NULL);
        else
            resend(p, ahead);
    }
    if (run) {
        if (started > 0)
            finish_job(run, -EPIPE, NULL);
        else
            resend(p, run);
    }
    replenish(p);
    dispatch(p);
}

/* True for a send's error that says the worker's end of the channel is
 * closed (the worker died). */
static bool peer_gone(ssize_t err)
{
    return err == -EPIPE || err == -ECONNRESET || err == -ENOTCONN;
}

/* Sends w's last job (again, after the channel became writable). A large
 * argument's memfd stays with the job until it ends, so that a job sent
 * again (its worker died before reading it) still has its argument. */
static void transmit(cio_process_pool_t *p, worker *w)
{
    job *j = w->jobs[w->njobs - 1];
    bool big = j->len > INLINE_MAX;
    wire h = {.len = j->len, .flags = big ? W_FD : 0};
    memcpy(&h.fn, &j->fn, sizeof j->fn);
    ssize_t n = big ? send_msg(w->chan, &h, NULL, 0, j->memfd, MSG_DONTWAIT)
                    : send_msg(w->chan, &h, j->data, j->len, -1, MSG_DONTWAIT);
    if (n >= 0)
        return;
    if (n == -EAGAIN && !w->sending) {
        n = cio__fd_set(p->loop, w->chan, CIO_WRITABLE, chan_writable, w);
        if (!n) {
            w->sending = 1;
            return;
        }
    }
    /* Nothing was sent: j leaves w. */
    w->jobs[--w->njobs] = NULL;
    if (!w->njobs && !w->gone && !peer_gone(n)) {
        w->state = W_IDLE;
        p->nidle++;
    }
    if (!peer_gone(n)) {
        /* The message itself could not go (EMSGSIZE, ENOBUFS, ENOMEM...):
         * sending it again would fail again, so j fails with the error. */
        finish_job(j, (int)n, NULL);
        return;
    }
    /* The worker died before it saw j: j goes back to the front of the
     * queue for another worker. The worker's results still in the channel
     * are read before its death is handled, by chan_ready (the end of the
     * channel) or pid_ready (its exit); until then it gets no job. */
    resend(p, j);
    w->gone = 1;
}

/* Gives j to w (idle, or holding one job). */
static void send_job(cio_process_pool_t *p, worker *w, job *j)
{
    w->jobs[w->njobs++] = j;
    if (w->state == W_IDLE) {
        w->state = W_BUSY;
        p->nidle--;
    }
    j->state = J_SENT;
    transmit(p, w);
}

static void chan_writable(void *arg, int fd, unsigned events)
{
    (void)fd;
    worker *w = arg;
    cio_process_pool_t *p = w->pool;
    cio__fd_clear(p->loop, w->chan, CIO_WRITABLE);
    w->sending = 0;
    if (events & CIO__FD_CLOSING) {
        w->chan = -1;
        lose_worker(p, w, false);
        return;
    }
    transmit(p, w);
    dispatch(p); /* a job it could not take goes to another worker */
    pool_check_end(p);
}

/* Gives queued jobs to idle workers, in order; then, while jobs remain, one
 * more to each busy worker (the job ahead). */
static void dispatch(cio_process_pool_t *p)
{
    for (worker *w = p->workers; w && p->qhead && p->nidle; w = w->next) {
        if (w->state != W_IDLE)
            continue;
        job *j = p->qhead;
        queue_remove(p, j);
        send_job(p, w, j);
    }
    for (worker *w = p->workers; w && p->qhead && p->depth > 1; w = w->next) {
        if (w->state != W_BUSY || w->njobs != 1 || w->sending || w->gone)
            continue;
        job *j = p->qhead;
        queue_remove(p, j);
        send_job(p, w, j);
    }
    if (p->shut && !p->qhead)
        for (worker *w = p->workers; w; w = w->next)
            if (w->state == W_IDLE)
                stop_worker(p, w);
}

/* The result of a reply received in p->rbuf (n bytes, fd passed or -1):
 * the status, with *res set on success. */
static int take_result(cio_process_pool_t *p, size_t n, int fd, bytes_obj **res)
{
    wire h;
    memcpy(&h, p->rbuf, sizeof h);
    *res = NULL;
    int rc = h.status;
    if (rc < 0 || n < sizeof h) {
        if (fd >= 0)
            close(fd);
        return n < sizeof h ? -EPROTO : rc;
    }
    bytes_obj *o = NULL;
    if (h.flags & W_FD) {
        struct stat st;
        void *map;
        if (fd == FD_DROPPED)
            rc = -EMFILE; /* the result is lost, the worker is fine */
        else if (fd < 0 || fstat(fd, &st) || (uint64_t)st.st_size < h.len || h.len > SIZE_MAX)
            rc = -EPROTO;
        else if (!(o = cio__malloc(sizeof *o)))
            rc = -ENOMEM;
        else if ((map = mmap(NULL, (size_t)h.len, PROT_READ | PROT_WRITE,
                             MAP_SHARED | MAP_POPULATE, fd, 0)) == MAP_FAILED)
            rc = -errno;
        else
            *o = (bytes_obj){.pub = {map, (size_t)h.len}, .maplen = (size_t)h.len};
        if (fd >= 0)
            close(fd);
    } else if (n - sizeof h != h.len) {
        rc = -EPROTO;
    } else if (!(o = cio__malloc(sizeof *o + (size_t)h.len))) {
        rc = -ENOMEM;
    } else {
        *o = (bytes_obj){.pub = {o->tail, (size_t)h.len}};
        memcpy(o->tail, p->rbuf + sizeof h, (size_t)h.len);
    }
    if (rc < 0 && o) {
        cio__free(o);
        o = NULL;
    }
    *res = o;
    return rc;
}

/* Receives one message from w: a result, which ends w's oldest job (1),
 * nothing yet (0), or the end of the channel, which loses w (-1). */
static int receive(cio_process_pool_t *p, worker *w)
{
    int pfd;
    ssize_t n = recv_msg(w->chan, p->rbuf, sizeof(wire) + INLINE_MAX, &pfd, MSG_DONTWAIT);
    /* A worker that died with jobs unread makes the kernel report
     * ECONNRESET once, ahead of the results it sent, which still count. */
    if (n == -ECONNRESET)
        n = recv_msg(w->chan, p->rbuf, sizeof(wire) + INLINE_MAX, &pfd, MSG_DONTWAIT);
    if (n == -EAGAIN)
        return 0;
    if (n <= 0 || !w->njobs) {
        /* The end of the channel: the worker died (or spoke out of turn,
         * or broke the channel, which only a broken worker does: it is let
         * go the same way). */
        if (pfd >= 0)
            close(pfd);
        lose_worker(p, w, n == 0);
        return -1;
    }
    bytes_obj *res;
    int status = take_result(p, (size_t)n, pfd, &res);
    w->nresults++;
    job *j = w->jobs[0];
    w->jobs[0] = w->jobs[1];
    w->jobs[1] = NULL;
    if (!--w->njobs) {
        w->state = W_IDLE;
        p->nidle++;
    }
    finish_job(j, status, res);
    return 1;
}

static void chan_ready(void *arg, int fd, unsigned events)
{
    (void)fd;
    worker *w = arg;
    cio_process_pool_t *p = w->pool;
    if (events & CIO__FD_CLOSING) {
        /* Closed under the pool (cio_close of its number): not ours now. */
        cio__fd_clear(p->loop, w->chan, CIO_READABLE | CIO_WRITABLE);
        w->chan = -1;
        w->sending = 0;
        lose_worker(p, w, false);
        return;
    }
    if (receive(p, w) < 0)
        return;
    dispatch(p);
    pool_check_end(p);
}

/* The worker exited: reaped here. Also how a death is noticed first when
 * the pidfd fires before the channel's end. */
static void pid_ready(void *arg, int fd, unsigned events)
{
    (void)fd;
    (void)events;
    worker *w = arg;
    cio_process_pool_t *p = w->pool;
    siginfo_t si = {0};
    int rc = waitid((idtype_t)P_PIDFD, (id_t)w->pidfd, &si, WEXITED | WNOHANG);
    if (rc < 0 && errno == EINVAL) /* Linux 5.3 has pidfds but not P_PIDFD */
        rc = waitid(P_PID, (id_t)w->pid, &si, WEXITED | WNOHANG);
    if (rc == 0 && si.si_pid == 0)
        return; /* not yet */
    /* Results it sent before it died are still in the channel: they count. */
    while (w->state != W_EXITING && w->njobs && receive(p, w) > 0)
        ;
    if (w->state != W_EXITING)
        lose_worker(p, w, true);
    if (w->lost && p->loop && p->loop->debug && rc == 0)
        fprintf(stderr,
                "cio: process pool worker %d %s %d; a job it was running failed with -EPIPE "
                "and a new worker replaces it\n",
                (int)w->pid, si.si_code == CLD_EXITED ? "exited with status" : "was killed by signal",
                si.si_status);
    drop_fd(p, w->pidfd);
    worker_unlink(p, w);
    worker_free(w, true);
    pool_check_end(p);
}

/* ------------------------------------------------------------------------ */
/* The pool                                                                  */
/* ------------------------------------------------------------------------ */

static void pool_free_mem(cio_process_pool_t *p)
{
    pthread_mutex_lock(&pools_mu);
    if (p->all_prev)
        p->all_prev->all_next = p->all_next;
    else
        pools = p->all_next;
    if (p->all_next)
        p->all_next->all_prev = p->all_prev;
    pthread_mutex_unlock(&pools_mu);
    cio__free(p->rbuf);
    cio__free(p);
}

static bool pool_ended(const cio_process_pool_t *p)
{
    return !p->workers && !p->qhead;
}

/* Once shut down and ended: the tasks in shutdown resume, and a released
 * pool nobody waits for is freed. */
static void pool_check_end(cio_process_pool_t *p)
{
    if (!p->shut || !pool_ended(p))
        return;
    cio__waiter *w;
    while ((w = cio__wlist_pop(&p->closers)))
        cio__wake(w, 0);
    if (p->released && !p->nclosers)
        pool_free_mem(p);
}

/* Drops every worker record and job of p, for the close and fork hooks:
 * jobs end with status; kill says whether the workers are killed and reaped
 * (the close) or left alone (the parent's, in a child after fork). */
static void pool_detach(cio_process_pool_t *p, int status, bool kill)
{
    while (p->workers) {
        worker *w = p->workers;
        job *run, *ahead;
        take_jobs(w, &run, &ahead);
        close_chan(p, w);
        if (kill)
            kill_reap(w->pid, w->pidfd);
        drop_fd(p, w->pidfd);
        worker_unlink(p, w);
        worker_free(w, kill);
        if (run)
            finish_job(run, status, NULL);
        if (ahead)
            finish_job(ahead, status, NULL);
    }
    p->nlive = p->nidle = 0;
    fail_queued(p, status);
    p->shut = true;
}

/* The loop's close: every pool of it ends now. */
static void pp_close(cio_loop_t *loop)
{
    for (;;) {
        pthread_mutex_lock(&pools_mu);
        cio_process_pool_t *p = pools;
        while (p && p->loop != loop)
            p = p->all_next;
        pthread_mutex_unlock(&pools_mu);
        if (!p)
            return;
        pool_detach(p, -ECANCELED, true);
        cio__waiter *w;
        while ((w = cio__wlist_pop(&p->closers)))
            cio__wake(w, 0);
        /* Under the lock: other loops' threads read p->loop in the list. */
        pthread_mutex_lock(&pools_mu);
        p->loop = NULL;
        pthread_mutex_unlock(&pools_mu);
        if (p->released && !p->nclosers)
            pool_free_mem(p);
    }
}

static void pp_report(cio_loop_t *loop, FILE *out)
{
    pthread_mutex_lock(&pools_mu);
    for (cio_process_pool_t *p = pools; p; p = p->all_next)
        if (p->loop == loop && p->workers)
            fprintf(out, "cio: loop closed with a process pool of %u worker(s) still running "
                         "(they are killed)\n", p->nlive);
    pthread_mutex_unlock(&pools_mu);
}

/* In a child after fork: the pools of the loop let go of the parent's
 * workers and end their jobs with -ECHILD. */
static void pp_fork(cio_loop_t *loop)
{
    pthread_mutex_lock(&pools_mu);
    cio_process_pool_t *list = pools;
    pthread_mutex_unlock(&pools_mu);
    for (cio_process_pool_t *p = list, *next; p; p = next) {
        next = p->all_next; /* p may be freed below */
        if (p->loop != loop || p->forked)
            continue;
        p->forked = true;
        pool_detach(p, -ECHILD, false);
        pool_check_end(p); /* a released copy is freed; waiters resume */
    }
}

static const cio__loop_hooks pp_hooks = {
    .layer = 12, .report = pp_report, .close = pp_close, .fork = pp_fork};

unsigned cio_process_pool_workers(const cio_process_pool_t *pool)
{
    return pool ? pool->target : 0;
}

int cio_process_pool_new(cio_process_pool_t **out, cio_loop_t *loop,
                         const cio_process_pool_opts_t *opts)
{
    if (!out)
        return -EINVAL;
    *out = NULL;
    cio_process_pool_opts_t o = opts ? *opts : (cio_process_pool_opts_t){0};
    if (o.reserved_[0] || o.reserved_[1] || o.reserved_[2] || o.reserved_[3] ||
        o.workers > MAX_WORKERS)
        return -EINVAL;
    if (!loop)
        loop = cio__running;
    if (!loop)
        return -EPERM;
    if (loop->closed)
        return -ESHUTDOWN;
    if (!o.workers) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        o.workers = n > 0 ? (unsigned)(n > MAX_WORKERS ? MAX_WORKERS : n) : 1;
    }
    pthread_once(&atfork_once, atfork_install);
    int rc = cio__loop_hook(loop, &pp_hooks);
    if (rc)
        return rc;
    cio_process_pool_t *p = cio__calloc(1, sizeof *p);
    unsigned char *rbuf = p ? cio__malloc(sizeof(wire) + INLINE_MAX) : NULL;
    if (!rbuf) {
        cio__free(p);
        return -ENOMEM;
    }
    p->loop = loop;
    p->target = o.workers;
    p->depth = o.one_at_a_time ? 1 : 2;
    p->rbuf = rbuf;
    p->fork_gen = atomic_load(&fork_gen);
    for (unsigned i = 0; i < o.workers && !rc; i++)
        rc = spawn_worker(p);
    if (rc) {
        pool_detach(p, -ECANCELED, true);
        cio__free(rbuf);
        cio__free(p);
        return rc;
    }
    pthread_mutex_lock(&pools_mu);
    p->all_next = pools;
    if (pools)
        pools->all_prev = p;
    pools = p;
    pthread_mutex_unlock(&pools_mu);
    *out = p;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Jobs                                                                      */
/* ------------------------------------------------------------------------ */

static int job_cancel(cio_future_t *f)
{
    job *j = f->owner;
    if (!j)
        return 0;
    if (j->state == J_QUEUED) {
        queue_remove(j->pool, j);
        cio_process_pool_t *p = j->pool;
        finish_job(j, -ECANCELED, NULL);
        pool_check_end(p);
        return 1;
    }
    /* Sent: the worker finishes it and its result is dropped on arrival. */
    j->fut = NULL;
    f->owner = NULL;
    cio__future_complete(f, -ECANCELED, NULL, CIO__CANCELLED);
    cio_future_release(f); /* the job's reference */
    return 1;
}

/* A job's future owns its result until cio_process_pool_take. */
static void job_free(cio_future_t *f)
{
    if (f->state == CIO__DONE && f->status >= 0)
        cio_pool_bytes_free(f->result);
    cio__future_pool_free(f);
}

static const cio__future_ops job_ops = {
    .cancel = job_cancel, .free = job_free, .name = NULL, .what = "process job"};

cio_pool_bytes_t *cio_process_pool_take(cio_future_t *f)
{
    if (!f || f->ops != &job_ops || f->state != CIO__DONE || f->status < 0)
        return NULL;
    cio_pool_bytes_t *b = f->result;
    f->result = NULL;
    f->retrieved = 1;
    return b;
}

int cio_process_pool_submit(cio_future_t **out, cio_process_pool_t *pool, cio_pool_fn fn,
                            const void *in, size_t len)
{
    if (!out)
        return -EINVAL;
    *out = NULL;
    if (!pool || !fn || (!in && len))
        return -EINVAL;
    if (in_child(pool))
        return -ECHILD;
    if (pool->shut || !pool->loop || pool->loop->closed)
        return -ESHUTDOWN;
    if (pool->nlive < pool->target) {
        /* Workers that died could not all be replaced: try again now, and
         * with none at all, fail rather than queue for ever. */
        replenish(pool);
        int rc = pool->nlive ? 0 : spawn_worker(pool);
        if (rc)
            return rc;
    }
    bool big = len > INLINE_MAX;
    job *j = cio__malloc(sizeof *j + (big ? 0 : len));
    cio_future_t *f = j ? cio__future_alloc(pool->loop, &job_ops) : NULL;
    if (!f) {
        cio__free(j);
        return -ENOMEM;
    }
    *j = (job){.pool = pool, .fut = f, .fn = fn, .len = len, .memfd = -1};
    if (big) {
        j->memfd = memfd_of(in, len);
        if (j->memfd < 0) {
            int rc = j->memfd;
            cio_future_release(f); /* pending with no reference: */
            cio__future_pool_free(f); /* back to the pool at once */
            cio__free(j);
            return rc;
        }
    } else if (len) {
        memcpy(j->data, in, len);
    }
    f->refs++; /* the job's */
    f->owner = j;
    j->state = J_QUEUED;
    j->prev = pool->qtail;
    if (pool->qtail)
        pool->qtail->next = j;
    else
        pool->qhead = j;
    pool->qtail = j;
    dispatch(pool);
    *out = f;
    return 0;
}

int cio_process_pool_run(cio_process_pool_t *pool, cio_pool_fn fn, const void *in, size_t len,
                         cio_pool_bytes_t **out)
{
    if (out)
        *out = NULL;
    cio__coro *c = cio__current;
    if (!c)
        return -EPERM;
    int rc = cio__check_cancel(c);
    if (rc)
        return rc;
    cio_future_t *f;
    if ((rc = cio_process_pool_submit(&f, pool, fn, in, len)))
        return rc;
    rc = cio_await(f, NULL);
    if (rc >= 0 && out)
        *out = cio_process_pool_take(f);
    cio_future_release(f); /* frees a result not taken */
    return rc;
}

int cio_process_pool_map(cio_process_pool_t *pool, cio_pool_fn fn, const struct iovec *in,
                         size_t n, cio_pool_bytes_t **out)
{
    if (n && (!in || !out))
        return -EINVAL;
    for (size_t i = 0; i < n; i++)
        out[i] = NULL;
    cio__coro *c = cio__current;
    if (!c)
        return -EPERM;
    int rc = cio__check_cancel(c);
    if (rc || !n)
        return rc;
    cio_future_t **fs = cio__calloc(n, sizeof *fs);
    if (!fs)
        return -ENOMEM;
    size_t got = 0;
    for (; got < n && !rc; got++)
        rc = cio_process_pool_submit(&fs[got], pool, fn, in[got].iov_base, in[got].iov_len);
    for (size_t i = 0; i < got && !rc; i++) {
        int st = cio_await(fs[i], NULL);
        if (st < 0)
            rc = st;
        else
            out[i] = cio_process_pool_take(fs[i]);
    }
    for (size_t i = 0; i < got; i++) {
        if (rc) {
            cio_future_cancel(fs[i]);
            cio_pool_bytes_free(out[i]);
            out[i] = NULL;
        }
        cio_future_release(fs[i]);
    }
    cio__free(fs);
    return rc;
}

int cio_process_pool_shutdown(cio_process_pool_t *pool, bool wait, bool cancel_futures)
{
    if (!pool)
        return -EINVAL;
    if (in_child(pool))
        return pool->forked ? 0 : -ECHILD;
    if (!pool->loop)
        return 0; /* its loop closed: ended already */
    pool->shut = true;
    if (cancel_futures)
        fail_queued(pool, -ECANCELED);
    dispatch(pool); /* stops the idle workers once nothing is queued */
    if (!wait) {
        pool_check_end(pool);
        return 0;
    }
    cio__coro *c = cio__current;
    if (!c)
        return -EPERM;
    int rc = cio__check_cancel(c);
    if (rc || pool_ended(pool))
        return rc;
    cio__waiter w;
    cio__waiter_init(&w, c, "process pool shutdown", pool, cio__wlist_unlink);
    cio__wlist_push(&pool->closers, &w);
    pool->nclosers++;
    rc = cio__wait(&w, CIO__NO_DEADLINE);
    pool->nclosers--;
    /* A release that came while this task waited frees the pool now. */
    if (pool->released && !pool->nclosers && (pool_ended(pool) || !pool->loop))
        pool_free_mem(pool);
    return rc;
}

void cio_process_pool_free(cio_process_pool_t *pool)
{
    if (!pool || (in_child(pool) && !pool->forked))
        return;
    pool->released = true;
    if (!pool->loop || pool->forked) {
        if (!pool->nclosers)
            pool_free_mem(pool);
        return;
    }
    if (!pool->shut)
        cio_process_pool_shutdown(pool, false, false);
    else
        pool_check_end(pool);
}
