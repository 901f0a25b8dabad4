/*
 * Subprocesses (asyncio create_subprocess_exec / _shell).
 *
 * Spawning: posix_spawn, which glibc implements with clone(CLONE_VM |
 * CLONE_VFORK) (no copy of the parent's page tables, however large the
 * parent) and which reports the exec's failure (ENOENT...) as its return
 * value. The child's ends of the pipes are dup2'ed onto 0, 1 and 2 by file
 * actions; every other descriptor of cio is close-on-exec, so a spawn from
 * one thread never leaks another thread's pipes. The child starts with an
 * empty signal mask and every signal at its default disposition
 * (POSIX_SPAWN_SETSIGDEF), whatever handlers or SIG_IGN (SIGPIPE, which the
 * loop ignores) the parent has.
 *
 * Reaping: right after the spawn the parent opens a pidfd for the child and
 * watches it for readability on the loop (both backends); when it fires,
 * waitid(P_PIDFD, WNOHANG) reaps the child and wakes the tasks waiting for
 * it. No SIGCHLD handler is installed, and the pidfd makes signals and
 * waits immune to pid reuse. A process object freed before its child exits
 * stays on the loop's list until the child is reaped; at the loop's close
 * the children still running are handed to detached threads blocked in
 * waitid on their pidfds, so no zombie is ever left.
 *
 * Kernels without pidfd_open (before 5.3): each child gets a small thread
 * that blocks in waitid(P_PID, WEXITED | WNOWAIT) (noticing the exit
 * without reaping, so the pid cannot be reused while the loop still uses
 * it) and posts to the loop, which then reaps with waitid(WNOHANG). Signals
 * use kill(2) there, safe because the child is not reaped before the loop
 * knows. Still no SIGCHLD handler. Linux 5.3 has pidfd_open but not
 * waitid(P_PIDFD) (EINVAL): the reap then names the pid, as safe since only
 * we reap the child.
 *
 * Lifetime: tasks inside wait or communicate are counted (users); a free
 * while one is inside closes the streams and wakes them (-ESHUTDOWN), and
 * the last one leaving does the real free, so no task ever resumes on
 * freed memory.
 */
#include "os.h"

#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

extern char **environ;

int cio__process_no_pidfd;
int cio__process_no_pidfd_wait;

enum { P_RUNNING = 0, P_DONE, P_LOST };

typedef struct fallback fallback;

struct cio_process {
    cio_process_t *next, *prev; /* the loop's list (loop->proc) */
    cio_loop_t *loop;           /* NULL once the loop closed */
    pid_t pid;
    int pidfd;                  /* -1: none (reaped, or the fallback) */
    int sigfd;                  /* after the loop's close: a pidfd for signals, or -1 */
    int code;                   /* the return code once P_DONE */
    int users;                  /* tasks inside wait or communicate on p */
    uint8_t state;              /* P_RUNNING, P_DONE, P_LOST */
    uint8_t freed;              /* cio_process_free was called */
    uint8_t communicating;      /* a task is inside communicate */
    cio_waitq_t waiters;
    cio_stream_t *std[3];
    fallback *fb;               /* the fallback's thread record */
};

static void proc_unlink(cio_process_t *p)
{
    if (!p->loop)
        return;
    if (p->prev)
        p->prev->next = p->next;
    else
        p->loop->proc = p->next;
    if (p->next)
        p->next->prev = p->prev;
    p->next = p->prev = NULL;
}

static void proc_link(cio_loop_t *loop, cio_process_t *p)
{
    p->loop = loop;
    p->prev = NULL;
    p->next = loop->proc;
    if (p->next)
        p->next->prev = p;
    loop->proc = p;
}

/* Aborts and frees the pipe streams. */
static void release_streams(cio_process_t *p)
{
    for (int i = 0; i < 3; i++) {
        cio_stream_t *s = p->std[i];
        if (s) {
            p->std[i] = NULL;
            cio__stream_shutdown(s, false);
            cio__stream_release(s);
        }
    }
}

/* The return code waitid reported: the exit status, or minus the signal. */
static int code_of(const siginfo_t *si)
{
    return si->si_code == CLD_EXITED ? si->si_status : -si->si_status;
}

/* Kills and reaps a child that cannot be tracked (its spawn failed after
 * the fork): it must not be left running nor a zombie. */
