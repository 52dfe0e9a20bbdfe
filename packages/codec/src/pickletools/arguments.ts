/**
 * Reads the inline argument of an opcode the way Python's pickletools does: the layout comes
 * from the opcode table's ArgumentDescriptor (its size rule), the decoding of each kind of
 * argument is here, and every malformed argument fails with the message CPython 3.11 gives.
 */
import { UnpicklingError } from '../errors.js'
import {
  Args, TAKEN_FROM_ARGUMENT1, TAKEN_FROM_ARGUMENT4, TAKEN_FROM_ARGUMENT4U, TAKEN_FROM_ARGUMENT8U,
  type ArgumentDescriptor,
} from '../opcodes.js'
import { MAX_INT_DIGITS, decodeLatin1, decodeUtf8, escapeDecode, rawUnicodeEscapeDecode } from '../text.js'
import { ByteArray } from '../types.js'
import { reprBytes, type PyText } from './repr.js'

/**
 * An opcode's argument as genops yields it: null for opcodes without one; a boolean for
 * INT's 00 and 01; a number for integers (a bigint beyond 2**53) and floats; a string for
 * text and Python 2 str; a Uint8Array view over the input for bytes and a ByteArray view
 * for bytearray.
 */
export type OpcodeArgument = null | boolean | number | bigint | string | Uint8Array

/** An argument as read, with what repr() needs to show it as Python would. */
export interface ReadArgument {
  readonly value: OpcodeArgument
  /** Where the argument ends: the next opcode's position. */
  readonly end: number
  /** The value is a Python float (else a number is an int). */
  readonly isFloat: boolean
  /** The str as Python holds it, when the JavaScript string alone would join surrogates. */
  readonly text?: PyText
}

/** Python's sys.maxsize on a 64-bit build. */
const MAXSIZE = (1n << 63n) - 1n

function fail(message: string, cause?: unknown): never {
  throw new UnpicklingError(message, cause === undefined ? undefined : { cause })
}

/** The input and a read position, read like the file object Python's readers take. */
class Cursor {
  constructor(readonly b: Uint8Array, public pos: number) {}

  /** Up to n bytes; fewer at the end of the input. */
  read(n: number): Uint8Array {
    const at = this.pos
    const to = Math.min(this.b.length, at + n)
    this.pos = to
    return this.b.subarray(at, to)
  }

  /** Up to and including the next newline, or the rest of the input. */
  readline(): Uint8Array {
    const at = this.pos
    const nl = this.b.indexOf(0x0a, at)
    this.pos = nl < 0 ? this.b.length : nl + 1
    return this.b.subarray(at, this.pos)
  }

  get remaining(): number {
    return this.b.length - this.pos
  }
}

interface Decoded {
  value: OpcodeArgument
  isFloat?: boolean
  text?: PyText
}

// ---------------------------------------------------------------------------------------
// Integers

function smallest(v: bigint): number | bigint {
  return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v
}

/** A little-endian integer of b's bytes; two's complement when signed (pickle.decode_long). */
function littleEndian(b: Uint8Array, signed: boolean): number | bigint {
  const n = b.length
  if (n === 0) return 0
  if (n <= 6) {
    let v = 0
    for (let i = n - 1; i >= 0; i--) v = v * 256 + b[i]!
    if (signed && b[n - 1]! >= 0x80) v -= 2 ** (8 * n)
    return v
  }
  let hex = ''
  for (let i = n - 1; i >= 0; i--) hex += b[i]!.toString(16).padStart(2, '0')
  let v = BigInt('0x' + hex)
  if (signed && b[n - 1]! >= 0x80) v -= 1n << BigInt(8 * n)
  return smallest(v)
}

function isSpace(c: number): boolean {
  return c === 0x20 || (c >= 0x09 && c <= 0x0d)
}

/** repr() cut to 200 characters, as CPython's %.200R does. */
function repr200(b: Uint8Array): string {
  const r = reprBytes(b)
  return r.length > 200 ? r.slice(0, 200) : r
}

