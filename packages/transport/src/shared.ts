/** What every carrier's entry point gives besides its own names: the error class and limits. */
export { TransportError, type TransportErrorCode } from './errors.js'
export { DEFAULT_LIMITS, type Limits } from './limits.js'
export type { WaitOptions } from './waiting.js'
