import t from 'tap'
import { ByteArray, OPCODES, UnpicklingError, genops, type GenopsItem, type OpcodeArgument } from '@picklewire/codec'
import { CORPUS_AS_JSON, corpusItems, fromBase64, runCorpusTask } from './pickletools-corpus.js'
import { endFileWithoutPython } from '../helpers/python.js'

endFileWithoutPython(t)

type PyArg = null | ['bool', boolean] | ['int', string] | ['float', string | null] | ['str', number[]] | ['bytes' | 'bytearray', string]
interface PyWalk { pickles: [string, number, PyArg][][]; end: number; err: string | null }
interface Reference {
  opcodes: { name: string; code: number; arg: [string, number] | null; before: string[]; after: string[]; proto: number }[]
  items: { name: string; data: string; kind: string; buffers: string[]; walk: PyWalk }[]
}

const reference = runCorpusTask<Reference>(CORPUS_AS_JSON + String.raw`
def desc(a):
    if a is None: return None
    if isinstance(a, bool): return ['bool', a]
    if isinstance(a, int): return ['int', hex(a)]
    if isinstance(a, float): return ['float', None if a != a else struct.pack('>d', a).hex()]
    if isinstance(a, str): return ['str', [ord(c) for c in a]]
    if isinstance(a, bytearray): return ['bytearray', b64(bytes(a))]
    if isinstance(a, bytes): return ['bytes', b64(a)]
    raise TypeError(type(a))

def walk(data, kind):
    f = io.BytesIO(data)
    pickles = []
    try:
        while True:
            pickles.append([])
            for op, arg, pos in pickletools.genops(f):
                pickles[-1].append([op.name, pos, desc(arg)])
            if kind != 'stream' or f.tell() >= len(data): break
        return dict(pickles=pickles, end=f.tell(), err=None)
    except Exception as e:
        return dict(pickles=pickles, end=f.tell(), err=str(e))

for item, (n, d, k, bufs) in zip(items, corpus()):
    item['walk'] = walk(d, k)
opcodes = [dict(name=o.name, code=ord(o.code), arg=o.arg and [o.arg.name, o.arg.n], before=[s.name for s in o.stack_before],
                after=[s.name for s in o.stack_after], proto=o.proto) for o in pickletools.opcodes]
print(json.dumps(dict(items=items, opcodes=opcodes)))
`)

t.test('the opcode table says what CPython 3.11 pickletools says about every opcode', async (t) => {
  const ours = new Map(OPCODES.map((op) => [op.name as string, op]))
  t.equal(OPCODES.length, reference.opcodes.length, 'as many opcodes')
  for (const py of reference.opcodes) {
    const op = ours.get(py.name)
    if (op === undefined) {
      t.fail(`${py.name} is missing`)
      continue
    }
    t.same(
      [op.code, op.arg && [op.arg.name, op.arg.n], op.stackBefore.map((s) => s.name), op.stackAfter.map((s) => s.name), op.proto],
      [py.code, py.arg, py.before, py.after, py.proto],
      py.name,
    )
  }
})

function fromCodePoints(cps: number[]): string {
  let s = ''
  for (let i = 0; i < cps.length; i += 4096) s += String.fromCodePoint(...cps.slice(i, i + 4096))
  return s
}

function hexOf(v: number | bigint): string {
  const b = BigInt(v)
  return b < 0n ? '-0x' + (-b).toString(16) : '0x' + b.toString(16)
}

/** Why our argument is not Python's, or undefined when it is the same value of the matching type. */
function argumentProblem(ours: OpcodeArgument, py: PyArg): string | undefined {
  if (py === null) return ours === null ? undefined : `expected null, got ${String(ours)}`
  const [kind, v] = py
  switch (kind) {
    case 'bool':
      return ours === v ? undefined : `expected ${v}, got ${String(ours)}`
    case 'int':
      if (typeof ours === 'number' && !Number.isSafeInteger(ours)) return `${ours} is a number beyond 2**53`
      if (typeof ours === 'bigint' && Number.isSafeInteger(Number(ours))) return `${ours} is a bigint within 2**53`
      return (typeof ours === 'number' || typeof ours === 'bigint') && hexOf(ours) === v ? undefined : `expected int ${v}, got ${String(ours)}`
    case 'float': {
      if (typeof ours !== 'number') return `expected a float, got ${typeof ours}`
      if (v === null) return Number.isNaN(ours) ? undefined : `expected nan, got ${ours}`
      const b = new DataView(new ArrayBuffer(8))
      b.setFloat64(0, ours)
      return Buffer.from(b.buffer).toString('hex') === v ? undefined : `expected float bits ${v}, got ${ours}`
    }
    case 'str':
      return ours === fromCodePoints(v) ? undefined : `expected str ${JSON.stringify(fromCodePoints(v).slice(0, 50))}, got ${JSON.stringify(String(ours).slice(0, 50))}`
    case 'bytes':
    case 'bytearray': {
      if (!(ours instanceof Uint8Array)) return `expected ${kind}, got ${typeof ours}`
      if ((ours instanceof ByteArray) !== (kind === 'bytearray')) return `expected ${kind}, got ${ours.constructor.name}`
      return Buffer.from(ours).equals(Buffer.from(fromBase64(v))) ? undefined : `${kind} differ`
    }
  }
}

