"""The benchmark's output: reStructuredText tables, ratios and the targets' verdicts.

Every function takes the summaries of :func:`measure.summarise`, keyed by
``(scenario, population, library)``: ``real`` from the runs against the
real servers (requests/s, round trips, bytes, lost updates) and ``cpu``
from the runs that the CPU figures come from (the stand-in by default).
"""
from libraries import OURS, STUBBED
from measure import label, thousands

PEERS_SERVER_SIDE = ('pyramid_session_redis', 'pyramid_beaker')
BEAKER = 'pyramid_beaker'
REDIS = 'pyramid_session_redis'
BASELINE = 'no-session'

#: Round trips per request that pyramid_mongosession should make at most.
ROUND_TRIP_TARGETS = [
    ('untouched', 0), ('new-empty', 0), ('new-write', 1), ('read-only', 1),
    ('write-one-key', 1), ('read-then-write', 2), ('login', 3), ('logout', 1),
]
#: How pyramid_mongosession does what a scenario's name says, where it has a choice.
HOW = {'login': "options['change_id']", 'logout': "options['expire']"}
#: Bytes that changing one key of a ~100 KB session may send.
BYTES_TARGET = 2048
#: pyramid_mongosession's requests/s over pyramid_beaker's, on the same server.
BEAKER_RATIO_TARGET = 2.0
BEAKER_RATIO_SCENARIOS = ('read-only', 'write-one-key')
#: pyramid_mongosession's own code (driver stubbed, less no-session), µs per
#: request at most, in the pinned CPU runs.
OWN_CODE_TARGETS = [('read-only', 30), ('write-one-key', 40)]
#: pyramid_mongosession's CPU per request over pyramid_session_redis's, at most.
REDIS_CPU_TARGETS = [('read-only', 1.5), ('write-one-key', 1.0), ('logout', 1.0)]
#: A median CPU time over the peer's by less than this share, or by less than
#: NOISE_US microseconds, is taken as noise.
NOISE = 0.05
NOISE_US = 10


def rst_table(headers, rows):
    """A reStructuredText simple table (also readable as plain text)."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    rule = '  '.join('=' * w for w in widths)

    def line(row):
        return '  '.join(c.ljust(w) for c, w in zip(row, widths)).rstrip()
    return [rule, line(cells[0]), rule] + [line(r) for r in cells[1:]] + [rule]


def trips(value):
    return ('%.2f' % value).rstrip('0').rstrip('.') if value != int(value) else str(int(value))


def _failed(row):
    return row is not None and row.get('error')


def _server_miss(row):
    """A failure that was the server's doing (too slow, gone): a miss, not a broken run."""
    return bool(_failed(row) and row.get('server'))


#: What a table cell and a verdict say of a measurement that failed.
FAILED, SERVER_MISS = 'failed', 'server miss'


def _failure(row):
    return SERVER_MISS if _server_miss(row) else FAILED


