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
from pyramid.response import Response

from pyramid_mongosession import SessionConflict

from .conftest import LIVE

THREADS = 16
REQUESTS_PER_THREAD = 5
ROUNDS = int(os.environ.get('STRESS_ROUNDS', '2'))


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


WRITERS = {'write': write_own_key, 'rewrite': rewrite_everything}


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


def lost_updates(first, path):
    """Run THREADS x REQUESTS_PER_THREAD requests on one session, each thread
    incrementing its own key through ``path``; return the keys that lost updates."""
    first.get('/session?set=start:0')
    cookie = first.cookies['session']

    def worker(index):
        app = first.visitor(cookie)
        for _ in range(REQUESTS_PER_THREAD):
            app.get(path, {'key': 'k%02d' % index})
    in_threads(THREADS, worker)

    data = first.get('/session').json['data']
    expected = {'k%02d' % i: REQUESTS_PER_THREAD for i in range(THREADS)}
    expected['start'] = 0
    return {k: data.get(k) for k, v in expected.items() if data.get(k) != v}


@pytest.mark.parametrize('round_', range(ROUNDS))
def test_different_keys_never_lose_updates(atomic_collection, build_app, round_):
    assert lost_updates(build_app(atomic_collection, views=WRITERS), '/write') == {}
    assert atomic_collection.count_documents({}) == 1


def test_the_harness_sees_whole_session_rewrites_lose_updates(atomic_collection, build_app):
    # The control: writing back the whole session, as the peers do, loses updates here.
    assert lost_updates(build_app(atomic_collection, views=WRITERS), '/rewrite') != {}


@pytest.mark.parametrize('round_', range(ROUNDS))
def test_expire_racing_writers_resurrects_nothing(atomic_collection, build_app, round_):
    first = build_app(atomic_collection, views=WRITERS)
    first.get('/session?set=start:0')
    cookie = first.cookies['session']
    expired = threading.Event()

    def worker(index):
        app = first.visitor(cookie)
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
    replay = first.visitor(cookie)
    assert replay.get('/session').json == {'id': None, 'new': True, 'data': {}}


def test_reader_never_reverts_a_concurrent_write(atomic_collection, build_app):
    gate = threading.Event()

    def slow_read(request):
        value = request.session.get('shared')
        gate.wait(10)
        return Response(str(value))
    writer = build_app(atomic_collection, reissue_time=0, views={'slow_read': slow_read})
    writer.get('/session?set=shared:1')
    cookie = writer.cookies['session']
    reader = writer.visitor(cookie)
    thread = threading.Thread(target=reader.get, args=('/slow_read',))
    thread.start()
    time.sleep(0.2)                       # the reader has loaded shared=1
    writer.get('/session?set=shared:2')
    gate.set()
    thread.join(10)
    assert writer.get('/session').json['data'] == {'shared': 2}


def test_same_key_last_writer_wins_by_default(atomic_collection, build_app):
    one = build_app(atomic_collection)
    one.get('/session?set=k:0')
    two = one.visitor(one.cookies['session'])
    one.get('/session?set=k:1')
    two.get('/session?set=k:2')
    assert one.get('/session').json['data'] == {'k': 2}


def test_detect_conflicts_raises_on_a_concurrent_write(atomic_collection, build_app):
    loaded = threading.Event()
    release = threading.Event()

    def slow_write(request):
        request.session.get('k')
        loaded.set()
        release.wait(10)
        request.session['k'] = 'slow'
        return Response('ok')
    fast = build_app(atomic_collection, detect_conflicts=True, views={'slow': slow_write})
    fast.get('/session?set=k:"first"')
    slow = fast.visitor(fast.cookies['session'])
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


def test_detect_conflicts_ignores_expiry_refreshes(atomic_collection, build_app):
    one = build_app(atomic_collection, detect_conflicts=True, reissue_time=0)
    one.get('/session?set=k:0')
    two = one.visitor(one.cookies['session'])
    one.get('/session?read=k')          # refreshes the expiry only
    two.get('/session?set=k:2')         # loaded after: no conflict
    assert one.get('/session').json['data'] == {'k': 2}


# -- change_id while another request writes ----------------------------------------

def paused_view(loaded, release, action):
    def view(request):
        request.session.get('x')
        loaded.set()
        assert release.wait(10)
        action(request.session)
        return Response('ok')
    return view


def race(build_app, collection, action, **options):
    """A slow request loads the session, another writes 'cart', then the slow one acts."""
    loaded, release = threading.Event(), threading.Event()
    app = build_app(collection, views={'slow': paused_view(loaded, release, action)}, **options)
    app.get('/session?set=x:1')
    slow = app.visitor(app.cookies['session'])
    outcome = {}

    def run():
        try:
            outcome['response'] = slow.get('/slow')
        except Exception as exc:  # examined by the caller
            outcome['error'] = exc
    thread = threading.Thread(target=run)
    thread.start()
    assert loaded.wait(10)
    app.get('/session?set=cart:["apple"]')
    release.set()
    thread.join(10)
    return slow, outcome


def sign_in(session):
    session['user'] = 'alice'
    session.options['change_id'] = True


def test_change_id_keeps_a_concurrent_write_to_another_key(atomic_collection, build_app):
    slow, outcome = race(build_app, atomic_collection, sign_in)
    assert 'error' not in outcome
    assert slow.get('/session').json['data'] == {'x': 1, 'user': 'alice', 'cart': ['apple']}
    assert atomic_collection.count_documents(LIVE) == 1


def test_change_id_with_detect_conflicts_raises_and_keeps_the_old_session(atomic_collection,
                                                                         build_app):
    slow, outcome = race(build_app, atomic_collection, sign_in, detect_conflicts=True)
    assert isinstance(outcome.get('error'), SessionConflict)
    docs = list(atomic_collection.find())
    assert [d['data'] for d in docs] == [{'x': 1, 'cart': ['apple']}]
