"""The benchmark application, an in-process browser, and one function per scenario.

Each scenario drives the full Pyramid WSGI stack (routing, views, response
callbacks, cookies) through :class:`Browser`, which calls the WSGI
application directly and keeps cookies the way a browser does. A scenario
sets things up, then hands the measured part to ``meter``, which either runs
it for a time budget (timed runs) or a fixed number of times (counted runs).
A scenario whose every request needs fresh set-up (``logout``) prepares
requests in batches, outside the measured part.

The scenarios in :data:`POPULATED` also run on a store that holds many other
sessions; they then get their visitor (a :class:`CookieJar`) ready-made, so
that the session they use is stored after the others.
"""
import io
import json
import random
import sys
import threading
import time
from email.utils import parsedate_to_datetime

from pyramid.config import Configurator
from pyramid.response import Response

#: Ten values of 10 KB each: the "other keys" of the ~100 KB session.
BIG_VALUES = {'doc%d' % i: random.Random(i).randbytes(5120).hex() for i in range(10)}
#: What a returning visitor's session holds in the small scenarios.
USER = 'user-0123456789'
CSRF = '0123456789abcdef0123456789abcdef01234567'
#: Threads sharing one session in the concurrency scenario, and the pause
#: between a request's load and its save that widens the race.
RACE_DELAY = 0.005


# -- the application ------------------------------------------------------------

def make_app(session_factory, rotate, logout):
    """The same views for every library; ``rotate(session)`` is its login step,
    ``logout(session)`` its logout."""

    def untouched(request):
        return Response('ok')

    def peek(request):
        return Response(request.session.get('user') or '')

    def write(request):
        for key, value in request.GET.items():
            request.session[key] = value
        return Response('ok')

    def read_write(request):
        user = request.session.get('user')
        request.session['counter'] = request.GET['counter']
        return Response(user or '')

    def log_out(request):
        logout(request.session)
        return Response('ok')

    def fill(request):
        request.session.update(BIG_VALUES)
        return Response('ok')

    def login(request):
        rotate(request.session)
        request.session['user'] = request.GET['user']
        return Response('ok')

    def race(request):
        request.session.get('user')          # load
        time.sleep(RACE_DELAY)                # another request's save may land now
        request.session[request.GET['key']] = 1
        return Response('ok')                 # save (response callback)

    def keys(request):
        return Response(json=sorted(request.session.keys()))

    config = Configurator()
    config.set_session_factory(session_factory)
    for name, view in [('untouched', untouched), ('peek', peek), ('write', write),
                       ('readwrite', read_write), ('fill', fill), ('login', login),
                       ('logout', log_out), ('race', race), ('keys', keys)]:
        config.add_route(name, '/' + name)
        config.add_view(view, route_name=name)
    return config.make_wsgi_app()


class CookieJar:
    """The cookies of one browser (thread-safe: concurrent requests share it)."""

    def __init__(self):
        self._cookies = {}
        self._lock = threading.Lock()

    def header(self):
        with self._lock:
            return '; '.join('%s=%s' % item for item in self._cookies.items())

    def update(self, set_cookie_headers):
        with self._lock:
            for header in set_cookie_headers:
                pair, *attributes = [part.strip() for part in header.split(';')]
                name, _, value = pair.partition('=')
                if _deletes(attributes):
                    self._cookies.pop(name, None)
                else:
                    self._cookies[name] = value


def _deletes(attributes):
    for attribute in attributes:
        key, _, value = attribute.partition('=')
        key = key.strip().lower()
        if key == 'max-age' and value.strip().lstrip('-').isdigit() and int(value) <= 0:
            return True
        if key == 'expires':
            try:
                if parsedate_to_datetime(value).timestamp() < time.time():
                    return True
            except (TypeError, ValueError):
                pass
    return False


class Browser:
    """Sends GET requests straight to a WSGI application, with a cookie jar."""

    def __init__(self, app, jar=None):
        self.app = app
        self.jar = jar if jar is not None else CookieJar()

    def get(self, path, query=''):
        environ = {
            'REQUEST_METHOD': 'GET', 'SCRIPT_NAME': '', 'PATH_INFO': path,
            'QUERY_STRING': query, 'SERVER_NAME': 'localhost', 'SERVER_PORT': '80',
            'SERVER_PROTOCOL': 'HTTP/1.1', 'HTTP_HOST': 'localhost', 'REMOTE_ADDR': '127.0.0.1',
            'wsgi.version': (1, 0), 'wsgi.url_scheme': 'http', 'wsgi.input': io.BytesIO(),
            'wsgi.errors': sys.stderr, 'wsgi.multithread': True, 'wsgi.multiprocess': False,
            'wsgi.run_once': False,
        }
        cookie = self.jar.header()
        if cookie:
            environ['HTTP_COOKIE'] = cookie
        started = []

        def start_response(status, headers, exc_info=None):
            started[:] = [status, headers]

        app_iter = self.app(environ, start_response)
        try:
            body = b''.join(app_iter)
        finally:
            close = getattr(app_iter, 'close', None)
            if close is not None:
                close()
        status, headers = started
        if not status.startswith('200'):
            raise RuntimeError('GET %s?%s: %s\n%s' % (path, query, status, body[:2000]))
        self.jar.update(value for name, value in headers if name.lower() == 'set-cookie')
        return body


