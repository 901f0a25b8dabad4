/*
 * Seed 003's threading version of the downloader: plain blocking sockets on
 * a pool of K threads, each thread keeping one connection alive for its
 * downloads (the seed's thread-local requests.Session). It prints the same
 * lines as fetcher.c, the version with tasks, so the two can be compared:
 *
 *   ./fetcher_threads [--to-thread] [-n N] [-k K] [-l LATENCY] [URL]
 *                                                            (as ./fetcher)
 *
 * Without a URL, the stand-in for the seed's two sites (fetch.h) runs in
 * the event loop of the main thread, while the pool threads block in
 * connect/send/recv. The thread code itself knows nothing of cio. Two ways
 * to hand it the downloads:
 *
 *  - by default, a pool of K threads of its own (cio_executor_new, the
 *    seed's ThreadPoolExecutor(max_workers=K)) through cio_run_in_executor
 *    (loop.run_in_executor), the loop gathering the futures;
 *  - with --to-thread, a task per download, as fetcher.c has, each calling
 *    cio_to_thread (asyncio.to_thread) with the blocking download, on the
 *    loop's default pool sized to K threads (cio_loop_set_default_executor);
 *    at the end cio_shutdown_default_executor waits for its threads to
 *    leave (loop.shutdown_default_executor). The blocking code is the same.
 *
 * The Python it mirrors:
 *
 *   thread_local = threading.local()
 *
 *   def get_session():
 *       if not hasattr(thread_local, "session"):
 *           thread_local.session = requests.Session()
 *       return thread_local.session
 *
 *   def download_site(url):
 *       session = get_session()
 *       with session.get(url) as response:
 *           print(f"Read {len(response.content)} from {url}")
 *
 *   def download_all_sites(sites):
 *       with concurrent.futures.ThreadPoolExecutor(max_workers=5) as executor:
 *           executor.map(download_site, sites)
 */
#include "fetch.h"

#include <math.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <sys/time.h>

#define DOWNLOAD_TIMEOUT 10 /* seconds a blocking send or receive may take */

/* ------------------------------------------------------------------------ */
/* On the pool threads: blocking sockets, no cio                              */
/* ------------------------------------------------------------------------ */

/* thread_local.session: this thread's kept-alive connection, stored as
 * fd + 1 (0: none); the key's destructor closes it when the thread ends. */
static pthread_key_t session_key;

static void session_close(void *value)
{
    close((int)(intptr_t)value - 1);
}

static int session_get(void)
{
    return (int)(intptr_t)pthread_getspecific(session_key) - 1;
}

static void session_set(int fd)
{
    pthread_setspecific(session_key, (void *)(intptr_t)(fd + 1));
}

/* A blocking connection to u: the fd, or a negative code. */
static int connect_to(const url *u)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res;
    char port[8];
    snprintf(port, sizeof port, "%d", u->port);
    int rc = getaddrinfo(u->host, port, &hints, &res);
    if (rc)
        return rc == EAI_SYSTEM ? -errno : CIO_EAI(rc);
    int fd = -ECONNREFUSED;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            fd = -errno;
            continue;
        }
        struct timeval tv = {DOWNLOAD_TIMEOUT, 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
            break;
        int err = -errno;
        close(fd);
        fd = err;
    }
    freeaddrinfo(res);
    return fd;
}

