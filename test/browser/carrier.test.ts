/**
 * The WebSocket carrier in a real browser (headless chromium): a page loads the one-file bundle
 * and speaks picklewire with the Python peer's server and with Node's listenPickleSocket. numpy
 * arrays of every dtype the mapping supports arrive as NDArrays over their frames and go back
 * for numpy to check; HMAC through WebCrypto; a server that closes mid-message; a header over
 * the page's limits; backpressure both ways.
 */
import { once } from 'node:events'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { WebSocketServer, connectPickleSocket, listenPickleSocket, type PickleSocket } from '@picklewire/transport/ws'
import { NDArray } from '@picklewire/codec'
import { encodeValue } from '../../packages/transport/dist/message.js'
import { encodeWireHeader } from '../../packages/transport/dist/ws/wire.js'
import { HERE, browserVersion, inPage, openPage, pythonServer, skipWithoutBrowser, staticServer } from './browser-helpers.js'
import { skipWithoutPython } from '../helpers/python.js'

const PEER = join(HERE, 'browser_peer.py')
const KEY = 'a key both sides know'

interface CaseResult { name: string; why: string | null; view: boolean | null }
interface ArraysResult {
  version: number
  cases: CaseResult[]
  views: number
  outOfBand: number
  back: { name: string; answer: string }[]
  described: [string, number[], string, boolean][]
  stats: { alignmentCopies: number; messagesReceived: number; messagesSent: number }
}

const skip = skipWithoutBrowser(t) || skipWithoutPython(t, ['numpy', 'websockets', 'msgpack'])
if (skip) t.plan(0, skip)
else await main()

/** The cases browser_peer.py sends, as a Node client receives them (for the Node server to send on). */
async function casesFrom(url: string): Promise<{ cases: unknown[]; client: PickleSocket }> {
  const client = await connectPickleSocket(url)
  const cases: unknown[] = []
  for await (const m of client) {
    if (m === 'done') break
    cases.push(m)
  }
  return { cases, client }
}

function checkArrays(t: Test, r: ArraysResult, from: string): void {
  t.equal(r.version, 3, `${from}: version 3 negotiated`)
  t.equal(r.cases.length, 24, `${from}: every case arrived`)
  for (const c of r.cases) t.equal(c.why, null, `${from}: ${c.name} arrived with its dtype, shape, order and values`)
  t.equal(r.outOfBand, 8, `${from}: 8 arrays of at least 1 KiB in the machine's byte order travelled out of band`)
  for (const c of r.cases) if (c.view !== null) t.ok(c.view, `${from}: ${c.name} is a view over the ArrayBuffer of its frame`)
  t.equal(r.stats.alignmentCopies, 0, `${from}: no alignment copies (each frame is an ArrayBuffer of its own)`)
  for (const b of r.back) t.equal(b.answer, 'ok', `${from}: numpy gets ${b.name} back equal`)
  t.same(r.described.map((d) => [d[0], d[1], d[3]]), [
    ['<f4', [2, 3], false], ['<f8', [2, 3], true], ['<i8', [2], false], ['<i2', [2], false], ['<f4', [64, 64], false],
  ], `${from}: arrays made in the page load in numpy with their dtype, shape and order`)
  t.equal(r.described[0]![2], '[[1.5,-2,3.25],[4,5,6]]', `${from}: values made in the page reach numpy`)
  t.equal(r.described[2]![2], '["-4611686018427387904n",7]', `${from}: int64 values reach numpy`)
}