static void kill_reap(pid_t pid)
{
    kill(pid, SIGKILL);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
        ;
}

/* The child was reaped (or lost): wakes the waiters, frees a freed p. */
static void finished(cio_process_t *p, int state, int code)
{
    p->state = (uint8_t)state;
    p->code = code;
    if (p->pidfd >= 0) {
        int fd = p->pidfd;
        p->pidfd = -1;
        cio__fd_clear(p->loop, fd, CIO_READABLE);
        cio__close_fd(p->loop, fd);
    }
    cio__waitq_wake_all(&p->waiters, 0);
    if (p->freed && !p->users) {
        proc_unlink(p);
        cio__free(p);
    }
}

/* Reaps the child if it has exited: true when it is gone. */
static bool reap_now(cio_process_t *p)
{
    siginfo_t si;
    int r;
    do {
        memset(&si, 0, sizeof si);
        r = p->pidfd >= 0 && !cio__process_no_pidfd_wait
                ? waitid(P_PIDFD, (id_t)p->pidfd, &si, WEXITED | WNOHANG)
                : -1;
        /* Linux 5.3 has pidfd_open but not waitid(P_PIDFD) (EINVAL): the
         * pid is as safe there, since only we reap the child. */
        if (r < 0 && (p->pidfd < 0 || cio__process_no_pidfd_wait || errno == EINVAL))
            r = waitid(P_PID, (id_t)p->pid, &si, WEXITED | WNOHANG);
    } while (r < 0 && errno == EINTR);
    if (r < 0) {
        /* ECHILD: someone else reaped it (a waitpid(-1) of the
         * application): its status is lost. */
        finished(p, P_LOST, 0);
        return true;
    }
    if (si.si_pid == 0)
        return false;
    finished(p, P_DONE, code_of(&si));
    return true;
}

/* The pidfd became readable: the child exited. */
static void pidfd_ready(void *arg, int fd, unsigned events)
{
    (void)fd;
    if (!(events & CIO__FD_CLOSING)) /* our own close of it: nothing to do */
        reap_now(arg);
}

/* ------------------------------------------------------------------------ */
/* The fallback without pidfd: a thread per child                             */
/* ------------------------------------------------------------------------ */

struct fallback {
    cio__tsnode node;
    cio_loop_t *loop;
    cio_process_t *p;
    pid_t pid;
    uint8_t posted, orphaned; /* under fb_lock */
};

/* Orders the thread's post against the loop's close (orphaned). */
static pthread_mutex_t fb_lock = PTHREAD_MUTEX_INITIALIZER;

/* Loop side: the thread saw the child exit; reap it. */
static void fallback_posted(void *arg)
{
    fallback *f = arg;
    pthread_mutex_lock(&fb_lock); /* the thread has let go of f */
    pthread_mutex_unlock(&fb_lock);
    cio_process_t *p = f->p;
    cio__free(f);
    if (!p)
        return; /* posted before a fork: the child is the parent's */
    p->fb = NULL;
    if (p->state == P_RUNNING && !reap_now(p))
        finished(p, P_LOST, 0); /* WNOWAIT saw it exit: cannot happen */
}

static void *fallback_thread(void *arg)
{
    fallback *f = arg;
    siginfo_t si;
    while (waitid(P_PID, (id_t)f->pid, &si, WEXITED | WNOWAIT) < 0 && errno == EINTR)
        ;
    pthread_mutex_lock(&fb_lock);
    if (!f->orphaned && cio__loop_post(f->loop, &f->node) == 0) {
        f->posted = 1;
        pthread_mutex_unlock(&fb_lock);
        return NULL; /* the loop owns f now */
    }
    pthread_mutex_unlock(&fb_lock);
    while (waitpid(f->pid, NULL, 0) < 0 && errno == EINTR)
        ;
    cio__free(f);
    return NULL;
}

