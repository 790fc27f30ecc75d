"""The ``pmongosession`` console script, against the real server of the suite."""
import datetime
import importlib.metadata
import os
import re
import subprocess
import sys
import textwrap
import time
import uuid

import bson
import pymongo
import pytest
from pyramid.config import Configurator

from pyramid_mongosession.cli import main, parse_value, percentile
from pyramid_mongosession.documents import document_id

from .conftest import SECRET, add_sessions, factory_for
from .servers import free_port

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def app_factory(global_config, **settings):
    """The application the test ini files name (``pserve`` could serve it)."""
    config = Configurator(settings=settings)
    config.include('pyramid_mongosession')
    return config.make_wsgi_app()


def write_ini(path, url, db_name, section='main', extra=''):
    path.write_text(textwrap.dedent('''\
        [app:%s]
        use = call:tests.test_cli:app_factory
        mongodb_session.url = %s
        mongodb_session.db_name = %s
        mongodb_session.secret = %s
        mongodb_session.operation_timeout = 5
        %s
        ''') % (section, url, db_name, SECRET, extra))
    return str(path)


@pytest.fixture
def ini(tmp_path, mongodb_url, database):
    return write_ini(tmp_path / 'app.ini', mongodb_url, database.name)


@pytest.fixture
def store(collection):
    """The request path's store of the test's collection, to put sessions in."""
    return factory_for(collection).store



