/**
 * Run-time checks of the carriers' options, with the codec's checkOptions. The codec options a
 * carrier passes on (pickler/unpickler, encode/decode) are checked when the carrier is made, by
 * the codec's own Pickler and Unpickler, so a typo fails there and not at the first message.
 */
import { Pickler, Unpickler } from '@picklewire/codec'
import { badOptionRange, badOptionType, nearestName } from '@picklewire/codec/internal'

export { badOptionRange, badOptionType, checkOptions, optionNames } from '@picklewire/codec/internal'

const NO_BYTES = new Uint8Array(0)
const OUT_OF_BAND = ['outOfBand']
const hasOwn = Object.prototype.hasOwnProperty

function isOptionsObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

/** Says which carrier option a codec error came from, keeping the error's class. */
function rethrowUnder(what: string, name: string, err: unknown): never {
  if (err instanceof TypeError) throw new TypeError(`${what}: option ${name}: ${err.message}`)
  if (err instanceof RangeError) throw new RangeError(`${what}: option ${name}: ${err.message}`)
  if (err instanceof Error) throw new TypeError(`${what}: option ${name}: ${err.message}`, { cause: err })
  throw err
}

/**
 * Checks the pickler options a carrier passes to every dumps: the carrier sets protocol and
 * bufferCallback itself, so those are refused rather than overridden in silence; outOfBand
 * is the carrier's own (allowed where withOutOfBand).
 */
export function checkPicklerOptions(what: string, name: string, options: unknown, withOutOfBand: boolean): void {
  if (options === undefined) return
  if (!isOptionsObject(options)) throw badOptionType(what, name, 'an object', options)
  for (const taken of ['protocol', 'bufferCallback']) {
    if (hasOwn.call(options, taken)) throw new TypeError(`${what}: option ${name}.${taken} is set by the carrier and cannot be given`)
  }
  let rest: Record<string, unknown> = options
  if (withOutOfBand) {
    // outOfBand is the carrier's name, not the Pickler's: a near miss of it is caught here.
    for (const key in options) {
      if (key !== 'outOfBand' && hasOwn.call(options, key) && nearestName(key, OUT_OF_BAND) !== undefined) {
        throw new TypeError(`${what}: unknown option '${name}.${key}'; did you mean 'outOfBand'?`)
      }
    }
  }
  if (withOutOfBand && hasOwn.call(options, 'outOfBand')) {
    const { outOfBand, ...others } = options
    if (outOfBand !== undefined && typeof outOfBand !== 'function') throw badOptionType(what, `${name}.outOfBand`, 'a function', outOfBand)
    rest = others
  }
  try {
    new Pickler(null, { ...rest, protocol: 5 })
  } catch (err) {
    rethrowUnder(what, name, err)
  }
}

/** Checks the unpickler options a carrier passes to every loads; buffers are the carrier's own. */
export function checkUnpicklerOptions(what: string, name: string, options: unknown): void {
  if (options === undefined) return
  if (!isOptionsObject(options)) throw badOptionType(what, name, 'an object', options)
  if (hasOwn.call(options, 'buffers')) throw new TypeError(`${what}: option ${name}.buffers is set by the carrier and cannot be given`)
  try {
    new Unpickler(NO_BYTES, options)
  } catch (err) {
    rethrowUnder(what, name, err)
  }
}

/** Checks a timeout in milliseconds: a finite number of at least min (undefined passes). */
export function checkMilliseconds(what: string, name: string, value: unknown, min = 0): void {
  if (value === undefined) return
  if (typeof value !== 'number') throw badOptionType(what, name, `a number of milliseconds >= ${min}`, value)
  if (!(value >= min) || !Number.isFinite(value)) throw badOptionRange(what, name, `a finite number of milliseconds >= ${min}`, value)
}

/** Checks an AbortSignal option (undefined passes). */
export function checkSignal(what: string, value: unknown): void {
  if (value === undefined || value instanceof AbortSignal) return
  throw badOptionType(what, 'signal', 'an AbortSignal', value)
}
