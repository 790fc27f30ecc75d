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

import _compat_pickle
import base64
import datetime
import functools
import hashlib
import hmac
import io
import json
import logging
import math
import pickle
import time
import weakref
import zlib
from typing import TYPE_CHECKING, Any, Callable, Mapping, NamedTuple

from .encoding import check_value, utcnow
from .exceptions import SessionBackendError, SessionValueError
from .session import SessionState, _checked_key
from .store import StoredSession

if TYPE_CHECKING:
    from pyramid.request import Request
    from pyramid.response import Response

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


class OldSession(dict):
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


def _utc(seconds: Any) -> datetime.datetime | None:
    """Seconds since the epoch as a naive UTC datetime (to the millisecond), or None."""
    try:
        seconds = float(seconds)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(seconds) or seconds < 0:
        return None
    moment = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).replace(tzinfo=None)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _salted_secret(salt: str, secret: str | bytes) -> bytes:
    """The HMAC key of WebOb's SignedSerializer: salt and secret, latin-1 (else UTF-8)."""
    if isinstance(secret, bytes):
        return salt.encode('latin-1') + secret
    try:
        return salt.encode('latin-1') + secret.encode('latin-1')
    except UnicodeEncodeError:
        return salt.encode('utf-8') + secret.encode('utf-8')


def _unsigned(value: bytes, key: bytes, hashalg: str) -> bytes:
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


# -- pickles: the serialized sessions of pyramid_session_redis and Beaker ------------------

class PickledObject:
    """What an object of a class not unpickled here becomes: a value MongoDB cannot store.

    Such a value is dropped, its key named in the import's WARNING.
    """

    _class_name = '?'

    def __new__(cls, *args: Any, **kwargs: Any) -> PickledObject:
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, value: Any) -> None:
        pass

    def extend(self, values: Any) -> None:
        pass

    def __repr__(self) -> str:
        return '<pickled %s object>' % self._class_name


#: The globals a pickled session may name that are unpickled as they are: the
#: types of plain data. Any other class or function becomes a PickledObject;
#: nothing else is imported or called, so unpickling runs no code of the pickle's choosing.
SAFE_GLOBALS = frozenset(
    [('builtins', name) for name in ('set', 'frozenset', 'bytearray', 'complex', 'list',
                                     'dict', 'tuple', 'int', 'float', 'str', 'bytes', 'bool',
                                     'object')]
    + [('datetime', name) for name in ('datetime', 'date', 'time', 'timedelta', 'timezone')]
    + [('decimal', 'Decimal'), ('uuid', 'UUID'), ('collections', 'OrderedDict'),
       ('copyreg', '_reconstructor'), ('_codecs', 'encode')])


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        # Python 2's names, as pickle protocols 0-2 write them (fix_imports).
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        if (module, name) in SAFE_GLOBALS:
            return super().find_class(module, name)
        qualified = '%s.%s' % (module, name)
        return type('pickled %s' % qualified, (PickledObject,), {'_class_name': qualified})


