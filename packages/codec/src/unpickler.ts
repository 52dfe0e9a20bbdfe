/**
 * The unpickler: reads pickles of protocols 0 to 5. One loader per opcode, named after it,
 * dispatched through a 256-entry table built from the opcode table; state lives in the
 * LoadState instance, never in module variables.
 */
import { AllowList, type AllowPattern } from './allow.js'
import { EOFError, PickleError, UnpicklingError } from './errors.js'
import { GlobalRegistry, defaultGlobals, dictEntries, fixImport, isPlainObject, isPython2Module, spreadable } from './globals.js'
import { HIGHEST_PROTOCOL, OP, OPCODES, OPCODE_BY_CODE, type OpName } from './opcodes.js'
import { badOptionType, checkOptions, optionNames } from './options.js'
import { KeySpace, isPlainNumberKey } from './keys.js'
import { NDArray, NumpyScalar, keepPickledByteOrder } from './numpy.js'
import { PickleScanner, invalidLoadKey } from './scan.js'
import {
  MAX_INT_DIGITS, decodeAsciiStrict, decodeLatin1, decodePython2Str, decodeUtf8, decodeUtf8Strict, escapeDecode, hasEncodedSurrogatePair, hasEscapedSurrogatePair, rawUnicodeEscapeDecode,
} from './text.js'
import {
  ByteArray, Complex, Decimal, Deque, FrozenSet, PickleBuffer, PyDate, PyDateTime, PyFloat, PyGlobal, PyObject, PyObjectCall, PyOpaque, PyPersistentRef,
  PyRange, PySingleton, PyStr, PyTime, PyTimeDelta, PyTimeZone, Slice, Tuple, asBytesView, asTuple, describe, setState,
  type BufferSource, type PyObjectOrigin,
} from './types.js'

/** Bytes the unpickler reads from: any ArrayBuffer, SharedArrayBuffer or view of one. */
export type BytesLike = ArrayBuffer | SharedArrayBuffer | ArrayBufferView

/** A source of chunks for the streaming form (a Node Readable, a web ReadableStream, ...). */
export type ChunkSource = AsyncIterable<BytesLike> | Iterable<BytesLike>

/** Resolves a global; defaultFindClass is what the unpickler would do without the hook. */
export type FindClass = (module: string, name: string, defaultFindClass: (module: string, name: string) => unknown) => unknown

export interface UnpicklerOptions {
  /**
   * Out-of-band buffers for protocol 5's NEXT_BUFFER, consumed in order (Python's buffers=).
   * Each comes back as a PickleBuffer over the same memory, never a copy. Default: none, and a
   * pickle that needs one is an UnpicklingError.
   */
  buffers?: Iterable<BufferSource | PickleBuffer> | null
  /** Resolves globals (Python's find_class). Default: look up `globals`, refuse the rest. */
  findClass?: FindClass
  /** Resolves persistent ids (Python's persistent_load). Default: none; PERSID is an error. */
  persistentLoad?: (pid: unknown) => unknown
  /** The registry of allowed globals. Default: defaultGlobals (pure-data constructors). */
  globals?: GlobalRegistry
  /** Extension codes for EXT1/EXT2/EXT4, as copyreg.add_extension makes them. Default: none. */
  extensions?: ReadonlyMap<number, readonly [module: string, name: string]>
  /** How Python 2 str is decoded: an encoding name, or 'bytes' to keep bytes. Default 'ASCII'. */
  encoding?: string
  /** The error handler for that decoding: 'strict', 'replace', 'ignore', 'surrogateescape', ... Default 'strict'. */
  errors?: string
  /** Map Python 2 module and global names to Python 3 ones for protocols below 3. Default true. */
  fixImports?: boolean
  /**
   * How a dict comes back: 'map' (a Map, keeping keys of every type; the default) or 'object'
   * (a plain object; a non-string key is an UnpicklingError).
   */
  dict?: 'map' | 'object'
  /** Keep every distinction needed to pickle the value again: floats that are integral come back as PyFloat. Default false. */
  lossless?: boolean
  /**
   * false: a bytes value (BINBYTES, SHORT_BINBYTES, BINBYTES8) comes back as a Uint8Array view
   * over the input's memory instead of a copy, and so do in-band numpy arrays that are aligned.
   * The values then alias the input: whoever changes or reuses the input's memory changes them.
   * It applies to input in memory (loads, an Unpickler over bytes); reading a chunk source
   * always copies, since its window memory is reused. bytearray is always a copy (it is mutable
   * and its own object in Python). Default true, as Python's bytes is a separate object.
   */
  copyBytes?: boolean
  /**
   * Load unknown globals, the objects they make, unknown extension codes and unresolved
   * persistent ids as inert placeholders (PyGlobal, PyObject, PyPersistentRef) instead of
   * refusing them. Nothing is ever called. Default false.
   */
  opaque?: boolean
  /**
   * Globals outside the registry that load as inert placeholders, as the opaque mode loads
   * them (nothing is called; they pickle back as they came), while every other unknown global
   * is still refused. Each pattern is a full name ('pandas.core.frame.DataFrame': module, a dot,
   * qualified name) or a prefix ('pandas.core.internals.*': every global whose full name starts
   * with 'pandas.core.internals.'). builtins.getattr(x, name) loads too, as a placeholder, when
   * x is an allowed placeholder (a global, or such a getattr) and x's full name plus '.' plus
   * name is allowed; such placeholders may be instantiated and called as allowed globals are.
   * See ALLOW for lists made from what data libraries pickle. Not with opaque (which allows
   * everything). Default: none.
   */
  allow?: Iterable<AllowPattern>
  /** Deepest MARK nesting accepted. Default 10,000. */
  maxDepth?: number
  /**
   * Work budget of one load, against CPU amplification (a small pickle passing a big memoized
   * list to list() a million times): every call of a reconstructor (REDUCE, NEWOBJ, INST,
   * OBJ) and every BUILD is charged 1 plus the length of each argument it is handed (items of
   * a list, tuple, dict or set, characters of a str, bytes of a buffer), and a load that has
   * been charged more than its budget fails with an UnpicklingError. Default: 64 per byte of
   * the pickle and of its out-of-band buffers, plus 1,048,576: a pickle CPython wrote never
   * comes near it, as each argument it passes was written into it (or sent beside it) once.
   */
  maxWork?: number
  /** Largest single pickle read from a chunk source, in bytes. Default 2 GiB. */
  maxSize?: number
}

const DEFAULT_MAX_DEPTH = 10_000
/** The default work budget: WORK_PER_BYTE per input byte plus WORK_BASE (see maxWork). */
const WORK_PER_BYTE = 64
const WORK_BASE = 1 << 20
const DEFAULT_MAX_SIZE = 2 ** 31

type Loader = (s: LoadState) => boolean | void

const TWO_32 = 2 ** 32

function truncated(): never {
  throw new UnpicklingError('pickle data was truncated')
}

function underflow(): never {
  throw new UnpicklingError('unpickling stack underflow')
}

const EMPTY_BYTES = new Uint8Array(0)
/** A list that receives an APPENDS batch of at least this many items is grown ahead by doubling. */
const DEFER_BATCH = 1000

/**
 * Cuts the stack back to m items. A few come off with pop(), which the engine inlines; the
 * length setter is a runtime call, which cost 6% of loading 100,000 small dicts.
 */
function truncate(st: unknown[], m: number): void {
  if (st.length - m <= 16) while (st.length > m) st.pop()
  else st.length = m
}

/** Everything one Unpickler needs while it loads; loaders read and write it directly. */
class LoadState {
  data: Uint8Array = EMPTY_BYTES
  /** A DataView of data, made on first use (many small pickles never need one). */
  view: DataView | null = null
  pos = 0
  end = 0
  /**
   * One stack for the whole load; a MARK is a position in it, as in CPython's C unpickler, so
   * that batches are read where they lie instead of living in arrays of their own.
   */
  stack: unknown[] = []
  marks: number[] = []
  /** The topmost mark's position (0 without one): nothing below it may be popped. */
  fence = 0
  /**
   * Big lists being filled by APPENDS: their length runs ahead (doubling, so that they are not
   * regrown batch by batch), and this holds how many items they really have. Trimmed before
   * anything can look at them; null when there are none.
   */
  pending: Map<unknown[], number> | null = null
  /** Where the furthest FRAME read ends: a load consumes its whole frame, as CPython's does from a file. */
  frameEnd = 0
  memo: unknown[] = []
  memoCount = 0
  proto = 0
  result: unknown = undefined
  readonly buffers: Iterator<BufferSource | PickleBuffer> | null
  readonly lossless: boolean
  /** bytes as views over the input (UnpicklerOptions.copyBytes false, input in memory). */
  bytesView = false
  readonly opaque: boolean
  /** The allow option, compiled; null without one. */
  readonly allow: AllowList | null
  /** Placeholders are made (opaque mode, or the allow option). */
  readonly inert: boolean
  /** The full names that allowed getattr placeholders stand for (allow option). */
  readonly allowedAttributes = new WeakMap<object, string>()
  /** builtins.getattr as the allow option admits it: on allowed placeholders, to allowed names. */
  #getattr: PyGlobal | null = null
  readonly dictAsObject: boolean
  readonly maxDepth: number
  readonly maxWork: number | null
  /** What this load has been charged, and what it may be (see UnpicklerOptions.maxWork). */
  work = 0
  workLimit = 0
  readonly encoding: string
  readonly errors: string
  readonly fixImports: boolean
  readonly globals: GlobalRegistry
  opaqueGlobals: Map<string, PyGlobal> | null = null
  /** Python's key equality for the dicts and sets this Unpickler builds (kept across loads, as the memo is). */
  readonly keys: KeySpace

