/* py_convert.c — term <-> PyObject, both directions, in one pass each.
 * GIL held throughout.  Ownership: every PyObject* returned is a new
 * reference; borrowed references taken from containers are INCREF'd while
 * converted, since converting may run Python code (str(), tolist()) that
 * mutates the container. */
#define _GNU_SOURCE
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "atoms.h"
#include "py_compat.h"
#include "py_buffer.h"
#include "py_convert.h"
#include "py_pid.h"

#define PYC_SMALL 64 /* containers up to this size use the C stack */

/* Fast path for small integers.  erts encodes an integer that fits in
 * 60 bits as an immediate: (value << 4) | 0xF.  pyc_init checks that this
 * holds in the running VM; if it does not, the enif_* calls are used. */
static int small_ok;
#define SMALL_TAG 0xFu
#define SMALL_MAX ((ErlNifSInt64)1 << 58)

void pyc_init(ErlNifEnv *env)
{
    ERL_NIF_TERM a = enif_make_int64(env, 5), b = enif_make_int64(env, -3);
    small_ok = sizeof(ERL_NIF_TERM) == 8 && a == ((5u << 4) | SMALL_TAG) &&
               b == (ERL_NIF_TERM)(((ErlNifSInt64)-3 * 16) | SMALL_TAG) &&
               enif_make_int64(env, SMALL_MAX - 1) == (ERL_NIF_TERM)(((SMALL_MAX - 1) << 4) | SMALL_TAG);
}

static inline int is_small(ERL_NIF_TERM t)
{
    return small_ok && (t & 0xF) == SMALL_TAG;
}

static inline ErlNifSInt64 small_value(ERL_NIF_TERM t)
{
    return (ErlNifSInt64)t >> 4;
}

/* ---- stack guard ----------------------------------------------------------
 * Conversion recurses once per nesting level.  Workers have 64 MiB stacks,
 * but Python threads and the asyncio loop thread have 8 MiB: deep data is
 * refused (ValueError) while less than PYC_STACK_RESERVE bytes remain. */
#define PYC_STACK_RESERVE ((uintptr_t)512 * 1024)

static __thread uintptr_t stack_low; /* 1: unknown */

int pyc_stack_short(void)
{
    if (!stack_low) {
        pthread_attr_t a;
        void *addr = NULL;
        size_t size = 0;
        stack_low = 1;
        if (pthread_getattr_np(pthread_self(), &a) == 0) {
            if (pthread_attr_getstack(&a, &addr, &size) == 0 && addr)
                stack_low = (uintptr_t)addr;
            pthread_attr_destroy(&a);
        }
    }
    return stack_low > 1 && (uintptr_t)__builtin_frame_address(0) < stack_low + PYC_STACK_RESERVE;
}

/* ---- Erlang -> Python -------------------------------------------------- */

static PyObject *to_py(ErlNifEnv *env, ERL_NIF_TERM t, int depth);

static PyObject *too_deep(void)
{
    PyErr_Format(PyExc_ValueError, "term nested deeper than %d levels (or than this thread's stack allows)",
                 PYC_MAX_DEPTH);
    return NULL;
}

/* Atom text.  OTP 25 reads atoms as Latin-1 only; atoms with other
 * characters are read from their external format (UTF-8). */
static PyObject *atom_to_str(ErlNifEnv *env, ERL_NIF_TERM t)
{
    char buf[256 * 4 + 1];
    ErlNifBinary bin;
    PyObject *s = NULL;
    int n = enif_get_atom(env, t, buf, sizeof buf, ERL_NIF_LATIN1);

    if (n > 0)
        return PyUnicode_DecodeLatin1(buf, n - 1, NULL);
    if (!enif_term_to_binary(env, t, &bin))
        return PyErr_NoMemory();
    if (bin.size >= 3 && bin.data[1] == 119) /* SMALL_ATOM_UTF8_EXT */
        s = PyUnicode_DecodeUTF8((char *)bin.data + 3, bin.data[2], "replace");
    else if (bin.size >= 4 && bin.data[1] == 118) /* ATOM_UTF8_EXT */
        s = PyUnicode_DecodeUTF8((char *)bin.data + 4, (bin.data[2] << 8) | bin.data[3],
                                 "replace");
    else
        PyErr_SetString(PyExc_TypeError, "unreadable atom");
    enif_release_binary(&bin);
    return s;
}

