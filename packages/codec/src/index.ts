/**
 * @picklewire/codec: Python's pickle, protocols 0 to 5, for JavaScript.
 */
export { EOFError, PickleError, PicklingError, UnpicklingError } from './errors.js'
export { type AllowPattern } from './allow.js'
export { ALLOW } from './allow-lists.js'
export {
  DEFAULT_PROTOCOL, HIGHEST_PROTOCOL, OPCODES, type ArgumentDescriptor, type OpName, type OpcodeInfo, type StackObject,
} from './opcodes.js'
export { GlobalRegistry, MAX_SPREAD_ARGS, MAX_ZERO_FILL, defaultGlobals, isPython2Module, type ClassHooks, type Registration } from './globals.js'
export { Pickler, dump, dumps, dumpsTransient, type PicklerOptions, type Sink } from './pickler.js'
export {
  DType, MAX_NDIM, NATIVE_BYTE_ORDER, NDArray, NumpyScalar, float16ToNumber, numberToFloat16,
  type ByteOrder, type DTypeKind, type NDArrayData, type NDArrayOptions, type NDArrayOrder, type NumpyNames, type TypedData,
} from './numpy.js'
export {
  ByteArray, Complex, Counter, Decimal, DefaultDict, Deque, Ellipsis, FrozenSet, NotImplemented, OrderedDict,
  PickleBuffer, PyDate, PyDateTime, PyFloat, PyGlobal, PyObject, PyObjectCall, PyOpaque, PyPersistentRef, PyRange, PySingleton, PyStr, PyTime,
  PyTimeDelta, PyTimeZone, Slice, Tuple, UUID, getNewArgs, getState, reduceEx, setState,
  type BufferSource, type TypedArrayViewConstructor, type ReduceValue, type GlobalBehaviour, type HasSetState, type PyObjectOrigin,
} from './types.js'
export {
  Unpickler, load, loads,
  type BytesLike, type ChunkSource, type FindClass, type UnpicklerOptions,
} from './unpickler.js'
export {
  LazyStrings, readArrowArray, readArrowTable, readDataFrame, readSeries,
  type ArrowColumns, type Column, type FrameColumns, type RangeIndexInfo, type ReadTableOptions, type SeriesColumn, type StringsMode,
} from './tables.js'
export { dis, genops, optimize, type DisOptions, type GenopsItem, type MemoKey, type OpcodeArgument, type TextSink } from './pickletools.js'
