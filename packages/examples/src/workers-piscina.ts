/**
 * A piscina pool over shared memory: large images normalized by worker threads. The same pool
 * and the same handler run each task twice: once as Piscina runs it (the Float32Array is
 * structured-cloned to the worker and the result cloned back) and once through the arenas of
 * ArenaPool (the image is allocated in the tasks arena and filled in place; the worker
 * normalizes it in place and returns it, and nothing is copied either way). The task and the
 * result are the same objects both ways: switching from Piscina is `new ArenaPool(options)`
 * for `new Piscina(options)`.
 * Run it alone with `node packages/examples/dist/workers-piscina.js [tasks] [megapixels]`.
 */
import { pathToFileURL } from 'node:url'
import { ArenaPool } from '@picklewire/transport/shm'

export interface PiscinaExampleOptions {
  /** Images to normalize, each way. Default 8. */
  tasks?: number
  /** Pixels per image, in millions (float32, one channel). Default 16 (64 MiB). */
  megapixels?: number
  print?: boolean
}

export interface PiscinaExampleReport {
  cloneMs: number
  arenaMs: number
  bytesCopied: number
  bytesPerImage: number
}

function fill(px: Float32Array, seed: number): void {
  for (let i = 0; i < px.length; i++) px[i] = ((i * 2654435761 + seed) % 4096) / 16
}

export async function runPiscinaExample(options: PiscinaExampleOptions = {}): Promise<PiscinaExampleReport> {
  const tasks = options.tasks ?? 8
  const side = Math.round(Math.sqrt((options.megapixels ?? 16) * 1e6))
  const pixels = side * side
  const bytes = pixels * 4
  const pool = new ArenaPool({
    filename: new URL('./workers-piscina-task.js', import.meta.url).href,
    minThreads: 2,
    maxThreads: 2,
    taskCapacity: 2 * bytes + (1 << 20),
  })
  try {
    // Warm both paths up (worker start, compilation) before measuring.
    await pool.piscina.run({ pixels: new Float32Array(1024) })
    const plain = new Float32Array(pixels)
    let cloneMs = 0
    for (let k = 0; k < tasks; k++) {
      fill(plain, k)
      const t0 = performance.now()
      const r = await pool.piscina.run({ pixels: plain })
      cloneMs += performance.now() - t0
      if (r.pixels.length !== pixels) throw new Error('the structured-clone task lost pixels')
    }
    let arenaMs = 0
    for (let k = 0; k < tasks; k++) {
      const px = await pool.allocArray(Float32Array, pixels)
      fill(px, k)
      const t0 = performance.now()
      const r = (await pool.run({ pixels: px })) as { pixels: Float32Array }
      arenaMs += performance.now() - t0
      if (!(r.pixels instanceof Float32Array) || r.pixels.byteOffset !== px.byteOffset) throw new Error('the arena task came back as a copy')
      pool.release(r)
    }
    const report = { cloneMs: cloneMs / tasks, arenaMs: arenaMs / tasks, bytesCopied: pool.stats().bytesCopied, bytesPerImage: bytes }
    if (options.print) {
      console.log(`\npiscina, normalizing ${side}x${side} float32 images (${(bytes / 2 ** 20).toFixed(0)} MiB) in 2 worker threads, per image:`)
      console.log(`  structured clone (Piscina's run): ${report.cloneMs.toFixed(1)} ms`)
      console.log(`  through the arenas (ArenaPool):   ${report.arenaMs.toFixed(1)} ms, ${report.bytesCopied} bytes copied; ` +
        `the normalizing itself is the same in both`)
    }
    return report
  } finally {
    await pool.destroy()
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const [tasks, megapixels] = process.argv.slice(2).map(Number)
  await runPiscinaExample({ tasks: tasks || undefined, megapixels: megapixels || undefined, print: true })
}
