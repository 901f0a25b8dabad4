/*
 * Files without blocking the loop: a file object (open, read, write,
 * pread/pwrite, fsync, stat, seek, close), a chunk reader and a line reader
 * as generators, and a follower (tail -F) as a generator.
 *
 * Every operation that may touch the disk is a cio__op:
 *  - on io_uring (a completion backend) it is submitted through the
 *    operation layer (cio__op_run): openat, read/write at an offset or at
 *    the file position, fsync, statx and close are all native operations;
 *  - on epoll, regular files are always "ready" and a read of a cold page
 *    blocks whoever makes it, so the same cio__op is made by a thread of the
 *    loop's default pool (cio_to_thread running cio__op_try) while the loop
 *    goes on. A FIFO, character device or socket may block forever, and a
 *    pool thread cannot be interrupted: those are opened non-blocking (see
 *    open_job) and read and written through readiness on the loop
 *    (cio__op_run), cancellable; they never hold a pool thread.
 *
 * Cancellation: on both backends a call that returns -ECANCELED or
 * -ETIMEDOUT did nothing. A system call that had already started when the
 * task was cancelled is waited for (a pool thread cannot be interrupted; an
 * io_uring operation is asked to cancel and its completion waited for), and
 * when it completed its result is returned as a success: bytes read are
 * handed over, bytes written counted, an opened descriptor returned. The
 * cancellation, level-triggered, is then reported by the next await point.
 *
 * Closing: every file operation of a cio_file_t counts itself in f->nops;
 * cio_file_close refuses new ones (-EBADF), stops those that wait (io_uring
 * cancels them; on epoll readiness waiters wake with -EBADF), waits until
 * the running ones have returned, and only then closes the descriptor, so
 * that a number being closed is never used by an operation still in flight
 * (it may name another file by then). The close itself runs in a shielded
 * scope: a cancelled task still closes its files (and sees the cancellation
 * at its next await point), and the descriptor never leaks. Outside a task
 * nothing can wait: with operations running, the last of them closes the
 * descriptor and frees f (f->deferred).
 */
#include "os.h"

#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

struct cio_file {
    int fd;
    unsigned nops;     /* file operations running on fd */
    bool closing;      /* cio_file_close has started: no new operations */
    bool deferred;     /* closed outside a task while operations ran: the
                          last of them closes fd and frees f */
    bool stream;       /* epoll: a FIFO, character device or socket, made
                          non-blocking; reads and writes wait for readiness */
    bool no_writer;    /* epoll: a FIFO opened for reading that has not seen
                          a writer yet (see read_stream) */
    cio_event_t idle;  /* set when nops drops to 0 while closing */
};

/* ------------------------------------------------------------------------ */
/* Running one operation                                                      */
/* ------------------------------------------------------------------------ */

/* A pool job (epoll): the operation, made once on a pool thread. */
typedef struct fjob {
    cio__op *op;
    ssize_t res;
    bool ran;
} fjob;

static int fjob_run(void *arg, void **result)
{
    (void)result;
    fjob *j = arg;
    j->res = cio__op_try(j->op);
    j->ran = true;
    return 0;
}

/*
 * Runs op from the current task on the loop's backend, for f (NULL for an
 * operation on a path). Returns its result (>= 0) or a negative errno;
 * -ECANCELED / -ETIMEDOUT only when the system call did not happen (see the
 * top of the file).
 */
static ssize_t run_op(cio_file_t *f, cio__op *op)
{
    cio__coro *c = cio__current;
    if (!c)
        return -EPERM;
    bool rw = op->code == CIO__OP_READ || op->code == CIO__OP_WRITE;
    op->offset = rw ? op->offset : -1;
    /* A FIFO or a terminal may wait forever, and a pool thread cannot be
     * interrupted: on epoll those wait for readiness on the loop instead,
     * cancellable like a socket. */
    if (cio__loop_completes(c->loop) || (rw && f && f->stream))
        return cio__op_run(c, op);
    int rc = cio__check_cancel(c);
    if (rc)
        return rc;
    fjob j = {.op = op, .res = 0, .ran = false};
    rc = cio_to_thread(fjob_run, &j, NULL);
    /* The pool waits for a started job even when the caller is cancelled:
     * a job that ran has done its system call, whose result stands. */
    return j.ran ? j.res : rc;
}

