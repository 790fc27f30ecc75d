#!/usr/bin/env python3
"""Pyramid session libraries side by side, in one run.

    python3 benchmarks/run.py [--quick] [--json PATH] [--libraries a,b] [--scenarios x,y]
                              [--populations N,M|none] [--cpu-server standin|real]
                              [--no-ferretdb] [--no-pin] [--verbose] [--strict]

Libraries: no-session (a baseline), cookie (Pyramid's
SignedCookieSessionFactory), pyramid_session_redis (against a redis-server
started here), pyramid_beaker (Beaker's ``ext:mongodb`` backend) and
pyramid_mongosession, both on the same MongoDB-compatible server.

The throughput server, which the requests/s, round trips, bytes and server
probes come from, is the server ``MONGODB_URL`` names, else
mongo-java-server (in memory; started by the test suite's
``tests/servers.py``), whose ``_id`` lookups stay fast however many
documents it holds. FerretDB 1.x, which scans its table on updates, gets a
column of its own: requests/s of the MongoDB libraries on it, labelled so.

CPU time per request (``time.process_time``: the whole application
process, store client included, the servers excluded) comes from separate
runs against a stand-in MongoDB server that answers at once
(``standin_mongo.py``, in its own process) and the same redis-server, with
this process and those servers pinned to one CPU. Those runs also measure
pyramid_mongosession with its collection replaced by an in-memory stub
(``stub_collection.py``), so that no driver code runs: its CPU less
no-session's is the library's own code. A small table gives pymongo's and
redis-py's CPU per single command, measured in the same pinned pass.

Requests go through the full Pyramid WSGI stack. Read-only and write-one-key
also run with many other sessions stored. Nothing is hard-coded: every
figure printed comes from this run, and so does every target's verdict.
"""
import argparse
import contextlib
import importlib.util
import json
import logging
import os
import platform
import sys
import time
from importlib import metadata

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)   # tests.servers: the MongoDB-compatible server
sys.path.insert(0, HERE)

import pymongo  # noqa: E402

import commands  # noqa: E402
import report  # noqa: E402
from libraries import (  # noqa: E402
    CLIENT_TIMEOUTS, LIBRARIES, OURS, REDIS_OPTIONS, STUBBED, BeakerSessions, MongoSessions,
    StubbedMongoSessions)
from measure import Pass, label, measurements, server_control, summarise, thousands  # noqa: E402
from pinning import Pinned, least_busy_cpu, unavailable  # noqa: E402
from redis_server import MAXMEMORY, NoRedis, redis_server  # noqa: E402
from scenarios import POPULATED, SCENARIOS  # noqa: E402
from standin_mongo import (  # noqa: E402
    NoStandin, self_check, server_cpu, server_pid, standin_server)

#: How long each measurement runs, and how often: full run and --quick.
#: ``seconds``/``rounds``: timed runs against the throughput server;
#: ``cpu_seconds``/``cpu_rounds``: timed runs for the CPU figures;
#: ``command_seconds``: each single command of the per-command table, per round
#: (``cpu_rounds`` rounds); ``ferretdb_*``: the FerretDB column (its scenarios:
#: None for all but concurrency; its populations: the run's, or none).
PROFILES = {
    'full': dict(seconds=2.0, rounds=3, cpu_seconds=1.0, cpu_rounds=5, min_requests=50,
                 counted_requests=20, threads=8, per_thread=40, counted_per_thread=3, batch=25,
                 populations=(10000, 100000), populated_min_requests=1, populated_counted=1,
                 command_seconds=0.3, ferretdb_seconds=1.0, ferretdb_rounds=1,
                 ferretdb_scenarios=None, ferretdb_populations=True),
    'quick': dict(seconds=0.25, rounds=1, cpu_seconds=0.1, cpu_rounds=3, min_requests=20,
                  counted_requests=10, threads=8, per_thread=8, counted_per_thread=2, batch=10,
                  populations=(10000,), populated_min_requests=1, populated_counted=1,
                  command_seconds=0.07, ferretdb_seconds=0.25, ferretdb_rounds=1,
                  ferretdb_scenarios=('read-only', 'write-one-key'),
                  ferretdb_populations=False),
}
#: Seconds over which the least busy CPU is found, before the pinned pass.
PIN_SAMPLE = 0.5
#: The MongoDB libraries measured on FerretDB too.
FERRETDB_LIBRARIES = (BeakerSessions, MongoSessions)
#: A larger population is measured on FerretDB only if the slowest command of
#: its server probe at the size before, scaled by the sizes' ratio (FerretDB
#: 1.x scans its table), predicts at most this many seconds per command.
FERRETDB_SLOWEST_COMMAND = 1.0


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


class MongoServer:
    """A MongoDB-compatible server of the run: its URL, a short name and a description."""

    def __init__(self, url, name, description):
        self.url, self.name, self.description = url, name, description

    @property
    def ferretdb(self):
        return self.name.startswith('FerretDB')


