/**
 * How "update-graph" carries tasks, per distributed release (distributed/client.py
 * _graph_to_futures and scheduler.py update_graph of each):
 *
 *   'tasks'      2022.12 to 2023.3: {"tasks": {key: run_spec}, "dependencies": {key: [keys]}},
 *                the run_spec {"function", "args", "kwargs"} pickled separately (worker.py
 *                dumps_task); the scheduler never unpickles them. Priority, retries and worker
 *                restrictions are fields of their own.
 *   'tuples'     2023.4 to 2024.10: "graph_header"/"graph_frames", the pickle family's header
 *                and frames of ToPickle(HighLevelGraph({name: MaterializedLayer({key: task})})),
 *                each task a legacy tuple (func, *args), or (apply, func, [args], {kwargs}) with
 *                keywords. Futures are WrappedKey(key): the scheduler's unpack_remotedata swaps
 *                each for its key and records it as a dependency (a bare key string would only
 *                count as one when that key is in the same graph). Options travel as
 *                "annotations". "code" is a plain field before 2023.6 (sent as None) and a
 *                ToPickle after; "span_metadata" exists from 2024.5.2, which requires it.
 *   'hlg'        2024.11 to 2025.3: the same graph fields and annotations, the keys as a set,
 *                the layer's tasks dask._task_spec objects (Task, futures as Alias(key)).
 *   'expr'       2025.4 on: "expr_ser", a serialized pickle of LLGExpr({key: Task}).
 *
 * Tasks of the last two are written as calls of dask._task_spec's public constructors inside
 * the pickle (Task, Alias, List, Tuple, Dict), never as their pickled state, which differs
 * between releases.
 */
import { PyGlobal, PyObject, Tuple, dumps, type PicklerOptions } from '@picklewire/codec'
import { TransportError } from '../errors.js'
import { DaskSerialized } from './serialize.js'
import { DaskToPickle } from './protocol.js'

export type GraphForm = 'tasks' | 'tuples' | 'hlg' | 'expr'

/** A future of this client inside task arguments: the worker puts the key's value in its place. */
export class FutureRef {
  constructor(readonly key: string) {}
}

/** One call to run: the key, the Python function, its arguments (futures as FutureRef). */
export interface TaskCall {
  key: string
  fn: PyGlobal
  args: unknown[]
  kwargs: Map<string, unknown> | null
  /** Keys of the futures the arguments refer to. */
  deps: string[]
}

/** What applies to every task of one update-graph. */
export interface GraphOptions {
  priority?: number
  retries?: number
  workers?: string[]
  /** Dask's internal priority of each key (its order in a map); lower runs first. */
  order: Map<string, number>
  /** The scheduler's distributed version: it decides the fields that changed within a form (absent: those of the form's first release). */
  version?: [number, number, number] | null
}

/** "2024.12.1+ds" -> [2024, 12, 1]; null when it is not a CalVer release number. */
export function parseDaskVersion(v: unknown): [number, number, number] | null {
  if (typeof v !== 'string') return null
  const m = /^(\d{4})\.(\d{1,2})\.(\d+)/.exec(v)
  return m ? [Number(m[1]), Number(m[2]), Number(m[3])] : null
}

function before(v: [number, number, number], y: number, m: number, patch = 0): boolean {
  return v[0] < y || (v[0] === y && (v[1] < m || (v[1] === m && v[2] < patch)))
}

/**
 * The graph form a scheduler of this distributed version reads. Throws TransportError
 * ('PROTOCOL') naming the version when this client cannot write any form it reads.
 */
export function graphFormFor(version: unknown, address: string): GraphForm {
  const v = parseDaskVersion(version)
  if (v === null) {
    throw new TransportError('PROTOCOL', `the scheduler at ${address} reports distributed version ${JSON.stringify(version)}, expected a release number like "2024.12.1"`)
  }
  if (before(v, 2022, 12)) {
    throw new TransportError('PROTOCOL', `the scheduler at ${address} runs distributed ${String(version)}: this client speaks 2022.12 and later`)
  }
  if (before(v, 2023, 4)) return 'tasks'
  if (before(v, 2024, 11)) return 'tuples'
  if (before(v, 2025, 4)) return 'hlg'
  return 'expr'
}

const APPLY = new PyGlobal('dask.utils', 'apply')
const EXECUTE_TASK = new PyGlobal('distributed.worker', 'execute_task')
const SPEC = 'dask._task_spec'
const TASK = new PyGlobal(SPEC, 'Task')
const ALIAS = new PyGlobal(SPEC, 'Alias')
const LIST = new PyGlobal(SPEC, 'List')
const TUPLE = new PyGlobal(SPEC, 'Tuple')
const DICT = new PyGlobal(SPEC, 'Dict')
const HIGH_LEVEL_GRAPH = new PyGlobal('dask.highlevelgraph', 'HighLevelGraph')
const MATERIALIZED_LAYER = new PyGlobal('dask.highlevelgraph', 'MaterializedLayer')
const TO_PICKLE = new PyGlobal('distributed.protocol.serialize', 'ToPickle')
const LLG_EXPR = new PyGlobal('dask._expr', 'LLGExpr')
const WRAPPED_KEY = new PyGlobal('distributed.utils_comm', 'WrappedKey')

