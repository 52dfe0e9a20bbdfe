/**
 * Several pickles in one input: from bytes in memory with load(), and from chunk sources with
 * loadAsync() and async iteration, cut at random places and one byte at a time. Each stream's
 * values are what CPython's own Unpickler loads from the same bytes; after the last pickle
 * comes EOFError, and a stream cut inside a pickle is an UnpicklingError.
 */
import { Readable } from 'node:stream'
import t, { type Test } from 'tap'
import { EOFError, Unpickler, UnpicklingError, type ChunkSource } from '@picklewire/codec'
import { caseLabel, corpusFindClass, loadCorpus } from '../helpers/corpus.js'
import { Matcher, mismatch } from '../helpers/expect.js'
import { Random, asyncChunks, fixedChunks, randomChunks } from '../helpers/random.js'
import { endFileWithoutPython, pyDumpsAll } from '../helpers/python.js'

endFileWithoutPython(t)

const corpus = loadCorpus()
const options = { findClass: corpusFindClass }
const [p0, p3, p5, cut2, cut4, cut0, hundred, one] = pyDumpsAll([
  ['[1, 2]', 0], ['"é"', 3], ['{"a": (1,)}', 5],
  ['[1, "two", 3.0]', 2], ['{"k": b"v" * 10}', 4], ['(None, True)', 0],
  ['list(range(100))', 4], ['1', 2],
]) as [Uint8Array, Uint8Array, Uint8Array, Uint8Array, Uint8Array, Uint8Array, Uint8Array, Uint8Array]

/** Loads every pickle of a source, checking each against CPython's as it comes. */
async function checkStream(t: Test, label: string, u: Unpickler, expect: readonly unknown[], clearMemo: boolean,
  next: (u: Unpickler) => Promise<unknown> | unknown): Promise<void> {
  const m = new Matcher()
  for (let i = 0; i < expect.length; i++) {
    let v: unknown
    try {
      v = await next(u)
    } catch (err) {
      t.fail(`${label}: pickle ${i} threw ${String(err)}`)
      return
    }
    const r = m.match(v, expect[i] as never, `pickle ${i}`)
    if (r !== null) {
      t.fail(`${label}: ${r}`)
      return
    }
    if (clearMemo) u.clearMemo()
  }
  await t.rejects(async () => next(u), EOFError, `${label}: EOFError after ${expect.length} pickles`)
  await t.rejects(async () => next(u), EOFError, `${label}: and again`)
  t.pass(label)
}

for (const [name, stream] of Object.entries(corpus.streams)) {
  t.test(name, async (t) => {
    const { pickle, expect, clearMemo: clear } = stream
    await checkStream(t, 'bytes, load()', new Unpickler(pickle, options), expect, clear, (u) => u.load())
    await checkStream(t, 'bytes, loadAsync()', new Unpickler(pickle, options), expect, clear, (u) => u.loadAsync())
    const rng = new Random(pickle.length)
    for (let round = 0; round < 3; round++) {
      const chunks = randomChunks(pickle, rng, [7, 100, 5000][round])
      await checkStream(t, `random chunks (round ${round}), sync iterable`, new Unpickler(chunks, options), expect, clear,
        (u) => u.loadAsync())
      await checkStream(t, `random chunks (round ${round}), async generator`, new Unpickler(asyncChunks(chunks), options),
        expect, clear, (u) => u.loadAsync())
    }
    await checkStream(t, '1-byte chunks', new Unpickler(fixedChunks(pickle, 1), options), expect, clear, (u) => u.loadAsync())
    const buffers = fixedChunks(pickle, 1000).map((c) => Buffer.from(c))
    await checkStream(t, 'a Node Readable of Buffers', new Unpickler(Readable.from(buffers), options), expect, clear,
      (u) => u.loadAsync())
  })
}

t.test('async iteration yields each pickle, then ends at the clean end', async (t) => {
  const { pickle, expect } = corpus.streams['one Pickler, protocol 5']!
  const m = new Matcher()
  let i = 0
  for await (const v of new Unpickler(asyncChunks(randomChunks(pickle, new Random(5), 300)), options)) {
    t.equal(m.match(v, expect[i] as never, `pickle ${i}`), null, `pickle ${i}`)
    i++
  }
  t.equal(i, expect.length, 'every pickle')
})

