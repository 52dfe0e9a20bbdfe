/**
 * pickletools for picklewire, after Python's module of that name: genops walks a pickle's
 * opcodes, dis lists them with the same checks and text as CPython 3.11, optimize drops
 * unused memo stores. All three read the one opcode table in opcodes.ts.
 */
export { genops, type GenopsItem, type MemoKey } from './pickletools/genops.js'
export { dis, type DisOptions, type TextSink } from './pickletools/dis.js'
export { optimize } from './pickletools/optimize.js'
export type { OpcodeArgument } from './pickletools/arguments.js'
