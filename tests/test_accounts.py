"""Users and their sessions: the user field and its index, handles, last_seen, clients,
listing, revoking, the cap and the events, against the real server."""
import datetime
import threading

import pytest
import webtest
from pyramid.config import Configurator
from pyramid.response import Response

from pyramid_mongosession import (
    MongoSessionFactory, NoSuchSession, SessionCreated, SessionEnded, SessionExpired,
    SessionIdChanged, get_session_factory)
from pyramid_mongosession.accounts import (
    CAP, EXPIRE, INVALIDATE, REVOKE, SessionRecord, client_address)
from pyramid_mongosession.crypto import new_key
from pyramid_mongosession.documents import document_id, session_handle
from pyramid_mongosession.indexes import HANDLE_INDEX, USER_INDEX

from .conftest import LIVE, SECRET

UA = 'Mozilla/5.0 (X11; Linux x86_64) TestBrowser/1.0'
EVENTS = (SessionCreated, SessionIdChanged, SessionEnded, SessionExpired)


def account_view(request):
    """``/do?op=...``: the operations an account's pages do, in query order."""
    session = request.session
    factory = get_session_factory(request)
    body = {}
    for op, arg in request.GET.items():
        if op == 'login':          # what SessionAuthenticationHelper.remember() writes
            session['auth.userid'] = arg
        elif op == 'login_number':
            session['auth.userid'] = int(arg)
        elif op == 'rotate':
            session.change_id()
        elif op == 'logout':
            session.expire()
        elif op == 'forget':      # SessionAuthenticationHelper.forget()
            session.pop('auth.userid', None)
        elif op == 'unset':
            del session['auth.userid']
        elif op == 'invalidate':
            session.invalidate()
        elif op == 'set':
            key, value = arg.split(':', 1)
            session[key] = value
        elif op == 'read':
            body['user'] = session.get('auth.userid')
        elif op == 'handle':
            body['handle'] = session.handle
        elif op == 'list':
            body['sessions'] = [record.as_dict() for record in factory.user_sessions(arg)]
        elif op == 'revoke':
            body['revoked'] = factory.revoke_session(arg, userid=session.get('auth.userid'))
        elif op == 'others':
            body['revoked'] = factory.revoke_user(session['auth.userid'], keep=session.handle)
    return Response(json=body)


def account_app(collection, events=None, **options):
    """A WSGI app whose /do view runs account_view; ``events`` collects what is published."""
    config = Configurator()
    config.set_session_factory(MongoSessionFactory(collection, SECRET, **options))
    config.add_route('do', '/do')
    config.add_view(account_view, route_name='do')
    if events is not None:
        for event_class in EVENTS:
            config.add_subscriber(events.append, event_class)
    return config.make_wsgi_app()


def browser(wsgi, agent=UA, address='203.0.113.77'):
    return webtest.TestApp(wsgi, extra_environ={'HTTP_USER_AGENT': agent,
                                                'REMOTE_ADDR': address})


def log_in(wsgi, user, agent=UA, address='203.0.113.77'):
    """A browser with a fresh session, logged in as ``user`` (write, then change_id)."""
    client = browser(wsgi, agent, address)
    client.get('/do?set=visit:1')
    client.get('/do?login=%s&rotate=1' % user)
    return client


def handle_of(client):
    return client.get('/do?handle=1').json['handle']


@pytest.fixture
def events():
    return []


@pytest.fixture
def wsgi(collection):
    return account_app(collection)


@pytest.fixture
def warm(wsgi, round_trips):
    """The app after its first request (the one-time createIndexes) and a clean command log."""
    browser(wsgi).get('/do?set=warm:1')
    round_trips()
    return wsgi


# -- the document ------------------------------------------------------------------------

def test_a_login_records_user_handle_last_seen_and_client(wsgi, collection):
    client = log_in(wsgi, 'alice')
    document = collection.find_one({'data.auth%2Euserid': 'alice'})
    assert document['user'] == 'alice'
    assert document['handle'] == handle_of(client)
    assert document['client'] == {'agent': UA, 'address': '203.0.113.0/24'}
    assert abs(document['last_seen'] - datetime.datetime.utcnow()) < datetime.timedelta(seconds=10)


