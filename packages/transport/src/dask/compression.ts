/**
 * Dask's frame compressions: the names its headers use ("lz4", "zlib", or null for none) and
 * the policy by which it decides to compress (distributed/protocol/compression.py): only frames
 * of 10,000 bytes to 2 GiB, and only when a sample, then the whole frame, shrinks to 90% or less.
 * snappy and zstd are not available in Node without dependencies: a frame compressed with them
 * is a clear error, and this client never asks for them.
 */
import { inflateSync, deflateSync } from 'node:zlib'
import { TransportError, shown } from '../errors.js'
import { lz4Compress, lz4Decompress } from './lz4.js'

/** The compressions this side can read and write. */
export type DaskCompression = 'lz4' | 'zlib'

export const COMPRESSIONS: readonly DaskCompression[] = ['lz4', 'zlib']

const MIN_COMPRESS_BYTES = 10_000
const MAX_COMPRESS_BYTES = 2 ** 31
const SAMPLE_BYTES = 10_000
const SAMPLES = 5
const WORTH_IT = 0.9

function compressWith(name: DaskCompression, data: Uint8Array): Uint8Array {
  return name === 'lz4' ? lz4Compress(data) : deflateSync(data)
}

/**
 * Decompresses one frame. name is what the sub-header's "compression" list says for it: null
 * (or false) for none; the output is limited to maxBytes.
 */
export function decompressFrame(name: unknown, frame: Uint8Array, maxBytes: number): Uint8Array {
  if (name === null || name === undefined || name === false) return frame
  if (name === 'lz4') return lz4Decompress(frame, maxBytes)
  if (name === 'zlib') {
    try {
      return inflateSync(frame, { maxOutputLength: maxBytes })
    } catch (err) {
      const code = (err as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE' ? 'LIMIT' : 'PROTOCOL'
      throw new TransportError(code, `bad zlib frame: ${err instanceof Error ? err.message : String(err)}`, { cause: err })
    }
  }
  throw new TransportError('PROTOCOL', `frame compressed with ${shown(name)}, which this client cannot read (it reads ${COMPRESSIONS.join(', ')})`)
}

/** Evenly spread samples of a frame, joined (Dask samples at random; evenly is as good a guess and repeatable). */
function sample(data: Uint8Array): Uint8Array {
  const out = new Uint8Array(SAMPLE_BYTES * SAMPLES)
  const step = Math.floor((data.length - SAMPLE_BYTES) / (SAMPLES - 1))
  for (let i = 0; i < SAMPLES; i++) out.set(data.subarray(i * step, i * step + SAMPLE_BYTES), i * SAMPLE_BYTES)
  return out
}

/** Dask's maybe_compress: [name, compressed] when compressing pays, else [null, the frame itself]. */
export function maybeCompress(frame: Uint8Array, name: DaskCompression | null): [DaskCompression | null, Uint8Array] {
  if (name === null || frame.length < MIN_COMPRESS_BYTES || frame.length > MAX_COMPRESS_BYTES) return [null, frame]
  if (frame.length > SAMPLE_BYTES * SAMPLES) {
    const s = sample(frame)
    if (compressWith(name, s).length > WORTH_IT * s.length) return [null, frame]
  }
  const packed = compressWith(name, frame)
  return packed.length <= WORTH_IT * frame.length ? [name, packed] : [null, frame]
}
