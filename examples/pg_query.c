/*
 * A query tool on cio-pg (issue 9, item 4): runs one SQL statement, with
 * text parameters $1, $2, ..., and prints the result as psql does, as an
 * aligned table with a row count.
 *
 *   pg_query [-d CONNINFO] [-t TIMEOUT] "select ..." [param...]
 *
 *   -d CONNINFO   a libpq connection string or URI; else $CIO_PG_DSN; else
 *                 libpq's defaults and PG* variables (PGHOST, PGPORT, ...)
 *   -t TIMEOUT    seconds for the whole run, connect included (none by
 *                 default); past it the statement is cancelled on the server
 *   --selftest    runs `select pg_sleep(30)` and presses Ctrl-C itself after
 *                 0.5 s: the statement must be cancelled on the server and
 *                 the run end at once (exit 0), as examples/tour.sh wants
 *
 *   $ pg_query "select g as n, repeat('*', g) as bar from generate_series(1, 3) g"
 *    n | bar
 *   ---+-----
 *    1 | *
 *    2 | **
 *    3 | ***
 *   (3 rows)
 *
 *   $ pg_query "select \$1::int + \$2::int as sum" 40 2
 *   $ pg_query "insert into t values (\$1)" hello      # prints INSERT 0 1
 *
 * Values are printed as they are: one holding a newline breaks the
 * alignment (psql folds such values over several lines; this tool keeps
 * to the common case).
 *
 * A server error goes to stderr with its SQLSTATE, message, detail and hint,
 * and the exit status is 1 (2 for a usage error). Ctrl-C cancels the
 * running statement on the server: cio_run turns the first SIGINT into a
 * cancellation of the main task, the await point in cio_pg_query returns
 * -ECANCELED once the server has given the statement up (cio-pg sends
 * PostgreSQL's cancel request and drains the outcome), and the program
 * then ends killed by SIGINT, as any command-line tool does (status 130).
 *
 * Everything runs on one thread, on the loop: the connect (the host name
 * looked up off the loop, the startup and authentication exchanged as
 * non-blocking steps) and the statement are await points of the main task.
 */
#include "example.h"

#include <cio-pg.h>
#include <libpq-fe.h> /* PQftype, PQcmdStatus on the result (a PGresult) */

#include <math.h>
#include <signal.h>
#include <stdbool.h>
#include <string.h>
#include <unistd.h>

typedef struct options {
    const char *conninfo;
    double timeout;
    const char *sql;
    int nparams;
    const char *const *params;
    bool selftest;
} options_t;

/* ------------------------------------------------------------------------ */
/* Printing a result the way psql does                                       */
/* ------------------------------------------------------------------------ */

/* Display width of UTF-8 text: one column per character (code point). */
static size_t text_width(const char *s)
{
    size_t w = 0;
    for (; *s; s++)
        w += ((unsigned char)*s & 0xC0) != 0x80;
    return w;
}

/* psql right-aligns the numeric types and left-aligns the rest. */
static bool is_numeric_type(unsigned oid)
{
    switch (oid) {
    case 20:   /* int8 */
    case 21:   /* int2 */
    case 23:   /* int4 */
    case 26:   /* oid */
    case 700:  /* float4 */
    case 701:  /* float8 */
    case 790:  /* money */
    case 1700: /* numeric */
        return true;
    default:
        return false;
    }
}

static void print_padded(const char *s, size_t width, bool right, bool last)
{
    size_t pad = width - text_width(s);
    if (right)
        printf("%*s%s", (int)pad, "", s);
    else if (last)
        fputs(s, stdout); /* psql leaves no trailing blanks */
    else
        printf("%s%*s", s, (int)pad, "");
}

static void print_table(const cio_pg_result_t *r)
{
    int nf = cio_pg_nfields(r), nt = cio_pg_ntuples(r);
    size_t *width = calloc((size_t)nf, sizeof *width);
    if (!width) {
        fputs("pg_query: out of memory\n", stderr);
        exit(1);
    }
    for (int j = 0; j < nf; j++) {
        width[j] = text_width(cio_pg_fname(r, j));
        for (int i = 0; i < nt; i++) {
            const char *v = cio_pg_value(r, i, j);
            size_t w = v ? text_width(v) : 0;
            if (w > width[j])
                width[j] = w;
        }
    }
    /* The header: names centred over their columns (psql keeps the blank
     * after the last one). A result without columns has only the rule. */
    if (nf) {
        for (int j = 0; j < nf; j++) {
            const char *name = cio_pg_fname(r, j);
            size_t pad = width[j] - text_width(name);
            printf("%s%*s%s%*s", j ? " | " : " ", (int)(pad / 2), "", name,
                   (int)(pad - pad / 2), "");
        }
        puts(" ");
    }
    for (int j = 0; j < nf; j++) {
        fputs(j ? "-+-" : "-", stdout);
        for (size_t k = 0; k < width[j]; k++)
            putchar('-');
    }
    puts(nf ? "-" : "--");
    for (int i = 0; i < nt && nf; i++) {
        for (int j = 0; j < nf; j++) {
            const char *v = cio_pg_value(r, i, j); /* NULL prints as nothing */
            fputs(j ? " | " : " ", stdout);
            print_padded(v ? v : "", width[j], is_numeric_type(PQftype(r, j)), j == nf - 1);
        }
        putchar('\n');
    }
    printf("(%d row%s)\n\n", nt, nt == 1 ? "" : "s");
    free(width);
}

static void print_result(const cio_pg_result_t *r)
{
    if (PQresultStatus(r) == PGRES_TUPLES_OK)
        print_table(r);
    else if (*PQcmdStatus((cio_pg_result_t *)r))
        puts(PQcmdStatus((cio_pg_result_t *)r)); /* INSERT 0 1, CREATE TABLE, ... */
}

