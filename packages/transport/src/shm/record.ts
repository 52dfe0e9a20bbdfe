/**
 * A message's record: what travels through the record ring (or a MessagePort, or piscina)
 * while its buffers stay in the arena. A small binary prefix names the blocks whose ownership
 * passes with the message, so that a receiver takes them under the lock without parsing
 * msgpack; then comes the message header of DESIGN.md (msgpack) and the pickle.
 *
 *   u8  kind         1: a message; 2: a message whose record is itself in an arena block
 *   u8  flags        FLAG_TRANSFERS: ArrayBuffers were transferred alongside, on the channel's port
 *   u16 block count  n
 *   i32 from         the owner the blocks pass from: QUEUED(pipe) or the sender's id
 *   i32 sender       the sender's id (blocks not yet queued are still the sender's)
 *   n x (i32 arena, i32 unit, i32 ticket)
 *   u32 header length, the header, then the pickle           (kind 1)
 *   u32 record length                                         (kind 2: the single block holds a kind-1 record)
 *
 * The header's x.at says where each out-of-band buffer is, two integers per buffer: a block
 * index and the byte offset in its payload; or TRANSFERRED - k and the byte offset in the k-th
 * transferred ArrayBuffer; or EMPTY for a buffer of no bytes.
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
}

const PREFIX = 12
const BLOCK = 12

export function recordPrefixBytes(blocks: number): number {
  return PREFIX + blocks * BLOCK
}

/** Writes the prefix into `out` (sized by recordPrefixBytes). */
export function writePrefix(out: Uint8Array, p: Omit<RecordPrefix, 'bodyOffset'>): void {
  const blocks = p.blocks
  if (blocks.length > 0xffff) throw new TransportError('LIMIT', `${blocks.length} arena blocks in one message is over 65,535`)
  const dv = new DataView(out.buffer, out.byteOffset, out.byteLength)
  dv.setUint8(0, p.kind)
  dv.setUint8(1, p.flags)
  dv.setUint16(2, blocks.length, true)
  dv.setInt32(4, p.from, true)
  dv.setInt32(8, p.sender, true)
  let o = PREFIX
  for (const b of blocks) {
    dv.setInt32(o, b.arena, true)
    dv.setInt32(o + 4, b.unit, true)
    dv.setInt32(o + 8, b.ticket, true)
    o += BLOCK
  }
}

export function readPrefix(record: Uint8Array): RecordPrefix {
  if (record.length < PREFIX) throw new TransportError('PROTOCOL', `a record of ${record.length} bytes is shorter than its prefix`)
  const dv = new DataView(record.buffer, record.byteOffset, record.byteLength)
  const kind = dv.getUint8(0)
  if (kind !== KIND_MESSAGE && kind !== KIND_IN_BLOCK) throw new TransportError('PROTOCOL', `unknown record kind ${kind}`)
  const n = dv.getUint16(2, true)
  const bodyOffset = PREFIX + n * BLOCK
  if (record.length < bodyOffset + 4) throw new TransportError('PROTOCOL', `a record of ${record.length} bytes is too short for ${n} blocks`)
  const blocks: RecordBlock[] = new Array(n)
  for (let k = 0, o = PREFIX; k < n; k++, o += BLOCK) {
    blocks[k] = { arena: dv.getInt32(o, true), unit: dv.getInt32(o + 4, true), ticket: dv.getInt32(o + 8, true) }
  }
  if (kind === KIND_IN_BLOCK && n !== 1) throw new TransportError('PROTOCOL', `a record in a block must name one block, not ${n}`)
  return { kind, flags: dv.getUint8(1), from: dv.getInt32(4, true), sender: dv.getInt32(8, true), blocks, bodyOffset }
}

/** The u32 at `offset`: the header length (kind 1) or the record length (kind 2). */
export function readU32(record: Uint8Array, offset: number): number {
  return new DataView(record.buffer, record.byteOffset, record.byteLength).getUint32(offset, true)
}

export function u32(n: number): Uint8Array {
  const b = new Uint8Array(4)
  new DataView(b.buffer).setUint32(0, n, true)
  return b
}
