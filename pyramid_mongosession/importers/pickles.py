"""Pickled sessions, read without importing a class or calling a function."""
from __future__ import annotations

import _compat_pickle
import io
import logging
import pickle
from typing import Any


log = logging.getLogger(__name__)


# -- pickles: the serialized sessions of pyramid_session_redis and Beaker ------------------

class PickledObject:
    """What an object of a class not unpickled here becomes: a value MongoDB cannot store.

    Such a value is dropped, its key named in the import's WARNING.
    """

    _class_name = '?'

    def __new__(cls, *args: Any, **kwargs: Any) -> PickledObject:
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, value: Any) -> None:
        pass

    def extend(self, values: Any) -> None:
        pass

    def __repr__(self) -> str:
        return '<pickled %s object>' % self._class_name


#: The globals a pickled session may name that are unpickled as they are: the
#: types of plain data. Any other class or function becomes a PickledObject;
#: nothing else is imported or called, so unpickling runs no code of the pickle's choosing.
SAFE_GLOBALS = frozenset(
    [('builtins', name) for name in ('set', 'frozenset', 'bytearray', 'complex', 'list',
                                     'dict', 'tuple', 'int', 'float', 'str', 'bytes', 'bool',
                                     'object')]
    + [('datetime', name) for name in ('datetime', 'date', 'time', 'timedelta', 'timezone')]
    + [('decimal', 'Decimal'), ('uuid', 'UUID'), ('collections', 'OrderedDict'),
       ('copyreg', '_reconstructor'), ('_codecs', 'encode')])


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        # Python 2's names, as pickle protocols 0-2 write them (fix_imports).
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        if (module, name) in SAFE_GLOBALS:
            return super().find_class(module, name)
        qualified = '%s.%s' % (module, name)
        return type('pickled %s' % qualified, (PickledObject,), {'_class_name': qualified})


def safe_unpickle(data: bytes) -> Any:
    """``pickle.loads(data)``, but classes and functions other than :data:`SAFE_GLOBALS`
    become :class:`PickledObject` values instead of being imported."""
    return _SafeUnpickler(io.BytesIO(data)).load()
