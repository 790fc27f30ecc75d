"""The messages a user reads when something is wrong, each asserted in full.

A setting that does not exist or does not convert, a url pymongo refuses, a
MongoDB that is down or hung, an ini file whose application cannot be found:
each message names the full setting (or the address) and says what to do.
No server is needed: a refused port and a socket that never answers, on the
loopback interface, stand for a MongoDB that is down or hung.
"""
import logging
import socket
import textwrap
import threading

import pytest
from pymongo.errors import AutoReconnect, NetworkTimeout, ServerSelectionTimeoutError
from pyramid.exceptions import ConfigurationError

from pyramid_mongosession import SessionBackendError, session_factory_from_settings
from pyramid_mongosession.encoding import utcnow
from pyramid_mongosession.outage import OutageBreaker, summary

from .conftest import SECRET, factory_for
from .servers import free_port

MAKE_SECRET = 'python3 -c "import secrets; print(secrets.token_urlsafe(48))"'
PYMONGO = '(see the options of pymongo.MongoClient)'


def refusal(**settings):
    """The ConfigurationError's message for these ``mongodb_session.*`` settings."""
    values = {'mongodb_session.secret': SECRET, 'mongodb_session.db_name': 'app'}
    values.update(('mongodb_session.' + name, value) for name, value in settings.items())
    values = {key: value for key, value in values.items() if value is not None}
    with pytest.raises(ConfigurationError) as info:
        session_factory_from_settings(values)
    return str(info.value)


# -- 7. an unknown setting: suggested by meaning, then by spelling -------------------------

TIMEOUT_OR_MAX_AGE = ('mongodb_session.timeout (idle seconds before a session expires) or '
                      'mongodb_session.cookie_max_age (the cookie\'s lifetime in seconds)')


@pytest.mark.parametrize('name, meant', [
    ('secure', 'mongodb_session.cookie_secure (send the cookie over HTTPS only)'),
    ('httponly', 'mongodb_session.cookie_httponly (hide the cookie from JavaScript)'),
    ('samesite', 'mongodb_session.cookie_samesite (the cookie\'s SameSite attribute)'),
    ('domain', 'mongodb_session.cookie_domain (the cookie\'s Domain)'),
    ('max_age', 'mongodb_session.cookie_max_age (the cookie\'s lifetime in seconds) or '
                'mongodb_session.timeout (idle seconds before a session expires)'),
    ('expire', TIMEOUT_OR_MAX_AGE),
    ('expires', TIMEOUT_OR_MAX_AGE),
    ('ttl', TIMEOUT_OR_MAX_AGE),
    ('collection', 'mongodb_session.coll_name (the collection)'),
    ('database', 'mongodb_session.db_name (the database)'),
    ('uri', 'mongodb_session.url (the MongoDB connection string)'),
    ('Max-Age', 'mongodb_session.cookie_max_age (the cookie\'s lifetime in seconds) or '
                'mongodb_session.timeout (idle seconds before a session expires)'),
    # by spelling, when no meaning is known
    ('cookie_secrue', 'mongodb_session.cookie_secure (send the cookie over HTTPS only)'),
    ('secrets', 'mongodb_session.secret (signs the cookie)'),
    ('reissue', 'mongodb_session.reissue_time'),
])
def test_an_unknown_setting_suggests_the_one_meant(name, meant):
    assert refusal(**{name: 'true'}) == (
        'unknown setting mongodb_session.%s; did you mean %s?' % (name, meant))


def test_an_unknown_setting_like_none_says_so():
    assert refusal(colour='blue') == (
        'unknown setting mongodb_session.colour (not a setting of pyramid_mongosession; '
        'the configuration reference lists them all)')


# -- 9. every configuration error names the full setting and the fix -----------------------

