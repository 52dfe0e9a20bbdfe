/**
 * The pieces of the pickletools command that are not input and output: its options, parsed
 * as Python's argparse parses `python -m pickletools`'s, and the preamble, formatted as
 * Python's str.format formats it.
 */
import { pyLength, reprStr } from './repr.js'

/** A bad command line or preamble: the command prints the message on one line. */
export class UsageError extends Error {
  override readonly name = 'UsageError'
}

export interface CommandOptions {
  /** -o/--output: where the listing goes; '-' or undefined for standard output. */
  output: string | undefined
  /** -m/--memo: keep one memo across the files. */
  memo: boolean
  /** -l/--indentlevel: blanks per MARK level. */
  indentlevel: number
  /** -a/--annotate: annotate each line (at column 30, as Python's command does). */
  annotate: boolean
  /** -p/--preamble: printed before each file's listing when there are several files. */
  preamble: string
  /** -h/--help. */
  help: boolean
  /** The pickle files; '-' is standard input. */
  files: string[]
}

interface OptionSpec {
  readonly long: string
  readonly short: string
  readonly value: boolean
  readonly set: (o: CommandOptions, value: string, shown: string) => void
}

const SPECS: readonly OptionSpec[] = [
  { long: 'help', short: 'h', value: false, set: (o) => { o.help = true } },
  { long: 'output', short: 'o', value: true, set: (o, v) => { o.output = v } },
  { long: 'memo', short: 'm', value: false, set: (o) => { o.memo = true } },
  { long: 'indentlevel', short: 'l', value: true, set: (o, v, shown) => { o.indentlevel = pythonInt(v, shown) } },
  { long: 'annotate', short: 'a', value: false, set: (o) => { o.annotate = true } },
  { long: 'preamble', short: 'p', value: true, set: (o, v) => { o.preamble = v } },
]

export const USAGE = 'usage: pickletools [-h] [-o OUTPUT] [-m] [-l INDENTLEVEL] [-a] [-p PREAMBLE] [pickle_file ...]'

export const HELP = `${USAGE}

disassemble one or more pickle files

positional arguments:
  pickle_file           the pickle file; - (or no file, when standard input is
                        not a terminal) reads standard input

options:
  -h, --help            show this help message and exit
  -o OUTPUT, --output OUTPUT
                        the file where the output should be written
  -m, --memo            preserve memo between disassemblies
  -l INDENTLEVEL, --indentlevel INDENTLEVEL
                        the number of blanks by which to indent a new MARK level
  -a, --annotate        annotate each line with a short opcode description
  -p PREAMBLE, --preamble PREAMBLE
                        if more than one pickle file is specified, print this
                        before each disassembly (default: "==> {name} <==")
`

function shownName(spec: OptionSpec): string {
  return `-${spec.short}/--${spec.long}`
}

/** int(text) as argparse's type=int reads it. */
function pythonInt(text: string, shown: string): number {
  const t = text.trim()
  if (!/^[+-]?\d+(?:_\d+)*$/.test(t)) throw new UsageError(`argument ${shown}: invalid int value: ${reprStr(text)}`)
  const n = Number(t.replace(/_/g, ''))
  if (!Number.isSafeInteger(n)) throw new UsageError(`argument ${shown}: ${reprStr(text)} is too large`)
  return n
}

const NEGATIVE_NUMBER = /^-\d+$|^-\d*\.\d+$/

/**
 * Whether argparse would take arg as an option rather than as a value or a file: it starts
 * with '-' (and is not '-' alone) and names one of our options (a long one possibly cut
 * short or followed by '=value'; a short one possibly followed by its value), or else is
 * neither a negative number nor text with a blank in it.
 */
function looksLikeOption(arg: string): boolean {
  if (!arg.startsWith('-') || arg === '-') return false
  if (arg.startsWith('--')) {
    const name = arg.slice(2).split('=', 1)[0]!
    if (name !== '' && SPECS.some((s) => s.long.startsWith(name))) return true
  } else if (SPECS.some((s) => s.short === arg[1])) {
    return true
  }
  return !NEGATIVE_NUMBER.test(arg) && !arg.includes(' ')
}

function findLong(name: string): OptionSpec {
  const exact = SPECS.find((s) => s.long === name)
  if (exact !== undefined) return exact
  const matches = SPECS.filter((s) => s.long.startsWith(name))
  if (matches.length === 1) return matches[0]!
  if (matches.length > 1) {
    throw new UsageError(`ambiguous option: --${name} could match ${matches.map((s) => '--' + s.long).join(', ')}`)
  }
  throw new UsageError(`unrecognized arguments: --${name}`)
}

