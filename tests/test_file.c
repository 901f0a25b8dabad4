/*
 * Files (src/file.c): the file object, the chunk and line readers, the
 * follower, on both backends (CTest runs this program twice). Each test
 * works in a temporary directory of its own under /tmp.
 */
#include "cio_test.h"
#include "cio_fail_alloc.h"

#include <fcntl.h>
#include <math.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>

/* A fresh temporary directory; the path is static per call site. */
static void make_dir(char *dir, size_t n)
{
    snprintf(dir, n, "/tmp/cio_test_file_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void path_in(char *out, size_t n, const char *dir, const char *name)
{
    int k = snprintf(out, n, "%s/%s", dir, name);
    ck_assert(k > 0 && (size_t)k < n);
}

/* Removes the directory and what the tests left in it. */
static void remove_dir(const char *dir)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
}

/* Writes a file synchronously (test set-up, not under test). */
static void put_file(const char *path, const void *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, data, len), (ssize_t)len);
    close(fd);
}

static void append_file(const char *path, const char *s)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, s, strlen(s)), (ssize_t)strlen(s));
    close(fd);
}

/* Open descriptors of this process. */
static int count_fds(void)
{
    int n = 0;
    for (int fd = 0; fd < 4096; fd++)
        n += fcntl(fd, F_GETFD) >= 0;
    return n;
}

/* Runs fn as the main task with a fresh temporary directory as its argument,
 * then removes the directory; with same_fds, asserts that the run left the
 * process's descriptors as it found them. */
static void run_in_dir(cio_task_fn fn, bool same_fds)
{
    char dir[64];
    make_dir(dir, sizeof dir);
    int before = count_fds();
    RUN_MAIN(fn, dir);
    if (same_fds)
        ck_assert_int_eq(count_fds(), before);
    remove_dir(dir);
}

static uint8_t pattern(size_t i)
{
    return (uint8_t)((i * 2654435761u) >> 13);
}

/* ------------------------------------------------------------------------ */
/* The file object                                                            */
/* ------------------------------------------------------------------------ */

static int roundtrip_main(void *arg, void **result)
{
    (void)result;
    const char *dir = arg;
    char path[256];
    path_in(path, sizeof path, dir, "rt");
    enum { N = 1000003 };
    uint8_t *out = malloc(N), *in = malloc(N + 16);
    ck_assert(out && in);
    for (size_t i = 0; i < N; i++)
        out[i] = pattern(i);

    cio_file_t *f = NOT_SET;
    ck_assert_int_eq(cio_file_open(&f, path, O_RDWR | O_CREAT | O_TRUNC, 0600), 0);
    ck_assert_ptr_nonnull(f);
    int fd = cio_file_fd(f);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_ne(fcntl(fd, F_GETFD) & FD_CLOEXEC, 0);
    size_t written = 7;
    ck_assert_int_eq(cio_file_write(f, out, N, &written), 0);
    ck_assert_uint_eq(written, N);
    ck_assert_int_eq(cio_file_write(f, out, 0, &written), 0);
    ck_assert_uint_eq(written, 0);
    ck_assert_int_eq(cio_file_seek(f, 0, SEEK_CUR), N);
    ck_assert_int_eq(cio_file_fsync(f, false), 0);
    ck_assert_int_eq(cio_file_fsync(f, true), 0);

    struct stat st;
    ck_assert_int_eq(cio_file_stat(f, &st), 0);
    ck_assert_int_eq(st.st_size, N);
    ck_assert(S_ISREG(st.st_mode));
    ck_assert_int_eq(st.st_mode & 0777, 0600);
    struct stat st2;
    ck_assert_int_eq(stat(path, &st2), 0);
    ck_assert_uint_eq(st.st_ino, st2.st_ino);
    ck_assert_uint_eq(st.st_dev, st2.st_dev);
    ck_assert_int_eq(st.st_mtim.tv_sec, st2.st_mtim.tv_sec);
    ck_assert_int_eq(st.st_mtim.tv_nsec, st2.st_mtim.tv_nsec);
    ck_assert_int_eq(cio_stat(path, &st2), 0);
    ck_assert_uint_eq(st.st_ino, st2.st_ino);
    ck_assert_int_eq(st2.st_size, N);

    /* Sequential reads from the position, to EOF. */
    ck_assert_int_eq(cio_file_seek(f, 0, SEEK_SET), 0);
    size_t got = 0;
    ssize_t r;
    while ((r = cio_file_read(f, in + got, 65536)) > 0)
        got += (size_t)r;
    ck_assert_int_eq(r, 0);
    ck_assert_uint_eq(got, N);
    ck_assert_int_eq(memcmp(in, out, N), 0);
    ck_assert_int_eq(cio_file_read(f, in, 10), 0); /* EOF again */

    /* Positioned: pwrite in the middle, pread it back, the position stays. */
    const char *mark = "0123456789";
    ck_assert_int_eq(cio_file_pwrite(f, mark, 10, 500000, &written), 0);
    ck_assert_uint_eq(written, 10);
    memset(in, 0, 32);
    ck_assert_int_eq(cio_file_pread(f, in, 12, 499999), 12);
    ck_assert_int_eq(in[0], out[499999]);
    ck_assert_int_eq(memcmp(in + 1, mark, 10), 0);
    ck_assert_int_eq(in[11], out[500010]);
    ck_assert_int_eq(cio_file_pread(f, in, 100, N - 5), 5); /* short at the end */
    ck_assert_int_eq(memcmp(in, out + N - 5, 5), 0);
    ck_assert_int_eq(cio_file_pread(f, in, 100, N + 100), 0);
    ck_assert_int_eq(cio_file_seek(f, 0, SEEK_CUR), N);
    /* Writing past the end leaves a hole of zeros. */
    ck_assert_int_eq(cio_file_pwrite(f, "z", 1, N + 3, NULL), 0);
    ck_assert_int_eq(cio_file_pread(f, in, 8, N), 4);
    ck_assert_int_eq(memcmp(in, "\0\0\0z", 4), 0);
    ck_assert_int_eq(cio_file_close(f), 0);

    /* O_APPEND writes go to the end. */
    ck_assert_int_eq(cio_file_open(&f, path, O_WRONLY | O_APPEND, 0), 0);
    ck_assert_int_eq(cio_file_write(f, "tail", 4, NULL), 0);
    ck_assert_int_eq(cio_file_close(f), 0);
    ck_assert_int_eq(stat(path, &st2), 0);
    ck_assert_int_eq(st2.st_size, N + 8);
    free(out);
    free(in);
    return 0;
}

START_TEST(file_roundtrip)
{
    run_in_dir(roundtrip_main, false);
}
END_TEST

enum { BIG = 64 << 20 };

