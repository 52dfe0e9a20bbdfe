/**
 * The lz4 block codec Dask compresses frames with, against Python's lz4.block (the library Dask
 * itself calls): Python's blocks decoded by Node and Node's decoded by Python, byte for byte,
 * and corrupt blocks refused with TransportError, never an overrun or a hang.
 */
import './dask-netns.js'
import { createHash } from 'node:crypto'
import t, { type Test } from 'tap'
import { TransportError } from '@picklewire/transport'
import { lz4Compress, lz4Decompress, lz4DecompressInto, lz4CompressBound } from '../../packages/transport/dist/dask/lz4.js'
import { PY_FRAMES, daskMissing, decodeFrameLists, encodeFrameList, runDaskPython } from './dask-helpers.js'

/** Deterministic inputs of many shapes: empty, tiny, around the block end rules, random, runs, text, numbers. */
function inputs(): Uint8Array[] {
  let seed = 12345
  const rand = (): number => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0
    return seed >>> 8
  }
  const out: Uint8Array[] = [new Uint8Array(0)]
  for (const n of [1, 4, 5, 11, 12, 13, 16, 17, 64, 255, 256, 1000]) out.push(new Uint8Array(n).map(() => rand() & 3))
  out.push(new Uint8Array(70_000)) // zeros: one long overlapping match
  out.push(new Uint8Array(200_000).map(() => rand() & 0xff)) // incompressible
  out.push(new Uint8Array(100_000).map((_, i) => (i % 7) * 31)) // short period
  out.push(new Uint8Array(150_000).map((_, i) => (i % 300 < 150 ? i % 300 : rand() & 0xff))) // matches beyond 64 KiB and short ones
  out.push(new TextEncoder().encode('the quick brown fox jumps over the lazy dog. '.repeat(3000)))
  out.push(new Uint8Array(new Float64Array(50_000).map((_, i) => i * 0.5).buffer))
  out.push(new Uint8Array(new BigInt64Array(40_000).map((_, i) => BigInt(i) * 1_000_003n).buffer))
  // literal and match lengths of exactly 15, 15 + 255, ... (the length byte edge cases)
  for (const n of [15, 19, 270, 274, 525, 529]) {
    const a = new Uint8Array(n + 64).map(() => rand() & 0xff)
    a.fill(7, 20, 20 + n)
    out.push(a)
  }
  return out
}

function sha(b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex')
}

function throwsCode(t: Test, fn: () => unknown, code: string, what: string): void {
  try {
    fn()
    t.fail(`${what}: did not throw`)
  } catch (err) {
    t.ok(err instanceof TransportError && err.code === code, `${what}: TransportError ${code} (${String(err)})`)
  }
}

t.test('Node round trips: every input comes back the same, within the compress bound', async (t) => {
  for (const input of inputs()) {
    const packed = lz4Compress(input)
    t.ok(packed.length <= lz4CompressBound(input.length), `bound holds for ${input.length} bytes`)
    const back = lz4Decompress(packed, input.length)
    t.equal(sha(back), sha(input), `${input.length} bytes round trip`)
  }
  const zeros = lz4Compress(new Uint8Array(1 << 20))
  t.ok(zeros.length < 5000, `a MiB of zeros compresses to ${zeros.length} bytes`)
})

t.test('decompressing into a buffer at an offset (shards of one frame back to back)', async (t) => {
  const a = new Uint8Array(5000).map((_, i) => i % 13)
  const b = new Uint8Array(7000).map((_, i) => (i * 7) % 256)
  const out = new Uint8Array(12_000)
  t.equal(lz4DecompressInto(lz4Compress(a), out, 0), 5000)
  t.equal(lz4DecompressInto(lz4Compress(b), out, 5000), 7000)
  t.same(out.subarray(0, 5000), a)
  t.same(out.subarray(5000), b)
  t.throws(() => lz4DecompressInto(lz4Compress(b), out, 6000), RangeError, 'no room is a RangeError, not a write past the end')
})

