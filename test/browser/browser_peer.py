"""The Python server of the browser tests (not part of the API).

    python3 browser_peer.py [--key K] [--count-backpressure N]

Serves picklewire on 127.0.0.1 (port printed as {"port": N}) until stdin closes. Each connection
first gets one message per case of CASES: {'name', 'array', 'dtype', 'shape', 'fortran',
'expect'} where `expect` is the array's elements in C order as plain Python values (complex as
[real, imag], datetime64 and timedelta64 as their int64 counts), then the string 'done'. After
that it answers requests:
    {'op': 'check', 'name': N, 'array': a}  'ok' when a equals CASES[N] (values, shape, dtype up
                                            to byte order, Fortran order kept), else why not
    {'op': 'describe', 'array': a}          [dtype.str, shape, a.tolist(), f_contiguous and not c]
    {'op': 'burst', 'count': N, 'mib': M}   sends N float32 arrays of M MiB, then answers with
                                            how many seconds the sends took
    {'op': 'big-then-next', 'mib': M}       sends a float32 array of M MiB, then 'after'; answers
                                            with how the array's send ended ('sent', or the
                                            TransportError's code and message) and
                                            messages_cancelled
    {'op': 'stats'}                         {'cancelled_by_peer', 'received'}: messages the page
                                            cancelled mid-way, and messages received whole
and echoes every other message.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'packages', 'transport', 'python'))
from picklewire import ws as pw  # noqa: E402


def _values(dtype: np.dtype, n: int, rng: np.random.Generator) -> np.ndarray:
    native = dtype.newbyteorder('=')
    if dtype.kind == 'b':
        return rng.integers(0, 2, n).astype(bool)
    if dtype.kind in 'iu':
        info = np.iinfo(native)
        return rng.integers(info.min, info.max, n, dtype=native, endpoint=True)
    if dtype.kind == 'f':
        return (rng.standard_normal(n) * 1000).astype(native)
    if dtype.kind == 'c':
        return (rng.standard_normal(n) + 1j * rng.standard_normal(n)).astype(native)
    if dtype.kind == 'S':
        return np.array([f'b{i}'.encode()[:dtype.itemsize] for i in range(n)], dtype=dtype)
    if dtype.kind == 'U':
        return np.array([chr(0x41 + i % 26) * (1 + i % 3) + ('é' if i % 4 == 0 else '') for i in range(n)], dtype=dtype)
    if dtype.kind in 'Mm':
        return (np.arange(n, dtype='i8') * 3_600_000 + 1_700_000_000_000).astype(native)
    raise ValueError(dtype)


# name: (dtype, shape, order)
SPECS = {
    'bool-2x3': ('|b1', (2, 3), 'C'),
    'int8-5': ('|i1', (5,), 'C'),
    'uint8-3x4-F': ('|u1', (3, 4), 'F'),
    'int16-0d': ('<i2', (), 'C'),
    'uint16-3x5x70-F': ('<u2', (3, 5, 70), 'F'),
    'int32-64x64': ('<i4', (64, 64), 'C'),
    'uint32-7': ('<u4', (7,), 'C'),
    'int64-2000': ('<i8', (2000,), 'C'),
    'uint64-4x300': ('<u8', (4, 300), 'C'),
    'float16-1024': ('<f2', (1024,), 'C'),
    'float32-256x256': ('<f4', (256, 256), 'C'),
    'float64-64x32-F': ('<f8', (64, 32), 'F'),
    'complex64-40x30': ('<c8', (40, 30), 'C'),
    'complex128-3': ('<c16', (3,), 'C'),
    'bytes5-4': ('|S5', (4,), 'C'),
    'str3-2x2': ('<U3', (2, 2), 'C'),
    'datetime64ms-6': ('<M8[ms]', (6,), 'C'),
    'timedelta64s-300': ('<m8[s]', (300,), 'C'),
    'empty-f4-0': ('<f4', (0,), 'C'),
    'empty-i4-0x5': ('<i4', (0, 5), 'C'),
    'empty-0d-f8': ('<f8', (), 'C'),
    'bigendian-i4-3x4': ('>i4', (3, 4), 'C'),
    'bigendian-f8-512': ('>f8', (512,), 'C'),
    'bigendian-c16-2x200-F': ('>c16', (2, 200), 'F'),
}


def make_cases() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(21)
    cases = {}
    for name, (dt, shape, order) in SPECS.items():
        dtype = np.dtype(dt)
        n = int(np.prod(shape)) if shape else 1
        a = _values(dtype, n, rng).astype(dtype).reshape(shape)
        cases[name] = np.asfortranarray(a) if order == 'F' else np.ascontiguousarray(a)
    return cases


CASES = make_cases()


def expect(a: np.ndarray) -> list:
    flat = a.ravel(order='C')
    k = a.dtype.kind
    if k == 'b':
        return [bool(v) for v in flat]
    if k in 'iu':
        return [int(v) for v in flat]
    if k == 'f':
        return [float(v) for v in flat]
    if k == 'c':
        return [[float(v.real), float(v.imag)] for v in flat]
    if k in 'Mm':
        return [int(v) for v in flat.astype('<i8')]
    return [v.item() for v in flat]


def is_fortran(a: np.ndarray) -> bool:
    return bool(a.ndim > 1 and a.flags.f_contiguous and not a.flags.c_contiguous)


def check(name: str, a) -> str:
    orig = CASES.get(name)
    if orig is None:
        return f'no case {name!r}'
    if not isinstance(a, np.ndarray):
        return f'not an ndarray: {type(a).__name__}'
    if a.dtype.newbyteorder('<') != orig.dtype.newbyteorder('<'):
        return f'dtype {a.dtype.str}, expected {orig.dtype.str}'
    if a.shape != orig.shape:
        return f'shape {a.shape}, expected {orig.shape}'
    if not np.array_equal(a, orig):
        return 'values differ'
    if is_fortran(orig) and not is_fortran(a):
        return 'Fortran order lost'
    return 'ok'


async def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument('--key')
    args = p.parse_args()

    async def handler(sock: pw.PickleSocket) -> None:
        async def on_request(value):
            op = value.get('op') if isinstance(value, dict) else None
            if op == 'check':
                return check(value['name'], value['array'])
            if op == 'describe':
                a = value['array']
                return [a.dtype.str, list(a.shape), a.tolist(), is_fortran(a)]
            if op == 'burst':
                block = np.ones(value['mib'] * 2 ** 20 // 4, dtype=np.float32)
                t0 = time.monotonic()
                for i in range(value['count']):
                    block[0] = i
                    await sock.send(block)
                return time.monotonic() - t0
            if op == 'big-then-next':
                big = np.ones(value['mib'] * 2 ** 20 // 4, dtype=np.float32)
                outcome = {'big': 'sent', 'message': None}
                try:
                    await sock.send(big)
                except pw.TransportError as e:
                    outcome = {'big': e.code, 'message': str(e)}
                await sock.send('after')
                return {**outcome, 'cancelled': sock.stats.messages_cancelled}
            if op == 'stats':
                return {'cancelled_by_peer': sock.stats.messages_cancelled_by_peer, 'received': sock.stats.messages_received}
            raise ValueError(f'unknown op {op!r}')
        sock.on_request = on_request
        try:
            for name, a in CASES.items():
                await sock.send({'name': name, 'array': a, 'dtype': a.dtype.str, 'shape': list(a.shape),
                                 'fortran': is_fortran(a), 'expect': expect(a)})
            await sock.send('done')
            async for value in sock:
                await sock.send(value)
        except pw.TransportError as e:
            print(f'browser-peer: {e.code}: {e}', file=sys.stderr, flush=True)

    key = args.key.encode() if args.key else None
    async with pw.serve(handler, key=key, heartbeat_interval=None) as server:
        print(json.dumps({'port': server.sockets[0].getsockname()[1]}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    return 0


if __name__ == '__main__':
    sys.exit(asyncio.run(main()))
