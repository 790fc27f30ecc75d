"""One model of a session's whole life, checked step by step against the docs.

Hypothesis drives three browsers against one application: reads, writes with
and without a read, flash messages, logins (``change_id``, "remember me"),
logouts, ``invalidate()``, ``no_store``, ``late_store`` bodies that end, are
cut short or raise, the clock passing the idle and absolute timeouts and the
rotation grace, revocations through the factory, a request that presents an
id from before a login (a parallel request), a cookie signed with an old
secret, an outage, and a connection that drops while a session moves. After
every step the application is held against a small reference model written
from docs/options.rst, docs/semantics.rst, docs/accounts.rst and
docs/security.rst: what each request saw, what its response did to the
cookie, what the store holds under every id a browser ever had, and what
``user_sessions`` lists. Where the docs are silent, the model says what it
assumes (comments marked "Assumed").

Time is a fake clock (every module's ``utcnow``), which works against the
real server too: the filters compare ``expires`` with the ``now`` the
package sends, and the clock starts a day ahead, so a TTL monitor only ever
deletes what the model holds expired already.

``MODEL_EXAMPLES=500 python3 -m pytest tests/test_model.py`` runs more
examples than CI does, at random (see docs/contributing.rst).
"""
import base64
import copy
import datetime
import hashlib
import hmac
import importlib
import math
import os
import pkgutil
import types
from urllib.parse import unquote

import pytest
import webob
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine, initialize, invariant, precondition, rule, run_state_machine_as_test)
from pymongo.errors import AutoReconnect
from pyramid.response import Response

import pyramid_mongosession
from pyramid_mongosession import SessionBackendError
from pyramid_mongosession.cookie import signing_key
from pyramid_mongosession.encoding import utcnow as real_utcnow
from pyramid_mongosession.documents import document_id, session_handle

from .conftest import SECRET

#: Defects of issue 20 that the model steps around, so that it can explore
#: past them while they are being fixed (see ``tolerates``). Committed empty:
#: the test fails until every one is fixed.
TOLERATED_DEFECTS = set()
#: While exploring: MODEL_TOLERATE=1,2,3 adds to them. Two are not among issue
#: 20's twelve: 13, a cookie re-signed under the current secret loses its
#: Max-Age; 14, a request presenting a retired id with change_id and
#: options['timeout'] gets a cookie naming a fresh id that nothing is stored under.
TOLERATED_DEFECTS |= {int(n) for n in os.environ.get('MODEL_TOLERATE', '').split(',') if n}

OLD_SECRET = 'the secret before the last rotation, also long enough: fedcba9876543210'
USER_KEY = 'auth.userid'
FLASH_KEY = '_f_'
TIMEOUT, REISSUE, ABSOLUTE, GRACE, PROBE = 600, 60, 2400, 30, 5.0
REMEMBER = 1800          # "remember me": a timeout of the session's own, longer than TIMEOUT
SHORT = 30               # a session's own timeout shorter than REISSUE (issue 20, defect 6)
BAD_TIMEOUTS = (math.nan, math.inf, 1e300, 10 ** 30)
USERS = ('alice', 'bob', 7)
#: User ids that are not scalars: refused by name when written and when queried.
HOSTILE_USERS = ({'$exists': True}, {'$ne': None}, [7, 8])
BROWSERS = 2
#: The collection methods the store calls, through which the model injects failures.
FAULTY_CALLS = ('find_one', 'find', 'insert_one', 'update_one', 'replace_one',
                'find_one_and_replace', 'find_one_and_delete', 'delete_one', 'delete_many',
                'count_documents')


def tolerates(defect):
    return defect in TOLERATED_DEFECTS


# -- the clock ----------------------------------------------------------------------

class FakeClock:
    """Naive UTC to the millisecond, as ``encoding.utcnow``; a day ahead of the real one."""

    def __init__(self):
        self.now = real_utcnow() + datetime.timedelta(days=1)
        self.seconds = 1000.0    # the outage breaker's monotonic clock

    def utcnow(self):
        return self.now

    def monotonic(self):
        return self.seconds

    def advance(self, seconds):
        self.now += datetime.timedelta(seconds=seconds)
        self.seconds += seconds


@pytest.fixture
def fake_clock(monkeypatch):
    """Every module of the package that took ``utcnow`` reads the fake clock."""
    clock = FakeClock()
    for info in pkgutil.walk_packages(pyramid_mongosession.__path__, 'pyramid_mongosession.'):
        if info.name.endswith('.__main__'):
            continue
        try:
            module = importlib.import_module(info.name)
        except ImportError:     # an optional dependency missing: nothing uses the module
            continue
        for name, value in list(vars(module).items()):
            if value is real_utcnow:
                monkeypatch.setattr(module, name, clock.utcnow)
    return clock


# -- cookies --------------------------------------------------------------------------

def sign(secret, session_id):
    """The cookie value for ``session_id`` (WebOb's SignedSerializer, HMAC-SHA512)."""
    payload = session_id.encode('ascii')
    signature = hmac.new(signing_key(secret), payload, hashlib.sha512).digest()
    return base64.urlsafe_b64encode(signature + payload).rstrip(b'=').decode('ascii')


