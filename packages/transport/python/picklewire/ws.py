"""picklewire over WebSocket: the Python peer.

Speaks the wire protocol of docs/wire-protocol.md (versions 1, 2 and 3) with asyncio, websockets
and msgpack, and nothing else. A message is a msgpack header frame, the pickle frame, then one
binary frame per out-of-band buffer (and a 32-byte HMAC-SHA256 frame when a key is set). On a
version 2 connection (subprotocol picklewire.v2, preferred by both sides) a pickle of up to
16 KiB rides inside the header frame instead, so a message without buffers is one frame.
Version 3 (picklewire.v3, preferred) adds buffers in chunks of at most chunk_bytes, each
written into one bytearray of the announced size on receipt, per-chunk progress callbacks,
and cancel frames: a cancelled send() task tells the peer, which drops the message.
Values are pickled with protocol 5 and a buffer_callback, so numpy arrays leave as memoryviews
of their own memory, and are loaded with buffers=, so they come back as arrays over the
received frames.

    import asyncio, numpy as np
    from picklewire import ws as pw

    async def main():
        sock = await pw.connect('ws://127.0.0.1:8765/')
        await sock.send({'frame': np.zeros((480, 640), np.float32)})
        reply = await sock.request({'op': 'mean'})
        async for value in sock:          # values the peer sends, in order
            ...
        await sock.close()

Security: received pickles are loaded by a RestrictedUnpickler, which admits plain data and
numpy's arrays, dtypes and scalars only (DEFAULT_ALLOWED) and refuses every other global with
an UnpicklingError naming it. Widen it with `allow={'module.name', ...}`, or trust the peer
fully with `unpickler=pickle.Unpickler` (and then authenticate every message with `key=`).
See docs/security.md.
"""

from __future__ import annotations

import _compat_pickle
import asyncio
import collections
import ctypes
import datetime
import decimal
import hashlib
import hmac
import io
import mmap
import os
import pickle
import pickletools
import re
import secrets
import stat
import struct
import sys
import tempfile
import uuid
import weakref
from dataclasses import dataclass, field
from typing import Any, AsyncContextManager, Awaitable, Callable, Iterable, Sequence

import msgpack
from websockets.asyncio.client import ClientConnection as _ClientConnection, connect as _ws_connect
from websockets.asyncio.server import Server as _Server, ServerConnection as _ServerConnection, serve as _ws_serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import Opcode as _Opcode
from websockets.typing import Subprotocol as _Subprotocol

__all__ = [
    'PROTOCOL_VERSION', 'LATEST_VERSION', 'PROTOCOL_VERSIONS', 'SUBPROTOCOL', 'subprotocol_of', 'CLOSE', 'Limits', 'DEFAULT_LIMITS', 'Stats', 'TransportError',
    'DEFAULT_CHUNK_BYTES', 'PickleSocket', 'connect', 'serve', 'encode_value', 'encode_header', 'decode_header',
    'RestrictedUnpickler', 'DEFAULT_ALLOWED', 'restricted_loads', 'DEFAULT_SAME_HOST_MIN_BYTES',
]

PROTOCOL_VERSION = 1  # version 1: every message has a pickle frame
LATEST_VERSION = 3  # version 3: buffers in chunks, cancel frames; version 2: a small pickle inside the header (`pk`)
PROTOCOL_VERSIONS = (3, 2, 1)  # newest first
#: version 3 senders split a buffer larger than this into frames of at most this size
DEFAULT_CHUNK_BYTES = 2 ** 20
SUBPROTOCOL = 'picklewire.v1'
#: version 3, same host: out-of-band buffers of at least this many bytes go through files
DEFAULT_SAME_HOST_MIN_BYTES = 2 ** 20


def subprotocol_of(version: int) -> str:
    return f'picklewire.v{version}'


def version_of_subprotocol(name: str | None) -> int:
    """The version a handshake selected: 3 or 2 for picklewire.v3 or .v2, else 1 (v1, or no subprotocol)."""
    return {subprotocol_of(3): 3, subprotocol_of(2): 2}.get(name or '', 1)


_CONTROL = re.compile(r'(cancel|refuse) (0|[1-9][0-9]{0,15})')


def cancel_frame(id: int) -> str:
    """A version 3 cancel frame: the text frame `cancel <id>`."""
    return f'cancel {id}'


def refuse_frame(id: int) -> str:
    """A version 3 refuse frame: the text frame `refuse <id>` (the receiver dropped message id)."""
    return f'refuse {id}'


def parse_control_frame(text: str) -> tuple[str, int]:
    """('cancel' or 'refuse', id) of a version 3 text frame; TransportError PROTOCOL for any other."""
    m = _CONTROL.fullmatch(text)
    if m is None or int(m.group(2)) > 2 ** 53 - 1:
        raise TransportError('PROTOCOL', f'a text frame that is not a cancel or refuse frame ({text[:40]!r}); picklewire '
                                         'sends binary frames and `cancel <id>` / `refuse <id>` text frames only')
    return m.group(1), int(m.group(2))


def _offered(version: int) -> list[_Subprotocol]:
    return [_Subprotocol(subprotocol_of(v)) for v in PROTOCOL_VERSIONS if v <= version]

KIND_MESSAGE, KIND_REQUEST, KIND_REPLY, KIND_ERROR = 'msg', 'req', 'rep', 'err'
KINDS = frozenset((KIND_MESSAGE, KIND_REQUEST, KIND_REPLY, KIND_ERROR))

AUTH_SCHEME = 'hmac-sha256'
MAC_BYTES = 32
ALIGNMENTS = frozenset((1, 2, 4, 8))
MIN_OUT_OF_BAND_BYTES = 1024
MAX_HEADER_BYTES = 64 * 1024
MAX_INLINE_PICKLE_BYTES = 16 * 1024
#: Deepest nesting of msgpack containers a header may have (the spec's; a header itself nests two levels).
MAX_HEADER_DEPTH = 256


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
        """The largest frame these limits allow."""
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
    #: times reading paused because max_concurrent_requests requests were being answered or
    #: more than reply_high_water bytes of replies were not yet written
    request_pauses: int = 0
    #: version 3: messages this side cancelled mid-way / the peer cancelled / this side discard()ed
    messages_cancelled: int = 0
    messages_cancelled_by_peer: int = 0
    messages_discarded: int = 0
    #: version 3, same host: out-of-band buffers that went through a file instead of frames, sent /
    #: received, and their bytes (not in bytes_sent / bytes_received, which count frames)
    buffers_same_host_sent: int = 0
    buffers_same_host_received: int = 0
    bytes_same_host_sent: int = 0
    bytes_same_host_received: int = 0
    #: version 3, same host: files this side made for the buffers it sends (a file written again for
    #: a later message, once the peer read it or unmapped it, counts once)
    files_same_host_made: int = 0


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


def _depth_over(value: Any, limit: int) -> bool:
    """Whether containers nest deeper than limit levels (the value itself is level 1)."""
    level = [(value, 1)]
    while level:
        v, d = level.pop()
        if isinstance(v, (dict, list)):
            if d > limit:
                return True
            level.extend((item, d + 1) for item in (v.values() if isinstance(v, dict) else v))
    return False


def decode_header(frame: bytes, limits: Limits, version: int = PROTOCOL_VERSION) -> dict[str, Any]:
    """Decodes and validates a header of a connection of this version (checks 1 to 7 of the
    spec), as @picklewire/transport's decodeWireHeader does. An inline pickle is under 'pk'."""
    if len(frame) > MAX_HEADER_BYTES:
        raise TransportError('LIMIT', f'a header of {len(frame)} bytes is over the header limit of {MAX_HEADER_BYTES} bytes')
    try:
        raw = msgpack.unpackb(frame, raw=False, strict_map_key=False)
    except msgpack.StackError:  # msgpack's own limit, 1,024 levels
        raise _bad(f'msgpack nested more than {MAX_HEADER_DEPTH} levels deep (a header is a map of scalars and arrays)') from None
    except msgpack.FormatError:
        raise _bad(f'not msgpack (byte 0x{frame[0]:02x} begins no msgpack value)' if len(frame) == 1 else
                   'not msgpack (a byte that begins no msgpack value)') from None
    except msgpack.ExtraData:
        raise _bad('not msgpack: bytes after the header map') from None
    except Exception as e:  # msgpack raises ValueError and others for cut and oversized input
        raise _bad(f'not msgpack ({type(e).__name__}: {e or "no detail"})') from None
    if not isinstance(raw, dict):
        raise _bad('not a map')
    if _depth_over(raw, MAX_HEADER_DEPTH):
        raise _bad(f'msgpack nested more than {MAX_HEADER_DEPTH} levels deep (a header is a map of scalars and arrays)')
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

    def begin(self, length: int) -> None:
        """A part of `length` bytes follows in pieces (a version 3 buffer in chunks)."""
        self._h.update(struct.pack('<Q', length))

    def data(self, piece) -> None:
        self._h.update(piece)

    def digest(self) -> bytes:
        return self._h.digest()


# -- the restricted unpickler ---------------------------------------------------------------------
#
# A peer's pickle is data, not a program: by default only constructors that build plain data,
# and numpy's arrays, dtypes and scalars, are admitted (the allow-list idea of
# @picklewire/codec's default GlobalRegistry). Two dangers remain inside admitted names and are
# handled here: constructors that iterate an argument (set(range(10**12)), or one list handed to
# frozenset ten thousand times) are charged to a per-load budget, and numpy's own __setstate__
# methods, which trust their state (a datetime dtype given a version 3 state crashes CPython in
# numpy 2.x), only ever see a state that numpy itself would write.

#: Most items that constructor calls of one load may copy: this plus 4 per byte of pickle.
LOAD_WORK_ITEMS = 2 ** 20
#: Most dimensions of an array (numpy 2.x's NPY_MAXDIMS).
MAX_DIMS = 64
_NUMPY_TYPESTR = re.compile(r'[biufcSUVOMm]\d{0,10}\Z')
_DATETIME_UNITS = frozenset(('Y', 'M', 'W', 'D', 'h', 'm', 's', 'ms', 'us', 'μs', 'ns', 'ps', 'fs', 'as', 'generic'))
_NUMPY_CORES = ('numpy.core', 'numpy._core')


def _refuse(why: str) -> pickle.UnpicklingError:
    return pickle.UnpicklingError(why)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + '...'


class _NDArrayClass:
    """What `numpy.ndarray` loads as: a marker that numpy's _reconstruct accepts and, called,
    the array over a buffer that @picklewire/codec writes at protocol 5 with its default names:
    numpy.ndarray(shape, dtype, buffer, 0, strides or None, order). The class itself is never
    handed out, because calling it without a buffer allocates an array of any shape the pickle
    names."""

    def __init__(self, call: Callable[..., Any]):
        self._call = call

    def __call__(self, *args: Any) -> Any:
        return self._call(*args)

    def __repr__(self) -> str:
        return '<numpy.ndarray, as a restricted load admits it>'


def _dense(shape: tuple[int, ...], strides: tuple[int, ...], itemsize: int) -> bool:
    """Whether strides lay the elements out one after another in some order of the axes."""
    if 0 in shape:
        return True
    expected = itemsize
    for i in sorted((i for i, n in enumerate(shape) if n > 1), key=lambda i: strides[i]):
        if strides[i] != expected:
            return False
        expected *= shape[i]
    return True


class _DTypeCheck:
    """Stands in for a numpy.dtype while a pickle is checked: BUILD hands it the state, which is
    compared with the state numpy writes for the dtype that state describes."""

    def __init__(self, typestr: str):
        self.typestr = typestr
        self.kind = typestr[0]
        try:
            self.safe = _np().dtype(typestr)
        except Exception as e:
            raise _refuse(f'numpy.dtype({typestr!r}): {type(e).__name__}: {e}') from None
        self.built = False
        self.used = False

    def __setstate__(self, state: Any) -> None:
        if self.built:
            raise _refuse(f'numpy.dtype {self.typestr!r} is given a state twice')
        if self.used:
            raise _refuse(f'numpy.dtype {self.typestr!r} is given its state after an array or dtype used it')
        self.safe = _dtype_from_state(self.typestr, state)
        self.built = True

    def take(self, who: str):
        self.used = True
        return self.safe


