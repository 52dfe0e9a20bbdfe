// The WebSocket benchmark (issue 7): picklewire messages against raw ws (Node) and raw
// websockets (Python) sending the same bytes over the same kind of loopback connection, in one
// run, as ratios. Large float32 arrays (MB/s) and 1 KiB messages (messages per second).
//
// Node <-> Node: the other Node end runs in a worker thread, so each end has a core (the 1 KiB
// messages get a fresh one). The clock runs from the moment the receiver is ready until the
// last message is received (and, for picklewire, loaded: an NDArray over the received bytes).
// 1 KiB messages: picklewire at protocol version 2 (one frame each; version 3 sends them the
// same way) and limited to version 1 (two frames each), against ws + pickle and raw ws. One
// large buffer: version 3 (in chunks of chunkBytes, written into one ArrayBuffer on receipt)
// against version 2 (one frame), for several chunk sizes, in the same run. Python <-> Node: one python3
// process per run (packages/transport/python/interop_peer.py send-bench / recv-bench).
//
// Masking: a client must mask every byte it sends (RFC 6455) and the server unmask it; ws does
// both with a JavaScript loop unless the optional native bufferutil addon is installed (an
// optional dependency of @picklewire/transport; WS_NO_BUFFER_UTIL=1 in the environment makes
// ws ignore it, for an A/B run). The masking table times ws's mask as loaded here and ws's
// JavaScript loop (in a child process with WS_NO_BUFFER_UTIL=1) against a memcpy, and a client
// that masks with an all-zero key (ws's generateMask option: the masking is skipped; not
// RFC-compliant, shown only to price the masking).

import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { fileURLToPath } from 'node:url'
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads'
import { NDArray, dumps, loads } from '@picklewire/codec'
import { WebSocket, WebSocketServer, connectPickleSocket, listenPickleSocket } from '@picklewire/transport/ws'
import { fmtBytes, fmtRate, printTable } from './measure.mjs'
import { runWsBig } from './ws-big.mjs'

const here = dirname(fileURLToPath(import.meta.url))
const PYTHON = process.env.PICKLEWIRE_PYTHON ?? 'python3'
const PEER_PY = join(here, '..', 'packages', 'transport', 'python', 'interop_peer.py')
const MiB = 2 ** 20
const RAW_WS = { perMessageDeflate: false, maxPayload: 2 ** 30 }
const ZERO_MASK = (mask) => mask.fill(0)
const PICKLE = { protocol: 5 }

/** Sizes and repetitions: full, and --quick for a smoke run. */
function plan({ quick }) {
  return quick
    ? { mib: 8, count: 2, runs: 2, small: 1024, smallCount: 5000, largeMib: 32 }
    : { mib: 64, count: 4, runs: 5, small: 1024, smallCount: 20_000, largeMib: 256 }
}

/** Chunk sizes of the large-buffer table (version 3's chunkBytes; the default is 1 MiB). */
const CHUNK_SIZES = [256 * 1024, MiB, 4 * MiB, 16 * MiB]

/** A float32 array of `bytes` bytes, as picklewire sends it and as raw bytes. */
function tensor(bytes) {
  const data = new Float32Array(bytes / 4).fill(1.5)
  return { array: new NDArray(data), raw: Buffer.from(data.buffer, data.byteOffset, data.byteLength) }
}

/**
 * The picklewire value of a small message and the raw bytes of the same size: {'seq': i,
 * 'payload': bytes}, the payload sized so that header and pickle together are `bytes` long.
 */
function smallMessage(bytes) {
  const payload = new Uint8Array(bytes - 64).fill(7)
  const value = (seq) => new Map([['seq', seq], ['payload', payload]])
  return { value, raw: Buffer.alloc(bytes, 7) }
}

// ---- the other Node end (a worker thread) ----

