/**
 * The WebSocket carrier between two Node endpoints: ordering, request/reply, zero-copy views
 * and counted alignment copies, backpressure, heartbeats, clean close, authentication,
 * limits, TLS and option checking. Python interop is in ws-python.test.ts; hand-made bad
 * frames in ws-frames.test.ts.
 */
import { execFileSync } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { createServer } from 'node:https'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { NDArray, PickleBuffer, Tuple } from '@picklewire/codec'
import {
  DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_HIGH_WATER_MARK, DEFAULT_RECEIVE_HIGH_WATER_MARK, PickleSocket, TransportError,
  WebSocket, connectPickleSocket, listenPickleSocket,
} from '@picklewire/transport'
import { closeOf, collect, pair, within } from './ws-helpers.js'

function codeOf(err: unknown): string | undefined {
  return err instanceof TransportError ? err.code : undefined
}

t.test('values arrive in order: events, receive() and async iteration', async (t) => {
  const { a, b } = await pair(t)
  const values = Array.from({ length: 500 }, (_, i) => new Map<string, unknown>([['i', i], ['t', Tuple.fromItems([i, 'x'.repeat(i % 7)])], ['raw', new PickleBuffer(new Uint8Array(i * 13).fill(i & 0xff))]]))
  for (const v of values) void a.send(v)
  const got: unknown[] = []
  for await (const v of b) {
    got.push(v)
    if (got.length === 250) break
  }
  for (let i = 250; i < 400; i++) got.push(await b.receive())
  const ids: number[] = []
  const rest = new Promise<void>((resolve) => {
    b.on('message', (v, info) => {
      got.push(v)
      ids.push(info.id)
      if (got.length === 500) resolve()
    })
  })
  await within(10_000, rest, 'the last 100 messages as events')
  t.equal(got.length, 500)
  t.same(ids, Array.from({ length: 100 }, (_, i) => 401 + i), 'the listener got the queue first, then the rest; ids count 1, 2, 3, ...')
  t.ok(got.every((v, i) => (v as Map<string, unknown>).get('i') === i), 'in order')
  const last = got[499] as Map<string, unknown>
  t.same([...(last.get('raw') as PickleBuffer).raw()], [...new Uint8Array(499 * 13).fill(499 & 0xff)])
  t.equal(a.stats().messagesSent, 500)
  t.equal(b.stats().messagesReceived, 500)
  await a.flushed()
  t.equal(a.stats().bufferedBytes, 0, 'flushed() waits until everything is written')
})

t.test('header extras of the application reach the receiver; the carrier\'s own do not', async (t) => {
  const { a, b } = await pair(t, { key: 'k', onRequest: (v, info) => [v, info.x?.trace ?? null] }, { key: 'k' })
  const got = new Promise<unknown[]>((resolve) => b.once('message', (v, info) => resolve([v, info])))
  await a.send(new PickleBuffer(new Float64Array(512)), { x: { trace: 'abc-123', hop: 2 } })
  const [value, info] = await within(5000, got, 'the message')
  t.type(value, PickleBuffer)
  t.same({ ...(info as { x: object }).x }, { trace: 'abc-123', hop: 2 }, 'x without al and auth')
  t.same(await a.request('r', { x: { trace: 't1' } }), ['r', 't1'])
})

t.test('request/reply matches answers to requests, whatever order they finish in', async (t) => {
  const { a, b } = await pair(t, {
    onRequest: async (v) => {
      const n = v as number
      if (n === -1) throw new RangeError('minus one is not allowed')
      await new Promise((r) => setTimeout(r, (n * 7) % 20))
      return n * n
    },
  })
  const answers = await within(10_000, Promise.all(Array.from({ length: 100 }, (_, i) => a.request(i))), 'the answers')
  t.same(answers, Array.from({ length: 100 }, (_, i) => i * i))
  const err = await a.request(-1).catch((e: unknown) => e)
  t.equal(codeOf(err), 'REMOTE')
  t.match((err as Error).message, /request \d+ failed on the other side: RangeError: minus one is not allowed/)
  b.onRequest(() => new Promise(() => {}))
  const late = await a.request('never answered', { timeout: 100 }).catch((e: unknown) => e)
  t.equal(codeOf(late), 'TIMEOUT')
  b.onRequest(null)
  t.match(await a.request('nobody').catch((e: unknown) => (e as Error).message), /no request handler on this side/)
  b.onRequest((v) => ({ echo: v, sym: Symbol('not picklable') }))
  t.match(await a.request(1).catch((e: unknown) => (e as Error).message), /the reply cannot be pickled/)
  b.onRequest((v) => v)
  t.equal(await a.request('still open'), 'still open', 'failures did not hurt the connection')
  a.onRequest((v) => `client answers ${String(v)}`)
  t.equal(await b.request('both ways'), 'client answers both ways')
})

