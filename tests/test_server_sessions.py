"""Each thread sends its calls in one server session of its own (server_session).

The server sees the same ``lsid`` on every call of a thread and, on a replica
set, a ``txnNumber`` one higher on each write, as with the sessions pymongo
lends each call; the session is replaced after a failure, when old and in a
forked child, and a server without sessions gets calls without one.
"""
import json
import os
import threading

import pymongo

import pytest
from pyramid_mongosession import MongoSessionFactory, SessionBackendError
from pyramid_mongosession.connection import ProcessLocalCollection
from pyramid_mongosession import server_session
from pyramid_mongosession.encoding import utcnow

from .conftest import SECRET, CommandLog
from .test_failover import Background, Primary


def sent(command_log, database):
    """``[(command, lsid, txnNumber)]`` sent to ``database`` (a name or a Database) since
    the log was cleared."""
    name = getattr(database, 'name', database)
    return [(e.command_name, e.command['lsid']['id'] if 'lsid' in e.command else None,
             e.command.get('txnNumber'))
            for e in list(command_log.events) if e.database_name == name]


def visits(app, count):
    """``count`` requests of one visitor that write, read, and write without reading."""
    app.get('/session?set=n:0')
    for n in range(1, count):
        app.get('/session?read=n')
        app.get('/session?blind=1&set=n:%d' % n)


def test_a_threads_calls_share_one_server_session(app, command_log, database):
    app.warmed()
    command_log.clear()
    visits(app, 3)
    calls = sent(command_log, database)
    assert [name for name, _, _ in calls] == ['insert'] + ['find', 'update'] * 2
    assert len({lsid for _, lsid, _ in calls}) == 1 and calls[0][1] is not None


def answer_writes(request):
    """A MockupDB responder: every index creation, insert and update succeeds."""
    if request.command_name in ('createIndexes', 'insert', 'update'):
        request.ok(n=1, nModified=1)
        return True
    return False


def test_each_write_of_a_thread_has_the_next_txnnumber():
    """On a replica set (retryable writes): one session, a txnNumber one higher each
    write, so that a retried write is still told from the next."""
    log = CommandLog()
    with Primary() as replica_set:
        client = replica_set.client(event_listeners=[log])
        store = MongoSessionFactory(client['app']['sessions'], SECRET).store
        replica_set.server.autoresponds(answer_writes)
        done = Background(lambda: [store.insert('one', {'n': 1}, utcnow(), None)] + [
            store.update('one', utcnow(), {'n': n}, set(), None) for n in (2, 3)]).wait()
        client.close()
    assert done.error is None, done.error
    writes = [(name, lsid, number) for name, lsid, number in sent(log, 'app')
              if name != 'createIndexes']
    assert [name for name, _, _ in writes] == ['insert', 'update', 'update']
    assert len({lsid for _, lsid, _ in writes}) == 1
    numbers = [number for _, _, number in writes]
    assert numbers == list(range(numbers[0], numbers[0] + 3))


def test_each_thread_has_a_server_session_of_its_own(app, command_log, database):
    app.warmed()
    command_log.clear()
    visits(app, 2)
    mine = {lsid for _, lsid, _ in sent(command_log, database)}
    command_log.clear()
    other = Background(visits, app.visitor(), 2).wait()
    assert other.error is None, other.error
    theirs = {lsid for _, lsid, _ in sent(command_log, database)}
    assert len(mine) == len(theirs) == 1 and mine != theirs


def test_a_forked_child_starts_a_server_session_of_its_own(app, command_log, database):
    app.warmed()
    command_log.clear()
    visits(app, 2)
    [parents] = {lsid for _, lsid, _ in sent(command_log, database)}
    reading, writing = os.pipe()
    pid = os.fork()
    if pid == 0:   # the child: one more visit, then the lsids it sent, as JSON
        status = 1
        try:
            command_log.clear()
            visits(app.visitor(), 2)
            lsids = sorted({lsid.hex() for _, lsid, _ in sent(command_log, database)})
            os.write(writing, json.dumps(lsids).encode())
            status = 0
        finally:
            os._exit(status)
    os.close(writing)
    with os.fdopen(reading) as answer:
        childs = json.loads(answer.read() or 'null')
    assert os.waitpid(pid, 0)[1] == 0
    assert childs is not None and len(childs) == 1
    assert childs != [parents.hex()]


def this_threads_session(factory):
    """The pymongo ClientSession this thread sends ``factory``'s calls in."""
    return factory.connection._process[2].local.held.session


def test_a_session_is_replaced_when_old_and_after_a_failure(collection, monkeypatch):
    factory = MongoSessionFactory(collection, SECRET)
    store = factory.store
    monkeypatch.setattr(server_session, 'SESSION_LIFETIME', -1.0)   # old at once
    store.insert('one', {'n': 1}, utcnow(), None)
    first = this_threads_session(factory)
    assert first is not None and store.load('one', utcnow()) is not None
    assert first.has_ended and this_threads_session(factory) is not first
    monkeypatch.undo()
    store.load('one', utcnow())
    kept = this_threads_session(factory)
    assert store.load('one', utcnow()) is not None and this_threads_session(factory) is kept
    with pytest.raises(SessionBackendError):
        store.insert('one', {'n': 2}, utcnow(), None)   # a duplicate _id: the call fails
    assert kept.has_ended
    assert store.load('one', utcnow()).data == {'n': 1}
    assert this_threads_session(factory) is not kept
    assert not this_threads_session(factory).has_ended


