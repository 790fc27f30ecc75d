"""The benchmark's verdicts, tables, exit status and warnings, without running it.

A measurement the server could not keep up with (a populated row on a slow
server that times out) is a miss the tables and targets report, not a broken
run: ``benchmarks/run.py`` exits 0 unless ``--strict``. Any other failure is
the benchmark's, and exits 1. Warnings that the libraries log once per pass
are printed once per run, short. The CPU table has pyramid_mongosession's
driver-stubbed column and its own code (stubbed less no-session); the
per-command table pairs pymongo's commands with redis-py's; the FerretDB
column stands beside the throughput server's figures; the CPU targets are
computed from the run. No server is started here.
"""
import importlib
import logging
import os
import sys
from types import SimpleNamespace

import pytest
from pymongo.errors import NetworkTimeout, ServerSelectionTimeoutError

from pyramid_mongosession import SessionBackendError

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          'benchmarks')


@pytest.fixture(scope='module')
def bench():
    """The benchmark's modules, imported as run.py imports them."""
    sys.path.insert(0, BENCHMARKS)
    try:
        yield SimpleNamespace(**{name: importlib.import_module(name)
                                 for name in ('measure', 'report', 'run', 'pinning',
                                              'stub_collection', 'libraries', 'commands')})
    finally:
        sys.path.remove(BENCHMARKS)


def backend_error(cause):
    try:
        try:
            raise cause
        except Exception as exc:
            raise SessionBackendError('MongoDB did not answer in time: could not store a '
                                      'session: %s' % exc) from exc
    except SessionBackendError as exc:
        return exc


@pytest.mark.parametrize('error, by_the_server', [
    (NetworkTimeout('127.0.0.1:40881: timed out'), True),
    (ServerSelectionTimeoutError('no servers'), True),
    (TimeoutError('timed out'), True),
    (SessionBackendError('MongoDB is unavailable since 10:00:00 UTC, 3 s ago (...)'), True),
    (AssertionError('expected 40 keys, found 39'), False),
    (KeyError('visits'), False),
    (SessionBackendError('could not store a session: refused'), False),
])
def test_server_caused(bench, error, by_the_server):
    assert bench.measure.server_caused(error) is by_the_server


def test_a_timeout_behind_the_session_error_is_the_servers(bench):
    assert bench.measure.server_caused(backend_error(NetworkTimeout('timed out'))) is True


OURS = 'pyramid_mongosession'
MISS = {'error': 'SessionBackendError: MongoDB did not answer in time: ...', 'server': True,
        'runs': 0}
BROKEN = {'error': 'AssertionError: expected 40 keys', 'server': False, 'runs': 0}
GOOD = {'error': None, 'server': False, 'runs': 3, 'requests_per_s': 900.0,
        'round_trips': 1, 'bytes_written': 300, 'cpu_us': 600.0, 'requests': 2700}


def summaries(row):
    return {('read-only', 0, OURS): GOOD, ('read-only', 100000, OURS): row}


@pytest.mark.parametrize('row, strict, status, first', [
    (MISS, False, 0, '1 measurement(s) missed because the server did not keep up (reported '
                     'in the tables and the targets; the benchmark itself worked):\n'),
    (MISS, True, 1, '1 measurement(s) missed because the server did not keep up (reported '
                    'in the tables and the targets; the benchmark itself worked; --strict '
                    'makes this a failure):\n'),
    (BROKEN, False, 1, '1 measurement(s) failed (see the tables):\n'),
    (GOOD, False, 0, None),
])
def test_exit_status_says_whether_the_benchmark_worked(bench, row, strict, status, first):
    targets = bench.report.target_rows(summaries(row), summaries(row),
                                       [('read-only', 0), ('read-only', 100000)], 'stand-in')
    got, lines = bench.run.exit_status([summaries(row)], targets, strict)
    assert got == status
    assert (lines[0] if lines else None) == first
    if row is not GOOD:
        assert lines[1] == '  %s, read-only, 100 000 stored: %s\n' % (OURS, row['error'])


