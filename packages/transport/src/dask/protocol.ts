/**
 * Dask's message layer (distributed/protocol/core.py): a message is a list of frames whose
 * frame 0 is msgpack of the message itself. A value that msgpack cannot carry is replaced in
 * it by {"__Serialized__": i} or {"__Pickled__": i}, where frame i is a msgpack sub-header and
 * the next "num-sub-frames" frames are the value's own:
 *
 *   "__Serialized__"  the sub-header of a serializer family (see serialize.ts); a scheduler
 *                     never opens these, it relays them to workers and clients as they are.
 *   "__Pickled__"     {"pickled-obj": <pickle>, "num-sub-frames": n}, the n frames being the
 *                     pickle's out-of-band buffers; every receiver, the scheduler included,
 *                     unpickles it on arrival.
 *   "__Set__"         {"__Set__": true, "as-list": [...]}: a Python set.
 */
import { PickleBuffer, NDArray, dumps, loads } from '@picklewire/codec'
import { TransportError, shown } from '../errors.js'
import {
  DaskSerialized, decompressCharged, deserializeFromWire, field, packMsgpack, serializeForWire, unpackMsgpack,
  type DaskSerializerName, type DaskStats, type DeserializeContext, type SerializeContext,
} from './serialize.js'

/** Marks a value to travel as {"__Serialized__": i}, written by the serializer families. */
export class DaskSerialize {
  constructor(
    readonly value: unknown,
    /** The families to try, in order. Default: the context's (dask, then pickle). */
    readonly serializers?: readonly DaskSerializerName[],
  ) {}
}

/** Marks a value to travel as {"__Pickled__": i}: unpickled by every receiver, the scheduler too. */
export class DaskToPickle {
  constructor(readonly value: unknown) {}
}

/** How deep a message may nest, both ways (Dask's messages are a few levels deep). */
const MAX_DEPTH = 100

function tooDeep(): never {
  throw new TransportError('PROTOCOL', `message nests deeper than ${MAX_DEPTH} levels`)
}

/** A message as its frames: msgpack frame 0, then each serialized value's sub-header and frames. */
export function dumpsMessage(msg: unknown, ctx: SerializeContext, stats?: DaskStats): Uint8Array[] {
  const frames: Uint8Array[] = [new Uint8Array(0)]

  const addSub = (header: unknown, sub: Uint8Array[]): number => {
    const at = frames.length
    const h = header instanceof Map ? new Map(header) : { ...(header as Record<string, unknown>) }
    if (h instanceof Map) h.set('num-sub-frames', sub.length)
    else h['num-sub-frames'] = sub.length
    frames.push(packMsgpack(h), ...sub)
    return at
  }

  const walk = (v: unknown, depth: number): unknown => {
    if (depth > MAX_DEPTH) tooDeep()
    if (v === null || v === undefined) return null
    const t = typeof v
    if (t === 'string' || t === 'number' || t === 'boolean' || t === 'bigint') return v
    if (v instanceof DaskSerialize) {
      const s = serializeForWire(v.value, v.serializers ? { ...ctx, serializers: v.serializers } : ctx, stats)
      return { __Serialized__: addSub(s.header, s.frames) }
    }
    if (v instanceof DaskSerialized) return { __Serialized__: addSub(v.header, v.frames) }
    if (v instanceof DaskToPickle) {
      const buffers: Uint8Array[] = []
      const pickle = dumps(v.value, {
        ...ctx.pickler,
        protocol: ctx.pickleProtocol,
        bufferCallback: ctx.pickleProtocol >= 5 ? (b: PickleBuffer) => void buffers.push(b.raw()) : null,
      })
      return { __Pickled__: addSub({ 'pickled-obj': pickle }, buffers) }
    }
    if (v instanceof Uint8Array) return v
    if (Array.isArray(v)) return v.map((x) => walk(x, depth + 1))
    if (v instanceof Map) {
      const out = new Map<unknown, unknown>()
      for (const [k, x] of v) out.set(k, walk(x, depth + 1))
      return out
    }
    if (v instanceof Set) return { __Set__: true, 'as-list': [...v].map((x) => walk(x, depth + 1)) }
    if (v instanceof NDArray || ArrayBuffer.isView(v)) {
      throw new TypeError('an array in a Dask message must be wrapped: new DaskSerialize(array) (msgpack cannot carry it)')
    }
    if (t === 'object' && (Object.getPrototypeOf(v) === Object.prototype || Object.getPrototypeOf(v) === null)) {
      const out: Record<string, unknown> = {}
      for (const [k, x] of Object.entries(v as Record<string, unknown>)) {
        Object.defineProperty(out, k, { value: walk(x, depth + 1), enumerable: true, writable: true, configurable: true })
      }
      return out
    }
    throw new TypeError(`a Dask message cannot carry ${(v as object).constructor?.name ?? t}; wrap it in DaskSerialize or DaskToPickle`)
  }

  frames[0] = packMsgpack(walk(msg, 0))
  return frames
}

