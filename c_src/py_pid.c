/* py_pid.c — the erlang.Pid type: an Erlang process identifier as a Python
 * object (hashable, comparable, immutable).  Conversion makes them for pid
 * terms and reads them back; the `erlang` module exports the type as
 * erlang.Pid.  Below both: it depends on nothing but erl_nif, Python and
 * the per-interpreter state (each interpreter has its own type object: a
 * heap type, made on first use).  GIL held for every function. */
#include "py_interp.h"
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

static PyType_Slot pid_slots[] = {
    {Py_tp_doc, (void *)"An Erlang process identifier."},
    {Py_tp_repr, (void *)pid_repr},
    {Py_tp_hash, (void *)pid_hash},
    {Py_tp_richcompare, (void *)pid_richcompare},
    {Py_tp_methods, pid_methods},
    {0, NULL},
};

static PyType_Spec pid_spec = {
    .name = "erlang.Pid",
    .basicsize = sizeof(PidObject),
    /* as the static type it was: not subclassed, made, nor changed */
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = pid_slots,
};

PyTypeObject *pyp_pid_type(void)
{
    pyi_state_t *s = pyi_state();
    if (!s)
        return NULL;
    if (!s->pid_type)
        s->pid_type = PyType_FromSpec(&pid_spec);
    return (PyTypeObject *)s->pid_type;
}

/* Whether o is an erlang.Pid of this interpreter (no exception). */
static int is_pid(PyObject *o)
{
    PyTypeObject *t = pyp_pid_type();
    if (!t) {
        PyErr_Clear();
        return 0;
    }
    return Py_IS_TYPE(o, t);
}

static PyObject *pid_richcompare(PyObject *a, PyObject *b, int op)
{
    int c;
    if (!is_pid(a) || !is_pid(b))
        Py_RETURN_NOTIMPLEMENTED;
    c = enif_compare_pids(&((PidObject *)a)->pid, &((PidObject *)b)->pid);
    Py_RETURN_RICHCOMPARE(c, 0, op);
}

PyObject *pyp_pid_new(const ErlNifPid *pid)
{
    PyTypeObject *t = pyp_pid_type();
    PidObject *p = t ? PyObject_New(PidObject, t) : NULL;
    if (p)
        p->pid = *pid;
    return (PyObject *)p;
}

int pyp_pid_get(PyObject *o, ErlNifPid *pid)
{
    if (!is_pid(o))
        return 0;
    *pid = ((PidObject *)o)->pid;
    return 1;
}
