/**
 * Giving up on Dask waits with an AbortSignal, against a real scheduler with a worker (in a
 * loopback-only network namespace, as every Dask test): DaskFuture.result, DaskClient.gather
 * and DaskClient.wait reject with the signal's reason and leave the futures and the client as
 * they were. Every wait on the cluster is bounded (within).
 */
import t from 'tap'
import { DaskClient } from '@picklewire/transport/dask'
import { startCluster, withDask, within } from './dask-helpers.js'

async function tests(): Promise<void> {
  t.test('result, gather and wait give up on their signal; the future completes later all the same', async (t) => {
    const cluster = await startCluster(t, { workers: 1 })
    const client = await within(20_000, DaskClient.connect(cluster.scheduler, { timeout: 20_000, rpcTimeout: 20_000, heartbeatInterval: 0 }), 'connect')
    t.teardown(() => client.close())
    const slow = client.submit('time.sleep', [1.5])
    const reason = new Error('the caller stopped waiting')

    const ac = new AbortController()
    const result = slow.result({ signal: ac.signal })
    setTimeout(() => ac.abort(reason), 100)
    t.equal(await within(5000, result.then(() => null, (e: unknown) => e), 'the aborted result'), reason, "result rejects with the signal's reason")
    t.equal(slow.status, 'pending', 'the future is left pending')

    const ac2 = new AbortController()
    const gathered = client.gather([slow], { signal: ac2.signal })
    setTimeout(() => ac2.abort(), 50)
    const err = await within(5000, gathered.then(() => null, (e: unknown) => e), 'the aborted gather')
    t.ok(err instanceof DOMException && err.name === 'AbortError', `gather rejects with an AbortError: ${String(err)}`)

    await t.rejects(client.wait([slow], { signal: AbortSignal.abort(reason) }), reason, 'wait refuses a signal aborted already')
    const ac3 = new AbortController()
    const waited = client.wait([slow], { signal: ac3.signal })
    setTimeout(() => ac3.abort(reason), 50)
    t.equal(await within(5000, waited.then(() => null, (e: unknown) => e), 'the aborted wait'), reason)

    t.equal(client.status, 'running', 'the client is still running')
    t.equal(await within(20_000, slow.result({ timeout: 20_000 }), 'the result'), null, 'the task finished all the same (time.sleep returns None)')
    const [x] = await within(20_000, client.scatter([41]), 'scatter')
    t.equal(await within(20_000, x!.result<number>({ signal: new AbortController().signal }), 'a result with a signal never aborted'), 41)
  })
}

await withDask(t, tests)
