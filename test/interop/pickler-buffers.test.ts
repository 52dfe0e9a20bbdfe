/**
 * Protocol 5 out-of-band buffers: bufferCallback sees every PickleBuffer in order; a falsy
 * answer writes NEXT_BUFFER (and READONLY_BUFFER), a truthy one writes the bytes in band
 * (bytes when read-only, bytearray when not), byte for byte as CPython does with
 * pickle.PickleBuffer and buffer_callback; no byte of an out-of-band buffer is copied.
 */
import t from 'tap'
import { PickleBuffer, PickleError, Pickler, PicklingError, dumps, loads } from '@picklewire/codec'
import { explainDifference, firstDifference, pyBatch, type Job } from '../helpers/pyvalues.js'
import { endFileWithoutPython } from '../helpers/python.js'

endFileWithoutPython(t)

const text = (s: string): Uint8Array => new TextEncoder().encode(s)
const KiB256 = (fill: number): Uint8Array => new Uint8Array(256 * 1024).fill(fill)

type Callback = 'none' | 'out of band' | 'small in band' | 'all in band'

interface Scenario {
  name: string
  callback: Callback
  /** The JavaScript value, made afresh for each use; buffers are its PickleBuffers in pickling order. */
  js: () => unknown
  /** Python code that sets value. */
  py: string
}

const SCENARIOS: Scenario[] = [
  {
    name: 'writable, read-only, empty and 1 KiB buffers, all out of band',
    callback: 'out of band',
    js: () => [new PickleBuffer(text('writable')), new PickleBuffer(text('readonly'), { readonly: true }), new PickleBuffer(new ArrayBuffer(0)),
      new PickleBuffer(Uint8Array.from({ length: 1024 }, (_, i) => i & 0xff), { readonly: true })],
    py: "value = [PB(bytearray(b'writable')), PB(b'readonly'), PB(bytearray()), PB(bytes(range(256)) * 4)]",
  },
  {
    name: 'small buffers in band, big ones out of band, one buffer twice',
    callback: 'small in band',
    js: () => {
      const big = new PickleBuffer(new Uint8Array(100).fill(0x42))
      return new Map<string, unknown>([['small', new PickleBuffer(text('tiny'), { readonly: true })], ['big', big],
        ['small rw', new PickleBuffer(text('rw'))], ['again', big]])
    },
    py: "big = PB(bytearray(b'B' * 100))\nvalue = {'small': PB(b'tiny'), 'big': big, 'small rw': PB(bytearray(b'rw')), 'again': big}",
  },
  {
    name: 'no callback: everything in band, a buffer twice is memoized',
    callback: 'none',
    js: () => {
      const ro = new PickleBuffer(text('readonly'), { readonly: true })
      return [ro, new PickleBuffer(text('writable')), ro, new PickleBuffer(new Uint8Array(0), { readonly: true })]
    },
    py: "ro = PB(b'readonly')\nvalue = [ro, PB(bytearray(b'writable')), ro, PB(b'')]",
  },
  {
    name: 'a callback that keeps everything in band, 256 KiB buffers outside the frames',
    callback: 'all in band',
    js: () => [new PickleBuffer(KiB256(1), { readonly: true }), 'between', new PickleBuffer(KiB256(2)), new PickleBuffer(text('x'))],
    py: "value = [PB(b'\\x01' * 262144), 'between', PB(bytearray(b'\\x02' * 262144)), PB(bytearray(b'x'))]",
  },
  {
    name: 'buffers next to the same bytes and bytearray values',
    callback: 'out of band',
    js: () => {
      const b = text('shared bytes')
      return [b, new PickleBuffer(b, { readonly: true }), b, new PickleBuffer(text('abc'))]
    },
    py: "b = b'shared bytes'\nvalue = [b, PB(b), b, PB(bytearray(b'abc'))]",
  },
]

function jsCallback(kind: Callback, calls: PickleBuffer[]): ((pb: PickleBuffer) => unknown) | null {
  switch (kind) {
    case 'none': return null
    case 'out of band': return (pb) => void calls.push(pb)
    case 'small in band': return (pb) => (calls.push(pb), pb.raw().length < 16)
    case 'all in band': return (pb) => (calls.push(pb), 1)
  }
}

const PY_CALLBACKS: Record<Callback, string> = {
  'none': 'None',
  'out of band': 'lambda b: (calls.append(b), bufs.append(b))[1]',
  'small in band': 'lambda b: (calls.append(b), len(b.raw()) < 16 or bufs.append(b))[1]',
  'all in band': 'lambda b: (calls.append(b), 1)[1]',
}

