/**
 * Dask's serializer families (distributed/protocol/serialize.py and numpy.py): how one value
 * becomes a sub-header plus frames, and back.
 *
 *   "pickle"   frame 0 is a pickle (protocol 5 when both sides speak it), the other frames its
 *              out-of-band buffers, in order; header {"writeable": [flag per buffer]}.
 *   "dask"     per-type: numpy arrays as {"dtype": [0, "<f8"], "shape", "strides",
 *              "writeable": [flag]} and one data frame (or {"pickle": true} and a pickle for
 *              object arrays); bytes and bytearray as one frame. The header names the type
 *              ("type": "numpy.ndarray") and carries its pickled class ("type-serialized").
 *   "msgpack"  one msgpack frame.
 *   "error"    the sender could not serialize: the frames are the UTF-8 error text.
 *   collections {"is-collection": true, "sub-headers", "frame-lengths", "type-serialized":
 *              "list" | "tuple" | "set" | "dict"}: each item serialized on its own.
 *
 * Around them, serialize_and_split cuts frames over the shard size into shards
 * ("split-num-sub-frames", "split-offsets") and each shard may be compressed ("compression",
 * one entry per frame as sent). Receiving undoes it in the other order: decompress, merge,
 * deserialize. Merged shards that lie back to back in one buffer (tcp) are one view, not a copy.
 */
import {
  ByteArray, DType, FrozenSet, NDArray, PickleBuffer, PyGlobal, Tuple, defaultGlobals, dumps, loads,
  type PicklerOptions, type UnpicklerOptions,
} from '@picklewire/codec'
import { Packr, Unpackr } from 'msgpackr'
import { TransportError, shown } from '../errors.js'
import { checkPlainMsgpack } from '../msgpack-check.js'
import { ValueCodec, bytesOfPart } from '../message.js'
import { decompressFrame, maybeCompress, type DaskCompression } from './compression.js'
import { lz4Decompress, lz4DecompressInto, lz4DecompressedSize } from './lz4.js'
import type { DaskLimits } from './framing.js'

/** A received sub-header or message map: msgpack maps load as Map, so no key reaches a prototype. */
export type DaskMap = Map<unknown, unknown>

/** The serializer families this side writes, in the order tried (Dask's default: dask, then pickle). */
export type DaskSerializerName = 'dask' | 'pickle' | 'msgpack'

/** How values are written: what the handshake settled, and the codec's options. */
export interface SerializeContext {
  /** The pickle protocol both sides speak (5 unless the peer is older). */
  pickleProtocol: number
  /** Compression both sides agreed on, or null. */
  compression: DaskCompression | null
  /** Frames longer than this are cut into shards (Dask: 64 MiB on tcp, 8 MiB on ws). */
  shardBytes: number
  /** Families tried in order. Default ['dask', 'pickle']. */
  serializers?: readonly DaskSerializerName[]
  /** Pickler options (globals, dispatchTable, ...); protocol and bufferCallback are set here. */
  pickler?: Omit<PicklerOptions, 'protocol' | 'bufferCallback'>
}

/** Counters a comm keeps, so tests and benchmarks can see what was copied or decompressed. */
export interface DaskStats {
  /** Messages received / sent (each a list of frames, as Dask's comms carry them). */
  messagesReceived: number
  messagesSent: number
  /** Bytes of those messages' frames, as they travel (compressed, sharded). */
  bytesReceived: number
  bytesSent: number
  /** Frames received compressed, by compression name. */
  decompressed: Record<string, number>
  /** Sharded frames that had to be copied to be merged (ws, or shards not back to back). */
  mergeCopies: number
  /** Frames sent compressed. */
  compressed: number
}

export function newStats(): DaskStats {
  return { messagesReceived: 0, messagesSent: 0, bytesReceived: 0, bytesSent: 0, decompressed: {}, mergeCopies: 0, compressed: 0 }
}

/** How values are read. */
export interface DeserializeContext {
  limits: DaskLimits
  /** Unpickler options for "pickle" frames (globals, opaque, dict, ...); buffers are set here. */
  unpickler?: Omit<UnpicklerOptions, 'buffers'>
  stats?: DaskStats
  /**
   * What one message may still make from its frames, in bytes: by decompressing them and by
   * copying strided or broadcast numpy data. loadsMessage starts each message at maxMessageBytes;
   * without one, each such output is held to maxMessageBytes alone.
   */
  budget?: { left: number }
}

