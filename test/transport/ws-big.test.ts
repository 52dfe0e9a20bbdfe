/**
 * Big tensors between Node and a real python3 over the WebSocket carrier, both directions:
 *
 * - one float16 array of 5 GiB (more than a Node Uint8Array can be), over each path in turn:
 *   frames (protocol version 3 chunks; sameHost: false and same_host=False) and the same-host
 *   path (sameHost: true and same_host=True: the sender writes it into a file of its own, the
 *   receiver reads or maps it). It arrives as a Uint16Array over one ArrayBuffer of 5 GiB in
 *   Node and as a numpy array in Python, checked at sampled indices, at both sides of every
 *   chunk boundary and at both ends against the formula it was generated from (element i is
 *   i % 65521), with progress events in order ending at the total. Both sides' counters show
 *   which path the buffer took; after the same-host variant, Node holds no picklewire file
 *   open and no picklewire file of either process is left under /dev/shm;
 * - 8 arrays of 300 MiB (frames), every element checked, the memory not growing across them;
 * - a peer killed (SIGKILL) mid-buffer: a TransportError CLOSED on the side that survives, and
 *   nothing of the half message delivered;
 * - a send of 1 GiB cancelled mid-way on each side (task cancellation in Python, an AbortSignal
 *   in Node): both sides send and receive the next messages.
 *
 * The 5 GiB tests over frames need about 11 GiB of memory at their peak (the sender's array and
 * the receiver's ArrayBuffer or bytearray: 5.3 GiB in Node and 5.1 GiB in Python measured) and
 * 40-150 s each on the development VM; over the same-host path the sender's file adds 5 GiB of
 * shared memory (a memfd from Python, an unlinked file under /dev/shm from Node: 15.5 GiB of the
 * machine in use at the peak Python -> Node measured) and each takes 30-45 s, most of it Node
 * reading the file into fresh memory (one page fault per 4 KiB) or writing it, in one call of
 * the event loop: Node answers no ping for up to 31 s meanwhile (the peer's heartbeat timeout
 * is 20 s; it holds only because the peer's first ping comes late in that time). They run one at
 * a time, each after a collection of the last one's memory, and only with PICKLEWIRE_BIG=1;
 * the rest runs always (75 s on a quiet machine).
 * The Python side is test/transport/ws_big_peer.py.
 */
