/**
 * Shared by the dask-*.test.ts files: a real Dask scheduler and workers on loopback (Debian's
 * python3-distributed, run by /usr/bin/python3 through dask_cluster.py), Python one-shots for
 * protocol interop, and waiting with a bound: no test ever hangs on a socket or a process.
 */
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { dirname, join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import type { Test } from 'tap'

/** Dask loads only with Debian's interpreter (python3-distributed); override with PICKLEWIRE_DASK_PYTHON. */
export const DASK_PYTHON = process.env.PICKLEWIRE_DASK_PYTHON ?? '/usr/bin/python3'
const LAUNCHER = join(dirname(fileURLToPath(import.meta.url)), 'dask_cluster.py')

/** Why the Dask tests cannot run here, or null. */
export function daskMissing(): string | null {
  const r = spawnSync(DASK_PYTHON, ['-c', 'import distributed, numpy, lz4'], { encoding: 'utf8', cwd: '/', timeout: 30_000 })
  if (r.error) return `${DASK_PYTHON} cannot be started (${r.error.message})`
  if (r.status !== 0) {
    return `${DASK_PYTHON} cannot import distributed, numpy and lz4 (apt-get install -y python3-distributed python3-numpy python3-lz4): ${r.stderr.trim().split('\n').pop()}`
  }
  return null
}

/** Runs a file's cluster tests, each given in turn; with no Dask here, plans none and says why. */
export async function withDask(t: Test, ...runs: (() => Promise<void>)[]): Promise<void> {
  const missing = daskMissing()
  if (missing) {
    t.plan(0, missing)
    return
  }
  for (const run of runs) await run()
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
    // cwd '/': distributed must not see a directory named like one of its modules.
    this.proc = spawn(DASK_PYTHON, args, { stdio: ['pipe', 'pipe', 'pipe'], cwd: '/' })
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
