/* worker.c — the pool: worker threads and their loop, the shared and
 * per-worker queues, job lifecycle and cancellation, callback waits and the
 * watchdog thread that interrupts timed-out Python code.
 *
 * Threads: NIFs (scheduler threads) only queue, cancel and signal; workers
 * run jobs; the watchdog is also Python's main thread.  Python itself is
 * reached only through py_runtime.h and py_exec.h, with the GIL held.
 * Lock order: GIL, then pool lock.  The pool lock is held for short,
 * non-blocking sections only; the GIL is never taken while holding it. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "atoms.h"
#include "py_exec.h"
#include "py_runtime.h"
#include "worker.h"

#define PYN_STACK_BYTES ((size_t)64 * 1024 * 1024)
/* How long an idle worker polls its queues before parking on its condition
 * variable.  A wake-up through the condition variable costs 10-15 us here;
 * polling lets back-to-back calls skip it.  Only one worker polls at a time
 * and never for longer than this, so an idle pool burns no CPU. */
#define PYN_SPIN_NS 60000
/* After a request that found the pool idle (one caller calling again and
 * again, say), the worker polls longer: such a caller often takes more than
 * 60 us between two calls (decoding a large reply), and would otherwise
 * wake a parked worker, and miss the hand-over, each time. */
#define PYN_SPIN_LONG_NS 250000
/* How long a caller whose request went to an idle polling worker, with no
 * other request in flight, polls in its NIF for the reply (see
 * pyn_await_inline).  Covers a small call with room to spare; anything
 * longer is answered by message as usual. */
#define PYN_CALLER_SPIN_NS 10000
/* How long such a caller waits for the worker to start reading a borrowed
 * request (the worker may be finishing its previous one) before copying
 * it after all. */
#define PYN_START_SPIN_NS 100000
/* The same for a caller on a dirty scheduler (large requests), which may
 * also have woken a parked worker: long enough for the wake-up. */
#define PYN_PATIENT_SPIN_NS 500000
/* Requests running longer than this get a monitor on their caller. */
#define PYN_LATE_MONITOR_MS 50
/* The watchdog's period while workers exist (it sleeps otherwise). */
#define PYN_WATCHDOG_TICK_MS 100

ErlNifResourceType *pyn_job_type;
ErlNifResourceType *pyn_areply_type;
ErlNifResourceType *pyn_worker_type;
ErlNifResourceType *pyn_waiter_type;

__thread pyn_worker_t *pyn_self;

