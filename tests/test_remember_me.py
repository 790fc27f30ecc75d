"""options['timeout']: a lifetime per session ("remember me"), stored with it."""
import datetime

import pytest
import webtest
from pyramid.response import Response

from pyramid_mongosession import MongoSessionFactory

from .conftest import LIVE, SECRET, make_config

MONTH = 30 * 24 * 3600


def login(request):
    request.session['user'] = 'alice'
    if 'remember' in request.params:
        request.session.options['timeout'] = MONTH
    request.session.change_id()
    return Response('welcome')


def forget_me(request):
    request.session.options['timeout'] = None
    return Response('ok')


@pytest.fixture
def make_browser(build_app):
    """``make_browser(collection, **options)``: the login application (see build_app)."""
    return lambda collection, **options: build_app(
        collection, views={'login': login, 'forget': forget_me}, **options)


def expiry_in_seconds(collection):
    [document] = collection.find(LIVE)
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    return (document['expires'] - now).total_seconds()


def test_remember_me_makes_the_session_and_its_cookie_last(collection, make_browser):
    app = make_browser(collection)
    app.get('/session?set=visits:1')
    response = app.get('/login?remember=1')
    cookie = response.headers['Set-Cookie']
    assert 'Max-Age=%d' % MONTH in cookie                       # survives a browser restart
    assert MONTH - 60 < expiry_in_seconds(collection) <= MONTH
    # Honoured on every later request: a write keeps the month.
    app.get('/session?read=user&set=visits:2')
    assert MONTH - 60 < expiry_in_seconds(collection) <= MONTH
    assert app.get('/session').json['data'] == {'visits': 2, 'user': 'alice'}


def test_other_sessions_keep_browser_session_cookies(collection, make_browser):
    app = make_browser(collection)
    app.get('/session?set=visits:1')
    response = app.get('/login')
    assert 'Max-Age' not in response.headers['Set-Cookie']
    assert expiry_in_seconds(collection) <= 1200


def test_a_write_that_did_not_read_keeps_the_sessions_own_timeout(collection, round_trips,
                                                                   make_browser):
    app = make_browser(collection)
    app.get('/session?set=visits:1')
    app.get('/login?remember=1')
    round_trips()
    app.get('/session?blind=1&set=visits:3')
    # The blind update cannot know the session's expiry: it misses, then writes as after a read.
    assert round_trips() == ['update', 'find', 'update']
    assert MONTH - 60 < expiry_in_seconds(collection) <= MONTH
    assert app.get('/session').json['data'] == {'visits': 3, 'user': 'alice'}


def test_the_persistent_cookie_slides_with_the_expiry(collection, make_browser):
    app = make_browser(collection, reissue_time=60)
    app.get('/login?remember=1')
    # Time passes: the stored expiry is now two minutes short of a month away.
    collection.update_many(LIVE, {'$inc': {}, '$set': {'expires': datetime.datetime.now(
        datetime.timezone.utc).replace(tzinfo=None) + datetime.timedelta(seconds=MONTH - 120)}})
    response = app.get('/session?read=user')
    assert 'Max-Age=%d' % MONTH in response.headers['Set-Cookie']


def test_absolute_timeout_still_caps_it(collection, make_browser):
    app = make_browser(collection, absolute_timeout=3600)
    app.get('/login?remember=1')
    assert expiry_in_seconds(collection) <= 3600


def test_back_to_the_default(collection, make_browser):
    app = make_browser(collection)
    app.get('/login?remember=1')
    response = app.get('/forget')
    assert 'Max-Age' not in response.headers['Set-Cookie']     # a browser-session cookie again
    assert expiry_in_seconds(collection) <= 1200
    assert 'timeout' not in collection.find_one(LIVE)


@pytest.mark.parametrize('value', [0, -1, 'long', True])
def test_a_bad_timeout_is_refused(collection, value):
    def view(request):
        with pytest.raises(ValueError, match="options\\['timeout'\\]"):
            request.session.options['timeout'] = value
        return Response('ok')
    config = make_config(MongoSessionFactory(collection, SECRET))
    config.add_route('bad', '/bad')
    config.add_view(view, route_name='bad')
    webtest.TestApp(config.make_wsgi_app()).get('/bad')
