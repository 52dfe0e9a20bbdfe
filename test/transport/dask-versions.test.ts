/**
 * The client learns the scheduler's distributed version at connect and picks the graph form it
 * reads; a version it cannot serve is a PROTOCOL error at connect that names it. Against a
 * scheduler written here with DaskListener (no Python): what update-graph carries in each form,
 * a stream dropped right after a message (the error names it), and the caller's misuse of
 * submit, map, wait and cancel.
 */
import t, { type Test } from 'tap'
import { PyGlobal, PyObject, Tuple, dumps, loads } from '@picklewire/codec'
import { DaskClient, DaskRemoteError, DaskSerialized, TransportError, listenDask, type DaskComm } from '@picklewire/transport'
import { graphFormFor, parseDaskVersion } from '../../packages/transport/dist/dask/graph.js'
import { loadsMessage } from '../../packages/transport/dist/dask/protocol.js'
import { within } from './dask-helpers.js'

const WAIT = 10_000

interface FakeScheduler {
  address: string
  /** Stream messages the client sent, in order. */
  received: Map<unknown, unknown>[]
  /** The op of every message received, versions and register-client included, in order. */
  ops: unknown[]
  /** Resolves with the next stream message whose op is given (bounded: rejects after WAIT ms). */
  next(op: string): Promise<Map<unknown, unknown>>
  stream: Promise<DaskComm>
}

/** A scheduler that answers "versions" with the given version (or reply) and opens the client stream. */
async function fakeScheduler(t: Test, versions: unknown, options: { dropAfter?: string; replies?: Record<string, unknown> } = {}): Promise<FakeScheduler> {
  const received: Map<unknown, unknown>[] = []
  const ops: unknown[] = []
  const waiting: { op: string; resolve: (m: Map<unknown, unknown>) => void }[] = []
  let streamReady!: (c: DaskComm) => void
  const stream = new Promise<DaskComm>((r) => (streamReady = r))
  const listener = await listenDask({ scheme: 'tcp', host: '127.0.0.1', port: 0, unpickler: { opaque: true } }, (comm) => {
    void (async () => {
      for (;;) {
        let msg: unknown
        try {
          // Serialized values stay serialized, as a real scheduler keeps them.
          msg = loadsMessage(await comm.readFrames(), { limits: comm.limits, deserialize: false, unpickler: { opaque: true } })
        } catch {
          return
        }
        for (const m of Array.isArray(msg) ? msg : [msg]) {
          if (!(m instanceof Map)) continue
          const op = m.get('op')
          ops.push(op)
          if (op === 'versions') await comm.write(versions)
          else if (typeof op === 'string' && options.replies && op in options.replies) await comm.write(options.replies[op])
          else if (op === 'register-client') {
            await comm.write([{ op: 'stream-start' }])
            streamReady(comm)
          } else {
            received.push(m)
            for (const w of waiting.filter((x) => x.op === op)) {
              waiting.splice(waiting.indexOf(w), 1)
              w.resolve(m)
            }
            if (op === options.dropAfter) comm.abort()
          }
        }
      }
    })()
  })
  t.teardown(() => listener.close())
  return {
    address: listener.address,
    received,
    ops,
    get stream() {
      return within(WAIT, stream, 'the client stream')
    },
    next: (op) => within(WAIT, new Promise((resolve) => {
      const seen = received.find((m) => m.get('op') === op)
      if (seen) resolve(seen)
      else waiting.push({ op, resolve })
    }), `a "${op}" message`),
  }
}

function versionsReply(distributed: string): unknown {
  return { host: { python: '3.11.2.final.0' }, packages: { python: '3.11.2.final.0', dask: distributed, distributed } }
}

async function failure(p: Promise<unknown>): Promise<unknown> {
  return p.then(() => null, (e: unknown) => e)
}

