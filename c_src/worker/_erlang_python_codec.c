/* _erlang_python_codec.c — the external term format codec of an isolated
 * worker's process (priv/python/_erlang_python_worker.py), in C.  A CPython
 * extension module loaded by that process, not part of the NIF: built
 * beside py_nif.so (c_src/Makefile) for the same Python.
 *
 * It converts exactly as that file's Python codec does (kept there as the
 * reference and the fallback), which follows docs/types.md:
 *
 *   decode(data)        the term in data (starting with 131) as Python
 *   encode_frame(obj)   a frame: a 4-byte big-endian length, then 131 and
 *                       obj in the external term format
 *   configure(Atom, Pid, fallback)
 *                       the worker's classes for atoms sent as such and
 *                       pids, and its function for other objects
 *
 * Errors are the Python codec's: TypeError for what cannot be converted,
 * ValueError past 10000 levels of nesting or for a truncated term. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define MAX_DEPTH 10000

enum {
    NEW_FLOAT_EXT = 70,
    BIT_BINARY_EXT = 77,
    NEW_PID_EXT = 88,
    SMALL_INTEGER_EXT = 97,
    INTEGER_EXT = 98,
    ATOM_EXT = 100,
    PID_EXT = 103,
    SMALL_TUPLE_EXT = 104,
    LARGE_TUPLE_EXT = 105,
    NIL_EXT = 106,
    STRING_EXT = 107,
    LIST_EXT = 108,
    BINARY_EXT = 109,
    SMALL_BIG_EXT = 110,
    LARGE_BIG_EXT = 111,
    SMALL_ATOM_EXT = 115,
    MAP_EXT = 116,
    ATOM_UTF8_EXT = 118,
    SMALL_ATOM_UTF8_EXT = 119,
};

static PyObject *atom_type;   /* the worker's Atom (a str subclass) */
static PyObject *pid_type;    /* the worker's Pid */
static PyObject *fallback_fn; /* the worker's _fallback */

/* ---- decoding ------------------------------------------------------------ */

typedef struct {
    const unsigned char *d;
    Py_ssize_t n, pos;
} rd_t;

static int need(rd_t *r, Py_ssize_t k)
{
    if (k < 0 || r->n - r->pos < k) {
        PyErr_SetString(PyExc_ValueError, "truncated external term");
        return -1;
    }
    return 0;
}

