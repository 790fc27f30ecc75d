"""Where two features meet: each test runs two of them together.

Retired ids and idle expiry, write-only requests and flash, the size limit,
remember-me or key rotation, old secrets and retired ids, the outage breaker
and a moving session, user ids and query operators. Each of them broke once
while every feature passed its own tests; ``tests/test_model.py`` looks for
the next such crossing.
"""
import datetime
import json

import pymongo
import pymongo.collection
import pytest
import webtest
from pyramid.response import Response

from pyramid_mongosession import (
    SessionBackendError, SessionCreated, SessionExpired, SessionValueError)
from pyramid_mongosession.crypto import new_key
from pyramid_mongosession.encoding import MAX_DOCUMENT_SIZE

from .conftest import LIVE, SECRET
from .test_cli import write_ini
from .test_faults import PROBE, eventually

MONTH = 30 * 24 * 3600
OLD_SECRET = 'the secret before the rotation, long enough: 0123456789abcdef'
LOGIN = '/session?blind=1&set=auth.userid:"alice"&opt=change_id'


@pytest.fixture
def clock(monkeypatch):
    """The package's clock, moved by hand: ``clock.advance(seconds)``."""
    import sys

    from pyramid_mongosession import encoding

    class Clock:
        now = encoding.utcnow()

        def __call__(self):
            return self.now

        def advance(self, seconds):
            self.now += datetime.timedelta(seconds=seconds)

    fake, real = Clock(), encoding.utcnow
    for name, module in list(sys.modules.items()):
        if name.startswith('pyramid_mongosession') and getattr(module, 'utcnow', None) is real:
            monkeypatch.setattr(module, 'utcnow', fake)
    return fake


def live(collection, now):
    """The live session documents (not expired, not tombstones)."""
    return list(collection.find(dict(LIVE, expires={'$gt': now})))


def session_cookie(response):
    """The session cookie header the response sets, or None."""
    for header in response.headers.getall('Set-Cookie'):
        if header.startswith('session='):
            return header
    return None


def data(app):
    return app.get('/session').json['data']


# -- 1. an idle expiry, then a login that does not read -----------------------------------

def test_a_write_only_login_after_an_idle_expiry_logs_in(backend_collection, build_app, clock):
    events = []

    def listen(config):
        for event_class in (SessionExpired, SessionCreated):
            config.add_subscriber(events.append, event_class)
    app = build_app(backend_collection, timeout=60, reissue_time=10, configure=listen)
    app.get('/session?set=cart:["book"]')
    old = app.cookies['session']
    events.clear()
    clock.advance(61)
    response = app.get(LOGIN)
    assert session_cookie(response) is not None
    assert app.cookies['session'] != old
    assert data(app) == {'auth.userid': 'alice'}       # the expired cart is not carried over
    assert [type(event) for event in events] == [SessionExpired, SessionCreated]
    assert [doc['user'] for doc in live(backend_collection, clock.now)] == ['alice']
    # No tombstone stands in for the expired session: a retry logs in too.
    assert backend_collection.count_documents({'retired': {'$exists': True}}) == 0
    retry = app.visitor(old)
    assert session_cookie(retry.get(LOGIN)) is not None
    assert data(retry) == {'auth.userid': 'alice'}


# -- 2. a request that read the pre-login session ends after the login ----------------------

def login_during(view_before, view_after):
    """A view that runs ``view_before``, then a login by a parallel request of the
    same browser (its cookie as this request had it), then ``view_after``."""
    def view(request):
        view_before(request)
        parallel = webtest.TestApp(request.environ['tests.app'])
        parallel.set_cookie('session', request.cookies['session'])
        request.environ['tests.outcome']['login'] = parallel.get(
            '/session?read=x&set=auth.userid:"alice"&opt=change_id')
        view_after(request)
        return Response('ok')
    return view


def start_then_login(backend_collection, build_app, before, after):
    """The browser's pre-login session, the slow request, and the login inside it."""
    app = build_app(backend_collection, views={'slow': login_during(before, after)})
    app.get('/session?set=visits:1')
    old = app.cookies['session']
    outcome = {}
    response = app.get('/slow', extra_environ={'tests.app': app.app, 'tests.outcome': outcome})
    login = outcome['login']
    return app, old, login, response


def read(request):
    request.session.get('visits')


