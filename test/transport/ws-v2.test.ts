/**
 * Protocol version 2 (docs/wire-protocol.md): the handshake picks the version, a small pickle
 * rides inside the header frame (`pk`) so that a message without out-of-band buffers is one
 * frame, both ways, Node to Node and with a real python3; version 1 still works whenever
 * either side asks for it; and every way of breaking the new form (a wrong or truncated
 * `pk`, one on a version 1 connection, a header over its size, a tampered inline pickle under
 * HMAC) gets the documented error and close code, with nothing of the message delivered.
 */
import t, { type Test } from 'tap'
import { GlobalRegistry, PickleBuffer, dumps } from '@picklewire/codec'
import { SUBPROTOCOL, WebSocket, connectPickleSocket, listenPickleSocket, PickleSocket, type ListenOptions, type PickleSocketServer } from '@picklewire/transport'
import { MAX_INLINE_PICKLE_BYTES, encodeWireHeader, subprotocolOf, type WireHeader } from '../../packages/transport/dist/ws/wire.js'
import { encodeValue } from '../../packages/transport/dist/message.js'
import { PythonPeer, closeOf, collect, pythonEchoServer, pythonMissing, rawClient, within, specMac } from './ws-helpers.js'

const V2 = subprotocolOf(2)
const KEY = Buffer.from('a shared secret')

function header(h: Partial<WireHeader> & { p: number }): Uint8Array {
  return encodeWireHeader({ v: 2, id: 1, k: 'msg', b: [], ro: [], ...h })
}

const mac = specMac

/** A version 2 message with its pickle inline: the header frame, the buffers (and the MAC, signed as a client, with a key). */
function inline(value: unknown, id: number, key: Uint8Array | null = null): Uint8Array[] {
  const parts = encodeValue(value)
  const buffers = parts.buffers as Uint8Array[] // small buffers: Uint8Arrays (a DataView is for those over 4 GiB)
  const h: WireHeader = { v: 2, id, k: 'msg', p: parts.pickle.length, b: buffers.map((b) => b.length), ro: parts.readonly, pk: parts.pickle }
  if (key) h.x = { auth: 'hmac-sha256' }
  const frames: Uint8Array[] = [encodeWireHeader(h), ...buffers]
  if (key) frames.push(mac(key, frames))
  return frames
}

/** A header whose `pk` is the msgpack value `pkBytes` as given (a str, nil, ...): the map gets one more entry. */
function withRawPk(h: WireHeader, pkBytes: number[]): Buffer {
  const base = encodeWireHeader(h)
  const out = Buffer.concat([base, Buffer.from([0xa2, 0x70, 0x6b, ...pkBytes])])
  out[0] = base[0]! + 1 // fixmap: one entry more
  return out
}

interface Outcome {
  code: number
  reason: string
  error: Error | null
  delivered: unknown[]
  sock: PickleSocket
}

/** Sends frames from a raw client (offering `protocols`) to a fresh server; how it ended and what was delivered. */
async function session(frames: Uint8Array[], options: ListenOptions = {}, after?: (ws: WebSocket) => void, protocols = [V2]): Promise<Outcome> {
  const server: PickleSocketServer = await listenPickleSocket(options)
  try {
    const accepted = new Promise<PickleSocket>((resolve) => server.once('connection', resolve))
    const ws = await rawClient(server.url, {}, protocols)
    const sock = await accepted
    const got = collect(sock)
    const closed = closeOf(ws)
    for (const f of frames) ws.send(f, { binary: true })
    after?.(ws)
    const { code, reason } = await closed
    const error = await within(10_000, got.done, 'the server socket to end')
    return { code, reason, error, delivered: got.values, sock }
  } finally {
    await server.close()
  }
}

const closeSoon = (ws: WebSocket): void => void setTimeout(() => ws.close(1000), 50)

function expectFailure(t: Test, o: Outcome, code: string, closeCode: number, delivered: unknown[] = [], pattern?: RegExp): void {
  t.equal((o.error as { code?: string } | null)?.code, code, `the server reports ${code}: ${o.error?.message}`)
  t.equal(o.code, closeCode, `the client sees close code ${closeCode} (${o.reason})`)
  t.same(o.delivered, delivered, 'nothing of the broken message was delivered')
  if (pattern) t.match(o.error?.message ?? '', pattern)
}

