/* py_erlang_mod.c — the `erlang` module seen by Python code.
 * erlang.call on a worker thread sends the request to the Erlang side and
 * waits through pyn_callback_wait (which runs nested jobs meanwhile); on any
 * other Python thread it waits on a private waiter resource.  GIL held on
 * entry to every function; it is released only while waiting. */
#include <stdio.h>
#include <string.h>

#include "atoms.h"
#include "py_convert.h"
#include "py_erlang_mod.h"
#include "py_exec.h"
#include "worker.h"

#define PYM_RECURSION_CAP 20000

static PyObject *ErlangError;
static PyObject *Interrupted;

/* ---- erlang.Pid ------------------------------------------------------- */

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

static PyTypeObject PidType = {
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
    if (!PyObject_TypeCheck(a, &PidType) || !PyObject_TypeCheck(b, &PidType))
        Py_RETURN_NOTIMPLEMENTED;
    c = enif_compare_pids(&((PidObject *)a)->pid, &((PidObject *)b)->pid);
    Py_RETURN_RICHCOMPARE(c, 0, op);
}

PyObject *pym_pid_new(const ErlNifPid *pid)
{
    PidObject *p = PyObject_New(PidObject, &PidType);
    if (p)
        p->pid = *pid;
    return (PyObject *)p;
}

int pym_pid_get(PyObject *o, ErlNifPid *pid)
{
    if (!PyObject_TypeCheck(o, &PidType))
        return 0;
    *pid = ((PidObject *)o)->pid;
    return 1;
}

PyObject *pym_interrupt_exc(void)
{
    return Interrupted;
}

/* ---- erlang._Reply: delivers a coroutine's outcome -------------------- */

typedef struct {
    PyObject_HEAD pyn_areply_t *r;
} ReplyObject;

static void reply_dealloc(PyObject *self)
{
    ReplyObject *o = (ReplyObject *)self;
    if (o->r)
        enif_release_resource(o->r);
    Py_TYPE(self)->tp_free(self);
}

static PyObject *reply_send(ReplyObject *o, ERL_NIF_TERM reply, ErlNifEnv *m)
{
    int sent = pyn_areply_send(o->r, m, reply);
    enif_free_env(m);
    return PyBool_FromLong(sent);
}

static PyObject *reply_result(PyObject *self, PyObject *value)
{
    ErlNifEnv *m = enif_alloc_env();
    ERL_NIF_TERM t;
    if (pyc_to_term(m, value, &t) < 0) {
        /* The value cannot be converted: the caller gets that error. */
        PyObject *type, *val, *tb;
        PyErr_Fetch(&type, &val, &tb);
        PyErr_NormalizeException(&type, &val, &tb);
        t = pyx_exception_term(m, type, val, tb);
        Py_XDECREF(type);
        Py_XDECREF(val);
        Py_XDECREF(tb);
        return reply_send((ReplyObject *)self, t, m);
    }
    return reply_send((ReplyObject *)self, enif_make_tuple2(m, ATOMS.ok, t), m);
}

static PyObject *reply_exception(PyObject *self, PyObject *exc)
{
    ErlNifEnv *m;
    PyObject *tb;
    ERL_NIF_TERM t;

    if (!PyExceptionInstance_Check(exc)) {
        PyErr_SetString(PyExc_TypeError, "exception(exc): exc must be an exception");
        return NULL;
    }
    m = enif_alloc_env();
    tb = PyException_GetTraceback(exc); /* new reference or NULL */
    t = pyx_exception_term(m, (PyObject *)Py_TYPE(exc), exc, tb);
    Py_XDECREF(tb);
    return reply_send((ReplyObject *)self, t, m);
}

/* True once the Erlang caller gave up (py:async_await timed out). */
static PyObject *reply_abandoned(PyObject *self, void *closure)
{
    pyn_areply_t *r = ((ReplyObject *)self)->r;
    int gone;
    (void)closure;
    pthread_mutex_lock(&r->lock);
    gone = r->done && !r->sent;
    pthread_mutex_unlock(&r->lock);
    return PyBool_FromLong(gone);
}

