/**
 * Byte-to-text primitives shared by the unpickler and pickletools: UTF-8 as Python's
 * 'surrogatepass' reads it, Latin-1, ASCII, Python 2 string escapes and raw-unicode-escape.
 * These sit on the hot path of every string load.
 */
import { UnpicklingError } from './errors.js'

const fatalUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true })

/**
 * Python converts an int to or from decimal text only up to this many digits
 * (sys.int_info.default_max_str_digits): the unpickler's INT and LONG, the pickler's text ints
 * at protocols 0 and 1, and pickletools all hold to it.
 */
export const MAX_INT_DIGITS = 4300
const CHUNK = 0x2000

/**
 * Turns UTF-16 code units into a string. apply() over an ordinary array is far faster than
 * over a typed array; chunks keep the argument count small.
 */
function fromCodeUnits(units: ArrayLike<number>, start: number, end: number): string {
  const parts: string[] = []
  for (let i = start; i < end; i += CHUNK) {
    const stop = Math.min(end, i + CHUNK)
    const chunk: number[] = new Array(stop - i)
    for (let k = i; k < stop; k++) chunk[k - i] = units[k]!
    parts.push(String.fromCharCode.apply(null, chunk))
  }
  return parts.length === 1 ? parts[0]! : parts.join('')
}

/**
 * Code units of short strings are gathered in a reused array of exactly their count before one
 * String.fromCharCode.apply: several times faster than concatenation, and no garbage. Sharing
 * the arrays is safe: the decoder runs to completion without calling out.
 */
const SHORT = 64
const byLength: number[][] = Array.from({ length: SHORT + 1 }, (_, n) => new Array<number>(n).fill(0))

/**
 * A string of at most FROM_ARGS code units, read from u[s..s+n), by one String.fromCharCode call
 * with the units as arguments: a third cheaper than apply() over an array, which matters on the
 * path of every short string. u is a byte array (ASCII, Latin-1) or the UTF-8 decoder's scratch.
 */
const FROM_ARGS = 16
function fromArgs(u: ArrayLike<number>, s: number, n: number): string {
  const f = String.fromCharCode
  switch (n) {
    case 0: return ''
    case 1: return f(u[s]!)
    case 2: return f(u[s]!, u[s + 1]!)
    case 3: return f(u[s]!, u[s + 1]!, u[s + 2]!)
    case 4: return f(u[s]!, u[s + 1]!, u[s + 2]!, u[s + 3]!)
    case 5: return f(u[s]!, u[s + 1]!, u[s + 2]!, u[s + 3]!, u[s + 4]!)
    case 6: return f(u[s]!, u[s + 1]!, u[s + 2]!, u[s + 3]!, u[s + 4]!, u[s + 5]!)
    case 7: return f(u[s]!, u[s + 1]!, u[s + 2]!, u[s + 3]!, u[s + 4]!, u[s + 5]!, u[s + 6]!)
    case 8: return f(u[s]!, u[s + 1]!, u[s + 2]!, u[s + 3]!, u[s + 4]!, u[s + 5]!, u[s + 6]!, u[s + 7]!)
    case 9: return f(u[s]!, u[s + 1]!, u[s + 2]!, u[s + 3]!, u[s + 4]!, u[s + 5]!, u[s + 6]!, u[s + 7]!, u[s + 8]!)
    case 10: return f(u[s]!, u[s + 1]!, u[s + 2]!, u[s + 3]!, u[s + 4]!, u[s + 5]!, u[s + 6]!, u[s + 7]!, u[s + 8]!,
      u[s + 9]!)
    case 11: return f(u[s]!, u[s + 1]!, u[s + 2]!, u[s + 3]!, u[s + 4]!, u[s + 5]!, u[s + 6]!, u[s + 7]!, u[s + 8]!,
      u[s + 9]!, u[s + 10]!)
    case 12: return f(u[s]!, u[s + 1]!, u[s + 2]!, u[s + 3]!, u[s + 4]!, u[s + 5]!, u[s + 6]!, u[s + 7]!, u[s + 8]!,
      u[s + 9]!, u[s + 10]!, u[s + 11]!)
    case 13: return f(u[s]!, u[s + 1]!, u[s + 2]!, u[s + 3]!, u[s + 4]!, u[s + 5]!, u[s + 6]!, u[s + 7]!, u[s + 8]!,
      u[s + 9]!, u[s + 10]!, u[s + 11]!, u[s + 12]!)
    case 14: return f(u[s]!, u[s + 1]!, u[s + 2]!, u[s + 3]!, u[s + 4]!, u[s + 5]!, u[s + 6]!, u[s + 7]!, u[s + 8]!,
      u[s + 9]!, u[s + 10]!, u[s + 11]!, u[s + 12]!, u[s + 13]!)
    case 15: return f(u[s]!, u[s + 1]!, u[s + 2]!, u[s + 3]!, u[s + 4]!, u[s + 5]!, u[s + 6]!, u[s + 7]!, u[s + 8]!,
      u[s + 9]!, u[s + 10]!, u[s + 11]!, u[s + 12]!, u[s + 13]!, u[s + 14]!)
    default: return f(u[s]!, u[s + 1]!, u[s + 2]!, u[s + 3]!, u[s + 4]!, u[s + 5]!, u[s + 6]!, u[s + 7]!, u[s + 8]!,
      u[s + 9]!, u[s + 10]!, u[s + 11]!, u[s + 12]!, u[s + 13]!, u[s + 14]!, u[s + 15]!)
  }
}