@pytest.mark.parametrize('after', [
    pytest.param(lambda request: request.session.change_id(), id='change_id'),
    pytest.param(lambda request: (request.session.invalidate(),
                                  request.session.__setitem__('x', 1)), id='invalidate+write'),
    pytest.param(lambda request: request.session.expire(), id='expire'),
    pytest.param(lambda request: request.session.__setitem__('x', 1), id='write'),
])
def test_a_request_that_read_before_a_login_leaves_the_login_alone(
        backend_collection, build_app, clock, after):
    app, old, login, response = start_then_login(backend_collection, build_app, read, after)
    assert session_cookie(response) is None                   # the login cookie stands
    login_cookie = session_cookie(login).split(';')[0].split('=', 1)[1]
    browser = app.visitor(login_cookie)
    assert data(browser) == {'visits': 1, 'auth.userid': 'alice'}
    # Only the login's session is stored: nothing of the stale request, the tombstone kept.
    assert [(doc['user'], doc['data']['visits'])
            for doc in live(backend_collection, clock.now)] == [('alice', 1)]
    assert backend_collection.count_documents({'retired': {'$exists': True}}) == 1


# -- 3. an old secret and a retired id ----------------------------------------------------

def test_an_old_secret_cookie_of_a_retired_id_is_not_signed_again(backend_collection, build_app):
    before = build_app(backend_collection, secret=OLD_SECRET)
    before.get('/session?set=visits:1')
    old_cookie = before.cookies['session']
    app = build_app(backend_collection, old_secrets=[OLD_SECRET])
    app.set_cookie('session', old_cookie)
    app.get(LOGIN)                                            # the login: a new id, new secret
    stale = app.visitor(old_cookie)                           # a parallel request, old cookie
    for path in ('/session', '/session?blind=1&set=x:1', '/untouched'):
        assert session_cookie(stale.get(path)) is None
    assert data(app)['auth.userid'] == 'alice'


@pytest.mark.parametrize('after', [
    pytest.param(lambda request: None, id='read only'),
    pytest.param(lambda request: request.session.options.__setitem__('no_store', True),
                 id='no_store'),
    pytest.param(lambda request: request.session.options.__setitem__('late_store', True),
                 id='late_store'),
])
def test_an_old_secret_cookie_is_not_signed_again_once_a_parallel_login_retired_it(
        backend_collection, build_app, after):
    before = build_app(backend_collection, secret=OLD_SECRET)
    before.get('/session?set=visits:1')
    app = build_app(backend_collection, old_secrets=[OLD_SECRET],
                    views={'slow': login_during(read, after)})
    app.set_cookie('session', before.cookies['session'])
    outcome = {}
    response = app.get('/slow', extra_environ={'tests.app': app.app, 'tests.outcome': outcome})
    assert session_cookie(outcome['login']) is not None          # the login's new cookie
    assert session_cookie(response) is None                       # is not replaced


def test_an_old_secret_cookie_of_a_dead_id_is_cleared_not_signed_again(backend_collection,
                                                                        build_app):
    before = build_app(backend_collection, secret=OLD_SECRET)
    before.get('/session?set=visits:1')
    old_cookie = before.cookies['session']
    before.get('/session?opt=expire')                         # logged out
    app = build_app(backend_collection, old_secrets=[OLD_SECRET])
    app.set_cookie('session', old_cookie)
    assert 'Max-Age=0' in session_cookie(app.get('/session?read=visits'))


# -- 4. flash on a session that is no more ------------------------------------------------

def flash_peek_flash(request):
    session = request.session
    session.flash('a')
    peeked = list(session.peek_flash())
    session.flash('b')
    return Response(json={'peeked': peeked, 'in': '_f_' in session})


def flash_pop(request):
    request.session.flash('a')
    return Response(json=request.session.pop_flash())


@pytest.mark.parametrize('ending', ['logout', 'expiry', 'revoked'])
def test_flash_on_a_dead_session_keeps_every_message(backend_collection, build_app, clock,
                                                     ending):
    app = build_app(backend_collection, timeout=60, reissue_time=10,
                    views={'flash': flash_peek_flash, 'pop': flash_pop})
    app.get('/session?set=auth.userid:"alice"')
    dead = app.cookies['session']
    if ending == 'logout':
        app.get('/session?opt=expire')
    elif ending == 'expiry':
        clock.advance(61)
    else:
        assert app.session_factory.revoke_user('alice') == 1
    browser = app.visitor(dead)
    assert browser.get('/flash').json == {'peeked': ['a'], 'in': True}
    assert browser.get('/session').json['data'] == {'_f_': ['a', 'b']}
    assert app.visitor(dead).get('/pop').json == ['a']


