"""Sessions of the library a site used before, taken over on each visitor's first visit.

``MongoSessionFactory(..., importer=callable)`` consults ``importer(request)``
when a request brings no valid pyramid_mongosession cookie. It returns the
visitor's old session as a mapping (or None); the factory then stores it at
once as a new session (one insert), every value checked as an assignment
would check it — a value MongoDB cannot store is dropped with one WARNING
naming its key — and the response carries the new session's cookie. When
that response goes out, the old session is ended where the importer can end
it (deleted from Redis or from Beaker's store) and the old cookie is cleared
where its name, path or domain differ from ours. So switching libraries is a
deploy, not an event: nobody is logged out, no cart is lost.

Three importers verify the old cookie exactly as their library does, and
never trust a cookie that is unsigned, badly signed or expired; a bad
signature costs no read of the old store:

:class:`SignedCookieImporter`
    Pyramid's :func:`~pyramid.session.SignedCookieSessionFactory`.
:class:`RedisImporter`
    pyramid_session_redis 1.x (the ``import-redis`` extra).
:class:`BeakerImporter`
    pyramid_beaker, on any of Beaker's back ends (the ``import-beaker`` extra).

An importer may return an :class:`OldSession` — a dict that also says when
the session was created, how to end it and which cookie held it — or any
mapping. The bookkeeping of the takeover lives in the sessions collection
itself, in documents whose ``_id`` starts with ``import:`` (a session's is a
hex digest, so they never meet): the counter of sessions imported so far
(``import:count``, which ``pmongosession stats`` prints), and, for cookie
sessions that cannot be deleted, a marker per imported session that refuses
its replay until the old cookie would have expired anyway.
"""
from __future__ import annotations
from .beaker_sessions import BeakerImporter
from .old import BEAKER, COOKIE, COUNTER_ID, MARKER_PREFIX, REDIS, OldCookie, OldSession
from .pickles import PickledObject, safe_unpickle
from .session_redis import RedisImporter
from .signed_cookie import SignedCookieImporter
from .takeover import Takeover, checked_values, imported_count

__all__ = [
    'BEAKER', 'COOKIE', 'COUNTER_ID', 'MARKER_PREFIX', 'REDIS', 'BeakerImporter', 'OldCookie',
    'OldSession', 'PickledObject', 'RedisImporter', 'SignedCookieImporter', 'Takeover',
    'checked_values', 'imported_count', 'safe_unpickle',
]
