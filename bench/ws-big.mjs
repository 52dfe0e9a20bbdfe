// The big-tensor rows of the WebSocket benchmark: one float32 array of 64 MiB and of 2 GiB,
// Python -> Node and Node -> Python, side by side in one run:
//
// - picklewire over frames (sameHost: false / same_host=False: protocol version 3 chunks of
//   1 MiB written into one ArrayBuffer or bytearray on receipt),
// - picklewire over the same-host path (sameHost: true / same_host=True: the buffer goes
//   through a file under /dev/shm, the WebSocket carries its place; the sender writes a file
//   again once the receiver read it (Node) or unmapped it (Python: it drops each array before
//   it answers, and says shm-free)),
// - Python -> Node, same host, recycled: the Node receiver hands each array's memory back with
//   sock.recycle(), and the next array is read into it instead of into a fresh ArrayBuffer,
// - raw ws (Node) / websockets (Python) sending the same bytes: one binary message at 64 MiB;
//   at 2 GiB, messages of 1 MiB that the receiver copies into one preallocated buffer (one
//   message of 2 GiB would be held whole, and then copied, by both libraries),
// - the floor: one memcpy of the same bytes in each language (Node: Uint8Array.prototype.set
//   into a warm ArrayBuffer; Python: numpy.copyto into a warm array), and beside it one memcpy
//   into fresh memory (a new ArrayBuffer / numpy.empty each time: the page faults of first touch).
//
// Times run from the moment the receiver asks for the array ("go" to Python; the send for Node)
// until the receiver has it as a value (Python answers when it has its numpy array). Ratios:
// the time against one memcpy in the receiver's language, and raw's time against picklewire's.
// The receiver's peak memory is its VmHWM over the transfer less its RSS before it (Linux
// /proc/self/clear_refs), against the tensor's size. --quick: 16 MiB only; --sizes=64M,2G
// (alone only) picks the sizes.
//
// Part of `npm run bench -- ws`; alone: `node --expose-gc bench/ws-big.mjs [--quick] [--sizes=64M]`.

import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { readFileSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { NDArray } from '@picklewire/codec'
import { WebSocketServer, listenPickleSocket } from '@picklewire/transport/ws'
import { fmtBytes, fmtRate, printTable } from './measure.mjs'

const here = dirname(fileURLToPath(import.meta.url))
const PYTHON = process.env.PICKLEWIRE_PYTHON ?? 'python3'
const SCRIPT = join(here, 'ws_big.py')
const MiB = 2 ** 20
const GiB = 2 ** 30
const LIMITS = { maxBufferBytes: 8 * GiB, maxMessageBytes: 8 * GiB }
/** The paths compared, in the order of the table, per direction. */
const KINDS = { 'to-python': ['frames', 'same-host', 'raw'], 'to-node': ['frames', 'same-host', 'same-host-recycled', 'raw'] }

const collect = typeof globalThis.gc === 'function' ? globalThis.gc : () => {}

function procStatus(field) {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync('/proc/self/status', 'utf8'))
  return Number(m[1]) * 1024
}

/** Resets this process's peak RSS (VmHWM) to its RSS now; returns that RSS. */
function resetPeak() {
  writeFileSync('/proc/self/clear_refs', '5')
  return procStatus('VmRSS')
}

/** Raw ws/websockets: one message up to 1 GiB, messages of 1 MiB above. */
const rawFrameBytes = (bytes) => (bytes > GiB ? MiB : 0)

function floatArray(bytes) {
  return new Float32Array(bytes / 4).fill(1.5)
}

function python(args) {
  const child = spawn(PYTHON, [SCRIPT, ...args], { stdio: ['ignore', 'pipe', 'inherit'] })
  let out = ''
  child.stdout.on('data', (d) => (out += d))
  const done = once(child, 'exit').then(([code]) => {
    if (code !== 0) throw new Error(`python3 bench/ws_big.py ${args.slice(0, 2).join(' ')} exited with ${code}`)
    return out
  })
  return { child, done }
}

/**
 * Best seconds of one Uint8Array.prototype.set of `bytes` bytes into a warm ArrayBuffer, and
 * into a new ArrayBuffer each time (its allocation and first touch included).
 */
function nodeMemcpy(bytes, runs) {
  const src = new Uint8Array(bytes).fill(7)
  const dst = new Uint8Array(bytes).fill(0)
  let warm = Infinity
  let fresh = Infinity
  for (let i = 0; i < runs + 1; i++) {
    let t0 = performance.now()
    dst.set(src)
    warm = Math.min(warm, (performance.now() - t0) / 1000)
    collect()
    t0 = performance.now()
    new Uint8Array(bytes).set(src)
    fresh = Math.min(fresh, (performance.now() - t0) / 1000)
  }
  return { warm, fresh }
}

