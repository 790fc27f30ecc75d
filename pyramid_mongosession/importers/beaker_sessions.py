"""pyramid_beaker: Beaker's sessions, on any of its back ends."""
from __future__ import annotations

import base64
import functools
import hmac
import json
import logging
import time
import zlib
from typing import Any, Callable, Mapping


from .old import (
    BEAKER, BEAKER_BACKEND_MARGIN, BEAKER_COOKIE, BEAKER_KEYS, CookieImporter, OldSession, utc_from)
from .pickles import safe_unpickle

log = logging.getLogger(__name__)


class BeakerImporter(CookieImporter):
    """Sessions of pyramid_beaker (needs the ``import-beaker`` extra).

    ``settings`` are the old application's settings, from which the
    ``session.*`` and ``beaker.session.*`` ones are read as pyramid_beaker
    reads them, or the Beaker session options themselves (``type``, ``url``,
    ``secret``, ``key``, ``timeout``, ``data_serializer``, ``encrypt_key``,
    ``validate_key``...). Every back end Beaker has is read through Beaker's
    own namespace classes (``ext:mongodb``, ``ext:redis``, ``ext:database``,
    ``file``, ``dbm``...), and ``type = cookie`` sessions from the cookie.

    The cookie must be signed (``secret``, or ``validate_key`` for cookie
    sessions): Beaker without a secret sets bare session ids, which this
    importer does not trust. The signature (HMAC-SHA1, as Beaker's
    SignedCookie) is verified before the store is read; a session idle
    longer than ``timeout`` imports nothing. Beaker's own keys
    (``_accessed_time``, ``_creation_time``, ``_domain``, ``_path``, ``_id``)
    are not data: the creation time becomes the new session's. With
    ``end_old`` the old session is deleted once the visitor has the new
    cookie (cookie sessions cannot be: their replay is refused instead).
    """

    source = BEAKER
    #: Session's own keyword arguments; the rest of the options go to the namespace.
    SESSION_PARAMETERS = frozenset((
        'id', 'invalidate_corrupt', 'use_cookies', 'type', 'data_dir', 'key', 'timeout',
        'save_accessed_time', 'cookie_expires', 'cookie_domain', 'cookie_path',
        'data_serializer', 'secret', 'secure', 'namespace_class', 'httponly', 'encrypt_key',
        'validate_key', 'encrypt_nonce_bits', 'crypto_type', 'samesite',
        # pyramid_beaker's own, popped before Beaker sees them
        'cookie_on_exception', 'constant_csrf_token', 'session_class'))

    def __init__(self, settings: Mapping[str, Any], end_old: bool = True) -> None:
        try:
            from beaker.util import coerce_session_params
        except ImportError:
            raise ImportError('BeakerImporter needs Beaker: pip install '
                              '"pyramid_mongosession[import-beaker]"') from None
        try:
            options = coerce_session_params(self._options(settings))
        except Exception as exc:   # Beaker raises bare Exceptions
            raise ValueError('Beaker session settings: %s' % exc) from None
        kind = options.get('type') or ('file' if options.get('data_dir') else 'memory')
        self.cookie_session = kind == 'cookie'
        secret = options.get('validate_key' if self.cookie_session else 'secret')
        if not secret:
            raise ValueError('Beaker sessions without %s have unsigned cookies, which are not '
                             'taken over' % ('validate_key' if self.cookie_session
                                             else 'session.secret'))
        super().__init__(options.get('key') or BEAKER_COOKIE, options.get('cookie_path') or '/',
                         options.get('cookie_domain'))
        self._secret = secret.encode('utf-8')
        self.timeout = options.get('timeout')
        self.end_old = end_old
        self._loads = self._deserializer(options.get('data_serializer', 'pickle'))
        self._encryption(options)
        if not self.cookie_session:
            self._store(options, kind)

    @staticmethod
    def _deserializer(serializer: str) -> Callable[[bytes], Any]:
        if serializer == 'pickle':
            return safe_unpickle
        if serializer == 'json':
            return lambda data: json.loads(zlib.decompress(data).decode('utf-8'))
        raise ValueError('Beaker data_serializer must be pickle or json, not %r' % (serializer,))

    def _encryption(self, options: Mapping[str, Any]) -> None:
        """How Beaker encrypted the sessions, if it did (``encrypt_key``)."""
        from beaker.crypto import get_crypto_module, get_nonce_size
        self._encrypt_key = options.get('encrypt_key')
        self._validate_key = options.get('validate_key') or ''
        if not self._encrypt_key:
            return
        self._crypto = get_crypto_module(options.get('crypto_type') or 'default')
        if not self._crypto.has_aes:
            raise ValueError('the Beaker sessions are encrypted, and no AES library '
                             'is installed (pip install cryptography)')
        bits = options.get('encrypt_nonce_bits')
        self._nonce_b64 = get_nonce_size(128 if bits is None else bits)[1]

    def _store(self, options: Mapping[str, Any], kind: str) -> None:
        """Where Beaker kept the sessions: its namespace class and arguments."""
        from beaker.cache import clsmap
        self._namespace_class = options.get('namespace_class') or clsmap[kind]
        self._data_dir = options.get('data_dir')
        args = {name: value for name, value in options.items()
                if name not in self.SESSION_PARAMETERS}
        if self.timeout is not None:
            args['timeout'] = self.timeout + BEAKER_BACKEND_MARGIN
        self._namespace_args = args

    @staticmethod
    def _options(settings: Mapping[str, Any]) -> dict[str, Any]:
        prefixes = ('session.', 'beaker.session.')
        prefixed = {key: value for key, value in settings.items() if key.startswith(prefixes)}
        if not prefixed:
            return dict(settings)
        options = {}
        for key, value in prefixed.items():
            options[key.split('session.', 1)[1]] = value
        return options

    def namespace(self, session_id: str) -> Any:
        """Beaker's namespace of the session ``session_id``, made as Beaker's Session makes it."""
        return self._namespace_class(session_id, data_dir=self._data_dir,
                                     digest_filenames=False, **self._namespace_args)

    def read(self, raw: str) -> OldSession | None:
        value = raw.strip('"')
        signature, payload = value[:40], value[40:]
        expected = hmac.new(self._secret, payload.encode('utf-8'), 'sha1').hexdigest()
        if not payload or not hmac.compare_digest(expected.encode('ascii'),
                                                  signature.encode('utf-8')):
            raise ValueError('bad signature')
        end: Callable[[], Any] | None = None
        if self.cookie_session:
            data = self._decode(payload.encode('utf-8'))
        else:
            data, end = self._stored(payload)
        if not isinstance(data, dict):
            raise ValueError('not a Beaker session')
        accessed = data.get('_accessed_time')
        if self.timeout is not None and accessed is not None and \
                time.time() - accessed > self.timeout:
            raise ValueError('the session had expired')
        values = {key: value for key, value in data.items() if key not in BEAKER_KEYS}
        if not values:
            return None
        replay, until = self._replay(data, payload, accessed)
        return OldSession(values, self.source, created=utc_from(data.get('_creation_time')),
                          end=end, cookie=self.cookie, replay_key=replay, replay_until=until)

    def _stored(self, session_id: str) -> tuple[Any, Callable[[], Any] | None]:
        """The session Beaker's store holds under ``session_id``, and how to end it."""
        namespace = self.namespace(session_id)
        namespace.acquire_read_lock()
        try:
            stored = namespace['session']
        except (KeyError, TypeError):
            stored = None
        finally:
            namespace.release_read_lock()
        if stored is None:
            raise ValueError('no such session in the Beaker store (ended, or expired)')
        return self._decode(stored), (functools.partial(self._remove, namespace)
                                      if self.end_old else None)

    def _replay(self, data: dict[str, Any], payload: str,
                accessed: float | None) -> tuple[str | None, Any]:
        """A cookie session's replay key, and until when it is refused (else None, None)."""
        if not self.cookie_session:
            return None, None
        replay = hmac.new(self._secret, b'replay:' + str(data.get('_id') or payload).encode(
            'utf-8'), 'sha256').hexdigest()
        until = (utc_from(accessed + self.timeout)
                 if accessed is not None and self.timeout is not None else None)
        return replay, until

    def _decode(self, stored: Any) -> Any:
        """The session dict from what Beaker stored: base64 (a str), maybe AES, then the
        serializer, as Beaker's ``Session._decrypt_data``."""
        try:
            if isinstance(stored, bytes):
                stored = stored.decode('ascii')
            if self._encrypt_key:
                from beaker.crypto import generateCryptoKeys
                nonce = stored[:self._nonce_b64]
                key = generateCryptoKeys(self._encrypt_key, self._validate_key + nonce, 1,
                                         self._crypto.getKeyLength())
                data = self._crypto.aesDecrypt(base64.b64decode(stored[self._nonce_b64:]), key)
            else:
                data = base64.b64decode(stored)
            return self._loads(data)
        except Exception as exc:
            raise ValueError('not a Beaker session: %r' % exc) from None

    @staticmethod
    def _remove(namespace: Any) -> None:
        namespace.acquire_write_lock()
        try:
            del namespace['session']
        finally:
            namespace.release_write_lock()
