/**
 * A scheduler that goes away mid-run: the scheduler process is killed while a task runs on a
 * worker (in a process of its own), a request is in flight and futures wait. Every pending
 * future and the request fail with TransportError('CLOSED') within seconds instead of hanging;
 * the client is closed and says so. Then closing a client on purpose fails its pending futures
 * the same way.
 */
import t, { type Test } from 'tap'
import { DaskClient, DaskFuture, TransportError } from '@picklewire/transport'
import { forEachDask, startCluster, within, type DaskEnv } from './dask-helpers.js'

async function settled(f: Promise<unknown>): Promise<unknown> {
  return within(10_000, f.then(() => 'resolved', (e: unknown) => e), 'a pending operation to fail')
}

async function tests(t: Test, env: DaskEnv, scheme: 'tcp' | 'ws'): Promise<void> {
  t.test(`${scheme}: the scheduler killed mid-run fails every pending future and request`, async (t) => {
    const scheduler = await startCluster(t, { protocol: scheme, workers: 0, python: env.python })
    const workers = await startCluster(t, { protocol: scheme, scheduler: scheduler.scheduler, workers: 1, nthreads: 2, python: env.python })
    const client = await DaskClient.connect(scheduler.scheduler, { timeout: 10_000, rpcTimeout: 60_000 })
    t.teardown(() => client.close())
    // the worker is registered once a task can run
    t.equal(await within(30_000, client.submit('builtins.abs', [-1]).result(), 'a first task'), 1)

    const done = client.submit('builtins.abs', [-7])
    await within(30_000, done.wait(), 'a finished task')
    const running = client.submit('time.sleep', [60])
    const after = client.submit('builtins.len', [[running]])
    const unrelated = client.submit('time.sleep', [60], { key: 'sleeper-2' })
    // a request the scheduler holds: scatter to an empty worker list waits for its timeout
    const inFlight = client.rpc('scatter', { data: {}, workers: [], client: client.id, timeout: 60 })
    const outcomes = Promise.all([running.wait(), after.wait(), unrelated.wait(), client.gather([running]), inFlight].map(settled))
    await new Promise((r) => setTimeout(r, 500)) // the sleep is running on the worker

    const killedAt = Date.now()
    await scheduler.kill()
    const failures = await outcomes
    t.ok(Date.now() - killedAt < 10_000, `all failed within ${Date.now() - killedAt} ms`)
    failures.forEach((o, i) => {
      t.ok(o instanceof TransportError && o.code === 'CLOSED', `pending operation ${i} failed with CLOSED: ${String(o)}`)
    })
    t.match(String(failures[0]), /lost the connection to the scheduler/)
    t.same([running.status, after.status, unrelated.status], ['cancelled', 'cancelled', 'cancelled'])
    t.equal(done.status, 'finished', 'a finished future stays finished')
    t.equal(client.status, 'closed')
    t.throws(() => client.submit('builtins.abs', [1]), { code: 'CLOSED' }, 'submit after the loss')
    await t.rejects(client.gather([done]), { code: 'CLOSED' }, 'gather after the loss')
    await t.rejects(client.rpc('identity'), { code: 'CLOSED' })
    await workers.stop()
  })
}

async function closing(t: Test, env: DaskEnv): Promise<void> {
  await t.test('close() fails pending futures and tells the scheduler', async (t) => {
    const cluster = await startCluster(t, { workers: 1, python: env.python })
    const client = await DaskClient.connect(cluster.scheduler, { timeout: 10_000 })
    const observer = await DaskClient.connect(cluster.scheduler, { timeout: 10_000 })
    t.teardown(() => observer.close())
    const pending: DaskFuture = client.submit('time.sleep', [60])
    const wait = settled(pending.wait())
    await new Promise((r) => setTimeout(r, 200))
    const closing = Date.now()
    await within(5000, client.close(), 'close')
    t.ok(Date.now() - closing < 2000, `closed in ${Date.now() - closing} ms`)
    const err = await wait
    t.ok(err instanceof TransportError && err.code === 'CLOSED', `pending future: ${String(err)}`)
    t.equal(client.status, 'closed')
    await client.close()
    t.pass('closing twice is fine')
    // the scheduler dropped the client: its key is released
    const deadline = Date.now() + 10_000
    let who: unknown
    do {
      who = await observer.rpc('who_has', { keys: [pending.key] })
      const identity = await observer.rpc('identity') as Map<unknown, unknown>
      if (!(identity.get('workers') instanceof Map)) break
      await new Promise((r) => setTimeout(r, 100))
    } while (Date.now() < deadline && ((who as Map<unknown, unknown>).get(pending.key) as unknown[]).length > 0)
    t.same((who as Map<unknown, unknown>).get(pending.key), [])
  })
}

await forEachDask(t, (t, env) => tests(t, env, 'tcp'), (t, env) => tests(t, env, 'ws'), closing)
