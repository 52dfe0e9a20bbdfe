/**
 * The pickles the pickletools tests feed to CPython 3.11's pickletools and to ours: made by
 * python3 itself (every protocol, fix_imports on and off, out-of-band buffers, extension
 * codes, persistent ids, one pickler's stream of pickles) and written by hand (Python 2
 * style text opcodes, and malformed pickles of every kind pickletools reports).
 */
import { execFileSync } from 'node:child_process'
import { PYTHON } from '../helpers/python.js'

/** Python that defines corpus() -> [(name, data, kind, buffers)], kind 'single' or 'stream'. */
export const CORPUS_PY = String.raw`
import base64, collections, copyreg, datetime, decimal, io, json, pickle, pickletools, struct, sys, uuid
sys.setrecursionlimit(20000)

class Plain:
    def __init__(self, **kw): self.__dict__.update(kw)
    def __eq__(self, o): return type(self) is type(o) and self.__dict__ == o.__dict__

class Slotted:
    __slots__ = ('a', 'b')
    def __init__(self, a, b): self.a = a; self.b = b
    def __eq__(self, o): return type(self) is type(o) and (self.a, self.b) == (o.a, o.b)

class NewArgsEx:
    def __new__(cls, *args, **kw):
        o = object.__new__(cls); o.args = args; o.kw = kw; return o
    def __getnewargs_ex__(self): return self.args, self.kw
    def __eq__(self, o): return type(self) is type(o) and (self.args, self.kw) == (o.args, o.kw)

class WithState:
    def __init__(self, v): self.v = v
    def __getstate__(self): return {'v': self.v, 'extra': [1, 2]}
    def __setstate__(self, s): self.v = s['v']
    def __eq__(self, o): return type(self) is type(o) and self.v == o.v

class Ext1: pass
class Ext2: pass
class Ext4: pass
copyreg.add_extension(__name__, 'Ext1', 0xc8)
copyreg.add_extension(__name__, 'Ext2', 0x1234)
copyreg.add_extension(__name__, 'Ext4', 0x123456)

class PidPickler(pickle.Pickler):
    def persistent_id(self, obj):
        return obj[4:] if isinstance(obj, str) and obj.startswith('pid:') else None

class PidUnpickler(pickle.Unpickler):
    def persistent_load(self, pid): return 'pid:' + pid

def pid_dumps(v, proto):
    f = io.BytesIO(); PidPickler(f, proto).dump(v); return f.getvalue()

def load(data, buffers=()):
    f = io.BytesIO(data)
    return PidUnpickler(f, buffers=[bytearray(b) for b in buffers]).load()

def same(a, b):
    # == where it answers; else (recursive values, numpy arrays, nan) the same repr
    try:
        if type(a) is type(b) and a == b: return True
    except Exception:
        pass
    return type(a) is type(b) and repr(a) == repr(b)

def values():
    rec = []; rec.append(rec)
    selfdict = {}; selfdict['me'] = selfdict
    shared = [1, 'two']
    yield 'ints', [0, 1, -1, 255, 256, 65535, 65536, 2**31 - 1, -2**31, 2**31, 2**53 - 1, 2**53 + 1, -2**63, 2**64, 2**1000, -(2**2000)]
    yield 'floats', [0.0, -0.0, 1.0, 1.5, -2.25, 1e16, 1e15, 9999999999999998.0, 1e-4, 1e-5, 1e22, 1.7976931348623157e308, 5e-324, 0.1, 123456789.123456789, float('inf'), float('-inf'), float('nan')]
    yield 'singletons', (None, True, False, Ellipsis, NotImplemented)
    yield 'strs', ['', 'abc', "it's", 'say "hi"', 'both \' and "', 'tab\tnl\nret\r', '\x00\x1f\x7f\x80\x9f\xa0\xad\xff', 'caf\xe9 \u20ac \U0001f600', 'a\\b\\', '\u2028\u00a0\u200b\ufeff\u0378\U0001e030\U0010ffff', 'x' * 300]
    yield 'surrogates', ['\ud800', '\udfff', '\ud800\udc00', 'a\udbff\udfffb', '\udc00\ud800']
    yield 'bytes', [b'', b'abc', b"'", b'"', b'\'"', bytes(range(256)), b'y' * 300]
    yield 'bytearrays', [bytearray(b'abc'), bytearray(), bytearray(range(256)), bytearray(b"it's"), bytearray(b"\'\\\"")]
    yield 'containers', ((), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4), [], [1], {}, {'a': 1, 2: 'b', (3,): None}, set(), {1, 2, 3}, frozenset(), frozenset({4}))
    yield 'long list', list(range(2000))
    yield 'long dict', {i: str(i) for i in range(1200)}
    yield 'long set', set(range(1200))
    yield 'shared', [shared, shared, (shared,), {'k': shared}]
    yield 'recursive list', rec
    yield 'recursive dict', selfdict
    yield 'tuple in list in tuple', (lambda l: (lambda t: (l.append(t), t)[1])((l, 2)))([])
    yield 'stdlib', [datetime.datetime(2020, 1, 2, 3, 4, 5, 6), datetime.date(1999, 12, 31), datetime.timedelta(days=1, seconds=2), decimal.Decimal('1.5'), uuid.UUID(int=1), collections.OrderedDict(a=1, b=2), collections.deque([1, 2]), collections.Counter('aab'), complex(1, -2), range(1, 10, 3), slice(1, 2, 3)]
    yield 'globals', [len, int, dict.fromkeys, collections.OrderedDict, pickle.PickleBuffer]
    yield 'instances', [Plain(a=1, b=[2]), NewArgsEx(1, 2, key='v'), WithState(3)]
    yield 'slots', Slotted(1, 'x')
    yield 'extensions', [Ext1, Ext2, Ext4, Ext1]

def big_values():
    yield 'big bytes', b'x' * 100000
    yield 'big str', 'y' * 70000
    yield 'many strs', [str(i) for i in range(30000)]
    yield 'big bytearray', bytearray(b'z' * 70000)

def corpus():
    items = []
    def add(name, data, kind='single', buffers=()):
        items.append((name, data, kind, list(buffers)))
    def dumps(name, v, proto, **kw):
        try:
            add(name, pickle.dumps(v, proto, **kw))
        except TypeError:
            pass  # e.g. __slots__ without __getstate__ below protocol 2
    for name, v in values():
        for proto in range(6):
            dumps('p%d %s' % (proto, name), v, proto)
        for proto in range(3):
            dumps('p%d %s, fix_imports=False' % (proto, name), v, proto, fix_imports=False)
    for name, v in big_values():
        for proto in (0, 2, 4, 5):
            add('p%d %s' % (proto, name), pickle.dumps(v, proto))
    for proto in range(6):
        add('p%d persistent ids' % proto, pid_dumps(['pid:abc', 'plain', 'pid:d\u00e9f' if proto else 'pid:def'], proto))
    # out-of-band buffers
    for name, v, keep in [
        ('readonly buffer', pickle.PickleBuffer(b'abc'), False),
        ('writable buffer', pickle.PickleBuffer(bytearray(b'defg')), False),
        ('buffers in a list', [pickle.PickleBuffer(b'a'), b'inband', pickle.PickleBuffer(bytearray(b'b'))], False),
        ('buffer kept in band', pickle.PickleBuffer(b'xyz'), True),
    ]:
        bufs = []
        def cb(b):
            if keep: return True
            bufs.append(bytes(b.raw())); return False
        add('p5 oob %s' % name, pickle.dumps(v, 5, buffer_callback=cb), 'single', bufs)
    try:
        import numpy
        arr = numpy.arange(12, dtype='<i4').reshape(3, 4)
        for proto in (2, 4, 5):
            add('p%d numpy array' % proto, pickle.dumps(arr, proto))
        bufs = []
        add('p5 oob numpy array', pickle.dumps(arr, 5, buffer_callback=lambda b: bufs.append(bytes(b.raw()))), 'single', bufs)
    except ImportError:
        pass

    # Python 2 style pickles, written by hand with text opcodes and Python 2 types
    py2 = [
        ('py2 list', b"(lp0\nI1\naI2\naS'abc'\np1\naF1.5\naL12345678901234567890L\naI00\naI01\naN(tp2\na."),
        ('py2 dict unicode', b"(dp0\nS'k'\np1\nVv\\u20ac\\U0001f600\np2\ns."),
        ('py2 reconstructor', b"ccopy_reg\n_reconstructor\np0\n(c__main__\nPlain\np1\nc__builtin__\nobject\np2\nNtp3\nRp4\n(dp5\nS'x'\np6\nI1\nsb."),
        ('py2 inst', b"(i__main__\nPlain\np0\n(dp1\nS'a'\np2\nI1\nsb."),
        ('py2 obj', b"(c__main__\nPlain\nq\x00o}q\x01b."),
        ('py2 short binstring', b'\x80\x02U\x05helloq\x00.'),
        ('py2 binstring', b'\x80\x02T\x05\x00\x00\x00hello.'),
        ('py2 latin-1 binstring', b'\x80\x02U\x04\xe9\xff\x80\xa0.'),
        ('py2 double quotes', b'S"double \'quoted\'"\n.'),
        ('py2 escapes', b"S'a\\nb\\t\\\\c\\'d\\x41\\101\\q'\n."),
        ('py2 empty string', b"S''\n."),
        ('py2 one quote', b"S'\n."),
        ('py2 persid', b"Pabc\n."),
        ('py2 binpersid', b"\x80\x02X\x01\x00\x00\x00aQ."),
        ('py2 pop mark', b"(I1\nI2\n1N."),
        ('py2 dup', b"(I1\n2t."),
        ('py2 pop', b"I1\n0N."),
        ('py2 pop of a mark', b"N(0."),
        ('py2 ext1', b'\x80\x02\x82\x01.'),
        ('py2 ext2', b'\x80\x02\x83\x01\x02.'),
        ('py2 ext4', b'\x80\x02\x84\x01\x02\x03\x04.'),
        ('py2 get text', b"(lp0\ng0\na."),
        ('py2 long binput', b'\x80\x02]r\x00\x01\x00\x00j\x00\x01\x00\x00a.'),
        ('py2 int forms', b"(I00\nI01\nI 7 \nI-0\nI+5\nI1_000\nI0012\nI99999999999999999999\nl."),
        ('py2 float forms', b"(F1e-05\nFinf\nF-nan\nF 1_0.5 \nF1E+300\nF.5\nF5.\nF-Infinity\nF1e400\nl."),
        ('py2 long forms', b"(L123\nL-0L\nL" + b"9" * 4300 + b"L\nl."),
        ('py2 unicode escapes', b"V\\u20ac\\U0001f600\\ud800\\udc00\\\\u1234\\\\\\u0041\\U0000d800x\n."),
        ('py2 unicode latin-1', b"Vcaf\xe9\\\n."),
        ('py2 global escapes', b"cmod\\x41\nna\\155e\n."),
        ('py2 put false key', b"Np00\n0g0\n."),
        ('py2 put negative', b"Np-1\ng-1\n0."),
        ('py2 memoize', b'\x80\x04N\x94\x94.'),
        ('p3 encoded surrogate pair', b'X\x06\x00\x00\x00\xed\xa0\x80\xed\xb0\x80.'),
        ('p4 binunicode8', b'\x80\x04\x8d\x01\x00\x00\x00\x00\x00\x00\x00a.'),
        ('p4 binbytes8', b'\x80\x04\x8e\x02\x00\x00\x00\x00\x00\x00\x00ab.'),
        ('p4 frame inside', b'\x80\x04\x95\x02\x00\x00\x00\x00\x00\x00\x00N\x94\x95\x01\x00\x00\x00\x00\x00\x00\x00h\x00\x86.'),
        ('p5 bytearray8', b'\x80\x05\x96\x03\x00\x00\x00\x00\x00\x00\x00abc.'),
        ('p5 next buffer', b'\x80\x05\x97\x98\x97\x86.'),
        ('proto 9', b'\x80\x09N.'),
        ('late proto', b'N\x80\x03\x80\x02h\x00.'),
        ('get before put', b'\x80\x02h\x00Nq\x00\x86.'),
        ('text get before put', b'g0\nNp0\n\x86.'),
        ('stack_global', b'\x80\x04\x8c\x08builtins\x8c\x03len\x93.'),
        ('newobj', b'\x80\x02c__main__\nPlain\n)\x81.'),
        ('newobj_ex', b'\x80\x04c__main__\nPlain\n)}\x92.'),
        ('addtems frozenset', b'\x80\x04\x8f(K\x01\x90(K\x02\x91\x86.'),
        ('long4', b'\x80\x02\x8b\x03\x00\x00\x00\x00\x00\x80.'),
        ('long1 zero', b'\x80\x02\x8a\x00.'),
    ]
    for name, data in py2:
        add(name, data)

    # malformed pickles
    bad = [
        ('empty', b''),
        ('unknown opcode', b'\xff'),
        ('unknown opcode later', b'N\x00'),
        ('unknown Z', b'(Z'),
        ('unknown in proto 5', b'\x80\x05\x99.'),
        ('stop on empty stack', b'.'),
        ('append on empty stack', b'a.'),
        ('append on one item', b'Na.'),
        ('reduce short', b'NR.'),
        ('pop empty', b'0.'),
        ('two left', b'NN.'),
        ('mark left', b'N(.'),
        ('tuple without mark', b't.'),
        ('tuple without mark 2', b'Nt.'),
        ('only a mark', b'(.'),
        ('pop of mark then stop', b'(0.'),
        ('marks', b'((l.'),
        ('mark popped by append', b'N(aNl.'),
        ('appends without mark', b'e.'),
        ('pop_mark without mark', b'1.'),
        ('mark in memo', b'(q\x00.'),
        ('mark in memo text', b'(p0\n.'),
        ('memoize empty', b'\x94.'),
        ('memoize mark', b'(\x94.'),
        ('put empty', b'q\x00.'),
        ('get missing', b'h\x00.'),
        ('get text missing', b'g0\n.'),
        ('get text missing bool', b'g01\n.'),
        ('long get missing', b'j\x00\x00\x00\x00.'),
        ('get other missing', b'Nq\x00h\x01.'),
        ('put twice', b'Nq\x00q\x00.'),
        ('put twice text and binary', b'Nq\x00p0\n.'),
        ('put false then zero', b'Np00\np0\n.'),
        ('memoize after put', b'\x80\x04Nq\x01\x94.'),
        ('int junk', b'I12x\n.'),
        ('int empty', b'I\n.'),
        ('int long suffix', b'I1234L\n.'),
        ('int huge', b'I' + b'1' * 5000 + b'\n.'),
        ('int huge junk', b'I' + b'1' * 300 + b'x\n.'),
        ('int underscores', b'I1__2\n.'),
        ('long empty', b'L\n.'),
        ('long L only', b'LL\n.'),
        ('long huge', b'L' + b'7' * 4301 + b'L\n.'),
        ('float junk', b'F1.2.3\n.'),
        ('float words', b'Fabc\n.'),
        ('float underscore', b'F1_.5\n.'),
        ('string no close', b"S'abc\n."),
        ('string no quotes', b"Sabc\n."),
        ('string mixed quotes', b'S"abc\'\n.'),
        ('string bad hex', b"S'\\x4'\n."),
        ('string trailing backslash', b"S'ab\\'\n."),
        ('string non-ascii', b"S'\xe9'\n."),
        ('string escaped non-ascii', b"S'a\\xe9'\n."),
        ('string empty line', b'S\n.'),
        ('unicode truncated u', b'Vab\\u12\n.'),
        ('unicode truncated U', b'Vab\\U0001\n.'),
        ('unicode out of range', b'Vab\\U00110000\n.'),
        ('unicode u at end', b'Vx\\u\n.'),
        ('utf8 invalid start', b'X\x02\x00\x00\x00\xff\xfe.'),
        ('utf8 lone lead', b'X\x01\x00\x00\x00\xc3.'),
        ('utf8 cut surrogate', b'X\x02\x00\x00\x00\xed\xa0.'),
        ('utf8 bad continuation', b'\x8c\x02\xc3(.'),
        ('utf8 bad third', b'\x8c\x03\xe2\x82(.'),
        ('utf8 cut three', b'\x8c\x02\xe2\x82.'),
        ('utf8 overlong', b'\x8c\x02\xc0\x80.'),
        ('utf8 overlong three', b'\x8c\x03\xe0\x80\x80.'),
        ('utf8 too big', b'\x8c\x04\xf4\x90\x80\x80.'),
        ('utf8 cut four', b'\x8c\x03\xf0\x9f\x98.'),
        ('utf8 bad fourth', b'\x8c\x04\xf0\x9f\x98A.'),
        ('utf8 later error', b'\x8c\x05ab\xed\xa0\x80\xff.'),
        ('binstring negative', b'T\xff\xff\xff\xff.'),
        ('long4 negative', b'\x8b\xff\xff\xff\xff.'),
        ('binbytes8 past maxsize', b'\x8e' + b'\xff' * 8 + b'.'),
        ('binbytes8 huge', b'\x8e' + (2**62).to_bytes(8, 'little') + b'.'),
        ('binunicode8 huge', b'\x8d' + (2**40).to_bytes(8, 'little') + b'ab.'),
        ('bytearray8 short', b'\x96\x05\x00\x00\x00\x00\x00\x00\x00ab.'),
        ('long1 short', b'\x8a\x05ab'),
        ('long4 too many digits', b'\x8b' + (2000).to_bytes(4, 'little') + b'\x7f' * 2000 + b'.'),
        ('long4 too many digits negative', b'N\x8b' + (1800).to_bytes(4, 'little') + b'\x00' * 1799 + b'\x80.'),
        ('global one line', b'cmod\n'),
        ('global no newline', b'cmod\nname'),
        ('global non-ascii', b'c\xe9\nx\n.'),
        ('persid bad escape', b'Pa\\x4\n.'),
        ('frame cut', b'\x95\x00\x00.'),
        ('binint cut', b'J\x01\x02'),
        ('binfloat cut', b'G\x01\x02\x03'),
        ('binbytes cut', b'B\x05\x00\x00\x00ab'),
        ('short binbytes cut', b'C\x05ab'),
        ('no stop', b'N'),
        ('no newline', b'I12'),
    ]
    for name, data in bad:
        add('bad ' + name, data)

    # every prefix of a few pickles: truncated input at every position
    cuts = [pickle.dumps(['a', 1, 2.5, b'b', (None, True)], proto) for proto in range(6)]
    cuts += [dict(py2)['py2 list'], dict(py2)['py2 unicode escapes'], dict(py2)['py2 reconstructor']]
    for i, whole in enumerate(cuts):
        for n in range(len(whole)):
            add('cut %d at %d' % (i, n), whole[:n])

    # several pickles in one stream
    for proto in range(6):
        f = io.BytesIO()
        p = pickle.Pickler(f, proto)
        x = [1, 'shared']
        p.dump(x); p.dump([x, x]); p.dump('z')
        add('stream p%d one pickler' % proto, f.getvalue(), 'stream')
    add('stream of protocols', b''.join(pickle.dumps({'p': p}, p) for p in range(6)), 'stream')
    add('stream with junk', pickle.dumps([1], 2) + b'junk', 'stream')
    add('stream cut', pickle.dumps([1], 2) + pickle.dumps([2], 2)[:-3], 'stream')
    return items

def b64(b): return base64.b64encode(b).decode('ascii')
def unb64(s): return base64.b64decode(s)
`

