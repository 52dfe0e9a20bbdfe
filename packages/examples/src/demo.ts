/**
 * The demo behind `npm run demo`. Python to Node: python3 pickles a few values (protocol 5,
 * with a buffer sent out of band), and Node loads them with @picklewire/codec and prints what
 * it got. Node to Python: Node pickles values of its own, and python3 loads and prints them.
 */
import { execFileSync } from 'node:child_process'
import { ByteArray, Decimal, PickleBuffer, PyDateTime, Tuple, dumps, loads } from '@picklewire/codec'

const PRODUCER = `
import pickle, sys, datetime, decimal, collections
buffers = []
value = {
    'name': 'sensor-7',
    'readings': [1.5, 2.25, -0.125],
    'shape': (2, 3),
    'tags': {'a', 'b'},
    'when': datetime.datetime(2026, 11, 21, 9, 30, 0, 250000),
    'price': decimal.Decimal('19.99'),
    'counts': collections.Counter('hello'),
    'big': 2**80,
    'raw': pickle.PickleBuffer(bytearray(b'sent out of band')),
}
data = pickle.dumps(value, protocol=5, buffer_callback=buffers.append)
frames = [data] + [bytes(b.raw()) for b in buffers]
out = sys.stdout.buffer
out.write(len(frames).to_bytes(4, 'little'))
for f in frames:
    out.write(len(f).to_bytes(4, 'little')); out.write(f)
`

function python(): string {
  return process.env.PICKLEWIRE_PYTHON ?? 'python3'
}

const CONSUMER = `
import pickle, sys
data = sys.stdin.buffer.read()
n = int.from_bytes(data[:4], 'little'); frames = []; at = 4
for _ in range(n):
    size = int.from_bytes(data[at:at + 4], 'little'); frames.append(memoryview(data)[at + 4:at + 4 + size]); at += 4 + size
value = pickle.loads(frames[0], buffers=frames[1:])
for k, v in value.items():
    print(f'  {k!r}: {v!r}' if not isinstance(v, memoryview) else f'  {k!r}: out-of-band buffer of {v.nbytes} bytes: {bytes(v)!r}')
`

function writeFrames(frames: Uint8Array[]): Buffer {
  const parts: Buffer[] = [Buffer.from(Uint32Array.of(frames.length).buffer)]
  for (const f of frames) parts.push(Buffer.from(Uint32Array.of(f.length).buffer), Buffer.from(f.buffer, f.byteOffset, f.length))
  return Buffer.concat(parts)
}

function nodeToPython(): void {
  const value = new Map<string, unknown>([
    ['from', 'node'],
    ['counts', [1, 2, 3]],
    ['pair', Tuple.fromItems(['x', 2.5])],
    ['big', 2n ** 70n],
    ['bytes', new TextEncoder().encode('raw bytes')],
    ['mutable', ByteArray.from([1, 2, 3])],
    ['tags', new Set(['a', 'b'])],
    ['when', new PyDateTime(2026, 11, 21, 12, 0, 0, 5)],
    ['price', new Decimal('4.50')],
    ['frame', new PickleBuffer(new TextEncoder().encode('a buffer Node sent out of band'))],
  ])
  const buffers: PickleBuffer[] = []
  const pickle = dumps(value, { protocol: 5, bufferCallback: (b) => void buffers.push(b) })
  console.log(`\nNode wrote a protocol-5 pickle of ${pickle.length} bytes and ${buffers.length} out-of-band buffer(s); python3 loaded:`)
  const out = execFileSync(python(), ['-c', CONSUMER], { input: writeFrames([pickle, ...buffers.map((b) => b.raw())]) })
  process.stdout.write(out)
}

function readFrames(out: Buffer): Uint8Array[] {
  const frames: Uint8Array[] = []
  const count = out.readUInt32LE(0)
  let at = 4
  for (let i = 0; i < count; i++) {
    const n = out.readUInt32LE(at)
    frames.push(new Uint8Array(out.buffer, out.byteOffset + at + 4, n))
    at += 4 + n
  }
  return frames
}

function main(): void {
  let out: Buffer
  try {
    out = execFileSync(python(), ['-c', PRODUCER])
  } catch (err) {
    console.error(`the demo needs python3 on PATH (or PICKLEWIRE_PYTHON): ${(err as Error).message}`)
    process.exit(1)
  }
  const [pickle, ...buffers] = readFrames(out)
  console.log(`python3 wrote a protocol-5 pickle of ${pickle!.length} bytes and ${buffers.length} out-of-band buffer(s)`)
  const value = loads(pickle!, { buffers }) as Map<string, unknown>
  console.log('Node loaded:')
  console.log(value)
  const raw = value.get('raw') as PickleBuffer
  const view = raw.raw()
  console.log(`the out-of-band buffer is a view over the received frame, not a copy: ${view.buffer === buffers[0]!.buffer}`)
  console.log(`its text: ${JSON.stringify(new TextDecoder().decode(view))}`)
  nodeToPython()
}

main()