# -- 5. and 6. a session's own timeout ----------------------------------------------------

@pytest.mark.parametrize('value', [float('nan'), float('inf'), -float('inf'), 1e300, 10 ** 30,
                                   0, -5, True, '60'])
def test_options_timeout_refuses_what_no_expiry_can_be_computed_from(embedded_collection,
                                                                       build_app, value):
    def remember(request):
        with pytest.raises(ValueError, match=r"options\['timeout'\] is a positive, finite"):
            request.session.options['timeout'] = value
        request.session['x'] = 1
        return Response('ok')
    app = build_app(embedded_collection, views={'remember': remember})
    assert session_cookie(app.get('/remember')) is not None   # the request itself succeeds


@pytest.mark.parametrize('option', ['timeout', 'reissue_time', 'absolute_timeout',
                                    'rotation_grace', 'cookie_max_age'])
@pytest.mark.parametrize('value', [float('nan'), float('inf'), 1e300])
def test_the_factory_refuses_durations_no_expiry_can_be_computed_from(embedded_collection,
                                                                        option, value):
    from pyramid_mongosession import MongoSessionFactory
    with pytest.raises(ValueError, match=option):
        MongoSessionFactory(embedded_collection, SECRET, **{option: value})


def test_a_stored_timeout_no_expiry_can_be_computed_from_is_ignored(backend_collection,
                                                                     build_app, caplog):
    app = build_app(backend_collection)
    app.get('/session?set=x:1')
    backend_collection.update_one(LIVE, {'$set': {'timeout': 1e300}})
    with caplog.at_level('WARNING', logger='pyramid_mongosession'):
        assert app.get('/session?set=y:2').json['data'] == {'x': 1, 'y': 2}
    assert any('timeout' in record.getMessage() for record in caplog.records)


def test_a_timeout_of_its_own_shorter_than_reissue_time_is_an_idle_timeout(
        backend_collection, build_app, clock):
    def remember(request):
        request.session['auth.userid'] = 'alice'
        request.session.options['timeout'] = 60
        return Response('ok')
    app = build_app(backend_collection, views={'remember': remember})   # reissue_time 120
    app.get('/remember')
    for _ in range(6):          # read every 30 s for three minutes: never idle for 60 s
        clock.advance(30)
        assert data(app) == {'auth.userid': 'alice'}
    clock.advance(61)
    assert data(app) == {}


# -- 7. user ids are values, not queries --------------------------------------------------

@pytest.fixture
def two_users(collection, build_app):
    app = build_app(collection)
    for user in ('alice', 'bob'):
        app.reset()
        app.get('/session?set=auth.userid:"%s"' % user)
    return app


@pytest.mark.parametrize('userid', [{'$exists': True}, {'$ne': None}, ['alice'], 1.5, True])
def test_user_ids_that_are_not_scalars_are_refused_by_name(two_users, collection, userid):
    factory = two_users.session_factory
    with pytest.raises(SessionValueError, match='user id'):
        factory.user_sessions(userid)
    with pytest.raises(SessionValueError, match='user id'):
        factory.revoke_user(userid)
    with pytest.raises(SessionValueError, match='user id'):
        factory.revoke_session('somehandle', userid)
    assert collection.count_documents(LIVE) == 2              # nobody was revoked


def test_a_user_id_that_is_not_a_scalar_is_refused_at_assignment(backend_collection, build_app):
    def log_in_as_list(request):
        with pytest.raises(SessionValueError, match="'auth.userid'"):
            request.session['auth.userid'] = [1, 2]
        request.session['auth.userid'] = 1
        return Response('ok')
    app = build_app(backend_collection, views={'login': log_in_as_list})
    app.get('/login')
    assert [record.handle for record in app.session_factory.user_sessions(1)] != []
    assert app.session_factory.user_sessions(2) == []


def test_the_cli_refuses_a_user_id_that_is_a_query(two_users, collection, run, tmp_path,
                                                   mongodb_url, database):
    ini = write_ini(tmp_path / 'app.ini', mongodb_url, database.name)
    status, out, err = run('revoke', str(ini), '--user', '{"$exists": true}')
    assert status == 2 and 'a user id is a string' in err
    status, out, err = run('sessions', str(ini), '[1, 2]')
    assert status == 2 and 'a user id is a string' in err
    assert collection.count_documents(LIVE) == 2


