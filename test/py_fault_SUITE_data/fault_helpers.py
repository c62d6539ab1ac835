"""Helpers for py_fault_SUITE (imported through the python_path app env).

Counters are module globals shared by every worker (one interpreter), so a
test can tell from Python's side which requests really ran."""
import threading
import time

import erlang

_lock = threading.Lock()
_counters = {}


def reset():
    with _lock:
        _counters.clear()


def bump(name):
    with _lock:
        _counters[name] = _counters.get(name, 0) + 1
        return _counters[name]


def count(name):
    with _lock:
        return _counters.get(name, 0)


def sleep_marked(pid, tag, secs):
    """Tells pid it started, then sleeps in C (not interruptible).  Counts
    'sleep_exit' when the sleep is over, also when an interruption that
    came meanwhile is raised right after it; 'sleep_done' when it returns."""
    erlang.send(pid, ('started', tag))
    try:
        time.sleep(secs)
    except BaseException:
        bump('sleep_exit')
        raise
    bump('sleep_exit')
    bump('sleep_done')
    return tag


def spin_marked(pid, tag, secs):
    """Tells pid it started, then spins in Python (interruptible) for secs."""
    erlang.send(pid, ('started', tag))
    end = time.monotonic() + secs
    try:
        while time.monotonic() < end:
            pass
    except BaseException:
        bump('spin_interrupted')
        raise
    bump('spin_done')
    return tag


def stubborn(pid, tag, secs):
    """Spins for secs, swallowing every interruption (erlang.Interrupted is a
    BaseException), so that the worker must be replaced."""
    erlang.send(pid, ('started', tag))
    end = time.monotonic() + secs
    while True:
        try:
            while time.monotonic() < end:
                pass
            break
        except BaseException:
            bump('swallowed')
    bump('stubborn_exit')
    return tag
