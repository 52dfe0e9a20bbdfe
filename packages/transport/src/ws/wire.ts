/**
 * The WebSocket carrier's header frame, both versions of docs/wire-protocol.md:
 *
 *   version 1 (subprotocol picklewire.v1): header frame, pickle frame, buffer frames, [MAC]
 *   version 2 (subprotocol picklewire.v2): the same, and a header may carry the pickle itself
 *     as a msgpack bin under `pk`; the pickle frame is then left out, so that a message
 *     without out-of-band buffers (or MAC) is a single WebSocket frame
 *
 * The connection's version is the subprotocol its handshake selected, and every header of the
 * connection carries it. Headers are encoded here by hand (a small map of known keys, any
 * valid msgpack encoding is allowed) straight into the frame's one buffer, pickle included;
 * they are decoded with msgpackr and checked in the order the spec lists.
 */
import { Packr, Unpackr } from 'msgpackr'
import { TransportError } from '../errors.js'
import { headerFields, headerVersion, type MessageHeader } from '../header.js'
import type { Limits } from '../limits.js'
import { checkPlainMsgpack, isMsgpackInteger, msgpackItemEnd } from '../msgpack-check.js'

/** A header as this carrier sends and receives it: `pk` is the inline pickle (version 2). */
export interface WireHeader extends MessageHeader {
  pk?: Uint8Array
}

/** The versions this side speaks, newest first. */
export const PROTOCOL_VERSIONS: readonly number[] = Object.freeze([2, 1])
export const LATEST_VERSION = 2

/** The subprotocol of each version: `picklewire.v1`, `picklewire.v2`. */
export function subprotocolOf(version: number): string {
  return `picklewire.v${version}`
}

/**
 * The version a handshake selected: 2 for picklewire.v2, else 1 (picklewire.v1, or no
 * subprotocol at all: a server may accept clients that offer none, and they speak version 1).
 */
export function versionOfSubprotocol(protocol: string | undefined): number {
  return protocol === subprotocolOf(2) ? 2 : 1
}

/** The largest header frame a receiver accepts, inline pickle included. */
export const MAX_HEADER_BYTES = 64 * 1024

/** Version 2 senders put pickles up to this many bytes inline (header frame and pickle in one). */
export const MAX_INLINE_PICKLE_BYTES = 16 * 1024

/** A header that names another protocol version than the connection's: close code 4426. */
export class VersionMismatch extends TransportError {}

// -- encoding -------------------------------------------------------------------------------------

const xPackr = new Packr({ useRecords: false, variableMapSize: true })

function uintSize(n: number): number {
  return n < 0x80 ? 1 : n < 0x100 ? 2 : n < 0x10000 ? 3 : n <= 0xffffffff ? 5 : 9
}

function arraySize(n: number): number {
  return n < 16 ? 1 : n < 0x10000 ? 3 : 5
}

function binSize(n: number): number {
  return (n < 0x100 ? 2 : n < 0x10000 ? 3 : 5) + n
}

// The header is written with module-level state (one header at a time; nothing here awaits).
let out: Buffer = Buffer.alloc(0)
let at = 0

function putUint(n: number): void {
  const b = out
  if (n < 0x80) b[at++] = n
  else if (n < 0x100) {
    b[at++] = 0xcc
    b[at++] = n
  } else if (n < 0x10000) {
    b[at++] = 0xcd
    b[at++] = n >>> 8
    b[at++] = n & 0xff
  } else if (n <= 0xffffffff) {
    b[at++] = 0xce
    b.writeUInt32BE(n, at)
    at += 4
  } else {
    b[at++] = 0xcf
    b.writeUInt32BE(Math.floor(n / 0x100000000), at)
    b.writeUInt32BE(n >>> 0, at + 4)
    at += 8
  }
}

/** A short ASCII string (fixstr): a key, or the kind. */
function putKey(s: string): void {
  const b = out
  b[at++] = 0xa0 | s.length
  for (let i = 0; i < s.length; i++) b[at++] = s.charCodeAt(i)
}

