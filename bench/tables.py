"""
The tables benchmark's Python side (bench/tables.mjs): builds a DataFrame of ROWS rows, 8
numeric columns (int8, int16, int32, int64, uint32, float32, float64, bool) and, with
'strings', 2 str columns,
pickles it at protocol 5 out of band into OUT (the pickle and each buffer, each after its
8-byte little-endian length), and times pickle.loads of it with the buffers as the Node side
times its load, with the timing policy given as JSON. Prints one JSON line: versions, sizes,
best and median seconds, samples.

  python tables.py ROWS strings|numeric OUT '{"warmup": 3, "warmup_time": 0.3, "min_runs": 10, "max_runs": 100, "min_time": 2}'
"""
import gc
import json
import pickle
import sys
import time

import numpy as np
import pandas as pd


def frame(rows, strings):
    k = np.arange(rows)
    df = pd.DataFrame({
        'i8': (k % 100).astype('int8'), 'i16': (k % 30000).astype('int16'), 'i32': k.astype('int32'),
        'i64': k.astype('int64') * 3, 'u32': k.astype('uint32'), 'f32': (k / 7).astype('float32'),
        'f64': k / 3.0, 'flag': k % 3 == 0,
    })
    if strings:
        df['name'] = pd.array([f'item {i % 1000}' for i in range(rows)], dtype='str')
        df['code'] = pd.array([f'c{i % 17}' for i in range(rows)], dtype='str')
    return df


def measure(fn, policy):
    end = time.perf_counter() + policy['warmup_time']
    i = 0
    while i < policy['warmup'] or time.perf_counter() < end:
        fn()
        i += 1
    samples = []
    total = 0.0
    while len(samples) < policy['min_runs'] or (total < policy['min_time'] and len(samples) < policy['max_runs']):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        samples.append(dt)
        total += dt
    samples.sort()
    mid = len(samples) // 2
    median = samples[mid] if len(samples) % 2 else (samples[mid - 1] + samples[mid]) / 2
    return {'best': samples[0], 'median': median, 'runs': len(samples)}


def main():
    rows, strings, out, policy = int(sys.argv[1]), sys.argv[2] == 'strings', sys.argv[3], json.loads(sys.argv[4])
    df = frame(rows, strings)
    buffers = []
    data = pickle.dumps(df, 5, buffer_callback=buffers.append)
    raw = [bytes(b.raw()) for b in buffers]
    with open(out, 'wb') as f:
        for part in [data, *raw]:
            f.write(len(part).to_bytes(8, 'little') + part)
    timing = measure(lambda: pickle.loads(data, buffers=raw), policy)
    print(json.dumps({
        'python': sys.version.split()[0], 'pandas': pd.__version__, 'numpy': np.__version__,
        'pickle_bytes': len(data), 'buffer_bytes': sum(len(b) for b in raw), 'buffers': len(raw),
        'dtypes': [str(t) for t in df.dtypes], **timing,
    }))


if __name__ == '__main__':
    main()
