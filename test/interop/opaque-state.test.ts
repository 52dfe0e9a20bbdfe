/**
 * Opaque mode, lossless: state that reaches an instance other than through a plain BUILD. A
 * reduce value's state setter (its sixth item), which CPython writes as setter(obj, state)
 * called and popped, stays with the placeholder and is written back the same way; recursive
 * structures whose cycle passes through an instance's state (a set, dict, list, tuple or
 * frozenset holding an instance that refers back to it) dump back to CPython's bytes.
 */
import t from 'tap'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { PyGlobal, PyObject, dumps, loads } from '@picklewire/codec'
import { endFileWithoutPython, runPython } from '../helpers/python.js'

endFileWithoutPython(t)

const dir = mkdtempSync(join(tmpdir(), 'pw-opaque-state-'))
t.teardown(() => rmSync(dir, { recursive: true, force: true }))
writeFileSync(join(dir, 'pwstate.py'), String.raw`
class Node:
    def __eq__(self, o): return type(o) is Node
    def __hash__(self): return 1
def set_state(obj, state):
    obj.__dict__.update(state)
    obj.via_setter = True
class WithSetter:
    def __init__(self, x): self.x = x
    def __reduce__(self): return (WithSetter, (0,), {'x': self.x}, None, None, set_state)
`)
const prelude = `import sys, pickle, struct\nsys.path.insert(0, ${JSON.stringify(dir)})\nfrom pwstate import *\n`

/** CPython's pickle of what each snippet leaves in v, at each protocol. */
function cpython(snippets: readonly string[], protocols: readonly number[]): Uint8Array[] {
  const out = runPython(prelude + [
    `for code in ${JSON.stringify(snippets)}:`,
    '    g = {}',
    '    exec(code, globals(), g)',
    `    for p in ${JSON.stringify(protocols)}:`,
    "        d = pickle.dumps(g['v'], p)",
    "        sys.stdout.buffer.write(struct.pack('<I', len(d)) + d)",
  ].join('\n'))
  const res: Uint8Array[] = []
  for (let at = 0; at < out.length; at += 4 + out.readUInt32LE(at)) res.push(new Uint8Array(out.subarray(at + 4, at + 4 + out.readUInt32LE(at))))
  return res
}

const PROTOCOLS = [0, 1, 2, 3, 4, 5]

t.test('a state setter stays with the placeholder and runs again when CPython loads it back', async (t) => {
  const pickles = cpython(['v = WithSetter(5)'], PROTOCOLS)
  const ours: Uint8Array[] = []
  PROTOCOLS.forEach((protocol, i) => {
    const data = pickles[i]!
    const v = loads(data, { opaque: true, lossless: true })
    t.ok(v instanceof PyObject, `protocol ${protocol}: a placeholder`)
    const o = v as PyObject
    t.same(o.state, new Map([['x', 5]]), `protocol ${protocol}: it keeps the state the setter was given`)
    t.ok(o.stateSetter instanceof PyGlobal && String(o.stateSetter) === 'pwstate.set_state', `protocol ${protocol}: and the setter`)
    const back = dumps(v, { protocol })
    t.same(Buffer.from(back), Buffer.from(data), `protocol ${protocol}: dumps back to CPython's bytes`)
    ours.push(back)
  })
  const seen = runPython(prelude + [
    'import base64, json',
    'for b in json.loads(sys.stdin.read()):',
    '    v = pickle.loads(base64.b64decode(b))',
    '    print(type(v).__name__, v.x, v.via_setter)',
  ].join('\n'), new TextEncoder().encode(JSON.stringify(ours.map((b) => Buffer.from(b).toString('base64'))))).toString().trim().split('\n')
  t.same(seen, PROTOCOLS.map(() => 'WithSetter 5 True'), 'CPython loads each to a WithSetter whose setter ran')
})

t.test('cycles through an instance\'s state dump back to CPython\'s bytes', async (t) => {
  const snippets = [
    's = set(); n = Node(); n.owner = s; s.add(n); v = s',
    'd = {}; n = Node(); n.owner = d; d["k"] = n; v = d',
    'l = []; n = Node(); n.owner = l; l.append(n); v = l',
    'n = Node(); tu = (n, 1); n.owner = tu; v = tu',
    'n = Node(); f = frozenset([n]); n.owner = f; v = f',
    's = set(); n = Node(); n.owner = s; s.add(n); v = n',
  ]
  const pickles = cpython(snippets, PROTOCOLS)
  snippets.forEach((code, i) => PROTOCOLS.forEach((protocol, j) => {
    const data = pickles[i * PROTOCOLS.length + j]!
    const v = loads(data, { opaque: true, lossless: true })
    t.same(Buffer.from(dumps(v, { protocol })), Buffer.from(data), `${code} at protocol ${protocol}`)
  }))
})
