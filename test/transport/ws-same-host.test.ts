/**
 * The same-host path of protocol version 3 (docs/wire-protocol.md section 10): buffers of at
 * least sameHostMinBytes go through files of the sender and the WebSocket carries their place,
 * Node to Node and with a real python3 both ways, values checked; small buffers, sameHost false
 * on either side and a peer in another pid namespace go as frames; HMAC covers the files' bytes
 * (a region changed after it was named fails the MAC); hostile same-host frames and places fail
 * the connection with 4400 naming the fault and deliver nothing; a Python sender killed after
 * naming a file is a clear error; no picklewire file is left under /dev/shm.
 */
import { spawn, spawnSync } from 'node:child_process'
import { once } from 'node:events'
import { closeSync, existsSync, openSync, readSync, readdirSync, readlinkSync, unlinkSync, writeSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import t, { type Test } from 'tap'
import { NDArray } from '@picklewire/codec'
import { TransportError, WebSocket, connectPickleSocket, listenPickleSocket, type PickleSocket } from '@picklewire/transport'
import { encodeWireHeader, subprotocolOf, type WireHeader } from '../../packages/transport/dist/ws/wire.js'
import { MessageReceiver } from '../../packages/transport/dist/ws/receiver.js'
import { placesOf, type BufferPlace, type SameHostReader } from '../../packages/transport/dist/ws/same-host-frames.js'
import { newStats } from '../../packages/transport/dist/ws/stats.js'
import { resolveLimits } from '../../packages/transport/dist/limits.js'
import { PYTHON } from '../helpers/python.js'
import { PYTHON_DIR, PythonPeer, closeOf, collect, pythonEchoServer, pythonMissing, dataOf, pair, until, within } from './ws-helpers.js'

const HERE = dirname(fileURLToPath(import.meta.url))
const MiB = 2 ** 20
const linux = process.platform === 'linux' && existsSync('/proc/self/fd')

function shmFiles(): string[] {
  return existsSync('/dev/shm') ? readdirSync('/dev/shm').filter((n) => n.startsWith('picklewire')).sort() : []
}

const before = shmFiles()

/** A float32 array of n elements, element i = i (exact up to 2^24) or i mod 2^24 beyond. */
function ramp(n: number): Float32Array {
  const a = new Float32Array(n)
  for (let i = 0; i < n; i++) a[i] = i & 0xffffff
  return a
}

/** Sampled check of a ramp: every 4099th element, and the last few. */
function isRamp(a: Float32Array, n: number): boolean {
  if (a.length !== n) return false
  for (let i = 0; i < n; i += 4099) if (a[i] !== (i & 0xffffff)) return false
  for (let i = Math.max(0, n - 5); i < n; i++) if (a[i] !== (i & 0xffffff)) return false
  return true
}

/** Echoes everything b receives back to a. */
function echo(b: PickleSocket): void {
  void (async () => {
    try {
      for await (const v of b) await b.send(v)
    } catch {
      // the test looks at the client
    }
  })()
}

t.test('options: sameHost a boolean, sameHostMinBytes an integer of at least 1', async (t) => {
  t.throws(() => connectPickleSocket('ws://127.0.0.1:1/', { sameHost: 'yes' as unknown as boolean }), TypeError)
  t.throws(() => connectPickleSocket('ws://127.0.0.1:1/', { sameHostMinBytes: 0 }), /sameHostMinBytes must be an integer of at least 1/)
  t.throws(() => connectPickleSocket('ws://127.0.0.1:1/', { sameHostMinBytes: 1.5 }), TypeError)
})

t.test('Node <-> Node: 64 MiB and 300 MiB through files both ways, a small buffer as a frame', { skip: linux ? false : 'Linux only' }, async (t) => {
  const { a, b } = await pair(t)
  echo(b)
  await until('both proofs accepted', () => a.sameHost && b.sameHost)
  for (const mib of [64, 300]) {
    const n = (mib * MiB) / 4
    const sent = a.stats()
    await a.send(ramp(n))
    const back = dataOf(await within(60_000, a.receive(), `the ${mib} MiB echo`))
    t.ok(isRamp(back, n), `${mib} MiB: the values came back`)
    const now = a.stats()
    t.equal(now.buffersSameHostSent - sent.buffersSameHostSent, 1, `${mib} MiB: sent through a file`)
    t.equal(now.buffersSameHostReceived - sent.buffersSameHostReceived, 1, `${mib} MiB: received through a file`)
    t.equal(now.bytesSameHostReceived - sent.bytesSameHostReceived, mib * MiB)
    t.ok(now.bytesSent - sent.bytesSent < 4096, 'the WebSocket carried only the header')
  }
  const small = new Float32Array(1000).map((_, i) => i)
  const framesBefore = a.stats().framesSent
  const sameHostBefore = a.stats().buffersSameHostSent
  await a.send(small)
  t.same(Array.from(dataOf(await within(5000, a.receive(), 'the small echo'))), Array.from(small))
  t.equal(a.stats().buffersSameHostSent, sameHostBefore, 'under sameHostMinBytes: no file')
  t.ok(a.stats().framesSent > framesBefore, 'it went as a frame')
  t.equal(b.stats().buffersSameHostReceived, 2)
  await a.close()
})

t.test('Node <-> Node: sameHostMinBytes moves the threshold', { skip: linux ? false : 'Linux only' }, async (t) => {
  const { a, b } = await pair(t, {}, { sameHostMinBytes: 4000 })
  echo(b)
  await until('both proofs accepted', () => a.sameHost && b.sameHost)
  await a.send(new Float32Array(1000).fill(2))
  t.same(Array.from(dataOf(await within(5000, a.receive(), 'the echo'))), new Array(1000).fill(2))
  t.equal(a.stats().buffersSameHostSent, 1, '4,000 bytes went through a file')
  t.equal(b.stats().buffersSameHostSent, 0, 'the echo (1 MiB threshold on that side) came as a frame')
  await a.close()
})

for (const side of ['client', 'server'] as const) {
  t.test(`Node <-> Node: sameHost false on the ${side} gives frames both ways`, async (t) => {
    const off = { sameHost: false }
    const { a, b } = await pair(t, side === 'server' ? off : {}, side === 'client' ? off : {})
    echo(b)
    await new Promise((resolve) => setTimeout(resolve, 200))
    t.equal(a.sameHost, false)
    t.equal(b.sameHost, false)
    await a.send(ramp(2 * MiB))
    t.ok(isRamp(dataOf(await within(10_000, a.receive(), 'the echo')), 2 * MiB))
    t.equal(a.stats().buffersSameHostSent + a.stats().buffersSameHostReceived, 0, 'no file either way')
    await a.close()
  })
}

t.test('Node <-> Node with a key: the MAC covers the files\' bytes; a region changed after it was named fails it', { skip: linux ? false : 'Linux only' }, async (t) => {
  const { a, b } = await pair(t, { key: 'k' }, { key: 'k' })
  const got = collect(b)
  await until('both proofs accepted', () => a.sameHost && b.sameHost)
  await a.send(ramp(2 * MiB))
  await until('the first message', () => got.values.length === 1)
  t.ok(isRamp(dataOf(got.values[0]), 2 * MiB), 'authenticated through a file')
  t.equal(b.stats().buffersSameHostReceived, 1)
  // The receiver reads the region when the header arrives, after this synchronous code: change
  // the region the send just wrote (this process's only open picklewire file now).
  const sending = a.send(ramp(2 * MiB))
  let changed = 0
  for (const fd of readdirSync('/proc/self/fd')) {
    let link = ''
    try {
      link = readlinkSync(`/proc/self/fd/${fd}`)
    } catch {
      continue
    }
    if (!/\/picklewire-[^/]* \(deleted\)$/.test(link)) continue
    const w = openSync(`/proc/self/fd/${fd}`, 'r+')
    writeSync(w, new Uint8Array([1, 2, 3, 4]), 0, 4, 0)
    closeSync(w)
    changed++
  }
  t.ok(changed >= 1, 'the region just named was open (with the first message\'s, if its shm-done has not come yet)')
  await sending
  const err = await within(10_000, got.done, 'the receiver to fail')
  t.ok(err instanceof TransportError && err.code === 'AUTH', `AUTH: ${String(err)}`)
  t.equal(got.values.length, 1, 'the changed message was not delivered')
})

t.test('a peer in another pid namespace cannot read the challenge: frames both ways', { skip: !linux ? 'Linux only' : spawnSync('unshare', ['--pid', '--fork', '--mount-proc', 'true']).status !== 0 ? 'unshare --pid is not allowed here' : false }, async (t) => {
  const listener = await listenPickleSocket()
  t.teardown(() => listener.close())
  listener.on('connection', (sock: PickleSocket) => echo(sock))
  const peer = spawn('unshare', ['--pid', '--fork', '--mount-proc', process.execPath, join(HERE, 'ws-same-host-peer.mjs'), listener.url], { cwd: HERE, stdio: ['ignore', 'pipe', 'inherit'] })
  let out = ''
  peer.stdout!.on('data', (d: Buffer) => (out += d.toString()))
  const [code] = await within(30_000, once(peer, 'exit'), 'the namespaced peer')
  t.equal(code, 0)
  const report = JSON.parse(out) as { pid: number; sameHost: boolean; matched: boolean; buffersSameHostSent: number; buffersSameHostReceived: number }
  t.ok(report.pid < 10, `the peer runs in its own pid namespace (pid ${report.pid} there)`)
  t.equal(report.sameHost, false, 'its proof failed')
  t.ok(report.matched, '2 MiB went and came back as frames')
  t.equal(report.buffersSameHostSent + report.buffersSameHostReceived, 0)
})

t.test('Node <-> Node: progress per piece read and for the sender, ending at the total', { skip: linux ? false : 'Linux only' }, async (t) => {
  const { a, b } = await pair(t)
  const got = collect(b)
  await until('both proofs accepted', () => a.sameHost && b.sameHost)
  const received: { buffer: number; bytes: number; total: number; bufferBytes: number; bufferTotal: number }[] = []
  b.on('progress', (p) => received.push(p))
  const sent: typeof received = []
  await a.send(ramp(MiB), { onProgress: (p) => sent.push(p) })
  await until('the message', () => got.values.length === 1)
  for (const [what, events] of [['receive', received], ['send', sent]] as const) {
    const last = events.at(-1)!
    t.equal(last.bytes, last.total, `${what}: the last event is at the total`)
    t.ok(events.some((e) => e.buffer === 0 && e.bufferBytes === 4 * MiB && e.bufferTotal === 4 * MiB), `${what}: the buffer through the file is reported done`)
    t.ok(events.every((e, i) => i === 0 || e.bytes >= events[i - 1]!.bytes), `${what}: bytes never go back`)
  }
  t.equal(b.stats().buffersSameHostReceived, 1)
  await a.close()
})

// -- the spec's test vector ----------------------------------------------------------------------

const VECTOR = Buffer.from('88a17603a2696401a16ba36d7367a17014a1629110a2726f91c2a17882a2616c9108a2736d9192af2f70726f632f343234322f66642f3700a2706bc41480059509000000000000007d948c01789497732e', 'hex')
const RANGE16 = Uint8Array.from({ length: 16 }, (_, i) => i)

t.test('the spec\'s test vector: Node encodes it, and its receiver reads buffer 0 from the place and says shm-done 1', async (t) => {
  const pk = Buffer.from('80059509000000000000007d948c01789497732e', 'hex')
  t.same(encodeWireHeader({ v: 3, id: 1, k: 'msg', p: 20, b: [16], ro: [false], x: { al: [8], sm: [['/proc/4242/fd/7', 0]] }, pk }), VECTOR)
  const reads: [BufferPlace, number][] = []
  const done: number[] = []
  const files: SameHostReader = {
    places: (h) => placesOf(h, 4242),
    read: (place, size, _what, memory, onPiece) => {
      reads.push([place, size])
      new Uint8Array(memory).set(RANGE16.subarray(0, size))
      onPiece(new Uint8Array(memory))
      return memory
    },
    done: (id) => done.push(id),
    control: () => {},
  }
  const receiver = new MessageReceiver(resolveLimits({}), null, 'client', newStats())
  receiver.version = 3
  receiver.sameHost = files
  const m = receiver.push(VECTOR, true)
  t.ok(m !== null, 'the header alone completes the message')
  t.same(reads, [[{ path: '/proc/4242/fd/7', offset: 0 }, 16]])
  t.same(Array.from(m!.parts.buffers[0] as Uint8Array), Array.from(RANGE16))
  t.same(done, [1])
})

// -- hostile frames ----------------------------------------------------------------------------

interface Hostile {
  ws: WebSocket
  texts: string[]
  server: { values: unknown[]; done: Promise<Error | null> }
}

/** Answers the peer's challenge (texts[0], of the given kind) as this process can, and waits for shm-accept. */
async function answerChallenge(ws: WebSocket, texts: string[], kind: 'copy' | 'map'): Promise<void> {
  const m = new RegExp(`^shm-challenge (\\S+) ${kind}$`).exec(texts[0]!)
  if (m === null) throw new Error(`expected a ${kind} challenge, got ${texts[0]}`)
  const fd = openSync(m[1]!, 'r')
  const secret = Buffer.alloc(32)
  readSync(fd, secret, 0, 32, 0)
  closeSync(fd)
  ws.send(`shm-proof ${secret.toString('hex')} ${process.pid}`)
  await until('shm-accept', () => texts.includes('shm-accept'))
}

/** A raw version 3 client and the server side's collection; with prove, it answers the server's challenge (this process can read it). */
async function hostile(t: Test, prove: boolean): Promise<Hostile> {
  const listener = await listenPickleSocket()
  t.teardown(() => listener.close())
  const accepted = once(listener, 'connection')
  const ws = new WebSocket(listener.url, [subprotocolOf(3)], { perMessageDeflate: false })
  const texts: string[] = []
  ws.on('message', (data, isBinary) => {
    if (!isBinary) texts.push(String(data))
  })
  await within(5000, once(ws, 'open'), 'the raw client to open')
  const [sock] = (await accepted) as [PickleSocket]
  const server = collect(sock)
  await until('the server\'s challenge', () => texts.length > 0)
  if (prove) await answerChallenge(ws, texts, 'copy')
  return { ws, texts, server }
}

function header(id: number, b: number[], sm: unknown): Uint8Array {
  const pickle = new Uint8Array([0x80, 0x05, 0x4e, 0x2e]) // None
  const h: WireHeader = { v: 3, id, k: 'msg', p: pickle.length, b, ro: b.map(() => false), x: { sm }, pk: pickle }
  return encodeWireHeader(h)
}

async function expectFailure(t: Test, h: Hostile, pattern: RegExp): Promise<void> {
  const close = await closeOf(h.ws)
  t.equal(close.code, 4400, `close code 4400 (${close.reason})`)
  const err = await within(5000, h.server.done, 'the server side to fail')
  t.ok(err instanceof TransportError && err.code === 'PROTOCOL', 'a TransportError PROTOCOL')
  t.match(err?.message, pattern)
  t.equal(h.server.values.length, 0, 'nothing delivered')
}

t.test('hostile: x.sm before this side accepted a proof', { skip: linux ? false : 'Linux only' }, async (t) => {
  const h = await hostile(t, false)
  h.ws.send(header(1, [4096], [['/proc/1/fd/3', 0]]))
  await expectFailure(t, h, /x\.sm .*accepted no same-host proof/)
})

t.test('hostile: places outside the pattern, of another pid, not a region, beyond the file, badly aligned', { skip: linux ? false : 'Linux only' }, async (t) => {
  // a real region of this (the proven) process: an unlinked picklewire file of 8 KiB
  const name = `/dev/shm/picklewire-test-${process.pid}`
  const region = openSync(name, 'wx+', 0o600)
  unlinkSync(name)
  writeSync(region, new Uint8Array(8192), 0, 8192, 0)
  const passwd = openSync('/etc/passwd', 'r')
  t.teardown(() => {
    closeSync(region)
    closeSync(passwd)
  })
  const me = process.pid
  const cases: [string, number[], unknown, RegExp][] = [
    ['a path outside the pattern', [4096], [['/etc/passwd', 0]], /path must be \/proc\/<pid>\/fd\/<fd>/],
    ['another pid', [4096], [[`/proc/${me + 1}/fd/${region}`, 0]], /not in the proven process/],
    ['a file that is no region', [16], [[`/proc/${me}/fd/${passwd}`, 0]], /not a picklewire region/],
    ['an offset beyond the file', [4096], [[`/proc/${me}/fd/${region}`, 8192]], /holds 8192 bytes, short of the 4096 announced at offset 8192/],
    ['a file descriptor that is not open', [4096], [[`/proc/${me}/fd/999999`, 0]], /it is gone/],
    ['an offset not a multiple of 4096', [16], [[`/proc/${me}/fd/${region}`, 100]], /multiple of 4096/],
    ['an array of the wrong length', [16, 16], [[`/proc/${me}/fd/${region}`, 0]], /array of 2 items/],
    ['a place for an empty buffer', [0], [[`/proc/${me}/fd/${region}`, 0]], /empty and must come as a frame/],
  ]
  for (const [what, b, sm, pattern] of cases) {
    await t.test(what, async (t) => {
      const h = await hostile(t, true)
      h.ws.send(header(1, b, sm))
      await expectFailure(t, h, pattern)
    })
  }
})

t.test('hostile: malformed and unexpected shm-* frames', { skip: linux ? false : 'Linux only' }, async (t) => {
  const cases: [string, RegExp][] = [
    ['shm-challenge /proc/01/fd/3 copy', /malformed same-host frame/],
    ['shm-challenge /proc/1/fd/3 paste', /malformed same-host frame/],
    ['shm-proof ABCDEF 12', /malformed same-host frame/],
    [`shm-proof ${'0'.repeat(64)} 0`, /malformed same-host frame/],
    ['shm-done 01', /malformed same-host frame/],
    ['shm-done  1', /malformed same-host frame/],
    ['shm-nope', /malformed same-host frame/],
    ['shm-accept', /unexpected same-host frame.*no proof awaiting/],
    ['shm-done 1', /unexpected same-host frame.*named no file/],
    ['shm-free 01', /malformed same-host frame/],
    ['shm-free 1', /unexpected same-host frame.*named no file that awaits shm-free/],
  ]
  for (const [text, pattern] of cases) {
    await t.test(JSON.stringify(text), async (t) => {
      const h = await hostile(t, false)
      h.ws.send(text)
      await expectFailure(t, h, pattern)
    })
  }
  await t.test('a second proof', async (t) => {
    const h = await hostile(t, true)
    h.ws.send(`shm-proof ${'0'.repeat(64)} ${process.pid}`)
    await expectFailure(t, h, /no challenge awaiting an answer/)
  })
  await t.test('a wrong proof is rejected, and then places are refused', async (t) => {
    const h = await hostile(t, false)
    h.ws.send(`shm-proof ${'0'.repeat(64)} ${process.pid}`)
    await until('shm-reject', () => h.texts.includes('shm-reject'))
    h.ws.send(header(1, [4096], [[`/proc/${process.pid}/fd/3`, 0]]))
    await expectFailure(t, h, /accepted no same-host proof/)
  })
})

// -- with python3 ------------------------------------------------------------------------------

const missing = pythonMissing(t)

t.test('the spec\'s test vector: Python maps buffer 0 from the place and says shm-done 1, then shm-free 1', { skip: missing ?? false }, async (t) => {
  const script = `
import sys
from picklewire import ws as pw
sent = []
sh = pw._SameHost(True, 1, sent.append, pw.Stats())
sh.proven_pid = 4242
sh.map = lambda place, size, what, id, readonly=False: (sent.append(['map', place[0], place[1], size]), memoryview(bytes(range(size))))[1]
r = pw._Receiver(pw.DEFAULT_LIMITS, None, 'client', 3)
r.same_host = sh
m = r.push(bytes.fromhex(sys.argv[1]))
print(repr([bytes(m.buffers[0]).hex(), sent]))
`
  const r = spawnSync(PYTHON, ['-c', script, VECTOR.toString('hex')], { cwd: PYTHON_DIR, encoding: 'utf8', timeout: 20_000 })
  t.equal(r.status, 0, r.stderr)
  t.equal(r.stdout.trim(), `['${Buffer.from(RANGE16).toString('hex')}', [['map', '/proc/4242/fd/7', 0, 16], 'shm-done 1', 'shm-free 1']]`, 'no mapping of message 1 is alive (the stand-in maps nothing): shm-free follows shm-done')
})

t.test('with python3: hostile places to the Python peer fail its connection with 4400', { skip: missing ?? (linux ? false : 'Linux only') }, async (t) => {
  for (const [what, prove, sm, pattern] of [
    ['x.sm without a proof', false, [['/proc/1/fd/3', 0]], /accepted no same-host proof/],
    ['a path outside the pattern', true, [['/etc/passwd', 0]], /must be \/proc\/<pid>\/fd\/<fd>/],
    ['a file that is gone', true, [[`/proc/${process.pid}/fd/999999`, 0]], /it is gone/],
  ] as const) {
    await t.test(what, async (t) => {
      const { peer, url } = await pythonEchoServer()
      t.teardown(() => peer.kill())
      const ws = new WebSocket(url, [subprotocolOf(3)], { perMessageDeflate: false })
      const texts: string[] = []
      ws.on('message', (data, isBinary) => {
        if (!isBinary) texts.push(String(data))
      })
      await within(5000, once(ws, 'open'), 'the raw client to open')
      await until('the Python challenge', () => texts.length > 0)
      if (prove) await answerChallenge(ws, texts, 'map')
      ws.send(header(1, [4096], sm))
      const close = await closeOf(ws)
      t.equal(close.code, 4400)
      t.match(close.reason, pattern)
    })
  }
})

t.test('with python3: Node -> Python -> Node, 64 MiB and 300 MiB through files both ways', { skip: missing ?? (linux ? false : 'Linux only') }, async (t) => {
  const { peer, url } = await pythonEchoServer()
  t.teardown(() => peer.kill())
  const sock = await connectPickleSocket(url, { limits: { maxBufferBytes: 2 ** 30 } })
  await until('the Python peer accepted this side', () => sock.sameHost)
  for (const mib of [64, 300]) {
    const n = (mib * MiB) / 4
    await sock.send(ramp(n))
    t.ok(isRamp(dataOf(await within(60_000, sock.receive(), `the ${mib} MiB echo`)), n), `${mib} MiB: the values came back`)
  }
  await sock.send(new Float32Array(100).fill(1))
  t.same(Array.from(dataOf(await within(5000, sock.receive(), 'the small echo'))), new Array(100).fill(1))
  await sock.send('same-host-stats')
  const py = await within(5000, sock.receive(), 'the Python stats') as Map<string, unknown>
  t.equal(py.get('same_host'), true, 'Python sends through files')
  t.equal(py.get('buffers_received'), 2, 'Python mapped the two large buffers')
  t.equal(py.get('buffers_sent'), 2, 'and sent both back through files')
  t.equal(py.get('bytes_received'), 364 * MiB)
  const s = sock.stats()
  t.equal(s.buffersSameHostSent, 2)
  t.equal(s.buffersSameHostReceived, 2)
  t.equal(s.bytesSameHostReceived, 364 * MiB)
  await sock.close()
})

t.test('with python3: Node writes a file again once Python unmapped it (shm-free); Python -> Node fills recycled memory', { skip: missing ?? (linux ? false : 'Linux only') }, async (t) => {
  const { peer, url } = await pythonEchoServer()
  t.teardown(() => peer.kill())
  const sock = await connectPickleSocket(url)
  await until('the Python peer accepted this side', () => sock.sameHost)
  const n = MiB
  for (let k = 0; k < 20; k++) {
    const a = new Float32Array(n)
    for (let i = 0; i < n; i += 1) a[i] = (i + k) & 0xffff
    await sock.send(a)
    const back = dataOf(await within(20_000, sock.receive(), `echo ${k}`))
    let ok = back.length === n
    for (let i = 0; ok && i < n; i++) ok = back[i] === ((i + k) & 0xffff)
    if (!ok) t.fail(`echo ${k}: wrong values`)
    sock.recycle(back)
  }
  const s = sock.stats()
  t.equal(s.buffersSameHostSent, 20)
  t.ok(s.filesSameHostMade <= 3, `20 messages to a mapping peer went through ${s.filesSameHostMade} files (at most 3)`)
  t.equal(s.buffersRecycled, 19, 'every echo after the first filled the memory of the one before')
  await sock.close()
})

for (const off of ['node', 'python'] as const) {
  t.test(`with python3: same host turned off on the ${off} side gives frames both ways`, { skip: missing ?? false }, async (t) => {
    const { peer, url } = await pythonEchoServer(off === 'python' ? ['--no-same-host'] : [])
    t.teardown(() => peer.kill())
    const sock = await connectPickleSocket(url, { sameHost: off !== 'node' })
    await new Promise((resolve) => setTimeout(resolve, 300))
    t.equal(sock.sameHost, false)
    await sock.send(ramp(2 * MiB))
    t.ok(isRamp(dataOf(await within(10_000, sock.receive(), 'the echo')), 2 * MiB))
    await sock.send('same-host-stats')
    const py = await within(5000, sock.receive(), 'the Python stats') as Map<string, unknown>
    t.equal(py.get('same_host'), false)
    t.equal(py.get('buffers_sent') as number + (py.get('buffers_received') as number), 0, 'Python used no file')
    t.equal(sock.stats().buffersSameHostSent + sock.stats().buffersSameHostReceived, 0, 'Node used no file')
    await sock.close()
  })
}

t.test('with python3 and a key: 64 MiB through files, authenticated both ways', { skip: missing ?? (linux ? false : 'Linux only') }, async (t) => {
  const { peer, url } = await pythonEchoServer(['--key', 'k'])
  t.teardown(() => peer.kill())
  const sock = await connectPickleSocket(url, { key: 'k' })
  await until('the Python peer accepted this side', () => sock.sameHost)
  await sock.send(ramp(16 * MiB))
  t.ok(isRamp(dataOf(await within(30_000, sock.receive(), 'the echo')), 16 * MiB))
  t.equal(sock.stats().buffersSameHostReceived, 1)
  await sock.close()
})

t.test('with python3: a Python sender killed after naming its file is a clear error; nothing is delivered', { skip: missing ?? (linux ? false : 'Linux only') }, async (t) => {
  const listener = await listenPickleSocket()
  t.teardown(() => listener.close())
  const accepted = once(listener, 'connection')
  const peer = new PythonPeer(['same-host-die', listener.url])
  t.teardown(() => peer.kill())
  const [sock] = (await accepted) as [PickleSocket]
  const ready = await within(10_000, sock.receive(), 'ready') as Map<string, unknown>
  t.equal(ready.get('ready'), true, 'the Python side sends through files')
  const got = collect(sock)
  // Nothing more is read until the sender is dead: its header then names a file of a dead process.
  sock.ws.pause()
  await sock.send('go')
  t.same(await peer.next(), { sent: 1 }, 'the Python side named its file')
  t.equal(await peer.exit(), null, 'and was killed')
  sock.ws.resume()
  const err = await within(10_000, got.done, 'the error')
  t.ok(err instanceof TransportError && err.code === 'PROTOCOL', String(err))
  t.match(err?.message, /buffer 0 of message 2 .*it is gone: the sending process exited or closed it/)
  t.equal(got.values.length, 0, 'nothing half-made was delivered')
  t.equal(sock.stats().buffersSameHostReceived, 0)
})

t.test('no picklewire file is left under /dev/shm', async (t) => {
  // every region loses its name the moment it is made: nothing of these tests' processes (killed ones too) is left
  t.same(shmFiles(), before)
})
