/**
 * The Python peer as a user installs it: `python3 -m venv`, then pip installs
 * packages/transport/python (with its numpy extra) offline from the wheel folder, and a Python
 * program run by that venv, outside the repository, streams numpy arrays to a Node server and
 * gets them back. Twice: python3 with numpy 2.x from the wheel folder, and Debian's
 * /usr/bin/python3 in a venv that sees its numpy 1.x (--system-site-packages). Node checks the values it received; Python checks the echoes and Node's
 * answer to a request. The program runs with `-W error`, so any warning numpy gives while
 * loading what Node wrote fails it.
 */
import { execFile, spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import t, { type Test } from 'tap'
import { NDArray } from '@picklewire/codec'
import { listenPickleSocket, type PickleSocket } from '@picklewire/transport'
import { numpyPythons } from '../helpers/numpy.js'
import { PYTHON, skipWithoutPython } from '../helpers/python.js'

const PACKAGE_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'packages', 'transport', 'python')
/** Debian's python3, whose numpy (python3-numpy) is 1.x. */
const NUMPY1_PYTHON = '/usr/bin/python3'
/** The folder of wheels pip installs from (CI's, see .ci/run); override with PICKLEWIRE_WHEELS. */
const WHEELS = process.env.PICKLEWIRE_WHEELS ?? '/opt/pypi/files'

/** Why a venv of python cannot be made and filled here, or null. */
function cannotRun(python: string): string | null {
  const r = spawnSync(python, ['-c', 'import venv, ensurepip'], { encoding: 'utf8' })
  if (r.error) return `${python} cannot be started (${r.error.message})`
  if (r.status !== 0) return `${python} cannot make a venv with pip (Debian: apt-get install python3-venv): ${r.stderr.trim().split('\n').pop()}`
  if (!existsSync(WHEELS)) return `no wheel folder at ${WHEELS} to install websockets, msgpack, numpy and setuptools from offline (set PICKLEWIRE_WHEELS)`
  return null
}

/** Why Debian's python3 with its numpy 1.x cannot be used, or null. */
function cannotRunNumpy1(): string | null {
  const { found } = numpyPythons()
  if (!found.some((py) => py.python === NUMPY1_PYTHON && py.major === 1)) return `${NUMPY1_PYTHON} has no numpy 1.x (apt-get install -y python3-numpy)`
  return cannotRun(NUMPY1_PYTHON)
}

/** The Python side: prints one JSON line of what it checked. argv: the server's URL. */
const CLIENT = `
import asyncio, json, sys
import numpy as np
from picklewire import ws

def arrays():
    return {
        'frame': (np.arange(480 * 640, dtype=np.float32) * 0.5).reshape(480, 640),
        'fortran': np.asfortranarray(np.arange(24, dtype=np.int64).reshape(2, 3, 4) - 12),
        'bytes': np.arange(256, dtype=np.uint8),
        'scalar': np.float64(2.5),
        'zero_d': np.array(7, dtype=np.int16),
    }

async def main():
    sock = await ws.connect(sys.argv[1], heartbeat_interval=None)
    sent = arrays()
    out = {'numpy': np.__version__, 'module': ws.__file__, 'echoes': []}
    for seq in range(3):
        await sock.send({'seq': seq, **sent})
        echo = await sock.recv()
        assert echo['seq'] == seq, echo['seq']
        # Node loads a numpy scalar as a number by default, so it comes back a Python float
        assert echo['scalar'] == 2.5 and type(echo['scalar']) is float, repr(echo['scalar'])
        for name, a in sent.items():
            if name == 'scalar':
                continue
            b = echo[name]
            assert type(b) is type(a) and b.dtype == a.dtype and np.shape(b) == np.shape(a), (name, type(b), getattr(b, 'dtype', None))
            assert np.array_equal(b, a), name
        out['echoes'].append(seq)
    out['node_sum'] = await sock.request({'op': 'sum', 'array': sent['frame']})
    out['sum'] = float(sent['frame'].sum(dtype=np.float64))
    out['flags'] = {'fortran': bool(echo['fortran'].flags.f_contiguous)}
    await sock.close()
    print(json.dumps(out))

asyncio.run(main())
`

/** Runs a program without blocking this process (the Node server answers it meanwhile). */
function run(file: string, args: string[], cwd: string, timeout: number): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(file, args, { cwd, timeout, encoding: 'utf8', maxBuffer: 1 << 24 }, (err, stdout, stderr) => {
      const status = err === null ? 0 : typeof err.code === 'number' ? err.code : null
      resolve({ status, stdout, stderr: err !== null && status === null ? `${err.message}\n${stderr}` : stderr })
    })
  })
}

function float32At(a: NDArray, i: number): number {
  return (a.data as Float32Array)[i]!
}

/**
 * Makes a venv of base (venvArgs: more `venv` options), pip-installs the package with its numpy
 * extra into it, and streams arrays with it through a Node server.
 */