/* Integers beyond 64 bits, through the external term format. */
static PyObject *bignum_to_py(ErlNifEnv *env, ERL_NIF_TERM t)
{
    ErlNifBinary bin;
    PyObject *v = NULL, *neg;
    const unsigned char *d;
    size_t n;
    int sign;

    if (!enif_term_to_binary(env, t, &bin))
        return PyErr_NoMemory();
    d = bin.data;
    if (bin.size >= 4 && d[1] == 110) { /* SMALL_BIG_EXT */
        n = d[2];
        sign = d[3];
        d += 4;
    } else if (bin.size >= 7 && d[1] == 111) { /* LARGE_BIG_EXT */
        n = ((size_t)d[2] << 24) | ((size_t)d[3] << 16) | ((size_t)d[4] << 8) | d[5];
        sign = d[6];
        d += 7;
    } else {
        enif_release_binary(&bin);
        PyErr_SetString(PyExc_TypeError, "unreadable integer");
        return NULL;
    }
    v = _PyLong_FromByteArray(d, n, 1, 0);
    enif_release_binary(&bin);
    if (v && sign) {
        neg = PyNumber_Negative(v);
        Py_DECREF(v);
        v = neg;
    }
    return v;
}

static PyObject *int_to_py(ErlNifEnv *env, ERL_NIF_TERM t)
{
    ErlNifSInt64 i;
    ErlNifUInt64 u;
    if (enif_get_int64(env, t, &i))
        return PyLong_FromLongLong(i);
    if (enif_get_uint64(env, t, &u))
        return PyLong_FromUnsignedLongLong(u);
    return bignum_to_py(env, t);
}

static PyObject *binary_to_py(ErlNifEnv *env, ERL_NIF_TERM t, int force_bytes)
{
    ErlNifBinary bin;
    PyObject *s;

    if (!enif_inspect_binary(env, t, &bin)) {
        PyErr_SetString(PyExc_TypeError, "cannot convert a bitstring to Python");
        return NULL;
    }
    if (!force_bytes) {
        s = PyUnicode_DecodeUTF8((const char *)bin.data, (Py_ssize_t)bin.size, NULL);
        if (s || !PyErr_ExceptionMatches(PyExc_UnicodeDecodeError))
            return s;
        PyErr_Clear();
    }
    return PyBytes_FromStringAndSize((const char *)bin.data, (Py_ssize_t)bin.size);
}

static PyObject *list_to_py(ErlNifEnv *env, ERL_NIF_TERM t, int depth)
{
    unsigned len;
    ERL_NIF_TERM head;
    PyObject *list, *item;

    if (!enif_get_list_length(env, t, &len)) {
        PyErr_SetString(PyExc_TypeError, "cannot convert an improper list to Python");
        return NULL;
    }
    if (!(list = PyList_New(len)))
        return NULL;
    for (unsigned i = 0; i < len; i++) {
        enif_get_list_cell(env, t, &head, &t);
        if (!(item = to_py(env, head, depth + 1))) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, item);
    }
    return list;
}

static PyObject *tuple_to_py(ErlNifEnv *env, ERL_NIF_TERM t, int depth)
{
    int arity;
    const ERL_NIF_TERM *elems;
    PyObject *tuple, *item;

    enif_get_tuple(env, t, &arity, &elems);
    if (arity == 2 && enif_is_identical(elems[0], ATOMS.bytes) && enif_is_binary(env, elems[1]))
        return binary_to_py(env, elems[1], 1);
    if (arity == 2 && enif_is_identical(elems[0], ATOMS.buffer) && enif_is_binary(env, elems[1]))
        return pyb_buffer_new(env, elems[1]);
    if (!(tuple = PyTuple_New(arity)))
        return NULL;
    for (int i = 0; i < arity; i++) {
        if (!(item = to_py(env, elems[i], depth + 1))) {
            Py_DECREF(tuple);
            return NULL;
        }
        PyTuple_SET_ITEM(tuple, i, item);
    }
    return tuple;
}

/* Map keys repeat across the maps of a document: binary keys of up to
 * KEY_MAX bytes are decoded once per thread and the same (hashed) str is
 * reused while it stays cached.  Direct-mapped, by content. */
#define KEY_CACHE 256
#define KEY_MAX 48

typedef struct {
    size_t len;
    char bytes[KEY_MAX];
    PyObject *str; /* strong */
} key_entry_t;

