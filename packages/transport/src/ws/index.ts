/** The WebSocket carrier: picklewire messages over ws, client and server. */
export * from '../shared.js'
export { PickleSocket, type CloseInfo, type MessageInfo, type ProgressInfo, type RequestOptions, type SendOptions } from './socket.js'
export { connectPickleSocket, type ConnectOptions } from './client.js'
export { PickleSocketServer, listenPickleSocket, type ListenOptions } from './server.js'
export {
  DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_HEARTBEAT_TIMEOUT, DEFAULT_HIGH_WATER_MARK, DEFAULT_RECEIVE_HIGH_WATER_MARK, DEFAULT_RECYCLE_BYTES, DEFAULT_SAME_HOST_MIN_BYTES,
  type PickleSocketOptions, type RequestHandler, type RequestInfo,
} from './options.js'
export { CLOSE, SUBPROTOCOL } from './constants.js'
export type { Role } from './auth.js'
export type { WebSocketStats } from './stats.js'
/** ws's own classes, for raw sockets and for wrapping your own in a PickleSocket without depending on ws yourself. */
export { WebSocket, WebSocketServer } from 'ws'
