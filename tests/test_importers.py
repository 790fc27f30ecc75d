"""Taking over the sessions of the library a site used before, end to end.

Each peer library writes the old session itself — a WSGI application on its
session factory, driven by WebTest — and the same application is then rebuilt
on pyramid_mongosession with the importer, on the suite's server: Pyramid's
signed cookie sessions (JSON), pyramid_session_redis against a real
redis-server on 127.0.0.1, pyramid_beaker with Beaker's ext:mongodb back end
on the suite's MongoDB server.
"""
import argparse
import json
import logging
import time
import uuid
from urllib.parse import urlsplit, urlunsplit

import pymongo
import pytest
import webtest
from pymongo import monitoring
from pyramid.authentication import SessionAuthenticationHelper
from pyramid.security import Allowed
from pyramid.config import Configurator
from pyramid.response import Response
from pyramid.security import forget, remember
from pyramid.session import SignedCookieSessionFactory

from pyramid_mongosession import SessionImported, SessionValueError
from pyramid_mongosession.cli import stats
from pyramid_mongosession.importers import (
    COUNTER_ID, BeakerImporter, RedisImporter, SignedCookieImporter, imported_count)

from . import servers

OLD_SECRET = 'the secret of the old session factory, long enough: 0123456789'


class Custom:
    """A class of the old application's, whose pickled objects BSON cannot hold."""

    def __init__(self, value):
        self.value = value


# -- one application, on either session library ----------------------------------------

class Policy:
    """The security policy of the test application: the user id kept in the session."""

    def __init__(self):
        self.helper = SessionAuthenticationHelper()

    def identity(self, request):
        return self.helper.authenticated_userid(request)

    def authenticated_userid(self, request):
        return self.helper.authenticated_userid(request)

    def permits(self, request, context, permission):
        return Allowed('everyone')

    def remember(self, request, userid, **kw):
        return self.helper.remember(request, userid, **kw)

    def forget(self, request, **kw):
        return self.helper.forget(request, **kw)


def login_view(request):
    headers = remember(request, request.GET['user'])
    request.session['cart'] = ['book', 'pen']
    return Response('logged in', headers=headers)


def logout_view(request):
    headers = forget(request)
    if hasattr(request.session, 'options'):
        request.session.options['expire'] = True
    return Response('logged out', headers=headers)


def put_view(request):
    """``/put?key=json``: JSON values; ``/put?set=key`` a set, ``/put?custom=key`` an
    object of a class of the application's (for the pickling libraries)."""
    for key, value in request.GET.items():
        if key == 'set':
            request.session[value] = {1, 2, 3}
        elif key == 'custom':
            request.session[value] = Custom(42)
        else:
            request.session[key] = json.loads(value)
    if hasattr(request.session, 'save'):
        request.session.save()
    return Response('ok')


def state_view(request):
    session = request.session
    return Response(json={'userid': request.authenticated_userid,
                          'data': {key: session[key] for key in session
                                   if not key.startswith('_')},
                          'new': session.new})


VIEWS = {'login': login_view, 'logout': logout_view, 'put': put_view, 'state': state_view}


def configure(config):
    config.set_security_policy(Policy())


def old_app(session_factory):
    """The application as it ran before: on the peer library's session factory."""
    config = Configurator()
    config.set_session_factory(session_factory)
    configure(config)
    for name, view in VIEWS.items():
        config.add_route(name, '/' + name)
        config.add_view(view, route_name=name)
    return webtest.TestApp(config.make_wsgi_app())


def cookies_of(browser):
    return dict(browser.cookies)


def move_browser(old, new):
    """The same browser, now visiting the application rebuilt on pyramid_mongosession."""
    new.cookiejar = old.cookiejar
    return new


# -- the three peers -----------------------------------------------------------------------