def build_info_name(url):
    """What the server at ``url`` says it is (buildInfo): 'FerretDB 1.24.2', 'MongoDB 7.0.4'."""
    with pymongo.MongoClient(url, serverSelectionTimeoutMS=5000) as client:
        info = client.admin.command('buildInfo')
    if 'ferretdbVersion' in info:
        return 'FerretDB %s' % info['ferretdbVersion'].lstrip('v')
    return 'MongoDB %s' % info.get('version')


def _started(process):
    """A MongoServer for a server process that ``tests/servers.py`` started."""
    announced = build_info_name(process.url)
    if process.kind == 'mongo-java-server':
        import tests.servers
        return MongoServer(process.url, 'mongo-java-server',
                           'mongo-java-server %s, in-memory backend (it announces itself as %s), '
                           'on this machine' % (tests.servers.MONGO_JAVA_SERVER_VERSION,
                                                announced))
    if process.kind == 'ferretdb':
        return MongoServer(process.url, announced, '%s, SQLite backend, on this machine'
                           % announced)
    return MongoServer(process.url, announced, '%s (mongod), on this machine' % announced)


@contextlib.contextmanager
def throughput_server():
    """Yield the throughput server: MONGODB_URL's, else mongo-java-server (see the docstring)."""
    import tests.servers
    url = os.environ.get('MONGODB_URL')
    if url:
        name = build_info_name(url)
        yield MongoServer(url, name, '%s, the server MONGODB_URL names' % name)
        return
    try:
        process = tests.servers.start_mongo_java_server()
        why = None
    except tests.servers.NoServer as exc:
        why = str(exc).split('\n')[0][:200]
        try:
            process = tests.servers.start_server()
        except tests.servers.NoServer as again:
            raise SystemExit('no MongoDB-compatible server: %s; %s' % (why, again))
    try:
        server = _started(process)
        if why:
            server.description += (' (mongo-java-server could not be started: %s; its '
                                   'figures measure this server)' % why)
        yield server
    finally:
        process.close()


@contextlib.contextmanager
def ferretdb_server():
    """Yield FerretDB (built with Go the first time) as a MongoServer, or a reason string."""
    import tests.servers
    try:
        process = tests.servers.ServerProcess('ferretdb', tests.servers.ferretdb_binary()).start()
    except tests.servers.NoServer as exc:
        yield str(exc).split('\n')[0][:200]
        return
    try:
        yield _started(process)
    finally:
        process.close()


def environment(libraries, servers, throughput, ferretdb):
    """The lines of "Machine and versions": every server the run used, and the packages."""
    lines = ['- %d CPU cores, %s, Python %s; load average (1 min) at the start: %s'
             % (os.cpu_count(), platform.machine(), platform.python_version(), load_average())]
    if throughput is not None:
        lines.append('- Throughput server (requests/s, round trips, bytes, server probes): %s'
                     % throughput.description)
    if isinstance(ferretdb, MongoServer):
        lines.append('- FerretDB column: %s' % ferretdb.description)
    elif ferretdb:
        lines.append('- FerretDB column: not run (%s)' % ferretdb)
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


def redis_pid(port):
    import redis
    with redis.Redis(host='127.0.0.1', port=port) as client:
        return client.info('server')['process_id']


# -- the command ----------------------------------------------------------------------

#: Warnings the libraries log again and again in one run (once per pass and
#: library), shortened: (words in the message, what is printed instead).
SHORT_WARNINGS = [
    ('refused a TTL index', 'the server has no TTL indexes (FerretDB 1.x): expired sessions '
                            'stay stored; nothing this benchmark measures depends on it'),
    ('refused partial indexes', 'the server has no partial indexes (FerretDB 1.x): a user\'s '
                                'sessions are found by a scan; no scenario here lists them'),
    ('FerretDB 1.x does not apply concurrent updates', 'the server is FerretDB 1.x, which '
     'loses concurrent updates of one document: see the concurrency scenario\'s control'),
    ('looks like a user id', 'the scenarios keep a user id under "user", not user_key: '
                             'pyramid_mongosession indexes no user, as the peers do not'),
]
#: The longest a warning printed during the run may be.
WARNING_WIDTH = 160


class OncePerRun(logging.Filter):
    """Lets each warning through once per run, shortened (see SHORT_WARNINGS)."""

    def __init__(self):
        super().__init__()
        self.seen = set()

    def filter(self, record):
        message = record.getMessage()
        for words, short in SHORT_WARNINGS:
            if words in message:
                message = short
                break
        else:
            message = ' '.join(message.split())
            if len(message) > WARNING_WIDTH:
                message = message[:WARNING_WIDTH - 3] + '...'
        key = (record.name, message)
        if key in self.seen:
            return False
        self.seen.add(key)
        record.msg, record.args = message, None
        return True


