/**
 * Frames crafted by hand with a plain ws client against a picklewire server: every way of
 * breaking the wire protocol gets the documented error and close code (docs/wire-protocol.md),
 * and nothing of the broken message is delivered; the messages before it are.
 */
import t, { type Test } from 'tap'
import { PickleBuffer, dumps } from '@picklewire/codec'
import { listenPickleSocket, type ListenOptions, type PickleSocket, type PickleSocketServer, type WebSocket } from '@picklewire/transport'
import { MAC_BYTES } from '../../packages/transport/dist/ws/auth.js'
import { Packr } from 'msgpackr'
import type { MessageHeader } from '../../packages/transport/dist/ws/wire.js'
import { encodeValue } from '../../packages/transport/dist/message.js'
import { closeOf, collect, rawClient, within, specMac } from './ws-helpers.js'

const KEY = Buffer.from('a shared secret')

// Headers as any msgpack writer may make them (msgpackr here), fields of any type included.
const packr = new Packr({ useRecords: false, variableMapSize: true })
const encodeHeader = (h: object): Uint8Array => packr.pack(h)

function header(h: Partial<MessageHeader> & { p: number }): Uint8Array {
  return encodeHeader({ v: 1, id: 1, k: 'msg', b: [], ro: [], ...h })
}

/** A valid message's frames: header, pickle, buffers (and the MAC, signed as a client, with a key). */
function message(value: unknown, id: number, key: Uint8Array | null = null): Uint8Array[] {
  const parts = encodeValue(value)
  const buffers = parts.buffers as Uint8Array[] // small buffers: Uint8Arrays (a DataView is for those over 4 GiB)
  const h: MessageHeader = { v: 1, id, k: 'msg', p: parts.pickle.length, b: buffers.map((b) => b.length), ro: parts.readonly }
  if (key) h.x = { auth: 'hmac-sha256' }
  const frames = [encodeHeader(h), parts.pickle, ...buffers]
  if (key) frames.push(mac(key, frames))
  return frames
}

const mac = specMac

interface Outcome {
  code: number
  reason: string
  error: Error | null
  delivered: unknown[]
}

/** Sends the frames from a raw client to a fresh server; reports the close, the server's error and what it delivered. */
async function session(frames: (Uint8Array | string)[], options: ListenOptions = {}, after?: (ws: WebSocket) => void): Promise<Outcome> {
  const server: PickleSocketServer = await listenPickleSocket(options)
  try {
    const accepted = new Promise<PickleSocket>((resolve) => server.once('connection', resolve))
    const ws = await rawClient(server.url)
    const sock = await accepted
    const got = collect(sock)
    const closed = closeOf(ws)
    for (const f of frames) ws.send(f, { binary: typeof f !== 'string' })
    after?.(ws)
    const { code, reason } = await closed
    const error = await within(10_000, got.done, 'the server socket to end')
    return { code, reason, error, delivered: got.values }
  } finally {
    await server.close()
  }
}

function expectFailure(t: Test, o: Outcome, code: string, closeCode: number, delivered: unknown[] = [], pattern?: RegExp): void {
  t.equal((o.error as { code?: string } | null)?.code, code, `the server reports ${code}: ${o.error?.message}`)
  t.equal(o.code, closeCode, `the client sees close code ${closeCode} (${o.reason})`)
  t.same(o.delivered, delivered, 'nothing of the broken message was delivered')
  if (pattern) t.match(o.error?.message ?? '', pattern)
}

const ok = message('first', 1)

t.test('a valid message is delivered (the baseline of every case below)', async (t) => {
  const o = await session([...ok, ...message('second', 2)], {}, (ws) => setTimeout(() => ws.close(1000), 50))
  t.equal(o.error, null)
  t.equal(o.code, 1000)
  t.same(o.delivered, ['first', 'second'])
})

t.test('wrong protocol version: PROTOCOL, close 4426', async (t) => {
  const pickle = dumps('x', { protocol: 5 })
  const o = await session([...ok, encodeHeader({ v: 2, id: 2, k: 'msg', p: pickle.length, b: [], ro: [] }), pickle])
  expectFailure(t, o, 'PROTOCOL', 4426, ['first'], /unsupported protocol version 2/)
})

t.test('a header that is not msgpack, or not a map: PROTOCOL, close 4400', async (t) => {
  expectFailure(t, await session([...ok, Uint8Array.of(0xc1)]), 'PROTOCOL', 4400, ['first'], /bad message header: not (msgpack|a map)/)
  expectFailure(t, await session([...ok, dumps('pickle where the header goes', { protocol: 5 })]), 'PROTOCOL', 4400, ['first'])
})

