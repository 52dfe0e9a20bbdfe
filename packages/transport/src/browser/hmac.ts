/**
 * Message authentication in a page: HMAC-SHA256 (see ../ws/mac.ts for what is signed) with
 * WebCrypto. crypto.subtle signs in one call and answers with a promise, so a message's MAC keeps
 * the message's parts as they are fed (references to the frames, no copy) and, at the MAC frame,
 * joins F(label) || F(header) || ... into one buffer and signs or verifies that: one copy of
 * every authenticated message, sent or received. WebCrypto exists only in secure contexts:
 * https pages, and http pages served from localhost or 127.0.0.1.
 */
import { TransportError } from '../errors.js'
import { MAC_LABELS, lengthPrefix, type MacFactory, type MessageMac, type Role } from '../ws/mac.js'

/** The part of WebCrypto this file uses (the package builds without the DOM's types). */
interface HmacSubtle {
  importKey(format: 'raw', key: Uint8Array, algorithm: { name: 'HMAC'; hash: 'SHA-256' }, extractable: false, usages: string[]): Promise<unknown>
  sign(algorithm: 'HMAC', key: unknown, data: Uint8Array): Promise<ArrayBuffer>
  verify(algorithm: 'HMAC', key: unknown, signature: Uint8Array, data: Uint8Array): Promise<boolean>
}

function subtle(): HmacSubtle {
  const s = (globalThis as { crypto?: { subtle?: HmacSubtle } }).crypto?.subtle
  if (s === undefined) {
    throw new TypeError('option key needs WebCrypto (crypto.subtle), which the browser gives only to secure contexts: serve the page over https, or from localhost / 127.0.0.1')
  }
  return s
}

const encoder = new TextEncoder()
const LABELS: Record<Role, Uint8Array> = { client: encoder.encode(MAC_LABELS.client), server: encoder.encode(MAC_LABELS.server) }

/** One message's MAC: its parts kept in order until the MAC frame, then signed in one go. */
class WebCryptoMac implements MessageMac {
  readonly #parts: Uint8Array[] = []
  #bytes = 0

  constructor(readonly key: unknown, readonly s: HmacSubtle, sender: Role) {
    this.update(LABELS[sender])
  }

  #push(part: Uint8Array): void {
    this.#parts.push(part)
    this.#bytes += part.byteLength
  }

  update(frame: Uint8Array): void {
    this.begin(frame.byteLength)
    this.#push(frame)
  }

  begin(length: number): void {
    this.#push(lengthPrefix(length))
  }

  data(piece: Uint8Array): void {
    this.#push(piece)
  }

  /** Everything fed, in one buffer: the copy WebCrypto's one-shot HMAC needs. */
  #joined(): Uint8Array {
    const out = new Uint8Array(this.#bytes)
    let at = 0
    for (const p of this.#parts) {
      out.set(p, at)
      at += p.byteLength
    }
    this.#parts.length = 0
    return out
  }

  digest(): Promise<Uint8Array> {
    const data = this.#joined() // now, so that later changes to the caller's buffers are not signed
    return this.s.sign('HMAC', this.key, data).then((mac) => new Uint8Array(mac))
  }

  matches(mac: Uint8Array): Promise<boolean> {
    return this.s.verify('HMAC', this.key, mac, this.#joined())
  }
}

/**
 * The MACs of a connection with this key (imported into WebCrypto once), or null without a key.
 * Rejects with a TypeError when the page has no WebCrypto.
 */
export async function webCryptoMacs(key: Uint8Array | null): Promise<MacFactory | null> {
  if (key === null) return null
  const s = subtle()
  let cryptoKey: unknown
  try {
    cryptoKey = await s.importKey('raw', key, { name: 'HMAC', hash: 'SHA-256' }, false, ['sign', 'verify'])
  } catch (err) {
    throw new TransportError('AUTH', `WebCrypto refused the HMAC key: ${err instanceof Error ? err.message : String(err)}`, { cause: err })
  }
  return (sender) => new WebCryptoMac(cryptoKey, s, sender)
}
