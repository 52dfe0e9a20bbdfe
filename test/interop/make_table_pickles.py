"""
Pickles of pandas DataFrames and Series and pyarrow tables and arrays, with the columns pandas
and pyarrow report for them, for the table readers' tests (test/interop/table-readers.test.ts).

  python make_table_pickles.py pandas|pyarrow   one JSON line per pickle: case, protocol, out of
                                                band or not, the pickle and its buffers (base64),
                                                and what the library reports (expected)

Values are reported as JSON: integers (datetimes as their int64 count) as decimal strings,
floats as numbers with NaN as "NaN", missing values of a masked column as null.
"""
import base64
import json
import math
import sys


def item(v):
    if v is None:
        return None
    if isinstance(v, bool):
        return v
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return 'NaN' if math.isnan(v) else v
    return v


def pandas_values(s):
    import numpy as np
    import pandas as pd
    arr = s.array
    if isinstance(s.dtype, np.dtype):
        values = s.to_numpy()
        if s.dtype.kind in 'Mm':
            return [str(x) for x in values.view('i8')]
        if s.dtype.kind in 'iu':
            return [str(int(x)) for x in values]
        if s.dtype.kind == 'b':
            return [bool(x) for x in values]
        if s.dtype.kind == 'f':
            return [item(float(x)) for x in values]
        return [item(x) for x in values]
    return [None if x is pd.NA or (isinstance(x, float) and math.isnan(x) and str(s.dtype) == 'str') else item(x.item() if hasattr(x, 'item') else x) for x in arr]


def pandas_column(name, s):
    import pandas as pd
    out = {'name': name, 'dtype': str(s.dtype)}
    if isinstance(s.dtype, pd.CategoricalDtype):
        out['values'] = [str(int(c)) for c in s.cat.codes]
        out['categories'] = pandas_values(pd.Series(s.cat.categories))
    else:
        out['values'] = pandas_values(s)
    return out


def pandas_index(index):
    import pandas as pd
    if isinstance(index, pd.RangeIndex):
        return {'range': [index.start, index.stop, index.step], 'name': index.name}
    return pandas_column(index.name, pd.Series(index))


def pandas_expected(value):
    import pandas as pd
    if isinstance(value, pd.Series):
        return {'kind': 'Series', **pandas_column(value.name, value), 'index': pandas_index(value.index)}
    return {'kind': 'DataFrame', 'columns': [pandas_column(name, value[name]) for name in value.columns],
            'index': pandas_index(value.index), 'length': len(value)}


def pandas_cases():
    import numpy as np
    import pandas as pd
    n = 5
    mixed = pd.DataFrame({
        'i8': np.array([-3, -1, 0, 1, 127], dtype='int8'),
        'i16': np.arange(n, dtype='int16') * 300,
        'i32': np.arange(n, dtype='int32') - 2,
        'i64': np.arange(n, dtype='int64') * 10**12,
        'u8': np.arange(n, dtype='uint8') + 250,
        'f32': np.linspace(-1, 1, n).astype('float32'),
        'f64': [0.5, float('nan'), 2.25, -1e300, 3.0],
        'flag': [True, False, True, True, False],
        'when': pd.date_range('2024-01-01', periods=n, freq='D'),
        'text': ['a', 'bb', None, 'été', ''],
        'mixed': ['x', 1, None, 2.5, 'y'],
        'n': pd.array([1, None, 3, None, 5], dtype='Int64'),
        'ok': pd.array([True, None, False, True, None], dtype='boolean'),
        'g': pd.array([0.5, None, 1.5, 2.5, None], dtype='Float64'),
        'kind': pd.Categorical(['lo', 'hi', None, 'lo', 'mid'], categories=['lo', 'mid', 'hi']),
        'py': pd.array(['p', None, 'q', 'r', None], dtype=pd.StringDtype('python')),
        'span': pd.to_timedelta(np.arange(n) - 1, unit='s'),
        'u64': np.array([0, 1, 2**63, 2**64 - 1, 5], dtype='uint64'),
    }, index=pd.Index([10, 20, 30, 40, 50], name='key'))
    # Columns of one dtype apart from each other: the int64 block holds positions 0 and 2.
    interleaved = pd.DataFrame({'a': np.arange(4, dtype='int64'), 'b': np.arange(4.0), 'c': np.arange(4, dtype='int64') + 7})
    # One 2-D block from a C-ordered array (each column strided in it under pandas 2), labelled 0, 1, 2 by a RangeIndex.
    wide = pd.DataFrame(np.arange(12, dtype='float64').reshape(4, 3))
    ranged = pd.DataFrame({'v': [1.0, 2.0, 3.0]}, index=pd.RangeIndex(100, 106, 2, name='r'))
    return {
        'frame.mixed': mixed, 'frame.interleaved': interleaved, 'frame.wide': wide, 'frame.ranged': ranged,
        'series.float': pd.Series([1.5, 2.5, float('nan')], index=['a', 'b', 'c'], name='price'),
        'series.category': pd.Series(pd.Categorical(['x', 'y', 'x']), name='c'),
        'series.Int64': pd.Series(pd.array([7, None, 9], dtype='Int64'), index=pd.date_range('2024-03-01', periods=3, freq='D', name='day')),
        'series.str-index': pd.Series([1.0, 2.0, 3.0], index=pd.Index(['p', 'qq', 'é'], dtype='str', name='tag')),
    }


