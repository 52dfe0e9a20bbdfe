// The browser benchmark: Python -> web page against Python -> Node, in the same run, as ratios.
// One python3 process (bench/browser_producer.py, the Python peer's server) sends 64 MiB float32
// arrays (out of band, in version 3 chunks of 1 MiB) and 1 KiB messages ({'seq', 'payload'}) to
// whichever client asks: a Node PickleSocket in this process, or the browser's PickleSocket in a
// headless chromium page (the one-file bundle, driven by playwright-core). Each receiver times
// itself from its request until the last message is received and loaded (a 64 MiB array: an
// NDArray over the ArrayBuffer it was assembled in), and the two take turns; best of the runs.
// Needs chromium (/usr/bin/chromium, or PICKLEWIRE_CHROMIUM) and python3 with numpy, websockets
// and msgpack; says what it skipped otherwise.

import { spawn, spawnSync } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { createServer } from 'node:http'
import { dirname, join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { NDArray } from '@picklewire/codec'
import { connectPickleSocket } from '@picklewire/transport/ws'
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
}
`

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
  try {
    const { port } = JSON.parse(await new Promise((resolve) => createInterface({ input: producer.stdout }).once('line', resolve)))
    const url = `ws://127.0.0.1:${port}/`
    await new Promise((resolve) => http.listen(0, '127.0.0.1', resolve))
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: process.getuid?.() === 0 ? ['--no-sandbox'] : [] })
    const page = await browser.newPage()
    await page.goto(`http://127.0.0.1:${http.address().port}/`)
    const inPage = (fn, arg) => page.evaluate(`import('/bench.js').then((m) => m.${fn}(${JSON.stringify(arg)}))`)
    const version = await inPage('open', url)
    node = await connectPickleSocket(url, { limits: { maxBufferBytes: 2 ** 30 } })
    console.log(`${browser.version().startsWith('1') ? 'chromium ' : ''}${browser.version()} (headless, playwright-core), protocol version ${version} both ways; python3 ${PYTHON} sends\n`)
    const rows = []
    for (const job of p.jobs) {
      log(`  browser: ${job.count} x ${fmtBytes(job.bytes)} (${job.kind})`)
      // a warm-up of each, then the two receivers take turns
      await nodeReceives(node, { ...job, count: Math.max(1, job.count / 4) })
      await inPage('receive', { ...job, count: Math.max(1, job.count / 4) })
      const times = { node: [], page: [] }
      for (let r = 0; r < p.runs; r++) {
        times.node.push(await nodeReceives(node, job))
        times.page.push(await inPage('receive', job))
      }
      const best = { node: Math.min(...times.node), page: Math.min(...times.page) }
      const rate = (s) => (job.kind === 'array' ? fmtRate(job.bytes * job.count, s) : `${Math.round(job.count / s).toLocaleString('en-US')}/s`)
      rows.push([
        job.kind === 'array' ? `${job.count} x ${fmtBytes(job.bytes)} float32 array` : `${job.count.toLocaleString('en-US')} x ${fmtBytes(job.bytes)} message`,
        rate(best.node), rate(best.page), `${(best.node / best.page).toFixed(2)}x`,
      ])
    }
    printTable(['messages (best of ' + p.runs + ')', 'Python -> Node', 'Python -> page', 'page / Node'], rows)
    console.log('\nBoth receivers load every message: a 64 MiB array arrives in 1 MiB chunks (version 3) copied into one ArrayBuffer and loads as an NDArray over it; a 1 KiB message is one frame. The page is headless chromium on the same machine; its WebSocket delivers each frame as an ArrayBuffer to the page thread.')
    await inPage('close', null)
  } finally {
    await node?.close().catch(() => {})
    await browser?.close()
    http.close()
    producer.stdin.end()
  }
}