/* recv(2) with its failures as codes (a timeout is -ETIMEDOUT). */
static ssize_t recv_some(int fd, char *buf, size_t n)
{
    ssize_t k;
    while ((k = recv(fd, buf, n, 0)) < 0 && errno == EINTR)
        ;
    if (k < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK ? -ETIMEDOUT : -errno;
    return k;
}

/* One GET on the blocking socket fd: the body's length in *len. */
static int get_blocking(int fd, const url *u, size_t *len, response *r)
{
    char buf[16384];
    int n = request_text(u, buf, sizeof buf);
    for (const char *p = buf; n > 0;) {
        ssize_t k = send(fd, p, (size_t)n, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return errno == EAGAIN ? -ETIMEDOUT : -errno;
        p += k;
        n -= (int)k;
    }
    /* The head, up to its empty line; what follows it is body. */
    size_t have = 0;
    char *end;
    for (;;) {
        if (have == sizeof buf - 1)
            return -EPROTO;
        ssize_t k = recv_some(fd, buf + have, sizeof buf - 1 - have);
        if (k <= 0)
            return k ? (int)k : -ENODATA;
        have += (size_t)k;
        buf[have] = '\0';
        if ((end = strstr(buf, "\r\n\r\n")))
            break;
    }
    end[2] = '\0';
    int rc = response_parse(r, buf);
    if (rc < 0)
        return rc;
    *len = have - (size_t)(end + 4 - buf);
    while (r->length < 0 || *len < (size_t)r->length) {
        size_t want = sizeof buf;
        if (r->length >= 0 && (size_t)r->length - *len < want)
            want = (size_t)r->length - *len;
        ssize_t k = recv_some(fd, buf, want);
        if (k < 0)
            return (int)k;
        if (k == 0)
            return r->length < 0 ? 0 : -ENODATA;
        *len += (size_t)k;
    }
    return 0;
}

static atomic_int in_flight, most_in_flight;

/* The job: runs on a pool thread, blocking it for the whole download. */
static int download_site(void *arg, void **result)
{
    const url *u = arg;
    int now = atomic_fetch_add(&in_flight, 1) + 1;
    for (int seen = atomic_load(&most_in_flight);
         now > seen && !atomic_compare_exchange_weak(&most_in_flight, &seen, now);)
        ;
    int fd = session_get();
    size_t len = 0;
    response r = {0};
    int rc;
    for (int attempt = 0;; attempt++) {
        bool reused = fd >= 0;
        if (!reused && (fd = connect_to(u)) < 0) {
            rc = fd;
            break;
        }
        rc = get_blocking(fd, u, &len, &r);
        if (rc == 0 && r.keep_alive)
            break;
        close(fd);
        fd = -1;
        /* A kept-alive connection the server closed meanwhile: once more. */
        if (rc == 0 || !reused || attempt > 0 ||
            (rc != -ENODATA && rc != -ECONNRESET && rc != -EPIPE))
            break;
    }
    session_set(fd);
    atomic_fetch_sub(&in_flight, 1);
    if (rc < 0) {
        printf("Failed %s: %s\n", u->text, cio_strerror(rc));
        return rc;
    }
    if (r.status == 200)
        printf("Read %zu from %s\n", len, u->text);
    else
        printf("Read %zu from %s (status %d)\n", len, u->text, r.status);
    *result = (void *)(uintptr_t)len;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* On the loop thread                                                         */
/* ------------------------------------------------------------------------ */

static bool to_thread_mode; /* --to-thread */

/* --to-thread: a task per download, the download itself on a pool thread. */
static int download_task(void *arg, void **result)
{
    return cio_to_thread(download_site, arg, result);
}

/* --to-thread: a task per download on the loop's default pool, sized to
 * K threads. Fills statuses as the gather of the other mode does. */
static void download_all_to_thread(const fetch_args *a, url *sites, int *statuses)
{
    cio_executor_t *ex;
    CHECK(cio_executor_new(&ex, (unsigned)a->workers));
    CHECK(cio_loop_set_default_executor(cio_get_running_loop(), ex)); /* the loop owns it */
    cio_task_t **tasks = calloc((size_t)a->sites, sizeof *tasks);
    EXPECT(tasks);
    for (int i = 0; i < a->sites; i++)
        CHECK(cio_spawn(&tasks[i], download_task, &sites[i]));
    CHECK(cio_gather(tasks, (size_t)a->sites, NULL, statuses, CIO_GATHER_ALL));
    for (int i = 0; i < a->sites; i++)
        cio_future_release(tasks[i]);
    free(tasks);
}

/* The default mode: a pool of its own, the jobs' futures gathered. */
static void download_all_in_executor(cio_executor_t *ex, const fetch_args *a, url *sites,
                                     int *statuses)
{
    cio_future_t **futs = calloc((size_t)a->sites, sizeof *futs);
    EXPECT(futs);
    for (int i = 0; i < a->sites; i++) /* executor.map(download_site, sites) */
        CHECK(cio_run_in_executor(&futs[i], NULL, ex, download_site, &sites[i]));
    CHECK(cio_gather(futs, (size_t)a->sites, NULL, statuses, CIO_GATHER_ALL));
    for (int i = 0; i < a->sites; i++)
        cio_future_release(futs[i]);
    free(futs);
}

static int main_task(void *arg, void **result)
{
    (void)result;
    const fetch_args *a = arg;
    page_server ps = {0};
    if (!a->url)
        CHECK(page_server_start(&ps, a->latency)); /* serves from this loop */
    url *sites = site_list(a, ps.port);
    if (!sites)
        return -EINVAL;
    int *statuses = calloc((size_t)a->sites, sizeof *statuses);
    EXPECT(statuses);

    cio_executor_t *ex = NULL;
    if (!to_thread_mode) /* ThreadPoolExecutor(max_workers=K) */
        CHECK(cio_executor_new(&ex, (unsigned)a->workers));
    double start = loop_now();
    if (to_thread_mode)
        download_all_to_thread(a, sites, statuses);
    else
        download_all_in_executor(ex, a, sites, statuses);
    double duration = loop_now() - start;
    int failed = 0;
    for (int i = 0; i < a->sites; i++)
        failed += statuses[i] < 0;
    printf("Downloaded %d in %.3f seconds (at most %d at once, on %d thread(s))\n",
           a->sites - failed, duration, atomic_load(&most_in_flight), a->workers);
    if (failed)
        printf("%d download(s) failed\n", failed);
    EXPECT(atomic_load(&most_in_flight) <= a->workers);

    /* The `with` block's end: the threads exit, closing their sessions. */
    if (to_thread_mode)
        CHECK(cio_shutdown_default_executor(INFINITY));
    else
        cio_executor_shutdown(ex, true);
    if (!a->url)
        page_server_stop(&ps);
    free(statuses);
    free(sites);
    return failed ? -EIO : 0;
}

int main(int argc, char **argv)
{
    /* --to-thread may come anywhere; the other options are fetcher's. */
    int n = 1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--to-thread") == 0)
            to_thread_mode = true;
        else
            argv[n++] = argv[i];
    }
    argv[n] = NULL;
    fetch_args a = fetch_parse_args(n, argv);
    EXPECT(pthread_key_create(&session_key, session_close) == 0);
    return cio_run(main_task, &a) == 0 ? 0 : 1;
}
