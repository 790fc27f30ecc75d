"""When MongoDB is unreachable: fail at once, and let one request at a time find out.

Without this, every request that touches a stored session waits the whole
``operation_timeout`` during an outage; behind a thread pool that takes every
worker within seconds, and the site with them, pages without sessions
included. :class:`OutageBreaker` remembers the failure instead: until
``outage_probe_interval`` seconds have passed, calls fail at once; then one
call (and only one) goes through as a probe. If it succeeds, service resumes;
if not, the wait starts again. So at most one request per interval pays the
timeout.
"""
from __future__ import annotations

import logging
import re
import threading
import time
from typing import Callable

from pymongo.errors import (
    ConnectionFailure, ExecutionTimeout, NetworkTimeout, PyMongoError, ServerSelectionTimeoutError)

from .exceptions import SessionBackendError

log = logging.getLogger(__name__)

_TOPOLOGY = ', Topology Description: '
_SELECTION_TIMEOUT = re.compile(r',? Timeout: ([0-9.]+)s')
_CLIENT_TIMEOUT = re.compile(r'timeoutMS: ([0-9.]+)ms')
_CONFIGURED = re.compile(r'\s*\(configured timeouts: [^)]*\)')
_TIMED_OUT = re.compile(r'\A([^\s:]+:\d+): timed out\Z')
_SERVERS = re.compile(r"<ServerDescription \('([^']*)', (\d+)\)")


def unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` means the server could not be reached or did not answer in time."""
    return isinstance(exc, ConnectionFailure) or (isinstance(exc, PyMongoError) and exc.timeout)


def no_answer(exc: BaseException) -> bool:
    """Whether ``exc`` means a server that is there but did not answer in time (a
    hung or overloaded server), rather than one that could not be reached at all."""
    if isinstance(exc, (NetworkTimeout, ExecutionTimeout)):
        return True
    if isinstance(exc, ServerSelectionTimeoutError):
        text = str(exc).split(_TOPOLOGY)[0]
        return 'timed out' in text or text.startswith('No servers found yet')
    return False


def summary(exc: BaseException) -> str:
    """pymongo's error on one line: the server's address and what happened, then the
    timeout that ran out; without the topology description (logged at DEBUG)."""
    text = ' '.join(str(exc).split())
    text, _, topology = text.partition(_TOPOLOGY)
    seconds = None
    found = _SELECTION_TIMEOUT.search(text)
    if found is not None:
        seconds = float(found.group(1))
        text = text[:found.start()] + text[found.end():]
    else:
        found = _CLIENT_TIMEOUT.search(text)
        if found is not None:
            seconds = float(found.group(1)) / 1000
    text = _CONFIGURED.sub('', text).strip()
    if text.startswith('No servers found yet'):
        servers = ['%s:%s' % server for server in _SERVERS.findall(topology)]
        if servers:
            text = 'no answer from %s' % ', '.join(servers)
    else:
        # A socket that timed out, in the call or in the monitor's check that
        # server selection reports: the same fact, said the same way.
        text = _TIMED_OUT.sub(r'no answer from \1', text)
    if seconds is not None:
        text += ', after %g s' % round(seconds, 1)
    return text


def verdict(exc: BaseException) -> str:
    """"MongoDB is unreachable" or "MongoDB did not answer in time", for ``exc``."""
    return 'MongoDB did not answer in time' if no_answer(exc) else 'MongoDB is unreachable'


class OutageBreaker:
    """Fails calls at once while the server is known to be unreachable.

    :meth:`admit` is called before each database call; it returns whether
    the call is the probe, or raises :class:`SessionBackendError` while the
    server is known to be down. :meth:`record` is called after it.
    """

    def __init__(self, probe_interval: float,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.probe_interval = probe_interval
        self._clock = clock
        self._wall_clock = wall_clock
        self._lock = threading.Lock()
        #: (since, since by the wall clock, what happened) while the server is known to
        #: be unreachable, else None. Read without the lock by a caller that skips
        #: admit() and record() while it is None (see Connection.call).
        self.down: tuple[float, float, str] | None = None
        self._next_probe = 0.0
        self._probing = False

    def admit(self) -> bool:
        """Let a call through (True when it is the probe), or raise while the server is down."""
        if self.down is None:
            return False
        with self._lock:
            if self.down is None:
                return False
            now = self._clock()
            if not self._probing and now >= self._next_probe:
                self._probing = True
                return True
            since, wall, message = self.down
        raise SessionBackendError(
            'MongoDB is unavailable since %s UTC, %.0f s ago (%s); the next attempt is in '
            'at most %.0f s' % (time.strftime('%H:%M:%S', time.gmtime(wall)), now - since,
                                message, max(self._next_probe - now, 0) or self.probe_interval))

    def abandon(self, probe: bool) -> None:
        """The call never reached the server (it failed before sending): no verdict."""
        if probe:
            with self._lock:
                self._probing = False

    def record(self, probe: bool, exc: BaseException | None = None) -> None:
        """Note how a call ended: ``exc`` is its pymongo error, or None if the server answered."""
        if exc is not None and unreachable(exc):
            with self._lock:
                now = self._clock()
                if self.down is None:
                    what = summary(exc)
                    log.warning('%s (%s); failing session calls at once, probing every %g s',
                                verdict(exc), what, self.probe_interval)
                    self.down = (now, self._wall_clock(), '%s: %s' % (
                        'did not answer in time' if no_answer(exc) else 'unreachable', what))
                log.debug('the MongoDB client\'s error: %s', exc)   # the topology too
                self._next_probe = now + self.probe_interval
                if probe:
                    self._probing = False
            return
        if self.down is not None:
            with self._lock:
                if self.down is not None:
                    log.warning('MongoDB is reachable again, after %.0f s',
                                self._clock() - self.down[0])
                self.down = None
                self._probing = False
