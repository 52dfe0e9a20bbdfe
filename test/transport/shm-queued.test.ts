// A send or receive that waits its turn behind another one that is waiting answers to its own
// timeout and AbortSignal, in both signalling modes and on pipes: it rejects while the one
// ahead still waits, a send that gave up is never delivered, and the other messages keep
// their order and their ids.
import t, { type Test } from 'tap'
import { PickleBuffer } from '@picklewire/codec'
import { createChannel, createPipe, openChannel, openPipe, type Channel, type Pipe, type Received, type Signalling } from '@picklewire/transport'

const MODES: Signalling[] = ['atomics', 'port']
const KiB = 1024
const CAPACITY = 64 * KiB
/** The buffer of the message ahead: it fills most of the arena, so that a second one waits for space. */
const BIG = 40 * KiB

/** Rejects instead of hanging when p does not settle in 5 s (what a queued operation did). */
function bounded<T>(p: Promise<T>, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout>
  const limit = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: still pending after 5 s`)), 5000)))
  return Promise.race([p, limit]).finally(() => clearTimeout(timer))
}

/** 'pending' if p has not settled once this thread's pending work (microtasks and ready I/O) is done. */
async function stateOf(p: Promise<unknown>): Promise<'pending' | 'resolved' | 'rejected'> {
  let state: 'pending' | 'resolved' | 'rejected' = 'pending'
  p.then(() => (state = 'resolved'), () => (state = 'rejected'))
  await new Promise((r) => setImmediate(r))
  await new Promise((r) => setImmediate(r))
  return state
}

/** Both ends of a channel in this thread: the receiving end takes nothing until the test says so. */
function pair(t: Test, signalling: Signalling): { a: Channel; b: Channel } {
  const { port1, port2 } = createChannel({ signalling, capacity: CAPACITY })
  const a = openChannel(port1)
  const b = openChannel(port2)
  t.teardown(async () => {
    await a.close()
    await b.close()
  })
  return { a, b }
}

const big = (tag: number): Map<string, unknown> => new Map<string, unknown>([['tag', tag], ['b', new PickleBuffer(new Uint8Array(BIG).fill(tag))]])
const tagOf = (m: Received): unknown => (m.value instanceof Map ? m.value.get('tag') : m.value)

/** Everything that arrives at `r` within `quiet` ms of the last message, as [tag, id] pairs. */
async function drain(r: { receive(o: { timeout: number }): Promise<Received> }, quiet = 300): Promise<[unknown, number][]> {
  const got: [unknown, number][] = []
  for (;;) {
    let m: Received
    try {
      m = await r.receive({ timeout: quiet })
    } catch (err) {
      if ((err as { code?: string }).code === 'TIMEOUT') return got
      throw err
    }
    got.push([tagOf(m), m.id])
    m.release()
  }
}

/** How a queued operation is made to give up, and what it then rejects with. */
const WAYS = [
  { name: 'timeout', options: () => ({ options: { timeout: 50 }, fire: () => {} }), expect: { code: 'TIMEOUT', message: /turn behind 1 earlier/ } },
  {
    name: 'abort',
    options: () => {
      const ac = new AbortController()
      return { options: { signal: ac.signal }, fire: () => ac.abort() }
    },
    expect: { name: 'AbortError' },
  },
] as const

for (const signalling of MODES) {
  for (const way of WAYS) {
    t.test(`${signalling}, ${way.name}: a send queued behind a send waiting for arena space gives up on its own and is never delivered`, async (t) => {
      const { a, b } = pair(t, signalling)
      await a.send(big(1))
      const ahead = a.send(big(2)) // waits: the arena holds message 1 until b releases it
      t.equal(await stateOf(ahead), 'pending', 'the send ahead waits for space')
      const { options, fire } = way.options()
      // Small: once its turn came it could go at once, with nothing left to wait for.
      const queued = a.send('gave up', options)
      fire()
      await t.rejects(bounded(queued, 'the queued send'), way.expect, `the queued send rejects (${way.name}) while the one ahead still waits`)
      t.equal(await stateOf(ahead), 'pending', 'the send ahead is untouched: still waiting')
      const later = a.send('after') // queued behind the one ahead, as a send made now should be
      const first = await b.receive({ timeout: 5000 })
      t.equal(tagOf(first), 1)
      first.release()
      await bounded(ahead, 'the send ahead')
      await bounded(later, 'the send after')
      const rest = await drain(b)
      t.same(rest, [[2, 2], ['after', 3]], 'the message that gave up never arrives; the others come in order, ids without a gap')
      await a.settle()
      await b.settle()
      t.equal(a.stats().messagesSent, 3, 'the send that gave up is not counted as sent')
      t.equal(a.stats().arenas.out.freeBytes, CAPACITY, 'nothing of the send that gave up is left in the arena')
    })

    t.test(`${signalling}, ${way.name}: a receive queued behind a waiting receive gives up on its own; no message is lost`, async (t) => {
      const { a, b } = pair(t, signalling)
      const ahead = a.receive() // nothing sent yet: waits
      t.equal(await stateOf(ahead), 'pending', 'the receive ahead waits')
      const { options, fire } = way.options()
      const queued = a.receive(options)
      fire()
      await t.rejects(bounded(queued, 'the queued receive'), way.expect, `the queued receive rejects (${way.name}) while the one ahead still waits`)
      t.equal(await stateOf(ahead), 'pending', 'the receive ahead still waits')
      await b.send('one')
      await b.send('two')
      const m1 = await bounded(ahead, 'the receive ahead')
      t.equal(m1.value, 'one', 'the receive ahead gets the first message')
      const m2 = await a.receive({ timeout: 5000 })
      t.equal(m2.value, 'two', 'and the next receive the second: the one that gave up took none')
      t.same([m1.id, m2.id], [1, 2])
      m1.release()
      m2.release()
    })
  }

  t.test(`${signalling}: the first send in line gives up at its own deadline, counted from the call, and is not delivered`, async (t) => {
    const { a, b } = pair(t, signalling)
    await a.send(big(1))
    const ahead = a.send(big(2), { timeout: 50 })
    const queued = a.send('queued', { timeout: 60_000 })
    await t.rejects(bounded(ahead, 'the send ahead'), { code: 'TIMEOUT' }, 'the send waiting for space times out')
    const first = await b.receive({ timeout: 5000 })
    first.release()
    await bounded(queued, 'the send behind it')
    t.same(await drain(b), [['queued', 2]], 'the send that timed out is not delivered; the next takes its id')
  })

  t.test(`${signalling}: an already aborted signal rejects at once; bad options are TypeErrors and RangeErrors`, async (t) => {
    const { a, b } = pair(t, signalling)
    const ac = new AbortController()
    ac.abort()
    await t.rejects(a.send('x', { signal: ac.signal }), { name: 'AbortError' }, 'a send with an aborted signal')
    await t.rejects(a.receive({ signal: ac.signal }), { name: 'AbortError' }, 'a receive with an aborted signal')
    await t.rejects(a.send('x', { timeout: -1 }), { name: 'RangeError', message: /Channel\.send: option timeout must be a finite number of milliseconds >= 0, got number -1/ })
    await t.rejects(a.receive({ signal: {} as AbortSignal }), { name: 'TypeError', message: /Channel\.receive: option signal must be an AbortSignal, got/ })
    t.same(await drain(b, 100), [], 'nothing was sent')
  })
}

t.test('atomics: a send whose record waits for ring room in a block of its own gives its id back when it times out', async (t) => {
  // A 256-byte ring carries records up to 64 bytes; a longer one goes in an arena block and the
  // ring carries a pointer to it, written before the send waits for room.
  const { port1, port2 } = createChannel({ signalling: 'atomics', capacity: CAPACITY, ringBytes: 256 })
  const a = openChannel(port1)
  const b = openChannel(port2)
  t.teardown(async () => {
    await a.close()
    await b.close()
  })
  const long = (i: number): string => `message ${i} `.padEnd(100, '.')
  let sent = 0
  let timedOut: Promise<void> | undefined
  while (timedOut === undefined) {
    const p = a.send(long(sent), { timeout: 100 })
    const state = await stateOf(p)
    if (state === 'pending') timedOut = p
    else if (state === 'rejected') throw new Error(`send ${sent + 1} was rejected while the ring still had room (a stall longer than its 100 ms timeout?)`)
    else sent++
  }
  t.ok(sent > 0, `the ring held ${sent} records before one had to wait`)
  await t.rejects(bounded(timedOut, 'the send waiting for ring room'), { code: 'TIMEOUT', message: /room in the record ring/ })
  const after = a.send('after') // goes once b makes room
  const got = await drain(b)
  await bounded(after, 'the send after')
  t.same(got.map(([, id]) => id), Array.from({ length: sent + 1 }, (_, k) => k + 1), 'ids 1, 2, ... without a gap where the send timed out')
  t.equal(got.at(-1)![0], 'after')
  t.notOk(got.some(([tag]) => tag === long(sent)), 'the send that timed out is not delivered')
})

t.test('pipe: a send queued behind a waiting send and a receive queued behind a waiting receive give up on their own', async (t) => {
  const init = createPipe({ capacity: CAPACITY })
  const sender: Pipe = openPipe(init)
  const receiver: Pipe = openPipe(init)
  t.teardown(() => sender.close())
  for (const way of WAYS) {
    await sender.send(big(1))
    const ahead = sender.send(big(2))
    t.equal(await stateOf(ahead), 'pending', `${way.name}: the send ahead waits for space`)
    const s = way.options()
    const queued = sender.send('gave up', s.options)
    s.fire()
    await t.rejects(bounded(queued, 'the queued send'), way.expect, `${way.name}: the queued send rejects`)
    const first = await receiver.receive({ timeout: 5000 })
    first.release()
    await bounded(ahead, 'the send ahead')
    t.same((await drain(receiver)).map(([tag]) => tag), [2], `${way.name}: the send that gave up is never delivered`)

    const waiting = receiver.receive()
    t.equal(await stateOf(waiting), 'pending', `${way.name}: the receive ahead waits`)
    const r = way.options()
    const queuedReceive = receiver.receive(r.options)
    r.fire()
    await t.rejects(bounded(queuedReceive, 'the queued receive'), way.expect, `${way.name}: the queued receive rejects`)
    await sender.send('one')
    await sender.send('two')
    const m1 = await bounded(waiting, 'the receive ahead')
    const m2 = await receiver.receive({ timeout: 5000 })
    t.same([m1.value, m2.value], ['one', 'two'], `${way.name}: no message was lost to the receive that gave up`)
    m1.release()
    m2.release()
  }
  await sender.settle()
  await receiver.settle()
  t.equal(sender.stats().arena.freeBytes, CAPACITY, 'nothing left in the arena')
})