class CookiePeer:
    """Pyramid's SignedCookieSessionFactory (JSON)."""

    name = 'cookie'
    cookie_name = 'session'
    pickles = False

    def old_app(self, timeout=1200, cookie_name=None):
        return old_app(SignedCookieSessionFactory(
            OLD_SECRET, timeout=timeout, cookie_name=cookie_name or self.cookie_name))

    def importer(self, secret=OLD_SECRET, cookie_name=None, timeout=1200):
        return SignedCookieImporter(secret, cookie_name=cookie_name or self.cookie_name,
                                    timeout=timeout)

    def reads(self):
        return 0   # the old sessions are in the cookies: there is no store to read

    def stored(self):
        return None


class RedisPeer:
    """pyramid_session_redis 1.x against a real redis-server."""

    name = 'pyramid_session_redis'
    cookie_name = 'redis_session'   # not ours: the old cookie is cleared
    pickles = True

    def __init__(self, port):
        self.url = 'redis://127.0.0.1:%d/0' % port
        import redis
        self.client = redis.StrictRedis.from_url(self.url)
        self.client.flushdb()

    def old_app(self, timeout=1200, cookie_name=None):
        from pyramid_session_redis import RedisSessionFactory
        return old_app(RedisSessionFactory(OLD_SECRET, redis_url=self.url, timeout=timeout,
                                           cookie_name=cookie_name or self.cookie_name))

    def importer(self, secret=OLD_SECRET, cookie_name=None, timeout=None):
        return RedisImporter(self.url, secret, cookie_name=cookie_name or self.cookie_name)

    def reads(self):
        stats = self.client.info('commandstats')
        return sum(stats.get('cmdstat_' + name, {}).get('calls', 0)
                   for name in ('get', 'mget', 'getdel', 'getex', 'exists'))

    def stored(self):
        return len(self.client.keys('*'))


class BeakerReads(monitoring.CommandListener):
    def __init__(self):
        self.finds = 0

    def started(self, event):
        if event.command_name in ('find', 'aggregate', 'count'):
            self.finds += 1

    def succeeded(self, event):
        pass

    def failed(self, event):
        pass


class BeakerPeer:
    """pyramid_beaker with Beaker's ext:mongodb back end, on the suite's server."""

    name = 'pyramid_beaker'
    cookie_name = 'beaker.session.id'   # pyramid_beaker's default: not ours
    pickles = True

    def __init__(self, mongodb_url):
        self.database = 'test_beaker_%s' % uuid.uuid4().hex[:12]
        url = urlunsplit(urlsplit(mongodb_url)._replace(path='/' + self.database))
        self.listener = BeakerReads()
        self.client = pymongo.MongoClient(url, event_listeners=[self.listener],
                                          serverSelectionTimeoutMS=5000)

    def options(self, timeout=1200, cookie_name=None, secret=OLD_SECRET):
        return {'type': 'ext:mongodb', 'url': self.client, 'secret': secret,
                'key': cookie_name or self.cookie_name, 'timeout': timeout}

    def old_app(self, timeout=1200, cookie_name=None):
        from pyramid_beaker import BeakerSessionFactoryConfig
        return old_app(BeakerSessionFactoryConfig(**self.options(timeout, cookie_name)))

    def importer(self, secret=OLD_SECRET, cookie_name=None, timeout=1200):
        return BeakerImporter(self.options(timeout, cookie_name, secret))

    def reads(self):
        return self.listener.finds

    def stored(self):
        return self.client[self.database]['backer_cache'].count_documents({})

    def close(self):
        self.client.drop_database(self.database)
        self.client.close()


@pytest.fixture(scope='module')
def redis_port():
    """A redis-server of this module's own on 127.0.0.1, stopped at the end."""
    try:
        with servers.redis_server() as port:
            yield port
    except servers.NoRedis as exc:
        from .conftest import not_available
        not_available('the pyramid_session_redis tests cannot run: %s' % exc)


@pytest.fixture(params=['cookie', 'pyramid_session_redis', 'pyramid_beaker'])
def peer(request):
    if request.param == 'cookie':
        yield CookiePeer()
    elif request.param == 'pyramid_session_redis':
        yield RedisPeer(request.getfixturevalue('redis_port'))
    else:
        beaker = BeakerPeer(request.getfixturevalue('mongodb_url'))
        yield beaker
        beaker.close()


