"""What a server can do, measured: TTL indexes and atomic updates of one document.

The test suite probes each server it uses once per test session (fixture
``probed`` in ``tests/conftest.py``), and tests that need a capability run on
a server that has it (``atomic_server_url``, ``ttl_server_url``).

Atomic updates: THREADS threads sharing one client with a default connection
pool (so one connection each) wait at a barrier and then send
UPDATES_PER_THREAD updates each to one document, every update ``$set``-ing a
field of its own and ``$inc``-rementing a shared counter. On a server that
applies each update atomically, as MongoDB does, the document ends with every
field and the counter equal to the number of updates; any field or increment
missing is a lost change. A server is atomic when ROUNDS rounds lose nothing;
the probe stops at the first round that loses a change.

TTL indexes: whether ``createIndexes`` accepts a TTL index on ``expires``
(``expireAfterSeconds: 0``) and keeps its option. Whether the server then
deletes an expired document is not checked in the suite: MongoDB's TTL
monitor runs once a minute, so no cheap wait tells. ``python3 -m tests.probes
--ttl-wait 70`` also waits that long for an expired document to disappear on
each server the suite can start, and prints what ``docs/compatibility.rst``
reports.
"""
import argparse
import collections
import contextlib
import datetime
import os
import shutil
import sys
import threading
import time
import uuid

import pymongo

from . import servers

THREADS = 16
UPDATES_PER_THREAD = 10
ROUNDS = 5

Capabilities = collections.namedtuple('Capabilities', 'version atomic_updates lost ttl_index')
Capabilities.__doc__ = """What one server can do.

``atomic_updates``: True when no concurrent update was lost; ``lost``: the
number of the round's 2 x THREADS x UPDATES_PER_THREAD changes (fields set
and increments) lost in the first round that lost any. ``ttl_index``:
``'refused'`` (createIndexes failed), ``'dropped'`` (accepted, but the index
lacks the option), ``'accepted'`` (kept; expiry not checked or not seen in the
wait), or ``'expires'`` (an expired document disappeared within the wait).
"""


def lost_updates(database):
    """One round of the atomic-updates probe: the number of changes lost."""
    collection = database['atomic']
    doc_id = uuid.uuid4().hex
    collection.insert_one({'_id': doc_id, 'n': 0})
    barrier = threading.Barrier(THREADS)
    errors = []

    def worker(index):
        try:
            barrier.wait(30)
            for update in range(UPDATES_PER_THREAD):
                collection.update_one(
                    {'_id': doc_id},
                    {'$set': {'f%02d_%02d' % (index, update): True}, '$inc': {'n': 1}})
        except Exception as exc:  # re-raised below
            errors.append(exc)
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    if errors or any(thread.is_alive() for thread in threads):
        raise RuntimeError('the atomic-updates probe failed: %r' % errors)
    document = collection.find_one({'_id': doc_id})
    expected = THREADS * UPDATES_PER_THREAD
    fields = sum(1 for key in document if key.startswith('f'))
    return (expected - fields) + (expected - document['n'])


def atomic_updates(database, rounds=ROUNDS):
    """The number of changes lost in the first of ``rounds`` rounds that lost any, or 0."""
    for _ in range(rounds):
        lost = lost_updates(database)
        if lost:
            return lost
    return 0


def ttl_index(database, wait=0.0):
    """The TTL probe's answer (see ``Capabilities``); waits up to ``wait`` seconds for expiry."""
    collection = database['ttl']
    try:
        collection.create_index([('expires', pymongo.ASCENDING)], expireAfterSeconds=0)
    except pymongo.errors.OperationFailure:
        return 'refused'
    specs = [spec for spec in collection.index_information().values()
             if spec.get('key') == [('expires', 1)]]
    if not specs or specs[0].get('expireAfterSeconds') != 0:
        return 'dropped'
    if wait <= 0:
        return 'accepted'
    collection.insert_one({'expires': datetime.datetime(2000, 1, 1)})
    end = time.monotonic() + wait
    while time.monotonic() < end:
        if collection.count_documents({}) == 0:
            return 'expires'
        time.sleep(1)
    return 'accepted'


def probe(url, ttl_wait=0.0):
    """Probe the server at ``url`` (default connection pool) in a database dropped afterwards."""
    client = pymongo.MongoClient(url, serverSelectionTimeoutMS=5000)
    name = 'probe_%s' % uuid.uuid4().hex[:16]
    try:
        version = client.server_info().get('version', '?')
        lost = atomic_updates(client[name])
        return Capabilities(version=version, atomic_updates=lost == 0, lost=lost,
                            ttl_index=ttl_index(client[name], ttl_wait))
    finally:
        client.drop_database(name)
        client.close()


def describe(found, ttl_wait=0.0):
    """One line for people: what ``probe`` found."""
    if found.atomic_updates:
        atomic = 'yes'
    else:
        atomic = 'no (%d of %d changes lost in a round)' % (
            found.lost, 2 * THREADS * UPDATES_PER_THREAD)
    ttl = found.ttl_index
    if ttl == 'accepted' and ttl_wait > 0:
        ttl += ' (an expired document was still there after %gs)' % ttl_wait
    return 'announces %s; atomic updates: %s; TTL index: %s' % (found.version, atomic, ttl)


@contextlib.contextmanager
def _started(start):
    server = start()
    try:
        yield server.url
    finally:
        server.close()


def main(argv=None):
    """Probe every server the suite can start (and ``MONGODB_URL``'s); print one line each."""
    parser = argparse.ArgumentParser(
        prog='python3 -m tests.probes',
        description='Probe every server the suite can start, and the one MONGODB_URL names.')
    parser.add_argument('--ttl-wait', type=float, default=0.0, metavar='SECONDS',
                        help='how long to wait for an expired document to disappear')
    args = parser.parse_args(argv)
    candidates = []
    if os.environ.get('MONGODB_URL'):
        candidates.append(('MONGODB_URL', lambda: contextlib.nullcontext(
            os.environ['MONGODB_URL'])))
    if shutil.which('mongod'):
        candidates.append(('mongod', lambda: _started(lambda: servers.ServerProcess(
            'mongod', shutil.which('mongod')).start())))
    candidates.append(('FerretDB %s (SQLite)' % servers.FERRETDB_VERSION, lambda: _started(
        lambda: servers.ServerProcess('ferretdb', servers.ferretdb_binary()).start())))
    candidates.append(('mongo-java-server %s (memory)' % servers.MONGO_JAVA_SERVER_VERSION,
                       lambda: _started(servers.start_mongo_java_server)))
    failed = False
    for name, context in candidates:
        try:
            with context() as url:
                found = probe(url, args.ttl_wait)
        except Exception as exc:  # reported, and the next server is probed
            print('%s: not probed: %s' % (name, exc))
            failed = True
            continue
        print('%s: %s' % (name, describe(found, args.ttl_wait)))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
