/*
 * The message of the socket ping-pong benchmarks (bench_sockpp and its
 * threads baseline): round i carries i in its first 8 bytes and the byte
 * (i + k) at offset k; the ponger sends back its bitwise complement. Both
 * sides check every message, so a benchmark cannot silently do nothing.
 */
#ifndef SOCKPP_MSG_H
#define SOCKPP_MSG_H

#include <stdint.h>
#include <string.h>

#define MSG 64

static void fill(unsigned char *m, uint64_t i)
{
    memcpy(m, &i, sizeof i);
    for (int k = 8; k < MSG; k++)
        m[k] = (unsigned char)(i + (uint64_t)k);
}

/* True when m is round i's message, complemented if `inv`. */
static int check(const unsigned char *m, uint64_t i, int inv)
{
    unsigned char want[MSG];
    fill(want, i);
    unsigned char x = inv ? 0xff : 0;
    unsigned char diff = 0;
    for (int k = 0; k < MSG; k++)
        diff |= (unsigned char)(m[k] ^ want[k] ^ x);
    return diff == 0;
}

#endif /* SOCKPP_MSG_H */
