/*
 * Signals: asyncio's loop.add_signal_handler for cio, and cio_run's Ctrl-C.
 *
 * signalfd would need the signal blocked in every thread of the process,
 * which a library cannot promise (threads it does not know of, libraries
 * that unblock), so cio catches signals the classic way: one process-wide
 * sigaction handler per signal that some loop handles. The handler does
 * only what is async-signal-safe: atomic operations and write(2). For each
 * loop that catches the signal it counts the delivery (per loop and signal),
 * sets the loop's sig_pending flag and, when the flag was clear, writes the
 * loop's own wake-up eventfd (loop->wakefd, the one cio_call_soon_threadsafe
 * writes). Each loop iteration checks the flag with one load, as it checks
 * ts_pending, and calls sig_run through loop->sig_run: no descriptor is
 * watched for signals, so a loop with handlers polls no more than one
 * without. sig_run moves the counts to a caller-owned handle per signal,
 * and the callback runs from the ready list as an ordinary callback, once
 * per delivery.
 *
 * The process-wide state:
 *  - the list of loops with signal state (g_loops), read by handlers on
 *    any thread while loop threads change it: nodes are linked and unlinked
 *    with atomic stores under g_lock, and a node is freed only after it was
 *    unlinked and no handler call is running (g_busy, which every call
 *    raises while it walks the list). The loop core closes loop->wakefd only
 *    after the close hooks ran, and ours frees the node first: a handler
 *    never writes into a closed or reused descriptor;
 *  - per signal, the number of loops that catch it and the disposition
 *    saved when the first one did (under g_lock), restored when the last
 *    one stops.
 * Which signals a loop catches is a bit mask the handler reads atomically.
 *
 * Per loop, a signal's entry lives while it has a callback, a task waits
 * for it (cio_signal_wait), its callback is running or queued; the loop's
 * state lives while it catches anything or has entries. Once it has neither,
 * it is freed.
 *
 * fork(): the child inherits every loop's handlers (dispositions are the
 * process's). Its copy of each loop still holds the parent's wake-up
 * eventfd until cio_loop_fork gives it its own, so at the fork
 * (pthread_atfork) the child's pending counts are dropped (pending signals
 * are not inherited) and each loop's sig_pending is set: the child's
 * handlers then only count, never writing the parent's eventfd. Our fork
 * hook, run by cio_loop_fork after the loop core made the new eventfd,
 * writes it, so the loop takes those deliveries when it runs.
 */
#include "os.h"

#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>

/* Signals 1..64: bit s - 1 of a 64-bit mask. */
#define SIG_MAX 65

_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "signal handlers need lock-free atomic int");
_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2, "signal handlers need lock-free 64-bit atomics");
_Static_assert(ATOMIC_POINTER_LOCK_FREE == 2, "signal handlers need lock-free atomic pointers");

struct sigloop;

/* One signal of one loop. */
typedef struct sigent {
    cio_handle_t run;      /* queued while deliveries wait to run */
    struct sigloop *sl;
    int signo;
    unsigned torun;        /* deliveries moved here, callback not yet run */
    cio_callback_fn cb;    /* NULL: no handler (tasks may wait) */
    void *arg;
    unsigned refs;         /* tasks inside cio_signal_wait */
    uint8_t busy;          /* run_ent is calling out */
    cio_waitq_t waiters;
} sigent;

/* A loop's signal state (loop->sig). */
typedef struct sigloop {
    _Atomic(struct sigloop *) next; /* in g_loops */
    cio_loop_t *loop;
    _Atomic uint64_t want;          /* signals this loop catches */
    _Atomic uint64_t mask;          /* signals with deliveries counted */
    atomic_uint pending[SIG_MAX];   /* deliveries not yet seen by the loop */
    int nents;
    sigent *ent[SIG_MAX];
} sigloop;

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic(sigloop *) g_loops;
static atomic_int g_busy;
static struct {
    unsigned users;        /* loops that catch the signal */
    struct sigaction prev; /* its disposition before the first one */
} g_sig[SIG_MAX];
static bool g_atfork;

static inline uint64_t sig_bit(int s)
{
    return (uint64_t)1 << (s - 1);
}

