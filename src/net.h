/*
 * Layer 11, networking: the state the network layer keeps per loop (net.c),
 * name resolution (dns.c), transports (transport.c), streams over them
 * (stream.c), clients (connect.c), servers (server.c) and UDP (udp.c). All
 * I/O goes through the operation layer (io.h): callback operations for
 * transports, servers and UDP protocols, task operations for the rest.
 */
#ifndef CIO_NET_H
#define CIO_NET_H

#include "io.h"
#include "pool.h"

#include <netdb.h>
#include <netinet/in.h>
#include <sys/un.h>

/* ------------------------------------------------------------------------ */
/* Per-loop state (net.c)                                                    */
/* ------------------------------------------------------------------------ */

/*
 * Every open network object of a loop (transport, stream, server, UDP
 * endpoint) is on the loop's list, so that debug mode can report what is
 * still open when the loop closes and the close can release it.
 */
typedef struct cio__netobj {
    struct cio__netobj *next, *prev;
    const char *kind;   /* "transport", "server", ...; NULL: not reported */
    void (*describe)(struct cio__netobj *o, FILE *out); /* one line, no newline */
    void (*abort)(struct cio__netobj *o);           /* at loop close: release it */
} cio__netobj;

/* Receive buffers of the default size are recycled per loop: a connection
 * holds one only while a receive is under way or bytes wait to be read. */
#define CIO__NET_BUF (64u * 1024u)
#define CIO__NET_BUF_CACHE 256

typedef struct cio__net {
    cio__netobj objs;         /* sentinel of the circular list */
    size_t nobjs;
    void *bufs[CIO__NET_BUF_CACHE];
    unsigned nbufs;
} cio__net;

/* The network state of loop, made on first use (registers the close hook).
 * NULL when out of memory. */
cio__net *cio__net_get(cio_loop_t *loop);
void cio__net_add(cio__net *n, cio__netobj *o);
void cio__net_remove(cio__net *n, cio__netobj *o);
/* A receive buffer of CIO__NET_BUF bytes (NULL: out of memory), and back. */
void *cio__net_buf_get(cio__net *n);
void cio__net_buf_put(cio__net *n, void *buf);

/* The running loop of this thread (task or callback), NULL outside. */
cio_loop_t *cio__net_loop(void);

/* ------------------------------------------------------------------------ */
/* Addresses (dns.c)                                                          */
/* ------------------------------------------------------------------------ */

/* Resolves host:port as cio_getaddrinfo with the given family, socktype and
 * flags (AI_PASSIVE for servers); the port as a decimal string. */
int cio__resolve(const char *host, int port, int family, int socktype, int flags,
                 struct addrinfo **res);
/* Fills a sockaddr_un for path: 0, or -ENAMETOOLONG / -EINVAL. */
int cio__unix_addr(const char *path, struct sockaddr_un *sa, socklen_t *len);

/* ------------------------------------------------------------------------ */
/* Transports (transport.c)                                                   */
/* ------------------------------------------------------------------------ */

/*
 * The buffered form of a protocol, for streams: the transport receives
 * straight into the memory get_buffer hands out (no copy), and reports what
 * arrived with buffer_updated. The other callbacks mirror cio_protocol_t.
 */
typedef struct cio__bufproto {
    void *(*get_buffer)(void *ctx, size_t *len); /* NULL: out of memory */
    void (*buffer_updated)(void *ctx, size_t n);
    bool (*eof_received)(void *ctx);
    void (*lost)(void *ctx, int err);
    void (*pause_writing)(void *ctx);  /* may be NULL */
    void (*resume_writing)(void *ctx);
    void (*flushed)(void *ctx);        /* the write buffer became empty; may be NULL */
} cio__bufproto;

/* What a transport's fd is: a connected stream socket, or one end of a
 * pipe (subprocess stdio, os layer), which is read and written with
 * read(2)/write(2) instead of recv/send. The read end refuses writes and
 * write_eof (-EBADF); the write end never reads (its protocol hears EOF at
 * once) and write_eof closes it once flushed. */
enum { CIO__PIPE_NONE = 0, CIO__PIPE_READ, CIO__PIPE_WRITE };

/* A transport for a buffered protocol (streams). Same contract as
 * cio_transport_new, without connection_made; pipe is a CIO__PIPE_* kind. */
int cio__transport_new_buffered(cio_transport_t **out, cio_loop_t *loop, int fd,
                                const cio__bufproto *bp, void *ctx,
                                const cio_transport_opts_t *opts, int pipe);
/* Stops every callback to the protocol: its context is going away. The
 * transport goes on closing by itself and frees itself. buf (cap bytes,
 * may be NULL) is the protocol's receive buffer, which a receive the kernel
 * holds may still write to: the transport frees it when it is done. */
void cio__transport_detach(cio_transport_t *t, void *buf, size_t cap);
/* The connection's error once lost (0 before), and whether writes are
 * paused (above the high-water mark, not yet down to the low one). */
int cio__transport_error(const cio_transport_t *t);
bool cio__transport_write_paused(const cio_transport_t *t);
/* How many more bytes a write may queue before write_limit (-ENOBUFS). */
size_t cio__transport_write_room(const cio_transport_t *t);
/* True while a receive into the protocol's buffer is under way (the buffer
 * must not move or be released). */
bool cio__transport_receiving(const cio_transport_t *t);
/* Calls fn(arg) once the transport is gone (after connection_lost), for
 * servers counting their connections. */
void cio__transport_on_gone(cio_transport_t *t, void (*fn)(void *), void *arg);
/* The options with defaults applied: 0 or -EINVAL. */
int cio__transport_opts(const cio_transport_opts_t *in, cio_transport_opts_t *out);

/* ------------------------------------------------------------------------ */
/* Streams (stream.c), for servers                                            */
/* ------------------------------------------------------------------------ */

/* A stream held by its server: cio_stream_close and cio_stream_abort close
 * it but leave freeing to cio__stream_release. */
int cio__stream_new_held(cio_stream_t **out, cio_loop_t *loop, int fd,
                         const cio_stream_opts_t *opts);
/* A held stream over one end of a pipe (pipe: CIO__PIPE_READ or _WRITE),
 * for subprocesses; fd is owned from then on (closed on failure too). */
int cio__stream_new_pipe(cio_stream_t **out, cio_loop_t *loop, int fd, int pipe,
                         const cio_stream_opts_t *opts);
/* Closes s from its server (close_clients: flush = true; abort_clients:
 * false); the handler's calls return -ESHUTDOWN from then on. */
void cio__stream_shutdown(cio_stream_t *s, bool flush);
/* The server's last word, from the connection's task once the handler has
 * returned: closes s (flushing) unless closed, and frees it. */
void cio__stream_release(cio_stream_t *s);
/* Whether a read may start on s now: 0, -ESHUTDOWN (closed) or -EBUSY
 * (another task is reading it). Not an await point; changes nothing. */
int cio__stream_can_read(const cio_stream_t *s);
/* How many bytes a write may queue on s before its write_limit; 0 once the
 * connection is gone or s is closed. */
size_t cio__stream_write_room(const cio_stream_t *s);
/* Await point: waits until everything queued on s was written (no
 * deadline). 0, -ESHUTDOWN (closed), -ECANCELED / -ETIMEDOUT, -EPERM outside
 * a task, or the connection's error. */
int cio__stream_wait_flushed(cio_stream_t *s);

#endif /* CIO_NET_H */
