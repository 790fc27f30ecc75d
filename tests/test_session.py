"""The ISession object: dict semantics, flash, CSRF, values, lifecycle."""
import datetime

import pytest
import webtest
from pyramid.config import Configurator
from pyramid.interfaces import ISession
from pyramid.response import Response
from zope.interface.verify import verifyObject

from pyramid_mongosession import MongoSessionFactory, SessionValueError
from pyramid_mongosession.store import document_id

from .conftest import SECRET


def run(collection, view, cookie=None, **options):
    """Call ``view(request)`` once through a real app; return (result, response, app)."""
    result = {}

    def wrapper(request):
        result['value'] = view(request)
        return Response('ok')
    config = Configurator()
    config.set_session_factory(MongoSessionFactory(collection, SECRET, **options))
    config.add_route('view', '/')
    config.add_view(wrapper, route_name='view')
    app = webtest.TestApp(config.make_wsgi_app())
    if cookie:
        app.set_cookie('session', cookie)
    response = app.get('/')
    return result['value'], response, app


def test_verify_object(collection):
    session, _, _ = run(collection, lambda request: request.session)
    assert verifyObject(ISession, session)


def test_dict_methods(collection):
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
    data, _, app = run(collection, view)
    assert data == {'a': 1, 'b': 2}
    assert collection.find_one()['data'] == {'a': 1, 'b': 2}


def test_created_and_new(collection):
    session, _, app = run(collection, lambda request: request.session.__setitem__('x', 1)
                          or (request.session.new, request.session.created))
    new, created = session
    assert new is True
    assert abs(created - datetime.datetime.now(datetime.timezone.utc).timestamp()) < 60
    doc = collection.find_one()
    assert abs(doc['created'].replace(tzinfo=datetime.timezone.utc).timestamp() - created) < 0.01


def test_flash_queues(collection):
    def first(request):
        request.session.flash('hello')
        request.session.flash('hello')
        request.session.flash('once', allow_duplicate=False)
        request.session.flash('once', allow_duplicate=False)
        request.session.flash('boom', queue='error')
    _, _, app = run(collection, first)
    cookie = app.cookies['session']
    peeked, _, _ = run(collection, lambda r: r.session.peek_flash(), cookie)
    assert peeked == ['hello', 'hello', 'once']
    popped, _, _ = run(collection, lambda r: (r.session.pop_flash(), r.session.pop_flash('error')),
                       cookie)
    assert popped == (['hello', 'hello', 'once'], ['boom'])
    after, _, _ = run(collection, lambda r: (r.session.pop_flash(), r.session.peek_flash('error')),
                      cookie)
    assert after == ([], [])


def test_pyramid_default_csrf_policy(collection):
    config = Configurator()
    config.set_session_factory(MongoSessionFactory(collection, SECRET))
    config.set_default_csrf_options(require_csrf=True)
    config.add_route('form', '/form')
    config.add_view(lambda request: Response(request.session.get_csrf_token()),
                    route_name='form', request_method='GET')
    config.add_view(lambda request: Response('accepted'), route_name='form',
                    request_method='POST')
    app = webtest.TestApp(config.make_wsgi_app())
    token = app.get('/form').text
    assert len(token) == 40
    app.post('/form', {'csrf_token': 'wrong'}, status=400)
    app.post('/form', status=400)
    assert app.post('/form', {'csrf_token': token}).text == 'accepted'
    assert app.get('/form').text == token        # stable until a new one is asked for


def test_new_csrf_token_replaces_the_old(collection):
    tokens, _, _ = run(collection, lambda r: (r.session.get_csrf_token(), r.session.new_csrf_token()))
    assert tokens[0] != tokens[1]


def test_bson_values_round_trip(collection):
    when = datetime.datetime(2024, 1, 2, 3, 4, 5, 678000)
    values = {'when': when, 'raw': b'\x00\xff', 'nested': {'list': [1, 'two', None]},
              'big': 2 ** 62, 'pi': 3.25, 'yes': True}
    _, _, app = run(collection, lambda r: r.session.update(values))
    loaded, _, _ = run(collection, lambda r: dict(r.session.items()), app.cookies['session'])
    assert loaded == values


@pytest.mark.parametrize('key', ['a.b', '$where', '%', '%2E', '', 'é.$%', 'nul\x00byte'])
def test_awkward_keys_round_trip(collection, key):
    _, _, app = run(collection, lambda r: r.session.__setitem__(key, key))
    cookie = app.cookies['session']
    loaded, _, _ = run(collection, lambda r: dict(r.session.items()), cookie)
    assert loaded == {key: key}
    run(collection, lambda r: r.session.__setitem__(key, 'changed'), cookie)
    loaded, _, _ = run(collection, lambda r: dict(r.session.items()), cookie)
    assert loaded == {key: 'changed'}
    run(collection, lambda r: r.session.__delitem__(key), cookie)
    loaded, _, _ = run(collection, lambda r: dict(r.session.items()), cookie)
    assert loaded == {}


def test_non_string_key_is_refused_at_once(collection):
    def view(request):
        with pytest.raises(SessionValueError, match='42'):
            request.session[42] = 'x'
        return True
    assert run(collection, view)[0]


@pytest.mark.parametrize('value', [object(), {1, 2}, {'inner': object()}])
def test_unstorable_value_names_the_key(collection, value):
    with pytest.raises(SessionValueError, match="'bad'"):
        run(collection, lambda r: r.session.update(good=1, bad=value))
    assert collection.count_documents({}) == 0