/*
 * True for the signals a loop may handle: not SIGKILL and SIGSTOP (they
 * cannot be caught), not the signals the C library keeps for its threads
 * (32 and 33 on glibc, below SIGRTMIN), and not the synchronous faults
 * SIGSEGV, SIGBUS, SIGFPE and SIGILL: a handler that defers a real fault
 * returns to the faulting instruction, which faults again forever (cio's
 * own stack-overflow reporter handles SIGSEGV).
 */
static bool catchable(int s)
{
    if (s < 1 || s >= SIG_MAX || s > SIGRTMAX || (s > 31 && s < SIGRTMIN))
        return false;
    switch (s) {
    case SIGKILL:
    case SIGSTOP:
    case SIGSEGV:
    case SIGBUS:
    case SIGFPE:
    case SIGILL:
        return false;
    default:
        return true;
    }
}

/* Waits until no handler call walks the list: unlinked nodes may then be
 * freed, and their loops' wake-up eventfds closed. Handler calls are short
 * (a few atomic operations and at most a write per loop). */
static void quiesce(void)
{
    while (atomic_load(&g_busy))
        sched_yield();
}

/* ------------------------------------------------------------------------ */
/* The handlers (async-signal-safe)                                           */
/* ------------------------------------------------------------------------ */

/* Counts the delivery of s for every loop that catches it, and wakes it. */
static void on_signal(int s)
{
    int saved = errno;
    atomic_fetch_add(&g_busy, 1);
    uint64_t bit = sig_bit(s);
    for (sigloop *sl = atomic_load(&g_loops); sl; sl = atomic_load(&sl->next)) {
        if (!(atomic_load(&sl->want) & bit))
            continue;
        atomic_fetch_add(&sl->pending[s], 1);
        atomic_fetch_or(&sl->mask, bit);
        /* Only the call that sets the flag writes: the loop clears it before
         * it takes the counts (sig_run), so a delivery it does not take
         * finds the flag clear and wakes it again. */
        cio_loop_t *loop = sl->loop;
        if (!atomic_exchange(&loop->sig_pending, 1)) {
            uint64_t one = 1;
            ssize_t r = write(loop->wakefd, &one, sizeof one);
            (void)r; /* EAGAIN: the counter is already non-zero */
        }
    }
    atomic_fetch_sub(&g_busy, 1);
    errno = saved;
}

atomic_uint cio__sigint_hits;

/* cio_run's SIGINT handler and its state (one run at a time: the main
 * thread's). */
static struct {
    atomic_int active;     /* a run has it installed */
    atomic_int main_done;  /* that run's main task has finished */
    atomic_int wakefd;     /* the run's loop's wake-up eventfd */
    struct sigaction prev; /* SIGINT's disposition before the install */
} g_int;

/* Sets s back to its default action and raises it. Inside a handler of s
 * the signal stays blocked until the handler returns, and is then
 * delivered: the process ends as soon as the handler is left. */
static void die_of(int s)
{
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    sigaction(s, &dfl, NULL);
    raise(s);
}

static void on_sigint(int s)
{
    int saved = errno;
    atomic_fetch_add(&g_busy, 1);
    if (atomic_load(&g_int.active) && atomic_fetch_add(&cio__sigint_hits, 1) == 0 &&
        !atomic_load(&g_int.main_done)) {
        uint64_t one = 1;
        ssize_t r = write(atomic_load(&g_int.wakefd), &one, sizeof one);
        (void)r;
    } else {
        /* A second Ctrl-C while the cancelled main task's cleanup hangs
         * (Python raises KeyboardInterrupt there), or one the run no longer
         * handles: end the process now. */
        die_of(s);
    }
    atomic_fetch_sub(&g_busy, 1);
    errno = saved;
}

/* ------------------------------------------------------------------------ */
/* fork                                                                       */
/* ------------------------------------------------------------------------ */

static void atfork_prepare(void)
{
    pthread_mutex_lock(&g_lock);
}

static void atfork_parent(void)
{
    pthread_mutex_unlock(&g_lock);
}

/*
 * In the child: only this thread exists, so no handler call runs elsewhere.
 * The counts of deliveries the parent had not yet seen are dropped (a child
 * starts with no pending signals), and each loop's sig_pending is set: its
 * wakefd is still the parent's eventfd, which a handler must not write (it
 * would wake the parent), and with the flag set the handlers only count.
 * sig_fork wakes the loop once cio_loop_fork gave it an eventfd of its own.
 */
