"""
Makes the interop corpus: CPython pickles a broad set of values at every protocol, then loads
each pickle back itself and describes what it got, so the TypeScript tests compare against
what CPython does rather than against hand-written guesses.

Prints one JSON document on stdout:
  {"cases": [case...], "crafted": [case...], "streams": {...}}
"cases" are pickle.dumps of each value at each protocol (and protocol 5 with buffer_callback):
the pickles CPython writes. "crafted" are pickles CPython reads but its pickler would not write
that way: hand-written Python 2 pickles and calls of registered constructors made by reducers.
A case is
  {"name", "protocol", "pickle": base64, "buffers": [{"b64", "readonly"}], "options": {...},
   "expect": description | null, "error": CPython exception name | null}

A description is a tagged tree: {"t": "list", "id": 3, "items": [...]} and so on (see
describe()). Objects that have an identity in both languages (containers, bytearray, bytes of
two bytes or more) carry an "id"; a later occurrence of the same object is {"t": "ref", "id"}.

Run: python3 test/interop/make_pickles.py
"""
import base64
import collections
import datetime
import decimal
import io
import json
import pickle
import sys
import uuid
import warnings

HIGHEST = pickle.HIGHEST_PROTOCOL


# ---- a class the tests register on both sides (findClass in TypeScript, find_class here) ----

class Point:
    def __init__(self, *args):
        self.args = args


class CorpusUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module == 'mymod' and name == 'Point':
            return Point
        return super().find_class(module, name)


class PyCorpusUnpickler(pickle._Unpickler):
    """The pure-Python Unpickler: its memo.clear() really starts MEMOIZE at 0 again (the C one's does not)."""
    def find_class(self, module, name):
        if module == 'mymod' and name == 'Point':
            return Point
        return super().find_class(module, name)


def loads(data, options, buffers=None):
    u = CorpusUnpickler(
        io.BytesIO(data),
        fix_imports=options.get('fixImports', True),
        encoding=options.get('encoding', 'ASCII'),
        errors=options.get('errors', 'strict'),
        buffers=buffers,
    )
    return u.load()


# ---- describing a loaded value ----

def float_text(x):
    return repr(float(x))


class Describer:
    def __init__(self):
        self.ids = {}
        self.keep = []

    def tracked(self, obj):
        """Objects whose identity both sides keep (memo references must come back shared)."""
        if isinstance(obj, (list, dict, set, bytearray, collections.deque)):
            return True
        if isinstance(obj, (tuple, frozenset)):
            return len(obj) > 0
        if isinstance(obj, bytes):
            return len(obj) >= 2  # CPython caches b'' and one-byte bytes
        return False

    def describe(self, obj):
        if obj is None:
            return {'t': 'none'}
        if obj is True or obj is False:
            return {'t': 'bool', 'v': obj}
        if type(obj) is int:
            return {'t': 'int', 'v': str(obj)}
        if type(obj) is float:
            return {'t': 'float', 'v': float_text(obj)}
        if type(obj) is str:
            return {'t': 'str', 'v': obj}
        if obj is Ellipsis:
            return {'t': 'Ellipsis'}
        if obj is NotImplemented:
            return {'t': 'NotImplemented'}
        if self.tracked(obj):
            key = id(obj)
            if key in self.ids:
                return {'t': 'ref', 'id': self.ids[key]}
            self.ids[key] = len(self.ids)
            self.keep.append(obj)
            node = {'id': self.ids[key]}
            node.update(self.describe_object(obj))
            return node
        return self.describe_object(obj)

    def items(self, xs):
        return [self.describe(x) for x in xs]

    def pairs(self, d):
        return [[self.describe(k), self.describe(v)] for k, v in d.items()]

    def describe_object(self, obj):
        d = self.describe
        if type(obj) is bytes:
            return {'t': 'bytes', 'hex': obj.hex()}
        if type(obj) is bytearray:
            return {'t': 'bytearray', 'hex': obj.hex()}
        if isinstance(obj, (pickle.PickleBuffer, memoryview)):
            with memoryview(obj) as m:
                return {'t': 'buffer', 'hex': m.tobytes().hex(), 'readonly': m.readonly}
        if type(obj) is tuple:
            return {'t': 'tuple', 'items': self.items(obj)}
        if type(obj) is list:
            return {'t': 'list', 'items': self.items(obj)}
        if type(obj) is collections.OrderedDict:
            return {'t': 'OrderedDict', 'items': self.pairs(obj)}
        if type(obj) is collections.defaultdict:
            return {'t': 'defaultdict', 'factory': d(obj.default_factory), 'items': self.pairs(obj)}
        if type(obj) is collections.Counter:
            return {'t': 'Counter', 'items': self.pairs(obj)}
        if type(obj) is dict:
            return {'t': 'dict', 'items': self.pairs(obj)}
        if type(obj) is collections.deque:
            return {'t': 'deque', 'items': self.items(obj), 'maxlen': obj.maxlen}
        if type(obj) is set:
            return {'t': 'set', 'items': self.items(obj)}
        if type(obj) is frozenset:
            return {'t': 'frozenset', 'items': self.items(obj)}
        if type(obj) is complex:
            return {'t': 'complex', 're': float_text(obj.real), 'im': float_text(obj.imag)}
        if type(obj) is range:
            return {'t': 'range', 'start': str(obj.start), 'stop': str(obj.stop), 'step': str(obj.step)}
        if type(obj) is slice:
            return {'t': 'slice', 'start': d(obj.start), 'stop': d(obj.stop), 'step': d(obj.step)}
        if type(obj) is datetime.datetime:
            return {'t': 'datetime', 'year': obj.year, 'month': obj.month, 'day': obj.day, 'hour': obj.hour,
                    'minute': obj.minute, 'second': obj.second, 'microsecond': obj.microsecond,
                    'tzinfo': d(obj.tzinfo), 'fold': obj.fold}
        if type(obj) is datetime.date:
            return {'t': 'date', 'year': obj.year, 'month': obj.month, 'day': obj.day}
        if type(obj) is datetime.time:
            return {'t': 'time', 'hour': obj.hour, 'minute': obj.minute, 'second': obj.second,
                    'microsecond': obj.microsecond, 'tzinfo': d(obj.tzinfo), 'fold': obj.fold}
        if type(obj) is datetime.timedelta:
            return {'t': 'timedelta', 'days': obj.days, 'seconds': obj.seconds, 'microseconds': obj.microseconds}
        if type(obj) is datetime.timezone:
            args = obj.__getinitargs__()
            return {'t': 'timezone', 'offset': d(args[0]), 'name': args[1] if len(args) > 1 else None}
        if type(obj) is decimal.Decimal:
            return {'t': 'Decimal', 'v': str(obj)}
        if type(obj) is uuid.UUID:
            return {'t': 'UUID', 'int': str(obj.int),
                    'is_safe': None if obj.is_safe is uuid.SafeUUID.unknown else obj.is_safe.value}
        if type(obj) is Point:
            return {'t': 'instance', 'cls': 'mymod.Point', 'attrs': [[k, d(v)] for k, v in vars(obj).items()]}
        if isinstance(obj, type) or callable(obj):
            return {'t': 'global', 'v': f'{obj.__module__}.{obj.__qualname__}'}
        raise TypeError(f'cannot describe {type(obj).__name__}')


