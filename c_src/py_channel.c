/* py_channel.c — channels (see py_channel.h): the queue resource, its NIFs,
 * and the erlang.Channel type Python code receives with.
 *
 * Threads and locks: the NIFs run on schedulers and take only the
 * channel's lock, never the GIL.  Python methods run with the GIL held
 * and release it while they wait on the channel's condition (in slices,
 * so that a worker whose caller gave up notices at once).  Each queued
 * message lives in an environment of its own, freed once it is converted.
 * Async receivers wait on an eventfd (made on first use) that every send
 * and the close make readable: asyncio's add_reader, no polling.  The
 * pure-Python parts (iteration, async_receive, ByteChannel) are in
 * priv/python/_erlang_python_channel.py. */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "atoms.h"
#include "py_channel.h"
#include "py_convert.h"
#include "py_erlang_mod.h"
#include "py_interp.h"

#define PYCH_SLICE_MS 20

typedef struct pych_item {
    struct pych_item *next;
    ErlNifEnv *env;
    ERL_NIF_TERM term;
    size_t bytes; /* byte channels: the binary's size */
} pych_item_t;

typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    pych_item_t *head, *tail;
    size_t count, bytes;
    size_t max_size; /* 0: unbounded; messages, or bytes for a byte channel */
    int is_bytes;
    int closed;  /* no more sends; receivers drain, then see the end */
    int aborted; /* the owner exited: the end is an error */
    int waiters; /* receivers blocked on cond */
    int efd;     /* eventfd for async receivers, -1 until asked for */
    ErlNifMonitor mon;
    int monitored;
    uint64_t sent, received;
} pych_t;

static ErlNifResourceType *channel_type;

static void free_items(pych_item_t *it)
{
    while (it) {
        pych_item_t *next = it->next;
        enif_free_env(it->env);
        enif_free(it);
        it = next;
    }
}

static void channel_dtor(ErlNifEnv *env, void *obj)
{
    pych_t *c = obj;
    (void)env;
    free_items(c->head);
    if (c->efd >= 0)
        close(c->efd);
    pthread_mutex_destroy(&c->lock);
    pthread_cond_destroy(&c->cond);
}

/* Lock held: wakes blocked and async receivers. */
static void wake_locked(pych_t *c)
{
    if (c->waiters)
        pthread_cond_broadcast(&c->cond);
    if (c->efd >= 0) {
        uint64_t one = 1;
        ssize_t r = write(c->efd, &one, sizeof one);
        (void)r; /* a full counter is readable anyway */
    }
}

/* The owner exited: the channel ends, as an error for its receivers. */
static void channel_down(ErlNifEnv *env, void *obj, ErlNifPid *pid, ErlNifMonitor *mon)
{
    pych_t *c = obj;
    (void)env;
    (void)pid;
    (void)mon;
    pthread_mutex_lock(&c->lock);
    c->monitored = 0;
    if (!c->closed) {
        c->closed = 1;
        c->aborted = 1;
    }
    wake_locked(c);
    pthread_mutex_unlock(&c->lock);
}

static pych_t *get_channel(ErlNifEnv *env, ERL_NIF_TERM t)
{
    pych_t *c;
    return enif_get_resource(env, t, channel_type, (void **)&c) ? c : NULL;
}

/* ---- NIFs ---------------------------------------------------------------- */

ERL_NIF_TERM pych_nif_new(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    ErlNifPid owner;
    ErlNifUInt64 max;
    pych_t *c;
    ERL_NIF_TERM t;
    (void)argc;

    if (!enif_get_local_pid(env, argv[0], &owner) || !enif_get_uint64(env, argv[1], &max) ||
        !enif_is_atom(env, argv[2]))
        return enif_make_badarg(env);
    if (!(c = enif_alloc_resource(channel_type, sizeof *c)))
        return enif_make_badarg(env);
    memset(c, 0, sizeof *c);
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->cond, NULL);
    c->efd = -1;
    c->max_size = (size_t)max;
    c->is_bytes = enif_is_identical(argv[2], ATOMS.bytes);
    if (enif_monitor_process(env, c, &owner, &c->mon) == 0)
        c->monitored = 1;
    else
        c->closed = c->aborted = 1; /* the owner is already gone */
    t = enif_make_resource(env, c);
    enif_release_resource(c);
    return t;
}

