/**
 * What a PickleSocket does when its peer goes away or misbehaves: sends stop and say so,
 * messages that were not written are never counted as sent, refused messages never vanish,
 * and a peer cannot make this side hold memory it has not agreed to.
 */
import { once } from 'node:events'
import t, { type Test } from 'tap'
import { PickleBuffer, dumps } from '@picklewire/codec'
import { connectPickleSocket, listenPickleSocket, type PickleSocket, type WebSocket } from '@picklewire/transport'
import { encodeWireHeader } from '../../packages/transport/dist/ws/wire.js'
import { closeOf, pair, rawClient, within } from './ws-helpers.js'

/** A call of os.system('true') as CPython pickles it (STACK_GLOBAL posix.system, REDUCE): the default registry refuses it. */
const REFUSED = Buffer.from('\x80\x04\x95\x19\x00\x00\x00\x00\x00\x00\x00\x8c\x05posix\x8c\x06system\x93\x8c\x04true\x85R.', 'latin1')

const codeOf = (e: unknown): string | undefined => (e as { code?: string } | null)?.code

/** The socket under a ws WebSocket (ws keeps it private). */
function socketOf(sock: PickleSocket): { destroy(): void; write(b: Uint8Array): boolean } {
  return (sock.ws as unknown as { _socket: { destroy(): void; write(b: Uint8Array): boolean } })._socket
}

/** A picklewire server (closed at the end of the test), a raw ws client and the server's socket for it. */
async function rawSession(t: Test): Promise<{ raw: WebSocket; sock: PickleSocket }> {
  const server = await listenPickleSocket()
  t.teardown(() => server.close())
  const accepted = once(server, 'connection') as Promise<[PickleSocket]>
  const raw = await rawClient(server.url)
  const [sock] = await accepted
  return { raw, sock }
}

t.test('send() rejects with CLOSED once the WebSocket is closing, before the close event', async (t) => {
  const { a } = await pair(t)
  a.ws.close() // ws is CLOSING now; the close event comes after the peer answers
  t.equal(a.ws.readyState, a.ws.CLOSING)
  const err = await a.send('too late').catch((e: unknown) => e)
  t.equal(codeOf(err), 'CLOSED', `refused: ${(err as Error).message}`)
  t.equal(a.stats().messagesSent, 0, 'nothing counted as sent')
})

t.test('a write that fails fails the connection; its messages count as not written, never as sent', async (t) => {
  const { a } = await pair(t)
  // Three small messages handed to ws in one tick (the socket stays corked until the tick ends) ...
  const sends = [a.send({ n: 1 }), a.send({ n: 2 }), a.send({ n: 3 })]
  // ... and the socket is gone before any of them is written.
  socketOf(a).destroy()
  await Promise.allSettled(sends)
  const info = await within(5000, a.closed, 'the close')
  t.equal(a.stats().messagesSent, 0, 'no message counted as sent')
  t.equal(a.stats().bytesSent, 0, 'no bytes counted as sent')
  t.equal(a.stats().messagesNotWritten, 3, 'all three counted as not written')
  t.equal(codeOf(info.error), 'CLOSED', `the connection failed: ${info.error?.message}`)
  t.equal(codeOf(await a.send('after').catch((e: unknown) => e)), 'CLOSED', 'later sends are refused')
})

t.test('messages written before a clean close count as sent; the peer got every one', async (t) => {
  const { a, b } = await pair(t)
  const got: unknown[] = []
  b.on('message', (v) => got.push(v))
  for (let i = 0; i < 100; i++) await a.send(i)
  await a.close()
  await b.closed
  t.equal(a.stats().messagesSent, 100)
  t.equal(a.stats().messagesNotWritten, 0)
  t.same(got, Array.from({ length: 100 }, (_, i) => i))
})

/** A client frame (masked) as a raw writer sends it: FIN + binary, the given payload length. */
function frameHead(length: number): Buffer {
  const head = Buffer.alloc(2 + 8 + 4)
  head[0] = 0x82
  head[1] = 0x80 | 127
  head.writeBigUInt64BE(BigInt(length), 2)
  head.writeUInt32BE(0x01020304, 10) // mask key
  return head
}

t.test('a frame in header position over 64 KiB is refused from its length, before its bytes arrive', async (t) => {
  const { raw, sock } = await rawSession(t)
  const closed = closeOf(raw)
  // A frame announced as 1 GiB, of which only 16 bytes ever come.
  const rawSocket = (raw as unknown as { _socket: { write(b: Uint8Array): boolean } })._socket
  rawSocket.write(Buffer.concat([frameHead(2 ** 30), Buffer.alloc(16)]))
  const { code } = await within(5000, closed, 'the server to refuse the frame')
  t.equal(code, 1009, 'closed with 1009 (message too big)')
  const info = await within(5000, sock.closed, 'the server socket to close')
  t.equal(codeOf(info.error), 'LIMIT')
  t.match(info.error?.message, /frame in header position is over the 65536 bytes allowed/)
})

t.test('the same frame inside a message is bounded by the limits (a buffer announced by the header may be big)', async (t) => {
  const server = await listenPickleSocket({ limits: { maxBufferBytes: 1 << 20, maxMessageBytes: 1 << 20 } })
  t.teardown(() => server.close())
  const accepted = once(server, 'connection') as Promise<[PickleSocket]>
  const client = await connectPickleSocket(server.url)
  const [sock] = await accepted
  const value = new PickleBuffer(new Uint8Array(200_000).fill(3))
  await client.send(value)
  const got = await within(5000, sock.receive(), 'the 200,000-byte buffer')
  t.equal((got as Uint8Array).byteLength, 200_000, 'a buffer frame over 64 KiB is accepted where the header announced it')
  await client.close()
})

