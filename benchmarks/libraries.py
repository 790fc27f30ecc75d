"""One small adapter per session library: how to build its session factory.

Every adapter builds two kinds of factory: a plain one, for the timed runs,
and one whose store client reports each round trip and the bytes it sends to
a :class:`Traffic` counter, for the counted runs. Instrumentation is kept out
of the timed runs so that it costs no library any CPU there.

Round trips and bytes are counted on the client side, alike for every store:

- MongoDB (pymongo command monitoring): one ``CommandStartedEvent`` is one
  round trip; its size is the BSON size of the command document (documents
  and updates included). Only commands on the library's own database count:
  connection handshakes and server monitoring run on ``admin``.
- Redis: one ``send_packed_command`` call is one round trip (a MULTI/EXEC
  pipeline is sent at once: one round trip); its size is the RESP bytes sent.
  The connection handshake (HELLO, CLIENT SETINFO...) is not counted.

Every store client has its library's default connection pool, unless a
scenario asks for ``pool_size`` (see ``run.py``: the concurrency scenario on
a server that does not apply each update atomically).
"""
import re
import secrets
import threading

import bson
import pymongo
from pymongo import monitoring

#: The name of pyramid_mongosession's driver-stubbed runs (CPU only).
STUBBED = 'pyramid_mongosession, driver stubbed'
SECRET = 'benchmark secret, long enough to be taken seriously: 0123456789abcdef'
#: Idle timeout, in seconds, given to every library that has one.
TIMEOUT = 1200
#: pyramid_session_redis as its documentation describes for read-heavy
#: production traffic ("Feature - Timeout Triggers"): the expiry is kept in
#: the payload and moved only once ``timeout_trigger`` seconds of the
#: timeout have passed, so a read is a single GET. Its timeline there has no
#: EXPIRE before the trigger; pyramid_session_redis 1.8 sends none only with
#: ``set_redis_ttl=False`` (with its default, True, every read is followed by
#: an EXPIRE), which its documentation pairs with Redis run as an LRU cache:
#: so does ``redis_server.py``. Half the timeout, as in its example.
REDIS_TIMEOUT_TRIGGER = TIMEOUT // 2
REDIS_OPTIONS = {'timeout': TIMEOUT, 'timeout_trigger': REDIS_TIMEOUT_TRIGGER,
                 'set_redis_ttl': False}
#: The options of pyramid_mongosession's MongoClient in the benchmark (and of
#: the plain client that measures single commands): every wait bounded, as
#: the documentation recommends for a client handed to MongoSessionFactory.
CLIENT_TIMEOUTS = {'socketTimeoutMS': 5000, 'connectTimeoutMS': 5000,
                   'serverSelectionTimeoutMS': 5000, 'waitQueueTimeoutMS': 5000}
#: Documents (or keys) sent to the store at once when it is populated.
POPULATE_BATCH = 1000


class Traffic:
    """Round trips and bytes sent to a store, counted from any thread."""

    def __init__(self):
        self._lock = threading.Lock()
        self.round_trips = 0
        self.bytes = 0

    def add(self, size):
        with self._lock:
            self.round_trips += 1
            self.bytes += size

    def snapshot(self):
        with self._lock:
            return self.round_trips, self.bytes


class _MongoCounter(monitoring.CommandListener):
    def __init__(self, traffic, database):
        self.traffic = traffic
        self.database = database

    def started(self, event):
        if event.database_name == self.database:
            self.traffic.add(len(bson.encode(event.command)))

    def succeeded(self, event):
        pass

    def failed(self, event):
        pass


def url_with_database(url, database):
    """``url`` with its database (path) replaced by ``database``, options kept."""
    scheme, rest = url.split('://', 1)
    hosts, slash, tail = rest.partition('/')
    if slash:
        query = tail.partition('?')[2]
    else:
        hosts, _, query = hosts.partition('?')
    return '%s://%s/%s%s' % (scheme, hosts, database, '?' + query if query else '')