def describe(obj):
    return Describer().describe(obj)


# ---- the values ----

def recursive_list():
    l = [1]
    l.append(l)
    return l


def recursive_dict():
    d = {'name': 'd'}
    d['self'] = d
    d['list'] = [d, (d,)]
    return d


def tuple_through_list():
    l = []
    t = (l, 2)
    l.append(t)
    return t


def shared():
    a = [1, 2]
    t = ('shared', a)
    b = b'shared bytes'
    ba = bytearray(b'ba')
    s = {1, 2}
    fs = frozenset({'f'})
    return [a, a, t, t, (a, t), {'a': a, 't': t}, b, b, ba, ba, s, s, fs, fs]


def deep(n):
    v = []
    for _ in range(n):
        v = [v, (v,)]
    return v


def values():
    tz_ist = datetime.timezone(datetime.timedelta(hours=5, minutes=30), 'IST')
    tz_minus3 = datetime.timezone(datetime.timedelta(hours=-3))
    return {
        # scalars
        'none': None, 'true': True, 'false': False,
        'ints small': [0, 1, -1, 127, 128, 255, 256, -256, 65535, 65536, -65536],
        'ints 32-bit edges': [2**31 - 1, -2**31, 2**31, -2**31 - 1, 2**32 - 1, 2**32],
        'ints safe-integer edges': [2**53 - 1, -(2**53 - 1), 2**53, -(2**53), 2**53 + 1],
        'ints 64-bit edges': [2**63 - 1, -2**63, 2**63, 2**64 - 1, 2**64, -2**64],
        'int 10**30': 10**30, 'int -10**100': -10**100,
        'int 2**1000 (LONG1 range)': 2**1000, 'int -(2**2039) (255-byte LONG1)': -(2**2039),
        'int 2**3000 (LONG4)': 2**3000, 'int -(2**3000)+1': -(2**3000) + 1,
        'floats': [0.0, -0.0, 1.0, -1.0, 0.5, 1 / 3, 1e16, 2.0**53, 123456789.125, 1e300, -1e300, 1e-300,
                   5e-324, -5e-324, 2.2250738585072014e-308, 1.7976931348623157e308],
        'float inf': float('inf'), 'float -inf': float('-inf'), 'float nan': float('nan'),
        'float -0.0': -0.0, 'float 1e300': 1e300, 'float 5e-324': 5e-324,
        # text
        'str empty': '', 'str ascii': 'hello world', 'str latin-1': 'caf\xe9 \xff',
        'str BMP': '日本語 текст', 'str astral': 'emoji 😀 and 𝄞',
        'str lone surrogates': ['\ud800', '\udfff', 'a\ud800b', '\udc00\ud800', '\ud83d', 'x\ude00'],
        'str lone surrogate, long': 'long text over thirty-two bytes \ud800 and more text after it',
        'str newlines': 'line1\nline2\r\nline3\r',
        'str backslashes': 'back\\slash \\u0041 \\U0001F600 \\x41 \\',
        'str with a BOM': ['\ufeffBOM first', '\ufeff' + 'a BOM before more than thirty-two bytes of text'],
        'str controls': '\x00nul \t tab \x7f del \x85 nel \u2028 ls',
        'str long ascii': 'x' * 70000, 'str long mixed': 'ä😀\n\\' * 5000,
        # bytes
        'bytes empty': b'', 'bytes one': b'\x00', 'bytes all byte values': bytes(range(256)),
        'bytes newline and backslash': b'\n\\\r\'"', 'bytes 300': b'\xab' * 300,
        'bytearray empty': bytearray(), 'bytearray': bytearray(b'abc\x00\xff\n'),
        'bytearray 300': bytearray(range(256)) + bytearray(44),
        # containers
        'tuples': [(), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4), ((), ((),))],
        'list': [1, 'a', None, 2.5, [[]], []],
        'list of 2500 (batched APPENDS)': list(range(2500)),
        'dict empty': {}, 'dict str keys': {'a': 1, 'b': [2], 'c': {'d': None}},
        'dict mixed key types': {1: 'int', '1': 'str', 1.5: 'float', (1, 2): 'tuple', None: 'none',
                                 b'k': 'bytes', frozenset({1}): 'frozenset', -1: 'neg', 2**70: 'big',
                                 (1, (2, 'x')): 'nested tuple', 3.0: 'integral float', False: 'bool'},
        'dict of 2500 (batched SETITEMS)': {f'k{i}': i for i in range(2500)},
        'dict with __proto__ and constructor keys': {'__proto__': {'polluted': 1}, 'constructor': {'prototype': {'polluted': 2}}, 'toString': 3},
        'sets': [set(), {1, 2, 3}, {'a', (1, 2), None, b'xy'}],
        'set of 1500': set(range(1500)),
        'frozensets': [frozenset(), frozenset({1, 'b'}), frozenset({frozenset({2})})],
        'nested containers': {'list': [1, [2, [3, [4]]]], 'tuple': (1, (2, (3,))), 'set': {(1, (2,))},
                              'dict': {'a': {'b': {'c': [{'d': ()}]}}}},
        'deep nesting (300 levels)': deep(300),
        # references
        'shared references': shared(),
        'recursive list': recursive_list(), 'recursive dict': recursive_dict(),
        'tuple reached through its own list': tuple_through_list(),
        # registered globals
        'complex': [1 + 2j, complex(-0.0, -1.0), complex(float('inf'), float('nan')), 0j, 1e300j],
        'Ellipsis and NotImplemented': [Ellipsis, NotImplemented, Ellipsis],
        'ranges': [range(10), range(-5, 100, 7), range(10, 0, -2), range(0), range(2**70, 2**71, 2**60)],
        'slices': [slice(1, 2, 3), slice(None, 5), slice('a', None, [1]), slice(None)],
        'OrderedDict': collections.OrderedDict([('b', 1), ('a', [2]), (3, 'c')]),
        'OrderedDict empty': collections.OrderedDict(),
        'defaultdict int': collections.defaultdict(int, {'x': 1, 'y': 2}),
        'defaultdict list': collections.defaultdict(list, {1: [2]}),
        'defaultdict no factory': collections.defaultdict(None, {'k': 'v'}),
        'Counter': collections.Counter('hello world'), 'Counter empty': collections.Counter(),
        'deque': collections.deque([1, 'two', (3,)]), 'deque maxlen': collections.deque([1, 2], maxlen=5),
        'deque empty maxlen 0': collections.deque([], maxlen=0),
        'dates': [datetime.date(2024, 2, 29), datetime.date(1, 1, 1), datetime.date(9999, 12, 31)],
        'times': [datetime.time(), datetime.time(23, 59, 59, 999999), datetime.time(1, 2, 3, tzinfo=datetime.timezone.utc),
                  datetime.time(12, 30, fold=1), datetime.time(4, 5, 6, 7, tzinfo=tz_ist)],
        'datetimes': [datetime.datetime(2024, 1, 2, 3, 4, 5, 678901), datetime.datetime(1, 1, 1),
                      datetime.datetime(9999, 12, 31, 23, 59, 59, 999999),
                      datetime.datetime(2021, 11, 7, 1, 30, fold=1),
                      datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc),
                      datetime.datetime(2000, 6, 15, 12, tzinfo=tz_ist),
                      datetime.datetime(1999, 12, 31, 23, 59, tzinfo=tz_minus3)],
        'timedeltas': [datetime.timedelta(0), datetime.timedelta(days=-1, seconds=5, microseconds=7),
                       datetime.timedelta(days=999999999, seconds=86399, microseconds=999999),
                       datetime.timedelta(days=-999999999), datetime.timedelta(microseconds=1)],
        'timezones': [datetime.timezone.utc, tz_minus3, tz_ist, datetime.timezone(datetime.timedelta(minutes=90), 'X')],
        'Decimals': [decimal.Decimal('3.14'), decimal.Decimal('-0'), decimal.Decimal('NaN'), decimal.Decimal('sNaN'),
                     decimal.Decimal('1E+1000'), decimal.Decimal('-Infinity'), decimal.Decimal('0.000001000')],
        'UUIDs': [uuid.UUID('12345678-1234-5678-1234-567812345678'), uuid.UUID(int=0),
                  uuid.UUID(int=2**128 - 1), uuid.UUID(int=5, is_safe=uuid.SafeUUID.safe),
                  uuid.UUID(int=6, is_safe=uuid.SafeUUID.unsafe)],
        'globals as values': [int, list, collections.OrderedDict],
        'kitchen sink': {'none': None, 'b': True, 'i': -7, 'f': 2.5, 's': 'é', 'by': b'\x00\x01', 'ba': bytearray(b'z'),
                         't': (1, 'x'), 'l': [1.0, 2], 'set': {3}, 'fs': frozenset({4}), 'c': 3 - 4j,
                         'r': range(3), 'sl': slice(1, None), 'od': collections.OrderedDict(a=1),
                         'dd': collections.defaultdict(int, a=1), 'cnt': collections.Counter(a=2),
                         'dq': collections.deque([5]), 'd': datetime.date(2020, 5, 17),
                         'dt': datetime.datetime(2020, 5, 17, 1, 2, 3, 4, tzinfo=tz_ist),
                         'td': datetime.timedelta(seconds=1.5), 'dec': decimal.Decimal('1.10'),
                         'u': uuid.UUID(int=42), 'e': Ellipsis},
    }


