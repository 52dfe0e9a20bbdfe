/**
 * Allow lists for the data libraries, made from the pickles they write: every global those
 * pickles name that the default registry does not resolve (numpy's names are resolved there).
 * test/interop/data-allow-lists.test.ts makes the pickles (test/interop/make_data_pickles.py)
 * with the libraries themselves and checks each list against them.
 */
import type { AllowPattern } from './allow.js'

function list(...names: AllowPattern[]): readonly AllowPattern[] {
  return Object.freeze(names)
}

const PANDAS = list(
  'pandas.BooleanDtype', 'pandas.Categorical', 'pandas.CategoricalDtype', 'pandas.CategoricalIndex',
  'pandas.DataFrame', 'pandas.DatetimeIndex', 'pandas.DatetimeTZDtype', 'pandas.Float64Dtype', 'pandas.Index',
  'pandas.Int64Dtype', 'pandas.MultiIndex', 'pandas.NA', 'pandas.RangeIndex', 'pandas.Series', 'pandas.StringDtype',
  'pandas._libs.arrays.__pyx_unpickle_NDArrayBacked', 'pandas._libs.internals._unpickle_block',
  'pandas._libs.missing.NA', 'pandas._libs.tslibs.offsets.Day', 'pandas.arrays.ArrowStringArray',
  'pandas.arrays.BooleanArray', 'pandas.arrays.DatetimeArray', 'pandas.arrays.FloatingArray',
  'pandas.arrays.IntegerArray', 'pandas.arrays.StringArray', 'pandas.arrays.TimedeltaArray',
  'pandas.core.arrays.boolean.BooleanArray', 'pandas.core.arrays.boolean.BooleanDtype',
  'pandas.core.arrays.categorical.Categorical', 'pandas.core.arrays.datetimes.DatetimeArray',
  'pandas.core.arrays.floating.Float64Dtype', 'pandas.core.arrays.floating.FloatingArray',
  'pandas.core.arrays.integer.Int64Dtype', 'pandas.core.arrays.integer.IntegerArray',
  'pandas.core.arrays.string_.StringArray', 'pandas.core.arrays.string_.StringDtype',
  'pandas.core.arrays.timedeltas.TimedeltaArray', 'pandas.core.dtypes.dtypes.CategoricalDtype',
  'pandas.core.dtypes.dtypes.DatetimeTZDtype', 'pandas.core.frame.DataFrame', 'pandas.core.indexes.base.Index',
  'pandas.core.indexes.base._new_Index', 'pandas.core.indexes.category.CategoricalIndex',
  'pandas.core.indexes.datetimes.DatetimeIndex', 'pandas.core.indexes.datetimes._new_DatetimeIndex',
  'pandas.core.indexes.multi.MultiIndex', 'pandas.core.indexes.range.RangeIndex',
  'pandas.core.internals.managers.BlockManager', 'pandas.core.internals.managers.SingleBlockManager',
  'pandas.core.series.Series', 'pyarrow.lib._restore_array', 'pyarrow.lib.py_buffer', 'pyarrow.lib.type_for_alias',
)

/**
 * Lists of the globals that pickles of common data libraries name, for the Unpickler's allow
 * option; combine them by spreading: `allow: [...ALLOW.pandas, ...ALLOW.sklearn]`. Each loads
 * its library's values as inert placeholders (PyGlobal, PyObject): nothing of the library runs,
 * and the placeholders pickle back to what Python loads as the original.
 */
export const ALLOW = Object.freeze({
  /**
   * pandas 2.x and 3.x DataFrame and Series: numeric, str (python and pyarrow storage),
   * categorical, datetime (naive and zone-aware), timedelta, nullable Int64, Float64 and boolean
   * columns (pandas.NA included); RangeIndex, Index, DatetimeIndex (with a daily frequency),
   * CategoricalIndex and MultiIndex. pandas 3 keeps str columns in pyarrow when pyarrow is
   * installed: the three pyarrow names those columns need are here too.
   */
  pandas: PANDAS,
  /** pyarrow Table, RecordBatch, Array and ChunkedArray (their schemas, fields and buffers). */
  pyarrow: list(
    'pyarrow.lib._reconstruct_record_batch', 'pyarrow.lib._reconstruct_table', 'pyarrow.lib._restore_array',
    'pyarrow.lib.chunked_array', 'pyarrow.lib.field', 'pyarrow.lib.py_buffer', 'pyarrow.lib.schema',
    'pyarrow.lib.type_for_alias',
  ),
  /** scipy.sparse csr, csc and coo matrices and csr and coo arrays. */
  scipySparse: list(
    'scipy.sparse._coo.coo_array', 'scipy.sparse._coo.coo_matrix', 'scipy.sparse._csc.csc_matrix',
    'scipy.sparse._csr.csr_array', 'scipy.sparse._csr.csr_matrix',
  ),
  /**
   * Fitted scikit-learn estimators: LinearRegression, LogisticRegression, StandardScaler,
   * RandomForestClassifier (with its decision trees) and a Pipeline of them.
   */
  sklearn: list(
    'sklearn.ensemble._forest.RandomForestClassifier', 'sklearn.linear_model._base.LinearRegression',
    'sklearn.linear_model._logistic.LogisticRegression', 'sklearn.pipeline.Pipeline',
    'sklearn.preprocessing._data.StandardScaler', 'sklearn.tree._classes.DecisionTreeClassifier',
    'sklearn.tree._tree.Tree',
  ),
  /** xarray DataArray and Dataset, with their pandas indexes: the pandas list and xarray's own names. */
  xarray: list(
    ...PANDAS,
    'xarray.core.dataarray.DataArray', 'xarray.core.dataset.Dataset', 'xarray.core.indexes.PandasIndex',
    'xarray.core.indexing.PandasIndexingAdapter', 'xarray.core.variable.IndexVariable', 'xarray.core.variable.Variable',
  ),
  /** datetime.datetime with a zoneinfo.ZoneInfo zone (loaded through getattr(ZoneInfo, '_unpickle')). */
  zoneinfo: list(
    'zoneinfo.ZoneInfo', 'zoneinfo.ZoneInfo._unpickle',
  ),
})
