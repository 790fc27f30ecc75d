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
import threading
import time
from typing import Callable

from pymongo.errors import ConnectionFailure, PyMongoError

from .exceptions import SessionBackendError

log = logging.getLogger(__name__)


def unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` means the server could not be reached or did not answer in time."""
    return isinstance(exc, ConnectionFailure) or (isinstance(exc, PyMongoError) and exc.timeout)


class OutageBreaker:
    """Fails calls at once while the server is known to be unreachable.

    :meth:`admit` is called before each database call; it returns whether
    the call is the probe, or raises :class:`SessionBackendError` while the
    server is known to be down. :meth:`record` is called after it.
    """

    def __init__(self, probe_interval: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.probe_interval = probe_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._down: tuple[float, str] | None = None   # (since, message) while unreachable
        self._next_probe = 0.0
        self._probing = False

    def admit(self) -> bool:
        """Let a call through (True when it is the probe), or raise while the server is down."""
        if self._down is None:
            return False
        with self._lock:
            if self._down is None:
                return False
            now = self._clock()
            if not self._probing and now >= self._next_probe:
                self._probing = True
                return True
            since, message = self._down
        raise SessionBackendError(
            'MongoDB is unavailable (for %.0f s: %s); the next attempt is in at most %.0f s'
            % (now - since, message, max(self._next_probe - now, 0) or self.probe_interval))

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
                if self._down is None:
                    log.warning('MongoDB is unreachable; failing session calls at once, '
                                'probing every %g s: %s', self.probe_interval, exc)
                    self._down = (now, str(exc))
                self._next_probe = now + self.probe_interval
                if probe:
                    self._probing = False
            return
        if self._down is not None:
            with self._lock:
                if self._down is not None:
                    log.warning('MongoDB is reachable again, after %.0f s',
                                self._clock() - self._down[0])
                self._down = None
                self._probing = False