def test_strict_fails_a_missed_target(bench):
    slow = dict(GOOD, round_trips=2)
    targets = bench.report.target_rows({('read-only', 0, OURS): slow},
                                       {('read-only', 0, OURS): slow}, [('read-only', 0)],
                                       'stand-in')
    assert targets[0][-1] == 'MISSED'
    assert bench.run.exit_status([{('read-only', 0, OURS): slow}], targets)[0] == 0
    assert bench.run.exit_status([{('read-only', 0, OURS): slow}], targets, strict=True) == (
        1, ['1 target(s) missed (--strict makes this a failure)\n'])


def test_a_server_miss_is_reported_in_the_table_and_the_verdicts(bench):
    chosen = [('read-only', 0), ('read-only', 100000)]
    library = SimpleNamespace(name=OURS, unsupported={}, no_store=None)
    table = '\n'.join(bench.report.scenario_tables(summaries(MISS), [library], chosen, {}))
    assert ('pyramid_mongosession  100 000                server miss  server miss'
            in table)
    assert ('pyramid_mongosession, read-only, 100 000 stored: server miss, the server did '
            'not keep up (not a fault of the benchmark): ' + MISS['error']) in table
    rows = bench.report.target_rows(summaries(MISS), summaries(MISS), chosen, 'stand-in')
    assert rows[1] == ['round trips per request, read-only, 100 000 stored', 'at most 1',
                       'server miss (see its table)', 'MISSED (server)']
    rows = bench.report.target_rows(summaries(BROKEN), summaries(BROKEN), chosen, 'stand-in')
    assert rows[1][2:] == ['failed (see its table)', 'MISSED']


def test_warnings_are_printed_once_per_run_and_short(bench, capsys):
    logger = logging.getLogger('pyramid_mongosession.store.benchtest')
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter('%(name)s: %(message)s'))
    handler.addFilter(bench.run.OncePerRun())
    logger.addHandler(handler)
    logger.propagate = False
    try:
        for database in ('bench_a', 'bench_b', 'bench_a', 'bench_b'):
            logger.warning('the server refused a TTL index on %s.sessions.expires (%s); expired '
                           'sessions are ignored on read but not deleted: run "pmongosession '
                           'purge" periodically', database, 'NotImplemented: ' + 'x' * 200)
            logger.warning('something else, ' + 'long ' * 60)
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    assert capsys.readouterr().err.splitlines() == [
        'pyramid_mongosession.store.benchtest: the server has no TTL indexes (FerretDB 1.x): '
        'expired sessions stay stored; nothing this benchmark measures depends on it',
        'pyramid_mongosession.store.benchtest: something else, ' + ('long ' * 60)[:141] + '...',
    ]


STUBBED = 'pyramid_mongosession, driver stubbed'
REDIS = 'pyramid_session_redis'


def cpu_rows(scenario, **cpu_us):
    """CPU summaries of one scenario: ``no_session=20, ours=100, stubbed=45, redis=90``."""
    names = {'no_session': 'no-session', 'ours': OURS, 'stubbed': STUBBED, 'redis': REDIS}
    return {(scenario, 0, names[key]): dict(GOOD, cpu_us=float(value))
            for key, value in cpu_us.items()}


def by_target(rows):
    return {row[0]: row[1:] for row in rows}


def test_the_stubbed_name_is_the_libraries(bench):
    assert bench.libraries.STUBBED == STUBBED
    assert bench.report.BASELINE == 'no-session'


def test_own_code_is_the_stubbed_runs_less_no_session(bench):
    cpu = cpu_rows('read-only', no_session=21, stubbed=45.5)
    assert bench.report.own_code(cpu, 'read-only') == 24.5
    assert bench.report.own_code(cpu, 'write-one-key') is None
    cpu[('read-only', 0, STUBBED)] = MISS
    assert bench.report.own_code(cpu, 'read-only') is None


