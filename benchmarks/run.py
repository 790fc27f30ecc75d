#!/usr/bin/env python3
"""Pyramid session libraries side by side, in one run.

    python3 benchmarks/run.py [--quick] [--json PATH] [--libraries a,b] [--scenarios x,y]

Libraries: no-session (a baseline), cookie (Pyramid's
SignedCookieSessionFactory), pyramid_session_redis (against a redis-server
started here), pyramid_beaker (Beaker's ``ext:mongodb`` backend) and
pyramid_mongosession, both on the same MongoDB-compatible server: the one
``MONGODB_URL`` names, else one that the test suite's ``tests/servers.py``
starts (mongod, or FerretDB built once with Go).

For every library and scenario it measures, in this process: requests per
second, CPU time per request (``time.process_time``: the whole application
process, store client included, the servers excluded), round trips to the
store per request and bytes sent to the store per request. Requests go
through the full Pyramid WSGI stack. Nothing is hard-coded: every figure
printed comes from this run.
"""
import argparse
import contextlib
import gc
import importlib.util
import json
import logging
import os
import platform
import statistics
import sys
import time
from importlib import metadata

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)   # tests.servers: the MongoDB-compatible server
sys.path.insert(0, HERE)

import pymongo  # noqa: E402

from libraries import LIBRARIES, OURS, Traffic  # noqa: E402
from redis_server import NoRedis, redis_server  # noqa: E402
from scenarios import SCENARIOS, make_app, warm_up  # noqa: E402

#: How long each measurement runs, and how often: full run and --quick.
PROFILES = {
    'full': dict(seconds=2.0, min_requests=50, rounds=3, counted_requests=20,
                 threads=8, per_thread=40, counted_per_thread=3),
    'quick': dict(seconds=0.25, min_requests=20, rounds=1, counted_requests=10,
                  threads=8, per_thread=8, counted_per_thread=2),
}


# -- measuring ----------------------------------------------------------------------

