/**
 * Builds hand-made pickles byte by byte, for the inputs CPython never writes (hostile lengths,
 * forbidden globals, absurd nesting).
 */

/** A part of a pickle: a latin-1 string (opcodes and text arguments), one byte, or bytes. */
export type Part = string | number | readonly number[] | Uint8Array

export function pickle(...parts: Part[]): Uint8Array {
  const out: number[] = []
  for (const p of parts) {
    if (typeof p === 'string') for (let i = 0; i < p.length; i++) out.push(p.charCodeAt(i) & 0xff)
    else if (typeof p === 'number') out.push(p & 0xff)
    else for (const b of p) out.push(b)
  }
  return new Uint8Array(out)
}

/** A 4-byte little-endian unsigned integer. */
export function u32(n: number): number[] {
  return [n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff]
}

/** An 8-byte little-endian unsigned integer. */
export function u64(n: number | bigint): number[] {
  let v = BigInt(n)
  const out: number[] = []
  for (let i = 0; i < 8; i++) {
    out.push(Number(v & 0xffn))
    v >>= 8n
  }
  return out
}

/** Repeats a part n times, as one Uint8Array (for large inputs, without an intermediate array). */
export function repeat(part: string, n: number): Uint8Array {
  const unit = pickle(part)
  const out = new Uint8Array(unit.length * n)
  for (let i = 0; i < n; i++) out.set(unit, i * unit.length)
  return out
}

export function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0))
  let at = 0
  for (const p of parts) {
    out.set(p, at)
    at += p.length
  }
  return out
}

/** SHORT_BINUNICODE of a short ASCII string. */
export function shortStr(s: string): Part[] {
  return ['\x8c', s.length, s]
}