static PyGetSetDef reply_getset[] = {
    {"abandoned", reply_abandoned, NULL, "Whether the caller gave up.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef reply_methods[] = {
    {"result", reply_result, METH_O, "result(value): send {ok, value} to the caller."},
    {"exception", reply_exception, METH_O, "exception(exc): send the error to the caller."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ReplyType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "erlang._Reply",
    .tp_basicsize = sizeof(ReplyObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Where the outcome of py:async_call goes (internal).",
    .tp_dealloc = reply_dealloc,
    .tp_methods = reply_methods,
    .tp_getset = reply_getset,
};

PyObject *pym_reply_new(pyn_areply_t *r)
{
    ReplyObject *o = PyObject_New(ReplyObject, &ReplyType);
    if (o) {
        enif_keep_resource(r);
        o->r = r;
    }
    return (PyObject *)o;
}

/* ---- erlang.call ------------------------------------------------------ */

/* Turns a callback reply into a result or a raised exception.
 * Replies: {ok, Term} | {error, Msg} | {name_error, Msg}. */
static PyObject *decode_reply(ErlNifEnv *env, ERL_NIF_TERM reply)
{
    int arity;
    const ERL_NIF_TERM *el;
    ErlNifBinary msg;
    PyObject *exc = ErlangError;

    if (!enif_get_tuple(env, reply, &arity, &el) || arity != 2) {
        PyErr_SetString(ErlangError, "malformed callback reply");
        return NULL;
    }
    if (enif_is_identical(el[0], ATOMS.ok))
        return pyc_to_py(env, el[1]);
    if (enif_is_identical(el[0], ATOMS.name_error))
        exc = PyExc_NameError;
    if (enif_inspect_binary(env, el[1], &msg)) {
        PyObject *s = PyUnicode_DecodeUTF8((const char *)msg.data, (Py_ssize_t)msg.size, "replace");
        if (s) {
            PyErr_SetObject(exc, s);
            Py_DECREF(s);
        }
    } else {
        PyErr_SetString(exc, "Erlang callback failed");
    }
    return NULL;
}

static PyObject *call_from_worker(pyn_worker_t *w, ErlNifEnv *m, ERL_NIF_TERM name,
                                  ERL_NIF_TERM args)
{
    ErlNifPid pid;
    ERL_NIF_TERM ref, wterm, reply_to, msg, reply;
    ErlNifEnv *renv = NULL;
    PyObject *result;
    uint64_t id;
    int sync;

    pyn_callback_monitor(w);
    sync = pyn_callback_target(w, &pid, m, &ref);

    if (sync < 0) {
        enif_free_env(m);
        PyErr_SetString(ErlangError, "erlang_python is not running");
        return NULL;
    }
    if (!(id = pyn_callback_open(w))) {
        enif_free_env(m);
        PyErr_SetString(PyExc_RecursionError, "Erlang callbacks nested too deeply");
        return NULL;
    }
    wterm = enif_make_resource(m, w);
    reply_to = enif_make_tuple2(m, wterm, enif_make_uint64(m, id));
    if (sync)
        msg = enif_make_tuple2(m, ref, enif_make_tuple4(m, ATOMS.py_cb, reply_to, name, args));
    else
        msg = enif_make_tuple5(m, ATOMS.py_cb, reply_to, wterm, name, args);
    /* If the job was cancelled the request is not sent, and the wait below
     * returns at once. */
    (void)pyn_callback_send(w, &pid, m, msg);
    enif_free_env(m);
    if (pyn_callback_wait(w, id, &renv, &reply) < 0) {
        PyErr_SetString(Interrupted, "the Erlang caller gave up (timeout or exit)");
        return NULL;
    }
    result = decode_reply(renv, reply);
    enif_free_env(renv);
    return result;
}

static PyObject *call_from_thread(ErlNifEnv *m, ERL_NIF_TERM name, ERL_NIF_TERM args)
{
    ErlNifPid runner;
    pyn_waiter_t *wt;
    ERL_NIF_TERM msg, wterm;
    PyObject *result = NULL;

    if (!pyn_runner_pid(&runner)) {
        enif_free_env(m);
        PyErr_SetString(ErlangError, "erlang_python is not running");
        return NULL;
    }
    if (!(wt = enif_alloc_resource(pyn_waiter_type, sizeof *wt))) {
        enif_free_env(m);
        return PyErr_NoMemory();
    }
    memset(wt, 0, sizeof *wt);
    pthread_mutex_init(&wt->lock, NULL);
    pthread_cond_init(&wt->cond, NULL);
    if (enif_monitor_process(NULL, wt, &runner, &wt->mon) != 0) {
        enif_free_env(m);
        enif_release_resource(wt);
        PyErr_SetString(ErlangError, "erlang_python is not running");
        return NULL;
    }
    wterm = enif_make_resource(m, wt);
    msg = enif_make_tuple5(m, ATOMS.py_cb, enif_make_tuple2(m, wterm, enif_make_uint64(m, 0)),
                           ATOMS.undefined, name, args);
    enif_send(NULL, &runner, m, msg);
    enif_free_env(m);

    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&wt->lock);
    while (!wt->ready && !wt->failed)
        pthread_cond_wait(&wt->cond, &wt->lock);
    pthread_mutex_unlock(&wt->lock);
    Py_END_ALLOW_THREADS

    enif_demonitor_process(NULL, wt, &wt->mon);
    if (wt->ready)
        result = decode_reply(wt->env, wt->result);
    else
        PyErr_SetString(ErlangError, "the Erlang callback runner exited");
    enif_release_resource(wt);
    return result;
}

void pym_waiter_deliver(void *obj, ERL_NIF_TERM result)
{
    pyn_waiter_t *wt = obj;
    ErlNifEnv *env = enif_alloc_env();
    ERL_NIF_TERM copy = enif_make_copy(env, result);

    pthread_mutex_lock(&wt->lock);
    if (!wt->ready) {
        wt->env = env;
        wt->result = copy;
        wt->ready = 1;
        env = NULL;
        pthread_cond_signal(&wt->cond);
    }
    pthread_mutex_unlock(&wt->lock);
    if (env)
        enif_free_env(env);
}

static PyObject *m_call(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    ErlNifEnv *m;
    ERL_NIF_TERM name, list = 0;
    pyn_worker_t *w = pyn_self;
    (void)self;

    if (nargs < 1 || !PyUnicode_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "erlang.call(name, *args): name must be a str");
        return NULL;
    }
    m = enif_alloc_env();
    if (pyc_str_term(m, args[0], &name) < 0)
        goto fail;
    list = enif_make_list(m, 0);
    for (Py_ssize_t i = nargs - 1; i >= 1; i--) {
        ERL_NIF_TERM t;
        if (pyc_to_term(m, args[i], &t) < 0)
            goto fail;
        list = enif_make_list_cell(m, t, list);
    }
    if (w && w->current)
        return call_from_worker(w, m, name, list);
    return call_from_thread(m, name, list);
fail:
    enif_free_env(m);
    return NULL;
}

static PyObject *m_send(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    ErlNifPid pid;
    ErlNifEnv *m;
    ERL_NIF_TERM t;
    (void)self;

    if (nargs != 2 || !pym_pid_get(args[0], &pid)) {
        PyErr_SetString(PyExc_TypeError, "erlang.send(pid, term): pid must be an erlang.Pid");
        return NULL;
    }
    m = enif_alloc_env();
    if (pyc_to_term(m, args[1], &t) < 0) {
        enif_free_env(m);
        return NULL;
    }
    enif_send(NULL, &pid, m, t);
    enif_free_env(m);
    Py_RETURN_NONE;
}

static PyObject *m_self(PyObject *self, PyObject *unused)
{
    pyn_worker_t *w = pyn_self;
    (void)self;
    (void)unused;
    if (w && w->current && w->current->has_caller)
        return pym_pid_new(&w->current->caller);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"call", (PyCFunction)(void (*)(void))m_call, METH_FASTCALL,
     "call(name, *args): call the Erlang function registered as name."},
    {"send", (PyCFunction)(void (*)(void))m_send, METH_FASTCALL,
     "send(pid, term): send term to an Erlang process."},
    {"self", m_self, METH_NOARGS,
     "self(): the pid of the Erlang process whose request is running, or None."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moddef = {
    PyModuleDef_HEAD_INIT, "erlang", "Calls from Python into the Erlang VM.", -1, methods,
    NULL, NULL, NULL, NULL,
};

/* Pure-Python part of the module, run in its namespace. */
static const char helpers[] =
    "def __getattr__(name):\n"
    "    if name.startswith('__') and name.endswith('__'):\n"
    "        raise AttributeError(\"module 'erlang' has no attribute %r\" % name)\n"
    "    def function(*args):\n"
    "        return call(name, *args)\n"
    "    function.__name__ = function.__qualname__ = name\n"
    "    function.__doc__ = 'Calls the Erlang function registered as %r.' % name\n"
    "    return function\n"
    "def state_get(key, default=None):\n"
    "    found, value = call('_py_state_fetch', key)\n"
    "    return value if found else default\n"
    "def state_set(key, value):\n"
    "    call('_py_state_store', key, value)\n"
    "def state_delete(key):\n"
    "    call('_py_state_remove', key)\n"
    "def state_keys():\n"
    "    return call('_py_state_keys')\n"
    "def state_clear():\n"
    "    call('_py_state_clear')\n"
    "def state_incr(key, amount=1):\n"
    "    return call('_py_state_incr', key, amount)\n"
    "def state_decr(key, amount=1):\n"
    "    return call('_py_state_decr', key, amount)\n";

PyObject *pym_init_module(void)
{
    PyObject *mod = NULL, *r = NULL;

    if (PyType_Ready(&PidType) < 0 || PyType_Ready(&ReplyType) < 0)
        return NULL;
    if (!(mod = PyModule_Create(&moddef)))
        return NULL;
    ErlangError = PyErr_NewExceptionWithDoc(
        "erlang.ErlangError", "An Erlang function called from Python failed.", NULL, NULL);
    Interrupted = PyErr_NewExceptionWithDoc(
        "erlang.Interrupted",
        "Raised in Python code whose Erlang caller gave up (timeout, exit, shutdown).",
        PyExc_BaseException, NULL);
    if (!ErlangError || !Interrupted)
        goto fail;
    Py_INCREF(&PidType);
    if (PyModule_AddObject(mod, "Pid", (PyObject *)&PidType) < 0)
        goto fail;
    Py_INCREF(ErlangError);
    Py_INCREF(Interrupted);
    if (PyModule_AddObject(mod, "ErlangError", ErlangError) < 0 ||
        PyModule_AddObject(mod, "Interrupted", Interrupted) < 0)
        goto fail;
    if (!(r = PyRun_String(helpers, Py_file_input, PyModule_GetDict(mod), PyModule_GetDict(mod))))
        goto fail;
    Py_DECREF(r);
    return mod;
fail:
    Py_XDECREF(mod);
    return NULL;
}

/* Interpreter-wide safety settings, run once at start-up:
 * - threads started by Python code get 64 MiB stacks, like the workers;
 * - sys.setrecursionlimit is capped: CPython 3.11 bounds C recursion (deep
 *   repr, comparisons of deep lists) by the same limit, and a limit of a
 *   million lets such code overflow any stack, killing the whole VM. */
static const char safety[] =
    "import sys, threading\n"
    "threading.stack_size(64 * 1024 * 1024)\n"
    "def _cap(setrecursionlimit):\n"
    "    def capped(limit):\n"
    "        \"\"\"sys.setrecursionlimit, capped at %d by erlang_python.\"\"\"\n"
    "        setrecursionlimit(min(limit, %d))\n"
    "    return capped\n"
    "sys.setrecursionlimit = _cap(sys.setrecursionlimit)\n";

int pym_setup(void)
{
    char code[sizeof safety + 32];
    PyObject *m = PyImport_ImportModule("erlang"), *g, *r;
    if (!m)
        return -1;
    Py_DECREF(m);
    snprintf(code, sizeof code, safety, PYM_RECURSION_CAP, PYM_RECURSION_CAP);
    if (!(g = PyDict_New()))
        return -1;
    r = PyRun_String(code, Py_file_input, g, g);
    Py_DECREF(g);
    if (!r)
        return -1;
    Py_DECREF(r);
    return 0;
}
