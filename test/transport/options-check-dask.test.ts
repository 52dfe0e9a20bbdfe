/**
 * DaskClient's methods check their option names: an unknown one is a TypeError naming it and
 * the nearest known name, before anything is sent. Against a real scheduler (Debian's
 * distributed), in a loopback-only network namespace as every Dask test. Every wait on the
 * cluster is bounded (within): the client's sockets do not keep the event loop alive.
 */
import t from 'tap'
import { DaskClient } from '@picklewire/transport'
import { startCluster, withDask, within } from './dask-helpers.js'

const typo = (what: string, name: string, meant: string) => ({
  name: 'TypeError', message: `${what}: unknown option '${name}'; did you mean '${meant}'?`,
})

async function tests(): Promise<void> {
  t.test('the client methods and futures refuse unknown option names', async (t) => {
    const cluster = await startCluster(t, { workers: 1 })
    const client = await within(20_000, DaskClient.connect(cluster.scheduler, { timeout: 20_000, rpcTimeout: 20_000, heartbeatInterval: 0 }), 'connect')
    t.teardown(() => client.close())
    t.throws(() => client.submit('operator.add', [1, 2], { kwarg: {} } as object), typo('DaskClient.submit', 'kwarg', 'kwargs'))
    t.throws(() => client.map('operator.add', [[1], [2]], { key_: 'k' } as object), typo('DaskClient.map', 'key_', 'key'))
    await t.rejects(client.scatter([1], { braodcast: true } as object), typo('DaskClient.scatter', 'braodcast', 'broadcast'))
    await t.rejects(client.gather([], { timeuot: 5 } as object), typo('DaskClient.gather', 'timeuot', 'timeout'))
    await t.rejects(client.wait([], { return_when: 'FIRST_COMPLETED' } as object), typo('DaskClient.wait', 'return_when', 'returnWhen'))
    await t.rejects(client.rpc('identity', {}, { allownull: true } as object), typo('DaskClient.rpc', 'allownull', 'allowNull'))
    const [future] = await within(20_000, client.scatter([41]), 'scatter')
    await t.rejects(future!.wait({ timout: 5 } as object), typo('DaskFuture.wait', 'timout', 'timeout'))
    await t.rejects(future!.result({ time_out: 5 } as object), typo('DaskFuture.result', 'time_out', 'timeout'))
    t.equal(await within(20_000, future!.result({ timeout: 20_000 }), 'result'), 41, 'the options as spelled still work')
    t.equal(client.status, 'running', 'a refused call leaves the client running')
  })
}

await withDask(t, tests)
