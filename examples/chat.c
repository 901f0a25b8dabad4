/*
 * A chat server on streams: each line a client sends goes to every other
 * client, prefixed with the sender's name. One task per client (the stream
 * server's handler), all of them in one loop sharing the list of members
 * with no lock: code between two await points runs without interruption.
 *
 *   ./chat [PORT]       serves on every local address, port 8889 by default,
 *                       until Ctrl-C. Join from several terminals with
 *                       `nc localhost 8889`: the first line is your name.
 *   ./chat --selftest   the server on a free loopback port and, in the same
 *                       loop, four clients: three chat, then one of them
 *                       floods 1 MiB while the fourth never reads
 *
 * Slow clients. broadcast() never waits: it writes the line to each other
 * client's stream with cio_stream_write, which queues what the socket does
 * not take at once. A client that does not read would make its queue grow
 * without end, so each connection's output is capped (the stream option
 * write_limit, SLOW_LIMIT bytes here): when a write to a client would pass
 * the cap, that client is more than SLOW_LIMIT bytes behind and is
 * disconnected (its task is cancelled and its queued output dropped). No
 * one else waits for it, ever. The kernel's send buffer comes on top of the
 * cap; left alone, Linux grows it up to megabytes (net.ipv4.tcp_wmem), so
 * each connection's SO_SNDBUF is set to KERNEL_SNDBUF bytes.
 *
 * The other design, a bounded cio_queue per client with a writer task
 * draining it, shares one copy of each message between its recipients and
 * bounds them by count rather than bytes, at the price of a second task per
 * client. Direct writes are simpler and what asyncio chat servers usually do
 * (writer.write for the others, no drain, transport.get_write_buffer_size()
 * to spot laggards).
 */
#include "example.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <string.h>

#define SLOW_LIMIT (256 * 1024)  /* bytes a client may fall behind */
#define KERNEL_SNDBUF (64 * 1024) /* and the kernel's share of them */
#define LINE_MAX_BYTES 512
#define NAME_TIMEOUT 60.0 /* seconds to give a name */

/* A member of the room. It lives on its handler's stack, linked into the
 * room while the handler runs. */
typedef struct client {
    struct client *next, *prev;
    cio_stream_t *s;
    cio_task_t *task;  /* the handler's task: cancelled to disconnect it */
    char name[32];
    bool too_slow;
} client;

typedef struct room {
    client members;    /* sentinel of the circular list */
    unsigned count;
    unsigned kicked;   /* clients disconnected for being too slow */
    unsigned guests;   /* for default names */
} room;

/* Sends msg to every member but `from`. Never waits. */
static void broadcast(room *r, const client *from, const char *msg, size_t len)
{
    for (client *c = r->members.next; c != &r->members; c = c->next) {
        if (c == from || c->too_slow)
            continue;
        int rc = cio_stream_write(c->s, msg, len);
        if (rc == -ENOBUFS) {
            /* Nearly SLOW_LIMIT bytes already wait for c: drop it. Its
             * handler wakes with -ECANCELED (on its next turn, not now) and
             * leaves the room. */
            c->too_slow = true;
            r->kicked++;
            printf("chat: %s is too slow (its output would pass %d bytes), disconnected\n",
                   c->name, SLOW_LIMIT);
            cio_task_cancel(c->task);
        }
        /* Other errors mean c's connection is gone: its handler sees it too. */
    }
}

/* A "* ..." notice to every member but `from`. */
__attribute__((format(printf, 3, 4)))
static void announce(room *r, const client *from, const char *fmt, ...)
{
    char msg[128];
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (len > 0)
        broadcast(r, from, msg, (size_t)len < sizeof msg ? (size_t)len : sizeof msg - 1);
}

/* Drops a trailing "\n" or "\r\n" (nc and telnet send either). */
static size_t chomp(char *line, size_t n)
{
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        n--;
    line[n] = '\0';
    return n;
}

/* Asks for a name; returns 0 or the error (timeout, EOF, ...). */
static int ask_name(room *r, client *me)
{
    static const char prompt[] = "Welcome to the chat! Your name?\n";
    char line[LINE_MAX_BYTES];
    int rc = cio_stream_write(me->s, prompt, sizeof prompt - 1);
    if (rc < 0)
        return rc;
    cio_scope_t sc; /* asyncio.timeout(NAME_TIMEOUT) */
    CHECK(cio_scope_enter(&sc, NAME_TIMEOUT, 0));
    ssize_t n = cio_stream_readline(me->s, line, sizeof line - 1);
    cio_scope_exit(&sc);
    if (n <= 0)
        return n == 0 ? -ENODATA : (int)n;
    if (chomp(line, (size_t)n) == 0)
        snprintf(me->name, sizeof me->name, "guest%u", ++r->guests);
    else
        snprintf(me->name, sizeof me->name, "%.31s", line);
    return 0;
}