function putArray(n: number): void {
  const b = out
  if (n < 16) b[at++] = 0x90 | n
  else if (n < 0x10000) {
    b[at++] = 0xdc
    b.writeUInt16BE(n, at)
    at += 2
  } else {
    b[at++] = 0xdd
    b.writeUInt32BE(n, at)
    at += 4
  }
}

function putBin(src: Uint8Array): void {
  const b = out
  const n = src.byteLength
  if (n < 0x100) {
    b[at++] = 0xc4
    b[at++] = n
  } else if (n < 0x10000) {
    b[at++] = 0xc5
    b[at++] = n >>> 8
    b[at++] = n & 0xff
  } else {
    b[at++] = 0xc6
    b.writeUInt32BE(n, at)
    at += 4
  }
  b.set(src, at)
  at += n
}

/**
 * The header frame's bytes: a msgpack map of v, id, k, p (and b, ro when there are buffers; re,
 * x and pk when given). `k` must be one of the kinds (short ASCII); `x` is packed by msgpackr.
 */
export function encodeWireHeader(h: WireHeader): Buffer {
  const nb = h.b.length
  const x = h.x === undefined ? null : xPackr.pack(h.x)
  let entries = 4
  // fixmap, "v" v, "id" id, "k" kind, "p" p
  let size = 1 + 2 + uintSize(h.v) + 3 + uintSize(h.id) + 2 + 1 + h.k.length + 2 + uintSize(h.p)
  if (nb > 0) {
    entries += 2
    size += 2 + arraySize(nb) + 3 + arraySize(nb) + nb
    for (let i = 0; i < nb; i++) size += uintSize(h.b[i]!)
  }
  if (h.re !== undefined) {
    entries++
    size += 3 + uintSize(h.re)
  }
  if (x !== null) {
    entries++
    size += 2 + x.byteLength
  }
  if (h.pk !== undefined) {
    entries++
    size += 3 + binSize(h.pk.byteLength)
  }
  const buf = Buffer.allocUnsafe(size)
  out = buf
  at = 0
  buf[at++] = 0x80 | entries
  buf[at++] = 0xa1 // "v"
  buf[at++] = 0x76
  putUint(h.v)
  buf[at++] = 0xa2 // "id"
  buf[at++] = 0x69
  buf[at++] = 0x64
  putUint(h.id)
  buf[at++] = 0xa1 // "k"
  buf[at++] = 0x6b
  putKey(h.k)
  buf[at++] = 0xa1 // "p"
  buf[at++] = 0x70
  putUint(h.p)
  if (nb > 0) {
    buf[at++] = 0xa1 // "b"
    buf[at++] = 0x62
    putArray(nb)
    for (let i = 0; i < nb; i++) putUint(h.b[i]!)
    buf[at++] = 0xa2 // "ro"
    buf[at++] = 0x72
    buf[at++] = 0x6f
    putArray(nb)
    for (let i = 0; i < nb; i++) buf[at++] = h.ro[i] ? 0xc3 : 0xc2
  }
  if (h.re !== undefined) {
    buf[at++] = 0xa2 // "re"
    buf[at++] = 0x72
    buf[at++] = 0x65
    putUint(h.re)
  }
  if (x !== null) {
    buf[at++] = 0xa1 // "x"
    buf[at++] = 0x78
    buf.set(x, at)
    at += x.byteLength
  }
  if (h.pk !== undefined) {
    buf[at++] = 0xa2 // "pk"
    buf[at++] = 0x70
    buf[at++] = 0x6b
    putBin(h.pk)
  }
  out = EMPTY_OUT
  return buf
}
const EMPTY_OUT = Buffer.alloc(0)

// -- decoding -------------------------------------------------------------------------------------

// Maps load as Map, so that no key can reach a prototype; bin loads as a view over the frame.
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: false })

/**
 * A quick reader for the msgpack that headers are made of in practice: maps with short ASCII
 * string keys, small integers, ASCII strings, bin, arrays, booleans and nil, nested a few
 * levels. It gives what msgpackr gives for the same bytes (Map, number, string, a view for
 * bin), and gives up (FAIL) on anything else, or on bytes that run short or trail: msgpackr
 * then decodes the frame, so any valid msgpack is still accepted and any invalid input gets
 * msgpackr's error. Nothing is allocated beyond what the frame's own length can hold.
 */
