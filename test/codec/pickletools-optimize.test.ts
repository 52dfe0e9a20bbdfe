import t from 'tap'
import { UnpicklingError, genops, optimize } from '@picklewire/codec'
import { CORPUS_AS_JSON, corpusItems, fromBase64, runCorpusTask } from './pickletools-corpus.js'
import { endFileWithoutPython } from '../helpers/python.js'

endFileWithoutPython(t)

interface Reference {
  items: { name: string; data: string; kind: string; buffers: string[]; optimized: string | null; err: [string, string] | null }[]
}

const reference = runCorpusTask<Reference>(CORPUS_AS_JSON + String.raw`
for item, (n, d, k, bufs) in zip(items, corpus()):
    try:
        item['optimized'] = b64(pickletools.optimize(d)); item['err'] = None
    except Exception as e:
        item['optimized'] = None; item['err'] = [type(e).__name__, str(e)]
print(json.dumps(dict(items=items)))
`)
const items = corpusItems(reference.items)

function hex(b: Uint8Array | undefined): string {
  return b === undefined ? 'undefined' : Buffer.from(b).toString('hex')
}

const ours: (Uint8Array | Error)[] = items.map((item) => {
  try {
    return optimize(item.data)
  } catch (err) {
    return err as Error
  }
})

t.test('optimize gives the same bytes as python3 pickletools.optimize, and the same errors', async (t) => {
  const failures: string[] = []
  let same = 0
  let errors = 0
  items.forEach((item, i) => {
    const py = reference.items[i]!
    const mine = ours[i]!
    if (py.err !== null) {
      errors++
      if (!(mine instanceof UnpicklingError)) failures.push(`${item.name}: python raised ${py.err[1]}; we gave ${mine instanceof Error ? mine.message : 'bytes'}`)
      else if (mine.message !== py.err[1]) failures.push(`${item.name}: python raised ${JSON.stringify(py.err[1])}; we threw ${JSON.stringify(mine.message)}`)
      else same++
      return
    }
    if (mine instanceof Error) {
      failures.push(`${item.name}: python optimized it; we threw ${mine.message}`)
      return
    }
    const expected = fromBase64(py.optimized!)
    if (Buffer.compare(Buffer.from(expected), Buffer.from(mine)) !== 0) {
      const at = expected.findIndex((b, k) => b !== mine[k])
      failures.push(`${item.name}: bytes differ at ${at < 0 ? Math.min(expected.length, mine.length) : at} (python ${expected.length} bytes, ours ${mine.length})` +
        (expected.length < 200 ? `\n  python: ${hex(expected)}\n  ours:   ${hex(mine)}` : ''))
      return
    }
    same++
  })
  for (const f of failures.slice(0, 25)) t.fail(f)
  t.ok(items.length - errors > 250, 'many valid pickles were optimized')
  t.ok(errors > 300, 'malformed pickles were tried too')
  t.equal(failures.length, 0, `${items.length} pickles optimized, ${same} identical to python3 (${errors} of them errors), ${failures.length} differences`)
})

t.test('every optimized pickle loads in python3 to a value equal to the original', async (t) => {
  const pairs = items.flatMap((item, i) => {
    const mine = ours[i]!
    if (mine instanceof Error || item.name.startsWith('bad ') || item.name.startsWith('cut ')) return []
    return [{ name: item.name, orig: Buffer.from(item.data).toString('base64'), ours: Buffer.from(mine).toString('base64'), buffers: item.buffers.map((b) => Buffer.from(b).toString('base64')) }]
  })
  const verdicts = runCorpusTask<{ name: string; verdict: string }[]>(String.raw`
pairs = json.loads(sys.stdin.read())
out = []
for p in pairs:
    bufs = [unb64(b) for b in p['buffers']]
    try:
        a = load(unb64(p['orig']), bufs)
    except Exception as e:
        out.append(dict(name=p['name'], verdict='original does not load: %r' % e)); continue
    try:
        b = load(unb64(p['ours']), bufs)
    except Exception as e:
        out.append(dict(name=p['name'], verdict='optimized does not load: %r' % e)); continue
    out.append(dict(name=p['name'], verdict='equal' if same(a, b) else 'different: %r != %r' % (a, b)))
print(json.dumps(out))
`, JSON.stringify(pairs))
  let equal = 0
  let skipped = 0
  for (const v of verdicts) {
    if (v.verdict === 'equal') equal++
    else if (v.verdict.startsWith('original does not load')) skipped++ // hand-written pickles of globals that do not exist
    else t.fail(`${v.name}: ${v.verdict}`)
  }
  t.ok(equal > 200, `${equal} optimized pickles load equal in python3 (${skipped} originals do not load at all)`)
})

t.test('optimize drops unused PUTs and redundant FRAMEs and keeps used ones', async (t) => {
  const shared = items.find((i) => i.name === 'p4 shared')!
  const puts = (b: Uint8Array) => [...genops(b)].filter(([op]) => op.name === 'MEMOIZE').length
  const frames = (b: Uint8Array) => [...genops(b)].filter(([op]) => op.name === 'FRAME').length
  const small = optimize(shared.data)
  t.ok(puts(small) < puts(shared.data), 'fewer memo stores')
  t.equal(puts(small), 1, 'the one shared list is still memoized')
  t.equal(frames(small), 1, 'one frame')
  const big = items.find((i) => i.name === 'p4 big bytes')!
  const o = optimize(big.data)
  t.equal(frames(o), 0, 'a single opcode larger than a frame is written outside any frame')
  const many = items.find((i) => i.name === 'p4 many strs')!
  t.ok(frames(optimize(many.data)) > 1, 'a long pickle is split into several frames')
  t.ok(optimize(Uint8Array.of(0x4e, 0x2e, 0x4e, 0x2e)).length === 2, 'only the first pickle is optimized')
})