# ---- Python 2 pickles, written by hand as Python 2's pickle module writes them ----

PY2 = [
    # (name, pickle bytes, options)
    ('py2 STRING with escapes', b"S'hello\\n\\'world\\' \\x41\\101 \\\\ \\t\\a\\b\\f\\v\\r \\q'\n.", {}),
    ('py2 STRING double-quoted', b'S"it\'s"\n.', {}),
    ('py2 STRING octal and unknown escapes', b"S'\\777 \\8 \\0 \\00 \\000 \\1234 \\x4a \\X41 \\N{x} \\u0041'\n.", {'encoding': 'latin1'}),
    ('py2 STRING bad \\x escape', b"S'\\x4'\n.", {}),
    ('py2 STRING trailing backslash', b"S'a\\'\n.", {}),
    ('py2 STRING unquoted', b"S'abc\n.", {}),
    ('py2 STRING mismatched quotes', b"S'abc\"\n.", {}),
    ('py2 STRING non-ASCII, latin1', b"S'caf\\xe9 \\xff'\n.", {'encoding': 'latin1'}),
    ('py2 STRING non-ASCII, default ASCII', b"S'caf\\xe9'\n.", {}),
    ('py2 STRING non-ASCII, bytes', b"S'caf\\xe9'\n.", {'encoding': 'bytes'}),
    ('py2 I01 and I00 bools', b'(lp0\nI01\naI00\naI1\naI0\naI-5\na.', {}),
    ('py2 L longs', b'(lp0\nL123L\naL-99999999999999999999999L\naL0L\naL9007199254740993L\na.', {}),
    ('py2 INT too big for 32 bits', b'I12345678901\n.', {}),
    ('py2 F floats', b'(lp0\nF1.5\naF-0.0\naFinf\naF-inf\naFnan\naF1e+300\naF0.1\na.', {}),
    ('py2 unicode raw-unicode-escape', b'V\\u00e9\\U0001f600 tab\\u005c\\u000a\n.', {}),
    ('py2 unicode latin-1 bytes', b'Vcaf\xe9\n.', {}),
    ('py2 unicode escapes after even and odd backslashes', b'V\\\\u0041 \\\\\\u0041 \\x41 \\ud800 \\U0001F600\n.', {}),
    ('py2 unicode truncated \\u escape', b'V\\u004\n.', {}),
    ('py2 unicode \\U beyond the Unicode range', b'V\\U00110000\n.', {}),
    ('py2 dict protocol 0', b"(dp0\nS'a'\np1\nI1\nsS'b'\np2\n(lp3\nI2\nag1\nas.", {}),
    ('py2 tuple protocol 0 with memo', b"(S'x'\np0\ng0\nI1\ntp1\n.", {}),
    ('py2 protocol 2 mixed str and unicode', b'\x80\x02}q\x00(U\x01aq\x01X\x02\x00\x00\x00\xc3\xa9q\x02U\x01bq\x03U\x04raw\xffq\x04u.',
     {'encoding': 'latin1'}),
    ('py2 protocol 2 str as bytes', b'\x80\x02}q\x00(U\x01aq\x01X\x02\x00\x00\x00\xc3\xa9q\x02U\x01bq\x03U\x04raw\xffq\x04u.',
     {'encoding': 'bytes'}),
    ('py2 protocol 2 str, ASCII refuses', b'\x80\x02U\x04raw\xffq\x00.', {}),
    ('py2 protocol 1 BINSTRING', b'T\x05\x00\x00\x00hello.', {}),
    ('py2 protocol 2 bools and long', b'\x80\x02(\x88\x89\x8a\x01\xff\x8a\x00\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x01t.', {}),
    ('py2 __builtin__.set', b'c__builtin__\nset\np0\n((lp1\nI1\naI2\natp2\nRp3\n.', {}),
    ('py2 __builtin__.xrange', b'c__builtin__\nxrange\np0\n(I0\nI10\nI2\ntp1\nRp2\n.', {}),
    ('py2 __builtin__.frozenset protocol 2', b'\x80\x02c__builtin__\nfrozenset\nq\x00]q\x01(K\x01K\x02e\x85q\x02Rq\x03.', {}),
    ('py2 __builtin__.set without fix_imports', b'c__builtin__\nset\np0\n((lp1\nI1\natp2\nRp3\n.', {'fixImports': False}),
    ('py2 datetime, latin1', b"cdatetime\ndatetime\np0\n(S'\\x07\\xdf\\x01\\x02\\x03\\x04\\x05\\x00\\x00\\x06'\np1\ntp2\nRp3\n.",
     {'encoding': 'latin1'}),
    ('py2 datetime, ASCII refuses', b"cdatetime\ndatetime\np0\n(S'\\x07\\xdf\\x01\\x02\\x03\\x04\\x05\\x00\\x00\\x06'\np1\ntp2\nRp3\n.", {}),
    ('py2 date, bytes', b"cdatetime\ndate\np0\n(S'\\x07\\xdf\\x01\\x02'\np1\ntp2\nRp3\n.", {'encoding': 'bytes'}),
    ('py2 INST registered class', b"(I1\nS'two'\nimymod\nPoint\np0\n(dp1\nS'z'\np2\nI3\nsb.", {}),
    ('py2 OBJ registered class', b"(cmymod\nPoint\np0\nI5\no(dp1\nS'q'\nNsb.", {}),
    ('py2 OBJ protocol 1 binary', b"(cmymod\nPoint\nq\x00K\x05K\x06o}q\x01U\x01qNsb.", {}),
    ('py2 copy_reg._reconstructor registered class',
     b"ccopy_reg\n_reconstructor\np0\n(cmymod\nPoint\np1\nc__builtin__\nobject\np2\nNtp3\nRp4\n(dp5\nS'x'\np6\nI1\nsb.", {}),
    ('py2 PUT/GET memo sharing', b"(lp0\n(lp1\nI1\naag1\na.", {}),
    ('py2 POP and DUP', b"(lp0\nI1\nI2\n0a2I3\naa.", {}),
    ('py2 POP_MARK', b"(lp0\n(I1\nI2\n1I3\na.", {}),
]