# -- 8. and 9. a write-only change_id meets revoke_user, and a dropped connection ---------------

@pytest.mark.parametrize('moment', ['before insert', 'after insert', 'before take', 'after take'])
def test_revoke_user_ends_a_session_that_is_moving(collection, build_app, monkeypatch, moment):
    app = build_app(collection)
    app.get('/session?set=auth.userid:"alice"')
    factory = app.session_factory
    store = factory.store
    revoked = []

    def revoking(name, when):
        real = getattr(store, name)

        def method(*args, **kwargs):
            if moment == 'before ' + when and not revoked:
                revoked.append(factory.revoke_user('alice'))
            result = real(*args, **kwargs)
            if moment == 'after ' + when and not revoked:
                revoked.append(factory.revoke_user('alice'))
            return result
        monkeypatch.setattr(store, name, method)
    revoking('insert', 'insert')
    revoking('pop', 'take')
    app.get('/session?blind=1&set=role:"admin"&opt=change_id')  # a write-only change_id
    assert revoked, 'the move did not reach the moment of the revocation'
    assert factory.user_sessions('alice') == []
    assert 'auth.userid' not in data(app)


def test_a_dropped_connection_during_a_write_only_change_id_loses_nothing(
        collection, build_app, monkeypatch):
    app = build_app(collection, outage_probe_interval=PROBE)
    app.get('/session?set=cart:["book"]')
    real_insert = pymongo.collection.Collection.insert_one
    dropped = []

    def insert_one(self, document, *args, **kwargs):
        if self.name == collection.name and not dropped:
            dropped.append(document['_id'])
            raise pymongo.errors.AutoReconnect('connection closed (injected)')
        return real_insert(self, document, *args, **kwargs)
    monkeypatch.setattr(pymongo.collection.Collection, 'insert_one', insert_one)
    with pytest.raises(SessionBackendError, match='unreachable'):
        app.get(LOGIN)
    assert dropped
    # Once the breaker lets calls through again, the old cookie still names the
    # session, with its data; nothing became a tombstone.
    assert eventually(lambda: data(app)) == {'cart': ['book']}
    assert collection.count_documents({'retired': {'$exists': True}}) == 0
    assert session_cookie(app.get(LOGIN)) is not None            # and the login goes through
    assert data(app) == {'cart': ['book'], 'auth.userid': 'alice'}


# -- 10. write-only writes and the document limit -----------------------------------------

def test_write_only_writes_never_grow_a_session_past_the_document_limit(collection, build_app):
    def fill(request):
        request.session['big'] = 'x' * (MAX_DOCUMENT_SIZE - 14 * 1024)
        return Response('ok')

    def add(request):
        request.session[request.params['key']] = 'y' * (15 * 1024)   # without reading
        return Response('ok')
    app = build_app(collection, views={'fill': fill, 'add': add})
    app.get('/fill')
    with pytest.raises(SessionValueError, match='larger than MongoDB stores'):
        app.get('/add?key=one')
    with pytest.raises(SessionValueError, match='larger than MongoDB stores'):
        app.get('/add?key=two')
    [document] = collection.find(LIVE, {'data.big': 0})
    assert set(document) >= {'size'} and 'one' not in document['data']


def test_write_only_writes_keep_a_size_bound_of_the_session(collection, build_app):
    app = build_app(collection)
    app.get('/session?set=a:"%s"' % ('x' * 1000))
    for n in range(3):
        app.get('/session?blind=1&set=b%d:"%s"' % (n, 'y' * 500))
    [document] = collection.find(LIVE)
    measured = sum(len(json.dumps(value)) for value in document['data'].values())
    assert document['size'] >= measured


# -- 11. key rotation and write-only requests ----------------------------------------------

def test_a_write_only_request_seals_old_values_again_before_moving_the_expiry(
        backend_collection, build_app, clock):
    old, new = new_key(), new_key()
    before = build_app(backend_collection, encryption_keys=[old], timeout=600)
    before.get('/session?set=cart:["book"]')
    swapped = build_app(backend_collection, encryption_keys=[new, old], timeout=600)
    swapped.set_cookie('session', before.cookies['session'])
    # Write-only requests keep the session alive past the old key's schedule...
    for _ in range(3):
        clock.advance(400)
        swapped.get('/session?blind=1&set=seen:1')
    # ...so, the old key removed on schedule (timeout after the swap), the session is whole.
    after = build_app(backend_collection, encryption_keys=[new], timeout=600)
    after.set_cookie('session', before.cookies['session'])
    assert data(after) == {'cart': ['book'], 'seen': 1}