/** Serves raw ws and picklewire; the first message of a connection says what to do. */
async function peerMain() {
  const raw = new WebSocketServer({ host: '127.0.0.1', port: 0, ...RAW_WS })
  await once(raw, 'listening')
  raw.on('connection', (ws) => {
    let job = null
    let got = 0
    ws.on('message', (data) => {
      if (job === null) {
        job = JSON.parse(String(data))
        if (job.mode === 'source' && job.codec) {
          const { value } = smallMessage(job.bytes)
          for (let i = 0; i < job.count; i++) ws.send(dumps(value(i), PICKLE))
        } else if (job.mode === 'source') {
          const bytes = job.small ? smallMessage(job.bytes).raw : tensor(job.bytes).raw
          for (let i = 0; i < job.count; i++) ws.send(bytes)
        } else {
          ws.send('go')
        }
        return
      }
      if (job.codec) loads(data)
      if (++got === job.count) ws.send('done')
    })
  })
  const pw = await listenPickleSocket()
  pw.on('connection', async (sock) => {
    const job = JSON.parse(await sock.receive())
    if (job.mode === 'source') {
      if (job.small) {
        const { value } = smallMessage(job.bytes)
        for (let i = 0; i < job.count; i++) await sock.send(value(i))
      } else {
        const { array } = tensor(job.bytes)
        for (let i = 0; i < job.count; i++) await sock.send(array)
      }
      await sock.receive()
    } else {
      await sock.send('go')
      for (let i = 0; i < job.count; i++) await sock.receive()
      await sock.send('done')
    }
    await sock.close()
  })
  parentPort.postMessage({ raw: raw.address().port, pw: pw.address().port })
}

if (!isMainThread && workerData?.picklewireWsBenchPeer) await peerMain()

// ---- one timed transfer each ----

/** Node client -> Node server (worker): seconds from "go" to "done". */
async function clientSends(kind, ports, job, wsOptions = {}) {
  if (kind !== 'pw' && kind !== 'pw1') {
    const ws = new WebSocket(`ws://127.0.0.1:${ports.raw}/`, { ...RAW_WS, ...wsOptions })
    await once(ws, 'open')
    const bytes = job.small ? smallMessage(job.bytes).raw : tensor(job.bytes).raw
    const { value } = smallMessage(job.bytes)
    ws.send(JSON.stringify({ ...job, mode: 'sink', codec: kind === 'codec' }))
    await once(ws, 'message')
    const t0 = performance.now()
    if (kind === 'codec') for (let i = 0; i < job.count; i++) ws.send(dumps(value(i), PICKLE))
    else for (let i = 0; i < job.count; i++) ws.send(bytes)
    await once(ws, 'message')
    const dt = performance.now() - t0
    ws.close()
    return dt / 1000
  }
  const sock = await connectPickleSocket(`ws://127.0.0.1:${ports.pw}/`, { ws: wsOptions, protocolVersion: kind === 'pw1' ? 1 : 2 })
  const { value } = smallMessage(job.bytes)
  const array = job.small ? null : tensor(job.bytes).array
  await sock.send(JSON.stringify({ ...job, mode: 'sink' }))
  await sock.receive()
  const t0 = performance.now()
  if (job.small) for (let i = 0; i < job.count; i++) await sock.send(value(i))
  else for (let i = 0; i < job.count; i++) await sock.send(array)
  await sock.receive()
  const dt = performance.now() - t0
  await sock.close()
  return dt / 1000
}

/**
 * One large float32 array, Node client -> Node server (worker, which speaks version 3 and
 * selects what the client offers): protocol version 3 in chunks of `chunk` bytes ('v3') or
 * version 2, one frame ('v2'). Seconds from "go" to the server's "done".
 */
async function largeBuffer(kind, chunk, ports, job) {
  const sock = await connectPickleSocket(`ws://127.0.0.1:${ports.pw}/`, { protocolVersion: kind === 'v3' ? 3 : 2, chunkBytes: chunk })
  const { array } = tensor(job.bytes)
  await sock.send(JSON.stringify({ ...job, mode: 'sink' }))
  await sock.receive()
  const t0 = performance.now()
  for (let i = 0; i < job.count; i++) await sock.send(array)
  await sock.receive()
  const dt = performance.now() - t0
  await sock.close()
  return dt / 1000
}

/** Node server (worker) -> Node client: seconds from the request to the last message loaded. */
async function serverSends(kind, ports, job) {
  if (kind !== 'pw' && kind !== 'pw1') {
    const ws = new WebSocket(`ws://127.0.0.1:${ports.raw}/`, RAW_WS)
    await once(ws, 'open')
    let got = 0
    const done = new Promise((resolve) => ws.on('message', (data) => {
      if (kind === 'codec') loads(data)
      if (++got === job.count) resolve()
    }))
    const t0 = performance.now()
    ws.send(JSON.stringify({ ...job, mode: 'source', codec: kind === 'codec' }))
    await done
    const dt = performance.now() - t0
    ws.close()
    return dt / 1000
  }
  const sock = await connectPickleSocket(`ws://127.0.0.1:${ports.pw}/`, { protocolVersion: kind === 'pw1' ? 1 : 2 })
  const t0 = performance.now()
  await sock.send(JSON.stringify({ ...job, mode: 'source' }))
  let copied = 0
  for (let i = 0; i < job.count; i++) {
    const v = await sock.receive()
    if (v instanceof NDArray && v.copied) copied++
  }
  const dt = performance.now() - t0
  await sock.send('bye')
  await sock.close()
  if (copied || sock.stats().bytesCopied > (job.small ? Infinity : 0)) throw new Error(`the Node receiver copied tensor bytes (${copied} arrays, ${sock.stats().bytesCopied} bytes)`)
  return dt / 1000
}