static int file_enter(cio_file_t *f)
{
    if (!f)
        return -EINVAL;
    if (f->closing || f->fd < 0)
        return -EBADF;
    f->nops++;
    return 0;
}

/* Ends an operation of f. f may be freed here (a deferred close): the
 * caller must not use it afterwards. */
static void file_leave(cio_file_t *f)
{
    if (--f->nops || !f->closing)
        return;
    if (!f->deferred) {
        cio_event_set(&f->idle); /* the closing task goes on */
        return;
    }
    cio__coro *c = cio__current;
    cio__close_fd(c ? c->loop : cio__running, f->fd);
    cio__free(f);
}

/* ------------------------------------------------------------------------ */
/* Opening                                                                    */
/* ------------------------------------------------------------------------ */

/*
 * An open on epoll, made on a pool thread. A FIFO (or a terminal) opened
 * without O_NONBLOCK may block until its other end is opened, and a pool
 * thread cannot be interrupted, so the open adds O_NONBLOCK: it then never
 * blocks (a FIFO for reading opens at once; for writing with no reader it
 * fails with ENXIO and the task retries on a timer). The file's type
 * decides what follows: a FIFO, character device or socket keeps
 * O_NONBLOCK and is read and written through readiness (f->stream); any
 * other file gets the caller's flags back.
 */
typedef struct open_job {
    const char *path;
    int flags;
    mode_t mode;
    int res;        /* the fd or -errno */
    bool stream;    /* the file is a FIFO, character device or socket */
    bool no_writer; /* a FIFO opened for reading: maybe no writer yet */
    bool fifo_wait; /* ENXIO from a FIFO with no reader: try again later */
    bool ran;
} open_job;

static int is_stream(mode_t m)
{
    return S_ISFIFO(m) || S_ISCHR(m) || S_ISSOCK(m);
}

/* After a non-blocking open that failed: is it a FIFO with no reader? */
static bool fifo_without_reader(const open_job *j)
{
    struct stat st;
    return j->res == -ENXIO && (j->flags & O_ACCMODE) == O_WRONLY &&
           stat(j->path, &st) == 0 && S_ISFIFO(st.st_mode);
}

/* Gives a file other than a stream the caller's blocking mode back. */
static int settle(open_job *j, int fd)
{
    struct stat st;
    if (fstat(fd, &st))
        return -errno;
    j->stream = is_stream(st.st_mode);
    j->no_writer = S_ISFIFO(st.st_mode) && (j->flags & O_ACCMODE) == O_RDONLY &&
                   !(j->flags & O_NONBLOCK);
    if (j->stream || (j->flags & O_NONBLOCK))
        return 0;
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0)
        return -errno;
    return 0;
}

static int open_job_run(void *arg, void **result)
{
    (void)result;
    open_job *j = arg;
    j->ran = true;
    if (j->flags & O_PATH) {
        /* No I/O through it, and an O_PATH open never blocks. */
        int fd = openat(AT_FDCWD, j->path, j->flags, j->mode);
        j->res = fd < 0 ? -errno : fd;
        return 0;
    }
    int fd = openat(AT_FDCWD, j->path, j->flags | O_NONBLOCK, j->mode);
    if (fd < 0 && errno == EWOULDBLOCK && !(j->flags & O_NONBLOCK)) {
        /* A lease held by another process: a blocking open waits for its
         * break (bounded by the lease break time), as open(2) does. */
        fd = openat(AT_FDCWD, j->path, j->flags, j->mode);
    }
    if (fd < 0) {
        j->res = -errno;
        j->fifo_wait = !(j->flags & O_NONBLOCK) && fifo_without_reader(j);
        return 0;
    }
    int rc = settle(j, fd);
    if (rc) {
        close(fd);
        fd = rc;
    }
    j->res = fd;
    return 0;
}