/* Starts the fallback thread for p: 0, -ENOMEM or -EAGAIN. */
static int fallback_start(cio_process_t *p)
{
    fallback *f = cio__calloc(1, sizeof(*f));
    if (!f)
        return -ENOMEM;
    f->node = (cio__tsnode){.cb = fallback_posted, .arg = f, .owned = 1};
    f->loop = p->loop;
    f->p = p;
    f->pid = p->pid;
    pthread_attr_t a;
    pthread_t t;
    int rc = pthread_attr_init(&a);
    if (!rc) {
        pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&a, 64 * 1024);
        rc = pthread_create(&t, &a, fallback_thread, f);
        pthread_attr_destroy(&a);
    }
    if (rc) {
        cio__free(f);
        return -rc;
    }
    p->fb = f;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* The loop's close and fork                                                  */
/* ------------------------------------------------------------------------ */

/* What the hand-off thread reaps: the child's pidfd (owned) and pid. */
typedef struct handed {
    int fd;
    pid_t pid;
} handed;

/* Waits for the child and reaps it, then closes its pidfd. */
static void reap_handed(handed h)
{
    siginfo_t si;
    int r;
    do {
        r = cio__process_no_pidfd_wait ? (errno = EINVAL, -1)
                                       : waitid(P_PIDFD, (id_t)h.fd, &si, WEXITED);
    } while (r < 0 && errno == EINTR);
    if (r < 0 && errno == EINVAL) /* Linux 5.3: no P_PIDFD in waitid */
        while (waitid(P_PID, (id_t)h.pid, &si, WEXITED) < 0 && errno == EINTR)
            ;
    close(h.fd);
}

static void *handoff_thread(void *arg)
{
    handed h = *(handed *)arg;
    cio__free(arg);
    reap_handed(h);
    return NULL;
}

/* Hands a running child's pidfd to a detached thread that reaps it; if no
 * thread can be had, waits for the child here (the last resort: a zombie
 * must not be left). */
static void handoff(int pidfd, pid_t pid)
{
    handed *h = cio__malloc(sizeof(*h));
    pthread_attr_t a;
    pthread_t t;
    int rc = h ? pthread_attr_init(&a) : ENOMEM;
    if (!rc) {
        *h = (handed){pidfd, pid};
        pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&a, 64 * 1024);
        rc = pthread_create(&t, &a, handoff_thread, h);
        pthread_attr_destroy(&a);
    }
    if (rc) {
        cio__free(h);
        reap_handed((handed){pidfd, pid});
    }
}

static void procs_close(cio_loop_t *loop)
{
    /* Fallback threads that have not posted yet reap their child
     * themselves from now on; those that did are delivered just below. */
    pthread_mutex_lock(&fb_lock);
    for (cio_process_t *p = loop->proc; p; p = p->next)
        if (p->fb && !p->fb->posted) {
            p->fb->orphaned = 1;
            p->fb = NULL;
            p->state = P_LOST;
        }
    pthread_mutex_unlock(&fb_lock);
    cio__loop_run_posts(loop);
    cio_process_t *p;
    while ((p = loop->proc)) {
        bool freed = p->freed;
        p->freed = 0; /* freed below, not by a last reap */
        release_streams(p); /* before the network layer frees them */
        if (p->state == P_RUNNING && p->pidfd >= 0 && !reap_now(p)) {
            cio__fd_clear(loop, p->pidfd, CIO_READABLE);
            /* A copy of the pidfd keeps send_signal working on a held p
             * while the thread waits (a pidfd, so no pid-reuse race). */
            if (!freed)
                p->sigfd = fcntl(p->pidfd, F_DUPFD_CLOEXEC, 3);
            handoff(p->pidfd, p->pid);
            p->pidfd = -1;
            p->state = P_LOST;
        }
        proc_unlink(p);
        p->loop = NULL; /* cio_process_free frees a held p later */
        if (freed)
            cio__free(p);
    }
}

/* Whether n waits in the loop's queue of posts (the child of a fork: no
 * other thread runs). The posted flag is not enough: the fork may have come
 * between a thread's post and its setting the flag. */
static bool queued(const cio_loop_t *loop, const cio__tsnode *n)
{
    for (const cio__tsnode *q = loop->ts_head; q; q = q->next)
        if (q == n)
            return true;
    return false;
}