@pytest.fixture
def new_app(build_app, collection):
    """``new_app(importer, **options)``: the same application on pyramid_mongosession."""
    def new(importer, configure=configure, **options):
        return build_app(collection, importer=importer, views=VIEWS, configure=configure,
                         **options)
    return new


def sessions(collection):
    """The session documents (not the import's own bookkeeping, nor tombstones)."""
    return list(collection.find({'data': {'$exists': True}}))


def set_cookie_names(response):
    return [header.split('=', 1)[0] for header in response.headers.getall('Set-Cookie')]


def gives_a_session(response):
    """Whether the response sets our cookie to a session (rather than clearing it)."""
    return any(header.startswith('session=') and 'Max-Age=0' not in header
               for header in response.headers.getall('Set-Cookie'))


# -- the visitor keeps its session ----------------------------------------------------------

def test_the_visitor_keeps_its_data_and_its_login(peer, new_app, collection):
    before = peer.old_app()
    before.get('/login?user=alice')
    before.get('/put?note="hello"&count=3')
    assert before.get('/state').json['userid'] == 'alice'
    old_cookie = before.cookies[peer.cookie_name]

    browser = move_browser(before, new_app(peer.importer()))
    response = browser.get('/state')
    assert response.json['userid'] == 'alice'
    assert response.json['data'] == {'auth.userid': 'alice', 'cart': ['book', 'pen'],
                                     'note': 'hello', 'count': 3}
    assert response.json['new'] is False   # stored at once
    assert gives_a_session(response)
    if peer.cookie_name != 'session':
        assert peer.cookie_name in set_cookie_names(response)   # the old cookie is cleared
        assert peer.cookie_name not in browser.cookies
    assert browser.cookies['session'] != old_cookie

    stored = sessions(collection)
    assert len(stored) == 1 and stored[0]['user'] == 'alice'
    assert stored[0]['data']['note'] == 'hello'

    # The next request is an ordinary one: no import, the same session.
    browser.get('/put?count=4')
    assert browser.get('/state').json['data']['count'] == 4
    assert len(sessions(collection)) == 1
    assert imported_count(browser.session_factory.connection)[0] == 1
    assert peer.stored() in (None, 0)   # the old session was ended in its store


def test_an_imported_session_is_indexed_under_its_user(peer, new_app, collection):
    before = peer.old_app()
    before.get('/login?user=bob')
    browser = move_browser(before, new_app(peer.importer()))
    assert browser.get('/state').json['userid'] == 'bob'

    factory = browser.session_factory
    listed = factory.user_sessions('bob')
    assert len(listed) == 1
    assert listed[0].handle == browser.call(lambda request: request.session.handle)[0]
    assert factory.revoke_user('bob') == 1
    after = browser.get('/state').json
    assert after['userid'] is None and after['data'] == {}


def test_a_replay_of_the_old_cookie_after_the_import_gets_nothing(peer, new_app, collection):
    before = peer.old_app()
    before.get('/login?user=carol')
    old_cookie = before.cookies[peer.cookie_name]
    app = new_app(peer.importer())
    assert move_browser(before, app).get('/state').json['userid'] == 'carol'

    thief = app.visitor(old_cookie, name=peer.cookie_name)
    response = thief.get('/state')
    assert response.json == {'userid': None, 'data': {}, 'new': True}
    assert not gives_a_session(response)
    assert len(sessions(collection)) == 1


def test_a_forged_old_cookie_imports_nothing_and_reads_nothing(peer, new_app, collection):
    before = peer.old_app()
    before.get('/login?user=dave')
    genuine = before.cookies[peer.cookie_name]
    app = new_app(peer.importer())
    reads = peer.reads()

    for cookie in (genuine[:-2] + ('AA' if genuine[-2:] != 'AA' else 'BB'),
                   ('0' if genuine[0] != '0' else '1') + genuine[1:]):
        response = app.visitor(cookie, name=peer.cookie_name).get('/state')
        assert response.json == {'userid': None, 'data': {}, 'new': True}
    assert app.visitor(genuine, name=peer.cookie_name).get('/state').json['userid'] == 'dave'
    assert peer.reads() - reads == (0 if peer.name == 'cookie' else 1)   # the genuine one only

    # A cookie signed with another secret (another site's, say) reads nothing either.
    before = peer.old_app()
    before.get('/login?user=dave')
    reads = peer.reads()
    browser = new_app(peer.importer(secret='another secret')).visitor(
        before.cookies[peer.cookie_name], name=peer.cookie_name)
    assert browser.get('/state').json['userid'] is None
    assert peer.reads() == reads


