/**
 * The unpickler's UTF-8 decoding at every length it treats differently (up to 8 bytes, 9 to 64,
 * longer), as Python's 'surrogatepass' reads it: well-formed text and encoded lone surrogates
 * come back as the same JavaScript string, and each kind of malformed sequence is an
 * UnpicklingError that says what was wrong and where.
 */
import t from 'tap'
import { UnpicklingError, dumps, loads } from '@picklewire/codec'

/** A protocol-4 pickle of one str given as UTF-8 bytes (SHORT_BINUNICODE or BINUNICODE). */
function strPickle(body: number[]): Uint8Array {
  const head = body.length < 256 ? [0x80, 4, 0x8c, body.length] : [0x80, 4, 0x58, body.length & 0xff, (body.length >> 8) & 0xff, 0, 0]
  return Uint8Array.from([...head, ...body, 0x2e])
}

function utf8(s: string): number[] {
  return [...Buffer.from(s, 'utf8')]
}

// A fixed generator, so that a failure names a case that can be run again.
let seed = 12345
function rand(n: number): number {
  seed = (Math.imul(seed, 1103515245) + 12345) >>> 0
  return seed % n
}

const PIECES = ['a', 'Z', '0', ' ', 'é', 'ï', 'ß', 'П', 'ж', '東', 'タ', '€', '\u{1F642}', '\u{10FFFF}', '\ud800', '\udfff', '\u0080', '\u07ff', '\u0800', '\uffff']

t.test('random strings of 0 to 120 code units load back as themselves', async (t) => {
  let checked = 0
  for (let len = 0; len <= 120; len++) {
    for (let k = 0; k < 6; k++) {
      let s = ''
      // k === 0: ASCII only, the fast path; otherwise any mix.
      while (s.length < len) s += k === 0 ? String.fromCharCode(0x20 + rand(95)) : PIECES[rand(PIECES.length)]!
      for (const protocol of [3, 4]) {
        const back = loads(dumps(s, { protocol }))
        if (back !== s) t.fail(`length ${len}, case ${k}, protocol ${protocol}: got ${JSON.stringify(back)} for ${JSON.stringify(s)}`)
        checked++
      }
    }
  }
  t.equal(checked, 121 * 6 * 2, 'every case was loaded')
})

t.test('encoded lone surrogates pass, as with surrogatepass', async (t) => {
  for (const pad of [0, 10, 70]) {
    const ascii = 'x'.repeat(pad)
    t.equal(loads(strPickle([...utf8(ascii), 0xed, 0xa0, 0x80])), ascii + '\ud800', `high surrogate after ${pad} bytes`)
    t.equal(loads(strPickle([...utf8(ascii), 0xed, 0xbf, 0xbf])), ascii + '\udfff', `low surrogate after ${pad} bytes`)
  }
})

t.test('malformed UTF-8 is an UnpicklingError naming the fault and its byte', async (t) => {
  const cases: [string, number[], RegExp][] = [
    ['a lone continuation byte', [0x80], /at byte \d+: unexpected byte 0x80/],
    ['an overlong lead byte', [0xc0, 0x80], /unexpected byte 0xc0/],
    ['a lead byte beyond U+10FFFF', [0xf5, 0x80, 0x80, 0x80], /unexpected byte 0xf5/],
    ['a cut 2-byte sequence', [0xc3], /truncated sequence/],
    ['a cut 3-byte sequence', [0xe6, 0x9d], /truncated sequence/],
    ['a cut 4-byte sequence', [0xf0, 0x9f, 0x99], /truncated sequence/],
    ['a bad continuation in 2 bytes', [0xc3, 0x41], /invalid continuation byte 0x41/],
    ['a bad second byte in 3 bytes', [0xe6, 0x41, 0x80], /invalid continuation byte 0x41/],
    ['a bad third byte in 3 bytes', [0xe6, 0x9d, 0x41], /invalid continuation byte 0x41/],
    ['a bad byte in 4 bytes', [0xf0, 0x9f, 0x41, 0x82], /invalid continuation byte 0x41/],
    ['an overlong 3-byte sequence', [0xe0, 0x80, 0x80], /overlong or out-of-range sequence/],
    ['an overlong 4-byte sequence', [0xf0, 0x80, 0x80, 0x80], /overlong or out-of-range sequence/],
    ['a 4-byte sequence beyond U+10FFFF', [0xf4, 0x90, 0x80, 0x80], /overlong or out-of-range sequence/],
  ]
  for (const [what, bad, message] of cases) {
    for (const pad of [0, 3, 20, 70, 300]) {
      // pad bytes of valid text first; a cut sequence must end the string, others are followed by more.
      const tail = /truncated/.test(message.source) ? [] : utf8('ok')
      const body = [...utf8('é'.repeat(pad >> 1)), ...(pad & 1 ? [0x61] : []), ...bad, ...tail]
      let err: unknown
      try {
        loads(strPickle(body))
      } catch (e) {
        err = e
      }
      t.ok(err instanceof UnpicklingError, `${what} after ${pad} bytes: UnpicklingError`)
      t.match((err as Error).message, message, `${what} after ${pad} bytes: the message says what`)
      const at = Number(/at byte (\d+)/.exec((err as Error).message)?.[1])
      t.ok(at >= pad && at < pad + bad.length, `${what} after ${pad} bytes: at byte ${at}, inside the bad sequence`)
    }
  }
})

t.test('names of GLOBAL are strict UTF-8 and names of INST strict ASCII, as Python reads them', async (t) => {
  // GLOBAL '\ud800' 'x' (encoded surrogate) and GLOBAL 'café' 'x' (valid UTF-8, unknown module).
  const surrogate = Uint8Array.from([0x80, 0x02, 0x63, 0xed, 0xa0, 0x80, 0x0a, 0x78, 0x0a, 0x2e])
  t.throws(() => loads(surrogate, { opaque: true }), { name: 'UnpicklingError', message: /the module name is not valid UTF-8/ })
  const cafe = Uint8Array.from([0x80, 0x02, 0x63, ...utf8('café'), 0x0a, 0x78, 0x0a, 0x2e])
  const g = loads(cafe, { opaque: true }) as { module: string; name: string }
  t.equal(g.module, 'café', 'valid UTF-8 names still load (opaque)')
  // INST 'café' 'X' with an empty MARK: not ASCII.
  const inst = Uint8Array.from([0x28, 0x69, ...utf8('café'), 0x0a, 0x58, 0x0a, 0x2e])
  t.throws(() => loads(inst, { opaque: true }), { name: 'UnpicklingError', message: /the module name is not ASCII \(byte 0xc3 at 3\)/ })
})
