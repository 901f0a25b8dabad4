/*
 * Subprocess round trip: spawn /bin/true, wait for it and reap it, N times
 * one after the other (BENCH.md style: one RESULT line). Its Python
 * counterpart is bench/subprocess_asyncio.py (asyncio
 * create_subprocess_exec + wait); bench/os.sh runs both and prints the
 * ratio of the medians.
 *
 *   bench_subprocess [N]        (default 1000; CIO_BACKEND picks the backend)
 *
 * RESULT bench=subprocess n=N total_ms=... ms_per_child=...
 * RESULT bench=subprocess_raw n=N total_ms=... ms_per_child=...
 *
 * The second line is the floor: plain posix_spawn + waitpid with no loop,
 * what the kernel's fork/exec/exit of /bin/true costs on this machine.
 */
#include "bench_common.h"

#include <cio.h>
#include <errno.h>
#include <spawn.h>
#include <sys/wait.h>

extern char **environ;

static int n_children;
static int64_t elapsed_ns;

/* Spawns, waits for and reaps /bin/true n_children times, after one
 * warm-up child (the loop's hooks and fd table are made once). */
static int main_task(void *arg, void **result)
{
    (void)arg;
    (void)result;
    int64_t t0 = 0;
    for (int i = -1; i < n_children; i++) {
        if (i == 0)
            t0 = bench_now_ns();
        cio_process_t *p;
        int code = -1;
        int rc = cio_process_exec(&p, "/bin/true", NULL, NULL);
        if (rc == 0)
            rc = cio_process_wait(p, &code);
        cio_process_free(p);
        if (rc < 0 || code != 0) {
            fprintf(stderr, "bench_subprocess: child %d: %s, code %d\n", i, cio_err_name(rc),
                    code);
            return rc < 0 ? rc : -EIO;
        }
    }
    elapsed_ns = bench_now_ns() - t0;
    return 0;
}

/* The floor: posix_spawn and waitpid, nothing else. */
static int64_t raw_ns(int n)
{
    char *const argv[] = {"/bin/true", NULL};
    int64_t t0 = 0;
    for (int i = -1; i < n; i++) {
        if (i == 0)
            t0 = bench_now_ns();
        pid_t pid;
        int st;
        if (posix_spawn(&pid, "/bin/true", NULL, NULL, argv, environ) ||
            waitpid(pid, &st, 0) != pid || st != 0) {
            fprintf(stderr, "bench_subprocess: raw child %d failed\n", i);
            exit(1);
        }
    }
    return bench_now_ns() - t0;
}

int main(int argc, char **argv)
{
    n_children = argc > 1 ? atoi(argv[1]) : 1000;
    if (n_children <= 0) {
        fprintf(stderr, "usage: bench_subprocess [N > 0]\n");
        return 2;
    }
    int rc = cio_run(main_task, NULL);
    if (rc) {
        fprintf(stderr, "bench_subprocess: %s\n", cio_err_name(rc));
        return 1;
    }
    printf("RESULT bench=subprocess n=%d total_ms=%.1f ms_per_child=%.4f\n", n_children,
           bench_ms(elapsed_ns), bench_ms(elapsed_ns) / n_children);
    int64_t raw = raw_ns(n_children);
    printf("RESULT bench=subprocess_raw n=%d total_ms=%.1f ms_per_child=%.4f\n", n_children,
           bench_ms(raw), bench_ms(raw) / n_children);
    return 0;
}
