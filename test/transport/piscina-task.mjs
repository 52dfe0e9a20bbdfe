// The task file of test/transport/piscina-pool.test.ts, run by piscina through ArenaPool.
import { PickleBuffer, Tuple } from '@picklewire/codec'
import { arenaHandler, workerStats } from '@picklewire/transport'

const bytesOf = (pb) => pb.raw()
const sum = (pb) => bytesOf(pb).reduce((a, b) => a + b, 0)

/** Every PickleBuffer in a loaded value, depth first. */
function buffers(v, out = []) {
  if (v instanceof PickleBuffer) out.push(v)
  else if (v instanceof Map) for (const x of v.values()) buffers(x, out)
  else if (Array.isArray(v) || v instanceof Tuple) for (const x of v) buffers(x, out)
  return out
}

export default arenaHandler(async (task) => {
  if (!(task instanceof Map)) return { plain: true, x: task.x + 1 } // a plain piscina task
  switch (task.get('op')) {
    case 'nested': {
      const found = buffers(task.get('items'))
      return new Map([
        ['sums', found.map(sum)],
        ['echo', task.get('items')], // the task's own buffers, sent back as they are
        ['fresh', [Tuple.fromItems([new PickleBuffer(new Uint8Array(3000).fill(7))])]],
      ])
    }
    case 'double': {
      const raw = bytesOf(task.get('data'))
      const f = new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4)
      for (let i = 0; i < f.length; i++) f[i] *= 2
      return new Map([['data', task.get('data')], ['shared', raw.buffer instanceof SharedArrayBuffer]])
    }
    case 'make':
      return new PickleBuffer(new Uint8Array(task.get('n')).fill(task.get('fill')))
    case 'throw':
      throw new Error(`the task failed on purpose: ${task.get('why')}`)
    case 'exit':
      process.exit(7)
      break
    case 'stats':
      return new Map(Object.entries(Object.values(workerStats())[0] ?? {}))
  }
  throw new Error(`unknown op ${task.get('op')}`)
})
