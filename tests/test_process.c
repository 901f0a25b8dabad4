/*
 * Subprocesses (cio_process_*), checked against the contract in cio.h with
 * real children (/bin/sh, cat, sleep, true, yes, head).
 *
 * Covered: communicate with 10 MiB in and 10 MiB out on each of stdout and
 * stderr (no deadlock, every byte checked); kill while a task waits
 * (-SIGKILL); a cancelled or timed-out wait leaving the child running and
 * tracked; 200 children in parallel leaving no zombie and no descriptor;
 * freeing before the child exits (reaped by the loop, and by the hand-off
 * thread after the loop's close); /dev/null; stderr into stdout; the
 * caller's fd; cwd; env (given and inherited); a missing program and a
 * missing cwd (-ENOENT, nothing leaked), a file that is not executable or
 * not a program; -ECHILD when SIGCHLD is ignored; a shell pipeline; return codes of
 * exits and signals; signals after the reap; stdin EOF and the one-way
 * pipe streams; argument errors and -EPERM; allocation failure at every
 * allocation of a spawn (-ENOMEM, nothing leaked); descriptor exhaustion
 * (-EMFILE, nothing leaked); and the reaping path of kernels without
 * pidfd_open (a thread per child), forced with cio__process_no_pidfd.
 * After review: a free while other tasks are in wait or communicate
 * (-ESHUTDOWN, no use-after-free); communicate refusing (-EBUSY,
 * -ESHUTDOWN, -ECANCELED) before it writes or reads anything; small stream
 * limits and a failing stdin writer; allocation failure inside communicate;
 * a fork with a fallback record queued; reaping by pid as on Linux 5.3;
 * signals after the loop's close; option errors (-EINVAL, -EBADF); and a
 * parent with 0..2 closed.
 *
 * Every test runs in its own forked process (check), so "no zombie" is
 * waitid(P_ALL, WNOHANG | WNOWAIT) failing with ECHILD in that process.
 */
#include "cio_test.h"
#include "cio_fail_alloc.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>

extern int cio__process_no_pidfd;
extern int cio__process_no_pidfd_wait;

/* ThreadSanitizer does not see the fork as ordering the parent's threads
 * before the child's writes: the fork test runs without it (UNDER_TSAN,
 * cio_test.h). */

/* ------------------------------------------------------------------------ */
/* Helpers                                                                    */
/* ------------------------------------------------------------------------ */

#define MAX_FDS 4096

/* The set of open descriptors (1 per open fd below MAX_FDS). */
typedef struct fdset {
    unsigned char open[MAX_FDS];
} fdset;

static void fds_snap(fdset *s)
{
    memset(s, 0, sizeof *s);
    DIR *d = opendir("/proc/self/fd");
    ck_assert_ptr_nonnull(d);
    int dfd = dirfd(d);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        int fd = atoi(e->d_name);
        if (fd != dfd && fd < MAX_FDS)
            s->open[fd] = 1;
    }
    closedir(d);
}

static void fds_same(const fdset *before)
{
    fdset now;
    fds_snap(&now);
    for (int i = 0; i < MAX_FDS; i++)
        ck_assert_msg(before->open[i] == now.open[i], "fd %d %s", i,
                      now.open[i] ? "leaked" : "closed");
}

/* True when this process has no child left, zombie or running. */
static bool no_children(void)
{
    siginfo_t si;
    return waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) < 0 && errno == ECHILD;
}

/* Options with the child's three standard streams all piped to us. */
static cio_process_opts_t all_pipes(void)
{
    return (cio_process_opts_t){.stdin_mode = CIO_PROC_PIPE, .stdout_mode = CIO_PROC_PIPE,
                                .stderr_mode = CIO_PROC_PIPE};
}

/* In a task: lets the loop reap what is left (up to 5 s), then asserts
 * that no child remains. */
static void await_no_children(void)
{
    for (int i = 0; i < 500 && !no_children(); i++)
        ck_assert_int_eq(cio_sleep(0.01), 0);
    ck_assert(no_children());
}

/* n bytes of c, from malloc (the caller's to free). */
static char *filled(size_t n, int c)
{
    char *b = malloc(n);
    ck_assert_ptr_nonnull(b);
    memset(b, c, n);
    return b;
}

static cio_process_t *sh(const char *cmd, const cio_process_opts_t *o)
{
    cio_process_t *p = NOT_SET;
    int rc = cio_process_shell(&p, cmd, o);
    ck_assert_msg(rc == 0, "spawn of %s: %s", cmd, cio_err_name(rc));
    ck_assert_ptr_nonnull(p);
    return p;
}

static int wait_code(cio_process_t *p)
{
    int code = 12345;
    ck_assert_int_eq(cio_process_wait(p, &code), 0);
    return code;
}

/* Runs cmd with stdout (and stderr, per its mode) piped; returns stdout. */
static char *capture(const char *cmd, cio_process_opts_t *o, int *code)
{
    o->stdout_mode = CIO_PROC_PIPE;
    cio_process_t *p = sh(cmd, o);
    char *out = NOT_SET;
    size_t len = 99;
    ck_assert_int_eq(cio_process_communicate(p, NULL, 0, &out, &len, NULL, NULL), 0);
    ck_assert_int_eq(cio_process_returncode(p, code), 0);
    if (out)
        ck_assert_uint_eq(strlen(out), len);
    else
        ck_assert_uint_eq(len, 0);
    cio_process_free(p);
    return out;
}

/* ------------------------------------------------------------------------ */
/* communicate                                                                */
/* ------------------------------------------------------------------------ */

#define BIG (10u * 1024u * 1024u)

static int main_communicate_big(void *arg, void **result)
{
    (void)arg;
    (void)result;
    /* cat echoes 10 MiB of stdin to stdout while yes writes 10 MiB to
     * stderr: with either pipe left unread both would block for good. yes
     * dies of SIGPIPE when head is done (the child's SIGPIPE is back at its
     * default although the loop ignores it here). */
    cio_process_opts_t o = all_pipes();
    cio_process_t *p = sh("(yes abcdefg | head -c 10485760 >&2) & cat; wait", &o);
    char *in = malloc(BIG);
    ck_assert_ptr_nonnull(in);
    uint32_t x = 2463534242u;
    for (size_t i = 0; i < BIG; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        in[i] = (char)x;
    }
    char *out, *err;
    size_t olen, elen;
    ck_assert_int_eq(cio_process_communicate(p, in, BIG, &out, &olen, &err, &elen), 0);
    ck_assert_uint_eq(olen, BIG);
    ck_assert(memcmp(out, in, BIG) == 0);
    ck_assert_uint_eq(elen, BIG);
    for (size_t i = 0; i < BIG; i++)
        if (err[i] != "abcdefg\n"[i % 8])
            ck_abort_msg("stderr byte %zu is %d", i, err[i]);
    int code;
    ck_assert_int_eq(cio_process_returncode(p, &code), 0);
    ck_assert_int_eq(code, 0);
    free(in);
    free(out);
    free(err);
    cio_process_free(p);
    ck_assert(no_children());
    return 0;
}

START_TEST(communicate_big) { RUN_MAIN(main_communicate_big, NULL); }
END_TEST

/* A child that exits without reading its input: not an error (EPIPE). */
static int main_communicate_unread(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_process_opts_t o = {.stdin_mode = CIO_PROC_PIPE, .stdout_mode = CIO_PROC_PIPE};
    cio_process_t *p = sh("echo bye; exit 4", &o);
    char *in = filled(BIG, 0);
    char *out;
    size_t olen;
    ck_assert_int_eq(cio_process_communicate(p, in, BIG, &out, &olen, NULL, NULL), 0);
    ck_assert_str_eq(out, "bye\n");
    ck_assert_int_eq(wait_code(p), 4);
    free(out);
    free(in);
    cio_process_free(p);

    /* Input for a child whose stdin is not a pipe: -EINVAL. */
    p = sh("true", NULL);
    out = NOT_SET;
    ck_assert_int_eq(cio_process_communicate(p, "x", 1, &out, NULL, NULL, NULL), -EINVAL);
    ck_assert_ptr_null(out);
    /* No pipes at all: nothing to read, it only waits. */
    char *err = NOT_SET;
    ck_assert_int_eq(cio_process_communicate(p, NULL, 0, &out, &olen, &err, NULL), 0);
    ck_assert_ptr_null(out);
    ck_assert_ptr_null(err);
    ck_assert_uint_eq(olen, 0);
    cio_process_free(p);
    return 0;
}

