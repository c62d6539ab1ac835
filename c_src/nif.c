/* nif.c — ERL_NIF_INIT, load/upgrade, and the thin NIFs behind py_nif.erl.
 * Every NIF here runs on a normal scheduler and returns at once: it copies,
 * queues, signals or reads counters.  None of them touches Python. */
#include <stdio.h>
#include <string.h>

#define PY_SSIZE_T_CLEAN
#include <Python.h> /* version macros only: no Python call is made here */

#include "atoms.h"
#include "executor.h"
#include "py_convert.h"
#include "py_erlang_mod.h"
#include "py_buffer.h"
#include "py_channel.h"
#include "py_runtime.h"
#include "py_stream.h"
#include "pool.h"

/* Whether a request may be read in place on its caller's heap (see
 * reply.c): when the executor can, unless ERLANG_PYTHON_COPY_REQUESTS is
 * set (make valgrind sets it: memcheck cannot follow the caller's heap
 * under OTP's JIT; make asan checks the borrowed path). */
static int borrow_ok;

/* Python itself starts with the pool (pool_attach), in the mode it asks. */
static int load_common(ErlNifEnv *env)
{
    pyn_atoms_init(env);
    pyc_init(env);
    if (pyn_resources_init(env) != 0 || pys_types_init(env) != 0 || pych_types_init(env) != 0 ||
        pyb_types_init(env) != 0)
        return 1;
    return 0;
}

static int on_load(ErlNifEnv *env, void **priv, ERL_NIF_TERM info)
{
    (void)priv;
    (void)info;
    return load_common(env);
}

static int on_upgrade(ErlNifEnv *env, void **priv, void **old, ERL_NIF_TERM info)
{
    (void)priv;
    (void)old;
    (void)info;
    return load_common(env);
}

static ERL_NIF_TERM error_tuple(ErlNifEnv *env, const char *msg)
{
    ERL_NIF_TERM bin;
    size_t n = strlen(msg);
    memcpy(enif_make_new_binary(env, n, &bin), msg, n);
    return enif_make_tuple2(env, ATOMS.error, bin);
}

/* Whether copying or converting t is probably too long for a normal
 * scheduler: more than *budget nodes or deeper than PYN_SUBMIT_DEPTH.
 * Lists and tuples are walked; a binary counts a node per 64 bytes (one
 * passed as {buffer, Bin}: one node); a map
 * counts twice its size without being iterated (iterating costs as much as
 * the copy), so data hidden under small maps is not seen: the copy (or the
 * wait for a worker reading the request in place) is then timed and
 * reported (enif_consume_timeslice). */
#define PYN_SUBMIT_DEPTH 64

static int too_big(ErlNifEnv *env, ERL_NIF_TERM t, long *budget, int *maps, int depth)
{
    int arity;
    const ERL_NIF_TERM *el;
    ERL_NIF_TERM h;
    size_t size;

    if (--*budget < 0 || depth > PYN_SUBMIT_DEPTH)
        return 1;
    if (enif_get_tuple(env, t, &arity, &el)) {
        /* {buffer, Bin}: shared with Python, not converted by the byte. */
        if (arity == 2 && enif_is_identical(el[0], ATOMS.buffer) && enif_is_binary(env, el[1]))
            return 0;
        for (int i = 0; i < arity; i++)
            if (too_big(env, el[i], budget, maps, depth + 1))
                return 1;
    } else if (enif_is_list(env, t)) {
        while (enif_get_list_cell(env, t, &h, &t))
            if (too_big(env, h, budget, maps, depth + 1))
                return 1;
    } else if (enif_get_map_size(env, t, &size)) {
        *maps += size > 0;
        *budget -= 2 * (long)size;
        return *budget < 0;
    } else if (enif_is_binary(env, t)) {
        ErlNifBinary bin;
        /* Converting costs by the byte: 64 bytes count as a node. */
        if (enif_inspect_binary(env, t, &bin))
            *budget -= (long)(bin.size / 64);
        return *budget < 0;
    }
    return 0;
}

#define PYN_SUBMIT_BUDGET 20000

/* submit(Where, Ref, Req, Sync) -> Job | ErrorAtom | dirty | {'$py_done', Reply, WorkerId}
 * Where: shared | {nested, Worker} | {Worker, Gen}.  A request too large
 * to copy on a normal scheduler answers `dirty': the caller then uses
 * submit_dirty/4, the same function on a dirty CPU scheduler. */
