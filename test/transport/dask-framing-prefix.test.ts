/**
 * tcp framing of distributed 2023.11 and later, where the leading u64 counts only a prefix (the
 * prelude and the first frames) and later frames follow it; the allocation bound on the sum of
 * every announced length; a peer that answers HTTP; and a message cut off by the peer, whose
 * partly filled buffer the comm lets go of.
 */
import net from 'node:net'
import { once } from 'node:events'
import v8 from 'node:v8'
import vm from 'node:vm'
import t, { type Test } from 'tap'
import { DEFAULT_DASK_LIMITS, TransportError, connectDask } from '@picklewire/transport'
import { TcpFrameReader, encodeTcpPrelude, resolveDaskLimits } from '../../packages/transport/dist/dask/framing.js'
import { dumpsMessage } from '../../packages/transport/dist/dask/protocol.js'

function u64s(...ns: number[]): Uint8Array {
  const out = new Uint8Array(8 * ns.length)
  const v = new DataView(out.buffer)
  ns.forEach((n, i) => v.setBigUint64(8 * i, BigInt(n), true))
  return out
}

/** A message as 2023.11+ writes it: the prefix size counts the prelude and the first k frames only. */
function prefixBytes(frames: Uint8Array[], k: number): Uint8Array {
  const prefix = 8 + 8 * frames.length + frames.slice(0, k).reduce((s, f) => s + f.byteLength, 0)
  return new Uint8Array(Buffer.concat([u64s(prefix, frames.length, ...frames.map((f) => f.byteLength)), ...frames]))
}

function thrown(fn: () => unknown): unknown {
  try {
    fn()
    return null
  } catch (err) {
    return err
  }
}

function expectError(t: Test, fn: () => unknown, code: string, pattern: RegExp, what: string): void {
  const err = thrown(fn)
  t.ok(err instanceof TransportError && err.code === code, `${what}: ${String(err)}`)
  t.match(String((err as Error)?.message), pattern, `${what}: says why`)
}

const frames = [
  new TextEncoder().encode('msgpack header'),
  new Uint8Array(0),
  new Uint8Array(300).map((_, i) => i % 256),
  new Uint8Array(70_000).map((_, i) => (i * 7) % 256),
]

t.test('a prefix ending after any frame reads back whole, at every cut', async (t) => {
  for (let k = 0; k <= frames.length; k++) {
    const one = prefixBytes(frames, k)
    const all = new Uint8Array([...one, ...prefixBytes([Uint8Array.of(5)], 0)])
    let bad = 0
    for (let cut = 0; cut <= all.length; cut += cut < 200 ? 1 : 997) {
      const r = new TcpFrameReader(DEFAULT_DASK_LIMITS)
      let got: Uint8Array[][]
      try {
        got = [...r.push(all.subarray(0, cut)), ...r.push(all.subarray(cut))]
      } catch (err) {
        if (bad++ === 0) t.fail(`k=${k} cut ${cut}: ${String(err)}`)
        continue
      }
      if (got.length !== 2 || !r.idle || got[0]!.length !== frames.length || !got[0]!.every((f, i) => Buffer.compare(f, frames[i]!) === 0) || got[1]![0]![0] !== 5) {
        if (bad++ === 0) t.fail(`k=${k} cut ${cut}: not the frames sent`)
      }
    }
    t.equal(bad, 0, `prefix over the prelude and ${k} frame(s)`)
  }
})

t.test('a prefix that ends inside a frame is a PROTOCOL error naming the lengths', async (t) => {
  const bytes = new Uint8Array(Buffer.concat([u64s(8 + 16 + 5, 2, 10, 10), new Uint8Array(20)]))
  expectError(t, () => new TcpFrameReader(DEFAULT_DASK_LIMITS).push(bytes), 'PROTOCOL', /29-byte prefix does not end where one of its frames ends.*10, 10/, 'prefix inside frame 0')
})

