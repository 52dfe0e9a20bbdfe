/**
 * The options of a picklewire WebSocket, each with its default, validated in one place.
 * ws's own options (TLS, handshake timeout, ...) pass through untouched under `ws`.
 */
import type { UnpicklerOptions } from '@picklewire/codec'
import { resolveLimits, type Limits } from '../limits.js'
import { checkOptions, checkPicklerOptions, checkUnpicklerOptions, optionNames } from '../options-check.js'
import type { EncodeOptions } from '../message.js'
import { DEFAULT_RECYCLE_BYTES } from './recycle.js'
import { DEFAULT_CHUNK_BYTES, LATEST_VERSION, MAX_HEADER_BYTES, PROTOCOL_VERSIONS, subprotocolOf } from './wire.js'

/** What a request handler gets besides the value. */
export interface RequestInfo {
  /** The request's message id. */
  id: number
  /** The header's extras the sender's application set, if any (picklewire's own, al and auth, left out). */
  x?: Record<string, unknown>
}

/** Answers a request: the value returned (or resolved) is the reply; a throw becomes an 'err' reply. */
export type RequestHandler = (value: unknown, info: RequestInfo) => unknown

export interface PickleSocketOptions {
  /**
   * Limits on incoming messages, checked from the header before anything is allocated.
   * Default: DEFAULT_LIMITS (1 GiB per message and per buffer, 1,024 buffers, 64 MiB of pickle).
   * ws's maxPayload is set to the largest frame they allow, so ws refuses a bigger frame
   * (close code 1009) before it buffers it.
   */
  limits?: Partial<Limits>
  /**
   * Shared key for HMAC-SHA256 over every frame of every message, both ways. Both sides need
   * the same key; a message that fails is never delivered and the connection is closed with
   * 4401. A string is taken as UTF-8. Default: none (messages are not authenticated).
   */
  key?: Uint8Array | string
  /**
   * send() waits while more than this many bytes of earlier messages are buffered and not yet
   * written to the socket. Default 8 MiB.
   */
  highWaterMark?: number
  /**
   * Reading pauses while messages received but not yet taken by receive() or iteration hold
   * more than this many bytes (TCP then makes the sender wait). Messages handed to 'message'
   * listeners are not queued. Default 64 MiB.
   */
  receiveHighWaterMark?: number
  /** Milliseconds between pings; 0 turns heartbeats off. Default 20,000 (websockets' default). */
  heartbeatInterval?: number
  /**
   * Milliseconds to wait after a ping for the pong (or any frame) before the connection is
   * declared dead: TransportError('TIMEOUT'), close code 4408. Default 20,000.
   */
  heartbeatTimeout?: number
  /** Default timeout of request() in milliseconds; 0 waits as long as the connection lives. Default 0. */
  requestTimeout?: number
  /** Answers the peer's requests. Default: none (requests get an 'err' reply). */
  onRequest?: RequestHandler
  /**
   * The most requests of the peer answered at a time: from a request's arrival until its reply
   * is handed to ws (a reply waiting for highWaterMark counts). Later requests wait in order,
   * and reading pauses while any wait, so that a peer that never reads its replies makes this
   * side hold at most this many replies beyond highWaterMark. Default 64.
   */
  maxConcurrentRequests?: number
  /** How received values are unpickled (opaque, registry, dict, ...). Default: the codec's defaults. */
  unpickler?: Omit<UnpicklerOptions, 'buffers'>
  /** How sent values are pickled, and which buffers go out of band. Default: encodeValue's defaults. */
  pickler?: EncodeOptions
  /**
   * The newest protocol version to offer (client) or select (server) in the handshake: 3
   * (picklewire.v3, buffers in chunks, cancel frames), 2 (picklewire.v2, small pickles inside
   * the header frame) or 1 (picklewire.v1). Default 3; a peer that speaks only an older
   * version gets that version either way. A PickleSocket you make yourself speaks the version
   * its ws socket's handshake selected.
   */
  protocolVersion?: number
  /**
   * Version 3: an out-of-band buffer larger than this many bytes is sent as several frames of
   * at most this size, so that any size the receiver's limits allow can travel, progress moves
   * per chunk and a send can be cancelled between chunks. Default 1 MiB (DEFAULT_CHUNK_BYTES).
   */
  chunkBytes?: number
  /**
   * Version 3: when the peer proves it runs on this host (it can read this user's files), out-of-band
   * buffers of at least sameHostMinBytes travel through files under /dev/shm that have no name,
   * and the WebSocket carries only their place (docs/websocket.md, "Same host"). Both ways, each
   * direction proven on its own; buffers go as frames whenever a peer cannot prove it or turned
   * it off. Linux only (elsewhere it is off). Default true.
   */
  sameHost?: boolean
  /** Out-of-band buffers of at least this many bytes take the same-host path. Default 1 MiB (DEFAULT_SAME_HOST_MIN_BYTES). */
  sameHostMinBytes?: number
  /**
   * The most bytes of memory handed back with recycle() that the socket keeps for reuse; beyond
   * it, the oldest are dropped. 0 keeps none. Default 256 MiB (DEFAULT_RECYCLE_BYTES).
   */
  recycleBytes?: number
}

export interface ResolvedOptions {
  limits: Limits
  key: Uint8Array | null
  highWaterMark: number
  receiveHighWaterMark: number
  heartbeatInterval: number
  heartbeatTimeout: number
  requestTimeout: number
  onRequest: RequestHandler | null
  maxConcurrentRequests: number
  unpickler: Omit<UnpicklerOptions, 'buffers'>
  pickler: EncodeOptions
  protocolVersion: number
  chunkBytes: number
  sameHost: boolean
  sameHostMinBytes: number
  recycleBytes: number
}

