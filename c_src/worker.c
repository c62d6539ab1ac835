/* worker.c — the worker threads, where a call is run.  Each worker is an
 * OS thread that takes jobs from its nested, own and (unless bound) the
 * shared queue; after a job it polls briefly for the next one (one worker
 * at a time: the "poller", which a submit may hand a request to without a
 * wake-up), then parks on its condition variable.  How it runs Python is
 * the executor's (executor.h): attach, enter, run, leave, detach.  Also
 * here: starting, retiring, binding workers, and their counters.
 *
 * Threads: worker_main on the worker's thread; the rest from NIFs.  The
 * pool lock is taken for queue operations only, never while entering
 * (pool_internal.h). */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "atoms.h"
#include "pool_internal.h"

ErlNifResourceType *pyn_worker_type;

__thread pyn_worker_t *pyn_self;

static void worker_dtor(ErlNifEnv *env, void *obj)
{
    pyn_worker_t *w = obj;
    (void)env;
    for (int i = 0; i < PYN_MAX_NEST; i++)
        if (w->slots[i].env)
            enif_free_env(w->slots[i].env);
    pthread_cond_destroy(&w->cond);
}

int pyn_worker_type_init(ErlNifEnv *env)
{
    ErlNifResourceTypeInit wi = {.dtor = worker_dtor};
    pyn_worker_type = enif_open_resource_type_x(env, "py_worker", &wi,
                                                ERL_NIF_RT_CREATE | ERL_NIF_RT_TAKEOVER, NULL);
    return pyn_worker_type ? 0 : -1;
}

/* Whether w has something to do (a hint: read without the lock). */
static int work_visible(pyn_worker_t *w)
{
    return __atomic_load_n(&w->nested.head, __ATOMIC_RELAXED) ||
           __atomic_load_n(&w->own.head, __ATOMIC_RELAXED) ||
           (!__atomic_load_n(&w->bound, __ATOMIC_RELAXED) &&
            __atomic_load_n(&P.shared.head, __ATOMIC_RELAXED)) ||
           __atomic_load_n(&w->state, __ATOMIC_RELAXED) != PYN_W_ALIVE;
}

/* Frees what finished jobs kept (the executor's release_deferred).  Finalizers may run
 * any Python code, block or release the GIL: meanwhile w, if it stands as
 * the poller, is marked busy, and is promised only borrowed requests,
 * whose callers do not wait long for it (poller_takes). */
static void release_deferred(pyn_worker_t *w)
{
    if (!P.ex->has_deferred(w->ex_ctx))
        return;
    P.ex->release_deferred(w->ex_ctx);
    /* Only w makes itself the poller or stops being it; finish_job marked
     * it busy if it had objects to free. */
    if (__atomic_load_n(&P.spinner, __ATOMIC_RELAXED) == w)
        __atomic_store_n(&P.spinner_busy, 0, __ATOMIC_RELEASE);
}

/* What runs w's Python is gone (an isolated worker's process died): its
 * job was answered; the rest of its queue is answered worker_crashed, and
 * the pool process starts a replacement, as for an abandoned worker. */
static void lose_worker(pyn_worker_t *w, time_t pause_s)
{
    pyn_job_t *dropped = NULL;
    struct timespec pause = {pause_s, 0};
    int rel;

    pthread_mutex_lock(&P.lock);
    rel = retire_locked(NULL, w, ATOMS.worker_crashed, &dropped);
    if (rel && pause_s == 0)
        tell_pool_lost_locked(w);
    pthread_mutex_unlock(&P.lock);
    release_dropped(NULL, dropped);
    if (!rel)
        return;
    if (pause_s > 0) {
        while (nanosleep(&pause, &pause) != 0)
            ;
        pthread_mutex_lock(&P.lock);
        tell_pool_lost_locked(w);
        pthread_mutex_unlock(&P.lock);
    }
    enif_release_resource(w); /* the table's reference */
}

void run_job(pyn_worker_t *w, pyn_job_t *j)
{
    ERL_NIF_TERM result = P.ex->run(w->ex_ctx, j);
    finish_job(w, j, result);
    if (P.ex->lost && P.ex->lost(w->ex_ctx)) {
        lose_worker(w, 0);
        return;
    }
    /* Arguments and result, now that it is answered; after the next job if
     * one is already waiting. */
    if (!work_visible(w))
        release_deferred(w);
}

/* The next request waiting for any worker, if w is unbound (lock held).
 * Having looked, w owes the shared queue nothing more. */
