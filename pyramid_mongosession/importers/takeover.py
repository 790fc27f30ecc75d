"""The takeover, as the factory runs it: store the old session anew, then end it."""
from __future__ import annotations

import datetime
import logging
import weakref
from typing import TYPE_CHECKING, Any, Callable, Mapping

from ..encoding import check_key, check_value, utcnow
from ..events import SessionImported, wants
from ..exceptions import SessionBackendError, SessionValueError
from ..state import SessionState
from ..documents import StoredSession

from .old import (
    COUNTER_ID,
    MARKER_PREFIX, OldCookie, OldSession)

if TYPE_CHECKING:
    from pyramid.request import Request

    from ..connection import Connection
    from pyramid.response import Response

log = logging.getLogger(__name__)


# -- the takeover, as the factory runs it --------------------------------------------------

def checked_values(data: Mapping[Any, Any], source: str) -> dict[str, Any]:
    """The values of ``data`` that MongoDB can store, each checked as an assignment would be.

    The others are dropped, with one WARNING that names each key and why.
    """
    kept, dropped = {}, []
    for key, value in data.items():
        try:
            check_value(check_key(key), value)
        except SessionValueError as exc:
            dropped.append(str(exc))
            continue
        kept[key] = value
    if dropped:
        log.warning('dropped %d value(s) of an imported %s session that MongoDB cannot '
                    'store: %s', len(dropped), source, '; '.join(dropped))
    return kept


def imported_count(connection: Connection
                   ) -> tuple[int, datetime.datetime | None, datetime.datetime | None]:
    """``(count, first, last)``: how many sessions were imported into ``connection``'s
    collection, and when the first and the latest were."""
    collection = connection.process_collection()
    found = connection.call('read the count of imported sessions', collection.find_one,
                            {'_id': COUNTER_ID})
    if not found:
        return 0, None, None
    return int(found.get('count', 0)), found.get('first'), found.get('last')


