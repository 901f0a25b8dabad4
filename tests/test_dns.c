/*
 * Name resolution (dns.c) on both backends: cio_getaddrinfo and
 * cio_getnameinfo run in the thread pool (or inline for numeric forms),
 * their CIO_EAI error codes and how cio_strerror / cio_err_name describe
 * them, and cancellation or a deadline while a lookup is under way: the
 * task returns at once and the lookup's memory is freed when it ends (the
 * suite runs under ASan/LSan in CI, which would report a leak).
 *
 * Nothing here needs a network: "localhost" and 127.0.0.1 come from
 * /etc/hosts, and names under .invalid (RFC 6761) never resolve.
 */
#include "cio_test.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */
/* ------------------------------------------------------------------------ */

/* Runs fn(arg) as the main task of a new loop and asserts it returned 0;
 * the loop's close refuses while anything a test started is left over. */
static void run_task(cio_task_fn fn, void *arg)
{
    cio_loop_t *l = new_loop();
    cio_task_t *t;
    ck_assert_int_eq(cio_spawn_ex(&t, l, fn, arg, NULL), 0);
    ck_assert_int_eq(cio_loop_run_until_complete(l, t, NULL), 0);
    cio_future_release(t);
    ck_assert_int_eq(cio_loop_shutdown(l), 0);
    close_free(l);
}

/* True when rc is one of the CIO_EAI codes. */
static bool is_eai(int rc)
{
    return rc < CIO_EAI_BASE && rc > CIO_EAI_BASE - 1000;
}

/* The hints of a stream lookup of family. */
static struct addrinfo stream_hints(int family, int flags)
{
    struct addrinfo h;
    memset(&h, 0, sizeof h);
    h.ai_family = family;
    h.ai_socktype = SOCK_STREAM;
    h.ai_flags = flags;
    return h;
}

/* True when res holds the IPv4 address ip with port. */
static bool has_v4(const struct addrinfo *res, const char *ip, int port)
{
    for (const struct addrinfo *a = res; a; a = a->ai_next) {
        if (a->ai_family != AF_INET)
            continue;
        const struct sockaddr_in *in = (const struct sockaddr_in *)a->ai_addr;
        char buf[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, &in->sin_addr, buf, sizeof buf);
        if (!strcmp(buf, ip) && ntohs(in->sin_port) == port)
            return true;
    }
    return false;
}

/* A task that records that it ran: tells whether a call suspended. */
static int mark_ran(void *arg, void **result)
{
    (void)result;
    *(int *)arg = 1;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* getaddrinfo                                                                */
/* ------------------------------------------------------------------------ */

static int main_localhost(void *arg, void **result)
{
    (void)arg;
    (void)result;
    int ran = 0;
    cio_task_t *other = spawn(mark_ran, &ran);
    struct addrinfo h = stream_hints(AF_INET, 0), *res = NOT_SET;
    ck_assert_int_eq(cio_getaddrinfo("localhost", "80", &h, &res), 0);
    ck_assert_ptr_nonnull(res);
    ck_assert(has_v4(res, "127.0.0.1", 80));
    ck_assert_int_eq(res->ai_socktype, SOCK_STREAM);
    cio_freeaddrinfo(res);
    /* A name goes through the thread pool: the task suspended meanwhile. */
    ck_assert_int_eq(ran, 1);
    ck_assert_int_eq(finish(other), 0);
    return 0;
}

START_TEST(dns_localhost)
{
    run_task(main_localhost, NULL);
}
END_TEST

static int main_numeric(void *arg, void **result)
{
    (void)arg;
    (void)result;
    int ran = 0;
    cio_task_t *other = spawn(mark_ran, &ran);
    struct addrinfo h = stream_hints(AF_UNSPEC, 0), *res = NULL;
    ck_assert_int_eq(cio_getaddrinfo("127.0.0.1", "8080", &h, &res), 0);
    ck_assert(has_v4(res, "127.0.0.1", 8080));
    ck_assert_ptr_null(res->ai_next);
    cio_freeaddrinfo(res);

    ck_assert_int_eq(cio_getaddrinfo("::1", "443", &h, &res), 0);
    ck_assert_int_eq(res->ai_family, AF_INET6);
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)res->ai_addr;
    ck_assert(IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr));
    ck_assert_int_eq(ntohs(in6->sin6_port), 443);
    cio_freeaddrinfo(res);

    /* No host with AI_PASSIVE: the wildcard address(es). */
    h = stream_hints(AF_INET, AI_PASSIVE);
    ck_assert_int_eq(cio_getaddrinfo(NULL, "9", &h, &res), 0);
    ck_assert(has_v4(res, "0.0.0.0", 9));
    cio_freeaddrinfo(res);
    /* Without AI_PASSIVE: the loopback address. */
    h = stream_hints(AF_INET, 0);
    ck_assert_int_eq(cio_getaddrinfo(NULL, "9", &h, &res), 0);
    ck_assert(has_v4(res, "127.0.0.1", 9));
    cio_freeaddrinfo(res);
    /* No hints at all. */
    ck_assert_int_eq(cio_getaddrinfo("127.0.0.1", NULL, NULL, &res), 0);
    ck_assert(has_v4(res, "127.0.0.1", 0));
    cio_freeaddrinfo(res);

    /* Numeric forms are parsed inline: the task never suspended. */
    ck_assert_int_eq(ran, 0);
    /* A bad numeric form is an EAI code at once too. */
    h = stream_hints(AF_UNSPEC, AI_NUMERICHOST);
    ck_assert_int_eq(cio_getaddrinfo("localhost", "80", &h, &res), CIO_EAI(EAI_NONAME));
    ck_assert_ptr_null(res);
    h = stream_hints(AF_INET6, 0);
    int rc = cio_getaddrinfo("127.0.0.1", "80", &h, &res);
    ck_assert_msg(is_eai(rc), "v4 address as AF_INET6: %d", rc);
    ck_assert_ptr_null(res);
    ck_assert_int_eq(ran, 0);
    ck_assert_int_eq(finish(other), 0);
    return 0;
}

