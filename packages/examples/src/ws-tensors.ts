/**
 * Tensors between Python and Node over a WebSocket, both ways (issue 7's example):
 *
 *   1. Python produces, Node consumes: python/tensor_producer.py streams numpy frames to a Node
 *      server; Node computes statistics and a downsampled image and answers each frame.
 *   2. Node produces, Python consumes: Node sends signals as NDArrays to python/tensor_consumer.py,
 *      which answers with the strongest frequency and the spectrum as a numpy array.
 *
 * Every frame's bytes travel as a WebSocket frame of their own and arrive as a view (Python:
 * numpy over the received bytes; Node: an NDArray over the Buffer ws delivered).
 * Run it alone with `node packages/examples/dist/ws-tensors.js`, or through `npm run demo`.
 */
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { dirname, join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { NDArray } from '@picklewire/codec'
import { connectPickleSocket, listenPickleSocket } from '@picklewire/transport/ws'
import { canRun, codecPython } from './needs.js'

const PYTHON_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', 'python')

function python(): string {
  return codecPython().python
}

/** Statistics of one camera frame, and the frame downsampled 4x by block means. */
function analyseFrame(request: Map<string, unknown>): Map<string, unknown> {
  const image = request.get('image') as NDArray
  const [h, w] = image.shape as [number, number]
  const px = image.data as Float32Array // C order: row after row
  const threshold = request.get('threshold') as number
  let sum = 0
  let hot = 0
  let peak = 0
  for (let i = 0; i < px.length; i++) {
    const v = px[i]!
    sum += v
    if (v > threshold) hot++
    if (v > px[peak]!) peak = i
  }
  const small = new Float32Array((h / 4) * (w / 4))
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) small[(y >> 2) * (w / 4) + (x >> 2)]! += px[y * w + x]! / 16
  }
  return new Map<string, unknown>([
    ['seq', request.get('seq')],
    ['mean', sum / px.length],
    ['hot', hot],
    ['peak', [Math.floor(peak / w), peak % w]],
    ['small', new NDArray(small, { shape: [h / 4, w / 4] })],
  ])
}

function pipeLines(stream: NodeJS.ReadableStream, onLine: (line: string) => void): void {
  createInterface({ input: stream }).on('line', onLine)
}

async function pythonProducesNodeConsumes(frames: number): Promise<void> {
  console.log('\n-- Python produces numpy frames, Node computes on them and answers --')
  let served = 0
  const server = await listenPickleSocket({
    onRequest: (value) => {
      served++
      return analyseFrame(value as Map<string, unknown>)
    },
  })
  server.on('connection', (sock) => {
    void sock.closed.then(() => {
      const s = sock.stats()
      console.log(`node    served ${served} frames; ${s.bytesReceived} bytes in, ${s.bytesSent} bytes out, ` +
        `${s.alignmentCopies} buffers copied for alignment`)
    })
  })
  try {
    const child = spawn(python(), [join(PYTHON_DIR, 'tensor_producer.py'), server.url, '--frames', String(frames)], { stdio: ['ignore', 'pipe', 'inherit'] })
    pipeLines(child.stdout, (line) => console.log(line))
    const [code] = await once(child, 'exit')
    if (code !== 0) throw new Error(`the Python producer exited with ${String(code)}`)
  } finally {
    await server.close()
  }
}

async function nodeProducesPythonConsumes(signals: number): Promise<void> {
  console.log('\n-- Node produces signals as NDArrays, Python analyses them with numpy and answers --')
  const child = spawn(python(), [join(PYTHON_DIR, 'tensor_consumer.py')], { stdio: ['pipe', 'pipe', 'inherit'] })
  try {
    const port = await new Promise<number>((resolve, reject) => {
      let first = true
      pipeLines(child.stdout, (line) => {
        if (first) {
          first = false
          resolve((JSON.parse(line) as { port: number }).port)
        } else {
          console.log(line)
        }
      })
      child.once('exit', (code) => reject(new Error(`the Python consumer exited with ${String(code)} before listening`)))
    })
    const sock = await connectPickleSocket(`ws://127.0.0.1:${port}/`)
    const rate = 1000
    for (let k = 0; k < signals; k++) {
      const hz = 50 + 40 * k
      const signal = new Float64Array(4096).map((_, i) => Math.sin((2 * Math.PI * hz * i) / rate) + 0.3 * Math.sin((2 * Math.PI * 7 * i) / rate))
      const answer = await sock.request(new Map<string, unknown>([['signal', new NDArray(signal)], ['rate', rate]])) as Map<string, unknown>
      const spectrum = answer.get('spectrum') as NDArray
      console.log(`node    sent ${hz} Hz; python found ${(answer.get('peak_hz') as number).toFixed(1)} Hz and sent back a ` +
        `${spectrum.dtype.name} spectrum of ${spectrum.shape[0]} bins (loaded without a copy: ${!spectrum.copied})`)
    }
    // A large transfer with a progress line. On one host (the peers proved it) the 32 MiB go
    // through a shared-memory file and onProgress reports it written in one piece; otherwise they
    // leave in chunks of 1 MiB (protocol version 3), reported chunk by chunk.
    const recording = new NDArray(new Float64Array(4 * 2 ** 20).fill(0.5))
    let shown = -1
    await sock.send(new Map([['recording', recording]]), {
      onProgress: (p) => {
        const quarter = Math.floor((4 * p.bytes) / p.total)
        if (quarter === shown) return
        shown = quarter
        console.log(`node    sending a ${Math.round(p.total / 2 ** 20)} MiB recording (protocol version ${sock.protocolVersion}): ` +
          `[${'#'.repeat(quarter * 5).padEnd(20, '.')}] ${quarter * 25}%`)
      },
    })
    await sock.flushed()
    console.log(sock.stats().buffersSameHostSent > 0
      ? 'node    the recording went through a shared-memory file (same host); the WebSocket carried its place'
      : 'node    the recording went as 1 MiB WebSocket frames')
    await sock.close()
  } finally {
    child.stdin.end()
    if (child.exitCode === null) await Promise.race([once(child, 'exit'), new Promise((r) => setTimeout(r, 2000))])
    if (child.exitCode === null) child.kill()
  }
}

/** The WebSocket tensor streaming demo, both ways, briefly. Starts python3 itself. */
export async function runWebSocketDemo(): Promise<void> {
  // The Python ends import the peer from packages/transport/python; pip installing that package
  // brings what it imports.
  const need = {
    ...codecPython(['numpy', 'websockets.asyncio', 'msgpack']),
    pip: 'pip install "./packages/transport/python[numpy]" (or pip install numpy "websockets>=13" msgpack)',
    note: 'websockets 13 or later: Debian 13 has it',
  }
  if (!canRun('the WebSocket demo (numpy tensors between python3 and Node)', need)) return
  await pythonProducesNodeConsumes(8)
  await nodeProducesPythonConsumes(4)
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await runWebSocketDemo()
}
