"""The quick start's application, run as docs/quickstart.rst shows it.

The page includes ``docs/examples/quickstart_app.py``; this test imports that
same file, so the documented code is the tested code. Its sessions are kept
by the embedded backend.
"""
import importlib.util
import logging
import os
import sys

import pytest
import webtest

from .conftest import SECRET
from .test_accounts import account_app

pytest.importorskip('mongomock')

EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       'docs', 'examples', 'quickstart_app.py')
PASSWORD = 'correct horse battery staple'


@pytest.fixture
def quickstart():
    """The module docs/examples/quickstart_app.py, imported as pserve would (by its name)."""
    spec = importlib.util.spec_from_file_location('quickstart_app', EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules['quickstart_app'] = module   # Configurator looks its caller up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules['quickstart_app']


@pytest.fixture
def wsgi(quickstart):
    return quickstart.main({}, **{'mongodb_session.url': 'mongomock://',
                                  'mongodb_session.secret': SECRET})


def test_the_quickstart_ini_serves_it(quickstart, tmp_path):
    from pyramid.paster import get_app
    ini = os.path.join(os.path.dirname(EXAMPLE), 'quickstart.ini')
    app = webtest.TestApp(get_app(ini, options={'SESSION_SECRET': SECRET}))
    assert app.get('/').json['visits'] == 1
    assert app.get('/').json['visits'] == 2


def signed_in(wsgi, name='alice', password=PASSWORD):
    browser = webtest.TestApp(wsgi)
    token = browser.get('/').json['csrf_token']
    browser.post('/login', {'login': name, 'password': password, 'csrf_token': token},
                 status=303)
    return browser


def test_the_quickstart_app_signs_in_and_tracks_the_users_sessions(wsgi):
    browser = webtest.TestApp(wsgi)
    first = browser.get('/').json
    assert (first['user'], first['visits']) == (None, 1)
    before = browser.cookies['session']

    # require_csrf: a POST without the token, or with a wrong one, is refused.
    browser.post('/login', {'login': 'alice', 'password': PASSWORD}, status=400)
    browser.post('/login', {'login': 'alice', 'password': PASSWORD, 'csrf_token': 'x'},
                 status=400)
    browser.post('/login', {'login': 'alice', 'password': 'wrong',
                            'csrf_token': first['csrf_token']}, status=403)
    browser.post('/login', {'login': 'alice', 'password': PASSWORD,
                            'csrf_token': first['csrf_token']}, status=303)
    assert browser.cookies['session'] != before          # change_id at sign-in
    page = browser.get('/').json
    assert (page['user'], page['visits'], page['flash']) == ('alice', 2, ['Welcome, alice.'])

    # SessionAuthenticationHelper keeps the user id under auth.userid, the
    # default user_key: the session is listed under its user.
    listed = browser.get('/sessions').json
    assert len(listed) == 1 and listed[0]['this'] is True

    elsewhere = signed_in(wsgi)
    assert len(browser.get('/sessions').json) == 2
    token = browser.get('/').json['csrf_token']
    browser.post('/sessions/sign-out-elsewhere', status=400)       # the token is required
    assert browser.post('/sessions/sign-out-elsewhere', {'csrf_token': token}).json == {
        'revoked': 1}
    assert elsewhere.get('/').json['user'] is None
    assert browser.get('/').json['user'] == 'alice'

    browser.post('/logout', {'csrf_token': browser.get('/').json['csrf_token']}, status=303)
    assert 'session' not in browser.cookies
    assert browser.get('/').json['user'] is None
    browser.get('/sessions', status=403)


def test_the_quickstart_app_logs_no_user_key_warning(wsgi, caplog):
    with caplog.at_level(logging.WARNING, logger='pyramid_mongosession'):
        signed_in(wsgi).get('/sessions')
    assert caplog.records == []


@pytest.mark.parametrize('key', ['user_id', 'userid', 'user', 'UserId', 'user.id'])
def test_a_user_looking_key_without_user_key_is_logged_once(embedded_collection, caplog, key):
    wsgi = account_app(embedded_collection)
    first, second = webtest.TestApp(wsgi), webtest.TestApp(wsgi)
    with caplog.at_level(logging.WARNING, logger='pyramid_mongosession'):
        first.get('/do?set=cart:apple')
        assert caplog.messages == []
        first.get('/do', {'set': '%s:42' % key})          # the quick start's old example
        second.get('/do', {'set': '%s:43' % key})
        first.get('/do', {'set': '%s:44' % key})
    assert caplog.messages == [
        "a session has the key %r, which looks like a user id, but no 'auth.userid' "
        "(mongodb_session.user_key): such sessions belong to no user, and user_sessions(), "
        "revoke_user() and max_sessions_per_user find none of them. Store the user id with "
        "Pyramid's SessionAuthenticationHelper (under 'auth.userid'), or set "
        "mongodb_session.user_key = %s (said once per process)" % (key, key)]


def test_a_user_looking_key_beside_user_key_is_not_logged(embedded_collection, caplog):
    wsgi = account_app(embedded_collection)
    browser = webtest.TestApp(wsgi)
    with caplog.at_level(logging.WARNING, logger='pyramid_mongosession'):
        browser.get('/do?login=alice')
        browser.get('/do?set=user_id:42')
        browser.get('/do?set=username:alice')
    assert caplog.messages == []
    other = account_app(embedded_collection, user_key='user_id')
    with caplog.at_level(logging.WARNING, logger='pyramid_mongosession'):
        webtest.TestApp(other).get('/do?set=user_id:42')
        webtest.TestApp(other).get('/do?set=visits:1')
    assert caplog.messages == []
