"""mongodb_session.* settings, includeme, and the code-only API."""
import os
import re

import pymongo
import pytest
from pyramid.exceptions import ConfigurationError
from pyramid.response import Response

from pyramid_mongosession import (
    MongoSessionFactory, SessionBackendError, session_factory_from_settings)
from pyramid_mongosession import settings as settings_module
from pyramid_mongosession.options import CONNECTION, FACTORY, defaults
from pyramid_mongosession.settings import REQUIRED, parse_settings

from .conftest import SECRET

BASE = {'mongodb_session.secret': SECRET, 'mongodb_session.db_name': 'app'}


def settings(**extra):
    return dict(BASE, **{'mongodb_session.' + k: v for k, v in extra.items()})


def test_defaults():
    factory = session_factory_from_settings(BASE)
    assert (factory.cookie.name, factory.cookie.max_age) == ('session', None)
    collection = factory.connection.source
    assert (collection.db_name, collection.coll_name) == ('app', 'sessions')
    assert collection.client_args == ('localhost', 27017)


def test_ini_strings_are_converted():
    connection, options, client = parse_settings(settings(
        port='27018', cookie_secure='true', cookie_httponly='off', cookie_max_age='3600',
        timeout='none', reissue_time='0', absolute_timeout='86400',
        cookie_domain='example.com', detect_conflicts='yes', operation_timeout='2.5',
        **{'client.serverSelectionTimeoutMS': '2000'}))
    assert connection == {'port': 27018, 'db_name': 'app'}
    assert options['cookie_secure'] is True and options['cookie_httponly'] is False
    assert options['cookie_max_age'] == 3600 and options['timeout'] is None
    assert options['reissue_time'] == 0 and options['absolute_timeout'] == 86400
    assert options['detect_conflicts'] is True and options['operation_timeout'] == 2.5
    assert client == {'serverSelectionTimeoutMS': '2000'}


def test_database_from_url():
    factory = session_factory_from_settings({
        'mongodb_session.secret': SECRET,
        'mongodb_session.url': 'mongodb://u:p@h1:1,h2:2/fromurl?replicaSet=rs',
        'mongodb_session.coll_name': 'web_sessions'})
    collection = factory.connection.source
    assert (collection.db_name, collection.coll_name) == ('fromurl', 'web_sessions')


def test_host_port_credentials_go_to_the_client():
    factory = session_factory_from_settings(settings(
        host='db.example', port='27000', username='me', password='pw'))
    collection = factory.connection.source
    assert collection.client_args == ('db.example', 27000)
    # The client bounds each of its waits itself: they come from operation_timeout.
    assert collection.client_kwargs == {
        'username': 'me', 'password': 'pw', 'socketTimeoutMS': 5000.0,
        'connectTimeoutMS': 5000.0, 'serverSelectionTimeoutMS': 5000.0,
        'waitQueueTimeoutMS': 5000.0}


LIMITS = ('socketTimeoutMS', 'connectTimeoutMS', 'serverSelectionTimeoutMS',
          'waitQueueTimeoutMS')


@pytest.mark.parametrize('extra, expected', [
    ({}, dict.fromkeys(LIMITS, 5000.0)),
    ({'operation_timeout': '2.5'}, dict.fromkeys(LIMITS, 2500.0)),
    ({'operation_timeout': 'none'}, {}),
    ({'client.timeoutMS': '750'}, {'timeoutMS': '750'}),
    ({'client.connectTimeoutMS': '750'}, dict(dict.fromkeys(LIMITS, 5000.0),
                                              connectTimeoutMS='750')),
])
def test_the_clients_limits_come_from_operation_timeout(extra, expected):
    factory = session_factory_from_settings(settings(url='mongodb://db.example/app', **extra))
    assert factory.connection.source.client_kwargs == expected


@pytest.mark.parametrize('query, kept', [
    ('timeoutMS=900', LIMITS), ('sockettimeoutms=900', ('socketTimeoutMS',)),
    ('serverSelectionTimeoutMS=900&connectTimeoutMS=9', LIMITS[1:3])])
def test_a_limit_in_the_url_is_kept(query, kept):
    factory = session_factory_from_settings(settings(url='mongodb://db.example/app?' + query))
    assert not set(kept) & set(factory.connection.source.client_kwargs)
    assert set(LIMITS) - set(kept) <= set(factory.connection.source.client_kwargs)


