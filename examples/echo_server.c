/*
 * asyncio's TCP echo server on streams (asyncio.start_server): every
 * connection gets a task of its own, which reads lines and writes them back
 * until the peer closes its side.
 *
 *   ./echo_server [PORT]       serves on every local address (IPv4 and IPv6),
 *                              port 8888 by default, until Ctrl-C
 *   ./echo_server --selftest   the server on a free loopback port and, in the
 *                              same loop, three line clients and one bulk
 *                              client (1 MiB sent while it reads the echo)
 *
 * Talk to it with `nc localhost 8888` (type lines; Ctrl-D ends) or with
 * ./echo_client. CIO_BACKEND=uring runs it on io_uring.
 *
 * The Python it mirrors:
 *
 *   async def handle_echo(reader, writer):
 *       addr = writer.get_extra_info('peername')
 *       while line := await reader.readline():
 *           writer.write(line)
 *           await writer.drain()
 *       writer.close()
 *       await writer.wait_closed()
 *
 *   async def main():
 *       server = await asyncio.start_server(handle_echo, None, 8888)
 *       async with server:
 *           await server.serve_forever()
 */
#include "example.h"

#include <math.h>
#include <string.h>

#define LINE_MAX_BYTES 1024

/*
 * The connection handler: runs in a task of its own per connection. The
 * server owns s; the handler closes it (flushing what is queued), or the
 * server does when the handler returns.
 */
static void handle_echo(cio_stream_t *s, void *arg)
{
    (void)arg;
    char peer[ADDR_STRLEN], line[LINE_MAX_BYTES];
    size_t lines = 0, bytes = 0;
    ssize_t n;
    stream_peer(s, peer);
    printf("server: %s connected\n", peer);
    for (;;) {
        n = cio_stream_readline(s, line, sizeof line);
        /* -EOVERFLOW: no newline within our buffer. Nothing was consumed:
         * echo the bytes we have and look for the newline again. */
        if (n == -EOVERFLOW)
            n = cio_stream_read(s, line, sizeof line);
        if (n <= 0)
            break; /* 0: the peer closed its side; < 0: an error */
        int rc = cio_stream_write(s, line, (size_t)n); /* never short, never waits */
        if (rc == 0)
            rc = cio_stream_drain(s); /* waits only while the peer lags behind */
        if (rc < 0) {
            n = rc;
            break;
        }
        lines += line[n - 1] == '\n'; /* a long line comes in pieces */
        bytes += (size_t)n;
    }
    int rc = cio_stream_close(s); /* flushes what is queued, then closes */
    printf("server: %s %s after %zu line(s), %zu byte(s)\n", peer,
           n == 0 ? "closed" : cio_err_name((int)n), lines, bytes);
    (void)rc; /* the peer left: nothing more to say to it */
}

