"""The ISession object: dict semantics, flash, CSRF, values, lifecycle.

Every test runs on the real server and on the embedded backend
(``backend_collection``): the session behaves the same on both.
"""
import datetime
import uuid

import pytest
from pyramid.interfaces import ISession
from pyramid.response import Response
from zope.interface.verify import verifyObject

from pyramid_mongosession import SessionValueError
from pyramid_mongosession.documents import document_id


@pytest.fixture
def sessions(backend_collection, build_app):
    """``sessions(**options)``: an application on this test's collection."""
    return lambda **options: build_app(backend_collection, **options)


def reader(sessions, app):
    """A new application (a new factory) on the same sessions, holding ``app``'s cookie."""
    other = sessions()
    other.set_cookie('session', app.cookies['session'])
    return other


def test_verify_object(sessions):
    session, _ = sessions().call(lambda request: request.session)
    assert verifyObject(ISession, session)


def test_dict_methods(sessions, backend_collection):
    def view(request):
        s = request.session
        s['a'] = 1
        s.update({'b': 2}, c=3)
        assert s.setdefault('d', 4) == 4 and s.setdefault('a', 9) == 1
        assert s.pop('c') == 3 and s.pop('zz', 'dflt') == 'dflt'
        with pytest.raises(KeyError):
            s.pop('zz')
        assert 'a' in s and 'c' not in s and len(s) == 3
        assert sorted(s) == sorted(s.keys()) == ['a', 'b', 'd']
        assert sorted(s.values()) == [1, 2, 4]
        assert dict(s.items()) == s.copy() == {'a': 1, 'b': 2, 'd': 4}
        assert s.get('nope') is None and s.get('nope', 5) == 5
        del s['d']
        return dict(s)
    data, _ = sessions().call(view)
    assert data == {'a': 1, 'b': 2}
    assert backend_collection.find_one()['data'] == {'a': 1, 'b': 2}


def test_created_and_new(sessions, backend_collection):
    (new, created), _ = sessions().call(
        lambda request: request.session.__setitem__('x', 1)
        or (request.session.new, request.session.created))
    assert new is True
    assert abs(created - datetime.datetime.now(datetime.timezone.utc).timestamp()) < 60
    doc = backend_collection.find_one()
    assert abs(doc['created'].replace(tzinfo=datetime.timezone.utc).timestamp() - created) < 0.01


def test_flash_queues(sessions):
    def first(request):
        request.session.flash('hello')
        request.session.flash('hello')
        request.session.flash('once', allow_duplicate=False)
        request.session.flash('once', allow_duplicate=False)
        request.session.flash('boom', queue='error')
    app = sessions()
    app.call(first)
    peeked, _ = app.call(lambda r: r.session.peek_flash())
    assert peeked == ['hello', 'hello', 'once']
    popped, _ = app.call(lambda r: (r.session.pop_flash(), r.session.pop_flash('error')))
    assert popped == (['hello', 'hello', 'once'], ['boom'])
    after, _ = app.call(lambda r: (r.session.pop_flash(), r.session.peek_flash('error')))
    assert after == ([], [])


def test_pyramid_default_csrf_policy(sessions):
    def configure(config):
        config.set_default_csrf_options(require_csrf=True)
        config.add_route('form', '/form')
        config.add_view(lambda request: Response(request.session.get_csrf_token()),
                        route_name='form', request_method='GET')
        config.add_view(lambda request: Response('accepted'), route_name='form',
                        request_method='POST')
    app = sessions(configure=configure)
    token = app.get('/form').text
    assert len(token) == 40
    app.post('/form', {'csrf_token': 'wrong'}, status=400)
    app.post('/form', status=400)
    assert app.post('/form', {'csrf_token': token}).text == 'accepted'
    assert app.get('/form').text == token        # stable until a new one is asked for


def test_new_csrf_token_replaces_the_old(sessions):
    tokens, _ = sessions().call(
        lambda r: (r.session.get_csrf_token(), r.session.new_csrf_token()))
    assert tokens[0] != tokens[1]


