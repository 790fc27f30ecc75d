"""The benchmark's verdicts, exit status and warnings, without running it.

A measurement the server could not keep up with (the 100 000-session rows on
FerretDB 1.x time out) is a miss the tables and targets report, not a broken
run: ``benchmarks/run.py`` exits 0 unless ``--strict``. Any other failure is
the benchmark's, and exits 1. Warnings that the libraries log once per pass
are printed once per run, short.
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
                                 for name in ('measure', 'report', 'run')})
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
