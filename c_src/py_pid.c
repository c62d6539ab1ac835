/* py_pid.c — the erlang.Pid type: an Erlang process identifier as a Python
 * object (hashable, comparable, immutable).  Conversion makes them for pid
 * terms and reads them back; the `erlang` module exports the type as
 * erlang.Pid.  Below both: it depends on nothing but erl_nif and Python.
 * GIL held for every function (the type is readied by the module's init). */
#include "py_pid.h"

typedef struct {
    PyObject_HEAD ErlNifPid pid;
} PidObject;

static PyObject *pid_repr(PyObject *self)
{
    char buf[64];
    enif_snprintf(buf, sizeof buf, "%T", ((PidObject *)self)->pid.pid);
    return PyUnicode_FromFormat("erlang.Pid('%s')", buf);
}

static Py_hash_t pid_hash(PyObject *self)
{
    Py_hash_t h = (Py_hash_t)((PidObject *)self)->pid.pid;
    return h == -1 ? -2 : h;
}

static PyObject *pid_richcompare(PyObject *a, PyObject *b, int op);

/* A pid is immutable: copy.copy and copy.deepcopy give it back itself. */
static PyObject *pid_copy(PyObject *self, PyObject *unused)
{
    (void)unused;
    return Py_NewRef(self);
}

static PyMethodDef pid_methods[] = {
    {"__copy__", pid_copy, METH_NOARGS, "The pid itself (immutable)."},
    {"__deepcopy__", pid_copy, METH_O, "The pid itself (immutable)."},
    {NULL, NULL, 0, NULL},
};

PyTypeObject pyp_PidType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "erlang.Pid",
    .tp_basicsize = sizeof(PidObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "An Erlang process identifier.",
    .tp_repr = pid_repr,
    .tp_hash = pid_hash,
    .tp_richcompare = pid_richcompare,
    .tp_methods = pid_methods,
};

static PyObject *pid_richcompare(PyObject *a, PyObject *b, int op)
{
    int c;
    if (!PyObject_TypeCheck(a, &pyp_PidType) || !PyObject_TypeCheck(b, &pyp_PidType))
        Py_RETURN_NOTIMPLEMENTED;
    c = enif_compare_pids(&((PidObject *)a)->pid, &((PidObject *)b)->pid);
    Py_RETURN_RICHCOMPARE(c, 0, op);
}

PyObject *pyp_pid_new(const ErlNifPid *pid)
{
    PidObject *p = PyObject_New(PidObject, &pyp_PidType);
    if (p)
        p->pid = *pid;
    return (PyObject *)p;
}

int pyp_pid_get(PyObject *o, ErlNifPid *pid)
{
    if (!PyObject_TypeCheck(o, &pyp_PidType))
        return 0;
    *pid = ((PidObject *)o)->pid;
    return 1;
}
