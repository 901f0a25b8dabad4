/*
 * Streams (cio_stream_*) and transports with protocols (cio_transport_*),
 * checked against the contract in cio.h over real sockets: TCP on
 * 127.0.0.1 and Unix socketpairs. The peer of the object under test is a
 * raw socket driven with cio_sock_* from tasks of the same loop.
 *
 * Covered: every read form (read, readexactly, readuntil, readline,
 * read_all, parse) with their EOF, limit and error cases; at_eof and
 * buffered; cancellation and deadlines at every await point losing
 * nothing; -EBUSY for a second reader; writes that are never short, the
 * water marks and drain (several drainers), the hard cap; write_eof;
 * close (flush, close_timeout, scope deadline, cancel) and abort;
 * get_extra_info; argument errors, -EPERM and -ESHUTDOWN. Transports: the
 * callbacks and their order, eof_received keeping a half-closed connection
 * writable, pause/resume of reading and writing, abort from inside
 * data_received, close flushing, write_eof, argument errors.
 */
#include "cio_net_test.h"

/* ------------------------------------------------------------------------ */
/* read                                                                      */
/* ------------------------------------------------------------------------ */

static int main_read_basic(void *arg, void **result)
{
    (void)result;
    int kind = *(int *)arg;
    int peer;
    cio_stream_t *s = stream_pair(kind, &peer, NULL);
    char buf[64];

    /* Nothing received yet: no bytes, not at EOF; n == 0 reads nothing. */
    ck_assert_uint_eq(cio_stream_buffered(s), 0);
    ck_assert(!cio_stream_at_eof(s));
    ck_assert_int_eq(cio_stream_read(s, buf, 0), 0);
    ck_assert_int_eq(cio_stream_read(s, NULL, 0), 0);

    peer_send_str(peer, "hello world");
    ck_assert_int_eq(cio_stream_read(s, buf, 5), 5);
    ck_assert_mem_eq(buf, "hello", 5);
    ck_assert_uint_eq(cio_stream_buffered(s), 6);
    ck_assert_int_eq(cio_stream_read(s, buf, 0), 0);
    ck_assert_uint_eq(cio_stream_buffered(s), 6);
    ck_assert_int_eq(cio_stream_read(s, buf, sizeof buf), 6);
    ck_assert_mem_eq(buf, " world", 6);
    ck_assert_uint_eq(cio_stream_buffered(s), 0);
    ck_assert(!cio_stream_at_eof(s));

    /* A read waits for bytes: it returns what arrives (at least 1). */
    peer_sender ps;
    cio_task_t *t = spawn_sender(&ps, peer, "tail", 4, D_SHORT, true);
    int64_t t0 = loop_ns();
    ck_assert_int_eq(cio_stream_read(s, buf, sizeof buf), 4);
    ck_assert_int_ge(since(t0), NS_SHORT);
    ck_assert_mem_eq(buf, "tail", 4);
    ck_assert_int_eq(finish(t), 0);
    ck_assert_int_eq(ps.rc, 0);

    /* EOF: 0, and 0 again; at_eof once every byte was read. */
    ck_assert_int_eq(cio_stream_read(s, buf, sizeof buf), 0);
    ck_assert(cio_stream_at_eof(s));
    ck_assert_int_eq(cio_stream_read(s, buf, sizeof buf), 0);
    ck_assert_int_eq(cio_stream_read(s, buf, 0), 0);

    /* The peer's EOF leaves our writing side open. */
    ck_assert_int_eq(cio_stream_write(s, "answer", 6), 0);
    ck_assert_int_eq(cio_stream_drain(s), 0);
    ck_assert_int_eq(peer_recv_exact(peer, buf, 6), 6);
    ck_assert_mem_eq(buf, "answer", 6);
    ck_assert_int_eq(cio_stream_close(s), 0);
    ck_assert_int_eq(cio_sock_recv(peer, buf, sizeof buf, 0), 0);
    ck_assert_int_eq(cio_close(peer), 0);
    return 0;
}

START_TEST(stream_read_basic)
{
    int kind = _i;
    run_net(main_read_basic, &kind);
}
END_TEST

/*
 * Reads of zero bytes, and reads at a clean EOF, when the stream holds no
 * buffer (it gives it back once every byte was read).
 *
 * Under -fsanitize=undefined these were undefined behaviour in the first
 * version of stream.c: memcpy(buf, s->buf + s->start, 0) with s->buf NULL
 * (and buf NULL for cio_stream_read(s, NULL, 0)) in read, readexactly and
 * readuntil (so readline at EOF); fixed by "stream memcpy guards".
 */
static int main_zero_reads(void *arg, void **result)
{
    (void)result;
    (void)arg;
    int peer;
    cio_stream_t *s = stream_pair(1, &peer, NULL);
    char buf[8];
    ck_assert_int_eq(cio_stream_read(s, buf, 0), 0);
    ck_assert_int_eq(cio_stream_read(s, NULL, 0), 0);
    ck_assert_int_eq(cio_stream_readexactly(s, buf, 0, NULL), 0);
    ck_assert_int_eq(shutdown(peer, SHUT_WR), 0);
    ck_assert_int_eq(cio_stream_readline(s, buf, sizeof buf), 0);
    size_t got = 7;
    ck_assert_int_eq(cio_stream_readuntil(s, "\n", 1, buf, sizeof buf, &got), -ENODATA);
    ck_assert_uint_eq(got, 0);
    ck_assert_int_eq(cio_stream_readexactly(s, buf, 1, &got), -ENODATA);
    ck_assert_int_eq(cio_stream_close(s), 0);
    ck_assert_int_eq(cio_close(peer), 0);
    return 0;
}

