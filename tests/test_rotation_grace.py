"""A login must not be undone by a parallel request that still carries the old id.

One request logs in with change_id; another, started earlier with the
pre-login cookie, ends later. For rotation_grace seconds it sees an empty
session that is never stored, and its response leaves the cookie alone.
"""
import datetime
import threading

import pytest
import webtest
from pyramid.response import Response

from pyramid_mongosession import MongoSessionFactory

from .conftest import LIVE, SECRET, make_config


def login(request):
    request.session['user'] = 'alice'
    request.session.change_id()
    return Response('welcome')


def store_csrf_token(request):
    request.session.new_csrf_token()          # writes without reading
    return Response('form')


def read_user(request):
    return Response(json={'user': request.session.get('user'),
                          'token': request.session.get('_csrft_')})


def logout(request):
    request.session.expire()
    return Response('bye')


@pytest.fixture
def make_browser(build_app):
    """``make_browser(collection, **options)``: the login application (see build_app)."""
    return lambda collection, **options: build_app(
        collection, views={'login': login, 'form': store_csrf_token, 'whoami': read_user,
                           'logout': logout}, **options)


@pytest.fixture
def logged_in(collection, make_browser):
    """A browser that had a session, logged in, and kept the pre-login cookie."""
    browser = make_browser(collection)
    browser.get('/session?set=visits:1')
    old_cookie = browser.cookies['session']
    browser.get('/login')
    assert browser.cookies['session'] != old_cookie
    stale = webtest.TestApp(browser.app)
    stale.set_cookie('session', old_cookie)
    return browser, stale, old_cookie


@pytest.mark.parametrize('path', ['/form', '/whoami', '/logout', '/session?set=x:1'])
def test_a_request_with_the_retired_id_leaves_the_login_alone(logged_in, collection, path):
    browser, stale, old_cookie = logged_in
    response = stale.get(path)
    assert 'Set-Cookie' not in response.headers
    if path == '/whoami':
        assert response.json == {'user': None, 'token': None}   # nothing of the new session
    # The browser is still logged in; nothing was stored for the old id.
    assert browser.get('/whoami').json['user'] == 'alice'
    assert [doc['data'] for doc in collection.find(LIVE)] == [{'visits': 1, 'user': 'alice'}]


def test_its_writes_are_dropped_with_a_log_line(logged_in, caplog):
    _, stale, _ = logged_in
    with caplog.at_level('INFO', logger='pyramid_mongosession'):
        stale.get('/form')
    assert any('retired' in record.getMessage() and record.levelname == 'INFO'
               for record in caplog.records)


def test_after_the_grace_the_old_id_is_any_unknown_id(logged_in, collection):
    browser, stale, old_cookie = logged_in
    # The clock moves past the grace period: the tombstone's time is up.
    collection.update_one({'_id': document_id_of(old_cookie, collection)},
                          {'$set': {'expires': datetime.datetime(2000, 1, 1)}})
    response = stale.get('/form')
    assert 'session=' in response.headers['Set-Cookie']           # a new session of its own
    assert stale.cookies['session'] not in (old_cookie, browser.cookies['session'])
    assert stale.get('/whoami').json['user'] is None
    assert browser.get('/whoami').json['user'] == 'alice'


def document_id_of(cookie, collection):
    [tombstone] = collection.find({'retired': {'$exists': True}})
    return tombstone['_id']


def test_a_request_that_started_before_the_login_ends_without_a_cookie(collection, make_browser):
    """The race itself: the slow request loads with the old id, the login happens, it ends."""
    loaded, release = threading.Event(), threading.Event()

    def slow(request):
        request.session.get('visits')
        loaded.set()
        assert release.wait(10)
        request.session.new_csrf_token()
        return Response('slow')
    browser = make_browser(collection)
    config = make_config(MongoSessionFactory(collection, SECRET))
    config.add_route('slow', '/slow')
    config.add_view(slow, route_name='slow')
    slow_app = webtest.TestApp(config.make_wsgi_app())
    browser.get('/session?set=visits:1')
    slow_app.set_cookie('session', browser.cookies['session'])
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.update(response=slow_app.get('/slow')))
    thread.start()
    assert loaded.wait(10)
    browser.get('/login')
    release.set()
    thread.join(10)
    # It loaded the session before the login, so its write is dropped as any stale write,
    # and the cookie it would have set is not set.
    assert 'Set-Cookie' not in outcome['response'].headers
    assert browser.get('/whoami').json == {'user': 'alice', 'token': None}


def test_without_grace_the_old_document_goes_at_once(collection, make_browser):
    browser = make_browser(collection, rotation_grace=0)
    browser.get('/session?set=visits:1')
    old_cookie = browser.cookies['session']
    browser.get('/login')
    assert collection.count_documents({}) == 1
    stale = webtest.TestApp(browser.app)
    stale.set_cookie('session', old_cookie)
    assert 'session=' in stale.get('/form').headers['Set-Cookie']
