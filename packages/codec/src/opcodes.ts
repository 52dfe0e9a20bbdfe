/**
 * The opcode table: every fact about pickle opcodes, declared once. The unpickler, the
 * pickler and pickletools all read it; nothing else lists opcode names, bytes, argument
 * formats, stack effects or protocols.
 */

/** Argument sizes that are not a fixed byte count. */
export const UP_TO_NEWLINE = -1
/** A 1-byte unsigned length, then that many bytes. */
export const TAKEN_FROM_ARGUMENT1 = -2
/** A 4-byte signed little-endian length, then that many bytes. */
export const TAKEN_FROM_ARGUMENT4 = -3
/** A 4-byte unsigned little-endian length, then that many bytes. */
export const TAKEN_FROM_ARGUMENT4U = -4
/** An 8-byte unsigned little-endian length, then that many bytes. */
export const TAKEN_FROM_ARGUMENT8U = -5

/** How an opcode's inline argument is laid out in the stream. */
export interface ArgumentDescriptor {
  readonly name: string
  /** A fixed size in bytes (>= 0), or one of the size rules above. */
  readonly n: number
  readonly doc: string
}

function arg(name: string, n: number, doc: string): ArgumentDescriptor {
  return Object.freeze({ name, n, doc })
}

export const Args = {
  uint1: arg('uint1', 1, 'a one-byte unsigned integer'),
  uint2: arg('uint2', 2, 'a two-byte unsigned little-endian integer'),
  int4: arg('int4', 4, 'a four-byte signed little-endian integer'),
  uint4: arg('uint4', 4, 'a four-byte unsigned little-endian integer'),
  uint8: arg('uint8', 8, 'an eight-byte unsigned little-endian integer'),
  long1: arg('long1', TAKEN_FROM_ARGUMENT1, 'a length byte, then a two\'s complement little-endian integer of that many bytes'),
  long4: arg('long4', TAKEN_FROM_ARGUMENT4, 'a signed four-byte length, then a two\'s complement little-endian integer of that many bytes'),
  decimalnl_short: arg('decimalnl_short', UP_TO_NEWLINE, 'a decimal integer in ASCII ending with a newline; 00 and 01 mean False and True'),
  decimalnl_long: arg('decimalnl_long', UP_TO_NEWLINE, 'a decimal integer in ASCII, optionally ending in L, then a newline'),
  floatnl: arg('floatnl', UP_TO_NEWLINE, 'a float as Python repr() text, then a newline'),
  float8: arg('float8', 8, 'an IEEE 754 double, big-endian'),
  stringnl: arg('stringnl', UP_TO_NEWLINE, 'a quoted Python 2 string literal with escapes, then a newline'),
  stringnl_noescape: arg('stringnl_noescape', UP_TO_NEWLINE, 'raw bytes up to a newline'),
  stringnl_noescape_pair: arg('stringnl_noescape_pair', UP_TO_NEWLINE, 'two newline-terminated raw strings: module, then name'),
  string1: arg('string1', TAKEN_FROM_ARGUMENT1, 'a length byte, then that many bytes of a Python 2 str'),
  string4: arg('string4', TAKEN_FROM_ARGUMENT4, 'a signed four-byte length, then that many bytes of a Python 2 str'),
  bytes1: arg('bytes1', TAKEN_FROM_ARGUMENT1, 'a length byte, then that many bytes'),
  bytes4: arg('bytes4', TAKEN_FROM_ARGUMENT4U, 'an unsigned four-byte length, then that many bytes'),
  bytes8: arg('bytes8', TAKEN_FROM_ARGUMENT8U, 'an unsigned eight-byte length, then that many bytes'),
  bytearray8: arg('bytearray8', TAKEN_FROM_ARGUMENT8U, 'an unsigned eight-byte length, then that many bytes'),
  unicodestringnl: arg('unicodestringnl', UP_TO_NEWLINE, 'raw-unicode-escape text, then a newline'),
  unicodestring1: arg('unicodestring1', TAKEN_FROM_ARGUMENT1, 'a length byte, then that many bytes of UTF-8'),
  unicodestring4: arg('unicodestring4', TAKEN_FROM_ARGUMENT4U, 'an unsigned four-byte length, then that many bytes of UTF-8'),
  unicodestring8: arg('unicodestring8', TAKEN_FROM_ARGUMENT8U, 'an unsigned eight-byte length, then that many bytes of UTF-8'),
} as const

