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
import hashlib
import logging
import os
import threading

import bson
import pymongo
from bson.binary import UuidRepresentation
from bson.codec_options import CodecOptions
from pymongo.errors import DocumentTooLarge, DuplicateKeyError, OperationFailure, PyMongoError
from bson.errors import InvalidDocument

from .crypto import DecryptionError
from .exceptions import SessionBackendError, SessionConflict, SessionValueError

log = logging.getLogger(__name__)

#: MongoDB's limit on one document; a larger session cannot be stored.
MAX_DOCUMENT_SIZE = 16 * 1024 * 1024
#: Server error codes meaning "the resulting document would be too large".
_TOO_LARGE_CODES = frozenset((10334, 17419, 17420))
#: BadValue, DollarPrefixedFieldName, EmptyFieldName, DottedFieldName: the
#: server refused a value (a nested key it does not accept), not an outage.
_REFUSED_VALUE_CODES = frozenset((2, 52, 56, 57))
#: Answers to createIndexes that mean "never here": Unauthorized, BadValue,
#: CommandNotFound, CannotCreateIndex, IndexOptionsConflict,
#: IndexKeySpecsConflict, CommandNotSupported, NotImplemented.
_INDEX_REFUSED_CODES = frozenset((2, 13, 59, 67, 85, 86, 115, 238))

#: How session values are encoded everywhere: naive UTC datetimes, and
#: uuid.UUID values as standard BSON UUIDs.
CODEC_OPTIONS = CodecOptions(tz_aware=False, uuid_representation=UuidRepresentation.STANDARD)
#: What BSON encoding raises for a value it cannot store.
ENCODING_ERRORS = (InvalidDocument, TypeError, ValueError, OverflowError, RecursionError)


class StoredSession:
    """What :meth:`SessionStore.load` found: the data and its bookkeeping."""

    __slots__ = ('data', 'created', 'expires', 'version', 'stale_keys')

    def __init__(self, data, created, expires, version, stale_keys=()):
        self.data = data
        self.created = created
        self.expires = expires
        self.version = version
        #: Keys whose values are encrypted with a retired key: rewrite them.
        self.stale_keys = stale_keys


def document_id(session_id):
    """The ``_id`` under which a session id's document is stored."""
    return hashlib.sha256(session_id.encode('ascii')).hexdigest()


# Session keys become field names inside ``data``. MongoDB's update paths
# split on '.', reject a leading '$' and empty names, and BSON cannot hold NUL,
# so those characters are %-escaped; '%' itself is escaped to stay reversible.
_ESCAPES = {'%': '%25', '.': '%2E', '$': '%24', '\x00': '%00'}
_UNESCAPES = {v: k for k, v in _ESCAPES.items()}
_EMPTY_KEY = '%'


def field_name(key):
    if not key:
        return _EMPTY_KEY
    if '%' in key or '.' in key or '$' in key or '\x00' in key:
        return ''.join(_ESCAPES.get(char, char) for char in key)
    return key


def session_key(name):
    if '%' not in name:
        return name
    if name == _EMPTY_KEY:
        return ''
    parts = name.split('%')
    return parts[0] + ''.join(_UNESCAPES['%' + part[:2]] + part[2:] for part in parts[1:])


def encode_value(value):
    """One session value as BSON bytes."""
    return bson.encode({'v': value}, codec_options=CODEC_OPTIONS)


def decode_value(data):
    return bson.decode(data, codec_options=CODEC_OPTIONS)['v']


