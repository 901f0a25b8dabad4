/*
 * The cio server of workload 6 (shared BENCH.md, "http"): HTTP/1.1 with
 * keep-alive, every request answered with 200, Content-Type: text/plain,
 * Content-Length: 13 and the body "Hello, World!". Load: wrk (bench/net.sh).
 *
 *   bench_http_server [-p PORT] [--backend epoll|uring] [--protocol] [-t SECONDS]
 *
 * Streams (the default): one task per connection parsing with
 * cio_stream_parse, whose hook reads the stream's buffer in place: it
 * answers every complete request in the buffer (pipelining), the handler
 * writes all their responses and drains once. --protocol: transports, the
 * same parser run in data_received, a partial request kept across calls.
 *
 * The parser is small but real: the request line must be METHOD SP TARGET
 * SP HTTP/1.x CRLF, header lines NAME: VALUE CRLF, the head is bounded
 * (8 KiB), a body announced by Content-Length (up to 8 KiB) is skipped,
 * Transfer-Encoding is refused; HTTP/1.0 and Connection: close end the
 * connection after their response. A bad request is answered 400 and the
 * connection closed. Port 8080 by default; runs until SIGTERM/SIGINT or
 * -t SECONDS, then prints its counts on stderr.
 */
#include "bench_net.h"

#include <strings.h>

#define MAX_HEAD 8192
#define MAX_BODY 8192
#define MAX_IOV 64

