/**
 * The WebSocket carrier's fixed vocabulary: the subprotocol name, the message kinds, the
 * header extras it defines and the close codes it sends. docs/wire-protocol.md is the spec
 * these values come from; a change here is a change of that document.
 */
import { TransportError, type TransportErrorCode } from '../errors.js'

/**
 * Version 1's subprotocol. Clients offer picklewire.v3 and picklewire.v2 first, then this; servers select the
 * newest offered (see wire.ts).
 */
export const SUBPROTOCOL = 'picklewire.v1'

/** Message kinds (the header's `k`). */
export const KIND = Object.freeze({
  /** A value for the receiver's message stream. */
  message: 'msg',
  /** A value the sender waits an answer for. */
  request: 'req',
  /** The answer to a request; `re` names it. */
  reply: 'rep',
  /** A request failed; `re` names it and the pickle is {'type': str, 'message': str}. */
  error: 'err',
})
export type Kind = (typeof KIND)[keyof typeof KIND]
export const KINDS: ReadonlySet<string> = new Set(Object.values(KIND))

/** Header extras (the header's `x`) this carrier defines. */
export const EXTRA = Object.freeze({
  /** Each buffer's alignment in bytes (1, 2, 4 or 8); absent means 1 for all. */
  alignment: 'al',
  /** The message authentication scheme; a MAC frame follows the buffers. */
  auth: 'auth',
  /** Version 3, same host: each buffer's place in a file of the sender ([path, offset]) or nil (frames). */
  sameHost: 'sm',
})
export const AUTH_SCHEME = 'hmac-sha256'
export const ALIGNMENTS: ReadonlySet<number> = new Set([1, 2, 4, 8])

/** Close codes sent when this side fails a connection (application range 4000-4999). */
export const CLOSE = Object.freeze({
  normal: 1000,
  goingAway: 1001,
  /** ws's own: a frame over maxPayload. */
  tooBig: 1009,
  protocol: 4400,
  auth: 4401,
  timeout: 4408,
  limit: 4413,
  version: 4426,
})

/** Close codes that end a connection cleanly: nothing was lost. 1005: a close frame without a code. */
export const CLEAN_CLOSE_CODES: ReadonlySet<number> = new Set([1000, 1001, 1005])

/** The close code this side sends when it fails the connection with `err`. */
export function closeCodeFor(err: TransportError, versionMismatch = false): number {
  switch (err.code) {
    case 'PROTOCOL': return versionMismatch ? CLOSE.version : CLOSE.protocol
    case 'AUTH': return CLOSE.auth
    case 'LIMIT': return CLOSE.limit
    case 'TIMEOUT': return CLOSE.timeout
    default: return 1011
  }
}

const CODE_BY_CLOSE: ReadonlyMap<number, TransportErrorCode> = new Map([
  [CLOSE.protocol, 'PROTOCOL'], [CLOSE.version, 'PROTOCOL'], [1002, 'PROTOCOL'], [1003, 'PROTOCOL'], [1007, 'PROTOCOL'],
  [CLOSE.auth, 'AUTH'],
  [CLOSE.limit, 'LIMIT'], [CLOSE.tooBig, 'LIMIT'],
  [CLOSE.timeout, 'TIMEOUT'],
])

/** The error a receiver reports when the peer closed with `code`: what the peer refused. */
export function errorForCloseCode(code: number, reason: string): TransportError {
  // 1006 is never sent: ws reports it when the TCP connection ended without a close frame.
  if (code === 1006) return new TransportError('CLOSED', 'the connection was cut without a close handshake (1006): the peer process died, the network failed, or the socket was destroyed')
  const what = reason ? `${code} (${reason})` : String(code)
  return new TransportError(CODE_BY_CLOSE.get(code) ?? 'CLOSED', `the peer closed the connection with ${what}`)
}

/** A close reason must fit a control frame: at most 123 bytes of UTF-8. */
export function closeReason(text: string): string {
  const bytes = new TextEncoder().encode(text)
  if (bytes.length <= 123) return text
  let end = 120
  while (end > 0 && (bytes[end]! & 0xc0) === 0x80) end--
  return `${new TextDecoder().decode(bytes.subarray(0, end))}...`
}