class Meter:
    """Runs a scenario's measured part: timed, or counted against a Traffic."""

    def __init__(self, profile, traffic=None):
        self.traffic = traffic
        self.seconds = profile['seconds']
        self.min_requests = profile['min_requests']
        self.counted_requests = profile['counted_requests']
        self.threads = profile['threads']
        self.per_thread = profile['counted_per_thread'] if traffic else profile['per_thread']
        self.result = None
        self.lost_updates = self.expected_updates = None

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

    def block(self, run):
        """Measure ``run()``, which makes requests and returns how many."""
        gc.collect()
        trips0, bytes0 = self.traffic.snapshot() if self.traffic else (0, 0)
        wall0, cpu0 = time.perf_counter(), time.process_time()
        requests = run()
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        trips1, bytes1 = self.traffic.snapshot() if self.traffic else (0, 0)
        self.result = {
            'requests': requests,
            'requests_per_s': requests / wall,
            'cpu_us': cpu / requests * 1e6,
            'round_trips': (trips1 - trips0) / requests,
            'bytes_written': (bytes1 - bytes0) / requests,
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
    import threading
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


def server_notes(servers, profile):
    """The control runs of the concurrency scenario, as sentences."""
    threads, per_thread = profile['threads'], profile['per_thread']
    pooled = server_control(servers['mongodb'], threads, per_thread, threads)
    single = server_control(servers['mongodb'], threads, per_thread, 1)
    lines = ['Control, without any session library: %d threads send ``$set`` of their '
             'own fields to one document. Through %d connections the server lost %d of %d '
             'updates; through one connection it lost %d of %d.'
             % (threads, threads, pooled[0], pooled[1], single[0], single[1])]
    if servers.get('ferretdb'):
        lines.append('FerretDB applies an update as a read then a write, so concurrent '
                     'commands on one document can undo each other; the MongoDB clients of '
                     'this run therefore have one connection each (commands are applied one '
                     'at a time, as MongoDB applies each atomically). The races measured above '
                     'are between a request\'s load and its save, many commands apart. Their '
                     'requests/s and CPU in this scenario include waiting for that one '
                     'connection.')
    return lines


def run_benchmark(libraries, scenarios, profile, progress):
    """Return one row per (scenario, library) that the library supports."""
    apps = {}
    for library in libraries:
        traffic = Traffic()
        timed = make_app(library.factory(), library.rotate)
        counted = make_app(library.factory(traffic), library.rotate)
        warm_up(timed)
        warm_up(counted)
        apps[library.name] = timed, counted, traffic

    def supported(library, scenario):
        return scenario not in library.unsupported

    rows = {}
    # Counted runs first: round trips and bytes (instrumented clients).
    for scenario in scenarios:
        for library in libraries:
            if supported(library, scenario):
                _, app, traffic = apps[library.name]
                meter = Meter(profile, traffic)
                library.reset()
                SCENARIOS[scenario](app, meter)
                rows[scenario, library.name] = {
                    'library': library.name, 'scenario': scenario,
                    'round_trips': meter.result['round_trips'],
                    'bytes_written': meter.result['bytes_written'],
                    'timed': [], 'lost': [0, 0],
                }
    # Timed runs (plain clients), in rounds; the order of libraries rotates.
    for round_ in range(profile['rounds']):
        for scenario in scenarios:
            order = libraries[round_ % len(libraries):] + libraries[:round_ % len(libraries)]
            for library in order:
                if not supported(library, scenario):
                    continue
                progress('round %d/%d  %-20s %s' % (round_ + 1, profile['rounds'],
                                                     scenario, library.name))
                app = apps[library.name][0]
                meter = Meter(profile)
                library.reset()
                SCENARIOS[scenario](app, meter)
                row = rows[scenario, library.name]
                row['timed'].append(meter.result)
                if meter.lost_updates is not None:
                    row['lost'][0] += meter.lost_updates
                    row['lost'][1] += meter.expected_updates
    results = []
    for scenario in scenarios:
        for library in libraries:
            row = rows.get((scenario, library.name))
            if row is None:
                continue
            timed = row.pop('timed')
            lost, expected = row.pop('lost')
            row['requests_per_s'] = statistics.median(r['requests_per_s'] for r in timed)
            row['cpu_us'] = statistics.median(r['cpu_us'] for r in timed)
            row['cpu_us_range'] = (min(r['cpu_us'] for r in timed),
                                   max(r['cpu_us'] for r in timed))
            if scenario == 'concurrency':
                row['lost_updates'] = lost
                row['expected_updates'] = expected
            results.append(row)
    return results


# -- reporting --------------------------------------------------------------------

def rst_table(headers, rows):
    """A reStructuredText simple table (also readable as plain text)."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    rule = '  '.join('=' * w for w in widths)

    def line(row):
        return '  '.join(c.ljust(w) for c, w in zip(row, widths)).rstrip()
    return [rule, line(cells[0]), rule] + [line(r) for r in cells[1:]] + [rule]


def _trips(value):
    return ('%.2f' % value).rstrip('0').rstrip('.') if value != int(value) else str(int(value))


def scenario_tables(results, libraries, scenarios, notes):
    lines = []
    for scenario in scenarios:
        rows = [r for r in results if r['scenario'] == scenario]
        if not rows:
            continue
        headers = ['library', 'requests/s', 'CPU µs/request', 'round trips/request',
                   'bytes sent/request']
        if scenario == 'concurrency':
            headers.append('lost updates')
        table = []
        for row in rows:
            cells = [row['library'], '%.0f' % row['requests_per_s'], '%.0f' % row['cpu_us'],
                     _trips(row['round_trips']), '%.0f' % row['bytes_written']]
            if scenario == 'concurrency':
                cells.append('%d of %d' % (row['lost_updates'], row['expected_updates']))
            table.append(cells)
        skipped = [(lib.name, lib.unsupported[scenario]) for lib in libraries
                   if scenario in lib.unsupported]
        lines += [scenario, '-' * len(scenario), ''] + rst_table(headers, table)
        lines += ['', *('%s: not run (%s).' % item for item in skipped)] if skipped else []
        lines += ['', *notes[scenario]] if scenario in notes else []
        lines.append('')
    return lines


def ratio_tables(results, scenarios):
    ours = {r['scenario']: r for r in results if r['library'] == OURS}
    peers = []
    for row in results:
        if row['library'] != OURS and row['library'] not in peers:
            peers.append(row['library'])
    shown = [s for s in scenarios if s in ours]
    if not shown or not peers:
        return []
    lines = []
    for title, key in [('requests/s: %s ÷ peer (above 1: %s is faster)' % (OURS, OURS),
                        'requests_per_s'),
                       ('CPU per request: %s ÷ peer (below 1: %s uses less)' % (OURS, OURS),
                        'cpu_us')]:
        by = {(r['scenario'], r['library']): r[key] for r in results}
        table = []
        for peer in peers:
            table.append([peer] + ['%.2f' % (ours[s][key] / by[s, peer]) if (s, peer) in by
                                   else '—' for s in shown])
        lines += [title, ''] + rst_table(['peer'] + shown, table) + ['']
    return lines


#: Differences of CPU time smaller than this share are taken as noise.
NOISE = 0.05


def _more_cpu(ours, other):
    """Does ``ours`` use more CPU than ``other``, beyond run-to-run noise?"""
    low, _ = ours['cpu_us_range']
    _, high = other['cpu_us_range']
    return low > high and ours['cpu_us'] > other['cpu_us'] * (1 + NOISE)


def target_lines(results, scenarios, servers):
    """The four targets, each met or missed, with the figures behind it."""
    by = {(r['scenario'], r['library']): r for r in results}
    lines = []

    def say(met, text):
        lines.append('- %s: %s' % ('met' if met else 'MISSED', text))

    server_side = ('pyramid_session_redis', 'pyramid_beaker')
    worse = []
    for s in scenarios:
        ours = by.get((s, OURS))
        for peer in server_side:
            other = by.get((s, peer))
            if ours and other and ours['round_trips'] > other['round_trips']:
                worse.append('%s: %s vs %s %s' % (s, _trips(ours['round_trips']), peer,
                                                  _trips(other['round_trips'])))
    if any((s, OURS) in by for s in scenarios):
        say(not worse, 'round trips never more than a server-side peer'
            + (' (' + '; '.join(worse) + ')' if worse else ''))
    big = by.get(('write-one-key-100kb', OURS))
    if big:
        say(big['bytes_written'] < 2048, 'under 2 KB sent in write-one-key-100kb (%.0f bytes)'
            % big['bytes_written'])
    for s in ('read-only', 'write-one-key'):
        ours, beaker = by.get((s, OURS)), by.get((s, 'pyramid_beaker'))
        if ours and beaker:
            ratio = ours['requests_per_s'] / beaker['requests_per_s']
            say(ratio >= 2, 'at least 2x pyramid_beaker\'s requests/s in %s (%.2fx)' % (s, ratio))
    over, noise, aside = [], [], []
    compared = False
    for s in scenarios:
        ours, redis_ = by.get((s, OURS)), by.get((s, 'pyramid_session_redis'))
        if not (ours and redis_):
            continue
        compared = True
        figures = '%s: %.0f vs %.0f µs' % (s, ours['cpu_us'], redis_['cpu_us'])
        if s == 'concurrency' and servers.get('ferretdb'):
            aside.append(figures)
        elif _more_cpu(ours, redis_):
            over.append(figures)
        elif ours['cpu_us'] > redis_['cpu_us']:
            noise.append(figures)
    if compared:
        text = 'CPU per request at most pyramid_session_redis\'s in every scenario'
        if over:
            text += ' (over in ' + '; '.join(over) + ')'
        if noise:
            text += ' (higher within run-to-run noise in ' + '; '.join(noise) + ')'
        if aside:
            text += (' (not judged, MongoDB clients limited to one connection on FerretDB: '
                     + '; '.join(aside) + ')')
        say(not over, text)
    return lines


def load_average():
    try:
        return '%.2f' % os.getloadavg()[0]
    except (AttributeError, OSError):
        return 'unknown'


class OtherActivity:
    """CPU time used on the machine by processes other than this one and its servers."""

    def __init__(self):
        self.start = self._sample()

    @staticmethod
    def _sample():
        try:
            with open('/proc/stat') as f:
                fields = [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        busy = sum(fields[:3]) + sum(fields[5:8])   # user nice system, irq softirq steal
        own = os.times()
        return (time.perf_counter(), busy / os.sysconf('SC_CLK_TCK'),
                own.user + own.system + own.children_user + own.children_system)

    def summary(self):
        """Call after the servers have stopped (their CPU then counts as ours)."""
        end = self._sample()
        if self.start is None or end is None:
            return None
        wall = end[0] - self.start[0]
        other = max(0.0, (end[1] - self.start[1]) - (end[2] - self.start[2]))
        return 'other processes used %.0f%% of one core during the run' % (100 * other / wall)


def environment(libraries, servers):
    lines = ['- %d CPU cores, %s, Python %s; load average (1 min) at the start: %s'
             % (os.cpu_count(), platform.machine(), platform.python_version(), load_average())]
    if 'mongodb' in servers:
        with pymongo.MongoClient(servers['mongodb'], serverSelectionTimeoutMS=5000) as client:
            info = client.admin.command('buildInfo')
        if 'ferretdbVersion' in info:
            name = 'FerretDB %s (SQLite backend)' % info['ferretdbVersion']
        else:
            name = 'MongoDB %s' % info.get('version')
        lines.append('- MongoDB server: %s, on this machine' % name)
    if 'redis' in servers:
        import redis
        with redis.Redis(host='127.0.0.1', port=servers['redis']) as client:
            lines.append('- Redis server: redis-server %s, on this machine'
                         % client.info('server')['redis_version'])
    packages = ['pyramid', 'WebOb', 'pymongo', 'pyramid_mongosession']
    names = {lib.name for lib in libraries}
    if 'pyramid_session_redis' in names:
        packages += ['pyramid_session_redis', 'redis']
    if 'pyramid_beaker' in names:
        packages += ['pyramid_beaker', 'Beaker']
    versions = []
    for package in packages:
        try:
            versions.append('%s %s' % (package, metadata.version(package)))
        except metadata.PackageNotFoundError:
            pass
    lines.append('- ' + ', '.join(versions))
    return lines


# -- the command ----------------------------------------------------------------------

def _choose(option, known, given):
    if not given:
        return list(known)
    chosen = [name.strip() for name in given.split(',') if name.strip()]
    unknown = [name for name in chosen if name not in known]
    if unknown:
        raise SystemExit('unknown %s: %s (known: %s)' % (option, ', '.join(unknown),
                                                         ', '.join(known)))
    return [name for name in known if name in chosen]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--quick', action='store_true',
                        help='short runs, one round (under a minute)')
    parser.add_argument('--json', metavar='PATH', help='also write the rows as JSON to PATH')
    parser.add_argument('--libraries', metavar='A,B',
                        help='comma-separated, from: ' + ', '.join(l.name for l in LIBRARIES))
    parser.add_argument('--scenarios', metavar='X,Y',
                        help='comma-separated, from: ' + ', '.join(SCENARIOS))
    args = parser.parse_args(argv)
    names = _choose('libraries', [lib.name for lib in LIBRARIES], args.libraries)
    libraries = [lib() for lib in LIBRARIES if lib.name in names]
    scenarios = _choose('scenarios', list(SCENARIOS), args.scenarios)
    missing = [module for lib in libraries for module in lib.modules
               if importlib.util.find_spec(module) is None]
    if missing:
        raise SystemExit('missing: %s. Install the peers with: python3 -m pip install -e '
                         '\'.[bench]\' (or leave them out with --libraries)'
                         % ', '.join(missing))
    profile = PROFILES['quick' if args.quick else 'full']
    logging.basicConfig(level=logging.WARNING, format='%(name)s: %(message)s')

    def progress(text):
        if sys.stderr.isatty():
            sys.stderr.write('\r\033[K' + text)
            sys.stderr.flush()

    started = time.perf_counter()
    others = OtherActivity()
    with contextlib.ExitStack() as stack:
        servers = {}
        needs = {lib.server for lib in libraries}
        try:
            if 'redis' in needs:
                servers['redis'] = stack.enter_context(redis_server())
            if 'mongodb' in needs:
                import tests.servers
                try:
                    servers['mongodb'] = stack.enter_context(tests.servers.mongodb_url())
                except tests.servers.NoServer as exc:
                    raise SystemExit('no MongoDB-compatible server: %s' % exc)
                with pymongo.MongoClient(servers['mongodb'], serverSelectionTimeoutMS=5000) as c:
                    servers['ferretdb'] = 'ferretdbVersion' in c.admin.command('buildInfo')
        except NoRedis as exc:
            raise SystemExit(str(exc))
        for library in libraries:
            library.start(servers)
            stack.callback(library.close)
        env = environment(libraries, servers)
        results = run_benchmark(libraries, scenarios, profile, progress)
        notes = {}
        if 'concurrency' in scenarios and 'mongodb' in servers:
            notes['concurrency'] = server_notes(servers, profile)
    if sys.stderr.isatty():
        sys.stderr.write('\r\033[K')

    out = ['Machine and versions', '', *env, '',
           'Each figure: %s; round trips and bytes per request are counted from '
           'the store client.' % ('median of %d runs of %.0f s' % (profile['rounds'],
                                                                   profile['seconds'])
                                  if profile['rounds'] > 1 else
                                  'one run of %.2f s' % profile['seconds']), '']
    out += scenario_tables(results, libraries, scenarios, notes)
    ratios = ratio_tables(results, scenarios)
    if ratios:
        out += ['Ratios', '------', ''] + ratios
    targets = target_lines(results, scenarios, servers)
    if targets:
        out += ['Targets', '-------', ''] + targets + ['']
    activity = others.summary()
    out.append('Total time: %.0f s%s.' % (time.perf_counter() - started,
                                         '; ' + activity if activity else ''))
    print('\n'.join(out))
    if args.json:
        rows = []
        for row in results:
            clean = {key: row[key] for key in ('library', 'scenario', 'requests_per_s',
                                                'cpu_us', 'round_trips', 'bytes_written')}
            if 'lost_updates' in row:
                clean['lost_updates'] = row['lost_updates']
            rows.append(clean)
        with open(args.json, 'w') as f:
            json.dump(rows, f, indent=2)
            f.write('\n')


if __name__ == '__main__':
    main()
