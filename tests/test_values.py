"""Values and keys: stored, or refused by name where the view stores them.

Against the real server and, where it concerns the embedded backend, against
mongomock too (``backend_collection``): both must accept and refuse the same.
"""
import math
import traceback
import uuid

import pytest
import webtest
from hypothesis import HealthCheck, given, settings, strategies as st
from pyramid.config import Configurator
from pyramid.response import Response

from pyramid_mongosession import (
    MongoSessionFactory, SessionBackendError, SessionConflict, SessionStoreError,
    SessionValueError)
from pyramid_mongosession.encoding import MAX_DOCUMENT_SIZE, MAX_VALUE_DEPTH

from .conftest import SECRET, make_config


def nested(depth):
    value = 'leaf'
    for _ in range(depth):
        value = {'a': value}
    return value


REFUSED_EVERYWHERE = {
    'set': {1, 2},
    'object': object(),
    'int over 64 bits': 2 ** 70,
    'nan': float('nan'),
    'inf': float('inf'),
    'nan in a list': [1.0, float('nan')],
    'too deep': nested(MAX_VALUE_DEPTH + 1),
    'non-string key inside': {1: 'x'},
}


@pytest.fixture
def make_browser(build_app):
    """``make_browser(collection, **views)``: an application with these views (see build_app)."""
    return lambda collection, **views: build_app(collection, views=views)


# -- refused at assignment, naming the key, at the view's line ----------------------

@pytest.mark.parametrize('value', REFUSED_EVERYWHERE.values(), ids=REFUSED_EVERYWHERE.keys())
def test_unstorable_value_is_refused_where_the_view_stores_it(backend_collection, value,
                                                               make_browser):
    caught = {}

    def view(request):
        request.session['fine'] = 1
        try:
            request.session['bad'] = value
        except SessionValueError as exc:
            caught['error'] = exc
        return Response('ok')
    app = make_browser(backend_collection, store=view)
    app.get('/store')
    error = caught['error']
    assert "'bad'" in str(error)
    # The traceback's last frame outside the package is the view's assignment.
    frames = [frame for frame in traceback.extract_tb(error.__traceback__)
              if 'pyramid_mongosession' not in frame.filename]
    assert frames[-1].line == "request.session['bad'] = value"
    # The rest of the request's changes are stored.
    assert app.get('/session').json['data'] == {'fine': 1}


def test_deepest_storable_value_round_trips(backend_collection, make_browser):
    app = make_browser(backend_collection)
    deep = nested(MAX_VALUE_DEPTH)
    config_view = make_browser(backend_collection, deep=lambda request: (
        request.session.__setitem__('deep', deep), Response('ok'))[1])
    config_view.get('/deep')
    app.set_cookie('session', config_view.cookies['session'])
    assert app.get('/session').json['data'] == {'deep': deep}


@pytest.mark.parametrize('degrade_on_outage', [False, True])
def test_value_spoilt_in_place_is_refused_at_save_naming_the_key(backend_collection,
                                                                  degrade_on_outage):
    factory = MongoSessionFactory(backend_collection, SECRET, degrade_on_outage=degrade_on_outage)
    config = make_config(factory)

    def spoil(request):
        request.session['readings'].append(math.nan)
        return Response('ok')
    config.add_route('spoil', '/spoil')
    config.add_view(spoil, route_name='spoil')
    app = webtest.TestApp(config.make_wsgi_app())
    app.get('/session?set=readings:[1.5]&set=other:1')
    # A value error is a programming error: degrade_on_outage never swallows it.
    with pytest.raises(SessionValueError, match="'readings'"):
        app.get('/spoil')
    assert app.get('/session').json['data'] == {'readings': [1.5], 'other': 1}


# -- keys -------------------------------------------------------------------------------

