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
/* An exception class name (UTF-8, len bytes) as its Type term, by the
 * rules above (builtin: always an atom).  Touches no Python object: the
 * isolated executor uses it for its workers' exceptions. */
ERL_NIF_TERM pyer_type_name_term(ErlNifEnv *env, const char *name, size_t len, int builtin);

#endif