t.test('received buffers are views over the Buffer ws delivered; misaligned ones are copied once and counted', async (t) => {
  // Frames only: on one host a buffer of 1 MiB would go through a file once the peers proved it.
  const { a, b } = await pair(t, { sameHost: false }, { sameHost: false })
  const delivered: Buffer[] = []
  b.ws.prependListener('message', (data) => delivered.push(data as Buffer))
  const big = new Float64Array(2 ** 17).map((_, i) => i) // 1 MiB: ws assembles it into a Buffer of its own
  await a.send(new PickleBuffer(big))
  const bigBack = (await b.receive() as PickleBuffer).raw()
  const frame = delivered.at(-1)!
  t.equal(bigBack.buffer, frame.buffer, 'the large buffer is a view over the very memory ws delivered')
  t.equal(bigBack.byteOffset, frame.byteOffset)
  t.equal(b.stats().bytesCopied, 0, 'and nothing was copied')
  // Small frames are slices of the socket's chunk, at any offset: pickles of every length shift them.
  let copies = 0
  let views = 0
  for (let i = 0; i < 64; i++) {
    delivered.length = 0
    await a.send([`${'x'.repeat(i)}`, new PickleBuffer(new Float64Array(200).fill(i))])
    const [, pb] = await b.receive() as [string, PickleBuffer]
    const raw = pb.raw()
    t.equal(raw.byteOffset % 8, 0, 'every Float64 buffer arrives aligned')
    const fromWs = delivered.at(-1)!
    if (raw.buffer === fromWs.buffer && raw.byteOffset === fromWs.byteOffset) views++
    else copies++
    t.same(new Float64Array(raw.buffer, raw.byteOffset, 200)[199], i)
  }
  t.equal(b.stats().alignmentCopies, copies, 'every copy is counted')
  t.equal(b.stats().bytesCopied, copies * 1600)
  t.ok(copies > 0 && views > 0, `some views were misaligned and copied (${copies}), the rest used as they came (${views})`)
})

t.test('NDArrays cross as numpy arrays and load without a copy', async (t) => {
  const { a, b } = await pair(t)
  const arrays = [
    new NDArray(new Float32Array(4096).map((_, i) => i / 3), { shape: [64, 64] }),
    new NDArray(new Float64Array(30).map((_, i) => -i), { shape: [5, 6], order: 'F' }),
    new NDArray(new BigInt64Array(512).map((_, i) => BigInt(i) ** 3n), { shape: [8, 8, 8] }),
    new NDArray(new Int16Array(1000).fill(-7), { readonly: true }),
  ]
  for (const x of arrays) await a.send(x)
  for (const x of arrays) {
    const y = await b.receive() as NDArray
    t.type(y, NDArray)
    t.equal(y.dtype.str, x.dtype.str)
    t.same(y.shape, x.shape)
    t.equal(y.order, x.order)
    t.equal(y.readonly, x.readonly)
    t.same([...y.bytes()], [...x.bytes()])
    t.equal(y.copied, false, `${y.dtype.str} ${y.shape.join('x')} is a view over the received bytes`)
  }
})

t.test('backpressure: a consumer that does not read makes send() wait instead of buffering', async (t) => {
  const highWaterMark = 2 ** 20
  const { a, b } = await pair(t, { receiveHighWaterMark: highWaterMark }, { highWaterMark })
  const payload = new PickleBuffer(new Uint8Array(2 ** 20))
  const total = 96
  let sent = 0
  const sending = (async () => {
    for (let i = 0; i < total; i++) {
      await a.send([i, payload])
      sent++
    }
  })()
  await new Promise((r) => setTimeout(r, 500))
  t.ok(sent < total, `the sender is waiting (${sent} of ${total} sent while nobody reads)`)
  t.ok(a.stats().sendWaits > 0, 'send() waited')
  t.ok(a.stats().maxBufferedBytes <= highWaterMark + 2 ** 20 + 4096, `at most the high-water mark and one message were buffered (${a.stats().maxBufferedBytes})`)
  t.ok(b.stats().receivePauses > 0, 'the receiver paused reading')
  const order: number[] = []
  for await (const v of b) {
    order.push((v as [number])[0])
    if (order.length === total) break
  }
  await within(10_000, sending, 'the sender to finish')
  t.same(order, Array.from({ length: total }, (_, i) => i))
})

