// The piscina task file of bench/shm.mjs: each export receives a small object holding a
// Float32Array (or an NDArray over one), reads its first and last element, and answers.
import { createRequire } from 'node:module'
import { arenaHandler } from '@picklewire/transport/shm'

// piscina is a dependency of @picklewire/transport, not of the workspace root.
const { Piscina } = createRequire(new URL('../packages/transport/package.json', import.meta.url))('piscina')

const touch = (x) => x[0] + x[x.length - 1]

/** Piscina's plain run: the task was structured-cloned here, a number goes back. */
export function plain(task) {
  return touch(task.x)
}

/** Piscina.move: the Float32Array was transferred here; it is transferred back. */
export function move(task) {
  touch(task)
  return Piscina.move(task)
}

/**
 * ArenaPool: the task arrives as it was sent, its Float32Array over the tasks arena (with
 * PICKLEWIRE_SHM_VALUES=python: a Map holding an NDArray).
 */
export const arena = process.env.PICKLEWIRE_SHM_VALUES === 'python'
  ? arenaHandler((task) => touch(task.get('x').data), { values: 'python' })
  : arenaHandler((task) => touch(task.x))
