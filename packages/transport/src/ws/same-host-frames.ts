/**
 * The same-host path's vocabulary (docs/wire-protocol.md section 10), free of Node built-ins:
 * the grammar of the `shm-*` text frames, the shape of a buffer's place in a header's `x.sm`,
 * and the hooks through which the receiver and the sender reach the side that opens, reads and
 * writes the files (same-host.ts on Node). A carrier without files (a browser page) uses none
 * of the hooks and answers a challenge with `shm-no` (declineSameHost).
 */
import { TransportError, shown } from '../errors.js'
import type { BufferPart } from '../message.js'
import type { MessageHeader } from './wire.js'

/** How a receiver takes a same-host buffer: reads it into its own memory (copy) or maps the file (map). */
export type ReceiveMode = 'copy' | 'map'

/** A `shm-*` text frame, parsed. */
export type SameHostFrame =
  | { kind: 'challenge'; path: string; pid: number; fd: number; mode: ReceiveMode }
  | { kind: 'proof'; hex: string; pid: number }
  | { kind: 'no' | 'accept' | 'reject' }
  | { kind: 'done' | 'free'; id: number }

/** Where a buffer's bytes are: a file of the sending process, and the byte where they start. */
export interface BufferPlace {
  path: string
  offset: number
}

/** Places in `x.sm` start at multiples of this (a page: Python maps the file from there). */
export const PLACE_ALIGNMENT = 4096

/** The 32 random bytes of a challenge file. */
export const CHALLENGE_BYTES = 32

const DECIMAL = '(0|[1-9][0-9]{0,15})'
const PID = '([1-9][0-9]{0,9})'
const CHALLENGE = new RegExp(`^shm-challenge (/proc/${PID}/fd/${DECIMAL}) (copy|map)$`)
const PROOF = new RegExp(`^shm-proof ([0-9a-f]{64}) ${PID}$`)
const DONE = new RegExp(`^shm-(done|free) ${DECIMAL}$`)
const BARE = /^shm-(no|accept|reject)$/
/** A place's path: a file descriptor of the proven sending process. */
const PLACE_PATH = new RegExp(`^/proc/${PID}/fd/${DECIMAL}$`)

/** True for a text frame of the same-host path (its grammar is then checked by parseSameHostFrame). */
export function isSameHostFrame(text: string): boolean {
  return text.startsWith('shm-')
}

function badFrame(text: string): TransportError {
  return new TransportError('PROTOCOL', `a malformed same-host frame ${shown(text.slice(0, 100))}: expected \`shm-challenge /proc/<pid>/fd/<fd> copy|map\`, \`shm-proof <64 hex digits> <pid>\`, \`shm-no\`, \`shm-accept\`, \`shm-reject\`, \`shm-done <id>\` or \`shm-free <id>\``)
}

/** Parses a `shm-*` text frame; TransportError PROTOCOL naming it when it breaks the grammar. */
export function parseSameHostFrame(text: string): SameHostFrame {
  let m = CHALLENGE.exec(text)
  if (m !== null) {
    const fd = Number(m[3])
    if (!Number.isSafeInteger(fd)) throw badFrame(text)
    return { kind: 'challenge', path: m[1]!, pid: Number(m[2]), fd, mode: m[4] as ReceiveMode }
  }
  m = PROOF.exec(text)
  if (m !== null) return { kind: 'proof', hex: m[1]!, pid: Number(m[2]) }
  m = DONE.exec(text)
  if (m !== null) {
    const id = Number(m[2])
    if (!Number.isSafeInteger(id)) throw badFrame(text)
    return { kind: m[1] as 'done' | 'free', id }
  }
  m = BARE.exec(text)
  if (m !== null) return { kind: m[1] as 'no' | 'accept' | 'reject' }
  throw badFrame(text)
}

export function challengeFrame(path: string, mode: ReceiveMode): string {
  return `shm-challenge ${path} ${mode}`
}

export function proofFrame(hex: string, pid: number): string {
  return `shm-proof ${hex} ${pid}`
}

export function doneFrame(id: number): string {
  return `shm-done ${id}`
}

/**
 * The places header `h` names in `x.sm` (null when it has none), checked as section 10 says:
 * an array as long as `b`, each item nil or [path, offset], path `/proc/<pid>/fd/<fd>` of the
 * proven pid, offset a multiple of 4096, no place for an empty buffer. `provenPid` is null when
 * this side accepted no proof: any `x.sm` is then a protocol error.
 */
