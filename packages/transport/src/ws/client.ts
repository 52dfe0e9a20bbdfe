/** The client side: connect to a picklewire WebSocket server. */
import { WebSocket, type ClientOptions } from 'ws'
import { TransportError } from '../errors.js'
import { checkOptions, optionNames } from '../options-check.js'
import { PICKLE_SOCKET_OPTION_NAMES, maxPayloadFor, offeredSubprotocols, resolveOptions, type PickleSocketOptions } from './options.js'
import { PickleSocket } from './socket.js'

export interface ConnectOptions extends PickleSocketOptions {
  /**
   * ws's own client options, passed through: TLS (ca, cert, key, rejectUnauthorized, ...),
   * headers, handshakeTimeout, agent, generateMask. picklewire sets perMessageDeflate: false
   * (compression would copy every tensor), skipUTF8Validation: true (text frames are refused
   * anyway) and maxPayload from the limits; set them here to override.
   */
  ws?: ClientOptions
}

const CONNECT_OPTIONS = optionNames(...PICKLE_SOCKET_OPTION_NAMES, 'ws')

/**
 * Opens a connection (ws:// or wss://) and resolves once it is open. Rejects with
 * TransportError('CLOSED') when the server cannot be reached or refuses the handshake.
 */
export function connectPickleSocket(url: string | URL, options: ConnectOptions = {}): Promise<PickleSocket> {
  checkOptions('connectPickleSocket', options, CONNECT_OPTIONS)
  const { ws: wsOptions, ...rest } = options
  const resolved = resolveOptions(rest, 'connectPickleSocket')
  const ws = new WebSocket(url, offeredSubprotocols(resolved.protocolVersion), {
    perMessageDeflate: false,
    skipUTF8Validation: true,
    maxPayload: maxPayloadFor(resolved.limits),
    ...wsOptions,
  })
  const socket = new PickleSocket(ws, 'client', rest)
  return new Promise((resolve, reject) => {
    const onOpen = (): void => {
      ws.off('close', onClose)
      resolve(socket)
    }
    const onClose = (): void => {
      ws.off('open', onOpen)
      const why = socket.error?.message ?? 'the connection closed during the handshake'
      reject(new TransportError('CLOSED', `cannot connect to ${String(url)}: ${why}`, { cause: socket.error ?? undefined }))
    }
    ws.once('open', onOpen)
    ws.once('close', onClose)
  })
}
