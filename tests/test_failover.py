"""Failover, seen from the wire: the store against a scripted replica-set primary.

MockupDB (the MongoDB driver team's wire-protocol mock server) plays the
primary of a one-member replica set on 127.0.0.1; each test answers the
commands pymongo sends exactly as a primary that steps down, or one that
stops answering, would. The real server of the rest of the suite cannot be
made to do either on cue.
"""
import threading
import time

import pymongo
import pytest
from mockupdb import MockupDB, OpMsg
from pymongo.errors import PyMongoError
from webob import Response

from pyramid_mongosession import MongoSessionFactory, SessionBackendError, SessionStoreError
from pyramid_mongosession.cookie import new_session_id
from pyramid_mongosession.encoding import utcnow

from .conftest import SECRET

#: MongoDB 7.0 speaks wire version 21. From 4.4 on (wire version 9) the server, not the
#: driver, labels an error RetryableWriteError, and pymongo retries only labelled errors.
WIRE_VERSION = 21
NOT_WRITABLE_PRIMARY = 10107
TIMEOUT = 1.0  # the store's operation_timeout in the hanging-primary tests


class Primary:
    """A scripted replica-set primary: it answers the handshake and heartbeats
    by itself and hands every other command to the test. Without ``sessions``,
    it says it has none, as servers before MongoDB 3.6 did."""

    def __init__(self, sessions=True):
        self.server = MockupDB()
        self.port = self.server.run()
        hello = dict(setName='rs0', hosts=['localhost:%d' % self.port], secondary=False,
                     minWireVersion=0, maxWireVersion=WIRE_VERSION, helloOk=True)
        if sessions:
            hello['logicalSessionTimeoutMinutes'] = 30
        self.heartbeats = [
            self.server.autoresponds('ismaster', ismaster=True, **hello),
            self.server.autoresponds('hello', isWritablePrimary=True, **hello),
        ]
        self.server.autoresponds(self._end_sessions)
        self.received = []

    @staticmethod
    def _end_sessions(request):
        # MongoClient.close() ends its server sessions and waits for the answer.
        if request.command_name == 'endSessions':
            request.ok()
            return True
        return False

    def client(self, **options):
        return pymongo.MongoClient(
            self.server.uri, replicaSet='rs0', serverSelectionTimeoutMS=5000,
            heartbeatFrequencyMS=500, **options)

    def receives(self, command, timeout=5):
        request = self.server.receives(timeout=timeout)
        assert isinstance(request, OpMsg), request
        self.received.append(request)
        assert request.command_name == command, request
        return request

    def commands(self):
        return [request.command_name for request in self.received]

    def go_silent(self):
        """Stop answering anything, heartbeats included (a hung primary)."""
        for responder in self.heartbeats:
            responder.cancel()

    def stop(self):
        self.server.stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.stop()


class Background:
    """Runs ``function`` in a thread, so the test can play the server meanwhile."""

    def __init__(self, function, *args):
        self.result = self.error = None
        self.started = time.monotonic()
        self.elapsed = None
        self._thread = threading.Thread(target=self._run, args=(function,) + args, daemon=True)
        self._thread.start()

    def _run(self, function, *args):
        try:
            self.result = function(*args)
        except BaseException as exc:  # handed to the test
            self.error = exc
        finally:
            self.elapsed = time.monotonic() - self.started

    def wait(self, timeout=15):
        self._thread.join(timeout)
        assert not self._thread.is_alive(), 'the call hangs'
        return self


@pytest.fixture
def primary():
    primary = Primary()
    yield primary
    primary.stop()


@pytest.fixture
def client(primary):
    client = primary.client()
    yield client
    client.close()


def transaction_id(request):
    """What a server deduplicates a retried write by: the session and its txnNumber."""
    return request.doc['lsid']['id'], request.doc['txnNumber']


def not_writable_primary(request):
    # What a MongoDB 4.4+ primary that has just stepped down answers.
    request.command_err(code=NOT_WRITABLE_PRIMARY, errmsg='not primary',
                        codeName='NotWritablePrimary', errorLabels=['RetryableWriteError'])


