/* job.c — the request object: its resource type, creation and release,
 * the worker side of the borrow protocol, the fast-path counters, and the
 * async reply handle of py:async_call.  Depends on nothing but atoms.h:
 * every layer above (Python-side code, executors, the pool) may use it.
 * No lock of the pool is taken here; the async reply handle has its own. */
#include <string.h>
#include <time.h>

#include "atoms.h"
#include "job.h"

ErlNifResourceType *pyn_job_type;
ErlNifResourceType *pyn_areply_type;
pyn_path_counts_t pyn_counts;

int64_t pyn_now_ns(void)
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

static void areply_dtor(ErlNifEnv *env, void *obj)
{
    pyn_areply_t *r = obj;
    (void)env;
    if (r->env)
        enif_free_env(r->env);
    pthread_mutex_destroy(&r->lock);
}

int pyn_job_types_init(ErlNifEnv *env, ErlNifResourceDown *job_down)
{
    ErlNifResourceFlags fl = ERL_NIF_RT_CREATE | ERL_NIF_RT_TAKEOVER;
    ErlNifResourceTypeInit ji = {.dtor = job_dtor, .down = job_down};
    ErlNifResourceTypeInit ri = {.dtor = areply_dtor};

    pyn_job_type = enif_open_resource_type_x(env, "py_job", &ji, fl, NULL);
    pyn_areply_type = enif_open_resource_type_x(env, "py_async_reply", &ri, fl, NULL);
    return pyn_job_type && pyn_areply_type ? 0 : -1;
}

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

/* ---- borrowed requests, worker side ---------------------------------------
 * The caller side, and the whole protocol, is described in reply.c. */

void pyn_args_begin(pyn_job_t *j)
{
    int b = PYN_BR_BORROWED;

    if (__atomic_load_n(&j->borrow, __ATOMIC_ACQUIRE) == PYN_BR_NONE)
        return;
    if (!__atomic_compare_exchange_n(&j->borrow, &b, PYN_BR_READING, 0, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE) &&
        b == PYN_BR_REVOKED)
        pyn_spin_until(&j->borrow, PYN_BR_COPIED); /* the caller is copying it */
}

void pyn_args_end(pyn_job_t *j)
{
    int b = PYN_BR_READING;

    if (__atomic_compare_exchange_n(&j->borrow, &b, PYN_BR_RELEASED, 0, __ATOMIC_RELEASE,
                                    __ATOMIC_RELAXED))
        __atomic_add_fetch(&pyn_counts.borrowed, 1, __ATOMIC_RELAXED);
}

/* ---- async reply handle --------------------------------------------------- */

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
