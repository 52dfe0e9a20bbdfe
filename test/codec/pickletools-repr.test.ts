import t from 'tap'
import { dis } from '@picklewire/codec'
import { endFileWithoutPython, runPython } from '../helpers/python.js'

endFileWithoutPython(t)

/** Python's dis listing and our own for the pickle of a Python expression. */
function bothListings(expr: string, protocol: number): { pickle: Uint8Array; python: string; ours: string } {
  const raw = runPython(String.raw`
import io, json, pickle, pickletools, random, struct, sys
value = (${expr})
data = pickle.dumps(value, ${protocol})
out = io.StringIO()
pickletools.dis(data, out)
sys.stdout.write(json.dumps([data.hex(), out.getvalue()]))
`)
  const [hex, python] = JSON.parse(raw.toString('utf8')) as [string, string]
  const pickle = new Uint8Array(Buffer.from(hex, 'hex'))
  let ours = ''
  dis(pickle, { out: { write: (s: string) => { ours += s } } })
  return { pickle, python, ours }
}

function firstDifference(a: string, b: string): string {
  let i = 0
  while (i < a.length && a[i] === b[i]) i++
  return `at character ${i}: python ${JSON.stringify(a.slice(i, i + 40))}, ours ${JSON.stringify(b.slice(i, i + 40))}`
}

// Every code point, surrogates included, in order: Python's repr escapes exactly those that
// str.isprintable() refuses (Unicode 14.0 in CPython 3.11), and keeps a high surrogate
// followed by a low one as two escaped code points.
const ALL_CODE_POINTS = "''.join(map(chr, range(0x110000)))"

for (const protocol of [0, 4]) {
  t.test(`the repr of a str of every code point matches python3 (protocol ${protocol})`, async (t) => {
    const { python, ours } = bothListings(ALL_CODE_POINTS, protocol)
    t.ok(python.length > 1_000_000, 'a long listing')
    t.ok(python === ours, python === ours ? 'identical' : firstDifference(python, ours))
  })
}

t.test('float reprs match python3 for special, boundary and random doubles', async (t) => {
  const floats = String.raw`[0.0, -0.0, 1.0, -1.5, 1e16, 1e15, 9999999999999998.0, 1e16 - 2, 1e17, 1e-4, 1e-5, 0.0001, 0.00009999999999999999,
    1e22, 1e21, 1e23, 123456789012345680.0, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, 0.1, 0.2 + 0.1, 1/3, 2.0**53, 2.0**63,
    float('inf'), float('-inf'), float('nan')] + [struct.unpack('<d', random.Random(7 + i).getrandbits(64).to_bytes(8, 'little'))[0] for i in range(4000)]
    + [random.Random(i).uniform(-1e6, 1e6) for i in range(2000)] + [float(random.Random(i).randint(-10**17, 10**17)) for i in range(1000)]`
  for (const protocol of [0, 1]) {
    const { python, ours } = bothListings(floats, protocol)
    t.ok(python.split('\n').length > 7000, `protocol ${protocol}: every float listed`)
    t.ok(python === ours, python === ours ? `protocol ${protocol}: identical` : firstDifference(python, ours))
  }
})

t.test('int, bytes and str reprs match python3 at their boundaries', async (t) => {
  const values = String.raw`[2**53 - 1, 2**53, 2**53 + 1, -2**53 - 1, 2**63 - 1, -2**63, 2**64 + 1, -(10**4299), 10**4300 - 1,
    bytes(range(256)), b"it's", b'say "hi"', b'\'"', 'it\'s', 'say "hi"', '\'"\\', '\x7f\x80\xa0\xad\u00ff\u0100\u061c\ue000\U000e0001']`
  for (const protocol of [0, 2, 5]) {
    const { python, ours } = bothListings(values, protocol)
    t.ok(python === ours, python === ours ? `protocol ${protocol}: identical` : firstDifference(python, ours))
  }
})