/* In a child after fork: the parent's children are not ours. */
static void procs_fork(cio_loop_t *loop)
{
    /* A fallback thread may have held the lock at the fork: it stayed in
     * the parent, so the child's copy would never be unlocked. */
    pthread_mutex_init(&fb_lock, NULL);
    cio_process_t *p = loop->proc;
    while (p) {
        cio_process_t *next = p->next;
        if (p->pidfd >= 0) {
            cio__fd_forget(loop, p->pidfd);
            close(p->pidfd);
            p->pidfd = -1;
        }
        /* Its thread stayed in the parent. A record already posted is in
         * the loop's queue: fallback_posted frees it, knowing no p. */
        if (p->fb && queued(loop, &p->fb->node))
            p->fb->p = NULL;
        else
            cio__free(p->fb);
        p->fb = NULL;
        p->state = P_LOST;
        if (p->freed) {
            proc_unlink(p);
            cio__free(p);
        }
        p = next;
    }
}

static void procs_report(cio_loop_t *loop, FILE *out)
{
    for (cio_process_t *p = loop->proc; p; p = p->next)
        if (p->state == P_RUNNING)
            fprintf(out, "cio: child process %d still running at the loop's close%s\n",
                    (int)p->pid, p->freed ? " (freed; reaped in the background)" : "");
}

static const cio__loop_hooks proc_hooks = {
    .layer = 12, .close = procs_close, .fork = procs_fork, .report = procs_report};

/* ------------------------------------------------------------------------ */
/* Spawning                                                                   */
/* ------------------------------------------------------------------------ */

static int check_opts(const cio_process_opts_t *o)
{
    const int mode[3] = {o->stdin_mode, o->stdout_mode, o->stderr_mode};
    const int fd[3] = {o->stdin_fd, o->stdout_fd, o->stderr_fd};
    for (int i = 0; i < 3; i++) {
        if (mode[i] < CIO_PROC_INHERIT || mode[i] > CIO_PROC_FD)
            return -EINVAL;
        if (mode[i] == CIO_PROC_STDOUT && i != 2)
            return -EINVAL;
        if (mode[i] == CIO_PROC_FD && fd[i] < 0)
            return -EINVAL;
    }
    /* A session leader is in a group of its own already: setpgid after
     * setsid fails (EPERM), so the two flags together are refused. */
    if (o->flags & ~(CIO_PROC_NEW_SESSION | CIO_PROC_NEW_PGROUP) ||
        o->flags == (CIO_PROC_NEW_SESSION | CIO_PROC_NEW_PGROUP) || o->reserved_[0] ||
        o->reserved_[1])
        return -EINVAL;
    return 0;
}

/* What the spawn needs besides the options: the descriptors to dup2 onto
 * 0, 1 and 2 in the child, and those to close in the parent afterwards. */
typedef struct spawn_fds {
    int child[3]; /* -1: no dup2 */
    int close[3]; /* the parent's copies to close after the spawn */
} spawn_fds;

/* Moves *fd to a number >= 3 (close-on-exec), so that dup2 onto 0..2 in
 * the child never overwrites a source still to be dup'ed. Returns 0 or
 * -errno; *fd is closed on failure when owned. */
static int move_high(int *fd, bool owned)
{
    if (*fd >= 3)
        return 0;
    int nfd = fcntl(*fd, F_DUPFD_CLOEXEC, 3);
    int rc = nfd < 0 ? -errno : 0;
    if (owned)
        close(*fd);
    *fd = nfd;
    return rc;
}

/* Makes the pipes and the parent's streams. 0 or -errno, with everything
 * made so far released on failure. */
static int make_pipes(cio_process_t *p, const cio_process_opts_t *o, spawn_fds *sf)
{
    const int mode[3] = {o->stdin_mode, o->stdout_mode, o->stderr_mode};
    const int fd[3] = {o->stdin_fd, o->stdout_fd, o->stderr_fd};
    for (int i = 0; i < 3; i++) {
        int rc = 0;
        if (mode[i] == CIO_PROC_FD) {
            sf->child[i] = fd[i];
            if (fd[i] < 3 && (rc = move_high(&sf->child[i], false)) == 0)
                sf->close[i] = sf->child[i];
        } else if (mode[i] == CIO_PROC_PIPE) {
            int pfd[2];
            if (pipe2(pfd, O_CLOEXEC))
                return -errno;
            int mine = i == 0 ? pfd[1] : pfd[0];
            int theirs = i == 0 ? pfd[0] : pfd[1];
            /* Both ends above 2: in a parent started with 0..2 closed, an
             * end of ours on 1 would be what CIO_PROC_STDOUT dup2's onto
             * the child's stderr (and a source the child's dup2 plan
             * overwrites). */
            if ((rc = move_high(&theirs, true))) {
                close(mine);
                return rc;
            }
            if ((rc = move_high(&mine, true))) {
                close(theirs);
                return rc;
            }
            sf->child[i] = sf->close[i] = theirs;
            rc = cio__stream_new_pipe(&p->std[i], p->loop, mine,
                                      i == 0 ? CIO__PIPE_WRITE : CIO__PIPE_READ, o->stream);
        }
        if (rc)
            return rc;
    }
    return 0;
}

