/* py_etf.c — encodes Python objects as ETF, following the same type table
 * as py_convert.c (see pye_encode_ok in py_etf.h).  GIL held. */
#include <math.h>
#include <string.h>

#include "py_compat.h"
#include "py_convert.h"
#include "py_pid.h"
#include "py_etf.h"

enum {
    NEW_FLOAT_EXT = 70,
    SMALL_INTEGER_EXT = 97,
    INTEGER_EXT = 98,
    SMALL_TUPLE_EXT = 104,
    LARGE_TUPLE_EXT = 105,
    NIL_EXT = 106,
    LIST_EXT = 108,
    BINARY_EXT = 109,
    SMALL_BIG_EXT = 110,
    LARGE_BIG_EXT = 111,
    MAP_EXT = 116,
    SMALL_ATOM_UTF8_EXT = 119,
};

#define UNSAFE 1 /* a dict key that may collide after conversion */

typedef struct {
    ErlNifEnv *env;
    ErlNifBinary bin;
    size_t len;
} buf_t;

static int grow(buf_t *b, size_t more)
{
    size_t need = b->len + more, n = b->bin.size;
    if (need <= n)
        return 0;
    while (n < need)
        n *= 2;
    if (!enif_realloc_binary(&b->bin, n)) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

/* Room for n more bytes, at the returned address; NULL: out of memory. */
static inline unsigned char *reserve(buf_t *b, size_t n)
{
    if (b->len + n > b->bin.size && grow(b, n) < 0)
        return NULL;
    return b->bin.data + b->len;
}

static inline void store32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static int put(buf_t *b, const void *data, size_t n)
{
    unsigned char *p = reserve(b, n);
    if (!p)
        return -1;
    memcpy(p, data, n);
    b->len += n;
    return 0;
}

static inline int put8(buf_t *b, unsigned v)
{
    unsigned char *p = reserve(b, 1);
    if (!p)
        return -1;
    *p = (unsigned char)v;
    b->len++;
    return 0;
}

/* A tag byte and a 32-bit big-endian word. */
static inline int put_tag32(buf_t *b, unsigned tag, uint32_t v)
{
    unsigned char *p = reserve(b, 5);
    if (!p)
        return -1;
    p[0] = (unsigned char)tag;
    store32(p + 1, v);
    b->len += 5;
    return 0;
}

static int atom(buf_t *b, const char *name)
{
    size_t n = strlen(name);
    return put8(b, SMALL_ATOM_UTF8_EXT) < 0 || put8(b, (unsigned)n) < 0 ? -1 : put(b, name, n);
}

static int binary(buf_t *b, const char *data, Py_ssize_t n)
{
    unsigned char *p = reserve(b, 5 + (size_t)n);
    if (!p)
        return -1;
    p[0] = BINARY_EXT;
    store32(p + 1, (uint32_t)n);
    memcpy(p + 5, data, (size_t)n);
    b->len += 5 + (size_t)n;
    return 0;
}

static int integer(buf_t *b, PyObject *o)
{
    int overflow, neg;
    long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    unsigned char digits[8];
    unsigned long long u;
    size_t n = 0;
    PyObject *a;

    if (!overflow) {
        if (v == -1 && PyErr_Occurred())
            return -1;
        if (v >= 0 && v <= 255) {
            unsigned char *p = reserve(b, 2);
            if (!p)
                return -1;
            p[0] = SMALL_INTEGER_EXT;
            p[1] = (unsigned char)v;
            b->len += 2;
            return 0;
        }
        if (v >= INT32_MIN && v <= INT32_MAX)
            return put_tag32(b, INTEGER_EXT, (uint32_t)(int32_t)v);
        neg = v < 0;
        u = neg ? 0ULL - (unsigned long long)v : (unsigned long long)v;
        while (u) {
            digits[n++] = (unsigned char)u;
            u >>= 8;
        }
        if (put8(b, SMALL_BIG_EXT) < 0 || put8(b, (unsigned)n) < 0 || put8(b, (unsigned)neg) < 0)
            return -1;
        return put(b, digits, n);
    }
    neg = overflow < 0;
    if (!(a = neg ? PyNumber_Absolute(o) : (Py_INCREF(o), o)))
        return -1;
    n = (_PyLong_NumBits(a) + 7) / 8;
    if (n > 0xFFFFFFFFu || grow(b, 6 + n) < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_OverflowError, "integer too large for Erlang");
        Py_DECREF(a);
        return -1;
    }
    if (n <= 255) {
        put8(b, SMALL_BIG_EXT);
        put8(b, (unsigned)n);
    } else {
        put_tag32(b, LARGE_BIG_EXT, (uint32_t)n);
    }
    put8(b, (unsigned)neg);
    if (pyk_long_as_bytes(a, b->bin.data + b->len, n) < 0) {
        Py_DECREF(a);
        return -1;
    }
    b->len += n;
    Py_DECREF(a);
    return 0;
}

