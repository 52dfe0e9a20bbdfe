/**
 * Node against the real Python peer (packages/transport/python, run by python3 with numpy,
 * websockets and msgpack): thousands of numpy arrays of varied dtypes and shapes echoed both
 * ways and compared, request/reply both ways, authentication, limits, a Python process killed
 * mid-message, a slow Python consumer, heartbeats.
 */
import { once } from 'node:events'
import t from 'tap'
import { GlobalRegistry, NDArray } from '@picklewire/codec'
import { TransportError, connectPickleSocket, listenPickleSocket, type ListenOptions, type PickleSocket, type PickleSocketServer } from '@picklewire/transport'
import { PythonPeer, collect, pythonEchoServer, pythonMissing, within } from './ws-helpers.js'

const missing = pythonMissing(t)
if (missing) {
  t.plan(0, missing)
} else {
  await tests()
}

function codeOf(err: unknown): string | undefined {
  return err instanceof TransportError ? err.code : undefined
}

/** A Node server whose connections echo every message back, as the unpickler options make them. */
async function nodeEchoServer(t: import('tap').Test, options: ListenOptions = {}): Promise<PickleSocketServer> {
  const server = await listenPickleSocket(options)
  server.on('connection', async (sock: PickleSocket) => {
    try {
      for await (const v of sock) await sock.send(v)
    } catch {
      // the test looks at the Python side's report
    }
  })
  t.teardown(() => server.close())
  return server
}

/** Float32Array, BigInt64Array, ...: one TypedArray type per dtype the NDArray side covers. */
function nodeArray(i: number): NDArray {
  const n = i % 9 === 0 ? 3000 + i : (i * 7) % 40
  const shapes: number[][] = [[n], [1, n], [n, 1]]
  const shape = shapes[i % 3]!
  const order = i % 4 === 1 ? 'F' : 'C'
  const readonly = i % 5 === 3
  switch (i % 8) {
    case 0: return new NDArray(new Float32Array(n).map((_, k) => k * 0.5 - i), { shape, order, readonly })
    case 1: return new NDArray(new Float64Array(n).map((_, k) => Math.sin(k + i)), { shape, order, readonly })
    case 2: return new NDArray(new Int8Array(n).map((_, k) => (k * 31 + i) % 128), { shape, order, readonly })
    case 3: return new NDArray(new Uint16Array(n).map((_, k) => k * 977 + i), { shape, order, readonly })
    case 4: return new NDArray(new Int32Array(n).map((_, k) => k * -104729 + i), { shape, order, readonly })
    case 5: return new NDArray(new BigInt64Array(n).map((_, k) => BigInt(k) * 1_000_000_007n - BigInt(i)), { shape, order, readonly })
    case 6: return new NDArray(new Uint8Array(n).map((_, k) => k + i), { shape, order, readonly })
    default: return new NDArray(new Uint32Array(n).map((_, k) => k ^ i), { shape, order, readonly })
  }
}

