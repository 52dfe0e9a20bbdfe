"""picklewire over WebSocket: the Python peer.

Speaks the wire protocol of docs/wire-protocol.md (versions 1 and 2) with asyncio, websockets
and msgpack, and nothing else. A message is a msgpack header frame, the pickle frame, then one
binary frame per out-of-band buffer (and a 32-byte HMAC-SHA256 frame when a key is set). On a
version 2 connection (subprotocol picklewire.v2, preferred by both sides) a pickle of up to
16 KiB rides inside the header frame instead, so a message without buffers is one frame.
Values are pickled with protocol 5 and a buffer_callback, so numpy arrays leave as memoryviews
of their own memory, and are loaded with buffers=, so they come back as arrays over the
received frames.

    import asyncio, numpy as np, picklewire_ws as pw

    async def main():
        sock = await pw.connect('ws://127.0.0.1:8765/')
        await sock.send({'frame': np.zeros((480, 640), np.float32)})
        reply = await sock.request({'op': 'mean'})
        async for value in sock:          # values the peer sends, in order
            ...
        await sock.close()

Security: pickle.loads runs whatever a pickle says. Use this module with peers you trust,
authenticate every message with `key=`, or pass a restricted `unpickler` class (see the
"Restricting Globals" section of the pickle documentation).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import pickle
import struct
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import msgpack
from websockets.asyncio.client import connect as _ws_connect
from websockets.asyncio.server import serve as _ws_serve
from websockets.exceptions import ConnectionClosed

__all__ = [
    'PROTOCOL_VERSION', 'LATEST_VERSION', 'PROTOCOL_VERSIONS', 'SUBPROTOCOL', 'subprotocol_of', 'CLOSE', 'Limits', 'DEFAULT_LIMITS', 'Stats', 'TransportError',
    'PickleSocket', 'connect', 'serve', 'encode_value', 'encode_header', 'decode_header',
]

PROTOCOL_VERSION = 1  # version 1: every message has a pickle frame
LATEST_VERSION = 2  # version 2: a small pickle may ride inside the header frame (`pk`)
PROTOCOL_VERSIONS = (2, 1)  # newest first
SUBPROTOCOL = 'picklewire.v1'


def subprotocol_of(version: int) -> str:
    return f'picklewire.v{version}'


def version_of_subprotocol(name: str | None) -> int:
    """The version a handshake selected: 2 for picklewire.v2, else 1 (v1, or no subprotocol)."""
    return 2 if name == subprotocol_of(2) else 1


def _offered(version: int) -> list[str]:
    return [subprotocol_of(v) for v in PROTOCOL_VERSIONS if v <= version]

KIND_MESSAGE, KIND_REQUEST, KIND_REPLY, KIND_ERROR = 'msg', 'req', 'rep', 'err'
KINDS = frozenset((KIND_MESSAGE, KIND_REQUEST, KIND_REPLY, KIND_ERROR))

AUTH_SCHEME = 'hmac-sha256'
MAC_BYTES = 32
ALIGNMENTS = frozenset((1, 2, 4, 8))
MIN_OUT_OF_BAND_BYTES = 1024
MAX_HEADER_BYTES = 64 * 1024
MAX_INLINE_PICKLE_BYTES = 16 * 1024


class CLOSE:
    """Close codes: what this side sends when it fails a connection."""
    NORMAL = 1000
    GOING_AWAY = 1001
    TOO_BIG = 1009
    PROTOCOL = 4400
    AUTH = 4401
    TIMEOUT = 4408
    LIMIT = 4413
    VERSION = 4426


CLEAN_CLOSE_CODES = frozenset((1000, 1001, 1005))
_ERROR_CODE_BY_CLOSE = {
    CLOSE.PROTOCOL: 'PROTOCOL', CLOSE.VERSION: 'PROTOCOL', 1002: 'PROTOCOL', 1003: 'PROTOCOL', 1007: 'PROTOCOL',
    CLOSE.AUTH: 'AUTH', CLOSE.LIMIT: 'LIMIT', CLOSE.TOO_BIG: 'LIMIT', CLOSE.TIMEOUT: 'TIMEOUT',
}


class TransportError(Exception):
    """A carrier failure with a stable code, as in @picklewire/transport:
    PROTOCOL, LIMIT, CLOSED, AUTH, TIMEOUT or REMOTE."""

    def __init__(self, code: str, message: str, *, version_mismatch: bool = False):
        super().__init__(message)
        self.code = code
        self.version_mismatch = version_mismatch

    def close_code(self) -> int:
        if self.code == 'PROTOCOL':
            return CLOSE.VERSION if self.version_mismatch else CLOSE.PROTOCOL
        return {'AUTH': CLOSE.AUTH, 'LIMIT': CLOSE.LIMIT, 'TIMEOUT': CLOSE.TIMEOUT}.get(self.code, 1011)


@dataclass(frozen=True)
class Limits:
    """Checked against each header before a message's frames are read. The defaults are
    @picklewire/transport's DEFAULT_LIMITS."""
    max_message_bytes: int = 2 ** 30
    max_buffers: int = 1024
    max_buffer_bytes: int = 2 ** 30
    max_pickle_bytes: int = 64 * 2 ** 20

    def max_frame_bytes(self) -> int:
        """websockets' max_size: the largest frame these limits allow."""
        return max(MAX_HEADER_BYTES, min(self.max_message_bytes, max(self.max_pickle_bytes, self.max_buffer_bytes)))