t.test('lengths encoded as msgpack floats are refused, as the Python peer refuses them', async (t) => {
  const { raw, sock } = await rawSession(t)
  const closed = closeOf(raw)
  // {v: 1, id: 1, k: 'msg', p: 5.0 (float 64), b: [], ro: []}
  const p = Buffer.alloc(9)
  p[0] = 0xcb
  p.writeDoubleBE(5, 1)
  const h = Buffer.concat([
    Buffer.from([0x86, 0xa1, 0x76, 0x01, 0xa2, 0x69, 0x64, 0x01, 0xa1, 0x6b, 0xa3, 0x6d, 0x73, 0x67, 0xa1, 0x70]),
    p,
    Buffer.from([0xa1, 0x62, 0x90, 0xa2, 0x72, 0x6f, 0x90]),
  ])
  raw.send(h, { binary: true })
  raw.send(Buffer.from([0x80, 0x05, 0x4b, 0x01, 0x2e]), { binary: true }) // a 5-byte pickle: 1
  const { code } = await within(5000, closed, 'the close')
  t.equal(code, 4400)
  const info = await within(5000, sock.closed, 'the server socket to close')
  t.equal(codeOf(info.error), 'PROTOCOL')
  t.match(info.error?.message, /p must be a msgpack integer/)
})

t.test("with only a 'message' listener, a refused message fails the connection instead of vanishing", async (t) => {
  const { raw, sock } = await rawSession(t)
  const got: unknown[] = []
  sock.on('message', (v) => got.push(v))
  const closed = closeOf(raw)
  const pickle = REFUSED
  raw.send(encodeWireHeader({ v: 1, id: 1, k: 'msg', p: pickle.length, b: [], ro: [] }), { binary: true })
  raw.send(pickle, { binary: true })
  const { code } = await within(5000, closed, 'the close')
  t.equal(code, 4400, 'the peer learns the message was refused')
  const info = await within(5000, sock.closed, 'the server socket to close')
  t.equal(codeOf(info.error), 'PROTOCOL')
  t.match(info.error?.message, /posix\.system/, `the error names the global: ${info.error?.message}`)
  t.same(got, [], 'nothing delivered')
})

t.test("with an 'error' listener, a refused message goes to it and the connection stays open", async (t) => {
  const { raw, sock } = await rawSession(t)
  const errors: Error[] = []
  const got: unknown[] = []
  sock.on('error', (e) => errors.push(e))
  sock.on('message', (v) => got.push(v))
  const send = (id: number, pickle: Uint8Array): void => {
    raw.send(encodeWireHeader({ v: 1, id, k: 'msg', p: pickle.length, b: [], ro: [] }), { binary: true })
    raw.send(pickle, { binary: true })
  }
  send(1, REFUSED)
  send(2, dumps('after', { protocol: 5 }))
  await within(5000, (async () => { while (got.length < 1) await new Promise((r) => setTimeout(r, 10)) })(), 'the next message')
  t.equal(errors.length, 1, 'the refused message went to the error listener')
  t.match(errors[0]?.message, /posix\.system/)
  t.same(got, ['after'], 'the next message arrives')
  t.equal(sock.error, null, 'the connection is fine')
  raw.close()
})

t.test('a client that never reads its replies cannot make the server make and hold them without bound', async (t) => {
  let answered = 0
  const { a, b } = await pair(t, {
    highWaterMark: 2 << 20,
    maxConcurrentRequests: 8,
    sameHost: false, // frames only: the replies of 1 MiB would go through files on one host
    onRequest: () => {
      answered++
      return new PickleBuffer(new Uint8Array(1 << 20).fill(1)) // a fresh 1 MiB per reply
    },
  })
  // The client stops reading: its socket buffers fill, then the server's.
  a.ws.pause()
  const requests = Array.from({ length: 300 }, (_, i) => a.request(i))
  await new Promise((r) => setTimeout(r, 1500))
  const whilePaused = answered
  // The kernel's socket buffers take a few replies; the server holds at most 8 beyond its 2 MiB mark.
  t.ok(whilePaused < 60, `the server answered ${whilePaused} of 300 requests while the client read nothing`)
  t.ok(b.stats().replyPauses > 0, 'and paused reading')
  t.ok(b.stats().bufferedBytes <= (2 << 20) + (1 << 20) + 4096, `replies handed to ws and unwritten: ${b.stats().bufferedBytes} bytes (high-water mark 2 MiB)`)
  a.ws.resume()
  const replies = await within(30_000, Promise.all(requests), 'every reply once the client reads')
  t.equal(replies.length, 300, 'every request answered, none lost')
  t.ok(replies.every((r) => (r as Uint8Array).byteLength === 1 << 20))
})

t.test('maxConcurrentRequests is checked', async (t) => {
  await t.rejects(listenPickleSocket({ maxConcurrentRequests: 0 }), TypeError)
  await t.rejects(listenPickleSocket({ maxConcurrentRequests: 1.5 }), /maxConcurrentRequests must be an integer of at least 1, got 1.5/)
})

t.test("a peer flooding pings is cut by ws's guard, and the error says so (not that the peer closed)", async (t) => {
  const { raw, sock } = await rawSession(t)
  // 100 masked, empty ping frames in one write: ws parses them in one go, before any pong is written.
  const ping = Buffer.from([0x89, 0x80, 1, 2, 3, 4])
  ;(raw as unknown as { _socket: { write(b: Uint8Array): boolean } })._socket.write(Buffer.concat(Array.from({ length: 100 }, () => ping)))
  const info = await within(5000, sock.closed, 'the server to cut the connection')
  t.equal(codeOf(info.error), 'LIMIT', `the server's error: ${info.error?.message}`)
  t.match(info.error?.message, /pings faster than it read/)
})