async function installAndStream(t: Test, base: string, venvArgs: string[], numpyMajor: number): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'picklewire-pip-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const venv = join(dir, 'venv')
  const made = spawnSync(base, ['-m', 'venv', ...venvArgs, venv], { encoding: 'utf8', timeout: 120_000 })
  t.equal(made.status, 0, made.status === 0 ? `${base} -m venv ${venvArgs.join(' ')}` : `${base} -m venv failed:\n${made.stderr}`)
  const python = join(venv, 'bin', 'python')

  // pip builds the wheel in the package's folder: what it leaves there (build/, *.egg-info) goes
  // when the test ends, unless it was there before
  for (const leftover of ['build', 'picklewire.egg-info'].map((name) => join(PACKAGE_DIR, name))) {
    if (!existsSync(leftover)) t.teardown(() => rmSync(leftover, { recursive: true, force: true }))
  }
  const pip = spawnSync(python, ['-m', 'pip', 'install', '--disable-pip-version-check', '--no-index', '--find-links', WHEELS, `${PACKAGE_DIR}[numpy]`], {
    encoding: 'utf8', timeout: 300_000, cwd: dir,
  })
  t.equal(pip.status, 0, pip.status === 0 ? `pip install --no-index --find-links ${WHEELS} packages/transport/python[numpy]` : `pip install failed:\n${pip.stdout.split('\n').slice(-15).join('\n')}\n${pip.stderr}`)
  if (pip.status !== 0) return

  // What the wheel put into the venv: the package and its typing marker, none of the tests beside it.
  const show = spawnSync(python, ['-m', 'pip', 'show', '--files', 'picklewire'], { encoding: 'utf8', cwd: dir })
  const files = show.stdout.split('\n').map((l) => l.trim()).filter((l) => l.startsWith('picklewire/') && !l.includes('__pycache__'))
  t.same(files.sort(), ['picklewire/__init__.py', 'picklewire/py.typed', 'picklewire/ws.py'], 'the installed files are the package alone')
  const requires = /^Requires: (.*)$/m.exec(show.stdout)?.[1]?.split(', ').sort()
  t.same(requires, ['msgpack', 'websockets'], 'it requires websockets and msgpack')

  const received: NDArray[] = []
  const server = await listenPickleSocket({
    heartbeatInterval: 0,
    onRequest: (v) => {
      const a = (v as Map<string, unknown>).get('array') as NDArray
      let sum = 0
      for (let i = 0; i < a.size; i++) sum += float32At(a, i)
      return sum
    },
  })
  t.teardown(() => server.close())
  const serverErrors: unknown[] = []
  server.on('connection', (sock: PickleSocket) => {
    void (async () => {
      for await (const value of sock) {
        received.push((value as Map<string, unknown>).get('frame') as NDArray)
        const fortran = (value as Map<string, unknown>).get('fortran') as NDArray
        t.same([fortran.dtype.str, fortran.shape, fortran.order], ['<i8', [2, 3, 4], 'F'], 'Node sees the Fortran int64 array as numpy sent it')
        t.equal((value as Map<string, unknown>).get('scalar'), 2.5, 'a numpy float64 scalar loads as a number')
        await sock.send(value)
      }
    })().catch((err: unknown) => serverErrors.push(err))
  })

  const script = join(dir, 'client.py')
  writeFileSync(script, CLIENT)
  const client = await run(python, ['-W', 'error', script, server.url], dir, 120_000)
  t.equal(client.status, 0, client.status === 0 ? 'the Python program ran with -W error and exited 0' : `the Python program (python -W error) failed:\n${client.stderr}`)
  const out = JSON.parse(client.stdout.trim().split('\n').pop() || '{}')
  t.ok(out.module?.startsWith(venv), `picklewire.ws comes from the venv (${out.module})`)
  t.equal(Number(String(out.numpy).split('.')[0]), numpyMajor, `numpy ${out.numpy}`)
  t.same(out.echoes, [0, 1, 2], 'every echo came back equal: same types, dtypes, shapes and values')
  t.equal(out.node_sum, out.sum, 'Node summed the float32 frame to what numpy sums')
  t.same(out.flags, { fortran: true }, 'the Fortran array comes back Fortran-ordered')

  t.equal(received.length, 3, 'Node received three messages')
  for (const a of received) {
    t.same([a.dtype.str, a.shape], ['<f4', [480, 640]], 'a float32 480x640 frame')
    t.same([float32At(a, 0), float32At(a, 1), float32At(a, 640 * 479 + 639)], [0, 0.5, (480 * 640 - 1) * 0.5], 'its values are what Python made')
    t.equal(a.copied, false, 'a view over the frame ws received, not a copy')
  }
  t.same(serverErrors, [], 'the Node side saw no error')
}

t.test('python3: pip install into a fresh venv (numpy 2.x from the wheel folder), then numpy arrays to Node and back', { skip: skipWithoutPython(t) || (cannotRun(PYTHON) ?? false), timeout: 600_000 }, async (t) => {
  await installAndStream(t, PYTHON, [], 2)
})

t.test(`${NUMPY1_PYTHON}: pip install into a fresh venv that sees Debian's numpy 1.x, then numpy arrays to Node and back`, { skip: cannotRunNumpy1() ?? false, timeout: 600_000 }, async (t) => {
  await installAndStream(t, NUMPY1_PYTHON, ['--system-site-packages'], 1)
})
