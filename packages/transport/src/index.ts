/**
 * @picklewire/transport: carriers for pickle streams and their out-of-band buffers.
 */
export { TransportError, type TransportErrorCode } from './errors.js'
export { DEFAULT_LIMITS, checkLengths, resolveLimits, type Limits } from './limits.js'
export { PROTOCOL_VERSION, decodeHeader, encodeHeader, type MessageHeader } from './header.js'
export { MIN_OUT_OF_BAND_BYTES, decodeValue, encodeValue, type EncodeOptions, type MessageParts } from './message.js'
export * from './ws/index.js'
export * from './shm/index.js'
export * from './dask/index.js'
