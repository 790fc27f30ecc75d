"""The indexes of the sessions collection: the TTL index, and the users' partial indexes.

They are created once per process, on the collection's first use (one
``createIndexes``), or by ``pmongosession ensure-indexes``. A server that
refuses one (FerretDB 1.x implements neither TTL nor partial indexes; Cosmos
DB allows TTL only on ``_ts``) still works: every read checks ``expires``,
``pmongosession purge`` deletes what a TTL monitor would, and a user's
sessions are found by a collection scan.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from pymongo import IndexModel
from pymongo.errors import OperationFailure

from .documents import HANDLE, USER
from .exceptions import SessionBackendError

if TYPE_CHECKING:
    from .connection import Collection, Connection

log = logging.getLogger(__name__)

#: Answers to createIndexes that mean "never here": Unauthorized, BadValue,
#: CommandNotFound, CannotCreateIndex, IndexOptionsConflict,
#: IndexKeySpecsConflict, CommandNotSupported, NotImplemented.
_INDEX_REFUSED_CODES = frozenset((2, 13, 59, 67, 85, 86, 115, 238))
_UNAUTHORIZED = 13
#: The TTL index, and the partial indexes that find a user's sessions and a session
#: by its handle.
TTL_INDEX, USER_INDEX, HANDLE_INDEX = 'expires_ttl', 'user_sessions', 'user_session_handles'


def _refusal(exc: SessionBackendError) -> OperationFailure | None:
    """The server's answer that an index is never created here, or None."""
    refusal = exc.__cause__
    if isinstance(refusal, OperationFailure) and refusal.code in _INDEX_REFUSED_CODES:
        return refusal
    return None