# Python 2 str decoding: the same bytes under every encoding and error handler.
PY2_STR = b"U\x0dcaf\xc3\xa9 \xff\xed\xa0\x80 ok."
for enc in ('ASCII', 'latin1', 'bytes', 'utf-8', 'iso-8859-1', 'L1'):
    for errors in ('strict', 'replace', 'ignore', 'surrogateescape', 'backslashreplace'):
        PY2.append((f'py2 str decoded as {enc}/{errors}', PY2_STR, {'encoding': enc, 'errors': errors}))
PY2.append(('py2 str decoded as utf-8, valid', b"U\x05caf\xc3\xa9.", {'encoding': 'utf-8'}))
PY2.append(('py2 str decoded as utf-8, an encoded surrogate', b"U\x03\xed\xa0\x80.", {'encoding': 'utf-8'}))
PY2.append(('py2 str decoded as utf-8/replace keeps a BOM', b"U\x06\xef\xbb\xbfa\xffb.", {'encoding': 'utf-8', 'errors': 'replace'}))
PY2.append(('py2 str decoded as utf-8 keeps a BOM', b"U\x04\xef\xbb\xbfa.", {'encoding': 'utf-8'}))
# Other spellings of the encodings Python knows; a browser's label table maps some of them to windows-1252.
for enc in ('ibm819', 'iso8859', 'latin_1', 'ISO_8859-1:1987', 'csisolatin1', 'ansi_x3.4_1968', 'us-ascii', 'us', 'cp367',
            'cp1252', 'windows-1252', 'utf8', 'UTF-8', 'koi8-r'):
    for errors in ('strict', 'replace'):
        PY2.append((f'py2 str decoded as {enc}/{errors}', b"U\x05a\x80\x81\xe9\xff.", {'encoding': enc, 'errors': errors}))