static void atfork_child(void)
{
    atomic_store(&g_busy, 0);
    for (sigloop *sl = atomic_load(&g_loops); sl; sl = atomic_load(&sl->next)) {
        atomic_store(&sl->loop->sig_pending, 1);
        atomic_store(&sl->mask, 0);
        for (int s = 1; s < SIG_MAX; s++)
            atomic_store(&sl->pending[s], 0);
    }
    pthread_mutex_unlock(&g_lock);
}

/* Registers the fork handlers once per process. Under g_lock. */
static int atfork_once(void)
{
    if (g_atfork)
        return 0;
    int rc = pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
    if (rc)
        return -rc; /* ENOMEM */
    g_atfork = true;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Dispositions                                                               */
/* ------------------------------------------------------------------------ */

/* Makes sl catch s, installing the process-wide handler when sl is the
 * first loop to catch it. Returns 0 or sigaction's error (nothing changed). */
static int catch_on(sigloop *sl, int s)
{
    uint64_t bit = sig_bit(s);
    if (atomic_load(&sl->want) & bit)
        return 0;
    int rc = 0;
    pthread_mutex_lock(&g_lock);
    /* The bit first: a delivery right after the install finds the loop. */
    atomic_fetch_or(&sl->want, bit);
    if (g_sig[s].users == 0) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_signal;
        sigemptyset(&sa.sa_mask);
        sa.sa_flags = SA_RESTART;
        if (sigaction(s, &sa, &g_sig[s].prev) != 0) {
            rc = -errno;
            atomic_fetch_and(&sl->want, ~bit);
        }
    }
    if (!rc)
        g_sig[s].users++;
    pthread_mutex_unlock(&g_lock);
    return rc;
}

/* Stops sl catching s; the last loop to stop restores s's disposition
 * exactly as it was saved. */
static void catch_off(sigloop *sl, int s)
{
    uint64_t bit = sig_bit(s);
    if (!(atomic_load(&sl->want) & bit))
        return;
    pthread_mutex_lock(&g_lock);
    /* Restored before the bit is cleared: a delivery in between takes the
     * previous disposition, as any later one will, rather than being
     * counted for a handler that is going away. */
    if (--g_sig[s].users == 0)
        sigaction(s, &g_sig[s].prev, NULL);
    atomic_fetch_and(&sl->want, ~bit);
    pthread_mutex_unlock(&g_lock);
}

/* ------------------------------------------------------------------------ */
/* Per-loop state                                                             */
/* ------------------------------------------------------------------------ */

static void sig_run(cio_loop_t *loop);
static void sig_close(cio_loop_t *loop);
static void sig_fork(cio_loop_t *loop);

static const cio__loop_hooks sig_hooks = {
    .layer = 12,
    .close = sig_close,
    .fork = sig_fork,
};

/* Unlinks sl from the process-wide list and frees it once no handler call
 * can be walking toward its loop (after that, none writes the loop's
 * wakefd). It catches nothing by now. A flag still set only makes the
 * loop's next sig_run find no state. */
static void sigloop_free(sigloop *sl)
{
    pthread_mutex_lock(&g_lock);
    _Atomic(sigloop *) *p = &g_loops;
    while (atomic_load(p) != sl)
        p = &atomic_load(p)->next;
    atomic_store(p, atomic_load(&sl->next));
    pthread_mutex_unlock(&g_lock);
    quiesce();
    sl->loop->sig = NULL;
    cio__free(sl);
}

/* The loop's signal state, created on first use: 0, -ENOMEM, -ENOSPC (the
 * loop's hook table), -ESHUTDOWN. */
