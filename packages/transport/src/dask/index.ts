/** A client for Dask distributed: its comms (tcp://, ws://), message layer, serializers and client ops. See docs/dask.md. */
export {
  DaskClient, pythonGlobal,
  type DaskClientOptions, type DaskClientStatus, type DaskVersions, type MapOptions, type ReturnWhen, type RpcOptions, type ScatterOptions,
  type SubmitOptions, type DaskWaitOptions,
} from './client.js'
export { graphFormFor, parseDaskVersion, type GraphForm } from './graph.js'
export { DaskFuture, type DaskFutureStatus } from './future.js'
export { DaskRemoteError } from './remote-error.js'
export {
  ANNOUNCED_PYTHON, DEFAULT_DASK_TIMEOUT, DaskComm, DaskListener, TCP_SHARD_BYTES, WS_SHARD_BYTES, connectDask, listenDask, parseDaskAddress,
  type DaskCommOptions, type DaskCommSettings, type DaskHandshake, type DaskListenOptions, type DaskScheme,
} from './comm.js'
export { DaskSerialize, DaskToPickle, dumpsMessage, loadsMessage, type LoadContext } from './protocol.js'
export {
  DaskSerialized, deserialize, deserializeFromWire, newStats as newDaskStats, serialize, serializeForWire,
  type DaskSerializerName, type DaskStats, type DeserializeContext, type SerializeContext,
} from './serialize.js'
export {
  DEFAULT_DASK_LIMITS, FRAME_ALIGNMENT, TcpFrameReader, WsFrameReader, encodeFrameCount, encodeTcpPrelude, resolveDaskLimits,
  type DaskLimits,
} from './framing.js'
export { FRESH_MEMORY, WarmMemory, freshMemory, sharedWarmMemory, type FrameMemory, type WarmMemoryOptions } from './warm-memory.js'
export { COMPRESSIONS, decompressFrame, maybeCompress, type DaskCompression } from './compression.js'
export { lz4Compress, lz4CompressBound, lz4Decompress, lz4DecompressInto, lz4DecompressedSize } from './lz4.js'
