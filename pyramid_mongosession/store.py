"""The only module that talks to MongoDB.

One document per session::

    {
        "_id": "<sha256 hex digest of the session id>",
        "data": {<the session's keys, as native BSON>},
        "created": <datetime, UTC>,
        "expires": <datetime, UTC, or null when no timeout applies>,
        "v": <int, incremented by every write>,
        "handle": "<the session's handle: stable, not secret>",
        "last_seen": <datetime, UTC: the last write>,
        "user": <the user id, when the session has one>,
        "client": {"agent": ..., "address": ...}
    }

The id itself is never stored, only its digest, so read access to the
collection yields no cookie that would log anybody in. ``expires`` carries a
TTL index, and every read checks it too, because MongoDB's TTL monitor runs
only once a minute and some servers have no TTL indexes at all.

Writes never upsert: a write to a session whose document has gone (expired,
logged out, given a new id by a concurrent request) matches nothing and is
dropped, so a stale request can never bring a session back.

``handle``, ``last_seen``, ``user`` and ``client`` serve users' lists of
their sessions (:mod:`pyramid_mongosession.accounts`): ``user`` mirrors the
session key ``user_key`` whenever a write changes it (a keyed hash of it
with ``encryption_keys``, which seal ``client`` too), and a partial index on
``user`` and ``expires`` finds a user's sessions; sessions without a user
stay out of it.
"""
import base64
import contextlib
import hashlib
import logging
import os
import threading
import time

import bson
import pymongo
from bson.binary import UuidRepresentation
from pymongo import IndexModel
from pymongo.errors import (
    ConnectionFailure, DocumentTooLarge, DuplicateKeyError, ExecutionTimeout, NetworkTimeout,
    OperationFailure, PyMongoError)

from .crypto import DecryptionError
from .encoding import (
    CODEC_OPTIONS, ENCODING_ERRORS, MAX_DOCUMENT_SIZE, check_value, decode_value, encode_value,
    field_name, session_key, unstorable)
from .exceptions import SessionBackendError, SessionConflict, SessionValueError
from .outage import OutageBreaker, summary, unreachable, verdict

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
#: mongomock is not thread-safe (one thread's find iterates a dict that
#: another's insert changes): every call to the embedded backend holds this
#: lock, in every store of the process, so a threaded WSGI server (waitress)
#: is safe on ``mongomock://`` too.
_EMBEDDED_LOCK = threading.RLock()
#: The account fields of a session document (see pyramid_mongosession.accounts).
HANDLE, LAST_SEEN, USER, CLIENT = 'handle', 'last_seen', 'user', 'client'
ACCOUNT_FIELDS = (HANDLE, LAST_SEEN, USER, CLIENT)
#: The partial indexes that find a user's sessions, and a session by its handle.
USER_INDEX, HANDLE_INDEX = 'user_sessions', 'user_session_handles'


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
    """What :meth:`SessionStore.load` found: the data and its bookkeeping.

    ``account`` holds the document's account fields as stored (``handle``,
    ``last_seen``, ``user``, ``client``: those present); ``user`` is the value
    of the session key ``user_key`` as loaded, or None.
    """

    __slots__ = ('data', 'created', 'expires', 'version', 'stale_keys', 'size', 'timeout',
                 'account', 'user')

    def __init__(self, data, created, expires, version, stale_keys=(), size=0, timeout=None,
                 account=None, user=None):
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
        self.account = account if account is not None else {}
        self.user = user


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