/** int(b) for bytes b, as Python 3.11 parses it in base 10, with its errors. */
export function pyInt(b: Uint8Array): number | bigint {
  const invalid = (): never => fail(`invalid literal for int() with base 10: ${repr200(b)}`)
  const n = b.length
  let i = 0
  while (i < n && isSpace(b[i]!)) i++
  let negative = false
  if (i < n && (b[i] === 0x2b || b[i] === 0x2d)) {
    negative = b[i] === 0x2d
    i++
  }
  const from = i
  if (b[i] === 0x5f) invalid()
  let digits = 0
  let underscore = false
  for (; i < n; i++) {
    const c = b[i]!
    if (c >= 0x30 && c <= 0x39) {
      digits++
      underscore = false
    } else if (c === 0x5f) {
      if (underscore) invalid()
      underscore = true
    } else {
      break
    }
  }
  if (underscore || digits === 0) invalid()
  if (digits > MAX_INT_DIGITS) {
    fail(`Exceeds the limit (${MAX_INT_DIGITS} digits) for integer string conversion: value has ${digits} digits; use sys.set_int_max_str_digits() to increase the limit`)
  }
  const to = i
  while (i < n && isSpace(b[i]!)) i++
  if (i !== n) invalid()
  const text = decodeLatin1(b, from, to).replace(/_/g, '')
  if (digits <= 15) {
    const v = Number(text)
    return negative && v !== 0 ? -v : v
  }
  return smallest(negative ? -BigInt(text) : BigInt(text))
}

/** The digits of a Python int, or the error Python 3.11 raises converting it to text. */
export function intText(v: number | bigint): string {
  if (typeof v === 'bigint') {
    // Check the size before converting: a huge int would take long to print only to be refused.
    const bits = (v < 0n ? -v : v).toString(16).length * 4
    if (bits > 14400) throw new UnpicklingError(intTooLong())
  }
  const s = String(v)
  if (s.length - (s[0] === '-' ? 1 : 0) > MAX_INT_DIGITS) throw new UnpicklingError(intTooLong())
  return s
}

function intTooLong(): string {
  return `Exceeds the limit (${MAX_INT_DIGITS} digits) for integer string conversion; use sys.set_int_max_str_digits() to increase the limit`
}

// ---------------------------------------------------------------------------------------
// Floats

const DIGITS = String.raw`\d(?:_?\d)*`
const FLOAT_LITERAL = new RegExp(
  String.raw`^[+-]?(?:${DIGITS}(?:\.(?:${DIGITS})?)?|\.${DIGITS})(?:[eE][+-]?${DIGITS})?$`,
)
const FLOAT_SPECIAL = /^([+-]?)(?:inf|infinity|nan)$/i

/** float(b) for bytes b, as Python 3.11 parses it, with its error. */
export function pyFloat(b: Uint8Array): number {
  let from = 0
  let to = b.length
  while (from < to && isSpace(b[from]!)) from++
  while (to > from && isSpace(b[to - 1]!)) to--
  const s = decodeLatin1(b, from, to)
  if (FLOAT_LITERAL.test(s)) return Number(s.replace(/_/g, ''))
  const special = FLOAT_SPECIAL.exec(s)
  if (special !== null) {
    if (/n$/i.test(s)) return NaN
    return special[1] === '-' ? -Infinity : Infinity
  }
  return fail(`could not convert string to float: ${reprBytes(b)}`)
}

// ---------------------------------------------------------------------------------------
// Text

function unicodeDecodeError(codec: string, b: Uint8Array, start: number, end: number, why: string): string {
  return end - start === 1
    ? `'${codec}' codec can't decode byte 0x${b[start]!.toString(16).padStart(2, '0')} in position ${start}: ${why}`
    : `'${codec}' codec can't decode bytes in position ${start}-${end - 1}: ${why}`
}

function isContinuation(c: number | undefined): boolean {
  return c !== undefined && (c & 0xc0) === 0x80
}

/**
 * Where CPython's UTF-8 decoder with 'surrogatepass' stops on b, as its UnicodeDecodeError
 * message; undefined when b decodes. Only used to word an error decodeUtf8 found.
 */
