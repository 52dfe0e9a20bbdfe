// The workloads, as sizes shared with bench/cpython.py and as JavaScript values built the
// same way (keep the formulas in step with make_* in cpython.py).

const MiB = 1024 * 1024

/**
 * The workload list. `kind` picks the builder; `n` counts items, `size` counts bytes.
 * --quick divides everything so that a smoke run takes seconds.
 */
export function workloads({ quick }) {
  const q = quick ? 10 : 1
  const oobSizes = quick ? [1, 4, 16] : [16, 64, 256]
  return [
    { name: 'ints', label: `${fmtCount(1_000_000 / q)} small ints`, kind: 'ints', n: 1_000_000 / q },
    { name: 'floats', label: `${fmtCount(200_000 / q)} floats`, kind: 'floats', n: 200_000 / q },
    { name: 'dicts', label: `${fmtCount(100_000 / q)} dicts`, kind: 'dicts', n: 100_000 / q },
    { name: 'strings', label: `${fmtCount(100_000 / q)} short strings`, kind: 'strings', n: 100_000 / q },
    { name: 'bytes', label: `bytes, ${quick ? 4 : 64} MiB`, kind: 'bytes', size: (quick ? 4 : 64) * MiB },
    ...oobSizes.map((m) => ({ name: `oob${m}`, label: `out-of-band, ${m} MiB`, kind: 'oob', size: m * MiB })),
  ]
}

function fmtCount(n) {
  return n >= 1_000_000 ? `${n / 1_000_000}M` : n >= 1000 ? `${n / 1000}k` : String(n)
}

const STRING_TEMPLATES = ['user%d', 'item-%d-name', 'naïve café %d', 'Привет %d', '東京タワー %d 🙂']

export function makeInts(n) {
  const out = new Array(n)
  for (let i = 0; i < n; i++) out[i] = i % 70000
  return out
}

export function makeFloats(n) {
  const out = new Array(n)
  for (let i = 0; i < n; i++) out[i] = (((i * 2654435761) % 2 ** 32) + 0.5) / 2 ** 32 * 1000
  return out
}

/** Dicts as Maps (picklewire's default for loads) or as plain objects. */
export function makeDicts(n, asObject = false) {
  const out = new Array(n)
  for (let i = 0; i < n; i++) {
    const d = { id: i, name: `user${i}`, score: i * 0.5 + 0.25, tags: ['a', 'b'] }
    out[i] = asObject ? d : new Map(Object.entries(d))
  }
  return out
}

export function makeStrings(n) {
  const out = new Array(n)
  for (let i = 0; i < n; i++) out[i] = STRING_TEMPLATES[i % STRING_TEMPLATES.length].replace('%d', String(i))
  return out
}

export function makeBytes(size) {
  const out = new Uint8Array(size)
  for (let i = 0; i < size; i++) out[i] = i & 0xff
  return out
}

/** The value a workload pickles, as JavaScript holds it. `oob` gives the raw bytes. */
export function makeValue(w, { dictsAsObject = false } = {}) {
  switch (w.kind) {
    case 'ints': return makeInts(w.n)
    case 'floats': return makeFloats(w.n)
    case 'dicts': return makeDicts(w.n, dictsAsObject)
    case 'strings': return makeStrings(w.n)
    case 'bytes': return makeBytes(w.size)
    case 'oob': return new Uint8Array(w.size)
    default: throw new Error(`unknown workload kind ${w.kind}`)
  }
}

/**
 * Whether a loaded value equals the workload's JavaScript value; returns null when it does,
 * else a short reason. Dicts may be Maps or plain objects; bytes any Uint8Array; an
 * out-of-band buffer a PickleBuffer or the very buffer passed in.
 */
export function mismatch(w, got, expected) {
  if (w.kind === 'bytes') return sameBytes(got, expected) ? null : 'bytes differ'
  if (w.kind === 'oob') {
    const raw = typeof got?.raw === 'function' ? got.raw() : got
    return raw instanceof Uint8Array && raw.buffer === expected.buffer && raw.byteLength === expected.byteLength
      ? null : 'not a view of the buffer passed in'
  }
  if (!Array.isArray(got)) return `expected a list, got ${typeof got}`
  if (got.length !== expected.length) return `length ${got.length}, expected ${expected.length}`
  for (let i = 0; i < got.length; i++) {
    const a = got[i]
    const b = expected[i]
    if (w.kind === 'dicts') {
      const get = a instanceof Map ? (k) => a.get(k) : (k) => a?.[k]
      if (get('id') !== b.get('id') || get('name') !== b.get('name') || get('score') !== b.get('score')) return `item ${i} differs`
      const tags = get('tags')
      if (!Array.isArray(tags) || tags.length !== 2 || tags[0] !== 'a' || tags[1] !== 'b') return `item ${i} tags differ`
    } else if (a !== b) {
      return `item ${i}: ${JSON.stringify(a)}, expected ${JSON.stringify(b)}`
    }
  }
  return null
}

function sameBytes(a, b) {
  if (!(a instanceof Uint8Array) || a.byteLength !== b.byteLength) return false
  return Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.byteLength), Buffer.from(b.buffer, b.byteOffset, b.byteLength)) === 0
}
