/*
 * Helpers shared by the examples: return-code checks and the timestamps the
 * seeds print. Each example is otherwise self-contained.
 *
 * cio reports errors as negative errno codes. An example must never carry on
 * after an unexpected one, so every call goes through one of these macros,
 * which print the failing call and exit(1).
 */
#ifndef CIO_EXAMPLE_H
#define CIO_EXAMPLE_H

#include <cio.h>

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>

/*
 * The call must succeed (return 0 or a non-negative count). Constructors
 * too: they return a code and hand the object through their first argument,
 * CHECK(cio_spawn(&t, fn, arg)).
 */
#define CHECK(call)                                                          \
    do {                                                                     \
        int check_rc_ = (call);                                              \
        if (check_rc_ < 0) {                                                 \
            fprintf(stderr, "%s:%d: %s failed: %s (%s)\n", __FILE__,         \
                    __LINE__, #call, cio_err_name(check_rc_),                \
                    cio_strerror(check_rc_));                                \
            exit(1);                                                         \
        }                                                                    \
    } while (0)

/* The call must return exactly `want` (e.g. -ETIMEDOUT in a timeout demo). */
#define EXPECT_RC(call, want)                                                \
    do {                                                                     \
        int expect_rc_ = (call);                                             \
        if (expect_rc_ != (want)) {                                          \
            fprintf(stderr, "%s:%d: %s returned %d (%s), expected %d (%s)\n", \
                    __FILE__, __LINE__, #call, expect_rc_,                   \
                    cio_err_name(expect_rc_), (int)(want),                   \
                    cio_err_name(want));                                     \
            exit(1);                                                         \
        }                                                                    \
    } while (0)

/* A condition the library promises; a broken promise is a failure. */
#define EXPECT(cond)                                                         \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "%s:%d: expected %s\n", __FILE__, __LINE__,      \
                    #cond);                                                  \
            exit(1);                                                         \
        }                                                                    \
    } while (0)

/* time.strftime('%X'): the wall-clock time of day, as the seeds print it. */
static inline const char *time_of_day(char buf[32])
{
    time_t now = time(NULL);
    struct tm tm;
    if (localtime_r(&now, &tm) == NULL || strftime(buf, 32, "%X", &tm) == 0)
        buf[0] = '\0';
    return buf;
}

/* Seconds on the running loop's clock (asyncio loop.time()). */
static inline double loop_now(void)
{
    return cio_loop_time(cio_get_running_loop());
}

/* Room for addr_str's text: "[ffff:...:ffff]:65535" fits with room to spare. */
enum { ADDR_STRLEN = 80 };

/*
 * An address as the networking examples print it: "127.0.0.1:5555",
 * "[::1]:5555", or "unix socket" (peers of a Unix socket have no name).
 * Numeric only, so nothing blocks.
 */
static inline const char *addr_str(const struct sockaddr *sa, socklen_t len,
                                   char buf[ADDR_STRLEN])
{
    char host[64], port[8];
    if (sa->sa_family == AF_UNIX) {
        snprintf(buf, ADDR_STRLEN, "unix socket");
    } else if (getnameinfo(sa, len, host, sizeof host, port, sizeof port,
                           NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
        snprintf(buf, ADDR_STRLEN, "?");
    } else {
        snprintf(buf, ADDR_STRLEN, sa->sa_family == AF_INET6 ? "[%s]:%s" : "%s:%s",
                 host, port);
    }
    return buf;
}

/* The peer of a stream (asyncio writer.get_extra_info('peername')). */
static inline const char *stream_peer(cio_stream_t *s, char buf[ADDR_STRLEN])
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (cio_transport_peername(cio_stream_transport(s), (struct sockaddr *)&ss, &len) < 0) {
        snprintf(buf, ADDR_STRLEN, "?");
        return buf;
    }
    return addr_str((struct sockaddr *)&ss, len, buf);
}

/*
 * The port argument of the servers: argv[i] if given (1..65535), else dflt.
 * Exits with a message on anything else.
 */
static inline int port_arg(const char *arg, int dflt)
{
    if (!arg)
        return dflt;
    char *end;
    long port = strtol(arg, &end, 10);
    if (*arg == '\0' || *end != '\0' || port < 1 || port > 65535) {
        fprintf(stderr, "not a port number: %s\n", arg);
        exit(2);
    }
    return (int)port;
}

#endif /* CIO_EXAMPLE_H */
