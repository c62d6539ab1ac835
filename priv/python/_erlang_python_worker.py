"""The program of an isolated worker (execution_mode isolated): CPython in an
OS process of its own, run by one worker of the pool (c_src/exec_isolated.c).

    python3 _erlang_python_worker.py FD PARENT_PID MAX_MEMORY_MB SHARED_FD [CODEC]

FD is this end of a socket pair; PARENT_PID the shell that started this
process and reports its exit status to the pool; SHARED_FD a page shared
with the pool (its first 32-bit word, native order: the number of the
request an interrupt is meant for, requests counted from 1); CODEC the path
of _erlang_python_codec.so, the C codec (else the Python one below is
used).  Each message either way is a frame: a 4-byte big-endian length,
then one term in Erlang's external term format.

  pool -> worker   {Kind, Request}     Kind: call | eval | exec | setup |
                                       wipe | clear_caches; Request as the
                                       in-process executors get it
  worker -> pool   {ok, Value} | ok    the answer
                   {'$py_error_raw', TypeName, Builtin, Message, Traceback}
                   {'$py_send', Pid, Message}   erlang.send, then go on
                   {'$py_call', Name, Args}     erlang.call: then wait for
  pool -> worker   {'$py_reply', Reply}         its reply, running the
                                       requests that come meanwhile (py
                                       calls the Erlang function makes)

SIGUSR1 interrupts the request that runs if the page names it
(erlang.Interrupted is raised in it, as the in-process interrupt does); a
signal meant for a request that has ended is dropped.  A process forked
from the worker closes FD and SHARED_FD: only the worker talks on them.
The worker exits when the pool's end of the socket closes, and is killed
by the kernel when its shell ends (PR_SET_PDEATHSIG), which is killed when
the pool's thread that started it ends: none outlives the node.

The conversions follow docs/types.md; what they cannot carry (a fun, a
port, a reference) is refused with TypeError, as in process."""
import os
import signal
import struct
import sys
import types

# ---- the external term format ---------------------------------------------

_NONE_ATOMS = {"none", "nil", "undefined"}
_pack_len = struct.Struct(">I").pack
_unpack_len = struct.Struct(">I").unpack_from
_unpack_float = struct.Struct(">d").unpack_from
_pack_float = struct.Struct(">d").pack
_unpack_seq = struct.Struct("=I").unpack_from


class Pid:
    """An Erlang pid: its external format, kept as it came."""
    __slots__ = ("_etf",)

    def __init__(self, etf):
        self._etf = bytes(etf)

    def __eq__(self, other):
        return isinstance(other, Pid) and other._etf == self._etf

    def __hash__(self):
        return hash(self._etf)

    def __repr__(self):
        b = self._etf
        try:
            # NEW_PID_EXT: tag, node atom, ID, Serial, Creation
            if b[0] == 88 and b[1] in (118, 119, 100, 115):
                if b[1] in (119, 115):
                    n, pos = b[2], 3
                else:
                    n, pos = (b[2] << 8) | b[3], 4
                pos += n
                num, serial = struct.unpack_from(">II", b, pos)
                return "erlang.Pid('<0.%d.%d>')" % (num, serial)
        except (IndexError, struct.error):
            pass
        return "erlang.Pid(%r)" % (b,)


class Atom(str):
    """Text sent as an atom (the answer's tags; they exist in the node)."""
    __slots__ = ()


OK = Atom("ok")
_RAW_ERROR = Atom("$py_error_raw")
_SEND = Atom("$py_send")
_CALL = Atom("$py_call")
_REPLY = Atom("$py_reply")
_SELF = Atom("$py_self")
_ERROR = Atom("error")
_NAME_ERROR = Atom("name_error")
_CANCELLED = Atom("cancelled")
_TOO_DEEP = Atom("too_deep")
_NOT_RUNNING = Atom("not_running")


def _atom(text):
    if text == "true":
        return True
    if text == "false":
        return False
    if text in _NONE_ATOMS:
        return None
    return text


def decode(data):
    """The term in data (which starts with 131) as a Python object."""
    if not data or data[0] != 131:
        raise ValueError("not an external term")
    value, pos = _decode(data, 1)
    return value


def _utf8_or_bytes(b):
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return b


