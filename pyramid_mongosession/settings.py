"""``mongodb_session.*`` ini settings in, checked options out.

Every setting is listed in one of the tables below with its converter; any
other ``mongodb_session.*`` key, a missing required key or a value that does
not convert raises :class:`pyramid.exceptions.ConfigurationError` naming the
key, when the application starts rather than on its first request.
``mongodb_session.client.<option>`` passes ``<option>`` to
:class:`pymongo.MongoClient` (the Perl modules' "prefix it with mongodb_" rule).
``mongodb_session.import.*`` configures the importer of the sessions of the
library used before (:data:`IMPORT`, and a table per source).
"""
from __future__ import annotations

import datetime
import difflib
import re
from typing import Any, Callable, Mapping, Optional
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

import pymongo
from pymongo.common import validate as validate_client_option
from pymongo.errors import PyMongoError
from pymongo.uri_parser import parse_uri
from pyramid.exceptions import ConfigurationError
from pyramid.path import DottedNameResolver
from pyramid.settings import aslist, falsey, truthy

from .cookie import MAKE_SECRET
from .factory import DEFAULTS, MongoSessionFactory
from .connection import ProcessLocalCollection
from .importers import (
    BEAKER, COOKIE, REDIS, BeakerImporter, RedisImporter, SignedCookieImporter)

_validate_uri: Optional[Callable[..., dict[str, Any]]]
try:
    # pymongo 4.12+: the check MongoClient itself makes of a connection string
    # before, and without, the DNS lookup that a mongodb+srv:// url implies.
    from pymongo import uri_parser_shared
except ImportError:  # older pymongo parses mongodb+srv:// urls only with DNS
    _validate_uri = None
else:
    _validate_uri = uri_parser_shared._validate_uri

PREFIX = 'mongodb_session.'
#: ``mongodb_session.url = mongomock://`` keeps sessions in this process's
#: memory (mongomock), for development without a server: lost on restart,
#: invisible to other processes.
EMBEDDED_SCHEME = 'mongomock://'
#: The database of the embedded backend when neither its url nor ``db_name``
#: names one: ``mongodb_session.url = mongomock://`` is enough.
EMBEDDED_DB_NAME = 'pyramid_mongosession'
SRV_SCHEME = 'mongodb+srv://'


def _string(value: Any) -> str:
    return str(value).strip()


def _string_or_none(value: Any) -> str | None:
    text = _string(value)
    return None if text.lower() in ('', 'none') else text


def _samesite(value: Any) -> str | None:
    # 'None' is a SameSite value here, not "no attribute": an empty value omits it.
    text = _string(value)
    return text.capitalize() if text else None


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in truthy:
        return True
    if text in falsey:
        return False
    raise ValueError('expected true or false')


def _int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError('expected an integer')
    return int(value)


def _int_or_none(value: Any) -> int | None:
    if value is None or str(value).strip().lower() in ('', 'none'):
        return None
    return _int(value)


def _float(value: Any) -> float:
    return float(value)


def _float_or_none(value: Any) -> float | None:
    if value is None or str(value).strip().lower() in ('', 'none'):
        return None
    return float(value)


def _dotted(value: Any) -> Callable[..., Any]:
    if callable(value):
        return value
    try:
        resolved = DottedNameResolver().resolve(_string(value))
    except ImportError as exc:
        raise ValueError(str(exc)) from None
    if not callable(resolved):
        raise ValueError('%r is not callable' % value)
    return resolved


def _list_or_none(value: Any) -> list[str] | None:
    if isinstance(value, str):
        return None if value.strip().lower() == 'none' else aslist(value) or None
    return list(value or ()) or None


#: A setting's converter: its value as read (an ini string, or any value from
#: code) in, the option's value out; :exc:`ValueError` or :exc:`TypeError`
#: when it does not convert.
Converter = Callable[[Any], Any]

#: Where the sessions live. ``url`` and ``host``/``port`` are alternatives.
CONNECTION: dict[str, Converter] = {
    'url': _string,
    'host': _string,
    'port': _int,
    'username': _string,
    'password': str,
    'db_name': _string,
    'coll_name': _string,
}
#: Options of :class:`MongoSessionFactory`, by converter.
FACTORY: dict[str, Converter] = {
    'secret': str,
    'old_secrets': _list_or_none,
    'cookie_name': _string,
    'cookie_max_age': _int_or_none,
    'cookie_path': _string,
    'cookie_domain': _string_or_none,
    'cookie_secure': _bool,
    'cookie_httponly': _bool,
    'cookie_samesite': _samesite,
    'timeout': _int_or_none,
    'reissue_time': _int,
    'absolute_timeout': _int_or_none,
    'detect_conflicts': _bool,
    'operation_timeout': _float_or_none,
    'outage_probe_interval': _float,
    'rotation_grace': _int,
    'max_size': _int_or_none,
    'degrade_on_outage': _bool,
    'is_cacheable': _dotted,
    'encryption_keys': _list_or_none,
    'user_key': _string_or_none,
    'track_clients': _bool,
    'max_sessions_per_user': _int_or_none,
}
REQUIRED = ('secret',)

