/**
 * The interop corpus: pickles that CPython made (test/interop/make_pickles.py), each with the
 * description of what CPython itself loads from it. One python3 process makes all of them.
 */
import { fileURLToPath } from 'node:url'
import { PyGlobal, Tuple, type FindClass, type UnpicklerOptions } from '@picklewire/codec'
import type { Desc } from './expect.js'
import { runPython } from './python.js'

export const MAKE_PICKLES = fileURLToPath(new URL('../interop/make_pickles.py', import.meta.url))

export interface CorpusBuffer {
  bytes: Uint8Array
  readonly: boolean
}

export interface CorpusCase {
  name: string
  /** The protocol CPython wrote, or null for a hand-written Python 2 pickle. */
  protocol: number | null
  pickle: Uint8Array
  buffers: CorpusBuffer[]
  /** Unpickler options, as the Python side used them. */
  options: { encoding?: string; errors?: string; fixImports?: boolean }
  /** What CPython loaded, or null when it refused the pickle. */
  expect: Desc | null
  /** The exception CPython raised, or null. */
  error: string | null
}

export interface CorpusStream {
  pickle: Uint8Array
  /** CPython cleared the Unpickler's memo between loads (independent pickles of protocols 4 and 5). */
  clearMemo: boolean
  /** What CPython's Unpickler loaded from the stream, one after the other. */
  expect: Desc[]
}

export interface Corpus {
  /** pickle.dumps of every value at every protocol, as CPython writes them. */
  cases: CorpusCase[]
  /** Pickles CPython reads but would not write so: hand-written Python 2 ones, reducer-made calls. */
  crafted: CorpusCase[]
  streams: Record<string, CorpusStream>
}

function fromBase64(s: string): Uint8Array {
  const b = Buffer.from(s, 'base64')
  return new Uint8Array(b.buffer, b.byteOffset, b.byteLength).slice()
}

let cached: Corpus | undefined

/** Runs make_pickles.py once per process. */
export function loadCorpus(): Corpus {
  if (cached) return cached
  type RawCase = Omit<CorpusCase, 'pickle' | 'buffers'> & { pickle: string; buffers: { b64: string; readonly: boolean }[] }
  const raw = JSON.parse(runPython(`import runpy; runpy.run_path(${JSON.stringify(MAKE_PICKLES)}, run_name='__main__')`).toString('utf8')) as {
    cases: RawCase[]
    crafted: RawCase[]
    streams: Record<string, { pickle: string; clearMemo: boolean; expect: Desc[] }>
  }
  const decode = (c: RawCase): CorpusCase => ({
    ...c,
    pickle: fromBase64(c.pickle),
    buffers: c.buffers.map((b) => ({ bytes: fromBase64(b.b64), readonly: b.readonly })),
  })
  cached = {
    cases: raw.cases.map(decode),
    crafted: raw.crafted.map(decode),
    streams: Object.fromEntries(Object.entries(raw.streams).map(([k, s]) => [k, { ...s, pickle: fromBase64(s.pickle) }])),
  }
  return cached
}

/** The class make_pickles.py registers as mymod.Point; an instance keeps the call's arguments. */
export class CorpusPoint {
  constructor(args: readonly unknown[] | null) {
    if (args !== null) (this as Record<string, unknown>).args = Tuple.fromItems(args)
  }
}

export const POINT = new PyGlobal('mymod', 'Point', {
  call: (args) => new CorpusPoint(args),
  newObject: () => new CorpusPoint(null),
})

/** find_class of make_pickles.py: mymod.Point, then the default registry. */
export const corpusFindClass: FindClass = (module, name, defaultFindClass) =>
  module === 'mymod' && name === 'Point' ? POINT : defaultFindClass(module, name)

/** The Unpickler options that match how CPython loaded a case. */
export function caseOptions(c: CorpusCase, extra: UnpicklerOptions = {}): UnpicklerOptions {
  const options: UnpicklerOptions = { findClass: corpusFindClass, ...extra }
  if (c.options.encoding !== undefined) options.encoding = c.options.encoding
  if (c.options.errors !== undefined) options.errors = c.options.errors
  if (c.options.fixImports !== undefined) options.fixImports = c.options.fixImports
  if (c.buffers.length > 0) options.buffers = c.buffers.map((b) => b.bytes.slice())
  return options
}

/** A short label for a case. */
export function caseLabel(c: CorpusCase): string {
  return c.protocol === null ? c.name : `${c.name} @ protocol ${c.protocol}`
}
