/**
 * The demo behind `npm run demo`. Python to Node: python3 pickles a few values (protocol 5,
 * with a buffer sent out of band), and Node loads them with @picklewire/codec and prints what
 * it got. Node to Python: Node pickles values of its own, and python3 loads and prints them.
 * Then the same with numpy: an array arrives in Node as a typed view over the frame it came in,
 * and a Float32Array from Node arrives in numpy. Then worker threads, WebSocket and Dask, and
 * the command that starts the browser example (browser-demo.ts).
 *
 * A part whose python3 or Python modules are missing prints what it skipped and how to get it,
 * and the demo goes on; where Python would have loaded what Node wrote, Node loads it back
 * itself. The worker threads need only Node and always run. The exit code is 0 unless a part
 * that could run failed.
 */
import { execFileSync } from 'node:child_process'
import { ByteArray, Decimal, NDArray, PickleBuffer, PyDateTime, Tuple, dumps, loads } from '@picklewire/codec'
import { browserDemoHint } from './browser-demo.js'
import { runDaskDemo } from './dask-cluster.js'
import { canRun, codecPython, skippedParts } from './needs.js'
import { runWorkersDemo } from './workers-pipeline.js'
import { runWebSocketDemo } from './ws-tensors.js'

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
  return codecPython().python
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
  console.log(`Node wrote a protocol-5 pickle of ${pickle.length} bytes and ${buffers.length} out-of-band buffer(s)`)
  if (!canRun('python3 loading the pickle Node wrote', codecPython())) {
    console.log('Node loads it back itself:')
    console.log(loads(pickle, { buffers: buffers.map((b) => b.raw()) }))
    return
  }
  console.log('python3 loaded:')
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

const NUMPY_PRODUCER = `
import numpy as np, pickle, sys
buffers = []
data = pickle.dumps(np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4), protocol=5, buffer_callback=buffers.append)
frames = [data] + [bytes(b.raw()) for b in buffers]
out = sys.stdout.buffer
out.write(len(frames).to_bytes(4, 'little'))
for f in frames:
    out.write(len(f).to_bytes(4, 'little')); out.write(f)
`

// By default picklewire writes numpy names that numpy 1.x and 2.x both load without a warning.
const NUMPY_CONSUMER = `
import pickle, sys
data = sys.stdin.buffer.read()
n = int.from_bytes(data[:4], 'little'); frames = []; at = 4
for _ in range(n):
    size = int.from_bytes(data[at:at + 4], 'little'); frames.append(memoryview(data)[at + 4:at + 4 + size]); at += 4 + size
a = pickle.loads(frames[0], buffers=frames[1:])
print(f'  {type(a).__module__}.{type(a).__name__} {a.dtype} {a.shape}: {a}')
`

function numpyDemo(): void {
  const numpy = canRun('numpy -> Node, and numpy loading the array Node wrote', codecPython(['numpy']))
  if (numpy) {
    const [pickle, ...buffers] = readFrames(execFileSync(python(), ['-c', NUMPY_PRODUCER], { stdio: ['ignore', 'pipe', 'inherit'] }))
    const a = loads(pickle!, { buffers }) as NDArray
    const first = Array.from(a.data.slice(0, 4) as Float32Array, (x) => x.toFixed(4))
    console.log(`numpy -> Node: a ${a.dtype.name} array of shape (${a.shape.join(', ')}), order ${a.order}; first values ${first.join(', ')}`)
    // A frame that is not 4-byte aligned in the received bytes would be copied once (a.copied says so).
    const view = a.bytes().buffer === buffers[0]!.buffer && !a.copied
    console.log(`its data is a ${a.data.constructor.name} ${view ? 'view over the received frame, not a copy' : 'copy: the frame was not aligned for float32'}`)
  }

  const samples = Float32Array.from({ length: 6 }, (_, i) => Math.sqrt(i))
  const sent: PickleBuffer[] = []
  const fromNode = dumps(samples, { protocol: 5, bufferCallback: (b) => void sent.push(b) })
  console.log(`Node -> numpy: Node pickled a Float32Array of ${samples.length} as a numpy array (out of band, the buffer is its memory: ${sent[0]!.raw().buffer === samples.buffer})`)
  if (numpy) {
    console.log('python3 loaded:')
    process.stdout.write(execFileSync(python(), ['-c', NUMPY_CONSUMER], { input: writeFrames([fromNode, ...sent.map((b) => b.raw())]) }))
    return
  }
  const back = loads(fromNode, { buffers: sent.map((b) => b.raw()) }) as NDArray
  console.log(`Node loads it back itself: an NDArray ${back.dtype.name} of shape (${back.shape.join(', ')}), ` +
    `[${Array.from(back.data as Float32Array, (x) => x.toFixed(4)).join(', ')}], a view over the sent buffer: ${back.bytes().buffer === samples.buffer}`)
}

function section(title: string): void {
  console.log(`\n=== ${title} ===`)
}

function pythonToNode(): void {
  if (!canRun('python3 pickling values for Node', codecPython())) return
  const [pickle, ...buffers] = readFrames(execFileSync(python(), ['-c', PRODUCER]))
  console.log(`python3 wrote a protocol-5 pickle of ${pickle!.length} bytes and ${buffers.length} out-of-band buffer(s)`)
  const value = loads(pickle!, { buffers }) as Map<string, unknown>
  console.log('Node loaded:')
  console.log(value)
  const raw = value.get('raw') as PickleBuffer
  const view = raw.raw()
  console.log(`the out-of-band buffer is a view over the received frame, not a copy: ${view.buffer === buffers[0]!.buffer}`)
  console.log(`its text: ${JSON.stringify(new TextDecoder().decode(view))}`)
}

async function main(): Promise<void> {
  section('codec: Python -> Node')
  pythonToNode()
  section('codec: Node -> Python')
  nodeToPython()
  section('codec: numpy arrays both ways')
  numpyDemo()
  section('worker threads: buffers through shared memory')
  await runWorkersDemo()
  section('WebSocket: numpy tensors streamed between Python and Node')
  await runWebSocketDemo()
  section('Dask: a Node client on a local cluster')
  await runDaskDemo()
  section('Browser: numpy frames from Python in a web page')
  console.log(browserDemoHint())
  const skipped = skippedParts()
  if (skipped.length > 0) {
    console.log(`\nThe demo skipped ${skipped.length} part(s), each with a "skipped:" line above that says how to get it; everything else ran.`)
  }
}

await main()
