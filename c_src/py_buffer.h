/* py_buffer.h — large binaries without copies, both ways.
 *
 * Erlang -> Python: {buffer, Bin} arrives as an erlang.Buffer, a read-only
 * object with the buffer protocol over the binary's own memory (memoryview,
 * bytes(b), numpy.frombuffer), which keeps the binary alive while Python
 * holds it; converted back (returned as it is) it gives the same binary.
 *
 * Python -> Erlang: an exact `bytes' of PYB_SHARE_MIN bytes or more becomes
 * a binary over the bytes object's own memory (a resource binary holding a
 * reference to it).  When Erlang drops the binary, the reference is not
 * dropped there (no GIL, maybe another interpreter's thread): it is queued
 * on its interpreter's "home" and dropped by that interpreter's next
 * worker activity (pyb_drain).  If the interpreter has ended meanwhile
 * (a sub-interpreter stopped), the object is left alone: its memory stays
 * allocated rather than freed outside its interpreter.
 *
 * GIL held for every function except the resource destructor. */
#ifndef PYN_PY_BUFFER_H
#define PYN_PY_BUFFER_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <erl_nif.h>

/* The size from which a bytes result is shared rather than copied: below
 * it a copy costs less than the resource and the deferred release
 * (docs/types.md gives the measurements). */
#define PYB_SHARE_MIN ((Py_ssize_t)4096)

/* From load/upgrade: the resource type.  0 ok.  No GIL. */
int pyb_types_init(ErlNifEnv *env);
/* An erlang.Buffer over binary t (new reference), or NULL with an error. */
PyObject *pyb_buffer_new(ErlNifEnv *env, ERL_NIF_TERM t);
/* o as a term if it is an erlang.Buffer (1, *out the same binary) or a
 * contiguous byte memoryview of one (1, *out a sub-binary of it), 0 if
 * it is not. */
int pyb_buffer_term(ErlNifEnv *env, PyObject *o, ERL_NIF_TERM *out);
/* *out: a binary sharing the memory of bytes object o (exact bytes).
 * 0, or -1 with an exception set. */
int pyb_share_bytes(ErlNifEnv *env, PyObject *o, ERL_NIF_TERM *out);
/* Drops the references Erlang released for this interpreter. */
void pyb_drain(void);

#endif
