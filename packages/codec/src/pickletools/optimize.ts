/**
 * Python's pickletools.optimize: drops the PUTs no GET uses, renumbers the memo, and frames
 * the result again as pickle._Pickler would, so that the output is the same bytes CPython
 * 3.11 gives for the same input.
 */
import { UnpicklingError } from '../errors.js'
import { HIGHEST_PROTOCOL, OP } from '../opcodes.js'
import type { BufferSource } from '../types.js'
import { bytesAndStart, genops, memoKey, type MemoKey } from './genops.js'

/** pickle._Framer's frame size: a frame is committed once it holds this many bytes. */
const FRAME_SIZE_TARGET = 64 * 1024
/** A shorter frame is written without its FRAME header. */
const FRAME_SIZE_MIN = 4

type Step =
  | { readonly kind: 'put'; readonly id: MemoKey }
  | { readonly kind: 'get'; readonly id: MemoKey }
  | { readonly kind: 'copy'; readonly from: number; readonly to: number }

/** Bytes gathered as chunks, joined once. */
class ByteSink {
  chunks: Uint8Array[] = []
  length = 0
  write(b: Uint8Array): void {
    if (b.length === 0) return
    this.chunks.push(b)
    this.length += b.length
  }
  bytes(): Uint8Array {
    const out = new Uint8Array(this.length)
    let at = 0
    for (const c of this.chunks) {
      out.set(c, at)
      at += c.length
    }
    return out
  }
}

function ascii(text: string): Uint8Array {
  return Uint8Array.from(text, (c) => c.charCodeAt(0))
}

function withIndex(code: number, index: number): Uint8Array {
  if (index < 256) return Uint8Array.of(code, index)
  const b = new Uint8Array(5)
  b[0] = code
  new DataView(b.buffer).setUint32(1, index, true)
  return b
}

/** What pickle._Pickler(out, proto) writes for put(idx) and get(i), framing included. */
class Writer {
  readonly out = new ByteSink()
  #frame: ByteSink | null = null

  constructor(readonly proto: number) {
    if (proto > HIGHEST_PROTOCOL) throw new UnpicklingError(`pickle protocol must be <= ${HIGHEST_PROTOCOL}`)
  }

  startFraming(): void {
    this.#frame = new ByteSink()
  }

  put(index: number): Uint8Array {
    if (this.proto >= 4) return Uint8Array.of(OP.MEMOIZE)
    if (this.proto >= 1) return withIndex(index < 256 ? OP.BINPUT : OP.LONG_BINPUT, index)
    return ascii(`${String.fromCharCode(OP.PUT)}${index}\n`)
  }

  get(index: number | null): Uint8Array {
    if (this.proto >= 1) {
      if (index === null) throw new UnpicklingError("'<' not supported between instances of 'NoneType' and 'int'")
      return withIndex(index < 256 ? OP.BINGET : OP.LONG_BINGET, index)
    }
    return ascii(`${String.fromCharCode(OP.GET)}${index === null ? 'None' : index}\n`)
  }

  /** Ends the current frame when it is full, or now when forced. */
  commitFrame(force: boolean): void {
    const frame = this.#frame
    if (frame === null || !(frame.length >= FRAME_SIZE_TARGET || force)) return
    if (frame.length >= FRAME_SIZE_MIN) {
      const header = new Uint8Array(9)
      header[0] = OP.FRAME
      new DataView(header.buffer).setBigUint64(1, BigInt(frame.length), true)
      this.out.write(header)
    }
    for (const c of frame.chunks) this.out.write(c)
    this.#frame = new ByteSink()
  }

  write(b: Uint8Array): void {
    if (this.#frame !== null) this.#frame.write(b)
    else this.out.write(b)
  }

  endFraming(): void {
    if (this.#frame !== null && this.#frame.length > 0) {
      this.commitFrame(true)
      this.#frame = null
    }
  }
}

/**
 * Optimizes the pickle at the start of data: removes the PUTs (and MEMOIZEs) that no GET
 * uses, renumbers the rest, and re-frames protocol 4+ pickles. Only the first pickle of
 * data is read. The result is byte for byte what Python's pickletools.optimize returns.
 */
export function optimize(data: BufferSource): Uint8Array {
  const [p] = bytesAndStart(data, 0)
  const oldids = new Set<MemoKey>() // every index a PUT stores to
  const newids = new Map<MemoKey, number | null>() // indexes some GET loads, then their new number
  const steps: Step[] = []
  let proto = 0
  let protoheader = p.subarray(0, 0)
  for (const [op, arg, pos, end] of genops(p)) {
    switch (op.code) {
      case OP.PUT:
      case OP.BINPUT:
      case OP.LONG_BINPUT: {
        const id = memoKey(arg)
        oldids.add(id)
        steps.push({ kind: 'put', id })
        break
      }
      case OP.MEMOIZE: {
        const id = oldids.size
        oldids.add(id)
        steps.push({ kind: 'put', id })
        break
      }
      case OP.FRAME:
        break
      case OP.GET:
      case OP.BINGET:
      case OP.LONG_BINGET: {
        const id = memoKey(arg)
        proto = Math.max(proto, op.proto)
        newids.set(id, null)
        steps.push({ kind: 'get', id })
        break
      }
      case OP.PROTO:
        proto = Math.max(proto, arg as number)
        if (pos === 0) protoheader = p.subarray(pos, end)
        else steps.push({ kind: 'copy', from: pos, to: end })
        break
      default:
        steps.push({ kind: 'copy', from: pos, to: end })
    }
  }

  const writer = new Writer(proto)
  writer.out.write(protoheader) // the PROTO header goes before any frame
  if (proto >= 4) writer.startFraming()
  let index = 0
  for (const step of steps) {
    let bytes: Uint8Array
    let frameless = false
    if (step.kind === 'put') {
      if (!newids.has(step.id)) continue
      bytes = writer.put(index)
      newids.set(step.id, index)
      index++
    } else if (step.kind === 'get') {
      bytes = writer.get(newids.get(step.id) ?? null)
    } else {
      bytes = p.subarray(step.from, step.to)
      frameless = bytes.length > FRAME_SIZE_TARGET
    }
    writer.commitFrame(frameless)
    if (frameless) writer.out.write(bytes)
    else writer.write(bytes)
  }
  writer.endFraming()
  return writer.out.bytes()
}