@pytest.mark.parametrize('bad, named', [
    ({'mongodb_session.secret': None}, 'mongodb_session.secret'),
    ({'mongodb_session.colour': 'blue'}, 'mongodb_session.colour'),
    ({'mongodb_session.port': 'eleven'}, 'mongodb_session.port'),
    ({'mongodb_session.cookie_secure': 'perhaps'}, 'mongodb_session.cookie_secure'),
    ({'mongodb_session.timeout': '-5'}, 'mongodb_session.timeout'),
    ({'mongodb_session.reissue_time': '5000'}, 'mongodb_session.reissue_time'),
    ({'mongodb_session.cookie_samesite': 'sometimes'}, 'mongodb_session.cookie_samesite'),
    ({'mongodb_session.cookie_samesite': 'None'}, 'mongodb_session.cookie_samesite'),
    ({'mongodb_session.cookie_name': 'has space'}, 'mongodb_session.cookie_name'),
    ({'mongodb_session.client.noSuchOption': '1'}, 'mongodb_session.client.noSuchOption'),
    ({'mongodb_session.client.serverSelectionTimeoutMS': 'soon'},
     'mongodb_session.client.serverSelectionTimeoutMS'),
    ({'mongodb_session.url': 'mongodb://h/x', 'mongodb_session.host': 'h'},
     'mongodb_session.host'),
    ({'mongodb_session.db_name': ''}, 'mongodb_session.db_name'),
])
def test_bad_settings_fail_at_startup_naming_the_key(bad, named):
    values = dict(BASE)
    values.update(bad)
    values = {k: v for k, v in values.items() if v is not None}
    with pytest.raises(ConfigurationError) as info:
        session_factory_from_settings(values)
    assert named in str(info.value)


@pytest.mark.parametrize('url, message', [
    ('mongdb://localhost:27017/app', 'Invalid URI scheme'),
    ('localhost:27017/app', 'Invalid URI scheme'),
    ('', 'Invalid URI scheme'),
    ('mongodb://', 'hostname'),
    ('mongodb://localhost:99999/app', 'Port must be'),
    ('mongodb://db1,,db2/app', 'Empty host'),
    ('mongodb://localhost/app?serverSelectionTimeoutMS=soon', 'serverselectiontimeoutms'),
    ('mongodb://localhost/app?replicaSet=rs0&retryWritez=true', 'Unknown option'),
    ('mongodb://localhost/bad db', 'Bad database name'),
])
def test_malformed_url_stops_startup(url, message):
    for extra in ({}, {'mongodb_session.db_name': 'app'}):   # checked even with db_name
        with pytest.raises(ConfigurationError) as info:
            session_factory_from_settings(dict({'mongodb_session.secret': SECRET,
                                                'mongodb_session.url': url}, **extra))
        assert str(info.value).startswith('mongodb_session.url: ')
        assert message in str(info.value)


def test_malformed_url_stops_the_application_at_include(counter_app):
    with pytest.raises(ConfigurationError, match='mongodb_session.url: Invalid URI scheme'):
        counter_app({'mongodb_session.url': 'mongdb://localhost:27017/app',
                     'mongodb_session.secret': SECRET})


def test_url_error_does_not_show_the_password():
    with pytest.raises(ConfigurationError) as info:
        session_factory_from_settings({'mongodb_session.secret': SECRET,
                                       'mongodb_session.url': 'mongodb://me:hunter2@h:0x/app'})
    assert 'mongodb_session.url' in str(info.value)
    assert 'hunter2' not in str(info.value)


def test_url_check_names_the_database_as_pymongo_does():
    for url, expected in [('mongodb://h/app', 'app'), ('mongodb://h/app.ignored', 'app'),
                          ('mongodb://u:p@h1:1,h2:2/my%2Dapp?replicaSet=rs', 'my-app'),
                          ('mongodb://%2Ftmp%2Fmongodb-27017.sock/app', 'app')]:
        factory = session_factory_from_settings({'mongodb_session.secret': SECRET,
                                                 'mongodb_session.url': url})
        assert factory.connection.source.db_name == expected, url


@pytest.fixture
def no_dns(monkeypatch):
    """Any DNS lookup fails the test."""
    import dns.resolver

    def lookup(*args, **kwargs):
        raise AssertionError('DNS lookup at start-up: %r' % (args,))
    monkeypatch.setattr(dns.resolver, 'resolve', lookup)
    monkeypatch.setattr(dns.resolver.Resolver, 'resolve', lookup)
    monkeypatch.setattr('socket.getaddrinfo', lookup)


def test_srv_url_is_checked_without_dns(no_dns):
    factory = session_factory_from_settings({
        'mongodb_session.secret': SECRET,
        'mongodb_session.url': 'mongodb+srv://u:p@cluster0.example.invalid/app?w=majority'})
    collection = factory.connection.source
    assert collection.db_name == 'app'
    assert not collection.connected