/** Code units u[s..s+n) as a string, of any length. */
function fromUnits(u: ArrayLike<number>, s: number, n: number): string {
  if (n <= FROM_ARGS) return fromArgs(u, s, n)
  if (n > SHORT) return fromCodeUnits(u, s, s + n)
  const exact = byLength[n]!
  for (let k = 0; k < n; k++) exact[k] = u[s + k]!
  return String.fromCharCode.apply(null, exact)
}

/**
 * Decodes UTF-8 the way Python's pickle does ('surrogatepass'): encoded lone surrogates
 * (ED A0..BF xx) become lone UTF-16 surrogates instead of errors. Anything else invalid
 * is an UnpicklingError.
 */
export function decodeUtf8(b: Uint8Array, start: number, end: number): string {
  const len = end - start
  if (len <= FROM_ARGS) {
    let i = start
    while (i < end && b[i]! < 0x80) i++
    if (i === end) return fromArgs(b, start, len)
    return decodeUtf8Slow(b, start, end)
  }
  if (len <= SHORT) {
    // Copy while checking for ASCII: one pass for the common case.
    const units = byLength[len]!
    for (let i = 0; i < len; i++) {
      const c = b[start + i]!
      if (c >= 0x80) return decodeUtf8Slow(b, start, end)
      units[i] = c
    }
    return String.fromCharCode.apply(null, units)
  }
  try {
    return fatalUtf8.decode(b.subarray(start, end))
  } catch {
    // The engine's decoder rejects encoded surrogates, which Python writes; decode by hand.
    return decodeUtf8Slow(b, start, end)
  }
}

/**
 * Whether b[start..end] (valid 'surrogatepass' UTF-8) encodes a high surrogate directly followed
 * by a low one, each as three bytes: the two code points Python keeps apart and JavaScript cannot.
 * 0xED is never a continuation byte, so every one found starts a sequence.
 */
export function hasEncodedSurrogatePair(b: Uint8Array, start: number, end: number): boolean {
  for (let i = start; i + 6 <= end; i++) {
    if (b[i] !== 0xed) continue
    const c1 = b[i + 1]!
    if (c1 >= 0xa0 && c1 <= 0xaf && b[i + 3] === 0xed && b[i + 4]! >= 0xb0 && b[i + 4]! <= 0xbf) return true
  }
  return false
}