/** A Node server that echoes every message; its sockets, to look at their counters. */
async function echoServer(t: Test, options: ListenOptions = {}): Promise<{ server: PickleSocketServer; socks: PickleSocket[] }> {
  const server = await listenPickleSocket(options)
  const socks: PickleSocket[] = []
  server.on('connection', async (sock: PickleSocket) => {
    socks.push(sock)
    try {
      for await (const v of sock) await sock.send(v)
    } catch {
      // the test looks at the client
    }
  })
  t.teardown(() => server.close())
  return { server, socks }
}

const small = (i: number): Map<string, unknown> => new Map<string, unknown>([['seq', i], ['payload', new Uint8Array(960).fill(i & 0xff)]])

t.test('Node <-> Node speaks version 2: a message without buffers is one frame each way', async (t) => {
  const { server, socks } = await echoServer(t)
  const sock = await connectPickleSocket(server.url, { protocolVersion: 2 })
  t.equal(sock.ws.protocol, V2)
  t.equal(sock.protocolVersion, 2)
  for (let i = 0; i < 100; i++) void sock.send(small(i))
  for (let i = 0; i < 100; i++) {
    const v = await within(5000, sock.receive(), 'an echo') as Map<string, unknown>
    t.equal(v.get('seq'), i)
    if (i === 99) t.same(v.get('payload'), new Uint8Array(960).fill(99))
  }
  t.equal(socks[0]!.protocolVersion, 2)
  t.equal(sock.stats().framesSent, 100, '100 messages, 100 frames sent')
  t.equal(sock.stats().framesReceived, 100, '100 messages, 100 frames received')
  t.equal(socks[0]!.stats().framesReceived, 100)

  // Out-of-band buffers still travel as frames of their own, after the header (pickle inside).
  const f64 = new Float64Array(4096).map((_, k) => k / 3)
  await sock.send({ a: new PickleBuffer(f64), b: new PickleBuffer(new Uint8Array(5000).fill(3)) })
  const back = await within(5000, sock.receive(), 'the buffers') as Map<string, PickleBuffer>
  t.same(new Float64Array(back.get('a')!.raw().slice().buffer), f64)
  t.equal(sock.stats().framesSent - 100, 3, 'header (with the pickle) and two buffer frames')

  // A pickle over the inline bound gets a frame of its own, as in version 1.
  const big = 'x'.repeat(MAX_INLINE_PICKLE_BYTES + 100)
  await sock.send(big)
  t.equal(await within(5000, sock.receive(), 'the big pickle'), big)
  t.equal(sock.stats().framesSent - 103, 2, 'header and pickle frame')

  // At the bound exactly, it is still inline.
  let s = 'y'.repeat(MAX_INLINE_PICKLE_BYTES)
  while (encodeValue(s).pickle.length > MAX_INLINE_PICKLE_BYTES) s = s.slice(1)
  await sock.send(s)
  t.equal(await within(5000, sock.receive(), 'the bound'), s)
  t.equal(sock.stats().framesSent - 105, 1, 'a pickle of exactly MAX_INLINE_PICKLE_BYTES is inline')
  await sock.close()
})

t.test('version 2 with a key: header and MAC, two frames, authenticated both ways', async (t) => {
  const { server, socks } = await echoServer(t, { key: KEY })
  const sock = await connectPickleSocket(server.url, { key: KEY })
  for (let i = 0; i < 20; i++) await sock.send(small(i))
  for (let i = 0; i < 20; i++) t.equal((await within(5000, sock.receive(), 'an echo') as Map<string, unknown>).get('seq'), i)
  t.equal(sock.stats().framesSent, 40)
  t.equal(socks[0]!.stats().framesSent, 40)
  await t.rejects(sock.request('no handler there'), { code: 'REMOTE' }, 'request and err reply, authenticated inline too')
  await sock.close()
})