  constructor(readonly options: UnpicklerOptions) {
    this.buffers = options.buffers ? options.buffers[Symbol.iterator]() : null
    this.lossless = options.lossless ?? false
    this.opaque = options.opaque ?? false
    this.allow = options.allow === undefined ? null : new AllowList(options.allow)
    this.inert = this.opaque || this.allow !== null
    this.dictAsObject = checkChoice(options.dict ?? 'map', ['map', 'object'], 'dict') === 'object'
    this.maxDepth = checkLimit(options.maxDepth ?? DEFAULT_MAX_DEPTH, 'maxDepth')
    this.maxWork = options.maxWork === undefined ? null : checkLimit(options.maxWork, 'maxWork')
    this.encoding = options.encoding ?? 'ASCII'
    this.errors = options.errors ?? 'strict'
    this.fixImports = options.fixImports ?? true
    this.globals = options.globals ?? defaultGlobals
    this.keys = new KeySpace((w) => this.chargeKeys(w), this.maxDepth)
  }

  setInput(data: Uint8Array, start: number, end: number): void {
    if (data !== this.data) {
      this.data = data
      this.view = null
    }
    this.pos = start
    this.end = end
  }

  /** Loads the pickle that starts at pos; leaves pos just after its STOP. */
  loadOne(): unknown {
    if (this.pos >= this.end) throw new EOFError('Ran out of input')
    this.resetStack()
    this.keys.settle()
    this.proto = 0
    this.frameEnd = 0
    this.work = 0
    this.workLimit = this.maxWork ?? WORK_BASE + WORK_PER_BYTE * (this.end - this.pos)
    let opStart = this.pos
    try {
      const data = this.data
      const L = LOADER_BY_NAME
      for (;;) {
        opStart = this.pos
        if (opStart >= this.end) truncated()
        const code = data[this.pos++]!
        // The most frequent opcodes call their loaders directly, so that the engine can inline
        // them; every other opcode goes through the table.
        switch (code) {
          case OP.BININT1: L.BININT1(this); continue
          case OP.BININT2: L.BININT2(this); continue
          case OP.BININT: L.BININT(this); continue
          case OP.BINFLOAT: L.BINFLOAT(this); continue
          case OP.SHORT_BINUNICODE: L.SHORT_BINUNICODE(this); continue
          case OP.BINUNICODE: L.BINUNICODE(this); continue
          case OP.MEMOIZE: L.MEMOIZE(this); continue
          case OP.BINPUT: L.BINPUT(this); continue
          case OP.BINGET: L.BINGET(this); continue
          case OP.MARK: L.MARK(this); continue
          case OP.APPENDS: L.APPENDS(this); continue
          case OP.APPEND: L.APPEND(this); continue
          case OP.SETITEMS: L.SETITEMS(this); continue
          case OP.SETITEM: L.SETITEM(this); continue
          case OP.EMPTY_LIST: L.EMPTY_LIST(this); continue
          case OP.EMPTY_DICT: L.EMPTY_DICT(this); continue
          case OP.TUPLE2: L.TUPLE2(this); continue
          case OP.NONE: L.NONE(this); continue
        }
        const load = LOADERS[code]
        if (load === undefined) throw invalidLoadKey(code)
        if (load(this) === true) break
      }
    } catch (err) {
      // Lists filled ahead get their true length back: they may be in the memo, which outlives
      // the failed load (a later load of the same Unpickler would see the slots beyond it).
      this.flushLists()
      throw located(err, opStart, this.data[opStart])
    }
    const result = this.result
    this.result = undefined
    this.resetStack()
    // Bytes of the furthest frame past STOP (CPython never writes any) are consumed with it.
    if (this.frameEnd > this.pos) this.pos = Math.min(this.frameEnd, this.end)
    return result
  }

  /** Charges a reconstructor call or BUILD for what it is handed; over budget is an error. */
  charge(what: 'a call of' | 'a new' | 'BUILD of', subject: unknown, args: readonly unknown[], extra = 0): void {
    let w = 1 + extra
    for (let i = 0; i < args.length; i++) w += workSize(args[i])
    this.work += w
    if (this.work > this.workLimit) {
      throw new UnpicklingError(
        `the load exceeded its work budget (${this.workLimit} items handed to reconstructors and BUILD; ` +
          `${what} ${describe(subject)} was handed ${w}): a pickle amplifying work through memoized values? See the maxWork option`,
      )
    }
  }

  /** Charges the encoding of a composite dict key or set member (a tuple, bytes, ...) for its length. */
  chargeKeys(w: number): void {
    this.work += w
    if (this.work > this.workLimit) {
      throw new UnpicklingError(
        `the load exceeded its work budget (${this.workLimit}) comparing dict keys and set members ` +
          `(a key of ${w} units): a pickle amplifying work through memoized keys? See the maxWork option`,
      )
    }
  }

  dv(): DataView {
    return (this.view ??= new DataView(this.data.buffer, this.data.byteOffset, this.data.byteLength))
  }

  resetStack(): void {
    // Setting a length is a call into the engine; after a clean load the stack is empty already.
    if (this.stack.length !== 0) this.stack.length = 0
    if (this.marks.length !== 0) this.marks.length = 0
    this.fence = 0
    this.pending = null
  }

  // ---- reading inline arguments ----

  need(n: number): number {
    const at = this.pos
    if (n > this.end - at) truncated()
    this.pos = at + n
    return at
  }

  uint1(): number {
    if (this.pos >= this.end) truncated()
    return this.data[this.pos++]!
  }

  uint2(): number {
    const at = this.need(2)
    return this.data[at]! | (this.data[at + 1]! << 8)
  }

  int4(): number {
    const at = this.need(4)
    const d = this.data
    return d[at]! | (d[at + 1]! << 8) | (d[at + 2]! << 16) | (d[at + 3]! << 24)
  }

  uint4(): number {
    const at = this.need(4)
    const d = this.data
    return (d[at]! | (d[at + 1]! << 8) | (d[at + 2]! << 16) | (d[at + 3]! << 24)) >>> 0
  }

  /** An 8-byte unsigned length; anything past what the input holds is truncation, not an allocation. */
  uint8(): number {
    const at = this.need(8)
    const d = this.data
    const lo = (d[at]! | (d[at + 1]! << 8) | (d[at + 2]! << 16) | (d[at + 3]! << 24)) >>> 0
    const hi = (d[at + 4]! | (d[at + 5]! << 8) | (d[at + 6]! << 16) | (d[at + 7]! << 24)) >>> 0
    if (hi >= 0x200000) return Number.MAX_SAFE_INTEGER // beyond 2^53: larger than any input can be
    // hi * TWO_32 is a heap number even when hi is 0: a small length stays a small integer, so
    // that a field it reaches (frameEnd) keeps its integer representation and hidden class.
    return hi === 0 ? lo : hi * TWO_32 + lo
  }

  /** The bytes up to the next newline, without it. */
  line(): [start: number, end: number] {
    const start = this.pos
    const nl = this.data.indexOf(0x0a, start)
    if (nl < 0 || nl >= this.end) truncated()
    this.pos = nl + 1
    return [start, nl]
  }

  lineText(): string {
    const [a, b] = this.line()
    return decodeLatin1(this.data, a, b)
  }

  // ---- the stack ----

  pop(): unknown {
    if (this.stack.length <= this.fence) underflow()
    return this.stack.pop()
  }

  top(): unknown {
    const st = this.stack
    if (st.length <= this.fence) underflow()
    return st[st.length - 1]
  }

  /**
   * Removes the topmost mark and returns its position: the items above it are
   * stack[position..]. The caller truncates the stack to the position when done with them.
   */
  markStart(): number {
    const marks = this.marks
    const m = marks.pop()
    if (m === undefined) throw new UnpicklingError('could not find MARK')
    this.fence = marks.length > 0 ? marks[marks.length - 1]! : 0
    return m
  }

