"""One request's bookkeeping for its session: what it loaded, what it changed, what it wants.

:class:`~pyramid_mongosession.session.MongoSession` is the face views see;
this is what it writes to, and what the end of the request
(:mod:`pyramid_mongosession.lifecycle`) reads: explicitly, never through the
session's private attributes.
"""
from __future__ import annotations

import datetime
from typing import Any, Callable

from .encoding import ENCODING_ERRORS, encode_value, utcnow
from .exceptions import SessionValueError

#: Plack::Middleware::Session's per-request options that a view may set.
FLAGS = ('change_id', 'expire', 'no_store', 'late_store')


class SessionState:
    """One request's bookkeeping for its session: what the end of the request reads.

    The stored session is loaded on the first read, not before: until then
    ``data`` holds only what this request wrote, and a request that only
    writes can send its writes without a find. ``cookie_id`` is the id the
    request's signed cookie named; ``load`` returns ``(stored, degraded,
    retired)`` for it (see the factory); ``found`` is None until loaded, then whether a
    live document was there. ``id`` is the id the data belongs to (None for
    a new or invalidated session; the end of the request assigns one).
    ``dirty`` holds the keys this request set or deleted, ``pushes`` the
    flash messages appended to keys not read, and ``snapshots`` the BSON of
    mutable values as they were first read. ``request`` is a weak reference
    to the request, for what the end of the request records about its
    client, and its events; ``accounts`` the factory's
    :class:`~pyramid_mongosession.accounts.Accounts`. ``user_key`` is the
    session key of the user id (its values are checked when assigned);
    ``resign`` says that only one of ``old_secrets`` signed the cookie.
    """

    __slots__ = ('cookie_id', 'had_cookie', 'load', 'found', 'stored', 'retired', 'degraded',
                 'id', 'data', '_created', 'expires', 'own_timeout', 'own_timeout_set',
                 'invalidated', 'flags', 'dirty', 'pushes', 'snapshots', 'request', 'accounts',
                 'user_key', 'resign', 'ended')

    cookie_id: str | None
    had_cookie: bool
    load: Callable[[], tuple[Any, bool, bool]] | None
    found: bool | None
    stored: Any
    retired: bool
    degraded: bool
    id: str | None
    data: dict[str, Any]
    _created: datetime.datetime | None
    expires: datetime.datetime | None
    own_timeout: float | None
    own_timeout_set: bool
    invalidated: bool
    flags: dict[str, bool]
    dirty: set[str]
    pushes: dict[str, list[Any]]
    snapshots: dict[str, bytes]
    request: Any
    accounts: Any
    user_key: str | None
    resign: bool
    ended: bool

    def __init__(self, cookie_id: str | None = None, had_cookie: bool = False,
                 load: Callable[[], tuple[Any, bool, bool]] | None = None,
                 user_key: str | None = None) -> None:
        self.cookie_id = cookie_id
        self.had_cookie = had_cookie
        self.load = load
        self.found = None if load is not None else False
        self.stored = None
        self.retired = False     # the id was retired by change_id lately (rotation_grace)
        self.degraded = False
        self.id = None
        self.data = {}
        self._created = None   # see created
        self.expires = None
        self.own_timeout = None        # this session's own idle timeout (seconds), if any
        self.own_timeout_set = False   # whether this request set it
        self.invalidated = False
        self.flags = dict.fromkeys(FLAGS, False)
        self.dirty = set()
        self.pushes = {}
        self.snapshots = {}
        self.request = None
        self.accounts = None
        self.user_key = user_key   # the session key of the user id, whose values are checked
        self.resign = False        # the cookie verified only with one of old_secrets
        self.ended = False         # the end of the request has run (see EndOfRequest)

    @property
    def created(self) -> datetime.datetime:
        """When the session was created: stored, or for a new one the first time it is asked
        (most requests load a stored session and never need the clock for this)."""
        if self._created is None:
            self._created = utcnow()
        return self._created

    @created.setter
    def created(self, value: datetime.datetime) -> None:
        self._created = value

    def created_by(self, now: datetime.datetime) -> datetime.datetime:
        """:attr:`created`, a new session taking ``now``: the time of the request's
        store, which its ``last_seen`` and expiry are counted from too."""
        if self._created is None:
            self._created = now
        return self._created

    @property
    def may_exist(self) -> bool:
        """Whether a stored session may be under ``cookie_id``: found, or not looked for."""
        return self.cookie_id is not None and self.found is not False

    def ensure_loaded(self) -> None:
        """Load the stored session once, and lay this request's writes over it."""
        if self.found is not None:
            return
        assert self.load is not None   # found is None only when there is something to load
        stored, self.degraded, self.retired = self.load()
        self.found = stored is not None
        if self.dirty or self.pushes:
            self._lay_writes_over(stored)
        elif stored is not None:
            self.data = stored.data   # most requests read before they write
        if stored is None:
            return
        if stored.stale_keys:
            self.dirty.update(stored.stale_keys)   # values sealed with a retired key
        self.stored = stored
        self.id = self.cookie_id
        if stored.created is not None:
            self._created = stored.created
        self.expires = stored.expires
        if not self.own_timeout_set:
            self.own_timeout = stored.timeout

    def _lay_writes_over(self, stored: Any) -> None:
        """Lay what this request wrote before it read over the stored data, if found.

        The flash messages kept for the server join the data whether or not
        a session was found: a dead session's visitor still sees them.
        """
        pushes = self.pushes
        self.dirty.update(pushes)
        if stored is not None:
            writes, self.data = self.data, stored.data
            for key in self.dirty:
                if key in writes:
                    self.data[key] = writes[key]
                elif key not in pushes:
                    self.data.pop(key, None)
        self.fold_pushes()

    def reload(self) -> None:
        """Load the stored session again: a write that did not read it found nothing to write to."""
        self.found = None
        self.ensure_loaded()

    def their_changes(self, latest: dict[str, Any]) -> tuple[dict[str, Any], set[str]]:
        """What another request changed in the stored session since this one loaded it.

        ``latest`` is the stored data as it is now. Returns ``(theirs,
        dropped)``: the values it set and the keys it deleted, among the keys
        this request did not change itself.
        """
        changed, removed = self.delta()
        data = self.data
        theirs = {key: value for key, value in latest.items()
                  if key not in changed and key not in removed and data.get(key) != value}
        dropped = {key for key in data if key not in latest and key not in changed}
        return theirs, dropped

    def assigned(self) -> dict[str, Any]:
        """The values this request set (for a session it has not read)."""
        data = self.data
        return {key: data[key] for key in self.dirty if key in data}

    def fold_pushes(self) -> None:
        """Append the flash messages kept for the server to the values in ``data``."""
        for key, messages in self.pushes.items():
            current = self.data.get(key)
            self.data[key] = (current if isinstance(current, list) else []) + messages
        self.pushes = {}

    def forget(self) -> None:
        """invalidate(): the data is dissociated; what is stored next starts a new session."""
        self.id = None
        self.invalidated = True
        self.data = {}
        self.dirty = set()
        self.pushes = {}
        self.snapshots = {}
        self._created = None   # a new session's: see created
        self.expires = None

    def delta(self) -> tuple[dict[str, Any], set[str]]:
        """Return ``(values, removed)``: the values to write and the keys to delete."""
        changed = set(self.dirty)
        data = self.data
        for key, snapshot in self.snapshots.items():
            if key in changed or key not in data:
                continue
            try:
                if encode_value(data[key]) != snapshot:
                    changed.add(key)
            except ENCODING_ERRORS as exc:
                raise SessionValueError(
                    'session key %r holds a value MongoDB cannot store: %s' % (key, exc)
                ) from exc
        return ({key: data[key] for key in changed if key in data},
                {key for key in changed if key not in data})