/** fn(*args) inside the pickle: the unpickler calls it (REDUCE). */
function call(fn: PyGlobal, ...args: unknown[]): PyObject {
  return new PyObject(fn, 'reduce', Tuple.fromItems(args))
}

/** fn(*args, **kwargs) inside the pickle, through dask.utils.apply (REDUCE takes no keywords). */
function callWithKeywords(fn: PyGlobal, args: unknown[], kwargs: Map<string, unknown>): PyObject {
  return call(APPLY, fn, Tuple.fromItems(args), kwargs)
}

/** A Tuple whose first item is a Python global: Dask runs it as a call (a nested task). */
function isCall(v: unknown): v is Tuple {
  return v instanceof Tuple && v.length > 0 && v[0] instanceof PyGlobal
}

// ---- 'tasks': run_spec pickles, futures as their keys ----

/** An argument with each future replaced by what future(key) makes of it. */
function legacyArg(v: unknown, future: (key: string) => unknown): unknown {
  if (v instanceof FutureRef) return future(v.key)
  if (v instanceof Tuple) return Tuple.fromItems(v.map((x) => legacyArg(x, future)))
  if (Array.isArray(v)) return v.map((x) => legacyArg(x, future))
  if (v instanceof Map) return new Map([...v].map(([k, x]) => [k, legacyArg(x, future)]))
  return v
}

const asKey = (key: string): string => key

/** The task as Dask's own submit writes it before 2024.11: (func, *args), or (apply, func, [args], {kwargs}). */
function legacyTask(task: TaskCall, future: (key: string) => unknown): Tuple {
  const args = task.args.map((a) => legacyArg(a, future))
  if (task.kwargs === null || task.kwargs.size === 0) return Tuple.fromItems([task.fn, ...args])
  return Tuple.fromItems([APPLY, task.fn, args, legacyArg(task.kwargs, future)])
}

function hasCall(v: unknown, depth = 0): boolean {
  if (depth > 100) return false
  if (isCall(v)) return true
  if (Array.isArray(v)) return v.some((x) => hasCall(x, depth + 1))
  return false
}

function runSpec(task: TaskCall, pickler: PicklerOptions): Record<string, Uint8Array> {
  const args = task.args.map((a) => legacyArg(a, asKey))
  const kwargs = task.kwargs === null ? null : legacyArg(task.kwargs, asKey) as Map<string, unknown>
  if (args.some((a) => hasCall(a)) || (kwargs !== null && [...kwargs.values()].some((a) => hasCall(a)))) {
    // Nested calls run through distributed's execute_task, as Dask's own task tuples do.
    const tuple = kwargs === null ? Tuple.fromItems([task.fn, ...args]) : Tuple.fromItems([APPLY, task.fn, args, kwargs])
    return { function: dumps(EXECUTE_TASK, pickler), args: dumps(Tuple.fromItems([tuple]), pickler) }
  }
  const spec: Record<string, Uint8Array> = { function: dumps(task.fn, pickler), args: dumps(Tuple.fromItems(args), pickler) }
  if (kwargs !== null) spec.kwargs = dumps(kwargs, pickler)
  return spec
}

// ---- 'hlg' and 'expr': dask._task_spec objects made by their constructors ----

/** An argument as dask._task_spec's parse_input makes it: containers holding graph nodes become List/Tuple/Dict nodes. */
function specArg(v: unknown, depth: number): { value: unknown; node: boolean } {
  if (depth > 100) throw new TypeError('task arguments nest deeper than 100 levels')
  if (v instanceof FutureRef) return { value: call(ALIAS, v.key), node: true }
  if (isCall(v)) {
    const inner = v.slice(1).map((x) => specArg(x, depth + 1).value)
    return { value: call(TASK, null, v[0], ...inner), node: true }
  }
  if (v instanceof Tuple || Array.isArray(v)) {
    const items = (v as unknown[]).map((x) => specArg(x, depth + 1))
    if (!items.some((x) => x.node)) return { value: v, node: false }
    const values = items.map((x) => x.value)
    // One container argument: List(*items) with a single list item would take that list for the items.
    return v instanceof Tuple ? { value: call(TUPLE, Tuple.fromItems(values)), node: true } : { value: call(LIST, values), node: true }
  }
  if (v instanceof Map) {
    const entries = [...v].map(([k, x]) => [k, specArg(x, depth + 1)] as const)
    if (!entries.some(([, x]) => x.node)) return { value: v, node: false }
    return { value: call(DICT, new Map(entries.map(([k, x]) => [k, x.value]))), node: true }
  }
  return { value: v, node: false }
}