#: What each setting is, in a few words, for the suggestions of an unknown one.
GLOSS = {
    'url': 'the MongoDB connection string',
    'db_name': 'the database',
    'coll_name': 'the collection',
    'username': 'with host and port',
    'secret': 'signs the cookie',
    'old_secrets': 'former secrets, still accepted',
    'cookie_secure': 'send the cookie over HTTPS only',
    'cookie_httponly': 'hide the cookie from JavaScript',
    'cookie_samesite': 'the cookie\'s SameSite attribute',
    'cookie_domain': 'the cookie\'s Domain',
    'cookie_path': 'the cookie\'s Path',
    'cookie_name': 'the cookie\'s name',
    'cookie_max_age': 'the cookie\'s lifetime in seconds',
    'timeout': 'idle seconds before a session expires',
    'absolute_timeout': 'seconds from creation to the end of a session',
    'operation_timeout': 'the longest one database call may take',
    'encryption_keys': 'encrypt values at rest',
    'user_key': 'the session key of the user id',
}
#: Words people try for a setting, and the settings they mean: an unknown
#: setting is matched by meaning first, then by spelling.
MEANINGS = {
    'secure': ('cookie_secure',),
    'httponly': ('cookie_httponly',), 'http_only': ('cookie_httponly',),
    'samesite': ('cookie_samesite',), 'same_site': ('cookie_samesite',),
    'domain': ('cookie_domain',), 'path': ('cookie_path',),
    'name': ('cookie_name',), 'cookie': ('cookie_name',), 'key': ('cookie_name', 'secret'),
    'max_age': ('cookie_max_age', 'timeout'), 'maxage': ('cookie_max_age', 'timeout'),
    'expire': ('timeout', 'cookie_max_age'), 'expires': ('timeout', 'cookie_max_age'),
    'expiry': ('timeout', 'cookie_max_age'), 'expiration': ('timeout', 'cookie_max_age'),
    'ttl': ('timeout', 'cookie_max_age'), 'lifetime': ('timeout', 'cookie_max_age'),
    'idle_timeout': ('timeout',), 'session_timeout': ('timeout',),
    'max_lifetime': ('absolute_timeout',),
    'collection': ('coll_name',), 'collection_name': ('coll_name',), 'coll': ('coll_name',),
    'database': ('db_name',), 'db': ('db_name',), 'dbname': ('db_name',),
    'database_name': ('db_name',),
    'uri': ('url',), 'mongodb_url': ('url',), 'mongodb_uri': ('url',), 'mongo_url': ('url',),
    'connection_string': ('url',), 'server': ('url',), 'hosts': ('url',),
    'user': ('username',), 'login': ('username',),
    'secret_key': ('secret',), 'signing_key': ('secret',), 'signing_secret': ('secret',),
    'old_secret': ('old_secrets',), 'previous_secrets': ('old_secrets',),
    'encryption_key': ('encryption_keys',), 'encrypt': ('encryption_keys',),
    'userid_key': ('user_key',), 'user_id_key': ('user_key',),
}
#: What a value that does not convert should have been, by converter.
EXPECTED: dict[Callable[..., Any], str] = {
    _bool: 'true or false',
    _int: 'an integer',
    _int_or_none: 'an integer, or none',
    _float: 'a number',
    _float_or_none: 'a number, or none',
    _dotted: 'the dotted name of a callable (package.module.function)',
}
#: Setting names that a message of the factory may hold besides its first
#: word: those with ``_`` (the others, such as ``secret``, are words too).
_NAMES_IN_MESSAGES = re.compile(r'(?<![\w.])(%s)(?!\w)' % '|'.join(sorted(
    (name for name in list(CONNECTION) + list(FACTORY) if '_' in name), key=len,
    reverse=True)))
#: Where pymongo's messages send the reader ("Refer to docstring.").
_PYMONGO_DOCS = 'the options of pymongo.MongoClient'