static __thread key_entry_t *key_cache;
static __thread int key_cache_ok; /* a worker thread, which frees it */

static PyObject *key_to_py(ErlNifEnv *env, ERL_NIF_TERM t, int depth)
{
    ErlNifBinary bin;
    key_entry_t *e;
    uint32_t h = 2166136261u;
    PyObject *s;

    if (!key_cache_ok || !enif_is_binary(env, t) || !enif_inspect_binary(env, t, &bin) ||
        bin.size > KEY_MAX || bin.size == 0) /* workers only: they free it */
        return to_py(env, t, depth);
    if (!key_cache && !(key_cache = PyMem_RawCalloc(KEY_CACHE, sizeof *key_cache)))
        return to_py(env, t, depth);
    for (size_t i = 0; i < bin.size; i++)
        h = (h ^ bin.data[i]) * 16777619u;
    e = &key_cache[h % KEY_CACHE];
    if (e->str && e->len == bin.size && memcmp(e->bytes, bin.data, bin.size) == 0) {
        Py_INCREF(e->str);
        return e->str;
    }
    if (!(s = binary_to_py(env, t, 0)))
        return NULL;
    if (PyUnicode_CheckExact(s)) {
        (void)PyObject_Hash(s); /* computed once, kept in the object */
        Py_XSETREF(e->str, Py_NewRef(s));
        e->len = bin.size;
        memcpy(e->bytes, bin.data, bin.size);
    }
    return s;
}

void pyc_thread_init(void)
{
    key_cache_ok = 1;
}

void pyc_thread_fini(void)
{
    key_cache_ok = 0;
    if (!key_cache)
        return;
    for (int i = 0; i < KEY_CACHE; i++)
        Py_CLEAR(key_cache[i].str);
    PyMem_RawFree(key_cache);
    key_cache = NULL;
}

static PyObject *map_to_py(ErlNifEnv *env, ERL_NIF_TERM t, int depth)
{
    ErlNifMapIterator it;
    ERL_NIF_TERM k, v;
    PyObject *dict, *pk = NULL, *pv = NULL;
    size_t size = 0;

    (void)enif_get_map_size(env, t, &size);
    if (!(dict = size > 5 ? _PyDict_NewPresized((Py_ssize_t)size) : PyDict_New()))
        return NULL;
    if (!enif_map_iterator_create(env, t, &it, ERL_NIF_MAP_ITERATOR_FIRST)) {
        Py_DECREF(dict);
        return PyErr_NoMemory();
    }
    while (enif_map_iterator_get_pair(env, &it, &k, &v)) {
        /* A map with more keys than the cache holds would only churn it. */
        pk = size <= KEY_CACHE / 2 ? key_to_py(env, k, depth + 1) : to_py(env, k, depth + 1);
        if (!pk || !(pv = to_py(env, v, depth + 1)) ||
            PyDict_SetItem(dict, pk, pv) < 0)
            goto fail;
        Py_CLEAR(pk);
        Py_CLEAR(pv);
        enif_map_iterator_next(env, &it);
    }
    enif_map_iterator_destroy(env, &it);
    return dict;
fail:
    Py_XDECREF(pk);
    Py_XDECREF(pv);
    enif_map_iterator_destroy(env, &it);
    Py_DECREF(dict);
    return NULL;
}

static const pyc_hooks_t *hooks; /* set once at load */

void pyc_set_hooks(const pyc_hooks_t *h)
{
    hooks = h;
}

int pyc_special_term(ErlNifEnv *env, PyObject *o, ERL_NIF_TERM *out)
{
    if (pyb_buffer_term(env, o, out))
        return 1;
    return hooks && hooks->obj_to_term ? hooks->obj_to_term(env, o, out) : 0;
}

PyObject *pyc_hook_type(const char *name)
{
    if (hooks && hooks->type)
        return hooks->type(name);
    PyErr_Format(PyExc_AttributeError, "module 'erlang' has no attribute '%s'", name);
    return NULL;
}

