/**
 * DaskClient against a real scheduler and worker (Debian's python3-distributed) on loopback,
 * over tcp:// and ws://: graphs with dependencies, literal, typed-array and keyword arguments,
 * failing tasks with their Python traceback, large arrays (sharded, lz4-compressed, gathered as
 * typed views), scatter, release, rpc of unknown and failing ops. Every value is checked and
 * every await is bounded.
 */
import t, { type Test } from 'tap'
import { NDArray, PyDateTime, PyGlobal, Tuple } from '@picklewire/codec'
import { DaskClient, DaskFuture, DaskRemoteError } from '@picklewire/transport'
import { forEachDask, startCluster, within, type DaskEnv } from './dask-helpers.js'

const WAIT = 30_000

/** Awaits a rejection and matches the error (tap's rejects() types only Error's own fields). */
async function rejectsMatching(t: Test, p: Promise<unknown>, pattern: object, what: string): Promise<void> {
  const err = await within(WAIT, p.then(() => null, (e: unknown) => e), what)
  if (err === null) t.fail(`${what}: resolved`)
  else t.match(err, pattern, what)
}

function arr(v: unknown): NDArray {
  if (!(v instanceof NDArray)) throw new Error(`expected an NDArray, got ${String(v)}`)
  return v
}

/** From 2023.4 the scheduler unpickles the graph itself: a function it cannot import fails the key there, as a RuntimeError caused by the AttributeError. */
function graphUnpickledByScheduler(env: DaskEnv): boolean {
  const [y, m] = env.version.split('.').map(Number) as [number, number]
  return y > 2023 || (y === 2023 && m >= 4)
}

/** From 2023.5 comms between peers on the same host are never compressed. */
function sameHostUncompressed(env: DaskEnv): boolean {
  const [y, m] = env.version.split('.').map(Number) as [number, number]
  return y > 2023 || (y === 2023 && m >= 5)
}

