"""Measuring: one pass of every scenario and library against one set of servers.

A :class:`Pass` runs the measurements it is given, as ``(scenario,
population)`` pairs: population 0 is an empty store, emptied again before
each measurement; a population N is a store that holds N other sessions,
filled once per library and size (sizes in increasing order, each grown from
the one before), whose scenarios then run without emptying it.

Each library gets two applications per connection-pool setting: a plain one
for the timed runs and one whose store client counts round trips and bytes
(:class:`libraries.Traffic`) for the counted runs. Counted runs come first,
then the timed runs in rounds, the order of libraries rotating each round.
"""
import datetime
import gc
import secrets
import statistics
import sys
import threading
import time
import traceback

import pymongo

from scenarios import POPULATED, SCENARIOS, make_app, stored_visitor, warm_up
from libraries import Traffic


def short_error(exc):
    """One line naming an exception, without the server's full reply."""
    text = str(exc).split(', full error:')[0].split('\n')[0]
    if len(text) > 160:
        text = text[:157] + '...'
    return '%s: %s' % (type(exc).__name__, text) if text else type(exc).__name__


def server_caused(exc):
    """Whether ``exc`` is the server's doing (it was too slow, or went away), not the
    benchmark's: such a failure is a miss reported in the tables, not a broken run."""
    from pymongo.errors import ConnectionFailure, PyMongoError
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, ConnectionFailure) or (isinstance(exc, PyMongoError)
                                                  and exc.timeout):
            return True
        if isinstance(exc, (TimeoutError, ConnectionError)):   # socket timeouts too
            return True
        if type(exc).__name__ in ('TimeoutError', 'ConnectionError', 'BusyLoadingError'):
            return True   # redis-py's, which derive from neither
        if (type(exc).__name__ == 'SessionBackendError'
                and str(exc).startswith('MongoDB is unavailable')):
            return True   # the outage breaker, open after a timeout
        exc = exc.__cause__ or exc.__context__
    return False


def _failure(exc):
    """What stderr shows of a failed measurement: one line for the server's doing
    (the tables say the rest), the traceback for the benchmark's."""
    if server_caused(exc):
        return '  the server: %s\n' % short_error(exc)
    return traceback.format_exc()


def thousands(number):
    """10000 -> '10 000'."""
    return format(number, ',').replace(',', ' ')


def label(scenario, population):
    """How the tables name a measurement."""
    if not population:
        return scenario
    return '%s, %s stored' % (scenario, thousands(population))


def measurements(scenarios, populations):
    """The ``(scenario, population)`` pairs to run, in the order of the tables."""
    chosen = [(scenario, 0) for scenario in scenarios]
    for population in sorted(populations):
        chosen += [(scenario, population) for scenario in POPULATED if scenario in scenarios]
    return chosen


#: A timed run that took this many times its budget is not repeated in later rounds.
SLOW = 5


