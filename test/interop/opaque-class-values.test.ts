/**
 * Opaque mode, an instance whose class is itself a placeholder: a nested class that CPython
 * writes as builtins.getattr(Outer, 'Inner') below protocol 4, or a class whose metaclass
 * reduces it through getattr at every protocol. NEWOBJ, NEWOBJ_EX and copyreg._reconstructor
 * on such a class give inert PyObjectCalls that dump back to CPython's bytes. NEWOBJ on a
 * builtin type follows CPython's __new__; on a builtin function it is refused as CPython does.
 */
import t from 'tap'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { PyFloat, PyObject, PyObjectCall, UnpicklingError, dumps, loads } from '@picklewire/codec'
import { endFileWithoutPython, runPython } from '../helpers/python.js'

endFileWithoutPython(t)

const moduleSource = String.raw`
import copyreg
class Outer:
    class Inner:
        def __init__(self, x): self.x = x
        def __eq__(self, o): return type(o) is type(self) and o.__dict__ == self.__dict__
class Meta(type): pass
class Holder: pass
class Point(metaclass=Meta):
    def __init__(self, x, y): self.x, self.y = x, y
    def __getnewargs__(self): return (self.x, self.y)
    def __eq__(self, o): return type(o) is type(self) and o.__dict__ == self.__dict__
class PointKw(metaclass=Meta):
    def __new__(cls, x, y=0): return object.__new__(cls)
    def __init__(self, x, y=0): self.x, self.y = x, y
    def __getnewargs_ex__(self): return ((self.x,), {'y': self.y})
    def __eq__(self, o): return type(o) is type(self) and o.__dict__ == self.__dict__
for c in (Point, PointKw):
    c.__qualname__ = 'Holder.' + c.__name__
    setattr(Holder, c.__name__, c)
copyreg.pickle(Meta, lambda c: (getattr, (Holder, c.__name__)))
`

const dir = mkdtempSync(join(tmpdir(), 'pw-opaque-class-'))
writeFileSync(join(dir, 'pwnested.py'), moduleSource)
t.teardown(() => rmSync(dir, { recursive: true, force: true }))
const prelude = `import sys, pickle, struct\nsys.path.insert(0, ${JSON.stringify(dir)})\nimport pwnested\n`

/** Pickles of exprs (over pwnested) at the given protocols, made by CPython. */
function cpythonPickles(cases: readonly (readonly [string, number])[]): Uint8Array[] {
  const out = runPython(prelude + [
    `for expr, p in ${JSON.stringify(cases)}:`,
    '    d = pickle.dumps(eval(expr), p)',
    "    sys.stdout.buffer.write(struct.pack('<I', len(d)) + d)",
  ].join('\n'))
  const res: Uint8Array[] = []
  for (let at = 0; at < out.length;) {
    const n = out.readUInt32LE(at)
    res.push(new Uint8Array(out.subarray(at + 4, at + 4 + n)))
    at += 4 + n
  }
  return res
}

/** Whether CPython loads each ours to a value equal to, and of the same type as, eval(expr). */
function cpythonAgrees(pairs: readonly (readonly [string, Uint8Array])[]): string[] {
  const input = JSON.stringify(pairs.map(([e, d]) => [e, Buffer.from(d).toString('base64')]))
  const out = runPython(prelude + [
    'import base64, json',
    'for expr, b in json.loads(sys.stdin.read()):',
    '    v, w = pickle.loads(base64.b64decode(b)), eval(expr)',
    "    print('ok' if type(v) is type(w) and v == w else 'differs: %r' % (v,))",
  ].join('\n'), new TextEncoder().encode(input))
  return out.toString().trim().split('\n')
}

t.test('an instance of a class reached through getattr loads inert and dumps back', async (t) => {
  const exprs = ['pwnested.Outer.Inner(1)', 'pwnested.Point(3, 4)']
  const cases = exprs.flatMap((e) => [0, 1, 2, 3, 4, 5].map((p) => [e, p] as const))
  cases.push(['pwnested.PointKw(3, 4)', 4], ['pwnested.PointKw(3, 4)', 5])
  const pickles = cpythonPickles(cases)
  const back: [string, Uint8Array][] = []
  cases.forEach(([expr, protocol], i) => {
    const data = pickles[i]!
    const what = `${expr} at protocol ${protocol}`
    const v = loads(data, { opaque: true, lossless: true })
    const nestedByName = expr.includes('Inner') && protocol >= 4
    if (nestedByName) t.ok(v instanceof PyObject, `${what}: a PyObject of a named class`)
    else {
      t.ok(v instanceof PyObjectCall, `${what}: a PyObjectCall`)
      const c = v as PyObjectCall
      const expected = protocol < 2 ? 'reconstructor' : expr.includes('PointKw') ? 'newobj_ex' : 'newobj'
      t.equal(c.origin, expected, `${what}: made by ${expected}`)
      t.ok(c.target instanceof PyObject && c.target.callable.name === 'getattr', `${what}: its class is the getattr placeholder`)
      t.ok(c.state instanceof Map && (c.state as Map<string, unknown>).get('x') !== undefined, `${what}: BUILD gave it its state`)
    }
    t.same(Buffer.from(dumps(v, { protocol })), Buffer.from(data), `${what}: dumps back to CPython's bytes`)
    back.push([expr, dumps(v, { protocol })])
  })
  t.same(cpythonAgrees(back), back.map(() => 'ok'), 'CPython loads every one back to an equal value of the same type')
})