def exit_status(sources, targets, strict=False):
    """``(status, lines for stderr)`` at the end of a run.

    ``sources`` are the summaries (real, and the CPU runs'); ``targets`` the
    targets' rows. A measurement that failed through the server's doing (it
    did not answer in time, or went away) is a miss the tables report: the
    benchmark itself worked, and the status is 0 unless ``strict``. Any other
    failure is the benchmark's: status 1. ``strict`` also fails a run in
    which a target was missed.
    """
    failed, misses = [], []
    for source in sources:
        for (scenario, population, library), row in source.items():
            if row.get('error'):
                entry = '  %s, %s: %s\n' % (library, label(scenario, population), row['error'])
                (misses if row.get('server') else failed).append(entry)
    missed = [row for row in targets if row[-1] != 'met']
    lines = []
    if misses:
        lines.append('%d measurement(s) missed because the server did not keep up (reported '
                     'in the tables and the targets; the benchmark itself worked%s):\n'
                     % (len(misses), '; --strict makes this a failure' if strict else ''))
        lines += misses
    if failed:
        lines.append('%d measurement(s) failed (see the tables):\n' % len(failed))
        lines += failed
    if strict and missed:
        lines.append('%d target(s) missed (--strict makes this a failure)\n' % len(missed))
    status = 1 if failed or (strict and (misses or missed)) else 0
    return status, lines


def _choose(option, known, given):
    if not given:
        return list(known)
    chosen = [name.strip() for name in given.split(',') if name.strip()]
    unknown = [name for name in chosen if name not in known]
    if unknown:
        raise SystemExit('unknown %s: %s (known: %s)' % (option, ', '.join(unknown),
                                                         ', '.join(known)))
    return [name for name in known if name in chosen]


def _populations(given, default):
    if given is None:
        return list(default)
    if given.strip().lower() in ('', 'none', '0'):
        return []
    try:
        sizes = sorted({int(size.replace('_', '')) for size in given.split(',') if size.strip()})
    except ValueError:
        raise SystemExit('--populations: numbers separated by commas, or none')
    if any(size <= 0 for size in sizes):
        raise SystemExit('--populations: sizes must be positive')
    return sizes


def _budget(profile, seconds, rounds):
    return dict(profile, seconds=profile[seconds], rounds=profile[rounds])


def _control_line(where, threads, pooled, single):
    text = ('%s, without any session library: %d threads sent ``$set`` of their own fields '
            'to one document; through %d connections the server lost %d of %d updates'
            % (where, threads, threads, pooled[0], pooled[1]))
    if single is not None:
        text += ', through one connection %d of %d' % single
    return text + '.'


def _ferretdb_plan(profile, scenarios, populations, classes):
    """The FerretDB column's ``(libraries, measurements, notes)``."""
    ferret_classes = [cls for cls in classes if cls in FERRETDB_LIBRARIES]
    wanted = profile['ferretdb_scenarios']
    chosen_scenarios = [s for s in scenarios if s != 'concurrency'
                        and (wanted is None or s in wanted)]
    kept = list(populations) if profile['ferretdb_populations'] else []
    notes = []
    left_out = [s for s in scenarios if s not in chosen_scenarios]
    if 'concurrency' in left_out:
        notes.append('Concurrency is not run on FerretDB: FerretDB 1.x itself loses '
                     'concurrent updates of one document (the server, not a library).')
        left_out.remove('concurrency')
    if left_out:
        notes.append('--quick runs only %s on FerretDB.' % ', '.join(chosen_scenarios))
    if populations and not kept:
        notes.append('--quick stores no other sessions on FerretDB (the full run stores '
                     'as many as on the throughput server, as long as FerretDB keeps up).')
    chosen = [(s, 0) for s in chosen_scenarios]
    for population in kept:
        chosen += [(s, population) for s in POPULATED if s in chosen_scenarios]
    return ferret_classes, chosen, notes


