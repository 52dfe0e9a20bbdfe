// The browser benchmark: Python -> web page against Python -> Node, in the same run, as ratios.
// One python3 process (bench/browser_producer.py, the Python peer's server) sends 64 MiB float32
// arrays (out of band, in version 3 chunks of 1 MiB) and 1 KiB messages ({'seq', 'payload'}) to
// whichever client asks: a Node PickleSocket in this process, or the browser's PickleSocket in a
// headless chromium page (the one-file bundle, driven by playwright-core). Each receiver times
// itself from its request until the last message is received and loaded (a 64 MiB array: an
// NDArray over the ArrayBuffer it was assembled in), and the two take turns; best of the runs.
// The raw rows are the browser's own delivery: the same process's plain websockets server sends
// the same bytes (an array as 1 MiB binary messages, a 1 KiB message as one) to a plain WebSocket
// in the page (binaryType 'arraybuffer') and to a ws WebSocket in Node, which only count them.
// Needs chromium (/usr/bin/chromium, or PICKLEWIRE_CHROMIUM) and python3 with numpy, websockets
// and msgpack; says what it skipped otherwise.

import { spawn, spawnSync } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { createServer } from 'node:http'
import { dirname, join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { NDArray } from '@picklewire/codec'
import { WebSocket, connectPickleSocket } from '@picklewire/transport/ws'
import { fmtBytes, fmtRate, printTable } from './measure.mjs'

const here = dirname(fileURLToPath(import.meta.url))
const PYTHON = process.env.PICKLEWIRE_PYTHON ?? 'python3'
const CHROMIUM = process.env.PICKLEWIRE_CHROMIUM ?? '/usr/bin/chromium'
const BUNDLE = join(here, '..', 'packages', 'transport', 'dist', 'browser', 'picklewire.js')
const MiB = 2 ** 20

function plan({ quick }) {
  return quick
    ? { runs: 2, jobs: [{ kind: 'array', bytes: 64 * MiB, count: 2 }, { kind: 'small', bytes: 1024, count: 2_000 }] }
    : { runs: 3, jobs: [{ kind: 'array', bytes: 64 * MiB, count: 8 }, { kind: 'small', bytes: 1024, count: 20_000 }] }
}

/** The page's side, as one module: the same loop as nodeReceives, over the browser's PickleSocket. */
const PAGE_MODULE = `
import { NDArray, connectPickleSocket } from '/picklewire.js'
let sock = null
export async function open(url) {
  sock = await connectPickleSocket(url, { limits: { maxBufferBytes: 2 ** 30 } })
  return sock.protocolVersion
}
export async function receive(job) {
  const t0 = performance.now()
  await sock.send({ op: 'send', kind: job.kind, bytes: job.bytes, count: job.count })
  let n = 0
  for (;;) {
    const v = await sock.receive()
    if (v === 'end') break
    if (job.kind === 'array' && !(v instanceof NDArray && v.nbytes === job.bytes && !v.copied)) throw new Error('not an NDArray view of the size asked')
    n++
  }
  if (n !== job.count) throw new Error(n + ' messages of ' + job.count)
  return (performance.now() - t0) / 1000
}
export async function close() {
  await sock.close()
  raw?.close()
}
let raw = null
export async function openRaw(url) {
  raw = new WebSocket(url)
  raw.binaryType = 'arraybuffer'
  await new Promise((resolve, reject) => {
    raw.onopen = resolve
    raw.onerror = () => reject(new Error('cannot connect to ' + url))
  })
}
export async function receiveRaw(job) {
  const t0 = performance.now()
  let bytes = 0
  await new Promise((resolve) => {
    raw.onmessage = (e) => {
      if (typeof e.data === 'string') resolve()
      else bytes += e.data.byteLength
    }
    raw.send(JSON.stringify(job))
  })
  if (bytes !== job.bytes * job.count) throw new Error(bytes + ' bytes of ' + job.bytes * job.count)
  return (performance.now() - t0) / 1000
}
`

/** Node's side of the raw rows: a ws WebSocket that counts the bytes of binary messages until 'end'. */
function nodeReceivesRaw(ws, job) {
  const t0 = performance.now()
  let bytes = 0
  return new Promise((resolve, reject) => {
    const onMessage = (data, isBinary) => {
      if (isBinary) {
        bytes += data.byteLength
        return
      }
      ws.off('message', onMessage)
      if (bytes !== job.bytes * job.count) reject(new Error(`${bytes} bytes of ${job.bytes * job.count}`))
      else resolve((performance.now() - t0) / 1000)
    }
    ws.on('message', onMessage)
    ws.send(JSON.stringify(job))
  })
}

async function nodeReceives(sock, job) {
  const t0 = performance.now()
  await sock.send({ op: 'send', kind: job.kind, bytes: job.bytes, count: job.count })
  let n = 0
  for (;;) {
    const v = await sock.receive()
    if (v === 'end') break
    if (job.kind === 'array' && !(v instanceof NDArray && v.nbytes === job.bytes && !v.copied)) throw new Error('not an NDArray view of the size asked')
    n++
  }
  if (n !== job.count) throw new Error(`${n} messages of ${job.count}`)
  return (performance.now() - t0) / 1000
}

function missing() {
  if (!existsSync(CHROMIUM)) return `no chromium at ${CHROMIUM} (apt-get install chromium, or set PICKLEWIRE_CHROMIUM)`
  if (!existsSync(BUNDLE)) return `${BUNDLE} is missing (npm run build makes it)`
  const r = spawnSync(PYTHON, ['-c', 'import numpy, websockets.asyncio, msgpack'], { encoding: 'utf8' })
  if (r.status !== 0) return `${PYTHON} cannot import numpy, websockets.asyncio and msgpack`
  return null
}

export async function runBrowser({ quick, log }) {
  const why = missing()
  if (why !== null) {
    console.log(`skipped: ${why}`)
    return
  }
  const { chromium } = await import('playwright-core')
  const p = plan({ quick })
  const producer = spawn(PYTHON, [join(here, 'browser_producer.py')], { stdio: ['pipe', 'pipe', 'inherit'] })
  const http = createServer((req, res) => {
    if (req.url === '/picklewire.js') res.writeHead(200, { 'content-type': 'text/javascript' }).end(readFileSync(BUNDLE))
    else if (req.url === '/bench.js') res.writeHead(200, { 'content-type': 'text/javascript' }).end(PAGE_MODULE)
    else res.writeHead(200, { 'content-type': 'text/html' }).end('<!doctype html><title>picklewire browser bench</title>')
  })
  let browser = null
  let node = null
  let nodeRaw = null
  try {
    const { port, raw: rawPort } = JSON.parse(await new Promise((resolve) => createInterface({ input: producer.stdout }).once('line', resolve)))
    const url = `ws://127.0.0.1:${port}/`
    const rawUrl = `ws://127.0.0.1:${rawPort}/`
    await new Promise((resolve) => http.listen(0, '127.0.0.1', resolve))
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: process.getuid?.() === 0 ? ['--no-sandbox'] : [] })
    const page = await browser.newPage()
    await page.goto(`http://127.0.0.1:${http.address().port}/`)
    const inPage = (fn, arg) => page.evaluate(`import('/bench.js').then((m) => m.${fn}(${JSON.stringify(arg)}))`)
    const version = await inPage('open', url)
    node = await connectPickleSocket(url, { limits: { maxBufferBytes: 2 ** 30 } })
    await inPage('openRaw', rawUrl)
    nodeRaw = new WebSocket(rawUrl, { perMessageDeflate: false, maxPayload: 2 ** 30 })
    await new Promise((resolve, reject) => nodeRaw.once('open', resolve).once('error', reject))
    console.log(`${browser.version().startsWith('1') ? 'chromium ' : ''}${browser.version()} (headless, playwright-core), protocol version ${version} both ways; python3 ${PYTHON} sends\n`)
    const rows = []
    for (const job of p.jobs) {
      log(`  browser: ${job.count} x ${fmtBytes(job.bytes)} (${job.kind})`)
      // a warm-up of each, then the two receivers take turns
      const warm = { ...job, count: Math.max(1, job.count / 4) }
      await nodeReceives(node, warm)
      await inPage('receive', warm)
      await nodeReceivesRaw(nodeRaw, warm)
      await inPage('receiveRaw', warm)
      const times = { node: [], page: [], nodeRaw: [], pageRaw: [] }
      for (let r = 0; r < p.runs; r++) {
        times.node.push(await nodeReceives(node, job))
        times.page.push(await inPage('receive', job))
        times.nodeRaw.push(await nodeReceivesRaw(nodeRaw, job))
        times.pageRaw.push(await inPage('receiveRaw', job))
      }
      const best = Object.fromEntries(Object.entries(times).map(([k, v]) => [k, Math.min(...v)]))
      const rate = (s) => (job.kind === 'array' ? fmtRate(job.bytes * job.count, s) : `${Math.round(job.count / s).toLocaleString('en-US')}/s`)
      rows.push([
        job.kind === 'array' ? `${job.count} x ${fmtBytes(job.bytes)} float32 array` : `${job.count.toLocaleString('en-US')} x ${fmtBytes(job.bytes)} message`,
        rate(best.node), rate(best.page), `${(best.node / best.page).toFixed(2)}x`,
        rate(best.nodeRaw), rate(best.pageRaw), `${(best.nodeRaw / best.pageRaw).toFixed(2)}x`,
        `${(best.pageRaw / best.page).toFixed(2)}x`, `${(best.nodeRaw / best.node).toFixed(2)}x`,
      ])
    }
    printTable([
      'messages (best of ' + p.runs + ')', 'Python -> Node', 'Python -> page', 'page / Node',
      'raw -> Node', 'raw -> page', 'raw page / raw Node', 'page / raw page', 'Node / raw Node',
    ], rows)
    console.log('\nBoth receivers load every message: a 64 MiB array arrives in 1 MiB chunks (version 3) copied into one ArrayBuffer and loads as an NDArray over it; a 1 KiB message is one frame. The page is headless chromium on the same machine; its WebSocket delivers each frame as an ArrayBuffer to the page thread.')
    console.log('raw: the same bytes from a plain websockets server (an array as 1 MiB binary messages, a 1 KiB message as one), received by a plain WebSocket in the page and a ws WebSocket in Node that only count them: the browser\'s and ws\'s own delivery. page / raw page and Node / raw Node: picklewire\'s rate against raw\'s on the same receiver (1.00x: no cost over the socket itself).')
    await inPage('close', null)
  } finally {
    await node?.close().catch(() => {})
    nodeRaw?.close()
    await browser?.close()
    http.close()
    producer.stdin.end()
  }
}
