/*
 * Layer 12, the operating system: signals (signal.c), files (file.c),
 * subprocesses (process.c) and the process pool (pool_process.c). They build
 * on the operation layer (io.h) for every wait, on the thread pool where a
 * system call can only block (files on epoll), and on streams (net.h) for
 * subprocess pipes.
 */
#ifndef CIO_OS_H
#define CIO_OS_H

#include "net.h"

/* ------------------------------------------------------------------------ */
/* Signals (signal.c)                                                        */
/* ------------------------------------------------------------------------ */

/*
 * cio_run's Ctrl-C (runner.c), as asyncio.Runner.run handles SIGINT: a
 * process-wide handler that the main thread installs only while SIGINT has
 * its default disposition. The first SIGINT adds one to cio__sigint_hits
 * and wakes the runner's loop through its wake-up eventfd; the runner, which
 * reads the count after each loop iteration, cancels the main task. A second
 * SIGINT, or one after the main task has finished, restores SIG_DFL and
 * raises SIGINT from inside the handler: the process ends at once.
 */
extern atomic_uint cio__sigint_hits;

/* Installs the handler for loop's run: true when installed, false when this
 * is not the main thread, SIGINT's disposition is not the default, or
 * another run holds it (nothing changed then). Resets the count. */
bool cio__sigint_install(cio_loop_t *loop);
/* The main task has finished: a SIGINT from now on ends the process. */
void cio__sigint_main_done(void);
/* Restores SIGINT's disposition from before the install, if the handler is
 * still the one installed (someone who replaced it keeps theirs, as Python's
 * Runner does), and waits until no call of the handler is running, so that
 * the loop's eventfd may be closed afterwards. */
void cio__sigint_uninstall(void);
/* Ends the process with SIGINT as an uncaught KeyboardInterrupt ends
 * Python: SIG_DFL, SIGINT unblocked in this thread, raise. Returns only if
 * the signal did not kill the process. */
void cio__sigint_reraise(void);

/* ------------------------------------------------------------------------ */
/* Files (file.c)                                                            */
/* ------------------------------------------------------------------------ */

/* ------------------------------------------------------------------------ */
/* Subprocesses (process.c)                                                  */
/* ------------------------------------------------------------------------ */

/* Set (by tests) before a spawn to take the path of kernels without
 * pidfd_open: a thread per child blocked in waitid, posting to the loop. */
extern int cio__process_no_pidfd;
/* Set (by tests) to reap with waitid(P_PID) although a pidfd is held, as on
 * Linux 5.3 (pidfd_open but no waitid(P_PIDFD)). */
extern int cio__process_no_pidfd_wait;

/* ------------------------------------------------------------------------ */
/* Process pool (pool_process.c)                                             */
/* ------------------------------------------------------------------------ */

/* The process pool has no internal interface: it is reached through cio.h
 * only, and reaches the loop through fd watchers (cio__fd_set) and its close
 * and fork hooks (cio__loop_hook, layer 12). */

#endif /* CIO_OS_H */