def safe_unpickle(data: bytes) -> Any:
    """``pickle.loads(data)``, but classes and functions other than :data:`SAFE_GLOBALS`
    become :class:`PickledObject` values instead of being imported."""
    return _SafeUnpickler(io.BytesIO(data)).load()


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
        self._key = _salted_secret(salt or '', secret)

    def read(self, raw: str) -> OldSession | None:
        payload = _unsigned(raw.encode('latin-1'), self._key, self.hashalg)
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
        return OldSession(state, self.source, created=_utc(created), cookie=self.cookie,
                          replay_key=replay,
                          replay_until=None if self.timeout is None else
                          _utc(renewed + self.timeout))


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
        self._key = _salted_secret(self.salt, secret)

    def read(self, raw: str) -> OldSession | None:
        session_id = _unsigned(raw.encode('utf-8'), self._key, 'sha512').decode('utf-8')
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
        return OldSession(managed, self.source, created=_utc(created), end=end,
                          cookie=self.cookie)


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
            from beaker.cache import clsmap
            from beaker.crypto import get_crypto_module, get_nonce_size
            from beaker.util import coerce_session_params
        except ImportError:
            raise ImportError('BeakerImporter needs Beaker: pip install '
                              '"pyramid_mongosession[import-beaker]"') from None
        options = self._options(settings)
        try:
            options = coerce_session_params(options)
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
        serializer = options.get('data_serializer', 'pickle')
        if serializer == 'pickle':
            self._loads: Callable[[bytes], Any] = safe_unpickle
        elif serializer == 'json':
            self._loads = lambda data: json.loads(zlib.decompress(data).decode('utf-8'))
        else:
            raise ValueError('Beaker data_serializer must be pickle or json, not %r'
                             % (serializer,))
        self._encrypt_key = options.get('encrypt_key')
        self._validate_key = options.get('validate_key') or ''
        if self._encrypt_key:
            self._crypto = get_crypto_module(options.get('crypto_type') or 'default')
            if not self._crypto.has_aes:
                raise ValueError('the Beaker sessions are encrypted, and no AES library '
                                 'is installed (pip install cryptography)')
            bits = options.get('encrypt_nonce_bits')
            self._nonce_b64 = get_nonce_size(128 if bits is None else bits)[1]
        if not self.cookie_session:
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
            namespace = self.namespace(payload)
            namespace.acquire_read_lock()
            try:
                stored = namespace['session']
            except (KeyError, TypeError):
                stored = None
            finally:
                namespace.release_read_lock()
            if stored is None:
                raise ValueError('no such session in the Beaker store (ended, or expired)')
            data = self._decode(stored)
            if self.end_old:
                end = functools.partial(self._remove, namespace)
        if not isinstance(data, dict):
            raise ValueError('not a Beaker session')
        accessed = data.get('_accessed_time')
        if self.timeout is not None and accessed is not None and \
                time.time() - accessed > self.timeout:
            raise ValueError('the session had expired')
        created = _utc(data.get('_creation_time'))
        values = {key: value for key, value in data.items() if key not in BEAKER_KEYS}
        if not values:
            return None
        replay = None
        if self.cookie_session:
            replay = hmac.new(self._secret, b'replay:' + str(data.get('_id') or payload).encode(
                'utf-8'), 'sha256').hexdigest()
        return OldSession(values, self.source, created=created, end=end, cookie=self.cookie,
                          replay_key=replay,
                          replay_until=_utc(accessed + self.timeout)
                          if replay and accessed is not None and self.timeout is not None
                          else None)

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


# -- the takeover, as the factory runs it --------------------------------------------------

def checked_values(data: Mapping[Any, Any], source: str) -> dict[str, Any]:
    """The values of ``data`` that MongoDB can store, each checked as an assignment would be.

    The others are dropped, with one WARNING that names each key and why.
    """
    kept, dropped = {}, []
    for key, value in data.items():
        try:
            check_value(_checked_key(key), value)
        except SessionValueError as exc:
            dropped.append(str(exc))
            continue
        kept[key] = value
    if dropped:
        log.warning('dropped %d value(s) of an imported %s session that MongoDB cannot '
                    'store: %s', len(dropped), source, '; '.join(dropped))
    return kept


def imported_count(store: Any) -> tuple[int, datetime.datetime | None, datetime.datetime | None]:
    """``(count, first, last)``: how many sessions were imported into ``store``, and when
    the first and the latest were."""
    collection = store.collection()
    found = store._call('read the count of imported sessions', collection.find_one,
                        {'_id': COUNTER_ID})
    if not found:
        return 0, None, None
    return int(found.get('count', 0)), found.get('first'), found.get('last')


