"""Python side of py_callback_SUITE: functions that call back into Erlang."""
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import erlang


def chain(n, tag, pause=0.0):
    """One Python level of a Python -> Erlang -> Python chain.

    Returns [[tag, level, thread ident], ...] for this level and every level
    below it; the Erlang function 'chain_down' calls chain(n - 1, ...) back.
    """
    me = [tag, n, threading.get_ident()]
    if n == 0:
        if pause:
            time.sleep(pause)
        return [me]
    return [me] + erlang.chain_down(n, tag, pause)


def echo_via_erlang(value):
    """Sends value through the Erlang function 'cb_echo' and back."""
    return erlang.cb_echo(value)


def threads_call(count):
    """count threading.Threads each calling erlang.cb_thread_fn(i) at once."""
    results = [None] * count
    errors = []
    start = threading.Barrier(count)

    def run(i):
        try:
            start.wait()
            results[i] = erlang.cb_thread_fn(i)
        except BaseException as e:  # report, do not lose it
            errors.append(repr(e))

    ts = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise RuntimeError("thread errors: %s" % errors)
    return results


def pool_map(count, workers=8, name='square'):
    """A ThreadPoolExecutor mapping the Erlang function name over range(count)."""
    with ThreadPoolExecutor(max_workers=workers) as ex:
        return list(ex.map(getattr(erlang, name), range(count)))


def call_name(name, *args):
    """erlang.call(name, *args), exceptions propagating."""
    return erlang.call(name, *args)


def noop_loop(n):
    """n calls of erlang.noop(); the elapsed nanoseconds."""
    noop = erlang.noop
    t0 = time.perf_counter_ns()
    for _ in range(n):
        noop()
    return time.perf_counter_ns() - t0


def catch_call(name, *args):
    """Calls erlang.<name>(*args); ['ok', value] or [exception class, message]."""
    try:
        return ['ok', erlang.call(name, *args)]
    except erlang.ErlangError as e:
        return ['ErlangError', str(e), isinstance(e, Exception)]
    except Exception as e:
        return [type(e).__name__, str(e)]
