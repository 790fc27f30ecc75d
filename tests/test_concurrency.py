"""Concurrent requests on one session, against the real server.

The tests use ``atomic_collection`` (see conftest): a server that applies each
command atomically, as MongoDB does. Each test runs twice: on the main server
through a client with one connection (FerretDB 1.x applies updates atomically
only so), and on a server whose probe found its updates atomic
(``atomic_server_url``: MongoDB, or else mongo-java-server) through a default
connection pool, so that concurrent requests also reach the server at once.
"""
import os
import threading
import time

import pytest
import webtest
from pyramid.response import Response

from pyramid_mongosession import MongoSessionFactory, SessionConflict

from .conftest import SECRET, make_config

THREADS = 16
REQUESTS_PER_THREAD = 5
ROUNDS = int(os.environ.get('STRESS_ROUNDS', '2'))


def concurrent_app(collection, **options):
    def write_own_key(request):
        session = request.session
        key = request.params['key']
        current = session.get(key, 0)
        time.sleep(0.002)  # widen the window between load and save
        session[key] = current + 1
        return Response('ok')

    def rewrite_everything(request):
        # What whole-session stores do: write back every key as loaded.
        session = request.session
        key = request.params['key']
        loaded = dict(session.items())
        time.sleep(0.002)
        loaded[key] = loaded.get(key, 0) + 1
        session.update(loaded)
        return Response('ok')

    def slow_read(request):
        value = request.session.get('shared')
        request.registry.gate.wait(10)
        return Response(str(value))
    config = make_config(MongoSessionFactory(collection, SECRET, **options))
    config.add_route('write', '/write')
    config.add_view(write_own_key, route_name='write')
    config.add_route('rewrite', '/rewrite')
    config.add_view(rewrite_everything, route_name='rewrite')
    config.add_route('slow_read', '/slow_read')
    config.add_view(slow_read, route_name='slow_read')
    app = config.make_wsgi_app()
    app.registry.gate = threading.Event()
    return app


def browser(wsgi, cookie):
    app = webtest.TestApp(wsgi)
    app.set_cookie('session', cookie)
    return app


def in_threads(count, target):
    errors = []

    def run(index):
        try:
            target(index)
        except Exception as exc:  # reported below, with the thread's index
            errors.append((index, exc))
    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(t.is_alive() for t in threads)
    assert errors == []


def lost_updates(wsgi, path):
    """Run THREADS x REQUESTS_PER_THREAD requests on one session, each thread
    incrementing its own key through ``path``; return the keys that lost updates."""
    first = webtest.TestApp(wsgi)
    first.get('/session?set=start:0')
    cookie = first.cookies['session']

    def worker(index):
        app = browser(wsgi, cookie)
        for _ in range(REQUESTS_PER_THREAD):
            app.get(path, {'key': 'k%02d' % index})
    in_threads(THREADS, worker)

    data = first.get('/session').json['data']
    expected = {'k%02d' % i: REQUESTS_PER_THREAD for i in range(THREADS)}
    expected['start'] = 0
    return {k: data.get(k) for k, v in expected.items() if data.get(k) != v}


@pytest.mark.parametrize('round_', range(ROUNDS))
def test_different_keys_never_lose_updates(atomic_collection, round_):
    assert lost_updates(concurrent_app(atomic_collection), '/write') == {}
    assert atomic_collection.count_documents({}) == 1


def test_the_harness_sees_whole_session_rewrites_lose_updates(atomic_collection):
    # The control: writing back the whole session, as the peers do, loses updates here.
    assert lost_updates(concurrent_app(atomic_collection), '/rewrite') != {}


@pytest.mark.parametrize('round_', range(ROUNDS))
def test_expire_racing_writers_resurrects_nothing(atomic_collection, round_):
    wsgi = concurrent_app(atomic_collection)
    first = webtest.TestApp(wsgi)
    first.get('/session?set=start:0')
    cookie = first.cookies['session']
    expired = threading.Event()

    def worker(index):
        app = browser(wsgi, cookie)
        if index == 0:
            time.sleep(0.01)
            app.get('/session?opt=expire')
            expired.set()
            return
        for _ in range(REQUESTS_PER_THREAD):
            app.get('/write', {'key': 'k%02d' % index})
    in_threads(THREADS, worker)
    assert expired.is_set()
    # Every writer that finished after the expire got a fresh session of its
    # own; none wrote into the expired one, so no document holds 'start'.
    assert atomic_collection.count_documents({'data.start': {'$exists': True}}) == 0
    replay = browser(wsgi, cookie)
    assert replay.get('/session').json == {'id': None, 'new': True, 'data': {}}


def test_reader_never_reverts_a_concurrent_write(atomic_collection):
    wsgi = concurrent_app(atomic_collection, reissue_time=0)
    writer = webtest.TestApp(wsgi)
    writer.get('/session?set=shared:1')
    cookie = writer.cookies['session']
    reader = browser(wsgi, cookie)
    thread = threading.Thread(target=reader.get, args=('/slow_read',))
    thread.start()
    time.sleep(0.2)                       # the reader has loaded shared=1
    writer.get('/session?set=shared:2')
    wsgi.registry.gate.set()
    thread.join(10)
    assert writer.get('/session').json['data'] == {'shared': 2}


def test_same_key_last_writer_wins_by_default(atomic_collection):
    wsgi = concurrent_app(atomic_collection)
    one = webtest.TestApp(wsgi)
    one.get('/session?set=k:0')
    two = browser(wsgi, one.cookies['session'])
    one.get('/session?set=k:1')
    two.get('/session?set=k:2')
    assert one.get('/session').json['data'] == {'k': 2}


def test_detect_conflicts_raises_on_a_concurrent_write(atomic_collection):
    factory = MongoSessionFactory(atomic_collection, SECRET, detect_conflicts=True)
    loaded = threading.Event()
    release = threading.Event()

    def slow_write(request):
        request.session.get('k')
        loaded.set()
        release.wait(10)
        request.session['k'] = 'slow'
        return Response('ok')
    config = make_config(factory)
    config.add_route('slow', '/slow')
    config.add_view(slow_write, route_name='slow')
    wsgi = config.make_wsgi_app()
    fast = webtest.TestApp(wsgi)
    fast.get('/session?set=k:"first"')
    slow = browser(wsgi, fast.cookies['session'])
    outcome = {}

    def run_slow():
        try:
            slow.get('/slow')
        except SessionConflict as exc:
            outcome['error'] = exc
    thread = threading.Thread(target=run_slow)
    thread.start()
    assert loaded.wait(10)
    fast.get('/session?set=k:"fast"')
    release.set()
    thread.join(10)
    assert isinstance(outcome.get('error'), SessionConflict)
    assert fast.get('/session').json['data'] == {'k': 'fast'}


def test_detect_conflicts_ignores_expiry_refreshes(atomic_collection):
    wsgi = concurrent_app(atomic_collection, detect_conflicts=True, reissue_time=0)
    one = webtest.TestApp(wsgi)
    one.get('/session?set=k:0')
    two = browser(wsgi, one.cookies['session'])
    one.get('/session?read=k')          # refreshes the expiry only
    two.get('/session?set=k:2')         # loaded after: no conflict
    assert one.get('/session').json['data'] == {'k': 2}
