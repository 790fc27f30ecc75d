"""Optional encryption at rest of session values (AES-256-GCM).

Each value is encrypted on its own, so writes still carry only the keys that
changed and concurrent writes to different keys still merge. The session's
document id (the SHA-256 digest of the session id) and the key name are bound
as associated data: a value copied into another session, or under another
key, fails to decrypt. Binding the digest rather than the id itself lets
maintenance with the keys (``pmongosession export``) read a session's values
without its id. The key *names* stay in clear text, and
encrypted values cannot be queried (``revoke`` cannot match them).

The keys also derive the key of :meth:`ValueCipher.user_digests`, the keyed
hash under which a session's user id is indexed (see
:mod:`pyramid_mongosession.accounts`).

Keys are 32 random bytes, base64-encoded. The first key encrypts; every key
decrypts, and a value found under an older key is encrypted again with the
first one when its session is next loaded. So a new key is put first, and an
old one removed once every session has been loaded since (or has expired):
``absolute_timeout`` bounds how long that takes.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

import bson

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_VERSION = b'\x02'          # the format: bound to the document id
_USER_DIGEST_CONTEXT = b'pyramid_mongosession user id'
_KEY_ID_SIZE = 4
_NONCE_SIZE = 12


class DecryptionError(ValueError):
    """A stored value could not be decrypted with any configured key."""


def new_key() -> str:
    """A fresh key, base64-encoded, for the ``encryption_keys`` setting."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode('ascii')


class ValueCipher:
    """Encrypts and decrypts single session values."""

    def __init__(self, keys: str | Iterable[str]) -> None:
        try:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        except ImportError:
            raise ValueError('encryption_keys needs the cryptography package: '
                             'pip install "pyramid_mongosession[encryption]"') from None
        if isinstance(keys, str):
            keys = keys.split()
        self._ciphers: dict[bytes, AESGCM] = {}
        self._user_keys: list[bytes] = []
        for text in keys:
            try:
                raw = base64.urlsafe_b64decode(text + '=' * (-len(text) % 4))
            except (binascii.Error, ValueError):
                raw = b''
            if len(raw) != 32:
                raise ValueError('encryption_keys: each key must be 32 bytes, base64-encoded; '
                                 'make one with: python3 -c "from pyramid_mongosession.crypto '
                                 'import new_key; print(new_key())"')
            key_id = hashlib.sha256(raw).digest()[:_KEY_ID_SIZE]
            self._ciphers[key_id] = AESGCM(raw)
            self._user_keys.append(hmac.new(raw, _USER_DIGEST_CONTEXT, hashlib.sha256).digest())
        if not self._ciphers:
            raise ValueError('encryption_keys: give at least one key')
        # The first key given encrypts (dicts keep their insertion order).
        self._encrypt_with = next(iter(self._ciphers))

    @property
    def key_id(self) -> bson.Binary:
        """The id of the key that encrypts (stored with each session as ``key``)."""
        return bson.Binary(self._encrypt_with)

    @staticmethod
    def _associated_data(owner: str, key: str) -> bytes:
        return owner.encode('ascii') + b'\x00' + key.encode('utf-8', 'surrogatepass')

    def encrypt(self, owner: str, key: str, plain: bytes) -> bson.Binary:
        """Seal the bytes ``plain`` stored under ``key`` in the document ``owner``.

        ``owner`` is the session's document id (:func:`~pyramid_mongosession.store.document_id`).
        """
        nonce = os.urandom(_NONCE_SIZE)
        sealed = self._ciphers[self._encrypt_with].encrypt(
            nonce, plain, self._associated_data(owner, key))
        return bson.Binary(_VERSION + self._encrypt_with + nonce + sealed)

    def decrypt_all(self, owner: str, values: Mapping[str, Any],
                    decode: Callable[[bytes], Any]) -> tuple[dict[str, Any], list[str]]:
        """Decrypt and ``decode`` every value; also return the keys sealed with an old key."""
        plain: dict[str, Any] = {}
        stale: list[str] = []
        for key, stored in values.items():
            plain[key] = decode(self.decrypt(owner, key, stored))
            if bytes(stored)[:1 + _KEY_ID_SIZE] != _VERSION + self._encrypt_with:
                stale.append(key)
        return plain, stale

    def decrypt(self, owner: str, key: str, stored: Any) -> bytes:
        """The bytes :meth:`encrypt` sealed, or :class:`DecryptionError`."""
        from cryptography.exceptions import InvalidTag
        blob = bytes(stored) if isinstance(stored, (bytes, bytearray)) else b''
        header = 1 + _KEY_ID_SIZE
        cipher = self._ciphers.get(blob[1:header]) if blob[:1] == _VERSION else None
        if cipher is None:
            raise DecryptionError('session value %r is not encrypted with a configured key' % key)
        nonce = blob[header:header + _NONCE_SIZE]
        try:
            plain = cipher.decrypt(nonce, blob[header + _NONCE_SIZE:],
                                   self._associated_data(owner, key))
        except InvalidTag:
            raise DecryptionError('session value %r failed authentication' % key) from None
        return plain

    def user_digests(self, plain: bytes) -> list[bytes]:
        """Keyed hashes (HMAC-SHA-256) of the bytes ``plain``, one per key, the first key's first.

        The hash key is derived from each encryption key, so the digests can
        be computed only with the keys, and change when the first key does.
        """
        return [hmac.new(key, plain, hashlib.sha256).digest() for key in self._user_keys]
