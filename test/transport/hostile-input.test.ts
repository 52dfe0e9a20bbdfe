/**
 * Hostile input to the transport's parsers, found by a fuzz campaign (2026-11-21): each case
 * is a few hundred bytes that used to cost seconds and hundreds of MiB, or to throw a plain
 * TypeError/RangeError. Each must now fail with a TransportError naming the problem, before
 * anything sized by the peer's numbers is allocated.
 */
import t, { type Test } from 'tap'
import { Packr } from 'msgpackr'
import { DEFAULT_DASK_LIMITS, DEFAULT_LIMITS, TransportError, type DaskLimits } from '@picklewire/transport'
import { newStats as newDaskStats } from '../../packages/transport/dist/dask/serialize.js'
import { decodeWireHeader } from '../../packages/transport/dist/ws/wire.js'
import { deserializeFromWire } from '../../packages/transport/dist/dask/serialize.js'
import { loadsMessage } from '../../packages/transport/dist/dask/protocol.js'
import { lz4Compress } from '../../packages/transport/dist/dask/lz4.js'

const packr = new Packr({ useRecords: false, variableMapSize: true })
const pack = (v: unknown): Uint8Array => packr.pack(v)
const hex = (s: string): Uint8Array => Uint8Array.from(Buffer.from(s.replace(/\s+/g, ''), 'hex'))

/** A Dask message whose frame 0 is {d: {__Serialized__: 1}}, then the sub-header and its frames. */
function serializedMessage(sub: Record<string, unknown>, frames: Uint8Array[]): Uint8Array[] {
  return [pack({ d: { __Serialized__: 1 } }), pack({ ...sub, 'num-sub-frames': frames.length }), ...frames]
}

function numpyMessage(subHeader: Record<string, unknown>, frame: Uint8Array): Uint8Array[] {
  return serializedMessage({ serializer: 'dask', type: 'numpy.ndarray', 'sub-header': { dtype: [0, '<f8'], writeable: [true], ...subHeader } }, [frame])
}

function limits(over: Partial<DaskLimits> = {}): DaskLimits {
  return { ...DEFAULT_DASK_LIMITS, ...over }
}

/**
 * Runs fn, which must throw a TransportError of `code` whose message matches `pattern`, having
 * allocated nearly nothing (the bugs behind these cases took 190-512 MiB). The time is printed,
 * not asserted.
 */
function refuses(t: Test, fn: () => unknown, code: string, pattern: RegExp, what: string): void {
  const rss = process.memoryUsage().rss
  const t0 = performance.now()
  try {
    fn()
    t.fail(`${what}: no error`)
  } catch (err) {
    t.type(err, TransportError, `${what}: a TransportError (${(err as Error).message})`)
    t.equal((err as TransportError).code, code, `${what}: code ${code}`)
    t.match((err as Error).message, pattern, `${what}: says why`)
  }
  t.comment(`${what}: refused in ${(performance.now() - t0).toFixed(1)} ms`)
  const grew = (process.memoryUsage().rss - rss) / 2 ** 20
  t.ok(grew < 64, `${what}: resident memory grew ${grew.toFixed(1)} MiB`)
}

t.test('numpy shapes are checked before anything is allocated', async (t) => {
  const frame = new Uint8Array(8)
  refuses(t, () => loadsMessage(numpyMessage({ shape: [1, 1], strides: [0, 0], broadcast_to: [2 ** 40, 2 ** 40] }, frame), { limits: limits() }),
    'LIMIT', /shape \(1099511627776, 1099511627776\) is over maxMessageBytes/, 'broadcast_to (2^40, 2^40)')
  refuses(t, () => loadsMessage(numpyMessage({ shape: [-12], strides: [8] }, frame), { limits: limits() }),
    'PROTOCOL', /negative axis \(-12\)/, 'a negative axis')
  refuses(t, () => loadsMessage(numpyMessage({ shape: [2 ** 26], strides: [8] }, frame), { limits: limits() }),
    'PROTOCOL', /strides reach outside the data frame/, '2^26 elements over an 8-byte frame')
  refuses(t, () => loadsMessage(numpyMessage({ shape: [2 ** 20], strides: [8] }, frame), { limits: limits({ maxMessageBytes: 2 ** 20 }) }),
    'LIMIT', /over maxMessageBytes \(1048576\)/, '8 MiB of elements under a 1 MiB limit')
  refuses(t, () => loadsMessage(numpyMessage({ shape: [4], strides: [-8] }, frame), { limits: limits() }),
    'PROTOCOL', /strides reach outside the data frame/, 'a negative stride from the frame\'s start')
})

