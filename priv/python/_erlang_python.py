"""Runtime helpers of erlang_python.

Imported by the NIF (start_coroutine) and called through ordinary requests
from src/py.erl (memory, venv, reload).  Everything here runs on a worker
thread holding the GIL, except the asyncio event loop, which runs forever on
a thread of its own started on first use.
"""
import ast
import asyncio
import gc
import glob
import importlib
import inspect
import os
import site
import sys
import threading

# ---- asyncio ---------------------------------------------------------------

_loop = None
_loop_thread = None
_loop_lock = threading.Lock()
_active = {}        # task -> reply, while running (loop thread only)
_watching = False   # a _watch call is scheduled (loop thread only)
_WATCH_PERIOD = 0.05


def _event_loop():
    """The event loop thread, started on first use (a real loop, not
    polling), and started again should it ever have stopped."""
    global _loop, _loop_thread
    with _loop_lock:
        if _loop is None or not _loop_thread.is_alive():
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def run():
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            # Not a daemon: a sub-interpreter (execution_mode subinterp)
            # allows none, and waits for its threads when it ends; the loop
            # is stopped just before (threading's own exit hook).  The main
            # interpreter is never finalized.
            _loop_thread = threading.Thread(target=run, name="erlang_python_asyncio")
            _loop_thread.start()
            if _loop is None:
                threading._register_atexit(_stop_loop)
            ready.wait()
            _loop = loop
        return _loop


def _stop_loop():
    loop, thread = _loop, _loop_thread
    if loop is not None and thread.is_alive():
        loop.call_soon_threadsafe(loop.stop)
        thread.join()


async def _drain(agen):
    return [item async for item in agen]


async def _run(awaitable, reply):
    """Runs one request's coroutine and delivers its outcome.  Nothing it
    raises escapes: SystemExit or KeyboardInterrupt would stop the loop."""
    try:
        result = await awaitable
    except asyncio.CancelledError:
        reply.exception(asyncio.CancelledError("the coroutine was cancelled"))
    except BaseException as e:
        reply.exception(e)
    else:
        try:
            reply.result(result)
        except BaseException as e:  # the result could not be converted
            reply.exception(e)


def _watch():
    """Cancels the tasks whose caller gave up (py:async_await timed out)."""
    global _watching
    for task, reply in list(_active.items()):
        if reply.abandoned:
            task.cancel()
    if _active:
        _loop.call_later(_WATCH_PERIOD, _watch)
    else:
        _watching = False


def _start_task(coro, reply):
    global _watching
    task = _loop.create_task(coro)
    _active[task] = reply
    task.add_done_callback(lambda t: _active.pop(t, None))
    if not _watching:
        _watching = True
        _loop.call_later(_WATCH_PERIOD, _watch)


def start_coroutine(obj, reply, stream):
    """Schedules obj (a coroutine, or an async generator to drain) on the
    loop; reply gets the outcome.  Raises TypeError at once for anything
    else, so that py:async_call reports it to its caller."""
    if stream:
        if not hasattr(obj, "__aiter__"):
            raise TypeError("%s is not an async generator or async iterable" % type(obj).__name__)
        awaitable = _drain(obj)
    elif inspect.isawaitable(obj):
        awaitable = obj
    else:
        raise TypeError("%s is not a coroutine or awaitable" % type(obj).__name__)
    loop = _event_loop()
    loop.call_soon_threadsafe(_start_task, _run(awaitable, reply), reply)


# ---- incremental streams (py:stream_start) --------------------------------

def run_stream(obj, sink):
    """Sends each value of obj (an iterable, a generator, an async generator
    or async iterable) through sink as it is produced, on this worker.
    sink.send says when the owner's window of unacknowledged values is full:
    sink.ready() then waits for credit before the generator is advanced (it
    never runs ahead of the window).  Both return False once the stream was
    stopped (cancelled, timed out, owner gone): the generator is then
    closed, so its finally blocks run.  An async generator is driven on a
    private event loop, one value at a time."""
    if not hasattr(obj, "__iter__") and hasattr(obj, "__aiter__"):
        return _run_async_stream(obj, sink)
    it = iter(obj)
    try:
        for value in it:
            sent = sink.send(value)
            if sent or (sent is None and sink.ready()):
                continue
            break
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()


# How often (seconds) the loop of an async stream looks whether the stream
# was stopped or its job cancelled while the generator awaits: an await
# blocks in the selector, where no interrupt reaches it.
_ASYNC_CHECK = 0.02
_END = object()


async def _next_value(agen):
    try:
        return await agen.__anext__()
    except StopAsyncIteration:
        return _END


def _await_value(loop, task):
    try:
        return loop.run_until_complete(task)
    except BaseException:
        if not task.done():
            # erlang.Interrupted raised in the loop's own code, outside the
            # task: the generator still awaits.  Cancelled there, its
            # finally blocks run (aclose could not: it is mid-step).
            task.cancel()
            try:
                loop.run_until_complete(task)
            except BaseException:
                pass
        raise