function utf8ErrorMessage(b: Uint8Array): string | undefined {
  const end = b.length
  let s = 0
  while (s < end) {
    const ch = b[s]!
    if (ch < 0x80) {
      s++
      continue
    }
    const left = end - s
    // 0: cut short at the end; 1: a bad first byte; 2..4: the bad continuation byte, counted from 1.
    let problem = -1
    let size = 0
    if (ch < 0xc2) {
      problem = 1
    } else if (ch < 0xe0) {
      if (left < 2) problem = 0
      else if (!isContinuation(b[s + 1])) problem = 2
      else size = 2
    } else if (ch < 0xf0) {
      const c2 = b[s + 1]
      const badSecond = !isContinuation(c2) || (c2! < 0xa0 ? ch === 0xe0 : ch === 0xed)
      if (left < 2) problem = 0
      else if (badSecond) problem = 2
      else if (left < 3) problem = 0
      else if (!isContinuation(b[s + 2])) problem = 3
      else size = 3
    } else if (ch < 0xf5) {
      const c2 = b[s + 1]
      const badSecond = !isContinuation(c2) || (c2! < 0x90 ? ch === 0xf0 : ch === 0xf4)
      if (left < 2) problem = 0
      else if (badSecond) problem = 2
      else if (left < 3) problem = 0
      else if (!isContinuation(b[s + 2])) problem = 3
      else if (left < 4) problem = 0
      else if (!isContinuation(b[s + 3])) problem = 4
      else size = 4
    } else {
      problem = 1
    }
    if (problem < 0) {
      s += size
      continue
    }
    // 'surrogatepass' accepts a three-byte sequence that encodes a surrogate.
    if (left >= 3 && ch === 0xed && b[s + 1]! >= 0xa0 && b[s + 1]! <= 0xbf && isContinuation(b[s + 2])) {
      s += 3
      continue
    }
    if (problem === 0) return unicodeDecodeError('utf-8', b, s, end, 'unexpected end of data')
    if (problem === 1) return unicodeDecodeError('utf-8', b, s, s + 1, 'invalid start byte')
    return unicodeDecodeError('utf-8', b, s, s + problem - 1, 'invalid continuation byte')
  }
  return undefined
}

/** str(b, 'utf-8', 'surrogatepass'). */
function utf8Text(b: Uint8Array): Decoded {
  let value: string
  try {
    value = decodeUtf8(b, 0, b.length)
  } catch (err) {
    return fail(utf8ErrorMessage(b) ?? (err as Error).message, err)
  }
  // Encoded surrogates are separate code points to Python even when they would pair up.
  let from = 0
  const parts: string[] = []
  for (let i = b.indexOf(0xed); i >= 0 && i + 2 < b.length; i = b.indexOf(0xed, i + 1)) {
    if (b[i + 1]! < 0xa0) continue
    if (i > from) parts.push(decodeUtf8(b, from, i))
    parts.push(decodeUtf8(b, i, i + 3))
    from = i + 3
  }
  if (parts.length === 0) return { value }
  if (from < b.length) parts.push(decodeUtf8(b, from, b.length))
  return { value, text: parts }
}

const HEX_DIGIT = /^[0-9a-fA-F]$/

/**
 * Walks the escapes of raw-unicode-escape bytes as CPython does: a backslash starts an
 * escape when it ends an odd run of backslashes and 'u' or 'U' follows. Calls onEscape for
 * each; returns CPython's error message for the first bad one.
 */
