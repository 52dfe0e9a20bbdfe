/**
 * The shipped allow lists (ALLOW) against the pickles the data libraries themselves write:
 * pandas 2 and 3, pyarrow, scipy.sparse, scikit-learn, xarray and datetimes with zoneinfo, at
 * protocols 2, 4, 5 and 5 out of band (test/interop/make_data_pickles.py, run in virtual
 * environments built from the wheel folder, see test/helpers/data-venvs.ts). Each pickle loads
 * with its library's list and without opaque; each list holds exactly the names its pickles
 * need; a list missing one of them is refused naming it; and what loaded pickles back
 * (lossless) to a value CPython finds equal to the original.
 */
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { ALLOW, PickleBuffer, UnpicklingError, defaultGlobals, dumps, loads } from '@picklewire/codec'
import { dataVenvsOrSkip, type DataVenvName } from '../helpers/data-venvs.js'
import { REQUIRE_PYTHON, runPython } from '../helpers/python.js'

const SCRIPT = fileURLToPath(new URL('./make_data_pickles.py', import.meta.url))

/** The generator's library names and the ALLOW list each one loads with. */
const LISTS = {
  pandas: ALLOW.pandas, pyarrow: ALLOW.pyarrow, scipy: ALLOW.scipySparse, sklearn: ALLOW.sklearn, xarray: ALLOW.xarray, zoneinfo: ALLOW.zoneinfo,
} as const
type Library = keyof typeof LISTS

/** Which environment makes which libraries' pickles. */
const MADE_IN: Record<DataVenvName, readonly Library[]> = {
  pandas2: ['pandas', 'zoneinfo'],
  pandas3: ['pandas', 'pyarrow', 'scipy', 'sklearn', 'xarray', 'zoneinfo'],
}

interface Made {
  venv: DataVenvName
  library: Library
  case: string
  protocol: number
  oob: boolean
  data: Uint8Array
  buffers: Uint8Array[]
  /** The globals it names that the default registry does not resolve. */
  needs: string[]
}

const label = (m: Made): string => `${m.venv} ${m.case} protocol ${m.protocol}${m.oob ? ' out of band' : ''}`
const b64 = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'base64'))
const REGISTERED = new Set(defaultGlobals.keys())

