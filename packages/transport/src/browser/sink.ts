/**
 * The browser's WebSocket as the sender's FrameSink. The browser says nothing when a frame is
 * written; it only counts the bytes handed to send() and not yet sent (bufferedAmount). The sink
 * counts the bytes it has handed over, so a frame is written once handed - bufferedAmount has
 * reached its end; while frames wait for that, a timer polls bufferedAmount (every
 * POLL_MS, and sooner after each send).
 */
import type { FrameSink } from '../ws/sender.js'

/** What this package uses of the browser's WebSocket (it builds without the DOM's types). */
export interface BrowserWebSocket {
  binaryType: string
  readonly bufferedAmount: number
  readonly readyState: number
  readonly protocol: string
  readonly url: string
  send(data: string | ArrayBufferView | ArrayBuffer): void
  close(code?: number, reason?: string): void
  onopen: ((event: unknown) => void) | null
  onmessage: ((event: { data: unknown }) => void) | null
  onclose: ((event: { code: number; reason: string; wasClean: boolean }) => void) | null
  onerror: ((event: unknown) => void) | null
}

export const OPEN = 1

/** Milliseconds between two looks at bufferedAmount while frames wait to be written. */
export const POLL_MS = 2

const encoder = new TextEncoder()

interface Waiting {
  /** The count of bytes handed over once this frame was. */
  end: number
  cb: (err?: Error | null) => void
}

export class BrowserSink implements FrameSink {
  #handed = 0
  readonly #waiting: Waiting[] = []
  #timer: ReturnType<typeof setTimeout> | null = null
  readonly #poll = (): void => {
    this.#timer = null
    this.poll()
  }

  constructor(readonly ws: BrowserWebSocket) {}

  send(data: Uint8Array | string, _options: { binary: boolean }, cb?: (err?: Error | null) => void): void {
    if (this.ws.readyState !== OPEN) {
      // The browser drops what is sent on a closing socket without a word: say so.
      if (cb !== undefined) queueMicrotask(() => cb(new Error('the WebSocket is not open')))
      return
    }
    this.ws.send(data)
    this.#handed += typeof data === 'string' ? encoder.encode(data).byteLength : data.byteLength
    if (cb === undefined) return
    this.#waiting.push({ end: this.#handed, cb })
    if (this.#timer === null) this.#timer = setTimeout(this.#poll, 0)
  }

  /** Calls back the frames written by now; polls again while some are not. */
  poll(): void {
    const written = this.#handed - this.ws.bufferedAmount
    const w = this.#waiting
    while (w.length > 0 && w[0]!.end <= written) w.shift()!.cb(null)
    if (w.length > 0 && this.#timer === null && this.ws.readyState === OPEN) this.#timer = setTimeout(this.#poll, POLL_MS)
  }

  /** The socket closed: frames written by now are called back as written, the rest with `err`. */
  closed(err: Error): void {
    if (this.#timer !== null) clearTimeout(this.#timer)
    this.#timer = null
    const written = this.#handed - this.ws.bufferedAmount
    for (const { end, cb } of this.#waiting.splice(0)) cb(end <= written ? null : err)
  }
}
