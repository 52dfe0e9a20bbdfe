/**
 * Heartbeats: a ping every `interval` ms; if neither the pong nor any other frame arrives
 * within `timeout` ms of a ping, the peer is declared dead. Timers are unref'd: a heartbeat
 * never keeps a process alive by itself.
 */
import type { WebSocket } from 'ws'

export class Heartbeat {
  #every: NodeJS.Timeout | null = null
  #deadline: NodeJS.Timeout | null = null

  constructor(
    private readonly ws: WebSocket,
    private readonly interval: number,
    private readonly timeout: number,
    private readonly onTimeout: () => void,
  ) {}

  start(): void {
    if (this.interval === 0 || this.#every !== null) return
    this.#every = setInterval(() => this.#ping(), this.interval).unref()
  }

  /** Any frame from the peer shows it is alive. */
  alive(): void {
    if (this.#deadline !== null) {
      clearTimeout(this.#deadline)
      this.#deadline = null
    }
  }

  stop(): void {
    if (this.#every !== null) clearInterval(this.#every)
    this.#every = null
    this.alive()
  }

  #ping(): void {
    if (this.#deadline !== null) return // still waiting for the previous one
    this.#deadline = setTimeout(() => {
      this.#deadline = null
      this.stop()
      this.onTimeout()
    }, this.timeout).unref()
    try {
      this.ws.ping()
    } catch {
      // not open (any more): the close handler stops the heartbeat
    }
  }
}
