/* py_exec.h — what a request does in Python: call, eval, exec, stream,
 * async, and the worker's namespace (py_exec.c).  Python-side code: it
 * knows requests (job.h) and conversion, nothing of the pool or of how the
 * worker is run.  Worker thread, GIL held, for every function. */
#ifndef PYN_PY_EXEC_H
#define PYN_PY_EXEC_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <erl_nif.h>
#include "job.h"

/* One worker's Python state: its namespace, module and callable caches,
 * and the references kept until its last reply was sent.  Owned by the
 * executor that runs the worker, used by that worker's thread only. */
typedef struct pyx_state pyx_state_t;

/* Creates the calling worker thread's state; NULL on failure. */
pyx_state_t *pyx_worker_init(void);
/* Destroys it (NULL is fine). */
void pyx_worker_fini(pyx_state_t *st);

/* Runs request j and returns its reply, built in j->env:
 * {ok, Term} | ok | {py_etf, Bin} | {'$py_error', {Type, Message}, Traceback}.
 * Control jobs (wipe, clear caches) return ok.  A borrowed request is read
 * under the protocol of job.h (pyn_args_begin / pyn_args_end). */
ERL_NIF_TERM pyx_run(pyx_state_t *st, pyn_job_t *j);

/* Drops the references pyx_run kept until its reply was sent (this may
 * run finalizers: any Python code); whether there are any. */
void pyx_release_later(pyx_state_t *st);
int pyx_has_later(pyx_state_t *st);

#endif
