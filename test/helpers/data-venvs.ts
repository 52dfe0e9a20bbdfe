/**
 * Python virtual environments with the data libraries (pandas 2 and 3, pyarrow, scipy,
 * scikit-learn, xarray), installed from a folder of wheels, never from the network. Each is
 * built once under VENV_ROOT and reused while its requirements stay the same; a missing or
 * changed one is rebuilt (into a temporary folder, renamed when complete, so that test files
 * running side by side never see half of one).
 */
import { execFileSync, spawnSync } from 'node:child_process'
import { existsSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { Test } from 'tap'
import { PYTHON, REQUIRE_PYTHON, pythonMissing } from './python.js'

/** Where the environments live (PICKLEWIRE_DATA_VENVS overrides). */
export const VENV_ROOT = process.env.PICKLEWIRE_DATA_VENVS ?? '/tmp/picklewire-data-venvs'
/** The folder of wheels pip installs from (PICKLEWIRE_WHEELS overrides). */
export const WHEELS = process.env.PICKLEWIRE_WHEELS ?? '/opt/pypi/files'

/** The environments and their requirements: pandas 2 alone, pandas 3 with the other libraries. */
export const DATA_VENVS = {
  pandas2: ['pandas==2.3.3', 'tzdata'],
  pandas3: ['pandas==3.0.6', 'pyarrow==25.0.1', 'scipy==1.17.1', 'scikit_learn==1.9.1', 'xarray==2026.9.0', 'tzdata'],
} as const satisfies Record<string, readonly string[]>

export type DataVenvName = keyof typeof DATA_VENVS

export interface DataVenv {
  /** The environment's python. */
  readonly python: string
  /** Seconds spent building it in this process; 0 when it was reused. */
  readonly buildSeconds: number
}

const MARKER = 'picklewire-requirements.json'

/** The environment, built when missing, or why it cannot be: no python3, no venv module, no wheels. */
export function dataVenv(name: DataVenvName): DataVenv | string {
  const missing = pythonMissing(['venv'])
  if (missing !== null) return missing
  const requirements = DATA_VENVS[name]
  const dir = join(VENV_ROOT, name)
  const python = join(dir, 'bin', 'python')
  const wanted = JSON.stringify(requirements)
  if (existsSync(python) && existsSync(join(dir, MARKER)) && readFileSync(join(dir, MARKER), 'utf8') === wanted) return { python, buildSeconds: 0 }
  if (!existsSync(WHEELS) || readdirSync(WHEELS).length === 0) {
    return `no wheel folder at ${WHEELS} (set PICKLEWIRE_WHEELS to a folder holding ${requirements.join(', ')} and their dependencies)`
  }
  const started = process.hrtime.bigint()
  const building = `${dir}.building-${process.pid}`
  rmSync(building, { recursive: true, force: true })
  try {
    execFileSync(PYTHON, ['-m', 'venv', building], { stdio: 'pipe', timeout: 120_000 })
    const pip = spawnSync(join(building, 'bin', 'python'), [
      '-m', 'pip', 'install', '--quiet', '--disable-pip-version-check', '--no-index', '--find-links', WHEELS, ...requirements,
    ], { encoding: 'utf8', timeout: 600_000 })
    if (pip.status !== 0) {
      return `pip cannot install ${requirements.join(' ')} from ${WHEELS}: ${(pip.stderr || pip.error?.message || '').trim().split('\n').pop()}`
    }
    writeFileSync(join(building, MARKER), wanted)
    rmSync(dir, { recursive: true, force: true })
    renameSync(building, dir)
  } catch (err) {
    return `cannot make the virtual environment ${dir}: ${(err as Error).message.split('\n')[0]}`
  } finally {
    rmSync(building, { recursive: true, force: true })
  }
  return { python, buildSeconds: Number(process.hrtime.bigint() - started) / 1e9 }
}

/**
 * The environments, or (for a test's skip) the reason one cannot be had; under
 * PICKLEWIRE_REQUIRE_PYTHON=1 that also fails t.
 */
export function dataVenvsOrSkip(t: Test, names: readonly DataVenvName[]): Record<DataVenvName, DataVenv> | string {
  const venvs: Partial<Record<DataVenvName, DataVenv>> = {}
  for (const name of names) {
    const v = dataVenv(name)
    if (typeof v === 'string') {
      if (REQUIRE_PYTHON) t.fail(`PICKLEWIRE_REQUIRE_PYTHON=1, but ${v}`)
      return v
    }
    venvs[name] = v
  }
  return venvs as Record<DataVenvName, DataVenv>
}