AWKWARD_KEY = st.one_of(
    st.text(st.sampled_from(' \t\n\r\x0b\x0c\x85\xa0\u2028\u3000.$%\x00ab'), max_size=6),
    st.text(max_size=8).map(lambda text: text.encode('utf-8', 'replace').decode('utf-8')),
)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=AWKWARD_KEY)
def test_every_string_key_can_be_set_changed_and_deleted(collection, key, make_browser):
    collection.delete_many({})

    def request(**ops):
        def view(request):
            session = request.session
            for op, arg in ops.items():
                if op == 'set':
                    session.update(arg)
                elif op == 'delete':
                    del session[arg]
                elif op == 'clear':
                    session.clear()
            return Response(json=sorted(session.items()))
        return view
    app = make_browser(collection, first=request(set={key: 1, 'other': 1}),
                  second=request(set={key: 2, 'other': 2}),
                  third=request(delete=key), fourth=request(clear=True))
    app.get('/first')
    assert app.get('/second').json == [list(item) for item in sorted({key: 2, 'other': 2}.items())]
    assert app.get('/session').json['data'] == {key: 2, 'other': 2}
    app.get('/third')
    assert app.get('/session').json['data'] == {'other': 2}
    app.get('/first')
    app.get('/fourth')
    assert app.get('/session').json['data'] == {}


# -- MongoDB's 16 MB, on every path and every backend --------------------------------------

NINE_MB = 'x' * (9 * 1024 * 1024)


def test_two_large_keys_in_separate_requests_are_refused_before_sending(backend_collection,
                                                                        make_browser):
    app = make_browser(backend_collection, big=lambda request: (
        request.session.__setitem__(request.params['key'], NINE_MB), Response('ok'))[1])
    app.get('/big?key=first')
    with pytest.raises(SessionValueError, match='larger than MongoDB'):
        app.get('/big?key=second')
    assert list(backend_collection.find({}, {'data.first': 0}))[0]['data'] == {}
    assert backend_collection.count_documents({}) == 1


def test_two_large_keys_in_one_request_are_refused(backend_collection, make_browser):
    def view(request):
        request.session['first'] = NINE_MB
        request.session['second'] = NINE_MB
        return Response('ok')
    with pytest.raises(SessionValueError, match='larger than MongoDB'):
        make_browser(backend_collection, big=view).get('/big')
    assert backend_collection.count_documents({}) == 0


def test_change_id_of_an_oversized_session_is_refused(backend_collection, make_browser):
    def view(request):
        request.session[request.params['key']] = NINE_MB
        if 'rotate' in request.params:
            request.session.change_id()
        return Response('ok')
    app = make_browser(backend_collection, big=view)
    app.get('/big?key=first')
    with pytest.raises(SessionValueError, match='larger than MongoDB'):
        app.get('/big?key=second&rotate=1')
    assert backend_collection.count_documents({}) == 1   # the old session, as it was


def test_value_over_the_limit_is_refused_at_assignment(backend_collection, make_browser):
    def view(request):
        with pytest.raises(SessionValueError, match="'huge'.*larger than MongoDB"):
            request.session['huge'] = b'x' * (MAX_DOCUMENT_SIZE + 1)
        return Response('ok')
    make_browser(backend_collection, big=view).get('/big')


# -- values only some servers refuse ----------------------------------------------------

SERVER_DEPENDENT = {
    'nested arrays': [(1, 'a')],
    "'.' in a nested key": {'a.b': 1},
    "'$' leading a nested key": {'$a': 1},
    'negative zero': -0.0,
    'int64': 2 ** 40,
}


@pytest.mark.parametrize('value', SERVER_DEPENDENT.values(), ids=SERVER_DEPENDENT.keys())
@pytest.mark.parametrize('degrade_on_outage', [False, True])
def test_server_dependent_values_are_stored_or_refused_as_values(collection, value,
                                                                 degrade_on_outage):
    """Never an outage error, and never swallowed by degrade_on_outage."""
    factory = MongoSessionFactory(collection, SECRET, degrade_on_outage=degrade_on_outage)
    config = make_config(factory)
    config.add_route('store', '/store')
    config.add_view(lambda request: (request.session.__setitem__('value', value),
                                     Response('ok'))[1], route_name='store')
    app = webtest.TestApp(config.make_wsgi_app())
    app.get('/session?set=other:1')
    try:
        app.get('/store')
    except SessionValueError as exc:
        assert "'value'" in str(exc)
        assert app.get('/session').json['data'] == {'other': 1}
    else:
        stored = app.get('/session').json['data']['value']
        assert stored == (list(map(list, value)) if isinstance(value, list) else value)