t.test('heartbeats: a peer that stops answering pings is a TIMEOUT (4408); a live one stays', async (t) => {
  const server = await listenPickleSocket({ heartbeatInterval: 50, heartbeatTimeout: 100, onRequest: (v) => v })
  t.teardown(() => server.close())
  const accepted = once(server, 'connection')
  const mute = new WebSocket(server.url, { autoPong: false })
  const [sock] = (await accepted) as [PickleSocket]
  const closed = closeOf(mute)
  const info = await within(5000, sock.closed, 'the heartbeat timeout')
  t.equal(codeOf(info.error), 'TIMEOUT')
  t.match(info.error!.message, /no answer to a heartbeat ping within 100 ms/)
  t.ok([4408, 1006].includes((await closed).code), 'the mute peer is dropped')

  // A generous timeout here: a busy machine must not make a live peer look dead.
  const patient = await listenPickleSocket({ heartbeatInterval: 50, heartbeatTimeout: 5000, onRequest: (v) => v })
  t.teardown(() => patient.close())
  const live = await connectPickleSocket(patient.url, { heartbeatInterval: 50, heartbeatTimeout: 5000 })
  let pings = 0
  live.ws.on('ping', () => pings++)
  await new Promise((r) => setTimeout(r, 600))
  t.ok(pings >= 4, `the server pinged (${pings} times) and got its pongs`)
  t.equal(await live.request('alive'), 'alive')
  await live.close()
})

t.test('clean close: iteration ends, waiting requests and later sends fail with CLOSED', async (t) => {
  const { a, b } = await pair(t, { onRequest: () => new Promise(() => {}) })
  const got = collect(a)
  const pending = a.request('unanswered').catch((e: unknown) => e)
  await b.send('last words')
  await new Promise((r) => setTimeout(r, 50))
  const info = await b.close()
  t.same(info, { code: 1000, reason: '', error: null })
  t.equal(await got.done, null, 'the iteration ended without an error')
  t.same(got.values, ['last words'])
  t.equal(codeOf(await pending), 'CLOSED')
  t.equal(codeOf(await a.send('late').catch((e: unknown) => e)), 'CLOSED')
  t.equal(codeOf(await a.receive().catch((e: unknown) => e)), 'CLOSED')
  t.equal((await a.closed).code, 1000)
})

t.test('an abrupt end is an error for everything waiting', async (t) => {
  const { a, b } = await pair(t, { onRequest: () => new Promise(() => {}) })
  const pending = a.request('x').catch((e: unknown) => e)
  const next = a.receive().catch((e: unknown) => e)
  await new Promise((r) => setTimeout(r, 20))
  b.terminate()
  t.equal(codeOf(await pending), 'CLOSED')
  t.match((await next as Error).message, /cut without a close handshake \(1006\)/)
  t.equal((await a.closed).code, 1006)
})

t.test('HMAC-SHA256: the same key works; a different one is refused with 4401 and nothing delivered', async (t) => {
  const key = 'correct horse battery staple'
  const { a, b } = await pair(t, { key }, { key })
  await a.send(new PickleBuffer(new Uint8Array(10_000).fill(3)))
  t.equal((await b.receive() as PickleBuffer).raw().length, 10_000)
  const server = await listenPickleSocket({ key })
  t.teardown(() => server.close())
  const accepted = once(server, 'connection')
  const wrong = await connectPickleSocket(server.url, { key: 'another key' })
  const [victim] = (await accepted) as [PickleSocket]
  const got = collect(victim)
  await wrong.send('forged')
  t.equal(codeOf((await wrong.closed).error), 'AUTH')
  t.equal((await wrong.closed).code, 4401)
  t.equal(codeOf(await got.done), 'AUTH')
  t.same(got.values, [])
})

