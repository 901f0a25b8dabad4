/*
 * Seed 003's downloader with tasks instead of threads: one task per URL, at
 * most K downloads at once (a semaphore), connections kept alive and reused
 * through a small pool, all in one thread. Compare with fetcher_threads.c,
 * the seed's ThreadPoolExecutor version, which prints the same lines.
 *
 *   ./fetcher [-n N] [-k K] [-l LATENCY] [URL]
 *
 * Without a URL it starts a stand-in for the seed's two sites in the same
 * loop (fetch.h: pages of 10966 and 276 bytes, each served after LATENCY
 * seconds, 0.02 by default) and downloads N = 160 pages, K = 5 at a time.
 * With a URL (http:// only: no TLS yet) it downloads that N times, e.g.
 * ./fetcher -n 20 http://localhost:8080/ against ./http_hello.
 *
 * The Python it mirrors (aiohttp's session pools connections the same way):
 *
 *   async def download_site(session, sem, url):
 *       async with sem:
 *           async with session.get(url) as response:
 *               content = await response.read()
 *               print(f"Read {len(content)} from {url}")
 *
 *   async def download_all_sites(sites):
 *       sem = asyncio.Semaphore(5)
 *       async with aiohttp.ClientSession() as session:
 *           await asyncio.gather(*(download_site(session, sem, url) for url in sites))
 *
 *   start_time = time.time()
 *   asyncio.run(download_all_sites(sites))
 *   print(f"Downloaded {len(sites)} in {time.time() - start_time} seconds")
 */
#include "fetch.h"

#include <stdint.h>

#define DOWNLOAD_TIMEOUT 10.0 /* seconds for one page, connecting included */

/* The state the downloads share. No lock: they all run in one thread and
 * switch only at await points. */
typedef struct fetcher {
    cio_sem_t sem;          /* at most K downloads at once */
    cio_stream_t **idle;    /* kept-alive connections, at most K */
    int nidle;
    int in_flight, most_in_flight;
} fetcher;

typedef struct download {
    fetcher *f;
    const url *u;
} download;

/* A connection to u: a kept-alive one if there is one (*reused set). */
static int connection(fetcher *f, const url *u, cio_stream_t **s, bool *reused)
{
    *reused = f->nidle > 0;
    if (*reused) {
        *s = f->idle[--f->nidle];
        return 0;
    }
    return cio_open_connection(s, u->host, u->port, NULL);
}

/* One GET on s: the body's length in *len, the response in *r. */
static int get(cio_stream_t *s, const url *u, size_t *len, response *r)
{
    char head[8192];
    int n = request_text(u, head, sizeof head);
    int rc = cio_stream_write(s, head, (size_t)n);
    if (rc < 0)
        return rc;
    ssize_t got = cio_stream_readuntil(s, "\r\n\r\n", 4, head, sizeof head - 1, NULL);
    if (got < 0)
        return (int)got; /* -ENODATA: closed before answering */
    head[got] = '\0';
    if ((rc = response_parse(r, head)) < 0)
        return rc;
    /* response.read(): the body, counted and dropped */
    char buf[16384];
    *len = 0;
    while (r->length < 0 || *len < (size_t)r->length) {
        size_t want = sizeof buf;
        if (r->length >= 0 && (size_t)r->length - *len < want)
            want = (size_t)r->length - *len;
        ssize_t k = cio_stream_read(s, buf, want);
        if (k < 0)
            return (int)k;
        if (k == 0)
            return r->length < 0 ? 0 : -ENODATA; /* EOF: the end, or too early */
        *len += (size_t)k;
    }
    return 0;
}

static int fetch(fetcher *f, const url *u, size_t *len, response *r)
{
    for (int attempt = 0;; attempt++) {
        cio_stream_t *s;
        bool reused;
        int rc = connection(f, u, &s, &reused);
        if (rc < 0)
            return rc;
        rc = get(s, u, len, r);
        if (rc == 0 && r->keep_alive) {
            f->idle[f->nidle++] = s; /* back to the pool */
            return 0;
        }
        cio_stream_close(s);
        /* A kept-alive connection may have been closed by the server just
         * as we sent: try once more on a fresh one. */
        if (rc == 0 || !reused || attempt > 0 ||
            (rc != -ENODATA && rc != -ECONNRESET && rc != -EPIPE))
            return rc;
    }
}

static int download_site(void *arg, void **result)
{
    download *d = arg;
    fetcher *f = d->f;
    int rc = cio_sem_acquire(&f->sem); /* async with sem: */
    if (rc < 0)
        return rc;
    if (++f->in_flight > f->most_in_flight)
        f->most_in_flight = f->in_flight;
    size_t len = 0;
    response r = {0};
    cio_scope_t sc;
    CHECK(cio_scope_enter(&sc, DOWNLOAD_TIMEOUT, 0));
    rc = fetch(f, d->u, &len, &r);
    cio_scope_exit(&sc);
    f->in_flight--;
    cio_sem_release(&f->sem);
    if (rc < 0) {
        printf("Failed %s: %s\n", d->u->text, cio_strerror(rc));
        return rc;
    }
    if (r.status == 200)
        printf("Read %zu from %s\n", len, d->u->text);
    else
        printf("Read %zu from %s (status %d)\n", len, d->u->text, r.status);
    *result = (void *)(uintptr_t)len;
    return 0;
}

static int main_task(void *arg, void **result)
{
    (void)result;
    const fetch_args *a = arg;
    page_server ps = {0};
    if (!a->url)
        CHECK(page_server_start(&ps, a->latency));
    url *sites = site_list(a, ps.port);
    if (!sites)
        return -EINVAL;

    fetcher f = {0};
    CHECK(cio_sem_init(&f.sem, a->workers, false));
    f.idle = calloc((size_t)a->workers, sizeof *f.idle);
    download *d = calloc((size_t)a->sites, sizeof *d);
    cio_task_t **tasks = calloc((size_t)a->sites, sizeof *tasks);
    int *statuses = calloc((size_t)a->sites, sizeof *statuses);
    EXPECT(f.idle && d && tasks && statuses);

    double start = loop_now();
    for (int i = 0; i < a->sites; i++) {
        d[i] = (download){&f, &sites[i]};
        CHECK(cio_spawn(&tasks[i], download_site, &d[i]));
    }
    /* gather(..., return_exceptions=True): every download runs to its end */
    CHECK(cio_gather(tasks, (size_t)a->sites, NULL, statuses, CIO_GATHER_ALL));
    double duration = loop_now() - start;
    int failed = 0;
    for (int i = 0; i < a->sites; i++) {
        failed += statuses[i] < 0;
        cio_future_release(tasks[i]);
    }
    printf("Downloaded %d in %.3f seconds (at most %d at once, %d connection(s) kept)\n",
           a->sites - failed, duration, f.most_in_flight, f.nidle);
    if (failed)
        printf("%d download(s) failed\n", failed);
    EXPECT(f.most_in_flight <= a->workers);

    while (f.nidle)
        cio_stream_close(f.idle[--f.nidle]);
    if (!a->url)
        page_server_stop(&ps);
    free(statuses);
    free(tasks);
    free(d);
    free(f.idle);
    free(sites);
    return failed ? -EIO : 0;
}

int main(int argc, char **argv)
{
    fetch_args a = fetch_parse_args(argc, argv);
    return cio_run(main_task, &a) == 0 ? 0 : 1;
}