/** A kind of value on the unpickler's stack, for stack-effect declarations. */
export interface StackObject {
  readonly name: string
  readonly doc: string
}

function so(name: string, doc: string): StackObject {
  return Object.freeze({ name, doc })
}

export const Stack = {
  int: so('int', 'an integer'),
  bool: so('bool', 'a boolean'),
  int_or_bool: so('int_or_bool', 'an integer or a boolean'),
  float: so('float', 'a float'),
  bytes: so('bytes', 'a bytes object'),
  bytearray: so('bytearray', 'a bytearray object'),
  bytes_or_str: so('bytes_or_str', 'a Python 2 str: bytes or text depending on the encoding option'),
  str: so('str', 'a text string'),
  none: so('None', 'the None singleton'),
  tuple: so('tuple', 'a tuple'),
  list: so('list', 'a list'),
  dict: so('dict', 'a dict'),
  set: so('set', 'a set'),
  frozenset: so('frozenset', 'a frozenset'),
  buffer: so('buffer', 'an out-of-band buffer'),
  any: so('any', 'any object'),
  mark: so('mark', 'the mark that MARK pushes'),
  stackslice: so('stackslice', 'every object pushed since the topmost mark'),
} as const

export interface OpcodeInfo {
  readonly name: OpName
  /** The opcode byte. */
  readonly code: number
  /** The opcode byte as a one-character string, as pickletools shows it. */
  readonly char: string
  readonly arg: ArgumentDescriptor | null
  readonly stackBefore: readonly StackObject[]
  readonly stackAfter: readonly StackObject[]
  /** The first protocol that has this opcode. */
  readonly proto: number
  readonly doc: string
}

const A = Args
const S = Stack

