/**
 * Every value of test/interop/make_pickles.py, pickled by CPython at protocols 0 to 5 (and
 * the hand-written Python 2 pickles), loads to what CPython itself loads from the same bytes.
 */
import t from 'tap'
import { EOFError, PickleError, UnpicklingError, loads, type UnpicklerOptions } from '@picklewire/codec'
import { caseLabel, caseOptions, loadCorpus, type CorpusCase } from '../helpers/corpus.js'
import { hasNonStrKey, mismatch, type MatchOptions } from '../helpers/expect.js'
import { endFileWithoutPython } from '../helpers/python.js'

endFileWithoutPython(t)
const corpus = loadCorpus()

function tryLoad(c: CorpusCase, extra: UnpicklerOptions): { value?: unknown; error?: unknown } {
  try {
    return { value: loads(c.pickle, caseOptions(c, extra)) }
  } catch (error) {
    return { error }
  }
}

/** Groups cases by name, so that each value gets one subtest over its protocols. */
const all = [...corpus.cases, ...corpus.crafted]
const byName = new Map<string, CorpusCase[]>()
for (const c of all) {
  const list = byName.get(c.name) ?? []
  list.push(c)
  byName.set(c.name, list)
}

t.test('the corpus covers every protocol and the Python 2 pickles', async (t) => {
  const protocols = new Set(corpus.cases.map((c) => c.protocol))
  for (let p = 0; p <= 5; p++) t.ok(protocols.has(p), `protocol ${p}`)
  t.ok(corpus.crafted.filter((c) => c.protocol === null).length >= 30, 'hand-written Python 2 pickles')
  t.ok(byName.size >= 100, `${byName.size} values`)
})

for (const [name, cases] of byName) {
  t.test(name, async (t) => {
    for (const c of cases) {
      const label = caseLabel(c)
      const plain = tryLoad(c, {})
      if (c.error !== null) {
        const wanted = c.error === 'EOFError' ? EOFError : UnpicklingError
        t.type(plain.error, wanted, `${label}: CPython raised ${c.error}, so must we`)
        continue
      }
      if (plain.error !== undefined) {
        t.fail(`${label}: threw ${String(plain.error)}`)
        continue
      }
      t.equal(mismatch(plain.value, c.expect!), null, label)

      const lossless = tryLoad(c, { lossless: true })
      t.equal(lossless.error === undefined ? mismatch(lossless.value, c.expect!, { lossless: true }) : String(lossless.error),
        null, `${label}, lossless`)

      const options: MatchOptions = { dict: 'object' }
      const asObject = tryLoad(c, { dict: 'object' })
      if (asObject.error !== undefined) {
        // Only a dict with a key that is not a str may be refused, and it must say so.
        const err = asObject.error
        t.ok(err instanceof UnpicklingError && /cannot be an object property/.test(err.message) && hasNonStrKey(c.expect!),
          `${label}, dict: 'object' refused only a non-str key: ${String(err)}`)
      } else {
        t.equal(mismatch(asObject.value, c.expect!, options), null, `${label}, dict: 'object'`)
      }
    }
  })
}

t.test('every error the corpus provokes is one of ours', async (t) => {
  for (const c of all) {
    if (c.error === null) continue
    const { error } = tryLoad(c, {})
    t.ok(error instanceof PickleError, `${caseLabel(c)}: ${String(error)}`)
  }
})
