/* py_stream.c — the sink of an incremental stream (see py_stream.h).
 *
 * Threads: the NIFs run on schedulers and only take the sink's lock; the
 * Python sink object is used on the worker running the stream, GIL held,
 * and waits for credit with the GIL released (in slices, so that a
 * cancelled job notices at once and the watchdog never has to abandon a
 * worker that merely waits).  Every message to the owner is sent under the
 * sink's lock after checking `stopped', so nothing arrives after
 * stream_stop or stream_end returns. */
#include <string.h>
#include <time.h>

#include "atoms.h"
#include "py_convert.h"
#include "py_erlang_mod.h"
#include "py_interp.h"
#include "py_stream.h"

#define PYS_SLICE_MS 20

typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    ErlNifPid owner;
    ErlNifPid proc; /* the stream's Erlang process, once set */
    int has_proc;
    unsigned window;
    uint64_t sent, acked;
    int stopped;         /* cancelled or ended: no more messages */
    int waiting;         /* the generator waits for credit */
    int64_t progress_ms; /* when it last sent a value or began to wait */
} pys_sink_t;

static ErlNifResourceType *sink_type;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sink_dtor(ErlNifEnv *env, void *obj)
{
    pys_sink_t *s = obj;
    (void)env;
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->cond);
}

int pys_types_init(ErlNifEnv *env)
{
    ErlNifResourceTypeInit ti = {.dtor = sink_dtor};
    sink_type = enif_open_resource_type_x(env, "py_stream_sink", &ti,
                                          ERL_NIF_RT_CREATE | ERL_NIF_RT_TAKEOVER, NULL);
    return sink_type ? 0 : -1;
}

static pys_sink_t *get_sink(ErlNifEnv *env, ERL_NIF_TERM t)
{
    pys_sink_t *s;
    return enif_get_resource(env, t, sink_type, (void **)&s) ? s : NULL;
}

/* ---- NIFs ---------------------------------------------------------------- */

ERL_NIF_TERM pys_nif_new(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    ErlNifPid owner;
    unsigned window;
    pys_sink_t *s;
    ERL_NIF_TERM t;
    (void)argc;

    if (!enif_get_local_pid(env, argv[0], &owner) || !enif_get_uint(env, argv[1], &window) ||
        window == 0)
        return enif_make_badarg(env);
    if (!(s = enif_alloc_resource(sink_type, sizeof *s)))
        return enif_make_badarg(env);
    memset(s, 0, sizeof *s);
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    s->owner = owner;
    s->window = window;
    s->progress_ms = now_ms();
    t = enif_make_resource(env, s);
    enif_release_resource(s);
    return t;
}

ERL_NIF_TERM pys_nif_set_proc(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    pys_sink_t *s = get_sink(env, argv[0]);
    ErlNifPid pid;
    (void)argc;
    if (!s || !enif_get_local_pid(env, argv[1], &pid))
        return enif_make_badarg(env);
    pthread_mutex_lock(&s->lock);
    s->proc = pid;
    s->has_proc = 1;
    pthread_mutex_unlock(&s->lock);
    return ATOMS.ok;
}

ERL_NIF_TERM pys_nif_ack(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    pys_sink_t *s = get_sink(env, argv[0]);
    unsigned n;
    (void)argc;
    if (!s || !enif_get_uint(env, argv[1], &n) || n == 0)
        return enif_make_badarg(env);
    pthread_mutex_lock(&s->lock);
    /* Never more acknowledged than sent: early acks earn no extra credit. */
    s->acked = s->sent - s->acked < n ? s->sent : s->acked + n;
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->lock);
    return ATOMS.ok;
}

ERL_NIF_TERM pys_nif_stop(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    pys_sink_t *s = get_sink(env, argv[0]);
    ERL_NIF_TERM r;
    (void)argc;
    if (!s)
        return enif_make_badarg(env);
    pthread_mutex_lock(&s->lock);
    if (s->stopped || !s->has_proc) {
        r = enif_make_atom(env, "ended");
    } else {
        r = enif_make_tuple2(env, enif_make_atom(env, "running"), enif_make_pid(env, &s->proc));
    }
    s->stopped = 1;
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->lock);
    return r;
}