async function tests(): Promise<void> {
  t.test('Python -> Node -> Python: 2,000 messages of numpy arrays, Node relaying them untouched (opaque)', async (t) => {
    const server = await nodeEchoServer(t, { unpickler: { opaque: true, globals: new GlobalRegistry() } })
    const peer = new PythonPeer(['arrays-client', server.url, '--count', '2000', '--seed', '7'])
    t.teardown(() => peer.kill())
    const report = await peer.next(45_000)
    t.equal(await peer.exit(), 0, 'the Python side checked every echo')
    t.equal(report.matched, 2000, `all 2000 echoes equal (${JSON.stringify(report.mismatches)})`)
    t.ok(report.dtypes.length >= 15, `dtypes: ${report.dtypes.join(' ')}`)
  })

  t.test('Python -> Node -> Python: 2,000 messages loaded as NDArrays and pickled again by Node', async (t) => {
    let ndarrays = 0
    let copied = 0
    const server = await listenPickleSocket()
    server.on('connection', async (sock: PickleSocket) => {
      try {
        for await (const v of sock) {
          const a = (v as Map<string, unknown>).get('array')
          if (a instanceof NDArray) {
            ndarrays++
            if (a.copied) copied++
          }
          await sock.send(v)
        }
      } catch {
        // reported by Python
      }
    })
    t.teardown(() => server.close())
    const peer = new PythonPeer(['arrays-client', server.url, '--count', '2000', '--seed', '8', '--any-byte-order'])
    t.teardown(() => peer.kill())
    const report = await peer.next(45_000)
    t.equal(await peer.exit(), 0)
    t.equal(report.matched, 2000, `all 2000 echoes equal (${JSON.stringify(report.mismatches)})`)
    t.equal(ndarrays, 2000, 'every array loaded as an NDArray')
    // Copies are the big-endian arrays (swapped to the machine's order) and nothing else: the
    // carrier hands every buffer over aligned.
    t.ok(copied < 2000 * 5 / 18, `${copied} of 2000 were copied (the big-endian ones)`)
  })

  t.test('Node -> Python -> Node: 1,500 NDArrays echoed, Python sees real numpy arrays', async (t) => {
    const { peer, url } = await pythonEchoServer()
    t.teardown(() => peer.kill())
    const sock = await connectPickleSocket(url)
    t.teardown(() => sock.terminate())
    const count = 1500
    const sent = Array.from({ length: count }, (_, i) => nodeArray(i))
    const sending = (async () => {
      for (let i = 0; i < count; i++) await sock.send(new Map<string, unknown>([['i', i], ['a', sent[i]]]))
    })()
    let matched = 0
    let copied = 0
    const bad: string[] = []
    for (let i = 0; i < count; i++) {
      const v = await within(20_000, sock.receive(), `echo ${i}`) as Map<string, unknown>
      const a = v.get('a') as NDArray
      const x = sent[i]!
      const same = v.get('i') === i && a instanceof NDArray && a.dtype.str === x.dtype.str && a.shape.join() === x.shape.join() &&
        Buffer.from(a.bytes()).equals(Buffer.from(x.bytes()))
      if (a instanceof NDArray && a.copied) copied++
      if (same) matched++
      else if (bad.length < 3) bad.push(`${i}: sent ${x.dtype.str} ${x.shape.join('x')}, got ${String(a?.dtype)} ${a?.shape?.join('x')}`)
    }
    await sending
    t.equal(matched, count, `every echo equal ${bad.join('; ')}`)
    const described = await sock.request({ op: 'describe', arrays: sent.slice(0, 40) }) as [string, number[], string][]
    t.same(described.map((d) => [d[0], [...d[1]]]), sent.slice(0, 40).map((a) => [a.dtype.str, [...a.shape]]), 'numpy saw the same dtypes and shapes')
    t.equal(copied, 0, `no NDArray needed a copy: the ${sock.stats().alignmentCopies} misaligned small buffers were aligned by the carrier, and counted`)
    await sock.close()
  })

  t.test('request/reply both ways, and a Python exception as REMOTE', async (t) => {
    const { peer, url } = await pythonEchoServer()
    t.teardown(() => peer.kill())
    const sock = await connectPickleSocket(url)
    const a = new NDArray(new Float64Array(5000).map((_, i) => i), { shape: [50, 100] })
    const answers = await Promise.all(Array.from({ length: 50 }, (_, k) => sock.request(new Map<string, unknown>([['op', 'scale'], ['by', k], ['array', a]]))))
    t.ok(answers.every((r, k) => r instanceof NDArray && (r.data as Float64Array)[4999] === 4999 * k && r.shape.join() === '50,100'), '50 answers, each to its own request')
    const err = await sock.request(new Map([['op', 'fail'], ['why', 'bad input']])).catch((e: unknown) => e)
    t.equal(codeOf(err), 'REMOTE')
    t.match((err as Error).message, /ValueError: bad input/)
    await sock.close()

    const server = await listenPickleSocket({
      onRequest: (v) => {
        const m = v as Map<string, unknown>
        if (m.get('op') === 'fail') throw new Error(String(m.get('why')))
        const x = m.get('array') as NDArray
        return new NDArray((x.data as Float64Array).map((e) => e * (m.get('by') as number)), { shape: x.shape })
      },
    })
    t.teardown(() => server.close())
    const asker = new PythonPeer(['request-client', server.url, '--count', '100'])
    t.teardown(() => asker.kill())
    const report = await asker.next()
    t.equal(await asker.exit(), 0)
    t.equal(report.good, 100, 'Python got 100 right answers from Node')
    t.equal(report.remote_error[0], 'REMOTE')
    t.match(report.remote_error[1], /failed on the other side: Error: on purpose/)
  })

  t.test('HMAC both ways with Python; a wrong key is refused by Python with 4401', async (t) => {
    const key = 'shared between node and python'
    const server = await nodeEchoServer(t, { key, unpickler: { opaque: true, globals: new GlobalRegistry() } })
    const client = new PythonPeer(['arrays-client', server.url, '--count', '300', '--key', key])
    t.teardown(() => client.kill())
    t.equal((await client.next()).matched, 300, 'Python -> Node -> Python with every message authenticated')
    await client.exit()

    const { peer, url } = await pythonEchoServer(['--key', key])
    t.teardown(() => peer.kill())
    const sock = await connectPickleSocket(url, { key })
    const a = new NDArray(new Float32Array(100_000).fill(2.5), { shape: [100, 1000] })
    await sock.send(a)
    t.same(Buffer.from((await sock.receive() as NDArray).bytes()), Buffer.from(a.bytes()))
    await sock.close()

    const forger = await connectPickleSocket(url, { key: 'not the key' })
    await forger.send(a)
    const info = await within(10_000, forger.closed, 'Python to refuse the message')
    t.equal(info.code, 4401)
    t.equal(codeOf(info.error), 'AUTH')
  })

  t.test('limits on the Python side: too many buffers is refused with 4413 (LIMIT)', async (t) => {
    const { peer, url } = await pythonEchoServer(['--max-buffers', '2'])
    t.teardown(() => peer.kill())
    const sock = await connectPickleSocket(url)
    const buf = () => new NDArray(new Float64Array(1024))
    await sock.send([buf(), buf()])
    t.equal((await sock.receive() as unknown[]).length, 2, 'two buffers pass')
    await sock.send([buf(), buf(), buf()])
    const info = await within(10_000, sock.closed, 'the refusal')
    t.equal(info.code, 4413)
    t.equal(codeOf(info.error), 'LIMIT')
  })

  t.test('a Python peer killed mid-message: CLOSED, nothing delivered', async (t) => {
    const server = await listenPickleSocket()
    t.teardown(() => server.close())
    const accepted = once(server, 'connection')
    const peer = new PythonPeer(['partial', server.url])
    t.teardown(() => peer.kill())
    const [sock] = (await accepted) as [PickleSocket]
    const got = collect(sock)
    t.equal(await peer.next(), 'partial')
    peer.kill('SIGKILL')
    const err = await within(10_000, got.done, 'the error')
    t.equal(codeOf(err), 'CLOSED')
    t.match(err?.message, /in message 1 after 2 of its 3 frames: the message is lost/)
    t.same(got.values, [])
  })

  t.test('a slow Python consumer makes the Node sender wait', async (t) => {
    const highWaterMark = 2 ** 20
    // Frames only (the 1 MiB arrays would go through files on one host): the wait is for the socket.
    const server = await listenPickleSocket({ highWaterMark, sameHost: false })
    t.teardown(() => server.close())
    const accepted = once(server, 'connection')
    const peer = new PythonPeer(['slow-consumer', server.url, '--delay', '0.02'])
    t.teardown(() => peer.kill())
    const [sock] = (await accepted) as [PickleSocket]
    const frame = new NDArray(new Uint8Array(2 ** 20))
    const total = 60
    let sent = 0
    const sending = (async () => {
      for (let i = 0; i < total; i++) {
        await sock.send(new Map<string, unknown>([['i', i], ['frame', frame]]))
        sent++
      }
    })()
    await new Promise((r) => setTimeout(r, 300))
    t.ok(sent < total, `the sender waits for the consumer (${sent} of ${total} sent after 300 ms)`)
    await within(30_000, sending, 'all sends')
    t.ok(sock.stats().sendWaits > 0, `send() waited ${sock.stats().sendWaits} times`)
    t.ok(sock.stats().maxBufferedBytes <= highWaterMark + 2 ** 20 + 4096, `never more than the high-water mark and one message buffered (${sock.stats().maxBufferedBytes})`)
    await sock.close()
    const report = await peer.next()
    t.same(report, { received: total, in_order: true })
  })

  t.test('heartbeats both ways keep an idle connection to Python open', async (t) => {
    const { peer, url } = await pythonEchoServer(['--ping', '0.1'])
    t.teardown(() => peer.kill())
    const sock = await connectPickleSocket(url, { heartbeatInterval: 100, heartbeatTimeout: 1000 })
    let pings = 0
    let pongs = 0
    sock.ws.on('ping', () => pings++)
    sock.ws.on('pong', () => pongs++)
    await new Promise((r) => setTimeout(r, 700))
    t.ok(pings >= 3, `Python pinged ${pings} times`)
    t.ok(pongs >= 3, `Python answered ${pongs} pings`)
    t.equal(sock.error, null)
    await sock.send('still here')
    t.equal(await sock.receive(), 'still here')
    await sock.close()
  })
}