def scenario_tables(real, libraries, chosen, notes, rounds=1):
    """One table per scenario; a populated store's rows beside the empty store's."""
    lines = []
    scenarios = []
    for scenario, _ in chosen:
        if scenario not in scenarios:
            scenarios.append(scenario)
    for scenario in scenarios:
        populations = [p for s, p in chosen if s == scenario]
        populated = any(populations)
        headers = ['library'] + (['other sessions stored'] if populated else []) + [
            'requests/s', 'round trips/request', 'bytes sent/request']
        concurrency = scenario == 'concurrency'
        if concurrency:
            headers.append('lost updates')
        table, failures, once = [], [], []
        for library in libraries:
            for population in populations:
                row = real.get((scenario, population, library.name))
                if row is None:
                    continue
                cells = [library.name] + ([thousands(population)] if populated else [])
                if _failed(row):
                    cells += [_failure(row)] * (len(headers) - len(cells))
                    failures.append('%s, %s: %s: %s' % (
                        library.name, label(scenario, population),
                        'server miss, the server did not keep up (not a fault of the '
                        'benchmark)' if _server_miss(row) else 'failed', row['error']))
                else:
                    cells += [_rate(row['requests_per_s']), trips(row['round_trips']),
                              '%.0f' % row['bytes_written']]
                    if concurrency:
                        cells.append('%d of %d' % (row['lost_updates'], row['expected_updates']))
                    if row.get('slow_run_s') and rounds > 1:
                        once.append('%s, %s: one timed run, not %d (it took %.0f s).' % (
                            library.name, label(scenario, population), rounds,
                            row['slow_run_s']))
                table.append(cells)
        if not table:
            continue
        skipped = ['%s: not run (%s).' % (lib.name, lib.unsupported[scenario])
                   for lib in libraries if scenario in lib.unsupported]
        if populated:
            skipped += ['%s: not run with other sessions stored (%s).' % (lib.name, lib.no_store)
                        for lib in libraries
                        if lib.no_store and scenario not in lib.unsupported]
        lines += [scenario, '-' * len(scenario), ''] + rst_table(headers, table)
        extra = skipped + failures + once + notes.get(scenario, [])
        lines += [''] + extra if extra else []
        lines.append('')
    return lines


def own_code(cpu, scenario, population=0):
    """pyramid_mongosession's own CPU µs per request: its driver-stubbed runs less
    no-session's, or None when either is missing or failed."""
    stubbed = cpu.get((scenario, population, STUBBED))
    baseline = cpu.get((scenario, population, BASELINE))
    if stubbed is None or baseline is None or _failed(stubbed) or _failed(baseline):
        return None
    return stubbed['cpu_us'] - baseline['cpu_us']


def cpu_table(cpu, libraries, chosen):
    """Client CPU µs per request: one row per measurement, one column per library;
    with pyramid_mongosession's driver-stubbed runs, also its own code's column."""
    names = [lib.name for lib in libraries]
    own = STUBBED in names and BASELINE in names
    table = []
    for scenario, population in chosen:
        cells = [label(scenario, population)]
        for name in names:
            row = cpu.get((scenario, population, name))
            if row is None:
                cells.append('—')
            elif _failed(row):
                cells.append(_failure(row))
            else:
                cells.append('%.0f' % row['cpu_us'])
        if own:
            value = own_code(cpu, scenario, population)
            cells.append('—' if value is None else '%d' % round(value))   # never '-0'
        if any(cell != '—' for cell in cells[1:]):
            table.append(cells)
    headers = ['scenario'] + names + (['own code (stubbed − no-session)'] if own else [])
    return rst_table(headers, table) if table else []


def command_table(mongo, redis_, stub=None):
    """pymongo's and redis-py's client CPU µs per command, side by side.

    ``mongo``, ``redis_`` and ``stub`` (the driver-stubbed runs' stub
    collection, for the same commands as pymongo): ``[(command, µs)]``, any of
    them empty; the rows pair them as :data:`commands.PAIRS` does.
    """
    from commands import AFTER_REQUEST, PAIRS
    mongo, redis_, stub = dict(mongo or ()), dict(redis_ or ()), dict(stub or ())
    after = any(name.endswith(AFTER_REQUEST) for name in list(mongo) + list(redis_))

    def cells(costs, command):
        """The command, its µs, and (in a run that measured them) its µs after a request."""
        if command not in costs:
            return ['—', ''] + ([''] if after else [])
        row = [command, '%.0f' % costs[command]]
        if after:
            following = costs.get(command + AFTER_REQUEST)
            row.append('' if following is None else '%.0f' % following)
        return row
    table = []
    for what, mongo_command, redis_command in PAIRS:
        if mongo_command not in mongo and redis_command not in redis_:
            continue
        row = [what] + cells(mongo, mongo_command)
        if stub:
            row.append('%.1f' % stub[mongo_command] if mongo_command in stub else '')
        if redis_:
            row += cells(redis_, redis_command)
        table.append(row)
    if not table:
        return []
    measured = ['µs', 'µs after a request'] if after else ['µs']
    return rst_table(['what the store does', 'pymongo'] + measured
                     + (['stub µs'] if stub else [])
                     + (['redis-py'] + measured if redis_ else []), table)


