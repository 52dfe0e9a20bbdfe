/** A client for Dask distributed: its comms (tcp://, ws://), message layer and client ops. See docs/dask.md. */
export * from '../shared.js'
export {
  DaskClient, pythonGlobal,
  type DaskClientOptions, type DaskClientStatus, type DaskVersions, type MapOptions, type ReturnWhen, type RpcOptions, type ScatterOptions,
  type SubmitOptions, type DaskWaitOptions, type GatherOptions,
} from './client.js'
export type { GraphForm } from './graph.js'
export { DaskFuture, type DaskFutureStatus, type DaskFutureWaitOptions } from './future.js'
export { DaskRemoteError } from './remote-error.js'
export {
  DEFAULT_DASK_TIMEOUT, DaskComm, DaskListener, connectDask, listenDask,
  type DaskCommOptions, type DaskCommSettings, type DaskHandshake, type DaskListenOptions, type DaskScheme,
} from './comm.js'
export { DaskSerialize, DaskToPickle } from './protocol.js'
export { DaskSerialized, type DaskSerializerName, type DaskStats } from './serialize.js'
export { DEFAULT_DASK_LIMITS, type DaskLimits } from './framing.js'
export { WarmMemory, type WarmMemoryOptions } from './warm-memory.js'
export type { DaskCompression } from './compression.js'
