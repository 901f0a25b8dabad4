/*
 * Seed 004: Judit Polgár's simultaneous exhibition (Miguel Grinberg's
 * PyCon 2017 example of what asynchronous I/O buys).
 *
 *   24 opponents; Judit makes each move in 5 s, an opponent in 55 s; a game
 *   lasts 30 move pairs.
 *   Synchronous: Judit plays one game until it ends, then the next one:
 *     (55 + 5) * 30 = 1800 s per game, 24 * 1800 s = 12 hours.
 *   Asynchronous: Judit moves at one board, leaves the opponent thinking and
 *     walks to the next board: one round of 24 boards takes 24 * 5 = 120 s,
 *     which is longer than an opponent needs to answer, so the exhibition
 *     takes about 30 * 120 = 3600 s = 1 hour.
 *
 * In cio each board is a task. There is one Judit, so her moves are
 * serialised by a lock (cio_lock_t, FIFO: the boards are served in the order
 * their opponents finished thinking), while the opponents think
 * concurrently (cio_sleep). The synchronous version is one task playing the
 * games one after the other.
 *
 * Time runs faster than in the story: one story second lasts --scale real
 * seconds (default 1/10000, so the 12 hours run in about 4 s). Each task
 * keeps its story clock and sleeps until absolute deadlines derived from
 * it, so that timer latency does not accumulate over the 1,440 moves.
 *
 * Usage: chess [--scale S] [--boards N] [--pairs N]
 */
#include "example.h"

#include <string.h>

#define JUDIT_MOVE 5.0     /* story seconds */
#define OPPONENT_MOVE 55.0

static double scale = 1e-4;
static int boards = 24, pairs = 30;
static int64_t start_ns; /* loop time at story time 0 */

/* Sleeps until story time `t` (seconds since the start of the exhibition). */
static int sleep_until_story(double t)
{
    return cio_sleep_until_ns(start_ns + (int64_t)(t * scale * 1e9));
}

/* ------------------------------------------------------------------------ */

static int synchronous(void *arg, void **result)
{
    (void)arg;
    (void)result;
    double t = 0;
    for (int b = 0; b < boards; b++) {
        for (int m = 0; m < pairs; m++) {
            t += JUDIT_MOVE;    /* Judit moves... */
            CHECK(sleep_until_story(t));
            t += OPPONENT_MOVE; /* ...and waits at this board for the answer */
            CHECK(sleep_until_story(t));
        }
        if (b == 0 || b == boards - 1)
            printf("  board %2d: game over at %6.0f s (%4.1f h)\n", b + 1, t, t / 3600);
        else if (b == 1)
            printf("  ...\n");
    }
    return 0;
}

/* ------------------------------------------------------------------------ */

static cio_lock_t judit = CIO_LOCK_INIT;
static double judit_free; /* story time at which Judit ends her last move */
static double *finished;  /* story time each game ended */

static int board(void *arg, void **result)
{
    (void)result;
    int b = (int)(intptr_t)arg;
    double t = 0; /* story time at which this board waits for Judit */
    for (int m = 0; m < pairs; m++) {
        int rc = cio_lock_acquire(&judit); /* Judit comes to this board */
        if (rc < 0)
            return rc;
        double move_start = t > judit_free ? t : judit_free;
        t = move_start + JUDIT_MOVE;
        rc = sleep_until_story(t);
        judit_free = t;
        cio_lock_release(&judit); /* ...and walks on to the next board */
        if (rc < 0)
            return rc;
        t += OPPONENT_MOVE; /* meanwhile this opponent thinks */
        if ((rc = sleep_until_story(t)) < 0)
            return rc;
    }
    finished[b] = t;
    return 0;
}

static int asynchronous(void *arg, void **result)
{
    (void)arg;
    (void)result;
    cio_task_t **t = calloc((size_t)boards, sizeof *t);
    finished = calloc((size_t)boards, sizeof *finished);
    EXPECT(t && finished);
    judit_free = 0;
    for (int b = 0; b < boards; b++)
        CHECK(cio_spawn(&t[b], board, (void *)(intptr_t)b));
    CHECK(cio_gather(t, (size_t)boards, NULL, NULL, 0));
    for (int b = 0; b < boards; b++) {
        cio_future_release(t[b]);
        if (b == 0 || b == boards - 1)
            printf("  board %2d: game over at %6.0f s (%4.2f h)\n", b + 1, finished[b],
                   finished[b] / 3600);
        else if (b == 1)
            printf("  ...\n");
    }
    free(t);
    free(finished);
    return 0;
}

/* ------------------------------------------------------------------------ */

/* Runs one version; returns the exhibition's length in story seconds. */
static double exhibition(cio_task_fn fn, const char *title)
{
    printf("%s\n", title);
    cio_runner_t *r;
    CHECK(cio_runner_new(&r, NULL));
    cio_loop_t *loop = cio_runner_get_loop(r);
    start_ns = cio_loop_time_ns(loop);
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    CHECK(cio_runner_run(r, fn, NULL, NULL));
    clock_gettime(CLOCK_MONOTONIC, &b);
    double real = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
    CHECK(cio_runner_close(r));
    double story = real / scale;
    printf("  the exhibition took %.0f s = %.1f hours (ran in %.2f s)\n", story,
           story / 3600, real);
    return story;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i += 2) { /* option-value pairs */
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (v && !strcmp(a, "--scale"))
            scale = atof(v);
        else if (v && !strcmp(a, "--boards"))
            boards = atoi(v);
        else if (v && !strcmp(a, "--pairs"))
            pairs = atoi(v);
        else {
            fprintf(stderr, "usage: %s [--scale S] [--boards N] [--pairs N]\n", argv[0]);
            return 2;
        }
    }
    if (!(scale > 0) || boards < 1 || pairs < 1) {
        fprintf(stderr, "%s: --scale, --boards and --pairs must be positive\n", argv[0]);
        return 2;
    }
    printf("Judit Polgar's simultaneous exhibition: %d boards, %d move pairs,\n"
           "Judit %.0f s per move, each opponent %.0f s per move "
           "(1 story second = %g s)\n\n",
           boards, pairs, JUDIT_MOVE, OPPONENT_MOVE, scale);
    double sync = exhibition(synchronous, "Synchronous: one game after the other");
    double async = exhibition(asynchronous, "Asynchronous: Judit moves from board to board");
    printf("\nSynchronous %.1f h, asynchronous %.1f h: %.1f times shorter%s.\n",
           sync / 3600, async / 3600, sync / async,
           boards == 24 && pairs == 30 ? " (the story says 12 h and 1 h)" : "");
    return 0;
}
