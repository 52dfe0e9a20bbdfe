/**
 * The same-host path on Node (docs/wire-protocol.md section 10): buffers of at least
 * sameHostMinBytes travel through files of the sending process, and the WebSocket carries
 * their place, `/proc/<pid>/fd/<fd>` and an offset.
 *
 * Files never have a name that can be left behind: a region is made under /dev/shm (or the
 * temporary directory) with O_EXCL and mode 0600 and unlinked at once; only its descriptor
 * keeps it, so the kernel frees it when this process closes it or dies.
 *
 * Each direction proves itself once, right after the connection opens: the side that wants to
 * receive this way (this one, when sameHost is on) sends `shm-challenge <path> copy`, naming a
 * region holding 32 random bytes; the peer answers `shm-proof <hex> <pid>` when it could read
 * them, and this side `shm-accept` when they match. Only then does the peer place buffers, and
 * only in files of the pid it proved. This side answers the peer's challenge the same way, and
 * places its own buffers once the peer accepted.
 *
 * Node copies what it receives (one fs.readSync per piece into an ArrayBuffer: a new one, or one
 * the application recycled), so it tells
 * the peer `copy`; a sender whose peer copies reuses its regions once `shm-done <id>` came (the
 * pages exist already), and one whose peer maps once `shm-free <id>` came (every mapping of
 * the message's file is gone); until then it makes new regions.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto'
import { closeSync, constants, existsSync, fstatSync, openSync, readSync, readlinkSync, unlinkSync, writeSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { TransportError, shown } from '../errors.js'
import type { BufferPart } from '../message.js'
import type { WebSocketStats } from './stats.js'
import type { MessageHeader } from './wire.js'
import {
  CHALLENGE_BYTES, PLACE_ALIGNMENT, challengeFrame, doneFrame, parseSameHostFrame, placesOf, proofFrame,
  type BufferPlace, type ReceiveMode, type SameHostReader, type SameHostWriter,
} from './same-host-frames.js'

/** Reads and writes go in pieces of at most this many bytes (Linux moves at most about 2 GiB per call). */
const PIECE_BYTES = 2 ** 30

/** Regions awaiting `shm-done` at most; beyond that, buffers go as frames until one is done. */
export const MAX_OUTSTANDING_REGIONS = 8

/** Regions a sender keeps for reuse, at most. */
const MAX_FREE_REGIONS = 2

/** Regions a sender keeps open while a mapping peer still maps them (awaiting shm-free), at most; beyond, the oldest is closed. */
const MAX_MAPPED_REGIONS = 4

/** Messages whose shm-free a sender remembers awaiting, at most: beyond, the oldest is forgotten (its shm-free is then taken without a check). */
const MAX_AWAITING_FREE = 4096

/** What the link of a file this side reads names: a picklewire region or challenge, unlinked. */
const REGION_LINK = /(^\/memfd:picklewire|\/picklewire-[^/]*) \(deleted\)$/

/** True where the same-host path can work: Linux, with /proc. */
export function sameHostAvailable(): boolean {
  return process.platform === 'linux' && existsSync('/proc/self/fd')
}

interface Region {
  fd: number
  path: string
  /** Bytes written into it at most so far (its file size). */
  size: number
}

/** A new region: a file with no name, readable by this user only. */
function makeRegion(): Region {
  const dir = existsSync('/dev/shm') ? '/dev/shm' : tmpdir()
  const name = join(dir, `picklewire-${process.pid}-${randomBytes(8).toString('hex')}`)
  const fd = openSync(name, 'wx+', 0o600)
  try {
    unlinkSync(name)
  } catch (err) {
    closeSync(fd)
    throw err
  }
  return { fd, path: `/proc/${process.pid}/fd/${fd}`, size: 0 }
}

function closeQuietly(fd: number): void {
  try {
    closeSync(fd)
  } catch {
    // already closed
  }
}

/**
 * Opens a file another process names (its /proc/<pid>/fd/<fd>) for reading, without blocking
 * on a FIFO or a device, and checks that it is a picklewire region: a regular file without a
 * name whose link names a picklewire file or memfd. Returns the descriptor and the file's size.
 */
