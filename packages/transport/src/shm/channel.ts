/**
 * A channel between two threads, both ways, as MessageChannel is: createChannel() makes two
 * ends, one is posted to the other thread (with its port in the transfer list) and opened
 * there. Each direction has its own arena and record ring, so a side waiting for room never
 * waits on its own messages: with both sides receiving while they send, there is no deadlock.
 *
 * Signalling ('atomics', the default, or 'port'): with 'atomics' records go through the
 * shared ring and a receiver wakes on Atomics.waitAsync; with 'port' records are posted on the
 * MessagePort and a window of unreceived messages bounds the port's queue. Either way the
 * buffers stay in the arena, and the port is how a side learns that the other one is gone.
 *
 * When the other side's thread dies (worker.terminate(), process.exit, an uncaught error),
 * this side takes the messages it had fully sent, frees every block the dead side held or
 * had queued, and then pending and later receives fail with TransportError('CLOSED').
 */
import type { MessagePort } from 'node:worker_threads'
import { MessageChannel } from 'node:worker_threads'
import type { PickleBuffer } from '@picklewire/codec'
import { TransportError } from '../errors.js'
import { DEFAULT_ARENA_BYTES } from './arena.js'
import { checkOptions, optionNames } from '../options-check.js'
import { Endpoint, checkEndpointOptions, type Draft, type EndpointOptions, type Outgoing, type ShmStats } from './endpoint.js'
import { RingLink, createPipeMemory, openPipeMemory, type PipeMemory } from './link.js'
import { THREAD_OWNER, type ArenaStats, type PipeMemoryOptions, type TypedArrayConstructor } from './pipe.js'
import type { Held, Received } from './received.js'
import { FLAG_TRANSFERS, KIND_IN_BLOCK, readId, readPrefix, readU32, type RecordPrefix } from './record.js'
import { DEFAULT_RING_BYTES } from './ring.js'
import { Turns } from './turns.js'
import { WAIT_OPTIONS, WAIT_OPTION_NAMES, checkWait, deadlineOf, waitingFrom, type WaitOptions, type Waiting } from './wait.js'

export type Signalling = 'atomics' | 'port'

/** The default signalling, chosen by bench/shm.mjs (docs/shared-memory.md has the numbers). */
export const DEFAULT_SIGNALLING: Signalling = 'atomics'
/** Port signalling: messages posted and not yet received before send waits. Default 1,024. */
export const DEFAULT_WINDOW = 1024

export interface ChannelOptions extends PipeMemoryOptions {
  /** How records travel and receivers wake: 'atomics' (shared ring, Atomics.waitAsync) or 'port' (MessagePort). Default 'atomics'. */
  signalling?: Signalling
  /** With 'port': most messages posted and not yet received. Default 1,024. */
  window?: number
}

/** One end of a channel, as createChannel makes it: post it to its thread with `transferList: [init.port]`. */
export interface ChannelInit {
  type: 'picklewire/channel'
  side: 0 | 1
  sabs: [SharedArrayBuffer, SharedArrayBuffer]
  ringBytes: number
  signalling: Signalling
  window: number
  port: MessagePort
}

export interface ChannelSendOptions extends WaitOptions {
  /**
   * ArrayBuffers the receiver may take over: a buffer over one of them is transferred (no
   * copy; the sender's ArrayBuffer is detached) instead of being copied into the arena.
   */
  transfer?: readonly ArrayBuffer[]
}

export interface ChannelStats extends ShmStats {
  /** Arena bytes freed on behalf of a dead peer. */
  bytesReclaimed: number
  /**
   * Messages this side sent (counted in messagesSent) that the other side's application was
   * never handed, because it closed or died first; known once `closed` has settled, 0 before.
   * messagesSent - messagesUndelivered is what the other side received.
   */
  messagesUndelivered: number
  /** The arena this side sends into and the one it receives from. */
  arenas: { out: ArenaStats; in: ArenaStats }
}

const queuedFor = (direction: number): number => -1 - direction

const CHANNEL_OPTIONS = optionNames('capacity', 'ringBytes', 'signalling', 'window')
const SEND_OPTIONS = optionNames(...WAIT_OPTION_NAMES, 'transfer')