def test_an_expired_old_session_imports_nothing(peer, new_app, collection):
    before = peer.old_app(timeout=1)
    before.get('/login?user=erin')
    time.sleep(2.1)
    browser = move_browser(before, new_app(peer.importer(timeout=1)))
    assert browser.get('/state').json == {'userid': None, 'data': {}, 'new': True}
    assert sessions(collection) == []


def test_a_value_bson_cannot_hold_is_dropped_with_its_key_named(peer, new_app, collection,
                                                                 caplog):
    before = peer.old_app()
    before.get('/login?user=frank')
    before.get('/put?huge=%d' % 2 ** 70)              # JSON holds it, BSON does not
    if peer.pickles:
        before.get('/put?set=tags&custom=widget')
    browser = move_browser(before, new_app(peer.importer()))
    with caplog.at_level(logging.WARNING, logger='pyramid_mongosession.importers'):
        response = browser.get('/state')
    assert response.status_int == 200
    assert response.json['userid'] == 'frank'
    assert response.json['data'] == {'auth.userid': 'frank', 'cart': ['book', 'pen']}
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING
                and record.name.startswith('pyramid_mongosession.importers')]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "'huge'" in message
    if peer.pickles:
        assert "'tags'" in message and "'widget'" in message
        assert 'test_importers.Custom' in message


def test_a_request_with_both_cookies_prefers_ours(peer, new_app, collection):
    cookie_name = 'old_session' if peer.cookie_name == 'session' else peer.cookie_name
    before = peer.old_app(cookie_name=cookie_name)
    before.get('/login?user=grace')
    app = new_app(peer.importer(cookie_name=cookie_name))
    browser = app.visitor()
    browser.get('/put?mine=true')   # our session first
    ours = browser.cookies['session']
    browser.set_cookie(cookie_name, before.cookies[cookie_name])
    reads = peer.reads()

    response = browser.get('/state')
    assert response.json == {'userid': None, 'data': {'mine': True}, 'new': False}
    assert browser.cookies['session'] == ours
    assert peer.reads() == reads   # the importer was not consulted
    assert len(sessions(collection)) == 1
    assert imported_count(app.session_factory.connection)[0] == 0


# -- what the takeover does around the import -------------------------------------------

def test_login_right_after_the_import_ends_the_old_session(peer, new_app, collection):
    before = peer.old_app()
    before.get('/put?cart=["mug"]')
    app = new_app(peer.importer())
    browser = move_browser(before, app)

    def log_in(request):
        request.session['auth.userid'] = 'heidi'
        request.session.change_id()
    browser.call(log_in)
    state = browser.get('/state').json
    assert state['userid'] == 'heidi' and state['data']['cart'] == ['mug']
    assert len(sessions(collection)) == 1
    assert peer.stored() in (None, 0)


def test_session_imported_event_and_the_counter(peer, new_app, collection, capsys):
    before = peer.old_app()
    before.get('/login?user=ivan')
    events = []

    def subscribe(config):
        configure(config)
        config.add_subscriber(events.append, SessionImported)
    browser = move_browser(before, new_app(peer.importer(), configure=subscribe))
    assert browser.get('/state').json['userid'] == 'ivan'
    [event] = events
    assert event.source == peer.name and event.userid == 'ivan'
    assert event.session['cart'] == ['book', 'pen'] and event.handle

    factory = browser.session_factory
    count, first, last = imported_count(factory.connection)
    assert count == 1 and first is not None and first <= last
    lines = []
    stats(factory, argparse.Namespace(sample=10), lines.append)
    assert any(line.startswith('imported from the previous session library: 1 (first ')
               for line in lines), lines
    # The importer's own documents (the counter, replay markers) are not sessions.
    assert 'sessions: 1' in lines and 'live: 1' in lines, lines


