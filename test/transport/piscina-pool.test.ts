import t, { type Test } from 'tap'
import { PickleBuffer, Tuple } from '@picklewire/codec'
import { ArenaPool } from '@picklewire/transport'

const TASK = new URL('./piscina-task.mjs', import.meta.url).href
const KiB = 1024

function pool(t: Test, options: Record<string, unknown> = {}): ArenaPool<Map<string, unknown>, unknown> {
  const p = new ArenaPool<Map<string, unknown>, unknown>({ filename: TASK, minThreads: 1, maxThreads: 2, ...options })
  t.teardown(() => p.destroy())
  return p
}

/** Waits (at most 5 s, checking every 10 ms) for a condition that another thread's exit makes true. */
async function until(cond: () => boolean): Promise<boolean> {
  for (let k = 0; k < 500 && !cond(); k++) await new Promise((r) => setTimeout(r, 10))
  return cond()
}

const bytes = (v: unknown): Uint8Array => (v as PickleBuffer).raw()

t.test('a drop-in for run(): nested buffers at any depth go through the arenas, both ways', async (t) => {
  const p = pool(t)
  const a = new Uint8Array(4000).fill(1)
  const b = new Uint8Array(5000).fill(2)
  const c = new Uint8Array(6000).fill(3)
  const items = [
    new Map<string, unknown>([['name', 'a'], ['data', new PickleBuffer(a)]]),
    Tuple.fromItems(['b', new PickleBuffer(b)]),
    new Map<string, unknown>([['deeper', [[new PickleBuffer(c)]]]]),
  ]
  const r = (await p.run(new Map<string, unknown>([['op', 'nested'], ['items', items]]))) as Map<string, unknown>
  t.same(r.get('sums'), [4000, 10000, 18000], 'the worker saw every buffer, at every depth')
  const echo = r.get('echo') as unknown[]
  t.same([...bytes((echo[0] as Map<string, unknown>).get('data')).subarray(0, 2)], [1, 1])
  t.same([...bytes((echo[1] as Tuple).at(1)).subarray(0, 2)], [2, 2], 'a tuple stays a tuple')
  const deep = bytes((((echo[2] as Map<string, unknown>).get('deeper') as unknown[][])[0]![0]))
  t.equal(deep.length, 6000)
  t.ok(deep.buffer instanceof SharedArrayBuffer, 'results arrive as views over shared memory')
  const fresh = bytes(((r.get('fresh') as unknown[])[0] as Tuple).at(0))
  t.same([fresh.length, fresh[0]], [3000, 7])
  const s = p.stats()
  t.equal(s.bytesCopied, 15000, 'the task\'s buffers were copied once each into the tasks arena')
  t.equal(s.bytesReceived, 18000, 'three echoed back without a copy (they were the worker\'s to hand on), one fresh')
  t.ok(p.release(r), 'released at once')
  await p.settle()
  t.equal(p.stats().arenas.tasks.freeBytes, p.stats().arenas.tasks.capacity, 'the tasks arena is whole')
  t.equal(p.stats().arenas.results.freeBytes, p.stats().arenas.results.capacity, 'so is the results arena')
})

t.test('an array allocated in the tasks arena goes and comes back without a copy', async (t) => {
  const p = pool(t, { maxThreads: 1 })
  const f = await p.allocArray(Float32Array, 256 * 1024)
  f.fill(1.25)
  const r = (await p.run(new Map<string, unknown>([['op', 'double'], ['data', new PickleBuffer(f)]]))) as Map<string, unknown>
  t.equal(r.get('shared'), true, 'the worker got a view of shared memory')
  t.equal(f[0], 2.5, 'and its writes are in this thread\'s array')
  const back = bytes(r.get('data'))
  t.equal(back.byteOffset, f.byteOffset, 'the result is the same place in the arena')
  new Float32Array(back.buffer, back.byteOffset, 1)[0] = -3
  t.equal(f[0], -3, 'the same memory')
  t.equal(p.stats().bytesCopied, 0, 'nothing copied here')
  const ws = (await p.run(new Map([['op', 'stats']]))) as Map<string, number>
  t.equal(ws.get('bytesCopied'), 0, 'nothing copied by the worker')
  t.equal(ws.get('bytesReceived'), 1024 * 1024)
  p.release(r)
  await p.settle()
  t.equal(p.stats().arenas.tasks.freeBytes, p.stats().arenas.tasks.capacity)
})

t.test('a failing task rejects run() and gives its blocks back', async (t) => {
  const p = pool(t)
  await t.rejects(p.run(new Map<string, unknown>([['op', 'throw'], ['why', 'test'], ['x', new PickleBuffer(new Uint8Array(10_000))]])), { message: /on purpose: test/ })
  t.ok(await until(() => p.stats().arenas.tasks.freeBytes === p.stats().arenas.tasks.capacity), 'the task\'s block was released by the worker')
  t.same((await p.piscina.run({ x: 41 })), { plain: true, x: 42 }, 'a plain piscina task goes through the handler untouched')
})

t.test('a worker that exits mid-task: run() rejects and everything it held is reclaimed', async (t) => {
  const p = pool(t, { maxThreads: 1 })
  const f = await p.allocArray(Uint8Array, 100_000)
  await t.rejects(p.run(new Map<string, unknown>([['op', 'exit'], ['data', new PickleBuffer(f)], ['copy', new PickleBuffer(new Uint8Array(50_000))]])))
  t.ok(await until(() => p.stats().arenas.tasks.freeBytes === p.stats().arenas.tasks.capacity), 'the blocks the dead worker had taken are free')
  t.ok(p.stats().bytesReclaimed >= 150_000, 'reclaimed once')
  const r = await p.run(new Map<string, unknown>([['op', 'make'], ['n', 2000], ['fill', 9]]))
  t.same([bytes(r).length, bytes(r)[1999]], [2000, 9], 'the pool goes on with a new worker')
})

t.test('results the caller keeps never stall the workers: past the results arena they are transferred', async (t) => {
  const p = pool(t, { maxThreads: 1, resultCapacity: 64 * KiB })
  const kept = []
  for (let k = 0; k < 6; k++) kept.push(await p.run(new Map<string, unknown>([['op', 'make'], ['n', 40 * KiB], ['fill', k]])))
  t.same(kept.map((r) => [bytes(r).length, bytes(r)[0], bytes(r)[40 * KiB - 1]]), [0, 1, 2, 3, 4, 5].map((k) => [40 * KiB, k, k]), 'every result intact')
  const inArena = kept.filter((r) => bytes(r).buffer instanceof SharedArrayBuffer).length
  t.equal(inArena, 1, 'one in the arena, the rest transferred')
  const ws = (await p.run(new Map([['op', 'stats']]))) as Map<string, number>
  t.equal(ws.get('bytesTransferred'), 5 * 40 * KiB)
  t.ok(p.stats().arenas.results.bytesInUse <= 64 * KiB, 'the arena never grew')
  for (const r of kept) p.release(r)
  await p.settle()
  t.equal(p.stats().arenas.results.freeBytes, 64 * KiB)
})