static uint32_t be32(const unsigned char *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static int is_atom_tag(unsigned t)
{
    return t == ATOM_EXT || t == ATOM_UTF8_EXT || t == SMALL_ATOM_EXT || t == SMALL_ATOM_UTF8_EXT;
}

/* An atom's name at r->pos (its tag read): *s, *len; -1 if truncated. */
static int atom_name(rd_t *r, unsigned tag, const char **s, Py_ssize_t *len)
{
    Py_ssize_t n;
    if (tag == SMALL_ATOM_EXT || tag == SMALL_ATOM_UTF8_EXT) {
        if (need(r, 1))
            return -1;
        n = r->d[r->pos++];
    } else {
        if (need(r, 2))
            return -1;
        n = ((Py_ssize_t)r->d[r->pos] << 8) | r->d[r->pos + 1];
        r->pos += 2;
    }
    if (need(r, n))
        return -1;
    *s = (const char *)r->d + r->pos;
    *len = n;
    r->pos += n;
    return 0;
}

static PyObject *atom_value(const char *s, Py_ssize_t n, int utf8)
{
    if (n == 4 && memcmp(s, "true", 4) == 0)
        Py_RETURN_TRUE;
    if (n == 5 && memcmp(s, "false", 5) == 0)
        Py_RETURN_FALSE;
    if ((n == 4 && memcmp(s, "none", 4) == 0) || (n == 3 && memcmp(s, "nil", 3) == 0) ||
        (n == 9 && memcmp(s, "undefined", 9) == 0))
        Py_RETURN_NONE;
    return utf8 ? PyUnicode_DecodeUTF8(s, n, NULL) : PyUnicode_DecodeLatin1(s, n, NULL);
}

/* A binary: str if it is UTF-8, else bytes. */
static PyObject *text_or_bytes(const char *s, Py_ssize_t n)
{
    PyObject *o = PyUnicode_DecodeUTF8(s, n, NULL);
    if (o || !PyErr_ExceptionMatches(PyExc_UnicodeDecodeError))
        return o;
    PyErr_Clear();
    return PyBytes_FromStringAndSize(s, n);
}

/* {bytes, Binary} or {buffer, Binary} at r->pos (a 2-tuple's elements):
 * the bytes, with r->pos past it; NULL without an error if it is not one
 * (r->pos unchanged). */
static PyObject *tagged_binary(rd_t *r)
{
    Py_ssize_t save = r->pos, len, n;
    const char *name;
    unsigned tag;

    if (r->n - r->pos < 2 || !is_atom_tag(tag = r->d[r->pos]))
        return NULL;
    r->pos++;
    if (atom_name(r, tag, &name, &len) != 0) {
        PyErr_Clear();
        r->pos = save;
        return NULL;
    }
    if (!((len == 5 && memcmp(name, "bytes", 5) == 0) || (len == 6 && memcmp(name, "buffer", 6) == 0)) ||
        r->n - r->pos < 5 || r->d[r->pos] != BINARY_EXT) {
        r->pos = save;
        return NULL;
    }
    n = (Py_ssize_t)be32(r->d + r->pos + 1);
    r->pos += 5;
    if (need(r, n)) {
        PyErr_Clear();
        r->pos = save;
        return NULL;
    }
    r->pos += n;
    return PyBytes_FromStringAndSize((const char *)r->d + r->pos - n, n);
}

static PyObject *dec(rd_t *r, int depth);

static PyObject *dec_items(rd_t *r, Py_ssize_t n, int depth, int tuple)
{
    PyObject *o = tuple ? PyTuple_New(n) : PyList_New(n);
    if (!o)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = dec(r, depth + 1);
        if (!v) {
            Py_DECREF(o);
            return NULL;
        }
        if (tuple)
            PyTuple_SET_ITEM(o, i, v);
        else
            PyList_SET_ITEM(o, i, v);
    }
    return o;
}

static PyObject *dec_map(rd_t *r, Py_ssize_t n, int depth)
{
    PyObject *o = PyDict_New();
    if (!o)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *k = dec(r, depth + 1), *v = NULL;
        int rc = -1;
        if (k && PyList_Check(k))
            PyErr_SetString(PyExc_TypeError, "unhashable map key (a list)");
        else if (k && PyDict_Check(k))
            PyErr_SetString(PyExc_TypeError, "unhashable map key (a map)");
        else if (k && (v = dec(r, depth + 1)))
            rc = PyDict_SetItem(o, k, v);
        Py_XDECREF(k);
        Py_XDECREF(v);
        if (rc != 0) {
            Py_DECREF(o);
            return NULL;
        }
    }
    return o;
}

static PyObject *dec_big(rd_t *r, Py_ssize_t n)
{
    PyObject *mag, *neg;
    int sign;

    if (need(r, n + 1))
        return NULL;
    sign = r->d[r->pos];
    mag = PyObject_CallMethod((PyObject *)&PyLong_Type, "from_bytes", "y#s",
                              (const char *)r->d + r->pos + 1, n, "little");
    r->pos += n + 1;
    if (!mag || !sign)
        return mag;
    neg = PyNumber_Negative(mag);
    Py_DECREF(mag);
    return neg;
}