/* 64 MiB written in 1 MiB pieces, read back with the chunk reader. */
static int big_main(void *arg, void **result)
{
    (void)result;
    char path[256];
    path_in(path, sizeof path, arg, "big");
    enum { PIECE = 1 << 20 };
    uint8_t *buf = malloc(PIECE);
    ck_assert_ptr_nonnull(buf);
    cio_file_t *f;
    ck_assert_int_eq(cio_file_open(&f, path, O_WRONLY | O_CREAT | O_EXCL, 0644), 0);
    for (size_t off = 0; off < BIG; off += PIECE) {
        for (size_t i = 0; i < PIECE; i++)
            buf[i] = pattern(off + i);
        ck_assert_int_eq(cio_file_write(f, buf, PIECE, NULL), 0);
    }
    ck_assert_int_eq(cio_file_close(f), 0);
    free(buf);

    cio_gen_t *g = NOT_SET;
    ck_assert_int_eq(cio_file_chunks(&g, path, 1000000), 0);
    size_t total = 0, nchunks = 0;
    void *v;
    int rc;
    while ((rc = cio_gen_next(g, &v)) == 1) {
        const cio_file_chunk_t *c = v;
        ck_assert_uint_le(c->len, 1000000);
        for (size_t i = 0; i < c->len; i++)
            if ((uint8_t)c->data[i] != pattern(total + i))
                ck_abort_msg("byte %zu differs", total + i);
        total += c->len;
        nchunks++;
    }
    ck_assert_int_eq(rc, 0);
    ck_assert_uint_eq(total, BIG);
    ck_assert_uint_eq(nchunks, (BIG + 999999) / 1000000);
    ck_assert_int_eq(cio_gen_free(g), 0);
    return 0;
}

START_TEST(file_big)
{
    run_in_dir(big_main, false);
}
END_TEST

static int errors_main(void *arg, void **result)
{
    (void)result;
    const char *dir = arg;
    char path[256], buf[16];
    cio_file_t *f = NOT_SET;
    path_in(path, sizeof path, dir, "missing");
    ck_assert_int_eq(cio_file_open(&f, path, O_RDONLY, 0), -ENOENT);
    ck_assert_ptr_null(f);
    ck_assert_int_eq(cio_file_open(&f, dir, O_WRONLY, 0), -EISDIR);
    ck_assert_int_eq(cio_file_open(NULL, path, O_RDONLY, 0), -EINVAL);
    f = NOT_SET;
    ck_assert_int_eq(cio_file_open(&f, NULL, O_RDONLY, 0), -EINVAL);
    ck_assert_ptr_null(f);
    struct stat st;
    ck_assert_int_eq(cio_stat(path, &st), -ENOENT);
    ck_assert_int_eq(cio_stat(NULL, &st), -EINVAL);

    /* A directory opened for reading: read says EISDIR. */
    ck_assert_int_eq(cio_file_open(&f, dir, O_RDONLY | O_DIRECTORY, 0), 0);
    ck_assert_int_eq(cio_file_read(f, buf, sizeof buf), -EISDIR);
    ck_assert_int_eq(cio_file_stat(f, &st), 0);
    ck_assert(S_ISDIR(st.st_mode));
    ck_assert_int_eq(cio_file_close(f), 0);

    /* Wrong direction: EBADF from the kernel. */
    path_in(path, sizeof path, dir, "e");
    ck_assert_int_eq(cio_file_open(&f, path, O_WRONLY | O_CREAT, 0644), 0);
    ck_assert_int_eq(cio_file_read(f, buf, sizeof buf), -EBADF);
    ck_assert_int_eq(cio_file_pread(f, buf, 1, -1), -EINVAL);
    ck_assert_int_eq(cio_file_read(f, NULL, 1), -EINVAL);
    size_t w = 99;
    ck_assert_int_eq(cio_file_pwrite(f, "x", 1, -5, &w), -EINVAL);
    ck_assert_uint_eq(w, 0);
    ck_assert_int_eq(cio_file_write(f, NULL, 3, &w), -EINVAL);
    ck_assert_uint_eq(w, 0);
    ck_assert_int_eq(cio_file_seek(f, 0, 12345), -EINVAL);
    ck_assert_int_eq(cio_file_close(f), 0);
    ck_assert_int_eq(cio_file_open(&f, path, O_RDONLY, 0), 0);
    ck_assert_int_eq(cio_file_write(f, "x", 1, &w), -EBADF);
    ck_assert_uint_eq(w, 0);
    ck_assert_int_eq(cio_file_close(f), 0);
    ck_assert_int_eq(cio_file_open(&f, path, O_RDONLY | O_CREAT | O_EXCL, 0644), -EEXIST);

    /* NULL everywhere. */
    ck_assert_int_eq(cio_file_read(NULL, buf, 1), -EINVAL);
    ck_assert_int_eq(cio_file_write(NULL, buf, 1, NULL), -EINVAL);
    ck_assert_int_eq(cio_file_fsync(NULL, false), -EINVAL);
    ck_assert_int_eq(cio_file_stat(NULL, &st), -EINVAL);
    ck_assert_int_eq(cio_file_fd(NULL), -EINVAL);
    ck_assert_int_eq(cio_file_seek(NULL, 0, SEEK_SET), -EINVAL);
    ck_assert_int_eq(cio_file_close(NULL), 0);
    cio_gen_t *g = NOT_SET;
    ck_assert_int_eq(cio_file_lines(&g, NULL, 0), -EINVAL);
    ck_assert_ptr_null(g);
    ck_assert_int_eq(cio_file_chunks(NULL, path, 0), -EINVAL);
    cio_follow_opts_t o = {.poll_interval = -1};
    ck_assert_int_eq(cio_file_follow(&g, path, &o), -EINVAL);
    o = (cio_follow_opts_t){.flags = 64};
    ck_assert_int_eq(cio_file_follow(&g, path, &o), -EINVAL);
    o = (cio_follow_opts_t){.poll_interval = NAN};
    ck_assert_int_eq(cio_file_follow(&g, path, &o), -EINVAL);

    /* A reader of a missing file fails at its first next. */
    path_in(path, sizeof path, dir, "missing");
    ck_assert_int_eq(cio_file_lines(&g, path, 0), 0);
    ck_assert_int_eq(cio_gen_next(g, NULL), -ENOENT);
    ck_assert_int_eq(cio_gen_free(g), 0);
    ck_assert_int_eq(cio_file_follow(&g, path, NULL), 0);
    ck_assert_int_eq(cio_gen_next(g, NULL), -ENOENT);
    ck_assert_int_eq(cio_gen_free(g), 0);
    return 0;
}

START_TEST(file_errors)
{
    run_in_dir(errors_main, true);
    /* Outside a task. */
    cio_file_t *f = NOT_SET;
    ck_assert_int_eq(cio_file_open(&f, "/", O_RDONLY, 0), -EPERM);
    ck_assert_ptr_null(f);
    struct stat st;
    ck_assert_int_eq(cio_stat("/", &st), -EPERM);
}
END_TEST

/* Close while another task reads: the read finishes, later calls -EBADF. */
typedef struct closing {
    cio_file_t *f;
    char *buf;
    ssize_t got;
} closing_t;

static int big_reader(void *arg, void **result)
{
    (void)result;
    closing_t *c = arg;
    c->got = cio_file_pread(c->f, c->buf, BIG, 0);
    return 0;
}

/* Writes BIG bytes to the file name in dir and opens it for reading into
 * c->f; c->buf (the caller's to free) holds the same bytes, to read over. */
static void big_open(closing_t *c, const char *dir, const char *name)
{
    char path[256];
    path_in(path, sizeof path, dir, name);
    char *data = malloc(BIG);
    ck_assert_ptr_nonnull(data);
    memset(data, 'q', BIG);
    put_file(path, data, BIG);
    *c = (closing_t){.buf = data, .got = -1};
    ck_assert_int_eq(cio_file_open(&c->f, path, O_RDONLY, 0), 0);
}

