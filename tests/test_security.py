"""Bad cookies, data at rest, revocation and cookie hygiene, against the real server."""
import logging

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from pyramid.response import Response

from pyramid_mongosession import MongoSessionFactory, SessionValueError
from pyramid_mongosession.crypto import new_key

from .conftest import SECRET


def cookie_header_values():
    # As a WSGI server passes them on: bytes from the wire, decoded as latin-1.
    printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e,
                                      blacklist_characters=';,'), max_size=200)
    return st.one_of(
        printable,
        st.text(max_size=100).map(
            lambda t: t.replace(';', '').replace(',', '').encode('utf-8').decode('latin-1')),
        st.binary(max_size=300).map(lambda b: b.decode('latin-1')),
        st.integers(4000, 20000).map(lambda n: 'A' * n),
    )


@pytest.fixture
def fuzz_app(app, round_trips):
    app.get('/session?set=warm:1')       # index created, a real cookie exists
    real = app.cookies['session']
    app.reset()
    round_trips()
    return app, real


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=cookie_header_values(), repeat=st.integers(1, 3), tamper=st.booleans())
def test_fuzzed_cookies_give_a_fresh_session(fuzz_app, round_trips, value, repeat, tamper):
    app, real = fuzz_app
    if tamper:
        value = real[:10] + value[:5] + real[15:]
    header = '; '.join('session=%s' % value for _ in range(repeat))
    response = app.get('/session?read=warm', headers={'Cookie': header})
    assert response.status_int == 200
    assert response.json['new'] is True and response.json['data'] == {}
    # Nothing but a validly signed id may reach the database.
    assert round_trips() == []


def test_bad_cookies_are_logged_for_operators(app, caplog):
    with caplog.at_level(logging.INFO, logger='pyramid_mongosession'):
        app.get('/session', headers={'Cookie': 'session=forged'})
    assert any('failed verification' in record.getMessage() for record in caplog.records)


def test_id_the_server_never_issued_is_not_adopted(app, collection):
    # A correctly signed id for which no document exists (say, from a leaked secret).
    forged = app.session_factory.cookie._profile.serializer.dumps('A' * 43).decode('ascii')
    app.set_cookie('session', forged)
    app.get('/session?set=a:1')
    assert app.cookies['session'] != forged
    assert collection.count_documents({}) == 1


def test_max_size_is_enforced_naming_the_largest_key(make_app, collection):
    app = make_app(max_size=1000)
    app.get('/session?set=small:1')
    with pytest.raises(SessionValueError, match="'big'"):
        app.get('/session?set=big:"%s"' % ('x' * 2000))
    assert collection.find_one()['data'] == {'small': 1}


# -- encryption at rest -----------------------------------------------------------

def test_encrypted_values_round_trip_and_are_unreadable_at_rest(make_app, collection):
    app = make_app(encryption_keys=[new_key()])
    app.get('/session?set=user:"alice@example.com"&set=cart:["apple"]')
    app.get('/session?append=cart:"pear"')
    assert app.get('/session').json['data'] == {'user': 'alice@example.com',
                                                'cart': ['apple', 'pear']}
    raw = str(collection.find_one())
    assert 'alice' not in raw and 'apple' not in raw


def test_key_rotation(make_app, collection):
    old, new = new_key(), new_key()
    before = make_app(encryption_keys=[old])
    before.get('/session?set=a:1')
    active = before.cookies['session']
    idle = make_app(encryption_keys=[old])
    idle.get('/session?set=b:2')

    after = make_app(encryption_keys=[new, old])
    after.set_cookie('session', active)
    assert after.get('/session').json['data'] == {'a': 1}   # read, and sealed again with `new`

    only_new = make_app(encryption_keys=[new])
    only_new.set_cookie('session', active)
    assert only_new.get('/session').json['data'] == {'a': 1}
    only_new.set_cookie('session', idle.cookies['session'])
    # Not loaded since the rotation: still under the retired key, unreadable.
    assert only_new.get('/session').json['new'] is True


def test_values_are_bound_to_their_session_and_key(make_app, collection):
    keys = [new_key()]
    app = make_app(encryption_keys=keys)
    app.get('/session?set=role:"user"')
    victim = make_app(encryption_keys=keys)
    victim.get('/session?set=role:"admin"')
    docs = list(collection.find())
    # Paste the admin's encrypted value into the user's session.
    collection.update_one({'_id': docs[0]['_id']}, {'$set': {'data.role': docs[1]['data']['role']}})
    assert app.get('/session').json['new'] is True


def test_bad_encryption_keys_are_refused(collection):
    with pytest.raises(ValueError, match='32 bytes'):
        MongoSessionFactory(collection, SECRET, encryption_keys=['short'])


# -- log out everywhere -------------------------------------------------------------

def test_revoke_deletes_matching_sessions(make_app, collection):
    apps = [make_app() for _ in range(3)]
    apps[0].get('/session?set=user_id:42')
    apps[1].get('/session?set=user_id:42')
    apps[2].get('/session?set=user_id:7')
    factory = apps[0].session_factory
    assert factory.revoke({'user_id': 42}) == 2
    assert [a.get('/session').json['new'] for a in apps] == [True, True, False]
    with pytest.raises(ValueError):
        factory.revoke({})


# -- cookie hygiene ------------------------------------------------------------------

def test_cookie_attributes_and_vary(app):
    response = app.get('/session?set=a:1')
    cookie = response.headers['Set-Cookie']
    assert 'HttpOnly' in cookie and 'SameSite=Lax' in cookie and 'Path=/' in cookie
    assert 'Max-Age' not in cookie and 'secure' not in cookie.lower()
    assert 'Cookie' in response.headers['Vary']