class _ArrayCheck:
    """Stands in for an array or scalar of numpy while a pickle is checked. Only the empty
    array _reconstruct makes takes a state (BUILD), once."""

    def __init__(self, built: bool = False):
        self.built = built

    def __setstate__(self, state: Any) -> None:
        if self.built:
            raise _refuse('numpy.ndarray is given a state twice')
        _check_array_state(state)
        self.built = True


class _Inert:
    """Stands in for a global the application admitted, while a pickle is checked: the
    application's code runs once, in the load that counts."""

    def __new__(cls, *args: Any, **kwargs: Any):
        return object.__new__(cls)

    def __call__(self, *args: Any, **kwargs: Any) -> '_Inert':
        return _Inert()

    def __setstate__(self, state: Any) -> None:
        pass

    def append(self, item: Any) -> None:
        pass

    def extend(self, items: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass


def _np():
    import numpy
    return numpy


def _numpy_core(module: str):
    """numpy's own multiarray or numeric module, whichever of numpy.core / numpy._core this numpy has."""
    import importlib
    np = _np()
    core = 'numpy._core' if int(np.__version__.split('.')[0]) >= 2 else 'numpy.core'
    return importlib.import_module(f'{core}.{module}')


def _int(v: Any, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise _refuse(f'{what} must be an int, got {_short(v)}')
    return v


def _shape(v: Any, what: str) -> tuple[int, ...]:
    if not isinstance(v, tuple) or len(v) > MAX_DIMS or any(isinstance(n, bool) or not isinstance(n, int) or n < 0 or n > 2 ** 62 for n in v):
        raise _refuse(f'{what} must be a tuple of at most {MAX_DIMS} non-negative ints, got {_short(v)}')
    return v


def _count(shape: tuple[int, ...], itemsize: int, what: str) -> int:
    n = 1
    for d in shape:
        n *= d
    if n * max(itemsize, 1) > 2 ** 62:
        raise _refuse(f'{what}: shape {shape} of {itemsize}-byte items is too large')
    return n


def _dtype_of(v: Any, what: str):
    if not isinstance(v, _DTypeCheck):
        raise _refuse(f'{what} must be a numpy.dtype, got {_short(v)}')
    return v.take(what)


def _dtype_from_state(typestr: str, state: Any):
    """The dtype a state describes, made with numpy's constructors, after checking that the
    state is exactly the one numpy writes for that dtype (numpy 1.x or 2.x)."""
    who = f'numpy.dtype({typestr!r}) state'
    if not isinstance(state, tuple) or len(state) not in (8, 9):
        raise _refuse(f'{who} must be a tuple of 8 or 9 items (numpy writes versions 3 and 4), got {_short(state)}')
    version, endian, subarray, names, fields, elsize, alignment, flags = state[:8]
    if version != (len(state) - 5) or isinstance(version, bool):
        raise _refuse(f'{who}: version {_short(version)} with {len(state)} items; numpy writes 3 with 8 items, 4 with 9')
    if endian not in ('<', '>', '|', '='):
        raise _refuse(f"{who}: byte order must be '<', '>', '|' or '=', got {_short(endian)}")
    for v, what in ((elsize, 'elsize'), (alignment, 'alignment'), (flags, 'flags')):
        _int(v, f'{who}: {what}')
    if not -128 <= flags <= 255:
        raise _refuse(f'{who}: flags must be a byte, got {flags}')
    kind = typestr[0]
    extra = state[8] if len(state) == 9 else None
    spec: Any
    if kind in 'Mm':
        # numpy reads a datetime's unit only from a version 4 state; without one, numpy 2.x crashes.
        if len(state) != 9 or not isinstance(extra, tuple) or len(extra) != 2 or not (extra[0] is None or extra[0] == {}):
            raise _refuse(f'{who}: a datetime64/timedelta64 state must end with (metadata, (unit, num, den, events)), got {_short(extra)}')
        info = extra[1]
        if not (isinstance(info, tuple) and len(info) == 4 and isinstance(info[0], bytes)
                and all(isinstance(x, int) and not isinstance(x, bool) for x in info[1:])):
            raise _refuse(f'{who}: datetime info must be (unit bytes, num, den, events), got {_short(info)}')
        unit = info[0].decode('utf-8', 'replace')
        if unit not in _DATETIME_UNITS or info[1] < 1 or info[1] > 2 ** 31 - 1 or info[2] != 1 or info[3] != 1:
            raise _refuse(f'{who}: bad datetime unit {_short(info)}')
        spec = f"{endian if endian in '<>' else '='}{kind}8" + ('' if unit == 'generic' else f'[{info[1]}{unit}]')
        metadata = None
    else:
        if extra is not None and not isinstance(extra, dict):
            raise _refuse(f'{who}: metadata must be a dict, got {_short(extra)}')
        metadata = extra
        if names is not None or fields is not None:
            if not isinstance(names, tuple) or not all(isinstance(n, str) for n in names) or not isinstance(fields, dict):
                raise _refuse(f'{who}: names must be a tuple of str and fields a dict, got {_short(names)} and {_short(fields)}')
            formats, offsets, titles = [], [], []
            for n in names:
                f = fields.get(n)
                if not isinstance(f, tuple) or len(f) not in (2, 3):
                    raise _refuse(f'{who}: field {n!r} must be (dtype, offset[, title]), got {_short(f)}')
                formats.append(_dtype_of(f[0], f'{who}: field {n!r}'))
                offsets.append(_int(f[1], f'{who}: offset of field {n!r}'))
                titles.append(f[2] if len(f) == 3 else None)
            spec = {'names': list(names), 'formats': formats, 'offsets': offsets, 'itemsize': elsize}
            if any(t is not None for t in titles):
                spec['titles'] = titles
        elif subarray is not None:
            if not isinstance(subarray, tuple) or len(subarray) != 2:
                raise _refuse(f'{who}: subarray must be (dtype, shape), got {_short(subarray)}')
            spec = (_dtype_of(subarray[0], f'{who}: subarray'), _shape(subarray[1], f'{who}: subarray shape'))
        elif kind in 'SUV':
            spec = f'{endian}{kind}{elsize // 4 if kind == "U" else elsize}'
        else:
            spec = endian + typestr
    np = _np()
    try:
        made = np.dtype(spec, align=bool(flags & 0x80)) if metadata is None else np.dtype(spec, metadata=metadata)
        written = made.__reduce__()
    except Exception as e:
        raise _refuse(f'{who} describes no dtype numpy makes: {_short(state)} ({type(e).__name__}: {e})') from None
    try:
        same = written[1][0] == typestr and _normal_state(written[2]) == _normal_state(state)
    except Exception:
        same = False
    if not same:
        raise _refuse(f'{who} {_short(state)} is not the state numpy writes for that dtype ({_short(written[2])})')
    return made


def _stood(v: Any) -> Any:
    return v.safe if isinstance(v, _DTypeCheck) else v


def _normal_state(state: tuple) -> tuple:
    """A dtype state with what numpy versions write differently made equal: flags as an
    unsigned byte (numpy 1.x writes a signed one), datetime metadata {} (1.x) or None (2.x);
    the stand-ins inside a checked state as the dtypes they stand for."""
    s = list(state)
    s[7] = s[7] & 0xff
    if isinstance(s[2], tuple) and s[2]:
        s[2] = (_stood(s[2][0]),) + s[2][1:]
    if isinstance(s[4], dict):
        s[4] = {k: (_stood(f[0]),) + f[1:] if isinstance(f, tuple) and f else f for k, f in s[4].items()}
    if len(s) == 9 and isinstance(s[8], tuple) and len(s[8]) == 2 and s[8][0] == {}:
        s[8] = (None, s[8][1])
    return tuple(s)


def _check_text(dtype: Any, data: Any, who: str) -> None:
    """numpy reads a str array's UCS4 units as they are: one past U+10FFFF raises SystemError
    wherever an element is read, so a load refuses it at once."""
    if dtype.kind != 'U' or dtype.itemsize == 0:
        return
    np = _np()
    units = np.frombuffer(data, dtype=dtype.byteorder.replace('|', '=') + 'u4' if dtype.byteorder != '=' else '=u4')
    if units.size and int(units.max()) > 0x10FFFF:
        raise _refuse(f'{who}: a {dtype} array holds a code point past U+10FFFF ({int(units.max()):#x})')


def _check_array_state(state: Any) -> None:
    who = 'numpy.ndarray state'
    if not isinstance(state, tuple) or len(state) != 5 or state[0] != 1 or isinstance(state[0], bool):
        raise _refuse(f'{who} must be (1, shape, dtype, is_fortran, data) as numpy writes it, got {_short(state)}')
    shape = _shape(state[1], f'{who}: shape')
    dtype = _dtype_of(state[2], f'{who}: dtype')
    if not isinstance(state[3], bool):
        raise _refuse(f'{who}: is_fortran must be a bool, got {_short(state[3])}')
    n = _count(shape, dtype.itemsize, who)
    data = state[4]
    if dtype.hasobject:
        if not isinstance(data, list) or len(data) != n:
            raise _refuse(f'{who}: an array of {dtype} and shape {shape} needs a list of {n} items, got {_short(type(data))} of {len(data) if isinstance(data, list) else "?"}')
    elif not isinstance(data, (bytes, bytearray)) or len(data) != n * dtype.itemsize:
        got = f'{len(data)} bytes' if isinstance(data, (bytes, bytearray)) else _short(type(data))
        raise _refuse(f'{who}: an array of {dtype} and shape {shape} needs {n * dtype.itemsize} bytes, got {got}')
    else:
        _check_text(dtype, data, who)


#: What follows each opcode byte: n >= 0 bytes, or one of pickletools' ArgumentDescriptor
#: codes (-1 up to a newline, -2 a 1-byte length, -3 / -4 a 4-byte signed / unsigned length,
#: -5 an 8-byte length), or one of the cases below.
_ARG = [-99] * 256
for _op in pickletools.opcodes:
    _ARG[ord(_op.code)] = _op.arg.n if _op.arg is not None else 0
_STOP_OR_UNKNOWN, _LONG_BINPUT, _PUT, _TWO_LINES = -99, -10, -11, -12
_ARG[ord('.')] = _STOP_OR_UNKNOWN
_ARG[ord('r')] = _LONG_BINPUT
_ARG[ord('p')] = _PUT
_ARG[ord('c')] = _ARG[ord('i')] = _TWO_LINES  # GLOBAL and INST: module and name, a line each


def _check_memo_indexes(data: bytes) -> None:
    """Refuses a PUT or LONG_BINPUT whose index is past the pickle's length, and an argument
    longer than what is left of the pickle. CPython's
    unpickler grows its memo array to twice the index it is given, so six bytes asking for index
    2**31 make it allocate and clear 32 GiB; a pickler numbers memo entries from 0, one per
    object, so no index it writes is that large. One walk over the opcodes, without loading;
    it stops at STOP or at a byte that is no opcode (the unpickler then reports it)."""
    limit = n = len(data)
    arg = _ARG
    i = 0
    while i < n:
        a = arg[data[i]]
        i += 1
        if a >= 0:
            i += a
        elif a == _STOP_OR_UNKNOWN:
            return
        elif a == _LONG_BINPUT:
            idx = int.from_bytes(data[i:i + 4], 'little')
            if idx > limit:
                raise _memo_refused(idx, limit)
            i += 4
        elif -5 <= a <= -2:
            width = (1, 4, 4, 8)[-2 - a]
            if i + width > n:
                raise _refuse(f'pickle data was truncated: it ends inside the length of the opcode at offset {i - 1}')
            size = int.from_bytes(data[i:i + width], 'little', signed=(a == -3))
            if size < 0:
                return  # the unpickler refuses a negative length (a walk past it could loop)
            i += width + size
            if i > n:
                # from a file CPython's unpickler allocates the announced size before reading
                raise _refuse(f'pickle data was truncated: an opcode at offset {i - width - size - 1} announces '
                              f'{size} bytes, and {max(n - (i - size), 0)} remain')
        else:
            j = data.find(b'\n', i)
            if a == _TWO_LINES and j >= 0:
                j = data.find(b'\n', j + 1)
            if j < 0:
                return
            if a == _PUT:
                try:
                    idx = int(data[i:j])
                except ValueError:
                    return  # the unpickler reports the bad PUT
                if idx > limit:
                    raise _memo_refused(idx, limit)
            i = j + 1


def _memo_refused(idx: int, limit: int) -> pickle.UnpicklingError:
    return _refuse(f'memo index {idx} is past the end of a {limit}-byte pickle (an unpickler would allocate memory for it)')


class RestrictedUnpickler(pickle.Unpickler):
    """The unpickler picklewire_ws uses unless told otherwise: admits the globals of
    DEFAULT_ALLOWED (plain data, and numpy's arrays, dtypes and scalars) and those named by
    `allow` (the class attribute, and the argument) and refuses every other with an
    UnpicklingError naming it.

    A pickle that refers to numpy or to an admitted name is loaded twice: first with inert
    stand-ins that check each numpy state is one numpy itself writes (and run no admitted
    code), then for real. The file must be seekable. A subclass may override find_class; it
    runs in both loads (self.checking is True in the first).
    """

    #: "module.name" of globals admitted besides DEFAULT_ALLOWED (a subclass may set it)
    allow: frozenset[str] = frozenset()

    def __init__(self, file, *, allow: Iterable[str] = (), buffers: Iterable[Any] | None = None, **kwargs: Any):
        if isinstance(allow, str):
            raise TypeError(f'allow must be an iterable of "module.name" strings, not the string {allow!r}')
        self._file = file
        self._buffers = list(buffers) if buffers is not None else None
        self._kwargs = kwargs
        self.allowed = frozenset(self.allow) | frozenset(allow)
        for name in self.allowed:
            if not isinstance(name, str) or '.' not in name:
                raise TypeError(f'allow holds "module.name" strings, got {name!r}')
        self.checking = False
        self.proto = 0
        self._stand_ins = 0
        self._work = 0
        self._work_limit = LOAD_WORK_ITEMS
        super().__init__(file, buffers=self._buffers, **kwargs)

    def load(self) -> Any:
        if self.checking:
            return super().load()
        f = self._file
        start = f.tell()
        data = f.read()
        f.seek(start)
        head, left = data[:2], len(data)
        _check_memo_indexes(data)
        del data
        # CPython maps Python 2 names (__builtin__, copy_reg, ...) below protocol 3 only
        self.proto = head[1] if len(head) == 2 and head[0] == 0x80 else 0
        self._work, self._work_limit, self._stand_ins = 0, LOAD_WORK_ITEMS + 4 * left, 0
        checker = type(self).__new__(type(self), f)
        pickle.Unpickler.__init__(checker, f, buffers=self._buffers, **self._kwargs)
        checker.__dict__.update(self.__dict__)
        checker.checking = True
        try:
            value = checker.load()
            if checker._stand_ins == 0:
                return value  # nothing numpy and nothing admitted by the application: that load is the load
            f.seek(start)
            return super().load()
        except pickle.UnpicklingError:
            raise
        except Exception as e:  # CPython's unpickler raises many types for bad input; numpy more
            raise pickle.UnpicklingError(f'{type(e).__name__}: {e}') from e
        finally:
            checker.memo.clear()  # see _load_once: the checker is used once

    def _charge(self, items: int, who: str) -> None:
        self._work += items
        if self._work > self._work_limit:
            raise _refuse(f'{who} of {items} items goes over the {self._work_limit} items that constructor calls of this '
                          'pickle may copy (a restricted load bounds what a few bytes can make it build)')

    def _sized(self, v: Any, who: str) -> Any:
        if not isinstance(v, (list, tuple, set, frozenset, dict, str, bytes, bytearray, range, collections.deque)):
            raise _refuse(f'{who}() needs a list, tuple, set, dict, str, bytes or range, got {_short(type(v))}')
        self._charge(len(v), who)
        return v

    def find_class(self, module: str, name: str) -> Any:
        if self.proto < 3 and self._kwargs.get('fix_imports', True):
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
        q = f'{module}.{name}'
        make = _DEFAULT_GLOBALS.get(q)
        if make is not None:
            return make(self)
        if q in self.allowed:
            if self.checking:
                self._stand_ins += 1
                return _Inert
            return super().find_class(module, name)
        raise _refuse(f'global "{q}" is not allowed: this peer loads plain data and numpy only '
                      f'(pass allow={{"{q}"}} to admit it, or unpickler=pickle.Unpickler to trust the peer)')

    # what the default names load as

    def _numpy(self, q: str, real: Callable[[], Any], check: Callable[..., Any]) -> Any:
        try:
            _np()
        except ImportError:
            raise _refuse(f'global "{q}" needs numpy, which is not installed') from None
        self._stand_ins += 1
        if self.checking:
            return check
        target = real()

        def call(*args: Any) -> Any:
            check(*args)  # the same argument checks as the first load, on the real objects
            return target(*args)
        return call


def _checked_dtype_args(self: RestrictedUnpickler):
    def check(*args: Any) -> Any:
        if len(args) != 3 or not isinstance(args[0], str) or not _NUMPY_TYPESTR.match(args[0]) \
                or args[1] is not False or args[2] is not True:
            raise _refuse(f"numpy.dtype{_short(args)}: numpy writes (type string such as 'f8', False, True)")
        return _DTypeCheck(args[0]) if self.checking else None
    return check


def _dtype_global(self: RestrictedUnpickler) -> Any:
    check = _checked_dtype_args(self)
    return self._numpy('numpy.dtype', lambda: _np().dtype, check)


def _reconstruct_global(self: RestrictedUnpickler) -> Any:
    def check(cls: Any = None, shape: Any = None, typecode: Any = None, *more: Any) -> Any:
        if not isinstance(cls, _NDArrayClass) or shape != (0,) or typecode != b'b' or more:
            raise _refuse(f'numpy _reconstruct{_short((cls, shape, typecode) + more)}: numpy writes (numpy.ndarray, (0,), b\'b\')')
        return _ArrayCheck() if self.checking else None

    def real():
        target = _numpy_core('multiarray')._reconstruct
        return lambda cls, shape, typecode: target(_np().ndarray, shape, typecode)
    return self._numpy('numpy _reconstruct', real, check)


def _check_array_over(who: str, buf: Any, dtype: Any, shape: tuple[int, ...]) -> Any:
    """Checks that an array of dtype and shape can be made over buf, exactly filling it; returns the dtype."""
    d = _dtype_of(dtype, who)
    if d.hasobject or d.itemsize == 0:
        raise _refuse(f'{who}: an array of {d} cannot be made from a buffer')
    n = _count(shape, d.itemsize, who)
    with memoryview(buf) as m:
        if m.nbytes != n * d.itemsize:
            raise _refuse(f'{who}: a buffer of {m.nbytes} bytes does not hold shape {shape} of {d} ({n * d.itemsize} bytes)')
    _check_text(d, buf, who)
    return d


def _frombuffer_global(self: RestrictedUnpickler) -> Any:
    def check(buf: Any = None, dtype: Any = None, shape: Any = None, order: Any = None, *more: Any) -> Any:
        who = 'numpy _frombuffer'
        if len(more) > 1:
            raise _refuse(f'{who} takes 4 or 5 arguments, got {4 + len(more)}')
        if not isinstance(buf, (pickle.PickleBuffer, bytes, bytearray)):
            raise _refuse(f'{who} needs a buffer (bytes or an out-of-band buffer), got {_short(type(buf))}')
        shape = _shape(shape, f'{who} shape')
        if order not in ('C', 'F', 'K'):
            raise _refuse(f"{who}: order must be 'C', 'F' or 'K', got {_short(order)}")
        if more and more[0] is not None:
            axes = _shape(more[0], f'{who} axis order')
            if sorted(axes) != list(range(len(shape))):
                raise _refuse(f'{who}: axis order {axes} is not a permutation of {len(shape)} axes')
        if not self.checking:
            return None
        _check_array_over(who, buf, dtype, shape)
        return _ArrayCheck(built=True)

    return self._numpy('numpy _frombuffer', lambda: _numpy_core('numeric')._frombuffer, check)


def _ndarray_global(self: RestrictedUnpickler) -> _NDArrayClass:
    def check(shape: Any = None, dtype: Any = None, buf: Any = None, offset: Any = 0, strides: Any = None,
              order: Any = 'C', *more: Any) -> Any:
        who = 'numpy.ndarray'
        if more or buf is None:
            raise _refuse(f'{who}{_short((shape, dtype, buf, offset, strides, order) + more)}: a restricted load makes '
                          'arrays over a buffer only: (shape, dtype, buffer[, 0, strides or None, order])')
        if not isinstance(buf, (pickle.PickleBuffer, bytes, bytearray)):
            raise _refuse(f'{who} needs a buffer (bytes or an out-of-band buffer), got {_short(type(buf))}')
        shape = _shape(shape, f'{who} shape')
        if _int(offset, f'{who} offset') != 0:
            raise _refuse(f'{who}: offset must be 0, got {_short(offset)}')
        if strides is not None and (len(_shape(strides, f'{who} strides')) != len(shape)):
            raise _refuse(f'{who}: strides {strides} do not match shape {shape}')
        if order not in ('C', 'F'):
            raise _refuse(f"{who}: order must be 'C' or 'F', got {_short(order)}")
        if not self.checking:
            return None
        d = _check_array_over(who, buf, dtype, shape)
        if strides is not None and not _dense(shape, strides, d.itemsize):
            raise _refuse(f'{who}: strides {strides} do not lay out shape {shape} of {d} densely over the buffer')
        return _ArrayCheck(built=True)

    if self.checking:
        # a stand-in only when called: as _reconstruct's argument it is a marker
        def call(*args: Any) -> Any:
            self._numpy('numpy.ndarray', lambda: None, check)
            return check(*args)
        return _NDArrayClass(call)

    def real(*args: Any) -> Any:
        return self._numpy('numpy.ndarray', lambda: _np().ndarray, check)(*args)
    return _NDArrayClass(real)


def _scalar_global(self: RestrictedUnpickler) -> Any:
    def check(dtype: Any = None, *rest: Any) -> Any:
        who = 'numpy scalar'
        if len(rest) > 1:
            raise _refuse(f'{who} takes 1 or 2 arguments, got {1 + len(rest)}')
        if not self.checking:
            return None
        d = _dtype_of(dtype, who)
        obj = rest[0] if rest else None
        if d.kind == 'O':
            return obj
        if d.hasobject:
            raise _refuse(f'{who}: a scalar of {d} (it holds objects) is not made from bytes')
        if not isinstance(obj, bytes) or len(obj) != d.itemsize:
            raise _refuse(f'{who}: a {d} scalar needs {d.itemsize} bytes, got {_short(obj)}')
        _check_text(d, obj, who)
        return _ArrayCheck(built=True)

    return self._numpy('numpy scalar', lambda: _numpy_core('multiarray').scalar, check)


def _counted(cls: Callable[..., Any], who: str, *, max_args: int = 1, sized_arg: int = 0):
    """A constructor that copies an argument: charged to the load's budget, by its length."""
    def make(self: RestrictedUnpickler) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            if len(args) > max_args:
                raise _refuse(f'{who}() takes at most {max_args} arguments, got {len(args)}')
            if len(args) > sized_arg:
                self._sized(args[sized_arg], who)
            if cls is collections.defaultdict and args:
                # defaultdict(list): the factory is the type itself, as in the pickle
                args = (getattr(args[0], 'builds', args[0]),) + args[1:]
            return cls(*args)
        call.builds = cls  # type: ignore[attr-defined]
        return call
    return make


def _bytearray_global(self: RestrictedUnpickler) -> Callable[..., Any]:
    def call(*args: Any) -> bytearray:
        # bytearray(n) allocates n bytes: only the forms pickle writes (bytes, or str with its encoding)
        if len(args) == 0:
            return bytearray()
        if isinstance(args[0], bytes) and len(args) == 1:
            return bytearray(args[0])
        if isinstance(args[0], str) and len(args) == 2 and args[1] in ('latin-1', 'latin1'):
            return bytearray(args[0], args[1])
        raise _refuse(f'bytearray{_short(args)}: a restricted load makes a bytearray from bytes, or a str and latin-1')
    return call


def _codecs_encode_global(self: RestrictedUnpickler) -> Callable[..., Any]:
    def call(text: Any = None, encoding: Any = 'utf-8', *more: Any) -> bytes:
        if not isinstance(text, str) or encoding not in ('latin1', 'latin-1', 'utf-8', 'utf8') or more:
            raise _refuse(f'_codecs.encode{_short((text, encoding) + more)}: a restricted load encodes a str as latin-1 or utf-8 only')
        return text.encode(encoding)
    return call


def _reconstructor_global(self: RestrictedUnpickler) -> Callable[..., Any]:
    def call(cls: Any = None, base: Any = None, state: Any = None, *more: Any) -> Any:
        # below protocol 2 CPython pickles an instance as _reconstructor(cls, object, None), then BUILD
        if base is object and state is None and not more:
            if cls is _Inert:  # an admitted class, while the pickle is checked
                return _Inert()
            if isinstance(cls, type) and f'{cls.__module__}.{cls.__qualname__}' in (_RECONSTRUCTIBLE | self.allowed):
                return object.__new__(cls)
        raise _refuse(f'copyreg._reconstructor{_short((cls, base, state) + more)}: a restricted load makes only '
                      '(an admitted class, object, None)')
    return call


def _value(v: Any) -> Callable[[RestrictedUnpickler], Any]:
    return lambda self: v


def _default_globals() -> dict[str, Callable[[RestrictedUnpickler], Any]]:
    g: dict[str, Callable[[RestrictedUnpickler], Any]] = {
        'builtins.set': _counted(set, 'set'),
        'builtins.frozenset': _counted(frozenset, 'frozenset'),
        'builtins.list': _counted(list, 'list'),
        'builtins.tuple': _counted(tuple, 'tuple'),
        'builtins.dict': _counted(dict, 'dict'),
        'builtins.bytearray': _bytearray_global,
        'builtins.complex': _value(complex),
        'builtins.range': _value(range),
        'builtins.slice': _value(slice),
        'builtins.object': _value(object),
        'builtins.Ellipsis': _value(Ellipsis),
        'builtins.NotImplemented': _value(NotImplemented),
        '_codecs.encode': _codecs_encode_global,
        'copyreg._reconstructor': _reconstructor_global,
        'collections.OrderedDict': _counted(collections.OrderedDict, 'collections.OrderedDict'),
        'collections.Counter': _counted(collections.Counter, 'collections.Counter'),
        'collections.deque': _counted(collections.deque, 'collections.deque', max_args=2),
        'collections.defaultdict': _counted(collections.defaultdict, 'collections.defaultdict', max_args=2, sized_arg=1),
        'datetime.datetime': _value(datetime.datetime),
        'datetime.date': _value(datetime.date),
        'datetime.time': _value(datetime.time),
        'datetime.timedelta': _value(datetime.timedelta),
        'datetime.timezone': _value(datetime.timezone),
        'decimal.Decimal': _value(decimal.Decimal),
        'uuid.UUID': _value(uuid.UUID),
        'numpy.dtype': _dtype_global,
        'numpy.ndarray': _ndarray_global,
    }
    for core in _NUMPY_CORES:
        for module in (f'{core}.multiarray', f'{core}._multiarray_umath'):
            g[f'{module}._reconstruct'] = _reconstruct_global
            g[f'{module}.scalar'] = _scalar_global
        g[f'{core}.numeric._frombuffer'] = _frombuffer_global
    return g


_DEFAULT_GLOBALS = _default_globals()
_RECONSTRUCTIBLE = frozenset(('uuid.UUID',))
#: The "module.name" globals a RestrictedUnpickler admits without being told.
DEFAULT_ALLOWED: frozenset[str] = frozenset(_DEFAULT_GLOBALS)


def restricted_loads(data: bytes | memoryview, *, buffers: Iterable[Any] | None = None, allow: Iterable[str] = ()) -> Any:
    """pickle.loads with a RestrictedUnpickler: plain data and numpy, and the names in allow."""
    return _load_once(RestrictedUnpickler(io.BytesIO(data), buffers=buffers, allow=allow))


def _load_once(unpickler: pickle.Unpickler) -> Any:
    """Loads the one pickle of an unpickler used once, then empties its memo. The globals a
    RestrictedUnpickler makes are closures over it, and the memo keeps them: a cycle that would
    hold the unpickler, and the buffers it was given (a received tensor), until Python's cyclic
    garbage collector runs, instead of freeing them when the value is dropped."""
    try:
        return unpickler.load()
    finally:
        unpickler.memo.clear()


# -- the same-host path -------------------------------------------------------------------------
#
# Version 3, docs/wire-protocol.md section 10. Buffers of at least same_host_min_bytes travel
# through files of the sending process, named to the peer as /proc/<pid>/fd/<fd>, and the
# WebSocket carries only their place. The files have no name (a memfd, or a file under /dev/shm
# unlinked at once): the kernel frees them when their last descriptor or mapping goes, also when
# a process dies. This side maps what it receives (MAP_PRIVATE, no copy), so it says `map` in its
# challenge, and tells the peer `shm-free <id>` once every mapping it made of message <id>'s files
# is gone: only then may the peer write into those files again.

_SHM_CHALLENGE = re.compile(r'shm-challenge (/proc/([1-9][0-9]{0,9})/fd/(0|[1-9][0-9]{0,15})) (copy|map)')
_SHM_PROOF = re.compile(r'shm-proof ([0-9a-f]{64}) ([1-9][0-9]{0,9})')
_SHM_DONE = re.compile(r'shm-(done|free) (0|[1-9][0-9]{0,15})')
_SHM_BARE = re.compile(r'shm-(no|accept|reject)')
_PLACE_PATH = re.compile(r'/proc/([1-9][0-9]{0,9})/fd/(0|[1-9][0-9]{0,15})')
#: what the link of a file this side reads names: a picklewire region or challenge, unlinked
_REGION_LINK = re.compile(r'(^/memfd:picklewire|/picklewire-[^/]*) \(deleted\)$')
#: places in x.sm start at multiples of this (a page: the receiver may map from there)
PLACE_ALIGNMENT = 4096
CHALLENGE_BYTES = 32
#: regions awaiting shm-done at most; beyond that, buffers go as frames until one is done
MAX_OUTSTANDING_REGIONS = 8
_MAX_FREE_REGIONS = 2
#: regions kept open while a mapping peer still maps them (awaiting shm-free) at most; beyond, the oldest is closed
_MAX_MAPPED_REGIONS = 4
#: mappings of whole files a receiver keeps for read-only buffers at most (the most recently used)
_MAX_KEPT_MAPPINGS = 4
#: messages whose shm-free a sender remembers awaiting at most; beyond, the oldest is forgotten (its shm-free unchecked)
_MAX_AWAITING_FREE = 4096
#: os.pwrite moves at most about 2 GiB per call on Linux
_PIECE_BYTES = 2 ** 30


def same_host_available() -> bool:
    """True where the same-host path can work: Linux, with /proc."""
    return sys.platform.startswith('linux') and os.path.isdir('/proc/self/fd')


def _make_region() -> int:
    """A file without a name, readable by this user only: a memfd, else an unlinked file under /dev/shm."""
    if hasattr(os, 'memfd_create'):
        try:
            return os.memfd_create('picklewire', os.MFD_CLOEXEC)
        except OSError:
            pass
    folder = '/dev/shm' if os.path.isdir('/dev/shm') else tempfile.gettempdir()
    name = os.path.join(folder, f'picklewire-{os.getpid()}-{secrets.token_hex(8)}')
    fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.unlink(name)
    except OSError:
        os.close(fd)
        raise
    return fd


def _open_region(path: str, what: str) -> tuple[int, int]:
    """Opens a file another process names, without blocking on a FIFO or device, and checks it is
    a picklewire region (an unlinked regular file or memfd named picklewire): (fd, size)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError as e:
        raise TransportError('PROTOCOL', f'the file of {what} ({path}): it is gone: the sending process exited or '
                                         'closed it') from e
    except OSError as e:
        raise TransportError('PROTOCOL', f'the file of {what} ({path}): it cannot be opened ({e.strerror})') from e
    try:
        st = os.fstat(fd)
        try:
            link = os.readlink(f'/proc/self/fd/{fd}')
        except OSError:
            link = ''
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 0 or not _REGION_LINK.search(link):
            raise TransportError('PROTOCOL', f'the file of {what} ({path}) is not a picklewire region (an unlinked regular '
                                             f'file or memfd named picklewire), got {link!r}')
        return fd, st.st_size
    except BaseException:
        os.close(fd)
        raise


def _pwrite_all(fd: int, view: memoryview, at: int) -> None:
    done = 0
    while done < view.nbytes:
        done += os.pwrite(fd, view[done:done + _PIECE_BYTES], at + done)


def parse_same_host_frame(text: str) -> tuple[str, Any]:
    """(kind, detail) of a `shm-*` text frame: ('challenge', (path, pid, mode)), ('proof', (hex, pid)),
    ('done'|'free', id), ('no'|'accept'|'reject', None). TransportError PROTOCOL for any other."""
    m = _SHM_CHALLENGE.fullmatch(text)
    if m is not None:
        return 'challenge', (m.group(1), int(m.group(2)), m.group(4))
    m = _SHM_PROOF.fullmatch(text)
    if m is not None:
        return 'proof', (m.group(1), int(m.group(2)))
    m = _SHM_DONE.fullmatch(text)
    if m is not None and int(m.group(2)) <= 2 ** 53 - 1:
        return m.group(1), int(m.group(2))
    m = _SHM_BARE.fullmatch(text)
    if m is not None:
        return m.group(1), None
    raise TransportError('PROTOCOL', f'a malformed same-host frame {text[:100]!r}: expected `shm-challenge /proc/<pid>/fd/<fd> '
                                     'copy|map`, `shm-proof <64 hex digits> <pid>`, `shm-no`, `shm-accept`, `shm-reject` '
                                     '`shm-done <id>` or `shm-free <id>`')


def _unexpected(text: str, why: str) -> TransportError:
    return TransportError('PROTOCOL', f'an unexpected same-host frame {text[:100]!r}: {why}')


class _SameHost:
    """Both directions of the same-host path of one connection: this side's challenge and the
    pid the peer proved (what it receives), and this side's proof, its regions awaiting
    shm-done and the free ones (what it sends). `send_text` writes a text frame (it does not
    wait). With enabled False it answers a challenge with shm-no and nothing else."""

    def __init__(self, enabled: bool, min_bytes: int, send_text: Callable[[str], None], stats: Stats):
        self.enabled = enabled and same_host_available()
        self.min_bytes = min_bytes
        self.send_text = send_text
        self.stats = stats
        self._challenge: tuple[int, bytes] | None = None
        self.proven_pid: int | None = None
        self._challenged = False
        self._proof = 'none'  # 'proved', 'accepted', 'refused'
        self._peer_mode = 'copy'
        self._outstanding: dict[int, int] = {}
        self._free: list[int] = []
        #: a mapping peer's messages whose shm-done came and whose shm-free has not, oldest first: the
        #: region, kept for reuse once freed, or None when it was closed (too many kept)
        self._awaiting_free: dict[int, int | None] = {}
        self._forgotten_below = 0
        #: messages received whose mappings may be alive: how many, plus one until their shm-done
        self._mapped: dict[int, int] = {}
        #: whole-file mappings kept for read-only buffers, by the file's (st_dev, st_ino), most
        #: recently used last: a later message in the same file is read through the same mapping,
        #: whose pages are already entered (a new mapping faults on every 4 KiB page it reads)
        self._kept: collections.OrderedDict[tuple[int, int], mmap.mmap] = collections.OrderedDict()
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        #: set while no region awaits its shm-done (or the connection ended): a clean close waits
        #: for it, since a file closed earlier would be gone when the peer reaches its message
        self.drained = asyncio.Event()
        self.drained.set()
        self._closed = False

    @property
    def active(self) -> bool:
        """True while this side's large buffers go through files (the peer accepted its proof)."""
        return self._proof == 'accepted' and not self._closed

    def start(self) -> None:
        """Sends this side's challenge (when on): a region holding 32 random bytes."""
        if not self.enabled or self._closed:
            return
        secret = secrets.token_bytes(CHALLENGE_BYTES)
        try:
            fd = _make_region()
        except OSError:
            return  # no file can be made here: buffers come as frames
        os.pwrite(fd, secret, 0)
        self._challenge = (fd, secret)
        self.send_text(f'shm-challenge /proc/{os.getpid()}/fd/{fd} map')

    def control(self, text: str) -> None:
        kind, detail = parse_same_host_frame(text)
        if kind == 'challenge':
            self._on_challenge(text, *detail)
        elif kind == 'proof':
            self._on_answer(text, *detail)
        elif kind == 'no':
            self._on_answer(text, None, 0)
        elif kind in ('accept', 'reject'):
            if self._proof != 'proved':
                raise _unexpected(text, 'this side sent no proof awaiting an answer')
            self._proof = 'accepted' if kind == 'accept' else 'refused'
        elif kind == 'done':
            self._on_done(text, detail)
        else:
            self._on_free(text, detail)

    def _on_challenge(self, text: str, path: str, pid: int, mode: str) -> None:
        if self._challenged:
            raise _unexpected(text, 'the peer already sent its challenge')
        self._challenged = True
        self._peer_mode = mode
        if not self.enabled or self._closed:
            self.send_text('shm-no')
            return
        secret = None
        try:
            fd, size = _open_region(path, 'the challenge')
            try:
                if size == CHALLENGE_BYTES:
                    secret = os.pread(fd, CHALLENGE_BYTES, 0)
            finally:
                os.close(fd)
        except (TransportError, OSError):
            pass  # another host, user or pid namespace: no proof
        if secret is None or len(secret) != CHALLENGE_BYTES:
            self.send_text('shm-no')
            return
        self._proof = 'proved'
        self.send_text(f'shm-proof {secret.hex()} {os.getpid()}')

    def _on_answer(self, text: str, hex: str | None, pid: int) -> None:
        if self._challenge is None:
            raise _unexpected(text, 'this side has no challenge awaiting an answer')
        fd, secret = self._challenge
        self._challenge = None
        os.close(fd)
        if hex is None:
            return
        ok = hmac.compare_digest(bytes.fromhex(hex), secret)
        if ok:
            self.proven_pid = pid
        self.send_text('shm-accept' if ok else 'shm-reject')

    def _on_done(self, text: str, id: int) -> None:
        fd = self._outstanding.pop(id, None)
        if fd is None:
            raise _unexpected(text, f'message {id} named no file awaiting it')
        if self._peer_mode == 'copy':
            self._reuse(fd)
        else:
            self._await_free(id, fd)
        if not self._outstanding:
            self.drained.set()

    def _await_free(self, id: int, fd: int) -> None:
        """A peer that maps keeps seeing the file until its shm-free: keep the region (a few at most)."""
        kept = [i for i, f in self._awaiting_free.items() if f is not None]
        if len(kept) >= _MAX_MAPPED_REGIONS:
            os.close(self._awaiting_free[kept[0]])
            self._awaiting_free[kept[0]] = None
        if self._closed:
            os.close(fd)
        self._awaiting_free[id] = None if self._closed else fd
        if len(self._awaiting_free) > _MAX_AWAITING_FREE:
            old = next(iter(self._awaiting_free))
            f = self._awaiting_free.pop(old)
            if f is not None:
                os.close(f)
            self._forgotten_below = max(self._forgotten_below, old)

    def _on_free(self, text: str, id: int) -> None:
        if id not in self._awaiting_free:
            if id <= self._forgotten_below and id not in self._outstanding:
                return
            raise _unexpected(text, f'message {id} named no file that awaits shm-free (none, its shm-done has not '
                                    'come, or shm-free came already)')
        fd = self._awaiting_free.pop(id)
        if fd is not None:
            self._reuse(fd)

    def _reuse(self, fd: int) -> None:
        """The peer no longer reads or maps this region: keep it for a later message (a few at most)."""
        if not self._closed and len(self._free) < _MAX_FREE_REGIONS:
            self._free.append(fd)
        else:
            os.close(fd)

    # receiving

    def places(self, h: dict[str, Any]) -> list[tuple[str, int] | None] | None:
        """The checked places of header h's buffers (x.sm), or None when it names none."""
        sm = (h.get('x') or {}).get('sm')
        if sm is None:
            return None
        def bad(why: str) -> TransportError:
            return TransportError('PROTOCOL', f"bad x.sm in message {h['id']}: {why}")
        if self.proven_pid is None:
            raise bad('this side accepted no same-host proof from the peer, so no buffer may come through a file')
        if not isinstance(sm, list) or len(sm) != len(h['b']):
            raise bad(f"it must be an array of {len(h['b'])} items (one per buffer), got {_short(sm)}")
        places: list[tuple[str, int] | None] = []
        for i, item in enumerate(sm):
            if item is None:
                places.append(None)
                continue
            if not isinstance(item, list) or len(item) != 2:
                raise bad(f'item {i} must be nil or [path, offset], got {_short(item)}')
            path, offset = item
            m = _PLACE_PATH.fullmatch(path) if isinstance(path, str) else None
            if m is None:
                raise bad(f"buffer {i}'s path must be /proc/<pid>/fd/<fd>, got {_short(path)}")
            if int(m.group(1)) != self.proven_pid:
                raise bad(f"buffer {i}'s path {path} is not in the proven process {self.proven_pid}")
            if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= 2 ** 53 - 1 or offset % PLACE_ALIGNMENT:
                raise bad(f"buffer {i}'s offset must be a non-negative multiple of {PLACE_ALIGNMENT}, got {_short(offset)}")
            if h['b'][i] == 0:
                raise bad(f'buffer {i} is empty and must come as a frame')
            places.append((path, offset))
        return places if any(p is not None for p in places) else None

    def map(self, place: tuple[str, int], size: int, what: str, id: int, readonly: bool = False) -> memoryview:
        """A view of `size` bytes at `place`, mapped copy-on-write (MAP_PRIVATE): writable, its writes
        staying in this process, or with `readonly` a read-only view through a mapping of the
        whole file that this side keeps for later messages in the same file. TransportError when
        the file is gone, not a region, or short. Once every view of message `id` is gone (and
        its shm-done sent), shm-free tells the peer."""
        path, offset = place
        fd, file_size = _open_region(path, what)
        try:
            if file_size < offset + size:
                raise TransportError('PROTOCOL', f'the file of {what} ({path}) holds {file_size} bytes, short of the {size} '
                                                 f'announced at offset {offset}')
            if readonly:
                view = self._kept_view(fd, file_size, offset, size, id)
                self.stats.buffers_same_host_received += 1
                self.stats.bytes_same_host_received += size
                return view
            base = offset - offset % mmap.ALLOCATIONGRANULARITY
            # No MAP_POPULATE: on a private writable mapping it copies every page (as writes
            # would), and entering the pages up front made touching them no faster here.
            mapping = mmap.mmap(fd, size + offset - base, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE,
                                offset=base)
        finally:
            os.close(fd)
        self.stats.buffers_same_host_received += 1
        self.stats.bytes_same_host_received += size
        self._mapped[id] = self._mapped.get(id, 1) + 1
        weakref.finalize(mapping, self._unmapped_soon, id).atexit = False
        return memoryview(mapping)[offset - base:offset - base + size]

    def _kept_view(self, fd: int, file_size: int, offset: int, size: int, id: int) -> memoryview:
        """A read-only view of bytes offset..offset+size of the open file fd through the mapping of
        the whole file kept for it (made, or made again when the file grew past it). The view's
        exporter is an object of its own, so that its finalizer runs once no view of this message's
        bytes is left (the kept mapping outlives it); nothing writes through the mapping, so it
        keeps showing what the peer writes into the file after shm-free."""
        st = os.fstat(fd)
        key = (st.st_dev, st.st_ino)
        whole = self._kept.get(key)
        if whole is None or len(whole) < offset + size:
            # writable (copy-on-write) only so that ctypes can export it; only read-only views leave
            # (code that writes through a view's ctypes exporter, view.obj, gets a private page that
            # later messages in this file would show instead of the peer's bytes)
            whole = mmap.mmap(fd, file_size, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
            self._kept[key] = whole
        self._kept.move_to_end(key)
        while len(self._kept) > _MAX_KEPT_MAPPINGS:
            self._kept.popitem(last=False)  # unmapped once no view of it is left
        exporter = (ctypes.c_char * size).from_buffer(whole, offset)
        self._mapped[id] = self._mapped.get(id, 1) + 1
        weakref.finalize(exporter, self._unmapped_soon, id).atexit = False
        return memoryview(exporter).cast('B').toreadonly()

    def _unmapped_soon(self, id: int) -> None:
        """A mapping of message id is gone (its finalizer may run in any thread): count it in the loop's."""
        loop = self._loop
        if loop is None:
            self._unmapped(id)
            return
        try:
            loop.call_soon_threadsafe(self._unmapped, id)
        except RuntimeError:
            pass  # the loop is closed: so is the connection

    def _unmapped(self, id: int) -> None:
        n = self._mapped.get(id)
        if n is None:
            return
        if n > 1:
            self._mapped[id] = n - 1
            return
        del self._mapped[id]
        if not self._closed:
            self.send_text(f'shm-free {id}')

    def done(self, id: int) -> None:
        """Every file-borne buffer of message id is mapped (or never will be): shm-done, and shm-free
        at once when no mapping of it is alive."""
        if not self._closed:
            self.send_text(f'shm-done {id}')
        self._mapped.setdefault(id, 1)
        self._unmapped(id)

    # sending

    def place(self, id: int, buffers: list[memoryview]) -> list[list[Any] | None] | None:
        """Writes the buffers of message id of at least min_bytes into one region and returns x.sm,
        or None when every buffer goes as frames."""
        if not self.active or len(self._outstanding) >= MAX_OUTSTANDING_REGIONS:
            return None
        offsets: list[int] = []
        end = 0
        for b in buffers:
            n = b.nbytes
            if n >= self.min_bytes and n > 0:
                offsets.append(end)
                end += -(-n // PLACE_ALIGNMENT) * PLACE_ALIGNMENT
            else:
                offsets.append(-1)
        if end == 0:
            return None
        try:
            if self._free:
                fd = self._free.pop()
            else:
                fd = _make_region()
                self.stats.files_same_host_made += 1
        except OSError:
            return None
        sm: list[list[Any] | None] = []
        path = f'/proc/{os.getpid()}/fd/{fd}'
        try:
            for b, at in zip(buffers, offsets):
                if at < 0:
                    sm.append(None)
                    continue
                _pwrite_all(fd, memoryview(b).cast('B'), at)
                sm.append([path, at])
        except OSError:
            os.close(fd)  # tmpfs full, say: this message goes as frames
            return None
        self._outstanding[id] = fd
        self.drained.clear()
        for b, at in zip(buffers, offsets):
            if at >= 0:
                self.stats.buffers_same_host_sent += 1
                self.stats.bytes_same_host_sent += b.nbytes
        return sm

    def unplace(self, id: int) -> None:
        fd = self._outstanding.pop(id, None)
        if fd is not None:
            os.close(fd)
        if not self._outstanding:
            self.drained.set()

    def close(self) -> None:
        """Closes every file this side holds for the connection (it closed or failed)."""
        self._closed = True
        fds = list(self._outstanding.values()) + self._free + [f for f in self._awaiting_free.values() if f is not None]
        self._awaiting_free.clear()
        self._mapped.clear()
        self._kept.clear()
        if self._challenge is not None:
            fds.append(self._challenge[0])
        self._challenge = None
        self._outstanding.clear()
        self._free.clear()
        self.drained.set()
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass


# -- receiving ----------------------------------------------------------------------------------

@dataclass
class _Message:
    header: dict[str, Any]
    pickle: bytes
    buffers: list[bytes]
    nbytes: int


class _Receiver:
    """header -> pickle -> buffers -> [MAC]: the same state machine as the Node receiver. On
    version 3 a buffer may come in chunks, written into one bytearray of its announced size,
    and a text frame `cancel <id>` drops the message in progress."""
    HEADER, PICKLE, BUFFER, MAC = range(4)

    def __init__(self, limits: Limits, key: bytes | None, peer: str, version: int = PROTOCOL_VERSION):
        self.limits, self.key, self.peer, self.version = limits, key, peer, version
        self.next_id = 1
        #: called with a progress dict after each payload frame, when set
        self.on_progress: Callable[[dict[str, int]], Any] | None = None
        #: called with the id of a refuse frame (the peer dropped a message this side sends)
        self.on_refuse: Callable[[int], Any] | None = None
        #: version 3: maps buffers that come through files and takes the shm-* text frames
        self.same_host: _SameHost | None = None
        #: the socket's writable option: a mapped buffer that is not read-only is then a writable view
        self.writable = False
        self.cancelled_by_peer = 0
        self.discarded = 0
        self._reset()

    def discard(self, id: int) -> bool:
        """Drops message `id` while it arrives: its frames are checked and dropped. False when
        that message is not in progress."""
        if self.state == self.HEADER or self.header is None or self.header['id'] != id or self.discarding:
            return False
        self.discarding = True
        self.partial = None
        self.buffers = []
        self.pickle = None
        return True

    def _report(self, buffer: int, n: int, buffer_bytes: int, buffer_total: int) -> None:
        self.done += n
        if self.on_progress is not None and not self.discarding:
            self.on_progress({'id': self.header['id'], 'bytes': self.done, 'total': self.total, 'buffer': buffer,
                              'buffer_bytes': buffer_bytes, 'buffer_total': buffer_total})

    def _on_cancel(self, id: int) -> None:
        h = self.header
        if h is None:
            raise TransportError('PROTOCOL', f'a cancel frame for message {id} between messages: no message is in progress')
        if h['id'] != id:
            raise TransportError('PROTOCOL', f'a cancel frame for message {id} {self.progress()}')
        if self.owes_done and self.same_host is not None:
            self.same_host.done(id)
        if self.discarding:
            self.discarded += 1  # this side dropped it first; the sender heard and stopped
        else:
            self.cancelled_by_peer += 1
        self.next_id += 1
        self._reset()

    def _on_buffer(self, frame: bytes) -> _Message | None:
        h = self.header
        i = len(self.buffers)
        size = h['b'][i]
        n = len(frame)
        if self.version < 3 or (self.filled == 0 and n == size):
            self._expect(frame, size, f'buffer {i}')
            if self.mac is not None:
                self.mac.update(frame)
            self.buffers.append(b'' if self.discarding else frame)
            self._report(i, size, size, size)
            return self._next()
        if n == 0:
            raise TransportError('PROTOCOL', f"an empty chunk of buffer {i} of message {h['id']}")
        if self.filled + n > size:
            raise TransportError('PROTOCOL', f"a chunk of {n} bytes of buffer {i} of message {h['id']} goes past its "
                                             f'{size} bytes ({self.filled} already arrived): frames beyond the announced size')
        if self.filled == 0:
            if self.mac is not None:
                self.mac.begin(size)
            # one memory of the announced size, checked against the limits with the header
            self.partial = None if self.discarding else bytearray(size)
        if self.mac is not None:
            self.mac.data(frame)
        if self.partial is not None:
            memoryview(self.partial)[self.filled:self.filled + n] = frame
        self.filled += n
        self._report(i, n, self.filled, size)
        if self.filled < size:
            return None
        self.buffers.append(self.partial if self.partial is not None else b'')
        self.partial = None
        self.filled = 0
        return self._next()

    def _reset(self) -> None:
        self.state = self.HEADER
        self.header: dict[str, Any] | None = None
        self.pickle: bytes | None = None
        self.buffers: list[bytes] = []
        self.nbytes = 0
        self.mac: _Mac | None = None
        self.inline = False
        self.partial: bytearray | None = None
        self.filled = 0
        self.done = 0
        self.total = 0
        self.discarding = False
        #: where the message's buffers are (None: all come as frames), and whether shm-done is owed
        self.places: list[tuple[str, int] | None] | None = None
        self.owes_done = False

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
            if self.version < 3:
                raise TransportError('PROTOCOL', f'a text frame {self.progress()}; picklewire sends binary frames only')
            if frame.startswith('shm-'):
                if self.same_host is None:
                    raise TransportError('PROTOCOL', f'a same-host frame ({frame[:20]}...) to a side without a same-host path')
                self.same_host.control(frame)
                return None
            kind, id = parse_control_frame(frame)
            if kind == 'refuse':
                if self.on_refuse is not None:
                    self.on_refuse(id)
            else:
                self._on_cancel(id)
            return None
        self.nbytes += len(frame)
        if self.state == self.HEADER:
            self._on_header(frame)
            if not self.inline:
                return None
            self._report(-1, self.header['p'], self.header['p'], self.header['p'])
            return self._next()  # the pickle came inline: buffers, the MAC, or the end of the message
        h = self.header
        assert h is not None
        if self.state == self.BUFFER:
            return self._on_buffer(frame)
        if self.state == self.PICKLE:
            self._expect(frame, h['p'], 'the pickle frame')
            self.pickle = None if self.discarding else frame
            self._report(-1, h['p'], h['p'], h['p'])
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
        places = self.places
        if places is not None:
            while len(self.buffers) < len(places) and places[len(self.buffers)] is not None:
                self._map_placed()
        if len(self.buffers) < len(self.header['b']):
            self.state = self.BUFFER
            return None
        if self.mac is not None:
            self.state = self.MAC
            return None
        return self._complete()

    def _map_placed(self) -> None:
        """Maps the next buffer from the file its place names (a discarded message's too, when a MAC
        needs its bytes), and tells the peer once the message's last such buffer is mapped."""
        h = self.header
        i = len(self.buffers)
        size = h['b'][i]
        view = None
        if not self.discarding or self.mac is not None:
            writable = self.writable and not h['ro'][i]
            view = self.same_host.map(self.places[i], size, f"buffer {i} of message {h['id']}", h['id'], readonly=not writable)
            if self.mac is not None:
                self.mac.update(view)
        self.buffers.append(b'' if self.discarding or view is None else view)
        self._report(i, size, size, size)
        if all(p is None for p in self.places[i + 1:]):
            self.owes_done = False
            self.same_host.done(h['id'])

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
        if self.same_host is not None:
            self.places = self.same_host.places(h)
        elif x.get('sm') is not None:
            raise TransportError('PROTOCOL', f"bad x.sm in message {h['id']}: this side accepted no same-host proof from "
                                             'the peer, so no buffer may come through a file')
        self.owes_done = self.places is not None
        self.header = h
        self.done = 0
        self.total = h['p'] + sum(h['b'])
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

    def _complete(self) -> _Message | None:
        m = _Message(self.header, self.pickle, self.buffers, self.nbytes)
        discarded = self.discarding
        self.next_id += 1
        self._reset()
        if discarded:
            self.discarded += 1
            return None
        return m


# -- the frame gate -----------------------------------------------------------------------------

_DATA_OPCODES = (_Opcode.TEXT, _Opcode.BINARY, _Opcode.CONT)
#: Largest control frame payload (RFC 6455): a ping may come between any two frames.
_MAX_CONTROL_BYTES = 125


class _FrameGate:
    """Gives websockets a limit for each incoming frame, from inside its parser: a frame in
    header position may not be longer than MAX_HEADER_BYTES, and each frame after a header not
    longer than that header announced. websockets reads a frame's length before its payload,
    so a frame over its limit is refused before any of it is buffered: memory before a valid
    header (and before authentication) stays within the header limit, not max_message_bytes.
    The limit must be set from inside the parser, not from recv()'s side: the parser runs
    ahead of recv() and starts the next frame as soon as its bytes arrive.
    """

    def __init__(self, connection: Any, limits: Limits):
        p = connection.protocol
        self.connection, self.protocol, self.limits = connection, p, limits
        # websockets >= 14 names it max_message_size; 13 max_size
        self._attr = 'max_message_size' if hasattr(p, 'max_message_size') else 'max_size'
        # (bytes, what, chunked) of the frames the last header announced, still to come; a
        # chunked entry (a version 3 buffer) takes frames until its bytes are used up
        self.expect: list[tuple[int, str, bool]] = []
        self.header_id: int | None = None
        self.version = 1
        self._op: Any = None  # the opcode of the data message whose fragments are arriving
        self._size = 0
        self._refuse = False
        self._parts: list[bytes] = []
        self.error: TransportError | None = None
        self._recv_frame, self._fail = p.recv_frame, p.fail
        p.recv_frame, p.fail = self.recv_frame, self.fail
        self._limit(MAX_HEADER_BYTES)

    def _limit(self, n: int) -> None:
        setattr(self.protocol, self._attr, max(n, _MAX_CONTROL_BYTES))

    def recv_frame(self, frame: Any) -> None:
        self._recv_frame(frame)
        if frame.opcode not in _DATA_OPCODES:
            return
        if self.expect:
            if frame.opcode != _Opcode.CONT:
                self._op, self._size = frame.opcode, 0
                # a refuse or same-host frame is about this side's own messages or the
                # connection: the peer's message goes on
                self._refuse = frame.opcode == _Opcode.TEXT and (bytes(frame.data[:7]) == b'refuse '
                                                                 or bytes(frame.data[:4]) == b'shm-')
            self._size += len(frame.data)
            if frame.fin:
                n, what, chunked = self.expect[0]
                if self._op == _Opcode.TEXT and self.version >= 3:
                    if not self._refuse:
                        self.expect = []  # a cancel frame: the receiver checks it
                elif chunked and 0 < self._size < n:
                    self.expect[0] = (n - self._size, what, True)
                else:
                    self.expect.pop(0)
                self._limit(self.expect[0][0] if self.expect else MAX_HEADER_BYTES)
            return
        self._parts.append(frame.data)
        if not frame.fin:
            return
        data, self._parts = b''.join(self._parts), []
        version = self.version = version_of_subprotocol(getattr(self.connection, 'subprotocol', None))
        try:
            h = decode_header(data, self.limits, version)
        except TransportError:
            return  # the receiver reports this header's fault; the next frame is limited as a header
        self.header_id = h['id']
        frames = [] if 'pk' in h else [(h['p'], 'the pickle frame', False)]
        sm = (h.get('x') or {}).get('sm')
        placed = sm if isinstance(sm, list) and len(sm) == len(h['b']) else [None] * len(h['b'])
        # a buffer with a place in x.sm comes through a file, not a frame
        frames += [(n, f'buffer {i}', version >= 3) for i, n in enumerate(h['b']) if placed[i] is None]
        if (h.get('x') or {}).get('auth') is not None:
            frames.append((MAC_BYTES, 'the MAC frame', False))
        self.expect = frames
        self._limit(frames[0][0] if frames else MAX_HEADER_BYTES)

    def fail(self, code: int, reason: str = '') -> None:
        if code == 1009 and self.error is None:  # websockets' PayloadTooBig, raised by the limit set here
            m = re.search(r'(\d+) bytes', reason)
            size = m.group(1) if m else 'too many'
            if self.expect:
                n, what, chunked = self.expect[0]
                if chunked:
                    self.error = TransportError('PROTOCOL', f'a chunk of {size} bytes of {what} of message {self.header_id} '
                                                            f'goes past its announced size ({n} bytes remain): frames beyond '
                                                            'the announced size')
                else:
                    self.error = TransportError('PROTOCOL', f'{what} of message {self.header_id} is {size} bytes; its header '
                                                            f'announced {n} (frames truncated, lost or out of order)')
                code = self.error.close_code()
            else:
                self.error = TransportError('LIMIT', f'a frame of {size} bytes in header position is over the header '
                                                     f'limit of {MAX_HEADER_BYTES} bytes')
                code = CLOSE.TOO_BIG  # as the spec and the Node side close for it
            reason = _close_reason(str(self.error))
        self._fail(code, reason)


def _gated(base: type, limits: Limits) -> type:
    """A websockets connection class whose frames pass a _FrameGate from the first byte on."""
    class Gated(base):
        def __init__(self, *args: Any, **kwargs: Any):
            super().__init__(*args, **kwargs)
            self.picklewire_gate = _FrameGate(self, limits)
    return Gated


# -- the connection -----------------------------------------------------------------------------

RequestHandler = Callable[[Any], Any]  # may return an awaitable
_END = object()


def _close_error(code: int | None, reason: str) -> TransportError:
    what = f'{code} ({reason})' if reason else str(code)
    kind = 'CLOSED' if code is None else _ERROR_CODE_BY_CLOSE.get(code, 'CLOSED')
    return TransportError(kind, f'the peer closed the connection with {what}')


class PickleSocket:
    """One picklewire connection over a websockets connection (client or server side).

    send() and request() may be called from several tasks: each message's frames go out
    together, in call order. Received values arrive in order through recv() or `async for`.
    """

    def __init__(self, ws: _ClientConnection | _ServerConnection, role: str, *, key: bytes | str | None = None, limits: Limits = DEFAULT_LIMITS,
                 on_request: RequestHandler | None = None, queue_size: int = 16, writable: bool = False,
                 unpickler: type[pickle.Unpickler] | None = None, allow: Iterable[str] = (),
                 out_of_band: Callable[[pickle.PickleBuffer], bool] | None = None,
                 max_concurrent_requests: int = 64, reply_high_water: int = 8 * 2 ** 20,
                 chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                 on_progress: Callable[[dict[str, int]], Any] | None = None,
                 same_host: bool = True, same_host_min_bytes: int = DEFAULT_SAME_HOST_MIN_BYTES) -> None:
        allow = _check_unpickling(unpickler, allow)
        _check_same_host(same_host, same_host_min_bytes)
        _check_reply_bounds(max_concurrent_requests, reply_high_water)
        _check_chunk_bytes(chunk_bytes)
        if on_progress is not None and not callable(on_progress):
            raise TypeError(f'on_progress must be callable, got {on_progress!r}')
        if isinstance(key, str):
            key = key.encode()
        self.ws = ws
        self.role = role
        self.key = key or None
        self.limits = limits
        self.on_request = on_request
        self.writable = writable
        self.unpickler = unpickler
        #: names admitted besides DEFAULT_ALLOWED by the default RestrictedUnpickler
        self.allow = allow
        self.out_of_band = out_of_band
        self.stats = Stats()
        self.error: BaseException | None = None
        #: the protocol version the handshake selected (its subprotocol): 2 or 1
        self.version = version_of_subprotocol(getattr(ws, 'subprotocol', None))
        #: version 3: buffers larger than this are sent as frames of at most this many bytes
        self.chunk_bytes = chunk_bytes
        self._receiver = _Receiver(limits, self.key, 'server' if role == 'client' else 'client', self.version)
        self._receiver.on_progress = on_progress
        self._receiver.on_refuse = self._on_refuse
        self._receiver.writable = writable
        #: version 3: the same-host path of both directions (answers the peer's challenge even when off)
        self._same_host: _SameHost | None = None
        if self.version >= 3:
            self._same_host = _SameHost(same_host, same_host_min_bytes, self._send_text, self.stats)
            self._receiver.same_host = self._same_host
        self._sending: int | None = None  # the id of the message whose frames are being written
        self._refused: int | None = None  # the peer refused that message
        self._gate: _FrameGate | None = getattr(ws, 'picklewire_gate', None)
        self._queue: asyncio.Queue = asyncio.Queue(maxsize=queue_size)
        self._send_lock = asyncio.Lock()
        self._next_id = 1
        self._pending: dict[int, asyncio.Future] = {}
        self._tasks: set[asyncio.Task] = set()
        self.max_concurrent_requests = max_concurrent_requests
        self.reply_high_water = reply_high_water
        self._answering = 0  # requests from arrival until their reply is written
        self._unwritten_reply_bytes = 0
        self._answer_room = asyncio.Event()
        self._closing = False
        self.closed: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._read())
        if self._same_host is not None:
            self._same_host.start()

    # sending

    async def send(self, value: Any, *, x: dict[str, Any] | None = None,
                   on_progress: Callable[[dict[str, int]], Any] | None = None) -> None:
        """Sends a value as one message; returns once every byte of it is written to the socket
        (handed to the kernel). Raises TransportError('CLOSED'), or the connection's error, when
        the connection is closed or closes first: the message then counts as not sent.

        on_progress: called after each frame with payload is written (each chunk on version 3)
        with {'id', 'bytes', 'total', 'buffer', 'buffer_bytes', 'buffer_total'} (buffer -1: the
        pickle). Cancelling the task that awaits send() on version 3 stops the message between
        two frames and sends a cancel frame: the peer drops it, and the connection stays usable."""
        if on_progress is not None and not callable(on_progress):
            raise TypeError(f'on_progress must be callable, got {on_progress!r}')
        await self._send(encode_value(value, self.out_of_band), KIND_MESSAGE, x=x, on_progress=on_progress)

    @property
    def on_progress(self) -> Callable[[dict[str, int]], Any] | None:
        """Called after each payload frame received (each chunk on version 3) with {'id', 'bytes',
        'total', 'buffer', 'buffer_bytes', 'buffer_total'}; None for none. Settable."""
        return self._receiver.on_progress

    @on_progress.setter
    def on_progress(self, callback: Callable[[dict[str, int]], Any] | None) -> None:
        if callback is not None and not callable(callback):
            raise TypeError(f'on_progress must be callable, got {callback!r}')
        self._receiver.on_progress = callback

    def discard(self, id: int) -> bool:
        """Drops message `id` while it arrives (from an on_progress callback, say): nothing of it
        is delivered, and the next message arrives as usual. On version 3 a refuse frame tells
        the sender, which stops sending it; frames already on their way are read, checked and
        dropped. False when that message is not in progress."""
        if not self._receiver.discard(id):
            return False
        if self.version >= 3:
            task = asyncio.ensure_future(self._send_refuse(id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return True

    @property
    def same_host(self) -> bool:
        """True while this side's out-of-band buffers of at least same_host_min_bytes travel through
        files (the peer proved it runs on this host and accepted this side's proof); False while
        they go as frames."""
        return self._same_host is not None and self._same_host.active

    def _send_text(self, text: str) -> None:
        """Writes a same-host text frame without waiting (tasks start, and write, in call order)."""
        task = asyncio.ensure_future(self._send_text_now(text))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_text_now(self, text: str) -> None:
        try:
            await self.ws.send(text)
        except ConnectionClosed:
            pass

    async def _send_refuse(self, id: int) -> None:
        try:
            await self.ws.send(refuse_frame(id))
        except ConnectionClosed:
            pass

    def _on_refuse(self, id: int) -> None:
        if id == 0 or id >= self._next_id:
            raise TransportError('PROTOCOL', f'a refuse frame for message {id}, which this side has not sent')
        if self._sending == id:
            self._refused = id

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
                    pending: asyncio.Future | None = None,
                    on_progress: Callable[[dict[str, int]], Any] | None = None) -> int:
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
            places = None
            if self._same_host is not None and parts.buffers:
                places = self._same_host.place(id, parts.buffers)
                if places is not None:
                    extras['sm'] = places
            try:
                header = None
                if self.version >= 2 and len(parts.pickle) <= MAX_INLINE_PICKLE_BYTES:
                    header = encode_header(v=self.version, id=id, k=kind, p=len(parts.pickle), b=lengths,
                                           ro=parts.readonly, re=re, x=extras, pk=parts.pickle)
                    if len(header) > MAX_HEADER_BYTES:
                        header = None  # large extras: the pickle goes in a frame of its own after all
                p = len(parts.pickle)
                if header is not None:
                    frames: list[Any] = [header]
                    part = [-1]
                else:
                    header = encode_header(v=self.version, id=id, k=kind, p=p, b=lengths,
                                           ro=parts.readonly, re=re, x=extras)
                    frames = [header, parts.pickle]
                    part = [-2, -1]
            except BaseException:
                if places is not None:
                    self._same_host.unplace(id)  # the message is not sent: its file is free
                raise
            mac = _Mac(self.key, self.role) if self.key is not None else None
            if mac is not None:
                for f in frames:
                    mac.update(f)
            chunked: set[int] = set()  # the frames that are chunks of a larger buffer
            chunk = self.chunk_bytes if self.version >= 3 else None
            for i, b in enumerate(parts.buffers):
                view = memoryview(b).cast('B')
                if places is not None and places[i] is not None:
                    if mac is not None:
                        mac.update(view)  # in a file: no frame; the MAC covers its bytes as if they were one
                    continue
                if chunk is None or view.nbytes <= chunk:
                    frames.append(b)
                    part.append(i)
                    if mac is not None:
                        mac.update(view)
                    continue
                if mac is not None:
                    mac.begin(view.nbytes)
                for at in range(0, view.nbytes, chunk):
                    piece = view[at:at + chunk]
                    frames.append(piece)
                    part.append(i)
                    chunked.add(len(frames) - 1)
                    if mac is not None:
                        mac.data(piece)
            if mac is not None:
                frames.append(mac.digest())
                part.append(-2)
            if pending is not None:
                self._pending[id] = pending
            total = p + sum(lengths)
            self._sending, self._refused = id, None
            done = 0
            buffer_done = [0] * len(lengths)
            k = 0
            try:
                for k, f in enumerate(frames):
                    await self.ws.send(f)
                    if k in chunked and k < len(frames) - 1:
                        # send() does not yield while the socket takes the bytes: yield between
                        # chunks, so that other tasks run (a progress bar, a cancel) mid-message
                        await asyncio.sleep(0)
                        if self._refused == id:
                            self.stats.messages_cancelled += 1
                            self._pending.pop(id, None)
                            await self.ws.send(cancel_frame(id))
                            raise TransportError('REMOTE', f'the peer refused message {id} while it was being sent')
                    if on_progress is not None and part[k] != -2:
                        i = part[k]
                        reports = [(i, p if i == -1 else memoryview(f).nbytes)]
                        if i == -1 and places is not None:
                            # buffers that went through files are done once the frame with the pickle is
                            reports += [(j, lengths[j]) for j, place in enumerate(places) if place is not None]
                        for i, n in reports:
                            done += n
                            if i >= 0:
                                buffer_done[i] += n
                            try:
                                on_progress({'id': id, 'bytes': done, 'total': total, 'buffer': i,
                                             'buffer_bytes': buffer_done[i] if i >= 0 else n,
                                             'buffer_total': lengths[i] if i >= 0 else n})
                            except Exception:
                                pass  # a failing progress callback must not break the message
            except asyncio.CancelledError:
                # websockets writes a frame before it awaits: frames 0..k are out. On version 3
                # a cancel frame tells the peer to drop the message; the connection stays usable.
                self._pending.pop(id, None)
                if self.version >= 3 and k < len(frames) - 1:
                    self.stats.messages_cancelled += 1
                    try:
                        await self.ws.send(cancel_frame(id))
                    except ConnectionClosed:
                        pass
                raise
            except ConnectionClosed:
                raise self._closed_error() from None
            finally:
                self._sending = None
            if self.ws.transport.is_closing():
                # asyncio drops what it could not write when the socket fails, without telling
                # the writer: a message whose last bytes met a closing transport is not sent
                # (with websockets' write_limit 0, send() returned only once the kernel had them)
                self._pending.pop(id, None)
                raise self._closed_error()
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
        return self.error or TransportError('CLOSED', 'the connection is closed: the message was not (wholly) written')

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

    def __aiter__(self) -> PickleSocket:
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
            if isinstance(frame, bytearray):
                # a version 3 buffer that came in chunks: already this side's own memory
                buffers.append(pickle.PickleBuffer(frame if self.writable and not ro else memoryview(frame).toreadonly()))
            elif isinstance(frame, memoryview):
                # a same-host buffer, mapped copy-on-write: writable at no cost, but only where a
                # buffer that came as frames would be too (writable=True and not read-only)
                buffers.append(pickle.PickleBuffer(frame if self.writable and not ro else frame.toreadonly()))
            elif self.writable and not ro:
                copy = bytearray(frame)
                self.stats.bytes_copied += len(copy)
                buffers.append(pickle.PickleBuffer(copy))
            else:
                buffers.append(pickle.PickleBuffer(frame))
        if self.unpickler is None:
            return _load_once(RestrictedUnpickler(io.BytesIO(m.pickle), buffers=buffers, allow=self.allow))
        return _load_once(self.unpickler(io.BytesIO(m.pickle), buffers=buffers))

    async def _read(self) -> None:
        error: BaseException | None = None
        try:
            while True:
                frame = await self.ws.recv()
                if not (isinstance(frame, str) and frame.startswith('shm-')):  # same-host frames are no message's
                    self.stats.frames_received += 1
                m = self._receiver.push(frame)
                self.stats.messages_cancelled_by_peer = self._receiver.cancelled_by_peer
                self.stats.messages_discarded = self._receiver.discarded
                if m is not None:
                    self.stats.messages_received += 1
                    self.stats.bytes_received += m.nbytes
                    if m.header['k'] == KIND_REQUEST:
                        await self._room_to_answer()
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
            if self._gate is not None and self._gate.error is not None:
                error = self._gate.error
            elif self._receiver.in_message:
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

    async def _room_to_answer(self) -> None:
        """Reading pauses here (and TCP makes the peer wait) while a peer that does not read its
        replies would make this side hold more of them."""
        paused = False
        while self._answering >= self.max_concurrent_requests or self._unwritten_reply_bytes > self.reply_high_water:
            if not paused:
                self.stats.request_pauses += 1
                paused = True
            self._answer_room.clear()
            await self._answer_room.wait()

    def _end(self, error: BaseException | None) -> None:
        if self.error is None:
            self.error = error
        if self._same_host is not None:
            self._same_host.close()
        self._answer_room.set()
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
            extras = {key: v for key, v in (h.get('x') or {}).items() if key not in ('al', 'auth', 'sm')}
            if extras:
                info['x'] = extras
            try:
                item = ('value', self._decode(m), info)
            except Exception as e:
                item = ('error', e, info)
            await self._queue.put(item)
        elif k == KIND_REQUEST:
            self._answering += 1
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
        nbytes = 0
        try:
            try:
                value = self._decode(m)
                del m  # the request's frames are not kept while its reply is made and written
                if self.on_request is None:
                    raise RuntimeError('no request handler on this side')
                reply = self.on_request(value)
                if asyncio.iscoroutine(reply) or isinstance(reply, asyncio.Future):
                    reply = await reply
                parts, kind = encode_value(reply, self.out_of_band), KIND_REPLY
            except Exception as e:
                parts, kind = encode_value({'type': type(e).__name__, 'message': str(e)}), KIND_ERROR
            nbytes = len(parts.pickle) + sum(b.nbytes for b in parts.buffers)
            self._unwritten_reply_bytes += nbytes
            try:
                await self._send(parts, kind, re=id)
            except (TransportError, ConnectionClosed):
                pass
        finally:
            self._unwritten_reply_bytes -= nbytes
            self._answering -= 1
            self._answer_room.set()

    # closing

    async def close(self, code: int = CLOSE.NORMAL, reason: str = '') -> BaseException | None:
        """Closes cleanly (messages already sent go first, and the peer has mapped or read those
        whose buffers went through files) and returns the connection's error, if any."""
        if not self._closing:
            self._closing = True
            async with self._send_lock:
                if self._same_host is not None:
                    # the peer maps or reads every file named so far first (as long as the close
                    # handshake may take): a file closed earlier is gone when the peer reaches it
                    try:
                        await asyncio.wait_for(self._same_host.drained.wait(), 10)
                    except asyncio.TimeoutError:
                        pass
                await self.ws.close(code, reason)
        try:
            await asyncio.wait_for(asyncio.shield(self.closed), 10)
        except asyncio.TimeoutError:
            self._reader.cancel()
        return self.error

    async def __aenter__(self) -> 'PickleSocket':
        return self

    async def __aexit__(self, *exc: object) -> None:
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

def _check_reply_bounds(max_concurrent_requests: Any, reply_high_water: Any) -> None:
    for name, v, least in (('max_concurrent_requests', max_concurrent_requests, 1), ('reply_high_water', reply_high_water, 0)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f'{name} must be an int, got {v!r}')
        if v < least:
            raise ValueError(f'{name} must be at least {least}, got {v}')


def _check_unpickling(unpickler: Any, allow: Iterable[str]) -> frozenset[str]:
    if unpickler is not None and not (isinstance(unpickler, type) and issubclass(unpickler, pickle.Unpickler)):
        raise TypeError(f'unpickler must be a pickle.Unpickler subclass (or None for RestrictedUnpickler), got {unpickler!r}')
    if isinstance(allow, str):
        raise TypeError(f'allow must be an iterable of "module.name" strings, not the string {allow!r}')
    names = frozenset(allow)
    for name in names:
        if not isinstance(name, str) or '.' not in name.strip('.'):
            raise TypeError(f'allow holds "module.name" strings, got {name!r}')
    if names and unpickler is not None:
        raise TypeError('allow= widens the default RestrictedUnpickler; with unpickler= given, set allow on that class instead')
    return names


def _check_same_host(same_host: Any, same_host_min_bytes: Any) -> None:
    if not isinstance(same_host, bool):
        raise TypeError(f'same_host must be a bool, got {same_host!r}')
    if isinstance(same_host_min_bytes, bool) or not isinstance(same_host_min_bytes, int):
        raise TypeError(f'same_host_min_bytes must be an int, got {same_host_min_bytes!r}')
    if same_host_min_bytes < 1:
        raise ValueError(f'same_host_min_bytes must be at least 1, got {same_host_min_bytes}')


def _check_chunk_bytes(chunk_bytes: Any) -> None:
    if not isinstance(chunk_bytes, int) or isinstance(chunk_bytes, bool) or chunk_bytes < 1:
        raise ValueError(f'chunk_bytes must be a positive int, got {chunk_bytes!r}')


def _check_version(version: int) -> None:
    if version not in PROTOCOL_VERSIONS:
        raise ValueError(f'protocol_version must be one of {PROTOCOL_VERSIONS}, got {version!r}')


def _ws_options(limits: Limits, heartbeat_interval: float | None, heartbeat_timeout: float | None,
                ws_options: dict[str, Any]) -> dict[str, Any]:
    return {
        'compression': None,  # permessage-deflate would copy (and compress) every tensor
        # send() returns when every byte is in the kernel: a message asyncio still buffers when
        # the peer dies is lost without an error, so it must not count as sent
        'write_limit': 0,
        # the first frame is a header; _FrameGate sets the limit of each frame after it
        'max_size': MAX_HEADER_BYTES,
        'ping_interval': heartbeat_interval,
        'ping_timeout': heartbeat_timeout,
        **ws_options,
    }


async def connect(uri: str, *, key: bytes | str | None = None, limits: Limits = DEFAULT_LIMITS,
                  on_request: RequestHandler | None = None, queue_size: int = 16, writable: bool = False,
                  unpickler: type[pickle.Unpickler] | None = None, allow: Iterable[str] = (),
                  max_concurrent_requests: int = 64, reply_high_water: int = 8 * 2 ** 20,
                  heartbeat_interval: float | None = 20,
                  heartbeat_timeout: float | None = 20,
                  out_of_band: Callable[[pickle.PickleBuffer], bool] | None = None,
                  protocol_version: int = LATEST_VERSION, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                  on_progress: Callable[[dict[str, int]], Any] | None = None, same_host: bool = True,
                  same_host_min_bytes: int = DEFAULT_SAME_HOST_MIN_BYTES, **ws_options: Any) -> PickleSocket:
    """Connects to a picklewire server (ws:// or wss://; pass ssl= for TLS options).

    key: shared HMAC-SHA256 key (both sides need it). limits: checked on every header.
    on_request: answers the peer's requests (sync or async). queue_size: received messages
    held before reading pauses. writable: copy each writable buffer into a bytearray on
    receipt (default False: values come back over the received bytes, read-only).
    unpickler: the pickle.Unpickler subclass that loads received pickles. Default: a
    RestrictedUnpickler, which admits plain data and numpy only (DEFAULT_ALLOWED) and refuses
    any other global with an UnpicklingError naming it; pickle.Unpickler trusts the peer fully.
    allow: "module.name" globals the default RestrictedUnpickler admits besides DEFAULT_ALLOWED.
    heartbeat_interval / heartbeat_timeout: websockets' ping_interval / ping_timeout, seconds.
    max_concurrent_requests / reply_high_water: reading pauses (and TCP makes the peer wait)
    while this many of the peer's requests are being answered (default 64), or while replies of
    more than this many bytes are not yet written (default 8 MiB): a peer that never reads its
    replies makes this side hold at most that much.
    protocol_version: the newest version to offer (3: picklewire.v3, .v2, .v1; 2: .v2, .v1; 1: .v1 only).
    chunk_bytes: version 3: a buffer larger than this is sent as frames of at most this many
    bytes (default DEFAULT_CHUNK_BYTES, 1 MiB). on_progress: called after each payload frame
    received, with {'id', 'bytes', 'total', 'buffer', 'buffer_bytes', 'buffer_total'}; it may
    call sock.discard(id) to drop the message.
    same_host: version 3: when the peer proves it runs on this host (it can read this user's
    files), out-of-band buffers of at least same_host_min_bytes (default 1 MiB) travel through
    files without a name and the WebSocket carries only their place; this side maps what it
    receives (no copy). Buffers go as frames whenever a peer cannot prove it or turned it off.
    Linux only. Default True.
    Other keyword arguments go to websockets' connect().
    """
    _check_version(protocol_version)
    _check_unpickling(unpickler, allow)
    _check_reply_bounds(max_concurrent_requests, reply_high_water)
    _check_chunk_bytes(chunk_bytes)
    _check_same_host(same_host, same_host_min_bytes)
    ws = await _ws_connect(uri, subprotocols=_offered(protocol_version), create_connection=_gated(_ClientConnection, limits),
                           **_ws_options(limits, heartbeat_interval, heartbeat_timeout, ws_options))
    return PickleSocket(ws, 'client', key=key, limits=limits, on_request=on_request, queue_size=queue_size,
                        writable=writable, unpickler=unpickler, allow=allow, out_of_band=out_of_band,
                        max_concurrent_requests=max_concurrent_requests, reply_high_water=reply_high_water,
                        chunk_bytes=chunk_bytes, on_progress=on_progress, same_host=same_host,
                        same_host_min_bytes=same_host_min_bytes)


def serve(handler: Callable[[PickleSocket], Awaitable[None]], host: str = '127.0.0.1', port: int = 0, *,
          key: bytes | str | None = None, limits: Limits = DEFAULT_LIMITS, on_request: RequestHandler | None = None,
          queue_size: int = 16, writable: bool = False, unpickler: type[pickle.Unpickler] | None = None,
          allow: Iterable[str] = (), max_concurrent_requests: int = 64, reply_high_water: int = 8 * 2 ** 20,
          heartbeat_interval: float | None = 20, heartbeat_timeout: float | None = 20,
          out_of_band: Callable[[pickle.PickleBuffer], bool] | None = None, protocol_version: int = LATEST_VERSION,
          chunk_bytes: int = DEFAULT_CHUNK_BYTES, same_host: bool = True,
          same_host_min_bytes: int = DEFAULT_SAME_HOST_MIN_BYTES, **ws_options: Any) -> AsyncContextManager[_Server]:
    """Serves picklewire connections: `handler(sock)` runs for each; the connection closes
    when it returns. Use as `async with serve(...) as server:` (websockets' Server; the port is
    server.sockets[0].getsockname()[1]). Options as for connect(); others go to websockets' serve().
    The server selects the newest subprotocol a client offers, up to protocol_version.
    """
    _check_version(protocol_version)
    allow = _check_unpickling(unpickler, allow)
    _check_reply_bounds(max_concurrent_requests, reply_high_water)
    _check_chunk_bytes(chunk_bytes)
    _check_same_host(same_host, same_host_min_bytes)
    offered_here = _offered(protocol_version)
    async def on_connection(ws: _ServerConnection) -> None:
        sock = PickleSocket(ws, 'server', key=key, limits=limits, on_request=on_request, queue_size=queue_size,
                            writable=writable, unpickler=unpickler, allow=allow, out_of_band=out_of_band,
                            max_concurrent_requests=max_concurrent_requests, reply_high_water=reply_high_water,
                            chunk_bytes=chunk_bytes, same_host=same_host, same_host_min_bytes=same_host_min_bytes)
        try:
            await handler(sock)
        finally:
            await sock.close()

    def select_subprotocol(connection: _ServerConnection, offered: Sequence[_Subprotocol]) -> _Subprotocol | None:
        return next((name for name in offered_here if name in offered), None)

    return _ws_serve(on_connection, host, port, subprotocols=offered_here, select_subprotocol=select_subprotocol,
                     create_connection=_gated(_ServerConnection, limits),
                     **_ws_options(limits, heartbeat_interval, heartbeat_timeout, ws_options))