class Applied:
    """The primary's view of one session document, applying each write once per txnNumber."""

    def __init__(self):
        self.document = None
        self.transactions = set()
        self.applications = 0

    def apply(self, request):
        key = transaction_id(request)
        if key in self.transactions:
            return  # a retry of a write already applied: the server does not redo it
        self.transactions.add(key)
        self.applications += 1
        if request.command_name == 'insert':
            [document] = request.doc['documents']
            self.document = dict(document)
        else:
            [statement] = request.doc['updates']
            update = statement['u']
            for path, value in update.get('$set', {}).items():
                target = self.document
                *parents, name = path.split('.')
                for parent in parents:
                    target = target.setdefault(parent, {})
                target[name] = value
            for path, step in update.get('$inc', {}).items():
                self.document[path] = self.document.get(path, 0) + step


def sent_documents(request):
    return request.doc['documents']


def sent_updates(request):
    return request.doc['updates']


def test_not_writable_primary_on_a_session_write_is_retried_once(primary, client, build_app):
    """A new session's insert and a later update each meet a stepped-down
    primary once: pymongo retries each exactly once, under the same session
    and txnNumber, and the session ends up stored with both changes, applied
    once each."""
    factory = MongoSessionFactory(client['app']['sessions'], SECRET, operation_timeout=5)
    app = build_app(factory)
    stored = Applied()

    # 1. A new visitor stores a cart: createIndexes, then the insert.
    request = Background(app.get, '/session?set=cart:["apple"]')
    primary.receives('createIndexes').ok()
    first = primary.receives('insert')
    not_writable_primary(first)
    retry = primary.receives('insert')
    assert transaction_id(retry) == transaction_id(first)
    assert sent_documents(retry) == sent_documents(first)
    stored.apply(retry)
    retry.ok(n=1)
    request.wait()
    assert request.error is None, request.error
    assert request.result.status_int == 200
    assert request.result.json['data'] == {'cart': ['apple']}
    assert primary.commands() == ['createIndexes', 'insert', 'insert']

    # 2. The same visitor adds to the cart: find, then the update.
    primary.received.clear()
    request = Background(app.get, '/session?append=cart:"pear"')
    find = primary.receives('find')
    assert find.doc['filter']['_id'] == stored.document['_id']
    find.ok(cursor={'id': 0, 'ns': 'app.sessions', 'firstBatch': [stored.document]})
    first = primary.receives('update')
    not_writable_primary(first)
    retry = primary.receives('update')
    assert transaction_id(retry) == transaction_id(first)
    assert sent_updates(retry) == sent_updates(first)
    [statement] = sent_updates(retry)
    assert statement.get('upsert', False) is False  # a write never re-creates a session
    stored.apply(retry)
    retry.ok(n=1, nModified=1)
    request.wait()
    assert request.error is None, request.error
    assert request.result.json['data'] == {'cart': ['apple', 'pear']}
    assert primary.commands() == ['find', 'update', 'update']

    # Nothing lost, nothing applied twice.
    assert stored.applications == 2
    assert stored.document['data'] == {'cart': ['apple', 'pear']}
    assert stored.document['v'] == 2


def test_a_write_whose_reply_is_lost_is_retried_and_applied_once(primary, client):
    """The primary applies the update, then the connection drops before the
    reply: pymongo retries under the same txnNumber, and a primary that has
    already applied that transaction answers without applying it again."""
    factory = MongoSessionFactory(client['app']['sessions'], SECRET, operation_timeout=5)
    store = factory.store
    stored = Applied()
    now = utcnow()

    insert = Background(store.insert, 'the-session-id', {'n': 1}, now, None)
    primary.receives('createIndexes').ok()
    request = primary.receives('insert')
    stored.apply(request)
    request.ok(n=1)
    insert.wait()
    assert insert.error is None, insert.error

    update = Background(store.update, 'the-session-id', now, {'n': 2}, set(), None)
    first = primary.receives('update')
    stored.apply(first)
    first.hangup()  # applied, but the answer never arrives
    retry = primary.receives('update')
    assert transaction_id(retry) == transaction_id(first)
    stored.apply(retry)
    retry.ok(n=1, nModified=1)
    update.wait()
    assert update.error is None, update.error
    assert update.result is True
    assert stored.applications == 2  # the insert and one update
    assert stored.document['data'] == {'n': 2}
    assert stored.document['v'] == 2


