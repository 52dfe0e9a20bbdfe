/**
 * Runs the real CPython for interop tests. Never a mock: every value these tests compare
 * against was produced or checked by python3 itself.
 */
import { execFileSync, spawnSync } from 'node:child_process'
import type { Test } from 'tap'

/** The interpreter the tests run (python3 on PATH; override with PICKLEWIRE_PYTHON). */
export const PYTHON = process.env.PICKLEWIRE_PYTHON ?? 'python3'

/**
 * PICKLEWIRE_REQUIRE_PYTHON=1 (.ci/run sets it): a missing python3, or a missing module that a
 * test asks python3 for, fails the tests instead of skipping them, so that a run on a machine
 * that has them cannot pass by skipping.
 */
export const REQUIRE_PYTHON = process.env.PICKLEWIRE_REQUIRE_PYTHON === '1'

/** How to get a module into python3, for the reasons tests skip with. */
const INSTALL: Record<string, { pip: string; apt: string }> = {
  numpy: { pip: 'numpy', apt: 'python3-numpy' },
  // The peer imports websockets.asyncio, new in websockets 13 (Debian 13's python3-websockets).
  websockets: { pip: '"websockets>=13"', apt: 'python3-websockets' },
  msgpack: { pip: 'msgpack', apt: 'python3-msgpack' },
}

const missingCache = new Map<string, string | null>()

/**
 * Why PYTHON cannot run tests that import the given modules, or null when it can. The reason
 * names python3 and how to install what is missing (pip and apt). Checked once per process.
 */
export function pythonMissing(modules: readonly string[] = []): string | null {
  const key = modules.join(',')
  if (missingCache.has(key)) return missingCache.get(key)!
  const which = PYTHON === 'python3' ? 'python3' : `python3 (PICKLEWIRE_PYTHON=${PYTHON})`
  const r = spawnSync(PYTHON, ['-c', modules.length ? `import ${modules.join(', ')}` : 'pass'], { encoding: 'utf8', timeout: 60_000 })
  let why: string | null = null
  if (r.error) {
    why = `${which} cannot be started (${r.error.message}): install Python 3 (apt install python3), or set PICKLEWIRE_PYTHON to a python3`
  } else if (r.status !== 0) {
    const pip = modules.map((m) => INSTALL[m]?.pip ?? m).join(' ')
    const apt = modules.map((m) => INSTALL[m]?.apt ?? `python3-${m}`).join(' ')
    why = `${which} cannot import ${modules.join(', ')} (${r.stderr.trim().split('\n').pop()}): pip install ${pip}, or apt install ${apt}`
  }
  missingCache.set(key, why)
  return why
}

/**
 * For a test's skip option: the reason python3 (with the given modules) is missing, or false.
 * Under PICKLEWIRE_REQUIRE_PYTHON=1 a missing one also fails t, so the file fails.
 */
export function skipWithoutPython(t: Test, modules: readonly string[] = []): string | false {
  const why = pythonMissing(modules)
  if (why === null) return false
  if (REQUIRE_PYTHON) t.fail(`PICKLEWIRE_REQUIRE_PYTHON=1, but ${why}`)
  return why
}

/**
 * For a test file whose module-level code runs Python: when python3 (with the given modules) is
 * missing, ends the process here with the whole file skipped and the reason, or failed under
 * PICKLEWIRE_REQUIRE_PYTHON=1. Call it before the first line that runs Python.
 */
export function endFileWithoutPython(t: Test, modules: readonly string[] = []): void {
  const why = pythonMissing(modules)
  if (why === null) return
  if (REQUIRE_PYTHON) {
    t.fail(`PICKLEWIRE_REQUIRE_PYTHON=1, but ${why}`)
    t.end()
    process.exit(1)
  }
  t.plan(0, why)
  process.exit(0)
}

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
