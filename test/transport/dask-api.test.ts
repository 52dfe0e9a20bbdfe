/**
 * What Dask's Python users reach for first, against real schedulers of every installed version,
 * over tcp:// and ws://: map, keyword arguments holding futures, wait, asCompleted, cancel,
 * worker restrictions, the versions of the cluster; gathers of one 64 MiB array and of several
 * arrays at once (on 2023.11+ tcp the later buffers follow the message's prefix); lz4 between
 * a worker on 127.0.0.2 and a scheduler on 127.0.0.1.
 */
import t, { type Test } from 'tap'
import { NDArray, PyGlobal, Tuple } from '@picklewire/codec'
import { DaskClient, DaskFuture } from '@picklewire/transport'
import { forEachDask, startCluster, within, type DaskEnv } from './dask-helpers.js'

const WAIT = 60_000

function arr(v: unknown): NDArray {
  if (!(v instanceof NDArray)) throw new Error(`expected an NDArray, got ${String(v)}`)
  return v
}

async function tests(t: Test, env: DaskEnv, scheme: 'tcp' | 'ws'): Promise<void> {
  t.test(`${scheme}: the client API`, async (t) => {
    const cluster = await startCluster(t, { protocol: scheme, workers: 1, nthreads: 2, python: env.python })
    const client = await DaskClient.connect(cluster.scheduler, { timeout: 10_000, rpcTimeout: WAIT })
    t.teardown(() => client.close())

    t.test('versions: what the scheduler and the workers run', async (t) => {
      t.equal(client.daskVersion, env.version)
      const v = await within(WAIT, client.getVersions(), 'getVersions')
      t.equal(v.scheduler.packages.get('distributed'), env.version)
      t.equal(v.workers.size, 1)
      t.equal([...v.workers.values()][0]!.packages.get('distributed'), env.version)
    })

    t.test('map: many calls in one update-graph, futures and keyword arguments', async (t) => {
      const base = client.submit('builtins.abs', [-100])
      const xs = Array.from({ length: 40 }, (_, i) => i)
      const fs = client.map('builtins.pow', [xs, xs.map(() => 2)])
      t.equal(fs.length, 40)
      const added = client.map('operator.add', [xs, xs.map(() => base)], { key: 'plus-base' })
      t.match(added[0]!.key, /^plus-base-[0-9a-f]{32}$/)
      const squares = await within(WAIT, client.gather(fs), 'gather map')
      t.same(squares, xs.map((x) => x * x))
      t.same(await within(WAIT, client.gather(added), 'gather map with a future'), xs.map((x) => x + 100))
      const sorted = client.map('builtins.sorted', [[[3, 1, 2], [base, 5, 1]]], { kwargs: { reverse: true } })
      t.same(await within(WAIT, client.gather(sorted), 'map with kwargs'), [[3, 2, 1], [100, 5, 1]])
      t.same(client.map('builtins.abs', [[]]), [], 'no calls, no futures')
    })

    t.test('keyword arguments holding futures and nested calls', async (t) => {
      const a = client.submit('numpy.arange', [6])
      const total = client.submit('numpy.sum', [a], { kwargs: { initial: client.submit('builtins.abs', [-100]) } })
      t.equal(await within(WAIT, total.result(), 'kwargs future'), 115)
      const nested = client.submit('builtins.max', [[Tuple.fromItems([new PyGlobal('builtins', 'abs'), -7]), 3, a.key.length]], { kwargs: { default: 0 } })
      t.equal(await within(WAIT, nested.result(), 'nested call in a list'), Math.max(7, 3, a.key.length))
      const dictArg = client.submit('builtins.len', [{ x: a, y: [a, a] }])
      t.equal(await within(WAIT, dictArg.result(), 'futures inside a dict'), 2)
    })

    t.test('wait and asCompleted', async (t) => {
      const slow = client.submit('time.sleep', [30])
      const quick = client.submit('builtins.abs', [-1])
      const bad = client.submit('operator.truediv', [1, 0])
      const first = await within(WAIT, client.wait([slow, quick], { returnWhen: 'FIRST_COMPLETED' }), 'FIRST_COMPLETED')
      t.same(first.done, [quick])
      t.same(first.notDone, [slow])
      const exc = await within(WAIT, client.wait([slow, bad], { returnWhen: 'FIRST_EXCEPTION' }), 'FIRST_EXCEPTION')
      t.same([exc.done, exc.notDone], [[bad], [slow]], 'a failure ends FIRST_EXCEPTION, and wait does not reject')
      await t.rejects(client.wait([slow, quick], { timeout: 300 }), { code: 'TIMEOUT', message: /1 of 2 futures were not done within 300 ms/ })
      const order: DaskFuture[] = []
      const later = client.submit('time.sleep', [0.5])
      await within(WAIT, (async () => {
        for await (const f of client.asCompleted([later, bad, quick])) order.push(f)
      })(), 'asCompleted')
      t.same(order.slice(2), [later], 'the sleeping task comes last')
      t.same(new Set(order.slice(0, 2)), new Set([bad, quick]), 'done ones first')
      t.equal(order[0]!.done && order[1]!.done, true)
      await within(WAIT, client.cancel([slow]), 'cancel')
      t.equal(slow.status, 'cancelled')
      await t.rejects(slow.wait(), { code: 'REMOTE', message: /cancelled/ })
      const who = await client.rpc('who_has', { keys: [slow.key] }) as Map<unknown, unknown>
      t.same(who.get(slow.key) ?? [], [], 'the scheduler forgot it')
      t.equal(await within(WAIT, client.submit('builtins.abs', [-3]).result(), 'after cancel'), 3, 'the worker is free again')
    })

    t.test('worker restrictions', async (t) => {
      const worker = cluster.workers[0]!
      const here = client.submit('builtins.abs', [-4], { workers: [worker] })
      t.equal(await within(WAIT, here.result(), 'restricted to the worker'), 4)
      const who = await client.rpc('who_has', { keys: [here.key] }) as Map<unknown, unknown>
      t.same(who.get(here.key), [worker])
      const nowhere = client.submit('builtins.abs', [-5], { workers: ['tcp://127.0.0.9:1'] })
      await t.rejects(client.wait([nowhere], { timeout: 1500 }), { code: 'TIMEOUT' }, 'no such worker: it waits')
      t.equal(nowhere.status, 'pending')
      await within(WAIT, client.cancel([nowhere]), 'cancel the waiting task')
      t.equal(nowhere.status, 'cancelled')
    })

    t.test('gather: one 64 MiB array, then several arrays in one message', async (t) => {
      const n = 8 * 2 ** 20
      const ones = client.submit('numpy.ones', [n])
      const [o] = await within(WAIT, client.gather([ones]), '64 MiB gather')
      const data = arr(o).data as Float64Array
      t.ok(data.length === n && data.every((x) => x === 1), 'every one of the 8 Mi ones')
      client.release(ones)
      const parts = [1000, 300_000, 5, 2_000_000].map((m, i) => client.submit('numpy.full', [m, i + 0.25]))
      const got = await within(WAIT, client.gather(parts), 'several arrays at once')
      got.forEach((g, i) => {
        const d = arr(g).data as Float64Array
        t.ok(d.length === [1000, 300_000, 5, 2_000_000][i] && d.every((x) => x === i + 0.25), `array ${i}`)
      })
    })
  })

  if (scheme !== 'tcp') return
  t.test('lz4 between a worker on 127.0.0.2 and a scheduler on 127.0.0.1', async (t) => {
    const scheduler = await startCluster(t, { protocol: 'tcp', workers: 0, python: env.python, compression: 'lz4' })
    await startCluster(t, { protocol: 'tcp', scheduler: scheduler.scheduler, workers: 1, python: env.python, compression: 'lz4', host: '127.0.0.2' })
    const client = await DaskClient.connect(scheduler.scheduler, { timeout: 10_000, rpcTimeout: WAIT })
    t.teardown(() => client.close())
    const ones = client.submit('numpy.ones', [1_000_000])
    const [o] = await within(WAIT, client.gather([ones]), 'gather from 127.0.0.2')
    t.ok((arr(o).data as Float64Array).every((x) => x === 1), 'every one')
    t.ok((client.stats().decompressed.lz4 ?? 0) > 0, `the worker's lz4 frames reached the client through the scheduler and were decompressed (${client.stats().decompressed.lz4 ?? 0})`)
  })
}

await forEachDask(t, (t, env) => tests(t, env, 'tcp'), (t, env) => tests(t, env, 'ws'))