/** python3 interop_peer.py against a Node server in this thread: seconds, timed here. */
async function withPython(kind, direction, job) {
  const raw = kind === 'raw'
  const server = raw ? new WebSocketServer({ host: '127.0.0.1', port: 0, ...RAW_WS }) : await listenPickleSocket()
  if (raw) await once(server, 'listening')
  const url = `ws://127.0.0.1:${server.address().port}/`
  const args = [PEER_PY, direction === 'to-node' ? 'send-bench' : 'recv-bench', url, '--mib', String(job.bytes / MiB), '--count', String(job.count)]
  if (raw) args.push('--raw')
  const child = spawn(PYTHON, args, { stdio: ['ignore', 'ignore', 'inherit'] })
  const exited = once(child, 'exit')
  try {
    const [conn] = await once(server, 'connection')
    if (raw) {
      const ws = conn
      if (direction === 'to-node') {
        let got = 0
        const done = new Promise((resolve) => ws.on('message', (data) => {
          if (data.length !== job.bytes) throw new Error(`a frame of ${data.length} bytes`)
          if (++got === job.count) resolve()
        }))
        const t0 = performance.now()
        ws.send('go')
        await done
        const dt = performance.now() - t0
        ws.send('done')
        return dt / 1000
      }
      await once(ws, 'message')
      const { raw: bytes } = tensor(job.bytes)
      const t0 = performance.now()
      for (let i = 0; i < job.count; i++) ws.send(bytes)
      await once(ws, 'message')
      return (performance.now() - t0) / 1000
    }
    const sock = conn
    if (direction === 'to-node') {
      const t0 = performance.now()
      await sock.send('go')
      for (let i = 0; i < job.count; i++) {
        const v = await sock.receive()
        if (!(v instanceof NDArray) || v.nbytes !== job.bytes || v.copied) throw new Error('Python sent something else, or it was copied')
      }
      const dt = performance.now() - t0
      await sock.send('done')
      return dt / 1000
    }
    await sock.receive()
    const { array } = tensor(job.bytes)
    const t0 = performance.now()
    for (let i = 0; i < job.count; i++) await sock.send(array)
    await sock.receive()
    return (performance.now() - t0) / 1000
  } finally {
    const [code] = await Promise.race([exited, new Promise((r) => setTimeout(() => r([null]), 30_000))])
    if (code !== 0) child.kill()
    if (raw) server.close()
    else await server.close()
    if (code !== 0) throw new Error(`python3 interop_peer.py ${args.slice(1, 3).join(' ')} exited with ${code}`)
  }
}

function summary(s) {
  s.sort((a, b) => a - b)
  return { best: s[0], median: s[s.length >> 1] }
}

/**
 * Best and median seconds of each kind ('pw', 'raw', ...) of fn: one warm-up call each, then
 * `runs` rounds that call every kind once, so that a busy moment of the machine falls on all
 * of them alike.
 */
async function timeKinds(fn, kinds, runs) {
  for (const k of kinds) await fn(k)
  const times = Object.fromEntries(kinds.map((k) => [k, []]))
  for (let i = 0; i < runs; i++) for (const k of kinds) times[k].push(await fn(k))
  return Object.fromEntries(kinds.map((k) => [k, summary(times[k])]))
}

function pythonReady() {
  return new Promise((resolve) => {
    const p = spawn(PYTHON, ['-c', 'import numpy, websockets, msgpack'], { stdio: 'ignore' })
    p.on('error', () => resolve(false))
    p.on('exit', (code) => resolve(code === 0))
  })
}

/** The path of ws's buffer-util.js, as @picklewire/transport loads it. */
function wsBufferUtil() {
  const wsDir = dirname(createRequire(fileURLToPath(import.meta.resolve('@picklewire/transport'))).resolve('ws'))
  return join(wsDir, 'lib', 'buffer-util.js')
}

/** Best of 4 timings of ws's mask over `bytes` bytes, run where it is called (source: a function of bytes and a require). */
function timeMask(bytes, req) {
  const { mask } = req(wsBufferUtil())
  const src = Buffer.alloc(bytes, 1)
  const dst = Buffer.allocUnsafe(bytes)
  const key = Buffer.from([1, 2, 3, 4])
  let b = Infinity
  for (let i = 0; i < 4; i++) {
    const t0 = performance.now()
    mask(src, key, dst, 0, bytes)
    b = Math.min(b, (performance.now() - t0) / 1000)
  }
  return b
}

