/**
 * The task of workers-piscina.ts: normalizes an image to [0, 1] in place. It takes both kinds
 * of task: an ArenaPool task (a Map holding an NDArray over the tasks arena) and a plain
 * Piscina task ({ pixels: Float32Array }, structured-cloned), so the example can time both.
 */
import { NDArray } from '@picklewire/codec'
import { arenaHandler } from '@picklewire/transport/shm'

function normalize(px: Float32Array): void {
  let lo = Infinity
  let hi = -Infinity
  for (let i = 0; i < px.length; i++) {
    const v = px[i]!
    if (v < lo) lo = v
    if (v > hi) hi = v
  }
  const scale = hi > lo ? 1 / (hi - lo) : 0
  for (let i = 0; i < px.length; i++) px[i] = (px[i]! - lo) * scale
}

export default arenaHandler((task: Map<string, unknown> | { pixels: Float32Array }) => {
  if (task instanceof Map) {
    const image = task.get('image') as NDArray
    normalize(image.data as Float32Array)
    return new Map([['image', image]]) // the same memory goes back: nothing is copied
  }
  normalize(task.pixels)
  return { pixels: task.pixels }
})