static int sigloop_get(cio_loop_t *loop, sigloop **out)
{
    if (loop->closed)
        return -ESHUTDOWN;
    if (loop->sig) {
        *out = loop->sig;
        return 0;
    }
    pthread_mutex_lock(&g_lock);
    int rc = atfork_once();
    pthread_mutex_unlock(&g_lock);
    if (rc)
        return rc;
    sigloop *sl = cio__calloc(1, sizeof *sl);
    if (!sl)
        return -ENOMEM;
    sl->loop = loop;
    rc = cio__loop_hook(loop, &sig_hooks);
    if (rc) {
        cio__free(sl);
        return rc;
    }
    /* Before the link: a handler may set the flag from then on. */
    loop->sig_run = sig_run;
    pthread_mutex_lock(&g_lock);
    atomic_store(&sl->next, atomic_load(&g_loops));
    atomic_store(&g_loops, sl);
    pthread_mutex_unlock(&g_lock);
    loop->sig = sl;
    *out = sl;
    return 0;
}

/* s's entry of sl, created on first use: 0 or -ENOMEM. */
static int ent_get(sigloop *sl, int s, sigent **out)
{
    if (!sl->ent[s]) {
        sigent *e = cio__calloc(1, sizeof *e);
        if (!e)
            return -ENOMEM;
        e->sl = sl;
        e->signo = s;
        sl->ent[s] = e;
        sl->nents++;
    }
    *out = sl->ent[s];
    return 0;
}

/* Frees s's entry (s = 0: none) once nothing needs it, then the loop's
 * state once it has no entry and catches nothing. */
static void tidy(sigloop *sl, int s)
{
    sigent *e = s ? sl->ent[s] : NULL;
    if (e && !e->cb && !e->refs && !e->busy && !cio_handle_active(&e->run)) {
        sl->ent[s] = NULL;
        sl->nents--;
        cio__free(e);
    }
    if (!sl->nents && !atomic_load(&sl->want))
        sigloop_free(sl);
}

/* Runs s's callback once per delivery moved to it, after waking the tasks
 * waiting for s. The callback may add, replace or remove handlers. */
static void run_ent(void *arg)
{
    sigent *e = arg;
    unsigned n = e->torun;
    e->torun = 0;
    e->busy = 1;
    cio__waitq_wake_all(&e->waiters, 0);
    for (; n && e->cb; n--)
        e->cb(e->arg);
    e->busy = 0;
    tidy(e->sl, e->signo);
}

/* loop->sig_run, called by the loop core when it finds sig_pending set:
 * moves the counted deliveries to their entries. */
static void sig_run(cio_loop_t *loop)
{
    /* Cleared before the counts are taken: a delivery counted after the
     * exchanges below sets the flag again (and wakes the loop), so it is
     * taken next time rather than lost. */
    atomic_store(&loop->sig_pending, 0);
    sigloop *sl = loop->sig;
    if (!sl)
        return;
    uint64_t m = atomic_exchange(&sl->mask, 0);
    while (m) {
        int s = __builtin_ctzll(m) + 1;
        m &= m - 1;
        unsigned n = atomic_exchange(&sl->pending[s], 0);
        sigent *e = sl->ent[s];
        if (!n || !e)
            continue;
        e->torun += n;
        /* A caller-owned handle on an open loop: cannot fail. */
        if (!cio_handle_active(&e->run))
            cio_call_soon(sl->loop, &e->run, run_ent, e);
    }
}

/* Close hook: the loop's handlers are removed, dispositions restored. */
static void sig_close(cio_loop_t *loop)
{
    sigloop *sl = loop->sig;
    if (!sl)
        return;
    for (int s = 1; s < SIG_MAX; s++) {
        catch_off(sl, s);
        sigent *e = sl->ent[s];
        if (!e)
            continue;
        cio_handle_cancel(&e->run);
        cio__free(e);
        sl->ent[s] = NULL;
    }
    sl->nents = 0;
    sigloop_free(sl);
}

/* Fork hook (cio_loop_fork, in the child, after the loop core gave the loop
 * a wake-up eventfd of its own): the flag set at the fork keeps the
 * handlers from writing, so the deliveries counted since are announced
 * here, on the new eventfd. */
static void sig_fork(cio_loop_t *loop)
{
    if (!loop->sig || !atomic_load(&loop->sig_pending))
        return;
    uint64_t one = 1;
    ssize_t r = write(loop->wakefd, &one, sizeof one);
    (void)r;
}

/* ------------------------------------------------------------------------ */
/* The public calls                                                           */
/* ------------------------------------------------------------------------ */

/* The loop a call names: loop, or the running one (NULL if none). */
static cio_loop_t *which_loop(cio_loop_t *loop)
{
    return loop ? loop : cio__running;
}