/** ws's mask as loaded here, its JavaScript loop (a child process without bufferutil), and a memcpy of as many bytes. */
async function maskingCost(bytes) {
  const src = Buffer.alloc(bytes, 1)
  const dst = Buffer.allocUnsafe(bytes)
  let memcpy = Infinity
  for (let i = 0; i < 4; i++) {
    const t0 = performance.now()
    src.copy(dst)
    memcpy = Math.min(memcpy, (performance.now() - t0) / 1000)
  }
  const mask = timeMask(bytes, createRequire(import.meta.url))
  const script = `const { performance } = require('node:perf_hooks'); const wsBufferUtil = () => ${JSON.stringify(wsBufferUtil())};
${timeMask.toString()}; process.stdout.write(String(timeMask(${bytes}, require)))`
  const child = spawn(process.execPath, ['-e', script], { env: { ...process.env, WS_NO_BUFFER_UTIL: '1' }, stdio: ['ignore', 'pipe', 'inherit'] })
  let out = ''
  child.stdout.on('data', (d) => (out += d))
  await once(child, 'exit')
  return { mask, jsLoop: Number(out), memcpy }
}

const rate = (bytes, t) => fmtRate(bytes, t.best)
const perSecond = (count, t) => `${Math.round(count / t.best).toLocaleString('en')}/s`
const ratio = (ours, theirs) => `${(theirs.best / ours.best).toFixed(2)}x`

