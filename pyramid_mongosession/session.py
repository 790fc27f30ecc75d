"""The ISession object that views see as ``request.session``.

It is a dict that remembers which top-level keys a request changed, so the
end of the request writes those keys and nothing else. A value that a view
could mutate in place (a list, a dict) is snapshotted in BSON when the view
first reads it; at the end of the request the snapshot is compared with the
value, so ``request.session['cart'].append(item)`` is saved without a call to
``changed()``. Values that cannot change in place (strings, numbers, dates…)
cost nothing.
"""
import binascii
import datetime
import os
import uuid

import bson
from pyramid.interfaces import ISession
from zope.interface import implementer

from .exceptions import SessionValueError
from .options import SessionOptions, utcnow
from .store import ENCODING_ERRORS, encode_value

_IMMUTABLE = (str, bytes, int, float, type(None), datetime.datetime,
              bson.ObjectId, bson.Decimal128, bson.Timestamp, uuid.UUID)

_CSRF_KEY = '_csrft_'
_FLASH_PREFIX = '_f_'
_MISSING = object()


def _checked_key(key):
    if not isinstance(key, str):
        raise SessionValueError(
            'session keys must be strings (MongoDB field names), not %r' % (key,))
    return key


@implementer(ISession)
class MongoSession:
    """One request's view of one session.

    Built by :class:`~pyramid_mongosession.MongoSessionFactory`; views get it
    as ``request.session``. ``options`` holds Plack's per-request controls
    (see :class:`~pyramid_mongosession.options.SessionOptions`).
    """

    def __init__(self, factory, request, session_id=None, stored=None, had_cookie=False,
                 degraded=False):
        self.factory = factory
        #: True when the store was down and this session will not be persisted.
        self.degraded = degraded
        #: The id the request's (validly signed) cookie named, found or not.
        self.cookie_id = session_id
        #: True once invalidate() was called.
        self.invalidated = False
        self.request = request
        self.had_cookie = had_cookie
        #: The id whose document this request loaded; it never changes.
        self.loaded_id = session_id if stored is not None else None
        #: The id the data now belongs to: None for a new or invalidated session.
        self.id = self.loaded_id
        if stored is None:
            self._data = {}
            self.created_at = utcnow()
            self.stored_expires = None
            self.version = None
        else:
            self._data = stored.data
            self.created_at = stored.created or utcnow()
            self.stored_expires = stored.expires
            self.version = stored.version
        # Top-level keys set or deleted by this request (and values to re-encrypt).
        self._changed = set(stored.stale_keys) if stored is not None else set()
        self._snapshots = {}    # key -> BSON of a mutable stored value, taken when first read
        self.options = SessionOptions(self)

    # -- ISession ------------------------------------------------------------

    @property
    def created(self):
        """When the session was created, in seconds since the epoch."""
        return self.created_at.replace(tzinfo=datetime.timezone.utc).timestamp()

    @property
    def new(self):
        """True until the session's data is stored under an id."""
        return self.id is None

    def changed(self):
        """Mark every value this request has read as changed, so it is written.

        Never needed: a value can only be changed in place after the request
        read it from the session, and such changes are detected. Keys the
        request never read are not rewritten, so a concurrent request's
        changes to them survive.
        """
        self._changed.update(key for key in self._snapshots if key in self._data)

    def change_id(self):
        """Store the session under a new id at the end of the request (after login).

        Short for ``self.options['change_id'] = True``.
        """
        self.options['change_id'] = True

    def expire(self):
        """Delete the session and clear its cookie at the end of the request (logout).

        Short for ``self.options['expire'] = True``.
        """
        self.options['expire'] = True

    def invalidate(self):
        """Forget this session: its document is deleted at the end of the request.

        The session stays usable; data stored after ``invalidate()`` starts a
        new session under a new id. ``options['expire']`` is the stronger
        form: it also discards anything stored afterwards.
        """
        self.id = None
        self.invalidated = True
        self._data = {}
        self._changed = set()
        self._snapshots = {}
        self.created_at = utcnow()
        self.stored_expires = None
        self.version = None

    # flash messages -------------------------------------------------------

    def flash(self, msg, queue='', allow_duplicate=True):
        key = _FLASH_PREFIX + queue
        messages = self._data.get(key)
        if messages is None:
            self[key] = messages = []
        if allow_duplicate or msg not in messages:
            messages.append(msg)
            self._changed.add(key)

    def pop_flash(self, queue=''):
        return self.pop(_FLASH_PREFIX + queue, [])

    def peek_flash(self, queue=''):
        return self.get(_FLASH_PREFIX + queue, [])

    # CSRF (what Pyramid's LegacySessionCSRFStoragePolicy calls) -------------

    def new_csrf_token(self):
        token = binascii.hexlify(os.urandom(20)).decode('ascii')
        self[_CSRF_KEY] = token
        return token

    def get_csrf_token(self):
        token = self._data.get(_CSRF_KEY)
        if token is None:
            token = self.new_csrf_token()
        return token

    # -- the dict --------------------------------------------------------------

    def _expose(self, key, value):
        if (not isinstance(value, _IMMUTABLE) and key not in self._changed
                and key not in self._snapshots):
            self._snapshots[key] = encode_value(value)
        return value

    def _expose_all(self):
        for key, value in self._data.items():
            self._expose(key, value)

    def __getitem__(self, key):
        return self._expose(key, self._data[key])

    def get(self, key, default=None):
        value = self._data.get(key, _MISSING)
        if value is _MISSING:
            return default
        return self._expose(key, value)

    def __setitem__(self, key, value):
        self._data[_checked_key(key)] = value
        self._changed.add(key)

    def __delitem__(self, key):
        del self._data[key]
        self._changed.add(key)

    def __contains__(self, key):
        return key in self._data

    def __iter__(self):
        return iter(self._data)

    def __len__(self):
        return len(self._data)

    def keys(self):
        return self._data.keys()

    def values(self):
        self._expose_all()
        return self._data.values()

    def items(self):
        self._expose_all()
        return self._data.items()

    def copy(self):
        self._expose_all()
        return dict(self._data)

    def setdefault(self, key, default=None):
        if key in self._data:
            return self[key]
        self[key] = default
        return default

    def pop(self, key, default=_MISSING):
        if key in self._data:
            self._changed.add(key)
            return self._data.pop(key)
        if default is _MISSING:
            raise KeyError(key)
        return default

    def popitem(self):
        key, value = self._data.popitem()
        self._changed.add(key)
        return key, value

    def update(self, *args, **kwargs):
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def clear(self):
        self._changed.update(self._data)
        self._data.clear()

    def __repr__(self):
        return '<%s %s %r>' % (type(self).__name__, 'new' if self.new else 'stored', self._data)

    # -- what the end of the request writes -------------------------------------

    def changes(self):
        """Return ``(changed, removed)``: the keys to write and the keys to delete."""
        changed = set(self._changed)
        for key, snapshot in self._snapshots.items():
            if key in changed or key not in self._data:
                continue
            try:
                if encode_value(self._data[key]) != snapshot:
                    changed.add(key)
            except ENCODING_ERRORS as exc:
                raise SessionValueError(
                    'session key %r holds a value MongoDB cannot store: %s' % (key, exc)
                ) from exc
        data = self._data
        return ({key: data[key] for key in changed if key in data},
                {key for key in changed if key not in data})

    @property
    def data(self):
        """The session's data as a plain dict, without marking anything read."""
        return self._data
