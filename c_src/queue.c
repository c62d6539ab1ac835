/* queue.c — where a call is queued: the pool's state (P), the shared,
 * per-worker, nested and slot-wait queues, the overload semaphore that
 * admits requests in order, submission (with the decision to hand a reply
 * over inline), cancellation by a caller that gave up or died, and the
 * job state changes every other pool file makes under the pool lock
 * (start, retire).
 *
 * Threads: NIFs (scheduler threads) submit, cancel and take slots; worker
 * threads start jobs; the watchdog retires workers.  Everything here runs
 * under the pool lock, held briefly and never while acquiring anything
 * else (pool_internal.h); release_dropped runs after it is dropped. */
#include <string.h>

#include "atoms.h"
#include "pool_internal.h"

pyn_pool_t P = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .wd_cond = PTHREAD_COND_INITIALIZER,
    .boot_cond = PTHREAD_COND_INITIALIZER,
    .grace_ms = 1000,
    .sem_max = 5,
};

void q_push(pyn_queue_t *q, pyn_job_t *j)
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

pyn_job_t *q_pop(pyn_queue_t *q)
{
    pyn_job_t *j = q->head;
    if (j)
        q_unlink(q, j); /* not j->queue: the analyzer cannot know they agree */
    return j;
}

/* Sends {Ref, {error, Reason}} for a job whose env nobody else uses, and
 * frees that env.  Pool lock held. */
void reply_error_owned(ErlNifEnv *caller_env, pyn_job_t *j, ERL_NIF_TERM reason)
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
void reply_error_running(ErlNifEnv *caller_env, pyn_job_t *j, ERL_NIF_TERM reason)
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

void kick_watchdog(void)
{
    P.wd_kick = 1;
    pthread_cond_signal(&P.wd_cond);
}

/* Pushes j (a queued job's reference) onto a list of jobs to demonitor and
 * release once the lock is dropped (release_dropped). */
void drop_later(pyn_job_t *j, pyn_job_t **dropped)
{
    j->next = *dropped;
    *dropped = j;
}