def _run_async_stream(obj, sink):
    loop = asyncio.new_event_loop()
    agen = obj.__aiter__()
    current = [None, None]  # the task of the value being awaited, the check timer

    def halt():
        task = current[0]
        if task is not None and not task.done():
            task.cancel()  # CancelledError at the generator's await

    def check():
        current[1] = loop.call_later(_ASYNC_CHECK, check)
        if sink.halted:
            halt()

    def on_error(loop, context):
        # erlang.Interrupted (the caller gave up) landing in one of the
        # loop's own callbacks (check above, say): the value's task ends.
        if type(context.get("exception")).__name__ == "Interrupted":
            current[1].cancel()  # one check pending, whether or not
            current[1] = loop.call_later(_ASYNC_CHECK, check)  # it re-armed
            halt()
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(on_error)
    current[1] = loop.call_later(_ASYNC_CHECK, check)
    try:
        while True:
            task = current[0] = loop.create_task(_next_value(agen))
            try:
                value = _await_value(loop, task)
            except asyncio.CancelledError:
                if not sink.halted:
                    raise
                sink.check()  # raises when the job was given up
                break         # stopped
            finally:
                current[0] = None
            if value is _END:
                break
            sent = sink.send(value)
            if not (sent or (sent is None and sink.ready())):
                break
    finally:
        try:
            current[1].cancel()
            aclose = getattr(agen, "aclose", None)
            if aclose is not None:
                loop.run_until_complete(aclose())
        finally:
            loop.close()


# ---- memory ----------------------------------------------------------------

def _tracemalloc():
    """tracemalloc, imported on first use: its C part cannot load in a
    sub-interpreter (execution_mode subinterp), which then gets the
    ImportError from the functions that need it, not from this module."""
    import tracemalloc
    return tracemalloc


def _tracing():
    try:
        return _tracemalloc().is_tracing()
    except ImportError:
        return False


def memory_stats():
    tracing = _tracing()
    stats = {
        "gc_stats": gc.get_stats(),
        "gc_count": tuple(gc.get_count()),
        "gc_threshold": tuple(gc.get_threshold()),
        "gc_enabled": gc.isenabled(),
        "tracemalloc": tracing,
    }
    if tracing:
        current, peak = _tracemalloc().get_traced_memory()
        stats["traced_memory_current"] = current
        stats["traced_memory_peak"] = peak
    return stats


def collect(generation=2):
    return gc.collect(generation)


def tracemalloc_start(frames=1):
    tracemalloc = _tracemalloc()
    if not tracemalloc.is_tracing():
        tracemalloc.start(frames)


def tracemalloc_stop():
    _tracemalloc().stop()


# ---- virtual environments --------------------------------------------------

_venv = None


def activate_venv(path):
    """Makes the venv's site-packages importable (ahead of the system's),
    as `source bin/activate' would for a new interpreter."""
    global _venv
    path = os.path.abspath(path)
    # pyvenv.cfg or lib/python*/site-packages (checked by py:activate_venv)
    wanted = "python%d.%d" % sys.version_info[:2]
    site_packages = os.path.join(path, "lib", wanted, "site-packages")
    if not os.path.isdir(site_packages):
        found = sorted(glob.glob(os.path.join(path, "lib", "python*", "site-packages")))
        raise ValueError("%s has no lib/%s/site-packages (a venv for Python %d.%d is needed%s)"
                         % (path, wanted, sys.version_info[0], sys.version_info[1],
                            "; found " + ", ".join(found) if found else ""))
    if _venv is not None:
        deactivate_venv()
    before = list(sys.path)
    site.addsitedir(site_packages)  # also runs its .pth files
    added = [p for p in sys.path if p not in before]
    sys.path[:] = added + before
    old_env = os.environ.get("VIRTUAL_ENV")
    os.environ["VIRTUAL_ENV"] = path
    importlib.invalidate_caches()
    _venv = {"path": path, "site_packages": site_packages, "added": added, "old_env": old_env}
    return venv_info()


def deactivate_venv():
    """Undoes activate_venv: its paths leave sys.path and the modules loaded
    from it leave sys.modules."""
    global _venv
    if _venv is None:
        return False
    venv, _venv = _venv, None
    sys.path[:] = [p for p in sys.path if p not in venv["added"]]
    prefixes = tuple(os.path.join(p, "") for p in [venv["path"]] + venv["added"])
    for name, mod in list(sys.modules.items()):
        f = getattr(mod, "__file__", None) or ""
        if f.startswith(prefixes):
            del sys.modules[name]
    if venv["old_env"] is None:
        os.environ.pop("VIRTUAL_ENV", None)
    else:
        os.environ["VIRTUAL_ENV"] = venv["old_env"]
    importlib.invalidate_caches()
    return True


def venv_info():
    if _venv is None:
        return {"active": False}
    return {"active": True, "path": _venv["path"], "site_packages": _venv["site_packages"],
            "python_version": "%d.%d" % sys.version_info[:2]}


def sync_venv(path):
    """Makes this interpreter's venv the one at path (None: none), doing
    nothing when it is already: run in every sub-interpreter by the pool
    after py:activate_venv / py:deactivate_venv (execution_mode subinterp)."""
    if path is None:
        deactivate_venv()
    elif _venv is None or _venv["path"] != os.path.abspath(path):
        activate_venv(path)


# ---- reload ----------------------------------------------------------------

def reload(name):
    """Reloads a module (imports it if it was not).  With a shared GIL the
    module object is shared by every worker, so all of them see the new
    code; with sub-interpreters the pool runs this in each of them."""
    module = sys.modules.get(name)
    if module is None:
        importlib.import_module(name)
        return False
    importlib.reload(module)
    return True


def split_eval(source):
    """For py:eval of statements that end with an expression
    ("import json; json.dumps(x)"): (code of the statements, code of the
    expression), run one after the other in the namespace; None when the
    source does not end with an expression (the SyntaxError stands)."""
    try:
        tree = ast.parse(source, "<string>", "exec")
    except SyntaxError:
        return None
    if not tree.body or not isinstance(tree.body[-1], ast.Expr):
        return None
    last = ast.Expression(tree.body.pop().value)
    return (compile(tree, "<string>", "exec"), compile(last, "<string>", "eval"))
