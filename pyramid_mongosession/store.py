"""The only module that talks to MongoDB.

One document per session::

    {
        "_id": "<sha256 hex digest of the session id>",
        "data": {<the session's keys, as native BSON>},
        "created": <datetime, UTC>,
        "expires": <datetime, UTC, or null when no timeout applies>,
        "v": <int, incremented by every write>
    }

The id itself is never stored, only its digest, so read access to the
collection yields no cookie that would log anybody in. ``expires`` carries a
TTL index, and every read checks it too, because MongoDB's TTL monitor runs
only once a minute and some servers have no TTL indexes at all.

Writes never upsert: a write to a session whose document has gone (expired,
logged out, given a new id by a concurrent request) matches nothing and is
dropped, so a stale request can never bring a session back.
"""
import contextlib
import hashlib
import logging
import os
import threading
import time

import bson
import pymongo
from bson.binary import UuidRepresentation
from bson.raw_bson import RawBSONDocument
from pymongo.errors import DocumentTooLarge, DuplicateKeyError, OperationFailure, PyMongoError

from .crypto import DecryptionError
from .encoding import (
    CODEC_OPTIONS, ENCODING_ERRORS, MAX_DOCUMENT_SIZE, check_value, decode_value, encode_value,
    field_name, session_key, unstorable)
from .exceptions import SessionBackendError, SessionConflict, SessionValueError
from .outage import OutageBreaker, unreachable

log = logging.getLogger(__name__)

#: Server error codes meaning "the resulting document would be too large".
_TOO_LARGE_CODES = frozenset((10334, 17419, 17420))
#: BadValue, DollarPrefixedFieldName, EmptyFieldName, DottedFieldName: the
#: server refused a value (a nested key it does not accept), not an outage.
_REFUSED_VALUE_CODES = frozenset((2, 52, 56, 57))
#: Answers to createIndexes that mean "never here": Unauthorized, BadValue,
#: CommandNotFound, CannotCreateIndex, IndexOptionsConflict,
#: IndexKeySpecsConflict, CommandNotSupported, NotImplemented.
_INDEX_REFUSED_CODES = frozenset((2, 13, 59, 67, 85, 86, 115, 238))
#: Session ids are stored as hex digests; purge works through their first 8 digits.
_ID_SPACE = 16 ** 8
#: The most a request may write to a session it has not read (see can_write_blind).
BLIND_WRITE_LIMIT = 16 * 1024
_UNAUTHORIZED = 13
#: Room in a document for what is not session data (_id, times, version).
DOCUMENT_HEADROOM = 1024
#: What encryption adds to a value: version, key id, nonce and tag.
ENCRYPTION_OVERHEAD = 40
#: mongomock stores Python objects and refuses native UUIDs; it gets the
#: decoded BSON of each document, with UUIDs as the BSON binaries they are.
_EMBEDDED_CODEC_OPTIONS = CODEC_OPTIONS.with_options(
    uuid_representation=UuidRepresentation.UNSPECIFIED)
_RAW_CODEC_OPTIONS = CODEC_OPTIONS.with_options(document_class=RawBSONDocument)


class _RefusedValue(SessionValueError):
    """The server refused a value that other servers store (see _naming_refused)."""


@contextlib.contextmanager
def _naming_refused(values):
    """Re-raise the server's refusal of a value naming the session key(s) it may be."""
    try:
        yield
    except _RefusedValue as exc:
        keys = ', '.join(repr(key) for key in values)
        raise SessionValueError('session key %s holds a value this server refuses: %s'
                                % (keys, exc) if len(values) == 1 else
                                'one of the session keys %s holds a value this server '
                                'refuses: %s' % (keys, exc)) from exc.__cause__


class StoredSession:
    """What :meth:`SessionStore.load` found: the data and its bookkeeping."""

    __slots__ = ('data', 'created', 'expires', 'version', 'stale_keys', 'size', 'timeout')

    def __init__(self, data, created, expires, version, stale_keys=(), size=0, timeout=None):
        self.data = data
        self.created = created
        self.expires = expires
        self.version = version
        #: Keys whose values are encrypted with a retired key: rewrite them.
        self.stale_keys = stale_keys
        #: The document's size in BSON, as loaded.
        self.size = size
        #: The session's own idle timeout in seconds (``options['timeout']``), or None.
        self.timeout = timeout


