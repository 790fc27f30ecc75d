"""The queries of users' sessions: list them, revoke them, export them.

Each finds a user's sessions by the document's ``user`` field (see
:mod:`pyramid_mongosession.documents`), on the partial index of ``user`` and
``expires`` where the server has it. :mod:`pyramid_mongosession.accounts`
builds the application's API on them.
"""
from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any, Iterable

from .documents import ACCOUNT_FIELDS, CLIENT, HANDLE, LAST_SEEN, USER, DocumentCodec
from .encoding import field_name
from .exceptions import SessionValueError

if TYPE_CHECKING:
    from .connection import Connection


class UserQueries:
    """The queries of users' sessions on ``connection``'s collection."""

    def __init__(self, connection: Connection, codec: DocumentCodec) -> None:
        self.connection = connection
        self.codec = codec

    def live(self, userid: Any, now: datetime.datetime) -> list[dict[str, Any]]:
        """The live sessions of ``userid``, in no order, in one query on the user index.

        Each is a document with ``_id``, ``created``, ``expires`` and the
        account fields.
        """
        collection = self.connection.collection()
        query = {USER: self.codec.user_filter(userid), 'expires': {'$not': {'$lte': now}}}
        projection = dict.fromkeys(('created', 'expires') + ACCOUNT_FIELDS, 1)
        return self.connection.documents('list the sessions of a user', collection.find,
                                         query, projection)

    def _ending(self, userid: Any, handles: Iterable[str] | None,
                keep: str | None) -> dict[str, Any]:
        # Expired sessions still stored go too: erasing a user's sessions
        # leaves nothing for the TTL monitor (or purge) to find.
        if userid is None and handles is None:
            raise ValueError('refusing to revoke the sessions of every user: '
                             'name a user or handles')
        handles = None if handles is None else list(handles)
        for handle in (handles or []) + ([] if keep is None else [keep]):
            if not isinstance(handle, str):
                raise SessionValueError('a session handle is a string, not %r' % (handle,))
        query: dict[str, Any] = {
            USER: self.codec.user_filter(userid) if userid is not None else {'$exists': True}}
        if handles is not None:
            query[HANDLE] = {'$in': handles}
        if keep is not None:
            query[HANDLE] = dict(query.get(HANDLE, {}), **{'$ne': keep})
        return query

    def revoke(self, userid: Any = None, handles: Iterable[str] | None = None,
               keep: str | None = None) -> int:
        """Delete the sessions of ``userid``, or of any user; return how many.

        ``handles`` restricts them to those handles, ``keep`` spares the one
        with that handle. Sessions that expired but are still stored are
        deleted too. One ``delete``, by the user index (or by the handle
        index, without ``userid``).
        """
        query = self._ending(userid, handles, keep)
        return int(self.connection.call('revoke sessions',
                                        self.connection.collection().delete_many,
                                        query).deleted_count)

    def pop(self, userid: Any = None, handles: Iterable[str] | None = None,
             keep: str | None = None) -> list[tuple[Any, Any]]:
        """As :meth:`revoke`, one session at a time: ``[(handle, user id)]``
        of each session deleted (for the events that report them)."""
        collection = self.connection.collection()
        query = self._ending(userid, handles, keep)
        projection = {HANDLE: 1}
        if self.codec.user_key is not None:
            projection['data.' + field_name(self.codec.user_key)] = 1
        found = self.connection.documents('find sessions to revoke', collection.find,
                                          query, projection)
        taken = []
        for document in found:
            gone = self.connection.call('revoke a session', collection.find_one_and_delete,
                                        dict(query, _id=document['_id']))
            if gone is not None:
                taken.append((gone.get(HANDLE), self.codec.user_of(gone)))
        return taken

    def export(self, userid: Any) -> list[dict[str, Any]]:
        """Everything stored about ``userid``'s sessions, expired ones still stored
        included, with the values decrypted: a list of documents without ``_id``.

        A value that cannot be decrypted here (under a key no longer
        configured) is left out of ``data`` and its key listed under ``sealed``.
        """
        collection = self.connection.collection()
        found = self.connection.documents('export the sessions of a user', collection.find,
                                          {USER: self.codec.user_filter(userid)})
        exported = []
        for document in found:
            data, sealed = self.codec.data_of(document)
            entry: dict[str, Any] = {HANDLE: document.get(HANDLE), USER: userid}
            entry.update((name, document[name]) for name in (
                'created', LAST_SEEN, 'expires') if name in document)
            if CLIENT in document:
                entry[CLIENT] = self.codec.client_of(document)
            entry['data'] = data
            entry.update((name, value) for name, value in document.items()
                         if name not in entry and name not in ('_id', 'data'))
            if sealed:
                entry['sealed'] = sealed
            exported.append(entry)
        return exported