/**
 * The same for protocol 0's raw-unicode-escape: a \uD800-\uDBFF escape directly followed by a
 * \uDC00-\uDFFF one (Python writes a character beyond U+FFFF as one \U escape instead).
 */
export function hasEscapedSurrogatePair(b: Uint8Array, start: number, end: number): boolean {
  const escapeAt = (i: number, lo: number, hi: number): boolean => {
    if (b[i] !== 0x5c || b[i + 1] !== 0x75) return false
    const v = parseInt(String.fromCharCode(b[i + 2]!, b[i + 3]!, b[i + 4]!, b[i + 5]!), 16)
    return v >= lo && v <= hi
  }
  for (let i = start; i + 12 <= end; i++) {
    if (escapeAt(i, 0xd800, 0xdbff) && escapeAt(i + 6, 0xdc00, 0xdfff)) return true
  }
  return false
}

function badUtf8(pos: number, start: number, why: string): never {
  throw new UnpicklingError(`invalid UTF-8 in string at byte ${pos - start}: ${why}`)
}

/** Code units of a short string as they are decoded, before they go to their exact-length array. */
const scratchUnits: number[] = new Array<number>(SHORT).fill(0)

/**
 * UTF-8 with encoded surrogates allowed (Python's 'surrogatepass'), validated as it is decoded:
 * one pass, each sequence length written out. Anything else invalid is an UnpicklingError.
 */
function decodeUtf8Slow(b: Uint8Array, start: number, end: number): string {
  const short = end - start <= SHORT
  // A short input makes at most as many code units as it has bytes.
  const units = short ? scratchUnits : []
  let n = 0
  let i = start
  while (i < end) {
    const c = b[i]!
    if (c < 0x80) {
      units[n++] = c
      i++
    } else if (c >= 0xc2 && c <= 0xdf) {
      if (i + 1 > end - 1) badUtf8(i, start, 'truncated sequence')
      const c1 = b[i + 1]!
      if ((c1 & 0xc0) !== 0x80) badUtf8(i + 1, start, `invalid continuation byte 0x${c1.toString(16)}`)
      units[n++] = ((c & 0x1f) << 6) | (c1 & 0x3f)
      i += 2
    } else if (c >= 0xe0 && c <= 0xef) {
      if (i + 2 > end - 1) badUtf8(i, start, 'truncated sequence')
      const c1 = b[i + 1]!
      if ((c1 & 0xc0) !== 0x80) badUtf8(i + 1, start, `invalid continuation byte 0x${c1.toString(16)}`)
      const c2 = b[i + 2]!
      if ((c2 & 0xc0) !== 0x80) badUtf8(i + 2, start, `invalid continuation byte 0x${c2.toString(16)}`)
      const cp = ((c & 0x0f) << 12) | ((c1 & 0x3f) << 6) | (c2 & 0x3f)
      if (cp < 0x800) badUtf8(i, start, 'overlong or out-of-range sequence')
      units[n++] = cp // lone surrogates pass through, as with Python's 'surrogatepass'
      i += 3
    } else if (c >= 0xf0 && c <= 0xf4) {
      if (i + 3 > end - 1) badUtf8(i, start, 'truncated sequence')
      let cp = c & 0x07
      for (let k = 1; k <= 3; k++) {
        const cc = b[i + k]!
        if ((cc & 0xc0) !== 0x80) badUtf8(i + k, start, `invalid continuation byte 0x${cc.toString(16)}`)
        cp = (cp << 6) | (cc & 0x3f)
      }
      if (cp < 0x10000 || cp > 0x10ffff) badUtf8(i, start, 'overlong or out-of-range sequence')
      cp -= 0x10000
      units[n++] = 0xd800 + (cp >> 10)
      units[n++] = 0xdc00 + (cp & 0x3ff)
      i += 4
    } else {
      badUtf8(i, start, `unexpected byte 0x${c.toString(16)}`)
    }
  }
  return fromUnits(units, 0, n)
}