/** How a message is read. */
export interface LoadContext extends DeserializeContext {
  /** false: serialized values stay DaskSerialized (to relay them, as the scheduler does). Default true. */
  deserialize?: boolean
}

function offsetOf(v: unknown, frames: readonly Uint8Array[], what: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0 || v >= frames.length) {
    throw new TransportError('PROTOCOL', `${what} points at frame ${shown(v)} of a ${frames.length}-frame message`)
  }
  return v
}

function subFrames(header: unknown, frames: Uint8Array[], at: number, what: string): Uint8Array[] {
  const n = field(header, 'num-sub-frames')
  if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 0 || at + 1 + n > frames.length) {
    throw new TransportError('PROTOCOL', `${what} announces ${shown(n)} sub-frames after frame ${at} of ${frames.length}`)
  }
  return frames.slice(at + 1, at + 1 + n)
}

function withoutCount(header: Map<unknown, unknown>): Map<unknown, unknown> {
  const h = new Map(header)
  h.delete('num-sub-frames')
  return h
}

/** A message from its frames, with every serialized value read (or kept as DaskSerialized). */
export function loadsMessage(frames: Uint8Array[], ctx: LoadContext): unknown {
  if (frames.length === 0) throw new TransportError('PROTOCOL', 'a Dask message needs at least one frame')
  const deserialize = ctx.deserialize ?? true
  // One budget per message for what decompressing and copying make (see DeserializeContext.budget).
  const mctx: LoadContext = { ...ctx, budget: { left: ctx.limits.maxMessageBytes } }
  // Each frame belongs to one value: a second reference to it (to decompress it again, say) is refused.
  const claimed = new Uint8Array(frames.length)
  const claim = (from: number, to: number, what: string): void => {
    for (let i = from; i <= to; i++) {
      if (claimed[i] !== 0) throw new TransportError('PROTOCOL', `${what} reuses frame ${i}, which another value of the message already took`)
      claimed[i] = 1
    }
  }

  const serialized = (ref: unknown): unknown => {
    const at = offsetOf(ref, frames, '"__Serialized__"')
    claim(at, at, `"__Serialized__" (frame ${at})`)
    const header = unpackMsgpack(frames[at]!, ctx.limits, `sub-header (frame ${at})`)
    if (!(header instanceof Map)) throw new TransportError('PROTOCOL', `sub-header (frame ${at}) is not a map`)
    const sub = subFrames(header, frames, at, `sub-header (frame ${at})`)
    claim(at + 1, at + sub.length, `sub-header (frame ${at})`)
    if (!deserialize) return new DaskSerialized(withoutCount(header), sub)
    return deserializeFromWire(header, sub, mctx)
  }

  const pickled = (ref: unknown): unknown => {
    const at = offsetOf(ref, frames, '"__Pickled__"')
    claim(at, at, `"__Pickled__" (frame ${at})`)
    const header = unpackMsgpack(frames[at]!, ctx.limits, `sub-header (frame ${at})`)
    const pickle = field(header, 'pickled-obj')
    if (!(pickle instanceof Uint8Array)) throw new TransportError('PROTOCOL', `"__Pickled__" sub-header (frame ${at}) has no pickled-obj bytes`)
    let sub = subFrames(header, frames, at, `sub-header (frame ${at})`)
    claim(at + 1, at + sub.length, `sub-header (frame ${at})`)
    const compression = field(header, 'compression')
    // Dask may compress these buffers and then not decompress them; reading them is cheap insurance.
    if (Array.isArray(compression)) sub = sub.map((f, i) => decompressCharged(compression[i], f, mctx))
    return loads(pickle, { ...ctx.unpickler, buffers: sub.map((f) => new PickleBuffer(f)) })
  }

  const walk = (v: unknown, depth: number): unknown => {
    if (depth > MAX_DEPTH) tooDeep()
    if (Array.isArray(v)) return v.map((x) => walk(x, depth + 1))
    if (!(v instanceof Map)) return v
    if (v.has('__Serialized__')) return serialized(v.get('__Serialized__'))
    if (v.has('__Pickled__')) return pickled(v.get('__Pickled__'))
    if (v.get('__Set__') === true) {
      const items = v.get('as-list')
      return new Set(Array.isArray(items) ? items.map((x) => walk(x, depth + 1)) : [])
    }
    const out = new Map<unknown, unknown>()
    for (const [k, x] of v) out.set(k, walk(x, depth + 1))
    return out
  }

  return walk(unpackMsgpack(frames[0]!, ctx.limits, 'message (frame 0)'), 0)
}
