/**
 * What the Node pickler writes, the Python peer's default unpickler admits: each value below,
 * pickled by @picklewire/codec at protocols 0-5, is loaded by the real CPython both with
 * picklewire.ws.restricted_loads and with pickle.loads, and the two must agree.
 */
import t from 'tap'
import {
  Complex, Counter, DType, Decimal, Deque, Ellipsis, FrozenSet, NDArray, NumpyScalar, OrderedDict, PyRange, Tuple, UUID, dumps,
} from '@picklewire/codec'
import { runPython } from '../helpers/python.js'
import { PYTHON_DIR, pythonMissing } from './ws-helpers.js'

function values(): [string, unknown][] {
  const ordered = new OrderedDict()
  ordered.set('a', 1)
  const counter = new Counter()
  counter.set('a', 3)
  const deque = new Deque()
  deque.push(1, 2)
  return [
    ['dict', new Map<unknown, unknown>([['a', 1], [2, 'b']])],
    ['set', new Set([1, 2, 3])],
    ['tuple', Tuple.fromItems([1, 'x', null])],
    ['complex', new Complex(1, -2)],
    ['frozenset', new FrozenSet([1, 2])],
    ['Decimal', new Decimal('1.25')],
    ['UUID', new UUID(12345n)],
    ['range', new PyRange(0, 10, 2)],
    ['OrderedDict', ordered],
    ['Counter', counter],
    ['deque', deque],
    ['bytes', new Uint8Array([1, 2, 3])],
    ['int past 2**64', 2n ** 100n],
    ['Ellipsis', Ellipsis],
    ['float32 array', new NDArray(new Float32Array([1, 2, 3]))],
    ['int64 2x2 Fortran array', new NDArray(new BigInt64Array([1n, 2n, 3n, 4n]), { shape: [2, 2], order: 'F' })],
    ['str array', new NDArray(new Uint32Array([97, 98, 99, 100]), { dtype: '<U2', shape: [2] })],
    ['datetime64 array', new NDArray(new BigInt64Array([1n, 2n]), { dtype: '<M8[ns]' })],
    ['object array', new NDArray(['a', 1, null], { dtype: 'O' })],
    ['float16 array', new NDArray(new Uint16Array([0x3c00]), { dtype: '<f2' })],
    ['dtype', DType.of('<f8')],
    ['float32 scalar', new NumpyScalar(DType.of('<f4'), 1.5)],
  ]
}

const CHECK = `
import json, pickle, struct, sys, warnings
sys.path.insert(0, ${JSON.stringify(PYTHON_DIR)})
from picklewire import ws as pw
warnings.simplefilter('error')  # what Node writes by default loads without a warning, restricted or not
data, out, at = sys.stdin.buffer.read(), {}, 0
while at < len(data):
    n, m = struct.unpack_from('<II', data, at)
    name = data[at + 8:at + 8 + n].decode()
    p = data[at + 8 + n:at + 8 + n + m]
    at += 8 + n + m
    try:
        got = pw.restricted_loads(p)
    except Exception as e:
        out[name] = ['refused', f'{type(e).__name__}: {e}']
        continue
    expected = pickle.loads(p)
    out[name] = ['same' if (type(got), repr(got)) == (type(expected), repr(expected)) else 'differs', repr(got)[:120], repr(expected)[:120]]
print(json.dumps(out))
`

const missing = pythonMissing(t)
t.test('every value the Node pickler writes at protocols 0-5 loads in the Python peer as pickle.loads loads it', { skip: missing ?? false }, async (t) => {
  const parts: Buffer[] = []
  const names: string[] = []
  for (const [name, value] of values()) {
    for (let protocol = 0; protocol <= 5; protocol++) {
      const key = `${name} @ protocol ${protocol}`
      const pickle = Buffer.from(dumps(value, { protocol }))
      const head = Buffer.alloc(8)
      head.writeUInt32LE(Buffer.byteLength(key), 0)
      head.writeUInt32LE(pickle.length, 4)
      parts.push(head, Buffer.from(key), pickle)
      names.push(key)
    }
  }
  const out = JSON.parse(runPython(CHECK, Buffer.concat(parts)).toString()) as Record<string, string[]>
  t.equal(Object.keys(out).length, names.length, `${names.length} pickles checked`)
  for (const key of names) t.same(out[key]?.[0], 'same', `${key}: ${out[key]?.slice(1).join(' / ')}`)
})
