/*
 * asyncio's TCP echo client on streams (asyncio.open_connection): connects,
 * sends each line and prints what comes back.
 *
 *   ./echo_client [-H HOST] [-p PORT] [LINE...]
 *                     sends the LINEs, or the lines of stdin when there are
 *                     none, to HOST (localhost) port PORT (8888): start
 *                     ./echo_server first
 *   ./echo_client --selftest
 *                     starts an echo server of its own on a free port, in
 *                     the same loop, and sends it three lines
 *
 * The name is resolved off the loop (getaddrinfo on the thread pool); a name
 * with several addresses, as localhost often has (::1 and 127.0.0.1), is
 * connected to as RFC 8305 says ("happy eyeballs"). Stdin is read on the thread pool too:
 * a blocking read on the loop thread would stop every task.
 *
 * The Python it mirrors:
 *
 *   async def tcp_echo_client(lines):
 *       reader, writer = await asyncio.open_connection('localhost', 8888)
 *       for line in lines:
 *           writer.write(line.encode() + b'\n')
 *           await writer.drain()
 *           data = await asyncio.wait_for(reader.readexactly(len(line) + 1), 5)
 *           print(f'echo: {data.decode()!r}')
 *       writer.write_eof()
 *       await reader.read()           # the server closes in turn
 *       writer.close()
 *       await writer.wait_closed()
 */
#include "example.h"

#include <string.h>
#include <unistd.h>

#define ECHO_TIMEOUT 5.0 /* seconds an echo may take */

typedef struct job {
    const char *host;
    int port;
    char **lines; /* the lines to send; NULL: stdin */
    int nlines;
} job;

/* Runs on a pool thread: one line of stdin, without its newline, in a new
 * buffer (*result; left NULL at the end of input). */
static int read_stdin_line(void *arg, void **result)
{
    (void)arg;
    char *line = NULL;
    size_t cap = 0;
    ssize_t n = getline(&line, &cap, stdin);
    if (n < 0) {
        free(line);
        return ferror(stdin) ? -EIO : 0;
    }
    if (n > 0 && line[n - 1] == '\n')
        line[n - 1] = '\0';
    *result = line;
    return 0;
}

/* Sends line and a newline, then waits (at most ECHO_TIMEOUT) for as many
 * bytes to come back. Returns 0 or the error. */
static int echo_line(cio_stream_t *s, const char *line)
{
    size_t len = strlen(line);
    struct iovec iov[2] = {{(void *)line, len}, {"\n", 1}};
    int rc = cio_stream_writev(s, iov, 2); /* asyncio writelines */
    if (rc == 0)
        rc = cio_stream_drain(s);
    if (rc < 0)
        return rc;
    char *back = malloc(len + 1);
    if (!back)
        return -ENOMEM;
    cio_scope_t timeout; /* async with asyncio.timeout(ECHO_TIMEOUT) */
    CHECK(cio_scope_enter(&timeout, ECHO_TIMEOUT, 0));
    ssize_t n = cio_stream_readexactly(s, back, len + 1, NULL);
    cio_scope_exit(&timeout); /* n is -ETIMEDOUT when it expired */
    if (n >= 0)
        printf("echo: %.*s", (int)n, back);
    free(back);
    return n < 0 ? (int)n : 0;
}

static int client(void *arg, void **result)
{
    (void)result;
    job *j = arg;
    cio_stream_t *s;
    cio_connect_opts_t opts = {.timeout = 10.0}; /* the whole connect, DNS included */
    int rc = cio_open_connection(&s, j->host, j->port, &opts);
    if (rc < 0) {
        fprintf(stderr, "echo_client: cannot connect to %s port %d: %s (%s)\n", j->host,
                j->port, cio_strerror(rc), cio_err_name(rc));
        return rc;
    }
    char peer[ADDR_STRLEN];
    printf("connected to %s\n", stream_peer(s, peer));

    for (int i = 0; rc == 0; i++) {
        char *from_stdin = NULL;
        const char *line;
        if (j->lines) {
            if (i == j->nlines)
                break;
            line = j->lines[i];
        } else {
            /* await asyncio.to_thread(sys.stdin.readline) */
            if ((rc = cio_to_thread(read_stdin_line, NULL, (void **)&from_stdin)) < 0 ||
                !from_stdin)
                break;
            line = from_stdin;
        }
        rc = echo_line(s, line);
        free(from_stdin);
    }
    if (rc == 0)
        rc = cio_stream_write_eof(s); /* no more lines: EOF to the server */
    if (rc == 0) {
        char rest[256];
        ssize_t n;
        while ((n = cio_stream_read(s, rest, sizeof rest)) > 0)
            printf("unexpected: %.*s", (int)n, rest);
        rc = (int)n; /* 0 once the server has closed its side too */
    }
    int crc = cio_stream_close(s);
    if (rc == 0)
        rc = crc;
    if (rc < 0)
        fprintf(stderr, "echo_client: %s (%s)\n", cio_strerror(rc), cio_err_name(rc));
    return rc;
}

/* ------------------------------------------------------------------------ */
/* --selftest: an echo server in the same loop                               */
/* ------------------------------------------------------------------------ */

/* The smallest echo handler: bytes back as they come, until EOF. */
static void echo_handler(cio_stream_t *s, void *arg)
{
    (void)arg;
    char buf[4096];
    ssize_t n;
    while ((n = cio_stream_read(s, buf, sizeof buf)) > 0)
        if (cio_stream_write(s, buf, (size_t)n) < 0 || cio_stream_drain(s) < 0)
            break;
    /* returning closes s (the server flushes and closes it) */
}

static int selftest(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_server_t *srv;
    CHECK(cio_start_server(&srv, "127.0.0.1", 0, echo_handler, NULL, NULL));
    char *lines[] = {"hello", "world", "and a longer line, in UTF-8: héllo wörld"};
    job j = {"127.0.0.1", cio_server_port(srv), lines, 3};
    CHECK(client(&j, NULL));
    CHECK(cio_server_close(srv));
    CHECK(cio_server_wait_closed(srv, 5.0));
    CHECK(cio_server_free(srv));
    puts("selftest passed");
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--selftest") == 0)
        return cio_run(selftest, NULL) == 0 ? 0 : 1;
    job j = {"localhost", 8888, NULL, 0};
    int opt;
    while ((opt = getopt(argc, argv, "H:p:")) != -1) {
        switch (opt) {
        case 'H':
            j.host = optarg;
            break;
        case 'p':
            j.port = port_arg(optarg, 8888);
            break;
        default:
            fprintf(stderr, "usage: %s [-H HOST] [-p PORT] [LINE...] | --selftest\n", argv[0]);
            return 2;
        }
    }
    if (optind < argc) {
        j.lines = argv + optind;
        j.nlines = argc - optind;
    }
    return cio_run(client, &j) == 0 ? 0 : 1;
}
