"""The session cookie: a signed session id in, a signed session id out.

The cookie carries nothing but the id, signed with HMAC-SHA512. Cookies are
written by WebOb's :class:`webob.cookies.SignedCookieProfile` and verified
here in the same format, so that besides the current ``secret`` each of the
``old_secrets`` can be tried: one HMAC per secret tried, the current secret
first, compared with :func:`hmac.compare_digest`. A cookie that does not
verify is rejected here, before anything asks the database about it; one that
verifies only with an old secret is signed again with the current secret on
the response, once the end of the request has found its session live.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import re
import secrets
import threading
from typing import TYPE_CHECKING, Iterable, Union

from webob.cookies import SignedCookieProfile

if TYPE_CHECKING:
    from pyramid.request import Request
    from pyramid.response import Response

#: A cookie signing secret.
Secret = Union[str, bytes]

log = logging.getLogger(__name__)

#: 32 random bytes (256 bits) from the operating system's CSPRNG, base64url.
ID_BYTES = 32
_ID_PATTERN = re.compile(r'[A-Za-z0-9_-]{43}\Z')

#: The shortest secret accepted, in bytes (UTF-8): 256 bits, if random.
MIN_SECRET_BYTES = 32
#: How to make a secret, as the error for a short one says.
MAKE_SECRET = 'python3 -c "import secrets; print(secrets.token_urlsafe(48))"'

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
SAMESITE_VALUES = ('Strict', 'Lax', 'None')

# The signature, as WebOb's SignedSerializer makes it: HMAC-SHA512 keyed with
# the salt followed by the secret, over the payload; the cookie value is the
# unpadded base64url of the signature followed by the payload (the id).
_SALT = 'pyramid_mongosession'
_HASH = 'sha512'
_SIGNATURE_SIZE = hashlib.new(_HASH).digest_size
_SIGNED_SIZE = _SIGNATURE_SIZE + 43
_FROM_URLSAFE = bytes.maketrans(b'-_', b'+/')
#: Any well-formed id: signed once, to find where an id goes in the headers.
_SAMPLE_ID = 'A' * 43
#: How many cookie values that verified each SessionCookie remembers (see verify).
VERIFIED_KEPT = 1024


def new_session_id() -> str:
    """Return a fresh, unguessable session id."""
    return secrets.token_urlsafe(ID_BYTES)


def salted_key(salt: str, secret: Secret) -> bytes:
    """The HMAC key WebOb's :class:`~webob.cookies.SignedSerializer` derives from ``salt``
    and ``secret``: both latin-1 (else UTF-8)."""
    if isinstance(secret, bytes):
        return salt.encode('latin-1') + secret
    try:
        return salt.encode('latin-1') + secret.encode('latin-1')
    except UnicodeEncodeError:
        return salt.encode('utf-8') + secret.encode('utf-8')


def signing_key(secret: Secret) -> bytes:
    """The HMAC key of this package's cookie for ``secret``."""
    return salted_key(_SALT, secret)


def check_secret(secret: Secret, name: str = 'secret') -> None:
    """Refuse a secret shorter than :data:`MIN_SECRET_BYTES` (ValueError), or not a string."""
    if not isinstance(secret, (str, bytes)):
        raise TypeError('%s must be a string, not %s' % (name, type(secret).__name__))
    size = len(secret.encode('utf-8', 'surrogatepass') if isinstance(secret, str) else secret)
    if size < MIN_SECRET_BYTES:
        raise ValueError('%s is %d byte%s long: a signing secret must be at least %d bytes; '
                         'make one with: %s' % (name, size, '' if size == 1 else 's',
                                                MIN_SECRET_BYTES, MAKE_SECRET))


def _old_signing_keys(secret: Secret,
                      old_secrets: Iterable[Secret] | None) -> tuple[bytes, ...]:
    """The keys of ``old_secrets``, in order, checked against each other and ``secret``."""
    if old_secrets is None:
        return ()
    if isinstance(old_secrets, (str, bytes)):
        # Iterating a string would accept each of its characters as a secret.
        raise TypeError('old_secrets must be a list of secrets, not a string')
    current = signing_key(secret)
    keys: list[bytes] = []
    for number, old in enumerate(old_secrets, 1):
        if not isinstance(old, (str, bytes)):
            raise TypeError('old_secrets must hold strings, not %s' % type(old).__name__)
        check_secret(old, 'old_secrets: secret %d' % number)
        key = signing_key(old)
        if key == current:
            raise ValueError('old_secrets must not contain the current secret')
        if key not in keys:
            keys.append(key)
    return tuple(keys)


