/*
 * An HTTP/1.1 "Hello, World!" server on streams, with keep-alive and
 * pipelining, and a small request parser of its own run as the stream's
 * consume hook (cio_stream_parse): the parser looks at the bytes in the
 * stream's buffer where they lie, and the request is consumed only once it
 * is complete.
 *
 *   ./http_hello [PORT]       serves on every local address, port 8080 by
 *                             default, until Ctrl-C: curl http://localhost:8080/
 *   ./http_hello --selftest   the server on a free loopback port and, in the
 *                             same loop, a client checking keep-alive,
 *                             pipelining, Connection: close, HTTP/1.0, bodies,
 *                             oversized and malformed requests
 *
 * What it does, per RFC 9112:
 *   - GET and HEAD of / answer 200 "Hello, World!"; other targets 404; other
 *     methods 405 (their Content-Length body is read and dropped);
 *   - a connection serves requests until the client says Connection: close,
 *     or sends HTTP/1.0 without Connection: keep-alive, or stays idle for
 *     KEEPALIVE_TIMEOUT seconds;
 *   - several requests arriving in one read (pipelining) are answered in
 *     order, each as soon as it is parsed;
 *   - the request line and headers together are bounded (MAX_HEAD): beyond
 *     it the answer is 431 and the connection closes; a malformed request
 *     gets 400, a body announced with Transfer-Encoding 501, an HTTP version
 *     other than 1.x 505, all followed by a close.
 * Lines may end in CRLF or a bare LF (RFC 9112, section 2.2).
 */
#include "example.h"

#include <math.h>
#include <string.h>
#include <strings.h>

#define MAX_HEAD 8192          /* request line and headers */
#define MAX_BODY (1024 * 1024) /* request bodies, read and dropped */
#define KEEPALIVE_TIMEOUT 15.0 /* seconds to wait for (the rest of) a request */
#define LINGER 2.0             /* seconds a closing connection drops input */

/* ------------------------------------------------------------------------ */
/* The parser                                                                 */
/* ------------------------------------------------------------------------ */

typedef struct request {
    char method[16];
    bool root;             /* the target is "/" */
    int minor;             /* HTTP/1.<minor> */
    bool keep_alive;       /* the connection may serve another request */
    bool has_length;
    size_t content_length;
    int status;            /* an error to answer (400, 413, ...), else 0 */
} request;

/* The next line of data[*pos, n): its start and length without "\r\n" or
 * "\n". False when no complete line is there yet. */
static bool next_line(const char *data, size_t n, size_t *pos, const char **line, size_t *len)
{
    const char *nl = memchr(data + *pos, '\n', n - *pos);
    if (!nl)
        return false;
    *line = data + *pos;
    *len = (size_t)(nl - *line);
    if (*len && (*line)[*len - 1] == '\r')
        --*len;
    *pos = (size_t)(nl - data) + 1;
    return true;
}

