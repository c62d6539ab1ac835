/* py_pid.h — erlang.Pid objects (py_pid.c).  GIL held. */
#ifndef PYN_PY_PID_H
#define PYN_PY_PID_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <erl_nif.h>

/* This interpreter's erlang.Pid type (borrowed), made on first use; NULL
 * with an exception set on failure. */
PyTypeObject *pyp_pid_type(void);

/* A new erlang.Pid, or NULL with MemoryError. */
PyObject *pyp_pid_new(const ErlNifPid *pid);
/* 1 with *pid set if o is an erlang.Pid, else 0 (no exception). */
int pyp_pid_get(PyObject *o, ErlNifPid *pid);

#endif
