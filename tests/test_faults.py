"""A server that is down, hung or restarted: bounded failures, recovery, no data lost.

These tests start a server process of their own (mongod or FerretDB, as the
rest of the suite would) so that they can kill, stop and restart it.
"""
import concurrent.futures
import logging
import time

import pymongo
import pytest
from pyramid.response import Response

import webtest

from pyramid_mongosession import MongoSessionFactory, SessionBackendError, SessionStoreError
from pyramid_mongosession.connection import client_limits

from .conftest import SECRET, make_config

TIMEOUT = 1.0   # operation_timeout for these tests, in seconds
PROBE = 0.5     # outage_probe_interval for these tests, in seconds
SLACK = 4.0     # scheduling headroom on a busy machine; pymongo's default wait is 30 s


@pytest.fixture
def server(own_server):
    if own_server.process.poll() is not None:
        own_server.start()
    yield own_server
    own_server.resume()
    if own_server.process.poll() is not None:
        own_server.start()


@pytest.fixture
def server_client(server):
    client = pymongo.MongoClient(server.url, serverSelectionTimeoutMS=500)
    yield client
    client.close()


def unavailable_is_503(config):
    config.add_exception_view(
        lambda exc, request: Response('sessions unavailable', status=503),
        context=SessionBackendError)


@pytest.fixture
def fault_app(server_client, build_app):
    """``fault_app(**options)``: an application on the test's own server, which
    answers 503 when the sessions are unavailable."""
    collection = server_client['faults_%d' % time.monotonic_ns()]['sessions']

    def make(**options):
        options.setdefault('outage_probe_interval', PROBE)
        return build_app(collection, operation_timeout=TIMEOUT, configure=unavailable_is_503,
                         **options)
    return make


def eventually(call, within=PROBE + SLACK):
    """The result of ``call`` once it stops raising (the outage probe lets it through)."""
    deadline = time.monotonic() + within
    while True:
        try:
            return call()
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def timed(call):
    start = time.monotonic()
    try:
        return call(), time.monotonic() - start
    except Exception as exc:
        return exc, time.monotonic() - start


def test_killed_server_fails_fast_then_recovers(server, fault_app):
    app = fault_app()
    app.get('/session?set=before:1')
    server.kill()
    response, elapsed = timed(lambda: app.get('/session?read=before', status=503))
    assert response.text == 'sessions unavailable'
    assert elapsed < TIMEOUT + SLACK
    server.start()                      # same port, same data directory
    # The next request after the probe interval finds it back; the acknowledged write survived.
    assert eventually(lambda: app.get('/session')).json['data'] == {'before': 1}


def test_store_failure_raises_session_store_error(server, server_client, build_app):
    loaded = {}

    def kill_then_write(request):
        request.session.get('x')
        server.kill()
        request.session['x'] = 1
        loaded['ok'] = True
        return Response('ok')
    test_app = build_app(server_client.faults.sessions, operation_timeout=TIMEOUT,
                         views={'kill': kill_then_write})
    test_app.get('/session?set=x:0')
    error, elapsed = timed(lambda: test_app.get('/kill'))
    assert loaded['ok']
    assert isinstance(error, SessionStoreError)
    assert isinstance(error.__cause__, pymongo.errors.PyMongoError)
    assert elapsed < TIMEOUT + SLACK


def test_hung_server_fails_within_the_timeout_then_recovers(server, fault_app):
    app = fault_app()
    app.get('/session?set=a:1')
    server.pause()
    try:
        response, elapsed = timed(lambda: app.get('/session?read=a', status=503))
        assert getattr(response, 'status_int', None) == 503, response
        assert elapsed < TIMEOUT + SLACK
    finally:
        server.resume()
    assert eventually(lambda: app.get('/session')).json['data'] == {'a': 1}


@pytest.mark.parametrize('path', ['/session?read=a', '/session?set=b:2&blind='])
def test_a_client_bounding_each_wait_fails_on_a_hung_server_too(server, build_app, monkeypatch,
                                                                path):
    # The client the ini settings make: each of its waits (an answer, a
    # connection, a server) bounded by operation_timeout, and no timeout set
    # around each call. A hung server costs one wait and the retry's server
    # selection: at most about twice operation_timeout.
    client = pymongo.MongoClient(server.url, **client_limits(TIMEOUT, []))
    around_each_call = []
    real_timeout = pymongo.timeout
    monkeypatch.setattr(pymongo, 'timeout',
                        lambda seconds: around_each_call.append(seconds) or real_timeout(seconds))
    try:
        app = build_app(client['faults_%d' % time.monotonic_ns()]['sessions'],
                        operation_timeout=TIMEOUT, configure=unavailable_is_503,
                        outage_probe_interval=PROBE)
        app.get('/session?set=a:1')
        assert app.get('/session?read=a').json['data'] == {'a': 1}
        assert around_each_call == []
        server.pause()
        try:
            response, elapsed = timed(lambda: app.get(path, status=503))
            if 'blind' in path:   # the write at the end of the request raises
                assert isinstance(response, SessionStoreError), response
            else:                 # the read in the view: the exception view's 503
                assert getattr(response, 'status_int', None) == 503, response
            assert elapsed < 2 * TIMEOUT + SLACK
        finally:
            server.resume()
        # A write the client gave up on may still land once the server resumes:
        # its outcome is unknown, as with any timeout. Nothing else changes.
        assert eventually(lambda: app.get('/session')).json['data'] in ({'a': 1},
                                                                        {'a': 1, 'b': 2})
        assert around_each_call == []
    finally:
        client.close()


