"""Helpers for py_hostile_SUITE (imported through the python_path app env)."""
import sys


class Unprintable:
    """Neither str() nor repr() works."""

    def __str__(self):
        raise RuntimeError('no str for you')

    def __repr__(self):
        raise RuntimeError('no repr for you')


class StrNotText:
    def __str__(self):
        return 42

    def __repr__(self):
        return 42


class BadIndex:
    def __index__(self):
        raise ValueError('bad index')


class BadToList:
    def tolist(self):
        raise ValueError('bad tolist')


class SelfToList:
    def tolist(self):
        return self


class UnprintableError(Exception):
    def __str__(self):
        raise RuntimeError('no str for this exception')


class NotTextError(Exception):
    def __str__(self):
        return 42


def unprintable():
    return Unprintable()


def unprintable_nested():
    return [1, {'k': (2, Unprintable())}]


def raise_unprintable():
    raise UnprintableError('hidden')


def raise_not_text():
    raise NotTextError('hidden')


def self_list():
    l = []
    l.append(l)
    return l


def self_dict():
    d = {}
    d['self'] = d
    return d


def mutual():
    a, b = [], []
    a.append(b)
    b.append(a)
    return (a, b)


def deep(kind, n):
    x = {'list': [], 'tuple': (), 'dict': {}}[kind]
    for _ in range(n):
        if kind == 'list':
            x = [x]
        elif kind == 'tuple':
            x = (x,)
        else:
            x = {'k': x}
    return x


def depth(x):
    d = 0
    while True:
        if isinstance(x, (list, tuple)) and x:
            x = x[0]
        elif isinstance(x, dict) and x:
            x = next(iter(x.values()))
        else:
            return d
        d += 1


def unbounded_recursion():
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(10 ** 6)
    try:
        def f(n):
            return f(n + 1)
        return f(0)
    finally:
        sys.setrecursionlimit(old)


def recursion_limit():
    return sys.getrecursionlimit()


def million_maps():
    return [{'a': i, 'b': str(i)} for i in range(1000000)]


def check_million_maps(x):
    return (len(x) == 1000000 and
            all(d['a'] == i and d['b'] == str(i) for i, d in enumerate(x)))
