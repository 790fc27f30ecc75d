"""The request path's reads and writes of session documents: load, insert, update, move, remove.

What the end of a request needs, and nothing else (a storage contract of a few
verbs, as Django's session backends have): the document's schema is
:mod:`pyramid_mongosession.documents`, the connection and its error mapping
:mod:`pyramid_mongosession.connection`; indexes, maintenance and the users'
queries have modules of their own.

Writes never upsert: a write to a session whose document has gone (expired,
logged out, given a new id by a concurrent request) matches nothing and is
dropped, so a stale request can never bring a session back.

A write that did not read the session first (see :meth:`SessionStore.can_write_blind`)
cannot see the session's size or how its values are sealed, so it lets the
document speak for them: its filter matches only while the document's
``size`` leaves room for this write under MongoDB's document limit (a server
that does not enforce the limit, such as FerretDB 1.x, still never grows a
session past it), and, with encryption, only a document whose ``key`` is the
current key, so a session still holding values under an older key is read
and sealed again, never kept alive as it is. Either miss costs the write a
load, as if it had read first.
"""
from __future__ import annotations

import datetime
import logging
from typing import TYPE_CHECKING, Any, Mapping

from pymongo.errors import DuplicateKeyError

from .documents import (
    MAX_DATA_SIZE, DocumentCodec, ExpiredHook, RetiredSession, StoredSession, document_id, live,
    not_retired)
from .encoding import ENCODING_ERRORS, check_value, field_name, unstorable
from .connection import RefusedValue, named_refusal
from .exceptions import SessionBackendError, SessionConflict

if TYPE_CHECKING:
    from .connection import Connection

log = logging.getLogger(__name__)

#: The most a request may write to a session it has not read (see can_write_blind).
BLIND_WRITE_LIMIT = 16 * 1024


class _Unchanged:
    def __repr__(self) -> str:
        return 'UNCHANGED'


#: ``update(timeout=UNCHANGED)`` leaves the session's own timeout as it is.
UNCHANGED: Any = _Unchanged()