/** CPython's pickle, its out-of-band buffers, and the sizes its callback saw, in order. */
const jobs: Job[] = SCENARIOS.map((s) => ({
  op: 'run',
  code: `${s.py}\ncalls, bufs = [], []\ndata = pickle.dumps(value, 5, buffer_callback=${PY_CALLBACKS[s.callback]})\n` +
    "out = [data, ','.join(str(len(b.raw())) for b in calls), bytes(b.raw().readonly for b in bufs)] + [b.raw().tobytes() for b in bufs]",
}))
const cpython = pyBatch(jobs)

SCENARIOS.forEach((s, k) => {
  t.test(`${s.name}: the same bytes and buffers as CPython`, async (t) => {
    const [data, sizes, flags, ...bufs] = cpython[k]!
    if (!data!.ok) return void t.fail(`python3: ${data!.text}`)
    const calls: PickleBuffer[] = []
    const value = s.js()
    const ours = dumps(value, { protocol: 5, bufferCallback: jsCallback(s.callback, calls) })
    t.equal(firstDifference(ours, data!.data), -1, 'the pickle is byte-identical') ||
      t.comment(explainDifference(s.name, ours, data!.data))
    t.equal(calls.map((pb) => pb.byteLength).join(','), sizes!.text, 'the callback saw the buffers in the same order')
    const outOfBand = calls.filter((pb) => s.callback === 'out of band' || (s.callback === 'small in band' && pb.byteLength >= 16))
    t.same(outOfBand.map((pb) => Number(pb.readonly)), [...flags!.data], 'the same out-of-band buffers, with the same read-only flags')
    t.same(outOfBand.map((pb) => Buffer.from(pb.raw()).toString('hex')), bufs.map((b) => Buffer.from(b.data).toString('hex')), 'holding the same bytes')
  })
})

t.test('bufferCallback receives each PickleBuffer itself, in order, once per occurrence out of band', async (t) => {
  const a = new PickleBuffer(text('aaaa'))
  const b = new PickleBuffer(text('bbbb'), { readonly: true })
  const calls: PickleBuffer[] = []
  dumps([a, [b, a], { k: b }], { protocol: 5, bufferCallback: (pb) => void calls.push(pb) })
  t.equal(calls.length, 4)
  t.ok(calls[0] === a && calls[1] === b && calls[2] === a && calls[3] === b, 'the very objects, in pickling order')
  const inBand: PickleBuffer[] = []
  dumps([a, a, b], { protocol: 5, bufferCallback: (pb) => (inBand.push(pb), true) })
  t.same(inBand.map((pb) => pb === a ? 'a' : 'b'), ['a', 'b'], 'a buffer written in band is memoized: the callback sees it once')
})

/** Views of one memory: every kind of source a PickleBuffer may wrap. */
function views(): [name: string, memory: ArrayBuffer | SharedArrayBuffer, source: () => ConstructorParameters<typeof PickleBuffer>[0], offset: number, length: number][] {
  const ab = new ArrayBuffer(64)
  const sab = new SharedArrayBuffer(64)
  const f64 = new Float64Array(new ArrayBuffer(80), 16, 6)
  const dv = new ArrayBuffer(48)
  const node = Buffer.alloc(40)
  return [
    ['an ArrayBuffer', ab, () => ab, 0, 64],
    ['a SharedArrayBuffer', sab, () => sab, 0, 64],
    ['a Uint8Array at an offset', ab, () => new Uint8Array(ab, 5, 20), 5, 20],
    ['a Uint8Array over shared memory', sab, () => new Uint8Array(sab, 8, 32), 8, 32],
    ['a Float64Array at an offset', f64.buffer, () => f64, 16, 48],
    ['a DataView', dv, () => new DataView(dv, 3, 40), 3, 40],
    ['a Node Buffer', node.buffer, () => node, node.byteOffset, 40],
  ]
}