t.test('version 1 whenever one side asks for it (or a client offers no subprotocol): two frames per message', async (t) => {
  const { server, socks } = await echoServer(t)
  const old = await connectPickleSocket(server.url, { protocolVersion: 1 })
  t.equal(old.ws.protocol, SUBPROTOCOL)
  t.equal(old.protocolVersion, 1)
  await old.send(small(1))
  t.equal((await within(5000, old.receive(), 'an echo') as Map<string, unknown>).get('seq'), 1)
  t.equal(old.stats().framesSent, 2)
  t.equal(old.stats().framesReceived, 2)
  t.equal(socks[0]!.protocolVersion, 1)
  await old.close()

  const { server: v1server } = await echoServer(t, { protocolVersion: 1 })
  const sock = await connectPickleSocket(v1server.url)
  t.equal(sock.protocolVersion, 1, 'a version 1 server: the client falls back')
  await sock.send(small(2))
  t.equal((await within(5000, sock.receive(), 'an echo') as Map<string, unknown>).get('seq'), 2)
  t.equal(sock.stats().framesReceived, 2)
  await sock.close()

  const bare = new WebSocket(server.url, { perMessageDeflate: false })
  const wrapped = new PickleSocket(bare, 'client')
  await within(5000, new Promise((resolve) => bare.once('open', resolve)), 'open')
  t.equal(wrapped.protocolVersion, 1, 'no subprotocol: version 1')
  await wrapped.send('plain')
  t.equal(await within(5000, wrapped.receive(), 'an echo'), 'plain')
  t.equal(wrapped.stats().framesSent, 2)
  await wrapped.close()

  t.throws(() => connectPickleSocket(server.url, { protocolVersion: 4 }), /option protocolVersion must be one of 3, 2, 1/)
})

t.test('crafted version 2 frames: inline messages, with and without buffers, are delivered', async (t) => {
  const o = await session([...inline('first', 1), ...inline({ b: new PickleBuffer(new Uint8Array(2048).fill(5)) }, 2), ...inline('third', 3)], {}, closeSoon)
  t.equal(o.error, null)
  t.equal(o.sock.protocolVersion, 2)
  t.equal(o.delivered.length, 3)
  t.equal(o.delivered[0], 'first')
  t.same([...(o.delivered[1] as Map<string, PickleBuffer>).get('b')!.raw()], new Array(2048).fill(5))
  t.equal(o.delivered[2], 'third')
  t.equal(o.sock.stats().framesReceived, 4)
  // version 1's form (a pickle frame after a header without pk) stays valid on version 2
  const pickle = dumps('separate', { protocol: 5 })
  const p = await session([...inline('first', 1), header({ id: 2, p: pickle.length }), pickle], {}, closeSoon)
  t.same(p.delivered, ['first', 'separate'])
})

t.test('a header of another version than the connection: PROTOCOL, close 4426', async (t) => {
  const pickle = dumps('x', { protocol: 5 })
  expectFailure(t, await session([...inline('first', 1), header({ v: 1, id: 2, p: pickle.length }), pickle]), 'PROTOCOL', 4426, ['first'], /unsupported protocol version 1; this connection speaks 2/)
  const v1 = await session([header({ id: 1, p: pickle.length, pk: pickle })], {}, undefined, [SUBPROTOCOL])
  expectFailure(t, v1, 'PROTOCOL', 4426, [], /unsupported protocol version 2; this connection speaks 1/)
})

t.test('pk on a version 1 connection: PROTOCOL, close 4400', async (t) => {
  const pickle = dumps('x', { protocol: 5 })
  const o = await session([encodeWireHeader({ v: 1, id: 1, k: 'msg', p: pickle.length, b: [], ro: [], pk: pickle })], {}, undefined, [SUBPROTOCOL])
  expectFailure(t, o, 'PROTOCOL', 4400, [], /pk \(an inline pickle\) needs protocol version 2/)
})

