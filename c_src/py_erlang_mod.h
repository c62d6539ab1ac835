/* py_erlang_mod.h — the `erlang` module that Python code imports:
 * erlang.call / erlang.<name> / erlang.send / erlang.self, the state_*
 * helpers, erlang.Pid (py_pid.c), erlang.ErlangError and
 * erlang.Interrupted.  Python-side code: it sits below the pool and
 * reaches it only through the table the pool gives it at boot.  Every
 * function here runs with the GIL held unless noted. */
#ifndef PYN_PY_ERLANG_MOD_H
#define PYN_PY_ERLANG_MOD_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <erl_nif.h>

#include "job.h"

/* Outcomes of pym_host_t.call. */
enum {
    PYM_CB_OK,          /* *env, *reply: the reply (the caller frees env) */
    PYM_CB_NOT_WORKER,  /* not a worker thread running a request: m untouched */
    PYM_CB_NOT_RUNNING, /* the pool is not running (m freed) */
    PYM_CB_TOO_DEEP,    /* callbacks nested too deeply (m freed) */
    PYM_CB_CANCELLED    /* the caller gave up meanwhile (m freed) */
};

/* What the module asks of the pool; every function on the calling
 * thread, GIL held (call leaves it while it waits). */
typedef struct {
    /* erlang.call(Name, *Args) from a worker running a request: sends
     * the request (built in m, which it frees unless PYM_CB_NOT_WORKER)
     * and waits for the reply. */
    int (*call)(ErlNifEnv *m, ERL_NIF_TERM name, ERL_NIF_TERM args, ErlNifEnv **env,
                ERL_NIF_TERM *reply);
    /* The pid of the process whose request this thread runs: 1, or 0. */
    int (*caller)(ErlNifPid *pid);
    /* The callback runner (for threads that are not workers): 1, or 0
     * when the pool is not running.  Any thread. */
    int (*runner)(ErlNifPid *pid);
    /* Where erlang._log sends records: 1 and the pid, or 0 when nobody
     * listens; *worker: the calling thread's worker id, 0 if none.  Any
     * thread. */
    int (*log_sink)(ErlNifPid *pid, int *worker);
    /* Whether the request this worker thread runs was given up by its
     * caller (timeout, exit): waits that block in C (channels, stream
     * credit) end then.  Also ties the request to its caller's life.  0 on
     * threads that are not workers. */
    int (*cancelled)(void);
} pym_host_t;

/* Installs the pool's table (static storage), before Python starts. */
void pym_set_host(const pym_host_t *host);
/* Opens the waiter resource type (from load/upgrade).  0 ok.  No GIL. */
int pym_types_init(ErlNifEnv *env);

/* The module's init function (registered with PyImport_AppendInittab). */
PyObject *pym_init_module(void);
/* Imports the module once after the interpreter starts. 0 ok. */
int pym_setup(void);
/* host->cancelled(), 0 without a host.  Any thread, GIL or not. */
int pym_job_cancelled(void);
/* Raises erlang.Interrupted for a request its caller gave up; NULL. */
PyObject *pym_raise_gave_up(void);
/* Borrowed: the exception class raised in timed-out code. */
PyObject *pym_interrupt_exc(void);
/* A new erlang._Reply delivering to r (keeps a reference). */
PyObject *pym_reply_new(pyn_areply_t *r);
/* Delivers a callback reply to a Python thread (not a worker) waiting on
 * the waiter resource handle: 1, or 0 if handle is not a waiter.  Any
 * thread, no GIL. */
int pym_waiter_deliver(ErlNifEnv *env, ERL_NIF_TERM handle, ERL_NIF_TERM result);

#endif