ERL_NIF_TERM pych_nif_send(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    pych_t *c = get_channel(env, argv[0]);
    pych_item_t *it;
    ErlNifBinary bin;
    size_t size = 1;
    ERL_NIF_TERM r = ATOMS.ok;
    (void)argc;

    if (!c)
        return enif_make_badarg(env);
    if (c->is_bytes) {
        if (!enif_inspect_binary(env, argv[1], &bin))
            return enif_make_atom(env, "not_binary");
        size = bin.size;
    }
    if (!(it = enif_alloc(sizeof *it)))
        return enif_raise_exception(env, enif_make_atom(env, "enomem"));
    it->next = NULL;
    it->env = enif_alloc_env();
    it->term = enif_make_copy(it->env, argv[1]); /* a large binary is shared, not copied */
    it->bytes = c->is_bytes ? size : 0;

    pthread_mutex_lock(&c->lock);
    if (c->closed) {
        r = ATOMS.closed;
    } else if (c->max_size &&
               (c->is_bytes ? c->bytes + size > c->max_size && c->bytes > 0
                            : c->count >= c->max_size)) {
        r = enif_make_atom(env, "full");
    } else {
        if (c->tail)
            c->tail->next = it;
        else
            c->head = it;
        c->tail = it;
        c->count++;
        c->bytes += it->bytes;
        c->sent++;
        it = NULL;
        wake_locked(c);
    }
    pthread_mutex_unlock(&c->lock);
    if (it) {
        enif_free_env(it->env);
        enif_free(it);
    }
    return r;
}

ERL_NIF_TERM pych_nif_close(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    pych_t *c = get_channel(env, argv[0]);
    int demonitor;
    (void)argc;
    if (!c)
        return enif_make_badarg(env);
    pthread_mutex_lock(&c->lock);
    c->closed = 1;
    demonitor = c->monitored;
    c->monitored = 0;
    wake_locked(c);
    pthread_mutex_unlock(&c->lock);
    if (demonitor)
        enif_demonitor_process(env, c, &c->mon);
    return ATOMS.ok;
}

ERL_NIF_TERM pych_nif_info(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    pych_t *c = get_channel(env, argv[0]);
    ERL_NIF_TERM keys[8], vals[8], map;
    (void)argc;
    if (!c)
        return enif_make_badarg(env);
    keys[0] = enif_make_atom(env, "size");
    keys[1] = enif_make_atom(env, "bytes");
    keys[2] = enif_make_atom(env, "max_size");
    keys[3] = enif_make_atom(env, "closed");
    keys[4] = enif_make_atom(env, "type");
    keys[5] = enif_make_atom(env, "sent");
    keys[6] = enif_make_atom(env, "received");
    keys[7] = enif_make_atom(env, "waiting");
    pthread_mutex_lock(&c->lock);
    vals[0] = enif_make_uint64(env, c->count);
    vals[1] = enif_make_uint64(env, c->bytes);
    vals[2] = c->max_size ? enif_make_uint64(env, c->max_size) : ATOMS.infinity;
    vals[3] = c->closed ? ATOMS.true : ATOMS.false;
    vals[4] = c->is_bytes ? ATOMS.bytes : enif_make_atom(env, "term");
    vals[5] = enif_make_uint64(env, c->sent);
    vals[6] = enif_make_uint64(env, c->received);
    vals[7] = enif_make_int(env, c->waiters);
    pthread_mutex_unlock(&c->lock);
    enif_make_map_from_arrays(env, keys, vals, 8, &map);
    return map;
}

/* ---- erlang.Channel ------------------------------------------------------- */

typedef struct {
    PyObject_HEAD pych_t *c;
} ChannelObject;

static PyObject *channel_closed_exc(void)
{
    PyObject *mod = PyImport_ImportModule("erlang"), *exc;
    if (!mod)
        return NULL;
    exc = PyObject_GetAttrString(mod, "ChannelClosed");
    Py_DECREF(mod);
    return exc; /* new reference */
}

static PyObject *raise_closed(int aborted)
{
    PyObject *exc = channel_closed_exc();
    if (exc) {
        PyErr_SetString(exc, aborted ? "the channel's owner exited (the data was cut short)"
                                     : "the channel is closed");
        Py_DECREF(exc);
    }
    return NULL;
}

/* Lock held: the head item, taken off the queue (NULL when empty). */
static pych_item_t *pop_locked(pych_t *c)
{
    pych_item_t *it = c->head;
    if (it) {
        c->head = it->next;
        if (!c->head)
            c->tail = NULL;
        c->count--;
        c->bytes -= it->bytes;
        c->received++;
    }
    return it;
}

