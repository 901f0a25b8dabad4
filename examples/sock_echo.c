/*
 * asyncio's low-level socket calls (loop.sock_accept, sock_recv,
 * sock_sendall, sock_connect) in cio: an echo server task accepts on a
 * loopback port and serves each connection in a task of its own, while
 * three client tasks connect, send a line and read the echo back.
 *
 *   ./sock_echo            the backend of CIO_BACKEND (epoll by default)
 *   ./sock_echo uring      the io_uring backend (epoll if the kernel refuses it)
 *
 * The Python it mirrors:
 *
 *   async def handle(client):
 *       while data := await loop.sock_recv(client, 1024):
 *           await loop.sock_sendall(client, data)
 *   async def server(sock):
 *       while True:
 *           client, _ = await loop.sock_accept(sock)
 *           loop.create_task(handle(client))
 */
#include "example.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#define CLIENTS 3

static struct sockaddr_in server_addr;

/* Echoes what the peer sends until it closes its side. */
static int handle(void *arg, void **result)
{
    (void)result;
    int fd = (int)(intptr_t)arg;
    char buf[1024];
    ssize_t n;
    while ((n = cio_sock_recv(fd, buf, sizeof buf, 0)) > 0)
        CHECK(cio_sock_sendall(fd, buf, (size_t)n, 0, NULL));
    cio_close(fd);
    return n < 0 ? (int)n : 0;
}

/* Accepts until cancelled; each connection gets a task of its own. */
static int server(void *arg, void **result)
{
    (void)result;
    int lfd = (int)(intptr_t)arg;
    for (;;) {
        int fd = cio_sock_accept(lfd, NULL, NULL);
        if (fd == -ECANCELED)
            break;
        CHECK(fd);
        cio_task_t *t;
        CHECK(cio_spawn(&t, handle, (void *)(intptr_t)fd));
        cio_future_release(t); /* runs on its own; the loop keeps it */
    }
    cio_close(lfd);
    return 0;
}

static int client(void *arg, void **result)
{
    (void)result;
    int id = (int)(intptr_t)arg;
    int fd = cio_socket(AF_INET, SOCK_STREAM, 0);
    CHECK(fd);
    CHECK(cio_sock_connect(fd, (struct sockaddr *)&server_addr, sizeof server_addr));
    char line[64], back[64] = {0};
    int len = snprintf(line, sizeof line, "hello from client %d\n", id);
    CHECK(cio_sock_sendall(fd, line, (size_t)len, 0, NULL));
    shutdown(fd, SHUT_WR); /* our side is done: the server sees EOF */
    size_t got = 0;
    ssize_t n;
    while ((n = cio_sock_recv(fd, back + got, sizeof back - 1 - got, 0)) > 0)
        got += (size_t)n;
    CHECK((int)n);
    EXPECT(got == (size_t)len && memcmp(line, back, got) == 0);
    printf("client %d got back: %s", id, back);
    cio_close(fd);
    return 0;
}

static int main_task(void *arg, void **result)
{
    (void)arg;
    (void)result;
    printf("backend: %s\n", cio_loop_backend(cio_get_running_loop()));
    int lfd = cio_socket(AF_INET, SOCK_STREAM, 0);
    CHECK(lfd);
    server_addr.sin_family = AF_INET;
    server_addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    server_addr.sin_port = 0; /* any free port */
    socklen_t len = sizeof server_addr;
    EXPECT(bind(lfd, (struct sockaddr *)&server_addr, len) == 0);
    EXPECT(listen(lfd, 16) == 0);
    EXPECT(getsockname(lfd, (struct sockaddr *)&server_addr, &len) == 0);
    printf("echo server on 127.0.0.1:%d\n", ntohs(server_addr.sin_port));

    cio_task_t *srv, *clients[CLIENTS];
    CHECK(cio_spawn(&srv, server, (void *)(intptr_t)lfd));
    for (int i = 0; i < CLIENTS; i++)
        CHECK(cio_spawn(&clients[i], client, (void *)(intptr_t)(i + 1)));
    CHECK(cio_gather(clients, CLIENTS, NULL, NULL, 0));
    for (int i = 0; i < CLIENTS; i++)
        cio_future_release(clients[i]);
    cio_task_cancel(srv); /* the accept returns -ECANCELED */
    CHECK(cio_await(srv, NULL));
    cio_future_release(srv);
    return 0;
}

int main(int argc, char **argv)
{
    cio_loop_opts_t opts = {.backend = CIO_BACKEND_DEFAULT};
    if (argc > 1 && strcmp(argv[1], "uring") == 0)
        opts.backend = CIO_BACKEND_URING;
    cio_loop_t *loop;
    CHECK(cio_loop_new_ex(&loop, &opts));
    cio_task_t *t;
    CHECK(cio_spawn_ex(&t, loop, main_task, NULL, NULL));
    CHECK(cio_loop_run_until_complete(loop, t, NULL));
    cio_future_release(t);
    CHECK(cio_loop_shutdown(loop));
    CHECK(cio_loop_free(loop));
    return 0;
}