def _until(value: Any) -> datetime.datetime:
    """``2025-07-01`` (midnight UTC) or an ISO 8601 date and time (naive: UTC)."""
    if isinstance(value, datetime.datetime):
        moment = value
    elif isinstance(value, datetime.date):
        moment = datetime.datetime(value.year, value.month, value.day)
    else:
        text = _string(value)
        if text.endswith(('Z', 'z')):
            text = text[:-1] + '+00:00'
        moment = datetime.datetime.fromisoformat(text)
    if moment.tzinfo is not None:
        moment = moment.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return moment


def _object(value: Any) -> Any:
    """A dotted name's object, a class instantiated (a serializer, say)."""
    if not isinstance(value, str):
        return value
    try:
        resolved = DottedNameResolver().resolve(_string(value))
    except ImportError as exc:
        raise ValueError(str(exc)) from None
    return resolved() if isinstance(resolved, type) else resolved


#: ``mongodb_session.import.*`` settings of every importer: where the old
#: sessions come from (``cookie``, ``pyramid_session_redis``,
#: ``pyramid_beaker`` or the dotted name of an importer), and until when.
IMPORT: dict[str, Converter] = {
    'from': _string,
    'until': _until,
}
#: The options of each source's importer, as ``mongodb_session.import.<option>``.
IMPORT_OPTIONS: dict[str, dict[str, Converter]] = {
    COOKIE: {
        'secret': str,
        'cookie_name': _string,
        'cookie_path': _string,
        'cookie_domain': _string_or_none,
        'salt': str,
        'hashalg': _string,
        'timeout': _float_or_none,
        'serializer': _object,
    },
    REDIS: {
        'secret': str,
        'url': _string,
        'cookie_name': _string,
        'cookie_path': _string,
        'cookie_domain': _string_or_none,
        'deserialize': _dotted,
        'end_old': _bool,
    },
    # Beaker's own session options, which Beaker converts; without any, the
    # application's session.* settings, as pyramid_beaker reads them.
    BEAKER: {
        **{name: _string for name in (
            'type', 'url', 'key', 'data_dir', 'lock_dir', 'data_serializer', 'crypto_type',
            'cookie_path', 'cookie_domain', 'table_name', 'schema_name', 'timeout',
            'encrypt_nonce_bits')},
        'secret': str,
        'validate_key': str,
        'encrypt_key': str,
        'end_old': _bool,
    },
}
#: The importer class of each source, and the importer options it gets under another name.
IMPORTERS: dict[str, tuple[Callable[..., Any], dict[str, str]]] = {
    COOKIE: (SignedCookieImporter, {}),
    REDIS: (RedisImporter, {'url': 'redis_url'}),
    BEAKER: (BeakerImporter, {}),
}


def _importer_options(found: dict[str, Any], settings: Mapping[str, Any],
                      prefix: str) -> dict[str, Any]:
    """The factory's ``importer`` and ``import_until`` from the ``import.*`` settings."""
    def key(name: str) -> str:
        return '%simport.%s' % (prefix, name)

    def converted(table: Mapping[str, Converter], name: str, value: Any) -> Any:
        if name not in table:
            raise ConfigurationError('unknown setting %s (%s takes: %s)' % (
                key(name), key('from') + ' = ' + str(source),
                ', '.join(sorted(set(IMPORT) | set(table)))))
        try:
            return table[name](value)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError('%s: bad value %r (%s)' % (key(name), value, exc)) from exc

    source = found.pop('from', None)
    if not source or not _string(source):
        raise ConfigurationError('%s is required with the other %simport.* settings'
                                 % (key('from'), prefix))
    source = _string(source)
    options: dict[str, Any] = {}
    if 'until' in found:
        options['import_until'] = converted(IMPORT, 'until', found.pop('until'))
    if source in IMPORTERS:
        factory, renamed = IMPORTERS[source]
        table = IMPORT_OPTIONS[source]
        arguments = {renamed.get(name, name): converted(table, name, value)
                     for name, value in found.items()}
        if source == BEAKER:
            end_old = arguments.pop('end_old', True)
            beaker = arguments or {name: value for name, value in settings.items()
                                   if name.startswith(('session.', 'beaker.session.'))}
            arguments = {'settings': beaker, 'end_old': end_old}
        elif 'secret' not in arguments:
            raise ConfigurationError('%s is required (the old session factory\'s secret)'
                                     % key('secret'))
    else:
        try:
            factory = _dotted(source)
        except ValueError as exc:
            raise ConfigurationError(
                '%s: %r is neither %s nor the dotted name of an importer (%s)'
                % (key('from'), source, ', '.join(IMPORTERS), exc)) from exc
        arguments = dict(found)
        if not arguments:
            options['importer'] = factory
            return options
    try:
        options['importer'] = factory(**arguments)
    except (TypeError, ValueError, ImportError) as exc:
        raise ConfigurationError('%s = %s: %s' % (key('from'), source, exc)) from exc
    return options