/** Parses the command's arguments (without node and the script). */
export function parseCommandLine(argv: readonly string[]): CommandOptions {
  const o: CommandOptions = {
    output: undefined, memo: false, indentlevel: 4, annotate: false, preamble: '==> {name} <==', help: false, files: [],
  }
  const takeValue = (spec: OptionSpec, i: number): string => {
    const next = argv[i]
    if (next === undefined || looksLikeOption(next)) throw new UsageError(`argument ${shownName(spec)}: expected one argument`)
    return next
  }
  let i = 0
  while (i < argv.length) {
    const arg = argv[i++]!
    if (arg === '--') {
      o.files.push(...argv.slice(i))
      break
    }
    if (arg.startsWith('--')) {
      const eq = arg.indexOf('=')
      const spec = findLong(eq < 0 ? arg.slice(2) : arg.slice(2, eq))
      if (!spec.value) {
        if (eq >= 0) throw new UsageError(`argument ${shownName(spec)}: ignored explicit argument ${reprStr(arg.slice(eq + 1))}`)
        spec.set(o, '', shownName(spec))
      } else if (eq >= 0) {
        spec.set(o, arg.slice(eq + 1), shownName(spec))
      } else {
        spec.set(o, takeValue(spec, i++), shownName(spec))
      }
      continue
    }
    if (!looksLikeOption(arg)) {
      o.files.push(arg)
      continue
    }
    // A cluster of short options: -am, -l2, -o out.txt
    for (let k = 1; k < arg.length; k++) {
      const spec = SPECS.find((s) => s.short === arg[k])
      if (spec === undefined) {
        throw new UsageError(`unrecognized arguments: ${k === 1 ? arg : '-' + arg[k]}`)
      }
      if (!spec.value) {
        spec.set(o, '', shownName(spec))
        continue
      }
      const rest = arg.slice(k + 1)
      spec.set(o, rest.length > 0 ? rest.replace(/^=/, '') : takeValue(spec, i++), shownName(spec))
      break
    }
  }
  return o
}

// ---------------------------------------------------------------------------------------
// The preamble: str.format(name=...) for the fields a file name can fill

function formatSpec(value: string, spec: string): string {
  const m = /^(?:(.)?([<>=^]))?([+\- ])?(z)?(#)?(0)?(\d+)?([,_])?(?:\.(\d+))?(.)?$/su.exec(spec)
  if (m === null) throw new UsageError(`preamble: invalid format specifier ${reprStr(spec)}`)
  const [, fill, align, sign, z, alt, zero, width, grouping, precision, type] = m
  if (type !== undefined && type !== 's') throw new UsageError(`preamble: Unknown format code '${type}' for object of type 'str'`)
  if (sign !== undefined) throw new UsageError('preamble: Sign not allowed in string format specifier')
  if (z !== undefined) throw new UsageError('preamble: Negative zero coercion (z) not allowed in string format specifier')
  if (alt !== undefined) throw new UsageError('preamble: Alternate form (#) not allowed in string format specifier')
  if (grouping !== undefined) throw new UsageError(`preamble: Cannot specify '${grouping}' with 's'.`)
  if (align === '=') throw new UsageError("preamble: '=' alignment not allowed in string format specifier")
  let chars = [...value]
  if (precision !== undefined) chars = chars.slice(0, Number(precision))
  const text = chars.join('')
  const pad = Math.max(0, Number(width ?? 0) - pyLength(text))
  const filler = fill ?? (zero !== undefined ? '0' : ' ')
  switch (align ?? '<') {
    case '>': return filler.repeat(pad) + text
    case '^': return filler.repeat(pad >> 1) + text + filler.repeat(pad - (pad >> 1))
    default: return text + filler.repeat(pad)
  }
}

function replacementField(field: string, name: string): string {
  const colon = field.indexOf(':')
  const head = colon < 0 ? field : field.slice(0, colon)
  const spec = colon < 0 ? '' : field.slice(colon + 1)
  const bang = head.indexOf('!')
  const key = bang < 0 ? head : head.slice(0, bang)
  const conversion = bang < 0 ? undefined : head.slice(bang + 1)
  if (key === '' || /^\d+$/.test(key)) {
    throw new UsageError(`preamble: Replacement index ${key === '' ? 0 : key} out of range for positional args tuple`)
  }
  if (key !== 'name') throw new UsageError(`preamble: unknown field {${key}}; only {name} is known`)
  let value = name
  if (conversion === 'r') value = reprStr(name)
  else if (conversion === 'a') value = reprStr(name, true)
  else if (conversion !== undefined && conversion !== 's') {
    throw new UsageError(`preamble: Unknown conversion specifier ${conversion === '' ? '' : conversion}`)
  }
  return spec === '' ? value : formatSpec(value, spec)
}

/** template.format(name=name), for the fields and format specs a str supports. */
export function formatPreamble(template: string, name: string): string {
  let out = ''
  let i = 0
  while (i < template.length) {
    const c = template[i]!
    if (c === '}') {
      if (template[i + 1] !== '}') throw new UsageError("preamble: Single '}' encountered in format string")
      out += '}'
      i += 2
    } else if (c === '{') {
      if (template[i + 1] === '{') {
        out += '{'
        i += 2
        continue
      }
      const close = template.indexOf('}', i + 1)
      if (close < 0) {
        throw new UsageError(i + 1 === template.length ? "preamble: Single '{' encountered in format string" : "preamble: expected '}' before end of string")
      }
      const field = template.slice(i + 1, close)
      if (field.includes('{')) throw new UsageError('preamble: nested fields are not supported')
      out += replacementField(field, name)
      i = close + 1
    } else {
      out += c
      i++
    }
  }
  return out
}