const FAIL = Symbol('fail')
let qf: Uint8Array = new Uint8Array(0)
let qpos = 0

function quickString(len: number): string | typeof FAIL {
  if (qpos + len > qf.length) return FAIL
  let out = ''
  for (let i = 0; i < len; i++) {
    const c = qf[qpos + i]!
    if (c >= 0x80) return FAIL
    out += String.fromCharCode(c)
  }
  qpos += len
  return out
}

function quickArray(len: number, depth: number): unknown[] | typeof FAIL {
  if (len > qf.length - qpos) return FAIL // every item takes at least a byte
  const out: unknown[] = []
  for (let i = 0; i < len; i++) {
    const v = quickValue(depth)
    if (v === FAIL) return FAIL
    out.push(v)
  }
  return out
}

function quickMap(len: number, depth: number): Map<string, unknown> | typeof FAIL {
  if (len * 2 > qf.length - qpos) return FAIL
  const out = new Map<string, unknown>()
  for (let i = 0; i < len; i++) {
    if (qpos >= qf.length) return FAIL
    const t = qf[qpos]!
    if ((t & 0xe0) !== 0xa0) return FAIL // keys: fixstr only
    qpos++
    const key = quickString(t & 0x1f)
    if (key === FAIL) return FAIL
    const v = quickValue(depth)
    if (v === FAIL) return FAIL
    out.set(key, v)
  }
  return out
}

function quickBin(len: number): Uint8Array | typeof FAIL {
  if (qpos + len > qf.length) return FAIL
  const v = qf.subarray(qpos, qpos + len)
  qpos += len
  return v
}

function quickValue(depth: number): unknown {
  const f = qf
  if (qpos >= f.length || depth > 8) return FAIL
  const t = f[qpos++]!
  if (t < 0x80) return t
  if (t >= 0xe0) return t - 0x100
  if (t < 0x90) return quickMap(t & 0x0f, depth + 1)
  if (t < 0xa0) return quickArray(t & 0x0f, depth + 1)
  if (t < 0xc0) return quickString(t & 0x1f)
  const left = f.length - qpos
  switch (t) {
    case 0xc0: return null
    case 0xc2: return false
    case 0xc3: return true
    case 0xcc: return left < 1 ? FAIL : f[qpos++]!
    case 0xcd: {
      if (left < 2) return FAIL
      const v = (f[qpos]! << 8) | f[qpos + 1]!
      qpos += 2
      return v
    }
    case 0xce: {
      if (left < 4) return FAIL
      const v = f[qpos]! * 0x1000000 + ((f[qpos + 1]! << 16) | (f[qpos + 2]! << 8) | f[qpos + 3]!)
      qpos += 4
      return v
    }
    case 0xc4: return left < 1 ? FAIL : quickBin(f[qpos++]!)
    case 0xc5: {
      if (left < 2) return FAIL
      const n = (f[qpos]! << 8) | f[qpos + 1]!
      qpos += 2
      return quickBin(n)
    }
    case 0xc6: {
      if (left < 4) return FAIL
      const n = f[qpos]! * 0x1000000 + ((f[qpos + 1]! << 16) | (f[qpos + 2]! << 8) | f[qpos + 3]!)
      qpos += 4
      return quickBin(n)
    }
    case 0xd9: return left < 1 ? FAIL : quickString(f[qpos++]!)
    case 0xdc: {
      if (left < 2) return FAIL
      const n = (f[qpos]! << 8) | f[qpos + 1]!
      qpos += 2
      return quickArray(n, depth + 1)
    }
    default: return FAIL // wider integers, floats, str16/32, ext, ...: msgpackr's
  }
}

/** The header frame as a Map, quickly when it is made of the common forms, else null (exported for the tests). */
export function quickUnpack(frame: Uint8Array): Map<string, unknown> | null {
  if (frame.length === 0 || (frame[0]! & 0xf0) !== 0x80) return null
  qf = frame
  qpos = 1
  const m = quickMap(frame[0]! & 0x0f, 1)
  const done = m !== FAIL && qpos === frame.length
  qf = EMPTY
  return done ? m : null
}
const EMPTY = new Uint8Array(0)

