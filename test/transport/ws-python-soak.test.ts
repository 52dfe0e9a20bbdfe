/**
 * A Node receiver killed with SIGKILL while the Python peer sends in a tight loop: Python's
 * send() fails within 100 ms of the kill, and no message counts as sent that was not written to
 * the socket. What the receiver got is counted exactly: it writes its count to a pipe after each
 * message (synchronous on Linux), and the pipe keeps every line after the kill.
 *
 * Messages written to the socket but still in the kernel's buffers when the receiver dies are
 * lost with it (TCP has no way to return them): the sender's count may exceed the receiver's
 * by at most what those buffers hold, and the test checks that bound.
 */
import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { once } from 'node:events'
import { createInterface } from 'node:readline'
import t from 'tap'
import { PythonPeer, pythonMissing, within } from './ws-helpers.js'

const RECEIVER = `
import { listenPickleSocket } from '@picklewire/transport'
const server = await listenPickleSocket({ host: '127.0.0.1' })
process.stdout.write(JSON.stringify({ url: server.url }) + '\\n')
server.on('connection', async (sock) => {
  let n = 0
  try {
    for await (const v of sock) {
      if (v[0] !== n) throw new Error('message ' + v[0] + ' arrived as number ' + n)
      n++
      process.stdout.write(n + '\\n')
    }
  } catch (err) {
    process.stdout.write('error ' + err.message + '\\n')
  }
})
`

/** The kernel's largest TCP receive buffer: what a dead receiver's socket can have held unread. */
function maxReceiveBuffer(): number {
  try {
    return Number(readFileSync('/proc/sys/net/ipv4/tcp_rmem', 'utf8').trim().split(/\s+/)[2])
  } catch {
    return 32 * 2 ** 20
  }
}

const missing = pythonMissing(t)
if (missing) {
  t.plan(0, missing)
} else {
  for (const [round, bytes] of [[1, 65536], [2, 65536], [3, 4096], [4, 4096], [5, 1 << 20]] as const) {
    t.test(`round ${round}: messages of ${bytes} bytes, the Node receiver killed mid-stream`, async (t) => {
      const receiver = spawn(process.execPath, ['--input-type=module', '-e', RECEIVER], { cwd: new URL('../..', import.meta.url).pathname, stdio: ['ignore', 'pipe', 'inherit'] })
      t.teardown(() => { if (receiver.exitCode === null && receiver.signalCode === null) receiver.kill('SIGKILL') })
      const lines: string[] = []
      const waiters: (() => void)[] = []
      createInterface({ input: receiver.stdout! }).on('line', (line) => {
        lines.push(line)
        for (const w of waiters.splice(0)) w()
      })
      const ended = once(receiver.stdout!, 'close')
      // The kernel closes a killed process's socket as the process exits, before 'exit' is emitted.
      const exited = once(receiver, 'exit').then(() => Date.now())
      const until = async (ok: () => boolean, what: string): Promise<void> => {
        const deadline = Date.now() + 20_000
        while (!ok()) {
          if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; receiver said ${lines.slice(-3).join(' | ')}`)
          await new Promise<void>((r) => { waiters.push(r); setTimeout(r, 200) })
        }
      }
      await until(() => lines.length > 0, 'the receiver to listen')
      const { url } = JSON.parse(lines[0]!) as { url: string }

      const sender = new PythonPeer(['send-until-closed', url, '--bytes', String(bytes)])
      t.teardown(() => sender.kill())
      t.same(await sender.next(), { ready: true })
      const count = (): number => Number(lines.filter((l) => /^\d+$/.test(l)).pop() ?? 0)
      await until(() => count() >= 200, '200 messages at the receiver')

      receiver.kill('SIGKILL')
      const killedAt = Date.now()
      const closedBy = await within(5000, exited, 'the receiver to exit')
      const report = await sender.next(10_000)
      await within(5000, ended, 'the receiver\'s stdout to close')
      const got = count()

      t.notOk(lines.some((l) => l.startsWith('error')), `the receiver saw every message in order: ${lines.find((l) => l.startsWith('error')) ?? ''}`)
      t.equal(report.code, 'CLOSED', `send() failed with CLOSED: ${report.message}`)
      const learnedAfter = report.failed_at * 1000 - closedBy
      t.ok(learnedAfter < 100, `Python learned of the close ${learnedAfter.toFixed(1)} ms after the receiver had exited (${(closedBy - killedAt).toFixed(0)} ms after SIGKILL; bound: 100 ms)`)
      t.equal(report.counted, report.sent, 'stats.messages_sent counts exactly the sends that returned')
      t.ok(got <= report.sent, `the receiver got ${got}, no more than the ${report.sent} the sender was told were sent`)
      // what the kernel can have held: the sender's send buffer, the dead receiver's receive
      // buffer, and one message partly read by the receiver process
      const inFlight = Math.ceil((report.sndbuf + maxReceiveBuffer()) / (bytes + 64)) + 1
      t.ok(report.sent - got <= inFlight,
        `${report.sent - got} messages were written to the socket and lost with the receiver (at most ${inFlight} fit in the kernel's buffers)`)
      t.comment(`sent ${report.sent}, received ${got}, lost in the kernel ${report.sent - got}, learned ${learnedAfter.toFixed(1)} ms after the exit, ${(report.failed_at * 1000 - killedAt).toFixed(1)} ms after SIGKILL`)
      t.equal(await sender.exit(10_000), 0)
    })
  }
}
