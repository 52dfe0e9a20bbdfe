"""The CPython side of the benchmarks: builds each workload, pickles it at protocol 5 into
bench/.fixtures/ and times the C pickle module (pickle.loads, pickle.dumps) on it.

bench/run.mjs keeps one such process for the whole run and asks it for one thing at a time,
right before it measures JavaScript on the same workload, so that both sides are measured
under the same conditions. The workload definitions must match bench/workloads.mjs value
for value; run.mjs checks that by comparing what picklewire loads from these fixtures with
what JavaScript builds, and what picklewire dumps with these fixtures' bytes.

Protocol: one JSON request per line on stdin, one JSON answer per line on stdout.
  {"cmd": "info"}                                  -> {"python", "implementation", "numpy" (version or null)}
  {"cmd": "fixture", "dir", "workload": {"name", "kind", "n" or "size", "protocol", "oob"}}
                                                   -> {"file", "bytes", "oob": [sizes]}
  (protocol defaults to 5; oob, whether PickleBuffers go out of band, to true)
  {"cmd": "load" or "dump", "name", "timing": {"warmup", "warmup_time", "min_runs",
   "max_runs", "min_time", "min_sample"}}          -> {"best", "median", "runs", "batch"} (+ "bytes" for dump)
An error answers {"error": message}. End of input ends the process.
"""
import gc
import hashlib
import io
import json
import os
import pickle
import statistics
import sys
from time import perf_counter


# ---- workloads: keep in step with bench/workloads.mjs ----

STRING_TEMPLATES = ['user%d', 'item-%d-name', 'naïve café %d', 'Привет %d', '東京タワー %d 🙂']


def make_ints(n):
    # 0..69999: BININT1 (0..255), BININT2 (256..65535) and BININT (65536..69999).
    return [i % 70000 for i in range(n)]


def make_floats(n):
    # Non-integral and spread out, computed exactly alike in JavaScript (all steps are
    # exact or correctly rounded IEEE doubles).
    return [((i * 2654435761) % 2**32 + 0.5) / 2**32 * 1000 for i in range(n)]


def make_dicts(n):
    # score is never integral, so a JavaScript number dumps back as a float too.
    return [{'id': i, 'name': 'user%d' % i, 'score': i * 0.5 + 0.25, 'tags': ['a', 'b']} for i in range(n)]


def make_strings(n):
    return [STRING_TEMPLATES[i % len(STRING_TEMPLATES)] % i for i in range(n)]


