/**
 * Dask comms against distributed's own comm layer, both ways and on tcp:// and ws://: Python's
 * connect() to a Node listener and Node's connectDask() to a Python listener, the handshake
 * settling pickle protocol and compression, numpy arrays and lz4 frames in both directions.
 * Then what goes wrong: nobody listening, a peer that never speaks or speaks something else,
 * a read that waits too long.
 */
import { namespaceMissing } from './dask-netns.js'
import { spawn } from 'node:child_process'
import net from 'node:net'
import { createInterface } from 'node:readline'
import t from 'tap'
import { NDArray } from '@picklewire/codec'
import { DaskClient, DaskSerialize, TransportError, connectDask, listenDask, type DaskComm } from '@picklewire/transport'
import { newStats as newDaskStats } from '../../packages/transport/dist/dask/serialize.js'
import { encodeTcpPrelude } from '../../packages/transport/dist/dask/framing.js'
import { parseDaskAddress } from '../../packages/transport/dist/dask/comm.js'
import { DASK_PYTHON, daskMissing, runDaskPython, skipOrFail, within } from './dask-helpers.js'

function field(m: unknown, k: string): unknown {
  return m instanceof Map ? m.get(k) : undefined
}

const PY_CONNECTS = `
import asyncio, json, sys
import dask
import numpy as np
from distributed.comm import connect
from distributed.protocol import to_serialize

async def main(address, compression):
    with dask.config.set({'distributed.comm.compression': None if compression == 'none' else compression}):
        comm = await connect(address, timeout=10)
        out = {'remote': {k: comm.remote_info[k] for k in ('compression', 'pickle-protocol', 'python')}, 'options': comm.handshake_options}
        a = np.arange(200000, dtype='f8') % 10
        await comm.write({'op': 'echo', 'v': to_serialize(a), 'text': 'héllo', 'n': 2**40})
        r = await comm.read()
        out['echo_equal'] = bool((r['v'] == a).all())
        out['echo_dtype'] = r['v'].dtype.str
        out['from_node'] = r['n'].tolist()
        out['from_node_dtype'] = r['n'].dtype.str
        await comm.close()
    print(json.dumps(out))

asyncio.run(main(sys.argv[1], sys.argv[2]))
`

const PY_LISTENS = `
import asyncio, sys, threading
import dask
from distributed.comm import listen
from distributed.protocol import to_serialize

async def main(scheme, compression):
    dask.config.set({'distributed.comm.compression': None if compression == 'none' else compression})
    async def handle(comm):
        while True:
            try:
                msg = await comm.read()
            except Exception:
                return
            v = msg.get('v')
            await comm.write({'op': 'reply', 'v': to_serialize(v * 2), 'remote': comm.remote_info['compression'],
                              'options': comm.handshake_options, 'type': type(v).__name__})
    listener = listen(scheme + '://127.0.0.1:0', handle)
    await listener.start()
    host, port = listener.get_host_port()
    print(scheme + '://127.0.0.1:' + str(port), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    threading.Thread(target=lambda: (sys.stdin.read(), loop.call_soon_threadsafe(stop.set)), daemon=True).start()
    await stop.wait()
    listener.stop()

asyncio.run(main(sys.argv[1], sys.argv[2]))
`