def test_a_thread_that_ends_gives_its_session_back(app, command_log, database):
    """A server that starts a thread per request leaves no server session behind
    per thread: the next thread is lent the last one's, as pymongo pools them."""
    app.warmed()

    def lsids_of_a_thread():
        command_log.clear()
        thread = Background(visits, app.visitor(), 2).wait()
        assert thread.error is None, thread.error
        return {lsid for _, lsid, _ in sent(command_log, database)}
    first, second = lsids_of_a_thread(), lsids_of_a_thread()
    assert len(first) == 1 and first == second


def test_a_server_without_sessions_gets_calls_without_one():
    with Primary(sessions=False) as sessionless:
        client = sessionless.client()
        store = MongoSessionFactory(client['app']['sessions'], SECRET).store
        insert = Background(store.insert, 'the-session-id', {'n': 1}, utcnow(), None)
        sessionless.receives('createIndexes').ok()
        sessionless.receives('insert').ok(n=1)
        assert insert.wait().error is None, insert.error
        update = Background(store.update, 'the-session-id', utcnow(), {'n': 2}, set(), None)
        sessionless.receives('update').ok(n=1, nModified=1)
        assert update.wait().error is None and update.result is True
        client.close()
    assert all('lsid' not in request.doc for request in sessionless.received)


def test_threads_share_nothing_but_the_server(app, command_log, database):
    """Eight threads, each its own visitor, all at once: no call fails, and the server
    sees one session per thread (each kept until all are done: pymongo lends a
    finished thread's session to the next)."""
    app.warmed()
    command_log.clear()
    errors = []
    all_done = threading.Barrier(8, timeout=60)

    def visitor():
        try:
            visits(app.visitor(), 5)
        except Exception as exc:  # reported below
            errors.append(exc)
        all_done.wait()
    threads = [threading.Thread(target=visitor) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len({lsid for _, lsid, _ in sent(command_log, database)}) == 8


def test_the_threads_store_is_made_when_the_process_connects(collection, monkeypatch):
    """gevent patches threading.local in a worker that imported the application before
    (gunicorn --preload -k gevent): the store made then must be the patched kind, or
    greenlets would share one session and send concurrent writes under one txnNumber."""
    factory = MongoSessionFactory(collection, SECRET)   # imported and configured...
    made = []

    class PatchedLocal(threading.local):   # ...then patched, as gevent does
        def __init__(self):
            made.append(self)
    monkeypatch.setattr(threading, 'local', PatchedLocal)
    factory.store.insert('one', {'n': 1}, utcnow(), None)
    assert made and factory.connection._process[2].local is made[0]


def test_a_session_that_met_a_network_error_is_replaced_even_if_the_retry_succeeded():
    with Primary() as replica_set:
        client = replica_set.client()
        factory = MongoSessionFactory(client['app']['sessions'], SECRET)

        def load():
            factory.store.load('the-session-id', utcnow())
            return factory.connection._process[2].local.held
        first = Background(load)
        replica_set.receives('createIndexes').ok()
        replica_set.receives('find').hangup()   # the first try meets a network error
        replica_set.receives('find').ok(cursor={'id': 0, 'ns': 'app.sessions',
                                                'firstBatch': []})
        first.wait()
        client.close()
    assert first.error is None, first.error
    assert first.result is None   # the dirty session was given up: the next call starts one


def test_a_configuration_error_that_is_not_about_sessions_is_an_error(collection):
    factory = MongoSessionFactory(collection, SECRET)
    factory.store.insert('one', {'n': 1}, utcnow(), None)

    def refused(session=None):
        raise pymongo.errors.ConfigurationError('not about sessions')
    with pytest.raises(SessionBackendError, match='not about sessions'):
        factory.connection.call('do something', refused)
    assert factory.connection._sessions   # the server's sessions are still used
    assert factory.store.load('one', utcnow()) is not None


def test_closing_the_connection_ends_the_threads_sessions(mongodb_url, database):
    """Every thread's server session goes back to pymongo's pool, which the client ends
    on close (endSessions), instead of the server keeping each one for 30 minutes: a
    thread's that is still running included."""
    log = CommandLog()
    sessions = ProcessLocalCollection(database.name, 'sessions', [mongodb_url],
                                      {'event_listeners': [log]})
    factory = MongoSessionFactory(sessions, SECRET)
    factory.store.insert('one', {'n': 1}, utcnow(), None)
    loaded, done = threading.Event(), threading.Event()

    def still_running():
        factory.store.load('one', utcnow())
        loaded.set()
        done.wait(30)
    other = threading.Thread(target=still_running)
    other.start()
    try:
        assert loaded.wait(30)
        used = {e.command['lsid']['id'] for e in log.events if 'lsid' in e.command}
        assert len(used) == 2
        log.clear()
        factory.connection.close()
    finally:
        done.set()
        other.join()
    ended = [e.command['endSessions'] for e in log.events if e.command_name == 'endSessions']
    assert used <= {lsid['id'] for batch in ended for lsid in batch}


def test_unacknowledged_writes_go_without_a_session():
    """pymongo refuses an explicit session with w=0: such a client's calls get none,
    and its writes are sent (not refused as from a server without sessions). Played
    by a scripted primary: neither FerretDB 1.x nor mongo-java-server keeps to the
    protocol of unacknowledged writes."""
    with Primary() as replica_set:
        client = replica_set.client(w=0)
        factory = MongoSessionFactory(client['app']['sessions'], SECRET)
        insert = Background(factory.store.insert, 'the-session-id', {'n': 1}, utcnow(), None)
        replica_set.receives('createIndexes')   # unacknowledged: no answer awaited
        sent = replica_set.receives('insert')
        assert insert.wait().error is None, insert.error
        client.close()
    assert sent.doc['documents'][0]['data'] == {'n': 1}
    assert 'lsid' not in sent.doc
    assert factory.connection._sessions   # not taken for a server without sessions