async function pythonMemcpy(bytes, runs) {
  const out = await python(['memcpy', '--bytes', String(bytes), '--runs', String(runs + 1)]).done
  const { best, fresh } = JSON.parse(out)
  return { warm: best, fresh }
}

/**
 * One path, one direction: a python3 process that does runs + 1 transfers (the first a
 * warm-up). Returns every timed run's seconds and the receiver's largest peak over them.
 */
async function transfer(direction, kind, bytes, runs) {
  const raw = kind === 'raw'
  const recycled = kind === 'same-host-recycled'
  const sameHost = kind === 'same-host' || recycled
  const server = raw
    ? new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false, maxPayload: 2 ** 32 })
    : await listenPickleSocket({ limits: LIMITS, sameHost, recycleBytes: 2 * bytes })
  if (raw) await once(server, 'listening')
  const url = `ws://127.0.0.1:${server.address().port}/`
  const frame = rawFrameBytes(bytes)
  // Made (and touched) before Python connects, as Python makes its array before it connects:
  // the same bytes go every run, and no second of filling memory falls inside a transfer.
  const data = direction === 'to-python' ? floatArray(bytes) : null
  const py = python([direction, url, '--kind', recycled ? 'same-host' : kind, '--bytes', String(bytes), '--runs', String(runs + 1), '--frame-bytes', String(frame)])
  const times = []
  let peak = 0
  let reuse = ''
  try {
    const [conn] = await once(server, 'connection')
    for (let i = 0; i < runs + 1; i++) {
      collect()
      let dt
      if (direction === 'to-node') {
        const before = resetPeak()
        if (raw) {
          const ws = conn
          const got = new Promise((resolve) => {
            if (frame === 0) return ws.once('message', (data) => resolve(data.length))
            const into = new Uint8Array(bytes)
            let n = 0
            const onMessage = (data) => {
              into.set(data, n)
              n += data.length
              if (n >= bytes) {
                ws.off('message', onMessage)
                resolve(n)
              }
            }
            ws.on('message', onMessage)
          })
          const t0 = performance.now()
          ws.send('go')
          const n = await got
          dt = (performance.now() - t0) / 1000
          if (n !== bytes) throw new Error(`raw: ${n} bytes arrived, not ${bytes}`)
        } else {
          const t0 = performance.now()
          await conn.send('go')
          const v = await conn.receive()
          dt = (performance.now() - t0) / 1000
          if (!(v instanceof NDArray) || v.nbytes !== bytes) throw new Error('Python sent something else')
          if (recycled) conn.recycle(v.data)
        }
        peak = Math.max(peak, procStatus('VmHWM') - before)
      } else {
        if (raw) {
          const ws = conn
          if (i === 0) await once(ws, 'message') // ready
          const answer = once(ws, 'message')
          const buf = Buffer.from(data.buffer)
          const t0 = performance.now()
          if (frame === 0) ws.send(buf)
          else for (let at = 0; at < bytes; at += frame) ws.send(buf.subarray(at, at + frame))
          const [reply] = await answer
          dt = (performance.now() - t0) / 1000
          peak = Math.max(peak, JSON.parse(String(reply)).peak)
        } else {
          if (i === 0) await conn.receive() // ready
          const array = new NDArray(data)
          const t0 = performance.now()
          await conn.send(array)
          const reply = await conn.receive()
          dt = (performance.now() - t0) / 1000
          peak = Math.max(peak, JSON.parse(reply).peak)
        }
      }
      if (i > 0) times.push(dt)
    }
    if (direction === 'to-node') {
      if (raw) conn.send('bye')
      else await conn.send('bye')
    }
    if (!raw) {
      const s = conn.stats()
      reuse = direction === 'to-node' ? `${s.buffersRecycled} of ${runs + 1} into recycled memory` : `${runs + 1} arrays through ${s.filesSameHostMade} files`
    }
    await py.done
  } finally {
    py.child.kill()
    if (raw) server.close()
    else await server.close()
  }
  times.sort((a, b) => a - b)
  return { best: times[0], median: times[times.length >> 1], peak, reuse: sameHost ? reuse : '' }
}

function pythonReady() {
  return new Promise((resolve) => {
    const p = spawn(PYTHON, ['-c', 'import numpy, websockets, msgpack'], { stdio: 'ignore' })
    p.on('error', () => resolve(false))
    p.on('exit', (code) => resolve(code === 0))
  })
}

