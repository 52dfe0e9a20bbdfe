/**
 * Limits every carrier checks before it allocates anything for an incoming message. Lengths
 * come from the header, so a message that would break a limit is refused before its bytes.
 */
import { checkOptions, optionNames, type OptionNames } from '@picklewire/codec/internal'
import { TransportError } from './errors.js'

export interface Limits {
  /** Largest message: pickle plus every buffer, in bytes. Default 1 GiB. */
  maxMessageBytes: number
  /** Most out-of-band buffers in one message. Default 1,024. */
  maxBuffers: number
  /** Largest single buffer, in bytes. Default 1 GiB. */
  maxBufferBytes: number
  /** Largest pickle stream, in bytes. Default 64 MiB. */
  maxPickleBytes: number
}

export const DEFAULT_LIMITS: Readonly<Limits> = Object.freeze({
  maxMessageBytes: 2 ** 30,
  maxBuffers: 1024,
  maxBufferBytes: 2 ** 30,
  maxPickleBytes: 64 * 2 ** 20,
})

const LIMIT_NAMES = optionNames(...Object.keys(DEFAULT_LIMITS))

/** The defaults with the caller's overrides, each checked to be a positive integer. */
export function resolveLimits(partial: Partial<Limits> = {}): Limits {
  return resolvePositive(DEFAULT_LIMITS, partial, LIMIT_NAMES)
}

/**
 * Any carrier's limits: its defaults with the caller's overrides, each checked to be a positive
 * integer; a name that is not one of the defaults' is a TypeError, as a misspelled limit would
 * otherwise leave its default in force.
 */
export function resolvePositive<T extends object>(defaults: Readonly<T>, partial: Partial<T> | undefined, names: OptionNames): T {
  checkOptions('limits', partial, names)
  const out = { ...defaults, ...partial } as T
  for (const [k, v] of Object.entries(out)) {
    if (!Number.isSafeInteger(v) || v <= 0) throw new TypeError(`limit ${k} must be a positive integer, got ${typeof v} ${String(v)}`)
  }
  return out
}

/** Checks the lengths a header announces against the limits. */
export function checkLengths(pickleBytes: number, bufferBytes: readonly number[], limits: Limits): void {
  if (pickleBytes > limits.maxPickleBytes) {
    throw new TransportError('LIMIT', `pickle of ${pickleBytes} bytes is over maxPickleBytes (${limits.maxPickleBytes})`)
  }
  if (bufferBytes.length > limits.maxBuffers) {
    throw new TransportError('LIMIT', `${bufferBytes.length} buffers is over maxBuffers (${limits.maxBuffers})`)
  }
  let total = pickleBytes
  for (const n of bufferBytes) {
    if (n > limits.maxBufferBytes) throw new TransportError('LIMIT', `buffer of ${n} bytes is over maxBufferBytes (${limits.maxBufferBytes})`)
    total += n
  }
  if (total > limits.maxMessageBytes) {
    throw new TransportError('LIMIT', `message of ${total} bytes is over maxMessageBytes (${limits.maxMessageBytes})`)
  }
}
