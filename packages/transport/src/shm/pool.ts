/**
 * A piscina pool whose tasks and results travel through arenas instead of structured clone.
 * `new ArenaPool(options).run(task)` is used as `new Piscina(options).run(task)`; the worker
 * file wraps its handler with arenaHandler (handler.ts). Every out-of-band buffer of the task,
 * at any depth of it, goes through the tasks arena, and every one of the result through the
 * results arena (or back through the tasks arena, untouched, when the handler returns a
 * buffer it was given: then nothing is copied either way). piscina itself carries only the
 * small record.
 *
 * Neither direction ever waits for arena space: a buffer that does not fit now is copied into
 * an ArrayBuffer of its own and transferred (counted in bytesCopied and bytesTransferred), so
 * results that the caller keeps cannot stall the workers. alloc() waits, as a channel's does.
 *
 * A worker that exits (crash, terminate, idle timeout) gives back everything it held: the pool
 * watches each worker piscina starts and reclaims its blocks when it exits.
 */
import { Piscina } from 'piscina'
import { BroadcastChannel, type Worker } from 'node:worker_threads'
import type { PickleBuffer } from '@picklewire/codec'
import { TransportError } from '../errors.js'
import { DEFAULT_ARENA_BYTES, createArenaBuffer, openArenaBuffer, type Arena } from './arena.js'
import { checkOptions, optionNames } from '../options-check.js'
import { Endpoint, checkEndpointOptions, type EndpointOptions, type Outgoing, type ShmStats } from './endpoint.js'
import { THREAD_OWNER, type ArenaStats, type TypedArrayConstructor } from './pipe.js'
import type { Held, Received } from './received.js'
import { readPrefix } from './record.js'
import type { WaitOptions } from './wait.js'

type PiscinaOptions = NonNullable<ConstructorParameters<typeof Piscina>[0]>
type PiscinaRunOptions = NonNullable<Parameters<Piscina['run']>[1]>

export interface ArenaPoolOptions extends PiscinaOptions, EndpointOptions {
  /** Bytes of the arena tasks' buffers go through. Default 64 MiB. */
  taskCapacity?: number
  /** Bytes of the arena results' buffers go through. Default 64 MiB. */
  resultCapacity?: number
}

const RUN_OPTIONS = optionNames('transferList', 'signal', 'name', 'filename')

export interface ArenaRunOptions {
  /** ArrayBuffers the worker may take over: buffers over them are transferred, not copied. */
  transferList?: readonly ArrayBuffer[]
  signal?: AbortSignal
  name?: string | null
  filename?: string | null
}

/** What travels through piscina for a task: the record, and the pool's name (see poolChannel). */
export interface PoolTask {
  pw: 'picklewire/task'
  pool: string
  r: Uint8Array
  tr: ArrayBuffer[]
}

/**
 * The arenas reach each worker once, not with every task (posting a SharedArrayBuffer costs
 * tens of microseconds): a worker that meets a pool it does not know asks on this
 * BroadcastChannel, and the pool answers with its arenas.
 */
export function poolChannel(pool: string): string {
  return `picklewire/pool/${pool}`
}

export interface PoolArenas {
  pool: string
  arenas: [SharedArrayBuffer, SharedArrayBuffer]
}

/** What travels back. */
export interface PoolResult {
  pw: 'picklewire/result'
  r: Uint8Array
  tr: ArrayBuffer[]
}

export const TASKS = 0
export const RESULTS = 1

export interface PoolStats extends ShmStats {
  bytesReclaimed: number
  arenas: { tasks: ArenaStats; results: ArenaStats }
}

let pools = 0

export class ArenaPool<T = unknown, R = unknown> {
  readonly piscina: Piscina
  readonly #id = `${process.pid}.${THREAD_OWNER}.${++pools}`
  readonly #sabs: [SharedArrayBuffer, SharedArrayBuffer]
  readonly #arenas: [Arena, Arena]
  readonly #endpoint: Endpoint
  readonly #results = new WeakMap<object, Received>()
  #bytesReclaimed = 0

  constructor(options: ArenaPoolOptions = {}) {
    // The other names are piscina's, passed on: piscina does not check names and does not export its list.
    checkEndpointOptions('ArenaPool', options, null)
    const { taskCapacity, resultCapacity, pickler, unpickler, values, limits, gcRelease, ...piscinaOptions } = options
    this.#sabs = [createArenaBuffer(taskCapacity ?? DEFAULT_ARENA_BYTES), createArenaBuffer(resultCapacity ?? DEFAULT_ARENA_BYTES)]
    this.#arenas = [openArenaBuffer(this.#sabs[0]), openArenaBuffer(this.#sabs[1])]
    this.#endpoint = new Endpoint(this.#arenas, THREAD_OWNER, { pickler, unpickler, values, limits, gcRelease })
    this.piscina = new Piscina(piscinaOptions)
    this.piscina.on('workerCreate', (w: { id: number }) => this.#watch(w.id))
    this.#broadcast = new BroadcastChannel(poolChannel(this.#id))
    this.#broadcast.onmessage = (e: unknown) => {
      if ((e as { data?: unknown }).data === 'arenas?') this.#broadcast.postMessage({ pool: this.#id, arenas: this.#sabs } satisfies PoolArenas)
    }
    ;(this.#broadcast as unknown as { unref(): void }).unref()
  }

  readonly #broadcast: BroadcastChannel

  /** Reclaims what a worker held once it exits; its Worker says -1 for its thread id by then, so the id is taken now. */
  #watch(threadId: number): void {
    const worker = (this.piscina.threads as Worker[]).find((w) => w.threadId === threadId)
    worker?.once('exit', () => void this.#reclaim(threadId + 1))
  }

  async #reclaim(dead: number): Promise<void> {
    for (const arena of this.#arenas) {
      arena.mutex.breakIfHeldBy((holder) => holder === dead)
      this.#bytesReclaimed += await arena.locked(THREAD_OWNER, () => arena.reclaimLocked((owner) => owner === dead))
    }
  }