START_TEST(communicate_unread) { RUN_MAIN(main_communicate_unread, NULL); }
END_TEST

/* A cancelled communicate leaves the child running; nothing leaks. */
static int main_communicate_cancel(void *arg, void **result)
{
    (void)arg;
    (void)result;
    fdset before;
    fds_snap(&before);
    cio_process_opts_t o = all_pipes();
    cio_process_t *p = sh("echo partial; exec sleep 30", &o);
    cio_scope_t sc;
    ck_assert_int_eq(cio_scope_enter(&sc, D_MED, 0), 0);
    char *out = NOT_SET, *err = NOT_SET;
    ck_assert_int_eq(cio_process_communicate(p, "in", 2, &out, NULL, &err, NULL), -ETIMEDOUT);
    ck_assert_int_eq(cio_scope_exit(&sc), -ETIMEDOUT);
    ck_assert_ptr_null(out);
    ck_assert_ptr_null(err);
    int code;
    ck_assert_int_eq(cio_process_returncode(p, &code), -EAGAIN);
    ck_assert_int_eq(cio_process_kill(p), 0);
    ck_assert_int_eq(wait_code(p), -SIGKILL);
    cio_process_free(p);
    fds_same(&before);
    ck_assert(no_children());
    return 0;
}

START_TEST(communicate_cancel) { RUN_MAIN(main_communicate_cancel, NULL); }
END_TEST

/* ------------------------------------------------------------------------ */
/* wait, kill, signals, return codes                                          */
/* ------------------------------------------------------------------------ */

typedef struct waiter_arg {
    cio_process_t *p;
    int rc, code;
} waiter_arg;

static int waiter_body(void *arg, void **result)
{
    (void)result;
    waiter_arg *w = arg;
    w->rc = cio_process_wait(w->p, &w->code);
    return 0;
}

static int main_kill_waiting(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_process_t *p = sh("exec sleep 30", NULL);
    waiter_arg w1 = {.p = p, .rc = 1}, w2 = {.p = p, .rc = 1};
    cio_task_t *t1 = spawn(waiter_body, &w1), *t2 = spawn(waiter_body, &w2);
    settle();
    ck_assert_int_eq(w1.rc, 1); /* both still waiting */
    double t0 = mono_now();
    ck_assert_int_eq(cio_process_kill(p), 0);
    ck_assert_int_eq(finish(t1), 0);
    ck_assert_int_eq(finish(t2), 0);
    ck_assert(mono_now() - t0 < HANG_BOUND_S);
    ck_assert_int_eq(w1.rc, 0);
    ck_assert_int_eq(w1.code, -SIGKILL);
    ck_assert_int_eq(w2.code, -SIGKILL);
    /* Signals after the reap do nothing (no pid-reuse race). */
    ck_assert_int_eq(cio_process_send_signal(p, SIGTERM), 0);
    ck_assert_int_eq(cio_process_terminate(p), 0);
    ck_assert_int_eq(cio_process_kill(p), 0);
    ck_assert_int_eq(cio_process_send_signal(p, -1), -EINVAL);
    ck_assert_int_eq(cio_process_send_signal(p, NSIG), -EINVAL);
    ck_assert_int_eq(wait_code(p), -SIGKILL);
    cio_process_free(p);
    ck_assert(no_children());
    return 0;
}

START_TEST(kill_waiting) { RUN_MAIN(main_kill_waiting, NULL); }
END_TEST

START_TEST(kill_waiting_fallback)
{
    cio__process_no_pidfd = 1;
    RUN_MAIN(main_kill_waiting, NULL);
}
END_TEST

static int main_cancel_wait(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_process_t *p = sh("exec sleep 30", NULL);
    int pid = cio_process_pid(p);
    ck_assert_int_gt(pid, 0);

    /* A deadline: -ETIMEDOUT, the child runs on. */
    cio_scope_t sc;
    ck_assert_int_eq(cio_scope_enter(&sc, D_SHORT, 0), 0);
    int code = 777;
    ck_assert_int_eq(cio_process_wait(p, &code), -ETIMEDOUT);
    ck_assert_int_eq(cio_scope_exit(&sc), -ETIMEDOUT);
    ck_assert_int_eq(code, 777);
    ck_assert_int_eq(cio_process_returncode(p, &code), -EAGAIN);
    ck_assert_int_eq(kill(pid, 0), 0);

    /* A cancelled task: -ECANCELED, the child runs on. */
    waiter_arg w = {.p = p, .rc = 1};
    cio_task_t *t = spawn(waiter_body, &w);
    settle();
    ck_assert_int_eq(cio_task_cancel(t), 1);
    ck_assert_int_eq(finish(t), 0);
    ck_assert_int_eq(w.rc, -ECANCELED);
    ck_assert_int_eq(kill(pid, 0), 0);
    siginfo_t si = {0};
    ck_assert_int_eq(waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT), 0);
    ck_assert_int_eq(si.si_pid, 0); /* still running, not a zombie */

    /* A later wait gets it. */
    ck_assert_int_eq(cio_process_terminate(p), 0);
    ck_assert_int_eq(wait_code(p), -SIGTERM);
    cio_process_free(p);
    ck_assert(no_children());
    return 0;
}

START_TEST(cancel_wait) { RUN_MAIN(main_cancel_wait, NULL); }
END_TEST

static int main_returncodes(void *arg, void **result)
{
    (void)arg;
    (void)result;
    static const struct {
        const char *cmd;
        int code;
    } cases[] = {
        {"exit 0", 0},          {"exit 3", 3},           {"exit 255", 255},
        {"kill -TERM $$", -SIGTERM}, {"kill -KILL $$", -SIGKILL}, {"kill -INT $$", -SIGINT},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cio_process_t *p = sh(cases[i].cmd, NULL);
        int code = 1;
        if (i == 0)
            ck_assert_int_eq(cio_process_returncode(p, &code), -EAGAIN);
        ck_assert_int_eq(wait_code(p), cases[i].code);
        ck_assert_int_eq(cio_process_returncode(p, &code), 0);
        ck_assert_int_eq(code, cases[i].code);
        ck_assert_int_eq(cio_process_wait(p, NULL), 0); /* again, at once */
        cio_process_free(p);
    }
    /* exec without a shell, PATH searched, argv given and defaulted. */
    cio_process_t *p;
    char *const argv[] = {"sh", "-c", "exit 7", NULL};
    ck_assert_int_eq(cio_process_exec(&p, "sh", argv, NULL), 0);
    ck_assert_int_eq(wait_code(p), 7);
    cio_process_free(p);
    ck_assert_int_eq(cio_process_exec(&p, "false", NULL, NULL), 0);
    ck_assert_int_eq(wait_code(p), 1);
    cio_process_free(p);
    ck_assert_int_eq(cio_process_exec(&p, "/bin/true", NULL, NULL), 0);
    ck_assert_int_eq(wait_code(p), 0);
    cio_process_free(p);
    ck_assert(no_children());
    return 0;
}

START_TEST(returncodes) { RUN_MAIN(main_returncodes, NULL); }
END_TEST

/* The child starts with an empty mask and default dispositions, even for
 * signals the parent ignores or blocks. */
