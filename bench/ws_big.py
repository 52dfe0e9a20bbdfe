"""The Python side of the big-tensor rows of the WebSocket benchmark (bench/ws-big.mjs).

    python3 ws_big.py to-node URL --kind K --bytes N --runs R [--frame-bytes F]
        K: frames (picklewire, same_host=False), same-host (picklewire, same_host=True) or raw
        (plain websockets). R times: waits for "go", then sends one float32 array of N bytes
        (raw: the same bytes as one binary message, or messages of F bytes when F > 0)
    python3 ws_big.py to-python URL --kind K --bytes N --runs R [--frame-bytes F]
        says "ready", then R times: receives the array (raw: its bytes, into one fresh bytearray
        when they come in messages of F bytes) and answers a JSON text with the memory this
        process took to receive it: {"peak": VmHWM - VmRSS before, bytes}
    python3 ws_big.py first-read --bytes N --runs R
        what a receiver pays to read a same-host array the first time: the best and worst ms of
        mapping N bytes of a written file and summing them, through a new mapping per message
        and through the mapping the receiver keeps for read-only buffers, against a sum over
        warm memory
    python3 ws_big.py memcpy --bytes N --runs R
        prints the best seconds of numpy.copyto of N bytes into a warm array (the floor), and into
        a new numpy.empty array each time (fresh)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'packages', 'transport', 'python'))
from picklewire import ws as pw  # noqa: E402

LIMITS = pw.Limits(max_message_bytes=8 * 2 ** 30, max_buffer_bytes=8 * 2 ** 30)
# No heartbeat pings: a 2 GiB run on a loaded machine must not end on a late pong; heartbeats
# are not what is measured.


def status(field: str) -> int:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def reset_peak() -> int:
    """Resets this process's peak RSS (VmHWM) to its current RSS; returns that RSS."""
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')
    return status('VmRSS')


async def to_node(args) -> None:
    a = np.full(args.bytes // 4, 1.5, np.float32)
    if args.kind == 'raw':
        from websockets.asyncio.client import connect
        data = memoryview(a).cast('B')
        async with connect(args.url, compression=None, max_size=None, write_limit=0, ping_interval=None) as ws:
            for _ in range(args.runs):
                await ws.recv()
                if args.frame_bytes <= 0:
                    await ws.send(data)
                else:
                    for at in range(0, len(data), args.frame_bytes):
                        await ws.send(data[at:at + args.frame_bytes])
            await ws.recv()
        return
    sock = await pw.connect(args.url, limits=LIMITS, same_host=args.kind == 'same-host', heartbeat_interval=None)
    for _ in range(args.runs):
        await sock.recv()
        await sock.send(a)
    await sock.recv()
    await sock.close()


async def to_python(args) -> None:
    if args.kind == 'raw':
        from websockets.asyncio.client import connect
        async with connect(args.url, compression=None, max_size=None, ping_interval=None) as ws:
            await ws.send('ready')
            for _ in range(args.runs):
                before = reset_peak()
                if args.frame_bytes <= 0:
                    got = await ws.recv()
                    n = len(got)
                else:
                    got = bytearray(args.bytes)
                    n = 0
                    while n < args.bytes:
                        m = await ws.recv()
                        got[n:n + len(m)] = m
                        n += len(m)
                assert n == args.bytes, n
                await ws.send(json.dumps({'peak': status('VmHWM') - before}))
                del got
        return
    sock = await pw.connect(args.url, limits=LIMITS, same_host=args.kind == 'same-host', heartbeat_interval=None)
    await sock.send('ready')
    for _ in range(args.runs):
        before = reset_peak()
        v = await sock.recv()
        assert isinstance(v, np.ndarray) and v.nbytes == args.bytes, type(v)
        peak = status('VmHWM') - before
        # The array is dropped before the answer, so that its mapping's shm-free goes first and
        # the sender may write the same file for the next run.
        del v
        for _ in range(3):
            await asyncio.sleep(0)
        await sock.send(json.dumps({'peak': peak}))
    await sock.close()


def first_read(args) -> None:
    import gc
    stats = pw.Stats()
    sh = pw._SameHost(True, 1, lambda text: None, stats)  # this process plays the sender too
    sh.proven_pid = os.getpid()
    fd = pw._make_region()
    src = np.full(args.bytes, 3, np.uint8)
    os.pwrite(fd, src, 0)
    path = f'/proc/{os.getpid()}/fd/{fd}'
    out = {}
    for name, readonly in (('new mapping', False), ('kept mapping', True)):
        times = []
        for i in range(args.runs):
            t0 = time.perf_counter()
            a = np.frombuffer(sh.map((path, 0), args.bytes, 'buffer 0', i + 1, readonly=readonly), np.uint8)
            a.sum(dtype=np.uint64)
            times.append(time.perf_counter() - t0)
            del a
            gc.collect()
        out[name] = times
    times = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        src.sum(dtype=np.uint64)
        times.append(time.perf_counter() - t0)
    out['warm memory'] = times
    sh.close()
    os.close(fd)
    for name, times in out.items():
        what = 'sum' if name == 'warm memory' else 'map + first sum'
        print(f'{name:13} {what}: best {min(times) * 1e3:.0f} ms, worst {max(times) * 1e3:.0f} ms '
              f'(first {times[0] * 1e3:.0f} ms)')


def memcpy(args) -> None:
    src = np.full(args.bytes, 7, np.uint8)
    dst = np.zeros(args.bytes, np.uint8)
    best = fresh = float('inf')
    for _ in range(args.runs):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
        t0 = time.perf_counter()
        np.copyto(np.empty(args.bytes, np.uint8), src)
        fresh = min(fresh, time.perf_counter() - t0)
    print(json.dumps({'best': best, 'fresh': fresh}), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('command', choices=['to-node', 'to-python', 'memcpy', 'first-read'])
    p.add_argument('url', nargs='?')
    p.add_argument('--kind', choices=['frames', 'same-host', 'raw'], default='frames')
    p.add_argument('--bytes', type=int, required=True)
    p.add_argument('--runs', type=int, default=3)
    p.add_argument('--frame-bytes', type=int, default=0)
    args = p.parse_args()
    if args.command == 'memcpy':
        memcpy(args)
    elif args.command == 'first-read':
        first_read(args)
    else:
        asyncio.run(to_node(args) if args.command == 'to-node' else to_python(args))


if __name__ == '__main__':
    main()