def _decode(d, pos):
    tag = d[pos]
    pos += 1
    if tag == 97:  # SMALL_INTEGER_EXT
        return d[pos], pos + 1
    if tag == 98:  # INTEGER_EXT
        return struct.unpack_from(">i", d, pos)[0], pos + 4
    if tag == 109:  # BINARY_EXT
        (n,) = _unpack_len(d, pos)
        pos += 4
        return _utf8_or_bytes(bytes(d[pos:pos + n])), pos + n
    if tag in (119, 115):  # SMALL_ATOM_UTF8_EXT, SMALL_ATOM_EXT
        n = d[pos]
        pos += 1
        enc = "utf-8" if tag == 119 else "latin-1"
        return _atom(bytes(d[pos:pos + n]).decode(enc)), pos + n
    if tag in (118, 100):  # ATOM_UTF8_EXT, ATOM_EXT
        n = (d[pos] << 8) | d[pos + 1]
        pos += 2
        enc = "utf-8" if tag == 118 else "latin-1"
        return _atom(bytes(d[pos:pos + n]).decode(enc)), pos + n
    if tag in (104, 105):  # SMALL_TUPLE_EXT, LARGE_TUPLE_EXT
        if tag == 104:
            n = d[pos]
            pos += 1
        else:
            (n,) = _unpack_len(d, pos)
            pos += 4
        if n == 2:
            raw = _tagged_binary(d, pos)
            if raw is not None:
                return raw
        items = []
        for _ in range(n):
            v, pos = _decode(d, pos)
            items.append(v)
        return tuple(items), pos
    if tag == 106:  # NIL_EXT
        return [], pos
    if tag == 108:  # LIST_EXT
        (n,) = _unpack_len(d, pos)
        pos += 4
        items = []
        for _ in range(n):
            v, pos = _decode(d, pos)
            items.append(v)
        if d[pos] != 106:
            raise TypeError("an improper list cannot be converted")
        return items, pos + 1
    if tag == 107:  # STRING_EXT: a list of small integers
        n = (d[pos] << 8) | d[pos + 1]
        pos += 2
        return list(d[pos:pos + n]), pos + n
    if tag == 116:  # MAP_EXT
        (n,) = _unpack_len(d, pos)
        pos += 4
        out = {}
        for _ in range(n):
            k, pos = _decode(d, pos)
            v, pos = _decode(d, pos)
            out[_key(k)] = v
        return out, pos
    if tag == 70:  # NEW_FLOAT_EXT
        return _unpack_float(d, pos)[0], pos + 8
    if tag in (110, 111):  # SMALL_BIG_EXT, LARGE_BIG_EXT
        if tag == 110:
            n = d[pos]
            pos += 1
        else:
            (n,) = _unpack_len(d, pos)
            pos += 4
        sign = d[pos]
        v = int.from_bytes(d[pos + 1:pos + 1 + n], "little")
        return (-v if sign else v), pos + 1 + n
    if tag in (88, 103):  # NEW_PID_EXT, PID_EXT
        start = pos - 1
        _, pos = _decode(d, pos)  # the node
        pos += 12 if tag == 88 else 9
        return Pid(d[start:pos]), pos
    if tag == 77:
        raise TypeError("a bitstring whose size is not a whole number of bytes "
                        "cannot be converted")
    raise TypeError("this term cannot be converted to Python (external tag %d): "
                    "a fun, a port or a reference" % tag)


_TAGS = tuple(head + name for name in (b"bytes", b"buffer")
              for head in (bytes([100, 0, len(name)]), bytes([118, 0, len(name)]),
                           bytes([119, len(name)]), bytes([115, len(name)])))


_ATOM_TAGS = frozenset((100, 118, 119, 115))


def _tagged_binary(d, pos):
    """{bytes, Binary} and {buffer, Binary} at pos: (bytes, end), else None.
    (A buffer is copied into the worker process: bytes, read-only too.)"""
    if d[pos] not in _ATOM_TAGS or d[pos + 1] not in (0, 5, 6):
        return None
    for t in _TAGS:
        end = pos + len(t)
        if d[pos:end] == t and d[end] == 109:
            (n,) = _unpack_len(d, end + 1)
            start = end + 5
            return bytes(d[start:start + n]), start + n
    return None


def _key(k):
    if isinstance(k, list):
        raise TypeError("unhashable map key (a list)")
    if isinstance(k, dict):
        raise TypeError("unhashable map key (a map)")
    return k


def encode(obj):
    out = bytearray(b"\x83")
    _encode(obj, out, 0)
    return bytes(out)


def encode_frame(obj):
    """A frame: the length, then obj in the external term format."""
    payload = encode(obj)
    return _pack_len(len(payload)) + payload


