"""Fixtures for the browser tests: the demo app as a real server, real Chromium.

The demo runs as its own process (``pserve demo/production.ini``, served by
waitress on a free port of 127.0.0.1) against the test suite's MongoDB server
(the ``mongodb_url`` fixture of ``tests/conftest.py``), in a database of its
own that is dropped at the end. Debian's Chromium is driven headless by
Playwright; Playwright's own browser downloads are never used ($CHROMIUM
names another Chromium binary).

Missing pieces (Playwright, Chromium, the installed demo) skip these tests,
except under ``CI``, where they fail with a message saying what to install.
``bash tests/setup.sh`` installs everything.

Screenshots go to a temporary directory, or to ``$DEMO_SCREENSHOTS`` when it
is set (``DEMO_SCREENSHOTS=docs/_static/screenshots`` refreshes the
documentation's pictures). A failing test leaves screenshots of its pages in
the temporary directory and names them in its report.
"""
import importlib.metadata
import os
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from urllib.parse import urlsplit, urlunsplit

import pymongo
import pytest

from ..servers import die_with_parent, free_port, stop_process

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO_DIR = os.path.join(REPO, 'demo')
# Debian's chromium package; $CHROMIUM names another Chromium binary.
CHROMIUM = os.environ.get('CHROMIUM') or shutil.which('chromium') or '/usr/bin/chromium'
# --headless comes from headless=True; Playwright launches every browser with
# a fresh temporary --user-data-dir of its own and deletes it on close.
CHROMIUM_ARGS = [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
]
COOKIE_NAME = 'session'
VIEWPORT = {'width': 960, 'height': 640}


def unavailable(reason):
    """Skip, or under CI fail: a browser test that cannot run has not passed."""
    if os.environ.get('CI'):
        pytest.fail('browser tests cannot run under CI: %s (run: bash tests/setup.sh)' % reason,
                    pytrace=False)
    pytest.skip(reason)


class DemoServer:
    """``pserve demo/<ini>`` on 127.0.0.1, started and stopped by the tests."""

    def __init__(self, ini, log_dir, **variables):
        self.ini = os.path.join(DEMO_DIR, ini)
        self.port = free_port()
        self.url = 'http://127.0.0.1:%d' % self.port
        self.variables = dict(variables, http_port=str(self.port))
        self.log_path = os.path.join(log_dir, '%s-%d.log' % (os.path.splitext(ini)[0], self.port))
        self.process = None

    def start(self, timeout=30.0):
        argv = [sys.executable, '-m', 'pyramid.scripts.pserve', self.ini]
        argv += ['%s=%s' % item for item in sorted(self.variables.items())]
        with open(self.log_path, 'ab') as log:
            self.process = subprocess.Popen(
                argv, cwd=REPO, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent)
        try:
            self._wait_until_up(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_until_up(self, timeout):
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError('the demo server exited with status %d:\n%s'
                                   % (self.process.returncode, self.log()))
            try:
                with opener.open(self.url + '/static/style.css', timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError('the demo server did not answer within %ds:\n%s'
                                   % (timeout, self.log()))
            time.sleep(0.1)

    def stop(self):
        process, self.process = self.process, None
        if process is not None:
            stop_process(process)

    def restart(self):
        self.stop()
        return self.start()

    def log(self):
        with open(self.log_path, errors='replace') as log:
            return log.read()[-4000:]


@pytest.fixture(scope='session')
def playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable('Playwright is not installed (pip install -e ".[browser]")')
    with sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope='session')
def browser(playwright):
    if not os.access(CHROMIUM, os.X_OK):
        unavailable('Chromium is not installed (apt-get install chromium)')
    browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                         args=CHROMIUM_ARGS)
    try:
        yield browser
    finally:
        browser.close()


@pytest.fixture(scope='session')
def demo_installed():
    try:
        importlib.metadata.distribution('mongosession_demo')
    except importlib.metadata.PackageNotFoundError:
        unavailable('the demo application is not installed (pip install -e demo)')


@pytest.fixture(scope='session')
def demo_db_url(mongodb_url):
    """The test server's URL, naming a database of this run's own."""
    name = 'demo_browser_%s' % uuid.uuid4().hex[:12]
    yield urlunsplit(urlsplit(mongodb_url)._replace(path='/' + name))
    client = pymongo.MongoClient(mongodb_url, serverSelectionTimeoutMS=5000)
    try:
        client.drop_database(name)
    finally:
        client.close()


@pytest.fixture(scope='session')
def server_logs(tmp_path_factory):
    return str(tmp_path_factory.mktemp('demo-logs'))


@pytest.fixture
def make_server(demo_installed, server_logs):
    """Start a demo server: ``make_server('production.ini', MONGODB_URL=...)``."""
    started = []

    def make(ini, **variables):
        server = DemoServer(ini, server_logs, **variables)
        started.append(server)
        return server.start()
    yield make
    for server in started:
        server.stop()


@pytest.fixture(scope='session')
def demo_server(demo_installed, demo_db_url, server_logs):
    """The demo with production.ini against the test MongoDB, shared by the tests."""
    server = DemoServer('production.ini', server_logs, MONGODB_URL=demo_db_url)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope='session')
def screenshot_dir(tmp_path_factory):
    target = os.environ.get('DEMO_SCREENSHOTS')
    if target:
        os.makedirs(target, exist_ok=True)
        return target
    return str(tmp_path_factory.mktemp('screenshots'))


@pytest.fixture
def shoot(screenshot_dir):
    """``shoot(page, 'name')`` saves a full-page screenshot as name.png."""
    def shoot(page, name):
        path = os.path.join(screenshot_dir, name + '.png')
        page.screenshot(path=path, full_page=True)
        return path
    return shoot


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == 'call':
        item.browser_test_failed = report.failed


@pytest.fixture
def new_context(request, browser, tmp_path_factory):
    """Open a fresh browser context (its own cookies); all are closed afterwards."""
    contexts = []

    def new_context(base_url):
        context = browser.new_context(base_url=base_url, viewport=VIEWPORT)
        context.set_default_timeout(10000)
        contexts.append(context)
        return context
    yield new_context
    try:
        if getattr(request.node, 'browser_test_failed', False):
            where = tmp_path_factory.mktemp('failed-' + request.node.name[:40])
            for c, context in enumerate(contexts):
                for p, page in enumerate(context.pages):
                    try:
                        page.screenshot(path=str(where / ('context%d-page%d.png' % (c, p))))
                    except Exception:  # a screenshot must not hide the failure
                        pass
            request.node.add_report_section('teardown', 'screenshots', str(where))
    finally:
        for context in contexts:
            context.close()


@pytest.fixture
def context(new_context, demo_server):
    return new_context(demo_server.url)


@pytest.fixture
def page(context):
    return context.new_page()


def session_cookie(context):
    """The session cookie the browser holds, as a Playwright cookie dict, or None."""
    for cookie in context.cookies():
        if cookie['name'] == COOKIE_NAME:
            return cookie
    return None