def fresh_id(template):
    """An id shaped like ``template``: each run of 16 or more hex digits redrawn at random."""
    def redraw(match):
        size = len(match.group())
        return secrets.token_hex((size + 1) // 2)[:size]
    fresh, count = re.subn(r'[0-9a-f]{16,}', redraw, template)
    if not count:
        raise ValueError('no random part found in the stored id %r' % (template,))
    return fresh


class Library:
    """The adapter interface.

    ``factory(traffic, pool_size)`` returns a Pyramid session factory
    (``traffic`` is None for the timed runs; ``pool_size`` None is the store
    client's default connection pool); ``rotate(session)`` is what a login
    does to the session id, ``logout(session)`` what a logout does;
    ``unsupported`` names scenarios the library cannot run, with the reason.
    """

    name = None
    unsupported = {}
    #: Modules the adapter imports (installed by the ``bench`` extra).
    modules = ()
    #: 'mongodb' or 'redis' when the library needs that server.
    server = None
    #: Why the library has no populated-store scenarios (None: it has them).
    no_store = 'it keeps nothing on a server'

    def start(self, servers):
        """Connect to what ``servers`` (``{'mongodb': url, 'redis': port}``) provides."""

    def factory(self, traffic=None, pool_size=None):
        raise NotImplementedError

    def rotate(self, session):
        session.invalidate()

    def logout(self, session):
        session.invalidate()

    def reset(self):
        """Remove every stored session (before each measurement)."""

    def stored(self):
        """How many sessions the store holds."""
        return 0

    def copy_sessions(self, count):
        """Store ``count`` copies of a stored session, each under a fresh id."""
        raise NotImplementedError

    def close(self):
        """Close clients and remove the library's data from the server."""


class NoSession(Library):
    """Baseline: the same views, with a throw-away dict instead of a session."""

    name = 'no-session'
    unsupported = {'concurrency': 'nothing is stored, so there is nothing to lose'}

    def factory(self, traffic=None, pool_size=None):
        return _NullSession

    def rotate(self, session):
        pass


class _NullSession(dict):
    new = True
    created = 0

    def __init__(self, request):
        dict.__init__(self)
        self.options = {}

    def invalidate(self):
        self.clear()

    def changed(self):
        pass


class CookieSessions(Library):
    """Pyramid's own SignedCookieSessionFactory: the data lives in the cookie."""

    name = 'cookie'
    unsupported = {'write-one-key-100kb':
                   'a 100 KB session does not fit in a cookie (browsers keep 4 KB)'}

    def factory(self, traffic=None, pool_size=None):
        from pyramid.session import SignedCookieSessionFactory
        return SignedCookieSessionFactory(SECRET, timeout=TIMEOUT)


class _MongoLibrary(Library):
    server = 'mongodb'
    database = None
    #: The collection that holds the library's sessions.
    collection = None
    no_store = None

    def start(self, servers):
        self.url = servers['mongodb']
        self._clients = []
        self._admin = self.client()

    def client(self, traffic=None, pool_size=None, **options):
        """A MongoClient: pymongo's default pool, or ``pool_size`` connections at most;
        ``options``: more of MongoClient's keyword arguments."""
        listeners = [_MongoCounter(traffic, self.database)] if traffic is not None else []
        if pool_size is not None:
            options['maxPoolSize'] = pool_size
        client = pymongo.MongoClient(url_with_database(self.url, self.database),
                                     event_listeners=listeners, **options)
        self._clients.append(client)
        return client

    def sessions_collection(self):
        """The collection of the library's sessions, through an uninstrumented client."""
        return self._admin[self.database][self.collection]

    def stored(self):
        return self.sessions_collection().estimated_document_count()

    def copy_sessions(self, count):
        collection = self.sessions_collection()
        template = collection.find_one()
        if template is None:
            raise RuntimeError('%s: no stored session to copy' % self.name)
        while count > 0:
            batch = [dict(template, _id=fresh_id(template['_id']))
                     for _ in range(min(count, POPULATE_BATCH))]
            collection.insert_many(batch, ordered=False)
            count -= len(batch)

    def reset(self):
        # Emptied, indexes kept: FerretDB's cost per command grows with the
        # collection's size (it scans where MongoDB uses the _id index), so
        # each measurement starts from the same, empty collection.
        database = self._admin[self.database]
        for name in database.list_collection_names():
            database[name].delete_many({})

    def close(self):
        if self._clients:   # the first one is self._admin
            self._admin.drop_database(self.database)
        for client in self._clients:
            client.close()
        self._clients = []


class MongoSessions(_MongoLibrary):
    """pyramid_mongosession, with its defaults."""

    name = 'pyramid_mongosession'
    database = 'bench_pyramid_mongosession'
    collection = 'sessions'

    def factory(self, traffic=None, pool_size=None):
        from pyramid_mongosession import MongoSessionFactory
        # Bounded per socket operation, as the documentation recommends for a
        # client handed to MongoSessionFactory: no per-call timeout is added.
        client = self.client(traffic, pool_size, **CLIENT_TIMEOUTS)
        return MongoSessionFactory(client[self.database][self.collection], SECRET,
                                   timeout=TIMEOUT)

    def rotate(self, session):
        session.options['change_id'] = True

    def logout(self, session):
        session.options['expire'] = True


class StubbedMongoSessions(Library):
    """pyramid_mongosession with its collection replaced by :mod:`stub_collection`.

    Only for the CPU runs: no pymongo code runs, so the CPU per request,
    less no-session's, is the library's own code (see ``stub_collection.py``).
    """

    name = STUBBED
    unsupported = {'concurrency': 'the driver-stubbed column measures single requests only'}
    no_store = 'the stub is a dict: a lookup costs the same at any size'

    #: Whether pyramid_mongosession wrapped each call in pymongo.timeout()
    #: (None: unknown), as it does unless its client bounds every call itself.
    per_call_timeout = None

    def start(self, servers):
        self._stubs = []

    def factory(self, traffic=None, pool_size=None):
        from pyramid_mongosession import MongoSessionFactory
        from stub_collection import StubCollection
        stub = StubCollection()
        self._stubs.append(stub)
        factory = MongoSessionFactory(stub, SECRET, timeout=TIMEOUT)
        connection = getattr(factory, 'connection', None)
        if connection is not None:
            if connection.embedded:
                # Its embedded (mongomock) mode takes another request path.
                raise RuntimeError('pyramid_mongosession took the stub collection for its '
                                   'embedded backend: the stubbed figures would not be its own')
            # Whether each call is wrapped in pymongo.timeout(), as for the real
            # client with the same options (the one piece of pymongo that runs).
            try:
                from pyramid_mongosession.connection import bounds_every_call
            except ImportError:   # a version that decides on timeoutMS alone
                bounded = getattr(connection, '_client_timeout', None)
            else:
                bounded = bounds_every_call(stub.database.client.options,
                                            connection.operation_timeout)
            self.per_call_timeout = None if bounded is None else not bounded
        return factory

    def rotate(self, session):
        session.options['change_id'] = True

    def logout(self, session):
        session.options['expire'] = True

    def reset(self):
        for stub in self._stubs:
            stub.drop()

    def stored(self):
        return sum(len(stub.docs) for stub in self._stubs)

    def close(self):
        self._stubs = []


class BeakerSessions(_MongoLibrary):
    """pyramid_beaker with Beaker's own MongoDB backend (``ext:mongodb``)."""

    name = 'pyramid_beaker'
    database = 'bench_pyramid_beaker'
    collection = 'backer_cache'   # sic: beaker.ext.mongodb's name
    modules = ('pyramid_beaker', 'beaker')

    def factory(self, traffic=None, pool_size=None):
        from pyramid_beaker import BeakerSessionFactoryConfig
        # Beaker accepts a MongoClient as its url; the client names the database.
        return BeakerSessionFactoryConfig(type='ext:mongodb', url=self.client(traffic, pool_size),
                                          secret=SECRET, key='session', timeout=TIMEOUT)


class RedisSessions(Library):
    """pyramid_session_redis, with :data:`REDIS_OPTIONS` (its defaults otherwise)."""

    name = 'pyramid_session_redis'
    server = 'redis'
    modules = ('pyramid_session_redis', 'redis')
    no_store = None

    def start(self, servers):
        import redis
        self.port = servers['redis']
        self._pools = []
        self._admin = redis.Redis(host='127.0.0.1', port=self.port)

    def reset(self):
        self._admin.flushdb()

    def stored(self):
        return self._admin.dbsize()

    def copy_sessions(self, count):
        template = self._admin.randomkey()
        if template is None:
            raise RuntimeError('%s: no stored session to copy' % self.name)
        value, ttl = self._admin.get(template), self._admin.pttl(template)
        size = len(template)
        while count > 0:
            pipe = self._admin.pipeline(transaction=False)
            for _ in range(min(count, POPULATE_BATCH)):
                # The library's own ids: URL-safe base64 of random bytes.
                pipe.set(secrets.token_urlsafe(size)[:size], value,
                         px=ttl if ttl > 0 else None)   # no TTL: set_redis_ttl=False
            count -= len(pipe.execute())

    def factory(self, traffic=None, pool_size=None):
        import redis
        from pyramid_session_redis import RedisSessionFactory
        kwargs = {'host': '127.0.0.1', 'port': self.port}
        if pool_size is not None:
            kwargs['max_connections'] = pool_size
        if traffic is not None:
            kwargs.update(connection_class=_counting_connection_class(), traffic=traffic)
        # redis-py's pool, as RedisSessionFactory would make it from a host and port.
        pool = redis.ConnectionPool(**kwargs)
        self._pools.append(pool)
        return RedisSessionFactory(SECRET, redis_connection_pool=pool, **REDIS_OPTIONS)

    def close(self):
        self._admin.flushdb()
        self._admin.close()
        for pool in self._pools:
            pool.disconnect()
        self._pools = []


def _counting_connection_class():
    from redis.connection import Connection

    class CountingConnection(Connection):
        """Counts what it sends, except the connection handshake."""

        def __init__(self, *args, traffic, **kwargs):
            self._traffic = traffic
            self._handshake = False
            super().__init__(*args, **kwargs)

        def _connecting(self, connect, *args, **kwargs):
            self._handshake = True
            try:
                return connect(*args, **kwargs)
            finally:
                self._handshake = False

        def connect(self, *args, **kwargs):
            return self._connecting(super().connect, *args, **kwargs)

        if hasattr(Connection, 'connect_check_health'):
            def connect_check_health(self, *args, **kwargs):
                return self._connecting(super().connect_check_health, *args, **kwargs)

        def send_packed_command(self, command, *args, **kwargs):
            if not self._handshake:
                parts = [command] if isinstance(command, (bytes, str)) else command
                self._traffic.add(sum(len(part) for part in parts))
            return super().send_packed_command(command, *args, **kwargs)

    return CountingConnection


LIBRARIES = [NoSession, CookieSessions, RedisSessions, BeakerSessions, MongoSessions]
OURS = MongoSessions.name
