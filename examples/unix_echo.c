/*
 * Seed 003's other two stream calls, asyncio.start_unix_server and
 * asyncio.open_unix_connection: an echo server on a Unix socket (a file
 * path; local IPC, no TCP) and clients talking to it.
 *
 *   ./unix_echo                the demo: the server on a socket in a fresh
 *                              temporary directory, three clients, then the
 *                              server closes (its socket file goes with it)
 *   ./unix_echo --serve PATH   serves on PATH until Ctrl-C; talk to it with
 *                              `nc -U PATH`
 *
 * A Unix socket tells the server who connected: the peer's pid, uid and gid
 * (SO_PEERCRED), read here from the transport's socket.
 *
 * The Python it mirrors:
 *
 *   async def handle(reader, writer):
 *       while line := await reader.readline():
 *           writer.write(line)
 *           await writer.drain()
 *       writer.close()
 *
 *   server = await asyncio.start_unix_server(handle, path)
 *   reader, writer = await asyncio.open_unix_connection(path)
 *   writer.write(b'hello\n')
 *   print(await reader.readline())
 */
#include "example.h"

#include <math.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void handle(cio_stream_t *s, void *arg)
{
    (void)arg;
    struct ucred cred;
    socklen_t len = sizeof cred;
    int fd = cio_transport_fd(cio_stream_transport(s)); /* get_extra_info('socket') */
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0)
        printf("server: connection from pid %ld (uid %ld)\n", (long)cred.pid, (long)cred.uid);
    char line[1024];
    ssize_t n;
    while ((n = cio_stream_readline(s, line, sizeof line)) > 0) {
        if (cio_stream_write(s, line, (size_t)n) < 0 || cio_stream_drain(s) < 0)
            break;
    }
    if (n == -EOVERFLOW)
        cio_stream_write(s, "line too long\n", 14);
    cio_stream_close(s);
}

static int client(void *arg, void **result)
{
    (void)result;
    const char *path = arg;
    cio_stream_t *s;
    CHECK(cio_open_unix_connection(&s, path, NULL));
    char line[64], back[64];
    int len = snprintf(line, sizeof line, "hello from task %s\n",
                       cio_task_get_name(cio_current_task()));
    CHECK(cio_stream_write(s, line, (size_t)len));
    ssize_t n = cio_stream_readline(s, back, sizeof back);
    CHECK((int)n);
    EXPECT(n == len && memcmp(line, back, (size_t)n) == 0);
    printf("client got back: %.*s", (int)n, back);
    CHECK(cio_stream_close(s));
    return 0;
}

static int demo(void *arg, void **result)
{
    (void)arg;
    (void)result;
    char dir[] = "/tmp/cio-unix-XXXXXX", path[64];
    EXPECT(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/echo.sock", dir);

    cio_server_t *srv;
    CHECK(cio_start_unix_server(&srv, path, handle, NULL, NULL));
    struct stat st;
    EXPECT(stat(path, &st) == 0 && S_ISSOCK(st.st_mode));
    printf("echo server on %s (backend %s)\n", path, cio_loop_backend(cio_get_running_loop()));

    enum { CLIENTS = 3 };
    cio_task_t *tasks[CLIENTS];
    for (int i = 0; i < CLIENTS; i++) {
        char name[16];
        snprintf(name, sizeof name, "client-%d", i + 1);
        CHECK(cio_spawn_named(&tasks[i], name, client, path));
    }
    CHECK(cio_gather(tasks, CLIENTS, NULL, NULL, 0));
    for (int i = 0; i < CLIENTS; i++)
        cio_future_release(tasks[i]);

    CHECK(cio_server_close(srv)); /* stops accepting and removes the file */
    CHECK(cio_server_wait_closed(srv, 5.0));
    CHECK(cio_server_free(srv));
    EXPECT(stat(path, &st) != 0 && errno == ENOENT);
    cio_stream_t *s;
    int rc = cio_open_unix_connection(&s, path, NULL);
    printf("server closed; connecting again: %s (%s)\n", cio_strerror(rc), cio_err_name(rc));
    EXPECT(rc == -ENOENT);
    EXPECT(rmdir(dir) == 0);
    return 0;
}

static int serve(void *arg, void **result)
{
    (void)result;
    const char *path = arg;
    cio_server_t *srv;
    int rc = cio_start_unix_server(&srv, path, handle, NULL, NULL);
    if (rc < 0) {
        fprintf(stderr, "cannot listen on %s: %s\n", path, cio_strerror(rc));
        return rc;
    }
    printf("echo server on %s (backend %s); try: nc -U %s\n", path,
           cio_loop_backend(cio_get_running_loop()), path);
    rc = cio_server_serve_forever(srv);
    cio_server_abort_clients(srv);
    cio_server_wait_closed(srv, INFINITY);
    cio_server_free(srv);
    return rc;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 3 && strcmp(argv[1], "--serve") == 0)
        return cio_run(serve, argv[2]) == 0 ? 0 : 1;
    if (argc != 1) {
        fprintf(stderr, "usage: %s [--serve PATH]\n", argv[0]);
        return 2;
    }
    return cio_run(demo, NULL) == 0 ? 0 : 1;
}