/* Opens on the pool (epoll): the fd or -errno; *stream as in open_job. */
static int open_pool(const char *path, int flags, mode_t mode, cio_file_t *f)
{
    double delay = 0.001;
    for (;;) {
        int rc = cio__check_cancel(cio__current);
        if (rc)
            return rc;
        open_job j = {.path = path, .flags = flags, .mode = mode};
        rc = cio_to_thread(open_job_run, &j, NULL);
        if (!j.ran)
            return rc;
        if (!j.fifo_wait) {
            f->stream = j.stream;
            f->no_writer = j.no_writer;
            return j.res;
        }
        /* A FIFO opened for writing waits for a reader, as open(2) does,
         * but on a timer (cancellable) instead of in a pool thread. */
        if ((rc = cio_sleep(delay)) < 0)
            return rc;
        delay = delay < 0.05 ? delay * 2 : 0.1;
    }
}

int cio_file_open(cio_file_t **out, const char *path, int flags, mode_t mode)
{
    if (!out)
        return -EINVAL;
    *out = NULL;
    if (!path)
        return -EINVAL;
    cio__coro *c = cio__current;
    if (!c)
        return -EPERM;
    cio_file_t *f = cio__calloc(1, sizeof(*f));
    if (!f)
        return -ENOMEM;
    ssize_t fd;
    if (cio__loop_completes(c->loop)) {
        cio__op op = {.code = CIO__OP_OPENAT, .fd = -1, .buf = (void *)path,
                      .flags = flags | O_CLOEXEC, .len = mode};
        fd = run_op(NULL, &op);
    } else {
        fd = open_pool(path, flags | O_CLOEXEC, mode, f);
    }
    if (fd < 0) {
        cio__free(f);
        return (int)fd;
    }
    f->fd = (int)fd;
    cio_event_init(&f->idle);
    *out = f;
    return 0;
}

int cio_file_fd(const cio_file_t *f)
{
    return !f ? -EINVAL : f->closing ? -EBADF : f->fd;
}

/*
 * A read of a FIFO opened for reading on epoll. The open did not wait for a
 * writer (see open_job), and until one comes a non-blocking read returns 0,
 * which is not the end of the data yet: the first read that gets 0 waits
 * for readiness (bytes written, or the last writer gone: a FIFO reports a
 * hang-up only once a writer has come and gone) and then reads again.
 */
static ssize_t read_stream(cio_file_t *f, cio__op *op)
{
    cio__coro *c = cio__current;
    ssize_t r = cio__op_run(c, op);
    if (r == 0 && op->len && f->no_writer) {
        int rc = cio__fd_wait(c, f->fd, CIO_READABLE);
        if (rc < 0)
            return rc;
        f->no_writer = false;
        r = cio__op_run(c, op);
    }
    if (r > 0)
        f->no_writer = false;
    return r;
}

/* One read or write of f (entered) at offset (-1: the file position). */
static ssize_t file_io(cio_file_t *f, int code, void *buf, size_t len, int64_t offset)
{
    cio__op op = {.code = (uint8_t)code, .fd = f->fd, .buf = buf, .len = len,
                  .offset = offset};
    if (code == CIO__OP_READ && f->no_writer && cio__current)
        return read_stream(f, &op);
    return run_op(f, &op);
}

/* One read of f at offset (-1: the file position). */
static ssize_t file_read(cio_file_t *f, void *buf, size_t len, int64_t offset)
{
    if (!buf && len)
        return -EINVAL;
    int rc = file_enter(f);
    if (rc)
        return rc;
    ssize_t r = file_io(f, CIO__OP_READ, buf, len, offset);
    file_leave(f);
    return r;
}

ssize_t cio_file_read(cio_file_t *f, void *buf, size_t len)
{
    return file_read(f, buf, len, -1);
}

ssize_t cio_file_pread(cio_file_t *f, void *buf, size_t len, int64_t offset)
{
    if (offset < 0)
        return -EINVAL;
    return file_read(f, buf, len, offset);
}

/*
 * Writes all of buf at offset (-1: the file position, advancing with it):
 * one write(2) takes at most 2 GiB - 4 KiB, and a pipe or a terminal may
 * take less. The whole loop counts as one operation of f, so that a close
 * waits for it; a close started meanwhile stops it with -EBADF.
 */