PY2.append(('py2 str decoded as shift_jis', b"U\x04\x82\xa0\x82\xa2.", {'encoding': 'shift_jis'}))
PY2.append(('py2 str decoded as shift_jis, invalid', b"U\x02a\x80.", {'encoding': 'shift_jis'}))
for errors in ('strict', 'replace', 'ignore', 'surrogateescape', 'backslashreplace'):
    PY2.append((f'py2 str of every byte decoded as cp1252/{errors}', b'T\x00\x01\x00\x00' + bytes(range(256)) + b'.',
                {'encoding': 'cp1252', 'errors': errors}))


# More Python 2 pickles: float text as float() reads it, and BUILD on values without a __dict__.
PY2 += [
    ('py2 F float spellings', b'(lp0\nF.5\naF1.\naF1e5\naF-INF\naF+nan\naF1e-400\naF-.5e-5\naFInfinity\na.', {}),
    ('py2 F with doubled underscore', b'F1__0\n.', {}),
    ('py2 F with a leading underscore', b'F_1\n.', {}),
    ('py2 F with an empty exponent', b'F1e\n.', {}),
    ('py2 F not a number', b'Fabc\n.', {}),
    ('py2 BUILD on a complex', b"c__builtin__\ncomplex\n(F1\nF2\ntR(dS'real'\nS'x'\nsb.", {}),
    ('py2 BUILD on a date', b"cdatetime\ndate\n(I2000\nI1\nI1\ntR(dS'year'\nI5\nsb.", {}),
    ('py2 BUILD on a Decimal', b"cdecimal\nDecimal\n(S'1.5'\ntR(dS'x'\nI5\nsb.", {}),
    ('py2 BUILD on Ellipsis', b"c__builtin__\nEllipsis\n(dS'x'\nI1\nsb.", {}),
    ('py2 BUILD on a range', b"c__builtin__\nxrange\n(I5\ntR(dS'start'\nI1\nsb.", {}),
    ('py2 BUILD on a list', b"(lp0\n(dS'x'\nI1\nsb.", {}),
    ('py2 BUILD with an empty state on a complex', b"c__builtin__\ncomplex\n(F1\nF2\ntR(db.", {}),
    ('py2 BUILD with None on a list', b"(lNb.", {}),
    ('deque APPENDS beyond its maxlen', b'\x80\x02ccollections\ndeque\n)K\x02\x86R(K\x01K\x02K\x03e.', {}),
    ('deque APPEND to maxlen 0', b'\x80\x02ccollections\ndeque\n)K\x00\x86RK\x01a.', {}),
    ('deque from more items than its maxlen', b'\x80\x02ccollections\ndeque\n](K\x01K\x02K\x03eK\x02\x86R.', {}),
    ('deque with a negative maxlen', b'\x80\x02ccollections\ndeque\n)J\xff\xff\xff\xff\x86R.', {}),
    ('READONLY_BUFFER on in-band bytes', b'\x80\x05C\x03abc\x98.', {}),
    ('READONLY_BUFFER on an in-band bytearray', b'\x80\x05\x96\x03\x00\x00\x00\x00\x00\x00\x00abc\x98.', {}),
    ('READONLY_BUFFER on an int', b'\x80\x05K\x01\x98.', {}),
]