t.test('a broadcast array is copied by rows, charged to the message, and right', async (t) => {
  // Dask sends np.broadcast_to(np.float64(1.5), shape) as one element with zero strides.
  const one = new Uint8Array(new Float64Array([1.5]).buffer)
  const big = numpyMessage({ shape: [1, 1], strides: [0, 0], broadcast_to: [2 ** 11, 2 ** 12] }, one)
  const t0 = performance.now()
  const got = (loadsMessage(big, { limits: limits() }) as Map<string, unknown>).get('d') as { data: Float64Array, shape: number[] }
  t.comment(`64 MiB from one element in ${(performance.now() - t0).toFixed(0)} ms`)
  t.same(got.shape, [2 ** 11, 2 ** 12])
  t.equal(got.data.length, 2 ** 23)
  t.ok(got.data.every((x) => x === 1.5), 'every element is the broadcast value')
  refuses(t, () => loadsMessage(big, { limits: limits({ maxMessageBytes: 2 ** 20 }) }),
    'LIMIT', /over maxMessageBytes/, 'the same 64 MiB under a 1 MiB limit')

  // Mixed strides: a broadcast axis outside a strided one (every other element of a row).
  const row = new Uint8Array(new Float64Array([0, 10, 1, 11, 2, 12]).buffer)
  const mixed = numpyMessage({ shape: [2, 3], strides: [0, 16] }, row)
  const m = (loadsMessage(mixed, { limits: limits() }) as Map<string, unknown>).get('d') as { data: Float64Array }
  t.same([...m.data], [0, 1, 2, 0, 1, 2])
})

t.test('a frame referenced twice is refused, and decompression is charged per message', async (t) => {
  const zeros = lz4Compress(new Uint8Array(2 ** 20))
  const sub = pack({ serializer: 'dask', type: 'bytes', 'sub-header': {}, 'num-sub-frames': 1, compression: ['lz4'] })
  const twice = [pack(Array.from({ length: 512 }, () => ({ __Serialized__: 1 }))), sub, zeros]
  refuses(t, () => loadsMessage(twice, { limits: limits() }), 'PROTOCOL', /reuses frame 1/, '512 references to one lz4 frame')
  refuses(t, () => loadsMessage(twice, { limits: limits(), deserialize: false }), 'PROTOCOL', /reuses frame 1/, 'the same, left serialized')
  // A reference into another value's sub-frames.
  const into = [pack([{ __Serialized__: 1 }, { __Serialized__: 2 }]), sub, zeros]
  refuses(t, () => loadsMessage(into, { limits: limits() }), 'PROTOCOL', /reuses frame 2/, 'a reference into another value\'s frames')

  // Two distinct frames of 1 MiB each, decompressed, under a 1.5 MiB limit: the second is over.
  const two = [pack([{ __Serialized__: 1 }, { __Serialized__: 3 }]), sub, zeros, sub, zeros]
  const ok = loadsMessage(two, { limits: limits() }) as Uint8Array[]
  t.same(ok.map((b) => b.length), [2 ** 20, 2 ** 20], 'read whole with room for both')
  refuses(t, () => loadsMessage(two, { limits: limits({ maxMessageBytes: 1.5 * 2 ** 20 }) }),
    'LIMIT', /over maxMessageBytes \(1572864\) of decompressed/, 'the second MiB over a 1.5 MiB budget')
})

t.test('msgpack extensions are refused from the network, before msgpackr reads them', async (t) => {
  // X_k = [id k-1: X_{k-1}, pointer k-1]: a tree that doubles at every level, in 287 bytes.
  let x = hex('01')
  for (let k = 0; k < 22; k++) {
    const id = Buffer.alloc(4)
    id.writeUInt32BE(k)
    x = Uint8Array.from([0x92, 0xd6, 0x69, ...id, ...x, 0xd6, 0x70, ...id])
  }
  refuses(t, () => loadsMessage([x], { limits: limits() }), 'PROTOCOL', /msgpack extension \(byte 0xd6\) at offset 1/, 'a shared-reference tree of depth 22 (Dask)')
  // {v:1, id:1, k:'msg', p:1, x:{a: [id 1: [1, 1], pointer 1]}} (WebSocket header extras)
  const ws = hex('85a17601a2696401a16ba36d7367a17001a17881a16192d66900000001920101d67000000001')
  refuses(t, () => decodeWireHeader(ws, DEFAULT_LIMITS, 1), 'PROTOCOL', /bad message header: msgpack extension \(byte 0xd6\)/, 'a shared reference in a WebSocket header')
  // {v: record{toString: 1}}: String() of it used to throw a TypeError.
  refuses(t, () => decodeWireHeader(hex('81a176d4724091a8746f537472696e6701'), DEFAULT_LIMITS, 1), 'PROTOCOL', /msgpack extension \(byte 0xd4\)/, 'a msgpackr record')
  // {v:1,id:1,k:'msg',p:1,x:{auth: ext 0x42 (a bigint)}}
  refuses(t, () => decodeWireHeader(hex('85a17601a2696401a16ba36d7367a17001a17881a461757468d44201'), DEFAULT_LIMITS, 1),
    'PROTOCOL', /msgpack extension \(byte 0xd4\)/, 'a msgpackr bigint extension')
  // A container announcing 2^32-1 items in 5 bytes: refused before msgpackr sizes an array by it.
  refuses(t, () => loadsMessage([hex('ddffffffff')], { limits: limits() }), 'PROTOCOL', /announces 4294967295 items with 0 bytes left/, 'array32 of 2^32-1 items')
  // 300 nested arrays.
  refuses(t, () => loadsMessage([Uint8Array.from([...new Array(300).fill(0x91), 0x01])], { limits: limits() }),
    'PROTOCOL', /msgpack nests deeper than 256 levels/, '300 nested msgpack arrays')
})

