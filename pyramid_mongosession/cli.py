"""``pmongosession``: look after the sessions collection of a Pyramid application.

It reads the application's ini file the way ``pserve`` does, builds the
session store from its ``mongodb_session.*`` settings, and runs one command::

    pmongosession ensure-indexes production.ini
    pmongosession purge production.ini --batch-seconds 60
    pmongosession stats production.ini
    pmongosession revoke production.ini user_id=42
    pmongosession sessions production.ini alice
    pmongosession revoke production.ini --user alice --keep HANDLE
    pmongosession export production.ini alice

Exit status: 0 when the command did its work, 1 when the database failed
(unreachable, timed out, refused), 2 for a usage or configuration error.
Errors are printed as one line on standard error. A reader that stops early
(``| head``) ends the command quietly, with status 0.
"""
from __future__ import annotations

import argparse
import configparser
import datetime
import json
import logging
import math
import os
import secrets
import sys
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, NoReturn, Sequence, TextIO

from bson.errors import BSONError
from bson.json_util import RELAXED_JSON_OPTIONS, dumps as json_dumps, loads as json_loads
from pyramid.exceptions import ConfigurationError

from .crypto import new_key
from .encoding import is_user_id, utcnow
from .exceptions import NoSuchSession, SessionStoreError
from .importers import imported_count
from .settings import EMBEDDED_SCHEME, PREFIX, session_factory_from_settings

if TYPE_CHECKING:
    from .factory import MongoSessionFactory
    from .maintenance import Maintenance

#: Where a command writes its output, one line per call.
Out = Callable[[str], None]

PROG = 'pmongosession'
#: Exit statuses.
OK, FAILED, USAGE = 0, 1, 2
#: The percentiles ``stats`` reports.
PERCENTILES = (50, 90, 99)