/**
 * UTF-8 with nothing let through: a name in a GLOBAL opcode, which Python decodes with 'utf-8'
 * strictly (encoded surrogates are an error there, unlike in str payloads).
 */
export function decodeUtf8Strict(b: Uint8Array, start: number, end: number, what: string): string {
  const s = decodeUtf8(b, start, end)
  if (!s.isWellFormed()) throw new UnpicklingError(`${what} is not valid UTF-8 (an encoded surrogate)`)
  return s
}

/** ASCII, as Python decodes the names of an INST opcode: any byte over 0x7f is an error. */
export function decodeAsciiStrict(b: Uint8Array, start: number, end: number, what: string): string {
  for (let i = start; i < end; i++) {
    if (b[i]! >= 0x80) throw new UnpicklingError(`${what} is not ASCII (byte 0x${b[i]!.toString(16)} at ${i - start})`)
  }
  return decodeLatin1(b, start, end)
}

/** Every byte is one code point U+0000..U+00FF. */
export function decodeLatin1(b: Uint8Array, start: number, end: number): string {
  return fromUnits(b, start, end - start)
}

/** An error handler name as Python's codecs know them. */
export type DecodeErrors = 'strict' | 'replace' | 'ignore' | 'surrogateescape' | 'backslashreplace'

function handleBadByte(byte: number, errors: string, encoding: string, pos: number): string {
  switch (errors) {
    case 'replace': return '\ufffd'
    case 'ignore': return ''
    case 'surrogateescape': return String.fromCharCode(0xdc00 + byte)
    case 'backslashreplace': return '\\x' + byte.toString(16).padStart(2, '0')
    case 'strict': {
      const why = encoding === 'ascii' ? 'ordinal not in range(128)' : encoding === 'utf-8' ? 'invalid UTF-8' : 'character maps to <undefined>'
      throw new UnpicklingError(`'${encoding}' codec can't decode byte 0x${byte.toString(16).padStart(2, '0')} in position ${pos}: ${why}`)
    }
    default:
      throw new UnpicklingError(`unknown error handler name '${errors}'`)
  }
}

/** Python's names for the encodings decoded here, lower case, without '-', '_', ' ' or ':'. */
const ENCODING_ALIASES: ReadonlyMap<string, string> = new Map([
  ...['ascii', '646', 'ansix3.41968', 'ansix3.41986', 'ansix341968', 'cp367', 'csascii', 'ibm367', 'iso646us',
    'iso646.irv1991', 'isoir6', 'us', 'usascii'].map((a) => [a, 'ascii'] as const),
  ...['latin1', 'latin', 'iso88591', 'iso8859', 'iso885911987', 'l1', '8859', 'cp819', 'ibm819', 'csisolatin1',
    'isoir100'].map((a) => [a, 'latin1'] as const),
  ...['utf8', 'u8', 'utf', 'utf8ucs2', 'utf8ucs4', 'cp65001'].map((a) => [a, 'utf-8'] as const),
  ...['cp1252', 'windows1252', '1252'].map((a) => [a, 'cp1252'] as const),
  ['bytes', 'bytes'],
])

/**
 * Normalizes an encoding name the way Python's codec registry does for the ones decoded here
 * ('ascii', 'latin1', 'utf-8', 'cp1252', 'bytes'); other names come back unchanged. A browser's
 * label table would read several of Python's Latin-1 and ASCII names as windows-1252.
 */
export function normalizeEncoding(encoding: string): string {
  return ENCODING_ALIASES.get(encoding.toLowerCase().replace(/[-_ :]/g, '')) ?? encoding
}