static PyObject *dec_pid(rd_t *r, unsigned tag)
{
    Py_ssize_t start = r->pos - 1, len;
    const char *name;
    unsigned ntag;

    if (need(r, 1))
        return NULL;
    ntag = r->d[r->pos++];
    if (!is_atom_tag(ntag)) {
        PyErr_SetString(PyExc_TypeError, "a pid whose node is not an atom cannot be converted");
        return NULL;
    }
    if (atom_name(r, ntag, &name, &len) != 0 || need(r, tag == NEW_PID_EXT ? 12 : 9))
        return NULL;
    r->pos += tag == NEW_PID_EXT ? 12 : 9;
    if (!pid_type) {
        PyErr_SetString(PyExc_RuntimeError, "_erlang_python_codec is not configured");
        return NULL;
    }
    return PyObject_CallFunction(pid_type, "y#", (const char *)r->d + start, r->pos - start);
}

static PyObject *dec(rd_t *r, int depth)
{
    unsigned tag;
    Py_ssize_t n, len;
    const char *s;

    if (depth > MAX_DEPTH) {
        PyErr_Format(PyExc_ValueError, "nesting deeper than %d levels", MAX_DEPTH);
        return NULL;
    }
    if (need(r, 1))
        return NULL;
    tag = r->d[r->pos++];
    switch (tag) {
    case SMALL_INTEGER_EXT:
        if (need(r, 1))
            return NULL;
        return PyLong_FromLong(r->d[r->pos++]);
    case INTEGER_EXT:
        if (need(r, 4))
            return NULL;
        r->pos += 4;
        return PyLong_FromLong((int32_t)be32(r->d + r->pos - 4));
    case NEW_FLOAT_EXT: {
        uint64_t bits = 0;
        double v;
        if (need(r, 8))
            return NULL;
        for (int i = 0; i < 8; i++)
            bits = (bits << 8) | r->d[r->pos + i];
        r->pos += 8;
        memcpy(&v, &bits, sizeof v);
        return PyFloat_FromDouble(v);
    }
    case BINARY_EXT:
        if (need(r, 4))
            return NULL;
        n = (Py_ssize_t)be32(r->d + r->pos);
        r->pos += 4;
        if (need(r, n))
            return NULL;
        r->pos += n;
        return text_or_bytes((const char *)r->d + r->pos - n, n);
    case SMALL_ATOM_UTF8_EXT:
    case SMALL_ATOM_EXT:
    case ATOM_UTF8_EXT:
    case ATOM_EXT:
        if (atom_name(r, tag, &s, &len) != 0)
            return NULL;
        return atom_value(s, len, tag == SMALL_ATOM_UTF8_EXT || tag == ATOM_UTF8_EXT);
    case SMALL_TUPLE_EXT:
    case LARGE_TUPLE_EXT:
        if (tag == SMALL_TUPLE_EXT) {
            if (need(r, 1))
                return NULL;
            n = r->d[r->pos++];
        } else {
            if (need(r, 4))
                return NULL;
            n = (Py_ssize_t)be32(r->d + r->pos);
            r->pos += 4;
        }
        if (n == 2) {
            PyObject *raw = tagged_binary(r);
            if (raw)
                return raw;
        }
        if (need(r, n)) /* each element takes a byte at least */
            return NULL;
        return dec_items(r, n, depth, 1);
    case NIL_EXT:
        return PyList_New(0);
    case LIST_EXT: {
        PyObject *o;
        if (need(r, 4))
            return NULL;
        n = (Py_ssize_t)be32(r->d + r->pos);
        r->pos += 4;
        if (need(r, n) || !(o = dec_items(r, n, depth, 0)))
            return NULL;
        if (need(r, 1) || r->d[r->pos] != NIL_EXT) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "an improper list cannot be converted");
            Py_DECREF(o);
            return NULL;
        }
        r->pos++;
        return o;
    }
    case STRING_EXT: {
        PyObject *o;
        if (need(r, 2))
            return NULL;
        n = ((Py_ssize_t)r->d[r->pos] << 8) | r->d[r->pos + 1];
        r->pos += 2;
        if (need(r, n) || !(o = PyList_New(n)))
            return NULL;
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *v = PyLong_FromLong(r->d[r->pos + i]);
            if (!v) {
                Py_DECREF(o);
                return NULL;
            }
            PyList_SET_ITEM(o, i, v);
        }
        r->pos += n;
        return o;
    }
    case MAP_EXT:
        if (need(r, 4))
            return NULL;
        n = (Py_ssize_t)be32(r->d + r->pos);
        r->pos += 4;
        if (need(r, n)) /* 2 bytes a pair at least; a bound on the loop */
            return NULL;
        return dec_map(r, n, depth);
    case SMALL_BIG_EXT:
        if (need(r, 1))
            return NULL;
        n = r->d[r->pos++];
        return dec_big(r, n);
    case LARGE_BIG_EXT:
        if (need(r, 4))
            return NULL;
        n = (Py_ssize_t)be32(r->d + r->pos);
        r->pos += 4;
        return dec_big(r, n);
    case NEW_PID_EXT:
    case PID_EXT:
        return dec_pid(r, tag);
    case BIT_BINARY_EXT:
        PyErr_SetString(PyExc_TypeError, "a bitstring whose size is not a whole number of bytes "
                                         "cannot be converted");
        return NULL;
    default:
        PyErr_Format(PyExc_TypeError,
                     "this term cannot be converted to Python (external tag %u): "
                     "a fun, a port or a reference",
                     tag);
        return NULL;
    }
}