class UsageError(Exception):
    """A bad command line or configuration: exit status 2."""

    def __init__(self, message: str, prog: str = PROG) -> None:
        super().__init__(message)
        self.prog = prog


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line and no usage dump."""

    def error(self, message: str) -> NoReturn:
        raise UsageError('%s (see %s --help)' % (message, self.prog), self.prog)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError('expected a positive integer, not %r' % text) from None
    if value < 1:
        raise argparse.ArgumentTypeError('expected a positive integer, not %r' % text)
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError('expected a number of seconds, not %r' % text) from None
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError('expected a positive number of seconds, not %r' % text)
    return value


def _assignment(text: str) -> tuple[str, str]:
    name, sep, value = text.partition('=')
    if not sep or not name:
        raise argparse.ArgumentTypeError('expected NAME=VALUE, not %r' % text)
    return name, value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``pmongosession`` and its subcommands."""
    parser = _Parser(
        prog=PROG,
        description='Maintain the MongoDB sessions of a Pyramid application that uses '
                    'pyramid_mongosession. Each command reads the mongodb_session.* '
                    'settings from the application section of a Pyramid ini file, '
                    'as pserve does.',
        epilog='Exit status: 0 success, 1 database failure (unreachable, timed out, '
               'refused), 2 usage or configuration error. "%s COMMAND --help" '
               'describes each command.' % PROG)
    common = _Parser(add_help=False)
    common.add_argument(
        'config_uri', metavar='CONFIG_URI',
        help='the ini file, optionally with the application section: '
             'production.ini or production.ini#myapp (default section: main)')
    common.add_argument(
        '-n', '--app-name', metavar='NAME',
        help='the application section to read, as pserve --app-name '
             '(overrides a #name in CONFIG_URI)')
    common.add_argument(
        '--var', metavar='NAME=VALUE', action='append', type=_assignment, default=[],
        help='a value for %%(NAME)s in the ini file, as pserve\'s NAME=VALUE '
             'arguments; may be repeated. Not needed for the variables of '
             'mongodb_session.secret, which no command uses, nor of '
             'mongodb_session.encryption_keys, which only sessions, export and '
             'revoke --user use')
    common.add_argument(
        '--operation-timeout', metavar='SECONDS', type=_positive_float,
        help='the longest one database call may take (default: the ini file\'s '
             'mongodb_session.operation_timeout, else 5)')

    commands = parser.add_subparsers(dest='command', metavar='COMMAND', required=True)
    commands.add_parser(
        'ensure-indexes', parents=[common],
        help='create the TTL index that lets MongoDB delete expired sessions',
        description='Create the TTL index on the expires field, which lets the '
                    'server delete expired sessions by itself (MongoDB checks about '
                    'once a minute). Servers without TTL indexes (FerretDB 1.x; '
                    'Cosmos DB outside _ts) refuse it: the command says so and exits '
                    '0, and "purge" must then be run periodically.')
    purge = commands.add_parser(
        'purge', parents=[common],
        help='delete expired sessions, in batches',
        description='Delete every session whose expiry has passed, in batches '
                    'that adapt to the server\'s speed (progress goes to stderr on '
                    'long runs). '
                    'Expired sessions are never served (every read checks the '
                    'expiry); this removes their documents where no TTL index does, '
                    'or ahead of the TTL monitor. Safe to run while the application '
                    'serves requests, and from cron.')
    purge.add_argument(
        '--batch-seconds', metavar='SECONDS', type=_positive_float, default=30.0,
        help='the longest one delete may take; batches are sized to take about a '
             'third of it (default: %(default)s)')
    stats = commands.add_parser(
        'stats', parents=[common],
        help='count sessions and show the spread of their sizes',
        description='Print the number of sessions, how many have expired but are '
                    'still stored, whether a TTL index removes them, how many sessions '
                    'were imported from the library used before, and percentiles '
                    'of the documents\' sizes in bytes. Sizes come from the server '
                    '($bsonSize over a random $sample) where it can compute them; '
                    'otherwise they are measured client-side from the first '
                    'documents, and the output says which.')
    stats.add_argument(
        '--sample', metavar='N', type=_positive_int, default=1000,
        help='the most documents whose sizes are measured (default: %(default)s)')
    revoke = commands.add_parser(
        'revoke', parents=[common],
        help='delete the sessions of a user, or those whose data match a query',
        description='With --user, end every live session of that user (but the one '
                    '--keep names), by the index of sessions by user: log a user out '
                    'everywhere, or erase what is stored about their sessions. '
                    'Otherwise delete every session whose data match all the given '
                    'session keys and values (a scan of the collection). An empty '
                    'query is refused.',
        epilog='USERID and the values of KEY=VALUE are read as JSON when they parse '
               '(42, true, null, "42", [1, 2]) and as strings otherwise. --json takes a '
               'JSON object of session keys; MongoDB Extended JSON ({"$date": ...}) and '
               'query operators ({"$lt": ...}) are allowed there.')
    revoke.add_argument(
        'query', metavar='KEY=VALUE', nargs='*', type=_assignment,
        help='a session key and the value it must hold')
    revoke.add_argument(
        '--json', metavar='OBJECT', dest='json_query',
        help='the query as a JSON object, e.g. \'{"user_id": 42}\'; '
             'combined with any KEY=VALUE arguments')
    revoke.add_argument(
        '--user', metavar='USERID', type=parse_user_id,
        help='end the sessions of this user (the value of the session key '
             'mongodb_session.user_key)')
    revoke.add_argument(
        '--keep', metavar='HANDLE',
        help='with --user: spare the session with this handle (see "sessions"); a handle '
             'that is not one of the user\'s live sessions is an error (exit 2), and '
             'nothing is revoked')
    revoke.add_argument(
        '--dry-run', action='store_true',
        help='only count the matching sessions; delete nothing')
    sessions = commands.add_parser(
        'sessions', parents=[common],
        help='list the live sessions of a user',
        description='List the live sessions of a user, newest first: handle, when '
                    'created, last seen and expiring (UTC), and the client recorded '
                    '(network and User-Agent). One query, on the index of sessions by '
                    'user. Needs the encryption keys when session values are encrypted '
                    '(the user id is indexed as a keyed hash).',
        epilog='USERID is read as JSON when it parses (42, "42") and as a string '
               'otherwise.')
    sessions.add_argument('userid', metavar='USERID', type=parse_user_id,
                          help='the user id, as the session key mongodb_session.user_key '
                               'holds it')
    sessions.add_argument('--json', action='store_true', dest='as_json',
                          help='print a JSON array of the sessions instead of a table')
    export = commands.add_parser(
        'export', parents=[common],
        help='print everything stored about a user\'s sessions, as JSON',
        description='Print, as one JSON document, everything stored about the '
                    'sessions of a user, expired ones still stored included: their '
                    'handles, times, the client recorded and the session data, '
                    'decrypted (a data-subject access request). Erase it with '
                    '"revoke --user". Needs the encryption keys when session values '
                    'are encrypted.',
        epilog='USERID is read as JSON when it parses (42, "42") and as a string '
               'otherwise. The output is MongoDB Extended JSON, relaxed: dates as '
               '{"$date": "..."}.')
    export.add_argument('userid', metavar='USERID', type=parse_user_id,
                        help='the user id, as the session key mongodb_session.user_key '
                             'holds it')
    return parser