t.test('versions map to graph forms; those before 2022.12 are refused by name', async (t) => {
  const cases: [string, string | null][] = [
    ['2022.12.1+ds.1', 'tasks'], ['2023.3.2', 'tasks'], ['2023.4.0', 'tuples'], ['2023.12.1', 'tuples'], ['2024.10.0', 'tuples'],
    ['2024.11.0', 'hlg'], ['2024.12.1', 'hlg'], ['2025.3.0', 'hlg'], ['2025.4.0', 'expr'], ['2026.7.0', 'expr'], ['2022.11.0', null],
  ]
  for (const [v, form] of cases) {
    if (form) t.equal(graphFormFor(v, 'tcp://x:1'), form, `${v} -> ${form}`)
    else t.throws(() => graphFormFor(v, 'tcp://x:1'), { name: 'TransportError', code: 'PROTOCOL', message: new RegExp(`distributed ${v.replace(/\./g, '\\.')}`) }, `${v} refused by name`)
  }
  t.same(parseDaskVersion('2024.12.1+ds'), [2024, 12, 1])
  t.equal(parseDaskVersion('main'), null)
  t.throws(() => graphFormFor('1.0+dev', 'tcp://x:1'), { code: 'PROTOCOL', message: /"1\.0\+dev"/ })
})

t.test('connect refuses a version it cannot serve, before registering', async (t) => {
  const s = await fakeScheduler(t, versionsReply('2022.11.0'))
  const err = await failure(DaskClient.connect(s.address, { timeout: WAIT }))
  t.ok(err instanceof TransportError && err.code === 'PROTOCOL', String(err))
  t.match((err as Error).message, /runs distributed 2022\.11\.0: this client speaks 2022\.12 and later/)
  t.same(s.ops, ['versions'], 'nothing but "versions" was sent')
  const garbled = await fakeScheduler(t, { status: 'OK' })
  const err2 = await failure(DaskClient.connect(garbled.address, { timeout: WAIT }))
  t.match(err2, { code: 'PROTOCOL', message: /answered "versions" with .*expected a map with "packages"/ })
  const silent = await fakeScheduler(t, null)
  t.match(await failure(DaskClient.connect(silent.address, { timeout: WAIT })), { code: 'PROTOCOL' }, 'a scheduler without the versions op')
})

t.test('2024.12: update-graph carries a pickled HighLevelGraph of Task constructor calls, options as annotations', async (t) => {
  const s = await fakeScheduler(t, versionsReply('2024.12.1'))
  const client = await DaskClient.connect(s.address, { timeout: WAIT, heartbeatInterval: 0 })
  t.teardown(() => client.close({ timeout: 100 }))
  t.equal(client.daskVersion, '2024.12.1')
  t.equal(client.graphForm, 'hlg')
  t.equal(client.versions.packages.get('distributed'), '2024.12.1')
  const [a] = await Promise.all([client.submit('builtins.abs', [-1], { key: 'a' })])
  client.submit('operator.add', [a, [a, 2]], { key: 'b', priority: 5, retries: 2, workers: ['tcp://127.0.0.1:9'], kwargs: { z: a } })
  const msgs: Map<unknown, unknown>[] = []
  for (let i = 0; i < 2; i++) {
    const m = await s.next('update-graph')
    msgs.push(m)
    s.received.splice(s.received.indexOf(m), 1)
  }
  const m = msgs[1]!
  t.same(m.get('keys'), new Set(['b']), 'keys travel as a set')
  t.notOk(m.has('tasks'), 'no legacy tasks field')
  t.same(m.get('annotations'), new Map<unknown, unknown>([['priority', 5], ['workers', ['tcp://127.0.0.1:9']], ['retries', 2]]))
  const header = m.get('graph_header') as Map<unknown, unknown>
  t.equal(header.get('serializer'), 'pickle')
  const frames = m.get('graph_frames') as Uint8Array[]
  const value = loads(frames[0]!, { opaque: true }) as PyObject
  t.equal(String(value.callable), 'distributed.protocol.serialize.ToPickle')
  const hlg = value.args[0] as PyObject
  t.equal(String(hlg.callable), 'dask.highlevelgraph.HighLevelGraph')
  const layer = [...(hlg.args[0] as Map<unknown, PyObject>).values()][0]!
  t.equal(String(layer.callable), 'dask.highlevelgraph.MaterializedLayer')
  const task = (layer.args[0] as Map<unknown, PyObject>).get('b')!
  // kwargs go through dask.utils.apply(Task, args, kwargs): REDUCE passes no keywords
  t.equal(String(task.callable), 'dask.utils.apply')
  const [taskClass, taskArgs, kwargs] = task.args as unknown as [PyGlobal, Tuple, Map<unknown, unknown>]
  t.equal(String(taskClass), 'dask._task_spec.Task')
  t.equal(taskArgs[0], 'b')
  t.equal(String(taskArgs[1]), 'operator.add')
  t.match(taskArgs[2], { callable: { module: 'dask._task_spec', name: 'Alias' } }, 'a future is Alias(key)')
  t.equal((taskArgs[2] as PyObject).args[0], 'a')
  t.match(taskArgs[3], { callable: { name: 'List' } }, 'a list holding a future is a List node')
  t.match(kwargs.get('z'), { callable: { name: 'Alias' } }, 'a future as a keyword argument')
})

