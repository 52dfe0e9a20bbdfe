// The page side of the browser tests: plain JavaScript modules the page imports (served by
// browser-helpers.ts staticServer), each export run by inPage() with JSON arguments and returning
// JSON. They use the one-file bundle, as a page without a bundler would.
import * as pw from '/picklewire.js'

/** Every ArrayBuffer the page's WebSockets received as a frame (to tell views from copies). */
const frames = new WeakSet()
const onmessage = Object.getOwnPropertyDescriptor(WebSocket.prototype, 'onmessage')
Object.defineProperty(WebSocket.prototype, 'onmessage', {
  configurable: true,
  get() {
    return onmessage.get.call(this)
  },
  set(fn) {
    onmessage.set.call(this, fn && ((event) => {
      if (event.data instanceof ArrayBuffer) frames.add(event.data)
      fn(event)
    }))
  },
})

function get(map, key) {
  return map instanceof Map ? map.get(key) : map[key]
}

function same(got, want) {
  if (typeof got === 'bigint') return BigInt(want) === got
  if (typeof got === 'number') return typeof want === 'number' && (got === want || (Number.isNaN(got) && Number.isNaN(want)))
  if (got instanceof pw.Complex) return Array.isArray(want) && same(got.real, want[0]) && same(got.imag, want[1])
  if (got instanceof Uint8Array) return want instanceof Uint8Array && got.length === want.length && got.every((b, i) => b === want[i])
  return got === want
}

function show(v) {
  try {
    return JSON.stringify(v, (_k, x) => (typeof x === 'bigint' ? `${x}n` : x instanceof pw.Complex ? [x.real, x.imag] : x instanceof Uint8Array ? [...x] : x)).slice(0, 120)
  } catch {
    return String(v)
  }
}

/** What is wrong with one received case, or null. */
function checkCase(m, fromPython) {
  const a = get(m, 'array')
  if (!(a instanceof pw.NDArray)) return `not an NDArray: ${show(a)}`
  const dtype = get(m, 'dtype')
  const big = dtype.startsWith('>')
  const want = big ? `<${dtype.slice(1)}` : dtype
  if (a.dtype.str !== want) return `dtype ${a.dtype.str}, expected ${want}`
  const shape = get(m, 'shape')
  if (a.shape.length !== shape.length || a.shape.some((n, i) => n !== shape[i])) return `shape ${show(a.shape)}, expected ${show(shape)}`
  if (get(m, 'fortran') && a.order !== 'F') return `order ${a.order}, expected F`
  const expect = get(m, 'expect')
  const flat = a.flat()
  if (flat.length !== expect.length) return `${flat.length} elements, expected ${expect.length}`
  for (let i = 0; i < flat.length; i++) if (!same(flat[i], expect[i])) return `element ${i} is ${show(flat[i])}, expected ${show(expect[i])}`
  if (big && fromPython && !a.copied) return 'a big-endian array that was not converted (copied false)'
  return null
}

/**
 * Receives every case of browser_peer.py (through `url`: the Python server, or a Node server
 * relaying them), checks values and views, sends each back for numpy to check, and has numpy
 * describe arrays made here.
 */
export async function arrays({ url, key, fromPython, protocolVersion }) {
  const sock = await pw.connectPickleSocket(url, { ...(key ? { key } : {}), ...(protocolVersion ? { protocolVersion } : {}) })
  const cases = []
  let views = 0
  let outOfBand = 0
  const received = []
  for await (const m of sock) {
    if (m === 'done') break
    received.push(m)
    const a = get(m, 'array')
    const why = checkCase(m, fromPython)
    // An out-of-band buffer: an array of at least 1 KiB (the sender's threshold) in the machine's
    // byte order, and not datetime64/timedelta64 (numpy pickles those in band at every protocol).
    const oob = a instanceof pw.NDArray && a.nbytes >= 1024 && !get(m, 'dtype').startsWith('>') && !/[Mm]8/.test(get(m, 'dtype'))
    let view = null
    if (oob) {
      outOfBand++
      view = frames.has(a.data.buffer) && !a.copied
      if (view) views++
    }
    cases.push({ name: get(m, 'name'), why, view })
  }
  const back = []
  for (const m of received) {
    back.push({ name: get(m, 'name'), answer: await sock.request({ op: 'check', name: get(m, 'name'), array: get(m, 'array') }) })
  }
  const made = [
    new pw.NDArray(new Float32Array([1.5, -2, 3.25, 4, 5, 6]), { shape: [2, 3] }),
    new pw.NDArray(new Float64Array([1, 2, 3, 4, 5, 6]), { shape: [2, 3], order: 'F' }),
    new pw.NDArray(new BigInt64Array([-(2n ** 62n), 7n]), { shape: [2] }),
    new Int16Array([-3, 300]),
    new pw.NDArray(new Float32Array(4096).map((_, i) => i / 2), { shape: [64, 64] }),
  ]
  const described = []
  for (const a of made) described.push(await sock.request({ op: 'describe', array: a }))
  const stats = sock.stats()
  await sock.close()
  return {
    version: sock.protocolVersion,
    cases, views, outOfBand, back,
    described: described.map((d) => [d[0], d[1], show(d[2]).slice(0, 60), d[3]]),
    stats: { alignmentCopies: stats.alignmentCopies, messagesReceived: stats.messagesReceived, messagesSent: stats.messagesSent },
  }
}