/* A failed statement: the server's fields, as psql prints them. */
static void print_error(cio_pg_t *c, int rc)
{
    if (rc == -EREMOTEIO) {
        fprintf(stderr, "pg_query: ERROR %s: %s\n", cio_pg_error_sqlstate(c),
                cio_pg_error_message(c));
        const char *detail = cio_pg_error_field(c, 'D');
        const char *hint = cio_pg_error_field(c, 'H');
        const char *pos = cio_pg_error_field(c, 'P');
        if (detail)
            fprintf(stderr, "DETAIL:  %s\n", detail);
        if (hint)
            fprintf(stderr, "HINT:  %s\n", hint);
        if (pos)
            fprintf(stderr, "POSITION:  %s\n", pos);
    } else if (rc == -ETIMEDOUT) {
        fputs("pg_query: timed out; the statement was cancelled on the server\n", stderr);
    } else if (rc == -ECANCELED) {
        fputs("pg_query: cancelled; the statement was cancelled on the server\n", stderr);
    } else {
        const char *msg = cio_pg_error_message(c);
        fprintf(stderr, "pg_query: %s%s%s\n", cio_strerror(rc), *msg ? ": " : "", msg);
    }
}

/* ------------------------------------------------------------------------ */
/* The run                                                                   */
/* ------------------------------------------------------------------------ */

/* Connects and runs the statement; the caller's scope bounds both. Returns
 * 0, or the failing call's code (already reported). */
static int run(const options_t *o)
{
    cio_pg_t *c;
    int rc = cio_pg_connect(&c, o->conninfo, INFINITY);
    if (rc < 0) {
        if (rc == -ETIMEDOUT || rc == -ECANCELED)
            fprintf(stderr, "pg_query: %s while connecting\n",
                    rc == -ETIMEDOUT ? "timed out" : "cancelled");
        else
            fprintf(stderr, "pg_query: could not connect: %s\n",
                    *cio_pg_connect_error() ? cio_pg_connect_error() : cio_strerror(rc));
        return rc;
    }
    cio_pg_result_t *r;
    int64_t n = cio_pg_query(c, &r, o->sql, o->nparams, o->params);
    if (n < 0) {
        print_error(c, (int)n);
    } else {
        print_result(r);
        cio_pg_result_free(r);
    }
    cio_pg_close(c);
    return n < 0 ? (int)n : 0;
}

/* --selftest: Ctrl-C, as if typed, from a timer callback. */
static void press_ctrl_c(void *arg)
{
    (void)arg;
    fputs("selftest: sending SIGINT\n", stderr);
    kill(getpid(), SIGINT);
}

static int main_task(void *arg, void **result)
{
    (void)result;
    const options_t *o = arg;
    if (o->selftest)
        CHECK(cio_call_later(cio_get_running_loop(), NULL, 0.5, press_ctrl_c, NULL));
    cio_scope_t deadline;
    CHECK(cio_scope_enter(&deadline, o->timeout, 0));
    int rc = run(o);
    cio_scope_exit(&deadline);
    /* -ECANCELED goes on up: cio_run then ends the program by SIGINT, as
     * Ctrl-C ends any tool. Every other failure is exit status 1. */
    return rc;
}

static void usage(void)
{
    fputs("usage: pg_query [-d CONNINFO] [-t TIMEOUT] \"SQL\" [param...]\n"
          "  CONNINFO defaults to $CIO_PG_DSN, then to libpq's PG* variables;\n"
          "  TIMEOUT is in seconds (default: none).\n",
          stderr);
    exit(2);
}

/* --selftest: the run must end by the SIGINT, soon after it. */
static int selftest(options_t *o)
{
    o->sql = "select pg_sleep(30)";
    /* cio_run leaves an ignored SIGINT alone, and a background job of a
     * non-interactive shell starts with SIGINT ignored: the self-test wants
     * the handler whatever started it. */
    signal(SIGINT, SIG_DFL);
    cio_run_opts_t opts = {.sigint = CIO_SIGINT_EINTR};
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc = cio_run_ex(main_task, o, NULL, &opts);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double took = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    if (rc != -EINTR || took > 10) {
        fprintf(stderr, "selftest: the run ended with %s after %.2f s\n", cio_err_name(rc), took);
        return 1;
    }
    printf("selftest: pg_sleep(30) cancelled on the server; the run took %.2f s\n", took);
    return 0;
}

int main(int argc, char **argv)
{
    options_t o = {.conninfo = getenv("CIO_PG_DSN"), .timeout = INFINITY};
    if (!o.conninfo)
        o.conninfo = ""; /* libpq's defaults and the PG* variables */
    if (argc == 2 && strcmp(argv[1], "--selftest") == 0) {
        o.selftest = true;
        return selftest(&o);
    }
    int opt;
    while ((opt = getopt(argc, argv, "d:t:h")) != -1) {
        char *end;
        switch (opt) {
        case 'd':
            o.conninfo = optarg;
            break;
        case 't':
            o.timeout = strtod(optarg, &end);
            if (*optarg == '\0' || *end != '\0' || !(o.timeout > 0)) {
                fprintf(stderr, "pg_query: not a timeout in seconds: %s\n", optarg);
                return 2;
            }
            break;
        default:
            usage();
        }
    }
    if (optind >= argc)
        usage();
    o.sql = argv[optind];
    if (argc - optind - 1 > 65535) {
        fputs("pg_query: at most 65535 parameters\n", stderr);
        return 2;
    }
    o.nparams = argc - optind - 1;
    o.params = (const char *const *)argv + optind + 1;
    int rc = cio_run(main_task, &o);
    return rc == 0 ? 0 : 1;
}
