/**
 * Options are checked at run time: an unknown option name is a TypeError naming it and the
 * nearest known name, and an option value of the wrong type is a TypeError or RangeError naming
 * the option, on every public function and constructor of the codec that takes options.
 */
import t from 'tap'
import { GlobalRegistry, NDArray, PickleBuffer, Pickler, Unpickler, dis, dump, dumps, dumpsTransient, load, loads } from '@picklewire/codec'
import { checkOptions, optionNames } from '../../packages/codec/dist/options.js'

const KNOWN = optionNames('protocol', 'bufferCallback', 'fixImports', 'maxDepth')

t.test('checkOptions: undefined and a plain object of known names pass', async (t) => {
  t.doesNotThrow(() => checkOptions('f', undefined, KNOWN))
  t.doesNotThrow(() => checkOptions('f', {}, KNOWN))
  t.doesNotThrow(() => checkOptions('f', { protocol: 5, maxDepth: undefined }, KNOWN))
  t.doesNotThrow(() => checkOptions('f', Object.create(null), KNOWN))
})

t.test('checkOptions: a non-object is a TypeError that says what it got', async (t) => {
  t.throws(() => checkOptions('f', null, KNOWN), { name: 'TypeError', message: 'f: options must be an object, got null' })
  t.throws(() => checkOptions('f', [1, 2], KNOWN), { name: 'TypeError', message: 'f: options must be an object, got an array (length 2)' })
  t.throws(() => checkOptions('f', 'fast', KNOWN), { name: 'TypeError', message: 'f: options must be an object, got string "fast"' })
  t.throws(() => checkOptions('f', 5, KNOWN), { name: 'TypeError', message: 'f: options must be an object, got number 5' })
  t.throws(() => checkOptions('f', true, KNOWN), { name: 'TypeError', message: 'f: options must be an object, got boolean true' })
})

t.test('checkOptions: an unknown name is a TypeError naming it and the nearest known one', async (t) => {
  const cases: [string, string][] = [
    ['buffer_callback', 'bufferCallback'], // Python's spelling
    ['buffercallback', 'bufferCallback'], // case
    ['FIX_IMPORTS', 'fixImports'],
    ['protcol', 'protocol'], // one deletion
    ['protocl', 'protocol'],
    ['portocol', 'protocol'], // an adjacent swap is one edit
    ['maxDetph', 'maxDepth'],
    ['max_dept', 'maxDepth'],
  ]
  for (const [typo, meant] of cases) {
    t.throws(() => checkOptions('f', { [typo]: 1 }, KNOWN), {
      name: 'TypeError', message: `f: unknown option '${typo}'; did you mean '${meant}'?`,
    }, typo)
  }
})

t.test('checkOptions: with nothing close, the known names are listed', async (t) => {
  t.throws(() => checkOptions('f', { colour: 'red' }, KNOWN), {
    name: 'TypeError', message: "f: unknown option 'colour'; known options: 'protocol', 'bufferCallback', 'fixImports', 'maxDepth'",
  })
})

t.test('checkOptions: a typo whose value is undefined is still a typo', async (t) => {
  t.throws(() => checkOptions('f', { protocl: undefined }, KNOWN), { name: 'TypeError', message: /unknown option 'protocl'; did you mean 'protocol'\?/ })
})

t.test('checkOptions: inherited and symbol keys are not options', async (t) => {
  const withProto = Object.create({ inherited: 1 }) as object
  t.doesNotThrow(() => checkOptions('f', withProto, KNOWN))
  t.doesNotThrow(() => checkOptions('f', { [Symbol('tag')]: 1, protocol: 2 }, KNOWN))
})

const PICKLE = dumps([1, 'a'])

t.test('every codec function and constructor that takes options refuses an unknown name', async (t) => {
  const typo = { protocol: 5, buffer_callback: () => false } as object
  const bad = (message: RegExp) => ({ name: 'TypeError', message })
  const picklerMessage = /^Pickler: unknown option 'buffer_callback'; did you mean 'bufferCallback'\?$/
  t.throws(() => dumps(new Uint8Array(8), typo), bad(picklerMessage), 'dumps')
  t.throws(() => dumpsTransient(1, typo, () => 0), bad(picklerMessage), 'dumpsTransient')
  t.throws(() => dump(1, { write: () => {} }, typo), bad(picklerMessage), 'dump')
  t.throws(() => new Pickler(null, typo), bad(picklerMessage), 'Pickler')

  const loadTypo = { max_depth: 10 } as object
  const unpicklerMessage = /^Unpickler: unknown option 'max_depth'; did you mean 'maxDepth'\?$/
  t.throws(() => loads(PICKLE, loadTypo), bad(unpicklerMessage), 'loads')
  t.throws(() => load(PICKLE, loadTypo), bad(unpicklerMessage), 'load (throws at once, not a rejected promise)')
  t.throws(() => new Unpickler(PICKLE, loadTypo), bad(unpicklerMessage), 'Unpickler')
  t.throws(() => loads(PICKLE, { findclass: () => null } as object), bad(/unknown option 'findclass'; did you mean 'findClass'\?/), 'loads, case')

  t.throws(() => dis(PICKLE, { indent_level: 2, out: { write: () => {} } } as object),
    bad(/^dis: unknown option 'indent_level'; did you mean 'indentlevel'\?$/), 'dis')
  t.throws(() => new NDArray(new Float32Array(4), { shap: [2, 2] } as object), bad(/^NDArray: unknown option 'shap'; did you mean 'shape'\?$/), 'NDArray')
  t.throws(() => new PickleBuffer(new Uint8Array(4), { readOnly: true } as object), bad(/^PickleBuffer: unknown option 'readOnly'; did you mean 'readonly'\?$/), 'PickleBuffer')
})

