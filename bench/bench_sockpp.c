/*
 * Socket ping-pong through cio's I/O operation layer. Two tasks of one loop
 * pass a 64-byte message back and forth over an AF_UNIX SOCK_STREAM
 * socketpair (non-blocking, close-on-exec) with cio_sock_send and
 * cio_sock_recv, N = 1,000,000 round trips; each side reads until it has the
 * whole 64 bytes. ns_per_round_trip = wall / N, timed by the pinger from its
 * first send to its last complete reply.
 *
 * Every message is checked: round i carries i in its first 8 bytes and the
 * byte (i + k) at offset k; the ponger checks it and sends back its bitwise
 * complement, which the pinger checks in turn.
 *
 *   bench_sockpp [-n N] [--backend epoll|uring|both]
 *
 * The default runs both backends, one after the other, each printing its
 * own RESULT line. A loop asked for io_uring that fell back to epoll (kernel
 * or seccomp refusing io_uring) is reported as a failure, never as an
 * io_uring figure.
 */
#include "bench_common.h"
#include "sockpp_msg.h"

#include <cio.h>

#include <errno.h>
#include <stdint.h>
#include <sys/socket.h>
#include <unistd.h>

#define DEFAULT_N 1000000L

static long n_rounds = DEFAULT_N;

typedef struct pp_side {
    int fd;
    long rounds;     /* completed round trips (pinger) / echoes (ponger) */
    int64_t t0, t1;  /* pinger only */
    const char *err; /* what went wrong, NULL if nothing */
} pp_side;


/* Sends all MSG bytes with cio_sock_send; 0 or a negative errno. */
static int send_msg(int fd, const unsigned char *m)
{
    size_t done = 0;
    while (done < MSG) {
        ssize_t r = cio_sock_send(fd, m + done, MSG - done, 0);
        if (r < 0)
            return (int)r;
        done += (size_t)r;
    }
    return 0;
}

/* Receives exactly MSG bytes with cio_sock_recv; 0, -EPIPE at end of
 * stream, or a negative errno. */
static int recv_msg(int fd, unsigned char *m)
{
    size_t done = 0;
    while (done < MSG) {
        ssize_t r = cio_sock_recv(fd, m + done, MSG - done, 0);
        if (r < 0)
            return (int)r;
        if (r == 0)
            return -EPIPE;
        done += (size_t)r;
    }
    return 0;
}

/* On failure, shut the socket so that the other side sees end of stream
 * and stops too instead of waiting forever. */
static int fail(pp_side *s, const char *what, int rc)
{
    s->err = what;
    shutdown(s->fd, SHUT_RDWR);
    return rc < 0 ? rc : -EPROTO;
}

static int pinger(void *arg, void **result)
{
    (void)result;
    pp_side *s = arg;
    unsigned char out[MSG], in[MSG];
    int rc;
    s->t0 = bench_now_ns();
    for (long i = 0; i < n_rounds; i++) {
        fill(out, (uint64_t)i);
        if ((rc = send_msg(s->fd, out)) < 0)
            return fail(s, "pinger send", rc);
        if ((rc = recv_msg(s->fd, in)) < 0)
            return fail(s, "pinger recv", rc);
        if (!check(in, (uint64_t)i, 1))
            return fail(s, "pinger: wrong reply", -EPROTO);
        s->rounds++;
    }
    s->t1 = bench_now_ns();
    return 0;
}

static int ponger(void *arg, void **result)
{
    (void)result;
    pp_side *s = arg;
    unsigned char buf[MSG];
    int rc;
    for (long i = 0; i < n_rounds; i++) {
        if ((rc = recv_msg(s->fd, buf)) < 0)
            return fail(s, "ponger recv", rc);
        if (!check(buf, (uint64_t)i, 0))
            return fail(s, "ponger: wrong message", -EPROTO);
        for (int k = 0; k < MSG; k++)
            buf[k] = (unsigned char)~buf[k];
        if ((rc = send_msg(s->fd, buf)) < 0)
            return fail(s, "ponger send", rc);
        s->rounds++;
    }
    return 0;
}

typedef struct pp_run {
    pp_side a, b;
} pp_run;

