/**
 * The allow option of the Unpickler: which globals outside the registry load as inert
 * placeholders. A pattern is either a full name or a prefix:
 *
 * - `'pandas.core.frame.DataFrame'`: exactly the global whose full name (its module, a dot,
 *   its qualified name) is that string;
 * - `'pandas.core.internals.*'`: every global whose full name starts with `pandas.core.internals.`,
 *   that is every global of that module and of its submodules (and nested names of a class
 *   `pandas.core.internals`, had it one).
 *
 * A `*` anywhere but after the last dot, an empty segment, whitespace, or a pattern of one
 * segment (`'pandas'`, `'*'`) is a RangeError: allowing everything is the opaque option.
 */
import { badOptionRange, badOptionType } from './options.js'

/** A pattern string of the allow option: a full name, or a prefix ending in `.*`. */
export type AllowPattern = string

const SEGMENT = /^[\p{ID_Start}_][\p{ID_Continue}]*$/u

/** A compiled allow option: exact names in one set, prefixes (without their `.*`) in another. */
export class AllowList {
  readonly #names = new Set<string>()
  readonly #prefixes = new Set<string>()

  /** Checks and compiles the patterns; caller misuse is a TypeError or RangeError naming the pattern. */
  constructor(patterns: unknown) {
    if (typeof patterns === 'string' || patterns === null || typeof patterns !== 'object' || typeof (patterns as Iterable<unknown>)[Symbol.iterator] !== 'function') {
      throw badOptionType('Unpickler', 'allow', 'an array (or other iterable) of pattern strings', patterns)
    }
    for (const p of patterns as Iterable<unknown>) {
      if (typeof p !== 'string') throw badOptionType('Unpickler', 'allow', 'pattern strings only', p)
      const prefix = p.endsWith('.*')
      const segments = (prefix ? p.slice(0, -2) : p).split('.')
      if (segments.length < (prefix ? 1 : 2) || !segments.every((s) => SEGMENT.test(s))) {
        throw badOptionRange('Unpickler', 'allow', `"module.Name" or "module.*" patterns (identifiers joined by dots; a * only as the last segment)`, p)
      }
      if (prefix) this.#prefixes.add(p.slice(0, -2))
      else this.#names.add(p)
    }
  }

  /** Whether the global of this full name ("module.qualified.name") is allowed. */
  allows(fullName: string): boolean {
    if (this.#names.has(fullName)) return true
    if (this.#prefixes.size === 0) return false
    for (let dot = fullName.indexOf('.'); dot !== -1; dot = fullName.indexOf('.', dot + 1)) {
      if (this.#prefixes.has(fullName.slice(0, dot))) return true
    }
    return false
  }
}
