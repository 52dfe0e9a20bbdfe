/**
 * Run-time checks of options objects. JavaScript callers get no compile-time check, so a
 * misspelled option (`buffer_callback`, `timout`) would otherwise be ignored in silence and its
 * default used; every public function and constructor that takes options checks them here.
 */
import { describe } from './types.js'

/** The option names a function or constructor takes. */
export type OptionNames = ReadonlySet<string>

/** Builds the set of option names once, at module load, so a check allocates nothing. */
export function optionNames(...names: string[]): OptionNames {
  return new Set(names)
}

const hasOwn = Object.prototype.hasOwnProperty

/**
 * Throws a TypeError when options is neither undefined nor a plain options object, or when it
 * has an own enumerable key that is not in known; the message names the key and the nearest
 * known name. A key whose value is undefined is checked too: a typo is a typo.
 */
export function checkOptions(what: string, options: unknown, known: OptionNames): void {
  if (options === undefined) return
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw new TypeError(`${what}: options must be an object, got ${describeOptions(options)}`)
  }
  for (const key in options) {
    if (!known.has(key) && hasOwn.call(options, key)) throw unknownOption(what, key, known)
  }
}

function describeOptions(v: unknown): string {
  return Array.isArray(v) ? `an array (length ${v.length})` : describe(v)
}

function unknownOption(what: string, key: string, known: OptionNames): TypeError {
  const near = nearestName(key, known)
  const hint = near !== undefined
    ? `did you mean '${near}'?`
    : `known options: ${[...known].map((k) => `'${k}'`).join(', ')}`
  return new TypeError(`${what}: unknown option '${key}'; ${hint}`)
}

/**
 * The known name a mistyped key most likely meant: one equal to it but for case or for
 * snake_case (Python's spelling of the same option), else the closest within an edit distance
 * of max(2, a third of the key's length).
 */
export function nearestName(key: string, known: Iterable<string>): string | undefined {
  const folded = foldName(key)
  let best: string | undefined
  let bestDistance = Math.max(2, Math.floor(key.length / 3)) + 1
  for (const name of known) {
    if (foldName(name) === folded) return name
    const d = editDistance(key.toLowerCase(), name.toLowerCase())
    if (d < bestDistance) {
      best = name
      bestDistance = d
    }
  }
  return best
}

/** Lower case without underscores or dashes: buffer_callback, bufferCallback and BUFFERCALLBACK fold alike. */
function foldName(name: string): string {
  return name.replace(/[_-]/g, '').toLowerCase()
}

/** Damerau-Levenshtein distance (optimal string alignment: an adjacent swap counts as one edit). */
export function editDistance(a: string, b: string): number {
  const rows = a.length + 1
  const cols = b.length + 1
  const d: number[] = new Array(rows * cols)
  for (let i = 0; i < rows; i++) d[i * cols] = i
  for (let j = 0; j < cols; j++) d[j] = j
  for (let i = 1; i < rows; i++) {
    for (let j = 1; j < cols; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1
      let v = Math.min(d[(i - 1) * cols + j]! + 1, d[i * cols + j - 1]! + 1, d[(i - 1) * cols + j - 1]! + cost)
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) v = Math.min(v, d[(i - 2) * cols + j - 2]! + 1)
      d[i * cols + j] = v
    }
  }
  return d[rows * cols - 1]!
}

/** A TypeError for an option whose value has the wrong type. */
export function badOptionType(what: string, name: string, expected: string, value: unknown): TypeError {
  return new TypeError(`${what}: option ${name} must be ${expected}, got ${describe(value)}`)
}

/** A RangeError for an option whose value has the right type and is out of range. */
export function badOptionRange(what: string, name: string, expected: string, value: unknown): RangeError {
  return new RangeError(`${what}: option ${name} must be ${expected}, got ${describe(value)}`)
}

/** Checks an optional function-valued option (null allowed where the option says so). */
export function checkFunctionOption(what: string, name: string, value: unknown, nullable = false): void {
  if (value === undefined || typeof value === 'function' || (nullable && value === null)) return
  throw badOptionType(what, name, nullable ? 'a function or null' : 'a function', value)
}

/** Checks an optional boolean option. */
export function checkBooleanOption(what: string, name: string, value: unknown): void {
  if (value === undefined || typeof value === 'boolean') return
  throw badOptionType(what, name, 'a boolean', value)
}