/* RFC 9110 tchar: the characters of a method or a header name. */
static bool is_tchar(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* Case-insensitive comparison of [p, p + n) with a NUL-terminated word. */
static bool word_is(const char *p, size_t n, const char *word)
{
    return strlen(word) == n && strncasecmp(p, word, n) == 0;
}

static void trim(const char **p, size_t *n)
{
    while (*n && (**p == ' ' || **p == '\t'))
        ++*p, --*n;
    while (*n && ((*p)[*n - 1] == ' ' || (*p)[*n - 1] == '\t'))
        --*n;
}

/* "GET / HTTP/1.1": false if malformed (rq->status says why). */
static bool parse_request_line(request *rq, const char *line, size_t len)
{
    const char *sp1 = memchr(line, ' ', len);
    const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', len - (size_t)(sp1 + 1 - line)) : NULL;
    if (!sp2 || sp1 == line || sp2 == sp1 + 1 || (size_t)(sp1 - line) >= sizeof rq->method)
        return false;
    for (const char *p = line; p < sp1; p++)
        if (!is_tchar(*p))
            return false;
    for (const char *p = sp1 + 1; p < sp2; p++)
        if ((unsigned char)*p <= ' ' || *p == 0x7f)
            return false;
    memcpy(rq->method, line, (size_t)(sp1 - line));
    rq->method[sp1 - line] = '\0';
    rq->root = sp2 - sp1 == 2 && sp1[1] == '/';
    const char *v = sp2 + 1;
    size_t vlen = len - (size_t)(v - line);
    if (vlen == 8 && memcmp(v, "HTTP/1.", 7) == 0 && v[7] >= '0' && v[7] <= '9') {
        rq->minor = v[7] - '0';
        return true;
    }
    if (vlen >= 5 && memcmp(v, "HTTP/", 5) == 0)
        rq->status = 505; /* HTTP/2.0, HTTP/0.9, ... */
    return false;
}

/* One header line; false if malformed or refused (rq->status says why). */
static bool parse_header(request *rq, const char *line, size_t len, bool *close,
                         bool *keep, bool *host)
{
    const char *colon = memchr(line, ':', len);
    if (!colon || colon == line)
        return false; /* also obs-fold, a line starting with a space */
    for (const char *p = line; p < colon; p++)
        if (!is_tchar(*p))
            return false; /* a space before the colon, ... */
    size_t nlen = (size_t)(colon - line);
    const char *value = colon + 1;
    size_t vlen = len - nlen - 1;
    trim(&value, &vlen);
    if (word_is(line, nlen, "Host")) {
        if (*host)
            return false; /* RFC 9112, 3.2: exactly one */
        *host = true;
    } else if (word_is(line, nlen, "Connection")) {
        /* a list of tokens: "keep-alive, Upgrade" */
        while (vlen) {
            const char *comma = memchr(value, ',', vlen);
            size_t k = comma ? (size_t)(comma - value) : vlen;
            const char *tok = value;
            size_t tlen = k;
            trim(&tok, &tlen);
            *close |= word_is(tok, tlen, "close");
            *keep |= word_is(tok, tlen, "keep-alive");
            value += comma ? k + 1 : k;
            vlen -= comma ? k + 1 : k;
        }
    } else if (word_is(line, nlen, "Content-Length")) {
        size_t n = 0;
        if (!vlen)
            return false;
        for (size_t i = 0; i < vlen; i++) {
            if (value[i] < '0' || value[i] > '9')
                return false;
            if (n > MAX_BODY) { /* stop before it could overflow */
                rq->status = 413;
                return false;
            }
            n = n * 10 + (size_t)(value[i] - '0');
        }
        if (rq->has_length && n != rq->content_length)
            return false; /* two different lengths: which one frames it? */
        if (n > MAX_BODY) {
            rq->status = 413;
            return false;
        }
        rq->has_length = true;
        rq->content_length = n;
    } else if (word_is(line, nlen, "Transfer-Encoding")) {
        rq->status = 501; /* chunked bodies: not in a hello-world server */
        return false;
    }
    return true;
}

/*
 * The consume hook: called by cio_stream_parse with every byte buffered so
 * far, each time more arrive. Returns 0 while the head (request line and
 * headers, up to an empty line) is incomplete, the head's length once it is
 * there (cio_stream_parse consumes that much and returns it), or -EMSGSIZE
 * when no head ends within MAX_HEAD bytes. A malformed head is consumed too,
 * with rq->status set: the handler answers it.
 *
 * It reads only the head of the buffer: the bytes after it (a body, the
 * next pipelined request) stay buffered for the next call. Rescanning from
 * the start on each call is fine within an 8 KiB bound.
 */
static ssize_t parse_request(void *arg, const char *data, size_t n, bool eof)
{
    (void)eof; /* at EOF an incomplete head is just incomplete: -ENODATA */
    request *rq = arg;
    size_t end = n < MAX_HEAD ? n : MAX_HEAD;
    size_t pos = 0;
    const char *line;
    size_t len;
    /* Find the empty line that ends the head (blank lines before the request
     * line are skipped, as RFC 9112 asks). */
    bool started = false;
    for (;;) {
        if (!next_line(data, end, &pos, &line, &len))
            return n >= MAX_HEAD ? -EMSGSIZE : 0;
        if (len == 0 && started)
            break;
        started |= len != 0;
    }
    size_t head = pos;

    *rq = (request){.status = 0};
    pos = 0;
    do
        next_line(data, head, &pos, &line, &len);
    while (len == 0);
    if (!parse_request_line(rq, line, len)) {
        rq->status = rq->status ? rq->status : 400;
        return (ssize_t)head;
    }
    bool close = false, keep = false, host = false;
    while (next_line(data, head, &pos, &line, &len) && len) {
        if (!parse_header(rq, line, len, &close, &keep, &host)) {
            rq->status = rq->status ? rq->status : 400;
            return (ssize_t)head;
        }
    }
    if (rq->minor >= 1 && !host)
        rq->status = 400; /* RFC 9112, 3.2: HTTP/1.1 requests carry a Host */
    /* HTTP/1.1 keeps the connection unless told to close; 1.0 closes
     * unless told to keep it. */
    rq->keep_alive = rq->minor >= 1 ? !close : keep && !close;
    return (ssize_t)head;
}

/* ------------------------------------------------------------------------ */
/* Answers                                                                    */
/* ------------------------------------------------------------------------ */

static const char *reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Content Too Large";
    case 431: return "Request Header Fields Too Large";
    case 501: return "Not Implemented";
    case 505: return "HTTP Version Not Supported";
    default: return "Error";
    }
}