def run_ferretdb(ferret_pass, chosen, notes):
    """Run the FerretDB column's measurements, population by population.

    A population is left out, with a note, when the server probe at the size
    before predicts that FerretDB would take more than FERRETDB_SLOWEST_COMMAND
    seconds per command (see :data:`FERRETDB_SLOWEST_COMMAND`).
    """
    populations = sorted({population for _, population in chosen})
    done = None
    for population in populations:
        if done and population:
            library, timings = ferret_pass.probes.get(done, (None, []))
            measured = [ms for what, ms in timings if what != 'failed']
            if measured:
                slowest = max(measured) * population / done / 1000
                if slowest > FERRETDB_SLOWEST_COMMAND:
                    rest = [p for p in populations if p >= population]
                    notes.append(
                        'Not run on FerretDB with %s other sessions stored: its slowest '
                        'probe command at %s (%.0f ms, see its server probe) scales to '
                        'about %.1f s per command at %s, as FerretDB 1.x scans its table; '
                        'the run would take far longer and measure only that scan.' % (
                            ' or '.join(thousands(p) for p in rest), thousands(done),
                            max(measured), slowest, thousands(population)))
                    break
            elif timings:
                notes.append('Not run on FerretDB with %s or more other sessions stored: '
                             'its server probe at %s failed.' % (thousands(population),
                                                                  thousands(done)))
                break
        ferret_pass.run([(s, p) for s, p in chosen if p == population], probe=True)
        done = population
    return summarise(ferret_pass.rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--quick', action='store_true',
                        help='short runs (one round against the servers, three short ones '
                             'for the CPU figures), 10 000 other sessions only, two '
                             'scenarios on FerretDB (a minute or two; the full run takes '
                             'about a quarter of an hour)')
    parser.add_argument('--json', metavar='PATH', help='also write the rows as JSON to PATH')
    parser.add_argument('--libraries', metavar='A,B',
                        help='comma-separated, from: ' + ', '.join(l.name for l in LIBRARIES))
    parser.add_argument('--scenarios', metavar='X,Y',
                        help='comma-separated, from: ' + ', '.join(SCENARIOS))
    parser.add_argument('--populations', metavar='N,M',
                        help='numbers of other sessions stored for the populated-store runs '
                             '(default: 10000,100000; with --quick: 10000), or none')
    parser.add_argument('--verbose', action='store_true',
                        help='print each step, with the time elapsed, to standard error')
    parser.add_argument('--cpu-server', choices=('standin', 'real'), default='standin',
                        help='where the CPU figures come from: the stand-in MongoDB server '
                             '(default) or the throughput server')
    parser.add_argument('--no-ferretdb', action='store_true',
                        help='leave out the FerretDB column (by default FerretDB is built '
                             'with Go once, if needed, and started)')
    parser.add_argument('--no-pin', action='store_true',
                        help='do not pin the CPU runs to one CPU')
    parser.add_argument('--strict', action='store_true',
                        help='exit 1 when a measurement missed because the server did not '
                             'keep up, or a target was missed (by default the exit status '
                             'says only whether the benchmark itself worked)')
    args = parser.parse_args(argv)
    names = _choose('libraries', [lib.name for lib in LIBRARIES], args.libraries)
    classes = [lib for lib in LIBRARIES if lib.name in names]
    libraries = [cls() for cls in classes]   # for names and reasons; each pass has its own
    scenarios = _choose('scenarios', list(SCENARIOS), args.scenarios)
    missing = [module for lib in libraries for module in lib.modules
               if importlib.util.find_spec(module) is None]
    if missing:
        raise SystemExit('missing: %s. Install the peers with: python3 -m pip install -e '
                         '\'.[bench]\' (or leave them out with --libraries)'
                         % ', '.join(missing))
    mode = 'quick' if args.quick else 'full'
    profile = PROFILES[mode]
    populations = _populations(args.populations, profile['populations'])
    if not any(lib.no_store is None for lib in libraries):
        populations = []
    chosen = measurements(scenarios, populations)
    standin = args.cpu_server == 'standin'
    logging.basicConfig(level=logging.WARNING, format='%(name)s: %(message)s')
    for handler in logging.getLogger().handlers:
        handler.addFilter(OncePerRun())

    started = time.perf_counter()

    def progress(text):
        if args.verbose:
            sys.stderr.write('%7.1f s  %s\n' % (time.perf_counter() - started, text))
        elif sys.stderr.isatty():
            sys.stderr.write('\r\033[K' + text[:150])
            sys.stderr.flush()

    others = OtherActivity()
    needs = {lib.server for lib in libraries}
    scenario_notes = {}
    throughput = ferretdb = None
    ferret = {}
    ferret_pass = None
    ferret_classes, ferret_chosen, ferret_notes = _ferretdb_plan(profile, scenarios,
                                                                 populations, classes)
    pinning = Pinned()
    cpu_libraries = libraries
    pin_problem = 'not asked (--no-pin)' if args.no_pin else unavailable()
    command_costs = ([], [], [])
    with contextlib.ExitStack() as stack:
        servers = {}
        try:
            if 'redis' in needs:
                progress('starting redis-server')
                servers['redis'] = stack.enter_context(redis_server())
            if 'mongodb' in needs:
                progress('starting the throughput server')
                throughput = stack.enter_context(throughput_server())
                servers['mongodb'] = throughput.url
        except NoRedis as exc:
            raise SystemExit(str(exc))
        if 'mongodb' in needs and ferret_classes and ferret_chosen:
            if args.no_ferretdb:
                ferretdb = 'not asked (--no-ferretdb)'
            elif throughput.ferretdb:
                ferretdb = 'the throughput server is FerretDB itself'
            else:
                progress('starting FerretDB')
                ferretdb = stack.enter_context(ferretdb_server())
        threads, per_thread = profile['threads'], profile['per_thread']
        if standin and 'mongodb' not in needs:
            standin = False   # nothing talks to MongoDB: CPU from the real pass
        env = environment(libraries, servers, throughput, ferretdb)
        if standin:
            # Started and checked first, so that a broken stand-in stops the run at once.
            progress('starting and checking the stand-in')
            try:
                standin_url = stack.enter_context(standin_server())
                checks = self_check(standin_url)
            except NoStandin as exc:
                raise SystemExit(str(exc))
            env.insert(-1, '- Stand-in MongoDB server for the CPU figures: standin_mongo.py, '
                           'on this machine; self-check through pymongo passed (%d checks)'
                           % checks)

        # Does the throughput server apply concurrent updates of one document whole?
        single_connection = False
        if 'mongodb' in servers and 'concurrency' in scenarios:
            progress('control runs on the throughput server')
            pooled = server_control(servers['mongodb'], threads, per_thread, threads)
            single = server_control(servers['mongodb'], threads, per_thread, 1)
            single_connection = pooled[0] > 0
            scenario_notes['concurrency'] = [_control_line(
                'Control on the throughput server (%s)' % throughput.name, threads, pooled,
                single)]
            if single_connection:
                scenario_notes['concurrency'].append(
                    'That server loses concurrent updates of one document, so in this scenario '
                    'the client of every MongoDB library had one connection (maxPoolSize=1): '
                    'each command is then applied whole, as MongoDB applies it. The races '
                    'measured above are between a request\'s load and its save, many commands '
                    'apart; requests/s here include the wait for that one connection.')

        with contextlib.ExitStack() as real_stack:
            real_pass = Pass('throughput server', classes, servers,
                             _budget(profile, 'seconds', 'rounds'), counted=True,
                             single_connection=single_connection, progress=progress)
            real_pass.start(real_stack)
            real = summarise(real_pass.run(chosen, probe=True))

        if isinstance(ferretdb, MongoServer):
            with contextlib.ExitStack() as ferret_stack:
                ferret_pass = Pass('FerretDB', ferret_classes, dict(servers, mongodb=ferretdb.url),
                                   _budget(profile, 'ferretdb_seconds', 'ferretdb_rounds'),
                                   counted=False, single_connection=False, progress=progress)
                ferret_pass.start(ferret_stack)
                ferret = run_ferretdb(ferret_pass, ferret_chosen, ferret_notes)

        cpu = real
        standin_stats = None
        if standin:
            cpu_classes = list(classes)
            if MongoSessions in classes:
                cpu_classes.insert(cpu_classes.index(MongoSessions) + 1, StubbedMongoSessions)
            cpu_libraries = [cls() for cls in cpu_classes]
            if pin_problem is None:
                chosen_cpu, load = least_busy_cpu(PIN_SAMPLE)
                pinning = Pinned(chosen_cpu, None if load is None else
                                 'the least busy over %.1f s before the pass: other work used '
                                 '%.0f%% of it' % (PIN_SAMPLE, 100 * load))
                pinning.pin('this process', os.getpid())
                pinning.pin('the stand-in', server_pid(standin_url))
                if 'redis' in servers:
                    pinning.pin('redis-server', redis_pid(servers['redis']))
            try:
                with contextlib.ExitStack() as cpu_stack:
                    cpu_servers = dict(servers, mongodb=standin_url)
                    cpu_single = False
                    if 'concurrency' in scenarios:
                        control = server_control(standin_url, threads, per_thread, threads)
                        scenario_notes.setdefault('concurrency', []).append(_control_line(
                            'Control on the stand-in', threads, control, None)
                            + (' The CPU runs used the default connection pools.'
                               if not control[0] else ''))
                        cpu_single = control[0] > 0
                    cpu_pass = Pass('CPU, stand-in', cpu_classes, cpu_servers,
                                    _budget(profile, 'cpu_seconds', 'cpu_rounds'),
                                    counted=False, single_connection=cpu_single,
                                    progress=progress)
                    cpu_pass.start(cpu_stack)
                    before = server_cpu(standin_url)
                    cpu = summarise(cpu_pass.run(chosen))
                    after = server_cpu(standin_url)
                    standin_stats = (after[0] - before[0], after[1] - before[1])
                progress('CPU per single command: pymongo, redis-py')
                command_costs = (
                    commands.mongo_costs(standin_url, profile['command_seconds'],
                                         profile['cpu_rounds']),
                    commands.redis_costs(servers['redis'], profile['command_seconds'],
                                         profile['cpu_rounds']) if 'redis' in servers else [],
                    commands.stub_costs(profile['command_seconds'], profile['cpu_rounds'])
                    if MongoSessions in classes else [])
            finally:
                pinning.undo()
    if sys.stderr.isatty() and not args.verbose:
        sys.stderr.write('\r\033[K')

    out = ['Machine and versions', '', *env, '']
    out += ['How this run measured', '', *run_notes(
        profile, mode, populations, real_pass, standin, standin_stats, libraries, servers,
        throughput, pinning, pin_problem), '']
    for population, (library, timings) in sorted(real_pass.probes.items()):
        scenario_notes.setdefault('read-only', []).append(
            'Server probe, the throughput server (%s) with %s documents in %s\'s collection '
            '(no session library; one command each, on a document stored after the others): '
            '%s.' % (throughput.name, thousands(population), library, _probe_text(timings)))
        slow = _slow_conditions(timings)
        if slow:
            scenario_notes.setdefault('write-one-key', []).append(
                'On the throughput server (%s) with %s documents stored, a command that names '
                'a document by _id and a condition on another field took %s as long as by _id '
                'alone (see the server probe under read-only): a library whose writes add such '
                'a condition (pyramid_mongosession\'s name a live document: _id and its '
                'expiry) waits for the server there, which MongoDB answers from its _id '
                'index.' % (throughput.name, thousands(population), slow))
    out += report.scenario_tables(real, libraries, chosen, scenario_notes, profile['rounds'])
    if ferretdb is not None:
        out += ferretdb_section(ferretdb, ferret, ferret_pass, ferret_classes, ferret_chosen,
                                ferret_notes, real, throughput, profile)
    cpu_where = 'stand-in' if standin else 'throughput server'
    cpu_lines = report.cpu_table(cpu, cpu_libraries if standin else libraries, chosen)
    if cpu_lines:
        title = ('Client CPU per request (µs), MongoDB libraries against the stand-in'
                 if standin else 'Client CPU per request (µs), against the throughput server')
        out += [title, '-' * len(title), ''] + cpu_lines + ['']
        if standin:
            out += ['The CPU time of this process (Pyramid, the session library, its store '
                    'client) per request, in runs against the stand-in MongoDB server; '
                    'pyramid_session_redis ran against the real redis-server, already local '
                    'and fast; no-session and cookie use no server. %s. Processes %s.'
                    % ('Median of %d runs of %.2f s each' % (profile['cpu_rounds'],
                                                            profile['cpu_seconds'])
                       if profile['cpu_rounds'] > 1 else
                       'One run of %.2f s each' % profile['cpu_seconds'],
                       pinning.summary() if pin_problem is None
                       else 'not pinned to one CPU: %s' % pin_problem), '']
            if MongoSessions in classes:
                stub = [lib for lib in cpu_pass.libraries if lib.name == STUBBED][0]
                wrapper = {True: ' As with its real client, pyramid_mongosession wrapped each '
                                 'call in pymongo.timeout() (its client\'s options do not '
                                 'bound every call by its operation_timeout): that wrapper is '
                                 'the one piece of pymongo in the stubbed runs.',
                           False: ' As with its real client, pyramid_mongosession added no '
                                  'per-call timeout (its client bounds every call itself).',
                           None: ''}[stub.per_call_timeout]
                out += ['"%s": pyramid_mongosession with its collection replaced by an '
                        'in-memory stub (benchmarks/stub_collection.py, measurement tooling '
                        'only: it keeps documents in a dict and runs no driver or BSON code). '
                        '"own code": that column less no-session\'s, the CPU of '
                        'pyramid_mongosession itself per request, the driver left out; the '
                        'stub\'s own dict work is in it (see its µs per command below).%s'
                        % (STUBBED, wrapper), '']
    if any(command_costs):
        title = 'Client CPU per single command (µs), pymongo%s' % (
            ' and redis-py' if command_costs[1] else '')
        out += [title, '-' * len(title), ''] + report.command_table(*command_costs) + [
            '', 'This process\'s CPU per command, no session library: pymongo (%s) against '
                'the stand-in%s, in the pinned pass above, on a small session\'s document or '
                'value; median of %d run%s of %.2f s each. pymongo sends each command in '
                'one session kept for the thread, as pyramid_mongosession does, but on the '
                'second row: there, in the session pymongo lends each call by itself. The '
                'last row is how pyramid_mongosession sends a command when its client does '
                'not bound every call itself.%s'
                % (', '.join('%s=%s' % item for item in CLIENT_TIMEOUTS.items()),
                   ', redis-py against redis-server' if command_costs[1] else '',
                   profile['cpu_rounds'], '' if profile['cpu_rounds'] == 1 else 's',
                   profile['command_seconds'],
                   ' "stub µs": the same commands on the stub collection of the driver-stubbed '
                   'runs, in this process: its own dict work, which their "own code" '
                   'includes.' if command_costs[2] else '')
            + (' "µs after a request": the same command, each one sent after a request to '
               'the benchmark\'s application without sessions, that request\'s own CPU '
               '(measured alone) taken off: where a session library sends a command, the '
               'request\'s code has taken the processor\'s caches, and the driver\'s code '
               'costs more than in a loop of its own.'
               if any(name.endswith(commands.AFTER_REQUEST)
                      for costs in command_costs[:2] for name, _ in costs) else ''), '']
    ratios = report.ratio_tables(real, cpu, libraries, chosen)
    if ratios:
        out += ['Ratios', '------', ''] + ratios
    targets = report.target_rows(real, cpu, chosen, cpu_where,
                                 server=throughput.name if throughput else None)
    if targets:
        met = sum(1 for row in targets if row[-1] == 'met')
        out += ['Targets', '-------', ''] + report.rst_table(
            ['target (pyramid_mongosession)', 'wanted', 'measured', 'verdict'], targets)
        out += ['', '%d of %d targets met.' % (met, len(targets)), '']
    activity = others.summary()
    out.append('Total time: %.0f s%s.' % (time.perf_counter() - started,
                                         '; ' + activity if activity else ''))
    print('\n'.join(out))
    if args.json:
        write_json(args.json, real, cpu, ferret, cpu_where, throughput)
    sources = [real] + ([cpu] if cpu is not real else []) + ([ferret] if ferret else [])
    status, lines = exit_status(sources, targets or [], args.strict)
    sys.stderr.write(''.join(lines))
    sys.exit(status)