async function tests(t: Test, env: DaskEnv, scheme: 'tcp' | 'ws'): Promise<void> {
  t.test(`${scheme}: a real scheduler and worker`, async (t) => {
    const cluster = await startCluster(t, { protocol: scheme, workers: 1, nthreads: 2, python: env.python })
    const client = await DaskClient.connect(cluster.scheduler, { timeout: 10_000, rpcTimeout: WAIT })
    t.teardown(() => client.close())
    t.equal(client.status, 'running')

    t.test('a graph with dependencies: arrays built on the worker, added, reduced', async (t) => {
      const n = 1000
      const a = client.submit('numpy.arange', [n])
      const b = client.submit('numpy.full', [n, 2.5])
      const c = client.submit('numpy.add', [a, b])
      const d = client.submit('numpy.multiply', [c, c])
      const total = client.submit('numpy.sum', [d])
      const nested = client.submit('numpy.sum', [Tuple.fromItems([new PyGlobal('numpy', 'ones'), 4])])
      await within(WAIT, total.wait(), 'the sum')
      t.equal(total.status, 'finished')
      t.equal(total.type, 'numpy.float64')
      t.equal(c.type, 'numpy.ndarray')
      const [av, cv, dv, sum, four] = await client.gather([a, c, d, total, nested])
      const expectC = Array.from({ length: n }, (_, i) => i + 2.5)
      t.same([arr(av).dtype.str, arr(av).shape], ['<i8', [n]])
      t.ok((arr(av).data as BigInt64Array).every((x, i) => x === BigInt(i)), 'arange')
      t.ok(arr(cv).data instanceof Float64Array, 'a Float64Array')
      t.same([...(arr(cv).data as Float64Array)], expectC, 'every element of a + b')
      // tcp frames land 64-byte aligned; ws hands small messages over as slices of its socket chunks, copied when misaligned
      if (scheme === 'tcp') t.equal(arr(cv).copied, false, 'a view over the frame it arrived in')
      t.same([...(arr(dv).data as Float64Array)], expectC.map((x) => x * x), 'every element of c * c')
      t.equal(sum, expectC.reduce((s, x) => s + x * x, 0), 'the reduction')
      t.equal(four, 4, 'a nested call ran on the worker')
    })

    t.test('literal and keyword arguments arrive as Python values', async (t) => {
      const fs = [
        client.submit('json.dumps', [new Map<unknown, unknown>([['a', [1, 2.5, null, true, 'x']], ['t', Tuple.fromItems([1, 'two'])]])], { kwargs: { sort_keys: true } }),
        client.submit('builtins.sorted', [[3, 1, 2]], { kwargs: { reverse: true } }),
        client.submit('builtins.pow', [2, 100]),
        client.submit('builtins.dict', [], { kwargs: { a: 1, b: 'x' } }),
        client.submit('operator.add', ['caf', 'é ☕']),
        client.submit('builtins.bytes', [new TextEncoder().encode('raw')]),
        client.submit('datetime:datetime.fromtimestamp', [0, new PyGlobal('datetime', 'timezone.utc')]),
        client.submit('builtins.len', [{ a: 1, b: 2, c: 3 }]),
      ]
      const values = await within(WAIT, client.gather(fs), 'gathering literals')
      t.equal(values[0], '{"a": [1, 2.5, null, true, "x"], "t": [1, "two"]}')
      t.same(values[1], [3, 2, 1])
      t.equal(values[2], 2n ** 100n)
      t.same(values[3], new Map<unknown, unknown>([['a', 1], ['b', 'x']]))
      t.equal(values[4], 'café ☕')
      t.same(values[5], new TextEncoder().encode('raw'))
      t.ok(values[6] instanceof PyDateTime && (values[6] as PyDateTime).year === 1970, 'module:qualname names a classmethod')
      t.equal(values[7], 3)
    })

    t.test('typed arrays and NDArrays as arguments travel as numpy arrays', async (t) => {
      const f32 = new Float32Array([1.5, 2.5, -4])
      const i16 = new NDArray(new Int16Array([1, 2, 3, 4, 5, 6]), { shape: [2, 3] })
      const fortran = new NDArray(new Float64Array([1, 2, 3, 4, 5, 6]), { shape: [2, 3], order: 'F' })
      const big = new Float64Array(300_000).map((_, i) => (i % 1000) / 8)
      const fs = [
        client.submit('numpy.sum', [f32]),
        client.submit('numpy.multiply', [i16, 3]),
        client.submit('numpy.ascontiguousarray', [fortran]),
        client.submit('numpy.transpose', [i16]),
        client.submit('numpy.sum', [big]),
        client.submit('numpy.dtype', [new BigUint64Array(1)]).key, // the key is a string at once
      ]
      const [s, m, c, tr, bigSum] = await within(WAIT, client.gather(fs.slice(0, 5) as DaskFuture[]), 'gathering array results')
      t.equal(s, 0)
      t.same([arr(m).dtype.str, arr(m).shape, arr(m).toList()], ['<i2', [2, 3], [[3, 6, 9], [12, 15, 18]]])
      t.same(arr(c).toList(), [[1, 3, 5], [2, 4, 6]], 'an F-order array arrives as the same matrix')
      t.same([arr(tr).shape, arr(tr).toList()], [[3, 2], [[1, 4], [2, 5], [3, 6]]])
      t.equal(bigSum, big.reduce((a, x) => a + x, 0))
      t.match(fs[5], /^dtype-[0-9a-f]{32}$/)
    })

    t.test('a failing task rejects with the Python error and traceback, and so do its dependents', async (t) => {
      const bad = client.submit('json.loads', ['{not json'])
      const dependent = client.submit('builtins.len', [bad])
      const err = await within(WAIT, bad.wait().then(() => null, (e: unknown) => e), 'the failure')
      t.ok(err instanceof DaskRemoteError, 'a DaskRemoteError')
      const e = err as DaskRemoteError
      t.equal(e.code, 'REMOTE')
      t.equal(e.key, bad.key)
      t.equal(e.exceptionType, 'json.decoder.JSONDecodeError')
      t.match(e.exceptionText, /Expecting property name enclosed in double quotes/)
      t.match(e.traceback, /File ".*json\/decoder\.py", line \d+, in raw_decode/)
      t.match(e.message, /JSONDecodeError/)
      t.equal(bad.status, 'error')
      await rejectsMatching(t, dependent.wait(), { exceptionType: 'json.decoder.JSONDecodeError', key: dependent.key }, 'the dependent fails with the same error')
      const ok = client.submit('builtins.abs', [-3])
      await t.rejects(within(WAIT, client.gather([ok, bad]), 'gather'), DaskRemoteError, 'gather rejects with the failed task\'s error')

      const zero = client.submit('operator.truediv', [1, 0])
      await rejectsMatching(t, zero.wait(), { exceptionType: 'ZeroDivisionError', exceptionText: 'division by zero' }, 'a builtin that raises')
      const unknown = client.submit('numpy.no_such_function', [1])
      const nested = client.submit('numpy.sum', [[Tuple.fromItems([new PyGlobal('numpy', 'nope'), 1])]])
      if (graphUnpickledByScheduler(env)) {
        await rejectsMatching(t, unknown.wait(), { exceptionType: 'RuntimeError', exceptionText: /deserialization of the task graph/, cause: { name: 'DaskRemoteError', exceptionType: 'AttributeError', exceptionText: /no_such_function/ } }, 'a function the scheduler cannot find: RuntimeError caused by AttributeError')
        t.match((await unknown.wait().catch((e: Error) => e) as Error).message, /caused by AttributeError/, 'the message names the cause')
        await rejectsMatching(t, nested.wait(), { exceptionType: 'RuntimeError', cause: { exceptionType: 'AttributeError', exceptionText: /nope/ } }, 'an unknown function in a nested call')
      } else {
        await rejectsMatching(t, unknown.wait(), { exceptionType: 'AttributeError', exceptionText: /no_such_function/ }, 'a function the worker cannot find')
        await rejectsMatching(t, nested.wait(), { exceptionType: 'AttributeError' }, 'an unknown function in a nested call')
      }
      // An exception raised while handling another: Python's traceback shows the first as its context.
      const chained = client.submit('zoneinfo.ZoneInfo', ['No/Such_Zone'])
      const chainErr = await within(WAIT, chained.wait().then(() => null, (e: unknown) => e), 'a chained exception') as DaskRemoteError
      t.equal(chainErr?.exceptionType, 'zoneinfo._common.ZoneInfoNotFoundError')
      if (Number(env.tblib.split('.')[0]) >= 2) {
        // tblib pickles __context__ from 2.0 on
        t.ok(chainErr.cause instanceof DaskRemoteError, `the context comes along as the cause: ${String(chainErr.cause)}`)
        t.match((chainErr.cause as DaskRemoteError)?.exceptionType, /Error$/)
      }
      t.equal(await within(WAIT, client.submit('builtins.abs', [-2]).result(), 'after failures'), 2, 'the worker survives them')
      t.throws(() => client.submit('builtins.len', [() => 1]), /cannot pickle/, 'an argument the pickler refuses fails submit at once')
      t.throws(() => client.submit('no dots'), TypeError)
    })

    t.test('large arrays: sharded and lz4-compressed frames, gathered as typed views', async (t) => {
      const n = 9_000_000 // 72 MB: over tcp's 64 MiB shard and nine of ws's 8 MiB ones
      const before = { ...client.stats().decompressed }
      const ones = client.submit('numpy.ones', [n])
      const [o] = await within(WAIT, client.gather([ones]), 'gathering ones')
      const data = arr(o).data as Float64Array
      t.ok(data.length === n && data.every((x) => x === 1), 'every one of 9M ones')
      if (sameHostUncompressed(env)) t.equal(client.stats().decompressed.lz4 ?? 0, before.lz4 ?? 0, 'same host: the worker sent them uncompressed (2023.5 on)')
      else t.ok((client.stats().decompressed.lz4 ?? 0) > (before.lz4 ?? 0), 'the worker lz4-compressed them though we asked for none')
      client.release(ones)

      const noise = client.submit('numpy.random.random_sample', [n])
      const probe = client.submit('numpy.take', [noise, [0, 12_345, n - 1]])
      const noiseSum = client.submit('numpy.sum', [noise])
      const [r, p, s] = await within(WAIT, client.gather([noise, probe, noiseSum]), 'gathering noise')
      const rd = arr(r).data as Float64Array
      t.equal(rd.length, n)
      t.same([...(arr(p).data as Float64Array)], [rd[0], rd[12_345], rd[n - 1]], 'elements match numpy.take on the worker')
      let js = 0
      for (let i = 0; i < n; i++) js += rd[i]!
      t.ok(Math.abs(js - (s as number)) < 1e-6 * n, 'the sum matches numpy.sum')
      t.equal(arr(r).copied, false, 'incompressible shards arrive as a view')
      client.release(noise, probe, noiseSum)
    })

    t.test('scatter from Node, compute on it, gather it back', async (t) => {
      const big = new Float64Array(2_000_000).map((_, i) => i % 977)
      const matrix = new NDArray(new Int32Array(12).map((_, i) => i * i), { shape: [3, 4] })
      const values = [big, matrix, new TextEncoder().encode('bytes'), 'text', new Map([['k', [1, 2]]]), 2n ** 80n]
      const futures = await within(WAIT, client.scatter(values), 'scatter')
      t.equal(futures.length, values.length)
      t.ok(futures.every((f) => f.status === 'finished'), 'finished at once')
      t.match(futures[0]!.key, /^ndarray-[0-9a-f]{32}$/)
      const sum = client.submit('numpy.sum', [futures[0]])
      const colSums = client.submit('numpy.sum', [futures[1]], { kwargs: { axis: 0 } })
      const [s, cs] = await within(WAIT, client.gather([sum, colSums]), 'computing on scattered data')
      t.equal(s, big.reduce((a, x) => a + x, 0))
      t.same(arr(cs).toList(), [80n, 107n, 140n, 179n])
      const back = await within(WAIT, client.gather(futures), 'gathering scattered data')
      t.ok((arr(back[0]).data as Float64Array).every((x, i) => x === big[i]), 'the big array, element by element')
      t.same(arr(back[1]).toList(), matrix.toList())
      t.same(back.slice(2), values.slice(2))
      await t.rejects(client.scatter([1], { keys: ['a', 'b'] }), TypeError)
    })

    t.test('release: the scheduler forgets the key, the future cannot be used', async (t) => {
      const f = client.submit('builtins.abs', [-5])
      t.equal(await within(WAIT, f.result(), 'result'), 5)
      const key = f.key
      f.release()
      t.equal(f.status, 'released')
      t.notOk(client.futures.has(key))
      await t.rejects(client.gather([f]), { code: 'CLOSED', message: /released/ })
      t.throws(() => client.submit('builtins.abs', [f]), { code: 'CLOSED' })
      const deadline = Date.now() + 10_000
      let whoHas: unknown
      do {
        whoHas = await client.rpc('who_has', { keys: [key] })
        if (!(whoHas instanceof Map) || (whoHas.get(key) as unknown[]).length === 0) break
        await new Promise((r) => setTimeout(r, 50))
      } while (Date.now() < deadline)
      t.same((whoHas as Map<unknown, unknown>).get(key), [], 'no worker holds it any more')
    })

    t.test('results the default registry refuses, and the opaque mode', async (t) => {
      const f = client.submit('fractions.Fraction', [1, 3])
      await t.rejects(within(WAIT, client.gather([f]), 'gather'), { name: 'UnpicklingError', message: /fractions/ }, 'an unknown class is refused, nothing runs')
      const opaque = await DaskClient.connect(cluster.scheduler, { timeout: 10_000, unpickler: { opaque: true }, heartbeatInterval: 20 })
      t.teardown(() => opaque.close())
      const g = opaque.submit('fractions.Fraction', [1, 3])
      const [v] = await within(WAIT, opaque.gather([g]), 'opaque gather')
      t.match(v, { callable: { module: 'fractions', name: 'Fraction' } }, 'an inert placeholder')
      const sent = opaque.stats().messagesSent
      await new Promise((r) => setTimeout(r, 150))
      t.ok(opaque.stats().messagesSent > sent + 2, 'heartbeats go out at the interval')
      t.equal(await within(WAIT, opaque.submit('builtins.abs', [-9]).result(), 'after heartbeats'), 9, 'and the scheduler takes them')
    })

    t.test('concurrent gathers use comms of their own', async (t) => {
      const fs = Array.from({ length: 6 }, (_, i) => client.submit('numpy.full', [50_000, i + 0.5]))
      const results = await within(WAIT, Promise.all(fs.map((f) => f.result())), 'six gathers at once')
      results.forEach((r, i) => t.ok((arr(r).data as Float64Array).every((x) => x === i + 0.5), `gather ${i}`))
    })

    t.test('rpc: replies, unknown ops and failing ops', async (t) => {
      const identity = await client.rpc('identity') as Map<unknown, unknown>
      t.equal(identity.get('type'), 'Scheduler')
      t.equal((identity.get('workers') as Map<unknown, unknown>).size, 1)
      await t.rejects(client.rpc('no-such-op'), { name: 'TransportError', code: 'PROTOCOL', message: /no handler/ })
      await rejectsMatching(t, client.rpc('gather', { keys: 5 }), { name: 'DaskRemoteError', code: 'REMOTE', exceptionType: 'TypeError' }, 'a failing op')
      t.equal(await client.rpc('no-such-op', {}, { allowNull: true }), null)
      const f = client.submit('builtins.abs', [-1])
      await within(WAIT, f.wait(), 'a task after failed ops')
      t.pass('the client still works after failed ops')
    })
  })
}

await forEachDask(t, (t, env) => tests(t, env, 'tcp'), (t, env) => tests(t, env, 'ws'))