_MAX_DEPTH = 10000
# The largest integer the node decodes, in bytes (OTP 25-27: 2**25 - 64
# bits); past it the answer is OverflowError, as in process.
_MAX_BIG_BYTES = 4194296


def _atom_ext(out, text):
    b = text.encode("utf-8")
    out.append(119)
    out.append(len(b))
    out += b


def _binary_ext(out, b):
    out.append(109)
    out += _pack_len(len(b))
    out += b


def _encode(o, out, depth):
    if depth > _MAX_DEPTH:
        raise ValueError("nesting deeper than %d levels" % _MAX_DEPTH)
    t = type(o)
    if t is Atom:
        _atom_ext(out, o)
    elif o is None:
        _atom_ext(out, "none")
    elif o is True or o is False:
        _atom_ext(out, "true" if o else "false")
    elif t is int or (isinstance(o, int) and not isinstance(o, bool)):
        o = int(o)
        if 0 <= o < 256:
            out.append(97)
            out.append(o)
        elif -2147483648 <= o <= 2147483647:
            out.append(98)
            out += struct.pack(">i", o)
        else:
            mag = abs(o)
            if (mag.bit_length() + 7) // 8 > _MAX_BIG_BYTES:
                raise OverflowError("integer too large for Erlang")
            b = mag.to_bytes((mag.bit_length() + 7) // 8, "little")
            if len(b) < 256:
                out.append(110)
                out.append(len(b))
            else:
                out.append(111)
                out += _pack_len(len(b))
            out.append(1 if o < 0 else 0)
            out += b
    elif t is float or isinstance(o, float):
        if o != o:
            _atom_ext(out, "nan")
        elif o == float("inf"):
            _atom_ext(out, "infinity")
        elif o == float("-inf"):
            _atom_ext(out, "neg_infinity")
        else:
            out.append(70)
            out += _pack_float(o)
    elif t is str or isinstance(o, str):
        _binary_ext(out, str.encode(o, "utf-8", "surrogatepass"))
    elif t is bytes or t is bytearray or isinstance(o, (bytes, bytearray)):
        _binary_ext(out, bytes(o))
    elif t is list or t is tuple or isinstance(o, (list, tuple)):
        n = len(o)
        if isinstance(o, tuple):
            if n < 256:
                out.append(104)
                out.append(n)
            else:
                out.append(105)
                out += _pack_len(n)
            for v in o:
                _encode(v, out, depth + 1)
        elif n == 0:
            out.append(106)
        else:
            out.append(108)
            out += _pack_len(n)
            for v in o:
                _encode(v, out, depth + 1)
            out.append(106)
    elif isinstance(o, dict):
        out.append(116)
        out += _pack_len(len(o))
        for k, v in o.items():
            _encode(k, out, depth + 1)
            _encode(v, out, depth + 1)
    elif isinstance(o, (set, frozenset)):
        _encode(list(o), out, depth)
    elif isinstance(o, Pid):
        out += o._etf
    else:
        _encode(_fallback(o), out, depth)


def _fallback(o):
    """Other objects, as in process (docs/types.md, "Other objects")."""
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "__index__"):
        import operator
        return operator.index(o)
    return str(o)


# ---- the erlang module, as far as a worker process has it ------------------

class ErlangError(Exception):
    """An Erlang function called from Python failed."""


class Interrupted(BaseException):
    """Raised in Python code whose Erlang caller gave up (timeout, exit, shutdown)."""


