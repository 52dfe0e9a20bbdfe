/**
 * LZ4 block format, as Python's lz4.block writes it with its default store_size=True: a 4-byte
 * little-endian uncompressed length, then one LZ4 block. Dask compresses frames this way (its
 * "lz4" compression), and workers do so even toward a client that asked for none, because the
 * scheduler relays their frames untouched.
 *
 * A block is a run of sequences. Each sequence is a token byte (high nibble: literal length,
 * low nibble: match length - 4; 15 means "more length bytes follow, each added, until one is
 * not 255"), the literals, then a 2-byte little-endian offset back into the output and the
 * extra match-length bytes. The last sequence has literals only. The spec's end rules: the
 * last 5 bytes are always literals, and no match starts within the last 12 bytes. The encoder
 * keeps them; the decoder does not insist on them (liblz4 does): a block that breaks them still
 * decodes to bytes fully determined by it, within the bounds below. An offset of 0 is refused.
 *
 * The decoder allocates the announced length only after checking it against the caller's
 * limit, and checks every length and offset against the input and output it has: a corrupt
 * block is a TransportError, never an out-of-bounds write or a hang.
 */
import { TransportError } from '../errors.js'

const MIN_MATCH = 4
/** The last bytes of a block are literals (the spec's LASTLITERALS). */
const LAST_LITERALS = 5
/** No match starts within this many bytes of the end (the spec's MFLIMIT). */
const MATCH_FIND_LIMIT = 12
const MAX_OFFSET = 65535
const HASH_BITS = 16
const SIZE_PREFIX = 4

function corrupt(why: string): never {
  throw new TransportError('PROTOCOL', `corrupt lz4 block: ${why}`)
}

/** Below this many bytes a copy is a plain loop: cheaper than making a subarray or calling copyWithin. */
const SHORT_COPY = 64

/**
 * Decompresses a size-prefixed block (Python's lz4.block.decompress). The announced length is
 * checked against maxBytes before anything is allocated; the block must fill it exactly.
 */
export function lz4Decompress(data: Uint8Array, maxBytes: number): Uint8Array {
  const size = lz4DecompressedSize(data)
  if (size > maxBytes) {
    throw new TransportError('LIMIT', `lz4 frame announces ${size} bytes, over the limit of ${maxBytes}`)
  }
  const out = new Uint8Array(size)
  lz4DecompressInto(data, out, 0)
  return out
}

/** The uncompressed length a size-prefixed block announces (checked to be possible for its size). */
export function lz4DecompressedSize(data: Uint8Array): number {
  if (data.length < SIZE_PREFIX) corrupt(`${data.length} bytes is too short for the 4-byte length`)
  const size = (data[0]! | (data[1]! << 8) | (data[2]! << 16) | (data[3]! << 24)) >>> 0
  // A block cannot expand its input more than 255-fold (a run of 255s in a length): refuse
  // an impossible length before anyone allocates it.
  if (size > (data.length - SIZE_PREFIX) * 255 + 16) corrupt(`${data.length} bytes cannot expand to ${size}`)
  return size
}

/**
 * Decompresses a size-prefixed block into out at offset (so that the shards of one frame can
 * land back to back in one buffer); out must have room for the announced length.
 */
export function lz4DecompressInto(data: Uint8Array, out: Uint8Array, offset: number): number {
  const size = lz4DecompressedSize(data)
  if (offset + size > out.length) throw new RangeError(`no room for ${size} bytes at ${offset} of ${out.length}`)
  const src = data
  const srcEnd = src.length
  const start = offset
  const end = offset + size
  let ip = SIZE_PREFIX
  let op = offset
  if (ip === srcEnd) {
    if (size === 0) return 0
    corrupt('no block after the length')
  }
  for (;;) {
    if (ip >= srcEnd) corrupt('input ends before a token')
    const token = src[ip++]!
    let literals = token >>> 4
    if (literals === 15) {
      let b: number
      do {
        if (ip >= srcEnd) corrupt('input ends inside a length')
        b = src[ip++]!
        literals += b
      } while (b === 255)
    }
    if (literals > 0) {
      if (ip + literals > srcEnd) corrupt('literals run past the input')
      if (op + literals > end) corrupt(`output overflows the announced ${size} bytes`)
      if (literals < SHORT_COPY) {
        for (let i = 0; i < literals; i++) out[op + i] = src[ip + i]!
      } else {
        out.set(src.subarray(ip, ip + literals), op)
      }
      ip += literals
      op += literals
    }
    if (ip === srcEnd) break // the last sequence: literals only
    if (ip + 2 > srcEnd) corrupt('input ends inside an offset')
    const distance = src[ip]! | (src[ip + 1]! << 8)
    ip += 2
    if (distance === 0) corrupt('zero offset')
    if (distance > op - start) corrupt(`offset ${distance} reaches before the start of the output (at ${op - start})`)
    let length = token & 15
    if (length === 15) {
      let b: number
      do {
        if (ip >= srcEnd) corrupt('input ends inside a length')
        b = src[ip++]!
        length += b
      } while (b === 255)
    }
    length += MIN_MATCH
    if (op + length > end) corrupt(`output overflows the announced ${size} bytes`)
    const from = op - distance
    if (length < SHORT_COPY) {
      // byte by byte also repeats an overlapping match's pattern correctly
      for (let i = 0; i < length; i++) out[op + i] = out[from + i]!
    } else if (distance >= length) {
      out.copyWithin(op, from, from + length)
    } else {
      // An overlapping match repeats the last `distance` bytes: copy doubling spans of the
      // pattern, each a multiple of the period, so every copy reads bytes already written.
      let copied = 0
      while (copied < length) {
        const n = Math.min(length - copied, distance + copied)
        out.copyWithin(op + copied, from, from + n)
        copied += n
      }
    }
    op += length
  }
  if (op !== end) corrupt(`block holds ${op - start} bytes, the length says ${size}`)
  return size
}

