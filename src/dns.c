/*
 * Name resolution off the loop thread: getaddrinfo(3) and getnameinfo(3)
 * run as jobs of the loop's default executor (the thread pool), so the loop
 * never blocks on DNS; and the address helpers of the network layer.
 *
 * A lookup's state lives in a job record on the heap, never on the task's
 * stack: a task whose lookup is cancelled or times out returns at once (as
 * asyncio's run_in_executor does), while a lookup that has already started
 * cannot be interrupted and finishes in its thread. Whoever is last frees
 * the record: the task when the job finished while it waited (it takes the
 * result), the job's completion (an internal callback run on the loop
 * thread when the job's future completes) when the task has left. A job
 * still queued when its task leaves is cancelled and never runs. At loop
 * close the thread pool waits for running jobs and delivers their
 * completions, so nothing leaks there either.
 *
 * Numeric addresses need no lookup: getaddrinfo with a numeric host (or
 * none) and a numeric service, and getnameinfo asked for numeric forms only,
 * run inline on the loop thread.
 */
#include "net.h"

#include <arpa/inet.h>
#include <stdio.h>

/* ------------------------------------------------------------------------ */
/* Error codes                                                                */
/* ------------------------------------------------------------------------ */

/* getaddrinfo/getnameinfo's return value as a cio code: 0, CIO_EAI(rc), or
 * for EAI_SYSTEM the errno the call left (sys_errno). */
static int eai_code(int rc, int sys_errno)
{
    if (rc == 0)
        return 0;
    if (rc == EAI_SYSTEM)
        return sys_errno > 0 ? -sys_errno : -EIO;
    return CIO_EAI(rc);
}

/* ------------------------------------------------------------------------ */
/* Jobs                                                                       */
/* ------------------------------------------------------------------------ */

/*
 * One lookup. The strings and output buffers are copies that live in the
 * same allocation, after the record: the caller's may be gone by the time
 * an abandoned lookup ends.
 */
typedef struct dns_job {
    cio__waiter *waiter; /* the awaiting task's, NULL once it has left */
    int rc;              /* the lookup's cio code, set by the worker */
    /* getaddrinfo */
    const char *host, *service;
    struct addrinfo hints;
    bool has_hints;
    struct addrinfo *res; /* freed with the record unless taken */
    /* getnameinfo */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    int flags;
    char *hostbuf, *servbuf;
    size_t hostlen, servlen;
} dns_job;

/* Frees j and the result nobody took. */
static void job_free(dns_job *j)
{
    if (j->res)
        freeaddrinfo(j->res);
    cio__free(j);
}

/* Worker thread: the lookup of cio_getaddrinfo. */
static int gai_work(void *arg, void **result)
{
    dns_job *j = arg;
    (void)result;
    errno = 0;
    int rc = getaddrinfo(j->host, j->service, j->has_hints ? &j->hints : NULL, &j->res);
    j->rc = eai_code(rc, errno);
    if (rc)
        j->res = NULL;
    return 0;
}

/* Worker thread: the lookup of cio_getnameinfo. */
static int gni_work(void *arg, void **result)
{
    dns_job *j = arg;
    (void)result;
    errno = 0;
    int rc = getnameinfo((const struct sockaddr *)&j->addr, j->addrlen, j->hostbuf,
                         (socklen_t)j->hostlen, j->servbuf, (socklen_t)j->servlen, j->flags);
    j->rc = eai_code(rc, errno);
    return 0;
}

/*
 * Loop thread, when the job's future completes (the job ran, or was
 * cancelled while queued): hands the outcome to the waiting task, or frees
 * the record when the task has left. Runs inside the completion, so the
 * future must not be released here.
 */
static void job_done(cio_future_t *f, void *arg)
{
    dns_job *j = arg;
    /* Looked at (no unretrieved report), and kept when the executor
     * cancelled the job without running it (at fork, at shutdown): the
     * lookup then has no answer, and the task must not read success. */
    int st = cio_future_result(f, NULL);
    if (st < 0)
        j->rc = st;
    cio__waiter *w = j->waiter;
    if (!w) {
        job_free(j);
        return;
    }
    j->waiter = NULL;
    cio__wake(w, 0);
}

/* The waiter's unlink hook: the task leaves (cancelled, timed out, or no
 * timer for its deadline); the completion will free the record. */
static void job_unlink(cio__waiter *w)
{
    dns_job *j = w->data;
    j->waiter = NULL;
}

/*
 * Runs fn(j) in the loop's default executor and parks the task c until it
 * has finished. Returns 0 when it has (j's outcome is in j->rc and the
 * caller frees j), or a negative code when the task leaves first
 * (-ECANCELED, -ETIMEDOUT, -ENOMEM) or the job could not be submitted
 * (-ENOMEM, -ESHUTDOWN, -EAGAIN): j then belongs to the job's completion,
 * or is freed here, and the caller must not touch it.
 */