t.test('limits: checked from the header, refused with LIMIT and 4413', async (t) => {
  const limits = { maxBuffers: 2, maxBufferBytes: 8192, maxPickleBytes: 2048, maxMessageBytes: 12_000 }
  const cases: [string, unknown, RegExp][] = [
    ['three buffers', [1, 2, 3].map(() => new PickleBuffer(new Uint8Array(1024))), /3 buffers is over maxBuffers \(2\)/],
    ['a buffer too large', new PickleBuffer(new Uint8Array(8193)), /buffer of 8193 bytes is over maxBufferBytes/],
    ['a pickle too large', 'p'.repeat(3000), /pickle of \d+ bytes is over maxPickleBytes/],
    ['a message too large', [new PickleBuffer(new Uint8Array(8000)), new PickleBuffer(new Uint8Array(8000))], /message of \d+ bytes is over maxMessageBytes/],
  ]
  for (const [name, value, why] of cases) {
    const server = await listenPickleSocket({ limits })
    const accepted = once(server, 'connection')
    const c = await connectPickleSocket(server.url)
    const [s] = (await accepted) as [PickleSocket]
    const got = collect(s)
    await c.send('fine')
    await c.send(value)
    const err = await got.done
    t.equal(codeOf(err), 'LIMIT', name)
    t.match(err?.message, why)
    t.same(got.values, ['fine'], `${name}: only the message before it was delivered`)
    t.equal((await c.closed).code, 4413)
    t.equal(codeOf((await c.closed).error), 'LIMIT', 'the sender learns why')
    await server.close()
  }
})

/** A self-signed certificate for 127.0.0.1 made by openssl now, or why there is none. */
function selfSigned(): { key: Buffer; cert: Buffer } | string {
  const dir = mkdtempSync(join(tmpdir(), 'picklewire-wss-'))
  try {
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'),
      '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'pipe' })
    return { key: readFileSync(join(dir, 'key.pem')), cert: readFileSync(join(dir, 'cert.pem')) }
  } catch (err) {
    return `openssl could not make a self-signed certificate here (${(err as Error).message.split('\n')[0]}), so wss is not tested`
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}
const tls = selfSigned()

t.test('wss: TLS through ws\'s own options (self-signed certificate made with openssl)', { skip: typeof tls === 'string' ? tls : false }, async (t) => {
  if (typeof tls === 'string') return
  const { cert } = tls
  const https = createServer(tls)
  const server = await listenPickleSocket({ server: https, onRequest: (v) => v })
  https.listen(0, '127.0.0.1')
  await once(https, 'listening')
  t.teardown(async () => {
    await server.close()
    https.close()
  })
  t.match(server.url, /^wss:\/\/127\.0\.0\.1:\d+\/$/)
  const refused = await connectPickleSocket(server.url).catch((e: unknown) => e)
  t.equal(codeOf(refused), 'CLOSED', 'a client that does not trust the certificate cannot connect')
  t.match((refused as Error).message, /self.signed/i)
  const c = await connectPickleSocket(server.url, { ws: { ca: cert } })
  const value = new NDArray(new Float32Array(10_000).fill(1.5), { shape: [100, 100] })
  const back = await c.request(value) as NDArray
  t.same([...back.bytes()], [...value.bytes()], 'a tensor crossed over TLS')
  await c.close()
})

t.test('options: documented defaults, clear errors for bad values', async (t) => {
  t.equal(DEFAULT_HIGH_WATER_MARK, 8 * 2 ** 20)
  t.equal(DEFAULT_RECEIVE_HIGH_WATER_MARK, 64 * 2 ** 20)
  t.equal(DEFAULT_HEARTBEAT_INTERVAL, 20_000)
  t.throws(() => connectPickleSocket('ws://127.0.0.1:1/', { highWaterMark: -1 }), /option highWaterMark must be an integer of at least 0, got -1/)
  t.throws(() => connectPickleSocket('ws://127.0.0.1:1/', { heartbeatTimeout: 0 }), /heartbeatTimeout/)
  t.throws(() => connectPickleSocket('ws://127.0.0.1:1/', { key: '' }), /option key must be a non-empty/)
  t.throws(() => connectPickleSocket('ws://127.0.0.1:1/', { limits: { maxBuffers: 0 } }), /limit maxBuffers must be a positive integer/)
  const refused = await connectPickleSocket('ws://127.0.0.1:1/').catch((e: unknown) => e)
  t.equal(codeOf(refused), 'CLOSED')
  t.match((refused as Error).message, /cannot connect to ws:\/\/127\.0\.0\.1:1\/: .*ECONNREFUSED/)
})