static int main_clean_signals(void *arg, void **result)
{
    (void)arg;
    (void)result;
    signal(SIGTERM, SIG_IGN);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    cio_process_opts_t o = {0};
    int code;
    char *out = capture("grep -E '^Sig(Blk|Ign)' /proc/self/status", &o, &code);
    ck_assert_int_eq(code, 0);
    /* glibc's posix_spawn leaves its two internal signals (32 and 33,
     * below SIGRTMIN, which no program can use) ignored; no other. */
    unsigned long long blk = 1, ign = 1;
    ck_assert_int_eq(sscanf(out, "SigBlk:\t%llx\nSigIgn:\t%llx", &blk, &ign), 2);
    ck_assert_uint_eq(blk, 0);
    ck_assert_uint_eq(ign & ~(3ull << 31), 0);
    free(out);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
    return 0;
}

START_TEST(clean_signals) { RUN_MAIN(main_clean_signals, NULL); }
END_TEST

/* ------------------------------------------------------------------------ */
/* Many children, freeing early, the loop's close                             */
/* ------------------------------------------------------------------------ */

#define MANY 200

static int main_many(void *arg, void **result)
{
    (void)arg;
    (void)result;
    fdset before;
    fds_snap(&before);
    static cio_process_t *ps[MANY];
    cio_process_opts_t o = {.stdout_mode = CIO_PROC_PIPE};
    for (int i = 0; i < MANY; i++) {
        if (i % 2)
            ck_assert_int_eq(cio_process_exec(&ps[i], "true", NULL, NULL), 0);
        else
            ps[i] = sh("echo hi", &o);
    }
    for (int i = 0; i < MANY; i++) {
        if (i % 2) {
            ck_assert_int_eq(wait_code(ps[i]), 0);
        } else {
            char *out;
            ck_assert_int_eq(cio_process_communicate(ps[i], NULL, 0, &out, NULL, NULL, NULL),
                             0);
            ck_assert_str_eq(out, "hi\n");
            free(out);
        }
        cio_process_free(ps[i]);
    }
    ck_assert(no_children());
    fds_same(&before);
    return 0;
}

START_TEST(many) { RUN_MAIN(main_many, NULL); }
END_TEST

START_TEST(many_fallback)
{
    cio__process_no_pidfd = 1;
    RUN_MAIN(main_many, NULL);
}
END_TEST

/* A pidfd of the test's own, to await a child's exit without reaping it. */
static int watch_exit(int pid)
{
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);
    ck_assert_int_ge(fd, 0);
    return fd;
}

/* Freed while the child runs: the loop reaps it when it exits. */
static int main_free_early(void *arg, void **result)
{
    (void)arg;
    (void)result;
    fdset before;
    fds_snap(&before);
    int ctl[2];
    ck_assert_int_eq(pipe2(ctl, O_CLOEXEC), 0);
    cio_process_opts_t o = {.stdin_mode = CIO_PROC_FD, .stdin_fd = ctl[0],
                            .stdout_mode = CIO_PROC_PIPE};
    cio_process_t *p = sh("cat", &o);
    close(ctl[0]);
    int pidfd = watch_exit(cio_process_pid(p));
    cio_process_free(p);
    ck_assert(!no_children());
    close(ctl[1]); /* cat sees EOF and exits */
    ck_assert_int_eq(cio_wait_fd(pidfd, CIO_READABLE), CIO_READABLE);
    close(pidfd);
    /* The loop reaps it in the iteration that sees the pidfd (or, on the
     * fallback, once its thread has posted): nothing to await for that. */
    await_no_children();
    fds_same(&before);
    return 0;
}

START_TEST(free_early) { RUN_MAIN(main_free_early, NULL); }
END_TEST

START_TEST(free_early_fallback)
{
    cio__process_no_pidfd = 1;
    RUN_MAIN(main_free_early, NULL);
}
END_TEST

/* Freed (or kept) while the child runs past the loop's close: a background
 * thread reaps it. */
static int ctl_w = -1, exit_fd = -1;
static cio_process_t *kept;

static int main_outlive(void *arg, void **result)
{
    (void)result;
    int ctl[2];
    ck_assert_int_eq(pipe2(ctl, O_CLOEXEC), 0);
    cio_process_opts_t o = {.stdin_mode = CIO_PROC_FD, .stdin_fd = ctl[0],
                            .stdout_mode = CIO_PROC_DEVNULL};
    cio_process_t *p = sh("cat", &o);
    close(ctl[0]);
    ctl_w = ctl[1];
    exit_fd = watch_exit(cio_process_pid(p));
    if (arg)
        kept = p; /* freed after the loop's close */
    else
        cio_process_free(p);
    return 0;
}

/* Outside the loop: waits (up to 10 s) for the child watched by exit_fd to
 * exit and closes exit_fd, then asserts that the hand-off thread reaps it.
 * The thread reaps it right after it exits: no event tells when, so this
 * polls for up to 5 s. */
static void exited_and_reaped(void)
{
    struct pollfd pf = {.fd = exit_fd, .events = POLLIN};
    ck_assert_int_eq(poll(&pf, 1, 10000), 1);
    close(exit_fd);
    for (int i = 0; i < 500 && !no_children(); i++)
        usleep(10000);
    ck_assert(no_children());
}

static void outlive(bool keep)
{
    RUN_MAIN(main_outlive, keep ? "keep" : NULL);
    ck_assert(!no_children());
    if (keep) {
        int code;
        ck_assert_int_eq(cio_process_returncode(kept, &code), -ECHILD);
        ck_assert_int_eq(cio_process_send_signal(kept, 0), 0);
        cio_process_free(kept);
    }
    close(ctl_w);
    exited_and_reaped();
}

START_TEST(outlive_loop) { outlive(false); }
END_TEST

START_TEST(outlive_loop_kept) { outlive(true); }
END_TEST