/* The connection handler: one task per client. */
static void handle_client(cio_stream_t *s, void *arg)
{
    room *r = arg;
    client me = {.s = s, .task = cio_current_task()};
    char peer[ADDR_STRLEN];
    stream_peer(s, peer);
    int size = KERNEL_SNDBUF; /* get_extra_info('socket').setsockopt(...) */
    setsockopt(cio_transport_fd(cio_stream_transport(s)), SOL_SOCKET, SO_SNDBUF, &size,
               sizeof size);
    if (ask_name(r, &me) < 0) {
        cio_stream_abort(s);
        return;
    }

    /* Join: from here on others write to us. */
    me.next = &r->members;
    me.prev = r->members.prev;
    me.prev->next = &me;
    r->members.prev = &me;
    r->count++;
    printf("chat: %s joined from %s (%u online)\n", me.name, peer, r->count);
    char hello[128];
    int len = snprintf(hello, sizeof hello, "* hello %s, %u online\n", me.name, r->count);
    cio_stream_write(s, hello, (size_t)len);
    announce(r, &me, "* %s joined (%u online)\n", me.name, r->count);

    char line[LINE_MAX_BYTES], msg[LINE_MAX_BYTES + sizeof me.name + 8];
    ssize_t n;
    size_t prefix = (size_t)snprintf(msg, sizeof msg, "[%s] ", me.name);
    while ((n = cio_stream_readline(s, line, sizeof line - 1)) > 0) {
        size_t k = chomp(line, (size_t)n);
        memcpy(msg + prefix, line, k);
        msg[prefix + k] = '\n';
        broadcast(r, &me, msg, prefix + k + 1);
    }
    /* n: 0 at EOF, -ECANCELED when broadcast() found us too slow, -EOVERFLOW
     * for a line longer than LINE_MAX_BYTES, or the connection's error. */

    /* Leave: unlink before the next await point, so no one writes to us. */
    me.prev->next = me.next;
    me.next->prev = me.prev;
    r->count--;
    printf("chat: %s left (%s, %u online)\n", me.name,
           n == 0 ? "EOF" : cio_err_name((int)n), r->count);
    announce(r, NULL, me.too_slow ? "* %s was too slow and got disconnected (%u online)\n"
                                  : "* %s left (%u online)\n",
             me.name, r->count);
    if (me.too_slow || (n < 0 && n != -EOVERFLOW)) {
        cio_stream_abort(s); /* drop what is queued for it */
    } else {
        static const char bye[] = "* bye\n", too_long[] = "* line too long, bye\n";
        if (n == 0)
            cio_stream_write(s, bye, sizeof bye - 1);
        else
            cio_stream_write(s, too_long, sizeof too_long - 1);
        cio_stream_close(s); /* flushes, then closes */
    }
}

/* Every connection's output is capped at SLOW_LIMIT bytes. */
static const cio_stream_opts_t stream_opts = {.write_limit = SLOW_LIMIT};

static int serve(void *arg, void **result)
{
    (void)result;
    int port = *(int *)arg;
    room r = {.members = {.next = &r.members, .prev = &r.members}};
    cio_server_opts_t opts = {.stream = &stream_opts};
    cio_server_t *srv;
    int rc = cio_start_server(&srv, NULL, port, handle_client, &r, &opts);
    if (rc < 0) {
        fprintf(stderr, "cannot listen on port %d: %s\n", port, cio_strerror(rc));
        return rc;
    }
    printf("chat server on port %d (backend %s); join with: nc localhost %d\n", port,
           cio_loop_backend(cio_get_running_loop()), port);
    rc = cio_server_serve_forever(srv);
    cio_server_abort_clients(srv);
    cio_server_wait_closed(srv, 5.0);
    cio_server_free(srv);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* --selftest                                                                 */
/* ------------------------------------------------------------------------ */

#define FLOOD_LINES 8192 /* of 128 bytes with the prefix: 1 MiB */

typedef struct test {
    int port;
    cio_barrier_t all_in, chatted, flooded;
} test;

typedef struct member {
    test *t;
    const char *name;
    cio_stream_t *s;
} member;

/* Connects and joins as m->name. The slow one shrinks its receive buffer
 * first, so that the kernel holds little for it and the server's queue
 * fills fast. */
static void join(member *m, bool slow)
{
    int fd = cio_socket(AF_INET, SOCK_STREAM, 0);
    CHECK(fd);
    if (slow) {
        int size = 4096;
        EXPECT(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size) == 0);
    }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)m->t->port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    CHECK(cio_sock_connect(fd, (struct sockaddr *)&sa, sizeof sa));
    CHECK(cio_stream_new(&m->s, fd, NULL)); /* asyncio open_connection(sock=) */
    char line[LINE_MAX_BYTES];
    ssize_t n = cio_stream_readline(m->s, line, sizeof line); /* the prompt */
    CHECK((int)n);
    CHECK(cio_stream_write(m->s, m->name, strlen(m->name)));
    CHECK(cio_stream_write(m->s, "\n", 1));
    n = cio_stream_readline(m->s, line, sizeof line); /* "* hello NAME, ..." */
    CHECK((int)n);
    EXPECT(n > 8 && strncmp(line, "* hello ", 8) == 0);
}

/* Reads lines until `want` of them start with prefix (other lines, the
 * "* ..." notices and other senders, are skipped). */