def test_sessions_without_a_user_have_no_user_field(wsgi, collection):
    browser(wsgi).get('/do?set=cart:apple')
    document = collection.find_one(LIVE)
    assert 'user' not in document
    assert document['handle'] == session_handle(document['_id'])


def test_the_user_indexes_are_partial_and_anonymous_sessions_stay_out(warm, collection):
    indexes = collection.index_information()
    if 'ferretdbVersion' in collection.database.client.server_info():
        # FerretDB 1.x answers NotImplemented to partialFilterExpression: no index
        # at all rather than one that would hold every anonymous session.
        assert USER_INDEX not in indexes and HANDLE_INDEX not in indexes
    else:
        user_index = indexes[USER_INDEX]
        assert user_index['key'] == [('user', 1), ('expires', 1)]
        assert user_index['partialFilterExpression'] == {'user': {'$exists': True}}
        assert indexes[HANDLE_INDEX]['partialFilterExpression'] == {'user': {'$exists': True}}
    # What keeps a session out of a partial index on {user: {$exists: true}}:
    assert collection.count_documents({}) == 1
    assert collection.count_documents({'user': {'$exists': True}}) == 0


def test_user_indexes_on_a_server_that_has_partial_indexes(atomic_server_url, round_trips):
    """mongo-java-server (or MongoDB) keeps the partial indexes; created with the TTL index
    in one createIndexes."""
    import pymongo
    client = pymongo.MongoClient(atomic_server_url, serverSelectionTimeoutMS=5000)
    name = 'test_indexes_%s' % document_id(str(id(round_trips)))[:12]
    try:
        collection = client[name]['sessions']
        log_in(account_app(collection), 'alice')
        indexes = collection.index_information()
        assert indexes[USER_INDEX]['key'] == [('user', 1), ('expires', 1)]
        assert indexes[USER_INDEX]['partialFilterExpression'] == {'user': {'$exists': True}}
        assert indexes[HANDLE_INDEX]['key'] == [('handle', 1)]
        assert 'expireAfterSeconds' in indexes['expires_ttl']
    finally:
        client.drop_database(name)
        client.close()


def test_a_write_only_login_sets_the_user_in_its_one_update(warm, round_trips, collection):
    client = browser(warm)
    client.get('/do?set=visit:1')
    round_trips()
    client.get('/do?login=bob')                     # SessionAuthenticationHelper.remember()
    assert round_trips() == ['update']
    assert collection.find_one({'user': 'bob'})['data']['auth%2Euserid'] == 'bob'
    round_trips()
    client.get('/do?unset=1')                       # del without reading: blind $unset
    assert round_trips() == ['update']
    assert collection.count_documents({'user': {'$exists': True}}) == 0


def test_forget_removes_the_user(wsgi, collection):
    client = log_in(wsgi, 'alice')
    client.get('/do?forget=1')
    document = collection.find_one(LIVE)
    assert 'user' not in document and 'auth%2Euserid' not in document['data']


def test_change_id_keeps_the_handle_and_user_and_records_the_client_again(wsgi, collection):
    client = log_in(wsgi, 'alice')
    handle = handle_of(client)
    before = collection.find_one(LIVE)
    mobile = browser(wsgi, agent='Phone/2.0', address='2001:db8:abcd:12::7')
    mobile.set_cookie('session', client.cookies['session'])
    mobile.get('/do?read=1&rotate=1')
    after = collection.find_one(LIVE)
    assert after['_id'] != before['_id']
    assert after['handle'] == handle and after['user'] == 'alice'
    assert after['client'] == {'agent': 'Phone/2.0', 'address': '2001:db8:abcd::/48'}
    assert after['created'] == before['created']
    # A change_id of a session the view did not read keeps them too.
    mobile.get('/do?rotate=1')
    assert collection.find_one(LIVE)['handle'] == handle
    assert handle_of(mobile) == handle


def test_handle_is_none_until_stored_and_is_not_the_id(wsgi, collection):
    client = browser(wsgi)
    assert client.get('/do?handle=1').json['handle'] is None
    client.get('/do?set=a:1')
    handle = handle_of(client)
    document = collection.find_one(LIVE)
    assert handle == document['handle']
    assert handle not in client.cookies['session'] and handle != document['_id']
    assert len(handle) == 22