import { readFileSync, readdirSync, readlinkSync, existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import v8 from 'node:v8'
import vm from 'node:vm'
import t, { type Test } from 'tap'
import { NDArray } from '@picklewire/codec'
import { TransportError, listenPickleSocket, type PickleSocket, type ProgressInfo } from '@picklewire/transport'
import { PythonPeer, pythonMissing, until, within } from './ws-helpers.js'

const missing = pythonMissing(t)
const BIG = process.env.PICKLEWIRE_BIG === '1'
// Several GiB cross loopback here, on a machine that may be busy with other tests.
t.setTimeout(BIG ? 1_800_000 : 600_000)
const SCRIPT = join(dirname(fileURLToPath(import.meta.url)), 'ws_big_peer.py')

const MiB = 2 ** 20
const GiB = 2 ** 30
const PERIOD = 65521
const CHUNK = MiB
const LIMITS = { maxBufferBytes: 8 * GiB, maxMessageBytes: 8 * GiB }

// A collection between tests, so that one test's 5 GiB is gone before the next allocates its own.
v8.setFlagsFromString('--expose-gc')
const gc = vm.runInNewContext('gc') as () => void

/** The machine's shared memory in use (/proc/meminfo Shmem: files under /dev/shm and memfds), or 0 where it cannot be read. */
function shmemBytes(): number {
  try {
    const m = /^Shmem:\s+(\d+) kB$/m.exec(readFileSync('/proc/meminfo', 'latin1'))
    return m === null ? 0 : Number(m[1]) * 1024
  } catch {
    return 0
  }
}

/**
 * The peak of process.memoryUsage() and of the machine's shared memory while it runs, sampled
 * every 100 ms, and the longest gap between samples: how long Node's event loop was busy at once.
 */
class MemoryWatch {
  rss = 0
  arrayBuffers = 0
  readonly shmemStart = shmemBytes()
  shmem = 0
  longestGap = 0
  #last = Date.now()
  readonly #timer: NodeJS.Timeout
  constructor() {
    this.sample()
    this.#timer = setInterval(() => this.sample(), 100).unref()
  }

  sample(): void {
    const m = process.memoryUsage()
    this.rss = Math.max(this.rss, m.rss)
    this.arrayBuffers = Math.max(this.arrayBuffers, m.arrayBuffers)
    this.shmem = Math.max(this.shmem, shmemBytes())
    const now = Date.now()
    this.longestGap = Math.max(this.longestGap, now - this.#last)
    this.#last = now
  }

  stop(): string {
    clearInterval(this.#timer)
    this.sample()
    return `Node peak rss ${gib(this.rss)}, arrayBuffers ${gib(this.arrayBuffers)}; shared memory (Shmem) peak ${gib(this.shmem - this.shmemStart)} over its start; Node's event loop busy for up to ${(this.longestGap / 1000).toFixed(1)} s at once`
  }
}

/** Where a same-host sender makes its files: unlinked at once, they never stay listed. */
const SHM_DIR = '/dev/shm'

/** The picklewire names under /dev/shm. */
function picklewireFiles(): string[] {
  return existsSync(SHM_DIR) ? readdirSync(SHM_DIR).filter((n) => n.startsWith('picklewire')) : []
}

/** Names under /dev/shm that the given processes made (picklewire-<pid>-...) and that were not there before. */
function leftBy(before: ReadonlySet<string>, pids: readonly number[]): string[] {
  return picklewireFiles().filter((n) => !before.has(n) && pids.some((pid) => n.startsWith(`picklewire-${pid}-`)))
}

/** What this process's open descriptors of picklewire files (its own or a peer's) link to. */
function openPicklewireFiles(): string[] {
  const links: string[] = []
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      const link = readlinkSync(`/proc/self/fd/${fd}`)
      if (/\/picklewire-|^\/memfd:picklewire/.test(link)) links.push(link)
    } catch {
      // closed meanwhile (the readdir's own descriptor)
    }
  }
  return links
}

/** The two paths of a 5 GiB buffer: frames over the socket, or a file of the sending process. */
const PATHS = [
  { name: 'frames', sameHost: false, args: [] as string[] },
  { name: 'the same-host path', sameHost: true, args: ['--same-host'] },
] as const

const gib = (n: number): string => `${(n / GiB).toFixed(2)} GiB`

/** A Node server with limits that admit the sizes here, buffers as frames unless sameHost; its connections in order. */
async function server(t: Test, sameHost = false): Promise<{ url: string; next: () => Promise<PickleSocket> }> {
  const s = await listenPickleSocket({ limits: LIMITS, sameHost, chunkBytes: CHUNK })
  const socks: PickleSocket[] = []
  const waiting: ((s: PickleSocket) => void)[] = []
  s.on('connection', (sock) => {
    const w = waiting.shift()
    if (w) w(sock)
    else socks.push(sock)
  })
  t.teardown(async () => {
    for (const sock of socks) sock.terminate()
    await s.close()
  })
  const next = (): Promise<PickleSocket> => {
    const sock = socks.shift()
    return sock ? Promise.resolve(sock) : within(30_000, new Promise<PickleSocket>((r) => waiting.push(r)), 'the Python client to connect')
  }
  return { url: s.url, next }
}

function python(t: Test, url: string, command: string, ...args: string[]): PythonPeer {
  const peer = new PythonPeer([url, command, '--chunk-bytes', String(CHUNK), ...args], SCRIPT)
  t.teardown(() => {
    peer.kill()
    if (peer.stderr.length > 0) t.comment(`python stderr:\n${peer.stderr.join('\n')}`)
  })
  return peer
}

/** A float16 array of nbytes bytes whose element i (as uint16) is i % PERIOD: one period, then doubling copies. */
function periodic(nbytes: number): Uint16Array {
  const data = new Uint16Array(new ArrayBuffer(nbytes))
  const first = Math.min(PERIOD, data.length)
  for (let i = 0; i < first; i++) data[i] = i
  for (let have = first; have < data.length; have *= 2) data.copyWithin(have, 0, Math.min(have, data.length - have))
  return data
}

/** Checks data against the formula at a stride, both ends, and both sides of every chunk boundary. */
function checkPeriodic(data: Uint16Array): { checked: number; firstBad: number | null } {
  let checked = 0
  let firstBad: number | null = null
  const at = (i: number): void => {
    checked++
    if (firstBad === null && data[i] !== i % PERIOD) firstBad = i
  }
  const n = data.length
  for (let i = 0; i < n; i += 4099) at(i)
  for (let i = 0; i < Math.min(n, 65536); i++) at(i)
  for (let i = Math.max(0, n - 65536); i < n; i++) at(i)
  for (let edge = CHUNK / 2; edge < n; edge += CHUNK / 2) {
    at(edge - 1)
    at(edge)
  }
  return { checked, firstBad }
}

/** Progress of one message: bytes never going back, the last event at the total. */
function checkProgress(t: Test, events: readonly ProgressInfo[], total: number, what: string): void {
  t.ok(events.length > 0, `${what}: progress events`)
  let ordered = true
  for (let i = 1; i < events.length; i++) if (events[i]!.bytes < events[i - 1]!.bytes) ordered = false
  t.ok(ordered, `${what}: ${events.length} progress events in order`)
  const last = events[events.length - 1]!
  t.equal(last.total, total, `${what}: the total is the message's bytes`)
  t.equal(last.bytes, total, `${what}: the last event is at the total`)
}

function many(k: number, nbytes: number): Float32Array {
  const a = new Float32Array(nbytes / 4)
  for (let i = 0; i < a.length; i++) a[i] = k + (i % 1009)
  return a
}

function sameAsMany(a: unknown, k: number, nbytes: number): boolean {
  if (!(a instanceof NDArray) || !(a.data instanceof Float32Array) || a.nbytes !== nbytes) return false
  const d = a.data
  for (let i = 0; i < d.length; i++) if (d[i] !== k + (i % 1009)) return false
  return true
}

const BIG_SKIP = BIG ? false : 'set PICKLEWIRE_BIG=1 (5 GiB each way over each path, up to about 15 GiB of memory at the peak)'

for (const path of PATHS) {
  /** Buffers through files: 1 with the same-host path, 0 over frames. */
  const filed = path.sameHost ? 1 : 0

  t.test(`Python -> Node: one float16 array of 5 GiB over ${path.name}, sampled checks, progress in order`, { skip: missing ?? BIG_SKIP }, async (t) => {
    gc()
    const watch = new MemoryWatch()
    const shmBefore = new Set(picklewireFiles())
    const size = 5 * GiB
    const { url, next } = await server(t, path.sameHost)
    const started = Date.now()
    const peer = python(t, url, 'send-big', '--bytes', String(size), ...path.args)
    const sock = await next()
    const events: ProgressInfo[] = []
    sock.on('progress', (p) => events.push(p))
    const value = await within(300_000, sock.receive(), 'the 5 GiB array')
    const received = Date.now()
    t.ok(value instanceof NDArray, 'an NDArray')
    const a = value as NDArray
    t.equal(a.dtype.name, 'float16')
    t.same(a.shape, [size / 2])
    const data = a.data as Uint16Array
    t.ok(data instanceof Uint16Array, 'over a Uint16Array')
    t.ok(data.buffer instanceof ArrayBuffer && data.buffer.byteLength === size && data.byteOffset === 0, 'the whole of one ArrayBuffer of 5 GiB')
    const check = checkPeriodic(data)
    t.equal(check.firstBad, null, `${check.checked} sampled elements match`)
    checkProgress(t, events, events[events.length - 1]?.total ?? -1, 'Node receive')
    t.ok(events[events.length - 1]!.total > size, 'the total counts the 5 GiB buffer and the pickle')
    const st = sock.stats()
    t.equal(st.buffersSameHostReceived, filed, `Node: ${filed} buffer through a file`)
    t.equal(st.bytesSameHostReceived, filed * size, `Node: ${filed * size} bytes through a file`)
    t.ok(path.sameHost ? st.bytesReceived < MiB : st.bytesReceived > size, `Node: ${st.bytesReceived} bytes of frames`)
    await sock.send({ ok: check.firstBad === null, checked: check.checked })
    const report = await peer.next(60_000)
    t.equal(await peer.exit(), 0, JSON.stringify(report))
    t.match(report, { verdict: { ok: true }, ordered: true }, 'Python: its send progress in order, Node\'s verdict')
    t.match(report, { same_host: { buffers_sent: filed, bytes_sent: filed * size } }, `Python: ${filed} buffer sent through a file`)
    await within(30_000, sock.closed, 'the connection to close')
    t.same(openPicklewireFiles(), [], 'Node holds no picklewire file open')
    t.same(leftBy(shmBefore, [process.pid, peer.proc.pid!]), [], `no picklewire file of Node or Python is left under ${SHM_DIR}`)
    t.comment(`5 GiB Python -> Node over ${path.name}: received in ${((received - started) / 1000).toFixed(1)} s (Python made it in ${report.make_s} s, sent in ${report.send_s} s); ${watch.stop()}; Python max rss ${gib(report.max_rss)}`)
  })

  t.test(`Node -> Python: one float16 array of 5 GiB over ${path.name}, sampled checks, progress in order`, { skip: missing ?? BIG_SKIP }, async (t) => {
    gc()
    const watch = new MemoryWatch()
    const shmBefore = new Set(picklewireFiles())
    const size = 5 * GiB
    // Made before Python connects: seconds of a busy event loop would miss its heartbeat pings.
    let made = Date.now()
    let data: Uint16Array | null = periodic(size)
    made = Date.now() - made
    const { url, next } = await server(t, path.sameHost)
    const peer = python(t, url, 'recv-big', '--bytes', String(size), ...path.args)
    const sock = await next()
    t.equal(await within(30_000, sock.receive(), 'ready'), 'ready')
    if (path.sameHost) await until('Python to accept Node\'s proof', () => sock.sameHost, 10_000)
    else t.equal(sock.sameHost, false, 'Node\'s buffers go as frames')
    const events: ProgressInfo[] = []
    const started = Date.now()
    await within(300_000, sock.send(new NDArray(data, { dtype: 'f2' }), { onProgress: (p) => events.push(p) }), 'the send of 5 GiB')
    const sent = Date.now()
    data = null
    const report = plain(await within(300_000, sock.receive(), 'Python\'s report'))
    // send() resolves once ws has every frame; the progress of the last ones follows as ws writes
    // them, so it is checked once Python has the whole message.
    checkProgress(t, events, events[events.length - 1]?.total ?? -1, 'Node send')
    t.ok(events[events.length - 1]!.total > size)
    t.match(report, { check: { ok: true, n: size / 2 }, ordered: true, nbytes: size }, 'Python checked the samples; its receive progress in order')
    t.match(report, { same_host: { buffers_received: filed, bytes_received: filed * size } }, `Python: ${filed} buffer received through a file`)
    const st = sock.stats()
    t.equal(st.buffersSameHostSent, filed, `Node: ${filed} buffer sent through a file`)
    t.equal(st.bytesSameHostSent, filed * size, `Node: ${filed * size} bytes through a file`)
    t.ok(path.sameHost ? st.bytesSent < MiB : st.bytesSent > size, `Node: ${st.bytesSent} bytes of frames`)
    t.equal(await peer.exit(), 0)
    await within(30_000, sock.closed, 'the connection to close')
    t.same(openPicklewireFiles(), [], 'Node holds no picklewire file open')
    t.same(leftBy(shmBefore, [process.pid, peer.proc.pid!]), [], `no picklewire file of Node or Python is left under ${SHM_DIR}`)
    t.comment(`5 GiB Node -> Python over ${path.name}: made in ${(made / 1000).toFixed(1)} s, sent in ${((sent - started) / 1000).toFixed(1)} s (Python received in ${report.recv_s} s); ${watch.stop()}; Python max rss ${gib(report.max_rss)}`)
  })
}

const MANY = 8
const MANY_BYTES = 300 * MiB
/** How far the memory after the last array may be above its lowest after any: two arrays (keeping each would be seven). */
const GROWTH = 2 * MANY_BYTES

/** Memory after each array: not growing with them. */
const steady = (rss: readonly number[]): boolean => rss[rss.length - 1]! - Math.min(...rss) < GROWTH

/** A Python dict (a Map here, nested ones too) as a plain object. */
function plain(v: unknown): any {
  if (v instanceof Map) return Object.fromEntries([...v].map(([k, x]) => [k, plain(x)]))
  if (Array.isArray(v)) return v.map(plain)
  return v
}

t.test(`Python -> Node: ${MANY} arrays of 300 MiB, every element checked, memory not growing`, { skip: missing ?? false }, async (t) => {
  gc()
  const watch = new MemoryWatch()
  const { url, next } = await server(t)
  const peer = python(t, url, 'send-many', '--bytes', String(MANY_BYTES), '--count', String(MANY))
  const sock = await next()
  const rss: number[] = []
  let matched = 0
  for (let k = 0; k < MANY; k++) {
    const v = await within(120_000, sock.receive(), `array ${k}`)
    if (sameAsMany(v, k, MANY_BYTES)) matched++
    gc()
    rss.push(process.memoryUsage().rss)
  }
  t.equal(matched, MANY, 'every array, every element')
  t.ok(steady(rss), `Node rss after each: ${rss.map(gib).join(', ')}`)
  await sock.send('thanks')
  const report = await peer.next(60_000)
  t.equal(await peer.exit(), 0)
  const py = report.rss_after as number[]
  t.ok(steady(py), `Python rss after each send: ${py.map(gib).join(', ')}`)
  t.comment(`${watch.stop()}; Python max rss ${gib(report.max_rss)}`)
})

t.test(`Node -> Python: ${MANY} arrays of 300 MiB, every element checked, memory not growing`, { skip: missing ?? false }, async (t) => {
  gc()
  const watch = new MemoryWatch()
  const { url, next } = await server(t)
  const peer = python(t, url, 'recv-many', '--bytes', String(MANY_BYTES), '--count', String(MANY))
  const sock = await next()
  t.equal(await within(30_000, sock.receive(), 'ready'), 'ready')
  const rss: number[] = []
  for (let k = 0; k < MANY; k++) {
    await within(120_000, sock.send(many(k, MANY_BYTES)), `array ${k}`)
    // One at a time: Python's memory after each is what it keeps, not what it has queued.
    t.equal(await within(120_000, sock.receive(), `Python's word on array ${k}`), `checked ${k}`)
    gc()
    rss.push(process.memoryUsage().rss)
  }
  const report = plain(await within(120_000, sock.receive(), 'Python\'s report'))
  t.equal(report.matched, MANY, 'Python: every array, every element')
  t.ok(steady(rss), `Node rss after each send: ${rss.map(gib).join(', ')}`)
  const py = report.rss_after as number[]
  t.ok(steady(py), `Python rss after each: ${py.map(gib).join(', ')}`)
  t.equal(await peer.exit(), 0)
  t.comment(`${watch.stop()}; Python max rss ${gib(report.max_rss)}`)
})

t.test('Python killed mid-buffer while sending 1 GiB: Node\'s receive fails with TransportError CLOSED, nothing delivered', { skip: missing ?? false }, async (t) => {
  gc()
  const { url, next } = await server(t)
  const peer = python(t, url, 'send-killed', '--bytes', String(GiB))
  const sock = await next()
  const events: ProgressInfo[] = []
  sock.on('progress', (p) => events.push(p))
  const told = await peer.next(60_000)
  t.ok(told.sending > 0, 'Python has sent part of the buffer')
  peer.kill('SIGKILL')
  // A value here would be the half message: receive() must fail instead.
  const err = await within(30_000, sock.receive().then((v) => v, (e: unknown) => e), 'the receive to fail')
  t.ok(err instanceof TransportError, `a TransportError: ${String(err)}`)
  t.equal((err as TransportError).code, 'CLOSED')
  t.match((err as Error).message, /message 1|closed|ended/i, 'the message says what was cut off')
  t.equal(sock.stats().messagesReceived, 0, 'nothing of the half message delivered')
  t.ok(events.some((p) => p.buffer === 0 && p.bufferBytes < p.bufferTotal), 'part of the buffer had arrived')
})

t.test('Python killed mid-buffer while Node sends 1 GiB: Node\'s send fails with TransportError CLOSED', { skip: missing ?? false }, async (t) => {
  gc()
  const { url, next } = await server(t)
  const peer = python(t, url, 'recv-killed', '--bytes', String(GiB))
  const sock = await next()
  t.equal(await within(30_000, sock.receive(), 'ready'), 'ready')
  const sending = sock.send(new NDArray(new Float32Array(GiB / 4))).then(() => null, (e: unknown) => e)
  const told = await peer.next(60_000)
  t.ok(told.receiving > 0, 'Python has received part of the buffer')
  peer.kill('SIGKILL')
  const err = await within(60_000, sending, 'the send to fail')
  t.ok(err instanceof TransportError, `a TransportError: ${String(err)}`)
  t.equal((err as TransportError).code, 'CLOSED')
  t.equal(sock.stats().messagesSent, 0, 'the message does not count as sent')
  const [code] = await within(10_000, peer.exited.then((c) => [c]), 'python to end')
  t.equal(code, null, 'python ended by the signal, before it had the whole message')
})

t.test('a send of 1 GiB cancelled mid-way on each side: both sides send and receive the next messages', { skip: missing ?? false }, async (t) => {
  gc()
  const { url, next } = await server(t)
  const peer = python(t, url, 'cancel', '--bytes', String(GiB))
  const sock = await next()
  const events: ProgressInfo[] = []
  sock.on('progress', (p) => events.push(p))
  t.equal(await within(120_000, sock.receive(), 'Python\'s next message'), 'python next', 'the first value after Python\'s cancelled send')
  t.equal(sock.stats().messagesCancelledByPeer, 1, 'Node heard the cancel frame')
  t.ok(events.some((p) => p.id === 1 && p.buffer === 0 && p.bufferBytes >= GiB / 4), 'a quarter of the cancelled buffer had arrived')

  const ac = new AbortController()
  const err = await sock.send(new NDArray(new Float32Array(GiB / 4)), {
    signal: ac.signal,
    onProgress: (p) => { if (p.buffer === 0 && p.bufferBytes >= GiB / 4) ac.abort(new Error('stop at a quarter')) },
  }).then(() => null, (e: unknown) => e)
  t.match(err, { message: 'stop at a quarter' }, 'the send rejects with the signal\'s reason')
  await sock.send('node next')
  t.equal(await within(60_000, sock.receive(), 'Python\'s answer'), 'python after')
  await sock.send('bye')
  const report = await peer.next(60_000)
  t.equal(await peer.exit(), 0, JSON.stringify(report))
  t.match(report, { cancelled: true, first: 'node next', messages_cancelled: 1, cancelled_by_peer: 1 }, 'Python cancelled its send, heard Node\'s cancel, and got "node next" first')
  t.equal(sock.stats().messagesCancelled, 1)
})

