/*
 * Seeds 000 and 001: coroutines built from generators. The consumer is a
 * generator; the producer primes it with send(None), hands it each item
 * with send(n), gets its answer back from the same call, and ends with
 * close(). One thread, no lock, no event loop: the two functions just take
 * turns.
 *
 * Seed 000 (mode "000", the default):
 *
 *     def consumer():
 *         print("[CONSUMER] start")
 *         r = 'start'
 *         while True:
 *             n = yield r
 *             if not n:
 *                 print("n is empty")
 *                 continue
 *             print(f"[CONSUMER] Consumer is consuming {n}")
 *             r = "200 ok"
 *
 *     def producer(c):
 *         start_value = c.send(None)
 *         print(start_value)
 *         n = 0
 *         while n < 3:
 *             n += 1
 *             print(f"[PRODUCER] Producer is producing {n}")
 *             r = c.send(n)
 *             print(f'[PRODUCER] Consumer return: {r}')
 *         c.close()
 *
 * Seed 001 (mode "001"): the same with five items, a consumer that returns
 * when it receives nothing, and different messages.
 *
 * In C, `n = yield r` is cio_gen_yield(g, r, &n), c.send(x) is
 * cio_gen_send(c, x, &r) (1 = the consumer yielded r), and close() makes
 * the pending yield return -ECANCELED (Python's GeneratorExit), on which the
 * consumer returns. Items travel as integers in the void * slot.
 *
 * Usage: producer_consumer [000|001]
 */
#include "example.h"

#include <stdint.h>
#include <string.h>

/* ------------------------------------------------------------------ 000 */

static int consumer_000(cio_gen_t *g, void *arg)
{
    (void)arg;
    puts("[CONSUMER] start");
    const char *r = "start";
    for (;;) {
        void *sent = NULL;
        int rc = cio_gen_yield(g, (void *)r, &sent); /* n = yield r */
        if (rc < 0)
            return rc; /* closed (GeneratorExit) */
        intptr_t n = (intptr_t)sent;
        if (!n) {
            puts("n is empty");
            continue;
        }
        printf("[CONSUMER] Consumer is consuming %ld\n", (long)n);
        r = "200 ok";
    }
}

static void producer_000(cio_gen_t *c)
{
    void *start_value = NULL;
    EXPECT_RC(cio_gen_send(c, NULL, &start_value), 1); /* c.send(None) */
    puts(start_value);
    intptr_t n = 0;
    while (n < 3) {
        n += 1;
        printf("[PRODUCER] Producer is producing %ld\n", (long)n);
        void *r = NULL;
        EXPECT_RC(cio_gen_send(c, (void *)n, &r), 1);
        printf("[PRODUCER] Consumer return: %s\n", (const char *)r);
    }
    CHECK(cio_gen_close(c));
}

/* ------------------------------------------------------------------ 001 */

static int consumer_001(cio_gen_t *g, void *arg)
{
    (void)arg;
    const char *r = ""; /* empty on the first use */
    for (;;) {
        void *sent = NULL;
        int rc = cio_gen_yield(g, (void *)r, &sent);
        if (rc < 0)
            return rc;
        intptr_t n = (intptr_t)sent;
        if (!n)
            return 0;
        printf("[CONSUMER] Consuming %ld...\n", (long)n);
        r = "200 OK";
    }
}

static void produce_001(cio_gen_t *c)
{
    EXPECT_RC(cio_gen_send(c, NULL, NULL), 1); /* starts the consumer */
    intptr_t n = 0;
    while (n < 5) {
        n = n + 1;
        printf("[PRODUCER] Producing %ld...\n", (long)n);
        void *r = NULL;
        EXPECT_RC(cio_gen_send(c, (void *)n, &r), 1);
        printf("[PRODUCER] Consumer return: %s\n", (const char *)r);
    }
    CHECK(cio_gen_close(c));
}

/* ----------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "000";
    bool seed000 = strcmp(mode, "000") == 0;
    if (!seed000 && strcmp(mode, "001") != 0) {
        fprintf(stderr, "usage: %s [000|001]\n", argv[0]);
        return 2;
    }
    cio_gen_t *c;
    CHECK(cio_gen_new(&c, seed000 ? consumer_000 : consumer_001, NULL)); /* c = consumer() */
    if (seed000)
        producer_000(c);
    else
        produce_001(c);
    EXPECT(cio_gen_get_state(c) == CIO_GEN_CLOSED);
    CHECK(cio_gen_free(c));
    return 0;
}