function walkRawUnicodeEscapes(b: Uint8Array, onEscape: (start: number, end: number, cp: number) => void): string | undefined {
  let i = 0
  while (i < b.length) {
    if (b[i] !== 0x5c) {
      i++
      continue
    }
    let j = i
    while (j < b.length && b[j] === 0x5c) j++
    const kind = b[j]
    if ((j - i) % 2 === 0 || (kind !== 0x75 && kind !== 0x55)) {
      i = j
      continue
    }
    const start = j - 1
    const count = kind === 0x75 ? 4 : 8
    let s = j + 1
    let cp = 0
    for (let k = 0; k < count; k++, s++) {
      if (s >= b.length || !HEX_DIGIT.test(String.fromCharCode(b[s]!))) {
        return unicodeDecodeError('rawunicodeescape', b, start, s, `truncated \\${kind === 0x75 ? 'uXXXX' : 'UXXXXXXXX'} escape`)
      }
      cp = cp * 16 + parseInt(String.fromCharCode(b[s]!), 16)
    }
    if (cp > 0x10ffff) return unicodeDecodeError('rawunicodeescape', b, start, s, '\\Uxxxxxxxx out of range')
    onEscape(start, s, cp)
    i = s
  }
  return undefined
}

/** str(b, 'raw-unicode-escape'). */
function rawUnicodeText(b: Uint8Array): Decoded {
  let value: string
  try {
    value = rawUnicodeEscapeDecode(b, 0, b.length)
  } catch (err) {
    return fail(walkRawUnicodeEscapes(b, () => {}) ?? (err as Error).message, err)
  }
  if (!/[\ud800-\udfff]/.test(value)) return { value }
  // Escaped surrogates are separate code points to Python even when they would pair up.
  const parts: string[] = []
  let from = 0
  walkRawUnicodeEscapes(b, (start, end, cp) => {
    if (cp < 0xd800 || cp > 0xdfff) return
    if (start > from) parts.push(rawUnicodeEscapeDecode(b, from, start))
    parts.push(String.fromCharCode(cp))
    from = end
  })
  if (from < b.length) parts.push(rawUnicodeEscapeDecode(b, from, b.length))
  return { value, text: parts }
}

/** codecs.escape_decode(b)[0].decode('ascii'), as pickletools reads quoted strings. */
function escapedAscii(b: Uint8Array): string {
  const raw = escapeDecode(b)
  const bad = raw.findIndex((c) => c >= 0x80)
  if (bad >= 0) fail(unicodeDecodeError('ascii', raw, bad, bad + 1, 'ordinal not in range(128)'))
  return decodeLatin1(raw, 0, raw.length)
}

// ---------------------------------------------------------------------------------------
// The readers, one per kind of argument

type Reader = (c: Cursor, arg: ArgumentDescriptor) => Decoded

/** A line without its newline; pickletools names the stringnl reader in this error. */
function line(c: Cursor, reader = 'stringnl'): Uint8Array {
  const data = c.readline()
  if (data[data.length - 1] !== 0x0a) fail(`no newline found when trying to read ${reader}`)
  return data.subarray(0, data.length - 1)
}

function quoted(c: Cursor): string {
  let data = line(c)
  const q = data[0] === 0x22 ? 0x22 : data[0] === 0x27 ? 0x27 : -1
  if (q < 0) fail(`no string quotes around ${reprBytes(data)}`)
  if (data[data.length - 1] !== q) {
    fail(`strinq quote ${reprBytes(Uint8Array.of(q))} not found at both ends of ${reprBytes(data)}`)
  }
  data = data.subarray(1, Math.max(1, data.length - 1))
  return escapedAscii(data)
}

function fixed(c: Cursor, arg: ArgumentDescriptor): Uint8Array {
  const data = c.read(arg.n)
  if (data.length < arg.n) fail(`not enough data in stream to read ${arg.name}`)
  return data
}

const unsigned: Reader = (c, arg) => ({ value: littleEndian(fixed(c, arg), false) })
const signed: Reader = (c, arg) => ({ value: littleEndian(fixed(c, arg), true) })

/** The length reader of each size rule that reads a count first. */
const COUNT_READER: ReadonlyMap<number, ArgumentDescriptor> = new Map([
  [TAKEN_FROM_ARGUMENT1, Args.uint1],
  [TAKEN_FROM_ARGUMENT4, Args.int4],
  [TAKEN_FROM_ARGUMENT4U, Args.uint4],
  [TAKEN_FROM_ARGUMENT8U, Args.uint8],
])