static ERL_NIF_TERM submit(ErlNifEnv *env, const ERL_NIF_TERM argv[], int normal, int timed);

/* Requests walked to fewer nodes than this, holding no non-empty map, are
 * copied without timing the copy (reading the clock costs more than such a
 * copy). */
#define PYN_SUBMIT_UNTIMED 1000

static ERL_NIF_TERM nif_submit_normal(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    long budget = PYN_SUBMIT_BUDGET;
    int maps = 0;
    (void)argc;
    if (too_big(env, argv[2], &budget, &maps, 0))
        return enif_make_atom(env, "dirty");
    return submit(env, argv, 1, maps > 0 || budget < PYN_SUBMIT_BUDGET - PYN_SUBMIT_UNTIMED);
}

static ERL_NIF_TERM nif_submit_dirty(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    return submit(env, argv, 0, 0);
}

/* Copies the request into the job's env; timed (and the time reported to
 * the scheduler, 1 ms = 100 %) when it may be large. */
static void copy_request(ErlNifEnv *env, pyn_job_t *job, ERL_NIF_TERM req, int timed)
{
    ErlNifTime t0 = timed ? enif_monotonic_time(ERL_NIF_USEC) : 0, us;

    job->req = enif_make_copy(job->env, req);
    if (!timed)
        return;
    us = enif_monotonic_time(ERL_NIF_USEC) - t0;
    if (us > 100)
        (void)enif_consume_timeslice(env, us >= 1000 ? 100 : (int)(us / 10));
}

/* The kind of request term req ({call, M, F, Args, Kwargs} ...): 1, or 0
 * if it is malformed. */
static int request_kind(ErlNifEnv *env, ERL_NIF_TERM req_term, pyn_kind_t *kind)
{
    static const struct {
        const ERL_NIF_TERM *tag;
        int arity;
        pyn_kind_t kind;
    } kinds[] = {
        {&ATOMS.call, 5, PYN_JOB_CALL},          {&ATOMS.stream, 5, PYN_JOB_STREAM},
        {&ATOMS.eval, 3, PYN_JOB_EVAL},          {&ATOMS.exec, 3, PYN_JOB_EXEC},
        {&ATOMS.stream_eval, 3, PYN_JOB_STREAM_EVAL},
        {&ATOMS.async_call, 6, PYN_JOB_ASYNC},   {&ATOMS.async_stream, 6, PYN_JOB_ASYNC_STREAM},
        {&ATOMS.stream_start, 6, PYN_JOB_STREAM_START},
    };
    const ERL_NIF_TERM *req;
    int rn;

    if (!enif_get_tuple(env, req_term, &rn, &req) || rn < 1)
        return 0;
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        if (enif_is_identical(req[0], *kinds[i].tag) && rn == kinds[i].arity) {
            *kind = kinds[i].kind;
            return 1;
        }
    }
    return 0;
}

/* Where a request goes: shared (target NULL), {nested, Worker} or
 * {Worker, Gen}.  1, or 0 if malformed. */
static int request_target(ErlNifEnv *env, ERL_NIF_TERM t, pyn_worker_t **target, int *nested,
                          ErlNifUInt64 *gen)
{
    const ERL_NIF_TERM *where;
    int wn;

    *target = NULL;
    if (enif_is_identical(t, ATOMS.shared))
        return 1;
    if (!enif_get_tuple(env, t, &wn, &where) || wn != 2)
        return 0;
    if (enif_is_identical(where[0], ATOMS.nested)) {
        *nested = 1;
        return enif_get_resource(env, where[1], pyn_worker_type, (void **)target);
    }
    return enif_get_resource(env, where[0], pyn_worker_type, (void **)target) &&
           enif_get_uint64(env, where[1], gen);
}

/* A request handed to an idle polling worker is usually answered within a
 * few microseconds: the caller polls for the reply here (pyn_await_inline)
 * and returns {'$py_done', Reply, WorkerId}, skipping the message and the
 * reschedule.  Only for a caller waiting inline (Sync true). */
