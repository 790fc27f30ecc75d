"""Plack::Middleware::Session's per-request options, against the real server."""
import threading

import pytest
import webtest
from pyramid.interfaces import ISessionFactory
from pyramid.response import Response

from pyramid_mongosession import MongoSessionFactory
from pyramid_mongosession.documents import document_id

from .conftest import LIVE, SECRET, make_config


def session_cookie(app):
    return app.cookies.get('session')


def current_id(app):
    """The id the app's cookie names now, as a later request sees it."""
    return app.get('/session?quiet=1').json['id']


def stored(collection):
    return {doc['_id']: doc['data'] for doc in collection.find(LIVE)}


# -- Plack's own scenarios (t/lib/TestSession*.pm) ----------------------------

def test_plack_scenarios(make_app, collection):
    first = make_app()
    body = first.get('/session?set=foo:1&set=bar:2').json
    assert body['new'] is True and body['id'] is None   # no id until something is stored
    first_id = current_id(first)
    assert first.get('/session').json['data'] == {'foo': 1, 'bar': 2}

    second = make_app()
    second.get('/session?set=foo:10')
    second_id = current_id(second)
    assert second_id and first_id and second_id != first_id

    first.get('/session?del=foo')
    assert first.get('/session').json['data'] == {'bar': 2}       # a removed key stays removed
    assert second.get('/session').json['data'] == {'foo': 10}     # the other session is untouched

    first.get('/session?opt=expire')
    body = first.get('/session').json
    assert body['new'] is True and body['data'] == {}             # expired: a fresh, empty session
    first.get('/session?set=x:1')
    assert current_id(first) not in (first_id, None)


def test_malformed_id_is_replaced(app, collection):
    app.set_cookie('session', '../wrong')
    assert app.get('/session?set=a:1').json['new'] is True
    assert len(current_id(app)) == 43
    assert list(stored(collection).values()) == [{'a': 1}]


# -- each option ----------------------------------------------------------------

def test_change_id_carries_data_and_retires_old_id(app, collection):
    app.get('/session?set=user:"alice"')
    old_id = current_id(app)
    old_cookie = session_cookie(app)
    response = app.get('/session?opt=change_id&set=role:"admin"')
    new_id = current_id(app)
    assert new_id != old_id
    assert 'session=' in response.headers['Set-Cookie']
    assert app.get('/session').json['data'] == {'user': 'alice', 'role': 'admin'}
    assert list(stored(collection)) == [document_id(new_id)]
    # The old cookie loads nothing.
    replay = webtest.TestApp(app.app)
    replay.set_cookie('session', old_cookie)
    assert replay.get('/session').json == {'id': None, 'new': True, 'data': {}}


def test_expire_deletes_and_clears_cookie(app, collection):
    app.get('/session?set=a:1')
    response = app.get('/session?opt=expire&set=b:2')
    cookie = response.headers['Set-Cookie']
    assert cookie.startswith('session=;') and 'Max-Age=0' in cookie
    assert stored(collection) == {}


def test_no_store_writes_nothing(app, collection):
    app.get('/session?set=a:1')
    response = app.get('/session?opt=no_store&set=a:2&set=b:3')
    assert 'Set-Cookie' not in response.headers
    assert app.get('/session').json['data'] == {'a': 1}


def test_no_store_on_a_new_session_sets_no_cookie(app, collection):
    response = app.get('/session?opt=no_store&set=a:1')
    assert 'Set-Cookie' not in response.headers
    assert stored(collection) == {}


def test_id_is_read_only(app):
    captured = {}

    def view(request):
        options = request.session.options
        captured['before'] = options['id']
        with pytest.raises(TypeError):
            options['id'] = 'chosen-by-the-client'
        with pytest.raises(KeyError):
            options['chnage_id'] = True
        return Response('ok')
    factory = app.app.registry.queryUtility(ISessionFactory)
    config = make_config(factory)
    config.add_route('view', '/view')
    config.add_view(view, route_name='view')
    test_app = webtest.TestApp(config.make_wsgi_app())
    test_app.get('/view')
    assert captured['before'] is None
    assert sorted(dict(app.get('/session').json)) == ['data', 'id', 'new']


def test_options_mapping_lists_plack_keys(app):
    app.get('/session?set=a:1')
    options = app.get('/session?quiet=1').json
    assert options['id'] and options['new'] is False


# -- precedence ------------------------------------------------------------------

def test_expire_beats_change_id(app, collection):
    app.get('/session?set=a:1')
    response = app.get('/session?opt=change_id&opt=expire')
    assert stored(collection) == {}
    assert 'Max-Age=0' in response.headers['Set-Cookie']


def test_expire_beats_no_store(app, collection):
    app.get('/session?set=a:1')
    app.get('/session?opt=no_store&opt=expire')
    assert stored(collection) == {}


def test_change_id_beats_no_store(app, collection):
    """Plack's docs, not its code: the session is stored under the new id."""
    app.get('/session?set=a:1')
    old_id = current_id(app)
    app.get('/session?opt=no_store&opt=change_id&set=b:2')
    new_id = current_id(app)
    assert new_id != old_id
    assert stored(collection) == {document_id(new_id): {'a': 1, 'b': 2}}
    assert app.get('/session').json['data'] == {'a': 1, 'b': 2}


