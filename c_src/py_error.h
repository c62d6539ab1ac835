/* py_error.h — Python exceptions as Erlang terms (py_error.c).  GIL held. */
#ifndef PYN_PY_ERROR_H
#define PYN_PY_ERROR_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <erl_nif.h>

/* {'$py_error', {Type, Message}, Traceback} for an exception (the
 * references are borrowed); clears any exception raised while formatting. */
ERL_NIF_TERM pyer_exception_term(ErlNifEnv *env, PyObject *type, PyObject *value, PyObject *tb);
/* The same for the pending exception, which it clears ("unknown error"
 * when none is set).  brief: nobody will read it (the caller gave up), so
 * the formatting is skipped: {'$py_error', {cancelled, cancelled}, cancelled}. */
ERL_NIF_TERM pyer_pending_term(ErlNifEnv *env, int brief);

#endif