static int write_all(cio_file_t *f, const void *buf, size_t len, int64_t offset, size_t *written)
{
    size_t done = 0;
    int rc = !buf && len ? -EINVAL : file_enter(f);
    bool entered = rc == 0;
    while (rc == 0 && done < len) {
        ssize_t r = file_io(f, CIO__OP_WRITE, (char *)buf + done, len - done,
                            offset < 0 ? -1 : offset + (int64_t)done);
        if (r < 0)
            rc = (int)r;
        else if (r == 0)
            rc = -EIO; /* nothing taken and no error: never a silent stop */
        else if ((done += (size_t)r) < len && f->closing)
            rc = -EBADF;
    }
    if (entered)
        file_leave(f);
    if (written)
        *written = done;
    return rc;
}

int cio_file_write(cio_file_t *f, const void *buf, size_t len, size_t *written)
{
    return write_all(f, buf, len, -1, written);
}

int cio_file_pwrite(cio_file_t *f, const void *buf, size_t len, int64_t offset,
                    size_t *written)
{
    if (offset < 0) {
        if (written)
            *written = 0;
        return -EINVAL;
    }
    return write_all(f, buf, len, offset, written);
}

int cio_file_fsync(cio_file_t *f, bool datasync)
{
    int rc = file_enter(f);
    if (rc)
        return rc;
    cio__op op = {.code = CIO__OP_FSYNC, .fd = f->fd, .flags = datasync ? 1 : 0};
    rc = (int)run_op(f, &op);
    file_leave(f);
    return rc;
}

int64_t cio_file_seek(cio_file_t *f, int64_t offset, int whence)
{
    int rc = file_enter(f);
    if (rc)
        return rc;
    off_t r = lseek(f->fd, (off_t)offset, whence);
    file_leave(f);
    return r < 0 ? -errno : (int64_t)r;
}

/* struct statx as struct stat. */
static void from_statx(struct stat *st, const struct statx *x)
{
    memset(st, 0, sizeof *st);
    st->st_dev = makedev(x->stx_dev_major, x->stx_dev_minor);
    st->st_ino = x->stx_ino;
    st->st_mode = x->stx_mode;
    st->st_nlink = x->stx_nlink;
    st->st_uid = x->stx_uid;
    st->st_gid = x->stx_gid;
    st->st_rdev = makedev(x->stx_rdev_major, x->stx_rdev_minor);
    st->st_size = (off_t)x->stx_size;
    st->st_blksize = (blksize_t)x->stx_blksize;
    st->st_blocks = (blkcnt_t)x->stx_blocks;
    st->st_atim = (struct timespec){x->stx_atime.tv_sec, x->stx_atime.tv_nsec};
    st->st_mtim = (struct timespec){x->stx_mtime.tv_sec, x->stx_mtime.tv_nsec};
    st->st_ctim = (struct timespec){x->stx_ctime.tv_sec, x->stx_ctime.tv_nsec};
}

static int do_statx(int fd, const char *path, int flags, struct stat *st)
{
    struct statx x;
    cio__op op = {.code = CIO__OP_STATX, .fd = fd, .buf = (void *)path, .flags = flags,
                  .len = STATX_BASIC_STATS, .stx = &x};
    int rc = (int)run_op(NULL, &op);
    if (rc >= 0)
        from_statx(st, &x);
    return rc < 0 ? rc : 0;
}

int cio_file_stat(cio_file_t *f, struct stat *st)
{
    if (!st)
        return -EINVAL;
    int rc = file_enter(f);
    if (rc)
        return rc;
    rc = do_statx(f->fd, "", AT_EMPTY_PATH, st);
    file_leave(f);
    return rc;
}

int cio_stat(const char *path, struct stat *st)
{
    if (!path || !st)
        return -EINVAL;
    if (!cio__current)
        return -EPERM;
    return do_statx(-1, path, 0, st);
}

/* Closes fd from a task whose scope is shielded: natively or on the pool. */
static int close_async(int fd)
{
    cio__op op = {.code = CIO__OP_CLOSE, .fd = fd};
    cio__coro *c = cio__current;
    cio__fd_forget(c->loop, fd); /* no stale interest for a reused number */
    if (cio__loop_completes(c->loop)) {
        ssize_t r = cio__op_run(c, &op);
        return op.done ? (int)r : -EAGAIN; /* not submitted: the caller closes */
    }
    fjob j = {.op = &op, .res = 0, .ran = false};
    int rc = cio_to_thread(fjob_run, &j, NULL);
    return j.ran ? (int)j.res : rc < 0 ? -EAGAIN : 0;
}

