/**
 * @picklewire/transport/browser: the WebSocket carrier in a web page, over the browser's own
 * WebSocket, speaking docs/wire-protocol.md with Node's listenPickleSocket or the Python peer's
 * server. It loads no Node built-in, no ws and no piscina; dist/browser/picklewire.js is the
 * same entry as one file, with the codec and msgpackr inside, for pages without a bundler.
 */
export * from '../shared.js'
export { PickleSocket, connectPickleSocket, type BrowserSocketOptions, type CloseInfo, type MessageInfo, type ProgressInfo, type RequestOptions, type SendOptions } from './socket.js'
export { DEFAULT_HIGH_WATER_MARK, type RequestHandler, type RequestInfo } from '../ws/options.js'
export { DEFAULT_CHUNK_BYTES } from '../ws/wire.js'
export { CLOSE, SUBPROTOCOL } from '../ws/constants.js'
export type { WebSocketStats } from '../ws/stats.js'
export type { Role } from '../ws/mac.js'