ERL_NIF_TERM pys_nif_end(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    pys_sink_t *s = get_sink(env, argv[0]);
    ErlNifEnv *m;
    int sent = 0;
    (void)argc;
    if (!s)
        return enif_make_badarg(env);
    m = enif_alloc_env();
    pthread_mutex_lock(&s->lock);
    if (!s->stopped) {
        ERL_NIF_TERM msg = enif_make_tuple3(m, enif_make_atom(m, "py_stream"),
                                            enif_make_resource(m, s), enif_make_copy(m, argv[1]));
        s->stopped = 1;
        sent = 1;
        enif_send(env, &s->owner, m, msg);
    }
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->lock);
    enif_free_env(m);
    return sent ? ATOMS.ok : enif_make_atom(env, "stopped");
}

ERL_NIF_TERM pys_nif_info(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    pys_sink_t *s = get_sink(env, argv[0]);
    ERL_NIF_TERM r;
    (void)argc;
    if (!s)
        return enif_make_badarg(env);
    pthread_mutex_lock(&s->lock);
    r = enif_make_tuple4(env, s->waiting ? ATOMS.true : ATOMS.false,
                         enif_make_int64(env, now_ms() - s->progress_ms),
                         enif_make_uint64(env, s->sent), enif_make_uint64(env, s->acked));
    pthread_mutex_unlock(&s->lock);
    return r;
}

/* ---- the Python sink ------------------------------------------------------ */

typedef struct {
    PyObject_HEAD pys_sink_t *s;
} SinkObject;

static void sinkobj_dealloc(PyObject *self)
{
    SinkObject *o = (SinkObject *)self;
    PyTypeObject *tp = Py_TYPE(self);
    if (o->s)
        enif_release_resource(o->s);
    tp->tp_free(self);
    Py_DECREF(tp);
}

/* Lock held.  Waits (GIL released by the caller) until there is credit,
 * the stream stopped or the job was cancelled: 1 when it may send. */
static int wait_credit(pys_sink_t *s, int *cancelled)
{
    while (!s->stopped && s->sent - s->acked >= s->window) {
        struct timespec ts;
        if (!s->waiting) {
            s->waiting = 1;
            s->progress_ms = now_ms();
        }
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += PYS_SLICE_MS * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&s->cond, &s->lock, &ts);
        if (pym_job_cancelled()) {
            *cancelled = 1;
            break;
        }
    }
    /* Woken by the stop, it stays "waiting" for stream_info: the
     * generator closes itself now, and must not be interrupted there. */
    if (s->waiting && !s->stopped) {
        s->waiting = 0;
        s->progress_ms = now_ms();
    }
    return !s->stopped && !*cancelled;
}

/* ready() -> True when the owner has room for one more value (waiting,
 * GIL released, until it has), False once the stream was stopped.  Called
 * before the generator is advanced, so that it never runs ahead of the
 * window. */
static PyObject *sinkobj_ready(PyObject *self, PyObject *unused)
{
    pys_sink_t *s = ((SinkObject *)self)->s;
    int ok, cancelled = 0;
    (void)unused;

    pthread_mutex_lock(&s->lock);
    if (!s->stopped && s->sent - s->acked >= s->window) {
        pthread_mutex_unlock(&s->lock);
        Py_BEGIN_ALLOW_THREADS
        pthread_mutex_lock(&s->lock);
        ok = wait_credit(s, &cancelled);
        pthread_mutex_unlock(&s->lock);
        Py_END_ALLOW_THREADS
    } else {
        ok = !s->stopped;
        pthread_mutex_unlock(&s->lock);
    }
    if (cancelled)
        return pym_raise_gave_up();
    return PyBool_FromLong(ok);
}

/* send(value) -> True once it is in the owner's mailbox with room left
 * for another, None once it is in with the window now full (call ready()
 * before the generator is advanced), False when the stream was stopped
 * (cancelled, timed out, owner gone): then stop. */
