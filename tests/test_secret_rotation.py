"""Changing the cookie signing secret: ``old_secrets``, against the real server."""
import hmac
import logging

import pytest
from pyramid.exceptions import ConfigurationError
from pyramid.response import Response
from webob.cookies import SignedSerializer

from pyramid_mongosession import MongoSessionFactory, session_factory_from_settings
from pyramid_mongosession import cookie as cookie_module
from pyramid_mongosession.settings import parse_settings


OLD = 'the secret of last year, long and random: 5b0c1f07a8e24d1c'
OLDER = 'the secret of the year before: 0d9e36a1f4c2b7e8a5f0'
NEW = 'the secret of this year, long and random: 9f3a77c02d6b41e5'
UNKNOWN = 'a secret this application never had: 42d8b6a0c1e3f579'


def verifies(value, secret):
    """Whether WebOb's own serializer accepts ``value`` under ``secret``; the id or None."""
    serializer = SignedSerializer(secret, 'pyramid_mongosession', serializer=_Bytes())
    try:
        return serializer.loads(value.encode('ascii')).decode('ascii')
    except ValueError:
        return None


class _Bytes:
    def dumps(self, value):
        return value

    def loads(self, value):
        return value


def session_cookies(response, name='session'):
    """The Set-Cookie headers of ``response`` for the session cookie, as (value, header)."""
    found = []
    for header in response.headers.getall('Set-Cookie'):
        cookie_name, rest = header.split('=', 1)
        if cookie_name == name:
            found.append((rest.split(';', 1)[0], header))
    return found


def cacheable_read_view(request):
    request.session.get('user')
    response = Response('cacheable')
    response.cache_control.public = True
    response.cache_control.max_age = 60
    return response


@pytest.fixture
def app_with(collection, build_app):
    """``app_with(secret, **options)``: an application on this test's collection,
    signing with ``secret``."""
    return lambda secret, **options: build_app(collection, secret=secret,
                                               views={'public': cacheable_read_view}, **options)


@pytest.fixture
def old_cookie(app_with):
    """A stored session whose cookie was signed with ``OLD``; its cookie value and id."""
    before = app_with(OLD)
    before.get('/session?set=user:"alice"')
    value = before.cookies['session']
    session_id = verifies(value, OLD)
    assert session_id is not None
    return value, session_id


def test_old_cookie_loads_its_session_and_is_reissued_without_a_write(
        app_with, old_cookie, round_trips, collection):
    value, session_id = old_cookie
    app = app_with(NEW, old_secrets=[OLD]).warmed()
    stored = collection.find_one({'data.user': 'alice'})
    app.set_cookie('session', value)
    round_trips()
    response = app.get('/session?read=user')
    assert response.json == {'id': session_id, 'new': False, 'data': {'user': 'alice'}}
    # The load, and one more find that the session is still live when its id is
    # signed anew (a parallel login may have retired it); nothing written.
    assert round_trips() == ['find', 'find']
    assert collection.find_one({'data.user': 'alice'}) == stored
    [(reissued, header)] = session_cookies(response)
    assert verifies(reissued, NEW) == session_id
    assert verifies(reissued, OLD) is None
    assert 'HttpOnly' in header and 'SameSite=Lax' in header and 'Max-Age' not in header
    assert 'Cookie' in response.headers['Vary']

    # With the new cookie the next request needs no re-issue, and the old secret can go.
    app.reset()
    app.set_cookie('session', reissued)
    assert session_cookies(app.get('/session?read=user')) == []
    after = app_with(NEW)
    after.set_cookie('session', reissued)
    assert after.get('/session').json['data'] == {'user': 'alice'}


def test_every_old_secret_is_accepted(app_with, collection):
    older = app_with(OLDER)
    older.get('/session?set=n:1')
    app = app_with(NEW, old_secrets=[OLD, OLDER])
    app.set_cookie('session', older.cookies['session'])
    response = app.get('/session')
    assert response.json['data'] == {'n': 1}
    [(reissued, _)] = session_cookies(response)
    assert verifies(reissued, NEW) and not verifies(reissued, OLDER)