/** With `key`: an echo and a request both ways under HMAC; the result and the stats. */
export async function authenticated({ url, key }) {
  const sock = await pw.connectPickleSocket(url, { key })
  const out = { cases: 0 }
  for await (const m of sock) {
    if (m === 'done') break
    out.cases++
  }
  const a = new pw.NDArray(new Float32Array(1 << 16).map((_, i) => i), { shape: [256, 256] })
  await sock.send({ echo: a })
  const echo = await sock.receive({ timeout: 10_000 })
  const e = get(echo, 'echo')
  out.echoed = e instanceof pw.NDArray && e.get(255, 255) === 65535 && frames.has(e.data.buffer)
  // 3 MiB: over the 1 MiB chunk size, so its MAC is fed chunk by chunk both ways
  const big = new Float32Array(3 * 2 ** 18).map((_, i) => i % 1000)
  await sock.send(new pw.NDArray(big))
  const bigEcho = await sock.receive({ timeout: 20_000 })
  out.bigEchoed = bigEcho instanceof pw.NDArray && bigEcho.size === big.length && bigEcho.data.every((x, i) => x === big[i])
  out.described = await sock.request({ op: 'describe', array: a }).then((d) => [d[0], d[1]])
  await sock.close()
  out.error = sock.error?.message ?? null
  return out
}

/** Connects with the wrong key: what the first receive fails with. */
export async function wrongKey({ url, key }) {
  const sock = await pw.connectPickleSocket(url, { key })
  let delivered = 0
  try {
    for await (const m of sock) delivered++
    return { code: null, delivered }
  } catch (err) {
    return { code: err.code, name: err.name, message: err.message, delivered }
  }
}

/** Receives until the connection fails: how it failed, and what was delivered before. */
export async function receiveAll({ url, options }) {
  const sock = await pw.connectPickleSocket(url, options ?? {})
  const delivered = []
  try {
    for await (const m of sock) delivered.push(show(m))
    return { code: null, delivered }
  } catch (err) {
    const info = await sock.closed
    return { code: err.code, name: err.name, message: err.message, delivered, closeCode: info.code }
  }
}

/** Options a page cannot have: the error each gives. */
export async function refusedOptions({ url }) {
  const out = {}
  for (const [name, value] of [['heartbeatInterval', 1000], ['receiveHighWaterMark', 1], ['recycleBytes', 1], ['ws', {}], ['highWaterMar', 1]]) {
    try {
      await pw.connectPickleSocket(url, { [name]: value })
      out[name] = 'accepted'
    } catch (err) {
      out[name] = `${err.name}: ${err.message}`
    }
  }
  // a close code the browser would refuse: a rejected promise, as every other misuse of close()
  const sock = await pw.connectPickleSocket(url)
  let closing = null
  try {
    closing = sock.close(1001)
  } catch (err) {
    out.closeThrew = `${err.name}: ${err.message}`
  }
  if (closing !== null) out.close1001 = await closing.then(() => 'closed', (err) => `${err.name}: ${err.message}`)
  await sock.close()
  return out
}

let blocked = 0
/** Keeps the page's one thread busy for `ms` (the page reads nothing meanwhile). */
export function block({ ms }) {
  const end = performance.now() + ms
  while (performance.now() < end) blocked++
  return blocked > 0
}

/** Connects and waits (the Node test then sends while the page is blocked). */
let held = null
export async function hold({ url }) {
  held = await pw.connectPickleSocket(url)
  return held.protocolVersion
}

/** After a hold(): receives `count` messages, checks their order (value[0] is i), returns the stats. */
export async function drain({ count }) {
  let inOrder = true
  for (let i = 0; i < count; i++) {
    const v = await held.receive({ timeout: 30_000 })
    const a = get(v, 'a')
    inOrder = inOrder && get(v, 'i') === i && a instanceof pw.NDArray && a.data[0] === i
  }
  return { inOrder, stats: held.stats() }
}