@pytest.mark.parametrize('url', [
    'mongodb+srv://h1.example.invalid,h2.example.invalid/app',
    'mongodb+srv://cluster0.example.invalid:27017/app',
    'mongodb+srv://cluster0.example.invalid/app?directConnection=true',
])
def test_malformed_srv_url_stops_startup_without_dns(no_dns, url):
    values = {'mongodb_session.secret': SECRET, 'mongodb_session.url': url}
    if settings_module._validate_uri is None:
        # pymongo < 4.12 cannot check an SRV url without DNS: only its scheme is.
        session_factory_from_settings(values)
        return
    with pytest.raises(ConfigurationError, match='mongodb_session.url: '):
        session_factory_from_settings(values)


@pytest.mark.parametrize('name, suggested', [
    ('cookie_maxage', "cookie_max_age (the cookie's lifetime in seconds)"),
    ('dbname', 'db_name (the database)'),
    ('cookie_same_site', "cookie_samesite (the cookie's SameSite attribute)"),
    ('encryption_key', 'encryption_keys (encrypt values at rest)'),
    ('colour', None),
])
def test_unknown_setting_suggests_the_closest(name, suggested):
    # More in test_messages.py: the suggestions by meaning.
    with pytest.raises(ConfigurationError) as info:
        session_factory_from_settings(dict(BASE, **{'mongodb_session.' + name: '1'}))
    message = str(info.value)
    if suggested is None:
        assert message == ('unknown setting mongodb_session.%s (not a setting of '
                           'pyramid_mongosession; the configuration reference lists them '
                           'all)' % name)
    else:
        assert message == ('unknown setting mongodb_session.%s; did you mean '
                           'mongodb_session.%s?' % (name, suggested))


def test_short_timeout_needs_a_shorter_reissue_time():
    with pytest.raises(ConfigurationError) as info:
        session_factory_from_settings(settings(timeout='1'))
    assert str(info.value) == (
        'mongodb_session.reissue_time (120 seconds, the default) must be shorter than '
        'mongodb_session.timeout (1 second): set mongodb_session.reissue_time below 1, or a '
        'longer mongodb_session.timeout')
    # when both are set, the message is about the two the user wrote
    with pytest.raises(ConfigurationError) as info:
        session_factory_from_settings(settings(timeout='60', reissue_time='90'))
    assert 'by default' not in str(info.value)
    session_factory_from_settings(settings(timeout='60', reissue_time='30'))


def readme_defaults():
    """The README's settings table: ``{setting: its Default column}``."""
    with open(os.path.join(os.path.dirname(os.path.dirname(__file__)), 'README.rst'),
              encoding='utf-8') as f:
        text = f.read()
    rows = {}
    for line in text.splitlines():
        match = re.match(r'``([a-z_.<>]+)``(?:, ``([a-z_]+)``)?\s{2,}(\S.*?)\s{2,}\S', line)
        if match:
            for name in filter(None, match.group(1, 2)):
                rows[name] = match.group(3)
    return rows


def test_readme_defaults_are_the_codes():
    def render(value):
        if value is None:
            return 'none'
        if isinstance(value, bool):
            return '``%s``' % str(value).lower()
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        return '``%s``' % (value.__name__ if callable(value) else value)

    rows = readme_defaults()
    assert set(CONNECTION) | set(FACTORY) <= set(rows)
    for name in FACTORY:
        expected = 'required' if name in REQUIRED else render(defaults()[name])
        assert rows[name] == expected, name
    # the connection: no url, so host and port (test_defaults checks the client)
    collection = session_factory_from_settings(BASE).connection.source
    assert rows['url'] == 'none'
    assert rows['host'] == rows['port'] == '``%s``, ``%s``' % collection.client_args
    assert rows['coll_name'] == '``%s``' % collection.coll_name


def test_other_settings_are_ignored():
    session_factory_from_settings(dict(BASE, **{'pyramid.reload_templates': 'true',
                                                'mongodb_sessionx': '1'}))


def test_factory_construction_does_no_io():
    factory = session_factory_from_settings(settings(
        url='mongodb://127.0.0.1:1/app', **{'client.serverSelectionTimeoutMS': '100'}))
    assert not factory.connection.source.connected   # no client yet


def test_python_api_rejects_unknown_options(embedded_collection):
    with pytest.raises(TypeError, match='cookie_nmae'):
        MongoSessionFactory(embedded_collection, 'secret', cookie_nmae='x')


def test_reissue_time_none_is_refused(embedded_collection):
    with pytest.raises(ValueError, match='reissue_time'):
        MongoSessionFactory(embedded_collection, SECRET, reissue_time=None)


def test_collection_callable_is_called_once_per_process(backend_collection, build_app):
    calls = []

    def sessions():
        calls.append(1)
        return backend_collection
    app = build_app(sessions)
    for _ in range(5):
        app.get('/session?set=a:1')
    assert len(calls) == 1


