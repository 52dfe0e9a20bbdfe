/** The server side: accept picklewire connections on a ws WebSocketServer. */
import { EventEmitter } from 'node:events'
import type { IncomingMessage, Server as HttpServer } from 'node:http'
import type { Server as HttpsServer } from 'node:https'
import type { AddressInfo } from 'node:net'
import { WebSocketServer, type ServerOptions as WsServerOptions } from 'ws'
import { CLOSE } from './constants.js'
import { checkOptions, optionNames } from '../options-check.js'
import { PICKLE_SOCKET_OPTION_NAMES, maxPayloadFor, resolveOptions, selectSubprotocol, type PickleSocketOptions } from './options.js'
import { PickleSocket } from './socket.js'

export interface ListenOptions extends PickleSocketOptions {
  /** Interface to listen on when picklewire makes the HTTP server. Default '127.0.0.1'. */
  host?: string
  /** Port to listen on when picklewire makes the HTTP server; 0 picks a free one. Default 0. */
  port?: number
  /**
   * An HTTP or HTTPS server of your own to attach to (wss: pass an https.Server); you listen()
   * on it. When given, host and port are not used.
   */
  server?: HttpServer | HttpsServer
  /** Only accept connections on this path. Default: any path. */
  path?: string
  /**
   * ws's own server options, passed through (verifyClient, maxPayload, backlog, ...).
   * picklewire sets perMessageDeflate: false, skipUTF8Validation: true and maxPayload from the
   * limits, and selects the newest picklewire subprotocol a client offers (picklewire.v3, .v2,
   * else .v1; up to the protocolVersion option).
   */
  ws?: WsServerOptions
}

interface ServerEvents {
  connection: [socket: PickleSocket, request: IncomingMessage]
  error: [err: Error]
}

export class PickleSocketServer extends EventEmitter<ServerEvents> {
  /** The connections that are open now. */
  readonly sockets = new Set<PickleSocket>()

  constructor(readonly wss: WebSocketServer, private readonly secure: boolean, options: PickleSocketOptions) {
    super()
    wss.on('connection', (ws, req) => {
      const socket = new PickleSocket(ws, 'server', options)
      this.sockets.add(socket)
      void socket.closed.then(() => this.sockets.delete(socket))
      this.emit('connection', socket, req)
    })
    wss.on('error', (err) => {
      if (this.listenerCount('error') > 0) this.emit('error', err)
    })
  }

  /** The address the server listens on. */
  address(): AddressInfo {
    const a = this.wss.address()
    if (a === null || typeof a === 'string') throw new Error('the server is not listening on a TCP port')
    return a
  }

  /** ws://host:port/ (wss:// on an HTTPS server), to hand to connectPickleSocket. */
  get url(): string {
    const { address, family, port } = this.address()
    const host = family === 'IPv6' ? `[${address}]` : address
    return `${this.secure ? 'wss' : 'ws'}://${host}:${port}/`
  }

  /** Closes every connection (1001, going away) and stops listening. */
  async close(): Promise<void> {
    await Promise.all([...this.sockets].map((s) => s.close(CLOSE.goingAway, 'server closing')))
    await new Promise<void>((resolve) => this.wss.close(() => resolve()))
  }
}

const LISTEN_OPTIONS = optionNames(...PICKLE_SOCKET_OPTION_NAMES, 'host', 'port', 'server', 'path', 'ws')

/** Starts a server and resolves once it listens (with your own `server`, at once: you listen() on it). */
export async function listenPickleSocket(options: ListenOptions = {}): Promise<PickleSocketServer> {
  checkOptions('listenPickleSocket', options, LISTEN_OPTIONS)
  const { host = '127.0.0.1', port = 0, server, path, ws: wsOptions, ...rest } = options
  const resolved = resolveOptions(rest, 'listenPickleSocket')
  const wss = new WebSocketServer({
    ...(server ? { server } : { host, port }),
    ...(path !== undefined ? { path } : {}),
    perMessageDeflate: false,
    skipUTF8Validation: true,
    maxPayload: maxPayloadFor(resolved.limits),
    handleProtocols: (protocols) => selectSubprotocol(protocols, resolved.protocolVersion),
    ...wsOptions,
  })
  const secure = server !== undefined && 'setSecureContext' in server
  const pickleServer = new PickleSocketServer(wss, secure, rest)
  if (server === undefined) {
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error): void => reject(err)
      wss.once('error', onError)
      wss.once('listening', () => {
        wss.off('error', onError)
        resolve()
      })
    })
  }
  return pickleServer
}