function openRegion(path: string, what: string): { fd: number; size: number } {
  let fd: number
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    const why = code === 'ENOENT' ? 'it is gone: the sending process exited or closed it' : `it cannot be opened (${code ?? String(err)})`
    throw new TransportError('PROTOCOL', `the file of ${what} (${path}): ${why}`, { cause: err })
  }
  try {
    const st = fstatSync(fd)
    let link = ''
    try {
      link = readlinkSync(`/proc/self/fd/${fd}`)
    } catch {
      // no link to read: not a region
    }
    if (!st.isFile() || st.nlink !== 0 || !REGION_LINK.test(link)) {
      throw new TransportError('PROTOCOL', `the file of ${what} (${path}) is not a picklewire region (an unlinked regular file or memfd named picklewire), got ${shown(link)}`)
    }
    return { fd, size: st.size }
  } catch (err) {
    closeSync(fd)
    throw err
  }
}

type ProofState = 'none' | 'proved' | 'accepted' | 'refused'

export class SameHostLink implements SameHostReader, SameHostWriter {
  /** This side's challenge region while its answer is awaited, and its bytes. */
  #challenge: { region: Region; secret: Buffer } | null = null
  /** The pid the peer proved: places of buffers this side receives must be in its files. */
  #provenPid: number | null = null
  /** Whether the peer challenged this side yet, and how this side's proof fared. */
  #challenged = false
  #proof: ProofState = 'none'
  #peerMode: ReceiveMode = 'copy'
  /** Regions named in messages whose shm-done has not come, by message id. */
  readonly #outstanding = new Map<number, Region>()
  readonly #free: Region[] = []
  /**
   * A mapping peer's messages whose shm-done came and whose shm-free has not, oldest first: the
   * region, kept for reuse once freed, or null when it was closed (too many kept).
   */
  readonly #awaitingFree = new Map<number, Region | null>()
  /** Ids up to this were forgotten from #awaitingFree (MAX_AWAITING_FREE): their shm-free is not checked. */
  #forgottenBelow = 0
  /** Called once no region awaits its shm-done (or the link closed). */
  #drainWaiters: (() => void)[] = []
  #closed = false

  /**
   * @param enabled the sameHost option: challenge the peer, and prove this side when challenged
   * @param minBytes buffers of at least this many bytes go through a file
   * @param send writes a text frame to the peer
   */
  constructor(
    private readonly enabled: boolean,
    private readonly minBytes: number,
    private readonly send: (text: string) => void,
    private readonly stats: WebSocketStats,
  ) {}

  /** True while this side's buffers of at least minBytes go through files (the peer accepted this side's proof). */
  get active(): boolean {
    return this.#proof === 'accepted' && !this.#closed
  }

