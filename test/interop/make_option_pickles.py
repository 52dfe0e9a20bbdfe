"""
Pickles for the Unpickler option tests (test/codec/unpickler-options.test.ts): persistent ids,
extension codes, and instances of classes no registry knows. Prints {name: base64} as JSON.
"""
import base64
import collections
import copyreg
import datetime
import decimal
import io
import json
import pickle
import sys


class Ref:
    """An object pickled by reference: persistent_id names it."""
    def __init__(self, name):
        self.name = name


class RefPickler(pickle.Pickler):
    def __init__(self, f, protocol):
        super().__init__(f, protocol)
        self.text_ids = protocol == 0

    def persistent_id(self, obj):
        if isinstance(obj, Ref):
            return f'ref:{obj.name}' if self.text_ids else ('ref', obj.name)
        return None


class Custom:
    def __init__(self):
        self.x = 1
        self.items = [1, 2]


class MyList(list):
    pass


class MyDict(dict):
    pass


class WithKw:
    def __new__(cls, *args, **kw):
        return object.__new__(cls)
    def __init__(self, *args, **kw):
        self.a = args
    def __getnewargs_ex__(self):
        return (1,), {'k': 2}


def dumps_persistent(v, p):
    f = io.BytesIO()
    RefPickler(f, p).dump(v)
    return f.getvalue()


out = {}
for p in range(6):
    out[f'persistent {p}'] = dumps_persistent([Ref('a'), 1, Ref('b')], p)
    out[f'custom {p}'] = pickle.dumps(Custom(), p)
    out[f'mylist {p}'] = pickle.dumps(MyList([1, 2]), p)
    out[f'mydict {p}'] = pickle.dumps(MyDict(k='v'), p)
out['withkw 4'] = pickle.dumps(WithKw(), 4)
copyreg.add_extension('collections', 'OrderedDict', 1)
copyreg.add_extension('datetime', 'date', 300)
copyreg.add_extension('decimal', 'Decimal', 70000)
for p in range(2, 6):
    out[f'ext {p}'] = pickle.dumps([collections.OrderedDict(a=1), datetime.date(2020, 1, 2), decimal.Decimal('1.5')], p)
json.dump({k: base64.b64encode(v).decode() for k, v in out.items()}, sys.stdout)
