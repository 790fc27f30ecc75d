"""Optional encryption at rest of session values (AES-256-GCM).

Each value is encrypted on its own, so writes still carry only the keys that
changed and concurrent writes to different keys still merge. The session id
and the key name are bound as associated data: a value copied into another
session, or under another key, fails to decrypt. The key *names* stay in
clear text, and encrypted values cannot be queried (``revoke`` cannot match
them).

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
import os
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

import bson

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_VERSION = b'\x01'
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
        for text in keys:
            try:
                raw = base64.urlsafe_b64decode(text + '=' * (-len(text) % 4))
            except (binascii.Error, ValueError):
                raw = b''
            if len(raw) != 32:
                raise ValueError('encryption_keys: each key must be 32 bytes, base64-encoded '
                                 '(make one with pyramid_mongosession.crypto.new_key())')
            key_id = hashlib.sha256(raw).digest()[:_KEY_ID_SIZE]
            self._ciphers[key_id] = AESGCM(raw)
        if not self._ciphers:
            raise ValueError('encryption_keys: give at least one key')
        # The first key given encrypts (dicts keep their insertion order).
        self._encrypt_with = next(iter(self._ciphers))

    @staticmethod
    def _associated_data(session_id: str, key: str) -> bytes:
        return session_id.encode('ascii') + b'\x00' + key.encode('utf-8', 'surrogatepass')

    def encrypt(self, session_id: str, key: str, plain: bytes) -> bson.Binary:
        """Seal the bytes ``plain`` stored under ``key`` in session ``session_id``."""
        nonce = os.urandom(_NONCE_SIZE)
        sealed = self._ciphers[self._encrypt_with].encrypt(
            nonce, plain, self._associated_data(session_id, key))
        return bson.Binary(_VERSION + self._encrypt_with + nonce + sealed)

    def decrypt_all(self, session_id: str, values: Mapping[str, Any],
                    decode: Callable[[bytes], Any]) -> tuple[dict[str, Any], list[str]]:
        """Decrypt and ``decode`` every value; also return the keys sealed with an old key."""
        plain: dict[str, Any] = {}
        stale: list[str] = []
        for key, stored in values.items():
            plain[key] = decode(self.decrypt(session_id, key, stored))
            if bytes(stored)[1:1 + _KEY_ID_SIZE] != self._encrypt_with:
                stale.append(key)
        return plain, stale

    def decrypt(self, session_id: str, key: str, stored: Any) -> bytes:
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
                                   self._associated_data(session_id, key))
        except InvalidTag:
            raise DecryptionError('session value %r failed authentication' % key) from None
        return plain