/* The Date header's value, formatted once a second. */
static const char *http_date(void)
{
    static char buf[40];
    static time_t last = -1;
    time_t now = time(NULL);
    if (now != last) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        last = now;
    }
    return buf;
}

/* Queues one response (not an await point: pipelined answers pile up in
 * order in the stream's output and go out together). */
static int respond(cio_stream_t *s, const request *rq, int status, bool keep)
{
    char body[64], head[512];
    int blen = status == 200 ? snprintf(body, sizeof body, "Hello, World!")
                             : snprintf(body, sizeof body, "%d %s\n", status, reason(status));
    int hlen = snprintf(head, sizeof head,
                        "HTTP/1.1 %d %s\r\n"
                        "Date: %s\r\n"
                        "Content-Type: text/plain\r\n"
                        "Content-Length: %d\r\n"
                        "%s%s\r\n",
                        status, reason(status), http_date(), blen,
                        status == 405 ? "Allow: GET, HEAD\r\n" : "",
                        !keep ? "Connection: close\r\n"
                              : rq->minor == 0 ? "Connection: keep-alive\r\n" : "");
    struct iovec iov[2] = {{head, (size_t)hlen}, {body, (size_t)blen}};
    bool head_only = strcmp(rq->method, "HEAD") == 0; /* the length, not the body */
    return cio_stream_writev(s, iov, head_only ? 1 : 2);
}

/* Reads and drops a request body of n bytes. */
static int skip_body(cio_stream_t *s, size_t n)
{
    char scratch[4096];
    while (n) {
        size_t k = n < sizeof scratch ? n : sizeof scratch;
        ssize_t r = cio_stream_readexactly(s, scratch, k, NULL);
        if (r < 0)
            return (int)r;
        n -= k;
    }
    return 0;
}

/*
 * Closes after the last answer. The client may still be sending (more
 * pipelined requests, a body we refused): a plain close with unread input
 * makes the kernel send a reset, which can destroy the answer before the
 * client reads it. So: send the answer and our EOF, drop whatever comes in
 * until the client closes too (at most LINGER seconds), then close (RFC
 * 9112, section 9.6).
 */
static void linger_close(cio_stream_t *s)
{
    if (cio_stream_write_eof(s) == 0) {
        char scratch[4096];
        cio_scope_t sc;
        CHECK(cio_scope_enter(&sc, LINGER, 0));
        while (cio_stream_read(s, scratch, sizeof scratch) > 0)
            ;
        cio_scope_exit(&sc);
    }
    cio_stream_close(s);
}

typedef struct stats {
    unsigned long connections, requests;
} stats;

