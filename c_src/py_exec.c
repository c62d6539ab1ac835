/* py_exec.c — what a job does in Python.  Worker thread, GIL held.
 * Each worker owns one namespace (a globals dict used as globals and locals,
 * so functions defined by exec see their neighbours) and a module cache.
 * Compiled code is cached across workers (code objects are immutable). */
#include <string.h>

#include "atoms.h"
#include "py_compat.h"
#include "py_convert.h"
#include "py_erlang_mod.h"
#include "py_error.h"
#include "py_etf.h"
#include "py_exec.h"
#include "py_buffer.h"
#include "py_interp.h"
#include "py_stream.h"

#define PYX_CODE_CACHE_MAX 1024

/* Callables looked up by (Module, Func) atom pair.  An entry is valid while
 * the dict it was found in (module or namespace) keeps its version tag:
 * any assignment in that dict (monkeypatching, reload, exec) misses. */
#define PYX_FN_CACHE 64

typedef struct {
    ERL_NIF_TERM mod, fun; /* atoms: global terms, compared by identity */
    PyObject *owner;       /* strong: the dict the lookup started from */
    uint64_t version;
    PyObject *callable;    /* strong */
} pyx_fn_entry_t;

/* References dropped only once the reply is on its way (pyx_release_later):
 * freeing a request's arguments and its result (100000 integers, say)
 * then no longer delays the reply. */
#define PYX_LATER 16

struct pyx_state {
    PyObject *globals; /* the namespace: '__main__' of this worker */
    PyObject *modules; /* name -> module, filled after a completed import */
    pyx_fn_entry_t fns[PYX_FN_CACHE];
    PyObject *later[PYX_LATER];
    int nlater;
};

/* Drops o (may be NULL) after the reply is sent, or now if the list is full. */
static void release_later(pyx_state_t *st, PyObject *o)
{
    if (!o)
        return;
    if (st->nlater < PYX_LATER)
        st->later[st->nlater++] = o;
    else
        Py_DECREF(o);
}

int pyx_has_later(pyx_state_t *st)
{
    return st && st->nlater > 0;
}

void pyx_release_later(pyx_state_t *st)
{
    while (st && st->nlater > 0)
        Py_DECREF(st->later[--st->nlater]);
}

/* Compiled code, shared by the workers of one interpreter: bytes (mode
 * byte + source) -> code (in the interpreter's state: py_interp.h). */
static PyObject *code_cache(void)
{
    pyi_state_t *s = pyi_state();
    if (!s)
        return NULL;
    if (!s->code_cache)
        s->code_cache = PyDict_New();
    return s->code_cache;
}

/* ---- namespace ----------------------------------------------------------- */

/* What every namespace starts with: builtins, __name__ '__main__' and the
 * `erlang' module, so that code run by eval/exec sees `erlang' without an
 * import (as the original library's examples expect). */
static int seed_namespace(PyObject *g)
{
    PyObject *name, *erl;
    int rc;
    if (PyDict_SetItemString(g, "__builtins__", PyEval_GetBuiltins()) < 0)
        return -1;
    if (!(name = PyUnicode_FromString("__main__")))
        return -1;
    rc = PyDict_SetItemString(g, "__name__", name);
    Py_DECREF(name);
    if (rc < 0 || !(erl = PyImport_ImportModule("erlang")))
        return -1;
    rc = PyDict_SetItemString(g, "erlang", erl);
    Py_DECREF(erl);
    return rc;
}

static PyObject *new_namespace(void)
{
    PyObject *g = PyDict_New();
    if (g && seed_namespace(g) < 0)
        Py_CLEAR(g);
    return g;
}

pyx_state_t *pyx_worker_init(void)
{
    pyx_state_t *st = PyMem_RawCalloc(1, sizeof *st);
    if (!st)
        return NULL;
    if (!code_cache())
        goto fail;
    if (!(st->globals = new_namespace()) || !(st->modules = PyDict_New()))
        goto fail;
    pyc_thread_init();
    return st;
fail:
    PyErr_Clear();
    Py_XDECREF(st->globals);
    Py_XDECREF(st->modules);
    PyMem_RawFree(st);
    return NULL;
}