START_TEST(stream_zero_reads)
{
    run_net(main_zero_reads, NULL);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* readexactly                                                               */
/* ------------------------------------------------------------------------ */

static int main_readexactly(void *arg, void **result)
{
    (void)result;
    int kind = *(int *)arg;
    int peer;
    cio_stream_opts_t o = {.limit = 1024};
    cio_stream_t *s = stream_pair(kind, &peer, &o);
    char buf[64];
    size_t got = 777;

    /* The bytes come in two parts: readexactly waits for both. */
    peer_send_str(peer, "abc");
    peer_sender ps;
    cio_task_t *t = spawn_sender(&ps, peer, "defghXY", 7, D_SHORT, false);
    ck_assert_int_eq(cio_stream_readexactly(s, buf, 8, &got), 8);
    ck_assert_mem_eq(buf, "abcdefgh", 8);
    ck_assert_int_eq(finish(t), 0);
    wait_buffered(s, 2);
    ck_assert_uint_eq(cio_stream_buffered(s), 2);
    ck_assert_int_eq(cio_stream_readexactly(s, buf, 0, &got), 0);
    ck_assert_int_eq(cio_stream_readexactly(s, buf, 2, NULL), 2);
    ck_assert_mem_eq(buf, "XY", 2);

    /* n far above the stream's limit (1 KiB): the buffer grows for it. */
    size_t big = 300000;
    unsigned char *data = pattern_buf(0, big);
    unsigned char *in = malloc(big);
    ck_assert_ptr_nonnull(in);
    t = spawn_sender(&ps, peer, data, big, 0, false);
    ck_assert_int_eq(cio_stream_readexactly(s, in, big, &got), (ssize_t)big);
    ck_assert_int_eq(pattern_mismatch(in, big, 0), -1);
    ck_assert_int_eq(finish(t), 0);
    ck_assert_int_eq(ps.rc, 0);
    ck_assert_uint_eq(cio_stream_buffered(s), 0);

    /* An early EOF: -ENODATA with the partial bytes and their count, which
     * are consumed. */
    peer_send_str(peer, "xy");
    ck_assert_int_eq(shutdown(peer, SHUT_WR), 0);
    memset(buf, 0, sizeof buf);
    got = 777;
    ck_assert_int_eq(cio_stream_readexactly(s, buf, 5, &got), -ENODATA);
    ck_assert_uint_eq(got, 2);
    ck_assert_mem_eq(buf, "xy", 2);
    ck_assert_uint_eq(cio_stream_buffered(s), 0);
    ck_assert(cio_stream_at_eof(s));
    got = 777;
    ck_assert_int_eq(cio_stream_readexactly(s, buf, 1, &got), -ENODATA);
    ck_assert_uint_eq(got, 0);
    ck_assert_int_eq(cio_stream_readexactly(s, buf, 1, NULL), -ENODATA);

    free(data);
    free(in);
    ck_assert_int_eq(cio_stream_close(s), 0);
    ck_assert_int_eq(cio_close(peer), 0);
    return 0;
}

START_TEST(stream_readexactly)
{
    int kind = _i;
    run_net(main_readexactly, &kind);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* readuntil and readline                                                    */
/* ------------------------------------------------------------------------ */

static int main_readuntil(void *arg, void **result)
{
    (void)result;
    (void)arg;
    int peer;
    cio_stream_opts_t o = {.limit = 16};
    cio_stream_t *s = stream_pair(0, &peer, &o);
    char buf[256];
    size_t got = 777;

    /* Found, with one- and multi-byte separators. */
    peer_send_str(peer, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    ck_assert_int_eq(cio_stream_readuntil(s, "\r\n", 2, buf, 16, &got), 16);
    ck_assert_mem_eq(buf, "GET / HTTP/1.1\r\n", 16);
    ck_assert_int_eq(cio_stream_readuntil(s, "\r\n\r\n", 4, buf, sizeof buf, &got), 11);
    ck_assert_mem_eq(buf, "Host: x\r\n\r\n", 11);
    ck_assert_uint_eq(cio_stream_buffered(s), 0);

    /* A separator split across two arrivals. */
    peer_send_str(peer, "ab\r");
    wait_buffered(s, 3);
    peer_sender ps;
    cio_task_t *t = spawn_sender(&ps, peer, "\ncd", 3, D_SHORT, false);
    ck_assert_int_eq(cio_stream_readuntil(s, "\r\n", 2, buf, sizeof buf, NULL), 4);
    ck_assert_mem_eq(buf, "ab\r\n", 4);
    ck_assert_int_eq(finish(t), 0);
    wait_buffered(s, 2);
    ck_assert_int_eq(cio_stream_read(s, buf, 2), 2);
    ck_assert_mem_eq(buf, "cd", 2);

    /* -EOVERFLOW past cap (below the limit): nothing consumed. */
    peer_send_str(peer, "0123456789\n");
    wait_buffered(s, 11);
    ck_assert_int_eq(cio_stream_readuntil(s, "\n", 1, buf, 8, &got), -EOVERFLOW);
    ck_assert_uint_eq(cio_stream_buffered(s), 11);
    ck_assert_int_eq(cio_stream_readline(s, buf, 10), -EOVERFLOW);
    ck_assert_uint_eq(cio_stream_buffered(s), 11);
    /* The same bytes read whole with room enough. */
    ck_assert_int_eq(cio_stream_readuntil(s, "\n", 1, buf, 11, &got), 11);
    ck_assert_mem_eq(buf, "0123456789\n", 11);

    /* A separator ending exactly at the bound is within it. */
    peer_send_str(peer, "0123456\n");
    ck_assert_int_eq(cio_stream_readuntil(s, "\n", 1, buf, 8, NULL), 8);
    ck_assert_mem_eq(buf, "0123456\n", 8);
    peer_send_str(peer, "0123456789abcde\n");
    ck_assert_int_eq(cio_stream_readline(s, buf, sizeof buf), 16);
    ck_assert_mem_eq(buf, "0123456789abcde\n", 16);

    /* -EOVERFLOW past the stream's limit (16) with a large cap: one byte
     * more and the separator is out of bounds. The bytes stay readable. */
    peer_send_str(peer, "0123456789abcdef\n");
    wait_buffered(s, 17);
    ck_assert_int_eq(cio_stream_readline(s, buf, sizeof buf), -EOVERFLOW);
    ck_assert_int_eq(cio_stream_readuntil(s, "\n", 1, buf, sizeof buf, &got), -EOVERFLOW);
    ck_assert_uint_eq(cio_stream_buffered(s), 17);
    ck_assert_int_eq(cio_stream_readexactly(s, buf, 17, NULL), 17);
    ck_assert_mem_eq(buf, "0123456789abcdef\n", 17);

    /* A long run without a separator, more than arrives in one receive at
     * this limit: -EOVERFLOW, then every byte read back. */
    char line[40];
    memset(line, 'L', sizeof line);
    peer_send(peer, line, sizeof line);
    ck_assert_int_eq(cio_stream_readuntil(s, "\n", 1, buf, sizeof buf, &got), -EOVERFLOW);
    ck_assert_uint_ge(cio_stream_buffered(s), 16);
    ck_assert_int_eq(cio_stream_readexactly(s, buf, sizeof line, NULL), (ssize_t)sizeof line);
    ck_assert_mem_eq(buf, line, sizeof line);

    /* EOF before a separator: -ENODATA with the partial bytes, consumed. */
    peer_send_str(peer, "partial");
    ck_assert_int_eq(shutdown(peer, SHUT_WR), 0);
    wait_buffered(s, 7);
    memset(buf, 0, sizeof buf);
    got = 777;
    ck_assert_int_eq(cio_stream_readuntil(s, "\n", 1, buf, sizeof buf, &got), -ENODATA);
    ck_assert_uint_eq(got, 7);
    ck_assert_mem_eq(buf, "partial", 7);
    ck_assert_uint_eq(cio_stream_buffered(s), 0);
    ck_assert(cio_stream_at_eof(s));
    /* A clean EOF: -ENODATA with nothing. */
    got = 777;
    ck_assert_int_eq(cio_stream_readuntil(s, "\n", 1, buf, sizeof buf, &got), -ENODATA);
    ck_assert_uint_eq(got, 0);

    /* Bad arguments. */
    ck_assert_int_eq(cio_stream_readuntil(s, NULL, 1, buf, sizeof buf, NULL), -EINVAL);
    ck_assert_int_eq(cio_stream_readuntil(s, "\n", 0, buf, sizeof buf, NULL), -EINVAL);
    ck_assert_int_eq(cio_stream_readuntil(s, "\n", 1, NULL, 5, NULL), -EINVAL);
    ck_assert_int_eq(cio_stream_readuntil(NULL, "\n", 1, buf, sizeof buf, NULL), -EINVAL);

    ck_assert_int_eq(cio_stream_close(s), 0);
    ck_assert_int_eq(cio_close(peer), 0);
    return 0;
}

START_TEST(stream_readuntil)
{
    run_net(main_readuntil, NULL);
}
END_TEST

static int main_readline(void *arg, void **result)
{
    (void)result;
    int kind = *(int *)arg;
    int peer;
    cio_stream_t *s = stream_pair(kind, &peer, NULL);
    char buf[64];
    peer_send_str(peer, "a\nbb\n\nccc");
    ck_assert_int_eq(shutdown(peer, SHUT_WR), 0);
    ck_assert_int_eq(cio_stream_readline(s, buf, sizeof buf), 2);
    ck_assert_mem_eq(buf, "a\n", 2);
    ck_assert_int_eq(cio_stream_readline(s, buf, sizeof buf), 3);
    ck_assert_mem_eq(buf, "bb\n", 3);
    ck_assert_int_eq(cio_stream_readline(s, buf, sizeof buf), 1);
    ck_assert_mem_eq(buf, "\n", 1);
    /* The last line, without its '\n', as it is. */
    ck_assert_int_eq(cio_stream_readline(s, buf, sizeof buf), 3);
    ck_assert_mem_eq(buf, "ccc", 3);
    ck_assert(cio_stream_at_eof(s));
    ck_assert_int_eq(cio_stream_readline(s, buf, sizeof buf), 0);
    ck_assert_int_eq(cio_stream_readline(s, buf, sizeof buf), 0);
    ck_assert_int_eq(cio_stream_close(s), 0);
    ck_assert_int_eq(cio_close(peer), 0);
    return 0;
}

START_TEST(stream_readline)
{
    int kind = _i;
    run_net(main_readline, &kind);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* read_all                                                                  */
/* ------------------------------------------------------------------------ */

static int main_read_all(void *arg, void **result)
{
    (void)result;
    (void)arg;
    char *out = NOT_SET;
    size_t len = 777;

    /* No bound: everything to EOF, NUL-terminated, far past the limit. */
    int peer;
    cio_stream_t *s = stream_pair(0, &peer, NULL);
    size_t big = 300000;
    unsigned char *data = pattern_buf(0, big);
    peer_sender ps;
    cio_task_t *t = spawn_sender(&ps, peer, data, big, 0, true);
    ck_assert_int_eq(cio_stream_read_all(s, &out, &len, 0), 0);
    ck_assert_ptr_nonnull(out);
    ck_assert_uint_eq(len, big);
    ck_assert_int_eq(out[len], 0);
    ck_assert_int_eq(pattern_mismatch(out, len, 0), -1);
    free(out);
    ck_assert_int_eq(finish(t), 0);
    ck_assert(cio_stream_at_eof(s));
    /* At EOF with nothing left: 0, *out NULL, *len 0. */
    out = NOT_SET;
    len = 777;
    ck_assert_int_eq(cio_stream_read_all(s, &out, &len, 0), 0);
    ck_assert_uint_eq(len, 0);
    /* cio.h: *out is "NULL when nothing was read" (the first version of
     * stream.c handed back a malloc'd ""). */
    ck_assert_msg(out == NULL, "read_all at EOF with nothing read: *out %p, not NULL",
                  (void *)out);
    ck_assert_int_eq(cio_stream_close(s), 0);
    ck_assert_int_eq(cio_close(peer), 0);
    free(data);
    return 0;
}

START_TEST(stream_read_all)
{
    run_net(main_read_all, NULL);
}
END_TEST

static int main_read_all_max(void *arg, void **result)
{
    (void)result;
    (void)arg;
    char *out = NOT_SET;
    size_t len = 777;
    int peer;
    cio_stream_t *s = stream_pair(0, &peer, NULL);
    unsigned char *data = pattern_buf(0, 1000);

    /* Past max before EOF: -ENOBUFS at once with the first max bytes, the
     * rest still buffered. */
    peer_send(peer, data, 1000);
    wait_buffered(s, 1000);
    ck_assert_int_eq(cio_stream_read_all(s, &out, &len, 100), -ENOBUFS);
    ck_assert_ptr_nonnull(out);
    ck_assert_uint_eq(len, 100);
    ck_assert_int_eq(out[100], 0);
    ck_assert_int_eq(pattern_mismatch(out, 100, 0), -1);
    free(out);
    ck_assert_uint_eq(cio_stream_buffered(s), 900);

    /* Exactly max bytes, then EOF: 0 with all of them. */
    ck_assert_int_eq(shutdown(peer, SHUT_WR), 0);
    out = NOT_SET;
    ck_assert_int_eq(cio_stream_read_all(s, &out, &len, 900), 0);
    ck_assert_ptr_nonnull(out);
    ck_assert_uint_eq(len, 900);
    ck_assert_int_eq(pattern_mismatch(out, 900, 100), -1);
    free(out);
    ck_assert_int_eq(cio_stream_close(s), 0);
    ck_assert_int_eq(cio_close(peer), 0);

    /* Past max with EOF: -ENOBUFS; an unbounded read_all gets the rest. */
    s = stream_pair(0, &peer, NULL);
    peer_send(peer, data, 1000);
    ck_assert_int_eq(shutdown(peer, SHUT_WR), 0);
    out = NOT_SET;
    ck_assert_int_eq(cio_stream_read_all(s, &out, &len, 10), -ENOBUFS);
    ck_assert_uint_eq(len, 10);
    ck_assert_int_eq(pattern_mismatch(out, 10, 0), -1);
    free(out);
    out = NOT_SET;
    ck_assert_int_eq(cio_stream_read_all(s, &out, &len, 0), 0);
    ck_assert_uint_eq(len, 990);
    ck_assert_int_eq(pattern_mismatch(out, 990, 10), -1);
    free(out);

    ck_assert_int_eq(cio_stream_read_all(s, NULL, &len, 0), -EINVAL);
    ck_assert_int_eq(cio_stream_read_all(s, &out, NULL, 0), -EINVAL);
    ck_assert_int_eq(cio_stream_read_all(NULL, &out, &len, 0), -EINVAL);
    ck_assert_int_eq(cio_stream_close(s), 0);
    ck_assert_int_eq(cio_close(peer), 0);
    free(data);
    return 0;
}

START_TEST(stream_read_all_max)
{
    run_net(main_read_all_max, NULL);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* parse                                                                     */
/* ------------------------------------------------------------------------ */

/* "<len>:<payload>" messages. */
typedef struct msg {
    char payload[128];
    size_t len;
    int calls;
    int eof_calls;
    size_t last_n;
} msg_t;

static ssize_t parse_msg(void *arg, const char *data, size_t n, bool eof)
{
    msg_t *m = arg;
    m->calls++;
    m->eof_calls += eof;
    m->last_n = n;
    const char *colon = memchr(data, ':', n);
    if (!colon)
        return 0;
    size_t len = 0;
    for (const char *p = data; p < colon; p++) {
        if (*p < '0' || *p > '9')
            return -EPROTO;
        len = len * 10 + (size_t)(*p - '0');
    }
    size_t hdr = (size_t)(colon - data) + 1;
    if (n < hdr + len)
        return 0;
    if (len > sizeof m->payload)
        return -EMSGSIZE;
    memcpy(m->payload, colon + 1, len);
    m->len = len;
    return (ssize_t)(hdr + len);
}

/* Consumes everything it is shown once EOF is set. */
static ssize_t parse_rest_at_eof(void *arg, const char *data, size_t n, bool eof)
{
    msg_t *m = arg;
    (void)data;
    m->calls++;
    return eof ? (ssize_t)n : 0;
}

static int main_parse(void *arg, void **result)
{
    (void)result;
    (void)arg;
    int peer;
    cio_stream_t *s = stream_pair(0, &peer, NULL);
    msg_t m;

    /* Two pipelined messages in one send: the second is parsed from the
     * buffer without waiting. */
    peer_send_str(peer, "5:hello3:abc");
    wait_buffered(s, 12);
    memset(&m, 0, sizeof m);
    ck_assert_int_eq(cio_stream_parse(s, parse_msg, &m, 0), 7);
    ck_assert_uint_eq(m.len, 5);
    ck_assert_mem_eq(m.payload, "hello", 5);
    ck_assert_int_eq(m.calls, 1);
    ck_assert_uint_eq(m.last_n, 12);
    ck_assert_uint_eq(cio_stream_buffered(s), 5);
    memset(&m, 0, sizeof m);
    ck_assert_int_eq(cio_stream_parse(s, parse_msg, &m, 0), 5);
    ck_assert_mem_eq(m.payload, "abc", 3);
    ck_assert_int_eq(m.calls, 1);
    ck_assert_uint_eq(cio_stream_buffered(s), 0);

    /* A message split across arrivals: fn runs again when more came. */
    peer_send_str(peer, "11:hello");
    wait_buffered(s, 8);
    peer_sender ps;
    cio_task_t *t = spawn_sender(&ps, peer, " world", 6, D_SHORT, false);
    memset(&m, 0, sizeof m);
    ck_assert_int_eq(cio_stream_parse(s, parse_msg, &m, 0), 14);
    ck_assert_mem_eq(m.payload, "hello world", 11);
    ck_assert_int_ge(m.calls, 2);
    ck_assert_int_eq(m.eof_calls, 0);
    ck_assert_int_eq(finish(t), 0);

    /* fn failing: its code, nothing consumed. */
    peer_send_str(peer, "x:");
    wait_buffered(s, 2);
    memset(&m, 0, sizeof m);
    ck_assert_int_eq(cio_stream_parse(s, parse_msg, &m, 0), -EPROTO);
    ck_assert_uint_eq(cio_stream_buffered(s), 2);
    char buf[64];
    ck_assert_int_eq(cio_stream_readexactly(s, buf, 2, NULL), 2);

    /* More than limit bytes and fn still wants more: -EOVERFLOW, nothing
     * consumed. */
    const char *big = "100:0123456789012345678901234567890";
    size_t blen = strlen(big);
    peer_send_str(peer, big);
    wait_buffered(s, blen);
    memset(&m, 0, sizeof m);
    ck_assert_int_eq(cio_stream_parse(s, parse_msg, &m, 16), -EOVERFLOW);
    ck_assert_uint_eq(cio_stream_buffered(s), blen);
    ck_assert_int_eq(cio_stream_readexactly(s, buf, blen, NULL), (ssize_t)blen);
    ck_assert_mem_eq(buf, big, blen);

    /* EOF inside a message: fn sees eof set, returns 0: -ENODATA, nothing
     * consumed; a fn that takes the rest at EOF gets it. */
    peer_send_str(peer, "9:abc");
    ck_assert_int_eq(shutdown(peer, SHUT_WR), 0);
    memset(&m, 0, sizeof m);
    ck_assert_int_eq(cio_stream_parse(s, parse_msg, &m, 0), -ENODATA);
    ck_assert_int_ge(m.eof_calls, 1);
    ck_assert_uint_eq(cio_stream_buffered(s), 5);
    ck_assert(!cio_stream_at_eof(s));
    memset(&m, 0, sizeof m);
    ck_assert_int_eq(cio_stream_parse(s, parse_rest_at_eof, &m, 0), 5);
    ck_assert(cio_stream_at_eof(s));
    /* A clean EOF: fn is shown 0 bytes with eof, -ENODATA. */
    memset(&m, 0, sizeof m);
    ck_assert_int_eq(cio_stream_parse(s, parse_msg, &m, 0), -ENODATA);
    ck_assert_int_eq(m.eof_calls, 1);
    ck_assert_uint_eq(m.last_n, 0);

    ck_assert_int_eq(cio_stream_parse(s, NULL, &m, 0), -EINVAL);
    ck_assert_int_eq(cio_stream_parse(NULL, parse_msg, &m, 0), -EINVAL);
    ck_assert_int_eq(cio_stream_close(s), 0);
    ck_assert_int_eq(cio_close(peer), 0);
    return 0;
}

START_TEST(stream_parse)
{
    run_net(main_parse, NULL);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Reading is bounded: a peer that sends faster than the task reads          */
/* ------------------------------------------------------------------------ */

static int main_read_bounded(void *arg, void **result)
{
    (void)result;
    (void)arg;
    int peer;
    cio_stream_opts_t o = {.limit = 64 * 1024};
    cio_stream_t *s = stream_pair(0, &peer, &o);
    /* The peer sends until the kernel takes no more: the stream stops
     * receiving at its limit, so TCP holds the rest back. */
    size_t sent = 0;
    for (int i = 0; i < 50; i++) {
        sent += fill_fd(peer);
        ck_assert_int_eq(cio_sleep(0.002), 0);
    }
    ck_assert_uint_le(cio_stream_buffered(s), o.limit + CIO__TEST_READ_SIZE);
    ck_assert_uint_ge(cio_stream_buffered(s), o.limit);
    ck_assert_uint_gt(sent, cio_stream_buffered(s));
    /* Everything still arrives, in order, once the task reads. */
    size_t got = 0;
    char *buf = malloc(MIB);
    ck_assert_ptr_nonnull(buf);
    while (got < sent) {
        ssize_t r = cio_stream_read(s, buf, MIB);
        ck_assert_int_gt(r, 0);
        ssize_t bad = -1;
        for (ssize_t i = 0; i < r && bad < 0; i++)
            if (buf[i] != 'F')
                bad = i;
        ck_assert_int_eq(bad, -1);
        got += (size_t)r;
        ck_assert_uint_le(cio_stream_buffered(s), o.limit + CIO__TEST_READ_SIZE);
    }
    ck_assert_uint_eq(got, sent);
    free(buf);
    ck_assert_int_eq(cio_stream_close(s), 0);
    ck_assert_int_eq(cio_close(peer), 0);
    return 0;
}

START_TEST(stream_read_bounded)
{
    run_net(main_read_bounded, NULL);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Cancellation and deadlines lose nothing                                   */
/* ------------------------------------------------------------------------ */

enum { OP_READ, OP_READEXACTLY, OP_READUNTIL, OP_READLINE, OP_READ_ALL, OP_PARSE, OP_COUNT };
enum { BY_WAIT_FOR, BY_SCOPE, BY_CANCEL, BY_COUNT };

static const char *op_name[] = {"read", "readexactly", "readuntil", "readline", "read_all",
                                "parse"};

static ssize_t need10(void *arg, const char *data, size_t n, bool eof)
{
    (void)eof;
    if (n < 10)
        return 0;
    memcpy(arg, data, 10);
    return 10;
}

typedef struct opctx {
    cio_stream_t *s;
    int op;
    ssize_t rc;
    char buf[64];
    char *all;
    size_t len;
    int done;
} opctx;

static ssize_t do_op(opctx *o)
{
    switch (o->op) {
    case OP_READ:
        return cio_stream_read(o->s, o->buf, sizeof o->buf);
    case OP_READEXACTLY:
        return cio_stream_readexactly(o->s, o->buf, 10, NULL);
    case OP_READUNTIL:
        return cio_stream_readuntil(o->s, "\n", 1, o->buf, sizeof o->buf, NULL);
    case OP_READLINE:
        return cio_stream_readline(o->s, o->buf, sizeof o->buf);
    case OP_READ_ALL: {
        int rc = cio_stream_read_all(o->s, &o->all, &o->len, 0);
        return rc ? rc : (ssize_t)o->len;
    }
    default:
        return cio_stream_parse(o->s, need10, o->buf, 0);
    }
}

static int op_body(void *arg, void **result)
{
    (void)result;
    opctx *o = arg;
    o->rc = do_op(o);
    o->done = 1;
    return 0;
}

static int main_cancel_nondestructive(void *arg, void **result)
{
    (void)result;
    int op = *(int *)arg % OP_COUNT, by = *(int *)arg / OP_COUNT;
    int peer;
    cio_stream_t *s = stream_pair(0, &peer, NULL);
    opctx o = {.s = s, .op = op, .rc = 12345};
    /* Part of what the call needs has arrived (read needs nothing more: it
     * is interrupted while nothing has). */
    if (op != OP_READ) {
        peer_send_str(peer, "part");
        wait_buffered(s, 4);
    }
    int64_t t0 = loop_ns();
    if (by == BY_SCOPE) {
        cio_scope_t sc;
        ck_assert_int_eq(cio_scope_enter(&sc, D_SHORT, 0), 0);
        ck_assert_int_eq(do_op(&o), -ETIMEDOUT);
        ck_assert_int_eq(cio_scope_exit(&sc), -ETIMEDOUT);
        ck_assert_int_ge(since(t0), NS_SHORT);
    } else {
        cio_task_t *t = spawn(op_body, &o);
        if (by == BY_WAIT_FOR) {
            ck_assert_int_eq(cio_wait_for(t, D_SHORT, NULL), -ETIMEDOUT);
            ck_assert_int_ge(since(t0), NS_SHORT);
        } else {
            settle();
            ck_assert(!o.done);
            ck_assert_int_eq(cio_task_cancel(t), 1);
            cio_await(t, NULL);
        }
        cio_future_release(t);
        ck_assert(o.done);
        ck_assert_msg(o.rc == -ECANCELED, "%s: %zd", op_name[op], o.rc);
    }
    ck_assert_ptr_null(o.all);
    /* Nothing was consumed. */
    ck_assert_uint_eq(cio_stream_buffered(s), op == OP_READ ? 0 : 4);
    ck_assert(!cio_stream_at_eof(s));

    /* The same call, uninterrupted, gets the bytes of before and after. */
    peer_send_str(peer, op == OP_READ ? "part567890\nXYZ" : "567890\nXYZ");
    ck_assert_int_eq(shutdown(peer, SHUT_WR), 0);
    if (op == OP_READ_ALL || op == OP_READ)
        wait_buffered(s, 14);
    o.rc = do_op(&o);
    static const ssize_t want[] = {14, 10, 11, 11, 14, 10};
    ck_assert_msg(o.rc == want[op], "%s: %zd", op_name[op], o.rc);
    static const char all[] = "part567890\nXYZ";
    ck_assert_mem_eq(op == OP_READ_ALL ? o.all : o.buf, all, (size_t)o.rc);
    free(o.all);
    /* And what is left follows. */
    char rest[64];
    ssize_t left = 14 - o.rc;
    ck_assert_int_eq(cio_stream_readexactly(s, rest, (size_t)left, NULL), left);
    ck_assert_mem_eq(rest, &all[o.rc], (size_t)left);
    ck_assert_int_eq(cio_stream_read(s, rest, sizeof rest), 0);
    ck_assert_int_eq(cio_stream_close(s), 0);
    ck_assert_int_eq(cio_close(peer), 0);
    return 0;
}

START_TEST(stream_cancel_nondestructive)
{
    int k = _i;
    run_net(main_cancel_nondestructive, &k);
}
END_TEST

/*
 * Bytes that arrive in the same loop turn as the cancel of a reader are
 * not lost: either the reader got them, or they stay buffered.
 */
static int main_cancel_race(void *arg, void **result)
{
    (void)result;
    (void)arg;
    int peer;
    cio_stream_t *s = stream_pair(0, &peer, NULL);
    size_t total = 0;
    char expect[2048], seen[2048];
    size_t nseen = 0;
    for (int round = 0; round < 200; round++) {
        opctx o = {.s = s, .op = OP_READ, .rc = 12345};
        cio_task_t *t = spawn(op_body, &o);
        for (int k = 0; k < round % 4; k++)
            ck_assert_int_eq(cio_yield(), 0);
        char c = (char)('a' + round % 26);
        expect[total++] = c;
        ck_assert_int_eq(send(peer, &c, 1, MSG_DONTWAIT), 1);
        for (int k = 0; k < round % 3; k++)
            ck_assert_int_eq(cio_yield(), 0);
        cio_task_cancel(t);
        cio_await(t, NULL);
        cio_future_release(t);
        if (o.rc > 0) {
            memcpy(seen + nseen, o.buf, (size_t)o.rc);
            nseen += (size_t)o.rc;
        } else {
            ck_assert_int_eq(o.rc, -ECANCELED);
        }
    }
    ck_assert_int_eq(shutdown(peer, SHUT_WR), 0);
    char *all = NULL;
    size_t len = 0;
    ck_assert_int_eq(cio_stream_read_all(s, &all, &len, 0), 0);
    if (len)
        memcpy(seen + nseen, all, len);
    nseen += len;
    free(all);
    ck_assert_uint_eq(nseen, total);
    ck_assert_mem_eq(seen, expect, total);
    ck_assert_int_eq(cio_stream_close(s), 0);
    ck_assert_int_eq(cio_close(peer), 0);
    return 0;
}

START_TEST(stream_cancel_race)
{
    run_net(main_cancel_race, NULL);
}
END_TEST

/* A drain cancelled or timed out loses nothing: the bytes stay queued. */
typedef struct drainer {
    cio_stream_t *s;
    int rc;
    size_t wsize; /* the write buffer when drain returned */
    int done;
} drainer;

static int drainer_body(void *arg, void **result)
{
    (void)result;
    drainer *d = arg;
    d->rc = cio_stream_drain(d->s);
    /* After -ESHUTDOWN the stream may be gone (released by close). */
    cio_transport_t *t = d->rc ? NULL : cio_stream_transport(d->s);
    d->wsize = t ? cio_transport_get_write_buffer_size(t) : 0;
    d->done = 1;
    return 0;
}

static int main_drain_cancel(void *arg, void **result)
{
    (void)result;
    int by = *(int *)arg;
    int peer;
    cio_stream_opts_t o = {.high_water = 16384};
    cio_stream_t *s = slow_stream(&peer, &o);
    size_t n = 2 * MIB;
    unsigned char *data = pattern_buf(0, n);
    ck_assert_int_eq(cio_stream_write(s, data, n), 0);
    ck_assert_uint_gt(wbuf(s), o.high_water);
    int64_t t0 = loop_ns();
    if (by == BY_SCOPE) {
        cio_scope_t sc;
        ck_assert_int_eq(cio_scope_enter(&sc, D_SHORT, 0), 0);
        ck_assert_int_eq(cio_stream_drain(s), -ETIMEDOUT);
        ck_assert_int_eq(cio_scope_exit(&sc), -ETIMEDOUT);
    } else {
        drainer d = {.s = s, .rc = 12345};
        cio_task_t *t = spawn(drainer_body, &d);
        if (by == BY_WAIT_FOR) {
            ck_assert_int_eq(cio_wait_for(t, D_SHORT, NULL), -ETIMEDOUT);
        } else {
            ck_assert_int_eq(cio_sleep(D_SHORT), 0);
            ck_assert(!d.done);
            ck_assert_int_eq(cio_task_cancel(t), 1);
            cio_await(t, NULL);
        }
        cio_future_release(t);
        ck_assert(d.done);
        ck_assert_int_eq(d.rc, -ECANCELED);
    }
    ck_assert_int_ge(since(t0), NS_SHORT);
    ck_assert_uint_gt(wbuf(s), o.high_water);
    /* Every byte reaches the peer once it reads, and drain then returns. */
    peer_reader r;
    peer_reader_init(&r, peer, n, 0, true);
    cio_task_t *rt = spawn(peer_reader_body, &r);
    ck_assert_int_eq(cio_stream_drain(s), 0);
    ck_assert_uint_le(wbuf(s), o.high_water / 4);
    ck_assert_int_eq(finish(rt), 0);
    ck_assert_uint_eq(r.got, n);
    ck_assert_int_eq(r.bad, -1);
    ck_assert_int_eq(cio_stream_close(s), 0);
    ck_assert_int_eq(cio_sock_recv(peer, data, 1, 0), 0);
    ck_assert_int_eq(cio_close(peer), 0);
    free(data);
    return 0;
}

START_TEST(stream_drain_cancel)
{
    int by = _i;
    run_net(main_drain_cancel, &by);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* One reader at a time                                                      */
/* ------------------------------------------------------------------------ */

static int main_second_reader(void *arg, void **result)
{
    (void)result;
    (void)arg;
    int peer;
    cio_stream_t *s = stream_pair(0, &peer, NULL);
    opctx o = {.s = s, .op = OP_READ, .rc = 12345};
    cio_task_t *t = spawn(op_body, &o);
    settle();
    ck_assert(!o.done);
    char buf[16];
    char *all = NOT_SET;
    size_t len;
    msg_t m;
    ck_assert_int_eq(cio_stream_read(s, buf, sizeof buf), -EBUSY);
    ck_assert_int_eq(cio_stream_readexactly(s, buf, 1, NULL), -EBUSY);
    ck_assert_int_eq(cio_stream_readuntil(s, "\n", 1, buf, sizeof buf, NULL), -EBUSY);
    ck_assert_int_eq(cio_stream_readline(s, buf, sizeof buf), -EBUSY);
    ck_assert_int_eq(cio_stream_read_all(s, &all, &len, 0), -EBUSY);
    ck_assert_ptr_null(all);
    ck_assert_int_eq(cio_stream_parse(s, parse_msg, &m, 0), -EBUSY);
    /* Writing and draining are not reading. */
    ck_assert_int_eq(cio_stream_write(s, "w", 1), 0);
    ck_assert_int_eq(cio_stream_drain(s), 0);
    ck_assert_int_eq(peer_recv_exact(peer, buf, 1), 1);
    ck_assert_int_eq(buf[0], 'w');
    /* The first reader is undisturbed and gets the bytes. */
    ck_assert(!o.done);
    peer_send_str(peer, "z");
    ck_assert_int_eq(finish(t), 0);
    ck_assert_int_eq(o.rc, 1);
    ck_assert_int_eq(o.buf[0], 'z');
    /* Once it is done, reading is free again. */
    peer_send_str(peer, "q");
    ck_assert_int_eq(cio_stream_read(s, buf, sizeof buf), 1);
    ck_assert_int_eq(cio_stream_close(s), 0);
    ck_assert_int_eq(cio_close(peer), 0);
    return 0;
}

START_TEST(stream_second_reader)
{
    run_net(main_second_reader, NULL);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Writing                                                                    */
/* ------------------------------------------------------------------------ */

static int main_write_large(void *arg, void **result)
{
    (void)result;
    int kind = *(int *)arg;
    int peer;
    cio_stream_t *s = stream_pair(kind, &peer, NULL);
    size_t big = 8 * MIB, small = 1000, nsmall = 1000;
    size_t tail1 = 300000, tail2 = 5, tail3 = MIB;
    size_t total = big + small * nsmall + tail1 + tail2 + tail3;
    unsigned char *data = pattern_buf(0, total);
    peer_reader r;
    peer_reader_init(&r, peer, total, 0, true);
    r.delay = D_SHORT; /* the writes all queue before the peer reads */

    /* One write of 8 MiB: never short, queued at once. */
    ck_assert_int_eq(cio_stream_write(s, data, big), 0);
    size_t off = big;
    ck_assert_uint_gt(wbuf(s), 0);
    ck_assert_uint_le(wbuf(s), big);
    /* Many small writes behind it keep their order. */
    for (size_t i = 0; i < nsmall; i++, off += small)
        ck_assert_int_eq(cio_stream_write(s, data + off, small), 0);
    /* writev, with an empty element. */
    struct iovec iov[4] = {
        {data + off, tail1},
        {data, 0},
        {data + off + tail1, tail2},
        {data + off + tail1 + tail2, tail3},
    };
    ck_assert_int_eq(cio_stream_writev(s, iov, 4), 0);
    ck_assert_int_eq(cio_stream_writev(s, iov, 0), 0);
    ck_assert_int_eq(cio_stream_write(s, data, 0), 0);
    cio_task_t *t = spawn(peer_reader_body, &r);
    ck_assert_int_eq(cio_stream_drain(s), 0);
    ck_assert_int_eq(cio_stream_close(s), 0);
    ck_assert_int_eq(finish(t), 0);
    ck_assert_uint_eq(r.got, total);
    ck_assert_int_eq(r.bad, -1);
    ck_assert_int_eq(cio_sock_recv(peer, data, 1, 0), 0);
    ck_assert_int_eq(cio_close(peer), 0);
    free(data);
    return 0;
}

START_TEST(stream_write_large)
{
    int kind = _i;
    run_net(main_write_large, &kind);
}
END_TEST

/* The stream on both ends: 8 MiB each way at once, read with readexactly. */
typedef struct duplex {
    cio_stream_t *s;
    size_t n;
    unsigned char *in;
    ssize_t rc;
} duplex;

static int duplex_reader(void *arg, void **result)
{
    (void)result;
    duplex *d = arg;
    d->rc = cio_stream_readexactly(d->s, d->in, d->n, NULL);
    return 0;
}

static int main_write_duplex(void *arg, void **result)
{
    (void)result;
    (void)arg;
    int sv[2];
    tcp_pair(sv);
    cio_stream_t *a, *b;
    ck_assert_int_eq(cio_stream_new(&a, sv[0], NULL), 0);
    ck_assert_int_eq(cio_stream_new(&b, sv[1], NULL), 0);
    size_t n = 8 * MIB;
    unsigned char *data = pattern_buf(0, n);
    duplex da = {.s = a, .n = n, .in = malloc(n)}, db = {.s = b, .n = n, .in = malloc(n)};
    ck_assert_ptr_nonnull(da.in);
    ck_assert_ptr_nonnull(db.in);
    cio_task_t *ta = spawn(duplex_reader, &da), *tb = spawn(duplex_reader, &db);
    ck_assert_int_eq(cio_stream_write(a, data, n), 0);
    ck_assert_int_eq(cio_stream_write(b, data, n), 0);
    ck_assert_int_eq(cio_stream_drain(a), 0);
    ck_assert_int_eq(cio_stream_drain(b), 0);
    ck_assert_int_eq(finish(ta), 0);
    ck_assert_int_eq(finish(tb), 0);
    ck_assert_int_eq(da.rc, (ssize_t)n);
    ck_assert_int_eq(db.rc, (ssize_t)n);
    ck_assert_int_eq(pattern_mismatch(da.in, n, 0), -1);
    ck_assert_int_eq(pattern_mismatch(db.in, n, 0), -1);
    ck_assert_int_eq(cio_stream_close(a), 0);
    char c;
    ck_assert_int_eq(cio_stream_read(b, &c, 1), 0);
    ck_assert_int_eq(cio_stream_close(b), 0);
    free(da.in);
    free(db.in);
    free(data);
    return 0;
}

START_TEST(stream_write_duplex)
{
    run_net(main_write_duplex, NULL);
}
END_TEST

/* drain waits above the high-water mark until the buffer is down to the
 * low one; several tasks drain at once. */
static int main_drain_water_marks(void *arg, void **result)
{
    (void)result;
    (void)arg;
    int peer;
    cio_stream_opts_t o = {.high_water = 65536, .low_water = 16384};
    cio_stream_t *s = slow_stream(&peer, &o);
    /* Below the high-water mark drain returns at once. */
    size_t n = 4 * MIB;
    unsigned char *data = pattern_buf(0, n + 1);
    ck_assert_int_eq(cio_stream_write(s, data, 1), 0);
    ck_assert_int_eq(cio_stream_drain(s), 0);
    ck_assert_int_eq(cio_stream_write(s, data + 1, n), 0);
    ck_assert_uint_gt(wbuf(s), o.high_water);
    enum { ND = 3 };
    drainer d[ND];
    cio_task_t *t[ND];
    for (int i = 0; i < ND; i++) {
        d[i] = (drainer){.s = s, .rc = 12345};
        t[i] = spawn(drainer_body, &d[i]);
    }
    ck_assert_int_eq(cio_sleep(D_SHORT), 0);
    for (int i = 0; i < ND; i++)
        ck_assert(!d[i].done);
    peer_reader r;
    peer_reader_init(&r, peer, n + 1, 0, true);
    cio_task_t *rt = spawn(peer_reader_body, &r);
    for (int i = 0; i < ND; i++) {
        ck_assert_int_eq(finish(t[i]), 0);
        ck_assert_int_eq(d[i].rc, 0);
        ck_assert_uint_le(d[i].wsize, o.low_water);
    }
    ck_assert_int_eq(finish(rt), 0);
    ck_assert_uint_eq(r.got, n + 1);
    ck_assert_int_eq(r.bad, -1);
    ck_assert_uint_eq(wbuf(s), 0);
    ck_assert_int_eq(cio_stream_close(s), 0);
    ck_assert_int_eq(cio_close(peer), 0);
    free(data);
    return 0;
}

START_TEST(stream_drain_water_marks)
{
    run_net(main_drain_water_marks, NULL);
}
END_TEST

/* The hard cap: -ENOBUFS with nothing queued, memory bounded while the
 * peer never reads; every accepted byte is delivered. */
static int main_write_cap(void *arg, void **result)
{
    (void)result;
    (void)arg;
    int peer;
    cio_stream_opts_t o = {.high_water = 65536, .write_limit = MIB};
    cio_stream_t *s = slow_stream(&peer, &o);
    size_t cap = 8 * MIB, chunk = 65536, accepted = 0;
    unsigned char *data = pattern_buf(0, cap);
    /* A single write above the cap is refused whole. */
    ck_assert_int_eq(cio_stream_write(s, data, MIB + 1), -ENOBUFS);
    ck_assert_uint_eq(wbuf(s), 0);
    int rc;
    for (;;) {
        ck_assert_uint_lt(accepted + chunk, cap);
        size_t before = wbuf(s);
        rc = cio_stream_write(s, data + accepted, chunk);
        ck_assert_uint_le(wbuf(s), o.write_limit);
        if (rc == -ENOBUFS) {
            ck_assert_uint_eq(wbuf(s), before);
            ck_assert_uint_gt(before + chunk, o.write_limit);
            break;
        }
        ck_assert_int_eq(rc, 0);
        accepted += chunk;
        ck_assert_int_eq(cio_sleep(0), 0);
    }
    /* Exactly up to the cap is accepted, one byte more is not. */
    size_t room = o.write_limit - wbuf(s);
    ck_assert_int_eq(cio_stream_write(s, data + accepted, room), 0);
    accepted += room;
    ck_assert_uint_eq(wbuf(s), o.write_limit);
    ck_assert_int_eq(cio_stream_write(s, data + accepted, 1), -ENOBUFS);
    struct iovec iov[2] = {{data + accepted, 1}, {data + accepted + 1, 1}};
    ck_assert_int_eq(cio_stream_writev(s, iov, 2), -ENOBUFS);
    ck_assert_uint_eq(wbuf(s), o.write_limit);
    /* The peer still does not read, the task keeps writing: memory stays
     * bounded (what the kernel takes meanwhile makes room for some). */
    int refused = 0;
    for (int i = 0; i < 30; i++) {
        ck_assert_int_eq(cio_sleep(0.01), 0);
        size_t before = wbuf(s);
        ck_assert_uint_lt(accepted + chunk, cap);
        rc = cio_stream_write(s, data + accepted, chunk);
        ck_assert_uint_le(wbuf(s), o.write_limit);
        if (rc == 0) {
            accepted += chunk;
        } else {
            ck_assert_int_eq(rc, -ENOBUFS);
            ck_assert_uint_eq(wbuf(s), before);
            refused++;
        }
    }
    ck_assert_int_gt(refused, 0);
    /* Every accepted byte arrives, and nothing of the refused writes. */
    peer_reader r;
    peer_reader_init(&r, peer, SIZE_MAX, 0, true);
    cio_task_t *t = spawn(peer_reader_body, &r);
    ck_assert_int_eq(cio_stream_close(s), 0);
    ck_assert_int_eq(finish(t), 0);
    ck_assert_int_eq(r.end, 0);
    ck_assert_uint_eq(r.got, accepted);
    ck_assert_int_eq(r.bad, -1);
    ck_assert_int_eq(cio_close(peer), 0);
    free(data);
    return 0;
}

START_TEST(stream_write_cap)
{
    run_net(main_write_cap, NULL);
}
END_TEST

/* write_eof: the peer sees EOF after every byte and can still answer. */
static int main_write_eof(void *arg, void **result)
{
    (void)result;
    int kind = *(int *)arg;
    int peer;
    cio_stream_t *s = stream_pair(kind, &peer, NULL);
    size_t n = 2 * MIB;
    unsigned char *data = pattern_buf(0, n);
    ck_assert_int_eq(cio_stream_write(s, data, n), 0);
    ck_assert_int_eq(cio_stream_write_eof(s), 0);
    ck_assert_int_eq(cio_stream_write(s, "x", 1), -ESHUTDOWN);
    struct iovec iov = {data, 1};
    ck_assert_int_eq(cio_stream_writev(s, &iov, 1), -ESHUTDOWN);
    ck_assert_int_eq(cio_stream_write_eof(s), -ESHUTDOWN);
    peer_reader r;
    peer_reader_init(&r, peer, SIZE_MAX, 0, true);
    ck_assert_int_eq(peer_reader_body(&r, NULL), 0);
    ck_assert_int_eq(r.end, 0);
    ck_assert_uint_eq(r.got, n);
    ck_assert_int_eq(r.bad, -1);
    /* The half-closed stream still reads. */
    peer_send_str(peer, "response");
    ck_assert_int_eq(cio_close(peer), 0);
    char *all = NULL;
    size_t len = 0;
    ck_assert_int_eq(cio_stream_read_all(s, &all, &len, 0), 0);
    ck_assert_uint_eq(len, 8);
    ck_assert_mem_eq(all, "response", 8);
    free(all);
    ck_assert_int_eq(cio_stream_close(s), 0);
    free(data);
    return 0;
}

START_TEST(stream_write_eof)
{
    int kind = _i;
    run_net(main_write_eof, &kind);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* close and abort                                                            */
/* ------------------------------------------------------------------------ */

/* close flushes what is buffered, waiting for a peer that reads late. */
static int main_close_flush(void *arg, void **result)
{
    (void)result;
    (void)arg;
    int peer;
    cio_stream_t *s = slow_stream(&peer, NULL);
    size_t n = 4 * MIB;
    unsigned char *data = pattern_buf(0, n);
    ck_assert_int_eq(cio_stream_write(s, data, n), 0);
    ck_assert_uint_gt(wbuf(s), 0);
    peer_reader r;
    peer_reader_init(&r, peer, SIZE_MAX, 0, true);
    r.delay = D_MED;
    cio_task_t *t = spawn(peer_reader_body, &r);
    int64_t t0 = loop_ns();
    ck_assert_int_eq(cio_stream_close(s), 0);
    ck_assert_int_ge(since(t0), NS_MED);
    ck_assert_int_eq(finish(t), 0);
    ck_assert_int_eq(r.end, 0);
    ck_assert_uint_eq(r.got, n);
    ck_assert_int_eq(r.bad, -1);
    ck_assert_int_eq(cio_close(peer), 0);
    free(data);
    return 0;
}

START_TEST(stream_close_flush)
{
    run_net(main_close_flush, NULL);
}
END_TEST

/*
 * A peer that never reads: close gives up after close_timeout (or an
 * enclosing deadline, or a cancel) with the rest dropped, and the
 * connection really ends.
 */
typedef struct closer {
    cio_stream_t *s;
    int rc;
    int done;
} closer;

static int closer_body(void *arg, void **result)
{
    (void)result;
    closer *c = arg;
    c->rc = cio_stream_close(c->s);
    c->done = 1;
    return 0;
}

static int main_close_cut(void *arg, void **result)
{
    (void)result;
    int how = *(int *)arg; /* 0 close_timeout, 1 scope deadline, 2 cancel */
    int peer;
    cio_stream_opts_t o = {.close_timeout = 0.125};
    cio_stream_t *s = slow_stream(&peer, how == 0 ? &o : NULL);
    size_t n = 4 * MIB;
    unsigned char *data = pattern_buf(0, n);
    ck_assert_int_eq(cio_stream_write(s, data, n), 0);
    int64_t t0 = loop_ns();
    if (how == 0) {
        ck_assert_int_eq(cio_stream_close(s), -ETIMEDOUT);
        ck_assert_int_ge(since(t0), 125000000);
    } else if (how == 1) {
        cio_scope_t sc;
        ck_assert_int_eq(cio_scope_enter(&sc, D_MED, 0), 0);
        ck_assert_int_eq(cio_stream_close(s), -ETIMEDOUT);
        ck_assert_int_eq(cio_scope_exit(&sc), -ETIMEDOUT);
        ck_assert_int_ge(since(t0), NS_MED);
    } else {
        closer c = {.s = s, .rc = 12345};
        cio_task_t *t = spawn(closer_body, &c);
        ck_assert_int_eq(cio_sleep(D_SHORT), 0);
        ck_assert(!c.done);
        ck_assert_int_eq(cio_task_cancel(t), 1);
        cio_await(t, NULL);
        cio_future_release(t);
        ck_assert_int_eq(c.rc, -ECANCELED);
    }
    ck_assert_int_lt(since(t0), (int64_t)(HANG_BOUND_S * 1e9));
    /* The socket is closed: the peer gets part of the data, then the end. */
    peer_reader r;
    peer_reader_init(&r, peer, SIZE_MAX, 0, true);
    ck_assert_int_eq(peer_reader_body(&r, NULL), 0);
    ck_assert_msg(r.end == 0 || r.end == -ECONNRESET, "peer: %zd", r.end);
    ck_assert_uint_lt(r.got, n);
    ck_assert_int_eq(r.bad, -1);
    ck_assert_int_eq(cio_close(peer), 0);
    free(data);
    return 0;
}

START_TEST(stream_close_cut)
{
    int how = _i;
    run_net(main_close_cut, &how);
}
END_TEST

static int main_abort(void *arg, void **result)
{
    (void)result;
    (void)arg;
    int peer;
    cio_stream_t *s = slow_stream(&peer, NULL);
    size_t n = 4 * MIB;
    unsigned char *data = pattern_buf(0, n);
    ck_assert_int_eq(cio_stream_write(s, data, n), 0);
    /* A reader and a drainer inside calls on the stream when it aborts:
     * both return -ESHUTDOWN, and s is freed once they left (ASan). */
    opctx o = {.s = s, .op = OP_READ, .rc = 12345};
    drainer d = {.s = s, .rc = 12345};
    cio_task_t *t1 = spawn(op_body, &o), *t2 = spawn(drainer_body, &d);
    settle();
    ck_assert(!o.done && !d.done);
    int64_t t0 = loop_ns();
    cio_stream_abort(s);
    ck_assert_int_eq(finish(t1), 0);
    ck_assert_int_eq(finish(t2), 0);
    ck_assert_int_eq(o.rc, -ESHUTDOWN);
    ck_assert_int_eq(d.rc, -ESHUTDOWN);
    peer_reader r;
    peer_reader_init(&r, peer, SIZE_MAX, 0, true);
    ck_assert_int_eq(peer_reader_body(&r, NULL), 0);
    ck_assert_msg(r.end == 0 || r.end == -ECONNRESET, "peer: %zd", r.end);
    ck_assert_uint_lt(r.got, n);
    ck_assert_int_eq(r.bad, -1);
    ck_assert_int_lt(since(t0), (int64_t)(HANG_BOUND_S * 1e9));
    cio_stream_abort(NULL);
    ck_assert_int_eq(cio_close(peer), 0);
    free(data);
    return 0;
}

START_TEST(stream_abort)
{
    run_net(main_abort, NULL);
}
END_TEST

/* A task inside close, waiting for a peer that never reads, when another
 * task aborts the stream: the close returns -ESHUTDOWN at once rather than
 * wait out close_timeout (the aborted transport never reports its end to
 * the stream), and s is freed once the closer left (ASan). */
static int main_abort_wakes_close(void *arg, void **result)
{
    (void)result;
    (void)arg;
    int peer;
    cio_stream_opts_t o = {.close_timeout = 30};
    cio_stream_t *s = slow_stream(&peer, &o);
    size_t n = 4 * MIB;
    unsigned char *data = pattern_buf(0, n);
    ck_assert_int_eq(cio_stream_write(s, data, n), 0);
    closer c = {.s = s, .rc = 12345};
    cio_task_t *t = spawn(closer_body, &c);
    settle();
    ck_assert(!c.done);
    int64_t t0 = loop_ns();
    cio_stream_abort(s);
    ck_assert_int_eq(finish(t), 0);
    ck_assert_int_eq(c.rc, -ESHUTDOWN);
    ck_assert_int_lt(since(t0), (int64_t)(HANG_BOUND_S * 1e9));
    ck_assert_int_eq(cio_close(peer), 0);
    free(data);
    return 0;
}

START_TEST(stream_abort_wakes_close)
{
    run_net(main_abort_wakes_close, NULL);
}
END_TEST

/* close while other tasks are inside calls: they get -ESHUTDOWN. */
static int main_close_wakes(void *arg, void **result)
{
    (void)result;
    (void)arg;
    int peer;
    cio_stream_opts_t o = {.high_water = 16384};
    cio_stream_t *s = slow_stream(&peer, &o);
    size_t n = MIB;
    unsigned char *data = pattern_buf(0, n);
    ck_assert_int_eq(cio_stream_write(s, data, n), 0);
    opctx rd = {.s = s, .op = OP_READUNTIL, .rc = 12345};
    drainer d = {.s = s, .rc = 12345};
    cio_task_t *t1 = spawn(op_body, &rd), *t2 = spawn(drainer_body, &d);
    settle();
    ck_assert(!rd.done && !d.done);
    peer_reader r;
    peer_reader_init(&r, peer, SIZE_MAX, 0, true);
    cio_task_t *rt = spawn(peer_reader_body, &r);
    ck_assert_int_eq(cio_stream_close(s), 0);
    ck_assert_int_eq(finish(t1), 0);
    ck_assert_int_eq(finish(t2), 0);
    ck_assert_int_eq(rd.rc, -ESHUTDOWN);
    ck_assert_int_eq(d.rc, -ESHUTDOWN);
    ck_assert_int_eq(finish(rt), 0);
    ck_assert_uint_eq(r.got, n);
    ck_assert_int_eq(r.end, 0);
    ck_assert_int_eq(r.bad, -1);
    ck_assert_int_eq(cio_close(peer), 0);
    free(data);
    return 0;
}

START_TEST(stream_close_wakes)
{
    run_net(main_close_wakes, NULL);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* get_extra_info                                                            */
/* ------------------------------------------------------------------------ */

static int main_extra_info(void *arg, void **result)
{
    (void)result;
    (void)arg;
    int sv[2];
    tcp_pair(sv);
    addr_t mine, theirs, a;
    socklen_t mlen = sizeof mine, tlen = sizeof theirs, alen;
    ck_assert_int_eq(getsockname(sv[0], &mine.sa, &mlen), 0);
    ck_assert_int_eq(getsockname(sv[1], &theirs.sa, &tlen), 0);
    cio_stream_t *s;
    ck_assert_int_eq(cio_stream_new(&s, sv[0], NULL), 0);
    cio_transport_t *t = cio_stream_transport(s);
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(cio_transport_fd(t), sv[0]);
    ck_assert(is_nonblock_cloexec(sv[0]));
    alen = sizeof a;
    ck_assert_int_eq(cio_transport_peername(t, &a.sa, &alen), 0);
    ck_assert_uint_eq(alen, tlen);
    ck_assert_mem_eq(&a, &theirs, tlen);
    alen = sizeof a;
    ck_assert_int_eq(cio_transport_sockname(t, &a.sa, &alen), 0);
    ck_assert_uint_eq(alen, mlen);
    ck_assert_mem_eq(&a, &mine, mlen);
    ck_assert_int_eq(a.sa.sa_family, AF_INET);
    ck_assert_int_eq(cio_transport_peername(t, NULL, &alen), -EINVAL);
    ck_assert_int_eq(cio_transport_peername(t, &a.sa, NULL), -EINVAL);
    ck_assert_int_eq(cio_transport_sockname(NULL, &a.sa, &alen), -EINVAL);
    ck_assert_int_eq(cio_transport_peername(NULL, &a.sa, &alen), -EINVAL);
    ck_assert_int_eq(cio_transport_fd(NULL), -EINVAL);
    ck_assert_ptr_null(cio_stream_transport(NULL));
    ck_assert_int_eq(cio_stream_close(s), 0);
    ck_assert_int_eq(cio_close(sv[1]), 0);

    /* A Unix socketpair: unnamed addresses of family AF_UNIX. */
    int peer;
    s = stream_pair(1, &peer, NULL);
    t = cio_stream_transport(s);
    alen = sizeof a;
    ck_assert_int_eq(cio_transport_peername(t, &a.sa, &alen), 0);
    ck_assert_int_eq(a.sa.sa_family, AF_UNIX);
    ck_assert_int_eq(cio_stream_close(s), 0);
    ck_assert_int_eq(cio_close(peer), 0);
    return 0;
}

START_TEST(stream_extra_info)
{
    run_net(main_extra_info, NULL);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Argument errors, -EPERM                                                   */
/* ------------------------------------------------------------------------ */

static void dummy_data(cio_transport_t *t, const void *data, size_t n, void *ctx)
{
    (void)t;
    (void)data;
    (void)n;
    (void)ctx;
}

START_TEST(stream_new_outside_loop)
{
    /* No running loop: -EPERM, the fd closed anyway. */
    int sv[2];
    unix_pair(sv);
    cio_stream_t *s = NOT_SET;
    ck_assert_int_eq(cio_stream_new(&s, sv[0], NULL), -EPERM);
    ck_assert_ptr_null(s);
    ck_assert(!fd_is_open(sv[0]));
    close(sv[1]);
    unix_pair(sv);
    cio_transport_t *t = NOT_SET;
    static const cio_protocol_t proto = {.data_received = dummy_data};
    ck_assert_int_eq(cio_transport_new(&t, sv[0], &proto, NULL, NULL), -EPERM);
    ck_assert_ptr_null(t);
    ck_assert(!fd_is_open(sv[0]));
    close(sv[1]);
}
END_TEST

typedef struct cbctx {
    cio_stream_t *s;
    ssize_t r[9];
    int ran;
} cbctx;

/* From a loop callback (no task): the await points refuse with -EPERM,
 * write (not an await point) works, close aborts. */
static void eperm_cb(void *arg)
{
    cbctx *c = arg;
    char buf[8];
    char *all = NULL;
    size_t len;
    msg_t m;
    c->r[0] = cio_stream_read(c->s, buf, sizeof buf);
    c->r[1] = cio_stream_readexactly(c->s, buf, 1, NULL);
    c->r[2] = cio_stream_readuntil(c->s, "\n", 1, buf, sizeof buf, NULL);
    c->r[3] = cio_stream_readline(c->s, buf, sizeof buf);
    c->r[4] = cio_stream_read_all(c->s, &all, &len, 0);
    c->r[5] = cio_stream_parse(c->s, parse_msg, &m, 0);
    c->r[6] = cio_stream_drain(c->s);
    c->r[7] = cio_stream_write(c->s, "cb", 2);
    c->ran = 1;
}

static void close_cb(void *arg)
{
    cbctx *c = arg;
    c->r[8] = cio_stream_close(c->s);
    c->ran = 2;
}

static int main_eperm_einval(void *arg, void **result)
{
    (void)result;
    (void)arg;
    int peer;
    cio_stream_t *s = stream_pair(0, &peer, NULL);
    peer_send_str(peer, "data\n");
    wait_buffered(s, 5);
    cbctx c = {.s = s};
    cio_handle_t h = CIO_HANDLE_INIT;
    ck_assert_int_eq(cio_call_soon(cio_get_running_loop(), &h, eperm_cb, &c), 0);
    while (c.ran != 1)
        ck_assert_int_eq(cio_yield(), 0);
    for (int i = 0; i < 7; i++)
        ck_assert_msg(c.r[i] == -EPERM, "call %d from a callback: %zd", i, c.r[i]);
    ck_assert_int_eq(c.r[7], 0);
    char buf[16];
    ck_assert_int_eq(peer_recv_exact(peer, buf, 2), 2);
    ck_assert_mem_eq(buf, "cb", 2);
    /* Nothing was consumed by the refused calls. */
    ck_assert_uint_eq(cio_stream_buffered(s), 5);

    /* Bad arguments. */
    ck_assert_int_eq(cio_stream_read(NULL, buf, 1), -EINVAL);
    ck_assert_int_eq(cio_stream_read(s, NULL, 1), -EINVAL);
    ck_assert_int_eq(cio_stream_readexactly(NULL, buf, 1, NULL), -EINVAL);
    ck_assert_int_eq(cio_stream_readexactly(s, NULL, 1, NULL), -EINVAL);
    ck_assert_int_eq(cio_stream_readline(NULL, buf, sizeof buf), -EINVAL);
    ck_assert_int_eq(cio_stream_write(NULL, "x", 1), -EINVAL);
    ck_assert_int_eq(cio_stream_write(s, NULL, 1), -EINVAL);
    ck_assert_int_eq(cio_stream_writev(NULL, NULL, 0), -EINVAL);
    ck_assert_int_eq(cio_stream_writev(s, NULL, 1), -EINVAL);
    struct iovec iov[2] = {{buf, 1}, {NULL, 1}};
    ck_assert_int_eq(cio_stream_writev(s, iov, -1), -EINVAL);
    ck_assert_int_eq(cio_stream_writev(s, iov, 2), -EINVAL);
    ck_assert_int_eq(cio_stream_writev(s, iov, IOV_MAX + 1), -EINVAL);
    ck_assert_int_eq(cio_stream_drain(NULL), -EINVAL);
    ck_assert_int_eq(cio_stream_write_eof(NULL), -EINVAL);
    ck_assert_int_eq(cio_stream_close(NULL), 0);
    ck_assert(!cio_stream_at_eof(NULL));
    ck_assert_uint_eq(cio_stream_buffered(NULL), 0);
    ck_assert_uint_eq(cio_stream_buffered(s), 5);
    /* The refused writes queued nothing. */
    ck_assert_int_eq(cio_stream_write(s, "!", 1), 0);
    ck_assert_int_eq(peer_recv_exact(peer, buf, 1), 1);
    ck_assert_int_eq(buf[0], '!');

    /* cio_stream_new: -EINVAL, the fd closed in every case. */
    int sv[2];
    cio_stream_t *s2 = NOT_SET;
    static const cio_stream_opts_t bad[] = {
        {.low_water = 100, .high_water = 50},
        {.high_water = 2 * MIB, .write_limit = MIB},
        {.close_timeout = -1},
        {.close_timeout = NAN},
        {.reserved_ = {(void *)1, NULL}},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        unix_pair(sv);
        s2 = NOT_SET;
        ck_assert_msg(cio_stream_new(&s2, sv[0], &bad[i]) == -EINVAL, "opts %zu", i);
        ck_assert_ptr_null(s2);
        ck_assert_msg(!fd_is_open(sv[0]), "opts %zu: fd left open", i);
        close(sv[1]);
    }
    unix_pair(sv);
    ck_assert_int_eq(cio_stream_new(NULL, sv[0], NULL), -EINVAL);
    ck_assert(!fd_is_open(sv[0]));
    close(sv[1]);
    ck_assert_int_eq(cio_stream_new(&s2, -1, NULL), -EINVAL);
    ck_assert_ptr_null(s2);

    /* cio_stream_close outside a task aborts and releases the stream. */
    ck_assert_int_eq(cio_call_soon(cio_get_running_loop(), &h, close_cb, &c), 0);
    while (c.ran != 2)
        ck_assert_int_eq(cio_yield(), 0);
    ck_assert_int_eq(c.r[8], 0);
    peer_reader r;
    peer_reader_init(&r, peer, SIZE_MAX, 0, false);
    ck_assert_int_eq(peer_reader_body(&r, NULL), 0);
    ck_assert_msg(r.end == 0 || r.end == -ECONNRESET, "peer: %zd", r.end);
    ck_assert_int_eq(cio_close(peer), 0);
    return 0;
}

START_TEST(stream_eperm_einval)
{
    run_net(main_eperm_einval, NULL);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Transports and protocols                                                   */
/* ------------------------------------------------------------------------ */

/*
 * A protocol that records its callbacks. in_api is set around every call
 * the test makes into the transport API: cio.h promises that no callback
 * runs from inside one (except connection_made, from cio_transport_new).
 */
typedef struct rec {
    char log[64];   /* M made, D data, E eof, L lost, P pause, R resume */
    int nlog;
    cio_transport_t *t;
    int lost_err;
    int nlost;
    char data[4096];
    size_t ndata;
    int ndata_calls;
    bool keep_open;       /* eof_received's answer */
    bool pause_on_data;   /* pause_reading at the first data_received */
    bool abort_on_data;   /* abort at the first data_received */
    bool echo;
    int in_api;
    int cb_in_api;        /* callbacks that ran from inside an API call */
    int pr_in_api;        /* pause/resume_writing from inside an API call */
    size_t wsize_at_pause, wsize_at_resume;
    int after_abort_write;
    bool after_abort_closing;
} rec;

static void rec_log(rec *r, char c)
{
    /* cio.h's exceptions: connection_made inside cio_transport_new,
     * pause/resume_writing inside the write or set_write_buffer_limits
     * that crosses a water mark (counted apart). */
    if (r->in_api && (c == 'P' || c == 'R'))
        r->pr_in_api++;
    else if (r->in_api && c != 'M')
        r->cb_in_api++;
    if (r->nlog < (int)sizeof r->log - 1)
        r->log[r->nlog++] = c;
}

static void p_made(cio_transport_t *t, void *ctx)
{
    rec *r = ctx;
    r->t = t;
    rec_log(r, 'M');
}

static void p_data(cio_transport_t *t, const void *data, size_t n, void *ctx)
{
    rec *r = ctx;
    ck_assert_ptr_eq(t, r->t);
    ck_assert_uint_gt(n, 0);
    rec_log(r, 'D');
    r->ndata_calls++;
    size_t k = n < sizeof r->data - r->ndata ? n : sizeof r->data - r->ndata;
    memcpy(r->data + r->ndata, data, k);
    r->ndata += k;
    if (r->echo)
        ck_assert_int_eq(cio_transport_write(t, data, n), 0);
    if (r->pause_on_data && r->ndata_calls == 1)
        ck_assert_int_eq(cio_transport_pause_reading(t), 0);
    if (r->abort_on_data && r->ndata_calls == 1) {
        cio_transport_abort(t);
        r->after_abort_closing = cio_transport_is_closing(t);
        r->after_abort_write = cio_transport_write(t, "x", 1);
    }
}

static bool p_eof(cio_transport_t *t, void *ctx)
{
    rec *r = ctx;
    ck_assert_ptr_eq(t, r->t);
    rec_log(r, 'E');
    return r->keep_open;
}

static void p_lost(cio_transport_t *t, int err, void *ctx)
{
    rec *r = ctx;
    ck_assert_ptr_eq(t, r->t);
    rec_log(r, 'L');
    r->lost_err = err;
    r->nlost++;
}

static void p_pause(cio_transport_t *t, void *ctx)
{
    rec *r = ctx;
    rec_log(r, 'P');
    r->wsize_at_pause = cio_transport_get_write_buffer_size(t);
}

static void p_resume(cio_transport_t *t, void *ctx)
{
    rec *r = ctx;
    rec_log(r, 'R');
    r->wsize_at_resume = cio_transport_get_write_buffer_size(t);
}

static const cio_protocol_t rec_proto = {
    .connection_made = p_made,
    .data_received = p_data,
    .eof_received = p_eof,
    .connection_lost = p_lost,
    .pause_writing = p_pause,
    .resume_writing = p_resume,
};

/* Calls into the transport API, marked so that a callback from inside
 * them is noticed. */
#define API(r, call) ((r)->in_api++, (call), (r)->in_api--)

static bool lost_pred(void *arg)
{
    return ((rec *)arg)->nlost > 0;
}

typedef struct want_n {
    rec *r;
    size_t n;
} want_n;

static bool ndata_at_least(void *arg)
{
    want_n *w = arg;
    return w->r->ndata >= w->n;
}

static void wait_data(rec *r, size_t n)
{
    want_n w = {r, n};
    wait_until(ndata_at_least, &w, "data_received");
}

static cio_transport_t *new_transport(int fd, rec *r, const cio_transport_opts_t *o)
{
    cio_transport_t *t = NOT_SET;
    r->in_api++;
    int rc = cio_transport_new(&t, fd, &rec_proto, r, o);
    r->in_api--;
    ck_assert_int_eq(rc, 0);
    ck_assert_ptr_nonnull(t);
    /* connection_made ran before cio_transport_new returned, with t. */
    ck_assert_int_eq(r->nlog, 1);
    ck_assert_int_eq(r->log[0], 'M');
    ck_assert_ptr_eq(r->t, t);
    return t;
}

/* Echo over a socketpair; the peer's EOF closes it (eof_received false). */
static int main_transport_echo(void *arg, void **result)
{
    (void)result;
    int kind = *(int *)arg;
    int sv[2];
    sock_pair(kind, sv);
    rec r = {.echo = true};
    cio_transport_t *t = new_transport(sv[0], &r, NULL);
    ck_assert(cio_transport_is_reading(t));
    ck_assert(!cio_transport_is_closing(t));
    ck_assert_int_eq(cio_transport_fd(t), sv[0]);
    addr_t a;
    socklen_t alen = sizeof a;
    ck_assert_int_eq(cio_transport_sockname(t, &a.sa, &alen), 0);
    ck_assert_int_eq(a.sa.sa_family, kind == 0 ? AF_INET : AF_UNIX);
    peer_send_str(sv[1], "ping");
    char buf[16];
    ck_assert_int_eq(peer_recv_exact(sv[1], buf, 4), 4);
    ck_assert_mem_eq(buf, "ping", 4);
    ck_assert_uint_eq(r.ndata, 4);
    ck_assert_mem_eq(r.data, "ping", 4);
    ck_assert_int_eq(shutdown(sv[1], SHUT_WR), 0);
    wait_until(lost_pred, &r, "connection_lost");
    /* Made, data (one or more), EOF, lost(0): once each, in order. */
    r.log[r.nlog] = 0;
    ck_assert_int_eq(r.log[0], 'M');
    ck_assert_int_eq(r.log[r.nlog - 2], 'E');
    ck_assert_int_eq(r.log[r.nlog - 1], 'L');
    for (int i = 1; i < r.nlog - 2; i++)
        ck_assert_int_eq(r.log[i], 'D');
    ck_assert_int_eq(r.nlost, 1);
    ck_assert_int_eq(r.lost_err, 0);
    ck_assert_int_eq(r.cb_in_api, 0);
    /* Our side was closed: the peer sees EOF. */
    ck_assert_int_eq(cio_sock_recv(sv[1], buf, sizeof buf, 0), 0);
    ck_assert_int_eq(cio_close(sv[1]), 0);
    return 0;
}

START_TEST(transport_echo)
{
    int kind = _i;
    run_net(main_transport_echo, &kind);
}
END_TEST

/* eof_received returning true keeps the half-closed connection writable. */
static int main_transport_half_close(void *arg, void **result)
{
    (void)result;
    (void)arg;
    int sv[2];
    tcp_pair(sv);
    rec r = {.keep_open = true};
    cio_transport_t *t = new_transport(sv[0], &r, NULL);
    peer_send_str(sv[1], "request");
    ck_assert_int_eq(shutdown(sv[1], SHUT_WR), 0);
    settle();
    wait_data(&r, 7);
    while (r.nlog < 3 || r.log[r.nlog - 1] != 'E')
        ck_assert_int_eq(cio_sleep(0.001), 0);
    ck_assert(!cio_transport_is_closing(t));
    ck_assert(!cio_transport_is_reading(t));
    int rc;
    API(&r, rc = cio_transport_write(t, "answer", 6));
    ck_assert_int_eq(rc, 0);
    char buf[16];
    ck_assert_int_eq(peer_recv_exact(sv[1], buf, 6), 6);
    ck_assert_mem_eq(buf, "answer", 6);
    ck_assert_int_eq(r.nlost, 0);
    API(&r, cio_transport_close(t));
    ck_assert_int_eq(r.nlost, 0); /* never from inside close */
    ck_assert_int_eq(cio_sock_recv(sv[1], buf, sizeof buf, 0), 0);
    wait_until(lost_pred, &r, "connection_lost");
    ck_assert_int_eq(r.lost_err, 0);
    ck_assert_int_eq(r.nlost, 1);
    r.log[r.nlog] = 0;
    ck_assert_str_eq(r.log, "MDEL");
    ck_assert_int_eq(r.cb_in_api, 0);
    ck_assert_int_eq(cio_close(sv[1]), 0);
    return 0;
}

START_TEST(transport_half_close)
{
    run_net(main_transport_half_close, NULL);
}
END_TEST

/* A reset by the peer: connection_lost(-ECONNRESET). */
static int main_transport_reset(void *arg, void **result)
{
    (void)result;
    (void)arg;
    int sv[2];
    tcp_pair(sv);
    rec r = {0};
    new_transport(sv[0], &r, NULL);
    peer_send_str(sv[1], "x");
    wait_data(&r, 1);
    linger0(sv[1]);
    ck_assert_int_eq(cio_close(sv[1]), 0);
    wait_until(lost_pred, &r, "connection_lost");
    ck_assert_int_eq(r.lost_err, -ECONNRESET);
    ck_assert_int_eq(r.nlost, 1);
    r.log[r.nlog] = 0;
    ck_assert_str_eq(r.log, "MDL");
    return 0;
}

START_TEST(transport_reset)
{
    run_net(main_transport_reset, NULL);
}
END_TEST

/* pause_reading from inside data_received: no more data_received until
 * resume_reading; then the rest arrives. */
static int main_transport_pause_reading(void *arg, void **result)
{
    (void)result;
    (void)arg;
    int sv[2];
    tcp_pair(sv);
    rec r = {.pause_on_data = true};
    cio_transport_t *t = new_transport(sv[0], &r, NULL);
    peer_send_str(sv[1], "first");
    wait_data(&r, 5);
    ck_assert(!cio_transport_is_reading(t));
    peer_send_str(sv[1], "second");
    ck_assert_int_eq(cio_sleep(0.1), 0);
    ck_assert_int_eq(r.ndata_calls, 1);
    ck_assert_uint_eq(r.ndata, 5);
    int rc;
    API(&r, rc = cio_transport_resume_reading(t));
    ck_assert_int_eq(rc, 0);
    ck_assert(cio_transport_is_reading(t));
    wait_data(&r, 11);
    ck_assert_mem_eq(r.data, "firstsecond", 11);
    /* Resuming twice, pausing twice: harmless. */
    API(&r, rc = cio_transport_resume_reading(t));
    ck_assert_int_eq(rc, 0);
    API(&r, cio_transport_close(t));
    ck_assert(cio_transport_is_closing(t));
    API(&r, rc = cio_transport_pause_reading(t));
    ck_assert_int_eq(rc, -ESHUTDOWN);
    API(&r, rc = cio_transport_resume_reading(t));
    ck_assert_int_eq(rc, -ESHUTDOWN);
    wait_until(lost_pred, &r, "connection_lost");
    ck_assert_int_eq(r.lost_err, 0);
    ck_assert_int_eq(r.cb_in_api, 0);
    ck_assert_int_eq(cio_close(sv[1]), 0);
    return 0;
}

START_TEST(transport_pause_reading)
{
    run_net(main_transport_pause_reading, NULL);
}
END_TEST

/*
 * pause_reading from a task while the transport is idle (its receive
 * under way): bytes that arrive then must not reach data_received.
 */
static int main_transport_pause_idle(void *arg, void **result)
{
    (void)result;
    (void)arg;
    int sv[2];
    tcp_pair(sv);
    rec r = {0};
    cio_transport_t *t = new_transport(sv[0], &r, NULL);
    settle();
    int rc;
    API(&r, rc = cio_transport_pause_reading(t));
    ck_assert_int_eq(rc, 0);
    ck_assert(!cio_transport_is_reading(t));
    peer_send_str(sv[1], "while-paused");
    ck_assert_int_eq(cio_sleep(0.1), 0);
    /* cio.h: bytes that arrive while paused are kept and delivered after
     * resume_reading (the first version handed a receive io_uring already
     * held straight to data_received). */
    ck_assert_msg(r.ndata_calls == 0,
                  "data_received called %d time(s) while reading was paused (%s)",
                  r.ndata_calls, cio_loop_backend(cio_get_running_loop()));
    API(&r, rc = cio_transport_resume_reading(t));
    ck_assert_int_eq(rc, 0);
    wait_data(&r, 12);
    ck_assert_mem_eq(r.data, "while-paused", 12);
    /* The peer's EOF while paused: no eof_received until resume_reading. */
    settle();
    API(&r, rc = cio_transport_pause_reading(t));
    ck_assert_int_eq(rc, 0);
    ck_assert_int_eq(shutdown(sv[1], SHUT_WR), 0);
    ck_assert_int_eq(cio_sleep(0.1), 0);
    ck_assert_int_eq(r.nlost, 0);
    ck_assert_ptr_null(memchr(r.log, 'E', (size_t)r.nlog));
    API(&r, rc = cio_transport_resume_reading(t));
    ck_assert_int_eq(rc, 0);
    wait_until(lost_pred, &r, "connection_lost");
    r.log[r.nlog] = 0;
    ck_assert_str_eq(r.log, "MDEL");
    ck_assert_int_eq(r.lost_err, 0);
    ck_assert_int_eq(r.cb_in_api, 0);
    ck_assert_int_eq(cio_close(sv[1]), 0);
    return 0;
}

START_TEST(transport_pause_idle)
{
    run_net(main_transport_pause_idle, NULL);
}
END_TEST

/* pause_writing above the high-water mark, resume_writing at the low one. */
static bool resumed_twice(void *arg)
{
    rec *r = arg;
    int k = 0;
    for (int i = 0; i < r->nlog; i++)
        k += r->log[i] == 'R';
    return k >= 2;
}

static int main_transport_write_flow(void *arg, void **result)
{
    (void)result;
    (void)arg;
    int sv[2];
    tcp_pair(sv);
    small_sndbuf(sv[0]);
    rec r = {0};
    cio_transport_t *t = new_transport(sv[0], &r, NULL);
    int rc;
    API(&r, rc = cio_transport_set_write_buffer_limits(t, 65536, 16384));
    ck_assert_int_eq(rc, 0);
    size_t n = 4 * MIB, piece = 16384;
    unsigned char *data = pattern_buf(0, n);
    /* In pieces: pause_writing comes inside the write that takes the
     * buffer past 64 KiB (cio.h, as asyncio), and only then. */
    size_t off = 0;
    for (; off < n; off += piece) {
        size_t before = cio_transport_get_write_buffer_size(t);
        API(&r, rc = cio_transport_write(t, data + off, piece));
        ck_assert_int_eq(rc, 0);
        if (r.nlog > 1) {
            ck_assert_uint_le(before, 65536);
            ck_assert_uint_gt(cio_transport_get_write_buffer_size(t), 65536);
            off += piece;
            break;
        }
    }
    r.log[r.nlog] = 0;
    ck_assert_str_eq(r.log, "MP");
    ck_assert_int_eq(r.pr_in_api, 1);
    ck_assert_uint_gt(r.wsize_at_pause, 65536);
    /* Writing on above the mark: no second pause_writing. */
    for (; off < n; off += piece) {
        API(&r, rc = cio_transport_write(t, data + off, piece));
        ck_assert_int_eq(rc, 0);
    }
    settle();
    r.log[r.nlog] = 0;
    ck_assert_str_eq(r.log, "MP");
    ck_assert_uint_gt(cio_transport_get_write_buffer_size(t), 4 * 65536);
    /* Marks moved above the buffer: resume_writing inside the call; moved
     * back below it: pause_writing inside the call. */
    API(&r, rc = cio_transport_set_write_buffer_limits(t, 8 * MIB, 8 * MIB));
    ck_assert_int_eq(rc, 0);
    r.log[r.nlog] = 0;
    ck_assert_str_eq(r.log, "MPR");
    API(&r, rc = cio_transport_set_write_buffer_limits(t, 65536, 16384));
    ck_assert_int_eq(rc, 0);
    r.log[r.nlog] = 0;
    ck_assert_str_eq(r.log, "MPRP");
    ck_assert_int_eq(r.pr_in_api, 3);
    ck_assert_int_eq(r.cb_in_api, 0);
    /* The peer reads: resume_writing, from the loop, once the buffer is
     * down to 16 KiB. */
    peer_reader pr;
    peer_reader_init(&pr, sv[1], n, 0, true);
    cio_task_t *rt = spawn(peer_reader_body, &pr);
    wait_until(resumed_twice, &r, "resume_writing");
    ck_assert_uint_le(r.wsize_at_resume, 16384);
    ck_assert_int_eq(r.pr_in_api, 3);
    ck_assert_int_eq(finish(rt), 0);
    ck_assert_uint_eq(pr.got, n);
    ck_assert_int_eq(pr.bad, -1);
    r.log[r.nlog] = 0;
    ck_assert_str_eq(r.log, "MPRPR");
    /* Limits: low above high, high above the hard cap. */
    API(&r, rc = cio_transport_set_write_buffer_limits(t, 100, 200));
    ck_assert_int_eq(rc, -EINVAL);
    API(&r, rc = cio_transport_set_write_buffer_limits(t, 17 * MIB, 0));
    ck_assert_int_eq(rc, -EINVAL);
    API(&r, rc = cio_transport_set_write_buffer_limits(t, 0, 0));
    ck_assert_int_eq(rc, 0);
    ck_assert_int_eq(cio_transport_set_write_buffer_limits(NULL, 0, 0), -EINVAL);
    API(&r, cio_transport_close(t));
    wait_until(lost_pred, &r, "connection_lost");
    ck_assert_int_eq(r.lost_err, 0);
    ck_assert_int_eq(r.cb_in_api, 0);
    ck_assert_int_eq(cio_close(sv[1]), 0);
    free(data);
    return 0;
}

START_TEST(transport_write_flow)
{
    run_net(main_transport_write_flow, NULL);
}
END_TEST

/* abort from inside data_received: no more data, lost(0) once, later,
 * from the loop. */
static int main_transport_abort_in_data(void *arg, void **result)
{
    (void)result;
    (void)arg;
    int sv[2];
    tcp_pair(sv);
    rec r = {.abort_on_data = true};
    new_transport(sv[0], &r, NULL);
    peer_send_str(sv[1], "one");
    wait_data(&r, 3);
    ck_assert(r.after_abort_closing);
    ck_assert_int_eq(r.after_abort_write, -ESHUTDOWN);
    wait_until(lost_pred, &r, "connection_lost");
    /* The peer's later bytes go nowhere; the connection is gone. */
    send(sv[1], "two", 3, MSG_NOSIGNAL | MSG_DONTWAIT);
    ck_assert_int_eq(cio_sleep(0.05), 0);
    r.log[r.nlog] = 0;
    ck_assert_str_eq(r.log, "MDL");
    ck_assert_int_eq(r.ndata_calls, 1);
    ck_assert_int_eq(r.nlost, 1);
    ck_assert_int_eq(r.lost_err, 0);
    char buf[8];
    ssize_t k = cio_sock_recv(sv[1], buf, sizeof buf, 0);
    ck_assert_msg(k == 0 || k == -ECONNRESET, "peer: %zd", k);
    ck_assert_int_eq(cio_close(sv[1]), 0);
    return 0;
}

START_TEST(transport_abort_in_data)
{
    run_net(main_transport_abort_in_data, NULL);
}
END_TEST

/* close flushes the write buffer; write_eof half-closes. */
static int main_transport_close_flush(void *arg, void **result)
{
    (void)result;
    (void)arg;
    int sv[2];
    tcp_pair(sv);
    small_sndbuf(sv[0]);
    rec r = {0};
    cio_transport_t *t = new_transport(sv[0], &r, NULL);
    size_t n = 2 * MIB;
    unsigned char *data = pattern_buf(0, n);
    int rc;
    API(&r, rc = cio_transport_write(t, data, n));
    ck_assert_int_eq(rc, 0);
    ck_assert_uint_gt(cio_transport_get_write_buffer_size(t), 0);
    API(&r, cio_transport_close(t));
    ck_assert(cio_transport_is_closing(t));
    ck_assert(!cio_transport_is_reading(t));
    API(&r, rc = cio_transport_write(t, "x", 1));
    ck_assert_int_eq(rc, -ESHUTDOWN);
    API(&r, rc = cio_transport_write_eof(t));
    ck_assert_int_eq(rc, -ESHUTDOWN);
    API(&r, cio_transport_close(t)); /* idempotent */
    ck_assert_int_eq(r.nlost, 0);
    peer_reader pr;
    peer_reader_init(&pr, sv[1], SIZE_MAX, 0, true);
    pr.delay = D_SHORT;
    ck_assert_int_eq(peer_reader_body(&pr, NULL), 0);
    ck_assert_int_eq(pr.end, 0);
    ck_assert_uint_eq(pr.got, n);
    ck_assert_int_eq(pr.bad, -1);
    wait_until(lost_pred, &r, "connection_lost");
    ck_assert_int_eq(r.lost_err, 0);
    ck_assert_int_eq(cio_close(sv[1]), 0);

    /* write_eof: the peer gets the bytes then EOF; reading goes on. */
    tcp_pair(sv);
    rec r2 = {0};
    t = new_transport(sv[0], &r2, NULL);
    API(&r2, rc = cio_transport_write(t, "last", 4));
    ck_assert_int_eq(rc, 0);
    API(&r2, rc = cio_transport_write_eof(t));
    ck_assert_int_eq(rc, 0);
    API(&r2, rc = cio_transport_write_eof(t));
    ck_assert_int_eq(rc, -ESHUTDOWN);
    API(&r2, rc = cio_transport_write(t, "more", 4));
    ck_assert_int_eq(rc, -ESHUTDOWN);
    char buf[16];
    ck_assert_int_eq(peer_recv_exact(sv[1], buf, 4), 4);
    ck_assert_mem_eq(buf, "last", 4);
    ck_assert_int_eq(cio_sock_recv(sv[1], buf, sizeof buf, 0), 0);
    peer_send_str(sv[1], "reply");
    wait_data(&r2, 5);
    ck_assert_mem_eq(r2.data, "reply", 5);
    ck_assert(!cio_transport_is_closing(t));
    /* The peer's EOF now ends it (eof_received returns false). */
    ck_assert_int_eq(cio_close(sv[1]), 0);
    wait_until(lost_pred, &r2, "connection_lost");
    ck_assert_int_eq(r2.lost_err, 0);
    r2.log[r2.nlog] = 0;
    ck_assert_str_eq(r2.log, "MDEL");
    ck_assert_int_eq(r2.cb_in_api, 0);
    free(data);
    return 0;
}

START_TEST(transport_close_flush)
{
    run_net(main_transport_close_flush, NULL);
}
END_TEST

/* The hard cap of a transport: -ENOBUFS, nothing queued. */
static int main_transport_cap(void *arg, void **result)
{
    (void)result;
    (void)arg;
    int sv[2];
    tcp_pair(sv);
    small_sndbuf(sv[0]);
    rec r = {0};
    cio_transport_opts_t o = {.high_water = 65536, .write_limit = 256 * 1024};
    cio_transport_t *t = new_transport(sv[0], &r, &o);
    unsigned char *data = pattern_buf(0, MIB);
    int rc;
    API(&r, rc = cio_transport_write(t, data, 256 * 1024 + 1));
    ck_assert_int_eq(rc, -ENOBUFS);
    ck_assert_uint_eq(cio_transport_get_write_buffer_size(t), 0);
    size_t accepted = 0;
    for (;;) {
        size_t before = cio_transport_get_write_buffer_size(t);
        API(&r, rc = cio_transport_write(t, data + accepted, 32768));
        if (rc == -ENOBUFS) {
            ck_assert_uint_eq(cio_transport_get_write_buffer_size(t), before);
            break;
        }
        ck_assert_int_eq(rc, 0);
        accepted += 32768;
        ck_assert_uint_lt(accepted, MIB - 32768);
        ck_assert_uint_le(cio_transport_get_write_buffer_size(t), o.write_limit);
        ck_assert_int_eq(cio_sleep(0), 0);
    }
    API(&r, cio_transport_close(t));
    peer_reader pr;
    peer_reader_init(&pr, sv[1], SIZE_MAX, 0, true);
    ck_assert_int_eq(peer_reader_body(&pr, NULL), 0);
    ck_assert_int_eq(pr.end, 0);
    ck_assert_uint_eq(pr.got, accepted);
    ck_assert_int_eq(pr.bad, -1);
    wait_until(lost_pred, &r, "connection_lost");
    ck_assert_int_eq(cio_close(sv[1]), 0);
    free(data);
    return 0;
}

START_TEST(transport_cap)
{
    run_net(main_transport_cap, NULL);
}
END_TEST

static int main_transport_args(void *arg, void **result)
{
    (void)result;
    (void)arg;
    int sv[2];
    cio_transport_t *t = NOT_SET;
    cio_protocol_t ok = {.data_received = dummy_data};
    cio_protocol_t no_data = {.connection_made = p_made};
    cio_protocol_t reserved = {.data_received = dummy_data, .reserved_ = {(void *)1, NULL}};
    const cio_protocol_t *protos[] = {NULL, &no_data, &reserved};
    for (size_t i = 0; i < 3; i++) {
        unix_pair(sv);
        t = NOT_SET;
        ck_assert_int_eq(cio_transport_new(&t, sv[0], protos[i], NULL, NULL), -EINVAL);
        ck_assert_ptr_null(t);
        ck_assert_msg(!fd_is_open(sv[0]), "proto %zu: fd left open", i);
        close(sv[1]);
    }
    unix_pair(sv);
    ck_assert_int_eq(cio_transport_new(NULL, sv[0], &ok, NULL, NULL), -EINVAL);
    ck_assert(!fd_is_open(sv[0]));
    close(sv[1]);
    t = NOT_SET;
    ck_assert_int_eq(cio_transport_new(&t, -1, &ok, NULL, NULL), -EINVAL);
    ck_assert_ptr_null(t);
    unix_pair(sv);
    cio_transport_opts_t bad = {.high_water = 100, .low_water = 200};
    ck_assert_int_eq(cio_transport_new(&t, sv[0], &ok, NULL, &bad), -EINVAL);
    ck_assert(!fd_is_open(sv[0]));
    close(sv[1]);
    ck_assert_int_eq(cio_transport_write(NULL, "x", 1), -EINVAL);
    ck_assert_int_eq(cio_transport_writev(NULL, NULL, 0), -EINVAL);
    ck_assert_int_eq(cio_transport_write_eof(NULL), -EINVAL);
    ck_assert_int_eq(cio_transport_pause_reading(NULL), -EINVAL);
    ck_assert_int_eq(cio_transport_resume_reading(NULL), -EINVAL);
    ck_assert(!cio_transport_is_reading(NULL));
    ck_assert(!cio_transport_is_closing(NULL));
    ck_assert_uint_eq(cio_transport_get_write_buffer_size(NULL), 0);
    cio_transport_close(NULL);
    cio_transport_abort(NULL);

    /* A valid transport refuses bad writes and queues nothing. */
    unix_pair(sv);
    ck_assert_int_eq(cio_transport_new(&t, sv[0], &ok, NULL, NULL), 0);
    ck_assert_int_eq(cio_transport_write(t, NULL, 1), -EINVAL);
    struct iovec iov[2] = {{"a", 1}, {NULL, 3}};
    ck_assert_int_eq(cio_transport_writev(t, iov, 2), -EINVAL);
    ck_assert_int_eq(cio_transport_writev(t, iov, -1), -EINVAL);
    ck_assert_int_eq(cio_transport_writev(t, NULL, 1), -EINVAL);
    ck_assert_int_eq(cio_transport_write(t, "ok", 2), 0);
    char buf[8];
    ck_assert_int_eq(peer_recv_exact(sv[1], buf, 2), 2);
    ck_assert_mem_eq(buf, "ok", 2);
    /* connection_lost is optional. */
    cio_transport_abort(t);
    ck_assert_int_eq(cio_sock_recv(sv[1], buf, sizeof buf, 0), 0);
    settle();
    ck_assert_int_eq(cio_close(sv[1]), 0);
    return 0;
}

START_TEST(transport_args)
{
    run_net(main_transport_args, NULL);
}
END_TEST

/* ------------------------------------------------------------------------ */

static Suite *stream_suite(void)
{
    Suite *s = suite_create("stream");
    TCase *tc = add_tcase(s, "read", TEST_TIMEOUT);
    tcase_add_loop_test(tc, stream_read_basic, 0, 2);
    tcase_add_test(tc, stream_zero_reads);
    tcase_add_loop_test(tc, stream_readexactly, 0, 2);
    tcase_add_test(tc, stream_readuntil);
    tcase_add_loop_test(tc, stream_readline, 0, 2);
    tcase_add_test(tc, stream_read_all);
    tcase_add_test(tc, stream_read_all_max);
    tcase_add_test(tc, stream_parse);
    tcase_add_test(tc, stream_read_bounded);

    tc = add_tcase(s, "cancel", TEST_TIMEOUT);
    tcase_add_loop_test(tc, stream_cancel_nondestructive, 0, OP_COUNT * BY_COUNT);
    tcase_add_test(tc, stream_cancel_race);
    tcase_add_loop_test(tc, stream_drain_cancel, 0, BY_COUNT);
    tcase_add_test(tc, stream_second_reader);

    tc = add_tcase(s, "write", TEST_TIMEOUT);
    tcase_add_loop_test(tc, stream_write_large, 0, 2);
    tcase_add_test(tc, stream_write_duplex);
    tcase_add_test(tc, stream_drain_water_marks);
    tcase_add_test(tc, stream_write_cap);
    tcase_add_loop_test(tc, stream_write_eof, 0, 2);

    tc = add_tcase(s, "close", TEST_TIMEOUT);
    tcase_add_test(tc, stream_close_flush);
    tcase_add_loop_test(tc, stream_close_cut, 0, 3);
    tcase_add_test(tc, stream_abort);
    tcase_add_test(tc, stream_close_wakes);
    tcase_add_test(tc, stream_abort_wakes_close);

    tc = add_tcase(s, "misc", TEST_TIMEOUT);
    tcase_add_test(tc, stream_extra_info);
    tcase_add_test(tc, stream_new_outside_loop);
    tcase_add_test(tc, stream_eperm_einval);

    tc = add_tcase(s, "transport", TEST_TIMEOUT);
    tcase_add_loop_test(tc, transport_echo, 0, 2);
    tcase_add_test(tc, transport_half_close);
    tcase_add_test(tc, transport_reset);
    tcase_add_test(tc, transport_pause_reading);
    tcase_add_test(tc, transport_pause_idle);
    tcase_add_test(tc, transport_write_flow);
    tcase_add_test(tc, transport_abort_in_data);
    tcase_add_test(tc, transport_close_flush);
    tcase_add_test(tc, transport_cap);
    tcase_add_test(tc, transport_args);
    return s;
}

CIO_TEST_MAIN(stream_suite)