static int close_main(void *arg, void **result)
{
    (void)result;
    closing_t c;
    big_open(&c, arg, "c");
    cio_task_t *t = spawn(big_reader, &c);
    ck_assert_int_eq(cio_yield(), 0); /* the reader has started its read */
    cio_file_t *f = c.f;
    c.f = NULL;
    ck_assert_int_eq(cio_file_close(f), 0); /* waits for the read */
    ck_assert_int_eq(finish(t), 0);
    ck_assert_int_eq(c.got, BIG);
    free(c.buf);
    return 0;
}

START_TEST(file_close_waits)
{
    run_in_dir(close_main, true);
}
END_TEST

/* Calls on a file being closed are refused. */
typedef struct late {
    cio_file_t *f;
    int rc_read, rc_fd, rc_close;
} late_t;

static int late_caller(void *arg, void **result)
{
    (void)result;
    late_t *l = arg;
    char b[4];
    l->rc_read = (int)cio_file_read(l->f, b, sizeof b);
    l->rc_fd = cio_file_fd(l->f);
    l->rc_close = cio_file_close(l->f);
    return 0;
}

static int late_main(void *arg, void **result)
{
    (void)result;
    closing_t c;
    big_open(&c, arg, "l");
    late_t l = {.f = c.f};
    cio_task_t *t = spawn(big_reader, &c);
    ck_assert_int_eq(cio_yield(), 0);
    cio_task_t *t2 = spawn(late_caller, &l);
    ck_assert_int_eq(cio_file_close(c.f), 0); /* t2 runs while this waits */
    ck_assert_int_eq(finish(t2), 0);
    ck_assert_int_eq(finish(t), 0);
    ck_assert_int_eq(c.got, BIG);
    ck_assert_int_eq(l.rc_read, -EBADF);
    ck_assert_int_eq(l.rc_fd, -EBADF);
    ck_assert_int_eq(l.rc_close, -EBADF);
    free(c.buf);
    return 0;
}