def test_a_publicly_cacheable_response_undoes_the_import(peer, new_app, collection):
    before = peer.old_app()
    before.get('/login?user=judy')

    def cached(request):
        request.response.cache_control.public = True
        request.response.text = str(request.session.get('auth.userid'))
        return request.response
    browser = move_browser(before, build_with(new_app(peer.importer()), 'cached', cached))
    response = browser.get('/cached')
    assert response.text == 'judy' and 'Set-Cookie' not in response.headers
    assert sessions(collection) == []
    assert imported_count(browser.session_factory.connection)[0] == 0
    # The old session is still there: the next request takes it over.
    assert browser.get('/state').json['userid'] == 'judy'


def build_with(app, name, view):
    """``app``'s application with one more view."""
    factory = app.session_factory
    config = Configurator()
    config.set_session_factory(factory)
    configure(config)
    for route, handler in dict(VIEWS, **{name: view}).items():
        config.add_route(route, '/' + route)
        config.add_view(handler, route_name=route)
    from .conftest import SessionApp
    return SessionApp(config.make_wsgi_app())


def test_the_importer_is_not_consulted_after_import_until(new_app, collection):
    import datetime
    before = CookiePeer().old_app()
    before.get('/login?user=kim')
    browser = move_browser(before, new_app(CookiePeer().importer(),
                                           import_until=datetime.datetime(2000, 1, 1)))
    assert browser.get('/state').json['userid'] is None
    assert collection.find_one({'_id': COUNTER_ID}) is None


# -- without a server: the importers' parts, and the settings -------------------------------

def test_safe_unpickle_keeps_plain_data_and_imports_no_class():
    import datetime
    import pickle

    from pyramid_mongosession.importers import PickledObject, safe_unpickle
    when = datetime.datetime(2024, 5, 1, 12, 30)
    data = {'n': 1, 'text': 'é', 'raw': b'\x00\x01', 'when': when, 'list': [1, (2, 3)],
            'tags': {1, 2}, 'obj': Custom(1), 'fn': print}
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        loaded = safe_unpickle(pickle.dumps(data, protocol))
        assert {key: loaded[key] for key in ('n', 'text', 'raw', 'when', 'tags')} == {
            'n': 1, 'text': 'é', 'raw': b'\x00\x01', 'when': when, 'tags': {1, 2}}
        assert list(loaded['list'][1]) == [2, 3]
        assert isinstance(loaded['obj'], PickledObject)
        assert 'test_importers.Custom' in repr(loaded['obj'])
        assert issubclass(loaded['fn'], PickledObject)   # a global, never looked up
        assert 'builtins.print' in repr(loaded['fn'])


def test_checked_values_drop_what_bson_cannot_hold(caplog):
    from pyramid_mongosession.importers import checked_values
    with caplog.at_level(logging.WARNING):
        kept = checked_values({'ok': [1, 'a'], 'big': 2 ** 64, 'tags': {1}, 3: 'int key',
                               'nested': {'x': {1: 2}}}, 'test')
    assert kept == {'ok': [1, 'a']}
    [record] = caplog.records
    for key in ("'big'", "'tags'", '3', "'nested'"):
        assert key in record.getMessage()


def embedded_app(importer, **options):
    import mongomock
    collection = mongomock.MongoClient()['test']['sessions']
    config = Configurator()
    from pyramid_mongosession import MongoSessionFactory
    config.set_session_factory(MongoSessionFactory(collection, 'x' * 40, importer=importer,
                                                   **options))
    configure(config)
    for name, view in VIEWS.items():
        config.add_route(name, '/' + name)
        config.add_view(view, route_name=name)
    return webtest.TestApp(config.make_wsgi_app()), collection


