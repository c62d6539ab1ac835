"""Helpers for py_fault_SUITE (imported through the python_path app env).

Counters are files of one byte per bump, in a directory of this OS process:
every worker sees them, whether the workers share one interpreter or each
has its own (execution_mode subinterp, where module globals are per
worker), so a test can tell from Python's side which requests really ran."""
import os
import tempfile
import time

import erlang

_dir = os.path.join(tempfile.gettempdir(), "py_fault_counters.%d" % os.getpid())
os.makedirs(_dir, exist_ok=True)


def _path(name):
    return os.path.join(_dir, name.encode().hex())


def reset():
    for f in os.listdir(_dir):
        os.unlink(os.path.join(_dir, f))


def bump(name):
    fd = os.open(_path(name), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, b"x")  # one append: atomic between threads and interpreters
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


def count(name):
    try:
        return os.stat(_path(name)).st_size
    except FileNotFoundError:
        return 0


def sleep_marked(pid, tag, secs):
    """Tells pid it started, then sleeps in C (not interruptible).  Counts
    'sleep_exit' when the sleep is over, also when an interruption that
    came meanwhile is raised right after it; 'sleep_done' when it returns."""
    try:  # the interruption may come as soon as pid knows (even before sleep)
        erlang.send(pid, ('started', tag))
        time.sleep(secs)
    except BaseException:
        bump('sleep_exit')
        raise
    bump('sleep_exit')
    bump('sleep_done')
    return tag


def spin_marked(pid, tag, secs):
    """Tells pid it started, then spins in Python (interruptible) for secs."""
    end = time.monotonic() + secs
    try:  # the interruption may come as soon as pid knows
        erlang.send(pid, ('started', tag))
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
    end = time.monotonic() + secs
    sent = False
    while True:
        try:
            if not sent:  # the interruption may come as soon as pid knows
                sent = True
                erlang.send(pid, ('started', tag))
            while time.monotonic() < end:
                pass
            break
        except BaseException:
            bump('swallowed')
    bump('stubborn_exit')
    return tag
