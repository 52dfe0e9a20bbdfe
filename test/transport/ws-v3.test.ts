/**
 * Protocol version 3 (docs/wire-protocol.md): buffers larger than chunkBytes travel as several
 * frames written into one ArrayBuffer on receipt, progress both ways, cancellation of a send
 * (a cancel frame) and of a receive (discard) with the connection usable afterwards, Node to
 * Node and with a real python3 both ways; version 2 peers still work; the spec's test vectors
 * pass both implementations; hostile frames fail the connection with a TransportError naming them.
 * PICKLEWIRE_BIG=1 adds one buffer of 5 GiB into the Node receiver.
 */
import { spawnSync } from 'node:child_process'
import t, { type Test } from 'tap'
import { GlobalRegistry, PickleBuffer } from '@picklewire/codec'
import { WebSocket, connectPickleSocket, listenPickleSocket, type ListenOptions, type PickleSocket, type ProgressInfo } from '@picklewire/transport'
import { encodeWireHeader, subprotocolOf, type WireHeader } from '../../packages/transport/dist/ws/wire.js'
import { encodeValue } from '../../packages/transport/dist/message.js'
import { MessageReceiver } from '../../packages/transport/dist/ws/receiver.js'
import { newStats } from '../../packages/transport/dist/ws/stats.js'
import { resolveLimits } from '../../packages/transport/dist/limits.js'
import { PYTHON } from '../helpers/python.js'
import { PYTHON_DIR, PythonPeer, closeOf, collect, pythonEchoServer, pythonMissing, rawClient, within } from './ws-helpers.js'

const V3 = subprotocolOf(3)

async function echoServer(t: Test, options: ListenOptions = {}): Promise<{ url: string; socks: PickleSocket[]; progress: ProgressInfo[] }> {
  const server = await listenPickleSocket(options)
  const socks: PickleSocket[] = []
  const progress: ProgressInfo[] = []
  server.on('connection', async (sock) => {
    socks.push(sock)
    sock.on('progress', (p) => progress.push(p))
    try {
      for await (const v of sock) await sock.send(v)
    } catch {
      // the test looks at the client
    }
  })
  t.teardown(() => server.close())
  return { url: server.url, socks, progress }
}

function bytesOf(v: unknown): Uint8Array {
  const pb = v instanceof PickleBuffer ? v : (v as Map<string, unknown>).get('a') as PickleBuffer
  return pb.raw()
}

function checkProgress(t: Test, events: ProgressInfo[], chunks: number, total: number, what: string): void {
  const forBuffer = events.filter((e) => e.buffer === 0)
  t.equal(forBuffer.length, chunks, `${what}: one progress event per chunk`)
  t.ok(events.every((e, i) => i === 0 || e.bytes >= events[i - 1]!.bytes), `${what}: bytes never go back`)
  t.ok(forBuffer.every((e, i) => i === 0 || e.bufferBytes > forBuffer[i - 1]!.bufferBytes), `${what}: the buffer's bytes grow per chunk`)
  t.equal(events.at(-1)!.bytes, events.at(-1)!.total, `${what}: the last event is at the total`)
  t.equal(forBuffer.at(-1)!.bufferBytes, total, `${what}: the buffer ends at its size`)
  t.ok(events.every((e) => e.total === events[0]!.total), `${what}: the total stays the same`)
}