static void fn_cache_clear(pyx_state_t *st)
{
    for (int i = 0; i < PYX_FN_CACHE; i++) {
        Py_CLEAR(st->fns[i].owner);
        Py_CLEAR(st->fns[i].callable);
        st->fns[i].mod = st->fns[i].fun = 0;
    }
}

void pyx_worker_fini(pyx_state_t *st)
{
    pyc_thread_fini();
    if (!st)
        return;
    pyx_release_later(st);
    fn_cache_clear(st);
    Py_CLEAR(st->globals);
    Py_CLEAR(st->modules);
    PyMem_RawFree(st);
    PyErr_Clear();
}

/* A fresh namespace; the old one is emptied so that what its holder left
 * (objects, open files, connections) is released now. */
static void wipe(pyx_state_t *st)
{
    PyObject *old = st->globals, *fresh = new_namespace();
    if (!fresh) {
        PyErr_Clear();
        PyDict_Clear(old); /* still wiped, just not replaced */
        if (seed_namespace(old) < 0)
            PyErr_Clear();
        return;
    }
    st->globals = fresh;
    fn_cache_clear(st);
    PyDict_Clear(old);
    Py_DECREF(old);
    PyErr_Clear();
}

/* ---- borrowed requests ----------------------------------------------------
 * While a request is read on its caller's heap (reply.c, "borrowed
 * requests"), no Python code may run: the caller waits for the reading to
 * end.  Conversion runs none of its own, and the cyclic garbage collector
 * (which may run finalizers) is held off until args_done. */

static __thread pyn_job_t *reading; /* the job whose request is borrowed */
static __thread int gc_was_enabled;

static void args_begin(pyn_job_t *j)
{
    pyn_args_begin(j);
    if (__atomic_load_n(&j->borrow, __ATOMIC_RELAXED) == PYN_BR_READING) {
        reading = j;
        gc_was_enabled = PyGC_Disable();
    }
}

/* The request has been read: the caller may go. */
static void args_done(void)
{
    if (!reading)
        return;
    pyn_args_end(reading);
    reading = NULL;
    if (gc_was_enabled)
        PyGC_Enable();
}

/* ---- call ---------------------------------------------------------------- */

/* getattr over a dotted path ("a.b.c"); steals base. */
static PyObject *getattr_path(PyObject *base, PyObject *path)
{
    PyObject *dot, *parts, *obj = base;
    Py_ssize_t n;

    if (PyUnicode_FindChar(path, '.', 0, PyUnicode_GET_LENGTH(path), 1) < 0) {
        PyObject *r = PyObject_GetAttr(base, path);
        Py_DECREF(base);
        return r;
    }
    dot = PyUnicode_FromString(".");
    parts = dot ? PyUnicode_Split(path, dot, -1) : NULL;
    Py_XDECREF(dot);
    if (!parts) {
        Py_DECREF(base);
        return NULL;
    }
    n = PyList_GET_SIZE(parts);
    for (Py_ssize_t i = 0; i < n && obj; i++) {
        PyObject *next = PyObject_GetAttr(obj, PyList_GET_ITEM(parts, i));
        Py_DECREF(obj);
        obj = next;
    }
    Py_DECREF(parts);
    return obj;
}

static PyObject *import_cached(pyx_state_t *st, PyObject *name)
{
    PyObject *mod = PyDict_GetItemWithError(st->modules, name);
    if (mod) {
        Py_INCREF(mod);
        return mod;
    }
    if (PyErr_Occurred() || !(mod = PyImport_Import(name)))
        return NULL;
    if (PyDict_SetItem(st->modules, name, mod) < 0)
        PyErr_Clear();
    return mod;
}

/* The callable named (mname, fname): '__main__' is this worker's
 * namespace.  May run Python code (imports). */
