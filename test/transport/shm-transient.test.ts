// The channel's sender writes a message's record from a pickle lent by the pickler
// (dumpsTransient); a message that cannot go at once (ring full, record too big for the ring)
// must take its own copy before it waits, since the next dump reuses that memory.
import t from 'tap'
import { dumps } from '@picklewire/codec'
import { createChannel, openChannel } from '@picklewire/transport'

const TIMEOUT = { timeout: 20_000 }

t.test('messages queued behind a full ring keep their own pickles while later ones are dumped', async (t) => {
  const { port1, port2 } = createChannel({ ringBytes: 1024, window: 64 })
  const a = openChannel(port1)
  const b = openChannel(port2)
  t.teardown(async () => {
    await a.close()
    await b.close()
  })
  const n = 200
  const value = (i: number) => new Map<string, unknown>([['i', i], ['text', `message ${i} `.repeat(1 + (i % 7))], ['xs', [i, i * 0.5, -i]]])
  // Not awaited: the ring holds a few records; the rest wait with their pickles while the
  // pickler dumps the next ones into the same scratch memory.
  const sends = Array.from({ length: n }, (_, i) => a.send(value(i), TIMEOUT))
  // Other pickling while they wait (another channel, the application): it reuses the memory
  // the first waiting message's pickle was lent from.
  for (let i = 0; i < 10; i++) dumps(['unrelated', i, 'y'.repeat(300)], { protocol: 5 })
  let wrong = 0
  for (let i = 0; i < n; i++) {
    const m = await b.receive(TIMEOUT)
    const v = m.value as Map<string, unknown>
    m.release()
    const want = value(i)
    if (v.get('i') !== i || v.get('text') !== want.get('text') || JSON.stringify(v.get('xs')) !== JSON.stringify(want.get('xs'))) wrong++
  }
  await Promise.all(sends)
  t.equal(wrong, 0, `all ${n} messages arrived whole and in order`)
  // A record larger than the ring's inline limit goes by the slow path too.
  const big = 'x'.repeat(4000)
  const p = a.send(new Map([['big', big]]), TIMEOUT)
  dumps(['unrelated', 'z'.repeat(5000)], { protocol: 5 })
  const dumpedMeanwhile = a.send(new Map([['small', 1]]), TIMEOUT)
  const m1 = await b.receive(TIMEOUT)
  t.equal((m1.value as Map<string, unknown>).get('big'), big)
  m1.release()
  const m2 = await b.receive(TIMEOUT)
  t.equal((m2.value as Map<string, unknown>).get('small'), 1)
  m2.release()
  await Promise.all([p, dumpedMeanwhile])
})
