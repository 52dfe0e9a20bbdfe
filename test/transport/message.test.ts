import t from 'tap'
import { PickleBuffer, Tuple } from '@picklewire/codec'
import { DEFAULT_LIMITS } from '@picklewire/transport'
import { PROTOCOL_VERSION, decodeHeader, encodeHeader } from '../../packages/transport/dist/header.js'
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

t.test('headers round-trip and are validated before any allocation', async (t) => {
  const limits = resolveLimits()
  const h = { v: PROTOCOL_VERSION, id: 7, k: 'msg', p: 10, b: [100, 200], ro: [false, true], x: { tag: 'abc' } }
  const back = decodeHeader(encodeHeader(h), limits)
  t.same({ ...back, x: { ...back.x } }, h)
  const code = thrownCode
  t.equal(code(() => decodeHeader(encodeHeader({ ...h, v: 99 }), limits)), 'PROTOCOL', 'wrong version')
  t.equal(code(() => decodeHeader(encodeHeader({ ...h, b: [2 ** 40] , ro: [false] }), limits)), 'LIMIT', 'a buffer over maxBufferBytes')
  t.equal(code(() => decodeHeader(encodeHeader({ ...h, b: new Array(DEFAULT_LIMITS.maxBuffers + 1).fill(1), ro: new Array(DEFAULT_LIMITS.maxBuffers + 1).fill(false) }), limits)), 'LIMIT', 'too many buffers')
  t.equal(code(() => decodeHeader(encodeHeader({ ...h, ro: [false] }), limits)), 'PROTOCOL', 'flags and lengths disagree')
  t.equal(code(() => decodeHeader(Uint8Array.of(0xc1), limits)), 'PROTOCOL', 'not msgpack')
  t.equal(code(() => decodeHeader(encodeHeader({ ...h, p: -1 }), limits)), 'PROTOCOL', 'a negative length')
  t.throws(() => resolveLimits({ maxBuffers: 0 }), TypeError)
})
