/* py_interp.c — per-interpreter state (see py_interp.h).  The lookup is
 * cached per OS thread: a worker thread runs in one interpreter, so the
 * usual cost is one comparison. */
#include "py_interp.h"

#define PYI_KEY "erlang_python.state"

static __thread PyInterpreterState *cached_interp;
static __thread pyi_state_t *cached_state;

static void state_free(PyObject *capsule)
{
    pyi_state_t *s = PyCapsule_GetPointer(capsule, PYI_KEY);
    PyObject **field = (PyObject **)s;
    if (!s)
        return;
    for (size_t i = 0; i < sizeof *s / sizeof(PyObject *); i++)
        Py_CLEAR(field[i]);
    PyMem_RawFree(s);
}

static pyi_state_t *lookup(PyInterpreterState *interp)
{
    PyObject *dict = PyInterpreterState_GetDict(interp), *cap;
    pyi_state_t *s;

    if (!dict) {
        PyErr_SetString(PyExc_RuntimeError, "no interpreter dict");
        return NULL;
    }
    cap = PyDict_GetItemString(dict, PYI_KEY); /* borrowed */
    if (cap)
        return PyCapsule_GetPointer(cap, PYI_KEY);
    if (!(s = PyMem_RawCalloc(1, sizeof *s))) {
        PyErr_NoMemory();
        return NULL;
    }
    if (!(cap = PyCapsule_New(s, PYI_KEY, state_free))) {
        PyMem_RawFree(s);
        return NULL;
    }
    if (PyDict_SetItemString(dict, PYI_KEY, cap) < 0)
        s = NULL; /* freed with the capsule */
    Py_DECREF(cap);
    return s;
}

pyi_state_t *pyi_state(void)
{
    PyInterpreterState *interp = PyInterpreterState_Get();
    if (interp != cached_interp || !cached_state) {
        pyi_state_t *s = lookup(interp);
        if (!s)
            return NULL;
        cached_interp = interp;
        cached_state = s;
    }
    return cached_state;
}

void pyi_forget(void)
{
    cached_interp = NULL;
    cached_state = NULL;
}