static PyObject *to_py(ErlNifEnv *env, ERL_NIF_TERM t, int depth)
{
    double d;
    ErlNifPid pid;

    if (is_small(t))
        return PyLong_FromLongLong(small_value(t));
    if (depth > PYC_MAX_DEPTH || ((depth & 15) == 15 && pyc_stack_short()))
        return too_deep();
    switch (enif_term_type(env, t)) {
    case ERL_NIF_TERM_TYPE_ATOM:
        if (enif_is_identical(t, ATOMS.true))
            Py_RETURN_TRUE;
        if (enif_is_identical(t, ATOMS.false))
            Py_RETURN_FALSE;
        if (enif_is_identical(t, ATOMS.none) || enif_is_identical(t, ATOMS.nil) ||
            enif_is_identical(t, ATOMS.undefined))
            Py_RETURN_NONE;
        return atom_to_str(env, t);
    case ERL_NIF_TERM_TYPE_BITSTRING:
        return binary_to_py(env, t, 0);
    case ERL_NIF_TERM_TYPE_FLOAT:
        enif_get_double(env, t, &d);
        return PyFloat_FromDouble(d);
    case ERL_NIF_TERM_TYPE_INTEGER:
        return int_to_py(env, t);
    case ERL_NIF_TERM_TYPE_LIST:
        return list_to_py(env, t, depth);
    case ERL_NIF_TERM_TYPE_MAP:
        return map_to_py(env, t, depth);
    case ERL_NIF_TERM_TYPE_TUPLE:
        return tuple_to_py(env, t, depth);
    case ERL_NIF_TERM_TYPE_PID:
        if (enif_get_local_pid(env, t, &pid))
            return pyp_pid_new(&pid);
        PyErr_SetString(PyExc_TypeError, "cannot convert a remote pid to Python");
        return NULL;
    case ERL_NIF_TERM_TYPE_FUN:
        PyErr_SetString(PyExc_TypeError, "cannot convert a fun to Python");
        return NULL;
    case ERL_NIF_TERM_TYPE_PORT:
        PyErr_SetString(PyExc_TypeError, "cannot convert a port to Python");
        return NULL;
    case ERL_NIF_TERM_TYPE_REFERENCE: {
        PyObject *o = hooks && hooks->ref_to_py ? hooks->ref_to_py(env, t) : NULL;
        if (!o && !PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "cannot convert a reference to Python");
        return o;
    }
    default:
        PyErr_SetString(PyExc_TypeError, "cannot convert this term to Python");
        return NULL;
    }
}

PyObject *pyc_to_py(ErlNifEnv *env, ERL_NIF_TERM t)
{
    return to_py(env, t, 0);
}

PyObject *pyc_name(ErlNifEnv *env, ERL_NIF_TERM t)
{
    PyObject *s;
    ErlNifBinary bin;

    if (enif_is_atom(env, t))
        s = atom_to_str(env, t);
    else if (enif_inspect_binary(env, t, &bin))
        s = PyUnicode_DecodeUTF8((const char *)bin.data, (Py_ssize_t)bin.size, NULL);
    else {
        PyErr_SetString(PyExc_TypeError, "a name must be an atom or a binary");
        return NULL;
    }
    if (!s)
        return NULL;
    if (PyUnicode_GET_LENGTH(s) == 0 || PyUnicode_FindChar(s, 0, 0, PyUnicode_GET_LENGTH(s), 1) >= 0) {
        PyErr_SetString(PyExc_ValueError, "a name must be non-empty and hold no NUL character");
        Py_DECREF(s);
        return NULL;
    }
    return s;
}

/* ---- Python -> Erlang -------------------------------------------------- */

static int to_term(ErlNifEnv *env, PyObject *o, ERL_NIF_TERM *out, int depth);

static int make_binary(ErlNifEnv *env, const char *data, Py_ssize_t len, ERL_NIF_TERM *out)
{
    unsigned char *p = enif_make_new_binary(env, (size_t)len, out);
    if (!p) {
        PyErr_NoMemory();
        return -1;
    }
    if (len)
        memcpy(p, data, (size_t)len);
    return 0;
}

int pyc_str_term(ErlNifEnv *env, PyObject *s, ERL_NIF_TERM *out)
{
    Py_ssize_t len;
    const char *data = PyUnicode_AsUTF8AndSize(s, &len);
    PyObject *b;
    int rc;

    if (data)
        return make_binary(env, data, len, out);
    if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError))
        return -1;
    PyErr_Clear(); /* lone surrogates: pass them through */
    if (!(b = PyUnicode_AsEncodedString(s, "utf-8", "surrogatepass")))
        return -1;
    rc = make_binary(env, PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b), out);
    Py_DECREF(b);
    return rc;
}

