/**
 * What the demo's parts need beyond Node. A part whose interpreter or Python modules are missing
 * is skipped: it prints what it skipped, why, and the pip and apt commands that get what it
 * needs, and the demo goes on with the next part. The parts that need only Node always run.
 */
import { spawnSync } from 'node:child_process'

/** An interpreter and the modules a part imports in it. */
export interface PythonNeed {
  /** The interpreter to run: a name on PATH or a path. */
  python: string
  /** The environment variable that points the demo at another interpreter. */
  variable: string
  /** Modules beyond the standard library. */
  modules: readonly string[]
  /** The pip command that installs the modules, when the default (pip install <modules>) is not the one to use. */
  pip?: string
  /** A note after the commands (a minimum version that not every apt source has). */
  note?: string
}

/** Debian's package of a module. */
const APT: Record<string, string> = { 'websockets.asyncio': 'python3-websockets' }

const skipped: string[] = []

/** Why need.python cannot import need.modules, or null. */
export function pythonLacks(need: PythonNeed): { why: string; started: boolean } | null {
  const name = need.python === 'python3' ? 'python3' : process.env[need.variable] === need.python ? `python3 (${need.variable}=${need.python})` : need.python
  const r = spawnSync(need.python, ['-c', need.modules.length ? `import ${need.modules.join(', ')}` : 'pass'], { encoding: 'utf8', cwd: '/', timeout: 60_000 })
  if (r.error) return { why: `${name} cannot be started (${r.error.message})`, started: false }
  if (r.status !== 0) return { why: `${name} cannot import ${need.modules.join(', ')} (${r.stderr.trim().split('\n').pop()})`, started: true }
  return null
}

/** The commands that get what need names, for the skip line. */
export function installHint(need: PythonNeed, started: boolean): string {
  if (need.modules.length === 0) return `install Python 3 (apt install python3), or set ${need.variable} to a python3`
  const apt = [...(started ? [] : ['python3']), ...need.modules.map((m) => APT[m] ?? `python3-${m}`)].join(' ')
  const pip = need.pip ?? `pip install ${need.modules.join(' ')}`
  const note = need.note ? ` (${need.note})` : ''
  return `${pip}, or apt install ${apt}${note}; or set ${need.variable} to a python3 that has them`
}

/**
 * Checks need; when it is not met, prints that part was skipped, why and how to get it, and
 * returns false.
 */
export function canRun(part: string, need: PythonNeed): boolean {
  const lacks = pythonLacks(need)
  if (lacks === null) return true
  skipped.push(part)
  console.log(`skipped: ${part}: ${lacks.why}`)
  console.log(`  to run it: ${installHint(need, lacks.started)}`)
  return false
}

/** The parts skipped so far, in order. */
export function skippedParts(): readonly string[] {
  return skipped
}

/** python3 for the codec parts (PICKLEWIRE_PYTHON, else python3 on PATH). */
export function codecPython(modules: readonly string[] = []): PythonNeed {
  return { python: process.env.PICKLEWIRE_PYTHON ?? 'python3', variable: 'PICKLEWIRE_PYTHON', modules }
}
