/**
 * A message's record: what travels through the record ring (or a MessagePort, or piscina)
 * while its buffers stay in the arena. It is a fixed binary layout, little-endian, read and
 * written in place with a DataView: a prefix naming the blocks whose ownership passes with the
 * message (so that a receiver takes them under the lock), the message's header, then the
 * pickle. Records never leave the process (every thread runs this same code), so the header is
 * not the msgpack header of the byte-stream carriers: its fields are the same (id, pickle
 * length, each buffer's length and read-only flag, where each buffer is), in fixed places.
 *
 *   u8  kind         1: a message; 2: a message whose record is itself in an arena block
 *   u8  flags        FLAG_TRANSFERS: ArrayBuffers were transferred alongside, on the channel's port
 *   u16 block count  n
 *   i32 from         the owner the blocks pass from: QUEUED(pipe) or the sender's id
 *   i32 sender       the sender's id (blocks not yet queued are still the sender's)
 *   n x (i32 arena, i32 unit, i32 ticket)
 *   kind 1, the header then the pickle:
 *     f64 id           the sender's message id
 *     u32 pickle length
 *     u32 buffer count m
 *     m x (f64 length, i32 at, u32 read-only (0 or 1), f64 offset)
 *     the pickle
 *   kind 2:
 *     u32 record length (the single block holds a kind-1 record)
 *
 * A buffer's `at` and offset say where it is: a block index and the byte offset in its
 * payload; or TRANSFERRED - k and the byte offset in the k-th transferred ArrayBuffer; or
 * EMPTY for a buffer of no bytes.
 */
import { TransportError } from '../errors.js'

export const KIND_MESSAGE = 1
export const KIND_IN_BLOCK = 2
/** x.at block index of an empty buffer. */
export const EMPTY = -0x40000000
/** x.at block index of the k-th transferred ArrayBuffer: TRANSFERRED - k. */
export const TRANSFERRED = -1

export interface RecordBlock {
  arena: number
  unit: number
  ticket: number
}

export const FLAG_TRANSFERS = 1

export interface RecordPrefix {
  kind: number
  flags: number
  from: number
  sender: number
  blocks: RecordBlock[]
  /** Where the header (kind 1) or the record length (kind 2) starts. */
  bodyOffset: number
  /** A DataView of the record it was read from. */
  dv: DataView
}

const PREFIX = 12
const BLOCK = 12

export function recordPrefixBytes(blocks: number): number {
  return PREFIX + blocks * BLOCK
}

/** Writes the prefix at `at` of `dv` (recordPrefixBytes long); returns where the body starts. */
export function writePrefix(dv: DataView, at: number, kind: number, flags: number, from: number, sender: number, blocks: readonly RecordBlock[]): number {
  if (blocks.length > 0xffff) throw new TransportError('LIMIT', `${blocks.length} arena blocks in one message is over 65,535`)
  dv.setUint8(at, kind)
  dv.setUint8(at + 1, flags)
  dv.setUint16(at + 2, blocks.length, true)
  dv.setInt32(at + 4, from, true)
  dv.setInt32(at + 8, sender, true)
  let o = at + PREFIX
  for (let k = 0; k < blocks.length; k++) {
    const b = blocks[k]!
    dv.setInt32(o, b.arena, true)
    dv.setInt32(o + 4, b.unit, true)
    dv.setInt32(o + 8, b.ticket, true)
    o += BLOCK
  }
  return o
}

/** Bytes of a kind-1 header for m buffers. */
export function headerBytes(buffers: number): number {
  return HEADER + buffers * BUFFER
}

const HEADER = 16
const BUFFER = 24

/** What a kind-1 record's header says. */
export interface RecordHeader {
  id: number
  /** Where the pickle starts in the record, and its length. */
  pickleOffset: number
  pickleLength: number
  lengths: number[]
  readonly: boolean[]
  /** Per buffer: a block index, TRANSFERRED - k or EMPTY; and the byte offset there. */
  at: number[]
  offsets: number[]
}

/**
 * Writes a kind-1 header at `at` of `dv`: the message id, the pickle's length and, per buffer,
 * its length, read-only flag and place (`places` holds two numbers a buffer: at, offset).
 * Returns where the pickle goes.
 */
