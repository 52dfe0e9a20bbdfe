/**
 * @picklewire/transport: carriers for pickle streams and their out-of-band buffers.
 *
 * This entry gives every carrier's public names and so loads every carrier's dependencies.
 * Import one carrier alone from '@picklewire/transport/shm', '/ws' or '/dask'.
 */
export * from './shm/index.js'
export * from './ws/index.js'
export * from './dask/index.js'
