"""What the restricted load costs next to pickle.loads: best of 5 loads of each pickle.

    cd packages/transport/python && python3 bench_restricted.py

Prints the table of docs/security.md ("The Python peer").
"""

import pickle
import time

import numpy as np

from picklewire import ws as pw


def best_of(load, runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        load()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    buffers: list = []
    cases = {
        'list of 10^6 ints': (pickle.dumps(list(range(10 ** 6)), protocol=5), None),
        '10,000 small arrays (in band)': (pickle.dumps([np.arange(8.0) for _ in range(10000)], protocol=5), None),
        'a dict of str and floats (10^5 entries)': (pickle.dumps({str(i): i / 3 for i in range(10 ** 5)}, protocol=5), None),
        'a 64 MiB array out of band': (pickle.dumps({'a': np.zeros(2 ** 23)}, protocol=5,
                                                    buffer_callback=lambda b: buffers.append(b) or False), buffers),
    }
    print('| pickle | bytes | pickle.loads | restricted | ratio |')
    print('|---|---|---|---|---|')
    for name, (data, bufs) in cases.items():
        plain = best_of(lambda: pickle.loads(data, buffers=bufs))
        restricted = best_of(lambda: pw.restricted_loads(data, buffers=bufs))
        print(f'| {name} | {len(data):,} | {plain * 1e3:.2f} ms | {restricted * 1e3:.2f} ms | {restricted / plain:.1f}x |')


if __name__ == '__main__':
    main()