t.test('genops yields the opcodes, arguments and positions python3 genops yields, and the same errors', async (t) => {
  const items = corpusItems(reference.items)
  const failures: string[] = []
  let opcodes = 0
  let errors = 0
  items.forEach((item, i) => {
    const py = reference.items[i]!.walk
    const pickles: GenopsItem[][] = []
    let end = 0
    let err: Error | undefined
    try {
      for (;;) {
        pickles.push([])
        for (const op of genops(item.data, end)) {
          pickles[pickles.length - 1]!.push(op)
          end = op[3]
        }
        if (item.kind !== 'stream' || end >= item.data.length) break
      }
    } catch (e) {
      err = e as Error
    }
    if (py.err !== null) {
      errors++
      if (!(err instanceof UnpicklingError) || err.message !== py.err) failures.push(`${item.name}: python: ${py.err}; ours: ${err?.message}`)
    } else if (err !== undefined) {
      failures.push(`${item.name}: we threw ${err.message}`)
    } else if (end !== py.end) {
      failures.push(`${item.name}: we ended at ${end}, python at ${py.end}`)
    }
    if (pickles.length !== py.pickles.length) failures.push(`${item.name}: ${pickles.length} pickles walked, python walked ${py.pickles.length}`)
    py.pickles.forEach((pyOps, p) => {
      const ourOps = pickles[p] ?? []
      if (ourOps.length !== pyOps.length) failures.push(`${item.name}: pickle ${p}: ${ourOps.length} opcodes, python ${pyOps.length}`)
      pyOps.forEach(([name, pos, arg], k) => {
        opcodes++
        const o = ourOps[k]
        if (o === undefined) return
        const [op, value, ourPos, ourEnd] = o
        if (op.name !== name || ourPos !== pos) failures.push(`${item.name}: opcode ${k}: ${op.name} at ${ourPos}, python ${name} at ${pos}`)
        const next = ourOps[k + 1]
        if (next !== undefined && next[2] !== ourEnd) failures.push(`${item.name}: opcode ${k} ends at ${ourEnd}, the next starts at ${next[2]}`)
        const problem = argumentProblem(value, arg)
        if (problem !== undefined) failures.push(`${item.name}: ${name} at ${pos}: ${problem}`)
      })
    })
  })
  for (const f of failures.slice(0, 25)) t.fail(f)
  t.ok(opcodes > 50000 && errors > 300, 'a large corpus with malformed pickles')
  t.equal(failures.length, 0, `${items.length} inputs, ${opcodes} opcodes compared with python3 genops (${errors} inputs ending in an error)`)
})

t.test('genops walks one pickle of a stream, from where it is told to start', async (t) => {
  const two = Uint8Array.of(0x80, 0x02, 0x4b, 0x07, 0x2e, 0x4e, 0x2e) // PROTO 2, BININT1 7, STOP, NONE, STOP
  t.same([...genops(two)].map(([op, arg, pos, end]) => [op.name, arg, pos, end]), [['PROTO', 2, 0, 2], ['BININT1', 7, 2, 4], ['STOP', null, 4, 5]])
  t.same([...genops(two, 5)].map(([op, , pos]) => [op.name, pos]), [['NONE', 5], ['STOP', 6]], 'positions count from the start of the input')
  t.throws(() => [...genops(two, 7)], new UnpicklingError('pickle exhausted before seeing STOP'))
  t.throws(() => [...genops(two, 8)], RangeError)
  t.same([...genops(two.buffer)].length, 3, 'an ArrayBuffer')
  t.same([...genops(new DataView(two.buffer, 5))].map(([, , pos]) => pos), [0, 1], 'a view: positions within the view')
})

t.test('bytes arguments are views over the input, not copies', async (t) => {
  const data = Uint8Array.of(0x43, 0x02, 0x61, 0x62, 0x2e) // SHORT_BINBYTES b'ab', STOP
  const [[, arg]] = [...genops(data)] as [GenopsItem]
  t.type(arg, Uint8Array)
  t.equal((arg as Uint8Array).buffer, data.buffer)
  t.equal((arg as Uint8Array).byteOffset, 2)
})