START_TEST(outlive_loop_fallback)
{
    cio__process_no_pidfd = 1;
    outlive(false);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Redirections, cwd, env                                                     */
/* ------------------------------------------------------------------------ */

static int main_redirect(void *arg, void **result)
{
    (void)arg;
    (void)result;
    int code;
    /* stdin from /dev/null: cat ends at once. */
    cio_process_opts_t o = {.stdin_mode = CIO_PROC_DEVNULL};
    char *out = capture("cat; echo done", &o, &code);
    ck_assert_str_eq(out, "done\n");
    free(out);

    /* stdout to /dev/null, stderr piped. */
    o = (cio_process_opts_t){.stdout_mode = CIO_PROC_DEVNULL, .stderr_mode = CIO_PROC_PIPE};
    cio_process_t *p = sh("echo lost; echo kept >&2", &o);
    ck_assert_ptr_null(cio_process_stdout(p));
    char *err;
    size_t elen;
    ck_assert_int_eq(cio_process_communicate(p, NULL, 0, &out, NULL, &err, &elen), 0);
    ck_assert_ptr_null(out);
    ck_assert_str_eq(err, "kept\n");
    ck_assert_uint_eq(elen, 5);
    free(err);
    cio_process_free(p);

    /* stderr into stdout, in order. */
    o = (cio_process_opts_t){.stderr_mode = CIO_PROC_STDOUT};
    out = capture("echo a; echo b >&2; echo c", &o, &code);
    ck_assert_str_eq(out, "a\nb\nc\n");
    free(out);

    /* The caller's descriptors, low numbers included (swapped 1 and 2
     * must not clobber each other). */
    char path[] = "/tmp/cio_proc_XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    unlink(path);
    o = (cio_process_opts_t){.stdout_mode = CIO_PROC_FD, .stdout_fd = fd};
    p = sh("echo to-file", &o);
    ck_assert_int_eq(wait_code(p), 0);
    cio_process_free(p);
    char buf[64] = {0};
    ck_assert_int_eq(pread(fd, buf, sizeof buf, 0), 8);
    ck_assert_str_eq(buf, "to-file\n");
    close(fd);
    return 0;
}

START_TEST(redirect) { RUN_MAIN(main_redirect, NULL); }
END_TEST

/* stdout and stderr of the child swapped through the caller's fds 1 and 2. */
static int main_swap(void *arg, void **result)
{
    (void)arg;
    (void)result;
    int a[2], b[2];
    ck_assert_int_eq(pipe(a), 0);
    ck_assert_int_eq(pipe(b), 0);
    int save1 = dup(1), save2 = dup(2);
    ck_assert_int_eq(dup2(a[1], 1), 1);
    ck_assert_int_eq(dup2(b[1], 2), 2);
    close(a[1]);
    close(b[1]);
    cio_process_opts_t o = {.stdout_mode = CIO_PROC_FD, .stdout_fd = 2,
                            .stderr_mode = CIO_PROC_FD, .stderr_fd = 1};
    cio_process_t *p = sh("echo out; echo err >&2", &o);
    ck_assert_int_eq(wait_code(p), 0);
    cio_process_free(p);
    dup2(save1, 1);
    dup2(save2, 2);
    close(save1);
    close(save2);
    char buf[16] = {0};
    ck_assert_int_eq(read(a[0], buf, sizeof buf), 4);
    ck_assert_str_eq(buf, "err\n");
    memset(buf, 0, sizeof buf);
    ck_assert_int_eq(read(b[0], buf, sizeof buf), 4);
    ck_assert_str_eq(buf, "out\n");
    close(a[0]);
    close(b[0]);
    return 0;
}

START_TEST(swap_fds) { RUN_MAIN(main_swap, NULL); }
END_TEST

static int main_cwd_env(void *arg, void **result)
{
    (void)arg;
    (void)result;
    int code;
    cio_process_opts_t o = {.cwd = "/tmp"};
    char *out = capture("pwd", &o, &code);
    ck_assert_str_eq(out, "/tmp\n");
    free(out);

    char *const env[] = {"FOO=bar baz", "ONLY=1", NULL};
    o = (cio_process_opts_t){.env = env};
    out = capture("echo \"$FOO\" \"$ONLY\" \"${HOME-unset}\"", &o, &code);
    ck_assert_str_eq(out, "bar baz 1 unset\n");
    free(out);

    ck_assert_int_eq(setenv("CIO_PROC_TEST", "inherited", 1), 0);
    o = (cio_process_opts_t){0};
    out = capture("echo $CIO_PROC_TEST", &o, &code);
    ck_assert_str_eq(out, "inherited\n");
    free(out);

    /* A new session: the child leads it. */
    o = (cio_process_opts_t){.flags = CIO_PROC_NEW_SESSION};
    out = capture("ps -o sid= -p $$ 2>/dev/null || cut -d' ' -f6 /proc/$$/stat; echo $$", &o,
                  &code);
    int sid = 0, pid = -1;
    ck_assert_int_eq(sscanf(out, "%d %d", &sid, &pid), 2);
    ck_assert_int_eq(sid, pid);
    free(out);
    o = (cio_process_opts_t){.flags = CIO_PROC_NEW_PGROUP};
    out = capture("cut -d' ' -f5 /proc/$$/stat; echo $$", &o, &code);
    int pg = 0;
    ck_assert_int_eq(sscanf(out, "%d %d", &pg, &pid), 2);
    ck_assert_int_eq(pg, pid);
    free(out);
    return 0;
}

START_TEST(cwd_env) { RUN_MAIN(main_cwd_env, NULL); }
END_TEST

static int main_shell_pipeline(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_process_opts_t o = {.stdin_mode = CIO_PROC_PIPE, .stdout_mode = CIO_PROC_PIPE};
    cio_process_t *p = sh("sort | tr a-z A-Z | head -n 2", &o);
    char *out;
    size_t len;
    const char *in = "pear\napple\nfig\n";
    ck_assert_int_eq(cio_process_communicate(p, in, strlen(in), &out, &len, NULL, NULL), 0);
    ck_assert_str_eq(out, "APPLE\nFIG\n");
    ck_assert_uint_eq(len, 10);
    ck_assert_int_eq(wait_code(p), 0);
    free(out);
    cio_process_free(p);
    return 0;
}

START_TEST(shell_pipeline) { RUN_MAIN(main_shell_pipeline, NULL); }
END_TEST

/* ------------------------------------------------------------------------ */
/* The pipe streams                                                           */
/* ------------------------------------------------------------------------ */

static int main_streams(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_process_opts_t o = {.stdin_mode = CIO_PROC_PIPE, .stdout_mode = CIO_PROC_PIPE};
    cio_process_t *p = sh("cat; echo end", &o);
    cio_stream_t *in = cio_process_stdin(p), *out = cio_process_stdout(p);
    ck_assert_ptr_nonnull(in);
    ck_assert_ptr_nonnull(out);
    ck_assert_ptr_null(cio_process_stderr(p));
    char buf[64];
    /* One way each. */
    ck_assert_int_eq(cio_stream_read(in, buf, sizeof buf), 0);
    ck_assert_int_eq(cio_stream_write(out, "x", 1), -EBADF);
    ck_assert_int_eq(cio_stream_write_eof(out), -EBADF);

    /* A line through cat and back. */
    ck_assert_int_eq(cio_stream_write(in, "hello\n", 6), 0);
    ck_assert_int_eq(cio_stream_drain(in), 0);
    ck_assert_int_eq(cio_stream_readline(out, buf, sizeof buf), 6);
    ck_assert_mem_eq(buf, "hello\n", 6);
    /* EOF on stdin: cat ends, the shell goes on. */
    ck_assert_int_eq(cio_stream_write(in, "tail", 4), 0);
    ck_assert_int_eq(cio_stream_write_eof(in), 0);
    ck_assert_int_eq(cio_stream_write(in, "x", 1), -ESHUTDOWN);
    char *all;
    size_t len;
    ck_assert_int_eq(cio_stream_read_all(out, &all, &len, 0), 0);
    ck_assert_str_eq(all, "tailend\n");
    free(all);
    ck_assert(cio_stream_at_eof(out));
    ck_assert_int_eq(wait_code(p), 0);
    /* Closing a process's stream does not free it: free does. */
    ck_assert_int_eq(cio_stream_close(out), 0);
    cio_stream_abort(in);
    cio_process_free(p);

    /* A closed stdin is EOF for the child too. */
    p = sh("cat; exit 9", &o);
    ck_assert_int_eq(cio_stream_close(cio_process_stdin(p)), 0);
    ck_assert_int_eq(cio_stream_read_all(cio_process_stdout(p), &all, &len, 0), 0);
    ck_assert_ptr_null(all);
    ck_assert_int_eq(wait_code(p), 9);
    cio_process_free(p);

    /* Writing to a child that is gone: -EPIPE, no SIGPIPE. */
    p = sh("exit 0", &o);
    ck_assert_int_eq(wait_code(p), 0);
    static char blob[256 * 1024];
    int rc = cio_stream_write(cio_process_stdin(p), blob, sizeof blob);
    if (rc == 0)
        rc = cio_stream_drain(cio_process_stdin(p));
    ck_assert_int_eq(rc, -EPIPE);
    cio_process_free(p);
    return 0;
}

START_TEST(streams) { RUN_MAIN(main_streams, NULL); }
END_TEST

/* ------------------------------------------------------------------------ */
/* Errors                                                                     */
/* ------------------------------------------------------------------------ */

static int main_errors(void *arg, void **result)
{
    (void)arg;
    (void)result;
    fdset before;
    fds_snap(&before);
    cio_process_t *p = NOT_SET;
    cio_process_opts_t all = {.stdin_mode = CIO_PROC_PIPE, .stdout_mode = CIO_PROC_PIPE,
                              .stderr_mode = CIO_PROC_PIPE};
    ck_assert_int_eq(cio_process_exec(&p, "cio-no-such-program", NULL, &all), -ENOENT);
    ck_assert_ptr_null(p);
    ck_assert_int_eq(cio_process_exec(&p, "/nonexistent/prog", NULL, NULL), -ENOENT);
    /* Not executable, and not a program. */
    char path[] = "/tmp/cio_proc_XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, "\1\2\3 not a program\n", 19), 19);
    close(fd);
    ck_assert_int_eq(cio_process_exec(&p, path, NULL, &all), -EACCES);
    ck_assert_int_eq(chmod(path, 0700), 0);
    ck_assert_int_eq(cio_process_exec(&p, path, NULL, &all), -ENOEXEC);
    unlink(path);
    cio_process_opts_t o = {.cwd = "/nonexistent-dir", .stdout_mode = CIO_PROC_PIPE};
    ck_assert_int_eq(cio_process_shell(&p, "true", &o), -ENOENT);
    ck_assert_ptr_null(p);

    /* Arguments. */
    ck_assert_int_eq(cio_process_exec(NULL, "true", NULL, NULL), -EINVAL);
    ck_assert_int_eq(cio_process_exec(&p, NULL, NULL, NULL), -EINVAL);
    ck_assert_int_eq(cio_process_shell(&p, NULL, NULL), -EINVAL);
    ck_assert_ptr_null(p);
    o = (cio_process_opts_t){.stdin_mode = CIO_PROC_STDOUT};
    ck_assert_int_eq(cio_process_exec(&p, "true", NULL, &o), -EINVAL);
    o = (cio_process_opts_t){.stdout_mode = CIO_PROC_STDOUT};
    ck_assert_int_eq(cio_process_exec(&p, "true", NULL, &o), -EINVAL);
    o = (cio_process_opts_t){.stderr_mode = 42};
    ck_assert_int_eq(cio_process_exec(&p, "true", NULL, &o), -EINVAL);
    o = (cio_process_opts_t){.stdin_mode = -1};
    ck_assert_int_eq(cio_process_exec(&p, "true", NULL, &o), -EINVAL);
    o = (cio_process_opts_t){.stdout_mode = CIO_PROC_FD, .stdout_fd = -1};
    ck_assert_int_eq(cio_process_exec(&p, "true", NULL, &o), -EINVAL);
    o = (cio_process_opts_t){.flags = 4};
    ck_assert_int_eq(cio_process_exec(&p, "true", NULL, &o), -EINVAL);
    o = (cio_process_opts_t){.reserved_ = {&o, NULL}};
    ck_assert_int_eq(cio_process_exec(&p, "true", NULL, &o), -EINVAL);
    cio_stream_opts_t so = {.low_water = 10, .high_water = 5};
    o = (cio_process_opts_t){.stdout_mode = CIO_PROC_PIPE, .stream = &so};
    ck_assert_int_eq(cio_process_exec(&p, "true", NULL, &o), -EINVAL);
    ck_assert_ptr_null(p);

    int code;
    ck_assert_int_eq(cio_process_returncode(NULL, &code), -EINVAL);
    ck_assert_int_eq(cio_process_wait(NULL, &code), -EINVAL);
    ck_assert_int_eq(cio_process_communicate(NULL, NULL, 0, NULL, NULL, NULL, NULL), -EINVAL);
    ck_assert_int_eq(cio_process_send_signal(NULL, SIGTERM), -EINVAL);
    ck_assert_int_eq(cio_process_pid(NULL), -EINVAL);
    ck_assert_ptr_null(cio_process_stdin(NULL));
    ck_assert_ptr_null(cio_process_stdout(NULL));
    ck_assert_ptr_null(cio_process_stderr(NULL));
    cio_process_free(NULL);

    p = sh("true", NULL);
    ck_assert_int_eq(cio_process_returncode(p, NULL), -EINVAL);
    ck_assert_int_eq(wait_code(p), 0);
    cio_process_free(p);
    fds_same(&before);
    ck_assert(no_children());
    return 0;
}

START_TEST(errors) { RUN_MAIN(main_errors, NULL); }
END_TEST

/* The status is lost when the kernel reaps the child itself (SIGCHLD
 * ignored), and input for a stdin already closed is refused. */
static int main_lost(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_process_opts_t o = {.stdin_mode = CIO_PROC_PIPE, .stdout_mode = CIO_PROC_PIPE};
    cio_process_t *p = sh("cat", &o);
    ck_assert_int_eq(cio_stream_close(cio_process_stdin(p)), 0);
    char *out = NOT_SET;
    ck_assert_int_eq(cio_process_communicate(p, "x", 1, &out, NULL, NULL, NULL), -ESHUTDOWN);
    ck_assert_ptr_null(out);
    ck_assert_int_eq(wait_code(p), 0);
    cio_process_free(p);

    signal(SIGCHLD, SIG_IGN);
    p = sh("exit 3", NULL);
    int code;
    ck_assert_int_eq(cio_process_wait(p, &code), -ECHILD);
    ck_assert_int_eq(cio_process_returncode(p, &code), -ECHILD);
    ck_assert_int_eq(cio_process_kill(p), 0);
    cio_process_free(p);
    signal(SIGCHLD, SIG_DFL);
    return 0;
}

START_TEST(lost) { RUN_MAIN(main_lost, NULL); }
END_TEST

static void cb_wait(void *arg)
{
    cio_process_t *p = arg;
    ck_assert_int_eq(cio_process_wait(p, NULL), -EPERM);
    ck_assert_int_eq(cio_process_communicate(p, NULL, 0, NULL, NULL, NULL, NULL), -EPERM);
}

static int main_eperm(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_process_t *p = sh("true", NULL);
    cio_handle_t h = CIO_HANDLE_INIT;
    ck_assert_int_eq(cio_call_soon(cio_get_running_loop(), &h, cb_wait, p), 0);
    settle();
    ck_assert_int_eq(wait_code(p), 0);
    cio_process_free(p);
    return 0;
}

START_TEST(eperm)
{
    cio_process_t *p = NOT_SET;
    ck_assert_int_eq(cio_process_exec(&p, "true", NULL, NULL), -EPERM);
    ck_assert_ptr_null(p);
    ck_assert_int_eq(cio_process_shell(&p, "true", NULL), -EPERM);
    RUN_MAIN(main_eperm, NULL);
    ck_assert(no_children());
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Allocation failure and descriptor exhaustion                               */
/* ------------------------------------------------------------------------ */

static int main_alloc(void *arg, void **result)
{
    (void)arg;
    (void)result;
    /* Warm the loop's caches (buffers, hooks, fd table) first. */
    cio_process_opts_t o = all_pipes();
    cio_process_t *p = sh("cat", &o);
    char *out;
    ck_assert_int_eq(cio_process_communicate(p, "w", 1, &out, NULL, NULL, NULL), 0);
    free(out);
    cio_process_free(p);
    settle();
    fdset before;
    fds_snap(&before);
    long base = cio_fail_alloc_live();
    int failures = 0;
    for (long n = 1;; n++) {
        cio_fail_alloc_arm(n, false);
        p = NOT_SET;
        int rc = cio_process_shell(&p, "cat", &o);
        cio_fail_alloc_disarm();
        if (rc == 0) {
            ck_assert_int_eq(cio_process_communicate(p, "abc", 3, &out, NULL, NULL, NULL), 0);
            ck_assert_str_eq(out, "abc");
            free(out);
            cio_process_free(p);
            break;
        }
        ck_assert_int_eq(rc, -ENOMEM);
        ck_assert_ptr_null(p);
        settle(); /* an aborted transport frees itself from the loop */
        ck_assert(no_children());
        fds_same(&before);
        ck_assert_msg(cio_fail_alloc_live() == base, "allocation %ld failed: %ld live, %ld before",
                      n, cio_fail_alloc_live(), base);
        failures++;
        ck_assert_int_le(n, 100);
    }
    ck_assert_int_gt(failures, 0);
    /* Each allocation of a communicate failing in turn (its helper tasks,
     * their stacks, cio_wait's nodes, the outputs): the call succeeds (the
     * failure was absorbed) or returns -ENOMEM with nothing handed out, and
     * the child is still there to be killed and reaped. Leaks are the leak
     * checker's (the loop's buffer cache makes a live count unreliable). */
    failures = 0;
    for (long n = 1;; n++) {
        p = sh("cat", &o);
        out = NOT_SET;
        cio_fail_alloc_arm(n, false);
        int rc = cio_process_communicate(p, "abc", 3, &out, NULL, NULL, NULL);
        cio_fail_alloc_disarm();
        bool injected = cio_fail_alloc_injected();
        if (rc == 0) {
            ck_assert_str_eq(out, "abc");
            free(out);
            cio_process_free(p);
            if (!injected)
                break;
            continue;
        }
        ck_assert_int_eq(rc, -ENOMEM);
        ck_assert_ptr_null(out);
        ck_assert_int_eq(cio_process_kill(p), 0);
        int code = 0;
        ck_assert_int_eq(cio_process_wait(p, &code), 0);
        ck_assert(code == -SIGKILL || code == 0);
        cio_process_free(p);
        failures++;
        ck_assert_int_le(n, 200);
    }
    ck_assert_int_gt(failures, 0);
    ck_assert(no_children());
    fds_same(&before);
    return 0;
}

START_TEST(alloc_failure)
{
    ck_assert_int_eq(cio_fail_alloc_install(), 0);
    RUN_MAIN(main_alloc, NULL);
}
END_TEST

static int main_emfile(void *arg, void **result)
{
    (void)arg;
    (void)result;
    /* Warm up, then lower the limit to just above the highest open fd. */
    cio_process_opts_t o = all_pipes();
    cio_process_t *p = sh("true", &o);
    ck_assert_int_eq(wait_code(p), 0);
    cio_process_free(p);
    fdset before;
    fds_snap(&before);
    int top = 0;
    for (int i = 0; i < MAX_FDS; i++)
        if (before.open[i])
            top = i;
    /* Fill the holes below the highest fd: then a limit of top + 1 + k
     * leaves exactly k descriptors free. */
    struct rlimit old;
    ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
    struct rlimit lim = {.rlim_cur = (rlim_t)(top + 1), .rlim_max = old.rlim_max};
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &lim), 0);
    int fillers[MAX_FDS], nfill = 0, f;
    while ((f = fcntl(0, F_DUPFD_CLOEXEC, 0)) >= 0)
        fillers[nfill++] = f;
    ck_assert_int_eq(errno, EMFILE);
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &old), 0);
    fds_snap(&before);
    int emfile = 0, ok = 0;
    for (int extra = 1; extra <= 12; extra++) {
        lim.rlim_cur = (rlim_t)(top + 1 + extra);
        ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &lim), 0);
        p = NOT_SET;
        int rc = cio_process_shell(&p, "exit 5", extra % 2 ? &o : NULL);
        ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &old), 0);
        if (rc == 0) {
            ok++;
            ck_assert_int_eq(wait_code(p), 5);
            cio_process_free(p);
        } else {
            ck_assert_int_eq(rc, -EMFILE);
            ck_assert_ptr_null(p);
            emfile++;
        }
        ck_assert(no_children());
        fds_same(&before);
    }
    ck_assert_int_gt(emfile, 0);
    ck_assert_int_gt(ok, 0);
    for (int i = 0; i < nfill; i++)
        close(fillers[i]);
    return 0;
}

