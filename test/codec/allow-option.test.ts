/**
 * The Unpickler's allow option: full names and `module.*` prefixes load as inert placeholders,
 * everything else is refused naming the global and how to allow it; builtins.getattr only on
 * an allowed placeholder and only to an allowed name; placeholders of allowed names (and only
 * those) serve as classes and callables. Hand-made pickles (protocol 0 text, NEWOBJ), so that
 * every refusal is reached on purpose; test/interop/data-allow-lists.test.ts covers the pickles
 * the data libraries write.
 */
import t from 'tap'
import { ALLOW, OrderedDict, PyGlobal, PyObject, PyObjectCall, UnpicklingError, dumps, loads } from '@picklewire/codec'
import { pickle } from '../helpers/craft.js'

const zone = (key: string): string => `czoneinfo\nZoneInfo\n(V${key}\ntR`
/** zoneinfo.ZoneInfo._unpickle('Europe/Paris', 1), as datetime's tzinfo pickles. */
const UNPICKLE_ZONE = pickle('cbuiltins\ngetattr\n(czoneinfo\nZoneInfo\nV_unpickle\ntR(VEurope/Paris\nI1\ntR.')

t.test('a full name loads as an inert placeholder; a global outside the list is refused naming it and how to allow it', async (t) => {
  const v = loads(pickle(`${zone('UTC')}.`), { allow: ['zoneinfo.ZoneInfo'] })
  t.ok(v instanceof PyObject, 'a PyObject')
  const o = v as PyObject
  t.equal(String(o.callable), 'zoneinfo.ZoneInfo')
  t.ok(o.callable.opaque, 'its class is a placeholder')
  t.same(o.args, ['UTC'])
  t.throws(() => loads(pickle('cos\nsystem\n(Vecho\ntR.'), { allow: ALLOW.pandas }), {
    name: 'UnpicklingError',
    message: "global 'os.system' is forbidden: it is not in the allow option; add 'os.system' (or a prefix such as 'os.*') to load it as an inert placeholder",
  })
  t.throws(() => loads(pickle('czoneinfo\nZoneInfoX\n.'), { allow: ['zoneinfo.ZoneInfo'] }), { message: /^global 'zoneinfo.ZoneInfoX' is forbidden: it is not in the allow option/ },
    'a full name is not a prefix')
  t.throws(() => loads(pickle(`${zone('UTC')}.`)), { message: "global 'zoneinfo.ZoneInfo' is forbidden" }, 'without the option, refused as before')
})

t.test("a prefix 'M.*' allows every global whose full name starts with 'M.'", async (t) => {
  const allow = ['pkg.sub.*']
  for (const [module, name] of [['pkg.sub', 'X'], ['pkg.sub.deep', 'Y'], ['pkg', 'sub.Z']]) {
    const v = loads(pickle(`\x80\x04\x8c${String.fromCharCode(module!.length)}${module}\x8c${String.fromCharCode(name!.length)}${name}\x93.`), { allow })
    t.ok(v instanceof PyGlobal && v.opaque && v.module === module && v.name === name, `${module}.${name}`)
  }
  for (const [module, name] of [['pkg', 'X'], ['pkg.subx', 'X'], ['pkg', 'sub']]) {
    t.throws(() => loads(pickle(`c${module}\n${name}\n.`), { allow }), { name: 'UnpicklingError', message: new RegExp(`^global '${module}\\.${name}' is forbidden`) }, `${module}.${name} refused`)
  }
})

t.test('a registered global stays what the registry makes of it', async (t) => {
  const v = loads(pickle('ccollections\nOrderedDict\n)R.'), { allow: ['collections.*'] })
  t.ok(v instanceof OrderedDict, 'collections.OrderedDict is still an OrderedDict')
})

