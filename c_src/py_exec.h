/* py_exec.h — what a job does in Python: call, eval, exec, stream, and the
 * worker's namespace.  Worker thread, GIL held, for every function. */
#ifndef PYN_PY_EXEC_H
#define PYN_PY_EXEC_H

#include <erl_nif.h>
#include "worker.h"

/* Creates / destroys the worker's namespace and caches (w->py). */
int pyx_worker_init(pyn_worker_t *w);
void pyx_worker_fini(pyn_worker_t *w);

/* Runs job j on w and returns its reply, built in j->env:
 * {ok, Term} | ok | {'$py_error', {Type, Message}, Traceback}. */
ERL_NIF_TERM pyx_run(pyn_worker_t *w, pyn_job_t *j);

#endif
