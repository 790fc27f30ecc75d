"""What an importer gives: the old session, its cookie, and the checks every importer shares."""
from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import logging
import math
from typing import TYPE_CHECKING, Any, Callable, Dict, Mapping, NamedTuple


if TYPE_CHECKING:
    from pyramid.request import Request


log = logging.getLogger(__name__)


#: The sources of the importers here (:attr:`OldSession.source`, the
#: ``mongodb_session.import.from`` setting, :class:`SessionImported` events).
COOKIE, REDIS, BEAKER = 'cookie', 'pyramid_session_redis', 'pyramid_beaker'
#: The ``_id`` of the counter of imported sessions, in the sessions collection.
COUNTER_ID = 'import:count'
#: The ``_id`` prefix of the markers that refuse the replay of an imported cookie session.
MARKER_PREFIX = 'import:seen:'
#: Beaker's own keys in a session, not session data.
BEAKER_KEYS = frozenset(('_accessed_time', '_creation_time', '_domain', '_path', '_id'))
#: pyramid_beaker's cookie name when ``session.key`` is not set.
BEAKER_COOKIE = 'beaker.session.id'
#: What Beaker gives its back end on top of ``timeout`` (its PR#153).
BEAKER_BACKEND_MARGIN = 120


class OldCookie(NamedTuple):
    """The cookie that held an old session: its name, path and domain."""
    name: str
    path: str = '/'
    domain: str | None = None


class OldSession(Dict[str, Any]):
    """A visitor's old session, as an importer returns it: its data, and what else is known.

    ``source`` names the library; ``created`` is when the old session began
    (a naive UTC datetime), carried over as the new session's creation time;
    ``end()`` ends the old session in its store (None: it cannot be ended);
    ``cookie`` is the old cookie (an :class:`OldCookie`), cleared when it
    differs from ours; ``replay_key``, for a session that cannot be ended,
    names it so that a replay of its cookie imports nothing until
    ``replay_until`` (None: for ever).
    """

    def __init__(self, data: Mapping[Any, Any], source: str,
                 created: datetime.datetime | None = None,
                 end: Callable[[], Any] | None = None, cookie: OldCookie | None = None,
                 replay_key: str | None = None,
                 replay_until: datetime.datetime | None = None) -> None:
        super().__init__(data)
        self.source = source
        self.created = created
        self.end = end
        self.cookie = cookie
        self.replay_key = replay_key
        self.replay_until = replay_until


def utc_from(seconds: Any) -> datetime.datetime | None:
    """Seconds since the epoch as a naive UTC datetime (to the millisecond), or None."""
    try:
        seconds = float(seconds)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(seconds) or seconds < 0:
        return None
    moment = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).replace(tzinfo=None)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def unsigned(value: bytes, key: bytes, hashalg: str) -> bytes:
    """The payload of a value signed by WebOb's SignedSerializer; ValueError unless the
    signature (the HMAC of the payload, ahead of it, all unpadded base64url) verifies."""
    try:
        signed = base64.urlsafe_b64decode(value + b'=' * (-len(value) % 4))
    except (ValueError, TypeError) as exc:
        raise ValueError('badly formed base64: %s' % exc) from None
    size = hashlib.new(hashalg).digest_size
    signature, payload = signed[:size], signed[size:]
    if not hmac.compare_digest(hmac.new(key, payload, hashalg).digest(), signature):
        raise ValueError('bad signature')
    return payload


# -- the importers --------------------------------------------------------------------

class CookieImporter:
    """What the importers have in common: the old cookie, read and verified.

    Subclasses implement :meth:`read`, which raises :exc:`ValueError` for a
    cookie that does not verify, or a session that has expired or cannot be
    read: such a cookie imports nothing (logged at INFO).
    """

    source = 'unknown'

    def __init__(self, cookie_name: str, cookie_path: str = '/',
                 cookie_domain: str | None = None) -> None:
        if not isinstance(cookie_name, str) or not cookie_name:
            raise ValueError('cookie_name must be the name of the old session cookie')
        self.cookie = OldCookie(cookie_name, cookie_path or '/', cookie_domain or None)

    def __call__(self, request: Request) -> OldSession | None:
        try:
            raw = request.cookies.get(self.cookie.name)
        except UnicodeDecodeError:
            return None
        if not raw:
            return None
        try:
            return self.read(raw)
        except ValueError as exc:
            log.info('imported nothing from an old %s session cookie (%s): %s',
                     self.source, request.client_addr, exc)
            return None

    def read(self, raw: str) -> OldSession | None:
        raise NotImplementedError