/** One corpus input as the tests see it. */
export interface CorpusItem {
  name: string
  data: Uint8Array
  kind: 'single' | 'stream'
  buffers: Uint8Array[]
}

export function fromBase64(s: string): Uint8Array {
  const b = Buffer.from(s, 'base64')
  return new Uint8Array(b.buffer, b.byteOffset, b.byteLength)
}

/** Runs CORPUS_PY followed by task, which prints JSON; returns it parsed. */
export function runCorpusTask<T>(task: string, input?: string): T {
  let out: Buffer
  try {
    out = execFileSync(PYTHON, ['-c', CORPUS_PY + '\n' + task], { input: input ?? '', maxBuffer: 1 << 30, stdio: ['pipe', 'pipe', 'pipe'] })
  } catch (err) {
    const stderr = String((err as { stderr?: Buffer }).stderr ?? '')
    throw new Error(`python3 failed: ${stderr.trim().split('\n').slice(-3).join(' | ')}`)
  }
  return JSON.parse(out.toString('utf8')) as T
}

/** Python that prints the corpus as JSON items {name, data, kind, buffers} (base64). */
export const CORPUS_AS_JSON = String.raw`
items = [dict(name=n, data=b64(d), kind=k, buffers=[b64(b) for b in bufs]) for n, d, k, bufs in corpus()]
`