t.test('a pk that is not the announced pickle: PROTOCOL, close 4400, nothing delivered', async (t) => {
  const pickle = dumps('a value', { protocol: 5 })
  expectFailure(t, await session([...inline('first', 1), header({ id: 2, p: pickle.length + 1, pk: pickle })]), 'PROTOCOL', 4400, ['first'], /pk holds \d+ bytes but p announces/)
  expectFailure(t, await session([header({ p: pickle.length, pk: pickle.subarray(0, 5) })]), 'PROTOCOL', 4400, [], /pk holds 5 bytes/)
  const h: WireHeader = { v: 2, id: 1, k: 'msg', p: 3, b: [], ro: [] }
  expectFailure(t, await session([withRawPk(h, [0xa3, 0x61, 0x62, 0x63])]), 'PROTOCOL', 4400, [], /pk must be binary/)
  expectFailure(t, await session([withRawPk(h, [0xc0])]), 'PROTOCOL', 4400, [], /pk must be binary/)
  // the header frame cut inside the pickle: not msgpack
  const whole = header({ p: pickle.length, pk: pickle })
  expectFailure(t, await session([whole.subarray(0, whole.length - 4)]), 'PROTOCOL', 4400, [], /bad message header: not msgpack/)
  // a pickle frame after an inline message is read as the next header
  expectFailure(t, await session([...inline('first', 1), pickle]), 'PROTOCOL', 4400, ['first'], /bad message header/)
})

t.test('limits hold for inline pickles: maxPickleBytes (4413), the header bound (1009, before the bytes are read)', async (t) => {
  const pickle = dumps('y'.repeat(300), { protocol: 5 })
  expectFailure(t, await session([header({ p: pickle.length, pk: pickle })], { limits: { maxPickleBytes: 100 } }), 'LIMIT', 4413, [], /over maxPickleBytes \(100\)/)
  expectFailure(t, await session([header({ p: pickle.length, pk: pickle })], { limits: { maxMessageBytes: 200 } }), 'LIMIT', 4413, [], /over maxMessageBytes/)
  const huge = dumps('z'.repeat(70_000), { protocol: 5 })
  expectFailure(t, await session([header({ p: huge.length, pk: huge })]), 'LIMIT', 1009, [], /header position is over the 65536 bytes allowed/)
})

t.test('HMAC over inline pickles: every byte is authenticated', async (t) => {
  const signed = inline(new Map([['v', 'authentic']]), 1, KEY)
  t.equal(signed.length, 2, 'header (pickle inside) and MAC')
  const ok = await session(signed, { key: KEY }, closeSoon)
  t.equal(ok.error, null)
  t.equal((ok.delivered[0] as Map<string, string>).get('v'), 'authentic')
  // one byte of the inline pickle changed, each place in turn: the MAC fails, nothing is delivered
  const hdr = signed[0]!
  for (const at of [hdr.length - 2, hdr.length - 10, 1]) {
    const tampered = Buffer.from(hdr)
    tampered[at] = tampered[at]! ^ 0x01
    const o = await session([tampered, signed[1]!], { key: KEY })
    t.not(o.code, 1000, `byte ${at} changed: refused (${o.code} ${o.reason})`)
    t.same(o.delivered, [], 'nothing delivered')
  }
  const flipped = Buffer.from(hdr)
  flipped[hdr.length - 2] = flipped[hdr.length - 2]! ^ 0x01
  expectFailure(t, await session([flipped, signed[1]!], { key: KEY }), 'AUTH', 4401, [], /message 1 failed authentication/)
  // the MAC of the same value sent in version 1's form (header + pickle frame) does not fit the inline form
  const parts = encodeValue(new Map([['v', 'authentic']]))
  const v1form = [header({ p: parts.pickle.length, x: { auth: 'hmac-sha256' } }), parts.pickle]
  const inlineHeader = header({ p: parts.pickle.length, x: { auth: 'hmac-sha256' }, pk: parts.pickle })
  expectFailure(t, await session([inlineHeader, mac(KEY, v1form)], { key: KEY }), 'AUTH', 4401)
  // the MAC left out: the next message's header is not a MAC
  expectFailure(t, await session([signed[0]!, ...inline('next', 2, KEY)], { key: KEY }), 'AUTH', 4401, [], /failed authentication/)
  // the MAC of the server's side, and a truncated MAC
  expectFailure(t, await session([signed[0]!, mac(KEY, [signed[0]!], 'picklewire.v1 server')], { key: KEY }), 'AUTH', 4401)
  expectFailure(t, await session([signed[0]!, signed[1]!.subarray(0, 16)], { key: KEY }), 'AUTH', 4401)
  // no key on the receiving side, or no auth on the message
  expectFailure(t, await session(signed), 'AUTH', 4401, [], /this side has no key/)
  expectFailure(t, await session(inline('plain', 1), { key: KEY }), 'AUTH', 4401, [], /not authenticated/)
})