static ERL_NIF_TERM submit(ErlNifEnv *env, const ERL_NIF_TERM argv[], int normal, int timed)
{
    pyn_kind_t kind;
    pyn_worker_t *target = NULL;
    int nested = 0;
    ErlNifUInt64 gen = 0;
    pyn_job_t *job;
    ERL_NIF_TERM err, term;
    int rc;

    if (!request_kind(env, argv[2], &kind) || !request_target(env, argv[0], &target, &nested, &gen))
        return enif_make_badarg(env);

    if (!(job = pyn_job_new(kind)))
        return enif_raise_exception(env, enif_make_atom(env, "enomem"));
    job->sync = enif_is_identical(argv[3], ATOMS.true);
    job->ref = enif_make_copy(job->env, argv[1]);
    job->patient = !normal;
    /* Probably handed over (and not a coroutine's request, whose reply
     * handle must outlive the read): the worker reads the request in
     * place.  Else it is copied. */
    if (borrow_ok && job->sync && !nested && kind != PYN_JOB_ASYNC &&
        kind != PYN_JOB_ASYNC_STREAM && kind != PYN_JOB_STREAM_START && pyn_handoff_likely(target, job->patient)) {
        job->req = argv[2];
        job->borrow = PYN_BR_BORROWED;
    } else {
        copy_request(env, job, argv[2], timed);
    }
    if (job->sync && !nested)
        job->handoff = PYN_HO_SPIN; /* wanted; pyn_submit decides */
    rc = pyn_submit(env, job, target, nested, gen, &err);
    if (rc > 0) { /* borrowed but not handed over: copy it after all */
        job->borrow = PYN_BR_NONE;
        copy_request(env, job, argv[2], timed);
        job->handoff = PYN_HO_SPIN;
        rc = pyn_submit(env, job, target, nested, gen, &err);
    }
    if (rc != 0) {
        enif_release_resource(job);
        return err;
    }
    if (__atomic_load_n(&job->handoff, __ATOMIC_ACQUIRE) != PYN_HO_NONE) {
        int64_t ns;
        int done = pyn_await_inline(env, job, argv[2], &term, &ns);
        if (normal && ns > 100000) /* the scheduler's time, as for a copy */
            (void)enif_consume_timeslice(env, ns >= 1000000 ? 100 : (int)(ns / 10000));
        if (done) {
            term = enif_make_tuple3(env, ATOMS.py_done, term, enif_make_int(env, job->worker_id));
            enif_release_resource(job);
            return term;
        }
    }
    term = enif_make_resource(env, job);
    enif_release_resource(job);
    return term;
}

/* job_worker(Job): the id of the worker that ran (or runs) it, 0 if none
 * has taken it yet. */
static ERL_NIF_TERM nif_job_worker(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    pyn_job_t *job;
    (void)argc;
    if (!enif_get_resource(env, argv[0], pyn_job_type, (void **)&job))
        return enif_make_badarg(env);
    return enif_make_int(env, __atomic_load_n(&job->worker_id, __ATOMIC_RELAXED));
}

static ERL_NIF_TERM nif_job_age(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    pyn_job_t *job;
    int64_t age;
    (void)argc;
    if (!enif_get_resource(env, argv[0], pyn_job_type, (void **)&job))
        return enif_make_badarg(env);
    age = pyn_now_ms() - job->submitted_at;
    return enif_make_int64(env, age > 0 ? age : 0);
}

static ERL_NIF_TERM nif_cancel(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    pyn_job_t *job;
    (void)argc;
    if (!enif_get_resource(env, argv[0], pyn_job_type, (void **)&job))
        return enif_make_badarg(env);
    return pyn_cancel(env, job);
}

#ifndef PYN_PROGRAM
#define PYN_PROGRAM "/usr/bin/python3"
#endif

/* {isolated, WorkerScript, MaxMemoryMb}: configures the isolated executor.
 * 0, or -1 if t is not that. */
static int isolated_mode(ErlNifEnv *env, ERL_NIF_TERM t)
{
    const ERL_NIF_TERM *el;
    int arity;
    unsigned mb;
    ErlNifBinary path;
    char buf[4096];

    if (!enif_get_tuple(env, t, &arity, &el) || arity != 3 ||
        !enif_is_identical(el[0], enif_make_atom(env, "isolated")) ||
        !enif_inspect_binary(env, el[1], &path) || path.size == 0 || path.size >= sizeof buf ||
        memchr(path.data, 0, path.size) || !enif_get_uint(env, el[2], &mb))
        return -1;
    memcpy(buf, path.data, path.size);
    buf[path.size] = 0;
    pyn_isolated_configure(PYN_PROGRAM, buf, mb);
    return 0;
}

