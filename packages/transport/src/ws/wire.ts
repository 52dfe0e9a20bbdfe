/**
 * The WebSocket carrier's header frame, every version of docs/wire-protocol.md:
 *
 *   version 1 (subprotocol picklewire.v1): header frame, pickle frame, buffer frames, [MAC]
 *   version 2 (subprotocol picklewire.v2): the same, and a header may carry the pickle itself
 *     as a msgpack bin under `pk`; the pickle frame is then left out, so that a message
 *     without out-of-band buffers (or MAC) is a single WebSocket frame
 *   version 3 (subprotocol picklewire.v3): the same header; a buffer may travel as several
 *     frames (chunks), and a text frame `cancel <id>` abandons the message in progress
 *
 * The header is a msgpack map:
 *
 *   v   protocol version: the connection's
 *   id  message id: an unsigned integer, increasing per sender
 *   k   kind: 'msg' (default), 'req', 'rep', 'err', ...
 *   re  for replies: the id of the request answered
 *   p   the pickle's length in bytes
 *   b   each out-of-band buffer's length in bytes, in order
 *   ro  each buffer's read-only flag, in order
 *   x   optional extras (a map with string keys)
 *   pk  version 2: the pickle itself
 *
 * The connection's version is the subprotocol its handshake selected, and every header of the
 * connection carries it. Headers are encoded here by hand (a small map of known keys, any
 * valid msgpack encoding is allowed) straight into the frame's one buffer, pickle included;
 * they are decoded with msgpackr and checked in the order the spec lists. Nothing here keeps
 * state between calls: each encoding has its writer, each decoding its reader.
 */
import { Packr, Unpackr } from 'msgpackr'
import { TransportError, shown } from '../errors.js'
import { checkLengths, type Limits } from '../limits.js'
import { checkPlainMsgpack, type IntegerFields } from '../msgpack-check.js'

/** A message header, as docs/wire-protocol.md section 2 lists its fields. */
export interface MessageHeader {
  v: number
  id: number
  k: string
  re?: number
  p: number
  b: number[]
  ro: boolean[]
  x?: Record<string, unknown>
}

/** A header as this carrier sends and receives it: `pk` is the inline pickle (version 2). */
export interface WireHeader extends MessageHeader {
  pk?: Uint8Array
}

/** The versions this side speaks, newest first. */
export const PROTOCOL_VERSIONS: readonly number[] = Object.freeze([3, 2, 1])
export const LATEST_VERSION = 3

/** The subprotocol of each version: `picklewire.v1`, `picklewire.v2`, `picklewire.v3`. */
export function subprotocolOf(version: number): string {
  return `picklewire.v${version}`
}

/**
 * The version a handshake selected: 3 for picklewire.v3, 2 for picklewire.v2, else 1
 * (picklewire.v1, or no subprotocol at all: a server may accept clients that offer none, and
 * they speak version 1).
 */
export function versionOfSubprotocol(protocol: string | undefined): number {
  return protocol === subprotocolOf(3) ? 3 : protocol === subprotocolOf(2) ? 2 : 1
}

/**
 * Version 3 senders split a buffer larger than this into frames of at most this many bytes.
 * 1 MiB: in bench/ws.mjs (one 256 MiB buffer, Node to Node, chunks of 256 KiB to 16 MiB against
 * version 2's one frame) and a focused run of 128 MiB, 1 MiB and 4 MiB were the fastest, within
 * the machine's noise of each other, and every chunk size beat one frame; of the two, 1 MiB
 * moves a progress bar and stops a cancelled send four times sooner.
 */
export const DEFAULT_CHUNK_BYTES = 2 ** 20

/** A version 3 cancel frame: a text frame `cancel <id>` (docs/wire-protocol.md section 8). */
export function cancelFrame(id: number): string {
  return `cancel ${id}`
}

/** A version 3 refuse frame: a text frame `refuse <id>`, the receiver's word that it dropped message id. */
export function refuseFrame(id: number): string {
  return `refuse ${id}`
}