t.test('the version 2 test vector of docs/wire-protocol.md section 6 is accepted', async (t) => {
  const vector = [
    '88a17602a2696401a16ba36d7367a17014a1629110a2726f91c2a17882a2616c9108a461757468ab686d61632d736861323536a2706bc41480059509000000000000007d948c01789497732e',
    '000102030405060708090a0b0c0d0e0f',
    '2d16a90eb0470fc6efa4075158381e7f1d2ebe5a28f1af6ce8c35d19d6900bd6',
  ].map((h) => Buffer.from(h, 'hex'))
  const pk = Buffer.from('80059509000000000000007d948c01789497732e', 'hex')
  t.same(encodeWireHeader({ v: 2, id: 1, k: 'msg', p: 20, b: [16], ro: [false], x: { al: [8], auth: 'hmac-sha256' }, pk }), vector[0], 'this encoder writes the same header')
  const o = await session(vector, { key: Buffer.from('picklewire test key') }, closeSoon)
  t.equal(o.error, null)
  t.same([...(o.delivered[0] as Map<string, PickleBuffer>).get('x')!.raw()], Array.from({ length: 16 }, (_, i) => i))
  const tampered = [vector[0]!, vector[1]!, Buffer.from(vector[2]!.map((b, j) => (j === 31 ? b ^ 1 : b)))]
  expectFailure(t, await session(tampered, { key: Buffer.from('picklewire test key') }), 'AUTH', 4401)
})

t.test('a peer that dies after an inline header that announces a buffer: CLOSED, nothing delivered', async (t) => {
  const pickle = dumps(new PickleBuffer(new Uint8Array(4096)), { protocol: 5, bufferCallback: () => false })
  const o = await session([...inline('first', 1), header({ id: 2, p: pickle.length, b: [4096], ro: [false], pk: pickle })], {}, (ws) => setTimeout(() => ws.terminate(), 50))
  t.equal((o.error as { code?: string } | null)?.code, 'CLOSED')
  t.match(o.error?.message, /closed \(1006\) in message 2 after 1 of its 2 frames: the message is lost/)
  t.same(o.delivered, ['first'])
})

const missing = pythonMissing(t)
t.test('with python3: version 2 both ways, one frame per message; version 1 on request', { skip: missing ?? false }, async (t) => {
  const { peer, url } = await pythonEchoServer()
  t.teardown(() => peer.kill())
  const sock = await connectPickleSocket(url, { protocolVersion: 2 })
  t.equal(sock.protocolVersion, 2, 'Python selects picklewire.v2 for a client that offers v2 and v1')
  for (let i = 0; i < 200; i++) void sock.send(small(i))
  for (let i = 0; i < 200; i++) t.equal((await within(10_000, sock.receive(), 'an echo') as Map<string, unknown>).get('seq'), i)
  t.equal(sock.stats().framesSent, 200, 'Node sent one frame per message')
  t.equal(sock.stats().framesReceived, 200, 'Python sent one frame per message')
  await sock.close()

  const old = await connectPickleSocket(url, { protocolVersion: 1 })
  t.equal(old.protocolVersion, 1)
  await old.send(small(7))
  t.equal((await within(10_000, old.receive(), 'an echo') as Map<string, unknown>).get('seq'), 7)
  t.equal(old.stats().framesReceived, 2, 'Python answers a version 1 client in version 1')
  await old.close()

  const keyed = await pythonEchoServer(['--key', 'k'])
  t.teardown(() => keyed.peer.kill())
  const signed = await connectPickleSocket(keyed.url, { key: 'k' })
  await signed.send(small(3))
  t.equal((await within(10_000, signed.receive(), 'an echo') as Map<string, unknown>).get('seq'), 3)
  t.equal(signed.stats().framesReceived, 2, 'header with the pickle, and the MAC')
  await signed.close()

  // Python clients against Node servers: version 3 by default, 2 and 1 when asked, arrays echoed each way
  for (const [args, version] of [[[], 3], [['--protocol-version', '2'], 2], [['--protocol-version', '1'], 1]] as const) {
    const { server } = await echoServer(t, { unpickler: { opaque: true, globals: new GlobalRegistry() } })
    const client = new PythonPeer(['arrays-client', server.url, '--count', '300', '--seed', '3', ...args])
    t.teardown(() => client.kill())
    const report = await client.next(45_000)
    t.equal(await client.exit(), 0)
    t.equal(report.matched, 300, `version ${version}: all 300 echoes equal`)
    t.equal(report.version, version)
    if (version >= 2) t.ok(report.stats.frames_sent < 2 * 300, `Python sent ${report.stats.frames_sent} frames for 300 messages`)
    else t.ok(report.stats.frames_sent >= 2 * 300, `Python sent ${report.stats.frames_sent} frames for 300 messages`)
  }
})