def parse_settings(
    settings: Mapping[str, Any], prefix: str = PREFIX,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Split ``settings`` into ``(connection, factory options, client options)``."""
    connection: dict[str, Any] = {}
    options: dict[str, Any] = {}
    client: dict[str, Any] = {}
    imports: dict[str, Any] = {}
    for key, value in settings.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix):]
        if name.startswith('import.'):
            imports[name[len('import.'):]] = value
            continue
        if name.startswith('client.'):
            option = name[len('client.'):]
            try:
                validate_client_option(option, value)
            except Exception as exc:
                raise ConfigurationError('%s: %s (see %s)' % (
                    key, str(exc).replace(' Refer to docstring.', '').strip(),
                    _PYMONGO_DOCS)) from exc
            client[option] = value
            continue
        table = CONNECTION if name in CONNECTION else FACTORY if name in FACTORY else None
        if table is None:
            raise ConfigurationError('unknown setting %s%s' % (key, _suggestion(name, prefix)))
        convert = table[name]
        try:
            (connection if table is CONNECTION else options)[name] = convert(value)
        except (TypeError, ValueError) as exc:
            expected = EXPECTED.get(convert)
            if expected is None:
                message = '%s: bad value %r (%s)' % (key, value, exc)
            elif convert is _dotted:
                message = '%s: bad value %r: expected %s (%s)' % (key, value, expected, exc)
            else:
                message = '%s: bad value %r: expected %s' % (key, value, expected)
            raise ConfigurationError(message) from exc
    for name in REQUIRED:
        if not options.get(name):
            raise ConfigurationError('%s%s is required; make one with: %s'
                                     % (prefix, name, MAKE_SECRET))
    if imports:
        options.update(_importer_options(imports, settings, prefix))
    return connection, options, client


def _suggestion(name: str, prefix: str) -> str:
    """"; did you mean <the setting meant>?", by meaning (MEANINGS), else by spelling;
    a hint at the reference when neither finds one."""
    word = name.strip().lower().replace('-', '_')
    meant = MEANINGS.get(word) or MEANINGS.get(word.replace('_', ''))
    if meant is None:
        close = difflib.get_close_matches(word, list(CONNECTION) + list(FACTORY), n=1)
        if not close:
            return ' (not a setting of pyramid_mongosession; the configuration reference ' \
                   'lists them all)'
        meant = (close[0],)
    return '; did you mean %s?' % ' or '.join(
        '%s%s%s' % (prefix, setting, ' (%s)' % GLOSS[setting] if setting in GLOSS else '')
        for setting in meant)


def _prefixed(message: str, prefix: str) -> str:
    """A message of the factory's with every setting it names written out in full."""
    text = _NAMES_IN_MESSAGES.sub(lambda match: prefix + match.group(1), message)
    first = message.split(None, 1)[0].rstrip(':') if message.strip() else ''
    if '_' not in first and (first in FACTORY or first in CONNECTION):
        text = prefix + text    # secret, timeout...: a setting as the first word only
    return text


def _url_error(url: str, exc: Exception, prefix: str) -> str:
    """pymongo's complaint about ``url``, naming the option at fault and the fix.

    The url itself stays out of the message (it may hold a password), and so
    do the options' values.
    """
    text = str(exc).replace(' Refer to docstring.', '').strip()
    if 'Invalid URI scheme' in text:
        return ('%surl: %s; or mongomock:// to keep sessions in this process\'s memory, '
                'for development without a server' % (prefix, text.rstrip('.')))
    query = urlsplit(url).query
    for name, value in parse_qsl(query, keep_blank_values=True):
        try:
            parse_uri('mongodb://localhost/?%s' % urlencode({name: value}),
                      validate=True, warn=False)
        except (PyMongoError, ValueError):
            return '%surl: the url option %s: %s (see %s)' % (prefix, name, text,
                                                              _PYMONGO_DOCS)
    return '%surl: %s' % (prefix, text)


def url_database(url: str, prefix: str = PREFIX) -> str | None:
    """Check ``url`` as pymongo will read it; return the database it names, or None.

    Nothing is contacted: a malformed url (a misspelt scheme, a bad host or
    port, an unknown option or a bad option value) raises
    :class:`~pyramid.exceptions.ConfigurationError` at start-up instead of
    failing every request. A ``mongodb+srv://`` url is checked without the DNS
    lookup it implies, which happens when the client connects; with a pymongo
    older than 4.12, which can only parse it with that lookup, only its
    scheme is checked here.
    """
    path_database = unquote(urlsplit(url).path.lstrip('/')) or None
    if url.startswith(EMBEDDED_SCHEME):
        return path_database
    try:
        if url.startswith(SRV_SCHEME):
            if _validate_uri is None:
                return path_database
            parsed = _validate_uri(url, validate=True, warn=False)
        else:
            parsed = parse_uri(url, validate=True, warn=False)
    except (PyMongoError, ValueError) as exc:
        # pymongo's messages leave the url out, and with it any password.
        raise ConfigurationError(_url_error(url, exc, prefix)) from exc
    return parsed['database']


def _embedded_client_class() -> Callable[..., Any]:
    try:
        import mongomock
    except ImportError:
        raise ConfigurationError(
            '%surl = %s needs mongomock: pip install "pyramid_mongosession[embedded]"'
            % (PREFIX, EMBEDDED_SCHEME)) from None
    return mongomock.MongoClient


def _client(connection: dict[str, Any], client: dict[str, Any],
            operation_timeout: float | None) -> tuple[tuple[Any, ...], dict[str, Any],
                                                      Callable[..., Any]]:
    """``(args, kwargs, class)`` of the MongoClient that the connection settings describe.

    The client gets ``timeoutMS`` from ``operation_timeout`` (unless the
    settings give their own), so that it bounds every call itself, which
    costs less than a timeout set around each call.
    """
    url = connection.get('url')
    if url is not None and url.startswith(EMBEDDED_SCHEME):
        return (), {}, _embedded_client_class()
    args: tuple[Any, ...]
    if url is not None:
        args = (url,)
        named_in_url = 'timeoutms=' in url.lower()
    else:
        args = (connection.get('host', 'localhost'), connection.get('port', 27017))
        named_in_url = False
        for name in ('username', 'password'):
            if name in connection:
                client[name] = connection[name]
    if operation_timeout is not None and not named_in_url:
        client.setdefault('timeoutMS', operation_timeout * 1000)
    return args, client, pymongo.MongoClient


def session_factory_from_settings(settings: Mapping[str, Any],
                                  prefix: str = PREFIX) -> MongoSessionFactory:
    """Build a :class:`MongoSessionFactory` from ``mongodb_session.*`` settings.

    No connection is made here: the MongoClient is created on first use, once
    per process.
    """
    connection, options, client = parse_settings(settings, prefix)
    url = connection.get('url')
    if url is not None:
        for name in ('host', 'port', 'username', 'password'):
            if name in connection:
                raise ConfigurationError(
                    '%s%s cannot be combined with %surl: put it in the url '
                    '(mongodb://username:password@host:port/database), or drop the url'
                    % (prefix, name, prefix))
        db_name = url_database(url, prefix)   # checks the url even when db_name is set
        if url.startswith(EMBEDDED_SCHEME):
            db_name = db_name or EMBEDDED_DB_NAME
        db_name = connection.get('db_name') or db_name
    else:
        db_name = connection.get('db_name')
    if not db_name:
        raise ConfigurationError('%sdb_name is required (or name the database in %surl)'
                                 % (prefix, prefix))

    collection = ProcessLocalCollection(
        db_name, connection.get('coll_name', 'sessions'),
        *_client(connection, client,
                 options.get('operation_timeout', DEFAULTS['operation_timeout'])))
    secret = options.pop('secret')
    try:
        return MongoSessionFactory(collection, secret, **options)
    except (TypeError, ValueError) as exc:
        message = _prefixed(str(exc), prefix)
        if str(exc) == 'reissue_time must be shorter than timeout':
            def given(name: str) -> str:
                value = options.get(name, DEFAULTS[name])
                return '%s second%s%s' % (value, '' if value == 1 else 's',
                                          '' if name in options else ', the default')
            timeout = options.get('timeout', DEFAULTS['timeout'])
            message = ('%sreissue_time (%s) must be shorter than %stimeout (%s): set '
                       '%sreissue_time below %s, or a longer %stimeout' % (
                           prefix, given('reissue_time'), prefix, given('timeout'), prefix,
                           timeout, prefix))
        raise ConfigurationError(message) from exc
