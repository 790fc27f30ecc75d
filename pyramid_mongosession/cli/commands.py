"""The commands of ``pmongosession``, one function each: a factory in, lines out."""
from __future__ import annotations

import argparse
import datetime
import json
import math
import sys
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from bson.errors import BSONError
from bson.json_util import RELAXED_JSON_OPTIONS, dumps as json_dumps, loads as json_loads

from ..encoding import utcnow
from ..exceptions import NoSuchSession
from ..importers import imported_count
from ..settings import PREFIX
from .base import OK, PERCENTILES, PROG, Out, UsageError, parse_value

if TYPE_CHECKING:
    from ..factory import MongoSessionFactory
    from ..maintenance import Maintenance


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
    _user_store(factory)
    kept = '' if args.keep is None else ' but %s' % args.keep
    if args.dry_run:
        count = _would_revoke(factory, args)
        out('%d live session%s of user %s%s; nothing deleted (--dry-run)'
            % (count, '' if count == 1 else 's', _show(args.user), kept))
        return OK
    try:
        count = factory.accounts.revoke_user(args.user, keep=args.keep)
    except NoSuchSession:
        raise _not_kept(args) from None
    out('revoked %d session%s of user %s%s' % (count, '' if count == 1 else 's',
                                              _show(args.user), kept))
    return OK


def _would_revoke(factory: MongoSessionFactory, args: argparse.Namespace) -> int:
    """How many sessions ``revoke --user`` would end (``--dry-run``)."""
    records = factory.accounts.user_sessions(args.user)
    if args.keep is not None and args.keep not in [record.handle for record in records]:
        raise _not_kept(args)
    return sum(1 for record in records if record.handle != args.keep)


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