def test_the_cpu_table_has_the_stubbed_and_own_code_columns(bench):
    cpu = cpu_rows('read-only', no_session=21, ours=120, stubbed=45, redis=90)
    libraries = [SimpleNamespace(name=name) for name in ('no-session', REDIS, OURS, STUBBED)]
    table = bench.report.cpu_table(cpu, libraries, [('read-only', 0), ('logout', 0)])
    assert table[1].split('  ')[-1] == 'own code (stubbed − no-session)'
    assert table[3].split() == ['read-only', '21', '90', '120', '45', '24']
    assert len(table) == 5   # logout has no row: nothing measured
    without = bench.report.cpu_table(cpu, libraries[:3], [('read-only', 0)])
    assert 'own code' not in without[1]
    cpu = cpu_rows('untouched', no_session=18.4, stubbed=18.1)
    table = bench.report.cpu_table(cpu, [libraries[0], libraries[3]], [('untouched', 0)])
    assert table[3].split() == ['untouched', '18', '18', '0']


@pytest.mark.parametrize('own, limit, verdict', [(24, 30, 'met'), (30, 30, 'met'),
                                                  (31, 30, 'MISSED')])
def test_own_code_targets(bench, own, limit, verdict):
    cpu = cpu_rows('read-only', no_session=20, stubbed=20 + own)
    rows = by_target(bench.report.target_rows({}, cpu, [('read-only', 0)], 'stand-in'))
    target = ('own code\'s CPU per request (driver stubbed − no-session, stand-in), '
              'read-only')
    assert rows[target] == ['at most %d µs' % limit, '%d µs (%d − 20)' % (own, 20 + own),
                            verdict]


def test_the_write_one_key_own_code_target_is_40_us(bench):
    cpu = cpu_rows('write-one-key', no_session=25, stubbed=64)
    rows = bench.report.target_rows({}, cpu, [('write-one-key', 0)], 'stand-in')
    assert rows == [['own code\'s CPU per request (driver stubbed − no-session, stand-in), '
                     'write-one-key', 'at most 40 µs', '39 µs (64 − 25)', 'met']]


def test_own_code_is_not_a_target_with_other_sessions_stored(bench):
    cpu = {('read-only', 10000, STUBBED): dict(GOOD, cpu_us=200.0),
           ('read-only', 10000, 'no-session'): dict(GOOD, cpu_us=20.0)}
    assert bench.report.target_rows({}, cpu, [('read-only', 10000)], 'stand-in') == []


@pytest.mark.parametrize('scenario, ours, theirs, wanted, measured, verdict', [
    ('read-only', 140, 100, 'at most 1.5× theirs', '140 vs 100 µs: 1.40×', 'met'),
    ('read-only', 170, 100, 'at most 1.5× theirs', '170 vs 100 µs: 1.70×', 'MISSED'),
    ('read-only', 152, 100, 'at most 1.5× theirs',
     '152 vs 100 µs: 1.52× (over by under 5% or 10 µs: noise)', 'met'),
    ('write-one-key', 90, 100, 'at most theirs', '90 vs 100 µs: 0.90×', 'met'),
    ('write-one-key', 130, 100, 'at most theirs', '130 vs 100 µs: 1.30×', 'MISSED'),
    ('logout', 104, 100, 'at most theirs',
     '104 vs 100 µs: 1.04× (over by under 5% or 10 µs: noise)', 'met'),
    ('logout', 300, 200, 'at most theirs', '300 vs 200 µs: 1.50×', 'MISSED'),
])
def test_cpu_targets_against_pyramid_session_redis(bench, scenario, ours, theirs, wanted,
                                                    measured, verdict):
    cpu = cpu_rows(scenario, ours=ours, redis=theirs)
    rows = by_target(bench.report.target_rows({}, cpu, [(scenario, 0)], 'stand-in'))
    target = 'CPU per request vs pyramid_session_redis\'s (stand-in), %s' % scenario
    assert rows[target] == [wanted, measured, verdict]


def test_no_cpu_target_for_other_scenarios(bench):
    cpu = cpu_rows('login', ours=500, redis=100)
    assert bench.report.target_rows({}, cpu, [('login', 0)], 'stand-in') == []


def test_a_failed_cpu_run_misses_its_target(bench):
    cpu = cpu_rows('read-only', ours=100)
    cpu[('read-only', 0, REDIS)] = MISS
    rows = bench.report.target_rows({}, cpu, [('read-only', 0)], 'stand-in')
    assert rows == [['CPU per request vs pyramid_session_redis\'s (stand-in), read-only',
                     'at most 1.5× theirs', 'pyramid_session_redis: server miss: no comparison',
                     'MISSED (server)']]