class Takeover:
    """What the factory does with its ``importer``: one per factory.

    :meth:`take` turns a request's old session into a stored new one;
    :meth:`register` has the response give the visitor the new cookie and,
    once it does, end the old session, clear its cookie, count the import and
    publish :class:`~pyramid_mongosession.SessionImported`.
    """

    def __init__(self, importer: Callable[[Request], Mapping[Any, Any] | None], store: Any,
                 cookie: Any, accounts: Any, expiry: Any, until: datetime.datetime | None = None,
                 degrade_on_outage: bool = False, cookie_path: str = '/',
                 cookie_domain: str | None = None,
                 is_cacheable: Callable[[Request, Response], bool] | None = None) -> None:
        if not callable(importer):
            raise TypeError('importer must be a callable taking the request')
        self.importer = importer
        self.store = store
        self.cookie = cookie
        self.accounts = accounts
        self.expiry = expiry
        self.until = until
        self.degrade_on_outage = degrade_on_outage
        self.ours = OldCookie(cookie.name, cookie_path or '/', cookie_domain or None)
        self.is_cacheable = is_cacheable
        self._ended_logged = False

    def active(self) -> bool:
        """Whether the importer is still consulted (``until`` has not passed)."""
        if self.until is None or utcnow() < self.until:
            return True
        if not self._ended_logged:
            self._ended_logged = True
            log.info('the import of old sessions ended at %s (import_until)', self.until)
        return False

    def take(self, request: Request) -> tuple[SessionState, OldSession] | None:
        """The request's old session, stored as a new one: ``(state, old)``, or None."""
        if not self.active():
            return None
        try:
            found = self.importer(request)
        except Exception:
            log.warning('the importer failed; nothing imported', exc_info=True)
            return None
        if found is None:
            return None
        old = found if isinstance(found, OldSession) else OldSession(
            found, str(getattr(self.importer, 'source', None)
                       or getattr(self.importer, '__qualname__', type(self.importer).__name__)))
        try:
            return self._store(request, old)
        except SessionBackendError as exc:
            if not self.degrade_on_outage:
                raise
            log.warning('imported nothing (degrade_on_outage): %s', exc)
            return None

    def _store(self, request: Request, old: OldSession) -> tuple[SessionState, OldSession] | None:
        from ..cookie import new_session_id
        now = utcnow()
        data = checked_values(old, old.source)
        created = old.created if old.created is not None and old.created <= now else now
        expires = self.expiry.at(created, now)
        if expires is not None and expires <= now:
            log.info('imported nothing: the old %s session is older than absolute_timeout',
                     old.source)
            return None
        if old.replay_key is not None and not self._mark(old, now):
            log.info('imported nothing: an old %s session cookie taken over already was '
                     'presented again (%s)', old.source, request.client_addr)
            return None
        state = SessionState(new_session_id(), True, user_key=self.store.user_key)
        state.request = weakref.ref(request)
        state.accounts = self.accounts
        state.id = state.cookie_id
        account = self.accounts.insert_fields(state, now)
        try:
            self.store.insert(state.id, data, created, expires, account=account)
        except SessionValueError as exc:
            self._unmark(old)
            log.warning('imported nothing from an old %s session: %s', old.source, exc)
            return None
        except BaseException:
            self._unmark(old)
            raise
        user = data.get(self.store.user_key) if self.store.user_key is not None else None
        state.stored = StoredSession(data, created, expires, 1, account=account, user=user)
        state.found = True
        state.data = data
        state.created = created
        state.expires = expires
        self.accounts.created(state, account)
        return state, old

    def _mark(self, old: OldSession, now: datetime.datetime) -> bool:
        """Record that ``old`` is imported; False if it was already (a replay)."""
        from pymongo.errors import DuplicateKeyError
        marker = {'_id': MARKER_PREFIX + str(old.replay_key), 'expires': old.replay_until,
                  'imported': now}
        collection = self.store.connection.collection()
        try:
            self.store.connection.call('record an imported session', collection.insert_one, marker)
        except SessionBackendError as exc:
            if isinstance(exc.__cause__, DuplicateKeyError):
                return False
            raise
        return True

    def _unmark(self, old: OldSession) -> None:
        if old.replay_key is None:
            return
        try:
            connection = self.store.connection
            connection.call('forget an imported session', connection.collection().delete_one,
                            {'_id': MARKER_PREFIX + str(old.replay_key)})
        except SessionBackendError as exc:
            log.warning('%s; that old session cookie cannot be imported again', exc)

    def register(self, request: Request, state: SessionState, old: OldSession) -> None:
        """Finish the takeover on the response: after the end of the request has run
        (register this after :class:`~pyramid_mongosession.lifecycle.EndOfRequest`)."""
        request.add_response_callback(
            lambda request, response: self.finish(request, response, state, old))

    def finish(self, request: Request, response: Response, state: SessionState,
               old: OldSession) -> None:
        if self.is_cacheable is not None and self.is_cacheable(request, response):
            # No cookie may go out: undo the import; the old session stays.
            self.store.remove(state.cookie_id)
            self._unmark(old)
            return
        if state.id is not None and not self.cookie.sets_cookie(response):
            max_age = state.own_timeout if state.own_timeout is not None else self.cookie.max_age
            self.cookie.set(response, state.id, max_age)
        if old.end is not None:
            try:
                old.end()
            except Exception as exc:
                log.warning('could not end the old %s session (it ends with its own '
                            'timeout): %r', old.source, exc)
        if old.cookie is not None and old.cookie != self.ours:
            response.delete_cookie(old.cookie.name, path=old.cookie.path,
                                   domain=old.cookie.domain)
        self._count()
        self._notify(request, state, old)

    def _count(self) -> None:
        now = utcnow()
        try:
            connection = self.store.connection
            connection.call('count an imported session', connection.collection().update_one,
                            {'_id': COUNTER_ID},
                             {'$inc': {'count': 1}, '$min': {'first': now},
                              '$max': {'last': now}}, upsert=True)
        except SessionBackendError as exc:
            log.warning('the count of imported sessions missed one: %s', exc)

    def _notify(self, request: Request, state: SessionState, old: OldSession) -> None:
        registry = getattr(request, 'registry', None)
        if registry is None or not wants(registry, SessionImported):
            return
        session = request.session
        userid = state.data.get(self.store.user_key) if self.store.user_key else None
        registry.notify(SessionImported(request, session, old.source,
                                        self.accounts.handle(state), userid))
