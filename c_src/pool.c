/* pool.c — the pool as a whole: its resource types, attaching to the
 * Erlang pool process (py_pool) and its callback runner, and shutting
 * down.  Scheduler threads (NIFs), pool lock taken briefly. */
#include "atoms.h"
#include "pool_internal.h"
#include "py_erlang_mod.h"

int pyn_pool_borrows(void)
{
    return P.ex && P.ex->borrows;
}

int pyn_resources_init(ErlNifEnv *env)
{
    if (pyn_job_types_init(env, pyn_job_down) != 0 || pyn_worker_type_init(env) != 0)
        return -1;
    return pym_types_init(env);
}

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
                     int grace_ms, int max_abandoned)
{
    retire_all(env, ATOMS.not_running);
    pthread_mutex_lock(&P.lock);
    P.replacing = 0;
    P.pool_pid = *pool;
    P.runner_pid = *runner;
    P.has_pool = 1;
    P.grace_ms = grace_ms;
    P.max_abandoned = max_abandoned;
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