def parse_args(parser: argparse.ArgumentParser,
               argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse ``argv``, letting revoke's ``KEY=VALUE`` arguments follow its options.

    argparse gives a ``nargs='*'`` positional only the words before the first
    option (``revoke app.ini --json '{}' role=user`` would leave ``role=user``
    over), so the words left over are taken as more of revoke's query.
    """
    args, extras = parser.parse_known_args(argv)
    if extras and args.command == 'revoke' and not any(w.startswith('-') for w in extras):
        try:
            args.query = list(args.query) + [_assignment(word) for word in extras]
        except argparse.ArgumentTypeError as exc:
            raise UsageError('argument KEY=VALUE: %s (see %s revoke --help)'
                             % (exc, PROG), '%s revoke' % PROG) from None
    elif extras:
        raise UsageError('unrecognized arguments: %s (see %s --help)'
                         % (' '.join(extras), PROG))
    return args


# -- reading the ini file ------------------------------------------------------

#: Settings maintenance does without, and the stand-in each gets: no command
#: signs a cookie, and only the commands about users (:data:`NEED_KEYS`,
#: ``revoke --user``) hash a user id or decrypt a value; the others only need
#: to know that values are encrypted. So their ``%(NAME)s`` variables need no
#: value here, unless the command needs them.
STAND_INS: dict[str, Callable[[], str]] = {
    PREFIX + 'secret': lambda: secrets.token_urlsafe(32),
    PREFIX + 'encryption_keys': new_key,
    PREFIX + 'import.secret': lambda: secrets.token_urlsafe(32),
}


def _missing_variable(exc: BaseException) -> str | None:
    """The ini variable whose absence ``exc`` reports, or None."""
    if isinstance(exc, configparser.InterpolationMissingOptionError):
        return exc.reference                      # %(NAME)s
    if type(exc) is KeyError and len(exc.args) == 1 and isinstance(exc.args[0], str):
        return exc.args[0]                        # get setting = NAME
    return None


def _load_error(config_uri: str, exc: BaseException) -> UsageError:
    if isinstance(exc, FileNotFoundError):
        return UsageError('cannot read %s: %s' % (exc.filename or config_uri,
                                                  exc.strerror or exc))
    message = ' '.join(str(exc).split())  # configparser's messages span lines
    if isinstance(exc, ImportError):   # use = egg:... or call:... that is not installed
        return UsageError(
            'cannot load %s: its application cannot be imported (%s): install the '
            'application in the environment that runs %s (pip install -e . in its '
            'project), or run the %s of the environment that serves it'
            % (config_uri, message, PROG, PROG))
    return UsageError('cannot load %s: %s' % (config_uri, message))


def _read_with_placeholders(config_uri: str, app_name: str | None,
                            given: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The settings, read with a placeholder for each variable the file uses but nobody gave."""
    from pyramid.paster import get_appsettings
    placeholders: dict[str, str] = {}
    first_error: BaseException | None = None
    while True:
        try:
            settings = get_appsettings(config_uri, name=app_name,
                                       options=dict(given, **placeholders))
            return dict(settings), placeholders
        except (LookupError, ValueError, ImportError, configparser.Error, OSError) as exc:
            name = _missing_variable(exc)
            if name is None:   # another error, found once the variables have values
                raise _load_error(config_uri, exc) from None
            if name in given or name in placeholders:
                raise _load_error(config_uri, first_error or exc) from None
            first_error = first_error or exc
            placeholders[name] = '<no value for %s: %s>' % (name, secrets.token_hex(8))


def load_settings(config_uri: str, app_name: str | None = None,
                  variables: Iterable[tuple[str, str]] | None = None,
                  needs: Iterable[str] = ()) -> dict[str, Any]:
    """The settings of the ini file's application section, as ``pserve`` reads them.

    A variable that the file uses (``%(NAME)s``, ``get setting = NAME``) but
    that has no value is an error only where maintenance needs it: the file
    is read again with a placeholder for each such variable; the settings
    that end up holding one are dropped, or get a stand-in if maintenance
    does without them (:data:`STAND_INS`, unless the command ``needs`` them),
    and any other ``mongodb_session.*`` setting holding one is reported with
    the variables it needs.
    """
    settings, placeholders = _read_with_placeholders(config_uri, app_name, dict(variables or ()))
    needed: dict[str, list[str]] = {}   # variable -> the settings that use it
    for key, value in list(settings.items()):
        if key in placeholders:       # the placeholder itself, as a global setting
            del settings[key]
            continue
        missing = [name for name, placeholder in placeholders.items()
                   if isinstance(value, str) and placeholder in value]
        if not missing:
            continue
        if key in STAND_INS and key not in needs:
            settings[key] = STAND_INS[key]()
        elif key.startswith(PREFIX):
            for name in missing:
                needed.setdefault(name, []).append(key)
        else:
            del settings[key]
    if needed:
        raise UsageError('cannot load %s: no value for %s: give %s' % (
            config_uri,
            ', '.join('%s (used by %s)' % (name, ', '.join(keys)) for name, keys in needed.items()),
            ' '.join('--var %s=VALUE' % name for name in needed)))
    return settings


def factory_from_settings(settings: Mapping[str, Any],
                          operation_timeout: float | None = None) -> MongoSessionFactory:
    """The session factory described by ``settings`` (no connection is made yet).

    The secret is never used: a stand-in replaces it, so a file without one,
    such as an administrator's for ``ensure-indexes``, does as well.
    """
    settings = dict(settings)
    url = str(settings.get(PREFIX + 'url', '')).strip()
    if url.startswith(EMBEDDED_SCHEME):
        raise UsageError(
            '%surl = %s keeps sessions in the memory of each application process: '
            'there is no database for %s to work on' % (PREFIX, EMBEDDED_SCHEME, PROG))
    settings[PREFIX + 'secret'] = STAND_INS[PREFIX + 'secret']()
    if operation_timeout is not None:
        settings[PREFIX + 'operation_timeout'] = str(operation_timeout)
    try:
        return session_factory_from_settings(settings)
    except ConfigurationError as exc:
        raise UsageError(str(exc)) from None


# -- the commands ----------------------------------------------------------------

def ensure_indexes(factory: MongoSessionFactory, args: argparse.Namespace, out: Out) -> int:
    namespace = factory.connection.namespace()
    created = factory.indexes.ensure()
    if created:
        out('TTL index on %s.expires is in place: the server deletes expired sessions '
            'by itself (MongoDB checks about once a minute)' % namespace)
    else:
        out('the server refused a TTL index on %s.expires: expired sessions are '
            'ignored when read but stay stored; run "%s purge" periodically '
            '(e.g. from cron)' % (namespace, PROG))
    if factory.store.user_key is not None:
        indexes = factory.indexes.user_indexes()
        if indexes:
            out('user indexes on %s: %s (a user\'s sessions are one indexed query)'
                % (namespace, ', '.join(indexes)))
        else:
            out('the server refused partial indexes on %s: listing and revoking a user\'s '
                'sessions scan the collection' % namespace)
    return OK


def purge(factory: MongoSessionFactory, args: argparse.Namespace, out: Out) -> int:
    def progress(removed: int, done: float, seconds: float) -> None:
        if seconds >= PROGRESS_AFTER:
            print('%s purge: %d removed, %.0f%% done, %.0f s' % (PROG, removed, done * 100,
                                                                seconds), file=sys.stderr)
    removed = factory.maintenance.purge_expired(utcnow(), batch_seconds=args.batch_seconds,
                                                progress=progress)
    out('purged %d expired session%s from %s'
        % (removed, '' if removed == 1 else 's', factory.connection.namespace()))
    return OK


#: A purge that has run this many seconds reports its progress on stderr.
PROGRESS_AFTER = 5.0


def percentile(sorted_values: Sequence[int], p: float) -> int:
    """The ``p``-th percentile of ascending ``sorted_values`` (nearest rank)."""
    rank = max(1, math.ceil(p / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


def document_sizes(maintenance: Maintenance, total: int, sample: int
                   ) -> tuple[list[int], str]:
    """``(sizes, how)``: BSON sizes of at most ``sample`` documents, and how they were got."""
    sizes, refusal = maintenance.document_sizes(sample, at_random=total > sample)
    if refusal is not None:
        # FerretDB 1.x implements neither $bsonSize nor $sample: the store
        # measured the raw BSON of the first documents instead.
        how = ('measured client-side from the first %d of %d documents, in the '
               'server\'s natural order (the server cannot compute them: %s)'
               % (len(sizes), total, one_line(refusal)))
    elif total > sample:
        how = 'computed by the server for a random sample of %d of %d documents' % (
            len(sizes), total)
    else:
        how = 'computed by the server for all %d documents' % len(sizes)
    return sorted(sizes), how


def stats(factory: MongoSessionFactory, args: argparse.Namespace, out: Out) -> int:
    namespace = factory.connection.namespace()
    total, expired = factory.maintenance.session_counts(utcnow())
    ttl = factory.indexes.ttl_index_name()
    out('collection: %s' % namespace)
    out('sessions: %d' % total)
    out('live: %d' % (total - expired))
    out('expired, not yet removed: %d' % expired)
    if ttl:
        out('TTL index: %s (the server removes expired sessions)' % ttl)
    else:
        out('TTL index: none (expired sessions stay until "%s purge")' % PROG)
    imported, first, last = imported_count(factory.connection)
    out('imported from the previous session library: %d%s' % (
        imported, ' (first %s, latest %s UTC)' % (first.strftime('%Y-%m-%d %H:%M'),
                                                  last.strftime('%Y-%m-%d %H:%M'))
        if imported and first is not None and last is not None else ''))
    if not total:
        out('document size: no documents')
        return OK
    sizes, how = document_sizes(factory.maintenance, total, args.sample)
    if not sizes:  # every document went between the count and the sample
        out('document size: no documents')
        return OK
    parts = ['min %d' % sizes[0]]
    parts += ['p%d %d' % (p, percentile(sizes, p)) for p in PERCENTILES]
    parts.append('max %d' % sizes[-1])
    out('document size (bytes): %s' % ', '.join(parts))
    out('document sizes %s' % how)
    return OK


def parse_value(text: str) -> Any:
    """A ``KEY=VALUE`` value: JSON (Extended JSON too) when it parses, else the text."""
    try:
        return json_loads(text)
    except (ValueError, TypeError, BSONError):
        return text


def parse_user_id(text: str) -> Any:
    """A user id argument: as :func:`parse_value`, and only a value that is a user id
    (a string, an integer, a UUID, an ObjectId), never query operators or a list."""
    value = parse_value(text)
    if not is_user_id(value):
        raise argparse.ArgumentTypeError(
            'a user id is a string, an integer, a UUID or an ObjectId, matched exactly; '
            'not %r' % (value,))
    return value


def revoke_query(args: argparse.Namespace) -> dict[str, Any]:
    """The revoke query from ``--json`` and the ``KEY=VALUE`` arguments."""
    query: dict[str, Any] = {}
    if args.json_query is not None:
        try:
            query = json_loads(args.json_query)
        except (ValueError, TypeError, BSONError) as exc:
            raise UsageError('--json: not valid JSON: %s' % exc) from None
        if not isinstance(query, dict):
            raise UsageError('--json: expected a JSON object of session keys, not %s'
                             % type(query).__name__)
    for key, value in args.query:
        query[key] = parse_value(value)
    if not query:
        raise UsageError('refusing to revoke every session: give KEY=VALUE or --json')
    return query


def revoke(factory: MongoSessionFactory, args: argparse.Namespace, out: Out) -> int:
    if args.user is not None or args.keep is not None:
        return revoke_user(factory, args, out)
    query = revoke_query(args)
    shown = _show(query)
    if args.dry_run:
        count = factory.maintenance.count(query)
        out('%d session%s match %s; nothing deleted (--dry-run)'
            % (count, '' if count == 1 else 's', shown))
    else:
        removed = factory.maintenance.revoke(query)
        out('revoked %d session%s matching %s'
            % (removed, '' if removed == 1 else 's', shown))
    if factory.store.codec.cipher is not None:
        out('note: session values are encrypted at rest (encryption_keys): only '
            'operators such as {"$exists": true} can match them; "revoke --user" '
            'finds a user\'s sessions by their index')
    return OK


def _user_store(factory: MongoSessionFactory) -> None:
    """Refuse a command about users when sessions are not recorded under them."""
    if factory.store.user_key is None:
        raise UsageError('%suser_key is none: sessions are not recorded under their users'
                         % PREFIX)


def revoke_user(factory: MongoSessionFactory, args: argparse.Namespace, out: Out) -> int:
    if args.user is None:
        raise UsageError('--keep needs --user')
    if args.query or args.json_query is not None:
        raise UsageError('--user cannot be combined with KEY=VALUE or --json')
    accounts = factory.accounts
    _user_store(factory)
    shown = _show(args.user)
    kept = '' if args.keep is None else ' but %s' % args.keep
    if args.dry_run:
        records = accounts.user_sessions(args.user)
        if args.keep is not None and args.keep not in [record.handle for record in records]:
            raise _not_kept(args)
        count = sum(1 for record in records if record.handle != args.keep)
        out('%d live session%s of user %s%s; nothing deleted (--dry-run)'
            % (count, '' if count == 1 else 's', shown, kept))
    else:
        try:
            count = accounts.revoke_user(args.user, keep=args.keep)
        except NoSuchSession:
            raise _not_kept(args) from None
        out('revoked %d session%s of user %s%s' % (count, '' if count == 1 else 's', shown,
                                                  kept))
    return OK


def _not_kept(args: argparse.Namespace) -> UsageError:
    return UsageError('--keep %s is not the handle of a live session of user %s: nothing '
                      'was revoked (see "%s sessions %s %s")'
                      % (args.keep, _show(args.user), PROG, args.config_uri,
                         _show(args.user)))


def _when(moment: Any) -> str:
    return moment.strftime('%Y-%m-%d %H:%M:%S') if moment is not None else '-'


def sessions(factory: MongoSessionFactory, args: argparse.Namespace, out: Out) -> int:
    _user_store(factory)
    records = factory.accounts.user_sessions(args.userid)
    if args.as_json:
        out(json.dumps([record.as_dict() for record in records], indent=2))
        return OK
    header = ('HANDLE', 'CREATED (UTC)', 'LAST SEEN', 'EXPIRES', 'NETWORK', 'USER AGENT')
    rows = [(record.handle, _when(record.created), _when(record.last_seen),
             _when(record.expires) if record.expires is not None else 'never',
             record.client_address or '-', record.user_agent or '-')
            for record in records]
    widths = [max(len(row[n]) for row in [header] + rows) for n in range(len(header) - 1)]
    for row in [header] + rows:
        out('  '.join(cell.ljust(width) for cell, width in zip(row, widths)) + '  ' + row[-1])
    out('%d live session%s of user %s in %s' % (
        len(records), '' if len(records) == 1 else 's', _show(args.userid),
        factory.connection.namespace()))
    return OK


def export(factory: MongoSessionFactory, args: argparse.Namespace, out: Out) -> int:
    _user_store(factory)
    exported = factory.accounts.export(args.userid)
    document = {
        'user': args.userid,
        'collection': factory.connection.namespace(),
        'exported': datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0),
        'sessions': exported,
    }
    out(json_dumps(document, json_options=RELAXED_JSON_OPTIONS, indent=2, ensure_ascii=False))
    return OK


def _show(query: Mapping[str, Any]) -> str:
    from bson.json_util import dumps
    try:
        return dumps(query, sort_keys=True)
    except (TypeError, ValueError):
        return repr(query)


def one_line(message: object) -> str:
    """``message`` on one line, without pymongo's topology dump."""
    text = ' '.join(str(message).split())
    return text.split(', Topology Description: ')[0]


COMMANDS: dict[str, Callable[[MongoSessionFactory, argparse.Namespace, Out], int]] = {
    'ensure-indexes': ensure_indexes,
    'purge': purge,
    'stats': stats,
    'revoke': revoke,
    'sessions': sessions,
    'export': export,
}
#: The commands that find sessions by user: with encryption_keys they need the
#: keys (the user id is indexed as their keyed hash; export decrypts values).
NEED_KEYS = ('sessions', 'export')


# -- the entry point ---------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    """Run ``pmongosession`` with ``argv`` (default: ``sys.argv[1:]``); return the exit status.

    When the reader of the output goes away before the end (``pmongosession
    stats production.ini | head -3``), the command stops writing and ends
    quietly, without a traceback: with status 0, as the reader wanted no more
    (``stats`` only reads; the other commands write their output once their
    work is done), or with the status of a failure it had already reported.
    """
    status = OK
    try:
        status = _run(argv)
        sys.stdout.flush()
    except BrokenPipeError:
        _discard(sys.stdout)
    return status


def _discard(stream: TextIO) -> None:
    """Point ``stream`` at the null device once its reader has gone away, so that
    the interpreter's last flush does not fail again."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return   # not a file (captured output): nothing more will reach it anyway
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def _run(argv: Sequence[str] | None) -> int:
    def out(line: str) -> None:
        print(line, file=sys.stdout)

    def fail(status: int, message: object, prog: str = PROG) -> int:
        try:
            print('%s: error: %s' % (prog, one_line(message)), file=sys.stderr)
            sys.stderr.flush()
        except BrokenPipeError:
            _discard(sys.stderr)
        return status

    parser = build_parser()
    try:
        args = parse_args(parser, argv)
    except UsageError as exc:
        return fail(USAGE, exc, exc.prog)
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else USAGE

    # The commands report what the package would log (a refused TTL index, an outage).
    store_log = logging.getLogger('pyramid_mongosession')
    level = store_log.level
    store_log.setLevel(logging.ERROR)
    factory = None
    try:
        needs: tuple[str, ...] = ()
        if args.command in NEED_KEYS or getattr(args, 'user', None) is not None:
            needs = (PREFIX + 'encryption_keys',)
        settings = load_settings(args.config_uri, args.app_name, args.var, needs)
        if not any(key.startswith(PREFIX) for key in settings):
            section = args.app_name or args.config_uri.partition('#')[2] or 'main'
            raise UsageError(
                'the application section %r of %s has no %s* settings (for a pipeline '
                'or composite, name the application: %s#myapp)'
                % (section, args.config_uri.partition('#')[0], PREFIX,
                   args.config_uri.partition('#')[0]))
        factory = factory_from_settings(settings, args.operation_timeout)
        if args.command != 'ensure-indexes':
            # Only ensure-indexes creates indexes: the others may run under a
            # role without createIndex (stats under a read-only one).
            factory.connection.first_use.clear()
        return COMMANDS[args.command](factory, args, out)
    except UsageError as exc:
        return fail(USAGE, exc, exc.prog)
    except SessionStoreError as exc:
        return fail(FAILED, exc)
    except ValueError as exc:  # e.g. the refusal of an empty query
        return fail(USAGE, exc)
    except KeyboardInterrupt:
        return fail(FAILED, 'interrupted')
    finally:
        store_log.setLevel(level)
        if factory is not None:
            factory.connection.close()


if __name__ == '__main__':
    sys.exit(main())
