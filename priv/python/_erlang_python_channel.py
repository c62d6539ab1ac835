"""The Python side of erlang_python channels (py_channel), beyond what the
C type erlang.Channel has (receive, try_receive, closed, len()).

install(Channel) is called once per interpreter by the NIF when it makes
the type (c_src/py_channel.c): it adds sync and async iteration and
async_receive, and returns the ByteChannel class, the file-like object a
byte channel (py_channel:new(#{type => bytes})) arrives as.

Ends: py_channel:close/1 is a clean end (iteration stops, read() returns
b''), after every queued message was received; the owner's exit is not
(erlang.ChannelClosed is raised, even from iteration)."""
import io

import erlang


def _closed_cleanly(ch):
    """True when ch ended by py_channel:close (raise otherwise)."""
    return not ch.aborted


# ---- async receivers: one eventfd reader per (loop, channel) -------------

_async = {}  # (loop, fd) -> set of futures waiting


def _wake(key, ch):
    ch._clear_event()
    for fut in list(_async.get(key, ())):
        if not fut.done():
            fut.set_result(None)


async def _async_receive(self, timeout=None):
    """await ch.async_receive(timeout=None): the next message, waiting in
    the running event loop (no thread blocked, no polling); TimeoutError
    after timeout seconds; erlang.ChannelClosed once closed and drained."""
    import asyncio
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    while True:
        ok, value = self._poll()
        if ok:
            return value
        fd = self._eventfd()
        key = (loop, fd)
        waiters = _async.get(key)
        if waiters is None:
            waiters = _async[key] = set()
            loop.add_reader(fd, _wake, key, self)
        fut = loop.create_future()
        waiters.add(fut)
        try:
            ok, value = self._poll()  # it may have come before the reader was added
            if ok:
                return value
            if deadline is None:
                await fut
            else:
                left = deadline - loop.time()
                if left <= 0:
                    raise TimeoutError("no message on the channel in time")
                await asyncio.wait_for(fut, left)
        finally:
            waiters.discard(fut)
            if not waiters:
                _async.pop(key, None)
                loop.remove_reader(fd)


def _next(self):
    try:
        return self.receive()
    except erlang.ChannelClosed:
        if _closed_cleanly(self):
            raise StopIteration from None
        raise


async def _anext(self):
    try:
        return await self.async_receive()
    except erlang.ChannelClosed:
        if _closed_cleanly(self):
            raise StopAsyncIteration from None
        raise


class ByteChannel(io.RawIOBase):
    """A byte channel as a readable binary file: read(n), readline(),
    iteration over lines, readinto (so io.BufferedReader and
    io.TextIOWrapper work over it; text() makes the latter, for csv and
    other readers of str).  Reads wait for data (GIL released) as Erlang
    sends it; the end of file is py_channel:close/1.  read(n) returns as
    soon as some bytes are there (at most n), as a raw file does."""

    def __init__(self, channel):
        super().__init__()
        self._channel = channel
        self._buf = bytearray()
        self._eof = False

    def readable(self):
        return True

    @property
    def channel(self):
        return self._channel

    def _fill(self):
        """Appends the next chunk; False at the end of the data."""
        if self._eof:
            return False
        try:
            chunk = self._channel.receive()
        except erlang.ChannelClosed:
            if not _closed_cleanly(self._channel):
                raise
            self._eof = True
            return False
        self._buf += chunk
        return True

    def _take(self, n):
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def read(self, size=-1):
        if size is None or size < 0:
            return self.readall()
        if size == 0:
            return b""
        while not self._buf and self._fill():
            pass
        return self._take(size)

    def readall(self):
        while self._fill():
            pass
        return self._take(len(self._buf))

    def readinto(self, b):
        data = self.read(len(b))
        n = len(data)
        b[:n] = data
        return n

    def readline(self, size=-1):
        start = 0
        while True:
            i = self._buf.find(b"\n", start)
            if i >= 0:
                n = i + 1
                break
            if size is not None and 0 <= size <= len(self._buf):
                n = size
                break
            start = len(self._buf)
            if not self._fill():
                n = len(self._buf)
                break
        if size is not None and size >= 0:
            n = min(n, size)
        return self._take(n)

    def text(self, encoding="utf-8", errors="strict", newline=None):
        """The channel as a text file (io.TextIOWrapper): for csv.reader and
        other readers of str."""
        return io.TextIOWrapper(io.BufferedReader(self), encoding=encoding, errors=errors,
                                newline=newline)

    def __repr__(self):
        return "<erlang.ByteChannel %r>" % (self._channel,)


def install(channel_type):
    channel_type.async_receive = _async_receive
    channel_type.__iter__ = lambda self: self
    channel_type.__next__ = _next
    channel_type.__aiter__ = lambda self: self
    channel_type.__anext__ = _anext
    return ByteChannel
