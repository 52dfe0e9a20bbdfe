/**
 * The symbolic disassembler, Python's pickletools.dis: one line per opcode, indented by MARK
 * depth, with the same checks of the stack and the memo and the same text, character for
 * character, as CPython 3.11. Only the annotation words differ: they are the first line of
 * this codec's own opcode descriptions.
 */
import { UnpicklingError } from '../errors.js'
import { OP, Stack, type OpcodeInfo, type StackObject } from '../opcodes.js'
import { badOptionType, checkOptions, optionNames } from '../options.js'
import { ByteArray, type BufferSource } from '../types.js'
import { intText, type ReadArgument } from './arguments.js'
import { bytesAndStart, memoKey, scanOpcodes, type MemoKey } from './genops.js'
import { pyLength, reprByteArray, reprBytes, reprFloat, reprStr } from './repr.js'

/** Where dis writes: anything with write(text), such as process.stdout or a Writable stream. */
export interface TextSink {
  write(text: string): unknown
}

export interface DisOptions {
  /** Where the listing goes. Default: process.stdout. */
  out?: TextSink
  /**
   * The memo to check PUTs and GETs against: what each memo index holds, as a stack object.
   * Pass the same Map to several calls to disassemble the pickles that one pickler wrote
   * to one stream with one memo. Default: a new, empty memo.
   */
  memo?: Map<MemoKey, StackObject>
  /** Blanks to indent by for each open MARK. Default 4. */
  indentlevel?: number
  /**
   * 0 for no annotations (the default); otherwise the column at which a short description
   * of each opcode should start, moved right past long lines as Python does.
   */
  annotate?: number
  /** Where in the input the pickle starts. Default 0. Positions shown count from the input's start. */
  start?: number
}

const DIS_OPTIONS = optionNames('out', 'memo', 'indentlevel', 'annotate', 'start')

/** repr() of an opcode's argument, as Python shows it. */
export function reprArgument(a: ReadArgument): string {
  const v = a.value
  if (typeof v === 'boolean') return v ? 'True' : 'False'
  if (typeof v === 'number' && a.isFloat) return reprFloat(v)
  if (typeof v === 'number' || typeof v === 'bigint') return intText(v)
  if (typeof v === 'string') return reprStr(a.text ?? v)
  if (v instanceof ByteArray) return reprByteArray(v)
  if (v instanceof Uint8Array) return reprBytes(v)
  return 'None'
}

/** The opcode byte as pickletools shows it: repr of its one-character string, without quotes. */
const SHOWN_CODE = new Map<OpcodeInfo, string>()
function shownCode(op: OpcodeInfo): string {
  let s = SHOWN_CODE.get(op)
  if (s === undefined) {
    s = reprStr(op.char).slice(1, -1)
    SHOWN_CODE.set(op, s)
  }
  return s
}

const MEMO_STORES: ReadonlySet<number> = new Set([OP.PUT, OP.BINPUT, OP.LONG_BINPUT, OP.MEMOIZE])
const MEMO_LOADS: ReadonlySet<number> = new Set([OP.GET, OP.BINGET, OP.LONG_BINGET])

/** Gathers the listing and hands it to the sink in large pieces. */
class Listing {
  #parts: string[] = []
  #size = 0
  constructor(private readonly out: TextSink) {}