static PyObject *resolve_names(pyx_state_t *st, PyObject *mname, PyObject *fname)
{
    PyObject *obj = NULL, *head, *rest;
    Py_ssize_t dot;

    if (PyUnicode_CompareWithASCIIString(mname, "__main__") != 0) {
        PyObject *mod = import_cached(st, mname);
        return mod ? getattr_path(mod, fname) : NULL;
    }
    /* __main__: first name from the namespace (or builtins), then attributes */
    dot = PyUnicode_FindChar(fname, '.', 0, PyUnicode_GET_LENGTH(fname), 1);
    head = dot < 0 ? (Py_INCREF(fname), fname) : PyUnicode_Substring(fname, 0, dot);
    if (!head)
        return NULL;
    obj = PyDict_GetItemWithError(st->globals, head);
    if (!obj && !PyErr_Occurred())
        obj = PyDict_GetItemWithError(PyEval_GetBuiltins(), head);
    if (!obj) {
        if (!PyErr_Occurred())
            PyErr_Format(PyExc_NameError, "name '%U' is not defined", head);
        Py_DECREF(head);
        return NULL;
    }
    Py_INCREF(obj);
    Py_DECREF(head);
    if (dot >= 0) {
        rest = PyUnicode_Substring(fname, dot + 1, PyUnicode_GET_LENGTH(fname));
        obj = rest ? getattr_path(obj, rest) : (Py_DECREF(obj), NULL);
        Py_XDECREF(rest);
    }
    return obj;
}

static PyObject *resolve(pyx_state_t *st, ErlNifEnv *env, ERL_NIF_TERM m, ERL_NIF_TERM f)
{
    PyObject *mname = pyc_name(env, m), *fname = mname ? pyc_name(env, f) : NULL, *obj = NULL;

    if (fname)
        obj = resolve_names(st, mname, fname);
    Py_XDECREF(mname);
    Py_XDECREF(fname);
    return obj;
}

/* kwargs map -> dict with str keys; NULL result with no error for #{}. */
static int kwargs_dict(ErlNifEnv *env, ERL_NIF_TERM map, PyObject **out)
{
    size_t size = 0;
    *out = NULL;
    if (enif_get_map_size(env, map, &size) && size == 0)
        return 0;
    if (!(*out = pyc_to_py(env, map)))
        return -1;
    return 0;
}

/* Whether an atom's text holds a dot (dotted lookups are not cached: the
 * guard covers only the first dict). */
static int dotted_atom(ErlNifEnv *env, ERL_NIF_TERM a)
{
    char buf[1024];
    int n = enif_get_atom(env, a, buf, sizeof buf, ERL_NIF_LATIN1);
    return n <= 0 || memchr(buf, '.', (size_t)n) != NULL;
}

/* resolve() through the per-worker cache, for atom names.  New ref. */
static PyObject *resolve_cached(pyx_state_t *st, ErlNifEnv *env, ERL_NIF_TERM m, ERL_NIF_TERM f)
{
    pyx_fn_entry_t *e;
    PyObject *fn, *owner = NULL, *modname, *mod;

    if (!enif_is_atom(env, m) || !enif_is_atom(env, f))
        return resolve(st, env, m, f);
    e = &st->fns[((m >> 6) * 31 + (f >> 6)) % PYX_FN_CACHE];
    if (e->mod == m && e->fun == f &&
        pyk_dict_version(e->owner) == e->version) {
        Py_INCREF(e->callable);
        return e->callable;
    }
    if (!(fn = resolve(st, env, m, f)) || dotted_atom(env, f))
        return fn;
    /* Remember it, guarded by the dict the name was found in. */
    if (enif_is_identical(m, ATOMS.py_main)) {
        owner = st->globals;
    } else if ((modname = pyc_name(env, m))) {
        mod = PyDict_GetItemWithError(st->modules, modname);
        Py_DECREF(modname);
        if (mod && PyModule_Check(mod))
            owner = PyModule_GetDict(mod);
    }
    PyErr_Clear();
    if (!owner)
        return fn;
    Py_XDECREF(e->owner);
    Py_XDECREF(e->callable);
    e->mod = m;
    e->fun = f;
    Py_INCREF(owner);
    e->owner = owner;
    e->version = pyk_dict_version(owner);
    Py_INCREF(fn);
    e->callable = fn;
    return fn;
}