class Reduce:
    """Pickles as a call of f(*args): how Python 2 and hand-made reducers write some values."""
    def __init__(self, f, *args):
        self.f, self.args = f, args

    def __reduce__(self):
        return self.f, self.args


def reduce_cases():
    out = []
    good = ['1', '-2.5', '2j', '-j', 'j', '+j', '1+2j', '1-2.5e3j', '(1+2j)', ' ( -1e-3-infj ) ', 'inf+nanj', '1_0.5+2_0j',
            'nan', '-0', '1e+5j', '.5-.5j', 'INFINITYj', '1e5', '-1E-5J', '(j)']
    for p in (0, 2, 4):
        out.append(case('complex from strings', p, pickle.dumps([Reduce(complex, x) for x in good], p)))
    for x in ['1+2', 'abc', '1e5x', '1 + 2j', '1__0', '', '()', 'jj', '1' * 20000 + 'x', '1+2j+3j']:
        out.append(case(f'complex from the string {x[:20]!r}', 2, pickle.dumps(Reduce(complex, x), 2)))
    # Every registered constructor called the way a reducer may call it; CPython's result is the expectation.
    td = datetime.timedelta(hours=1)
    calls = {
        'list(tuple)': Reduce(list, (1, 2)), 'list()': Reduce(list), 'tuple(list)': Reduce(tuple, [1, 2]),
        'dict(pairs)': Reduce(dict, [('a', 1), ('b', 2)]), 'dict(dict)': Reduce(dict, {'a': 1}), 'dict()': Reduce(dict),
        'str(str)': Reduce(str, 'x'), 'str()': Reduce(str), 'int(int)': Reduce(int, 5), 'int()': Reduce(int),
        'float(float)': Reduce(float, 2.5), 'float(int)': Reduce(float, 2), 'float()': Reduce(float),
        'bool(bool)': Reduce(bool, True), 'bool()': Reduce(bool),
        'bytes(list)': Reduce(bytes, [1, 2, 255]), 'bytes(str, enc)': Reduce(bytes, 'abc\xe9', 'latin1'), 'bytes(n)': Reduce(bytes, 3),
        'bytes()': Reduce(bytes), 'bytearray(str, utf-8)': Reduce(bytearray, 'é€', 'utf-8'), 'bytearray(bytes)': Reduce(bytearray, b'xy'),
        'set(str)': Reduce(set, 'abc'), 'set()': Reduce(set), 'frozenset(tuple)': Reduce(frozenset, (1, 2)),
        'range(stop)': Reduce(range, 5), 'range(start, stop)': Reduce(range, 2, 5), 'slice(stop)': Reduce(slice, 3),
        'slice(start, stop)': Reduce(slice, 1, 3), 'complex(re, im)': Reduce(complex, 1, 2), 'complex(re)': Reduce(complex, 1.5),
        'complex()': Reduce(complex), 'OrderedDict(pairs)': Reduce(collections.OrderedDict, [('a', 1)]),
        'Counter(dict)': Reduce(collections.Counter, {'a': 2}), 'defaultdict(factory, dict)': Reduce(collections.defaultdict, list, {'a': [1]}),
        'deque(list, maxlen)': Reduce(collections.deque, [1, 2, 3], 5), 'deque()': Reduce(collections.deque),
        'UUID(hex)': Reduce(uuid.UUID, '12345678123456781234567812345678'),
        'UUID(braced)': Reduce(uuid.UUID, '{12345678-1234-5678-1234-567812345678}'),
        'Decimal(str)': Reduce(decimal.Decimal, '2.50'), 'Decimal(int)': Reduce(decimal.Decimal, 5), 'Decimal()': Reduce(decimal.Decimal),
        'timedelta(d, s, us)': Reduce(datetime.timedelta, 1, 2, 3), 'timedelta()': Reduce(datetime.timedelta),
        'date(y, m, d)': Reduce(datetime.date, 2020, 1, 2), 'time(h, m, s, us)': Reduce(datetime.time, 1, 2, 3, 4),
        'time()': Reduce(datetime.time), 'datetime(y, m, d, h, mi, s, us)': Reduce(datetime.datetime, 2020, 1, 2, 3, 4, 5, 6),
        'datetime(y, m, d, h, mi, s, us, tz)': Reduce(datetime.datetime, 2020, 1, 2, 3, 4, 5, 6, datetime.timezone.utc),
        'timezone(offset, name)': Reduce(datetime.timezone, td, 'X'), 'timezone(offset)': Reduce(datetime.timezone, td),
    }
    for name, call in calls.items():
        for p in (0, 2, 4):
            out.append(case(f'constructor {name}', p, pickle.dumps(call, p)))
    # Python 2 pickled a deque with its items as an argument: a long list must not be spread as call arguments.
    out.append(case('deque of 200000 from a list argument', 2, pickle.dumps(Reduce(collections.deque, list(range(200000))), 2)))
    out.append(case('float from a long bad line', 0, b'F' + b'1' * 100000 + b'x\n.'))
    return out