static int run_job(cio__coro *c, dns_job *j, cio_task_fn fn)
{
    /* The completion callback's node is taken first: once the job is
     * queued there is no failing any more. */
    void *node = cio__cbnode_take(c->loop);
    if (!node) {
        job_free(j);
        return -ENOMEM;
    }
    cio_future_t *f;
    int rc = cio_run_in_executor(&f, NULL, NULL, fn, j);
    if (rc) {
        cio__cbnode_give(c->loop, node);
        job_free(j);
        return rc;
    }
    /* The job completes on this thread, never before the loop runs again,
     * so the callback cannot miss the completion. */
    cio__future_on_done_node(f, node, job_done, j);
    cio__waiter w;
    cio__waiter_init(&w, c, "dns", j, job_unlink);
    w.data = j;
    j->waiter = &w;
    rc = cio__wait(&w, CIO__NO_DEADLINE);
    if (rc) {
        /* A job still queued is taken off the queue (it completes, and
         * job_done frees j, inside this call); a running one is left to
         * finish in its thread. */
        cio_future_cancel(f);
    }
    cio_future_release(f);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* getaddrinfo                                                                */
/* ------------------------------------------------------------------------ */

/* True when s is an IPv4 or IPv6 address in numeric form. */
static bool numeric_host(const char *s)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

/* True when s is a port number in decimal. */
static bool numeric_service(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (*s < '0' || *s > '9')
            return false;
    return true;
}

/*
 * True when getaddrinfo(host, service) needs no name service: the host is
 * absent or numeric (or the caller asked for numeric hosts only, which
 * fails at once for a name) and the service absent or numeric. The flags
 * that keep it that way are added to *flags.
 */
static bool gai_inline(const char *host, const char *service, int *flags)
{
    bool host_ok = !host || (*flags & AI_NUMERICHOST) || numeric_host(host);
    bool serv_ok = !service || (*flags & AI_NUMERICSERV) || numeric_service(service);
    if (!host_ok || !serv_ok)
        return false;
    if (host)
        *flags |= AI_NUMERICHOST;
    if (service)
        *flags |= AI_NUMERICSERV;
    return true;
}

/* A job record for getaddrinfo with copies of host, service and hints;
 * NULL when out of memory. */
static dns_job *gai_job_new(const char *host, const char *service,
                            const struct addrinfo *hints)
{
    size_t hl = host ? strlen(host) + 1 : 0, sl = service ? strlen(service) + 1 : 0;
    dns_job *j = cio__calloc(1, sizeof(*j) + hl + sl);
    if (!j)
        return NULL;
    char *p = (char *)(j + 1);
    if (host) {
        j->host = memcpy(p, host, hl);
        p += hl;
    }
    if (service)
        j->service = memcpy(p, service, sl);
    if (hints) {
        j->hints = *hints;
        j->has_hints = true;
    }
    return j;
}

int cio_getaddrinfo(const char *host, const char *service, const struct addrinfo *hints,
                    struct addrinfo **res)
{
    if (res)
        *res = NULL;
    cio__coro *c = cio__current;
    if (!c)
        return -EPERM;
    if (!res || (!host && !service))
        return -EINVAL;
    int rc = cio__check_cancel(c);
    if (rc)
        return rc;
    /* No hints means glibc's defaults, in both paths alike. */
    int flags = hints ? hints->ai_flags : (AI_V4MAPPED | AI_ADDRCONFIG);
    if (gai_inline(host, service, &flags)) {
        struct addrinfo h = hints ? *hints : (struct addrinfo){.ai_family = AF_UNSPEC};
        h.ai_flags = flags;
        errno = 0;
        rc = getaddrinfo(host, service, &h, res);
        if (rc)
            *res = NULL;
        return eai_code(rc, errno);
    }
    dns_job *j = gai_job_new(host, service, hints);
    if (!j)
        return -ENOMEM;
    rc = run_job(c, j, gai_work);
    if (rc)
        return rc; /* j is the completion's now */
    rc = j->rc;
    if (!rc) {
        *res = j->res;
        j->res = NULL; /* else job_free frees what came with a failure */
    }
    job_free(j);
    return rc;
}

void cio_freeaddrinfo(struct addrinfo *res)
{
    if (res)
        freeaddrinfo(res);
}

/* ------------------------------------------------------------------------ */
/* getnameinfo                                                                */
/* ------------------------------------------------------------------------ */

/* True when getnameinfo needs no name service for these outputs: only
 * numeric forms are asked for, or the address is not an Internet one (no
 * lookup applies to it). */
static bool gni_inline(const struct sockaddr *addr, bool want_host, bool want_serv, int flags)
{
    if (addr->sa_family != AF_INET && addr->sa_family != AF_INET6)
        return true;
    return (!want_host || (flags & NI_NUMERICHOST)) && (!want_serv || (flags & NI_NUMERICSERV));
}

/* A job record for getnameinfo: a copy of the address and output buffers
 * of the caller's sizes (at most NI_MAXHOST / NI_MAXSERV bytes: no answer
 * is longer); NULL when out of memory. */
static dns_job *gni_job_new(const struct sockaddr *addr, socklen_t addrlen, size_t hostlen,
                            size_t servlen, int flags)
{
    if (hostlen > NI_MAXHOST)
        hostlen = NI_MAXHOST;
    if (servlen > NI_MAXSERV)
        servlen = NI_MAXSERV;
    dns_job *j = cio__calloc(1, sizeof(*j) + hostlen + servlen);
    if (!j)
        return NULL;
    memcpy(&j->addr, addr, addrlen);
    j->addrlen = addrlen;
    j->flags = flags;
    char *p = (char *)(j + 1);
    if (hostlen) {
        j->hostbuf = p;
        j->hostlen = hostlen;
    }
    if (servlen) {
        j->servbuf = p + hostlen;
        j->servlen = servlen;
    }
    return j;
}

int cio_getnameinfo(const struct sockaddr *addr, socklen_t addrlen, char *host,
                    size_t hostlen, char *serv, size_t servlen, int flags)
{
    cio__coro *c = cio__current;
    if (!c)
        return -EPERM;
    bool want_host = host && hostlen, want_serv = serv && servlen;
    if (!addr || addrlen < sizeof(sa_family_t) || addrlen > sizeof(struct sockaddr_storage) ||
        (!want_host && !want_serv))
        return -EINVAL;
    /* No answer is longer, and getnameinfo takes socklen_t lengths. */
    if (hostlen > NI_MAXHOST)
        hostlen = NI_MAXHOST;
    if (servlen > NI_MAXSERV)
        servlen = NI_MAXSERV;
    int rc = cio__check_cancel(c);
    if (rc)
        return rc;
    if (!want_host)
        hostlen = 0;
    if (!want_serv)
        servlen = 0;
    if (gni_inline(addr, want_host, want_serv, flags)) {
        errno = 0;
        rc = getnameinfo(addr, addrlen, want_host ? host : NULL, (socklen_t)hostlen,
                         want_serv ? serv : NULL, (socklen_t)servlen, flags);
        return eai_code(rc, errno);
    }
    dns_job *j = gni_job_new(addr, addrlen, hostlen, servlen, flags);
    if (!j)
        return -ENOMEM;
    rc = run_job(c, j, gni_work);
    if (rc)
        return rc; /* j is the completion's now */
    rc = j->rc;
    if (!rc && want_host)
        memcpy(host, j->hostbuf, strlen(j->hostbuf) + 1);
    if (!rc && want_serv)
        memcpy(serv, j->servbuf, strlen(j->servbuf) + 1);
    job_free(j);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Helpers of the network layer                                               */
/* ------------------------------------------------------------------------ */

/*
 * AI_ADDRCONFIG is never added here (asyncio does not add it either): glibc
 * ignores loopback addresses when it decides which families are
 * configured, so on a machine or container with no other interface even
 * "localhost" would resolve to nothing. Callers that want it pass it in
 * flags. The port is always numeric (AI_NUMERICSERV), and a numeric host
 * is parsed on the loop thread with no lookup (see cio_getaddrinfo).
 */
int cio__resolve(const char *host, int port, int family, int socktype, int flags,
                 struct addrinfo **res)
{
    if (res)
        *res = NULL;
    if (!res || port < 0 || port > 65535)
        return -EINVAL;
    char serv[8];
    snprintf(serv, sizeof serv, "%d", port);
    struct addrinfo hints = {.ai_family = family, .ai_socktype = socktype,
                             .ai_flags = flags | AI_NUMERICSERV};
    return cio_getaddrinfo(host, serv, &hints, res);
}

int cio__unix_addr(const char *path, struct sockaddr_un *sa, socklen_t *len)
{
    if (!path || !*path || !sa || !len)
        return -EINVAL;
    size_t n = strlen(path);
    if (n >= sizeof(sa->sun_path))
        return -ENAMETOOLONG;
    memset(sa, 0, sizeof(*sa));
    sa->sun_family = AF_UNIX;
    memcpy(sa->sun_path, path, n + 1);
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    return 0;
}