async function tests(): Promise<void> {
  for (const scheme of ['tcp', 'ws'] as const) {
    for (const compression of ['lz4', null] as const) {
      t.test(`${scheme}, compression ${compression}: Python's connect() to a Node listener`, async (t) => {
        const stats = newDaskStats()
        const seen: unknown[] = []
        const listener = await listenDask({ scheme, compression, stats, timeout: 10_000 }, async (comm: DaskComm) => {
          try {
            const msg = await comm.read({ timeout: 20_000 })
            seen.push(msg, comm.remote, comm.settings)
            await comm.write({ op: 'echo-reply', v: new DaskSerialize(field(msg, 'v')), n: new DaskSerialize(new Int32Array([7, -8, 9])) })
          } catch (err) {
            seen.push(err)
          }
        })
        t.teardown(() => listener.close())
        const out = JSON.parse((await runDaskPython(PY_CONNECTS, [listener.address, compression ?? 'none'], undefined, 30_000)).toString())
        t.same(out.remote, { compression, 'pickle-protocol': 5, python: [3, 8, 0] }, 'Python read our handshake')
        t.same(out.options, { 'pickle-protocol': 5, compression }, 'and settled the same options')
        t.equal(out.echo_equal, true, 'the array came back equal')
        t.equal(out.echo_dtype, '<f8')
        t.same([out.from_node, out.from_node_dtype], [[7, -8, 9], '<i4'], 'a Node Int32Array arrived as numpy int32')
        const [msg, remote, settings] = seen
        t.equal(field(msg, 'text'), 'héllo')
        t.equal(field(msg, 'n'), 2 ** 40)
        const v = field(msg, 'v') as NDArray
        t.ok(v instanceof NDArray && v.size === 200_000 && (v.data as Float64Array).every((x, i) => x === i % 10), 'Python\'s array in Node')
        t.equal((remote as { compression: unknown }).compression, compression)
        t.same(settings, { pickleProtocol: 5, compression })
        if (compression === 'lz4') {
          t.ok((stats.decompressed.lz4 ?? 0) > 0, 'Python compressed toward us and we read it')
          t.ok(stats.compressed > 0, 'we compressed toward Python and it read it')
        } else {
          t.same([stats.decompressed, stats.compressed], [{}, 0], 'nothing compressed either way')
        }
      })
    }

    t.test(`${scheme}: Node's connectDask() to a Python listener`, async (t) => {
      const proc = spawn(DASK_PYTHON, ['-c', PY_LISTENS, scheme, 'lz4'], { cwd: '/', stdio: ['pipe', 'pipe', 'pipe'] })
      t.teardown(() => {
        proc.stdin.end()
        setTimeout(() => proc.kill('SIGKILL'), 3000).unref()
      })
      const address = await within(30_000, new Promise<string>((resolve) => createInterface({ input: proc.stdout }).once('line', resolve)), 'the Python listener')
      const comm = await connectDask(address, { timeout: 10_000, compression: 'lz4' })
      t.teardown(() => comm.abort())
      t.same(comm.remote, { compression: 'lz4', python: comm.remote!.python, 'pickle-protocol': 5 })
      t.same(comm.settings, { pickleProtocol: 5, compression: 'lz4' })
      const big = new Float64Array(300_000).map((_, i) => i % 5)
      await comm.write({ op: 'double', v: new DaskSerialize(new NDArray(big, { shape: [1000, 300] })) })
      const reply = await comm.read({ timeout: 20_000 }) as Map<unknown, unknown>
      t.equal(reply.get('type'), 'ndarray')
      t.equal(reply.get('remote'), 'lz4', 'Python read our handshake')
      const doubled = reply.get('v') as NDArray
      t.same(doubled.shape, [1000, 300])
      t.ok((doubled.data as Float64Array).every((x, i) => x === 2 * (i % 5)), 'every element doubled by numpy')
      t.ok((comm.stats().decompressed.lz4 ?? 0) > 0 && comm.stats().compressed > 0, `lz4 both ways: ${JSON.stringify(comm.stats())}`)
      await comm.write({ op: 'bytes', v: new DaskSerialize(new TextEncoder().encode('ab')) })
      t.same((await comm.read({ timeout: 20_000 }) as Map<unknown, unknown>).get('v'), new TextEncoder().encode('abab'))
      await comm.close()
      t.equal(comm.open, false)
    })
  }
}

