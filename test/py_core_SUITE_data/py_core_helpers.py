"""Helpers for py_core_SUITE (imported through the python_path app env)."""


class CustomError(Exception):
    pass


def add(a, b=0, *, scale=1):
    return (a + b) * scale


def echo(*args, **kwargs):
    return [list(args), kwargs]


def squares(n, offset=0):
    for i in range(n):
        yield i * i + offset


def squares_then_fail(n):
    for i in range(n):
        yield i
    raise ValueError("stream broke")


def fail(msg):
    return _inner_fail(msg)


def _inner_fail(msg):
    raise ValueError(msg)


def fail_custom(msg):
    raise CustomError(msg)


def spin():
    while True:
        pass


def deep_list(n):
    x = []
    for _ in range(n):
        x = [x]
    return x


def depth(x):
    d = 0
    while isinstance(x, list) and x:
        x = x[0]
        d += 1
    return d


def type_names(x):
    return type(x).__name__