class Meter:
    """Runs a scenario's measured part: timed, or counted against a Traffic.

    ``budget``: ``seconds`` and ``min_requests`` (timed runs),
    ``counted_requests`` (counted runs), ``threads``, ``per_thread`` and
    ``counted_per_thread`` (concurrency), ``batch`` (scenarios that prepare
    requests in batches). ``verify``: the scenario checks afterwards that its
    session was kept, with requests that are not measured.
    """

    def __init__(self, budget, traffic=None, verify=False, keeps_sessions=True):
        self.traffic = traffic
        self.seconds = budget['seconds']
        self.min_requests = budget['min_requests']
        self.counted_requests = budget['counted_requests']
        self.threads = budget['threads']
        self.per_thread = budget['counted_per_thread'] if traffic else budget['per_thread']
        self.batch = budget['batch']
        self.keeps_sessions = verify and keeps_sessions
        self.lost_updates = self.expected_updates = None
        self._totals = [0, 0.0, 0.0, 0, 0]   # requests, wall, cpu, round trips, bytes

    def loop(self, step):
        """Call ``step(i)`` (one request) repeatedly."""
        def run():
            if self.traffic is not None:
                for i in range(self.counted_requests):
                    step(i)
                return self.counted_requests
            i = 0
            end = time.perf_counter() + self.seconds
            while i < self.min_requests or time.perf_counter() < end:
                step(i)
                i += 1
            return i
        self.block(run)

    def batches(self, prepare, step):
        """``prepare(n)`` makes n things unmeasured; ``step(thing)`` (one request) is measured."""
        def run_over(items):
            def run():
                for item in items:
                    step(item)
                return len(items)
            return run
        if self.traffic is not None:
            self.block(run_over(prepare(self.counted_requests)))
            return
        # Preparing costs about as much as what is measured: the whole loop
        # stops at twice the budget even if the measured part has not used it.
        first, end = True, time.perf_counter() + 2 * self.seconds
        while self._totals[0] < self.min_requests or (
                self._totals[1] < self.seconds and time.perf_counter() < end):
            self.block(run_over(prepare(self.batch)), collect=first)
            first = False

    def block(self, run, collect=True):
        """Measure ``run()``, which makes requests and returns how many."""
        if collect:   # a full collection costs milliseconds: once per measurement
            gc.collect()
        trips0, bytes0 = self.traffic.snapshot() if self.traffic else (0, 0)
        wall0, cpu0 = time.perf_counter(), time.process_time()
        requests = run()
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        trips1, bytes1 = self.traffic.snapshot() if self.traffic else (0, 0)
        for i, value in enumerate((requests, wall, cpu, trips1 - trips0, bytes1 - bytes0)):
            self._totals[i] += value

    @property
    def result(self):
        requests, wall, cpu, trips, sent = self._totals
        return {
            'requests': requests,
            'requests_per_s': requests / wall,
            'cpu_us': cpu / requests * 1e6,
            'round_trips': trips / requests,
            'bytes_written': sent / requests,
        }

    def lost(self, lost, expected):
        self.lost_updates, self.expected_updates = lost, expected


def server_control(url, threads, per_thread, pool_size):
    """Does the MongoDB server itself keep concurrent single-document updates?

    The concurrency scenario's threads, without any session library: each
    sends ``$set`` of its own fields to ONE document, through a client with
    ``pool_size`` connections. Any field missing afterwards was lost by the
    server, not by a library. Returns ``(lost, expected)``.
    """
    with pymongo.MongoClient(url, maxPoolSize=pool_size) as client:
        collection = client['bench_server_control']['race']
        collection.delete_many({})
        collection.insert_one({'_id': 'one', 'data': {}})

        def worker(t):
            for n in range(per_thread):
                collection.update_one({'_id': 'one'}, {'$set': {'data.t%d_%d' % (t, n): 1}})
        workers = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join()
        stored = collection.find_one({'_id': 'one'})['data']
        client.drop_database('bench_server_control')
    return threads * per_thread - len(stored), threads * per_thread


#: What :func:`server_probe` times, in its order.
PROBES = [
    ('find by _id', 'find', False),
    ('find by _id and a condition on another field', 'find', True),
    ('update by _id', 'update', False),
    ('update by _id and a condition on another field', 'update', True),
    ('delete_many by a $regex on _id, as Beaker sweeps expired entries', 'regex', False),
]


def server_probe(collection):
    """Milliseconds the server takes for single commands on a populated collection.

    No session library: one document is stored after the others, and each
    command of :data:`PROBES` is sent once (by its ``_id``, alone or with
    ``expires: {$not: {$lte: now}}``, as a session store may ask); the
    document is then deleted. Returns ``[(what, ms)]``.
    """
    doc_id = secrets.token_hex(32)
    now = datetime.datetime.now(datetime.timezone.utc)
    collection.insert_one({'_id': doc_id, 'data': {}, 'expires': now + datetime.timedelta(
        hours=1)})
    timings = []
    try:
        for what, command, condition in PROBES:
            query = {'_id': doc_id}
            if condition:
                query['expires'] = {'$not': {'$lte': now}}
            started = time.perf_counter()
            if command == 'find':
                found = collection.find_one(query)
                if found is None:
                    raise RuntimeError('server probe: %s found nothing' % what)
            elif command == 'update':
                collection.update_one(query, {'$set': {'data.probe': 1}})
            else:
                collection.delete_many({'_id': {'$regex': '^probe-none:'},
                                        'expiration': {'$ne': None, '$lte': 0}})
            timings.append((what, (time.perf_counter() - started) * 1000))
    finally:
        collection.delete_one({'_id': doc_id})
    return timings