t.test('builtins.getattr: on an allowed placeholder, to an allowed name', async (t) => {
  const v = loads(UNPICKLE_ZONE, { allow: ALLOW.zoneinfo })
  t.ok(v instanceof PyObjectCall, 'the zone is a call of the getattr placeholder')
  const call = v as PyObjectCall
  t.same(call.args, ['Europe/Paris', 1])
  t.ok(call.target instanceof PyObject && String(call.target.callable) === 'builtins.getattr', 'its target is getattr(...)')
  t.same((call.target as PyObject).args.slice(1), ['_unpickle'])
  t.same(loads(dumps(v, { protocol: 2 }), { allow: ALLOW.zoneinfo }), v, 'pickles back to the same placeholders')

  t.throws(() => loads(UNPICKLE_ZONE, { allow: ['zoneinfo.ZoneInfo'] }), {
    name: 'UnpicklingError',
    message: `builtins.getattr(zoneinfo.ZoneInfo, "_unpickle") is forbidden: 'zoneinfo.ZoneInfo._unpickle' is not in the allow option; add 'zoneinfo.ZoneInfo._unpickle' to allow it`,
  }, 'an attribute not in the list')
  t.throws(() => loads(pickle('cbuiltins\ngetattr\n(czoneinfo\nZoneInfo\nVclear_cache\ntR.'), { allow: ALLOW.zoneinfo }),
    { message: /'zoneinfo\.ZoneInfo\.clear_cache' is not in the allow option/ }, 'another attribute of an allowed class')
  t.throws(() => loads(pickle('cbuiltins\ngetattr\n(Vabc\nVupper\ntR.'), { allow: ['builtins.str.upper'] }),
    { message: 'builtins.getattr(string "abc", "upper") is forbidden: the allow option admits getattr on placeholders of allowed globals only' }, 'on a str')
  t.throws(() => loads(pickle('cbuiltins\ngetattr\n(cbuiltins\ndict\nVfromkeys\ntR.'), { allow: ['builtins.dict.fromkeys'] }),
    { message: /^builtins\.getattr\(global builtins\.dict, "fromkeys"\) is forbidden/ }, 'on a registered global, which is no placeholder')
  t.throws(() => loads(pickle(`cbuiltins\ngetattr\n(${zone('UTC')}V_unpickle\ntR.`), { allow: ['zoneinfo.*'] }),
    { message: /^builtins\.getattr\(PyObject, "_unpickle"\) is forbidden/ }, 'on an instance placeholder, even under a prefix')
  t.throws(() => loads(pickle('cbuiltins\ngetattr\n(czoneinfo\nZoneInfo\nV_unpickle\nNtR.'), { allow: ALLOW.zoneinfo }),
    { message: 'builtins.getattr is allowed as getattr(placeholder, name) only, got 3 arguments' }, 'with a default')
  t.throws(() => loads(pickle('cbuiltins\ngetattr\n.')), { message: "global 'builtins.getattr' is forbidden" }, 'without the option, refused as before')
  t.throws(() => loads(pickle('cbuiltins\ngetattr\n)\x81.'), { allow: ['zoneinfo.*'] }), UnpicklingError, 'getattr is no class')
})

t.test('placeholders of allowed names serve as classes and callables; instances do not', async (t) => {
  const allow = ['pkg.Outer', 'pkg.Outer.Inner']
  const inner = 'cbuiltins\ngetattr\n(cpkg\nOuter\nVInner\ntR'
  const made = loads(pickle(`\x80\x02${inner})\x81.`), { allow })
  t.ok(made instanceof PyObjectCall && made.origin === 'newobj', 'NEWOBJ on a class reached through getattr')
  const rebuilt = loads(pickle(`ccopy_reg\n_reconstructor\n(${inner}c__builtin__\nobject\nNtR.`), { allow })
  t.ok(rebuilt instanceof PyObjectCall && rebuilt.origin === 'reconstructor', 'copyreg._reconstructor on one')
  t.same(loads(dumps(made, { protocol: 2 }), { allow }), made, 'pickles back to the same placeholders')

  const instance = zone('UTC')
  const opts = { allow: ['zoneinfo.ZoneInfo'] }
  t.throws(() => loads(pickle(`${instance}(tR.`), opts), { name: 'UnpicklingError', message: /^cannot call PyObject: the allow option calls placeholders of allowed names only/ }, 'calling an instance')
  t.throws(() => loads(pickle(`\x80\x02${instance})\x81.`), opts), { message: 'cannot create an instance of PyObject' }, 'NEWOBJ on an instance')
  t.throws(() => loads(pickle(`ccopy_reg\n_reconstructor\n(${instance}c__builtin__\nobject\nNtR.`), opts),
    { message: 'copyreg._reconstructor needs a class, got a placeholder instance PyObject' }, 'copyreg._reconstructor on an instance')
  t.throws(() => loads(pickle('\x80\x02cbuiltins\nlen\n)\x81.'), { allow: ['builtins.len'] }), { message: /builtins\.len.*builtin function, not a type/ }, 'NEWOBJ on a builtin function')
})

t.test('the option is checked before anything is read', async (t) => {
  const data = pickle('N.')
  t.equal(loads(data, { allow: new Set(['a.b']) }), null, 'a Set of patterns')
  t.equal(loads(data, { allow: [] }), null, 'an empty list')
  t.throws(() => loads(data, { allow: 'pandas.*' as never }), { name: 'TypeError', message: 'Unpickler: option allow must be an array (or other iterable) of pattern strings, got string "pandas.*"' })
  t.throws(() => loads(data, { allow: [1] as never }), { name: 'TypeError', message: 'Unpickler: option allow must be pattern strings only, got number 1' })
  for (const bad of ['pandas', '*', '.*', 'pandas.*.x', 'pandas.', 'a..b', 'a.b c', 'a.b-c', '']) {
    t.throws(() => loads(data, { allow: [bad] }), { name: 'RangeError', message: /^Unpickler: option allow must be "module\.Name" or "module\.\*" patterns/ }, JSON.stringify(bad))
  }
  t.throws(() => loads(data, { allow: ['a.b'], opaque: true }), { name: 'TypeError', message: /options allow and opaque exclude each other/ })
  t.throws(() => loads(data, { alow: ['a.b'] } as never), { name: 'TypeError', message: /allow/ }, 'a misspelt name suggests allow')
})
