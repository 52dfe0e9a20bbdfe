/**
 * The carriers' shared contract, as scenarios that run unchanged over every carrier
 * (contract.test.ts gives each one a pair of ends): send and receive, a receive that times
 * out, one that is aborted, close while a receive waits, async iteration that ends on close,
 * stats() after N messages, and unknown option names. Where a carrier differs by its nature,
 * its Capabilities say so, and the scenario asserts that difference instead of skipping.
 */
import type { Test } from 'tap'
import { TransportError, type WaitOptions } from '@picklewire/transport'

/** The common counters every carrier's stats() has. */
export interface CommonStats {
  messagesSent: number
  messagesReceived: number
  bytesSent: number
  bytesReceived: number
}

/** One end of a carrier, as the contract sees it: the names are the carriers' own. */
export interface End {
  send(value: unknown, options?: WaitOptions): Promise<void>
  receive(options?: WaitOptions): Promise<unknown>
  close(): Promise<unknown>
  readonly closed: Promise<unknown>
  readonly open: boolean
  readonly error: Error | null
  stats(): CommonStats
  [Symbol.asyncIterator](): AsyncIterator<unknown>
}

/** Where a carrier differs in substance, said in types. */
export interface Capabilities {
  /**
   * What receive() gives: the value itself, or (shared memory) a Received whose `value` is it
   * and whose release() gives its arena blocks back.
   */
  receives: 'value' | 'Received'
  /**
   * Messages each end sent and received before the application's first (Dask's handshake: one
   * each way, counted as messages like any other).
   */
  handshakeMessages: number
  /**
   * What the byte counters count: whole messages as they travel (ws frames, Dask frames), or
   * only the out-of-band buffers (shared memory: the record travels apart, counted in
   * recordBytesSent/recordBytesReceived).
   */
  bytesCounted: 'whole messages' | 'out-of-band buffers'
  /**
   * When a message counts as sent: when send() resolves, or once the socket has written it
   * (ws counts a message sent when ws reports its last frame written; wait with flushed()).
   */
  sentCounted: 'on send' | 'when written'
  /**
   * What a send waits for when there is no room, and the size of a buffer that leaves no room
   * for a second message of that size in the pairs the test makes; null when a send never
   * waits (Dask: the socket takes every message at once, and Node buffers what the peer has
   * not read yet, so there is nothing for a send's timeout to bound).
   */
  sendWaitsFor: { what: 'arena space' | 'the high-water mark'; fillBytes: number } | null
}

/** Two ends of one carrier: `a` sends, `b` receives (a pipe's writer and reader; a pair's two sides). */
export interface Pair {
  a: End
  b: End
  /** Resolves once every message `a` sent is counted in its stats (see Capabilities.sentCounted). */
  flushed(): Promise<void>
  /** Frees whatever the pair holds (servers, listeners, the other ends). */
  dispose(): Promise<void>
}

export interface Carrier {
  name: string
  caps: Capabilities
  pair(): Promise<Pair>
}

/** The value a carrier's receive gave, whatever its form (a Received is released once read). */
function valueOf(caps: Capabilities, got: unknown): unknown {
  if (caps.receives === 'value') return got
  const r = got as { value: unknown; release(): void }
  const v = r.value
  r.release()
  return v
}

/** A value every carrier carries as itself: a list of str, int, float and a 4 KiB buffer (out of band everywhere). */
function message(i: number): unknown[] {
  return ['message', i, i + 0.5, new Uint8Array(4096).fill(i & 0xff)]
}

function checkMessage(t: Test, caps: Capabilities, got: unknown, i: number, what: string): void {
  const v = valueOf(caps, got) as unknown[]
  t.ok(Array.isArray(v), `${what}: a list`)
  t.same(v.slice(0, 3), ['message', i, i + 0.5], `${what}: message ${i}`)
  const bytes = v[3] as Uint8Array
  t.ok(bytes instanceof Uint8Array && bytes.length === 4096 && bytes.every((b) => b === (i & 0xff)), `${what}: its 4,096 bytes`)
}

