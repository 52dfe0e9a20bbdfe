"""The browser benchmark's Python side (bench/browser.mjs): a picklewire server on 127.0.0.1
that, for each {'op': 'send', 'kind': 'array' | 'small', 'bytes': B, 'count': C} it receives,
sends C messages (a float32 array of B bytes, out of band; or {'seq': i, 'payload': bytes} of
about B bytes in all) and then the string 'end'; and a raw websockets server (no picklewire)
that, for each text frame {"kind", "bytes", "count"} (JSON), sends the same bytes as binary
messages (an array's bytes as messages of 1 MiB, the chunk size picklewire uses; a small
message as B bytes) and then the text 'end'. Prints {"port": N, "raw": M} and runs until stdin
closes."""

from __future__ import annotations

import asyncio
import json
import os
import sys

import numpy as np
from websockets.asyncio.server import serve as raw_serve

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'packages', 'transport', 'python'))
from picklewire import ws as pw  # noqa: E402


#: the raw rows send an array's bytes in messages of this size (picklewire's chunk size)
RAW_CHUNK = 2 ** 20


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

    async def raw_handler(ws) -> None:
        async for text in ws:
            m = json.loads(text)
            count, size = m['count'], m['bytes']
            if m['kind'] == 'array':
                a = memoryview(np.ones(size // 4, dtype=np.float32)).cast('B')
                for _ in range(count):
                    for at in range(0, size, RAW_CHUNK):
                        await ws.send(a[at:at + RAW_CHUNK])
            else:
                payload = bytes(size)
                for _ in range(count):
                    await ws.send(payload)
            await ws.send('end')

    async with pw.serve(handler, limits=pw.Limits(max_buffer_bytes=2 ** 30), heartbeat_interval=None) as server, \
            raw_serve(raw_handler, '127.0.0.1', 0, compression=None, ping_interval=None) as raw:
        print(json.dumps({'port': server.sockets[0].getsockname()[1], 'raw': raw.sockets[0].getsockname()[1]}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    return 0


if __name__ == '__main__':
    sys.exit(asyncio.run(main()))
