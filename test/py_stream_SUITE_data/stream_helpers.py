"""Generators for py_stream_SUITE and py_channel_SUITE."""
import asyncio
import itertools
import time

import erlang


def numbers(n):
    for i in range(n):
        yield i


def words(text, upper=False):
    for w in text.split():
        yield w.upper() if upper else w


def gated(first, gate):
    """Yields first, then waits for the gate channel before the rest: the
    test sees the first value while the generator is still running."""
    yield first
    for token in gate:
        yield token


def closing(pid, n=None):
    """Counts up; tells pid when it is closed (its finally block)."""
    try:
        for i in itertools.count() if n is None else range(n):
            yield i
    finally:
        erlang.send(pid, ("closed", "sync"))


def sleepy(pid, step):
    """Yields one value, then works for a long time between values."""
    try:
        yield 0
        while True:
            for _ in range(int(step / 0.01)):  # Python code between short sleeps
                time.sleep(0.01)
            yield 1
    finally:
        erlang.send(pid, ("closed", "sleepy"))


async def acount(n, pid=None):
    try:
        for i in range(n):
            await asyncio.sleep(0)
            yield i * 10
    finally:
        if pid is not None:
            erlang.send(pid, ("closed", "async"))


def failing(after):
    for i in range(after):
        yield i
    raise ValueError("boom after %d" % after)


def not_iterable():
    return 42


def slow_second(delay):
    yield "first"
    time.sleep(delay)
    yield "second"


def every(interval, n):
    for i in range(n):
        time.sleep(interval)
        yield i


def calls_back(n):
    for i in range(n):
        yield erlang.call("stream_double", i)


def announced(pid):
    """Tells pid of each value before it is produced: how far the
    generator was advanced."""
    for i in itertools.count():
        erlang.send(pid, ("producing", i))
        yield i


async def await_forever(pid):
    """Yields once, then awaits for ever; tells pid when it is closed."""
    try:
        yield "first"
        await asyncio.sleep(3600)
        yield "never"
    finally:
        erlang.send(pid, ("closed", "awaiting"))


def calls_back_when_closed(pid):
    """Its finally block calls back into Erlang, then tells pid."""
    try:
        for i in itertools.count():
            yield i
    finally:
        erlang.send(pid, ("closed", erlang.call("stream_double", 21)))