/* pool_attach(PoolPid, RunnerPid, GraceMs, Mode, MaxAbandoned): starts
 * Python in Mode (shared_gil | subinterp | {isolated, Script, MaxMemoryMb})
 * the first time; ok | {error, Message}. */
static ERL_NIF_TERM nif_pool_attach(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    ErlNifPid pool, runner;
    int grace, max_abandoned;
    pyn_mode_t mode;
    char err[300];
    (void)argc;
    if (!enif_get_local_pid(env, argv[0], &pool) || !enif_get_local_pid(env, argv[1], &runner) ||
        !enif_get_int(env, argv[2], &grace) || grace < 0 ||
        !enif_get_int(env, argv[4], &max_abandoned) || max_abandoned < 0)
        return enif_make_badarg(env);
    if (enif_is_identical(argv[3], enif_make_atom(env, "shared_gil")))
        mode = PYN_MODE_SHARED_GIL;
    else if (enif_is_identical(argv[3], enif_make_atom(env, "subinterp")))
        mode = PYN_MODE_SUBINTERP;
    else if (isolated_mode(env, argv[3]) == 0)
        mode = PYN_MODE_ISOLATED;
    else
        return enif_make_badarg(env);
    if (pyn_pool_boot(mode, err, sizeof err) != 0)
        return error_tuple(env, err);
    borrow_ok = pyn_pool_borrows() && !getenv("ERLANG_PYTHON_COPY_REQUESTS");
    pyn_pool_attach(env, &pool, &runner, grace, max_abandoned);
    return ATOMS.ok;
}

static ERL_NIF_TERM nif_pool_shutdown(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    (void)argv;
    pyn_pool_shutdown(env);
    return ATOMS.ok;
}

static ERL_NIF_TERM nif_worker_start(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    int id;
    char err[128];
    pyn_worker_t *w;
    ERL_NIF_TERM t;
    (void)argc;
    if (!enif_get_int(env, argv[0], &id))
        return enif_make_badarg(env);
    if (!(w = pyn_worker_start(id, err, sizeof err)))
        return error_tuple(env, err);
    t = enif_make_resource(env, w);
    enif_release_resource(w);
    return enif_make_tuple2(env, ATOMS.ok, t);
}

static ERL_NIF_TERM nif_worker_retire(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    pyn_worker_t *w;
    (void)argc;
    if (!enif_get_resource(env, argv[0], pyn_worker_type, (void **)&w))
        return enif_make_badarg(env);
    pyn_worker_retire(env, w, ATOMS.worker_crashed);
    return ATOMS.ok;
}

/* worker_bind(Worker, true | idle | false) -> Gen | error */
static ERL_NIF_TERM nif_worker_bind(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    pyn_worker_t *w;
    uint64_t gen;
    (void)argc;
    if (!enif_get_resource(env, argv[0], pyn_worker_type, (void **)&w) || !enif_is_atom(env, argv[1]))
        return enif_make_badarg(env);
    gen = pyn_worker_bind(w, enif_is_identical(argv[1], ATOMS.true)   ? PYN_BIND
                             : enif_is_identical(argv[1], ATOMS.idle) ? PYN_BIND_IDLE
                                                                      : PYN_UNBIND);
    return gen ? enif_make_uint64(env, gen) : ATOMS.error;
}

/* log_sink(Pid | undefined): where Python's log records go. */
static ERL_NIF_TERM nif_log_sink(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    ErlNifPid pid;
    (void)argc;
    if (enif_is_identical(argv[0], ATOMS.undefined))
        pyn_set_log_sink(NULL);
    else if (enif_get_local_pid(env, argv[0], &pid))
        pyn_set_log_sink(&pid);
    else
        return enif_make_badarg(env);
    return ATOMS.ok;
}

/* load() -> {Workers, Idle, Pending} */
static ERL_NIF_TERM nif_load(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    int workers, idle, pending;
    (void)argc;
    (void)argv;
    pyn_load(&workers, &idle, &pending);
    return enif_make_tuple3(env, enif_make_int(env, workers), enif_make_int(env, idle),
                            enif_make_int(env, pending));
}

/* worker_stats() -> {[WorkerMap], QueuedTimeouts, RetiredMap} */
static ERL_NIF_TERM nif_worker_stats(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    uint64_t queued = 0;
    ERL_NIF_TERM list, retired = 0;
    (void)argc;
    (void)argv;
    list = pyn_worker_metrics(env, &queued, &retired);
    if (enif_is_exception(env, list))
        return list;
    return enif_make_tuple3(env, list, enif_make_uint64(env, queued), retired);
}