def ferretdb_table(ferret, real, libraries, chosen, server):
    """Requests/s on FerretDB beside the same on the throughput server (named ``server``).

    ``ferret``: the summaries of the FerretDB pass; ``chosen``: its measurements.
    One row per measurement and library.
    """
    table = []
    for scenario, population in chosen:
        for library in libraries:
            cells = [label(scenario, population), library.name]
            for source in (ferret, real):
                row = source.get((scenario, population, library.name))
                if row is None:
                    cells.append('—')
                elif _failed(row):
                    cells.append(_failure(row))
                else:
                    cells.append(_rate(row['requests_per_s']))
            if cells[2] != '—':
                table.append(cells)
    return rst_table(['scenario', 'library', 'requests/s on FerretDB',
                      'requests/s on %s' % server], table) if table else []


def ratio_tables(real, cpu, libraries, chosen):
    """pyramid_mongosession ÷ each peer: requests/s (real server) and CPU (the CPU runs)."""
    peers = [lib.name for lib in libraries if lib.name != OURS]
    if not peers or not any(OURS == lib.name for lib in libraries):
        return []
    lines = []
    for title, source, key in [
            ('Requests per second, %s ÷ peer (above 1: %s is faster)' % (OURS, OURS),
             real, 'requests_per_s'),
            ('CPU per request, %s ÷ peer (below 1: %s uses less)' % (OURS, OURS),
             cpu, 'cpu_us')]:
        table = []
        for scenario, population in chosen:
            ours = source.get((scenario, population, OURS))
            if ours is None or _failed(ours):
                continue
            cells = [label(scenario, population)]
            for peer in peers:
                other = source.get((scenario, population, peer))
                cells.append('—' if other is None or _failed(other) or not other[key]
                             else '%.2f' % (ours[key] / other[key]))
            table.append(cells)
        if table:
            lines += [title, ''] + rst_table(['scenario'] + peers, table) + ['']
    return lines


def _more_cpu(ours, other):
    """Does ``ours`` use more CPU than ``other`` beyond noise (medians; NOISE, NOISE_US)?"""
    return (ours['cpu_us'] > other['cpu_us'] * (1 + NOISE)
            and ours['cpu_us'] - other['cpu_us'] > NOISE_US)