static PyObject *sinkobj_send(PyObject *self, PyObject *value)
{
    pys_sink_t *s = ((SinkObject *)self)->s;
    ErlNifEnv *m = enif_alloc_env();
    ERL_NIF_TERM t, msg;
    int ok = 0, cancelled = 0, full = 0;

    if (pyc_to_term(m, value, &t) < 0) {
        enif_free_env(m);
        return NULL;
    }
    msg = enif_make_tuple3(m, enif_make_atom(m, "py_stream"), enif_make_resource(m, s),
                           enif_make_tuple2(m, enif_make_atom(m, "data"), t));
    pthread_mutex_lock(&s->lock);
    if (!s->stopped && s->sent - s->acked >= s->window) {
        pthread_mutex_unlock(&s->lock);
        Py_BEGIN_ALLOW_THREADS
        pthread_mutex_lock(&s->lock);
        ok = wait_credit(s, &cancelled);
        if (ok) {
            s->sent++;
            s->progress_ms = now_ms();
            enif_send(NULL, &s->owner, m, msg);
            full = s->sent - s->acked >= s->window;
        }
        pthread_mutex_unlock(&s->lock);
        Py_END_ALLOW_THREADS
    } else {
        if ((ok = !s->stopped)) {
            s->sent++;
            s->progress_ms = now_ms();
            enif_send(NULL, &s->owner, m, msg);
            full = s->sent - s->acked >= s->window;
        }
        pthread_mutex_unlock(&s->lock);
    }
    enif_free_env(m);
    if (cancelled)
        return pym_raise_gave_up();
    if (ok && full)
        Py_RETURN_NONE;
    return PyBool_FromLong(ok);
}

static int sink_stopped(pys_sink_t *s)
{
    int stopped;
    pthread_mutex_lock(&s->lock);
    stopped = s->stopped;
    pthread_mutex_unlock(&s->lock);
    return stopped;
}

static PyObject *sinkobj_stopped(PyObject *self, void *closure)
{
    (void)closure;
    return PyBool_FromLong(sink_stopped(((SinkObject *)self)->s));
}

/* halted: stopped, or the job cancelled (the stream's process gave up):
 * what an event loop driving an async generator checks now and then. */
static PyObject *sinkobj_halted(PyObject *self, void *closure)
{
    (void)closure;
    return PyBool_FromLong(sink_stopped(((SinkObject *)self)->s) || pym_job_cancelled());
}

/* check(): raises erlang.Interrupted when the stream's job was given up. */
static PyObject *sinkobj_check(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    if (pym_job_cancelled())
        return pym_raise_gave_up();
    Py_RETURN_NONE;
}

static PyMethodDef sinkobj_methods[] = {
    {"check", sinkobj_check, METH_NOARGS,
     "check(): raise erlang.Interrupted if the stream's job was given up."},
    {"ready", sinkobj_ready, METH_NOARGS,
     "ready(): wait until the owner has room for a value; False once the stream is stopped."},
    {"send", sinkobj_send, METH_O,
     "send(value): deliver one value to the stream's owner, waiting for credit; "
     "True: room for more, None: the window is full, False: the stream is stopped."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef sinkobj_getset[] = {
    {"stopped", sinkobj_stopped, NULL, "Whether the stream was cancelled or ended.", NULL},
    {"halted", sinkobj_halted, NULL, "Stopped, or the stream's job cancelled.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot sinkobj_slots[] = {
    {Py_tp_doc, (void *)"Where a stream's values go (internal)."},
    {Py_tp_dealloc, (void *)sinkobj_dealloc},
    {Py_tp_methods, sinkobj_methods},
    {Py_tp_getset, sinkobj_getset},
    {0, NULL},
};

static PyType_Spec sinkobj_spec = {
    .name = "erlang._StreamSink",
    .basicsize = sizeof(SinkObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = sinkobj_slots,
};

PyObject *pys_sink_object(ErlNifEnv *env, ERL_NIF_TERM t)
{
    pyi_state_t *st = pyi_state();
    pys_sink_t *s = get_sink(env, t);
    SinkObject *o;

    if (!st)
        return NULL;
    if (!s) {
        PyErr_SetString(PyExc_TypeError, "malformed stream request");
        return NULL;
    }
    if (!st->sink_type && !(st->sink_type = PyType_FromSpec(&sinkobj_spec)))
        return NULL;
    if ((o = PyObject_New(SinkObject, (PyTypeObject *)st->sink_type))) {
        enif_keep_resource(s);
        o->s = s;
    }
    return (PyObject *)o;
}