/*
 * Makes the operations other tasks run on f end soon: on io_uring the kernel
 * is asked to cancel them (one that completed keeps its result), on epoll
 * the tasks waiting for a stream's readiness wake with -EBADF. A pool thread
 * in a system call on a regular file is not interrupted: it ends by itself.
 */
static void stop_ops(cio_loop_t *loop, cio_file_t *f)
{
    if (!loop || !f->nops)
        return;
    cio__fd_forget(loop, f->fd);
    cio__loop_cancel_fd(loop, f->fd);
}

/* In a task: waits (shielded) until f has no operation, then closes fd.
 * -EAGAIN when it could do neither (the caller decides). */
static int close_in_task(cio_file_t *f)
{
    cio_scope_t shield;
    if (cio_scope_enter(&shield, INFINITY, CIO_SCOPE_SHIELD))
        return -EAGAIN;
    while (f->nops && cio_event_wait(&f->idle) == 0)
        ;
    int rc = f->nops ? -EAGAIN : close_async(f->fd);
    cio_scope_exit(&shield);
    return rc;
}

int cio_file_close(cio_file_t *f)
{
    if (!f)
        return 0;
    if (f->closing)
        return -EBADF; /* a second close while the first one waits */
    f->closing = true;
    cio__coro *c = cio__current;
    cio_loop_t *loop = c ? c->loop : cio__running;
    stop_ops(loop, f);
    int rc = c ? close_in_task(f) : -EAGAIN;
    if (rc == -EAGAIN && f->nops) {
        /* Outside a task (a callback), or no scope to wait in, while other
         * tasks' operations still use fd: closing it now would let them
         * (a pool job, a queued submission) use a number that may name
         * another file by then. The last of them closes it and frees f. */
        f->deferred = true;
        return 0;
    }
    if (rc == -EAGAIN) {
        /* The close could not be started: here and now. The fd table must
         * not keep interest in a reused number. */
        rc = cio__close_fd(loop, f->fd);
    }
    cio__free(f);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Line splitting, shared by the line reader and the follower               */
/* ------------------------------------------------------------------------ */

enum { READ_SIZE = 64 * 1024 };

/* A growable buffer of unread bytes [start, end) with a scan position. */
typedef struct lbuf {
    char *buf;
    size_t cap, start, end, scan;
    size_t max; /* the longest line, newline included */
} lbuf;

/*
 * The next complete line in b: 1 with it in *line, 0 when more data is
 * needed, -EOVERFLOW when the pending line is longer than b->max.
 */
static int lbuf_line(lbuf *b, cio_file_chunk_t *line)
{
    const char *p = b->buf + b->scan;
    const char *nl = b->end > b->scan ? memchr(p, '\n', b->end - b->scan) : NULL;
    if (!nl) {
        b->scan = b->end;
        return b->end - b->start > b->max ? -EOVERFLOW : 0;
    }
    size_t len = (size_t)(nl + 1 - (b->buf + b->start));
    if (len > b->max)
        return -EOVERFLOW;
    *line = (cio_file_chunk_t){b->buf + b->start, len};
    b->start += len;
    b->scan = b->start;
    return 1;
}

/* Makes room for a read at the end: at least READ_SIZE bytes, or what is
 * left below the line limit. 0 or -ENOMEM. */
static int lbuf_room(lbuf *b)
{
    if (b->start == b->end)
        b->start = b->end = b->scan = 0;
    if (b->start > 0 && b->cap - b->end < READ_SIZE) {
        memmove(b->buf, b->buf + b->start, b->end - b->start);
        b->end -= b->start;
        b->scan -= b->start;
        b->start = 0;
    }
    if (b->cap - b->end >= READ_SIZE && b->buf)
        return 0;
    size_t cap = b->cap ? b->cap * 2 : READ_SIZE;
    while (cap - b->end < READ_SIZE)
        cap *= 2;
    char *nb = cio__realloc(b->buf, cap);
    if (!nb)
        return -ENOMEM;
    b->buf = nb;
    b->cap = cap;
    return 0;
}

/* The pending bytes (a last line without newline) as a line, emptying b. */
static bool lbuf_rest(lbuf *b, cio_file_chunk_t *line)
{
    if (b->start == b->end)
        return false;
    *line = (cio_file_chunk_t){b->buf + b->start, b->end - b->start};
    b->start = b->end = b->scan = 0;
    return true;
}

/* ------------------------------------------------------------------------ */
/* Generators: chunks and lines                                               */
/* ------------------------------------------------------------------------ */

/*
 * A reader generator owns its state (path copy, buffers) from creation: it
 * is primed at once, to a first yield that does nothing, so that freeing a
 * generator that was never iterated still runs the body's cleanup.
 */
typedef struct reader {
    size_t size;  /* chunk size, or line limit */
    char path[];
} reader;

/* Creates the generator and primes it; on failure the caller frees st
 * (the body never ran). */
static int start_gen(cio_gen_t **out, cio_gen_fn body, void *st, const char *name)
{
    cio_gen_opts_t o = {.name = name};
    cio_gen_t *g;
    int rc = cio_gen_new_ex(&g, body, st, &o);
    if (rc == 0 && (rc = cio_gen_next(g, NULL)) != 1) {
        cio_gen_free(g); /* no stack for it: never ran, just marked closed */
        rc = rc < 0 ? rc : -ENOMEM;
    }
    if (rc < 0)
        return rc;
    *out = g;
    return 0;
}

static int make_reader(cio_gen_t **out, const char *path, size_t size, cio_gen_fn body,
                       const char *name)
{
    if (!out)
        return -EINVAL;
    *out = NULL;
    if (!path)
        return -EINVAL;
    size_t plen = strlen(path) + 1;
    reader *r = cio__malloc(sizeof(*r) + plen);
    if (!r)
        return -ENOMEM;
    memcpy(r->path, path, plen);
    r->size = size;
    int rc = start_gen(out, body, r, name);
    if (rc < 0)
        cio__free(r);
    return rc;
}

/* The body's first step: the priming yield. False when closed there. */
static bool primed(cio_gen_t *g)
{
    return cio_gen_yield(g, NULL, NULL) == 0;
}

static int chunks_body(cio_gen_t *g, void *arg)
{
    reader *r = arg;
    if (!primed(g)) {
        cio__free(r);
        return 0;
    }
    cio_file_t *f = NULL;
    char *buf = cio__malloc(r->size);
    int rc = buf ? cio_file_open(&f, r->path, O_RDONLY, 0) : -ENOMEM;
    while (rc == 0) {
        ssize_t n = cio_file_read(f, buf, r->size);
        if (n <= 0) {
            rc = (int)n;
            break;
        }
        cio_file_chunk_t c = {buf, (size_t)n};
        rc = cio_gen_yield(g, &c, NULL);
    }
    int crc = cio_file_close(f);
    cio__free(buf);
    cio__free(r);
    return rc < 0 ? rc : crc;
}

int cio_file_chunks(cio_gen_t **out, const char *path, size_t chunk_size)
{
    if (chunk_size == 0)
        chunk_size = CIO_FILE_CHUNK_SIZE;
    if (chunk_size > INT32_MAX) {
        if (out)
            *out = NULL;
        return -EINVAL;
    }
    return make_reader(out, path, chunk_size, chunks_body, "file_chunks");
}

/* Reads more of f into b: the count, 0 at end of file, or an error. */
static ssize_t lbuf_fill(lbuf *b, cio_file_t *f, int64_t offset)
{
    int rc = lbuf_room(b);
    if (rc)
        return rc;
    ssize_t n = offset < 0 ? cio_file_read(f, b->buf + b->end, b->cap - b->end)
                           : cio_file_pread(f, b->buf + b->end, b->cap - b->end, offset);
    if (n > 0)
        b->end += (size_t)n;
    return n;
}

static int lines_body(cio_gen_t *g, void *arg)
{
    reader *r = arg;
    if (!primed(g)) {
        cio__free(r);
        return 0;
    }
    lbuf b = {.max = r->size};
    cio_file_t *f = NULL;
    int rc = cio_file_open(&f, r->path, O_RDONLY, 0);
    bool eof = false;
    cio_file_chunk_t line;
    while (rc == 0) {
        rc = lbuf_line(&b, &line);
        if (rc == 1) {
            rc = cio_gen_yield(g, &line, NULL);
            continue;
        }
        if (rc < 0)
            break;
        if (eof) {
            if (lbuf_rest(&b, &line))
                rc = cio_gen_yield(g, &line, NULL);
            break;
        }
        ssize_t n = lbuf_fill(&b, f, -1);
        rc = n < 0 ? (int)n : 0;
        eof = n == 0;
    }
    int crc = cio_file_close(f);
    cio__free(b.buf);
    cio__free(r);
    return rc < 0 ? rc : crc;
}

int cio_file_lines(cio_gen_t **out, const char *path, size_t max_line)
{
    if (max_line == 0)
        max_line = CIO_FILE_LINE_MAX;
    return make_reader(out, path, max_line, lines_body, "file_lines");
}

/* ------------------------------------------------------------------------ */
/* The follower                                                               */
/* ------------------------------------------------------------------------ */

typedef struct follower {
    size_t max_line;
    cio_follow_opts_t o;
    cio_gen_t *g;
    cio_file_t *f;        /* the file followed (NULL while the name is gone) */
    dev_t dev;
    ino_t ino;
    int64_t pos;          /* bytes of f read */
    lbuf b;
    int ifd;              /* inotify, or -1: poll */
    int wd_file;          /* the watch of f's inode, -1 for none */
    char *dir;            /* the directory of the path */
    char path[];
} follower;

#define FOLLOW_FILE_EVENTS (IN_MODIFY | IN_MOVE_SELF | IN_DELETE_SELF | IN_ATTRIB)

/* Yields every complete line of b; at a switch (truncation, rotation) the
 * partial one too. */
static int yield_lines(follower *w, bool all)
{
    cio_file_chunk_t line;
    int rc;
    while ((rc = lbuf_line(&w->b, &line)) == 1)
        if ((rc = cio_gen_yield(w->g, &line, NULL)) < 0)
            return rc;
    if (rc == 0 && all && lbuf_rest(&w->b, &line))
        rc = cio_gen_yield(w->g, &line, NULL);
    return rc;
}

/* Reads f from pos to its end, yielding complete lines. */
static int drain(follower *w)
{
    for (;;) {
        ssize_t n = lbuf_fill(&w->b, w->f, w->pos);
        if (n <= 0)
            return (int)n;
        w->pos += n;
        int rc = yield_lines(w, false);
        if (rc < 0)
            return rc;
    }
}

/* Opens the path as the file followed, from offset `from` (-1: its end). */
static int follow_open(follower *w, int64_t from)
{
    cio_file_t *f;
    int rc = cio_file_open(&f, w->path, O_RDONLY, 0);
    if (rc)
        return rc;
    struct stat st;
    if ((rc = cio_file_stat(f, &st)) < 0) {
        cio_file_close(f);
        return rc;
    }
    w->f = f;
    w->dev = st.st_dev;
    w->ino = st.st_ino;
    w->pos = from < 0 ? (int64_t)st.st_size : from;
    if (w->ifd >= 0) {
        if (w->wd_file >= 0)
            inotify_rm_watch(w->ifd, w->wd_file);
        w->wd_file = inotify_add_watch(w->ifd, w->path, FOLLOW_FILE_EVENTS);
    }
    return 0;
}

/* Rechecks the file after a wake-up: truncation, rotation, deletion. */
static int recheck(follower *w)
{
    struct stat st;
    int rc;
    if (w->f) {
        if ((rc = cio_file_stat(w->f, &st)) < 0)
            return rc;
        if ((int64_t)st.st_size < w->pos) {
            /* Truncated: what was pending is yielded, then from 0. */
            if ((rc = yield_lines(w, true)) < 0)
                return rc;
            w->pos = 0;
        }
    }
    rc = cio_stat(w->path, &st);
    if (rc == -ENOENT)
        return 0; /* deleted or renamed away: wait for the name to come back */
    if (rc < 0)
        return rc;
    if (w->f && st.st_dev == w->dev && st.st_ino == w->ino)
        return 0;
    /* Rotated: finish the old file, then follow the new one from its start. */
    if (w->f) {
        if ((rc = drain(w)) < 0 || (rc = yield_lines(w, true)) < 0)
            return rc;
        rc = cio_file_close(w->f);
        w->f = NULL;
        if (rc < 0)
            return rc;
    }
    rc = follow_open(w, 0);
    return rc == -ENOENT ? 0 : rc;
}

/* Waits for a change: an inotify event, or the poll interval. */
static int follow_wait(follower *w)
{
    if (w->ifd < 0) /* no inotify: an infinite interval polls every second */
        return cio_sleep(isinf(w->o.poll_interval) ? 1.0 : w->o.poll_interval);
    char ev[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    cio_scope_t s;
    int rc = cio_scope_enter(&s, w->o.poll_interval, 0);
    if (rc)
        return rc;
    ssize_t n = cio_read(w->ifd, ev, sizeof ev);
    int src = cio_scope_exit(&s);
    if (n == -ETIMEDOUT && src == -ETIMEDOUT)
        return 0; /* the safety-net recheck */
    return n < 0 ? (int)n : 0;
}

static int follow_setup(follower *w)
{
    w->ifd = -1;
    w->wd_file = -1;
    if (!(w->o.flags & CIO_FOLLOW_POLL)) {
        w->ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
        if (w->ifd >= 0 && inotify_add_watch(w->ifd, w->dir, IN_CREATE | IN_MOVED_TO) < 0) {
            close(w->ifd);
            w->ifd = -1; /* e.g. out of watches: poll instead */
        }
    }
    return follow_open(w, (w->o.flags & CIO_FOLLOW_FROM_START) ? 0 : -1);
}

static int follow_body(cio_gen_t *g, void *arg)
{
    follower *w = arg;
    if (!primed(g)) {
        cio__free(w->dir);
        cio__free(w);
        return 0;
    }
    w->g = g;
    w->b.max = w->max_line;
    w->f = NULL;
    int rc = follow_setup(w);
    while (rc == 0) {
        if (w->f && (rc = drain(w)) < 0)
            break;
        if ((rc = follow_wait(w)) < 0 || (rc = recheck(w)) < 0)
            break;
    }
    int crc = cio_file_close(w->f);
    if (w->ifd >= 0)
        cio__close_fd(cio__running, w->ifd);
    cio__free(w->b.buf);
    cio__free(w->dir);
    cio__free(w);
    return rc < 0 ? rc : crc;
}

/* The directory part of path ("." for a bare name). */
static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    size_t n = !slash ? 1 : slash == path ? 1 : (size_t)(slash - path);
    char *d = cio__malloc(n + 1);
    if (d) {
        memcpy(d, slash ? path : ".", n);
        d[n] = '\0';
    }
    return d;
}

int cio_file_follow(cio_gen_t **out, const char *path, const cio_follow_opts_t *opts)
{
    cio_follow_opts_t o = opts ? *opts : (cio_follow_opts_t){0};
    if (out)
        *out = NULL;
    if (o.reserved_[0] || o.reserved_[1] || isnan(o.poll_interval) || o.poll_interval < 0 ||
        (o.flags & ~(unsigned)(CIO_FOLLOW_FROM_START | CIO_FOLLOW_POLL)))
        return -EINVAL;
    if ((o.flags & CIO_FOLLOW_POLL) && isinf(o.poll_interval))
        return -EINVAL; /* polling that never polls would never see a line */
    if (o.poll_interval == 0)
        o.poll_interval = 1.0;
    if (o.max_line == 0)
        o.max_line = CIO_FILE_LINE_MAX;
    if (!path || !out)
        return -EINVAL;
    char *dir = dir_of(path);
    if (!dir)
        return -ENOMEM;
    size_t plen = strlen(path) + 1;
    follower *w = cio__calloc(1, sizeof(*w) + plen);
    if (!w) {
        cio__free(dir);
        return -ENOMEM;
    }
    memcpy(w->path, path, plen);
    w->max_line = o.max_line;
    w->o = o;
    w->dir = dir;
    int rc = start_gen(out, follow_body, w, "file_follow");
    if (rc < 0) {
        cio__free(dir);
        cio__free(w);
    }
    return rc;
}