static int real(buf_t *b, double d)
{
    uint64_t u;
    unsigned char c[8];

    if (isnan(d))
        return atom(b, "nan");
    if (isinf(d))
        return atom(b, d > 0 ? "infinity" : "neg_infinity");
    memcpy(&u, &d, 8);
    for (int i = 7; i >= 0; i--) {
        c[i] = (unsigned char)u;
        u >>= 8;
    }
    return put8(b, NEW_FLOAT_EXT) < 0 ? -1 : put(b, c, 8);
}

static int str(buf_t *b, PyObject *o)
{
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(o, &n);
    PyObject *e;
    int rc;

    if (s)
        return binary(b, s, n);
    if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError))
        return -1;
    PyErr_Clear();
    if (!(e = PyUnicode_AsEncodedString(o, "utf-8", "surrogatepass")))
        return -1;
    rc = binary(b, PyBytes_AS_STRING(e), PyBytes_GET_SIZE(e));
    Py_DECREF(e);
    return rc;
}

static int encode(buf_t *b, PyObject *o, int depth, int key);

/* Whether a dict key converts to a term no other key of the dict can. */
static int safe_key(PyObject *k)
{
    if (PyUnicode_Check(k) || PyLong_Check(k) || k == Py_None)
        return 1;
    if (PyFloat_Check(k))
        return !isnan(PyFloat_AS_DOUBLE(k));
    if (PyTuple_Check(k)) {
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(k); i++)
            if (!safe_key(PyTuple_GET_ITEM(k, i)))
                return 0;
        return 1;
    }
    return 0;
}

static int items(buf_t *b, PyObject *seq, Py_ssize_t n, int depth)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = pyc_seq_item(seq, i);
        int rc;
        if (!item)
            return -1;
        rc = encode(b, item, depth + 1, 0);
        Py_DECREF(item);
        if (rc)
            return rc;
    }
    return 0;
}

static int dict(buf_t *b, PyObject *o, int depth)
{
    Py_ssize_t pos = 0, n = PyDict_Size(o), i = 0;
    PyObject *k, *v;

    if (put_tag32(b, MAP_EXT, (uint32_t)n) < 0)
        return -1;
    while (i < n && PyDict_Next(o, &pos, &k, &v)) {
        int rc;
        if (!safe_key(k))
            return UNSAFE;
        Py_INCREF(k);
        Py_INCREF(v);
        rc = encode(b, k, depth + 1, 1);
        if (!rc)
            rc = encode(b, v, depth + 1, 0);
        Py_DECREF(k);
        Py_DECREF(v);
        if (rc)
            return rc;
        i++;
    }
    if (i != n || PyDict_Size(o) != n) {
        PyErr_SetString(PyExc_RuntimeError, "dict changed size during conversion");
        return -1;
    }
    return 0;
}

static int iterable(buf_t *b, PyObject *o, int depth)
{
    PyObject *seq = PySequence_List(o);
    Py_ssize_t n;
    int rc;

    if (!seq)
        return -1;
    n = PyList_GET_SIZE(seq);
    rc = 0;
    if (n > 0) {
        if (put_tag32(b, LIST_EXT, (uint32_t)n) < 0)
            rc = -1;
        else
            rc = items(b, seq, n, depth);
    }
    if (rc == 0)
        rc = put8(b, NIL_EXT); /* the empty list, or the proper list's tail */
    Py_DECREF(seq);
    return rc;
}

static int pid(buf_t *b, const ErlNifPid *p)
{
    ErlNifBinary t;
    int rc;
    if (!enif_term_to_binary(b->env, enif_make_pid(b->env, p), &t)) {
        PyErr_NoMemory();
        return -1;
    }
    rc = put(b, t.data + 1, t.size - 1); /* without the version byte */
    enif_release_binary(&t);
    return rc;
}

