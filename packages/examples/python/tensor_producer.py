"""Python producer -> Node consumer: streams numpy frames (a synthetic camera: a bright spot
drifting over noise) to a Node server, which computes on each frame and answers.

    python3 tensor_producer.py ws://127.0.0.1:PORT/ [--frames N] [--key K]

Each frame goes as a request: the pickle is a few hundred bytes and the 120x160 float32 image
travels as its own WebSocket frame, a memoryview of the array (no copy on this side). The Node
side answers with statistics and a 4x-downsampled NDArray; this side checks them against
numpy's own answer and prints one line per frame.
"""

import argparse
import asyncio
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'transport', 'python'))
from picklewire import ws as pw  # noqa: E402


def frame(t: int, h: int = 120, w: int = 160) -> np.ndarray:
    rng = np.random.default_rng(t)
    y, x = np.mgrid[0:h, 0:w]
    cy, cx = h / 2 + 30 * np.sin(t / 5), w / 2 + 50 * np.cos(t / 7)
    spot = np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / 50)
    return (spot + 0.05 * rng.standard_normal((h, w))).astype(np.float32)


async def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument('url')
    p.add_argument('--frames', type=int, default=10)
    p.add_argument('--key')
    args = p.parse_args()
    sock = await pw.connect(args.url, key=args.key)
    ok = 0
    started = time.perf_counter()
    for t in range(args.frames):
        image = frame(t)
        answer = await sock.request({'seq': t, 'image': image, 'threshold': 0.5})
        small = answer['small']
        expected_small = image.reshape(30, 4, 40, 4).mean(axis=(1, 3))
        good = (answer['seq'] == t and abs(answer['mean'] - float(image.mean())) < 1e-4
                and answer['hot'] == int((image > 0.5).sum()) and np.allclose(small, expected_small, atol=1e-5))
        ok += good
        print(f"python  frame {t:2d}: node says mean={answer['mean']:+.4f} hot pixels={answer['hot']:3d} "
              f"peak at {tuple(answer['peak'])}, sent back a {small.shape[0]}x{small.shape[1]} {small.dtype} array "
              f"{'(checked)' if good else '(WRONG)'}", flush=True)
    elapsed = time.perf_counter() - started
    print(f'python  {ok}/{args.frames} answers checked against numpy, {args.frames / elapsed:.0f} frames/s round trip', flush=True)
    await sock.close()
    return 0 if ok == args.frames else 1


if __name__ == '__main__':
    sys.exit(asyncio.run(main()))