const started = process.hrtime.bigint()
const venvs = dataVenvsOrSkip(t, ['pandas2', 'pandas3'])
if (typeof venvs === 'string') {
  // Under PICKLEWIRE_REQUIRE_PYTHON=1 dataVenvsOrSkip has failed t already.
  if (REQUIRE_PYTHON) t.end()
  else t.plan(0, venvs)
} else {
  const seconds = Number(process.hrtime.bigint() - started) / 1e9
  const built = Object.entries(venvs).filter(([, v]) => v.buildSeconds > 0).map(([n, v]) => `${n} ${v.buildSeconds.toFixed(1)} s`)
  t.comment(built.length ? `built the environments: ${built.join(', ')}` : `reused the environments (${seconds.toFixed(1)} s)`)

  const made: Made[] = []
  for (const [venv, libraries] of Object.entries(MADE_IN) as [DataVenvName, readonly Library[]][]) {
    const out = runPython(`import runpy, sys; sys.argv = [${JSON.stringify(SCRIPT)}, 'make', *${JSON.stringify(libraries)}]; runpy.run_path(sys.argv[0], run_name='__main__')`, undefined, venvs[venv].python)
    for (const line of out.toString('utf8').trim().split('\n')) {
      const r = JSON.parse(line) as { library: Library; case: string; protocol: number; oob: boolean; data: string; buffers: string[]; globals: string[] }
      made.push({
        venv, library: r.library, case: r.case, protocol: r.protocol, oob: r.oob, data: b64(r.data), buffers: r.buffers.map(b64),
        needs: r.globals.filter((g) => !REGISTERED.has(g) && g !== 'builtins.getattr'),
      })
    }
  }

  t.test('every library made its pickles at protocols 2, 4, 5 and 5 out of band', async (t) => {
    for (const [venv, libraries] of Object.entries(MADE_IN)) {
      for (const library of libraries) {
        const variants = new Set(made.filter((m) => m.venv === venv && m.library === library).map((m) => `${m.protocol}${m.oob ? ' oob' : ''}`))
        t.same([...variants].sort(), ['2', '4', '5', '5 oob'], `${venv} ${library}`)
      }
    }
    t.ok(made.some((m) => m.oob && m.buffers.length > 0), 'some pickles have out-of-band buffers')
  })

  t.test('each shipped list holds exactly the names its library pickles need', async (t) => {
    const needed = (libraries: readonly Library[]): Set<string> => new Set(made.filter((m) => libraries.includes(m.library)).flatMap((m) => m.needs))
    for (const library of Object.keys(LISTS) as Library[]) {
      const list = new Set<string>(LISTS[library])
      const own = needed([library])
      // xarray's list includes the whole pandas list, for the pandas indexes of either pandas.
      const accounted = library === 'xarray' ? needed(['xarray', 'pandas']) : own
      t.same([...own].filter((n) => !list.has(n)).sort(), [], `${library}: nothing needed is missing (ALLOW.${library === 'scipy' ? 'scipySparse' : library})`)
      t.same([...list].filter((n) => !accounted.has(n)).sort(), [], `${library}: nothing listed is unused`)
      t.equal(list.size, LISTS[library].length, `${library}: no name listed twice`)
    }
    t.ok(ALLOW.zoneinfo.includes('zoneinfo.ZoneInfo._unpickle'), 'zoneinfo goes through getattr(ZoneInfo, "_unpickle")')
  })

  t.test('each pickle loads with its list, without opaque; a list missing one needed name is refused naming it', async (t) => {
    let refusals = 0
    for (const m of made) {
      const list = LISTS[m.library]
      const options = { allow: list, buffers: m.buffers }
      t.doesNotThrow(() => loads(m.data, options), label(m))
      t.throws(() => loads(m.data, { buffers: m.buffers }), UnpicklingError, `${label(m)}: refused without the list`)
      for (const name of new Set(m.needs)) {
        const without = list.filter((n) => n !== name)
        let err: unknown
        try {
          loads(m.data, { allow: without, buffers: m.buffers })
        } catch (e) {
          err = e
        }
        if (!(err instanceof UnpicklingError) || !err.message.includes(`'${name}'`)) {
          t.fail(`${label(m)} without ${name}: expected an UnpicklingError naming it, got ${err instanceof Error ? err.message : 'a value'}`)
        }
        refusals++
      }
    }
    t.ok(refusals > made.length, `${refusals} loads with one name left out, each refused naming it`)
  })

  t.test('loaded placeholders pickle back (lossless) to values CPython finds equal to the originals', async (t) => {
    for (const venv of Object.keys(MADE_IN) as DataVenvName[]) {
      const items = made.filter((m) => m.venv === venv).map((m) => {
        const v = loads(m.data, { allow: LISTS[m.library], buffers: m.buffers, lossless: true })
        const buffers: PickleBuffer[] = []
        const data = dumps(v, { protocol: m.protocol, bufferCallback: m.oob ? (b) => { buffers.push(b) } : null })
        if (m.oob) t.equal(buffers.length, m.buffers.length, `${label(m)}: as many out-of-band buffers back as came`)
        return {
          case: m.case, label: label(m), data: Buffer.from(data).toString('base64'),
          buffers: buffers.map((b) => Buffer.from(b.raw()).toString('base64')),
        }
      })
      const out = runPython(
        `import runpy, sys; sys.argv = [${JSON.stringify(SCRIPT)}, 'check']; runpy.run_path(sys.argv[0], run_name='__main__')`,
        new TextEncoder().encode(JSON.stringify(items)), venvs[venv].python,
      )
      const results = JSON.parse(out.toString('utf8')) as { case: string; ok: boolean; why: string | null }[]
      t.equal(results.length, items.length, `${venv}: every pickle checked`)
      results.forEach((r, i) => t.ok(r.ok, `${items[i]!.label}: ${r.why ?? 'equal'}`))
    }
  })
}