/** cp1252 as Python decodes it: bytes 0x80-0x9F, where five have no character (0 here). */
const CP1252_HIGH = [
  0x20ac, 0, 0x201a, 0x0192, 0x201e, 0x2026, 0x2020, 0x2021, 0x02c6, 0x2030, 0x0160, 0x2039, 0x0152, 0, 0x017d, 0,
  0, 0x2018, 0x2019, 0x201c, 0x201d, 0x2022, 0x2013, 0x2014, 0x02dc, 0x2122, 0x0161, 0x203a, 0x0153, 0, 0x017e, 0x0178,
]

function decodeCp1252(bytes: Uint8Array, errors: string): string {
  let out = ''
  for (let i = 0; i < bytes.length; i++) {
    const c = bytes[i]!
    if (c < 0x80 || c >= 0xa0) {
      out += String.fromCharCode(c)
      continue
    }
    const u = CP1252_HIGH[c - 0x80]!
    out += u === 0 ? handleBadByte(c, errors, 'charmap', i) : String.fromCharCode(u)
  }
  return out
}

/** UTF-8 with U+FFFD for what does not decode; a BOM is kept, as Python's 'utf-8' codec keeps it. */
const replacingUtf8 = new TextDecoder('utf-8', { ignoreBOM: true })

/**
 * Decodes a Python 2 str (STRING, BINSTRING, SHORT_BINSTRING) with the unpickler's encoding
 * and errors options, as Python 3's Unpickler does. encoding 'bytes' keeps the bytes.
 */
export function decodePython2Str(bytes: Uint8Array, encoding: string, errors: string): string | Uint8Array {
  const enc = normalizeEncoding(encoding)
  if (enc === 'bytes') return bytes
  if (enc === 'latin1') return decodeLatin1(bytes, 0, bytes.length)
  if (enc === 'ascii') {
    let i = 0
    while (i < bytes.length && bytes[i]! < 0x80) i++
    if (i === bytes.length) return decodeLatin1(bytes, 0, bytes.length)
    let out = decodeLatin1(bytes, 0, i)
    for (; i < bytes.length; i++) {
      const c = bytes[i]!
      out += c < 0x80 ? String.fromCharCode(c) : handleBadByte(c, errors, 'ascii', i)
    }
    return out
  }
  if (enc === 'utf-8') {
    // Python's 'utf-8' codec, not BINUNICODE's 'surrogatepass': encoded surrogates are errors.
    try {
      return fatalUtf8.decode(bytes)
    } catch {
      return errors === 'replace' ? replacingUtf8.decode(bytes) : decodeUtf8Lenient(bytes, errors)
    }
  }
  if (enc === 'cp1252') return decodeCp1252(bytes, errors)
  let decoder: { decode(input: Uint8Array): string }
  try {
    decoder = new TextDecoder(encoding, { fatal: true })
  } catch {
    throw new UnpicklingError(`unknown encoding: ${encoding}`)
  }
  try {
    return decoder.decode(bytes)
  } catch {
    // The engine's TextDecoder can stop or put U+FFFD, nothing else: another handler would
    // silently give what Python does not.
    if (errors === 'replace') return new TextDecoder(encoding).decode(bytes)
    if (errors !== 'strict') {
      throw new UnpicklingError(`'${encoding}' codec can't decode a Python 2 str of ${bytes.length} bytes, and error handler '${errors}' is not supported for it (only 'strict' and 'replace' are)`)
    }
    throw new UnpicklingError(`'${encoding}' codec can't decode a Python 2 str of ${bytes.length} bytes`)
  }
}

/** UTF-8 with a per-byte error handler for what does not decode (each byte of a bad sequence, as Python). */
function decodeUtf8Lenient(bytes: Uint8Array, errors: string): string {
  let out = ''
  let i = 0
  while (i < bytes.length) {
    const c = bytes[i]!
    if (c < 0x80) {
      out += String.fromCharCode(c)
      i++
      continue
    }
    const need = c >= 0xc2 && c <= 0xdf ? 1 : c >= 0xe0 && c <= 0xef ? 2 : c >= 0xf0 && c <= 0xf4 ? 3 : -1
    if (need > 0 && i + need < bytes.length) {
      try {
        out += fatalUtf8.decode(bytes.subarray(i, i + need + 1))
        i += need + 1
        continue
      } catch {
        // fall through to the error handler for this byte
      }
    }
    out += handleBadByte(c, errors, 'utf-8', i)
    i++
  }
  return out
}