def session_handle(doc_id):
    """The handle of a session first stored under the document id ``doc_id``.

    128 bits of a SHA-256 digest of the document id (itself the digest of the
    session id), base64url: it names the session to its user without being
    anything that could log in. It is stored in the document and carried
    over by ``change_id``, so it stays the same for the session's life.
    """
    digest = hashlib.sha256(b'pyramid_mongosession handle\x00' + doc_id.encode('ascii')).digest()
    return base64.urlsafe_b64encode(digest[:16]).rstrip(b'=').decode('ascii')


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
                 cipher=None, max_size=None, outage_probe_interval=5.0, user_key=None):
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
        #: The session key whose value names the session's user (None: none does).
        self.user_key = user_key
        self._lock = threading.Lock()
        self._process = None      # (pid, collection): published in one assignment
        self._indexed = False
        #: Whether the first use creates the indexes (the application's store
        #: does; ``pmongosession`` creates them only in ``ensure-indexes``).
        self.create_indexes = True
        self._embedded = False
        self._client_timeout = False   # whether the client bounds every call itself
        self._breaker = OutageBreaker(outage_probe_interval)

    # -- plumbing -------------------------------------------------------

    def collection(self):
        """This process's sessions collection, its indexes ensured on first use
        (unless :attr:`create_indexes` is false)."""
        collection = self._process_collection()
        if not self._indexed and self.create_indexes:
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
                        self._embedded = False
                    except NotImplementedError:
                        # mongomock (the embedded backend) keeps Python objects:
                        # documents pass through BSON on their way (see _sent).
                        collection = source
                        self._embedded = True
                    process = self._process = (os.getpid(), collection)
                    self._indexed = False
        return process[1]

    def _call(self, what, operation, *args, **kwargs):
        """Run one database call, bounded by ``operation_timeout``; map its errors.

        While the server is known to be unreachable, fail at once (see
        :mod:`pyramid_mongosession.outage`).
        """
        probe = self._breaker.admit()
        try:
            if self._embedded:
                with _EMBEDDED_LOCK:   # see _EMBEDDED_LOCK
                    result = operation(*args, **kwargs)
            elif self._client_timeout:
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
        if unreachable(exc) or isinstance(exc, (NetworkTimeout, ExecutionTimeout)):
            # One line: the topology pymongo describes is logged at DEBUG (outage.py).
            return SessionBackendError('%s: could not %s: %s' % (verdict(exc), what,
                                                                  summary(exc)))
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
        if self._ensure_all_indexes(collection):
            return True
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
            self._check_server(collection)
            return False
        self._indexed = True
        return True

    def _check_server(self, collection):
        """Log a warning if the server is FerretDB 1.x (see :func:`server_warning`).

        Asked only of a server that refused the TTL index (as FerretDB 1.x
        does): one ``buildInfo``, once per process; MongoDB is never asked.
        """
        try:
            info = self._call('ask the server its version', collection.database.command,
                              'buildInfo')
        except SessionBackendError as exc:
            log.debug('%s', exc)
            return
        warning = server_warning(info)
        if warning is not None:
            log.warning('%s', warning)

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
        owner = document_id(session_id) if cipher is not None else None
        for key, value in values.items():
            name = prefix + field_name(key)
            size += check_value(key, value) + len(name.encode('utf-8', 'surrogatepass')) + 2
            if cipher is not None:
                value = cipher.encrypt(owner, key, encode_value(value))
                size += ENCRYPTION_OVERHEAD
            fields[name] = value
        return fields, size

    def _check_size(self, bound, data):
        """Refuse to store ``data`` if it exceeds ``max_size`` or MongoDB's document limit.

        ``bound`` is an upper bound of the stored document's size, or None if
        unknown; the data is measured exactly only when the bound is unknown
        or over a limit.
        """
        limit = MAX_DOCUMENT_SIZE - DOCUMENT_HEADROOM
        if self.max_size is not None:
            limit = min(limit, self.max_size)
        if bound is not None and bound <= limit:
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

    def load(self, session_id, now, expired=None):
        """The session stored under ``session_id``, or None if absent or expired.

        The query names the document by ``_id`` alone, which every server
        answers fastest (MongoDB's IDHACK path; FerretDB pushes down nothing
        else); the expiry is checked here, since a TTL monitor lags. When
        the document is there but has expired, ``expired(handle, user)`` is
        called, if given.
        """
        collection = self.collection()
        document = self._call('load a session', collection.find_one,
                              {'_id': document_id(session_id)})
        if document is None:
            return None
        return self._stored(session_id, document, now, expired)

    def _stored(self, session_id, document, now, expired=None):
        size = None   # not measured: decoding raw BSON through pymongo costs more than it saves
        if self._embedded:   # mongomock: through BSON, as from a server
            raw = bson.encode(document, codec_options=_EMBEDDED_CODEC_OPTIONS)
            document, size = bson.decode(raw, codec_options=CODEC_OPTIONS), len(raw)
        expires = document.get('expires')
        if 'retired' in document:
            return RetiredSession(expires) if expires is not None and expires > now else None
        if expires is not None and expires <= now:
            if expired is not None:
                expired(document.get(HANDLE) or session_handle(document['_id']),
                        self._user_of(document, session_id))
            return None
        data = {session_key(name): value for name, value in document.get('data', {}).items()}
        stale = ()
        if self.cipher is not None:
            try:
                data, stale = self.cipher.decrypt_all(document_id(session_id), data,
                                                      decode_value, session_id)
            except DecryptionError as exc:
                log.warning('ignored a session that could not be decrypted: %s', exc)
                return None
        account = {name: document[name] for name in ACCOUNT_FIELDS if name in document}
        user = data.get(self.user_key) if self.user_key is not None else None
        return StoredSession(data, document.get('created'), document.get('expires'),
                             document.get('v', 0), stale, size, document.get('timeout'),
                             account, user)

    def insert(self, session_id, data, created, expires, timeout=None, account=None):
        """Store a new session (``timeout``: its own idle timeout, if any). Raises if it cannot.

        ``account`` adds account fields (see :mod:`pyramid_mongosession.accounts`);
        ``user`` is set from ``data`` here.
        """
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
        if account:
            document.update(account)
        self._mirror_user(document, None, data, ())
        self._seal_client(document)
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
               data=None, stored_size=0, pushes=None, timeout=UNCHANGED, account=None):
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
        ``account`` sets account fields; ``user`` follows a change of ``user_key``.
        """
        query = _live(session_id, now)
        if self.detect_conflicts and version is not None:
            query['v'] = version
        if data is None:
            query['timeout'] = {'$exists': False}
        update, size = self._update_document(session_id, changed, removed, expires, pushes,
                                             timeout, account)
        if data is not None:
            self._check_size(None if stored_size is None else stored_size + size, data)
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

    def _update_document(self, session_id, changed, removed, expires, pushes, timeout,
                         account):
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
        if account:
            sets.update(account)
        self._mirror_user(sets, update, changed, removed)
        if pushes:
            for key, values in pushes.items():
                for value in values:
                    size += check_value(key, value)
            update['$push'] = {'data.' + field_name(key): {'$each': values}
                               for key, values in pushes.items()}
        return update, size

    def touch(self, session_id, now, expires, account=None):
        """Move a live session's expiry (and set ``account`` fields); no data
        changes, so no conflict either."""
        sets = {'expires': expires}
        if account:
            sets.update(account)
        self._call('refresh a session', self.collection().update_one,
                   _live(session_id, now), {'$set': sets})

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
        collection = self.collection()
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
        document.update(stored.account)
        self._mirror_user(document, None, stored.data, ())
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
        # A server that is not there fails here, within operation_timeout.
        self._call('reach MongoDB', collection.find_one, {'_id': ''}, {'_id': 1})
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

    def _maintenance_call(self, what, seconds, operation, *args, **kwargs):
        """A call that may take up to ``seconds``, outside the request path's outage handling."""
        try:
            with pymongo.timeout(seconds), (_EMBEDDED_LOCK if self._embedded
                                            else contextlib.nullcontext()):
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

    # -- users and their sessions ----------------------------------------------
    # The account fields and the queries of pyramid_mongosession.accounts.

    def _user_index_models(self):
        only_users = {USER: {'$exists': True}}
        return [IndexModel([(USER, 1), ('expires', 1)], name=USER_INDEX,
                           partialFilterExpression=only_users),
                IndexModel([(HANDLE, 1)], name=HANDLE_INDEX,
                           partialFilterExpression=only_users)]

    def _ensure_all_indexes(self, collection):
        """The TTL and user indexes in one ``createIndexes``; True if that was accepted.

        When the server refuses it, the user indexes are tried alone (False
        is returned, and :meth:`ensure_indexes` then tries the TTL index alone).
        """
        if self.user_key is None:
            return False
        models = [IndexModel([('expires', 1)], expireAfterSeconds=0, name='expires_ttl')]
        try:
            self._call('create the indexes', collection.create_indexes,
                       models + self._user_index_models())
        except SessionBackendError as exc:
            refusal = exc.__cause__
            if not (isinstance(refusal, OperationFailure)
                    and refusal.code in _INDEX_REFUSED_CODES):
                raise
            self.ensure_user_indexes(collection)
            return False
        self._indexed = True
        return True

    def ensure_user_indexes(self, collection=None):
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
            collection = self._process_collection()
        try:
            self._call('create the user indexes', collection.create_indexes,
                       self._user_index_models())
        except SessionBackendError as exc:
            refusal = exc.__cause__
            if not (isinstance(refusal, OperationFailure)
                    and refusal.code in _INDEX_REFUSED_CODES):
                raise
            log.warning('the server refused partial indexes on %s (%s): listing and '
                        'revoking a user\'s sessions scan the collection',
                        collection.full_name, refusal)
            return False
        return True

    def user_indexes(self):
        """The names of the user indexes in place (see :meth:`ensure_user_indexes`)."""
        indexes = self._call('list the indexes', self.collection().index_information)
        return sorted(name for name in indexes if name in (USER_INDEX, HANDLE_INDEX))

    def user_value(self, value):
        """The ``user`` field for the user id ``value``: the value itself, or with
        ``encryption_keys`` its keyed hash under the first key; None for None."""
        if value is None:
            return None
        if self.cipher is None:
            return value
        return bson.Binary(self.cipher.user_digests(encode_value(value))[0])

    def user_filter(self, userid):
        """What matches the ``user`` field of ``userid``'s sessions, under any key."""
        if self.cipher is None:
            return userid
        return {'$in': [bson.Binary(digest)
                        for digest in self.cipher.user_digests(encode_value(userid))]}

    def _mirror_user(self, sets, update, changed, removed):
        """Keep ``user`` in step with a write of ``user_key`` in ``changed`` or ``removed``."""
        key = self.user_key
        if key is None:
            return
        if key in changed and changed[key] is not None:
            sets[USER] = self.user_value(changed[key])
        elif key in changed or key in removed:
            sets.pop(USER, None)
            if update is not None:
                update.setdefault('$unset', {})[USER] = ''

    def _seal_client(self, document):
        """With ``encryption_keys``, seal a new document's ``client`` (bound to its ``_id``)."""
        if isinstance(document.get(CLIENT), dict) and self.cipher is not None:
            document[CLIENT] = self.cipher.encrypt(document['_id'] + ':client', CLIENT,
                                                   encode_value(document[CLIENT]))

    def _user_of(self, document, session_id=None):
        """The value of ``user_key`` in a decoded document's data (decrypted), or None."""
        key = self.user_key
        value = (document.get('data') or {}).get(field_name(key)) if key is not None else None
        if value is None or self.cipher is None:
            return value
        try:
            return decode_value(self.cipher.decrypt(document['_id'], key, value, session_id))
        except DecryptionError:
            return None

    def client_of(self, document):
        """A document's ``client`` field, decrypted; None when absent or unreadable."""
        client = document.get(CLIENT)
        if client is None or self.cipher is None or isinstance(client, dict):
            return client
        try:
            return decode_value(self.cipher.decrypt(document['_id'] + ':client', CLIENT, client))
        except DecryptionError:
            return None

    def user_sessions(self, userid, now):
        """The live sessions of ``userid``, in no order, in one query on the user index.

        Each is a document with ``_id``, ``created``, ``expires`` and the
        account fields. A session stored by an earlier version gets its
        ``handle`` recorded here, once (one more write).
        """
        collection = self.collection()
        query = {USER: self.user_filter(userid), 'expires': {'$not': {'$lte': now}}}
        projection = dict.fromkeys(('created', 'expires') + ACCOUNT_FIELDS, 1)
        found = self._call('list the sessions of a user',
                           lambda: list(collection.find(query, projection)))
        for document in found:
            if not document.get(HANDLE):
                document[HANDLE] = session_handle(document['_id'])
                self._call('record the handle of a session', collection.update_one,
                           {'_id': document['_id'], HANDLE: {'$exists': False}},
                           {'$set': {HANDLE: document[HANDLE]}})
        return found

    def _ending(self, userid, handles, keep):
        # Expired sessions still stored go too: erasing a user's sessions
        # leaves nothing for the TTL monitor (or purge) to find.
        if userid is None and handles is None:
            raise ValueError('refusing to revoke the sessions of every user: '
                             'name a user or handles')
        query = {USER: self.user_filter(userid) if userid is not None else {'$exists': True}}
        if handles is not None:
            query[HANDLE] = {'$in': list(handles)}
        if keep is not None:
            query[HANDLE] = dict(query.get(HANDLE, {}), **{'$ne': keep})
        return query

    def revoke_sessions(self, userid=None, handles=None, keep=None):
        """Delete the sessions of ``userid``, or of any user; return how many.

        ``handles`` restricts them to those handles, ``keep`` spares the one
        with that handle. Sessions that expired but are still stored are
        deleted too. One ``delete``, by the user index (or by the handle
        index, without ``userid``).
        """
        query = self._ending(userid, handles, keep)
        return self._call('revoke sessions', self.collection().delete_many, query).deleted_count

    def take_sessions(self, userid=None, handles=None, keep=None):
        """As :meth:`revoke_sessions`, one session at a time: ``[(handle, user id)]``
        of each session deleted (for the events that report them)."""
        collection = self.collection()
        query = self._ending(userid, handles, keep)
        projection = {HANDLE: 1}
        if self.user_key is not None:
            projection['data.' + field_name(self.user_key)] = 1
        found = self._call('find sessions to revoke',
                           lambda: list(collection.find(query, projection)))
        taken = []
        for document in found:
            gone = self._call('revoke a session', collection.find_one_and_delete,
                              dict(query, _id=document['_id']))
            if gone is not None:
                taken.append((gone.get(HANDLE) or session_handle(gone['_id']),
                              self._user_of(gone)))
        return taken

    def take_ended(self, session_id):
        """Delete a session, returning ``(handle, user id)`` if it was there (else None).

        :meth:`remove`'s one round trip, for an application that is told of
        ended sessions; a failure is logged, as by :meth:`remove`.
        """
        try:   # the whole document: FerretDB 1.x has no projection in findAndModify
            gone = self._call('remove a session', self.collection().find_one_and_delete,
                              {'_id': document_id(session_id)})
        except SessionBackendError as exc:
            log.warning('%s; the session will expire on its own', exc)
            return None
        if gone is None:
            return None
        return gone.get(HANDLE) or session_handle(gone['_id']), self._user_of(gone, session_id)

    def export_user_sessions(self, userid):
        """Everything stored about ``userid``'s sessions, expired ones still stored
        included, with the values decrypted: a list of documents without ``_id``.

        A value that cannot be decrypted here (sealed with its session id by
        an earlier version, or under a key no longer configured) is left out
        of ``data`` and its key listed under ``sealed``.
        """
        collection = self.collection()
        found = self._call('export the sessions of a user',
                           lambda: list(collection.find({USER: self.user_filter(userid)})))
        exported = []
        for document in found:
            data, sealed = {}, []
            for name, value in (document.get('data') or {}).items():
                key = session_key(name)
                if self.cipher is not None:
                    try:
                        value = decode_value(self.cipher.decrypt(document['_id'], key, value))
                    except DecryptionError:
                        sealed.append(key)
                        continue
                data[key] = value
            entry = {HANDLE: document.get(HANDLE) or session_handle(document['_id']),
                     USER: userid}
            entry.update((name, document[name]) for name in (
                'created', LAST_SEEN, 'expires') if name in document)
            if CLIENT in document:
                entry[CLIENT] = self.client_of(document)
            entry['data'] = data
            entry.update((name, value) for name, value in document.items()
                         if name not in entry and name not in ('_id', 'data'))
            if sealed:
                entry['sealed'] = sealed
            exported.append(entry)
        return exported


def server_warning(build_info):
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


def _data_selector(query):
    if not query:
        raise ValueError('refusing to match every session: the query is empty')
    return {'data.' + field_name(key): value for key, value in query.items()}