t.test('Node <-> Node: a buffer of 11 chunks arrives as one ArrayBuffer, with progress both ways', async (t) => {
  const { url, socks, progress } = await echoServer(t, { chunkBytes: 1000 })
  const sock = await connectPickleSocket(url, { chunkBytes: 1000 })
  t.equal(sock.protocolVersion, 3)
  const data = new Uint8Array(10_500).map((_, i) => (i * 7) & 0xff)
  const sent: ProgressInfo[] = []
  const received: ProgressInfo[] = []
  sock.on('progress', (p) => received.push(p))
  await sock.send(new PickleBuffer(data), { onProgress: (p) => sent.push(p) })
  const back = bytesOf(await within(5000, sock.receive(), 'the echo'))
  t.same(back, data)
  t.equal(back.byteOffset, 0, 'a view over the start of one memory')
  t.equal(back.buffer.byteLength, data.length, 'of exactly the announced size')
  t.notOk(Buffer.isBuffer(back), 'not a Buffer: an ArrayBuffer of its own')
  t.equal(socks[0]!.stats().framesReceived, 12, 'header (pickle inline) and 11 chunks')
  checkProgress(t, sent, 11, data.length, 'send')
  checkProgress(t, progress, 11, data.length, 'server receive')
  checkProgress(t, received, 11, data.length, 'client receive')
  // A buffer at most chunkBytes stays one frame, and a Float64Array keeps its alignment.
  const f64 = new Float64Array(2000).map((_, i) => i / 7)
  await sock.send(new PickleBuffer(f64))
  t.same(new Float64Array(bytesOf(await within(5000, sock.receive(), 'the echo')).slice().buffer), f64)
  await sock.close()
})

t.test('Node <-> Node with a key: the MAC covers the chunks', async (t) => {
  const { url } = await echoServer(t, { chunkBytes: 333, key: 'k' })
  const sock = await connectPickleSocket(url, { chunkBytes: 1000, key: 'k' })
  const data = new Uint8Array(5000).map((_, i) => i & 0xff)
  await sock.send(new PickleBuffer(data))
  t.same(bytesOf(await within(5000, sock.receive(), 'the echo')), data)
  await sock.close()
})

t.test('Node -> Node: an aborted send stops mid-way, the peer drops it and the next message arrives', async (t) => {
  const { url, socks } = await echoServer(t, { chunkBytes: 4096 })
  const sock = await connectPickleSocket(url, { chunkBytes: 4096, highWaterMark: 64 * 1024 })
  const ac = new AbortController()
  while (socks.length === 0) await new Promise((resolve) => setTimeout(resolve, 5))
  const cancelled = new Promise<number>((resolve) => socks[0]!.once('cancel', resolve))
  let last = 0
  const big = new Uint8Array(32 * 2 ** 20)
  const send = sock.send(new PickleBuffer(big), {
    signal: ac.signal,
    onProgress: (p) => {
      last = p.bytes
      if (p.bufferBytes >= 256 * 1024) ac.abort(new Error('stop'))
    },
  })
  await t.rejects(send, /stop/)
  t.ok(last < big.length / 2, `stopped after ${last} of ${big.length} bytes`)
  await sock.send('next')
  t.equal(await within(5000, sock.receive(), 'the next message'), 'next', 'the next message is the first that comes back')
  t.equal(await within(5000, cancelled, 'the peer hears of the cancel'), 1)
  t.equal(sock.stats().messagesCancelled, 1)
  t.equal(socks[0]!.stats().messagesCancelledByPeer, 1)
  t.equal(socks[0]!.stats().messagesReceived, 1, 'the half message was never delivered')
  await sock.close()
})

t.test('Node: discard() drops a message while it arrives, the sender hears and stops; the next one arrives', async (t) => {
  // sameHost off: these buffers come in chunks, not through files (ws-same-host.test.ts)
  const server = await listenPickleSocket({ chunkBytes: 4096, highWaterMark: 64 * 1024, sameHost: false })
  t.teardown(() => server.close())
  const refused: unknown[] = []
  server.on('connection', async (peer) => {
    for await (const v of peer) await peer.send(v).catch((err: unknown) => refused.push(err))
  })
  const sock = await connectPickleSocket(server.url)
  const results: boolean[] = []
  const ids: number[] = []
  sock.on('progress', (p) => {
    ids.push(p.id)
    if (p.buffer === 0 && p.bufferBytes < p.bufferTotal) results.push(sock.discard(p.id))
  })
  await sock.send(new PickleBuffer(new Uint8Array(8 * 2 ** 20)))
  await sock.send('after')
  t.equal(await within(5000, sock.receive(), 'the next message'), 'after')
  t.same(results, [true], 'discarded at the first chunk; no events after it')
  t.match(refused, [{ code: 'REMOTE', message: /the peer refused message 1 while it was being sent/ }], 'the echo stopped mid-way')
  t.same(new Set(ids), new Set([1, 2]))
  t.equal(sock.stats().messagesDiscarded, 1)
  t.equal(sock.discard(7), false)
  t.throws(() => sock.discard(Number.NaN), TypeError)
  await sock.close()
})

