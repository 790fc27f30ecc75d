"""The end of a request: what is stored and what the cookie says, in every case.

``test_decision_matrix`` runs every combination of the four flags with every
kind of session, changed or not, streamed or not, against the rules as
``docs/options.rst`` states them (``expected`` below is written from that page,
not from the code). The other tests pin down edge cases found in the field.
"""
import datetime
import itertools

import pytest
import webtest
from pyramid.response import Response

from pyramid_mongosession import MongoSessionFactory

from .conftest import LIVE, SECRET, make_config

FLAGS = ('change_id', 'expire', 'no_store', 'late_store')


def flag_sets():
    for size in range(len(FLAGS) + 1):
        yield from itertools.combinations(FLAGS, size)


def matrix_view(request):
    """Sets the flags named in the query, then changes the session before or while streaming."""
    session = request.session
    if 'invalidate' in request.GET:
        session.invalidate()
    for flag in request.GET.getall('opt'):
        session.options[flag] = True
    change = 'change' in request.GET

    if 'stream' not in request.GET:
        if change:
            session['b'] = 2
        return Response('done')

    def body():
        yield b'one,'
        if change:
            session['b'] = 2
        yield b'two'
    return Response(app_iter=body(), content_length=7)


def expected(state, flags, changed, streamed):
    """``(cookie, stored data)`` after one request, as docs/options.rst says.

    cookie is 'none' (no Set-Cookie), 'clear' or 'new id'; stored data is the
    only document left (under the cookie's id), or None for no document.
    """
    late = 'late_store' in flags
    # Without late_store the session is written when the headers go out, so a
    # change made while the body streams comes too late.
    change_made = changed and (late or not streamed)
    before = {'a': 1} if state == 'stored' else {}
    after = dict(before, b=2) if change_made else before
    had_cookie = state != 'new'
    if 'expire' in flags:                                  # expire beats everything
        return ('clear' if had_cookie else 'none'), None
    stores = 'no_store' not in flags or 'change_id' in flags   # change_id beats no_store
    if state == 'stored':
        if 'change_id' in flags:
            return 'new id', after
        return 'none', (after if stores else before)
    # A new or invalidated session gets an id once it has something to store;
    # under late_store, when the headers go out (the body may still store).
    if stores and (after or late):
        return 'new id', after
    return ('clear' if had_cookie else 'none'), None


def cookie_action(response):
    header = response.headers.get('Set-Cookie')
    if header is None:
        return 'none'
    return 'clear' if 'Max-Age=0' in header else 'new id'


@pytest.fixture
def matrix_app(backend_collection):
    config = make_config(MongoSessionFactory(backend_collection, SECRET))
    config.add_route('matrix', '/matrix')
    config.add_view(matrix_view, route_name='matrix')
    return config.make_wsgi_app()


@pytest.mark.parametrize('streamed', [False, True], ids=['body', 'streamed'])
@pytest.mark.parametrize('changed', [False, True], ids=['unchanged', 'changed'])
@pytest.mark.parametrize('state', ['new', 'stored', 'invalidated'])
@pytest.mark.parametrize('flags', list(flag_sets()), ids=lambda flags: '+'.join(flags) or 'none')
def test_decision_matrix(matrix_app, backend_collection, flags, state, changed, streamed):
    app = webtest.TestApp(matrix_app)
    old_cookie = None
    if state != 'new':
        app.get('/session?set=a:1')
        old_cookie = app.cookies['session']
    query = [('opt', flag) for flag in flags]
    query += [(name, '1') for name, on in (('invalidate', state == 'invalidated'),
                                             ('change', changed), ('stream', streamed)) if on]
    response = app.get('/matrix', params=query)

    cookie, data = expected(state, flags, changed, streamed)
    assert cookie_action(response) == cookie
    documents = list(backend_collection.find(LIVE))
    if data is None:
        assert documents == []
        return
    assert [document['data'] for document in documents] == [data]
    # The browser's cookie names that document, and nothing else loads it.
    assert app.get('/session').json['data'] == data
    if cookie == 'new id':
        assert app.cookies['session'] != old_cookie
        if old_cookie is not None:
            replay = webtest.TestApp(matrix_app)
            replay.set_cookie('session', old_cookie)
            assert replay.get('/session').json['data'] == {}


# -- change_id beats no_store, also for a new session ---------------------------------