static pyn_job_t *pop_shared(pyn_worker_t *w)
{
    if (w->bound)
        return NULL;
    w->owed = 0;
    return q_pop(&P.shared);
}

/* Polls for up to w->poll_ns.  Called and returns with the lock held. */
static void spin(pyn_worker_t *w)
{
    int64_t until;

    P.spinner = w;
    P.spinner_bound = w->bound;
    __atomic_store_n(&P.spinner_busy, 0, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&P.lock);
    until = pyn_now_ns() + w->poll_ns;
    for (unsigned i = 1;; i++) {
        if (work_visible(w))
            break;
        pyn_cpu_relax();
        if ((i & 63) == 0 && pyn_now_ns() >= until)
            break;
    }
    pthread_mutex_lock(&P.lock);
    P.spinner = NULL;
    P.spinner_claimed = 0;
}

/* w stops standing as the poller (lock held).  A job a submit left for it
 * without waking anyone must then not be stranded: wake a parked worker. */
static void release_poller(pyn_worker_t *w)
{
    if (P.spinner != w)
        return;
    P.spinner = NULL;
    P.spinner_claimed = 0;
    __atomic_store_n(&P.spinner_busy, 0, __ATOMIC_RELEASE);
    if (P.shared.head)
        wake_one_free(NULL);
}

/* Next job for w, parking with the GIL released; NULL when retired.  A
 * worker that just finished a job first polls briefly (if no other worker
 * polls), then parks until signalled. */
static pyn_job_t *next_job(pyn_worker_t *w)
{
    pyn_job_t *j = NULL;
    int spun = 0;

    pthread_mutex_lock(&P.lock);
    for (;;) {
        if (w->state != PYN_W_ALIVE)
            break;
        if ((j = q_pop(&w->nested)) || (j = q_pop(&w->own)) || (j = pop_shared(w)))
            break;
        if (!spun && (!P.spinner || P.spinner == w)) {
            spun = 1;
            spin(w);
            continue;
        }
        release_poller(w);
        {
            int counted = !w->bound; /* bound may change while parked */
            w->idle = 1;
            P.nidle += counted;
            pthread_cond_wait(&w->cond, &P.lock);
            P.nidle -= counted;
            w->idle = 0;
        }
    }
    release_poller(w);
    if (j)
        start_job(w, j);
    pthread_mutex_unlock(&P.lock);
    return j;
}

/* The next job for w if one is queued now, else NULL (never waits; may be
 * called with the GIL held). */
static pyn_job_t *try_next_job(pyn_worker_t *w)
{
    pyn_job_t *j = NULL;

    /* Another worker waits for the GIL (with a job of its own): let it. */
    if (!work_visible(w) || __atomic_load_n(&P.gil_waiters, __ATOMIC_RELAXED) > 0)
        return NULL;
    pthread_mutex_lock(&P.lock);
    if (w->state == PYN_W_ALIVE &&
        ((j = q_pop(&w->nested)) || (j = q_pop(&w->own)) || (j = pop_shared(w)))) {
        release_poller(w);
        start_job(w, j);
    }
    pthread_mutex_unlock(&P.lock);
    return j;
}

/* The watchdog no longer sees w (before its executor context goes: an
 * interrupt under way is waited for). */
static void unregister_thread(pyn_worker_t *w)
{
    pthread_mutex_lock(&P.lock);
    while (w->interrupting > 0)
        pthread_cond_wait(&w->cond, &P.lock);
    for (int i = 0; i < P.nall; i++) {
        if (P.all[i] == w) {
            P.all[i] = P.all[--P.nall];
            w->ex_ctx = NULL; /* the watchdog no longer sees it */
            break;
        }
    }
    pthread_mutex_unlock(&P.lock);
}

static void *worker_main(void *arg)
{
    pyn_worker_t *w = arg;
    const pyn_executor_t *ex = P.ex;
    pyn_job_t *j;

    pyn_self = w;
    {
        char name[16];
        snprintf(name, sizeof name, "py_worker_%d", w->id % 10000);
        pthread_setname_np(pthread_self(), name);
    }
    w->ex_ctx = ex->attach(w->id);
    if (w->ex_ctx) {
        while ((j = next_job(w))) {
            __atomic_add_fetch(&P.gil_waiters, 1, __ATOMIC_RELAXED);
            ex->enter(w->ex_ctx);
            __atomic_sub_fetch(&P.gil_waiters, 1, __ATOMIC_RELAXED);
            /* While work is queued, stay entered: handing the GIL to another
             * worker between two short jobs costs more than the jobs. */
            do
                run_job(w, j);
            while ((j = try_next_job(w)));
            release_deferred(w);
            ex->leave(w->ex_ctx);
        }
    } else {
        /* The executor could not attach (an isolated worker's process
         * could not start: out of fds or processes): out of service at
         * once, replaced a second later (no tight loop of starts while the
         * cause lasts). */
        lose_worker(w, 1);
    }
    {
        void *ctx = w->ex_ctx;
        unregister_thread(w);
        ex->detach(ctx);
    }
    enif_release_resource(w); /* the thread's reference */
    return NULL;
}

