/*
 * The cio server of workload 5 (shared BENCH.md, "echo"), in cio's two
 * forms, for bench/net.sh and bench_echo_client:
 *
 *   bench_echo_server [-p PORT] [--backend epoll|uring] [--protocol] [-t SECONDS]
 *
 * Streams (the default): cio_start_server on 127.0.0.1:PORT (default 8888),
 * one task per connection that loops cio_stream_read (up to 64 KiB) ->
 * cio_stream_write -> cio_stream_drain until EOF, as asyncio's
 * `data = await reader.read(65536); writer.write(data); await writer.drain()`.
 * --protocol: cio_create_server with a protocol whose data_received writes
 * the bytes back with cio_transport_write (no task per connection), pausing
 * reading while the transport's write buffer is above its high-water mark.
 * Runs until SIGTERM/SIGINT or -t SECONDS, then prints its counts on stderr.
 */
#include "bench_net.h"

#define READ_MAX (64 * 1024)

typedef struct echo_stats {
    uint64_t conns, reads, bytes;
    net_ends_t ends;
} echo_stats_t;

/*
 * One read buffer for every handler: cio_stream_read copies out of the
 * stream's own buffer and returns, and cio_stream_write queues a copy before
 * it returns, with no await point in between, so no other task runs while
 * the bytes are here. A per-connection buffer would cost its touched pages
 * on every connection (and 64 KiB on the task's stack would be touched whole
 * by -fstack-clash-protection's probes): that would measure this program's
 * choice rather than cio's memory per connection. One per thread: with
 * --loops N, N loops run on N threads.
 */
static _Thread_local char read_buf[READ_MAX];

static void echo_handler(cio_stream_t *s, void *arg)
{
    echo_stats_t *st = arg;
    st->conns++;
    for (;;) {
        ssize_t n = cio_stream_read(s, read_buf, sizeof read_buf);
        if (n <= 0) { /* 0: EOF, the clean end */
            net_count_end(&st->ends, n);
            return; /* the server closes s */
        }
        st->reads++;
        st->bytes += (uint64_t)n;
        int rc = cio_stream_write(s, read_buf, (size_t)n);
        if (rc == 0)
            rc = cio_stream_drain(s);
        if (rc < 0) {
            net_count_end(&st->ends, rc);
            return;
        }
    }
}

/* ------------------------------------------------ the protocol form --- */

static void echo_made(cio_transport_t *t, void *ctx)
{
    (void)t;
    ((echo_stats_t *)ctx)->conns++;
}

static void echo_data(cio_transport_t *t, const void *data, size_t n, void *ctx)
{
    echo_stats_t *st = ctx;
    st->reads++;
    st->bytes += n;
    int rc = cio_transport_write(t, data, n);
    if (rc < 0) {
        /* A lost connection's error also reaches echo_lost, which counts
         * it; an abort gives echo_lost 0, so count our own failures here. */
        if (rc == -ENOBUFS || rc == -ENOMEM)
            st->ends.errors++;
        cio_transport_abort(t);
    }
}

static void echo_lost(cio_transport_t *t, int err, void *ctx)
{
    (void)t;
    net_count_end(&((echo_stats_t *)ctx)->ends, err);
}

/* Flow control: a peer that does not read its echoes stops being read,
 * as the streams form's drain does. */
static void echo_pause(cio_transport_t *t, void *ctx)
{
    (void)ctx;
    cio_transport_pause_reading(t);
}

static void echo_resume(cio_transport_t *t, void *ctx)
{
    (void)ctx;
    cio_transport_resume_reading(t);
}

static const cio_protocol_t echo_protocol = {
    .connection_made = echo_made,
    .data_received = echo_data,
    .connection_lost = echo_lost,
    .pause_writing = echo_pause,
    .resume_writing = echo_resume,
};

static int echo_factory(void *arg, const cio_protocol_t **proto, void **ctx)
{
    *proto = &echo_protocol;
    *ctx = arg; /* every connection counts into the same totals */
    return 0;
}

int main(int argc, char **argv)
{
    static echo_stats_t st;
    net_app_t a = {
        .name = "echo_server",
        .o = {.port = 8888, .backend = CIO_BACKEND_EPOLL},
        .handler = echo_handler,
        .factory = echo_factory,
        .arg = &st,
    };
    if (!net_parse(&a, argc, argv))
        return net_usage(&a);
    int status = net_run(&a);
    fprintf(stderr,
            "echo_server: %.1f s: %llu connections, %llu reads, %llu bytes echoed, "
            "%llu resets, %llu other errors\n",
            a.served, (unsigned long long)st.conns, (unsigned long long)st.reads,
            (unsigned long long)st.bytes, (unsigned long long)st.ends.resets,
            (unsigned long long)st.ends.errors);
    return status;
}