def _slow_conditions(timings):
    """'12×' when a probe command with a condition beside _id took far longer than by _id
    alone (a server that scans for such filters), else None."""
    found = dict(timings)
    ratios = []
    for command in ('find', 'update'):
        alone = found.get('%s by _id' % command)
        both = found.get('%s by _id and a condition on another field' % command)
        if alone and both and both > 1 + 5 * alone:
            ratios.append(both / alone)
    return '%.0f×' % min(ratios) if ratios else None


def _probe_text(timings):
    if timings and timings[0][0] == 'failed':
        return 'failed: %s' % timings[0][1]
    return '; '.join('%s %.1f ms' % timing for timing in timings)


def ferretdb_section(ferretdb, ferret, ferret_pass, ferret_classes, ferret_chosen, notes,
                     real, throughput, profile):
    """The FerretDB column: requests/s there, beside the throughput server's."""
    title = 'Requests per second on FerretDB (a separate column)'
    lines = [title, '-' * len(title), '']
    if not isinstance(ferretdb, MongoServer):
        return lines + ['Not run: %s.' % ferretdb, '']
    libraries = [cls() for cls in ferret_classes]
    lines += report.ferretdb_table(ferret, real, libraries, ferret_chosen, throughput.name)
    lines += ['', 'Requests/s of the MongoDB libraries on %s, from timed runs of %.2f s '
              '(%s), and the same on the throughput server (%s) from its tables above. '
              'FerretDB 1.x scans its table for updates and for filters on more than _id, '
              'so these figures measure FerretDB more than the libraries.'
              % (ferretdb.description, profile['ferretdb_seconds'],
                 'one run' if profile['ferretdb_rounds'] == 1
                 else 'median of %d runs' % profile['ferretdb_rounds'], throughput.name)]
    for population, (library, timings) in sorted(ferret_pass.probes.items()):
        lines.append('Server probe, FerretDB with %s documents in %s\'s collection: %s.'
                     % (thousands(population), library, _probe_text(timings)))
    if ferret_pass.populating:
        lines.append('Filling FerretDB took: %s.' % ', '.join(
            '%s %s: %.1f s' % (name, thousands(size), seconds)
            for (name, size), seconds in sorted(ferret_pass.populating.items())))
    for (scenario, population, library), row in sorted(ferret.items()):
        if row.get('error'):
            lines.append('%s, %s: %s: %s' % (library, label(scenario, population),
                                             report.SERVER_MISS if row.get('server')
                                             else report.FAILED, row['error']))
    return lines + notes + ['']


