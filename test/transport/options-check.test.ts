/**
 * The carriers check their options at run time: an unknown option name is a TypeError naming it
 * and the nearest known name, on every public function and constructor that takes options
 * (WebSocket, shared memory, Dask), on limits objects, and on the codec options a carrier
 * passes on (pickler/unpickler), which fail when the carrier is made. The Dask
 * client's methods, which need a scheduler, are in options-check-dask.test.ts.
 */
import t from 'tap'
import { PickleBuffer } from '@picklewire/codec'
import { ArenaPool, DaskClient, PickleSocket, WebSocket, arenaHandler, connectDask, connectPickleSocket, createChannel, createPipe, WarmMemory, listenDask, listenPickleSocket, openChannel, openPipe } from '@picklewire/transport'
import { resolveLimits } from '../../packages/transport/dist/limits.js'

const typo = (what: string, name: string, meant: string) => ({
  name: 'TypeError', message: `${what}: unknown option '${name}'; did you mean '${meant}'?`,
})
const TASK = new URL('./piscina-task.mjs', import.meta.url).href

t.test('limits: an unknown limit name is a TypeError with the nearest name', async (t) => {
  t.throws(() => resolveLimits({ maxBufers: 5 } as object), typo('limits', 'maxBufers', 'maxBuffers'))
  t.throws(() => resolveLimits({ max_pickle_bytes: 5 } as object), typo('limits', 'max_pickle_bytes', 'maxPickleBytes'))
  t.throws(() => resolveLimits({ colour: 5 } as object), {
    name: 'TypeError', message: "limits: unknown option 'colour'; known options: 'maxMessageBytes', 'maxBuffers', 'maxBufferBytes', 'maxPickleBytes'",
  })
  t.throws(() => resolveLimits({ maxBuffers: '5' } as object), { name: 'TypeError', message: 'limit maxBuffers must be a positive integer, got string 5' })
  t.equal(resolveLimits({ maxBuffers: 5 }).maxBuffers, 5)
  await t.rejects(connectDask('tcp://127.0.0.1:1', { limits: { maxFrame: 3 } as object }), typo('limits', 'maxFrame', 'maxFrames'))
})

t.test('WebSocket: connect, listen, PickleSocket, send and request refuse unknown names', async (t) => {
  t.throws(() => connectPickleSocket('ws://127.0.0.1:1/', { heartbeat_interval: 5 } as object),
    typo('connectPickleSocket', 'heartbeat_interval', 'heartbeatInterval'))
  t.throws(() => connectPickleSocket('ws://127.0.0.1:1/', { host: '127.0.0.1' } as object), {
    name: 'TypeError', message: /^connectPickleSocket: unknown option 'host'; known options: 'limits', /,
  }, 'a listen option is not a connect option')
  await t.rejects(listenPickleSocket({ prot: 0 } as object), typo('listenPickleSocket', 'prot', 'port'))
  await t.rejects(listenPickleSocket({ requestTimout: 5 } as object), typo('listenPickleSocket', 'requestTimout', 'requestTimeout'))

  const raw = new WebSocket('ws://127.0.0.1:1/')
  raw.on('error', () => {})
  t.throws(() => new PickleSocket(raw, 'client', { onrequest: () => 1 } as object), typo('PickleSocket', 'onrequest', 'onRequest'))
  raw.terminate()

  const server = await listenPickleSocket()
  t.teardown(() => server.close())
  const client = await connectPickleSocket(server.url)
  t.teardown(() => client.close())
  await t.rejects(client.send(1, { X: { a: 1 } } as object), typo('PickleSocket.send', 'X', 'x'))
  await t.rejects(client.send(1, { x: 'a' } as object), { name: 'TypeError', message: 'PickleSocket.send: option x must be an object, got string "a"' })
  await t.rejects(client.request(1, { timout: 5 } as object), typo('PickleSocket.request', 'timout', 'timeout'))
  await t.rejects(client.request(1, { timeout: -1 }), { name: 'RangeError', message: /option timeout must be a finite number of milliseconds >= 0, got number -1/ })
  t.equal(client.stats().messagesSent, 0, 'nothing refused was sent')
})

