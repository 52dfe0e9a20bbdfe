/**
 * Python's Pickler.fast: no memo. CPython pickles values with fast = True at every protocol;
 * picklewire, dumping the same values (loaded losslessly from CPython's ordinary pickle, so
 * that sharing is the same), must write the same bytes: no MEMOIZE/PUT, and what is reached
 * twice written twice. A cycle is a PicklingError, and switching fast on after ordinary dumps
 * keeps using what the memo already holds, as in Python.
 */
import t from 'tap'
import { Pickler, PicklingError, dumps, genops, loads } from '@picklewire/codec'
import { endFileWithoutPython, runPython } from '../helpers/python.js'

endFileWithoutPython(t)

/** For each protocol and value: CPython's ordinary pickle, its fast pickle, and a two-dump stream. */
function cpythonCases(): { protocol: number; label: string; plain: Uint8Array; fast: Uint8Array; stream: Uint8Array }[] {
  const script = String.raw`
import io, pickle, struct, sys
shared = ['x', 2**70, b'raw']
values = {
    'scalars': [None, True, False, 0, -1, 255, 256, 65535, 65536, -2**31, 2**31, 2**63, -2**100, 0.0, -0.0, 1.5, float('inf')],
    'strings': ['', 'a', 'naïve', 'Привет', '東京 🙂', '\ud800 lone', 'x' * 300, 'key', 'key'],
    'records': [{'id': i, 'name': 'user%d' % i, 'score': i * 0.5 + 0.25, 'tags': ['a', 'b']} for i in range(1500)],
    'shared': [shared, shared, (shared, shared), {'k': shared}],
    'bytes': [b'', b'abc', bytearray(b'xyz'), b'\x00' * 300, (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4), ()],
    'nested': [[[[['deep']]]], {'a': {'b': {'c': [1, (2, [3])]}}}],
    'big': list(range(2500)) + ['s%d' % i for i in range(1200)],
}
out = []
for label, value in values.items():
    for protocol in range(6):
        plain = pickle.dumps(value, protocol)
        f = io.BytesIO(); p = pickle.Pickler(f, protocol); p.fast = True; p.dump(value); fast = f.getvalue()
        # One Pickler: an ordinary dump, then fast on: what the memo holds is still fetched.
        f = io.BytesIO(); p = pickle.Pickler(f, protocol); p.dump(shared); p.fast = True; p.dump([shared, 'new']); stream = f.getvalue()
        head = label.encode()
        out.append(struct.pack('<IIIII', protocol, len(head), len(plain), len(fast), len(stream)) + head + plain + fast + stream)
sys.stdout.buffer.write(b''.join(out))
`
  const raw = runPython(script)
  const cases = []
  for (let at = 0; at < raw.length;) {
    const [protocol, nh, np, nf, ns] = [0, 4, 8, 12, 16].map((k) => raw.readUInt32LE(at + k)) as [number, number, number, number, number]
    let p = at + 20
    const label = raw.subarray(p, p + nh).toString()
    p += nh
    const plain = new Uint8Array(raw.subarray(p, p + np))
    p += np
    const fast = new Uint8Array(raw.subarray(p, p + nf))
    p += nf
    const stream = new Uint8Array(raw.subarray(p, p + ns))
    at = p + ns
    cases.push({ protocol, label, plain, fast, stream })
  }
  return cases
}

const MEMO_OPS = new Set(['PUT', 'BINPUT', 'LONG_BINPUT', 'MEMOIZE'])

t.test("fast mode writes CPython's fast-mode bytes at every protocol", async (t) => {
  const cases = cpythonCases()
  t.equal(cases.length, 7 * 6, 'every value at every protocol came from CPython')
  for (const { protocol, label, plain, fast } of cases) {
    const value = loads(plain, { lossless: true })
    const ours = dumps(value, { protocol, fast: true })
    t.same(Buffer.from(ours), Buffer.from(fast), `${label}, protocol ${protocol}: the same bytes as CPython with fast = True`)
    const memoOps = [...genops(ours)].filter(([op]) => MEMO_OPS.has(op.name)).length
    t.equal(memoOps, 0, `${label}, protocol ${protocol}: no memo opcodes`)
    // And it reads back: the same value (sharing aside).
    t.same(loads(ours, { lossless: true }), value, `${label}, protocol ${protocol}: loads back to the same value`)
  }
})

t.test('fast mode switched on after ordinary dumps still fetches what the memo holds, as in Python', async (t) => {
  for (const { protocol, stream } of cpythonCases().filter((c) => c.label === 'scalars')) {
    // The shared list, loaded from the stream's first pickle; the second refers to it.
    const chunks: Uint8Array[] = []
    const shared = loads(stream, { lossless: true }) as unknown[]
    const p = new Pickler({ write: (c: Uint8Array) => chunks.push(c) }, { protocol })
    p.dump(shared)
    p.fast = true
    p.dump([shared, 'new'])
    t.same(Buffer.concat(chunks), Buffer.from(stream), `protocol ${protocol}: the same two-pickle stream as CPython`)
  }
})

t.test('a cycle in fast mode is a PicklingError, not a hang or a stack overflow', async (t) => {
  const loop: unknown[] = [1]
  loop.push(loop)
  const d: Record<string, unknown> = {}
  d.self = d
  for (const value of [loop, d]) {
    t.throws(() => dumps(value, { protocol: 4, fast: true }), PicklingError)
    try {
      dumps(value, { protocol: 4, fast: true })
    } catch (err) {
      t.match((err as Error).message, /fast mode \(no memo\) a cycle cannot be pickled/)
    }
    // Without fast, the memo writes the cycle.
    t.ok(dumps(value, { protocol: 4 }).length > 0)
  }
})

t.test('in fast mode a value reached twice is written twice and loads as two values', async (t) => {
  const shared = ['s'.repeat(100)]
  const value = [shared, shared, shared]
  const plain = dumps(value, { protocol: 4 })
  const fast = dumps(value, { protocol: 4, fast: true })
  t.ok(fast.length > plain.length, `three copies (${fast.length} bytes) against one and two memo fetches (${plain.length})`)
  const back = loads(fast) as unknown[][]
  t.not(back[0], back[1], 'loaded as separate lists')
  t.same(back[0], shared)
})