@pytest.mark.parametrize('settings, message', [
    ({'url': 'mongodb://localhost/app?retryWrites=perhaps'},
     "mongodb_session.url: the url option retryWrites: The value of retrywrites must be "
     "'true' or 'false' " + PYMONGO),
    ({'url': 'mongodb://localhost/app?w=1&maxPoolSize=-3'},
     'mongodb_session.url: the url option maxPoolSize: The value of maxpoolsize must be a '
     'non negative integer ' + PYMONGO),
    ({'url': 'mongo://localhost/app'},
     "mongodb_session.url: Invalid URI scheme: URI must begin with 'mongodb://' or "
     "'mongodb+srv://'; or mongomock:// to keep sessions in this process's memory, for "
     "development without a server"),
    ({'url': 'localhost:27017'},
     "mongodb_session.url: Invalid URI scheme: URI must begin with 'mongodb://' or "
     "'mongodb+srv://'; or mongomock:// to keep sessions in this process's memory, for "
     "development without a server"),
    ({'cookie_samesite': 'None'},
     'mongodb_session.cookie_samesite = None requires mongodb_session.cookie_secure = true '
     '(browsers drop a SameSite=None cookie that is not Secure): set '
     'mongodb_session.cookie_secure = true and serve over HTTPS, or '
     'mongodb_session.cookie_samesite = Lax'),
    ({'cookie_samesite': 'sometimes'},
     "mongodb_session.cookie_samesite must be Strict, Lax or None (or empty: no SameSite "
     "attribute), not 'Sometimes'"),
    ({'cookie_name': 'has space'},
     "mongodb_session.cookie_name 'has space' is not a valid cookie name: use letters, "
     "digits and !#$%&'*+-.^_`|~ only (an RFC 6265 token)"),
    ({'timeout': '60'},
     'mongodb_session.reissue_time (120 seconds, the default) must be shorter than '
     'mongodb_session.timeout (60 seconds): set mongodb_session.reissue_time below 60, or '
     'a longer mongodb_session.timeout'),
    ({'reissue_time': '5000'},
     'mongodb_session.reissue_time (5000 seconds) must be shorter than '
     'mongodb_session.timeout (1200 seconds, the default): set mongodb_session.reissue_time '
     'below 1200, or a longer mongodb_session.timeout'),
    ({'timeout': 'soon'},
     "mongodb_session.timeout: bad value 'soon': expected an integer, or none"),
    ({'cookie_secure': 'perhaps'},
     "mongodb_session.cookie_secure: bad value 'perhaps': expected true or false"),
    ({'url': 'mongodb://h/app', 'host': 'h'},
     'mongodb_session.host cannot be combined with mongodb_session.url: put it in the url '
     '(mongodb://username:password@host:port/database), or drop the url'),
    ({'secret': None},
     'mongodb_session.secret is required; make one with: ' + MAKE_SECRET),
    ({'secret': 'x'},
     'mongodb_session.secret is 1 byte long: a signing secret must be at least 32 bytes; '
     'make one with: ' + MAKE_SECRET),
    ({'old_secrets': 'former-secret-0123456789abcdef-0123 short'},
     'mongodb_session.old_secrets: secret 2 is 5 bytes long: a signing secret must be at '
     'least 32 bytes; make one with: ' + MAKE_SECRET),
    ({'db_name': None},
     'mongodb_session.db_name is required (or name the database in mongodb_session.url)'),
])
def test_configuration_errors_name_the_full_setting_and_the_fix(settings, message):
    assert refusal(**settings) == message


@pytest.mark.parametrize('settings, start', [
    ({'url': 'mongodb://localhost/app?foo=1'},
     'mongodb_session.url: the url option foo: Unknown option. Did you mean one of ('),
    ({'client.noSuchOption': '1'},
     'mongodb_session.client.noSuchOption: Unknown option: noSuchOption. Did you mean one '
     'of ('),
])
def test_an_unknown_pymongo_option_is_named(settings, start):
    """pymongo's guesses vary with its version: the rest of the message is asserted."""
    message = refusal(**settings)
    assert message.startswith(start)
    assert message.endswith(') or maybe a camelCase version of one? ' + PYMONGO)
    assert 'Refer to docstring' not in message


def test_a_url_error_shows_neither_the_url_nor_option_values():
    message = refusal(url='mongodb://me:hunter2@localhost/app?tlsCertificateKeyFilePassword='
                          'hunter3&retryWrites=perhaps')
    assert 'hunter' not in message and 'retryWrites' in message


# -- 8. MongoDB down or hung: one line, the address, the timeout, since when ----------------