def _make_erlang_module(channel):
    mod = types.ModuleType("erlang", "The Erlang side, seen from an isolated worker.")
    mod.Pid = Pid
    mod.ErlangError = ErlangError
    mod.Interrupted = Interrupted
    mod.isolated = True
    worker = []  # the Worker, once made (it serves erlang.call's waits)

    def send(pid, message):
        """send(pid, message): sends message to an Erlang process."""
        if not isinstance(pid, Pid):
            raise TypeError("send(pid, message): pid must be an erlang.Pid")
        channel.write(encode_frame((_SEND, pid, message)))

    def call(name, *args):
        """call(name, *args): calls the Erlang function registered as name
        (py:register_function) and returns its result."""
        if not isinstance(name, str):
            raise TypeError("erlang.call(name, *args): name must be a str")
        if not worker or not worker[0].running or not _on_main_thread():
            raise ErlangError("erlang.call in an isolated worker is only available to the "
                              "request that runs (not from other threads)")
        return worker[0].call_erlang(name, list(args))

    def self_():
        """self(): the pid of the Erlang process whose request is running,
        or None (no request runs on this thread)."""
        if not worker or not worker[0].running or not _on_main_thread():
            return None
        reply = worker[0].ask(encode_frame((_SELF, None)))
        return reply[1] if isinstance(reply, tuple) and len(reply) == 2 else None

    def module_getattr(name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError("module 'erlang' has no attribute %r" % name)

        def function(*args):
            return call(name, *args)
        function.__name__ = function.__qualname__ = name
        function.__doc__ = "Calls the Erlang function registered as %r." % name
        return function

    # The shared state, through the functions the pool registers (as the
    # in-process module's helpers do, py_erlang_mod.c).
    def state_get(key, default=None):
        found, value = call("_py_state_fetch", key)
        return value if found else default

    def state_set(key, value):
        call("_py_state_store", key, value)

    def state_delete(key):
        call("_py_state_remove", key)

    def state_keys():
        return call("_py_state_keys")

    def state_clear():
        call("_py_state_clear")

    def state_incr(key, amount=1):
        return call("_py_state_incr", key, amount)

    def state_decr(key, amount=1):
        return call("_py_state_decr", key, amount)

    for fn in (send, call, state_get, state_set, state_delete, state_keys, state_clear,
               state_incr, state_decr):
        setattr(mod, fn.__name__, fn)
    mod.self = self_
    mod.__getattr__ = module_getattr
    mod._worker = worker
    return mod


def _is_reply(frame):
    """Whether a frame from the pool is {'$py_reply', Reply} (the node
    writes its atom in any of the four atom encodings)."""
    if frame[:3] != b"\x83h\x02":
        return False
    tag = frame[3:4]
    if tag in (b"s", b"w"):  # SMALL_ATOM_EXT, SMALL_ATOM_UTF8_EXT
        return frame[4:14] == b"\x09$py_reply"
    if tag in (b"d", b"v"):  # ATOM_EXT, ATOM_UTF8_EXT
        return frame[4:15] == b"\x00\x09$py_reply"
    return False


def _on_main_thread():
    import threading
    return threading.current_thread() is threading.main_thread()


# ---- framing ---------------------------------------------------------------

_USR1 = {signal.SIGUSR1}


class Channel:
    def __init__(self, fd):
        import threading
        self.fd = fd
        self.lock = threading.Lock()
        self.buf = b""  # bytes read ahead of the frame being taken

    def read(self):
        """The next frame's bytes; None at the end (the pool is gone).  A
        small frame comes in one read."""
        buf = self.buf
        while len(buf) < 4:
            more = self._read(65536)
            if not more:
                return None
            buf += more
        (n,) = _unpack_len(buf, 0)
        end = 4 + n
        if len(buf) < end:
            acc = bytearray(buf)  # a large frame: no quadratic concatenation
            while len(acc) < end:
                more = self._read(end - len(acc))
                if not more:
                    return None
                acc += more
            buf = bytes(acc)
        self.buf = buf[end:]
        return buf[4:end]

    def _read(self, n):
        while True:
            try:
                return os.read(self.fd, n)
            except InterruptedError:
                continue

    def write(self, data):
        """One frame (encode_frame's), whole: threads take turns
        (erlang.send from a thread), and no interrupt cuts it short (SIGUSR1
        is held back while it is written)."""
        with self.lock:
            old = signal.pthread_sigmask(signal.SIG_BLOCK, _USR1)
            try:
                view = memoryview(data)
                while view:
                    n = os.write(self.fd, view)
                    view = view[n:]
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, old)


# ---- running requests --------------------------------------------------------

# What a nested request answers when even its error cannot be made (out of
# stack): made now, while there is stack.
_TOO_DEEP_ANSWER = encode_frame((_RAW_ERROR, "RecursionError", True,
                                 "Erlang callbacks nested too deeply", ""))


