/**
 * Message authentication: HMAC-SHA256 with a shared key over every frame of a message, each
 * preceded by its length, after a label naming the sending side (so that a message cannot be
 * reflected back to its sender). The 32-byte MAC travels as the message's last frame.
 *
 *   MAC = HMAC-SHA256(key, F(label) || F(header) || F(pickle) || F(buffer 0) || ...)
 *   F(x) = u64le(length of x) || x          label = "picklewire.v1 client" | "picklewire.v1 server"
 */
import { createHmac, timingSafeEqual, type Hmac } from 'node:crypto'

export type Role = 'client' | 'server'

export const MAC_BYTES = 32

const LABELS: Record<Role, Buffer> = {
  client: Buffer.from('picklewire.v1 client'),
  server: Buffer.from('picklewire.v1 server'),
}

/** The MAC of one message, fed frame by frame as the frames are sent or arrive. */
export class FrameMac {
  readonly #hmac: Hmac
  readonly #length = Buffer.alloc(8)

  constructor(key: Uint8Array, sender: Role) {
    this.#hmac = createHmac('sha256', key)
    this.update(LABELS[sender])
  }

  update(frame: Uint8Array): void {
    this.begin(frame.byteLength)
    this.#hmac.update(frame)
  }

  /** A part of `length` bytes follows in pieces (a version 3 buffer in chunks): F(part) fed piece by piece. */
  begin(length: number): void {
    this.#length.writeBigUInt64LE(BigInt(length))
    this.#hmac.update(this.#length)
  }

  /** The next piece of the part begun last. */
  data(piece: Uint8Array): void {
    this.#hmac.update(piece)
  }

  digest(): Buffer {
    return this.#hmac.digest()
  }

  /** True when `mac` is this message's MAC (compared in constant time). */
  matches(mac: Uint8Array): boolean {
    const expected = this.digest()
    return mac.byteLength === expected.byteLength && timingSafeEqual(expected, mac)
  }
}