def set_cookie_of(headers):
    """What a response did to the session cookie: None, ``('clear',)`` or
    ``('set', session_id, max_age)``."""
    found = [value for name, value in headers
             if name.lower() == 'set-cookie' and value.split('=', 1)[0].strip() == 'session']
    assert len(found) <= 1, 'more than one Set-Cookie for the session: %r' % found
    if not found:
        return None
    parts = [part.strip() for part in found[0].split(';')]
    value = parts[0].split('=', 1)[1].strip('"')
    attributes = dict((part.split('=', 1) + [''])[:2] for part in parts[1:])
    attributes = {name.lower(): value for name, value in attributes.items()}
    max_age = int(attributes['max-age']) if 'max-age' in attributes else None
    if value == '':
        assert max_age == 0, found[0]
        return ('clear',)
    raw = base64.urlsafe_b64decode(value + '=' * (-len(value) % 4))
    session_id = raw[64:].decode('ascii')
    assert value == sign(SECRET, session_id), 'a cookie not signed with the current secret'
    return ('set', session_id, max_age)


class Browser:
    """A browser's cookie jar for the session cookie, and the ids it held before."""

    def __init__(self):
        self.id = None
        self.old_secret = False     # the cookie it holds was signed with OLD_SECRET
        self.history = []           # ids it held before its current one

    def cookie(self):
        if self.id is None:
            return None
        return sign(OLD_SECRET if self.old_secret else SECRET, self.id)

    def take(self, action):
        if action is None:
            return
        new = None if action[0] == 'clear' else action[1]
        if self.id is not None and new != self.id:
            self.history.append(self.id)
        self.id, self.old_secret = new, False


# -- the reference model --------------------------------------------------------------

def seconds(value):
    return datetime.timedelta(seconds=value)


def expiry_at(created, now, timeout, absolute):
    """docs/semantics.rst: min(last activity + timeout, created + absolute_timeout)."""
    ends = now + seconds(TIMEOUT if timeout is None else timeout)
    return ends if absolute is None else min(ends, created + seconds(absolute))


class Stored:
    """A session document as the model expects it."""

    def __init__(self, data, created, expires, timeout, handle=None):
        self.data = data
        self.created = created
        # When it expires: at ``expires`` at the soonest, ``latest`` at the
        # latest (the same, unless a rule the docs leave open allows a range;
        # the check after the step narrows it to what the store chose).
        self.expires = self.latest = expires
        self.timeout = timeout
        #: When the model cannot tell which of these the timeout is (the check learns it).
        self.timeouts = None
        self.handle = handle

    @property
    def user(self):
        return self.data.get(USER_KEY)

    def __repr__(self):
        return '<Stored %r until %s timeout=%r>' % (self.data, self.expires, self.timeout)


class Expected:
    """What a request must see and what its response must do to the cookie.

    ``cookie`` is ``keep`` (no Set-Cookie), ``clear``, ``new`` (a fresh id),
    ``same`` (the id it sent), or alternatives joined by ``|``; ``max_age``
    the Max-Age a set cookie carries (a tuple: any of those).
    """

    def __init__(self):
        self.seen = []
        self.cookie = 'keep'
        self.max_age = (None,)
        self.new = None          # the Stored the new id names, if the store keeps one


def hostile(user):
    return not isinstance(user, (str, int))


