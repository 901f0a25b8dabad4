/*
 * Files under load (issue 8): one task reads a 1 GiB file in 1 MiB chunks
 * (cio_file_chunks) while 1,000 other tasks keep yielding, and a ticker
 * task measures the loop's worst stall: the largest gap between two of its
 * consecutive runs, i.e. the longest loop iteration (with 1,000 ready tasks
 * the ticker runs once per iteration). Prints the read rate and that stall
 * for the loop's backend (CIO_BACKEND=epoll|uring), and the rate of a plain
 * read(2) loop on the same file, alone on the thread, as the ceiling.
 *
 * The file is made once (not timed) as DIR/cio_bench_file.dat and reused
 * while its size is right. --cold evicts it from the page cache before each
 * measurement (posix_fadvise DONTNEED, which needs no privilege for clean
 * pages), so the disk is read; by default it is read from the page cache.
 *
 * Usage: bench_file [--dir DIR] [--mib N] [--chunk-kib N] [--tasks N] [--cold]
 *        (DIR defaults to $CIO_BENCH_DIR, else /tmp)
 */
#include "bench_common.h"

#include <cio.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

typedef struct bench {
    char path[512];
    size_t size, chunk;
    long tasks;
    bool cold;
    /* measured */
    bool stop, reading;
    int64_t worst_gap, iterations;
    int64_t *gaps;        /* every iteration's length while reading */
    size_t ngaps, capgaps;
    long preempt;         /* involuntary switches of the loop thread */
    int64_t ctl_worst;    /* the same load without the reader (the control) */
    uint64_t sum;
    size_t bytes;
    int64_t t0, t1;
    int rc;
    const char *backend;
} bench_t;

static void die(const char *what, int err)
{
    fprintf(stderr, "bench_file: %s: %s\n", what, strerror(err));
    exit(1);
}

