/*
 * What the cio network servers of bench/ share (bench_echo_server,
 * bench_http_server: shared BENCH.md workloads 5 and 6): their command line,
 * the loop on the backend asked for, the server in streams or protocol
 * form, and the stop on SIGTERM/SIGINT or after -t SECONDS.
 *
 *   PROGRAM [-p PORT] [--backend epoll|uring] [--protocol] [-t SECONDS]
 *
 * The stop: SIGTERM and SIGINT are blocked (before any thread exists, so the
 * thread pool's threads inherit the mask) and read from a signalfd that the
 * main task waits on with cio_wait_fd, inside a deadline scope when -t is
 * given. Then the server stops accepting, its connections are closed
 * (flushing, then aborted after 2 s) and the program prints its counts.
 */
#ifndef CIO_BENCH_NET_H
#define CIO_BENCH_NET_H

#include "bench_common.h"

#include <cio.h>

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/signalfd.h>
#include <unistd.h>

typedef struct net_opts {
    int port;
    cio_backend_t backend;
    bool protocol;  /* transports and protocols instead of streams */
    double seconds; /* 0: until a signal */
    unsigned loops; /* --loops N: N loops on N threads (cio_multi), SO_REUSEPORT */
} net_opts_t;

/* A server program: its name for messages, the two forms of its connection
 * code, and their argument (the program's counters). */
typedef struct net_app {
    const char *name;
    net_opts_t o;
    cio_stream_handler_fn handler;
    cio_protocol_factory_fn factory;
    void *arg;
    int sfd;       /* the signalfd */
    double served; /* seconds between listening and the stop */
} net_app_t;

/* Errors that are not the connection's fault: our own stop of the server
 * (-ESHUTDOWN) or of the loop (-ECANCELED). Anything else ends a
 * connection abnormally and is counted. */
static inline bool net_is_error(long rc)
{
    return rc < 0 && rc != -ESHUTDOWN && rc != -ECANCELED;
}

/* How a connection ended: resets (-ECONNRESET, -EPIPE) are counted apart
 * from other errors, because load generators cause them by design (wrk
 * closes its sockets with responses still unread when its time is up). */
typedef struct net_ends {
    uint64_t resets, errors;
} net_ends_t;

static inline void net_count_end(net_ends_t *e, long rc)
{
    if (rc == -ECONNRESET || rc == -EPIPE)
        e->resets++;
    else if (net_is_error(rc))
        e->errors++;
}

static inline int net_usage(const net_app_t *a)
{
    fprintf(stderr,
            "usage: %s [-p PORT] [--backend epoll|uring] [--protocol] [-t SECONDS] [--loops N]\n",
            a->name);
    return 2;
}

/* Parses the command line into a->o (defaults already there); false on a
 * bad argument. */
static inline bool net_parse(net_app_t *a, int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        char *end;
        if (strcmp(s, "--protocol") == 0) {
            a->o.protocol = true;
            continue;
        }
        if (!v)
            return false;
        i++;
        if (strcmp(s, "-p") == 0) {
            long p = strtol(v, &end, 10);
            if (*end || p < 0 || p > 65535)
                return false;
            a->o.port = (int)p;
        } else if (strcmp(s, "-t") == 0) {
            a->o.seconds = strtod(v, &end);
            if (*end || !(a->o.seconds >= 0))
                return false;
        } else if (strcmp(s, "--loops") == 0) {
            long n = strtol(v, &end, 10);
            if (*end || n < 1 || n > 64)
                return false;
            a->o.loops = (unsigned)n;
        } else if (strcmp(s, "--backend") == 0) {
            if (strcmp(v, "epoll") == 0)
                a->o.backend = CIO_BACKEND_EPOLL;
            else if (strcmp(v, "uring") == 0 || strcmp(v, "io_uring") == 0)
                a->o.backend = CIO_BACKEND_URING;
            else
                return false;
        } else {
            return false;
        }
    }
    return true;
}

static inline int net_signal_fd(void)
{
    sigset_t m;
    sigemptyset(&m);
    sigaddset(&m, SIGTERM);
    sigaddset(&m, SIGINT);
    if (sigprocmask(SIG_BLOCK, &m, NULL) < 0)
        return -1;
    return signalfd(-1, &m, SFD_NONBLOCK | SFD_CLOEXEC);
}

/* Await point: returns on SIGTERM/SIGINT, or after `seconds` (0: never). */
static inline void net_wait_stop(int sfd, double seconds)
{
    cio_scope_t sc;
    if (cio_scope_enter(&sc, seconds > 0 ? seconds : INFINITY, 0) < 0)
        return;
    int rc = cio_wait_fd(sfd, CIO_READABLE);
    cio_scope_exit(&sc);
    if (rc < 0 && rc != -ETIMEDOUT && rc != -ECANCELED)
        fprintf(stderr, "bench: waiting for a signal: %s\n", cio_strerror(rc));
}

/* Await point: stops accepting, closes the connections (flushing; aborted
 * when that takes more than 2 s) and frees the server. */
static inline void net_stop_server(cio_server_t *srv)
{
    cio_server_close(srv);
    cio_server_close_clients(srv);
    if (cio_server_wait_closed(srv, 2.0) < 0) {
        cio_server_abort_clients(srv);
        cio_server_wait_closed(srv, 2.0);
    }
    int rc = cio_server_free(srv);
    if (rc < 0)
        fprintf(stderr, "bench: cio_server_free: %s\n", cio_strerror(rc));
}

