/*
 * One error vocabulary: negative errno codes, named and described from the
 * single table below (the codes cio returns; others fall back to the C
 * library's description).
 */
#include "base.h"

#include <netdb.h>

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
    X(ECHILD, "no child processes")                                       \
    X(EREMOTEIO, "the server reported an error")                          \
    X(ECONNABORTED, "aborted (a pipeline statement after a failed one)")   \
    X(ESTALE, "stale (a task queue lease was lost)")

/*
 * getaddrinfo's codes, returned as CIO_EAI(code) (cio.h). The GNU ones are
 * listed only where the C library defines them.
 */
#ifdef EAI_ADDRFAMILY
#define CIO_EAI_ADDRFAMILY(X) X(EAI_ADDRFAMILY)
#else
#define CIO_EAI_ADDRFAMILY(X)
#endif
#ifdef EAI_NODATA
#define CIO_EAI_NODATA(X) X(EAI_NODATA)
#else
#define CIO_EAI_NODATA(X)
#endif
#ifdef EAI_INPROGRESS
#define CIO_EAI_GNU(X) \
    X(EAI_INPROGRESS) X(EAI_CANCELED) X(EAI_NOTCANCELED) X(EAI_ALLDONE) X(EAI_INTR)
#else
#define CIO_EAI_GNU(X)
#endif
#ifdef EAI_IDN_ENCODE
#define CIO_EAI_IDN(X) X(EAI_IDN_ENCODE)
#else
#define CIO_EAI_IDN(X)
#endif

#define CIO_EAI_MAP(X)                                                     \
    X(EAI_BADFLAGS) X(EAI_NONAME) X(EAI_AGAIN) X(EAI_FAIL) X(EAI_FAMILY)   \
    X(EAI_SOCKTYPE) X(EAI_SERVICE) X(EAI_MEMORY) X(EAI_SYSTEM)             \
    X(EAI_OVERFLOW) CIO_EAI_ADDRFAMILY(X) CIO_EAI_NODATA(X) CIO_EAI_GNU(X) \
    CIO_EAI_IDN(X)

/* The EAI code err stands for (err - CIO_EAI_BASE), or 0 when err is not
 * one cio returns. */
static int eai_of(int err)
{
    if (err >= CIO_EAI_BASE || err < CIO_EAI_BASE - 1000)
        return 0;
    switch (err - CIO_EAI_BASE) {
#define X(code) case code:
        CIO_EAI_MAP(X)
#undef X
        return err - CIO_EAI_BASE;
    default: return 0;
    }
}

/* The name of an EAI code known to eai_of. */
static const char *eai_name(int code)
{
    switch (code) {
#define X(c) case c: return #c;
        CIO_EAI_MAP(X)
#undef X
    default: return "UNKNOWN";
    }
}

const char *cio_strerror(int err)
{
    int eai = eai_of(err);
    if (eai)
        return gai_strerror(eai); /* static strings */
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
    int eai = eai_of(err);
    if (eai)
        return eai_name(eai);
    switch (-(long)err) {
#define X(code, msg) case code: return #code;
        CIO_ERRNO_MAP(X)
#undef X
    case 0: return "OK";
    default: return "UNKNOWN";
    }
}