def test_bson_values_round_trip(sessions):
    when = datetime.datetime(2024, 1, 2, 3, 4, 5, 678000)
    values = {'when': when, 'raw': b'\x00\xff', 'nested': {'list': [1, 'two', None]},
              'big': 2 ** 62, 'pi': 3.25, 'yes': True}
    app = sessions()
    app.call(lambda r: r.session.update(values))
    loaded, _ = reader(sessions, app).call(lambda r: dict(r.session.items()))
    assert loaded == values


@pytest.mark.parametrize('key', ['a.b', '$where', '%', '%2E', '', 'é.$%', 'nul\x00byte'])
def test_awkward_keys_round_trip(sessions, key):
    app = sessions()
    app.call(lambda r: r.session.__setitem__(key, key))
    loaded, _ = app.call(lambda r: dict(r.session.items()))
    assert loaded == {key: key}
    app.call(lambda r: r.session.__setitem__(key, 'changed'))
    loaded, _ = app.call(lambda r: dict(r.session.items()))
    assert loaded == {key: 'changed'}
    app.call(lambda r: r.session.__delitem__(key))
    loaded, _ = app.call(lambda r: dict(r.session.items()))
    assert loaded == {}


def test_nul_key_with_max_size(sessions):
    app = sessions(max_size=10000)
    app.get('/session?set=a%00b:1')
    assert app.get('/session').json['data'] == {'a\x00b': 1}


def test_nested_awkward_keys_are_stored_or_refused_as_values(sessions):
    """Servers differ on nested keys with '.' or '$': never an outage error."""
    def view(request):
        request.session['nested'] = {'a.b': 1}
        return Response('ok')
    app = sessions(views={'nested': view})
    try:
        app.get('/nested')
    except SessionValueError:
        return
    assert app.get('/session').json['data'] == {'nested': {'a.b': 1}}


def test_non_string_key_is_refused_at_once(sessions):
    def view(request):
        with pytest.raises(SessionValueError, match='42'):
            request.session[42] = 'x'
        return True
    assert sessions().call(view)[0]


@pytest.mark.parametrize('value', [object(), {1, 2}, {'inner': object()}])
def test_unstorable_value_names_the_key(sessions, backend_collection, value):
    with pytest.raises(SessionValueError, match="'bad'"):
        sessions().call(lambda r: r.session.update(good=1, bad=value))
    assert backend_collection.count_documents({}) == 0


def test_cyclic_value_names_the_key(sessions):
    def view(request):
        loop = []
        loop.append(loop)
        request.session['loop'] = loop
        return Response('ok')
    with pytest.raises(SessionValueError, match="'loop'"):
        sessions(views={'loop': view}).get('/loop')


def test_unstorable_value_in_an_update_names_the_key(sessions, backend_collection):
    app = sessions()
    app.call(lambda r: r.session.__setitem__('ok', 1))
    with pytest.raises(SessionValueError, match="'bad'"):
        app.call(lambda r: r.session.__setitem__('bad', object()))
    app.call(lambda r: r.session.__setitem__('lst', []))
    with pytest.raises(SessionValueError, match="'lst'"):
        app.call(lambda r: r.session['lst'].append(object()))
    assert backend_collection.find_one()['data'] == {'ok': 1, 'lst': []}


def test_session_over_the_document_limit(sessions):
    with pytest.raises(SessionValueError, match='larger than MongoDB'):
        sessions().call(lambda r: r.session.__setitem__('huge', 'x' * (17 * 1024 * 1024)))


def test_uuid_values_round_trip(sessions):
    value = uuid.uuid4()
    app = sessions()
    app.call(lambda r: r.session.__setitem__('u', value))
    loaded, _ = reader(sessions, app).call(lambda r: r.session['u'])
    assert loaded == value


def test_integer_too_large_for_bson_names_the_key(sessions):
    with pytest.raises(SessionValueError, match="'huge'"):
        sessions().call(lambda r: r.session.__setitem__('huge', 2 ** 64))


# -- the options mapping ----------------------------------------------------------