def one_error_line(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert 'Traceback' not in err
    assert lines[0].startswith('pmongosession')
    return lines[0]


def stored_ids(collection):
    return {doc['_id'] for doc in collection.find({}, {'_id': 1})}


# -- the command line itself -------------------------------------------------------

def test_help_for_the_command_and_every_subcommand(run):
    status, out, err = run('--help')
    assert status == 0 and err == ''
    for command in ('ensure-indexes', 'purge', 'stats', 'revoke', 'sessions', 'export'):
        assert command in out
        status, out_sub, err = run(command, '--help')
        assert status == 0 and err == ''
        assert 'CONFIG_URI' in out_sub and '--app-name' in out_sub
    assert '--batch-seconds' in run('purge', '--help')[1]
    assert '--sample' in run('stats', '--help')[1]
    revoke_help = run('revoke', '--help')[1]
    assert '--json' in revoke_help and 'KEY=VALUE' in revoke_help and '--dry-run' in revoke_help


@pytest.mark.parametrize('argv, message', [
    ((), 'required: COMMAND'),
    (('purge',), 'required: CONFIG_URI'),
    (('frobnicate', 'app.ini'), 'invalid choice'),
    (('purge', 'app.ini', '--batch-seconds', '0'), '--batch-seconds'),
    (('stats', 'app.ini', '--sample', 'many'), '--sample'),
    (('purge', 'app.ini', '--var', 'novalue'), '--var'),
])
def test_usage_errors_exit_2_with_one_line(run, argv, message):
    status, out, err = run(*argv)
    assert status == 2
    assert message in one_error_line(err)
    assert out == ''


def test_missing_ini_file_is_a_usage_error(run, tmp_path):
    status, out, err = run('stats', str(tmp_path / 'absent.ini'))
    assert status == 2
    assert 'absent.ini' in one_error_line(err)


def test_bad_setting_is_a_configuration_error_naming_it(run, tmp_path, mongodb_url, database):
    path = write_ini(tmp_path / 'bad.ini', mongodb_url, database.name,
                     extra='mongodb_session.colour = blue')
    status, out, err = run('purge', path)
    assert status == 2
    assert 'mongodb_session.colour' in one_error_line(err)


def test_malformed_url_is_a_configuration_error(run, tmp_path):
    path = write_ini(tmp_path / 'typo.ini', 'mongdb://127.0.0.1:%d' % free_port(), 'db')
    status, out, err = run('stats', path)
    assert status == 2
    assert 'mongodb_session.url: Invalid URI scheme' in one_error_line(err)


def test_embedded_url_is_refused(run, tmp_path):
    path = write_ini(tmp_path / 'mem.ini', 'mongomock://', 'db')
    status, out, err = run('stats', path)
    assert status == 2
    assert 'mongomock://' in one_error_line(err)


def test_unreachable_server_exits_1_quickly_with_one_line(run, tmp_path):
    # Nothing listens on this loopback port.
    path = write_ini(tmp_path / 'down.ini', 'mongodb://127.0.0.1:%d' % free_port(), 'db',
                     extra='mongodb_session.client.serverSelectionTimeoutMS = 500')
    started = time.monotonic()
    status, out, err = run('purge', path, '--operation-timeout', '1')
    assert status == 1
    assert time.monotonic() - started < 10
    line = one_error_line(err)
    assert 'Topology Description' not in line
    assert out == ''


def test_console_script_entry_point():
    [entry] = [ep for ep in importlib.metadata.entry_points(group='console_scripts')
               if ep.name == 'pmongosession']
    assert entry.value == 'pyramid_mongosession.cli:main'
    assert entry.load() is main


def test_every_database_call_goes_through_the_store():
    """The command asks the package's modules, and never talks to MongoDB itself."""
    import ast
    import pyramid_mongosession.cli as cli
    imported = set()
    folder = os.path.dirname(cli.__file__)
    for name in os.listdir(folder):
        if not name.endswith('.py'):
            continue
        with open(os.path.join(folder, name), encoding='utf-8') as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported.update(alias.name.split('.')[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported.add(node.module.split('.')[0])
    assert imported and 'pymongo' not in imported


def test_runs_as_a_program_with_exit_status(ini, store, collection):
    add_sessions(store, 2, expired=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [REPO, os.environ.get('PYTHONPATH')])))
    done = subprocess.run([sys.executable, '-m', 'pyramid_mongosession.cli', 'purge', ini],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
    assert (done.returncode, done.stderr) == (0, '')
    assert 'purged 2 expired sessions' in done.stdout
    done = subprocess.run([sys.executable, '-m', 'pyramid_mongosession.cli', 'revoke', ini],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
    assert done.returncode == 2
    assert 'refusing' in one_error_line(done.stderr)


def run_into_closed_pipe(*argv):
    """Run the command as a program whose standard output nobody reads any more
    (``| head`` that has exited); return (status, stderr)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [REPO, os.environ.get('PYTHONPATH')])))
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run([sys.executable, '-m', 'pyramid_mongosession.cli'] + list(argv),
                              stdout=write_end, stderr=subprocess.PIPE, text=True,
                              env=env, cwd=REPO, timeout=60)
    finally:
        os.close(write_end)
    return done.returncode, done.stderr


def test_output_into_a_closed_pipe_ends_quietly(ini, store):
    add_sessions(store, 3)
    status, err = run_into_closed_pipe('stats', ini)
    assert (status, err) == (0, '')
    status, err = run_into_closed_pipe('--help')
    assert (status, err) == (0, '')


def test_closed_pipe_keeps_the_status_of_a_reported_failure(tmp_path):
    path = write_ini(tmp_path / 'down.ini', 'mongodb://127.0.0.1:%d' % free_port(), 'db',
                     extra='mongodb_session.client.serverSelectionTimeoutMS = 500')
    status, err = run_into_closed_pipe('stats', path, '--operation-timeout', '1')
    assert status == 1
    one_error_line(err)


# -- reading the ini file like pserve ------------------------------------------------

def test_config_uri_names_the_app_section(run, tmp_path, mongodb_url, database, store):
    add_sessions(store, 3)
    path = write_ini(tmp_path / 'multi.ini', mongodb_url, database.name, section='sessions')
    status, out, err = run('stats', path + '#sessions')
    assert (status, err) == (0, '')
    assert 'sessions: 3' in out
    # --app-name, as pserve's, does the same
    status, out, err = run('stats', path, '--app-name', 'sessions')
    assert (status, err) == (0, '')
    assert 'sessions: 3' in out
    # no [app:main] in that file
    status, out, err = run('stats', path)
    assert status == 2
    assert 'main' in one_error_line(err)
    status, out, err = run('stats', path + '#nosuch')
    assert status == 2
    assert 'nosuch' in one_error_line(err)


def test_pipeline_section_points_to_the_application(run, tmp_path, mongodb_url, database, store):
    add_sessions(store, 2)
    path = tmp_path / 'pipeline.ini'
    path.write_text(textwrap.dedent('''\
        [pipeline:main]
        pipeline = myapp

        '''))
    with open(str(path), 'a') as f:
        f.write(open(write_ini(tmp_path / 'part.ini', mongodb_url, database.name,
                               section='myapp')).read())
    status, out, err = run('stats', str(path))
    assert status == 2
    assert '#myapp' in one_error_line(err)
    status, out, err = run('stats', str(path) + '#myapp')
    assert (status, err) == (0, '')
    assert 'sessions: 2' in out


def test_ini_variables(run, tmp_path, mongodb_url, database, store):
    add_sessions(store, 1)
    path = tmp_path / 'vars.ini'
    path.write_text(textwrap.dedent('''\
        [app:main]
        use = call:tests.test_cli:app_factory
        mongodb_session.url = %(MONGODB_URL)s
        mongodb_session.db_name = %(DB)s
        mongodb_session.secret = s3cret
        '''))
    status, out, err = run('stats', str(path), '--var', 'MONGODB_URL=' + mongodb_url,
                           '--var', 'DB=' + database.name)
    assert (status, err) == (0, '')
    assert 'sessions: 1' in out
    status, out, err = run('stats', str(path))
    assert status == 2
    assert 'MONGODB_URL' in one_error_line(err)


# -- maintenance needs no secret --------------------------------------------------------

def write_app_ini(path, lines):
    """An ini file with an [app:main] section of ``lines``."""
    path.write_text('[app:main]\nuse = call:tests.test_cli:app_factory\n'
                    + textwrap.dedent(lines))
    return str(path)


def test_secret_variable_needs_no_value(run, tmp_path, mongodb_url, database, store):
    """The Quick start's ini file: the secret comes from pserve SESSION_SECRET=..."""
    add_sessions(store, 2, expired=True)
    path = write_app_ini(tmp_path / 'production.ini', """\
        mongodb_session.url = %s
        mongodb_session.db_name = %s
        mongodb_session.secret = %%(SESSION_SECRET)s
        """ % (mongodb_url, database.name))
    status, out, err = run('purge', path)
    assert (status, err) == (0, '')
    assert 'purged 2 expired sessions' in out
    status, out, err = run('stats', path)
    assert (status, err) == (0, '')
    # given anyway, it changes nothing
    assert run('stats', path, '--var', 'SESSION_SECRET=x')[:2] == (status, out)


def test_secret_read_with_get_needs_no_value(run, tmp_path, mongodb_url, database, store):
    add_sessions(store, 1)
    path = write_app_ini(tmp_path / 'get.ini', """\
        mongodb_session.url = %s
        mongodb_session.db_name = %s
        get mongodb_session.secret = SESSION_SECRET
        """ % (mongodb_url, database.name))
    status, out, err = run('stats', path)
    assert (status, err) == (0, '')
    assert 'sessions: 1' in out


def test_ini_file_without_a_secret(run, tmp_path, mongodb_url, database):
    # e.g. an administrator's file for ensure-indexes
    path = write_app_ini(tmp_path / 'admin.ini', """\
        mongodb_session.url = %s
        mongodb_session.db_name = %s
        """ % (mongodb_url, database.name))
    status, out, err = run('ensure-indexes', path)
    assert (status, err) == (0, '')
    assert ('is in place' in out) or ('refused a TTL index' in out)


def test_other_applications_variables_need_no_value(run, tmp_path, mongodb_url, database):
    path = write_app_ini(tmp_path / 'app.ini', """\
        sqlalchemy.url = postgresql://app:%%(DB_PASSWORD)s@db/app
        mongodb_session.url = %s
        mongodb_session.db_name = %s
        mongodb_session.secret = %%(SESSION_SECRET)s
        """ % (mongodb_url, database.name))
    status, out, err = run('purge', path)
    assert (status, err) == (0, '')
    assert 'purged 0 expired sessions' in out


def test_encryption_keys_variables_need_no_value(run, tmp_path, mongodb_url, database,
                                                 collection):
    from pyramid_mongosession.crypto import new_key
    key = new_key()
    add_sessions(factory_for(collection, encryption_keys=[key]).store, 2, user_id=42)
    path = write_app_ini(tmp_path / 'enc.ini', """\
        mongodb_session.url = %s
        mongodb_session.db_name = %s
        mongodb_session.secret = %%(SESSION_SECRET)s
        mongodb_session.encryption_keys = %%(SESSION_KEY_NEW)s %%(SESSION_KEY_OLD)s
        """ % (mongodb_url, database.name))
    status, out, err = run('revoke', path, 'user_id={"$exists": true}')
    assert (status, err) == (0, '')
    assert 'revoked 2 sessions' in out and 'encrypted at rest' in out


def test_variables_the_sessions_need_are_still_required(run, tmp_path, mongodb_url,
                                                        database, store):
    add_sessions(store, 1)
    path = write_app_ini(tmp_path / 'vars.ini', """\
        mongodb_session.secret = %(TOKEN)s
        mongodb_session.url = %(MONGODB_URL)s
        mongodb_session.db_name = %(TOKEN)s
        """)
    status, out, err = run('stats', path)
    assert status == 2
    line = one_error_line(err)
    # in the order of the settings; the secret's use of TOKEN is not mentioned
    assert ('no value for MONGODB_URL (used by mongodb_session.url), TOKEN (used by '
            'mongodb_session.db_name): give --var MONGODB_URL=VALUE --var TOKEN=VALUE'
            in line), line
    status, out, err = run('stats', path, '--var', 'MONGODB_URL=' + mongodb_url,
                           '--var', 'TOKEN=' + database.name)
    assert (status, err) == (0, '')
    assert 'sessions: 1' in out


def test_cron_line_runs_without_the_secret(tmp_path, mongodb_url, database, store):
    """The deployment guide's cron line, as a program, with a Quick start ini file."""
    add_sessions(store, 3, expired=True)
    path = write_app_ini(tmp_path / 'production.ini', """\
        mongodb_session.url = %s
        mongodb_session.db_name = %s
        mongodb_session.secret = %%(SESSION_SECRET)s
        """ % (mongodb_url, database.name))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [REPO, os.environ.get('PYTHONPATH')])))
    env.pop('SESSION_SECRET', None)
    done = subprocess.run([sys.executable, '-m', 'pyramid_mongosession.cli', 'purge', path],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
    assert (done.returncode, done.stderr) == (0, '')
    assert 'purged 3 expired sessions' in done.stdout


# -- ensure-indexes ------------------------------------------------------------------

def test_ensure_indexes(run, ini, collection):
    status, out, err = run('ensure-indexes', ini)
    assert (status, err) == (0, '')
    ttl = [spec for spec in collection.index_information().values()
           if spec.get('key') == [('expires', 1)] and 'expireAfterSeconds' in spec]
    if ttl:  # MongoDB, FerretDB 2.x
        assert 'is in place' in out
        assert ttl[0]['expireAfterSeconds'] == 0
    else:    # FerretDB 1.x refuses TTL indexes: the output says what to do instead
        assert 'refused a TTL index' in out and 'purge' in out
    # Running it again changes nothing.
    assert run('ensure-indexes', ini)[:2] == (status, out)


# -- purge ---------------------------------------------------------------------------

def test_purge_deletes_only_expired_sessions_in_batches(run, ini, store, collection):
    live = add_sessions(store, 3)
    add_sessions(store, 7, expired=True)
    status, out, err = run('purge', ini, '--batch-seconds', '5')
    assert (status, err) == (0, '')
    assert re.search(r'purged 7 expired sessions from \S+\.sessions', out)
    assert stored_ids(collection) == {document_id(i) for i in live}
    status, out, err = run('purge', ini)
    assert status == 0
    assert 'purged 0 expired sessions' in out


# -- stats ---------------------------------------------------------------------------

def test_stats_counts_and_sizes(run, ini, store, collection):
    add_sessions(store, 4, payload='x' * 1000)
    add_sessions(store, 5)
    add_sessions(store, 2, expired=True)
    status, out, err = run('stats', ini)
    assert (status, err) == (0, '')
    assert 'sessions: 11' in out
    assert 'live: 9' in out
    assert 'expired, not yet removed: 2' in out
    assert 'TTL index:' in out

    sizes = sorted(len(bson.encode(doc)) for doc in collection.find())
    expected = 'min %d, p50 %d, p90 %d, p99 %d, max %d' % (
        sizes[0], percentile(sizes, 50), percentile(sizes, 90), percentile(sizes, 99), sizes[-1])
    assert 'document size (bytes): %s' % expected in out
    how = re.search(r'^document sizes (.*)$', out, re.M).group(1)
    assert how.startswith('computed by the server for all 11') or \
        how.startswith('measured client-side from the first 11 of 11')


def test_stats_sample_is_bounded_and_says_so(run, ini, store):
    add_sessions(store, 10)
    status, out, err = run('stats', ini, '--sample', '3')
    assert (status, err) == (0, '')
    how = re.search(r'^document sizes (.*)$', out, re.M).group(1)
    assert re.match(r'(computed by the server for a random sample|measured client-side '
                    r'from the first) 3 of 10 documents', how), how


def test_stats_of_an_empty_collection(run, ini):
    status, out, err = run('stats', ini)
    assert (status, err) == (0, '')
    assert 'sessions: 0' in out and 'document size: no documents' in out


def test_only_ensure_indexes_creates_indexes(run, tmp_path, ttl_server_url):
    """stats (and the other commands) work under a role without createIndex: on a
    fresh database they leave no index, and no collection, behind. On a server
    that keeps indexes (the main one may refuse them: FerretDB 1.x)."""
    client = pymongo.MongoClient(ttl_server_url, serverSelectionTimeoutMS=5000)
    name = 'test_%s' % uuid.uuid4().hex[:16]
    try:
        ini = write_ini(tmp_path / 'fresh.ini', ttl_server_url, name)
        for argv in (('stats',), ('sessions', 'alice'), ('export', 'alice'), ('purge',),
                     ('revoke', 'role=admin'), ('revoke', '--user', 'alice')):
            status, out, err = run(argv[0], ini, *argv[1:])
            assert (status, err) == (0, ''), argv
        assert client[name].list_collection_names() == []
        assert list(client[name]['sessions'].index_information()) in ([], ['_id_'])
        status, out, err = run('ensure-indexes', ini)
        assert (status, err) == (0, '')
        assert 'expires_ttl' in client[name]['sessions'].index_information()
    finally:
        client.drop_database(name)
        client.close()


def test_percentile_nearest_rank():
    values = list(range(1, 101))
    assert [percentile(values, p) for p in (50, 90, 99, 100)] == [50, 90, 99, 100]
    assert percentile([7], 50) == 7


# -- revoke --------------------------------------------------------------------------

def test_parse_value():
    assert parse_value('42') == 42
    assert parse_value('true') is True
    assert parse_value('"42"') == '42'
    assert parse_value('alice') == 'alice'
    assert parse_value('007') == '007'
    assert parse_value('[1, 2]') == [1, 2]


def test_revoke_by_key_value(run, ini, store, collection):
    int_user = add_sessions(store, 2, user_id=42)
    str_user = add_sessions(store, 1, user_id='42')
    other = add_sessions(store, 3, user_id=7)
    status, out, err = run('revoke', ini, 'user_id=42')
    assert (status, err) == (0, '')
    assert 'revoked 2 sessions matching {"user_id": 42}' in out
    assert stored_ids(collection) == {document_id(i) for i in str_user + other}
    assert document_id(int_user[0]) not in stored_ids(collection)

    status, out, err = run('revoke', ini, 'user_id="42"')
    assert 'revoked 1 session matching' in out
    assert stored_ids(collection) == {document_id(i) for i in other}


def test_revoke_with_json_and_several_keys(run, ini, store, collection):
    keep = add_sessions(store, 2, user_id=5, role='admin')
    gone = add_sessions(store, 2, user_id=5, role='user')
    status, out, err = run('revoke', ini, '--json', '{"user_id": 5}', 'role=user')
    assert (status, err) == (0, '')
    assert 'revoked 2 sessions' in out
    assert stored_ids(collection) == {document_id(i) for i in keep}
    assert not {document_id(i) for i in gone} & stored_ids(collection)


def test_revoke_json_operators_and_dates(run, ini, store, collection):
    old = add_sessions(store, 2, login=datetime.datetime(2020, 1, 1))
    new = add_sessions(store, 1, login=datetime.datetime(2030, 1, 1))
    status, out, err = run('revoke', ini, '--json',
                           '{"login": {"$lt": {"$date": "2025-01-01T00:00:00Z"}}}')
    assert (status, err) == (0, '')
    assert 'revoked 2 sessions' in out
    assert stored_ids(collection) == {document_id(i) for i in new}
    assert old


def test_revoke_keys_with_dots_and_dollars(run, ini, store, collection):
    # Session keys are escaped in the stored field names; the query uses the keys.
    hit = add_sessions(store, 1, **{'a.b': 1, '$c': 2})
    miss = add_sessions(store, 1, **{'a.b': 2})
    status, out, err = run('revoke', ini, 'a.b=1', '$c=2')
    assert (status, err) == (0, '')
    assert 'revoked 1 session ' in out
    assert stored_ids(collection) == {document_id(i) for i in miss}
    assert hit


def test_revoke_dry_run_deletes_nothing(run, ini, store, collection):
    add_sessions(store, 3, user_id=9)
    before = stored_ids(collection)
    status, out, err = run('revoke', ini, 'user_id=9', '--dry-run')
    assert (status, err) == (0, '')
    assert '3 sessions match {"user_id": 9}; nothing deleted' in out
    assert stored_ids(collection) == before


@pytest.mark.parametrize('argv, message', [
    ((), 'refusing to revoke every session'),
    (('--json', '{}'), 'refusing to revoke every session'),
    (('--json', '{"user_id": '), 'not valid JSON'),
    (('--json', '[1, 2]'), 'JSON object'),
    (('=5',), 'KEY=VALUE'),
    (('user_id',), 'KEY=VALUE'),
])
def test_revoke_refuses_bad_or_empty_queries(run, ini, store, collection, argv, message):
    add_sessions(store, 2, user_id=1)
    before = stored_ids(collection)
    status, out, err = run('revoke', ini, *argv)
    assert status == 2
    assert message in one_error_line(err)
    assert stored_ids(collection) == before


def test_revoke_says_when_values_are_encrypted(run, tmp_path, mongodb_url, database, collection):
    from pyramid_mongosession.crypto import new_key
    key = new_key()
    path = write_ini(tmp_path / 'enc.ini', mongodb_url, database.name,
                     extra='mongodb_session.encryption_keys = %s' % key)
    store = factory_for(collection, encryption_keys=[key]).store
    add_sessions(store, 2, user_id=42)
    add_sessions(store, 1)
    status, out, err = run('revoke', path, 'user_id=42')
    assert (status, err) == (0, '')
    assert 'revoked 0 sessions' in out and 'encrypted at rest' in out
    # an operator on the key still matches: log out every session that has a user
    status, out, err = run('revoke', path, 'user_id={"$exists": true}')
    assert (status, err) == (0, '')
    assert 'revoked 2 sessions' in out
    assert collection.count_documents({}) == 1


def test_ensure_indexes_on_a_server_that_keeps_ttl_indexes(run, tmp_path, ttl_server_url):
    # The main server may refuse TTL indexes (FerretDB 1.x): this runs the
    # other branch of test_ensure_indexes on a server that keeps them.
    client = pymongo.MongoClient(ttl_server_url, serverSelectionTimeoutMS=5000)
    name = 'test_%s' % uuid.uuid4().hex[:16]
    try:
        ini = write_ini(tmp_path / 'ttl.ini', ttl_server_url, name)
        status, out, err = run('ensure-indexes', ini)
        assert (status, err) == (0, '')
        assert 'is in place' in out
        ttl = [spec for spec in client[name]['sessions'].index_information().values()
               if spec.get('key') == [('expires', 1)]]
        assert [spec.get('expireAfterSeconds') for spec in ttl] == [0]
        assert run('ensure-indexes', ini)[:2] == (status, out)
    finally:
        client.drop_database(name)
        client.close()