/** Rejects the test if p has not settled within ms. */
async function within<T>(ms: number, p: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  try {
    return await Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: not settled within ${ms} ms`)), ms)))])
  } finally {
    clearTimeout(timer)
  }
}

/** What p rejects with (the test fails if it resolves). */
async function rejection(t: Test, p: Promise<unknown>, what: string): Promise<unknown> {
  try {
    await within(10_000, p, what)
  } catch (err) {
    return err
  }
  t.fail(`${what}: resolved, expected a rejection`)
  return undefined
}

function isTransportError(err: unknown, code: string): boolean {
  return err instanceof TransportError && err.code === code
}

const tick = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

export interface Scenario {
  name: string
  run(t: Test, carrier: Carrier, pair: Pair): Promise<void>
}

export const scenarios: Scenario[] = [
  {
    name: 'send and receive: values arrive whole and in order',
    async run(t, { caps }, { a, b }) {
      t.equal(a.open, true, 'a is open')
      t.equal(b.open, true, 'b is open')
      for (let i = 0; i < 5; i++) await a.send(message(i))
      for (let i = 0; i < 5; i++) checkMessage(t, caps, await within(10_000, b.receive(), 'receive'), i, `receive ${i}`)
    },
  },
  {
    name: 'a receive times out with TIMEOUT, and the carrier still works; the late message goes to the next receive',
    async run(t, { caps }, { a, b }) {
      const err = await rejection(t, b.receive({ timeout: 50 }), 'receive with a timeout')
      t.ok(isTransportError(err, 'TIMEOUT'), `TransportError TIMEOUT: ${String(err)}`)
      t.equal(b.open, true, 'still open after the timeout')
      const zero = await rejection(t, b.receive({ timeout: 0 }), 'receive with timeout 0')
      t.ok(isTransportError(zero, 'TIMEOUT'), 'timeout 0 gives up when nothing is there')
      await a.send(message(1))
      checkMessage(t, caps, await within(10_000, b.receive({ timeout: 10_000 }), 'receive'), 1, 'after the timeouts')
    },
  },
  {
    name: 'a signal aborted already refuses the receive and the send; one aborted mid-wait rejects with its reason and loses no message',
    async run(t, { caps }, { a, b }) {
      const already = await rejection(t, b.receive({ signal: AbortSignal.abort() }), 'receive with an aborted signal')
      t.ok(already instanceof DOMException && already.name === 'AbortError', `an AbortError DOMException: ${String(already)}`)
      const why = new Error('the caller gave up')
      const sent = await rejection(t, a.send(message(0), { signal: AbortSignal.abort(why) }), 'send with an aborted signal')
      t.equal(sent, why, "send rejects with the signal's reason")
      const ac = new AbortController()
      const waiting = b.receive({ signal: ac.signal })
      await tick(30)
      const reason = new Error('stopped waiting')
      ac.abort(reason)
      t.equal(await rejection(t, waiting, 'aborted receive'), reason, "the receive rejects with the signal's reason")
      t.equal(b.open, true, 'still open after the abort')
      await a.send(message(2))
      checkMessage(t, caps, await within(10_000, b.receive(), 'receive'), 2, 'the next receive gets the message (the one refused by its signal was never sent)')
    },
  },
  {
    name: 'a send that has to wait for room gives up on its timeout and is never delivered (a carrier whose sends never wait sends at once)',
    async run(t, { caps }, { a, b }) {
      const room = caps.sendWaitsFor
      if (room === null) {
        await within(10_000, a.send(message(1), { timeout: 0 }), 'a send with timeout 0')
        checkMessage(t, caps, await within(10_000, b.receive(), 'receive'), 1, 'sent at once')
        return
      }
      const big = (i: number): unknown[] => ['message', i, i + 0.5, new Uint8Array(room.fillBytes).fill(i)]
      const first = a.send(big(1))
      const err = await rejection(t, a.send(big(2), { timeout: 0 }), `a send waiting for ${room.what}`)
      t.ok(isTransportError(err, 'TIMEOUT'), `it gives up with TIMEOUT: ${String(err)}`)
      await within(10_000, first, 'the first send')
      const got = valueOf(caps, await within(10_000, b.receive(), 'receive')) as unknown[]
      t.equal(got[1], 1, 'the first message arrives')
      await a.send(message(3))
      checkMessage(t, caps, await within(10_000, b.receive(), 'receive'), 3, 'the next message received is the one sent after: the send that gave up was never delivered')
      t.equal(a.open, true, 'the sending end is still open')
    },
  },
  {
    name: 'close while a receive waits: it rejects with CLOSED, closed resolves, open is false, error is null, send is refused',
    async run(t, _carrier, { b }) {
      const waiting = b.receive()
      await tick(30)
      await within(10_000, b.close(), 'close')
      const err = await rejection(t, waiting, 'the waiting receive')
      t.ok(isTransportError(err, 'CLOSED'), `TransportError CLOSED: ${String(err)}`)
      await within(10_000, b.closed, 'closed')
      t.equal(b.open, false, 'open is false')
      t.equal(b.error, null, 'a normal close is no error')
      const later = await rejection(t, b.receive(), 'a receive after close')
      t.ok(isTransportError(later, 'CLOSED'), 'a later receive rejects with CLOSED')
      const send = await rejection(t, b.send(message(0)), 'a send after close')
      t.ok(isTransportError(send, 'CLOSED'), `a send after close rejects with CLOSED: ${String(send)}`)
      await within(10_000, b.close(), 'a second close (idempotent)')
    },
  },
  {
    name: 'async iteration gives every message, then ends when the other end closes',
    async run(t, { caps }, { a, b }) {
      for (let i = 0; i < 3; i++) await a.send(message(i))
      await within(10_000, a.close(), 'close of the sending end')
      const got: unknown[] = []
      const iterate = async (): Promise<void> => {
        const it = b[Symbol.asyncIterator]()
        for (;;) {
          const r = await it.next()
          if (r.done === true) return
          got.push(r.value)
        }
      }
      await within(10_000, iterate(), 'the iteration')
      t.equal(got.length, 3, 'three messages, then the end')
      got.forEach((v, i) => checkMessage(t, caps, v, i, `iterated ${i}`))
      await within(10_000, b.closed, 'closed on the receiving end')
      t.equal(b.open, false, 'the receiving end is no longer open')
      t.equal(b.error, null, 'a normal close of the other end is no error')
    },
  },
  {
    name: 'stats() after N messages: messagesSent and messagesReceived are N on the two ends, bytes counted both ways',
    async run(t, { caps }, pair) {
      const { a, b } = pair
      const n = 7
      const before = a.stats()
      for (let i = 0; i < n; i++) await a.send(message(i))
      for (let i = 0; i < n; i++) valueOf(caps, await within(10_000, b.receive(), 'receive'))
      await pair.flushed()
      const sa = a.stats()
      const sb = b.stats()
      t.equal(sa.messagesSent, n + caps.handshakeMessages, `a sent ${n} (+${caps.handshakeMessages} of the handshake)`)
      t.equal(sb.messagesReceived, n + caps.handshakeMessages, `b received ${n} (+${caps.handshakeMessages} of the handshake)`)
      t.ok(sa.bytesSent - before.bytesSent >= n * 4096, `bytesSent counts at least the buffers (${sa.bytesSent - before.bytesSent}; ${caps.bytesCounted})`)
      t.ok(sb.bytesReceived >= n * 4096, `bytesReceived likewise (${sb.bytesReceived})`)
      t.equal(sb.bytesReceived, sa.bytesSent, 'what one end counts as sent, the other counts as received')
      const snapshot = a.stats()
      snapshot.messagesSent = -1
      t.equal(a.stats().messagesSent, n + caps.handshakeMessages, 'stats() is a snapshot: changing it changes nothing')
    },
  },
  {
    name: 'an unknown option name in receive or send options is a TypeError naming it',
    async run(t, { caps }, { a, b }) {
      const err = await rejection(t, b.receive({ timout: 10 } as WaitOptions), 'receive with a misspelled option')
      t.type(err, TypeError)
      t.match((err as Error).message, /timout/, 'it names the option')
      t.match((err as Error).message, /timeout/, 'and suggests the known one')
      const bad = await rejection(t, b.receive({ timeout: -1 }), 'receive with a negative timeout')
      t.type(bad, RangeError, 'a negative timeout is a RangeError on every carrier')
      t.match((bad as Error).message, /option timeout must be a finite number of milliseconds >= 0, got number -1/)
      const sendErr = await rejection(t, a.send(message(0), { sgnal: undefined } as WaitOptions), 'send with a misspelled option')
      t.type(sendErr, TypeError)
      t.match((sendErr as Error).message, /sgnal/)
      await a.send(message(3))
      checkMessage(t, caps, await within(10_000, b.receive(), 'receive'), 3, 'nothing refused was sent')
    },
  },
]
