/**
 * The task of workers-piscina.ts: normalizes an image to [0, 1] in place. It is the handler a
 * plain Piscina pool would run, wrapped with arenaHandler: the same task ({ pixels:
 * Float32Array }) arrives structured-cloned from Piscina's run and over the tasks arena from
 * ArenaPool's run, and the same result goes back either way.
 */
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

// Through ArenaPool the pixels are a view of the arena: normalized in place, they go back
// without a copy.
export default arenaHandler((task: { pixels: Float32Array }) => {
  normalize(task.pixels)
  return { pixels: task.pixels }
})
