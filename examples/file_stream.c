/*
 * Seed 000, section 4: reading files with generators.
 *
 * 4.2 Streaming reads:
 *
 *     def read_from_file(filename, block_size=1024 * 8):
 *         with open(filename, "r") as fp:
 *             while chunk := fp.read(block_size):
 *                 yield chunk
 *
 * 4.3 The last n lines:
 *
 *     def tail(filename, n=10):
 *         with open(filename) as f:
 *             return deque(f, n)
 *
 * Here read_from_file is an async generator written on cio's file API: it
 * runs inside a task and each read is an await point (a native operation on
 * io_uring, a thread-pool job on epoll), so the loop never blocks on the
 * disk while the file streams through; a ticker task keeps running
 * meanwhile. The library has the same generator ready-made
 * (cio_file_chunks), and its line reader (cio_file_lines) is `for line in
 * f`: tail() keeps the last n lines it yields in a ring. When a consumer
 * stops early, freeing the generator still closes the file (the `with`
 * block).
 *
 * Usage: file_stream [FILE [N]]   (default: this program's source, 10)
 */
#include "example.h"

#include <fcntl.h>
#include <stdint.h>
#include <string.h>

enum { BLOCK_SIZE = 1024 * 8 };

/* ------------------------------------------------------------------------ */
/* read_from_file: 8 KiB chunks, each read an await point                    */
/* ------------------------------------------------------------------------ */

static int read_from_file(cio_gen_t *g, void *arg)
{
    const char *filename = arg;
    cio_file_t *fp; /* with open(filename, "r") as fp: */
    int rc = cio_file_open(&fp, filename, O_RDONLY, 0);
    if (rc < 0)
        return rc;
    char *buf = malloc(BLOCK_SIZE);
    rc = buf ? 0 : -ENOMEM;
    ssize_t n;
    while (rc == 0 && (n = cio_file_read(fp, buf, BLOCK_SIZE)) != 0) {
        if (n < 0) {
            rc = (int)n;
            break;
        }
        cio_file_chunk_t chunk = {buf, (size_t)n};
        rc = cio_gen_yield(g, &chunk, NULL); /* yield chunk */
    }
    free(buf);
    int crc = cio_file_close(fp); /* also when closed early (rc -ECANCELED) */
    return rc < 0 ? rc : crc;
}

/* ------------------------------------------------------------------------ */
/* tail(): deque(f, n) over the line reader                                  */
/* ------------------------------------------------------------------------ */

typedef struct ring {
    char **lines;
    size_t n, count, next;
} ring_t;

/* deque.append with maxlen n: the oldest line falls out. */
static int ring_push(ring_t *r, const cio_file_chunk_t *line)
{
    char *copy = strndup(line->data, line->len);
    if (!copy)
        return -ENOMEM;
    free(r->lines[r->next]);
    r->lines[r->next] = copy;
    r->next = (r->next + 1) % r->n;
    if (r->count < r->n)
        r->count++;
    return 0;
}

/* return deque(f, n), printed oldest first. */
static int tail(const char *filename, size_t n)
{
    ring_t r = {calloc(n ? n : 1, sizeof(char *)), n ? n : 1, 0, 0};
    cio_gen_t *lines;
    int rc = cio_file_lines(&lines, filename, 0); /* for line in f: */
    if (!r.lines || rc < 0) {
        free(r.lines);
        cio_gen_free(lines); /* NULL when it failed: a no-op */
        return rc < 0 ? rc : -ENOMEM;
    }
    void *line;
    while ((rc = cio_gen_next(lines, &line)) == 1 && n > 0)
        if ((rc = ring_push(&r, line)) < 0)
            break;
    int frc = cio_gen_free(lines);
    if (rc == 0)
        rc = frc;
    for (size_t i = 0; i < r.count; i++) {
        const char *s = r.lines[(r.next + r.n - r.count + i) % r.n];
        fputs(s, stdout);
        if (!*s || s[strlen(s) - 1] != '\n')
            putchar('\n');
    }
    for (size_t i = 0; i < r.n; i++)
        free(r.lines[i]);
    free(r.lines);
    return rc;
}

/* ------------------------------------------------------------------------ */

typedef struct args {
    const char *filename;
    size_t n;
} args_t;

static int ticker(void *arg, void **result)
{
    (void)result;
    long *ticks = arg;
    while (cio_yield() == 0)
        ++*ticks;
    return 0;
}

/* Iterates a chunk generator to its end: chunks and bytes. */
static void count_chunks(cio_gen_t *chunks, size_t *nchunks, size_t *bytes)
{
    void *v;
    int rc;
    *nchunks = *bytes = 0;
    while ((rc = cio_gen_next(chunks, &v)) == 1) {
        const cio_file_chunk_t *c = v;
        ++*nchunks;
        *bytes += c->len;
    }
    CHECK(rc);
    CHECK(cio_gen_free(chunks));
}

static int main_task(void *arg, void **result)
{
    (void)result;
    const args_t *a = arg;
    long ticks = 0;
    cio_task_t *t;
    CHECK(cio_spawn_named(&t, "ticker", ticker, &ticks));

    /* for chunk in read_from_file(filename): (an async for: reads await) */
    cio_gen_t *chunks;
    size_t nchunks, bytes;
    CHECK(cio_gen_new(&chunks, read_from_file, (void *)a->filename));
    count_chunks(chunks, &nchunks, &bytes);
    printf("read_from_file('%s', block_size=%d): %zu chunks, %zu bytes\n",
           a->filename, BLOCK_SIZE, nchunks, bytes);
    EXPECT(nchunks == 0 || ticks > 0); /* the loop ran on while we read */

    /* The same with the library's chunk reader. */
    size_t nchunks2, bytes2;
    CHECK(cio_file_chunks(&chunks, a->filename, BLOCK_SIZE));
    count_chunks(chunks, &nchunks2, &bytes2);
    EXPECT(nchunks2 == nchunks && bytes2 == bytes);

    printf("tail('%s', n=%zu):\n", a->filename, a->n);
    CHECK(tail(a->filename, a->n));

    cio_task_cancel(t);
    cio_await(t, NULL);
    cio_future_release(t);
    return 0;
}

int main(int argc, char **argv)
{
    args_t a = {argc > 1 ? argv[1] : __FILE__, 10};
    if (argc > 2) {
        long n = strtol(argv[2], NULL, 10);
        if (n < 0) {
            fprintf(stderr, "usage: %s [FILE [N >= 0]]\n", argv[0]);
            return 2;
        }
        a.n = (size_t)n;
    }
    int rc = cio_run(main_task, &a);
    if (rc < 0) {
        fprintf(stderr, "%s: %s: %s\n", argv[0], a.filename, cio_strerror(rc));
        return 1;
    }
    return 0;
}