/* Wakes one parked worker that may serve the shared queue.  Lock held. */
void wake_parked(void)
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
int wake_one_free(const pyn_job_t *j)
{
    if (poller_takes(j)) {
        P.spinner_claimed = 1; /* the poller takes this one */
        return 1;
    }
    wake_parked();
    return 0;
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

void slot_release_locked(ErlNifEnv *env, pyn_job_t *j, pyn_job_t **dropped)
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

/* Demonitors and releases jobs taken off queues.  Pool lock NOT held. */
void release_dropped(ErlNifEnv *env, pyn_job_t *list)
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

void pyn_job_down(ErlNifEnv *env, void *obj, ErlNifPid *pid, ErlNifMonitor *mon)
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

/* Whether a new job for target (NULL: shared queue) will probably wait for
 * a worker.  A hint, read without the lock. */
static int likely_to_wait(pyn_worker_t *target, int nested)
{
    if (!nested && !target && __atomic_load_n(&P.sem_cur, __ATOMIC_RELAXED) >=
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

int pyn_submit(ErlNifEnv *env, pyn_job_t *job, pyn_worker_t *target, int nested,
               uint64_t gen, ERL_NIF_TERM *err)
{
    int want_handoff = job->handoff == PYN_HO_SPIN, handoff, admitted;

    job->handoff = PYN_HO_NONE;
    enif_self(env, &job->caller);
    job->has_caller = 1;
    job->submitted_ns = pyn_now_ns();
    job->submitted_at = job->submitted_ns / 1000000;
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
    /* A request to a bound worker takes no slot: its caller holds its share
     * of the pool already (the worker).  Were it to wait for a slot, unbound
     * requests holding every slot while they wait for a worker would wait
     * on it in turn: a deadlock until some call ends. */
    admitted = target || (P.sem_cur < P.sem_max && !P.slot_wait.head);
    handoff = want_handoff && !nested && job->solo && admitted && starts_soon(job);
    if (job->borrow == PYN_BR_BORROWED && (!handoff || !P.ex->borrows)) {
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
    } else if (admitted) {
        if (!target) {
            job->has_slot = 1;
            P.sem_cur++;
        }
        job->handoff = handoff ? PYN_HO_SPIN : PYN_HO_NONE;
        (void)enqueue_locked(job);
    } else {
        q_push(&P.slot_wait, job);
    }
    pthread_mutex_unlock(&P.lock);
    return 0;
}

/* Counts a request its caller gives up (timeout) in the counters of the
 * worker running it, or as given up in the queue (lock held).  One that
 * waited for a semaphore slot is overloaded, not counted. */
static void count_timeout_locked(const pyn_job_t *j)
{
    if (j->kind == PYN_JOB_SLOT || !j->has_caller || j->cancelled)
        return;
    if (j->state == PYN_JS_RUNNING && j->worker)
        j->worker->metrics.timeouts++;
    else if (j->state == PYN_JS_QUEUED && j->queue != &P.slot_wait)
        P.queued_timeouts++;
}

ERL_NIF_TERM pyn_cancel(ErlNifEnv *env, pyn_job_t *j)
{
    ERL_NIF_TERM r = ATOMS.ok;
    pyn_job_t *dropped = NULL;
    int cur = 0, max = 0;

    pthread_mutex_lock(&P.lock);
    if (j->state == PYN_JS_DONE && !j->cancelled) {
        r = ATOMS.sent; /* the reply is in the caller's mailbox */
    } else {
        count_timeout_locked(j);
        if (cancel_locked(env, j, &dropped)) {
            cur = P.sem_cur;
            max = P.sem_max;
            r = 0;
        }
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

/* Marks j running on w (lock held).  The job's prev link, unused while it
 * is off the queues, remembers the job it is nested in. */
void start_job(pyn_worker_t *w, pyn_job_t *j)
{
    if (!j->target && P.shared.head)
        wake_one_free(NULL); /* more shared work: another worker can start it */
    j->state = PYN_JS_RUNNING;
    j->started_at = pyn_now_ms();
    j->worker = w;
    __atomic_store_n(&j->worker_id, w->id, __ATOMIC_RELAXED);
    j->prev = w->current;
    if (!w->current)
        P.nbusy++;
    w->current = j;
    if (j->has_caller)
        P.pending--;
}

/* Lock held.  Takes w out of service: answers its queued jobs (moved onto
 * *dropped, linked by next, for release_dropped after unlocking) and the
 * jobs it runs.  Returns 1 if the table reference must then be released. */
/* A retired worker's counters join those of the workers before it, so
 * that the pool's totals never go back (lock held). */
static void fold_metrics_locked(const pyn_wmetrics_t *m)
{
    P.retired.calls += m->calls;
    P.retired.answered += m->answered;
    P.retired.errors += m->errors;
    P.retired.timeouts += m->timeouts;
    for (int i = 0; i < PYN_LAT_BUCKETS; i++)
        P.retired.hist[i] += m->hist[i];
}

void tell_pool_lost_locked(pyn_worker_t *w)
{
    ErlNifEnv *m;
    if (!P.has_pool)
        return;
    m = enif_alloc_env();
    enif_send(NULL, &P.pool_pid, m,
              enif_make_tuple2(m, ATOMS.py_worker_lost, enif_make_int(m, w->id)));
    enif_free_env(m);
}

int retire_locked(ErlNifEnv *env, pyn_worker_t *w, ERL_NIF_TERM reason,
                         pyn_job_t **dropped)
{
    pyn_job_t *j;

    if (w->state != PYN_W_ALIVE)
        return 0;
    w->state = PYN_W_RETIRED;
    fold_metrics_locked(&w->metrics);
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
        if (j->has_caller) {
            P.pending--;
            P.crashed++;
        }
        j->state = PYN_JS_DONE;
        reply_error_owned(env, j, reason);
        slot_release_locked(env, j, dropped);
        drop_later(j, dropped);
    }
    for (j = w->current; j; j = j->prev) {
        if (j->has_caller && !j->cancelled)
            P.crashed++;
        reply_error_running(env, j, reason);
        /* Its caller was answered: the request no longer counts against
         * the semaphore, even if its thread runs on (stuck in C). */
        slot_release_locked(env, j, dropped);
    }
    pthread_cond_signal(&w->cond);
    kick_watchdog();
    return 1;
}
