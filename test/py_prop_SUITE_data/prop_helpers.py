"""Helpers for py_prop_SUITE (imported through the python_path app env)."""
import struct


def identity(x):
    return x


def rebuild(x):
    """A structurally equal value made of fresh objects (copy.deepcopy
    cannot be used: erlang.Pid objects do not pickle)."""
    t = type(x)
    if t is list:
        return [rebuild(e) for e in x]
    if t is tuple:
        return tuple(rebuild(e) for e in x)
    if t is dict:
        return {rebuild(k): rebuild(v) for k, v in x.items()}
    if t is int:
        return (x + 1) - 1
    if t is float:
        return struct.unpack('>d', struct.pack('>d', x))[0]
    if t is str:
        return ''.join(list(x))
    if t is bytes:
        return bytes(bytearray(x))
    return x


def typed(x):
    """What Python holds, tagged with its exact type, in a form that does
    not depend on the converter's own choices: ints as hex text, floats as
    their 8 IEEE bytes, str as UTF-8 bytes, dicts as lists of pairs."""
    if x is None:
        return ['none']
    if x is True or x is False:
        return ['bool', x]
    t = type(x)
    if t is int:
        return ['int', hex(x).encode()]
    if t is float:
        return ['float', struct.pack('>d', x)]
    if t is str:
        return ['str', x.encode('utf-8')]
    if t is bytes:
        return ['bytes', x]
    if t is list:
        return ['list', [typed(e) for e in x]]
    if t is tuple:
        return ['tuple', [typed(e) for e in x]]
    if t is dict:
        return ['dict', [[typed(k), typed(v)] for k, v in x.items()]]
    return ['other', type(x).__name__.encode()]