static struct {
    pthread_mutex_t lock;
    pyn_queue_t shared;
    pyn_worker_t *workers[PYN_MAX_WORKERS]; /* in service */
    int nworkers;
    pyn_worker_t *all[2 * PYN_MAX_WORKERS]; /* threads still running */
    int nall;
    int nfree;   /* in service and unbound: can serve the shared queue */
    int replacing; /* workers retired and not yet replaced by the pool */
    pyn_worker_t *spinner; /* the worker polling for work, if any */
    int spinner_claimed;   /* a job was queued for the poller already */
    int spinner_bound;     /* the poller was bound when it began (a hint) */
    int spinner_busy;      /* the poller frees deferred objects (atomic) */
    int gil_waiters;       /* workers waiting to take the GIL (atomic) */
    int sem_max, sem_cur;  /* overload semaphore: slots, slots held */
    pyn_queue_t slot_wait; /* requests waiting for a slot */
    int nidle;             /* parked unbound workers in service */
    int nbusy;             /* workers in service running a job */
    int pending; /* queued requests (control jobs not counted) */
    int running; /* attached and not shut down */
    int has_pool;
    ErlNifPid pool_pid, runner_pid;
    int grace_ms;
    /* watchdog */
    pthread_cond_t wd_cond;
    int wd_kick;
    /* boot */
    int booted, boot_rc;
    char boot_err[256];
    pthread_cond_t boot_cond;
} P = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .wd_cond = PTHREAD_COND_INITIALIZER,
    .boot_cond = PTHREAD_COND_INITIALIZER,
    .grace_ms = 1000,
    .sem_max = 5,
};

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* How often the fast paths were taken (relaxed counters, for tests and
 * tuning; apart from the pool lock's cache line). */
static struct {
    unsigned long handed_over, borrowed, revoked;
} __attribute__((aligned(64))) C;

void pyn_path_counts(unsigned long *handed_over, unsigned long *borrowed, unsigned long *revoked)
{
    *handed_over = __atomic_load_n(&C.handed_over, __ATOMIC_RELAXED);
    *borrowed = __atomic_load_n(&C.borrowed, __ATOMIC_RELAXED);
    *revoked = __atomic_load_n(&C.revoked, __ATOMIC_RELAXED);
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t pyn_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- queues (pool lock held) ------------------------------------------ */

static void q_push(pyn_queue_t *q, pyn_job_t *j)
{
    j->next = NULL;
    j->prev = q->tail;
    if (q->tail)
        q->tail->next = j;
    else
        __atomic_store_n(&q->head, j, __ATOMIC_RELAXED); /* polled unlocked */
    q->tail = j;
    j->queue = q;
}

/* Unlinks j from q, the queue it is on. */
static void q_unlink(pyn_queue_t *q, pyn_job_t *j)
{
    if (j->prev)
        j->prev->next = j->next;
    else
        __atomic_store_n(&q->head, j->next, __ATOMIC_RELAXED);
    if (j->next)
        j->next->prev = j->prev;
    else
        q->tail = j->prev;
    j->prev = j->next = NULL;
    j->queue = NULL;
}

static void q_remove(pyn_job_t *j)
{
    q_unlink(j->queue, j);
}

static pyn_job_t *q_pop(pyn_queue_t *q)
{
    pyn_job_t *j = q->head;
    if (j)
        q_unlink(q, j); /* not j->queue: the analyzer cannot know they agree */
    return j;
}

/* ---- resources ---------------------------------------------------------- */

static void job_dtor(ErlNifEnv *env, void *obj)
{
    pyn_job_t *j = obj;
    (void)env;
    if (j->env)
        enif_free_env(j->env);
    if (j->target)
        enif_release_resource(j->target);
}

/* Sends {Ref, {error, Reason}} for a job whose env nobody else uses, and
 * frees that env.  Pool lock held. */
static void reply_error_owned(ErlNifEnv *caller_env, pyn_job_t *j, ERL_NIF_TERM reason)
{
    if (j->has_caller && !j->cancelled) {
        ERL_NIF_TERM msg = enif_make_tuple2(
            j->env, j->ref, enif_make_tuple2(j->env, ATOMS.error, reason));
        enif_send(caller_env, &j->caller, j->env, msg);
    }
    j->cancelled = 1;
    enif_free_env(j->env);
    j->env = NULL;
}

/* Sends {Ref, {error, Reason}} for a job a worker is running: built in a
 * fresh env, since the worker owns the job's env.  Pool lock held. */
static void reply_error_running(ErlNifEnv *caller_env, pyn_job_t *j, ERL_NIF_TERM reason)
{
    if (j->has_caller && !j->cancelled) {
        ErlNifEnv *m = enif_alloc_env();
        ERL_NIF_TERM msg = enif_make_tuple2(m, enif_make_copy(m, j->ref),
                                            enif_make_tuple2(m, ATOMS.error, reason));
        enif_send(caller_env, &j->caller, m, msg);
        enif_free_env(m);
    }
    j->cancelled = 1;
}

static void kick_watchdog(void)
{
    P.wd_kick = 1;
    pthread_cond_signal(&P.wd_cond);
}

/* Pushes j (a queued job's reference) onto a list of jobs to demonitor and
 * release once the lock is dropped (release_dropped). */
static void drop_later(pyn_job_t *j, pyn_job_t **dropped)
{
    j->next = *dropped;
    *dropped = j;
}

/* ---- overload semaphore (pool lock held) ------------------------------- */

static int enqueue_locked(pyn_job_t *j);
static int target_error(pyn_job_t *j, ERL_NIF_TERM *err);
static void reply_error_owned(ErlNifEnv *caller_env, pyn_job_t *j, ERL_NIF_TERM reason);

/* Hands free slots to waiting requests, in order. */
static void admit_locked(ErlNifEnv *env, pyn_job_t **dropped)
{
    pyn_job_t *j;
    ERL_NIF_TERM err;

    while (P.sem_cur < P.sem_max && (j = q_pop(&P.slot_wait))) {
        j->has_slot = 1;
        P.sem_cur++;
        if (j->kind == PYN_JOB_SLOT) {
            /* Granted: the job now stands for the slot its caller holds. */
            ERL_NIF_TERM msg = enif_make_tuple2(j->env, j->ref, ATOMS.ok);
            enif_send(env, &j->caller, j->env, msg);
            j->state = PYN_JS_RUNNING;
            continue;
        }
        if (target_error(j, &err)) { /* its worker went away meanwhile */
            P.pending--;
            j->state = PYN_JS_DONE;
            reply_error_owned(env, j, err);
            j->has_slot = 0;
            P.sem_cur--;
            drop_later(j, dropped);
            continue;
        }
        (void)enqueue_locked(j);
    }
}

static void slot_release_locked(ErlNifEnv *env, pyn_job_t *j, pyn_job_t **dropped)
{
    if (!j->has_slot)
        return;
    j->has_slot = 0;
    P.sem_cur--;
    admit_locked(env, dropped);
}

/* Takes a queued job off its queue (lock held) and gives back its slot;
 * the job goes onto *dropped. */
static void drop_queued(ErlNifEnv *env, pyn_job_t *j, pyn_job_t **dropped)
{
    q_remove(j);
    if (j->has_caller && j->kind != PYN_JOB_SLOT)
        P.pending--;
    j->state = PYN_JS_DONE;
    slot_release_locked(env, j, dropped);
    drop_later(j, dropped);
}

/* Caller gave up or died.  Lock held.  A queued job is dropped (onto
 * *dropped); returns 1 if it was still waiting for a semaphore slot. */
static int cancel_locked(ErlNifEnv *env, pyn_job_t *j, pyn_job_t **dropped)
{
    int waited_for_slot = 0;

    switch (j->state) {
    case PYN_JS_QUEUED:
        waited_for_slot = j->queue == &P.slot_wait;
        drop_queued(env, j, dropped);
        break;
    case PYN_JS_RUNNING:
        if (j->kind == PYN_JOB_SLOT) { /* a held slot: its holder is gone */
            j->state = PYN_JS_DONE;
            slot_release_locked(env, j, dropped);
            drop_later(j, dropped);
            break;
        }
        if (j->worker)
            pthread_cond_signal(&j->worker->cond);
        kick_watchdog();
        break;
    default:
        break;
    }
    j->cancelled = 1;
    return waited_for_slot;
}

static void release_dropped(ErlNifEnv *env, pyn_job_t *list);

static void job_down(ErlNifEnv *env, void *obj, ErlNifPid *pid, ErlNifMonitor *mon)
{
    pyn_job_t *j = obj, *dropped = NULL;
    (void)pid;
    (void)mon;
    pthread_mutex_lock(&P.lock);
    j->monitored = 0;
    (void)cancel_locked(env, j, &dropped);
    pthread_mutex_unlock(&P.lock);
    release_dropped(env, dropped);
}

static void worker_dtor(ErlNifEnv *env, void *obj)
{
    pyn_worker_t *w = obj;
    (void)env;
    for (int i = 0; i < PYN_MAX_NEST; i++)
        if (w->slots[i].env)
            enif_free_env(w->slots[i].env);
    pthread_cond_destroy(&w->cond);
}

static void waiter_dtor(ErlNifEnv *env, void *obj)
{
    pyn_waiter_t *wt = obj;
    (void)env;
    if (wt->env)
        enif_free_env(wt->env);
    pthread_mutex_destroy(&wt->lock);
    pthread_cond_destroy(&wt->cond);
}

static void waiter_down(ErlNifEnv *env, void *obj, ErlNifPid *pid, ErlNifMonitor *mon)
{
    pyn_waiter_t *wt = obj;
    (void)env;
    (void)pid;
    (void)mon;
    pthread_mutex_lock(&wt->lock);
    wt->failed = 1;
    pthread_cond_signal(&wt->cond);
    pthread_mutex_unlock(&wt->lock);
}

static void areply_dtor(ErlNifEnv *env, void *obj)
{
    pyn_areply_t *r = obj;
    (void)env;
    if (r->env)
        enif_free_env(r->env);
    pthread_mutex_destroy(&r->lock);
}

pyn_areply_t *pyn_areply_new(ErlNifEnv *env, ERL_NIF_TERM ref)
{
    pyn_areply_t *r = enif_alloc_resource(pyn_areply_type, sizeof *r);
    if (!r)
        return NULL;
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->lock, NULL);
    enif_self(env, &r->caller);
    r->env = enif_alloc_env();
    r->ref = enif_make_copy(r->env, ref);
    return r;
}

int pyn_areply_send(pyn_areply_t *r, ErlNifEnv *msg_env, ERL_NIF_TERM reply)
{
    int sent = 0;
    pthread_mutex_lock(&r->lock);
    if (!r->done) {
        ERL_NIF_TERM msg = enif_make_tuple2(msg_env, enif_make_copy(msg_env, r->ref), reply);
        enif_send(NULL, &r->caller, msg_env, msg);
        r->done = r->sent = sent = 1;
    }
    pthread_mutex_unlock(&r->lock);
    return sent;
}

ERL_NIF_TERM pyn_areply_cancel(pyn_areply_t *r)
{
    ERL_NIF_TERM t;
    pthread_mutex_lock(&r->lock);
    t = r->sent ? ATOMS.sent : ATOMS.ok;
    r->done = 1;
    pthread_mutex_unlock(&r->lock);
    return t;
}

int pyn_resources_init(ErlNifEnv *env)
{
    ErlNifResourceTypeInit ri = {.dtor = areply_dtor};
    ErlNifResourceFlags fl = ERL_NIF_RT_CREATE | ERL_NIF_RT_TAKEOVER;
    ErlNifResourceTypeInit ji = {.dtor = job_dtor, .down = job_down};
    ErlNifResourceTypeInit wi = {.dtor = worker_dtor};
    ErlNifResourceTypeInit ti = {.dtor = waiter_dtor, .down = waiter_down};

    pyn_job_type = enif_open_resource_type_x(env, "py_job", &ji, fl, NULL);
    pyn_worker_type = enif_open_resource_type_x(env, "py_worker", &wi, fl, NULL);
    pyn_waiter_type = enif_open_resource_type_x(env, "py_waiter", &ti, fl, NULL);
    pyn_areply_type = enif_open_resource_type_x(env, "py_async_reply", &ri, fl, NULL);
    return (pyn_job_type && pyn_worker_type && pyn_waiter_type && pyn_areply_type) ? 0 : -1;
}

/* ---- jobs ---------------------------------------------------------------- */

pyn_job_t *pyn_job_new(pyn_kind_t kind)
{
    pyn_job_t *j = enif_alloc_resource(pyn_job_type, sizeof *j);
    if (!j)
        return NULL;
    memset(j, 0, sizeof *j);
    j->kind = kind;
    j->state = PYN_JS_NEW;
    j->env = enif_alloc_env();
    return j;
}

/* Wakes one parked worker that may serve the shared queue.  Lock held. */
static void wake_parked(void)
{
    for (int i = 0; i < P.nworkers; i++) {
        pyn_worker_t *w = P.workers[i];
        if (w->idle && !w->bound) {
            w->idle = 0;
            pthread_cond_signal(&w->cond);
            return;
        }
    }
}

/* Whether the poller may be promised shared job j (NULL: any job).  A
 * poller still freeing the objects of its last request (finalizers may
 * block) is promised only a borrowed request: its caller revokes it, and
 * wakes another worker, if it does not start soon.  Lock held. */
static int poller_takes(const pyn_job_t *j)
{
    return P.spinner && !P.spinner->bound && !P.spinner_claimed &&
           (!__atomic_load_n(&P.spinner_busy, __ATOMIC_ACQUIRE) ||
            (j && j->borrow == PYN_BR_BORROWED));
}

/* Wakes one parked worker that may serve the shared queue, unless the
 * polling worker will take job j (then returns 1).  Lock held. */
static int wake_one_free(const pyn_job_t *j)
{
    if (poller_takes(j)) {
        P.spinner_claimed = 1; /* the poller takes this one */
        return 1;
    }
    wake_parked();
    return 0;
}

/* Whether a new job for target (NULL: shared queue) will probably wait for
 * a worker.  A hint, read without the lock. */
static int likely_to_wait(pyn_worker_t *target, int nested)
{
    if (!nested && __atomic_load_n(&P.sem_cur, __ATOMIC_RELAXED) >=
                       __atomic_load_n(&P.sem_max, __ATOMIC_RELAXED))
        return 1; /* will wait for a semaphore slot */
    if (!target)
        return __atomic_load_n(&P.shared.head, __ATOMIC_RELAXED) != NULL ||
               (__atomic_load_n(&P.spinner, __ATOMIC_RELAXED) == NULL &&
                __atomic_load_n(&P.nidle, __ATOMIC_RELAXED) == 0);
    return __atomic_load_n(&target->current, __ATOMIC_RELAXED) != NULL ||
           __atomic_load_n(&target->own.head, __ATOMIC_RELAXED) != NULL;
}

int pyn_handoff_likely(pyn_worker_t *target, int patient)
{
    /* The poller is compared, never dereferenced: it may be exiting. */
    pyn_worker_t *sp = __atomic_load_n(&P.spinner, __ATOMIC_RELAXED);
    int ready = sp && (target ? sp == target : !__atomic_load_n(&P.spinner_bound, __ATOMIC_RELAXED));

    if (!ready && patient)
        ready = target ? __atomic_load_n(&target->idle, __ATOMIC_RELAXED)
                       : __atomic_load_n(&P.nidle, __ATOMIC_RELAXED) > 0;
    return ready && __atomic_load_n(&P.pending, __ATOMIC_RELAXED) == 0 &&
           __atomic_load_n(&P.nbusy, __ATOMIC_RELAXED) == 0;
}

/* Why job cannot go to its target now (lock held): 0 if it can. */
static int target_error(pyn_job_t *j, ERL_NIF_TERM *err)
{
    pyn_worker_t *t = j->target;

    if (!P.running)
        *err = ATOMS.not_running;
    else if (!t) /* a worker being replaced will serve the shared queue */
        *err = P.nfree == 0 && P.replacing == 0 ? ATOMS.no_workers_available : 0;
    else if (t->state != PYN_W_ALIVE)
        *err = ATOMS.worker_crashed;
    else if (!j->nested && (!t->bound || t->gen != j->gen))
        *err = ATOMS.context_not_bound;
    else
        *err = 0;
    return *err != 0;
}

/* Whether enqueue_locked(j) would hand j to an idle polling worker (lock
 * held; no side effect). */
static int poller_ready(const pyn_job_t *j)
{
    pyn_worker_t *t = j->target;

    if (!t)
        return poller_takes(j);
    return !j->nested && P.spinner == t && !t->current;
}

/* poller_ready, or for a patient job: a parked worker that the enqueue
 * wakes (lock held). */
static int starts_soon(const pyn_job_t *j)
{
    pyn_worker_t *t = j->target;

    if (poller_ready(j))
        return 1;
    if (!j->patient)
        return 0;
    return t ? t->idle && !t->current : P.nidle > 0;
}

/* Puts a job on its target's queue and wakes a worker (lock held).
 * Returns 1 if an idle worker polling its queues will take it. */
static int enqueue_locked(pyn_job_t *j)
{
    pyn_worker_t *t = j->target;

    if (!t) {
        q_push(&P.shared, j);
        return wake_one_free(j);
    } else if (j->nested) {
        q_push(&t->nested, j);
        pthread_cond_signal(&t->cond);
        return 0;
    } else {
        q_push(&t->own, j);
        if (P.spinner != t) {
            pthread_cond_signal(&t->cond);
            return 0;
        }
        return !t->current;
    }
}

int pyn_submit(ErlNifEnv *env, pyn_job_t *job, pyn_worker_t *target, int nested,
               uint64_t gen, ERL_NIF_TERM *err)
{
    int want_handoff = job->handoff == PYN_HO_SPIN, handoff;

    job->handoff = PYN_HO_NONE;
    enif_self(env, &job->caller);
    job->has_caller = 1;
    job->submitted_at = pyn_now_ms();
    job->target = target;
    job->nested = nested;
    job->gen = gen;
    if (target)
        enif_keep_resource(target);
    /* A job that will wait in a queue is tied to its caller's life, so that
     * it is dropped if the caller dies first.  A job that starts at once
     * skips the monitor (it costs about as much as the rest of the call);
     * it is monitored later only if it waits for a callback. */
    if (likely_to_wait(target, nested) && enif_monitor_process(env, job, &job->caller, &job->mon) == 0)
        job->monitored = 1;

    pthread_mutex_lock(&P.lock);
    if (target_error(job, err)) {
        pthread_mutex_unlock(&P.lock);
        if (job->monitored) {
            enif_demonitor_process(env, job, &job->mon);
            job->monitored = 0;
        }
        job->has_caller = 0;
        return -1;
    }
    /* Hand-over only for a request that an idle poller takes at once while
     * nothing else runs: the caller's scheduler then has no other request
     * to serve meanwhile.  Decided before the worker can see the job. */
    job->solo = P.pending == 0 && P.nbusy == 0;
    handoff = want_handoff && !nested && job->solo &&
              P.sem_cur < P.sem_max && !P.slot_wait.head && starts_soon(job);
    if (job->borrow == PYN_BR_BORROWED && !handoff) {
        /* A borrowed request must be copied after all: the caller copies it
         * and submits again. */
        pthread_mutex_unlock(&P.lock);
        if (job->monitored) {
            enif_demonitor_process(env, job, &job->mon);
            job->monitored = 0;
        }
        job->has_caller = 0;
        if (target)
            enif_release_resource(target);
        job->target = NULL;
        return 1;
    }
    job->state = PYN_JS_QUEUED;
    P.pending++;
    enif_keep_resource(job); /* the queue's reference */
    if (nested) {
        (void)enqueue_locked(job); /* nested work never waits for a slot */
    } else if (P.sem_cur < P.sem_max && !P.slot_wait.head) {
        job->has_slot = 1;
        P.sem_cur++;
        job->handoff = handoff ? PYN_HO_SPIN : PYN_HO_NONE;
        (void)enqueue_locked(job);
    } else {
        q_push(&P.slot_wait, job);
    }
    pthread_mutex_unlock(&P.lock);
    return 0;
}

/* ---- borrowed requests ----------------------------------------------------
 * A request handed over to an idle poller is not copied: the worker reads
 * it on the caller's heap, which stays put while the caller is inside its
 * NIF.  The caller therefore does not leave the NIF while the worker may
 * read: j->borrow goes BORROWED -> READING (worker starts) -> RELEASED
 * (worker converted it to Python objects).  A caller that waited too long
 * for the worker to start revokes instead (BORROWED -> REVOKED), copies the
 * request into the job's env and publishes COPIED; the worker then uses the
 * copy.  Converting runs no Python code (garbage collection is held off),
 * so READING lasts as long as the data takes to convert. */

static void spin_until(const int *word, int value)
{
    while (__atomic_load_n(word, __ATOMIC_ACQUIRE) != value)
        cpu_relax();
}

void pyn_args_begin(pyn_job_t *j)
{
    int b = PYN_BR_BORROWED;

    if (__atomic_load_n(&j->borrow, __ATOMIC_ACQUIRE) == PYN_BR_NONE)
        return;
    if (!__atomic_compare_exchange_n(&j->borrow, &b, PYN_BR_READING, 0, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE) &&
        b == PYN_BR_REVOKED)
        spin_until(&j->borrow, PYN_BR_COPIED); /* the caller is copying it */
}

void pyn_args_end(pyn_job_t *j)
{
    int b = PYN_BR_READING;

    if (__atomic_compare_exchange_n(&j->borrow, &b, PYN_BR_RELEASED, 0, __ATOMIC_RELEASE,
                                    __ATOMIC_RELAXED))
        __atomic_add_fetch(&C.borrowed, 1, __ATOMIC_RELAXED);
}

/* Caller side: ends the borrow of req, waiting for the worker if it is
 * reading it (returns 0), else copying it into the job's env (returns 1). */
static int unborrow(pyn_job_t *j, ERL_NIF_TERM req)
{
    int b = PYN_BR_BORROWED;

    if (__atomic_compare_exchange_n(&j->borrow, &b, PYN_BR_REVOKED, 0, __ATOMIC_ACQ_REL,
                                    __ATOMIC_ACQUIRE)) {
        /* Copied into a fresh env outside the lock (it may be large), then
         * installed under it, with the reference: a job dropped meanwhile
         * has lost its env and needs neither.  The worker reads j->env and
         * j->req only once it sees COPIED. */
        ErlNifEnv *fresh = enif_alloc_env(), *old = NULL;
        ERL_NIF_TERM copy = enif_make_copy(fresh, req);

        __atomic_add_fetch(&C.revoked, 1, __ATOMIC_RELAXED);
        pthread_mutex_lock(&P.lock);
        if (j->state != PYN_JS_DONE && j->env) {
            j->ref = enif_make_copy(fresh, j->ref);
            j->req = copy;
            old = j->env;
            j->env = fresh;
            fresh = NULL;
        }
        /* Still queued: the worker promised it may be stuck freeing a
         * previous request's objects; let another one take it. */
        if (j->state == PYN_JS_QUEUED && !j->target)
            wake_parked();
        __atomic_store_n(&j->borrow, PYN_BR_COPIED, __ATOMIC_RELEASE);
        pthread_mutex_unlock(&P.lock);
        if (old)
            enif_free_env(old);
        if (fresh)
            enif_free_env(fresh);
        return 1;
    }
    if (b == PYN_BR_READING)
        spin_until(&j->borrow, PYN_BR_RELEASED);
    return 0;
}

/* Polls for the reply: first, for a borrowed request, until the worker
 * has read it (giving up on a worker that has not started by start_by),
 * then for PYN_CALLER_SPIN_NS more. */
int pyn_await_inline(ErlNifEnv *env, pyn_job_t *j, ERL_NIF_TERM req, ERL_NIF_TERM *reply,
                     int64_t *waited_ns)
{
    int64_t t0 = now_ns(), now, until = -1;
    int64_t start_by = t0 + (j->patient ? PYN_PATIENT_SPIN_NS : PYN_START_SPIN_NS);
    int spin = PYN_HO_SPIN;

    for (unsigned i = 1;; i++) {
        if (__atomic_load_n(&j->handoff, __ATOMIC_ACQUIRE) == PYN_HO_READY)
            break;
        cpu_relax();
        if ((i & 63) != 0)
            continue;
        now = now_ns();
        switch (__atomic_load_n(&j->borrow, __ATOMIC_ACQUIRE)) {
        case PYN_BR_BORROWED:
            if (now < start_by)
                continue;
            /* Copied after all (the reply comes by message), or the worker
             * had just begun: then it was waited for, and polling goes on. */
            until = unborrow(j, req) ? 0 : now_ns() + PYN_CALLER_SPIN_NS;
            break;
        case PYN_BR_READING:
            continue; /* the worker reads the caller's heap: stay */
        default:
            if (until < 0)
                until = now + PYN_CALLER_SPIN_NS;
        }
        if (now >= until && __atomic_compare_exchange_n(&j->handoff, &spin, PYN_HO_GAVEUP, 0,
                                                        __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
            *waited_ns = now_ns() - t0;
            return 0; /* the worker will send the reply */
        }
    }
    *waited_ns = now_ns() - t0;
    __atomic_add_fetch(&C.handed_over, 1, __ATOMIC_RELAXED);
    /* READY: the worker no longer touches the env. */
    *reply = enif_make_copy(env, j->result);
    enif_free_env(j->env);
    j->env = NULL;
    return 1;
}

ERL_NIF_TERM pyn_cancel(ErlNifEnv *env, pyn_job_t *j)
{
    ERL_NIF_TERM r = ATOMS.ok;
    pyn_job_t *dropped = NULL;
    int cur = 0, max = 0;

    pthread_mutex_lock(&P.lock);
    if (j->state == PYN_JS_DONE && !j->cancelled) {
        r = ATOMS.sent; /* the reply is in the caller's mailbox */
    } else if (cancel_locked(env, j, &dropped)) {
        cur = P.sem_cur;
        max = P.sem_max;
        r = 0;
    }
    pthread_mutex_unlock(&P.lock);
    release_dropped(env, dropped);
    if (!r)
        r = enif_make_tuple3(env, ATOMS.overloaded, enif_make_int(env, cur), enif_make_int(env, max));
    return r;
}

void pyn_sem_info(int *current, int *max)
{
    pthread_mutex_lock(&P.lock);
    *current = P.sem_cur;
    *max = P.sem_max;
    pthread_mutex_unlock(&P.lock);
}

void pyn_sem_set_max(ErlNifEnv *env, int max)
{
    pyn_job_t *dropped = NULL;
    pthread_mutex_lock(&P.lock);
    P.sem_max = max;
    admit_locked(env, &dropped);
    pthread_mutex_unlock(&P.lock);
    release_dropped(env, dropped);
}

int pyn_slot_request(ErlNifEnv *env, pyn_job_t *j, ERL_NIF_TERM *err)
{
    enif_self(env, &j->caller);
    j->has_caller = 1;
    /* Always monitored: a slot must come back when its holder dies. */
    if (enif_monitor_process(env, j, &j->caller, &j->mon) != 0) {
        *err = ATOMS.badarg;
        j->has_caller = 0;
        return -1;
    }
    j->monitored = 1;
    pthread_mutex_lock(&P.lock);
    j->state = PYN_JS_QUEUED;
    enif_keep_resource(j); /* the queue's, then the held slot's reference */
    q_push(&P.slot_wait, j);
    {
        pyn_job_t *dropped = NULL;
        admit_locked(env, &dropped);
        pthread_mutex_unlock(&P.lock);
        release_dropped(env, dropped);
    }
    return 0;
}

int pyn_slot_release(ErlNifEnv *env, pyn_job_t *j)
{
    pyn_job_t *dropped = NULL;
    int held = 0;

    pthread_mutex_lock(&P.lock);
    if (j->kind == PYN_JOB_SLOT && j->state == PYN_JS_RUNNING) {
        held = 1;
        j->state = PYN_JS_DONE;
        j->cancelled = 1;
        slot_release_locked(env, j, &dropped);
        drop_later(j, &dropped);
    }
    pthread_mutex_unlock(&P.lock);
    release_dropped(env, dropped);
    return held;
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

/* ---- running a job (worker thread, GIL held) -------------------------- */

static void finish_job(pyn_worker_t *w, pyn_job_t *j, ERL_NIF_TERM result)
{
    int clear_interrupt, monitored, handed = 0;
    pyn_job_t *dropped = NULL;

    pthread_mutex_lock(&P.lock);
    if (j->has_caller && !j->cancelled) {
        int spin = PYN_HO_SPIN;
        j->result = result;
        /* The caller still polls: the reply (and env) are its own now. */
        handed = __atomic_compare_exchange_n(&j->handoff, &spin, PYN_HO_READY, 0,
                                             __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
        if (!handed) {
            ERL_NIF_TERM msg = enif_make_tuple2(j->env, j->ref, result);
            enif_send(NULL, &j->caller, j->env, msg);
        }
    }
    j->state = PYN_JS_DONE;
    if (!j->prev)
        w->poll_ns = j->solo ? PYN_SPIN_LONG_NS : PYN_SPIN_NS;
    w->current = j->prev; /* back to the job it was nested in */
    j->prev = NULL;
    if (!w->current && w->state == PYN_W_ALIVE)
        P.nbusy--;
    /* A worker back from a top-level job looks at the queues before it
     * parks: it stands as the poller, so a submit meanwhile need not wake
     * another worker (a futex wake on the caller's path). */
    if (!w->current && !w->bound && !P.spinner) {
        P.spinner = w;
        P.spinner_bound = w->bound;
        P.spinner_claimed = 0;
        /* Busy until it has freed what this job kept (release_deferred). */
        __atomic_store_n(&P.spinner_busy, pyx_has_later(w), __ATOMIC_RELEASE);
    }
    clear_interrupt = j->interrupt_sent;
    monitored = j->monitored; /* the watchdog may have set it */
    j->monitored = 0;
    slot_release_locked(NULL, j, &dropped);
    pthread_mutex_unlock(&P.lock);
    release_dropped(NULL, dropped);

    if (clear_interrupt)
        pyr_clear_interrupt(w->py_tid);
    if (monitored)
        enif_demonitor_process(NULL, j, &j->mon);
    if (!handed) {
        enif_free_env(j->env);
        j->env = NULL;
    }
    enif_release_resource(j);
}

/* Marks j running on w (lock held).  The job's prev link, unused while it
 * is off the queues, remembers the job it is nested in. */
static void start_job(pyn_worker_t *w, pyn_job_t *j)
{
    if (!j->target && P.shared.head)
        wake_one_free(NULL); /* more shared work: another worker can start it */
    j->state = PYN_JS_RUNNING;
    j->started_at = pyn_now_ms();
    j->worker = w;
    j->prev = w->current;
    if (!w->current)
        P.nbusy++;
    w->current = j;
    if (j->has_caller)
        P.pending--;
}

static int work_visible(pyn_worker_t *w);

/* Frees what finished jobs kept (pyx_release_later).  Finalizers may run
 * any Python code, block or release the GIL: meanwhile w, if it stands as
 * the poller, is marked busy, and is promised only borrowed requests,
 * whose callers do not wait long for it (poller_takes). */
static void release_deferred(pyn_worker_t *w)
{
    if (!pyx_has_later(w))
        return;
    pyx_release_later(w);
    /* Only w makes itself the poller or stops being it; finish_job marked
     * it busy if it had objects to free. */
    if (__atomic_load_n(&P.spinner, __ATOMIC_RELAXED) == w)
        __atomic_store_n(&P.spinner_busy, 0, __ATOMIC_RELEASE);
}

static void run_job(pyn_worker_t *w, pyn_job_t *j)
{
    ERL_NIF_TERM result = pyx_run(w, j);
    finish_job(w, j, result);
    /* Arguments and result, now that it is answered; after the next job if
     * one is already waiting. */
    if (!work_visible(w))
        release_deferred(w);
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

/* Polls (lock not held) until one of three words is non-zero or
 * PYN_SPIN_NS passes.  The words are hints; the caller re-checks them under
 * the lock. */
static void poll_until(int *a, pyn_job_t **b, int *c)
{
    int64_t until = now_ns() + PYN_SPIN_NS;

    for (unsigned i = 1;; i++) {
        if (__atomic_load_n(a, __ATOMIC_ACQUIRE) || __atomic_load_n(b, __ATOMIC_RELAXED) ||
            __atomic_load_n(c, __ATOMIC_RELAXED))
            return;
        cpu_relax();
        if ((i & 63) == 0 && now_ns() >= until)
            return;
    }
}

/* Polls for up to w->poll_ns.  Called and returns with the lock held. */
static void spin(pyn_worker_t *w)
{
    int64_t until;

    P.spinner = w;
    P.spinner_bound = w->bound;
    __atomic_store_n(&P.spinner_busy, 0, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&P.lock);
    until = now_ns() + w->poll_ns;
    for (unsigned i = 1;; i++) {
        if (work_visible(w))
            break;
        cpu_relax();
        if ((i & 63) == 0 && now_ns() >= until)
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
        if ((j = q_pop(&w->nested)) || (j = q_pop(&w->own)) ||
            (!w->bound && (j = q_pop(&P.shared))))
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
        ((j = q_pop(&w->nested)) || (j = q_pop(&w->own)) ||
         (!w->bound && (j = q_pop(&P.shared))))) {
        release_poller(w);
        start_job(w, j);
    }
    pthread_mutex_unlock(&P.lock);
    return j;
}

static void unregister_thread(pyn_worker_t *w)
{
    pthread_mutex_lock(&P.lock);
    for (int i = 0; i < P.nall; i++) {
        if (P.all[i] == w) {
            P.all[i] = P.all[--P.nall];
            break;
        }
    }
    pthread_mutex_unlock(&P.lock);
}

static void *worker_main(void *arg)
{
    pyn_worker_t *w = arg;
    pyn_job_t *j;
    int ok;

    pyn_self = w;
    {
        char name[16];
        snprintf(name, sizeof name, "py_worker_%d", w->id % 10000);
        pthread_setname_np(pthread_self(), name);
    }
    w->tstate = pyr_thread_begin(&w->py_tid);
    pyr_gil_acquire(w->tstate);
    ok = pyx_worker_init(w) == 0;
    pyr_gil_release();
    if (ok) {
        while ((j = next_job(w))) {
            __atomic_add_fetch(&P.gil_waiters, 1, __ATOMIC_RELAXED);
            pyr_gil_acquire(w->tstate);
            __atomic_sub_fetch(&P.gil_waiters, 1, __ATOMIC_RELAXED);
            /* While work is queued, keep the GIL: handing it to another
             * worker between two short jobs costs more than the jobs. */
            do
                run_job(w, j);
            while ((j = try_next_job(w)));
            release_deferred(w);
            pyr_gil_release();
        }
    }
    pyr_gil_acquire(w->tstate);
    pyx_worker_fini(w);
    pyr_gil_release();
    pyr_thread_end(w->tstate);
    w->tstate = NULL;
    unregister_thread(w);
    enif_release_resource(w); /* the thread's reference */
    return NULL;
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
    if (P.nworkers >= PYN_MAX_WORKERS || P.nall >= 2 * PYN_MAX_WORKERS) {
        pthread_mutex_unlock(&P.lock);
        snprintf(err, errlen, "too many workers");
        enif_release_resource(w);
        return NULL;
    }
    /* In service at once: jobs may queue while the thread starts. */
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

/* Lock held.  Takes w out of service: answers its queued jobs (moved onto
 * *dropped, linked by next, for release_dropped after unlocking) and the
 * jobs it runs.  Returns 1 if the table reference must then be released. */
static int retire_locked(ErlNifEnv *env, pyn_worker_t *w, ERL_NIF_TERM reason,
                         pyn_job_t **dropped)
{
    pyn_job_t *j;

    if (w->state != PYN_W_ALIVE)
        return 0;
    w->state = PYN_W_RETIRED;
    if (P.running)
        P.replacing++; /* the pool starts a replacement */
    for (int i = 0; i < P.nworkers; i++) {
        if (P.workers[i] == w) {
            P.workers[i] = P.workers[--P.nworkers];
            break;
        }
    }
    if (!w->bound)
        P.nfree--;
    if (w->current)
        P.nbusy--;
    while ((j = q_pop(&w->nested)) || (j = q_pop(&w->own))) {
        if (j->has_caller)
            P.pending--;
        j->state = PYN_JS_DONE;
        reply_error_owned(env, j, reason);
        slot_release_locked(env, j, dropped);
        drop_later(j, dropped);
    }
    for (j = w->current; j; j = j->prev) {
        reply_error_running(env, j, reason);
        /* Its caller was answered: the request no longer counts against
         * the semaphore, even if its thread runs on (stuck in C). */
        slot_release_locked(env, j, dropped);
    }
    pthread_cond_signal(&w->cond);
    kick_watchdog();
    return 1;
}

/* Demonitors and releases jobs taken off queues.  Pool lock NOT held. */
static void release_dropped(ErlNifEnv *env, pyn_job_t *list)
{
    while (list) {
        pyn_job_t *j = list;
        list = j->next;
        j->next = NULL;
        if (j->monitored) {
            enif_demonitor_process(env, j, &j->mon);
            j->monitored = 0;
        }
        enif_release_resource(j);
    }
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

uint64_t pyn_worker_bind(pyn_worker_t *w, int bind)
{
    pyn_job_t *wipe = pyn_job_new(PYN_JOB_WIPE);
    uint64_t gen = 0;

    pthread_mutex_lock(&P.lock);
    /* Not a worker still running a request its caller gave up on: it may
     * be replaced when the grace period ends, losing the new binding. */
    if (bind && w->current && w->current->cancelled) {
        pthread_mutex_unlock(&P.lock);
        if (wipe)
            enif_release_resource(wipe);
        return 0;
    }
    if (w->state == PYN_W_ALIVE && wipe && w->bound != bind) {
        w->bound = bind;
        w->gen++;
        P.nfree += bind ? -1 : 1;
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

/* ---- pool attach / shutdown ------------------------------------------- */

/* Retires every worker in service and answers the shared queue with
 * {error, Reason}. */
static void retire_all(ErlNifEnv *env, ERL_NIF_TERM reason)
{
    pyn_job_t *dropped = NULL, *j;
    pyn_worker_t *rel[PYN_MAX_WORKERS];
    int nrel = 0;

    pthread_mutex_lock(&P.lock);
    while (P.nworkers > 0) {
        pyn_worker_t *w = P.workers[0];
        if (retire_locked(env, w, reason, &dropped))
            rel[nrel++] = w;
    }
    /* Waiting requests first, so that none is admitted meanwhile. */
    while ((j = q_pop(&P.slot_wait)) || (j = q_pop(&P.shared))) {
        if (j->kind != PYN_JOB_SLOT)
            P.pending--;
        j->state = PYN_JS_DONE;
        reply_error_owned(env, j, reason);
        slot_release_locked(env, j, &dropped);
        drop_later(j, &dropped);
    }
    pthread_mutex_unlock(&P.lock);
    release_dropped(env, dropped);
    for (int i = 0; i < nrel; i++)
        enif_release_resource(rel[i]);
}

void pyn_pool_attach(ErlNifEnv *env, const ErlNifPid *pool, const ErlNifPid *runner,
                     int grace_ms)
{
    retire_all(env, ATOMS.not_running);
    pthread_mutex_lock(&P.lock);
    P.replacing = 0;
    P.pool_pid = *pool;
    P.runner_pid = *runner;
    P.has_pool = 1;
    P.grace_ms = grace_ms;
    P.running = 1;
    pthread_mutex_unlock(&P.lock);
}

void pyn_pool_shutdown(ErlNifEnv *env)
{
    pthread_mutex_lock(&P.lock);
    P.running = 0;
    P.has_pool = 0;
    pthread_mutex_unlock(&P.lock);
    retire_all(env, ATOMS.not_running);
}

/* ---- callbacks ---------------------------------------------------------- */

void pyn_callback_monitor(pyn_worker_t *w)
{
    pyn_job_t *j = w->current;
    if (j && j->has_caller && !j->monitored &&
        enif_monitor_process(NULL, j, &j->caller, &j->mon) == 0)
        j->monitored = 1;
    else if (j && j->has_caller && !j->monitored) {
        /* Already dead: behave as if the monitor fired. */
        pthread_mutex_lock(&P.lock);
        j->cancelled = 1;
        pthread_mutex_unlock(&P.lock);
    }
}

uint64_t pyn_callback_open(pyn_worker_t *w)
{
    uint64_t id = 0;
    pthread_mutex_lock(&P.lock);
    if (w->depth < PYN_MAX_NEST) {
        pyn_cbslot_t *s = &w->slots[w->depth++];
        id = ++w->cb_seq;
        s->id = id;
        s->ready = 0;
        s->env = NULL;
    }
    pthread_mutex_unlock(&P.lock);
    return id;
}

int pyn_callback_target(pyn_worker_t *w, ErlNifPid *pid, ErlNifEnv *msg_env,
                        ERL_NIF_TERM *ref)
{
    pyn_job_t *j = w->current; /* written by this thread only */
    if (j && j->sync && j->has_caller) {
        *pid = j->caller;
        *ref = enif_make_copy(msg_env, j->ref);
        return 1;
    }
    *ref = ATOMS.undefined;
    return pyn_runner_pid(pid) ? 0 : -1;
}

int pyn_callback_send(pyn_worker_t *w, const ErlNifPid *pid, ErlNifEnv *m, ERL_NIF_TERM msg)
{
    int rc = -1;
    pthread_mutex_lock(&P.lock);
    /* Under the lock, so that once pyn_cancel has returned no message about
     * the job can reach its caller any more. */
    if (!w->current->cancelled && w->state == PYN_W_ALIVE) {
        enif_send(NULL, pid, m, msg);
        rc = 0;
    }
    pthread_mutex_unlock(&P.lock);
    return rc;
}

int pyn_runner_pid(ErlNifPid *pid)
{
    int ok;
    pthread_mutex_lock(&P.lock);
    ok = P.has_pool;
    if (ok)
        *pid = P.runner_pid;
    pthread_mutex_unlock(&P.lock);
    return ok;
}

int pyn_callback_wait(pyn_worker_t *w, uint64_t id, ErlNifEnv **env, ERL_NIF_TERM *result)
{
    void *ts = pyr_gil_release();
    pyn_job_t *me = w->current, *j;
    pyn_cbslot_t *slot = NULL;
    int rc = -1, spun = 0;

    pthread_mutex_lock(&P.lock);
    for (int i = w->depth - 1; i >= 0; i--)
        if (w->slots[i].id == id)
            slot = &w->slots[i];
    w->waiting = 1;
    while (slot) {
        if (slot->ready) {
            *env = slot->env;
            *result = slot->result;
            slot->env = NULL;
            rc = 0;
            break;
        }
        if (me->cancelled || w->state != PYN_W_ALIVE)
            break;
        if ((j = q_pop(&w->nested))) {
            start_job(w, j);
            w->waiting = 0;
            pthread_mutex_unlock(&P.lock);
            pyr_gil_acquire(ts);
            run_job(w, j);
            ts = pyr_gil_release();
            pthread_mutex_lock(&P.lock);
            w->waiting = 1;
            continue;
        }
        if (!spun) {
            /* Poll first: an Erlang function usually answers in a few us. */
            spun = 1;
            pthread_mutex_unlock(&P.lock);
            poll_until(&slot->ready, &w->nested.head, &me->cancelled);
            pthread_mutex_lock(&P.lock);
            continue;
        }
        pthread_cond_wait(&w->cond, &P.lock);
    }
    w->waiting = 0;
    if (slot) {
        if (slot->env) /* arrived after we gave up */
            enif_free_env(slot->env);
        slot->env = NULL;
        slot->id = 0;
    }
    if (w->depth > 0 && w->slots[w->depth - 1].id == 0)
        w->depth--;
    pthread_mutex_unlock(&P.lock);
    pyr_gil_acquire(ts);
    return rc;
}

int pyn_callback_deliver(pyn_worker_t *w, uint64_t id, ERL_NIF_TERM result)
{
    ErlNifEnv *env = enif_alloc_env();
    ERL_NIF_TERM copy = enif_make_copy(env, result);
    int rc = -1;

    pthread_mutex_lock(&P.lock);
    for (int i = 0; i < w->depth; i++) {
        pyn_cbslot_t *s = &w->slots[i];
        if (s->id == id && !s->ready) {
            s->env = env;
            s->result = copy;
            s->ready = 1;
            env = NULL;
            rc = 0;
            pthread_cond_signal(&w->cond);
            break;
        }
    }
    pthread_mutex_unlock(&P.lock);
    if (env)
        enif_free_env(env);
    return rc;
}

/* ---- watchdog ------------------------------------------------------------ */

/* A job is overdue when its caller gave up while it runs Python code. */
static int overdue(pyn_worker_t *w)
{
    return w->current && w->current->cancelled && !w->waiting;
}

static void *watchdog_main(void *arg)
{
    void *ts;
    int rc;
    (void)arg;

    pthread_setname_np(pthread_self(), "py_watchdog");
    rc = pyr_start(P.boot_err, sizeof P.boot_err);
    pthread_mutex_lock(&P.lock);
    P.boot_rc = rc;
    P.booted = 1;
    pthread_cond_broadcast(&P.boot_cond);
    pthread_mutex_unlock(&P.lock);
    if (rc != 0)
        return NULL;
    ts = pyr_main_tstate();

    pthread_mutex_lock(&P.lock);
    for (;;) {
        int need_gil = 0, outstanding = 0;
        int64_t now = pyn_now_ms();

        for (int i = 0; i < P.nall; i++) {
            pyn_worker_t *w = P.all[i];
            if (!overdue(w))
                continue;
            if (!w->current->interrupt_sent) {
                need_gil = 1;
            } else if (w->state == PYN_W_ALIVE) {
                if (now - w->current->interrupt_at >= P.grace_ms) {
                    /* Stuck where it cannot be interrupted: replace it. */
                    pyn_job_t *dropped = NULL;
                    retire_locked(NULL, w, ATOMS.worker_crashed, &dropped);
                    if (P.has_pool) {
                        ErlNifEnv *m = enif_alloc_env();
                        ERL_NIF_TERM msg = enif_make_tuple2(m, ATOMS.py_worker_lost,
                                                            enif_make_int(m, w->id));
                        enif_send(NULL, &P.pool_pid, m, msg);
                        enif_free_env(m);
                    }
                    pthread_mutex_unlock(&P.lock);
                    release_dropped(NULL, dropped);
                    enif_release_resource(w); /* the table's reference */
                    pthread_mutex_lock(&P.lock);
                    need_gil = 0;
                    outstanding = 1;
                    break; /* the table changed: rescan */
                }
                outstanding = 1;
            }
        }
        if (need_gil) {
            pthread_mutex_unlock(&P.lock);
            pyr_gil_acquire(ts);
            pthread_mutex_lock(&P.lock);
            now = pyn_now_ms();
            for (int i = 0; i < P.nall; i++) {
                pyn_worker_t *w = P.all[i];
                if (overdue(w) && !w->current->interrupt_sent) {
                    pyr_interrupt(w->py_tid);
                    w->current->interrupt_sent = 1;
                    w->current->interrupt_at = now;
                }
            }
            pthread_mutex_unlock(&P.lock);
            ts = pyr_gil_release();
            pthread_mutex_lock(&P.lock);
            continue;
        }
        /* Requests that started at once were not tied to their caller's
         * life (it costs); one that runs for a while now is, so that the
         * death of its caller interrupts it. */
        for (int i = 0; i < P.nall; i++) {
            pyn_job_t *j = P.all[i]->current;
            if (j && j->has_caller && !j->monitored && !j->cancelled &&
                now - j->started_at >= PYN_LATE_MONITOR_MS) {
                if (enif_monitor_process(NULL, j, &j->caller, &j->mon) == 0) {
                    j->monitored = 1;
                } else { /* already dead */
                    j->cancelled = 1;
                    need_gil = !P.all[i]->waiting;
                    pthread_cond_signal(&P.all[i]->cond);
                }
            }
        }
        if (need_gil)
            continue;
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
    return NULL;
}

int pyn_pool_boot(char *err, size_t errlen)
{
    static pthread_t wd;
    static int started;
    pthread_attr_t attr;
    int rc;

    pthread_mutex_lock(&P.lock);
    if (!started) {
        started = 1;
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