/* The main task: serves until the stop, then closes everything. */
static inline int net_main_task(void *arg, void **result)
{
    (void)result;
    net_app_t *a = arg;
    cio_server_opts_t so = {.backlog = 1024};
    cio_server_t *srv;
    int rc = a->o.protocol
                 ? cio_create_server(&srv, "127.0.0.1", a->o.port, a->factory, a->arg, &so)
                 : cio_start_server(&srv, "127.0.0.1", a->o.port, a->handler, a->arg, &so);
    if (rc < 0) {
        fprintf(stderr, "%s: listening on 127.0.0.1:%d: %s\n", a->name, a->o.port,
                cio_strerror(rc));
        return rc;
    }
    fprintf(stderr, "%s: listening on 127.0.0.1:%d (%s, %s; pid %d)\n", a->name, a->o.port,
            a->o.protocol ? "protocol" : "streams", cio_loop_backend(cio_get_running_loop()),
            (int)getpid());
    int64_t t0 = bench_now_ns();
    net_wait_stop(a->sfd, a->o.seconds);
    a->served = (double)(bench_now_ns() - t0) / 1e9;
    net_stop_server(srv);
    return 0;
}

/* --loops N: the main task of each loop serves the port with SO_REUSEPORT
 * (the kernel spreads the connections) until cio_multi_stop cancels it. */
static inline int net_multi_task(void *arg, void **result)
{
    (void)result;
    net_app_t *a = arg;
    cio_server_opts_t so = {.backlog = 1024, .reuse_port = true};
    cio_server_t *srv;
    int rc = a->o.protocol
                 ? cio_create_server(&srv, "127.0.0.1", a->o.port, a->factory, a->arg, &so)
                 : cio_start_server(&srv, "127.0.0.1", a->o.port, a->handler, a->arg, &so);
    if (rc < 0) {
        fprintf(stderr, "%s: loop %d: listening: %s\n", a->name, cio_multi_index(),
                cio_strerror(rc));
        return rc;
    }
    rc = cio_server_serve_forever(srv); /* -ECANCELED at the stop */
    cio_scope_t sc; /* the clean-up awaits, shielded from that cancel */
    cio_scope_enter(&sc, INFINITY, CIO_SCOPE_SHIELD);
    net_stop_server(srv);
    cio_scope_exit(&sc);
    return rc == -ECANCELED ? 0 : rc;
}

/* Runs N loops on N threads (the backend through CIO_BACKEND, which every
 * new loop reads) until the signal or -t. The counters of the connection
 * code are shared without locks: with several loops they are approximate. */
static inline int net_run_multi(net_app_t *a)
{
    if (a->o.backend == CIO_BACKEND_URING)
        setenv("CIO_BACKEND", "uring", 1);
    cio_multi_t *m;
    int rc = cio_multi_start(&m, a->o.loops, net_multi_task, a);
    if (rc < 0) {
        fprintf(stderr, "%s: cio_multi_start: %s\n", a->name, cio_strerror(rc));
        return 1;
    }
    fprintf(stderr, "%s: %u loops on 127.0.0.1:%d (pid %d)\n", a->name, a->o.loops, a->o.port,
            (int)getpid());
    int64_t t0 = bench_now_ns();
    struct timespec left = {.tv_sec = (time_t)a->o.seconds,
                            .tv_nsec = (long)((a->o.seconds - (double)(time_t)a->o.seconds) * 1e9)};
    sigset_t m2;
    sigemptyset(&m2);
    sigaddset(&m2, SIGTERM);
    sigaddset(&m2, SIGINT);
    sigtimedwait(&m2, NULL, a->o.seconds > 0 ? &left : NULL);
    a->served = (double)(bench_now_ns() - t0) / 1e9;
    rc = cio_multi_stop(m);
    close(a->sfd);
    return rc < 0 ? 1 : 0;
}

/* Runs the server on a loop of the backend asked for. A loop asked for
 * io_uring that fell back to epoll is a failure, never an io_uring figure.
 * Returns the exit status. */
static inline int net_run(net_app_t *a)
{
    a->sfd = net_signal_fd();
    if (a->sfd < 0) {
        perror("bench: signalfd");
        return 1;
    }
    if (a->o.loops > 1)
        return net_run_multi(a);
    cio_loop_opts_t lo = {.backend = a->o.backend};
    cio_loop_t *loop;
    int rc = cio_loop_new_ex(&loop, &lo);
    if (rc < 0) {
        fprintf(stderr, "%s: cio_loop_new_ex: %s\n", a->name, cio_strerror(rc));
        return 1;
    }
    const char *got = cio_loop_backend(loop);
    if (a->o.backend == CIO_BACKEND_URING && (!got || strcmp(got, "io_uring") != 0)) {
        fprintf(stderr, "%s: the loop runs on %s, not io_uring (refused by the kernel?)\n",
                a->name, got ? got : "?");
        cio_loop_free(loop);
        return 1;
    }
    cio_task_t *m;
    rc = cio_spawn_ex(&m, loop, net_main_task, a, NULL);
    if (rc == 0)
        rc = cio_loop_run_until_complete(loop, m, NULL);
    cio_future_release(m); /* NULL when the spawn failed: a no-op */
    cio_loop_shutdown(loop);
    cio_loop_free(loop);
    close(a->sfd);
    return rc < 0 ? 1 : 0;
}

#endif /* CIO_BENCH_NET_H */
