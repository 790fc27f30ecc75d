"""Client CPU per single store command: pymongo's beside redis-py's.

No session library and no Pyramid: one client sends one kind of command
again and again, and this process's CPU time (``time.process_time``) per
command is reported, the server's excluded. pymongo runs against the
stand-in MongoDB server, redis-py against redis-server, both local and
answering at once, in the same pinned pass as the CPU table: so a reader
sees how much of a gap between two session libraries is their drivers'.

The MongoDB documents and Redis values are shaped like a small session (a
user id and a CSRF token, the bookkeeping beside them); commands name a
document by ``_id``, a value by its key, as the libraries do. Commands that
delete are sent on documents or keys stored beforehand, unmeasured. pymongo
sends its commands in one session kept for the thread, as
pyramid_mongosession does, and the read once more in the session pymongo
lends each call by itself (:data:`LENT`).
"""
import datetime
import gc
import pickle
import secrets
import statistics
import time

import pymongo

from libraries import CLIENT_TIMEOUTS, NoSession
from scenarios import CSRF, USER, Browser, make_app, warm_up

#: Items prepared at once for the commands that use one up.
BATCH = 200
#: How pyramid_mongosession reads a session: the find command itself (see its
#: ``Connection.find_one``), which makes no cursor.
FIND_COMMAND = "command('find') by _id"
#: Added to a command's name for its CPU when each one follows a request of a
#: Pyramid application without sessions (see :func:`_after_requests`).
AFTER_REQUEST = ', after a request'
#: Added to a command's name for its CPU sent without a session of the caller's:
#: in the one pymongo lends each call (the other pymongo rows send in one session
#: kept for the thread, as pyramid_mongosession does).
LENT = ', in a session pymongo lends the call'


def _find(doc_id):
    return {'find': 'sessions', 'filter': {'_id': doc_id}, 'limit': 1, 'singleBatch': True}


def _session_document(doc_id):
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None, microsecond=0)
    return {'_id': doc_id, 'data': {'user': USER, 'csrf': CSRF}, 'created': now,
            'expires': now + datetime.timedelta(minutes=20), 'v': 1, 'size': 80}


def _session_value():
    now = int(time.time())
    return pickle.dumps({'managed_dict': {'user': USER, 'csrf': CSRF}, 'created': now,
                         'timeout': 1200, 'expires': now + 1200}, pickle.HIGHEST_PROTOCOL)


def _timed(seconds, rounds, prepare, command):
    """Median µs of CPU per ``command(item)``, over ``rounds`` runs of ``seconds`` each.

    ``prepare(n)`` returns n items, unmeasured (None: one item, reused).
    """
    results = []
    for _ in range(rounds):
        gc.collect()
        count, cpu, wall = 0, 0.0, 0.0
        while wall < seconds or count < BATCH:
            items = prepare(BATCH) if prepare else [None] * BATCH
            wall0, cpu0 = time.perf_counter(), time.process_time()
            for item in items:
                command(item)
            cpu += time.process_time() - cpu0
            wall += time.perf_counter() - wall0
            count += len(items)
        results.append(cpu / count * 1e6)
    return statistics.median(results)


def _after_requests(seconds, rounds, measured):
    """``[(command + AFTER_REQUEST, µs)]`` for each ``(command, prepare, run)`` of
    ``measured``: µs of CPU per command when each one follows a request to the
    benchmark's application without sessions, that request's own CPU (measured
    alone in the same way) taken off.

    A command costs more there than in a loop of its own, as it does where a
    session library sends it: the request's code has taken the processor's
    caches. Both drivers are measured so.
    """
    library = NoSession()
    app = make_app(library.factory(), library.rotate, library.logout)
    warm_up(app)
    browser = Browser(app)

    def request(item):
        browser.get('/untouched')
    alone = _timed(seconds, rounds, None, request)
    costs = []
    for command, prepare, run in measured:
        def both(item, run=run):
            browser.get('/untouched')
            run(item)
        costs.append((command + AFTER_REQUEST,
                      _timed(seconds, rounds, prepare, both) - alone))
    return costs


