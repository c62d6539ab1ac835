/* py_erlang_mod.h — the `erlang` module that Python code imports:
 * erlang.call / erlang.<name> / erlang.send / erlang.self, the state_*
 * helpers, erlang.Pid, erlang.ErlangError and erlang.Interrupted.
 * Every function here runs with the GIL held. */
#ifndef PYN_PY_ERLANG_MOD_H
#define PYN_PY_ERLANG_MOD_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <erl_nif.h>

#include "worker.h"

/* The module's init function (registered with PyImport_AppendInittab). */
PyObject *pym_init_module(void);
/* Imports the module once after the interpreter starts. 0 ok. */
int pym_setup(void);
/* Borrowed: the exception class raised in timed-out code. */
PyObject *pym_interrupt_exc(void);
/* erlang.Pid objects. */
PyObject *pym_pid_new(const ErlNifPid *pid);
int pym_pid_get(PyObject *o, ErlNifPid *pid);
/* A new erlang._Reply delivering to r (keeps a reference). */
PyObject *pym_reply_new(pyn_areply_t *r);
/* Delivers a callback reply to a Python thread (not a worker) waiting on a
 * waiter resource.  Any thread. */
void pym_waiter_deliver(void *waiter, ERL_NIF_TERM result);

#endif
