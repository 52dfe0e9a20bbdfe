/**
 * numpy pickles for interop tests: made by a real numpy (any Python given), checked by it after
 * the codec dumped them back. Expressions see numpy as np, plus what `imports` imports.
 */
import { execFileSync } from 'node:child_process'
import { dumps, type PickleBuffer } from '@picklewire/codec'

/** pickle.dumps of each (expr, protocol, outOfBand); exprs see numpy as np and whatever imports adds. */
const makeScript = String.raw`
import sys, json, pickle, struct, numpy as np
exec(sys.argv[1])
out = sys.stdout.buffer
for expr, p, oob in json.loads(sys.stdin.read()):
    bufs = []
    d = pickle.dumps(eval(expr), p, buffer_callback=bufs.append if oob else None)
    raws = [bytes(b.raw()) for b in bufs]
    out.write(struct.pack('<II', len(d), len(raws)) + d)
    for r in raws: out.write(struct.pack('<I', len(r)) + r)
`

/** For each (expr, pickle, buffers): 'ok' when pickle.loads gives the same type, dtype and bytes as eval(expr). */
const checkScript = String.raw`
import sys, json, pickle, base64, numpy as np
exec(sys.argv[1])
for expr, d, bufs in json.loads(sys.stdin.read()):
    v = pickle.loads(base64.b64decode(d), buffers=[base64.b64decode(b) for b in bufs])
    w = eval(expr)
    same = type(v) is type(w) and v.dtype == w.dtype and v.dtype.type is w.dtype.type and v.shape == w.shape and v.tobytes() == w.tobytes()
    print('ok' if same else 'differs: %r %r' % (type(v), getattr(v, 'dtype', None)))
`

export type Case = readonly [expr: string, protocol: number, outOfBand: boolean]
export interface Made { data: Uint8Array, buffers: Uint8Array[] }

export function make(python: string, imports: string, cases: readonly Case[]): Made[] {
  const out = execFileSync(python, ['-c', makeScript, imports], { input: JSON.stringify(cases), maxBuffer: 1 << 28 })
  const res: Made[] = []
  for (let at = 0; at < out.length;) {
    const n = out.readUInt32LE(at)
    const k = out.readUInt32LE(at + 4)
    at += 8
    const data = new Uint8Array(out.subarray(at, at + n))
    at += n
    const buffers: Uint8Array[] = []
    for (let i = 0; i < k; i++) {
      const m = out.readUInt32LE(at)
      buffers.push(new Uint8Array(out.subarray(at + 4, at + 4 + m)))
      at += 4 + m
    }
    res.push({ data, buffers })
  }
  return res
}

export function check(python: string, imports: string, items: readonly (readonly [string, Made])[]): string[] {
  const b64 = (u: Uint8Array): string => Buffer.from(u).toString('base64')
  const input = JSON.stringify(items.map(([e, m]) => [e, b64(m.data), m.buffers.map(b64)]))
  return execFileSync(python, ['-c', checkScript, imports], { input }).toString().trim().split('\n')
}

/** Dumps v as the case was made: at its protocol, the buffers out of band when it was. */
export function dumpLike(v: unknown, protocol: number, oob: boolean, numpy: '1' | '2'): Made {
  const buffers: Uint8Array[] = []
  const data = dumps(v, { protocol, numpy, bufferCallback: oob ? (b: PickleBuffer) => { buffers.push(new Uint8Array(b.raw())); return false } : null })
  return { data, buffers }
}