def test_a_cookie_signed_with_an_unknown_secret_is_ignored(app_with, round_trips, caplog):
    stranger = app_with(UNKNOWN)
    stranger.get('/session?set=user:"mallory"')
    app = app_with(NEW, old_secrets=[OLD])
    app.set_cookie('session', stranger.cookies['session'])
    round_trips()
    with caplog.at_level(logging.INFO, logger='pyramid_mongosession'):
        response = app.get('/session?read=user')
    assert response.json == {'id': None, 'new': True, 'data': {}}
    assert round_trips() == []      # rejected before the database is asked
    assert any('failed verification' in r.getMessage() for r in caplog.records)
    # The cookie it sent is cleared, not re-issued.
    [(value, header)] = session_cookies(response)
    assert value == '' and 'Max-Age=0' in header


def test_without_old_secrets_an_old_cookie_is_ignored(app_with, old_cookie):
    app = app_with(NEW)
    app.set_cookie('session', old_cookie[0])
    assert app.get('/session').json['new'] is True


@pytest.mark.parametrize('query, outcome', [
    ('opt=change_id', 'new id'),
    ('opt=expire', 'cleared'),
    ('invalidate=', 'cleared'),
    ('invalidate=&set=user:"bob"', 'new id'),
    ('set=user:"carol"', 'reissued'),
])
def test_one_set_cookie_when_the_end_of_the_request_sets_the_cookie_too(
        app_with, old_cookie, collection, query, outcome):
    value, session_id = old_cookie
    app = app_with(NEW, old_secrets=[OLD])
    app.set_cookie('session', value)
    response = app.get('/session?' + query)
    [(sent, header)] = session_cookies(response)
    assert response.headers['Vary'].count('Cookie') == 1
    if outcome == 'cleared':
        assert sent == '' and 'Max-Age=0' in header
        assert collection.count_documents({}) == 0
    elif outcome == 'new id':
        new_id = verifies(sent, NEW)
        assert new_id not in (None, session_id)
        assert verifies(sent, OLD) is None
    else:
        assert verifies(sent, NEW) == session_id


def test_one_set_cookie_when_a_persistent_cookie_slides(app_with, collection):
    before = app_with(OLD, cookie_max_age=3600, reissue_time=0)
    before.get('/session?set=n:1')
    app = app_with(NEW, old_secrets=[OLD], cookie_max_age=3600, reissue_time=0)
    app.set_cookie('session', before.cookies['session'])
    response = app.get('/session')     # refreshes the expiry, so the cookie is sent again
    [(sent, header)] = session_cookies(response)
    assert verifies(sent, NEW) and 'Max-Age=3600' in header


def test_no_reissue_on_a_publicly_cacheable_response(app_with, old_cookie, round_trips):
    app = app_with(NEW, old_secrets=[OLD]).warmed()
    app.set_cookie('session', old_cookie[0])
    round_trips()
    response = app.get('/public')
    assert response.text == 'cacheable'
    assert session_cookies(response) == []
    assert round_trips() == ['find']


def test_is_cacheable_decides_for_the_reissue_too(app_with, old_cookie):
    app = app_with(NEW, old_secrets=[OLD], is_cacheable=lambda request, response: True)
    app.set_cookie('session', old_cookie[0])
    assert session_cookies(app.get('/session')) == []


class CountingHMAC:
    """Counts every HMAC computed in this process (WebOb's signing included): each
    ends in one ``digest()``, however its key was set up."""

    def __init__(self, monkeypatch):
        self.count = 0
        real = hmac.HMAC.digest

        def counting(mac):
            self.count += 1
            return real(mac)
        monkeypatch.setattr(hmac.HMAC, 'digest', counting)

    def since_last_call(self):
        count, self.count = self.count, 0
        return count