def test_the_beaker_target_names_the_throughput_server(bench):
    real = {('read-only', 0, OURS): dict(GOOD, requests_per_s=2000.0),
            ('read-only', 0, 'pyramid_beaker'): dict(GOOD, requests_per_s=400.0)}
    rows = bench.report.target_rows(real, {}, [('read-only', 0)], 'stand-in',
                                    server='mongo-java-server')
    assert rows[-1] == ['requests/s over pyramid_beaker\'s on mongo-java-server, read-only',
                        'at least 2×', '2000 vs 400/s: 5.00×', 'met']


def test_the_command_table_pairs_pymongo_with_redis_py(bench):
    mongo = [("command('find') by _id", 64.0), ('find_one by _id', 80.4),
             ('update_one by _id ($set of one key)', 70.0),
             ('find_one_and_delete by _id', 75.0), ('delete_one by _id', 66.0),
             ("command('find') by _id within pymongo.timeout(5)", 85.0)]
    redis_ = [('GET', 30.2), ('SET (the whole value)', 31.0), ('DELETE', 29.0)]
    table = bench.report.command_table(mongo, redis_)
    assert table[1].split('  ')[0] == 'what the store does'
    rows = [line.split('  ') for line in table[3:-1]]
    assert [[cell.strip() for cell in row if cell.strip()] for row in rows] == [
        ['read a session', "command('find') by _id", '64', 'GET', '30'],
        ['read a session, through a cursor', 'find_one by _id', '80', '—'],
        ['write a session', 'update_one by _id ($set of one key)', '70',
         'SET (the whole value)', '31'],
        ['end a session, returning it', 'find_one_and_delete by _id', '75', '—'],
        ['end a session', 'delete_one by _id', '66', 'DELETE', '29'],
        ['read a session, bounded per call',
         "command('find') by _id within pymongo.timeout(5)", '85', '—'],
    ]
    assert bench.report.command_table([], []) == []
    only_mongo = bench.report.command_table(mongo, [])
    assert only_mongo[1].split() == ['what', 'the', 'store', 'does', 'pymongo', 'µs']
    only_redis = bench.report.command_table([], redis_)
    assert len(only_redis) == 3 + 3 + 1


def test_the_command_table_shows_the_stubs_own_work_beside_pymongo(bench):
    table = bench.report.command_table([("command('find') by _id", 80.0)], [('GET', 30.0)],
                                       stub=[("command('find') by _id", 1.36)])
    assert table[1].split() == ['what', 'the', 'store', 'does', 'pymongo', 'µs', 'stub', 'µs',
                                'redis-py', 'µs']
    assert table[3].split() == ['read', 'a', 'session', "command('find')", 'by', '_id', '80',
                                '1.4', 'GET', '30']


def test_the_command_table_shows_each_command_after_a_request_when_measured(bench):
    after = bench.commands.AFTER_REQUEST
    table = bench.report.command_table(
        [("command('find') by _id", 80.0), ("command('find') by _id" + after, 118.0),
         ('delete_one by _id', 70.0)],
        [('GET', 30.0), ('GET' + after, 41.0), ('DELETE', 29.0), ('DELETE' + after, 40.0)])
    assert table[1].split('  ')[0] == 'what the store does'
    rows = [[cell.strip() for cell in line.split('  ') if cell.strip()] for line in table[3:-1]]
    assert rows == [['read a session', "command('find') by _id", '80', '118', 'GET', '30', '41'],
                    ['end a session', 'delete_one by _id', '70', 'DELETE', '29', '40']]
    assert 'µs after a request' in table[1]


