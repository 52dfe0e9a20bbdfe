/**
 * Alignment of out-of-band buffers. A typed array over received bytes needs its offset to be a
 * multiple of its element size; ws hands a small frame over as a slice of the socket chunk it
 * came in, at any offset. The sender says what each buffer needs (header extra `al`), and the
 * receiver copies a buffer only when its view would be misaligned, and counts it.
 */
import type { WebSocketStats } from './stats.js'

/**
 * The alignment a sent buffer claims: the largest of 8, 4, 2 dividing both its offset and its
 * length. A typed array's bytes always satisfy their element size; plain bytes may claim more
 * than they need, which costs at most one copy of a small frame on the receiving side.
 */
export function naturalAlignment(view: { readonly byteOffset: number; readonly byteLength: number }): number {
  const o = view.byteOffset
  const n = view.byteLength
  if (o % 8 === 0 && n % 8 === 0) return 8
  if (o % 4 === 0 && n % 4 === 0) return 4
  if (o % 2 === 0 && n % 2 === 0) return 2
  return 1
}

/** A view over a received frame, or an aligned copy when the view would be misaligned. */
export function alignedView(frame: Uint8Array, alignment: number, stats: WebSocketStats): Uint8Array {
  if (alignment <= 1 || frame.byteOffset % alignment === 0) return new Uint8Array(frame.buffer, frame.byteOffset, frame.byteLength)
  const copy = new Uint8Array(frame.byteLength)
  copy.set(frame)
  stats.alignmentCopies++
  stats.bytesCopied += frame.byteLength
  return copy
}