const HEX: Record<number, number> = {}
for (let i = 0; i < 10; i++) HEX[0x30 + i] = i
for (let i = 0; i < 6; i++) { HEX[0x61 + i] = 10 + i; HEX[0x41 + i] = 10 + i }

/** Decodes the body of a quoted Python 2 string literal (Python's codecs.escape_decode). */
export function escapeDecode(b: Uint8Array): Uint8Array {
  const out = new Uint8Array(b.length)
  let n = 0
  for (let i = 0; i < b.length; i++) {
    const c = b[i]!
    if (c !== 0x5c) { out[n++] = c; continue }
    i++
    if (i >= b.length) throw new UnpicklingError('Trailing \\ in string')
    const e = b[i]!
    switch (e) {
      case 0x0a: break // backslash-newline: a line continuation
      case 0x5c: out[n++] = 0x5c; break
      case 0x27: out[n++] = 0x27; break
      case 0x22: out[n++] = 0x22; break
      case 0x61: out[n++] = 0x07; break
      case 0x62: out[n++] = 0x08; break
      case 0x66: out[n++] = 0x0c; break
      case 0x6e: out[n++] = 0x0a; break
      case 0x72: out[n++] = 0x0d; break
      case 0x74: out[n++] = 0x09; break
      case 0x76: out[n++] = 0x0b; break
      case 0x78: {
        const h1 = HEX[b[i + 1] ?? -1]
        const h2 = HEX[b[i + 2] ?? -1]
        if (h1 === undefined || h2 === undefined) throw new UnpicklingError(`invalid \\x escape at position ${i - 1}`)
        out[n++] = h1 * 16 + h2
        i += 2
        break
      }
      default:
        if (e >= 0x30 && e <= 0x37) {
          let v = e - 0x30
          for (let k = 0; k < 2 && b[i + 1]! >= 0x30 && b[i + 1]! <= 0x37; k++) v = v * 8 + (b[++i]! - 0x30)
          out[n++] = v & 0xff
        } else {
          out[n++] = 0x5c
          out[n++] = e
        }
    }
  }
  return out.slice(0, n)
}

/** Decodes Python's raw-unicode-escape: \uXXXX and \UXXXXXXXX escapes, other bytes Latin-1. */
export function rawUnicodeEscapeDecode(b: Uint8Array, start: number, end: number): string {
  let out = ''
  let runStart = start
  let i = start
  while (i < end) {
    if (b[i] !== 0x5c) { i++; continue }
    let j = i
    while (j < end && b[j] === 0x5c) j++
    const slashes = j - i
    const kind = b[j]
    if (slashes % 2 === 1 && (kind === 0x75 || kind === 0x55)) {
      const digits = kind === 0x75 ? 4 : 8
      out += decodeLatin1(b, runStart, j - 1)
      let cp = 0
      for (let k = 1; k <= digits; k++) {
        const h = j + k < end ? HEX[b[j + k]!] : undefined
        if (h === undefined) throw new UnpicklingError(`truncated \\${String.fromCharCode(kind)}${'X'.repeat(digits)} escape at position ${j - 1 - start}`)
        cp = cp * 16 + h
      }
      if (cp > 0x10ffff) throw new UnpicklingError(`\\U${cp.toString(16)} is out of the Unicode range`)
      out += String.fromCodePoint(cp)
      i = runStart = j + 1 + digits
    } else {
      i = j
    }
  }
  return out + decodeLatin1(b, runStart, end)
}
