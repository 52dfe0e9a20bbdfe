#!/usr/bin/env node
// Loading dicts and sets by key type: picklewire against CPython's C pickle on the same bytes,
// in one run. `node --expose-gc packages/codec/bench/dict-keys.mjs` (after `npm run build`).
//
// str and small int keys are their own Python equality and go straight into the Map; tuple,
// bytes and bool keys need Python's equality (docs/mapping.md#dict-keys-and-set-members), so
// these rows show what that costs. Times are best / median of 15 samples, each after a full GC.

import { execFileSync } from 'node:child_process'
import { loads } from '@picklewire/codec'

const PYTHON = process.env.PICKLEWIRE_PYTHON ?? 'python3'
const SAMPLES = 15

const workloads = [
  ['100k dicts, 4 str keys', "[{'id': i, 'name': 'user%d' % i, 'score': i * 0.5 + 0.25, 'tags': ['a', 'b']} for i in range(100000)]"],
  ['100k dicts, 4 int keys', "[{0: i, 1: 'x', 2: 3.5, 3: None} for i in range(100000)]"],
  ['1 dict, 1M int keys', '{i: i for i in range(1000000)}'],
  ['1 dict, 200k str keys', "{'k%d' % i: i for i in range(200000)}"],
  ['1 set, 1M ints', 'set(range(1000000))'],
  ['1 dict, 100k 2-tuple keys', '{(i, i + 1): i for i in range(100000)}'],
  ['1 dict, 100k bytes keys', "{b'k%d' % i: i for i in range(100000)}"],
  ['100k dicts, bool and int keys', "[{True: i, 2: 'x'} for i in range(100000)]"],
]

// One CPython process pickles each workload and times pickle.loads on it the same way.
const script = String.raw`
import gc, json, pickle, sys, time
out = []
for expr in json.loads(sys.stdin.read()):
    data = pickle.dumps(eval(expr), protocol=5)
    times = []
    for i in range(3 + ${SAMPLES}):
        gc.collect()
        t = time.perf_counter(); pickle.loads(data); times.append(time.perf_counter() - t)
    times = sorted(times[3:])
    out.append({'hex': data.hex(), 'best': times[0], 'median': times[len(times) // 2]})
json.dump(out, sys.stdout)
`
const python = JSON.parse(execFileSync(PYTHON, ['-c', script], {
  input: JSON.stringify(workloads.map((w) => w[1])), maxBuffer: 1 << 30,
}).toString())

const gc = globalThis.gc ?? (() => {})
const ms = (s) => (s * 1000).toFixed(1)
console.log(`node ${process.version}, ${execFileSync(PYTHON, ['--version']).toString().trim()}; best / median of ${SAMPLES}${globalThis.gc ? '' : ' (run with --expose-gc for a GC before each sample)'}`)
console.log('')
console.log('| workload | picklewire | CPython | vs CPython |')
console.log('|---|---:|---:|---:|')
workloads.forEach(([label], i) => {
  const data = Buffer.from(python[i].hex, 'hex')
  const times = []
  for (let r = 0; r < 3 + SAMPLES; r++) {
    gc()
    const t0 = process.hrtime.bigint()
    loads(data)
    times.push(Number(process.hrtime.bigint() - t0) / 1e9)
  }
  const ours = times.slice(3).sort((a, b) => a - b)
  const best = ours[0]
  const median = ours[ours.length >> 1]
  console.log(`| ${label} | ${ms(best)} / ${ms(median)} ms | ${ms(python[i].best)} / ${ms(python[i].median)} ms | ${(python[i].best / best).toFixed(2)}x |`)
})
console.log('')
console.log('"vs CPython" is CPython\'s best time over picklewire\'s (>1: picklewire is faster).')