def test_embedded_backend_stores_uuids_as_a_server_does(backend_collection, make_browser):
    token = uuid.uuid4()
    seen = {}

    def view(request):
        if 'set' in request.params:
            request.session['token'] = token
        else:
            seen['token'] = request.session['token']
        return Response('ok')
    app = make_browser(backend_collection, uuid=view)
    app.get('/uuid?set=1')
    app.get('/uuid')
    assert seen['token'] == token


# -- failures reach the application's exception views ------------------------------------

def error_page(exc, request):
    return Response('%s: try again shortly' % type(exc).__name__, status=503)


def included_app(settings, **views):
    config = Configurator(settings=dict({'mongodb_session.secret': SECRET}, **settings))
    config.include('pyramid_mongosession')
    config.add_exception_view(error_page, context=SessionStoreError)
    for name, view in views.items():
        config.add_route(name, '/' + name)
        config.add_view(view, route_name=name)
    return webtest.TestApp(config.make_wsgi_app())


def write_view(request):
    request.session['visits'] = request.session.get('visits', 0) + 1
    return Response('visit %d' % request.session['visits'])


def test_outage_gives_the_same_error_page_to_new_and_returning_visitors(mongodb_url,
                                                                         database, unused_url):
    up = included_app({'mongodb_session.url': mongodb_url,
                       'mongodb_session.db_name': database.name}, visit=write_view)
    up.get('/visit')
    down = {'mongodb_session.url': unused_url, 'mongodb_session.db_name': 'app',
            'mongodb_session.operation_timeout': '1'}
    returning = included_app(down, visit=write_view)
    returning.set_cookie('session', up.cookies['session'])
    first_visit = included_app(down, visit=write_view)
    for visitor in (first_visit, returning):
        response = visitor.get('/visit', status=503)
        assert response.text == 'SessionBackendError: try again shortly'
        assert 'Set-Cookie' not in response.headers


def test_refused_value_at_save_renders_the_error_page(mongodb_url, database):
    def spoil(request):
        request.session['readings'] = []
        request.session['readings'].append(math.inf)
        return Response('ok')
    app = included_app({'mongodb_session.url': mongodb_url,
                        'mongodb_session.db_name': database.name}, spoil=spoil)
    assert app.get('/spoil', status=503).text == 'SessionValueError: try again shortly'


@pytest.fixture
def unused_url():
    from .servers import free_port
    return 'mongodb://127.0.0.1:%d/?serverSelectionTimeoutMS=500' % free_port()


# -- conflicts are retried under pyramid_retry -------------------------------------------

def conflicting_app(collection, retry):
    """/count increments 'n'; its first attempt is overtaken by another request's write."""
    settings = {'mongodb_session.secret': SECRET}
    config = Configurator(settings=settings)
    if retry:
        config.include('pyramid_retry')
    config.set_session_factory(MongoSessionFactory(collection, SECRET, detect_conflicts=True))
    config.add_tween('pyramid_mongosession.tween.session_tween_factory',
                     over='pyramid.tweens.excview_tween_factory')
    attempts = []

    def count(request):
        attempts.append(request.environ.get('retry.attempt'))
        n = request.session.get('n', 0)
        if len(attempts) == 1:
            # Another request writes the session between this one's load and save.
            other = webtest.TestApp(request.registry.wsgi_app)
            other.set_cookie('session', request.cookies['session'])
            other.get('/bump')
        request.session['n'] = n + 1
        return Response(str(request.session['n']))

    def bump(request):
        request.session['bumped'] = True
        request.session['n'] = request.session.get('n', 0) + 1
        return Response('ok')
    for name, view in (('count', count), ('bump', bump)):
        config.add_route(name, '/' + name)
        config.add_view(view, route_name=name)
    config.add_route('session', '/session')
    config.add_view(lambda request: Response(json=dict(request.session)), route_name='session')
    wsgi = config.make_wsgi_app()
    wsgi.registry.wsgi_app = wsgi
    app = webtest.TestApp(wsgi)
    app.get('/bump')
    return app, attempts