/* Fills the file actions and attributes of the spawn: 0 or -errno. */
static int prepare(posix_spawn_file_actions_t *fa, posix_spawnattr_t *at,
                   const cio_process_opts_t *o, const spawn_fds *sf)
{
    const int mode[3] = {o->stdin_mode, o->stdout_mode, o->stderr_mode};
    int rc = 0;
    for (int i = 0; i < 3 && !rc; i++) {
        if (sf->child[i] >= 0)
            rc = posix_spawn_file_actions_adddup2(fa, sf->child[i], i);
        else if (mode[i] == CIO_PROC_DEVNULL)
            rc = posix_spawn_file_actions_addopen(fa, i, "/dev/null", i ? O_WRONLY : O_RDONLY,
                                                  0);
        else if (mode[i] == CIO_PROC_STDOUT)
            rc = posix_spawn_file_actions_adddup2(fa, 1, 2);
    }
    if (!rc && o->cwd)
        rc = posix_spawn_file_actions_addchdir_np(fa, o->cwd);
    short flags = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF;
    if (o->flags & CIO_PROC_NEW_SESSION)
        flags |= POSIX_SPAWN_SETSID;
    if (o->flags & CIO_PROC_NEW_PGROUP)
        flags |= POSIX_SPAWN_SETPGROUP;
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    sigdelset(&all, SIGKILL);
    sigdelset(&all, SIGSTOP);
    if (!rc)
        rc = posix_spawnattr_setflags(at, flags);
    if (!rc)
        rc = posix_spawnattr_setsigmask(at, &none);
    if (!rc)
        rc = posix_spawnattr_setsigdefault(at, &all);
    if (!rc && (o->flags & CIO_PROC_NEW_PGROUP))
        rc = posix_spawnattr_setpgroup(at, 0);
    return -rc;
}

/* Spawns the child of p: 0 or -errno (no child then). */
static int do_spawn(cio_process_t *p, const char *file, char *const argv[], bool search,
                    const cio_process_opts_t *o, const spawn_fds *sf)
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    int rc = posix_spawn_file_actions_init(&fa);
    if (rc)
        return -rc;
    if ((rc = posix_spawnattr_init(&at))) {
        posix_spawn_file_actions_destroy(&fa);
        return -rc;
    }
    rc = prepare(&fa, &at, o, sf);
    if (!rc) {
        char *const *env = o->env ? o->env : environ;
        rc = -(search ? posix_spawnp(&p->pid, file, &fa, &at, argv, env)
                      : posix_spawn(&p->pid, file, &fa, &at, argv, env));
    }
    posix_spawnattr_destroy(&at);
    posix_spawn_file_actions_destroy(&fa);
    return rc;
}

/* Starts watching the spawned child: its pidfd on the loop, or the
 * fallback thread. On failure the child is killed and reaped. */
static int track(cio_process_t *p)
{
    int rc = 0;
    p->pidfd = cio__process_no_pidfd ? -1 : (int)syscall(SYS_pidfd_open, p->pid, 0);
    if (p->pidfd < 0)
        rc = cio__process_no_pidfd ? -ENOSYS : -errno;
    if (rc == -ESRCH) {
        /* Already exited and reaped by someone else (SIGCHLD ignored, or a
         * waitpid(-1) of the application): spawned, its status lost. The
         * pid may name another process already: no kill. */
        p->state = P_LOST;
        return 0;
    }
    if (rc == -ENOSYS)
        rc = fallback_start(p);
    else if (!rc && (rc = cio__fd_set(p->loop, p->pidfd, CIO_READABLE, pidfd_ready, p))) {
        close(p->pidfd);
        p->pidfd = -1;
    }
    if (rc)
        kill_reap(p->pid);
    return rc;
}

