"""The browser benchmark's Python side (bench/browser.mjs): a picklewire server on 127.0.0.1
that prints {"port": N} and, for each {'op': 'send', 'kind': 'array' | 'small', 'bytes': B,
'count': C} it receives, sends C messages (a float32 array of B bytes, out of band; or
{'seq': i, 'payload': bytes} of about B bytes in all) and then the string 'end'. Runs until
stdin closes."""

from __future__ import annotations

import asyncio
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'packages', 'transport', 'python'))
from picklewire import ws as pw  # noqa: E402


async def main() -> int:
    async def handler(sock: pw.PickleSocket) -> None:
        try:
            async for m in sock:
                if not isinstance(m, dict) or m.get('op') != 'send':
                    continue
                count, size = m['count'], m['bytes']
                if m['kind'] == 'array':
                    a = np.ones(size // 4, dtype=np.float32)
                    for _ in range(count):
                        await sock.send(a)
                else:
                    payload = bytes(max(0, size - 40))
                    for i in range(count):
                        await sock.send({'seq': i, 'payload': payload})
                await sock.send('end')
        except pw.TransportError:
            pass

    async with pw.serve(handler, limits=pw.Limits(max_buffer_bytes=2 ** 30), heartbeat_interval=None) as server:
        print(json.dumps({'port': server.sockets[0].getsockname()[1]}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    return 0


if __name__ == '__main__':
    sys.exit(asyncio.run(main()))