export function corpusItems(raw: { name: string; data: string; kind: string; buffers: string[] }[]): CorpusItem[] {
  return raw.map((r) => ({
    name: r.name,
    data: fromBase64(r.data),
    kind: r.kind === 'stream' ? 'stream' : 'single',
    buffers: r.buffers.map(fromBase64),
  }))
}

/**
 * Python's annotation, the first line of each opcode's doc string, by opcode name: the one
 * part of dis's text that is allowed to differ, since our descriptions are our own words.
 */
export const PY_DOCS = String.raw`
docs = {o.name: o.doc.split('\n', 1)[0] for o in pickletools.opcodes}
`

const OPCODE_LINE = /^ *\d+: \S+ +([A-Z][A-Z0-9_]*)/

/**
 * Removes the annotation from each line of an annotated listing: a line that lists opcode
 * NAME must end with ' ' + docs[NAME], which is cut off; any other line is kept whole.
 * Returns undefined (and the bad line) when a line lacks its annotation.
 */
export function stripAnnotations(listing: string, docs: Readonly<Record<string, string>>): { text: string; badLine?: string } {
  const lines = listing.split('\n')
  const out: string[] = []
  for (const line of lines) {
    const m = OPCODE_LINE.exec(line)
    if (m === null) {
      out.push(line)
      continue
    }
    const doc = docs[m[1]!]
    if (doc === undefined || !line.endsWith(' ' + doc)) return { text: out.join('\n'), badLine: line }
    out.push(line.slice(0, line.length - doc.length - 1))
  }
  return { text: out.join('\n') }
}

/** Where two texts first differ, for a readable failure message. */
export function firstDifference(a: string, b: string): string {
  const la = a.split('\n')
  const lb = b.split('\n')
  for (let i = 0; i < Math.max(la.length, lb.length); i++) {
    if (la[i] !== lb[i]) return `line ${i + 1}:\n  python: ${JSON.stringify(la[i])}\n  ours:   ${JSON.stringify(lb[i])}`
  }
  return 'no difference'
}
