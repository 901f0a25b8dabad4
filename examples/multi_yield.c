/*
 * Seed 003, generators:
 *
 *     >>> def multi_yield():
 *     ...     yield_str = "This will print the first string"
 *     ...     yield yield_str
 *     ...     yield_str = "This will print the second string"
 *     ...     yield yield_str
 *     ...
 *     >>> multi_obj = multi_yield()
 *     >>> print(next(multi_obj))
 *     This will print the first string
 *     >>> print(next(multi_obj))
 *     This will print the second string
 *     >>> print(next(multi_obj))
 *     Traceback (most recent call last):
 *       ...
 *     StopIteration
 *
 *     def infinite_sequence():
 *         num = 0
 *         while True:
 *             yield num
 *             num += 1
 *
 * cio_gen_next() returns 1 with the yielded value, and 0 (StopIteration)
 * once the body has returned; the generator is then in the state
 * inspect.getgeneratorstate() calls GEN_CLOSED. The infinite sequence is
 * consumed for its first N values (default 10), then closed: its pending
 * yield returns -ECANCELED and it returns.
 *
 * Usage: multi_yield [N]
 */
#include "example.h"

#include <stdint.h>

static int multi_yield(cio_gen_t *g, void *arg)
{
    (void)arg;
    const char *yield_str = "This will print the first string";
    int rc = cio_gen_yield(g, (void *)yield_str, NULL);
    if (rc < 0)
        return rc;
    yield_str = "This will print the second string";
    return cio_gen_yield(g, (void *)yield_str, NULL);
}

static int infinite_sequence(cio_gen_t *g, void *arg)
{
    (void)arg;
    for (intptr_t num = 0;; num++) {
        int rc = cio_gen_yield(g, (void *)num, NULL);
        if (rc < 0)
            return rc; /* closed */
    }
}

static void show_multi_yield(void)
{
    cio_gen_t *multi_obj;
    CHECK(cio_gen_new(&multi_obj, multi_yield, NULL));
    printf("state: %s\n", cio_gen_state_name(cio_gen_get_state(multi_obj)));
    void *v = NULL;
    for (;;) {
        int rc = cio_gen_next(multi_obj, &v); /* print(next(multi_obj)) */
        CHECK(rc);
        if (rc == 0)
            break;
        puts(v);
        printf("state: %s\n", cio_gen_state_name(cio_gen_get_state(multi_obj)));
    }
    printf("StopIteration (cio_gen_next returned 0), state: %s\n",
           cio_gen_state_name(cio_gen_get_state(multi_obj)));
    CHECK(cio_gen_free(multi_obj));
}

static void show_infinite_sequence(long n)
{
    cio_gen_t *g;
    CHECK(cio_gen_new(&g, infinite_sequence, NULL));
    printf("infinite_sequence, first %ld values:", n);
    for (long i = 0; i < n; i++) {
        void *v = NULL;
        EXPECT_RC(cio_gen_next(g, &v), 1);
        printf(" %ld", (long)(intptr_t)v);
    }
    putchar('\n');
    CHECK(cio_gen_close(g));
    printf("closed, state: %s\n", cio_gen_state_name(cio_gen_get_state(g)));
    CHECK(cio_gen_free(g));
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? strtol(argv[1], NULL, 10) : 10;
    if (n < 0) {
        fprintf(stderr, "usage: %s [N >= 0]\n", argv[0]);
        return 2;
    }
    show_multi_yield();
    show_infinite_sequence(n);
    return 0;
}