export function writeHeader(dv: DataView, at: number, id: number, pickleLength: number, lengths: readonly number[], readonly: readonly boolean[], places: readonly number[]): number {
  dv.setFloat64(at, id, true)
  dv.setUint32(at + 8, pickleLength, true)
  const m = lengths.length
  dv.setUint32(at + 12, m, true)
  let o = at + HEADER
  for (let i = 0; i < m; i++) {
    dv.setFloat64(o, lengths[i]!, true)
    dv.setInt32(o + 8, places[2 * i]!, true)
    dv.setUint32(o + 12, readonly[i] ? 1 : 0, true)
    dv.setFloat64(o + 16, places[2 * i + 1]!, true)
    o += BUFFER
  }
  return o
}

/** The message id of a kind-1 record (to match what arrives separately, before the whole header is read). */
export function readId(prefix: RecordPrefix): number {
  if (prefix.dv.byteLength < prefix.bodyOffset + HEADER) throw new TransportError('PROTOCOL', 'a record too short for its header')
  return prefix.dv.getFloat64(prefix.bodyOffset, true)
}

/** Reads and checks a kind-1 record's header (`length` is the record's). */
export function readHeader(prefix: RecordPrefix, length: number): RecordHeader {
  const dv = prefix.dv
  let o = prefix.bodyOffset
  if (length < o + HEADER) throw new TransportError('PROTOCOL', `a record of ${length} bytes is too short for its header`)
  const id = dv.getFloat64(o, true)
  const pickleLength = dv.getUint32(o + 8, true)
  const m = dv.getUint32(o + 12, true)
  o += HEADER
  if (length < o + m * BUFFER) throw new TransportError('PROTOCOL', `a record of ${length} bytes is too short for ${m} buffers`)
  if (!Number.isSafeInteger(id) || id < 0) throw new TransportError('PROTOCOL', `bad message header: id ${id}`)
  const lengths: number[] = new Array(m)
  const ro: boolean[] = new Array(m)
  const at: number[] = new Array(m)
  const offsets: number[] = new Array(m)
  for (let i = 0; i < m; i++, o += BUFFER) {
    const len = dv.getFloat64(o, true)
    const off = dv.getFloat64(o + 16, true)
    const flag = dv.getUint32(o + 12, true)
    if (!Number.isSafeInteger(len) || len < 0 || !Number.isSafeInteger(off) || flag > 1) throw new TransportError('PROTOCOL', `bad message header: buffer ${i}`)
    lengths[i] = len
    at[i] = dv.getInt32(o + 8, true)
    ro[i] = flag === 1
    offsets[i] = off
  }
  if (o + pickleLength !== length) throw new TransportError('PROTOCOL', `the header announces a pickle of ${pickleLength} bytes; the record holds ${length - o}`)
  return { id, pickleOffset: o, pickleLength, lengths, readonly: ro, at, offsets }
}

export function readPrefix(record: Uint8Array): RecordPrefix {
  if (record.length < PREFIX) throw new TransportError('PROTOCOL', `a record of ${record.length} bytes is shorter than its prefix`)
  const dv = new DataView(record.buffer, record.byteOffset, record.byteLength)
  return readPrefixFrom(dv, record.length)
}

/** readPrefix over a DataView of the record (its first `length` bytes). */
export function readPrefixFrom(dv: DataView, length: number): RecordPrefix {
  const kind = dv.getUint8(0)
  if (kind !== KIND_MESSAGE && kind !== KIND_IN_BLOCK) throw new TransportError('PROTOCOL', `unknown record kind ${kind}`)
  const n = dv.getUint16(2, true)
  const bodyOffset = PREFIX + n * BLOCK
  if (length < bodyOffset + 4) throw new TransportError('PROTOCOL', `a record of ${length} bytes is too short for ${n} blocks`)
  const blocks: RecordBlock[] = new Array(n)
  for (let k = 0, o = PREFIX; k < n; k++, o += BLOCK) {
    blocks[k] = { arena: dv.getInt32(o, true), unit: dv.getInt32(o + 4, true), ticket: dv.getInt32(o + 8, true) }
  }
  if (kind === KIND_IN_BLOCK && n !== 1) throw new TransportError('PROTOCOL', `a record in a block must name one block, not ${n}`)
  return { kind, flags: dv.getUint8(1), from: dv.getInt32(4, true), sender: dv.getInt32(8, true), blocks, bodyOffset, dv }
}

/** The u32 at `offset`: the header length (kind 1) or the record length (kind 2). */
export function readU32(record: Uint8Array, offset: number): number {
  return new DataView(record.buffer, record.byteOffset, record.byteLength).getUint32(offset, true)
}

/** A DataView over a whole Uint8Array. */
export function dataView(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
}
