/**
 * Relaying what CPython wrote: a pickle loaded with { lossless: true, opaque: true } and dumped
 * again at the same protocol loads in CPython to a value equal to the original (same types,
 * same sharing, instances of classes picklewire never heard of included); for values made of
 * the basic types only, the bytes are the original's.
 */
import t from 'tap'
import { PickleBuffer, dumps, loads } from '@picklewire/codec'
import { loadCorpus } from '../helpers/corpus.js'
import { explainDifference, firstDifference, pwtestModule, pyBatch, type Job, type PickleToCheck } from '../helpers/pyvalues.js'
import { endFileWithoutPython } from '../helpers/python.js'

endFileWithoutPython(t)

/** Instances of classes defined in pwtest_classes, pickled by CPython at every protocol. */
const CLASS_VALUES = String.raw`
import json, functools, pwtest_classes as m
r = m.Reduced('tag')
r.extend([1, 'two', (3,)])
r['k'] = [4]
r[5] = None
shared = m.Plain(n=1)
recursive = m.Plain(name='loop')
recursive.me = recursive
recursive.items = [recursive, (recursive,)]
ml = m.MyList([1, 2, [3]])
ml.attr = 'a list with a __dict__'
md = m.MyDict({'k': 'v'})
md.attr = 7
values = {
    'instance with a __dict__': m.Plain(x=1, y=[2.0, 'three'], z={'k': (None, True)}),
    '__reduce__ with list and dict items': r,
    '__getnewargs__': m.WithNewArgs(1, 'b'),
    '__getnewargs_ex__': m.WithNewArgsEx(1, 'two', k=3),
    '__getstate__ and __setstate__': m.WithSetState(1, [2, 3]),
    '__slots__': m.Slotted(1, [2]),
    'list subclass': ml,
    'dict subclass': md,
    'one instance twice': [shared, shared, {'again': shared}],
    'an instance that holds itself': recursive,
    'instances among data': {'when': datetime.datetime(2020, 1, 2, 3, 4, 5), 'what': m.Plain(d=decimal.Decimal('1.5'))},
    'a function as a value': [m.make_thing, len, functools.reduce],
}
out = []
for name, v in values.items():
    for p in range(6):
        try:
            data = pickle.dumps(v, p)
        except Exception as e:
            continue
        out.append(json.dumps({'name': name, 'protocol': p}))
        out.append(data)
`

interface Case {
  name: string
  protocol: number
  original: PickleToCheck
}

const mod = pwtestModule()
t.teardown(mod.cleanup)

const cases: Case[] = []
for (const c of loadCorpus().cases) {
  if (c.protocol === null || c.error !== null) continue
  cases.push({
    name: c.name,
    protocol: c.protocol,
    original: { data: c.pickle, buffers: c.buffers.map((b) => ({ data: b.bytes, readonly: b.readonly })) },
  })
}
const corpusCount = cases.length
const [classPickles] = pyBatch([{ op: 'run', code: CLASS_VALUES }], [mod.dir])
if (!classPickles![0]!.ok) throw new Error(`python3 could not pickle the class values: ${classPickles![0]!.text}`)
for (let i = 0; i < classPickles!.length; i += 2) {
  const { name, protocol } = JSON.parse(classPickles![i]!.text) as { name: string; protocol: number }
  cases.push({ name, protocol, original: { data: classPickles![i + 1]!.data } })
}

/** Loads losslessly and opaquely, then dumps at the original protocol; out-of-band buffers stay out of band. */
function relay(c: Case): PickleToCheck | Error {
  try {
    const value = loads(c.original.data, {
      lossless: true,
      opaque: true,
      buffers: c.original.buffers?.length ? c.original.buffers.map((b) => new PickleBuffer(b.data.slice(), { readonly: b.readonly })) : null,
    })
    const buffers: { data: Uint8Array; readonly: boolean }[] = []
    const data = dumps(value, {
      protocol: c.protocol,
      fixImports: !c.name.endsWith('(fix_imports off)'),
      bufferCallback: c.protocol >= 5 ? (pb) => void buffers.push({ data: pb.raw(), readonly: pb.readonly }) : null,
    })
    return { data, buffers: c.original.buffers?.length ? buffers : undefined }
  } catch (err) {
    return err instanceof Error ? err : new Error(String(err))
  }
}

const relayed = cases.map(relay)
const jobs: Job[] = cases.map((c, i) => {
  const r = relayed[i]!
  return { op: 'check', original: c.original, pickles: r instanceof Error ? [] : [r] }
})
const answers = pyBatch(jobs, [mod.dir])

t.test('the corpus has every protocol, the collections, datetime, Decimal, UUID and unknown classes', async (t) => {
  for (let p = 0; p <= 5; p++) t.ok(cases.some((c) => c.protocol === p), `protocol ${p}`)
  for (const name of ['OrderedDict', 'defaultdict int', 'deque maxlen', 'Counter', 'datetimes', 'Decimals', 'UUIDs', 'complex', 'ranges', 'slices',
    'instance with a __dict__', '__reduce__ with list and dict items', '__getnewargs__', '__getstate__ and __setstate__']) {
    t.ok(cases.some((c) => c.name === name), name)
  }
  t.ok(corpusCount > 500, `${corpusCount} pickles from test/interop/make_pickles.py`)
  t.ok(cases.length - corpusCount >= 60, `${cases.length - corpusCount} pickles of pwtest_classes instances`)
})

t.test('CPython loads every relayed pickle to a value equal to the original', async (t) => {
  const byProtocol = [0, 0, 0, 0, 0, 0]
  cases.forEach((c, i) => {
    const r = relayed[i]!
    const a = answers[i]!
    const label = `${c.name} @ protocol ${c.protocol}`
    if (r instanceof Error) return void t.fail(`${label}: picklewire could not relay it: ${r.message}`)
    if (!a[0]!.ok) return void t.fail(`${label}: python3 failed: ${a[0]!.text}`)
    if (a[1]!.text === '') byProtocol[c.protocol]!++
    else t.fail(`${label}: ${a[1]!.text}`)
  })
  for (let p = 0; p <= 5; p++) {
    const total = cases.filter((c) => c.protocol === p).length
    t.equal(byProtocol[p], total, `protocol ${p}: ${byProtocol[p]} of ${total} relayed pickles load equal to the original`)
  }
})

t.test('values of the basic types relay byte for byte', async (t) => {
  let basic = 0
  let identical = 0
  let identicalOther = 0
  cases.forEach((c, i) => {
    const r = relayed[i]!
    if (r instanceof Error || !answers[i]![0]!.ok) return
    const same = firstDifference(r.data, c.original.data) === -1
    if (answers[i]![0]!.text !== 'basic') {
      if (same) identicalOther++
      return
    }
    basic++
    if (same) identical++
    else t.fail(explainDifference(`${c.name} @ protocol ${c.protocol}`, r.data, c.original.data))
  })
  t.ok(basic > 200, `${basic} pickles of basic values`)
  t.equal(identical, basic, `${identical} of ${basic} relayed byte for byte`)
  t.comment(`other values: ${identicalOther} of ${cases.length - basic} relayed byte for byte as well`)
})