class Model:
    """The store as the docs describe it: session documents, retired ids, users."""

    def __init__(self, absolute):
        self.absolute = absolute   # the factory's absolute_timeout
        self.docs = {}       # id -> Stored: every session document, live or expired
        self.retired = {}    # id -> when rotation_grace ends for it
        #: Ids whose fate the docs leave open (see parallel_login); not checked.
        self.unsure = set()

    def status(self, session_id, now):
        if session_id is None:
            return 'none'
        doc = self.docs.get(session_id)
        if doc is not None and doc.expires > now:
            return 'live'
        until = self.retired.get(session_id)
        if until is not None and until > now:
            return 'retired'
        return 'dead'

    def users_sessions(self, user, now):
        """The handles of ``user``'s live sessions, oldest document first (not
        by handle: handles are random, and the choices of a run must not be)."""
        return [doc.handle for doc in self.docs.values()
                if doc.user == user and doc.expires > now]

    def request(self, now, session_id, old_secret, ops, late=None):
        """Carry out a request on the model; return what it must observe (:class:`Expected`).

        ``late`` is ``(ops while the body streams, how the body ends)`` under
        late_store: ``full``, ``cut`` (closed after its first chunk, before
        those ops) or ``raise``.
        """
        status = self.status(session_id, now)
        session = self.docs[session_id] if status == 'live' else None
        # Whether the request looked at the session (a request that did not,
        # and wrote nothing, is as one that never touched it: no refresh).
        # A cookie signed with an old secret has its session loaded at the end
        # (it is signed anew only for a live one: docs/options.rst), as a read.
        looked = late is not None or old_secret or any(
            op[0] in ('read', 'peek', 'pop', 'invalidate') for op in ops)
        data = copy.deepcopy(session.data) if session else {}
        expected = Expected()
        wrote = invalidated = timeout_set = False
        timeout = None
        flags = set()
        for op in ops:
            kind, saw = op[0], None
            if kind == 'read':
                saw = copy.deepcopy(data)
            elif kind == 'set':
                data[op[1]] = op[2]
                wrote = True
            elif kind == 'flash':
                data[FLASH_KEY] = data.get(FLASH_KEY, []) + [op[1]]
                wrote = True
            elif kind == 'peek':
                saw = list(data.get(FLASH_KEY, []))
            elif kind == 'pop':
                saw = data.pop(FLASH_KEY, [])
                wrote = wrote or bool(saw)
            elif kind == 'user':
                # A user id is a scalar; anything else is refused by name (issue 20, 7).
                if hostile(op[1]):
                    saw = 'refused'
                else:
                    data[USER_KEY] = op[1]
                    wrote, saw = True, 'ok'
            elif kind == 'timeout':
                value = op[1]
                if value in BAD_TIMEOUTS or (isinstance(value, float) and math.isnan(value)):
                    saw = 'refused'     # refused at assignment (issue 20, 5)
                else:
                    timeout_set, timeout, saw = True, value, 'ok'
            elif kind == 'invalidate':
                data, invalidated, wrote = {}, True, False
            else:
                flags.add(kind)
            expected.seen.append(saw)

        if late is not None:
            flags.add('late_store')
            during, ending = late
            final = copy.deepcopy(data)
            if ending == 'full':
                for op in during:
                    if op[0] == 'set':
                        final[op[1]] = op[2]
                    else:
                        final[FLASH_KEY] = final.get(FLASH_KEY, []) + [op[1]]
            stored_at_end = ending != 'raise'
        else:
            final, stored_at_end = data, True

        if status == 'retired':
            # docs/options.rst, "Logins that survive parallel requests": an empty
            # session never stored, the cookie neither set nor cleared.
            pass
        elif 'expire' in flags:
            if status == 'live':
                del self.docs[session_id]
            if session_id is not None:
                expected.cookie = 'clear'
        elif status == 'live' and not invalidated:
            own = timeout if timeout_set else session.timeout
            if 'change_id' in flags:
                moved = Stored(final, session.created,
                               expiry_at(session.created, now, own, self.absolute), own,
                               session.handle)
                del self.docs[session_id]
                self.retired[session_id] = now + seconds(GRACE)
                expected.cookie, expected.max_age = 'new', (own,)
                expected.new = moved if stored_at_end else None
            elif 'no_store' in flags:
                pass
            elif wrote or timeout_set or (late is not None and late[1] == 'full' and late[0]):
                gain = expiry_at(session.created, now, own, self.absolute) - session.expires
                slides = gain >= seconds(self.window(own))
                if stored_at_end:
                    session.data, session.timeout = final, own
                    session.expires = session.latest = expiry_at(
                        session.created, now, own, self.absolute)
                expected.max_age = (own,)
                if timeout_set or (own is not None and slides and (wrote or late is None)):
                    # "sent again whenever the expiry slides — by a read's
                    # refresh or by a write, a write that did not read included".
                    expected.cookie = 'same'
                elif own is not None:
                    # Assumed: a write that moves the expiry by less than a
                    # refresh would (reissue_time) may leave the cookie as it
                    # is; so may a write after the headers went (late_store).
                    expected.cookie = 'keep|same'
            elif stored_at_end and looked:
                self.refresh(session, now, expected)
            elif own is not None:
                expected.cookie, expected.max_age = 'keep|same', (own,)   # decided before
        else:
            if invalidated and status == 'live':
                del self.docs[session_id]
            stores = 'change_id' in flags or 'no_store' not in flags
            if stores and (data or 'late_store' in flags):
                new = Stored(final, now, None, timeout if timeout_set else None)
                if not timeout_set and invalidated and session and session.timeout is not None:
                    # Assumed: the session invalidate() starts may or may not
                    # keep the old one's own timeout; the docs do not say.
                    new.timeouts = (None, session.timeout)
                expected.cookie = 'new'
                expected.max_age = new.timeouts or (new.timeout,)
                expected.new = new if stored_at_end else None
            elif session_id is not None:
                # "a cookie that names nothing and gets nothing new is cleared".
                # Assumed: a request that neither read the session nor stored
                # anything need not find out that its cookie names nothing.
                expected.cookie = 'clear' if looked else 'clear|keep'


        if old_secret and expected.cookie in ('keep', 'keep|same'):
            # docs/security.rst: a cookie signed with an old secret is sent again,
            # signed with the current one; never for an id that is not live (3).
            if self.status(session_id, now) == 'live':
                expected.cookie, expected.max_age = 'same', (self.docs[session_id].timeout,)
        return expected

    @staticmethod
    def window(own):
        """How far a refresh must move the expiry: reissue_time, or a tenth of the
        session's own timeout when that is shorter than ten reissue_time."""
        return own / 10 if own is not None and own < 10 * REISSUE else REISSUE

    def refresh(self, session, now, expected):
        """A request that changed nothing: the expiry moves when that gains
        reissue_time, or a tenth of the session's own timeout when that is
        shorter than ten reissue_time (docs/options.rst, ``timeout``)."""
        own = session.timeout
        target = expiry_at(session.created, now, own, self.absolute)
        gain = target - session.expires
        if gain > datetime.timedelta(0) and gain >= seconds(self.window(own)):
            session.expires = session.latest = target
            if own is not None:
                expected.cookie, expected.max_age = 'same', (own,)

    def adopt(self, expected, action, sent_id):
        """Check the response's cookie against ``expected``; file the new session under its id."""
        if action is None:
            kind = 'keep'
        elif action[0] == 'clear':
            kind = 'clear'
        else:
            kind = 'same' if action[1] == sent_id else 'new'
        assert kind in expected.cookie.split('|'), (
            'the response did %s to the cookie, the docs say %s' % (kind, expected.cookie))
        if kind in ('new', 'same'):
            assert action[2] in expected.max_age, (
                'Set-Cookie with Max-Age=%r, the docs say %r' % (action[2], expected.max_age))
        if kind == 'new':
            new_id = action[1]
            assert new_id not in self.docs and new_id not in self.retired, 'an id issued twice'
            new = expected.new
            if new is not None:
                if new.timeouts is not None:
                    new.timeout, new.timeouts = action[2], None
                if new.expires is None:
                    new.expires = new.latest = expiry_at(
                        new.created, new.created, new.timeout, self.absolute)
                if new.handle is None:
                    new.handle = session_handle(document_id(new_id))
                self.docs[new_id] = new
            return new_id
        return None


