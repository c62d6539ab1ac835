/* py_convert.h — Erlang term <-> Python object conversion.
 * GIL held for every function.  Depth-limited: nesting deeper than
 * PYC_MAX_DEPTH raises ValueError instead of overflowing the C stack. */
#ifndef PYN_PY_CONVERT_H
#define PYN_PY_CONVERT_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <erl_nif.h>

#define PYC_MAX_DEPTH 10000

/* Item i of a list or tuple being converted, as a new reference; NULL with
 * RuntimeError if the list shrank meanwhile (converting may run Python
 * code that mutates it). */
static inline PyObject *pyc_seq_item(PyObject *seq, Py_ssize_t i)
{
    PyObject *item;
    if (PyList_Check(seq)) {
        if (i >= PyList_GET_SIZE(seq)) {
            PyErr_SetString(PyExc_RuntimeError, "list changed size during conversion");
            return NULL;
        }
        item = PyList_GET_ITEM(seq, i);
    } else {
        item = PyTuple_GET_ITEM(seq, i);
    }
    Py_INCREF(item);
    return item;
}

/* Whether the calling thread is near the end of its stack (deep data is
 * then refused rather than overflowing it). */
int pyc_stack_short(void);
/* A worker thread begins / ends using conversion caches of its own (map
 * keys); other threads use none.  GIL held. */
void pyc_thread_init(void);
void pyc_thread_fini(void);
/* Checks the VM's integer encoding (fast paths); from load. */
void pyc_init(ErlNifEnv *env);
/* New reference, or NULL with a Python exception set (TypeError for terms
 * with no Python counterpart: funs, ports, refs, improper lists). */
PyObject *pyc_to_py(ErlNifEnv *env, ERL_NIF_TERM t);
/* 0 with *out built in env, or -1 with a Python exception set. */
int pyc_to_term(ErlNifEnv *env, PyObject *o, ERL_NIF_TERM *out);
/* A name (atom or binary) as a new str reference; NULL with TypeError or
 * ValueError (empty, NUL byte, not UTF-8) set. */
PyObject *pyc_name(ErlNifEnv *env, ERL_NIF_TERM t);
/* pyc_to_term for a request's result.  When it returns -1 with *wants_etf
 * set (no exception pending), the result holds a dict of more than 32
 * keys: encode it with py_etf.h instead, or convert it with pyc_to_term. */
int pyc_result_term(ErlNifEnv *env, PyObject *o, ERL_NIF_TERM *out, int *wants_etf);
/* Drains any iterable into a list term (stream results). */
int pyc_iter_to_term(ErlNifEnv *env, PyObject *o, ERL_NIF_TERM *out);
/* Conversions owned by units above this one (channels), installed once at
 * load.  ref_to_py: a reference term as a new object, or NULL with no
 * exception when it is not one of theirs.  obj_to_term: an object outside
 * the type table: 1 with *out built, 0 not theirs, -1 with an exception.
 * type: the Python type named name (erlang.Channel...), new reference, or
 * NULL with AttributeError. */
typedef struct {
    PyObject *(*ref_to_py)(ErlNifEnv *env, ERL_NIF_TERM t);
    int (*obj_to_term)(ErlNifEnv *env, PyObject *o, ERL_NIF_TERM *out);
    PyObject *(*type)(const char *name);
} pyc_hooks_t;
void pyc_set_hooks(const pyc_hooks_t *hooks);
/* An object that conversion gives a term of its own (erlang.Buffer and
 * its views, a channel): 1 with *out, 0 if o is none of them, -1 with an
 * exception. */
int pyc_special_term(ErlNifEnv *env, PyObject *o, ERL_NIF_TERM *out);
/* hooks->type(name), or NULL with AttributeError. */
PyObject *pyc_hook_type(const char *name);
/* A UTF-8 binary term of a str (surrogates passed through). */
int pyc_str_term(ErlNifEnv *env, PyObject *s, ERL_NIF_TERM *out);

#endif
