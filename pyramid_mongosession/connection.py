"""This process's sessions collection, and every call to it: bounded, its errors mapped.

The collection is made on first use in each process (a forked worker gets a
client of its own), never at import or configuration time. Every call goes
through :meth:`Connection.call`, which bounds it by ``operation_timeout``,
sends it in the calling thread's own server session (:mod:`.server_session`),
turns pymongo's errors into this package's (an outage, a value the server
refused, a document too large), and fails at once while the server is known
to be unreachable (:mod:`pyramid_mongosession.outage`).
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
from typing import Any, Callable, Iterable, Mapping, TypeVar

import bson
import pymongo
from bson.binary import UuidRepresentation
from pymongo.errors import (
    AutoReconnect, ConfigurationError, DocumentTooLarge, ExecutionTimeout, NetworkTimeout,
    OperationFailure, PyMongoError, ServerSelectionTimeoutError)

from .encoding import CODEC_OPTIONS
from .exceptions import SessionBackendError, SessionValueError
from .outage import OutageBreaker, summary, unreachable, verdict
from .server_session import ThreadSessions, dirty, without_sessions

log = logging.getLogger(__name__)

#: A pymongo Collection, or the embedded backend's (mongomock): typed loosely.
Collection = Any
T = TypeVar('T')

#: Server error codes meaning "the resulting document would be too large".
_TOO_LARGE_CODES = frozenset((10334, 17419, 17420))
#: BadValue, DollarPrefixedFieldName, EmptyFieldName, DottedFieldName: the
#: server refused a value (a nested key it does not accept), not an outage.
_REFUSED_VALUE_CODES = frozenset((2, 52, 56, 57))
#: The server errors after which a read is tried once more (not primary, shutting
#: down, host unreachable...): those of MongoDB's retryable reads specification.
_RETRYABLE_READ_CODES = frozenset((6, 7, 89, 91, 134, 189, 262, 9001, 10058, 10107, 11600,
                                   11602, 13435, 13436))
#: mongomock stores Python objects and refuses native UUIDs; it gets the
#: decoded BSON of each document, with UUIDs as the BSON binaries they are.
_EMBEDDED_CODEC_OPTIONS = CODEC_OPTIONS.with_options(
    uuid_representation=UuidRepresentation.UNSPECIFIED)
#: mongomock is not thread-safe (one thread's find iterates a dict that
#: another's insert changes): every call to the embedded backend holds this
#: lock, in every connection of the process, so a threaded WSGI server
#: (waitress) is safe on ``mongomock://`` too.
_EMBEDDED_LOCK = threading.RLock()


def _read_once_more_on_failover(retry: bool, run: Callable[..., T], *args: Any,
                                **kwargs: Any) -> T:
    """``run(*args, **kwargs)``, run again once (if ``retry``) when a retryable read may
    succeed then. If no server can be found for the second try, the first error is raised,
    as pymongo does."""
    try:
        return run(*args, **kwargs)
    except (AutoReconnect, OperationFailure) as exc:
        if not retry or isinstance(exc, ServerSelectionTimeoutError) or exc.timeout:
            raise   # no server, or a server that did not answer in time: no second wait
        if isinstance(exc, OperationFailure) and exc.code not in _RETRYABLE_READ_CODES:
            raise
        first = exc
    log.debug('trying a read once more after: %s', first)
    try:
        return run(*args, **kwargs)
    except ServerSelectionTimeoutError:
        raise first from None


def _all_of(operation: Callable[..., Iterable[T]], *args: Any, **kwargs: Any) -> list[T]:
    return list(operation(*args, **kwargs))


class RefusedValue(SessionValueError):
    """The server refused a value that other servers store (see :func:`named_refusal`)."""


def named_refusal(values: Mapping[str, Any], exc: RefusedValue) -> SessionValueError:
    """The server's refusal of a value, naming the session key(s) it may be
    (raise it ``from exc.__cause__``)."""
    keys = ', '.join(repr(key) for key in values)
    return SessionValueError('session key %s holds a value this server refuses: %s'
                             % (keys, exc) if len(values) == 1 else
                             'one of the session keys %s holds a value this server '
                             'refuses: %s' % (keys, exc))


def mapped_error(what: str, exc: PyMongoError) -> Exception:
    """This package's error for pymongo's ``exc``: an outage, or a value refused."""
    if unreachable(exc) or isinstance(exc, (NetworkTimeout, ExecutionTimeout)):
        # One line: the topology pymongo describes is logged at DEBUG (outage.py).
        return SessionBackendError('%s: could not %s: %s' % (verdict(exc), what, summary(exc)))
    code = exc.code if isinstance(exc, OperationFailure) else None
    if isinstance(exc, DocumentTooLarge) or code in _TOO_LARGE_CODES:
        return SessionValueError(
            'the session is larger than MongoDB can store in one document: %s' % exc)
    if code in _REFUSED_VALUE_CODES:
        details = exc.details if isinstance(exc, OperationFailure) else None
        return RefusedValue((details or {}).get('errmsg') or str(exc))
    return SessionBackendError('could not %s: %s' % (what, exc))


def bounds_every_call(client_options: Any, operation_timeout: float | None) -> bool:
    """Whether a client with these options bounds every call by ``operation_timeout`` itself.

    It does with a client-side operation timeout (``timeoutMS``) equal to
    it, or with each of its waits bounded by at most that long: for an
    answer (``socketTimeoutMS``), a new connection (``connectTimeoutMS``), a
    server (``serverSelectionTimeoutMS``) and a free connection of its pool
    (``waitQueueTimeoutMS``), as :func:`client_limits` sets them. A call
    then costs no timeout of its own (``pymongo.timeout()`` costs about
    10 µs of CPU a call); otherwise :meth:`Connection.call` sets one around
    each call.
    """
    if client_options is None or operation_timeout is None:
        return operation_timeout is None
    if client_options.timeout is not None:
        return bool(client_options.timeout == operation_timeout)
    waits = (wait_of(client_options) for wait_of in CLIENT_LIMITS.values())
    return all(wait is not None and wait <= operation_timeout for wait in waits)


#: The client options that bound each of its waits, and where a client's
#: options say how long that is, in seconds (see :func:`bounds_every_call`).
CLIENT_LIMITS: dict[str, Callable[[Any], float | None]] = {
    'socketTimeoutMS': lambda options: options.pool_options.socket_timeout,
    'connectTimeoutMS': lambda options: options.pool_options.connect_timeout,
    'serverSelectionTimeoutMS': lambda options: options.server_selection_timeout,
    'waitQueueTimeoutMS': lambda options: options.pool_options.wait_queue_timeout,
}


def client_limits(operation_timeout: float | None, named: Iterable[str]) -> dict[str, float]:
    """The client options that bound each wait by ``operation_timeout`` (milliseconds).

    ``named`` are the client options the configuration names already
    (any case): those are kept, and a client-side operation timeout
    (``timeoutMS``) among them replaces all of these.
    """
    named = {name.lower() for name in named}
    if operation_timeout is None or 'timeoutms' in named:
        return {}
    return {name: operation_timeout * 1000 for name in CLIENT_LIMITS
            if name.lower() not in named}


class ProcessLocalCollection:
    """A callable that creates a MongoClient and returns the sessions collection.

    :class:`Connection` calls it on first use in each process, never at
    import or configuration time, and again in a forked child (``gunicorn
    --preload``), which must not share its parent's sockets.
    """

    def __init__(self, db_name: str, coll_name: str, client_args: Iterable[Any] = (),
                 client_kwargs: Mapping[str, Any] | None = None,
                 client_class: Callable[..., Any] = pymongo.MongoClient) -> None:
        self.client_class = client_class
        self.db_name = db_name
        self.coll_name = coll_name
        #: The arguments the client is made with (host, port...).
        self.client_args = tuple(client_args)
        #: The keyword arguments the client is made with (credentials, timeoutMS...).
        self.client_kwargs = dict(client_kwargs or {})
        self._client: Any = None

    @property
    def connected(self) -> bool:
        """Whether this process has made its client yet."""
        return self._client is not None

    def __call__(self) -> Collection:
        self._client = self.client_class(*self.client_args, **self.client_kwargs)
        return self._client[self.db_name][self.coll_name]

    def close(self) -> None:
        """Close the client this process created, if any."""
        client, self._client = self._client, None
        if client is not None:
            client.close()


class Connection:
    """The sessions collection of this process, and the calls made to it.

    ``collection`` is a pymongo :class:`~pymongo.collection.Collection`, or a
    callable returning one (see :class:`ProcessLocalCollection`).
    ``operation_timeout`` bounds every wait of every call, in seconds: the
    client's own limits where they bound it (see :func:`bounds_every_call`),
    else ``pymongo.timeout()`` around each call; None leaves the client's
    own limits.
    ``outage_probe_interval`` is the outage breaker's (see
    :mod:`pyramid_mongosession.outage`). ``first_use(collection)``
    callbacks run once per process, before the collection is first used
    (the indexes are created so).
    """

    def __init__(self, collection: Any, operation_timeout: float | None = 5.0,
                 outage_probe_interval: float = 5.0) -> None:
        if operation_timeout is not None and operation_timeout <= 0:
            raise ValueError('operation_timeout must be a positive number of seconds or None')
        #: The collection as given: a Collection, or the callable that makes one.
        self.source = collection
        if hasattr(collection, 'find_one'):  # a Collection (callable itself, but not a getter)
            self._get_collection: Callable[[], Collection] = lambda: collection
        else:
            self._get_collection = collection
        self.operation_timeout = operation_timeout
        self.first_use: list[Callable[[Collection], object]] = []
        self._lock = threading.Lock()
        # (pid, collection, its threads' server sessions), published in one assignment
        self._process: tuple[int, Collection, ThreadSessions | None] | None = None
        self._ready = False
        self._embedded = False
        self._client_bounded = False   # whether the client bounds every call itself
        self._reader: tuple[Any, ...] | None = None   # see find_one
        self._breaker = OutageBreaker(outage_probe_interval)
        self._sessions = True   # False once the server said it has no sessions

    @property
    def embedded(self) -> bool:
        """Whether the sessions are kept by the embedded backend (mongomock)."""
        process = self._process
        if process is None or process[0] != os.getpid():
            self.process_collection()   # connect: the collection says
        return self._embedded

    def collection(self) -> Collection:
        """This process's sessions collection, the ``first_use`` callbacks run."""
        process = self._process
        if self._ready and process is not None and process[0] == os.getpid():
            return process[1]   # (every call but a process's first)
        collection = self.process_collection()
        if not self._ready:
            for prepare in self.first_use:
                prepare(collection)
            self._ready = True
        return collection

    def process_collection(self) -> Collection:
        """This process's sessions collection, as it is (nothing is created in it)."""
        process = self._process
        if process is None or process[0] != os.getpid():
            with self._lock:
                process = self._process
                if process is None or process[0] != os.getpid():
                    collection = self._connect()
                    process = self._process = (os.getpid(), collection,
                                               self._thread_sessions(collection))
                    self._ready = False
        return process[1]

    def _thread_sessions(self, collection: Collection) -> ThreadSessions | None:
        """The store of this process's threads' server sessions; None for the embedded
        backend, and for unacknowledged writes (``w=0``), which pymongo sends in no
        session a caller gives."""
        concern = getattr(collection, 'write_concern', None)
        if self._embedded or not getattr(concern, 'acknowledged', True):
            return None
        return ThreadSessions(collection.database.client)

    def _connect(self) -> Collection:
        try:   # a MongoClient connects in the background: nothing here waits
            source = self._get_collection()
        except PyMongoError as exc:
            raise mapped_error('connect to MongoDB', exc) from exc
        self._client_bounded = bounds_every_call(
            getattr(getattr(source.database, 'client', None), 'options', None),
            self.operation_timeout)
        try:
            collection = source.with_options(codec_options=CODEC_OPTIONS)
            self._embedded = False
        except NotImplementedError:
            # mongomock (the embedded backend) keeps Python objects:
            # documents pass through BSON on their way (see sent).
            collection = source
            self._embedded = True
        return collection

    def call(self, what: str, operation: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one database call, bounded by ``operation_timeout``; map its errors.

        ``what`` says what the call does, for the error message ("store a
        session"). While the server is known to be unreachable, fail at once.
        ``operation`` is given the thread's server session as ``session``
        (not on the embedded backend): a pymongo method, or something that
        hands it on to one.
        """
        breaker = self._breaker
        # While the server answers, the breaker has nothing to say or record.
        probe = breaker.admit() if breaker.down is not None else False
        process, session = self._process, None
        threads = process[2] if process is not None else None
        try:
            if self._embedded:
                with _EMBEDDED_LOCK:   # see _EMBEDDED_LOCK
                    result = operation(*args, **kwargs)
            else:
                session = threads.current(self._sessions) if threads is not None else None
                result = self._send(operation, session, args, kwargs)
        except BaseException as exc:
            if session is not None and self._failed_in(
                    threads, session, exc):   # type: ignore[arg-type]
                breaker.abandon(probe)
                return self.call(what, operation, *args, **kwargs)
            if not isinstance(exc, PyMongoError):
                breaker.abandon(probe)
                raise
            breaker.record(probe, exc)
            raise mapped_error(what, exc) from exc
        if session is not None and dirty(session):
            threads.give_up()   # type: ignore[union-attr]
        if breaker.down is not None:
            breaker.record(probe)
        return result

    def _send(self, operation: Callable[..., T], session: Any, args: tuple[Any, ...],
              kwargs: dict[str, Any]) -> T:
        if self._client_bounded:   # the client bounds every wait itself
            return operation(*args, session=session, **kwargs)
        with pymongo.timeout(self.operation_timeout):
            return operation(*args, session=session, **kwargs)

    def _failed_in(self, threads: ThreadSessions, session: Any, exc: BaseException) -> bool:
        """End the thread's session after a failed call. True if the failure says the
        server has no sessions (refused before anything was sent): from then on, calls
        go without one, and this one is tried again so."""
        threads.give_up()
        if isinstance(exc, ConfigurationError) and without_sessions(session):
            log.info('the server has no sessions: calls go without one')
            self._sessions = False
            return True
        return False

    def documents(self, what: str, operation: Callable[..., Iterable[Any]], *args: Any,
                  **kwargs: Any) -> list[Any]:
        """:meth:`call` of an operation that returns a cursor (``find``, ``aggregate``):
        every document it yields, all read within the call."""
        return self.call(what, _all_of, operation, *args, **kwargs)

    def find_one(self, what: str, query: Mapping[str, Any],
                 projection: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        """The first document matching ``query``, or None: :meth:`call` of one ``find``.

        Sent as the command itself, which costs the client about 17 µs of CPU
        less than :meth:`Collection.find_one` (no cursor is made), with what
        that method would add: the collection's read preference and read
        concern, and one more try after a network error or a retryable
        server error, as pymongo retries reads (unless the client says
        ``retryReads=false``). A timeout is not tried again: a hung server
        fails the read after one wait.
        """
        collection = self.collection()
        if self._embedded:
            found: dict[str, Any] | None = self.call(what, collection.find_one, query,
                                                     projection)
            return found
        reader = self._reader
        if reader is None or reader[0] is not collection:
            # How this collection reads, asked once rather than at every read.
            database = collection.database
            reader = self._reader = (
                collection, functools.partial(database.command,
                                              read_preference=collection.read_preference,
                                              codec_options=collection.codec_options),
                collection.name, collection.read_concern.document,
                bool(getattr(database.client.options, 'retry_reads', True)))
        _, run, name, read_concern, retry = reader
        command: dict[str, Any] = {'find': name, 'filter': query, 'limit': 1,
                                   'singleBatch': True}
        if projection is not None:
            command['projection'] = projection
        if read_concern:
            command['readConcern'] = read_concern
        reply = self.call(what, _read_once_more_on_failover, retry, run, command)
        batch = reply['cursor']['firstBatch']
        document: dict[str, Any] | None = batch[0] if batch else None
        return document

    def call_long(self, what: str, seconds: float, operation: Callable[..., T],
                  *args: Any, **kwargs: Any) -> T:
        """A call that may take up to ``seconds``, outside the request path's outage handling."""
        try:
            with pymongo.timeout(seconds), (_EMBEDDED_LOCK if self._embedded
                                            else contextlib.nullcontext()):
                return operation(*args, **kwargs)
        except PyMongoError as exc:
            raise mapped_error(what, exc) from exc

    def sent(self, document: dict[str, Any]) -> dict[str, Any]:
        """``document`` as the server will get it (mongomock: through BSON, as a server would)."""
        if not self._embedded:
            return document
        return bson.decode(bson.encode(document, codec_options=CODEC_OPTIONS),
                           codec_options=_EMBEDDED_CODEC_OPTIONS)

    def received(self, document: dict[str, Any]) -> dict[str, Any]:
        """``document`` as a server would have sent it (mongomock: through BSON)."""
        if not self._embedded:
            return document
        return bson.decode(bson.encode(document, codec_options=_EMBEDDED_CODEC_OPTIONS),
                           codec_options=CODEC_OPTIONS)

    def namespace(self) -> str:
        """``database.collection``: where the sessions are kept."""
        return str(self.process_collection().full_name)

    def close(self) -> None:
        """Close the MongoClient this connection created, if it created one."""
        process, self._process = self._process, None
        if process is not None and process[2] is not None:
            # Back to pymongo's pool first, so that closing the client ends them.
            process[2].end_all()
        close = getattr(self._get_collection, 'close', None)
        if close is not None:
            close()