static const char RESP[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                           "Content-Length: 13\r\n\r\nHello, World!";
static const char RESP_CLOSE[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                                 "Content-Length: 13\r\nConnection: close\r\n\r\nHello, World!";
static const char RESP_BAD[] = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
                               "Connection: close\r\n\r\n";

typedef struct http_stats {
    uint64_t conns, reqs, bad;
    net_ends_t ends;
} http_stats_t;

/* ------------------------------------------------------------ parser --- */

/* The requests found at the front of a buffer. */
typedef struct http_batch {
    unsigned nreq; /* complete, valid requests */
    bool close;    /* the last of them ends the connection */
    bool bad;      /* a malformed request follows them */
} http_batch_t;

/* RFC 9110 tchar: the characters of a method or header name. */
static bool is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* Length of the token at p (within n bytes). */
static size_t token_len(const char *p, size_t n)
{
    size_t i = 0;
    while (i < n && is_tchar((unsigned char)p[i]))
        i++;
    return i;
}

/* "METHOD SP TARGET SP HTTP/1.x" in [p, p + n) (the line without CRLF).
 * Sets *close for HTTP/1.0, whose default is not to keep the connection. */
static bool parse_request_line(const char *p, size_t n, bool *close)
{
    size_t m = token_len(p, n);
    if (m == 0 || m >= n || p[m] != ' ')
        return false;
    size_t t = m + 1, u = t;
    while (u < n && p[u] > ' ' && p[u] < 0x7f)
        u++;
    if (u == t || u >= n || p[u] != ' ')
        return false;
    const char *v = p + u + 1;
    if (n - u - 1 != 8 || memcmp(v, "HTTP/1.", 7) != 0 || (v[7] != '0' && v[7] != '1'))
        return false;
    *close = v[7] == '0';
    return true;
}

/* Whether the comma-separated header value [v, v + n) holds token tok. */
static bool has_token(const char *v, size_t n, const char *tok)
{
    size_t tl = strlen(tok);
    for (size_t i = 0; i < n;) {
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t j = i;
        while (j < n && v[j] != ',' && v[j] != ' ' && v[j] != '\t')
            j++;
        if (j - i == tl && strncasecmp(v + i, tok, tl) == 0)
            return true;
        i = j;
    }
    return false;
}

/* The state a request's headers leave. */
typedef struct http_head {
    size_t body;
    bool close, bad;
} http_head_t;

/* One header line "NAME: VALUE" (without CRLF). */
static void parse_header(const char *p, size_t n, http_head_t *h)
{
    size_t k = token_len(p, n);
    if (k == 0 || k >= n || p[k] != ':') {
        h->bad = true;
        return;
    }
    const char *v = p + k + 1;
    size_t vn = n - k - 1;
    while (vn && (*v == ' ' || *v == '\t'))
        v++, vn--;
    if (k == 14 && strncasecmp(p, "Content-Length", 14) == 0) {
        size_t len = 0, i = 0;
        for (; i < vn && v[i] >= '0' && v[i] <= '9' && len <= MAX_BODY; i++)
            len = len * 10 + (size_t)(v[i] - '0');
        while (i < vn && (v[i] == ' ' || v[i] == '\t'))
            i++;
        if (i == 0 || i < vn || len > MAX_BODY)
            h->bad = true;
        h->body = len;
    } else if (k == 17 && strncasecmp(p, "Transfer-Encoding", 17) == 0) {
        h->bad = true; /* chunked bodies are not supported: refuse them */
    } else if (k == 10 && strncasecmp(p, "Connection", 10) == 0) {
        if (has_token(v, vn, "close"))
            h->close = true;
        else if (has_token(v, vn, "keep-alive"))
            h->close = false;
    }
}

/*
 * One request at the front of [p, p + n): returns its length (head and
 * body), 0 when it is not complete yet, -1 when it is malformed (or its
 * head is past MAX_HEAD). *close tells whether it ends the connection.
 */
static long parse_request(const char *p, size_t n, bool *close)
{
    size_t lim = n < MAX_HEAD ? n : MAX_HEAD;
    const char *end = memmem(p, lim, "\r\n\r\n", 4);
    if (!end)
        return n >= MAX_HEAD ? -1 : 0;
    size_t head = (size_t)(end - p) + 4;
    const char *eol = memmem(p, head, "\r\n", 2); /* found: head ends in one */
    http_head_t h = {0};
    if (!parse_request_line(p, (size_t)(eol - p), &h.close))
        return -1;
    for (const char *l = eol + 2; l < end && !h.bad; l = eol + 2) {
        eol = memmem(l, (size_t)(end + 2 - l), "\r\n", 2);
        parse_header(l, (size_t)(eol - l), &h);
    }
    if (h.bad)
        return -1;
    if (n - head < h.body)
        return 0;
    *close = h.close;
    return (long)(head + h.body);
}

/* Every complete request at the front of [p, p + n), up to the first that
 * ends the connection or is malformed; returns the bytes they take. */
static size_t parse_batch(const char *p, size_t n, http_batch_t *b)
{
    size_t used = 0;
    *b = (http_batch_t){0};
    while (used < n && !b->close) {
        long r = parse_request(p + used, n - used, &b->close);
        if (r < 0)
            b->bad = true;
        if (r <= 0)
            break;
        used += (size_t)r;
        b->nreq++;
    }
    return used;
}

/* Fills iov with the responses of requests [done, done + k) of a batch of
 * nreq (the last one says Connection: close when the batch closes). */
static int fill_iov(struct iovec *iov, const http_batch_t *b, unsigned done, unsigned k)
{
    for (unsigned i = 0; i < k; i++) {
        bool last_close = b->close && done + i + 1 == b->nreq;
        iov[i].iov_base = (void *)(last_close ? RESP_CLOSE : RESP);
        iov[i].iov_len = last_close ? sizeof RESP_CLOSE - 1 : sizeof RESP - 1;
    }
    return (int)k;
}

/* ----------------------------------------------------- streams form --- */

/* The consume hook: answers every complete request buffered. A malformed
 * request is reported (-EPROTO) only once the good ones before it are
 * consumed and answered, so that pipelined requests keep their order. */
static ssize_t parse_hook(void *arg, const char *data, size_t n, bool eof)
{
    (void)eof; /* 0 at EOF: cio_stream_parse returns -ENODATA */
    http_batch_t *b = arg;
    size_t used = parse_batch(data, n, b);
    if (used > 0)
        return (ssize_t)used;
    return b->bad ? -EPROTO : 0;
}

/* Queues the responses of a batch and drains once. */
static int stream_respond(cio_stream_t *s, const http_batch_t *b)
{
    struct iovec iov[MAX_IOV];
    for (unsigned done = 0; done < b->nreq;) {
        unsigned k = b->nreq - done < MAX_IOV ? b->nreq - done : MAX_IOV;
        int rc = cio_stream_writev(s, iov, fill_iov(iov, b, done, k));
        if (rc < 0)
            return rc;
        done += k;
    }
    return cio_stream_drain(s);
}

static void http_handler(cio_stream_t *s, void *arg)
{
    http_stats_t *st = arg;
    st->conns++;
    for (;;) {
        http_batch_t b;
        ssize_t r = cio_stream_parse(s, parse_hook, &b, MAX_HEAD + MAX_BODY);
        if (r == -EPROTO || r == -EOVERFLOW) {
            st->bad++;
            cio_stream_write(s, RESP_BAD, sizeof RESP_BAD - 1);
            return; /* the server closes s, flushing the 400 */
        }
        if (r < 0) { /* -ENODATA: the peer closed (mid-request or not) */
            if (r != -ENODATA)
                net_count_end(&st->ends, r);
            return;
        }
        st->reqs += b.nreq;
        int rc = stream_respond(s, &b);
        if (rc < 0 || b.close) {
            net_count_end(&st->ends, rc);
            return;
        }
    }
}

/* ---------------------------------------------------- protocol form --- */

/* A connection: the start of a request that has not fully arrived. */
typedef struct http_conn {
    http_stats_t *st;
    char *pend;
    size_t len, cap;
} http_conn_t;

/* Answers the complete requests at the front of [p, p + n); returns the
 * bytes they take, or -1 when the connection is being closed. */
static long proto_serve(cio_transport_t *t, http_conn_t *c, const char *p, size_t n)
{
    http_batch_t b;
    size_t used = parse_batch(p, n, &b);
    c->st->reqs += b.nreq;
    struct iovec iov[MAX_IOV];
    for (unsigned done = 0; done < b.nreq;) {
        unsigned k = b.nreq - done < MAX_IOV ? b.nreq - done : MAX_IOV;
        int rc = cio_transport_writev(t, iov, fill_iov(iov, &b, done, k));
        if (rc < 0) {
            /* A lost connection's error reaches http_lost, which counts
             * it; an abort gives it 0, so count our own failures here. */
            if (rc == -ENOBUFS || rc == -ENOMEM)
                c->st->ends.errors++;
            cio_transport_abort(t);
            return -1;
        }
        done += k;
    }
    if (b.bad) {
        c->st->bad++;
        cio_transport_write(t, RESP_BAD, sizeof RESP_BAD - 1);
    }
    if (b.bad || b.close) {
        cio_transport_close(t); /* flushes the responses first */
        return -1;
    }
    return (long)used;
}

/* Keeps [p, p + n) as the pending start of a request; false without memory. */
static bool keep(http_conn_t *c, const char *p, size_t n)
{
    if (c->len + n > c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 1024;
        while (cap < c->len + n)
            cap *= 2;
        char *q = realloc(c->pend, cap);
        if (!q)
            return false;
        c->pend = q, c->cap = cap;
    }
    memmove(c->pend + c->len, p, n);
    c->len += n;
    return true;
}

/* Requests are parsed in place in the received bytes; only a partial one
 * at the end is copied, and joined with what comes next. */
static void http_data(cio_transport_t *t, const void *data, size_t n, void *ctx)
{
    http_conn_t *c = ctx;
    const char *p = data;
    if (c->len) {
        if (!keep(c, p, n))
            goto nomem;
        p = c->pend, n = c->len;
    }
    long used = proto_serve(t, c, p, n);
    if (used < 0)
        return;
    size_t rest = n - (size_t)used;
    if (p == c->pend) {
        c->len = 0;
        p = c->pend + used; /* kept below: moved to the front */
    }
    if (rest && !keep(c, p, rest))
        goto nomem;
    return;
nomem:
    c->st->ends.errors++;
    cio_transport_abort(t);
}

static void http_made(cio_transport_t *t, void *ctx)
{
    (void)t;
    ((http_conn_t *)ctx)->st->conns++;
}

/* The last call: the connection's state is freed here. */
static void http_lost(cio_transport_t *t, int err, void *ctx)
{
    (void)t;
    http_conn_t *c = ctx;
    net_count_end(&c->st->ends, err);
    free(c->pend);
    free(c);
}

static const cio_protocol_t http_protocol = {
    .connection_made = http_made,
    .data_received = http_data,
    .connection_lost = http_lost,
};

static int http_factory(void *arg, const cio_protocol_t **proto, void **ctx)
{
    http_conn_t *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    c->st = arg;
    *proto = &http_protocol;
    *ctx = c;
    return 0;
}

int main(int argc, char **argv)
{
    static http_stats_t st;
    net_app_t a = {
        .name = "http_server",
        .o = {.port = 8080, .backend = CIO_BACKEND_EPOLL},
        .handler = http_handler,
        .factory = http_factory,
        .arg = &st,
    };
    if (!net_parse(&a, argc, argv))
        return net_usage(&a);
    int status = net_run(&a);
    fprintf(stderr,
            "http_server: %.1f s: %llu connections, %llu requests, %llu bad requests, "
            "%llu resets, %llu other errors\n",
            a.served, (unsigned long long)st.conns, (unsigned long long)st.reqs,
            (unsigned long long)st.bad, (unsigned long long)st.ends.resets,
            (unsigned long long)st.ends.errors);
    return status;
}