def test_hmacs_per_request(app_with, monkeypatch):
    """One HMAC per secret tried, the current secret first; one more to re-sign."""
    older = app_with(OLDER)
    older.get('/session?set=n:1')
    current = app_with(NEW)
    current.get('/session?set=n:2')
    app = app_with(NEW, old_secrets=[OLD, OLDER])
    hmacs = CountingHMAC(monkeypatch)

    app.get('/session')                                   # no cookie, nothing stored
    assert hmacs.since_last_call() == 0
    app.reset()
    app.set_cookie('session', current.cookies['session'])
    app.get('/session')                                   # signed with the current secret
    assert hmacs.since_last_call() == 1
    app.reset()
    app.set_cookie('session', older.cookies['session'])
    app.get('/session')                                   # the second old secret, re-signed
    assert hmacs.since_last_call() == 3 + 1
    app.get('/session')                                   # the re-issued cookie
    assert hmacs.since_last_call() == 1
    app.reset()
    app.set_cookie('session', 'forged')
    app.get('/session')                                   # malformed: no HMAC at all
    assert hmacs.since_last_call() == 0


def test_unknown_signature_costs_one_hmac_per_secret(app_with, monkeypatch):
    stranger = app_with(UNKNOWN)
    stranger.get('/session?set=x:1')
    app = app_with(NEW, old_secrets=[OLD, OLDER])
    app.set_cookie('session', stranger.cookies['session'])
    hmacs = CountingHMAC(monkeypatch)
    app.get('/session')                                   # three tried; clearing signs nothing
    assert hmacs.since_last_call() == 3


@pytest.mark.parametrize('secret', [NEW, b'bytes secret, 32 bytes or more: 0123456789',
                                    'latin-1 s\xe9cret, 32 bytes or more: 0123456789',
                                    'utf-8 secret \u2713, 32 bytes or more: 0123456789'])
def test_signatures_are_webobs(secret):
    """A cookie WebOb signs verifies here, and the other way round."""
    jar = cookie_module.SessionCookie(secret, old_secrets=[UNKNOWN])
    session_id = cookie_module.new_session_id()
    value = jar._profile.serializer.dumps(session_id).decode('ascii')
    assert jar.verify(value) == (session_id, 0)
    assert verifies(value, secret) == session_id
    other = cookie_module.SessionCookie(UNKNOWN, old_secrets=[secret])
    assert other.verify(value) == (session_id, 1)


def test_tampered_cookies_fail_under_every_secret():
    jar = cookie_module.SessionCookie(NEW, old_secrets=[OLD])
    value = cookie_module.SessionCookie(OLD)._profile.serializer.dumps(
        cookie_module.new_session_id()).decode('ascii')
    flipped = value[:-2] + ('A' if value[-2] != 'A' else 'B') + value[-1]
    for bad in (flipped, value[:-1], value + 'AAAA', '', 'x' * 143):
        with pytest.raises(ValueError):
            jar.verify(bad)


# -- settings ----------------------------------------------------------------------

BASE = {'mongodb_session.secret': NEW, 'mongodb_session.db_name': 'app'}
#: Old secrets as an ini file lists them: separated by white space.
ONE, TWO, THREE = ('former-secret-%s-0123456789abcdef0123' % n for n in ('one', 'two', 'three'))


@pytest.mark.parametrize('text, parsed', [
    (ONE, [ONE]),
    (ONE + ' ' + TWO, [ONE, TWO]),
    ('\n    %s\n    %s %s\n' % (ONE, TWO, THREE), [ONE, TWO, THREE]),
    ('', None),
    ('none', None),
    ('  None ', None),
])
def test_old_secrets_from_ini(text, parsed):
    connection, options, client = parse_settings(
        dict(BASE, **{'mongodb_session.old_secrets': text}))
    assert options['old_secrets'] == parsed
    factory = session_factory_from_settings(dict(BASE, **{'mongodb_session.old_secrets': text}))
    assert factory.cookie.secrets_accepted == 1 + len(parsed or ())