class SessionStore:
    """Loads, writes and removes the documents of sessions, for the end of a request.

    ``connection`` reaches the collection; ``codec`` turns data into fields.
    With ``detect_conflicts``, a write to a session that another request
    wrote since this one loaded it raises :class:`SessionConflict`.
    """

    def __init__(self, connection: Connection, codec: DocumentCodec,
                 detect_conflicts: bool = False) -> None:
        self.connection = connection
        self.codec = codec
        self.detect_conflicts = detect_conflicts

    @property
    def user_key(self) -> str | None:
        """The session key whose value names the session's user (None: none does)."""
        return self.codec.user_key

    def can_write_blind(self, values: Mapping[str, Any], pushes: Mapping[str, list[Any]]) -> bool:
        """Whether a write of ``values`` and ``pushes`` may go without loading the session.

        Only a write small enough that it cannot take a session near MongoDB's
        document limit over it unseen (the limit is checked exactly against
        the loaded session otherwise), with no ``max_size`` to enforce, and
        not to the embedded backend, where loading costs nothing. Encrypted
        values cannot be appended to on the server.
        """
        codec = self.codec
        if (self.connection.embedded or codec.max_size is not None
                or (pushes and codec.cipher is not None)):
            return False
        size = 0
        for key, value in values.items():
            size += check_value(key, value)
        for key, messages in pushes.items():
            for message in messages:
                size += check_value(key, message)
        return size <= BLIND_WRITE_LIMIT

    def load(self, session_id: str, now: datetime.datetime, expired: ExpiredHook | None = None
             ) -> StoredSession | RetiredSession | None:
        """The session stored under ``session_id``, or None if absent or expired.

        The query names the document by ``_id`` alone, which every server
        answers fastest (MongoDB's IDHACK path; FerretDB pushes down nothing
        else); the expiry is checked here, since a TTL monitor lags. When
        the document is there but has expired, ``expired(handle, user)`` is
        called, if given.
        """
        connection = self.connection
        document = connection.find_one('load a session', {'_id': document_id(session_id)})
        if document is None:
            return None
        return self.codec.decoded(session_id, connection.received(document), now, expired)

    def is_live(self, session_id: str, now: datetime.datetime) -> bool:
        """Whether the session is still stored, neither expired nor retired (one query)."""
        connection = self.connection
        return connection.find_one('check a session', live(session_id, now),
                                   {'_id': 1}) is not None

    def insert(self, session_id: str, data: Mapping[str, Any], created: datetime.datetime,
               expires: datetime.datetime | None, timeout: float | None = None,
               account: Mapping[str, Any] | None = None) -> None:
        """Store a new session (``timeout``: its own idle timeout, if any). Raises if it cannot.

        ``account`` adds account fields (see :mod:`pyramid_mongosession.accounts`);
        ``user`` is set from ``data`` here.
        """
        codec, connection = self.codec, self.connection
        fields, size = codec.fields(session_id, data, '')
        document = {'_id': document_id(session_id), 'data': fields, 'created': created,
                    'expires': expires, 'v': 1, 'size': codec.check_size(size, data)}
        document.update(codec.sealing())
        if timeout is not None:
            document['timeout'] = timeout
        document.update(account or {})
        codec.mirror_user(document, {}, data, ())
        codec.seal_client(document)
        try:
            connection.call('store a session', connection.collection().insert_one,
                            connection.sent(document))
        except RefusedValue as exc:
            raise named_refusal(data, exc) from exc.__cause__
        except DuplicateKeyError:
            # Two 256-bit ids colliding means a broken random generator.
            raise SessionBackendError('session id collision: refusing to overwrite') from None
        except ENCODING_ERRORS as exc:
            raise unstorable(data, exc) from exc

    def update(self, session_id: str, now: datetime.datetime, changed: Mapping[str, Any],
               removed: set[str], expires: datetime.datetime | None,
               version: int | None = None, data: Mapping[str, Any] | None = None,
               stored_size: int | None = None, pushes: Mapping[str, list[Any]] | None = None,
               timeout: Any = UNCHANGED, account: Mapping[str, Any] | None = None) -> bool:
        """Write ``changed`` keys, remove ``removed`` keys and set ``expires``.

        Returns False, writing nothing, when the session has gone meanwhile:
        the filter names the document by ``_id`` *and* a live expiry, so a
        write never brings back a session that expired or was removed. With
        ``detect_conflicts``, ``version`` must still be the stored one, or
        :class:`SessionConflict` is raised. ``data`` (the whole session after
        the write) and ``stored_size`` (the document's ``size`` when it was
        loaded) let the write be refused if it would make the document too
        large. ``pushes`` maps keys to lists of values to append (``$push``).
        ``timeout`` sets the session's own idle timeout (None removes it).
        Without ``data`` (a request that did not read the session), only a
        session without a timeout of its own matches (its expiry is known),
        whose ``size`` leaves room for this write, and whose values are all
        sealed with the current key (see the module's docstring).
        ``account`` sets account fields; ``user`` follows a change of ``user_key``.
        """
        query = live(session_id, now)
        if self.detect_conflicts and version is not None:
            query['v'] = version
        update, size = self._update_document(session_id, changed, removed, expires, pushes,
                                             timeout, account)
        sealing = self.codec.sealing()
        if data is None:
            # Blind: only a session whose expiry, size and sealing this write can
            # keep right without seeing them.
            query['timeout'] = {'$exists': False}
            query['size'] = {'$lte': MAX_DATA_SIZE - size}
            if sealing:
                query.update(sealing)
            update['$inc']['size'] = size
        else:
            measured = self.codec.check_size(
                None if stored_size is None else stored_size + size, data)
            if stored_size is None:
                update['$set']['size'] = measured
            else:
                # An increment, not a $set: a concurrent blind write's own increment stays.
                update['$inc']['size'] = measured - stored_size
            update['$set'].update(sealing)
        return self._write(session_id, now, query, update, changed, pushes)

    def _write(self, session_id: str, now: datetime.datetime, query: dict[str, Any],
               update: dict[str, Any], changed: Mapping[str, Any],
               pushes: Mapping[str, list[Any]] | None) -> bool:
        connection = self.connection
        collection = connection.collection()
        try:
            result = connection.call('store a session', collection.update_one, query,
                                     connection.sent(update))
        except RefusedValue as exc:
            raise named_refusal(dict(changed, **(pushes or {})), exc) from exc.__cause__
        except ENCODING_ERRORS as exc:
            raise unstorable(dict(changed, **(pushes or {})), exc) from exc
        if result.matched_count:
            return True
        if 'v' in query and connection.call('check a session', collection.count_documents,
                                            live(session_id, now), limit=1):
            raise SessionConflict('the session was changed by another request since it was loaded')
        log.debug('dropped a write to a session that no longer exists')
        return False

    def _update_document(self, session_id: str, changed: Mapping[str, Any], removed: set[str],
                         expires: datetime.datetime | None,
                         pushes: Mapping[str, list[Any]] | None, timeout: Any,
                         account: Mapping[str, Any] | None) -> tuple[dict[str, Any], int]:
        """The update operators of :meth:`update`, and a bound of the bytes they write."""
        sets, size = self.codec.fields(session_id, changed, 'data.')
        sets['expires'] = expires
        unsets = {'data.' + name: '' for name in map(field_name, removed)} if removed else {}
        if timeout is None:
            unsets['timeout'] = ''
        elif timeout is not UNCHANGED:
            sets['timeout'] = timeout
        if account:
            sets.update(account)
        self.codec.mirror_user(sets, unsets, changed, removed)
        update: dict[str, Any] = {'$set': sets, '$inc': {'v': 1}}
        if unsets:
            update['$unset'] = unsets
        if pushes:
            for key, values in pushes.items():
                for value in values:
                    size += check_value(key, value)
            update['$push'] = {'data.' + field_name(key): {'$each': values}
                               for key, values in pushes.items()}
        return update, size

    def touch(self, session_id: str, now: datetime.datetime, expires: datetime.datetime | None,
              account: Mapping[str, Any] | None = None) -> bool:
        """Move a live session's expiry (and set ``account`` fields); no data
        changes, so no conflict either. Returns False if the session had gone."""
        connection = self.connection
        result = connection.call('refresh a session', connection.collection().update_one,
                                 live(session_id, now),
                                 {'$set': dict(account or {}, expires=expires)})
        return bool(result.matched_count)

    def pop(self, session_id: str, now: datetime.datetime, version: int | None = None,
             retire_for: datetime.timedelta | None = None) -> StoredSession | None:
        """Delete a live session and return it as it was, or None if it was gone or expired.

        Only a live document matches: an expired session stays as it is (for
        the TTL monitor), and never becomes a tombstone. ``change_id`` moves
        a session with this: what the delete returns is the latest data,
        concurrent writes included. With ``retire_for``, the document is
        replaced by a tombstone instead, which :meth:`load` reports as a
        :class:`~pyramid_mongosession.documents.RetiredSession` for that long.
        With ``detect_conflicts`` and a ``version``, a session written since
        is left alone and :class:`SessionConflict` is raised. Raises on failure.
        """
        query = live(session_id, now)
        if self.detect_conflicts and version is not None:
            query['v'] = version
        connection = self.connection
        collection = connection.collection()
        if retire_for:
            document = connection.call('move a session', collection.find_one_and_replace,
                                       query, {'retired': now, 'expires': now + retire_for})
        else:
            document = connection.call('move a session', collection.find_one_and_delete, query)
        if document is None:
            if 'v' in query and isinstance(self.load(session_id, now), StoredSession):
                raise SessionConflict(
                    'the session was changed by another request since it was loaded')
            return None
        found = self.codec.decoded(session_id, connection.received(document), now)
        return found if isinstance(found, StoredSession) else None

    def remove(self, session_id: str) -> bool | None:
        """Delete a session (not a tombstone). Returns whether it existed; None, with a
        warning, on failure."""
        connection = self.connection
        try:
            result = connection.call('remove a session', connection.collection().delete_one,
                                     not_retired(session_id))
        except SessionBackendError as exc:
            log.warning('%s; the session will expire on its own', exc)
            return None
        return bool(result.deleted_count)

    def pop_ended(self, session_id: str) -> tuple[Any, Any] | bool | None:
        """Delete a session, returning ``(handle, user id)`` if it was there (else False).

        :meth:`remove`'s one round trip, for an application that is told of
        ended sessions; a failure is logged, as by :meth:`remove`, and None returned.
        """
        connection = self.connection
        try:   # the whole document: FerretDB 1.x has no projection in findAndModify
            gone = connection.call('remove a session',
                                   connection.collection().find_one_and_delete,
                                   not_retired(session_id))
        except SessionBackendError as exc:
            log.warning('%s; the session will expire on its own', exc)
            return None
        if gone is None:
            return False
        gone = connection.received(gone)
        return gone.get('handle'), self.codec.user_of(gone)

