/* py_error.c — Python exceptions as Erlang terms:
 * {'$py_error', {Type, Message}, Traceback}, Type an atom (a binary past the
 * atom budget), Message and Traceback UTF-8 binaries.  Part of conversion:
 * used by the code that runs requests and by the `erlang` module.  GIL
 * held for every function. */
#include <string.h>

#include "atoms.h"
#include "py_convert.h"
#include "py_error.h"
#include "py_interp.h"

#define PYER_DYN_ATOMS_MAX 1000 /* atoms made for non-builtin exception names */
/* Traceback entries formatted, from the outermost: an exception object
 * raised again and again keeps every raise in its traceback, and Python
 * 3.13 spends ~30 us per entry formatting it (caret positions), so that an
 * unbounded traceback made each new raise slower than the last. */
#define PYER_TB_LIMIT 50

static int dyn_atoms; /* atomic: interpreters with their own GILs share it */

/* The exception class name as an atom: always for builtin classes, for
 * others only while fewer than PYER_DYN_ATOMS_MAX have been made (or if the
 * atom exists already); else a binary. */
static ERL_NIF_TERM type_term(ErlNifEnv *env, PyObject *type)
{
    PyTypeObject *tp = (PyTypeObject *)type;
    const char *full = tp->tp_name, *dot = strrchr(full, '.');
    const char *name = dot ? dot + 1 : full;
    int builtin = !(tp->tp_flags & Py_TPFLAGS_HEAPTYPE) && !dot;
    return pyer_type_name_term(env, name, strlen(name), builtin);
}

ERL_NIF_TERM pyer_type_name_term(ErlNifEnv *env, const char *name, size_t len, int builtin)
{
    ERL_NIF_TERM t;
    unsigned char *p;

    int ascii = 1;
    for (size_t i = 0; i < len; i++)
        ascii &= (unsigned char)name[i] < 0x80;
    /* OTP 25 makes atoms from Latin-1 only: other names stay binaries. */
    if (len > 0 && len < 256 && ascii) {
        if (builtin)
            return enif_make_atom_len(env, name, len);
        if (enif_make_existing_atom_len(env, name, len, &t, ERL_NIF_LATIN1))
            return t;
        if (__atomic_fetch_add(&dyn_atoms, 1, __ATOMIC_RELAXED) < PYER_DYN_ATOMS_MAX)
            return enif_make_atom_len(env, name, len);
        __atomic_store_n(&dyn_atoms, PYER_DYN_ATOMS_MAX, __ATOMIC_RELAXED); /* no wrap */
    }
    p = enif_make_new_binary(env, len, &t);
    memcpy(p, name, len);
    return t;
}

static ERL_NIF_TERM text_term(ErlNifEnv *env, PyObject *s, const char *fallback)
{
    ERL_NIF_TERM t;
    if (s && PyUnicode_Check(s) && pyc_str_term(env, s, &t) == 0)
        return t;
    PyErr_Clear();
    unsigned char *p = enif_make_new_binary(env, strlen(fallback), &t);
    memcpy(p, fallback, strlen(fallback));
    return t;
}

static PyObject *format_traceback(PyObject *type, PyObject *value, PyObject *tb)
{
    PyObject *lines, *sep, *text;
    pyi_state_t *s = pyi_state();
    if (!s)
        return NULL;
    if (!s->format_exc) {
        PyObject *mod = PyImport_ImportModule("traceback");
        if (!mod)
            return NULL;
        s->format_exc = PyObject_GetAttrString(mod, "format_exception");
        Py_DECREF(mod);
        if (!s->format_exc)
            return NULL;
    }
    {
        PyObject *limit = PyLong_FromLong(PYER_TB_LIMIT);
        lines = limit ? PyObject_CallFunctionObjArgs(s->format_exc, type, value ? value : Py_None,
                                                     tb ? tb : Py_None, limit, (PyObject *)NULL)
                      : NULL;
        Py_XDECREF(limit);
        if (!lines)
            return NULL;
    }
    sep = PyUnicode_FromString("");
    text = sep ? PyUnicode_Join(sep, lines) : NULL;
    Py_XDECREF(sep);
    Py_DECREF(lines);
    return text;
}

ERL_NIF_TERM pyer_exception_term(ErlNifEnv *env, PyObject *type, PyObject *value, PyObject *tb)
{
    PyObject *msg = value ? PyObject_Str(value) : NULL, *text;
    ERL_NIF_TERM tterm = type_term(env, type), mterm, tbterm;

    mterm = text_term(env, msg, "<exception str() failed>");
    text = format_traceback(type, value, tb);
    tbterm = text_term(env, text, "");
    Py_XDECREF(msg);
    Py_XDECREF(text);
    PyErr_Clear();
    return enif_make_tuple3(env, ATOMS.py_error, enif_make_tuple2(env, tterm, mterm), tbterm);
}

ERL_NIF_TERM pyer_pending_term(ErlNifEnv *env, int brief)
{
    PyObject *type = NULL, *value = NULL, *tb = NULL;
    ERL_NIF_TERM t;

    PyErr_Fetch(&type, &value, &tb);
    if (!type)
        return enif_make_tuple3(env, ATOMS.py_error,
                                enif_make_tuple2(env, ATOMS.error,
                                                 text_term(env, NULL, "unknown error")),
                                text_term(env, NULL, ""));
    PyErr_NormalizeException(&type, &value, &tb);
    if (brief) /* nobody will read it: skip the formatting */
        t = enif_make_tuple3(env, ATOMS.py_error,
                             enif_make_tuple2(env, ATOMS.cancelled, ATOMS.cancelled), ATOMS.cancelled);
    else
        t = pyer_exception_term(env, type, value, tb);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    PyErr_Clear();
    return t;
}
