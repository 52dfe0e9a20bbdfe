/**
 * A bounded fuzz of the unpickler: CPython's pickles of every protocol (the interop corpus),
 * mutated with a fixed seed (bit flips, truncation, inserted and deleted opcodes, spliced and
 * random bytes, huge lengths), loaded from bytes and from random chunks. Every failure must be
 * one of our errors (UnpicklingError or EOFError), never a TypeError or RangeError, whether
 * thrown or wrapped as the cause; no case may take long. FUZZ_SEED and FUZZ_CASES in the
 * environment run another seed or more cases locally (e.g. FUZZ_CASES=50000).
 */
import t from 'tap'
import {
  EOFError, OPCODES, PickleError, Unpickler, UnpicklingError, loads, type UnpicklerOptions,
} from '@picklewire/codec'
import { corpusFindClass, loadCorpus } from '../helpers/corpus.js'
import { Random, randomChunks } from '../helpers/random.js'
import { endFileWithoutPython } from '../helpers/python.js'

endFileWithoutPython(t)

const SEED = Number(process.env.FUZZ_SEED ?? 20240229)
const CASES = Number(process.env.FUZZ_CASES ?? 4000)
/** Every ASYNC_EVERY-th mutant is also loaded from random chunks. */
const ASYNC_EVERY = 3
/** A single load slower than this is a failure (the whole run takes a few seconds). */
const SLOW_MS = 500

const OPCODE_BYTES = OPCODES.map((op) => op.code)
const INTERESTING_LENGTHS: readonly number[][] = [
  [0xff, 0xff, 0xff, 0xff], [0xff, 0xff, 0xff, 0x7f], [0, 0, 0, 0x80], [0, 0, 0, 0],
  [0, 0, 0, 0, 0, 1, 0, 0], [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], [1, 0, 0, 0, 0, 0, 0x20, 0],
]

const corpus = loadCorpus()
const seeds = [...corpus.cases, ...corpus.crafted].filter((c) => c.pickle.length <= 4096)

function mutate(rng: Random, seed: Uint8Array): Uint8Array {
  let b = Array.from(seed)
  const steps = 1 + rng.int(3)
  for (let s = 0; s < steps; s++) {
    const at = rng.int(b.length + 1)
    switch (rng.int(10)) {
      case 0: { // flip bits
        if (b.length === 0) break
        for (let k = 1 + rng.int(4); k > 0; k--) {
          const i = rng.int(b.length)
          b[i] = b[i]! ^ (1 << rng.int(8))
        }
        break
      }
      case 1: // any byte
        if (b.length) b[rng.int(b.length)] = rng.int(256)
        break
      case 2: // an opcode byte where something else was
        if (b.length) b[rng.int(b.length)] = rng.pick(OPCODE_BYTES)
        break
      case 3: // truncation
        b = b.slice(0, at)
        break
      case 4: // an inserted opcode with a random argument
        b.splice(at, 0, rng.pick(OPCODE_BYTES), ...rng.bytes(rng.int(10)))
        break
      case 5: // a deleted run
        b.splice(at, 1 + rng.int(8))
        break
      case 6: { // a duplicated run
        const n = 1 + rng.int(16)
        b.splice(at, 0, ...b.slice(at, at + n))
        break
      }
      case 7: { // the head of this pickle, the tail of another
        const other = rng.pick(seeds).pickle
        b = b.slice(0, at).concat(Array.from(other.subarray(rng.int(other.length))))
        break
      }
      case 8: { // a huge or negative length where a length may be
        const len = rng.pick(INTERESTING_LENGTHS)
        b.splice(at, len.length, ...len)
        break
      }
      default: // random bytes
        b.splice(at, rng.int(4), ...rng.bytes(1 + rng.int(12)))
    }
  }
  return new Uint8Array(b)
}

function optionsFor(rng: Random, buffers: readonly Uint8Array[]): () => UnpicklerOptions {
  const opaque = rng.int(3) === 0
  const dict = rng.int(4) === 0 ? 'object' as const : 'map' as const
  const lossless = rng.int(2) === 0
  const withPersistent = rng.int(4) === 0
  const encoding = rng.pick(['ASCII', 'latin1', 'bytes', 'utf-8'])
  return () => ({
    findClass: corpusFindClass,
    buffers: buffers.map((b) => b.slice()),
    opaque, dict, lossless, encoding,
    extensions: new Map([[1, ['builtins', 'set']], [0x1234, ['collections', 'OrderedDict']]]),
    ...(withPersistent ? { persistentLoad: (pid: unknown) => ({ pid }) } : {}),
  })
}

