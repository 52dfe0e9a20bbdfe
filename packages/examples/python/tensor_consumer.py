"""Node producer -> Python consumer: a Python server receives numpy arrays that Node sends
(1-D float64 signals) and answers each with its spectrum's strongest frequency and the
magnitude spectrum itself, as a numpy array.

    python3 tensor_consumer.py [--port 0] [--key K]

Prints {"port": N} when it listens, then one line per signal; stops when stdin closes.
Arrays arrive as numpy arrays over the received frames (no copy); replies leave as
memoryviews of the result arrays.
"""

import argparse
import asyncio
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'transport', 'python'))
from picklewire import ws as pw  # noqa: E402


def analyse(request):
    signal, rate = request['signal'], request['rate']
    spectrum = np.abs(np.fft.rfft(signal)).astype(np.float32)
    peak = int(spectrum[1:].argmax()) + 1
    hz = peak * rate / signal.size
    print(f"python  got {signal.dtype} signal of {signal.size} samples (a numpy array: "
          f"{isinstance(signal, np.ndarray)}), strongest frequency {hz:.1f} Hz", flush=True)
    return {'peak_hz': hz, 'spectrum': spectrum}


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument('--port', type=int, default=0)
    p.add_argument('--key')
    args = p.parse_args()

    async def handler(sock: pw.PickleSocket) -> None:
        await sock.closed

    async with pw.serve(handler, port=args.port, key=args.key, on_request=analyse) as server:
        print(json.dumps({'port': server.sockets[0].getsockname()[1]}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


if __name__ == '__main__':
    asyncio.run(main())