class Indexes:
    """Creates and lists the indexes of ``connection``'s collection.

    The user indexes exist only with a ``user_key`` (sessions belong to users).
    """

    def __init__(self, connection: Connection, user_key: str | None) -> None:
        self.connection = connection
        self.user_key = user_key

    def ensure(self, collection: Collection | None = None) -> bool:
        """Create the TTL index on ``expires`` (and the user indexes); False if refused.

        A refusal is final for this process; any other failure raises, and is
        tried again on the next use.
        """
        if collection is None:
            collection = self.connection.process_collection()
        if self._ensure_all(collection):
            return True
        try:
            self.connection.call('create the TTL index', collection.create_index,
                                 'expires', expireAfterSeconds=0, name=TTL_INDEX)
        except SessionBackendError as exc:
            refusal = _refusal(exc)
            if refusal is None:
                raise
            if refusal.code == _UNAUTHORIZED:
                return self._check_ttl_index(collection, refusal)
            log.warning('the server refused a TTL index on %s.expires (%s); '
                        'expired sessions are ignored on read but not deleted: '
                        'run "pmongosession purge" periodically',
                        collection.full_name, refusal)
            self._check_server(collection)
            return False
        return True

    def _check_server(self, collection: Collection) -> None:
        """Log a warning if the server is FerretDB 1.x (see :func:`server_warning`).

        Asked only of a server that refused the TTL index (as FerretDB 1.x
        does): one ``buildInfo``, once per process; MongoDB is never asked.
        """
        try:
            info = self.connection.call('ask the server its version',
                                        collection.database.command, 'buildInfo')
        except SessionBackendError as exc:
            log.debug('%s', exc)
            return
        warning = server_warning(info)
        if warning is not None:
            log.warning('%s', warning)

    def _check_ttl_index(self, collection: Collection, refusal: OperationFailure) -> bool:
        """The application's user may not create indexes: is the TTL index there already?"""
        try:
            indexes = self.connection.call('list the indexes', collection.index_information)
        except SessionBackendError as exc:
            log.warning('the MongoDB user may neither create nor list the indexes of %s (%s; '
                        '%s): if no TTL index on "expires" exists, expired sessions are '
                        'never deleted; have an administrator run "pmongosession '
                        'ensure-indexes"', collection.full_name, refusal, exc.__cause__)
            return False
        if any(index.get('key') == [('expires', 1)] and 'expireAfterSeconds' in index
               for index in indexes.values()):
            log.debug('the TTL index on %s.expires exists', collection.full_name)
            return True
        log.warning('the MongoDB user may not create indexes (%s), and %s has no TTL index on '
                    '"expires": expired sessions are ignored on read but never deleted; have '
                    'an administrator run "pmongosession ensure-indexes" (it needs the '
                    'createIndex privilege)', refusal, collection.full_name)
        return False

    def _user_models(self) -> list[IndexModel]:
        only_users = {USER: {'$exists': True}}
        return [IndexModel([(USER, 1), ('expires', 1)], name=USER_INDEX,
                           partialFilterExpression=only_users),
                IndexModel([(HANDLE, 1)], name=HANDLE_INDEX,
                           partialFilterExpression=only_users)]

    def _ensure_all(self, collection: Collection) -> bool:
        """The TTL and user indexes in one ``createIndexes``; True if that was accepted.

        When the server refuses it, the user indexes are tried alone (False
        is returned, and :meth:`ensure` then tries the TTL index alone).
        """
        if self.user_key is None:
            return False
        models = [IndexModel([('expires', 1)], expireAfterSeconds=0, name=TTL_INDEX)]
        try:
            self.connection.call('create the indexes', collection.create_indexes,
                                 models + self._user_models())
        except SessionBackendError as exc:
            if _refusal(exc) is None:
                raise
            self.ensure_user_indexes(collection)
            return False
        return True

    def ensure_user_indexes(self, collection: Collection | None = None) -> bool:
        """Create the partial indexes of the sessions that have a user; False if refused.

        One on ``user`` and ``expires`` lists a user's live sessions, one on
        ``handle`` finds a session to revoke; both hold only documents with
        a ``user`` field, so anonymous sessions cost them nothing. A server
        that refuses partial indexes (FerretDB 1.x, which uses no secondary
        index for these queries anyway) gets none: the queries still work, by
        a collection scan. Nothing is created when no ``user_key`` is set.
        """
        if self.user_key is None:
            return False
        if collection is None:
            collection = self.connection.process_collection()
        try:
            self.connection.call('create the user indexes', collection.create_indexes,
                                 self._user_models())
        except SessionBackendError as exc:
            refusal = _refusal(exc)
            if refusal is None:
                raise
            log.warning('the server refused partial indexes on %s (%s): listing and '
                        'revoking a user\'s sessions scan the collection',
                        collection.full_name, refusal)
            return False
        return True

    def user_indexes(self) -> list[str]:
        """The names of the user indexes in place (see :meth:`ensure_user_indexes`)."""
        indexes = self.connection.call('list the indexes',
                                       self.connection.process_collection().index_information)
        return sorted(name for name in indexes if name in (USER_INDEX, HANDLE_INDEX))

    def ttl_index_name(self) -> str | None:
        """The name of the TTL index on ``expires``, or None when there is none."""
        indexes = self.connection.call('list the indexes',
                                       self.connection.process_collection().index_information)
        for name, spec in indexes.items():
            if spec.get('key') == [('expires', 1)] and 'expireAfterSeconds' in spec:
                return str(name)
        return None


def server_warning(build_info: dict[str, Any] | None) -> str | None:
    """What an application must know about the server that answered ``build_info``
    (``buildInfo``), or None. FerretDB 1.x does not apply concurrent updates of
    one document atomically: concurrent requests writing one session lose writes."""
    version = str((build_info or {}).get('ferretdbVersion') or '')
    if not version.lstrip('v').startswith(('0.', '1.')):
        return None
    return ('the server is FerretDB %s: FerretDB 1.x does not apply concurrent updates of '
            'one document atomically, so concurrent requests that change the same session '
            'can lose each other\'s writes, silently (detect_conflicts does not catch them '
            'all). Use MongoDB, or FerretDB 2, wherever concurrent requests write one '
            'session' % version)
