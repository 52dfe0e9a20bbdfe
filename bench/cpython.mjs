// The JavaScript end of bench/cpython.py: one python3 process for the whole run, asked for
// one fixture or one timing at a time (one JSON line each way). While JavaScript is being
// measured, Python waits on its stdin and uses no CPU.

import { spawn } from 'node:child_process'
import { dirname, join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))

/** The CPython to compare with: python3 on PATH, or PICKLEWIRE_PYTHON. */
export const PYTHON = process.env.PICKLEWIRE_PYTHON ?? 'python3'

export class CPython {
  #proc
  #lines
  #exited = null

  constructor() {
    this.#proc = spawn(PYTHON, [join(here, 'cpython.py')], { stdio: ['pipe', 'pipe', 'inherit'] })
    this.#proc.on('error', (err) => { this.#exited = `cannot run ${PYTHON}: ${err.message}` })
    this.#proc.on('exit', (code) => { this.#exited ??= `${PYTHON} bench/cpython.py exited with status ${code}` })
    this.#lines = createInterface({ input: this.#proc.stdout })[Symbol.asyncIterator]()
  }

  /** Sends one request and waits for its answer; an error answer throws. */
  async request(req) {
    if (this.#exited) throw new Error(this.#exited)
    this.#proc.stdin.write(`${JSON.stringify(req)}\n`)
    const next = await this.#lines.next()
    if (next.done) throw new Error(this.#exited ?? `${PYTHON} bench/cpython.py closed its output`)
    const res = JSON.parse(next.value)
    if (res.error) throw new Error(`bench/cpython.py: ${res.error}`)
    return res
  }

  info() {
    return this.request({ cmd: 'info' })
  }

  /** Builds the workload in Python and writes its pickle (protocol 5 unless the workload says) into dir. */
  fixture(dir, { name, kind, n, size, protocol, oob }) {
    return this.request({ cmd: 'fixture', dir, workload: { name, kind, n, size, protocol, oob } })
  }

  /** Times pickle.loads (or pickle.dumps; with fast, a Pickler with fast = True) on the last fixture made. */
  time(what, name, timing, { fast = false } = {}) {
    return this.request({ cmd: what, name, timing, fast })
  }

  close() {
    this.#proc.stdin.end()
  }
}
