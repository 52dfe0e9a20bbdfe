/**
 * Out-of-band buffers come back as views of the caller's memory, never copies: a write through
 * PickleBuffer.raw() shows in the buffer the test passed, whatever kind of memory it was.
 * The pickle is CPython's: protocol 5 with buffer_callback, one writable and one readonly buffer.
 */
import t from 'tap'
import { NDArray, PickleBuffer, Tuple, UnpicklingError, load as loadStream, loads, type BufferSource } from '@picklewire/codec'
import { endFileWithoutPython, runPython, skipWithoutPython } from '../helpers/python.js'

endFileWithoutPython(t)

/** {'rw': <16 writable bytes>, 'ro': <16 readonly bytes>, 'more': [<8 writable bytes>]}, buffers out of band. */
const PICKLE = new Uint8Array(runPython(`
import pickle, sys
PB = pickle.PickleBuffer
bufs = []
data = pickle.dumps({'rw': PB(bytearray(16)), 'ro': PB(bytes(16)), 'more': [PB(bytearray(8))]}, 5, buffer_callback=bufs.append)
assert [len(b.raw()) for b in bufs] == [16, 16, 8] and [b.raw().readonly for b in bufs] == [False, True, False]
sys.stdout.buffer.write(data)
`))

interface Loaded {
  rw: PickleBuffer
  ro: PickleBuffer
  more: PickleBuffer[]
}

function load(rw: BufferSource | PickleBuffer, ro: BufferSource | PickleBuffer = new Uint8Array(16), more: BufferSource = new Uint8Array(8)): Loaded {
  const d = loads(PICKLE, { buffers: [rw, ro, more] }) as Map<string, unknown>
  return { rw: d.get('rw') as PickleBuffer, ro: d.get('ro') as PickleBuffer, more: d.get('more') as PickleBuffer[] }
}

t.test('an ArrayBuffer', async (t) => {
  const ab = new ArrayBuffer(16)
  const { rw } = load(ab)
  t.type(rw, PickleBuffer)
  t.equal(rw.readonly, false)
  t.equal(rw.raw().buffer, ab, 'raw() views the very ArrayBuffer')
  rw.raw()[3] = 0xa5
  t.equal(new Uint8Array(ab)[3], 0xa5, 'the write shows in the caller\'s buffer')
  new Uint8Array(ab)[4] = 0x5a
  t.equal(rw.raw()[4], 0x5a, 'and the other way round')
})

t.test('a SharedArrayBuffer', async (t) => {
  const sab = new SharedArrayBuffer(16)
  const { rw } = load(sab)
  t.equal(rw.raw().buffer, sab)
  t.type(rw.raw().buffer, SharedArrayBuffer)
  rw.raw()[15] = 7
  t.equal(new Uint8Array(sab)[15], 7)
  Atomics.store(new Uint8Array(sab), 0, 9)
  t.equal(rw.raw()[0], 9)
})

t.test('a Uint8Array that is a view into the middle of a larger buffer', async (t) => {
  const big = new Uint8Array(64)
  const sub = big.subarray(8, 24)
  const { rw } = load(sub)
  const raw = rw.raw()
  t.equal(raw.buffer, big.buffer)
  t.equal(raw.byteOffset, 8)
  t.equal(raw.byteLength, 16)
  raw[0] = 1
  raw[15] = 2
  t.equal(big[8], 1, 'first byte lands at offset 8')
  t.equal(big[23], 2, 'last byte lands at offset 23')
  t.equal(big[7], 0, 'nothing written before the view')
  t.equal(big[24], 0, 'nothing written after the view')
})

t.test('a Node Buffer, including one from the shared pool', async (t) => {
  const pooled = Buffer.from('0123456789abcdef')
  t.ok(pooled.byteOffset > 0 || pooled.buffer.byteLength > 16, 'the Buffer is a slice of a larger pool')
  const { rw } = load(pooled)
  const raw = rw.raw()
  t.equal(raw.buffer, pooled.buffer)
  t.equal(raw.byteOffset, pooled.byteOffset)
  raw[0] = 0x21
  t.equal(pooled.toString('latin1', 0, 1), '!')
})

t.test('other views: a Float64Array and a DataView', async (t) => {
  const f64 = new Float64Array(2)
  const { rw } = load(f64)
  t.equal(rw.raw().buffer, f64.buffer)
  rw.raw().set(new Uint8Array(new Float64Array([1.5]).buffer), 0)
  t.equal(f64[0], 1.5)
  const dv = new DataView(new ArrayBuffer(32), 16, 16)
  const { rw: viaDataView } = load(dv)
  viaDataView.raw()[0] = 0xff
  t.equal(dv.getUint8(0), 0xff)
  t.equal(viaDataView.raw().byteOffset, 16)
})

t.test('a PickleBuffer passed in comes back as itself', async (t) => {
  const mine = new PickleBuffer(new Uint8Array(16))
  const { rw } = load(mine)
  t.equal(rw, mine)
})

t.test('READONLY_BUFFER marks the buffer readonly and still views the caller\'s memory', async (t) => {
  const ro = new Uint8Array(16)
  const { ro: loaded, rw } = load(new Uint8Array(16), ro)
  t.equal(loaded.readonly, true)
  t.equal(rw.readonly, false)
  t.equal(loaded.raw().buffer, ro.buffer, 'the flag is advice: still no copy')
  ro[1] = 3
  t.equal(loaded.raw()[1], 3)
  const mine = new PickleBuffer(new Uint8Array(16))
  const { ro: wrapped } = load(new Uint8Array(16), mine)
  t.equal(wrapped.readonly, true)
  t.equal(wrapped.raw().buffer, mine.raw().buffer)
  t.equal(mine.readonly, false, 'the caller\'s PickleBuffer is not changed')
})