static int bigint_term(ErlNifEnv *env, PyObject *o, int negative, ERL_NIF_TERM *out)
{
    PyObject *a = negative ? PyNumber_Absolute(o) : (Py_INCREF(o), o);
    unsigned char *buf = NULL;
    size_t nbits, nbytes;
    int rc = -1;

    if (!a)
        return -1;
    nbits = _PyLong_NumBits(a);
    if (nbits == (size_t)-1 && PyErr_Occurred())
        goto done;
    nbytes = (nbits + 7) / 8;
    if (nbytes > 0xFFFFFFFFu) {
        PyErr_SetString(PyExc_OverflowError, "integer too large for Erlang");
        goto done;
    }
    if (!(buf = malloc(7 + nbytes))) {
        PyErr_NoMemory();
        goto done;
    }
    buf[0] = 131; /* external format version */
    buf[1] = 111; /* LARGE_BIG_EXT */
    buf[2] = (unsigned char)(nbytes >> 24);
    buf[3] = (unsigned char)(nbytes >> 16);
    buf[4] = (unsigned char)(nbytes >> 8);
    buf[5] = (unsigned char)nbytes;
    buf[6] = negative ? 1 : 0;
    if (pyk_long_as_bytes(a, buf + 7, nbytes) < 0)
        goto done;
    if (!enif_binary_to_term(env, buf, 7 + nbytes, out, 0)) {
        PyErr_SetString(PyExc_OverflowError, "integer too large for Erlang");
        goto done;
    }
    rc = 0;
done:
    free(buf);
    Py_DECREF(a);
    return rc;
}

static int int_term(ErlNifEnv *env, PyObject *o, ERL_NIF_TERM *out)
{
    int overflow;
    long long v;

    /* One-digit ints (|v| < 2**30) are read directly. */
    if (small_ok && PyLong_CheckExact(o) && pyk_long_small(o, &v)) {
        *out = (ERL_NIF_TERM)(((ErlNifSInt64)v * 16) | SMALL_TAG);
        return 0;
    }
    v = PyLong_AsLongLongAndOverflow(o, &overflow);

    if (overflow)
        return bigint_term(env, o, overflow < 0, out);
    if (v == -1 && PyErr_Occurred())
        return -1;
    *out = enif_make_int64(env, v);
    return 0;
}

static int float_term(ErlNifEnv *env, double d, ERL_NIF_TERM *out)
{
    if (isnan(d))
        *out = ATOMS.nan;
    else if (isinf(d))
        *out = d > 0 ? ATOMS.infinity : ATOMS.neg_infinity;
    else
        *out = enif_make_double(env, d);
    return 0;
}

/* Converts n borrowed items (INCREF'd while converted) into terms[]. */
static int items_to_terms(ErlNifEnv *env, PyObject *seq, Py_ssize_t n, ERL_NIF_TERM *terms,
                          int depth)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = pyc_seq_item(seq, i);
        int rc;
        if (!item)
            return -1;
        rc = to_term(env, item, &terms[i], depth + 1);
        Py_DECREF(item);
        if (rc < 0)
            return -1;
    }
    return 0;
}

static int seq_term(ErlNifEnv *env, PyObject *o, int is_list, ERL_NIF_TERM *out, int depth)
{
    Py_ssize_t n = is_list ? PyList_GET_SIZE(o) : PyTuple_GET_SIZE(o);
    ERL_NIF_TERM small[PYC_SMALL], *terms = small;
    int rc = -1;

    if (n > PYC_SMALL && !(terms = malloc(sizeof *terms * (size_t)n))) {
        PyErr_NoMemory();
        return -1;
    }
    if (items_to_terms(env, o, n, terms, depth) == 0) {
        *out = is_list ? enif_make_list_from_array(env, terms, (unsigned)n)
                       : enif_make_tuple_from_array(env, terms, (unsigned)n);
        rc = 0;
    }
    if (terms != small)
        free(terms);
    return rc;
}

/* OTP 25 builds maps of more than 32 keys (hash maps) in
 * enif_make_map_from_arrays with the scheduler-local temporary allocator,
 * which crashes on threads that are not schedulers (ours).  So: a flat map
 * of at most 32 keys from arrays, then one put per further key.  Keys that
 * differ in Python but not in Erlang ('a' and b'a'): the later one wins. */
#define PYC_FLATMAP_MAX 32

