# Run in an isolated worker (py_isolated_SUITE:c_codec_matches_python): the C
# codec (c_src/worker/_erlang_python_codec.c) against the worker program's
# Python codec, on values of every kind of docs/types.md; `diffs` lists
# every difference.
import math, sys, enum, collections
m = sys.modules['__main__']
c = sys.modules['_erlang_python_codec']
class I(enum.IntEnum):
    A = 7
class S(str):
    pass
NT = collections.namedtuple('NT', 'a b')
class TL:
    def tolist(self):
        return [1, (2, 3)]
class IX:
    def __index__(self):
        return 1 << 40
class O:
    def __str__(self):
        return 'an O'
values = [0, 1, 255, 256, -1, 2**31 - 1, -2**31, 2**31, -2**31 - 1, 2**63, -2**63, 2**64,
          -2**64, 10**100, -(10**300), 0.5, -1e300, 5e-324, float('nan'), float('inf'),
          float('-inf'), '', 'ascii', 'h\u00e9 \u2603 \U0001f600', '\ud800x', b'', b'\x00\xff',
          bytearray(b'ab'), [], [1, [2, [3]]], (), (1, 'a'), tuple(range(300)),
          list(range(300)), {'a': 1, 2: [3], (1, 2): None}, {}, {1, 2, 3}, frozenset(['x']),
          None, True, False, m.Atom('ok'), m.Atom('$py_send'), I.A, S('sub'), NT(1, 'b'),
          TL(), IX(), O(), {'k': {'deep': [{'x': (1.5, b'z')}]}}]
diffs = []
for v in values:
    if c.encode_frame(v) != m._python_encode_frame(v):
        diffs.append('encode differs: %r' % (v,))
    etf = m._python_encode_frame(v)[4:]
    a, b = c.decode(etf), m._python_decode(etf)
    if repr(a) != repr(b) or type(a) is not type(b):
        diffs.append('decode differs: %r: %r, %r' % (v, a, b))
# terms the node sends that the encoder above does not make
for etf in [bytes([131, 107, 0, 3, 1, 2, 3]),                    # STRING_EXT
            bytes([131, 100, 0, 4]) + b'true',                   # ATOM_EXT
            bytes([131, 115, 3]) + b'nil',                       # SMALL_ATOM_EXT
            bytes([131, 104, 2, 119, 5]) + b'bytes' + bytes([109, 0, 0, 0, 2]) + b'hi',
            bytes([131, 104, 2, 119, 6]) + b'buffer' + bytes([109, 0, 0, 0, 1]) + b'\xff',
            bytes([131, 104, 2, 119, 5]) + b'other' + bytes([109, 0, 0, 0, 1]) + b'x',
            bytes([131, 88, 119, 13]) + b'nonode@nohost' + bytes(12),
            bytes([131, 109, 0, 0, 0, 2, 0xff, 0xfe])]:
    a, b = c.decode(etf), m._python_decode(etf)
    if repr(a) != repr(b) or type(a) is not type(b):
        diffs.append('decode differs: %r: %r, %r' % (etf, a, b))
for etf in [bytes([131, 108, 0, 0, 0, 1, 97, 1, 97, 2]),  # improper list
            bytes([131, 112, 0, 0, 0, 0]),                 # a fun
            bytes([131, 77, 0, 0, 0, 1, 3, 0xe0]),         # a bitstring
            bytes([131, 116, 0, 0, 0, 1, 106, 97, 1])]:    # a list as a key
    errs = []
    for f in (c.decode, m._python_decode):
        try:
            f(etf)
            errs.append(None)
        except Exception as e:
            errs.append((type(e), str(e)))
    if errs[0] != errs[1] or errs[0] is None:
        diffs.append('errors differ: %r: %r' % (etf, errs))