def test_last_seen_rides_on_the_expiry_refresh(collection, round_trips):
    wsgi = account_app(collection, timeout=600, reissue_time=60)
    client = log_in(wsgi, 'alice')
    stored = collection.find_one(LIVE)
    round_trips()
    client.get('/do?read=1')
    assert round_trips() == ['find']                 # within reissue_time: nothing written
    assert collection.find_one(LIVE)['last_seen'] == stored['last_seen']
    earlier = stored['last_seen'] - datetime.timedelta(seconds=300)
    collection.update_one(LIVE, {'$set': {'expires': stored['expires'] - datetime.timedelta(
        seconds=300), 'last_seen': earlier}})
    round_trips()
    client.get('/do?read=1')
    assert round_trips() == ['find', 'update']       # the refresh, no extra write
    assert collection.find_one(LIVE)['last_seen'] > earlier + datetime.timedelta(seconds=200)


def test_track_clients_false_records_no_client(collection):
    log_in(account_app(collection, track_clients=False), 'alice')
    assert 'client' not in collection.find_one(LIVE)


def test_user_key_none_keeps_sessions_out_of_any_user(collection):
    wsgi = account_app(collection, user_key=None)
    log_in(wsgi, 'alice')
    assert 'user' not in collection.find_one(LIVE)
    assert USER_INDEX not in collection.index_information()
    assert get_session_factory(_request(wsgi)).user_sessions('alice') == []


def _request(wsgi):
    from pyramid.request import Request
    request = Request.blank('/')
    request.registry = wsgi.registry
    return request


def test_another_user_key(collection):
    wsgi = account_app(collection, user_key='visit')
    browser(wsgi).get('/do?set=visit:7')
    assert collection.find_one(LIVE)['user'] == '7'


@pytest.mark.parametrize('address, network', [
    ('203.0.113.77', '203.0.113.0/24'),
    ('::ffff:198.51.100.9', '198.51.100.0/24'),
    ('2001:db8:abcd:12::7', '2001:db8:abcd::/48'),
    ('unix-socket', None),
    ('', None),
    (None, None),
])
def test_client_address_keeps_the_network_only(address, network):
    assert client_address(address) == network


def test_a_long_user_agent_is_truncated(wsgi, collection):
    log_in(wsgi, 'alice', agent='X' * 5000)
    assert collection.find_one(LIVE)['client']['agent'] == 'X' * 200


# -- listing ---------------------------------------------------------------------------------

def test_user_sessions_lists_live_sessions_newest_first_in_one_query(
        warm, round_trips, collection, command_log, database):
    laptop = log_in(warm, 'alice', agent='Laptop/1')
    phone = log_in(warm, 'alice', agent='Phone/1', address='2001:db8:1:2::3')
    log_in(warm, 'bob')
    browser(warm).get('/do?set=anonymous:1')
    expired = log_in(warm, 'alice', agent='Old/1')
    collection.update_one({'handle': handle_of(expired)},
                          {'$set': {'expires': datetime.datetime(2000, 1, 1)}})
    round_trips()
    command_log.clear()
    listed = get_session_factory(_request(warm)).user_sessions('alice')
    finds = [e.command for e in command_log.events if e.database_name == database.name]
    assert round_trips() == ['find']
    assert list(finds[0]['filter']) == ['user', 'expires']
    assert finds[0]['filter']['user'] == 'alice'
    assert [record.user_agent for record in listed] == ['Phone/1', 'Laptop/1']
    assert listed[0].handle == handle_of(phone) and listed[1].handle == handle_of(laptop)
    assert listed[0].client_address == '2001:db8:1::/48'
    record = listed[1]
    assert isinstance(record, SessionRecord)
    stored = collection.find_one({'handle': record.handle})
    assert (record.created, record.last_seen, record.expires) == (
        stored['created'], stored['last_seen'], stored['expires'])
    assert record.as_dict()['created'].endswith('Z')


