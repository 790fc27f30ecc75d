"""Work on the whole collection, for operators: purge, counts, sizes, revoke by query.

What ``pmongosession`` runs besides the users' commands. The read-only
calls (counts, sizes) create nothing, not even the indexes: an operator with
a read-only role can run them.
"""
from __future__ import annotations

import datetime
import time
from typing import TYPE_CHECKING, Any, Callable, Mapping

from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from pymongo.errors import ConnectionFailure, NetworkTimeout, OperationFailure

from .encoding import field_name
from .exceptions import SessionBackendError, SessionValueError

if TYPE_CHECKING:
    from .connection import Connection

#: Session ids are stored as hex digests; purge works through their first 8 digits.
_ID_SPACE = 16 ** 8
#: Sessions, as opposed to the tombstones of retired ids.
#: Session documents: not the tombstones of retired ids, nor the importers'
#: own documents (``import:*``: a counter, replay markers), which hold no data.
_SESSIONS = {'retired': {'$exists': False}, 'data': {'$exists': True}}


def data_selector(query: Mapping[str, Any]) -> dict[str, Any]:
    """The filter of the sessions whose data match ``query`` (session keys to values)."""
    if not query:
        raise ValueError('refusing to match every session: the query is empty')
    return {'data.' + field_name(key): value for key, value in query.items()}


class Maintenance:
    """The operators' calls on ``connection``'s collection."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def revoke(self, query: Mapping[str, Any]) -> int:
        """Delete every session whose data matches ``query``; return how many.

        ``query`` maps session keys to values or MongoDB query operators, e.g.
        ``{'user_id': 42}`` or ``{'login_time': {'$lt': cutoff}}``: log a user
        out everywhere after a password change.
        """
        result = self.connection.call('revoke sessions',
                                      self.connection.collection().delete_many,
                                      data_selector(query))
        return int(result.deleted_count)

    def count(self, query: Mapping[str, Any]) -> int:
        """How many sessions :meth:`revoke` would delete for ``query``."""
        return int(self.connection.call('count sessions',
                                        self.connection.process_collection().count_documents,
                                        data_selector(query)))

    def purge_expired(self, now: datetime.datetime, batch_seconds: float = 30.0,
                      progress: Callable[[int, float, float], object] | None = None,
                      clock: Callable[[], float] = time.monotonic) -> int:
        """Delete expired sessions (and the tombstones of retired ids); return how many.

        The way to clean up on servers without TTL indexes (FerretDB 1.x,
        Cosmos DB with a non-``_ts`` field). Session documents are named by
        hex digests, so the collection is worked through in ranges of ``_id``;
        each range is one ``deleteMany``, sized so that it takes about a third
        of ``batch_seconds`` (the most one may take): wider while deletes are
        quick, narrower when one is slow or fails. No id is held in memory,
        so a million sessions cost what a thousand do, but time. FerretDB 1.x
        scans its whole collection for every such delete and cannot delete
        more than about 32 000 documents in one; the ranges adapt to both.
        ``progress(removed, fraction_done, seconds)`` is called after each range.
        """
        collection = self.connection.collection()
        # A server that is not there fails here, within operation_timeout.
        self.connection.call('reach MongoDB', collection.find_one, {'_id': ''}, {'_id': 1})
        removed, start, width = 0, 0, _ID_SPACE // 64
        began = clock()
        while start < _ID_SPACE:
            stop = min(start + width, _ID_SPACE)
            ids = {'$gte': '%08x' % start}
            if stop < _ID_SPACE:
                ids['$lt'] = '%08x' % stop
            called = clock()
            try:
                result = self.connection.call_long(
                    'purge expired sessions', batch_seconds, collection.delete_many,
                    {'_id': ids, 'expires': {'$lte': now}})
            except SessionBackendError as exc:
                cause = exc.__cause__
                if width == 1 or (isinstance(cause, ConnectionFailure)
                                  and not isinstance(cause, NetworkTimeout)):
                    raise   # no server to ask: narrower ranges would not help
                width = max(width // 4, 1)   # too slow or too many at once: narrower
                continue
            removed += result.deleted_count
            start = stop
            scale = (batch_seconds / 3) / max(clock() - called, 0.001)
            width = max(1, min(int(width * min(max(scale, 0.25), 4)), _ID_SPACE))
            if progress is not None:
                progress(removed, start / _ID_SPACE, clock() - began)
        return removed

    def session_counts(self, now: datetime.datetime) -> tuple[int, int]:
        """``(stored, expired)``: how many sessions are stored, and how many of
        them had expired at ``now`` but are still there (the tombstones of
        retired ids are no sessions, and not counted)."""
        collection = self.connection.process_collection()
        stored = self.connection.call('count sessions', collection.count_documents, _SESSIONS)
        expired = self.connection.call('count expired sessions', collection.count_documents,
                                       dict(_SESSIONS, expires={'$lte': now}))
        return int(stored), int(expired)

    def document_sizes(self, limit: int, at_random: bool = False
                       ) -> tuple[list[int], str | None]:
        """Sizes in bytes of stored session documents (see :data:`_SESSIONS`):
        ``(sizes, refusal)``.

        The server computes them (``$bsonSize``): for ``limit`` documents it
        picks at random (``$sample``) when ``at_random``, else for every
        document. A server that cannot (FerretDB 1.x implements neither)
        refuses; then the raw BSON of the first ``limit`` documents, in the
        server's natural order, is measured here instead, and ``refusal`` is
        the server's message. ``refusal`` is None when the server computed
        the sizes.
        """
        collection = self.connection.process_collection()
        pipeline: list[dict[str, Any]] = [
            {'$match': _SESSIONS}, {'$project': {'_id': 0, 'size': {'$bsonSize': '$$ROOT'}}}]
        if at_random:
            pipeline.insert(1, {'$sample': {'size': limit}})
        try:
            return [doc['size'] for doc in self.connection.documents(
                'measure sessions', collection.aggregate, pipeline)], None
        except (SessionBackendError, SessionValueError) as exc:
            refusal = exc.__cause__
            if not isinstance(refusal, OperationFailure):
                raise
        raw = collection.with_options(
            codec_options=CodecOptions(document_class=RawBSONDocument))
        sizes = [len(doc.raw) for doc in self.connection.documents(
            'read sessions', raw.find, _SESSIONS, limit=limit)]
        return sizes, (refusal.details or {}).get('errmsg') or str(refusal)