def test_a_primary_that_stops_answering_a_write_fails_within_operation_timeout(
        primary, client, build_app):
    factory = MongoSessionFactory(client['app']['sessions'], SECRET, operation_timeout=TIMEOUT)
    store = factory.store

    update = Background(store.update, 'the-session-id', utcnow(), {'n': 2}, set(), None)
    primary.receives('createIndexes').ok()
    primary.receives('update')  # ... and never answered
    primary.go_silent()
    update.wait()
    assert isinstance(update.error, SessionStoreError), update.error
    assert isinstance(update.error, SessionBackendError)
    assert isinstance(update.error.__cause__, PyMongoError)
    assert update.error.__cause__.timeout, update.error.__cause__
    assert update.elapsed < TIMEOUT + 1.5, update.elapsed


def test_a_primary_that_stops_answering_mid_request_fails_the_request_in_time(
        primary, client, build_app):
    """A request whose session load hangs gets SessionStoreError (an exception
    view can map it to 503) within operation_timeout, instead of hanging."""
    factory = MongoSessionFactory(client['app']['sessions'], SECRET, operation_timeout=TIMEOUT)
    app = build_app(factory)
    # A valid cookie, as a returning visitor has (signed by the same secret).
    app.set_cookie(factory.cookie.name, signed_cookie_value(factory))

    request = Background(app.get, '/session?read=cart')
    primary.receives('createIndexes').ok()
    primary.receives('find')  # ... and never answered
    primary.go_silent()
    request.wait()
    assert isinstance(request.error, SessionStoreError), request.error
    assert isinstance(request.error.__cause__, PyMongoError)
    assert request.error.__cause__.timeout
    assert request.elapsed < TIMEOUT + 1.5, request.elapsed


def signed_cookie_value(factory):
    """The value of the session cookie the factory would set for a new id."""
    response = Response()
    factory.cookie.set(response, new_session_id())
    header = response.headers['Set-Cookie']
    return header.split(';', 1)[0].split('=', 1)[1]


def test_mockupdb_speaks_the_installed_pymongo(primary, client):
    """The premise of this module: MockupDB 1.8 and pymongo 4 understand each other."""
    ping = Background(client.admin.command, 'ping')
    primary.receives('ping').ok()
    ping.wait()
    assert ping.error is None, ping.error
    assert ping.result['ok'] == 1


# -- an application user without the createIndex privilege ---------------------------------

@pytest.mark.parametrize('indexes, expected, logged', [
    ([{'v': 2, 'key': {'_id': 1}, 'name': '_id_'},
      {'v': 2, 'key': {'expires': 1}, 'name': 'expires_ttl', 'expireAfterSeconds': 0}],
     True, None),
    ([{'v': 2, 'key': {'_id': 1}, 'name': '_id_'}], False, 'has no TTL index'),
])
def test_unauthorized_index_creation_checks_for_the_index(primary, client, caplog, indexes,
                                                           expected, logged):
    factory = MongoSessionFactory(client.app.sessions, SECRET, operation_timeout=5, user_key=None)
    with caplog.at_level('DEBUG', logger='pyramid_mongosession'):
        call = Background(factory.indexes.ensure)
        primary.receives('createIndexes').command_err(
            code=13, errmsg='not authorized on app to execute command', codeName='Unauthorized')
        primary.receives('listIndexes').ok(cursor={'id': 0, 'ns': 'app.sessions',
                                                   'firstBatch': indexes})
        call.wait()
    assert call.error is None and call.result is expected
    messages = ' '.join(record.getMessage() for record in caplog.records
                        if record.levelname == 'WARNING')
    if logged is None:
        assert messages == ''
    else:
        assert logged in messages and 'refused a TTL index' not in messages


def test_unreachable_server_is_reported_as_such(unused_port, build_app):
    client = pymongo.MongoClient('mongodb://127.0.0.1:%d' % unused_port,
                                 serverSelectionTimeoutMS=300)
    app = build_app(client.app.sessions, operation_timeout=1)
    with pytest.raises(SessionBackendError, match='^MongoDB is unreachable: could not'):
        app.get('/session?set=a:1')
    client.close()


@pytest.fixture
def unused_port():
    from .servers import free_port
    return free_port()


# -- the read of a session: one find command, tried once more after a failover ------

def _load_in_background(factory, session_id):
    return Background(factory.store.load, session_id, utcnow())


def _stored_document(factory, session_id):
    from pyramid_mongosession.documents import document_id
    return {'_id': document_id(session_id), 'data': {'cart': ['apple']}, 'created': utcnow(),
            'expires': None, 'v': 1}


