"""Helpers for py_fastpath_SUITE (the hand-over and borrowed-request paths)."""
import ctypes
import os
import tempfile
import threading
import time

import erlang

_hog = None


def hold_gil_later(delay, hold):
    """Starts a thread that, after `delay` seconds, holds the GIL for `hold`
    seconds without running Python: a C call made through ctypes.PyDLL
    keeps the GIL, and usleep() uses no CPU meanwhile."""
    global _hog
    libc = ctypes.PyDLL(None)

    def run():
        time.sleep(delay)
        libc.usleep(int(hold * 1e6))

    _hog = threading.Thread(target=run)  # no daemon: a sub-interpreter allows none
    _hog.start()
    return True


def stop_gil_hog():
    if _hog is not None:
        _hog.join()
    return True


def digest(doc):
    """A summary of a request that depends on every part of it."""
    xs = doc["xs"]
    return [sum(xs), len(xs), doc["name"], sorted(doc["tags"].items())]


def records(n):
    """n dicts sharing the same key objects."""
    a, b, c = "alpha", "beta", "gamma"
    return [{a: i, b: str(i), c: [i, float(i)]} for i in range(n)]


class SendsWhileConverted:
    """Its str() converts another dict with the same key object, for
    erlang.send, while the result holding it is being converted."""

    def __init__(self, pid, key):
        self.pid = pid
        self.key = key

    def __str__(self):
        erlang.send(self.pid, {self.key: 99, "other": [self.key]})
        return "sent"


def shared_key_around_nested_conversion(pid):
    key = "k"
    return [{key: 1}, SendsWhileConverted(pid, key), {key: 2}, {key: 3, "x": key}]


class SlowToFree:
    """A result whose finalizer takes a second (sleeping, the GIL released):
    it runs after the reply was sent, on the worker that answered."""

    def __str__(self):
        return "slow"

    def __del__(self):
        time.sleep(1.0)
        open(_FINALIZED, "w").close()


# A file, not a module global: with sub-interpreters (execution_mode
# subinterp) the worker that asks is not the one that freed, and each has
# its own module.
_FINALIZED = os.path.join(tempfile.gettempdir(), "py_fastpath_finalized.%d" % os.getpid())


def slow_to_free():
    if os.path.exists(_FINALIZED):
        os.unlink(_FINALIZED)
    return SlowToFree()


def was_finalized():
    return os.path.exists(_FINALIZED)