DEFAULT_LIMITS = Limits()


@dataclass
class Stats:
    messages_sent: int = 0
    messages_received: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    #: WebSocket data frames of those messages (version 2: one for a message without buffers or MAC)
    frames_sent: int = 0
    frames_received: int = 0
    #: bytes copied on receipt to make writable buffers (writable=True only)
    bytes_copied: int = 0


# -- headers ------------------------------------------------------------------------------------

def encode_header(*, id: int, k: str, p: int, b: list[int], ro: list[bool], re: int | None = None,
                  x: dict[str, Any] | None = None, v: int = PROTOCOL_VERSION, pk: bytes | None = None) -> bytes:
    """A header frame. pk: the pickle itself, inline (version 2; p must be its length)."""
    h: dict[str, Any] = {'v': v, 'id': id, 'k': k, 'p': p, 'b': b, 'ro': ro}
    if re is not None:
        h['re'] = re
    if x:
        h['x'] = x
    if pk is not None:
        h['pk'] = pk
    return msgpack.packb(h, use_bin_type=True)


def _bad(why: str) -> TransportError:
    return TransportError('PROTOCOL', f'bad message header: {why}')


def _uint(v: Any, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0 or v > 2 ** 53 - 1:
        raise _bad(f'{what} must be an unsigned integer, got {v!r}')
    return v


def check_lengths(p: int, b: list[int], limits: Limits) -> None:
    if p > limits.max_pickle_bytes:
        raise TransportError('LIMIT', f'pickle of {p} bytes is over max_pickle_bytes ({limits.max_pickle_bytes})')
    if len(b) > limits.max_buffers:
        raise TransportError('LIMIT', f'{len(b)} buffers is over max_buffers ({limits.max_buffers})')
    total = p
    for n in b:
        if n > limits.max_buffer_bytes:
            raise TransportError('LIMIT', f'buffer of {n} bytes is over max_buffer_bytes ({limits.max_buffer_bytes})')
        total += n
    if total > limits.max_message_bytes:
        raise TransportError('LIMIT', f'message of {total} bytes is over max_message_bytes ({limits.max_message_bytes})')


def decode_header(frame: bytes, limits: Limits, version: int = PROTOCOL_VERSION) -> dict[str, Any]:
    """Decodes and validates a header of a connection of this version (checks 1 to 7 of the
    spec), as @picklewire/transport's decodeWireHeader does. An inline pickle is under 'pk'."""
    if len(frame) > MAX_HEADER_BYTES:
        raise _bad(f'{len(frame)} bytes is too long for a header')
    try:
        raw = msgpack.unpackb(frame, raw=False, strict_map_key=False)
    except Exception as e:  # msgpack raises several types for bad input
        raise _bad(f'not msgpack ({e})') from None
    if not isinstance(raw, dict):
        raise _bad('not a map')
    v = _uint(raw.get('v'), 'v')
    if v != version:
        raise TransportError('PROTOCOL', f'unsupported protocol version {v}; this connection speaks {version}',
                             version_mismatch=True)
    k = raw.get('k', KIND_MESSAGE)
    if not isinstance(k, str) or len(k) > 32:
        raise _bad('k must be a short string')
    lens = raw.get('b', [])
    ro = raw.get('ro', [])
    if not isinstance(lens, list) or not isinstance(ro, list):
        raise _bad('b and ro must be arrays')
    if len(lens) > limits.max_buffers:
        raise TransportError('LIMIT', f'{len(lens)} buffers is over max_buffers ({limits.max_buffers})')
    if len(ro) != len(lens):
        raise _bad(f'{len(lens)} buffer lengths but {len(ro)} read-only flags')
    b = [_uint(n, f'b[{i}]') for i, n in enumerate(lens)]
    for i, f in enumerate(ro):
        if not isinstance(f, bool):
            raise _bad(f'ro[{i}] must be a boolean')
    p = _uint(raw.get('p'), 'p')
    pk = raw.get('pk')
    if pk is not None or 'pk' in raw:
        if version < 2:
            raise _bad('pk (an inline pickle) needs protocol version 2')
        if not isinstance(pk, bytes):
            raise _bad('pk must be binary (msgpack bin)')
        if len(pk) != p:
            raise _bad(f'pk holds {len(pk)} bytes but p announces {p}')
    check_lengths(p, b, limits)
    h = {'v': v, 'id': _uint(raw.get('id'), 'id'), 'k': k, 'p': p, 'b': b, 'ro': ro}
    if pk is not None:
        h['pk'] = pk
    re = raw.get('re')
    if re is not None:
        h['re'] = _uint(re, 're')
    x = raw.get('x')
    if x is not None:
        if not isinstance(x, dict) or not all(isinstance(key, str) for key in x):
            raise _bad('x must be a map with string keys')
        h['x'] = x
    return h


# -- values -------------------------------------------------------------------------------------

def _alignment(itemsize: int) -> int:
    """The alignment a buffer of this element size needs: the largest of 8, 4, 2, 1 dividing it."""
    for a in (8, 4, 2):
        if itemsize % a == 0:
            return a
    return 1


@dataclass
class Parts:
    pickle: bytes
    buffers: list[memoryview]
    readonly: list[bool]
    align: list[int]


def encode_value(value: Any, out_of_band: Callable[[pickle.PickleBuffer], bool] | None = None) -> Parts:
    """Pickles with protocol 5; each out-of-band buffer is a memoryview of the value's own
    memory (no copy). By default buffers of at least 1,024 bytes go out of band."""
    buffers: list[memoryview] = []
    readonly: list[bool] = []
    align: list[int] = []

    def callback(pb: pickle.PickleBuffer) -> bool:
        raw = pb.raw()
        keep = out_of_band(pb) if out_of_band is not None else raw.nbytes >= MIN_OUT_OF_BAND_BYTES
        if not keep:
            return True  # true: serialize in band
        buffers.append(raw)
        readonly.append(raw.readonly)
        with memoryview(pb) as m:
            align.append(_alignment(m.itemsize))
        return False

    data = pickle.dumps(value, protocol=5, buffer_callback=callback)
    return Parts(data, buffers, readonly, align)


class _Mac:
    """HMAC-SHA256 over a label naming the sender, then each frame preceded by its u64le length."""

    def __init__(self, key: bytes, sender: str):
        self._h = hmac.new(key, digestmod=hashlib.sha256)
        self.update(f'picklewire.v1 {sender}'.encode())

    def update(self, frame) -> None:
        self._h.update(struct.pack('<Q', memoryview(frame).nbytes))
        self._h.update(frame)

    def digest(self) -> bytes:
        return self._h.digest()


# -- receiving ----------------------------------------------------------------------------------

@dataclass
class _Message:
    header: dict[str, Any]
    pickle: bytes
    buffers: list[bytes]
    nbytes: int


class _Receiver:
    """header -> pickle -> buffers -> [MAC]: the same state machine as the Node receiver."""
    HEADER, PICKLE, BUFFER, MAC = range(4)

    def __init__(self, limits: Limits, key: bytes | None, peer: str, version: int = PROTOCOL_VERSION):
        self.limits, self.key, self.peer, self.version = limits, key, peer, version
        self.next_id = 1
        self._reset()

    def _reset(self) -> None:
        self.state = self.HEADER
        self.header: dict[str, Any] | None = None
        self.pickle: bytes | None = None
        self.buffers: list[bytes] = []
        self.nbytes = 0
        self.mac: _Mac | None = None
        self.inline = False

    @property
    def in_message(self) -> bool:
        return self.state != self.HEADER

    def progress(self) -> str:
        h = self.header
        if h is None:
            return 'between messages'
        first = 1 if self.inline else 2
        frames = first + len(h['b']) + (1 if self.mac else 0)
        got = {self.PICKLE: 1, self.BUFFER: first + len(self.buffers)}.get(self.state, frames - 1)
        return f"in message {h['id']} after {got} of its {frames} frames"

    def push(self, frame: bytes | str) -> _Message | None:
        if isinstance(frame, str):
            raise TransportError('PROTOCOL', f'a text frame {self.progress()}; picklewire sends binary frames only')
        self.nbytes += len(frame)
        if self.state == self.HEADER:
            self._on_header(frame)
            if not self.inline:
                return None
            return self._next()  # the pickle came inline: buffers, the MAC, or the end of the message
        h = self.header
        assert h is not None
        if self.state == self.PICKLE:
            self._expect(frame, h['p'], 'the pickle frame')
            self.pickle = frame
        elif self.state == self.BUFFER:
            i = len(self.buffers)
            self._expect(frame, h['b'][i], f'buffer {i}')
            self.buffers.append(frame)
        else:
            assert self.mac is not None
            if not hmac.compare_digest(self.mac.digest(), frame):
                raise TransportError('AUTH', f"message {h['id']} failed authentication (HMAC-SHA256): its frames were "
                                             'altered, reordered or signed with another key')
            return self._complete()
        if self.mac is not None:
            self.mac.update(frame)
        return self._next()

    def _next(self) -> _Message | None:
        if len(self.buffers) < len(self.header['b']):
            self.state = self.BUFFER
            return None
        if self.mac is not None:
            self.state = self.MAC
            return None
        return self._complete()

    def _on_header(self, frame: bytes) -> None:
        h = decode_header(frame, self.limits, self.version)
        if h['k'] not in KINDS:
            raise TransportError('PROTOCOL', f"message {h['id']} has unknown kind {h['k']!r}")
        if h['id'] != self.next_id:
            raise TransportError('PROTOCOL', f"message id {h['id']} out of sequence: expected {self.next_id} "
                                             '(a message was lost, repeated or reordered)')
        if h['k'] in (KIND_REPLY, KIND_ERROR) and 're' not in h:
            raise TransportError('PROTOCOL', f"message {h['id']} of kind {h['k']!r} does not name the request it answers (re)")
        x = h.get('x') or {}
        auth = x.get('auth')
        if auth is not None and auth != AUTH_SCHEME:
            raise TransportError('AUTH', f"message {h['id']} uses unknown authentication {auth!r}")
        if self.key is not None and auth is None:
            raise TransportError('AUTH', f"message {h['id']} is not authenticated, and this side requires {AUTH_SCHEME}")
        if self.key is None and auth is not None:
            raise TransportError('AUTH', f"message {h['id']} is authenticated with {AUTH_SCHEME}, and this side has no key")
        al = x.get('al')
        if al is not None and (not isinstance(al, list) or len(al) != len(h['b']) or any(a not in ALIGNMENTS for a in al)):
            raise _bad(f"x.al must list 1, 2, 4 or 8 for each of the {len(h['b'])} buffers")
        self.header = h
        if self.key is not None:
            self.mac = _Mac(self.key, self.peer)
            self.mac.update(frame)
        if 'pk' in h:
            self.inline = True
            self.pickle = h['pk']
        self.state = self.PICKLE

    def _expect(self, frame: bytes, n: int, what: str) -> None:
        if len(frame) != n:
            raise TransportError('PROTOCOL', f"{what} of message {self.header['id']} is {len(frame)} bytes; its header "
                                             f'announced {n} (frames truncated, lost or out of order)')

    def _complete(self) -> _Message:
        m = _Message(self.header, self.pickle, self.buffers, self.nbytes)
        self.next_id += 1
        self._reset()
        return m


# -- the connection -----------------------------------------------------------------------------

RequestHandler = Callable[[Any], Any]  # may return an awaitable
_END = object()


def _close_error(code: int | None, reason: str) -> TransportError:
    what = f'{code} ({reason})' if reason else str(code)
    return TransportError(_ERROR_CODE_BY_CLOSE.get(code, 'CLOSED'), f'the peer closed the connection with {what}')


class PickleSocket:
    """One picklewire connection over a websockets connection (client or server side).

    send() and request() may be called from several tasks: each message's frames go out
    together, in call order. Received values arrive in order through recv() or `async for`.
    """

    def __init__(self, ws, role: str, *, key: bytes | str | None = None, limits: Limits = DEFAULT_LIMITS,
                 on_request: RequestHandler | None = None, queue_size: int = 16, writable: bool = False,
                 unpickler: type[pickle.Unpickler] | None = None,
                 out_of_band: Callable[[pickle.PickleBuffer], bool] | None = None):
        if isinstance(key, str):
            key = key.encode()
        self.ws = ws
        self.role = role
        self.key = key or None
        self.limits = limits
        self.on_request = on_request
        self.writable = writable
        self.unpickler = unpickler
        self.out_of_band = out_of_band
        self.stats = Stats()
        self.error: BaseException | None = None
        #: the protocol version the handshake selected (its subprotocol): 2 or 1
        self.version = version_of_subprotocol(getattr(ws, 'subprotocol', None))
        self._receiver = _Receiver(limits, self.key, 'server' if role == 'client' else 'client', self.version)
        self._queue: asyncio.Queue = asyncio.Queue(maxsize=queue_size)
        self._send_lock = asyncio.Lock()
        self._next_id = 1
        self._pending: dict[int, asyncio.Future] = {}
        self._tasks: set[asyncio.Task] = set()
        self._closing = False
        self.closed: asyncio.Future = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._read())

    # sending

    async def send(self, value: Any, *, x: dict[str, Any] | None = None) -> None:
        """Sends a value as one message; returns once websockets has written its frames (it
        waits above its write_limit)."""
        await self._send(encode_value(value, self.out_of_band), KIND_MESSAGE, x=x)

    async def request(self, value: Any, *, timeout: float | None = None, x: dict[str, Any] | None = None) -> Any:
        """Sends a request and returns the reply. Raises TransportError('REMOTE') when the
        peer's handler failed, TransportError('TIMEOUT') after `timeout` seconds, the
        connection's error (or TransportError('CLOSED')) when the connection ends first."""
        parts = encode_value(value, self.out_of_band)
        future = asyncio.get_running_loop().create_future()
        id = await self._send(parts, KIND_REQUEST, x=x, pending=future)
        try:
            return await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            raise TransportError('TIMEOUT', f'no reply to request {id} within {timeout} s') from None
        finally:
            self._pending.pop(id, None)

    async def _send(self, parts: Parts, kind: str, *, re: int | None = None, x: dict[str, Any] | None = None,
                    pending: asyncio.Future | None = None) -> int:
        self._check_open()
        async with self._send_lock:
            self._check_open()
            id = self._next_id
            self._next_id += 1
            extras = dict(x or {})
            if any(a > 1 for a in parts.align):
                extras['al'] = parts.align
            if self.key is not None:
                extras['auth'] = AUTH_SCHEME
            lengths = [b.nbytes for b in parts.buffers]
            header = None
            if self.version >= 2 and len(parts.pickle) <= MAX_INLINE_PICKLE_BYTES:
                header = encode_header(v=self.version, id=id, k=kind, p=len(parts.pickle), b=lengths,
                                       ro=parts.readonly, re=re, x=extras, pk=parts.pickle)
                if len(header) > MAX_HEADER_BYTES:
                    header = None  # large extras: the pickle goes in a frame of its own after all
            if header is not None:
                frames: list[Any] = [header, *parts.buffers]
            else:
                header = encode_header(v=self.version, id=id, k=kind, p=len(parts.pickle), b=lengths,
                                       ro=parts.readonly, re=re, x=extras)
                frames = [header, parts.pickle, *parts.buffers]
            if self.key is not None:
                mac = _Mac(self.key, self.role)
                for f in frames:
                    mac.update(f)
                frames.append(mac.digest())
            if pending is not None:
                self._pending[id] = pending
            try:
                for f in frames:
                    await self.ws.send(f)
            except ConnectionClosed:
                raise self._closed_error() from None
            self.stats.messages_sent += 1
            self.stats.frames_sent += len(frames)
            self.stats.bytes_sent += sum(memoryview(f).nbytes for f in frames)
            return id

    def _check_open(self) -> None:
        if self.error is not None:
            raise self.error
        if self._closing or self.closed.done():
            raise TransportError('CLOSED', 'the connection is closing or closed')

    def _closed_error(self) -> BaseException:
        return self.error or TransportError('CLOSED', 'the connection is closed')

    # receiving

    async def recv(self) -> Any:
        """The next received value. Raises the connection's error, or TransportError('CLOSED')
        after a clean close once every message was received."""
        return (await self.recv_message())[0]

    async def recv_message(self) -> tuple[Any, dict[str, Any]]:
        """The next received value and {'id': message id, 'x': the sender's extras} (x only
        when the sender's application set some; picklewire's own, al and auth, left out)."""
        item = await self._queue.get()
        if item is _END:
            self._queue.put_nowait(_END)
            raise self._closed_error()
        kind, v, info = item
        if kind == 'error':
            raise v
        return v, info

    def __aiter__(self):
        return self

    async def __anext__(self) -> Any:
        try:
            return await self.recv()
        except TransportError as e:
            if self.error is None and e.code == 'CLOSED':
                raise StopAsyncIteration from None
            raise

    def _decode(self, m: _Message) -> Any:
        buffers = []
        for frame, ro in zip(m.buffers, m.header['ro']):
            if self.writable and not ro:
                frame = bytearray(frame)
                self.stats.bytes_copied += len(frame)
            buffers.append(pickle.PickleBuffer(frame))
        if self.unpickler is None:
            return pickle.loads(m.pickle, buffers=buffers)
        return self.unpickler(io.BytesIO(m.pickle), buffers=buffers).load()

    async def _read(self) -> None:
        error: BaseException | None = None
        try:
            while True:
                frame = await self.ws.recv()
                self.stats.frames_received += 1
                m = self._receiver.push(frame)
                if m is not None:
                    self.stats.messages_received += 1
                    self.stats.bytes_received += m.nbytes
                    await self._dispatch(m)
        except TransportError as e:
            error = e
            self._end(error)  # everything waiting learns now, not after the close handshake
            try:
                await self.ws.close(e.close_code(), _close_reason(str(e)))
            except Exception:
                pass
        except ConnectionClosed as e:
            rcvd = e.rcvd
            code = rcvd.code if rcvd is not None else 1006
            reason = rcvd.reason if rcvd is not None else ''
            if self._receiver.in_message:
                error = TransportError('CLOSED', f'the connection closed ({code}) {self._receiver.progress()}: the message is lost')
            elif e.sent is not None and e.sent.code == 1011 and 'keepalive' in e.sent.reason:
                error = TransportError('TIMEOUT', f'no answer to a heartbeat ping ({e.sent.reason})')
            elif code not in CLEAN_CLOSE_CODES:
                error = _close_error(code, reason)
        except asyncio.CancelledError:
            error = TransportError('CLOSED', 'the connection was abandoned')
            raise
        finally:
            self._end(error)
        await self._queue.put(_END)

    def _end(self, error: BaseException | None) -> None:
        if self.error is None:
            self.error = error
        for future in self._pending.values():
            if not future.done():
                future.set_exception(self.error or TransportError('CLOSED', 'the connection closed before the reply'))
        self._pending.clear()
        if not self.closed.done():
            self.closed.set_result(self.error)

    async def _dispatch(self, m: _Message) -> None:
        h = m.header
        k = h['k']
        if k == KIND_MESSAGE:
            info: dict[str, Any] = {'id': h['id']}
            extras = {key: v for key, v in (h.get('x') or {}).items() if key not in ('al', 'auth')}
            if extras:
                info['x'] = extras
            try:
                item = ('value', self._decode(m), info)
            except Exception as e:
                item = ('error', e, info)
            await self._queue.put(item)
        elif k == KIND_REQUEST:
            task = asyncio.create_task(self._answer(m))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            future = self._pending.get(h['re'])
            if future is None or future.done():
                return  # the request was given up: a late reply is dropped
            try:
                value = self._decode(m)
            except Exception as e:
                future.set_exception(e)
                return
            if k == KIND_REPLY:
                future.set_result(value)
            else:
                future.set_exception(_remote_error(value, h['re']))

    async def _answer(self, m: _Message) -> None:
        id = m.header['id']
        try:
            value = self._decode(m)
            if self.on_request is None:
                raise RuntimeError('no request handler on this side')
            reply = self.on_request(value)
            if asyncio.iscoroutine(reply) or isinstance(reply, asyncio.Future):
                reply = await reply
            parts, kind = encode_value(reply, self.out_of_band), KIND_REPLY
        except Exception as e:
            parts, kind = encode_value({'type': type(e).__name__, 'message': str(e)}), KIND_ERROR
        try:
            await self._send(parts, kind, re=id)
        except (TransportError, ConnectionClosed):
            pass

    # closing

    async def close(self, code: int = CLOSE.NORMAL, reason: str = '') -> BaseException | None:
        """Closes cleanly (messages already sent go first) and returns the connection's error, if any."""
        if not self._closing:
            self._closing = True
            async with self._send_lock:
                await self.ws.close(code, reason)
        try:
            await asyncio.wait_for(asyncio.shield(self.closed), 10)
        except asyncio.TimeoutError:
            self._reader.cancel()
        return self.error

    async def __aenter__(self) -> 'PickleSocket':
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()


