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

from .cookie import MAKE_SECRET
from .factory import MongoSessionFactory
from .connection import ProcessLocalCollection, client_limits
from .importers import (
    BEAKER, COOKIE, REDIS, BeakerImporter, RedisImporter, SignedCookieImporter)
from .options import (
    BOOL, CONNECTION, DOTTED, FACTORY, FLOAT_OR_NONE, STRING_OR_NONE, TEXT, Option, OptionError)

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


#: A setting's converter (see :class:`~pyramid_mongosession.options.Converter`).
Converter = Callable[[Any], Any]
#: The settings of the factory's options and of where the sessions live, by name.
SETTINGS: dict[str, Option] = dict(CONNECTION, **FACTORY)
REQUIRED = ('secret',)

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
#: Setting names that a message of the factory may hold besides its first
#: word: those with ``_`` (the others, such as ``secret``, are words too).
_NAMES_IN_MESSAGES = re.compile(r'(?<![\w.])(%s)(?!\w)' % '|'.join(sorted(
    (name for name in SETTINGS if '_' in name), key=len,
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
        'secret': TEXT,
        'cookie_name': _string,
        'cookie_path': _string,
        'cookie_domain': STRING_OR_NONE,
        'salt': TEXT,
        'hashalg': _string,
        'timeout': FLOAT_OR_NONE,
        'serializer': _object,
    },
    REDIS: {
        'secret': TEXT,
        'url': _string,
        'cookie_name': _string,
        'cookie_path': _string,
        'cookie_domain': STRING_OR_NONE,
        'deserialize': DOTTED,
        'end_old': BOOL,
    },
    # Beaker's own session options, which Beaker converts; without any, the
    # application's session.* settings, as pyramid_beaker reads them.
    BEAKER: {
        **{name: _string for name in (
            'type', 'url', 'key', 'data_dir', 'lock_dir', 'data_serializer', 'crypto_type',
            'cookie_path', 'cookie_domain', 'table_name', 'schema_name', 'timeout',
            'encrypt_nonce_bits')},
        'secret': TEXT,
        'validate_key': TEXT,
        'encrypt_key': TEXT,
        'end_old': BOOL,
    },
}
#: The importer class of each source, and the importer options it gets under another name.
IMPORTERS: dict[str, tuple[Callable[..., Any], dict[str, str]]] = {
    COOKIE: (SignedCookieImporter, {}),
    REDIS: (RedisImporter, {'url': 'redis_url'}),
    BEAKER: (BeakerImporter, {}),
}


def _import_value(prefix: str, source: str, table: Mapping[str, Converter], name: str,
                  value: Any) -> Any:
    """``mongodb_session.import.<name>``'s value, converted by ``source``'s ``table``."""
    key = '%simport.%s' % (prefix, name)
    if name not in table:
        raise ConfigurationError('unknown setting %s (%simport.from = %s takes: %s)' % (
            key, prefix, source, ', '.join(sorted(set(IMPORT) | set(table)))))
    try:
        return table[name](value)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError('%s: bad value %r (%s)' % (key, value, exc)) from exc


def _known_importer(source: str, found: dict[str, Any], settings: Mapping[str, Any],
                    prefix: str) -> tuple[Callable[..., Any], dict[str, Any]]:
    """The importer class of ``source`` (one of :data:`IMPORTERS`), and its arguments."""
    factory, renamed = IMPORTERS[source]
    table = IMPORT_OPTIONS[source]
    arguments = {renamed.get(name, name): _import_value(prefix, source, table, name, value)
                 for name, value in found.items()}
    if source == BEAKER:
        end_old = arguments.pop('end_old', True)
        beaker = arguments or {name: value for name, value in settings.items()
                               if name.startswith(('session.', 'beaker.session.'))}
        return factory, {'settings': beaker, 'end_old': end_old}
    if 'secret' not in arguments:
        raise ConfigurationError('%simport.secret is required (the old session factory\'s '
                                 'secret)' % prefix)
    return factory, arguments


def _importer_options(found: dict[str, Any], settings: Mapping[str, Any],
                      prefix: str) -> dict[str, Any]:
    """The factory's ``importer`` and ``import_until`` from the ``import.*`` settings."""
    source = _string(found.pop('from', None) or '')
    if not source:
        raise ConfigurationError('%simport.from is required with the other %simport.* '
                                 'settings' % (prefix, prefix))
    options: dict[str, Any] = {}
    if 'until' in found:
        options['import_until'] = _import_value(prefix, source, IMPORT, 'until',
                                                found.pop('until'))
    if source in IMPORTERS:
        factory, arguments = _known_importer(source, found, settings, prefix)
    else:
        try:
            factory = DOTTED(source)
        except ValueError as exc:
            raise ConfigurationError(
                '%simport.from: %r is neither %s nor the dotted name of an importer (%s)'
                % (prefix, source, ', '.join(IMPORTERS), exc)) from exc
        arguments = dict(found)
        if not arguments:
            options['importer'] = factory
            return options
    try:
        options['importer'] = factory(**arguments)
    except (TypeError, ValueError, ImportError) as exc:
        raise ConfigurationError('%simport.from = %s: %s' % (prefix, source, exc)) from exc
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
        elif name.startswith('client.'):
            client[name[len('client.'):]] = _client_option(key, name[len('client.'):], value)
        else:
            (connection if name in CONNECTION else options)[name] = _converted(
                key, name, value, prefix)
    for name in REQUIRED:
        if not options.get(name):
            raise ConfigurationError('%s%s is required; make one with: %s'
                                     % (prefix, name, MAKE_SECRET))
    if imports:
        options.update(_importer_options(imports, settings, prefix))
    return connection, options, client


def _client_option(key: str, option: str, value: Any) -> Any:
    """``client.<option>``'s value, as pymongo checks it."""
    try:
        validate_client_option(option, value)
    except Exception as exc:
        raise ConfigurationError('%s: %s (see %s)' % (
            key, str(exc).replace(' Refer to docstring.', '').strip(),
            _PYMONGO_DOCS)) from exc
    return value


def _converted(key: str, name: str, value: Any, prefix: str) -> Any:
    """The value of the setting ``key`` (the option ``name``), converted by its row."""
    option = SETTINGS.get(name)
    if option is None:
        raise ConfigurationError('unknown setting %s%s' % (key, _suggestion(name, prefix)))
    try:
        return option.convert(value)
    except (TypeError, ValueError) as exc:
        expected = option.convert.expected
        if expected is None:
            message = '%s: bad value %r (%s)' % (key, value, exc)
        elif option.convert is DOTTED:
            message = '%s: bad value %r: expected %s (%s)' % (key, value, expected, exc)
        else:
            message = '%s: bad value %r: expected %s' % (key, value, expected)
        raise ConfigurationError(message) from exc


def _suggestion(name: str, prefix: str) -> str:
    """"; did you mean <the setting meant>?", by meaning (MEANINGS), else by spelling;
    a hint at the reference when neither finds one."""
    word = name.strip().lower().replace('-', '_')
    meant = MEANINGS.get(word) or MEANINGS.get(word.replace('_', ''))
    if meant is None:
        close = difflib.get_close_matches(word, list(SETTINGS), n=1)
        if not close:
            return ' (not a setting of pyramid_mongosession; the configuration reference ' \
                   'lists them all)'
        meant = (close[0],)
    glosses = {setting: SETTINGS[setting].gloss for setting in meant}
    return '; did you mean %s?' % ' or '.join(
        '%s%s%s' % (prefix, setting, ' (%s)' % glosses[setting] if glosses[setting] else '')
        for setting in meant)


def _prefixed(message: str, prefix: str) -> str:
    """A message of the factory's with every setting it names written out in full."""
    text = _NAMES_IN_MESSAGES.sub(lambda match: prefix + match.group(1), message)
    first = message.split(None, 1)[0].rstrip(':') if message.strip() else ''
    if '_' not in first and first in SETTINGS:
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
    database: str | None = parsed['database']
    return database


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

    Each of the client's waits (an answer, a connection, a server) is
    bounded by ``operation_timeout``, unless the settings name that limit
    or ``timeoutMS``, so that the client bounds every call itself: that
    costs less than a timeout set around each call (see
    :func:`~pyramid_mongosession.connection.bounds_every_call`).
    """
    url = connection.get('url')
    if url is not None and url.startswith(EMBEDDED_SCHEME):
        return (), {}, _embedded_client_class()
    args: tuple[Any, ...]
    if url is not None:
        args = (url,)
        named_in_url = [name for name, _ in parse_qsl(urlsplit(url).query)]
    else:
        args = (connection.get('host', CONNECTION['host'].default),
                connection.get('port', CONNECTION['port'].default))
        named_in_url = []
        for name in ('username', 'password'):
            if name in connection:
                client[name] = connection[name]
    client.update(client_limits(operation_timeout, [*named_in_url, *client]))
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
        db_name, connection.get('coll_name', CONNECTION['coll_name'].default),
        *_client(connection, client,
                 options.get('operation_timeout', FACTORY['operation_timeout'].default)))
    secret = options.pop('secret')
    try:
        return MongoSessionFactory(collection, secret, **options)
    except OptionError as exc:
        raise ConfigurationError(exc.spelled(prefix)) from exc
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(_prefixed(str(exc), prefix)) from exc