t.test('peer values in error messages: bigints and odd types never throw a TypeError', async (t) => {
  const big = 2n ** 62n
  const frame0 = pack({ d: { __Serialized__: 1 } })
  const cases: [string, Record<string, unknown>, RegExp][] = [
    ['a bigint compression name', { serializer: 'dask', type: 'bytes', compression: [big], 'num-sub-frames': 1 }, /compressed with 4611686018427387904n/],
    ['a bigint serializer', { serializer: big, 'num-sub-frames': 1 }, /unknown Dask serializer 4611686018427387904n/],
    ['a bigint dask type', { serializer: 'dask', type: big, 'num-sub-frames': 1 }, /no reader for Dask-serialized 4611686018427387904n/],
    ['a bigint split count', { serializer: 'dask', type: 'bytes', 'split-num-sub-frames': [[big]], 'split-offsets': [0], 'num-sub-frames': 1 }, /non-negative integer, got \["4611686018427387904n"\]/],
    ['a map as serializer', { serializer: { a: 1, b: [big] }, 'num-sub-frames': 1 }, /unknown Dask serializer \{"a":1,"b":\["4611686018427387904n"\]\}/],
    ['a bigint collection type', { 'is-collection': true, 'sub-headers': [], 'frame-lengths': [], 'type-serialized': big, 'num-sub-frames': 1 }, /unknown collection type 4611686018427387904n/],
  ]
  for (const [what, sub, pattern] of cases) {
    refuses(t, () => loadsMessage([frame0, pack(sub), hex('616263')], { limits: limits() }), 'PROTOCOL', pattern, what)
  }
})

t.test('Dask collections nest at most 100 levels', async (t) => {
  let sub: Record<string, unknown> = { serializer: 'dask', type: 'bytes', 'sub-header': {} }
  for (let i = 0; i < 120; i++) sub = { 'is-collection': true, 'sub-headers': [sub], 'frame-lengths': [1], 'type-serialized': 'list' }
  refuses(t, () => loadsMessage(serializedMessage(sub, [hex('00')]), { limits: limits() }), 'PROTOCOL', /collections nest deeper than 100 levels/, '120 nested lists')
  let ok: Record<string, unknown> = { serializer: 'dask', type: 'bytes', 'sub-header': {} }
  for (let i = 0; i < 50; i++) ok = { 'is-collection': true, 'sub-headers': [ok], 'frame-lengths': [1], 'type-serialized': 'list' }
  let v = (loadsMessage(serializedMessage(ok, [hex('2a')]), { limits: limits() }) as Map<string, unknown>).get('d')
  for (let i = 0; i < 50; i++) v = (v as unknown[])[0]
  t.same(v, hex('2a'), '50 levels read, down to the bytes')
})

t.test('compression names from the peer never become keys of the stats', async (t) => {
  const stats = newDaskStats()
  const header = new Map<unknown, unknown>([
    ['serializer', 'dask'], ['type', 'bytes'], ['compression', ['toString', 'lz4']], ['split-num-sub-frames', [2]], ['split-offsets', [0]],
  ])
  refuses(t, () => deserializeFromWire(header, [hex('00'), lz4Compress(hex('0102'))], { limits: limits(), stats }),
    'PROTOCOL', /compressed with "toString"/, 'a frame "compressed" with toString')
  t.equal(typeof stats.decompressed.toString, 'function', 'stats.decompressed.toString is still the function')
  t.notOk(Object.hasOwn(stats.decompressed, 'toString'), 'and no own key was added')
})
