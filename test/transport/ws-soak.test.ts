/**
 * A receiving peer is killed (SIGKILL) while this side sends in a tight loop, a Node peer and
 * a Python peer in turn. The sender must learn of it at once (its sends reject with CLOSED),
 * must never count a message as sent that was not written to the socket, and everything it
 * reports must add up: messages resolved = written + not written, and the peer got at most
 * what was written. The difference between what was written and what the peer's process read
 * is what the two kernels held in their socket buffers when the peer died: TCP cannot tell a
 * sender which of those bytes the dead process had read, so the test bounds it by the socket
 * buffer sizes instead of asking for equality.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { readFileSync } from 'node:fs'
import { performance } from 'node:perf_hooks'
import { createInterface } from 'node:readline'
import t, { type Test } from 'tap'
import { PickleBuffer } from '@picklewire/codec'
import { connectPickleSocket, type PickleSocket } from '@picklewire/transport'
import { PYTHON } from '../helpers/python.js'
import { PYTHON_DIR, pythonMissing, within } from './ws-helpers.js'

const MESSAGE_BYTES = 64 * 1024
const KILL_AFTER = 300 // messages the peer has counted

/**
 * A Node receiver: prints its port, then the count of messages its application got, one line
 * per message. process.stdout, not fs.writeSync(1): the pipe is non-blocking, and a write to a
 * full pipe (a busy test process reading slowly) fails with EAGAIN in writeSync.
 */
const NODE_PEER = `
import { listenPickleSocket } from '@picklewire/transport'
const server = await listenPickleSocket({ heartbeatInterval: 0 })
let n = 0
server.on('connection', (s) => s.on('message', () => process.stdout.write(++n + '\\n')))
process.stdout.write('port ' + server.address().port + '\\n')
`

/** The same with the Python peer. */
const PYTHON_PEER = `
import asyncio, os, sys
sys.path.insert(0, ${JSON.stringify(PYTHON_DIR)})
from picklewire import ws as pw

async def main():
    n = 0
    async def handler(sock):
        nonlocal n
        async for _ in sock:
            n += 1
            os.write(1, b'%d\\n' % n)
    async with pw.serve(handler, heartbeat_interval=None) as server:
        os.write(1, b'port %d\\n' % server.sockets[0].getsockname()[1])
        await asyncio.Future()

asyncio.run(main())
`

/** The largest number of bytes the kernel may buffer for one TCP connection, send side plus receive side. */
function socketBufferBound(): number {
  const max = (file: string): number => Number(readFileSync(file, 'utf8').trim().split(/\s+/)[2])
  return max('/proc/sys/net/ipv4/tcp_wmem') + max('/proc/sys/net/ipv4/tcp_rmem')
}

/**
 * Messages a peer's process may have read from its socket and not yet handed to its
 * application when it dies: ws parses a socket chunk (64 KiB) at a time; the Python peer's
 * websockets holds up to its queue_size (16) of messages, and asyncio a 64 KiB read.
 */
const PEER_QUEUE_MESSAGES = 16 + 2

interface Peer {
  child: ChildProcess
  port: number
  /** The last count the peer printed. */
  got: () => number
  /** Resolves once the count reaches n. */
  reached: (n: number) => Promise<void>
  /** Resolves once the peer has exited and every line it printed has been read. */
  exited: Promise<void>
}

async function startPeer(command: string, args: string[]): Promise<Peer> {
  const child = spawn(command, args, { cwd: process.cwd(), stdio: ['ignore', 'pipe', 'inherit'] })
  let got = 0
  const waiters: { n: number; resolve: () => void }[] = []
  // 'exit' can come before the last lines are read: wait for stdout's end as well.
  const exited = Promise.all([once(child, 'exit'), once(child.stdout!, 'close')]).then(() => {})
  const port = await new Promise<number>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`the peer exited with ${code} before listening`)))
    createInterface({ input: child.stdout! }).on('line', (line) => {
      if (line.startsWith('port ')) return resolve(Number(line.slice(5)))
      got = Number(line)
      for (const w of waiters.filter((w) => got >= w.n)) {
        waiters.splice(waiters.indexOf(w), 1)
        w.resolve()
      }
    })
  })
  return {
    child, port, exited,
    got: () => got,
    reached: (n) => (got >= n ? Promise.resolve() : new Promise((resolve) => waiters.push({ n, resolve }))),
  }
}

async function soak(t: Test, peer: Peer): Promise<void> {
  const sock: PickleSocket = await connectPickleSocket(`ws://127.0.0.1:${peer.port}/`, { highWaterMark: 1 << 20, heartbeatInterval: 0 })
  let closedAt = 0
  void sock.closed.then(() => (closedAt = performance.now()))
  const payload = new PickleBuffer(new Uint8Array(MESSAGE_BYTES).fill(5))
  let killedAt = 0
  void peer.reached(KILL_AFTER).then(() => {
    killedAt = performance.now()
    peer.child.kill('SIGKILL')
  })
  // The loop ends when a send rejects; the test's own timeout (tap's) bounds it otherwise.
  let resolved = 0
  let resolvedAfterClose = 0
  let failure: unknown = null
  let failedAt = 0
  for (;;) {
    try {
      await sock.send(payload)
      resolved++
      if (closedAt > 0) resolvedAfterClose++
    } catch (err) {
      failure = err
      failedAt = performance.now()
      break
    }
  }
  await within(20_000, sock.closed, 'the connection to close')
  await within(20_000, peer.exited, 'the peer to exit')
  const { messagesSent: written, messagesNotWritten: notWritten } = sock.stats()
  const got = peer.got()
  const bound = Math.ceil(socketBufferBound() / MESSAGE_BYTES) + PEER_QUEUE_MESSAGES
  t.comment(`resolved ${resolved}, written ${written}, not written ${notWritten}, the peer got ${got}; the sender learned ${(failedAt - killedAt).toFixed(1)} ms after the kill`)
  t.equal((failure as { code?: string }).code, 'CLOSED', `the send loop ended with CLOSED: ${(failure as Error).message}`)
  t.ok(killedAt > 0, 'the peer was killed mid-stream')
  // Heartbeats are off: the sender learns from the socket's end, not from a timer. The bound only
  // says it was not some later timeout; it is not a speed claim (a busy machine takes 100+ ms).
  t.ok(failedAt - killedAt < 5_000, `the sender learned from the socket soon after the kill (${(failedAt - killedAt).toFixed(1)} ms)`)
  t.equal(resolvedAfterClose, 0, 'no send resolved after the connection closed')
  t.equal(resolved, written + notWritten, 'every resolved send was either written or counted as not written')
  t.ok(got <= written, `the peer got no more than was written (${got} <= ${written})`)
  t.ok(written - got <= bound, `written but not read by the dead peer: ${written - got}, within what the socket buffers and the peer's own queue hold (${bound} messages of 64 KiB)`)
}

t.test('a Node peer killed mid-stream', async (t) => {
  const peer = await startPeer(process.execPath, ['--input-type=module', '-e', NODE_PEER])
  t.teardown(() => void peer.child.kill('SIGKILL'))
  await soak(t, peer)
})

t.test('a Python peer killed mid-stream', { skip: pythonMissing(t) ?? false }, async (t) => {
  const peer = await startPeer(PYTHON, ['-c', PYTHON_PEER])
  t.teardown(() => void peer.child.kill('SIGKILL'))
  await soak(t, peer)
})