t.test('the limit bounds the sum of every announced length, not the prefix', async (t) => {
  const limits = resolveDaskLimits({ maxMessageBytes: 1000 })
  // A small prefix (the prelude alone) announcing two frames of 600 bytes: 1,224 bytes in all.
  const bytes = u64s(8 + 16, 2, 600, 600)
  const r = new TcpFrameReader(limits)
  expectError(t, () => r.push(bytes), 'LIMIT', /over maxMessageBytes/, 'two later frames over the limit')
  t.equal(r.heldBytes, 0, 'nothing allocated')
})

t.test('an HTTP answer is reported as a peer that is not a Dask comm', async (t) => {
  const http = new TextEncoder().encode('HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n')
  expectError(t, () => new TcpFrameReader(DEFAULT_DASK_LIMITS).push(http), 'PROTOCOL', /not a Dask comm: it speaks HTTP.*HTTP\/1\.1 400/, 'HTTP reply')
  const text = new TextEncoder().encode('SSH-2.0-OpenSSH_9.2p1 Debian\r\n')
  expectError(t, () => new TcpFrameReader(DEFAULT_DASK_LIMITS).push(text), 'PROTOCOL', /not a Dask comm: it sent text/, 'another text protocol')
  // A real length whose bytes happen to be printable is still read as a length.
  const r = new TcpFrameReader(DEFAULT_DASK_LIMITS)
  t.same(r.push(new Uint8Array(Buffer.concat([u64s(8 + 8 + 3, 1, 3), Uint8Array.of(65, 66, 67)]))).length, 1, 'a Dask message is not mistaken for text')
})

t.test('connectDask to an HTTP server fails with that reason', async (t) => {
  const server = net.createServer((s) => s.end('HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n'))
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => server.close())
  const port = (server.address() as net.AddressInfo).port
  const err = await connectDask(`tcp://127.0.0.1:${port}`, { timeout: 5000 }).then(() => null, (e: unknown) => e)
  t.ok(err instanceof TransportError, String(err))
  t.match(String((err as Error).message), /not a Dask comm: it speaks HTTP/)
})

t.test('a message cut off by the peer does not keep its buffer alive through the comm or its error', async (t) => {
  v8.setFlagsFromString('--expose-gc')
  const gc = vm.runInNewContext('gc') as () => void
  const announced = 256 * 2 ** 20
  let release!: () => void
  const released = new Promise<void>((r) => (release = r))
  const server = net.createServer(async (s) => {
    const hello = dumpsMessage({ compression: null, python: [3, 11, 0], 'pickle-protocol': 5 }, { pickleProtocol: 5, compression: null, shardBytes: 2 ** 26 })
    s.write(encodeTcpPrelude(hello))
    for (const f of hello) s.write(f)
    // Then a message announcing one 256 MiB frame, 1 MiB of it, and the end.
    s.write(u64s(8 + 8 + announced, 1, announced))
    s.write(new Uint8Array(2 ** 20))
    await released
    s.end()
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => server.close())
  const port = (server.address() as net.AddressInfo).port
  const comm = await connectDask(`tcp://127.0.0.1:${port}`, { timeout: 5000 })
  const reading = comm.readFrames().then(() => null, (e: unknown) => e)
  // Wait until the announced frame's buffer exists.
  for (let i = 0; i < 200 && process.memoryUsage().arrayBuffers < announced; i++) await new Promise((r) => setTimeout(r, 10))
  t.ok(process.memoryUsage().arrayBuffers >= announced, 'the buffer of the announced frame was allocated')
  release()
  const err = await reading
  t.ok(err instanceof TransportError && err.code === 'CLOSED', `the read fails: ${String(err)}`)
  t.match(String((err as Error).message), /in the middle of a message/)
  for (let i = 0; i < 5; i++) {
    gc()
    await new Promise((r) => setImmediate(r))
  }
  // comm and err are still held here.
  t.ok(!comm.open && err !== null)
  t.ok(process.memoryUsage().arrayBuffers < announced / 2, `the partly filled buffer is gone (${process.memoryUsage().arrayBuffers} bytes of ArrayBuffers left)`)
})
