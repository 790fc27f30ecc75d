import json
import os
import threading
import uuid

import pymongo
import pytest
import webtest
from pymongo import monitoring
from pyramid.config import Configurator
from pyramid.response import Response

from pyramid_mongosession import MongoSessionFactory

from . import probes, servers

SECRET = 'test secret, long enough to be taken seriously: 0123456789abcdef'
#: Sessions, as opposed to the tombstones of ids that change_id retired (rotation_grace).
LIVE = {'retired': {'$exists': False}}


class CommandLog(monitoring.CommandListener):
    """Records every command a client sends (pymongo command monitoring)."""

    def __init__(self):
        self.events = []
        self._lock = threading.Lock()

    def started(self, event):
        with self._lock:
            self.events.append(event)

    def succeeded(self, event):
        pass

    def failed(self, event):
        pass

    def names(self, database):
        with self._lock:
            return [e.command_name for e in self.events if e.database_name == database]

    def clear(self):
        with self._lock:
            self.events.clear()


def not_available(message):
    """Fail under CI, where every test must run; skip elsewhere."""
    if os.environ.get('CI'):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope='session')
def mongodb_url():
    try:
        with servers.mongodb_url() as url:
            yield url
    except servers.NoServer as exc:
        not_available('server-backed tests cannot run: %s' % exc)


@pytest.fixture(scope='session')
def command_log():
    return CommandLog()


@pytest.fixture(scope='session')
def client(mongodb_url, command_log):
    client = pymongo.MongoClient(mongodb_url, event_listeners=[command_log],
                                 serverSelectionTimeoutMS=5000)
    yield client
    client.close()


@pytest.fixture
def database(client):
    """A database of this test's own, dropped afterwards."""
    name = 'test_%s' % uuid.uuid4().hex[:16]
    yield client[name]
    client.drop_database(name)


@pytest.fixture
def collection(database):
    return database['sessions']


@pytest.fixture(scope='session')
def mongo_java_server_url():
    """mongo-java-server, started for the tests that need what the main server lacks."""
    try:
        server = servers.start_mongo_java_server()
    except servers.NoServer as exc:
        not_available('mongo-java-server cannot run: %s' % exc)
    yield server.url
    server.close()


@pytest.fixture(scope='session')
def probed():
    """``probed(url)``: what the server at ``url`` can do (see tests/probes.py),
    probed once per test session."""
    found = {}

    def capabilities(url):
        if url not in found:
            found[url] = probes.probe(url)
        return found[url]
    return capabilities


# The servers the suite can use, by fixture name, in order of preference: the
# main server (MONGODB_URL, a mongod on PATH or FerretDB), then mongo-java-server.
PROVISIONED = ('mongodb_url', 'mongo_java_server_url')


def server_with(request, has, what):
    """The URL of the first provisioned server whose probe says it ``has`` a capability."""
    probed = request.getfixturevalue('probed')
    for name in PROVISIONED:
        url = request.getfixturevalue(name)
        if has(probed(url)):
            return url
    not_available('no server the suite can start has %s' % what)


@pytest.fixture(scope='session')
def atomic_server_url(request):
    """A server that applies each update of one document atomically, under concurrent
    connections: the main server if it does (MongoDB), else mongo-java-server."""
    return server_with(request, lambda found: found.atomic_updates,
                       'atomic single-document updates')


@pytest.fixture(scope='session')
def ttl_server_url(request):
    """A server that accepts and keeps a TTL index on ``expires``."""
    return server_with(request, lambda found: found.ttl_index in ('accepted', 'expires'),
                       'TTL indexes')


@pytest.fixture(scope='session')
def serial_client(mongodb_url):
    """A client of the main server with one connection, so that the server applies
    its commands one at a time.

    MongoDB applies every single-document update atomically. FerretDB 1.x does
    not: it reads, modifies and writes back a document without isolation, so
    two connections updating different fields of one document can lose one
    update (see tests/probes.py). One connection gets MongoDB's per-command
    atomicity from any server; the races the concurrency tests test, between
    one request's load and its save, span many commands and are not
    serialised by it.
    """
    client = pymongo.MongoClient(mongodb_url, maxPoolSize=1, serverSelectionTimeoutMS=5000)
    yield client
    client.close()