/* Makes the file (xorshift bytes, not timed) unless it is there already. */
static void make_file(const bench_t *b)
{
    struct stat st;
    if (stat(b->path, &st) == 0 && (size_t)st.st_size == b->size)
        return;
    fprintf(stderr, "bench_file: writing %zu MiB to %s\n", b->size >> 20, b->path);
    int fd = open(b->path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        die(b->path, errno);
    size_t piece = 1 << 20;
    unsigned char *buf = bench_alloc(piece);
    uint32_t x = BENCH_SEED;
    for (size_t off = 0; off < b->size; off += piece) {
        for (size_t i = 0; i < piece; i += 4) {
            uint32_t v = bench_xorshift32(&x);
            memcpy(buf + i, &v, 4);
        }
        size_t n = b->size - off < piece ? b->size - off : piece;
        if (write(fd, buf, n) != (ssize_t)n)
            die("write", errno);
    }
    if (fsync(fd))
        die("fsync", errno);
    close(fd);
    free(buf);
}

/* Drops the file's pages from the page cache (they are clean). */
static void evict(const bench_t *b)
{
    int fd = open(b->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        die(b->path, errno);
    int rc = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    if (rc)
        die("posix_fadvise", rc);
    close(fd);
}

/* The ceiling: read(2) in a loop on this thread, nothing else running. */
static double plain_rate(const bench_t *b)
{
    if (b->cold)
        evict(b);
    int fd = open(b->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        die(b->path, errno);
    char *buf = bench_alloc(b->chunk);
    int64_t t0 = bench_now_ns();
    size_t total = 0;
    ssize_t n;
    while ((n = read(fd, buf, b->chunk)) > 0)
        total += (size_t)n;
    int64_t t1 = bench_now_ns();
    if (n < 0 || total != b->size)
        die("plain read", n < 0 ? errno : EIO);
    close(fd);
    free(buf);
    return (double)total / 1e6 / ((double)(t1 - t0) / 1e9);
}

static int yielder(void *arg, void **result)
{
    (void)result;
    bench_t *b = arg;
    while (!b->stop && cio_yield() == 0)
        ;
    return 0;
}

/* Runs once per loop iteration: the gap between two runs is one iteration
 * (the 1,000 yielders, the poll, what the loop did for the reader). */
static int ticker(void *arg, void **result)
{
    (void)result;
    bench_t *b = arg;
    int64_t last = bench_now_ns();
    while (!b->stop && cio_yield() == 0) {
        int64_t now = bench_now_ns();
        if (now - last > b->worst_gap)
            b->worst_gap = now - last;
        if (b->ngaps < b->capgaps)
            b->gaps[b->ngaps++] = now - last;
        last = now;
        b->iterations++;
    }
    return 0;
}

static int reader(void *arg, void **result)
{
    (void)result;
    bench_t *b = arg;
    cio_gen_t *g;
    int rc = cio_file_chunks(&g, b->path, b->chunk);
    if (rc < 0)
        return rc;
    b->t0 = bench_now_ns();
    void *v;
    while ((rc = cio_gen_next(g, &v)) == 1) {
        const cio_file_chunk_t *c = v;
        b->bytes += c->len;
        b->sum += (unsigned char)c->data[0] + (unsigned char)c->data[c->len - 1];
    }
    b->t1 = bench_now_ns();
    cio_gen_free(g);
    return rc;
}

static int bench_main(void *arg, void **result)
{
    (void)result;
    bench_t *b = arg;
    b->backend = cio_loop_backend(cio_get_running_loop());
    for (long i = 0; i < b->tasks; i++) {
        int rc = cio_spawn(NULL, yielder, b);
        if (rc < 0)
            return rc;
    }
    cio_task_t *tick, *rd;
    int rc = cio_spawn(&tick, ticker, b);
    if (rc < 0)
        return rc;
    /* Every task has run once (stacks taken) before anything is measured.
     * The control: the same tasks for one second with no reader, which
     * shows what the machine itself does to the loop (preemption by other
     * processes on a shared machine). */
    if ((rc = cio_yield()) < 0 || (rc = cio_yield()) < 0)
        return rc;
    b->worst_gap = 0;
    if ((rc = cio_sleep(1.0)) < 0)
        return rc;
    b->ctl_worst = b->worst_gap;
    b->worst_gap = 0;
    b->iterations = 0;
    b->ngaps = 0;
    struct rusage ru0, ru1;
    getrusage(RUSAGE_THREAD, &ru0);
    if ((rc = cio_spawn(&rd, reader, b)) < 0)
        return rc;
    b->rc = cio_await(rd, NULL);
    getrusage(RUSAGE_THREAD, &ru1);
    b->preempt = ru1.ru_nivcsw - ru0.ru_nivcsw;
    cio_future_release(rd);
    b->stop = true;
    cio_await(tick, NULL);
    cio_future_release(tick);
    return 0;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static const char *fs_kind(const char *dir)
{
    struct statfs sf;
    if (statfs(dir, &sf))
        return "unknown";
    switch ((unsigned long)sf.f_type) {
    case 0x01021994UL: return "tmpfs";
    case 0xEF53UL: return "ext4";
    case 0x9123683EUL: return "btrfs";
    case 0x58465342UL: return "xfs";
    case 0x794c7630UL: return "overlayfs";
    default: return "other";
    }
}

int main(int argc, char **argv)
{
    bench_t b = {.size = (size_t)1024 << 20, .chunk = 1 << 20, .tasks = 1000};
    const char *dir = getenv("CIO_BENCH_DIR");
    if (!dir || !*dir)
        dir = "/tmp";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--dir") && i + 1 < argc)
            dir = argv[++i];
        else if (!strcmp(argv[i], "--mib") && i + 1 < argc)
            b.size = (size_t)strtoul(argv[++i], NULL, 10) << 20;
        else if (!strcmp(argv[i], "--chunk-kib") && i + 1 < argc)
            b.chunk = (size_t)strtoul(argv[++i], NULL, 10) << 10;
        else if (!strcmp(argv[i], "--tasks") && i + 1 < argc)
            b.tasks = strtol(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--cold"))
            b.cold = true;
        else {
            fprintf(stderr,
                    "usage: %s [--dir DIR] [--mib N] [--chunk-kib N] [--tasks N] [--cold]\n",
                    argv[0]);
            return 2;
        }
    }
    if (!b.size || !b.chunk || b.tasks < 0)
        die("arguments", EINVAL);
    snprintf(b.path, sizeof b.path, "%s/cio_bench_file.dat", dir);
    make_file(&b);

    double plain = plain_rate(&b);
    if (b.cold)
        evict(&b);
    b.capgaps = 1 << 20;
    b.gaps = bench_alloc(b.capgaps * sizeof(int64_t));
    int rc = cio_run(bench_main, &b);
    if (rc < 0 || b.rc < 0 || b.bytes != b.size) {
        fprintf(stderr, "bench_file: %s (read %zu of %zu bytes)\n",
                cio_strerror(rc < 0 ? rc : b.rc < 0 ? b.rc : -EIO), b.bytes, b.size);
        return 1;
    }
    double secs = (double)(b.t1 - b.t0) / 1e9;
    double rate = (double)b.size / 1e6 / secs;
    qsort(b.gaps, b.ngaps, sizeof(int64_t), cmp_i64);
    size_t over = 0;
    for (size_t i = 0; i < b.ngaps; i++)
        over += b.gaps[i] > 1000000;
    double p99 = b.ngaps ? (double)b.gaps[(b.ngaps * 99) / 100] / 1e3 : 0.0;
    fprintf(stderr,
            "bench_file: %s, %s (%s), %s cache: %.0f MB/s (plain read %.0f), worst stall "
            "%.0f us over %lld iterations (sum %llu)\n",
            b.backend, dir, fs_kind(dir), b.cold ? "cold" : "warm", rate, plain,
            (double)b.worst_gap / 1e3, (long long)b.iterations, (unsigned long long)b.sum);
    printf("RESULT bench=files backend=%s fs=%s cache=%s mib=%zu chunk_kib=%zu tasks=%ld "
           "mb_s=%.0f worst_stall_us=%.1f p99_iter_us=%.1f iters_over_1ms=%zu "
           "iterations=%lld preempted=%ld control_worst_us=%.1f plain_mb_s=%.0f\n",
           b.backend, fs_kind(dir), b.cold ? "cold" : "warm", b.size >> 20, b.chunk >> 10,
           b.tasks, rate, (double)b.worst_gap / 1e3, p99, over, (long long)b.iterations,
           b.preempt, (double)b.ctl_worst / 1e3, plain);
    return 0;
}