static PyObject *codec_decode(PyObject *self, PyObject *arg)
{
    Py_buffer b;
    PyObject *o = NULL;
    (void)self;

    if (PyObject_GetBuffer(arg, &b, PyBUF_SIMPLE) != 0)
        return NULL;
    if (b.len < 1 || ((const unsigned char *)b.buf)[0] != 131) {
        PyErr_SetString(PyExc_ValueError, "not an external term");
    } else {
        rd_t r = {b.buf, b.len, 1};
        o = dec(&r, 0);
    }
    PyBuffer_Release(&b);
    return o;
}

/* ---- encoding ------------------------------------------------------------ */

typedef struct {
    PyObject *bytes; /* grown with _PyBytes_Resize */
    Py_ssize_t len;
} wb_t;

static unsigned char *reserve(wb_t *w, Py_ssize_t k)
{
    Py_ssize_t cap = PyBytes_GET_SIZE(w->bytes);
    if (w->len + k > cap) {
        Py_ssize_t want = cap * 2;
        while (want < w->len + k)
            want *= 2;
        if (_PyBytes_Resize(&w->bytes, want) != 0)
            return NULL;
    }
    w->len += k;
    return (unsigned char *)PyBytes_AS_STRING(w->bytes) + w->len - k;
}

static void put32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static int put_atom(wb_t *w, const char *s, Py_ssize_t n)
{
    unsigned char *p;
    if (n > 255) {
        PyErr_SetString(PyExc_ValueError, "an atom longer than 255 bytes");
        return -1;
    }
    if (!(p = reserve(w, n + 2)))
        return -1;
    p[0] = SMALL_ATOM_UTF8_EXT;
    p[1] = (unsigned char)n;
    memcpy(p + 2, s, (size_t)n);
    return 0;
}

static int put_binary(wb_t *w, const char *s, Py_ssize_t n)
{
    unsigned char *p;
    if ((uint64_t)n > UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "a binary of 4 GiB or more");
        return -1;
    }
    if (!(p = reserve(w, n + 5)))
        return -1;
    p[0] = BINARY_EXT;
    put32(p + 1, (uint32_t)n);
    memcpy(p + 5, s, (size_t)n);
    return 0;
}

static int put_head(wb_t *w, unsigned tag, Py_ssize_t n)
{
    unsigned char *p;
    if ((uint64_t)n > UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "a collection of 2**32 items or more");
        return -1;
    }
    if (!(p = reserve(w, 5)))
        return -1;
    p[0] = (unsigned char)tag;
    put32(p + 1, (uint32_t)n);
    return 0;
}

