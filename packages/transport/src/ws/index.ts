/** The WebSocket carrier: picklewire messages over ws, client and server. */
export { PickleSocket, type CloseInfo, type MessageInfo, type RequestOptions, type SendOptions } from './socket.js'
export { connectPickleSocket, type ConnectOptions } from './client.js'
export { PickleSocketServer, listenPickleSocket, type ListenOptions } from './server.js'
export {
  DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_HEARTBEAT_TIMEOUT, DEFAULT_HIGH_WATER_MARK, DEFAULT_RECEIVE_HIGH_WATER_MARK,
  type PickleSocketOptions, type RequestHandler, type RequestInfo,
} from './options.js'
export { AUTH_SCHEME, CLOSE, KIND, SUBPROTOCOL } from './constants.js'
export { MAC_BYTES, type Role } from './auth.js'
export {
  MAX_INLINE_PICKLE_BYTES, PROTOCOL_VERSIONS, decodeWireHeader, encodeWireHeader, subprotocolOf, versionOfSubprotocol,
  type WireHeader,
} from './wire.js'
export type { WebSocketStats } from './stats.js'
/** ws's own classes, for raw sockets and for wrapping your own in a PickleSocket without depending on ws yourself. */
export { WebSocket, WebSocketServer } from 'ws'