# -- 12. remember-me and write-only requests ------------------------------------------------

def test_a_write_only_request_sends_the_remember_me_cookie_again_when_the_expiry_slides(
        backend_collection, build_app, clock):
    def remember(request):
        request.session['auth.userid'] = 'alice'
        request.session.options['timeout'] = MONTH
        return Response('ok')
    app = build_app(backend_collection, views={'remember': remember})
    assert 'Max-Age=%d' % MONTH in session_cookie(app.get('/remember'))
    clock.advance(3600)
    cookie = session_cookie(app.get('/session?blind=1&set=seen:1'))
    assert cookie is not None and 'Max-Age=%d' % MONTH in cookie
    assert data(app) == {'auth.userid': 'alice', 'seen': 1}


# -- also ---------------------------------------------------------------------------------

def test_a_key_that_is_not_unicode_text_is_refused_at_assignment_by_name(embedded_collection,
                                                                        build_app):
    def view(request):
        with pytest.raises(SessionValueError, match=r"\\ud800"):
            request.session['\ud800'] = 1
        return Response('ok')
    build_app(embedded_collection, views={'view': view}).get('/view')


def test_stats_count_sessions_not_the_tombstones_of_retired_ids(collection, build_app, clock):
    app = build_app(collection)
    app.get('/session?set=visits:1')
    app.get(LOGIN)
    assert collection.count_documents({}) == 2                 # the session and a tombstone
    assert app.session_factory.maintenance.session_counts(clock.now) == (1, 0)



def test_a_timeout_of_its_own_under_no_store_changes_neither_the_store_nor_the_cookie(
        backend_collection, build_app):
    def remember_but_store_nothing(request):
        request.session.get('a')
        request.session.options['timeout'] = MONTH
        request.session.options['no_store'] = True
        return Response('ok')
    before = build_app(backend_collection, secret=OLD_SECRET)
    before.get('/session?set=a:1')
    app = build_app(backend_collection, old_secrets=[OLD_SECRET],
                    views={'remember': remember_but_store_nothing})
    app.set_cookie('session', before.cookies['session'])
    # Signed anew (an old secret signed it), as the browser-session cookie it is.
    cookie = session_cookie(app.get('/remember'))
    assert cookie is not None and 'Max-Age' not in cookie
    [document] = backend_collection.find(LIVE)
    assert 'timeout' not in document


def test_a_late_store_response_does_not_slide_a_cookie_that_a_parallel_login_retired(
        backend_collection, build_app, clock):
    """Under late_store the cookie goes before the write that would find the id retired."""
    def remember(request):
        request.session['visits'] = 1
        request.session.options['timeout'] = MONTH
        return Response('ok')

    def stream(request):
        request.session.options['late_store'] = True
    app = build_app(backend_collection, views={
        'remember': remember, 'slow': login_during(read, stream)})
    app.get('/remember')
    clock.advance(3600)                        # a refresh of the expiry is due
    outcome = {}
    response = app.get('/slow', extra_environ={'tests.app': app.app, 'tests.outcome': outcome})
    assert session_cookie(outcome['login']) is not None
    assert session_cookie(response) is None


def test_a_new_session_is_created_when_it_is_first_stored(backend_collection, build_app,
                                                          clock, monkeypatch):
    # Its creation, its last_seen and its expiry come from one reading of the
    # clock, at the end of the request that stores it, even though the clock
    # moves while the view runs, and between any two readings (1 ms a reading).
    def slow(request):
        request.session['a'] = 1
        clock.advance(30)
        return Response('ok')
    app = build_app(backend_collection, views={'slow': slow})
    real_call = type(clock).__call__

    def ticking(self):
        self.advance(0.001)
        return real_call(self)
    monkeypatch.setattr(type(clock), '__call__', ticking)
    app.get('/slow')
    document = backend_collection.find_one(LIVE)
    assert document['created'] == document['last_seen']
    assert document['expires'] == document['created'] + datetime.timedelta(seconds=1200)
