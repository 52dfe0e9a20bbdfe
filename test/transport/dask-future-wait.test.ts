/**
 * DaskFuture.wait's timeout and signal, on a future whose owner is never asked anything (a
 * wait does not talk to the scheduler): they give up and leave the future as it was. Against a
 * real scheduler, see dask-client.test.ts and options-check-dask.test.ts.
 */
import t from 'tap'
import { DaskFuture, TransportError } from '@picklewire/transport/dask'

function pending(key = 'k'): DaskFuture {
  return new DaskFuture(key, {
    gather: () => Promise.reject(new Error('a wait never gathers')),
    release: () => {},
  })
}

t.test('an aborted wait rejects with the reason and leaves the future pending; a later wait still resolves', async (t) => {
  const f = pending()
  const ac = new AbortController()
  const waiting = f.wait({ signal: ac.signal })
  const reason = new Error('stop')
  ac.abort(reason)
  await t.rejects(waiting, reason)
  t.equal(f.status, 'pending', 'the future is left as it was')
  const again = f.wait()
  f._finish('builtins.int')
  t.equal(await again, f, 'a later wait resolves when the key is in memory')
})

t.test('a signal aborted already refuses the wait; a timeout gives up with TIMEOUT', async (t) => {
  const f = pending()
  await t.rejects(f.wait({ signal: AbortSignal.abort() }), { name: 'AbortError' })
  const err = await f.wait({ timeout: 20 }).then(() => null, (e: unknown) => e)
  t.ok(err instanceof TransportError && err.code === 'TIMEOUT', `TIMEOUT: ${String(err)}`)
  t.match((err as Error).message, /key k was not ready within 20 ms/)
  t.equal(f.status, 'pending')
})

t.test('wait and result check their options', async (t) => {
  const f = pending()
  await t.rejects(f.wait({ sginal: undefined } as object), { name: 'TypeError', message: /sginal.*did you mean 'signal'/ })
  await t.rejects(f.wait({ signal: 'x' } as object), { name: 'TypeError', message: /signal/ })
  await t.rejects(f.wait({ timeout: -1 }), RangeError)
  await t.rejects(f.result({ timout: 5 } as object), { name: 'TypeError', message: /timout.*did you mean 'timeout'/ })
})