async function main(): Promise<void> {
  const base = await staticServer(t)
  const { browser, page, console: log } = await openPage(t, `${base}/blank.html`)
  t.comment(`chromium ${await browserVersion(browser)}`)
  t.teardown(() => {
    if (log.length > 0) t.comment(`page console:\n${log.join('\n')}`)
  })

  t.test('numpy arrays from the Python server, and back', async (t) => {
    const py = await pythonServer(t, PEER)
    const r = await inPage<ArraysResult>(page, '/page-checks.js', 'arrays', { url: py.url, fromPython: true })
    checkArrays(t, r, 'python')
  })

  t.test('protocol versions 2 and 1 (offered alone), version 1 with HMAC', async (t) => {
    for (const [version, key] of [[2, undefined], [1, KEY]] as const) {
      const py = await pythonServer(t, PEER, key ? ['--key', key] : [])
      const r = await inPage<ArraysResult>(page, '/page-checks.js', 'arrays', { url: py.url, fromPython: true, protocolVersion: version, key })
      t.equal(r.version, version, `version ${version} negotiated`)
      t.same(r.cases.filter((c) => c.why !== null), [], `version ${version}${key ? ' with HMAC' : ''}: every case arrived right`)
      t.same(r.back.filter((b) => b.answer !== 'ok'), [], `version ${version}: numpy got every array back equal`)
    }
  })

  t.test('numpy arrays from a Node server (relaying numpy\'s), and back', async (t) => {
    const py = await pythonServer(t, PEER)
    const { cases, client } = await casesFrom(py.url)
    const server = await listenPickleSocket({ host: '127.0.0.1', port: 0, onRequest: (v) => client.request(v) })
    t.teardown(async () => {
      await client.close()
      await server.close()
    })
    const texts: string[] = []
    server.on('connection', (sock) => {
      sock.ws.on('message', (data, isBinary) => {
        if (!isBinary) texts.push(String(data))
      })
      void (async () => {
        for (const c of cases) await sock.send(c)
        await sock.send('done')
      })()
    })
    const r = await inPage<ArraysResult>(page, '/page-checks.js', 'arrays', { url: server.url, fromPython: false })
    checkArrays(t, r, 'node')
    t.same(texts, ['shm-no'], 'the page answered the Node server\'s same-host challenge with shm-no, and sent no other text frame')
  })

  t.test('HMAC through WebCrypto, with both servers; a wrong key is an AUTH error', async (t) => {
    const py = await pythonServer(t, PEER, ['--key', KEY])
    const fromPython = await inPage<{ cases: number; echoed: boolean; described: unknown; error: string | null }>(page, '/page-checks.js', 'authenticated', { url: py.url, key: KEY })
    t.same(fromPython, { cases: 24, echoed: true, bigEchoed: true, described: ['<f4', [256, 256]], error: null }, 'python: authenticated messages both ways (a 3 MiB one in chunks), requests and replies')

    const server = await listenPickleSocket({ host: '127.0.0.1', port: 0, key: KEY, onRequest: (v) => {
      const a = (v as Map<string, unknown>).get('array') as NDArray
      return [a.dtype.str, a.shape]
    } })
    t.teardown(() => server.close())
    server.on('connection', (sock) => {
      void (async () => {
        await sock.send('done')
        for await (const v of sock) await sock.send(v)
      })().catch(() => {})
    })
    const fromNode = await inPage<{ cases: number; echoed: boolean; described: unknown; error: string | null }>(page, '/page-checks.js', 'authenticated', { url: server.url, key: KEY })
    t.same(fromNode, { cases: 0, echoed: true, bigEchoed: true, described: ['<f4', [256, 256]], error: null }, 'node: authenticated messages both ways (a 3 MiB one in chunks), requests and replies')

    const wrongPython = await inPage<{ code: string; delivered: number; message: string }>(page, '/page-checks.js', 'wrongKey', { url: py.url, key: 'another key' })
    t.equal(wrongPython.code, 'AUTH', `python, wrong key: ${wrongPython.message}`)
    t.equal(wrongPython.delivered, 0, 'python, wrong key: nothing delivered')
    const wrongNode = await inPage<{ code: string; delivered: number; message: string }>(page, '/page-checks.js', 'wrongKey', { url: server.url, key: 'another key' })
    t.equal(wrongNode.code, 'AUTH', `node, wrong key: ${wrongNode.message}`)
    t.equal(wrongNode.delivered, 0, 'node, wrong key: nothing delivered')
  })

  t.test('a server that closes mid-message: TransportError CLOSED, nothing of it delivered', async (t) => {
    const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, handleProtocols: () => 'picklewire.v3' })
    t.teardown(() => new Promise<void>((r) => wss.close(() => r())))
    await once(wss, 'listening')
    wss.on('connection', (ws) => {
      const whole = encodeValue('whole')
      ws.send(encodeWireHeader({ v: 3, id: 1, k: 'msg', p: whole.pickle.byteLength, b: [], ro: [], pk: whole.pickle }))
      const parts = encodeValue(new Float64Array(1024))
      ws.send(encodeWireHeader({ v: 3, id: 2, k: 'msg', p: parts.pickle.byteLength, b: [8192], ro: [false], x: { al: [8] } }))
      ws.send(parts.pickle)
      ws.send(new Uint8Array(100)) // not the announced 8,192 bytes' worth: a chunk, then the server goes
      setTimeout(() => ws.close(1000), 100)
    })
    const url = `ws://127.0.0.1:${(wss.address() as { port: number }).port}/`
    const r = await inPage<{ code: string; message: string; delivered: string[]; closeCode: number }>(page, '/page-checks.js', 'receiveAll', { url })
    t.equal(r.code, 'CLOSED', `the receive fails: ${r.message}`)
    t.match(r.message, /in message 2/, 'the error names the message cut short')
    t.same(r.delivered, ['"whole"'], 'the message before it arrived; nothing of the cut one')
  })

  t.test('a header over the page\'s limits: TransportError LIMIT, the server hears 4413', async (t) => {
    const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, handleProtocols: () => 'picklewire.v3' })
    t.teardown(() => new Promise<void>((r) => wss.close(() => r())))
    await once(wss, 'listening')
    const closed = new Promise<number>((resolve) => wss.on('connection', (ws) => {
      ws.on('close', (code) => resolve(code))
      const parts = encodeValue(new Float64Array(2 ** 17))
      ws.send(encodeWireHeader({ v: 3, id: 1, k: 'msg', p: parts.pickle.byteLength, b: [2 ** 20], ro: [false] }))
    }))
    const url = `ws://127.0.0.1:${(wss.address() as { port: number }).port}/`
    const r = await inPage<{ code: string; message: string; delivered: string[] }>(page, '/page-checks.js', 'receiveAll', { url, options: { limits: { maxBufferBytes: 65536 } } })
    t.equal(r.code, 'LIMIT', `the receive fails: ${r.message}`)
    t.match(r.message, /1048576 bytes is over maxBufferBytes \(65536\)/, 'the error names the buffer and the limit')
    t.equal(await closed, 4413, 'the page closes with 4413')
  })

  t.test('options a page cannot have are TypeErrors that say why', async (t) => {
    const server = await listenPickleSocket({ host: '127.0.0.1', port: 0 })
    t.teardown(() => server.close())
    const r = await inPage<Record<string, string>>(page, '/page-checks.js', 'refusedOptions', { url: server.url })
    t.match(r.heartbeatInterval, /^TypeError: .*heartbeatInterval is not available in a browser: a page cannot send WebSocket pings/)
    t.match(r.receiveHighWaterMark, /^TypeError: .*cannot pause reading/)
    t.match(r.recycleBytes, /^TypeError: .*recycleBytes is not available in a browser: a page has no recycle\(\)/)
    t.match(r.ws, /^TypeError: .*takes no options/)
    t.match(r.highWaterMar, /^TypeError: .*highWaterMark/, 'a misspelled option is named with its nearest')
    t.equal(r.closeThrew, undefined, 'close() with a code the browser refuses does not throw')
    t.match(r.close1001, /^RangeError: close code must be 1000 or 3000 to 4999 in a browser, got 1001/, 'it rejects with a RangeError naming the code')
  })

  t.test('the page answers the server\'s requests (onRequest), and a throw becomes a REMOTE error', async (t) => {
    const server = await listenPickleSocket({ host: '127.0.0.1', port: 0 })
    t.teardown(() => server.close())
    server.on('connection', (sock) => {
      void (async () => {
        const reply = await sock.request(new Map<string, unknown>([['array', new NDArray(new Float64Array([1, 2.5, -3, 4]), { shape: [2, 2] })]])) as NDArray
        t.same([...(reply.data as Float64Array)], [2, 5, -6, 8], 'the page doubled the array')
        t.same(reply.shape, [2, 2])
        const err = await sock.request(new Map<string, unknown>([['array', new NDArray(new Float64Array(1))], ['fail', true]])).catch((e: Error) => e)
        t.match(err, { code: 'REMOTE', message: /RangeError: asked to fail/ }, 'the handler\'s throw reaches the server')
        await sock.close()
      })()
    })
    const r = await inPage<{ answered: number; code: number; error: string | null }>(page, '/page-checks.js', 'answer', { url: server.url })
    t.same(r, { answered: 2, code: 1000, error: null }, 'two requests answered, then a clean close')
  })

  t.test('a slow page: the server\'s sends wait while the page does not read', async (t) => {
    const server = await listenPickleSocket({ host: '127.0.0.1', port: 0, highWaterMark: 2 ** 20 })
    t.teardown(() => server.close())
    const accepted = once(server, 'connection')
    await inPage(page, '/page-checks.js', 'hold', { url: server.url })
    const [sock] = (await accepted) as [PickleSocket]
    const count = 48
    const blocked = inPage(page, '/page-checks.js', 'block', { ms: 3000 })
    await new Promise((r) => setTimeout(r, 200)) // the page is busy from here on
    const sends: Promise<void>[] = []
    let settled = 0
    for (let i = 0; i < count; i++) {
      const a = new Float32Array(2 ** 18) // 1 MiB
      a[0] = i
      const p = sock.send({ i, a: new NDArray(a) })
      void p.then(() => settled++)
      sends.push(p)
    }
    await new Promise((r) => setTimeout(r, 1500))
    const during = sock.stats()
    t.ok(during.sendWaits > 0, `sends waited for the high-water mark (${during.sendWaits} of ${count})`)
    t.ok(settled < count, `${count - settled} of ${count} sends still wait while the page is busy`)
    t.ok(during.bufferedBytes > 2 ** 20, `${during.bufferedBytes} bytes are buffered, not written: TCP holds them back`)
    await blocked
    const r = await inPage<{ inOrder: boolean; stats: { messagesReceived: number } }>(page, '/page-checks.js', 'drain', { count })
    await Promise.all(sends)
    t.equal(settled, count, 'every send went out once the page read again')
    t.ok(r.inOrder, 'the page got every message, in order')
    t.equal(r.stats.messagesReceived, count)
  })

  t.test('a page\'s sends wait on bufferedAmount over its highWaterMark', async (t) => {
    const server = await listenPickleSocket({ host: '127.0.0.1', port: 0 })
    t.teardown(() => server.close())
    const got: number[] = []
    server.on('connection', (sock) => {
      void (async () => {
        for await (const v of sock) {
          const m = v as Map<string, unknown>
          const a = m.get('a') as NDArray
          got.push((a.data as Float32Array)[0]! === m.get('i') ? (m.get('i') as number) : -1)
          await new Promise((r) => setTimeout(r, 20)) // a slow reader: the page's bytes back up
        }
      })().catch(() => {})
    })
    const r = await inPage<{ resolvedEarly: number; waitingAfterLoop: number; stats: { sendWaits: number; maxBufferedBytes: number; messagesSent: number; bufferedBytes: number } }>(
      page, '/page-checks.js', 'sendBurst', { url: server.url, count: 32, mib: 1, hwm: 2 ** 20 },
    )
    t.ok(r.stats.sendWaits > 0, `${r.stats.sendWaits} of 32 sends waited for bufferedAmount`)
    t.ok(r.resolvedEarly < 32, `${32 - r.resolvedEarly} sends did not resolve at once`)
    t.ok(r.stats.maxBufferedBytes <= 2 ** 20 + 2 ** 20 + 4096, `at most one message over the high-water mark was buffered (${r.stats.maxBufferedBytes} bytes)`)
    t.equal(r.stats.messagesSent, 32, 'every message was written (bufferedAmount passed it)')
    t.equal(r.stats.bufferedBytes, 0)
    await new Promise((r) => setTimeout(r, 2000))
    t.same(got, [...Array(32).keys()], 'the server got every message, in order')
  })

  /** A Node server for the discard and abort checks: the requests of browser_peer.py that they use, and an echo. */
  async function nodeServer(t: Test): Promise<{ url: string; cancels: number[] }> {
    let peer: PickleSocket | null = null
    const cancels: number[] = []
    const server = await listenPickleSocket({ host: '127.0.0.1', port: 0, sameHost: false, onRequest: async (v) => {
      const op = (v as Map<string, unknown>).get('op')
      if (op === 'stats') return { cancelled_by_peer: peer!.stats().messagesCancelledByPeer, received: peer!.stats().messagesReceived }
      const big = new Float32Array(((v as Map<string, unknown>).get('mib') as number) * 2 ** 18).fill(1)
      const outcome = await peer!.send(new NDArray(big)).then(() => ({ big: 'sent', message: null }), (err: { code: string; message: string }) => ({ big: err.code, message: err.message }))
      await peer!.send('after')
      return { ...outcome, cancelled: peer!.stats().messagesCancelled }
    } })
    t.teardown(() => server.close())
    server.on('connection', (sock) => {
      peer = sock
      sock.on('cancel', (id) => cancels.push(id))
      void (async () => {
        for await (const v of sock) await sock.send(v)
      })().catch(() => {})
    })
    return { url: server.url, cancels }
  }

  interface DiscardResult {
    discarded: { id: number; result: boolean; bytes: number; total: number }[]
    progressAfter: number
    next: string
    sender: { big: string; message: string | null; cancelled: number }
    messagesDiscarded: number
    messagesReceived: number
  }

  t.test('the page discards a big message while it arrives in chunks: the sender\'s send fails REMOTE, the next arrives whole', async (t) => {
    const py = await pythonServer(t, PEER)
    const node = await nodeServer(t)
    for (const [from, url] of [['python', py.url], ['node', node.url]] as const) {
      const r = await inPage<DiscardResult>(page, '/page-checks.js', 'discardBig', { url, mib: 24, fromPython: from === 'python' })
      t.equal(r.discarded.length, 1, `${from}: the page discarded one message`)
      t.equal(r.discarded[0]!.result, true, `${from}: discard() found it in progress`)
      t.ok(r.discarded[0]!.bytes < r.discarded[0]!.total, `${from}: at its first chunk (${r.discarded[0]!.bytes} of ${r.discarded[0]!.total} bytes)`)
      t.equal(r.progressAfter, 0, `${from}: no progress of the discarded message after discard()`)
      t.equal(r.sender.big, 'REMOTE', `${from}: the sender's send of it failed: ${r.sender.message}`)
      t.match(r.sender.message, /refused message \d+ while it was being sent/, `${from}: the sender's error says the peer refused it`)
      t.equal(r.sender.cancelled, 1, `${from}: the sender counts it cancelled`)
      t.equal(r.next, '"after"', `${from}: the next message arrives whole, and is the first delivered`)
      t.equal(r.messagesDiscarded, 1, `${from}: the page counts one message discarded`)
    }
  })

  interface AbortResult {
    error: string | null
    last: number
    total: number
    echoed: boolean
    server: { cancelledByPeer: number; received: number }
    messagesCancelled: number
  }

  t.test('a page\'s send aborted mid-way (AbortSignal): the server drops the message and gets the next whole', async (t) => {
    const py = await pythonServer(t, PEER)
    const node = await nodeServer(t)
    for (const [from, url] of [['python', py.url], ['node', node.url]] as const) {
      const r = await inPage<AbortResult>(page, '/page-checks.js', 'abortBig', { url, mib: 16, fromPython: from === 'python' })
      t.equal(r.error, 'stop', `${from}: the send rejects with the signal's reason`)
      t.ok(r.last < r.total / 2, `${from}: it stopped mid-way (${r.last} of ${r.total} bytes)`)
      t.equal(r.messagesCancelled, 1, `${from}: the page counts one message cancelled`)
      t.ok(r.echoed, `${from}: the next message went through whole, its echo the first message back`)
      t.equal(r.server.cancelledByPeer, 1, `${from}: the server heard the cancel frame`)
      t.equal(r.server.received, 2, `${from}: the server received the next message and the stats request, never the half message`)
    }
    t.same(node.cancels, [1], 'node: the cancel event named message 1')
  })
}