@pytest.mark.parametrize('first_answer', [
    lambda request: request.hangup(),                       # the connection drops
    lambda request: request.command_err(code=NOT_WRITABLE_PRIMARY, errmsg='not primary',
                                        codeName='NotWritablePrimary'),
    lambda request: request.command_err(code=91, errmsg='shutting down',
                                        codeName='ShutdownInProgress'),
], ids=['connection dropped', 'not primary', 'shutting down'])
def test_a_read_that_meets_a_failover_is_tried_once_more(primary, client, first_answer):
    factory = MongoSessionFactory(client['app']['sessions'], SECRET, operation_timeout=5)
    session_id = new_session_id()
    load = _load_in_background(factory, session_id)
    primary.receives('createIndexes').ok()
    first = primary.receives('find')
    assert first.doc['filter'] == {'_id': _stored_document(factory, session_id)['_id']}
    assert (first.doc['limit'], first.doc['singleBatch']) == (1, True)
    first_answer(first)
    primary.receives('find').ok(cursor={'id': 0, 'ns': 'app.sessions',
                                        'firstBatch': [_stored_document(factory, session_id)]})
    load.wait()
    assert load.error is None, load.error
    assert load.result.data == {'cart': ['apple']}
    assert primary.commands() == ['createIndexes', 'find', 'find']


@pytest.mark.parametrize('answer, twice', [
    (dict(code=NOT_WRITABLE_PRIMARY, errmsg='not primary', codeName='NotWritablePrimary'),
     True),
    (dict(code=2, errmsg='bad value', codeName='BadValue'), False),
    (dict(code=13, errmsg='not authorized', codeName='Unauthorized'), False),
])
def test_a_read_is_tried_at_most_twice_and_only_after_a_retryable_error(primary, client,
                                                                      answer, twice):
    factory = MongoSessionFactory(client['app']['sessions'], SECRET, operation_timeout=5)
    load = _load_in_background(factory, new_session_id())
    primary.receives('createIndexes').ok()
    primary.receives('find').command_err(**answer)
    if twice:
        primary.receives('find').command_err(**answer)
    load.wait()
    assert isinstance(load.error.__cause__, PyMongoError), load.error   # mapped, raised
    assert primary.commands() == ['createIndexes'] + ['find'] * (2 if twice else 1)
    with pytest.raises(AssertionError):   # nothing more was sent
        primary.receives('find', timeout=0.3)


def test_a_read_carries_the_collections_read_concern(primary):
    client = primary.client(readConcernLevel='majority')
    try:
        factory = MongoSessionFactory(client['app']['sessions'], SECRET, operation_timeout=5)
        load = _load_in_background(factory, new_session_id())
        primary.receives('createIndexes').ok()
        find = primary.receives('find')
        assert find.doc['readConcern'] == {'level': 'majority'}
        find.ok(cursor={'id': 0, 'ns': 'app.sessions', 'firstBatch': []})
        load.wait()
        assert load.error is None and load.result is None
    finally:
        client.close()


def test_a_client_without_retryable_reads_reads_once(primary):
    client = primary.client(retryReads=False)
    try:
        factory = MongoSessionFactory(client['app']['sessions'], SECRET, operation_timeout=5)
        load = _load_in_background(factory, new_session_id())
        primary.receives('createIndexes').ok()
        primary.receives('find').command_err(code=NOT_WRITABLE_PRIMARY, errmsg='not primary',
                                             codeName='NotWritablePrimary')
        load.wait()
        assert isinstance(load.error, SessionBackendError), load.error
        with pytest.raises(AssertionError):   # no second find
            primary.receives('find', timeout=0.3)
    finally:
        client.close()


def test_when_no_server_answers_the_second_try_the_first_error_is_raised():
    # As pymongo's retryable reads do: the failover is what went wrong.
    from pymongo.errors import AutoReconnect, ServerSelectionTimeoutError
    from pyramid_mongosession.connection import _read_once_more_on_failover
    errors = [AutoReconnect('connection reset'), ServerSelectionTimeoutError('no server')]

    def run():
        raise errors.pop(0)
    with pytest.raises(AutoReconnect, match='connection reset'):
        _read_once_more_on_failover(True, run)
    assert errors == []