@pytest.fixture(scope='session')
def pooled_atomic_client(atomic_server_url):
    """A client with a default connection pool, of a server whose updates are atomic."""
    client = pymongo.MongoClient(atomic_server_url, serverSelectionTimeoutMS=5000)
    yield client
    client.close()


@pytest.fixture(params=['one-connection', 'atomic-server'])
def atomic_collection(request):
    """A collection on which each command is applied atomically, in two ways:

    ``one-connection``: the main server, through ``serial_client``;
    ``atomic-server``: a server whose probe found its updates atomic
    (``atomic_server_url``), through a default connection pool, so that
    concurrent requests reach the server concurrently.
    """
    if request.param == 'one-connection':
        database = request.getfixturevalue('database')
        return request.getfixturevalue('serial_client')[database.name]['sessions']
    client = request.getfixturevalue('pooled_atomic_client')
    name = 'test_%s' % uuid.uuid4().hex[:16]
    request.addfinalizer(lambda: client.drop_database(name))
    return client[name]['sessions']


@pytest.fixture
def round_trips(database, command_log):
    """Call it to get the commands sent to this test's database since the last call."""
    command_log.clear()

    def since_last_call():
        names = command_log.names(database.name)
        command_log.clear()
        return names
    return since_last_call


def session_view(request):
    """Runs the session operations named in the query string, in order.

    ``set=key:json``, ``append=key:json``, ``del=key``, ``read=key``,
    ``opt=flag``, ``invalidate=``, ``flash=msg``; answers with the session's
    id, newness and data as JSON, or with ``blind`` just "ok", so that a
    request that only writes does not read the session.
    """
    session = request.session
    for op, arg in request.GET.items():
        if op == 'set':
            key, value = arg.split(':', 1)
            session[key] = json.loads(value)
        elif op == 'append':
            key, value = arg.split(':', 1)
            session[key].append(json.loads(value))
        elif op == 'del':
            del session[arg]
        elif op == 'read':
            session.get(arg)
        elif op == 'opt':
            session.options[arg] = True
        elif op == 'invalidate':
            session.invalidate()
        elif op == 'flash':
            session.flash(arg)
    if 'blind' in request.GET:
        return Response('ok')
    body = {'id': session.options['id'], 'new': session.new}
    if 'quiet' not in request.GET:
        body['data'] = dict(session.items())
    return Response(json=body)


def make_config(factory):
    config = Configurator()
    config.set_session_factory(factory)
    config.add_route('untouched', '/untouched')
    config.add_view(lambda request: Response('ok'), route_name='untouched')
    config.add_route('session', '/session')
    config.add_view(session_view, route_name='session')
    return config


@pytest.fixture
def make_app(collection):
    def make(**options):
        factory = MongoSessionFactory(collection, SECRET, **options)
        return webtest.TestApp(make_config(factory).make_wsgi_app())
    return make


@pytest.fixture
def app(make_app):
    return make_app()


def pytest_sessionfinish(session, exitstatus):
    # Under CI a skipped test is a test that did not run: fail the run.
    reporter = session.config.pluginmanager.get_plugin('terminalreporter')
    skipped = reporter.stats.get('skipped') if reporter else None
    if os.environ.get('CI') and skipped and exitstatus == 0:
        reporter.write_line('CI: %d skipped test(s) count as failures' % len(skipped), red=True)
        session.exitstatus = 1


@pytest.fixture(params=['server', 'embedded'])
def backend_collection(request):
    """The sessions collection on the real server, then on the embedded backend."""
    if request.param == 'server':
        return request.getfixturevalue('collection')
    import mongomock
    return mongomock.MongoClient()['test']['sessions']
