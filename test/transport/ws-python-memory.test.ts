/**
 * The Python server's memory under two attacks at once, measured as its resident set
 * (/proc/PID/status VmRSS) every 100 ms:
 * - 20 raw connections that finish the WebSocket handshake, then send a binary frame header
 *   announcing 1 GiB and dribble its payload (64 KiB every 50 ms each);
 * - a client that sends 300 requests of 1 MiB and never reads a reply.
 * Meanwhile a well-behaved Node client is answered. The bound is docs/security.md's.
 */
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { connect, type Socket } from 'node:net'
import t from 'tap'
import { connectPickleSocket } from '@picklewire/transport'
import { PythonPeer, pythonEchoServer, pythonMissing, within } from './ws-helpers.js'

/** What the server may add to its resident set under both attacks (docs/security.md). */
const RSS_GROWTH_BOUND = 96 * 2 ** 20

function rssOf(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  return m ? Number(m[1]) * 1024 : NaN
}

/** A raw TCP connection through the WebSocket handshake: what a hostile client holds before any frame. */
async function handshaken(port: number): Promise<Socket> {
  const sock = connect(port, '127.0.0.1')
  await new Promise<void>((resolve, reject) => sock.once('connect', resolve).once('error', reject))
  sock.write([
    'GET / HTTP/1.1', `Host: 127.0.0.1:${port}`, 'Upgrade: websocket', 'Connection: Upgrade',
    `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}`, 'Sec-WebSocket-Version: 13',
    'Sec-WebSocket-Protocol: picklewire.v2', '', '',
  ].join('\r\n'))
  await new Promise<void>((resolve, reject) => {
    let head = ''
    const onData = (chunk: Buffer): void => {
      head += chunk.toString('latin1')
      if (!head.includes('\r\n\r\n')) return
      sock.off('data', onData)
      if (head.startsWith('HTTP/1.1 101')) resolve()
      else reject(new Error(`handshake refused: ${head.split('\r\n')[0]}`))
    }
    sock.on('data', onData)
  })
  return sock
}

/** The start of a masked binary frame that announces 1 GiB of payload. */
function gibFrameHead(): Buffer {
  const head = Buffer.alloc(14)
  head[0] = 0x82
  head[1] = 0x80 | 127
  head.writeBigUInt64BE(2n ** 30n, 2)
  randomBytes(4).copy(head, 10)
  return head
}

/** The close code in the first server frame on this socket, or null if none came. */
function closeCodeOf(data: Buffer): number | null {
  const i = data.indexOf(0x88)
  return i >= 0 && data.length >= i + 4 ? data.readUInt16BE(i + 2) : null
}

const missing = pythonMissing(t)
t.test('20 dribbled 1 GiB first frames and a client that never reads replies: bounded, others served', { skip: missing ?? false }, async (t) => {
  // Frames only: on one host the flooder's 1 MiB replies would go through files, not the server's socket.
  const { peer, url } = await pythonEchoServer(['--no-same-host'])
  t.teardown(() => peer.kill())
  const port = Number(new URL(url).port)
  const pid = peer.proc.pid!
  await new Promise((r) => setTimeout(r, 300))
  const baseline = rssOf(pid)
  let peak = baseline
  const sampler = setInterval(() => { peak = Math.max(peak, rssOf(pid)) }, 100)
  t.teardown(() => clearInterval(sampler))

  const dribblers = await Promise.all(Array.from({ length: 20 }, () => handshaken(port)))
  const received = dribblers.map(() => Buffer.alloc(0))
  const closed = dribblers.map(() => false)
  dribblers.forEach((s, i) => {
    s.on('data', (d: Buffer) => { received[i] = Buffer.concat([received[i]!, d]) })
    s.on('close', () => { closed[i] = true })
    s.on('error', () => { closed[i] = true })
    s.write(gibFrameHead())
  })
  const chunk = Buffer.alloc(64 * 1024)
  const dribble = setInterval(() => {
    for (const [i, s] of dribblers.entries()) if (!closed[i] && s.writable) s.write(chunk)
  }, 50)
  t.teardown(() => { clearInterval(dribble); for (const s of dribblers) s.destroy() })

  const flooder = new PythonPeer(['flood-requests', url, '--count', '300', '--bytes', String(2 ** 20)])
  t.teardown(() => flooder.kill())

  // a well-behaved client, served while both attacks go on
  const client = await connectPickleSocket(url)
  t.teardown(() => client.terminate())
  let answered = 0
  const until = Date.now() + 5000
  while (Date.now() < until) {
    const reply = await within(5000, client.request(new Map<string, unknown>([['op', 'fail'], ['why', `n${answered}`]])), 'an answer').catch((e: Error) => e.message)
    if (String(reply).includes(`ValueError: n${answered}`)) answered++
    await new Promise((r) => setTimeout(r, 100))
  }
  clearInterval(dribble)
  // the flooder reports its count each second; its count two reports apart shows it stuck
  const counts: number[] = []
  for (let i = 0; i < 8; i++) {
    const line = await flooder.next(3000).catch(() => null)
    if (line === null) break
    counts.push(line.sent)
    if (line.done) break
  }
  const flooded = counts.at(-1) ?? -1
  clearInterval(sampler)
  peak = Math.max(peak, rssOf(pid))

  t.ok(answered >= 20, `the well-behaved client got ${answered} answers in 5 s`)
  const codes = received.map(closeCodeOf)
  t.same([...new Set(codes)], [1009], `each 1 GiB first frame was refused from its length with 1009 (LIMIT) (${codes.join(' ')})`)
  t.ok(flooded >= 0 && flooded < 300 && counts.at(-1) === counts.at(-3),
    `the client that never reads replies was held back by TCP after ${flooded} of 300 requests (its counts each second: ${counts.join(' ')})`)
  const growth = peak - baseline
  t.ok(growth < RSS_GROWTH_BOUND, `the server's RSS grew by ${(growth / 2 ** 20).toFixed(1)} MiB (from ${(baseline / 2 ** 20).toFixed(1)} MiB; bound ${RSS_GROWTH_BOUND / 2 ** 20} MiB)`)
  t.equal(peer.proc.exitCode, null, 'the server is still running')
  await client.close()
})