  /** Everything above the topmost mark, as a new array, removing them and the mark. */
  popMark(): unknown[] {
    const m = this.markStart()
    const items = this.stack.slice(m)
    truncate(this.stack, m)
    return items
  }

  /** The object just below the items of a mark at m (an APPENDS or SETITEMS target). */
  belowMark(m: number): unknown {
    if (m - 1 < this.fence) underflow()
    return this.stack[m - 1]
  }

  /** Trims the lists filled ahead to the items they really have (an in-place shrink). */
  flushLists(): void {
    const pending = this.pending
    if (pending === null) return
    this.pending = null
    for (const [list, n] of pending) list.length = n
  }

  /** Appends stack[from..] to a big list, growing it by doubling rather than batch by batch. */
  appendAhead(list: unknown[], from: number): void {
    const st = this.stack
    const pending = (this.pending ??= new Map())
    let n = pending.get(list) ?? list.length
    const need = n + st.length - from
    if (need > list.length) list.length = Math.max(need, list.length * 2)
    for (let i = from; i < st.length; i++) list[n++] = st[i]
    pending.set(list, n)
  }

  // ---- values ----

  float(x: number): unknown {
    return this.lossless && Number.isInteger(x) ? new PyFloat(x) : x
  }

  newDict(): unknown {
    return this.dictAsObject ? {} : new Map()
  }

  memoGet(index: number): void {
    const v = this.memo[index]
    if (v === undefined) throw new UnpicklingError(`Memo value not found at index ${index}`)
    this.stack.push(v)
  }

  memoPut(index: number): void {
    const memo = this.memo
    // An array's length stays below 2^32 - 1: an index from there on is a property, as far ones are.
    if (index === memo.length && index < 0xffff_ffff) {
      // The usual case (MEMOIZE, and PUTs numbered in order): no read past the end.
      memo.push(this.top())
      this.memoCount++
      return
    }
    if (index < 0) throw new UnpicklingError('negative PUT argument')
    if (memo[index] === undefined) this.memoCount++
    memo[index] = this.top()
  }

  findClass(module: string, name: string): unknown {
    if (this.proto < 3 && this.fixImports) [module, name] = fixImport(module, name)
    const hook = this.options.findClass
    return hook ? hook(module, name, (m, n) => this.defaultFindClass(m, n)) : this.defaultFindClass(module, name)
  }

  defaultFindClass(module: string, name: string): unknown {
    const found = this.globals.get(module, name)
    if (found !== undefined) return found
    // Refused even by the opaque mode: CPython cannot import it here, and a placeholder dumped
    // again below protocol 3 would name the Python 3 global instead.
    if (isPython2Module(module)) {
      const [m3, n3] = fixImport(module, name)
      throw new UnpicklingError(
        `global '${module}.${name}' is forbidden: '${module}' is a Python 2 module name, which CPython reads as '${m3}.${n3}' ` +
          `only below protocol 3 with fix_imports (this pickle: protocol ${this.proto}${this.fixImports ? '' : ', fixImports off'})`,
      )
    }
    if (this.opaque) {
      const key = `${module}.${name}`
      const known = (this.opaqueGlobals ??= new Map())
      let g = known.get(key)
      if (g === undefined) known.set(key, (g = new PyGlobal(module, name, {}, true)))
      return g
    }
    if (this.allow !== null) return this.allowedGlobal(module, name, this.allow)
    throw new UnpicklingError(`global '${module}.${name}' is forbidden`)
  }