static int put_text(wb_t *w, PyObject *o, int as_atom)
{
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(o, &n);
    PyObject *enc;
    int rc;

    if (s)
        return as_atom ? put_atom(w, s, n) : put_binary(w, s, n);
    if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError))
        return -1;
    PyErr_Clear(); /* lone surrogates: as the Python codec, surrogatepass */
    if (!(enc = PyUnicode_AsEncodedString(o, "utf-8", "surrogatepass")))
        return -1;
    rc = as_atom ? put_atom(w, PyBytes_AS_STRING(enc), PyBytes_GET_SIZE(enc))
                 : put_binary(w, PyBytes_AS_STRING(enc), PyBytes_GET_SIZE(enc));
    Py_DECREF(enc);
    return rc;
}

/* The largest integer the node decodes, in bytes (OTP 25-27: 2**25 - 64
 * bits), as the worker's Python codec has it: 1, or 0 with OverflowError. */
#define MAX_BIG_BYTES 4194296
static int fits_node(Py_ssize_t nbits)
{
    if ((nbits + 7) / 8 <= MAX_BIG_BYTES)
        return 1;
    PyErr_SetString(PyExc_OverflowError, "integer too large for Erlang");
    return 0;
}

static int put_int(wb_t *w, PyObject *o)
{
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    unsigned char *p;

    if (v == -1 && PyErr_Occurred())
        return -1;
    if (!overflow && v >= 0 && v < 256) {
        if (!(p = reserve(w, 2)))
            return -1;
        p[0] = SMALL_INTEGER_EXT;
        p[1] = (unsigned char)v;
        return 0;
    }
    if (!overflow && v >= INT32_MIN && v <= INT32_MAX) {
        if (!(p = reserve(w, 5)))
            return -1;
        p[0] = INTEGER_EXT;
        put32(p + 1, (uint32_t)(int32_t)v);
        return 0;
    }
    if (!overflow) {
        unsigned long long mag = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
        unsigned char digits[8];
        int n = 0;
        while (mag) {
            digits[n++] = (unsigned char)mag;
            mag >>= 8;
        }
        if (!(p = reserve(w, 3 + n)))
            return -1;
        p[0] = SMALL_BIG_EXT;
        p[1] = (unsigned char)n;
        p[2] = v < 0;
        memcpy(p + 3, digits, (size_t)n);
        return 0;
    }
    {
        /* Past 64 bits: the digits from Python (rare, not fast); past the
         * node's limit, OverflowError as in process. */
        PyObject *mag = PyNumber_Absolute(o), *bits = NULL, *b = NULL;
        int neg = overflow < 0, rc = -1;
        Py_ssize_t nbits, n;
        if (mag && (bits = PyObject_CallMethod(mag, "bit_length", NULL)) &&
            (nbits = PyLong_AsSsize_t(bits)) >= 0 && fits_node(nbits) &&
            (b = PyObject_CallMethod(mag, "to_bytes", "ns", (nbits + 7) / 8, "little"))) {
            n = PyBytes_GET_SIZE(b);
            if (n < 256 && (p = reserve(w, 3 + n))) {
                p[0] = SMALL_BIG_EXT;
                p[1] = (unsigned char)n;
                p[2] = (unsigned char)neg;
                memcpy(p + 3, PyBytes_AS_STRING(b), (size_t)n);
                rc = 0;
            } else if (n >= 256 && put_head(w, LARGE_BIG_EXT, n) == 0 && (p = reserve(w, 1 + n))) {
                p[0] = (unsigned char)neg;
                memcpy(p + 1, PyBytes_AS_STRING(b), (size_t)n);
                rc = 0;
            }
        }
        Py_XDECREF(mag);
        Py_XDECREF(bits);
        Py_XDECREF(b);
        return rc;
    }
}

static int put_float(wb_t *w, double d)
{
    unsigned char *p;
    uint64_t bits;

    if (isnan(d))
        return put_atom(w, "nan", 3);
    if (isinf(d))
        return d > 0 ? put_atom(w, "infinity", 8) : put_atom(w, "neg_infinity", 12);
    if (!(p = reserve(w, 9)))
        return -1;
    memcpy(&bits, &d, sizeof bits);
    p[0] = NEW_FLOAT_EXT;
    for (int i = 0; i < 8; i++)
        p[1 + i] = (unsigned char)(bits >> (56 - 8 * i));
    return 0;
}