@pytest.mark.parametrize('name', ['old_secrets', 'encryption_keys'])
def test_list_settings_take_none_as_documented(name):
    # Not a list of one secret (or key) spelt "none".
    factory = session_factory_from_settings(dict(BASE, **{'mongodb_session.' + name: 'none'}))
    assert factory.cookie.secrets_accepted == 1 and factory.store.codec.cipher is None


def test_old_secrets_default_to_none():
    assert parse_settings(BASE)[1].get('old_secrets') is None
    assert session_factory_from_settings(BASE).cookie.secrets_accepted == 1


def test_the_current_secret_as_an_old_secret_fails_at_startup_naming_the_setting():
    session_factory_from_settings(dict(BASE, **{
        'mongodb_session.secret': TWO, 'mongodb_session.old_secrets': ONE}))
    with pytest.raises(ConfigurationError) as info:
        session_factory_from_settings(dict(BASE, **{
            'mongodb_session.secret': TWO,
            'mongodb_session.old_secrets': ONE + ' ' + TWO}))
    message = str(info.value)
    assert 'mongodb_session.old_secrets' in message and 'current secret' in message
    assert 'former' not in message      # secrets stay out of error messages


@pytest.mark.parametrize('old_secrets, error, words', [
    ([''], ValueError, 'secret 1 is 0 bytes long'),
    ([OLD, '   '], ValueError, 'secret 2 is 3 bytes long'),
    ([OLD, 'short'], ValueError, 'secret 2 is 5 bytes long'),
    ([NEW], ValueError, 'current secret'),
    ([NEW.encode('latin-1')], ValueError, 'current secret'),
    ('a string', TypeError, 'not a string'),
    ([42], TypeError, 'strings'),
])
def test_bad_old_secrets_are_refused_naming_the_option(collection, old_secrets, error, words):
    with pytest.raises(error) as info:
        MongoSessionFactory(collection, NEW, old_secrets=old_secrets)
    assert 'old_secrets' in str(info.value) and words in str(info.value)


def test_a_cookie_that_verified_is_remembered_and_nothing_else(monkeypatch):
    from pyramid_mongosession.cookie import SessionCookie, new_session_id
    cookie = SessionCookie(NEW, old_secrets=[OLD])
    session_id = new_session_id()
    value = cookie._signed(session_id)
    old = SessionCookie(OLD)._signed(session_id)
    hmacs = CountingHMAC(monkeypatch)
    assert cookie.verify(value) == (session_id, 0)
    assert hmacs.since_last_call() == 1
    assert cookie.verify(value) == (session_id, 0)      # remembered: no HMAC
    assert hmacs.since_last_call() == 0
    tampered = ('AA' if value[:2] != 'AA' else 'BB') + value[2:]   # in the signature
    for _ in range(2):                                  # refused, and every time checked
        with pytest.raises(ValueError):
            cookie.verify(tampered)
        assert hmacs.since_last_call() == 2              # both secrets tried
    assert cookie.verify(old) == (session_id, 1)         # what it said is remembered too
    assert cookie.verify(old) == (session_id, 1)
    assert hmacs.since_last_call() == 2


def test_the_cookies_remembered_are_bounded(monkeypatch):
    from pyramid_mongosession import cookie as cookies
    monkeypatch.setattr(cookies, 'VERIFIED_KEPT', 8)
    cookie = cookies.SessionCookie(NEW)
    values = [cookie._signed(cookies.new_session_id()) for _ in range(12)]
    for value in values:
        cookie.verify(value)
    hmacs = CountingHMAC(monkeypatch)
    for value in values[4:]:                             # the newest 8: remembered
        cookie.verify(value)
    assert hmacs.since_last_call() == 0
    cookie.verify(values[0])                             # the oldest: forgotten, checked again
    assert hmacs.since_last_call() == 1
