"""Fixtures of the whole suite: servers, collections, test applications, markers.

Tests that need a MongoDB-compatible server, Chromium or Sphinx are marked
``server``, ``browser`` or ``docs`` here, from the fixtures they use. The rest
need nothing but the test extra (their sessions are kept by the embedded
backend, mongomock, or by no database at all) and run in seconds::

    python3 -m pytest -m "not server and not browser and not docs"
"""
import datetime
import json
import os
import threading
import uuid

import pymongo
import pytest
import webtest
from pymongo import monitoring
from pyramid.config import Configurator
from pyramid.interfaces import ISessionFactory
from pyramid.response import Response

from pyramid_mongosession import MongoSessionFactory

from . import probes, servers

SECRET = 'test secret, long enough to be taken seriously: 0123456789abcdef'
#: Sessions, as opposed to the tombstones of ids that change_id retired (rotation_grace).
LIVE = {'retired': {'$exists': False}}

# -- markers ---------------------------------------------------------------------------

#: The fixtures that provide a MongoDB-compatible server, or something on one.
#: ``mongodb_url``'s dependants (``client``, ``database``, ``collection``,
#: ``app``...) need no entry: a test's fixture closure includes it. The ones
#: here reach a server through ``request.getfixturevalue`` or start their own.
SERVER_FIXTURES = frozenset({
    'mongodb_url', 'mongo_java_server_url', 'atomic_server_url', 'ttl_server_url',
    'atomic_collection', 'own_server',
    'redis_port',   # not MongoDB, but a server process all the same (tests/test_importers.py)
})
#: Each marker, and the fixtures that give it to every test using one of them,
#: directly or through other fixtures. The fixtures parametrised over backends
#: (``backend_collection``, ``backend_settings``) mark their server parameter
#: themselves, with ``pytest.param(..., marks=...)``.
FIXTURE_MARKERS = {
    'server': SERVER_FIXTURES,
    'browser': frozenset({'playwright'}),   # tests/browser: Chromium through Playwright
    'docs': frozenset({'built'}),           # tests/test_docs.py: the Sphinx build
}


def pytest_configure(config):
    # A server built or fetched on first use (minutes) says so while it runs,
    # past the output capture: a silent first run looks hung.
    capture = config.pluginmanager.getplugin('capturemanager')
    if capture is None:
        return

    def say(message):
        with capture.global_and_fixture_disabled():
            servers._say(message)
    servers.say = say


@pytest.hookimpl(tryfirst=True)   # before -m selects by marker
def pytest_collection_modifyitems(config, items):
    for item in items:
        used = set(getattr(item, 'fixturenames', ()))
        for marker, fixtures in FIXTURE_MARKERS.items():
            if used & fixtures:
                item.add_marker(marker)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    # A test that reaches a server without the server marker would run in the
    # fast tier (-m "not server") and need a server there: it fails instead.
    if item.get_closest_marker('server'):
        servers.before_use = None
    else:
        def refuse(what):
            pytest.fail('%s uses %s without the server marker: add the fixture that '
                        'provides it to SERVER_FIXTURES in tests/conftest.py'
                        % (item.nodeid, what), pytrace=False)
        servers.before_use = refuse


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


@pytest.fixture(scope='module')
def own_server():
    """A server process of the test module's own (mongod or FerretDB, as for
    ``mongodb_url``), which its tests may kill, hang and restart."""
    try:
        server = servers.start_server()
    except servers.NoServer as exc:
        not_available('a server of its own cannot run: %s' % exc)
    yield server
    server.close()


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
    """A Configurator with ``factory`` and the views every test app has (see
    :func:`add_common_views`)."""
    config = Configurator()
    config.set_session_factory(factory)
    add_common_views(config)
    return config


def add_common_views(config):
    """``/untouched``, which never looks at the session; ``/session``
    (:func:`session_view`); ``/call`` (:meth:`SessionApp.call`)."""
    config.add_route('untouched', '/untouched')
    config.add_view(lambda request: Response('ok'), route_name='untouched')
    config.add_route('session', '/session')
    config.add_view(session_view, route_name='session')
    config.add_route('call', '/call')
    config.add_view(call_view, route_name='call')


def call_view(request):
    """Runs the callable that :meth:`SessionApp.call` put in the environ."""
    view, outcome = request.environ['tests.call']
    outcome['result'] = view(request)
    return Response('ok')