static int pp_main(void *arg, void **result)
{
    (void)result;
    pp_run *r = arg;
    cio_task_t *t[2];
    cio_spawn_named(&t[0], "ponger", ponger, &r->b);
    cio_spawn_named(&t[1], "pinger", pinger, &r->a); /* *out is NULL on failure */
    if (!t[0] || !t[1]) {
        if (t[0]) {
            cio_task_cancel(t[0]);
            cio_future_release(t[0]);
        }
        fprintf(stderr, "sockpp: spawn failed\n");
        return -ENOMEM;
    }
    int st[2] = {0, 0};
    int rc = cio_gather(t, 2, NULL, st, CIO_GATHER_ALL);
    cio_future_release(t[0]);
    cio_future_release(t[1]);
    if (rc < 0)
        return rc;
    return st[1] < 0 ? st[1] : st[0];
}

/* One measurement on one backend; 0 or 1 (failed). */
static int bench_backend(cio_backend_t which)
{
    const char *want = which == CIO_BACKEND_URING ? "io_uring" : "epoll";
    cio_loop_opts_t o = {.backend = which};
    cio_loop_t *loop;
    int rc = cio_loop_new_ex(&loop, &o);
    if (rc < 0) {
        fprintf(stderr, "sockpp %s: cio_loop_new_ex: %s\n", want, cio_strerror(rc));
        return 1;
    }
    const char *got = cio_loop_backend(loop);
    if (!got || strcmp(got, want) != 0) {
        fprintf(stderr, "sockpp %s: the loop runs on %s (io_uring refused by the kernel?)\n",
                want, got ? got : "?");
        cio_loop_free(loop);
        return 1;
    }

    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0) {
        perror("sockpp: socketpair");
        cio_loop_free(loop);
        return 1;
    }
    pp_run run = {.a = {.fd = sv[0]}, .b = {.fd = sv[1]}};
    cio_task_t *m;
    rc = cio_spawn_ex(&m, loop, pp_main, &run, NULL);
    if (rc == 0)
        rc = cio_loop_run_until_complete(loop, m, NULL);
    cio_future_release(m); /* NULL when the spawn failed: a no-op */
    cio_loop_shutdown(loop);
    cio_loop_free(loop);
    close(sv[0]);
    close(sv[1]);

    if (rc < 0 || run.a.err || run.b.err) {
        fprintf(stderr, "sockpp %s: %s%s%s (%s); %ld/%ld round trips\n", want,
                run.a.err ? run.a.err : "", run.a.err && run.b.err ? ", " : "",
                run.b.err ? run.b.err : (run.a.err ? "" : "failed"), cio_strerror(rc),
                run.a.rounds, n_rounds);
        return 1;
    }
    if (run.a.rounds != n_rounds || run.b.rounds != n_rounds) {
        fprintf(stderr, "sockpp %s: %ld/%ld round trips, expected %ld\n", want, run.a.rounds,
                run.b.rounds, n_rounds);
        return 1;
    }
    printf("RESULT bench=sockpp variant=%s round_trips=%ld ns_per_round_trip=%.1f\n", want,
           run.a.rounds, (double)(run.a.t1 - run.a.t0) / (double)run.a.rounds);
    fflush(stdout);
    return 0;
}

static int usage(const char *argv0)
{
    fprintf(stderr, "usage: %s [-n N] [--backend epoll|uring|both]\n", argv0);
    return 2;
}

int main(int argc, char **argv)
{
    int epoll = 1, uring = 1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-n") == 0 && i + 1 < argc) {
            char *end;
            n_rounds = strtol(argv[++i], &end, 10);
            if (*end || n_rounds < 1)
                return usage(argv[0]);
        } else if (strcmp(argv[i], "--backend") == 0 && i + 1 < argc) {
            const char *b = argv[++i];
            if (strcmp(b, "epoll") == 0) {
                epoll = 1, uring = 0;
            } else if (strcmp(b, "uring") == 0 || strcmp(b, "io_uring") == 0) {
                epoll = 0, uring = 1;
            } else if (strcmp(b, "both") == 0) {
                epoll = 1, uring = 1;
            } else {
                return usage(argv[0]);
            }
        } else {
            return usage(argv[0]);
        }
    }
    int failed = 0;
    if (epoll)
        failed |= bench_backend(CIO_BACKEND_EPOLL);
    if (uring)
        failed |= bench_backend(CIO_BACKEND_URING);
    return failed;
}