def test_listing_explain_uses_the_user_index_where_the_server_tells(
        request, probed, round_trips):
    """The listing's query, explained on every server the suite starts: where the server
    reports a query plan, it is an index scan of the user index. FerretDB 1.x plans
    every query but an _id lookup as a scan (it pushes no other filter down, and has no
    partial index), and mongo-java-server has no explain command; command monitoring
    (test above) checks the one query everywhere."""
    import pymongo
    from .conftest import PROVISIONED
    seen = {}
    for fixture in PROVISIONED:
        url = request.getfixturevalue(fixture)
        client = pymongo.MongoClient(url, serverSelectionTimeoutMS=5000)
        name = 'test_explain_%s' % document_id(fixture + str(id(request)))[:10]
        try:
            collection = client[name]['sessions']
            wsgi = account_app(collection)
            for _ in range(3):
                log_in(wsgi, 'alice')
            log_in(wsgi, 'bob')
            codec = wsgi.registry.queryUtility(
                __import__('pyramid.interfaces').interfaces.ISessionFactory).store.codec
            query = {'user': codec.user_filter('alice'),
                     'expires': {'$not': {'$lte': datetime.datetime.utcnow()}}}
            try:
                plan = client[name].command('explain', {'find': 'sessions', 'filter': query})
            except pymongo.errors.OperationFailure as exc:
                seen[fixture] = 'no explain (%s)' % exc.code
                assert exc.code == 59      # CommandNotFound
                continue
            winning = (plan.get('queryPlanner') or {}).get('winningPlan')
            if winning is not None:        # MongoDB
                assert USER_INDEX in str(winning) and 'IXSCAN' in str(winning), winning
                seen[fixture] = 'index scan'
            else:                          # FerretDB 1.x: SQLite's plan, no pushdown
                assert plan.get('filterPushdown') is False, plan
                seen[fixture] = 'scan (no filter pushdown)'
        finally:
            client.drop_database(name)
            client.close()
    assert len(seen) == len(PROVISIONED), seen


def test_user_sessions_of_nobody_is_empty(warm):
    assert get_session_factory(_request(warm)).user_sessions('nobody') == []


# -- revoking ---------------------------------------------------------------------------------

def test_revoke_session_ends_it_at_once(warm, round_trips):
    me, other = log_in(warm, 'alice'), log_in(warm, 'alice')
    other_handle = handle_of(other)
    round_trips()
    assert me.get('/do?revoke=%s' % other_handle).json['revoked'] is True
    assert round_trips() == ['find', 'delete']      # the view's own session, then one delete
    assert other.get('/do?read=1').json['user'] is None    # logged out on its next request
    assert me.get('/do?read=1').json['user'] == 'alice'
    assert me.get('/do?revoke=%s' % other_handle).json['revoked'] is False


def test_revoke_session_with_a_userid_ends_only_that_users_session(warm):
    alice, mallory = log_in(warm, 'alice'), log_in(warm, 'mallory')
    assert mallory.get('/do?revoke=%s' % handle_of(alice)).json['revoked'] is False
    assert alice.get('/do?read=1').json['user'] == 'alice'
    factory = get_session_factory(_request(warm))
    assert factory.revoke_session(handle_of(alice)) is True     # an administrator's call
    assert alice.get('/do?read=1').json['user'] is None


def test_revoke_user_keep_signs_out_everywhere_else(warm, collection, round_trips):
    here = log_in(warm, 'alice')
    elsewhere = [log_in(warm, 'alice') for _ in range(3)]
    bob = log_in(warm, 'bob')
    round_trips()
    assert here.get('/do?others=1').json['revoked'] == 3
    assert round_trips() == ['find', 'delete']
    for client in elsewhere:
        assert client.get('/do?read=1').json['user'] is None
    assert here.get('/do?read=1').json['user'] == 'alice'
    assert bob.get('/do?read=1').json['user'] == 'bob'
    factory = get_session_factory(_request(warm))
    assert [r.handle for r in factory.user_sessions('alice')] == [handle_of(here)]
    assert factory.revoke_user('alice') == 1
    assert here.get('/do?read=1').json['user'] is None


def test_revoke_user_refuses_a_keep_that_is_not_a_live_session(backend_collection):
    """A typo in ``keep`` would end every session, the one meant to be kept too."""
    wsgi = account_app(backend_collection)
    alice, bob = log_in(wsgi, 'alice'), log_in(wsgi, 'bob')
    factory = get_session_factory(_request(wsgi))
    for keep in ('nosuchhandle', handle_of(bob)):
        with pytest.raises(NoSuchSession) as info:
            factory.revoke_user('alice', keep=keep)
        assert str(info.value) == ("keep=%r is not the handle of a live session of user "
                                   "'alice': nothing was revoked" % keep)
        assert isinstance(info.value, ValueError)
    assert alice.get('/do?read=1').json['user'] == 'alice'
    assert bob.get('/do?read=1').json['user'] == 'bob'
    assert factory.revoke_user('alice', keep=handle_of(alice)) == 0
    assert alice.get('/do?read=1').json['user'] == 'alice'