/*
 * Readies signo on loop for a handler or a waiter: the loop's signal state,
 * signo's entry in it and the process-wide handler. Returns 0 with the two in
 * *slp and *ep, or a negative errno with whatever it created undone.
 */
static int sig_attach(cio_loop_t *loop, int signo, sigloop **slp, sigent **ep)
{
    sigloop *sl = NULL; /* set when sigloop_get returns 0 (gcc -O3 cannot tell) */
    int rc = sigloop_get(loop, &sl);
    if (rc)
        return rc;
    sigent *e = NULL;
    if ((rc = ent_get(sl, signo, &e))) {
        tidy(sl, 0);
        return rc;
    }
    if ((rc = catch_on(sl, signo))) {
        tidy(sl, signo);
        return rc;
    }
    *slp = sl;
    *ep = e;
    return 0;
}

int cio_signal_add(cio_loop_t *loop, int signo, cio_callback_fn cb, void *arg)
{
    if (!(loop = which_loop(loop)))
        return -EPERM;
    if (!catchable(signo) || !cb)
        return -EINVAL;
    sigloop *sl = NULL;
    sigent *e = NULL; /* set when sig_attach returns 0 (gcc -O3 cannot tell) */
    int rc = sig_attach(loop, signo, &sl, &e);
    if (rc)
        return rc;
    e->cb = cb;
    e->arg = arg;
    return 0;
}

int cio_signal_remove(cio_loop_t *loop, int signo)
{
    if (!(loop = which_loop(loop)))
        return -EPERM;
    if (!catchable(signo))
        return -EINVAL;
    sigloop *sl = loop->sig;
    sigent *e = sl ? sl->ent[signo] : NULL;
    if (!e || !e->cb)
        return 0;
    e->cb = NULL;
    e->arg = NULL;
    if (!e->refs)
        catch_off(sl, signo);
    tidy(sl, signo);
    return 1;
}

int cio_signal_wait(int signo)
{
    cio__coro *t = cio__current;
    if (!t)
        return -EPERM;
    if (!catchable(signo))
        return -EINVAL;
    int rc = cio__check_cancel(t);
    if (rc)
        return rc;
    sigloop *sl = NULL; /* set when sig_attach returns 0 (gcc -O3 cannot tell) */
    sigent *e = NULL;
    if ((rc = sig_attach(t->loop, signo, &sl, &e)))
        return rc;
    /* The reference keeps e while this task is woken but not yet resumed. */
    e->refs++;
    cio__waiter w;
    cio__waiter_init(&w, t, "signal", e, cio__wlist_unlink);
    cio__wlist_push(&e->waiters, &w);
    rc = cio__wait(&w, CIO__NO_DEADLINE);
    if (--e->refs == 0 && !e->cb)
        catch_off(sl, signo);
    tidy(sl, signo);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* cio_run's SIGINT                                                           */
/* ------------------------------------------------------------------------ */

bool cio__sigint_install(cio_loop_t *loop)
{
    if (getpid() != gettid() || atomic_load(&g_int.active))
        return false;
    struct sigaction cur;
    if (sigaction(SIGINT, NULL, &cur) != 0 || (cur.sa_flags & SA_SIGINFO) ||
        cur.sa_handler != SIG_DFL)
        return false;
    atomic_store(&g_int.wakefd, loop->wakefd);
    atomic_store(&g_int.main_done, 0);
    atomic_store(&cio__sigint_hits, 0);
    atomic_store(&g_int.active, 1);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    if (sigaction(SIGINT, &sa, &g_int.prev) != 0) {
        atomic_store(&g_int.active, 0);
        return false;
    }
    return true;
}

void cio__sigint_main_done(void)
{
    atomic_store(&g_int.main_done, 1);
}

void cio__sigint_uninstall(void)
{
    struct sigaction cur;
    if (sigaction(SIGINT, NULL, &cur) == 0 && !(cur.sa_flags & SA_SIGINFO) &&
        cur.sa_handler == on_sigint)
        sigaction(SIGINT, &g_int.prev, NULL);
    atomic_store(&g_int.active, 0);
    quiesce();
}

void cio__sigint_reraise(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    sigaction(SIGINT, &dfl, NULL);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
    raise(SIGINT);
}
