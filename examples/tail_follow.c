/*
 * A log follower: seed 000's tail (section 4.3), made live. `tail -F` in a
 * few lines of cio: cio_file_follow is an async generator that yields every
 * line appended to a file, survives the file being truncated or rotated, and
 * stops when the task that drives it is cancelled.
 *
 * Usage: tail_follow FILE        follow FILE until Ctrl-C
 *        tail_follow --selftest  follow a temporary log while a writer task
 *                                appends to it, truncates it and rotates it;
 *                                print what was followed and exit
 */
#include "example.h"

#include <fcntl.h>
#include <stdbool.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct follow {
    const char *path;
    int lines;
    cio_event_t seen; /* set after each line */
} follow_t;

/* for line in follow(path): print(line, end="") */
static int follower(void *arg, void **result)
{
    (void)result;
    follow_t *fo = arg;
    cio_follow_opts_t opts = {.poll_interval = 0.5};
    cio_gen_t *g;
    CHECK(cio_file_follow(&g, fo->path, &opts));
    void *v;
    int rc;
    while ((rc = cio_gen_next(g, &v)) == 1) {
        const cio_file_chunk_t *line = v;
        bool nl = line->len && line->data[line->len - 1] == '\n';
        printf("%5d | %.*s%s", ++fo->lines, (int)line->len, line->data, nl ? "" : "\n");
        fflush(stdout);
        cio_event_set(&fo->seen);
    }
    cio_gen_free(g); /* closes the file and the inotify descriptor */
    return rc == -ECANCELED ? 0 : rc;
}

/* ------------------------------------------------------------------------ */
/* --selftest: a writer task plays the logging program                       */
/* ------------------------------------------------------------------------ */

/* Appends text to the log through the file API (O_APPEND, as loggers do). */
static void log_append(const char *path, const char *text)
{
    cio_file_t *f;
    CHECK(cio_file_open(&f, path, O_WRONLY | O_CREAT | O_APPEND, 0644));
    CHECK(cio_file_write(f, text, strlen(text), NULL));
    CHECK(cio_file_close(f));
}

/* Waits until the follower has printed n lines in all. */
static void wait_seen(follow_t *fo, int n)
{
    while (fo->lines < n) {
        cio_event_clear(&fo->seen);
        CHECK(cio_event_wait(&fo->seen));
    }
}

static int selftest(void *arg, void **result)
{
    (void)arg;
    (void)result;
    char dir[] = "/tmp/cio_tail_XXXXXX";
    EXPECT(mkdtemp(dir) != NULL);
    char path[64], rotated[64];
    snprintf(path, sizeof path, "%s/app.log", dir);
    snprintf(rotated, sizeof rotated, "%s/app.log.1", dir);
    log_append(path, "this line was there before: not followed\n");

    follow_t fo = {.path = path};
    cio_event_init(&fo.seen);
    cio_task_t *t;
    CHECK(cio_spawn_named(&t, "follower", follower, &fo));
    CHECK(cio_sleep(0.1)); /* the follower is at the end of the log */

    printf("writer: two lines, the second in two pieces\n");
    log_append(path, "GET /index.html 200\n");
    log_append(path, "GET /missing ");
    CHECK(cio_sleep(0.05));
    log_append(path, "404\n");
    wait_seen(&fo, 2);

    printf("writer: truncate the log (logrotate's copytruncate)\n");
    EXPECT(truncate(path, 0) == 0);
    CHECK(cio_sleep(0.1));
    log_append(path, "POST /login 302\n");
    wait_seen(&fo, 3);

    printf("writer: rotate (rename to app.log.1, then a new app.log)\n");
    EXPECT(rename(path, rotated) == 0);
    log_append(rotated, "GET /late 200 (still written to the old file)\n");
    log_append(path, "GET /fresh 200 (the new file)\n");
    wait_seen(&fo, 5);

    printf("writer: done, cancel the follower\n");
    cio_task_cancel(t);
    CHECK(cio_await(t, NULL));
    cio_future_release(t);
    printf("followed %d lines\n", fo.lines);
    EXPECT(fo.lines == 5);
    unlink(path);
    unlink(rotated);
    rmdir(dir);
    return 0;
}

static int follow_main(void *arg, void **result)
{
    follow_t *fo = arg;
    cio_event_init(&fo->seen);
    return follower(fo, result); /* until Ctrl-C ends the process */
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s FILE | --selftest\n", argv[0]);
        return 2;
    }
    int rc;
    if (strcmp(argv[1], "--selftest") == 0) {
        rc = cio_run(selftest, NULL);
    } else {
        follow_t fo = {.path = argv[1]};
        rc = cio_run(follow_main, &fo);
    }
    if (rc < 0) {
        fprintf(stderr, "%s: %s: %s\n", argv[0], argv[1], cio_strerror(rc));
        return 1;
    }
    return 0;
}
