/*
 * Layer 10, threads: the thread pool (pool_thread.c) and
 * run_coroutine_threadsafe (threadsafe.c). What the layers above need of
 * them beyond the public API: the two steps of cio_loop_shutdown (runner.c)
 * that asyncio.run's shutdown_default_executor and its refusal of late
 * submissions correspond to.
 */
#ifndef CIO_POOL_H
#define CIO_POOL_H

#include "waitq.h"

/*
 * While cio_loop_shutdown runs (refuse true ... false, on the loop's
 * thread), submissions delivered to loop are not started: their cfutures
 * end with -ESHUTDOWN (threadsafe.c).
 */
void cio__threadsafe_refuse(cio_loop_t *loop, bool refuse);

/*
 * Shuts the loop's default pool down while running the loop (each
 * iteration followed by each(loop), which cancels the tasks spawned
 * meanwhile): queued jobs still run, results are delivered, then the
 * threads, which have ended, are joined. The pool stays shut down: later
 * cio_to_thread calls get -ESHUTDOWN (pool_thread.c).
 */
void cio__pool_drain_default(cio_loop_t *loop, void (*each)(cio_loop_t *loop));

#endif /* CIO_POOL_H */
