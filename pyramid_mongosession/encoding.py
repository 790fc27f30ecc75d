"""How session data becomes BSON: codec, field names, values, time.

The session (to notice values changed in place) and the store (to write
them) both encode values; the rules live here so that both agree.
"""
import datetime

import bson
from bson.binary import UuidRepresentation
from bson.codec_options import CodecOptions
from bson.errors import InvalidDocument

from .exceptions import SessionValueError

#: How session values are encoded everywhere: naive UTC datetimes, and
#: uuid.UUID values as standard BSON UUIDs.
CODEC_OPTIONS = CodecOptions(tz_aware=False, uuid_representation=UuidRepresentation.STANDARD)
#: What BSON encoding raises for a value it cannot store.
ENCODING_ERRORS = (InvalidDocument, TypeError, ValueError, OverflowError, RecursionError)


def utcnow():
    """Now, as the naive UTC datetime that BSON stores: to the millisecond.

    BSON datetimes hold milliseconds; cutting the microseconds here makes a
    time read back from MongoDB equal to the one that was written.
    """
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.replace(tzinfo=None, microsecond=now.microsecond // 1000 * 1000)


# Session keys become field names inside ``data``. MongoDB's update paths
# split on '.', reject a leading '$' and empty names, and BSON cannot hold NUL,
# so those characters are %-escaped; '%' itself is escaped to stay reversible.
_ESCAPES = {'%': '%25', '.': '%2E', '$': '%24', '\x00': '%00'}
_UNESCAPES = {v: k for k, v in _ESCAPES.items()}
_EMPTY_KEY = '%'


def field_name(key):
    """The field name under ``data`` that stores session key ``key``."""
    if not key:
        return _EMPTY_KEY
    if '%' in key or '.' in key or '$' in key or '\x00' in key:
        return ''.join(_ESCAPES.get(char, char) for char in key)
    return key


def session_key(name):
    """The session key stored under field name ``name`` (inverse of :func:`field_name`)."""
    if '%' not in name:
        return name
    if name == _EMPTY_KEY:
        return ''
    parts = name.split('%')
    return parts[0] + ''.join(_UNESCAPES['%' + part[:2]] + part[2:] for part in parts[1:])


def encode_value(value):
    """One session value as BSON bytes."""
    return bson.encode({'v': value}, codec_options=CODEC_OPTIONS)


def decode_value(data):
    return bson.decode(data, codec_options=CODEC_OPTIONS)['v']


def unstorable(values, exc):
    """The :class:`SessionValueError` for ``exc``, naming the first key BSON cannot encode."""
    for key, value in values.items():
        try:
            encode_value(value)
        except ENCODING_ERRORS as cause:
            return SessionValueError(
                'session key %r holds a value MongoDB cannot store: %s' % (key, cause))
    return SessionValueError('MongoDB cannot store this session: %s' % exc)