/** Charges n bytes that the message makes (decompressed, or copied out of strides) to its budget. */
function spend(ctx: DeserializeContext, n: number, what: string): void {
  const max = ctx.limits.maxMessageBytes
  const left = ctx.budget?.left ?? max
  if (n > left) {
    throw new TransportError('LIMIT', `${what} of ${n} bytes would take the message over maxMessageBytes (${max}) of decompressed and copied data`)
  }
  if (ctx.budget) ctx.budget.left -= n
}

/** A frame decompressed by its Dask compression name, charged to the message's budget. */
export function decompressCharged(name: unknown, frame: Uint8Array, ctx: DeserializeContext): Uint8Array {
  if (noCompression(name)) return frame
  const out = decompressFrame(name, frame, ctx.budget?.left ?? ctx.limits.maxMessageBytes)
  spend(ctx, out.byteLength, 'decompressed frame')
  if (ctx.stats) ctx.stats.decompressed[name as string] = (ctx.stats.decompressed[name as string] ?? 0) + 1
  return out
}

/** A value serialized into a sub-header and frames: what travels, or what is relayed untouched. */
export class DaskSerialized {
  constructor(
    /** The sub-header, without "num-sub-frames" (a plain object when made here, a Map when received). */
    readonly header: DaskMap | Record<string, unknown>,
    readonly frames: Uint8Array[],
  ) {}
}

const packr = new Packr({ useRecords: false, variableMapSize: true, encodeUndefinedAsNil: true })
// int64AsType 'auto' (numbers up to 2^53, bigints beyond) is in msgpackr 2.1 but missing from its typings.
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: false, int64AsType: 'auto' as 'bigint' })

/** msgpack, as Dask's msgpack.dumps(use_bin_type=True) reads it. */
export function packMsgpack(value: unknown): Uint8Array {
  return packr.pack(value)
}

/** msgpack of a header or message, checked against maxHeaderBytes first. */
export function unpackMsgpack(frame: Uint8Array, limits: DaskLimits, what: string): unknown {
  if (frame.length > limits.maxHeaderBytes) {
    throw new TransportError('LIMIT', `${what} of ${frame.length} bytes is over maxHeaderBytes (${limits.maxHeaderBytes})`)
  }
  checkPlainMsgpack(frame, what)
  try {
    return unpackr.unpack(frame)
  } catch (err) {
    throw new TransportError('PROTOCOL', `${what} is not msgpack: ${err instanceof Error ? err.message : String(err)}`, { cause: err })
  }
}

/** A field of a received map, or of a header made here. */
export function field(m: unknown, key: string): unknown {
  if (m instanceof Map) return m.get(key)
  if (m !== null && typeof m === 'object' && Object.hasOwn(m, key)) return (m as Record<string, unknown>)[key]
  return undefined
}

function has(m: unknown, key: string): boolean {
  return m instanceof Map ? m.has(key) : m !== null && typeof m === 'object' && Object.hasOwn(m, key)
}

function bad(why: string): never {
  throw new TransportError('PROTOCOL', `bad Dask sub-header: ${why}`)
}

function count(v: unknown, what: string): number {
  if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) return v
  return bad(`${what} must be a non-negative integer, got ${shown(v)}`)
}

function list(v: unknown, what: string): unknown[] {
  if (Array.isArray(v)) return v
  return bad(`${what} must be a list`)
}

// ---- writing ----

const NDARRAY = new PyGlobal('numpy', 'ndarray')
const BYTES = new PyGlobal('builtins', 'bytes')
const BYTEARRAY = new PyGlobal('builtins', 'bytearray')

function plainBytes(v: unknown): v is Uint8Array {
  return v instanceof Uint8Array && !(v instanceof ByteArray)
}

/** A TypedArray (other than bytes) or NDArray as the NDArray numpy would see, or null. */
function asNDArray(v: unknown): NDArray | null {
  if (v instanceof NDArray) return v
  if (ArrayBuffer.isView(v) && !(v instanceof DataView) && !(v instanceof Uint8Array)) return new NDArray(v as Float64Array)
  return null
}