t.test('the whole corpus at protocols 0 to 3, one stream of independent pickles', async (t) => {
  const cases = corpus.cases.filter((c) => c.protocol !== null && c.protocol < 4 && c.error === null &&
    c.buffers.length === 0 && Object.keys(c.options).length === 0)
  const total = cases.reduce((n, c) => n + c.pickle.length, 0)
  const all = new Uint8Array(total)
  let at = 0
  for (const c of cases) {
    all.set(c.pickle, at)
    at += c.pickle.length
  }
  const u = new Unpickler(randomChunks(all, new Random(42), 4096), options)
  let consumed = 0
  let bad = 0
  for (const c of cases) {
    const r = mismatch(await u.loadAsync(), c.expect!)
    consumed += c.pickle.length
    if (r !== null || u.position !== consumed) {
      t.fail(`${caseLabel(c)}: ${r ?? `position ${u.position}, expected ${consumed}`}`)
      if (++bad > 5) break
    }
  }
  t.equal(bad, 0, `${cases.length} pickles, ${total} bytes`)
  await t.rejects(u.loadAsync(), EOFError)
})

t.test('independent pickles of protocols 4 and 5 need clearMemo() between loads, as in Python', async (t) => {
  const { pickle, expect } = corpus.streams['independent dumps, protocols 4-5, memo cleared between loads']!
  // Without it, MEMOIZE numbers entries after the previous pickles' and a later GET finds the
  // wrong object (CPython's C Unpickler does the same, even after memo.clear()).
  const u = new Unpickler(pickle, options)
  const m = new Matcher()
  let wrong: string | null = null
  for (let i = 0; i < expect.length && wrong === null; i++) {
    try {
      wrong = m.match(u.load(), expect[i] as never, `pickle ${i}`)
    } catch (err) {
      wrong = String(err)
    }
  }
  t.not(wrong, null, `a shared memo misreads them: ${wrong}`)
})

t.test('the position after each pickle, from bytes and from chunks', async (t) => {
  const parts = [p0, p3, p5]
  const all = Buffer.concat(parts)
  const fromBytes = new Unpickler(all)
  const fromChunks = new Unpickler(fixedChunks(all, 3))
  let end = 0
  for (const p of parts) {
    end += p.length
    fromBytes.load()
    await fromChunks.loadAsync()
    t.equal(fromBytes.position, end, 'bytes')
    t.equal(fromChunks.position, end, 'chunks')
  }
})

t.test('a stream cut inside a pickle is an UnpicklingError, at a boundary an EOFError', async (t) => {
  const parts = [cut2, cut4, cut0]
  const all = Buffer.concat(parts)
  const boundaries = new Set([0])
  let end = 0
  for (const p of parts) boundaries.add((end += p.length))
  for (let cut = 0; cut <= all.length; cut++) {
    const head = new Uint8Array(all.subarray(0, cut))
    const full = [...boundaries].filter((b) => b > 0 && b <= cut).length
    const wanted = boundaries.has(cut) ? EOFError : UnpicklingError
    const sync = new Unpickler(head)
    for (let i = 0; i < full; i++) sync.load()
    t.throws(() => sync.load(), wanted, `load(), cut at ${cut}`)
    const chunked = new Unpickler(fixedChunks(head, 5))
    for (let i = 0; i < full; i++) await chunked.loadAsync()
    await t.rejects(chunked.loadAsync(), wanted, `loadAsync(), cut at ${cut}`)
  }
})

t.test('a truncated stream says how far into the pickle it ended', async (t) => {
  const u = new Unpickler([hundred.subarray(0, 50)])
  await t.rejects(u.loadAsync(), { name: 'UnpicklingError', message: /truncated.*50 bytes into a pickle/ })
})

t.test('empty sources end cleanly', async (t) => {
  const sources: [string, ChunkSource][] = [
    ['no chunks', []],
    ['empty chunks', [new Uint8Array(0), new Uint8Array(0)]],
    ['an empty async generator', asyncChunks([])],
    ['an empty Readable', Readable.from([])],
  ]
  for (const [label, source] of sources) await t.rejects(new Unpickler(source).loadAsync(), EOFError, label)
  t.throws(() => new Unpickler(new Uint8Array(0)).load(), EOFError, 'empty bytes')
})

t.test('a source that fails passes its error on', async (t) => {
  async function* failing(): AsyncGenerator<Uint8Array> {
    yield one.subarray(0, 2)
    throw new Error('connection reset')
  }
  await t.rejects(new Unpickler(failing()).loadAsync(), /connection reset/)
})

t.test('load() on a chunk source is refused with a pointer to loadAsync()', async (t) => {
  t.throws(() => new Unpickler([new Uint8Array([0x4e, 0x2e])]).load(), /loadAsync/)
})
