"""The numpy side of test/interop/numpy-*.test.ts: the arrays both directions compare, built from
formulas that test/helpers/numpy.ts repeats in JavaScript, element for element.

  python3 numpy_cases.py make     writes (to stdout) a protocol-4 pickle of the load cases: every
                                  dtype, layout and protocol, pickled by this numpy, with what
                                  numpy itself loads back from each
  python3 numpy_cases.py check    reads the dump cases picklewire wrote (stdin, framed as below),
                                  loads each with this numpy, compares it with the array built
                                  here, and writes one JSON result per case

Frames: a u32 little-endian count of cases; per case a u32 length and JSON meta, a u32 count of
buffers, then the pickle and each buffer as a u32 length and the bytes.
"""
import json
import pickle
import struct
import sys
import warnings

import numpy as np

NUMPY2 = int(np.__version__.split('.')[0]) >= 2

DTYPES = ['?', 'i1', 'u1', 'i2', 'u2', 'i4', 'u4', 'i8', 'u8', 'f2', 'f4', 'f8', 'c8', 'c16',
          '>i2', '>u4', '>i8', '>f2', '>f4', '>f8', '>c8', '>c16',
          'S5', 'U3', '>U3', 'M8[ns]', 'M8[D]', '>M8[ms]', 'm8[s]', 'm8[2h]', 'M8', 'O']
LAYOUTS = {'1d': (5,), 'c': (2, 3), 'f': (2, 3), 'k': (2, 3, 4), '0d': (), 'empty': (0, 3)}
# (protocol, out of band)
PROTOCOLS = [(0, False), (1, False), (2, False), (3, False), (4, False), (5, False), (5, True)]
UNICODE = ['a', '\u00e9', '\U0001f642', '\u6771']


def value(kind, size, k):
    """Element k (C order of the array as built) of a dtype's kind and itemsize."""
    if kind == 'b':
        return k % 3 == 0
    if kind in 'iu':
        bits = size * 8
        v = (k * 2654435761 + 12345) % (1 << bits)
        return v - (1 << bits) if kind == 'i' and v >= 1 << (bits - 1) else v
    if kind == 'f':
        if size == 2:
            return None  # from bits, see f16bits
        if size == 4:
            return [float('nan'), -0.0, float('inf')][k] if k < 3 else k * 0.375 - 2.5
        return ((k * 2654435761) % 2**32 + 0.5) / 2**32 * 1000 - 300
    if kind == 'c':
        return complex(k * 0.5, -k * 0.25 - 1)
    if kind == 'S':
        return bytes([97 + k % 26]) * (k % 6)
    if kind == 'U':
        return ''.join(UNICODE[(k + i) % 4] for i in range(k % 4))
    if kind in 'Mm':
        return -2**63 if k == 2 else k * 1000 - 5
    if kind == 'O':
        return [k, 'x%d' % k, None, [k, 1.5]][k % 4]
    raise ValueError(kind)


def f16bits(k):
    return ((k * 2654435761 + 12345) % 0x7c00) | (0x8000 if k % 2 else 0)


def make(dtype, layout):
    """The array of a dtype and layout, its values by the formulas above."""
    dt = np.dtype(dtype)
    base = LAYOUTS[layout]
    n = int(np.prod(base)) if base else 1
    if dt.kind == 'f' and dt.itemsize == 2:
        flat = np.array([f16bits(k) for k in range(n)], dtype='<u2').view('<f2').astype(dt)
    elif dt.kind in 'Mm':
        flat = np.array([value(dt.kind, 8, k) for k in range(n)], dtype='i8').astype(dt)
    elif dt.kind == 'O':
        flat = np.empty(n, dtype=object)
        for k in range(n):
            flat[k] = value('O', 8, k)
    else:
        flat = np.array([value(dt.kind, dt.itemsize, k) for k in range(n)], dtype=dt)
    a = flat.reshape(base)
    if layout == 'f':
        a = np.asfortranarray(a)
    elif layout == 'k':
        a = a.transpose(1, 0, 2)
    return a