static ERL_NIF_TERM make_map(ErlNifEnv *env, ERL_NIF_TERM *keys, ERL_NIF_TERM *vals, Py_ssize_t n)
{
    ERL_NIF_TERM map;
    Py_ssize_t first = n < PYC_FLATMAP_MAX ? n : PYC_FLATMAP_MAX, i = first;

    if (!enif_make_map_from_arrays(env, keys, vals, (size_t)first, &map)) {
        map = enif_make_new_map(env);
        i = 0;
    }
    for (; i < n; i++)
        enif_make_map_put(env, map, keys[i], vals[i], &map);
    return map;
}

static void memo_clear(void);

/* Set while converting a request's result: a dict too large for a flat
 * map then stops the conversion (as an error, with etf_wanted set) so that
 * the result is sent in external format instead (py_etf.c). */
static __thread int etf_ok, etf_wanted;

int pyc_result_term(ErlNifEnv *env, PyObject *o, ERL_NIF_TERM *out, int *wants_etf)
{
    int rc;
    etf_ok = 1;
    etf_wanted = 0;
    rc = to_term(env, o, out, 0);
    memo_clear();
    etf_ok = 0;
    *wants_etf = rc < 0 && etf_wanted;
    if (*wants_etf)
        PyErr_Clear();
    return rc;
}

/* The same str object met again as a dict key within one conversion (the
 * keys of a list of records) gives the same binary term.  Direct-mapped by
 * address; an entry holds a reference, so that the address cannot be
 * reused meanwhile, and the env its term was made in.  Emptied when each
 * conversion ends (memo_clear). */
#define STR_MEMO 64

static __thread struct {
    PyObject *str;
    ErlNifEnv *env;
    ERL_NIF_TERM term;
} memo[STR_MEMO];
static __thread int memo_used;

static void memo_clear(void)
{
    if (!memo_used)
        return;
    for (int i = 0; i < STR_MEMO; i++)
        Py_CLEAR(memo[i].str);
    memo_used = 0;
}

static int key_term(ErlNifEnv *env, PyObject *k, ERL_NIF_TERM *out, int depth)
{
    unsigned h;

    if (!PyUnicode_CheckExact(k))
        return to_term(env, k, out, depth + 1);
    h = (unsigned)(((uintptr_t)k >> 4) % STR_MEMO);
    if (memo[h].str == k && memo[h].env == env) {
        *out = memo[h].term;
        return 0;
    }
    if (pyc_str_term(env, k, out) < 0)
        return -1;
    Py_INCREF(k);
    Py_XSETREF(memo[h].str, k);
    memo[h].env = env;
    memo[h].term = *out;
    memo_used = 1;
    return 0;
}

static int dict_term(ErlNifEnv *env, PyObject *o, ERL_NIF_TERM *out, int depth)
{
    Py_ssize_t n = PyDict_Size(o), pos = 0, i = 0;
    ERL_NIF_TERM small[2 * PYC_SMALL], *keys = small, *vals;
    PyObject *k, *v;
    int rc = -1;

    if (n > PYC_FLATMAP_MAX && etf_ok) {
        etf_wanted = 1;
        PyErr_SetString(PyExc_RuntimeError, "large dict: encode the result instead");
        return -1;
    }
    if (n > PYC_SMALL && !(keys = malloc(sizeof *keys * 2 * (size_t)n))) {
        PyErr_NoMemory();
        return -1;
    }
    vals = keys + n;
    while (i < n && PyDict_Next(o, &pos, &k, &v)) {
        int ok;
        Py_INCREF(k);
        Py_INCREF(v);
        ok = key_term(env, k, &keys[i], depth) == 0 && to_term(env, v, &vals[i], depth + 1) == 0;
        Py_DECREF(k);
        Py_DECREF(v);
        if (!ok)
            goto done;
        i++;
    }
    if (i != n || PyDict_Size(o) != n) {
        PyErr_SetString(PyExc_RuntimeError, "dict changed size during conversion");
        goto done;
    }
    *out = make_map(env, keys, vals, n);
    rc = 0;
done:
    if (keys != small)
        free(keys);
    return rc;
}

static int iter_term(ErlNifEnv *env, PyObject *o, ERL_NIF_TERM *out, int depth)
{
    PyObject *it = PyObject_GetIter(o), *item;
    ERL_NIF_TERM list = enif_make_list(env, 0), t;

    if (!it)
        return -1;
    /* Built reversed, then reversed once: one pass, no size needed. */
    while ((item = PyIter_Next(it))) {
        int rc = to_term(env, item, &t, depth + 1);
        Py_DECREF(item);
        if (rc < 0) {
            Py_DECREF(it);
            return -1;
        }
        list = enif_make_list_cell(env, t, list);
    }
    Py_DECREF(it);
    if (PyErr_Occurred())
        return -1;
    enif_make_reverse_list(env, list, out);
    return 0;
}

