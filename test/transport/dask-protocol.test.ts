/**
 * Dask's message layer against distributed's own protocol.dumps / protocol.loads, no cluster:
 * frames Python writes (numpy arrays of several dtypes and layouts, bytes, collections,
 * pickled data, shards, lz4 and zlib frames, "__Pickled__", sets) are read by Node and every
 * value checked; frames Node writes are read by Python and described back, and checked.
 */
import './dask-netns.js'
import t from 'tap'
import { ByteArray, Complex, NDArray, PyDateTime, Tuple } from '@picklewire/codec'
import { DEFAULT_DASK_LIMITS, DaskSerialize, DaskSerialized, DaskToPickle, TransportError, type DaskStats } from '@picklewire/transport'
import { newStats as newDaskStats } from '../../packages/transport/dist/dask/serialize.js'
import { dumpsMessage, loadsMessage } from '../../packages/transport/dist/dask/protocol.js'
import { type SerializeContext } from '../../packages/transport/dist/dask/serialize.js'
import { PY_FRAMES, decodeFrameLists, encodeFrameList, runDaskPython, withDask } from './dask-helpers.js'


function get(m: unknown, key: string): unknown {
  if (!(m instanceof Map)) throw new Error(`expected a Map, got ${String(m)}`)
  return m.get(key)
}

function arr(v: unknown): NDArray {
  if (!(v instanceof NDArray)) throw new Error(`expected an NDArray, got ${String(v)}`)
  return v
}

const PY_TO_NODE = `${PY_FRAMES}
import datetime
import numpy as np
from distributed.protocol import dumps, to_serialize
from distributed.protocol.serialize import ToPickle

ro = np.arange(6, dtype='u2'); ro.flags.writeable = False
cases = [
    ({'op': 'c-order', 'v': to_serialize(np.arange(12, dtype='f4').reshape(3, 4))}, {}),
    ({'op': 'fortran', 'v': to_serialize(np.asfortranarray(np.arange(12, dtype='i8').reshape(3, 4)))}, {}),
    ({'op': 'strided', 'v': to_serialize(np.arange(20, dtype='f8')[::2])}, {}),
    ({'op': 'broadcast', 'v': to_serialize(np.broadcast_to(np.arange(3, dtype='i4'), (4, 3)))}, {}),
    ({'op': '0-d', 'v': to_serialize(np.array(7.5))}, {}),
    ({'op': 'read-only', 'v': to_serialize(ro)}, {}),
    ({'op': 'dtypes', 'b': to_serialize(np.array([True, False, True])), 'c': to_serialize(np.array([1+2j, -3j])),
      'm': to_serialize(np.array(['2026-01-02T03:04:05'], dtype='M8[ns]')), 'u': to_serialize(np.array(['ab', 'xyz'])),
      's': to_serialize(np.array([b'hi', b'o'])), 'h': to_serialize(np.array([1.5, -2], dtype='f2'))}, {}),
    ({'op': 'object array', 'v': to_serialize(np.array([1, 'a', None], dtype=object))}, {}),
    ({'op': 'bytes', 'b': to_serialize(b'raw bytes'), 'ba': to_serialize(bytearray(b'mutable')), 'plain': b'in msgpack'}, {}),
    ({'op': 'list of arrays', 'v': to_serialize([np.arange(3), np.arange(4.0)])}, {}),
    ({'op': 'dict of arrays', 'v': to_serialize({'a': np.arange(2), 'b': np.ones(3)})}, {}),
    ({'op': 'tuple of arrays', 'v': to_serialize((np.arange(2), np.zeros(2, dtype='f4')))}, {}),
    ({'op': 'pickled data', 'v': to_serialize({'when': datetime.datetime(2026, 1, 2, 3, 4, 5), 'n': 2**70, 'x': [1.5, None, True], 't': (1, 'b')})}, {}),
    ({'op': 'sharded', 'v': to_serialize(np.arange(25000, dtype='f8'))}, {'frame_split_size': 4096}),
    ({'op': 'lz4', 'v': to_serialize(np.zeros(100000))}, {'context': {'compression': 'lz4'}}),
    ({'op': 'zlib', 'v': to_serialize(np.arange(100000) % 7)}, {'context': {'compression': 'zlib'}}),
    ({'op': 'sharded lz4', 'v': to_serialize(np.arange(300000, dtype='i8') % 100)}, {'context': {'compression': 'lz4'}, 'frame_split_size': 2**20}),
    ({'op': 'to-pickle', 'p': ToPickle({'a': np.arange(5, dtype='i2'), 'n': 3})}, {}),
    ({'op': 'set', 's': {1, 2, 3}, 'nested': [to_serialize(np.arange(2)), {'b': to_serialize(b'xy')}]}, {}),
]
for msg, kw in cases:
    write_frames(dumps(msg, **kw))
`