# ---- making cases ----

def b64(b):
    return base64.b64encode(bytes(b)).decode('ascii')


def case(name, protocol, data, options=None, buffers=()):
    options = options or {}
    bufs = [pickle.PickleBuffer(b) if not isinstance(b, pickle.PickleBuffer) else b for b in buffers]
    try:
        expect, error = describe(loads(data, options, buffers=bufs if buffers else None)), None
    except Exception as e:  # what CPython refuses, the TypeScript side must refuse too
        expect, error = None, type(e).__name__
    out_bufs = []
    for b in bufs:
        with b.raw() as m:
            out_bufs.append({'b64': b64(m.tobytes()), 'readonly': m.readonly})
    return {'name': name, 'protocol': protocol, 'pickle': b64(data), 'buffers': out_bufs,
            'options': options, 'expect': expect, 'error': error}


def buffer_cases():
    PB = pickle.PickleBuffer
    out = []
    # In band: a readonly buffer comes back as bytes, a writable one as bytearray.
    out.append(case('protocol 5 in-band buffers', 5, pickle.dumps([PB(b'readonly'), PB(bytearray(b'writable'))], 5)))
    # Out of band, every buffer.
    bufs = []
    data = pickle.dumps([PB(bytearray(b'writable')), PB(b'readonly'), PB(bytearray()), PB(bytes(range(256)) * 4)],
                        5, buffer_callback=bufs.append)
    out.append(case('protocol 5 out-of-band buffers, readonly and writable', 5, data, buffers=bufs))
    # A buffer_callback that keeps small buffers in band.
    bufs = []
    big = PB(bytearray(b'B' * 100))
    data = pickle.dumps({'small': PB(b'tiny'), 'big': big, 'small rw': PB(bytearray(b'rw')), 'again': big}, 5,
                        buffer_callback=lambda b: (len(b.raw()) < 16) or bufs.append(b))
    out.append(case('protocol 5 mixed in-band and out-of-band', 5, data, buffers=bufs))
    # The same PickleBuffer twice goes out of band twice.
    bufs = []
    pb = PB(b'same')
    data = pickle.dumps((pb, pb), 5, buffer_callback=bufs.append)
    out.append(case('protocol 5 one buffer sent twice', 5, data, buffers=bufs))
    # Too few buffers: CPython refuses.
    out.append(case('protocol 5 out-of-band buffer missing', 5, data, buffers=bufs[:1]))
    return out


