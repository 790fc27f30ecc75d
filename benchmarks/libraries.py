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
"""
import threading

import bson
import pymongo
from pymongo import monitoring

SECRET = 'benchmark secret, long enough to be taken seriously: 0123456789abcdef'
#: Idle timeout, in seconds, given to every library that has one.
TIMEOUT = 1200


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


class Library:
    """The adapter interface.

    ``factory(traffic)`` returns a Pyramid session factory (``traffic`` is
    None for the timed runs); ``rotate(session)`` is what a login does to the
    session id; ``unsupported`` names scenarios the library cannot run, with
    the reason.
    """

    name = None
    unsupported = {}
    #: Modules the adapter imports (installed by the ``bench`` extra).
    modules = ()
    #: 'mongodb' or 'redis' when the library needs that server.
    server = None

    def start(self, servers):
        """Connect to what ``servers`` (``{'mongodb': url, 'redis': port}``) provides."""

    def factory(self, traffic=None):
        raise NotImplementedError

    def rotate(self, session):
        session.invalidate()

    def reset(self):
        """Remove every stored session (before each measurement)."""

    def close(self):
        """Close clients and remove the library's data from the server."""


class NoSession(Library):
    """Baseline: the same views, with a throw-away dict instead of a session."""

    name = 'no-session'
    unsupported = {'concurrency': 'nothing is stored, so there is nothing to lose'}

    def factory(self, traffic=None):
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

    def factory(self, traffic=None):
        from pyramid.session import SignedCookieSessionFactory
        return SignedCookieSessionFactory(SECRET, timeout=TIMEOUT)


class _MongoLibrary(Library):
    server = 'mongodb'
    database = None

    def start(self, servers):
        self.url = servers['mongodb']
        # FerretDB 1.x applies one update as a read and a write: concurrent
        # commands on one document can lose each other's changes. One
        # connection per client serialises commands, as MongoDB applies them.
        self.client_options = {'maxPoolSize': 1} if servers.get('ferretdb') else {}
        self._clients = []
        self._admin = self.client()

    def client(self, traffic=None):
        listeners = [_MongoCounter(traffic, self.database)] if traffic is not None else []
        client = pymongo.MongoClient(url_with_database(self.url, self.database),
                                     event_listeners=listeners, **self.client_options)
        self._clients.append(client)
        return client

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

    def factory(self, traffic=None):
        from pyramid_mongosession import MongoSessionFactory
        collection = self.client(traffic)[self.database]['sessions']
        return MongoSessionFactory(collection, SECRET, timeout=TIMEOUT)

    def rotate(self, session):
        session.options['change_id'] = True


class BeakerSessions(_MongoLibrary):
    """pyramid_beaker with Beaker's own MongoDB backend (``ext:mongodb``)."""

    name = 'pyramid_beaker'
    database = 'bench_pyramid_beaker'
    modules = ('pyramid_beaker', 'beaker')

    def factory(self, traffic=None):
        from pyramid_beaker import BeakerSessionFactoryConfig
        # Beaker accepts a MongoClient as its url; the client names the database.
        return BeakerSessionFactoryConfig(type='ext:mongodb', url=self.client(traffic),
                                          secret=SECRET, key='session', timeout=TIMEOUT)


class RedisSessions(Library):
    """pyramid_session_redis, with its defaults."""

    name = 'pyramid_session_redis'
    server = 'redis'
    modules = ('pyramid_session_redis', 'redis')

    def start(self, servers):
        import redis
        self.port = servers['redis']
        self._pools = []
        self._admin = redis.Redis(host='127.0.0.1', port=self.port)

    def reset(self):
        self._admin.flushdb()

    def factory(self, traffic=None):
        import redis
        from pyramid_session_redis import RedisSessionFactory
        kwargs = {'host': '127.0.0.1', 'port': self.port}
        if traffic is not None:
            kwargs.update(connection_class=_counting_connection_class(), traffic=traffic)
        pool = redis.ConnectionPool(**kwargs)
        self._pools.append(pool)
        return RedisSessionFactory(SECRET, timeout=TIMEOUT, redis_connection_pool=pool)

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