class Takeover:
    """What the factory does with its ``importer``: one per factory.

    :meth:`take` turns a request's old session into a stored new one;
    :meth:`register` has the response give the visitor the new cookie and,
    once it does, end the old session, clear its cookie, count the import and
    publish :class:`~pyramid_mongosession.SessionImported`.
    """

    def __init__(self, importer: Callable[[Request], Mapping[Any, Any] | None], store: Any,
                 cookie: Any, accounts: Any, expiry: Any, until: datetime.datetime | None = None,
                 degrade_on_outage: bool = False, cookie_path: str = '/',
                 cookie_domain: str | None = None,
                 is_cacheable: Callable[[Request, Response], bool] | None = None) -> None:
        if not callable(importer):
            raise TypeError('importer must be a callable taking the request')
        self.importer = importer
        self.store = store
        self.cookie = cookie
        self.accounts = accounts
        self.expiry = expiry
        self.until = until
        self.degrade_on_outage = degrade_on_outage
        self.ours = OldCookie(cookie.name, cookie_path or '/', cookie_domain or None)
        self.is_cacheable = is_cacheable
        self._ended_logged = False

    def active(self) -> bool:
        """Whether the importer is still consulted (``until`` has not passed)."""
        if self.until is None or utcnow() < self.until:
            return True
        if not self._ended_logged:
            self._ended_logged = True
            log.info('the import of old sessions ended at %s (import_until)', self.until)
        return False

    def take(self, request: Request) -> tuple[SessionState, OldSession] | None:
        """The request's old session, stored as a new one: ``(state, old)``, or None."""
        if not self.active():
            return None
        try:
            found = self.importer(request)
        except Exception:
            log.warning('the importer failed; nothing imported', exc_info=True)
            return None
        if found is None:
            return None
        old = found if isinstance(found, OldSession) else OldSession(
            found, str(getattr(self.importer, 'source', None)
                       or getattr(self.importer, '__qualname__', type(self.importer).__name__)))
        try:
            return self._store(request, old)
        except SessionBackendError as exc:
            if not self.degrade_on_outage:
                raise
            log.warning('imported nothing (degrade_on_outage): %s', exc)
            return None

    def _store(self, request: Request, old: OldSession) -> tuple[SessionState, OldSession] | None:
        from .cookie import new_session_id
        now = utcnow()
        data = checked_values(old, old.source)
        created = old.created if old.created is not None and old.created <= now else now
        expires = self.expiry.at(created, now)
        if expires is not None and expires <= now:
            log.info('imported nothing: the old %s session is older than absolute_timeout',
                     old.source)
            return None
        if old.replay_key is not None and not self._mark(old, now):
            log.info('imported nothing: an old %s session cookie taken over already was '
                     'presented again (%s)', old.source, request.client_addr)
            return None
        state = SessionState(new_session_id(), True)
        state.request = weakref.ref(request)
        state.accounts = self.accounts
        state.id = state.cookie_id
        account = self.accounts.new_document(state, now)
        try:
            self.store.insert(state.id, data, created, expires, account=account)
        except SessionValueError as exc:
            self._unmark(old)
            log.warning('imported nothing from an old %s session: %s', old.source, exc)
            return None
        except BaseException:
            self._unmark(old)
            raise
        user = data.get(self.store.user_key) if self.store.user_key is not None else None
        state.stored = StoredSession(data, created, expires, 1, account=account, user=user)
        state.found = True
        state.data = data
        state.created = created
        state.expires = expires
        self.accounts.created(state, account)
        return state, old

    def _mark(self, old: OldSession, now: datetime.datetime) -> bool:
        """Record that ``old`` is imported; False if it was already (a replay)."""
        from pymongo.errors import DuplicateKeyError
        marker = {'_id': MARKER_PREFIX + str(old.replay_key), 'expires': old.replay_until,
                  'imported': now}
        collection = self.store.collection()
        try:
            self.store._call('record an imported session', collection.insert_one, marker)
        except SessionBackendError as exc:
            if isinstance(exc.__cause__, DuplicateKeyError):
                return False
            raise
        return True

    def _unmark(self, old: OldSession) -> None:
        if old.replay_key is None:
            return
        try:
            self.store._call('forget an imported session', self.store.collection().delete_one,
                             {'_id': MARKER_PREFIX + str(old.replay_key)})
        except SessionBackendError as exc:
            log.warning('%s; that old session cookie cannot be imported again', exc)

    def register(self, request: Request, state: SessionState, old: OldSession) -> None:
        """Finish the takeover on the response: after the end of the request has run
        (register this after :class:`~pyramid_mongosession.lifecycle.EndOfRequest`)."""
        request.add_response_callback(
            lambda request, response: self.finish(request, response, state, old))

    def finish(self, request: Request, response: Response, state: SessionState,
               old: OldSession) -> None:
        if self.is_cacheable is not None and self.is_cacheable(request, response):
            # No cookie may go out: undo the import; the old session stays.
            self.store.remove(state.cookie_id)
            self._unmark(old)
            return
        if state.id is not None and not self.cookie._sets_cookie(response):
            max_age = state.timeout if state.timeout is not None else self.cookie.max_age
            self.cookie.set(response, state.id, max_age)
        if old.end is not None:
            try:
                old.end()
            except Exception as exc:
                log.warning('could not end the old %s session (it ends with its own '
                            'timeout): %r', old.source, exc)
        if old.cookie is not None and old.cookie != self.ours:
            response.delete_cookie(old.cookie.name, path=old.cookie.path,
                                   domain=old.cookie.domain)
        self._count()
        self._notify(request, state, old)

    def _count(self) -> None:
        now = utcnow()
        try:
            self.store._call('count an imported session', self.store.collection().update_one,
                             {'_id': COUNTER_ID},
                             {'$inc': {'count': 1}, '$min': {'first': now},
                              '$max': {'last': now}}, upsert=True)
        except SessionBackendError as exc:
            log.warning('the count of imported sessions missed one: %s', exc)

    def _notify(self, request: Request, state: SessionState, old: OldSession) -> None:
        from .accounts import SessionImported, _wants
        registry = getattr(request, 'registry', None)
        if registry is None or not _wants(registry, SessionImported):
            return
        session = request.session
        userid = state.data.get(self.store.user_key) if self.store.user_key else None
        registry.notify(SessionImported(request, session, old.source,
                                        self.accounts.handle(state), userid))
