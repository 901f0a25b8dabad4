/*
 * Seed 002, the first asyncio program:
 *
 *     async def main():
 *         print('Hello')
 *         await asyncio.sleep(1)
 *         print('...World!')
 *
 *     asyncio.run(main())
 *
 * In cio, main() is an ordinary C function run as a task; cio_sleep() is an
 * await point and needs no "async"/"await" keywords around it.
 */
#include "example.h"

static int main_task(void *arg, void **result)
{
    (void)arg;
    (void)result;
    puts("Hello");
    CHECK(cio_sleep(1)); /* await asyncio.sleep(1) */
    puts("...World!");
    return 0;
}

int main(void)
{
    CHECK(cio_run(main_task, NULL)); /* asyncio.run(main()) */
    return 0;
}
