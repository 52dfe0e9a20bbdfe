/**
 * Shared by the dask-*.test.ts files: a real Dask scheduler and workers on loopback (Debian's
 * python3-distributed, run by /usr/bin/python3 through dask_cluster.py), Python one-shots for
 * protocol interop, and waiting with a bound: no test ever hangs on a socket or a process.
 */
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { existsSync } from 'node:fs'
import { networkInterfaces } from 'node:os'
import { dirname, join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import type { Test } from 'tap'

/** Dask loads only with Debian's interpreter (python3-distributed); override with PICKLEWIRE_DASK_PYTHON. */
export const DASK_PYTHON = process.env.PICKLEWIRE_DASK_PYTHON ?? '/usr/bin/python3'
const LAUNCHER = join(dirname(fileURLToPath(import.meta.url)), 'dask_cluster.py')

/** Where scripts/dask-trixie.sh puts Debian trixie's distributed 2024.12.1 (override with PICKLEWIRE_DASK_TRIXIE). */
export const TRIXIE_DIR = process.env.PICKLEWIRE_DASK_TRIXIE ?? '/tmp/picklewire-dask-trixie'
/** trixie's distributed with tblib 3.1.0 from its .deb (the other trixie interpreter has tblib 3.2 from the wheel folder). */
export const TRIXIE_TBLIB31 = join(TRIXIE_DIR, 'tblib31', 'bin', 'python')

/** One Dask distributed installation the tests run against. */
export interface DaskEnv {
  /** Where it comes from: 'bookworm', 'trixie', or a name given in PICKLEWIRE_DASK_PYTHONS. */
  name: string
  python: string
  /** distributed.__version__ and tblib.__version__, read from the interpreter. */
  version: string
  tblib: string
}

/** Why python cannot run the Dask tests, or its versions. */
export function probe(python: string): { version: string; tblib: string } | string {
  const r = spawnSync(python, ['-c', 'import distributed, numpy, lz4, tblib; print(distributed.__version__, tblib.__version__)'], { encoding: 'utf8', cwd: '/', timeout: 30_000 })
  if (r.error) return `${python} cannot be started (${r.error.message})`
  if (r.status !== 0) {
    return `${python} cannot import distributed, numpy, lz4 and tblib (apt-get install -y python3-distributed python3-numpy python3-lz4): ${r.stderr.trim().split('\n').pop()}`
  }
  const [version = '', tblib = ''] = r.stdout.trim().split(' ')
  return { version, tblib }
}

/** Why the Dask tests cannot run here (with Debian's python3, the one every host has), or null. */
export function daskMissing(): string | null {
  const p = probe(DASK_PYTHON)
  return typeof p === 'string' ? p : null
}

/**
 * The Dask installations to test against: PICKLEWIRE_DASK_PYTHONS ("name=/path/python;..."),
 * else Debian's python3 (bookworm's 2022.12.1) and, when scripts/dask-trixie.sh has made it,
 * trixie's 2024.12.1 with tblib 3.2. Those that cannot import Dask are left out.
 */
export function daskEnvs(): DaskEnv[] {
  const listed = process.env.PICKLEWIRE_DASK_PYTHONS
  const candidates: [string, string][] = listed
    ? listed.split(';').filter(Boolean).map((item) => {
        const at = item.indexOf('=')
        return at > 0 ? [item.slice(0, at), item.slice(at + 1)] : [item, item]
      })
    : [['bookworm', DASK_PYTHON], ...(existsSync(join(TRIXIE_DIR, 'ok')) ? [['trixie', join(TRIXIE_DIR, 'tblib32', 'bin', 'python')] as [string, string]] : [])]
  const envs: DaskEnv[] = []
  for (const [name, python] of candidates) {
    const p = probe(python)
    if (typeof p !== 'string') envs.push({ name, python, ...p })
  }
  return envs
}

/**
 * Every Dask test runs in a network namespace of its own with loopback only (unshare -n, then
 * ip link set lo up): Dask's ws listener advertises the machine's address whatever --host says,
 * so outside such a namespace test traffic could leave loopback. The test file's process runs
 * itself again inside one and exits with its status; inside, this returns null. Returns why
 * no namespace can be made (not root, no unshare) when it cannot; PICKLEWIRE_DASK_NETNS=off
 * runs in the current namespace instead.
 */
export function enterLoopbackNamespace(): string | null {
  if (process.env.PICKLEWIRE_DASK_NETNS === 'inside' || process.env.PICKLEWIRE_DASK_NETNS === 'off') return null
  const can = spawnSync('unshare', ['-n', 'true'], { encoding: 'utf8', timeout: 10_000 })
  if (can.error || can.status !== 0) {
    return `cannot make a loopback-only network namespace (unshare -n: ${can.error?.message ?? can.stderr.trim()}); run as root, or set PICKLEWIRE_DASK_NETNS=off to run in this namespace`
  }
  // Bounded a little under tap's own timeout, and the namespace's process dies with this one,
  // so that a file tap times out leaves no Dask processes behind.
  const r = spawnSync('unshare', ['--kill-child', '-n', 'sh', '-c', 'ip link set lo up && exec "$0" "$@"', process.execPath, ...process.execArgv, ...process.argv.slice(1)], {
    stdio: 'inherit',
    env: { ...process.env, PICKLEWIRE_DASK_NETNS: 'inside' },
    timeout: 290_000,
    killSignal: 'SIGKILL',
  })
  process.exit(r.status ?? 1)
}

/**
 * The Dask installations a run must have, from PICKLEWIRE_REQUIRE_DASK ("bookworm,trixie": .ci/run
 * sets it, so that CI fails instead of skipping when one could not be set up). Empty elsewhere.
 */
export const REQUIRED_DASK: readonly string[] = (process.env.PICKLEWIRE_REQUIRE_DASK ?? '').split(',').map((s) => s.trim()).filter(Boolean)

/**
 * Skips a file's tests for a reason (no namespace, no Dask) where nothing is required, and
 * fails them where PICKLEWIRE_REQUIRE_DASK asks for Dask: a CI run must not pass by skipping.
 */
export function skipOrFail(t: Test, why: string): void {
  if (REQUIRED_DASK.length === 0) {
    t.plan(0, why)
    return
  }
  t.fail(`PICKLEWIRE_REQUIRE_DASK=${REQUIRED_DASK.join(',')}, but the Dask tests cannot run: ${why}`)
  t.end()
}

/** Runs a file's cluster tests, each given in turn, inside a loopback-only namespace; with no Dask here, plans none and says why. */
export async function withDask(t: Test, ...runs: (() => Promise<void>)[]): Promise<void> {
  const missing = enterLoopbackNamespace() ?? daskMissing()
  if (missing) {
    skipOrFail(t, missing)
    return
  }
  for (const run of runs) await run()
}

/**
 * Runs a file's cluster tests against every Dask installation of daskEnvs(), each as a subtest
 * named after its distributed version, inside a loopback-only namespace.
 */
export async function forEachDask(t: Test, ...runs: ((t: Test, env: DaskEnv) => Promise<void>)[]): Promise<void> {
  const missing = enterLoopbackNamespace()
  const envs = missing ? [] : daskEnvs()
  if (missing || envs.length === 0) {
    skipOrFail(t, missing ?? daskMissing() ?? 'no Dask installation found')
    return
  }
  const absent = REQUIRED_DASK.filter((name) => !envs.some((e) => e.name === name))
  if (absent.length > 0) {
    t.fail(`PICKLEWIRE_REQUIRE_DASK asks for ${absent.join(', ')}, which could not be found or imported (found: ${envs.map((e) => e.name).join(', ')}); for trixie run scripts/dask-trixie.sh`)
  }
  if (process.env.PICKLEWIRE_DASK_NETNS === 'inside') {
    const names = Object.keys(networkInterfaces())
    t.same(names, ['lo'], 'the tests run in a network namespace with loopback only')
  }
  for (const env of envs) {
    await t.test(`distributed ${env.version} (${env.name}, tblib ${env.tblib})`, async (t) => {
      for (const run of runs) await run(t, env)
    })
  }
}

/** Rejects with a clear message when p takes longer than ms. */
export function within<T>(ms: number, p: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout
  const limit = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} took more than ${ms} ms`)), ms)
  })
  return Promise.race([p, limit]).finally(() => clearTimeout(timer))
}

export interface ClusterOptions {
  protocol?: 'tcp' | 'ws'
  /** Workers to start (0: a scheduler alone). Default 1. */
  workers?: number
  nthreads?: number
  /** Start workers only, for this scheduler. */
  scheduler?: string
  /** distributed.comm.compression of the Python side. Default 'auto' (lz4). */
  compression?: string
  /** The interpreter with Dask. Default DASK_PYTHON. */
  python?: string
  /** The address the scheduler and workers listen on. Default 127.0.0.1. */
  host?: string
  /** The scheduler's port. Default: any free one. */
  port?: number
}

/** A scheduler and/or workers in one Python process, stopped by stop() or kill(). */
export class DaskCluster {
  readonly proc: ChildProcess
  readonly log: string[] = []
  readonly exited: Promise<unknown>
  scheduler = ''
  workers: string[] = []

  constructor(options: ClusterOptions) {
    const args = [LAUNCHER, '--protocol', options.protocol ?? 'tcp', '--workers', String(options.workers ?? 1), '--nthreads', String(options.nthreads ?? 2)]
    if (options.scheduler) args.push('--scheduler', options.scheduler)
    if (options.compression) args.push('--compression', options.compression)
    if (options.host) args.push('--host', options.host)
    if (options.port) args.push('--port', String(options.port))
    // cwd '/': distributed must not see a directory named like one of its modules.
    this.proc = spawn(options.python ?? DASK_PYTHON, args, { stdio: ['pipe', 'pipe', 'pipe'], cwd: '/' })
    this.exited = once(this.proc, 'exit')
    createInterface({ input: this.proc.stderr! }).on('line', (line) => {
      this.log.push(line)
      if (this.log.length > 400) this.log.shift()
    })
  }

  async ready(ms = 30_000): Promise<this> {
    const line = await within(ms, new Promise<string>((resolve, reject) => {
      createInterface({ input: this.proc.stdout! }).once('line', resolve)
      this.proc.once('exit', (code) => reject(new Error(`dask_cluster.py exited (${code}) before it was ready:\n${this.log.slice(-30).join('\n')}`)))
    }), 'starting the Dask cluster')
    const info = JSON.parse(line) as { scheduler: string; workers: string[] }
    this.scheduler = info.scheduler
    this.workers = info.workers
    return this
  }

  get running(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null
  }

  /** Ends the process: stdin closed (it exits by itself), SIGKILL after ms. */
  async stop(ms = 5000): Promise<void> {
    if (!this.running) return
    this.proc.stdin!.end()
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), ms)
    await this.exited
    clearTimeout(timer)
  }

  /** Kills the process at once (a scheduler that goes away). */
  async kill(): Promise<void> {
    if (!this.running) return
    this.proc.kill('SIGKILL')
    await within(5000, this.exited, 'killing the Dask process')
  }
}

/** Starts a cluster, stopped when the test ends. */
export async function startCluster(t: { teardown(fn: () => unknown): void }, options: ClusterOptions = {}): Promise<DaskCluster> {
  const c = new DaskCluster(options)
  t.teardown(() => c.stop())
  return c.ready()
}

/** Runs a Python script with Dask's interpreter; resolves with its stdout. */
export function runDaskPython(script: string, args: string[] = [], input?: Uint8Array, ms = 60_000): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const child = execFile(DASK_PYTHON, ['-c', script, ...args], { cwd: '/', encoding: 'buffer', maxBuffer: 1 << 30, timeout: ms }, (err, stdout, stderr) => {
      if (err) reject(new Error(`python failed: ${err.message}\n${stderr.toString().slice(-4000)}`))
      else resolve(stdout)
    })
    if (input) child.stdin!.end(input)
    else child.stdin!.end()
  })
}

/** Frames written as u32 count, then u32 length + bytes per frame (what the scripts here print). */
export function encodeFrameList(frames: readonly Uint8Array[]): Buffer {
  const parts: Buffer[] = [Buffer.from(Uint32Array.of(frames.length).buffer)]
  for (const f of frames) parts.push(Buffer.from(Uint32Array.of(f.byteLength).buffer), Buffer.from(f.buffer, f.byteOffset, f.byteLength))
  return Buffer.concat(parts)
}

/** Reads lists of frames written one after the other in that format; each frame is copied to its own aligned buffer. */
export function decodeFrameLists(data: Buffer): Uint8Array[][] {
  const out: Uint8Array[][] = []
  let at = 0
  while (at < data.length) {
    const n = data.readUInt32LE(at)
    at += 4
    const frames: Uint8Array[] = []
    for (let i = 0; i < n; i++) {
      const len = data.readUInt32LE(at)
      frames.push(new Uint8Array(data.subarray(at + 4, at + 4 + len)))
      at += 4 + len
    }
    out.push(frames)
  }
  return out
}

/** Python helpers the interop scripts start with: write frame lists to stdout, read them from stdin. */
export const PY_FRAMES = `
import struct, sys
def write_frames(frames):
    out = sys.stdout.buffer
    out.write(struct.pack('<I', len(frames)))
    for f in frames:
        f = memoryview(f).cast('B')
        out.write(struct.pack('<I', f.nbytes)); out.write(f)
def read_frame_lists(data):
    data = memoryview(data); at = 0; lists = []
    while at < len(data):
        (n,) = struct.unpack_from('<I', data, at); at += 4; frames = []
        for _ in range(n):
            (k,) = struct.unpack_from('<I', data, at); frames.append(bytearray(data[at + 4:at + 4 + k])); at += 4 + k
        lists.append(frames)
    return lists
`
