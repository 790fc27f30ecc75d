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
import logging
import os
import sys
from typing import TYPE_CHECKING, Sequence, TextIO

from ..exceptions import SessionStoreError
from ..settings import PREFIX

if TYPE_CHECKING:
    from ..factory import MongoSessionFactory
from .base import (
    FAILED, OK, PROG, USAGE, Out, UsageError, build_parser, parse_args, parse_value)
from .commands import COMMANDS, NEED_KEYS, one_line, percentile, stats
from .ini import factory_from_settings, load_settings

__all__ = ['COMMANDS', 'Out', 'build_parser', 'factory_from_settings', 'load_settings', 'main',
           'parse_value', 'percentile', 'stats']


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


def _factory(args: argparse.Namespace) -> MongoSessionFactory:
    """The session factory of the application the command's ini file names."""
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
    return factory


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
        factory = _factory(args)
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

