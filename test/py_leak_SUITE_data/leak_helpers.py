"""Helpers for py_leak_SUITE (imported through the python_path app env)."""
import gc
import sys
import weakref


class Blob:
    """Something a weak reference can watch."""

    def __init__(self, size=0):
        self.data = bytearray(size)


_watched = []


def watch(obj):
    _watched.append(weakref.ref(obj))
    return len(_watched)


def alive():
    gc.collect()
    return sum(1 for r in _watched if r() is not None)


def unwatch_all():
    del _watched[:]


class Sentinel:
    def __str__(self):
        return 'sentinel'


SENTINEL = Sentinel()
STORED_ERROR = ValueError('stored')


def sentinel():
    return SENTINEL


def sentinel_in(x):
    return [x, SENTINEL, {'s': SENTINEL}]


def raise_stored():
    raise STORED_ERROR


def refcounts():
    return [sys.getrefcount(SENTINEL), sys.getrefcount(STORED_ERROR)]


def echo(*args, **kwargs):
    return [list(args), kwargs]


def squares(n):
    for i in range(n):
        yield i * i


def malloc_trim():
    # glibc keeps freed memory resident: up to its trim threshold at the
    # top of each heap, which a large free earlier in the run (another
    # suite's 64 MiB binary) raises to as much as 64 MiB.  Giving it back
    # makes the RSS readings show the memory in use, so growth shows.
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (ImportError, OSError, AttributeError):
        pass


def census():
    """(tracked objects, allocated blocks) after a full collection."""
    gc.collect()
    n = len(gc.get_objects())
    return [n, sys.getallocatedblocks()]
