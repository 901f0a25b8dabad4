/*
 * What the two downloaders of seed 003 share (fetcher.c with tasks,
 * fetcher_threads.c with a thread pool): the list of URLs, URL parsing, the
 * reading of a response head, and a local stand-in for the two web sites
 * of the seed, so that both run anywhere and can be compared.
 *
 * The stand-in is an HTTP/1.1 server on cio streams serving two pages of
 * the sizes the seed reports (https://www.jython.org: 10966 bytes,
 * http://olympus.realpython.org/dice: 276 bytes), each after a delay that
 * plays the part of the network and the remote server (20 ms by default).
 * It keeps connections alive, as the sites do. The real request parser is
 * in http_hello.c; this one only needs the path and Connection: close.
 */
#ifndef CIO_FETCH_H
#define CIO_FETCH_H

#include "example.h"

#include <stdint.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define FETCH_SITES 160   /* ["https://www.jython.org", ".../dice"] * 80 */
#define FETCH_WORKERS 5   /* ThreadPoolExecutor(max_workers=5) */
#define FETCH_LATENCY 0.02

/* ------------------------------------------------------------------------ */
/* Command line                                                               */
/* ------------------------------------------------------------------------ */

typedef struct fetch_args {
    int sites;          /* -n: how many downloads */
    int workers;        /* -k: at most this many at once */
    double latency;     /* -l: the stand-in's delay per request */
    const char *url;    /* a URL of your own instead of the stand-in */
} fetch_args;

static inline void fetch_usage(const char *prog)
{
    fprintf(stderr,
            "usage: %s [-n DOWNLOADS] [-k AT_ONCE] [-l LATENCY] [http://HOST[:PORT]/PATH]\n"
            "  without a URL, downloads the two pages of a local stand-in for the\n"
            "  seed's sites, alternately (defaults: -n %d -k %d -l %g)\n",
            prog, FETCH_SITES, FETCH_WORKERS, FETCH_LATENCY);
    exit(2);
}

static inline fetch_args fetch_parse_args(int argc, char **argv)
{
    fetch_args a = {FETCH_SITES, FETCH_WORKERS, FETCH_LATENCY, NULL};
    int opt;
    while ((opt = getopt(argc, argv, "n:k:l:")) != -1) {
        char *end = NULL;
        switch (opt) {
        case 'n':
            a.sites = (int)strtol(optarg, &end, 10);
            break;
        case 'k':
            a.workers = (int)strtol(optarg, &end, 10);
            break;
        case 'l':
            a.latency = strtod(optarg, &end);
            break;
        default:
            fetch_usage(argv[0]);
        }
        if (*end || a.sites < 1 || a.workers < 1 || a.workers > 1000 || !(a.latency >= 0))
            fetch_usage(argv[0]);
    }
    if (optind < argc)
        a.url = argv[optind++];
    if (optind < argc)
        fetch_usage(argv[0]);
    return a;
}

/* ------------------------------------------------------------------------ */
/* URLs and responses                                                         */
/* ------------------------------------------------------------------------ */

typedef struct url {
    char text[512];   /* as printed: "http://127.0.0.1:8080/www.jython.org" */
    char host[256];
    int port;
    const char *path; /* into text: "/www.jython.org" */
} url;

/* http://HOST[:PORT][/PATH] (no https: no TLS yet). 0 or -EINVAL. */
static inline int url_parse(url *u, const char *text)
{
    if (strncmp(text, "http://", 7) != 0 || strlen(text) >= sizeof u->text)
        return -EINVAL;
    snprintf(u->text, sizeof u->text, "%s", text);
    const char *h = u->text + 7;
    const char *slash = strchr(h, '/');
    size_t hlen = slash ? (size_t)(slash - h) : strlen(h);
    u->path = slash ? slash : "/";
    const char *colon = memchr(h, ':', hlen);
    u->port = 80;
    if (colon) {
        char *end;
        long port = strtol(colon + 1, &end, 10);
        if (end != h + hlen || port < 1 || port > 65535)
            return -EINVAL;
        u->port = (int)port;
        hlen = (size_t)(colon - h);
    }
    if (hlen == 0 || hlen >= sizeof u->host)
        return -EINVAL;
    memcpy(u->host, h, hlen);
    u->host[hlen] = '\0';
    return 0;
}

/* The request for u, keeping the connection open: its length. */
static inline int request_text(const url *u, char *buf, size_t cap)
{
    return snprintf(buf, cap, "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: cio-fetch\r\n\r\n",
                    u->path, u->host, u->port);
}

typedef struct response {
    int status;
    long long length; /* Content-Length, -1 when absent (the body ends at EOF) */
    bool keep_alive;  /* the connection may carry the next request */
} response;

/* Parses a response head (status line and headers, NUL-terminated).
 * 0, or -EPROTO for what this small client does not handle. */
