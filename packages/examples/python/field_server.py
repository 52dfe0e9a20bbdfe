"""The browser example's Python side: streams a moving 2-D field to web pages.

    python3 field_server.py [--port 8765] [--fps 30] [--size 256]

Serves picklewire on 127.0.0.1 (prints {"port": N} when it listens). Each connected page gets a
float32 field of SIZE x SIZE (two travelling waves) FPS times a second as
{'seq': n, 'frequency': f, 'field': array}: the array travels as a WebSocket frame of its own,
straight from numpy's memory. A page sends {'frequency': f} (its slider) and the next frames are
computed with that frequency. Runs until stdin closes or it is interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'transport', 'python'))
from picklewire import ws as pw  # noqa: E402


def field(t: float, frequency: float, size: int) -> np.ndarray:
    """Two waves over [-1, 1]^2: a plane wave turning slowly and a ring spreading from a moving centre."""
    y, x = np.mgrid[-1:1:size * 1j, -1:1:size * 1j]
    angle = t / 4
    plane = np.sin(frequency * (x * np.cos(angle) + y * np.sin(angle)) - 3 * t)
    cx, cy = 0.5 * np.cos(t / 2), 0.5 * np.sin(t / 3)
    ring = np.sin(frequency * 1.5 * np.hypot(x - cx, y - cy) - 4 * t)
    return ((plane + ring) / 2).astype(np.float32)


async def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--port', type=int, default=8765)
    p.add_argument('--fps', type=float, default=30)
    p.add_argument('--size', type=int, default=256)
    args = p.parse_args()

    async def page(sock: pw.PickleSocket) -> None:
        state = {'frequency': 8.0}

        async def controls() -> None:
            async for message in sock:
                f = message.get('frequency') if isinstance(message, dict) else None
                if isinstance(f, (int, float)) and 0 < f <= 100:
                    state['frequency'] = float(f)

        reader = asyncio.create_task(controls())
        loop = asyncio.get_running_loop()
        start = loop.time()
        seq = 0
        try:
            while not reader.done():
                f = state['frequency']
                await sock.send({'seq': seq, 'frequency': f, 'field': field(loop.time() - start, f, args.size)})
                seq += 1
                await asyncio.sleep(1 / args.fps)
        except pw.TransportError:
            pass  # the page went away
        finally:
            reader.cancel()

    async with pw.serve(page, '127.0.0.1', args.port, heartbeat_interval=None) as server:
        print(json.dumps({'port': server.sockets[0].getsockname()[1]}), flush=True)
        await loop_until_stdin_closes()
    return 0


async def loop_until_stdin_closes() -> None:
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


if __name__ == '__main__':
    try:
        sys.exit(asyncio.run(main()))
    except KeyboardInterrupt:
        pass