t.test('a text frame: PROTOCOL, close 4400', async (t) => {
  expectFailure(t, await session([...ok, 'hello']), 'PROTOCOL', 4400, ['first'], /text frame/)
  expectFailure(t, await session([ok[0]!, 'in the middle']), 'PROTOCOL', 4400, [], /text frame in message 1/)
})

t.test('truncated frames: PROTOCOL, close 4400', async (t) => {
  const pickle = dumps(new PickleBuffer(new Uint8Array(4096)), { protocol: 5, bufferCallback: () => false })
  expectFailure(t, await session([...ok, header({ id: 2, p: pickle.length + 10 }), pickle]), 'PROTOCOL', 4400, ['first'], /pickle frame of message 2 is \d+ bytes; its header announced/)
  expectFailure(t, await session([header({ p: pickle.length, b: [4096], ro: [false] }), pickle, new Uint8Array(4000)]), 'PROTOCOL', 4400, [], /buffer 0 of message 1 is 4000 bytes/)
})

t.test('reordered frames: PROTOCOL when the lengths give it away, AUTH when only the MAC does', async (t) => {
  const parts = encodeValue([new PickleBuffer(new Uint8Array(2048).fill(1)), new PickleBuffer(new Uint8Array(2048).fill(2))])
  const h = header({ p: parts.pickle.length, b: [2048, 2048], ro: [false, false] })
  expectFailure(t, await session([h, parts.buffers[0] as Uint8Array, parts.pickle, parts.buffers[1] as Uint8Array]), 'PROTOCOL', 4400)
  const signed = message([new PickleBuffer(new Uint8Array(2048).fill(1)), new PickleBuffer(new Uint8Array(2048).fill(2))], 1, KEY)
  const swapped = [signed[0]!, signed[1]!, signed[3]!, signed[2]!, signed[4]!]
  expectFailure(t, await session(swapped, { key: KEY }), 'AUTH', 4401, [], /failed authentication/)
  t.same((await session(signed, { key: KEY }, (ws) => setTimeout(() => ws.close(), 50))).delivered.length, 1, 'in order, the same frames are accepted')
})

t.test('messages out of sequence (lost, repeated): PROTOCOL, close 4400', async (t) => {
  expectFailure(t, await session(message('two', 2)), 'PROTOCOL', 4400, [], /id 2 out of sequence: expected 1/)
  expectFailure(t, await session([...ok, ...ok]), 'PROTOCOL', 4400, ['first'], /id 1 out of sequence: expected 2/)
})

t.test('oversized: refused from the header, before the frames are sent (LIMIT, 4413); a frame over maxPayload (LIMIT, 1009)', async (t) => {
  const limits = { maxBuffers: 2, maxBufferBytes: 4096, maxPickleBytes: 1024, maxMessageBytes: 6000 }
  // Only the header is sent: the server refuses on what it announces.
  expectFailure(t, await session([...ok, header({ id: 2, p: 10, b: [2 ** 31], ro: [false] })], { limits }), 'LIMIT', 4413, ['first'], /over maxBufferBytes/)
  expectFailure(t, await session([header({ p: 10, b: [1, 1, 1], ro: [false, false, false] })], { limits }), 'LIMIT', 4413, [], /over maxBuffers/)
  expectFailure(t, await session([header({ p: 2048 })], { limits }), 'LIMIT', 4413, [], /over maxPickleBytes/)
  expectFailure(t, await session([header({ p: 1000, b: [4096, 4096], ro: [false, false] })], { limits }), 'LIMIT', 4413, [], /over maxMessageBytes/)
  // ws refuses a frame larger than any limit allows (maxPayload, 64 KiB here) before buffering it.
  expectFailure(t, await session([new Uint8Array(100_000)], { limits }), 'LIMIT', 1009)
})

