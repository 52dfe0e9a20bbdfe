/** What a call throws, as the transport's error code: its code, a note when it is another error, undefined when it returns. */
import { TransportError } from '@picklewire/transport'

export function thrownCode(fn: () => unknown): string | undefined {
  try {
    fn()
  } catch (err) {
    return err instanceof TransportError ? err.code : `not a TransportError: ${String(err)}`
  }
  return undefined
}