START_TEST(file_refused_while_closing)
{
    run_in_dir(late_main, false);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Readers                                                                    */
/* ------------------------------------------------------------------------ */

/* Collects every line of path (max_line 0: default) into one string with
 * '|' after each; returns the generator's final status. */
static int collect_lines(const char *path, size_t max_line, char *out, size_t cap, int *count)
{
    cio_gen_t *g;
    ck_assert_int_eq(cio_file_lines(&g, path, max_line), 0);
    size_t len = 0;
    void *v;
    int rc;
    *count = 0;
    out[0] = 0;
    while ((rc = cio_gen_next(g, &v)) == 1) {
        const cio_file_chunk_t *c = v;
        ck_assert_uint_lt(len + c->len + 1, cap);
        memcpy(out + len, c->data, c->len);
        len += c->len;
        out[len++] = '|';
        out[len] = 0;
        ++*count;
    }
    ck_assert_int_eq(cio_gen_free(g), 0);
    return rc;
}

static int lines_main(void *arg, void **result)
{
    (void)result;
    const char *dir = arg;
    char path[256], out[4096];
    int n;
    path_in(path, sizeof path, dir, "lines");
    put_file(path, "a\nb\r\n\nlast", 10);
    ck_assert_int_eq(collect_lines(path, 0, out, sizeof out, &n), 0);
    ck_assert_str_eq(out, "a\n|b\r\n|\n|last|");
    ck_assert_int_eq(n, 4);

    put_file(path, "", 0);
    ck_assert_int_eq(collect_lines(path, 0, out, sizeof out, &n), 0);
    ck_assert_int_eq(n, 0);

    put_file(path, "one\n", 4);
    ck_assert_int_eq(collect_lines(path, 0, out, sizeof out, &n), 0);
    ck_assert_str_eq(out, "one\n|");

    /* NUL bytes are data. */
    put_file(path, "x\0y\n", 4);
    ck_assert_int_eq(collect_lines(path, 0, out, sizeof out, &n), 0);
    ck_assert_int_eq(memcmp(out, "x\0y\n|", 5), 0);

    /* The limit counts the newline: 8 bytes fit, 9 do not. */
    put_file(path, "1234567\nabcdefgh\nnext\n", 22);
    ck_assert_int_eq(collect_lines(path, 8, out, sizeof out, &n), -EOVERFLOW);
    ck_assert_str_eq(out, "1234567\n|");
    put_file(path, "1234567\n12345678", 16);
    ck_assert_int_eq(collect_lines(path, 8, out, sizeof out, &n), 0);
    put_file(path, "1234567\n123456789", 17);
    ck_assert_int_eq(collect_lines(path, 8, out, sizeof out, &n), -EOVERFLOW);
    ck_assert_int_eq(n, 1);
    return 0;
}

START_TEST(file_lines)
{
    run_in_dir(lines_main, true);
}
END_TEST

/* Lines of every length around the reader's 64 KiB reads and buffer
 * growth, and a line far longer than one read. */
static int long_lines_main(void *arg, void **result)
{
    (void)result;
    char path[256];
    path_in(path, sizeof path, arg, "long");
    enum { TOTAL = 3 << 20 };
    char *data = malloc(TOTAL);
    ck_assert_ptr_nonnull(data);
    size_t len = 0, nlines = 0;
    uint32_t seed = 12345;
    while (len < TOTAL - 300000) {
        seed = seed * 1103515245 + 12345;
        size_t l = nlines == 7 ? 250000 : (seed >> 8) % 3000;
        for (size_t i = 0; i < l; i++)
            data[len + i] = (char)('a' + (len + i) % 26);
        len += l;
        data[len++] = '\n';
        nlines++;
    }
    put_file(path, data, len);
    cio_gen_t *g;
    ck_assert_int_eq(cio_file_lines(&g, path, 300000), 0);
    size_t off = 0, seen = 0;
    void *v;
    int rc;
    while ((rc = cio_gen_next(g, &v)) == 1) {
        const cio_file_chunk_t *c = v;
        ck_assert_uint_le(off + c->len, len);
        ck_assert_int_eq(memcmp(c->data, data + off, c->len), 0);
        ck_assert_int_eq(c->data[c->len - 1], '\n');
        off += c->len;
        seen++;
    }
    ck_assert_int_eq(rc, 0);
    ck_assert_uint_eq(off, len);
    ck_assert_uint_eq(seen, nlines);
    ck_assert_int_eq(cio_gen_free(g), 0);
    free(data);
    return 0;
}

START_TEST(file_lines_long)
{
    run_in_dir(long_lines_main, false);
}
END_TEST

/* Stopping a reader early, or never iterating it, closes the file. */
static int early_main(void *arg, void **result)
{
    (void)result;
    char path[256];
    path_in(path, sizeof path, arg, "early");
    put_file(path, "1\n2\n3\n", 6);
    int before = count_fds();
    cio_gen_t *g;
    void *v;
    ck_assert_int_eq(cio_file_lines(&g, path, 0), 0);
    ck_assert_int_eq(cio_gen_next(g, &v), 1);
    ck_assert_int_eq(count_fds(), before + 1);
    ck_assert_int_eq(cio_gen_free(g), 0);
    ck_assert_int_eq(count_fds(), before);
    ck_assert_int_eq(cio_file_chunks(&g, path, 2), 0);
    ck_assert_int_eq(cio_gen_next(g, &v), 1);
    ck_assert_int_eq(((cio_file_chunk_t *)v)->len, 2);
    ck_assert_int_eq(cio_gen_free(g), 0);
    ck_assert_int_eq(count_fds(), before);
    ck_assert_int_eq(cio_file_chunks(&g, path, 0), 0);
    ck_assert_int_eq(cio_gen_free(g), 0); /* never iterated */
    ck_assert_int_eq(cio_file_chunks(&g, path, 0), 0);
    ck_assert_int_eq(cio_gen_next(g, &v), 1);
    ck_assert_int_eq(((cio_file_chunk_t *)v)->len, 6);
    ck_assert_int_eq(cio_gen_next(g, &v), 0);
    ck_assert_int_eq(cio_gen_free(g), 0);
    ck_assert_int_eq(count_fds(), before);
    return 0;
}

START_TEST(file_reader_early_exit)
{
    run_in_dir(early_main, false);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Blocking reads do not block the loop; cancelled reads lose nothing        */
/* ------------------------------------------------------------------------ */

typedef struct fifo_read {
    const char *path;
    cio_file_t *f;
    char buf[16];
    ssize_t got;
    int after;  /* what the next await point returned */
    long ticks;
    bool started;
} fifo_read_t;

static int fifo_reader(void *arg, void **result)
{
    (void)result;
    fifo_read_t *r = arg;
    r->started = true;
    r->got = cio_file_read(r->f, r->buf, sizeof r->buf);
    r->after = cio_yield();
    return 0;
}

/* Makes a FIFO named "fifo" in dir (its path in path), opens it read-write
 * (so the open does not wait for a writer) into r->f and spawns a task that
 * reads it into r. */
static cio_task_t *fifo_read_start(fifo_read_t *r, char *path, size_t n, const char *dir)
{
    path_in(path, n, dir, "fifo");
    ck_assert_int_eq(mkfifo(path, 0600), 0);
    *r = (fifo_read_t){.got = -1};
    ck_assert_int_eq(cio_file_open(&r->f, path, O_RDWR, 0), 0);
    return spawn(fifo_reader, r);
}

/* A read that blocks in the kernel (a FIFO with no data): the loop goes on,
 * and a task of the same loop writes what the read gets. */
static int responsive_main(void *arg, void **result)
{
    (void)result;
    char path[256];
    fifo_read_t r;
    cio_task_t *t = fifo_read_start(&r, path, sizeof path, arg);
    long ticks = 0;
    while (ticks < 200 && cio_yield() == 0)
        ticks++;
    ck_assert_int_eq(ticks, 200);
    ck_assert_int_eq(r.got, -1); /* still reading */
    int wfd = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    ck_assert_int_ge(wfd, 0);
    ck_assert_int_eq(write(wfd, "ping", 4), 4);
    ck_assert_int_eq(finish(t), 0);
    ck_assert_int_eq(r.got, 4);
    ck_assert_int_eq(memcmp(r.buf, "ping", 4), 0);
    close(wfd);
    ck_assert_int_eq(cio_file_close(r.f), 0);
    return 0;
}

START_TEST(file_loop_responsive)
{
    run_in_dir(responsive_main, false);
}
END_TEST

/* A read cancelled while it blocks: either nothing was read (and the bytes
 * are still in the FIFO) or the read completed and its bytes are returned;
 * the cancellation shows at the next await point. */
static int cancel_main(void *arg, void **result)
{
    (void)result;
    char path[256];
    fifo_read_t r;
    cio_task_t *t = fifo_read_start(&r, path, sizeof path, arg);
    settle();
    ck_assert(r.started);
    int wfd = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    ck_assert_int_ge(wfd, 0);
    ck_assert_int_eq(cio_task_cancel(t), 1);
    settle();
    ck_assert_int_eq(write(wfd, "data", 4), 4);
    finish(t);
    if (r.got == -ECANCELED) {
        /* Nothing was read: the bytes are all still there. */
        int rfd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
        char b[8];
        ck_assert_int_eq(read(rfd, b, sizeof b), 4);
        ck_assert_int_eq(memcmp(b, "data", 4), 0);
        close(rfd);
    } else {
        ck_assert_int_eq(r.got, 4);
        ck_assert_int_eq(memcmp(r.buf, "data", 4), 0);
        ck_assert_int_eq(r.after, -ECANCELED);
    }
    close(wfd);
    ck_assert_int_eq(cio_file_close(r.f), 0);
    return 0;
}

START_TEST(file_cancelled_read)
{
    run_in_dir(cancel_main, true);
}
END_TEST

/* A cancelled task still closes its file, and a cancelled open opens
 * nothing that leaks. */
static int cancelled_self(void *arg, void **result)
{
    (void)result;
    cio_task_t *me = cio_current_task();
    cio_file_t *f;
    ck_assert_int_eq(cio_file_open(&f, arg, O_RDONLY, 0), 0);
    cio_task_cancel(me);
    char b[4];
    ck_assert_int_eq(cio_file_read(f, b, 4), -ECANCELED);
    ck_assert_int_eq(cio_file_close(f), 0);
    cio_file_t *g = NOT_SET;
    ck_assert_int_eq(cio_file_open(&g, arg, O_RDONLY, 0), -ECANCELED);
    ck_assert_ptr_null(g);
    return 0;
}

START_TEST(file_cancelled_task_closes)
{
    char dir[64], path[256];
    make_dir(dir, sizeof dir);
    path_in(path, sizeof path, dir, "x");
    put_file(path, "abc", 3);
    int before = count_fds();
    ck_assert_int_eq(cio_run(cancelled_self, path), 0);
    ck_assert_int_eq(count_fds(), before);
    remove_dir(dir);
}
END_TEST

/* Closing a file while another task's read blocks on it (a FIFO): on both
 * backends the read is stopped and ends with -EBADF (io_uring cancels it;
 * on epoll a FIFO is read through readiness on the loop, not on a pool
 * thread, and the waiting reader is woken). */
typedef struct closer {
    cio_file_t *f;
    int rc;
    bool done;
} closer_t;

static int closer_task(void *arg, void **result)
{
    (void)result;
    closer_t *c = arg;
    c->rc = cio_file_close(c->f);
    c->done = true;
    return 0;
}

static int close_blocked_main(void *arg, void **result)
{
    (void)result;
    char path[256];
    fifo_read_t r;
    cio_task_t *t = fifo_read_start(&r, path, sizeof path, arg);
    settle();
    ck_assert(r.started);
    closer_t c = {.f = r.f, .rc = 1};
    cio_task_t *ct = spawn(closer_task, &c);
    /* On both backends the read waiting on the FIFO is stopped: io_uring
     * cancels it in the kernel; on epoll it waits for readiness on the
     * loop, not in a pool thread, and is woken. */
    ck_assert_int_eq(finish(ct), 0);
    ck_assert_int_eq(finish(t), 0);
    ck_assert_int_eq(r.got, -EBADF);
    ck_assert(c.done);
    ck_assert_int_eq(c.rc, 0);
    return 0;
}

START_TEST(file_close_blocked_read)
{
    run_in_dir(close_blocked_main, true);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* The follower                                                               */
/* ------------------------------------------------------------------------ */

typedef struct follow {
    char dir[64], path[256], other[256];
    unsigned flags;
    char got[4096];
    size_t len;
    int nlines;
    int rc;
    cio_event_t line; /* set at each line */
} follow_t;

static int follow_consumer(void *arg, void **result)
{
    (void)result;
    follow_t *fw = arg;
    cio_follow_opts_t o = {.flags = fw->flags, .poll_interval = 0.05};
    cio_gen_t *g;
    ck_assert_int_eq(cio_file_follow(&g, fw->path, &o), 0);
    void *v;
    while ((fw->rc = cio_gen_next(g, &v)) == 1) {
        const cio_file_chunk_t *c = v;
        ck_assert_uint_lt(fw->len + c->len + 1, sizeof fw->got);
        memcpy(fw->got + fw->len, c->data, c->len);
        fw->len += c->len;
        fw->got[fw->len++] = '|';
        fw->got[fw->len] = 0;
        fw->nlines++;
        cio_event_set(&fw->line);
    }
    ck_assert_int_eq(cio_gen_free(g), 0);
    return 0;
}

/* Waits until the consumer has seen n lines (bounded). */
static void wait_lines(follow_t *fw, int n)
{
    cio_scope_t s;
    ck_assert_int_eq(cio_scope_enter(&s, HANG_BOUND_S, 0), 0);
    while (fw->nlines < n) {
        cio_event_clear(&fw->line);
        if (cio_event_wait(&fw->line) != 0)
            break;
    }
    cio_scope_exit(&s);
    ck_assert_msg(fw->nlines >= n, "saw %d lines, wanted %d: %s", fw->nlines, n, fw->got);
}

static int follow_main(void *arg, void **result)
{
    (void)result;
    follow_t *fw = arg;
    cio_event_init(&fw->line);
    append_file(fw->path, "old line\n");
    cio_task_t *t = spawn(follow_consumer, fw);
    settle();
    ck_assert_int_eq(cio_sleep(0.1), 0); /* it is at the end of the file */
    append_file(fw->path, "one\ntw");
    wait_lines(fw, 1);
    append_file(fw->path, "o\n");
    wait_lines(fw, 2);
    ck_assert_str_eq(fw->got, "one\n|two\n|");

    /* Truncation: from the start again. */
    ck_assert_int_eq(truncate(fw->path, 0), 0);
    ck_assert_int_eq(cio_sleep(0.2), 0);
    append_file(fw->path, "after truncate\n");
    wait_lines(fw, 3);
    ck_assert_str_eq(fw->got, "one\n|two\n|after truncate\n|");

    /* Rotation: rename, then a new file; the old one's last lines first. */
    ck_assert_int_eq(rename(fw->path, fw->other), 0);
    append_file(fw->other, "late in old\n");
    append_file(fw->path, "new file\n");
    wait_lines(fw, 5);
    ck_assert_str_eq(fw->got, "one\n|two\n|after truncate\n|late in old\n|new file\n|");

    /* Deletion, then a file of the same name again. */
    ck_assert_int_eq(unlink(fw->path), 0);
    ck_assert_int_eq(cio_sleep(0.2), 0);
    append_file(fw->path, "recreated\n");
    wait_lines(fw, 6);
    ck_assert_str_eq(fw->got,
                     "one\n|two\n|after truncate\n|late in old\n|new file\n|recreated\n|");

    /* Cancellation stops it and frees everything. */
    ck_assert_int_eq(cio_task_cancel(t), 1);
    ck_assert_int_eq(finish(t), 0);
    ck_assert_int_eq(fw->rc, -ECANCELED);
    return 0;
}

static void run_follow(unsigned flags)
{
    follow_t *fw = calloc(1, sizeof *fw);
    ck_assert_ptr_nonnull(fw);
    make_dir(fw->dir, sizeof fw->dir);
    path_in(fw->path, sizeof fw->path, fw->dir, "log");
    path_in(fw->other, sizeof fw->other, fw->dir, "log.1");
    fw->flags = flags;
    int before = count_fds();
    RUN_MAIN(follow_main, fw);
    ck_assert_int_eq(count_fds(), before);
    remove_dir(fw->dir);
    free(fw);
}

START_TEST(file_follow_inotify) { run_follow(0); }
END_TEST

START_TEST(file_follow_poll) { run_follow(CIO_FOLLOW_POLL); }
END_TEST

/* From the start, and a partial line at a rotation is yielded as it is. */
static int follow_start_main(void *arg, void **result)
{
    (void)result;
    follow_t *fw = arg;
    cio_event_init(&fw->line);
    append_file(fw->path, "first\nsecond\n");
    cio_task_t *t = spawn(follow_consumer, fw);
    wait_lines(fw, 2);
    append_file(fw->path, "partial");
    ck_assert_int_eq(cio_sleep(0.1), 0);
    ck_assert_int_eq(fw->nlines, 2);
    ck_assert_int_eq(rename(fw->path, fw->other), 0);
    append_file(fw->path, "fresh\n");
    wait_lines(fw, 4);
    ck_assert_str_eq(fw->got, "first\n|second\n|partial|fresh\n|");
    cio_task_cancel(t);
    ck_assert_int_eq(finish(t), 0);
    return 0;
}

START_TEST(file_follow_from_start)
{
    follow_t *fw = calloc(1, sizeof *fw);
    ck_assert_ptr_nonnull(fw);
    make_dir(fw->dir, sizeof fw->dir);
    path_in(fw->path, sizeof fw->path, fw->dir, "log");
    path_in(fw->other, sizeof fw->other, fw->dir, "log.1");
    fw->flags = CIO_FOLLOW_FROM_START;
    int before = count_fds();
    RUN_MAIN(follow_start_main, fw);
    ck_assert_int_eq(count_fds(), before);
    remove_dir(fw->dir);
    free(fw);
}
END_TEST

/* A line longer than the limit ends the follower with -EOVERFLOW. */
static int follow_overflow_main(void *arg, void **result)
{
    (void)result;
    cio_follow_opts_t o = {.flags = CIO_FOLLOW_FROM_START, .max_line = 8};
    cio_gen_t *g;
    ck_assert_int_eq(cio_file_follow(&g, arg, &o), 0);
    void *v;
    ck_assert_int_eq(cio_gen_next(g, &v), 1);
    ck_assert_int_eq(((cio_file_chunk_t *)v)->len, 8);
    ck_assert_int_eq(cio_gen_next(g, &v), -EOVERFLOW);
    ck_assert_ptr_null(v);
    ck_assert_int_eq(cio_gen_get_state(g), CIO_GEN_CLOSED);
    ck_assert_int_eq(cio_gen_free(g), 0);
    return 0;
}

START_TEST(file_follow_overflow)
{
    char dir[64], path[256];
    make_dir(dir, sizeof dir);
    path_in(path, sizeof path, dir, "log");
    put_file(path, "1234567\n123456789\n", 18);
    int before = count_fds();
    RUN_MAIN(follow_overflow_main, path);
    ck_assert_int_eq(count_fds(), before);
    remove_dir(dir);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Exhaustion: descriptors and memory                                        */
/* ------------------------------------------------------------------------ */

static int emfile_main(void *arg, void **result)
{
    (void)result;
    struct rlimit old, lim;
    ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
    /* New descriptors take the lowest free numbers: a limit a few above
     * the first free one leaves room for a few files only. */
    int first = 0;
    while (fcntl(first, F_GETFD) >= 0)
        first++;
    lim = old;
    lim.rlim_cur = (rlim_t)first + 3;
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &lim), 0);
    cio_file_t *f[8] = {0};
    int n = 0, rc = 0;
    while (n < 8 && (rc = cio_file_open(&f[n], arg, O_RDONLY, 0)) == 0)
        n++;
    ck_assert_int_eq(rc, -EMFILE);
    ck_assert_int_ge(n, 1);
    ck_assert_ptr_null(f[n]);
    for (int i = 0; i < n; i++)
        ck_assert_int_eq(cio_file_close(f[i]), 0);
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &old), 0);
    return 0;
}

