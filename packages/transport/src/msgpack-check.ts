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

/**
 * Fields of a top-level map whose encodings must be msgpack integers, not floats (msgpackr
 * decodes 5.0 as 5, so only the bytes tell): `values` by key, and each item of the arrays
 * under the keys of `arrays`. Keys are fixstr of at most two characters.
 */
export interface IntegerFields {
  values: ReadonlySet<string>
  arrays: ReadonlySet<string>
}

function isIntegerTag(t: number): boolean {
  return t <= 0x7f || t >= 0xe0 || (t >= 0xcc && t <= 0xd3)
}

/**
 * Throws a PROTOCOL TransportError naming `what` if b is not plain msgpack within maxDepth, or
 * (with `integers`) if a field of a top-level map listed there is not encoded as an integer.
 */
export function checkPlainMsgpack(b: Uint8Array, what: string, maxDepth = MSGPACK_MAX_DEPTH, integers: IntegerFields | null = null): void {
  const n = b.length
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength)
  // Items still to read in each open container, outermost first; `items` is the innermost's.
  const open: number[] = []
  let items = 1
  let pos = 0
  // With `integers`: whether the root is a map, the count of its entries' items read (even: a
  // key), the key just read, and the array whose items are checked (with the index of the next).
  let rootMap = false
  let slot = 0
  let key: string | null = null
  let checkedArray: string | null = null
  let index = 0
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
    // After the extension check: an extension is refused as such, wherever it is.
    if (integers !== null) {
      if (open.length === 0) rootMap = (t >= 0x80 && t <= 0x8f) || t === 0xde || t === 0xdf
      else if (rootMap && open.length === 1) {
        checkedArray = null
        if (slot++ % 2 === 0) {
          key = t >= 0xa0 && t <= 0xa2 && pos + (t & 0x1f) <= n ? String.fromCharCode(...b.subarray(pos, pos + (t & 0x1f))) : null
        } else if (key !== null) {
          if (integers.values.has(key) && !isIntegerTag(t)) notInteger(what, key, t)
          if (integers.arrays.has(key) && ((t >= 0x90 && t <= 0x9f) || t === 0xdc || t === 0xdd)) {
            checkedArray = key
            index = 0
          }
        }
      } else if (checkedArray !== null && open.length === 2) {
        if (!isIntegerTag(t)) notInteger(what, `${checkedArray}[${index}]`, t)
        index++
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

function notInteger(what: string, field: string, t: number): never {
  throw new TransportError('PROTOCOL', `${what}: ${field} must be a msgpack integer, got a value of type byte 0x${t.toString(16)} (a float?)`)
}