/** The "dask" family: numpy arrays (not object or structured ones), bytes and bytearray; null when it does not apply. */
function daskDumps(value: unknown, ctx: SerializeContext): [Record<string, unknown>, Uint8Array[]] | null {
  const typeHeader = (g: PyGlobal, sub: Record<string, unknown>): Record<string, unknown> => ({
    'sub-header': sub,
    type: g.module === 'builtins' ? g.name : `${g.module}.${g.name}`,
    'type-serialized': dumps(g, { protocol: Math.min(ctx.pickleProtocol, 5) }),
    serializer: 'dask',
  })
  if (value instanceof ByteArray) return [typeHeader(BYTEARRAY, {}), [value]]
  if (plainBytes(value)) return [typeHeader(BYTES, {}), [value]]
  const a = asNDArray(value)
  if (a === null || a.dtype.kind === 'O' || a.dtype.kind === 'V') return null
  const sub = {
    dtype: [0, a.dtype.str],
    shape: [...a.shape],
    strides: [...a.strides],
    writeable: [!a.readonly],
  }
  return [typeHeader(NDARRAY, sub), [a.bytes()]]
}

const everyBuffer = (): boolean => true

/** Dask's pickle family: every buffer out of band (protocol 5), its flag as "writeable". */
function pickleDumps(value: unknown, ctx: SerializeContext): [Record<string, unknown>, Uint8Array[]] {
  const { pickle, buffers, readonly } = new ValueCodec({ pickler: { ...ctx.pickler, outOfBand: everyBuffer }, protocol: ctx.pickleProtocol }).encode(value)
  return [{ serializer: 'pickle', writeable: readonly.map((r) => !r) }, [pickle, ...buffers.map((b) => bytesOfPart(b, 'the Dask carrier'))]]
}

/** One value as Dask's serialize() makes it: a sub-header and frames, before splitting. */
export function serialize(value: unknown, ctx: SerializeContext): [Record<string, unknown>, Uint8Array[]] {
  const families = ctx.serializers ?? ['dask', 'pickle']
  for (const name of families) {
    if (name === 'dask') {
      const out = daskDumps(value, ctx)
      if (out !== null) return out
    } else if (name === 'pickle') {
      return pickleDumps(value, ctx)
    } else if (name === 'msgpack') {
      return [{ serializer: 'msgpack' }, [packMsgpack(value)]]
    }
  }
  throw new TypeError(`no serializer of ${JSON.stringify(families)} can write ${value === null ? 'null' : typeof value}`)
}

/**
 * serialize_and_split, then compression of each shard: the sub-header and frames as they go on
 * the wire (without "num-sub-frames", which the message layer adds).
 */
export function serializeForWire(value: unknown, ctx: SerializeContext, stats?: DaskStats): DaskSerialized {
  const [header, frames] = serialize(value, ctx)
  const shard = ctx.shardBytes
  const out: Uint8Array[] = []
  const splitCounts: number[] = []
  const splitOffsets: number[] = []
  for (const f of frames) {
    splitOffsets.push(out.length)
    const n = Math.max(1, Math.ceil(f.byteLength / shard))
    splitCounts.push(n)
    for (let i = 0; i < n; i++) out.push(f.subarray(i * shard, Math.min(f.byteLength, (i + 1) * shard)))
  }
  const compression: (DaskCompression | null)[] = []
  for (let i = 0; i < out.length; i++) {
    const [name, data] = maybeCompress(out[i]!, ctx.compression)
    compression.push(name)
    out[i] = data
    if (name !== null && stats) stats.compressed++
  }
  return new DaskSerialized(
    { ...header, 'split-num-sub-frames': splitCounts, 'split-offsets': splitOffsets, compression },
    out,
  )
}

// ---- reading ----

/** An uninitialised buffer of its own (so 64-byte aligned): every byte is written before it is read. */
function allocate(n: number): Uint8Array {
  return n === 0 ? new Uint8Array(0) : new Uint8Array(Buffer.allocUnsafeSlow(n).buffer, 0, n)
}

function noCompression(name: unknown): boolean {
  return name === null || name === undefined || name === false
}

/**
 * One frame from its shards as they arrived: decompressed and merged. Uncompressed shards that
 * lie back to back in one buffer (tcp) become one view; lz4 shards are decompressed straight
 * into one buffer; anything else is decompressed, then copied together.
 */