t.test('connecting: nobody there, a silent peer, a peer that is not Dask', async (t) => {
  const free = net.createServer()
  await new Promise<void>((r) => free.listen(0, '127.0.0.1', r))
  const port = (free.address() as net.AddressInfo).port
  await new Promise<void>((r) => free.close(() => r()))
  const started = Date.now()
  await t.rejects(connectDask(`tcp://127.0.0.1:${port}`, { timeout: 400 }), { name: 'TransportError', code: 'TIMEOUT' }, 'refused until the timeout')
  t.ok(Date.now() - started < 3000, 'and no longer')

  const sockets = new Set<net.Socket>()
  const silent = net.createServer((s) => void sockets.add(s))
  await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r))
  t.teardown(() => {
    for (const s of sockets) s.destroy()
    silent.close()
  })
  await t.rejects(connectDask(`tcp://127.0.0.1:${(silent.address() as net.AddressInfo).port}`, { timeout: 400 }),
    { code: 'TIMEOUT', message: /no Dask handshake/ }, 'a peer that never speaks')

  const liar = net.createServer((s) => {
    const frame = Uint8Array.of(0xa2, 0x68, 0x69) // msgpack "hi": not a handshake
    s.end(Buffer.concat([encodeTcpPrelude([frame]), frame]))
  })
  await new Promise<void>((r) => liar.listen(0, '127.0.0.1', r))
  t.teardown(() => liar.close())
  await t.rejects(connectDask(`tcp://127.0.0.1:${(liar.address() as net.AddressInfo).port}`, { timeout: 2000 }),
    { code: 'PROTOCOL', message: /did not send a Dask handshake/ }, 'a peer that speaks something else')

  const huge = net.createServer((s) => s.write(Buffer.from(new BigUint64Array([2n ** 40n, 1n]).buffer)))
  await new Promise<void>((r) => huge.listen(0, '127.0.0.1', r))
  t.teardown(() => huge.close())
  await t.rejects(connectDask(`tcp://127.0.0.1:${(huge.address() as net.AddressInfo).port}`, { timeout: 2000 }),
    { code: 'LIMIT' }, 'a message over the limit is refused before allocation')
})

t.test('a read that waits too long rejects with TIMEOUT and leaves the comm open; the reply it missed goes to the next read', async (t) => {
  const listener = await listenDask({}, (c) => {
    // Answers the first message only after a pause longer than the first read waits.
    void c.read().then(async (m) => {
      await new Promise((r) => setTimeout(r, 300))
      await c.write(m)
    })
  })
  t.teardown(() => listener.close())
  const comm = await connectDask(listener.address, { timeout: 2000 })
  t.teardown(() => comm.close())
  await comm.write({ op: 'echo', n: 1 })
  await t.rejects(comm.read({ timeout: 100 }), { code: 'TIMEOUT' })
  t.equal(comm.open, true, 'still open')
  t.equal(comm.error, null)
  const reply = await within(5000, comm.read({ timeout: 5000 }), 'the late reply') as Map<unknown, unknown>
  t.equal(reply.get('n'), 1, 'the late reply is the next read')
  await comm.close()
  t.equal(comm.open, false)
  await t.rejects(comm.write({ op: 'x' }), { code: 'CLOSED' })
})

t.test('bad options are TypeErrors before anything connects', async (t) => {
  await t.rejects(connectDask('tcp://127.0.0.1:1', { compression: 'snappy' as 'lz4' }), TypeError)
  await t.rejects(connectDask('tcp://127.0.0.1:1', { pickleProtocol: 6 }), TypeError)
  await t.rejects(connectDask('tcp://127.0.0.1:1', { timeout: -1 }), TypeError)
  await t.rejects(connectDask('tcp://127.0.0.1:1', { limits: { maxFrames: 0 } }), TypeError)
  await t.rejects(connectDask('tcp://127.0.0.1:1', { serializers: ['json' as 'dask'] }), TypeError)
  await t.rejects(DaskClient.connect('tcp://127.0.0.1:1', { heartbeatInterval: -5 }), TypeError)
  await t.rejects(listenDask({ scheme: 'udp' as 'tcp' }, () => {}), TypeError)
})

t.test('addresses', async (t) => {
  t.same(parseDaskAddress('tcp://127.0.0.1:8786'), { scheme: 'tcp', host: '127.0.0.1', port: 8786 })
  t.same(parseDaskAddress('ws://[::1]:80'), { scheme: 'ws', host: '::1', port: 80 })
  t.same(parseDaskAddress('localhost:1'), { scheme: 'tcp', host: 'localhost', port: 1 })
  t.throws(() => parseDaskAddress('tls://h:1'), TypeError)
  t.throws(() => parseDaskAddress('nonsense'), TypeError)
})

const missing = namespaceMissing ?? daskMissing()
if (missing) t.test('against distributed', async (t) => skipOrFail(t, missing))
else await tests()