/* A setup job running src, copied; NULL if out of memory. */
static pyn_job_t *setup_job(ERL_NIF_TERM src)
{
    pyn_job_t *j = pyn_job_new(PYN_JOB_SETUP);
    if (j)
        j->req = enif_make_copy(j->env, src);
    return j;
}

pyn_worker_t *pyn_worker_start(int id, char *err, size_t errlen)
{
    pyn_worker_t *w;
    pthread_attr_t attr;
    pthread_condattr_t ca;
    int rc;

    w = enif_alloc_resource(pyn_worker_type, sizeof *w);
    if (!w) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    memset(w, 0, sizeof *w);
    w->id = id;
    w->state = PYN_W_ALIVE;
    w->gen = 1;
    w->poll_ns = PYN_SPIN_NS;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w->cond, &ca);
    pthread_condattr_destroy(&ca);

    pthread_mutex_lock(&P.lock);
    int abandoned = P.nall - P.nworkers;
    if (P.nworkers >= PYN_MAX_WORKERS || P.nall >= 2 * PYN_MAX_WORKERS ||
        abandoned > P.max_abandoned) {
        pthread_mutex_unlock(&P.lock);
        if (abandoned > P.max_abandoned)
            snprintf(err, errlen,
                     "%d abandoned workers are still running (stuck in C code); "
                     "max_abandoned_workers is %d",
                     abandoned, P.max_abandoned);
        else
            snprintf(err, errlen, "too many workers");
        enif_release_resource(w);
        return NULL;
    }
    /* In service at once: jobs may queue while the thread starts, behind
     * the setup every worker runs first. */
    if (P.setup_env) {
        pyn_job_t *setup = setup_job(P.setup_src);
        if (setup) {
            setup->state = PYN_JS_QUEUED;
            q_push(&w->own, setup);
        }
    }
    if (P.replacing > 0)
        P.replacing--;
    P.workers[P.nworkers++] = w;
    P.all[P.nall++] = w;
    P.nfree++;
    enif_keep_resource(w); /* the pool table's reference */
    enif_keep_resource(w); /* the thread's reference */
    pthread_mutex_unlock(&P.lock);

    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, PYN_STACK_BYTES);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    rc = pthread_create(&w->thread, &attr, worker_main, w);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        char why[128];
        snprintf(err, errlen, "pthread_create: %s", strerror_r(rc, why, sizeof why));
        pyn_worker_retire(NULL, w, ATOMS.worker_crashed);
        unregister_thread(w);
        enif_release_resource(w); /* the thread's */
        enif_release_resource(w); /* ours */
        return NULL;
    }
    return w;
}

void pyn_worker_retire(ErlNifEnv *env, pyn_worker_t *w, ERL_NIF_TERM reason)
{
    pyn_job_t *dropped = NULL;
    int rel;

    pthread_mutex_lock(&P.lock);
    rel = retire_locked(env, w, reason, &dropped);
    pthread_mutex_unlock(&P.lock);
    release_dropped(env, dropped);
    if (rel)
        enif_release_resource(w);
}

/* Whether w runs or has queued anything but a namespace wipe (lock held). */
static int holds_request(const pyn_worker_t *w)
{
    const pyn_queue_t *qs[] = {&w->own, &w->nested};

    if (w->current && w->current->kind != PYN_JOB_WIPE)
        return 1;
    for (int i = 0; i < 2; i++)
        for (const pyn_job_t *j = qs[i]->head; j; j = j->next)
            if (j->kind != PYN_JOB_WIPE)
                return 1;
    return 0;
}

