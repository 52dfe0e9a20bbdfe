/**
 * On a machine without python3: the demo runs its Node parts, says for each part it skips what
 * it needs and how to get it (pip and apt), and exits 0; test files that need python3 skip with
 * a reason that names python3 instead of crashing, and fail where PICKLEWIRE_REQUIRE_PYTHON=1
 * asks for it. The children get a PATH holding node alone, and PICKLEWIRE_PYTHON and
 * PICKLEWIRE_DASK_PYTHON naming an interpreter that does not exist.
 */
import t from 'tap'
import { spawnSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
const dir = mkdtempSync(join(tmpdir(), 'pw-no-python-'))
t.teardown(() => rmSync(dir, { recursive: true, force: true }))
const bin = join(dir, 'bin')
mkdirSync(bin)
symlinkSync(process.execPath, join(bin, 'node'))
const absent = join(dir, 'absent', 'python3')
// Built from nothing, so that CI's PICKLEWIRE_REQUIRE_* settings do not reach the children.
const ENV: Record<string, string> = { PATH: bin, HOME: dir, PICKLEWIRE_PYTHON: absent, PICKLEWIRE_DASK_PYTHON: absent, TS_NODE_TRANSPILE_ONLY: '1' }

function run(args: string[], extraEnv: Record<string, string> = {}): { status: number | null; out: string } {
  const r = spawnSync(process.execPath, args, { cwd: ROOT, env: { ...ENV, ...extraEnv }, encoding: 'utf8', timeout: 240_000 })
  return { status: r.status, out: r.stdout + r.stderr }
}

/** The loader tap runs TypeScript test files with, taken from this process's own arguments. */
const loader = process.execArgv.filter((a) => a.includes('@tapjs/typescript') || a === '--enable-source-maps')

t.test('the children cannot find python3', async (t) => {
  const r = spawnSync('python3', ['-c', 'pass'], { env: ENV })
  t.equal((r.error as NodeJS.ErrnoException | undefined)?.code, 'ENOENT', 'python3 is not on their PATH')
  t.equal((spawnSync(absent, ['-c', 'pass']).error as NodeJS.ErrnoException | undefined)?.code, 'ENOENT', 'PICKLEWIRE_PYTHON names nothing')
})

t.test('the demo runs the Node parts, names every part it skips with pip and apt commands, and exits 0', async (t) => {
  const { status, out } = run([join(ROOT, 'packages', 'examples', 'dist', 'demo.js')])
  t.equal(status, 0, `exit code 0${status === 0 ? '' : `:\n${out}`}`)
  t.match(out, /=== worker threads: buffers through shared memory ===[^]*jobs per worker[^]*through the arenas \(ArenaPool\)/, 'the worker threads part ran')
  t.match(out, /Node wrote a protocol-5 pickle of \d+ bytes[^]*Node loads it back itself:\nMap\(10\)/, 'Node pickled its values and loaded them back')
  t.match(out, /Node pickled a Float32Array of 6 as a numpy array[^]*Node loads it back itself: an NDArray float32 of shape \(6\)[^]*a view over the sent buffer: true/, 'Node pickled its Float32Array and loaded it back as a view')

  const skips = [...out.matchAll(/^skipped: (.*)\n {2}to run it: (.*)$/gm)].map((m) => ({ part: m[1]!, how: m[2]! }))
  t.equal(skips.length, 5, 'five parts skipped, each with a line saying how to get it')
  t.equal(out.match(/^skipped: /gm)?.length, 5, 'no skip line without its install line')
  for (const { part } of skips) t.match(part, /python3 \(PICKLEWIRE(_DASK)?_PYTHON=.*python3\) cannot be started/, `the reason names python3: ${part}`)
  const hint = (part: RegExp): string => skips.find((s) => part.test(s.part))?.how ?? ''
  t.match(hint(/^python3 pickling/), /apt install python3\b.*PICKLEWIRE_PYTHON/, 'Python -> Node: how to get python3')
  t.match(hint(/^numpy -> Node/), /pip install numpy, or apt install python3 python3-numpy/, 'numpy: pip and apt')
  t.match(hint(/WebSocket/), /pip install "\.\/packages\/transport\/python\[numpy\]".*apt install python3 python3-numpy python3-websockets python3-msgpack/, 'WebSocket: the peer package and apt')
  t.match(hint(/Dask/), /pip install distributed numpy, or apt install python3 python3-distributed python3-numpy; or set PICKLEWIRE_DASK_PYTHON/, 'Dask: pip and apt, and which variable')
  t.match(out, /The demo skipped 5 part\(s\)/, 'it sums up what it skipped')
})

t.test('test files that need python3 skip with a reason naming python3, and exit 0', { skip: loader.length === 0 ? 'not run by tap: no TypeScript loader to give the children' : false }, async (t) => {
  const files = ['test/interop/corpus.test.ts', 'test/codec/unpickler-basics.test.ts', 'test/transport/ws-python.test.ts', 'test/transport/ws-python-unittest.test.ts']
  for (const file of files) {
    const { status, out } = run([...loader, file])
    t.equal(status, 0, `${file}: exit code 0${status === 0 ? '' : `:\n${out}`}`)
    t.notMatch(out, /^\s*not ok/m, `${file}: nothing failed`)
    const reasons = [...out.matchAll(/^\s*(?:1\.\.0 # |ok \d+ - .* # SKIP )(.*)$/gm)].map((m) => m[1]!)
    t.ok(reasons.length > 0, `${file}: skipped`)
    for (const why of reasons) t.match(why, /python3 \(PICKLEWIRE_PYTHON=.*\) cannot be started.*apt install python3/, `${file}: the reason names python3 and how to get it`)
  }
})

t.test('PICKLEWIRE_REQUIRE_PYTHON=1 turns those skips into failures', { skip: loader.length === 0 ? 'not run by tap: no TypeScript loader to give the children' : false }, async (t) => {
  for (const file of ['test/interop/corpus.test.ts', 'test/transport/ws-python-unittest.test.ts']) {
    const { status, out } = run([...loader, file], { PICKLEWIRE_REQUIRE_PYTHON: '1' })
    t.not(status, 0, `${file}: a failing exit code`)
    t.match(out, /not ok \d+ - PICKLEWIRE_REQUIRE_PYTHON=1, but python3 \(PICKLEWIRE_PYTHON=.*\) cannot be started/, `${file}: the failure says why`)
  }
})
