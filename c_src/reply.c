/* reply.c — where a call is answered.  A worker's reply goes to the
 * caller by message, or, when the caller still polls in its NIF (the
 * inline hand-over, PYN_HO_*), is left in the job for it to copy; the
 * caller's side of that polling, and of a borrowed request (read by the
 * worker on the caller's heap, PYN_BR_*), is here too.
 *
 * Threads: finish_job runs on the worker thread, entered (GIL held), and
 * takes the pool lock; pyn_await_inline runs in the caller's NIF and is
 * lock-free but for a revoked borrow. */
#include "atoms.h"
#include "pool_internal.h"

void finish_job(pyn_worker_t *w, pyn_job_t *j, ERL_NIF_TERM result)
{
    int clear_interrupt, monitored, handed = 0;
    pyn_job_t *dropped = NULL;

    pthread_mutex_lock(&P.lock);
    metrics_done_locked(w, j, result);
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
        __atomic_store_n(&P.spinner_busy, P.ex->has_deferred(w->ex_ctx), __ATOMIC_RELEASE);
    }
    clear_interrupt = j->interrupt_sent;
    monitored = j->monitored; /* the watchdog may have set it */
    j->monitored = 0;
    slot_release_locked(NULL, j, &dropped);
    pthread_mutex_unlock(&P.lock);
    release_dropped(NULL, dropped);

    if (clear_interrupt)
        P.ex->clear_interrupt(w->ex_ctx);
    if (monitored)
        enif_demonitor_process(NULL, j, &j->mon);
    if (!handed) {
        enif_free_env(j->env);
        j->env = NULL;
    }
    enif_release_resource(j);
}

/* Borrowed requests.
 * A request handed over to an idle poller is not copied: the worker reads
 * it on the caller's heap, which stays put while the caller is inside its
 * NIF.  The caller therefore does not leave the NIF while the worker may
 * read: j->borrow goes BORROWED -> READING (worker starts) -> RELEASED
 * (worker converted it to Python objects).  A caller that waited too long
 * for the worker to start revokes instead (BORROWED -> REVOKED), copies the
 * request into the job's env and publishes COPIED; the worker then uses the
 * copy.  Converting runs no Python code (garbage collection is held off),
 * so READING lasts as long as the data takes to convert. */

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

        __atomic_add_fetch(&pyn_counts.revoked, 1, __ATOMIC_RELAXED);
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
        pyn_spin_until(&j->borrow, PYN_BR_RELEASED);
    return 0;
}

/* Polls for the reply: first, for a borrowed request, until the worker
 * has read it (giving up on a worker that has not started by start_by),
 * then for PYN_CALLER_SPIN_NS more. */
int pyn_await_inline(ErlNifEnv *env, pyn_job_t *j, ERL_NIF_TERM req, ERL_NIF_TERM *reply,
                     int64_t *waited_ns)
{
    int64_t t0 = pyn_now_ns(), now, until = -1;
    int64_t start_by = t0 + (j->patient ? PYN_PATIENT_SPIN_NS : PYN_START_SPIN_NS);
    int spin = PYN_HO_SPIN;

    for (unsigned i = 1;; i++) {
        if (__atomic_load_n(&j->handoff, __ATOMIC_ACQUIRE) == PYN_HO_READY)
            break;
        pyn_cpu_relax();
        if ((i & 63) != 0)
            continue;
        now = pyn_now_ns();
        switch (__atomic_load_n(&j->borrow, __ATOMIC_ACQUIRE)) {
        case PYN_BR_BORROWED:
            if (now < start_by)
                continue;
            /* Copied after all (the reply comes by message), or the worker
             * had just begun: then it was waited for, and polling goes on. */
            until = unborrow(j, req) ? 0 : pyn_now_ns() + PYN_CALLER_SPIN_NS;
            break;
        case PYN_BR_READING:
            continue; /* the worker reads the caller's heap: stay */
        default:
            if (until < 0)
                until = now + PYN_CALLER_SPIN_NS;
        }
        if (now >= until && __atomic_compare_exchange_n(&j->handoff, &spin, PYN_HO_GAVEUP, 0,
                                                        __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
            *waited_ns = pyn_now_ns() - t0;
            return 0; /* the worker will send the reply */
        }
    }
    *waited_ns = pyn_now_ns() - t0;
    __atomic_add_fetch(&pyn_counts.handed_over, 1, __ATOMIC_RELAXED);
    /* READY: the worker no longer touches the env. */
    *reply = enif_make_copy(env, j->result);
    enif_free_env(j->env);
    j->env = NULL;
    return 1;
}

void pyn_path_counts(unsigned long *handed_over, unsigned long *borrowed, unsigned long *revoked)
{
    *handed_over = __atomic_load_n(&pyn_counts.handed_over, __ATOMIC_RELAXED);
    *borrowed = __atomic_load_n(&pyn_counts.borrowed, __ATOMIC_RELAXED);
    *revoked = __atomic_load_n(&pyn_counts.revoked, __ATOMIC_RELAXED);
}
