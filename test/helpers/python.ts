/**
 * Runs the real CPython for interop tests. Never a mock: every value these tests compare
 * against was produced or checked by python3 itself.
 */
import { execFileSync } from 'node:child_process'

/** The interpreter the tests run (python3 on PATH; override with PICKLEWIRE_PYTHON). */
export const PYTHON = process.env.PICKLEWIRE_PYTHON ?? 'python3'

/** Runs a Python script with the given stdin and returns its stdout bytes. */
export function runPython(script: string, input?: Uint8Array, python = PYTHON): Buffer {
  return execFileSync(python, ['-c', script], {
    input,
    maxBuffer: 1 << 30,
    stdio: ['pipe', 'pipe', 'pipe'],
  })
}

/** pickle.dumps(eval(expr), protocol) done by CPython; imports are available to expr. */
export function pyDumps(expr: string, protocol: number, imports = 'collections, datetime, decimal, uuid'): Uint8Array {
  const out = runPython(`import pickle, sys, ${imports}\nsys.stdout.buffer.write(pickle.dumps(${expr}, protocol=${protocol}))`)
  return new Uint8Array(out.buffer, out.byteOffset, out.byteLength)
}