class SessionApp(webtest.TestApp):
    """A test application (see ``build_app``): a browser with its own cookies."""

    def call(self, view, **kwargs):
        """Run ``view(request)`` in one request; return its result and the response."""
        outcome = {}
        extra_environ = dict(kwargs.pop('extra_environ', {}), **{'tests.call': (view, outcome)})
        response = self.get('/call', extra_environ=extra_environ, **kwargs)
        return outcome['result'], response

    def warmed(self):
        """This browser after its store's one-time index creation, with an empty cookie jar."""
        self.get('/session?set=warm:1')
        self.reset()
        return self

    def visitor(self, cookie=None, name='session'):
        """Another browser of the same application, holding session cookie ``cookie``."""
        other = type(self)(self.app)
        if cookie is not None:
            other.set_cookie(name, cookie)
        return other

    @property
    def session_factory(self):
        return self.app.registry.queryUtility(ISessionFactory)


def factory_for(collection, **options):
    """A :class:`MongoSessionFactory` on ``collection``: its ``store``, ``maintenance``,
    ``indexes`` and ``connection`` are what tests that work below the requests use."""
    return MongoSessionFactory(collection, SECRET, **options)


def add_sessions(store, count, expired=False, **data):
    """Store ``count`` sessions holding ``data``; return their ids."""
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    created = now - datetime.timedelta(hours=2)
    expires = now - datetime.timedelta(minutes=5) if expired else now + datetime.timedelta(hours=1)
    ids = []
    for n in range(count):
        session_id = 'session-%s-%d-%s' % ('expired' if expired else 'live', n,
                                          os.urandom(6).hex())
        store.insert(session_id, dict(data, n=n), created, expires)
        ids.append(session_id)
    return ids


@pytest.fixture
def build_app():
    """``build_app(sessions, **options)``: a :class:`SessionApp` keeping its
    sessions in ``sessions``.

    ``sessions`` is a collection (or a callable returning one), kept by a
    ``MongoSessionFactory(sessions, secret, **options)``, or a session factory,
    used as it is. With ``settings`` instead, the application includes
    pyramid_mongosession and configures it from those settings.

    Besides ``/untouched``, ``/session`` and ``/call`` (see
    :meth:`SessionApp.call`), ``views`` adds a route ``/<name>`` for each
    ``{name: view}``, and ``configure(config)`` may change the configuration
    before the application is made.
    """
    def build(sessions=None, *, settings=None, views=None, configure=None, secret=SECRET,
              **options):
        if settings is not None:
            assert sessions is None and not options, 'settings configure the sessions'
            config = Configurator(settings=settings)
            config.include('pyramid_mongosession')
            add_common_views(config)
        elif isinstance(sessions, MongoSessionFactory):
            assert not options, 'the factory is configured already'
            config = make_config(sessions)
        else:
            config = make_config(MongoSessionFactory(sessions, secret, **options))
        for name, view in (views or {}).items():
            config.add_route(name, '/' + name)
            config.add_view(view, route_name=name)
        if configure is not None:
            configure(config)
        return SessionApp(config.make_wsgi_app())
    return build


@pytest.fixture
def make_app(build_app, collection):
    """``make_app(**options)``: a :class:`SessionApp` on this test's collection of the server."""
    return lambda **options: build_app(collection, **options)


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


# -- the embedded backend ------------------------------------------------------------

@pytest.fixture
def embedded_collection():
    """A sessions collection of the embedded backend (mongomock), in this process's memory."""
    import mongomock
    return mongomock.MongoClient()['test']['sessions']


@pytest.fixture(params=[pytest.param('server', marks=pytest.mark.server), 'embedded'])
def backend_collection(request):
    """The sessions collection on the real server, then on the embedded backend."""
    if request.param == 'server':
        return request.getfixturevalue('collection')
    return request.getfixturevalue('embedded_collection')


@pytest.fixture(params=[pytest.param('server', marks=pytest.mark.server), 'embedded'])
def backend_settings(request):
    """``mongodb_session.*`` settings naming a database of this test's own: on the
    real server, then on the embedded backend (``mongomock://``)."""
    if request.param == 'server':
        return {'mongodb_session.url': request.getfixturevalue('mongodb_url'),
                'mongodb_session.db_name': request.getfixturevalue('database').name}
    return {'mongodb_session.url': 'mongomock://',
            'mongodb_session.db_name': 'test_%s' % uuid.uuid4().hex[:16]}


@pytest.fixture
def run(capsys):
    """Run ``pmongosession`` in this process; return (status, stdout, stderr)."""
    from pyramid_mongosession.cli import main

    def run(*argv):
        status = main(list(argv))
        captured = capsys.readouterr()
        return status, captured.out, captured.err
    return run
