/**
 * A Dask client in Node: the same conversation distributed.Client has with a scheduler.
 *
 * - One long-lived comm is the client's stream: "register-client" opens it, the scheduler
 *   answers "stream-start", then both sides send lists of messages. Ours: "update-graph"
 *   (submit), "client-releases-keys", "heartbeat-client", "close-client", "close-stream".
 *   The scheduler's: "key-in-memory", "task-erred", "cancelled-key(s)", "lost-data",
 *   "task-retried", "restart", "stream-closed", "adjust-heartbeat-interval".
 * - Request/reply ops ("gather", "scatter", or any other with rpc()) go over other comms to
 *   the scheduler, pooled; each request is {"op", ...args, "reply": true}.
 *
 * At connect the client asks the scheduler's "versions" and writes "update-graph" in the form
 * that distributed version reads (graph.ts): run_spec pickles up to 2023.3, a pickled
 * HighLevelGraph of task tuples from 2023.4, of dask._task_spec Tasks from 2024.11, an LLGExpr
 * in "expr_ser" from 2025.4.
 * Futures in arguments become references the worker replaces with their values; a Tuple led by
 * a Python global is a nested call. The function is a Python global named by its qualified
 * name; nothing of JavaScript runs there.
 */
import { randomUUID } from 'node:crypto'
import { NDArray, PyGlobal, Tuple } from '@picklewire/codec'
import { TransportError, shown } from '../errors.js'
import { badOptionType, checkMilliseconds, checkOptions, checkSignal, optionNames } from '../options-check.js'
import { COMM_OPTION_NAMES, checkCommOptions, commOptionsOf, connectDask, parseDaskAddress, type DaskComm, type DaskCommOptions } from './comm.js'
import { DaskFuture } from './future.js'
import { FutureRef, graphFormFor, parseDaskVersion, updateGraphMessage, type GraphForm, type TaskCall } from './graph.js'
import { DaskSerialize, loadsMessage } from './protocol.js'
import { loadOpaque, replyError, taskError } from './remote-error.js'
import { DaskSerialized, deserializeFromWire, field, newStats, type DaskStats } from './serialize.js'
import { waitFor } from '../waiting.js'

export interface DaskClientOptions extends DaskCommOptions {
  /**
   * Milliseconds between "heartbeat-client" messages; 0 sends none. Default 5,000 (Dask's
   * distributed.client.heartbeat), then what the scheduler asks for with
   * "adjust-heartbeat-interval" (2025.4 on; at least 1,000). Given here, it is kept.
   */
  heartbeatInterval?: number
  /** Default timeout of gather, scatter and rpc, in milliseconds; 0 waits without limit. Default 60,000. */
  rpcTimeout?: number
  /** Idle request comms kept open for reuse. Default 4. */
  maxIdleComms?: number
  /** The client's id on the scheduler. Default 'Client-<uuid>', as Dask names its clients. */
  id?: string
  /** Called with each scheduler message this client has no use for ("event", "error", ...). Default: none. */
  onMessage?: (msg: Map<unknown, unknown>) => void
}

export interface SubmitOptions {
  /** Keyword arguments of the call. Default none. */
  kwargs?: Record<string, unknown> | Map<string, unknown>
  /** The key. Default '<function name>-<uuid>'. */
  key?: string
  /** Dask's user priority: higher runs first. Default 0. */
  priority?: number
  /** How many times the scheduler retries the task when it fails. Default 0. */
  retries?: number
  /** Worker addresses (or names) the task may run on. Default: any. */
  workers?: string[]
}

export interface MapOptions extends Omit<SubmitOptions, 'key'> {
  /** The keys' prefix: keys are '<key>-<uuid>'. Default: the function's name. */
  key?: string
  /** One key per call, instead of generated ones. */
  keys?: string[]
}

/** When DaskClient.wait returns, as Python's concurrent.futures and Dask's wait(return_when=...). */
export type ReturnWhen = 'ALL_COMPLETED' | 'FIRST_COMPLETED' | 'FIRST_EXCEPTION'

export interface DaskWaitOptions {
  /** Milliseconds; 0 waits without limit. Default 0. On timeout, wait rejects with TransportError('TIMEOUT'). */
  timeout?: number
  /** Gives up with the signal's reason when it aborts; the futures are left as they are. */
  signal?: AbortSignal
  /** Default 'ALL_COMPLETED'. */
  returnWhen?: ReturnWhen
}

/** The scheduler's software, as its "versions" op answers (distributed/versions.py get_versions). */
export interface DaskVersions {
  /** "python", "python-bits", "OS", ... */
  host: Map<unknown, unknown>
  /** "python", "dask", "distributed", "msgpack", "cloudpickle", "tornado", "toolz", "numpy", "lz4", ... (null when absent) */
  packages: Map<unknown, unknown>
}

export interface ScatterOptions {
  /** Worker addresses to place the data on. Default: the scheduler chooses. */
  workers?: string[]
  /** Copy to every worker. Default false. */
  broadcast?: boolean
  /** Keys to use, one per value. Default '<type>-<uuid>'. */
  keys?: string[]
  /** Milliseconds for the whole call. Default: the client's rpcTimeout. */
  timeout?: number
}