def test_unstorable_value_in_an_update_names_the_key(collection):
    _, _, app = run(collection, lambda r: r.session.__setitem__('ok', 1))
    with pytest.raises(SessionValueError, match="'bad'"):
        run(collection, lambda r: r.session.__setitem__('bad', object()), app.cookies['session'])
    run(collection, lambda r: r.session.__setitem__('lst', []), app.cookies['session'])
    with pytest.raises(SessionValueError, match="'lst'"):
        run(collection, lambda r: r.session['lst'].append(object()), app.cookies['session'])
    assert collection.find_one()['data'] == {'ok': 1, 'lst': []}


def test_session_over_the_document_limit(collection):
    with pytest.raises(SessionValueError, match='larger than MongoDB'):
        run(collection, lambda r: r.session.__setitem__('huge', 'x' * (17 * 1024 * 1024)))


# -- lifecycle -------------------------------------------------------------------

def test_expired_document_is_ignored_before_the_ttl_monitor(collection):
    _, _, app = run(collection, lambda r: r.session.__setitem__('a', 1))
    collection.update_one({}, {'$set': {'expires': datetime.datetime(2000, 1, 1)}})
    loaded, response, _ = run(collection, lambda r: (r.session.new, dict(r.session)),
                              app.cookies['session'])
    assert loaded == (True, {})
    assert 'Max-Age=0' in response.headers['Set-Cookie']


def test_expired_id_is_never_reused(collection):
    _, _, app = run(collection, lambda r: r.session.__setitem__('a', 1))
    old_cookie = app.cookies['session']
    collection.update_one({}, {'$set': {'expires': datetime.datetime(2000, 1, 1)}})
    _, response, app = run(collection, lambda r: r.session.__setitem__('b', 2), old_cookie)
    assert app.cookies['session'] != old_cookie
    assert collection.count_documents({'data.b': 2}) == 1


def test_idle_expiry_slides_on_write(collection):
    _, _, app = run(collection, lambda r: r.session.__setitem__('a', 1), timeout=600)
    first = collection.find_one()['expires']
    collection.update_one({}, {'$set': {'expires': first - datetime.timedelta(seconds=300)}})
    run(collection, lambda r: r.session.__setitem__('a', 2), app.cookies['session'], timeout=600)
    assert collection.find_one()['expires'] >= first


def test_reissue_time_limits_refresh_writes(collection):
    _, _, app = run(collection, lambda r: r.session.__setitem__('a', 1),
                    timeout=600, reissue_time=60)
    cookie = app.cookies['session']
    stored = collection.find_one()['expires']
    run(collection, lambda r: r.session.get('a'), cookie, timeout=600, reissue_time=60)
    assert collection.find_one()['expires'] == stored       # nothing gained: no write
    collection.update_one({}, {'$set': {'expires': stored - datetime.timedelta(seconds=61)}})
    run(collection, lambda r: r.session.get('a'), cookie, timeout=600, reissue_time=60)
    assert collection.find_one()['expires'] > stored - datetime.timedelta(seconds=1)


def test_refresh_resends_a_persistent_cookie(collection):
    options = dict(timeout=600, reissue_time=0, cookie_max_age=600)
    _, _, app = run(collection, lambda r: r.session.__setitem__('a', 1), **options)
    earlier = collection.find_one()['expires'] - datetime.timedelta(seconds=5)
    collection.update_one({}, {'$set': {'expires': earlier}})
    _, response, _ = run(collection, lambda r: r.session.get('a'), app.cookies['session'], **options)
    assert 'Max-Age=600' in response.headers['Set-Cookie']


def test_absolute_timeout_caps_the_expiry(collection):
    options = dict(timeout=600, reissue_time=0, absolute_timeout=60)
    _, _, app = run(collection, lambda r: r.session.__setitem__('a', 1), **options)
    doc = collection.find_one()
    assert doc['expires'] <= doc['created'] + datetime.timedelta(seconds=60)
    run(collection, lambda r: r.session.__setitem__('a', 2), app.cookies['session'], **options)
    doc = collection.find_one()
    assert doc['expires'] <= doc['created'] + datetime.timedelta(seconds=60)


def test_no_timeout_stores_no_expiry(collection):
    _, _, app = run(collection, lambda r: r.session.__setitem__('a', 1), timeout=None)
    assert collection.find_one()['expires'] is None
    loaded, _, _ = run(collection, lambda r: dict(r.session), app.cookies['session'], timeout=None)
    assert loaded == {'a': 1}


def test_database_holds_only_the_digest_of_the_id(collection):
    _, _, app = run(collection, lambda r: r.session.__setitem__('a', 1))
    session_id, _, _ = run(collection, lambda r: r.session.options['id'], app.cookies['session'])
    doc = collection.find_one()
    assert doc['_id'] == document_id(session_id) != session_id
    assert session_id not in str(doc)


def test_uuid_values_round_trip(collection):
    import uuid
    value = uuid.uuid4()
    _, _, app = run(collection, lambda r: r.session.__setitem__('u', value))
    loaded, _, _ = run(collection, lambda r: r.session['u'], app.cookies['session'])
    assert loaded == value


def test_integer_too_large_for_bson_names_the_key(collection):
    with pytest.raises(SessionValueError, match="'huge'"):
        run(collection, lambda r: r.session.__setitem__('huge', 2 ** 64))