#: ``update(timeout=UNCHANGED)`` leaves the session's own timeout as it is.
UNCHANGED = object()


def _live(session_id, now):
    """The filter of a write: the session's document, if live (not expired, not retired)."""
    return {'_id': document_id(session_id), 'expires': {'$not': {'$lte': now}},
            'retired': {'$exists': False}}


class RetiredSession:
    """What :meth:`SessionStore.load` finds under an id that ``change_id`` retired lately."""

    __slots__ = ('until',)

    def __init__(self, until):
        #: When the id stops being treated as retired (``rotation_grace`` after).
        self.until = until


def document_id(session_id):
    """The ``_id`` under which a session id's document is stored."""
    return hashlib.sha256(session_id.encode('ascii')).hexdigest()


class ProcessLocalCollection:
    """A callable that creates a MongoClient and returns the sessions collection.

    :class:`SessionStore` calls it on first use in each process, never at
    import or configuration time, and again in a forked child (``gunicorn
    --preload``), which must not share its parent's sockets.
    """

    def __init__(self, db_name, coll_name, client_args=(), client_kwargs=None,
                 client_class=pymongo.MongoClient):
        self.client_class = client_class
        self.db_name = db_name
        self.coll_name = coll_name
        self._client_args = tuple(client_args)
        self._client_kwargs = dict(client_kwargs or {})
        self._client = None

    def __call__(self):
        self._client = self.client_class(*self._client_args, **self._client_kwargs)
        return self._client[self.db_name][self.coll_name]

    def close(self):
        """Close the client this process created, if any."""
        client, self._client = self._client, None
        if client is not None:
            client.close()