/**
 * A version 3 text frame: `cancel <id>` (the sender abandons a message it is sending) or
 * `refuse <id>` (the receiver dropped a message the other side is sending). TransportError
 * PROTOCOL when the text frame is neither.
 */
export function parseControlFrame(text: string): { kind: 'cancel' | 'refuse'; id: number } {
  const m = /^(cancel|refuse) (0|[1-9][0-9]{0,15})$/.exec(text)
  const id = m === null ? NaN : Number(m[2])
  if (!Number.isSafeInteger(id)) throw new TransportError('PROTOCOL', `a text frame that is not a cancel or refuse frame (${shown(text.slice(0, 40))}); picklewire sends binary frames and \`cancel <id>\` / \`refuse <id>\` text frames only`)
  return { kind: m![1] as 'cancel' | 'refuse', id }
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

/**
 * A header's memory: on Node a Buffer from its pool (small allocations are cheaper there), in a
 * browser a Uint8Array. Every byte is written, so neither needs zeroing.
 */
const allocate: (size: number) => Uint8Array = typeof globalThis.Buffer === 'function'
  ? (size) => globalThis.Buffer.allocUnsafe(size)
  : (size) => new Uint8Array(size)

/** Writes one header into its buffer, sized beforehand. */
class HeaderWriter {
  at = 0
  constructor(readonly out: Uint8Array) {}

  u16(n: number): void {
    const b = this.out
    b[this.at++] = n >>> 8
    b[this.at++] = n & 0xff
  }

  u32(n: number): void {
    const b = this.out
    b[this.at++] = n >>> 24
    b[this.at++] = (n >>> 16) & 0xff
    b[this.at++] = (n >>> 8) & 0xff
    b[this.at++] = n & 0xff
  }

  byte(b: number): void {
    this.out[this.at++] = b
  }

  uint(n: number): void {
    const b = this.out
    if (n < 0x80) b[this.at++] = n
    else if (n < 0x100) {
      b[this.at++] = 0xcc
      b[this.at++] = n
    } else if (n < 0x10000) {
      b[this.at++] = 0xcd
      b[this.at++] = n >>> 8
      b[this.at++] = n & 0xff
    } else if (n <= 0xffffffff) {
      b[this.at++] = 0xce
      this.u32(n)
    } else {
      b[this.at++] = 0xcf
      this.u32(Math.floor(n / 0x100000000))
      this.u32(n >>> 0)
    }
  }

  /** A short ASCII string (fixstr): a key, or the kind. */
  key(s: string): void {
    const b = this.out
    b[this.at++] = 0xa0 | s.length
    for (let i = 0; i < s.length; i++) b[this.at++] = s.charCodeAt(i)
  }

  array(n: number): void {
    const b = this.out
    if (n < 16) b[this.at++] = 0x90 | n
    else if (n < 0x10000) {
      b[this.at++] = 0xdc
      this.u16(n)
    } else {
      b[this.at++] = 0xdd
      this.u32(n)
    }
  }

  bin(src: Uint8Array): void {
    const b = this.out
    const n = src.byteLength
    if (n < 0x100) {
      b[this.at++] = 0xc4
      b[this.at++] = n
    } else if (n < 0x10000) {
      b[this.at++] = 0xc5
      b[this.at++] = n >>> 8
      b[this.at++] = n & 0xff
    } else {
      b[this.at++] = 0xc6
      this.u32(n)
    }
    this.raw(src)
  }

  raw(src: Uint8Array): void {
    this.out.set(src, this.at)
    this.at += src.byteLength
  }
}

/**
 * The header frame's bytes: a msgpack map of v, id, k, p (and b, ro when there are buffers; re,
 * x and pk when given). `k` must be one of the kinds (short ASCII); `x` is packed by msgpackr.
 */
export function encodeWireHeader(h: WireHeader): Uint8Array {
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
  const buf = allocate(size)
  const w = new HeaderWriter(buf)
  w.byte(0x80 | entries)
  w.key('v')
  w.uint(h.v)
  w.key('id')
  w.uint(h.id)
  w.key('k')
  w.key(h.k)
  w.key('p')
  w.uint(h.p)
  if (nb > 0) {
    w.key('b')
    w.array(nb)
    for (let i = 0; i < nb; i++) w.uint(h.b[i]!)
    w.key('ro')
    w.array(nb)
    for (let i = 0; i < nb; i++) w.byte(h.ro[i] ? 0xc3 : 0xc2)
  }
  if (h.re !== undefined) {
    w.key('re')
    w.uint(h.re)
  }
  if (x !== null) {
    w.key('x')
    w.raw(x)
  }
  if (h.pk !== undefined) {
    w.key('pk')
    w.bin(h.pk)
  }
  return buf
}

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

/** One frame's quick read: the frame and the position in it. */
class QuickReader {
  pos = 1
  constructor(readonly f: Uint8Array) {}

  string(len: number): string | typeof FAIL {
    const f = this.f
    if (this.pos + len > f.length) return FAIL
    let out = ''
    for (let i = 0; i < len; i++) {
      const c = f[this.pos + i]!
      if (c >= 0x80) return FAIL
      out += String.fromCharCode(c)
    }
    this.pos += len
    return out
  }

  array(len: number, depth: number): unknown[] | typeof FAIL {
    if (len > this.f.length - this.pos) return FAIL // every item takes at least a byte
    const out: unknown[] = []
    for (let i = 0; i < len; i++) {
      const v = this.value(depth)
      if (v === FAIL) return FAIL
      out.push(v)
    }
    return out
  }

  map(len: number, depth: number): Map<string, unknown> | typeof FAIL {
    const f = this.f
    if (len * 2 > f.length - this.pos) return FAIL
    const out = new Map<string, unknown>()
    for (let i = 0; i < len; i++) {
      if (this.pos >= f.length) return FAIL
      const t = f[this.pos]!
      if ((t & 0xe0) !== 0xa0) return FAIL // keys: fixstr only
      this.pos++
      const key = this.string(t & 0x1f)
      if (key === FAIL) return FAIL
      const v = this.value(depth)
      if (v === FAIL) return FAIL
      out.set(key, v)
    }
    return out
  }

  bin(len: number): Uint8Array | typeof FAIL {
    if (this.pos + len > this.f.length) return FAIL
    const v = this.f.subarray(this.pos, this.pos + len)
    this.pos += len
    return v
  }

  u16(): number {
    const v = (this.f[this.pos]! << 8) | this.f[this.pos + 1]!
    this.pos += 2
    return v
  }

  u32(): number {
    const f = this.f
    const p = this.pos
    this.pos += 4
    return f[p]! * 0x1000000 + ((f[p + 1]! << 16) | (f[p + 2]! << 8) | f[p + 3]!)
  }

  value(depth: number): unknown {
    const f = this.f
    if (this.pos >= f.length || depth > 8) return FAIL
    const t = f[this.pos++]!
    if (t < 0x80) return t
    if (t >= 0xe0) return t - 0x100
    if (t < 0x90) return this.map(t & 0x0f, depth + 1)
    if (t < 0xa0) return this.array(t & 0x0f, depth + 1)
    if (t < 0xc0) return this.string(t & 0x1f)
    const left = f.length - this.pos
    switch (t) {
      case 0xc0: return null
      case 0xc2: return false
      case 0xc3: return true
      case 0xcc: return left < 1 ? FAIL : f[this.pos++]!
      case 0xcd: return left < 2 ? FAIL : this.u16()
      case 0xce: return left < 4 ? FAIL : this.u32()
      case 0xc4: return left < 1 ? FAIL : this.bin(f[this.pos++]!)
      case 0xc5: return left < 2 ? FAIL : this.bin(this.u16())
      case 0xc6: return left < 4 ? FAIL : this.bin(this.u32())
      case 0xd9: return left < 1 ? FAIL : this.string(f[this.pos++]!)
      case 0xdc: return left < 2 ? FAIL : this.array(this.u16(), depth + 1)
      default: return FAIL // wider integers, floats, str16/32, ext, ...: msgpackr's
    }
  }
}

/** The header frame as a Map, quickly when it is made of the common forms, else null (exported for the tests). */
export function quickUnpack(frame: Uint8Array): Map<string, unknown> | null {
  if (frame.length === 0 || (frame[0]! & 0xf0) !== 0x80) return null
  const r = new QuickReader(frame)
  const m = r.map(frame[0]! & 0x0f, 1)
  return m !== FAIL && r.pos === frame.length ? m : null
}

function bad(why: string): never {
  throw new TransportError('PROTOCOL', `bad message header: ${why}`)
}

/**
 * Header fields that must be msgpack integers (an integral float such as 5.0 is refused, as
 * Python's peer refuses it): msgpackr decodes 5.0 as 5, so checkPlainMsgpack checks their
 * encodings in the frame, in its one walk. The quick reader never accepts a float, so only its
 * fallback needs this.
 */
const INTEGER_FIELDS: IntegerFields = { values: new Set(['v', 'id', 'p', 're']), arrays: new Set(['b']) }

function uint(v: unknown, what: string): number {
  if (typeof v === 'bigint' && v >= 0n && v <= BigInt(Number.MAX_SAFE_INTEGER)) return Number(v)
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) bad(`${what} must be an unsigned integer, got ${shown(v)}`)
  return v
}