t.test('a version 2 peer gets whole buffers and no cancel frames', async (t) => {
  const { url, socks } = await echoServer(t, { chunkBytes: 1000, protocolVersion: 2 })
  const sock = await connectPickleSocket(url, { chunkBytes: 1000 })
  t.equal(sock.protocolVersion, 2)
  const data = new Uint8Array(10_500).fill(9)
  const sent: ProgressInfo[] = []
  await sock.send(new PickleBuffer(data), { onProgress: (p) => sent.push(p) })
  t.same(bytesOf(await within(5000, sock.receive(), 'the echo')), data)
  t.equal(socks[0]!.stats().framesReceived, 2, 'header and one buffer frame')
  t.equal(sent.at(-1)!.bytes, sent.at(-1)!.total, 'progress per frame on version 2 too')
  await sock.close()
})

// -- the spec's test vectors (docs/wire-protocol.md section 8) ----------------------------------

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex')
const VECTOR_KEYED = [
  hex('88a17603a2696401a16ba36d7367a17014a1629110a2726f91c2a17882a2616c9108a461757468ab686d61632d736861323536a2706bc41480059509000000000000007d948c01789497732e'),
  hex('00010203040506070809'),
  hex('0a0b0c0d0e0f'),
  hex('42c893958f418450bf576e78a395a82ae43a275cf188031469143c90589b1889'),
]
const VECTOR_CANCEL: (Buffer | string)[] = [
  hex('88a17603a2696401a16ba36d7367a17014a1629110a2726f91c2a17881a2616c9108a2706bc41480059509000000000000007d948c01789497732e'),
  hex('00010203040506070809'),
  'cancel 1',
  hex('88a17603a2696402a16ba36d7367a17014a1629110a2726f91c2a17881a2616c9108a2706bc41480059509000000000000007d948c01789497732e'),
  hex('00010203040506070809'),
  hex('0a0b0c0d0e0f'),
]

async function rawSession(frames: (Uint8Array | string)[], options: ListenOptions = {}): Promise<{ code: number; reason: string; error: Error | null; delivered: unknown[]; sock: PickleSocket }> {
  const server = await listenPickleSocket(options)
  try {
    const accepted = new Promise<PickleSocket>((resolve) => server.once('connection', resolve))
    const ws = await rawClient(server.url, {}, [V3])
    const sock = await accepted
    const got = collect(sock)
    const closed = closeOf(ws)
    for (const f of frames) ws.send(f, { binary: typeof f !== 'string' })
    setTimeout(() => ws.readyState === WebSocket.OPEN && ws.close(1000), 300)
    const { code, reason } = await within(5000, closed, 'the close')
    const error = await within(5000, got.done, 'the end')
    return { code, reason, error, delivered: got.values, sock }
  } finally {
    await server.close()
  }
}

t.test('the spec test vectors: Node receives them', async (t) => {
  const keyed = await rawSession(VECTOR_KEYED, { key: 'picklewire test key' })
  t.equal(keyed.error, null)
  t.same([...(keyed.delivered[0] as Map<string, PickleBuffer>).get('x')!.raw()], Array.from({ length: 16 }, (_, i) => i))
  const tampered = VECTOR_KEYED.map((f, i) => (i === 2 ? Buffer.from([...f].map((b, j) => (j === 0 ? b ^ 1 : b))) : f))
  const bad = await rawSession(tampered, { key: 'picklewire test key' })
  t.equal(bad.code, 4401, 'a changed chunk fails the MAC')
  t.same(bad.delivered, [])
  const cancel = await rawSession(VECTOR_CANCEL)
  t.equal(cancel.error, null)
  t.equal(cancel.delivered.length, 1, 'only message 2')
  t.same([...(cancel.delivered[0] as Map<string, PickleBuffer>).get('x')!.raw()], Array.from({ length: 16 }, (_, i) => i))
  t.equal(cancel.sock.stats().messagesCancelledByPeer, 1)
})

const missing = pythonMissing(t)

