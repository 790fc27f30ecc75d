"""The session document: its schema, its ids and handles, and how data becomes fields.

One document per session::

    {
        "_id": "<sha256 hex digest of the session id>",
        "data": {<the session's keys, as native BSON>},
        "created": <datetime, UTC>,
        "expires": <datetime, UTC, or null when no timeout applies>,
        "v": <int, incremented by every write>,
        "size": <int: at least the size of "data" in BSON, kept by every write>,
        "key": <with encryption_keys: the id of the key every value is sealed with>,
        "timeout": <the session's own idle timeout in seconds, when it has one>,
        "handle": "<the session's handle: stable, not secret>",
        "last_seen": <datetime, UTC: the last write>,
        "user": <the user id, when the session has one>,
        "client": {"agent": ..., "address": ...}
    }

The id itself is never stored, only its digest, so read access to the
collection yields no cookie that would log anybody in. ``expires`` carries a
TTL index, and every read checks it too, because MongoDB's TTL monitor runs
only once a minute and some servers have no TTL indexes at all.

``handle``, ``last_seen``, ``user`` and ``client`` serve users' lists of
their sessions (:mod:`pyramid_mongosession.accounts`): ``user`` mirrors the
session key ``user_key`` whenever a write changes it (a keyed hash of it
with ``encryption_keys``, which seal ``client`` too), and a partial index on
``user`` and ``expires`` finds a user's sessions; sessions without a user
stay out of it.

``size`` and ``key`` let a write that did not read the session keep it
right (see :mod:`pyramid_mongosession.store`): ``size`` only ever
overestimates the data, and ``key`` names the encryption key that sealed
every value.

A document with ``retired`` instead of ``data`` is the tombstone of an id
that ``change_id`` retired (``rotation_grace``): its ``expires`` says until
when. No filter of a write, a move or a removal matches it.
"""
from __future__ import annotations

import base64
import datetime
import functools
import hashlib
import logging
from typing import TYPE_CHECKING, Any, Callable, Mapping

import bson

from .crypto import DecryptionError
from .encoding import (
    MAX_DOCUMENT_SIZE, check_user_id, check_value, decode_value, encode_value, field_name,
    is_duration, is_user_id, session_key)
from .exceptions import SessionValueError

if TYPE_CHECKING:
    from .crypto import ValueCipher

log = logging.getLogger(__name__)

#: The account fields of a session document (see :mod:`pyramid_mongosession.accounts`).
HANDLE, LAST_SEEN, USER, CLIENT = 'handle', 'last_seen', 'user', 'client'
ACCOUNT_FIELDS = (HANDLE, LAST_SEEN, USER, CLIENT)
#: Room in a document for what is not session data (_id, times, version, account fields).
DOCUMENT_HEADROOM = 1024
#: The most session data one document may hold, in bytes of BSON.
MAX_DATA_SIZE = MAX_DOCUMENT_SIZE - DOCUMENT_HEADROOM
#: What encryption adds to a value: version, key id, nonce and tag.
ENCRYPTION_OVERHEAD = 40


@functools.lru_cache(maxsize=1024)
def document_id(session_id: str) -> str:
    """The ``_id`` under which a session id's document is stored (the recent ones
    remembered: a request names its document two or three times, and a returning
    visitor's next request the same one)."""
    return hashlib.sha256(session_id.encode('ascii')).hexdigest()


def session_handle(doc_id: str) -> str:
    """The handle of a session first stored under the document id ``doc_id``.

    128 bits of a SHA-256 digest of the document id (itself the digest of the
    session id), base64url: it names the session to its user without being
    anything that could log in. It is stored in the document and carried
    over by ``change_id``, so it stays the same for the session's life.
    """
    digest = hashlib.sha256(b'pyramid_mongosession handle\x00' + doc_id.encode('ascii')).digest()
    return base64.urlsafe_b64encode(digest[:16]).rstrip(b'=').decode('ascii')


def live(session_id: str, now: datetime.datetime) -> dict[str, Any]:
    """The filter of a write: the session's document, if live (not expired, not retired)."""
    return {'_id': document_id(session_id), 'expires': {'$not': {'$lte': now}},
            'retired': {'$exists': False}}


def not_retired(session_id: str) -> dict[str, Any]:
    """The filter of a removal: the session's document, unless it is a tombstone."""
    return {'_id': document_id(session_id), 'retired': {'$exists': False}}


