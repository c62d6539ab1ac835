/* watchdog.c — cancellation of running jobs.  A job whose caller gave up
 * (timeout) or died while it runs Python code is "overdue": the watchdog
 * has the executor raise erlang.Interrupted in it; if it still runs
 * cancel_grace_ms later (stuck in C), the worker is abandoned: its callers
 * are answered {error, worker_crashed} and the pool process is told to
 * start a replacement.  It also ties long-running jobs to their caller's
 * life (a monitor), which starting jobs skip for speed.
 *
 * Threads: one watchdog thread, started by pyn_pool_boot, which first
 * boots the executor on itself (for the thread executor it becomes
 * Python's main thread).  It sleeps on P.wd_cond (kick_watchdog) or ticks
 * while workers exist.  Pool lock held while it scans, dropped around the
 * executor's interrupt (which enters: GIL before pool lock). */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "atoms.h"
#include "pool_internal.h"
#include "py_runtime.h"

/* A job is overdue when its caller gave up while it runs Python code. */
static int overdue(pyn_worker_t *w)
{
    return w->current && w->current->cancelled && !w->waiting;
}

/* The executor's claim (executor.h): takes the lock; 1 if w's job is still
 * overdue, marking it interrupted if it was not yet. */
static int claim_interrupt(pyn_worker_t *w)
{
    int due;
    pthread_mutex_lock(&P.lock);
    due = overdue(w);
    if (due && !w->current->interrupt_sent) {
        w->current->interrupt_sent = 1;
        w->current->interrupt_at = pyn_now_ms();
    }
    pthread_mutex_unlock(&P.lock);
    return due;
}

/* Lock held.  Abandons w, stuck past the grace period: its callers are
 * answered and the pool process is told to replace it.  Drops and retakes
 * the lock (the table changes: the caller rescans). */
static void abandon_locked(pyn_worker_t *w)
{
    pyn_job_t *dropped = NULL;

    retire_locked(NULL, w, ATOMS.worker_crashed, &dropped);
    if (P.ex->abandon)
        P.ex->abandon(w->ex_ctx);
    tell_pool_lost_locked(w);
    pthread_mutex_unlock(&P.lock);
    release_dropped(NULL, dropped);
    enif_release_resource(w); /* the table's reference */
    pthread_mutex_lock(&P.lock);
}

/* Lock held.  Interrupts every overdue job not yet interrupted (dropping
 * the lock meanwhile) and abandons a worker stuck past its grace.  Returns
 * 1 if it dropped the lock (the caller rescans), with *outstanding set
 * when some job awaits its interrupt's effect. */
static int handle_overdue(int *outstanding)
{
    pyn_worker_t *due[2 * PYN_MAX_WORKERS];
    void *ctx[2 * PYN_MAX_WORKERS];
    int n = 0;
    int64_t now = pyn_now_ms();

    /* First any worker stuck past its grace: abandoning it needs no GIL,
     * so it never waits behind the interrupts below. */
    for (int i = 0; i < P.nall; i++) {
        pyn_worker_t *w = P.all[i];
        if (overdue(w) && w->current->interrupt_sent && w->state == PYN_W_ALIVE) {
            *outstanding = 1;
            if (now - w->current->interrupt_at >= P.grace_ms) {
                abandon_locked(w);
                return 1;
            }
        }
    }
    for (int i = 0; i < P.nall; i++) {
        pyn_worker_t *w = P.all[i];
        if (overdue(w) && !w->current->interrupt_sent && w->ex_ctx) {
            enif_keep_resource(w);
            w->interrupting++; /* its thread keeps ctx until we are done */
            ctx[n] = w->ex_ctx; /* read under the lock */
            due[n++] = w;
        }
    }
    if (n == 0)
        return 0;
    pthread_mutex_unlock(&P.lock);
    for (int i = 0; i < n; i++)
        P.ex->interrupt(ctx[i], due[i], claim_interrupt);
    pthread_mutex_lock(&P.lock);
    for (int i = 0; i < n; i++) {
        if (--due[i]->interrupting == 0)
            pthread_cond_broadcast(&due[i]->cond); /* a thread waiting to detach */
    }
    pthread_mutex_unlock(&P.lock);
    for (int i = 0; i < n; i++)
        enif_release_resource(due[i]);
    pthread_mutex_lock(&P.lock);
    return 1;
}