t.test('no byte of an out-of-band buffer is copied', async (t) => {
  for (const [name, memory, source, offset, length] of views()) {
    const mem = new Uint8Array(memory)
    for (let i = 0; i < mem.length; i++) mem[i] = i
    for (const readonly of [false, true]) {
      const pb = new PickleBuffer(source(), { readonly })
      const handed: PickleBuffer[] = []
      const data = dumps({ payload: pb }, { protocol: 5, bufferCallback: (b) => void handed.push(b) })
      const raw = handed[0]!.raw()
      t.ok(raw.buffer === memory && raw.byteOffset === offset && raw.byteLength === length,
        `${name}${readonly ? ', read-only' : ''}: the callback got a view of the very memory`)
      mem[offset] = 0xee
      const loaded = loads(data, { buffers: handed }) as Map<string, PickleBuffer>
      const back = loaded.get('payload')!
      t.equal(back.raw()[0], 0xee, `${name}: a write after dumps shows through what loads gives back`)
      t.equal(back.raw().buffer, memory, `${name}: loads hands back the same memory`)
      t.equal(back.readonly, readonly, `${name}: readonly ${readonly} kept`)
      mem[offset] = offset & 0xff
    }
  }
})

t.test('CPython loads picklewire\'s out-of-band pickles with buffers= and gets the data', async (t) => {
  const checks: Job[] = []
  const names: string[] = []
  for (const [name, , source, , length] of views()) {
    for (const readonly of [false, true]) {
      const pb = new PickleBuffer(source(), { readonly })
      const bytes = Buffer.from(pb.raw())
      const handed: PickleBuffer[] = []
      const data = dumps([pb, 'after', pb], { protocol: 5, bufferCallback: (b) => void handed.push(b) })
      const py = readonly ? `PB(bytes.fromhex('${bytes.toString('hex')}'))` : `PB(bytearray.fromhex('${bytes.toString('hex')}'))`
      checks.push({
        op: 'check',
        code: `b = ${py}\nassert len(b.raw()) == ${length}\nvalue = [b, 'after', b]`,
        pickles: [{ data, buffers: handed.map((h) => ({ data: h.raw(), readonly: h.readonly })) }],
      })
      names.push(`${name}${readonly ? ', read-only' : ''}`)
    }
  }
  pyBatch(checks).forEach(([answer], i) => t.equal(answer!.text, '', `${names[i]}: CPython loaded the same bytes and read-only flag`))
})

t.test('in band, any view pickles as its bytes, as CPython pickles a PickleBuffer of the same bytes', async (t) => {
  const jobs: Job[] = []
  const ours: Uint8Array[] = []
  for (const [, , source] of views()) {
    for (const readonly of [false, true]) {
      const pb = new PickleBuffer(source(), { readonly })
      ours.push(dumps(pb, { protocol: 5 }))
      const hex = Buffer.from(pb.raw()).toString('hex')
      jobs.push({ op: 'dumps', code: `value = PB(${readonly ? 'bytes' : 'bytearray'}.fromhex('${hex}'))`, protocols: [5] })
    }
  }
  const answers = pyBatch(jobs)
  t.equal(answers.filter(([a], i) => firstDifference(ours[i]!, a!.data) === -1).length, jobs.length, `${jobs.length} of ${jobs.length} identical`)
})

t.test('below protocol 5: bufferCallback and PickleBuffer are refused, as CPython refuses them', async (t) => {
  for (let protocol = 0; protocol < 5; protocol++) {
    t.throws(() => new Pickler(null, { protocol, bufferCallback: () => false }), PicklingError, `protocol ${protocol}: a bufferCallback`)
    t.throws(() => dumps([1], { protocol, bufferCallback: () => false }), { name: 'PicklingError', message: /protocol >= 5/ })
    t.throws(() => dumps([1, new PickleBuffer(text('x'))], { protocol }),
      { name: 'PicklingError', message: new RegExp(`PickleBuffer can only be pickled with protocol >= 5, not ${protocol}.*value\\[1\\]`) },
      `protocol ${protocol}: a PickleBuffer, and where it was`)
  }
  const [[refused]] = pyBatch([{
    op: 'run',
    code: "out = []\nfor p in range(5):\n    try:\n        pickle.dumps(1, p, buffer_callback=lambda b: None)\n    except ValueError:\n        pass\n" +
      '    else:\n        out.append(str(p))\n    try:\n        pickle.dumps(PB(b"x"), p)\n    except pickle.PicklingError:\n        pass\n' +
      "    else:\n        out.append(str(p))\nout = [','.join(out)]",
  }])
  t.equal(refused!.text, '', 'CPython refuses both at protocols 0 to 4')
  const released = new PickleBuffer(text('gone'))
  released.release()
  t.throws(() => dumps(released, { protocol: 5 }), { name: 'PicklingError', message: 'cannot pickle a released PickleBuffer' }, 'a released PickleBuffer cannot be pickled')
  t.throws(() => dumps({ x: [released] }, { protocol: 5 }), { message: 'cannot pickle a released PickleBuffer (at value.x[0])' }, 'and the error names its path')
})