#define PYX_FAST_ARGS 8

/* The request is read first (names, arguments), then released (it may be
 * borrowed: see pyn_args_begin), and only then is Python code run:
 * imports, attribute lookups, the call. */
static PyObject *do_call(pyx_state_t *st, ErlNifEnv *env, const ERL_NIF_TERM *el)
{
    PyObject *fn = NULL, *list = NULL, *args = NULL, *kw = NULL, *res = NULL;
    PyObject *mname = NULL, *fname = NULL;
    PyObject *argv[PYX_FAST_ARGS];
    unsigned nargs = 0, i = 0;
    ERL_NIF_TERM head, tail = el[3], m = el[1], f = el[2]; /* atoms outlive the request */
    size_t nkw = 1;
    int atoms = enif_is_atom(env, m) && enif_is_atom(env, f);

    if (!atoms && (!(mname = pyc_name(env, m)) || !(fname = pyc_name(env, f))))
        goto done;
    enif_get_map_size(env, el[4], &nkw);
    if (nkw == 0 && enif_get_list_length(env, el[3], &nargs) && nargs <= PYX_FAST_ARGS) {
        /* Common case: few positional arguments, straight to vectorcall. */
        for (i = 0; i < nargs; i++) {
            enif_get_list_cell(env, tail, &head, &tail);
            if (!(argv[i] = pyc_to_py(env, head)))
                break;
        }
        args_done();
        if (i == nargs && (fn = atoms ? resolve_cached(st, env, m, f) : resolve_names(st, mname, fname)))
            res = PyObject_Vectorcall(fn, argv, nargs, NULL);
        while (i > 0)
            release_later(st, argv[--i]);
        goto done;
    }
    if (!(list = pyc_to_py(env, el[3])))
        goto done;
    if (!PyList_Check(list)) {
        PyErr_SetString(PyExc_TypeError, "Args must be a list");
        goto done;
    }
    if (!(args = PyList_AsTuple(list)) || kwargs_dict(env, el[4], &kw) < 0)
        goto done;
    args_done();
    if ((fn = atoms ? resolve_cached(st, env, m, f) : resolve_names(st, mname, fname)))
        res = PyObject_Call(fn, args, kw);
done:
    Py_XDECREF(mname);
    Py_XDECREF(fname);
    Py_XDECREF(fn);
    release_later(st, list);
    release_later(st, args);
    release_later(st, kw);
    return res;
}

/* ---- eval / exec --------------------------------------------------------- */

/* Compiled code for source (binary) in mode, from the cache. New ref. */
/* The code cache's key for a source: a mode byte and the source text (a
 * copy: made while the request is read, compiled after). */
static PyObject *code_key(ErlNifEnv *env, ERL_NIF_TERM src, int mode)
{
    ErlNifBinary bin;
    PyObject *key;
    char *buf;

    if (!enif_inspect_binary(env, src, &bin)) {
        PyErr_SetString(PyExc_TypeError, "code must be a binary");
        return NULL;
    }
    if (memchr(bin.data, 0, bin.size)) {
        PyErr_SetString(PyExc_ValueError, "source code string cannot contain null bytes");
        return NULL;
    }
    if (!(key = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)bin.size + 1)))
        return NULL;
    buf = PyBytes_AS_STRING(key);
    buf[0] = mode == Py_eval_input ? 'e' : 'x';
    memcpy(buf + 1, bin.data, bin.size); /* PyBytes keeps a trailing NUL */
    return key;
}

/* Source for eval that is not one expression: statements ending with an
 * expression ("import json; json.dumps(x)") give a pair (code of the
 * statements, code of the expression), made by _erlang_python.split_eval.
 * Anything else keeps the SyntaxError already set. */