START_TEST(file_emfile)
{
    char dir[64], path[256];
    make_dir(dir, sizeof dir);
    path_in(path, sizeof path, dir, "x");
    put_file(path, "abc", 3);
    RUN_MAIN(emfile_main, path);
    remove_dir(dir);
}
END_TEST

/* Every file call, with its allocations counted. */
static int alloc_main(void *arg, void **result)
{
    (void)result;
    const char *path = arg;
    cio_file_t *f;
    int rc = cio_file_open(&f, path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (rc)
        return rc;
    rc = cio_file_write(f, "a\nbb\nccc", 8, NULL);
    char b[16];
    if (!rc) {
        ssize_t r = cio_file_pread(f, b, sizeof b, 0);
        rc = r < 0 ? (int)r : r == 8 ? 0 : -EIO;
    }
    struct stat st;
    if (!rc)
        rc = cio_file_stat(f, &st);
    int crc = cio_file_close(f);
    if (rc || crc)
        return rc ? rc : crc;
    cio_gen_t *g;
    if ((rc = cio_file_lines(&g, path, 0)) < 0)
        return rc;
    int n = 0;
    while ((rc = cio_gen_next(g, NULL)) == 1)
        n++;
    cio_gen_free(g);
    if (rc < 0)
        return rc;
    if (n != 3)
        return -EIO;
    cio_follow_opts_t o = {.flags = CIO_FOLLOW_FROM_START};
    if ((rc = cio_file_follow(&g, path, &o)) < 0)
        return rc;
    rc = cio_gen_next(g, NULL);
    cio_gen_free(g);
    return rc == 1 ? 0 : rc < 0 ? rc : -EIO;
}

/* One run in a child: 0 when it ends in success or -ENOMEM with nothing
 * leaked. */
static int alloc_run(const char *path, long fail_at, bool sticky, long *count)
{
    fflush(NULL);
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        alarm(20);
        close(p[0]);
        int fds = count_fds();
        cio_fail_alloc_arm(fail_at, sticky);
        int rc = cio_run(alloc_main, (void *)path);
        long n = cio_fail_alloc_count();
        ck_assert_int_eq(write(p[1], &n, sizeof n), sizeof n);
        if (rc != 0 && rc != -ENOMEM) {
            fprintf(stderr, "fail_at %ld: %s\n", fail_at, cio_err_name(rc));
            _exit(1);
        }
        if (cio_fail_alloc_live() != 0) {
            fprintf(stderr, "fail_at %ld: %ld blocks leaked\n", fail_at, cio_fail_alloc_live());
            _exit(2);
        }
        if (count_fds() != fds) {
            fprintf(stderr, "fail_at %ld: descriptors leaked\n", fail_at);
            _exit(3);
        }
        _exit(0);
    }
    close(p[1]);
    long n = 0;
    ck_assert_int_eq(read(p[0], &n, sizeof n), sizeof n);
    close(p[0]);
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    if (count)
        *count = n;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 100 + WTERMSIG(st);
}

