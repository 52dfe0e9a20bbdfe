/**
 * A check of msgpack from the network before msgpackr decodes it. msgpackr reads its own
 * extension types whatever the options: shared references (0x69/0x70), which let a few
 * hundred bytes describe a tree that doubles at every level; records (0x72), which make
 * objects whose `toString` is data; Set, RegExp, Error, typed arrays, Date, bundled strings.
 * Neither Dask nor picklewire's own headers use any extension, so any is refused here, as is
 * nesting deeper than a limit and a container announcing more items than bytes remain (msgpackr
 * sizes its arrays by that count). Truncated or otherwise invalid input is left to msgpackr,
 * whose error the callers already turn into a TransportError.
 */
import { TransportError } from './errors.js'

/** The deepest msgpack nesting read from a peer: far beyond any real header or Dask message. */
export const MSGPACK_MAX_DEPTH = 256

/** Throws a PROTOCOL TransportError naming `what` if b is not plain msgpack within maxDepth. */
export function checkPlainMsgpack(b: Uint8Array, what: string, maxDepth = MSGPACK_MAX_DEPTH): void {
  const n = b.length
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength)
  // Items still to read in each open container, outermost first; `items` is the innermost's.
  const open: number[] = []
  let items = 1
  let pos = 0
  for (;;) {
    while (items === 0) {
      if (open.length === 0) return
      items = open.pop()!
    }
    if (pos >= n) return // truncated: msgpackr says so
    items--
    const at = pos
    const t = b[pos++]!
    let skip = 0
    let children = 0
    if (t <= 0x7f || t >= 0xe0) {
      // a fixint
    } else if (t <= 0x8f) {
      children = (t & 0x0f) * 2
    } else if (t <= 0x9f) {
      children = t & 0x0f
    } else if (t <= 0xbf) {
      skip = t & 0x1f
    } else {
      switch (t) {
        case 0xc0: case 0xc2: case 0xc3: break
        case 0xcc: case 0xd0: skip = 1; break
        case 0xcd: case 0xd1: skip = 2; break
        case 0xca: case 0xce: case 0xd2: skip = 4; break
        case 0xcb: case 0xcf: case 0xd3: skip = 8; break
        case 0xc4: case 0xd9:
          if (pos + 1 > n) return
          skip = 1 + b[pos]!
          break
        case 0xc5: case 0xda:
          if (pos + 2 > n) return
          skip = 2 + dv.getUint16(pos)
          break
        case 0xc6: case 0xdb:
          if (pos + 4 > n) return
          skip = 4 + dv.getUint32(pos)
          break
        case 0xdc:
          if (pos + 2 > n) return
          children = dv.getUint16(pos)
          pos += 2
          break
        case 0xdd:
          if (pos + 4 > n) return
          children = dv.getUint32(pos)
          pos += 4
          break
        case 0xde:
          if (pos + 2 > n) return
          children = dv.getUint16(pos) * 2
          pos += 2
          break
        case 0xdf:
          if (pos + 4 > n) return
          children = dv.getUint32(pos) * 2
          pos += 4
          break
        default: // 0xc1, ext 8/16/32 (0xc7-0xc9), fixext (0xd4-0xd8)
          throw new TransportError('PROTOCOL', t === 0xc1
            ? `${what}: not msgpack (byte 0xc1 at offset ${at} is never used)`
            : `${what}: msgpack extension (byte 0x${t.toString(16)}) at offset ${at}; only plain msgpack is read from a peer`)
      }
    }
    pos += skip
    if (children > 0) {
      // Every item takes at least one byte.
      if (children > n - pos) {
        throw new TransportError('PROTOCOL', `${what}: a msgpack container at offset ${at} announces ${children} items with ${Math.max(0, n - pos)} bytes left`)
      }
      if (open.length >= maxDepth) throw new TransportError('PROTOCOL', `${what}: msgpack nests deeper than ${maxDepth} levels`)
      open.push(items)
      items = children
    }
  }
}

/** How many bytes the head of the msgpack item at `pos` takes, and how many items it contains (a map's keys and values both count). */
function head(b: Uint8Array, pos: number): { size: number; children: number } {
  const t = b[pos]!
  if (t <= 0x7f || t >= 0xe0) return { size: 1, children: 0 }
  if (t <= 0x8f) return { size: 1, children: (t & 0x0f) * 2 }
  if (t <= 0x9f) return { size: 1, children: t & 0x0f }
  if (t <= 0xbf) return { size: 1 + (t & 0x1f), children: 0 }
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength)
  const u8 = (): number => (pos + 1 < b.length ? b[pos + 1]! : 0)
  const u16 = (): number => (pos + 3 <= b.length ? dv.getUint16(pos + 1) : 0)
  const u32 = (): number => (pos + 5 <= b.length ? dv.getUint32(pos + 1) : 0)
  switch (t) {
    case 0xcc: case 0xd0: return { size: 2, children: 0 }
    case 0xcd: case 0xd1: return { size: 3, children: 0 }
    case 0xca: case 0xce: case 0xd2: return { size: 5, children: 0 }
    case 0xcb: case 0xcf: case 0xd3: return { size: 9, children: 0 }
    case 0xc4: case 0xd9: return { size: 2 + u8(), children: 0 }
    case 0xc5: case 0xda: return { size: 3 + u16(), children: 0 }
    case 0xc6: case 0xdb: return { size: 5 + u32(), children: 0 }
    case 0xdc: return { size: 3, children: u16() }
    case 0xdd: return { size: 5, children: u32() }
    case 0xde: return { size: 3, children: u16() * 2 }
    case 0xdf: return { size: 5, children: u32() * 2 }
    default: return { size: 1, children: 0 } // nil, booleans; extensions were refused by checkPlainMsgpack
  }
}

/** True when the msgpack item at `pos` is encoded as an integer (not a float, even an integral one). */
export function isMsgpackInteger(b: Uint8Array, pos: number): boolean {
  const t = b[pos]
  return t !== undefined && (t <= 0x7f || t >= 0xe0 || (t >= 0xcc && t <= 0xcf) || (t >= 0xd0 && t <= 0xd3))
}

/**
 * Where the msgpack item at `pos` ends, for input checkPlainMsgpack accepted; -1 when it runs
 * past the end (truncated input, which msgpackr reports).
 */
export function msgpackItemEnd(b: Uint8Array, pos: number): number {
  let items = 1
  while (items > 0) {
    if (pos >= b.length) return -1
    const { size, children } = head(b, pos)
    pos += size
    items += children - 1
  }
  return pos > b.length ? -1 : pos
}