/** Options of DaskClient.gather and DaskFuture.result. */
export interface GatherOptions {
  /** Milliseconds for the whole call; 0 waits without limit. Default: the client's rpcTimeout. */
  timeout?: number
  /** Gives up with the signal's reason when it aborts (a request on the way is dropped with its comm); the futures are left as they are. */
  signal?: AbortSignal
}

export interface RpcOptions {
  /** Milliseconds for the whole call. Default: the client's rpcTimeout. */
  timeout?: number
  /**
   * Accept a None reply. A scheduler answers None to an op it has no handler for, so by
   * default None is an error that says so; set this for ops that do return None. Default false.
   */
  allowNull?: boolean
}

export type DaskClientStatus = 'running' | 'closing' | 'closed'

/** The ops of the client stream this client sends (the scheduler drops a stream on any other). */
const CLIENT_OPTIONS = optionNames(...COMM_OPTION_NAMES, 'heartbeatInterval', 'rpcTimeout', 'maxIdleComms', 'id', 'onMessage')
const SUBMIT_OPTIONS = optionNames('kwargs', 'key', 'priority', 'retries', 'workers')
const MAP_OPTIONS = optionNames('kwargs', 'key', 'keys', 'priority', 'retries', 'workers')
const SCATTER_OPTIONS = optionNames('workers', 'broadcast', 'keys', 'timeout')
const WAIT_OPTIONS = optionNames('timeout', 'returnWhen', 'signal')
const GATHER_OPTIONS = optionNames('timeout', 'signal')
const RPC_OPTIONS = optionNames('timeout', 'allowNull')

const STREAM_OPS = new Set(['update-graph', 'client-releases-keys', 'heartbeat-client', 'close-client', 'close-stream'])

const DEFAULT_HEARTBEAT = 5000
const DEFAULT_RPC_TIMEOUT = 60_000

/** "numpy.ones" -> numpy, ones; "module:Qual.name" names an attribute path inside a module. */
export function pythonGlobal(name: string | PyGlobal): PyGlobal {
  if (name instanceof PyGlobal) return name
  if (typeof name !== 'string') throw new TypeError(`expected a Python function's qualified name like "numpy.ones", got ${typeof name}`)
  const colon = name.indexOf(':')
  if (colon > 0 && colon < name.length - 1) return new PyGlobal(name.slice(0, colon), name.slice(colon + 1))
  const dot = name.lastIndexOf('.')
  if (dot <= 0 || dot === name.length - 1 || /\s/.test(name)) {
    throw new TypeError(`expected a Python function's qualified name like "numpy.ones" or "module:Class.method", got ${JSON.stringify(name)}`)
  }
  return new PyGlobal(name.slice(0, dot), name.slice(dot + 1))
}

/** A stream message as the close error names it: its op, and its keys when it has some. */
function describeStreamMessage(m: unknown): string {
  const op = String(field(m, 'op'))
  const keys = field(m, 'keys')
  const list = keys instanceof Set ? [...keys] : Array.isArray(keys) ? keys : []
  if (list.length === 0) return op
  return `${op} of ${list.length === 1 ? `key ${String(list[0])}` : `${list.length} keys (${String(list[0])}, ...)`}`
}

function uuidHex(): string {
  return randomUUID().replaceAll('-', '')
}

function typeName(v: unknown): string {
  if (v instanceof NDArray || (ArrayBuffer.isView(v) && !(v instanceof Uint8Array))) return 'ndarray'
  if (v instanceof Uint8Array) return 'bytes'
  if (v === null || v === undefined) return 'NoneType'
  if (typeof v === 'string') return 'str'
  if (typeof v === 'number') return Number.isInteger(v) ? 'int' : 'float'
  if (typeof v === 'bigint') return 'int'
  if (typeof v === 'boolean') return 'bool'
  if (v instanceof Tuple) return 'tuple'
  if (Array.isArray(v)) return 'list'
  if (v instanceof Map || Object.getPrototypeOf(v) === Object.prototype) return 'dict'
  return (v as object).constructor?.name ?? 'object'
}

function typeOfPickle(bytes: unknown): string | null {
  const t = loadOpaque(bytes)
  return t instanceof PyGlobal ? `${t.module}.${t.name}` : null
}

/** A Dask client connected to one scheduler. Make one with DaskClient.connect. */
export class DaskClient {
  readonly id: string
  readonly #stats: DaskStats
  /** The version warning the scheduler sent with "stream-start" (it compares package versions), or ''. */
  versionWarning = ''
  /** The scheduler's host and package versions, as it answered the "versions" op at connect. */
  readonly versions: DaskVersions
  /** The scheduler's distributed version ("2024.12.1+ds"), from versions. */
  readonly daskVersion: string
  /** How this client writes graphs for that version (see graph.ts and docs/dask.md). */
  readonly graphForm: GraphForm
  /** The ops of the last batch sent on the stream, to name it when the scheduler drops the stream right after. */
  #lastSent = ''
  #status: DaskClientStatus = 'running'
  #stream: DaskComm
  #futures = new Map<string, DaskFuture>()
  #outbox: unknown[] = []
  #flushing = false
  #heartbeat: NodeJS.Timeout | null = null
  #idle: DaskComm[] = []
  #comms = new Set<DaskComm>()
  #closeError: TransportError | null = null
  readonly #options: DaskClientOptions

