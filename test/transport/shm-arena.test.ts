import t, { type Test } from 'tap'
import { Worker } from 'node:worker_threads'
import { BLOCK_ALIGN, createArenaBuffer, openArenaBuffer, type BlockRef } from '../../packages/transport/dist/shm/arena.js'
import { thrownCode } from '../helpers/transport-errors.js'

const ME = 1
const OTHER = 7
const code = thrownCode

t.test('blocks are 64-byte aligned views of one SharedArrayBuffer, and the arena never grows', async (t) => {
  const sab = createArenaBuffer(64 * 1024)
  const arena = openArenaBuffer(sab)
  t.equal(arena.capacity, 64 * 1024)
  t.equal(arena.freeBytes, arena.capacity)
  const sizes = [1, 63, 64, 65, 1000, 4096]
  const refs = sizes.map((n) => arena.tryAlloc(n, ME)!)
  for (const [k, ref] of refs.entries()) {
    t.ok(ref, `a block of ${sizes[k]} bytes`)
    t.equal(arena.payloadOffset(ref.unit) % BLOCK_ALIGN, 0, 'payload 64-byte aligned')
    const v = arena.view(ref.unit, 0, sizes[k]!)
    t.equal(v.buffer, sab, 'a view of the arena, not a copy')
    new Float64Array(sab, arena.payloadOffset(ref.unit), Math.floor(sizes[k]! / 8)) // any element type fits
  }
  t.equal(sab.byteLength, openArenaBuffer(sab).heapOffset + arena.heapUnits * BLOCK_ALIGN, 'the SharedArrayBuffer is the arena, no more')
  for (const ref of refs) await arena.locked(ME, () => arena.freeLocked(ref, ME))
  t.equal(arena.freeBytes, arena.capacity, 'all free again')
})

t.test('free blocks coalesce: after any pattern of frees the whole capacity is one block again', async (t) => {
  const arena = openArenaBuffer(createArenaBuffer(256 * 1024))
  const refs: BlockRef[] = []
  for (;;) {
    const r = arena.tryAlloc(3000, ME)
    if (r === null) break
    refs.push(r)
  }
  t.ok(refs.length >= 80, `${refs.length} blocks of 3,000 bytes fit 256 KiB`)
  // Free every other block, then the rest, in a scrambled order.
  const order = [...refs.keys()].sort((a, b) => ((a * 7919) % refs.length) - ((b * 7919) % refs.length))
  for (const k of order) await arena.locked(ME, () => arena.freeLocked(refs[k]!, ME))
  const whole = arena.tryAlloc(arena.capacity, ME)
  t.ok(whole, 'one block of the whole capacity fits')
  await arena.locked(ME, () => arena.freeLocked(whole!, ME))
  t.equal(arena.freeBytes, arena.capacity)
})

t.test('ownership moves only from its holder; tickets make a repeated or stale release free nothing', async (t) => {
  const arena = openArenaBuffer(createArenaBuffer(4096))
  const ref = arena.tryAlloc(100, ME)!
  await arena.locked(ME, () => {
    t.notOk(arena.moveLocked(ref, OTHER, ME), 'only the holder can hand it on')
    t.ok(arena.moveLocked(ref, ME, OTHER), 'handed over')
    t.equal(arena.ownerLocked(ref), OTHER)
    t.notOk(arena.freeLocked(ref, ME), 'the old owner cannot free it')
    t.ok(arena.freeLocked(ref, OTHER), 'the new one can')
    t.notOk(arena.freeLocked(ref, OTHER), 'a second release frees nothing')
  })
  const again = arena.tryAlloc(arena.capacity, ME)!
  t.equal(again.unit, ref.unit, 'the same place is reused (the whole arena, coalesced)')
  t.not(again.ticket, ref.ticket, 'with a new ticket')
  await arena.locked(ME, () => t.notOk(arena.freeLocked(ref, ME), 'the stale ref cannot free the new allocation'))
  t.equal(arena.bytesInUse > 0, true, 'still allocated')
})

t.test('a buffer larger than the arena is CAPACITY, and a full arena waits (backpressure) until space is freed', async (t) => {
  const arena = openArenaBuffer(createArenaBuffer(4096))
  t.equal(code(() => arena.checkFits(1000, 'x')), 'CAPACITY')
  await t.rejects(arena.alloc(5000, ME), { code: 'CAPACITY' })
  const a = await arena.alloc(4096, ME)
  let got = false
  const waiting = arena.alloc(100, ME, { timeout: 10_000 }).then((r) => ((got = true), r))
  await new Promise((r) => setImmediate(r))
  t.notOk(got, 'the allocation waits while the arena is full')
  await arena.locked(ME, () => arena.freeLocked(a, ME))
  const b = await waiting
  t.ok(b, 'and gets its block once space is freed')
  await t.rejects(arena.alloc(4096, ME, { timeout: 50 }), { code: 'TIMEOUT' }, 'a wait can be bounded')
  const ac = new AbortController()
  const aborted = arena.alloc(4096, ME, { signal: ac.signal })
  ac.abort()
  await t.rejects(aborted, { name: 'AbortError' }, 'and aborted')
})

t.test('reclaim frees a dead owner\'s blocks only; a lock held by a dead thread is broken', async (t) => {
  const sab = createArenaBuffer(64 * 1024)
  const arena = openArenaBuffer(sab)
  const mine = arena.tryAlloc(1000, ME)!
  const w = new Worker(new URL('./shm-worker.mjs', import.meta.url), { workerData: { scenario: 'lockAndDie', args: { sab } } })
  const dead = w.threadId + 1
  await new Promise((resolve) => w.once('message', resolve))
  t.equal(arena.mutex.holder, dead, 'the worker holds the lock')
  await w.terminate()
  t.notOk(arena.mutex.tryLock(ME), 'nobody else can take it')
  t.ok(arena.mutex.breakIfHeldBy((h) => h === dead), 'broken by one who knows its holder died')
  const freed = await arena.locked(ME, () => arena.reclaimLocked((owner) => owner === dead))
  t.ok(freed >= 1000, 'its block is reclaimed')
  t.equal(arena.bytesInUse, 2 * BLOCK_ALIGN + Math.ceil(1000 / BLOCK_ALIGN) * BLOCK_ALIGN - BLOCK_ALIGN, 'only this thread\'s block is in use')
  await arena.locked(ME, () => t.ok(arena.freeLocked(mine, ME)))
  t.equal(arena.freeBytes, arena.capacity)
})
