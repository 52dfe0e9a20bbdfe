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

/**
 * Several pickle.dumps(eval(expr), protocol) in one CPython process (one start-up instead of
 * one per value): the pickles, in the order given.
 */
export function pyDumpsAll(items: readonly (readonly [expr: string, protocol: number])[], imports = 'collections, datetime, decimal, uuid'): Uint8Array[] {
  const script = [
    `import pickle, sys, struct, ${imports}`,
    'for expr, protocol in eval(sys.stdin.read()):',
    '    data = pickle.dumps(eval(expr), protocol=protocol)',
    "    sys.stdout.buffer.write(struct.pack('<I', len(data)) + data)",
  ].join('\n')
  const out = runPython(script, new TextEncoder().encode(JSON.stringify(items)))
  const pickles: Uint8Array[] = []
  for (let at = 0; at < out.length;) {
    const n = out.readUInt32LE(at)
    pickles.push(new Uint8Array(out.subarray(at + 4, at + 4 + n)))
    at += 4 + n
  }
  return pickles
}