function bad(why: string): never {
  throw new TransportError('PROTOCOL', `bad message header: ${why}`)
}

/** Header fields that must be msgpack integers (an integral float such as 5.0 is refused, as Python's peer refuses it). */
const INTEGER_FIELDS: ReadonlySet<string> = new Set(['v', 'id', 'p', 're'])

/**
 * msgpackr decodes 5.0 as 5, so the encodings of the integer fields (and of each item of `b`)
 * are checked in the frame itself. Runs on frames checkPlainMsgpack accepted and msgpackr
 * decoded as a map; the quick reader never accepts a float, so only its fallback needs this.
 */
function checkIntegerEncodings(frame: Uint8Array): void {
  const t = frame[0]!
  let entries = t >= 0x80 && t <= 0x8f ? t & 0x0f : t === 0xde ? (frame[1]! << 8) | frame[2]! : -1
  let pos = t >= 0x80 && t <= 0x8f ? 1 : 3
  if (entries < 0) return // map32 or not a map: headerVersion reports it
  const notInteger = (key: string, at: number): never => bad(`${key} must be a msgpack integer, got a value of type byte 0x${frame[at]!.toString(16)} (a float?)`)
  for (; entries > 0; entries--) {
    const k = frame[pos]!
    let key: string | null = null
    if (k >= 0xa0 && k <= 0xbf && k - 0xa0 <= 2) key = String.fromCharCode(...frame.subarray(pos + 1, pos + 1 + (k & 0x1f)))
    pos = msgpackItemEnd(frame, pos)
    if (pos < 0) return
    if (key !== null && INTEGER_FIELDS.has(key) && !isMsgpackInteger(frame, pos)) notInteger(key, pos)
    if (key === 'b') {
      const a = frame[pos]!
      const n = a >= 0x90 && a <= 0x9f ? a & 0x0f : a === 0xdc ? (frame[pos + 1]! << 8) | frame[pos + 2]! : -1
      let at = a === 0xdc ? pos + 3 : pos + 1
      for (let i = 0; i < n && at > 0; i++) {
        if (!isMsgpackInteger(frame, at)) notInteger(`b[${i}]`, at)
        at = msgpackItemEnd(frame, at)
      }
    }
    pos = msgpackItemEnd(frame, pos)
    if (pos < 0) return
  }
}

/**
 * Decodes a header frame and runs checks 1 to 7 of docs/wire-protocol.md section 3 on it (the
 * receiver runs the rest): size, msgpack map, the connection's version, types, the limits.
 * Throws TransportError PROTOCOL / LIMIT, or VersionMismatch for an integer `v` of another version.
 */
export function decodeWireHeader(frame: Uint8Array, limits: Limits, version: number): WireHeader {
  if (frame.byteLength > MAX_HEADER_BYTES) bad(`${frame.byteLength} bytes is too long for a header`)
  let raw: unknown = quickUnpack(frame)
  if (raw === null) {
    checkPlainMsgpack(frame, 'bad message header')
    try {
      raw = unpackr.unpack(frame)
    } catch (err) {
      bad(`not msgpack (${err instanceof Error ? err.message : String(err)})`)
    }
    if (raw instanceof Map) checkIntegerEncodings(frame)
  }
  const v = headerVersion(raw)
  if (v !== version) throw new VersionMismatch('PROTOCOL', `unsupported protocol version ${v}; this connection speaks ${version}`)
  const map = raw as Map<unknown, unknown>
  const pk = map.get('pk')
  const h: WireHeader = headerFields(map, v, limits, (p) => {
    if (pk === undefined) return
    if (version < 2) bad('pk (an inline pickle) needs protocol version 2')
    if (!(pk instanceof Uint8Array)) bad('pk must be binary (msgpack bin)')
    if (pk.byteLength !== p) bad(`pk holds ${pk.byteLength} bytes but p announces ${p}`)
  })
  if (pk !== undefined) h.pk = pk as Uint8Array
  return h
}