START_TEST(dns_numeric)
{
    run_task(main_numeric, NULL);
}
END_TEST

static int main_invalid(void *arg, void **result)
{
    (void)arg;
    (void)result;
    struct addrinfo h = stream_hints(AF_UNSPEC, 0), *res = NOT_SET;
    int rc = cio_getaddrinfo("no-such-host.invalid", "80", &h, &res);
    ck_assert_msg(is_eai(rc), "rc %d (%s)", rc, cio_err_name(rc));
    ck_assert_ptr_null(res);
    ck_assert_int_eq(strncmp(cio_err_name(rc), "EAI_", 4), 0);
    ck_assert_str_eq(cio_strerror(rc), gai_strerror(rc - CIO_EAI_BASE));
    /* An unknown service name, through the pool as well. */
    res = NOT_SET;
    rc = cio_getaddrinfo("127.0.0.1", "no-such-service-cio", &h, &res);
    ck_assert_int_eq(rc, CIO_EAI(EAI_SERVICE));
    ck_assert_ptr_null(res);
    return 0;
}

START_TEST(dns_invalid_name)
{
    run_task(main_invalid, NULL);
}
END_TEST

/* Many lookups at once, each in a task of its own. */
static int one_lookup(void *arg, void **result)
{
    (void)result;
    struct addrinfo h = stream_hints(AF_INET, 0), *res;
    int rc = cio_getaddrinfo("localhost", "7", &h, &res);
    if (rc)
        return rc;
    *(int *)arg = has_v4(res, "127.0.0.1", 7);
    cio_freeaddrinfo(res);
    return 0;
}

#define MANY 64

static int main_many(void *arg, void **result)
{
    (void)arg;
    (void)result;
    int ok[MANY] = {0};
    cio_task_t *t[MANY];
    for (int i = 0; i < MANY; i++)
        t[i] = spawn(one_lookup, &ok[i]);
    for (int i = 0; i < MANY; i++) {
        ck_assert_int_eq(finish(t[i]), 0);
        ck_assert_int_eq(ok[i], 1);
    }
    return 0;
}