@pytest.mark.parametrize('query', [
    'set=a:1&opt=change_id&opt=no_store',
    'set=a:1&opt=change_id&opt=no_store&opt=late_store',
    'invalidate=1&set=a:1&opt=change_id&opt=no_store',
])
def test_change_id_with_no_store_stores_a_new_session(app, collection, query):
    if query.startswith('invalidate'):
        app.get('/session?set=old:1')
    response = app.get('/session?' + query)
    assert 'Max-Age=0' not in response.headers['Set-Cookie']
    assert [doc['data'] for doc in collection.find()] == [{'a': 1}]
    assert app.get('/session').json['data'] == {'a': 1}


# -- late_store on responses whose body is never sent, or only in part ------------------

@pytest.fixture
def make_browser(build_app):
    """``make_browser(collection, cookie=None, **views)``: an application with these views,
    holding ``cookie`` (see build_app)."""
    def make(collection, cookie=None, **views):
        app = build_app(collection, views=views)
        if cookie is not None:
            app.set_cookie('session', cookie)
        return app
    return make


def late_view(request):
    request.session.options['late_store'] = True
    request.session['user'] = 'alice'

    def body():
        yield b'0123456789'
        request.session['streamed'] = True
    response = Response(app_iter=body(), content_length=10, conditional_response=True)
    response.etag = 'v1'
    return response


@pytest.mark.parametrize('request_kind', ['GET', 'HEAD', 'If-None-Match', 'Range'])
def test_late_store_stores_whatever_happens_to_the_body(collection, request_kind, make_browser):
    app = make_browser(collection, late=late_view)
    if request_kind == 'HEAD':
        response = app.head('/late')
    elif request_kind == 'If-None-Match':
        response = app.get('/late', headers={'If-None-Match': '"v1"'}, status=304)
    elif request_kind == 'Range':
        response = app.get('/late', headers={'Range': 'bytes=0-3'}, status=206)
        assert response.body == b'0123'
    else:
        response = app.get('/late')
    assert 'session=' in response.headers['Set-Cookie']
    # The cookie the browser got names a stored session.
    data = app.get('/session').json['data']
    assert data['user'] == 'alice'
    assert data.get('streamed') is (True if request_kind == 'GET' else None)
    assert collection.count_documents({}) == 1


def broken_stream(ending):
    def view(request):
        session = request.session
        session.options['late_store'] = True
        if ending == 'invalidate':
            session.invalidate()
        elif ending == 'expire':
            session.options['expire'] = True
        session['a'] = 2

        def body():
            yield b'half'
            raise RuntimeError('the stream broke')
        return Response(app_iter=body())
    return view


def test_late_store_stores_nothing_when_the_body_raises(app, collection, make_browser):
    app.get('/session?set=a:1')
    broken = make_browser(collection, app.cookies['session'], broken=broken_stream(None))
    with pytest.raises(RuntimeError):
        broken.get('/broken')
    assert app.get('/session').json['data'] == {'a': 1}


@pytest.mark.parametrize('ending', ['invalidate', 'expire'])
def test_an_ended_session_is_gone_even_when_the_body_raises(app, collection, ending, make_browser):
    app.get('/session?set=user:"alice"')
    old_cookie = app.cookies['session']
    broken = make_browser(collection, old_cookie, broken=broken_stream(ending))
    with pytest.raises(RuntimeError):
        broken.get('/broken')
    assert collection.count_documents({}) == 0
    assert make_browser(collection, old_cookie).get('/session').json['data'] == {}


# -- a session that expires while a request is in flight ---------------------------------

def test_change_id_after_the_idle_expiry_does_not_revive_the_session(app, collection, make_browser):
    app.get('/session?set=user:"alice"')

    def login(request):
        request.session.get('user')
        # The session's idle timeout passes while this request runs.
        collection.update_many({}, {'$set': {'expires': datetime.datetime(2000, 1, 1)}})
        request.session['role'] = 'admin'
        request.session.options['change_id'] = True
        return Response('ok')
    late = make_browser(collection, app.cookies['session'], login=login)
    response = late.get('/login')
    # Nothing lives on: not under a new id, and the expired document is no tombstone.
    assert 'Set-Cookie' not in response.headers
    assert collection.count_documents({'expires': {'$gt': datetime.datetime(2001, 1, 1)}}) == 0
    assert collection.count_documents({'retired': {'$exists': True}}) == 0
    assert late.get('/session').json['data'] == {}


# -- created -------------------------------------------------------------------------

def test_created_is_the_same_on_every_request(collection, make_browser):
    def create(request):
        request.session['a'] = 1
        return Response(json=request.session.created)
    app = make_browser(collection, create=create,
                  created=lambda request: Response(json=request.session.created))
    created = app.get('/create').json
    assert app.get('/created').json == created
    assert app.get('/created').json == created