/** What is wrong with an error thrown by the unpickler, or null when it is one of ours. */
function badError(err: unknown): string | null {
  if (!(err instanceof UnpicklingError) && !(err instanceof EOFError)) {
    return `threw ${err instanceof Error ? `${err.constructor.name}: ${err.message}` : String(err)}`
  }
  if (err.message.length === 0) return `${err.name} without a message`
  const cause = (err as { cause?: unknown }).cause
  if (cause !== undefined && !(cause instanceof PickleError)) {
    return `${err.name} wraps ${cause instanceof Error ? cause.constructor.name : typeof cause}: ${err.message}`
  }
  return null
}

type Outcome = { ok: true; value: unknown; position: number } | { ok: false; error: unknown }

function loadSync(data: Uint8Array, options: UnpicklerOptions): Outcome {
  const u = new Unpickler(data, options)
  try {
    return { ok: true, value: u.load(), position: u.position }
  } catch (error) {
    return { ok: false, error }
  }
}

async function loadChunked(data: Uint8Array, options: UnpicklerOptions, rng: Random): Promise<Outcome> {
  const u = new Unpickler(randomChunks(data, rng, 1 + rng.int(40)), options)
  try {
    return { ok: true, value: await u.loadAsync(), position: u.position }
  } catch (error) {
    return { ok: false, error }
  }
}

t.test(`${CASES} mutants of ${seeds.length} CPython pickles fail only with our errors`, async (t) => {
  const rng = new Random(SEED)
  const problems: string[] = []
  let loaded = 0
  let refused = 0
  let slowest = 0
  for (let i = 0; i < CASES; i++) {
    const seed = rng.pick(seeds)
    const data = mutate(rng, seed.pickle)
    const options = optionsFor(rng, seed.buffers.map((b) => b.bytes))
    const label = `case ${i} (mutant of ${seed.name} @ ${seed.protocol}, ${data.length} bytes)`
    const start = performance.now()
    const sync = loadSync(data, options())
    const ms = performance.now() - start
    slowest = Math.max(slowest, ms)
    if (ms > SLOW_MS) problems.push(`${label}: took ${ms.toFixed(0)} ms`)
    if (sync.ok) {
      loaded++
      if (sync.value === undefined) problems.push(`${label}: loaded undefined`)
    } else {
      refused++
      const bad = badError(sync.error)
      if (bad) problems.push(`${label}: ${bad}`)
    }
    if (i % ASYNC_EVERY === 0) {
      const chunked = await loadChunked(data, options(), rng)
      if (!chunked.ok) {
        const bad = badError(chunked.error)
        if (bad) problems.push(`${label}, from chunks: ${bad}`)
      } else if (!sync.ok) {
        problems.push(`${label}: loads from chunks but not from bytes: ${String(sync.error)}`)
      } else if (chunked.position !== sync.position) {
        problems.push(`${label}: from chunks ends at ${chunked.position}, from bytes at ${sync.position}`)
      }
    }
    if (problems.length >= 20) break
  }
  t.same(problems, [], 'no foreign errors, no slow cases')
  t.ok(loaded > 100 && refused > 1000, `${loaded} mutants loaded, ${refused} refused; slowest ${slowest.toFixed(1)} ms`)
})

t.test('random bytes, bare and after a PROTO header', async (t) => {
  const rng = new Random(SEED + 1)
  const problems: string[] = []
  for (let i = 0; i < 1500; i++) {
    const body = rng.bytes(1 + rng.int(64))
    const data = i % 2 === 0 ? body : new Uint8Array([0x80, rng.int(6), ...body])
    try {
      loads(data, { opaque: i % 3 === 0 })
    } catch (err) {
      const bad = badError(err)
      if (bad) problems.push(`case ${i}: ${bad}`)
    }
  }
  t.same(problems, [])
})

t.test('every cut of every seed is an UnpicklingError, from bytes and from 1-byte chunks', async (t) => {
  const rng = new Random(SEED + 2)
  const problems: string[] = []
  const small = seeds.filter((c) => c.pickle.length <= 200 && c.error === null && c.buffers.length === 0)
  for (let k = 0; k < 60; k++) {
    const seed = rng.pick(small)
    const options = { findClass: corpusFindClass, ...(seed.options as UnpicklerOptions) }
    for (let cut = 1; cut < seed.pickle.length; cut++) {
      const head = seed.pickle.subarray(0, cut)
      try {
        loads(head, options)
        problems.push(`${seed.name}: a cut at ${cut} loaded`)
      } catch (err) {
        if (!(err instanceof UnpicklingError)) problems.push(`${seed.name}, cut at ${cut}: ${String(err)}`)
      }
      if (cut % 7 === 0) {
        const r = await loadChunked(head, options, rng)
        if (r.ok || !(r.error instanceof UnpicklingError)) problems.push(`${seed.name}, cut at ${cut}, from chunks: ${r.ok ? 'loaded' : String(r.error)}`)
      }
    }
  }
  t.same(problems, [])
})