static int spawn(cio_process_t **out, const char *file, char *const argv[], bool search,
                 const cio_process_opts_t *opts)
{
    if (out)
        *out = NULL;
    static const cio_process_opts_t none;
    const cio_process_opts_t *o = opts ? opts : &none;
    cio_loop_t *loop = cio__net_loop();
    if (!out || !file)
        return -EINVAL;
    int rc = check_opts(o);
    if (rc)
        return rc;
    if (!loop)
        return -EPERM;
    if ((rc = cio__loop_hook(loop, &proc_hooks)))
        return rc;
    cio_process_t *p = cio__calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    p->loop = loop;
    p->pidfd = p->sigfd = -1;
    spawn_fds sf = {{-1, -1, -1}, {-1, -1, -1}};
    char *const def_argv[] = {(char *)file, NULL};
    rc = make_pipes(p, o, &sf);
    if (!rc)
        rc = do_spawn(p, file, argv ? argv : def_argv, search, o, &sf);
    for (int i = 0; i < 3; i++)
        if (sf.close[i] >= 0)
            close(sf.close[i]);
    if (!rc)
        rc = track(p);
    if (rc) {
        release_streams(p);
        cio__free(p);
        return rc;
    }
    proc_link(loop, p);
    *out = p;
    return 0;
}

int cio_process_exec(cio_process_t **out, const char *file, char *const argv[],
                     const cio_process_opts_t *opts)
{
    return spawn(out, file, argv, file && !strchr(file, '/'), opts);
}

int cio_process_shell(cio_process_t **out, const char *cmd, const cio_process_opts_t *opts)
{
    if (!cmd) {
        if (out)
            *out = NULL;
        return -EINVAL;
    }
    char *const argv[] = {"/bin/sh", "-c", (char *)cmd, NULL};
    return spawn(out, "/bin/sh", argv, false, opts);
}

/* ------------------------------------------------------------------------ */
/* Queries, signals, waiting                                                  */
/* ------------------------------------------------------------------------ */

cio_stream_t *cio_process_stdin(cio_process_t *p)
{
    return p ? p->std[0] : NULL;
}

cio_stream_t *cio_process_stdout(cio_process_t *p)
{
    return p ? p->std[1] : NULL;
}

cio_stream_t *cio_process_stderr(cio_process_t *p)
{
    return p ? p->std[2] : NULL;
}

int cio_process_pid(const cio_process_t *p)
{
    return p ? (int)p->pid : -EINVAL;
}

int cio_process_returncode(const cio_process_t *p, int *code)
{
    if (!p || !code)
        return -EINVAL;
    if (p->state == P_RUNNING)
        return -EAGAIN;
    if (p->state == P_LOST)
        return -ECHILD;
    *code = p->code;
    return 0;
}

int cio_process_send_signal(cio_process_t *p, int sig)
{
    if (!p || sig < 0 || sig >= NSIG)
        return -EINVAL;
    long r;
    if (p->state == P_RUNNING)
        r = p->pidfd >= 0 ? syscall(SYS_pidfd_send_signal, p->pidfd, sig, NULL, 0)
                          : kill(p->pid, sig);
    else if (p->sigfd >= 0) /* the loop closed; a hand-off thread waits */
        r = syscall(SYS_pidfd_send_signal, p->sigfd, sig, NULL, 0);
    else
        return 0; /* reaped: there is no child to signal any more */
    /* ESRCH: exited, not yet reaped (a zombie), or reaped by the hand-off
     * thread. */
    return r < 0 && errno != ESRCH ? -errno : 0;
}

int cio_process_terminate(cio_process_t *p)
{
    return cio_process_send_signal(p, SIGTERM);
}

int cio_process_kill(cio_process_t *p)
{
    return cio_process_send_signal(p, SIGKILL);
}

/* The real free of a freed p, once no task is inside wait or communicate:
 * a child still running keeps p on the loop's list until it is reaped. */
static void destroy(cio_process_t *p)
{
    release_streams(p);
    if (p->sigfd >= 0) {
        close(p->sigfd);
        p->sigfd = -1;
    }
    if (p->state == P_RUNNING && p->loop)
        return; /* finished() frees it */
    proc_unlink(p);
    cio__free(p);
}