START_TEST(emfile) { RUN_MAIN(main_emfile, NULL); }
END_TEST

/* ------------------------------------------------------------------------ */
/* Freeing while tasks are inside wait or communicate                         */
/* ------------------------------------------------------------------------ */

/* Waits, then frees p as soon as it is woken (before the other waiter ran). */
static int wait_then_free(void *arg, void **result)
{
    (void)result;
    waiter_arg *w = arg;
    w->rc = cio_process_wait(w->p, &w->code);
    cio_process_free(w->p);
    return 0;
}

/* Two waiters woken together, the first frees p: the second must not touch
 * freed memory (ASan) and gets -ESHUTDOWN. */
static int main_wait_free(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_process_t *p = sh("exec sleep 30", NULL);
    waiter_arg w1 = {.p = p, .rc = 1}, w2 = {.p = p, .rc = 1};
    cio_task_t *t1 = spawn(wait_then_free, &w1), *t2 = spawn(waiter_body, &w2);
    settle();
    ck_assert_int_eq(cio_process_kill(p), 0);
    ck_assert_int_eq(finish(t1), 0);
    ck_assert_int_eq(finish(t2), 0);
    ck_assert_int_eq(w1.rc, 0);
    ck_assert_int_eq(w1.code, -SIGKILL);
    ck_assert_int_eq(w2.rc, -ESHUTDOWN);
    ck_assert(no_children());
    /* Freed by another task while the child runs: the waiter is woken with
     * -ESHUTDOWN at once, and the loop still reaps the child. */
    p = sh("exec sleep 30", NULL);
    int pid = cio_process_pid(p);
    w2 = (waiter_arg){.p = p, .rc = 1};
    t2 = spawn(waiter_body, &w2);
    settle();
    cio_process_free(p);
    ck_assert_int_eq(finish(t2), 0);
    ck_assert_int_eq(w2.rc, -ESHUTDOWN);
    int pidfd = watch_exit(pid);
    ck_assert_int_eq(kill(pid, SIGKILL), 0);
    ck_assert_int_eq(cio_wait_fd(pidfd, CIO_READABLE), CIO_READABLE);
    close(pidfd);
    await_no_children();
    return 0;
}

