/**
 * The tcp read path: connectDask reads through net's onread with a function for the buffer, so
 * that TcpFrameReader.readTarget() can point each socket read either at a small scratch buffer
 * (preludes, lengths, small frames) or straight into the frame being received (big frames, no
 * second copy). Checked here with the reads emulated (every cut near every boundary, reads of
 * every size) and through real sockets from a local server that speaks Dask's handshake and then
 * sends messages cut into odd pieces, stops in the middle of one, or announces too much.
 */
import { randomFillSync } from 'node:crypto'
import net from 'node:net'
import t, { type Test } from 'tap'
import { DEFAULT_DASK_LIMITS, TransportError, WarmMemory, connectDask, type DaskComm, type DaskLimits } from '@picklewire/transport'
import { FRAME_ALIGNMENT, TcpFrameReader, encodeTcpPrelude, resolveDaskLimits } from '../../packages/transport/dist/dask/framing.js'
import { dumpsMessage } from '../../packages/transport/dist/dask/protocol.js'
import { within } from './dask-helpers.js'

/** Frames at least this long (still to come) are read in place; framing.ts's DIRECT_READ_BYTES. */
const DIRECT = 64 * 1024

function tcpBytes(frames: Uint8Array[]): Uint8Array {
  return new Uint8Array(Buffer.concat([encodeTcpPrelude(frames), ...frames]))
}

function random(n: number): Uint8Array {
  return randomFillSync(new Uint8Array(n))
}

function u64s(...ns: (number | bigint)[]): Uint8Array {
  const out = new Uint8Array(8 * ns.length)
  const v = new DataView(out.buffer)
  ns.forEach((n, i) => v.setBigUint64(8 * i, BigInt(n), true))
  return out
}

/** Frames around the direct-read threshold, empty and tiny ones, and lengths that are not multiples of 64. */
const FRAMES = [
  new TextEncoder().encode('header'),
  random(DIRECT + 3),
  new Uint8Array(0),
  random(DIRECT - 1),
  random(2 * DIRECT + 100),
  random(5),
  random(DIRECT),
]

/**
 * Feeds `stream` to a reader the way net's onread does: each read lands in what readTarget()
 * returned, at most `sizes(i)` bytes and never more than that target holds.
 */
function readAll(stream: Uint8Array, sizes: (i: number, at: number) => number) {
  const r = new TcpFrameReader(DEFAULT_DASK_LIMITS)
  const scratch = new Uint8Array(4096)
  const messages: Uint8Array[][] = []
  let direct = 0
  for (let at = 0, i = 0; at < stream.length; i++) {
    const target = r.readTarget(scratch)
    const n = Math.min(sizes(i, at), target.length, stream.length - at)
    if (n <= 0) throw new Error(`read ${i} of ${n} bytes`)
    target.set(stream.subarray(at, at + n))
    if (target !== scratch) direct++
    messages.push(...r.afterRead(target, n))
    at += n
  }
  return { messages, direct, idle: r.idle }
}

/** Why `got` is not `want` as frames 64-byte aligned in one buffer, or null. */
function messageProblem(got: Uint8Array[] | undefined, want: Uint8Array[]): string | null {
  if (!got || got.length !== want.length) return `${got?.length} frames, want ${want.length}`
  for (let i = 0; i < want.length; i++) if (Buffer.compare(got[i]!, want[i]!) !== 0) return `frame ${i} differs`
  if (!got.every((f) => f.byteOffset % FRAME_ALIGNMENT === 0 && f.buffer === got[0]!.buffer)) return 'frames not 64-byte aligned views of one buffer'
  return null
}

function checkMessage(t: Test, got: Uint8Array[] | undefined, want: Uint8Array[], what: string): void {
  const problem = messageProblem(got, want)
  t.ok(problem === null, `${what}: ${problem ?? 'whole, aligned, in one buffer'}`)
}