# -- the machine ----------------------------------------------------------------------

class BodyFailed(Exception):
    """A late_store body that raises while it streams."""


def run_ops(session, ops, seen):
    """Run ``ops`` on ``request.session``; append what each saw to ``seen``."""
    for op in ops:
        kind, saw = op[0], None
        if kind == 'read':
            saw = copy.deepcopy(dict(session.items()))
        elif kind == 'set':
            session[op[1]] = op[2]
        elif kind == 'flash':
            session.flash(op[1])
        elif kind == 'peek':
            saw = list(session.peek_flash())
        elif kind == 'pop':
            saw = list(session.pop_flash())
        elif kind in ('user', 'timeout'):
            try:
                if kind == 'user':
                    session[USER_KEY] = op[1]
                else:
                    session.options['timeout'] = op[1]
            except (TypeError, ValueError):
                saw = 'refused'
            else:
                saw = 'ok'
        elif kind == 'invalidate':
            session.invalidate()
        else:
            session.options[kind] = True
        seen.append(saw)


def dispatch(request):
    return request.environ['model.view'](request)


class Outcome:
    def __init__(self):
        self.error = None
        self.seen = []
        self.cookie = None


browsers = st.integers(0, BROWSERS - 1)
keys = st.sampled_from(['a', 'b'])
values = st.integers(0, 3)
messages = st.sampled_from(['m1', 'm2'])
users = st.sampled_from(USERS)
OP = st.one_of(
    st.just(('read',)),
    st.tuples(st.just('set'), keys, values),
    st.tuples(st.just('flash'), messages),
    st.sampled_from([('peek',), ('pop',), ('change_id',), ('expire',), ('no_store',),
                     ('invalidate',)]),
    st.tuples(st.just('user'), st.sampled_from(USERS + HOSTILE_USERS)),
    st.tuples(st.just('timeout'), st.sampled_from((None, REMEMBER, SHORT) + BAD_TIMEOUTS)),
)
FLASHES = st.lists(st.one_of(st.tuples(st.just('flash'), messages),
                             st.sampled_from([('peek',), ('pop',)])), min_size=1, max_size=4)