def find_unstorable(values):
    """Name the first key in ``values`` whose value BSON cannot encode, or None."""
    for key, value in values.items():
        try:
            encode_value(value)
        except ENCODING_ERRORS as exc:
            return key, exc
    return None


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
                 cipher=None, max_size=None):
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
                    try:
                        collection = source.with_options(codec_options=CODEC_OPTIONS)
                    except NotImplementedError:
                        # mongomock (the embedded backend) keeps Python objects as they are.
                        collection = source
                    process = self._process = (os.getpid(), collection)
                    self._indexed = False
        return process[1]

    def _call(self, what, operation, *args, **kwargs):
        try:
            with pymongo.timeout(self.operation_timeout):
                return operation(*args, **kwargs)
        except OperationFailure as exc:
            if exc.code in _TOO_LARGE_CODES:
                raise SessionValueError(
                    'the session is larger than MongoDB can store in one document') from exc
            if exc.code in _REFUSED_VALUE_CODES:
                raise SessionValueError('MongoDB refused the session\'s data: %s'
                                        % (exc.details or {}).get('errmsg', exc)) from exc
            raise SessionBackendError('could not %s: %s' % (what, exc)) from exc
        except DocumentTooLarge as exc:
            raise SessionValueError(
                'the session is larger than MongoDB can store in one document: %s' % exc
            ) from exc
        except PyMongoError as exc:
            raise SessionBackendError('could not %s: %s' % (what, exc)) from exc

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
            log.warning('the server refused a TTL index on %s.expires (%s); '
                        'expired sessions are ignored on read but not deleted: '
                        'run "pmongosession purge" periodically',
                        collection.full_name, refusal)
            self._indexed = True
            return False
        self._indexed = True
        return True

    def _fields(self, session_id, values, prefix):
        """Session keys and values as stored: escaped names, values encrypted if asked."""
        try:
            if self.cipher is None:
                return {prefix + field_name(key): value for key, value in values.items()}
            return {prefix + field_name(key): self.cipher.encrypt(session_id, key, encode_value(value))
                    for key, value in values.items()}
        except ENCODING_ERRORS as exc:
            raise _value_error(values, exc) from exc

    def check_size(self, data):
        """Refuse a session whose data is larger than ``max_size`` bytes of BSON."""
        if self.max_size is None:
            return
        try:
            size = len(bson.encode({field_name(key): value for key, value in data.items()},
                                   codec_options=CODEC_OPTIONS))
        except ENCODING_ERRORS as exc:
            raise _value_error(data, exc) from exc
        if size > self.max_size:
            largest = max(data, key=lambda key: len(encode_value(data[key])))
            raise SessionValueError('the session holds %d bytes, more than max_size (%d); '
                                    'its largest key is %r' % (size, self.max_size, largest))

    # -- the four operations ---------------------------------------------

    def load(self, session_id, now):
        """The session stored under ``session_id``, or None if absent or expired."""
        collection = self.collection()
        document = self._call('load a session', collection.find_one, {
            '_id': document_id(session_id),
            'expires': {'$not': {'$lte': now}},
        })
        if document is None:
            return None
        return self._stored(session_id, document)

    def _stored(self, session_id, document):
        data = {session_key(name): value for name, value in document.get('data', {}).items()}
        stale = ()
        if self.cipher is not None:
            try:
                data, stale = self.cipher.decrypt_all(session_id, data, decode_value)
            except DecryptionError as exc:
                log.warning('ignored a session that could not be decrypted: %s', exc)
                return None
        return StoredSession(data, document.get('created'), document.get('expires'),
                             document.get('v', 0), stale)

    def insert(self, session_id, data, created, expires):
        """Store a new session. Raises if it cannot be stored."""
        self.check_size(data)
        document = {
            '_id': document_id(session_id),
            'data': self._fields(session_id, data, ''),
            'created': created,
            'expires': expires,
            'v': 1,
        }
        collection = self.collection()
        try:
            self._call('store a session', collection.insert_one, document)
        except DuplicateKeyError:
            # Two 256-bit ids colliding means a broken random generator.
            raise SessionBackendError('session id collision: refusing to overwrite') from None
        except ENCODING_ERRORS as exc:
            raise _value_error(data, exc) from exc

    def update(self, session_id, now, changed, removed, expires, version=None):
        """Write ``changed`` keys, remove ``removed`` keys and set ``expires``.

        Returns False, writing nothing, when the session has gone meanwhile.
        With ``detect_conflicts``, ``version`` must still be the stored one,
        or :class:`SessionConflict` is raised.
        """
        query = {'_id': document_id(session_id), 'expires': {'$not': {'$lte': now}}}
        if self.detect_conflicts and version is not None:
            query['v'] = version
        sets = self._fields(session_id, changed, 'data.')
        sets['expires'] = expires
        update = {'$set': sets, '$inc': {'v': 1}}
        if removed:
            update['$unset'] = {'data.' + field_name(key): '' for key in removed}
        collection = self.collection()
        try:
            result = self._call('store a session', collection.update_one, query, update)
        except ENCODING_ERRORS as exc:
            raise _value_error(changed, exc) from exc
        if result.matched_count:
            return True
        if 'v' in query and self._call('check a session', collection.count_documents,
                                       {'_id': query['_id'], 'expires': query['expires']},
                                       limit=1):
            raise SessionConflict('the session was changed by another request since it was loaded')
        log.debug('dropped a write to a session that no longer exists')
        return False

    def touch(self, session_id, now, expires):
        """Move a live session's expiry; no data changes, so no conflict either."""
        self._call('refresh a session', self.collection().update_one,
                   {'_id': document_id(session_id), 'expires': {'$not': {'$lte': now}}},
                   {'$set': {'expires': expires}})

    def take(self, session_id, version=None):
        """Delete a live session and return it as it was, or None if it was gone.

        ``change_id`` moves a session with this: what the delete returns is
        the latest data, concurrent writes included. With ``detect_conflicts``
        and a ``version``, a session written since is left alone and
        :class:`SessionConflict` is raised. Raises on failure.
        """
        query = {'_id': document_id(session_id)}
        if self.detect_conflicts and version is not None:
            query['v'] = version
        collection = self.collection()
        document = self._call('move a session', collection.find_one_and_delete, query)
        if document is None:
            if 'v' in query and self._call('check a session', collection.count_documents,
                                           {'_id': query['_id']}, limit=1):
                raise SessionConflict(
                    'the session was changed by another request since it was loaded')
            return None
        return self._stored(session_id, document)

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

    def purge_expired(self, now, batch_size=1000):
        """Delete expired sessions in batches; return how many.

        The way to clean up on servers without TTL indexes (FerretDB 1.x,
        Cosmos DB with a non-``_ts`` field).
        """
        collection = self.collection()
        removed = 0
        while True:
            batch = [doc['_id'] for doc in self._call(
                'find expired sessions', lambda: list(collection.find(
                    {'expires': {'$lte': now}}, {'_id': 1}).limit(batch_size)))]
            if not batch:
                return removed
            result = self._call('purge expired sessions', collection.delete_many,
                                {'_id': {'$in': batch}, 'expires': {'$lte': now}})
            removed += result.deleted_count

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


def _value_error(values, exc):
    found = find_unstorable(values)
    if found is None:
        return SessionValueError('MongoDB cannot store this session: %s' % exc)
    key, cause = found
    return SessionValueError('session key %r holds a value MongoDB cannot store: %s' % (key, cause))