t.test('2023.4 to 2024.10: update-graph carries a pickled HighLevelGraph of task tuples, futures as WrappedKey', async (t) => {
  // The fields each release's Scheduler.update_graph takes: "code" a plain value before 2023.6,
  // "span_metadata" required from 2024.5.2 and an unexpected keyword before.
  const releases: [string, 'plain' | 'pickled', boolean][] = [
    ['2023.4.1', 'plain', false], ['2023.5.1', 'plain', false], ['2023.6.0', 'pickled', false], ['2023.12.1', 'pickled', false],
    ['2024.5.1', 'pickled', false], ['2024.5.2', 'pickled', true], ['2024.10.0', 'pickled', true],
  ]
  for (const [version, code, span] of releases) {
    const s = await fakeScheduler(t, versionsReply(version))
    const client = await DaskClient.connect(s.address, { timeout: WAIT, heartbeatInterval: 0 })
    t.equal(client.graphForm, 'tuples', `${version}: form`)
    const a = client.submit('builtins.abs', [-1], { key: 'a' })
    client.submit('operator.add', [a, [a, 2], Tuple.fromItems([new PyGlobal('builtins', 'neg'), a])], { key: 'b', priority: 5, retries: 2, workers: ['tcp://127.0.0.1:9'], kwargs: { z: a } })
    const first = await s.next('update-graph')
    s.received.splice(s.received.indexOf(first), 1)
    const m = await s.next('update-graph')
    await client.close({ timeout: 100 })
    t.same(m.get('keys'), ['b'], `${version}: keys travel as a list, as Dask's client sends them`)
    t.notOk(m.has('tasks'), `${version}: no legacy tasks field`)
    t.notOk(m.has('expr_ser'), `${version}: no expr_ser`)
    t.same(m.get('annotations'), new Map<unknown, unknown>([['priority', 5], ['workers', ['tcp://127.0.0.1:9']], ['retries', 2]]), `${version}: options as annotations`)
    t.same(m.get('internal_priority'), new Map([['b', 0]]), `${version}: internal priority`)
    if (code === 'plain') t.equal(m.get('code'), null, `${version}: code is None`)
    else t.ok(m.get('code') instanceof Tuple && (m.get('code') as Tuple).length === 0, `${version}: code is a pickled empty tuple`)
    t.equal(m.has('span_metadata'), span, `${version}: span_metadata ${span ? 'sent' : 'left out'}`)
    t.equal((m.get('graph_header') as Map<unknown, unknown>).get('serializer'), 'pickle')
    const value = loads((m.get('graph_frames') as Uint8Array[])[0]!, { opaque: true }) as PyObject
    t.equal(String(value.callable), 'distributed.protocol.serialize.ToPickle')
    const hlg = value.args[0] as PyObject
    t.equal(String(hlg.callable), 'dask.highlevelgraph.HighLevelGraph')
    const layer = [...(hlg.args[0] as Map<unknown, PyObject>).values()][0]!
    t.equal(String(layer.callable), 'dask.highlevelgraph.MaterializedLayer')
    const task = (layer.args[0] as Map<unknown, unknown>).get('b') as Tuple
    t.ok(task instanceof Tuple, `${version}: the task is a tuple`)
    const [apply, fn, args, kwargs] = task as unknown as [PyGlobal, PyGlobal, unknown[], Map<unknown, unknown>]
    t.equal(String(apply), 'dask.utils.apply', 'keywords go through apply(func, args, kwargs)')
    t.equal(String(fn), 'operator.add')
    t.ok(Array.isArray(args) && args.length === 3, 'args as a list')
    const isKey = (v: unknown): boolean => v instanceof PyObject && String(v.callable) === 'distributed.utils_comm.WrappedKey' && v.args[0] === 'a'
    t.ok(isKey(args[0]), 'a future is WrappedKey(key)')
    t.ok(Array.isArray(args[1]) && isKey((args[1] as unknown[])[0]) && (args[1] as unknown[])[1] === 2, 'a future inside a list')
    const nested = args[2] as Tuple
    t.ok(nested instanceof Tuple && String(nested[0]) === 'builtins.neg' && isKey(nested[1]), 'a nested call stays a task tuple')
    t.ok(isKey(kwargs.get('z')), 'a future as a keyword argument')
    const firstLayer = [...(((loads((first.get('graph_frames') as Uint8Array[])[0]!, { opaque: true }) as PyObject).args[0] as PyObject).args[0] as Map<unknown, PyObject>).values()][0]!
    const plain = (firstLayer.args[0] as Map<unknown, unknown>).get('a') as Tuple
    t.ok(plain instanceof Tuple && plain.length === 2 && String(plain[0]) === 'builtins.abs' && plain[1] === -1, 'without keywords: (func, *args)')
  }
})

