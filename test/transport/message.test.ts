import t from 'tap'
import { PickleBuffer, Tuple } from '@picklewire/codec'
import { DEFAULT_LIMITS } from '@picklewire/transport'
import { Packr } from 'msgpackr'
import { decodeWireHeader, encodeWireHeader } from '../../packages/transport/dist/ws/wire.js'
import { decodeValue, encodeValue } from '../../packages/transport/dist/message.js'
import { resolveLimits } from '../../packages/transport/dist/limits.js'
import { thrownCode } from '../helpers/transport-errors.js'

t.test('a value round-trips through its parts; big buffers travel out of band as views', async (t) => {
  const big = new Uint8Array(4096).fill(7)
  const small = new Uint8Array(16).fill(1)
  const parts = encodeValue(new Map<string, unknown>([['big', new PickleBuffer(big)], ['small', new PickleBuffer(small)], ['t', Tuple.fromItems([1, 'a'])]]))
  t.equal(parts.buffers.length, 1, 'only the buffer of at least 1,024 bytes went out of band')
  t.equal(parts.buffers[0]!.buffer, big.buffer, 'the out-of-band buffer is the caller\'s memory, not a copy')
  t.same(parts.readonly, [false])
  const back = decodeValue(parts) as Map<string, unknown>
  const view = (back.get('big') as PickleBuffer).raw()
  t.equal(view.buffer, big.buffer, 'the loaded buffer is a view over the memory handed to decodeValue')
  t.same([...(back.get('small') as Uint8Array)], [...small], 'the small buffer came in band')
  t.same(back.get('t'), Tuple.fromItems([1, 'a']))
})

t.test('WebSocket headers round-trip and are validated before any allocation', async (t) => {
  const limits = resolveLimits()
  const h = { v: 1, id: 7, k: 'msg', p: 10, b: [100, 200], ro: [false, true], x: { tag: 'abc' } }
  const back = decodeWireHeader(encodeWireHeader(h), limits, 1)
  t.same({ ...back, x: { ...back.x } }, h)
  const code = thrownCode
  t.equal(code(() => decodeWireHeader(encodeWireHeader({ ...h, v: 99 }), limits, 1)), 'PROTOCOL', 'wrong version')
  t.equal(code(() => decodeWireHeader(encodeWireHeader({ ...h, b: [2 ** 40] , ro: [false] }), limits, 1)), 'LIMIT', 'a buffer over maxBufferBytes')
  t.equal(code(() => decodeWireHeader(encodeWireHeader({ ...h, b: new Array(DEFAULT_LIMITS.maxBuffers + 1).fill(1), ro: new Array(DEFAULT_LIMITS.maxBuffers + 1).fill(false) }), limits, 1)), 'LIMIT', 'too many buffers')
  t.equal(code(() => decodeWireHeader(new Packr({ useRecords: false }).pack({ ...h, ro: [false] }), limits, 1)), 'PROTOCOL', 'flags and lengths disagree')
  t.equal(code(() => decodeWireHeader(Uint8Array.of(0xc1), limits, 1)), 'PROTOCOL', 'not msgpack')
  t.equal(code(() => decodeWireHeader(encodeWireHeader({ ...h, p: -1 }), limits, 1)), 'PROTOCOL', 'a negative length')
  t.throws(() => resolveLimits({ maxBuffers: 0 }), TypeError)
})
