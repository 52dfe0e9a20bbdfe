/** Counters every picklewire WebSocket keeps, so that tests and dashboards can see copies and waits. */
export interface WebSocketStats {
  /**
   * Messages written to the socket (ws confirmed the write of their last frame) / completed
   * and accepted from the peer.
   */
  messagesSent: number
  messagesReceived: number
  /**
   * Messages whose send() had resolved (they were handed to ws) but whose write failed because
   * the connection was lost: never counted as sent.
   */
  messagesNotWritten: number
  /** Bytes of message frames (header, pickle, buffers, MAC) written / received. */
  bytesSent: number
  bytesReceived: number
  /**
   * WebSocket data frames of those messages sent / received: on a version 2 connection a
   * message without out-of-band buffers (or MAC) is one frame, on version 1 two.
   */
  framesSent: number
  framesReceived: number
  /** Received buffers copied because their view would have been misaligned, and their bytes. */
  alignmentCopies: number
  bytesCopied: number
  /** Bytes handed to ws and not yet written to the socket, now and at most. */
  bufferedBytes: number
  maxBufferedBytes: number
  /** send() calls that had to wait for the high-water mark. */
  sendWaits: number
  /** Times reading was paused because unconsumed messages passed receiveHighWaterMark. */
  receivePauses: number
  /** Times reading was paused because maxConcurrentRequests of the peer's requests were being answered. */
  replyPauses: number
  /**
   * Version 3: messages this side stopped mid-way (a send's signal aborted; a cancel frame
   * told the peer) / the peer stopped mid-way (its cancel frame came) / this side dropped as
   * they arrived (discard()).
   */
  messagesCancelled: number
  messagesCancelledByPeer: number
  messagesDiscarded: number
  /**
   * Version 3, same host: out-of-band buffers that went through a file instead of frames
   * (docs/websocket.md, "Same host"), sent / received, and their bytes. Those bytes are not in
   * bytesSent / bytesReceived, which count frames.
   */
  buffersSameHostSent: number
  buffersSameHostReceived: number
  bytesSameHostSent: number
  bytesSameHostReceived: number
  /**
   * Received buffers (through a same-host file, or assembled from chunks) that filled memory the
   * application handed back with recycle() instead of new memory.
   */
  buffersRecycled: number
  /**
   * Version 3, same host: files this side made for the buffers it sends (a file written again for
   * a later message, once the peer read it or unmapped it, counts once).
   */
  filesSameHostMade: number
}

export function newStats(): WebSocketStats {
  return {
    messagesSent: 0, messagesReceived: 0, messagesNotWritten: 0, bytesSent: 0, bytesReceived: 0, framesSent: 0, framesReceived: 0, alignmentCopies: 0, bytesCopied: 0,
    bufferedBytes: 0, maxBufferedBytes: 0, sendWaits: 0, receivePauses: 0, replyPauses: 0,
    messagesCancelled: 0, messagesCancelledByPeer: 0, messagesDiscarded: 0,
    buffersSameHostSent: 0, buffersSameHostReceived: 0, bytesSameHostSent: 0, bytesSameHostReceived: 0,
    buffersRecycled: 0, filesSameHostMade: 0,
  }
}
