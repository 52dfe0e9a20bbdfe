/**
 * A seeded pseudo-random generator (mulberry32), so that fuzz cases and random chunkings are
 * the same on every run and a failure can be replayed from its seed.
 */
export class Random {
  #state: number

  constructor(seed: number) {
    this.#state = seed >>> 0
  }

  /** A float in [0, 1). */
  next(): number {
    let z = (this.#state = (this.#state + 0x6d2b79f5) >>> 0)
    z = Math.imul(z ^ (z >>> 15), z | 1)
    z ^= z + Math.imul(z ^ (z >>> 7), z | 61)
    return ((z ^ (z >>> 14)) >>> 0) / 4294967296
  }

  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n)
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!
  }

  bytes(n: number): Uint8Array {
    const out = new Uint8Array(n)
    for (let i = 0; i < n; i++) out[i] = this.int(256)
    return out
  }
}

/**
 * Cuts bytes into chunks of random sizes from 1 to maxChunk (views, not copies), with an
 * occasional empty chunk, as a socket might deliver them.
 */
export function randomChunks(data: Uint8Array, rng: Random, maxChunk = 64): Uint8Array[] {
  const out: Uint8Array[] = []
  let at = 0
  while (at < data.length) {
    if (rng.int(20) === 0) out.push(data.subarray(at, at))
    const n = 1 + rng.int(maxChunk)
    out.push(data.subarray(at, at + n))
    at += n
  }
  return out
}

/** Cuts bytes into chunks of one size. */
export function fixedChunks(data: Uint8Array, size: number): Uint8Array[] {
  const out: Uint8Array[] = []
  for (let at = 0; at < data.length; at += size) out.push(data.subarray(at, at + size))
  return out
}

/** The chunks as an async source that yields to the event loop between chunks. */
export async function* asyncChunks(chunks: Iterable<Uint8Array>): AsyncGenerator<Uint8Array> {
  for (const c of chunks) {
    await Promise.resolve()
    yield c
  }
}