function joinShards(parts: Uint8Array[], names: unknown[], ctx: DeserializeContext): Uint8Array {
  const max = ctx.limits.maxMessageBytes
  const stats = ctx.stats
  if (names.every(noCompression)) return mergeFrames(parts, ctx)
  if (names.every((n) => noCompression(n) || n === 'lz4')) {
    let total = 0
    for (let i = 0; i < parts.length; i++) total += names[i] === 'lz4' ? lz4DecompressedSize(parts[i]!) : parts[i]!.byteLength
    spend(ctx, total, 'decompressed frame') // the message's budget is at most maxMessageBytes
    if (stats) stats.decompressed.lz4 = (stats.decompressed.lz4 ?? 0) + names.filter((n) => n === 'lz4').length
    if (parts.length === 1) return lz4Decompress(parts[0]!, max)
    const out = allocate(total)
    let at = 0
    for (let i = 0; i < parts.length; i++) {
      if (names[i] === 'lz4') {
        at += lz4DecompressInto(parts[i]!, out, at)
      } else {
        out.set(parts[i]!, at)
        at += parts[i]!.byteLength
      }
    }
    return out
  }
  return mergeFrames(parts.map((p, i) => decompressCharged(names[i], p, ctx)), ctx)
}

/** Shards back into frames: a view when they lie back to back in one buffer, else one copy. */
function mergeFrames(parts: Uint8Array[], ctx: DeserializeContext): Uint8Array {
  if (parts.length === 1) return parts[0]!
  let contiguous = true
  let total = 0
  for (let i = 0; i < parts.length; i++) {
    const p = parts[i]!
    total += p.byteLength
    if (i > 0) {
      const q = parts[i - 1]!
      if (p.buffer !== q.buffer || q.byteOffset + q.byteLength !== p.byteOffset) contiguous = false
    }
  }
  if (total > ctx.limits.maxMessageBytes) throw new TransportError('LIMIT', `merged frame of ${total} bytes is over maxMessageBytes`)
  if (contiguous) return new Uint8Array(parts[0]!.buffer, parts[0]!.byteOffset, total)
  if (ctx.stats) ctx.stats.mergeCopies++
  return concat(parts)
}

/**
 * Reads a value from its sub-header and frames as they arrived: Dask's decompress, then
 * merge_and_deserialize, with shards decompressed into their merged frame directly.
 */
export function deserializeFromWire(header: unknown, frames: Uint8Array[], ctx: DeserializeContext): unknown {
  const compression = field(header, 'compression')
  const names = compression === undefined || compression === null ? frames.map(() => null) : list(compression, 'compression')
  if (names.length !== frames.length) bad(`${names.length} compression entries for ${frames.length} frames`)
  if (!has(header, 'split-num-sub-frames')) {
    return deserialize(header, frames.map((f, i) => joinShards([f], [names[i]], ctx)), ctx)
  }
  const counts = list(field(header, 'split-num-sub-frames'), 'split-num-sub-frames')
  const offsets = list(field(header, 'split-offsets'), 'split-offsets')
  if (counts.length !== offsets.length) bad('split-num-sub-frames and split-offsets differ in length')
  const merged = counts.map((c, i) => {
    const n = count(c, 'split-num-sub-frames[i]')
    const at = count(offsets[i], 'split-offsets[i]')
    if (at + n > frames.length) bad(`split ${i} (frames ${at} to ${at + n}) runs past ${frames.length} frames`)
    if (n === 0) bad(`split ${i} has no frames`)
    return joinShards(frames.slice(at, at + n), names.slice(at, at + n), ctx)
  })
  return deserialize(header, merged, ctx)
}

/** The frames as one plain Uint8Array (a view when there is one frame; a Node Buffer is not passed on as such). */
function concat(frames: Uint8Array[]): Uint8Array {
  if (frames.length === 1) return new Uint8Array(frames[0]!.buffer, frames[0]!.byteOffset, frames[0]!.byteLength)
  const out = allocate(frames.reduce((n, f) => n + f.byteLength, 0))
  let at = 0
  for (const f of frames) {
    out.set(f, at)
    at += f.byteLength
  }
  return out
}

/** The deepest nesting of Dask collections (lists of dicts of ...) read from a peer. */
const MAX_COLLECTION_DEPTH = 100

/** Dask's deserialize(): one value from a sub-header and whole (merged, decompressed) frames. */
export function deserialize(header: unknown, frames: Uint8Array[], ctx: DeserializeContext, depth = 0): unknown {
  if (has(header, 'is-collection')) {
    if (depth >= MAX_COLLECTION_DEPTH) bad(`collections nest deeper than ${MAX_COLLECTION_DEPTH} levels`)
    return deserializeCollection(header, frames, ctx, depth)
  }
  const name = field(header, 'serializer')
  switch (name) {
    case 'pickle': return pickleLoads(header, frames, ctx)
    case 'dask': return daskLoads(header, frames, ctx)
    case 'msgpack': return unpackMsgpack(concat(frames), { ...ctx.limits, maxHeaderBytes: ctx.limits.maxMessageBytes }, 'msgpack-serialized value')
    case 'error': {
      const text = frames.map((f) => Buffer.from(f.buffer, f.byteOffset, f.byteLength).toString('utf8')).join('\n')
      throw new TransportError('REMOTE', `the sender could not serialize a value: ${text}`)
    }
    default:
      throw new TransportError('PROTOCOL', `unknown Dask serializer ${shown(name)} (this client reads pickle, dask, msgpack and error)`)
  }
}

