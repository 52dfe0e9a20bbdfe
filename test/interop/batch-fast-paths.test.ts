/**
 * The pickler's number runs and the unpickler's append runs (the fast paths for lists of
 * ints, floats and short strings) against CPython: CPython pickles random mixed lists at
 * protocols 1 to 5; picklewire must load each, and dumping what it loaded (lossless) must give
 * CPython's bytes back. Hand-made pickles check that a run which cannot finish (another
 * opcode, a cut, a taken memo slot, bad UTF-8) is read again by the loaders, with their errors.
 */
import t from 'tap'
import { PickleBuffer, PyFloat, UnpicklingError, dumps, loads } from '@picklewire/codec'
import { pickle, u64 } from '../helpers/craft.js'
import { endFileWithoutPython, runPython } from '../helpers/python.js'

endFileWithoutPython(t)

/** Random lists from Python: numbers of every width, floats of every kind, str of every UTF-8 length, interleaved. */
function cpythonLists(): { protocol: number; data: Uint8Array }[] {
  const script = String.raw`
import pickle, random, struct, sys
rng = random.Random(20261121)
def item(kind):
    if kind == 0: return rng.randrange(256)
    if kind == 1: return rng.randrange(256, 65536)
    if kind == 2: return rng.randrange(-2**31, 2**31)
    if kind == 3: return rng.choice([2**31, -2**31 - 1, 2**53 + 1, -2**63, 10**30])
    if kind == 4: return rng.choice([0.0, -0.0, 1.0, 2.5, -1e300, 5e-324, float('inf'), float('-inf'), float('nan'), rng.random()])
    if kind == 5: return rng.choice(['', 'a', 'user%d' % rng.randrange(10**6), 'naïve café', 'Привет', '東京タワー 🙂', 'x' * 255, 'y' * 300])
    if kind == 6: return rng.choice([None, True, b'raw', (1, 2), [3, 'z']])
    return 'shared'
out = []
for case in range(60):
    n = rng.choice([1, 2, 3, 999, 1000, 1001, 2500])
    kinds = rng.sample(range(8), rng.randrange(1, 5))
    value = [item(rng.choice(kinds)) for _ in range(n)]
    if case == 0: value = list(range(200000))
    if case == 1: value = [i * 0.5 + 0.25 for i in range(30000)]
    if case == 2: value = ['s%d' % i for i in range(30000)]
    for protocol in range(1, 6):
        data = pickle.dumps(value, protocol)
        out.append(struct.pack('<II', protocol, len(data)) + data)
sys.stdout.buffer.write(b''.join(out))
`
  const raw = runPython(script)
  const cases: { protocol: number; data: Uint8Array }[] = []
  for (let at = 0; at < raw.length;) {
    const protocol = raw.readUInt32LE(at)
    const n = raw.readUInt32LE(at + 4)
    cases.push({ protocol, data: new Uint8Array(raw.subarray(at + 8, at + 8 + n)) })
    at += 8 + n
  }
  return cases
}

t.test('random mixed lists from CPython load, and dump back to the same bytes', async (t) => {
  const cases = cpythonLists()
  t.equal(cases.length, 300)
  let same = 0
  for (const [i, { protocol, data }] of cases.entries()) {
    const lossless = loads(data, { lossless: true })
    const back = dumps(lossless, { protocol })
    if (Buffer.compare(back, data) === 0) same++
    else t.fail(`case ${i}, protocol ${protocol}: dumps(loads(x)) differs from CPython's bytes`)
    // Default mode: the same items, with floats as plain numbers.
    const plain = loads(data) as unknown[]
    const ll = lossless as unknown[]
    t.equal(plain.length, ll.length)
    let diffs = 0
    for (let k = 0; k < ll.length; k++) {
      const a = plain[k]
      const b = ll[k] instanceof PyFloat ? (ll[k] as PyFloat).value : ll[k]
      if (typeof b === 'object' && b !== null) continue
      if (!Object.is(a, b)) diffs++
    }
    if (diffs > 0) t.fail(`case ${i}, protocol ${protocol}: ${diffs} items differ between default and lossless loads`)
  }
  t.equal(same, cases.length, 'every pickle round-trips byte for byte')
})

t.test('a list of floats loads unboxed-friendly and exact, including -0, NaN and infinities', async (t) => {
  const values = [0.5, -0, NaN, Infinity, -Infinity, 5e-324, 1.7976931348623157e308]
  for (let p = 1; p <= 5; p++) {
    const v = loads(dumps(values, { protocol: p })) as number[]
    t.equal(v.length, values.length)
    for (let i = 0; i < values.length; i++) t.ok(Object.is(v[i], values[i]), `protocol ${p} item ${i}: ${v[i]}`)
  }
})