class StoredSession:
    """A session as loaded: its data and its bookkeeping.

    ``account`` holds the document's account fields as stored (``handle``,
    ``last_seen``, ``user``, ``client``: those present); ``user`` is the value
    of the session key ``user_key`` as loaded, or None.
    """

    __slots__ = ('data', 'created', 'expires', 'version', 'stale_keys', 'size', 'timeout',
                 'account', 'user')

    def __init__(self, data: dict[str, Any], created: datetime.datetime | None,
                 expires: datetime.datetime | None, version: int,
                 stale_keys: list[str] | tuple[str, ...] = (), size: int | None = None,
                 timeout: float | None = None, account: dict[str, Any] | None = None,
                 user: Any = None) -> None:
        self.data = data
        self.created = created
        self.expires = expires
        self.version = version
        #: Keys whose values are encrypted with a retired key: rewrite them.
        self.stale_keys = stale_keys
        #: The document's ``size`` field (a bound of the data's size in BSON), or None.
        self.size = size
        #: The session's own idle timeout in seconds (``options['timeout']``), or None.
        self.timeout = timeout
        self.account = account if account is not None else {}
        self.user = user


class RetiredSession:
    """What a load finds under an id that ``change_id`` retired lately."""

    __slots__ = ('until',)

    def __init__(self, until: datetime.datetime) -> None:
        #: When the id stops being treated as retired (``rotation_grace`` after).
        self.until = until


def _own_timeout(timeout: Any) -> float | None:
    """A stored ``timeout``, if it is one a session may have (else None, logged)."""
    if not is_duration(timeout):
        log.warning('ignored a stored session timeout that is not a number of seconds '
                    'a session may have: %r', timeout)
        return None
    seconds: float = timeout
    return seconds


#: ``expired(handle, user)``: told of a session found expired.
ExpiredHook = Callable[[Any, Any], None]