static inline int response_parse(response *r, const char *head)
{
    int minor;
    if (sscanf(head, "HTTP/1.%d %d", &minor, &r->status) != 2)
        return -EPROTO;
    r->length = -1;
    r->keep_alive = minor >= 1;
    for (const char *p = strstr(head, "\n"); p && p[1]; p = strstr(p + 1, "\n")) {
        const char *h = p + 1;
        if (strncasecmp(h, "Content-Length:", 15) == 0)
            r->length = strtoll(h + 15, NULL, 10);
        else if (strncasecmp(h, "Connection:", 11) == 0)
            r->keep_alive = strncasecmp(h + 11 + strspn(h + 11, " \t"), "close", 5) != 0 &&
                            (minor >= 1 || strcasestr(h, "keep-alive"));
        else if (strncasecmp(h, "Transfer-Encoding:", 18) == 0)
            return -EPROTO; /* chunked: not in this small client */
    }
    if (r->length < 0)
        r->keep_alive = false; /* the body runs to EOF */
    return 0;
}

/* The sites to download: n URLs alternating between the stand-in's two
 * pages, or n times the URL given. NULL and a message on a bad URL. */
static inline url *site_list(const fetch_args *a, int port)
{
    url *sites = calloc((size_t)a->sites, sizeof *sites);
    EXPECT(sites != NULL);
    for (int i = 0; i < a->sites; i++) {
        char text[128];
        if (!a->url)
            snprintf(text, sizeof text, "http://127.0.0.1:%d/%s", port,
                     i % 2 ? "olympus.realpython.org/dice" : "www.jython.org");
        if (url_parse(&sites[i], a->url ? a->url : text) < 0) {
            fprintf(stderr, "not an http:// URL: %s\n", a->url);
            free(sites);
            return NULL;
        }
    }
    return sites;
}

/* ------------------------------------------------------------------------ */
/* The stand-in for the two sites                                             */
/* ------------------------------------------------------------------------ */

typedef struct page_server {
    cio_server_t *srv;
    int port;
    double latency;
    unsigned long requests, connections;
} page_server;

/* The two pages: HTML-ish text of the sizes the seed printed. */
static const char *page_body(const char *path, size_t *len)
{
    static char jython[10966], dice[276];
    if (!jython[0]) {
        memset(jython, '.', sizeof jython);
        memcpy(jython, "<html>Jython", 12);
        memset(dice, '.', sizeof dice);
        memcpy(dice, "<html>dice", 10);
    }
    if (strcmp(path, "/www.jython.org") == 0) {
        *len = sizeof jython;
        return jython;
    }
    if (strcmp(path, "/olympus.realpython.org/dice") == 0) {
        *len = sizeof dice;
        return dice;
    }
    return NULL;
}

/* One task per connection: requests one after the other (keep-alive). */
static void page_handler(cio_stream_t *s, void *arg)
{
    page_server *ps = arg;
    ps->connections++;
    char head[4096], path[256], out[256];
    ssize_t n;
    while ((n = cio_stream_readuntil(s, "\r\n\r\n", 4, head, sizeof head - 1, NULL)) > 0) {
        head[n] = '\0';
        if (sscanf(head, "GET %255s HTTP/1.", path) != 1)
            break;
        bool close = strcasestr(head, "\nConnection: close") != NULL;
        size_t len;
        const char *body = page_body(path, &len);
        if (!body) {
            body = "no such page\n";
            len = strlen(body);
        }
        if (cio_sleep(ps->latency) < 0) /* the network and the far end */
            break;
        int hlen = snprintf(out, sizeof out,
                            "HTTP/1.1 %s\r\nContent-Type: text/html\r\nContent-Length: %zu\r\n%s\r\n",
                            body[0] == '<' ? "200 OK" : "404 Not Found", len,
                            close ? "Connection: close\r\n" : "");
        struct iovec iov[2] = {{out, (size_t)hlen}, {(void *)body, len}};
        if (cio_stream_writev(s, iov, 2) < 0 || cio_stream_drain(s) < 0)
            break;
        ps->requests++;
        if (close)
            break;
    }
    cio_stream_close(s);
}

/* Starts the stand-in on a free loopback port (await point). */
static inline int page_server_start(page_server *ps, double latency)
{
    *ps = (page_server){.latency = latency};
    int rc = cio_start_server(&ps->srv, "127.0.0.1", 0, page_handler, ps, NULL);
    if (rc == 0)
        ps->port = cio_server_port(ps->srv);
    return rc;
}

/* Stops it once the clients have closed their connections (await point). */
static inline void page_server_stop(page_server *ps)
{
    cio_server_close(ps->srv);
    if (cio_server_wait_closed(ps->srv, 2.0) == -ETIMEDOUT) {
        cio_server_abort_clients(ps->srv); /* a client kept a connection */
        cio_server_wait_closed(ps->srv, 2.0);
    }
    CHECK(cio_server_free(ps->srv));
    printf("(stand-in server: %lu request(s) on %lu connection(s))\n", ps->requests,
           ps->connections);
}

#endif /* CIO_FETCH_H */