t.test('2026: update-graph carries expr_ser, LLGExpr made by its constructor', async (t) => {
  const s = await fakeScheduler(t, versionsReply('2026.7.0'))
  const client = await DaskClient.connect(s.address, { timeout: WAIT, heartbeatInterval: 0 })
  t.teardown(() => client.close({ timeout: 100 }))
  t.equal(client.graphForm, 'expr')
  client.map('builtins.abs', [[-1, -2, -3]], { key: 'abs' })
  const m = await s.next('update-graph')
  const expr = m.get('expr_ser') as DaskSerialized
  t.ok(expr instanceof DaskSerialized, 'expr_ser stays serialized for the scheduler')
  t.notOk(m.has('graph_header'))
  const value = loads(expr.frames[0]!, { opaque: true }) as PyObject
  t.equal(String(value.callable), 'dask.utils.apply')
  t.equal(String(value.args[0]), 'dask._expr.LLGExpr')
  const dsk = (value.args[1] as Tuple)[0] as Map<string, PyObject>
  t.equal(dsk.size, 3, 'one task per call, one message')
  t.same([...(m.get('keys') as Set<string>)].length, 3)
  t.same([...(m.get('internal_priority') as Map<string, number>).values()].sort(), [0, 1, 2], 'calls keep their order')
})

t.test('a stream dropped right after a message: the error names that message', async (t) => {
  const s = await fakeScheduler(t, versionsReply('2024.12.1'), { dropAfter: 'update-graph' })
  const client = await DaskClient.connect(s.address, { timeout: WAIT, heartbeatInterval: 0 })
  const f = client.submit('builtins.abs', [-1], { key: 'the-key' })
  const err = await failure(f.wait({ timeout: WAIT }))
  t.ok(err instanceof TransportError && err.code === 'CLOSED', String(err))
  t.match((err as Error).message, /last message this client sent on the stream: update-graph of key the-key/)
})

t.test('misuse is a TypeError that says what was expected', async (t) => {
  const s = await fakeScheduler(t, versionsReply('2022.12.1'))
  const client = await DaskClient.connect(s.address, { timeout: WAIT, heartbeatInterval: 0 })
  t.teardown(() => client.close({ timeout: 100 }))
  t.equal(client.graphForm, 'tasks')
  t.throws(() => client.map('builtins.abs', [[1, 2], [3]]), { name: 'TypeError', message: /array 0 has 2 items, array 1 has 1/ })
  t.throws(() => client.map('builtins.abs', [] as unknown[][]), { name: 'TypeError', message: /non-empty array of argument arrays/ })
  t.throws(() => client.map('builtins.abs', [[1]], { keys: ['a', 'b'] }), { name: 'TypeError', message: /1 calls but 2 keys/ })
  t.throws(() => client.submit('builtins.abs', [1], { priority: 1.5 }), { name: 'TypeError', message: /priority must be an integer, got 1\.5/ })
  t.throws(() => client.submit('builtins.abs', [1], { retries: -1 }), { name: 'TypeError', message: /retries/ })
  t.throws(() => client.submit('builtins.abs', [1], { workers: 'tcp://a:1' as unknown as string[] }), { name: 'TypeError', message: /workers must be an array/ })
  t.throws(() => client.submit('builtins.abs', 1 as unknown as unknown[]), { name: 'TypeError', message: /args must be an array/ })
  t.throws(() => client.submit('builtins.abs', [1], { kwargs: [1] as unknown as Record<string, unknown> }), { name: 'TypeError', message: /kwargs must be an object or a Map/ })
  const f = client.submit('builtins.abs', [1], { key: 'k' })
  t.throws(() => client.map('builtins.abs', [[1, 2]], { keys: ['x', 'x'] }), { name: 'TypeError', message: /"x" is already used/ })
  t.throws(() => client.submit('builtins.abs', [1], { key: 'k' }), { name: 'TypeError', message: /"k" is already used/ })
  await t.rejects(client.wait([f], { returnWhen: 'SOMETIMES' as 'ALL_COMPLETED' }), { name: 'TypeError', message: /returnWhen must be/ })
  await t.rejects(client.wait([f], { timeout: 50 }), { name: 'TransportError', code: 'TIMEOUT', message: /1 of 1 futures were not done within 50 ms/ })
  await t.rejects(client.cancel('k' as unknown as []), { name: 'TypeError' })
  const m = await s.next('update-graph')
  t.ok(m.has('tasks'), '2022.12 gets the legacy tasks field')
})

