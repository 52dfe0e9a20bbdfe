/**
 * The message header every carrier sends before a message's frames: msgpack (via msgpackr) of
 * a small map. Its lengths let the receiver check limits before it allocates anything.
 *
 *   v   protocol version (PROTOCOL_VERSION)
 *   id  message id: an unsigned integer, increasing per sender
 *   k   kind: 'msg' (default), or a carrier's own kinds ('req', 'rep', 'err', ...)
 *   re  for replies: the id of the request answered
 *   p   the pickle's length in bytes
 *   b   each out-of-band buffer's length in bytes, in order
 *   ro  each buffer's read-only flag, in order
 *   x   optional carrier-specific extras (a map with string keys)
 */
import { Packr, Unpackr } from 'msgpackr'
import { TransportError, shown } from './errors.js'
import { checkPlainMsgpack } from './msgpack-check.js'
import { checkLengths, type Limits } from './limits.js'

export const PROTOCOL_VERSION = 1

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

// Plain msgpack maps, readable by Python's msgpack; maps load as Map so that no key can reach a prototype.
const packr = new Packr({ useRecords: false, variableMapSize: true })
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: false })

export function encodeHeader(h: MessageHeader): Uint8Array {
  const m: Record<string, unknown> = { v: h.v, id: h.id, k: h.k, p: h.p, b: h.b, ro: h.ro }
  if (h.re !== undefined) m.re = h.re
  if (h.x !== undefined) m.x = h.x
  return packr.pack(m)
}

function bad(why: string): never {
  throw new TransportError('PROTOCOL', `bad message header: ${why}`)
}

function uint(v: unknown, what: string): number {
  if (typeof v === 'bigint' && v >= 0n && v <= BigInt(Number.MAX_SAFE_INTEGER)) return Number(v)
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) bad(`${what} must be an unsigned integer, got ${shown(v)}`)
  return v
}

/** Decodes and validates a header; lengths are checked against the limits. */
export function decodeHeader(bytes: Uint8Array, limits: Limits): MessageHeader {
  if (bytes.length > 64 * 1024) bad(`${bytes.length} bytes is too long for a header`)
  checkPlainMsgpack(bytes, 'bad message header')
  let raw: unknown
  try {
    raw = unpackr.unpack(bytes)
  } catch (err) {
    bad(`not msgpack (${err instanceof Error ? err.message : String(err)})`)
  }
  const v = headerVersion(raw)
  if (v !== PROTOCOL_VERSION) throw new TransportError('PROTOCOL', `unsupported protocol version ${v}; this side speaks ${PROTOCOL_VERSION}`)
  return headerFields(raw as Map<unknown, unknown>, v, limits)
}

/** A decoded header's `v`, once it is known to be a map (the first checks of every carrier). */
export function headerVersion(raw: unknown): number {
  if (!(raw instanceof Map)) bad('not a map')
  return uint(raw.get('v'), 'v')
}

/**
 * The checks of every header field but `v` (already checked by the caller) and a carrier's
 * own keys, in the order docs/wire-protocol.md lists them; `p` and `b` are checked against the
 * limits. `before` runs after the lengths are read and before the limits are applied (a
 * carrier's checks that depend on `p`).
 */
export function headerFields(raw: Map<unknown, unknown>, v: number, limits: Limits, before?: (p: number) => void): MessageHeader {
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
  before?.(p)
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