static int fallback(buf_t *b, PyObject *o, int depth)
{
    PyObject *r;
    ERL_NIF_TERM t;
    int rc;

    /* A buffer (shared binary) or a channel: the result is converted
     * directly instead (1), which keeps them what they are. */
    if ((rc = pyc_special_term(b->env, o, &t)) != 0)
        return rc;
    if (PyObject_HasAttrString(o, "tolist")) {
        if (!(r = PyObject_CallMethod(o, "tolist", NULL)))
            return -1;
    } else if (PyIndex_Check(o)) {
        if (!(r = PyNumber_Index(o)))
            return -1;
    } else if (!(r = PyObject_Str(o))) {
        return -1;
    }
    rc = encode(b, r, depth + 1, 0);
    Py_DECREF(r);
    return rc;
}

static int encode(buf_t *b, PyObject *o, int depth, int key)
{
    ErlNifPid p;
    PyTypeObject *tp = Py_TYPE(o);
    (void)key;

    if (depth > PYC_MAX_DEPTH || ((depth & 15) == 15 && pyc_stack_short())) {
        PyErr_Format(PyExc_ValueError,
                     "term nested deeper than %d levels (or than this thread's stack allows)",
                     PYC_MAX_DEPTH);
        return -1;
    }
    /* The exact built-in types first, as in py_convert.c. */
    if (tp == &PyLong_Type)
        return integer(b, o);
    if (tp == &PyUnicode_Type)
        return str(b, o);
    if (tp == &PyFloat_Type)
        return real(b, PyFloat_AS_DOUBLE(o));
    if (tp == &PyDict_Type)
        return dict(b, o, depth);
    if (o == Py_None)
        return atom(b, "none");
    if (o == Py_True)
        return atom(b, "true");
    if (o == Py_False)
        return atom(b, "false");
    if (PyLong_Check(o))
        return integer(b, o);
    if (PyFloat_Check(o))
        return real(b, PyFloat_AS_DOUBLE(o));
    if (PyUnicode_Check(o))
        return str(b, o);
    if (PyBytes_Check(o))
        return binary(b, PyBytes_AS_STRING(o), PyBytes_GET_SIZE(o));
    if (PyByteArray_Check(o))
        return binary(b, PyByteArray_AS_STRING(o), PyByteArray_GET_SIZE(o));
    if (PyList_Check(o)) {
        Py_ssize_t n = PyList_GET_SIZE(o);
        int rc;
        if (n == 0)
            return put8(b, NIL_EXT);
        if (put_tag32(b, LIST_EXT, (uint32_t)n) < 0)
            return -1;
        if ((rc = items(b, o, n, depth)))
            return rc;
        return put8(b, NIL_EXT);
    }
    if (PyTuple_Check(o)) {
        Py_ssize_t n = PyTuple_GET_SIZE(o);
        int rc = n <= 255 ? (put8(b, SMALL_TUPLE_EXT) < 0 ? -1 : put8(b, (unsigned)n))
                          : put_tag32(b, LARGE_TUPLE_EXT, (uint32_t)n);
        return rc ? rc : items(b, o, n, depth);
    }
    if (PyDict_Check(o))
        return dict(b, o, depth);
    if (PyAnySet_Check(o))
        return iterable(b, o, depth);
    if (pyp_pid_get(o, &p))
        return pid(b, &p);
    return fallback(b, o, depth);
}

int pye_encode_ok(ErlNifEnv *env, PyObject *o, ERL_NIF_TERM *out)
{
    buf_t b = {env, {0}, 0};
    int rc;

    if (!enif_alloc_binary(4096, &b.bin)) {
        PyErr_NoMemory();
        return -1;
    }
    /* {ok, Term} */
    rc = put8(&b, 131) < 0 || put8(&b, SMALL_TUPLE_EXT) < 0 || put8(&b, 2) < 0 || atom(&b, "ok") < 0
             ? -1
             : encode(&b, o, 0, 0);
    if (rc) {
        enif_release_binary(&b.bin);
        return rc;
    }
    if (!enif_realloc_binary(&b.bin, b.len)) {
        enif_release_binary(&b.bin);
        PyErr_NoMemory();
        return -1;
    }
    *out = enif_make_binary(env, &b.bin);
    return 0;
}