def _close_reason(text: str) -> str:
    data = text.encode()
    if len(data) <= 123:
        return text
    return data[:120].decode(errors='ignore') + '...'


def _remote_error(value: Any, re: int) -> TransportError:
    if isinstance(value, dict) and isinstance(value.get('message'), str):
        what = f"{value.get('type')}: {value['message']}" if isinstance(value.get('type'), str) else value['message']
    else:
        what = repr(value)
    return TransportError('REMOTE', f'request {re} failed on the other side: {what}')


# -- connecting and serving ---------------------------------------------------------------------

def _check_version(version: int) -> None:
    if version not in PROTOCOL_VERSIONS:
        raise ValueError(f'protocol_version must be one of {PROTOCOL_VERSIONS}, got {version!r}')


def _ws_options(limits: Limits, heartbeat_interval: float | None, heartbeat_timeout: float | None,
                ws_options: dict[str, Any]) -> dict[str, Any]:
    return {
        'compression': None,  # permessage-deflate would copy (and compress) every tensor
        'max_size': limits.max_frame_bytes(),
        'ping_interval': heartbeat_interval,
        'ping_timeout': heartbeat_timeout,
        **ws_options,
    }


async def connect(uri: str, *, key: bytes | str | None = None, limits: Limits = DEFAULT_LIMITS,
                  on_request: RequestHandler | None = None, queue_size: int = 16, writable: bool = False,
                  unpickler: type[pickle.Unpickler] | None = None, heartbeat_interval: float | None = 20,
                  heartbeat_timeout: float | None = 20,
                  out_of_band: Callable[[pickle.PickleBuffer], bool] | None = None,
                  protocol_version: int = LATEST_VERSION, **ws_options: Any) -> PickleSocket:
    """Connects to a picklewire server (ws:// or wss://; pass ssl= for TLS options).

    key: shared HMAC-SHA256 key (both sides need it). limits: checked on every header.
    on_request: answers the peer's requests (sync or async). queue_size: received messages
    held before reading pauses. writable: copy each writable buffer into a bytearray on
    receipt (default False: values come back over the received bytes, read-only).
    unpickler: a pickle.Unpickler subclass, e.g. with a restricted find_class.
    heartbeat_interval / heartbeat_timeout: websockets' ping_interval / ping_timeout, seconds.
    protocol_version: the newest version to offer (2: picklewire.v2 then picklewire.v1; 1: v1 only).
    Other keyword arguments go to websockets' connect().
    """
    _check_version(protocol_version)
    ws = await _ws_connect(uri, subprotocols=_offered(protocol_version),
                           **_ws_options(limits, heartbeat_interval, heartbeat_timeout, ws_options))
    return PickleSocket(ws, 'client', key=key, limits=limits, on_request=on_request, queue_size=queue_size,
                        writable=writable, unpickler=unpickler, out_of_band=out_of_band)