def pandas_refused():
    import pandas as pd
    return {
        'refuse.zone-aware': pd.DataFrame({'t': pd.date_range('2024-01-01', periods=2, freq='h', tz='UTC')}),
        'refuse.MultiIndex': pd.Series([1, 2], index=pd.MultiIndex.from_tuples([('a', 1), ('b', 2)])),
    }


def arrow_column(name, col):
    return {'name': name, 'dtype': str(col.type), 'values': [item(v) for v in col.to_pylist()]}


def pyarrow_cases():
    import pyarrow as pa
    table = pa.table({
        'i': pa.array([1, 2, None, 4], type=pa.int64()),
        'f': pa.array([0.5, 1.5, 2.5, None]),
        's': pa.array(['a', None, 'ccc', 'dé']),
        'z': pa.nulls(4),
        'chunked': pa.chunked_array([[1, None], [3, 4]], type=pa.int32()),
        'i8': pa.array([-1, 2, -3, 4], type=pa.int8()),
        'u16': pa.array([1, 2, 65535, 4], type=pa.uint16()),
        'f32': pa.array([0.25, None, -2.5, 1.0], type=pa.float32()),
        'b': pa.array([True, None, False, True]),
        'ls': pa.array(['x', 'yy', None, ''], type=pa.large_string()),
    })
    batch = pa.record_batch([pa.array([1, 2, 3], type=pa.int32()), pa.array(['x', 'y', None])], names=['n', 'label'])
    return {'arrow.Table': table, 'arrow.RecordBatch': batch, 'arrow.Array': pa.array([1.0, None, 3.0]),
            'arrow.Array.sliced': pa.array(list(range(10)), type=pa.int64()).slice(3, 4),
            'arrow.ChunkedArray': pa.chunked_array([['a', 'b'], [None, 'd']]),
            'arrow.Array.sliced-strings': pa.array(['a', 'bb', None, 'été', 'x', 'yz']).slice(1, 3)}


def pyarrow_expected(value):
    import pyarrow as pa
    if isinstance(value, (pa.Table, pa.RecordBatch)):
        return {'kind': 'Table', 'columns': [arrow_column(n, value.column(n)) for n in value.column_names], 'length': value.num_rows}
    return {'kind': 'Array', **arrow_column(None, value)}


def main(lib):
    import pickle
    cases = {**pandas_cases(), **pandas_refused()} if lib == 'pandas' else pyarrow_cases()
    expected = pandas_expected if lib == 'pandas' else pyarrow_expected
    for case, value in cases.items():
        want = None if case.startswith('refuse.') else expected(value)
        for protocol, oob in ((2, False), (4, False), (5, False), (5, True)):
            buffers = []
            data = pickle.dumps(value, protocol, buffer_callback=buffers.append if oob else None)
            sys.stdout.write(json.dumps({
                'case': case, 'protocol': protocol, 'oob': oob, 'expected': want,
                'data': base64.b64encode(data).decode(), 'buffers': [base64.b64encode(bytes(b.raw())).decode() for b in buffers],
            }) + '\n')


if __name__ == '__main__':
    main(sys.argv[1])