  /** Sends this side's challenge, when sameHost is on. Call once the connection is open. */
  start(): void {
    if (!this.enabled || this.#closed) return
    let region: Region
    const secret = randomBytes(CHALLENGE_BYTES)
    try {
      region = makeRegion()
      writeSync(region.fd, secret, 0, secret.length, 0)
    } catch {
      return // no file can be made here: buffers come as frames
    }
    this.#challenge = { region, secret }
    this.send(challengeFrame(region.path, 'copy'))
  }

  control(text: string): void {
    const f = parseSameHostFrame(text)
    switch (f.kind) {
      case 'challenge': return this.#onChallenge(f.path, f.mode)
      case 'proof': return this.#onAnswer(text, f.hex, f.pid)
      case 'no': return this.#onAnswer(text, null, 0)
      case 'accept':
      case 'reject':
        if (this.#proof !== 'proved') throw unexpected(text, 'this side sent no proof awaiting an answer')
        this.#proof = f.kind === 'accept' ? 'accepted' : 'refused'
        return
      case 'done': return this.#onDone(f.id)
      case 'free': return this.#onFree(f.id)
    }
  }

  /** The peer challenges this side: prove it can read the peer's file, or say no. */
  #onChallenge(path: string, mode: ReceiveMode): void {
    if (this.#challenged) throw unexpected(`shm-challenge ${path}`, 'the peer already sent its challenge')
    this.#challenged = true
    this.#peerMode = mode
    if (!this.enabled || this.#closed) {
      this.send('shm-no')
      return
    }
    let hex: string | null = null
    try {
      const { fd, size } = openRegion(path, 'the challenge')
      try {
        const secret = Buffer.alloc(CHALLENGE_BYTES)
        if (size === CHALLENGE_BYTES && readSync(fd, secret, 0, CHALLENGE_BYTES, 0) === CHALLENGE_BYTES) hex = secret.toString('hex')
      } finally {
        closeSync(fd)
      }
    } catch {
      // another host, user or pid namespace: no proof
    }
    if (hex === null) {
      this.send('shm-no')
      return
    }
    this.#proof = 'proved'
    this.send(proofFrame(hex, process.pid))
  }

  /** The peer answers this side's challenge: a proof (hex and pid) or no (hex null). */
  #onAnswer(text: string, hex: string | null, pid: number): void {
    const c = this.#challenge
    if (c === null) throw unexpected(text, 'this side has no challenge awaiting an answer')
    this.#challenge = null
    closeQuietly(c.region.fd)
    if (hex === null) return
    const ok = timingSafeEqual(Buffer.from(hex, 'hex'), c.secret)
    if (ok) this.#provenPid = pid
    this.send(ok ? 'shm-accept' : 'shm-reject')
  }

  #onDone(id: number): void {
    const region = this.#outstanding.get(id)
    if (region === undefined) throw unexpected(`shm-done ${id}`, `message ${id} named no file awaiting it`)
    this.#outstanding.delete(id)
    if (this.#peerMode === 'copy') this.#reuse(region)
    else this.#awaitFree(id, region)
    if (this.#outstanding.size === 0) for (const w of this.#drainWaiters.splice(0)) w()
  }

  /** A peer that maps keeps seeing the file until its shm-free: keep the region (a few at most) until then. */
  #awaitFree(id: number, region: Region): void {
    let kept = 0
    for (const r of this.#awaitingFree.values()) if (r !== null) kept++
    if (kept >= MAX_MAPPED_REGIONS) {
      for (const [oldId, r] of this.#awaitingFree) {
        if (r === null) continue
        closeQuietly(r.fd)
        this.#awaitingFree.set(oldId, null)
        break
      }
    }
    this.#awaitingFree.set(id, this.#closed ? null : region)
    if (this.#closed) closeQuietly(region.fd)
    if (this.#awaitingFree.size > MAX_AWAITING_FREE) {
      const [oldId, r] = this.#awaitingFree.entries().next().value as [number, Region | null]
      this.#awaitingFree.delete(oldId)
      if (r !== null) closeQuietly(r.fd)
      this.#forgottenBelow = Math.max(this.#forgottenBelow, oldId)
    }
  }

  #onFree(id: number): void {
    if (!this.#awaitingFree.has(id)) {
      if (id <= this.#forgottenBelow && !this.#outstanding.has(id)) return
      throw unexpected(`shm-free ${id}`, `message ${id} named no file that awaits shm-free (none, its shm-done has not come, or shm-free came already)`)
    }
    const region = this.#awaitingFree.get(id)!
    this.#awaitingFree.delete(id)
    if (region !== null) this.#reuse(region)
  }

  /** The peer no longer reads or maps this region: keep it for a later message (its pages exist), a few at most. */
  #reuse(region: Region): void {
    if (!this.#closed && this.#free.length < MAX_FREE_REGIONS) this.#free.push(region)
    else closeQuietly(region.fd)
  }

  /**
   * Resolves once the peer has read every file named so far (its shm-done came for each), or
   * the link closed: a clean close waits for it, since a file closed earlier would be gone when
   * the peer reaches a message it has not read yet.
   */
  drained(): Promise<void> {
    if (this.#outstanding.size === 0 || this.#closed) return Promise.resolve()
    return new Promise((resolve) => this.#drainWaiters.push(resolve))
  }

  // -- receiving --------------------------------------------------------------------------------

  places(h: MessageHeader): (BufferPlace | null)[] | null {
    return placesOf(h, this.#provenPid)
  }

  read(place: BufferPlace, size: number, what: string, memory: ArrayBuffer, onPiece: (piece: Uint8Array) => void): ArrayBuffer {
    const { fd, size: fileSize } = openRegion(place.path, what)
    try {
      if (fileSize < place.offset + size) {
        throw new TransportError('PROTOCOL', `the file of ${what} (${place.path}) holds ${fileSize} bytes, short of the ${size} announced at offset ${place.offset}`)
      }
      let done = 0
      while (done < size) {
        const piece = new Uint8Array(memory, done, Math.min(PIECE_BYTES, size - done))
        let got = 0
        while (got < piece.byteLength) {
          const n = readSync(fd, piece, got, piece.byteLength - got, place.offset + done + got)
          if (n === 0) throw new TransportError('PROTOCOL', `the file of ${what} (${place.path}) ended after ${done + got} of its ${size} bytes`)
          got += n
        }
        onPiece(piece)
        done += piece.byteLength
      }
      this.stats.buffersSameHostReceived++
      this.stats.bytesSameHostReceived += size
      return memory
    } finally {
      closeSync(fd)
    }
  }

  done(id: number): void {
    if (!this.#closed) this.send(doneFrame(id))
  }

  // -- sending ----------------------------------------------------------------------------------

  place(id: number, buffers: readonly BufferPart[]): ([string, number] | null)[] | null {
    if (!this.active || this.#outstanding.size >= MAX_OUTSTANDING_REGIONS) return null
    let end = 0
    const offsets: number[] = []
    for (const b of buffers) {
      if (b.byteLength >= this.minBytes && b.byteLength > 0) {
        offsets.push(end)
        end += Math.ceil(b.byteLength / PLACE_ALIGNMENT) * PLACE_ALIGNMENT
      } else {
        offsets.push(-1)
      }
    }
    if (end === 0) return null
    let region: Region
    try {
      region = this.#takeFree(end) ?? this.#newRegion()
    } catch {
      return null // no file can be made now: frames
    }
    const sm: ([string, number] | null)[] = []
    try {
      for (let i = 0; i < buffers.length; i++) {
        const at = offsets[i]!
        if (at < 0) {
          sm.push(null)
          continue
        }
        const b = buffers[i]!
        for (let done = 0; done < b.byteLength;) {
          // A window per piece: the buffer may be a DataView longer than any Uint8Array.
          const piece = new Uint8Array(b.buffer, b.byteOffset + done, Math.min(PIECE_BYTES, b.byteLength - done))
          done += writeSync(region.fd, piece, 0, piece.byteLength, at + done)
        }
        sm.push([region.path, at])
      }
    } catch {
      // tmpfs full, say: this message goes as frames
      closeQuietly(region.fd)
      return null
    }
    region.size = Math.max(region.size, end)
    this.#outstanding.set(id, region)
    for (let i = 0; i < buffers.length; i++) {
      if (offsets[i]! < 0) continue
      this.stats.buffersSameHostSent++
      this.stats.bytesSameHostSent += buffers[i]!.byteLength
    }
    return sm
  }

  #newRegion(): Region {
    const region = makeRegion()
    this.stats.filesSameHostMade++
    return region
  }

  /** A kept region for `bytes`: the smallest that holds them (no new pages), else the largest. */
  #takeFree(bytes: number): Region | null {
    if (this.#free.length === 0) return null
    let best = 0
    for (let i = 1; i < this.#free.length; i++) {
      const r = this.#free[i]!, b = this.#free[best]!
      const fits = r.size >= bytes, bestFits = b.size >= bytes
      if ((fits && (!bestFits || r.size < b.size)) || (!fits && !bestFits && r.size > b.size)) best = i
    }
    return this.#free.splice(best, 1)[0]!
  }

  unplace(id: number): void {
    const region = this.#outstanding.get(id)
    if (region === undefined) return
    this.#outstanding.delete(id)
    closeQuietly(region.fd)
    if (this.#outstanding.size === 0) for (const w of this.#drainWaiters.splice(0)) w()
  }

  /** Closes every file this side holds open for the connection (it closed or failed). */
  close(): void {
    this.#closed = true
    if (this.#challenge !== null) closeQuietly(this.#challenge.region.fd)
    this.#challenge = null
    for (const r of this.#outstanding.values()) closeQuietly(r.fd)
    this.#outstanding.clear()
    for (const r of this.#free.splice(0)) closeQuietly(r.fd)
    for (const r of this.#awaitingFree.values()) if (r !== null) closeQuietly(r.fd)
    this.#awaitingFree.clear()
    for (const w of this.#drainWaiters.splice(0)) w()
  }
}

function unexpected(text: string, why: string): TransportError {
  return new TransportError('PROTOCOL', `an unexpected same-host frame ${shown(text.slice(0, 100))}: ${why}`)
}
