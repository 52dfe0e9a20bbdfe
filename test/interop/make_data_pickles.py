"""
Pickles of data libraries for the allow-list tests (test/interop/data-allow-lists.test.ts) and
the shipped lists (packages/codec/src/allow-lists.ts).

  python make_data_pickles.py make LIB...   one JSON line per pickle: library, case, protocol,
                                            out of band or not, the pickle and its buffers
                                            (base64), and every global it names
  python make_data_pickles.py check         reads [{case, data, buffers}] as JSON on stdin, loads
                                            each pickle and compares it with the case's value
                                            made again; prints [{case, ok, why}]

LIB is one of pandas, pyarrow, scipy, sklearn, xarray, zoneinfo. A global is named as the
unpickler sees it: module, a dot, qualified name (Python 2 names of protocol 2 mapped to
Python 3 ones, as find_class does), and a getattr(x, 'name') of a named x as x's name plus
'.name'.
"""
import _compat_pickle
import base64
import builtins
import io
import json
import pickle
import sys


def pandas_cases():
    import numpy as np
    import pandas as pd
    n = 6
    mixed = pd.DataFrame({
        'i': np.arange(n, dtype='int64'),
        'f': np.linspace(0.0, 1.0, n),
        's': [f'row {k}' for k in range(n)],
        'c': pd.Categorical(['a', 'b', 'a', 'c', 'b', 'a']),
        'd': pd.date_range('2024-01-01', periods=n, freq='D'),
        'dz': pd.date_range('2024-01-01', periods=n, freq='h', tz='UTC'),
        'n': pd.array([1, None, 3, 4, None, 6], dtype='Int64'),
        'b': pd.array([True, False, None, True, True, False], dtype='boolean'),
        'g': pd.array([0.5, None, 1.5, 2.5, None, 3.5], dtype='Float64'),
        'p': pd.array(['x', None, 'z', 'x', 'y', 'z'], dtype=pd.StringDtype('python')),
        't': pd.to_timedelta(np.arange(n), unit='s'),
        'u': np.arange(n, dtype='uint8'),
    })
    by_date = pd.DataFrame({'x': np.arange(4.0), 'y': np.arange(4, dtype='int32')},
                           index=pd.DatetimeIndex(['2024-03-01', '2024-03-02', '2024-03-04', '2024-03-08'], name='day'))
    series = pd.Series([1.5, 2.5, np.nan], index=['a', 'b', 'c'], name='price')
    multi = pd.Series(np.arange(4, dtype='int64'),
                      index=pd.MultiIndex.from_product([['x', 'y'], [1, 2]], names=['k', 'j']))
    daily = pd.Series(np.arange(3.0), index=pd.date_range('2024-01-01', periods=3, freq='D'))
    by_category = pd.Series([1, 2, 3], index=pd.CategoricalIndex(['lo', 'hi', 'lo'], name='level'), dtype='int16')
    return {'pandas.DataFrame': mixed, 'pandas.DataFrame.DatetimeIndex': by_date, 'pandas.Series': series,
            'pandas.Series.MultiIndex': multi, 'pandas.Series.daily': daily, 'pandas.Series.CategoricalIndex': by_category}


def pyarrow_cases():
    import pyarrow as pa
    table = pa.table({'i': pa.array([1, 2, None, 4], type=pa.int64()),
                      'f': pa.array([0.5, 1.5, 2.5, None]),
                      's': pa.array(['a', None, 'ccc', 'dd'])})
    batch = pa.record_batch([pa.array([1, 2, 3], type=pa.int32()), pa.array(['x', 'y', None])], names=['n', 'label'])
    return {'pyarrow.Table': table, 'pyarrow.RecordBatch': batch,
            'pyarrow.Array': pa.array([1.0, None, 3.0]),
            'pyarrow.ChunkedArray': pa.chunked_array([[1, 2], [3]])}


def scipy_cases():
    import numpy as np
    import scipy.sparse as sp
    dense = np.array([[0, 1.5, 0], [2.0, 0, 0], [0, 0, 3.25], [0, 4.0, 0]])
    return {'scipy.csr_matrix': sp.csr_matrix(dense), 'scipy.csc_matrix': sp.csc_matrix(dense),
            'scipy.coo_matrix': sp.coo_matrix(dense), 'scipy.csr_array': sp.csr_array(dense),
            'scipy.coo_array': sp.coo_array(dense)}


def sklearn_sample():
    import numpy as np
    rng = np.random.default_rng(7)
    x = rng.normal(size=(40, 3))
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype('int64')
    return x, y


def sklearn_cases():
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    x, y = sklearn_sample()
    return {'sklearn.Pipeline': make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y),
            'sklearn.LinearRegression': LinearRegression().fit(x, x @ [1.0, 2.0, -1.0]),
            'sklearn.LogisticRegression': LogisticRegression().fit(x, y),
            'sklearn.StandardScaler': StandardScaler().fit(x),
            'sklearn.RandomForestClassifier': RandomForestClassifier(n_estimators=3, max_depth=3, random_state=0).fit(x, y)}


def xarray_cases():
    import numpy as np
    import pandas as pd
    import xarray as xr
    da = xr.DataArray(np.arange(6.0).reshape(2, 3), dims=('t', 'x'),
                      coords={'t': pd.date_range('2024-01-01', periods=2), 'x': [10, 20, 30]},
                      name='temp', attrs={'units': 'K'})
    ds = xr.Dataset({'temp': da, 'count': (('x',), np.array([1, 2, 3], dtype='int32'))}, attrs={'title': 'demo'})
    return {'xarray.DataArray': da, 'xarray.Dataset': ds}