def expected_flat(a):
    """The elements in C order, as plain Python values picklewire's loader maps one to one."""
    flat = a.ravel(order='C')
    if a.dtype.kind in 'Mm':
        return flat.astype('<i8').tolist()
    if a.dtype.kind == 'f' and a.dtype.itemsize == 2:
        return flat.astype('f8').tolist()
    return flat.tolist()


def order_of(a):
    if a.flags.c_contiguous:
        return 'C'
    if a.flags.f_contiguous:
        return 'F'
    return 'K'


def make_cases():
    cases = []
    for dtype in DTYPES:
        for layout in LAYOUTS:
            a = make(dtype, layout)
            for protocol, oob in PROTOCOLS:
                buffers = []
                data = pickle.dumps(a, protocol=protocol, buffer_callback=buffers.append if oob else None)
                raws = [bytes(b.raw()) for b in buffers]
                back = pickle.loads(data, buffers=raws)
                assert back.shape == a.shape and back.dtype.newbyteorder('=') == a.dtype.newbyteorder('=')
                cases.append((dtype, layout, protocol, oob, data, raws, expected_flat(a), tuple(back.shape),
                              order_of(back), tuple(back.strides), not back.flags.writeable))
    return cases


SCALAR_DTYPES = ['?', 'i1', 'u1', 'i2', 'u2', 'i4', 'u4', 'i8', 'u8', 'f2', 'f4', 'f8', 'c8', 'c16', '>i4', '>f8',
                 'S5', 'U3', 'M8[D]', 'M8[ns]', 'm8[s]']


def scalars():
    """numpy scalars of every kind, pickled at protocols 0, 2, 4 and 5, with the plain Python value each equals."""
    values = [(dtype, make(dtype, '1d')[k]) for dtype in SCALAR_DTYPES for k in range(3)]
    values += [('u8', np.uint64(2**64 - 1)), ('i8', np.int64(-2**63))]
    out = []
    for dtype, s in values:
        plain = expected_flat(np.array([s]))[0]
        for protocol in (0, 2, 4, 5):
            out.append((s.dtype.str, protocol, pickle.dumps(s, protocol=protocol), plain, type(s).__name__))
    return out