START_TEST(file_alloc_failure)
{
    ck_assert_int_eq(cio_fail_alloc_install(), 0);
    char dir[64], path[256];
    make_dir(dir, sizeof dir);
    path_in(path, sizeof path, dir, "x");
    long total = 0;
    ck_assert_int_eq(alloc_run(path, 0, false, &total), 0);
    ck_assert_int_gt(total, 0);
    for (long n = 1; n <= total; n++) {
        ck_assert_msg(alloc_run(path, n, false, NULL) == 0, "failing allocation %ld of %ld",
                      n, total);
        ck_assert_msg(alloc_run(path, n, true, NULL) == 0,
                      "failing allocations from %ld of %ld", n, total);
    }
    remove_dir(dir);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Regression tests: FIFOs, close outside a task, big transfers             */
/* ------------------------------------------------------------------------ */

static bool on_uring(void)
{
    return strcmp(cio_loop_backend(cio_get_running_loop()), "io_uring") == 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Runs a call under a 0.2 s deadline: its result, and the elapsed time. */
typedef struct fifo_try {
    const char *path;
    int flags;
    cio_file_t *f;
    long rc;
} fifo_try_t;

static long timed_open(fifo_try_t *t, double *took)
{
    cio_scope_t s;
    double t0 = now_s();
    ck_assert_int_eq(cio_scope_enter(&s, 0.2, 0), 0);
    t->f = NOT_SET;
    t->rc = cio_file_open(&t->f, t->path, t->flags, 0600);
    cio_scope_exit(&s);
    *took = now_s() - t0;
    return t->rc;
}

static ssize_t timed_read(cio_file_t *f, double *took)
{
    cio_scope_t s;
    char b[8];
    double t0 = now_s();
    ck_assert_int_eq(cio_scope_enter(&s, 0.2, 0), 0);
    ssize_t r = cio_file_read(f, b, sizeof b);
    cio_scope_exit(&s);
    *took = now_s() - t0;
    return r;
}

/* A blocked FIFO read or open ends at its deadline on both backends (on
 * epoll it used to block a pool thread for good, and cio_run with it). */
static int fifo_deadline_main(void *arg, void **result)
{
    (void)result;
    char path[256];
    path_in(path, sizeof path, arg, "fifo");
    ck_assert_int_eq(mkfifo(path, 0600), 0);
    double took;
    fifo_try_t t = {.path = path, .flags = O_RDWR};
    /* A read with no writer's data. */
    ck_assert_int_eq(timed_open(&t, &took), 0);
    ck_assert_int_eq(timed_read(t.f, &took), -ETIMEDOUT);
    ck_assert(took < 5.0);
    ck_assert_int_eq(cio_file_close(t.f), 0);
    /* An open for writing with no reader waits, cancellably (on io_uring
     * it used to fail at once with -ENXIO). */
    t.flags = O_WRONLY;
    ck_assert_int_eq(timed_open(&t, &took), -ETIMEDOUT);
    ck_assert_ptr_null(t.f);
    ck_assert(took >= 0.15 && took < 5.0);
    /* With O_NONBLOCK the caller asked for ENXIO. */
    t.flags = O_WRONLY | O_NONBLOCK;
    ck_assert_int_eq(timed_open(&t, &took), -ENXIO);
    /* An open for reading with no writer: io_uring waits for one and is
     * cancelled at the deadline (never the kernel's -ERESTARTSYS, also
     * with O_CREAT, which makes the open block in io-wq); epoll opens at
     * once and the first read waits for a writer instead. */
    for (int creat = 0; creat < 2; creat++) {
        t.flags = O_RDONLY | (creat ? O_CREAT : 0);
        long rc = timed_open(&t, &took);
        if (on_uring()) {
            ck_assert_int_eq(rc, -ETIMEDOUT);
            ck_assert(took < 5.0);
            continue;
        }
        ck_assert_int_eq(rc, 0);
        ck_assert_int_eq(timed_read(t.f, &took), -ETIMEDOUT);
        ck_assert(took >= 0.15 && took < 5.0);
        ck_assert_int_eq(cio_file_close(t.f), 0);
    }
    return 0;
}

START_TEST(file_fifo_deadlines)
{
    run_in_dir(fifo_deadline_main, true);
}
END_TEST

/* A FIFO between two tasks of one loop, with blocking opens: the writer
 * opens first (it waits for the reader), the reader gets the bytes, then
 * the end of the data once the writer has closed. */
typedef struct fifo_pair {
    const char *path;
    char got[16];
    ssize_t n, eof;
    int wrc;
} fifo_pair_t;

static int pair_writer(void *arg, void **result)
{
    (void)result;
    fifo_pair_t *p = arg;
    cio_file_t *f;
    ck_assert_int_eq(cio_file_open(&f, p->path, O_WRONLY, 0), 0);
    p->wrc = cio_file_write(f, "hello", 5, NULL);
    ck_assert_int_eq(cio_file_close(f), 0);
    return 0;
}

static int pair_reader(void *arg, void **result)
{
    (void)result;
    fifo_pair_t *p = arg;
    cio_file_t *f;
    ck_assert_int_eq(cio_file_open(&f, p->path, O_RDONLY, 0), 0);
    size_t n = 0;
    ssize_t r;
    while (n < 5 && (r = cio_file_read(f, p->got + n, sizeof p->got - n)) > 0)
        n += (size_t)r;
    p->n = (ssize_t)n;
    p->eof = cio_file_read(f, p->got + n, sizeof p->got - n);
    ck_assert_int_eq(cio_file_close(f), 0);
    return 0;
}

static int fifo_pair_main(void *arg, void **result)
{
    (void)result;
    char path[256];
    path_in(path, sizeof path, arg, "fifo");
    ck_assert_int_eq(mkfifo(path, 0600), 0);
    for (int order = 0; order < 2; order++) {
        fifo_pair_t p = {.path = path, .n = -1, .eof = -1, .wrc = 1};
        cio_task_t *first = spawn(order ? pair_reader : pair_writer, &p);
        settle();
        cio_task_t *second = spawn(order ? pair_writer : pair_reader, &p);
        ck_assert_int_eq(finish(first), 0);
        ck_assert_int_eq(finish(second), 0);
        ck_assert_int_eq(p.wrc, 0);
        ck_assert_int_eq(p.n, 5);
        ck_assert_int_eq(memcmp(p.got, "hello", 5), 0);
        ck_assert_int_eq(p.eof, 0);
    }
    return 0;
}

START_TEST(file_fifo_pair)
{
    run_in_dir(fifo_pair_main, true);
}
END_TEST

/* Readers blocked on FIFOs do not starve the other file calls: with a pool
 * of one thread, a regular file is still opened, read and closed. */
static int starve_main(void *arg, void **result)
{
    (void)result;
    cio_executor_t *ex;
    ck_assert_int_eq(cio_executor_new(&ex, 1), 0);
    ck_assert_int_eq(cio_loop_set_default_executor(cio_get_running_loop(), ex), 0);
    enum { N = 4 };
    char path[256];
    fifo_read_t r[N];
    cio_task_t *t[N];
    for (int i = 0; i < N; i++) {
        char name[16];
        snprintf(name, sizeof name, "fifo%d", i);
        path_in(path, sizeof path, arg, name);
        ck_assert_int_eq(mkfifo(path, 0600), 0);
        r[i] = (fifo_read_t){.got = -1};
        ck_assert_int_eq(cio_file_open(&r[i].f, path, O_RDWR, 0), 0);
        t[i] = spawn(fifo_reader, &r[i]);
    }
    settle();
    path_in(path, sizeof path, arg, "plain");
    put_file(path, "abc", 3);
    cio_scope_t s;
    ck_assert_int_eq(cio_scope_enter(&s, 10.0, 0), 0);
    cio_file_t *f;
    ck_assert_int_eq(cio_file_open(&f, path, O_RDONLY, 0), 0);
    char b[8];
    ck_assert_int_eq(cio_file_read(f, b, sizeof b), 3);
    ck_assert_int_eq(cio_file_close(f), 0);
    ck_assert_int_eq(cio_scope_exit(&s), 0);
    for (int i = 0; i < N; i++) {
        ck_assert_int_eq(r[i].got, -1); /* still waiting */
        ck_assert_int_eq(cio_task_cancel(t[i]), 1);
        finish(t[i]);
        ck_assert_int_eq(r[i].got, -ECANCELED);
        ck_assert_int_eq(cio_file_close(r[i].f), 0);
    }
    return 0;
}

START_TEST(file_fifo_no_starvation)
{
    run_in_dir(starve_main, true);
}
END_TEST

/* cio_file_close from a loop callback while another task's call on the file
 * is in flight: the close is deferred to the end of that call, which never
 * runs on a closed (maybe reused) number, and f is freed (LeakSanitizer). */
typedef struct cb_close {
    cio_file_t *f;
    int rc;
    bool ran;
} cb_close_t;

static void close_cb(void *arg)
{
    cb_close_t *c = arg;
    c->rc = cio_file_close(c->f);
    c->ran = true;
}

static void close_from_callback(cb_close_t *c)
{
    *c = (cb_close_t){.f = c->f, .rc = 1};
    ck_assert_int_eq(cio_call_soon(cio_get_running_loop(), NULL, close_cb, c), 0);
    while (!c->ran)
        ck_assert_int_eq(cio_yield(), 0);
    ck_assert_int_eq(c->rc, 0);
}

/* A pool job that holds the pool's only thread until a byte arrives. */
static int hold_job(void *arg, void **result)
{
    (void)result;
    char b;
    return read(*(int *)arg, &b, 1) == 1 ? 0 : -EIO;
}

static int holder(void *arg, void **result)
{
    (void)result;
    return cio_to_thread(hold_job, arg, NULL);
}

typedef struct cb_writer {
    cio_file_t *f;
    int rc;
    size_t written;
} cb_writer_t;

static int cb_writer(void *arg, void **result)
{
    (void)result;
    cb_writer_t *w = arg;
    w->rc = cio_file_write(w->f, "WRITTEN-TO-A\n", 13, &w->written);
    return 0;
}

static int close_cb_main(void *arg, void **result)
{
    (void)result;
    char path[256], pa[256];
    /* A read waiting on a FIFO is stopped with -EBADF, then f freed. */
    fifo_read_t r;
    cio_task_t *t = fifo_read_start(&r, path, sizeof path, arg);
    settle();
    cb_close_t c = {.f = r.f};
    close_from_callback(&c);
    ck_assert_int_eq(finish(t), 0);
    ck_assert_int_eq(r.got, -EBADF);

    /* epoll: a write queued on the pool (its only thread held) when the
     * callback closes the file. The number stays A's until the write has
     * run; then it is closed. */
    if (on_uring())
        return 0;
    cio_executor_t *ex;
    ck_assert_int_eq(cio_executor_new(&ex, 1), 0);
    ck_assert_int_eq(cio_loop_set_default_executor(cio_get_running_loop(), ex), 0);
    path_in(pa, sizeof pa, arg, "a");
    cb_writer_t w = {.rc = 1};
    ck_assert_int_eq(cio_file_open(&w.f, pa, O_WRONLY | O_CREAT | O_TRUNC, 0600), 0);
    int p[2];
    ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
    cio_task_t *h = spawn(holder, &p[0]);
    settle();
    int fdnum = cio_file_fd(w.f);
    struct stat sa, sn;
    ck_assert_int_eq(stat(pa, &sa), 0);
    cio_task_t *wt = spawn(cb_writer, &w);
    settle();
    c.f = w.f;
    close_from_callback(&c);
    ck_assert_int_eq(fstat(fdnum, &sn), 0); /* still A: the write is queued */
    ck_assert_uint_eq(sn.st_ino, sa.st_ino);
    ck_assert_int_eq(write(p[1], "x", 1), 1);
    ck_assert_int_eq(finish(h), 0);
    ck_assert_int_eq(finish(wt), 0);
    ck_assert_int_eq(w.rc, 0);
    ck_assert_uint_eq(w.written, 13);
    ck_assert_int_eq(fcntl(fdnum, F_GETFD), -1); /* closed by the write's end */
    ck_assert_int_eq(stat(pa, &sa), 0);
    ck_assert_int_eq(sa.st_size, 13);
    close(p[0]);
    close(p[1]);
    return 0;
}

START_TEST(file_close_from_callback)
{
    run_in_dir(close_cb_main, true);
}
END_TEST

/* One read(2) moves at most 2 GiB - 4 KiB: a bigger read of a regular file
 * is short before the end (as documented), the next read goes on; a write
 * of 3 GiB is whole. */
enum { MAX_RW = 0x7ffff000 };

static int big_rw_main(void *arg, void **result)
{
    (void)result;
    char path[256];
    path_in(path, sizeof path, arg, "sparse");
    size_t size = (size_t)MAX_RW + 3 * 4096;
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(ftruncate(fd, (off_t)size), 0); /* a hole: no disk used */
    close(fd);
    cio_file_t *f;
    ck_assert_int_eq(cio_file_open(&f, path, O_RDONLY, 0), 0);
    char *buf = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS |
                     MAP_NORESERVE, -1, 0);
    ck_assert(buf != MAP_FAILED);
    ck_assert_int_eq(cio_file_read(f, buf, size), MAX_RW);
    ck_assert_int_eq(cio_file_seek(f, 0, SEEK_CUR), MAX_RW);
    ck_assert_int_eq(cio_file_read(f, buf, size), 3 * 4096);
    ck_assert_int_eq(cio_file_read(f, buf, size), 0);
    ck_assert_int_eq(munmap(buf, size), 0);
    ck_assert_int_eq(cio_file_close(f), 0);

    /* 3 GiB of zero pages, never touched: /dev/null takes at most MAX_RW
     * per write(2), and cio_file_write goes on to the end. */
    size_t big = (size_t)3 << 30;
    const char *zero = mmap(NULL, big, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                            -1, 0);
    ck_assert(zero != MAP_FAILED);
    ck_assert_int_eq(cio_file_open(&f, "/dev/null", O_WRONLY, 0), 0);
    size_t written = 0;
    ck_assert_int_eq(cio_file_write(f, zero, big, &written), 0);
    ck_assert_uint_eq(written, big);
    ck_assert_int_eq(cio_file_pwrite(f, zero, big, 0, &written), 0);
    ck_assert_uint_eq(written, big);
    ck_assert_int_eq(cio_file_close(f), 0);
    ck_assert_int_eq(munmap((void *)zero, big), 0);
    return 0;
}

/* ThreadSanitizer marks every byte of a read(2) or write(2) buffer in its
 * shadow memory: 8 GiB of buffers take minutes there, so the test runs in
 * the other builds only (it has no cross-thread path of its own; UNDER_TSAN
 * is cio_test.h's). */

START_TEST(file_big_transfers)
{
#ifdef UNDER_TSAN
    return;
#endif
    run_in_dir(big_rw_main, true);
}
END_TEST

/* The reader generators are started at creation (they hold a stack of the
 * loop from then on, so they follow the rule of started generators: freed
 * before their loop closes); freed unused, nothing leaks. The follower's
 * options: an infinite interval is fine with inotify, not for polling. */
static int gen_rules_main(void *arg, void **result)
{
    (void)result;
    char path[256];
    path_in(path, sizeof path, arg, "x");
    put_file(path, "a\nb\n", 4);
    cio_gen_t *g[3];
    ck_assert_int_eq(cio_file_chunks(&g[0], path, 0), 0);
    ck_assert_int_eq(cio_file_lines(&g[1], path, 0), 0);
    ck_assert_int_eq(cio_file_follow(&g[2], path, NULL), 0);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(cio_gen_get_state(g[i]), CIO_GEN_SUSPENDED);
        ck_assert_int_eq(cio_gen_free(g[i]), 0);
    }
    cio_follow_opts_t o = {.poll_interval = INFINITY};
    cio_gen_t *fg = NOT_SET;
    ck_assert_int_eq(cio_file_follow(&fg, path, &o), 0);
    ck_assert_int_eq(cio_gen_free(fg), 0);
    o.flags = CIO_FOLLOW_POLL;
    fg = NOT_SET;
    ck_assert_int_eq(cio_file_follow(&fg, path, &o), -EINVAL);
    ck_assert_ptr_null(fg);
    o.poll_interval = -INFINITY;
    o.flags = 0;
    ck_assert_int_eq(cio_file_follow(&fg, path, &o), -EINVAL);
    return 0;
}