REFUSED = (
    "127.0.0.1:59905: [Errno 111] Connection refused (configured timeouts: socketTimeoutMS: "
    "20000.0ms, connectTimeoutMS: 20000.0ms), Timeout: 0.9999213119999695s, Topology "
    "Description: <TopologyDescription id: 6b13badf3373434291cbe4d4, topology_type: Unknown, "
    "servers: [<ServerDescription ('127.0.0.1', 59905) server_type: Unknown, rtt: None, "
    "error=AutoReconnect('127.0.0.1:59905: [Errno 111] Connection refused (configured "
    "timeouts: socketTimeoutMS: 20000.0ms, connectTimeoutMS: 20000.0ms)')>]>")
HUNG = (
    "No servers found yet, Timeout: 1.0s, Topology Description: <TopologyDescription id: "
    "6b13bae23373434291cbe4d5, topology_type: Unknown, servers: [<ServerDescription "
    "('127.0.0.1', 37229) server_type: Unknown, rtt: None>]>")
SLOW = ('127.0.0.1:40881: timed out (configured timeouts: timeoutMS: 5000.0ms, '
        'connectTimeoutMS: 20000.0ms)')
# Server selection reporting the monitor's check that timed out (the server hung).
SLOW_CHECK = ('127.0.0.1:40881: timed out (configured timeouts: socketTimeoutMS: 500.0ms, '
              'connectTimeoutMS: 500.0ms), Timeout: 0.5s, Topology Description: '
              '<TopologyDescription id: 6b13bae23373434291cbe4d5, topology_type: Unknown, '
              'servers: [<ServerDescription (\'127.0.0.1\', 40881) server_type: Unknown, '
              'rtt: None>]>')


@pytest.mark.parametrize('error, line', [
    (ServerSelectionTimeoutError(REFUSED),
     '127.0.0.1:59905: [Errno 111] Connection refused, after 1 s'),
    (ServerSelectionTimeoutError(HUNG), 'no answer from 127.0.0.1:37229, after 1 s'),
    (NetworkTimeout(SLOW), 'no answer from 127.0.0.1:40881, after 5 s'),
    (ServerSelectionTimeoutError(SLOW_CHECK), 'no answer from 127.0.0.1:40881, after 0.5 s'),
    (AutoReconnect('connection closed'), 'connection closed'),
])
def test_summary_is_one_line_without_the_topology(error, line):
    assert summary(error) == line


class Clocks:
    def __init__(self):
        self.now, self.wall = 100.0, 1700000000.0   # 2023-11-14 22:13:20 UTC

    def monotonic(self):
        return self.now

    def time(self):
        return self.wall


@pytest.mark.parametrize('error, message, logged', [
    (ServerSelectionTimeoutError(REFUSED),
     'MongoDB is unavailable since 22:13:20 UTC, 3 s ago (unreachable: 127.0.0.1:59905: '
     '[Errno 111] Connection refused, after 1 s); the next attempt is in at most 2 s',
     'MongoDB is unreachable (127.0.0.1:59905: [Errno 111] Connection refused, after 1 s); '
     'failing session calls at once, probing every 5 s'),
    (ServerSelectionTimeoutError(HUNG),
     'MongoDB is unavailable since 22:13:20 UTC, 3 s ago (did not answer in time: no answer '
     'from 127.0.0.1:37229, after 1 s); the next attempt is in at most 2 s',
     'MongoDB did not answer in time (no answer from 127.0.0.1:37229, after 1 s); failing '
     'session calls at once, probing every 5 s'),
])
def test_the_open_breaker_says_what_failed_and_since_when(caplog, error, message, logged):
    clocks = Clocks()
    breaker = OutageBreaker(5.0, clock=clocks.monotonic, wall_clock=clocks.time)
    with caplog.at_level(logging.DEBUG, logger='pyramid_mongosession'):
        breaker.record(breaker.admit(), error)
    clocks.now += 3
    with pytest.raises(SessionBackendError) as info:
        breaker.admit()
    assert str(info.value) == message
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ('WARNING', logged),
        ('DEBUG', "the MongoDB client's error: " + str(error))]   # the topology at DEBUG only


