/**
 * The packages as a user outside this workspace gets them: packed with pnpm pack, installed
 * with plain npm (empty cache) into a fresh app in a temporary directory, then used from an
 * ESM TypeScript program (strict, skipLibCheck false) and from a CommonJS one. Each loads a
 * pickle made by python3 with numpy and sends its array over the WebSocket carrier and back.
 */
import { execFileSync, spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { PYTHON, skipWithoutPython } from '../helpers/python.js'

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
const PNPM = 'pnpm@10.34.9'
const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc')

const PROGRAM_BODY = `
  const bytes = readFileSync(picklePath)
  const value = loads(bytes) as Map<string, unknown>
  const label = value.get('label')
  const array = value.get('array')
  if (!(array instanceof NDArray)) throw new Error('array is not an NDArray')
  const server = await listenPickleSocket({ host: '127.0.0.1', port: 0 })
  server.on('connection', async (sock) => {
    for await (const v of sock) await sock.send(v)
  })
  const client = await connectPickleSocket(server.url)
  await client.send(array)
  const back = await client.receive<NDArray>()
  await client.close()
  await server.close()
  const error: TransportError | Error | null = client.error
  console.log(JSON.stringify({ label, dtype: back.dtype.str, shape: back.shape, values: Array.from(back.data as Float32Array), closedClean: error === null }))
`

const ESM = `import { readFileSync } from 'node:fs'
import { NDArray, loads } from '@picklewire/codec'
import { connectPickleSocket, listenPickleSocket, TransportError } from '@picklewire/transport/ws'

const picklePath = process.argv[2]
${PROGRAM_BODY}
`

const CJS = `import { readFileSync } from 'node:fs'
import { NDArray, loads } from '@picklewire/codec'
import { connectPickleSocket, listenPickleSocket, TransportError } from '@picklewire/transport/ws'

async function main(picklePath: string): Promise<void> {
${PROGRAM_BODY}
}
main(process.argv[2]).catch((err) => { console.error(err); process.exit(1) })
`

const TSCONFIG = {
  compilerOptions: {
    strict: true, skipLibCheck: false, module: 'nodenext', moduleResolution: 'nodenext', target: 'es2022',
    types: ['node'], outDir: 'out', noEmitOnError: true,
  },
  files: ['esm.mts', 'cjs.cts'],
}

const missing = skipWithoutPython(t, ['numpy'])
t.test('packed tarballs install with npm and work from ESM and CommonJS', { skip: missing ? `${missing}: the test loads a pickle it makes` : false }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'picklewire-install-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const packs = join(dir, 'packs')
  for (const pkg of ['codec', 'transport']) {
    execFileSync('npx', ['--yes', PNPM, 'pack', '--pack-destination', packs], { cwd: join(root, 'packages', pkg), stdio: 'pipe' })
  }
  const tarballs = readdirSync(packs).sort()
  t.same(tarballs, ['picklewire-codec-0.1.0.tgz', 'picklewire-transport-0.1.0.tgz'], 'one tarball per package')

  for (const tarball of tarballs) {
    const list = execFileSync('tar', ['-tzf', join(packs, tarball)], { encoding: 'utf8' }).split('\n').filter(Boolean)
    t.ok(list.includes('package/LICENSE') && list.includes('package/README.md') && list.includes('package/CHANGELOG.md'), `${tarball} has LICENSE, README.md, CHANGELOG.md`)
    t.same(list.filter((f) => /test|\.tsbuildinfo$|egg-info|__pycache__|bench/.test(f)), [], `${tarball} ships no tests or build leftovers`)
    const manifest = JSON.parse(execFileSync('tar', ['-xOzf', join(packs, tarball), 'package/package.json'], { encoding: 'utf8' })) as Record<string, Record<string, string>>
    t.notMatch(JSON.stringify(manifest.dependencies ?? {}), /workspace:/, `${tarball}: no workspace: specifiers left`)
  }

  const app = join(dir, 'app')
  execFileSync('mkdir', ['-p', app])
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module' }))
  const npm = spawnSync('npm', [
    'install', '--cache', join(dir, 'npm-cache'), '--no-audit', '--no-fund', '--loglevel=error',
    ...tarballs.map((f) => join(packs, f)), '@types/node@^20.19.0',
  ], { cwd: app, encoding: 'utf8' })
  t.equal(npm.status, 0, `npm install: ${npm.stderr.slice(-2000)}`)
  if (npm.status !== 0) return

  const picklePath = join(dir, 'value.pickle')
  execFileSync(PYTHON, ['-c', [
    'import pickle, sys, numpy',
    "value = {'label': 'from python', 'array': numpy.arange(6, dtype='float32').reshape(2, 3) / 2}",
    'open(sys.argv[1], "wb").write(pickle.dumps(value, protocol=5))',
  ].join('\n'), picklePath])

  writeFileSync(join(app, 'esm.mts'), ESM)
  writeFileSync(join(app, 'cjs.cts'), CJS)
  writeFileSync(join(app, 'tsconfig.json'), JSON.stringify(TSCONFIG))
  const compiled = spawnSync(process.execPath, [tsc, '-p', app], { cwd: app, encoding: 'utf8' })
  t.equal(compiled.status, 0, `tsc (strict, skipLibCheck false) on the ESM and CommonJS programs: ${compiled.stdout}${compiled.stderr}`)
  if (compiled.status !== 0) return

  const expected = { label: 'from python', dtype: '<f4', shape: [2, 3], values: [0, 0.5, 1, 1.5, 2, 2.5], closedClean: true }
  for (const program of ['esm.mjs', 'cjs.cjs']) {
    const run = spawnSync(process.execPath, [join(app, 'out', program), picklePath], { cwd: app, encoding: 'utf8', timeout: 60_000 })
    t.equal(run.status, 0, `${program} exits 0: ${run.stderr.slice(-2000)}`)
    t.same(JSON.parse(run.stdout.trim() || 'null'), expected, `${program}: the pickle loads, and its array goes over the WebSocket and back`)
    t.equal(run.stderr, '', `${program} writes no warning`)
  }

  // The Python peer ships in the transport's tarball: pip installs it from node_modules.
  const wheels = process.env.PICKLEWIRE_WHEELS ?? '/opt/pypi/files'
  const venvable = spawnSync(PYTHON, ['-c', 'import venv, ensurepip'], { stdio: 'ignore' }).status === 0
  const cannot = !venvable ? `${PYTHON} cannot make a venv with pip` : !existsSync(wheels) ? `no wheel folder at ${wheels}` : null
  await t.test('pip installs the Python peer from node_modules/@picklewire/transport/python', { skip: cannot ?? false }, async (t) => {
    const venv = join(dir, 'venv')
    t.equal(spawnSync(PYTHON, ['-m', 'venv', venv], { stdio: 'ignore' }).status, 0, 'python3 -m venv')
    const shipped = join(app, 'node_modules', '@picklewire', 'transport', 'python')
    const pip = spawnSync(join(venv, 'bin', 'python'), ['-m', 'pip', 'install', '--disable-pip-version-check', '--no-index', '--find-links', wheels, shipped], { cwd: dir, encoding: 'utf8' })
    t.equal(pip.status, 0, `pip install node_modules/@picklewire/transport/python: ${pip.stderr.slice(-2000)}`)
    const imported = spawnSync(join(venv, 'bin', 'python'), ['-W', 'error', '-c', 'import picklewire, picklewire.ws as ws; print(picklewire.__version__, ws.__file__)'], { cwd: dir, encoding: 'utf8' })
    t.equal(imported.status, 0, `the installed package imports: ${imported.stderr}`)
    t.match(imported.stdout, new RegExp(`^0\\.1\\.0 ${venv.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}/`), 'picklewire 0.1.0 from the venv')
  })
})