/** Runs the ws suite and prints its tables. */
export async function runWs({ quick, log }) {
  const p = plan({ quick })
  const big = { bytes: p.mib * MiB, count: p.count }
  const small = { bytes: p.small, count: p.smallCount, small: true }
  const bytes = big.bytes * big.count
  const peer = async () => {
    const worker = new Worker(fileURLToPath(import.meta.url), { workerData: { picklewireWsBenchPeer: true } })
    const [ports] = await once(worker, 'message')
    return { worker, ports }
  }
  let { worker, ports } = await peer()
  const rows = []
  const smallRows = []
  const largeRows = []
  const large = { bytes: p.largeMib * MiB, count: 1 }
  let zeroMask
  try {
    const pair = async (label, fn, kinds = ['pw', 'raw']) => {
      log(`  ${label}`)
      return { label, ...(await timeKinds(fn, kinds, p.runs)) }
    }
    rows.push(await pair('Node -> Node, client sends (masked)', (k) => clientSends(k, ports, big)))
    rows.push(await pair('Node -> Node, server sends', (k) => serverSends(k, ports, big)))
    zeroMask = await pair('Node -> Node, client sends, all-zero mask', (k) => clientSends(k, ports, big, { generateMask: ZERO_MASK }))
    if (await pythonReady()) {
      rows.push(await pair('Python -> Node (Python client sends, masked)', (k) => withPython(k, 'to-node', big)))
      rows.push(await pair('Node -> Python (Node server sends)', (k) => withPython(k, 'to-python', big)))
    } else {
      rows.push({ label: `Python rows skipped: ${PYTHON} lacks numpy, websockets or msgpack`, na: true })
    }
    // The small messages get a fresh peer thread, and this thread a full GC first: what the
    // 64 MiB runs left in the heaps (and the GC work it makes) would otherwise fall on the
    // runs that allocate per message (picklewire, ws + pickle) and not on raw ws.
    await worker.terminate()
    ;({ worker, ports } = await peer())
    globalThis.gc?.()
    const kinds = ['pw', 'pw1', 'codec', 'raw']
    smallRows.push(await pair('Node -> Node, client sends', (k) => clientSends(k, ports, small), kinds))
    smallRows.push(await pair('Node -> Node, server sends', (k) => serverSends(k, ports, small), kinds))
    for (const chunk of CHUNK_SIZES) {
      largeRows.push({ chunk, ...(await pair(`one ${fmtBytes(large.bytes)} buffer, chunks of ${fmtBytes(chunk)}`, (k) => largeBuffer(k, chunk, ports, large), ['v3', 'v2'])) })
    }
  } finally {
    await worker.terminate()
  }

  console.log(`### ${big.count} x ${fmtBytes(big.bytes)} float32 arrays per run (best of ${p.runs}, picklewire and raw runs taking turns after a warm-up; raw: the same bytes as one frame each)\n`)
  printTable(['path', 'picklewire', 'raw ws / websockets', 'vs raw'], rows.map((r) => r.na
    ? [r.label, 'n/a', 'n/a', 'n/a']
    : [r.label, rate(bytes, r.pw), rate(bytes, r.raw), ratio(r.pw, r.raw)]))
  console.log(`\nmedians (picklewire / raw): ${rows.filter((r) => !r.na).map((r) => `${r.label}: ${fmtRate(bytes, r.pw.median)} / ${fmtRate(bytes, r.raw.median)}`).join('; ')}`)
  console.log(`\n### ${small.count.toLocaleString('en')} messages of ${fmtBytes(small.bytes)} per run (best of ${p.runs}, taking turns): {'seq': i, 'payload': bytes}, header + pickle = ${fmtBytes(small.bytes)}\n`)
  console.log('picklewire: protocol version 2, one frame per message (the pickle inside the header frame); v1: the same with')
  console.log('protocolVersion: 1, two frames per message (header, pickle). ws + pickle: the same value pickled with the same codec')
  console.log('(dumps), sent as one frame, loaded on receipt (loads): what an application does without the carrier. raw ws:')
  console.log(`ready-made frames of ${fmtBytes(small.bytes)}, nothing pickled or loaded.\n`)
  printTable(['path', 'picklewire', 'picklewire v1', 'ws + pickle', 'raw ws', 'vs ws + pickle', 'vs raw'], smallRows.map((r) => [
    r.label, perSecond(small.count, r.pw), perSecond(small.count, r.pw1), perSecond(small.count, r.codec), perSecond(small.count, r.raw), ratio(r.pw, r.codec), ratio(r.pw, r.raw),
  ]))
  const med = (t) => `${Math.round(small.count / t.median).toLocaleString('en')}/s`
  console.log(`\nmedians (picklewire / v1 / ws + pickle / raw ws): ${smallRows.map((r) => `${r.label}: ${med(r.pw)} / ${med(r.pw1)} / ${med(r.codec)} / ${med(r.raw)} (${(r.raw.median / r.pw.median).toFixed(2)}x of raw)`).join('; ')}`)

  console.log(`\n### one ${fmtBytes(large.bytes)} float32 array, Node -> Node (client sends; best of ${p.runs}, taking turns): protocol version 3 in chunks against version 2 (one frame)\n`)
  console.log('version 3: the buffer leaves in frames of chunkBytes and the receiver copies each into one ArrayBuffer of the')
  console.log('announced size (progress and cancellation per chunk, any size the limits allow); version 2: one frame, which the')
  console.log('receiver views where ws assembled it (no copy of its own, but the whole frame is held by ws before anything happens).\n')
  printTable(['chunkBytes', 'version 3', 'version 2', 'v3 / v2'], largeRows.map((r) => [
    fmtBytes(r.chunk), rate(large.bytes, r.v3), rate(large.bytes, r.v2), `${(r.v2.best / r.v3.best).toFixed(2)}x`,
  ]))

  const m = await maskingCost(big.bytes)
  const bu = bufferutilState()
  console.log(`\n### masking (bufferutil ${bu})\n`)
  printTable(['operation', 'rate'], [
    [`ws's mask over ${fmtBytes(big.bytes)}, as loaded here (bufferutil ${bu})`, fmtRate(big.bytes, m.mask)],
    [`ws's JavaScript mask loop over ${fmtBytes(big.bytes)} (no bufferutil)`, fmtRate(big.bytes, m.jsLoop)],
    [`memcpy of ${fmtBytes(big.bytes)} (Buffer.copy)`, fmtRate(big.bytes, m.memcpy)],
    ['Node -> Node, client sends, random mask (picklewire / raw)', `${rate(bytes, rows[0].pw)} / ${rate(bytes, rows[0].raw)}`],
    ['Node -> Node, client sends, all-zero mask: no masking work (picklewire / raw)', `${rate(bytes, zeroMask.pw)} / ${rate(bytes, zeroMask.raw)}`],
  ])
  console.log('\nReceiving Node side: every picklewire array above loaded as an NDArray over the Buffer ws delivered (checked: no copy beyond ws\'s own assembly of the frame).')

  await runWsBig({ quick, log })
}

/** Whether ws uses bufferutil here: 'in use', 'installed, turned off by WS_NO_BUFFER_UTIL' or 'not installed'. */
function bufferutilState() {
  let installed
  try {
    createRequire(wsBufferUtil())('bufferutil')
    installed = true
  } catch {
    installed = false
  }
  if (!installed) return 'not installed'
  return process.env.WS_NO_BUFFER_UTIL ? 'installed, turned off by WS_NO_BUFFER_UTIL' : 'in use'
}