export { DEFAULT_CHUNK_BYTES }
export const DEFAULT_HIGH_WATER_MARK = 8 * 2 ** 20
export const DEFAULT_RECEIVE_HIGH_WATER_MARK = 64 * 2 ** 20
export const DEFAULT_HEARTBEAT_INTERVAL = 20_000
export const DEFAULT_HEARTBEAT_TIMEOUT = 20_000
export const DEFAULT_MAX_CONCURRENT_REQUESTS = 64
export const DEFAULT_SAME_HOST_MIN_BYTES = 2 ** 20
export { DEFAULT_RECYCLE_BYTES }

/** The largest header a receiver accepts. */
export { MAX_HEADER_BYTES }

function count(name: string, value: number | undefined, fallback: number, min: number): number {
  const v = value ?? fallback
  if (!Number.isSafeInteger(v) || v < min) throw new TypeError(`option ${name} must be an integer of at least ${min}, got ${String(value)}`)
  return v
}

function flag(name: string, value: boolean | undefined, fallback: boolean): boolean {
  if (value === undefined) return fallback
  if (typeof value !== 'boolean') throw new TypeError(`option ${name} must be a boolean, got ${String(value)}`)
  return value
}

function protocolVersion(v: number | undefined): number {
  if (v === undefined) return LATEST_VERSION
  if (!PROTOCOL_VERSIONS.includes(v)) throw new TypeError(`option protocolVersion must be one of ${PROTOCOL_VERSIONS.join(', ')}, got ${String(v)}`)
  return v
}

/** The subprotocols a client offers, newest first, up to `version`. */
export function offeredSubprotocols(version: number): string[] {
  return PROTOCOL_VERSIONS.filter((v) => v <= version).map(subprotocolOf)
}

/** What a server selects from the subprotocols a client offers: the newest it speaks up to `version`, or none. */
export function selectSubprotocol(offered: ReadonlySet<string>, version: number): string | false {
  for (const name of offeredSubprotocols(version)) if (offered.has(name)) return name
  return false
}

/** The names PickleSocketOptions takes; connect and listen add their own to these. */
export const PICKLE_SOCKET_OPTION_NAMES: readonly string[] = [
  'limits', 'key', 'highWaterMark', 'receiveHighWaterMark', 'heartbeatInterval', 'heartbeatTimeout', 'requestTimeout',
  'onRequest', 'maxConcurrentRequests', 'unpickler', 'pickler', 'protocolVersion', 'chunkBytes',
  'sameHost', 'sameHostMinBytes', 'recycleBytes',
]
const PICKLE_SOCKET_OPTIONS = optionNames(...PICKLE_SOCKET_OPTION_NAMES)

/** Checks and resolves the options; `what` names the caller in error messages. */
export function resolveOptions(o: PickleSocketOptions = {}, what = 'PickleSocket'): ResolvedOptions {
  checkOptions(what, o, PICKLE_SOCKET_OPTIONS)
  checkPicklerOptions(what, 'pickler', o.pickler, true)
  checkUnpicklerOptions(what, 'unpickler', o.unpickler)
  let key: Uint8Array | null = null
  if (o.key !== undefined) {
    key = typeof o.key === 'string' ? new TextEncoder().encode(o.key) : o.key
    if (!(key instanceof Uint8Array) || key.length === 0) throw new TypeError('option key must be a non-empty Uint8Array or string')
  }
  if (o.onRequest !== undefined && typeof o.onRequest !== 'function') throw new TypeError('option onRequest must be a function')
  return {
    limits: resolveLimits(o.limits),
    key,
    highWaterMark: count('highWaterMark', o.highWaterMark, DEFAULT_HIGH_WATER_MARK, 0),
    receiveHighWaterMark: count('receiveHighWaterMark', o.receiveHighWaterMark, DEFAULT_RECEIVE_HIGH_WATER_MARK, 0),
    heartbeatInterval: count('heartbeatInterval', o.heartbeatInterval, DEFAULT_HEARTBEAT_INTERVAL, 0),
    heartbeatTimeout: count('heartbeatTimeout', o.heartbeatTimeout, DEFAULT_HEARTBEAT_TIMEOUT, 1),
    requestTimeout: count('requestTimeout', o.requestTimeout, 0, 0),
    onRequest: o.onRequest ?? null,
    maxConcurrentRequests: count('maxConcurrentRequests', o.maxConcurrentRequests, DEFAULT_MAX_CONCURRENT_REQUESTS, 1),
    unpickler: o.unpickler ?? {},
    pickler: o.pickler ?? {},
    protocolVersion: protocolVersion(o.protocolVersion),
    chunkBytes: count('chunkBytes', o.chunkBytes, DEFAULT_CHUNK_BYTES, 1),
    sameHost: flag('sameHost', o.sameHost, true),
    sameHostMinBytes: count('sameHostMinBytes', o.sameHostMinBytes, DEFAULT_SAME_HOST_MIN_BYTES, 1),
    recycleBytes: count('recycleBytes', o.recycleBytes, DEFAULT_RECYCLE_BYTES, 0),
  }
}

/** ws's maxPayload for these limits: the largest frame any of them allows. */
export function maxPayloadFor(limits: Limits): number {
  return Math.max(MAX_HEADER_BYTES, Math.min(limits.maxMessageBytes, Math.max(limits.maxPickleBytes, limits.maxBufferBytes)))
}