def generated_cases():
    out = []
    for name, value in values().items():
        for p in range(HIGHEST + 1):
            out.append(case(name, p, pickle.dumps(value, protocol=p)))
            if p < 3:
                out.append(case(name + ' (fix_imports off)', p, pickle.dumps(value, protocol=p, fix_imports=False)))
    return out


def stream_cases():
    """Several pickles in one stream, as CPython's Unpickler reads them one after the other."""
    every = values()
    vals = [every[k] for k in ('none', 'ints 64-bit edges', 'floats', 'str lone surrogates', 'str astral', 'bytes all byte values',
                               'bytearray', 'tuples', 'dict mixed key types', 'sets', 'frozensets', 'shared references',
                               'recursive dict', 'tuple reached through its own list', 'complex', 'ranges', 'OrderedDict',
                               'defaultdict int', 'Counter', 'deque maxlen', 'datetimes', 'timezones', 'Decimals', 'UUIDs',
                               'kitchen sink', 'list of 2500 (batched APPENDS)')]
    out = {}
    # One Pickler per protocol: its memo spans the dumps, and so does the Unpickler's.
    for p in range(HIGHEST + 1):
        f = io.BytesIO()
        pk = pickle.Pickler(f, protocol=p)
        shared_list = ['shared across dumps']
        for v in vals + [shared_list, shared_list, (shared_list,)]:
            pk.dump(v)
        out[f'one Pickler, protocol {p}'] = f.getvalue()
    # Independent dumps at protocols 0 to 3 (numbered PUT/GET, so a fresh memo index per pickle).
    out['independent dumps, protocols 0-3'] = b''.join(pickle.dumps(v, protocol=p) for p in range(4) for v in vals)
    # Independent dumps at protocols 4 and 5 number their memo with MEMOIZE from the memo's size,
    # so one Unpickler reads them only when its memo is cleared between loads (u.memo.clear() of
    # the pure-Python Unpickler; Unpickler.clearMemo() in TypeScript).
    out['independent dumps, protocols 4-5, memo cleared between loads'] = b''.join(
        pickle.dumps(v, protocol=p) for p in (4, 5) for v in vals)
    result = {}
    for name, data in out.items():
        clear = 'memo cleared' in name
        u = (PyCorpusUnpickler if clear else CorpusUnpickler)(io.BytesIO(data))
        got = []
        while True:
            try:
                got.append(u.load())
            except EOFError:
                break
            if clear:
                u.memo.clear()
        dd = Describer()  # one describer: identity across the pickles of one stream counts
        result[name] = {'pickle': b64(data), 'clearMemo': clear, 'expect': [dd.describe(v) for v in got]}
    return result


def main():
    sys.setrecursionlimit(20000)  # the deep-nesting value
    warnings.simplefilter('ignore')  # Python 2 escapes such as \q are deprecated, and still loaded
    cases = generated_cases() + buffer_cases()
    crafted = [case(name, None, data, options) for name, data, options in PY2] + reduce_cases()
    sys.stdout.write(json.dumps({'cases': cases, 'crafted': crafted, 'streams': stream_cases()}, ensure_ascii=True, allow_nan=False))


if __name__ == '__main__':
    main()