t.test('the spec test vectors: Python receives them', { skip: missing ?? false }, async (t) => {
  const script = `
import json, sys
from picklewire import ws as pw
frames = json.loads(sys.argv[1])
out = []
for key, seq in (('picklewire test key', frames['keyed']), (None, frames['cancel'])):
    r = pw._Receiver(pw.DEFAULT_LIMITS, key and key.encode(), 'client', 3)
    for f in seq:
        m = r.push(f[1:] if f.startswith('t') else bytes.fromhex(f))
        if m is not None:
            out.append([m.header['id'], bytes(m.buffers[0]).hex()])
    out.append(r.cancelled_by_peer)
print(json.dumps(out))
`
  const enc = (fs: (Buffer | string)[]): string[] => fs.map((f) => (typeof f === 'string' ? `t${f}` : f.toString('hex')))
  const r = spawnSync(PYTHON, ['-c', script, JSON.stringify({ keyed: enc(VECTOR_KEYED), cancel: enc(VECTOR_CANCEL) })], { cwd: PYTHON_DIR, encoding: 'utf8', timeout: 20_000 })
  t.equal(r.status, 0, r.stderr)
  const range16 = Buffer.from(Array.from({ length: 16 }, (_, i) => i)).toString('hex')
  t.same(JSON.parse(r.stdout), [[1, range16], 0, [2, range16], 1])
})

// -- hostile frames ---------------------------------------------------------------------------

function header(h: Partial<WireHeader>): Uint8Array {
  const pk = encodeValue('ok').pickle
  return encodeWireHeader({ v: 3, id: 1, k: 'msg', p: pk.length, b: [10], ro: [false], pk, ...h })
}

t.test('hostile version 3 frames: TransportError naming them, connection failed, nothing delivered', async (t) => {
  const cases: [string, (Uint8Array | string)[], number, RegExp][] = [
    ['chunks beyond the announced size', [header({}), Buffer.alloc(6), Buffer.alloc(6)], 4400, /frames beyond the announced size/],
    ['a cancel for no message', ['cancel 1'], 4400, /no message is in progress/],
    ['a cancel for another message', [header({}), Buffer.alloc(4), 'cancel 2'], 4400, /cancel frame for message 2 in message 1/],
    ['a text frame that is no cancel frame', [header({}), 'hello'], 4400, /not a cancel or refuse frame/],
    ['a refuse for a message never sent', ['refuse 1'], 4400, /refuse frame for message 1, which this side has not sent/],
    ['a chunk for no message (after its cancel)', [header({}), Buffer.alloc(4), 'cancel 1', Buffer.alloc(6)], 4400, /bad message header/],
    ['an empty chunk', [header({}), Buffer.alloc(4), Buffer.alloc(0)], 4400, /empty chunk/],
    ['a buffer over the limits', [header({ b: [2 ** 31] })], 4413, /over maxBufferBytes/],
  ]
  for (const [name, frames, code, words] of cases) {
    const o = await rawSession(frames)
    t.equal(o.code, code, `${name}: close code`)
    t.match(o.error?.message, words, `${name}: the error names it`)
    t.same(o.delivered, [], `${name}: nothing delivered`)
  }
})

// -- with the real Python peer ------------------------------------------------------------------