/** A decoded header's `v`, once it is known to be a map. */
function headerVersion(raw: unknown): number {
  if (!(raw instanceof Map)) bad('not a map')
  return uint(raw.get('v'), 'v')
}

/**
 * The checks of every header field but `v` (already checked) and `pk`, in the order
 * docs/wire-protocol.md lists them; `p` and `b` are checked against the limits. `before` runs
 * after the lengths are read and before the limits are applied (the checks of `pk`).
 */
function headerFields(raw: Map<unknown, unknown>, v: number, limits: Limits, before: (p: number) => void): MessageHeader {
  const k = raw.get('k') ?? 'msg'
  if (typeof k !== 'string' || k.length > 32) bad('k must be a short string')
  const lens = raw.get('b') ?? []
  const ro = raw.get('ro') ?? []
  if (!Array.isArray(lens) || !Array.isArray(ro)) bad('b and ro must be arrays')
  if (lens.length > limits.maxBuffers) throw new TransportError('LIMIT', `${lens.length} buffers is over maxBuffers (${limits.maxBuffers})`)
  if (ro.length !== lens.length) bad(`${lens.length} buffer lengths but ${ro.length} read-only flags`)
  const b = lens.length === 0 ? [] : lens.map((n, i) => uint(n, `b[${i}]`))
  const flags = ro.length === 0 ? [] : ro.map((f, i) => (typeof f === 'boolean' ? f : bad(`ro[${i}] must be a boolean`)))
  const p = uint(raw.get('p'), 'p')
  before(p)
  checkLengths(p, b, limits)
  const h: MessageHeader = { v, id: uint(raw.get('id'), 'id'), k, p, b, ro: flags }
  const re = raw.get('re')
  if (re !== undefined && re !== null) h.re = uint(re, 're')
  const x = raw.get('x')
  if (x !== undefined && x !== null) {
    if (!(x instanceof Map)) bad('x must be a map')
    const ext: Record<string, unknown> = Object.create(null)
    for (const [key, val] of x) {
      if (typeof key !== 'string') bad('x keys must be strings')
      ext[key] = val
    }
    h.x = ext
  }
  return h
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
    checkPlainMsgpack(frame, 'bad message header', undefined, INTEGER_FIELDS)
    try {
      raw = unpackr.unpack(frame)
    } catch (err) {
      bad(`not msgpack (${err instanceof Error ? err.message : String(err)})`)
    }
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