/* ./echo_server [PORT]: serve until killed. */
static int serve(void *arg, void **result)
{
    (void)result;
    int port = *(int *)arg;
    cio_server_t *srv;
    int rc = cio_start_server(&srv, NULL, port, handle_echo, NULL, NULL);
    if (rc < 0) {
        fprintf(stderr, "cannot listen on port %d: %s\n", port, cio_strerror(rc));
        return rc;
    }
    printf("echo server on port %d (backend %s); try: nc localhost %d\n",
           cio_server_port(srv), cio_loop_backend(cio_get_running_loop()), port);
    rc = cio_server_serve_forever(srv); /* until cancelled (or closed) */
    cio_server_abort_clients(srv);
    cio_server_wait_closed(srv, INFINITY);
    cio_server_free(srv);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* --selftest: clients in the same loop                                      */
/* ------------------------------------------------------------------------ */

static int server_port;

/* Sends three lines and checks each echo (asyncio's tcp_echo_client). */
static int line_client(void *arg, void **result)
{
    (void)result;
    int id = (int)(intptr_t)arg;
    cio_stream_t *s;
    CHECK(cio_open_connection(&s, "127.0.0.1", server_port, NULL));
    for (int i = 1; i <= 3; i++) {
        char line[64], back[64];
        int len = snprintf(line, sizeof line, "client %d, line %d\n", id, i);
        CHECK(cio_stream_write(s, line, (size_t)len));
        CHECK(cio_stream_drain(s));
        ssize_t n = cio_stream_readline(s, back, sizeof back);
        CHECK((int)n);
        EXPECT(n == len && memcmp(line, back, (size_t)n) == 0);
        printf("client %d got back: %.*s", id, (int)n, back);
    }
    CHECK(cio_stream_write_eof(s));                /* we are done: EOF to the server */
    char tail[8];
    EXPECT_RC((int)cio_stream_read(s, tail, sizeof tail), 0); /* and it closes too */
    CHECK(cio_stream_close(s));
    return 0;
}

/* The bulk client: 1 MiB of 1 KiB lines, sent by one task while another
 * reads the echo back. Neither side buffers it all: drain holds the
 * writers back (ours, and the server's) while the peer lags. */
#define BULK_LINES 1024
#define BULK_LINE 1024

static void bulk_line(char *line, int i)
{
    for (int k = 0; k < BULK_LINE - 1; k++)
        line[k] = (char)('a' + (i + k) % 26);
    line[BULK_LINE - 1] = '\n';
}

static int bulk_writer(void *arg, void **result)
{
    (void)result;
    cio_stream_t *s = arg;
    char line[BULK_LINE];
    for (int i = 0; i < BULK_LINES; i++) {
        bulk_line(line, i);
        CHECK(cio_stream_write(s, line, sizeof line));
        CHECK(cio_stream_drain(s));
    }
    return cio_stream_write_eof(s);
}

static int bulk_client(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_stream_t *s;
    CHECK(cio_open_connection(&s, "127.0.0.1", server_port, NULL));
    cio_task_t *writer;
    CHECK(cio_spawn(&writer, bulk_writer, s)); /* writes while we read */
    char want[BULK_LINE], got[BULK_LINE];
    for (int i = 0; i < BULK_LINES; i++) {
        bulk_line(want, i);
        CHECK((int)cio_stream_readexactly(s, got, sizeof got, NULL));
        EXPECT(memcmp(want, got, sizeof got) == 0);
    }
    EXPECT_RC((int)cio_stream_read(s, got, sizeof got), 0); /* then EOF */
    CHECK(cio_await(writer, NULL));
    cio_future_release(writer);
    CHECK(cio_stream_close(s));
    printf("bulk client: %d bytes echoed back intact\n", BULK_LINES * BULK_LINE);
    return 0;
}

static int selftest(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_server_t *srv;
    CHECK(cio_start_server(&srv, "127.0.0.1", 0, handle_echo, NULL, NULL));
    server_port = cio_server_port(srv);
    printf("echo server on 127.0.0.1:%d (backend %s)\n", server_port,
           cio_loop_backend(cio_get_running_loop()));

    enum { CLIENTS = 4 };
    cio_task_t *clients[CLIENTS];
    for (int i = 0; i < CLIENTS - 1; i++)
        CHECK(cio_spawn(&clients[i], line_client, (void *)(intptr_t)(i + 1)));
    CHECK(cio_spawn(&clients[CLIENTS - 1], bulk_client, NULL));
    CHECK(cio_gather(clients, CLIENTS, NULL, NULL, 0));
    for (int i = 0; i < CLIENTS; i++)
        cio_future_release(clients[i]);

    /* async with server: stop accepting, wait for the handlers to end. */
    CHECK(cio_server_close(srv));
    CHECK(cio_server_wait_closed(srv, 5.0));
    CHECK(cio_server_free(srv));
    puts("selftest passed");
    return 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0); /* log lines show up at once, also in a pipe */
    if (argc > 1 && strcmp(argv[1], "--selftest") == 0)
        return cio_run(selftest, NULL) == 0 ? 0 : 1;
    int port = port_arg(argc > 1 ? argv[1] : NULL, 8888);
    return cio_run(serve, &port) == 0 ? 0 : 1;
}