def write_json(path, real, cpu, ferret, cpu_where, throughput):
    rows = []
    for (scenario, population, library), row in real.items():
        clean = {'library': library, 'scenario': scenario, 'population': population,
                 'cpu_server': cpu_where,
                 'throughput_server': throughput.name if throughput else None}
        for key in ('requests_per_s', 'round_trips', 'bytes_written', 'lost_updates',
                    'error'):
            if row.get(key) is not None:
                clean[key] = row[key]
        if row.get('error'):
            clean['error_cause'] = 'server' if row.get('server') else 'benchmark'
        clean['cpu_us_real'] = row.get('cpu_us')
        other = cpu.get((scenario, population, library), {})
        clean['cpu_us'] = other.get('cpu_us')
        if other.get('error'):
            clean['cpu_error'] = other['error']
        on_ferretdb = ferret.get((scenario, population, library))
        if on_ferretdb and on_ferretdb.get('requests_per_s') is not None:
            clean['requests_per_s_ferretdb'] = on_ferretdb['requests_per_s']
        if library == OURS:
            own = report.own_code(cpu, scenario, population)
            if own is not None:
                clean['own_code_cpu_us'] = own
        rows.append(clean)
    with open(path, 'w') as f:
        json.dump(rows, f, indent=2)
        f.write('\n')


