#!/usr/bin/env node
/**
 * pickletools: disassembles pickle files as `python3 -m pickletools` does (Python 3.11),
 * with the same options and the same listing. Each file's first pickle is disassembled, as
 * Python's command does; '-' is standard input, and so is no file at all when standard
 * input is not a terminal (with a terminal, the help is printed, as Python prints it).
 * Problems end the command with one line on standard error: status 2 for a bad command
 * line or a file that cannot be opened, 1 for a malformed pickle.
 */
import { openSync, readFileSync, writeSync } from 'node:fs'
import { PickleError } from '../errors.js'
import type { StackObject } from '../opcodes.js'
import { dis, type MemoKey, type TextSink } from '../pickletools.js'
import { HELP, UsageError, formatPreamble, parseCommandLine } from '../pickletools/command-line.js'
import { reprStr } from '../pickletools/repr.js'

/** Python's annotation column for the command's -a. */
const ANNOTATE_COLUMN = 30

const STRERROR: Readonly<Record<string, string>> = {
  ENOENT: 'No such file or directory',
  EACCES: 'Permission denied',
  EISDIR: 'Is a directory',
  ENOTDIR: 'Not a directory',
  EPERM: 'Operation not permitted',
  ELOOP: 'Too many levels of symbolic links',
  ENAMETOOLONG: 'File name too long',
  EROFS: 'Read-only file system',
}

function cannotOpen(path: string, err: unknown): UsageError {
  const e = err as NodeJS.ErrnoException
  const why = (e.code !== undefined ? STRERROR[e.code] : undefined) ?? e.message
  return new UsageError(`can't open ${reprStr(path)}: ${why}`)
}

function openOutput(path: string | undefined): TextSink {
  if (path === undefined || path === '-') return { write: (text: string) => process.stdout.write(text) }
  let fd: number
  try {
    fd = openSync(path, 'w')
  } catch (err) {
    throw new UsageError(`argument -o/--output: ${cannotOpen(path, err).message}`)
  }
  return { write: (text: string) => writeSync(fd, text) }
}

interface Input {
  readonly name: string
  readonly bytes: Uint8Array
  /** Standard input named more than once continues where the last pickle ended, as a file does. */
  readonly shared: boolean
}

function readInputs(files: readonly string[]): Input[] {
  let stdin: Uint8Array | undefined
  return files.map((path) => {
    if (path === '-') {
      stdin ??= readFileSync(0)
      return { name: '<stdin>', bytes: stdin, shared: true }
    }
    try {
      return { name: path, bytes: readFileSync(path), shared: false }
    } catch (err) {
      throw cannotOpen(path, err)
    }
  })
}

function run(argv: readonly string[]): number {
  const o = parseCommandLine(argv)
  if (o.help) {
    process.stdout.write(HELP)
    return 0
  }
  let files = o.files
  if (files.length === 0) {
    if (process.stdin.isTTY === true) {
      process.stdout.write(HELP)
      return 0
    }
    files = ['-']
  }
  const out = openOutput(o.output)
  const inputs = readInputs(files)
  const memo = files.length > 1 && o.memo ? new Map<MemoKey, StackObject>() : undefined
  let stdinAt = 0
  for (const input of inputs) {
    if (files.length > 1) out.write(formatPreamble(o.preamble, input.name) + '\n')
    const start = input.shared ? stdinAt : 0
    try {
      const end = dis(input.bytes, { out, memo, indentlevel: o.indentlevel, annotate: o.annotate ? ANNOTATE_COLUMN : 0, start })
      if (input.shared) stdinAt = end
    } catch (err) {
      if (!(err instanceof PickleError)) throw err
      process.stderr.write(`pickletools: ${input.name}: ${err.message}\n`)
      return 1
    }
  }
  return 0
}

process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  // The reader went away (`pickletools big.pkl | head`): stop quietly.
  if (err.code === 'EPIPE') process.exit(0)
  process.stderr.write(`pickletools: error: cannot write the listing: ${err.message}\n`)
  process.exit(1)
})

try {
  process.exitCode = run(process.argv.slice(2))
} catch (err) {
  const usage = err instanceof UsageError
  process.stderr.write(`pickletools: error: ${err instanceof Error ? err.message : String(err)}\n`)
  process.exitCode = usage ? 2 : 1
}
