"""The ISession object that views see as ``request.session``.

It is a dict that remembers which top-level keys a request changed, so the
end of the request writes those keys and nothing else. A value that a view
could mutate in place (a list, a dict) is snapshotted in BSON when the view
first reads it; at the end of the request the snapshot is compared with the
value, so ``request.session['cart'].append(item)`` is saved without a call to
``changed()``. Values that cannot change in place (strings, numbers, dates…)
cost nothing.

The bookkeeping lives in a :class:`~pyramid_mongosession.state.SessionState`,
which the factory hands to the end of the request
(:mod:`pyramid_mongosession.lifecycle`) explicitly; applications see only
:class:`MongoSession`'s documented attributes.
"""
from __future__ import annotations

import binascii
import datetime
import os
import uuid
from collections.abc import (
    ItemsView, Iterator, KeysView, MutableMapping, ValuesView)
from typing import Any

import bson
from pyramid.interfaces import ISession
from zope.interface import implementer

from .encoding import (
    MAX_SECONDS, check_key, check_user_id, check_value, encode_value,
    is_duration)
from .state import FLAGS, SessionState

#: Every key of ``request.session.options``.
OPTIONS = FLAGS + ('timeout', 'id')

_IMMUTABLE = (str, bytes, int, float, type(None), datetime.datetime,
              bson.ObjectId, bson.Decimal128, bson.Timestamp, uuid.UUID)

_CSRF_KEY = '_csrft_'
_FLASH_PREFIX = '_f_'
_MISSING = object()


class SessionOptions(MutableMapping[str, Any]):
    """``request.session.options``: Plack's per-request controls, and the session's lifetime.

    ``change_id``, ``expire``, ``no_store`` and ``late_store`` are flags (see
    :doc:`options`); ``timeout`` is this session's idle timeout in seconds,
    stored with it (None: the factory's ``timeout``; "remember me" sets a long
    one, and makes the cookie persistent); ``id`` is the session id,
    read-only, None while the session has none. An unknown key raises
    :exc:`KeyError`.
    """

    def __init__(self, state: SessionState) -> None:
        self._state = state

    def __getitem__(self, key: str) -> Any:
        if key in ('id', 'timeout'):
            state = self._state
            if state.found is None:
                state.ensure_loaded()
            return state.id if key == 'id' else state.own_timeout
        return self._state.flags[key]

    def __setitem__(self, key: str, value: Any) -> None:
        if key == 'id':
            raise TypeError("options['id'] is read-only: set options['change_id'] "
                            "to give the session a new id")
        if key == 'timeout':
            if value is not None and not is_duration(value):
                raise ValueError("options['timeout'] is a positive, finite number of seconds "
                                 "up to %d (about a century), or None for the factory's "
                                 "timeout, not %r" % (MAX_SECONDS, value))
            self._state.own_timeout = value
            self._state.own_timeout_set = True
            return
        if key not in self._state.flags:
            raise KeyError('unknown session option %r (known: %s)' % (key, ', '.join(OPTIONS)))
        self._state.flags[key] = bool(value)

    def __delitem__(self, key: str) -> None:
        self[key] = None if key == 'timeout' else False

    def clear(self) -> None:
        for flag in FLAGS:
            self._state.flags[flag] = False

    def popitem(self) -> tuple[str, Any]:
        raise KeyError('session options keep their keys: set them to False instead')

    def __iter__(self) -> Iterator[str]:
        return iter(OPTIONS)

    def __len__(self) -> int:
        return len(OPTIONS)

    def __repr__(self) -> str:
        return repr(dict(self))


def _epoch(when: datetime.datetime) -> float:
    return when.replace(tzinfo=datetime.timezone.utc).timestamp()