export function placesOf(h: MessageHeader, provenPid: number | null): (BufferPlace | null)[] | null {
  const sm = h.x?.sm
  if (sm === undefined || sm === null) return null
  const bad = (why: string): never => {
    throw new TransportError('PROTOCOL', `bad x.sm in message ${h.id}: ${why}`)
  }
  if (provenPid === null) bad('this side accepted no same-host proof from the peer, so no buffer may come through a file')
  if (!Array.isArray(sm) || sm.length !== h.b.length) bad(`it must be an array of ${h.b.length} items (one per buffer), got ${shown(sm)}`)
  const list = sm as unknown[]
  const places: (BufferPlace | null)[] = []
  let any = false
  for (let i = 0; i < list.length; i++) {
    const item = list[i]
    if (item === null || item === undefined) {
      places.push(null)
      continue
    }
    if (!Array.isArray(item) || item.length !== 2) bad(`item ${i} must be nil or [path, offset], got ${shown(item)}`)
    const [path, offset] = item as unknown[]
    const m = typeof path === 'string' ? PLACE_PATH.exec(path) : null
    if (m === null) bad(`buffer ${i}'s path must be /proc/<pid>/fd/<fd>, got ${shown(path)}`)
    if (Number(m![1]) !== provenPid) bad(`buffer ${i}'s path ${path as string} is not in the proven process ${provenPid}`)
    if (typeof offset !== 'number' || !Number.isSafeInteger(offset) || offset < 0 || offset % PLACE_ALIGNMENT !== 0) {
      bad(`buffer ${i}'s offset must be a non-negative multiple of ${PLACE_ALIGNMENT}, got ${shown(offset)}`)
    }
    if (h.b[i] === 0) bad(`buffer ${i} is empty and must come as a frame`)
    places.push({ path: path as string, offset: offset as number })
    any = true
  }
  return any ? places : null
}

/** What the receiver needs of the same-host path (same-host.ts on Node). */
export interface SameHostReader {
  /** The checked places of header h's buffers (x.sm), or null when it names none. Throws TransportError PROTOCOL. */
  places(h: MessageHeader): (BufferPlace | null)[] | null
  /**
   * Reads `size` bytes at `place` into `memory` (an ArrayBuffer of exactly that size) and
   * returns it; `onPiece` sees every piece read, in order (for the MAC and progress). Throws
   * TransportError when the file is gone, not a region, or short. `what` names the buffer for
   * error messages.
   */
  read(place: BufferPlace, size: number, what: string, memory: ArrayBuffer, onPiece: (piece: Uint8Array) => void): ArrayBuffer
  /** Every same-host buffer of message id has been read, or never will be (the message ended). */
  done(id: number): void
  /** A `shm-*` text frame arrived from the peer. Throws TransportError PROTOCOL. */
  control(text: string): void
}

/** What the sender needs of the same-host path (same-host.ts on Node). */
export interface SameHostWriter {
  /**
   * Writes the buffers of message id that go through a file (at least the threshold, once the
   * peer is accepted) and returns x.sm: per buffer [path, offset], or null for a frame. Null
   * when every buffer goes as frames.
   */
  place(id: number, buffers: readonly BufferPart[]): ([string, number] | null)[] | null
  /** Message id will not be sent after all (its header could not be made): its file is free again. */
  unplace(id: number): void
}

/**
 * The receiver's hooks of a side without files (a browser page): it answers a challenge with
 * `shm-no`, refuses every other `shm-*` frame (it never challenges nor proves, so none can be
 * expected) and any header with `x.sm`.
 */
export class NoSameHost implements SameHostReader {
  #challenged = false

  constructor(private readonly send: (text: string) => void) {}

  places(h: MessageHeader): (BufferPlace | null)[] | null {
    return placesOf(h, null)
  }

  read(): ArrayBuffer {
    throw new TransportError('PROTOCOL', 'no buffer can come through a file to this side')
  }

  done(): void {}

  control(text: string): void {
    const f = parseSameHostFrame(text)
    if (f.kind !== 'challenge' || this.#challenged) {
      throw new TransportError('PROTOCOL', `an unexpected same-host frame ${shown(text.slice(0, 100))}: this side takes part in no same-host exchange`)
    }
    this.#challenged = true
    this.send('shm-no')
  }
}
