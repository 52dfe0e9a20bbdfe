#!/usr/bin/env node
// Where picklewire's loads spends its time on one workload: runs it in a loop under V8's
// sampling CPU profiler (node:inspector, in process) and prints the functions with the most
// self time, and the garbage collector's share.
//
//   node --expose-gc bench/profile.mjs ints [--quick] [--seconds=5] [--dict=object] [--save=FILE] [--top=25]
//
// Uses the fixture of the benchmark (bench/.fixtures/full/NAME.pkl, or quick/), and has
// bench/cpython.py write it when it is not there; --save writes
// the .cpuprofile for Chrome DevTools or speedscope.

import { spawnSync } from 'node:child_process'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { Session } from 'node:inspector'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import * as codec from '@picklewire/codec'
import { PYTHON } from './cpython.mjs'
import { workloads } from './workloads.mjs'

const here = dirname(fileURLToPath(import.meta.url))

function parseArgs(argv) {
  const opts = { name: null, seconds: 5, dict: 'map', save: null, top: 25, quick: false }
  for (const a of argv) {
    if (a === '--') continue
    else if (a.startsWith('--seconds=')) opts.seconds = Number(a.slice(10))
    else if (a.startsWith('--dict=')) opts.dict = a.slice(7)
    else if (a.startsWith('--save=')) opts.save = a.slice(7)
    else if (a.startsWith('--top=')) opts.top = Number(a.slice(6))
    else if (a === '--quick') opts.quick = true
    else if (!a.startsWith('-') && opts.name === null) opts.name = a
    else { console.error(`unknown argument ${a}`); process.exit(2) }
  }
  if (!opts.name) {
    console.error('usage: node --expose-gc bench/profile.mjs WORKLOAD [--quick] [--seconds=5] [--dict=object] [--save=FILE] [--top=25]')
    process.exit(2)
  }
  return opts
}

function writeFixture(opts) {
  const w = workloads(opts).find((x) => x.name === opts.name)
  if (!w) {
    console.error(`unknown workload ${opts.name}: one of ${workloads(opts).map((x) => x.name).join(', ')}`)
    process.exit(2)
  }
  const dir = join(here, '.fixtures', opts.quick ? 'quick' : 'full')
  const request = { cmd: 'fixture', dir, workload: { name: w.name, kind: w.kind, n: w.n, size: w.size } }
  const r = spawnSync(PYTHON, [join(here, 'cpython.py')], { input: `${JSON.stringify(request)}\n`, stdio: ['pipe', 'pipe', 'inherit'] })
  const answer = r.status === 0 ? JSON.parse(r.stdout.toString('utf8')) : { error: r.error?.message ?? `status ${r.status}` }
  if (answer.error) throw new Error(`bench/cpython.py: ${answer.error}`)
}

function post(session, method, params) {
  return new Promise((resolve, reject) => session.post(method, params, (err, res) => (err ? reject(err) : resolve(res))))
}

/** Self time per function (name, file:line), from a V8 .cpuprofile. */
function selfTimes(profile) {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]))
  const hits = new Map()
  const dt = new Map()
  for (let i = 0; i < profile.samples.length; i++) {
    const id = profile.samples[i]
    dt.set(id, (dt.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0))
  }
  let total = 0
  for (const [id, us] of dt) {
    const n = byId.get(id)
    const f = n.callFrame
    const file = f.url ? f.url.replace(/^file:\/\//, '').replace(/^.*\/(packages|node_modules|bench)\//, '$1/') : ''
    const key = `${f.functionName || '(anonymous)'}${file ? `  ${file}:${f.lineNumber + 1}` : ''}`
    hits.set(key, (hits.get(key) ?? 0) + us)
    total += us
  }
  return { total, rows: [...hits].sort((a, b) => b[1] - a[1]) }
}

async function main() {
  const opts = parseArgs(process.argv.slice(2))
  const file = join(here, '.fixtures', opts.quick ? 'quick' : 'full', `${opts.name}.pkl`)
  if (!existsSync(file)) writeFixture(opts)
  // An out-of-band workload's buffer is memory the receiver holds; its contents do not matter.
  const data = new Uint8Array(readFileSync(file))
  const w = workloads(opts).find((x) => x.name === opts.name)
  const buffers = w?.kind === 'oob' ? [new Uint8Array(w.size)] : undefined
  const load = () => codec.loads(data, { dict: opts.dict, buffers })
  for (let i = 0; i < 5; i++) load()

  const session = new Session()
  session.connect()
  await post(session, 'Profiler.enable')
  await post(session, 'Profiler.setSamplingInterval', { interval: 100 })
  await post(session, 'Profiler.start')
  const until = Date.now() + opts.seconds * 1000
  let calls = 0
  while (Date.now() < until) {
    load()
    calls++
  }
  const { profile } = await post(session, 'Profiler.stop')
  session.disconnect()
  if (opts.save) writeFileSync(opts.save, JSON.stringify(profile))

  const { total, rows } = selfTimes(profile)
  const each = (opts.seconds * 1000) / calls
  console.log(`${opts.name}: ${calls} loads in ${opts.seconds} s (${each >= 0.1 ? `${each.toFixed(2)} ms` : `${(each * 1000).toFixed(2)} µs`} each); self time by function:`)
  for (const [key, us] of rows.slice(0, opts.top)) {
    console.log(`${((100 * us) / total).toFixed(1).padStart(5)}%  ${key}`)
  }
}

await main()