t.test('buffers nested in containers are views too, consumed in order', async (t) => {
  const more = new ArrayBuffer(8)
  const { more: list } = load(new Uint8Array(16), new Uint8Array(16), more)
  t.equal(list[0]!.raw().buffer, more)
})

t.test('buffers may come from any iterable, read lazily', async (t) => {
  const taken: number[] = []
  function* gen(): Generator<Uint8Array> {
    for (let i = 0; i < 3; i++) {
      taken.push(i)
      yield new Uint8Array(i === 2 ? 8 : 16)
    }
    taken.push(99)
  }
  const d = loads(PICKLE, { buffers: gen() }) as Map<string, unknown>
  t.same(taken, [0, 1, 2], 'exactly three taken, none beyond')
  t.type(d.get('rw'), PickleBuffer)
})

t.test('too few buffers, or none, is an UnpicklingError that says so', async (t) => {
  t.throws(() => loads(PICKLE, { buffers: [new Uint8Array(16)] }), { name: 'UnpicklingError', message: /not enough out-of-band buffers/ })
  t.throws(() => loads(PICKLE), { name: 'UnpicklingError', message: /no buffers were given/ })
  t.throws(() => loads(PICKLE, { buffers: [] }), UnpicklingError)
})

t.test('in-band bytes are copies: changing the result never changes the pickle', async (t) => {
  const pickle = new Uint8Array(runPython(`import pickle, sys; sys.stdout.buffer.write(pickle.dumps((b'in band', bytearray(b'also')), 5))`))
  const before = pickle.slice()
  const v = loads(pickle) as Tuple
  ;(v[0] as Uint8Array)[0] = 0
  ;(v[1] as Uint8Array)[0] = 0
  t.same(pickle, before)
  t.not((v[0] as Uint8Array).buffer, pickle.buffer)
})

t.test('copyBytes: false: in-band bytes are views over the input, in every length form', async (t) => {
  // (SHORT_BINBYTES, BINBYTES, bytearray) from CPython; BINBYTES8, which CPython writes only for
  // 4 GiB and more, by hand with a small length.
  const pickle = new Uint8Array(runPython(`import pickle, sys; sys.stdout.buffer.write(pickle.dumps((b'short', bytes(range(256)) * 2, bytearray(b'mutable')), 5))`))
  const v = loads(pickle, { copyBytes: false }) as Tuple
  const [short, long, ba] = v as unknown as [Uint8Array, Uint8Array, Uint8Array]
  t.equal(Buffer.from(short).toString(), 'short')
  t.equal(long.length, 512)
  t.equal(long[300], 300 - 256)
  for (const [name, b] of [['SHORT_BINBYTES', short], ['BINBYTES', long]] as const) {
    t.equal(b.buffer, pickle.buffer, `${name}: the input's memory`)
    t.equal(b.constructor, Uint8Array, `${name}: a plain Uint8Array`)
    const at = b.byteOffset
    pickle[at] = 0xee
    t.equal(b[0], 0xee, `${name}: a change to the input shows in the value`)
  }
  t.not(ba.buffer, pickle.buffer, 'bytearray is still a copy')
  t.equal(Buffer.from(ba).toString(), 'mutable')

  const by8 = new Uint8Array([0x80, 5, 0x8e, 3, 0, 0, 0, 0, 0, 0, 0, 0x61, 0x62, 0x63, 0x2e])
  const b8 = loads(by8, { copyBytes: false }) as Uint8Array
  t.equal(Buffer.from(b8).toString(), 'abc')
  t.equal(b8.buffer, by8.buffer, 'BINBYTES8: the input\'s memory')
  t.equal(b8.byteOffset, 11)
  t.not((loads(by8) as Uint8Array).buffer, by8.buffer, 'and a copy by default')
})

t.test('copyBytes: false views a Buffer\'s memory, and copies from a chunk source', async (t) => {
  const raw = runPython(`import pickle, sys; sys.stdout.buffer.write(pickle.dumps([b'x' * 300, b'y' * 10], 4))`)
  const buf = Buffer.from(raw)
  const [a] = loads(buf, { copyBytes: false }) as Uint8Array[]
  t.equal(a!.buffer, buf.buffer, 'a Buffer input: its memory')
  t.equal(a!.constructor, Uint8Array)

  // A chunk source's window memory is reused across chunks: its bytes are always copies.
  const chunks = [buf.subarray(0, 7), buf.subarray(7, 200), buf.subarray(200)]
  const [c, d] = await loadStream(chunks, { copyBytes: false }) as Uint8Array[]
  for (const ch of chunks) t.not(c!.buffer, ch.buffer)
  t.same(c, new Uint8Array(300).fill(0x78))
  t.same(d, new Uint8Array(10).fill(0x79))
})

t.test('copyBytes: false: an aligned in-band numpy array is a view over the input', { skip: skipWithoutPython(t, ['numpy']) }, async (t) => {
  // Protocol 4: numpy writes its data in band as a bytes value; int8 is aligned anywhere.
  const pickle = new Uint8Array(runPython(`import pickle, sys, numpy as np; sys.stdout.buffer.write(pickle.dumps(np.arange(100, dtype=np.int8), 4))`))
  const view = loads(pickle, { copyBytes: false }) as NDArray
  t.equal((view.data as Int8Array).buffer, pickle.buffer, 'the input\'s memory')
  t.equal(view.copied, false)
  t.equal((view.data as Int8Array)[99], 99)
  const copy = loads(pickle) as NDArray
  t.not((copy.data as Int8Array).buffer, pickle.buffer, 'a copy by default')
  t.equal((copy.data as Int8Array)[99], 99)
})
