/*
 * Seed 002, "使用transports实现高效率协议" (efficient protocols on transports):
 * the echo server again, on asyncio's low-level API. No task per connection:
 * the loop calls a protocol's callbacks when bytes arrive, and the protocol
 * answers through its transport. A connection costs a small record and no
 * stack (and on epoll no buffer while it is idle: one is taken from the
 * loop's cache for each receive).
 *
 *   ./echo_protocol [PORT]       serves on every local address, port 8888 by
 *                                default, until Ctrl-C (nc localhost 8888)
 *   ./echo_protocol --selftest   the server on a free loopback port and, in
 *                                the same loop, clients written as protocols
 *                                too (asyncio's EchoClientProtocol), one of
 *                                them sending 4 MiB while it reads nothing
 *                                for 0.2 s
 *
 * Flow control: when a peer sends faster than it reads our echo, the
 * transport's write buffer rises above its high-water mark (64 KiB) and
 * pause_writing is called; the protocol then stops reading, so TCP holds the
 * peer back, until resume_writing. Memory per connection stays bounded.
 *
 * The Python it mirrors:
 *
 *   class EchoServerProtocol(asyncio.Protocol):
 *       def connection_made(self, transport):
 *           self.transport = transport
 *       def data_received(self, data):
 *           self.transport.write(data)
 *       def pause_writing(self):
 *           self.transport.pause_reading()
 *       def resume_writing(self):
 *           self.transport.resume_reading()
 *
 *   server = await loop.create_server(EchoServerProtocol, None, 8888)
 *
 *   class EchoClientProtocol(asyncio.Protocol):
 *       def __init__(self, message, on_con_lost): ...
 *       def connection_made(self, transport):
 *           transport.write(self.message.encode())
 *           transport.write_eof()
 *       def data_received(self, data):
 *           print('Data received:', data.decode())
 *       def connection_lost(self, exc):
 *           self.on_con_lost.set_result(True)
 *
 *   transport, protocol = await loop.create_connection(
 *       lambda: EchoClientProtocol(message, on_con_lost), '127.0.0.1', 8888)
 *   await on_con_lost
 */
#include "example.h"

#include <math.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* The server protocol                                                        */
/* ------------------------------------------------------------------------ */

/* One connection's state: what `self` holds in Python. */
typedef struct echo_conn {
    char peer[ADDR_STRLEN];
    size_t bytes;     /* echoed so far */
    unsigned pauses;  /* times reading was paused for a slow reader */
} echo_conn;

static void server_connection_made(cio_transport_t *t, void *ctx)
{
    echo_conn *c = ctx;
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (cio_transport_peername(t, (struct sockaddr *)&ss, &len) == 0)
        addr_str((struct sockaddr *)&ss, len, c->peer);
    else
        strcpy(c->peer, "?");
    printf("server: %s connected\n", c->peer);
}

/* data is valid only during the call: write copies what the socket does
 * not take at once. */
static void server_data_received(cio_transport_t *t, const void *data, size_t n, void *ctx)
{
    echo_conn *c = ctx;
    int rc = cio_transport_write(t, data, n);
    if (rc < 0) { /* -ENOBUFS past the 16 MiB hard cap, or the connection's error */
        printf("server: %s: %s, aborting\n", c->peer, cio_strerror(rc));
        cio_transport_abort(t);
        return;
    }
    c->bytes += n;
}

/* The peer closed its side. Returning false closes ours once everything
 * queued is sent, as asyncio does. */
static bool server_eof_received(cio_transport_t *t, void *ctx)
{
    (void)t;
    (void)ctx;
    return false;
}

static void server_pause_writing(cio_transport_t *t, void *ctx)
{
    echo_conn *c = ctx;
    c->pauses++;
    cio_transport_pause_reading(t); /* TCP holds the peer back meanwhile */
}

static void server_resume_writing(cio_transport_t *t, void *ctx)
{
    (void)ctx;
    cio_transport_resume_reading(t);
}

/* The last callback: the transport is freed once it returns. */
static void server_connection_lost(cio_transport_t *t, int err, void *ctx)
{
    (void)t;
    echo_conn *c = ctx;
    printf("server: %s %s, %zu byte(s) echoed, reading paused %u time(s)\n", c->peer,
           err ? cio_err_name(err) : "closed", c->bytes, c->pauses);
    free(c);
}

static const cio_protocol_t echo_server_protocol = {
    .connection_made = server_connection_made,
    .data_received = server_data_received,
    .eof_received = server_eof_received,
    .connection_lost = server_connection_lost,
    .pause_writing = server_pause_writing,
    .resume_writing = server_resume_writing,
};

/* The protocol factory (EchoServerProtocol, the class): one state record
 * per connection, freed in connection_lost. */
static int echo_factory(void *arg, const cio_protocol_t **proto, void **ctx)
{
    (void)arg;
    echo_conn *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM; /* the connection is refused (closed) */
    *proto = &echo_server_protocol;
    *ctx = c;
    return 0;
}

