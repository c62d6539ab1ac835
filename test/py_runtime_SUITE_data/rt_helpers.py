"""Python side of py_runtime_SUITE: coroutines, async generators, memory,
parallel and overload helpers, numpy."""
import asyncio
import gc
import importlib
import threading
import time

import erlang

# ---- asyncio ---------------------------------------------------------------


async def sleep_square(i, delay=0.3):
    """Sleeps delay seconds, then returns [i, i * i]."""
    await asyncio.sleep(delay)
    return [i, i * i]


async def sleep_then_fail(delay, message):
    await asyncio.sleep(delay)
    raise ValueError(message)


async def sleep_then_key_error(delay):
    await asyncio.sleep(delay)
    raise KeyError("missing")


async def tagged(tag, delay):
    """Returns tag after delay seconds (ordering tests)."""
    await asyncio.sleep(delay)
    return tag


async def with_kwargs(a, b=0, *, scale=1):
    await asyncio.sleep(0)
    return (a + b) * scale


def not_a_coroutine(x):
    return x + 1


def sync_generator(n):
    yield from range(n)


async def count_up(n, delay=0.01, *, start=0):
    """Async generator: start, start + 1, ... n values, a pause between."""
    for i in range(start, start + n):
        await asyncio.sleep(delay)
        yield i


async def fail_after(n):
    """Async generator raising after n items."""
    for i in range(n):
        await asyncio.sleep(0.01)
        yield i
    raise RuntimeError("generator failed after %d" % n)


async def empty_agen():
    return
    yield  # noqa: unreachable, makes this an async generator


async def call_erlang(name, x):
    """Calls back into Erlang from the event loop thread."""
    await asyncio.sleep(0.01)
    value = erlang.call(name, x)
    await asyncio.sleep(0.01)
    return [value, threading.get_ident()]


async def call_erlang_catching(name, x):
    """Calls a failing Erlang function and reports the exception type."""
    try:
        erlang.call(name, x)
    except erlang.ErlangError as e:
        return ["caught", type(e).__name__]
    return ["not raised"]


def call_erlang_sync(name, x, delay=0):
    """Calls back into Erlang from a worker (a plain function), after a pause."""
    time.sleep(delay)
    return erlang.call(name, x)


# ---- memory ----------------------------------------------------------------


class Node:
    def __init__(self):
        self.other = None


def make_cycles(n):
    """Creates n unreachable two-object reference cycles, with automatic
    collection disabled so that only an explicit collection frees them."""
    gc.disable()
    for _ in range(n):
        a, b = Node(), Node()
        a.other, b.other = b, a
    return n


def gc_enable():
    gc.enable()
    return gc.isenabled()


_held = []


def hold_memory(count):
    """Keeps count distinct strings of 100 chars alive (about 150 B each)."""
    _held.append([("%d" % i).rjust(100, "x") for i in range(count)])
    return len(_held)


def drop_memory():
    _held.clear()
    return 0


# ---- parallel / overload ----------------------------------------------------


def sleep_tag(delay, tag):
    """Sleeps, then returns [tag, thread ident]."""
    time.sleep(delay)
    return [tag, threading.get_ident()]


def thread_id():
    return threading.get_ident()


def fail(message):
    raise ValueError(message)


def sleep_then_fail_sync(delay, message):
    time.sleep(delay)
    raise ValueError(message)


# ---- venv ------------------------------------------------------------------


def try_import(name, delay=0):
    """[module.VALUE or "ModuleNotFoundError", thread ident], after a pause
    (so that concurrent calls spread over the workers)."""
    time.sleep(delay)
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError:
        return ["ModuleNotFoundError", threading.get_ident()]
    return [getattr(module, "VALUE", None), threading.get_ident()]


# ---- numpy -----------------------------------------------------------------


def np_work(n, delay):
    """A numpy computation on this worker: sum of squares of 0..n-1, plus
    the worker's thread ident; sleeps so that concurrent calls spread."""
    import numpy as np
    time.sleep(delay)
    a = np.arange(n, dtype=np.int64)
    return [int((a * a).sum()), threading.get_ident()]


def np_scalars():
    import numpy as np
    return {
        "int64": np.int64(7),
        "int32": np.int32(-3),
        "uint8": np.uint8(255),
        "int64_big": np.int64(2 ** 62),
        "float32": np.float32(1.5),
        "float64": np.float64(2.25),
        "bool_true": np.bool_(True),
        "bool_false": np.bool_(False),
        "sum": np.arange(5).sum(),
        "mean": np.array([1.0, 2.0, 3.0, 6.0]).mean(),
    }
