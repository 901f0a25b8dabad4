/*
 * Baseline for bench_sockpp, plain C without cio: two threads pass a 64-byte
 * message back and forth over a blocking AF_UNIX SOCK_STREAM socketpair with
 * blocking read(2)/write(2), N = 1,000,000 round trips; each side reads until
 * it has the whole 64 bytes. ns_per_round_trip = wall / N, timed by the
 * pinger thread from its first write to its last complete reply (thread
 * creation is not timed). Messages are checked as in bench_sockpp.
 *
 *   bench_sockpp_threads [-n N]
 *
 * Every hand-off is a kernel wake-up of the other thread. Where both threads
 * may run (on a 2-core machine, unpinned) that is a cross-CPU wake-up; pinned
 * to one CPU (taskset -c 0, as bench/run.sh does) both threads share that
 * core and each hand-off is a context switch on it. The RESULT line reports
 * how many CPUs the process may use (cpus=) and a note on stderr says so.
 */
#include "bench_common.h"
#include "sockpp_msg.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <sys/socket.h>
#include <unistd.h>

#define DEFAULT_N 1000000L

static long n_rounds = DEFAULT_N;

typedef struct pp_side {
    int fd;
    long rounds;
    int64_t t0, t1;
    const char *err;
} pp_side;


/* Writes all MSG bytes; 0 or -errno. */
static int write_msg(int fd, const unsigned char *m)
{
    size_t done = 0;
    while (done < MSG) {
        ssize_t r = write(fd, m + done, MSG - done);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        done += (size_t)r;
    }
    return 0;
}

/* Reads exactly MSG bytes; 0, -EPIPE at end of stream, or -errno. */
static int read_msg(int fd, unsigned char *m)
{
    size_t done = 0;
    while (done < MSG) {
        ssize_t r = read(fd, m + done, MSG - done);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (r == 0)
            return -EPIPE;
        done += (size_t)r;
    }
    return 0;
}

static void *fail(pp_side *s, const char *what)
{
    s->err = what;
    shutdown(s->fd, SHUT_RDWR); /* the other side sees end of stream */
    return NULL;
}

static void *pinger(void *arg)
{
    pp_side *s = arg;
    unsigned char out[MSG], in[MSG];
    s->t0 = bench_now_ns();
    for (long i = 0; i < n_rounds; i++) {
        fill(out, (uint64_t)i);
        if (write_msg(s->fd, out) < 0)
            return fail(s, "pinger write");
        if (read_msg(s->fd, in) < 0)
            return fail(s, "pinger read");
        if (!check(in, (uint64_t)i, 1))
            return fail(s, "pinger: wrong reply");
        s->rounds++;
    }
    s->t1 = bench_now_ns();
    return NULL;
}

static void *ponger(void *arg)
{
    pp_side *s = arg;
    unsigned char buf[MSG];
    for (long i = 0; i < n_rounds; i++) {
        if (read_msg(s->fd, buf) < 0)
            return fail(s, "ponger read");
        if (!check(buf, (uint64_t)i, 0))
            return fail(s, "ponger: wrong message");
        for (int k = 0; k < MSG; k++)
            buf[k] = (unsigned char)~buf[k];
        if (write_msg(s->fd, buf) < 0)
            return fail(s, "ponger write");
        s->rounds++;
    }
    return NULL;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-n") == 0 && i + 1 < argc) {
            char *end;
            n_rounds = strtol(argv[++i], &end, 10);
            if (*end || n_rounds < 1) {
                fprintf(stderr, "usage: %s [-n N]\n", argv[0]);
                return 2;
            }
        } else {
            fprintf(stderr, "usage: %s [-n N]\n", argv[0]);
            return 2;
        }
    }

    cpu_set_t set;
    int cpus = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : -1;

    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        perror("sockpp_threads: socketpair");
        return 1;
    }
    pp_side a = {.fd = sv[0]}, b = {.fd = sv[1]};
    pthread_t ta, tb;
    int rc = pthread_create(&tb, NULL, ponger, &b);
    if (rc) {
        fprintf(stderr, "sockpp_threads: pthread_create: %s\n", strerror(rc));
        return 1;
    }
    rc = pthread_create(&ta, NULL, pinger, &a);
    if (rc) {
        fprintf(stderr, "sockpp_threads: pthread_create: %s\n", strerror(rc));
        shutdown(sv[0], SHUT_RDWR);
        pthread_join(tb, NULL);
        return 1;
    }
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    close(sv[0]);
    close(sv[1]);

    if (a.err || b.err || a.rounds != n_rounds || b.rounds != n_rounds) {
        fprintf(stderr, "sockpp_threads: %s%s%s; %ld/%ld round trips, expected %ld\n",
                a.err ? a.err : "", a.err && b.err ? ", " : "", b.err ? b.err : "",
                a.rounds, b.rounds, n_rounds);
        return 1;
    }
    fprintf(stderr, "note: sockpp threads-blocking ran 2 threads on %d allowed CPU(s)%s\n", cpus,
            cpus == 1 ? ": both threads share one core, every hand-off is a context switch on it"
                      : ": hand-offs may cross CPUs (wake-up on the other core)");
    printf("RESULT bench=sockpp variant=threads-blocking round_trips=%ld ns_per_round_trip=%.1f "
           "cpus=%d\n",
           a.rounds, (double)(a.t1 - a.t0) / (double)a.rounds, cpus);
    fflush(stdout);
    return 0;
}