  private constructor(readonly address: string, stream: DaskComm, id: string, options: DaskClientOptions, versions: DaskVersions, graphForm: GraphForm) {
    this.#stream = stream
    this.id = id
    this.versions = versions
    this.daskVersion = String(versions.packages.get('distributed'))
    this.graphForm = graphForm
    this.#options = options
    this.#stats = options.stats!
  }

  /** A snapshot of the counters over every comm of this client (messages, bytes, frames decompressed, merges copied). */
  stats(): DaskStats {
    return { ...this.#stats, decompressed: { ...this.#stats.decompressed } }
  }

  /**
   * Connects to the scheduler at address ("tcp://host:8786", "ws://host:port"), registers as a
   * client and opens the stream. Rejects with TransportError('TIMEOUT') when the scheduler does
   * not answer within options.timeout (default 10 s), ('REMOTE') when it refuses the client.
   */
  static async connect(address: string, options: DaskClientOptions = {}): Promise<DaskClient> {
    parseDaskAddress(address)
    checkOptions('DaskClient.connect', options, CLIENT_OPTIONS)
    checkCommOptions(options, 'DaskClient.connect', null)
    if (options.id !== undefined && typeof options.id !== 'string') throw badOptionType('DaskClient.connect', 'id', 'a string', options.id)
    if (options.onMessage !== undefined && typeof options.onMessage !== 'function') throw badOptionType('DaskClient.connect', 'onMessage', 'a function', options.onMessage)
    for (const [name, v] of [['heartbeatInterval', options.heartbeatInterval], ['rpcTimeout', options.rpcTimeout], ['maxIdleComms', options.maxIdleComms]] as const) {
      if (v !== undefined && (!Number.isFinite(v) || v < 0)) throw new TypeError(`${name} must be a non-negative number, got ${String(v)}`)
    }
    const stats = options.stats ?? newStats()
    const opts: DaskClientOptions = { ...options, stats }
    const id = options.id ?? `Client-${randomUUID()}`
    const started = Date.now()
    const stream = await connectDask(address, commOptionsOf(opts))
    const left = (): number => Math.max(1, (options.timeout ?? 10_000) - (Date.now() - started))
    try {
      // The version decides how graphs are written; asked on the comm that then becomes the stream.
      await stream.write({ op: 'versions', reply: true })
      const answer = await stream.read({ timeout: left() })
      const versionsError = replyError('versions', answer)
      if (versionsError) throw versionsError
      const host = field(answer, 'host')
      const packages = field(answer, 'packages')
      if (!(packages instanceof Map)) {
        throw new TransportError('PROTOCOL', `the scheduler at ${address} answered "versions" with ${shown(answer)}, expected a map with "packages"`)
      }
      const versions: DaskVersions = { host: host instanceof Map ? host : new Map(), packages }
      const graphForm = graphFormFor(packages.get('distributed'), address)
      await stream.write({ op: 'register-client', client: id, reply: false, versions: { host: {}, packages: {} } })
      const first = await stream.read({ timeout: left() })
      const err = replyError('register-client', first)
      if (err) throw err
      const msgs = Array.isArray(first) ? first : [first]
      const start = msgs[0]
      if (field(start, 'op') !== 'stream-start') {
        throw new TransportError('PROTOCOL', `expected "stream-start" from the scheduler at ${address}, got ${shown(field(start, 'op') ?? typeof start)}`)
      }
      const failure = field(start, 'error')
      if (typeof failure === 'string' && failure !== '') throw new TransportError('REMOTE', `the scheduler refused the client: ${failure}`)
      const client = new DaskClient(stream.peer, stream, id, opts, versions, graphForm)
      const warning = field(start, 'warning')
      if (typeof warning === 'string') client.versionWarning = warning
      client.#start(msgs.slice(1))
      return client
    } catch (err) {
      stream.abort()
      throw err
    }
  }

  get status(): DaskClientStatus {
    return this.#status
  }

  /** Futures of this client not yet released, by key. */
  get futures(): ReadonlyMap<string, DaskFuture> {
    return this.#futures
  }

  #start(early: unknown[]): void {
    this.#stream.onClose((err) => this.#lost(err))
    for (const m of early) this.#handle(m)
    void this.#readLoop()
    const every = this.#options.heartbeatInterval ?? DEFAULT_HEARTBEAT
    if (every > 0) {
      this.#heartbeat = setInterval(() => this.#send({ op: 'heartbeat-client' }), every)
      this.#heartbeat.unref()
    }
  }

  async #readLoop(): Promise<void> {
    const ctx = { limits: this.#stream.limits, stats: this.#stats, deserialize: false }
    while (this.#status !== 'closed') {
      let frames: Uint8Array[]
      try {
        frames = await this.#stream.readFrames()
      } catch {
        return // the close listener reports it
      }
      let batch: unknown
      try {
        // Values stay serialized here, and are read one by one, so one unreadable value cannot hide the other messages.
        batch = loadsMessage(frames, ctx)
      } catch (err) {
        this.#lost(new TransportError('PROTOCOL', `unreadable message from the scheduler: ${(err as Error).message}`, { cause: err }))
        this.#stream.abort()
        return
      }
      for (const m of Array.isArray(batch) ? batch : [batch]) this.#handle(m)
    }
  }

