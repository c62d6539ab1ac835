/* py_compat.h — the CPython internals that the fast paths use, each behind
 * a version guard.  Debian's 3.11 is the default build; 3.12 and 3.13 (the
 * pyenv builds) are built with `make PY=3.12|3.13`.  Header only, below
 * every unit that includes Python.h.  GIL held. */
#ifndef PYN_PY_COMPAT_H
#define PYN_PY_COMPAT_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* An exact int of one digit (|v| < 2**30), read without a call: 1 with *v
 * set, else 0.  3.12 changed the layout of PyLongObject (PEP 683's and the
 * compact-int work) and gave the unstable API for exactly this test. */
static inline int pyk_long_small(PyObject *o, long long *v)
{
#if PY_VERSION_HEX >= 0x030C0000
    if (!PyUnstable_Long_IsCompact((PyLongObject *)o))
        return 0;
    *v = (long long)PyUnstable_Long_CompactValue((PyLongObject *)o);
    return 1;
#else
    if (Py_SIZE(o) < -1 || Py_SIZE(o) > 1)
        return 0;
    *v = (long long)Py_SIZE(o) * (long long)((PyLongObject *)o)->ob_digit[0];
    return 1;
#endif
}

/* The magnitude of a non-negative int as n little-endian bytes, unsigned;
 * 0, or -1 with OverflowError.  3.13 added a with_exceptions argument (and
 * the public PyLong_AsNativeBytes, which sign-extends: not wanted here). */
static inline int pyk_long_as_bytes(PyObject *a, unsigned char *buf, size_t n)
{
#if PY_VERSION_HEX >= 0x030D0000
    return _PyLong_AsByteArray((PyLongObject *)a, buf, n, 1, 0, 1);
#else
    return _PyLong_AsByteArray((PyLongObject *)a, buf, n, 1, 0);
#endif
}

/* A dict's version tag: changes on every mutation.  Deprecated by PEP 699
 * from 3.12 (no longer promised to be unique across dicts), but still
 * updated on every change in 3.12 and 3.13, which is all the callable
 * cache needs (its entries also keep their dict alive). */
static inline uint64_t pyk_dict_version(PyObject *d)
{
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    return ((PyDictObject *)d)->ma_version_tag;
#pragma GCC diagnostic pop
}

#endif