START_TEST(dns_many_concurrent)
{
    run_task(main_many, NULL);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* getnameinfo                                                                */
/* ------------------------------------------------------------------------ */

static struct sockaddr_in v4_addr(const char *ip, int port)
{
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    ck_assert_int_eq(inet_pton(AF_INET, ip, &a.sin_addr), 1);
    return a;
}

static int main_nameinfo(void *arg, void **result)
{
    (void)arg;
    (void)result;
    struct sockaddr_in a = v4_addr("127.0.0.1", 80);
    char host[NI_MAXHOST], serv[NI_MAXSERV];
    int ran = 0;
    cio_task_t *other = spawn(mark_ran, &ran);
    /* Numeric: inline. */
    ck_assert_int_eq(cio_getnameinfo((struct sockaddr *)&a, sizeof a, host, sizeof host, serv,
                                     sizeof serv, NI_NUMERICHOST | NI_NUMERICSERV),
                     0);
    ck_assert_str_eq(host, "127.0.0.1");
    ck_assert_str_eq(serv, "80");
    ck_assert_int_eq(ran, 0);
    /* Only the service, numerically. */
    memset(serv, 0, sizeof serv);
    ck_assert_int_eq(cio_getnameinfo((struct sockaddr *)&a, sizeof a, NULL, 0, serv,
                                     sizeof serv, NI_NUMERICSERV),
                     0);
    ck_assert_str_eq(serv, "80");
    /* Too small a buffer. */
    ck_assert_int_eq(cio_getnameinfo((struct sockaddr *)&a, sizeof a, host, 4, NULL, 0,
                                     NI_NUMERICHOST),
                     CIO_EAI(EAI_OVERFLOW));
    ck_assert_int_eq(ran, 0);

    /* Names: through the pool (127.0.0.1 is "localhost" in /etc/hosts). */
    memset(host, 0, sizeof host);
    memset(serv, 0, sizeof serv);
    ck_assert_int_eq(cio_getnameinfo((struct sockaddr *)&a, sizeof a, host, sizeof host, serv,
                                     sizeof serv, 0),
                     0);
    ck_assert_int_eq(ran, 1);
    ck_assert_str_ne(host, "");
    ck_assert_str_ne(serv, "");
    /* The name does not fit in 4 bytes (nor does the numeric fallback). */
    ck_assert_int_eq(cio_getnameinfo((struct sockaddr *)&a, sizeof a, host, 4, NULL, 0, 0),
                     CIO_EAI(EAI_OVERFLOW));
    /* A name required for an address that has none in the local files
     * would need DNS; instead: a family getnameinfo does not know. */
    struct sockaddr bad;
    memset(&bad, 0, sizeof bad);
    bad.sa_family = AF_APPLETALK;
    int rc = cio_getnameinfo(&bad, sizeof bad, host, sizeof host, NULL, 0, 0);
    ck_assert_msg(is_eai(rc), "rc %d", rc);
    ck_assert_int_eq(finish(other), 0);
    return 0;
}

START_TEST(dns_getnameinfo)
{
    run_task(main_nameinfo, NULL);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Cancellation and deadlines                                                 */
/* ------------------------------------------------------------------------ */

typedef struct lookup {
    int rc;
    int done;
    bool nameinfo;
} lookup_t;

/* A lookup by name, its outcome in the record. */
static int lookup_body(void *arg, void **result)
{
    (void)result;
    lookup_t *l = arg;
    if (l->nameinfo) {
        struct sockaddr_in a = v4_addr("127.0.0.1", 80);
        char host[NI_MAXHOST], serv[NI_MAXSERV];
        l->rc = cio_getnameinfo((struct sockaddr *)&a, sizeof a, host, sizeof host, serv,
                                sizeof serv, 0);
    } else {
        struct addrinfo h = stream_hints(AF_UNSPEC, 0), *res = NOT_SET;
        l->rc = cio_getaddrinfo("localhost", "80", &h, &res);
        if (l->rc == 0)
            cio_freeaddrinfo(res);
        else
            ck_assert_ptr_null(res);
    }
    l->done = 1;
    return l->rc;
}

/*
 * Cancels a lookup after `yields` turns of the loop, for a range of turns:
 * the job is then queued, running, finished but not yet delivered, or
 * delivered. A cancelled task returns -ECANCELED at once; the lookup's
 * memory is freed when the job ends (LSan checks at exit).
 */
static int main_cancel(void *arg, void **result)
{
    (void)result;
    bool nameinfo = *(bool *)arg;
    for (int yields = 0; yields < 12; yields++) {
        lookup_t l = {.rc = 12345, .nameinfo = nameinfo};
        cio_task_t *t = spawn(lookup_body, &l);
        for (int i = 0; i < yields; i++)
            ck_assert_int_eq(cio_yield(), 0);
        cio_task_cancel(t);
        int rc = finish(t);
        ck_assert_int_eq(l.done, 1);
        ck_assert_msg(rc == 0 || rc == -ECANCELED, "rc %d", rc);
        ck_assert_int_eq(rc, l.rc);
    }
    /* Let the abandoned jobs finish while the loop runs. */
    ck_assert_int_eq(cio_sleep(0.05), 0);
    return 0;
}

START_TEST(dns_cancel_in_progress)
{
    bool nameinfo = _i == 1;
    run_task(main_cancel, &nameinfo);
}
END_TEST

/* Blocks a pool worker until the gate opens. */
typedef struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool open;
} gate_t;

static int blocker(void *arg, void **result)
{
    (void)result;
    gate_t *g = arg;
    pthread_mutex_lock(&g->mu);
    while (!g->open)
        pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
    return 0;
}

/* More jobs than the default pool has workers (at most 32). */
#define BLOCKERS 40

/*
 * Every worker of the default pool is busy, so the lookup stays queued:
 * cancelling it takes it off the queue (it never runs) and frees it there;
 * a deadline does the same. The blockers are then let go.
 */
static int main_cancel_queued(void *arg, void **result)
{
    (void)arg;
    (void)result;
    gate_t g = {.open = false};
    pthread_mutex_init(&g.mu, NULL);
    pthread_cond_init(&g.cv, NULL);
    cio_future_t *b[BLOCKERS];
    for (int i = 0; i < BLOCKERS; i++)
        ck_assert_int_eq(cio_run_in_executor(&b[i], NULL, NULL, blocker, &g), 0);

    lookup_t l = {.rc = 12345};
    cio_task_t *t = spawn(lookup_body, &l);
    settle();
    ck_assert_int_eq(l.done, 0);
    cio_task_cancel(t);
    ck_assert_int_eq(finish(t), -ECANCELED);
    ck_assert_int_eq(l.rc, -ECANCELED);

    /* A deadline while queued. */
    cio_scope_t s;
    ck_assert_int_eq(cio_scope_enter(&s, D_SHORT, 0), 0);
    struct addrinfo h = stream_hints(AF_UNSPEC, 0), *res = NOT_SET;
    int64_t t0 = loop_ns();
    ck_assert_int_eq(cio_getaddrinfo("localhost", "80", &h, &res), -ETIMEDOUT);
    ck_assert_int_ge(loop_ns() - t0, NS_SHORT);
    ck_assert_ptr_null(res);
    char host[64];
    struct sockaddr_in a = v4_addr("127.0.0.1", 80);
    ck_assert_int_eq(cio_getnameinfo((struct sockaddr *)&a, sizeof a, host, sizeof host, NULL,
                                     0, 0),
                     -ETIMEDOUT);
    ck_assert_int_eq(cio_scope_exit(&s), -ETIMEDOUT);

    pthread_mutex_lock(&g.mu);
    g.open = true;
    pthread_cond_broadcast(&g.cv);
    pthread_mutex_unlock(&g.mu);
    for (int i = 0; i < BLOCKERS; i++) {
        ck_assert_int_eq(cio_await(b[i], NULL), 0);
        cio_future_release(b[i]);
    }
    /* The pool works on. */
    ck_assert_int_eq(cio_getaddrinfo("localhost", "80", &h, &res), 0);
    cio_freeaddrinfo(res);
    pthread_mutex_destroy(&g.mu);
    pthread_cond_destroy(&g.cv);
    return 0;
}

START_TEST(dns_cancel_queued)
{
    run_task(main_cancel_queued, NULL);
}
END_TEST

/* A lookup abandoned by its task right before the loop closes: the close
 * waits for the pool's running jobs and frees the lookup's result. */
static int main_abandon_at_close(void *arg, void **result)
{
    (void)arg;
    (void)result;
    for (int i = 0; i < 8; i++) {
        lookup_t *l = calloc(1, sizeof *l);
        ck_assert_ptr_nonnull(l);
        cio_task_t *t = spawn(lookup_body, l);
        ck_assert_int_eq(cio_yield(), 0);
        cio_task_cancel(t);
        int rc = finish(t);
        ck_assert(rc == 0 || rc == -ECANCELED);
        free(l);
    }
    return 0; /* no waiting: the loop closes with the jobs still going */
}

START_TEST(dns_abandon_at_close)
{
    run_task(main_abandon_at_close, NULL);
}
END_TEST

/* A timeout through cio_wait_for on a task doing the lookup. */
static int main_wait_for(void *arg, void **result)
{
    (void)arg;
    (void)result;
    for (int i = 0; i < 8; i++) {
        lookup_t l = {.rc = 12345};
        cio_task_t *t = spawn(lookup_body, &l);
        int rc = cio_wait_for(t, 1e-6 * i, NULL);
        cio_future_release(t);
        ck_assert_msg(rc == 0 || rc == -ETIMEDOUT, "rc %d", rc);
        ck_assert_int_eq(l.done, 1);
    }
    return 0;
}

START_TEST(dns_wait_for)
{
    run_task(main_wait_for, NULL);
}
END_TEST

/* Already cancelled: the await point fails before anything starts. */
static int main_precancelled(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_scope_t s;
    ck_assert_int_eq(cio_scope_enter(&s, INFINITY, 0), 0);
    cio_scope_cancel(&s);
    struct addrinfo *res = NOT_SET;
    ck_assert_int_eq(cio_getaddrinfo("localhost", "80", NULL, &res), -ECANCELED);
    ck_assert_ptr_null(res);
    ck_assert_int_eq(cio_getaddrinfo("127.0.0.1", "80", NULL, &res), -ECANCELED);
    struct sockaddr_in a = v4_addr("127.0.0.1", 80);
    char host[64];
    ck_assert_int_eq(cio_getnameinfo((struct sockaddr *)&a, sizeof a, host, sizeof host, NULL,
                                     0, NI_NUMERICHOST),
                     -ECANCELED);
    ck_assert_int_eq(cio_scope_exit(&s), -ECANCELED);
    return 0;
}

START_TEST(dns_precancelled)
{
    run_task(main_precancelled, NULL);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Argument errors and error codes                                            */
/* ------------------------------------------------------------------------ */

START_TEST(dns_eperm_outside_task)
{
    struct addrinfo *res = NOT_SET;
    ck_assert_int_eq(cio_getaddrinfo("localhost", "80", NULL, &res), -EPERM);
    ck_assert_ptr_null(res);
    struct sockaddr_in a = v4_addr("127.0.0.1", 80);
    char host[64];
    ck_assert_int_eq(cio_getnameinfo((struct sockaddr *)&a, sizeof a, host, sizeof host, NULL,
                                     0, NI_NUMERICHOST),
                     -EPERM);
    cio_freeaddrinfo(NULL); /* a no-op */
}
END_TEST

static int main_einval(void *arg, void **result)
{
    (void)arg;
    (void)result;
    struct addrinfo *res = NOT_SET;
    ck_assert_int_eq(cio_getaddrinfo("localhost", "80", NULL, NULL), -EINVAL);
    ck_assert_int_eq(cio_getaddrinfo(NULL, NULL, NULL, &res), -EINVAL);
    ck_assert_ptr_null(res);
    struct sockaddr_in a = v4_addr("127.0.0.1", 80);
    char host[64], serv[16];
    ck_assert_int_eq(cio_getnameinfo(NULL, sizeof a, host, sizeof host, NULL, 0, 0), -EINVAL);
    ck_assert_int_eq(cio_getnameinfo((struct sockaddr *)&a, 0, host, sizeof host, NULL, 0, 0),
                     -EINVAL);
    ck_assert_int_eq(cio_getnameinfo((struct sockaddr *)&a, 4096, host, sizeof host, NULL, 0, 0),
                     -EINVAL);
    ck_assert_int_eq(cio_getnameinfo((struct sockaddr *)&a, sizeof a, NULL, 0, NULL, 0, 0),
                     -EINVAL);
    ck_assert_int_eq(cio_getnameinfo((struct sockaddr *)&a, sizeof a, host, 0, serv, 0, 0),
                     -EINVAL);
    /* Too short to hold even the family. */
    ck_assert_int_eq(cio_getnameinfo((struct sockaddr *)&a, 1, host, sizeof host, NULL, 0, 0),
                     -EINVAL);
    /* An output length past socklen_t is clamped, not wrapped (to 0, which
     * would skip the host and return success with host untouched). */
    if (sizeof(size_t) > sizeof(socklen_t)) {
        memset(host, 'x', sizeof host);
        size_t huge = (size_t)UINT32_MAX + 1;
        ck_assert_int_eq(cio_getnameinfo((struct sockaddr *)&a, sizeof a, host, huge, NULL, 0,
                                         NI_NUMERICHOST),
                         0);
        ck_assert_str_eq(host, "127.0.0.1");
    }
    /* Bad hints are getaddrinfo's own errors. */
    struct addrinfo h = stream_hints(12345, 0);
    ck_assert_int_eq(cio_getaddrinfo("127.0.0.1", "80", &h, &res), CIO_EAI(EAI_FAMILY));
    ck_assert_ptr_null(res);
    return 0;
}

START_TEST(dns_einval)
{
    run_task(main_einval, NULL);
}
END_TEST

START_TEST(dns_error_strings)
{
    static const struct {
        int code;
        const char *name;
    } eai[] = {
        {EAI_NONAME, "EAI_NONAME"},     {EAI_AGAIN, "EAI_AGAIN"},
        {EAI_FAIL, "EAI_FAIL"},         {EAI_FAMILY, "EAI_FAMILY"},
        {EAI_SOCKTYPE, "EAI_SOCKTYPE"}, {EAI_SERVICE, "EAI_SERVICE"},
        {EAI_MEMORY, "EAI_MEMORY"},     {EAI_BADFLAGS, "EAI_BADFLAGS"},
        {EAI_OVERFLOW, "EAI_OVERFLOW"},
    };
    for (size_t i = 0; i < sizeof eai / sizeof eai[0]; i++) {
        int rc = CIO_EAI(eai[i].code);
        ck_assert_int_lt(rc, CIO_EAI_BASE);
        ck_assert_str_eq(cio_err_name(rc), eai[i].name);
        ck_assert_str_eq(cio_strerror(rc), gai_strerror(eai[i].code));
        ck_assert_str_ne(cio_strerror(rc), "unknown error");
        ck_assert_ptr_eq(cio_strerror(rc), cio_strerror(rc)); /* static */
    }
    /* Codes near the base that are no EAI code, and the base itself. */
    ck_assert_str_eq(cio_err_name(CIO_EAI(-999)), "UNKNOWN");
    ck_assert_str_eq(cio_strerror(CIO_EAI(-999)), "unknown error");
    ck_assert_str_eq(cio_err_name(CIO_EAI_BASE), "UNKNOWN");
    ck_assert_str_eq(cio_strerror(CIO_EAI_BASE), "unknown error");
    /* Ordinary codes are unchanged. */
    ck_assert_str_eq(cio_err_name(-ECANCELED), "ECANCELED");
}
END_TEST

static Suite *dns_suite(void)
{
    Suite *s = suite_create("dns");
    TCase *tc = add_tcase(s, "getaddrinfo", TEST_TIMEOUT);
    tcase_add_test(tc, dns_localhost);
    tcase_add_test(tc, dns_numeric);
    tcase_add_test(tc, dns_invalid_name);
    tcase_add_test(tc, dns_many_concurrent);

    tc = add_tcase(s, "getnameinfo", TEST_TIMEOUT);
    tcase_add_test(tc, dns_getnameinfo);

    tc = add_tcase(s, "cancel", TEST_TIMEOUT);
    tcase_add_loop_test(tc, dns_cancel_in_progress, 0, 2);
    tcase_add_test(tc, dns_cancel_queued);
    tcase_add_test(tc, dns_abandon_at_close);
    tcase_add_test(tc, dns_wait_for);
    tcase_add_test(tc, dns_precancelled);

    tc = add_tcase(s, "errors", TEST_TIMEOUT);
    tcase_add_test(tc, dns_eperm_outside_task);
    tcase_add_test(tc, dns_einval);
    tcase_add_test(tc, dns_error_strings);
    return s;
}

CIO_TEST_MAIN(dns_suite)