def py2_pickles():
    """Arrays as Python 2's numpy pickled them (protocol 2, str for the type code, byte order and
    data), each checked here: numpy loads it with encoding='latin1' as the array it stands for."""
    def py2str(b):
        return b'U' + bytes([len(b)]) + b if len(b) < 256 else b'T' + struct.pack('<I', len(b)) + b

    def py2int(n):
        return b'K' + bytes([n]) if 0 <= n < 256 else b'J' + struct.pack('<i', n)

    out = []
    for a in [make('f8', 'c'), make('>i4', 'f'), make('S5', '1d'), make('U3', '1d'), make('M8[ns]', '1d'), make('f4', '0d')]:
        d = a.dtype
        fortran = a.ndim > 1 and not a.flags.c_contiguous
        flexible = d.kind in 'SUV'
        data = (b'\x80\x02cnumpy.core.multiarray\n_reconstruct\nq\x00cnumpy\nndarray\nq\x01K\x00\x85q\x02' + py2str(b'b')
                + b'\x87q\x03Rq\x04(K\x01(' + b''.join(py2int(n) for n in a.shape) + b'tcnumpy\ndtype\nq\x05'
                + py2str(('%s%d' % (d.kind, d.itemsize // 4 if d.kind == 'U' else d.itemsize)).encode()) + b'K\x00K\x01\x87Rq\x06('
                + (b'K\x04' if d.kind in 'Mm' else b'K\x03') + py2str(d.byteorder.encode()) + b'NNN'
                + py2int(d.itemsize if flexible else -1) + py2int(d.alignment if flexible else -1) + py2int(8 if d.kind == 'U' else 0)
                + (b'(}' + b'(' + py2str(np.datetime_data(d)[0].encode()) + b'K\x01K\x01K\x01tt' if d.kind in 'Mm' else b'')
                + b'tb' + (b'\x88' if fortran else b'\x89') + py2str(a.tobytes(order='F' if fortran else 'C')) + b'tb.')
        back = pickle.loads(data, encoding='latin1')
        native = d.newbyteorder('=')
        assert back.shape == a.shape and back.astype(native).tobytes() == a.astype(native).tobytes(), (d, back)
        out.append((d.str, data, expected_flat(a), a.shape, order_of(back)))
    return out


def read_frames(data):
    at = 0

    def u32():
        nonlocal at
        (n,) = struct.unpack_from('<I', data, at)
        at += 4
        return n

    def frame():
        nonlocal at
        n = u32()
        at += n
        return memoryview(data)[at - n:at]

    cases = []
    for _ in range(u32()):
        meta = json.loads(bytes(frame()))
        count = u32()
        pickled = frame()
        cases.append((meta, pickled, [frame() for _ in range(count)]))
    return cases


def check_one(meta, pickled, buffers):
    """What is wrong with numpy's load of one dump case, or None."""
    ref = make(meta['dtype'], meta['layout'])
    got = pickle.loads(pickled, buffers=buffers)
    if type(got) is not np.ndarray:
        return 'loaded a %s' % type(got).__name__
    if got.dtype != ref.dtype or got.dtype.str != ref.dtype.str:
        return 'dtype %s, expected %s' % (got.dtype.str, ref.dtype.str)
    if got.shape != ref.shape:
        return 'shape %s, expected %s' % (got.shape, ref.shape)
    # Element by element, bit for bit (NaN, -0.0 and NaT included): the C-order bytes.
    same = got.tolist() == ref.tolist() if ref.dtype.kind == 'O' else got.tobytes(order='C') == ref.tobytes(order='C')
    if not same:
        return 'values differ: %r, expected %r' % (got.tolist(), ref.tolist())
    want = meta['expectOrder']
    if want != order_of(got) and not (want == 'K' and ref.ndim and got.strides == ref.strides):
        return 'layout %s (strides %s), expected %s' % (order_of(got), got.strides, want)
    if want == 'K' and got.strides != ref.strides:
        return 'strides %s, expected %s' % (got.strides, ref.strides)
    return None


def check_cases(data):
    results = []
    for meta, pickled, buffers in read_frames(data):
        with warnings.catch_warnings():
            if meta['names'] == 'portable':
                warnings.simplefilter('error')  # any warning is a failure of the case
            else:
                warnings.simplefilter('ignore', DeprecationWarning)  # numpy 2 loading numpy.core.numeric
            try:
                problem = check_one(meta, pickled, buffers)
            except Exception as err:
                problem = '%s: %s' % (type(err).__name__, err)
        same = None
        if meta.get('compareBytes'):
            # numpy's own pickle of the same array: the bytes picklewire wrote should be these.
            ref = make(meta['dtype'], meta['layout'])
            theirs = []
            ours = pickle.dumps(ref, protocol=meta['protocol'], buffer_callback=theirs.append if meta['oob'] else None)
            same = bytes(pickled) == ours and [bytes(b) for b in buffers] == [bytes(b.raw()) for b in theirs]
        results.append({'problem': problem, 'sameBytes': same})
    return results


def main():
    if sys.argv[1] == 'make':
        out = {'numpy': np.__version__, 'cases': make_cases(), 'scalars': scalars(), 'py2': py2_pickles()}
        sys.stdout.buffer.write(pickle.dumps(out, protocol=4))
    elif sys.argv[1] == 'check':
        sys.stdout.write(json.dumps({'numpy': np.__version__, 'results': check_cases(sys.stdin.buffer.read())}))
    else:
        raise SystemExit('usage: numpy_cases.py make|check')


if __name__ == '__main__':
    main()
