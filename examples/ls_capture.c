/*
 * Controlling subprocesses (seed 002, "控制子进程"): runs `ls -l`, captures
 * what it prints and its return code, then feeds a shell pipeline through
 * communicate (stdin in, stdout and stderr out, with no deadlock however
 * much either side writes).
 *
 *   ./ls_capture [DIR]        (default: the current directory)
 *
 * The Python it mirrors:
 *
 *   async def run(cmd):
 *       proc = await asyncio.create_subprocess_exec(
 *           'ls', '-l', stdout=asyncio.subprocess.PIPE)
 *       stdout, _ = await proc.communicate()
 *       print(f'[ls -l exited with {proc.returncode}]')
 *       print(stdout.decode())
 *
 *       proc = await asyncio.create_subprocess_shell(
 *           'sort | uniq -c | sort -rn; echo done >&2',
 *           stdin=PIPE, stdout=PIPE, stderr=PIPE)
 *       out, err = await proc.communicate(b'pear\napple\npear\nfig\npear\napple\n')
 *       print(f'[exited with {proc.returncode}]')
 *       print(out.decode(), err.decode())
 *
 *   asyncio.run(run())
 */
#include "example.h"

#include <string.h>

/* `ls -l DIR`, its output read from the stdout stream line by line. */
static int list_dir(const char *dir)
{
    char *const argv[] = {"ls", "-l", (char *)dir, NULL};
    cio_process_opts_t o = {.stdout_mode = CIO_PROC_PIPE};
    cio_process_t *p;
    CHECK(cio_process_exec(&p, "ls", argv, &o));
    printf("[ls -l %s: pid %d]\n", dir, cio_process_pid(p));
    char line[4096];
    ssize_t n;
    int lines = 0;
    while ((n = cio_stream_readline(cio_process_stdout(p), line, sizeof line)) > 0) {
        printf("  %.*s", (int)n, line);
        lines++;
    }
    CHECK((int)n);
    int code;
    CHECK(cio_process_wait(p, &code));
    printf("[ls -l exited with %d after %d line(s)]\n", code, lines);
    cio_process_free(p);
    return code;
}

/* A shell pipeline through communicate: input in, both outputs back. */
static void pipeline(void)
{
    static const char input[] = "pear\napple\npear\nfig\npear\napple\n";
    cio_process_opts_t o = {.stdin_mode = CIO_PROC_PIPE, .stdout_mode = CIO_PROC_PIPE,
                            .stderr_mode = CIO_PROC_PIPE};
    cio_process_t *p;
    CHECK(cio_process_shell(&p, "sort | uniq -c | sort -rn; echo done >&2", &o));
    char *out, *err;
    size_t out_len, err_len;
    CHECK(cio_process_communicate(p, input, strlen(input), &out, &out_len, &err, &err_len));
    int code;
    CHECK(cio_process_returncode(p, &code));
    printf("[sort | uniq -c | sort -rn exited with %d]\n%s", code, out ? out : "");
    printf("[stderr: %s]\n", err ? strtok(err, "\n") : "");
    EXPECT(code == 0 && out && strstr(out, "3 pear") && err && !strcmp(err, "done"));
    free(out);
    free(err);
    cio_process_free(p);
}

static int main_task(void *arg, void **result)
{
    (void)result;
    EXPECT(list_dir(arg) == 0);
    pipeline();

    /* A return code for a signal is negative, as in Python. */
    cio_process_t *p;
    CHECK(cio_process_exec(&p, "sleep", (char *const[]){"sleep", "30", NULL}, NULL));
    CHECK(cio_process_terminate(p));
    int code;
    CHECK(cio_process_wait(p, &code));
    printf("[sleep 30, terminated: return code %d]\n", code);
    EXPECT(code == -15);
    cio_process_free(p);
    return 0;
}

int main(int argc, char **argv)
{
    CHECK(cio_run(main_task, argc > 1 ? argv[1] : "."));
    return 0;
}