t.test('with python3: Node -> Python -> Node in chunks, progress on both sides, a cancelled send', { skip: missing ?? false }, async (t) => {
  const { peer, url } = await pythonEchoServer(['--chunk-bytes', '1500', '--progress', '--no-same-host'])
  t.teardown(() => peer.kill())
  const sock = await connectPickleSocket(url, { chunkBytes: 1000, highWaterMark: 64 * 1024 })
  t.equal(sock.protocolVersion, 3, 'Python selects picklewire.v3')
  const data = new Uint8Array(10_500).map((_, i) => (i * 13) & 0xff)
  const sent: ProgressInfo[] = []
  const received: ProgressInfo[] = []
  sock.on('progress', (p) => received.push(p))
  await sock.send(new PickleBuffer(data), { onProgress: (p) => sent.push(p) })
  const back = bytesOf(await within(10_000, sock.receive(), 'the echo'))
  t.same(back, data)
  t.equal(back.buffer.byteLength, data.length, 'one ArrayBuffer of the buffer size')
  checkProgress(t, sent, 11, data.length, 'Node send')
  checkProgress(t, received, 7, data.length, 'Node receive of Python chunks of 1500')
  const py = await peer.next(10_000)
  t.same(py, { events: 12, monotonic: true, complete: true, ids: [1], cancelled_by_peer: 0 }, 'Python received 11 chunks and the pickle with progress')

  const ac = new AbortController()
  const big = new Uint8Array(16 * 2 ** 20)
  await t.rejects(sock.send(new PickleBuffer(big), {
    signal: ac.signal,
    onProgress: (p) => { if (p.bufferBytes >= 200_000) ac.abort(new Error('stop')) },
  }), /stop/)
  await sock.send('next')
  t.equal(await within(10_000, sock.receive(), 'the next message'), 'next', 'the echo of the next message comes first')
  const after = await peer.next(10_000)
  t.equal(after.cancelled_by_peer, 1, 'Python heard the cancel frame')
  t.same(after.ids, [2, 3], 'progress of the cancelled message 2, then message 3, delivered whole')
  await sock.close()
})

t.test('with python3: Python -> Node in chunks with progress, and a cancelled Python send', { skip: missing ?? false }, async (t) => {
  const { url, socks, progress } = await echoServer(t, { chunkBytes: 4000, limits: { maxBufferBytes: 2 ** 27, maxMessageBytes: 2 ** 27 }, sameHost: false })
  const client = new PythonPeer(['v3-client', url, '--chunk-bytes', '1000', '--elements', '2600'])
  t.teardown(() => client.kill())
  const report = await client.next(45_000)
  t.equal(await client.exit(), 0, JSON.stringify(report))
  t.match(report, { version: 3, matched: true, sent_events: 12, sent_monotonic: true, received_events: 4, received_monotonic: true, cancelled: true, next: 'next', messages_cancelled: 1 })
  checkProgress(t, progress.filter((p) => p.id === 1), 11, 10_400, 'Node receive of Python chunks of 1000')
  t.equal(socks[0]!.stats().messagesCancelledByPeer, 1, 'Node heard the cancel frame')
  t.ok(progress.some((p) => p.id === 2 && p.bytes < p.total), 'the cancelled message had begun to arrive')
  t.equal(socks[0]!.stats().messagesReceived, 2, 'the array and "next"; never the half message')
})

t.test('with python3: a version 2 Python peer and a version 3 Node peer', { skip: missing ?? false }, async (t) => {
  const { peer, url } = await pythonEchoServer(['--protocol-version', '2'])
  t.teardown(() => peer.kill())
  const sock = await connectPickleSocket(url, { chunkBytes: 1000 })
  t.equal(sock.protocolVersion, 2)
  const data = new Uint8Array(10_500).fill(4)
  await sock.send(new PickleBuffer(data))
  t.same(bytesOf(await within(10_000, sock.receive(), 'the echo')), data)
  t.equal(sock.stats().framesSent, 2, 'one buffer frame: no chunks on version 2')
  await sock.close()
})

t.test('with python3: Node discards a message Python sends; Python stops sending it, and the next arrives', { skip: missing ?? false }, async (t) => {
  const { peer, url } = await pythonEchoServer(['--chunk-bytes', '4096', '--no-same-host'])
  t.teardown(() => peer.kill())
  const sock = await connectPickleSocket(url, { chunkBytes: 2 ** 20 })
  let discarded = false
  const seen: ProgressInfo[] = []
  sock.on('progress', (p) => {
    seen.push(p)
    if (p.id === 1 && p.buffer === 0 && !discarded) discarded = sock.discard(p.id)
  })
  await sock.send(new PickleBuffer(new Uint8Array(8 * 2 ** 20)))
  await sock.send('after')
  t.equal(await within(10_000, sock.receive(), 'the next message'), 'after')
  t.ok(discarded)
  t.equal(sock.stats().messagesDiscarded, 1)
  t.equal(seen.filter((p) => p.id === 1).length, 2, 'the pickle and the first chunk, then nothing of message 1')
  await sock.send('again')
  t.equal(await within(10_000, sock.receive(), 'one more'), 'again', 'the Python echo server still serves this connection')
  await sock.close()
})