static PyObject *split_eval(const char *src)
{
    PyObject *et, *ev, *etb, *mod, *pair = NULL;

    if (!PyErr_ExceptionMatches(PyExc_SyntaxError))
        return NULL;
    PyErr_Fetch(&et, &ev, &etb);
    if ((mod = PyImport_ImportModule("_erlang_python"))) {
        pair = PyObject_CallMethod(mod, "split_eval", "s", src);
        Py_DECREF(mod);
    }
    if (pair && PyTuple_Check(pair)) {
        Py_XDECREF(et);
        Py_XDECREF(ev);
        Py_XDECREF(etb);
        return pair;
    }
    Py_XDECREF(pair);
    PyErr_Clear();
    PyErr_Restore(et, ev, etb);
    return NULL;
}

/* Runs compiled code in g: a code object, or a split_eval pair. */
static PyObject *eval_code(PyObject *code, PyObject *g)
{
    if (PyTuple_Check(code)) {
        PyObject *r = PyEval_EvalCode(PyTuple_GET_ITEM(code, 0), g, g);
        if (!r)
            return NULL;
        Py_DECREF(r);
        code = PyTuple_GET_ITEM(code, 1);
    }
    return PyEval_EvalCode(code, g, g);
}

/* The code object for a key, compiled once (compiling may run Python code:
 * warnings, codec lookups). */
static PyObject *compiled(PyObject *key, int mode)
{
    PyObject *cache = code_cache(), *code;
    const char *buf = PyBytes_AS_STRING(key);

    if (!cache)
        return NULL;
    code = PyDict_GetItemWithError(cache, key);
    if (code) {
        Py_INCREF(code);
    } else if (!PyErr_Occurred()) {
        code = Py_CompileStringExFlags(buf + 1, "<string>", mode, NULL, -1);
        if (!code && mode == Py_eval_input)
            code = split_eval(buf + 1);
        if (code) {
            if (PyDict_GET_SIZE(cache) >= PYX_CODE_CACHE_MAX)
                PyDict_Clear(cache);
            if (PyDict_SetItem(cache, key, code) < 0)
                PyErr_Clear();
        }
    }
    return code;
}

/* Runs code with Locals visible as names of the namespace for this one
 * run: each name is restored afterwards unless the code rebound it. */
static PyObject *run_with_locals(PyObject *code, PyObject *g, PyObject *locals)
{
    PyObject *saved = PyDict_New(), *k, *v, *res = NULL, *missing = Py_None;
    PyObject *et, *ev, *etb;
    Py_ssize_t pos = 0;

    if (!saved)
        return NULL;
    while (PyDict_Next(locals, &pos, &k, &v)) {
        PyObject *old;
        if (!PyUnicode_Check(k)) {
            PyErr_SetString(PyExc_TypeError, "Locals keys must be atoms or binaries");
            goto restore;
        }
        old = PyDict_GetItemWithError(g, k);
        if (!old && PyErr_Occurred())
            goto restore;
        /* A tuple marks "had a value"; None marks "was absent". */
        old = old ? PyTuple_Pack(1, old) : (Py_INCREF(missing), missing);
        if (!old || PyDict_SetItem(saved, k, old) < 0) {
            Py_XDECREF(old);
            goto restore;
        }
        Py_DECREF(old);
        if (PyDict_SetItem(g, k, v) < 0)
            goto restore;
    }
    res = eval_code(code, g);
restore:
    PyErr_Fetch(&et, &ev, &etb);
    pos = 0;
    while (PyDict_Next(saved, &pos, &k, &v)) {
        PyObject *now = PyDict_GetItemWithError(g, k), *given = PyDict_GetItem(locals, k);
        if (now != given) /* rebound by the code: keep it */
            continue;
        if (v == missing) {
            if (PyDict_DelItem(g, k) < 0)
                PyErr_Clear();
        } else if (PyDict_SetItem(g, k, PyTuple_GET_ITEM(v, 0)) < 0) {
            PyErr_Clear();
        }
    }
    PyErr_Clear();
    PyErr_Restore(et, ev, etb);
    Py_DECREF(saved);
    return res;
}