// name, byte, argument, stack before, stack after, protocol, description
const RAW = [
  ['MARK', 0x28, null, [], [S.mark], 0, 'Push a mark for TUPLE, LIST, DICT and friends to find'],
  ['STOP', 0x2e, null, [S.any], [], 0, 'End the pickle: the top of the stack is its value'],
  ['POP', 0x30, null, [S.any], [], 0, 'Discard the top of the stack'],
  ['POP_MARK', 0x31, null, [S.mark, S.stackslice], [], 1, 'Discard everything down to and including the topmost mark'],
  ['DUP', 0x32, null, [S.any], [S.any, S.any], 0, 'Push the top of the stack again'],
  ['FLOAT', 0x46, A.floatnl, [], [S.float], 0, 'Push a float given as text'],
  ['INT', 0x49, A.decimalnl_short, [], [S.int_or_bool], 0, 'Push an integer or a boolean given as text'],
  ['BININT', 0x4a, A.int4, [], [S.int], 1, 'Push a four-byte signed integer'],
  ['BININT1', 0x4b, A.uint1, [], [S.int], 1, 'Push a one-byte unsigned integer'],
  ['LONG', 0x4c, A.decimalnl_long, [], [S.int], 0, 'Push an integer of any size given as text'],
  ['BININT2', 0x4d, A.uint2, [], [S.int], 1, 'Push a two-byte unsigned integer'],
  ['NONE', 0x4e, null, [], [S.none], 0, 'Push None'],
  ['PERSID', 0x50, A.stringnl_noescape, [], [S.any], 0, 'Push the object named by a text persistent id'],
  ['BINPERSID', 0x51, null, [S.any], [S.any], 1, 'Replace the top of the stack, a persistent id, by the object it names'],
  ['REDUCE', 0x52, null, [S.any, S.any], [S.any], 0, 'Call a callable with an argument tuple and push the result'],
  ['STRING', 0x53, A.stringnl, [], [S.bytes_or_str], 0, 'Push a Python 2 str given as a quoted literal'],
  ['BINSTRING', 0x54, A.string4, [], [S.bytes_or_str], 1, 'Push a Python 2 str with a four-byte length'],
  ['SHORT_BINSTRING', 0x55, A.string1, [], [S.bytes_or_str], 1, 'Push a Python 2 str with a one-byte length'],
  ['UNICODE', 0x56, A.unicodestringnl, [], [S.str], 0, 'Push a text string in raw-unicode-escape form'],
  ['BINUNICODE', 0x58, A.unicodestring4, [], [S.str], 1, 'Push a UTF-8 text string with a four-byte length'],
  ['EMPTY_LIST', 0x5d, null, [], [S.list], 1, 'Push an empty list'],
  ['APPEND', 0x61, null, [S.list, S.any], [S.list], 0, 'Append the top of the stack to the list below it'],
  ['BUILD', 0x62, null, [S.any, S.any], [S.any], 0, 'Set the state of an object, through __setstate__ or its attributes'],
  ['GLOBAL', 0x63, A.stringnl_noescape_pair, [], [S.any], 0, 'Push a global named by a module and a name'],
  ['DICT', 0x64, null, [S.mark, S.stackslice], [S.dict], 0, 'Build a dict from the key, value pairs above the topmost mark'],
  ['APPENDS', 0x65, null, [S.list, S.mark, S.stackslice], [S.list], 1, 'Extend the list below the topmost mark with the objects above it'],
  ['GET', 0x67, A.decimalnl_short, [], [S.any], 0, 'Push a memo entry, its index given as text'],
  ['BINGET', 0x68, A.uint1, [], [S.any], 1, 'Push a memo entry, its index in one byte'],
  ['INST', 0x69, A.stringnl_noescape_pair, [S.mark, S.stackslice], [S.any], 0, 'Build an instance of a named class from the arguments above the topmost mark'],
  ['LONG_BINGET', 0x6a, A.uint4, [], [S.any], 1, 'Push a memo entry, its index in four bytes'],
  ['LIST', 0x6c, null, [S.mark, S.stackslice], [S.list], 0, 'Build a list from the objects above the topmost mark'],
  ['OBJ', 0x6f, null, [S.mark, S.any, S.stackslice], [S.any], 1, 'Build an instance of the class just above the topmost mark from the arguments after it'],
  ['PUT', 0x70, A.decimalnl_short, [], [], 0, 'Store the top of the stack in the memo, its index given as text'],
  ['BINPUT', 0x71, A.uint1, [], [], 1, 'Store the top of the stack in the memo, its index in one byte'],
  ['LONG_BINPUT', 0x72, A.uint4, [], [], 1, 'Store the top of the stack in the memo, its index in four bytes'],
  ['SETITEM', 0x73, null, [S.dict, S.any, S.any], [S.dict], 0, 'Set one key to one value in the dict below them'],
  ['TUPLE', 0x74, null, [S.mark, S.stackslice], [S.tuple], 0, 'Build a tuple from the objects above the topmost mark'],
  ['SETITEMS', 0x75, null, [S.dict, S.mark, S.stackslice], [S.dict], 1, 'Set the key, value pairs above the topmost mark in the dict below it'],
  ['BINFLOAT', 0x47, A.float8, [], [S.float], 1, 'Push a float given as eight big-endian bytes'],
  ['BINBYTES', 0x42, A.bytes4, [], [S.bytes], 3, 'Push bytes with a four-byte length'],
  ['SHORT_BINBYTES', 0x43, A.bytes1, [], [S.bytes], 3, 'Push bytes with a one-byte length'],
  ['EMPTY_DICT', 0x7d, null, [], [S.dict], 1, 'Push an empty dict'],
  ['EMPTY_TUPLE', 0x29, null, [], [S.tuple], 1, 'Push an empty tuple'],
  ['PROTO', 0x80, A.uint1, [], [], 2, 'Declare the protocol of the pickle'],
  ['NEWOBJ', 0x81, null, [S.any, S.any], [S.any], 2, 'Create an instance with cls.__new__(cls, *args)'],
  ['EXT1', 0x82, A.uint1, [], [S.any], 2, 'Push the global registered under a one-byte extension code'],
  ['EXT2', 0x83, A.uint2, [], [S.any], 2, 'Push the global registered under a two-byte extension code'],
  ['EXT4', 0x84, A.int4, [], [S.any], 2, 'Push the global registered under a four-byte extension code'],
  ['TUPLE1', 0x85, null, [S.any], [S.tuple], 2, 'Build a tuple of the top object'],
  ['TUPLE2', 0x86, null, [S.any, S.any], [S.tuple], 2, 'Build a tuple of the top two objects'],
  ['TUPLE3', 0x87, null, [S.any, S.any, S.any], [S.tuple], 2, 'Build a tuple of the top three objects'],
  ['NEWTRUE', 0x88, null, [], [S.bool], 2, 'Push True'],
  ['NEWFALSE', 0x89, null, [], [S.bool], 2, 'Push False'],
  ['LONG1', 0x8a, A.long1, [], [S.int], 2, 'Push an integer of up to 255 bytes'],
  ['LONG4', 0x8b, A.long4, [], [S.int], 2, 'Push an integer with a four-byte length'],
  ['SHORT_BINUNICODE', 0x8c, A.unicodestring1, [], [S.str], 4, 'Push a UTF-8 text string with a one-byte length'],
  ['BINUNICODE8', 0x8d, A.unicodestring8, [], [S.str], 4, 'Push a UTF-8 text string with an eight-byte length'],
  ['BINBYTES8', 0x8e, A.bytes8, [], [S.bytes], 4, 'Push bytes with an eight-byte length'],
  ['EMPTY_SET', 0x8f, null, [], [S.set], 4, 'Push an empty set'],
  ['ADDITEMS', 0x90, null, [S.set, S.mark, S.stackslice], [S.set], 4, 'Add the objects above the topmost mark to the set below it'],
  ['FROZENSET', 0x91, null, [S.mark, S.stackslice], [S.frozenset], 4, 'Build a frozenset from the objects above the topmost mark'],
  ['NEWOBJ_EX', 0x92, null, [S.any, S.any, S.any], [S.any], 4, 'Create an instance with cls.__new__(cls, *args, **kwargs)'],
  ['STACK_GLOBAL', 0x93, null, [S.str, S.str], [S.any], 4, 'Push the global named by the module and name strings on the stack'],
  ['MEMOIZE', 0x94, null, [S.any], [S.any], 4, 'Store the top of the stack in the memo under the next free index'],
  ['FRAME', 0x95, A.uint8, [], [], 4, 'Announce the length of the frame that follows'],
  ['BYTEARRAY8', 0x96, A.bytearray8, [], [S.bytearray], 5, 'Push a bytearray with an eight-byte length'],
  ['NEXT_BUFFER', 0x97, null, [], [S.buffer], 5, 'Push the next out-of-band buffer'],
  ['READONLY_BUFFER', 0x98, null, [S.buffer], [S.buffer], 5, 'Make the buffer on top of the stack read-only'],
] as const