class Worker:
    def __init__(self, channel, shared):
        self.channel = channel
        self.shared = shared  # the page: interrupt_seq at offset 0
        self.seq = 0  # requests read
        self.running = False
        self.modules = {}
        self.code_cache = {}
        self.globals = self._namespace()

    @staticmethod
    def _namespace():
        import builtins
        return {"__name__": "__main__", "__builtins__": builtins,
                "erlang": sys.modules["erlang"]}

    def interrupt(self, signum, frame):
        if self.running and _unpack_seq(self.shared, 0)[0] == self.seq & 0xFFFFFFFF:
            raise Interrupted("the Erlang caller gave up (timeout or exit)")

    def serve(self):
        while True:
            frame = self.channel.read()
            if frame is None:
                return
            self.seq += 1
            reply = self.handle(frame)
            self.channel.write(reply)

    def handle(self, frame, nested=False):
        """The answer frame to a request frame.  nested: a request the
        Erlang side made while this worker waits in erlang.call, where
        SIGUSR1 is held back; it is let through while this one runs."""
        outer = self.running
        try:
            self.running = True  # inside the try: an interrupt lands in it
            if nested:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, _USR1)
            kind, req = decode(frame)
            result = self.run(kind, req)
            return encode_frame(result)
        except BaseException as exc:  # noqa: B902 - every failure is an answer
            self.running = False
            return self.error(exc)
        finally:
            self.running = False  # first: no interrupt raises past here
            if nested:
                signal.pthread_sigmask(signal.SIG_BLOCK, _USR1)
            self.running = outer

    def ask(self, question):
        """Sends a question frame to the pool and returns the Reply of its
        {'$py_reply', Reply}, serving the frames that come meanwhile:
        requests the Erlang side makes (a py:call back from the Erlang
        function, to this same worker) run here, nested.  SIGUSR1 is held
        back while it waits, so that an interrupt cannot cut a frame in two;
        one for this request fires once the reply is in."""
        channel = self.channel
        old = signal.pthread_sigmask(signal.SIG_BLOCK, _USR1)
        try:
            channel.write(question)
            while True:
                frame = channel.read()
                if frame is None:  # the pool is gone
                    os._exit(0)
                if _is_reply(frame):
                    break
                self.seq += 1
                try:
                    answer = self.handle(frame, nested=True)
                except BaseException:  # noqa: B902 - out of stack, even for the error
                    answer = _TOO_DEEP_ANSWER
                channel.write(answer)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        return decode(frame)[1]

    def call_erlang(self, name, args):
        """erlang.call: the Erlang function's result, or its failure raised."""
        reply = self.ask(encode_frame((_CALL, name, args)))
        if isinstance(reply, tuple) and len(reply) == 2:
            tag, value = reply
            if tag == OK:
                return value
            if tag in (_ERROR, _NAME_ERROR):
                msg = value if isinstance(value, str) else \
                    value.decode("utf-8", "replace") if isinstance(value, bytes) else \
                    "Erlang callback failed"
                raise (NameError if tag == _NAME_ERROR else ErlangError)(msg)
        if reply == _CANCELLED:
            raise Interrupted("the Erlang caller gave up (timeout or exit)")
        if reply == _TOO_DEEP:
            raise RecursionError("Erlang callbacks nested too deeply")
        if reply == _NOT_RUNNING:
            raise ErlangError("erlang_python is not running")
        raise ErlangError("malformed callback reply")

    def error(self, exc):
        import traceback
        tp = type(exc)
        builtin = tp.__module__ == "builtins"
        try:
            msg = str(exc)
        except Exception:  # noqa: BLE001
            msg = "<exception str() failed>"
        try:
            tb = "".join(traceback.format_exception(tp, exc, exc.__traceback__, limit=50))
        except Exception:  # noqa: BLE001
            tb = ""
        return encode_frame((_RAW_ERROR, tp.__name__, builtin, msg, tb))

    def run(self, kind, req):
        if kind == "call":
            _, m, f, args, kwargs = req
            fn = self.resolve(m, f)
            value = fn(*args, **kwargs) if kwargs else fn(*args)
            return (OK, value)
        if kind == "eval":
            return (OK, self.code(req[1], req[2], "eval"))
        if kind == "exec":
            self.code(req[1], req[2], "exec")
            return OK
        if kind == "wipe":
            self.globals.clear()
            self.globals.update(self._namespace())
            return OK
        if kind == "clear_caches":
            self.modules.clear()
            return OK
        if kind == "setup":
            exec(compile(req, "<erlang_python setup>", "exec"), self._namespace())
            self.modules.clear()
            return OK
        raise TypeError("unknown request")

    def resolve(self, m, f):
        # A binary that is no UTF-8 came as bytes: UnicodeDecodeError, as in process.
        m = m.decode("utf-8") if isinstance(m, bytes) else m
        f = f.decode("utf-8") if isinstance(f, bytes) else f
        if not isinstance(m, str) or not isinstance(f, str):
            raise TypeError("module and function names must be atoms or binaries")
        for name in (m, f):
            if not name or "\0" in name:
                raise ValueError("an empty name, or one holding NUL")
        if m == "__main__":
            head, _, rest = f.partition(".")
            if head in self.globals:
                obj = self.globals[head]
            else:
                import builtins
                if not hasattr(builtins, head):
                    raise NameError("name '%s' is not defined" % head)
                obj = getattr(builtins, head)
            return self._attrs(obj, rest)
        mod = self.modules.get(m)
        if mod is None:
            # As PyImport_Import does it in process; a name with an empty
            # part (".", "a..b", ".os") names no module (importlib would
            # take some for relative imports).
            if not all(m.split(".")):
                raise ModuleNotFoundError("No module named %r" % m)
            __import__(m, None, None, ["__doc__"], 0)
            mod = self.modules[m] = sys.modules[m]
        return self._attrs(mod, f)

    @staticmethod
    def _attrs(obj, path):
        if path:
            for part in path.split("."):
                obj = getattr(obj, part)
        return obj

    def code(self, src, local_vars, mode):
        if isinstance(src, bytes):
            raise SyntaxError("Code is not valid UTF-8")
        if "\0" in src:
            raise ValueError("source code string cannot contain null bytes")
        key = (mode, src)
        code = self.code_cache.get(key)
        if code is None:
            try:
                code = compile(src, "<string>", mode)
            except SyntaxError:
                if mode != "eval":
                    raise
                import _erlang_python
                code = _erlang_python.split_eval(src)
                if code is None:
                    raise
            if len(self.code_cache) >= 512:
                self.code_cache.clear()
            self.code_cache[key] = code
        g = self.globals
        if not local_vars:
            return _run_code(code, g)
        missing = object()
        saved = {}
        for k, v in local_vars.items():
            if not isinstance(k, str):
                raise TypeError("Locals keys must be atoms or binaries")
            saved[k] = g.get(k, missing)
            g[k] = v
        try:
            return _run_code(code, g)
        finally:
            for k, old in saved.items():
                if g.get(k, missing) is not local_vars[k]:
                    continue  # rebound by the code: kept
                if old is missing:
                    del g[k]
                else:
                    g[k] = old


