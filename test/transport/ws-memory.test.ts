/**
 * What hostile clients can make a picklewire server hold. The server runs in a child process
 * with its default options, so that its resident memory can be read from /proc:
 * - 20 connections that each announce a 1 GiB first frame and send it slowly: each is refused
 *   from the frame's length (1009), before any of it is buffered;
 * - a client that sends 300 requests for 1 MiB replies and never reads them: the server
 *   answers at most maxConcurrentRequests (64) beyond what the sockets take, then stops reading.
 * Meanwhile another client is served. The bound asserted is the one docs/security.md gives:
 * highWaterMark (8 MiB) + maxConcurrentRequests x the reply size (64 MiB) + 48 MiB of slack for
 * the heap's own growth.
 */
import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { createInterface } from 'node:readline'
import t from 'tap'
import { connectPickleSocket } from '@picklewire/transport'
import { rawClient, within } from './ws-helpers.js'

const SERVER = `
import { writeSync } from 'node:fs'
import { PickleBuffer } from '@picklewire/codec'
import { listenPickleSocket } from '@picklewire/transport'
const server = await listenPickleSocket({
  onRequest: (v) => (v === 'ping' ? 'pong' : new PickleBuffer(new Uint8Array(1 << 20).fill(1))),
})
server.on('connection', (s) => s.on('error', () => {}))
writeSync(1, 'port ' + server.address().port + '\\n')
`

const MiB = 2 ** 20
const BOUND = 8 * MiB + 64 * MiB + 48 * MiB

function rssOf(pid: number): number {
  const line = readFileSync(`/proc/${pid}/status`, 'utf8').split('\n').find((l) => l.startsWith('VmRSS:'))!
  return Number(line.split(/\s+/)[1]) * 1024
}

/** A masked client frame head (FIN + binary) announcing `length` bytes. */
function frameHead(length: number): Buffer {
  const head = Buffer.alloc(14)
  head[0] = 0x82
  head[1] = 0x80 | 127
  head.writeBigUInt64BE(BigInt(length), 2)
  head.writeUInt32BE(0x0a0b0c0d, 10)
  return head
}

t.test('hostile clients cannot make the server hold memory beyond its documented bound', async (t) => {
  const child = spawn(process.execPath, ['--input-type=module', '-e', SERVER], { stdio: ['ignore', 'pipe', 'inherit'] })
  t.teardown(() => void child.kill('SIGKILL'))
  const port = await new Promise<number>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`the server exited with ${code}`)))
    createInterface({ input: child.stdout! }).once('line', (line) => resolve(Number(line.slice(5))))
  })
  const url = `ws://127.0.0.1:${port}/`
  // The baseline is taken once the server has served a request, so that its warm-up is not counted.
  const warm = await connectPickleSocket(url)
  t.equal(await within(5000, warm.request('ping'), 'the first reply'), 'pong')
  await warm.close()
  await new Promise((r) => setTimeout(r, 200))
  const before = rssOf(child.pid!)

  // 20 connections announcing a 1 GiB first frame, then sending 1 KiB every 20 ms.
  const slow = await Promise.all(Array.from({ length: 20 }, () => rawClient(url)))
  const closes = slow.map((ws) => new Promise<number>((resolve) => ws.once('close', (code) => resolve(code))))
  const dribbles = slow.map((ws) => {
    const socket = (ws as unknown as { _socket: { write(b: Uint8Array): boolean; destroyed: boolean } })._socket
    socket.write(frameHead(2 ** 30))
    return setInterval(() => {
      if (!socket.destroyed) socket.write(Buffer.alloc(1024))
    }, 20)
  })
  t.teardown(() => dribbles.forEach(clearInterval))

  // A client that asks for 300 replies of 1 MiB and never reads them.
  const greedy = await connectPickleSocket(url, { heartbeatInterval: 0 })
  greedy.ws.pause()
  const unread = Array.from({ length: 300 }, (_, i) => greedy.request(i).catch(() => null))
  t.teardown(() => greedy.terminate())

  // Another client is served meanwhile.
  const polite = await connectPickleSocket(url)
  t.equal(await within(5000, polite.request('ping'), 'the polite client\'s reply'), 'pong', 'another client is served')

  await new Promise((r) => setTimeout(r, 2000))
  const codes = await within(5000, Promise.all(closes), 'the slow connections to be refused')
  t.same([...new Set(codes)], [1009], 'every 1 GiB first frame was refused with 1009')
  const grown = rssOf(child.pid!) - before
  t.comment(`server RSS grew ${(grown / MiB).toFixed(1)} MiB (bound ${(BOUND / MiB).toFixed(0)} MiB)`)
  t.ok(grown < BOUND, `the server's memory grew ${(grown / MiB).toFixed(1)} MiB, under ${BOUND / MiB} MiB`)
  t.equal(await within(5000, polite.request('ping'), 'a second reply'), 'pong', 'and is still served')
  await polite.close()
  greedy.terminate()
  await Promise.all(unread)
})