t.test('WebSocket: the pickler and unpickler options are checked when the socket is made', async (t) => {
  const url = 'ws://127.0.0.1:1/'
  t.throws(() => connectPickleSocket(url, { pickler: { fsat: true } as object }), {
    name: 'TypeError', message: "connectPickleSocket: option pickler: Pickler: unknown option 'fsat'; did you mean 'fast'?",
  })
  t.throws(() => connectPickleSocket(url, { pickler: { protocol: 4 } as object }), {
    name: 'TypeError', message: 'connectPickleSocket: option pickler.protocol is set by the carrier and cannot be given',
  })
  t.throws(() => connectPickleSocket(url, { pickler: { outOfBand: 1024 } as object }), {
    name: 'TypeError', message: 'connectPickleSocket: option pickler.outOfBand must be a function, got number 1024',
  })
  t.throws(() => connectPickleSocket(url, { pickler: { maxDepth: 0 } }), {
    name: 'RangeError', message: 'connectPickleSocket: option pickler: Pickler: option maxDepth must be a positive integer, got number 0',
  })
  t.throws(() => connectPickleSocket(url, { unpickler: { dict_: 'object' } as object }), {
    name: 'TypeError', message: "connectPickleSocket: option unpickler: Unpickler: unknown option 'dict_'; did you mean 'dict'?",
  })
  t.throws(() => connectPickleSocket(url, { unpickler: { buffers: [] } as object }), {
    name: 'TypeError', message: 'connectPickleSocket: option unpickler.buffers is set by the carrier and cannot be given',
  })
  t.throws(() => connectPickleSocket(url, { unpickler: 'opaque' as unknown as object }), {
    name: 'TypeError', message: 'connectPickleSocket: option unpickler must be an object, got string "opaque"',
  })
})

t.test('shared memory: channels refuse unknown names', async (t) => {
  t.throws(() => createChannel({ capacty: 1 << 20 } as object), typo('createChannel', 'capacty', 'capacity'))
  t.throws(() => createChannel({ ring_bytes: 4096 } as object), typo('createChannel', 'ring_bytes', 'ringBytes'))
  const { port1, port2 } = createChannel({ capacity: 1 << 20 })
  t.throws(() => openChannel(port1, { gc_release: false } as object), typo('openChannel', 'gc_release', 'gcRelease'))
  t.throws(() => openChannel(port1, { pickler: { out_of_band: () => true } as object }), typo('openChannel', 'pickler.out_of_band', 'outOfBand'))
  t.throws(() => openChannel(port1, { unpickler: { opaqe: true } as object }), {
    name: 'TypeError', message: "openChannel: option unpickler: Unpickler: unknown option 'opaqe'; did you mean 'opaque'?",
  })
  t.throws(() => openChannel(port1, { encode: {} } as object), {
    name: 'TypeError', message: "openChannel: unknown option 'encode'; known options: 'pickler', 'unpickler', 'values', 'limits', 'gcRelease'",
  })
  t.throws(() => openChannel(port1, { values: 'js' } as object), {
    name: 'RangeError', message: `openChannel: option values must be 'javascript' or 'python', got string "js"`,
  })
  t.throws(() => openChannel(port1, { gcRelease: 'no' } as object), { name: 'TypeError', message: 'openChannel: option gcRelease must be a boolean, got string "no"' })
  const a = openChannel(port1)
  const b = openChannel(port2)
  t.teardown(() => { a.close(); b.close() })
  await t.rejects(a.send(1, { timout: 10 } as object), typo('Channel.send', 'timout', 'timeout'))
  await t.rejects(a.send(1, { transferList: [] } as object), typo('Channel.send', 'transferList', 'transfer'))
  await t.rejects(b.receive({ signl: AbortSignal.timeout(10) } as object), typo('Channel.receive', 'signl', 'signal'))
  await a.send(new PickleBuffer(new Uint8Array(4096)), { timeout: 1000 })
  const got = await b.receive({ timeout: 1000 })
  t.ok(got.value instanceof PickleBuffer, 'the options as spelled still work')
  got.release()
})