t.test('reads into readTarget(): cut near every boundary, big frames read in place', async (t) => {
  const small = [Uint8Array.of(9)]
  const stream = new Uint8Array(Buffer.concat([tcpBytes(FRAMES), tcpBytes(small), tcpBytes([])]))
  // Every field and frame boundary, and where a frame has exactly DIRECT bytes left.
  const marks = [0, 8, 16, 16 + 8 * FRAMES.length]
  let at = 16 + 8 * FRAMES.length
  for (const f of FRAMES) {
    marks.push(at + f.length, at + f.length - DIRECT)
    at += f.length
  }
  const cuts = new Set<number>()
  for (const m of marks) for (let d = -9; d <= 9; d++) if (m + d > 0 && m + d < stream.length) cuts.add(m + d)
  let ok = 0
  for (const cut of cuts) {
    // One read up to the cut (or as far as the target allows), then reads of whatever is left.
    const { messages, idle } = readAll(stream, (i, pos) => (pos < cut ? cut - pos : stream.length))
    if (messages.length !== 3 || !idle) {
      t.fail(`cut at ${cut}: ${messages.length} messages, idle ${idle}`)
      continue
    }
    const problem = messageProblem(messages[0], FRAMES) ?? messageProblem(messages[1], small)
    if (problem) t.fail(`cut at ${cut}: ${problem}`)
    else ok++
  }
  t.equal(ok, cuts.size, `${cuts.size} cuts, each giving the messages back whole`)

  const sizes = [1, 7, 63, 64, 4096, 65535, 65536, 100_000, 1 << 20]
  for (const size of sizes) {
    const { messages, direct, idle } = readAll(stream, () => size)
    checkMessage(t, messages[0], FRAMES, `reads of ${size} bytes`)
    t.ok(messages.length === 3 && idle, `reads of ${size} bytes: three messages, nothing left over`)
    if (size >= DIRECT) t.ok(direct > 0, `reads of ${size} bytes: big frames read in place (${direct} reads)`)
  }
  const odd = readAll(stream, (i) => [1, 3, 70_000, 17, 5000, 131_073][i % 6]!)
  checkMessage(t, odd.messages[0], FRAMES, 'reads of mixed sizes')
})

t.test('readTarget(): the limits are checked before the message buffer exists', async (t) => {
  const r = new TcpFrameReader(resolveDaskLimits({ maxMessageBytes: 1 << 20 }))
  const scratch = new Uint8Array(64)
  const target = r.readTarget(scratch)
  t.equal(target, scratch, 'the prelude goes to scratch')
  target.set(u64s(2 ** 40, 1))
  t.throws(() => r.afterRead(target, 16), { name: 'TransportError', code: 'LIMIT' })
})