  write(text: string): void {
    this.#parts.push(text)
    this.#size += text.length
    if (this.#size >= 0x10000) this.flush()
  }

  flush(): void {
    if (this.#parts.length === 0) return
    const text = this.#parts.join('')
    this.#parts = []
    this.#size = 0
    this.out.write(text)
  }
}

function checkInteger(name: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isInteger(value)) {
    throw new TypeError(`${name} must be an integer, got ${typeof value === 'number' ? value : typeof value}`)
  }
  return value
}

function defaultOut(): TextSink {
  const stdout = (globalThis as { process?: { stdout?: TextSink } }).process?.stdout
  if (stdout === undefined) throw new TypeError('dis needs options.out: there is no process.stdout here')
  return stdout
}

function stackRepr(stack: readonly StackObject[]): string {
  return `[${stack.map((s) => s.name).join(', ')}]`
}

/**
 * Writes a symbolic disassembly of the pickle that starts at options.start, through its
 * STOP, and checks it as Python's pickletools.dis does: arguments that make sense, enough
 * stack for every pop, a mark where one is needed, memo entries stored before use, never
 * twice and never a mark. A failed check throws an UnpicklingError with Python's message
 * after the offending line is written. Returns the position just after the STOP, where a
 * next pickle in the same input would start.
 */
export function dis(data: BufferSource, options: DisOptions = {}): number {
  checkOptions('dis', options, DIS_OPTIONS)
  if (options.out !== undefined && typeof (options.out as Partial<TextSink>)?.write !== 'function') {
    throw badOptionType('dis', 'out', 'an object with a write(text) method', options.out)
  }
  if (options.memo !== undefined && !(options.memo instanceof Map)) throw badOptionType('dis', 'memo', 'a Map', options.memo)
  const [b, start] = bytesAndStart(data, options.start)
  const indentlevel = checkInteger('indentlevel', options.indentlevel ?? 4)
  const annotate = checkInteger('annotate', options.annotate ?? 0)
  const listing = new Listing(options.out ?? defaultOut())
  const memo = options.memo ?? new Map<MemoKey, StackObject>()
  try {
    return disassemble(b, start, memo, ' '.repeat(Math.max(0, indentlevel)), annotate, listing)
  } finally {
    listing.flush()
  }
}

function disassemble(
  b: Uint8Array, start: number, memo: Map<MemoKey, StackObject>, indentchunk: string, annotate: number, out: Listing,
): number {
  const stack: StackObject[] = [] // what the unpickler's stack would hold, by kind
  const markstack: number[] = [] // positions of the MARKs still open
  let maxproto = -1
  let annocol = annotate
  let end = start
  for (const { op, arg, pos, end: next } of scanOpcodes(b, start)) {
    end = next
    out.write(`${String(pos).padStart(5)}: `)
    let line = `${shownCode(op).padEnd(4)} ${indentchunk.repeat(markstack.length)}${op.name}`
    maxproto = Math.max(maxproto, op.proto)
    const before = op.stackBefore
    let after = op.stackAfter
    let numtopop = before.length
    let errormsg: string | undefined
    let markmsg: string | undefined

    // An opcode that consumes a mark, or a POP of a mark, closes the innermost MARK.
    if (before.includes(Stack.mark) || (op.code === OP.POP && stack.length > 0 && stack[stack.length - 1] === Stack.mark)) {
      const markpos = markstack.pop()
      if (markpos !== undefined) {
        markmsg = `(MARK at ${markpos})`
        while (stack[stack.length - 1] !== Stack.mark) {
          // Python indexes stack[-1] of an empty list here, when an opcode popped the mark.
          if (stack.length === 0) throw new UnpicklingError('list index out of range')
          stack.pop()
        }
        stack.pop()
        numtopop = Math.max(0, before.indexOf(Stack.mark))
      } else {
        errormsg = markmsg = 'no MARK exists on stack'
      }
    }

    if (MEMO_STORES.has(op.code)) {
      let index: MemoKey
      if (op.code === OP.MEMOIZE) {
        index = memo.size
        markmsg = `(as ${index})`
      } else {
        index = memoKey(arg!.value)
      }
      if (memo.has(index)) errormsg = `memo key ${arg === null ? 'None' : reprArgument(arg)} already defined`
      else if (stack.length === 0) errormsg = "stack is empty -- can't store into memo"
      else if (stack[stack.length - 1] === Stack.mark) errormsg = "can't store markobject in the memo"
      else memo.set(index, stack[stack.length - 1]!)
    } else if (MEMO_LOADS.has(op.code)) {
      const stored = memo.get(memoKey(arg!.value))
      if (stored !== undefined) after = [stored]
      else errormsg = `memo key ${reprArgument(arg!)} has never been stored into`
    }

    if (arg !== null || markmsg !== undefined) {
      line += ' '.repeat(Math.max(0, 10 - op.name.length))
      if (arg !== null) line += ' ' + reprArgument(arg)
      if (markmsg !== undefined) line += ' ' + markmsg
    }
    if (annotate !== 0) {
      line += ' '.repeat(Math.max(0, annocol - pyLength(line)))
      annocol = pyLength(line)
      if (annocol > 50) annocol = annotate
      line += ' ' + op.doc.split('\n', 1)[0]
    }
    out.write(line + '\n')

    // Complain only once the offending opcode is listed.
    if (errormsg !== undefined) throw new UnpicklingError(errormsg)

    if (stack.length < numtopop) {
      throw new UnpicklingError(`tries to pop ${numtopop} items from stack with only ${stack.length} items`)
    }
    stack.length -= numtopop
    if (after.includes(Stack.mark)) markstack.push(pos)
    stack.push(...after)
  }
  out.write(`highest protocol among opcodes = ${maxproto}\n`)
  if (stack.length > 0) throw new UnpicklingError(`stack not empty after STOP: ${stackRepr(stack)}`)
  return end
}
