"""pyramid_session_redis 1.x: the signed session id, the pickled session in Redis."""
from __future__ import annotations

import logging
import math
import time
from typing import Any, Callable


from ..cookie import salted_key
from .old import (
    REDIS, CookieImporter, OldSession, unsigned,
    utc_from)
from .pickles import safe_unpickle

log = logging.getLogger(__name__)


class RedisImporter(CookieImporter):
    """Sessions of pyramid_session_redis 1.x (needs the ``import-redis`` extra).

    ``redis_url`` is the old ``redis.sessions.redis_url`` (or pass ``client``,
    a redis-py client); ``secret``, ``cookie_name``, ``cookie_path`` and
    ``cookie_domain`` are the old factory's. The cookie is verified as the
    library verifies it (WebOb's SignedSerializer, HMAC-SHA512, salt
    ``pyramid_session_redis.``) before Redis is asked anything: a forged
    cookie costs no read. The session's payload is read as the library reads
    it — its data (``m``), its creation time (``c``), its expiry (``x``),
    refused once past — with ``deserialize`` (by default the library's own,
    pickle, through :func:`safe_unpickle`). With ``end_old`` (the default)
    the old key is deleted once the visitor has the new session's cookie.
    """

    source = REDIS
    salt = 'pyramid_session_redis.'

    def __init__(self, redis_url: str | None = None, secret: str | bytes | None = None,
                 cookie_name: str = 'session', cookie_path: str = '/',
                 cookie_domain: str | None = None,
                 deserialize: Callable[[bytes], Any] | None = None, client: Any = None,
                 end_old: bool = True, **redis_options: Any) -> None:
        super().__init__(cookie_name, cookie_path, cookie_domain)
        if not secret:
            raise ValueError('secret must be the old redis.sessions.secret')
        if client is None:
            if not redis_url:
                raise ValueError('redis_url (the old redis.sessions.redis_url) is required')
            try:
                import redis
            except ImportError:
                raise ImportError('RedisImporter needs redis: pip install '
                                  '"pyramid_mongosession[import-redis]"') from None
            client = redis.StrictRedis.from_url(redis_url, **redis_options)
        self.client = client
        self.deserialize = deserialize or safe_unpickle
        self.end_old = end_old
        self._key = salted_key(self.salt, secret)

    def read(self, raw: str) -> OldSession | None:
        session_id = unsigned(raw.encode('utf-8'), self._key, 'sha512').decode('utf-8')
        if not session_id:
            raise ValueError('no session id in the cookie')
        persisted = self.client.get(session_id)
        if persisted is None:
            raise ValueError('no such session in Redis (ended, or expired)')
        try:
            payload = self.deserialize(persisted)
            managed, created = payload['m'], payload['c']
            expires, version = payload.get('x'), payload.get('v')
        except Exception as exc:
            raise ValueError('not a pyramid_session_redis session: %r' % exc) from None
        if expires and math.ceil(time.time()) > expires:
            raise ValueError('the session had expired')
        if not version or version < 1:
            raise ValueError('a session of a pyramid_session_redis older than 1.0')
        if not isinstance(managed, dict) or not managed:
            return None
        end = (lambda: self.client.delete(session_id)) if self.end_old else None
        return OldSession(managed, self.source, created=utc_from(created), end=end,
                          cookie=self.cookie)