/** A fake Dask listener: writes the handshake, then hands each socket to `serve` once the client's handshake is in. */
async function fakeDask(t: Test, serve: (s: net.Socket) => void): Promise<string> {
  const handshake = dumpsMessage({ compression: null, python: [3, 11, 2], 'pickle-protocol': 5 }, { pickleProtocol: 5, compression: null, shardBytes: 1 << 26 })
  const sockets = new Set<net.Socket>()
  const server = net.createServer((s) => {
    sockets.add(s)
    s.setNoDelay(true)
    s.on('error', () => {})
    s.write(tcpBytes(handshake))
    // The client's handshake: one small message; whatever it is, start once it has arrived.
    s.once('data', () => serve(s))
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  t.teardown(() => {
    for (const s of sockets) s.destroy()
    server.close()
  })
  return `tcp://127.0.0.1:${(server.address() as net.AddressInfo).port}`
}

/** Writes bytes in pieces of the given sizes, one socket write per turn of the event loop. */
async function writeInPieces(s: net.Socket, bytes: Uint8Array, size: (i: number) => number): Promise<void> {
  for (let at = 0, i = 0; at < bytes.length && !s.destroyed; i++) {
    const n = Math.max(1, size(i))
    s.write(bytes.subarray(at, at + n))
    at += n
    await new Promise((r) => setImmediate(r))
  }
}

async function connect(t: Test, address: string, limits?: Partial<DaskLimits>): Promise<DaskComm> {
  const comm = await connectDask(address, { timeout: 5000, limits })
  t.teardown(() => comm.abort())
  return comm
}

t.test('through a socket: messages written in odd pieces arrive whole, in order, in place', async (t) => {
  const big = random((4 << 20) + 3)
  const messages = [
    FRAMES,
    [Uint8Array.of(1, 2, 3), big, new Uint8Array(0)],
    [],
    [random(100)],
  ]
  const stream = new Uint8Array(Buffer.concat(messages.map(tcpBytes)))
  const pieces = [1, 2, 3, 5, 8, 13, 4096, 65_536, 70_001, 1 << 20]
  const address = await fakeDask(t, (s) => void writeInPieces(s, stream, (i) => pieces[i % pieces.length]!))
  const comm = await connect(t, address)
  for (const [i, want] of messages.entries()) {
    const got = await comm.readFrames({ timeout: 10_000 })
    if (want.length === 0) t.same(got, [], `message ${i}: no frames`)
    else checkMessage(t, got, want, `message ${i}`)
  }
  t.equal(comm.stats().messagesReceived, 5, 'the handshake and four messages')
})

t.test('through a socket with warmReceive: big messages after the first land in warmed memory of their own', async (t) => {
  const warm = new WarmMemory({ minBytes: 1 << 20 })
  t.teardown(() => warm.drop())
  const messages = [0, 1, 2, 3].map(() => [Uint8Array.of(9), random((3 << 20) + 77)])
  const address = await fakeDask(t, (s) => {
    void (async () => {
      for (const m of messages) {
        await writeInPieces(s, tcpBytes(m), () => 1 << 20)
        // Idle between messages, as between gathers: time for the spare to be warmed.
        await new Promise((r) => setTimeout(r, 100))
      }
    })()
  })
  const comm = await connectDask(address, { timeout: 5000, warmReceive: warm })
  t.teardown(() => comm.abort())
  const got: Uint8Array[][] = []
  for (const [i, want] of messages.entries()) {
    const frames = await comm.readFrames({ timeout: 10_000 })
    checkMessage(t, frames, want, `message ${i}`)
    got.push(frames)
  }
  t.ok(warm.stats.fromSpare >= 2, `messages after the first were read into the spare (${warm.stats.fromSpare} of 4)`)
  t.ok(warm.stats.warmBytes > 0, `with pages written ahead (${warm.stats.warmBytes} bytes)`)
  t.equal(new Set(got.map((f) => f[1]!.buffer)).size, 4, 'each message in memory of its own')
  await t.rejects(connectDask(address, { warmReceive: 'yes' as unknown as boolean }), TypeError, 'warmReceive is checked')
})

t.test('through a socket: byte by byte', async (t) => {
  const frames = [new TextEncoder().encode('frame zero'), new Uint8Array(0), random(130)]
  const stream = new Uint8Array(Buffer.concat([tcpBytes(frames), tcpBytes([Uint8Array.of(7)])]))
  const address = await fakeDask(t, (s) => void writeInPieces(s, stream, () => 1))
  const comm = await connect(t, address)
  checkMessage(t, await comm.readFrames({ timeout: 10_000 }), frames, 'first')
  t.same(await comm.readFrames({ timeout: 10_000 }), [Uint8Array.of(7)], 'second')
})

t.test('through a socket: a stream that stops in the middle of a big frame is a CLOSED error', async (t) => {
  const stream = tcpBytes([Uint8Array.of(1), random(1 << 20)])
  const address = await fakeDask(t, (s) => {
    void writeInPieces(s, stream.subarray(0, 300_000), () => 65_536).then(() => s.end())
  })
  const comm = await connect(t, address)
  const err = await within(10_000, comm.readFrames().then(() => null, (e: unknown) => e), 'the read failing')
  t.ok(err instanceof TransportError && err.code === 'CLOSED' && /in the middle of a message/.test(err.message), String(err))
  t.equal(comm.open, false)
})

t.test('through a socket: too much announced is refused before anything is allocated', async (t) => {
  const limits = { maxMessageBytes: 1 << 20 }
  // 1 GiB announced, with a frame length to match: LIMIT from the prelude alone.
  const address = await fakeDask(t, (s) => s.write(u64s(2 ** 30, 1, 2 ** 30 - 16)))
  const before = process.memoryUsage().arrayBuffers
  const comm = await connect(t, address, limits)
  const err = await within(10_000, comm.readFrames().then(() => null, (e: unknown) => e), 'the read failing')
  t.ok(err instanceof TransportError && err.code === 'LIMIT', String(err))
  t.ok(process.memoryUsage().arrayBuffers - before < 64 << 20, 'no buffer of the announced size')

  // Lengths that do not add up to the total: PROTOCOL, before the buffer is made.
  const liar = await fakeDask(t, (s) => s.write(u64s(8 + 16 + 10, 2, 100_000, 200_000)))
  const comm2 = await connect(t, liar)
  const err2 = await within(10_000, comm2.readFrames().then(() => null, (e: unknown) => e), 'the read failing')
  t.ok(err2 instanceof TransportError && err2.code === 'PROTOCOL', String(err2))
})
