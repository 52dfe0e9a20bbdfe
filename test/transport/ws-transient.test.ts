/**
 * The WebSocket sender frames a message from a pickle lent by the pickler (dumpsTransient): a
 * small pickle is copied into the header frame, a big one (over 16 KiB, or any on a version 1
 * connection) into a frame of its own, so that messages queued behind the high-water mark keep
 * their bytes while the pickler writes other pickles into the same memory.
 */
import t from 'tap'
import { dumps } from '@picklewire/codec'
import { pair, within } from './ws-helpers.js'

for (const protocolVersion of [2, 1]) {
  t.test(`queued messages arrive intact while other pickles are made (protocol version ${protocolVersion})`, async (t) => {
    const { a, b } = await pair(t, {}, { highWaterMark: 1, protocolVersion })
    // Small (inline in v2) and big (a pickle frame of its own) pickles, with other pickling
    // between the sends while earlier ones wait in the sender's queue.
    const value = (i: number) => new Map<string, unknown>([['i', i], ['text', String.fromCharCode(97 + (i % 26)).repeat(i % 3 === 0 ? 40_000 : 100 + i)]])
    const n = 60
    const sends: Promise<void>[] = []
    for (let i = 0; i < n; i++) {
      sends.push(a.send(value(i)))
      dumps(['unrelated', 'z'.repeat(30_000 + i)], { protocol: 5 })
    }
    let wrong = 0
    for (let i = 0; i < n; i++) {
      const v = (await within(10_000, b.receive(), `message ${i}`)) as Map<string, unknown>
      const want = value(i)
      if (v.get('i') !== i || v.get('text') !== want.get('text')) wrong++
    }
    await Promise.all(sends)
    t.equal(wrong, 0, `all ${n} messages whole and in order`)
    t.ok(a.stats().sendWaits > 0, `some sends waited behind the high-water mark (${a.stats().sendWaits})`)
  })
}

for (const protocolVersion of [2, 1]) {
  t.test(`queued requests and replies arrive intact while other pickles are made (protocol version ${protocolVersion})`, async (t) => {
    // Both sides queue behind a tiny high-water mark: requests on one side, replies on the other.
    const { a, b } = await pair(t, { highWaterMark: 1 }, { highWaterMark: 1, protocolVersion })
    b.onRequest((v) => {
      const m = v as Map<string, unknown>
      const reply = new Map<string, unknown>([['i', m.get('i')], ['echo', m.get('text')]])
      dumps(['unrelated reply side', 'r'.repeat(25_000)], { protocol: 5 })
      return reply
    })
    const text = (i: number) => String.fromCharCode(65 + (i % 26)).repeat(i % 4 === 0 ? 30_000 : 50 + i)
    const n = 40
    const replies: Promise<unknown>[] = []
    for (let i = 0; i < n; i++) {
      replies.push(a.request(new Map<string, unknown>([['i', i], ['text', text(i)]])))
      dumps(['unrelated', 'z'.repeat(20_000 + i)], { protocol: 5 })
    }
    const got = (await within(20_000, Promise.all(replies), 'the replies')) as Map<string, unknown>[]
    let wrong = 0
    got.forEach((r, i) => {
      if (r.get('i') !== i || r.get('echo') !== text(i)) wrong++
    })
    t.equal(wrong, 0, `all ${n} replies whole and matched to their requests`)
    t.ok(a.stats().sendWaits > 0 && b.stats().sendWaits > 0, `requests and replies waited behind the high-water mark (${a.stats().sendWaits}, ${b.stats().sendWaits})`)
  })
}

t.test('a request whose value cannot be pickled rejects at once and leaves nothing pending', async (t) => {
  const { a, b } = await pair(t)
  b.onRequest((v) => v)
  await t.rejects(a.request(Symbol('not picklable'), { timeout: 5_000 }), /cannot pickle/)
  // The connection still works, and the next request gets its own reply.
  t.equal(await within(5_000, a.request('after'), 'the next reply'), 'after')
})

t.test('a message whose header cannot be encoded uses up no id: the connection goes on', async (t) => {
  const { a, b } = await pair(t)
  b.onRequest((v) => v)
  const circular: Record<string, unknown> = {}
  circular.self = circular
  await t.rejects(a.request('v', { x: circular, timeout: 5_000 }), 'a request with a circular extra is refused')
  await t.rejects(a.send('v', { x: circular }), 'so is a message')
  t.equal(await within(5_000, a.request('after'), 'the next reply'), 'after', 'the next request is answered')
  await a.send('next message')
  t.equal(await within(5_000, b.receive(), 'the next message'), 'next message', 'the next message arrives')
  t.equal(a.error, null, 'the connection did not fail')
})

t.test("a handler's error that will not pickle as it is still comes back as an error reply", async (t) => {
  const { a, b } = await pair(t)
  b.onRequest(() => {
    const err = new Error('odd one')
    Object.defineProperty(err, 'name', { value: Symbol('weird') })
    throw err
  })
  const err = await within(5_000, a.request(1, { timeout: 5_000 }).catch((e: unknown) => e), 'the error reply')
  t.equal((err as { code?: string }).code, 'REMOTE', 'an error reply, not a timeout')
  t.match((err as Error).message, /Symbol\(weird\): odd one/)
  b.onRequest((v) => v)
  t.equal(await within(5_000, a.request('ok'), 'the next reply'), 'ok')
})
