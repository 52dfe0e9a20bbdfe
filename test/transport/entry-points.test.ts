/**
 * Each package entry point, imported alone in a fresh Node process: the runtime names it
 * gives (exactly the public ones: an internal that leaks, or a public name that goes missing,
 * fails here) and the packages it loads (the shared-memory entry never loads ws, the WebSocket
 * entry never loads piscina, the codec loads none of them). msgpackr is the ws wire header's.
 * The browser entry's whole import graph, as a bundler resolves it for a browser, has no Node
 * built-in, ws or piscina in it.
 */
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { builtinModules } from 'node:module'
import { build } from 'esbuild'
import t from 'tap'

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
const hooks = join(root, 'test', 'helpers', 'trace-loads.mjs')

const SHARED = ['DEFAULT_LIMITS', 'TransportError']
const SHM = [
  ...SHARED, 'ArenaPool', 'Channel', 'DEFAULT_ARENA_BYTES', 'DEFAULT_RING_BYTES', 'DEFAULT_SIGNALLING', 'DEFAULT_WINDOW', 'Pipe', 'Received',
  'arenaHandler', 'createChannel', 'createPipe', 'openChannel', 'openPipe', 'reclaimOnExit', 'workerStats',
]
const WS = [
  ...SHARED, 'CLOSE', 'DEFAULT_HEARTBEAT_INTERVAL', 'DEFAULT_HEARTBEAT_TIMEOUT', 'DEFAULT_HIGH_WATER_MARK', 'DEFAULT_RECEIVE_HIGH_WATER_MARK', 'DEFAULT_RECYCLE_BYTES', 'DEFAULT_SAME_HOST_MIN_BYTES',
  'PickleSocket', 'PickleSocketServer', 'SUBPROTOCOL', 'WebSocket', 'WebSocketServer', 'connectPickleSocket', 'listenPickleSocket',
]
const DASK = [
  ...SHARED, 'DEFAULT_DASK_LIMITS', 'DEFAULT_DASK_TIMEOUT', 'DaskClient', 'DaskComm', 'DaskFuture', 'DaskListener', 'DaskRemoteError',
  'DaskSerialize', 'DaskSerialized', 'DaskToPickle', 'WarmMemory', 'connectDask', 'listenDask', 'pythonGlobal',
]
const BROWSER = [
  ...SHARED, 'CLOSE', 'DEFAULT_CHUNK_BYTES', 'DEFAULT_HIGH_WATER_MARK', 'PickleSocket', 'SUBPROTOCOL', 'connectPickleSocket',
]
const CODEC = [
  'ALLOW', 'ByteArray', 'Complex', 'Counter', 'DEFAULT_PROTOCOL', 'DType', 'Decimal', 'DefaultDict', 'Deque', 'EOFError', 'Ellipsis', 'FrozenSet',
  'GlobalRegistry', 'HIGHEST_PROTOCOL', 'LazyStrings', 'MAX_NDIM', 'MAX_SPREAD_ARGS', 'MAX_ZERO_FILL', 'NATIVE_BYTE_ORDER', 'NDArray', 'NotImplemented',
  'NumpyScalar', 'OPCODES', 'OrderedDict', 'PickleBuffer', 'PickleError', 'Pickler', 'PicklingError', 'PyDate', 'PyDateTime', 'PyFloat',
  'PyGlobal', 'PyObject', 'PyObjectCall', 'PyOpaque', 'PyPersistentRef', 'PyRange', 'PySingleton', 'PyStr', 'PyTime', 'PyTimeDelta',
  'PyTimeZone', 'Slice', 'Tuple', 'UUID', 'Unpickler', 'UnpicklingError', 'defaultGlobals', 'dis', 'dump', 'dumps', 'dumpsTransient',
  'float16ToNumber', 'genops', 'getNewArgs', 'getState', 'isPython2Module', 'load', 'loads', 'numberToFloat16', 'optimize', 'readArrowArray',
  'readArrowTable', 'readDataFrame', 'readSeries', 'reduceEx', 'setState',
]
const DEPENDENCIES = ['ws', 'piscina', 'msgpackr']

const ENTRIES: { entry: string; names: string[]; loads: string[] }[] = [
  { entry: '@picklewire/codec', names: CODEC, loads: [] },
  { entry: '@picklewire/transport/shm', names: SHM, loads: ['piscina'] },
  { entry: '@picklewire/transport/ws', names: WS, loads: ['ws', 'msgpackr'] },
  { entry: '@picklewire/transport/dask', names: DASK, loads: ['msgpackr'] },  // ws on the first ws:// comm
  { entry: '@picklewire/transport/browser', names: BROWSER, loads: ['msgpackr'] },
  { entry: '@picklewire/transport', names: [...new Set([...SHM, ...WS, ...DASK])], loads: ['ws', 'piscina', 'msgpackr'] },
]