def mongo_costs(url, seconds, rounds):
    """``[(command, µs)]`` for pymongo against the server at ``url``."""
    with pymongo.MongoClient(url, **CLIENT_TIMEOUTS) as client, \
            client.start_session(causal_consistency=False) as session:
        collection = client['bench_commands']['sessions']
        collection.delete_many({})
        one = secrets.token_hex(32)
        collection.insert_one(_session_document(one))

        def stored(count):
            docs = [_session_document(secrets.token_hex(32)) for _ in range(count)]
            collection.insert_many(docs)
            return [doc['_id'] for doc in docs]

        def find_within_timeout(item):
            with pymongo.timeout(5.0):
                find_command(item)

        def find_command(item, session=session):
            collection.database.command(_find(one), read_preference=collection.read_preference,
                                        codec_options=collection.codec_options,
                                        session=session)

        def update(item):
            collection.update_one({'_id': one}, {'$set': {'data.n': 1}}, session=session)

        def delete(doc_id):
            collection.delete_one({'_id': doc_id}, session=session)
        costs = [
            (FIND_COMMAND, _timed(seconds, rounds, None, find_command)),
            (FIND_COMMAND + LENT, _timed(seconds, rounds, None,
                                         lambda item: find_command(item, None))),
            ('find_one by _id', _timed(seconds, rounds, None, lambda item: collection.find_one(
                {'_id': one}, session=session))),
            ('update_one by _id ($set of one key)', _timed(seconds, rounds, None, update)),
            ('find_one_and_delete by _id', _timed(
                seconds, rounds, stored,
                lambda doc_id: collection.find_one_and_delete({'_id': doc_id},
                                                              session=session))),
            ('delete_one by _id', _timed(seconds, rounds, stored, delete)),
            (FIND_COMMAND + ' within pymongo.timeout(5)', _timed(
                seconds, rounds, None, find_within_timeout)),
        ] + _after_requests(seconds, rounds, [
            (FIND_COMMAND, None, find_command),
            ('update_one by _id ($set of one key)', None, update),
            ('delete_one by _id', stored, delete)])
        client.drop_database('bench_commands')
    return costs


def stub_costs(seconds, rounds):
    """``[(command, µs)]`` for the stub collection of the driver-stubbed runs (its own
    dict work, which those runs' "own code" includes), with the same commands as pymongo."""
    from stub_collection import StubCollection
    collection = StubCollection()
    one = secrets.token_hex(32)
    collection.insert_one(_session_document(one))
    when = datetime.datetime(2030, 1, 1)
    live = {'_id': one, 'expires': {'$not': {'$lte': when}}, 'retired': {'$exists': False}}

    def stored(count):
        docs = [_session_document(secrets.token_hex(32)) for _ in range(count)]
        for doc in docs:
            collection.insert_one(doc)
        return [doc['_id'] for doc in docs]

    return [
        (FIND_COMMAND, _timed(seconds, rounds, None,
                              lambda item: collection.database.command(_find(one)))),
        ('find_one by _id', _timed(seconds, rounds, None,
                                   lambda item: collection.find_one({'_id': one}))),
        ('update_one by _id ($set of one key)', _timed(
            seconds, rounds, None,
            lambda item: collection.update_one(live, {'$set': {'data.n': 1, 'expires': when},
                                                      '$inc': {'v': 1}}))),
        ('find_one_and_delete by _id', _timed(
            seconds, rounds, stored,
            lambda doc_id: collection.find_one_and_delete({'_id': doc_id}))),
        ('delete_one by _id', _timed(seconds, rounds, stored,
                                     lambda doc_id: collection.delete_one({'_id': doc_id}))),
    ]


def redis_costs(port, seconds, rounds):
    """``[(command, µs)]`` for redis-py against the redis-server on ``port``."""
    import redis
    pool = redis.ConnectionPool(host='127.0.0.1', port=port)
    client = redis.Redis(connection_pool=pool)
    try:
        value = _session_value()
        one = 'bench-commands:' + secrets.token_urlsafe(32)
        client.set(one, value)

        def stored(count):
            keys = ['bench-commands:' + secrets.token_urlsafe(32) for _ in range(count)]
            pipe = client.pipeline(transaction=False)
            for key in keys:
                pipe.set(key, value)
            pipe.execute()
            return keys

        def get(item):
            client.get(one)

        def set_(item):
            client.set(one, value)

        def delete(key):
            client.delete(key)
        costs = [
            ('GET', _timed(seconds, rounds, None, get)),
            ('SET (the whole value)', _timed(seconds, rounds, None, set_)),
            ('DELETE', _timed(seconds, rounds, stored, delete)),
        ] + _after_requests(seconds, rounds, [
            ('GET', None, get), ('SET (the whole value)', None, set_),
            ('DELETE', stored, delete)])
        client.delete(one)
    finally:
        client.close()
        pool.disconnect()
    return costs


#: The table's rows: what a session store does, pymongo's command, redis-py's.
PAIRS = [
    ('read a session', FIND_COMMAND, 'GET'),
    ('read a session, in no session of its own', FIND_COMMAND + LENT, None),
    ('read a session, through a cursor', 'find_one by _id', None),
    ('write a session', 'update_one by _id ($set of one key)', 'SET (the whole value)'),
    ('end a session, returning it', 'find_one_and_delete by _id', None),
    ('end a session', 'delete_one by _id', 'DELETE'),
    ('read a session, bounded per call', FIND_COMMAND + ' within pymongo.timeout(5)', None),
]