@implementer(ISession)
class MongoSession:
    """One request's view of one session.

    Built by :class:`~pyramid_mongosession.MongoSessionFactory`; views get it
    as ``request.session``. Besides :class:`pyramid.interfaces.ISession`, it
    offers ``options`` (Plack's per-request controls, see
    :class:`SessionOptions`), :attr:`expires`, and the shortcuts
    :meth:`change_id` and :meth:`expire`.

    The stored session is loaded on the first read — a key, ``len``,
    iteration, ``new``, ``created``, ``options['id']``… — and never before:
    a request that only writes (``session[key] = value``, ``del
    session[key]``, ``flash()``, ``new_csrf_token()``) sends its writes
    without reading, in one round trip. So ``del session[key]`` on a session
    not read yet does not check that the key exists.
    """

    def __init__(self, state: SessionState) -> None:
        self._state = state

    @property
    def options(self) -> SessionOptions:
        """Plack's per-request controls (see :class:`SessionOptions`): a mapping."""
        return SessionOptions(self._state)

    def _loaded(self) -> SessionState:
        state = self._state
        if state.found is None:
            state.ensure_loaded()
        return state

    # -- ISession ------------------------------------------------------------

    @property
    def created(self) -> float:
        """When the session was created, in seconds since the epoch (to the millisecond)."""
        return _epoch(self._loaded().created)

    @property
    def new(self) -> bool:
        """True until the session's data is stored under an id."""
        return self._loaded().id is None

    @property
    def expires(self) -> float | None:
        """When the stored session expires if left idle, in seconds since the epoch.

        The expiry as this request loaded it (each write moves it forward);
        None for a new session, or when no timeout applies.
        """
        expires = self._loaded().expires
        return None if expires is None else _epoch(expires)

    def changed(self) -> None:
        """Mark every value this request has read as changed, so it is written.

        Never needed: a value can only be changed in place after the request
        read it from the session, and such changes are detected. Keys the
        request never read are not rewritten, so a concurrent request's
        changes to them survive.
        """
        state = self._state
        state.dirty.update(key for key in state.snapshots if key in state.data)

    def change_id(self) -> None:
        """Store the session under a new id at the end of the request (after login).

        Short for ``self.options['change_id'] = True``.
        """
        self.options['change_id'] = True

    def expire(self) -> None:
        """Delete the session and clear its cookie at the end of the request (logout).

        Short for ``self.options['expire'] = True``.
        """
        self.options['expire'] = True

    @property
    def handle(self) -> str | None:
        """The session's handle: a stable, non-secret name for it, or None while it has no id.

        What a page of the user's sessions marks as "this one", and
        ``revoke_user(userid, keep=request.session.handle)`` spares. It is
        not the session id, nor anything that could log in; it stays the same
        across ``change_id``. See :doc:`accounts`.
        """
        state = self._loaded()
        return state.accounts.handle(state) if state.accounts is not None else None

    def invalidate(self) -> None:
        """Forget this session: its document is deleted at the end of the request.

        The session stays usable; data stored after ``invalidate()`` starts a
        new session under a new id. ``options['expire']`` is the stronger
        form: it also discards anything stored afterwards.
        """
        self._loaded().forget()

    # flash messages -------------------------------------------------------

    def flash(self, msg: Any, queue: str = '', allow_duplicate: bool = True) -> None:
        key = _FLASH_PREFIX + queue
        state = self._state
        if allow_duplicate and state.found is None and key not in state.data:
            # Not read yet: append on the server ($push), so concurrent flashes all survive.
            check_value(key, msg)
            state.pushes.setdefault(key, []).append(msg)
            return
        messages = self._loaded().data.get(key)
        if messages is None:
            self[key] = messages = []
        if allow_duplicate or msg not in messages:
            check_value(key, msg)
            messages.append(msg)
            state.dirty.add(key)

    def pop_flash(self, queue: str = '') -> list[Any]:
        messages: list[Any] = self.pop(_FLASH_PREFIX + queue, [])
        return messages

    def peek_flash(self, queue: str = '') -> list[Any]:
        messages: list[Any] = self.get(_FLASH_PREFIX + queue, [])
        return messages

    # CSRF (what Pyramid's LegacySessionCSRFStoragePolicy calls) -------------

    def new_csrf_token(self) -> str:
        token = binascii.hexlify(os.urandom(20)).decode('ascii')
        self[_CSRF_KEY] = token
        return token

    def get_csrf_token(self) -> str:
        token = self._loaded().data.get(_CSRF_KEY)
        if token is None:
            token = self.new_csrf_token()
        return token

    # -- the dict --------------------------------------------------------------

    def _expose(self, key: str, value: Any) -> Any:
        state = self._state
        if (not isinstance(value, _IMMUTABLE) and key not in state.dirty
                and key not in state.snapshots):
            state.snapshots[key] = encode_value(value)
        return value

    def _expose_all(self) -> None:
        for key, value in self._loaded().data.items():
            self._expose(key, value)

    def __getitem__(self, key: str) -> Any:
        return self._expose(key, self._loaded().data[key])

    def get(self, key: str, default: Any = None) -> Any:
        value = self._loaded().data.get(key, _MISSING)
        if value is _MISSING:
            return default
        return self._expose(key, value)

    def __setitem__(self, key: str, value: Any) -> None:
        """Set ``key``; a value no server can store raises :class:`SessionValueError` here."""
        check_value(check_key(key), value)
        state = self._state
        if key == state.user_key and value is not None:
            check_user_id(value, 'session key %r (the user id, user_key)' % key)
        state.data[key] = value
        state.dirty.add(key)
        state.pushes.pop(key, None)

    def __delitem__(self, key: str) -> None:
        state = self._state
        if state.found is None:
            # Not read yet: a blind $unset, whether or not the key is stored.
            state.data.pop(key, None)
            state.pushes.pop(key, None)
        else:
            del state.data[key]
        state.dirty.add(key)

    def __contains__(self, key: object) -> bool:
        return key in self._loaded().data

    def __iter__(self) -> Iterator[str]:
        return iter(self._loaded().data)

    def __len__(self) -> int:
        return len(self._loaded().data)

    def keys(self) -> KeysView[str]:
        return self._loaded().data.keys()

    def values(self) -> ValuesView[Any]:
        self._expose_all()
        return self._state.data.values()

    def items(self) -> ItemsView[str, Any]:
        self._expose_all()
        return self._state.data.items()

    def copy(self) -> dict[str, Any]:
        self._expose_all()
        return dict(self._state.data)

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key in self._loaded().data:
            return self[key]
        self[key] = default
        return default

    def pop(self, key: str, default: Any = _MISSING) -> Any:
        data = self._loaded().data
        if key in data:
            self._state.dirty.add(key)
            return data.pop(key)
        if default is _MISSING:
            raise KeyError(key)
        return default

    def popitem(self) -> tuple[str, Any]:
        key, value = self._loaded().data.popitem()
        self._state.dirty.add(key)
        return key, value

    def update(self, *args: Any, **kwargs: Any) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def clear(self) -> None:
        data = self._loaded().data
        self._state.dirty.update(data)
        data.clear()

    def __repr__(self) -> str:
        state = self._state
        if state.found is None:
            return '<%s not read yet, writes %r>' % (type(self).__name__, state.data)
        return '<%s %s %r>' % (type(self).__name__, 'new' if state.id is None else 'stored',
                               state.data)