/* Lock held.  Requests that started at once were not tied to their
 * caller's life (it costs); one that runs for a while now is, so that the
 * death of its caller interrupts it.  1 if one's caller is dead already
 * (then cancelled: the caller rescans to interrupt it). */
static int monitor_late(void)
{
    int64_t now = pyn_now_ms();
    int again = 0;

    for (int i = 0; i < P.nall; i++) {
        pyn_job_t *j = P.all[i]->current;
        if (j && j->has_caller && !j->monitored && !j->cancelled &&
            now - j->started_at >= PYN_LATE_MONITOR_MS) {
            if (enif_monitor_process(NULL, j, &j->caller, &j->mon) == 0) {
                j->monitored = 1;
            } else { /* already dead */
                j->cancelled = 1;
                again |= !P.all[i]->waiting;
                pthread_cond_signal(&P.all[i]->cond);
            }
        }
    }
    return again;
}

/* Lock held.  Sleeps until kicked, or a tick (shorter while an interrupt
 * is awaited), or for good while no worker exists. */
static void watchdog_sleep(int outstanding)
{
    if (!P.wd_kick) {
        if (outstanding || P.nall > 0) {
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_nsec += (outstanding ? 20 : PYN_WATCHDOG_TICK_MS) * 1000000L;
            if (until.tv_nsec >= 1000000000L) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&P.wd_cond, &P.lock, &until);
        } else {
            pthread_cond_wait(&P.wd_cond, &P.lock);
        }
    }
    P.wd_kick = 0;
}

static void *watchdog_main(void *arg)
{
    int rc;
    (void)arg;

    pthread_setname_np(pthread_self(), "py_watchdog");
    rc = P.ex->boot(P.boot_err, sizeof P.boot_err);
    pthread_mutex_lock(&P.lock);
    P.boot_rc = rc;
    P.booted = 1;
    pthread_cond_broadcast(&P.boot_cond);
    if (rc != 0) {
        pthread_mutex_unlock(&P.lock);
        return NULL;
    }
    for (;;) {
        int outstanding = 0;
        if (handle_overdue(&outstanding) || monitor_late())
            continue;
        watchdog_sleep(outstanding);
    }
    return NULL;
}

static int booted_mode = -1;

int pyn_pool_mode(void)
{
    int m;
    pthread_mutex_lock(&P.lock);
    m = P.booted && P.boot_rc == 0 ? booted_mode : -1;
    pthread_mutex_unlock(&P.lock);
    return m;
}

static const char *mode_name(int mode)
{
    return mode == PYN_MODE_SUBINTERP ? "subinterp" : mode == PYN_MODE_ISOLATED ? "isolated" : "shared_gil";
}

int pyn_pool_boot(pyn_mode_t mode, char *err, size_t errlen)
{
    static pthread_t wd;
    static int started;
    pthread_attr_t attr;
    int rc;

    if (mode == PYN_MODE_SUBINTERP && !pyr_subinterp_supported()) {
        snprintf(err, errlen,
                 "execution_mode subinterp needs Python 3.12 or later (this build: %s); "
                 "use shared_gil",
                 pyr_version());
        return -1;
    }
    pthread_mutex_lock(&P.lock);
    if (started && booted_mode != (int)mode) {
        pthread_mutex_unlock(&P.lock);
        snprintf(err, errlen,
                 "Python already runs in execution_mode %s in this VM: the mode cannot change "
                 "until the VM restarts",
                 mode_name(booted_mode));
        return -1;
    }
    if (!started) {
        started = 1;
        booted_mode = (int)mode;
        P.ex = mode == PYN_MODE_SUBINTERP ? &pyn_exec_subinterp
               : mode == PYN_MODE_ISOLATED ? &pyn_exec_isolated
                                           : &pyn_exec_thread;
        pyn_callbacks_install();
        pthread_attr_init(&attr);
        pthread_attr_setstacksize(&attr, PYN_STACK_BYTES);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        rc = pthread_create(&wd, &attr, watchdog_main, NULL);
        pthread_attr_destroy(&attr);
        if (rc != 0) {
            P.booted = 1;
            P.boot_rc = -1;
            char why[128];
            snprintf(P.boot_err, sizeof P.boot_err, "pthread_create: %s",
                     strerror_r(rc, why, sizeof why));
        }
    }
    while (!P.booted)
        pthread_cond_wait(&P.boot_cond, &P.lock);
    rc = P.boot_rc;
    if (rc != 0)
        snprintf(err, errlen, "%s", P.boot_err);
    pthread_mutex_unlock(&P.lock);
    return rc;
}
