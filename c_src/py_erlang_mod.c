/* py_erlang_mod.c — the `erlang` module seen by Python code.
 * erlang.call on a worker thread goes through the pool's callback table
 * (pym_host_t, set at boot: the pool is above this file), which sends the
 * request and waits, running nested jobs meanwhile; on any other Python
 * thread it waits here, on a private waiter resource.  GIL held on entry
 * to every function; it is released only while waiting. */
#include <stdio.h>
#include <string.h>

#include "atoms.h"
#include "py_convert.h"
#include "py_erlang_mod.h"
#include "py_error.h"
#include "py_interp.h"
#include "py_pid.h"
#include "job.h"

#define PYM_RECURSION_CAP 20000

static const pym_host_t *host; /* the pool's, set once at boot */

void pym_set_host(const pym_host_t *h)
{
    host = h;
}

PyObject *pym_raise_gave_up(void)
{
    PyObject *exc = pym_interrupt_exc();
    if (exc)
        PyErr_SetString(exc, "the Erlang caller gave up (timeout or exit)");
    return NULL;
}

int pym_job_cancelled(void)
{
    return host && host->cancelled ? host->cancelled() : 0;
}

/* ---- waiting on a thread that is not a worker ---------------------------
 * A Python thread started by user code has no worker, so its erlang.call
 * goes to the callback runner with a private waiter as its reply address. */

typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int ready, failed;
    ErlNifMonitor mon;
    ErlNifEnv *env;
    ERL_NIF_TERM result;
} pym_waiter_t;

static ErlNifResourceType *waiter_type;

static void waiter_dtor(ErlNifEnv *env, void *obj)
{
    pym_waiter_t *wt = obj;
    (void)env;
    if (wt->env)
        enif_free_env(wt->env);
    pthread_mutex_destroy(&wt->lock);
    pthread_cond_destroy(&wt->cond);
}

/* The runner died: the wait ends. */
static void waiter_down(ErlNifEnv *env, void *obj, ErlNifPid *pid, ErlNifMonitor *mon)
{
    pym_waiter_t *wt = obj;
    (void)env;
    (void)pid;
    (void)mon;
    pthread_mutex_lock(&wt->lock);
    wt->failed = 1;
    pthread_cond_signal(&wt->cond);
    pthread_mutex_unlock(&wt->lock);
}

int pym_types_init(ErlNifEnv *env)
{
    ErlNifResourceTypeInit ti = {.dtor = waiter_dtor, .down = waiter_down};
    waiter_type = enif_open_resource_type_x(env, "py_waiter", &ti,
                                            ERL_NIF_RT_CREATE | ERL_NIF_RT_TAKEOVER, NULL);
    return waiter_type ? 0 : -1;
}

/* ---- the exception classes, one pair per interpreter ------------------ */

static int make_exceptions(pyi_state_t *s)
{
    if (!s->erlang_error &&
        !(s->erlang_error = PyErr_NewExceptionWithDoc(
              "erlang.ErlangError", "An Erlang function called from Python failed.", NULL, NULL)))
        return -1;
    if (!s->interrupted &&
        !(s->interrupted = PyErr_NewExceptionWithDoc(
              "erlang.Interrupted",
              "Raised in Python code whose Erlang caller gave up (timeout, exit, shutdown).",
              PyExc_BaseException, NULL)))
        return -1;
    return 0;
}

PyObject *pym_interrupt_exc(void)
{
    pyi_state_t *s = pyi_state();
    if (!s || make_exceptions(s) < 0)
        return NULL;
    return s->interrupted;
}

/* Raises erlang.ErlangError (or the failure to make it) with msg. */
static PyObject *erlang_error(const char *msg)
{
    pyi_state_t *s = pyi_state();
    if (s && make_exceptions(s) == 0)
        PyErr_SetString(s->erlang_error, msg);
    return NULL;
}

static PyObject *erlang_error_class(void)
{
    pyi_state_t *s = pyi_state();
    if (!s || make_exceptions(s) < 0)
        return NULL;
    return s->erlang_error;
}

/* ---- erlang._Reply: delivers a coroutine's outcome -------------------- */

typedef struct {
    PyObject_HEAD pyn_areply_t *r;
} ReplyObject;