type RawRow = (typeof RAW)[number]
/** The name of a real opcode. */
export type OpName = RawRow[0]

/** Every opcode, in the order above. */
export const OPCODES: readonly OpcodeInfo[] = Object.freeze(
  RAW.map(([name, code, argument, before, after, proto, doc]) =>
    Object.freeze({
      name: name as OpName,
      code,
      char: String.fromCharCode(code),
      arg: argument,
      stackBefore: Object.freeze([...before]),
      stackAfter: Object.freeze([...after]),
      proto,
      doc,
    }),
  ),
)

/** Opcode info by byte; undefined for bytes that are not opcodes. */
export const OPCODE_BY_CODE: readonly (OpcodeInfo | undefined)[] = (() => {
  const table: (OpcodeInfo | undefined)[] = new Array(256).fill(undefined)
  for (const op of OPCODES) table[op.code] = op
  return Object.freeze(table)
})()

/** Opcode info by name. */
export const OPCODE_BY_NAME: Readonly<Record<OpName, OpcodeInfo>> = Object.freeze(
  Object.fromEntries(OPCODES.map((op) => [op.name, op])) as Record<OpName, OpcodeInfo>,
)

/** Opcode bytes by name, for code that writes or switches on opcodes. */
export const OP: Readonly<Record<OpName, number>> = Object.freeze(
  Object.fromEntries(OPCODES.map((op) => [op.name, op.code])) as Record<OpName, number>,
)

/** The highest protocol this codec reads and writes. */
export const HIGHEST_PROTOCOL = 5
/** The protocol Python 3.8+ writes by default. */
export const DEFAULT_PROTOCOL = 4