/* The connection handler: one task per connection, one request at a time. */
static void handle_http(cio_stream_t *s, void *arg)
{
    stats *st = arg;
    st->connections++;
    for (;;) {
        request rq;
        /* The whole request (head and body) within KEEPALIVE_TIMEOUT; on a
         * kept-alive connection that is also how long it may stay idle. */
        cio_scope_t sc;
        CHECK(cio_scope_enter(&sc, KEEPALIVE_TIMEOUT, 0));
        ssize_t r = cio_stream_parse(s, parse_request, &rq, MAX_HEAD);
        if (r > 0 && !rq.status && rq.content_length)
            r = skip_body(s, rq.content_length);
        cio_scope_exit(&sc);
        if (r == -EMSGSIZE || r == -EOVERFLOW) {
            /* The head did not end within MAX_HEAD bytes. */
            request none = {.method = "GET", .minor = 1};
            if (respond(s, &none, 431, false) == 0)
                linger_close(s);
            break;
        }
        if (r < 0) {
            /* -ENODATA: EOF (between or inside requests), -ETIMEDOUT, errors */
            cio_stream_close(s);
            break;
        }
        st->requests++;
        int status = rq.status;
        if (!status && strcmp(rq.method, "GET") && strcmp(rq.method, "HEAD"))
            status = 405;
        else if (!status)
            status = rq.root ? 200 : 404;
        /* After a malformed request we cannot tell where the next begins. */
        bool keep = rq.keep_alive && !rq.status;
        if (respond(s, &rq, status, keep) < 0) {
            cio_stream_abort(s); /* the connection is gone */
            break;
        }
        if (!keep) {
            linger_close(s);
            break;
        }
        /* Waits only while the client lets answers pile up (above 64 KiB). */
        if (cio_stream_drain(s) < 0) {
            cio_stream_abort(s);
            break;
        }
    }
}