t.test('with python3: a version 3 Python client and a version 2 Node server', { skip: missing ?? false }, async (t) => {
  const { url, socks } = await echoServer(t, { protocolVersion: 2, unpickler: { opaque: true, globals: new GlobalRegistry() } })
  const client = new PythonPeer(['arrays-client', url, '--count', '60', '--seed', '5'])
  t.teardown(() => client.kill())
  const report = await client.next(45_000)
  t.equal(await client.exit(), 0)
  t.equal(report.matched, 60)
  t.equal(report.version, 2, 'the Python client offered v3 first and speaks v2 with this server')
  t.equal(socks[0]!.protocolVersion, 2)
})

t.test('with python3: hostile version 3 frames to the Python peer fail its connection with the error named', { skip: missing ?? false }, async (t) => {
  const { peer, url } = await pythonEchoServer()
  t.teardown(() => peer.kill())
  const cases: [string, (Uint8Array | string)[], number, RegExp][] = [
    ['chunks beyond the announced size', [header({}), Buffer.alloc(6), Buffer.alloc(6)], 4400, /beyond the announced size/],
    ['a cancel for no message', ['cancel 1'], 4400, /no message is in progress/],
    ['a cancel for another message', [header({}), Buffer.alloc(4), 'cancel 2'], 4400, /cancel frame for message 2/],
    ['a buffer over the limits', [header({ b: [2 ** 31] })], 4413, /over max_buffer_bytes/],
  ]
  for (const [name, frames, code, words] of cases) {
    const ws = await rawClient(url, {}, [V3])
    t.equal(ws.protocol, V3)
    const closed = closeOf(ws)
    for (const f of frames) ws.send(f, { binary: typeof f !== 'string' })
    const c = await within(5000, closed, 'the close')
    t.equal(c.code, code, `${name}: close code`)
    t.match(c.reason, words, `${name}: the close reason names it`)
  }
})

t.test('a buffer of 5 GiB arrives in one ArrayBuffer (the version 3 receiver, fed 16 MiB chunks)', { skip: process.env.PICKLEWIRE_BIG === '1' ? false : 'set PICKLEWIRE_BIG=1 (needs 5 GiB of memory)' }, async (t) => {
  // The receiver alone, which takes the chunks into one memory of the announced size (Node 20
  // makes no Uint8Array over more than 4 GiB: the buffer is a DataView over one ArrayBuffer).
  // test/transport/ws-big.test.ts sends such buffers between real peers.
  const size = 5 * 2 ** 30
  const chunk = 16 * 2 ** 20
  const limits = resolveLimits({ maxBufferBytes: size, maxMessageBytes: size + 2 ** 20 })
  const receiver = new MessageReceiver(limits, null, 'client', newStats())
  receiver.version = 3
  const pk = encodeValue('big').pickle
  t.equal(receiver.push(encodeWireHeader({ v: 3, id: 1, k: 'msg', p: pk.length, b: [size], ro: [false], pk }), true), null)
  const piece = Buffer.alloc(chunk, 0x5a)
  let done: ReturnType<MessageReceiver['push']> = null
  for (let at = 0, k = 0; at < size; at += chunk, k++) {
    piece[0] = k & 0xff // the receiver copies each chunk at once: the same memory can carry the next
    done = receiver.push(piece, true)
    t.equal(done === null, at + chunk < size, 'complete exactly at the last chunk') || t.bailout()
  }
  const part = done!.parts.buffers[0]!
  t.ok(part instanceof DataView && part.byteOffset === 0, 'a DataView over the whole of one ArrayBuffer')
  const whole = part.buffer
  t.ok(whole instanceof ArrayBuffer, 'one ArrayBuffer')
  t.equal(whole.byteLength, size)
  let same = true
  for (let at = 0, k = 0; at < size && same; at += chunk, k++) {
    const view = new Uint8Array(whole, at, chunk)
    same = view[0] === (k & 0xff) && view[1] === 0x5a && view[chunk - 1] === 0x5a
  }
  t.ok(same, 'sampled bytes of every chunk in place')
})