def test_the_ferretdb_column_stands_beside_the_throughput_server(bench):
    libraries = [SimpleNamespace(name='pyramid_beaker'), SimpleNamespace(name=OURS)]
    ferret = {('read-only', 0, OURS): dict(GOOD, requests_per_s=880.0),
              ('read-only', 0, 'pyramid_beaker'): dict(GOOD, requests_per_s=290.0),
              ('write-one-key', 10000, OURS): MISS}
    real = {('read-only', 0, OURS): dict(GOOD, requests_per_s=2100.0),
            ('write-one-key', 10000, OURS): dict(GOOD, requests_per_s=1900.0)}
    table = bench.report.ferretdb_table(ferret, real, libraries,
                                        [('read-only', 0), ('write-one-key', 10000)],
                                        'mongo-java-server')
    assert table[1].split('  ')[-1] == 'requests/s on mongo-java-server'
    assert [line.split() for line in table[3:-1]] == [
        ['read-only', 'pyramid_beaker', '290', '—'],
        ['read-only', OURS, '880', '2100'],
        ['write-one-key,', '10', '000', 'stored', OURS, 'server', 'miss', '1900'],
    ]


def test_nothing_pinned_says_why(bench):
    pinned = bench.pinning.Pinned()
    assert pinned.summary() == 'not pinned to one CPU: nothing to pin'
    pinned.failures.append(('redis-server', 'no permission'))
    assert pinned.summary() == 'not pinned to one CPU: redis-server: no permission'


@pytest.mark.skipif(not hasattr(os, 'sched_setaffinity'), reason='no sched_setaffinity')
def test_pinning_this_process_is_undone(bench):
    if bench.pinning.unavailable():
        pytest.skip(bench.pinning.unavailable())
    before = os.sched_getaffinity(0)
    cpu, load = bench.pinning.least_busy_cpu(0.05)
    assert cpu in before
    assert load is None or load >= 0
    pinned = bench.pinning.Pinned(cpu, 'the least busy')
    try:
        assert pinned.pin('this process', os.getpid())
        assert os.sched_getaffinity(0) == {cpu}
        assert pinned.summary().startswith('pinned to CPU %d (the least busy), all on the '
                                           'same CPU: this process' % cpu)
    finally:
        pinned.undo()
    assert os.sched_getaffinity(0) == before


def test_the_stub_collection_sees_its_writes(bench):
    stub = bench.stub_collection.StubCollection()
    stub.insert_one({'_id': 'a', 'data': {'user': 'u'}, 'v': 1})
    result = stub.update_one({'_id': 'a', 'expires': {'$not': {'$lte': 0}}},
                             {'$set': {'data.k': 'x'}, '$inc': {'v': 1},
                              '$unset': {'data.user': ''},
                              '$push': {'data.log': {'$each': [1, 2]}}})
    assert result.matched_count == 1
    found = stub.find_one({'_id': 'a'})
    assert found == {'_id': 'a', 'data': {'k': 'x', 'log': [1, 2]}, 'v': 2}
    found['data']['k'] = 'changed'   # a copy, as a server's answer is
    assert stub.find_one({'_id': 'a'}, {'_id': 1}) == {'_id': 'a'}
    assert stub.find_one({'_id': 'a'})['data']['k'] == 'x'
    assert stub.count_documents({'_id': 'a'}, limit=1) == 1
    assert stub.update_one({'_id': 'b'}, {'$set': {'x': 1}}).matched_count == 0
    assert stub.find_one_and_replace({'_id': 'a'}, {'retired': 1})['v'] == 2
    assert stub.find_one({'_id': 'a'}) == {'_id': 'a', 'retired': 1}
    assert stub.find_one_and_delete({'_id': 'a'}) == {'_id': 'a', 'retired': 1}
    assert stub.delete_one({'_id': 'a'}).deleted_count == 0
    assert stub.find_one({'_id': 'a'}) is None


def test_the_stub_collection_is_not_taken_for_the_embedded_backend(bench):
    from pyramid_mongosession import MongoSessionFactory
    stub = bench.stub_collection.StubCollection()
    factory = MongoSessionFactory(stub, 'a secret that is long enough ' * 2)
    assert factory.connection.embedded is False
    options = stub.database.client.options
    assert options.timeout is None
    assert (options.pool_options.socket_timeout, options.pool_options.connect_timeout,
            options.server_selection_timeout) == (5.0, 5.0, 5.0)


def test_the_stub_clients_options_are_the_benchmark_clients(bench):
    import pymongo
    client = pymongo.MongoClient('mongodb://127.0.0.1:1', connect=False,
                                 **bench.libraries.CLIENT_TIMEOUTS)
    try:
        real = client.options
        stub = bench.stub_collection.StubCollection().database.client.options
        assert (stub.timeout, stub.server_selection_timeout) == (
            real.timeout, real.server_selection_timeout)
        assert (stub.pool_options.socket_timeout, stub.pool_options.connect_timeout) == (
            real.pool_options.socket_timeout, real.pool_options.connect_timeout)
    finally:
        client.close()