/**
 * Sends `count` float32 arrays of `mib` MiB with a highWaterMark of `hwm` bytes: how many sends
 * waited for bufferedAmount, the most buffered at once, and whether they all went out.
 */
export async function sendBurst({ url, count, mib, hwm }) {
  const sock = await pw.connectPickleSocket(url, { highWaterMark: hwm })
  const a = new Float32Array(mib * 2 ** 20 / 4)
  const pending = []
  let resolvedEarly = 0
  for (let i = 0; i < count; i++) {
    a[0] = i
    const p = sock.send({ i, a: new pw.NDArray(a.slice()) })
    let settled = false
    p.then(() => (settled = true))
    await Promise.resolve()
    if (settled) resolvedEarly++
    pending.push(p)
  }
  const waitingAfterLoop = sock.stats().sendWaits
  await Promise.all(pending)
  await sock.flushed()
  const stats = sock.stats()
  await sock.close()
  return { resolvedEarly, waitingAfterLoop, stats }
}

/** Answers the server's requests (an NDArray doubled) until the server closes; how many it answered. */
export async function answer({ url }) {
  let answered = 0
  const sock = await pw.connectPickleSocket(url, {
    onRequest: (value) => {
      answered++
      const a = get(value, 'array')
      if (get(value, 'fail')) throw new RangeError('asked to fail')
      return new pw.NDArray(a.data.map((x) => x * 2), { shape: a.shape })
    },
  })
  const info = await sock.closed
  return { answered, code: info.code, error: info.error?.message ?? null }
}

/** Python's server sends its cases first: reads them up to 'done'. */
async function skipCases(sock) {
  for await (const m of sock) if (m === 'done') return
}

/**
 * Asks the server (request op 'big-then-next') to send a float32 array of `mib` MiB in chunks,
 * then the string 'after'; discards the array at its first chunk. What the page saw and what
 * the server's send of the array ended with.
 */
export async function discardBig({ url, mib, fromPython }) {
  const sock = await pw.connectPickleSocket(url)
  if (fromPython) await skipCases(sock)
  const discarded = []
  const after = []
  sock.on('progress', (p) => {
    if (discarded.length > 0) {
      if (p.id === discarded[0].id) after.push(p.bytes)
      return
    }
    if (p.buffer === 0 && p.bufferBytes < p.bufferTotal) discarded.push({ id: p.id, result: sock.discard(p.id), bytes: p.bytes, total: p.total })
  })
  const reply = sock.request({ op: 'big-then-next', mib }, { timeout: 60_000 })
  const next = await sock.receive({ timeout: 60_000 })
  const r = await reply
  const stats = sock.stats()
  await sock.close()
  return {
    discarded, progressAfter: after.length, next: show(next),
    sender: { big: get(r, 'big'), message: get(r, 'message'), cancelled: get(r, 'cancelled') },
    messagesDiscarded: stats.messagesDiscarded, messagesReceived: stats.messagesReceived,
  }
}

/**
 * Sends a float32 array of `mib` MiB in chunks of 256 KiB and aborts it (AbortSignal) once its
 * first chunk has left the page, then sends {next: 1024 float32 0..1023}: the echo that comes
 * back, and what the server says it received (request op 'stats').
 */
export async function abortBig({ url, mib, fromPython }) {
  const sock = await pw.connectPickleSocket(url, { chunkBytes: 256 * 1024, highWaterMark: 2 ** 20 })
  if (fromPython) await skipCases(sock)
  const ac = new AbortController()
  const total = mib * 2 ** 20
  let last = 0
  let error = null
  try {
    await sock.send(new pw.NDArray(new Float32Array(total / 4).fill(1)), {
      signal: ac.signal,
      onProgress: (p) => {
        last = p.bytes
        if (p.buffer === 0 && p.bufferBytes > 0) ac.abort(new Error('stop'))
      },
    })
  } catch (err) {
    error = err.message
  }
  const next = new Float32Array(1024).map((_, i) => i)
  await sock.send({ next: new pw.NDArray(next) })
  const echo = await sock.receive({ timeout: 30_000 })
  const e = get(echo, 'next')
  const echoed = e instanceof pw.NDArray && e.size === 1024 && e.data.every((x, i) => x === i)
  const server = await sock.request({ op: 'stats' }, { timeout: 30_000 })
  const stats = sock.stats()
  await sock.close()
  return {
    error, last, total, echoed,
    server: { cancelledByPeer: get(server, 'cancelled_by_peer'), received: get(server, 'received') },
    messagesCancelled: stats.messagesCancelled,
  }
}