/* Objects outside the type table: objects with tolist() (numpy arrays and
 * scalars), integer-likes (__index__), else str(obj).  Modules are never
 * asked for tolist: the `erlang' module answers every attribute. */
static int fallback_term(ErlNifEnv *env, PyObject *o, ERL_NIF_TERM *out, int depth)
{
    PyObject *r;
    int rc;

    if ((rc = pyc_special_term(env, o, out)) != 0)
        return rc < 0 ? -1 : 0;
    if (!PyModule_Check(o) && PyObject_HasAttrString(o, "tolist")) { /* numpy */
        if (!(r = PyObject_CallMethod(o, "tolist", NULL)))
            return -1;
        rc = to_term(env, r, out, depth + 1);
        Py_DECREF(r);
        return rc;
    }
    if (PyIndex_Check(o)) {
        if (!(r = PyNumber_Index(o)))
            return -1;
        rc = int_term(env, r, out);
        Py_DECREF(r);
        return rc;
    }
    if (!(r = PyObject_Str(o)))
        return -1;
    rc = pyc_str_term(env, r, out);
    Py_DECREF(r);
    return rc;
}

static int to_term(ErlNifEnv *env, PyObject *o, ERL_NIF_TERM *out, int depth)
{
    ErlNifPid pid;

    PyTypeObject *tp = Py_TYPE(o);

    if (depth > PYC_MAX_DEPTH || ((depth & 15) == 15 && pyc_stack_short())) {
        too_deep();
        return -1;
    }
    /* The exact built-in types first: no subtype checks on the way. */
    if (tp == &PyLong_Type)
        return int_term(env, o, out);
    if (tp == &PyUnicode_Type)
        return pyc_str_term(env, o, out);
    if (tp == &PyFloat_Type)
        return float_term(env, PyFloat_AS_DOUBLE(o), out);
    if (tp == &PyDict_Type)
        return dict_term(env, o, out, depth);
    if (tp == &PyList_Type)
        return seq_term(env, o, 1, out, depth);
    if (tp == &PyTuple_Type)
        return seq_term(env, o, 0, out, depth);
    if (o == Py_None) {
        *out = ATOMS.none;
        return 0;
    }
    if (o == Py_True) {
        *out = ATOMS.true;
        return 0;
    }
    if (o == Py_False) {
        *out = ATOMS.false;
        return 0;
    }
    if (PyLong_Check(o))
        return int_term(env, o, out);
    if (PyFloat_Check(o))
        return float_term(env, PyFloat_AS_DOUBLE(o), out);
    if (PyUnicode_Check(o))
        return pyc_str_term(env, o, out);
    if (PyBytes_Check(o)) {
        if (PyBytes_GET_SIZE(o) >= PYB_SHARE_MIN && PyBytes_CheckExact(o))
            return pyb_share_bytes(env, o, out); /* no copy: bytes are immutable */
        return make_binary(env, PyBytes_AS_STRING(o), PyBytes_GET_SIZE(o), out);
    }
    if (PyByteArray_Check(o))
        return make_binary(env, PyByteArray_AS_STRING(o), PyByteArray_GET_SIZE(o), out);
    if (PyList_Check(o))
        return seq_term(env, o, 1, out, depth);
    if (PyTuple_Check(o))
        return seq_term(env, o, 0, out, depth);
    if (PyDict_Check(o))
        return dict_term(env, o, out, depth);
    if (PyAnySet_Check(o))
        return iter_term(env, o, out, depth);
    if (pyp_pid_get(o, &pid)) {
        *out = enif_make_pid(env, &pid);
        return 0;
    }
    return fallback_term(env, o, out, depth);
}

int pyc_to_term(ErlNifEnv *env, PyObject *o, ERL_NIF_TERM *out)
{
    int rc = to_term(env, o, out, 0);
    memo_clear();
    return rc;
}

/* Drains an iterable into a list (stream results). */
int pyc_iter_to_term(ErlNifEnv *env, PyObject *o, ERL_NIF_TERM *out)
{
    int rc = iter_term(env, o, out, 0);
    memo_clear();
    return rc;
}
