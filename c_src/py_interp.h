/* py_interp.h — per-interpreter state of the Python-side code.
 *
 * Every Python object the C code keeps between calls (the erlang.Pid and
 * erlang._Reply types, erlang's exception classes, the compiled-code cache,
 * helpers it looked up) belongs to one interpreter: with own-GIL
 * sub-interpreters (exec_subinterp.c) two interpreters run at once, and an
 * object of one must never be touched under the GIL of another.  So none
 * is a C global: each interpreter has one pyi_state_t, made on first use,
 * kept in its interpreter dict and freed with it.  Each field is filled by
 * the unit that owns it, lazily.  GIL held for every function. */
#ifndef PYN_PY_INTERP_H
#define PYN_PY_INTERP_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

typedef struct {
    PyObject *pid_type;     /* py_pid.c: erlang.Pid */
    PyObject *reply_type;   /* py_erlang_mod.c: erlang._Reply */
    PyObject *erlang_error; /* py_erlang_mod.c: erlang.ErlangError */
    PyObject *interrupted;  /* py_erlang_mod.c: erlang.Interrupted */
    PyObject *format_exc;   /* py_error.c: traceback.format_exception */
    PyObject *code_cache;   /* py_exec.c: compiled sources */
    PyObject *async_start;  /* py_exec.c: _erlang_python.start_coroutine */
    PyObject *stream_run;   /* py_exec.c: _erlang_python.run_stream */
    PyObject *sink_type;    /* py_stream.c: erlang._StreamSink */
    PyObject *channel_type; /* py_channel.c: erlang.Channel */
    PyObject *byte_channel; /* py_channel.c: erlang.ByteChannel (a Python class) */
    PyObject *buffer_type;  /* py_buffer.c: erlang.Buffer */
    PyObject *bytes_home;   /* py_buffer.c: capsule of the shared-bytes home */
} pyi_state_t; /* strong references only: freed field by field */

/* The calling thread's interpreter's state; NULL with MemoryError set. */
pyi_state_t *pyi_state(void);
/* Forgets the calling thread's cached lookup (before its interpreter is
 * destroyed: another may later get the same address). */
void pyi_forget(void);

#endif