/* A task enters or leaves wait or communicate: p stays allocated while one
 * is inside, so that a free by another task never pulls it from under it. */
static void user_enter(cio_process_t *p)
{
    p->users++;
}

static void user_leave(cio_process_t *p)
{
    if (--p->users == 0 && p->freed)
        destroy(p);
}

static int wait_in(cio_process_t *p, cio__coro *c, int *code)
{
    while (p->state == P_RUNNING && !p->freed) {
        cio__waiter w;
        cio__waiter_init(&w, c, "process wait", p, cio__wlist_unlink);
        cio__wlist_push(&p->waiters, &w);
        int rc = cio__wait(&w, CIO__NO_DEADLINE);
        if (rc)
            return rc; /* the child runs on, still tracked */
    }
    if (p->freed)
        return -ESHUTDOWN;
    if (p->state == P_LOST)
        return -ECHILD;
    if (code)
        *code = p->code;
    return 0;
}

int cio_process_wait(cio_process_t *p, int *code)
{
    if (!p)
        return -EINVAL;
    cio__coro *c = cio__current;
    if (!c)
        return -EPERM;
    int rc = cio__check_cancel(c);
    if (rc)
        return rc;
    user_enter(p);
    rc = wait_in(p, c, code);
    user_leave(p);
    return rc;
}

void cio_process_free(cio_process_t *p)
{
    if (!p)
        return;
    p->freed = 1;
    cio__waitq_wake_all(&p->waiters, -ESHUTDOWN);
    if (!p->users) {
        destroy(p);
        return;
    }
    /* Tasks are inside wait or communicate: they are woken (the streams
     * closed under communicate's helpers: -ESHUTDOWN) and the last one
     * leaving frees p. */
    for (int i = 0; i < 3; i++)
        if (p->std[i])
            cio__stream_shutdown(p->std[i], false);
}

/* ------------------------------------------------------------------------ */
/* communicate                                                                */
/* ------------------------------------------------------------------------ */

#define FEED_CHUNK (256u * 1024u)

/* One communicate, shared with its helper tasks (stdin writer, stdout and
 * stderr readers). The streams are taken when it starts: the helpers never
 * look at p. */
typedef struct comm {
    cio_stream_t *in, *out, *err;
    const char *input;
    size_t len;
    char *obuf, *ebuf;
    size_t olen, elen;
} comm;

/* The size of the next slice of input: at most FEED_CHUNK and what the
 * stream's write_limit still admits (0: the stream must flush first). */
static size_t slice(const comm *cm, size_t off)
{
    size_t n = cm->len - off;
    size_t room = cio__stream_write_room(cm->in);
    if (n > FEED_CHUNK)
        n = FEED_CHUNK;
    return n < room ? n : room;
}

/* Writes the input in slices, draining between them (so that the stream
 * never buffers more than a slice above its high-water mark). */
static int feed(comm *cm)
{
    cio__coro *c = cio__current;
    int rc = 0;
    for (size_t off = 0; off < cm->len && !rc;) {
        /* A cancel (communicate's own cleanup) must write nothing more:
         * cio_stream_write is not an await point. */
        if ((rc = cio__check_cancel(c)))
            break;
        size_t n = slice(cm, off);
        if (!n) { /* write_limit reached (high_water equal to it) */
            rc = cio__stream_wait_flushed(cm->in);
            continue;
        }
        if (!(rc = cio_stream_write(cm->in, cm->input + off, n)))
            rc = cio_stream_drain(cm->in);
        off += n;
    }
    return rc;
}

/* The stdin helper: the input, then EOF. A child that stops reading (EPIPE)
 * is not an error; any other error aborts the pipe, so the child sees EOF
 * rather than wait for input that will not come. */
static int feed_stdin(void *arg, void **result)
{
    (void)result;
    comm *cm = arg;
    int rc = feed(cm);
    if (rc == -EPIPE || rc == -ECONNRESET)
        rc = 0;
    else if (!rc) {
        /* The pipe is closed once flushed; already closed: nothing to do. */
        rc = cio_stream_write_eof(cm->in);
        if (rc == -EPIPE || rc == -ECONNRESET || rc == -ESHUTDOWN)
            rc = 0;
    }
    if (rc && rc != -ECANCELED && rc != -ETIMEDOUT)
        cio_stream_abort(cm->in);
    return rc;
}