class DocumentCodec:
    """Session data to document fields and back: names escaped, values checked,
    sizes bounded, values sealed with ``cipher`` (encryption at rest) if given.

    ``user_key`` is the session key of the user id (None: sessions have no
    user); ``max_size`` the most bytes of BSON a session may hold.
    """

    def __init__(self, cipher: ValueCipher | None = None, user_key: str | None = None,
                 max_size: int | None = None) -> None:
        self.cipher = cipher
        self.user_key = user_key
        self.max_size = max_size

    # -- data -------------------------------------------------------------------------

    def fields(self, session_id: str, values: Mapping[str, Any],
               prefix: str) -> tuple[dict[str, Any], int]:
        """Session keys and values as stored, and an upper bound of their size in BSON.

        Names are escaped and values encrypted if asked; every value is
        checked first (:func:`~pyramid_mongosession.encoding.check_value`),
        so a value no server stores is refused here, naming its key.
        """
        fields, size = {}, 0
        cipher = self.cipher
        owner = document_id(session_id) if cipher is not None else ''
        for key, value in values.items():
            name = prefix + field_name(key)
            size += check_value(key, value) + len(name.encode('utf-8', 'surrogatepass')) + 2
            if cipher is not None:
                value = cipher.encrypt(owner, key, encode_value(value))
                size += ENCRYPTION_OVERHEAD
            fields[name] = value
        return fields, size

    def check_size(self, bound: int | None, data: Mapping[str, Any]) -> int:
        """Refuse to store ``data`` if it exceeds ``max_size`` or MongoDB's document limit.

        ``bound`` is an upper bound of the stored data's size, or None if
        unknown; the data is measured exactly only when the bound is unknown
        or over a limit. Returns the size vouched for: the bound, or the
        measured size.
        """
        limit = MAX_DATA_SIZE if self.max_size is None else min(MAX_DATA_SIZE, self.max_size)
        if bound is not None and bound <= limit:
            return bound
        sizes = {key: len(encode_value(value)) for key, value in data.items()}
        size = sum(sizes.values()) + sum(
            len(field_name(key).encode('utf-8', 'surrogatepass')) + 2 for key in data)
        if self.cipher is not None:
            size += ENCRYPTION_OVERHEAD * len(data)
        largest = max(sizes, key=lambda key: sizes[key]) if sizes else None
        if self.max_size is not None and size > self.max_size:
            raise SessionValueError('the session holds %d bytes, more than max_size (%d); '
                                    'its largest key is %r' % (size, self.max_size, largest))
        if size > MAX_DATA_SIZE:
            raise SessionValueError('the session would be larger than MongoDB stores in one '
                                    'document (%d bytes; its largest key is %r)' % (size, largest))
        return size

    def sealing(self) -> dict[str, Any]:
        """The fields that say how a document's values are sealed (``key``), for a write
        that seals every value it leaves with the current key."""
        return {} if self.cipher is None else {'key': self.cipher.key_id}

    def decoded(self, session_id: str, document: dict[str, Any], now: datetime.datetime,
                expired: ExpiredHook | None = None
                ) -> StoredSession | RetiredSession | None:
        """The session a document holds, or None if it has expired or cannot be read.

        ``expired(handle, user)`` is told of a document found expired.
        """
        expires = document.get('expires')
        if 'retired' in document:
            return RetiredSession(expires) if expires is not None and expires > now else None
        if expires is not None and expires <= now:
            if expired is not None:
                expired(document.get(HANDLE), self.user_of(document))
            return None
        try:
            data, stale = self._decrypted(session_id, document)
        except DecryptionError as exc:
            log.warning('ignored a session that could not be decrypted: %s', exc)
            return None
        return self._stored(document, data, stale)

    def _stored(self, document: dict[str, Any], data: dict[str, Any],
                stale: list[str]) -> StoredSession:
        user = data.get(self.user_key) if self.user_key is not None else None
        size, timeout = document.get('size'), document.get('timeout')
        return StoredSession(
            data, document.get('created'), document.get('expires'), document.get('v', 0), stale,
            size if isinstance(size, int) else None,
            None if timeout is None else _own_timeout(timeout),
            {name: document[name] for name in ACCOUNT_FIELDS if name in document},
            None if user is None or not is_user_id(user) else user)

    def _decrypted(self, session_id: str, document: dict[str, Any]
                   ) -> tuple[dict[str, Any], list[str]]:
        """A loaded document's data, and the keys sealed with an older key."""
        data = {session_key(name) if '%' in name else name: value   # (most names: as they are)
                for name, value in document.get('data', {}).items()}
        if self.cipher is None:
            return data, []
        return self.cipher.decrypt_all(document_id(session_id), data, decode_value)

    def data_of(self, document: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """A document's data, decrypted: ``(data, sealed)``, with the keys that cannot be
        decrypted here (under a key no longer configured) left out and listed in ``sealed``."""
        data, sealed = {}, []
        for name, value in (document.get('data') or {}).items():
            key = session_key(name)
            if self.cipher is not None:
                try:
                    value = decode_value(self.cipher.decrypt(document['_id'], key, value))
                except DecryptionError:
                    sealed.append(key)
                    continue
            data[key] = value
        return data, sealed

    # -- users and clients --------------------------------------------------------------

    def user_value(self, value: Any) -> Any:
        """The ``user`` field for the user id ``value``: the value itself, or with
        ``encryption_keys`` its keyed hash under the first key; None for None."""
        if value is None:
            return None
        check_user_id(value, 'the user id (session key %r, user_key)' % self.user_key)
        if self.cipher is None:
            return value
        return bson.Binary(self.cipher.user_digests(encode_value(value))[0])

    def user_filter(self, userid: Any) -> Any:
        """What matches the ``user`` field of ``userid``'s sessions, under any key.

        Exactly ``userid``: a value that is not a user id (a dict of query
        operators, a list) raises :class:`SessionValueError`.
        """
        check_user_id(userid, 'a user id to look sessions up by')
        if self.cipher is None:
            return userid
        return {'$in': [bson.Binary(digest)
                        for digest in self.cipher.user_digests(encode_value(userid))]}

    def mirror_user(self, sets: dict[str, Any], unsets: dict[str, Any],
                    changed: Mapping[str, Any], removed: set[str] | tuple[()]) -> None:
        """Keep ``user`` in step with a write of ``user_key`` in ``changed`` or ``removed``."""
        key = self.user_key
        if key is None:
            return
        if key in changed and changed[key] is not None:
            sets[USER] = self.user_value(changed[key])
        elif key in changed or key in removed:
            sets.pop(USER, None)
            unsets[USER] = ''

    def seal_client(self, document: dict[str, Any]) -> None:
        """With ``encryption_keys``, seal a new document's ``client`` (bound to its ``_id``)."""
        if isinstance(document.get(CLIENT), dict) and self.cipher is not None:
            document[CLIENT] = self.cipher.encrypt(document['_id'] + ':client', CLIENT,
                                                   encode_value(document[CLIENT]))

    def user_of(self, document: dict[str, Any]) -> Any:
        """The value of ``user_key`` in a decoded document's data (decrypted), or None."""
        key = self.user_key
        value = (document.get('data') or {}).get(field_name(key)) if key is not None else None
        if value is None or self.cipher is None or key is None:
            return value
        try:
            return decode_value(self.cipher.decrypt(document['_id'], key, value))
        except DecryptionError:
            return None

    def client_of(self, document: dict[str, Any]) -> Any:
        """A document's ``client`` field, decrypted; None when absent or unreadable."""
        client = document.get(CLIENT)
        if client is None or self.cipher is None or isinstance(client, dict):
            return client
        try:
            return decode_value(self.cipher.decrypt(document['_id'] + ':client', CLIENT, client))
        except DecryptionError:
            return None