t.test('codec options that are not objects are refused', async (t) => {
  t.throws(() => dumps(1, 5 as unknown as object), { name: 'TypeError', message: 'Pickler: options must be an object, got number 5' })
  t.throws(() => loads(PICKLE, [] as object), { name: 'TypeError', message: 'Unpickler: options must be an object, got an array (length 0)' })
})

t.test('Pickler option values of the wrong type are a TypeError or RangeError naming the option', async (t) => {
  const cases: [string, object, string, RegExp][] = [
    ['bufferCallback', { protocol: 5, bufferCallback: 'no' }, 'TypeError', /^Pickler: option bufferCallback must be a function or null, got string "no"$/],
    ['persistentId', { persistentId: {} }, 'TypeError', /option persistentId must be a function, got Object/],
    ['reducerOverride', { reducerOverride: 1 }, 'TypeError', /option reducerOverride must be a function, got number 1/],
    ['fixImports', { fixImports: 'yes' }, 'TypeError', /option fixImports must be a boolean, got string "yes"/],
    ['fast', { fast: 1 }, 'TypeError', /option fast must be a boolean, got number 1/],
    ['dispatchTable', { dispatchTable: {} }, 'TypeError', /option dispatchTable must be a Map, got Object/],
    ['extensions', { extensions: [[1, ['m', 'n']]] }, 'TypeError', /option extensions must be a Map, got Array/],
    ['globals', { globals: new Map() }, 'TypeError', /option globals must be a GlobalRegistry, got Map/],
    ['maxDepth string', { maxDepth: '10' }, 'TypeError', /option maxDepth must be a positive integer, got string "10"/],
    ['maxDepth 0', { maxDepth: 0 }, 'RangeError', /option maxDepth must be a positive integer, got number 0/],
    ['maxDepth 1.5', { maxDepth: 1.5 }, 'RangeError', /option maxDepth must be a positive integer, got number 1.5/],
  ]
  for (const [label, options, name, message] of cases) t.throws(() => dumps([1], options), { name, message }, label)
  // The values the options take still work.
  const buffers: PickleBuffer[] = []
  const pickle = dumps(new PickleBuffer(new Uint8Array(3)), { protocol: 5, bufferCallback: (b) => { buffers.push(b); return false }, fast: true, fixImports: false, maxDepth: 5, globals: new GlobalRegistry() })
  t.equal(buffers.length, 1)
  t.ok(loads(pickle, { buffers }) instanceof PickleBuffer)
  t.doesNotThrow(() => dumps(1, { bufferCallback: null }))
})

t.test('Unpickler option values of the wrong type are a TypeError naming the option', async (t) => {
  const cases: [object, RegExp][] = [
    [{ findClass: 'builtins' }, /^Unpickler: option findClass must be a function, got string "builtins"$/],
    [{ persistentLoad: {} }, /option persistentLoad must be a function, got Object/],
    [{ lossless: 1 }, /option lossless must be a boolean, got number 1/],
    [{ copyBytes: 'no' }, /option copyBytes must be a boolean, got string "no"/],
    [{ opaque: null }, /option opaque must be a boolean, got null/],
    [{ fixImports: 0 }, /option fixImports must be a boolean, got number 0/],
    [{ encoding: 1 }, /option encoding must be a string, got number 1/],
    [{ errors: true }, /option errors must be a string, got boolean true/],
    [{ buffers: 5 }, /option buffers must be an iterable of buffers or null, got number 5/],
    [{ extensions: {} }, /option extensions must be a Map, got Object/],
    [{ globals: {} }, /option globals must be a GlobalRegistry, got Object/],
  ]
  for (const [options, message] of cases) t.throws(() => loads(PICKLE, options), { name: 'TypeError', message }, message.source)
  t.same(loads(PICKLE, { buffers: null, lossless: false, encoding: 'bytes', errors: 'strict', findClass: () => null }), [1, 'a'])
})

t.test('dis, NDArray and PickleBuffer option values of the wrong type are a TypeError naming the option', async (t) => {
  t.throws(() => dis(PICKLE, { out: 'stdout' } as object), { name: 'TypeError', message: /^dis: option out must be an object with a write\(text\) method, got string "stdout"$/ })
  t.throws(() => dis(PICKLE, { out: { write: () => {} }, memo: {} } as object), { name: 'TypeError', message: /option memo must be a Map, got Object/ })
  t.throws(() => new NDArray(new Float32Array(2), { dtype: 4 } as object), { name: 'TypeError', message: /^NDArray: option dtype must be a DType or a numpy type string, got number 4$/ })
  t.throws(() => new NDArray(new Float32Array(2), { readonly: 'yes' } as object), { name: 'TypeError', message: /option readonly must be a boolean, got string "yes"/ })
  t.throws(() => new PickleBuffer(new Uint8Array(2), { readonly: 1 } as object), { name: 'TypeError', message: /^PickleBuffer: option readonly must be a boolean, got number 1$/ })
  t.equal(new PickleBuffer(new Uint8Array(2), { readonly: true }).readonly, true)
  let text = ''
  dis(PICKLE, { out: { write: (s: string) => { text += s } }, indentlevel: 2 })
  t.match(text, /STOP/)
  t.same(new NDArray(new Float32Array(4), { shape: [2, 2], readonly: true }).shape, [2, 2])
})
