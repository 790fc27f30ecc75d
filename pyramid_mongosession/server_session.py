"""The server session in which each thread sends its database calls.

Without one, pymongo lends each call a session of its own (checked out of
its pool and back: about 7 µs of CPU a call). One kept by the thread is the
same to the server: one ``lsid`` on every call, and a ``txnNumber`` one
higher on each write, which is what lets a retried write be applied once.
A pymongo ``ClientSession`` is neither thread- nor fork-safe: hence one per
thread, started anew for a new process's collection (a forked child). It is
ended and replaced after a call that failed (pymongo drops one that met a
network error), and when it is :data:`SESSION_LIFETIME` seconds old: a
session that young cannot have been idle long enough for the server to
forget it, and its age costs nothing to keep, where its last use would be
written at every call. It is ended when its thread ends, too.
"""
from __future__ import annotations

import threading
import time
from typing import Any

#: A thread's server session is replaced when this many seconds old, long before the
#: server could forget it (MongoDB: after 30 idle minutes; pymongo's pool: 29).
SESSION_LIFETIME = 600.0


class ThreadSession:
    """One thread's pymongo ``ClientSession`` for one process's client, ended when dropped."""

    __slots__ = ('process', 'session', 'renew')

    def __init__(self, process: Any, session: Any, renew: float) -> None:
        self.process = process   # the Connection's (pid, collection) it was started for
        self.session = session   # a pymongo ClientSession, or None: the server has none
        self.renew = renew       # when to replace it (time.monotonic())

    def __del__(self) -> None:
        # Ended once given up, or once its thread has ended: a server that starts a
        # thread per request must not leave a server session behind for each (MongoDB
        # keeps each for 30 minutes, and refuses new ones past a million). Ending one
        # sends nothing; pymongo pools it again, or drops it if it met a network error
        # or if another process started it (the parent of a forked child).
        if self.session is not None:
            self.session.end_session()


class ThreadSessions(threading.local):
    """Each thread's :class:`ThreadSession`, for one Connection."""

    held: ThreadSession | None = None

    def current(self, process: Any, sessions: bool) -> Any:
        """This thread's ``ClientSession`` for ``process``, the Connection's ``(pid,
        collection)``: the one it holds, or a new one (None if not ``sessions``)."""
        held, now = self.held, time.monotonic()
        if held is not None and held.process is process and now < held.renew:
            return held.session
        self.held = None   # ends it
        session = None
        if process is not None and sessions:
            session = process[1].database.client.start_session(causal_consistency=False)
        self.held = ThreadSession(process, session, now + SESSION_LIFETIME)
        return session

    def give_up(self) -> None:
        """End this thread's session: its next call starts another."""
        self.held = None
