"""Stand-in for the `mymodule' of the original library's guides."""
import asyncio
import time


def slow_func():
    time.sleep(0.05)
    return "done"


def generate_data(*args):
    for a in args:
        yield a


def read_lines(path):
    yield from ("line 1 of %s" % path, "line 2 of %s" % path)


async def async_generator(*args):
    for a in args:
        await asyncio.sleep(0)
        yield a


def embed_batch(batch):
    return [[float(len(doc))] for doc in batch]