static PyObject *do_code(pyx_state_t *st, ErlNifEnv *env, ERL_NIF_TERM src, ERL_NIF_TERM loc,
                         int mode)
{
    PyObject *key = code_key(env, src, mode), *code = NULL, *locals = NULL, *res = NULL;
    size_t n = 0;

    if (!key)
        return NULL;
    if (!(enif_get_map_size(env, loc, &n) && n == 0) && !(locals = pyc_to_py(env, loc)))
        goto done;
    args_done(); /* the request is read: compile and run */
    if (locals && !PyDict_Check(locals))
        PyErr_SetString(PyExc_TypeError, "Locals must be a map");
    else if ((code = compiled(key, mode)))
        res = locals ? run_with_locals(code, st->globals, locals)
                     : eval_code(code, st->globals);
done:
    release_later(st, locals);
    Py_XDECREF(code);
    Py_DECREF(key);
    return res;
}

/* ---- asyncio -------------------------------------------------------------- */

/* Calls Func(*Args, **Kwargs) for a coroutine and hands it, with the reply
 * handle in el[5], to _erlang_python.start_coroutine (the event loop runs
 * on its own thread).  Returns None once it is scheduled. */
static PyObject *do_async(pyx_state_t *st, ErlNifEnv *env, const ERL_NIF_TERM *el, int stream)
{
    pyi_state_t *s = pyi_state();
    pyn_areply_t *r;
    PyObject *coro = NULL, *reply = NULL, *res = NULL;

    if (!enif_get_resource(env, el[5], pyn_areply_type, (void **)&r)) {
        PyErr_SetString(PyExc_TypeError, "malformed async request");
        return NULL;
    }
    if (!s)
        return NULL;
    if (!s->async_start) {
        PyObject *mod = PyImport_ImportModule("_erlang_python");
        if (!mod)
            return NULL;
        s->async_start = PyObject_GetAttrString(mod, "start_coroutine");
        Py_DECREF(mod);
        if (!s->async_start)
            return NULL;
    }
    if (!(coro = do_call(st, env, el)))
        return NULL;
    if ((reply = pym_reply_new(r)))
        res = PyObject_CallFunctionObjArgs(s->async_start, coro, reply, stream ? Py_True : Py_False,
                                           (PyObject *)NULL);
    Py_XDECREF(reply);
    Py_DECREF(coro);
    return res;
}

/* ---- incremental streams ----------------------------------------------------- */

/* Calls Func(*Args, **Kwargs) and hands the iterable it returns, with the
 * sink in el[5], to _erlang_python.run_stream, which sends each value as
 * it comes (py_stream.h) and returns None at the end. */
static PyObject *do_stream_start(pyx_state_t *st, ErlNifEnv *env, const ERL_NIF_TERM *el)
{
    pyi_state_t *s = pyi_state();
    PyObject *sink, *it, *res = NULL;

    if (!s || !(sink = pys_sink_object(env, el[5])))
        return NULL;
    if (!s->stream_run) {
        PyObject *mod = PyImport_ImportModule("_erlang_python");
        if (mod) {
            PyObject *run = PyObject_GetAttrString(mod, "run_stream");
            Py_DECREF(mod);
            if (s->stream_run)  /* set by another thread while importing */
                Py_XDECREF(run);
            else
                s->stream_run = run;
        }
    }
    if (s->stream_run && (it = do_call(st, env, el))) {
        res = PyObject_CallFunctionObjArgs(s->stream_run, it, sink, (PyObject *)NULL);
        Py_DECREF(it);
    }
    Py_DECREF(sink);
    return res;
}

/* ---- setup ---------------------------------------------------------------
 * Source the pool runs in every interpreter (sys.path, venv, reload: see
 * pyn_setup), in a namespace of its own.  Nobody waits for its outcome:
 * a failure is printed.  Cached modules and callables are forgotten. */