static int read_stdout(void *arg, void **result)
{
    (void)result;
    comm *cm = arg;
    return cio_stream_read_all(cm->out, &cm->obuf, &cm->olen, 0);
}

static int read_stderr(void *arg, void **result)
{
    (void)result;
    comm *cm = arg;
    return cio_stream_read_all(cm->err, &cm->ebuf, &cm->elen, 0);
}

/* Awaits t (cancelling it first when cancel is set) in a shielded scope:
 * its task must be finished before communicate's frame goes away. */
static void join(cio_task_t *t, bool cancel)
{
    if (!t)
        return;
    if (cancel)
        cio_task_cancel(t);
    cio_scope_t sc;
    cio_scope_enter(&sc, INFINITY, CIO_SCOPE_SHIELD);
    cio_await(t, NULL);
    cio_scope_exit(&sc);
    cio_future_release(t);
}

/* Whether communicate may start: nothing is written or read before every
 * stream it needs is known to be usable. */
static int comm_check(const cio_process_t *p, size_t len)
{
    if (p->communicating)
        return -EBUSY;
    int rc = 0;
    for (int i = 1; i < 3 && !rc; i++)
        if (p->std[i])
            rc = cio__stream_can_read(p->std[i]);
    if (!rc && len && cio__stream_can_read(p->std[0]) == -ESHUTDOWN)
        rc = -ESHUTDOWN;
    return rc;
}

/* Waits for the helpers t[0..n) to finish, or for the first to fail:
 * 0, that failure, or the wait's own error (-ECANCELED...). */
static int first_failure(cio_task_t **t, size_t n)
{
    int rc = n ? cio_wait(t, n, CIO_FIRST_EXCEPTION, INFINITY) : 0;
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < n; i++)
        if (cio_future_done(t[i]) && (rc = cio_future_result(t[i], NULL)))
            return rc;
    return 0;
}

/* Runs the helpers of cm and waits for them all, or for the first failure
 * (or the caller's cancel), which cancels the others: 0 or the error. */
static int comm_run(comm *cm)
{
    cio_task_fn fn[3] = {read_stderr, read_stdout, feed_stdin};
    cio_stream_t *s[3] = {cm->err, cm->out, cm->in};
    cio_task_t *t[3];
    size_t n = 0;
    int rc = 0;
    /* The writer last: a spawn failure must leave no input half-written
     * (readers cancelled before they start consume nothing). */
    for (int i = 0; i < 3 && !rc; i++)
        if (s[i] && !(rc = cio_spawn(&t[n], fn[i], cm)))
            n++;
    if (!rc)
        rc = first_failure(t, n);
    for (size_t i = 0; i < n; i++)
        join(t[i], rc != 0);
    return rc;
}

static void set_out(char **buf, size_t *len, char *v, size_t n)
{
    if (buf)
        *buf = v;
    else
        cio__free(v);
    if (len)
        *len = v ? n : 0;
}

int cio_process_communicate(cio_process_t *p, const void *input, size_t len, char **out,
                            size_t *out_len, char **err, size_t *err_len)
{
    set_out(out, out_len, NULL, 0);
    set_out(err, err_len, NULL, 0);
    if (!p || (!input && len) || (len && !p->std[0]))
        return -EINVAL;
    cio__coro *c = cio__current;
    if (!c)
        return -EPERM;
    int rc = cio__check_cancel(c);
    if (!rc)
        rc = comm_check(p, len);
    if (rc)
        return rc;
    comm cm = {.in = p->std[0], .out = p->std[1], .err = p->std[2], .input = input, .len = len};
    p->communicating = 1;
    user_enter(p);
    rc = comm_run(&cm);
    if (!rc)
        rc = wait_in(p, c, NULL);
    p->communicating = 0;
    user_leave(p);
    if (rc) {
        cio__free(cm.obuf);
        cio__free(cm.ebuf);
        return rc;
    }
    set_out(out, out_len, cm.obuf, cm.olen);
    set_out(err, err_len, cm.ebuf, cm.elen);
    return 0;
}
