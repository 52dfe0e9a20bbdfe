/**
 * Dask's tcp and ws framing as explicit state machines: messages cut at every byte boundary
 * come back whole and in order, frames land 64-byte aligned in one buffer, and every length a
 * peer announces is checked against the limits before anything is allocated.
 */
import t, { type Test } from 'tap'
import { DEFAULT_DASK_LIMITS, TransportError, type DaskLimits } from '@picklewire/transport'
import { FRAME_ALIGNMENT, TcpFrameReader, WsFrameReader, encodeFrameCount, encodeTcpPrelude, resolveDaskLimits } from '../../packages/transport/dist/dask/framing.js'

function tcpBytes(frames: Uint8Array[]): Uint8Array {
  return new Uint8Array(Buffer.concat([encodeTcpPrelude(frames), ...frames]))
}

function u64s(...ns: (number | bigint)[]): Uint8Array {
  const out = new Uint8Array(8 * ns.length)
  const v = new DataView(out.buffer)
  ns.forEach((n, i) => v.setBigUint64(8 * i, BigInt(n), true))
  return out
}

function expectError(t: Test, fn: () => unknown, code: string, what: string): void {
  try {
    fn()
    t.fail(`${what}: did not throw`)
  } catch (err) {
    t.ok(err instanceof TransportError && err.code === code, `${what}: ${String(err)}`)
  }
}

const frames = [
  new TextEncoder().encode('frame zero'),
  new Uint8Array(0),
  new Uint8Array(100).map((_, i) => i),
  new Uint8Array(130).map((_, i) => 255 - (i % 256)),
]

t.test('the tcp prelude is Dask\'s: u64 total, u64 count, u64 lengths, little-endian', async (t) => {
  const p = encodeTcpPrelude([Uint8Array.of(1, 2, 3), new Uint8Array(0)])
  t.same([...p], [...u64s(8 + 16 + 3, 2, 3, 0)])
  t.same([...encodeFrameCount(3)], [3, 0, 0, 0, 0, 0, 0, 0])
})

t.test('tcp messages cut at every byte come back whole, aligned, in order', async (t) => {
  const one = tcpBytes(frames)
  const two = tcpBytes([Uint8Array.of(9)])
  const all = new Uint8Array([...one, ...two, ...tcpBytes([])])
  for (let cut = 0; cut <= all.length; cut++) {
    const r = new TcpFrameReader(DEFAULT_DASK_LIMITS)
    const got = [...r.push(all.subarray(0, cut)), ...r.push(all.subarray(cut))]
    if (got.length !== 3 || !r.idle) {
      t.fail(`cut at ${cut}: ${got.length} messages`)
      continue
    }
    if (cut === 17) {
      t.same(got[0], frames, 'frames as sent')
      t.same(got[1], [Uint8Array.of(9)])
      t.same(got[2], [], 'a message of no frames')
      t.ok(got[0]!.every((f) => f.byteOffset % FRAME_ALIGNMENT === 0), 'every frame starts 64-byte aligned')
      t.ok(got[0]!.every((f) => f.buffer === got[0]![0]!.buffer), 'in one buffer')
    }
  }
  // byte by byte
  const r = new TcpFrameReader(DEFAULT_DASK_LIMITS)
  const got: Uint8Array[][] = []
  for (const b of one) got.push(...r.push(Uint8Array.of(b)))
  t.same(got, [frames])
})

t.test('shards whose lengths are multiples of 64 are back to back in the buffer', async (t) => {
  const a = new Uint8Array(128).fill(1)
  const b = new Uint8Array(64).fill(2)
  const [m] = new TcpFrameReader(DEFAULT_DASK_LIMITS).push(tcpBytes([a, b]))
  t.equal(m![0]!.byteOffset + m![0]!.byteLength, m![1]!.byteOffset)
})

t.test('tcp limits and inconsistent lengths: refused before allocation', async (t) => {
  const limits: DaskLimits = resolveDaskLimits({ maxMessageBytes: 1000, maxFrames: 4 })
  expectError(t, () => new TcpFrameReader(limits).push(u64s(1001, 1)), 'LIMIT', 'total over maxMessageBytes')
  expectError(t, () => new TcpFrameReader(limits).push(u64s(100, 5)), 'LIMIT', 'count over maxFrames')
  expectError(t, () => new TcpFrameReader(limits).push(u64s(16, 3)), 'PROTOCOL', 'total too small for the lengths')
  // 24 would be the prelude alone, a valid prefix since distributed 2023.11 (dask-framing-prefix.test.ts); 39 ends inside frame 1.
  expectError(t, () => new TcpFrameReader(limits).push(u64s(39, 2, 10, 10)), 'PROTOCOL', 'a prefix that ends inside a frame')
  expectError(t, () => new TcpFrameReader(limits).push(u64s(100, 1, 10)), 'PROTOCOL', 'lengths add up to less than the total')
  expectError(t, () => new TcpFrameReader(DEFAULT_DASK_LIMITS).push(u64s(2n ** 63n, 1)), 'PROTOCOL', 'a length beyond 2^53')
  t.throws(() => resolveDaskLimits({ maxFrames: 0 }), TypeError)
})

t.test('ws: a count message, then one message per frame', async (t) => {
  const r = new WsFrameReader(DEFAULT_DASK_LIMITS)
  t.equal(r.push(encodeFrameCount(2)), null)
  t.equal(r.push(frames[0]!), null)
  t.same(r.push(frames[2]!), [frames[0], frames[2]])
  t.same(r.push(encodeFrameCount(0)), [], 'no frames')
  t.ok(r.idle)
  expectError(t, () => new WsFrameReader(DEFAULT_DASK_LIMITS).push(Uint8Array.of(1, 2, 3)), 'PROTOCOL', 'a count that is not 8 bytes')
  expectError(t, () => new WsFrameReader(resolveDaskLimits({ maxFrames: 3 })).push(encodeFrameCount(4)), 'LIMIT', 'count over maxFrames')
  const small = new WsFrameReader(resolveDaskLimits({ maxMessageBytes: 150 }))
  small.push(encodeFrameCount(2))
  small.push(new Uint8Array(100))
  expectError(t, () => small.push(new Uint8Array(100)), 'LIMIT', 'frames over maxMessageBytes')
})
