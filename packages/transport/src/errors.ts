/**
 * The transport's error classes. Every failure a carrier reports is a TransportError with a
 * stable code, so that callers can tell a closed channel from a refused message.
 */
export type TransportErrorCode =
  | 'PROTOCOL'        // the peer broke the wire protocol: bad header, wrong version, frames out of order
  | 'LIMIT'           // a message, buffer count or buffer size over a configured limit
  | 'CLOSED'          // the channel or connection closed (or the peer died) before the message completed
  | 'AUTH'            // message authentication failed
  | 'TIMEOUT'         // an operation did not complete in time
  | 'CAPACITY'        // a buffer cannot fit the shared arena at all
  | 'REMOTE'          // the other side reported an error (a failing task, a remote exception)

export class TransportError extends Error {
  constructor(readonly code: TransportErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'TransportError'
  }
}

/**
 * A value that came from the peer, for an error message: JSON where it can be (a bigint as
 * 10n, a Map as the object of its entries), cut to 80 characters, and never an exception of
 * its own, whatever the value is.
 */
export function shown(value: unknown): string {
  let text: string | undefined
  try {
    text = typeof value === 'bigint' ? `${value}n` : JSON.stringify(value, (_key, v: unknown) => {
      if (typeof v === 'bigint') return `${v}n`
      if (v instanceof Map) return Object.fromEntries([...v].map(([k, x]) => [typeof k === 'string' ? k : shown(k), x]))
      return v
    })
  } catch {
    text = undefined
  }
  if (text === undefined) {
    try {
      text = typeof value === 'object' && value !== null ? Object.prototype.toString.call(value) : String(value)
    } catch {
      text = typeof value
    }
  }
  return text.length > 80 ? `${text.slice(0, 77)}...` : text
}

/** Values from receive() until it fails with CLOSED: the end of a carrier's async iteration. */
export async function* receiveUntilClosed<T>(receive: () => Promise<T>): AsyncGenerator<T> {
  for (;;) {
    try {
      yield await receive()
    } catch (err) {
      if (err instanceof TransportError && err.code === 'CLOSED') return
      throw err
    }
  }
}
