/**
 * The shared-memory carrier: arenas of SharedArrayBuffers between worker threads, with
 * channels (two threads, both ways), pipes (many threads, one way) and a piscina pool on top.
 */
export * from '../shared.js'
export { DEFAULT_ARENA_BYTES } from './arena.js'
export { DEFAULT_SIGNALLING, DEFAULT_WINDOW, Channel, createChannel, openChannel, type ChannelInit, type ChannelOptions, type ChannelStats, type ChannelSendOptions, type Signalling } from './channel.js'
export type { EndpointOptions, ShmStats } from './endpoint.js'
export type { ValuesMode } from '../js-values.js'
export { Pipe, createPipe, openPipe, reclaimOnExit, type ArenaStats, type PipeInit, type PipeMemoryOptions, type TypedArrayConstructor } from './pipe.js'
export { Received } from './received.js'
export { DEFAULT_RING_BYTES } from './ring.js'
export type { WaitOptions } from './wait.js'
export { ArenaPool, type ArenaPoolOptions, type ArenaRunOptions, type PoolStats } from './pool.js'
export { arenaHandler, workerStats } from './handler.js'