def zoneinfo_cases():
    import datetime
    import zoneinfo
    paris = zoneinfo.ZoneInfo('Europe/Paris')
    return {'zoneinfo.datetime': datetime.datetime(2024, 7, 1, 12, 30, tzinfo=paris),
            'zoneinfo.list': [datetime.datetime(2024, 1, 1, 8, 0, tzinfo=paris),
                              datetime.datetime(2024, 1, 1, 8, 0, tzinfo=zoneinfo.ZoneInfo('America/New_York'))]}


MAKERS = {'pandas': pandas_cases, 'pyarrow': pyarrow_cases, 'scipy': scipy_cases,
          'sklearn': sklearn_cases, 'xarray': xarray_cases, 'zoneinfo': zoneinfo_cases}


class NameRecorder(pickle.Unpickler):
    """Loads a pickle and records the full name of every global it names, getattr included."""

    def __init__(self, data, buffers):
        super().__init__(io.BytesIO(data), buffers=buffers)
        self.names = set()
        self.named = {}
        self.protocol = data[1] if data[:1] == pickle.PROTO else 0

    def find_class(self, module, name):
        if self.protocol < 3:
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
        full = f'{module}.{name}'
        self.names.add(full)
        found = super().find_class(module, name)
        if found is builtins.getattr:
            return self.recording_getattr
        self.named[id(found)] = (full, found)
        return found

    def recording_getattr(self, obj, attr, *default):
        value = getattr(obj, attr, *default)
        base = self.named.get(id(obj))
        if base is not None and base[1] is obj:
            full = f'{base[0]}.{attr}'
            self.names.add(full)
            self.named[id(value)] = (full, value)
        else:
            self.names.add(f'<getattr of an unnamed value>.{attr}')
        return value


def make(libs):
    out = sys.stdout
    for lib in libs:
        for case, value in MAKERS[lib]().items():
            for protocol, oob in ((2, False), (4, False), (5, False), (5, True)):
                buffers = []
                data = pickle.dumps(value, protocol, buffer_callback=buffers.append if oob else None)
                raw = [bytes(b.raw()) for b in buffers]
                recorder = NameRecorder(data, raw)
                recorder.load()
                out.write(json.dumps({
                    'library': lib, 'case': case, 'protocol': protocol, 'oob': oob,
                    'data': base64.b64encode(data).decode(), 'buffers': [base64.b64encode(b).decode() for b in raw],
                    'globals': sorted(recorder.names),
                }) + '\n')


def same(case, a, b):
    """Why a (the original) and b (loaded back) differ, or None when they are equal."""
    import numpy as np
    if type(a) is not type(b):
        return f'type {type(b).__name__}, expected {type(a).__name__}'
    lib = case.split('.')[0]
    if lib == 'pandas':
        import pandas as pd
        check = pd.testing.assert_frame_equal if isinstance(a, pd.DataFrame) else pd.testing.assert_series_equal
        try:
            check(a, b, check_exact=True)
        except AssertionError as e:
            return str(e)
        return None
    if lib == 'pyarrow':
        kind_same = a.schema.equals(b.schema, check_metadata=True) if hasattr(a, 'schema') else a.type == b.type
        return None if kind_same and a.equals(b) else 'not equal'
    if lib == 'scipy':
        if a.shape != b.shape or a.dtype != b.dtype or a.format != b.format:
            return f'{b.format} {b.shape} {b.dtype}, expected {a.format} {a.shape} {a.dtype}'
        return None if (a != b).nnz == 0 else 'different values'
    if lib == 'sklearn':
        x, _ = sklearn_sample()
        # repr, since a pipeline's parameters hold its steps, which compare by identity.
        if repr(a.get_params()) != repr(b.get_params()):
            return 'different parameters'
        use = 'transform' if hasattr(a, 'transform') else 'predict'
        return None if np.array_equal(getattr(a, use)(x), getattr(b, use)(x)) else f'different {use} results'
    if lib == 'xarray':
        return None if a.identical(b) else 'not identical'
    if lib == 'zoneinfo':
        pairs = list(zip(a, b)) if isinstance(a, list) else [(a, b)]
        for x, y in pairs:
            if x != y or x.tzinfo is not y.tzinfo or x.fold != y.fold:
                return f'{y!r}, expected {x!r}'
        return None
    return f'no comparison for {case}'


def check():
    items = json.load(sys.stdin)
    values = {}
    results = []
    for item in items:
        case = item['case']
        lib = case.split('.')[0]
        if lib not in values:
            values[lib] = MAKERS[lib]()
        try:
            why = same(case, values[lib][case], pickle.loads(base64.b64decode(item['data']), buffers=[base64.b64decode(b) for b in item.get('buffers', [])]))
        except Exception as e:
            why = f'{type(e).__name__}: {e}'
        results.append({'case': case, 'ok': why is None, 'why': why})
    json.dump(results, sys.stdout)


if __name__ == '__main__':
    if sys.argv[1] == 'make':
        make(sys.argv[2:])
    elif sys.argv[1] == 'check':
        check()
    else:
        sys.exit(f'usage: {sys.argv[0]} make LIB... | check')
