/**
 * Message authentication on Node: HMAC-SHA256 (see mac.ts for what is signed) with node:crypto's
 * incremental HMAC, fed as the frames are sent or arrive, so that a message's MAC is ready, and
 * checked, synchronously at its last frame.
 */
import { createHmac, timingSafeEqual, type Hmac } from 'node:crypto'
import { MAC_LABELS, type MacFactory, type MessageMac, type Role } from './mac.js'

export { MAC_BYTES, type Role } from './mac.js'

const LABELS: Record<Role, Buffer> = {
  client: Buffer.from(MAC_LABELS.client),
  server: Buffer.from(MAC_LABELS.server),
}

/** The MAC of one message, fed frame by frame as the frames are sent or arrive. */
export class FrameMac implements MessageMac {
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

/** The MACs of a connection with this key, or null when it has none (messages are not authenticated). */
export function nodeMacs(key: Uint8Array | null): MacFactory | null {
  return key === null ? null : (sender) => new FrameMac(key, sender)
}
