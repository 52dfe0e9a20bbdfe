/**
 * The worker side of ArenaPool: `export default arenaHandler(async (task) => result)` in the
 * file piscina runs. The task arrives loaded over views of the tasks arena; the result goes
 * back through the results arena. A buffer of the task returned in the result goes back as it
 * is (no copy). The task's blocks are released when the handler settles, except those sent
 * back: keep a copy of anything needed after that.
 */
import { BroadcastChannel } from 'node:worker_threads'
import { Piscina } from 'piscina'
import { openArenaBuffer } from './arena.js'
import { TransportError } from '../errors.js'
import { Endpoint, checkEndpointOptions, type EndpointOptions, type ShmStats } from './endpoint.js'
import { THREAD_OWNER } from './pipe.js'
import { RESULTS, isPoolTask, poolChannel, type PoolArenas, type PoolResult, type PoolTask } from './pool.js'
import { readPrefix } from './record.js'

const endpoints = new Map<string, Endpoint | Promise<Endpoint>>()

/** This worker's endpoint in the task's pool; the first task of a pool asks the pool for its arenas. */
function endpointFor(task: PoolTask, options: EndpointOptions): Endpoint | Promise<Endpoint> {
  let e = endpoints.get(task.pool)
  if (e === undefined) {
    e = new Promise<Endpoint>((resolve, reject) => {
      const bc = new BroadcastChannel(poolChannel(task.pool))
      const timer = setTimeout(() => {
        bc.close()
        endpoints.delete(task.pool)
        reject(new TransportError('TIMEOUT', `the pool ${task.pool} did not send its arenas within 10 s`))
      }, 10_000)
      bc.onmessage = (m: unknown) => {
        const data = (m as { data?: PoolArenas }).data
        if (data?.pool !== task.pool || !Array.isArray(data.arenas)) return
        clearTimeout(timer)
        bc.close()
        const endpoint = new Endpoint([openArenaBuffer(data.arenas[0]), openArenaBuffer(data.arenas[1])], THREAD_OWNER, options)
        endpoints.set(task.pool, endpoint)
        resolve(endpoint)
      }
      bc.postMessage('arenas?')
    })
    endpoints.set(task.pool, e)
  }
  return e
}

/** This worker's counters for the pool that sent `task` (for tests and examples). */
export function workerStats(): Record<string, ShmStats> {
  const out: Record<string, ShmStats> = {}
  for (const [k, e] of endpoints) if (!(e instanceof Promise)) out[k] = { ...e.stats }
  return out
}

/**
 * Wraps a piscina task handler. A task that did not come from an ArenaPool (a plain
 * Piscina.run) is handed to `fn` as it is and its result returned as it is.
 */
export function arenaHandler<T = any, R = unknown>(fn: (task: T) => R | Promise<R>, options: EndpointOptions = {}): (task: unknown) => Promise<unknown> {
  if (typeof fn !== 'function') throw new TypeError(`arenaHandler needs a task handler function, got ${typeof fn}`)
  checkEndpointOptions('arenaHandler', options)
  return async (task: unknown): Promise<unknown> => {
    if (!isPoolTask(task)) return fn(task as T)
    const known = endpointFor(task, options)
    const endpoint = known instanceof Promise ? await known : known
    const prefix = readPrefix(task.r)
    const held = await endpoint.take(prefix)
    const received = endpoint.decode<T>(task.r, prefix, held, task.tr)
    try {
      const result = await fn(received.value)
      const out = await endpoint.prepare(result, RESULTS, { whenFull: 'transfer' })
      const record = endpoint.record(out, THREAD_OWNER)
      endpoint.sent(out, record.length)
      const value: PoolResult = { pw: 'picklewire/result', r: record, tr: out.transfers }
      const transfer = [record.buffer as ArrayBuffer, ...out.transfers]
      return Piscina.move({
        get [Piscina.transferableSymbol]() {
          return transfer
        },
        get [Piscina.valueSymbol]() {
          return value
        },
      } as never)
    } finally {
      received.release()
    }
  }
}
