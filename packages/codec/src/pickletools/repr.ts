/**
 * Python's repr() for the values pickletools shows: str, bytes, bytearray, int, bool and
 * float, character for character as CPython 3.11 writes them.
 */
import { isPrintable } from './printable.js'

function hex(n: number, width: number): string {
  return n.toString(16).padStart(width, '0')
}

/**
 * A Python str as JavaScript strings. Python can hold a high surrogate followed by a low
 * one as two code points, which one JavaScript string would read as a single astral
 * character; such surrogates come as separate parts. The parts joined are the text.
 */
export type PyText = string | readonly string[]

function parts(text: PyText): readonly string[] {
  return typeof text === 'string' ? [text] : text
}

/** repr(s) for a Python str; asciiOnly gives ascii(s) instead. */
export function reprStr(text: PyText, asciiOnly = false): string {
  const all = parts(text)
  let single = false
  let double = false
  for (const p of all) {
    if (p.includes("'")) single = true
    if (p.includes('"')) double = true
  }
  const quote = single && !double ? '"' : "'"
  let out = quote
  for (const p of all) {
    for (const ch of p) {
      const cp = ch.codePointAt(0)!
      if (ch === quote || ch === '\\') out += '\\' + ch
      else if (cp === 0x09) out += '\\t'
      else if (cp === 0x0a) out += '\\n'
      else if (cp === 0x0d) out += '\\r'
      else if (cp < 0x20 || cp === 0x7f) out += '\\x' + hex(cp, 2)
      else if (cp < 0x7f) out += ch
      else if (!asciiOnly && isPrintable(cp)) out += ch
      else if (cp <= 0xff) out += '\\x' + hex(cp, 2)
      else if (cp <= 0xffff) out += '\\u' + hex(cp, 4)
      else out += '\\U' + hex(cp, 8)
    }
  }
  return out + quote
}

/**
 * repr(b) for Python bytes. bytearray's repr (escapeApostrophe) escapes every ' even inside
 * double quotes: bytearray(b"\'"), where bytes gives b"'".
 */
export function reprBytes(b: Uint8Array, escapeApostrophe = false): string {
  const quote = b.includes(0x27) && !b.includes(0x22) ? 0x22 : 0x27
  const out: string[] = ['b', String.fromCharCode(quote)]
  for (let i = 0; i < b.length; i++) {
    const c = b[i]!
    if (c === quote || c === 0x5c || (c === 0x27 && escapeApostrophe)) out.push('\\' + String.fromCharCode(c))
    else if (c === 0x09) out.push('\\t')
    else if (c === 0x0a) out.push('\\n')
    else if (c === 0x0d) out.push('\\r')
    else if (c < 0x20 || c >= 0x7f) out.push('\\x' + hex(c, 2))
    else out.push(String.fromCharCode(c))
  }
  out.push(String.fromCharCode(quote))
  return out.join('')
}

/** repr(bytearray(b)). */
export function reprByteArray(b: Uint8Array): string {
  return `bytearray(${reprBytes(b, true)})`
}

/**
 * repr(x) for a Python float: the shortest digits that read back to x (JavaScript's
 * Number-to-string finds the same digits), laid out as Python does: positional when the
 * decimal exponent is in -4..15, else d.ddde+XX with at least two exponent digits.
 */
export function reprFloat(x: number): string {
  if (Number.isNaN(x)) return 'nan'
  if (x === Infinity) return 'inf'
  if (x === -Infinity) return '-inf'
  if (x === 0) return Object.is(x, -0) ? '-0.0' : '0.0'
  const sign = x < 0 ? '-' : ''
  const js = String(Math.abs(x))
  const e = js.indexOf('e')
  const mantissa = e < 0 ? js : js.slice(0, e)
  let exponent = e < 0 ? 0 : Number(js.slice(e + 1))
  const dot = mantissa.indexOf('.')
  let digits = dot < 0 ? mantissa : mantissa.slice(0, dot) + mantissa.slice(dot + 1)
  // The point sits after the first (dot < 0 ? all : dot) characters of the digits.
  let pointAt = (dot < 0 ? mantissa.length : dot) + exponent
  const lead = digits.length - digits.replace(/^0+/, '').length
  digits = digits.slice(lead).replace(/0+$/, '')
  pointAt -= lead
  // Python's decpt is pointAt: the value is 0.<digits> * 10**pointAt.
  if (pointAt > 16 || pointAt <= -4) {
    exponent = pointAt - 1
    const m = digits.length === 1 ? digits : digits[0] + '.' + digits.slice(1)
    const ex = Math.abs(exponent).toString().padStart(2, '0')
    return `${sign}${m}e${exponent < 0 ? '-' : '+'}${ex}`
  }
  if (pointAt <= 0) return `${sign}0.${'0'.repeat(-pointAt)}${digits}`
  if (pointAt >= digits.length) return `${sign}${digits}${'0'.repeat(pointAt - digits.length)}.0`
  return `${sign}${digits.slice(0, pointAt)}.${digits.slice(pointAt)}`
}

/** How many characters Python counts in s: astral characters are one, not two. */
export function pyLength(s: string): number {
  let n = s.length
  for (let i = 0; i < s.length - 1; i++) {
    const c = s.charCodeAt(i)
    if (c >= 0xd800 && c <= 0xdbff) {
      const d = s.charCodeAt(i + 1)
      if (d >= 0xdc00 && d <= 0xdfff) {
        n--
        i++
      }
    }
  }
  return n
}
