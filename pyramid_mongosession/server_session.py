"""The server session in which each thread sends its database calls.

Without one, pymongo lends each call a session of its own (checked out of
its pool and back: about 7 µs of CPU a call). One kept by the thread is the
same to the server: one ``lsid`` on every call, and a ``txnNumber`` one
higher on each write, which is what lets a retried write be applied once.
A pymongo ``ClientSession`` is neither thread- nor fork-safe: hence one per
thread, in a store of each process's own (a forked child starts afresh). A
thread's session is ended and replaced after a call that failed or met a
network error on the way (pymongo marks it dirty), and when it is
:data:`SESSION_LIFETIME` seconds old: a session that young cannot have been
idle long enough for the server to forget it, and its age costs nothing to
keep, where its last use would be written at every call. It is ended when
its thread ends, and all of them before the client closes
(:meth:`Connection.close <pyramid_mongosession.connection.Connection.close>`),
so that pymongo pools them again and the client ends them on the server.
"""
from __future__ import annotations

import threading
import time
import weakref
from typing import Any

#: A thread's server session is replaced when this many seconds old, long before the
#: server could forget it (MongoDB: after 30 idle minutes; pymongo's pool: 29).
SESSION_LIFETIME = 600.0


class ThreadSession:
    """One thread's pymongo ``ClientSession``, ended when dropped."""

    __slots__ = ('session', 'renew', '__weakref__')

    def __init__(self, session: Any, renew: float) -> None:
        self.session = session   # a pymongo ClientSession, or None: no sessions
        self.renew = renew       # when to replace it (time.monotonic())

    def end(self) -> None:
        """End the session: it sends nothing; pymongo pools it again, or drops it if
        it met a network error or if another process started it (the parent of a
        forked child)."""
        session, self.session = self.session, None
        if session is not None:
            session.end_session()

    def __del__(self) -> None:
        # Ended once given up, or once its thread has ended: a server that starts a
        # thread per request must not leave a server session behind for each (MongoDB
        # keeps each for 30 minutes, and refuses new ones past a million).
        self.end()


class ThreadSessions:
    """Each thread's :class:`ThreadSession` for one process's client.

    Made when the process connects, not at import: ``threading.local`` is
    looked up then, so that under gevent (which patches it in a worker that
    imported the application before: ``gunicorn --preload -k gevent``) each
    greenlet has a session of its own. Two greenlets sharing one would send
    concurrent writes under one ``txnNumber``, which the server would take
    for retries of one write.
    """

    def __init__(self, client: Any) -> None:
        self.client = client
        self.local = threading.local()
        self.every: weakref.WeakSet[ThreadSession] = weakref.WeakSet()   # all threads'

    def current(self, sessions: bool) -> Any:
        """This thread's ``ClientSession``: the one it holds, or a new one (None: not
        ``sessions``)."""
        held, now = getattr(self.local, 'held', None), time.monotonic()
        if held is not None and now < held.renew:
            return held.session
        self.local.held = None   # ends it
        session = self.client.start_session(causal_consistency=False) if sessions else None
        self.local.held = held = ThreadSession(session, now + SESSION_LIFETIME)
        self.every.add(held)
        return session

    def give_up(self) -> None:
        """End this thread's session: its next call starts another."""
        self.local.held = None

    def end_all(self) -> None:
        """End every thread's session, before the client closes (which ends those
        in pymongo's pool on the server)."""
        for held in list(self.every):
            held.end()


def dirty(session: Any) -> bool:
    """Whether pymongo marked ``session`` as having met a network error (a call it
    retried may still have succeeded): the server may still be running the first try."""
    return bool(getattr(getattr(session, '_server_session', None), 'dirty', False))


def without_sessions(session: Any) -> bool:
    """Whether ``session``'s client is connected to servers that have no sessions."""
    description = session.client.topology_description
    return description.logical_session_timeout_minutes is None