export function createChannel(options: ChannelOptions = {}): { port1: ChannelInit; port2: ChannelInit } {
  checkOptions('createChannel', options, CHANNEL_OPTIONS)
  const signalling = options.signalling ?? DEFAULT_SIGNALLING
  if (signalling !== 'atomics' && signalling !== 'port') throw new TypeError(`signalling must be 'atomics' or 'port', got ${String(signalling)}`)
  const window = options.window ?? DEFAULT_WINDOW
  if (!Number.isSafeInteger(window) || window < 1 || window > 2 ** 30) throw new TypeError(`window must be a positive integer, got ${String(window)}`)
  // With port signalling the ring carries no records, only the counters and the closed flag.
  const ringBytes = signalling === 'port' ? 256 : options.ringBytes ?? DEFAULT_RING_BYTES
  const capacity = options.capacity ?? DEFAULT_ARENA_BYTES
  const sabs: [SharedArrayBuffer, SharedArrayBuffer] = [createPipeMemory(capacity, ringBytes), createPipeMemory(capacity, ringBytes)]
  const { port1, port2 } = new MessageChannel()
  const common = { type: 'picklewire/channel' as const, sabs, ringBytes, signalling, window }
  return { port1: { ...common, side: 0, port: port1 }, port2: { ...common, side: 1, port: port2 } }
}

export function openChannel(init: ChannelInit, options: EndpointOptions = {}): Channel {
  if (init?.type !== 'picklewire/channel') throw new TypeError('openChannel needs one end of what createChannel returned')
  if (init.side !== 0 && init.side !== 1) throw new TypeError(`a channel end's side is 0 or 1, got ${String(init.side)}`)
  checkEndpointOptions('openChannel', options)
  return new Channel(init, options)
}

type InboxEntry = { record: Uint8Array; prefix: RecordPrefix; held: Held[]; transfers: ArrayBuffer[] } | { error: unknown }

/** Records read from the ring at once, at most. */
const READ_BATCH = 256

type State = 'open' | 'closed' | 'peer-closed' | 'peer-dying' | 'peer-dead'

export class Channel {
  /** This thread's open channels, marked when the thread exits (see #threadExiting). */
  static readonly #open = new Set<Channel>()
  static #hooked = false