  /**
   * Runs a task as Piscina's run does and resolves with the handler's result, loaded over
   * views of the results arena. The result's arena blocks are released when its buffers are
   * garbage collected, or at once with release(result).
   */
  async run(task: T, options: ArenaRunOptions = {}): Promise<R> {
    checkOptions('ArenaPool.run', options, RUN_OPTIONS)
    const out = await this.#endpoint.prepare(task, TASKS, { transfer: options.transferList, whenFull: 'transfer', wait: { signal: options.signal } })
    const record = this.#endpoint.record(out, THREAD_OWNER)
    const bytes = record.length
    const msg: PoolTask = { pw: 'picklewire/task', pool: this.#id, r: record, tr: out.transfers }
    const runOptions: PiscinaRunOptions = { transferList: [record.buffer as ArrayBuffer, ...out.transfers] }
    if (options.signal !== undefined) runOptions.signal = options.signal
    if (options.name != null) runOptions.name = options.name
    if (options.filename != null) runOptions.filename = options.filename
    // The blocks stay this thread's until the worker takes them: if the task never gets that far, they are freed here.
    this.#endpoint.sent(out, bytes)
    let res: unknown
    try {
      res = await this.piscina.run(msg, runOptions)
    } catch (err) {
      await this.#freeUntaken(out)
      throw err
    }
    return this.#load(res)
  }

  async #freeUntaken(out: Outgoing): Promise<void> {
    for (const [a, arena] of this.#arenas.entries()) {
      const mine = out.blocks.filter((h) => h.arena === a)
      if (mine.length > 0) await arena.locked(THREAD_OWNER, () => mine.forEach((h) => arena.freeLocked(h, THREAD_OWNER)))
    }
  }

  async #load(res: unknown): Promise<R> {
    if (!isPoolResult(res)) throw new TransportError('PROTOCOL', 'the worker answered without going through arenaHandler: wrap the worker\'s handler with arenaHandler(fn)')
    const prefix = readPrefix(res.r)
    let held: Held[]
    try {
      held = await this.#endpoint.take(prefix)
    } catch (err) {
      throw new TransportError('CLOSED', 'the worker exited before its result was taken', { cause: err })
    }
    const received = this.#endpoint.decode<R>(res.r, prefix, held, res.tr)
    const value = received.value
    if (typeof value === 'object' && value !== null) this.#results.set(value, received)
    else received.release()
    return value
  }

  /** Releases the arena blocks of a result now (else they go when it is garbage collected). False if it holds none. */
  release(result: R): boolean {
    if (typeof result !== 'object' || result === null) return false
    const received = this.#results.get(result)
    if (received === undefined) return false
    this.#results.delete(result)
    received.release()
    return true
  }

  /** Bytes in the tasks arena to fill in place: a task carrying them copies nothing. Waits for space. */
  alloc(byteLength: number, options: WaitOptions = {}): Promise<Uint8Array> {
    return this.#endpoint.alloc(TASKS, byteLength, options)
  }

  /** A TypedArray in the tasks arena (64-byte aligned), to fill in place. */
  allocArray<A>(ctor: TypedArrayConstructor<A>, length: number, options: WaitOptions = {}): Promise<A> {
    return this.#endpoint.allocArray(TASKS, ctor, length, options)
  }

  /** Frees an allocated block that will not be sent. */
  free(view: ArrayBufferView | PickleBuffer): boolean {
    return this.#endpoint.free(view)
  }

  stats(): PoolStats {
    const arena = (a: Arena): ArenaStats => ({ capacity: a.capacity, bytesInUse: a.bytesInUse, freeBytes: a.freeBytes })
    return { ...this.#endpoint.stats, bytesReclaimed: this.#bytesReclaimed, arenas: { tasks: arena(this.#arenas[0]), results: arena(this.#arenas[1]) } }
  }

  /** Frees blocks whose release waited for a lock. */
  settle(): Promise<void> {
    return this.#endpoint.settle()
  }

  async close(options?: { force?: boolean }): Promise<void> {
    await this.piscina.close(options)
    this.#broadcast.close()
  }

  async destroy(): Promise<void> {
    await this.piscina.destroy()
    this.#broadcast.close()
  }
}

export function isPoolTask(x: unknown): x is PoolTask {
  return typeof x === 'object' && x !== null && (x as PoolTask).pw === 'picklewire/task' && (x as PoolTask).r instanceof Uint8Array
}

export function isPoolResult(x: unknown): x is PoolResult {
  return typeof x === 'object' && x !== null && (x as PoolResult).pw === 'picklewire/result' && (x as PoolResult).r instanceof Uint8Array
}