  /** A value the stream left serialized; an unreadable one comes back as the TransportError that says why. */
  #value(v: unknown): unknown {
    if (!(v instanceof DaskSerialized)) return v
    try {
      return deserializeFromWire(v.header, v.frames, { limits: this.#stream.limits, stats: this.#stats, unpickler: this.#options.unpickler })
    } catch (err) {
      return err instanceof TransportError ? err : new TransportError('PROTOCOL', String(err), { cause: err })
    }
  }

  #handle(msg: unknown): void {
    if (!(msg instanceof Map)) return
    const op = msg.get('op')
    const key = msg.get('key')
    const future = typeof key === 'string' ? this.#futures.get(key) : undefined
    switch (op) {
      case 'key-in-memory':
        future?._finish(typeOfPickle(this.#value(msg.get('type'))))
        return
      case 'task-erred':
        future?._fail(taskError(String(key), this.#value(msg.get('exception')), this.#value(msg.get('traceback'))))
        return
      case 'cancelled-key':
        future?._fail(new TransportError('REMOTE', `the scheduler cancelled key ${String(key)}`), 'cancelled')
        return
      case 'cancelled-keys': {
        const keys = msg.get('keys')
        const reason = msg.get('reason')
        for (const k of Array.isArray(keys) ? keys : []) {
          const f = typeof k === 'string' ? this.#futures.get(k) : undefined
          f?._fail(new TransportError('REMOTE', `the scheduler cancelled key ${k}${typeof reason === 'string' ? ` (${reason})` : ''}`), 'cancelled')
        }
        return
      }
      case 'adjust-heartbeat-interval': {
        // The scheduler (2025.4 on) spaces heartbeats out as it gains clients (seconds); an
        // interval the application chose itself wins.
        const every = msg.get('interval')
        if (typeof every === 'number' && every > 0 && this.#heartbeat && this.#options.heartbeatInterval === undefined) {
          clearInterval(this.#heartbeat)
          this.#heartbeat = setInterval(() => this.#send({ op: 'heartbeat-client' }), Math.max(1000, every * 1000))
          this.#heartbeat.unref()
        }
        return
      }
      case 'lost-data':
      case 'task-retried':
        future?._reset()
        return
      case 'restart':
        for (const f of this.#futures.values()) f._fail(new TransportError('REMOTE', `the scheduler restarted; key ${f.key} is gone`), 'cancelled')
        return
      case 'stream-closed':
      case 'close':
        if (this.#status === 'running') this.#lost(new TransportError('CLOSED', `the scheduler at ${this.address} closed the client's stream`))
        return
      default:
        this.#options.onMessage?.(msg)
    }
  }

  /** The connection to the scheduler is gone: every pending future and request fails. */
  #lost(err: TransportError): void {
    if (this.#status === 'closed') return
    const closing = this.#status === 'closing'
    this.#status = 'closed'
    const after = this.#lastSent === '' ? '' : ` (the last message this client sent on the stream: ${this.#lastSent})`
    this.#closeError = closing ? new TransportError('CLOSED', 'the client is closed') : new TransportError('CLOSED', `lost the connection to the scheduler at ${this.address}: ${err.message}${after}`, { cause: err })
    if (this.#heartbeat) clearInterval(this.#heartbeat)
    for (const c of this.#comms) c.abort()
    this.#comms.clear()
    this.#idle = []
    for (const f of this.#futures.values()) {
      if (!f.done) f._fail(this.#closeError, 'cancelled')
    }
    this.#stream.abort()
  }

  #check(): void {
    if (this.#status !== 'running') throw this.#closeError ?? new TransportError('CLOSED', 'the client is closing')
  }

  /** Queues a stream message; the queue is sent as one list on the next turn of the event loop. */
  #send(msg: { op: string } & Record<string, unknown>): void {
    if (!STREAM_OPS.has(msg.op)) throw new TypeError(`not a client stream op: ${msg.op}`)
    if (this.#status === 'closed') return
    this.#outbox.push(msg)
    if (!this.#flushing) {
      this.#flushing = true
      setImmediate(() => void this.#flush())
    }
  }

  async #flush(): Promise<void> {
    this.#flushing = false
    const batch = this.#outbox
    this.#outbox = []
    if (batch.length === 0 || !this.#stream.open) return
    const named = batch.filter((m) => field(m, 'op') !== 'heartbeat-client')
    if (named.length > 0) this.#lastSent = named.map(describeStreamMessage).join(', ')
    try {
      await this.#stream.write(batch)
    } catch {
      // a closed stream is reported by its close listener
    }
  }

  #taskArg(v: unknown, deps: Set<string>, depth: number): unknown {
    if (depth > 100) throw new TypeError('task arguments nest deeper than 100 levels')
    if (v instanceof DaskFuture) {
      if (this.#futures.get(v.key) !== v) {
        throw new TransportError('CLOSED', `future ${v.key} ${v.status === 'released' ? 'was released' : 'belongs to another client'}`)
      }
      deps.add(v.key)
      return new FutureRef(v.key)
    }
    if (v instanceof Tuple) return Tuple.fromItems(v.map((x) => this.#taskArg(x, deps, depth + 1)))
    if (Array.isArray(v) && v.constructor === Array) return v.map((x) => this.#taskArg(x, deps, depth + 1))
    if (v instanceof Map && v.constructor === Map) return new Map([...v].map(([k, x]) => [k, this.#taskArg(x, deps, depth + 1)]))
    if (v !== null && typeof v === 'object' && Object.getPrototypeOf(v) === Object.prototype) {
      return new Map(Object.entries(v).map(([k, x]) => [k, this.#taskArg(x, deps, depth + 1)]))
    }
    return v
  }

  /**
   * Runs fn(...args, **kwargs) on a worker and returns its future at once, as Dask's
   * Client.submit. fn is a Python function's qualified name ("numpy.ones", "operator.add",
   * "module:Class.method") or a PyGlobal. Arguments are pickled: literals, TypedArrays and
   * NDArrays (as numpy arrays, out of band), and other futures of this client, whose results
   * the worker puts in their place. A Tuple argument whose first item is a PyGlobal (directly or
   * in a list) is itself run as a call on the worker first (Dask's nested tasks). Arguments
   * travel inside the graph's pickle: scatter large arrays first to send them as frames of
   * their own. Throws at once when an argument cannot be pickled or the client is closed.
   */
  submit(fn: string | PyGlobal, args: readonly unknown[] = [], options: SubmitOptions = {}): DaskFuture {
    checkOptions('DaskClient.submit', options, SUBMIT_OPTIONS)
    this.#check()
    if (!Array.isArray(args)) throw new TypeError(`submit's args must be an array of the call's arguments, got ${typeof args}`)
    const callable = pythonGlobal(fn)
    const key = options.key ?? `${callable.name.split('.').pop()}-${uuidHex()}`
    return this.#submitCalls(callable, [args], [key], options)[0]!
  }

  /**
   * Runs fn once per item of the iterables, zipped (fn(a[0], b[0]), fn(a[1], b[1]), ...), all in
   * one update-graph, as Dask's Client.map; returns the futures in order. The iterables are
   * arrays of equal length; kwargs, priority, retries and workers apply to every call. Keys
   * are '<key or function name>-<uuid>' unless options.keys names each.
   */
  map(fn: string | PyGlobal, iterables: readonly (readonly unknown[])[], options: MapOptions = {}): DaskFuture[] {
    checkOptions('DaskClient.map', options, MAP_OPTIONS)
    this.#check()
    const callable = pythonGlobal(fn)
    if (!Array.isArray(iterables) || iterables.length === 0 || !iterables.every(Array.isArray)) {
      throw new TypeError('map expects a non-empty array of argument arrays, one per parameter: map(fn, [xs, ys])')
    }
    const n = iterables[0]!.length
    for (const [i, it] of iterables.entries()) {
      if (it.length !== n) throw new TypeError(`map's argument arrays differ in length: array 0 has ${n} items, array ${i} has ${it.length}`)
    }
    const prefix = options.key ?? callable.name.split('.').pop()!
    if (typeof prefix !== 'string') throw new TypeError(`map's key must be a string prefix, got ${typeof prefix}`)
    const keys = options.keys ?? Array.from({ length: n }, () => `${prefix}-${uuidHex()}`)
    if (!Array.isArray(keys) || keys.length !== n) throw new TypeError(`map got ${n} calls but ${Array.isArray(keys) ? keys.length : typeof keys} keys`)
    if (n === 0) return []
    const calls = Array.from({ length: n }, (_, i) => iterables.map((it) => it[i]))
    return this.#submitCalls(callable, calls, keys, options)
  }

  #checkTaskOptions(options: SubmitOptions): void {
    const { priority, retries, workers } = options
    if (priority !== undefined && !Number.isSafeInteger(priority)) throw new TypeError(`priority must be an integer, got ${String(priority)}`)
    if (retries !== undefined && (!Number.isSafeInteger(retries) || retries < 0)) throw new TypeError(`retries must be a non-negative integer, got ${String(retries)}`)
    if (workers !== undefined && (!Array.isArray(workers) || !workers.every((w) => typeof w === 'string'))) {
      throw new TypeError(`workers must be an array of worker addresses or names, got ${shown(workers)}`)
    }
    if (options.kwargs !== undefined && !(options.kwargs instanceof Map) && (options.kwargs === null || typeof options.kwargs !== 'object' || Array.isArray(options.kwargs))) {
      throw new TypeError(`kwargs must be an object or a Map of keyword arguments, got ${shown(options.kwargs)}`)
    }
  }

  #submitCalls(callable: PyGlobal, calls: (readonly unknown[])[], keys: string[], options: SubmitOptions): DaskFuture[] {
    this.#checkTaskOptions(options)
    const seen = new Set<string>()
    for (const k of keys) {
      if (typeof k !== 'string' || k === '') throw new TypeError(`a key must be a non-empty string, got ${shown(k)}`)
      if (this.#futures.has(k) || seen.has(k)) throw new TypeError(`key ${JSON.stringify(k)} is already used by a future of this client`)
      seen.add(k)
    }
    const tasks: TaskCall[] = calls.map((args, i) => {
      const deps = new Set<string>()
      const callArgs = args.map((a) => this.#taskArg(a, deps, 0))
      const kw = options.kwargs === undefined ? null : this.#taskArg(options.kwargs instanceof Map ? options.kwargs : { ...options.kwargs }, deps, 0) as Map<string, unknown>
      if (kw !== null) for (const k of kw.keys()) if (typeof k !== 'string') throw new TypeError(`keyword argument names must be strings, got ${shown(k)}`)
      return { key: keys[i]!, fn: callable, args: callArgs, kwargs: kw, deps: [...deps] }
    })
    // Pickled now, so that a value the pickler refuses fails this call, not a later batch.
    const pickler = { ...this.#options.pickler, protocol: Math.min(this.#stream.settings.pickleProtocol, 5) }
    const order = new Map(keys.map((k, i) => [k, i]))
    const msg = updateGraphMessage(this.graphForm, tasks, { priority: options.priority, retries: options.retries, workers: options.workers, order, version: parseDaskVersion(this.daskVersion) }, pickler, `${keys[0]}-graph`)
    const futures = keys.map((k) => {
      const f = new DaskFuture(k, this)
      this.#futures.set(k, f)
      return f
    })
    this.#send(msg)
    return futures
  }

  #rpcTimeout(timeout: number | undefined): number {
    const t = timeout ?? this.#options.rpcTimeout ?? DEFAULT_RPC_TIMEOUT
    if (!Number.isFinite(t) || t < 0) throw new TypeError(`timeout must be a non-negative number of milliseconds, got ${String(timeout)}`)
    return t
  }

  async #acquire(deadline: number): Promise<DaskComm> {
    while (this.#idle.length > 0) {
      const c = this.#idle.pop()!
      if (c.open) return c
    }
    const left = deadline === Infinity ? this.#options.timeout ?? 10_000 : Math.max(1, deadline - Date.now())
    const comm = await connectDask(this.address, { ...commOptionsOf(this.#options), timeout: left })
    if (this.#status !== 'running') {
      comm.abort()
      this.#check()
    }
    this.#comms.add(comm)
    comm.onClose(() => this.#comms.delete(comm))
    return comm
  }

  #putBack(comm: DaskComm): void {
    if (!comm.open || this.#status !== 'running') return
    if (this.#idle.length < (this.#options.maxIdleComms ?? 4)) this.#idle.push(comm)
    else void comm.close()
  }

  /**
   * Sends {"op": op, ...args, "reply": true} to the scheduler on a request comm and returns the
   * reply. A reply with an error status becomes a DaskRemoteError with the Python exception and
   * traceback; a None reply an error that says the op may not exist (see RpcOptions.allowNull).
   */
  async rpc(op: string, args: Record<string, unknown> = {}, options: RpcOptions = {}): Promise<unknown> {
    checkOptions('DaskClient.rpc', options, RPC_OPTIONS)
    const reply = await this.#request(op, args, options.timeout)
    if (reply === null && !options.allowNull) {
      throw new TransportError('PROTOCOL', `op ${JSON.stringify(op)} got None from the scheduler at ${this.address}: it has no handler of that name (or the handler returns None; pass allowNull)`)
    }
    const err = replyError(op, reply)
    if (err) throw err
    return reply
  }

  /**
   * One request and its reply, as it came. A request that gives up (timeout, signal) drops its
   * comm: a reply that came later would answer the next request's question.
   */
  async #request(op: string, args: Record<string, unknown>, timeoutOption: number | undefined, signal?: AbortSignal): Promise<unknown> {
    this.#check()
    if (typeof op !== 'string' || op === '') throw new TypeError(`op must be a non-empty string, got ${JSON.stringify(op)}`)
    const timeout = this.#rpcTimeout(timeoutOption)
    const deadline = timeout === 0 ? Infinity : Date.now() + timeout
    signal?.throwIfAborted()
    const comm = await this.#acquire(deadline)
    let reply: unknown
    try {
      signal?.throwIfAborted()
      await comm.write({ ...args, op, reply: true })
      reply = await comm.read(deadline === Infinity ? { signal } : { timeout: Math.max(1, deadline - Date.now()), signal })
    } catch (err) {
      comm.abort()
      if (this.#closeError && err instanceof TransportError && err.code === 'CLOSED') throw this.#closeError
      if (err instanceof TransportError && err.code === 'TIMEOUT') {
        throw new TransportError('TIMEOUT', `op ${JSON.stringify(op)} got no reply from ${this.address} within ${timeout} ms`, { cause: err })
      }
      throw err
    }
    this.#putBack(comm)
    return reply
  }

  #own(futures: readonly DaskFuture[]): void {
    for (const f of futures) {
      if (!(f instanceof DaskFuture)) throw new TypeError(`expected DaskFutures, got ${typeof f}`)
      if (this.#futures.get(f.key) !== f) {
        throw new TransportError('CLOSED', `future ${f.key} ${f.status === 'released' ? 'was released' : 'belongs to another client'}`)
      }
    }
  }

  /**
   * The values of futures, in order, once all are in memory. Rejects with the first failed
   * task's DaskRemoteError, TransportError('TIMEOUT') when the timeout (default: rpcTimeout)
   * runs out, or the signal's reason when it aborts. NumPy arrays come back as NDArrays whose
   * data views the frames they arrived in.
   */
  async gather(futures: readonly DaskFuture[], options: GatherOptions = {}): Promise<unknown[]> {
    checkOptions('DaskClient.gather', options, GATHER_OPTIONS)
    checkSignal('DaskClient.gather', options.signal)
    options.signal?.throwIfAborted()
    this.#check()
    this.#own(futures)
    const timeout = this.#rpcTimeout(options.timeout)
    const { signal } = options
    const started = Date.now()
    await Promise.all(futures.map((f) => f.wait({ timeout, signal })))
    const keys = [...new Set(futures.map((f) => f.key))]
    if (keys.length === 0) return []
    const left = timeout === 0 ? 0 : Math.max(1, timeout - (Date.now() - started))
    const reply = await this.#request('gather', { keys }, left, signal)
    const status = field(reply, 'status')
    if (status === 'error' && field(reply, 'exception') === undefined) {
      // The scheduler's answer when no worker holding a key answered: {"status": "error", "keys": [...]}.
      const missing = field(reply, 'keys')
      const names = missing instanceof Map ? [...missing.keys()].map(String) : Array.isArray(missing) ? missing.map(String) : keys
      throw new TransportError('REMOTE', `the scheduler could not gather key${names.length === 1 ? '' : 's'} ${names.join(', ')}: no worker that held ${names.length === 1 ? 'it' : 'them'} answered (lost or gone)`)
    }
    const err = replyError('gather', reply)
    if (err) throw err
    if (status !== 'OK') throw new TransportError('PROTOCOL', `gather reply has status ${shown(status)}, expected "OK" or "error"`)
    const data = field(reply, 'data')
    if (!(data instanceof Map)) throw new TransportError('PROTOCOL', 'gather reply has no "data" map')
    return futures.map((f) => {
      if (!data.has(f.key)) throw new TransportError('PROTOCOL', `gather reply lacks key ${f.key}`)
      return data.get(f.key)
    })
  }

  /**
   * Sends values from Node to the workers (through the scheduler, as Dask's scatter with
   * direct=False) and returns their futures, already finished. NDArrays and TypedArrays travel
   * as numpy arrays (Dask's "dask" serializer: dtype, shape, strides and one frame), anything
   * else pickled.
   */
  async scatter(values: readonly unknown[], options: ScatterOptions = {}): Promise<DaskFuture[]> {
    checkOptions('DaskClient.scatter', options, SCATTER_OPTIONS)
    this.#check()
    const keys = options.keys ?? values.map((v) => `${typeName(v)}-${uuidHex()}`)
    if (keys.length !== values.length) throw new TypeError(`scatter got ${values.length} values but ${keys.length} keys`)
    for (const k of keys) if (this.#futures.has(k)) throw new TypeError(`key ${JSON.stringify(k)} is already used by a future of this client`)
    const data = new Map<string, unknown>(keys.map((k, i) => [k, new DaskSerialize(values[i])]))
    const reply = await this.rpc('scatter', {
      data,
      workers: options.workers ?? null,
      client: this.id,
      broadcast: options.broadcast ?? false,
      // seconds the scheduler waits for a running worker
      timeout: Math.max(1, Math.floor(this.#rpcTimeout(options.timeout) / 1000)),
    }, { timeout: options.timeout })
    if (!Array.isArray(reply)) throw new TransportError('PROTOCOL', 'scatter reply is not a list of keys')
    return keys.map((k, i) => {
      const f = this.#futures.get(k) ?? new DaskFuture(k, this)
      this.#futures.set(k, f)
      f._finish(values[i] instanceof NDArray || ArrayBuffer.isView(values[i]) ? 'numpy.ndarray' : null)
      return f
    })
  }

  /**
   * Waits until the futures are done (finished, failed or cancelled), as Dask's wait():
   * 'ALL_COMPLETED' (the default), 'FIRST_COMPLETED' or 'FIRST_EXCEPTION'. Resolves with the
   * futures done and not done, in the order given; a failed future does not make it reject.
   * Rejects with TransportError('TIMEOUT') when options.timeout runs out first, or with the
   * signal's reason when options.signal aborts.
   */
  async wait(futures: readonly DaskFuture[], options: DaskWaitOptions = {}): Promise<{ done: DaskFuture[]; notDone: DaskFuture[] }> {
    checkOptions('DaskClient.wait', options, WAIT_OPTIONS)
    checkSignal('DaskClient.wait', options.signal)
    const { signal } = options
    signal?.throwIfAborted()
    this.#check()
    if (!Array.isArray(futures)) throw new TypeError(`wait expects an array of DaskFutures, got ${typeof futures}`)
    this.#own(futures)
    const returnWhen = options.returnWhen ?? 'ALL_COMPLETED'
    if (returnWhen !== 'ALL_COMPLETED' && returnWhen !== 'FIRST_COMPLETED' && returnWhen !== 'FIRST_EXCEPTION') {
      throw new TypeError(`returnWhen must be 'ALL_COMPLETED', 'FIRST_COMPLETED' or 'FIRST_EXCEPTION', got ${shown(returnWhen)}`)
    }
    const timeout = options.timeout ?? 0
    checkMilliseconds('DaskClient.wait', 'timeout', timeout)
    const split = (): { done: DaskFuture[]; notDone: DaskFuture[] } => ({ done: futures.filter((f) => f.done), notDone: futures.filter((f) => !f.done) })
    const enough = (): boolean => {
      if (futures.every((f) => f.done)) return true
      if (returnWhen === 'FIRST_COMPLETED') return futures.some((f) => f.done)
      if (returnWhen === 'FIRST_EXCEPTION') return futures.some((f) => f.status === 'error' || f.status === 'cancelled')
      return false
    }
    if (enough()) return split()
    await waitFor<void>('DaskClient.wait', { signal }, (settle) => {
      let timer: ReturnType<typeof setTimeout> | undefined
      const check = (): void => {
        if (!enough()) return
        clearTimeout(timer)
        settle.resolve()
      }
      for (const f of futures) f.wait().then(check, check)
      if (timeout > 0) {
        timer = setTimeout(() => {
          const left = futures.filter((f) => !f.done).length
          settle.reject(new TransportError('TIMEOUT', `${left} of ${futures.length} futures were not done within ${timeout} ms`))
        }, timeout)
      }
      return () => clearTimeout(timer)
    })
    return split()
  }

  /**
   * The futures in the order they become done (finished, failed or cancelled), as Dask's
   * as_completed: for await (const f of client.asCompleted(fs)) { ... }. A failed future is
   * yielded like the others (see its status and error). Stops early when the loop breaks.
   */
  async *asCompleted(futures: readonly DaskFuture[]): AsyncGenerator<DaskFuture> {
    this.#check()
    if (!Array.isArray(futures)) throw new TypeError(`asCompleted expects an array of DaskFutures, got ${typeof futures}`)
    this.#own(futures)
    const ready: DaskFuture[] = []
    let wake: (() => void) | null = null
    for (const f of futures) {
      const settle = (): void => {
        ready.push(f)
        wake?.()
      }
      f.wait().then(settle, settle)
    }
    for (let yielded = 0; yielded < futures.length; yielded++) {
      while (ready.length === 0) await new Promise<void>((resolve) => (wake = resolve))
      wake = null
      yield ready.shift()!
    }
  }

  /**
   * Asks the scheduler to stop these futures' tasks and forget them, as Dask's cancel(): their
   * futures fail with TransportError('REMOTE') and status 'cancelled' when the scheduler
   * confirms; results already computed are dropped. force also cancels keys other clients want.
   */
  async cancel(futures: readonly DaskFuture[], options: { force?: boolean; reason?: string } = {}): Promise<void> {
    this.#check()
    if (!Array.isArray(futures)) throw new TypeError(`cancel expects an array of DaskFutures, got ${typeof futures}`)
    this.#own(futures)
    if (futures.length === 0) return
    const reason = options.reason ?? 'cancelled by the Node client'
    const args: Record<string, unknown> = { keys: futures.map((f) => f.key), client: this.id, force: options.force ?? false }
    // From 2025.4 the handler takes (and requires) the reason and the message it reports.
    if (this.graphForm === 'expr') Object.assign(args, { reason, msg: reason })
    await this.rpc('cancel', args, { allowNull: true })
    for (const f of futures) if (!f.done) f._fail(new TransportError('REMOTE', `key ${f.key} was cancelled (${reason})`), 'cancelled')
  }

  /**
   * The software of the scheduler and of each worker, as Dask's get_versions() shows them:
   * { scheduler: {host, packages}, workers: {address: {host, packages}} }.
   */
  async getVersions(options: { timeout?: number } = {}): Promise<{ scheduler: DaskVersions; workers: Map<string, DaskVersions> }> {
    const scheduler = await this.rpc('versions', {}, options)
    const workers = await this.rpc('broadcast', { msg: { op: 'versions' } }, options)
    const asVersions = (v: unknown): DaskVersions => {
      const host = field(v, 'host')
      const packages = field(v, 'packages')
      return { host: host instanceof Map ? host : new Map(), packages: packages instanceof Map ? packages : new Map() }
    }
    return {
      scheduler: asVersions(scheduler),
      workers: new Map(workers instanceof Map ? [...workers].map(([k, v]) => [String(k), asVersions(v)]) : []),
    }
  }

  /** Tells the scheduler this client no longer needs these keys; it may forget them. */
  release(...futures: DaskFuture[]): void {
    const keys: string[] = []
    for (const f of futures) {
      if (this.#futures.get(f.key) !== f) continue
      this.#futures.delete(f.key)
      f._fail(new TransportError('CLOSED', `future ${f.key} was released`), 'released')
      keys.push(f.key)
    }
    if (keys.length > 0 && this.#status === 'running') this.#send({ op: 'client-releases-keys', keys, client: this.id })
  }

  /**
   * Says goodbye to the scheduler ("close-client", "close-stream"), closes every comm and fails
   * pending futures with TransportError('CLOSED'). Waits at most timeout ms (default 2,000) for
   * the scheduler to close the stream.
   */
  async close(options: { timeout?: number } = {}): Promise<void> {
    if (this.#status !== 'running') return
    this.#send({ op: 'close-client' })
    this.#send({ op: 'close-stream' })
    this.#status = 'closing'
    await this.#flush()
    const timeout = options.timeout ?? 2000
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, timeout)
      this.#stream.onClose(() => {
        clearTimeout(timer)
        resolve()
      })
    })
    this.#lost(new TransportError('CLOSED', 'the client is closed'))
  }
}