function deserializeCollection(header: unknown, frames: Uint8Array[], ctx: DeserializeContext, depth: number): unknown {
  const headers = list(field(header, 'sub-headers'), 'sub-headers')
  const lengths = list(field(header, 'frame-lengths'), 'frame-lengths')
  if (headers.length !== lengths.length) bad('sub-headers and frame-lengths differ in length')
  const kind = field(header, 'type-serialized')
  const items: unknown[] = []
  const keys: unknown[] = []
  let at = 0
  for (let i = 0; i < headers.length; i++) {
    const n = count(lengths[i], 'frame-lengths[i]')
    if (at + n > frames.length) bad(`collection item ${i} runs past ${frames.length} frames`)
    keys.push(field(headers[i], 'key'))
    items.push(deserialize(headers[i], frames.slice(at, at + n), ctx, depth + 1))
    at += n
  }
  switch (kind) {
    case 'list': return items
    case 'tuple': return Tuple.fromItems(items)
    case 'set': return new Set(items)
    case 'frozenset': return new FrozenSet(items)
    case 'dict': return new Map(items.map((v, i) => [keys[i], v]))
    default: return bad(`unknown collection type ${shown(kind)}`)
  }
}

function pickleLoads(header: unknown, frames: Uint8Array[], ctx: DeserializeContext): unknown {
  if (frames.length === 0) bad('a pickle-serialized value has no frames')
  const flags = field(header, 'writeable')
  const writeable = Array.isArray(flags) ? flags : []
  const buffers = frames.slice(1)
  return new ValueCodec({ unpickler: ctx.unpickler }).decode(frames[0]!, buffers, buffers.map((_, i) => writeable[i] === false))
}

const FROMBUFFER = defaultGlobals.get('numpy.core.numeric', '_frombuffer') as PyGlobal

function isContiguous(shape: readonly number[], strides: readonly number[], itemsize: number, order: 'C' | 'F'): boolean {
  let expected = itemsize
  const n = shape.length
  for (let k = 0; k < n; k++) {
    const i = order === 'C' ? n - 1 - k : k
    // numpy ignores the stride of an axis of length 1 (and of any axis when there are no elements)
    if (shape[i]! !== 1 && strides[i] !== expected) return false
    expected *= shape[i]!
  }
  return true
}

function intList(v: unknown, what: string): number[] {
  return list(v, what).map((x) => {
    if (typeof x !== 'number' || !Number.isSafeInteger(x)) bad(`${what} must hold integers`)
    return x
  })
}

/**
 * Copies the elements a strided view reaches (broadcast or not contiguous) into a C-order
 * buffer. The caller has checked that every offset lies in the frame. Rows of the last axis go
 * whole: one copy when contiguous, one element repeated by doubling when its stride is 0
 * (broadcast), element by element otherwise.
 */
function gatherStrided(frame: Uint8Array, shape: number[], strides: number[], itemsize: number, size: number, ctx: DeserializeContext): Uint8Array {
  spend(ctx, size * itemsize, 'strided numpy array copied')
  const out = allocate(size * itemsize)
  if (size === 0 || itemsize === 0) return out
  const last = shape.length - 1
  const rowLength = last >= 0 ? shape[last]! : 1
  const step = last >= 0 ? strides[last]! : 0
  const rowBytes = rowLength * itemsize
  const index = new Array<number>(Math.max(0, last)).fill(0)
  for (let at = 0; at < out.length; at += rowBytes) {
    let offset = 0
    for (let k = 0; k < last; k++) offset += index[k]! * strides[k]!
    if (step === itemsize) {
      out.set(frame.subarray(offset, offset + rowBytes), at)
    } else if (step === 0) {
      out.set(frame.subarray(offset, offset + itemsize), at)
      for (let filled = itemsize; filled < rowBytes; filled *= 2) out.copyWithin(at + filled, at, at + Math.min(filled, rowBytes - filled))
    } else {
      for (let e = 0; e < rowLength; e++, offset += step) out.set(frame.subarray(offset, offset + itemsize), at + e * itemsize)
    }
    for (let k = last - 1; k >= 0; k--) {
      if (++index[k]! < shape[k]!) break
      index[k] = 0
    }
  }
  return out
}

