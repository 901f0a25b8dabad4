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
 * Here read_from_file is an async generator: it runs inside a task and each
 * read goes to the thread pool (cio_to_thread), so the loop never blocks on
 * the disk while the file streams through; a ticker task keeps running
 * meanwhile. tail() iterates the file line by line with a generator of
 * lines that itself drives read_from_file (a generator driving a
 * generator), and keeps the last n lines in a ring. When a consumer stops
 * early, closing the generator still closes the file (the `with` block).
 *
 * Usage: file_stream [FILE [N]]   (default: this program's source, 10)
 */
#include "example.h"

#include <stdint.h>
#include <string.h>

enum { BLOCK_SIZE = 1024 * 8 };

typedef struct chunk {
    const char *data;
    size_t len;
} chunk_t;

/* ------------------------------------------------------------------------ */
/* read_from_file: 8 KiB chunks, read off the loop thread                    */
/* ------------------------------------------------------------------------ */

typedef struct read_job {
    FILE *fp;
    char *buf;
    size_t cap, got;
} read_job_t;

/* Runs on a pool thread: one fp.read(block_size). */
static int read_block_job(void *arg, void **result)
{
    (void)result;
    read_job_t *j = arg;
    j->got = fread(j->buf, 1, j->cap, j->fp);
    return ferror(j->fp) ? -EIO : 0;
}

/* Reads one block: on the thread pool inside a task, directly elsewhere. */
static int read_block(read_job_t *j)
{
    if (cio_current_task())
        return cio_to_thread(read_block_job, j, NULL);
    return read_block_job(j, NULL);
}

static int read_from_file(cio_gen_t *g, void *arg)
{
    const char *filename = arg;
    FILE *fp = fopen(filename, "r"); /* with open(filename, "r") as fp: */
    if (!fp)
        return -errno;
    read_job_t j = {.fp = fp, .buf = malloc(BLOCK_SIZE), .cap = BLOCK_SIZE, .got = 0};
    int rc = j.buf ? 0 : -ENOMEM;
    while (rc == 0 && (rc = read_block(&j)) == 0 && j.got > 0) {
        chunk_t chunk = {j.buf, j.got};
        rc = cio_gen_yield(g, &chunk, NULL); /* yield chunk */
    }
    free(j.buf);
    fclose(fp);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Lines, and tail()                                                         */
/* ------------------------------------------------------------------------ */

typedef struct linebuf {
    char *s;
    size_t len, cap;
} linebuf_t;

static int linebuf_append(linebuf_t *b, const char *p, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 128;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *s = realloc(b->s, cap);
        if (!s)
            return -ENOMEM;
        b->s = s;
        b->cap = cap;
    }
    memcpy(b->s + b->len, p, n);
    b->len += n;
    b->s[b->len] = '\0';
    return 0;
}

/* Yields each line of a chunk (completing the partial one in b). */
static int yield_lines(cio_gen_t *g, linebuf_t *b, const chunk_t *c)
{
    const char *p = c->data, *end = c->data + c->len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *stop = nl ? nl + 1 : end;
        int rc = linebuf_append(b, p, (size_t)(stop - p));
        if (rc < 0)
            return rc;
        p = stop;
        if (nl) {
            rc = cio_gen_yield(g, b->s, NULL); /* yield line */
            b->len = 0;
            if (rc < 0)
                return rc;
        }
    }
    return 0;
}

/* for line in f: iterates read_from_file's chunks and yields lines. */
static int lines_of(cio_gen_t *g, void *arg)
{
    cio_gen_t *chunks;
    int rc = cio_gen_new(&chunks, read_from_file, arg);
    if (rc < 0)
        return rc;
    linebuf_t b = {NULL, 0, 0};
    void *v;
    while ((rc = cio_gen_next(chunks, &v)) == 1)
        if ((rc = yield_lines(g, &b, v)) < 0)
            break;
    if (rc == 0 && b.len > 0) /* a last line without a newline */
        rc = cio_gen_yield(g, b.s, NULL);
    free(b.s);
    int frc = cio_gen_free(chunks); /* closes it if we stopped early */
    return rc < 0 ? rc : frc;
}

typedef struct ring {
    char **lines;
    size_t n, count, next;
} ring_t;

/* deque.append with maxlen n: the oldest line falls out. */
static int ring_push(ring_t *r, const char *line)
{
    char *copy = strdup(line);
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
    int rc = cio_gen_new(&lines, lines_of, (void *)filename);
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

static int main_task(void *arg, void **result)
{
    (void)result;
    const args_t *a = arg;
    long ticks = 0;
    cio_task_t *t;
    CHECK(cio_spawn_named(&t, "ticker", ticker, &ticks));

    /* for chunk in read_from_file(filename): (an async for: reads await) */
    cio_gen_t *chunks;
    CHECK(cio_gen_new(&chunks, read_from_file, (void *)a->filename));
    size_t nchunks = 0, bytes = 0;
    void *v;
    int rc;
    while ((rc = cio_gen_next(chunks, &v)) == 1) {
        const chunk_t *c = v;
        nchunks++;
        bytes += c->len;
    }
    CHECK(rc);
    CHECK(cio_gen_free(chunks));
    printf("read_from_file('%s', block_size=%d): %zu chunks, %zu bytes\n",
           a->filename, BLOCK_SIZE, nchunks, bytes);
    EXPECT(nchunks == 0 || ticks > 0); /* the loop ran on while we read */

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