class FakePass:
    """Records the measurements it is asked for; its probes take ``ms`` per 1 000 documents."""

    def __init__(self, ms_per_thousand):
        self.ms = ms_per_thousand
        self.asked, self.rows, self.probes = [], {}, {}

    def run(self, chosen, probe=False):
        self.asked.append(chosen)
        for scenario, population in chosen:
            self.rows[scenario, population, OURS] = {
                'counted': None, 'timed': [dict(GOOD, requests_per_s=10.0)],
                'lost': [0, 0], 'error': None}
            if population:
                self.probes[population] = OURS, [('find by _id', 1.0), (
                    'update by _id and a condition on another field',
                    self.ms * population / 1000)]
        return self.rows


CHOSEN = [('read-only', 0), ('read-only', 10000), ('read-only', 100000)]


def test_ferretdb_runs_a_larger_population_when_the_probe_predicts_it_keeps_up(bench):
    fake, notes = FakePass(ms_per_thousand=5), []   # 50 ms at 10 000: 0.5 s at 100 000
    rows = bench.run.run_ferretdb(fake, CHOSEN, notes)
    assert fake.asked == [[('read-only', 0)], [('read-only', 10000)], [('read-only', 100000)]]
    assert set(rows) == {('read-only', p, OURS) for p in (0, 10000, 100000)}
    assert notes == []


def test_ferretdb_skips_a_population_the_probe_says_it_cannot_keep_up_with(bench):
    fake, notes = FakePass(ms_per_thousand=80), []   # 800 ms at 10 000: 8 s at 100 000
    rows = bench.run.run_ferretdb(fake, CHOSEN, notes)
    assert fake.asked == [[('read-only', 0)], [('read-only', 10000)]]
    assert ('read-only', 100000, OURS) not in rows
    assert notes == ['Not run on FerretDB with 100 000 other sessions stored: its slowest '
                     'probe command at 10 000 (800 ms, see its server probe) scales to about '
                     '8.0 s per command at 100 000, as FerretDB 1.x scans its table; the run '
                     'would take far longer and measure only that scan.']


def test_the_ferretdb_plan_leaves_out_concurrency_and_says_what_quick_leaves_out(bench):
    classes, chosen, notes = bench.run._ferretdb_plan(
        bench.run.PROFILES['quick'], ['read-only', 'logout', 'concurrency'], [10000],
        [bench.libraries.NoSession, bench.libraries.MongoSessions])
    assert classes == [bench.libraries.MongoSessions]
    assert chosen == [('read-only', 0)]
    assert notes[0].startswith('Concurrency is not run on FerretDB')
    assert notes[1:] == ['--quick runs only read-only on FerretDB.',
                         '--quick stores no other sessions on FerretDB (the full run stores '
                         'as many as on the throughput server, as long as FerretDB keeps up).']
    _, chosen, notes = bench.run._ferretdb_plan(
        bench.run.PROFILES['full'], ['read-only', 'logout'], [10000, 100000],
        [bench.libraries.MongoSessions])
    assert chosen == [('read-only', 0), ('logout', 0), ('read-only', 10000),
                      ('read-only', 100000)]
    assert notes == []


@pytest.mark.parametrize('find, find_with, update, update_with, said', [
    (0.5, 6.5, 0.4, 6.2, '13×'),    # a server that scans for a condition beside _id
    (0.5, 0.7, 0.4, 0.6, None),
    (50.0, 800.0, 140.0, 690.0, '16×'),   # the update's 4.9× is not counted
])
def test_a_server_that_scans_for_a_condition_beside_the_id_is_named(bench, find, find_with,
                                                                      update, update_with,
                                                                      said):
    timings = [('find by _id', find), ('find by _id and a condition on another field',
                                       find_with),
               ('update by _id', update), ('update by _id and a condition on another field',
                                           update_with)]
    assert bench.run._slow_conditions(timings) == said