static void run_setup(pyx_state_t *st, ErlNifEnv *env, ERL_NIF_TERM src)
{
    ErlNifBinary bin;
    PyObject *g, *code = NULL, *r = NULL;
    char *text;

    if (!enif_inspect_binary(env, src, &bin) || !(text = PyMem_RawMalloc(bin.size + 1)))
        return;
    memcpy(text, bin.data, bin.size);
    text[bin.size] = 0;
    if ((g = new_namespace()) && (code = Py_CompileString(text, "<erlang_python setup>", Py_file_input)))
        r = PyEval_EvalCode(code, g, g);
    PyMem_RawFree(text);
    if (!r)
        PyErr_Print();
    Py_XDECREF(r);
    Py_XDECREF(code);
    Py_XDECREF(g);
    fn_cache_clear(st);
    PyDict_Clear(st->modules);
}

/* ---- dispatch ------------------------------------------------------------ */

ERL_NIF_TERM pyx_run(pyx_state_t *st, pyn_job_t *j)
{
    ErlNifEnv *env;
    const ERL_NIF_TERM *el;
    PyObject *res = NULL;
    ERL_NIF_TERM out;
    int arity, rc;

    pyb_drain(); /* bytes results Erlang has let go of */
    if (j->kind == PYN_JOB_WIPE) {
        wipe(st);
        return ATOMS.ok;
    }
    if (j->kind == PYN_JOB_CLEAR_CACHES) {
        fn_cache_clear(st);
        PyDict_Clear(st->modules);
        return ATOMS.ok;
    }
    if (j->kind == PYN_JOB_SETUP) {
        run_setup(st, j->env, j->req);
        return ATOMS.ok;
    }
    args_begin(j);
    env = j->env; /* a revoked borrow may have replaced it (reply.c: unborrow) */
    if (!enif_get_tuple(env, j->req, &arity, &el) || arity < 3) {
        args_done();
        PyErr_SetString(PyExc_TypeError, "malformed request");
        return pyer_pending_term(env, j->cancelled);
    }
    switch (j->kind) {
    case PYN_JOB_CALL:
    case PYN_JOB_STREAM:
        res = arity == 5 ? do_call(st, env, el) : NULL;
        break;
    case PYN_JOB_EVAL:
    case PYN_JOB_STREAM_EVAL:
        res = do_code(st, env, el[1], el[2], Py_eval_input);
        break;
    case PYN_JOB_EXEC:
        res = do_code(st, env, el[1], el[2], Py_file_input);
        break;
    case PYN_JOB_ASYNC:
    case PYN_JOB_ASYNC_STREAM:
        res = arity == 6 ? do_async(st, env, el, j->kind == PYN_JOB_ASYNC_STREAM) : NULL;
        break;
    case PYN_JOB_STREAM_START:
        res = arity == 6 ? do_stream_start(st, env, el) : NULL;
        break;
    default:
        PyErr_SetString(PyExc_TypeError, "unknown request");
        break;
    }
    args_done(); /* if an error came first */
    if (!res) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "malformed request");
        return pyer_pending_term(env, j->cancelled);
    }
    if (j->kind == PYN_JOB_EXEC || j->kind == PYN_JOB_ASYNC || j->kind == PYN_JOB_ASYNC_STREAM ||
        j->kind == PYN_JOB_STREAM_START) {
        release_later(st, res);
        return ATOMS.ok;
    }
    if (j->kind == PYN_JOB_STREAM || j->kind == PYN_JOB_STREAM_EVAL) {
        rc = pyc_iter_to_term(env, res, &out);
    } else {
        int wants_etf;
        rc = pyc_result_term(env, res, &out, &wants_etf);
        if (wants_etf) {
            /* Large dicts: the caller's binary_to_term builds the maps. */
            rc = pye_encode_ok(env, res, &out);
            if (rc == 0) {
                release_later(st, res);
                return enif_make_tuple2(env, ATOMS.py_etf, out);
            }
            if (rc > 0) /* keys that may collide: convert directly */
                rc = pyc_to_term(env, res, &out);
        }
    }
    release_later(st, res);
    if (rc < 0)
        return pyer_pending_term(env, j->cancelled);
    return enif_make_tuple2(env, ATOMS.ok, out);
}
