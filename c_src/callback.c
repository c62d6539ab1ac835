/* callback.c — Python calling back into Erlang from a worker: the
 * callback slots of a worker (one per nesting level), sending a request
 * to the caller or the callback runner, waiting for its reply while
 * running the nested jobs that the Erlang side makes meanwhile, and
 * delivering replies.  The `erlang` module (below the pool) reaches this
 * file only through the table pyn_callbacks_install gives it.
 *
 * Threads: cb_call on the worker thread, entered on entry and return (it
 * leaves while it waits); pyn_callback_deliver from a NIF.  Slots are
 * guarded by the pool lock. */
#include "atoms.h"
#include "pool_internal.h"
#include "py_erlang_mod.h"

/* *out = *pid when *set (read under the pool lock): 1, or 0. */
static int read_pid(const int *set, const ErlNifPid *pid, ErlNifPid *out)
{
    int ok;
    pthread_mutex_lock(&P.lock);
    ok = *set;
    if (ok)
        *out = *pid;
    pthread_mutex_unlock(&P.lock);
    return ok;
}

static int runner_pid(ErlNifPid *pid)
{
    return read_pid(&P.has_pool, &P.runner_pid, pid);
}

static void callback_monitor(pyn_worker_t *w)
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

static uint64_t callback_open(pyn_worker_t *w)
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

static int callback_target(pyn_worker_t *w, ErlNifPid *pid, ErlNifEnv *msg_env,
                        ERL_NIF_TERM *ref)
{
    pyn_job_t *j = w->current; /* written by this thread only */
    if (j && j->sync && j->has_caller) {
        *pid = j->caller;
        *ref = enif_make_copy(msg_env, j->ref);
        return 1;
    }
    *ref = ATOMS.undefined;
    return runner_pid(pid) ? 0 : -1;
}

static int callback_send(pyn_worker_t *w, const ErlNifPid *pid, ErlNifEnv *m, ERL_NIF_TERM msg)
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

/* Polls (lock not held) until one of three words is non-zero or
 * PYN_SPIN_NS passes.  The words are hints; the caller re-checks them under
 * the lock. */
static void poll_until(int *a, pyn_job_t **b, int *c)
{
    int64_t until = pyn_now_ns() + PYN_SPIN_NS;

    for (unsigned i = 1;; i++) {
        if (__atomic_load_n(a, __ATOMIC_ACQUIRE) || __atomic_load_n(b, __ATOMIC_RELAXED) ||
            __atomic_load_n(c, __ATOMIC_RELAXED))
            return;
        pyn_cpu_relax();
        if ((i & 63) == 0 && pyn_now_ns() >= until)
            return;
    }
}

static int callback_wait(pyn_worker_t *w, uint64_t id, ErlNifEnv **env, ERL_NIF_TERM *result)
{
    pyn_job_t *me = w->current, *j;
    pyn_cbslot_t *slot = NULL;
    int rc = -1, spun = 0;

    P.ex->leave(w->ex_ctx);
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
            P.ex->enter(w->ex_ctx);
            run_job(w, j);
            P.ex->leave(w->ex_ctx);
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
    P.ex->enter(w->ex_ctx);
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

/* The `erlang` module's erlang.call on a worker thread running a job:
 * sends {py_cb, {Worker, Id}, Name, Args} to the caller (synchronous
 * call) or the callback runner, and waits for the reply, running nested
 * jobs meanwhile.  GIL held on entry and return (left while waiting). */
static int cb_call(ErlNifEnv *m, ERL_NIF_TERM name, ERL_NIF_TERM args, ErlNifEnv **renv,
                   ERL_NIF_TERM *reply)
{
    pyn_worker_t *w = pyn_self;
    ErlNifPid pid;
    ERL_NIF_TERM ref, wterm, reply_to, msg;
    uint64_t id;
    int sync;

    if (!w || !w->current)
        return PYM_CB_NOT_WORKER;
    callback_monitor(w);
    sync = callback_target(w, &pid, m, &ref);
    if (sync < 0) {
        enif_free_env(m);
        return PYM_CB_NOT_RUNNING;
    }
    if (!(id = callback_open(w))) {
        enif_free_env(m);
        return PYM_CB_TOO_DEEP;
    }
    wterm = enif_make_resource(m, w);
    reply_to = enif_make_tuple2(m, wterm, enif_make_uint64(m, id));
    if (sync)
        msg = enif_make_tuple2(m, ref, enif_make_tuple4(m, ATOMS.py_cb, reply_to, name, args));
    else
        msg = enif_make_tuple5(m, ATOMS.py_cb, reply_to, wterm, name, args);
    /* If the job was cancelled the request is not sent, and the wait below
     * returns at once. */
    (void)callback_send(w, &pid, m, msg);
    enif_free_env(m);
    return callback_wait(w, id, renv, reply) < 0 ? PYM_CB_CANCELLED : PYM_CB_OK;
}

/* The pid of the process whose request runs on this thread, if any. */
static int cb_caller(ErlNifPid *pid)
{
    pyn_worker_t *w = pyn_self; /* w->current is written by this thread only */
    if (w && w->current && w->current->has_caller) {
        *pid = w->current->caller;
        return 1;
    }
    return 0;
}

/* Where Python's log records go (py_log), and this thread's worker id
 * (0 on other threads). */
static int log_sink(ErlNifPid *pid, int *worker)
{
    *worker = pyn_self ? pyn_self->id : 0;
    return read_pid(&P.has_log, &P.log_pid, pid);
}

void pyn_set_log_sink(const ErlNifPid *pid)
{
    pthread_mutex_lock(&P.lock);
    P.has_log = pid != NULL;
    if (pid)
        P.log_pid = *pid;
    pthread_mutex_unlock(&P.lock);
}

/* Whether the request running on this thread was given up; its caller is
 * monitored from the first ask (a long wait outlives the start-up skip). */
static int cb_cancelled(void)
{
    pyn_worker_t *w = pyn_self;
    int cancelled;
    if (!w || !w->current)
        return 0;
    callback_monitor(w);
    pthread_mutex_lock(&P.lock);
    cancelled = w->current->cancelled;
    pthread_mutex_unlock(&P.lock);
    return cancelled;
}

static const pym_host_t host = {
    .call = cb_call,
    .caller = cb_caller,
    .runner = runner_pid,
    .log_sink = log_sink,
    .cancelled = cb_cancelled,
};

void pyn_callbacks_install(void)
{
    pym_set_host(&host);
    if (P.ex->set_callback)
        P.ex->set_callback(cb_call);
}
