"""Python's logging, warnings and (optionally) stdout/stderr, into OTP's logger.

Installed in each interpreter by the pool (src/py_log.erl builds the call):
a handler on the root logger hands every record to ``erlang._log``, which
sends it to the Erlang process ``py_log``; that process calls
``logger:log/3`` with the record's level and metadata.  Records are sent,
never waited for: logging costs the caller a conversion and a message.
When nobody listens (the application is stopping) records go to the
process's stderr, as Python's own last-resort handler would print them.
"""
import io
import logging
import sys
import threading
import time

import erlang

STDOUT_LEVEL = 25  # NOTICE in OTP's terms (between INFO and WARNING)


def _text(s):
    # Lone surrogates (a surrogateescape'd file name, say) would reach
    # Erlang as invalid UTF-8: written as escapes instead.
    return s.encode("utf-8", "backslashreplace").decode("utf-8")


def _send(levelno, name, message, pathname, lineno, func, created, thread):
    return erlang._log((levelno, _text(name), _text(message), _text(pathname), lineno,
                        _text(func), created, _text(thread)))


class ErlangHandler(logging.Handler):
    """Hands each record to OTP's logger (through ``erlang._log``)."""

    def __init__(self):
        super().__init__()
        self._formatter = logging.Formatter()

    def emit(self, record):
        try:
            message = record.getMessage().rstrip("\n")
            if record.exc_info:
                message += "\n" + self._formatter.formatException(record.exc_info)
            if record.stack_info:
                message += "\n" + self._formatter.formatStack(record.stack_info)
            sent = _send(record.levelno, record.name, message, record.pathname or "",
                         record.lineno or 0, record.funcName or "", record.created,
                         record.threadName or "")
            if not sent:
                sys.__stderr__.write("%s:%s:%s\n" % (record.levelname, record.name, message))
        except Exception:
            self.handleError(record)


class LoggerStream(io.TextIOBase):
    """sys.stdout / sys.stderr replacement: each complete line becomes a log
    record of logger name ``stdout`` or ``stderr``; a partial line waits
    for its end, or for flush()."""

    def __init__(self, name, levelno, original):
        super().__init__()
        self._name = name
        self._levelno = levelno
        self._original = original
        self._pending = ""
        self._lock = threading.Lock()

    @property
    def encoding(self):
        return "utf-8"

    def writable(self):
        return True

    def write(self, text):
        if not isinstance(text, str):
            raise TypeError("write() argument must be str, not %s" % type(text).__name__)
        with self._lock:
            lines = (self._pending + text).split("\n")
            self._pending = lines.pop()
        for line in lines:
            self._emit(line)
        return len(text)

    def flush(self):
        with self._lock:
            line, self._pending = self._pending, ""
        if line:
            self._emit(line)

    def _emit(self, line):
        try:
            sent = _send(self._levelno, self._name, line, "", 0, "", time.time(),
                         threading.current_thread().name)
        except Exception:
            sent = False
        if not sent:
            self._original.write(line + "\n")


_handler = None


def install(level, stdio):
    """level: a logging level number for the root logger, or None to stop
    sending records; stdio: True to send sys.stdout/sys.stderr lines too.
    Idempotent (a shared interpreter runs it once per pool start)."""
    global _handler
    root = logging.getLogger()
    if level is None:
        if _handler is not None:
            root.removeHandler(_handler)
            _handler = None
        logging.captureWarnings(False)
    else:
        if _handler is None:
            _handler = ErlangHandler()
        if _handler not in root.handlers:  # (dictConfig may have removed it)
            root.addHandler(_handler)
        root.setLevel(level)
        logging.captureWarnings(True)
    if stdio:
        if not isinstance(sys.stdout, LoggerStream):
            sys.stdout = LoggerStream("stdout", STDOUT_LEVEL, sys.__stdout__)
        if not isinstance(sys.stderr, LoggerStream):
            sys.stderr = LoggerStream("stderr", logging.WARNING, sys.__stderr__)
    else:
        if isinstance(sys.stdout, LoggerStream):
            sys.stdout.flush()
            sys.stdout = sys.__stdout__
        if isinstance(sys.stderr, LoggerStream):
            sys.stderr.flush()
            sys.stderr = sys.__stderr__