START_TEST(wait_free) { RUN_MAIN(main_wait_free, NULL); }
END_TEST

typedef struct comm_arg {
    cio_process_t *p;
    const void *in;
    size_t len;
    int rc;
    char *out, *err;
    size_t out_len, err_len;
} comm_arg;

static int comm_body(void *arg, void **result)
{
    (void)result;
    comm_arg *a = arg;
    a->rc = cio_process_communicate(a->p, a->in, a->len, &a->out, &a->out_len, &a->err,
                                    &a->err_len);
    return 0;
}

/* Spawns a task running communicate with a and asserts that it is still
 * inside the call once the loop has settled. */
static cio_task_t *comm_started(comm_arg *a)
{
    cio_task_t *t = spawn(comm_body, a);
    settle();
    ck_assert_int_eq(a->rc, 1);
    return t;
}

/* A free while another task is inside communicate (feeding a child that
 * does not read, reading both outputs): communicate returns -ESHUTDOWN
 * promptly, nothing is touched after the free (ASan), the child gets EOF
 * on its pipes and is reaped. */
static int main_free_communicate(void *arg, void **result)
{
    (void)arg;
    (void)result;
    fdset before;
    fds_snap(&before);
    cio_process_opts_t o = all_pipes();
    cio_process_t *p = sh("sleep 0.3; cat >/dev/null", &o);
    size_t n = 4u << 20;
    char *in = filled(n, 'q');
    comm_arg a = {.p = p, .in = in, .len = n, .rc = 1};
    cio_task_t *t = comm_started(&a);
    double t0 = mono_now();
    cio_process_free(p);
    ck_assert_int_eq(finish(t), 0);
    ck_assert(mono_now() - t0 < 1.0);
    ck_assert_int_eq(a.rc, -ESHUTDOWN);
    ck_assert_ptr_null(a.out);
    ck_assert_ptr_null(a.err);
    free(in);
    await_no_children();
    fds_same(&before);
    return 0;
}

START_TEST(free_communicate) { RUN_MAIN(main_free_communicate, NULL); }
END_TEST

/* ------------------------------------------------------------------------ */
/* communicate refuses before it writes or reads anything                     */
/* ------------------------------------------------------------------------ */

static int read_line_body(void *arg, void **result)
{
    (void)result;
    comm_arg *a = arg;
    char line[64];
    a->rc = (int)cio_stream_readline(cio_process_stderr(a->p), line, sizeof line);
    return 0;
}

/* Checks that nothing was written to the stdin of `cat` (which copies it to
 * stdout) nor read from its stdout: feeds "x" by hand and expects "x". */