const LABELS = {
  frames: 'picklewire, frames (sameHost: false)',
  'same-host': 'picklewire, same host (files under /dev/shm)',
  'same-host-recycled': 'picklewire, same host, recycled (sock.recycle)',
  raw: 'raw websockets / ws',
}

/** Runs the big-tensor rows and prints their table. */
export async function runWsBig({ quick, log, sizes: only }) {
  if (!(await pythonReady())) {
    console.log(`\n### big tensors between Python and Node: skipped (${PYTHON} lacks numpy, websockets or msgpack)`)
    return
  }
  const sizes = only ?? (quick ? [16 * MiB] : [64 * MiB, 2 * GiB])
  const runsOf = (bytes) => (quick ? 2 : bytes > GiB ? 2 : 5)
  const rows = []
  for (const bytes of sizes) {
    const runs = runsOf(bytes)
    log(`  big tensors: ${fmtBytes(bytes)} memcpy floors`)
    const floor = { 'to-node': nodeMemcpy(bytes, runs), 'to-python': await pythonMemcpy(bytes, runs) }
    collect()
    for (const direction of ['to-python', 'to-node']) {
      const results = {}
      for (const kind of KINDS[direction]) {
        log(`  big tensors: ${fmtBytes(bytes)} ${direction} ${kind}`)
        results[kind] = await transfer(direction, kind, bytes, runs)
        collect()
      }
      const name = direction === 'to-node' ? 'Python -> Node' : 'Node -> Python'
      for (const kind of KINDS[direction]) {
        const r = results[kind]
        rows.push([
          name, fmtBytes(bytes), LABELS[kind] + (kind === 'raw' && rawFrameBytes(bytes) ? ` (${fmtBytes(rawFrameBytes(bytes))} messages)` : ''),
          `${(r.best * 1000).toFixed(0)} ms (median ${(r.median * 1000).toFixed(0)})`, fmtRate(bytes, r.best),
          `${(r.best / floor[direction].warm).toFixed(1)}x`, kind === 'raw' ? '1.00x' : `${(results.raw.best / r.best).toFixed(2)}x`,
          `${(r.peak / bytes).toFixed(2)}x`, r.reuse,
        ])
      }
      const f = floor[direction]
      const lang = direction === 'to-node' ? 'Node (Uint8Array set)' : 'Python (numpy.copyto)'
      rows.push([name, fmtBytes(bytes), `floor: one memcpy in ${lang} into warm memory`,
        `${(f.warm * 1000).toFixed(1)} ms`, fmtRate(bytes, f.warm), '1.0x', '', '', ''])
      rows.push([name, fmtBytes(bytes), `one memcpy in ${lang} into fresh memory`,
        `${(f.fresh * 1000).toFixed(1)} ms`, fmtRate(bytes, f.fresh), `${(f.fresh / f.warm).toFixed(1)}x`, '', '', ''])
    }
  }
  console.log(`\n### big tensors between Python and Node: one float32 array (best of ${quick ? 2 : '5 at 64 MiB, 2 at 2 GiB'}, after a warm-up)\n`)
  console.log('time: from the receiver asking until it holds the array as a value. x memcpy: that time against one memcpy of the')
  console.log('same bytes in the receiving language (1.0x is the floor). vs raw: raw\'s time against this row\'s (above 1: faster')
  console.log('than raw). receiver peak: the receiving process\'s peak RSS over the transfer less its RSS before, against the size.')
  console.log('reuse: Python -> Node, messages whose array filled memory recycled by the application; Node -> Python, the files the')
  console.log(`Node sender made for all its messages (a file is written again once Python unmapped it). GLIBC_TUNABLES=${process.env.GLIBC_TUNABLES ?? '(unset)'}.\n`)
  printTable(['direction', 'size', 'path', 'time', 'rate', 'x memcpy', 'vs raw', 'receiver peak / size', 'reuse'], rows)
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const sizesArg = process.argv.find((a) => a.startsWith('--sizes='))
  const sizes = sizesArg?.slice('--sizes='.length).split(',').map((t) => {
    const m = /^(\d+)([MG])$/.exec(t)
    if (m === null) throw new Error(`--sizes takes sizes like 64M or 2G, got ${t}`)
    return Number(m[1]) * (m[2] === 'G' ? GiB : MiB)
  })
  await runWsBig({ quick: process.argv.includes('--quick'), log: (line) => console.error(line), sizes })
}