class _SessionIdSerializer:
    """Turns a session id into cookie payload bytes and back, checking its shape."""

    def dumps(self, session_id: str) -> bytes:
        return session_id.encode('ascii')

    def loads(self, payload: bytes) -> str:
        session_id = payload.decode('ascii')  # UnicodeDecodeError is a ValueError
        if not _ID_PATTERN.match(session_id):
            raise ValueError('not a session id')
        return session_id


class SessionCookie:
    """Reads and writes the signed session-id cookie of one application.

    ``secret`` signs; ``old_secrets`` (a list) are still accepted when
    verifying, after ``secret``.
    """

    def __init__(self, secret: Secret, name: str = 'session', max_age: int | None = None,
                 path: str = '/', domain: str | None = None, secure: bool = False,
                 httponly: bool = True, samesite: str | None = 'Lax',
                 old_secrets: Iterable[Secret] | None = None) -> None:
        if not isinstance(name, str) or not _TOKEN.match(name):
            raise ValueError('cookie_name %r is not a valid cookie name: use letters, digits '
                             'and !#$%%&\'*+-.^_`|~ only (an RFC 6265 token)' % (name,))
        check_secret(secret)
        if samesite is not None and samesite not in SAMESITE_VALUES:
            raise ValueError(
                'cookie_samesite must be %s or %s (or empty: no SameSite attribute), not %r'
                % (', '.join(SAMESITE_VALUES[:-1]), SAMESITE_VALUES[-1], samesite))
        if samesite == 'None' and not secure:
            raise ValueError('cookie_samesite = None requires cookie_secure = true (browsers '
                             'drop a SameSite=None cookie that is not Secure): set '
                             'cookie_secure = true and serve over HTTPS, or cookie_samesite '
                             '= Lax')
        self.name = name
        self.max_age = max_age
        self._ids = _SessionIdSerializer()
        self._profile = SignedCookieProfile(
            secret, _SALT, name, hashalg=_HASH,
            secure=secure, max_age=max_age, httponly=httponly,
            samesite=samesite and samesite.encode('ascii'), path=path,
            domains=[domain] if domain else None,
            serializer=self._ids,
        )
        # The current secret's key first: a cookie it signed costs one HMAC.
        self._keys = (signing_key(secret),) + _old_signing_keys(secret, old_secrets)
        # Keyed once: each cookie then costs a copy and one update, not a key schedule.
        self._macs = tuple(hmac.new(key, digestmod=_HASH) for key in self._keys)
        self._verified: dict[str, tuple[str, int]] = {}   # see verify
        self._verified_lock = threading.Lock()
        # WebOb writes the headers. Those that do not depend on the clock (the
        # one that clears the cookie, and one without Max-Age) are written once,
        # here; an id is then signed into a copy, at a fraction of the cost.
        self._clearing = self._profile.get_headers(None)
        sample = self._signed(_SAMPLE_ID)
        self._without_max_age = [(name, value.split(sample)) for name, value
                                 in self._profile.get_headers(_SAMPLE_ID, max_age=None)]
        # Our cookie, alone in the header: a name at the start or after ';' (see sent).
        self._ours = re.compile(r'(?:^|;)[ \t]*%s[ \t]*=[ \t]*([A-Za-z0-9_-]*)[ \t]*(?:;|\Z)'
                                % re.escape(name))

    def _signed(self, session_id: str) -> str:
        """The cookie value for ``session_id``, as WebOb's SignedSerializer makes it."""
        payload = self._ids.dumps(session_id)
        mac = self._macs[0].copy()
        mac.update(payload)
        return base64.urlsafe_b64encode(mac.digest() + payload).rstrip(b'=').decode('ascii')

    @property
    def secrets_accepted(self) -> int:
        """How many secrets a cookie is verified with: ``secret`` and ``old_secrets``."""
        return len(self._keys)

    def verify(self, value: str) -> tuple[str, int]:
        """Return ``(session_id, index)`` for a cookie value, or raise :exc:`ValueError`.

        ``index`` is 0 when the current secret signed the value, ``n`` when
        the ``n``-th old secret did. The value's shape is checked first, at
        no cost; then one HMAC per secret tried, the current one first,
        each compared with :func:`hmac.compare_digest`.

        The last :data:`VERIFIED_KEPT` values that verified are remembered,
        with what they said: a returning visitor's next request finds its
        cookie there, exactly as sent, instead of computing an HMAC again
        (10 µs of CPU inside a request). A value that did not verify is
        never remembered, and these secrets are this object's: what a
        value says cannot change while it is kept.
        """
        known = self._verified.get(value)
        if known is not None:
            return known
        found = self._verified_anew(value)
        with self._verified_lock:
            kept = self._verified
            if len(kept) >= VERIFIED_KEPT:
                del kept[next(iter(kept))]   # the oldest
            kept[value] = found
        return found

    def _verified_anew(self, value: str) -> tuple[str, int]:
        data = value.encode('latin-1')  # UnicodeEncodeError is a ValueError
        # base64.urlsafe_b64decode, without its two layers of checks and copies.
        signed = binascii.a2b_base64(data.translate(_FROM_URLSAFE) + b'=' * (-len(data) % 4))
        if len(signed) != _SIGNED_SIZE:
            raise ValueError('not a signed session id')
        signature, payload = signed[:_SIGNATURE_SIZE], signed[_SIGNATURE_SIZE:]
        session_id = self._ids.loads(payload)
        for index, keyed in enumerate(self._macs):
            mac = keyed.copy()
            mac.update(payload)
            if hmac.compare_digest(mac.digest(), signature):
                return session_id, index
        raise ValueError('bad signature')

    def read(self, request: Request) -> tuple[str | None, bool]:
        """Return ``(session_id, resign)`` for the request's cookie: the id it carries,
        or None, and whether only one of ``old_secrets`` signed it.

        A missing cookie, a bad signature and a malformed id all read as no
        cookie; the last two are logged at INFO for operators. A cookie that
        an old secret signed is sent again, signed with the current secret, by
        the end of the request, and only once the session it names is known
        to be live (see :mod:`pyramid_mongosession.lifecycle`): an id that
        has expired, ended or been retired is never signed anew.
        """
        raw = self.sent(request)
        if raw is None:
            return None, False
        try:
            session_id, index = self.verify(raw)
        except ValueError:
            log.info('ignored a session cookie that failed verification (%s, %d bytes)',
                     request.client_addr, len(raw))
            return None, False
        return session_id, index > 0

    def sent(self, request: Request) -> str | None:
        """The session cookie's raw value as the request sent it, or None.

        The header is read as WebOb reads it (the last of several cookies of
        that name wins), but without parsing every other cookie of the site
        when ours appears once, plainly (the common case). A Cookie header
        that WebOb must parse and that is not UTF-8 counts as no cookie.
        """
        header = request.environ.get('HTTP_COOKIE')
        if not header or self.name not in header:
            return None
        if '"' not in header and '\\' not in header and header.count(self.name) == 1:
            # One mention, no quoted or escaped ';' that could hide it: what it names is ours.
            found = self._ours.search(header)
            if found is not None:
                return found.group(1)
        try:
            value: str | None = request.cookies.get(self.name)
            return value
        except UnicodeDecodeError:
            log.info('ignored a Cookie header that is not UTF-8 (%s)', request.client_addr)
            return None

    def set(self, response: Response, session_id: str, max_age: float | None = None) -> None:
        """Set the cookie to ``session_id``, replacing any Set-Cookie for it already there.

        ``max_age`` (seconds) makes it persistent; None gives ``cookie_max_age``.
        """
        if max_age is None and self.max_age is None:
            signed = self._signed(session_id)
            headers = [(name, signed.join(parts)) for name, parts in self._without_max_age]
        elif max_age is None:
            headers = self._profile.get_headers(session_id)
        else:
            headers = self._profile.get_headers(session_id, max_age=int(max_age))
        self._put(response, headers)

    def clear(self, response: Response) -> None:
        """Clear the cookie, replacing any Set-Cookie for it already there."""
        self._put(response, list(self._clearing))

    def sets_cookie(self, response: Response) -> bool:
        """Whether ``response`` sets (or clears) the session cookie already."""
        return any(self._names_cookie(header) for header in response.headerlist)

    def _names_cookie(self, header: tuple[str, str]) -> bool:
        name, value = header
        return name.lower() == 'set-cookie' and value.split('=', 1)[0].strip() == self.name

    def _put(self, response: Response, headers: list[tuple[str, str]]) -> None:
        headerlist = response.headerlist
        # One look at the headers (most responses have a handful, and neither a
        # Set-Cookie of ours nor a Vary): replace ours; a response that sets a
        # session cookie is personal, so caches must key it on Cookie.
        ours = vary = False
        for name, value in headerlist:
            lowered = name.lower()
            if lowered == 'set-cookie':
                ours = ours or value.split('=', 1)[0].strip() == self.name
            elif lowered == 'vary':
                vary = True
        if ours:
            headerlist[:] = [header for header in headerlist if not self._names_cookie(header)]
        headerlist.extend(headers)
        if not vary:
            headerlist.append(('Vary', 'Cookie'))   # no Vary header to parse
            return
        kept = response.vary or ()
        if 'Cookie' not in kept:
            response.vary = tuple(kept) + ('Cookie',)