static int enc(wb_t *w, PyObject *o, int depth);

/* A list or a tuple (or their subclasses): items held while encoded (the
 * fallback runs Python code, which could change the sequence). */
static int put_seq(wb_t *w, PyObject *o, int depth)
{
    int tuple = PyTuple_Check(o);
    Py_ssize_t n = tuple ? PyTuple_GET_SIZE(o) : PyList_GET_SIZE(o);
    unsigned char *p;

    if (tuple) {
        if (n < 256) {
            if (!(p = reserve(w, 2)))
                return -1;
            p[0] = SMALL_TUPLE_EXT;
            p[1] = (unsigned char)n;
        } else if (put_head(w, LARGE_TUPLE_EXT, n) != 0) {
            return -1;
        }
        for (Py_ssize_t i = 0; i < n; i++)
            if (enc(w, PyTuple_GET_ITEM(o, i), depth + 1) != 0)
                return -1;
        return 0;
    }
    if (n == 0) {
        if (!(p = reserve(w, 1)))
            return -1;
        p[0] = NIL_EXT;
        return 0;
    }
    if (put_head(w, LIST_EXT, n) != 0)
        return -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v;
        int rc;
        if (PyList_GET_SIZE(o) != n) {
            PyErr_SetString(PyExc_RuntimeError, "list changed size during conversion");
            return -1;
        }
        v = PyList_GET_ITEM(o, i);
        Py_INCREF(v);
        rc = enc(w, v, depth + 1);
        Py_DECREF(v);
        if (rc != 0)
            return -1;
    }
    if (PyList_GET_SIZE(o) != n) {
        PyErr_SetString(PyExc_RuntimeError, "list changed size during conversion");
        return -1;
    }
    if (!(p = reserve(w, 1)))
        return -1;
    p[0] = NIL_EXT;
    return 0;
}

static int put_dict(wb_t *w, PyObject *o, int depth)
{
    Py_ssize_t n = PyDict_Size(o), pos = 0, seen = 0;
    PyObject *k, *v;

    if (put_head(w, MAP_EXT, n) != 0)
        return -1;
    while (PyDict_Next(o, &pos, &k, &v)) {
        int rc;
        Py_INCREF(k);
        Py_INCREF(v);
        rc = enc(w, k, depth + 1) != 0 || enc(w, v, depth + 1) != 0 ? -1 : 0;
        Py_DECREF(k);
        Py_DECREF(v);
        if (rc != 0)
            return -1;
        seen++;
    }
    if (seen != n || PyDict_Size(o) != n) {
        PyErr_SetString(PyExc_RuntimeError, "dict changed size during conversion");
        return -1;
    }
    return 0;
}

/* Encodes what f(o) returns, at the same depth. */
static int put_via(wb_t *w, PyObject *f, PyObject *o, int depth)
{
    PyObject *v = PyObject_CallOneArg(f, o);
    int rc;
    if (!v)
        return -1;
    rc = enc(w, v, depth + 1);
    Py_DECREF(v);
    return rc;
}