static ERL_NIF_TERM nif_stats(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    int workers, bound, available, pending;
    ERL_NIF_TERM keys[4], vals[4], map;
    (void)argc;
    (void)argv;
    pyn_stats(&workers, &bound, &available, &pending);
    keys[0] = ATOMS.num_workers;
    vals[0] = enif_make_int(env, workers);
    keys[1] = ATOMS.available_workers;
    vals[1] = enif_make_int(env, available);
    keys[2] = ATOMS.checked_out;
    vals[2] = enif_make_int(env, bound);
    keys[3] = ATOMS.pending_requests;
    vals[3] = enif_make_int(env, pending);
    enif_make_map_from_arrays(env, keys, vals, 4, &map);
    return map;
}

/* path_counts() -> #{handed_over, borrowed, revoked} (tests, tuning) */
static ERL_NIF_TERM nif_path_counts(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    unsigned long h, b, r;
    ERL_NIF_TERM keys[3], vals[3], map;
    (void)argc;
    (void)argv;
    pyn_path_counts(&h, &b, &r);
    keys[0] = enif_make_atom(env, "handed_over");
    vals[0] = enif_make_uint64(env, h);
    keys[1] = enif_make_atom(env, "borrowed");
    vals[1] = enif_make_uint64(env, b);
    keys[2] = enif_make_atom(env, "revoked");
    vals[2] = enif_make_uint64(env, r);
    enif_make_map_from_arrays(env, keys, vals, 3, &map);
    return map;
}

/* cb_reply({WorkerOrWaiter, Id}, Reply) -> ok | stale */
static ERL_NIF_TERM nif_cb_reply(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    const ERL_NIF_TERM *to;
    int n;
    ErlNifUInt64 id;
    void *obj;
    (void)argc;
    if (!enif_get_tuple(env, argv[0], &n, &to) || n != 2 || !enif_get_uint64(env, to[1], &id))
        return enif_make_badarg(env);
    if (enif_get_resource(env, to[0], pyn_worker_type, &obj))
        return pyn_callback_deliver(obj, id, argv[1]) == 0 ? ATOMS.ok : enif_make_atom(env, "stale");
    if (pym_waiter_deliver(env, to[0], argv[1]))
        return ATOMS.ok;
    return enif_make_badarg(env);
}

static ERL_NIF_TERM nif_version(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    const char *v = pyr_version();
    ERL_NIF_TERM bin;
    size_t n = strlen(v);
    (void)argc;
    (void)argv;
    memcpy(enif_make_new_binary(env, n, &bin), v, n);
    return bin;
}

/* async_reply(Ref) -> Handle: where a coroutine's outcome goes. */
static ERL_NIF_TERM nif_async_reply(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    pyn_areply_t *r;
    ERL_NIF_TERM t;
    (void)argc;
    if (!enif_is_ref(env, argv[0]))
        return enif_make_badarg(env);
    if (!(r = pyn_areply_new(env, argv[0])))
        return enif_raise_exception(env, enif_make_atom(env, "enomem"));
    t = enif_make_resource(env, r);
    enif_release_resource(r);
    return t;
}

static ERL_NIF_TERM nif_async_cancel(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    pyn_areply_t *r;
    (void)argc;
    if (!enif_get_resource(env, argv[0], pyn_areply_type, (void **)&r))
        return enif_make_badarg(env);
    return pyn_areply_cancel(r);
}

static ERL_NIF_TERM nif_sem_info(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    int cur, max;
    (void)argc;
    (void)argv;
    pyn_sem_info(&cur, &max);
    return enif_make_tuple2(env, enif_make_int(env, cur), enif_make_int(env, max));
}

static ERL_NIF_TERM nif_sem_set_max(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    int max;
    (void)argc;
    if (!enif_get_int(env, argv[0], &max) || max < 1)
        return enif_make_badarg(env);
    pyn_sem_set_max(env, max);
    return ATOMS.ok;
}

/* slot_acquire(Ref) -> Job; {Ref, ok} arrives when the slot is granted. */
static ERL_NIF_TERM nif_slot_acquire(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    pyn_job_t *j;
    ERL_NIF_TERM err, t;
    (void)argc;
    if (!(j = pyn_job_new(PYN_JOB_SLOT)))
        return enif_raise_exception(env, enif_make_atom(env, "enomem"));
    j->ref = enif_make_copy(j->env, argv[0]);
    if (pyn_slot_request(env, j, &err) != 0) {
        enif_release_resource(j);
        return err;
    }
    t = enif_make_resource(env, j);
    enif_release_resource(j);
    return t;
}

