/**
 * Message authentication as the protocol core sees it, with no crypto of its own: HMAC-SHA256
 * with a shared key over every frame of a message, each preceded by its length, after a label
 * naming the sending side (so that a message cannot be reflected back to its sender). The
 * 32-byte MAC travels as the message's last frame.
 *
 *   MAC = HMAC-SHA256(key, F(label) || F(header) || F(pickle) || F(buffer 0) || ...)
 *   F(x) = u64le(length of x) || x          label = "picklewire.v1 client" | "picklewire.v1 server"
 *
 * The receiver and the sender feed a MessageMac frame by frame; an implementation either hashes
 * as it is fed and answers at once (Node's incremental HMAC, auth.ts) or keeps the frames and
 * answers with a promise (WebCrypto's one-shot HMAC, browser/hmac.ts).
 */

export type Role = 'client' | 'server'

export const MAC_BYTES = 32

/** The label each side's messages are authenticated under. */
export const MAC_LABELS: Readonly<Record<Role, string>> = Object.freeze({
  client: 'picklewire.v1 client',
  server: 'picklewire.v1 server',
})

/** The MAC of one message, fed frame by frame as the frames are sent or arrive. */
export interface MessageMac {
  /** F(frame): a whole part. */
  update(frame: Uint8Array): void
  /** A part of `length` bytes follows in pieces (a version 3 buffer in chunks). */
  begin(length: number): void
  /** The next piece of the part begun last. */
  data(piece: Uint8Array): void
  /** The MAC of everything fed: now, or (an implementation that signs in one go) later. */
  digest(): Uint8Array | Promise<Uint8Array>
  /** Whether `mac` is this message's MAC (compared in constant time where the answer is synchronous). */
  matches(mac: Uint8Array): boolean | Promise<boolean>
}

/** Makes the MAC of one message sent by `sender`, under the connection's key. */
export type MacFactory = (sender: Role) => MessageMac

/** F(x)'s length prefix: the part's length as 8 bytes, little-endian. */
export function lengthPrefix(length: number, into: Uint8Array = new Uint8Array(8)): Uint8Array {
  let n = length
  for (let i = 0; i < 8; i++) {
    into[i] = n % 256
    n = Math.floor(n / 256)
  }
  return into
}
