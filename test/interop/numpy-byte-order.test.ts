/**
 * Big-endian arrays. numpy's own loads keeps a protocol 5 (_frombuffer) array's byte order and
 * converts the protocol 0 to 4 (BUILD) ones to the machine's. Lossless mode does the same, so
 * that dumping back gives numpy's bytes and numpy loads an equal array of the same dtype; the
 * default mode converts all of them, as documented. The data is in the machine's order always.
 */
import t from 'tap'
import { NDArray, loads } from '@picklewire/codec'
import { numpyPythons } from '../helpers/numpy.js'
import { check, dumpLike, make, type Case, type Made } from './numpy-pickles.js'

const ARRAYS: readonly (readonly [expr: string, values: unknown[]])[] = [
  ["np.array([1, -2, 70000], dtype='>i4')", [1, -2, 70000]],
  ["np.array([1, 65535], dtype='>u2')", [1, 65535]],
  ["np.array([0.5, -1e300], dtype='>f8')", [0.5, -1e300]],
  ["np.array([[1.5, 2], [3, 4]], dtype='>f4', order='F')", [1.5, 3, 2, 4]],
  ["np.array([1 + 2j], dtype='>c16')", [1, 2]],
  ["np.array([2 ** 40], dtype='>i8')", [2n ** 40n]],
]
const PROTOCOLS: readonly (readonly [number, boolean])[] = [[2, false], [4, false], [5, false], [5, true]]

const { found } = numpyPythons()
for (const { python, version, major } of found) {
  t.test(`numpy ${version}: big-endian arrays keep numpy's byte order in lossless mode`, async (t) => {
    const cases: Case[] = ARRAYS.flatMap(([expr]) => PROTOCOLS.map(([p, oob]) => [expr, p, oob] as const))
    const made = make(python, '', cases)
    const back: [string, Made][] = []
    cases.forEach(([expr, protocol, oob], i) => {
      const what = `${expr} at protocol ${protocol}${oob ? ' out of band' : ''}`
      const { data, buffers } = made[i]!
      const values = ARRAYS.find(([e]) => e === expr)![1]
      const natural = loads(data, { buffers }) as NDArray
      t.equal(natural.dtype.byteorder, '<', `${what}: the default mode gives the machine's order`)
      const a = loads(data, { buffers, lossless: true }) as NDArray
      t.ok(a instanceof NDArray)
      const kept = protocol === 5
      t.equal(a.dtype.byteorder, kept ? '>' : '<', `${what}: lossless keeps '>' where numpy does (protocol 5), '<' where numpy converts`)
      t.same(Array.from(a.data as ArrayLike<unknown>), values, `${what}: the data reads in the machine's order`)
      t.equal(a.copied, true, `${what}: swapped once, so copied`)
      const ours = dumpLike(a, protocol, oob, major === 2 ? '2' : '1')
      if (kept) t.same(Buffer.from(ours.data), Buffer.from(data), `${what}: dumps back to numpy's bytes`)
      if (oob) t.same(ours.buffers.map((b) => Buffer.from(b)), buffers.map((b) => Buffer.from(b)), `${what}: and numpy's big-endian buffer`)
      // What numpy's own loads gives for the original: a '>' array at protocol 5, a native one below.
      back.push([kept ? expr : `pickle.loads(pickle.dumps(${expr}, ${protocol}))`, ours])
    })
    t.same(check(python, '', back), back.map(() => 'ok'), 'numpy loads each back to an equal array of the dtype its own loads gives')
  })
}