@pytest.fixture
def hung_port():
    """A loopback port that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(('127.0.0.1', 0))
    listener.listen(16)
    accepted = []

    def accept():
        while True:
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                return
    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    listener.close()
    for connection in accepted:
        connection.close()


def store_on(port):
    return session_factory_from_settings({
        'mongodb_session.url': 'mongodb://127.0.0.1:%d/app' % port,
        'mongodb_session.secret': SECRET,
        'mongodb_session.operation_timeout': '0.5'}).store


def failures(store):
    messages = []
    for _ in range(2):
        with pytest.raises(SessionBackendError) as info:
            store.load('a' * 43, utcnow())
        messages.append(str(info.value))
    store.connection.close()
    return messages


def test_a_refused_connection_is_one_line_naming_the_address_and_timeout():
    port = free_port()
    first, then = failures(store_on(port))
    assert first == ('MongoDB is unreachable: could not create the indexes: 127.0.0.1:%d: '
                     '[Errno 111] Connection refused, after 0.5 s' % port)
    assert then.startswith('MongoDB is unavailable since ')
    assert then.endswith(' UTC, 0 s ago (unreachable: 127.0.0.1:%d: [Errno 111] Connection '
                         'refused, after 0.5 s); the next attempt is in at most 5 s' % port)


def test_a_hung_server_did_not_answer_in_time(hung_port):
    first, then = failures(store_on(hung_port))
    assert first == ('MongoDB did not answer in time: could not create the indexes: no '
                     'answer from 127.0.0.1:%d, after 0.5 s' % hung_port)
    assert then.endswith(' UTC, 0 s ago (did not answer in time: no answer from '
                         '127.0.0.1:%d, after 0.5 s); the next attempt is in at most 5 s'
                         % hung_port)


# -- 10. pmongosession: an application that cannot be found is the error reported -----------

@pytest.mark.parametrize('use, missing', [
    ('egg:nosuchapp', 'No package metadata was found for nosuchapp'),
    ('call:nosuchmodule:main', "No module named 'nosuchmodule'"),
])
def test_cli_reports_the_missing_application_not_the_missing_variable(
        run, tmp_path, use, missing):
    ini = tmp_path / 'app.ini'
    ini.write_text(textwrap.dedent('''\
        [app:main]
        use = %s
        mongodb_session.url = mongodb://127.0.0.1:%d/app
        mongodb_session.secret = %%(SESSION_SECRET)s
        ''') % (use, free_port()))
    status, out, err = run('stats', str(ini))
    assert (status, out) == (2, '')
    assert err == (
        'pmongosession: error: cannot load %s: its application cannot be imported (%s): '
        'install the application in the environment that runs pmongosession (pip install '
        '-e . in its project), or run the pmongosession of the environment that serves it\n'
        % (ini, missing))


# -- 4. FerretDB 1.x loses concurrent writes: said at start-up -----------------------------

@pytest.mark.parametrize('build_info, warned', [
    ({'version': '7.0.42', 'ferretdbVersion': 'v1.24.2'}, True),
    ({'version': '7.0.42', 'ferretdbVersion': 'v2.1.0'}, False),
    ({'version': '8.0.4'}, False),
])
def test_server_warning_names_ferretdb_1_the_consequence_and_the_fix(build_info, warned):
    from pyramid_mongosession.indexes import server_warning
    assert server_warning(build_info) == (
        "the server is FerretDB v1.24.2: FerretDB 1.x does not apply concurrent updates of "
        "one document atomically, so concurrent requests that change the same session can "
        "lose each other's writes, silently (detect_conflicts does not catch them all). Use "
        "MongoDB, or FerretDB 2, wherever concurrent requests write one session"
        if warned else None)


def test_first_use_on_ferretdb_1_logs_one_warning(collection, caplog):
    """On the suite's main server: FerretDB 1.x in the project's runs, said once."""
    from pyramid_mongosession.indexes import server_warning
    expected = server_warning(collection.database.command('buildInfo'))
    factory = factory_for(collection, operation_timeout=5)
    with caplog.at_level(logging.WARNING, logger='pyramid_mongosession'):
        factory.connection.collection()
        factory.connection.collection()
        factory.store.load('a' * 43, utcnow())
    said = [message for message in caplog.messages if message.startswith('the server is ')]
    assert said == ([expected] if expected else [])
