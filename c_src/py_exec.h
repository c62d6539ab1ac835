/* py_exec.h — what a job does in Python: call, eval, exec, stream, and the
 * worker's namespace.  Worker thread, GIL held, for every function. */
#ifndef PYN_PY_EXEC_H
#define PYN_PY_EXEC_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <erl_nif.h>
#include "worker.h"

/* Creates / destroys the worker's namespace and caches (w->py). */
int pyx_worker_init(pyn_worker_t *w);
void pyx_worker_fini(pyn_worker_t *w);

/* {'$py_error', {Type, Message}, Traceback} for an exception. */
ERL_NIF_TERM pyx_exception_term(ErlNifEnv *env, PyObject *type, PyObject *value, PyObject *tb);

/* Runs job j on w and returns its reply, built in j->env:
 * {ok, Term} | ok | {'$py_error', {Type, Message}, Traceback}. */
ERL_NIF_TERM pyx_run(pyn_worker_t *w, pyn_job_t *j);

/* Drops the references pyx_run kept until its reply was sent (this may
 * run finalizers: any Python code); whether there are any. */
void pyx_release_later(pyn_worker_t *w);
int pyx_has_later(pyn_worker_t *w);

#endif