/* The item as a Python object (bytes for a byte channel); frees it. */
static PyObject *item_value(pych_t *c, pych_item_t *it)
{
    PyObject *v;
    if (c->is_bytes) {
        ErlNifBinary bin;
        enif_inspect_binary(it->env, it->term, &bin);
        v = PyBytes_FromStringAndSize((const char *)bin.data, (Py_ssize_t)bin.size);
    } else {
        v = pyc_to_py(it->env, it->term);
    }
    enif_free_env(it->env);
    enif_free(it);
    return v;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

enum { GOT, CLOSED, TIMED_OUT, CANCELLED };

#define PYCH_FOREVER_S (1000.0 * 365 * 86400)

/* Lock held, GIL released: waits for an item until deadline (-1: none). */
static int wait_item(pych_t *c, int64_t deadline, pych_item_t **out)
{
    for (;;) {
        struct timespec ts;
        int64_t now, slice = PYCH_SLICE_MS;
        if ((*out = pop_locked(c)))
            return GOT;
        if (c->closed)
            return CLOSED;
        if (pym_job_cancelled())
            return CANCELLED;
        now = mono_ms();
        if (deadline >= 0) {
            if (now >= deadline)
                return TIMED_OUT;
            if (deadline - now < slice)
                slice = deadline - now;
        }
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += slice * 1000000L;
        ts.tv_sec += ts.tv_nsec / 1000000000L;
        ts.tv_nsec %= 1000000000L;
        c->waiters++;
        pthread_cond_timedwait(&c->cond, &c->lock, &ts);
        c->waiters--;
    }
}

/* receive(timeout=None): the next message, waiting (GIL released) at most
 * timeout seconds: TimeoutError then; erlang.ChannelClosed once the
 * channel is closed and drained. */
static PyObject *channel_receive(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *names[] = {"timeout", NULL};
    pych_t *c = ((ChannelObject *)self)->c;
    PyObject *timeout = Py_None;
    pych_item_t *it;
    int64_t deadline = -1;
    int rc, aborted;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "|O:receive", names, &timeout))
        return NULL;
    if (timeout != Py_None) {
        double t = PyFloat_AsDouble(timeout);
        if (t == -1.0 && PyErr_Occurred())
            return NULL;
        if (isnan(t)) {
            PyErr_SetString(PyExc_ValueError, "timeout must be a number of seconds, not NaN");
            return NULL;
        }
        /* Past a thousand years (or inf) it is no deadline. */
        if (t < PYCH_FOREVER_S)
            deadline = mono_ms() + (t > 0 ? (int64_t)(t * 1000.0) : 0);
    }
    pthread_mutex_lock(&c->lock);
    if ((it = pop_locked(c))) {
        pthread_mutex_unlock(&c->lock);
        return item_value(c, it);
    }
    if (c->closed) {
        aborted = c->aborted;
        pthread_mutex_unlock(&c->lock);
        return raise_closed(aborted);
    }
    pthread_mutex_unlock(&c->lock);
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&c->lock);
    rc = wait_item(c, deadline, &it);
    aborted = c->aborted;
    pthread_mutex_unlock(&c->lock);
    Py_END_ALLOW_THREADS
    switch (rc) {
    case GOT:
        return item_value(c, it);
    case CLOSED:
        return raise_closed(aborted);
    case TIMED_OUT:
        PyErr_SetString(PyExc_TimeoutError, "no message on the channel in time");
        return NULL;
    default:
        return pym_raise_gave_up();
    }
}

/* _poll(): (True, message) or (False, None) when none is queued;
 * erlang.ChannelClosed once closed and drained.  Never waits. */
static PyObject *channel_poll(PyObject *self, PyObject *unused)
{
    pych_t *c = ((ChannelObject *)self)->c;
    pych_item_t *it;
    int closed, aborted;
    PyObject *v, *r;
    (void)unused;

    pthread_mutex_lock(&c->lock);
    it = pop_locked(c);
    closed = c->closed;
    aborted = c->aborted;
    pthread_mutex_unlock(&c->lock);
    if (!it) {
        if (closed)
            return raise_closed(aborted);
        return Py_BuildValue("(OO)", Py_False, Py_None);
    }
    if (!(v = item_value(c, it)))
        return NULL;
    r = PyTuple_Pack(2, Py_True, v);
    Py_DECREF(v);
    return r;
}

/* try_receive(): the next message, or None when none is queued. */
static PyObject *channel_try_receive(PyObject *self, PyObject *unused)
{
    PyObject *pair = channel_poll(self, unused), *v;
    if (!pair)
        return NULL;
    v = Py_NewRef(PyTuple_GET_ITEM(pair, 1));
    Py_DECREF(pair);
    return v;
}

/* _eventfd(): a descriptor readable whenever a message or the close may
 * have come (asyncio's add_reader); _clear_event() resets it. */