static int serve(void *arg, void **result)
{
    (void)result;
    int port = *(int *)arg;
    cio_server_t *srv;
    int rc = cio_create_server(&srv, NULL, port, echo_factory, NULL, NULL);
    if (rc < 0) {
        fprintf(stderr, "cannot listen on port %d: %s\n", port, cio_strerror(rc));
        return rc;
    }
    printf("echo server (protocols) on port %d (backend %s); try: nc localhost %d\n", port,
           cio_loop_backend(cio_get_running_loop()), port);
    rc = cio_server_serve_forever(srv);
    cio_server_abort_clients(srv);
    cio_server_wait_closed(srv, INFINITY);
    cio_server_free(srv);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* --selftest: clients as protocols too                                       */
/* ------------------------------------------------------------------------ */

/* A client sends `size` bytes of a pattern (or `message`), half-closes, and
 * checks that the same bytes come back before the server closes. */
typedef struct echo_client {
    const char *message; /* NULL: size bytes of pattern() */
    size_t size, received;
    bool mismatch;
    cio_future_t *on_con_lost; /* set by connection_lost */
    /* The bulk client starts as a slow reader: it reads nothing for its
     * first 0.2 s, so the server's echo piles up and flow control acts. */
    cio_transport_t *t;
    cio_handle_t resume;
} echo_client;

static void client_resume(void *arg)
{
    echo_client *c = arg;
    printf("bulk client: reading again after 0.2 s\n");
    cio_transport_resume_reading(c->t);
}

static char pattern(size_t i)
{
    return (char)('0' + (i * 7 + i / 4096) % 75);
}

static void client_connection_made(cio_transport_t *t, void *ctx)
{
    echo_client *c = ctx;
    int rc;
    if (c->message) {
        rc = cio_transport_write(t, c->message, c->size);
    } else {
        c->t = t;
        cio_transport_pause_reading(t);
        CHECK(cio_call_later(cio_get_running_loop(), &c->resume, 0.2, client_resume, c));
        /* 4 MiB in one call: the transport queues what the socket does not
         * take (up to its 16 MiB cap) and sends it as the peer reads. */
        char *data = malloc(c->size);
        EXPECT(data != NULL);
        for (size_t i = 0; i < c->size; i++)
            data[i] = pattern(i);
        rc = cio_transport_write(t, data, c->size);
        free(data); /* copied: the transport never keeps our pointer */
    }
    if (rc == 0)
        rc = cio_transport_write_eof(t); /* sent once the buffer is empty */
    if (rc < 0)
        cio_transport_abort(t);
}

static void client_data_received(cio_transport_t *t, const void *data, size_t n, void *ctx)
{
    (void)t;
    echo_client *c = ctx;
    const char *p = data;
    if (c->message) {
        printf("data received: %.*s\n", (int)n, p);
        c->mismatch |= c->received + n > c->size ||
                       memcmp(c->message + c->received, p, n) != 0;
    } else {
        for (size_t i = 0; i < n; i++)
            c->mismatch |= p[i] != pattern(c->received + i);
    }
    c->received += n;
}

static void client_connection_lost(cio_transport_t *t, int err, void *ctx)
{
    (void)t;
    echo_client *c = ctx;
    cio_handle_cancel(&c->resume); /* t is about to go: no resume for it */
    /* on_con_lost.set_result(True): wakes the task awaiting it. */
    if (err)
        cio_future_set_error(c->on_con_lost, err);
    else
        cio_future_set_result(c->on_con_lost, NULL);
}

static const cio_protocol_t echo_client_protocol = {
    .connection_made = client_connection_made,
    .data_received = client_data_received,
    .connection_lost = client_connection_lost,
    /* eof_received NULL: the server's EOF closes our side too */
};

static int server_port;

static int client_task(void *arg, void **result)
{
    (void)result;
    echo_client *c = arg;
    CHECK(cio_future_new(&c->on_con_lost, NULL));
    /* loop.create_connection: connect, then wrap the socket in a transport */
    int fd;
    CHECK(cio_connect_tcp(&fd, "127.0.0.1", server_port, NULL));
    cio_transport_t *t;
    CHECK(cio_transport_new(&t, fd, &echo_client_protocol, c, NULL));
    CHECK(cio_await(c->on_con_lost, NULL)); /* await on_con_lost */
    cio_future_release(c->on_con_lost);
    EXPECT(!c->mismatch && c->received == c->size);
    return 0;
}

static int selftest(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_server_t *srv;
    CHECK(cio_create_server(&srv, "127.0.0.1", 0, echo_factory, NULL, NULL));
    server_port = cio_server_port(srv);
    printf("echo server (protocols) on 127.0.0.1:%d (backend %s)\n", server_port,
           cio_loop_backend(cio_get_running_loop()));

    static const char *const messages[] = {"Hello World!", "Hallo Welt!", "Bonjour le monde !"};
    enum { CLIENTS = 4 };
    echo_client clients[CLIENTS] = {{0}};
    cio_task_t *tasks[CLIENTS];
    for (int i = 0; i < CLIENTS; i++) {
        if (i < CLIENTS - 1) {
            clients[i].message = messages[i];
            clients[i].size = strlen(messages[i]);
        } else {
            clients[i].size = 4u << 20;
        }
        CHECK(cio_spawn(&tasks[i], client_task, &clients[i]));
    }
    CHECK(cio_gather(tasks, CLIENTS, NULL, NULL, 0));
    for (int i = 0; i < CLIENTS; i++)
        cio_future_release(tasks[i]);
    printf("bulk client: %zu bytes echoed back intact\n", clients[CLIENTS - 1].received);

    CHECK(cio_server_close(srv));
    CHECK(cio_server_wait_closed(srv, 5.0));
    CHECK(cio_server_free(srv));
    puts("selftest passed");
    return 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc > 1 && strcmp(argv[1], "--selftest") == 0)
        return cio_run(selftest, NULL) == 0 ? 0 : 1;
    int port = port_arg(argc > 1 ? argv[1] : NULL, 8888);
    return cio_run(serve, &port) == 0 ? 0 : 1;
}
