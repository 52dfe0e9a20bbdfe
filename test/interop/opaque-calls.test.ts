/**
 * Opaque mode, a placeholder called: at protocols 2 and 3 CPython writes an instance whose
 * __getnewargs_ex__ has keyword arguments as functools.partial(cls.__new__, cls, *args,
 * **kwargs)(). Loaded opaquely it is a PyObjectCall of the partial placeholder, inert, and it
 * dumps back to CPython's bytes; without opaque the partial is refused as before.
 */
import t from 'tap'
import { PyObject, PyObjectCall, UnpicklingError, dumps, loads } from '@picklewire/codec'
import { endFileWithoutPython, runPython } from '../helpers/python.js'

endFileWithoutPython(t)

const script = String.raw`
import pickle, struct, sys, types
class Point:
    def __init__(self, x, y=0):
        self.x, self.y = x, y
    def __getnewargs_ex__(self):
        return ((self.x,), {'y': self.y})
Point.__module__ = 'pwopaque'
m = types.ModuleType('pwopaque'); m.Point = Point; sys.modules['pwopaque'] = m
for protocol in (2, 3, 4, 5):
    data = pickle.dumps(Point(3, 4), protocol)
    sys.stdout.buffer.write(struct.pack('<II', protocol, len(data)) + data)
`

t.test('a called placeholder loads inert and dumps back to the same bytes', async (t) => {
  const raw = runPython(script)
  let seen = 0
  for (let at = 0; at < raw.length;) {
    const protocol = raw.readUInt32LE(at)
    const n = raw.readUInt32LE(at + 4)
    const data = new Uint8Array(raw.subarray(at + 8, at + 8 + n))
    at += 8 + n
    seen++
    const v = loads(data, { opaque: true, lossless: true })
    if (protocol <= 3) {
      t.ok(v instanceof PyObjectCall, `protocol ${protocol}: the partial's call is a PyObjectCall`)
      const call = v as PyObjectCall
      t.ok(call.target instanceof PyObject && call.target.callable.name === 'partial', `protocol ${protocol}: it calls the functools.partial placeholder`)
      t.same(call.args, [], `protocol ${protocol}: with no arguments`)
      t.same(call.state, new Map([['x', 3], ['y', 4]]), `protocol ${protocol}: BUILD gave it the instance's state`)
      t.throws(() => loads(data), UnpicklingError, `protocol ${protocol}: without opaque, functools.partial is refused`)
    } else {
      t.ok(v instanceof PyObject && v.origin === 'newobj_ex', `protocol ${protocol}: NEWOBJ_EX as before`)
    }
    t.same(Buffer.from(dumps(v, { protocol })), Buffer.from(data), `protocol ${protocol}: dumps back to CPython's bytes`)
  }
  t.equal(seen, 4)
})

t.test('an argument tuple shared by two opaque objects stays shared: CPython bytes back', async (t) => {
  const raw = runPython(String.raw`
import pickle, sys, functools, types
m = types.ModuleType('pwshared'); sys.modules['pwshared'] = m
def f(*a): return a
f.__module__ = 'pwshared'; m.f = f
ARGS = (1, 2)
class ByReduce:
    def __reduce__(self): return (f, ARGS)
class ByPartial:
    def __reduce__(self): return (functools.partial(f), ARGS)
for c in (ByReduce, ByPartial):
    c.__module__ = 'pwshared'; setattr(m, c.__name__, c)
for v in ([ByReduce(), ByReduce()], [ByPartial(), ByPartial()]):
    for p in range(6):
        d = pickle.dumps(v, p)
        sys.stdout.buffer.write(len(d).to_bytes(4, 'little') + bytes([p]) + d)
`)
  let cases = 0
  for (let at = 0; at < raw.length;) {
    const n = raw.readUInt32LE(at)
    const protocol = raw[at + 4]!
    const data = new Uint8Array(raw.subarray(at + 5, at + 5 + n))
    at += 5 + n
    cases++
    const v = loads(data, { opaque: true, lossless: true }) as (PyObject | PyObjectCall)[]
    t.equal(v[0]!.args, v[1]!.args, `protocol ${protocol}: one args tuple for both`)
    t.same(Buffer.from(dumps(v, { protocol })), Buffer.from(data), `protocol ${protocol}: CPython's bytes back`)
  }
  t.equal(cases, 12)
})