def test_a_plain_function_is_an_importer():
    calls = []

    def importer(request):
        calls.append(request.cookies.get('legacy'))
        return {'auth.userid': 'lee', 'theme': 'dark'} if 'legacy' in request.cookies else None
    app, collection = embedded_app(importer)
    assert app.get('/state').json['userid'] is None
    app.set_cookie('legacy', 'x')
    assert app.get('/state').json == {'userid': 'lee', 'data': {'auth.userid': 'lee',
                                                                'theme': 'dark'}, 'new': False}
    assert app.get('/state').json['userid'] == 'lee'
    assert calls == [None, 'x']   # not consulted once our cookie is there
    assert collection.find_one({'_id': COUNTER_ID})['count'] == 1


def test_a_failing_importer_imports_nothing(caplog):
    def importer(request):
        raise ConnectionError('the old store is down')
    app, collection = embedded_app(importer)
    assert app.get('/state').json['userid'] is None
    assert 'the importer failed' in caplog.text


def test_signed_cookie_importer_verifies_as_pyramid_does():
    import base64
    import hashlib
    import hmac as hmac_

    from webob.cookies import SignedSerializer
    importer = SignedCookieImporter(OLD_SECRET, salt='my.salt.', hashalg='sha256')
    signer = SignedSerializer(OLD_SECRET, 'my.salt.', 'sha256')
    now = time.time()
    good = signer.dumps((now, now - 60, {'a': 1})).decode('ascii')
    old = importer.read(good)
    assert dict(old) == {'a': 1} and old.source == 'cookie' and old.end is None
    assert old.replay_key and old.created is not None
    with pytest.raises(ValueError, match='signature'):
        importer.read(SignedSerializer('other', 'my.salt.', 'sha256').dumps(
            (now, now, {'a': 1})).decode('ascii'))
    with pytest.raises(ValueError, match='expired'):
        importer.read(signer.dumps((now - 1300, now - 1300, {'a': 1})).decode('ascii'))
    with pytest.raises(ValueError, match='not a Pyramid cookie session'):
        importer.read(signer.dumps(['x']).decode('ascii'))
    assert importer.read(signer.dumps((now, now, {})).decode('ascii')) is None
    # A pickle in the cookie is never unpickled unless the serializer says so.
    payload = b'\x80\x04N.'
    key = b'my.salt.' + OLD_SECRET.encode('latin-1')
    forged = base64.urlsafe_b64encode(
        hmac_.new(key, payload, hashlib.sha256).digest() + payload).rstrip(b'=')
    with pytest.raises(ValueError):
        importer.read(forged.decode('ascii'))


def test_beaker_importer_refuses_unsigned_cookies():
    with pytest.raises(ValueError, match='unsigned'):
        BeakerImporter({'session.type': 'memory'})
    importer = BeakerImporter({'session.type': 'memory', 'session.secret': 's',
                               'session.key': 'k', 'session.timeout': '60', 'other': 'x'})
    assert importer.cookie.name == 'k' and importer.timeout == 60


# -- settings -----------------------------------------------------------------------------

def parse(**import_settings):
    from pyramid_mongosession.settings import parse_settings
    settings = {'mongodb_session.secret': 's', 'mongodb_session.url': 'mongomock://'}
    for name, value in import_settings.items():
        settings['mongodb_session.import.' + name.replace('__', '.')] = value
    return parse_settings(settings)[1]


@pytest.mark.filterwarnings('ignore:PickleSerializer:DeprecationWarning')
def test_import_settings_build_the_importer():
    import datetime
    options = parse(**{'from': 'cookie', 'secret': 'old', 'cookie_name': 'old_session',
                       'timeout': '3600', 'until': '2030-07-01'})
    importer = options['importer']
    assert isinstance(importer, SignedCookieImporter)
    assert importer.cookie.name == 'old_session' and importer.timeout == 3600
    assert options['import_until'] == datetime.datetime(2030, 7, 1)
    assert parse(**{'from': 'cookie', 'secret': 'old', 'until': '2030-07-01T02:00:00+02:00'})[
        'import_until'] == datetime.datetime(2030, 7, 1)
    redis = parse(**{'from': 'pyramid_session_redis', 'secret': 'old',
                     'url': 'redis://127.0.0.1:1/0', 'end_old': 'false'})['importer']
    assert isinstance(redis, RedisImporter) and redis.end_old is False
    beaker = parse(**{'from': 'pyramid_beaker', 'type': 'memory', 'secret': 'b',
                      'timeout': '600'})['importer']
    assert isinstance(beaker, BeakerImporter) and beaker.timeout == 600
    serializer = parse(**{'from': 'cookie', 'secret': 'old',
                          'serializer': 'pyramid.session.PickleSerializer'})['importer']
    assert type(serializer.serializer).__name__ == 'PickleSerializer'


