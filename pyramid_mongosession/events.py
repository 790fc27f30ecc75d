"""The events that tell an application, or its audit log, what happened to a session.

Subscribe with Pyramid's ``config.add_subscriber(callback, SessionEnded)``.
Nothing is built, fetched or published for an event nobody subscribes to.
"""
from __future__ import annotations

from typing import Any

from zope.interface import implementedBy

#: Why a session ended (:attr:`SessionEnded.reason`): its request set
#: ``options['expire']`` (a logout), called ``invalidate()``, it was revoked
#: (``revoke_session``, ``revoke_user``), or its user went over
#: ``max_sessions_per_user``.
EXPIRE, INVALIDATE, REVOKE, CAP = 'expire', 'invalidate', 'revoke', 'cap'


class SessionEvent:
    """What every session event carries.

    ``request`` is the request during which it happened (None outside a
    request); ``handle`` names the session, which need not be the request's
    own (a revocation, the cap); ``userid`` is the value of ``user_key`` in
    that session, or None.
    """

    def __init__(self, request: Any, handle: str | None, userid: Any) -> None:
        self.request = request
        self.handle = handle
        self.userid = userid

    def __repr__(self) -> str:
        return '<%s handle=%r userid=%r>' % (type(self).__name__, self.handle, self.userid)


class SessionCreated(SessionEvent):
    """A new session was stored (its first document, under a new id)."""


class SessionIdChanged(SessionEvent):
    """A session moved to a new id (``change_id``); its handle stays the same."""


class SessionEnded(SessionEvent):
    """A session was deleted before it expired; ``reason`` says why:
    :data:`EXPIRE`, :data:`INVALIDATE`, :data:`REVOKE` or :data:`CAP`."""

    def __init__(self, request: Any, handle: str | None, userid: Any, reason: str) -> None:
        super().__init__(request, handle, userid)
        self.reason = reason

    def __repr__(self) -> str:
        return '<%s handle=%r userid=%r reason=%r>' % (
            type(self).__name__, self.handle, self.userid, self.reason)


class SessionExpired(SessionEvent):
    """A request presented a session that had expired (and got a new, empty one)."""


class SessionImported(SessionEvent):
    """A visitor's session of the library used before became a new session
    (see :mod:`pyramid_mongosession.importers`), and the response gives the
    visitor its cookie.

    ``session`` is the new session (``request.session``); ``source`` names
    the library (``'cookie'``, ``'pyramid_session_redis'``,
    ``'pyramid_beaker'``, or the importer's own); ``handle`` and ``userid``
    are the new session's. Published after :class:`SessionCreated`.
    """

    def __init__(self, request: Any, session: Any, source: str, handle: str | None = None,
                 userid: Any = None) -> None:
        super().__init__(request, handle, userid)
        self.session = session
        self.source = source

    def __repr__(self) -> str:
        return '<%s source=%r handle=%r userid=%r>' % (
            type(self).__name__, self.source, self.handle, self.userid)


def wants(registry: Any, event_class: type[SessionEvent]) -> bool:
    """Whether anything subscribes to ``event_class``: nothing is built or fetched otherwise."""
    if registry is None or not getattr(registry, 'has_listeners', False):
        return False
    return bool(registry.adapters.subscriptions((implementedBy(event_class),), None))


def notify(request: Any, event_class: type[SessionEvent], handle: str | None,
           userid: Any) -> None:
    """Publish ``event_class(request, handle, userid)`` if anything subscribes to it."""
    registry: Any = getattr(request, 'registry', None)
    if wants(registry, event_class):
        registry.notify(event_class(request, handle, userid))