function specTask(task: TaskCall): PyObject {
  const args = [task.key, task.fn, ...task.args.map((a) => specArg(a, 0).value)]
  if (task.kwargs === null || task.kwargs.size === 0) return call(TASK, ...args)
  return callWithKeywords(TASK, args, new Map([...task.kwargs].map(([k, x]) => [k, specArg(x, 0).value])))
}

function annotations(options: GraphOptions): Map<string, unknown> {
  const out = new Map<string, unknown>()
  if (options.priority) out.set('priority', options.priority)
  if (options.workers && options.workers.length > 0) out.set('workers', options.workers)
  if (options.retries) out.set('retries', options.retries)
  return out
}

function picklePieces(value: unknown, pickler: PicklerOptions): { header: Record<string, unknown>; frames: Uint8Array[] } {
  const buffers: Uint8Array[] = []
  const writeable: boolean[] = []
  const outOfBand = (pickler.protocol ?? 5) >= 5
  const pickle = dumps(value, {
    ...pickler,
    bufferCallback: outOfBand
      ? (b) => {
          buffers.push(b.raw())
          writeable.push(!b.readonly)
          return false
        }
      : null,
  })
  return { header: { serializer: 'pickle', writeable }, frames: [pickle, ...buffers] }
}

/**
 * The "update-graph" message for these tasks in the given form. Values are pickled here, so a
 * value the pickler refuses fails the caller's call, not a later batch.
 */
export function updateGraphMessage(form: GraphForm, tasks: readonly TaskCall[], options: GraphOptions, pickler: PicklerOptions, name: string): { op: string } & Record<string, unknown> {
  const keys = tasks.map((t) => t.key)
  if (form === 'tasks') {
    const msg: { op: string } & Record<string, unknown> = {
      op: 'update-graph',
      tasks: Object.fromEntries(tasks.map((t) => [t.key, runSpec(t, pickler)])),
      dependencies: Object.fromEntries(tasks.map((t) => [t.key, t.deps])),
      keys,
      priority: Object.fromEntries(options.order),
      user_priority: options.priority ?? 0,
    }
    if (options.retries) msg.retries = Object.fromEntries(keys.map((k) => [k, options.retries]))
    if (options.workers && options.workers.length > 0) msg.restrictions = Object.fromEntries(keys.map((k) => [k, options.workers]))
    return msg
  }
  const common: { op: string } & Record<string, unknown> = {
    op: 'update-graph',
    keys: new Set(keys),
    internal_priority: Object.fromEntries(options.order),
    submitting_task: null,
    fifo_timeout: 0,
    actors: null,
    code: new DaskToPickle(Tuple.fromItems([])),
    annotations: new DaskToPickle(annotations(options)),
    span_metadata: new DaskToPickle(new Map([['collections', [new Map([['type', 'Future']])]]])),
  }
  if (form === 'tuples') {
    const v = options.version ?? null
    // As Dask's own client of these releases: the keys as a list; "code" a plain value before
    // 2023.6 (None adds no code block); "span_metadata" only from 2024.5.2, whose
    // update_graph requires it and whose predecessors refuse it as an unexpected keyword.
    common.keys = keys
    if (v === null || before(v, 2023, 6)) common.code = null
    if (v === null || before(v, 2024, 5, 2)) delete common.span_metadata
    const dsk = new Map(tasks.map((t) => [t.key, legacyTask(t, (key) => call(WRAPPED_KEY, key))]))
    const layer = call(MATERIALIZED_LAYER, dsk)
    const graph = call(HIGH_LEVEL_GRAPH, new Map([[name, layer]]), new Map([[name, new Set()]]))
    const { header, frames } = picklePieces(call(TO_PICKLE, graph), pickler)
    return { ...common, graph_header: header, graph_frames: frames }
  }
  const dsk = new Map(tasks.map((t) => [t.key, specTask(t)]))
  if (form === 'hlg') {
    const layer = call(MATERIALIZED_LAYER, dsk)
    const graph = call(HIGH_LEVEL_GRAPH, new Map([[name, layer]]), new Map([[name, new Set()]]))
    const { header, frames } = picklePieces(call(TO_PICKLE, graph), pickler)
    return { ...common, graph_header: header, graph_frames: frames }
  }
  const expr = callWithKeywords(LLG_EXPR, [dsk], new Map([['_determ_token', name]]))
  const { header, frames } = picklePieces(expr, pickler)
  return { ...common, expr_ser: new DaskSerialized(header, frames) }
}