static void expect_lines(member *m, const char *prefix, int want)
{
    char line[LINE_MAX_BYTES];
    size_t plen = strlen(prefix);
    for (int got = 0; got < want;) {
        ssize_t n = cio_stream_readline(m->s, line, sizeof line);
        CHECK((int)n);
        EXPECT(n > 0);
        got += (size_t)n > plen && memcmp(line, prefix, plen) == 0;
    }
}

static int chatter(void *arg, void **result)
{
    (void)result;
    member *m = arg;
    test *t = m->t;
    join(m, false);
    EXPECT(cio_barrier_wait(&t->all_in) >= 0);

    /* Phase 1: two lines each, and the two of each other fast member. */
    char line[64];
    for (int i = 1; i <= 2; i++) {
        int len = snprintf(line, sizeof line, "hello number %d from %s\n", i, m->name);
        CHECK(cio_stream_write(m->s, line, (size_t)len));
    }
    expect_lines(m, "[", 4);
    printf("%s: got the 4 lines of the two others\n", m->name);
    EXPECT(cio_barrier_wait(&t->chatted) >= 0);

    /* Phase 2: alice floods, bob and carol read it all. */
    if (strcmp(m->name, "alice") == 0) {
        char flood[128 - 8]; /* "[alice] " and these: 128 bytes a line */
        memset(flood, 'x', sizeof flood);
        flood[sizeof flood - 1] = '\n';
        for (int i = 0; i < FLOOD_LINES; i++) {
            CHECK(cio_stream_write(m->s, flood, sizeof flood));
            CHECK(cio_stream_drain(m->s));
        }
        printf("alice: sent %d lines\n", FLOOD_LINES);
    } else {
        expect_lines(m, "[alice] xxx", FLOOD_LINES);
        printf("%s: received all %d of them\n", m->name, FLOOD_LINES);
    }
    EXPECT(cio_barrier_wait(&t->flooded) >= 0);
    CHECK(cio_stream_close(m->s));
    return 0;
}

/* Joins, then reads nothing until the flood is over. */
static int slowpoke(void *arg, void **result)
{
    (void)result;
    member *m = arg;
    test *t = m->t;
    join(m, true);
    EXPECT(cio_barrier_wait(&t->all_in) >= 0);
    EXPECT(cio_barrier_wait(&t->chatted) >= 0);
    EXPECT(cio_barrier_wait(&t->flooded) >= 0);
    /* What the kernel still held for us arrives, then the server's close
     * (within 5 s, or the test fails rather than hangs). */
    char line[LINE_MAX_BYTES];
    int flood = 0;
    ssize_t n;
    cio_scope_t sc;
    CHECK(cio_scope_enter(&sc, 5.0, 0));
    while ((n = cio_stream_readline(m->s, line, sizeof line)) > 0)
        flood += strncmp(line, "[alice] xxx", 11) == 0;
    cio_scope_exit(&sc);
    EXPECT(n == 0 || n == -ECONNRESET);
    printf("%s: disconnected after %d of the %d lines\n", m->name, flood, FLOOD_LINES);
    EXPECT(flood < FLOOD_LINES);
    cio_stream_close(m->s); /* the connection is gone already: nothing to flush */
    return 0;
}

static int selftest(void *arg, void **result)
{
    (void)arg;
    (void)result;
    room r = {.members = {.next = &r.members, .prev = &r.members}};
    cio_server_opts_t opts = {.stream = &stream_opts};
    cio_server_t *srv;
    CHECK(cio_start_server(&srv, "127.0.0.1", 0, handle_client, &r, &opts));
    test t = {.port = cio_server_port(srv)};
    printf("chat server on 127.0.0.1:%d (backend %s)\n", t.port,
           cio_loop_backend(cio_get_running_loop()));
    enum { MEMBERS = 4 };
    CHECK(cio_barrier_init(&t.all_in, MEMBERS));
    CHECK(cio_barrier_init(&t.chatted, MEMBERS));
    CHECK(cio_barrier_init(&t.flooded, MEMBERS));
    member m[MEMBERS] = {{&t, "alice", NULL}, {&t, "bob", NULL}, {&t, "carol", NULL},
                         {&t, "mallory", NULL}};
    cio_task_t *tasks[MEMBERS];
    for (int i = 0; i < MEMBERS; i++)
        CHECK(cio_spawn(&tasks[i], i < 3 ? chatter : slowpoke, &m[i]));
    CHECK(cio_gather(tasks, MEMBERS, NULL, NULL, 0));
    for (int i = 0; i < MEMBERS; i++)
        cio_future_release(tasks[i]);

    CHECK(cio_server_close(srv));
    CHECK(cio_server_wait_closed(srv, 5.0));
    CHECK(cio_server_free(srv));
    EXPECT(r.kicked == 1 && r.count == 0);
    puts("selftest passed");
    return 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc > 1 && strcmp(argv[1], "--selftest") == 0)
        return cio_run(selftest, NULL) == 0 ? 0 : 1;
    int port = port_arg(argc > 1 ? argv[1] : NULL, 8889);
    return cio_run(serve, &port) == 0 ? 0 : 1;
}
