"""How session data becomes BSON: codec, field names, values, time.

The session (to notice values changed in place) and the store (to write
them) both encode values; the rules live here so that both agree.
"""
from __future__ import annotations

import datetime
import math
import re
import time
import uuid
from typing import Any, Mapping

import bson
from bson.binary import UuidRepresentation
from bson.codec_options import CodecOptions
from bson.errors import InvalidDocument

from .exceptions import SessionValueError

#: How session values are encoded everywhere: naive UTC datetimes, and
#: uuid.UUID values as standard BSON UUIDs.
CODEC_OPTIONS: CodecOptions[dict[str, Any]] = CodecOptions(
    tz_aware=False, uuid_representation=UuidRepresentation.STANDARD)
#: What BSON encoding raises for a value it cannot store.
ENCODING_ERRORS: tuple[type[Exception], ...] = (
    InvalidDocument, TypeError, ValueError, OverflowError, RecursionError)
#: MongoDB's limit on one document (its default ``maxBsonObjectSize``).
MAX_DOCUMENT_SIZE = 16 * 1024 * 1024
#: How deep a value may nest lists and dicts. MongoDB refuses documents
#: nested more than 100 levels; the session document and its ``data`` field
#: take two, and the rest is kept as a margin for update commands.
MAX_VALUE_DEPTH = 95


#: The longest duration a timeout may be, in seconds (about a century): an
#: expiry computed from it stays far from the end of Python's datetimes.
MAX_SECONDS = 100 * 365 * 24 * 3600