class SessionLife(RuleBasedStateMachine):
    """:func:`machine` sets ``env``: the session collection, the clock and ``build_app``."""

    env = None

    def __init__(self):
        super().__init__()
        self.collection, self.clock = self.env.collection, self.env.clock
        self.app = None
        self.down = False          # the server is unreachable (every call fails)
        self.drop_next_insert = False
        self.before_insert = None
        self.faulted = False
        self.browsers = [Browser() for _ in range(BROWSERS)]
        self.seen_ids = set()

    @initialize(absolute=st.sampled_from([None, ABSOLUTE]))
    def application(self, absolute):
        """One application; with an absolute_timeout or without (then a write
        may go without a read: docs/semantics.rst)."""
        self.collection.delete_many({})
        self.app = self.env.build_app(
            self.collection, views={'model': dispatch}, timeout=TIMEOUT, reissue_time=REISSUE,
            absolute_timeout=absolute, rotation_grace=GRACE, old_secrets=[OLD_SECRET],
            outage_probe_interval=PROBE)
        self.factory = self.app.session_factory
        self.store_collection = self.factory.connection.collection()
        # The breaker's clock is the fake one, so an outage lasts until the model ends it.
        self.factory.connection._breaker._clock = self.clock.monotonic
        self.inject_faults()
        self.model = Model(absolute)

    def inject_faults(self):
        """The store's calls fail like a server that went away, when the model says so.

        The calls themselves are the real client's (or mongomock's); only
        their failures are injected, as pymongo raises them.
        """
        collection = self.store_collection
        for name in FAULTY_CALLS:
            setattr(collection, name, self.faulty(getattr(collection, name), name))
        # A session is read with the find command itself (Connection.find_one).
        database = collection.database
        database.command = self.faulty(database.command, 'command')

    def faulty(self, call, name):
        def faulty_call(*args, **kwargs):
            if self.down:
                raise AutoReconnect('connection refused (the model\'s outage)')
            if name == 'insert_one' and self.before_insert is not None:
                before, self.before_insert = self.before_insert, None
                before()
            if name == 'insert_one' and self.drop_next_insert:
                self.drop_next_insert, self.faulted = False, True
                raise AutoReconnect('connection closed (dropped by the model)')
            return call(*args, **kwargs)
        return faulty_call

    def teardown(self):
        if self.app is None:
            return
        for name in FAULTY_CALLS:
            if name in vars(self.store_collection):
                delattr(self.store_collection, name)
        if 'command' in vars(self.store_collection.database):
            del self.store_collection.database.command

    # -- sending requests -------------------------------------------------------------

    def send(self, cookie, ops, late=None, inside=None):
        """One request to ``/model`` with ``cookie``, running ``ops``; an :class:`Outcome`.

        ``late``: see :meth:`Model.request`. ``inside(request)`` runs after the
        ops, before the view returns (a parallel request).
        """
        outcome = Outcome()

        def view(request):
            session = request.session
            run_ops(session, ops, outcome.seen)
            if inside is not None:
                inside(request)
            if late is None:
                return Response('ok')
            during, ending = late
            session.options['late_store'] = True

            def body():
                yield b'first chunk, '
                run_ops(session, during, [])
                if ending == 'raise':
                    raise BodyFailed()
                yield b'second chunk'
            return Response(app_iter=body())

        environ = webob.Request.blank('/model', environ={'model.view': view}).environ
        if cookie is not None:
            environ['HTTP_COOKIE'] = 'session=' + cookie
        started = []

        def start_response(status, headers, exc_info=None):
            started.append(headers)
        try:
            body = self.app.app(environ, start_response)
            try:
                if late is not None and late[1] == 'cut':
                    next(iter(body))
                else:
                    for _ in body:
                        pass
            except BodyFailed:
                pass
            finally:
                close = getattr(body, 'close', None)
                if close is not None:
                    close()
        except Exception as exc:
            outcome.error = exc
        if started:
            outcome.cookie = set_cookie_of(started[0])
        return outcome

    def request(self, index, ops, late=None, session_id=None, old_secret=None):
        """A request from browser ``index`` (with ``session_id`` instead of its own
        cookie's id: a request that started before its cookie changed); checked."""
        browser = self.browsers[index]
        if session_id is None:
            session_id, old = browser.id, browser.old_secret
        else:
            old = bool(old_secret)
        if self.avoided(session_id, old, ops, late):
            return
        cookie = sign(OLD_SECRET if old else SECRET, session_id) if session_id else None
        outcome = self.send(cookie, ops, late)
        if outcome.error is None and self.down and ('expire',) in ops and session_id:
            self.logged_out_during_an_outage(outcome, index)
            return
        if self.excused(outcome, ops):
            return
        self.check(outcome, index, session_id, old, ops, late)

    def logged_out_during_an_outage(self, outcome, index):
        """A logout that did not read gets through an outage: its delete fails (a
        warning), the cookie is cleared all the same (docs/options.rst, ``expire``),
        and the document stays until it expires."""
        assert outcome.cookie == ('clear',), outcome.cookie
        self.browsers[index].take(outcome.cookie)

    def excused(self, outcome, ops):
        """A request that failed as the model allows: nothing changed (the response is lost)."""
        error, faulted, self.faulted = outcome.error, self.faulted, False
        if error is None:
            return False
        if isinstance(error, SessionBackendError) and (self.down or faulted):
            return True     # an outage: the request fails, the store is as it was
        if isinstance(error, (TypeError, ValueError)) and any(
                op[0] == 'user' and hostile(op[1]) for op in ops):
            return True     # a user id refused when the session is saved (also allowed)
        raise error

    def check(self, outcome, index, session_id, old, ops, late, model=None):
        model = model if model is not None else self.model
        expected = model.request(self.clock.now, session_id, old, ops, late)
        assert outcome.seen == expected.seen, (
            'the view saw %r, the docs say %r' % (outcome.seen, expected.seen))
        new_id = model.adopt(expected, outcome.cookie, session_id)
        if new_id is not None:
            self.seen_ids.add(new_id)
        self.browsers[index].take(outcome.cookie)

    def avoided(self, session_id, old, ops, late):
        """Whether the request is a shape of a defect in TOLERATED_DEFECTS."""
        status = self.model.status(session_id, self.clock.now)
        kinds = [op[0] for op in ops]
        read_first = bool(kinds) and kinds[0] in ('read', 'peek', 'pop', 'invalidate')
        if tolerates(1) and 'change_id' in kinds and not read_first and status == 'dead':
            return True
        if tolerates(3) and old and status != 'live':
            return True
        if tolerates(4) and status in ('dead', 'retired') and 'flash' in kinds and any(
                kind in ('read', 'peek', 'pop', 'invalidate') for kind in
                kinds[kinds.index('flash'):]):
            return True
        if tolerates(5) and any(op[0] == 'timeout' and op[1] in BAD_TIMEOUTS for op in ops):
            return True
        if tolerates(5) and any(op[0] == 'timeout' and isinstance(op[1], float)
                                and math.isnan(op[1]) for op in ops):
            return True
        if tolerates(6) and (('timeout', SHORT) in ops or (
                status == 'live' and self.model.docs[session_id].timeout == SHORT)):
            return True
        if tolerates(7) and any(op[0] == 'user' and hostile(op[1]) for op in ops):
            return True
        if tolerates(14) and status == 'retired' and 'change_id' in kinds and 'timeout' in kinds:
            return True
        if tolerates(13) and old and status == 'live' and (
                self.model.docs[session_id].timeout is not None or ('timeout', REMEMBER) in ops):
            return True
        if (tolerates(12) and status == 'live' and not read_first
                and self.model.docs[session_id].timeout is not None):
            return True
        return False

    # -- rules: what a browser does ----------------------------------------------------

    @rule(b=browsers)
    def read(self, b):
        self.request(b, [('read',)])

    @rule(b=browsers, key=keys, value=values)
    def write_only(self, b, key, value):
        self.request(b, [('set', key, value)])

    @rule(b=browsers, key=keys, value=values)
    def read_then_write(self, b, key, value):
        self.request(b, [('read',), ('set', key, value)])

    @rule(b=browsers, ops=FLASHES)
    def flashes(self, b, ops):
        self.request(b, ops)

    @rule(b=browsers, user=users, read_first=st.booleans(), remember=st.booleans())
    def login(self, b, user, read_first, remember):
        ops = [('read',)] if read_first else []
        ops.append(('user', user))
        if remember:
            ops.append(('timeout', REMEMBER))
        self.request(b, ops + [('change_id',)])

    @rule(b=browsers, read_first=st.booleans())
    def logout(self, b, read_first):
        self.request(b, ([('read',)] if read_first else []) + [('expire',)])

    @rule(b=browsers, write_after=st.booleans())
    def invalidate(self, b, write_after):
        self.request(b, [('invalidate',)] + ([('set', 'a', 1)] if write_after else []))

    @rule(b=browsers, read_first=st.booleans())
    def no_store(self, b, read_first):
        self.request(b, ([('read',)] if read_first else []) + [('no_store',), ('set', 'b', 2)])

    @rule(b=browsers, timeout=st.sampled_from((None, REMEMBER, SHORT)), read_first=st.booleans())
    def set_timeout(self, b, timeout, read_first):
        self.request(b, ([('read',)] if read_first else [])
                     + [('timeout', timeout), ('set', 'a', 3)])

    @rule(b=browsers, timeout=st.sampled_from(BAD_TIMEOUTS))
    def set_timeout_out_of_range(self, b, timeout):
        self.request(b, [('timeout', timeout), ('set', 'a', 3)])

    @rule(b=browsers, ops=st.lists(OP, min_size=1, max_size=4))
    def anything(self, b, ops):
        self.request(b, ops)

    @precondition(lambda self: not self.down)
    @rule(b=browsers, before=st.sampled_from([[], [('read',)], [('set', 'a', 2)]]),
          during=st.lists(st.one_of(st.tuples(st.just('set'), keys, values),
                                    st.tuples(st.just('flash'), messages)), max_size=2),
          ending=st.sampled_from(['full', 'cut', 'raise']))
    def late_store(self, b, before, during, ending):
        self.request(b, before, late=(during, ending))

    @rule(b=browsers)
    def untouched(self, b):
        """A request that never looks at the session: no cookie, no write."""
        browser = self.browsers[b]
        environ = webob.Request.blank('/untouched').environ
        if browser.id is not None:
            environ['HTTP_COOKIE'] = 'session=' + browser.cookie()
        response = webob.Request(environ).get_response(self.app.app)
        assert set_cookie_of(response.headerlist) is None

    @precondition(lambda self: any(browser.history for browser in self.browsers))
    @rule(b=browsers, pick=st.integers(0, 3), ops=st.lists(OP, min_size=1, max_size=3),
          old_secret=st.booleans())
    def stale_request(self, b, pick, ops, old_secret):
        """A request with a cookie the browser held before (one that started
        before a login and ends after it: ``pick`` 0 is the latest); its
        response lands in the browser."""
        history = [sid for sid in self.browsers[b].history if sid not in self.model.unsure]
        if history:
            self.request(b, ops, session_id=history[-1 - pick % len(history)],
                         old_secret=old_secret)

    @rule(b=browsers)
    def cookie_from_before_the_secret_changed(self, b):
        """The browser's cookie was issued under the secret that is now in old_secrets."""
        self.browsers[b].old_secret = self.browsers[b].id is not None

    @precondition(lambda self: not self.down)
    @rule(b=browsers, user=users, read_first=st.booleans(),
          after=st.sampled_from([[], [('set', 'a', 1)], [('flash', 'm1')],
                                 [('user', 'bob'), ('change_id',)],
                                 [('invalidate',), ('set', 'b', 1)], [('late_store',)],
                                 [('no_store',)], [('timeout', REMEMBER)]]))
    def parallel_login(self, b, user, read_first, after):
        """A request reads the session; while it runs, the same browser logs in;
        then it ends (a double-submitted login, an XHR).

        docs/options.rst, "Where features meet": the request is stale;
        nothing it wrote is stored, ``change_id`` and ``invalidate()`` do
        nothing, and its response leaves the cookie alone.
        """
        browser = self.browsers[b]
        now, old_id = self.clock.now, browser.id
        if self.model.status(old_id, now) != 'live':
            return
        if tolerates(2) and (any(op[0] in ('change_id', 'invalidate') for op in after)
                             or self.model.docs[old_id].timeout is not None):
            return
        if tolerates(3) and browser.old_secret:
            return
        login_ops = ([('read',)] if read_first else []) + [('user', user), ('change_id',)]
        before = copy.deepcopy(self.model.docs[old_id].data)
        inner = []

        def log_in(request):
            inner.append(self.send(browser.cookie(), login_ops))
            run_ops(request.session, after, [])
        outcome = self.send(browser.cookie(), [('read',)], inside=log_in)
        if outcome.error is not None:
            raise outcome.error
        if inner[0].error is not None:
            raise inner[0].error
        self.check(inner[0], b, old_id, browser.old_secret, login_ops, None)
        assert outcome.seen == [before]
        assert outcome.cookie is None, (
            'a request that started before a login set the cookie: %r' % (outcome.cookie,))
        if any(op[0] == 'invalidate' for op in after):
            self.model.unsure.add(old_id)   # the docs do not say whether its marker stays

    # -- rules: what happens around the browsers ----------------------------------------

    @rule(step=st.sampled_from([0.001, 1, 10, 29]))
    def a_moment_passes(self, step):
        self.clock.advance(step)

    @rule(step=st.sampled_from([31, 59, 61, 301, 599, 601, 1799, 1801, 2401]))
    def time_passes(self, step):
        self.clock.advance(step)

    @rule(b=browsers, which=st.sampled_from(['refresh', 'idle', 'absolute', 'grace']),
          offset=st.sampled_from([-0.001, 0, 0.001]))
    def time_reaches(self, b, which, offset):
        """The clock moves to a millisecond around a deadline of browser ``b``'s
        session: when a refresh is due (reissue_time after its last activity,
        or a tenth of its own timeout if that is shorter than ten
        reissue_time), when it expires, its
        absolute timeout, the end of the rotation grace of its last id."""
        browser, now = self.browsers[b], self.clock.now
        target = None
        if which == 'grace':
            ends = [self.model.retired[sid] for sid in browser.history
                    if sid in self.model.retired]
            target = max(ends) if ends else None
        elif browser.id in self.model.docs:
            doc = self.model.docs[browser.id]
            if which == 'idle':
                target = doc.expires
            elif which == 'refresh':
                own = TIMEOUT if doc.timeout is None else doc.timeout
                window = own / 10 if doc.timeout is not None and own < 10 * REISSUE else REISSUE
                target = doc.expires - seconds(own) + seconds(window)
            elif self.model.absolute is not None:
                target = doc.created + seconds(self.model.absolute)
        if target is not None:
            target += seconds(offset)
            if target > now:
                self.clock.advance((target - now).total_seconds())

    @precondition(lambda self: not self.down)
    @rule(user=users, pick=st.integers(0, 5), as_user=st.sampled_from(['owner', 'none', 'other']))
    def revoke_session(self, user, pick, as_user):
        now = self.clock.now
        handles = self.model.users_sessions(user, now)
        if not handles:
            return
        handle = handles[pick % len(handles)]
        other = [u for u in USERS if u != user][0]
        userid = {'owner': user, 'none': None, 'other': other}[as_user]
        revoked = self.factory.revoke_session(handle, userid=userid)
        assert revoked == (as_user != 'other')
        if revoked:
            for sid, doc in list(self.model.docs.items()):
                if doc.handle == handle:
                    del self.model.docs[sid]

    @precondition(lambda self: not self.down)
    @rule(user=users, keep=st.booleans())
    def revoke_user(self, user, keep):
        now = self.clock.now
        handles = self.model.users_sessions(user, now)
        spared = handles[0] if keep and handles else None
        count = self.factory.revoke_user(user, keep=spared)
        self.forget_user(self.model, user, now, spared, count)

    @staticmethod
    def forget_user(model, user, now, spared=None, count=None):
        """The model after revoke_user: every document of the user, expired ones
        too (docs/accounts.rst), but the spared one."""
        gone = [sid for sid, doc in model.docs.items()
                if doc.user == user and doc.handle != spared]
        if count is not None:
            live = [sid for sid in gone if model.docs[sid].expires > now]
            assert len(live) <= count <= len(gone), (
                'revoke_user counted %d, the model %d to %d' % (count, len(live), len(gone)))
        for sid in gone:
            del model.docs[sid]

    @precondition(lambda self: not self.down)
    @rule(query=st.sampled_from(HOSTILE_USERS), call=st.sampled_from(['list', 'revoke']))
    def user_query_with_operators(self, query, call):
        """A user id that is not a scalar is refused by name, listing or revoking (7)."""
        if tolerates(7):
            return
        with pytest.raises((TypeError, ValueError)):
            if call == 'list':
                self.factory.user_sessions(query)
            else:
                self.factory.revoke_user(query)

    @precondition(lambda self: not self.down)
    @rule()
    def outage_begins(self):
        self.down = True

    @precondition(lambda self: self.down)
    @rule()
    def outage_ends(self):
        self.down = False
        self.clock.seconds += PROBE    # the breaker lets its probe through

    @precondition(lambda self: not self.down)
    @rule(b=browsers, user=users, read_first=st.booleans())
    def login_loses_its_connection(self, b, user, read_first):
        """The connection drops when the login inserts the session under its new
        id: the request fails, and the session is as it was (docs/options.rst:
        "should the insert fail, the old document is put back")."""
        if tolerates(9) and not read_first:
            return
        self.drop_next_insert = True
        self.request(b, ([('read',)] if read_first else []) + [('user', user), ('change_id',)])
        self.drop_next_insert = False
        self.clock.seconds += PROBE    # the breaker the dropped connection opened probes

    @precondition(lambda self: not self.down)
    @rule(b=browsers, user=users, revoked=users, read_first=st.booleans())
    def revoke_user_during_login(self, b, user, revoked, read_first):
        """``revoke_user`` runs while a login moves the session to its new id.

        docs/accounts.rst: the user's sessions are gone when it returns. The
        two happen as if one came first: revoked then logged in, logged in
        then revoked; or, when the login loaded the session before it was
        revoked, a stale login that stores nothing and leaves the cookie
        alone (docs/options.rst, "Where features meet").
        """
        if tolerates(8):
            return
        browser = self.browsers[b]
        session_id, old, now = browser.id, browser.old_secret, self.clock.now
        ops = ([('read',)] if read_first else []) + [('user', user), ('change_id',)]
        if self.avoided(session_id, old, ops, None):
            return
        counted = []
        self.before_insert = lambda: counted.append(self.factory.revoke_user(revoked))
        cookie = sign(OLD_SECRET if old else SECRET, session_id) if session_id else None
        outcome = self.send(cookie, ops)
        if self.before_insert is not None:      # nothing was inserted: revoke afterwards
            self.before_insert = None
            counted.append(self.factory.revoke_user(revoked))
        if outcome.error is not None:
            raise outcome.error
        candidates = []
        first = copy.deepcopy(self.model)
        self.forget_user(first, revoked, now)
        candidates.append(('revoked, then logged in', first, None))
        second = copy.deepcopy(self.model)
        candidates.append(('logged in, then revoked', second, revoked))
        doc = self.model.docs.get(session_id) if self.model.status(session_id, now) == 'live' \
            else None
        if doc is not None and doc.user == revoked:
            third = copy.deepcopy(self.model)
            third.retired.pop(session_id, None)
            self.forget_user(third, revoked, now)
            candidates.append(('read, revoked, then a stale login', third, 'stale'))
        failures = []
        for name, model, then in candidates:
            browsers = copy.deepcopy(self.browsers)
            try:
                if then == 'stale':
                    assert outcome.cookie is None, 'a stale login must leave the cookie alone'
                    browsers[b].take(outcome.cookie)
                    self.check_store(model)
                else:
                    saved, self.browsers = self.browsers, browsers
                    try:
                        self.check(outcome, b, session_id, old, ops, None, model=model)
                    finally:
                        self.browsers = saved
                    if then is not None:
                        self.forget_user(model, then, now)
                    self.check_store(model)
            except AssertionError as exc:
                failures.append('%s: %s' % (name, exc))
                continue
            self.model, self.browsers = model, browsers
            return
        raise AssertionError('revoke_user(%r) during a login fits no order:\n%s'
                             % (revoked, '\n'.join(failures)))

    # -- the checks after every step ----------------------------------------------------

    @invariant()
    def store_holds_what_the_model_holds(self):
        if self.app is not None and not self.down:
            self.check_store(self.model)

    def check_store(self, model):
        """Every id a browser ever held is live, retired or dead, as in the model,
        a live one with the model's data; and ``user_sessions`` lists the model's."""
        now = self.clock.now
        ids = set(model.docs) | set(model.retired) | self.seen_ids
        for browser in self.browsers:
            ids.update(browser.history)
            if browser.id is not None:
                ids.add(browser.id)
        by_doc_id = {document_id(sid): sid for sid in ids}
        found = {doc['_id']: doc for doc in self.collection.find(
            {'_id': {'$in': sorted(by_doc_id)}})}
        for doc_id, sid in sorted(by_doc_id.items()):
            if sid in model.unsure:
                continue
            doc = found.get(doc_id)
            if doc is None or (doc.get('expires') is not None and doc['expires'] <= now):
                actual = 'dead'
            else:
                actual = 'retired' if 'retired' in doc else 'live'
            wanted = model.status(sid, now)
            assert actual == wanted, 'session %s… is %s, the model says %s (%r)' % (
                sid[:8], actual, wanted, model.docs.get(sid))
            if actual != 'live':
                continue
            expected = model.docs[sid]
            data = {unquote(name): value for name, value in doc.get('data', {}).items()}
            assert data == expected.data, 'session %s… holds %r, the model says %r' % (
                sid[:8], data, expected.data)
            assert doc.get('timeout') == expected.timeout, 'own timeout %r, the model says %r' % (
                doc.get('timeout'), expected.timeout)
            assert doc.get('handle') == expected.handle, 'the handle changed'
            assert expected.expires <= doc['expires'] <= expected.latest, (
                'session %s… expires at %s, the model says %s to %s' % (
                    sid[:8], doc['expires'], expected.expires, expected.latest))
            expected.expires = expected.latest = doc['expires']
        for user in USERS:
            listed = {record.handle for record in self.factory.user_sessions(user)}
            assert listed == set(model.users_sessions(user, now)), (
                'user_sessions(%r) lists %d sessions, the model %d'
                % (user, len(listed), len(model.users_sessions(user, now))))


def machine(collection, clock, build_app):
    env = types.SimpleNamespace(collection=collection, clock=clock, build_app=build_app)
    return type('SessionLife', (SessionLife,), {'env': env})


def model_settings(server):
    """CI: a fixed number of examples from a fixed seed; MODEL_EXAMPLES: more, at random."""
    more = os.environ.get('MODEL_EXAMPLES')
    return settings(
        max_examples=int(more) if more else (150 if server else 300),
        stateful_step_count=int(os.environ.get('MODEL_STEPS', 30)),
        derandomize=not more, deadline=None, database=None,
        # Without the explain phase: it traces every line, and shrinking takes minutes.
        phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def test_a_sessions_life_follows_the_docs(request, backend_collection, fake_clock, build_app):
    server = 'server' in request.node.callspec.id
    run_state_machine_as_test(lambda: machine(backend_collection, fake_clock, build_app)(),
                              settings=model_settings(server))