def serve(handler: Callable[[PickleSocket], Awaitable[None]], host: str = '127.0.0.1', port: int = 0, *,
          key: bytes | str | None = None, limits: Limits = DEFAULT_LIMITS, on_request: RequestHandler | None = None,
          queue_size: int = 16, writable: bool = False, unpickler: type[pickle.Unpickler] | None = None,
          heartbeat_interval: float | None = 20, heartbeat_timeout: float | None = 20,
          out_of_band: Callable[[pickle.PickleBuffer], bool] | None = None, protocol_version: int = LATEST_VERSION,
          **ws_options: Any):
    """Serves picklewire connections: `handler(sock)` runs for each; the connection closes
    when it returns. Use as `async with serve(...) as server:` (websockets' Server; the port is
    server.sockets[0].getsockname()[1]). Options as for connect(); others go to websockets' serve().
    The server selects the newest subprotocol a client offers, up to protocol_version.
    """
    _check_version(protocol_version)
    offered_here = _offered(protocol_version)
    async def on_connection(ws) -> None:
        sock = PickleSocket(ws, 'server', key=key, limits=limits, on_request=on_request, queue_size=queue_size,
                            writable=writable, unpickler=unpickler, out_of_band=out_of_band)
        try:
            await handler(sock)
        finally:
            await sock.close()

    def select_subprotocol(connection, offered):
        return next((name for name in offered_here if name in offered), None)

    return _ws_serve(on_connection, host, port, subprotocols=offered_here, select_subprotocol=select_subprotocol,
                     **_ws_options(limits, heartbeat_interval, heartbeat_timeout, ws_options))
