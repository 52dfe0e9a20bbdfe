/**
 * The carriers' shared contract (contract-scenarios.ts), run over each carrier: a shared-memory
 * channel with both ends in this thread, a pipe (a writer and a reader endpoint), a
 * PickleSocket pair and a Dask comm pair, both over 127.0.0.1. Each scenario gets a fresh pair.
 * The shared-memory arenas hold 1 MiB and the socket's high-water mark is 0, so that a send
 * that has to wait for room is easy to make.
 */
import t from 'tap'
import { createChannel, createPipe, openChannel, openPipe } from '@picklewire/transport/shm'
import { connectPickleSocket, listenPickleSocket, type PickleSocket } from '@picklewire/transport/ws'
import { connectDask, listenDask, type DaskComm } from '@picklewire/transport/dask'
import { scenarios, type Carrier, type End, type Pair } from './contract-scenarios.js'

const channel: Carrier = {
  name: 'shared-memory channel',
  caps: { receives: 'Received', handshakeMessages: 0, bytesCounted: 'out-of-band buffers', sentCounted: 'on send', sendWaitsFor: { what: 'arena space', fillBytes: 600 << 10 } },
  async pair(): Promise<Pair> {
    const { port1, port2 } = createChannel({ capacity: 1 << 20, ringBytes: 1 << 16 })
    const a = openChannel(port1)
    const b = openChannel(port2)
    return {
      a, b,
      flushed: async () => {},
      dispose: async () => {
        await Promise.all([a.close(), b.close()])
      },
    }
  },
}

const pipe: Carrier = {
  name: 'shared-memory pipe',
  caps: { receives: 'Received', handshakeMessages: 0, bytesCounted: 'out-of-band buffers', sentCounted: 'on send', sendWaitsFor: { what: 'arena space', fillBytes: 600 << 10 } },
  async pair(): Promise<Pair> {
    const init = createPipe({ capacity: 1 << 20, ringBytes: 1 << 16 })
    const a = openPipe(init)
    const b = openPipe(init)
    return {
      a, b,
      flushed: async () => {},
      dispose: async () => {
        await a.close()
      },
    }
  },
}

const socket: Carrier = {
  name: 'PickleSocket',
  caps: { receives: 'value', handshakeMessages: 0, bytesCounted: 'whole messages', sentCounted: 'when written', sendWaitsFor: { what: 'the high-water mark', fillBytes: 16 << 20 } },
  async pair(): Promise<Pair> {
    // Frames only: on one host the 16 MiB that fills the socket would go through a file.
    const server = await listenPickleSocket({ host: '127.0.0.1', port: 0, sameHost: false })
    const accepted = new Promise<PickleSocket>((resolve) => server.once('connection', (s) => resolve(s)))
    // No high-water mark: a send waits while any earlier message is not yet written.
    const a = await connectPickleSocket(server.url, { highWaterMark: 0, sameHost: false })
    const b = await accepted
    return {
      a, b,
      flushed: () => a.flushed(),
      dispose: async () => {
        await Promise.all([a.close(), b.close()])
        await server.close()
      },
    }
  },
}

const dask: Carrier = {
  name: 'Dask comm (tcp)',
  caps: { receives: 'value', handshakeMessages: 1, bytesCounted: 'whole messages', sentCounted: 'on send', sendWaitsFor: null },
  async pair(): Promise<Pair> {
    let resolveAccepted!: (c: DaskComm) => void
    const accepted = new Promise<DaskComm>((resolve) => (resolveAccepted = resolve))
    const listener = await listenDask({ host: '127.0.0.1' }, (c) => resolveAccepted(c))
    const a = await connectDask(listener.address)
    const b = await accepted
    return {
      a, b,
      flushed: async () => {},
      dispose: async () => {
        await Promise.all([a.close(), b.close()])
        await listener.close()
      },
    }
  },
}

// Each carrier's ends meet the End interface as they are: no adapter between the contract and them.
const _typed: [End, End, End, End] = [
  null as unknown as ReturnType<typeof openChannel>, null as unknown as ReturnType<typeof openPipe>,
  null as unknown as PickleSocket, null as unknown as DaskComm,
]
void _typed

for (const carrier of [channel, pipe, socket, dask]) {
  t.test(carrier.name, async (t) => {
    for (const scenario of scenarios) {
      await t.test(scenario.name, async (t) => {
        const pair = await carrier.pair()
        try {
          await scenario.run(t, carrier, pair)
        } finally {
          await pair.dispose()
        }
      })
    }
  })
}