static int enc(wb_t *w, PyObject *o, int depth)
{
    if (depth > MAX_DEPTH) {
        PyErr_Format(PyExc_ValueError, "nesting deeper than %d levels", MAX_DEPTH);
        return -1;
    }
    if ((PyObject *)Py_TYPE(o) == atom_type)
        return put_text(w, o, 1);
    if (o == Py_None)
        return put_atom(w, "none", 4);
    if (o == Py_True)
        return put_atom(w, "true", 4);
    if (o == Py_False)
        return put_atom(w, "false", 5);
    if (PyLong_CheckExact(o))
        return put_int(w, o);
    if (PyFloat_Check(o))
        return put_float(w, PyFloat_AS_DOUBLE(o));
    if (PyUnicode_Check(o))
        return put_text(w, o, 0);
    if (PyBytes_Check(o))
        return put_binary(w, PyBytes_AS_STRING(o), PyBytes_GET_SIZE(o));
    if (PyByteArray_Check(o))
        return put_binary(w, PyByteArray_AS_STRING(o), PyByteArray_GET_SIZE(o));
    if (PyLong_Check(o)) { /* a subclass (not bool): as int(o) */
        PyObject *i = PyNumber_Long(o);
        int rc;
        if (!i)
            return -1;
        rc = put_int(w, i);
        Py_DECREF(i);
        return rc;
    }
    if (PyList_Check(o) || PyTuple_Check(o))
        return put_seq(w, o, depth);
    if (PyDict_Check(o))
        return put_dict(w, o, depth);
    if (PyAnySet_Check(o))
        return put_via(w, (PyObject *)&PyList_Type, o, depth - 1);
    if (pid_type && PyObject_TypeCheck(o, (PyTypeObject *)pid_type)) {
        PyObject *etf = PyObject_GetAttrString(o, "_etf");
        unsigned char *p;
        int rc = -1;
        if (etf && PyBytes_Check(etf) && (p = reserve(w, PyBytes_GET_SIZE(etf)))) {
            memcpy(p, PyBytes_AS_STRING(etf), (size_t)PyBytes_GET_SIZE(etf));
            rc = 0;
        } else if (etf && !PyErr_Occurred()) {
            PyErr_SetString(PyExc_TypeError, "a broken erlang.Pid");
        }
        Py_XDECREF(etf);
        return rc;
    }
    if (!fallback_fn) {
        PyErr_SetString(PyExc_RuntimeError, "_erlang_python_codec is not configured");
        return -1;
    }
    return put_via(w, fallback_fn, o, depth - 1);
}

static PyObject *codec_encode_frame(PyObject *self, PyObject *o)
{
    wb_t w;
    unsigned char *p;
    (void)self;

    if (!(w.bytes = PyBytes_FromStringAndSize(NULL, 256)))
        return NULL;
    w.len = 0;
    if (!(p = reserve(&w, 5))) {
        Py_XDECREF(w.bytes);
        return NULL;
    }
    p[4] = 131;
    if (enc(&w, o, 0) != 0) {
        Py_XDECREF(w.bytes);
        return NULL;
    }
    if ((uint64_t)(w.len - 4) > UINT32_MAX) {
        Py_DECREF(w.bytes);
        PyErr_SetString(PyExc_ValueError, "an answer of 4 GiB or more");
        return NULL;
    }
    put32((unsigned char *)PyBytes_AS_STRING(w.bytes), (uint32_t)(w.len - 4));
    if (_PyBytes_Resize(&w.bytes, w.len) != 0)
        return NULL;
    return w.bytes;
}

static PyObject *codec_configure(PyObject *self, PyObject *args)
{
    PyObject *a, *p, *f;
    (void)self;

    if (!PyArg_ParseTuple(args, "OOO", &a, &p, &f))
        return NULL;
    if (!PyType_Check(a) || !PyType_Check(p) || !PyCallable_Check(f)) {
        PyErr_SetString(PyExc_TypeError, "configure(Atom, Pid, fallback): two classes, a function");
        return NULL;
    }
    Py_INCREF(a);
    Py_INCREF(p);
    Py_INCREF(f);
    Py_XSETREF(atom_type, a);
    Py_XSETREF(pid_type, p);
    Py_XSETREF(fallback_fn, f);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"decode", codec_decode, METH_O, "decode(data): the term in data (ETF, from 131) as Python."},
    {"encode_frame", codec_encode_frame, METH_O,
     "encode_frame(obj): a 4-byte big-endian length, then obj in ETF (from 131)."},
    {"configure", codec_configure, METH_VARARGS,
     "configure(Atom, Pid, fallback): the worker's classes and fallback."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_erlang_python_codec",
    "The external term format codec of an isolated worker's process.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__erlang_python_codec(void);

PyMODINIT_FUNC PyInit__erlang_python_codec(void)
{
    return PyModule_Create(&module);
}