uint64_t pyn_worker_bind(pyn_worker_t *w, int how)
{
    pyn_job_t *wipe = pyn_job_new(PYN_JOB_WIPE);
    uint64_t gen = 0;
    int bind = how != PYN_UNBIND;

    pthread_mutex_lock(&P.lock);
    /* Not a worker still running a request its caller gave up on (it may
     * be replaced when the grace period ends, losing the new binding), nor
     * one that owes the shared queue a look (w->owed), nor for
     * PYN_BIND_IDLE one that holds a request. */
    if (bind && ((w->current && w->current->cancelled) || w->owed ||
                 (how == PYN_BIND_IDLE && holds_request(w)))) {
        pthread_mutex_unlock(&P.lock);
        if (wipe)
            enif_release_resource(wipe);
        return 0;
    }
    if (w->state == PYN_W_ALIVE && wipe && w->bound != bind) {
        w->bound = bind;
        w->gen++;
        P.nfree += bind ? -1 : 1;
        /* Requests that waited for any worker come before the next
         * binding: a process binding and unbinding in a loop must not
         * starve them. */
        w->owed = !bind && P.shared.head != NULL;
        /* A shared job may have been promised to w (it was polling, or
         * was woken for it): a parked worker takes the shared queue now. */
        if (bind && P.shared.head)
            wake_parked();
        /* Wiped before the next holder's first job, which queues behind. */
        wipe->state = PYN_JS_QUEUED;
        q_push(&w->own, wipe);
        wipe = NULL;
        pthread_cond_signal(&w->cond);
        gen = w->gen;
    }
    pthread_mutex_unlock(&P.lock);
    if (wipe)
        enif_release_resource(wipe);
    return gen;
}

int pyn_worker_control(pyn_worker_t *w, pyn_kind_t kind)
{
    pyn_job_t *j = pyn_job_new(kind);
    int rc = -1;

    if (!j)
        return -1;
    pthread_mutex_lock(&P.lock);
    if (w->state == PYN_W_ALIVE) {
        j->state = PYN_JS_QUEUED;
        q_push(&w->own, j);
        pthread_cond_signal(&w->cond);
        j = NULL;
        rc = 0;
    }
    pthread_mutex_unlock(&P.lock);
    if (j)
        enif_release_resource(j);
    return rc;
}

void pyn_broadcast(pyn_kind_t kind)
{
    pyn_worker_t *ws[PYN_MAX_WORKERS];
    int n;

    pthread_mutex_lock(&P.lock);
    n = P.nworkers;
    for (int i = 0; i < n; i++) {
        ws[i] = P.workers[i];
        enif_keep_resource(ws[i]);
    }
    pthread_mutex_unlock(&P.lock);
    for (int i = 0; i < n; i++) {
        (void)pyn_worker_control(ws[i], kind);
        enif_release_resource(ws[i]);
    }
}

int pyn_setup(ErlNifEnv *env, ERL_NIF_TERM src, int keep)
{
    pyn_job_t *jobs[PYN_MAX_WORKERS];
    ErlNifEnv *kept = NULL, *old = NULL;
    int n = 0, rc = 0;
    (void)env;

    if (keep && !(kept = enif_alloc_env()))
        return -1;
    pthread_mutex_lock(&P.lock);
    for (int i = 0; i < P.nworkers; i++) {
        if (!(jobs[n] = setup_job(src))) {
            rc = -1;
            break;
        }
        jobs[n]->state = PYN_JS_QUEUED;
        q_push(&P.workers[i]->own, jobs[n]);
        pthread_cond_signal(&P.workers[i]->cond);
        n++;
    }
    if (kept) {
        old = P.setup_env;
        P.setup_env = kept;
        P.setup_src = enif_make_copy(kept, src);
    }
    pthread_mutex_unlock(&P.lock);
    if (old)
        enif_free_env(old);
    return rc;
}

void pyn_load(int *workers, int *idle, int *pending)
{
    int n = 0;
    pthread_mutex_lock(&P.lock);
    for (int i = 0; i < P.nworkers; i++) {
        const pyn_worker_t *w = P.workers[i];
        if (!w->bound && !w->current)
            n++;
    }
    *workers = P.nworkers;
    *idle = n;
    *pending = P.pending;
    pthread_mutex_unlock(&P.lock);
}

/* available: the workers a bind would get now, i.e. free ones not still
 * running a request whose caller gave up (pyn_worker_bind refuses those
 * until they finish or are replaced). */
void pyn_stats(int *workers, int *bound, int *available, int *pending)
{
    int busy_free = 0;
    pthread_mutex_lock(&P.lock);
    for (int i = 0; i < P.nworkers; i++) {
        const pyn_worker_t *w = P.workers[i];
        if (!w->bound && w->current && w->current->cancelled)
            busy_free++;
    }
    *workers = P.nworkers;
    *bound = P.nworkers - P.nfree;
    *available = P.nfree - busy_free;
    *pending = P.pending;
    pthread_mutex_unlock(&P.lock);
}