static PyObject *channel_eventfd(PyObject *self, PyObject *unused)
{
    pych_t *c = ((ChannelObject *)self)->c;
    int fd;
    (void)unused;
    pthread_mutex_lock(&c->lock);
    if (c->efd < 0) {
        c->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (c->efd >= 0 && (c->head || c->closed)) {
            uint64_t one = 1;
            ssize_t r = write(c->efd, &one, sizeof one);
            (void)r;
        }
    }
    fd = c->efd;
    pthread_mutex_unlock(&c->lock);
    if (fd < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    return PyLong_FromLong(fd);
}

static PyObject *channel_clear_event(PyObject *self, PyObject *unused)
{
    pych_t *c = ((ChannelObject *)self)->c;
    uint64_t n;
    (void)unused;
    pthread_mutex_lock(&c->lock);
    if (c->efd >= 0) {
        ssize_t r = read(c->efd, &n, sizeof n);
        (void)r; /* EAGAIN: already clear */
        if (c->head || c->closed) {
            n = 1;
            r = write(c->efd, &n, sizeof n);
            (void)r;
        }
    }
    pthread_mutex_unlock(&c->lock);
    Py_RETURN_NONE;
}

static PyObject *channel_closed(PyObject *self, void *closure)
{
    pych_t *c = ((ChannelObject *)self)->c;
    int closed;
    (void)closure;
    pthread_mutex_lock(&c->lock);
    closed = c->closed;
    pthread_mutex_unlock(&c->lock);
    return PyBool_FromLong(closed);
}

static PyObject *channel_aborted(PyObject *self, void *closure)
{
    pych_t *c = ((ChannelObject *)self)->c;
    int aborted;
    (void)closure;
    pthread_mutex_lock(&c->lock);
    aborted = c->aborted;
    pthread_mutex_unlock(&c->lock);
    return PyBool_FromLong(aborted);
}

static PyObject *channel_is_bytes(PyObject *self, void *closure)
{
    (void)closure;
    return PyBool_FromLong(((ChannelObject *)self)->c->is_bytes);
}

static Py_ssize_t channel_len(PyObject *self)
{
    pych_t *c = ((ChannelObject *)self)->c;
    size_t n;
    pthread_mutex_lock(&c->lock);
    n = c->count;
    pthread_mutex_unlock(&c->lock);
    return (Py_ssize_t)n;
}

static PyObject *channel_repr(PyObject *self)
{
    pych_t *c = ((ChannelObject *)self)->c;
    return PyUnicode_FromFormat("<erlang.Channel %s, %zd queued%s>",
                                c->is_bytes ? "bytes" : "term", channel_len(self),
                                c->closed ? ", closed" : "");
}

static void channel_dealloc(PyObject *self)
{
    ChannelObject *o = (ChannelObject *)self;
    PyTypeObject *tp = Py_TYPE(self);
    if (o->c)
        enif_release_resource(o->c);
    tp->tp_free(self);
    Py_DECREF(tp);
}

/* Channel(ch): ch itself (the original library's erlang.Channel(ref)). */
static PyObject *channel_new_py(PyTypeObject *tp, PyObject *args, PyObject *kw)
{
    PyObject *ch;
    if (kw && PyDict_GET_SIZE(kw)) {
        PyErr_SetString(PyExc_TypeError, "Channel() takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "O:Channel", &ch))
        return NULL;
    if (PyObject_TypeCheck(ch, tp))
        return Py_NewRef(ch);
    PyErr_SetString(PyExc_TypeError, "Channel(ch): ch must be a channel passed from Erlang");
    return NULL;
}

static PyMethodDef channel_methods[] = {
    {"receive", (PyCFunction)(void (*)(void))channel_receive, METH_VARARGS | METH_KEYWORDS,
     "receive(timeout=None): the next message, waiting for it (GIL released); TimeoutError "
     "after timeout seconds, erlang.ChannelClosed once closed and drained."},
    {"try_receive", channel_try_receive, METH_NOARGS,
     "try_receive(): the next message, or None when none is queued."},
    {"_poll", channel_poll, METH_NOARGS, "(True, message) or (False, None); never waits."},
    {"_eventfd", channel_eventfd, METH_NOARGS, "A descriptor readable when a message may be queued."},
    {"_clear_event", channel_clear_event, METH_NOARGS, "Resets the descriptor of _eventfd."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef channel_getset[] = {
    {"closed", channel_closed, NULL, "Whether the channel is closed (messages may remain).", NULL},
    {"aborted", channel_aborted, NULL, "Whether it ended because its owner exited.", NULL},
    {"is_bytes", channel_is_bytes, NULL, "Whether this is a byte channel.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot channel_slots[] = {
    {Py_tp_doc, (void *)"A channel Erlang processes send messages into (py_channel)."},
    {Py_tp_dealloc, (void *)channel_dealloc},
    {Py_tp_new, (void *)channel_new_py},
    {Py_tp_repr, (void *)channel_repr},
    {Py_tp_methods, channel_methods},
    {Py_tp_getset, channel_getset},
    {Py_mp_length, (void *)channel_len},
    {0, NULL},
};

/* Not immutable: _erlang_python_channel adds iteration and async_receive. */
static PyType_Spec channel_spec = {
    .name = "erlang.Channel",
    .basicsize = sizeof(ChannelObject),
    .flags = Py_TPFLAGS_DEFAULT,
    .slots = channel_slots,
};

/* This interpreter's Channel type, completed by the Python helpers once;
 * *byte_class: the ByteChannel class. */
static PyTypeObject *channel_pytype(PyObject **byte_class)
{
    pyi_state_t *s = pyi_state();
    if (!s)
        return NULL;
    if (!s->channel_type) {
        PyObject *tp = PyType_FromSpec(&channel_spec), *mod, *bc = NULL;
        if (!tp)
            return NULL;
        if ((mod = PyImport_ImportModule("_erlang_python_channel"))) {
            bc = PyObject_CallMethod(mod, "install", "O", tp);
            Py_DECREF(mod);
        }
        if (!bc) {
            Py_DECREF(tp);
            return NULL;
        }
        if (s->channel_type) {
            /* The import let another thread of this interpreter run and
             * install the type first: keep that one, so every channel
             * object of the interpreter has the one type. */
            Py_DECREF(bc);
            Py_DECREF(tp);
        } else {
            s->channel_type = tp;
            s->byte_channel = bc;
        }
    }
    *byte_class = s->byte_channel;
    return (PyTypeObject *)s->channel_type;
}

/* The Python object for a channel term; NULL with no error when t is not
 * a channel. */
static PyObject *channel_to_py(ErlNifEnv *env, ERL_NIF_TERM t)
{
    pych_t *c = get_channel(env, t);
    PyObject *bc, *r;
    PyTypeObject *tp;
    ChannelObject *o;

    if (!c)
        return NULL;
    if (!(tp = channel_pytype(&bc)) || !(o = PyObject_New(ChannelObject, tp)))
        return NULL;
    enif_keep_resource(c);
    o->c = c;
    if (!c->is_bytes)
        return (PyObject *)o;
    r = PyObject_CallOneArg(bc, (PyObject *)o);
    Py_DECREF(o);
    return r;
}

/* A Channel (or ByteChannel: its _channel) converted back to its term. */
static int channel_to_term(ErlNifEnv *env, PyObject *o, ERL_NIF_TERM *out)
{
    pyi_state_t *s = pyi_state();
    PyObject *inner = NULL;
    int rc = 0;

    if (!s || !s->channel_type) {
        PyErr_Clear();
        return 0;
    }
    if (s->byte_channel && PyObject_TypeCheck(o, (PyTypeObject *)s->byte_channel) &&
        !(o = inner = PyObject_GetAttrString(o, "_channel")))
        return -1;
    if (PyObject_TypeCheck(o, (PyTypeObject *)s->channel_type)) {
        *out = enif_make_resource(env, ((ChannelObject *)o)->c);
        rc = 1;
    }
    Py_XDECREF(inner);
    return rc;
}

/* erlang.Channel / erlang.ByteChannel, asked for by name. */
static PyObject *channel_type_named(const char *name)
{
    PyObject *bc;
    PyTypeObject *tp = channel_pytype(&bc);
    if (!tp)
        return NULL;
    if (strcmp(name, "Channel") == 0)
        return Py_NewRef((PyObject *)tp);
    if (strcmp(name, "ByteChannel") == 0)
        return Py_NewRef(bc);
    PyErr_Format(PyExc_AttributeError, "module 'erlang' has no attribute '%s'", name);
    return NULL;
}

static const pyc_hooks_t hooks = {
    .ref_to_py = channel_to_py, .obj_to_term = channel_to_term, .type = channel_type_named};

int pych_types_init(ErlNifEnv *env)
{
    ErlNifResourceTypeInit ti = {.dtor = channel_dtor, .down = channel_down};
    channel_type = enif_open_resource_type_x(env, "py_channel", &ti,
                                             ERL_NIF_RT_CREATE | ERL_NIF_RT_TAKEOVER, NULL);
    if (!channel_type)
        return -1;
    pyc_set_hooks(&hooks);
    return 0;
}