t.test('the pickler writes each number of a list as #save would', async (t) => {
  // -0 and integers beyond 2**53 are floats; 2**31 needs LONG1; a float that is integral
  // beyond int32 but safe is an int.
  const value = [1, 255, 256, 65535, 65536, -1, -0, 2 ** 31, 2 ** 53 + 2, NaN, 0.1, 2 ** 40]
  const bytes = dumps(value, { protocol: 4 })
  const check = runPython(
    'import pickle, sys, math\n' +
      'v = pickle.loads(sys.stdin.buffer.read())\n' +
      'print(repr([type(x).__name__ for x in v]), math.copysign(1, v[6]), v[7], v[8], v[11])',
    bytes,
  ).toString().trim()
  t.equal(
    check,
    "['int', 'int', 'int', 'int', 'int', 'int', 'float', 'int', 'float', 'float', 'float', 'int'] -1.0 2147483648 9007199254740994.0 1099511627776",
  )
})

t.test('persistentId sees every number of a list (the number run steps aside for the hook)', async (t) => {
  const seen: unknown[] = []
  dumps([1, 2.5, 3], { protocol: 5, persistentId: (v) => { seen.push(v); return undefined } })
  t.same(seen, [[1, 2.5, 3], 1, 2.5, 3])
})

t.test('a run cut short by another opcode is read again by the loaders', async (t) => {
  // [1, 2, None, 3]: the run reads 1 and 2, meets NONE, and the loaders read it all again.
  const p = pickle('\x80\x04]\x94(K\x01K\x02NK\x03e.')
  t.same(loads(p), [1, 2, null, 3])
  // Several batches onto one list, the second starting with a string.
  const q = pickle('\x80\x04]\x94(K\x01K\x02e(\x8c\x01a\x94K\x03e.')
  t.same(loads(q), [1, 2, 'a', 3])
})

t.test('a FRAME inside a run is checked, and a frame longer than the input is an error', async (t) => {
  const ok = pickle('\x80\x04]\x94(K\x01\x95', u64(3), 'K\x02e.')
  t.same(loads(ok), [1, 2])
  const bad = pickle('\x80\x04]\x94(K\x01\x95', u64(1000), 'K\x02e.')
  t.throws(() => loads(bad), { name: 'UnpicklingError', message: /FRAME of 1000 bytes/ })
})

t.test('MEMOIZE in a run: the item is memoized; a taken memo slot is left to the loader', async (t) => {
  // ['x', 'x']: the second is a BINGET of the first, memoized inside the run.
  const p = pickle('\x80\x04]\x94(\x8c\x01x\x94h\x01e.')
  t.same(loads(p), ['x', 'x'])
  // BINPUT 2 takes slot 2 early; the list's MEMOIZE takes slot 1 and the item's MEMOIZE must
  // overwrite slot 2 as CPython does (memo_len counts entries): BINGET 2 gives the item.
  const q = pickle('\x80\x04N\x94q\x020]\x94(K\x07\x94h\x02e.')
  const expected = runPython('import pickle, sys; print(pickle.loads(sys.stdin.buffer.read()))', q).toString().trim()
  t.equal(expected, '[7, 7]')
  t.same(loads(q), [7, 7])
  // MEMOIZE straight after MARK has nothing to memoize above the mark.
  t.throws(() => loads(pickle('\x80\x04]\x94(\x94K\x01e.')), UnpicklingError)
})

t.test('a cut anywhere in a run is UnpicklingError, never a partial list', async (t) => {
  const whole = dumps([1, 300, 70000, 2.5, 'abc', 'é', -5], { protocol: 4 })
  for (let n = 1; n < whole.length; n++) {
    t.throws(() => loads(whole.subarray(0, n)), UnpicklingError, `cut at ${n} of ${whole.length}`)
  }
})

t.test('bad UTF-8 inside a run is reported at its own opcode', async (t) => {
  const p = pickle('\x80\x04]\x94(K\x01\x8c\x02\xc3\x28e.')
  t.throws(() => loads(p), { name: 'UnpicklingError', message: /at byte 7, opcode SHORT_BINUNICODE/ })
})

t.test('APPENDS onto something that is not a list still goes through its loader', async (t) => {
  // A tuple below the mark: CPython says it has no extend/append; so do we.
  const p = pickle('\x80\x04)(K\x01e.')
  t.throws(() => loads(p), UnpicklingError)
  // A list below an enclosing mark is not the target of the inner batch: stack underflow.
  t.throws(() => loads(pickle('\x80\x04]((K\x01e.')), { name: 'UnpicklingError', message: /underflow/ })
})

t.test('a big list filled over many batches is whole and exactly sized', async (t) => {
  const n = 123_457
  const v = Array.from({ length: n }, (_, i) => (i % 3 === 0 ? i : i % 3 === 1 ? i + 0.5 : `s${i % 100}`))
  const back = loads(dumps(v, { protocol: 5 })) as unknown[]
  t.equal(back.length, n)
  let wrong = 0
  for (let i = 0; i < n; i++) if (back[i] !== v[i]) wrong++
  t.equal(wrong, 0)
  t.notOk(Object.prototype.hasOwnProperty.call(back, n), 'nothing past the end')
  // An out-of-band buffer between batches does not disturb them.
  const mixed = [1, new PickleBuffer(new Uint8Array([9])), 2]
  const buffers: PickleBuffer[] = []
  const bytes = dumps(mixed, { protocol: 5, bufferCallback: (b) => { buffers.push(b); return false } })
  const loaded = loads(bytes, { buffers }) as unknown[]
  t.equal(loaded[0], 1)
  t.equal(loaded[2], 2)
})
