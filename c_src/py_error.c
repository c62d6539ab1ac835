/* py_error.c — Python exceptions as Erlang terms:
 * {'$py_error', {Type, Message}, Traceback}, Type an atom (a binary past the
 * atom budget), Message and Traceback UTF-8 binaries.  Part of conversion:
 * used by the code that runs requests and by the `erlang` module.  GIL
 * held for every function. */
#include <string.h>

#include "atoms.h"
#include "py_convert.h"
#include "py_error.h"

#define PYER_DYN_ATOMS_MAX 1000 /* atoms made for non-builtin exception names */

static PyObject *format_exc; /* traceback.format_exception */
static int dyn_atoms;        /* GIL-protected */

/* The exception class name as an atom: always for builtin classes, for
 * others only while fewer than PYER_DYN_ATOMS_MAX have been made (or if the
 * atom exists already); else a binary. */
static ERL_NIF_TERM type_term(ErlNifEnv *env, PyObject *type)
{
    PyTypeObject *tp = (PyTypeObject *)type;
    const char *full = tp->tp_name, *dot = strrchr(full, '.');
    const char *name = dot ? dot + 1 : full;
    size_t len = strlen(name);
    int builtin = !(tp->tp_flags & Py_TPFLAGS_HEAPTYPE) && !dot;
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
        if (dyn_atoms < PYER_DYN_ATOMS_MAX) {
            dyn_atoms++;
            return enif_make_atom_len(env, name, len);
        }
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
    if (!format_exc) {
        PyObject *mod = PyImport_ImportModule("traceback");
        if (!mod)
            return NULL;
        format_exc = PyObject_GetAttrString(mod, "format_exception");
        Py_DECREF(mod);
        if (!format_exc)
            return NULL;
    }
    if (!(lines = PyObject_CallFunctionObjArgs(format_exc, type, value ? value : Py_None,
                                               tb ? tb : Py_None, (PyObject *)NULL)))
        return NULL;
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