def test_failure_to_create_the_client_is_a_backend_error(build_app):
    def sessions():
        raise pymongo.errors.ConfigurationError('no such host')
    app = build_app(sessions)
    app.set_cookie('session', MongoSessionFactory(sessions, SECRET).cookie._profile
                   .serializer.dumps('A' * 43).decode('ascii'))
    with pytest.raises(SessionBackendError):
        app.get('/session')


def count_view(request):
    request.session['n'] = request.session.get('n', 0) + 1
    return Response(str(request.session['n']))


@pytest.fixture
def counter_app(build_app):
    """``counter_app(settings)``: an application that includes pyramid_mongosession,
    configured by ``settings``, and counts the requests to ``/count`` in the session."""
    return lambda settings: build_app(settings=settings, views={'count': count_view})


def test_include_with_ini_strings_keeps_a_counter(backend_settings, counter_app):
    app = counter_app(dict(backend_settings, **{
        'mongodb_session.secret': SECRET,
        'mongodb_session.cookie_max_age': '3600',
        'mongodb_session.timeout': '1800',
        'mongodb_session.client.serverSelectionTimeoutMS': '3000',
    }))
    assert [app.get('/count').text for _ in range(3)] == ['1', '2', '3']
    collection = app.session_factory.connection.collection()
    assert collection.full_name == backend_settings['mongodb_session.db_name'] + '.sessions'
    assert collection.count_documents({}) == 1
    assert 'Max-Age=3600' in app.get('/count').headers.get('Set-Cookie', 'Max-Age=3600')


def test_embedded_backend_keeps_a_counter(counter_app):
    app = counter_app({'mongodb_session.url': 'mongomock:///demo',
                       'mongodb_session.secret': SECRET})
    assert [app.get('/count').text for _ in range(3)] == ['1', '2', '3']


def test_embedded_backend_needs_no_database_name(counter_app):
    # The README's spelling: the url alone.
    app = counter_app({'mongodb_session.url': 'mongomock://',
                       'mongodb_session.secret': SECRET})
    assert [app.get('/count').text for _ in range(2)] == ['1', '2']
    factory = session_factory_from_settings({'mongodb_session.url': 'mongomock://',
                                             'mongodb_session.secret': SECRET})
    assert factory.connection.namespace() == 'pyramid_mongosession.sessions'
    # a database named in the url or by db_name still wins
    for extra, expected in [({'mongodb_session.url': 'mongomock:///demo'}, 'demo'),
                            ({'mongodb_session.db_name': 'mine'}, 'mine')]:
        values = dict({'mongodb_session.url': 'mongomock://',
                       'mongodb_session.secret': SECRET}, **extra)
        namespace = session_factory_from_settings(values).connection.namespace()
        assert namespace == expected + '.sessions'


def test_one_client_per_process(monkeypatch):
    factory = session_factory_from_settings(settings(url='mongomock:///x'))
    connection = factory.connection
    first = connection.collection()
    assert connection.collection() is first
    monkeypatch.setattr('os.getpid', lambda: -1)   # as seen from a forked child
    assert connection.collection() is not first


def test_processes_share_sessions_through_one_collection(mongodb_url, database, counter_app):
    """Two application processes (two clients, two factories) serve one user."""
    def app():
        return counter_app({'mongodb_session.url': mongodb_url,
                            'mongodb_session.db_name': database.name,
                            'mongodb_session.secret': SECRET})
    first, second = app(), app()
    assert first.get('/count').text == '1'
    second.set_cookie('session', first.cookies['session'])
    assert second.get('/count').text == '2'
    assert first.get('/count').text == '3'


@pytest.mark.parametrize('client, operation_timeout, bounded', [
    ({}, 5.0, False),                                          # pymongo's defaults: 30 s...
    (dict.fromkeys(LIMITS, 5000), 5.0, True),
    (dict.fromkeys(LIMITS, 5000), 2.0, False),                 # a wait longer than allowed
    (dict.fromkeys(LIMITS[:3], 5000), 5.0, False),             # the pool's wait unbounded
    (dict(dict.fromkeys(LIMITS, 5000), socketTimeoutMS=0), 5.0, False),   # 0: no limit
    ({'timeoutMS': 5000}, 5.0, True),
    ({'timeoutMS': 750}, 5.0, False),
    ({}, None, True),                                          # nothing to bound
])
def test_a_call_gets_a_timeout_of_its_own_unless_the_client_bounds_it(client, operation_timeout,
                                                                      bounded):
    import pymongo
    from pyramid_mongosession.connection import bounds_every_call
    with pymongo.MongoClient('mongodb://127.0.0.1:1/', connect=False, **client) as made:
        assert bounds_every_call(made.options, operation_timeout) is bounded