def is_duration(value: Any, allow_zero: bool = False) -> bool:
    """Whether ``value`` is a number of seconds a timeout may be: finite, positive
    (or zero, if allowed) and at most :data:`MAX_SECONDS`. Booleans are not numbers here."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if isinstance(value, float) and not math.isfinite(value):
        return False
    return (0 <= value if allow_zero else 0 < value) and value <= MAX_SECONDS


def utcnow() -> datetime.datetime:
    """Now, as the naive UTC datetime that BSON stores: to the millisecond.

    BSON datetimes hold milliseconds; cutting the microseconds here makes a
    time read back from MongoDB equal to the one that was written.
    """
    # It runs a few times a request, mostly within the same millisecond: the
    # last reading is kept (a datetime is immutable, and the pair is replaced
    # whole: a thread sees one reading or the other), and a new one is the epoch plus
    # whole seconds and microseconds, a third of now(utc).replace(...)'s cost.
    global _last_reading
    milliseconds = int(time.time() * 1000)
    last = _last_reading
    if last[0] == milliseconds:
        return last[1]
    seconds, rest = divmod(milliseconds, 1000)
    now = _EPOCH + datetime.timedelta(0, seconds, rest * 1000)
    _last_reading = milliseconds, now
    return now


_EPOCH = datetime.datetime(1970, 1, 1)
#: utcnow's last reading: (milliseconds since the epoch, the datetime).
_last_reading: tuple[int, datetime.datetime] = (-1, _EPOCH)


# Session keys become field names inside ``data``. MongoDB's update paths
# split on '.', reject a leading '$' and empty names, BSON cannot hold NUL, and
# FerretDB trims white space from both ends of each path segment (so ``'a '``
# could be inserted but never updated); so those characters are %-escaped
# (white space only at either end), and '%' itself is escaped to stay
# reversible. Ordinary keys pass through unchanged.
_NEEDS_ESCAPE = re.compile(r'[%.$\x00]|^\s|\s$')
_ESCAPED = re.compile(r'%(?:u([0-9A-F]{4})|U([0-9A-F]{8})|([0-9A-F]{2}))')
_EMPTY_KEY = '%'


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x100:
        return '%%%02X' % code
    if code < 0x10000:
        return '%%u%04X' % code
    return '%%U%08X' % code


def _unescape(match: re.Match[str]) -> str:
    return chr(int(match.group(1) or match.group(2) or match.group(3), 16))


def field_name(key: str) -> str:
    """The field name under ``data`` that stores session key ``key``."""
    if key.isidentifier():   # most keys: no character in them is escaped
        return key
    if not key:
        return _EMPTY_KEY
    if _NEEDS_ESCAPE.search(key) is None:
        return key
    return _NEEDS_ESCAPE.sub(_escape, key)


def session_key(name: str) -> str:
    """The session key stored under field name ``name`` (inverse of :func:`field_name`)."""
    if '%' not in name:
        return name
    if name == _EMPTY_KEY:
        return ''
    return _ESCAPED.sub(_unescape, name)


def encode_value(value: Any) -> bytes:
    """One session value as BSON bytes."""
    return bson.encode({'v': value}, codec_options=CODEC_OPTIONS)


def decode_value(data: bytes) -> Any:
    return bson.decode(data, codec_options=CODEC_OPTIONS)['v']


#: Values that BSON stores as they are, on every server.
_PLAIN = (str, bytes, bool, type(None), datetime.datetime, bson.ObjectId, bson.Decimal128,
          bson.Timestamp, bson.Binary, uuid.UUID)
_INT64 = (-2 ** 63, 2 ** 63 - 1)


def check_key(key: Any) -> str:
    """Return ``key`` if it may be a session key (a string that is valid Unicode text),
    else raise :class:`SessionValueError` naming it."""
    if not isinstance(key, str):
        raise SessionValueError(
            'session keys must be strings (MongoDB field names), not %r' % (key,))
    try:
        key.encode('utf-8')
    except UnicodeEncodeError:
        raise SessionValueError(
            'session key %r is not valid Unicode text (it holds a lone surrogate), so it '
            'cannot be a MongoDB field name' % (key,)) from None
    return key


def check_value(key: str, value: Any) -> int:
    """Raise :class:`SessionValueError` naming ``key`` unless every server can store ``value``.

    That is: BSON can encode it, its numbers are finite and fit in 64 bits,
    it nests no deeper than :data:`MAX_VALUE_DEPTH`, and it fits in one
    document. NaN and infinity are refused everywhere, as JSON (Pyramid's
    session contract) has no such numbers and FerretDB drops the connection
    on NaN. Returns the size of the value's BSON (that of ``{'v': value}``).
    """
    size = _scalar_size(value)
    if size is not None:
        return size
    problem = _problem(value, 0)
    if problem is None:
        try:
            size = len(encode_value(value))
        except ENCODING_ERRORS as exc:
            problem = str(exc) or type(exc).__name__
        else:
            if size > MAX_DOCUMENT_SIZE:
                problem = ('it is larger than MongoDB stores in one document '
                           '(%d bytes of BSON; the limit is %d)' % (size, MAX_DOCUMENT_SIZE))
            else:
                return size
    raise SessionValueError('session key %r holds a value MongoDB cannot store: %s'
                            % (key, problem))


#: The BSON size of ``{'v': value}`` for the fixed-size types: the document's
#: length and terminator, the type byte and the name ``v`` take 8 bytes.
_FIXED_SIZES = {bool: 9, type(None): 8, float: 16, datetime.datetime: 16}
_INT32 = (-2 ** 31, 2 ** 31 - 1)


def _scalar_size(value: Any) -> int | None:
    """The BSON size of ``{'v': value}`` for the values most sessions hold (a string, a
    number, bytes...), worked out without encoding; None for anything else, or for a
    value :func:`check_value` must look at (a string that is not Unicode text, a
    number that is not finite or not 64-bit)."""
    kind = type(value)
    if kind is str:
        try:
            size = 13 + len(value.encode('utf-8'))   # int32 length, text, NUL
        except UnicodeEncodeError:
            return None
        return size if size <= MAX_DOCUMENT_SIZE else None
    if kind is int:
        if _INT32[0] <= value <= _INT32[1]:
            return 12
        return 16 if _INT64[0] <= value <= _INT64[1] else None
    if kind is bytes:
        size = 13 + len(value)   # int32 length, subtype, bytes
        return size if size <= MAX_DOCUMENT_SIZE else None
    if kind is float and not math.isfinite(value):
        return None
    return _FIXED_SIZES.get(kind)


def _problem(value: Any, depth: int) -> str | None:
    """What no server stores in ``value`` (non-finite or huge numbers, deep nesting), or None."""
    if isinstance(value, float):
        return None if math.isfinite(value) else '%r is not a finite number' % value
    if isinstance(value, int) and not isinstance(value, bool):
        if _INT64[0] <= value <= _INT64[1]:
            return None
        return 'the integer %d does not fit in 64 bits' % value
    if isinstance(value, (dict, list, tuple)):
        if depth >= MAX_VALUE_DEPTH:
            return 'it nests lists and dicts more than %d deep' % MAX_VALUE_DEPTH
        items = value.values() if isinstance(value, dict) else value
        for item in items:
            if not isinstance(item, _PLAIN):
                problem = _problem(item, depth + 1)
                if problem is not None:
                    return problem
    return None


def unstorable(values: Mapping[str, Any], exc: BaseException) -> SessionValueError:
    """The :class:`SessionValueError` for ``exc``, naming the first key BSON cannot encode."""
    for key, value in values.items():
        try:
            encode_value(value)
        except ENCODING_ERRORS as cause:
            return SessionValueError(
                'session key %r holds a value MongoDB cannot store: %s' % (key, cause))
    return SessionValueError('MongoDB cannot store this session: %s' % exc)


#: What a user id may be (the value of the session key ``user_key``): a scalar
#: that MongoDB matches exactly. A list would match any of its items, a dict
#: would be read as query operators.
USER_ID_TYPES = (str, int, uuid.UUID, bson.ObjectId)


def is_user_id(value: Any) -> bool:
    """Whether ``value`` may be a user id (see :data:`USER_ID_TYPES`)."""
    return not isinstance(value, bool) and isinstance(value, USER_ID_TYPES) and not (
        isinstance(value, int) and not _INT64[0] <= value <= _INT64[1])


def check_user_id(value: Any, what: str = 'a user id') -> Any:
    """Return ``value`` if it may be a user id (see :data:`USER_ID_TYPES`), else raise
    :class:`SessionValueError` naming ``what`` and the value."""
    if not is_user_id(value):
        raise SessionValueError(
            '%s must be a string, a 64-bit integer, a UUID or an ObjectId, matched exactly; '
            'not %r' % (what, value))
    return value

