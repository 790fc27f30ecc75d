"""Edge cases: option combinations, streaming, concurrency across change_id, odd values."""
import threading

import pymongo
import pytest
import webtest
from pyramid.response import Response

from pyramid_mongosession import (
    MongoSessionFactory, SessionBackendError, SessionConflict, SessionValueError)

from .conftest import LIVE, SECRET, make_config


def app_with(factory, **views):
    config = make_config(factory)
    for name, view in views.items():
        config.add_route(name, '/' + name)
        config.add_view(view, route_name=name)
    return webtest.TestApp(config.make_wsgi_app())


def paused_view(loaded, release, action):
    def view(request):
        request.session.get('x')
        loaded.set()
        assert release.wait(10)
        action(request.session)
        return Response('ok')
    return view


def race(collection, action, **options):
    """A slow request loads the session, another writes 'cart', then the slow one acts."""
    loaded, release = threading.Event(), threading.Event()
    factory = MongoSessionFactory(collection, SECRET, **options)
    app = app_with(factory, slow=paused_view(loaded, release, action))
    app.get('/session?set=x:1')
    slow = webtest.TestApp(app.app)
    slow.set_cookie('session', app.cookies['session'])
    outcome = {}

    def run():
        try:
            outcome['response'] = slow.get('/slow')
        except Exception as exc:  # examined by the caller
            outcome['error'] = exc
    thread = threading.Thread(target=run)
    thread.start()
    assert loaded.wait(10)
    app.get('/session?set=cart:["apple"]')
    release.set()
    thread.join(10)
    return slow, outcome


def login(session):
    session['user'] = 'alice'
    session.options['change_id'] = True


def test_change_id_keeps_a_concurrent_write_to_another_key(atomic_collection):
    slow, outcome = race(atomic_collection, login)
    assert 'error' not in outcome
    assert slow.get('/session').json['data'] == {'x': 1, 'user': 'alice', 'cart': ['apple']}
    assert atomic_collection.count_documents(LIVE) == 1


def test_change_id_with_detect_conflicts_raises_and_keeps_the_old_session(atomic_collection):
    slow, outcome = race(atomic_collection, login, detect_conflicts=True)
    assert isinstance(outcome.get('error'), SessionConflict)
    docs = list(atomic_collection.find())
    assert [d['data'] for d in docs] == [{'x': 1, 'cart': ['apple']}]


# -- late_store ------------------------------------------------------------------

def streaming(action):
    def view(request):
        session = request.session
        session.options['late_store'] = True

        def body():
            yield b'head\n'
            action(session)
            yield b'tail\n'
        return Response(app_iter=body(), content_length=10)
    return view


def test_late_store_with_change_id_on_a_new_session(collection):
    def act(session):
        session['user'] = 'alice'
        session.options['change_id'] = True
    app = app_with(MongoSessionFactory(collection, SECRET), stream=streaming(act))
    app.get('/stream')
    assert app.get('/session').json['data'] == {'user': 'alice'}


def test_late_store_invalidate_while_streaming_retires_the_old_session(collection):
    def act(session):
        session.invalidate()
        session['notice'] = 'signed out'
    app = app_with(MongoSessionFactory(collection, SECRET), stream=streaming(act))
    app.get('/session?set=user:"alice"')
    app.get('/stream')
    assert collection.count_documents({}) == 0
    assert app.get('/session').json['data'] == {}


def test_late_store_keeps_content_length(collection):
    app = app_with(MongoSessionFactory(collection, SECRET),
                   stream=streaming(lambda session: session.__setitem__('a', 1)))
    assert app.get('/stream').headers['Content-Length'] == '10'


def test_late_store_saves_nothing_when_the_stream_breaks(collection):
    def view(request):
        request.session.options['late_store'] = True

        def body():
            yield b'partial'
            request.session['paid'] = True
            raise RuntimeError('the stream broke')
        return Response(app_iter=body())
    app = app_with(MongoSessionFactory(collection, SECRET), broken=view)
    app.get('/session?set=order:"pending"')
    with pytest.raises(RuntimeError):
        app.get('/broken')
    assert app.get('/session').json['data'] == {'order': 'pending'}


# -- odd values and settings ----------------------------------------------------------

def test_cyclic_value_names_the_key(app):
    def view(request):
        loop = []
        loop.append(loop)
        request.session['loop'] = loop
        return Response('ok')
    test_app = app_with(app.app.registry.queryUtility(
        __import__('pyramid.interfaces').interfaces.ISessionFactory), loop=view)
    with pytest.raises(SessionValueError, match="'loop'"):
        test_app.get('/loop')


def test_nul_key_with_max_size(make_app):
    app = make_app(max_size=10000)
    app.get('/session?set=a%00b:1')
    assert app.get('/session').json['data'] == {'a\x00b': 1}


def test_nested_awkward_keys_are_stored_or_refused_as_values(app):
    """Servers differ on nested keys with '.' or '$': never an outage error."""
    factory = app.app.registry.queryUtility(
        __import__('pyramid.interfaces').interfaces.ISessionFactory)

    def view(request):
        request.session['nested'] = {'a.b': 1}
        return Response('ok')
    test_app = app_with(factory, nested=view)
    try:
        test_app.get('/nested')
    except SessionValueError:
        return
    assert test_app.get('/session').json['data'] == {'nested': {'a.b': 1}}


def test_options_clear_resets_the_flags(collection):
    def view(request):
        options = request.session.options
        options['no_store'] = True
        options.clear()
        return Response(str(dict(options)))
    app = app_with(MongoSessionFactory(collection, SECRET), clear=view)
    assert "'no_store': False" in app.get('/clear').text


def test_reissue_time_none_is_refused(collection):
    with pytest.raises(ValueError, match='reissue_time'):
        MongoSessionFactory(collection, SECRET, reissue_time=None)


# -- the collection -----------------------------------------------------------------

def test_collection_callable_is_called_once_per_process(collection):
    calls = []

    def sessions():
        calls.append(1)
        return collection
    app = app_with(MongoSessionFactory(sessions, SECRET))
    for _ in range(5):
        app.get('/session?set=a:1')
    assert len(calls) == 1


def test_failure_to_create_the_client_is_a_backend_error():
    def sessions():
        raise pymongo.errors.ConfigurationError('no such host')
    app = app_with(MongoSessionFactory(sessions, SECRET))
    app.set_cookie('session', MongoSessionFactory(sessions, SECRET).cookie._profile
                   .serializer.dumps('A' * 43).decode('ascii'))
    with pytest.raises(SessionBackendError):
        app.get('/session')
