/* py_buffer.c — erlang.Buffer and shared bytes results (see py_buffer.h). */
#include <string.h>

#include "py_buffer.h"
#include "py_interp.h"

/* ---- erlang.Buffer ---------------------------------------------------------- */

typedef struct {
    PyObject_HEAD ErlNifEnv *env; /* holds the binary term */
    ERL_NIF_TERM term;
    ErlNifBinary bin;
    Py_ssize_t exports; /* views open on it */
} BufferObject;

static int buffer_getbuffer(PyObject *self, Py_buffer *view, int flags)
{
    BufferObject *o = (BufferObject *)self;
    if (PyBuffer_FillInfo(view, self, o->bin.data, (Py_ssize_t)o->bin.size, 1, flags) < 0)
        return -1;
    o->exports++;
    return 0;
}

static void buffer_releasebuffer(PyObject *self, Py_buffer *view)
{
    (void)view;
    ((BufferObject *)self)->exports--;
}

static void buffer_dealloc(PyObject *self)
{
    BufferObject *o = (BufferObject *)self;
    PyTypeObject *tp = Py_TYPE(self);
    if (o->env)
        enif_free_env(o->env);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static Py_ssize_t buffer_len(PyObject *self)
{
    return (Py_ssize_t)((BufferObject *)self)->bin.size;
}

static PyObject *buffer_repr(PyObject *self)
{
    return PyUnicode_FromFormat("<erlang.Buffer of %zd bytes>", buffer_len(self));
}

static PyObject *buffer_bytes(PyObject *self, PyObject *unused)
{
    BufferObject *o = (BufferObject *)self;
    (void)unused;
    return PyBytes_FromStringAndSize((const char *)o->bin.data, (Py_ssize_t)o->bin.size);
}

/* Immutable: copy.copy and copy.deepcopy give it back itself. */
static PyObject *buffer_self(PyObject *self, PyObject *unused)
{
    (void)unused;
    return Py_NewRef(self);
}

static PyMethodDef buffer_methods[] = {
    {"__bytes__", buffer_bytes, METH_NOARGS, "A copy as bytes."},
    {"__copy__", buffer_self, METH_NOARGS, "The buffer itself (immutable)."},
    {"__deepcopy__", buffer_self, METH_O, "The buffer itself (immutable)."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot buffer_slots[] = {
    {Py_tp_doc, (void *)"An Erlang binary passed as {buffer, Bin}: read-only, not copied "
                        "(memoryview(b), bytes(b), numpy.frombuffer(b))."},
    {Py_tp_dealloc, (void *)buffer_dealloc},
    {Py_tp_repr, (void *)buffer_repr},
    {Py_tp_methods, buffer_methods},
    {Py_sq_length, (void *)buffer_len},
    {Py_bf_getbuffer, (void *)buffer_getbuffer},
    {Py_bf_releasebuffer, (void *)buffer_releasebuffer},
    {0, NULL},
};

static PyType_Spec buffer_spec = {
    .name = "erlang.Buffer",
    .basicsize = sizeof(BufferObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = buffer_slots,
};

static PyTypeObject *buffer_type(void)
{
    pyi_state_t *s = pyi_state();
    if (!s)
        return NULL;
    if (!s->buffer_type)
        s->buffer_type = PyType_FromSpec(&buffer_spec);
    return (PyTypeObject *)s->buffer_type;
}

PyObject *pyb_buffer_new(ErlNifEnv *env, ERL_NIF_TERM t)
{
    PyTypeObject *tp = buffer_type();
    BufferObject *o;

    (void)env; /* enif_make_copy reads t wherever it lives */
    if (!tp || !(o = PyObject_New(BufferObject, tp)))
        return NULL;
    o->exports = 0;
    o->env = enif_alloc_env();
    /* A refc binary's copy shares its memory: only a heap binary of at
     * most 64 bytes is copied. */
    o->term = enif_make_copy(o->env, t);
    if (!enif_inspect_binary(o->env, o->term, &o->bin)) {
        Py_DECREF(o);
        PyErr_SetString(PyExc_TypeError, "{buffer, Bin}: Bin must be a binary");
        return NULL;
    }
    return (PyObject *)o;
}

int pyb_buffer_term(ErlNifEnv *env, PyObject *o, ERL_NIF_TERM *out)
{
    pyi_state_t *s = pyi_state();
    if (!s) {
        PyErr_Clear();
        return 0;
    }
    if (!s->buffer_type)
        return 0;
    if (Py_IS_TYPE(o, (PyTypeObject *)s->buffer_type)) {
        *out = enif_make_copy(env, ((BufferObject *)o)->term);
        return 1;
    }
    /* A contiguous byte view of a Buffer (memoryview(b)[i:j]): the same
     * part of the same binary, a sub-binary, still not copied. */
    if (PyMemoryView_Check(o)) {
        /* A released view keeps a stale pointer to what it viewed: asking
         * for its buffer fails then, and the view goes the general way
         * (an error).  Held, the export keeps the Buffer alive. */
        Py_buffer held;
        if (PyObject_GetBuffer(o, &held, PyBUF_FULL_RO) < 0) {
            PyErr_Clear();
            return 0;
        }
        int done = 0;
        Py_buffer *v = PyMemoryView_GET_BUFFER(o);
        BufferObject *b = (BufferObject *)v->obj;
        if (b && Py_IS_TYPE(v->obj, (PyTypeObject *)s->buffer_type) && v->itemsize == 1 &&
            PyBuffer_IsContiguous(v, 'C')) {
            const unsigned char *start = v->buf;
            if (start >= b->bin.data && v->len >= 0 &&
                (size_t)(start - b->bin.data) + (size_t)v->len <= b->bin.size) {
                *out = enif_make_sub_binary(env, enif_make_copy(env, b->term),
                                            (size_t)(start - b->bin.data), (size_t)v->len);
                done = 1;
            }
        }
        PyBuffer_Release(&held);
        return done;
    }
    return 0;
}

/* ---- shared bytes ------------------------------------------------------------ */

/* Where the references of one interpreter wait to be dropped.  Freed when
 * both the interpreter (its capsule) and every hold are gone. */
typedef struct {
    pthread_mutex_t lock;
    int refs;  /* the capsule + one per live hold */
    int alive; /* the interpreter lives */
    PyObject **pending;
    size_t n, cap;
} pyb_home_t;

typedef struct {
    PyObject *obj; /* strong reference, owned by home's interpreter */
    pyb_home_t *home;
} pyb_hold_t;

static ErlNifResourceType *hold_type;

#define HOME_KEY "erlang_python.bytes_home"

/* Lock held; unlocks.  The last reference frees the home (the interpreter
 * is gone then, and its queue was emptied when it went). */
static void home_unref_locked(pyb_home_t *h)
{
    int last = --h->refs == 0;
    pthread_mutex_unlock(&h->lock);
    if (last) {
        pthread_mutex_destroy(&h->lock);
        free(h);
    }
}

/* Lock held: queues o, growing the queue as needed; 0, or -1 (out of
 * memory: o is then kept for ever, a leak rather than a crash). */
static int home_push_locked(pyb_home_t *h, PyObject *o)
{
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 16;
        void *grown = realloc((void *)h->pending, cap * sizeof(PyObject *));
        if (!grown)
            return -1;
        h->pending = grown;
        h->cap = cap;
    }
    h->pending[h->n++] = o;
    return 0;
}

/* Any thread, no GIL: the binary is gone; its reference waits at home. */
static void hold_dtor(ErlNifEnv *env, void *obj)
{
    pyb_hold_t *hd = obj;
    pyb_home_t *h = hd->home;
    (void)env;
    if (!h)
        return;
    pthread_mutex_lock(&h->lock);
    if (h->alive)
        (void)home_push_locked(h, hd->obj);
    home_unref_locked(h);
}

/* The interpreter ends (GIL held): what is queued is dropped now; later
 * releases leave their object alone. */
static void home_capsule_free(PyObject *capsule)
{
    pyb_home_t *h = PyCapsule_GetPointer(capsule, HOME_KEY);
    PyObject **pending;
    size_t n;
    if (!h)
        return;
    pthread_mutex_lock(&h->lock);
    h->alive = 0;
    pending = h->pending;
    n = h->n;
    h->pending = NULL;
    h->n = h->cap = 0;
    home_unref_locked(h);
    for (size_t i = 0; i < n; i++)
        Py_DECREF(pending[i]);
    free(pending);
}

static pyb_home_t *home(void)
{
    pyi_state_t *s = pyi_state();
    pyb_home_t *h;
    if (!s)
        return NULL;
    if (s->bytes_home)
        return PyCapsule_GetPointer(s->bytes_home, HOME_KEY);
    if (!(h = calloc(1, sizeof *h))) {
        PyErr_NoMemory();
        return NULL;
    }
    pthread_mutex_init(&h->lock, NULL);
    h->refs = 1;
    h->alive = 1;
    if (!(s->bytes_home = PyCapsule_New(h, HOME_KEY, home_capsule_free))) {
        pthread_mutex_destroy(&h->lock);
        free(h);
        return NULL;
    }
    return h;
}

int pyb_share_bytes(ErlNifEnv *env, PyObject *o, ERL_NIF_TERM *out)
{
    pyb_home_t *h = home();
    pyb_hold_t *hd;

    if (!h)
        return -1;
    if (!(hd = enif_alloc_resource(hold_type, sizeof *hd))) {
        PyErr_NoMemory();
        return -1;
    }
    hd->obj = Py_NewRef(o);
    pthread_mutex_lock(&h->lock);
    h->refs++;
    pthread_mutex_unlock(&h->lock);
    hd->home = h;
    *out = enif_make_resource_binary(env, hd, PyBytes_AS_STRING(o), (size_t)PyBytes_GET_SIZE(o));
    enif_release_resource(hd);
    return 0;
}

void pyb_drain(void)
{
    pyi_state_t *s = pyi_state();
    pyb_home_t *h;
    PyObject **pending;
    size_t n;

    if (!s) {
        PyErr_Clear();
        return;
    }
    if (!s->bytes_home)
        return;
    h = PyCapsule_GetPointer(s->bytes_home, HOME_KEY);
    if (!h || __atomic_load_n(&h->n, __ATOMIC_RELAXED) == 0)
        return;
    pthread_mutex_lock(&h->lock);
    pending = h->pending;
    n = h->n;
    h->pending = NULL;
    h->n = h->cap = 0;
    pthread_mutex_unlock(&h->lock);
    for (size_t i = 0; i < n; i++)
        Py_DECREF(pending[i]);
    free(pending);
}

int pyb_types_init(ErlNifEnv *env)
{
    ErlNifResourceTypeInit ti = {.dtor = hold_dtor};
    hold_type = enif_open_resource_type_x(env, "py_shared_bytes", &ti,
                                          ERL_NIF_RT_CREATE | ERL_NIF_RT_TAKEOVER, NULL);
    return hold_type ? 0 : -1;
}