/**
 * A counted argument: its length as its size rule says, then that many bytes, decoded.
 * shortMessage 'stream' words a cut body as the long readers do.
 */
function counted(decode: (body: Uint8Array) => Decoded, shortMessage: 'count' | 'stream' = 'count'): Reader {
  return (c, arg) => {
    const countArg = COUNT_READER.get(arg.n)
    if (countArg === undefined) throw new UnpicklingError(`pickletools cannot read ${arg.name}: its size rule ${arg.n} has no count`)
    const n = littleEndian(fixed(c, countArg), arg.n === TAKEN_FROM_ARGUMENT4)
    if (n < 0) fail(`${arg.name} byte count < 0: ${n}`)
    if (BigInt(n) > MAXSIZE) fail(`${arg.name} byte count > sys.maxsize: ${n}`)
    if (n > c.remaining) {
      if (shortMessage === 'stream') fail(`not enough data in stream to read ${arg.name}`)
      fail(`expected ${n} bytes in a ${arg.name}, but only ${c.remaining} remain`)
    }
    return decode(c.read(Number(n)))
  }
}

const READERS: ReadonlyMap<ArgumentDescriptor, Reader> = new Map<ArgumentDescriptor, Reader>([
  [Args.uint1, unsigned],
  [Args.uint2, unsigned],
  [Args.int4, signed],
  [Args.uint4, unsigned],
  [Args.uint8, unsigned],
  [Args.float8, (c, arg) => {
    const b = fixed(c, arg)
    return { value: new DataView(b.buffer, b.byteOffset, 8).getFloat64(0, false), isFloat: true }
  }],
  [Args.long1, counted((b) => ({ value: littleEndian(b, true) }), 'stream')],
  [Args.long4, counted((b) => ({ value: littleEndian(b, true) }), 'stream')],
  [Args.decimalnl_short, (c) => {
    const s = line(c)
    if (s.length === 2 && s[0] === 0x30 && (s[1] === 0x30 || s[1] === 0x31)) return { value: s[1] === 0x31 }
    return { value: pyInt(s) }
  }],
  [Args.decimalnl_long, (c) => {
    const s = line(c)
    return { value: pyInt(s[s.length - 1] === 0x4c ? s.subarray(0, s.length - 1) : s) }
  }],
  [Args.floatnl, (c) => ({ value: pyFloat(line(c)), isFloat: true })],
  [Args.stringnl, (c) => ({ value: quoted(c) })],
  [Args.stringnl_noescape, (c) => ({ value: escapedAscii(line(c)) })],
  [Args.stringnl_noescape_pair, (c) => {
    const module = escapedAscii(line(c))
    return { value: `${module} ${escapedAscii(line(c))}` }
  }],
  [Args.string1, counted((b) => ({ value: decodeLatin1(b, 0, b.length) }))],
  [Args.string4, counted((b) => ({ value: decodeLatin1(b, 0, b.length) }))],
  [Args.bytes1, counted((b) => ({ value: b }))],
  [Args.bytes4, counted((b) => ({ value: b }))],
  [Args.bytes8, counted((b) => ({ value: b }))],
  [Args.bytearray8, counted((b) => ({ value: new ByteArray(b.buffer as ArrayBuffer, b.byteOffset, b.length) }))],
  [Args.unicodestringnl, (c) => rawUnicodeText(line(c, 'unicodestringnl'))],
  [Args.unicodestring1, counted(utf8Text)],
  [Args.unicodestring4, counted(utf8Text)],
  [Args.unicodestring8, counted(utf8Text)],
])

/** Reads the argument that starts at pos, as described by arg. */
export function readArgument(arg: ArgumentDescriptor, b: Uint8Array, pos: number): ReadArgument {
  const reader = READERS.get(arg)
  if (reader === undefined) throw new UnpicklingError(`pickletools has no reader for arguments of kind ${arg.name}`)
  const c = new Cursor(b, pos)
  const d = reader(c, arg)
  return { value: d.value, end: c.pos, isFloat: d.isFloat === true, ...(d.text === undefined ? {} : { text: d.text }) }
}