static void reply_dealloc(PyObject *self)
{
    ReplyObject *o = (ReplyObject *)self;
    PyTypeObject *tp = Py_TYPE(self);
    if (o->r)
        enif_release_resource(o->r);
    tp->tp_free(self);
    Py_DECREF(tp); /* a heap type: each instance holds it */
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
        t = pyer_exception_term(m, type, val, tb);
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
    t = pyer_exception_term(m, (PyObject *)Py_TYPE(exc), exc, tb);
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

static PyType_Slot reply_slots[] = {
    {Py_tp_doc, (void *)"Where the outcome of py:async_call goes (internal)."},
    {Py_tp_dealloc, (void *)reply_dealloc},
    {Py_tp_methods, reply_methods},
    {Py_tp_getset, reply_getset},
    {0, NULL},
};

static PyType_Spec reply_spec = {
    .name = "erlang._Reply",
    .basicsize = sizeof(ReplyObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = reply_slots,
};

PyObject *pym_reply_new(pyn_areply_t *r)
{
    pyi_state_t *s = pyi_state();
    ReplyObject *o;
    if (!s)
        return NULL;
    if (!s->reply_type && !(s->reply_type = PyType_FromSpec(&reply_spec)))
        return NULL;
    if ((o = PyObject_New(ReplyObject, (PyTypeObject *)s->reply_type))) {
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
    PyObject *exc = erlang_error_class();

    if (!exc)
        return NULL;
    if (!enif_get_tuple(env, reply, &arity, &el) || arity != 2)
        return erlang_error("malformed callback reply");
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

static PyObject *call_from_thread(ErlNifEnv *m, ERL_NIF_TERM name, ERL_NIF_TERM args)
{
    ErlNifPid runner;
    pym_waiter_t *wt;
    ERL_NIF_TERM msg, wterm;
    PyObject *result = NULL;

    if (!host || !host->runner(&runner)) {
        enif_free_env(m);
        return erlang_error("erlang_python is not running");
    }
    if (!(wt = enif_alloc_resource(waiter_type, sizeof *wt))) {
        enif_free_env(m);
        return PyErr_NoMemory();
    }
    memset(wt, 0, sizeof *wt);
    pthread_mutex_init(&wt->lock, NULL);
    pthread_cond_init(&wt->cond, NULL);
    if (enif_monitor_process(NULL, wt, &runner, &wt->mon) != 0) {
        enif_free_env(m);
        enif_release_resource(wt);
        return erlang_error("erlang_python is not running");
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
        erlang_error("the Erlang callback runner exited");
    enif_release_resource(wt);
    return result;
}

int pym_waiter_deliver(ErlNifEnv *caller_env, ERL_NIF_TERM handle, ERL_NIF_TERM result)
{
    pym_waiter_t *wt;
    ErlNifEnv *env;
    ERL_NIF_TERM copy;

    if (!enif_get_resource(caller_env, handle, waiter_type, (void **)&wt))
        return 0;
    env = enif_alloc_env();
    copy = enif_make_copy(env, result);

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
    return 1;
}

static PyObject *m_call(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    ErlNifEnv *m, *renv = NULL;
    ERL_NIF_TERM name, list = 0, reply;
    PyObject *result;
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
    switch (host ? host->call(m, name, list, &renv, &reply) : PYM_CB_NOT_WORKER) {
    case PYM_CB_OK:
        result = decode_reply(renv, reply);
        enif_free_env(renv);
        return result;
    case PYM_CB_NOT_RUNNING:
        return erlang_error("erlang_python is not running");
    case PYM_CB_TOO_DEEP:
        PyErr_SetString(PyExc_RecursionError, "Erlang callbacks nested too deeply");
        return NULL;
    case PYM_CB_CANCELLED:
        return pym_raise_gave_up();
    default: /* not a worker running a request: any other Python thread */
        return call_from_thread(m, name, list);
    }
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

    if (nargs != 2 || !pyp_pid_get(args[0], &pid)) {
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

/* erlang._log(record): sends {py_log, WorkerId, Record} to the log sink
 * (py_log, which hands it to OTP's logger); False when there is none. */
static PyObject *m_log(PyObject *self, PyObject *arg)
{
    ErlNifPid pid;
    ErlNifEnv *m;
    ERL_NIF_TERM t;
    int worker = 0, sent;
    (void)self;

    if (!host || !host->log_sink(&pid, &worker))
        Py_RETURN_FALSE;
    m = enif_alloc_env();
    if (pyc_to_term(m, arg, &t) < 0) {
        enif_free_env(m);
        return NULL;
    }
    t = enif_make_tuple3(m, enif_make_atom(m, "py_log"),
                         worker ? enif_make_int(m, worker) : enif_make_atom(m, "undefined"), t);
    sent = enif_send(NULL, &pid, m, t); /* 0: py_log is gone */
    enif_free_env(m);
    return PyBool_FromLong(sent);
}

static PyObject *m_self(PyObject *self, PyObject *unused)
{
    ErlNifPid pid;
    (void)self;
    (void)unused;
    if (host && host->caller(&pid))
        return pyp_pid_new(&pid);
    Py_RETURN_NONE;
}

/* erlang._type(name): erlang.Channel, erlang.ByteChannel (made on first use). */
static PyObject *m_type(PyObject *self, PyObject *name)
{
    const char *s = PyUnicode_Check(name) ? PyUnicode_AsUTF8(name) : NULL;
    (void)self;
    if (!s) {
        PyErr_SetString(PyExc_TypeError, "_type(name): name must be a str");
        return NULL;
    }
    return pyc_hook_type(s);
}

static PyMethodDef methods[] = {
    {"_type", m_type, METH_O, "_type(name): the erlang.Channel or erlang.ByteChannel type (internal)."},
    {"call", (PyCFunction)(void (*)(void))m_call, METH_FASTCALL,
     "call(name, *args): call the Erlang function registered as name."},
    {"send", (PyCFunction)(void (*)(void))m_send, METH_FASTCALL,
     "send(pid, term): send term to an Erlang process."},
    {"_log", m_log, METH_O, "_log(record): hand a log record to OTP's logger (internal)."},
    {"self", m_self, METH_NOARGS,
     "self(): the pid of the Erlang process whose request is running, or None."},
    {NULL, NULL, 0, NULL},
};



/* Pure-Python part of the module, run in its namespace. */
static const char helpers[] =
    "class ChannelClosed(Exception):\n"
    "    '''Raised by a channel's receive once it is closed and drained, or\n"
    "    at once when the process that made it exited.'''\n"
    "def __getattr__(name):\n"
    "    if name.startswith('__') and name.endswith('__'):\n"
    "        raise AttributeError(\"module 'erlang' has no attribute %r\" % name)\n"
    "    if name in ('Channel', 'ByteChannel'):\n"
    "        return _type(name)\n"
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

/* Fills a new `erlang' module (multi-phase init: once per interpreter
 * that imports it, with that interpreter's types and classes). */
static int mod_exec(PyObject *mod)
{
    pyi_state_t *s = pyi_state();
    PyObject *pid = (PyObject *)pyp_pid_type(), *r;

    if (!s || !pid || make_exceptions(s) < 0)
        return -1;
    if (PyModule_AddObjectRef(mod, "Pid", pid) < 0 ||
        PyModule_AddObjectRef(mod, "ErlangError", s->erlang_error) < 0 ||
        PyModule_AddObjectRef(mod, "Interrupted", s->interrupted) < 0)
        return -1;
    if (!(r = PyRun_String(helpers, Py_file_input, PyModule_GetDict(mod), PyModule_GetDict(mod))))
        return -1;
    Py_DECREF(r);
    return 0;
}

static PyModuleDef_Slot mod_slots[] = {
    {Py_mod_exec, (void *)mod_exec},
#ifdef Py_MOD_PER_INTERPRETER_GIL_SUPPORTED
    /* No C global holds a Python object (py_interp.h): the module may be
     * imported by interpreters that each have their own GIL. */
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
    {0, NULL},
};

static struct PyModuleDef moddef = {
    PyModuleDef_HEAD_INIT, "erlang", "Calls from Python into the Erlang VM.", 0, methods,
    mod_slots, NULL, NULL, NULL,
};

PyObject *pym_init_module(void)
{
    return PyModuleDef_Init(&moddef);
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
