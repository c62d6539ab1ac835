"""Consumers for py_channel_SUITE."""
import asyncio
import csv
import json
import sys

import erlang


def total(ch):
    return sum(ch)


def collect(ch):
    return list(ch)


def take(ch, n, timeout=None):
    return [ch.receive(timeout) for _ in range(n)]


def wait_one(ch, timeout=None):
    return ch.receive(timeout)


def poll(ch):
    return ch.try_receive()


def receive_after_close(ch):
    drained = list(ch)
    try:
        ch.receive()
    except erlang.ChannelClosed as e:
        return (drained, "ChannelClosed", str(e))
    return (drained, "no error")


def fail_after(ch, n):
    for i, _ in enumerate(ch):
        if i + 1 == n:
            raise RuntimeError("consumer failed after %d" % n)


def is_channel(ch):
    from erlang import Channel
    return (isinstance(ch, erlang.Channel), Channel(ch) is ch, len(ch), ch.closed, ch.is_bytes)


def async_total(ch):
    async def run():
        return sum([x async for x in ch])
    return asyncio.run(run())


def async_take(ch, n, timeout=None):
    async def run():
        return [await ch.async_receive(timeout) for _ in range(n)]
    return asyncio.run(run())


def async_two_readers(ch, n):
    """Two tasks of one loop reading one channel: every message once."""
    async def reader():
        got = []
        try:
            while True:
                got.append(await ch.async_receive())
        except erlang.ChannelClosed:
            return got

    async def run():
        a, b = await asyncio.gather(reader(), reader())
        return sorted(a + b)
    return asyncio.run(run())


def json_load(ch):
    return json.load(ch)


def csv_rows(ch):
    return [row for row in csv.reader(ch.text())]


def lines(ch):
    return [line for line in ch]


def read_parts(ch):
    return (ch.read(3), ch.readline(), ch.read())


def consume_forever(ch):
    for _ in ch:
        pass
    return "ended"


def echo(ch):
    return ch


# ---- buffers ------------------------------------------------------------

def buffer_facts(b):
    m = memoryview(b)
    return (type(b).__name__, len(b), m.readonly, m.nbytes, bytes(m[:4]), bytes(b) == bytes(m))


def buffer_write(b):
    memoryview(b)[0] = 1


def same_memory(a, b):
    """Whether two buffers show one memory (numpy reports the address)."""
    import numpy
    return (numpy.frombuffer(a, dtype=numpy.uint8).__array_interface__["data"][0] ==
            numpy.frombuffer(b, dtype=numpy.uint8).__array_interface__["data"][0])


def numpy_sum(b):
    import numpy
    return int(numpy.frombuffer(b, dtype=numpy.uint8).sum())


_kept = {}


def keep_bytes(name, size):
    _kept[name] = b"k" * size
    return sys.getrefcount(_kept[name])


def kept(name):
    return _kept[name]


def kept_refcount(name):
    return sys.getrefcount(_kept[name])


def make_bytearray(size):
    global _last_array
    _last_array = bytearray(b"a" * size)
    return _last_array


def mutate_bytearray():
    _last_array[0:1] = b"Z"
    return bytes(_last_array[:1])


def released_view(b):
    """A view of b, released, once nothing else holds b."""
    m = memoryview(b)
    m.release()
    del b
    return m