static void stdin_untouched(cio_process_t *p)
{
    cio_stream_t *in = cio_process_stdin(p);
    ck_assert_int_eq(cio_stream_write(in, "x", 1), 0);
    ck_assert_int_eq(cio_stream_write_eof(in), 0);
    char *out = NOT_SET;
    size_t len = 0;
    ck_assert_int_eq(cio_stream_read_all(cio_process_stdout(p), &out, &len, 0), 0);
    ck_assert_uint_eq(len, 1);
    ck_assert_str_eq(out, "x");
    free(out);
}

static int cancelled_comm_body(void *arg, void **result)
{
    (void)result;
    comm_arg *a = arg;
    cio_task_cancel(cio_current_task());
    a->rc = cio_process_communicate(a->p, a->in, a->len, &a->out, NULL, NULL, NULL);
    return 0;
}

static int main_comm_busy(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_process_opts_t o = all_pipes();
    /* A second communicate while one runs: -EBUSY, and the first's input
     * and output stay exactly its own. */
    cio_process_t *p = sh("cat", &o);
    size_t n = 1u << 20;
    char *in = filled(n, 'a');
    comm_arg a1 = {.p = p, .in = in, .len = n, .rc = 1};
    comm_arg a2 = {.p = p, .in = "INJECTED", .len = 8, .rc = 1};
    cio_task_t *t1 = spawn(comm_body, &a1);
    settle();
    cio_task_t *t2 = spawn(comm_body, &a2);
    ck_assert_int_eq(finish(t2), 0);
    ck_assert_int_eq(a2.rc, -EBUSY);
    ck_assert_ptr_null(a2.out);
    ck_assert_int_eq(finish(t1), 0);
    ck_assert_int_eq(a1.rc, 0);
    ck_assert_uint_eq(a1.out_len, n);
    ck_assert_int_eq(memcmp(a1.out, in, n), 0);
    free(a1.out);
    free(in);
    cio_process_free(p);

    /* Another task reads stderr: -EBUSY before a byte is written or read. */
    p = sh("cat; echo done >&2", &o);
    comm_arg r = {.p = p, .rc = 1};
    cio_task_t *tr = spawn(read_line_body, &r);
    settle();
    char *out = NOT_SET;
    ck_assert_int_eq(cio_process_communicate(p, "data", 4, &out, NULL, NULL, NULL), -EBUSY);
    ck_assert_ptr_null(out);
    stdin_untouched(p);
    ck_assert_int_eq(finish(tr), 0);
    ck_assert_int_eq(r.rc, 5);
    ck_assert_int_eq(wait_code(p), 0);
    cio_process_free(p);

    /* Entered already cancelled: -ECANCELED, nothing written. */
    p = sh("cat", &o);
    comm_arg c = {.p = p, .in = "data", .len = 4, .rc = 1};
    ck_assert_int_eq(finish(spawn(cancelled_comm_body, &c)), 0);
    ck_assert_int_eq(c.rc, -ECANCELED);
    ck_assert_ptr_null(c.out);
    stdin_untouched(p);
    ck_assert_int_eq(wait_code(p), 0);
    cio_process_free(p);

    /* stderr closed (stdout being the one cat writes): -ESHUTDOWN before
     * anything is written; stdin closed with input to give: -ESHUTDOWN. */
    p = sh("cat", &o);
    ck_assert_int_eq(cio_stream_close(cio_process_stderr(p)), 0);
    ck_assert_int_eq(cio_process_communicate(p, "data", 4, &out, NULL, NULL, NULL),
                     -ESHUTDOWN);
    stdin_untouched(p);
    ck_assert_int_eq(cio_stream_close(cio_process_stdin(p)), 0);
    ck_assert_int_eq(cio_process_communicate(p, "data", 4, &out, NULL, NULL, NULL),
                     -ESHUTDOWN);
    ck_assert_int_eq(wait_code(p), 0);
    cio_process_free(p);
    ck_assert(no_children());
    return 0;
}

START_TEST(comm_busy) { RUN_MAIN(main_comm_busy, NULL); }
END_TEST

/* ------------------------------------------------------------------------ */
/* communicate with small stream limits, and a failing writer                 */
/* ------------------------------------------------------------------------ */

static void comm_limits(size_t high, size_t limit)
{
    cio_stream_opts_t so = {.high_water = high, .write_limit = limit};
    cio_process_opts_t o = {.stdin_mode = CIO_PROC_PIPE, .stdout_mode = CIO_PROC_PIPE,
                            .stream = &so};
    cio_process_t *p = sh("cat", &o);
    size_t n = 1u << 20;
    char *in = malloc(n);
    ck_assert_ptr_nonnull(in);
    for (size_t i = 0; i < n; i++)
        in[i] = (char)('a' + i % 26);
    char *out = NOT_SET;
    size_t len = 0;
    ck_assert_int_eq(cio_process_communicate(p, in, n, &out, &len, NULL, NULL), 0);
    ck_assert_uint_eq(len, n);
    ck_assert_int_eq(memcmp(out, in, n), 0);
    free(out);
    free(in);
    cio_process_free(p);
}

static int abort_stdin_body(void *arg, void **result)
{
    (void)result;
    cio_stream_abort(cio_process_stdin(arg));
    return 0;
}

static int main_comm_limits(void *arg, void **result)
{
    (void)arg;
    (void)result;
    comm_limits(16384, 65536);  /* slices capped by write_limit */
    comm_limits(16384, 16384);  /* high_water = write_limit: flushes first */
    /* The writer fails (stdin aborted by another task) while the child,
     * which never reads, keeps stdout open: communicate returns the error
     * promptly instead of reading stdout until the child exits. */
    cio_process_opts_t o = {.stdin_mode = CIO_PROC_PIPE, .stdout_mode = CIO_PROC_PIPE};
    cio_process_t *p = sh("exec sleep 30", &o);
    size_t n = 1u << 20;
    char *in = filled(n, 0);
    comm_arg a = {.p = p, .in = in, .len = n, .rc = 1};
    cio_task_t *t = comm_started(&a);
    double t0 = mono_now();
    ck_assert_int_eq(finish(spawn(abort_stdin_body, p)), 0);
    ck_assert_int_eq(finish(t), 0);
    ck_assert(mono_now() - t0 < HANG_BOUND_S);
    ck_assert_int_eq(a.rc, -ESHUTDOWN);
    ck_assert_ptr_null(a.out);
    ck_assert_int_eq(cio_process_kill(p), 0);
    ck_assert_int_eq(wait_code(p), -SIGKILL);
    cio_process_free(p);
    free(in);
    ck_assert(no_children());
    return 0;
}

START_TEST(comm_limits_test) { RUN_MAIN(main_comm_limits, NULL); }
END_TEST

/* ------------------------------------------------------------------------ */
/* Fork with a fallback record still queued; reaping without P_PIDFD          */
/* ------------------------------------------------------------------------ */

static cio_process_t *forked_p;

/* Spawns a child that exits (3) once the pipe of fd *arg gets EOF. */
static int spawn_exit3(void *arg, void **result)
{
    (void)result;
    cio_process_opts_t o = {.stdin_mode = CIO_PROC_FD, .stdin_fd = *(int *)arg};
    forked_p = sh("read x; exit 3", &o);
    return 0;
}

static int nap_code(void *arg, void **result)
{
    (void)result;
    ck_assert_int_eq(cio_sleep(0.05), 0);
    int code = 99;
    *(int *)arg = cio_process_returncode(forked_p, &code);
    return code;
}

/* No-pidfd path: the child exits while the loop is stopped, so its thread
 * posts its record; a fork then must not free that queued record. */