/** The largest compressed size of n bytes (the spec's LZ4_compressBound), plus the length prefix. */
export function lz4CompressBound(n: number): number {
  return SIZE_PREFIX + n + Math.floor(n / 255) + 16
}

function writeLength(out: Uint8Array, at: number, n: number): number {
  while (n >= 255) {
    out[at++] = 255
    n -= 255
  }
  out[at++] = n
  return at
}

/** Writes one sequence (literals src[anchor, end), then a match unless matchLength is 0); returns the output position. */
function writeSequence(out: Uint8Array, op: number, src: Uint8Array, anchor: number, end: number, offset: number, matchLength: number): number {
  const literals = end - anchor
  const tokenAt = op++
  let token = (literals >= 15 ? 15 : literals) << 4
  if (literals >= 15) op = writeLength(out, op, literals - 15)
  out.set(src.subarray(anchor, end), op)
  op += literals
  if (matchLength > 0) {
    out[op++] = offset & 0xff
    out[op++] = offset >>> 8
    const m = matchLength - MIN_MATCH
    token |= m >= 15 ? 15 : m
    if (m >= 15) op = writeLength(out, op, m - 15)
  }
  out[tokenAt] = token
  return op
}

/**
 * Compresses into a size-prefixed block that Python's lz4.block.decompress reads: a greedy
 * single-pass matcher over a hash of 4-byte sequences. Inputs over 2^32 - 1 bytes are refused
 * (the prefix is 32 bits).
 */
export function lz4Compress(src: Uint8Array): Uint8Array {
  const n = src.length
  if (n > 0xffffffff) throw new TransportError('LIMIT', `lz4 cannot compress ${n} bytes (the length prefix is 32 bits)`)
  const out = new Uint8Array(lz4CompressBound(n))
  out[0] = n & 0xff
  out[1] = (n >>> 8) & 0xff
  out[2] = (n >>> 16) & 0xff
  out[3] = (n >>> 24) & 0xff
  let op = SIZE_PREFIX
  let anchor = 0
  if (n > MATCH_FIND_LIMIT) {
    const view = new DataView(src.buffer, src.byteOffset, src.byteLength)
    const table = new Int32Array(1 << HASH_BITS).fill(-1)
    const matchLimit = n - MATCH_FIND_LIMIT
    const copyLimit = n - LAST_LITERALS
    let ip = 0
    let misses = 0
    while (ip < matchLimit) {
      const seq = view.getUint32(ip, true)
      const h = Math.imul(seq, 2654435761) >>> (32 - HASH_BITS)
      const ref = table[h]!
      table[h] = ip
      if (ref >= 0 && ip - ref <= MAX_OFFSET && view.getUint32(ref, true) === seq) {
        let start = ip
        let from = ref
        // Extend backwards into the pending literals, then forwards up to the end rule.
        while (start > anchor && from > 0 && src[start - 1] === src[from - 1]) {
          start--
          from--
        }
        let end = ip + MIN_MATCH
        let fromEnd = ref + MIN_MATCH
        while (end < copyLimit && src[end] === src[fromEnd]) {
          end++
          fromEnd++
        }
        op = writeSequence(out, op, src, anchor, start, start - from, end - start)
        ip = end
        anchor = end
        misses = 0
      } else {
        // Skip faster through data that does not compress, as the reference encoder does.
        ip += 1 + (misses++ >>> 6)
      }
    }
  }
  op = writeSequence(out, op, src, anchor, n, 0, 0)
  return out.subarray(0, op)
}
