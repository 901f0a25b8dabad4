/*
 * One error vocabulary: negative errno codes, named and described from the
 * single table below (the codes cio returns; others fall back to the C
 * library's description).
 */
#include "base.h"

#define CIO_ERRNO_MAP(X)                                                   \
    X(EPERM, "operation not permitted (not inside a task?)")              \
    X(ENOENT, "no such file or directory")                                \
    X(EINTR, "interrupted (the loop was stopped)")                        \
    X(EIO, "input/output error")                                          \
    X(EBADF, "bad file descriptor")                                       \
    X(EAGAIN, "resource temporarily unavailable (not ready / would block)") \
    X(ENOMEM, "out of memory")                                            \
    X(EACCES, "permission denied")                                        \
    X(EBUSY, "resource busy")                                             \
    X(EEXIST, "already exists")                                           \
    X(EINVAL, "invalid argument")                                         \
    X(EMFILE, "too many open files")                                      \
    X(ENOSPC, "no space left on device")                                  \
    X(EPIPE, "broken pipe")                                               \
    X(EDEADLK, "deadlock: a task awaited itself")                         \
    X(ENOSYS, "function not implemented")                                 \
    X(ENOTSUP, "operation not supported")                                 \
    X(EOVERFLOW, "value too large (released too many times?)")            \
    X(EALREADY, "already done")                                           \
    X(ECANCELED, "operation cancelled")                                   \
    X(ETIMEDOUT, "timed out")                                             \
    X(ESHUTDOWN, "shut down (loop, pool or queue closed)")                \
    X(ENOBUFS, "limit exceeded (buffer full)")                            \
    X(ECONNRESET, "connection reset by peer")                             \
    X(ECONNREFUSED, "connection refused")                                 \
    X(ENOTCONN, "not connected")                                          \
    X(EADDRINUSE, "address already in use")                               \
    X(EPROTO, "protocol error")                                           \
    X(ENODATA, "end of stream before the expected data")                  \
    X(ESRCH, "no such process")                                           \
    X(ECHILD, "no child processes")

const char *cio_strerror(int err)
{
    switch (-(long)err) {
#define X(code, msg) case code: return msg;
        CIO_ERRNO_MAP(X)
#undef X
    case 0: return "success";
    default: return "unknown error";
    }
}

const char *cio_err_name(int err)
{
    switch (-(long)err) {
#define X(code, msg) case code: return #code;
        CIO_ERRNO_MAP(X)
#undef X
    case 0: return "OK";
    default: return "UNKNOWN";
    }
}