t.test('corrupt blocks are TransportErrors', async (t) => {
  const good = lz4Compress(new TextEncoder().encode('abcabcabcabcabcabcabcabcabcabcabcabc-end-of-it'))
  const cases: [string, Uint8Array, string][] = [
    ['shorter than the length prefix', Uint8Array.of(1, 0), 'PROTOCOL'],
    ['a length and no block', Uint8Array.of(5, 0, 0, 0), 'PROTOCOL'],
    ['truncated', good.subarray(0, good.length - 3), 'PROTOCOL'],
    ['announced length too big for the input', Uint8Array.of(0xff, 0xff, 0xff, 0x0f, 0x00), 'PROTOCOL'],
    ['zero offset', Uint8Array.of(8, 0, 0, 0, 0x10, 0x61, 0x00, 0x00), 'PROTOCOL'],
    ['offset before the start', Uint8Array.of(8, 0, 0, 0, 0x10, 0x61, 0x05, 0x00), 'PROTOCOL'],
    ['more output than announced', Uint8Array.of(2, 0, 0, 0, 0x30, 0x61, 0x62, 0x63), 'PROTOCOL'],
    ['less output than announced', Uint8Array.of(9, 0, 0, 0, 0x30, 0x61, 0x62, 0x63), 'PROTOCOL'],
    ['a length run past the input', Uint8Array.of(100, 0, 0, 0, 0xf0, 0xff, 0xff), 'PROTOCOL'],
  ]
  for (const [what, data, code] of cases) {
    throwsCode(t, () => lz4Decompress(data, 1 << 20), code, what)
  }
  throwsCode(t, () => lz4Decompress(lz4Compress(new Uint8Array(5000)), 4999), 'LIMIT', 'over the limit: refused before allocating')
})

t.test('mutated blocks never throw anything but TransportError, never overrun', async (t) => {
  let seed = 99
  const rand = (n: number): number => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0
    return (seed >>> 8) % n
  }
  const base = lz4Compress(new TextEncoder().encode('Dask frames, lz4 blocks, and more Dask frames. '.repeat(40)))
  let refused = 0
  for (let i = 0; i < 3000; i++) {
    const m = new Uint8Array(base)
    for (let k = 0; k <= rand(4); k++) m[4 + rand(m.length - 4)] = rand(256)
    const cut = rand(5) === 0 ? m.subarray(0, 4 + rand(m.length - 4)) : m
    try {
      const out = lz4Decompress(cut, 1 << 16)
      if (out.length > 1 << 16) t.fail('output over the limit')
    } catch (err) {
      if (!(err instanceof TransportError)) t.fail(`non-TransportError: ${String(err)}`)
      refused++
    }
  }
  t.ok(refused > 0, `${refused} of 3000 mutations refused, the rest decoded within bounds`)
})

// No network traffic here: only Debian's Python with lz4 is needed, not the namespace.
const missing = daskMissing()
t.test("against Python's lz4.block", { skip: missing ?? false }, async (t) => {
  const ours = inputs()
  // Python compresses its copy of every input; Node decompresses them. Node's blocks go to Python.
  const script = `${PY_FRAMES}
import lz4.block, hashlib
[originals, node_blocks] = read_frame_lists(sys.stdin.buffer.read())
write_frames([lz4.block.compress(x) for x in originals])
write_frames([hashlib.sha256(lz4.block.decompress(b)).hexdigest().encode() for b in node_blocks])
`
  const input = Buffer.concat([encodeFrameList(ours), encodeFrameList(ours.map((x) => lz4Compress(x)))])
  const [pyBlocks, pyHashes] = decodeFrameLists(await runDaskPython(script, [], input))
  t.equal(pyBlocks!.length, ours.length)
  for (let i = 0; i < ours.length; i++) {
    t.equal(sha(lz4Decompress(pyBlocks![i]!, ours[i]!.length)), sha(ours[i]!), `Python's block of ${ours[i]!.length} bytes decodes in Node`)
    t.equal(new TextDecoder().decode(pyHashes![i]), sha(ours[i]!), `Node's block of ${ours[i]!.length} bytes decodes in Python`)
  }
})