def returning_visitor(app, **data):
    """A browser whose session holds ``data`` (written by one request)."""
    browser = Browser(app)
    browser.get('/write', '&'.join('%s=%s' % item for item in data.items()))
    return browser


def stored_visitor(app):
    """The cookies of a returning visitor whose session holds a user and a CSRF token."""
    return returning_visitor(app, user=USER, csrf=CSRF).jar


def warm_up(app):
    """A few throw-away requests, so that no scenario pays one-time costs
    (index creation, connection pools, Pyramid's lazy set-up)."""
    browser = returning_visitor(app, user=USER)
    for path, query in (('/peek', ''), ('/write', 'n=1'), ('/readwrite', 'counter=1'),
                        ('/untouched', ''), ('/keys', ''), ('/logout', '')):
        browser.get(path, query)


# -- the scenarios ------------------------------------------------------------------

def untouched(app, meter):
    """A returning visitor; the view never touches request.session."""
    browser = returning_visitor(app, user=USER)
    meter.loop(lambda i: browser.get('/untouched'))


def new_empty(app, meter):
    """A new visitor (no cookie); the view reads the session, stores nothing."""
    meter.loop(lambda i: Browser(app).get('/peek'))


def new_write(app, meter):
    """A new visitor stores one key."""
    meter.loop(lambda i: Browser(app).get('/write', 'user=' + USER))


def check_found(meter, body):
    """``body``, what the visitor's last request read as its user, is the user stored."""
    if meter.keeps_sessions and body != USER.encode():
        raise RuntimeError("the returning visitor's session was not found")


def _reading(browser, path, query=None):
    """A step that requests ``path`` and keeps the body it got last."""
    last = [None]

    def step(i):
        last[0] = browser.get(path, query % i if query else '')
    return step, last


def read_only(app, meter, visitor=None):
    """A returning visitor reads a key."""
    step, last = _reading(Browser(app, visitor or stored_visitor(app)), '/peek')
    meter.loop(step)
    check_found(meter, last[0])


def write_one_key(app, meter, visitor=None):
    """A returning visitor changes one small key; the view reads nothing."""
    browser = Browser(app, visitor or stored_visitor(app))
    meter.loop(lambda i: browser.get('/write', 'counter=%d' % i))
    if meter.keeps_sessions:   # an unmeasured request
        check_found(meter, browser.get('/peek'))


def read_then_write(app, meter):
    """A returning visitor: the view reads a key, then changes another."""
    step, last = _reading(Browser(app, stored_visitor(app)), '/readwrite', 'counter=%d')
    meter.loop(step)
    check_found(meter, last[0])


def write_one_key_100kb(app, meter):
    """One small key changes in a session that holds ~100 KB in other keys."""
    browser = returning_visitor(app, user=USER)
    browser.get('/fill')
    meter.loop(lambda i: browser.get('/write', 'counter=%d' % i))


def login(app, meter):
    """A returning visitor logs in: a new session id, then a key is written
    (the view reads nothing)."""
    browser = returning_visitor(app, user='anonymous')
    meter.loop(lambda i: browser.get('/login', 'user=user-%d' % i))


def logout(app, meter):
    """A returning visitor logs out: the session ends (each request on a session of its own)."""
    prepared = []

    def prepare(count):
        prepared[:] = [Browser(app, stored_visitor(app)) for _ in range(count)]
        return list(prepared)
    meter.batches(prepare, lambda browser: browser.get('/logout'))
    if meter.keeps_sessions and prepared[-1].get('/peek') != b'':   # an unmeasured request
        raise RuntimeError('the session was still there after the logout')


def concurrency(app, meter):
    """Threads share ONE session; each request writes a key of its own.

    Thread t writes key ``t<t>_<n>`` in its n-th request, after loading the
    session and pausing (RACE_DELAY). Afterwards every one of those keys
    should be in the session: each missing one is a lost update.
    """
    jar = returning_visitor(app, user=USER).jar
    threads, per_thread = meter.threads, meter.per_thread
    errors = []

    def worker(t):
        browser = Browser(app, jar)
        try:
            for n in range(per_thread):
                browser.get('/race', 'key=t%d_%d' % (t, n))
        except Exception as exc:  # reported after the join
            errors.append(exc)

    def run():
        workers = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join()
        return threads * per_thread

    meter.block(run)
    if errors:
        raise errors[0]
    stored = set(json.loads(Browser(app, jar).get('/keys')))
    expected = {'t%d_%d' % (t, n) for t in range(threads) for n in range(per_thread)}
    meter.lost(len(expected - stored), len(expected))


SCENARIOS = {
    'untouched': untouched,
    'new-empty': new_empty,
    'new-write': new_write,
    'read-only': read_only,
    'write-one-key': write_one_key,
    'read-then-write': read_then_write,
    'write-one-key-100kb': write_one_key_100kb,
    'login': login,
    'logout': logout,
    'concurrency': concurrency,
}
#: The scenarios also run on a populated store (they take a ``visitor``).
POPULATED = ('read-only', 'write-one-key')