def test_invalidate_then_write_starts_a_new_session(app, collection):
    app.get('/session?set=a:1')
    old_id = current_id(app)
    app.get('/session?invalidate=1&set=b:2')
    new_id = current_id(app)
    assert new_id not in (None, old_id)
    assert stored(collection) == {document_id(new_id): {'b': 2}}


def test_invalidate_without_data_clears_cookie(app, collection):
    app.get('/session?set=a:1')
    response = app.get('/session?invalidate=1')
    assert 'Max-Age=0' in response.headers['Set-Cookie']
    assert stored(collection) == {}


# -- late_store and streaming ------------------------------------------------------

def streaming_view(request):
    session = request.session
    session.options['late_store'] = 'late' in request.GET

    def body():
        yield b'first chunk\n'
        session['streamed'] = session.get('streamed', 0) + 1
        yield b'second chunk\n'
    return Response(app_iter=body())


@pytest.fixture
def streaming_app(collection):
    config = make_config(MongoSessionFactory(collection, SECRET))
    config.add_route('stream', '/stream')
    config.add_view(streaming_view, route_name='stream')
    return webtest.TestApp(config.make_wsgi_app())


def test_late_store_saves_changes_made_while_streaming(streaming_app, collection):
    streaming_app.get('/session?set=a:1')
    streaming_app.get('/stream?late=1')
    streaming_app.get('/stream?late=1')
    assert streaming_app.get('/session').json['data'] == {'a': 1, 'streamed': 2}


def test_late_store_on_a_new_session(streaming_app, collection):
    response = streaming_app.get('/stream?late=1')
    assert 'session=' in response.headers['Set-Cookie']
    assert streaming_app.get('/session').json['data'] == {'streamed': 1}


def test_without_late_store_streamed_changes_are_lost(streaming_app, collection):
    streaming_app.get('/session?set=a:1')
    streaming_app.get('/stream')
    assert streaming_app.get('/session').json['data'] == {'a': 1}


# -- exception views follow the same rules -------------------------------------------

def test_exception_view_response_still_stores_and_expires(collection):
    class Boom(Exception):
        pass

    def failing(request):
        request.session['seen'] = True
        if 'expire' in request.GET:
            request.session.options['expire'] = True
        raise Boom()
    config = make_config(MongoSessionFactory(collection, SECRET))
    config.add_route('fail', '/fail')
    config.add_view(failing, route_name='fail')
    config.add_exception_view(lambda exc, request: Response('handled', status=500), context=Boom)
    app = webtest.TestApp(config.make_wsgi_app())
    app.get('/fail', status=500)
    assert app.get('/session').json['data'] == {'seen': True}
    response = app.get('/fail?expire=1', status=500)
    assert 'Max-Age=0' in response.headers['Set-Cookie']
    assert stored(collection) == {}


# -- no resurrection: requests still in flight with an old id ---------------------------

class Gate:
    """Lets a test hold a request between loading its session and finishing."""

    def __init__(self):
        self.loaded = threading.Event()
        self.release = threading.Event()


def gated_app(collection, gate):
    def slow(request):
        request.session.get('a')
        gate.loaded.set()
        assert gate.release.wait(10)
        request.session['late_write'] = True
        if 'rotate' in request.GET:
            request.session.options['change_id'] = True
        return Response('ok')
    config = make_config(MongoSessionFactory(collection, SECRET))
    config.add_route('slow', '/slow')
    config.add_view(slow, route_name='slow')
    return config.make_wsgi_app()


@pytest.mark.parametrize('racing_option', ['expire', 'change_id'])
@pytest.mark.parametrize('slow_request', ['/slow', '/slow?rotate=1'])
def test_stale_request_cannot_resurrect(collection, racing_option, slow_request):
    gate = Gate()
    wsgi = gated_app(collection, gate)
    app = webtest.TestApp(wsgi)
    app.get('/session?set=a:1')
    old_id = current_id(app)
    cookie = session_cookie(app)

    stale = webtest.TestApp(wsgi)
    stale.set_cookie('session', cookie)
    thread = threading.Thread(target=stale.get, args=(slow_request,))
    thread.start()
    assert gate.loaded.wait(10)
    app.get('/session?opt=%s' % racing_option)
    racer_id = app.cookies.get('session') and current_id(app)
    gate.release.set()
    thread.join(10)
    assert not thread.is_alive()

    documents = stored(collection)
    assert document_id(old_id) not in documents
    if racing_option == 'expire':
        assert documents == {}
    else:
        # Only the racer's new id holds the session; the stale write went nowhere.
        assert documents == {document_id(racer_id): {'a': 1}}


def test_convenience_methods_set_the_options(collection):
    seen = {}

    def view(request):
        request.session.change_id()
        request.session.expire()
        seen.update(request.session.options)
        return Response('ok')
    config = make_config(MongoSessionFactory(collection, SECRET))
    config.add_route('conv', '/conv')
    config.add_view(view, route_name='conv')
    webtest.TestApp(config.make_wsgi_app()).get('/conv')
    assert seen == {'change_id': True, 'expire': True, 'no_store': False,
                    'late_store': False, 'timeout': None, 'id': None}