START_TEST(file_generator_rules)
{
    run_in_dir(gen_rules_main, true);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("file");
    TCase *tc = add_tcase(s, "object", TEST_TIMEOUT);
    tcase_add_test(tc, file_roundtrip);
    tcase_add_test(tc, file_big);
    tcase_add_test(tc, file_errors);
    tcase_add_test(tc, file_close_waits);
    tcase_add_test(tc, file_refused_while_closing);
    tc = add_tcase(s, "readers", TEST_TIMEOUT);
    tcase_add_test(tc, file_lines);
    tcase_add_test(tc, file_lines_long);
    tcase_add_test(tc, file_reader_early_exit);
    tc = add_tcase(s, "blocking", TEST_TIMEOUT);
    tcase_add_test(tc, file_loop_responsive);
    tcase_add_test(tc, file_cancelled_read);
    tcase_add_test(tc, file_cancelled_task_closes);
    tcase_add_test(tc, file_close_blocked_read);
    tc = add_tcase(s, "follow", TEST_TIMEOUT);
    tcase_add_test(tc, file_follow_inotify);
    tcase_add_test(tc, file_follow_poll);
    tcase_add_test(tc, file_follow_from_start);
    tcase_add_test(tc, file_follow_overflow);
    tc = add_tcase(s, "regressions", 60);
    tcase_add_test(tc, file_fifo_deadlines);
    tcase_add_test(tc, file_fifo_pair);
    tcase_add_test(tc, file_fifo_no_starvation);
    tcase_add_test(tc, file_close_from_callback);
    tcase_add_test(tc, file_big_transfers);
    tcase_add_test(tc, file_generator_rules);
    tc = add_tcase(s, "exhaustion", 60);
    tcase_add_test(tc, file_emfile);
    tcase_add_test(tc, file_alloc_failure);
    return s;
}

CIO_TEST_MAIN(suite)