def test_conflict_is_retried_with_pyramid_retry(collection):
    app, attempts = conflicting_app(collection, retry=True)
    assert app.get('/count').text == '3'
    assert attempts == [0, 1]
    assert app.get('/session').json == {'bumped': True, 'n': 3}


def test_conflict_without_pyramid_retry_is_raised(collection):
    app, attempts = conflicting_app(collection, retry=False)
    with pytest.raises(SessionConflict):
        app.get('/count')
    assert attempts == [None]
    assert app.get('/session').json == {'bumped': True, 'n': 2}


def test_session_backend_error_is_not_retryable():
    from pyramid_retry import IRetryableError
    assert IRetryableError.implementedBy(SessionConflict)
    assert not IRetryableError.implementedBy(SessionBackendError)


# -- the size of a value, worked out without encoding it ------------------------------

_SCALARS = st.one_of(
    st.text(), st.sampled_from(['lone \ud800 surrogate', 'nul \x00 inside']),
    st.binary(), st.sampled_from([n - 13 + extra for n in [MAX_DOCUMENT_SIZE] for extra in (0, 1)]
                                 ).flatmap(lambda n: st.sampled_from([b'x' * n, 'x' * n])),
    st.booleans(), st.none(), st.floats(),
    st.integers(min_value=-2 ** 64, max_value=2 ** 64),
    st.datetimes().map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000)))


@settings(max_examples=500)
@given(value=_SCALARS)
def test_the_size_of_a_plain_value_is_its_bson_size_and_its_refusal_the_same(value):
    # check_value works out the size of strings, numbers, bytes... without
    # encoding them; it must agree with BSON byte for byte, and refuse
    # exactly what it refused when it encoded every value.
    from pyramid_mongosession.encoding import check_value, encode_value
    try:
        size = len(encode_value(value))
    except (OverflowError, ValueError, TypeError):
        size = None
    if (size is None or size > MAX_DOCUMENT_SIZE
            or (isinstance(value, float) and not math.isfinite(value))):
        with pytest.raises(SessionValueError, match="'k'"):
            check_value('k', value)
    else:
        assert check_value('k', value) == size


@given(st.lists(st.floats(min_value=0, max_value=4102444800, allow_nan=False), min_size=1,
                max_size=20))
@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_the_clock_reads_whole_milliseconds_of_each_moment(monkeypatch, moments):
    """``utcnow`` keeps its last reading for the millisecond it names: whatever moments
    the clock shows in turn (the same millisecond again, an earlier one, a later one),
    each reading is that moment's UTC time, cut to the millisecond."""
    import datetime
    import types

    from pyramid_mongosession import encoding

    for moment in moments:
        clock = types.SimpleNamespace(time=lambda moment=moment: moment)
        monkeypatch.setattr(encoding, 'time', clock)
        expected = (datetime.datetime(1970, 1, 1)
                    + datetime.timedelta(milliseconds=int(moment * 1000)))
        assert encoding.utcnow() == expected
        assert encoding.utcnow() == expected   # the kept reading


@given(st.one_of(st.text(), st.from_regex(r'\A[\w.$% ]{0,8}\Z'),
                 st.sampled_from(['counter', 'user', 'ключ', 'auth.userid', '$x', ' a', 'a '])))
@settings(max_examples=500)
def test_field_names_escape_what_mongodb_refuses_and_nothing_else(key):
    """A key that needs no escape is its own field name (found without the regular
    expression for most keys); any other is escaped, and every name reads back as its key."""
    from pyramid_mongosession import encoding

    escaped = (encoding._EMPTY_KEY if not key
               else encoding._NEEDS_ESCAPE.sub(encoding._escape, key))
    assert encoding.field_name(key) == escaped
    assert encoding.session_key(encoding.field_name(key)) == key
