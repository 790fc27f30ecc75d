"""The session cookie: a signed session id in, a signed session id out.

The cookie carries nothing but the id. Signing and encoding are WebOb's
(:class:`webob.cookies.SignedCookieProfile`), so a cookie whose signature does
not verify is rejected here, before anything asks the database about it.
"""
import logging
import re
import secrets

from webob.cookies import SignedCookieProfile

log = logging.getLogger(__name__)

#: 32 random bytes (256 bits) from the operating system's CSPRNG, base64url.
ID_BYTES = 32
_ID_PATTERN = re.compile(r'[A-Za-z0-9_-]{43}\Z')

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
SAMESITE_VALUES = ('Strict', 'Lax', 'None')


def new_session_id():
    """Return a fresh, unguessable session id."""
    return secrets.token_urlsafe(ID_BYTES)


class _SessionIdSerializer:
    """Turns a session id into cookie payload bytes and back, checking its shape."""

    def dumps(self, session_id):
        return session_id.encode('ascii')

    def loads(self, payload):
        session_id = payload.decode('ascii')  # UnicodeDecodeError is a ValueError
        if not _ID_PATTERN.match(session_id):
            raise ValueError('not a session id')
        return session_id


class SessionCookie:
    """Reads and writes the signed session-id cookie of one application."""

    def __init__(self, secret, name='session', max_age=None, path='/',
                 domain=None, secure=False, httponly=True, samesite='Lax'):
        if not isinstance(name, str) or not _TOKEN.match(name):
            raise ValueError('cookie_name %r is not a valid cookie name (RFC 6265 token)' % (name,))
        if not secret:
            raise ValueError('secret must be a non-empty string')
        if samesite is not None and samesite not in SAMESITE_VALUES:
            raise ValueError(
                'cookie_samesite must be one of %s or None, not %r'
                % (', '.join(SAMESITE_VALUES), samesite))
        if samesite == 'None' and not secure:
            raise ValueError('cookie_samesite = None requires cookie_secure = true')
        self.name = name
        self.max_age = max_age
        self._profile = SignedCookieProfile(
            secret, 'pyramid_mongosession', name,
            secure=secure, max_age=max_age, httponly=httponly,
            samesite=samesite and samesite.encode('ascii'), path=path,
            domains=[domain] if domain else None,
            serializer=_SessionIdSerializer(),
        )

    def read(self, request):
        """Return the session id the request's cookie carries, or None.

        A missing cookie, a bad signature and a malformed id all read as no
        cookie; the last two are logged at INFO for operators.
        """
        raw = self.sent(request)
        if raw is None:
            return None
        try:
            return self._profile.serializer.loads(raw.encode('latin-1'))
        except ValueError:
            log.info('ignored a session cookie that failed verification (%s, %d bytes)',
                     request.client_addr, len(raw))
            return None

    def sent(self, request):
        """The session cookie's raw value as the request sent it, or None.

        A Cookie header that is not UTF-8 (WebOb cannot parse it) counts as
        no cookie.
        """
        try:
            return request.cookies.get(self.name)
        except UnicodeDecodeError:
            log.info('ignored a Cookie header that is not UTF-8 (%s)', request.client_addr)
            return None

    def set(self, response, session_id):
        response.headerlist.extend(self._profile.get_headers(session_id))
        _vary_on_cookie(response)

    def clear(self, response):
        response.headerlist.extend(self._profile.get_headers(None))
        _vary_on_cookie(response)


def _vary_on_cookie(response):
    # A response that sets a session cookie is personal: caches must key it on Cookie.
    vary = response.vary or ()
    if 'Cookie' not in vary:
        response.vary = tuple(vary) + ('Cookie',)
