/**
 * A Python str holding a surrogate pair as two code points ('\ud83d\ude00', len 2) and the one
 * character beyond U+FFFF they spell ('\U0001f600', len 1) are the same JavaScript string. The
 * default mode gives that string for both; lossless mode keeps the two code points apart as a
 * PyStr, which dumps back to CPython's bytes and loads in CPython to the same str, at every
 * protocol (UTF-8 from protocol 1, raw-unicode-escape at 0), in and out of list runs.
 */
import t from 'tap'
import { PyStr, dumps, loads } from '@picklewire/codec'
import { endFileWithoutPython, runPython } from '../helpers/python.js'

endFileWithoutPython(t)

// Python expressions, and what each item is in lossless mode: a PyStr or a plain string.
const VALUE = String.raw`['a\ud83d\ude00b', '\U0001f600', '\ud83d', '\ude00\ud83d', 'x' * 300 + '\ud83d\ude00', {'k': '\udbff\udfff'}, ('é', '\ud800\udc00'), {'\ud83d\ude00': 1, '\U0001f600': 2}]`
const PROTOCOLS = [0, 1, 2, 3, 4, 5]

function pyPickles(): Uint8Array[] {
  const out = runPython([
    'import pickle, sys, struct',
    `v = ${VALUE}`,
    `for p in ${JSON.stringify(PROTOCOLS)}:`,
    '    d = pickle.dumps(v, p)',
    "    sys.stdout.buffer.write(struct.pack('<I', len(d)) + d)",
  ].join('\n'))
  const res: Uint8Array[] = []
  for (let at = 0; at < out.length; at += 4 + out.readUInt32LE(at)) res.push(new Uint8Array(out.subarray(at + 4, at + 4 + out.readUInt32LE(at))))
  return res
}

t.test('lossless mode keeps a surrogate pair of two code points apart, and dumps it back', async (t) => {
  const pickles = pyPickles()
  const ours: Uint8Array[] = []
  PROTOCOLS.forEach((protocol, i) => {
    const data = pickles[i]!
    const natural = loads(data) as unknown[]
    t.equal(natural[0], 'a\u{1f600}b', `protocol ${protocol}: the default mode gives the JavaScript string`)
    const v = loads(data, { lossless: true }) as unknown[]
    t.ok(v[0] instanceof PyStr && v[0].value === 'a\ud83d\ude00b', `protocol ${protocol}: two code points: a PyStr`)
    t.equal(v[1], '\u{1f600}', `protocol ${protocol}: one astral code point: a plain string`)
    t.equal(v[2], '\ud83d', `protocol ${protocol}: a lone surrogate: a plain string`)
    t.equal(v[3], '\ude00\ud83d', `protocol ${protocol}: a low surrogate before a high one is no pair: a plain string`)
    t.ok(v[4] instanceof PyStr && v[4].value.length === 302, `protocol ${protocol}: a long str (BINUNICODE) too`)
    const d = v[5] as Map<string, unknown>
    t.ok(d.get('k') instanceof PyStr, `protocol ${protocol}: a dict value too`)
    const tu = v[6] as unknown[]
    t.equal(tu[0], 'é')
    t.ok(tu[1] instanceof PyStr, `protocol ${protocol}: a tuple item too`)
    t.equal((v[7] as Map<unknown, unknown>).size, 2, `protocol ${protocol}: as dict keys, the two-point str and the astral one stay two keys`)
    const back = dumps(v, { protocol })
    t.same(Buffer.from(back), Buffer.from(data), `protocol ${protocol}: dumps back to CPython's bytes`)
    ours.push(back)
  })
  const seen = runPython([
    'import pickle, sys, base64, json',
    `want = ${VALUE}`,
    'for b in json.loads(sys.stdin.read()):',
    '    v = pickle.loads(base64.b64decode(b))',
    "    print('ok' if v == want and [len(x) for x in v[:5]] == [len(x) for x in want[:5]] else 'differs: %a' % (v,))",
  ].join('\n'), new TextEncoder().encode(JSON.stringify(ours.map((b) => Buffer.from(b).toString('base64'))))).toString().trim().split('\n')
  t.same(seen, PROTOCOLS.map(() => 'ok'), 'CPython loads each to an equal list, the pairs still two code points')
})

t.test('a list run of short strs (the loader\'s fast path) keeps the pair apart', async (t) => {
  const out = runPython(String.raw`import pickle, sys; sys.stdout.buffer.write(pickle.dumps(['a', 'b', '\ud83d\ude00', 'c'], 4))`)
  const v = loads(new Uint8Array(out), { lossless: true }) as unknown[]
  t.same(v.map((x) => (x instanceof PyStr ? `PyStr ${x.value.length}` : x)), ['a', 'b', 'PyStr 2', 'c'])
  t.same(Buffer.from(dumps(v, { protocol: 4 })), out)
})

t.test('a PyStr made in JavaScript pickles as two code points', async (t) => {
  const lens = PROTOCOLS.map((protocol) => runPython('import pickle, sys; v = pickle.loads(sys.stdin.buffer.read()); print(len(v), ascii(v))', dumps(new PyStr('\ud83d\ude00'), { protocol })).toString().trim())
  t.same(lens, PROTOCOLS.map(() => String.raw`2 '\ud83d\ude00'`))
  t.equal(runPython('import pickle, sys; print(len(pickle.loads(sys.stdin.buffer.read())))', dumps('\ud83d\ude00', { protocol: 4 })).toString().trim(), '1', 'a plain string is one code point, as before')
})