def test_a_request_in_flight_cannot_bring_a_revoked_session_back(collection):
    """A request that loaded the session before the revocation writes after it: dropped."""
    loaded, revoked = threading.Event(), threading.Event()

    def slow(request):
        request.session.get('auth.userid')
        loaded.set()
        assert revoked.wait(10)
        request.session['cart'] = 'apple'
        request.session.change_id()
        return Response('ok')
    config = Configurator()
    config.set_session_factory(MongoSessionFactory(collection, SECRET))
    config.add_route('do', '/do')
    config.add_view(account_view, route_name='do')
    config.add_route('slow', '/slow')
    config.add_view(slow, route_name='slow')
    wsgi = config.make_wsgi_app()
    client = log_in(wsgi, 'alice')
    slow_client = browser(wsgi)
    slow_client.set_cookie('session', client.cookies['session'])
    thread = threading.Thread(target=slow_client.get, args=('/slow',))
    thread.start()
    assert loaded.wait(10)
    assert get_session_factory(_request(wsgi)).revoke_user('alice') == 1
    revoked.set()
    thread.join(10)
    assert collection.count_documents(LIVE) == 0
    assert client.get('/do?read=1').json['user'] is None


# -- the cap ---------------------------------------------------------------------------------

def test_the_cap_revokes_the_least_recently_seen(collection, round_trips):
    wsgi = account_app(collection, max_sessions_per_user=2, reissue_time=0)
    first, second = log_in(wsgi, 'alice'), log_in(wsgi, 'alice')
    first.get('/do?read=1')                        # reissue_time=0: seen now
    round_trips()
    third = log_in(wsgi, 'alice')
    # the first write, the move, then the cap: one listing and one delete
    assert round_trips() == ['insert', 'find', 'insert', 'findAndModify', 'find', 'delete']
    assert second.get('/do?read=1').json['user'] is None
    assert first.get('/do?read=1').json['user'] == 'alice'
    assert third.get('/do?read=1').json['user'] == 'alice'
    assert collection.count_documents({'user': 'alice'}) == 2


def test_under_the_cap_a_login_costs_one_listing(collection, round_trips):
    wsgi = account_app(collection, max_sessions_per_user=3)
    log_in(wsgi, 'alice')
    client = browser(wsgi)
    client.get('/do?set=visit:1')
    round_trips()
    client.get('/do?login=alice')
    assert round_trips() == ['update', 'find']
    client.get('/do?set=visit:2')
    assert round_trips() == ['update']             # not the user key: no listing


def test_concurrent_logins_of_one_user_leave_exactly_the_cap(atomic_collection):
    """8 logins of one user at once, cap 3: every login writes, then lists the user's
    sessions and revokes those beyond the 3 latest in one total order; exactly 3 survive."""
    wsgi = account_app(atomic_collection, max_sessions_per_user=3)
    clients = []
    for _ in range(8):
        client = browser(wsgi)
        client.get('/do?set=visit:1')
        clients.append(client)
    barrier = threading.Barrier(len(clients))
    errors = []

    def login(client):
        try:
            barrier.wait(10)
            client.get('/do?read=1&login=alice&rotate=1')
        except Exception as exc:   # reported below
            errors.append(exc)
    for _ in range(3):
        threads = [threading.Thread(target=login, args=(client,)) for client in clients]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert not errors
        assert atomic_collection.count_documents({'user': 'alice'}) == 3
        logged_in = [c for c in clients if c.get('/do?read=1').json['user'] == 'alice']
        assert len(logged_in) == 3
        # Log everybody in again from a fresh session for the next round.
        for client in clients:
            client.reset()
            client.get('/do?set=visit:1')


# -- events ----------------------------------------------------------------------------------