t.test('tampered frames with a key: AUTH, close 4401', async (t) => {
  const frames = message({ data: new PickleBuffer(new Uint8Array(4096).fill(9)) }, 1, KEY)
  const flip = (i: number, at: number): Uint8Array[] => frames.map((f, j) => {
    if (j !== i) return f
    const copy = Uint8Array.from(f)
    copy[at]! ^= 1
    return copy
  })
  expectFailure(t, await session(flip(1, 5), { key: KEY }), 'AUTH', 4401, [], /message 1 failed authentication/)
  expectFailure(t, await session(flip(2, 1000), { key: KEY }), 'AUTH', 4401)
  expectFailure(t, await session(flip(3, 0), { key: KEY }), 'AUTH', 4401)
  expectFailure(t, await session([...frames.slice(0, 3), frames[3]!.subarray(0, 16)], { key: KEY }), 'AUTH', 4401, [], /failed authentication/)
  expectFailure(t, await session(message('signed with another key', 1, Buffer.from('other')), { key: KEY }), 'AUTH', 4401)
  const asServer = [...frames.slice(0, 3), mac(KEY, frames.slice(0, 3), 'picklewire.v1 server')]
  expectFailure(t, await session(asServer, { key: KEY }), 'AUTH', 4401, [], /failed authentication/)
  expectFailure(t, await session(message('no mac', 1), { key: KEY }), 'AUTH', 4401, [], /not authenticated/)
  expectFailure(t, await session(frames), 'AUTH', 4401, [], /this side has no key/)
})

t.test('headers that break the rules: PROTOCOL, close 4400', async (t) => {
  const pickle = dumps(1, { protocol: 5 })
  expectFailure(t, await session([header({ p: pickle.length, k: 'nope' }), pickle]), 'PROTOCOL', 4400, [], /unknown kind "nope"/)
  expectFailure(t, await session([header({ p: pickle.length, k: 'rep' }), pickle]), 'PROTOCOL', 4400, [], /does not name the request/)
  expectFailure(t, await session([header({ p: pickle.length, b: [1], ro: [false], x: { al: [3] } }), pickle, Uint8Array.of(1)]), 'PROTOCOL', 4400, [], /x\.al/)
  expectFailure(t, await session([header({ p: pickle.length, b: [1], ro: [] })]), 'PROTOCOL', 4400, [], /read-only flags/)
})

t.test('a peer that dies mid-message: CLOSED, nothing delivered, no hang', async (t) => {
  const pickle = dumps(new PickleBuffer(new Uint8Array(4096)), { protocol: 5, bufferCallback: () => false })
  const o = await session([...ok, header({ id: 2, p: pickle.length, b: [4096], ro: [false] }), pickle], {}, (ws) => setTimeout(() => ws.terminate(), 50))
  t.equal((o.error as { code?: string } | null)?.code, 'CLOSED')
  t.match(o.error?.message, /closed \(1006\) in message 2 after 2 of its 3 frames: the message is lost/)
  t.same(o.delivered, ['first'])
})

t.test('a pickle the unpickler refuses is that message\'s error; the connection stays open', async (t) => {
  const server = await listenPickleSocket()
  t.teardown(() => server.close())
  const accepted = new Promise<PickleSocket>((resolve) => server.once('connection', resolve))
  const ws = await rawClient(server.url)
  const sock = await accepted
  const evil = new Uint8Array([0x80, 0x05, ...Buffer.from('\x8c\x02os\x8c\x06system\x93.', 'latin1')])
  ws.send(header({ p: evil.length }))
  ws.send(evil)
  for (const f of message('after', 2)) ws.send(f)
  await t.rejects(within(5000, sock.receive(), 'the refused message'), /global 'os.system' is forbidden/)
  t.equal(await within(5000, sock.receive(), 'the next message'), 'after')
  t.equal(sock.error, null)
  ws.close()
  await sock.closed
})

t.test('MAC_BYTES is what the frames carry', async (t) => {
  t.equal(message('x', 1, KEY).at(-1)!.length, MAC_BYTES)
})

t.test('the test vector of docs/wire-protocol.md section 6 is accepted', async (t) => {
  const vector = [
    '87a17601a2696401a16ba36d7367a17014a1629110a2726f91c2a17882a2616c9108a461757468ab686d61632d736861323536',
    '80059509000000000000007d948c01789497732e',
    '000102030405060708090a0b0c0d0e0f',
    'e080ed1e2886ec9b49c6553b0a73555d795d4dbe925af9dfb0d93b1192016f9b',
  ].map((h) => Buffer.from(h, 'hex'))
  const o = await session(vector, { key: Buffer.from('picklewire test key') }, (ws) => setTimeout(() => ws.close(), 50))
  t.equal(o.error, null)
  const x = (o.delivered[0] as Map<string, PickleBuffer>).get('x')!
  t.same([...x.raw()], Array.from({ length: 16 }, (_, i) => i))
  const tampered = vector.map((f, i) => (i === 3 ? Buffer.from(f.map((b, j) => (j === 0 ? b ^ 1 : b))) : f))
  expectFailure(t, await session(tampered, { key: Buffer.from('picklewire test key') }), 'AUTH', 4401)
})