def test_secure_strict_cookie(make_app):
    response = make_app(cookie_secure=True, cookie_samesite='Strict',
                        cookie_domain='example.com', cookie_path='/app').get('/session?set=a:1')
    cookie = response.headers['Set-Cookie']
    assert 'secure' in cookie.lower() and 'SameSite=Strict' in cookie
    assert 'Domain=example.com' in cookie and 'Path=/app' in cookie


def cacheable_write_view(request):
    request.session['visited'] = True
    response = Response('cache me')
    response.cache_control.public = True
    response.cache_control.max_age = 60
    return response


def test_publicly_cacheable_response_gets_no_cookie_and_no_write(collection, build_app):
    app = build_app(collection, views={'public': cacheable_write_view})
    response = app.get('/public')
    assert 'Set-Cookie' not in response.headers
    assert collection.count_documents({}) == 0


def test_cacheable_decision_can_be_overridden(collection, build_app):
    app = build_app(collection, views={'public': cacheable_write_view},
                    is_cacheable=lambda request, response: False)
    assert 'Set-Cookie' in app.get('/public').headers
    assert collection.count_documents({}) == 1


# -- our cookie, found without parsing the others ---------------------------------

_COOKIE_NAMES = st.sampled_from(['session', 'sessionx', 'my_session', 'csrf', 'a', 'SESSION'])
_COOKIE_VALUES = st.one_of(
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=30),
    st.from_regex(r'[A-Za-z0-9_-]{0,60}', fullmatch=True),
    st.sampled_from(['"quoted; session=evil"', 'b\\;session=escaped']))
_SEPARATORS = st.sampled_from(['; ', ';', ' ; ', ', ', ' '])


@settings(max_examples=1000, deadline=None)
@given(pairs=st.lists(st.tuples(_COOKIE_NAMES, _COOKIE_VALUES), max_size=5),
       separators=st.lists(_SEPARATORS, min_size=5, max_size=5),
       spaces=st.sampled_from(['=', ' = ', '= ']))
def test_the_session_cookie_is_read_as_webob_reads_it(pairs, separators, spaces):
    # The factory reads its own cookie without parsing the site's others when
    # it can; whatever the header, it must find what WebOb's parser finds.
    from pyramid.request import Request
    from pyramid_mongosession.cookie import SessionCookie
    header = ''.join('%s%s%s%s' % (name, spaces, value, separators[i] if i < len(pairs) - 1
                                   else '') for i, (name, value) in enumerate(pairs))
    request = Request.blank('/', headers={'Cookie': header} if header else {})
    try:
        expected = request.cookies.get('session')
    except UnicodeDecodeError:
        expected = None
    assert SessionCookie(SECRET).sent(Request.blank(
        '/', headers={'Cookie': header} if header else {})) == expected


def test_a_cookie_set_again_replaces_ours_and_keeps_the_others():
    # The session's Set-Cookie is replaced, not added to; another cookie's stays, and
    # the response varies on Cookie once.
    from pyramid_mongosession.cookie import SessionCookie
    cookie = SessionCookie(SECRET)
    response = Response(headers=[('Set-Cookie', 'other=1; Path=/'),
                                 ('Set-Cookie', 'session=stale; Path=/')])
    cookie.set(response, 'a' * 43)
    cookie.clear(response)
    cookie.set(response, 'b' * 43)
    set_cookies = response.headers.getall('Set-Cookie')
    assert set_cookies[0] == 'other=1; Path=/'
    assert [value.split(';')[0].split('=')[0] for value in set_cookies] == ['other', 'session']
    assert cookie.verify(set_cookies[1].split(';')[0].split('=', 1)[1]) == ('b' * 43, 0)
    assert response.headers.getall('Vary') == ['Cookie']


@settings(max_examples=200, deadline=None)
@given(session_id=st.from_regex(r'[A-Za-z0-9_-]{43}', fullmatch=True),
       options=st.fixed_dictionaries({}, optional={
           'name': st.sampled_from(['sid', 'session_AA']), 'path': st.sampled_from(['/', '/app']),
           'domain': st.sampled_from(['example.com', '.example.org']), 'secure': st.just(True),
           'httponly': st.booleans(), 'samesite': st.sampled_from(['Strict', 'Lax', None]),
           'old_secrets': st.just(['o' * 40])}),
       vary=st.sampled_from([None, 'Accept-Encoding', 'Cookie']))
def test_the_cookie_headers_are_webobs(session_id, options, vary):
    # The headers that do not depend on the clock are written once by WebOb,
    # and an id signed into a copy: they must be what WebOb writes each time.
    from pyramid_mongosession.cookie import SessionCookie
    cookie = SessionCookie(SECRET, **options)
    for write, expected in [
            (lambda response: cookie.set(response, session_id),
             cookie._profile.get_headers(session_id)),
            (cookie.clear, cookie._profile.get_headers(None))]:
        response = Response(headers={'Vary': vary} if vary else {})
        write(response)
        assert [header for header in response.headerlist
                if header[0] == 'Set-Cookie'] == expected
        assert response.vary == (('Cookie',) if vary in (None, 'Cookie') else (vary, 'Cookie'))
    response = Response()
    cookie.set(response, session_id)
    value = response.headerlist[-2][1].split(';')[0].split('=', 1)[1]
    assert cookie.verify(value) == (session_id, 0)