def target_rows(real, cpu, chosen, cpu_where, server=None):
    """The targets for pyramid_mongosession, as ``[target, wanted, measured, verdict]`` rows.

    ``real``: the throughput server's summaries (named ``server`` in the
    targets, if given); ``cpu``: the CPU runs' (``cpu_where`` says where they
    ran), with pyramid_mongosession's driver-stubbed runs if there were any.
    """
    rows = []

    def add(target, wanted, measured, met, server=False):
        rows.append([target, wanted, measured,
                     'met' if met else 'MISSED (server)' if server else 'MISSED'])

    def failed(target, want, row):
        add(target, want, '%s (see its table)' % _failure(row), False, _server_miss(row))

    def either_failed(target, want, pairs):
        names = [(name, row) for name, row in pairs if _failed(row)]
        add(target, want, ', '.join('%s: %s' % (name, _failure(row)) for name, row in names)
            + ': no comparison', False, all(_server_miss(row) for _, row in names))

    populations = {}
    for scenario, population in chosen:
        populations.setdefault(scenario, []).append(population)

    for scenario, wanted in ROUND_TRIP_TARGETS:
        for population in populations.get(scenario, ()):
            row = real.get((scenario, population, OURS))
            if row is None:
                continue
            target = 'round trips per request, %s' % label(scenario, population)
            if scenario in HOW:
                target += ' (%s)' % HOW[scenario]
            want = 'at most %d' % wanted
            if _failed(row):
                failed(target, want, row)
            else:
                add(target, want, trips(row['round_trips']), row['round_trips'] <= wanted)

    row = real.get(('write-one-key-100kb', 0, OURS))
    if row is not None:
        target = 'bytes sent to change one key of a ~100 KB session'
        want = 'at most %d' % BYTES_TARGET
        if _failed(row):
            failed(target, want, row)
        else:
            add(target, want, '%.0f' % row['bytes_written'], row['bytes_written'] <= BYTES_TARGET)

    for scenario in BEAKER_RATIO_SCENARIOS:
        for population in populations.get(scenario, ()):
            ours = real.get((scenario, population, OURS))
            beaker = real.get((scenario, population, BEAKER))
            if ours is None or beaker is None:
                continue
            target = 'requests/s over %s\'s%s, %s' % (
                BEAKER, ' on %s' % server if server else '', label(scenario, population))
            want = 'at least %.0f×' % BEAKER_RATIO_TARGET
            if _failed(ours) or _failed(beaker):
                either_failed(target, want, ((OURS, ours), (BEAKER, beaker)))
                continue
            ratio = ours['requests_per_s'] / beaker['requests_per_s']
            add(target, want, '%s vs %s/s: %.2f×' % (_rate(ours['requests_per_s']),
                                                     _rate(beaker['requests_per_s']), ratio),
                ratio >= BEAKER_RATIO_TARGET)

    cpu_scenarios = {scenario for scenario, population in chosen if population == 0}
    for scenario, limit in OWN_CODE_TARGETS:
        if scenario not in cpu_scenarios:
            continue
        stubbed = cpu.get((scenario, 0, STUBBED))
        baseline = cpu.get((scenario, 0, BASELINE))
        if stubbed is None or baseline is None:
            continue
        target = 'own code\'s CPU per request (driver stubbed − no-session, %s), %s' % (
            cpu_where, scenario)
        want = 'at most %d µs' % limit
        if _failed(stubbed) or _failed(baseline):
            either_failed(target, want, ((STUBBED, stubbed), (BASELINE, baseline)))
            continue
        value = stubbed['cpu_us'] - baseline['cpu_us']
        add(target, want, '%.0f µs (%.0f − %.0f)' % (value, stubbed['cpu_us'],
                                                   baseline['cpu_us']), value <= limit)

    for scenario, ratio in REDIS_CPU_TARGETS:
        if scenario not in cpu_scenarios:
            continue
        ours = cpu.get((scenario, 0, OURS))
        redis_ = cpu.get((scenario, 0, REDIS))
        if ours is None or redis_ is None:
            continue
        target = 'CPU per request vs %s\'s (%s), %s' % (REDIS, cpu_where, scenario)
        want = 'at most theirs' if ratio == 1 else 'at most %s× theirs' % _number(ratio)
        if _failed(ours) or _failed(redis_):
            either_failed(target, want, ((OURS, ours), (REDIS, redis_)))
            continue
        limit = dict(redis_, cpu_us=redis_['cpu_us'] * ratio)
        measured = '%.0f vs %.0f µs: %.2f×' % (ours['cpu_us'], redis_['cpu_us'],
                                               ours['cpu_us'] / redis_['cpu_us'])
        over = _more_cpu(ours, limit)
        if not over and ours['cpu_us'] > limit['cpu_us']:
            measured += ' (over by under %.0f%% or %d µs: noise)' % (NOISE * 100, NOISE_US)
        add(target, want, measured, not over)
    return rows


def _number(value):
    return ('%.2f' % value).rstrip('0').rstrip('.')


def _rate(value):
    return '%.0f' % value if value >= 10 else '%.2g' % value