START_TEST(fork_fallback)
{
#ifdef UNDER_TSAN
    return; /* see UNDER_TSAN */
#endif
    cio__process_no_pidfd = 1;
    cio_loop_t *loop = NULL;
    ck_assert_int_eq(cio_loop_new(&loop), 0);
    cio_task_t *t = NULL;
    int ctl[2];
    ck_assert_int_eq(pipe2(ctl, O_CLOEXEC), 0);
    ck_assert_int_eq(cio_spawn_ex(&t, loop, spawn_exit3, &ctl[0], NULL), 0);
    ck_assert_int_eq(cio_loop_run_until_complete(loop, t, NULL), 0);
    cio_future_release(t);
    close(ctl[0]);
    close(ctl[1]); /* the child exits now, while the loop is stopped */
    /* Wait (without reaping) until the child is a zombie, then give its
     * thread time to post. No event of ours tells when it has posted. */
    siginfo_t si;
    int r;
    while ((r = waitid(P_PID, (id_t)cio_process_pid(forked_p), &si, WEXITED | WNOWAIT)) < 0 &&
           errno == EINTR)
        ;
    ck_assert_msg(r == 0, "waitid: %s", strerror(errno));
    usleep(100000);
    fflush(NULL);
    pid_t k = fork();
    ck_assert_int_ge(k, 0);
    if (k == 0) {
        int rc = 1, ok = cio_loop_fork(loop) == 0;
        ok = ok && cio_spawn_ex(&t, loop, nap_code, &rc, NULL) == 0;
        ok = ok && cio_loop_run_until_complete(loop, t, NULL) == 99 && rc == -ECHILD;
        cio_future_release(t);
        cio_process_free(forked_p);
        cio_loop_shutdown(loop);
        cio_loop_free(loop);
        _exit(ok ? 0 : 1);
    }
    int st;
    ck_assert_int_eq(waitpid(k, &st, 0), k);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    int rc = 1;
    ck_assert_int_eq(cio_spawn_ex(&t, loop, nap_code, &rc, NULL), 0);
    ck_assert_int_eq(cio_loop_run_until_complete(loop, t, NULL), 3);
    cio_future_release(t);
    ck_assert_int_eq(rc, 0);
    cio_process_free(forked_p);
    cio_loop_shutdown(loop);
    cio_loop_free(loop);
    ck_assert(no_children());
}
END_TEST

/* Linux 5.3 has pidfd_open but not waitid(P_PIDFD): reaping by pid. */
START_TEST(no_pidfd_wait)
{
    cio__process_no_pidfd_wait = 1;
    RUN_MAIN(main_kill_waiting, NULL);
    outlive(false);
}
END_TEST

/* After the loop's close, a held p still signals its child (through a
 * pidfd of its own) while the hand-off thread waits for it. */
START_TEST(signal_after_close)
{
    RUN_MAIN(main_outlive, "keep");
    ck_assert_int_eq(cio_process_kill(kept), 0);
    exited_and_reaped();
    ck_assert_int_eq(cio_process_kill(kept), 0); /* reaped: nothing, 0 */
    cio_process_free(kept);
    close(ctl_w);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Option errors; a parent with 0..2 closed                                   */
/* ------------------------------------------------------------------------ */

static int main_opt_errors(void *arg, void **result)
{
    (void)arg;
    (void)result;
    fdset before;
    fds_snap(&before);
    cio_process_t *p = NOT_SET;
    cio_process_opts_t o = {.flags = CIO_PROC_NEW_SESSION | CIO_PROC_NEW_PGROUP};
    ck_assert_int_eq(cio_process_shell(&p, "true", &o), -EINVAL);
    ck_assert_ptr_null(p);
    /* A closed descriptor (high, so that the spawn's own pipes cannot
     * reuse its number): -EBADF. */
    int fd = 1000;
    ck_assert_int_eq(fcntl(fd, F_GETFD), -1);
    o = (cio_process_opts_t){.stdin_mode = CIO_PROC_PIPE, .stderr_mode = CIO_PROC_FD,
                             .stderr_fd = fd};
    p = NOT_SET;
    ck_assert_int_eq(cio_process_shell(&p, "true", &o), -EBADF);
    ck_assert_ptr_null(p);
    fds_same(&before);
    ck_assert(no_children());
    return 0;
}

START_TEST(opt_errors) { RUN_MAIN(main_opt_errors, NULL); }
END_TEST

static int main_low_fds(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_process_opts_t o = {.stdin_mode = CIO_PROC_PIPE, .stdout_mode = CIO_PROC_PIPE,
                            .stderr_mode = CIO_PROC_STDOUT};
    cio_process_t *p = sh("cat; echo err >&2", &o);
    for (int i = 0; i < 2; i++) {
        cio_stream_t *s = i ? cio_process_stdout(p) : cio_process_stdin(p);
        ck_assert_int_ge(cio_transport_fd(cio_stream_transport(s)), 3);
    }
    char *out = NOT_SET;
    size_t len = 0;
    ck_assert_int_eq(cio_process_communicate(p, "in\n", 3, &out, &len, NULL, NULL), 0);
    /* The child's stdout and stderr are both the stdout pipe. */
    ck_assert_str_eq(out, "in\nerr\n");
    free(out);
    ck_assert_int_eq(cio_process_returncode(p, &(int){0}), 0);
    cio_process_free(p);
    return 0;
}

/* The parent runs with 0, 1 and 2 closed: the pipe ends cio makes land on
 * them unless moved, and the child's plan (stderr = stdout) must still
 * give it the right descriptors. */
START_TEST(low_fds)
{
    int save[3];
    for (int i = 0; i < 3; i++) {
        save[i] = fcntl(i, F_DUPFD_CLOEXEC, 10);
        ck_assert_int_ge(save[i], 10);
    }
    for (int i = 0; i < 3; i++)
        close(i);
    cio_loop_t *loop = NULL;
    int rc = cio_loop_new(&loop);
    cio_task_t *t = NULL;
    if (!rc)
        rc = cio_spawn_ex(&t, loop, main_low_fds, NULL, NULL);
    if (!rc)
        rc = cio_loop_run_until_complete(loop, t, NULL);
    cio_future_release(t);
    cio_loop_free(loop);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(dup2(save[i], i), i);
        close(save[i]);
    }
    ck_assert_int_eq(rc, 0);
    ck_assert(no_children());
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("process");
    TCase *tc = add_tcase(s, "communicate", 60);
    tcase_add_test(tc, communicate_big);
    tcase_add_test(tc, communicate_unread);
    tcase_add_test(tc, communicate_cancel);
    tc = add_tcase(s, "wait", TEST_TIMEOUT);
    tcase_add_test(tc, kill_waiting);
    tcase_add_test(tc, kill_waiting_fallback);
    tcase_add_test(tc, cancel_wait);
    tcase_add_test(tc, returncodes);
    tcase_add_test(tc, clean_signals);
    tc = add_tcase(s, "reaping", 60);
    tcase_add_test(tc, many);
    tcase_add_test(tc, many_fallback);
    tcase_add_test(tc, free_early);
    tcase_add_test(tc, free_early_fallback);
    tcase_add_test(tc, outlive_loop);
    tcase_add_test(tc, outlive_loop_kept);
    tcase_add_test(tc, outlive_loop_fallback);
    tc = add_tcase(s, "io", TEST_TIMEOUT);
    tcase_add_test(tc, redirect);
    tcase_add_test(tc, swap_fds);
    tcase_add_test(tc, cwd_env);
    tcase_add_test(tc, shell_pipeline);
    tcase_add_test(tc, streams);
    tc = add_tcase(s, "errors", TEST_TIMEOUT);
    tcase_add_test(tc, errors);
    tcase_add_test(tc, lost);
    tcase_add_test(tc, eperm);
    tcase_add_test(tc, alloc_failure);
    tcase_add_test(tc, emfile);
    tcase_add_test(tc, opt_errors);
    tcase_add_test(tc, low_fds);
    tc = add_tcase(s, "review fixes", TEST_TIMEOUT);
    tcase_add_test(tc, wait_free);
    tcase_add_test(tc, free_communicate);
    tcase_add_test(tc, comm_busy);
    tcase_add_test(tc, comm_limits_test);
    tcase_add_test(tc, fork_fallback);
    tcase_add_test(tc, no_pidfd_wait);
    tcase_add_test(tc, signal_after_close);
    return s;
}

CIO_TEST_MAIN(suite)