def test_options_clear_resets_the_flags(sessions):
    def view(request):
        options = request.session.options
        options['no_store'] = True
        options.clear()
        return Response(str(dict(options)))
    assert "'no_store': False" in sessions(views={'clear': view}).get('/clear').text


# -- lifecycle -------------------------------------------------------------------

def test_expired_document_is_ignored_before_the_ttl_monitor(sessions, backend_collection):
    app = sessions()
    app.call(lambda r: r.session.__setitem__('a', 1))
    backend_collection.update_one({}, {'$set': {'expires': datetime.datetime(2000, 1, 1)}})
    loaded, response = app.call(lambda r: (r.session.new, dict(r.session)))
    assert loaded == (True, {})
    assert 'Max-Age=0' in response.headers['Set-Cookie']


def test_expired_id_is_never_reused(sessions, backend_collection):
    app = sessions()
    app.call(lambda r: r.session.__setitem__('a', 1))
    old_cookie = app.cookies['session']
    backend_collection.update_one({}, {'$set': {'expires': datetime.datetime(2000, 1, 1)}})
    app.call(lambda r: r.session.__setitem__('b', 2))
    assert app.cookies['session'] != old_cookie
    assert backend_collection.count_documents({'data.b': 2}) == 1


def test_idle_expiry_slides_on_write(sessions, backend_collection):
    app = sessions(timeout=600)
    app.call(lambda r: r.session.__setitem__('a', 1))
    first = backend_collection.find_one()['expires']
    backend_collection.update_one(
        {}, {'$set': {'expires': first - datetime.timedelta(seconds=300)}})
    app.call(lambda r: r.session.__setitem__('a', 2))
    assert backend_collection.find_one()['expires'] >= first


def test_reissue_time_limits_refresh_writes(sessions, backend_collection):
    app = sessions(timeout=600, reissue_time=60)
    app.call(lambda r: r.session.__setitem__('a', 1))
    stored = backend_collection.find_one()['expires']
    app.call(lambda r: r.session.get('a'))
    assert backend_collection.find_one()['expires'] == stored       # nothing gained: no write
    backend_collection.update_one(
        {}, {'$set': {'expires': stored - datetime.timedelta(seconds=61)}})
    app.call(lambda r: r.session.get('a'))
    assert backend_collection.find_one()['expires'] > stored - datetime.timedelta(seconds=1)


def test_refresh_resends_a_persistent_cookie(sessions, backend_collection):
    app = sessions(timeout=600, reissue_time=0, cookie_max_age=600)
    app.call(lambda r: r.session.__setitem__('a', 1))
    earlier = backend_collection.find_one()['expires'] - datetime.timedelta(seconds=5)
    backend_collection.update_one({}, {'$set': {'expires': earlier}})
    _, response = app.call(lambda r: r.session.get('a'))
    assert 'Max-Age=600' in response.headers['Set-Cookie']


def test_absolute_timeout_caps_the_expiry(sessions, backend_collection):
    app = sessions(timeout=600, reissue_time=0, absolute_timeout=60)
    app.call(lambda r: r.session.__setitem__('a', 1))
    doc = backend_collection.find_one()
    assert doc['expires'] <= doc['created'] + datetime.timedelta(seconds=60)
    app.call(lambda r: r.session.__setitem__('a', 2))
    doc = backend_collection.find_one()
    assert doc['expires'] <= doc['created'] + datetime.timedelta(seconds=60)


def test_no_timeout_stores_no_expiry(sessions, backend_collection):
    app = sessions(timeout=None)
    app.call(lambda r: r.session.__setitem__('a', 1))
    assert backend_collection.find_one()['expires'] is None
    loaded, _ = app.call(lambda r: dict(r.session))
    assert loaded == {'a': 1}


def test_database_holds_only_the_digest_of_the_id(sessions, backend_collection):
    app = sessions()
    app.call(lambda r: r.session.__setitem__('a', 1))
    session_id, _ = app.call(lambda r: r.session.options['id'])
    doc = backend_collection.find_one()
    assert doc['_id'] == document_id(session_id) != session_id
    assert session_id not in str(doc)