static int serve(void *arg, void **result)
{
    (void)result;
    int port = *(int *)arg;
    stats st = {0};
    cio_server_t *srv;
    int rc = cio_start_server(&srv, NULL, port, handle_http, &st, NULL);
    if (rc < 0) {
        fprintf(stderr, "cannot listen on port %d: %s\n", port, cio_strerror(rc));
        return rc;
    }
    printf("HTTP server on port %d (backend %s); try: curl http://localhost:%d/\n", port,
           cio_loop_backend(cio_get_running_loop()), port);
    rc = cio_server_serve_forever(srv);
    cio_server_abort_clients(srv);
    cio_server_wait_closed(srv, INFINITY);
    cio_server_free(srv);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* --selftest: a client checking the server's answers                        */
/* ------------------------------------------------------------------------ */

/* Reads one response: 1 with its status, 0 at EOF before it. */
static int read_response(cio_stream_t *s, bool head_request, int *status)
{
    char head[1024];
    size_t got;
    ssize_t n = cio_stream_readuntil(s, "\r\n\r\n", 4, head, sizeof head - 1, &got);
    if (n == -ENODATA && got == 0)
        return 0; /* the server closed the connection */
    CHECK((int)n);
    head[n] = '\0';
    EXPECT(sscanf(head, "HTTP/1.1 %d ", status) == 1);
    const char *cl = strcasestr(head, "\r\nContent-Length: ");
    EXPECT(cl != NULL);
    size_t len = strtoul(cl + 18, NULL, 10);
    char body[256];
    EXPECT(len < sizeof body);
    if (!head_request) {
        CHECK((int)cio_stream_readexactly(s, body, len, NULL));
        if (*status == 200)
            EXPECT(len == 13 && memcmp(body, "Hello, World!", 13) == 0);
    }
    return 1;
}

/*
 * Sends `requests` in one write (so they arrive together: pipelining), then
 * reads responses until the server closes, and checks their statuses.
 * heads[i] marks the HEAD requests (no body in their response).
 */
static void check(int port, const char *name, const char *requests, const int *want,
                  int nwant, const bool *heads)
{
    cio_stream_t *s;
    CHECK(cio_open_connection(&s, "127.0.0.1", port, NULL));
    CHECK(cio_stream_write(s, requests, strlen(requests)));
    printf("%-34s", name);
    int status, got = 0;
    cio_scope_t sc; /* a server that forgot to close fails the test, not hangs it */
    CHECK(cio_scope_enter(&sc, 5.0, 0));
    while (read_response(s, heads && got < nwant && heads[got], &status) == 1) {
        if (got < 6)
            printf(" %d", status);
        EXPECT(got < nwant && status == want[got]);
        got++;
    }
    EXPECT_RC(cio_scope_exit(&sc), 0);
    EXPECT(got == nwant);
    if (got > 6)
        printf(" ... (%d responses, in order)", got);
    puts(", then closed");
    CHECK(cio_stream_close(s));
}

#define GET(path) "GET " path " HTTP/1.1\r\nHost: localhost\r\n\r\n"
#define LAST_GET(path) "GET " path " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"

static int selftest(void *arg, void **result)
{
    (void)arg;
    (void)result;
    stats st = {0};
    cio_server_t *srv;
    CHECK(cio_start_server(&srv, "127.0.0.1", 0, handle_http, &st, NULL));
    int port = cio_server_port(srv);
    printf("HTTP server on 127.0.0.1:%d (backend %s)\n", port,
           cio_loop_backend(cio_get_running_loop()));

    check(port, "keep-alive, Connection: close:", GET("/") LAST_GET("/"),
          (int[]){200, 200}, 2, NULL);
    check(port, "pipelined GET, GET, HEAD, GET:",
          GET("/") GET("/nope") "HEAD / HTTP/1.1\r\nHost: localhost\r\n\r\n" LAST_GET("/"),
          (int[]){200, 404, 200, 200}, 4, (bool[]){false, false, true, false});
    check(port, "HTTP/1.0 (closes after one):", "GET / HTTP/1.0\r\n\r\nGET / HTTP/1.0\r\n\r\n",
          (int[]){200}, 1, NULL);
    check(port, "HTTP/1.0 with keep-alive:",
          "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET / HTTP/1.0\r\n\r\n",
          (int[]){200, 200}, 2, NULL);
    check(port, "POST with a body, then GET:",
          "POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 11\r\n\r\nhello=world"
          LAST_GET("/"),
          (int[]){405, 200}, 2, NULL);
    check(port, "bare LF line ends:", "GET / HTTP/1.1\nHost: localhost\nConnection: close\n\n",
          (int[]){200}, 1, NULL);
    check(port, "malformed request line:", "HELLO\r\n\r\n" GET("/"), (int[]){400}, 1, NULL);
    check(port, "space before a colon:", "GET / HTTP/1.1\r\nHost : x\r\n\r\n", (int[]){400}, 1,
          NULL);
    check(port, "HTTP/1.1 without Host:", "GET / HTTP/1.1\r\n\r\n", (int[]){400}, 1, NULL);
    check(port, "HTTP/2.0 request line:", "GET / HTTP/2.0\r\n\r\n", (int[]){505}, 1, NULL);
    check(port, "chunked body:",
          "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
          (int[]){501}, 1, NULL);
    check(port, "body of 2 MiB announced:",
          "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2097152\r\n\r\n", (int[]){413}, 1,
          NULL);

    /* A 10 KiB header: past MAX_HEAD. */
    char big[11 * 1024];
    int len = snprintf(big, sizeof big, "GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: ");
    memset(big + len, 'b', 10 * 1024);
    strcpy(big + len + 10 * 1024, "\r\n\r\n");
    check(port, "10 KiB of headers:", big, (int[]){431}, 1, NULL);

    /* 100 requests in one write, answered in order. */
    enum { PIPELINE = 100 };
    static char many[PIPELINE * sizeof GET("/")];
    static int want[PIPELINE];
    char *p = many;
    for (int i = 0; i < PIPELINE; i++) {
        bool last = i == PIPELINE - 1;
        bool found = i % 3 != 2;
        p += sprintf(p, "GET %s HTTP/1.1\r\nHost: x\r\n%s\r\n", found ? "/" : "/x",
                     last ? "Connection: close\r\n" : "");
        want[i] = found ? 200 : 404;
    }
    check(port, "100 pipelined requests:", many, want, PIPELINE, NULL);

    CHECK(cio_server_close(srv));
    CHECK(cio_server_wait_closed(srv, 5.0));
    CHECK(cio_server_free(srv));
    printf("server: %lu connection(s), %lu request(s)\n", st.connections, st.requests);
    puts("selftest passed");
    return 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc > 1 && strcmp(argv[1], "--selftest") == 0)
        return cio_run(selftest, NULL) == 0 ? 0 : 1;
    int port = port_arg(argc > 1 ? argv[1] : NULL, 8080);
    return cio_run(serve, &port) == 0 ? 0 : 1;
}