def test_events_of_a_sessions_life(collection, events):
    wsgi = account_app(collection, events=events)
    client = browser(wsgi)
    client.get('/do?set=visit:1')
    handle = handle_of(client)
    client.get('/do?login=alice&rotate=1')
    client.get('/do?logout=1')
    kinds = [(type(e).__name__, e.handle, e.userid, getattr(e, 'reason', None)) for e in events]
    assert kinds == [('SessionCreated', handle, None, None),
                     ('SessionIdChanged', handle, 'alice', None),
                     ('SessionEnded', handle, 'alice', EXPIRE)]
    assert all(e.request is not None and e.request.path == '/do' for e in events)


def test_ended_events_for_sessions_the_request_did_not_read(collection, events, round_trips):
    wsgi = account_app(collection, events=events)
    client = log_in(wsgi, 'alice')
    handle = handle_of(client)
    del events[:]
    round_trips()
    # A logout loads the session first (a retired id's logout must leave the new
    # login's cookie alone), so the events come from what it read.
    client.get('/do?logout=1')
    assert round_trips() == ['find', 'delete']
    assert [(type(e), e.handle, e.userid, e.reason) for e in events] == [
        (SessionEnded, handle, 'alice', EXPIRE)]
    other = log_in(wsgi, 'bob')
    del events[:]
    other_handle = handle_of(other)
    other.get('/do?invalidate=1')
    assert [(e.handle, e.userid, e.reason) for e in events] == [(other_handle, 'bob', INVALIDATE)]


@pytest.mark.parametrize('query, reason', [('read=1&logout=1', EXPIRE),
                                           ('read=1&invalidate=1', INVALIDATE),
                                           ('read=1&invalidate=1&set=cart:x', INVALIDATE)])
def test_ended_events_for_sessions_the_request_read(collection, events, round_trips,
                                                    query, reason):
    wsgi = account_app(collection, events=events)
    client = log_in(wsgi, 'alice')
    handle = handle_of(client)
    del events[:]
    round_trips()
    client.get('/do?' + query)
    assert 'findAndModify' not in round_trips()      # the request knows what it ended
    ended = [(e.handle, e.userid, e.reason) for e in events if isinstance(e, SessionEnded)]
    assert ended == [(handle, 'alice', reason)]
    if 'set=' in query:   # data stored after invalidate() starts a new session
        assert [type(e) for e in events] == [SessionEnded, SessionCreated]
        assert events[1].handle != handle and events[1].userid is None


def test_no_subscriber_no_cost(warm, round_trips):
    """Without subscribers a logout costs what it does without accounts: find, delete."""
    client = log_in(warm, 'alice')
    round_trips()
    client.get('/do?logout=1')
    assert round_trips() == ['find', 'delete']


def test_revocation_and_cap_events(collection, events):
    wsgi = account_app(collection, events=events, max_sessions_per_user=2)
    first = log_in(wsgi, 'alice')
    second = log_in(wsgi, 'alice')
    first_handle = handle_of(first)
    del events[:]
    third = log_in(wsgi, 'alice')
    ended = [(e.handle, e.userid, e.reason) for e in events if isinstance(e, SessionEnded)]
    assert ended == [(first_handle, 'alice', CAP)]
    assert isinstance(events[-1], SessionEnded) and events[-1].request is not None
    del events[:]
    assert third.get('/do?revoke=%s' % handle_of(second)).json['revoked'] is True
    assert [(type(e), e.reason, e.userid) for e in events] == [(SessionEnded, REVOKE, 'alice')]
    third_handle = handle_of(third)
    del events[:]
    # A script (pyramid.paster.bootstrap) has the application's registry current,
    # and maybe no request.
    from pyramid.threadlocal import manager
    manager.push({'registry': wsgi.registry, 'request': None})
    try:
        assert get_session_factory(_request(wsgi)).revoke_user('alice') == 1
    finally:
        manager.pop()
    assert [(e.handle, e.userid, e.reason, e.request) for e in events] == [
        (third_handle, 'alice', REVOKE, None)]


def test_session_expired_event(collection, events):
    wsgi = account_app(collection, events=events)
    client = log_in(wsgi, 'alice')
    handle = handle_of(client)
    del events[:]
    collection.update_many({}, {'$set': {'expires': datetime.datetime(2000, 1, 1)}})
    assert client.get('/do?read=1').json['user'] is None
    assert [(type(e), e.handle, e.userid) for e in events] == [(SessionExpired, handle, 'alice')]


# -- with encryption_keys -------------------------------------------------------------------