def test_pyramid_beaker_reads_the_applications_session_settings():
    from pyramid_mongosession.settings import parse_settings
    options = parse_settings({'mongodb_session.secret': 's', 'mongodb_session.url': 'mongomock://',
                              'mongodb_session.import.from': 'pyramid_beaker',
                              'session.type': 'memory', 'session.secret': 'b',
                              'session.key': 'myapp'})[1]
    assert options['importer'].cookie.name == 'myapp'


def test_a_dotted_importer(monkeypatch):
    import sys
    import types
    module = types.ModuleType('old_sessions_for_test')
    module.importer = lambda request: None
    module.make = lambda **options: (lambda request: options)
    monkeypatch.setitem(sys.modules, 'old_sessions_for_test', module)
    assert parse(**{'from': 'old_sessions_for_test.importer'})['importer'] is module.importer
    made = parse(**{'from': 'old_sessions_for_test.make', 'region': 'eu'})['importer']
    assert made(None) == {'region': 'eu'}


@pytest.mark.parametrize('settings, message', [
    ({'secret': 'x'}, 'mongodb_session.import.from is required'),
    ({'from': 'cookie'}, 'mongodb_session.import.secret is required'),
    ({'from': 'cookie', 'secret': 'x', 'url': 'redis://'},
     'unknown setting mongodb_session.import.url'),
    ({'from': 'pyramid_session_redis', 'secret': 'x', 'salt': 'y'},
     'unknown setting mongodb_session.import.salt'),
    ({'from': 'pyramid_session_redis', 'secret': 'x'}, 'redis_url'),
    ({'from': 'cookie', 'secret': 'x', 'until': 'next week'},
     'mongodb_session.import.until: bad value'),
    ({'from': 'cookie', 'secret': 'x', 'hashalg': 'nosuch'}, 'mongodb_session.import.from'),
    ({'from': 'pyramid_beaker', 'type': 'memory'}, 'unsigned'),
    ({'from': 'no.such.module'}, 'neither cookie, pyramid_session_redis, pyramid_beaker'),
])
def test_bad_import_settings_are_refused_at_start_up(settings, message):
    from pyramid.exceptions import ConfigurationError
    with pytest.raises(ConfigurationError, match=message):
        parse(**settings)


def test_stats_with_the_import_settings_of_an_ini_file(run, tmp_path, mongodb_url, database):
    """The command needs no value for the old secret, and counts the imports."""
    from .test_cli import write_ini
    path = write_ini(tmp_path / 'app.ini', mongodb_url, database.name, extra='\n'.join([
        'mongodb_session.import.from = cookie',
        'mongodb_session.import.secret = %(OLD_SESSION_SECRET)s']))
    status, out, err = run('stats', path)
    assert (status, err) == (0, '')
    assert 'imported from the previous session library: 0\n' in out


def test_an_imported_session_refuses_a_user_id_that_is_not_one_where_it_is_assigned(
        peer, new_app, collection):
    """The import meets the user-id rule: the request that imported the session
    checks its own assignments as any request does."""
    before = peer.old_app()
    before.get('/login?user=mallory')
    refused = []

    def assign_a_list(request):
        try:
            request.session['auth.userid'] = ['mallory', 'alice']
        except SessionValueError as exc:
            refused.append(str(exc))
        return Response('ok')
    browser = move_browser(before, new_app(
        peer.importer(), configure=lambda config: (configure(config), config.add_route(
            'assign', '/assign'), config.add_view(assign_a_list, route_name='assign'))))
    browser.get('/assign')
    assert refused and "'auth.userid'" in refused[0]
    assert [doc['user'] for doc in sessions(collection)] == ['mallory']