def _run_code(code, g):
    if isinstance(code, tuple):  # split_eval: (statements, expression)
        exec(code[0], g)
        return eval(code[1], g)
    return eval(code, g)


def _die_with_parent(parent):
    """The kernel kills this process when its parent (the shell) ends."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (ImportError, OSError, AttributeError):
        pass
    if os.getppid() != parent:  # it died before the prctl
        os._exit(0)


def _limit_memory(mb):
    if mb > 0:
        import resource
        limit = mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _close_in_child(*fds):
    def close():
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass
    os.register_at_fork(after_in_child=close)


_python_decode, _python_encode_frame = decode, encode_frame  # kept (tests compare)


def _use_c_codec(path):
    """The C codec (c_src/worker/_erlang_python_codec.c) in place of the
    one above, which it matches; "c", or "python" if it cannot load."""
    global decode, encode_frame
    try:
        from importlib.machinery import ExtensionFileLoader
        from importlib.util import module_from_spec, spec_from_loader
        loader = ExtensionFileLoader("_erlang_python_codec", path)
        mod = module_from_spec(spec_from_loader("_erlang_python_codec", loader))
        loader.exec_module(mod)
    except (ImportError, OSError) as exc:
        sys.stderr.write("erlang_python worker: %s: %s (the Python codec is used)\n" % (path, exc))
        return "python"
    mod.configure(Atom, Pid, _fallback)
    sys.modules["_erlang_python_codec"] = mod
    decode, encode_frame = mod.decode, mod.encode_frame
    return "c"


def main(argv):
    import mmap
    fd, parent, mb, shared_fd = int(argv[1]), int(argv[2]), int(argv[3]), int(argv[4])
    codec = _use_c_codec(argv[5]) if len(argv) > 5 and argv[5] else "python"
    os.set_inheritable(fd, False)  # not passed on to programs it starts
    os.set_inheritable(shared_fd, False)
    shared = mmap.mmap(shared_fd, 4, mmap.MAP_SHARED, mmap.PROT_READ)
    # A forked child holding the socket would keep the pool from seeing
    # this worker end, and could break its frames.
    _close_in_child(fd, shared_fd)
    _die_with_parent(parent)
    _limit_memory(mb)
    channel = Channel(fd)
    sys.modules["erlang"] = _make_erlang_module(channel)
    sys.modules["erlang"].codec = codec
    worker = Worker(channel, shared)
    sys.modules["erlang"]._worker.append(worker)
    signal.signal(signal.SIGUSR1, worker.interrupt)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    worker.serve()


if __name__ == "__main__":
    main(sys.argv)
