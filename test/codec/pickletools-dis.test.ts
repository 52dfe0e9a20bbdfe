import t, { type Test } from 'tap'
import { OPCODES, UnpicklingError, dis, type DisOptions, type MemoKey, type StackObject } from '@picklewire/codec'
import {
  CORPUS_AS_JSON, PY_DOCS, corpusItems, firstDifference, runCorpusTask, stripAnnotations, type CorpusItem,
} from './pickletools-corpus.js'
import { endFileWithoutPython } from '../helpers/python.js'

endFileWithoutPython(t)

interface PyOutcome { out: string; err: [string, string] | null }
interface Reference {
  docs: Record<string, string>
  options: DisOptions[]
  items: { name: string; data: string; kind: string; buffers: string[]; results: (PyOutcome | null)[] }[]
}

// Every option set is run on every input below 3000 bytes; big inputs get the first two.
const OPTIONS = [
  {}, { annotate: 30 }, { indentlevel: 0 }, { indentlevel: 1 }, { indentlevel: 2 }, { indentlevel: -1 },
  { annotate: 1 }, { annotate: 50 }, { annotate: 51 }, { annotate: 70 }, { annotate: -5 }, { indentlevel: 8, annotate: 30 },
]

const reference = runCorpusTask<Reference>(CORPUS_AS_JSON + PY_DOCS + String.raw`
options = json.loads(sys.stdin.read())

def run(data, kind, opts, shared_memo):
    out = io.StringIO()
    f = io.BytesIO(data)
    memo = {} if shared_memo else None
    err = None
    try:
        if kind == 'stream':
            while f.tell() < len(data):
                pickletools.dis(f, out, memo, **opts)
        else:
            pickletools.dis(f, out, memo, **opts)
    except Exception as e:
        err = [type(e).__name__, str(e)]
    return dict(out=out.getvalue(), err=err)

for item, (n, d, k, bufs) in zip(items, corpus()):
    small = len(d) < 3000
    item['results'] = [run(d, k, o, False) if small or i < 2 else None for i, o in enumerate(options)]
    if k == 'stream':
        item['shared'] = [run(d, k, o, True) for o in options[:2]]
print(json.dumps(dict(docs=docs, options=options, items=items)))
`, JSON.stringify(OPTIONS))

const ourDocs = Object.fromEntries(OPCODES.map((op) => [op.name, op.doc.split('\n', 1)[0]!]))

/** Runs our dis as the Python side ran its own: once, or pickle after pickle through a stream. */
function ours(item: CorpusItem, options: DisOptions, sharedMemo: boolean): { out: string; err: Error | null } {
  let out = ''
  const sink = { write: (s: string) => { out += s } }
  const memo = sharedMemo ? new Map<MemoKey, StackObject>() : undefined
  try {
    if (item.kind === 'stream') {
      let pos = 0
      while (pos < item.data.length) pos = dis(item.data, { ...options, out: sink, memo, start: pos })
    } else {
      dis(item.data, { ...options, out: sink, memo })
    }
    return { out, err: null }
  } catch (err) {
    return { out, err: err as Error }
  }
}

interface Tally { compared: number; annotated: number; errors: number; failures: string[] }

function compare(tally: Tally, label: string, py: PyOutcome, mine: { out: string; err: Error | null }, annotated: boolean): void {
  tally.compared++
  let expected = py.out
  let actual = mine.out
  if (annotated) {
    tally.annotated++
    const a = stripAnnotations(py.out, reference.docs)
    const b = stripAnnotations(mine.out, ourDocs)
    if (a.badLine !== undefined) tally.failures.push(`${label}: python line without its annotation: ${JSON.stringify(a.badLine)}`)
    if (b.badLine !== undefined) tally.failures.push(`${label}: our line without its annotation: ${JSON.stringify(b.badLine)}`)
    expected = a.text
    actual = b.text
  }
  if (expected !== actual) tally.failures.push(`${label}: listings differ at ${firstDifference(expected, actual)}`)
  if (py.err === null) {
    if (mine.err !== null) tally.failures.push(`${label}: python succeeded, we threw ${mine.err.name}: ${mine.err.message}`)
    return
  }
  tally.errors++
  if (mine.err === null) tally.failures.push(`${label}: python raised ${py.err[0]}: ${py.err[1]}; we did not throw`)
  else if (!(mine.err instanceof UnpicklingError)) tally.failures.push(`${label}: we threw ${mine.err.name}, not UnpicklingError: ${mine.err.message}`)
  else if (mine.err.message !== py.err[1]) {
    tally.failures.push(`${label}: python raised ${py.err[0]}: ${JSON.stringify(py.err[1])}; we threw ${JSON.stringify(mine.err.message)}`)
  }
}

