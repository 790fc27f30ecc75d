"""What every part of ``pmongosession`` shares: its name, its errors, its argument parser."""
from __future__ import annotations

import argparse
import math
import sys
from typing import Any, Callable, NoReturn, Sequence

from bson.errors import BSONError
from bson.json_util import loads as json_loads

from ..encoding import is_user_id


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


#: The options whose values are names chosen elsewhere, which may begin with "-":
#: a handle is base64url (one in 64 begins with "-"), a user id is the application's.
_NAME_OPTIONS = frozenset({'--keep', '--user'})


def _option_strings(parser: argparse.ArgumentParser) -> set[str]:
    """Every option string of ``parser`` and of its subcommands."""
    found: set[str] = set()
    for action in parser._actions:
        found.update(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for subparser in action.choices.values():
                found |= _option_strings(subparser)
    return found


def _bind_names(parser: argparse.ArgumentParser, argv: Sequence[str]) -> list[str]:
    """``argv`` with ``--keep -x`` written ``--keep=-x``: argparse takes a word that
    begins with "-" for an option, so a handle such as ``-3NNnwK3X04kNOanPYDVtA``
    would otherwise be "expected one argument". A word that is one of our options
    is left alone, so ``--keep --dry-run`` is still an error."""
    options = _option_strings(parser)
    words = list(argv)
    bound: list[str] = []
    while words:
        word = words.pop(0)
        if word == '--':
            return bound + [word] + words
        if word in _NAME_OPTIONS and words and words[0].startswith('-') \
                and words[0] not in options and words[0] != '--':
            word = '%s=%s' % (word, words.pop(0))
        bound.append(word)
    return bound


def parse_args(parser: argparse.ArgumentParser,
               argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse ``argv``, letting revoke's ``KEY=VALUE`` arguments follow its options,
    and a handle or user id begin with "-".

    argparse gives a ``nargs='*'`` positional only the words before the first
    option (``revoke app.ini --json '{}' role=user`` would leave ``role=user``
    over), so the words left over are taken as more of revoke's query.
    """
    args, extras = parser.parse_known_args(
        _bind_names(parser, sys.argv[1:] if argv is None else argv))
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