const NODE_TO_PY = `${PY_FRAMES}
import json
import numpy as np
from distributed.protocol import loads

def describe(v):
    if isinstance(v, np.ndarray):
        return {'dtype': v.dtype.str, 'shape': list(v.shape), 'data': describe(v.tolist()), 'writeable': bool(v.flags.writeable),
                'F': bool(v.flags.f_contiguous and not v.flags.c_contiguous)}
    if isinstance(v, (bytes, bytearray, memoryview)):
        return {type(v).__name__: bytes(v).hex()}
    if isinstance(v, (set, frozenset)):
        return {'set': sorted(describe(x) for x in v)}
    if isinstance(v, tuple):
        return {'tuple': [describe(x) for x in v]}
    if isinstance(v, list):
        return [describe(x) for x in v]
    if isinstance(v, dict):
        return {str(k): describe(x) for k, x in v.items()}
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) > 2**53:
        return {'int': str(v)}
    return v

for frames in read_frame_lists(sys.stdin.buffer.read()):
    print(json.dumps(describe(loads(frames))))
`

function ctx(over: Partial<SerializeContext> = {}): SerializeContext {
  return { pickleProtocol: 5, compression: null, shardBytes: 64 * 2 ** 20, ...over }
}

async function tests(): Promise<void> {
  const lists = decodeFrameLists(await runDaskPython(PY_TO_NODE))
  const stats: DaskStats = newDaskStats()
  const msgs = new Map<string, Map<unknown, unknown>>()
  for (const frames of lists) {
    const m = loadsMessage(frames, { limits: DEFAULT_DASK_LIMITS, stats }) as Map<unknown, unknown>
    msgs.set(get(m, 'op') as string, m)
  }

  t.test('numpy arrays from distributed.protocol.dumps, every layout', async (t) => {
    const c = arr(get(msgs.get('c-order'), 'v'))
    t.same([c.dtype.str, c.shape, c.order, c.copied], ['<f4', [3, 4], 'C', false])
    t.same(c.toList(), [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]])
    t.ok(c.data instanceof Float32Array, 'a Float32Array view')

    const f = arr(get(msgs.get('fortran'), 'v'))
    t.same([f.dtype.str, f.shape, f.order], ['<i8', [3, 4], 'F'])
    t.same(f.toList(), [[0n, 1n, 2n, 3n], [4n, 5n, 6n, 7n], [8n, 9n, 10n, 11n]])

    t.same(arr(get(msgs.get('strided'), 'v')).toList(), [0, 2, 4, 6, 8, 10, 12, 14, 16, 18], 'a strided view arrives contiguous')
    const b = arr(get(msgs.get('broadcast'), 'v'))
    t.same([b.shape, b.toList()], [[4, 3], [[0, 1, 2], [0, 1, 2], [0, 1, 2], [0, 1, 2]]], 'a broadcast array arrives whole')
    const z = arr(get(msgs.get('0-d'), 'v'))
    t.same([z.shape, z.toList()], [[], 7.5])
    const ro = arr(get(msgs.get('read-only'), 'v'))
    t.same([ro.readonly, ro.toList()], [true, [0, 1, 2, 3, 4, 5]], 'writeable: [false] arrives read-only')

    const d = msgs.get('dtypes')!
    t.same(arr(get(d, 'b')).toList(), [true, false, true])
    t.same(arr(get(d, 'c')).toList(), [new Complex(1, 2), new Complex(0, -3)])
    t.same(arr(get(d, 'm')).toList(), [BigInt(Date.UTC(2026, 0, 2, 3, 4, 5)) * 1_000_000n])
    t.same(arr(get(d, 'u')).toList(), ['ab', 'xyz'])
    t.same(arr(get(d, 's')).toList(), [new TextEncoder().encode('hi'), new TextEncoder().encode('o')])
    t.same(arr(get(d, 'h')).toList(), [1.5, -2])

    t.same(arr(get(msgs.get('object array'), 'v')).toList(), [1, 'a', null], 'object arrays come through the pickle inside the dask serializer')
  })

  t.test('bytes, bytearray, collections and pickled data', async (t) => {
    const m = msgs.get('bytes')!
    t.same(get(m, 'b'), new TextEncoder().encode('raw bytes'))
    t.equal((get(m, 'b') as Uint8Array).constructor, Uint8Array, 'bytes are a plain Uint8Array')
    t.ok(get(m, 'ba') instanceof ByteArray, 'bytearray is a ByteArray')
    t.same(get(m, 'plain'), new TextEncoder().encode('in msgpack'))

    const l = get(msgs.get('list of arrays'), 'v') as unknown[]
    t.ok(Array.isArray(l) && !(l instanceof Tuple), 'a list')
    t.same(l.map((a) => arr(a).toList()), [[0n, 1n, 2n], [0, 1, 2, 3]])
    const dict = get(msgs.get('dict of arrays'), 'v') as Map<unknown, unknown>
    t.same([...dict.keys()], ['a', 'b'])
    t.same(arr(dict.get('b')).toList(), [1, 1, 1])
    const tup = get(msgs.get('tuple of arrays'), 'v')
    t.ok(tup instanceof Tuple, 'a tuple')

    const p = get(msgs.get('pickled data'), 'v') as Map<unknown, unknown>
    t.ok(p.get('when') instanceof PyDateTime)
    t.equal(p.get('n'), 2n ** 70n)
    t.same(p.get('x'), [1.5, null, true])
    t.same(p.get('t'), Tuple.fromItems([1, 'b']))
  })

  t.test('shards, lz4 and zlib frames, "__Pickled__" and sets', async (t) => {
    const s = arr(get(msgs.get('sharded'), 'v'))
    t.equal(s.size, 25000)
    t.ok((s.data as Float64Array).every((v, i) => v === i), 'every element of the sharded array')
    t.equal(s.copied, false, 'shards of one buffer merge into a view')
    const z = arr(get(msgs.get('lz4'), 'v'))
    t.ok(z.size === 100000 && (z.data as Float64Array).every((v) => v === 0), 'lz4 frame')
    const zl = arr(get(msgs.get('zlib'), 'v'))
    t.ok((zl.data as BigInt64Array).every((v, i) => v === BigInt(i % 7)), 'zlib frame')
    const sl = arr(get(msgs.get('sharded lz4'), 'v'))
    t.ok(sl.size === 300000 && (sl.data as BigInt64Array).every((v, i) => v === BigInt(i % 100)), 'lz4 shards decompressed into one frame')
    t.ok((stats.decompressed.lz4 ?? 0) >= 3 && (stats.decompressed.zlib ?? 0) >= 1, `frames decompressed: ${JSON.stringify(stats.decompressed)}`)

    const p = get(msgs.get('to-pickle'), 'p') as Map<unknown, unknown>
    t.same(arr(p.get('a')).toList(), [0, 1, 2, 3, 4])
    t.equal(p.get('n'), 3)
    const set = msgs.get('set')!
    t.same(get(set, 's'), new Set([1, 2, 3]))
    const nested = get(set, 'nested') as unknown[]
    t.same(arr(nested[0]).toList(), [0n, 1n])
    t.same(get(nested[1], 'b'), new TextEncoder().encode('xy'))
  })

  t.test('left serialized (deserialize: false), values relay as they came', async (t) => {
    const frames = lists[0]!
    const m = loadsMessage(frames, { limits: DEFAULT_DASK_LIMITS, deserialize: false }) as Map<unknown, unknown>
    const v = m.get('v')
    t.ok(v instanceof DaskSerialized, 'a DaskSerialized')
    const again = loadsMessage(dumpsMessage(m, ctx()), { limits: DEFAULT_DASK_LIMITS }) as Map<unknown, unknown>
    t.same(arr(again.get('v')).toList(), [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]])
  })

  t.test('bad references are PROTOCOL errors', async (t) => {
    const bad = dumpsMessage({ v: new DaskSerialize(new Float64Array(3)) }, ctx())
    const cases: [string, Uint8Array[]][] = [
      ['reference past the frames', [bad[0]!]],
      ['no frames', []],
      ['frame 0 truncated msgpack', [Uint8Array.of(0x92, 0x01)]],
    ]
    for (const [what, frames] of cases) {
      try {
        loadsMessage(frames, { limits: DEFAULT_DASK_LIMITS })
        t.fail(what)
      } catch (err) {
        t.ok(err instanceof TransportError && err.code === 'PROTOCOL', `${what}: ${String(err)}`)
      }
    }
    try {
      loadsMessage(bad, { limits: { ...DEFAULT_DASK_LIMITS, maxHeaderBytes: 8 } })
      t.fail('header limit')
    } catch (err) {
      t.ok(err instanceof TransportError && err.code === 'LIMIT', `a sub-header over maxHeaderBytes: ${String(err)}`)
    }
  })

  t.test('Node -> distributed.protocol.loads: arrays, bytes, pickles, shards, compression', async (t) => {
    const f32 = new NDArray(new Float32Array(12).map((_, i) => i / 2), { shape: [3, 4] })
    const fortran = new NDArray(new Int16Array(6).map((_, i) => i - 3), { shape: [2, 3], order: 'F' })
    const ro = new NDArray(new Float64Array([1, 2]), { readonly: true })
    const big = new Float64Array(10_000).map((_, i) => i)
    const zeros = new Float64Array(50_000)
    const out: [Uint8Array[], unknown][] = [
      [dumpsMessage({ op: 'a', v: new DaskSerialize(f32) }, ctx()),
        { op: 'a', v: { dtype: '<f4', shape: [3, 4], data: [[0, 0.5, 1, 1.5], [2, 2.5, 3, 3.5], [4, 4.5, 5, 5.5]], writeable: true, F: false } }],
      [dumpsMessage({ v: new DaskSerialize(fortran), r: new DaskSerialize(ro) }, ctx()),
        { v: { dtype: '<i2', shape: [2, 3], data: [[-3, -1, 1], [-2, 0, 2]], writeable: true, F: true }, r: { dtype: '<f8', shape: [2], data: [1, 2], writeable: false, F: false } }],
      [dumpsMessage({ t: new DaskSerialize(new BigInt64Array([-(2n ** 62n), 5n])), u: new DaskSerialize(new Uint8ClampedArray([255, 0])) }, ctx()),
        { t: { dtype: '<i8', shape: [2], data: [{ int: '-4611686018427387904' }, 5], writeable: true, F: false }, u: { dtype: '|u1', shape: [2], data: [255, 0], writeable: true, F: false } }],
      [dumpsMessage({ b: new DaskSerialize(new TextEncoder().encode('hey')), ba: new DaskSerialize(new ByteArray([1, 2])), m: new TextEncoder().encode('bin') }, ctx()),
        { b: { bytes: '686579' }, ba: { bytearray: '0102' }, m: { bytes: '62696e' } }],
      [dumpsMessage({ p: new DaskSerialize({ a: 1, l: [1, 'x'], t: Tuple.fromItems([true, null]), n: 2n ** 70n }) }, ctx()),
        { p: { a: 1, l: [1, 'x'], t: { tuple: [true, null] }, n: { int: String(2n ** 70n) } } }],
      [dumpsMessage({ p: new DaskSerialize(f32, ['pickle']) }, ctx()),
        { p: { dtype: '<f4', shape: [3, 4], data: [[0, 0.5, 1, 1.5], [2, 2.5, 3, 3.5], [4, 4.5, 5, 5.5]], writeable: true, F: false } }],
      [dumpsMessage({ p: new DaskSerialize(f32, ['pickle']) }, ctx({ pickleProtocol: 4 })),
        { p: { dtype: '<f4', shape: [3, 4], data: [[0, 0.5, 1, 1.5], [2, 2.5, 3, 3.5], [4, 4.5, 5, 5.5]], writeable: true, F: false } }],
      [dumpsMessage({ s: new DaskSerialize(big) }, ctx({ shardBytes: 1000 })),
        { s: { dtype: '<f8', shape: [10000], data: [...big], writeable: true, F: false } }],
      [dumpsMessage({ z: new DaskSerialize(zeros), y: new DaskSerialize(zeros, ['pickle']) }, ctx({ compression: 'lz4', shardBytes: 100_000 })),
        { z: { dtype: '<f8', shape: [50000], data: [...zeros], writeable: true, F: false }, y: { dtype: '<f8', shape: [50000], data: [...zeros], writeable: true, F: false } }],
      [dumpsMessage({ z: new DaskSerialize(zeros) }, ctx({ compression: 'zlib' })),
        { z: { dtype: '<f8', shape: [50000], data: [...zeros], writeable: true, F: false } }],
      [dumpsMessage({ k: new DaskToPickle(new Map<unknown, unknown>([['x', f32], [1, 'one']])), s: new Set([3, 1, 2]), u: undefined }, ctx()),
        { k: { x: { dtype: '<f4', shape: [3, 4], data: [[0, 0.5, 1, 1.5], [2, 2.5, 3, 3.5], [4, 4.5, 5, 5.5]], writeable: true, F: false }, 1: 'one' }, s: { set: [1, 2, 3] }, u: null }],
    ]
    const stats = newDaskStats()
    dumpsMessage({ z: new DaskSerialize(zeros) }, ctx({ compression: 'lz4' }), stats)
    t.equal(stats.compressed, 1, 'a compressible frame is compressed when lz4 is agreed')
    const lines = (await runDaskPython(NODE_TO_PY, [], Buffer.concat(out.map(([frames]) => encodeFrameList(frames))))).toString().trim().split('\n')
    t.equal(lines.length, out.length)
    out.forEach(([, expected], i) => t.same(JSON.parse(lines[i]!), expected, `message ${i}`))
  })

  t.test('values msgpack cannot carry must be wrapped', async (t) => {
    t.throws(() => dumpsMessage({ v: new Float64Array(2) }, ctx()), TypeError)
    t.throws(() => dumpsMessage({ v: new (class Foo {})() }, ctx()), TypeError)
  })
}

await withDask(t, tests)