def run_notes(profile, mode, populations, real_pass, standin, standin_stats, libraries,
              servers, throughput=None, pinning=None, pin_problem=None):
    """How the figures were made, in sentences (every number from this run or its settings)."""
    rounds, seconds = profile['rounds'], profile['seconds']
    lines = [
        '- Requests/s: median of %s of %.2f s against %s, one thread (eight in '
        'concurrency); round trips and bytes sent per request: counted from the store client '
        'in separate runs of %d requests (%d with other sessions stored).'
        % ('%d runs' % rounds if rounds > 1 else 'one run', seconds, ' and '.join(
            (['the throughput server (%s)' % throughput.name] if throughput else [])
            + (['redis-server'] if 'redis' in servers else [])) or 'no server',
           profile['counted_requests'], profile['populated_counted']),
    ]
    if standin:
        extra = ''
        if standin_stats and standin_stats[1]:
            extra = (' It used %.0f µs of CPU per command it answered (%d commands), in its '
                     'own process.' % (standin_stats[0] / standin_stats[1] * 1e6,
                                       standin_stats[1]))
        pinned = (pinning.summary() if pin_problem is None and pinning is not None
                  else 'not pinned to one CPU: %s' % pin_problem)
        lines.append(
            '- Client CPU per request: from separate runs against a stand-in MongoDB server '
            '(standin_mongo.py) that answers at once from memory, so that the real server\'s '
            'waits do not inflate the client\'s CPU%s. Processes %s; the affinities were '
            'restored afterwards.%s' % (
                '; pyramid_session_redis against the real redis-server in those runs too (it '
                'is local and fast already)' if 'redis' in servers else '', pinned, extra))
    names = {lib.name for lib in libraries}
    if 'pyramid_session_redis' in names:
        lines.append(
            '- pyramid_session_redis: %s, its other options its defaults; redis-server as an '
            'LRU cache (maxmemory %s, allkeys-lru). That is the read-heavy production set-up '
            'its documentation describes: the expiry lives in the session and moves once '
            'timeout_trigger seconds of the timeout have passed, so a read is one GET. With '
            'set_redis_ttl left True, version 1.8 would also send an EXPIRE after every read.'
            % (', '.join('%s=%s' % item for item in REDIS_OPTIONS.items()), MAXMEMORY))
    if 'mongodb' in servers:
        pools = 'pymongo: maxPoolSize %d' % pymongo.common.MAX_POOL_SIZE
        if 'redis' in servers:   # redis-py is installed only with the Redis peer
            import redis
            redis_pool = redis.ConnectionPool().max_connections
            pools += '; redis-py: max_connections %s' % (
                'unbounded' if redis_pool >= 2 ** 31 else redis_pool)
        lines.append(
            '- Connection pools: every library\'s store client has its default pool '
            '(%s). Only in concurrency, and only on a MongoDB server that loses concurrent '
            'updates of one document (see the control below that table), every MongoDB '
            'library\'s client has maxPoolSize=1 alike.' % pools)
        if OURS in names:
            lines.append(
                '- pyramid_mongosession\'s MongoClient: %s, so that every socket operation is '
                'bounded, as its documentation recommends for a client handed to '
                'MongoSessionFactory.' % ', '.join('%s=%s' % item
                                                   for item in CLIENT_TIMEOUTS.items()))
    if populations:
        sizes = ' and '.join(thousands(p) for p in populations)
        text = ('- Populated store: read-only and write-one-key also ran with %s other '
                'sessions stored, for every library that stores sessions on a server. The '
                'others are copies, under fresh ids, of a session the library stored itself '
                '(its own document or value), sent in batches of 1 000 (insert_many; for '
                'Redis, pipelined SETs, with its TTL if it has one); each store was filled '
                'once per size, the larger grown from the smaller, and the measured visitor\'s '
                'session was stored after the others. Timed runs there make at least %d '
                'request%s each.' % (sizes, profile['populated_min_requests'],
                                     '' if profile['populated_min_requests'] == 1 else 's'))
        if real_pass.populating:
            spent = ', '.join('%s %s: %.1f s' % (name, thousands(size), seconds)
                              for (name, size), seconds in sorted(real_pass.populating.items()))
            text += ' Filling the throughput server and redis-server took: %s.' % spent
        if mode == 'quick':
            text += ' --quick stores %s only; the full run also %s.' % (
                sizes, ' and '.join(thousands(p) for p in PROFILES['full']['populations']
                                    if p not in populations) or 'the same')
        lines.append(text)
    return lines


if __name__ == '__main__':
    main()