t.test('a gather whose keys are lost names them', async (t) => {
  const s = await fakeScheduler(t, versionsReply('2024.12.1'), { replies: { gather: { status: 'error', keys: ['lost-1', 'lost-2'] } } })
  const client = await DaskClient.connect(s.address, { timeout: WAIT, heartbeatInterval: 0 })
  t.teardown(() => client.close({ timeout: 100 }))
  const fs = client.map('builtins.abs', [[1, 2]], { keys: ['lost-1', 'lost-2'] })
  await s.next('update-graph')
  const stream = await s.stream
  await stream.write([{ op: 'key-in-memory', key: 'lost-1' }, { op: 'key-in-memory', key: 'lost-2' }])
  const err = await failure(client.gather(fs, { timeout: WAIT }))
  t.ok(err instanceof TransportError && err.code === 'REMOTE', String(err))
  t.match((err as Error).message, /could not gather keys lost-1, lost-2: no worker that held them answered/)
  t.notMatch((err as Error).message, /failed on the Dask side: error/)
})

t.test('a cause chain from the peer is followed at most 20 links; tblib 3.2 exceptions read their args from attrs', async (t) => {
  const s = await fakeScheduler(t, versionsReply('2024.12.1'))
  const client = await DaskClient.connect(s.address, { timeout: WAIT, heartbeatInterval: 0 })
  t.teardown(() => client.close({ timeout: 100 }))
  const UNPICKLE = new PyGlobal('tblib.pickling_support', 'unpickle_exception')
  const WITH_ATTRS = new PyGlobal('tblib.pickling_support', 'unpickle_exception_with_attrs')
  let chain: unknown = null
  for (let i = 0; i < 500; i++) {
    chain = new PyObject(UNPICKLE, 'reduce', Tuple.fromItems([new PyGlobal('builtins', 'ValueError'), Tuple.fromItems([`link ${i}`]), chain, null, null, false, null]))
  }
  const top = new PyObject(WITH_ATTRS, 'reduce', Tuple.fromItems([
    new PyGlobal('subprocess', 'CalledProcessError'), new Map<unknown, unknown>([['args', Tuple.fromItems([1, ['false']])]]), chain, null, null, false, null, Tuple.fromItems([]),
  ]))
  const f = client.submit('builtins.abs', [1], { key: 'deep' })
  await s.next('update-graph')
  const stream = await s.stream
  await stream.write([{ op: 'task-erred', key: 'deep', exception: dumps(top, { protocol: 4 }), traceback: null }])
  const err = await failure(f.wait({ timeout: WAIT })) as DaskRemoteError
  t.ok(err instanceof DaskRemoteError, String(err))
  t.equal(err.exceptionType, 'subprocess.CalledProcessError')
  t.equal(err.exceptionText, "(1, ['false'])")
  let links = 0
  for (let c: unknown = err.cause; c instanceof DaskRemoteError; c = c.cause) links++
  t.equal(links, 20, 'the chain stops after 20 causes')
  t.match(err.cause, { exceptionType: 'ValueError', exceptionText: 'link 499' }, 'the direct cause first')
})