  allowedGlobal(module: string, name: string, allow: AllowList): PyGlobal {
    const key = `${module}.${name}`
    if (key === 'builtins.getattr') {
      return (this.#getattr ??= new PyGlobal(module, name, { call: (args) => this.allowedGetattr(args, allow) }, true))
    }
    const known = (this.opaqueGlobals ??= new Map())
    let g = known.get(key)
    if (g !== undefined) return g
    if (!allow.allows(key)) {
      throw new UnpicklingError(
        `global '${key}' is forbidden: it is not in the allow option; add '${key}' (or a prefix such as '${module}.*') to load it as an inert placeholder`,
      )
    }
    known.set(key, (g = new PyGlobal(module, name, {}, true)))
    return g
  }

  /** builtins.getattr(x, name) under the allow option: a placeholder standing for x's full name plus name. */
  allowedGetattr(args: readonly unknown[], allow: AllowList): PyObject {
    if (args.length !== 2 || typeof args[1] !== 'string') {
      throw new UnpicklingError(`builtins.getattr is allowed as getattr(placeholder, name) only, got ${args.length} arguments${args.length === 2 ? `, name ${describe(args[1])}` : ''}`)
    }
    const [x, name] = args as [unknown, string]
    const base = this.allowedName(x)
    if (base === null) {
      throw new UnpicklingError(`builtins.getattr(${describe(x)}, ${JSON.stringify(name)}) is forbidden: the allow option admits getattr on placeholders of allowed globals only`)
    }
    const full = `${base}.${name}`
    if (!allow.allows(full)) {
      throw new UnpicklingError(`builtins.getattr(${base}, ${JSON.stringify(name)}) is forbidden: '${full}' is not in the allow option; add '${full}' to allow it`)
    }
    const v = new PyObject(this.#getattr!, 'reduce', asTuple(args))
    this.allowedAttributes.set(v, full)
    return v
  }

  /** The full name an allowed placeholder stands for (a global, or a getattr of one), or null. */
  allowedName(v: unknown): string | null {
    if (v instanceof PyGlobal) return v.opaque && v.extensionCode === null && v !== this.#getattr ? `${v.module}.${v.name}` : null
    return typeof v === 'object' && v !== null ? this.allowedAttributes.get(v) ?? null : null
  }

  /** Whether an inert placeholder may stand for a class or callable: always in opaque mode, allowed names only with allow. */
  mayInstantiate(v: PyOpaque): boolean {
    return this.opaque || this.allowedAttributes.has(v)
  }

  persistentLoad(pid: unknown, binary: boolean): unknown {
    const hook = this.options.persistentLoad
    if (hook) return hook(pid)
    if (this.opaque) return new PyPersistentRef(pid, binary)
    throw new UnpicklingError('A load persistent id instruction was encountered, but no persistentLoad function was specified')
  }

  /** A bytes value read from data[start, end): a copy, or a view when copyBytes is false. */
  bytes(start: number, end: number): Uint8Array {
    return this.bytesView ? this.data.subarray(start, end) : this.data.slice(start, end)
  }

  python2Str(start: number, end: number): unknown {
    return decodePython2Str(this.data.slice(start, end), this.encoding, this.errors)
  }
}

function checkChoice<T extends string>(v: string, allowed: readonly T[], name: string): T {
  if (!(allowed as readonly string[]).includes(v)) {
    throw new PickleError(`option ${name} must be one of ${allowed.map((a) => `'${a}'`).join(', ')}, got ${JSON.stringify(v)}`)
  }
  return v as T
}

function checkLimit(v: number, name: string): number {
  if (typeof v !== 'number' || !(v > 0)) throw new PickleError(`option ${name} must be a positive number, got ${describe(v)}`)
  return v
}

/** Turns anything thrown while loading into an UnpicklingError that says where it happened. */
function located(err: unknown, at: number, code: number | undefined): PickleError {
  if (err instanceof EOFError) return err
  const op = code === undefined ? undefined : OPCODE_BY_CODE[code]
  const where = ` (at byte ${at}${op ? `, opcode ${op.name}` : ''})`
  let located: UnpicklingError
  if (err instanceof UnpicklingError) {
    err.message += where
    located = err
  } else {
    located = new UnpicklingError((err instanceof Error ? err.message : String(err)) + where, { cause: err })
  }
  located.position = at
  located.opcode = op?.name ?? null
  return located
}

/**
 * A load from a chunked source reads its pickle out of a buffer that starts partway into the
 * stream: its error's position (and the message that states it) moves by the bytes before.
 */
function shiftedBy(err: unknown, by: number): unknown {
  if (!(err instanceof UnpicklingError) || err.position === null || by === 0) return err
  const at = err.position + by
  err.message = err.message.replace(` (at byte ${err.position}`, ` (at byte ${at}`)
  err.position = at
  return err
}

// ---- integers ----

const SAFE_BIG_MAX = BigInt(Number.MAX_SAFE_INTEGER)
const SAFE_BIG_MIN = BigInt(Number.MIN_SAFE_INTEGER)

/** A bigint as a number when exact, as Python ints map to JavaScript. */
function intValue(v: bigint): number | bigint {
  return v <= SAFE_BIG_MAX && v >= SAFE_BIG_MIN ? Number(v) : v
}

/** A little-endian two's complement integer (LONG1, LONG4). */
function decodeLong(b: Uint8Array, at: number, n: number): number | bigint {
  if (n === 0) return 0
  if (n <= 6) {
    let v = 0
    for (let i = n - 1; i >= 0; i--) v = v * 256 + b[at + i]!
    return b[at + n - 1]! & 0x80 ? v - 2 ** (8 * n) : v
  }
  let hex = ''
  for (let i = n - 1; i >= 0; i--) hex += (b[at + i]! < 16 ? '0' : '') + b[at + i]!.toString(16)
  let v = BigInt('0x' + hex)
  if (b[at + n - 1]! & 0x80) v -= 1n << BigInt(8 * n)
  return intValue(v)
}

function parseDecimal(text: string, what: string): number | bigint {
  const t = text.trim()
  if (!/^[+-]?\d+$/.test(t)) throw new UnpicklingError(`invalid literal for int() in ${what}: ${JSON.stringify(text)}`)
  const digits = t.replace(/^[+-]/, '').length
  if (digits > MAX_INT_DIGITS) throw new UnpicklingError(`${what} has ${digits} digits, more than the ${MAX_INT_DIGITS} Python accepts`)
  if (digits < 16) return Number(t)
  return intValue(BigInt(t))
}

/** Python's float() syntax; each part matches one way only, so a long bad line fails in linear time. */
const FLOAT_TEXT = /^[+-]?(?:\d(?:_?\d)*(?:\.(?:\d(?:_?\d)*)?)?|\.\d(?:_?\d)*)(?:[eE][+-]?\d(?:_?\d)*)?$/
function parseFloatText(text: string): number {
  const t = text.trim()
  const lower = t.toLowerCase().replace(/^\+/, '')
  if (lower === 'inf' || lower === 'infinity') return Infinity
  if (lower === '-inf' || lower === '-infinity') return -Infinity
  if (lower === 'nan' || lower === '-nan') return NaN
  if (!FLOAT_TEXT.test(t)) throw new UnpicklingError(`could not convert string to float: ${JSON.stringify(text)}`)
  return Number(t.replace(/_/g, ''))
}

// ---- containers ----

/**
 * d[k] = v. A Map merges keys as Python's dict does and refuses unhashable ones (keys.ts);
 * str and plain int keys of a Map without an index go straight in.
 */
function setItem(s: LoadState, target: unknown, k: unknown, v: unknown): void {
  if (target instanceof Map) {
    if ((typeof k === 'string' || (typeof k === 'number' && isPlainNumberKey(k))) && (!s.keys.indexing || s.keys.indexOf(target) === undefined)) target.set(k, v)
    else s.keys.setEntry(target, k, v)
  } else if (target instanceof PyOpaque) {
    target.dictItems.push([k, v])
  } else if (s.dictAsObject && typeof target === 'object' && target !== null && isPlainObject(target)) {
    if (typeof k !== 'string') throw new UnpicklingError(`dict key ${describe(k)} cannot be an object property with dict: 'object'; use dict: 'map'`)
    defineOwn(target as Record<string, unknown>, k, v)
  } else {
    throw new UnpicklingError(`cannot set items on ${describe(target)}`)
  }
}

/** Sets an own property even for "__proto__", so that no key can reach a prototype. */
function defineOwn(target: Record<string, unknown>, k: string, v: unknown): void {
  if (k === '__proto__') Object.defineProperty(target, k, { value: v, writable: true, enumerable: true, configurable: true })
  else target[k] = v
}

function appendItems(target: unknown, items: unknown[], start: number): void {
  if (Array.isArray(target) && !(target instanceof Tuple)) {
    for (let i = start; i < items.length; i++) target.push(items[i])
    // A deque with a maxlen keeps its last maxlen items, as collections.deque.append does.
    if (target instanceof Deque && target.maxlen !== null && target.length > target.maxlen) target.splice(0, target.length - target.maxlen)
  } else if (target instanceof PyOpaque) {
    for (let i = start; i < items.length; i++) target.listItems.push(items[i])
  } else {
    throw new UnpicklingError(`cannot append to ${describe(target)}`)
  }
}

/** SETITEMS from st[from..] into a Map through Python's key equality (keys.ts). */
function setItemsKeyed(s: LoadState, d: Map<unknown, unknown>, st: unknown[], from: number): void {
  const keys = s.keys
  let ix = keys.indexOf(d)
  for (let i = from; i < st.length; i += 2) {
    const k = st[i]
    if (ix === undefined && (typeof k === 'string' || (typeof k === 'number' && isPlainNumberKey(k)))) d.set(k, st[i + 1])
    else ix = keys.setEntryIn(d, ix, k, st[i + 1])
  }
}

/** Adds items[from..] to a set as Python's set.add does: members Python would merge are merged (keys.ts). */
function addMembers(s: LoadState, target: Set<unknown>, items: unknown[], from: number): void {
  const keys = s.keys
  let plain = keys.indexOf(target) === undefined
  for (let i = from; i < items.length; i++) {
    const x = items[i]
    if (plain && (typeof x === 'string' || (typeof x === 'number' && isPlainNumberKey(x)))) target.add(x)
    else {
      keys.addMember(target, x)
      plain = keys.indexOf(target) === undefined
    }
  }
}

// ---- objects ----

/** How much a reconstructor may have to walk through in one argument (see UnpicklerOptions.maxWork). */
function workSize(v: unknown): number {
  if (typeof v === 'string') return v.length
  if (typeof v !== 'object' || v === null) return 1
  if (Array.isArray(v)) return v.length + 1
  if (v instanceof Map || v instanceof Set) return v.size + 1
  if (ArrayBuffer.isView(v)) return v.byteLength + 1
  if (v instanceof PickleBuffer) return v.released ? 1 : v.byteLength + 1
  if (isPlainObject(v)) {
    let n = 1
    for (const k in v) if (Object.prototype.hasOwnProperty.call(v, k)) n++
    return n
  }
  return 1
}

function callGlobal(s: LoadState, callable: unknown, args: unknown, origin: PyObjectOrigin): unknown {
  if (!Array.isArray(args)) throw new UnpicklingError(`the arguments of a call must be a tuple, got ${describe(args)}`)
  s.charge('a call of', callable, args, callable instanceof PyGlobal ? callable.callWork(args) : 0)
  if (callable instanceof PyGlobal) {
    // copyreg's reconstructors take a placeholder as the class in opaque mode; the allow option only one of an allowed name.
    if (s.allow !== null && callable.module === 'copyreg' && args[0] instanceof PyOpaque && !s.mayInstantiate(args[0])) {
      throw new UnpicklingError(`${callable} needs a class, got a placeholder instance ${describe(args[0])}`)
    }
    return followOptions(s, callable, withName(callable, () => callable.call(args, origin, s.keys)))
  }
  if (typeof callable === 'function') return callable(...spreadable(args, callable))
  // Opaque mode: a placeholder called (functools.partial(...)() at protocols 2 and 3, for one)
  // is one more inert placeholder, which pickles back as the same call.
  if (s.inert && callable instanceof PyOpaque && origin === 'reduce') {
    if (s.mayInstantiate(callable)) return new PyObjectCall(callable, asTuple(args))
    throw new UnpicklingError(`cannot call ${describe(callable)}: the allow option calls placeholders of allowed names only (a global, or builtins.getattr of one)`)
  }
  throw new UnpicklingError(`cannot call ${describe(callable)}`)
}

/**
 * A dict or float made by calling builtins.dict or builtins.float follows the dict and lossless
 * options, as one made by opcodes does; a numpy scalar is its plain value unless lossless.
 */
function followOptions(s: LoadState, g: PyGlobal, v: unknown): unknown {
  if (g.module !== 'builtins') {
    if (!s.lossless) return v instanceof NumpyScalar ? v.natural() : v
    if (v instanceof NDArray) keepPickledByteOrder(v)
    return v
  }
  if (g.name === 'float' && typeof v === 'number') return s.float(v)
  if (g.name === 'dict' && s.dictAsObject && v instanceof Map && v.constructor === Map) {
    const o = {}
    for (const [k, x] of v) setItem(s, o, k, x)
    return o
  }
  return v
}

function newObject(s: LoadState, cls: unknown, args: unknown, kwargs: unknown, origin: 'newobj' | 'newobj_ex'): unknown {
  if (!Array.isArray(args)) throw new UnpicklingError(`NEWOBJ arguments must be a tuple, got ${describe(args)}`)
  s.charge('a new', cls, kwargs === null ? args : [...args, kwargs])
  if (cls instanceof PyGlobal) {
    const v = withName(cls, () => cls.newObject(args, kwargs, origin))
    // A float or dict made by NEWOBJ on builtins follows the lossless and dict options as one made by opcodes does.
    return cls.module === 'builtins' ? followOptions(s, cls, v) : v
  }
  if (typeof cls === 'function' && typeof cls.prototype === 'object' && cls.prototype !== null) return Object.create(cls.prototype)
  // A class that is itself a placeholder (a nested class reached through getattr at protocols 2
  // and 3): the instance is one more inert placeholder, which pickles back as the same NEWOBJ.
  if (s.inert && cls instanceof PyOpaque && s.mayInstantiate(cls)) return new PyObjectCall(cls, asTuple(args), origin, kwargs)
  throw new UnpicklingError(`cannot create an instance of ${describe(cls)}`)
}

/**
 * A reduce value's state setter (its sixth item) is written as setter(obj, state), called and
 * popped at once. Called inertly, the state would go with the popped call: the placeholder obj
 * keeps it instead, with the setter, and pickles back the same way.
 */
function keepStateSetter(call: unknown, args: unknown): void {
  if (!(call instanceof PyObject) || call.origin !== 'reduce' || !call.callable.opaque || !Array.isArray(args) || args.length !== 2) return
  const obj = args[0]
  if (obj instanceof PyOpaque && obj.state === undefined && obj.stateSetter === undefined) {
    obj.state = args[1]
    obj.stateSetter = call.callable
  }
}

/**
 * Lossless mode: a str whose bytes spell a surrogate pair as two code points becomes a PyStr. An
 * all-ASCII str (as many units as bytes) cannot hold one: only the others are scanned.
 */
function keepSurrogatePairs(s: LoadState, v: string, at: number, n: number): string | PyStr {
  return v.length < n && hasEncodedSurrogatePair(s.data, at, at + n) ? new PyStr(v) : v
}

/** Runs a reconstructor; its own complaints become UnpicklingErrors naming the global. */
function withName<T>(g: PyGlobal, fn: () => T): T {
  try {
    return fn()
  } catch (err) {
    if (err instanceof UnpicklingError) throw err
    const message = err instanceof Error ? err.message : String(err)
    throw new UnpicklingError(`${g}: ${message}`, { cause: err })
  }
}

/** Values whose Python types have no __dict__ and no __setstate__: CPython refuses BUILD on them too. */
const NOT_BUILDABLE = [
  Array, Map, Set, Uint8Array, PyGlobal, PickleBuffer, PySingleton, PyFloat, Complex, PyRange, Slice, PyDate, PyTime,
  PyDateTime, PyTimeDelta, PyTimeZone, Decimal,
] as const

function build(s: LoadState, inst: unknown, state: unknown): void {
  if (typeof inst !== 'object' || inst === null) throw new UnpicklingError(`BUILD needs an object, got ${describe(inst)}`)
  s.charge('BUILD of', inst, Array.isArray(state) && state.constructor === Tuple ? state : [state])
  const ctor = (inst as { constructor?: unknown }).constructor
  const hook = typeof ctor === 'function' ? s.globals.registration(ctor)?.hooks.setState : undefined
  const custom = hook ? (st: unknown) => hook(inst, st) : (inst as { [setState]?: unknown })[setState]
  if (typeof custom === 'function') {
    try {
      custom.call(inst, state)
    } catch (err) {
      if (err instanceof UnpicklingError) throw err
      throw new UnpicklingError(`BUILD of ${describe(inst)}: ${err instanceof Error ? err.message : String(err)}`, { cause: err })
    }
    return
  }
  let slotState: unknown = null
  if (Array.isArray(state) && state.length === 2) [state, slotState] = state
  for (const part of [state, slotState]) {
    if (part === null) continue
    const entries = dictEntries(part, 'BUILD state')
    // As in CPython: any state but None needs an instance __dict__; a slot state, each attribute.
    if ((part === state || entries.length > 0) && NOT_BUILDABLE.some((c) => inst instanceof c)) {
      throw new UnpicklingError(`BUILD state cannot be applied to ${describe(inst)}`)
    }
    for (const [k, v] of entries) {
      if (typeof k !== 'string') throw new UnpicklingError(`BUILD state keys must be str, got ${describe(k)}`)
      defineOwn(inst as Record<string, unknown>, k, v)
    }
  }
}

/**
 * A fast path for the commonest batch, `MARK <numbers or strings> APPENDS` onto a list (how a
 * list of ints, floats or str is pickled): entered at a MARK whose next opcode is BININT1,
 * BININT2, BININT, BINFLOAT or SHORT_BINUNICODE and whose stack top is a plain list, it reads
 * the items straight into that list (a list of floats keeps them unboxed) and their MEMOIZEs
 * into the memo, without the stack. The loaders give the same result; this only skips the
 * dispatch. Anything else before the APPENDS (another opcode, the end of the input, a memo
 * slot already taken) undoes what the run did, and the opcodes are read again one by one by
 * the loaders, which raise the errors. Returns whether it consumed MARK ... APPENDS.
 */
function appendRun(s: LoadState): boolean {
  const data = s.data
  const start = s.pos
  const end = s.end
  if (start >= end) return false
  const first = data[start]!
  if (first !== OP.BININT1 && first !== OP.BININT2 && first !== OP.BININT && first !== OP.BINFLOAT && first !== OP.SHORT_BINUNICODE) {
    return false
  }
  const st = s.stack
  if (st.length <= s.fence) return false
  const list = st[st.length - 1]
  if (!Array.isArray(list) || list.constructor !== Array) return false
  // Items go at list[n]; a big list is grown ahead (see below) and trimmed at a flush point, as appendAhead does.
  const pending = s.pending?.get(list)
  const n0 = pending ?? list.length
  let n = n0
  let room = list.length
  let grown = false
  const view = s.dv()
  const memo = s.memo
  const lossless = s.lossless
  const memoStart = s.memoCount
  let memoCount = memoStart
  let pos = start
  for (;;) {
    if (pos >= end) break
    const code = data[pos]!
    let item: unknown
    if (code === OP.BININT1) {
      if (pos + 2 > end) break
      item = data[pos + 1]
      pos += 2
    } else if (code === OP.BININT2) {
      if (pos + 3 > end) break
      item = data[pos + 1]! | (data[pos + 2]! << 8)
      pos += 3
    } else if (code === OP.BININT) {
      if (pos + 5 > end) break
      item = view.getInt32(pos + 1, true)
      pos += 5
    } else if (code === OP.BINFLOAT) {
      if (pos + 9 > end) break
      const x = view.getFloat64(pos + 1, false)
      pos += 9
      if (lossless && Number.isInteger(x)) item = new PyFloat(x)
      else if (n < room) {
        // Stored straight from the read, so that a list of floats never boxes them one by one.
        list[n++] = x
        // A run of floats (a list of them): read on, with no dispatch per item.
        if (!lossless) {
          while (n < room && pos + 9 <= end && data[pos] === OP.BINFLOAT) {
            list[n++] = view.getFloat64(pos + 1, false)
            pos += 9
          }
        }
        continue
      } else item = x
    } else if (code === OP.SHORT_BINUNICODE) {
      if (pos + 2 > end) break
      const len = data[pos + 1]!
      if (pos + 2 + len > end) break
      try {
        item = decodeUtf8(data, pos + 2, pos + 2 + len)
      } catch {
        break // the loader raises it, at this opcode's position
      }
      // A str that lossless mode keeps as a PyStr: the loader makes it, at this opcode's position.
      if (s.lossless && (item as string).length < len && hasEncodedSurrogatePair(data, pos + 2, pos + 2 + len)) break
      pos += 2 + len
    } else if (code === OP.MEMOIZE) {
      // Memoizes the item just read (never the list: it was not read in this run).
      if (n === n0 || memo[memoCount] !== undefined) break
      memo[memoCount++] = list[n - 1]
      pos += 1
      continue
    } else if (code === OP.FRAME) {
      if (pos + 9 > end) break
      const hi = view.getUint32(pos + 5, true)
      const size = hi === 0 ? view.getUint32(pos + 1, true) : hi * TWO_32 + view.getUint32(pos + 1, true)
      if (size > end - pos - 9) break
      pos += 9
      if (pos + size > s.frameEnd) s.frameEnd = pos + size // set again by the FRAME loader should the run be undone
      continue
    } else if (code === OP.APPENDS) {
      if (n < list.length) (s.pending ??= new Map()).set(list, n)
      else if (pending !== undefined) s.pending!.delete(list)
      s.memoCount = memoCount
      s.pos = pos + 1
      return true
    } else {
      break
    }
    if (n < room) list[n] = item
    else if (n < DEFER_BATCH) {
      list.push(item)
      room++
    } else {
      // A big list: room for what the batches ahead hold (counted, not trusted: they are in the
      // input), so that it is sized once; doubling if that is more.
      room = Math.max(n * 2, n + 1 + countAhead(data, pos, end))
      list.length = room
      grown = true
      list[n] = item
    }
    n++
  }
  // Undo: the list's items beyond n0 are dropped (a list grown ahead keeps its count, n0). One
  // grown here by counting ahead stays grown, its count n0 pending: shrunk back, every later
  // batch that fell back would count the rest of the input again (quadratic in the input).
  if (pending === undefined) {
    if (grown) (s.pending ??= new Map()).set(list, n0)
    else list.length = n0
  }
  for (let i = memoStart; i < memoCount; i++) memo[i] = undefined
  return false
}

/**
 * How many more items the append runs from pos on would read: the rest of this batch and the
 * `MARK ... APPENDS` batches right after it (what CPython writes for one big list), counting
 * the opcodes appendRun reads, up to the first other one. Only a size hint: each is read again.
 */
function countAhead(data: Uint8Array, pos: number, end: number): number {
  let count = 0
  let p = pos
  while (p < end) {
    const code = data[p]!
    if (code === OP.BININT1) p += 2
    else if (code === OP.BININT2) p += 3
    else if (code === OP.BININT) p += 5
    else if (code === OP.BINFLOAT) p += 9
    else if (code === OP.SHORT_BINUNICODE) {
      if (p + 1 >= end) break
      p += 2 + data[p + 1]!
    } else {
      if (code === OP.MEMOIZE) p += 1
      else if (code === OP.FRAME) p += 9
      else if (code === OP.APPENDS && p + 1 < end && data[p + 1] === OP.MARK) p += 2
      else if (code === OP.APPENDS && p + 10 < end && data[p + 1] === OP.FRAME && data[p + 10] === OP.MARK) p += 11
      else break
      continue
    }
    count++
  }
  return count
}

// ---- one loader per opcode ----

const LOADER_BY_NAME: Record<OpName, Loader> = {
  PROTO(s) {
    const p = s.uint1()
    if (p > HIGHEST_PROTOCOL) throw new UnpicklingError(`unsupported pickle protocol: ${p}`)
    s.proto = p
  },
  FRAME(s) {
    const n = s.uint8()
    if (n > s.end - s.pos) throw new UnpicklingError(`pickle data was truncated: a FRAME of ${n} bytes, ${s.end - s.pos} left`)
    if (s.pos + n > s.frameEnd) s.frameEnd = s.pos + n
  },
  STOP(s) {
    if (s.pending !== null) s.flushLists()
    s.result = s.pop()
    return true
  },

  // integers
  INT(s) {
    const text = s.lineText()
    if (text === '00') s.stack.push(false)
    else if (text === '01') s.stack.push(true)
    else s.stack.push(parseDecimal(text, 'INT'))
  },
  BININT(s) {
    s.stack.push(s.int4())
  },
  BININT1(s) {
    if (s.pos >= s.end) truncated()
    s.stack.push(s.data[s.pos++])
  },
  BININT2(s) {
    s.stack.push(s.uint2())
  },
  LONG(s) {
    let text = s.lineText()
    if (text.endsWith('L')) text = text.slice(0, -1)
    s.stack.push(parseDecimal(text, 'LONG'))
  },
  LONG1(s) {
    const n = s.uint1()
    s.stack.push(decodeLong(s.data, s.need(n), n))
  },
  LONG4(s) {
    const n = s.int4()
    if (n < 0) throw new UnpicklingError('LONG pickle has negative byte count')
    s.stack.push(decodeLong(s.data, s.need(n), n))
  },

  // floats
  FLOAT(s) {
    s.stack.push(s.float(parseFloatText(s.lineText())))
  },
  BINFLOAT(s) {
    s.stack.push(s.float(s.dv().getFloat64(s.need(8), false)))
  },

  // text
  BINUNICODE(s) {
    const n = s.uint4()
    const at = s.need(n)
    const v = decodeUtf8(s.data, at, at + n)
    s.stack.push(s.lossless ? keepSurrogatePairs(s, v, at, n) : v)
  },
  SHORT_BINUNICODE(s) {
    const n = s.uint1()
    const at = s.need(n)
    const v = decodeUtf8(s.data, at, at + n)
    s.stack.push(s.lossless ? keepSurrogatePairs(s, v, at, n) : v)
  },
  BINUNICODE8(s) {
    const n = s.uint8()
    const at = s.need(n)
    const v = decodeUtf8(s.data, at, at + n)
    s.stack.push(s.lossless ? keepSurrogatePairs(s, v, at, n) : v)
  },
  UNICODE(s) {
    const [a, b] = s.line()
    const v = rawUnicodeEscapeDecode(s.data, a, b)
    s.stack.push(s.lossless && hasEscapedSurrogatePair(s.data, a, b) ? new PyStr(v) : v)
  },
  STRING(s) {
    const [a, b] = s.line()
    const q = s.data[a]
    if (b - a < 2 || (q !== 0x22 && q !== 0x27) || s.data[b - 1] !== q) {
      throw new UnpicklingError('the STRING opcode argument must be quoted')
    }
    s.stack.push(decodePython2Str(escapeDecode(s.data.subarray(a + 1, b - 1)), s.encoding, s.errors))
  },
  BINSTRING(s) {
    const n = s.int4()
    if (n < 0) throw new UnpicklingError('BINSTRING pickle has negative byte count')
    const at = s.need(n)
    s.stack.push(s.python2Str(at, at + n))
  },
  SHORT_BINSTRING(s) {
    const n = s.uint1()
    const at = s.need(n)
    s.stack.push(s.python2Str(at, at + n))
  },

  // bytes and buffers
  BINBYTES(s) {
    const n = s.uint4()
    const at = s.need(n)
    s.stack.push(s.bytes(at, at + n))
  },
  SHORT_BINBYTES(s) {
    const n = s.uint1()
    const at = s.need(n)
    s.stack.push(s.bytes(at, at + n))
  },
  BINBYTES8(s) {
    const n = s.uint8()
    const at = s.need(n)
    s.stack.push(s.bytes(at, at + n))
  },
  BYTEARRAY8(s) {
    const n = s.uint8()
    const at = s.need(n)
    const out = new ByteArray(n)
    out.set(s.data.subarray(at, at + n))
    s.stack.push(out)
  },
  NEXT_BUFFER(s) {
    if (s.buffers === null) throw new UnpicklingError('pickle stream refers to out-of-band data but no buffers were given')
    const next = s.buffers.next()
    if (next.done) throw new UnpicklingError('not enough out-of-band buffers')
    const buf = next.value
    const pb = buf instanceof PickleBuffer ? buf : new PickleBuffer(buf)
    if (s.maxWork === null) s.workLimit += WORK_PER_BYTE * pb.byteLength
    s.stack.push(pb)
  },
  READONLY_BUFFER(s) {
    const top = s.top()
    if (top instanceof PickleBuffer) {
      if (!top.readonly) s.stack[s.stack.length - 1] = new PickleBuffer(top, { readonly: true })
    } else if (top instanceof Uint8Array && !(top instanceof ByteArray)) {
      // bytes are readonly already: CPython leaves them as they are.
    } else if (top instanceof Uint8Array || ArrayBuffer.isView(top)) {
      s.stack[s.stack.length - 1] = new PickleBuffer(asBytesView(top), { readonly: true })
    } else {
      throw new UnpicklingError(`READONLY_BUFFER needs a buffer, got ${describe(top)}`)
    }
  },

  // constants
  NONE(s) {
    s.stack.push(null)
  },
  NEWTRUE(s) {
    s.stack.push(true)
  },
  NEWFALSE(s) {
    s.stack.push(false)
  },

  // lists
  EMPTY_LIST(s) {
    s.stack.push([])
  },
  APPEND(s) {
    const v = s.pop()
    const list = s.top()
    if (Array.isArray(list) && list.constructor === Array) {
      const n = s.pending?.get(list)
      if (n === undefined) list.push(v)
      else {
        if (n === list.length) list.length = n * 2
        list[n] = v
        s.pending!.set(list, n + 1)
      }
    } else {
      appendItems(list, [v], 0)
    }
  },
  APPENDS(s) {
    const m = s.markStart()
    const st = s.stack
    const list = s.belowMark(m)
    if (Array.isArray(list) && list.constructor === Array) {
      if (st.length - m >= DEFER_BATCH || s.pending?.has(list)) s.appendAhead(list, m)
      else for (let i = m; i < st.length; i++) list.push(st[i])
    } else {
      appendItems(list, st, m)
    }
    truncate(st, m)
  },
  LIST(s) {
    const items = s.popMark()
    s.stack.push(items)
  },

  // tuples
  EMPTY_TUPLE(s) {
    s.stack.push(new Tuple())
  },
  TUPLE(s) {
    const m = s.markStart()
    const st = s.stack
    const n = st.length - m
    const t = new Tuple(n)
    for (let i = 0; i < n; i++) t[i] = st[m + i]
    truncate(st, m)
    st.push(t)
  },
  TUPLE1(s) {
    const t = new Tuple(1)
    t[0] = s.pop()
    s.stack.push(t)
  },
  TUPLE2(s) {
    const t = new Tuple(2)
    t[1] = s.pop()
    t[0] = s.pop()
    s.stack.push(t)
  },
  TUPLE3(s) {
    const t = new Tuple(3)
    t[2] = s.pop()
    t[1] = s.pop()
    t[0] = s.pop()
    s.stack.push(t)
  },

  // dicts
  EMPTY_DICT(s) {
    s.stack.push(s.newDict())
  },
  DICT(s) {
    const m = s.markStart()
    const st = s.stack
    if ((st.length - m) % 2 !== 0) throw new UnpicklingError('odd number of items for DICT')
    const d = s.newDict()
    for (let i = m; i < st.length; i += 2) setItem(s, d, st[i], st[i + 1])
    truncate(st, m)
    st.push(d)
  },
  SETITEM(s) {
    const v = s.pop()
    const k = s.pop()
    setItem(s, s.top(), k, v)
  },
  SETITEMS(s) {
    const m = s.markStart()
    const st = s.stack
    if ((st.length - m) % 2 !== 0) throw new UnpicklingError('odd number of items for SETITEMS')
    const d = s.belowMark(m)
    if (d instanceof Map && d.constructor === Map) {
      let i = m
      // str and plain int keys of a dict without an index are their own Python equality: set as
      // they come, until a key that is not (or any key, once some container of this load has an index).
      if (!s.keys.indexing) {
        for (; i < st.length; i += 2) {
          const k = st[i]
          if (typeof k !== 'string' && !(typeof k === 'number' && isPlainNumberKey(k))) break
          d.set(k, st[i + 1])
        }
      }
      if (i < st.length) setItemsKeyed(s, d, st, i)
    } else {
      for (let i = m; i < st.length; i += 2) setItem(s, d, st[i], st[i + 1])
    }
    truncate(st, m)
  },

  // sets
  EMPTY_SET(s) {
    s.stack.push(new Set())
  },
  ADDITEMS(s) {
    const m = s.markStart()
    const st = s.stack
    const target = s.belowMark(m)
    if (!(target instanceof Set) || target instanceof FrozenSet) throw new UnpicklingError(`cannot add items to ${describe(target)}`)
    addMembers(s, target, st, m)
    truncate(st, m)
  },
  FROZENSET(s) {
    const m = s.markStart()
    const st = s.stack
    const fs = new FrozenSet()
    addMembers(s, fs, st, m)
    truncate(st, m)
    st.push(fs)
  },

  // stack manipulation
  POP(s) {
    if (s.stack.length > s.fence) s.stack.pop()
    else s.stack.length = s.markStart()
  },
  DUP(s) {
    s.stack.push(s.top())
  },
  MARK(s) {
    const next = s.data[s.pos]
    if ((next === OP.BININT1 || next === OP.BININT2 || next === OP.BININT || next === OP.BINFLOAT || next === OP.SHORT_BINUNICODE) && appendRun(s)) return
    if (s.marks.length >= s.maxDepth) throw new UnpicklingError(`MARK nesting deeper than maxDepth (${s.maxDepth})`)
    s.fence = s.stack.length
    s.marks.push(s.fence)
  },
  POP_MARK(s) {
    truncate(s.stack, s.markStart())
  },

  // memo
  GET(s) {
    s.memoGet(Number(parseDecimal(s.lineText(), 'GET')))
  },
  BINGET(s) {
    s.memoGet(s.uint1())
  },
  LONG_BINGET(s) {
    s.memoGet(s.uint4())
  },
  PUT(s) {
    s.memoPut(Number(parseDecimal(s.lineText(), 'PUT')))
  },
  BINPUT(s) {
    s.memoPut(s.uint1())
  },
  LONG_BINPUT(s) {
    s.memoPut(s.uint4())
  },
  MEMOIZE(s) {
    s.memoPut(s.memoCount)
  },

  // globals and objects
  GLOBAL(s) {
    const [ma, mb] = s.line()
    const [na, nb] = s.line()
    // Python decodes these with 'utf-8', strictly (pickle.py's load_global).
    s.stack.push(s.findClass(decodeUtf8Strict(s.data, ma, mb, 'the module name'), decodeUtf8Strict(s.data, na, nb, 'the global name')))
  },
  STACK_GLOBAL(s) {
    const name = s.pop()
    const module = s.pop()
    if (typeof module !== 'string' || typeof name !== 'string') throw new UnpicklingError('STACK_GLOBAL requires str')
    s.stack.push(s.findClass(module, name))
  },
  EXT1(s) {
    loadExtension(s, s.uint1())
  },
  EXT2(s) {
    loadExtension(s, s.uint2())
  },
  EXT4(s) {
    loadExtension(s, s.int4())
  },
  REDUCE(s) {
    if (s.pending !== null) s.flushLists()
    const args = s.pop()
    const callable = s.pop()
    const v = callGlobal(s, callable, args, 'reduce')
    if (s.inert && s.data[s.pos] === OP.POP) keepStateSetter(v, args)
    s.stack.push(v)
  },
  NEWOBJ(s) {
    if (s.pending !== null) s.flushLists()
    const args = s.pop()
    const cls = s.pop()
    s.stack.push(newObject(s, cls, args, null, 'newobj'))
  },
  NEWOBJ_EX(s) {
    if (s.pending !== null) s.flushLists()
    const kwargs = s.pop()
    const args = s.pop()
    const cls = s.pop()
    s.stack.push(newObject(s, cls, args, kwargs, 'newobj_ex'))
  },
  INST(s) {
    if (s.pending !== null) s.flushLists()
    const [ma, mb] = s.line()
    const [na, nb] = s.line()
    // Python decodes these as ASCII, strictly (pickle.py's load_inst).
    const cls = s.findClass(decodeAsciiStrict(s.data, ma, mb, 'the module name'), decodeAsciiStrict(s.data, na, nb, 'the class name'))
    const args = s.popMark()
    s.stack.push(callGlobal(s, cls, args, 'inst'))
  },
  OBJ(s) {
    if (s.pending !== null) s.flushLists()
    const args = s.popMark()
    if (args.length === 0) underflow()
    const cls = args.shift()
    s.stack.push(callGlobal(s, cls, args, 'obj'))
  },
  BUILD(s) {
    if (s.pending !== null) s.flushLists()
    const state = s.pop()
    build(s, s.top(), state)
  },
  PERSID(s) {
    if (s.pending !== null) s.flushLists()
    const [a, b] = s.line()
    for (let i = a; i < b; i++) {
      if (s.data[i]! >= 0x80) throw new UnpicklingError('persistent IDs in protocol 0 must be ASCII strings')
    }
    s.stack.push(s.persistentLoad(decodeLatin1(s.data, a, b), false))
  },
  BINPERSID(s) {
    if (s.pending !== null) s.flushLists()
    s.stack.push(s.persistentLoad(s.pop(), true))
  },
}

function loadExtension(s: LoadState, code: number): void {
  if (code <= 0) throw new UnpicklingError(`EXT specifies code <= 0: ${code}`)
  const entry = s.options.extensions?.get(code)
  if (entry) {
    s.stack.push(s.findClass(entry[0], entry[1]))
  } else if (s.opaque) {
    s.stack.push(new PyGlobal('', '', {}, true, code))
  } else {
    throw new UnpicklingError(`unregistered extension code ${code}`)
  }
}

/** Loaders by opcode byte, from the opcode table. */
const LOADERS: readonly (Loader | undefined)[] = (() => {
  const table: (Loader | undefined)[] = new Array(256).fill(undefined)
  for (const op of OPCODES) table[op.code] = LOADER_BY_NAME[op.name]
  return table
})()

// ---- the public API ----

/** A plain Uint8Array over the same memory (a Node Buffer's slice() would be a view, not a copy). */
function toBytes(data: BytesLike): Uint8Array {
  if (data instanceof Uint8Array && data.constructor === Uint8Array) return data
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
  if (data instanceof ArrayBuffer || (typeof SharedArrayBuffer !== 'undefined' && data instanceof SharedArrayBuffer)) {
    return new Uint8Array(data)
  }
  throw new PickleError(`expected bytes (an ArrayBuffer, SharedArrayBuffer or ArrayBufferView), got ${describe(data)}`)
}

function isChunkSource(v: unknown): v is ChunkSource {
  return typeof v === 'object' && v !== null && !ArrayBuffer.isView(v) &&
    (Symbol.asyncIterator in v || Symbol.iterator in v)
}

const UNPICKLER_OPTIONS = optionNames(
  'buffers', 'findClass', 'persistentLoad', 'globals', 'extensions', 'encoding', 'errors', 'fixImports', 'dict', 'lossless',
  'copyBytes', 'opaque', 'allow', 'maxDepth', 'maxWork', 'maxSize',
)
const BOOLEAN_OPTIONS = ['fixImports', 'lossless', 'copyBytes', 'opaque'] as const
const STRING_OPTIONS = ['encoding', 'errors'] as const
const FUNCTION_OPTIONS = ['findClass', 'persistentLoad'] as const

/** Misuse by the caller is a TypeError before anything is read; dict and the limits are checked where they are read. */
function checkUnpicklerOptions(options: UnpicklerOptions): void {
  checkOptions('Unpickler', options, UNPICKLER_OPTIONS)
  const o = options as Record<keyof UnpicklerOptions, unknown>
  for (const name of BOOLEAN_OPTIONS) {
    if (o[name] !== undefined && typeof o[name] !== 'boolean') throw badOptionType('Unpickler', name, 'a boolean', o[name])
  }
  for (const name of STRING_OPTIONS) {
    if (o[name] !== undefined && typeof o[name] !== 'string') throw badOptionType('Unpickler', name, 'a string', o[name])
  }
  for (const name of FUNCTION_OPTIONS) {
    if (o[name] !== undefined && typeof o[name] !== 'function') throw badOptionType('Unpickler', name, 'a function', o[name])
  }
  if (o.buffers != null && typeof (o.buffers as Iterable<unknown>)[Symbol.iterator] !== 'function') {
    throw badOptionType('Unpickler', 'buffers', 'an iterable of buffers or null', o.buffers)
  }
  if (o.extensions !== undefined && !(o.extensions instanceof Map)) throw badOptionType('Unpickler', 'extensions', 'a Map', o.extensions)
  if (o.globals !== undefined && !(o.globals instanceof GlobalRegistry)) throw badOptionType('Unpickler', 'globals', 'a GlobalRegistry', o.globals)
  if (o.allow !== undefined && o.opaque === true) throw new TypeError('Unpickler: options allow and opaque exclude each other (opaque allows every global)')
}

/**
 * Python's pickle.Unpickler. Reads one pickle per load() from bytes in memory, or, with
 * loadAsync(), from a source of chunks; several pickles in one input load one after the
 * other, and a clean end of input gives EOFError.
 */
export class Unpickler {
  readonly #state: LoadState
  readonly #source: Uint8Array | ChunkSource
  readonly #maxSize: number
  #scanner: PickleScanner | null = null
  #chunks: AsyncIterator<BytesLike> | Iterator<BytesLike> | null = null
  /** Bytes read from a chunk source and not yet loaded: #pending[#start, #end). */
  #pending: Uint8Array = EMPTY_BYTES
  #start = 0
  #end = 0
  #sourceDone = false
  #consumed = 0

  constructor(source: BytesLike | ChunkSource, options: UnpicklerOptions = {}) {
    checkUnpicklerOptions(options)
    this.#state = new LoadState(options)
    this.#maxSize = checkLimit(options.maxSize ?? DEFAULT_MAX_SIZE, 'maxSize')
    if (isChunkSource(source)) {
      this.#source = source
    } else {
      const bytes = toBytes(source)
      this.#source = bytes
      this.#state.setInput(bytes, 0, bytes.length)
      this.#state.bytesView = options.copyBytes === false
    }
  }

  /** Bytes consumed so far: the position just after the last pickle loaded. */
  get position(): number {
    return this.#source instanceof Uint8Array ? this.#state.pos : this.#consumed
  }

  /** The memo, shared by successive loads, as Python's Unpickler keeps it. */
  get memo(): unknown[] {
    return this.#state.memo
  }

  /**
   * Empties the memo (Python's unpickler.memo.clear()). Call it between loads of pickles that
   * were dumped independently: protocols 4 and 5 number memo entries (MEMOIZE) from the
   * memo's size, so such a pickle only reads right through a fresh memo.
   */
  clearMemo(): void {
    this.#state.memo = []
    this.#state.memoCount = 0
  }

  /** Loads the next pickle from bytes in memory. */
  load(): unknown {
    if (!(this.#source instanceof Uint8Array)) throw new PickleError('this Unpickler reads a stream: use loadAsync()')
    return this.#state.loadOne()
  }

  /** Loads the next pickle from any source, reading only the chunks it needs. */
  async loadAsync(): Promise<unknown> {
    if (this.#source instanceof Uint8Array) return this.#state.loadOne()
    for (;;) {
      if (this.#end > this.#start) {
        const stop = this.#scanStream()
        if (stop >= 0) {
          if (stop - this.#start > this.#maxSize) throw new UnpicklingError(`pickle larger than maxSize (${this.#maxSize} bytes)`)
          const s = this.#state
          s.setInput(this.#pending, this.#start, stop)
          let value: unknown
          try {
            value = s.loadOne()
          } catch (err) {
            throw shiftedBy(err, this.#consumed - this.#start)
          }
          this.#consumed += stop - this.#start
          this.#start = stop
          this.#scanner!.reset(stop)
          return value
        }
        // Every byte from #start belongs to the unfinished pickle: that, not a chunk, is what maxSize limits.
        if (this.#end - this.#start > this.#maxSize) {
          throw new UnpicklingError(`pickle larger than maxSize (${this.#maxSize} bytes)`)
        }
      }
      if (this.#sourceDone) {
        if (this.#end > this.#start) {
          throw new UnpicklingError(`pickle data was truncated: the input ended ${this.#end - this.#start} bytes into a pickle`)
        }
        throw new EOFError('Ran out of input')
      }
      if (!(await this.#readChunk())) this.#sourceDone = true
    }
  }

  #scanStream(): number {
    try {
      return (this.#scanner ??= new PickleScanner()).scan(this.#pending, this.#end)
    } catch (err) {
      // The scanner stops at the opcode it refused: its offset in the stream, and its byte.
      const at = this.#scanner!.position
      throw located(err, this.#consumed + (at - this.#start), this.#pending[at])
    }
  }

  /** Pickles until the clean end of the input. */
  async *[Symbol.asyncIterator](): AsyncGenerator<unknown, void, undefined> {
    for (;;) {
      try {
        yield await this.loadAsync()
      } catch (err) {
        if (err instanceof EOFError) return
        throw err
      }
    }
  }

  async #readChunk(): Promise<boolean> {
    const src = this.#source as ChunkSource
    this.#chunks ??= Symbol.asyncIterator in src
      ? (src as AsyncIterable<BytesLike>)[Symbol.asyncIterator]()
      : (src as Iterable<BytesLike>)[Symbol.iterator]()
    const next = await this.#chunks.next()
    if (next.done) return false
    const chunk = toBytes(next.value)
    // live <= maxSize here (loadAsync checks the unfinished pickle), so memory stays under maxSize plus one chunk.
    const live = this.#end - this.#start
    if (this.#end + chunk.length > this.#pending.length) {
      // Memory follows the bytes that arrived, never a length field: compact, or grow by doubling.
      const target = live + chunk.length <= this.#pending.length
        ? this.#pending
        : new Uint8Array(Math.max(live + chunk.length, Math.min(this.#maxSize, Math.max(64 * 1024, this.#pending.length * 2))))
      target.set(this.#pending.subarray(this.#start, this.#end), 0)
      this.#scanner?.shift(this.#start)
      this.#pending = target
      this.#end = live
      this.#start = 0
    }
    this.#pending.set(chunk, this.#end)
    this.#end += chunk.length
    return true
  }
}

/**
 * One Unpickler (with its LoadState) held for the module's lifetime: V8 keeps a hidden class
 * alive only through the objects that have it, so without one a full GC between loads drops
 * the class and throws away the unpickler code optimized for it (see pickler.ts SHAPE_KEEPER).
 */
export const SHAPE_KEEPER: unknown = new Unpickler(EMPTY_BYTES)

/** Python's pickle.loads: the first pickle in data. */
export function loads(data: BytesLike, options?: UnpicklerOptions): unknown {
  return new Unpickler(data, options).load()
}

/** Python's pickle.load: the first pickle from bytes or a source of chunks. */
export function load(source: BytesLike | ChunkSource, options?: UnpicklerOptions): Promise<unknown> {
  return new Unpickler(source, options).loadAsync()
}