def test_degrade_mode_serves_an_empty_unsaved_session(server, fault_app, caplog):
    app = fault_app(degrade_on_outage=True)
    app.get('/session?set=a:1')
    cookie = app.cookies['session']
    server.kill()
    with caplog.at_level(logging.WARNING, logger='pyramid_mongosession'):
        response = app.get('/session?set=b:2')
    assert response.json['data'] == {'b': 2} and response.json['new'] is True
    assert 'Set-Cookie' not in response.headers     # the user's cookie is kept
    assert any('will not be saved' in r.getMessage() for r in caplog.records)
    server.start()
    time.sleep(PROBE)
    assert app.cookies['session'] == cookie
    assert app.get('/session').json['data'] == {'a': 1}


def test_failed_remove_only_warns_and_still_clears_the_cookie(server, fault_app, build_app,
                                                              caplog):
    app = fault_app()
    app.get('/session?set=a:1')

    def expire_after_kill(request):
        request.session.get('a')
        server.kill()
        request.session.options['expire'] = True
        return Response('bye')
    logout = build_app(app.session_factory, views={'logout': expire_after_kill})
    logout.set_cookie('session', app.cookies['session'])
    with caplog.at_level(logging.WARNING, logger='pyramid_mongosession'):
        response = logout.get('/logout')
    assert 'Max-Age=0' in response.headers['Set-Cookie']
    assert any('expire on its own' in r.getMessage() for r in caplog.records)


def render_exceptions(environ, router):
    """The execution policy the docs recommend: exception views for failed saves too."""
    with router.request_context(environ) as request:
        try:
            return router.invoke_request(request)
        except Exception:
            return request.invoke_exception_view(reraise=True)


def test_failed_save_maps_to_503_with_the_documented_execution_policy(server, server_client,
                                                                      build_app):
    def kill_then_write(request):
        request.session.get('x')
        server.kill()
        request.session['x'] = 1
        return Response('ok')

    def configure(config):
        config.add_exception_view(lambda exc, request: Response('try again', status=503),
                                  context=SessionBackendError)
        config.set_execution_policy(render_exceptions)
    app = build_app(server_client.faults_policy.sessions, operation_timeout=TIMEOUT,
                    views={'kill': kill_then_write}, configure=configure)
    app.get('/session?set=x:0')
    assert app.get('/kill', status=503).text == 'try again'


def test_degraded_logout_still_clears_the_cookie(server, fault_app):
    app = fault_app(degrade_on_outage=True)
    app.get('/session?set=user:"alice"')
    server.kill()
    response = app.get('/session?opt=expire')
    assert 'Max-Age=0' in response.headers['Set-Cookie']
    server.start()
    assert app.get('/session').json['data'] == {}


# -- an outage costs one timeout, not one per request ----------------------------------

OUTAGE_TIMEOUT = 2.0   # long enough to tell a request that waited from one that did not
OUTAGE_PROBE = 3.0     # at most one probe during the burst


@pytest.mark.parametrize('fault', ['paused', 'killed'])
def test_an_outage_costs_one_timeout_not_one_per_request(server, fault):
    client = pymongo.MongoClient(server.url, serverSelectionTimeoutMS=500)
    collection = client['outage_%d' % time.monotonic_ns()]['sessions']
    factory = MongoSessionFactory(collection, SECRET, operation_timeout=OUTAGE_TIMEOUT,
                                  outage_probe_interval=OUTAGE_PROBE)
    config = make_config(factory)
    config.add_exception_view(lambda exc, request: Response('down', status=503),
                              context=SessionBackendError)
    wsgi = config.make_wsgi_app()
    setup = webtest.TestApp(wsgi)
    setup.get('/session?set=kept:1')
    cookie = setup.cookies['session']

    def visit():
        browser = webtest.TestApp(wsgi)
        browser.set_cookie('session', cookie)
        return timed(lambda: browser.get('/session?read=kept', expect_errors=True))

    getattr(server, 'pause' if fault == 'paused' else 'kill')()
    try:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda _: visit(), range(20)))
    finally:
        if fault == 'paused':
            server.resume()
        else:
            server.start()
    assert [response.status_int for response, _ in results] == [503] * 20
    waited = [elapsed for _, elapsed in results if elapsed >= OUTAGE_TIMEOUT * 0.5]
    fast = [elapsed for _, elapsed in results if elapsed < 1.0]
    # The first wave (8 threads at once) and at most one probe wait; the rest fail at once.
    assert len(waited) <= 9, sorted(elapsed for _, elapsed in results)
    assert len(fast) >= 11, sorted(elapsed for _, elapsed in results)

    # Back within the probe interval, without a restart, with nothing lost.
    deadline = time.monotonic() + OUTAGE_PROBE + SLACK
    while True:
        response, _ = visit()
        if response.status_int == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert response.status_int == 200
    assert response.json['data'] == {'kept': 1}
    client.close()