class SessionStore:
    """Loads, writes and removes session documents.

    ``collection`` is a pymongo :class:`~pymongo.collection.Collection`, or a
    callable returning one (see :class:`ProcessLocalCollection`).
    ``operation_timeout`` bounds every database call, in seconds (pymongo's
    client-side operation timeout); None leaves the client's own limits.
    """

    def __init__(self, collection, operation_timeout=5.0, detect_conflicts=False,
                 cipher=None, max_size=None, outage_probe_interval=5.0):
        if operation_timeout is not None and operation_timeout <= 0:
            raise ValueError('operation_timeout must be a positive number of seconds or None')
        if hasattr(collection, 'find_one'):  # a Collection (callable itself, but not a getter)
            self._get_collection = lambda: collection
        else:
            self._get_collection = collection
        self.operation_timeout = operation_timeout
        self.detect_conflicts = detect_conflicts
        self.cipher = cipher
        self.max_size = max_size
        self._lock = threading.Lock()
        self._process = None      # (pid, collection): published in one assignment
        self._indexed = False
        self._embedded = False
        self._client_timeout = False   # whether the client bounds every call itself
        self._breaker = OutageBreaker(outage_probe_interval)

    # -- plumbing -------------------------------------------------------

    def collection(self):
        """This process's sessions collection, its TTL index ensured on first use."""
        collection = self._process_collection()
        if not self._indexed:
            self.ensure_indexes(collection)
        return collection

    def _process_collection(self):
        # A callable ``collection`` is called once per process, so that a
        # forked worker gets a client of its own.
        process = self._process
        if process is None or process[0] != os.getpid():
            with self._lock:
                process = self._process
                if process is None or process[0] != os.getpid():
                    source = self._call('connect to MongoDB', self._get_collection)
                    client_options = getattr(getattr(source.database, 'client', None),
                                             'options', None)
                    client_timeout = getattr(client_options, 'timeout', None)
                    self._client_timeout = (client_timeout is not None
                                            and client_timeout == self.operation_timeout)
                    try:
                        collection = source.with_options(codec_options=CODEC_OPTIONS)
                        raw = source.with_options(codec_options=_RAW_CODEC_OPTIONS)
                        self._embedded = False
                    except NotImplementedError:
                        # mongomock (the embedded backend) keeps Python objects:
                        # documents pass through BSON on their way (see _sent).
                        collection = raw = source
                        self._embedded = True
                    process = self._process = (os.getpid(), collection, raw)
                    self._indexed = False
        return process[1]

    def _raw_collection(self):
        """The collection, answering with raw BSON: its size is known, and it is decoded once."""
        self.collection()
        return self._process[2]

    def _call(self, what, operation, *args, **kwargs):
        """Run one database call, bounded by ``operation_timeout``; map its errors.

        While the server is known to be unreachable, fail at once (see
        :mod:`pyramid_mongosession.outage`).
        """
        probe = self._breaker.admit()
        try:
            if self._client_timeout:
                result = operation(*args, **kwargs)   # the client bounds every call itself
            else:
                with pymongo.timeout(self.operation_timeout):
                    result = operation(*args, **kwargs)
        except PyMongoError as exc:
            self._breaker.record(probe, exc)
            raise self._error(what, exc) from exc
        except BaseException:
            self._breaker.abandon(probe)
            raise
        self._breaker.record(probe)
        return result

    def _error(self, what, exc):
        """This package's error for pymongo's ``exc``: an outage, or a value refused."""
        if unreachable(exc):
            return SessionBackendError('MongoDB is unreachable: could not %s: %s' % (what, exc))
        code = exc.code if isinstance(exc, OperationFailure) else None
        if isinstance(exc, DocumentTooLarge) or code in _TOO_LARGE_CODES:
            return SessionValueError(
                'the session is larger than MongoDB can store in one document: %s' % exc)
        if code in _REFUSED_VALUE_CODES:
            return _RefusedValue((exc.details or {}).get('errmsg') or str(exc))
        return SessionBackendError('could not %s: %s' % (what, exc))

    def ensure_indexes(self, collection=None):
        """Create the TTL index on ``expires``; return False if the server refuses.

        FerretDB 1.x answers NotImplemented and Cosmos DB allows TTL only on
        ``_ts``: sessions there still expire (every read checks ``expires``),
        but their documents stay until ``pmongosession purge`` removes them.
        A refusal is final for this process; any other failure is retried on
        the next use.
        """
        if collection is None:
            collection = self._process_collection()
        try:
            self._call('create the TTL index', collection.create_index,
                       'expires', expireAfterSeconds=0, name='expires_ttl')
        except SessionBackendError as exc:
            refusal = exc.__cause__
            if not (isinstance(refusal, OperationFailure)
                    and refusal.code in _INDEX_REFUSED_CODES):
                raise
            self._indexed = True
            if refusal.code == _UNAUTHORIZED:
                return self._check_ttl_index(collection, refusal)
            log.warning('the server refused a TTL index on %s.expires (%s); '
                        'expired sessions are ignored on read but not deleted: '
                        'run "pmongosession purge" periodically',
                        collection.full_name, refusal)
            return False
        self._indexed = True
        return True

    def _check_ttl_index(self, collection, refusal):
        """The application's user may not create indexes: is the TTL index there already?"""
        try:
            indexes = self._call('list the indexes', collection.index_information)
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

    def _fields(self, session_id, values, prefix):
        """Session keys and values as stored, and an upper bound of their size in BSON.

        Names are escaped and values encrypted if asked; every value is
        checked first (:func:`~pyramid_mongosession.encoding.check_value`),
        so a value no server stores is refused here, naming its key.
        """
        fields, size = {}, 0
        cipher = self.cipher
        for key, value in values.items():
            name = prefix + field_name(key)
            size += check_value(key, value) + len(name.encode('utf-8', 'surrogatepass')) + 2
            if cipher is not None:
                value = cipher.encrypt(session_id, key, encode_value(value))
                size += ENCRYPTION_OVERHEAD
            fields[name] = value
        return fields, size

    def _check_size(self, bound, data):
        """Refuse to store ``data`` if it exceeds ``max_size`` or MongoDB's document limit.

        ``bound`` is an upper bound of the stored document's size; the data
        is measured exactly only when the bound is over a limit, so a small
        write to a large session costs no encoding of the whole session.
        """
        limit = MAX_DOCUMENT_SIZE - DOCUMENT_HEADROOM
        if self.max_size is not None:
            limit = min(limit, self.max_size)
        if bound <= limit:
            return
        sizes = {key: len(encode_value(value)) for key, value in data.items()}
        size = sum(sizes.values()) + sum(
            len(field_name(key).encode('utf-8', 'surrogatepass')) + 2 for key in data)
        if self.cipher is not None:
            size += ENCRYPTION_OVERHEAD * len(data)
        largest = max(sizes, key=sizes.get) if sizes else None
        if self.max_size is not None and size > self.max_size:
            raise SessionValueError('the session holds %d bytes, more than max_size (%d); '
                                    'its largest key is %r' % (size, self.max_size, largest))
        if size > MAX_DOCUMENT_SIZE - DOCUMENT_HEADROOM:
            raise SessionValueError('the session would be larger than MongoDB stores in one '
                                    'document (%d bytes; its largest key is %r)' % (size, largest))

    def _sent(self, document):
        """``document`` as the server will get it (mongomock: through BSON, as a server would)."""
        if not self._embedded:
            return document
        return bson.decode(bson.encode(document, codec_options=CODEC_OPTIONS),
                           codec_options=_EMBEDDED_CODEC_OPTIONS)

    def can_write_blind(self, values, pushes):
        """Whether a write of ``values`` and ``pushes`` may go without loading the session.

        Only a write small enough that it cannot take a session near MongoDB's
        document limit over it unseen (the limit is checked exactly against
        the loaded session otherwise), with no ``max_size`` to enforce, and
        not to the embedded backend, where loading costs nothing. Encrypted
        values cannot be appended to on the server.
        """
        self._process_collection()   # tells whether the backend is embedded
        if self._embedded or self.max_size is not None or (pushes and self.cipher is not None):
            return False
        size = 0
        for key, value in values.items():
            size += check_value(key, value)
        for key, messages in pushes.items():
            for message in messages:
                size += check_value(key, message)
        return size <= BLIND_WRITE_LIMIT

    # -- the four operations ---------------------------------------------

    def load(self, session_id, now):
        """The session stored under ``session_id``, or None if absent or expired.

        The query names the document by ``_id`` alone, which every server
        answers fastest (MongoDB's IDHACK path; FerretDB pushes down nothing
        else); the expiry is checked here, since a TTL monitor lags.
        """
        collection = self._raw_collection()
        document = self._call('load a session', collection.find_one,
                              {'_id': document_id(session_id)})
        if document is None:
            return None
        return self._stored(session_id, document, now)

    def _stored(self, session_id, document, now):
        if isinstance(document, RawBSONDocument):
            raw = document.raw
        else:   # mongomock
            raw = bson.encode(document, codec_options=_EMBEDDED_CODEC_OPTIONS)
        document = bson.decode(raw, codec_options=CODEC_OPTIONS)
        expires = document.get('expires')
        if expires is not None and expires <= now:
            return None
        if 'retired' in document:
            return RetiredSession(expires)
        data = {session_key(name): value for name, value in document.get('data', {}).items()}
        stale = ()
        if self.cipher is not None:
            try:
                data, stale = self.cipher.decrypt_all(session_id, data, decode_value)
            except DecryptionError as exc:
                log.warning('ignored a session that could not be decrypted: %s', exc)
                return None
        return StoredSession(data, document.get('created'), document.get('expires'),
                             document.get('v', 0), stale, len(raw), document.get('timeout'))

    def insert(self, session_id, data, created, expires, timeout=None):
        """Store a new session (``timeout``: its own idle timeout, if any). Raises if it cannot."""
        fields, size = self._fields(session_id, data, '')
        self._check_size(size, data)
        document = {
            '_id': document_id(session_id),
            'data': fields,
            'created': created,
            'expires': expires,
            'v': 1,
        }
        if timeout is not None:
            document['timeout'] = timeout
        collection = self.collection()
        try:
            with _naming_refused(data):
                self._call('store a session', collection.insert_one, self._sent(document))
        except DuplicateKeyError:
            # Two 256-bit ids colliding means a broken random generator.
            raise SessionBackendError('session id collision: refusing to overwrite') from None
        except ENCODING_ERRORS as exc:
            raise unstorable(data, exc) from exc

    def update(self, session_id, now, changed, removed, expires, version=None,
               data=None, stored_size=0, pushes=None, timeout=UNCHANGED):
        """Write ``changed`` keys, remove ``removed`` keys and set ``expires``.

        Returns False, writing nothing, when the session has gone meanwhile:
        the filter names the document by ``_id`` *and* a live expiry, so a
        write never brings back a session that expired or was removed. With
        ``detect_conflicts``, ``version`` must still be the stored one, or
        :class:`SessionConflict` is raised. ``data`` (the whole session after
        the write) and ``stored_size`` (the document's size when it was
        loaded) let the write be refused if it would make the document too
        large. ``pushes`` maps keys to lists of values to append (``$push``).
        ``timeout`` sets the session's own idle timeout (None removes it).
        Without ``data`` (a request that did not read the session), only a
        session without a timeout of its own matches: its expiry is known.
        """
        query = _live(session_id, now)
        if self.detect_conflicts and version is not None:
            query['v'] = version
        if data is None:
            query['timeout'] = {'$exists': False}
        update, size = self._update_document(session_id, changed, removed, expires, pushes,
                                             timeout)
        if data is not None:
            self._check_size(stored_size + size, data)
        collection = self.collection()
        try:
            with _naming_refused(dict(changed, **(pushes or {}))):
                result = self._call('store a session', collection.update_one, query,
                                    self._sent(update))
        except ENCODING_ERRORS as exc:
            raise unstorable(changed, exc) from exc
        if result.matched_count:
            return True
        if 'v' in query and self._call('check a session', collection.count_documents,
                                       _live(session_id, now), limit=1):
            raise SessionConflict('the session was changed by another request since it was loaded')
        log.debug('dropped a write to a session that no longer exists')
        return False

    def _update_document(self, session_id, changed, removed, expires, pushes, timeout):
        """The update operators of :meth:`update`, and a bound of the bytes they write."""
        sets, size = self._fields(session_id, changed, 'data.')
        sets['expires'] = expires
        unsets = {'data.' + field_name(key): '' for key in removed}
        if timeout is None:
            unsets['timeout'] = ''
        elif timeout is not UNCHANGED:
            sets['timeout'] = timeout
        update = {'$set': sets, '$inc': {'v': 1}}
        if unsets:
            update['$unset'] = unsets
        if pushes:
            for key, values in pushes.items():
                for value in values:
                    size += check_value(key, value)
            update['$push'] = {'data.' + field_name(key): {'$each': values}
                               for key, values in pushes.items()}
        return update, size

    def touch(self, session_id, now, expires):
        """Move a live session's expiry; no data changes, so no conflict either."""
        self._call('refresh a session', self.collection().update_one,
                   _live(session_id, now),
                   {'$set': {'expires': expires}})

    def take(self, session_id, now, version=None, retire_for=None):
        """Delete a live session and return it as it was, or None if it was gone or expired.

        ``change_id`` moves a session with this: what the delete returns is
        the latest data, concurrent writes included. With ``retire_for`` (a
        timedelta), the document is replaced by a tombstone instead, which
        :meth:`load` reports as a :class:`RetiredSession` for that long. With
        ``detect_conflicts`` and a ``version``, a session written since is
        left alone and :class:`SessionConflict` is raised. Raises on failure.
        """
        query = {'_id': document_id(session_id), 'retired': {'$exists': False}}
        if self.detect_conflicts and version is not None:
            query['v'] = version
        collection = self._raw_collection()
        if retire_for:
            document = self._call('move a session', collection.find_one_and_replace, query,
                                  {'retired': now, 'expires': now + retire_for})
        else:
            document = self._call('move a session', collection.find_one_and_delete, query)
        if document is None:
            if 'v' in query and isinstance(self.load(session_id, now), StoredSession):
                raise SessionConflict(
                    'the session was changed by another request since it was loaded')
            return None
        # By _id alone: deleting a session that had expired is no harm, and
        # returning None for it keeps it from moving to a new id.
        return self._stored(session_id, document, now)

    def restore(self, session_id, stored):
        """Put back a session that :meth:`take` removed (when moving it failed)."""
        fields, _ = self._fields(session_id, stored.data, '')
        document = {'data': fields, 'created': stored.created, 'expires': stored.expires,
                    'v': stored.version + 1}
        if stored.timeout is not None:
            document['timeout'] = stored.timeout
        self._call('put back a session', self.collection().replace_one,
                   {'_id': document_id(session_id)}, self._sent(document), upsert=True)

    def remove(self, session_id):
        """Delete a session. Returns whether it existed; None, with a warning, on failure."""
        try:
            result = self._call('remove a session', self.collection().delete_one,
                                {'_id': document_id(session_id)})
        except SessionBackendError as exc:
            log.warning('%s; the session will expire on its own', exc)
            return None
        return bool(result.deleted_count)

    # -- maintenance ---------------------------------------------------------

    def revoke(self, query):
        """Delete every session whose data matches ``query``; return how many.

        ``query`` maps session keys to values or MongoDB query operators, e.g.
        ``{'user_id': 42}`` or ``{'login_time': {'$lt': cutoff}}``: log a user
        out everywhere after a password change.
        """
        result = self._call('revoke sessions', self.collection().delete_many,
                            _data_selector(query))
        return result.deleted_count

    def count(self, query):
        """How many sessions :meth:`revoke` would delete for ``query``."""
        return self._call('count sessions', self.collection().count_documents,
                          _data_selector(query))

    def close(self):
        """Close the MongoClient this store created, if it created one."""
        close = getattr(self._get_collection, 'close', None)
        if close is not None:
            close()
        self._process = None

    def purge_expired(self, now, batch_seconds=30.0, progress=None, clock=time.monotonic):
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
        collection = self.collection()
        removed, start, width = 0, 0, _ID_SPACE // 64
        began = clock()
        while start < _ID_SPACE:
            stop = min(start + width, _ID_SPACE)
            ids = {'$gte': '%08x' % start}
            if stop < _ID_SPACE:
                ids['$lt'] = '%08x' % stop
            called = clock()
            try:
                result = self._maintenance_call('purge expired sessions', batch_seconds,
                                                collection.delete_many,
                                                {'_id': ids, 'expires': {'$lte': now}})
            except SessionBackendError:
                if width == 1:
                    raise
                width = max(width // 4, 1)   # too slow or too many at once: narrower
                continue
            removed += result.deleted_count
            start = stop
            scale = (batch_seconds / 3) / max(clock() - called, 0.001)
            width = max(1, min(int(width * min(max(scale, 0.25), 4)), _ID_SPACE))
            if progress is not None:
                progress(removed, start / _ID_SPACE, clock() - began)
        return removed

    def _maintenance_call(self, what, seconds, operation, *args, **kwargs):
        """A call that may take up to ``seconds``, outside the request path's outage handling."""
        try:
            with pymongo.timeout(seconds):
                return operation(*args, **kwargs)
        except PyMongoError as exc:
            raise self._error(what, exc) from exc

    def namespace(self):
        """``database.collection``: where the sessions are kept."""
        return self.collection().full_name

    def session_counts(self, now):
        """``(stored, expired)``: how many sessions are stored, and how many of
        them had expired at ``now`` but are still there."""
        collection = self.collection()
        stored = self._call('count sessions', collection.count_documents, {})
        expired = self._call('count expired sessions', collection.count_documents,
                             {'expires': {'$lte': now}})
        return stored, expired

    def ttl_index_name(self):
        """The name of the TTL index on ``expires``, or None when there is none."""
        indexes = self._call('list the indexes', self.collection().index_information)
        for name, spec in indexes.items():
            if spec.get('key') == [('expires', 1)] and 'expireAfterSeconds' in spec:
                return name
        return None

    def document_sizes(self, limit, at_random=False):
        """Sizes in bytes of stored session documents: ``(sizes, refusal)``.

        The server computes them (``$bsonSize``): for ``limit`` documents it
        picks at random (``$sample``) when ``at_random``, else for every
        document. A server that cannot (FerretDB 1.x implements neither)
        refuses; then the raw BSON of the first ``limit`` documents, in the
        server's natural order, is measured here instead, and ``refusal`` is
        the server's message. ``refusal`` is None when the server computed
        the sizes.
        """
        from bson.codec_options import CodecOptions
        from bson.raw_bson import RawBSONDocument

        collection = self.collection()
        pipeline = [{'$project': {'_id': 0, 'size': {'$bsonSize': '$$ROOT'}}}]
        if at_random:
            pipeline.insert(0, {'$sample': {'size': limit}})
        try:
            return [doc['size'] for doc in self._call(
                'measure sessions', lambda: list(collection.aggregate(pipeline)))], None
        except (SessionBackendError, SessionValueError) as exc:
            refusal = exc.__cause__
            if not isinstance(refusal, OperationFailure):
                raise
        raw = collection.with_options(
            codec_options=CodecOptions(document_class=RawBSONDocument))
        sizes = [len(doc.raw) for doc in self._call(
            'read sessions', lambda: list(raw.find({}, limit=limit)))]
        return sizes, (refusal.details or {}).get('errmsg') or str(refusal)


def _data_selector(query):
    if not query:
        raise ValueError('refusing to match every session: the query is empty')
    return {'data.' + field_name(key): value for key, value in query.items()}