static ERL_NIF_TERM nif_slot_release(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    pyn_job_t *j;
    (void)argc;
    if (!enif_get_resource(env, argv[0], pyn_job_type, (void **)&j))
        return enif_make_badarg(env);
    return pyn_slot_release(env, j) ? ATOMS.true : ATOMS.false;
}

/* setup(Source, Keep): runs Source on every worker (and, with Keep, on
 * every worker started later, first). */
static ERL_NIF_TERM nif_setup(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    if (!enif_is_binary(env, argv[0]) || !enif_is_atom(env, argv[1]))
        return enif_make_badarg(env);
    if (pyn_setup(env, argv[0], enif_is_identical(argv[1], ATOMS.true)) != 0)
        return error_tuple(env, "out of memory");
    return ATOMS.ok;
}

static ERL_NIF_TERM nif_clear_caches(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)env;
    (void)argc;
    (void)argv;
    pyn_broadcast(PYN_JOB_CLEAR_CACHES);
    return ATOMS.ok;
}

/* execution_info() -> {Mode, SubinterpSupported}: the mode Python runs in
 * (multi_executor: shared GIL; subinterp; isolated; none: not started yet) and
 * whether this build can run sub-interpreters with their own GIL. */
static ERL_NIF_TERM nif_execution_info(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    int mode = pyn_pool_mode();
    ERL_NIF_TERM m = mode == PYN_MODE_SUBINTERP     ? enif_make_atom(env, "subinterp")
                     : mode == PYN_MODE_SHARED_GIL ? enif_make_atom(env, "multi_executor")
                     : mode == PYN_MODE_ISOLATED   ? enif_make_atom(env, "isolated")
                                                    : enif_make_atom(env, "none");
    (void)argc;
    (void)argv;
    return enif_make_tuple2(env, m, pyr_subinterp_supported() ? ATOMS.true : ATOMS.false);
}

static ErlNifFunc funcs[] = {
    {"stream_new", 2, pys_nif_new, 0},
    {"stream_set_proc", 2, pys_nif_set_proc, 0},
    {"stream_ack", 2, pys_nif_ack, 0},
    {"stream_stop", 1, pys_nif_stop, 0},
    {"stream_end", 2, pys_nif_end, 0},
    {"stream_info", 1, pys_nif_info, 0},
    {"channel_new", 3, pych_nif_new, 0},
    {"channel_send", 2, pych_nif_send, 0},
    {"channel_close", 1, pych_nif_close, 0},
    {"channel_info", 1, pych_nif_info, 0},
    {"async_reply", 1, nif_async_reply, 0},
    {"async_cancel", 1, nif_async_cancel, 0},
    {"sem_info", 0, nif_sem_info, 0},
    {"sem_set_max", 1, nif_sem_set_max, 0},
    {"slot_acquire", 1, nif_slot_acquire, 0},
    {"slot_release", 1, nif_slot_release, 0},
    {"clear_caches", 0, nif_clear_caches, 0},
    {"setup", 2, nif_setup, 0},
    {"execution_info", 0, nif_execution_info, 0},
    {"submit", 4, nif_submit_normal, 0},
    {"submit_dirty", 4, nif_submit_dirty, ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"job_age", 1, nif_job_age, 0},
    {"cancel", 1, nif_cancel, 0},
    {"pool_attach", 5, nif_pool_attach, 0},
    {"pool_shutdown", 0, nif_pool_shutdown, 0},
    {"worker_start", 1, nif_worker_start, 0},
    {"worker_retire", 1, nif_worker_retire, 0},
    {"worker_bind", 2, nif_worker_bind, 0},
    {"stats", 0, nif_stats, 0},
    {"worker_stats", 0, nif_worker_stats, 0},
    {"load", 0, nif_load, 0},
    {"log_sink", 1, nif_log_sink, 0},
    {"job_worker", 1, nif_job_worker, 0},
    {"path_counts", 0, nif_path_counts, 0},
    {"cb_reply", 2, nif_cb_reply, 0},
    {"version", 0, nif_version, 0},
};

ERL_NIF_INIT(py_nif, funcs, on_load, NULL, on_upgrade, NULL)