/**
 * The number of elements of shape, checked before anything is allocated: no negative axis, and
 * every offset the strides reach inside the frame (when there are elements at all).
 */
function checkedSize(shape: number[], strides: number[], itemsize: number, frameLength: number, ctx: DeserializeContext): number {
  let size = 1
  let lo = 0
  let hi = 0
  for (let k = 0; k < shape.length; k++) {
    const n = shape[k]!
    if (n < 0) bad(`shape has a negative axis (${n})`)
    size *= n
    if (n > 0) {
      const reach = (n - 1) * strides[k]!
      if (reach < 0) lo += reach
      else hi += reach
    }
  }
  if (size === 0) return 0
  if (!Number.isSafeInteger(size) || size * itemsize > ctx.limits.maxMessageBytes) {
    throw new TransportError('LIMIT', `numpy array of shape (${shape.join(', ')}) is over maxMessageBytes (${ctx.limits.maxMessageBytes})`)
  }
  if (lo < 0 || hi + itemsize > frameLength) bad(`array strides reach outside the data frame (bytes ${lo} to ${hi + itemsize} of ${frameLength})`)
  return size
}

/** Dask's deserialize_numpy_ndarray: an NDArray over the data frame (a view when aligned). */
function numpyLoads(sub: unknown, frames: Uint8Array[], ctx: DeserializeContext): NDArray | unknown {
  if (field(sub, 'pickle') === true) return pickleLoads(new Map(), frames, ctx)
  if (frames.length !== 1) bad(`a numpy array needs one data frame, got ${frames.length}`)
  const frame = frames[0]!
  const dt = list(field(sub, 'dtype'), 'dtype')
  if (dt[0] !== 0 || typeof dt[1] !== 'string') {
    throw new TransportError('PROTOCOL', 'numpy array with a pickled (structured) dtype: this client reads arrays whose dtype is a type string')
  }
  let dtype: DType
  try {
    dtype = DType.of(dt[1])
  } catch (err) {
    throw new TransportError('PROTOCOL', `numpy dtype ${shown(dt[1])}: ${err instanceof Error ? err.message : String(err)}`, { cause: err })
  }
  const broadcast = field(sub, 'broadcast_to')
  const shape = intList(broadcast !== undefined && broadcast !== null ? broadcast : field(sub, 'shape'), 'shape')
  const strides = intList(field(sub, 'strides'), 'strides')
  if (strides.length !== shape.length) bad(`${shape.length} axes but ${strides.length} strides`)
  const flags = field(sub, 'writeable')
  const readonly = Array.isArray(flags) && flags[0] === false
  const size = checkedSize(shape, strides, dtype.itemsize, frame.length, ctx)
  const nbytes = size * dtype.itemsize
  let data = frame
  let order: 'C' | 'F'
  if (nbytes === frame.length && isContiguous(shape, strides, dtype.itemsize, 'C')) order = 'C'
  else if (nbytes === frame.length && isContiguous(shape, strides, dtype.itemsize, 'F')) order = 'F'
  else {
    data = gatherStrided(frame, shape, strides, dtype.itemsize, size, ctx)
    order = 'C'
  }
  try {
    return FROMBUFFER.call([new PickleBuffer(data, { readonly }), dtype, Tuple.fromItems(shape), order])
  } catch (err) {
    throw new TransportError('PROTOCOL', `numpy array frame: ${err instanceof Error ? err.message : String(err)}`, { cause: err })
  }
}

function daskLoads(header: unknown, frames: Uint8Array[], ctx: DeserializeContext): unknown {
  const type = field(header, 'type')
  const sub = field(header, 'sub-header')
  switch (type) {
    // dask.utils.typename leaves builtins without their module
    case 'numpy.ndarray': return numpyLoads(sub, frames, ctx)
    case 'bytes': case 'builtins.bytes': return concat(frames)
    case 'bytearray': case 'builtins.bytearray': {
      const b = concat(frames)
      return new ByteArray(b.buffer as ArrayBuffer, b.byteOffset, b.byteLength)
    }
    case 'memoryview': case 'builtins.memoryview': return concat(frames)
    default:
      throw new TransportError(
        'PROTOCOL',
        `no reader for Dask-serialized ${shown(type)} (this client reads numpy.ndarray, bytes, bytearray and memoryview)`,
      )
  }
}