// CPython writes NEWOBJ on a builtin type only for a __reduce__ naming copyreg.__newobj__ with
// an object of that type, which its pickler refuses for another class: these are by hand, and
// CPython's own loads is the reference.
const p2 = (body: string): Uint8Array => Buffer.from(`\x80\x02${body}.`, 'latin1')
const builtinNew: [string, Uint8Array, string][] = [
  ['int.__new__(int)', p2('cbuiltins\nint\n)\x81'), '0'],
  ['int.__new__(int, 5)', p2('cbuiltins\nint\nK\x05\x85\x81'), '5'],
  ['float.__new__(float, 2.0)', p2('cbuiltins\nfloat\nG@\x00\x00\x00\x00\x00\x00\x00\x85\x81'), '2.0'],
  ['str.__new__(str, "a")', p2('cbuiltins\nstr\nX\x01\x00\x00\x00a\x85\x81'), "'a'"],
  ['list.__new__(list, [1])', p2('cbuiltins\nlist\n]K\x01a\x85\x81'), '[]'],
]

t.test('NEWOBJ on a builtin type is its __new__, as in CPython', async (t) => {
  const reprs = runPython([
    'import pickle, sys, base64, json',
    'for b in json.loads(sys.stdin.read()): print(repr(pickle.loads(base64.b64decode(b))))',
  ].join('\n'), new TextEncoder().encode(JSON.stringify(builtinNew.map(([, d]) => Buffer.from(d).toString('base64'))))).toString().trim().split('\n')
  t.same(reprs, builtinNew.map(([, , r]) => r), 'CPython loads them so')
  t.same(loads(builtinNew[0]![1]), 0)
  t.same(loads(builtinNew[1]![1]), 5)
  t.same(loads(builtinNew[1]![1], { opaque: true }), 5, 'the same in opaque mode')
  const f = loads(builtinNew[2]![1], { lossless: true })
  t.ok(f instanceof PyFloat && f.value === 2, 'lossless: an integral float stays a float')
  t.same(loads(builtinNew[3]![1]), 'a')
  t.same(loads(builtinNew[4]![1]), [], 'a mutable type starts empty: __init__ does not run')
  const back = cpythonAgrees([['float(2.0)', dumps(f, { protocol: 2 })], ['5', dumps(loads(builtinNew[1]![1]), { protocol: 2 })]])
  t.same(back, ['ok', 'ok'], 'dumped back, CPython loads equal values of the same types')
})

t.test('NEWOBJ and copyreg._reconstructor on a builtin function are refused, as CPython does', async (t) => {
  const bad = [
    p2('cbuiltins\nlen\n)\x81'),
    p2('cbuiltins\ngetattr\n)\x81'),
    Buffer.from('ccopy_reg\n_reconstructor\n(c__builtin__\nlen\nc__builtin__\nobject\nNtR.', 'latin1'),
  ]
  const cpython = runPython([
    'import pickle, sys, base64, json',
    'for b in json.loads(sys.stdin.read()):',
    '    try: pickle.loads(base64.b64decode(b)); print("loaded")',
    '    except Exception as e: print(type(e).__name__)',
  ].join('\n'), new TextEncoder().encode(JSON.stringify(bad.map((d) => Buffer.from(d).toString('base64'))))).toString().trim().split('\n')
  t.same(cpython, ['UnpicklingError', 'UnpicklingError', 'TypeError'], 'CPython refuses each')
  for (const d of bad) {
    t.throws(() => loads(d, { opaque: true }), { constructor: UnpicklingError, message: /builtin function, not a type/ }, `opaque mode refuses ${JSON.stringify(Buffer.from(d).toString('latin1'))}`)
  }
})

t.test('NEWOBJ_EX on a builtin type with keyword arguments is refused, naming them', async (t) => {
  // int.__new__(int, '10', base=16), which CPython evaluates (16); the codec does not parse strings as ints.
  const data = Buffer.from('\x80\x04\x8c\x08builtins\x8c\x03int\x93\x8c\x0210\x85}\x8c\x04baseK\x10s\x92.', 'latin1')
  t.equal(runPython('import pickle, sys; print(pickle.loads(sys.stdin.buffer.read()))', data).toString().trim(), '16', 'CPython loads it')
  t.throws(() => loads(data), { constructor: UnpicklingError, message: /int\.__new__ with keyword arguments is not supported, got Map/ })
})