t.test('shared memory: pipes refuse unknown names', async (t) => {
  t.throws(() => createPipe({ ringbytes: 4096 } as object), typo('createPipe', 'ringbytes', 'ringBytes'))
  const init = createPipe({ capacity: 1 << 20 })
  t.throws(() => openPipe(init, { limts: {} } as object), typo('openPipe', 'limts', 'limits'))
  t.throws(() => openPipe(init, { limits: { maxbuffers: 2 } } as object), typo('limits', 'maxbuffers', 'maxBuffers'))
  const pipe = openPipe(init)
  t.teardown(() => pipe.close())
  await t.rejects(pipe.send(1, { deadline: 5 } as object), { name: 'TypeError', message: "Pipe.send: unknown option 'deadline'; known options: 'signal', 'timeout'" })
  await t.rejects(pipe.receive({ Timeout: 5 } as object), typo('Pipe.receive', 'Timeout', 'timeout'))
  await t.rejects(pipe.alloc(64, { timeOut: 5 } as object), typo('alloc', 'timeOut', 'timeout'))
  await t.rejects(pipe.allocArray(Float32Array, 16, { singal: undefined } as object), typo('allocArray', 'singal', 'signal'))
  const view = await pipe.alloc(64, { timeout: 1000 })
  t.equal(view.byteLength, 64, 'alloc with options as spelled still works')
  pipe.free(view)
})

t.test('shared memory: ArenaPool and arenaHandler check their options', async (t) => {
  t.throws(() => arenaHandler((x) => x, { unpickle: {} } as object), typo('arenaHandler', 'unpickle', 'unpickler'))
  t.throws(() => arenaHandler('run' as unknown as (x: unknown) => unknown), { name: 'TypeError', message: 'arenaHandler needs a task handler function, got string' })
  t.throws(() => new ArenaPool({ filename: TASK, pickler: { fixImport: true } as object }), {
    name: 'TypeError', message: "ArenaPool: option pickler: Pickler: unknown option 'fixImport'; did you mean 'fixImports'?",
  })
  const pool = new ArenaPool({ filename: TASK, minThreads: 0, maxThreads: 1 })
  t.teardown(() => pool.destroy())
  await t.rejects(pool.run(new Map(), { transfer_list: [] } as object), typo('ArenaPool.run', 'transfer_list', 'transferList'))
})

t.test('Dask: connectDask and listenDask refuse unknown names before connecting', async (t) => {
  t.throws(() => new WarmMemory({ maxbytes: 1 << 20 } as object), typo('WarmMemory', 'maxbytes', 'maxBytes'))
  await t.rejects(connectDask('tcp://127.0.0.1:1', { timout: 10 } as object), typo('connectDask', 'timout', 'timeout'))
  await t.rejects(connectDask('tcp://127.0.0.1:1', { rpcTimeout: 10 } as object), {
    name: 'TypeError', message: /^connectDask: unknown option 'rpcTimeout'; did you mean 'timeout'\?$/,
  }, 'a client option is not a comm option')
  await t.rejects(connectDask('tcp://127.0.0.1:1', { pickler: { dispatch_table: new Map() } as object }), {
    name: 'TypeError', message: "connectDask: option pickler: Pickler: unknown option 'dispatch_table'; did you mean 'dispatchTable'?",
  })
  await t.rejects(listenDask({ schema: 'tcp' } as object, () => {}), typo('listenDask', 'schema', 'scheme'))
  await t.rejects(DaskClient.connect('tcp://127.0.0.1:1', { timout: 10 } as object), typo('DaskClient.connect', 'timout', 'timeout'))
  await t.rejects(DaskClient.connect('tcp://127.0.0.1:1', { heartbeat: 10 } as object), {
    name: 'TypeError', message: /^DaskClient.connect: unknown option 'heartbeat'; known options: 'timeout', /,
  })
  await t.rejects(DaskClient.connect('tcp://127.0.0.1:1', { onMessage: 'log' } as object), {
    name: 'TypeError', message: 'DaskClient.connect: option onMessage must be a function, got string "log"',
  })
})