class Pass:
    """Every measurement of every library against one set of servers.

    ``servers``: ``{'mongodb': url, 'redis': port}``. ``budget``: see
    :class:`Meter`, plus ``rounds``, ``populated_min_requests`` and
    ``populated_counted``. ``counted``: also make the counted runs.
    ``single_connection``: in ``concurrency``, MongoDB clients get one
    connection (a server that does not apply each update atomically).
    """

    def __init__(self, name, library_classes, servers, budget, counted, single_connection,
                 progress):
        self.name = name
        self.libraries = [cls() for cls in library_classes]
        self.servers = servers
        self.budget = budget
        self.counted = counted
        self.single_connection = single_connection
        self.progress = progress
        self.apps = {}
        self.rows = {}
        #: ``{(library, population): seconds}`` spent filling stores.
        self.populating = {}
        #: ``{population: (library, [(what, ms)])}``: see :func:`server_probe`.
        self.probes = {}
        self.visitors = {}

    # -- set-up -------------------------------------------------------------------

    def start(self, stack):
        for library in self.libraries:
            library.start(self.servers)
            stack.callback(library.close)

    def pool_size(self, library, scenario):
        if scenario == 'concurrency' and self.single_connection and library.server == 'mongodb':
            return 1
        return None

    def app(self, library, pool_size, counted):
        """The library's application (timed or counted) for that pool size, warmed up."""
        key = library.name, pool_size
        if key not in self.apps:
            self.progress('%s: warming up %s%s' % (self.name, library.name, '' if pool_size is None
                                                   else ' (pool of %d)' % pool_size))
            traffic = Traffic()
            timed = make_app(library.factory(None, pool_size), library.rotate, library.logout)
            counting = make_app(library.factory(traffic, pool_size), library.rotate,
                                library.logout)
            warm_up(timed)
            warm_up(counting)
            self.apps[key] = timed, counting, traffic
        timed, counting, traffic = self.apps[key]
        return (counting, traffic) if counted else (timed, None)

    @staticmethod
    def supports(library, scenario, population):
        return scenario not in library.unsupported and (not population or library.no_store is None)

    def populate(self, library, population, first, scenarios):
        """Fill the library's store up to ``population`` sessions; then store its visitors."""
        started = time.perf_counter()
        app, _ = self.app(library, None, counted=False)
        if first:
            library.reset()
            stored_visitor(app)   # the session that the others copy: stored by the library
        missing = population - library.stored()
        if missing > 0:
            library.copy_sessions(missing)
        self.populating[library.name, population] = time.perf_counter() - started
        for scenario in scenarios:
            self.visitors[scenario, population, library.name] = stored_visitor(app)

    # -- running ----------------------------------------------------------------

    def probe(self, population):
        """Time single commands on the populated collection of the last MongoDB library."""
        mongo = [lib for lib in self.libraries if lib.server == 'mongodb' and lib.no_store is None]
        if mongo:
            library = mongo[-1]
            self.progress('%s: probing the server with %s stored' % (
                self.name, thousands(population)))
            try:
                timings = server_probe(library.sessions_collection())
            except Exception as exc:  # reported instead of the timings
                timings = [('failed', short_error(exc))]
            self.probes[population] = library.name, timings

    def run(self, chosen, probe=False):
        groups = []
        for scenario, population in chosen:
            if not groups or groups[-1][0] != population:
                groups.append((population, []))
            groups[-1][1].append(scenario)
        first_population = True
        for population, scenarios in groups:
            self._run_group(scenarios, population, first_population, probe)
            if population:
                first_population = False
        return self.rows

    def _run_group(self, scenarios, population, first_population, probe):
        libraries = self.libraries
        for scenario in scenarios:
            for library in libraries:
                if self.supports(library, scenario, population):
                    self.rows[scenario, population, library.name] = {
                        'counted': None, 'timed': [], 'lost': [0, 0], 'error': None}
        if population:
            for library in libraries:
                supported = [s for s in scenarios if self.supports(library, s, population)]
                if not supported:
                    continue
                self.progress('%s: storing %s sessions for %s' % (
                    self.name, thousands(population), library.name))
                try:
                    self.populate(library, population, first_population, supported)
                except Exception as exc:  # reported in the tables
                    for scenario in supported:
                        row = self.rows[scenario, population, library.name]
                        row['error'] = 'filling the store: ' + short_error(exc)
                        row['server'] = server_caused(exc)
                    sys.stderr.write('\n%s: filling %s\'s store failed:\n%s' % (
                        self.name, library.name, _failure(exc)))
            if probe:
                self.probe(population)
        if self.counted:
            for scenario in scenarios:
                for library in libraries:
                    if self.supports(library, scenario, population):
                        self.progress('%s: counting %-24s %s' % (
                            self.name, label(scenario, population), library.name))
                        self._measure(library, scenario, population, counted=True)
        rounds = self.budget['rounds']
        for round_ in range(rounds):
            for scenario in scenarios:
                shift = round_ % len(libraries)
                for library in libraries[shift:] + libraries[:shift]:
                    if self.supports(library, scenario, population):
                        self.progress('%s: round %d/%d  %-24s %s' % (
                            self.name, round_ + 1, rounds, label(scenario, population),
                            library.name))
                        self._measure(library, scenario, population, counted=False)

    def _measure(self, library, scenario, population, counted):
        row = self.rows[scenario, population, library.name]
        if row['error'] or row.get('once'):
            return
        budget = dict(self.budget)
        if population:
            budget['min_requests'] = budget['populated_min_requests']
            budget['counted_requests'] = budget['populated_counted']
        app, traffic = self.app(library, self.pool_size(library, scenario), counted)
        first = not row['timed'] and row['counted'] is None
        meter = Meter(budget, traffic, verify=first,
                      keeps_sessions=library.name != 'no-session')
        kwargs = {}
        if population:
            kwargs['visitor'] = self.visitors[scenario, population, library.name]
        else:
            library.reset()
        try:
            SCENARIOS[scenario](app, meter, **kwargs)
        except Exception as exc:  # reported in the tables
            row['error'] = short_error(exc)
            row['server'] = server_caused(exc)
            sys.stderr.write('\n%s: %s, %s failed:\n%s' % (
                self.name, library.name, label(scenario, population), _failure(exc)))
            return
        if counted:
            row['counted'] = meter.result
        else:
            result = meter.result
            row['timed'].append(result)
            if result['requests'] / result['requests_per_s'] > budget['seconds'] * SLOW:
                row['once'] = True   # its requests are so slow that noise does not matter
            if meter.lost_updates is not None:
                row['lost'][0] += meter.lost_updates
                row['lost'][1] += meter.expected_updates


def summarise(rows):
    """The medians of each row's timed runs, with the counted figures."""
    out = {}
    for key, row in rows.items():
        timed = row['timed']
        summary = {'error': row['error'], 'runs': len(timed),
                   'server': bool(row['error'] and row.get('server'))}
        if row.get('once') and timed:
            summary['slow_run_s'] = timed[0]['requests'] / timed[0]['requests_per_s']
        if row['counted']:
            summary['round_trips'] = row['counted']['round_trips']
            summary['bytes_written'] = row['counted']['bytes_written']
        if timed:
            summary['requests_per_s'] = statistics.median(r['requests_per_s'] for r in timed)
            summary['cpu_us'] = statistics.median(r['cpu_us'] for r in timed)
            summary['requests'] = sum(r['requests'] for r in timed)
        if key[0] == 'concurrency' and row['lost'][1]:
            summary['lost_updates'], summary['expected_updates'] = row['lost']
        out[key] = summary
    return out