function report(t: Test, tally: Tally): void {
  for (const f of tally.failures.slice(0, 25)) t.fail(f)
  t.equal(tally.failures.length, 0, `${tally.compared} listings compared with python3, ${tally.failures.length} differences`)
  t.comment(`${tally.compared} listings (${tally.annotated} annotated, ${tally.errors} ending in an error) identical to python3's`)
}

const items = corpusItems(reference.items)

t.test('dis lists every corpus pickle exactly as python3 -m pickletools does, with every option', async (t) => {
  const tally: Tally = { compared: 0, annotated: 0, errors: 0, failures: [] }
  items.forEach((item, i) => {
    reference.items[i]!.results.forEach((py, k) => {
      if (py === null) return
      const options = reference.options[k]!
      compare(tally, `${item.name} ${JSON.stringify(options)}`, py, ours(item, options, false), options.annotate !== undefined && options.annotate !== 0)
    })
  })
  t.ok(tally.compared > 5000, 'the corpus is not empty')
  t.ok(tally.errors > 500, 'malformed pickles are in it')
  report(t, tally)
})

t.test('a memo kept across calls lets dis follow one pickler through a stream', async (t) => {
  const tally: Tally = { compared: 0, annotated: 0, errors: 0, failures: [] }
  items.forEach((item, i) => {
    const shared = (reference.items[i] as unknown as { shared?: PyOutcome[] }).shared
    if (shared === undefined) return
    shared.forEach((py, k) => {
      const options = reference.options[k]!
      compare(tally, `${item.name} shared memo ${JSON.stringify(options)}`, py, ours(item, options, true), options.annotate !== undefined && options.annotate !== 0)
    })
  })
  t.ok(tally.compared >= 18, 'every stream was compared')
  report(t, tally)
  // Without the shared memo, the second pickle of one pickler refers to memo entries it never stored.
  const oneStream = items.find((i) => i.name === 'stream p2 one pickler')!
  const alone = ours(oneStream, {}, false)
  t.match(alone.err?.message, /memo key \d+ has never been stored into/)
})

t.test('dis writes to process.stdout by default and returns where the pickle ended', async (t) => {
  const item = items.find((i) => i.name === 'stream of protocols')!
  const written: string[] = []
  const write = process.stdout.write
  process.stdout.write = ((s: string) => { written.push(s); return true }) as typeof process.stdout.write
  let end: number
  try {
    end = dis(item.data)
  } finally {
    process.stdout.write = write
  }
  t.ok(written.join('').endsWith('highest protocol among opcodes = 0\n'))
  t.equal(item.data[end - 1], 0x2e, 'the returned position follows the STOP')
  t.ok(end < item.data.length, 'only the first pickle was read')
})

t.test('bad options are refused with a TypeError or RangeError', async (t) => {
  const data = Uint8Array.of(0x4e, 0x2e)
  const out = { write: () => {} }
  t.throws(() => dis(data, { out, indentlevel: 2.5 }), TypeError)
  t.throws(() => dis(data, { out, annotate: Number.NaN }), TypeError)
  t.throws(() => dis(data, { out, start: 3 }), RangeError)
  t.throws(() => dis(data, { out, start: -1 }), RangeError)
})
