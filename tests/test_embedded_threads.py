"""The embedded backend (``mongomock://``) under a real threaded WSGI server.

mongomock is not thread-safe: without the store's lock around every call to
it, concurrent requests under waitress (the demo's own set-up) failed with
``RuntimeError: dictionary changed size during iteration`` from inside
mongomock, a 500. Here waitress serves an application configured with
``mongodb_session.url = mongomock://`` on the loopback interface, and
threads send requests over HTTP: to one session, and to a session each.
Every request must answer 200 and every write must be kept.
"""
import http.client
import json
import sys
import threading

import pytest
from pyramid.config import Configurator
from pyramid.response import Response

from .conftest import SECRET

waitress = pytest.importorskip('waitress')
pytest.importorskip('mongomock')

THREADS = 12
REQUESTS_PER_THREAD = 15
SERVER_THREADS = 8


def write(request):
    # Each request writes a key of its own; a read first, so that the
    # request loads the session (a find) while others insert and update.
    request.session.get('start')
    request.session[request.params['key']] = int(request.params['value'])
    return Response('ok')


def read(request):
    return Response(json_body=dict(request.session))


def start(request):
    request.session['start'] = True
    return Response('ok')


@pytest.fixture
def switch_often():
    """Switch threads far more often than every 5 ms: a race in mongomock shows at once."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(interval)


@pytest.fixture
def server(switch_often):
    """waitress, with SERVER_THREADS threads, serving a mongomock:// application on 127.0.0.1;
    its port."""
    from webtest.http import StopableWSGIServer
    config = Configurator(settings={
        'mongodb_session.url': 'mongomock://',
        'mongodb_session.secret': SECRET,
    })
    config.include('pyramid_mongosession')
    for name, view in (('write', write), ('read', read), ('start', start)):
        config.add_route(name, '/' + name)
        config.add_view(view, route_name=name)
    serving = StopableWSGIServer.create(config.make_wsgi_app(), host='127.0.0.1',
                                        threads=SERVER_THREADS)
    try:
        assert serving.wait()
        yield serving.adj.port
    finally:
        serving.shutdown()


def get(port, path, cookie=None):
    """``(status, body, Set-Cookie's session value or None)`` of one GET."""
    connection = http.client.HTTPConnection('127.0.0.1', port, timeout=30)
    try:
        connection.request('GET', path, headers={'Cookie': 'session=' + cookie} if cookie
                           else {})
        response = connection.getresponse()
        body = response.read()
        set_cookie = response.getheader('Set-Cookie') or ''
    finally:
        connection.close()
    value = set_cookie.split(';')[0].partition('=')[2] if set_cookie.startswith(
        'session=') else None
    return response.status, body, value


def in_threads(target):
    failures = []

    def run(index):
        try:
            target(index)
        except Exception as exc:  # collected, with the thread's index
            failures.append((index, repr(exc)))
    threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(thread.is_alive() for thread in threads)
    assert failures == []


def new_session(port):
    status, _, cookie = get(port, '/start')
    assert status == 200 and cookie
    return cookie


def test_threads_writing_one_session_keep_every_write(server):
    cookie = new_session(server)
    statuses = []

    def worker(index):
        for n in range(REQUESTS_PER_THREAD):
            status, body, _ = get(server, '/write?key=t%02d_%02d&value=%d' % (index, n, n),
                                  cookie)
            statuses.append(status)
            assert status == 200, body
    in_threads(worker)

    assert statuses == [200] * (THREADS * REQUESTS_PER_THREAD)
    status, body, _ = get(server, '/read', cookie)
    data = json.loads(body)
    expected = {'t%02d_%02d' % (i, n): n for i in range(THREADS)
                for n in range(REQUESTS_PER_THREAD)}
    expected['start'] = True
    assert data == expected


def test_threads_each_with_a_session_keep_every_write(server):
    kept = {}

    def worker(index):
        cookie = new_session(server)
        for n in range(REQUESTS_PER_THREAD):
            status, body, _ = get(server, '/write?key=k%02d&value=%d' % (n, index), cookie)
            assert status == 200, body
        status, body, _ = get(server, '/read', cookie)
        assert status == 200, body
        kept[index] = json.loads(body)
    in_threads(worker)

    for index in range(THREADS):
        expected = {'k%02d' % n: index for n in range(REQUESTS_PER_THREAD)}
        expected['start'] = True
        assert kept[index] == expected
