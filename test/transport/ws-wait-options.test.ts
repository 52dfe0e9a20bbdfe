/**
 * PickleSocket's { timeout, signal } beyond the shared contract (contract.test.ts): a send that
 * gives up while waiting for the high-water mark is never sent and leaves no gap in the ids
 * the peer checks; a request gives up on its signal at any point and its late reply is dropped.
 */
import t from 'tap'
import { TransportError } from '@picklewire/transport/ws'
import { pair, within } from './ws-helpers.js'

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

t.test('sends that give up while waiting for the high-water mark are never sent, and the peer sees no gap in the ids', async (t) => {
  const { a, b } = await pair(t, { sameHost: false }, { highWaterMark: 0, sameHost: false })
  // 16 MiB is not written in one turn of the event loop: the sends after it wait.
  const first = a.send(['first', new Uint8Array(16 << 20).fill(1)])
  const timedOut = a.send(['timed out'], { timeout: 0 }).then(() => null, (e: unknown) => e)
  const ac = new AbortController()
  const aborted = a.send(['aborted'], { signal: ac.signal }).then(() => null, (e: unknown) => e)
  const last = a.send(['last'])
  const reason = new Error('no longer wanted')
  ac.abort(reason)
  const timeoutErr = await timedOut
  t.ok(timeoutErr instanceof TransportError && timeoutErr.code === 'TIMEOUT', `the send with timeout 0 gives up: ${String(timeoutErr)}`)
  t.equal(await aborted, reason, "the aborted send rejects with the signal's reason")
  await within(20_000, Promise.all([first, last]), 'the other two sends')
  const got1 = await within(20_000, b.receive<unknown[]>(), 'the first message')
  const got2 = await within(20_000, b.receive<unknown[]>(), 'the second message')
  t.equal(got1[0], 'first')
  t.equal((got1[1] as Uint8Array).length, 16 << 20)
  t.equal(got2[0], 'last', 'the next message received is the last one: the two that gave up were never sent')
  await t.rejects(b.receive({ timeout: 100 }), { code: 'TIMEOUT' }, 'and nothing else arrives')
  t.equal(b.error, null, 'the peer found no gap in the message ids')
  t.equal(b.open, true)
  await a.flushed()
  t.equal(a.stats().messagesSent, 2, 'two messages counted as sent')
  t.ok(a.stats().sendWaits >= 3, `the three sends after the first waited (${a.stats().sendWaits})`)
})

t.test('a request aborted while its reply is awaited rejects with the reason; the late reply is dropped', async (t) => {
  const { a, b } = await pair(t)
  let handled = 0
  b.onRequest(async (v) => {
    handled++
    if (v === 'slow') await sleep(200)
    return `re:${String(v)}`
  })
  const ac = new AbortController()
  const slow = a.request<string>('slow', { signal: ac.signal })
  setTimeout(() => ac.abort(), 30)
  const err = await slow.then(() => null, (e: unknown) => e)
  t.ok(err instanceof DOMException && err.name === 'AbortError', `an AbortError: ${String(err)}`)
  const fast: string = await within(5000, a.request<string>('fast'), 'a request after the abort')
  t.equal(fast, 're:fast')
  await sleep(300)
  t.equal(a.error, null, 'the late reply to the aborted request is dropped, not an error')
  t.equal(await within(5000, a.request<string>('again'), 'another request'), 're:again')
  t.equal(handled, 3)
  await t.rejects(a.request('never', { signal: AbortSignal.abort() }), { name: 'AbortError' }, 'a signal aborted already refuses the request')
  t.equal(await within(5000, a.request<string>('after'), 'a request'), 're:after')
  t.equal(handled, 4, 'the refused request never reached the peer')
})

t.test('a request that times out while waiting for the high-water mark is not sent', async (t) => {
  const { a, b } = await pair(t, { sameHost: false }, { highWaterMark: 0, sameHost: false })
  let handled = 0
  b.onRequest((v) => {
    handled++
    return v
  })
  const big = a.send(new Uint8Array(16 << 20))
  const queued = a.request('queued', { timeout: 1 })
  await t.rejects(queued, { code: 'TIMEOUT' })
  await big
  t.equal(await within(20_000, a.request<string>('next', { timeout: 20_000 }), 'the next request'), 'next')
  t.equal(handled, 1, 'only the request that did not give up reached the peer')
  t.equal(b.error, null)
})