t.test('the quick header reader gives what msgpackr gives, or leaves the frame to msgpackr', async (t) => {
  const { quickUnpack } = await import('../../packages/transport/dist/ws/wire.js')
  const { Packr, Unpackr } = await import('msgpackr')
  const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: false })
  const packr = new Packr({ useRecords: false, variableMapSize: true })
  let seed = 12345
  const rnd = (n: number): number => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff
    return seed % n
  }
  const frames: Uint8Array[] = []
  const sizes = [0, 1, 127, 128, 255, 256, 65535, 65536, 2 ** 32 - 1, 2 ** 32, 2 ** 53 - 1]
  for (let i = 0; i < 300; i++) {
    const nb = rnd(4)
    const h: WireHeader = {
      v: rnd(3), id: sizes[rnd(sizes.length)]!, k: ['msg', 'req', 'rep', 'err'][rnd(4)]!, p: sizes[rnd(sizes.length)]!,
      b: Array.from({ length: nb }, () => sizes[rnd(sizes.length)]!), ro: Array.from({ length: nb }, () => rnd(2) === 1),
    }
    if (rnd(2)) h.re = sizes[rnd(sizes.length)]!
    if (rnd(2)) h.x = { al: h.b.map(() => [1, 2, 4, 8][rnd(4)]), auth: 'hmac-sha256', n: -rnd(200), s: 'é', f: 0.5 }
    if (rnd(2)) h.pk = new Uint8Array(rnd(2) ? rnd(300) : 70_000).fill(rnd(256))
    frames.push(encodeWireHeader(h))
    frames.push(packr.pack(new Map<unknown, unknown>([['v', 2], ['id', -1], ['k', 'x'.repeat(rnd(40))], ['x', new Map([[1, 2]])]])))
  }
  for (const f of frames.slice()) {
    for (let j = 0; j < 3; j++) {
      const m = Buffer.from(f)
      m[rnd(m.length)] = rnd(256) // a byte changed anywhere
      frames.push(m, f.subarray(0, rnd(f.length)), Buffer.concat([f, Uint8Array.of(rnd(256))]))
    }
  }
  let quick = 0
  let agree = 0
  const norm = (v: unknown): unknown => JSON.stringify(v, (_, x) => (x instanceof Map ? [...x] : typeof x === 'bigint' ? Number(x) : x instanceof Uint8Array ? [...x].join(',') : x))
  for (const f of frames) {
    const q = quickUnpack(f)
    let ref: unknown
    let err: unknown = null
    try {
      ref = unpackr.unpack(f)
    } catch (e) {
      err = e
    }
    if (q === null) continue
    quick++
    if (err === null && norm(q) === norm(ref)) agree++
    else t.fail(`quick and msgpackr differ on ${Buffer.from(f).toString('hex').slice(0, 200)}: ${String(err)}`)
  }
  t.ok(quick > 300, `${quick} of ${frames.length} frames read quickly`)
  t.equal(agree, quick, 'every frame read quickly reads the same with msgpackr')
})