def make_bytes(size):
    return bytes(range(256)) * (size // 256)


def make_f32(size):
    # numpy workloads (bench/numpy.mjs): float32 values i % 65536, exact in both languages.
    import numpy as np
    return (np.arange(size // 4, dtype=np.uint32) % 65536).astype(np.float32)


def make_f32_list(n):
    import numpy as np
    base = np.arange(16, dtype=np.float32)
    return [(base + (k % 1000)).reshape(4, 4) for k in range(n)]


def make_value(w):
    kind = w['kind']
    if kind == 'f32':
        return make_f32(w['size'])
    if kind == 'f32list':
        return make_f32_list(w['n'])
    if kind == 'ints':
        return make_ints(w['n'])
    if kind == 'floats':
        return make_floats(w['n'])
    if kind == 'dicts':
        return make_dicts(w['n'])
    if kind == 'strings':
        return make_strings(w['n'])
    if kind == 'bytes':
        return make_bytes(w['size'])
    if kind == 'oob':
        return pickle.PickleBuffer(bytearray(w['size']))
    raise ValueError('unknown workload kind %r' % kind)


# ---- timing: the same policy as bench/measure.mjs ----

def measure(fn, t):
    """Best and median seconds per call of fn, as bench/measure.mjs measures JavaScript.

    Warm-up: at least `warmup` calls and `warmup_time` seconds. A sample runs fn `batch`
    times, the batch doubled until a sample lasts min_sample; the largest of three such
    calibrations counts. gc.collect() runs before each sample of one call; results are
    freed outside the timed region.
    """
    warm_end = perf_counter() + t['warmup_time']
    i = 0
    while i < t['warmup'] or perf_counter() < warm_end:
        fn()
        i += 1
    batch = 1
    for _ in range(3):
        b = 1
        while True:
            t0 = perf_counter()
            for _ in range(b):
                r = fn()
            dt = perf_counter() - t0
            del r
            if dt >= t['min_sample'] or b >= 1 << 20:
                batch = max(batch, b)
                break
            b *= 2
        if batch == 1:
            break
    samples = []
    total = 0.0
    while len(samples) < t['min_runs'] or (total < t['min_time'] and len(samples) < t['max_runs']):
        if batch == 1:
            gc.collect()
        t0 = perf_counter()
        for _ in range(batch):
            r = fn()
        dt = (perf_counter() - t0) / batch
        del r
        samples.append(dt)
        total += dt * batch
    return {'best': min(samples), 'median': statistics.median(samples), 'runs': len(samples), 'batch': batch}


class Workloads:
    """The current workload's value and pickle; one at a time, so that memory stays small."""

    def __init__(self):
        self.name = None

    def fixture(self, directory, w):
        self.name = None
        self.value = make_value(w)
        self.buffers = []
        self.protocol = w.get('protocol', 5)
        self.oob = w.get('oob', True)
        callback = self.buffers.append if self.oob and self.protocol >= 5 else None
        self.data = pickle.dumps(self.value, protocol=self.protocol, buffer_callback=callback)
        self.kind = w['kind']
        self.name = w['name']
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, w['name'] + '.pkl')
        with open(path, 'wb') as f:
            f.write(self.data)
        gc.collect()
        return {'file': path, 'bytes': len(self.data), 'oob': [b.raw().nbytes for b in self.buffers]}

    def check(self, name):
        if name != self.name:
            raise ValueError('workload %r has no fixture yet: ask for it first' % name)

    def time_load(self, name, t):
        self.check(name)
        data, buffers = self.data, self.buffers
        return measure(lambda: pickle.loads(data, buffers=buffers), t)

    def time_dump(self, name, t, fast=False):
        self.check(name)
        value, protocol = self.value, self.protocol
        if fast:
            # Pickler.fast: no memo (what picklewire's `fast` option mirrors).
            def dump():
                f = io.BytesIO()
                p = pickle.Pickler(f, protocol)
                p.fast = True
                p.dump(value)
                return f.getvalue()
        elif self.oob and self.buffers:
            def dump():
                return pickle.dumps(value, protocol=protocol, buffer_callback=lambda b: False)
        else:
            def dump():
                return pickle.dumps(value, protocol=protocol)
        r = measure(dump, t)
        out = dump()
        r['bytes'] = len(out)
        r['sha256'] = hashlib.sha256(out).hexdigest()
        return r


def answer(work, req):
    cmd = req.get('cmd')
    if cmd == 'info':
        try:
            import numpy
            numpy_version = numpy.__version__
        except ImportError:
            numpy_version = None
        return {'python': sys.version.split()[0], 'implementation': sys.implementation.name, 'numpy': numpy_version}
    if cmd == 'fixture':
        return work.fixture(req['dir'], req['workload'])
    if cmd == 'load':
        return work.time_load(req['name'], req['timing'])
    if cmd == 'dump':
        return work.time_dump(req['name'], req['timing'], bool(req.get('fast')))
    raise ValueError('unknown command %r' % cmd)


def main():
    work = Workloads()
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            out = answer(work, json.loads(line))
        except Exception as err:  # reported to run.mjs, which stops with the message
            out = {'error': '%s: %s' % (type(err).__name__, err)}
        sys.stdout.write(json.dumps(out) + '\n')
        sys.stdout.flush()


if __name__ == '__main__':
    main()
