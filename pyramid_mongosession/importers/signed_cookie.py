"""Pyramid's own signed-cookie sessions (SignedCookieSessionFactory)."""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import time
from typing import Any


from ..cookie import salted_key
from .old import (
    COOKIE, CookieImporter, OldSession, unsigned,
    utc_from)

log = logging.getLogger(__name__)


class SignedCookieImporter(CookieImporter):
    """Sessions of Pyramid's :func:`~pyramid.session.SignedCookieSessionFactory`.

    Its arguments are the old factory's: ``secret``, ``cookie_name``,
    ``salt``, ``hashalg``, ``serializer`` and ``timeout``, with the same
    defaults (and ``cookie_path``, ``cookie_domain``, to clear the old
    cookie). The cookie's HMAC is verified as WebOb's ``SignedSerializer``
    does; a session idle for longer than ``timeout`` seconds imports nothing.

    The data are read as JSON, Pyramid 2's serializer. ``serializer`` is
    needed only for an application that passed its own to the old factory:
    an object with ``loads(bytes)``. Pass ``pyramid.session.PickleSerializer()``
    only if the old factory used it, and knowing what Pyramid's documentation
    says of it: whoever holds the secret can make the server unpickle, and so
    run, anything. A cookie session cannot be deleted: each imported session
    is remembered until its old cookie would have expired, and a replay of
    that cookie imports nothing.
    """

    source = COOKIE

    def __init__(self, secret: str | bytes, cookie_name: str = 'session',
                 salt: str = 'pyramid.session.', hashalg: str = 'sha512',
                 serializer: Any = None, timeout: float | None = 1200,
                 cookie_path: str = '/', cookie_domain: str | None = None) -> None:
        super().__init__(cookie_name, cookie_path, cookie_domain)
        if not secret:
            raise ValueError('secret must be the secret of the old SignedCookieSessionFactory')
        hashlib.new(hashalg)   # ValueError for an unknown algorithm
        if serializer is not None and not callable(getattr(serializer, 'loads', None)):
            raise TypeError('serializer must have a loads(bytes) method')
        self.timeout = None if timeout is None else float(timeout)
        self.hashalg = hashalg
        self.serializer = serializer
        self._key = salted_key(salt or '', secret)

    def read(self, raw: str) -> OldSession | None:
        payload = unsigned(raw.encode('latin-1'), self._key, self.hashalg)
        if self.serializer is None:
            value = json.loads(payload.decode('utf-8'))
        else:
            try:
                value = self.serializer.loads(payload)
            except Exception as exc:
                raise ValueError('the serializer could not read it: %r' % exc) from None
        try:
            renewed, created, state = value
            renewed, created, state = float(renewed), float(created), dict(state)
        except (TypeError, ValueError):
            raise ValueError('not a Pyramid cookie session') from None
        if not math.isfinite(renewed):
            raise ValueError('not a Pyramid cookie session')
        if self.timeout is not None and time.time() - renewed > self.timeout:
            raise ValueError('the session had expired')
        if not state:
            return None
        # Each cookie Pyramid re-issues for a session has its time of creation:
        # the replay of any of them is refused.
        replay = hmac.new(self._key, b'replay:' + repr(created).encode('ascii'),
                          'sha256').hexdigest()
        return OldSession(state, self.source, created=utc_from(created), cookie=self.cookie,
                          replay_key=replay,
                          replay_until=None if self.timeout is None else
                          utc_from(renewed + self.timeout))
