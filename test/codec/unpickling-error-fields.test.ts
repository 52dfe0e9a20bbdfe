import t, { type Test } from 'tap'
import { Unpickler, UnpicklingError, loads } from '@picklewire/codec'
import { endFileWithoutPython, runPython } from '../helpers/python.js'

endFileWithoutPython(t)

/**
 * Bad pickles made by CPython, each with where CPython's own pickletools.genops places the
 * opcode that the unpickler must refuse: its byte offset and its name.
 */
interface BadPickle {
  what: string
  hex: string
  position: number
  opcode: string | null
}

const script = String.raw`
import json, os, pickle, pickletools, sys

def at(data, name, nth=0):
    seen = 0
    for op, arg, pos in pickletools.genops(data):
        if op.name == name:
            if seen == nth:
                return pos
            seen += 1
    raise SystemExit('no ' + name)

cases = []

# A global the default registry refuses, at every protocol that names globals differently.
for protocol in (0, 2, 4, 5):
    data = pickle.dumps(os.system, protocol=protocol)
    name = 'STACK_GLOBAL' if protocol >= 4 else 'GLOBAL'
    cases.append(dict(what='forbidden global, protocol %d' % protocol, hex=data.hex(), position=at(data, name), opcode=name))

# A memo reference to an index that was never stored: the BINGET of a shared list, renumbered.
shared = [1, 2]
data = bytearray(pickle.dumps([shared, shared], protocol=2))
pos = at(bytes(data), 'BINGET')
data[pos + 1] = 200
cases.append(dict(what='memo index never stored', hex=bytes(data).hex(), position=pos, opcode='BINGET'))

# A byte that is no opcode, where CPython wrote the list's first item.
data = bytearray(pickle.dumps([7, 8, 9], protocol=4))
pos = at(bytes(data), 'BININT1')
data[pos] = 0xFF
cases.append(dict(what='not an opcode', hex=bytes(data).hex(), position=pos, opcode=None))

# SETITEMS over an odd number of items: CPython's dict of two items, its last value cut out.
data = pickle.dumps({'a': 1, 'b': 2}, protocol=2)
last = at(data, 'BININT1', 1)
data = data[:last] + data[last + 2:]
cases.append(dict(what='odd number of items for SETITEMS', hex=data.hex(), position=at(data, 'SETITEMS'), opcode='SETITEMS'))

sys.stdout.write(json.dumps(cases))
`

const cases = JSON.parse(runPython(script).toString()) as BadPickle[]

function fromHex(hex: string): Uint8Array {
  return Uint8Array.from(Buffer.from(hex, 'hex'))
}

/** The UnpicklingError a load throws (the test fails if it throws something else, or nothing). */
function refusal(t: Test, load: () => unknown): UnpicklingError | null {
  try {
    load()
  } catch (err) {
    t.type(err, UnpicklingError)
    return err instanceof UnpicklingError ? err : null
  }
  t.fail('the load did not throw')
  return null
}

t.test("each CPython-made bad pickle is refused with the opcode's offset and name as fields", async (t) => {
  t.ok(cases.length >= 7, `${cases.length} cases`)
  for (const c of cases) {
    const err = refusal(t, () => loads(fromHex(c.hex)))
    if (err === null) continue
    t.equal(err.position, c.position, `${c.what}: position`)
    t.equal(err.opcode, c.opcode, `${c.what}: opcode`)
    t.match(err.message, new RegExp(`\\(at byte ${c.position}[,)]`), `${c.what}: the message says the same offset`)
  }
})

t.test('in a chunked stream, position counts from the start of the stream, not of the pickle', async (t) => {
  const good = runPython('import pickle, sys; sys.stdout.buffer.write(pickle.dumps([1, 2, 3], protocol=4) * 2)')
  const bad = cases.find((c) => c.what === 'forbidden global, protocol 5')!
  const stream = Buffer.concat([good, fromHex(bad.hex)])
  // Chunks of 5 bytes, so that the bad pickle starts partway into the reader's buffer.
  const chunks = Array.from({ length: Math.ceil(stream.length / 5) }, (_, i) => stream.subarray(i * 5, i * 5 + 5))
  const u = new Unpickler(chunks)
  t.same(await u.loadAsync(), [1, 2, 3])
  t.same(await u.loadAsync(), [1, 2, 3])
  const err = await u.loadAsync().then(() => null, (e: unknown) => e)
  t.type(err, UnpicklingError)
  const e = err as UnpicklingError
  t.equal(e.position, good.length + bad.position, 'the offset of STACK_GLOBAL in the whole stream')
  t.equal(e.opcode, 'STACK_GLOBAL')
  t.match(e.message, new RegExp(`\\(at byte ${good.length + bad.position}[,)]`))
})

t.test('a byte that is no opcode, met by the stream scanner, has its offset and a null opcode', async (t) => {
  const bad = cases.find((c) => c.what === 'not an opcode')!
  const prefix = runPython('import pickle, sys; sys.stdout.buffer.write(pickle.dumps(None, protocol=2))')
  const u = new Unpickler([prefix, fromHex(bad.hex)])
  t.equal(await u.loadAsync(), null)
  const err = await u.loadAsync().then(() => null, (e: unknown) => e)
  t.type(err, UnpicklingError)
  t.equal((err as UnpicklingError).position, prefix.length + bad.position)
  t.equal((err as UnpicklingError).opcode, null)
})

t.test('an error not tied to an opcode has null fields', async (t) => {
  const err = new UnpicklingError('made here')
  t.equal(err.position, null)
  t.equal(err.opcode, null)
})