def test_with_encryption_the_user_is_a_keyed_hash_and_the_client_is_sealed(collection):
    key = new_key()
    wsgi = account_app(collection, encryption_keys=[key])
    client = log_in(wsgi, 'alice@example.com')
    document = collection.find_one(LIVE)
    assert isinstance(document['user'], bytes) and len(document['user']) == 32
    assert 'alice' not in str(document) and 'TestBrowser' not in str(document)
    listed = get_session_factory(_request(wsgi)).user_sessions('alice@example.com')
    assert [(r.handle, r.user_agent, r.client_address) for r in listed] == [
        (handle_of(client), UA, '203.0.113.0/24')]
    # Another key hashes differently: a reader without the key learns nothing.
    other = account_app(collection, encryption_keys=[new_key()])
    assert get_session_factory(_request(other)).user_sessions('alice@example.com') == []


def test_with_a_new_key_first_sessions_are_found_and_rehashed_on_their_next_write(
        collection):
    old, new = new_key(), new_key()
    client = log_in(account_app(collection, encryption_keys=[old]), 'alice')
    hashed_under_old = collection.find_one(LIVE)['user']
    rotated = account_app(collection, encryption_keys=[new, old], reissue_time=0)
    factory = get_session_factory(_request(rotated))
    assert len(factory.user_sessions('alice')) == 1
    again = browser(rotated)
    again.set_cookie('session', client.cookies['session'])
    again.get('/do?read=1')                     # loads; the retired key's values are sealed again
    assert collection.find_one(LIVE)['user'] != hashed_under_old
    only_new = account_app(collection, encryption_keys=[new])
    assert len(get_session_factory(_request(only_new)).user_sessions('alice')) == 1


def _session_id(client):
    """The session id inside the signed cookie: base64url(HMAC-SHA512 signature + id)."""
    import base64
    value = client.cookies['session'].strip('"')
    return base64.urlsafe_b64decode(value + '=' * (-len(value) % 4))[64:].decode('ascii')


# -- the embedded backend ----------------------------------------------------------------

def test_listing_and_revoking_on_either_backend(backend_collection):
    wsgi = account_app(backend_collection)
    here, there = log_in(wsgi, 'alice'), log_in(wsgi, 'alice')
    factory = get_session_factory(_request(wsgi))
    assert {r.handle for r in factory.user_sessions('alice')} == {handle_of(here),
                                                                   handle_of(there)}
    assert here.get('/do?others=1').json['revoked'] == 1
    assert there.get('/do?read=1').json['user'] is None
    assert here.get('/do?read=1').json['user'] == 'alice'


# -- the request is not kept alive --------------------------------------------------------

def test_a_request_is_freed_without_the_cyclic_garbage_collector(collection):
    """The session holds its request by a weak reference: no reference cycle."""
    import gc
    import weakref
    requests = []

    def view(request):
        requests.append(weakref.ref(request))
        request.session['a'] = 1
        request.session.get('a')
        return Response('ok')
    config = Configurator()
    config.set_session_factory(MongoSessionFactory(collection, SECRET))
    config.add_subscriber(lambda event: None, SessionCreated)
    config.add_route('view', '/')
    config.add_view(view, route_name='view')
    client = browser(config.make_wsgi_app())
    client.get('/')
    gc.collect()
    gc.disable()
    try:
        client.get('/')
        client.get('/?again=1')
        assert [reference() for reference in requests[1:]] == [None, None]
    finally:
        gc.enable()


def test_late_store_records_the_client_and_publishes_with_its_request(collection, events):
    def streamed(request):
        request.session.options['late_store'] = True

        def body():
            yield b'one'
            request.session['auth.userid'] = 'alice'
        return Response(app_iter=body())
    config = Configurator()
    config.set_session_factory(MongoSessionFactory(collection, SECRET))
    config.add_subscriber(events.append, SessionCreated)
    config.add_route('stream', '/stream')
    config.add_view(streamed, route_name='stream')
    browser(config.make_wsgi_app()).get('/stream')
    document = collection.find_one(LIVE)
    assert document['user'] == 'alice'
    assert document['client'] == {'agent': UA, 'address': '203.0.113.0/24'}
    assert [(type(e), e.userid, e.request.path) for e in events] == [
        (SessionCreated, 'alice', '/stream')]