  /**
   * Runs as this thread exits, whatever the cause except worker.terminate() (which runs no
   * more JavaScript): each open end tells its other side in shared memory, so that a send
   * there fails at once rather than when the thread's teardown closes the port, which takes
   * from a few to hundreds of milliseconds on a busy machine.
   */
  static #threadExiting(): void {
    for (const ch of Channel.#open) {
      ch.#out.memory.ring.markExited()
      ch.#in.memory.ring.wakeAll()
    }
  }

  readonly side: 0 | 1
  readonly signalling: Signalling
  readonly #mem: [PipeMemory, PipeMemory]
  readonly #endpoint: Endpoint
  readonly #out: RingLink
  readonly #in: RingLink
  readonly #port: MessagePort
  readonly #window: number
  #state: State = 'open'
  readonly #inbox: (InboxEntry | Promise<InboxEntry>)[] = []
  readonly #transfers = new Map<number, ArrayBuffer[]>()
  readonly #wakers = new Set<() => void>()
  readonly #inflight = new Set<Promise<unknown>>()
  /** Sends that could not go at once, in send order. */
  readonly #sends = new Turns('send')
  /** Receives that found no message ready, in call order. */
  readonly #receives = new Turns('receive')
  #waiting = 0
  #bytesReclaimed = 0
  #undelivered = 0
  readonly #closed: Promise<void>
  #resolveDone!: () => void
  #isClosed = false
  #closedWatched = false
  #error: TransportError | null = null

  constructor(init: ChannelInit, options: EndpointOptions = {}) {
    checkEndpointOptions('Channel', options)
    this.side = init.side
    this.signalling = init.signalling
    this.#window = init.window
    this.#mem = [openPipeMemory(init.sabs[0], init.ringBytes), openPipeMemory(init.sabs[1], init.ringBytes)]
    this.#endpoint = new Endpoint([this.#mem[0].arena, this.#mem[1].arena], THREAD_OWNER, options)
    const out = this.side
    const inn = 1 - this.side
    this.#out = new RingLink(this.#endpoint, this.#mem[out]!, out, queuedFor(out))
    this.#in = new RingLink(this.#endpoint, this.#mem[inn]!, inn, queuedFor(inn))
    this.#closed = new Promise((resolve) => {
      this.#resolveDone = () => {
        this.#isClosed = true
        resolve()
      }
    })
    // Two Channels on one end would split its messages between them: the end opens once, in
    // one thread, and a closed end stays closed (its port is closed with it).
    const end = this.#mem[this.side]!.ring.openEnd()
    if (end === 'open') {
      throw new TypeError(`channel end ${this.side} (port${this.side + 1} of createChannel()) is already open; ` +
        'a second Channel on it would split its messages: use the Channel openChannel returned')
    }
    if (end === 'closed') {
      throw new TransportError('CLOSED', `channel end ${this.side} (port${this.side + 1} of createChannel()) was closed; ` +
        'a closed channel does not reopen: make a new one with createChannel()')
    }
    Channel.#open.add(this)
    if (!Channel.#hooked) {
      Channel.#hooked = true
      process.on('exit', Channel.#threadExiting)
    }
    this.#port = init.port
    this.#port.on('message', (msg: unknown) => this.#onPortMessage(msg))
    this.#port.once('close', () => void this.#onPortClose())
    this.#port.unref()
  }

  /** False once this side closed, the other side closed, or the other side died. */
  get open(): boolean {
    return this.#state === 'open' && !this.#in.memory.ring.exited
  }

  /**
   * Resolves (never rejects) once the channel is closed, by either side or by the other side's
   * death. Waiting on it keeps the thread alive until then, as a waiting receive does (an idle
   * channel does not): reading it while the channel is open counts as waiting.
   */
  get closed(): Promise<void> {
    if (!this.#closedWatched && !this.#isClosed) {
      this.#closedWatched = true
      if (this.#waiting++ === 0) this.#port.ref()
      void this.#closed.then(() => {
        if (--this.#waiting === 0 && !this.#portClosed) this.#port.unref()
      })
    }
    return this.#closed
  }

  /** Why the channel closed when that was not a close() of either side (the other side's thread died), else null. */
  get error(): Error | null {
    return this.#error
  }

  // ---- sending ----

  #closedForSend = (): string | null => {
    switch (this.#state) {
      case 'open':
        if (this.#in.memory.ring.exited) return "the other side's thread exited"
        return this.#in.memory.ring.closedBy !== 0 || this.#out.memory.ring.closedBy !== 0 ? 'the other side closed the channel' : null
      case 'closed':
        return 'this side closed the channel'
      case 'peer-closed':
        return 'the other side closed the channel'
      default:
        return "the other side's thread exited"
    }
  }

  #stopIfClosed = (): void => {
    const why = this.#closedForSend()
    if (why !== null) throw new TransportError('CLOSED', why)
  }

  /**
   * Sends a value: each out-of-band buffer goes as it is if it lies in a block this side holds
   * (allocated with alloc, or received), is transferred if its ArrayBuffer is in
   * options.transfer, and is copied once into the arena otherwise. Resolves once the message
   * is queued for the other side; waits while the arena or the ring is full.
   */
  send(value: unknown, options: ChannelSendOptions = {}): Promise<void> {
    let wait: Waiting
    try {
      wait = waitingFrom('Channel.send', options, SEND_OPTIONS)
    } catch (err) {
      return Promise.reject(err)
    }
    if (this.#sends.pending === 0 && this.signalling === 'atomics') {
      // The common case goes through without a promise hop: nothing to wait for, room in the
      // ring. The pickle is lent by the pickler (no output allocated): the record copies it into
      // the ring at once, and a message that has to wait gets its own copy first.
      let draft: Draft | undefined
      let out: Outgoing | undefined
      try {
        this.#stopIfClosed()
        const done = this.#endpoint.draftTransient(value, this.side, { transfer: options.transfer, wait, stop: this.#stopIfClosed }, (d) => {
          draft = d
          if (d.toCopy.length === 0) {
            out = this.#endpoint.finish(d)
            const flags = out.transfers.length > 0 ? FLAG_TRANSFERS : 0
            const bytes = this.#out.tryCommit(out, flags, this.#closedForSend, true)
            if (bytes >= 0) {
              this.#sent(out, flags, bytes)
              return true
            }
          }
          this.#endpoint.keepPickle(d, out)
          return false
        })
        if (done) return Promise.resolve()
      } catch (err) {
        if (out !== undefined) this.#endpoint.abandon(out)
        else if (draft !== undefined) this.#endpoint.release(draft.copies)
        return Promise.reject(err)
      }
      return this.#sendLater(draft!, out, wait) // draft is set by the callback, which ran: dumps succeeded
    }
    if (this.#sends.pending === 0 && this.signalling === 'port') return this.#sendPort(value, options.transfer, wait)
    return this.#sends.take(wait, async () => {
      this.#stopIfClosed()
      await this.#commit(await this.#endpoint.prepare(value, this.side, { transfer: options.transfer, wait, stop: this.#stopIfClosed }), wait)
    })
  }

  /**
   * Port signalling, nothing queued before: pickled, its blocks moved and its record posted at
   * once when nothing has to wait (room in the window, every copy placed, the arena's lock
   * free), as the atomics path does; otherwise the rest waits in line (#sendLater).
   */
  #sendPort(value: unknown, transfer: readonly ArrayBuffer[] | undefined, wait: Waiting): Promise<void> {
    let draft: Draft | undefined
    let out: Outgoing | undefined
    try {
      this.#stopIfClosed()
      draft = this.#endpoint.draft(value, this.side, { transfer, wait, stop: this.#stopIfClosed })
      if (draft.toCopy.length === 0) {
        out = this.#endpoint.finish(draft)
        if (this.#tryPost(out)) return Promise.resolve()
      }
    } catch (err) {
      if (out !== undefined) this.#endpoint.abandon(out)
      else if (draft !== undefined) this.#endpoint.release(draft.copies)
      return Promise.reject(err)
    }
    return this.#sendLater(draft, out, wait)
  }

  /**
   * The rest of a send that could not go at once: in line, the copies placed (waiting for
   * space) if need be, then committed. A send that gives up in line frees its copies.
   */
  #sendLater(d: Draft, out: Outgoing | undefined, wait: Waiting): Promise<void> {
    const drop = (): void => {
      if (out !== undefined) this.#endpoint.abandon(out)
      else this.#endpoint.release(d.copies)
    }
    return this.#sends.take(wait, async () => {
      let ready = out
      if (ready === undefined) {
        await this.#endpoint.fill(d)
        ready = this.#endpoint.finish(d)
      }
      await this.#commit(ready, wait)
    }, drop)
  }

  /** Port signalling: posts the message now if the window has room and the lock is free; false (nothing done) otherwise. */
  #tryPost(out: Outgoing): boolean {
    const { arena, ring } = this.#out.memory
    if (((ring.published - ring.consumed) | 0) >= this.#window) return false
    const record = this.#endpoint.record(out, this.#out.queued)
    if (out.blocks.length > 0) {
      if (!arena.mutex.tryLock(this.#endpoint.id)) return false
      try {
        this.#stopIfClosed()
        this.#endpoint.moveLocked(out, this.side, this.#out.queued)
      } finally {
        arena.mutex.unlock(this.#endpoint.id)
      }
    } else this.#stopIfClosed()
    this.#post(out, record)
    return true
  }

  /** Port signalling: the record goes on the port (its blocks already moved to the other side's queue). */
  #post(out: Outgoing, record: Uint8Array): void {
    this.#port.postMessage({ t: 'm', r: record, tr: out.transfers }, [record.buffer as ArrayBuffer, ...out.transfers])
    this.#out.memory.ring.countPublished()
    this.#endpoint.sent(out, record.length)
  }

  async #commit(out: Outgoing, options: ChannelSendOptions): Promise<void> {
    try {
      if (this.signalling === 'atomics') await this.#commitToRing(out, options)
      else await this.#postToPort(out, options)
    } catch (err) {
      this.#endpoint.abandon(out)
      throw err
    }
  }

  #sent(out: Outgoing, flags: number, bytes: number): void {
    // Posted after the commit: a send that fails to commit transfers nothing. The receiver waits for these.
    if (flags !== 0) this.#port.postMessage({ t: 'tr', id: out.id, tr: out.transfers }, out.transfers)
    this.#endpoint.sent(out, bytes)
  }

  async #commitToRing(out: Outgoing, options: WaitOptions): Promise<void> {
    const flags = out.transfers.length > 0 ? FLAG_TRANSFERS : 0
    const bytes = await this.#out.commit(out, flags, options, this.#closedForSend, true)
    this.#sent(out, flags, bytes)
  }

  async #postToPort(out: Outgoing, options: WaitOptions): Promise<void> {
    const { arena, ring } = this.#out.memory
    const deadline = deadlineOf(options)
    for (;;) {
      const consumed = ring.consumed
      if (((ring.published - consumed) | 0) < this.#window) break
      this.#stopIfClosed()
      checkWait(options, deadline, `waiting for the other side to receive (${this.#window} messages unreceived)`)
      await ring.waitConsumed(consumed, deadline, options.signal)
    }
    const record = this.#endpoint.record(out, this.#out.queued)
    await arena.locked(this.#endpoint.id, () => {
      this.#stopIfClosed()
      this.#endpoint.moveLocked(out, this.side, this.#out.queued)
    })
    this.#post(out, record)
  }

  // ---- receiving ----

  #onPortMessage(msg: unknown): void {
    if (typeof msg !== 'object' || msg === null) return
    const m = msg as { t?: unknown; r?: unknown; tr?: unknown; id?: unknown }
    const transfers = Array.isArray(m.tr) ? (m.tr as unknown[]).filter((x): x is ArrayBuffer => x instanceof ArrayBuffer) : []
    if (m.t === 'm' && m.r instanceof Uint8Array) {
      // Into the inbox in arrival order: the entry itself when the blocks are taken at once
      // (the arena's lock was free), else a promise of it.
      const entry = this.#takePosted(m.r, transfers)
      if (this.#state === 'closed') {
        this.#discard(entry)
        this.#in.memory.ring.countConsumed(this.#window >> 1)
        return
      }
      this.#inbox.push(entry)
      this.#wake()
    } else if (m.t === 'tr' && typeof m.id === 'number') {
      this.#transfers.set(m.id, transfers)
      this.#wake()
    }
  }

  /** Port signalling: a record arrived; its blocks are taken now if their arena's lock is free. */
  #takePosted(record: Uint8Array, transfers: ArrayBuffer[]): InboxEntry | Promise<InboxEntry> {
    let prefix: RecordPrefix
    const taken: (Held | null)[] = []
    try {
      prefix = readPrefix(record)
      for (let k = 0; k < prefix.blocks.length; k++) taken.push(null)
      if (this.#endpoint.tryTake(prefix, taken)) return { record, prefix, held: taken as Held[], transfers }
    } catch (error) {
      return { error }
    }
    return this.#track(this.#endpoint.take(prefix, taken).then((held): InboxEntry => ({ record, prefix, held, transfers }), (error: unknown): InboxEntry => ({ error })))
  }

  #closedForReceive(): string | null {
    switch (this.#state) {
      case 'open':
        // With port signalling the port's close event, after its last message, says the rest.
        return this.signalling === 'atomics' && this.#in.memory.ring.closedBy !== 0 && this.#in.memory.ring.empty ? 'the other side closed the channel' : null
      case 'closed':
        return 'this side closed the channel'
      case 'peer-closed':
        return this.signalling === 'port' || this.#in.memory.ring.empty ? 'the other side closed the channel' : null
      case 'peer-dying':
        return null
      case 'peer-dead':
        return "the other side's thread exited before sending more"
    }
  }

  /**
   * The next message, in send order. Its buffers are views over the arena: release() the
   * message when done (or drop it and let the garbage collector release it). Fails with
   * CLOSED once the channel is closed and every message sent before was received.
   */
  receive<T = unknown>(options: WaitOptions = {}): Promise<Received<T>> {
    let wait: Waiting
    try {
      wait = waitingFrom('Channel.receive', options, WAIT_OPTIONS)
    } catch (err) {
      return Promise.reject(err)
    }
    if (this.#receives.pending === 0) {
      // A message ready now, and no receive before this one: no promise chain, no wait.
      let got: Received<T> | undefined
      try {
        got = this.#receiveNow<T>()
      } catch (err) {
        return Promise.reject(err)
      }
      if (got !== undefined) return Promise.resolve(got)
    }
    return this.#receives.take(wait, () => this.#receiveWaiting<T>(wait))
  }

  /** The next message if one is ready now (read from the ring if need be), else undefined. */
  #receiveNow<T>(): Received<T> | undefined {
    let next = this.#inbox[0]
    if (next === undefined && this.signalling === 'atomics' && (this.#state === 'open' || this.#state === 'peer-closed')) {
      this.#fillFromRing()
      next = this.#inbox[0]
    }
    if (next === undefined || next instanceof Promise) return undefined
    this.#inbox.shift()
    return this.#deliver<T>(next)
  }

  async #receiveWaiting<T>(options: WaitOptions): Promise<Received<T>> {
    const deadline = deadlineOf(options)
    for (;;) {
      const next = this.#inbox.shift()
      if (next !== undefined) return this.#deliver<T>(next instanceof Promise ? await next : next)
      let observed = 0
      if (this.signalling === 'atomics' && (this.#state === 'open' || this.#state === 'peer-closed')) {
        observed = this.#in.memory.ring.published
        if (this.#fillFromRing() > 0) continue
        if (this.#inbox.length > 0) continue
      }
      if (this.#inbox.length > 0) continue
      const why = this.#closedForReceive()
      if (why !== null) throw new TransportError('CLOSED', why)
      checkWait(options, deadline, 'waiting for a message')
      const published = this.signalling === 'atomics' && this.#state === 'open' ? this.#in.memory.ring.waitPublished(observed, deadline, options.signal, false) : null
      // An idle channel does not keep its thread alive; a receive waiting for a message does.
      if (this.#waiting++ === 0) this.#port.ref()
      try {
        await this.#changed(published, deadline, options.signal)
      } finally {
        if (--this.#waiting === 0 && !this.#portClosed) this.#port.unref()
      }
    }
  }

  /**
   * Atomics signalling: moves what the ring holds (up to a batch) into the inbox, in order. The
   * ring has one reader, this side, so reading needs no lock; a record's blocks are taken
   * under their arena's lock, asynchronously when it is busy: such an entry is a promise in
   * the inbox until then. Returns the number of records read.
   */
  #fillFromRing(): number {
    const ring = this.#in.memory.ring
    let n = 0
    for (; n < READ_BATCH; n++) {
      let record: Uint8Array | null
      try {
        record = ring.readLocked(true)
      } catch (error) {
        this.#inbox.push({ error })
        return n + 1
      }
      if (record === null) break
      this.#inbox.push(this.#takeRecord(record))
    }
    return n
  }

  /** The record's entry: at once when it names no block and transfers nothing, else once taken. */
  #takeRecord(record: Uint8Array): InboxEntry | Promise<InboxEntry> {
    let prefix: RecordPrefix
    try {
      prefix = readPrefix(record)
    } catch (error) {
      return { error }
    }
    if ((prefix.flags & FLAG_TRANSFERS) === 0 && prefix.kind !== KIND_IN_BLOCK) {
      if (prefix.blocks.length === 0) return { record, prefix, held: [], transfers: [] }
      // Its blocks are taken now if their arenas' locks are free, else once they are.
      const taken: (Held | null)[] = prefix.blocks.map(() => null)
      try {
        if (this.#endpoint.tryTake(prefix, taken)) return { record, prefix, held: taken as Held[], transfers: [] }
      } catch (error) {
        return { error }
      }
      return this.#track(this.#takeSlow(record, prefix, taken))
    }
    return this.#track(this.#takeSlow(record, prefix))
  }

  async #takeSlow(record: Uint8Array, prefix: RecordPrefix, taken?: (Held | null)[]): Promise<InboxEntry> {
    try {
      if (taken !== undefined) return { record, prefix, held: await this.#endpoint.take(prefix, taken), transfers: [] }
      if (prefix.kind === KIND_IN_BLOCK) {
        // The record is in a block of its own: take it, copy the record out, free the block.
        const [block] = await this.#endpoint.take(prefix)
        const length = readU32(record, prefix.bodyOffset)
        if (length > block!.bytes) throw new TransportError('PROTOCOL', `a record of ${length} bytes does not fit its block of ${block!.bytes}`)
        record = this.#endpoint.arenas[block!.arena]!.view(block!.unit, 0, length).slice()
        this.#endpoint.release([block!])
        prefix = readPrefix(record)
      }
      const held = await this.#endpoint.take(prefix)
      const transfers = prefix.flags & FLAG_TRANSFERS ? await this.#transfersOf(record, prefix, held) : []
      return { record, prefix, held, transfers }
    } catch (error) {
      return { error }
    }
  }

  async #transfersOf(record: Uint8Array, prefix: RecordPrefix, held: Held[]): Promise<ArrayBuffer[]> {
    let id: number
    try {
      id = readId(prefix)
    } catch (err) {
      this.#endpoint.release(held)
      throw err
    }
    for (;;) {
      const tr = this.#transfers.get(id)
      if (tr !== undefined) {
        this.#transfers.delete(id)
        return tr
      }
      if (this.#state === 'peer-dead' || this.#state === 'closed' || (this.#state === 'peer-dying' && this.#portClosed)) {
        this.#endpoint.release(held)
        throw new TransportError('CLOSED', `message ${id} came without the ArrayBuffers it transfers: the other side is gone`)
      }
      // They come on the port, which must keep the thread alive meanwhile.
      if (this.#waiting++ === 0) this.#port.ref()
      try {
        await this.#changed(null, Infinity, undefined)
      } finally {
        if (--this.#waiting === 0 && !this.#portClosed) this.#port.unref()
      }
    }
  }

  #track<T>(p: Promise<T>): Promise<T> {
    this.#inflight.add(p)
    void p.finally(() => this.#inflight.delete(p))
    return p
  }

  #deliver<T>(entry: InboxEntry): Received<T> {
    const ring = this.#in.memory.ring
    ring.countDelivered()
    if (this.signalling === 'port') ring.countConsumed(this.#window >> 1)
    if ('error' in entry) throw entry.error
    return this.#endpoint.decode<T>(entry.record, entry.prefix, entry.held, entry.transfers)
  }

  #discard(entry: InboxEntry | Promise<InboxEntry>): void {
    if (entry instanceof Promise) void entry.then((e) => this.#discard(e))
    else if (!('error' in entry)) this.#endpoint.release(entry.held)
  }

  /** Every message until the channel closes. */
  [Symbol.asyncIterator](): AsyncIterableIterator<Received> {
    let finished = false
    const end = (err: unknown): IteratorResult<Received> => {
      if (err instanceof TransportError && err.code === 'CLOSED') {
        finished = true
        return { value: undefined, done: true }
      }
      throw err
    }
    const value = (received: Received): IteratorResult<Received> => ({ value: received, done: false })
    const it: AsyncIterableIterator<Received> = {
      next: () => {
        if (finished) return Promise.resolve({ value: undefined, done: true })
        if (this.#receives.pending === 0) {
          // As receive(), without its promise when a message is ready.
          try {
            const got = this.#receiveNow<unknown>()
            if (got !== undefined) return Promise.resolve({ value: got, done: false })
          } catch (err) {
            try {
              return Promise.resolve(end(err))
            } catch (e) {
              return Promise.reject(e)
            }
          }
        }
        return this.receive().then(value, end)
      },
      return: (v?: unknown) => {
        finished = true
        return Promise.resolve({ value: v as Received, done: true })
      },
      [Symbol.asyncIterator]: () => it,
    }
    return it
  }

  /** Resolves on the next #wake(), when `also` settles, at the deadline or on abort; leaves nothing behind. */
  #changed(also: Promise<unknown> | null, deadline: number, signal: AbortSignal | undefined): Promise<void> {
    return new Promise((resolve) => {
      let timer: ReturnType<typeof setTimeout> | undefined
      const done = (): void => {
        this.#wakers.delete(done)
        if (timer !== undefined) clearTimeout(timer)
        signal?.removeEventListener('abort', done)
        resolve()
      }
      this.#wakers.add(done)
      if (deadline !== Infinity) timer = setTimeout(done, Math.max(0, deadline - performance.now()))
      if (signal !== undefined) {
        if (signal.aborted) done()
        else signal.addEventListener('abort', done, { once: true })
      }
      also?.then(done, done)
    })
  }

  #wake(): void {
    const w = [...this.#wakers]
    this.#wakers.clear()
    for (const f of w) f()
  }

  // ---- allocation in place ----

  /** Bytes in this side's arena to fill and send without a copy; waits for space. */
  alloc(byteLength: number, options: WaitOptions = {}): Promise<Uint8Array> {
    return this.#endpoint.alloc(this.side, byteLength, options, this.#stopIfClosed)
  }

  /** A TypedArray in this side's arena (64-byte aligned), to fill and send without a copy. */
  allocArray<T>(ctor: TypedArrayConstructor<T>, length: number, options: WaitOptions = {}): Promise<T> {
    return this.#endpoint.allocArray(this.side, ctor, length, options, this.#stopIfClosed)
  }

  /** As alloc, or null at once when the arena has no room now. */
  tryAlloc(byteLength: number): Uint8Array | null {
    return this.#endpoint.tryAlloc(this.side, byteLength)
  }

  /** Frees an allocated (or received) block this side holds; false if the view is not over one. */
  free(view: ArrayBufferView | PickleBuffer): boolean {
    return this.#endpoint.free(view)
  }

  // ---- closing and faults ----

  /**
   * Closes this side: its pending and later receives fail with CLOSED, messages queued for it
   * are released, and the other side receives what this side sent, then CLOSED. Messages this
   * side received stay valid until released.
   */
  async close(): Promise<void> {
    if (this.#state === 'closed') return
    const was = this.#state
    this.#state = 'closed'
    Channel.#open.delete(this)
    this.#out.memory.ring.closeEnd()
    this.#wake()
    const me = this.#endpoint.id
    if (was === 'open' || was === 'peer-closed') {
      for (const link of [this.#in, this.#out]) await link.memory.arena.locked(me, () => link.memory.ring.close(me))
      if (this.signalling === 'atomics') await this.#discardRing()
    }
    // Takes still waiting for a lock finish first: what they take is then released below, before
    // the blocks queued for this side are reclaimed.
    await Promise.allSettled([...this.#inflight])
    for (const e of this.#inbox.splice(0)) this.#discard(e)
    if (was === 'open' || was === 'peer-closed') {
      // Blocks queued for this side that no record will ever name (a port message lost in flight).
      for (const m of this.#mem) {
        await m.arena.locked(me, () => m.arena.reclaimLocked((owner) => owner === this.#in.queued))
      }
    }
    for (const m of this.#mem) m.arena.wakeSpaceWaiters()
    this.#portClosedHere = true
    this.#port.close()
    this.#resolveDone()
  }

  async #discardRing(): Promise<void> {
    while (this.#fillFromRing() > 0) {
      for (const e of this.#inbox.splice(0)) this.#discard(await e)
    }
  }

  #portClosed = false
  /** This side's close() closed the port (the other side may still be running). */
  #portClosedHere = false

  async #onPortClose(): Promise<void> {
    this.#portClosed = true
    // With the other side gone there is nobody to tell of this thread's exit.
    Channel.#open.delete(this)
    const me = this.#endpoint.id
    // Unless this side closed the port, the other side did, or its thread ended. It closes its
    // port only after its own close() left its critical sections, so a lock it still holds now
    // was held by a thread that died inside one (worker.terminate() during its close(), say):
    // nothing will release it. Break it first, whatever this side's state: a close() in
    // progress here would otherwise wait on it for ever.
    if (!this.#portClosedHere) for (const m of this.#mem) m.arena.mutex.breakIfHeldBy((holder) => holder !== me)
    this.#wake()
    if (this.#state === 'closed') return
    const by = this.#in.memory.ring.closedBy || this.#out.memory.ring.closedBy
    // The end's own mark tells a clean close even when both ends live in this thread (same id).
    if (this.#in.memory.ring.endClosed || (by !== 0 && by !== me)) {
      if (this.#state === 'open') this.#state = 'peer-closed'
      this.#wake()
      this.#countUndelivered()
      this.#resolveDone()
      return
    }
    // No close was signalled: the other side's thread is gone (its locks were broken above).
    this.#state = 'peer-dying'
    this.#error = new TransportError('CLOSED', "the other side's thread exited without closing the channel")
    this.#wake()
    await Promise.allSettled([...this.#inflight])
    if (this.signalling === 'atomics') {
      while (this.#fillFromRing() > 0);
      await Promise.allSettled([...this.#inflight])
    }
    // Everything it had sent is taken; whatever else is not this side's was the dead side's.
    for (const m of this.#mem) {
      this.#bytesReclaimed += await m.arena.locked(me, () => {
        m.ring.close(me)
        if (m === this.#out.memory) m.ring.clearLocked()
        return m.arena.reclaimLocked((owner) => owner !== me)
      })
      m.arena.wakeSpaceWaiters()
    }
    if (this.#state === 'peer-dying') this.#state = 'peer-dead'
    this.#wake()
    this.#countUndelivered()
    this.#resolveDone()
  }

  /**
   * Once the other side is gone (its port closed after its last delivery): what this side sent
   * and it was never handed. The counter it keeps wraps at 2^32; fewer than that many
   * messages are ever waiting at once, so the difference modulo 2^32 is exact.
   */
  #countUndelivered(): void {
    const sent = this.#endpoint.stats.messagesSent % 2 ** 32
    this.#undelivered = (sent - this.#out.memory.ring.delivered + 2 ** 32) % 2 ** 32
  }

  /** Frees blocks whose release waited for a lock (releases are otherwise immediate). */
  settle(): Promise<void> {
    return this.#endpoint.settle()
  }

  stats(): ChannelStats {
    const arena = (m: PipeMemory): ArenaStats => ({ capacity: m.arena.capacity, bytesInUse: m.arena.bytesInUse, freeBytes: m.arena.freeBytes })
    return {
      ...this.#endpoint.stats,
      bytesReclaimed: this.#bytesReclaimed,
      messagesUndelivered: this.#undelivered,
      arenas: { out: arena(this.#out.memory), in: arena(this.#in.memory) },
    }
  }
}