/** Imports entry in a fresh process: its runtime names and the npm packages whose modules were resolved. */
function importAlone(entry: string): { names: string[]; packages: Set<string> } {
  const dir = mkdtempSync(join(tmpdir(), 'picklewire-entry-'))
  try {
    const trace = join(dir, 'loads.txt')
    const out = execFileSync(process.execPath, [
      '--import', hooks, '--input-type=module', '-e',
      `const m = await import(${JSON.stringify(entry)}); console.log(JSON.stringify(Object.keys(m)))`,
    ], { cwd: root, env: { ...process.env, PICKLEWIRE_TRACE_LOADS: trace }, encoding: 'utf8' })
    const packages = new Set<string>()
    for (const url of readFileSync(trace, 'utf8').split('\n')) {
      // pnpm's store: .../node_modules/.pnpm/<name>@<version>/node_modules/<name>/...
      const m = /\/node_modules\/((?:@[^/]+\/)?[^/.][^/]*)\/[^/]*$|\/node_modules\/((?:@[^/]+\/)?[^/.][^/]*)\//.exec(url.slice(url.lastIndexOf('/node_modules/')))
      if (m) packages.add(m[1] ?? m[2])
      // the workspace's own packages resolve to their real paths
      const w = /\/packages\/(codec|transport)\/dist\//.exec(url)
      if (w) packages.add(`@picklewire/${w[1]}`)
    }
    return { names: JSON.parse(out.trim().split('\n').pop()!) as string[], packages }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

for (const { entry, names, loads } of ENTRIES) {
  t.test(entry, async (t) => {
    const got = importAlone(entry)
    t.same([...got.names].sort(), [...names].sort(), `${entry} gives exactly its public names (${names.length})`)
    for (const dep of DEPENDENCIES) {
      t.equal(got.packages.has(dep), loads.includes(dep), `${entry} ${loads.includes(dep) ? 'loads' : 'does not load'} ${dep}`)
    }
  })
}

t.test('the trace sees a package that is loaded', async (t) => {
  // The check above could pass by seeing nothing: the root entry loads all three.
  const got = importAlone('@picklewire/transport')
  t.ok(got.packages.has('@picklewire/codec'), 'the codec is seen')
  t.ok(got.packages.has('@picklewire/transport'), 'the transport is seen')
  for (const dep of DEPENDENCIES) t.ok(got.packages.has(dep), `${dep} is seen`)
})

t.test('the browser entry imports nothing of Node, ws or piscina, as a browser resolves it', async (t) => {
  const dist = join(root, 'packages', 'transport', 'dist', 'browser')
  // esbuild walks every import from the entry with the browser's conditions (msgpackr's
  // "browser" export); metafile lists each file it reached and each import of each file.
  const result = await build({
    entryPoints: [join(dist, 'index.js'), join(dist, 'bundle.js')], bundle: true, write: false, metafile: true,
    platform: 'browser', format: 'esm', outdir: join(root, 'unused'), logLevel: 'silent',
  })
  const inputs = Object.entries(result.metafile.inputs)
  const builtins = new Set(builtinModules)
  const forbidden: string[] = []
  for (const [file, { imports }] of inputs) {
    for (const i of imports) {
      const name = i.path.replace(/^node:/, '')
      if (i.path.startsWith('node:') || builtins.has(name) || /(^|\/node_modules\/)(ws|piscina|bufferutil)(\/|$)/.test(i.path)) forbidden.push(`${file} imports ${i.path}`)
    }
    if (/\/node_modules\/(\.pnpm\/)?(ws|piscina|bufferutil)[@/]/.test(file)) forbidden.push(file)
  }
  t.same(forbidden, [], 'no Node built-in, ws, piscina or bufferutil anywhere in the graph')
  const reached = inputs.map(([file]) => file)
  t.ok(reached.some((f) => f.includes('packages/transport/dist/ws/receiver.js')), 'the graph holds the protocol core (receiver.js)')
  t.ok(reached.some((f) => f.includes('packages/codec/dist/')), 'and the codec')
  t.ok(reached.some((f) => /msgpackr\/(unpack|index)\.js$/.test(f)), 'and msgpackr')
  t.ok(inputs.length > 20, `${inputs.length} files walked`)
})
